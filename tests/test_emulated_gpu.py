"""The GPU kernel set (``CupyOps``) run on the CPU by xpnet's GPU emulator.

Every CUDA kernel here runs from its CUDA source (CuPy's generated source for elementwise and
reduction kernels, xpnet's ``RawModule`` source for the row kernels), compiled for the host, in
two floating-point modes: as CuPy compiles for a GPU (fused multiply-add contraction, float32
flush-to-zero) and strictly (no contraction, no flushing).  Nothing here imports Numba.
Tolerances are stated in units of the dtype's machine epsilon times the operands' scale, so
they hold under FMA and flushing and still fail on a wrong formula (see the mutation tests).
"""

from __future__ import annotations

import gc
import os
import warnings

import numpy as np
import pytest

import xpnet
from xpnet import optim
from xpnet.activations import ACTIVATIONS
from xpnet.dropout import dropout_key, keep_mask
from xpnet.kernels import cuda_source as src
from xpnet.kernels.emulator import Emulator, FloatMode, KernelError, compiler, emulated_backend, tf32_round
from xpnet.kernels.reference import ReferenceOps
from xpnet.losses import LOSSES

pytestmark = pytest.mark.emulated

if compiler() is None:  # the only allowed skip; CI sets XPNET_REQUIRE_EMULATOR=1 and fails instead
    if os.environ.get("XPNET_REQUIRE_EMULATOR") == "1":
        raise RuntimeError("XPNET_REQUIRE_EMULATOR=1 but there is no C++ compiler (g++ or $CXX) for the GPU emulator")
    pytest.skip("no C++ compiler (g++ or $CXX): the GPU emulator cannot build kernels", allow_module_level=True)

from xpnet.kernels.cuda import CupyOps, matmul_tf32  # noqa: E402

MODES = {"cupy-default": FloatMode(fma=True, ftz=True), "strict": FloatMode(fma=False, ftz=False)}
DTYPES = ["float16", "float32", "float64"]
SHAPES = [(1, 1), (7, 13), (37, 70)]  # 70 columns: a row spans three warp passes
EPS = {"float16": 2.0**-10, "float32": 2.0**-23, "float64": 2.0**-52}


@pytest.fixture(autouse=True)
def _quiet_edge_values():
    """inf and NaN inputs are the point of the edge cases: NumPy's warnings about them are expected."""
    with np.errstate(all="ignore"):
        yield


@pytest.fixture(scope="module", params=list(MODES))
def emu(request):
    return Emulator(MODES[request.param])


def sets(emu, dtype):
    """(fused CupyOps on the emulated GPU, reference ops in the comparison dtype, to-device)."""
    backend = emulated_backend(emu)
    ref_dtype = "float32" if dtype == "float16" else dtype  # half kernels compute in float: so does the oracle
    return CupyOps(backend, dtype), ReferenceOps(backend, ref_dtype), backend.from_host


def close(actual, expected, dtype, scale=1.0, ulps=64):
    """|actual - expected| <= ulps * eps * (|expected| + scale), NaN where NaN.

    ``scale`` is the magnitude of the operands: under FMA a result near cancellation keeps an
    absolute error of a few eps times its operands, not of itself."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    assert np.array_equal(np.isnan(actual), np.isnan(expected)), "NaN in different places"
    inf = np.isinf(expected)
    assert np.array_equal(actual[inf], expected[inf]), "infinities differ"
    ok = ~np.isnan(expected) & ~inf
    scale = np.broadcast_to(np.asarray(scale, np.float64), expected.shape)[ok]
    bound = ulps * EPS[dtype] * (np.abs(expected[ok]) + scale)
    err = np.abs(actual[ok] - expected[ok])
    worst = f"max error {err.max():.3g} vs bound {bound[np.argmax(err - bound)]:.3g}" if err.size else ""
    assert err.size == 0 or np.all(err <= bound), worst


def edge_values(dtype):
    big = {"float16": 11.0, "float32": 88.0, "float64": 709.0}[dtype]  # near exp's overflow
    tiny = {"float16": 1e-5, "float32": 1e-30, "float64": 1e-300}[dtype]
    return np.array([0.0, -0.0, np.inf, -np.inf, np.nan, big, -big, 10.0, -10.0, 10.5, -10.5, 20.0, 20.5, tiny, -tiny])


def pre_activations(shape, dtype, seed=0):
    z = np.random.default_rng(seed).normal(0, 4, size=shape)
    flat = z.reshape(-1)
    edges = edge_values(dtype)
    flat[:min(len(edges), flat.size)] = edges[:flat.size]
    return z.astype(dtype)


def host(a):
    return xpnet.to_host(a).astype(np.float64)


# -- the fused-vs-reference matrix of the CuPy kernel set --------------------------------------
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_bias_act_and_act_grad(emu, act, dtype, shape):
    fused, ref, dev = sets(emu, dtype)
    a_fn = ACTIVATIONS[act]
    z = pre_activations(shape, dtype)
    b = np.random.default_rng(1).normal(size=shape[1]).astype(dtype)
    zf, af = fused.bias_act(dev(z.copy()), dev(b), a_fn)
    zr, ar = ref.bias_act(dev(z.astype(ref.dtype)), dev(b.astype(ref.dtype)), a_fn)
    close(host(zf), host(zr).astype(dtype), dtype, ulps=1)  # z + b: one rounding either way
    close(host(af), host(ar).astype(dtype), dtype, scale=1.0)
    g = np.random.default_rng(2).normal(size=shape).astype(dtype)
    dzf, dbf = fused.act_grad(dev(g.copy()), zf, af, a_fn)
    dzr, dbr = ref.act_grad(dev(g.astype(ref.dtype)), dev(host(zf).astype(ref.dtype)), dev(host(af).astype(ref.dtype)),
                            a_fn)
    close(host(dzf), host(dzr).astype(dtype), dtype, scale=np.abs(g).astype(np.float64))
    finite = np.isfinite(host(dbr))
    close(host(dbf)[finite], host(dbr)[finite], dtype, scale=np.abs(host(dzr)).sum(axis=0)[finite], ulps=4 * shape[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("loss", list(LOSSES))
def test_loss(emu, loss, shape, dtype):
    fused, ref, dev = sets(emu, dtype)
    r = np.random.default_rng(4)
    logits = r.normal(0, 3, size=shape)
    logits.reshape(-1)[:2] = [30.0, -30.0][:logits.size]
    logits = logits.astype(dtype)
    if loss == "cross_entropy":
        labels = r.integers(0, shape[1], size=shape[0]).astype(np.int64)
        targets = [labels, np.eye(shape[1])[labels]]
    elif loss == "bce":
        targets = [(r.random(shape) > 0.5).astype(np.float64)]
    else:
        targets = [r.normal(size=shape)]
    for t in targets:
        t_f = t if t.dtype == np.int64 else t.astype(dtype)
        t_r = t if t.dtype == np.int64 else t.astype(ref.dtype)
        vf, gf = fused.loss(LOSSES[loss], dev(logits), dev(t_f))
        vr, gr = ref.loss(LOSSES[loss], dev(logits.astype(ref.dtype)), dev(t_r))
        assert host(vf).shape == ()
        close(host(vf), host(vr), dtype, scale=1.0, ulps=8 * shape[1])
        close(host(gf), host(gr).astype(dtype), dtype, scale=1.0 / shape[0], ulps=8 * shape[1])


OPTIMIZER_CONFIGS = {
    "sgd": [dict(lr=0.1), dict(lr=0.1, momentum=0.9, weight_decay=0.01, dampening=0.1),
            dict(lr=0.1, momentum=0.9, nesterov=True)],
    "adagrad": [dict(lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1)],
    "rmsprop": [dict(lr=0.01), dict(lr=0.01, centered=True, momentum=0.9, weight_decay=0.01),
                dict(lr=0.01, centered=True)],
    "adam": [dict(lr=0.01), dict(lr=0.01, weight_decay=0.01, amsgrad=True)],
    "adamw": [dict(lr=0.01), dict(lr=0.01, amsgrad=True)],
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("max_norm", [None, 0.5])
@pytest.mark.parametrize("name", list(OPTIMIZER_CONFIGS))
def test_optimizer_update(emu, name, max_norm, dtype):
    fused, ref, dev = sets(emu, dtype)
    r = np.random.default_rng(5)
    p0 = r.normal(size=300).astype(dtype)
    grads = [r.normal(size=300).astype(dtype) for _ in range(4)]
    for kwargs in OPTIMIZER_CONFIGS[name]:
        results = []
        for ops, d in ((ref, ref.dtype), (fused, dtype)):
            opt = optim.OPTIMIZERS[name](**kwargs)
            p = dev(p0.astype(d))
            for g in grads:
                opt.step(p, dev(g.astype(d)), ops, max_norm)
            results.append(host(p))
        # four steps of a few roundings each; lr scales the update (a wrong sign moves by ~lr)
        close(results[1], results[0].astype(dtype), dtype, scale=1.0, ulps=1024 if dtype != "float16" else 4)


def test_optimizer_op_takes_a_number_as_grad_scale(emu):
    """The op signature on the GPU: arrays, then numbers (a host grad_scale, not clip_scale's array)."""
    fused, ref, dev = sets(emu, "float64")
    r = np.random.default_rng(8)
    p0, g = r.normal(size=50), r.normal(size=50)
    scalars = {"step_size": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "l2": 0.01, "decay": 0.999,
               "bc2_sqrt": 0.03, "amsgrad": True}
    results = []
    for ops in (ref, fused):
        p, bufs = dev(p0.copy()), [dev(np.zeros(50)) for _ in range(3)]
        ops.adam(p, dev(g.copy()), *bufs, grad_scale=0.5, **scalars)
        ops.sgd(p, dev(g.copy()), None, lr=0.1, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                first=True, grad_scale=2.0)
        results.append(host(p))
    close(results[1], results[0], "float64", scale=1.0, ulps=64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_clip_scale(emu, dtype):
    fused, ref, dev = sets(emu, dtype)
    g = np.random.default_rng(6).normal(size=1000).astype(dtype)
    for max_norm in (0.3, 1e6):
        sf, sr = fused.clip_scale(dev(g.copy()), max_norm), ref.clip_scale(dev(g.astype(ref.dtype)), max_norm)
        assert host(sf).shape == ()
        close(host(sf), host(sr), dtype, ulps=64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_clip_grad_norm(emu, dtype):
    fused, ref, dev = sets(emu, dtype)
    g = np.random.default_rng(6).normal(size=1000).astype(dtype)
    gf, gr = dev(g.copy()), dev(g.astype(ref.dtype))
    nf, nr = fused.clip_grad_norm(gf, 0.3), ref.clip_grad_norm(gr, 0.3)
    close(host(nf), host(nr), dtype, ulps=64)
    close(host(gf), host(gr).astype(dtype), dtype, scale=0.0, ulps=64)


def test_mixed_precision_casts(emu):
    fused, _, dev = sets(emu, "float16")
    g32 = np.random.default_rng(7).normal(size=500).astype(np.float32)
    out16 = fused.scale_cast(dev(g32), 1024.0, "k")
    np.testing.assert_array_equal(host(out16), (g32 * np.float32(1024.0)).astype(np.float16))
    g32[3] = np.inf
    grads = dev(np.zeros(500, np.float32))
    found = fused.unscale_into(dev(g32.astype(np.float16)), grads, 1 / 1024.0)
    assert found is True
    assert not fused.unscale_into(dev(np.ones(500, np.float16)), grads, 0.5)
    np.testing.assert_array_equal(host(grads), np.full(500, 0.5))


# -- whole training runs: the emulated GPU against the NumPy reference path --------------------
def blobs(n=96, features=10, classes=4, seed=0):
    r = np.random.default_rng(seed)
    centers = r.normal(0, 3, size=(classes, features))
    y = r.integers(0, classes, size=n)
    return centers[y] + r.normal(0, 1, size=(n, features)), y.astype(np.int64)


def train(device, dtype, optimizer, loss="cross_entropy", clip=None, precision="fp32", data_on_device=None,
          activation="tanh", epochs=2, dropout=0.0):
    X, y = blobs()
    if loss == "mse":
        y = np.eye(4)[y] * 2.0 - 1.0
    elif loss == "bce":
        y = np.eye(4)[y]
    model = xpnet.MLP([10, 24, 16, 4], activation=activation, dtype=dtype, seed=3,
                      device=None if device == "reference" else device,
                      kernels="reference" if device == "reference" else "auto", dropout=dropout)
    trainer = xpnet.Trainer(model, loss=loss, optimizer=optimizer, clip_grad_norm=clip, precision=precision)
    history = trainer.fit(X, y, epochs=epochs, batch_size=16, verbose=False, data_on_device=data_on_device)
    return xpnet.to_host(model.params).astype(np.float64), history, trainer


@pytest.mark.parametrize("name", list(OPTIMIZER_CONFIGS))
def test_training_matches_the_numpy_reference(emu, name):
    dev = emulated_backend(emu)
    for kwargs in OPTIMIZER_CONFIGS[name]:
        w_gpu, h_gpu, t = train(dev, "float64", optim.OPTIMIZERS[name](**kwargs), clip=1.0)
        w_ref, h_ref, _ = train("reference", "float64", optim.OPTIMIZERS[name](**kwargs), clip=1.0)
        assert t.ops.name == "cupy"
        np.testing.assert_allclose(w_gpu, w_ref, rtol=1e-9, atol=1e-11, err_msg=f"{name} {kwargs}")
        np.testing.assert_allclose(h_gpu.history["loss"], h_ref.history["loss"], rtol=1e-9)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse", "bce"])
@pytest.mark.parametrize("data_on_device", [True, False], ids=["resident", "streamed"])
def test_training_every_loss_resident_and_streamed(emu, loss, data_on_device):
    dev = emulated_backend(emu)
    w_gpu, _, _ = train(dev, "float32", optim.Adam(lr=0.01), loss=loss, data_on_device=data_on_device)
    w_ref, _, _ = train("reference", "float32", optim.Adam(lr=0.01), loss=loss)
    assert np.linalg.norm(w_gpu - w_ref) <= 1e-5 * np.linalg.norm(w_ref)


@pytest.mark.parametrize("data_on_device", [True, False], ids=["resident", "streamed"])
def test_epoch_metrics_on_the_gpu_match_the_numpy_path(emu, data_on_device):
    dev = emulated_backend(emu)
    X, y = blobs()
    names = ["accuracy", "top_k_accuracy", "f1_macro", "precision_micro", "roc_auc_ovr", "neg_log_loss"]
    logs = []
    for device in (dev, "reference"):
        model = xpnet.MLP([10, 16, 4], dtype="float64", seed=3, device=None if device == "reference" else device,
                          kernels="reference" if device == "reference" else "auto")
        trainer = xpnet.Trainer(model, optimizer=optim.Adam(lr=0.01), metrics=names)
        logs.append(trainer.fit(X, y, epochs=2, batch_size=16, validation_split=0.25, verbose=False,
                                data_on_device=data_on_device if device is dev else None).history)
    assert set(logs[0]) == set(logs[1]) >= {"val_f1_macro", "val_roc_auc_ovr"}
    for key in logs[1]:
        np.testing.assert_allclose(logs[0][key], logs[1][key], rtol=1e-9, err_msg=key)


def test_fp16_mixed_precision_with_loss_scaling_and_skipped_steps(emu):
    dev = emulated_backend(emu)
    runs = []
    for device in (dev, "cpu"):
        X, y = blobs()
        model = xpnet.MLP([10, 24, 16, 4], activation="relu", seed=3, device=device)
        trainer = xpnet.Trainer(model, optimizer=optim.Adam(lr=0.01), precision="fp16", clip_grad_norm=5.0)
        trainer.scaler.scale = 2.0**24  # overflows float16: the first steps are skipped and the scale backs off
        trainer.fit(X, y, epochs=8, batch_size=16, verbose=False)
        runs.append((xpnet.to_host(model.params).astype(np.float64), trainer.scaler.skipped_steps,
                     trainer.scaler.scale, trainer.evaluate(X, y)["accuracy"]))
    (w_gpu, skipped_gpu, scale_gpu, acc_gpu), (w_cpu, skipped_cpu, scale_cpu, _) = runs
    assert skipped_gpu == skipped_cpu > 0 and scale_gpu == scale_cpu
    assert np.linalg.norm(w_gpu - w_cpu) <= 3e-2 * np.linalg.norm(w_cpu)  # float16 storage vs compute
    assert acc_gpu > 0.9


# -- the section-1 bugs, each on the emulated GPU ---------------------------------------------------
def test_tf32_is_the_trainers_own_and_rounds_like_tensor_cores(emu):
    dev = emulated_backend(emu)
    model = xpnet.MLP([10, 32, 4], seed=0, device=dev)
    X, y = blobs()
    t32 = xpnet.Trainer(model, precision="tf32")
    calls = len(emu.cublas.calls)
    t32.train_step(X[:16], y[:16])
    assert emu.cublas.calls[calls:] and set(emu.cublas.calls[calls:]) == {emu.cublas.CUBLAS_COMPUTE_32F_FAST_TF32}
    fp32 = xpnet.Trainer(model, precision="fp32")  # a later trainer on the same model: no TF32 anywhere
    assert not model.ops.tf32 and not fp32.ops.tf32 and t32.ops.tf32
    calls = len(emu.cublas.calls)
    fp32.train_step(X[:16], y[:16])
    assert len(emu.cublas.calls) == calls


@pytest.mark.parametrize("layout", ["cc", "tc", "ct", "tt"])
def test_tf32_product_column_major_logic(emu, layout):
    r = np.random.default_rng(0)
    dev = emulated_backend(emu)
    a = r.normal(size=(5, 7)).astype(np.float32)
    b = r.normal(size=(7, 3)).astype(np.float32)
    da = dev.from_host(a.T.copy()).T if layout[0] == "t" else dev.from_host(a)  # F-contiguous when "t"
    db = dev.from_host(b.T.copy()).T if layout[1] == "t" else dev.from_host(b)
    out = matmul_tf32(emu, da, db)
    expected = tf32_round(a).astype(np.float64) @ tf32_round(b).astype(np.float64)
    np.testing.assert_allclose(host(out), expected, rtol=1e-6, atol=1e-6)
    assert not np.allclose(host(out), a.astype(np.float64) @ b, rtol=1e-7, atol=0)  # TF32 did round


def test_labels_on_the_device_out_of_range(emu):
    dev = emulated_backend(emu)
    X, y = blobs()
    trainer = xpnet.Trainer(xpnet.MLP([10, 16, 4], seed=0, device=dev))
    before = xpnet.to_host(trainer.model.params).copy()
    bad = y.copy()
    bad[5] = 4  # == n_classes: would read the next row's logit
    reads = emu.host_reads
    with pytest.raises(ValueError, match=r"y has 1 label\(s\) outside \[0, 3\]"):
        trainer.fit(dev.from_host(X), dev.from_host(bad), epochs=1, verbose=False)
    assert emu.host_reads - reads == 1  # X and y checked on the device, one read for both
    np.testing.assert_array_equal(xpnet.to_host(trainer.model.params), before)
    # a step on device arrays skips the scan; the loss kernel refuses the label and flags it
    bad[7] = 10**9
    loss = trainer.train_step(dev.from_host(X[:16]), dev.from_host(bad[:16]))
    assert np.isnan(float(xpnet.to_host(loss)))
    with pytest.raises(ValueError, match=r"2 label\(s\) outside \[0, 3\]"):
        trainer.ops.check_device_errors()
    trainer.ops.check_device_errors()  # reported once, then cleared


def test_device_inputs_validated_on_the_device(emu):
    dev = emulated_backend(emu)
    X, y = blobs()
    trainer = xpnet.Trainer(xpnet.MLP([10, 16, 4], seed=0, device=dev))
    Xd = dev.from_host(X)
    Xd[3, 2] = np.nan
    reads = emu.host_reads
    with pytest.raises(ValueError, match="X contains NaN or inf"):
        trainer.evaluate(Xd, dev.from_host(y))
    with pytest.raises(ValueError, match="X contains NaN or inf"):
        trainer.predict(Xd)
    assert emu.host_reads - reads == 2  # one read per call, no copy of X


def test_streaming_stopped_early_leaves_no_copy_in_flight(emu):
    from xpnet.train.callbacks import Callback

    class StopAtStep(Callback):
        def on_step_loss(self, trainer, loss):
            return trainer.step_count < 2

    dev = emulated_backend(emu)
    X, y = blobs()
    trainer = xpnet.Trainer(xpnet.MLP([10, 16, 4], seed=0, device=dev))
    errors = len(emu.errors)
    trainer.fit(X, y, epochs=1, batch_size=16, verbose=False, data_on_device=False, callbacks=[StopAtStep()])
    gc.collect()
    assert emu.errors[errors:] == []


def test_gpu_kernel_set_needs_no_numba(tmp_path):
    import subprocess
    import sys

    code = ("import sys; sys.modules['numba'] = None\n"
            "import numpy as np, xpnet\n"
            "from xpnet.kernels.emulator import Emulator, emulated_backend\n"
            "dev = emulated_backend(Emulator())\n"
            "m = xpnet.MLP([4, 8, 3], device=dev)\n"
            "xpnet.Trainer(m).train_step(np.ones((5, 4)), np.array([0, 1, 2, 0, 1]))\n"
            "assert m.ops.name == 'cupy'; print('ok')\n")
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


def test_warp_misuse_fails_loudly():
    emu = Emulator()
    module = emu.RawModule(r'''
    template <typename T> __global__ void partial(T* x) {
        if (threadIdx.x >= 16) return;
        x[threadIdx.x] = __shfl_xor_sync(0xffffffffu, x[threadIdx.x], 1);
    }''', name_expressions=("partial<float>",))
    x = emu.zeros((32,), np.float32)
    with pytest.raises(KernelError, match="exited"):
        module.get_function("partial<float>")((1,), (32,), (x,))


# -- teeth: small mutations of the CUDA source must fail the emulated comparisons ------------------
MUTATIONS = {
    "adam-sign": ("p -= step_size * (m / (sqrt(vhat) / bc2_sqrt + eps));",
                  "p += step_size * (m / (sqrt(vhat) / bc2_sqrt + eps));"),
    "ce-index": ("- (j == y ? C(1) : C(0))) * inv)", "- (j == (y + 1) % cols ? C(1) : C(0))) * inv)"),
    "warp-shuffle-step": ("for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync",
                          "for (int o = 8; o > 0; o >>= 1) x += __shfl_xor_sync"),
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_mutations_of_the_cuda_source_are_caught(mutation, tmp_path, monkeypatch):
    old, new = MUTATIONS[mutation]
    text = src.SOURCE_FILE.read_text()
    assert text.count(old) == 1, "the mutation no longer applies: update MUTATIONS"
    mutated = tmp_path / "xpnet_kernels.cu"
    mutated.write_text(text.replace(old, new))
    monkeypatch.setattr(src, "SOURCE_FILE", mutated)
    emu = Emulator()  # a fresh emulator: its kernels are built from the mutated source
    with pytest.raises(AssertionError):
        if mutation == "adam-sign":
            test_optimizer_update(emu, "adam", None, "float32")
        else:
            test_loss(emu, "cross_entropy", (37, 70), "float32")


def test_the_unmutated_source_passes_the_same_checks():
    emu = Emulator()
    test_optimizer_update(emu, "adam", None, "float32")
    test_loss(emu, "cross_entropy", (37, 70), "float32")


# -- bfloat16 (precision="bf16"): bfloat16 storage, float32 compute ----------------------------------
def _bf16():
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes is in the test extra")
    return np.dtype(ml_dtypes.bfloat16)


EPS["bfloat16"] = 2.0**-7  # bfloat16 keeps 8 significant bits: half an ulp of 1 is 2**-8


def _bf16_sets(emu):
    """(fused bfloat16 CupyOps on the emulated GPU, the NumPy bfloat16 reference kernel set)."""
    from xpnet.backend import resolve_backend
    from xpnet.kernels.bfloat16 import BFloat16Ops

    return CupyOps(emulated_backend(emu), "bfloat16"), BFloat16Ops(resolve_backend("cpu"))


@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_bf16_bias_act_and_act_grad_match_the_bfloat16_reference(emu, act):
    bf16 = _bf16()
    fused, ref = _bf16_sets(emu)
    a_fn = ACTIVATIONS[act]
    r = np.random.default_rng(0)
    z = r.normal(0, 4, size=(37, 70))
    z.reshape(-1)[:9] = [0.0, -0.0, np.inf, -np.inf, np.nan, 60.0, -60.0, 1e-30, -3.0e38]
    z, b = z.astype(bf16), r.normal(size=70).astype(bf16)
    g = r.normal(size=z.shape).astype(bf16)
    zf, af = fused.bias_act(emu.asarray(z), emu.asarray(b), a_fn)
    zr, ar = ref.bias_act(z, b, a_fn)
    assert zf.dtype == af.dtype == bf16 and fused.state_dtype == "float32"
    np.testing.assert_array_equal(host(zf), host(zr))  # one float32 add, one rounding: exact either way
    close(host(af), host(ar), "bfloat16", scale=1.0, ulps=1)  # float32 math differs in its last bits only
    dzf, dbf = fused.act_grad(emu.asarray(g), zf, af, a_fn)
    dzr, dbr = ref.act_grad(g, xpnet.to_host(zf), xpnet.to_host(af), a_fn)
    assert dzf.dtype == dbf.dtype == bf16
    close(host(dzf), host(dzr), "bfloat16", scale=np.abs(host(g)), ulps=1)
    finite = np.isfinite(host(dbr))
    close(host(dbf)[finite], host(dbr)[finite], "bfloat16", scale=np.abs(host(dzr)).sum(axis=0)[finite], ulps=1)


def test_bf16_casts_round_to_nearest_even_as_cuda_does(emu):
    bf16 = _bf16()
    fused, _ = _bf16_sets(emu)
    one = np.float32(1.0)
    ties = np.array([1 + 2.0**-8, 1 + 3 * 2.0**-8, -(1 + 2.0**-8), 3.4e38, np.inf, -np.inf, 3.0e38, 0.1],
                    np.float32)  # halfway cases go to the even neighbour; 3.4e38 is past bfloat16's largest
    g32 = np.concatenate([ties, np.random.default_rng(7).normal(size=500).astype(np.float32)])
    out = fused.scale_cast(emu.asarray(g32), 1.0, "k")
    assert out.dtype == bf16
    np.testing.assert_array_equal(host(out)[:3], [1.0, 1 + 2.0**-6, -1.0])
    np.testing.assert_array_equal(host(out)[3:], g32[3:].astype(bf16).astype(np.float64))  # ml_dtypes: also RNE
    assert host(out)[3] == np.inf and np.isfinite(host(out)[6])
    nan = fused.scale_cast(emu.asarray(np.array([np.nan, -np.nan], np.float32)), one, "n")
    assert np.all(np.isnan(host(nan)))
    grads = emu.asarray(np.zeros(508, np.float32))
    assert not fused.unscale_into(out[8:].copy(), grads[:500], 1.0)  # bfloat16 -> float32 is exact
    np.testing.assert_array_equal(host(grads[:500]), host(out)[8:])


def test_bf16_training_on_the_emulated_gpu_matches_the_numpy_bf16_path(emu):
    _bf16()
    dev = emulated_backend(emu)
    runs = []
    for device in (dev, "cpu"):
        X, y = blobs()
        model = xpnet.MLP([10, 24, 16, 4], activation="gelu", seed=3, device=device)
        trainer = xpnet.Trainer(model, optimizer=optim.Adam(lr=0.01), precision="bf16", clip_grad_norm=5.0)
        history = trainer.fit(X, y, epochs=6, batch_size=16, verbose=False)
        runs.append((xpnet.to_host(model.params).astype(np.float64), history.history["loss"],
                     trainer.evaluate(X, y)["accuracy"], trainer))
    (w_gpu, loss_gpu, acc_gpu, t_gpu), (w_cpu, loss_cpu, acc_cpu, t_cpu) = runs
    assert t_gpu.precision_step.half.name == "cupy" and t_cpu.precision_step.half.name == "reference-bf16"
    assert t_gpu.scaler is None and t_gpu.model.params.dtype == np.float32
    # the same bfloat16 roundings of float32 values that differ in their last bits (FMA, libm): 7e-6 measured
    assert np.linalg.norm(w_gpu - w_cpu) <= 1e-3 * np.linalg.norm(w_cpu)
    np.testing.assert_allclose(loss_gpu, loss_cpu, rtol=1e-3)
    assert acc_gpu > 0.9 and acc_cpu > 0.9


@pytest.mark.parametrize("layout", ["cc", "tc", "ct", "tt"])
def test_bf16_product_is_one_gemm_with_float32_accumulation(emu, layout):
    from xpnet.kernels.cuda import matmul_bf16

    bf16 = _bf16()
    r = np.random.default_rng(0)
    dev = emulated_backend(emu)
    a, b = r.normal(size=(5, 7)).astype(bf16), r.normal(size=(7, 3)).astype(bf16)
    da = dev.from_host(a.T.copy()).T if layout[0] == "t" else dev.from_host(a)  # F-contiguous when "t"
    db = dev.from_host(b.T.copy()).T if layout[1] == "t" else dev.from_host(b)
    calls = len(emu.cublas.calls)
    out = matmul_bf16(emu, da, db)
    assert out.dtype == bf16 and emu.cublas.calls[calls:] == [emu.cublas.CUBLAS_COMPUTE_32F]
    np.testing.assert_array_equal(host(out), (a.astype(np.float32) @ b.astype(np.float32)).astype(bf16))


# -- dropout: the CUDA hash draws the reference's masks ----------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p, first_row", [(0.3, 0), (0.5, 0), (0.3, 11), (0.5, 100_000_007)])
def test_dropout_masks_match_the_reference_exactly(emu, dtype, p, first_row):
    # first_row: a data-parallel share's rows of the global batch (100_000_007 * 70 wraps past 2**32)
    fused, _, dev = sets(emu, dtype)
    key = dropout_key(3, 41, 1)
    shape = (37, 70)
    zf, af = fused.bias_act(dev(np.ones(shape, dtype)), dev(np.zeros(shape[1], dtype)), ACTIVATIONS["identity"],
                            None, p, key, first_row)
    keep = np.asarray(keep_mask(np, shape, p, key, first_row=first_row))
    np.testing.assert_array_equal(host(af) != 0, keep)
    np.testing.assert_array_equal(host(af)[keep], np.float64(np.asarray(1.0 / (1.0 - p), dtype)))
    g = np.random.default_rng(2).normal(size=shape).astype(dtype)
    dzf, _ = fused.act_grad(dev(g), zf, af, ACTIVATIONS["identity"], None, p, key, first_row)
    np.testing.assert_array_equal(host(dzf) != 0, keep)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("act", ["relu", "sigmoid", "tanh", "gelu"])
def test_dropout_bias_act_and_act_grad(emu, act, dtype):
    fused, ref, dev = sets(emu, dtype)
    a_fn, key, shape = ACTIVATIONS[act], dropout_key(0, 5, 0), (37, 70)
    z = pre_activations(shape, dtype)
    b = np.random.default_rng(1).normal(size=shape[1]).astype(dtype)
    zf, af = fused.bias_act(dev(z.copy()), dev(b), a_fn, None, 0.4, key)
    zr, ar = ref.bias_act(dev(z), dev(b), a_fn, None, 0.4, key)
    close(host(af), host(ar), dtype, scale=1.0)
    g = np.random.default_rng(2).normal(size=shape).astype(dtype)
    dzf, dbf = fused.act_grad(dev(g.copy()), zf, af, a_fn, None, 0.4, key)
    dzr, dbr = ref.act_grad(dev(g), zr, ar, a_fn, None, 0.4, key)
    close(host(dzf), host(dzr), dtype, scale=np.abs(g).astype(np.float64))
    finite = np.isfinite(host(dbr))
    close(host(dbf)[finite], host(dbr)[finite], dtype, scale=np.abs(host(dzr)).sum(axis=0)[finite], ulps=4 * shape[0])


def test_training_with_dropout_matches_the_numpy_reference(emu):
    dev = emulated_backend(emu)
    w_gpu, h_gpu, t = train(dev, "float64", optim.Adam(lr=0.01), clip=1.0, dropout=[0.3, 0.5])
    w_ref, h_ref, _ = train("reference", "float64", optim.Adam(lr=0.01), clip=1.0, dropout=[0.3, 0.5])
    w_plain, _, _ = train("reference", "float64", optim.Adam(lr=0.01), clip=1.0)
    assert t.ops.name == "cupy"
    np.testing.assert_allclose(w_gpu, w_ref, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(h_gpu.history["loss"], h_ref.history["loss"], rtol=1e-9)
    assert not np.allclose(w_ref, w_plain)


def test_bf16_dropout_masks_match_the_bfloat16_reference(emu):
    bf16 = _bf16()
    fused, ref = _bf16_sets(emu)
    key, a_fn = dropout_key(1, 2, 0), ACTIVATIONS["gelu"]
    r = np.random.default_rng(0)
    z, b = r.normal(0, 2, size=(37, 70)).astype(bf16), r.normal(size=70).astype(bf16)
    g = r.normal(size=z.shape).astype(bf16)
    row = 5  # a data-parallel share starting at row 5 of the global batch
    zf, af = fused.bias_act(emu.asarray(z), emu.asarray(b), a_fn, None, 0.25, key, row)
    _, ar = ref.bias_act(z, b, a_fn, None, 0.25, key, row)
    keep = np.asarray(keep_mask(np, z.shape, 0.25, key, first_row=row))
    assert not np.any(host(af)[~keep]) and not np.any(host(ar)[~keep])
    close(host(af), host(ar), "bfloat16", scale=1.0, ulps=1)
    dzf, _ = fused.act_grad(emu.asarray(g), zf, af, a_fn, None, 0.25, key, row)
    dzr, _ = ref.act_grad(g, xpnet.to_host(zf), xpnet.to_host(af), a_fn, None, 0.25, key, row)
    assert not np.any(host(dzf)[~keep])
    close(host(dzf), host(dzr), "bfloat16", scale=np.abs(host(g)), ulps=1)


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_sklearn_estimators_on_the_gpu_train_to_scikit_learns_weights(emu, solver):
    """xpnet.sklearn with device=<the emulated GPU>: CuPy kernels, device-side shuffles, the L2 penalty and
    sample weights on the device, host copies of coefs_; scikit-learn's weights to 1e-9 (float64)."""
    sk = pytest.importorskip("sklearn.neural_network")
    from xpnet.sklearn import MLPClassifier, MLPRegressor

    X, y = blobs(n=120)
    w = np.random.default_rng(5).uniform(0, 2, len(X))
    kwargs = dict(hidden_layer_sizes=(12,), solver=solver, alpha=0.1, max_iter=4, batch_size=32, random_state=0,
                  learning_rate_init=0.05, learning_rate="invscaling" if solver == "sgd" else "constant")
    dev = emulated_backend(emu)
    cases = [(MLPClassifier, sk.MLPClassifier, y), (MLPClassifier, sk.MLPClassifier, np.eye(4)[y][:, :3]),
             (MLPRegressor, sk.MLPRegressor, X[:, :2] @ [0.1, -0.2])]
    for ours_cls, sk_cls, target in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning, as scikit-learn's
            ours = ours_cls(device=dev, **kwargs).fit(X, target, sample_weight=w)
            theirs = sk_cls(**kwargs).fit(X, target, sample_weight=w)
        assert ours._trainer.ops.name == "cupy"
        assert type(ours.coefs_[0]) is np.ndarray and not np.shares_memory(ours.coefs_[0], ours._model.params)
        for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_, strict=True):
            np.testing.assert_allclose(a, b, atol=1e-9, rtol=0)
        np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, atol=1e-9, rtol=0)
        np.testing.assert_array_equal(ours.predict(X), theirs.predict(X)) if ours_cls is MLPClassifier else \
            np.testing.assert_allclose(ours.predict(X), theirs.predict(X), atol=1e-9)
    # host copies on a GPU: assigning arrays to coefs_ / intercepts_ reaches the device's model
    ours.coefs_ = [np.zeros_like(W) for W in ours.coefs_]
    ours.intercepts_ = [np.zeros_like(b) for b in ours.intercepts_[:-1]] + [np.array([0.25])]
    np.testing.assert_allclose(ours.predict(X), 0.25)
    restored = type(ours).__new__(type(ours))  # pickling's two halves (the emulated device itself cannot pickle)
    restored.__setstate__(ours.__getstate__())
    np.testing.assert_allclose(restored.predict(X), 0.25)
