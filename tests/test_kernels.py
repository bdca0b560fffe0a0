"""Every fused kernel equals the reference kernel set, generated from the kernel registry.

Cases come from ``xpnet.kernels.FUSED_OPERATIONS`` crossed with the registries it names
(activations, losses, optimizers), in float32 and float64, on random data, edge values
(+-inf, NaN, +-0, |x| near exp's overflow threshold), odd shapes and non-contiguous inputs,
and for both the serial and the parallel CPU variants.
"""

from __future__ import annotations

import numpy as np
import pytest

import xpnet
from xpnet import optim
from xpnet.activations import ACTIVATIONS
from xpnet.backend import resolve_backend
from xpnet.dropout import dropout_key
from xpnet.kernels import FUSED_OPERATIONS, ReferenceOps
from xpnet.losses import LOSSES

cpu = pytest.importorskip("xpnet.kernels.cpu")
from conftest import HAS_GPU  # noqa: E402

DTYPES = ["float32", "float64"]
SHAPES = [(1, 1), (7, 13), (64, 31)]
TOL = {"float32": dict(rtol=3e-6, atol=1e-7), "float64": dict(rtol=1e-13, atol=1e-300)}


def _fused_kinds():
    yield pytest.param("numba-serial", id="numba-serial")
    yield pytest.param("numba-parallel", id="numba-parallel")
    yield pytest.param("cupy", id="cupy",
                       marks=[pytest.mark.gpu, pytest.mark.skipif(not HAS_GPU, reason="needs a GPU")])


@pytest.fixture(autouse=True)
def _quiet_edge_values():
    """inf and NaN inputs are the point here: NumPy's warnings about them are expected."""
    with np.errstate(all="ignore"):
        yield


@pytest.fixture(params=list(_fused_kinds()))
def fused_kind(request):
    return request.param


def _sets(kind, dtype):
    """(fused ops, reference ops, to-device, to-host) for one fused kernel set."""
    if kind == "cupy":
        from xpnet.kernels.cuda import CupyOps

        backend = resolve_backend("cuda")
        fused = CupyOps(backend, dtype)
    else:
        backend = resolve_backend("cpu")
        parallel = kind == "numba-parallel"  # every size runs the parallel variant
        fused = cpu.NumbaOps(backend, dtype, parallel=parallel, parallel_min=0 if parallel else cpu.PARALLEL_MIN)
    return fused, ReferenceOps(backend, dtype), backend.from_host, xpnet.to_host


def _edge_values(dtype):
    big = 88.0 if dtype == "float32" else 709.0  # near exp's overflow threshold
    return np.array([0.0, -0.0, np.inf, -np.inf, np.nan, big, -big, big + 1, -big - 1, 1e30 if dtype == "float32"
                     else 1e300, -1e30, 10.0, -10.0, 10.5, -10.5, 20.0, 20.5, 1e-30, -1e-30], dtype=dtype)


def _pre_activations(shape, dtype, seed=0):
    r = np.random.default_rng(seed)
    z = (r.normal(0, 4, size=shape)).astype(dtype)
    edges = _edge_values(dtype)
    flat = z.reshape(-1)
    flat[: min(len(edges), flat.size)] = edges[: flat.size]
    return z


def close(a, b, dtype):
    np.testing.assert_allclose(a, b, equal_nan=True, **TOL[dtype])


# -- one case generator per registered operation --------------------------------------------------
# (rate, key, first row): without dropout, with a mask, and with the mask of a data-parallel share
# whose first row is far into the global batch (its element counter wraps past 2**32)
DROPOUT = [(0.0, 0, 0), (0.3, dropout_key(5, 2, 1), 0), (0.3, dropout_key(5, 2, 1), 123_456_789)]


def case_bias_act(kind, dtype, variant, shape):
    fused, ref, dev, host = _sets(kind, dtype)
    act = ACTIVATIONS[variant]
    z = _pre_activations(shape, dtype)
    b = np.random.default_rng(1).normal(size=shape[1]).astype(dtype)
    for p, key, row in DROPOUT:
        zr, ar = ref.bias_act(dev(z), dev(b), act, None, p, key, row)
        zf, af = fused.bias_act(dev(z), dev(b), act, None, p, key, row)
        close(host(zf), host(zr), dtype)
        close(host(af), host(ar), dtype)


def case_act_grad(kind, dtype, variant, shape):
    fused, ref, dev, host = _sets(kind, dtype)
    act = ACTIVATIONS[variant]
    z = _pre_activations(shape, dtype)
    g = np.random.default_rng(2).normal(size=shape).astype(dtype)
    for p, key, row in DROPOUT:
        a = host(ref.bias_act(dev(z), dev(np.zeros(shape[1], dtype)), act, None, p, key, row)[1])
        dzr, dbr = ref.act_grad(dev(g), dev(z), dev(a), act, None, p, key, row)
        dzf, dbf = fused.act_grad(dev(g.copy()), dev(z), dev(a), act, None, p, key, row)
        if p:  # each kernel set recomputes f(z) for f'(z, f(z)): 1 - tanh^2 etc. differ by ulps of |g|
            np.testing.assert_allclose(host(dzf), host(dzr), equal_nan=True, rtol=TOL[dtype]["rtol"],
                                       atol=64 * np.finfo(dtype).eps)
        else:
            close(host(dzf), host(dzr), dtype)
        # column sums in another order: compare where the reference sum is finite, loosely in float32;
        # with dropout, of elements that differ by ulps of |g| (above): a sum that cancels keeps those
        tol = TOL[dtype] if dtype == "float64" else dict(rtol=1e-4, atol=1e-4)
        if p:
            tol = dict(tol, atol=max(tol["atol"], 64 * np.finfo(dtype).eps * float(np.abs(g).sum(axis=0).max())))
        np.testing.assert_allclose(host(dbf), host(dbr), equal_nan=True, **tol)


def case_bias_grad(kind, dtype, variant, shape):
    fused, ref, dev, host = _sets(kind, dtype)
    g = np.random.default_rng(3).normal(size=shape).astype(dtype)
    np.testing.assert_allclose(host(fused.bias_grad(dev(g))), host(ref.bias_grad(dev(g))),
                               rtol=1e-12 if dtype == "float64" else 1e-5, atol=1e-5 if dtype == "float32" else 0)


def case_loss(kind, dtype, variant, shape):
    fused, ref, dev, host = _sets(kind, dtype)
    loss = LOSSES[variant]
    r = np.random.default_rng(4)
    logits = r.normal(0, 3, size=shape).astype(dtype)
    logits.reshape(-1)[:2] = [1e4, -1e4][: logits.size] if logits.size > 1 else [1e4]
    targets = [(r.random(shape) > 0.5).astype(dtype) if variant == "bce" else r.normal(size=shape).astype(dtype)]
    if variant == "cross_entropy":
        labels = r.integers(0, shape[1], size=shape[0]).astype(np.int64)
        targets = [labels, np.eye(shape[1], dtype=dtype)[labels]]
    for t in targets:
        vr, gr = ref.loss(loss, dev(logits), dev(t))
        vf, gf = fused.loss(loss, dev(logits), dev(t))
        assert host(vf).shape == () and host(vf).dtype == np.dtype(dtype)
        close(host(vf), host(vr), dtype)
        close(host(gf), host(gr), dtype)
    bad = logits.copy()
    bad[0, 0] = np.nan
    assert np.isnan(float(host(fused.loss(loss, dev(bad), dev(targets[0]))[0])))


OPTIMIZER_CONFIGS = {
    "sgd": [dict(lr=0.1), dict(lr=0.1, momentum=0.9, weight_decay=0.01, dampening=0.1),
            dict(lr=0.1, momentum=0.9, nesterov=True)],
    "adagrad": [dict(lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1)],
    "rmsprop": [dict(lr=0.01), dict(lr=0.01, centered=True, momentum=0.9, weight_decay=0.01)],
    "adam": [dict(lr=0.01), dict(lr=0.01, weight_decay=0.01, amsgrad=True)],
    "adamw": [dict(lr=0.01), dict(lr=0.01, amsgrad=True)],
}
# Each optimizer operation of the kernel sets, with the optimizers that call it.
OPTIMIZER_OPS = {"sgd": ["sgd"], "adagrad": ["adagrad"], "rmsprop": ["rmsprop"], "adam": ["adam", "adamw"]}


def _optimizer_case(kind, dtype, variant, shape):
    """``variant`` (an optimizer) through its kernel operation, 4 steps, with and without clipping."""
    fused, ref, dev, host = _sets(kind, dtype)
    n = shape[0] * shape[1]
    r = np.random.default_rng(5)
    p0 = r.normal(size=n).astype(dtype)
    grads = [r.normal(size=n).astype(dtype) for _ in range(4)]
    for kwargs in OPTIMIZER_CONFIGS[variant]:
        for max_norm in (None, 0.5):
            results = []
            for ops in (ref, fused):
                opt = optim.OPTIMIZERS[variant](**kwargs)
                p = dev(p0.copy())
                for g in grads:
                    g = dev(g.copy())
                    opt.step(p, g, ops, max_norm)
                results.append(host(p))
            # centered RMSprop's sqrt(s - ga^2) cancels: a few ulp differences become ~1e-13
            tol = dict(rtol=1e-12, atol=1e-15) if dtype == "float64" else dict(rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(results[1], results[0], err_msg=f"{variant} {kwargs} {max_norm}", **tol)


def _optimizer_op_case(op):
    def case(kind, dtype, variant, shape):
        if variant not in OPTIMIZER_OPS[op]:
            pytest.skip(f"{variant} does not run ops.{op}")
        _optimizer_case(kind, dtype, variant, shape)

    return case


case_sgd, case_adagrad, case_rmsprop, case_adam = (_optimizer_op_case(op) for op in ("sgd", "adagrad", "rmsprop",
                                                                                    "adam"))


def case_clip_scale(kind, dtype, variant, shape):
    fused, ref, dev, host = _sets(kind, dtype)
    g = np.random.default_rng(6).normal(size=shape[0] * shape[1]).astype(dtype)
    for max_norm in (0.3, 1e6):
        gd = dev(g.copy())
        sr, sf = ref.clip_scale(gd, max_norm), fused.clip_scale(gd, max_norm)
        np.testing.assert_allclose(float(host(np.asarray(sf))), float(host(sr)), rtol=1e-5 if dtype == "float32"
                                   else 1e-12)
        np.testing.assert_array_equal(host(gd), g)  # the gradients are only read


def case_clip_grad_norm(kind, dtype, variant, shape):
    fused, ref, dev, host = _sets(kind, dtype)
    g = np.random.default_rng(6).normal(size=shape[0] * shape[1]).astype(dtype)
    gr, gf = dev(g.copy()), dev(g.copy())
    nr, nf = ref.clip_grad_norm(gr, 0.3), fused.clip_grad_norm(gf, 0.3)
    np.testing.assert_allclose(float(host(nf)), float(host(nr)), rtol=1e-5 if dtype == "float32" else 1e-12)
    np.testing.assert_allclose(host(gf), host(gr), rtol=1e-5 if dtype == "float32" else 1e-12)


CASES = {name: globals()[f"case_{name}"] for name in FUSED_OPERATIONS}
VARIANTS = {"activations": list(ACTIVATIONS), "losses": list(LOSSES), "optimizers": list(optim.OPTIMIZERS), None: ["-"]}


def test_every_registered_operation_is_covered():
    assert set(OPTIMIZER_CONFIGS) == set(optim.OPTIMIZERS)
    assert sorted(v for names in OPTIMIZER_OPS.values() for v in names) == sorted(optim.OPTIMIZERS)
    assert {op for op, reg in FUSED_OPERATIONS.items() if reg == "optimizers"} == set(OPTIMIZER_OPS)
    for name in FUSED_OPERATIONS:
        assert hasattr(ReferenceOps, name), name
        assert getattr(cpu.NumbaOps, name) is not getattr(ReferenceOps, name), f"NumbaOps does not fuse {name}"


PARAMS = [pytest.param(op, v, id=f"{op}-{v}") for op, reg in FUSED_OPERATIONS.items() for v in VARIANTS[reg]
          if reg != "optimizers" or v in OPTIMIZER_OPS[op]]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op,variant", PARAMS)
def test_fused_equals_reference(fused_kind, op, variant, dtype, shape):
    CASES[op](fused_kind, dtype, variant, shape)


@pytest.mark.parametrize("name", ["relu", "gelu"])
def test_non_contiguous_inputs(name):
    fused, ref, _, _ = _sets("numba-serial", "float64")
    act = ACTIVATIONS[name]
    big = _pre_activations((20, 30), "float64")
    z = big[::2, 1::3]  # strided view
    b = np.linspace(-1, 1, z.shape[1])
    zr, ar = ref.bias_act(z.copy(), b, act)
    _, af = fused.bias_act(z.copy(order="F"), b, act)
    close(af, ar, "float64")
    g = big[1::2, ::3].copy(order="F")
    close(fused.act_grad(g.copy(order="F"), zr, ar, act)[0], ref.act_grad(g, zr, ar, act)[0], "float64")


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh"])
def test_whole_training_parity_fused_vs_reference(dtype, rtol, activation):
    from conftest import blobs

    X, y = blobs(n=96, features=10, classes=4)
    weights = []
    for mode in ("reference", "auto"):
        model = xpnet.MLP([10, 24, 16, 4], activation=activation, dtype=dtype, seed=3, kernels=mode)
        trainer = xpnet.Trainer(model, optimizer=optim.AdamW(lr=0.01), clip_grad_norm=1.0)
        trainer.fit(X, y, epochs=2, batch_size=16, verbose=False)
        assert model.ops.name == ("reference" if mode == "reference" else "numba")
        weights.append(xpnet.to_host(model.params))
    if dtype == "float64":
        np.testing.assert_allclose(weights[1], weights[0], rtol=rtol, atol=1e-14)
    else:  # float32: the fused kernels compute in float64 inside, so compare the weights as a vector
        assert np.linalg.norm(weights[1] - weights[0]) <= rtol * np.linalg.norm(weights[0])


def test_kernel_choice_is_checked_and_env_value_read_when_resolving(monkeypatch):
    from xpnet import kernels

    with pytest.raises(ValueError, match="kernels='fast' is unknown: use one of auto, reference"):
        xpnet.MLP([2, 2], kernels="fast")
    with pytest.raises(ValueError, match="kernels='fast' is unknown"), xpnet.use_kernels("fast"):
        pass
    monkeypatch.setenv("XPNET_KERNELS", "bogus")  # read when a default is resolved, not at import
    with pytest.raises(ValueError, match="XPNET_KERNELS='bogus' is unknown"):
        xpnet.MLP([2, 2])
    assert xpnet.MLP([2, 2], kernels="auto").ops.name == "numba"  # an explicit choice needs no default
    monkeypatch.setenv("XPNET_KERNELS", "reference")
    assert kernels.default_kernels() == "reference"
    model = xpnet.MLP([2, 2])
    assert model.kernels == "reference" and model.ops.name == "reference"


def test_kernel_choice_is_per_model_without_globals():
    ref = xpnet.MLP([3, 2], kernels="reference")
    fused = xpnet.MLP([3, 2])  # same thread, right after: the fused set
    assert isinstance(ref.ops, ReferenceOps) and type(ref.ops) is ReferenceOps and ref.kernels == "reference"
    assert fused.ops.name == "numba" and fused.kernels == "auto"
    assert xpnet.Trainer(ref).ops.name == "reference" and xpnet.Trainer(fused).ops.name == "numba"


def test_use_kernels_is_scoped_restored_on_exceptions_and_not_seen_by_new_threads():
    import threading

    from xpnet import kernels

    with xpnet.use_kernels("reference"):
        assert xpnet.MLP([3, 2]).ops.name == "reference"
        assert xpnet.MLP([3, 2], kernels="auto").ops.name == "numba"  # an explicit argument wins
        with xpnet.use_kernels("auto"):
            assert xpnet.MLP([3, 2]).ops.name == "numba"
        assert kernels.default_kernels() == "reference"  # the inner block restored the outer one
        seen = {}
        thread = threading.Thread(target=lambda: seen.update(ops=xpnet.MLP([3, 2]).ops.name,
                                                             mode=kernels.default_kernels()))
        thread.start()
        thread.join()
        assert seen == {"ops": "numba", "mode": "auto"}  # a new thread starts without the override
    assert kernels.default_kernels() == "auto"
    with pytest.raises(RuntimeError, match="boom"), xpnet.use_kernels("reference"):
        raise RuntimeError("boom")
    assert kernels.default_kernels() == "auto" and xpnet.MLP([3, 2]).ops.name == "numba"


def test_set_and_get_kernel_mode_are_deprecated_shims():
    import contextvars

    from xpnet import kernels

    def in_a_fresh_context():
        with pytest.warns(DeprecationWarning, match="set_kernel_mode is deprecated"):
            xpnet.set_kernel_mode("reference")
        with pytest.warns(DeprecationWarning, match="get_kernel_mode is deprecated"):
            assert xpnet.get_kernel_mode() == "reference"
        assert xpnet.MLP([3, 2]).ops.name == "reference"
        with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="kernel mode 'fast' is unknown"):
            xpnet.set_kernel_mode("fast")

    contextvars.copy_context().run(in_a_fresh_context)  # the shim acts through the context variable
    assert kernels.default_kernels() == "auto"


def test_reference_path_when_numba_is_missing(monkeypatch):
    from xpnet import kernels

    def no_numba():
        raise ImportError("No module named 'numba'")

    kernels._warn_numba_missing.cache_clear()  # re-arm the once-per-reason warning (no module flag)
    with pytest.warns(RuntimeWarning, match="Numba is not available"):
        assert kernels.numba_ops_class(load=no_numba) is None
    assert kernels.numba_ops_class(load=no_numba) is None  # says so once only (warnings are errors here)
    monkeypatch.setattr(kernels, "numba_ops_class", lambda: None)  # Numba absent for the dispatcher
    model = xpnet.MLP([3, 2])
    assert model.ops.name == "reference" and model.kernels == "auto"


def test_steady_state_step_allocates_no_arrays():
    """After the first step, workspaces are reused: a step allocates only tiny scalars."""
    import tracemalloc

    from conftest import blobs

    X, y = blobs(n=256, features=64, classes=10)
    trainer = xpnet.Trainer(xpnet.MLP([64, 128, 128, 10]), optimizer=optim.Adam(), clip_grad_norm=1.0)
    trainer.fit(X, y, epochs=1, batch_size=64, verbose=False)  # warm-up: workspaces, kernels
    Xd, yd = trainer.prepare(X[:64], y[:64])
    one_buffer = 64 * 128 * 4
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(10):
            trainer.forward_backward(Xd, yd)
            trainer.update()
        peak_step = tracemalloc.get_traced_memory()[1] - base
        Xall, yall = trainer.prepare(X, y)
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        trainer._epoch(Xall, yall, 256, 64, True, [])  # one epoch of fit: shuffle, gather, 4 steps
        peak_epoch = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak_step < one_buffer / 4, peak_step
    assert peak_epoch < one_buffer, peak_epoch


def test_one_optimizer_launch_per_step():
    from conftest import blobs

    X, y = blobs(n=64, features=8, classes=3)
    for opt in (optim.Adam(), optim.SGD(momentum=0.9), optim.RMSprop(centered=True), optim.Adagrad()):
        trainer = xpnet.Trainer(xpnet.MLP([8, 16, 3]), optimizer=opt)
        trainer.train_step(X, y)
        before = trainer.ops.launches
        trainer.optimizer.step(trainer.model.params, trainer.model.grads, trainer.ops)
        assert trainer.ops.launches - before == 1, type(opt).__name__


# -- properties: any values, any shape ---------------------------------------------------------------
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402


def _values(dtype):
    """Any float of ``dtype``: NaN, +-inf, subnormals, +-0 and values near exp's overflow included."""
    return st.floats(allow_nan=True, allow_infinity=True, width=32 if dtype == "float32" else 64)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_fused_activation_equals_reference_for_any_values(data):
    """Hypothesis searches the whole float range (and odd shapes) for an input on which the Numba
    bias + activation and derivative kernels part from the array-API reference."""
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    act = ACTIVATIONS[data.draw(st.sampled_from(sorted(ACTIVATIONS)), label="activation")]
    shape = data.draw(st.tuples(st.integers(1, 9), st.integers(1, 9)), label="shape")
    z = data.draw(arrays(dtype, shape, elements=_values(dtype)), label="z")
    b = data.draw(arrays(dtype, shape[1:], elements=st.floats(-4, 4, width=32 if dtype == "float32" else 64)))
    g = data.draw(arrays(dtype, shape, elements=st.floats(-1e3, 1e3, width=32 if dtype == "float32" else 64)))
    fused, ref, _, _ = _sets("numba-serial", dtype)
    zr, ar = ref.bias_act(z.copy(), b, act)
    zf, af = fused.bias_act(z.copy(), b, act)
    close(zf, zr, dtype)
    close(af, ar, dtype)
    dr, dbr = ref.act_grad(g.copy(), zr, ar, act)
    df, dbf = fused.act_grad(g.copy(), zr, ar, act)
    truth = _derivative_in_float64(g, zr, ar, act)
    _close_or_more_accurate(df, dr, truth, dtype)
    _close_sums(dbf, dbr, dr, dtype, truth)


def _derivative_in_float64(g, z, a, act):
    """The reference derivative from the same inputs, computed in float64: the accuracy yardstick."""
    ref64 = ReferenceOps(resolve_backend("cpu"), "float64")
    d64, _ = ref64.act_grad(g.astype(np.float64), z.astype(np.float64), a.astype(np.float64), act)
    return d64


def _close_or_more_accurate(actual, desired, truth, dtype):
    """``actual`` within ``close``'s tolerance of the reference ``desired``, or no farther from the float64
    ``truth`` than the reference is: where a formula cancels (gelu'(-0.75) is the difference of two terms
    near 0.226), the float32 reference itself is off by ~2e-5 relative and a fused kernel may do better."""
    tol = TOL[dtype]["rtol"] * np.abs(desired) + TOL[dtype]["atol"]
    with np.errstate(invalid="ignore"):
        ok = (np.abs(actual - desired) <= tol) | (np.abs(actual - truth) <= np.abs(desired - truth) + tol)
    same_special = (np.isnan(actual) & np.isnan(desired)) | ((actual == desired) & ~np.isfinite(desired))
    assert np.all(ok | same_special), (actual, desired, truth)


def _close_sums(actual, desired, terms, dtype, truth_terms=None):
    """Column sums in another order: the error bound is relative to the terms' magnitudes, not to
    the sum's (cancellation, e.g. -32.37 + 32.0, leaves a sum whose relative error is large)."""
    finite = np.isfinite(desired)
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(desired))
    np.testing.assert_array_equal(actual[~finite & ~np.isnan(desired)], desired[~finite & ~np.isnan(desired)])
    magnitude = np.sum(np.where(np.isfinite(terms), np.abs(terms), 0), axis=0)
    # the summation order's error, plus the tolerance each term already has (``close``: the fused derivative
    # may differ from the reference by rtol * |term| + atol, e.g. gelu'(-0.75) where its two parts cancel)
    n = terms.shape[0]
    bound = 4 * np.finfo(dtype).eps * (n + 1) * magnitude + TOL[dtype]["rtol"] * magnitude + n * TOL[dtype]["atol"]
    ok = np.abs(actual - desired) <= bound
    if truth_terms is not None:  # or no farther from the float64 sums than the reference (see _close_or_more_accurate)
        truth = np.sum(truth_terms, axis=0)
        with np.errstate(invalid="ignore"):
            ok |= np.abs(actual - truth) <= np.abs(desired - truth) + bound
    assert np.all(ok[finite]), (actual, desired, bound)


def test_gelu_derivative_with_cancellation_found_by_hypothesis():
    """The case hypothesis found: gelu'(-0.75) = 0.00106 is the difference of two terms near 0.226, so the
    fused and reference derivatives differ by ~2e-5 relative -- within ``close``'s tolerance, and so must
    the bias gradient (the sum of one such term) be."""
    act = ACTIVATIONS["gelu"]
    z = np.zeros((1, 1), dtype=np.float32)
    b = np.array([-0.75], dtype=np.float32)
    fused, ref, _, _ = _sets("numba-serial", "float32")
    for upstream in (5.0, 6.0):
        g = np.array([[upstream]], dtype=np.float32)
        zr, ar = ref.bias_act(z.copy(), b, act)
        dr, dbr = ref.act_grad(g.copy(), zr, ar, act)
        df, dbf = fused.act_grad(g.copy(), zr, ar, act)
        truth = _derivative_in_float64(g, zr, ar, act)
        assert abs(df - truth) < abs(dr - truth)  # the fused kernel is the more accurate one here
        _close_or_more_accurate(df, dr, truth, "float32")
        _close_sums(dbf, dbr, dr, "float32", truth)


def test_bias_gradient_with_cancellation_found_by_hypothesis():
    """The case hypothesis found: elu'(-1) x [-88, 87] sums to -0.368 from terms of size 32, so the
    column sums of two summation orders differ by ~1e-6 -- correct, and bounded by the terms' size."""
    act = ACTIVATIONS["elu"]
    z = np.zeros((2, 1), dtype=np.float32)
    b = np.array([-1.0], dtype=np.float32)
    g = np.array([[-88.0], [87.0]], dtype=np.float32)
    fused, ref, _, _ = _sets("numba-serial", "float32")
    zr, ar = ref.bias_act(z.copy(), b, act)
    dr, dbr = ref.act_grad(g.copy(), zr, ar, act)
    df, dbf = fused.act_grad(g.copy(), zr, ar, act)
    close(df, dr, "float32")
    _close_sums(dbf, dbr, dr, "float32")
