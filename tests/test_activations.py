"""Each activation and its derivative against torch, including large |z| where naive formulas break."""

from __future__ import annotations

import numpy as np
import pytest

from xpnet.activations import ACTIVATIONS
from xpnet.backend import resolve_backend

torch = pytest.importorskip("torch")
from test_gradients import TORCH_ACT  # noqa: E402

XP = resolve_backend().xp
Z = np.concatenate([np.linspace(-30, 30, 601), [-1e4, -800.0, -100.0, -20.5, 20.5, 100.0, 800.0, 1e4, 0.0, -0.0]])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_forward_and_derivative_match_torch(name, dtype):
    act = ACTIVATIONS[name]
    z = Z.astype(dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # not even in unused branches
        a = act.forward(XP, z)
        d = act.derivative(XP, z, a)
    tz = torch.tensor(z.astype(np.float64), requires_grad=True)  # the float64 oracle for both dtypes
    ta = TORCH_ACT[name](tz)
    (td,) = torch.autograd.grad(ta.sum(), tz)
    assert a.dtype == dtype and d.dtype == dtype
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(a, ta.detach().numpy(), **tol)
    np.testing.assert_allclose(d, td.numpy(), **tol)
