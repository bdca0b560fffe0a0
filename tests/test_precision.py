"""Precision options: fp16 mixed precision with dynamic loss scaling (on NumPy float16), tf32, bf16."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import blobs

import xpnet
from xpnet.io import checkpoint
from xpnet.train import precision
from xpnet.train.precision import GradScaler


def _trainer(prec="fp16", **kw):
    return xpnet.Trainer(xpnet.MLP([6, 32, 3], seed=1), optimizer=xpnet.optim.Adam(lr=0.01), precision=prec, **kw)


def test_fp16_trains_as_well_as_fp32():
    X, y = blobs(n=240)
    results = {}
    for prec in ("fp32", "fp16"):
        trainer = _trainer(prec)
        history = trainer.fit(X, y, epochs=10, batch_size=32, validation_split=0.25, verbose=False)
        results[prec] = history["val_accuracy"][-1]
    assert results["fp16"] >= 0.95 and abs(results["fp16"] - results["fp32"]) <= 0.03


def test_fp16_keeps_float32_master_weights_and_float16_compute():
    trainer = _trainer()
    X, y = blobs(n=32)
    loss = trainer.train_step(X, y)
    assert trainer.model.params.dtype == np.float32 and trainer.precision_step.params16.dtype == np.float16
    assert loss.dtype == np.float32 and np.isfinite(float(loss))
    np.testing.assert_array_equal(trainer.precision_step.params16, trainer.model.params.astype(np.float16))


def test_overflow_skips_the_step_and_halves_the_scale():
    trainer = _trainer()
    X, y = blobs(n=32)
    trainer.train_step(X, y)  # a clean step first
    trainer.scaler.scale = 2.0**40  # the scaled float16 gradients overflow
    before = trainer.model.params.copy()
    steps = trainer.optimizer.step_count
    trainer.train_step(X, y)
    np.testing.assert_array_equal(trainer.model.params, before)  # skipped: weights untouched
    assert trainer.optimizer.step_count == steps
    assert trainer.scaler.scale == 2.0**39 and trainer.scaler.growth_tracker == 0 and trainer.scaler.skipped_steps >= 1


def test_scale_grows_after_clean_steps():
    trainer = _trainer()
    trainer.scaler.scale, trainer.scaler.growth_interval = 4.0, 3
    X, y = blobs(n=32)
    for _ in range(3):
        trainer.train_step(X, y)
    assert trainer.scaler.scale == 8.0 and trainer.scaler.growth_tracker == 0


def test_grad_scaler_rule_matches_torch():
    torch = pytest.importorskip("torch")
    ours = GradScaler(init_scale=1024.0, growth_interval=2)
    theirs = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=2)
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=0.1)
    for found_inf in [False, False, True, False, True, True, False, False, False]:
        opt.zero_grad()
        theirs.scale(param.sum() * (float("inf") if found_inf else 1.0)).backward()
        theirs.step(opt)
        theirs.update()
        ours.update(found_inf)
        assert ours.scale == theirs.get_scale()


def test_scaler_state_round_trips_through_a_checkpoint(tmp_path):
    trainer = _trainer()
    X, y = blobs(n=64)
    trainer.fit(X, y, epochs=2, batch_size=16, verbose=False)
    trainer.scaler.scale, trainer.scaler.growth_tracker = 512.0, 7
    path = checkpoint.save(tmp_path, trainer, epoch=1)
    fresh = _trainer()
    checkpoint.restore(fresh, checkpoint.load(path))
    assert fresh.scaler.scale == 512.0 and fresh.scaler.growth_tracker == 7
    trainer.train_step(X[:16], y[:16])
    fresh.train_step(X[:16], y[:16])
    np.testing.assert_array_equal(fresh.model.params, trainer.model.params)


def test_unsupported_precisions_are_refused_clearly():
    with pytest.raises(ValueError, match=r"precision='fp8' is unknown: use one of fp32, tf32, fp16, bf16"):
        _trainer("fp8")
    with pytest.raises(ValueError, match=r"precision='fp16' needs a float32 model .* not float64"):
        xpnet.Trainer(xpnet.MLP([4, 2], dtype="float64"), precision="fp16")
    with pytest.raises(ValueError, match=r"precision='bf16' needs a float32 model .* not float64"):
        xpnet.Trainer(xpnet.MLP([4, 2], dtype="float64"), precision="bf16")
    with pytest.raises(TypeError, match=r"dtype='bfloat16' is not a model dtype: .* precision='bf16'"):
        xpnet.MLP([4, 2], dtype="bfloat16")


# -- bf16: bfloat16 compute, float32 loss and master weights, no loss scaling (NumPy + ml_dtypes) ----
try:
    import ml_dtypes

    BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # the test extra has it; without it only the bf16 tests skip
    BF16 = None
needs_ml_dtypes = pytest.mark.skipif(BF16 is None, reason="ml_dtypes is in the test extra: pip install -e '.[test]'")


@needs_ml_dtypes
def test_bf16_trains_digits_within_1_5_points_of_fp32():
    from xpnet.data import load_digits, standardize, train_test_split

    X, y = load_digits()
    X_train, X_test, y_train, y_test = train_test_split(X, y, 0.25, seed=0)
    X_train, X_test = (a.astype(np.float32) for a in standardize(X_train, X_test))
    accuracy = {}
    for prec in ("fp32", "bf16"):
        trainer = xpnet.Trainer(xpnet.MLP([64, 128, 10], seed=0), optimizer=xpnet.optim.Adam(lr=1e-3), precision=prec)
        trainer.fit(X_train, y_train, epochs=15, batch_size=32, verbose=False)
        accuracy[prec] = trainer.evaluate(X_test, y_test)["accuracy"]
    assert accuracy["fp32"] >= 0.95
    assert abs(accuracy["bf16"] - accuracy["fp32"]) <= 0.015, accuracy


@needs_ml_dtypes
def test_bf16_keeps_float32_master_weights_and_bfloat16_compute():
    trainer = _trainer("bf16")
    X, y = blobs(n=32)
    before = trainer.model.params.copy()
    loss = trainer.train_step(X, y)
    step = trainer.precision_step
    assert isinstance(step, precision.BF16Step) and trainer.scaler is None  # no loss scaling
    assert trainer.model.params.dtype == np.float32 and trainer.optimizer.state_dict()["state"]
    assert step.params16.dtype == BF16 and step.grads16.dtype == BF16
    assert loss.dtype == np.float32 and np.isfinite(float(loss))
    np.testing.assert_array_equal(step.params16, before.astype(BF16))  # this step's weights, rounded
    np.testing.assert_array_equal(trainer.model.grads, step.grads16.astype(np.float32))  # widened exactly
    assert not np.array_equal(trainer.model.params, before)


@needs_ml_dtypes
def test_bf16_applies_every_step():
    """No GradScaler: as torch.autocast(bfloat16) without one, every step is applied."""
    trainer = _trainer("bf16")
    X, y = blobs(n=32)
    assert trainer.forward_backward(*trainer.prepare(X, y)) is not None
    assert trainer.update() is True and trainer.optimizer.step_count == 1


@needs_ml_dtypes
def test_bf16_reference_kernels_compute_in_float32_and_round_once():
    from xpnet.activations import get_activation
    from xpnet.kernels import ops_for
    from xpnet.kernels.bfloat16 import BFloat16Ops

    model = xpnet.MLP([6, 3])
    ops = ops_for(model.backend, "bfloat16")
    assert isinstance(ops, BFloat16Ops) and isinstance(ops_for(model.backend, "bfloat16", "reference"), BFloat16Ops)
    r = np.random.default_rng(0)
    a, b = (r.normal(size=s).astype(BF16) for s in ((33, 17), (17, 5)))
    exact = a.astype(np.float64) @ b.astype(np.float64)
    got = ops.matmul(a, b)
    assert got.dtype == BF16
    np.testing.assert_array_equal(got, (a.astype(np.float32) @ b.astype(np.float32)).astype(BF16))
    np.testing.assert_allclose(got.astype(np.float64), exact, rtol=2**-8, atol=1e-6)  # one bfloat16 rounding
    gelu = get_activation("gelu")
    bias = r.normal(size=5).astype(BF16)
    z, act = ops.bias_act(got, bias, gelu)
    v = got.astype(np.float32) + bias.astype(np.float32)
    np.testing.assert_array_equal(z, v.astype(BF16))
    np.testing.assert_array_equal(act, gelu.forward(np, v).astype(BF16))
    g = r.normal(size=got.shape).astype(BF16)
    dz, db = ops.act_grad(g, z, act, gelu)
    want = (g.astype(np.float32) * gelu.derivative(np, z.astype(np.float32), act.astype(np.float32))).astype(BF16)
    np.testing.assert_array_equal(dz, want)
    np.testing.assert_array_equal(db, want.astype(np.float32).sum(axis=0).astype(BF16))


@needs_ml_dtypes
def test_bf16_is_refused_clearly_without_ml_dtypes_or_with_an_old_cupy(monkeypatch):
    from types import SimpleNamespace

    from xpnet.backend import Backend

    fake = SimpleNamespace(dtype="float32", backend=Backend(None, None, "cupy", "cupy:cuda:0",
                                                            lib=SimpleNamespace(__version__="13.6.0")))
    with pytest.raises(RuntimeError, match=r"precision='bf16' on the GPU needs CuPy >= 14\.0 .* this is CuPy 13\.6\.0"):
        precision.check_precision("bf16", fake)
    fake.backend = Backend(None, SimpleNamespace(compute_capability="75"), "cupy", "cupy:cuda:0",
                           lib=SimpleNamespace(__version__="14.2.0"))
    with pytest.raises(RuntimeError, match=r"compute capability 8\.0 or newer .* cupy:cuda:0 is 7\.5"):
        precision.check_precision("bf16", fake)
    fake.backend = Backend(None, SimpleNamespace(compute_capability="90"), "cupy", "cupy:cuda:0",
                           lib=SimpleNamespace(__version__="14.2.0"))
    assert precision.check_precision("bf16", fake) == "bf16"
    monkeypatch.setitem(__import__("sys").modules, "ml_dtypes", None)  # import ml_dtypes now fails
    with pytest.raises(ImportError, match=r"bfloat16 needs the ml_dtypes package .* pip install ml_dtypes"):
        _trainer("bf16")


@needs_ml_dtypes
def test_bf16_checkpoint_round_trip_resumes_bit_identically(tmp_path):
    trainer = _trainer("bf16")
    X, y = blobs(n=64)
    trainer.fit(X, y, epochs=2, batch_size=16, verbose=False)
    path = checkpoint.save(tmp_path, trainer, epoch=1)
    loaded = checkpoint.load(path)
    assert loaded.trainer_meta["precision"] == "bf16" and loaded.trainer_meta["scaler"] is None
    fresh = _trainer("bf16")
    checkpoint.restore(fresh, loaded)
    np.testing.assert_array_equal(fresh.model.params, trainer.model.params)
    trainer.fit(X, y, epochs=2, batch_size=16, verbose=False)
    fresh.fit(X, y, epochs=2, batch_size=16, verbose=False)
    np.testing.assert_array_equal(fresh.model.params, trainer.model.params)


def test_tf32_on_the_cpu_warns_once_and_runs_float32():
    precision._warn_tf32_cpu.cache_clear()  # re-arm the once-per-process warning (no module flag)
    with pytest.warns(RuntimeWarning, match="precision='tf32' only changes matrix products on NVIDIA GPUs"):
        trainer = _trainer("tf32")
    _trainer("tf32")  # no second warning (warnings are errors in this suite)
    X, y = blobs(n=32)
    reference = _trainer("fp32")
    trainer.train_step(X, y)
    reference.train_step(X, y)
    np.testing.assert_array_equal(trainer.model.params, reference.model.params)


def test_launches_per_step_are_counted():
    """Fused CPU kernel set, L layers, Adam: L matmuls + L bias/activation forward, one loss,
    one bias-gradient sum, L dW + (L-1) dX matmuls, L-1 fused derivative passes, one optimizer."""
    X, y = blobs(n=64)
    for sizes in ([6, 3], [6, 16, 3], [6, 16, 16, 16, 3]):
        trainer = xpnet.Trainer(xpnet.MLP(sizes), optimizer=xpnet.optim.Adam())
        Xd, yd = trainer.prepare(X, y)
        trainer.forward_backward(Xd, yd)
        trainer.update()
        before = trainer.ops.launches
        trainer.forward_backward(Xd, yd)
        trainer.update()
        layers = len(sizes) - 1
        assert trainer.ops.launches - before == 5 * layers + 1, sizes


# -- on a GPU (skipped here without one): the convergence and parity checks ----------------
from conftest import HAS_GPU  # noqa: E402

gpu = pytest.mark.skipif(not HAS_GPU, reason="needs CuPy and an NVIDIA GPU")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("prec", ["tf32", "fp16", "bf16"])
def test_gpu_precision_converges_on_digits(prec):
    from xpnet.data import load_digits, standardize, train_test_split

    X, y = load_digits()
    X_train, X_test, y_train, y_test = train_test_split(X, y, 0.25, seed=0)
    X_train, X_test = standardize(X_train, X_test)
    trainer = xpnet.Trainer(xpnet.MLP([64, 256, 256, 10], device="cuda"), optimizer=xpnet.optim.AdamW(lr=1e-3),
                            precision=prec)
    trainer.fit(X_train.astype(np.float32), y_train, epochs=30, batch_size=32, verbose=False)
    assert trainer.evaluate(X_test.astype(np.float32), y_test)["accuracy"] >= 0.97


@pytest.mark.gpu
@gpu
def test_gpu_float32_training_matches_numpy():
    X, y = blobs(n=256, features=20, classes=5)
    weights = []
    for device in ("cpu", "cuda"):
        trainer = xpnet.Trainer(xpnet.MLP([20, 64, 64, 5], device=device, seed=3), optimizer=xpnet.optim.Adam(lr=1e-3))
        trainer.fit(X.astype(np.float32), y, epochs=3, batch_size=32, verbose=False)
        weights.append(xpnet.to_host(trainer.model.params))
    np.testing.assert_allclose(weights[1], weights[0], rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@gpu
def test_gpu_arrays_from_another_gpu_are_refused():
    import cupy

    if cupy.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two GPUs")
    model = xpnet.MLP([4, 2], device="cuda:0")
    with cupy.cuda.Device(1):
        X = cupy.ones((3, 4), dtype=cupy.float32)
    with pytest.raises(ValueError, match="is on GPU 1 but the model is on cupy:cuda:0"):
        xpnet.Trainer(model).predict(X)
