"""Backend-agnostic means: same seed, same weights on every namespace; arrays stay on their device."""

from __future__ import annotations

import importlib.util

import array_api_compat as aac
import numpy as np
import pytest
from conftest import blobs

import xpnet


def _train(where, optimizer="adam", dtype="float64", activation="gelu", epochs=3):
    X, y = blobs()
    model = xpnet.MLP([6, 16, 12, 3], activation=activation, dtype=dtype, seed=7, **where)
    trainer = xpnet.Trainer(model, optimizer=xpnet.optim.get_optimizer(optimizer, 0.01), clip_grad_norm=5.0)
    history = trainer.fit(X, y, epochs=epochs, batch_size=16, validation_split=0.2, verbose=False)
    return model, trainer, history


def test_initial_weights_identical_on_every_backend(where):
    ref = xpnet.MLP([6, 16, 3], seed=11).get_weights()
    got = xpnet.MLP([6, 16, 3], seed=11, **where).get_weights()
    for (W0, b0), (W1, b1) in zip(ref, got):
        np.testing.assert_array_equal(W0, W1)
        np.testing.assert_array_equal(b0, b1)


@pytest.mark.parametrize("optimizer", ["sgd", "rmsprop", "adamw"])
def test_same_seed_same_trained_weights(where, optimizer):
    ref_model, _, ref_hist = _train({"device": "cpu"}, optimizer)
    model, _, hist = _train(where, optimizer)
    for (W0, b0), (W1, b1) in zip(ref_model.get_weights(), model.get_weights()):
        np.testing.assert_allclose(W1, W0, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(b1, b0, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hist["val_loss"], ref_hist["val_loss"], rtol=1e-10)


def test_arrays_stay_on_the_model_device(where):
    model, trainer, _ = _train(where, epochs=1)
    backend = model.backend
    for arr in [model.params, model.grads, *trainer.optimizer.state.values()]:
        assert backend.owns(arr), f"{type(arr)} on {aac.device(arr)} left {backend.name}"
    X, y = blobs(n=20)
    loss = trainer.train_step(X, y)
    assert backend.owns(loss) and loss.ndim == 0 and np.isfinite(float(loss))
    assert backend.owns(trainer.predict(X))


def test_inputs_from_another_namespace_are_moved_once():
    """A model on array-api-strict's fake device accepts NumPy data (moved explicitly)."""
    xps = pytest.importorskip("array_api_strict")
    model = xpnet.MLP([6, 8, 3], dtype="float64", xp=xps, device=xps.Device("device1"))
    X, _ = blobs(n=30)
    out = xpnet.Trainer(model).predict(X)
    assert out.device == xps.Device("device1")


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed here")
def test_cuda_without_cupy_names_the_extra():
    with pytest.raises(RuntimeError, match=r"xpnet\[cuda12\]"):
        xpnet.MLP([4, 2], device="cuda")


def test_unknown_device_is_refused():
    with pytest.raises(ValueError, match="device='tpu'"):
        xpnet.MLP([4, 2], device="tpu")
    with pytest.raises(ValueError, match="cuda:N"):
        xpnet.MLP([4, 2], device="cuda:x")


def test_float32_trains_close_to_float64(where):
    m64, _, _ = _train(where, dtype="float64")
    m32, _, _ = _train(where, dtype="float32")
    for (W0, _), (W1, _) in zip(m64.get_weights(), m32.get_weights()):
        assert W1.dtype == np.float32
        np.testing.assert_allclose(W1, W0, rtol=1e-3, atol=1e-4)
