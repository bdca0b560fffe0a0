"""Backward pass checked against two independent oracles: finite differences and torch autograd."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet
from xpnet.activations import ACTIVATIONS
from xpnet.losses import LOSSES

torch = pytest.importorskip("torch")
F = torch.nn.functional

SIZES = [5, 7, 6, 3]
BATCH = 9


def _problem(loss: str, seed=0):
    r = np.random.default_rng(seed)
    X = r.normal(0, 1.5, size=(BATCH, SIZES[0]))
    if loss == "cross_entropy":
        y = r.integers(0, SIZES[-1], size=BATCH).astype(np.int64)
    elif loss == "bce":
        y = (r.random((BATCH, SIZES[-1])) > 0.5).astype(np.float64)
    else:
        y = r.normal(size=(BATCH, SIZES[-1]))
    return X, y


def _loss_and_grads(model, trainer, X, y):
    """Analytic loss and flat gradient from xpnet's own forward/backward."""
    Xd, yd = trainer.prepare(X, y)
    loss, _ = trainer.forward_backward(Xd, yd)
    return float(loss), xpnet.to_host(model.grads).copy()


@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_finite_differences(activation, loss):
    model = xpnet.MLP(SIZES, activation=activation, dtype="float64", seed=3)
    trainer = xpnet.Trainer(model, loss=loss)
    X, y = _problem(loss)
    _, grads = _loss_and_grads(model, trainer, X, y)

    params = xpnet.to_host(model.params).copy()
    r = np.random.default_rng(0)
    idx = r.choice(model.n_params, size=60, replace=False)
    eps = 1e-6
    numeric = np.empty(len(idx))
    for k, i in enumerate(idx):
        values = []
        for sign in (1, -1):
            p = params.copy()
            p[i] += sign * eps
            model.params[...] = p
            values.append(_loss_and_grads(model, trainer, X, y)[0])
        numeric[k] = (values[0] - values[1]) / (2 * eps)
    np.testing.assert_allclose(grads[idx], numeric, rtol=1e-5, atol=1e-8)


TORCH_ACT = {
    "identity": lambda z: z,
    "relu": F.relu,
    "leaky_relu": lambda z: F.leaky_relu(z, 0.01),
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "gelu": lambda z: F.gelu(z, approximate="tanh"),
    "silu": F.silu,
    "elu": F.elu,
    "softplus": F.softplus,
}


def torch_loss(loss, out, y):
    if loss == "cross_entropy":
        return F.cross_entropy(out, y)
    if loss == "mse":
        return F.mse_loss(out, y)
    return F.binary_cross_entropy_with_logits(out, y)


def torch_forward(weights, X, activation):
    a = X
    params = []
    for i, (W, b) in enumerate(weights):
        W = torch.tensor(W, requires_grad=True)
        b = torch.tensor(b, requires_grad=True)
        params += [W, b]
        a = a @ W + b
        if i < len(weights) - 1:
            a = TORCH_ACT[activation](a)
    return a, params


def test_torch_activation_table_is_complete():
    assert set(TORCH_ACT) == set(ACTIVATIONS)


@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_matches_torch_autograd(activation, loss):
    model = xpnet.MLP(SIZES, activation=activation, dtype="float64", seed=5)
    trainer = xpnet.Trainer(model, loss=loss)
    X, y = _problem(loss, seed=1)
    value, grads = _loss_and_grads(model, trainer, X, y)

    out, params = torch_forward(model.get_weights(), torch.tensor(X), activation)
    ref = torch_loss(loss, out, torch.tensor(y))
    ref.backward()
    ref_grads = np.concatenate([p.grad.numpy().ravel() for p in params])
    assert value == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(grads, ref_grads, rtol=1e-9, atol=1e-12)


def test_cross_entropy_one_hot_equals_labels():
    model = xpnet.MLP(SIZES, dtype="float64", seed=2)
    trainer = xpnet.Trainer(model)
    X, y = _problem("cross_entropy")
    value_labels, g_labels = _loss_and_grads(model, trainer, X, y)
    value_onehot, g_onehot = _loss_and_grads(model, trainer, X, np.eye(SIZES[-1])[y])
    assert value_labels == pytest.approx(value_onehot, rel=1e-14)
    np.testing.assert_allclose(g_labels, g_onehot, rtol=1e-13)


@pytest.mark.parametrize("loss", list(LOSSES))
def test_losses_stable_for_huge_logits(loss):
    """Log-sum-exp / log1p(exp(-|z|)) keep value and gradient finite at |logits| ~ 1e4."""
    from xpnet.backend import resolve_backend
    from xpnet.kernels import ops_for

    ops = ops_for(resolve_backend(), "float64")
    logits = np.array([[1e4, -1e4, 0.0], [-5e3, 5e3, 1.0]])
    y = np.array([0, 2]) if loss == "cross_entropy" else np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    value, grad = ops.loss(LOSSES[loss], logits, y)
    t_logits = torch.tensor(logits, requires_grad=True)
    ref = torch_loss(loss, t_logits, torch.tensor(y))
    ref.backward()
    assert np.isfinite(float(value)) and np.all(np.isfinite(grad))
    assert float(value) == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(grad, t_logits.grad.numpy(), rtol=1e-12, atol=1e-15)
