"""Dropout: identical masks on every kernel set and namespace, keep-rate statistics, gradients with a
fixed mask (finite differences and torch), same trained weights everywhere, p=0 is no dropout,
evaluation never drops, and a resumed run is bit-identical."""

from __future__ import annotations

import array_api_strict
import numpy as np
import pytest
from conftest import blobs

import xpnet
from xpnet.activations import ACTIVATIONS
from xpnet.backend import resolve_backend
from xpnet.dropout import dropout_key, element_hash, keep_mask, keep_threshold, mix32
from xpnet.io import checkpoint
from xpnet.kernels import ReferenceOps

cpu = pytest.importorskip("xpnet.kernels.cpu")

SHAPE = (53, 71)


def _kernel_sets(dtype):
    """(name, ops, to-device, to-host) for the reference on NumPy and array-api-strict and both Numba variants."""
    npb, strict = resolve_backend("cpu"), resolve_backend(None, array_api_strict)
    yield "reference-numpy", ReferenceOps(npb, dtype), npb
    yield "reference-strict", ReferenceOps(strict, dtype), strict
    yield "numba-serial", cpu.NumbaOps(npb, dtype, parallel=False), npb
    yield "numba-parallel", cpu.NumbaOps(npb, dtype, parallel=True, parallel_min=0), npb


def _dropped_ones(ops, backend, p, key, act="identity"):
    """The activation of a layer whose pre-activation is all ones: exactly ``mask * f(1) / (1 - p)``."""
    z = backend.from_host(np.ones(SHAPE), ops.dtype)
    b = backend.from_host(np.zeros(SHAPE[1]), ops.dtype)
    return xpnet.to_host(ops.bias_act(z, b, ACTIVATIONS[act], None, p, key)[1])


def test_hash_is_the_same_on_python_ints_and_int64_arrays():
    idx = np.arange(1000, dtype=np.int64) * 7919 + 3
    key = dropout_key(5, 12, 1)
    assert [int(element_hash(int(i), key)) for i in idx] == element_hash(idx, key).tolist()
    assert all(0 <= int(mix32(int(i))) < 2**32 for i in idx)
    # idx beyond 2**32 is reduced first: products stay below 2**63 in int64
    assert int(element_hash(2**40 + 5, key)) == int(element_hash(5, key))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_masks_identical_on_every_kernel_set(dtype, p):
    key = dropout_key(7, 3, 0)
    expected = np.asarray(keep_mask(np, SHAPE, p, key)) * np.asarray(1.0 / (1.0 - p), dtype=dtype)
    for name, ops, backend in _kernel_sets(dtype):
        np.testing.assert_array_equal(_dropped_ones(ops, backend, p, key), expected, err_msg=name)


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.8])
def test_keep_rate_and_independence(p):
    n = 400 * 500
    masks = [np.asarray(keep_mask(np, (400, 500), p, dropout_key(s, t, l)))
             for s, t, l in [(0, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 0)]]
    sigma = np.sqrt(p * (1 - p) / n)
    for m in masks:
        assert abs(m.mean() - (1 - p)) < 5 * sigma
        # rows and columns: no structure along either axis
        assert np.abs(m.mean(axis=0) - (1 - p)).max() < 6 * np.sqrt(p * (1 - p) / 400)
    for i in range(len(masks)):  # another step, layer or seed: an independent mask
        for j in range(i + 1, len(masks)):
            both = (masks[i] & masks[j]).mean()
            assert abs(both - (1 - p) ** 2) < 6 * sigma
    assert keep_threshold(0.0) == 2**32 and keep_mask(np, (3, 4), 0.0, 123).all()


def test_fused_backward_recomputes_the_forward_mask():
    z = np.random.default_rng(0).normal(size=SHAPE)
    b = np.random.default_rng(1).normal(size=SHAPE[1])
    g = np.random.default_rng(2).normal(size=SHAPE)
    key = dropout_key(0, 9, 2)
    ref = ReferenceOps(resolve_backend("cpu"), "float64")
    for act in ("sigmoid", "tanh", "relu", "elu"):
        fn = ACTIVATIONS[act]
        zr, ar = ref.bias_act(z.copy(), b, fn, None, 0.4, key)
        keep = np.asarray(keep_mask(np, SHAPE, 0.4, key))
        np.testing.assert_array_equal(ar[~keep], 0.0)
        np.testing.assert_allclose(ar[keep], fn.forward(np, zr)[keep] / 0.6, rtol=1e-15)
        expected = g * fn.derivative(np, zr, fn.forward(np, zr)) * keep / 0.6
        for ops in (ref, cpu.NumbaOps(resolve_backend("cpu"), "float64")):
            dz, db = ops.act_grad(g.copy(), zr, ar, fn, None, 0.4, key)
            np.testing.assert_allclose(dz, expected, rtol=1e-13, atol=1e-14, err_msg=act)  # 1 - tanh^2: libm ulps
            np.testing.assert_allclose(db, expected.sum(axis=0), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("first_row", [0, 17, 100_000_007])  # 100_000_007 * 71 is past 2**32: the counter wraps
def test_a_share_draws_the_global_batch_rows_masks(first_row):
    """A kernel given ``dropout_row`` draws, for its rows, the masks of those rows of the global batch
    (element ``(first_row + r) * cols + c``, hashed as Python ints here), forward and backward, on
    every kernel set: data-parallel ranks draw one process's masks between them."""
    p, key, rows, cols = 0.4, dropout_key(2, 5, 1), 9, SHAPE[1]
    idx = np.array([[(first_row + r) * cols + c for c in range(cols)] for r in range(rows)], dtype=object)
    keep = np.vectorize(lambda i: int(element_hash(int(i), key)) < keep_threshold(p))(idx).astype(bool)
    np.testing.assert_array_equal(np.asarray(keep_mask(np, (rows, cols), p, key, first_row=first_row)), keep)
    if first_row == 17:  # the rows of a whole batch from row 17 on
        np.testing.assert_array_equal(np.asarray(keep_mask(np, (17 + rows, cols), p, key))[17:], keep)
    g = np.random.default_rng(3).normal(size=(rows, cols))
    for name, ops, backend in _kernel_sets("float64"):
        z = backend.from_host(np.ones((rows, cols)), "float64")
        zr, a = ops.bias_act(z, backend.from_host(np.zeros(cols), "float64"), ACTIVATIONS["identity"], None, p, key,
                             first_row)
        np.testing.assert_array_equal(xpnet.to_host(a), keep / (1 - p), err_msg=name)
        dz, _ = ops.act_grad(backend.from_host(g.copy(), "float64"), zr, a, ACTIVATIONS["identity"], None, p, key,
                             first_row)  # (Numba writes dz into g)
        np.testing.assert_array_equal(xpnet.to_host(dz), np.where(keep, g / (1 - p), 0.0), err_msg=name)


# -- the model -------------------------------------------------------------------------------------
SIZES = [5, 8, 7, 3]


def _problem(batch=11):
    r = np.random.default_rng(0)
    return r.normal(0, 1.5, size=(batch, SIZES[0])), r.integers(0, SIZES[-1], size=batch).astype(np.int64)


def _grads(trainer, X, y):
    Xd, yd = trainer.prepare(X, y)
    loss, _ = trainer.forward_backward(Xd, yd)
    return float(loss), xpnet.to_host(trainer.model.grads).copy()


@pytest.mark.parametrize("kernels", ["auto", "reference"])
@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "gelu"])
def test_finite_differences_with_a_fixed_mask(activation, kernels):
    model = xpnet.MLP(SIZES, activation=activation, dtype="float64", seed=3, dropout=[0.4, 0.25], kernels=kernels)
    trainer = xpnet.Trainer(model)
    trainer.step_count = 17  # the step fixes the masks: the loss is a smooth function of the weights
    X, y = _problem()
    _, grads = _grads(trainer, X, y)
    params = xpnet.to_host(model.params).copy()
    eps, numeric = 1e-6, np.empty(model.n_params)
    for i in range(model.n_params):
        values = []
        for sign in (1, -1):
            p = params.copy()
            p[i] += sign * eps
            model.params[...] = p
            values.append(_grads(trainer, X, y)[0])
        numeric[i] = (values[0] - values[1]) / (2 * eps)
    np.testing.assert_allclose(grads, numeric, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "silu"])
def test_gradients_match_torch_with_the_same_mask(activation):
    torch = pytest.importorskip("torch")
    from test_gradients import TORCH_ACT

    rates, step, seed = [0.5, 0.2], 4, 11
    model = xpnet.MLP(SIZES, activation=activation, dtype="float64", seed=seed, dropout=rates)
    trainer = xpnet.Trainer(model)
    trainer.step_count = step
    X, y = _problem()
    loss, grads = _grads(trainer, X, y)

    params = [(torch.tensor(W, requires_grad=True), torch.tensor(b, requires_grad=True))
              for W, b in model.get_weights()]
    a = torch.tensor(X)
    for layer, (W, b) in enumerate(params):
        a = a @ W + b
        if layer < len(params) - 1:
            mask = np.asarray(keep_mask(np, tuple(a.shape), rates[layer], dropout_key(seed, step, layer)))
            a = TORCH_ACT[activation](a) * torch.tensor(mask) / (1 - rates[layer])
    ref = torch.nn.functional.cross_entropy(a, torch.tensor(y))
    ref.backward()
    expected = np.concatenate([t.grad.numpy().ravel() for pair in params for t in pair])
    np.testing.assert_allclose(loss, ref.item(), rtol=1e-12)
    np.testing.assert_allclose(grads, expected, rtol=1e-10, atol=1e-13)


def _fit(epochs=3, **kw):
    X, y = blobs()
    kw = {"dtype": "float64", "seed": 7, "activation": "gelu", **kw}
    model = xpnet.MLP([6, 16, 12, 3], **kw)
    trainer = xpnet.Trainer(model, optimizer=xpnet.optim.Adam(lr=0.01))
    history = trainer.fit(X, y, epochs=epochs, batch_size=16, verbose=False)
    return model, trainer, history


def test_same_trained_weights_on_numpy_numba_and_array_api_strict():
    runs = [_fit(dropout=[0.3, 0.5], **kw)[0] for kw in ({"kernels": "auto"}, {"kernels": "reference"},
                                                           {"xp": array_api_strict})]
    for model in runs[1:]:
        for (W0, b0), (W1, b1) in zip(runs[0].get_weights(), model.get_weights()):
            np.testing.assert_allclose(W1, W0, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(b1, b0, rtol=1e-10, atol=1e-12)
    plain = _fit()[0]  # and dropout changed the training
    assert not np.allclose(plain.get_weights()[0][0], runs[0].get_weights()[0][0])


@pytest.mark.parametrize("kernels", ["auto", "reference"])
def test_zero_rate_is_exactly_no_dropout(kernels):
    ref = _fit(kernels=kernels)[0]
    for rate in (0.0, [0.0, 0.0]):
        model = _fit(kernels=kernels, dropout=rate)[0]
        for (W0, b0), (W1, b1) in zip(ref.get_weights(), model.get_weights()):
            np.testing.assert_array_equal(W1, W0)
            np.testing.assert_array_equal(b1, b0)


def test_evaluate_and_predict_never_drop():
    model, trainer, _ = _fit(epochs=1, dropout=0.5)
    plain = xpnet.MLP([6, 16, 12, 3], dtype="float64", seed=7, activation="gelu")
    plain.set_weights(model.get_weights())
    X, y = blobs()
    np.testing.assert_array_equal(xpnet.to_host(trainer.predict(X)), xpnet.to_host(xpnet.Trainer(plain).predict(X)))
    assert trainer.evaluate(X, y) == xpnet.Trainer(plain).evaluate(X, y)
    before = xpnet.to_host(trainer.predict(X))
    trainer.step_count += 1  # another step would draw other masks: prediction does not depend on it
    np.testing.assert_array_equal(xpnet.to_host(trainer.predict(X)), before)


def test_resume_from_a_checkpoint_is_bit_identical(tmp_path):
    _, trainer, history = _fit(epochs=2, dropout=[0.2, 0.4])
    path = checkpoint.save(tmp_path, trainer, epoch=1, history=history)
    resumed = checkpoint.load_model(path)
    assert resumed.dropout == (0.2, 0.4)
    fresh = xpnet.Trainer(resumed, optimizer=xpnet.optim.Adam(lr=0.01))
    checkpoint.restore(fresh, checkpoint.load(path))
    assert fresh.step_count == trainer.step_count
    X, y = blobs()
    trainer.fit(X, y, epochs=4, batch_size=16, verbose=False, initial_epoch=2)
    fresh.fit(X, y, epochs=4, batch_size=16, verbose=False, initial_epoch=2)
    np.testing.assert_array_equal(xpnet.to_host(fresh.model.params), xpnet.to_host(trainer.model.params))


@pytest.mark.parametrize("bad", [1.0, -0.1, float("nan"), "0.5", True, [0.1], [0.1, 0.2, 0.3], [0.1, 1.5]])
def test_invalid_rates_are_refused_clearly(bad):
    with pytest.raises((ValueError, TypeError), match=r"dropout"):
        xpnet.MLP([6, 16, 12, 3], dropout=bad)


def test_rates_are_kept_per_hidden_layer():
    assert xpnet.MLP([6, 16, 12, 3], dropout=0.3).dropout == (0.3, 0.3)
    assert xpnet.MLP([6, 16, 12, 3], dropout=[0, 0.5]).dropout == (0.0, 0.5)
    assert xpnet.MLP([6, 3]).dropout == ()
