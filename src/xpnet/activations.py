"""Activations: one registry, each entry a forward and its derivative (array-API math).

``forward(xp, z)`` maps the pre-activation ``z`` to ``a``; ``derivative(xp, z, a)``
returns ``da/dz`` from whichever of ``z`` and ``a`` is cheaper and more stable.  These
reference definitions are the specification that the fused CPU / GPU kernels must equal.
Every formula is stable for large ``|z|`` (no overflow to inf, no inf * 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

LEAKY_SLOPE = 0.01
GELU_K = math.sqrt(2.0 / math.pi)
GELU_C = 0.044715
# Beyond this |z| the tanh-GELU equals z (or 0) to float64 precision; clamping there keeps
# z**3 from overflowing and the derivative from computing inf * 0.
GELU_CLAMP = 10.0
SOFTPLUS_THRESHOLD = 20.0  # as torch.nn.functional.softplus(beta=1, threshold=20)


@dataclass(frozen=True)
class Activation:
    name: str
    forward: Callable
    derivative: Callable
    init: str  # default initialiser family that fits this activation: "he", "xavier" or "lecun"


def _sigmoid(xp, z):
    # exp of a non-positive number only: never overflows.
    e = xp.exp(-xp.abs(z))
    return xp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _gelu_sigmoids(xp, z):
    # 0.5 * (1 + tanh(u)) == sigmoid(2u) and 0.5 * (1 - tanh(u)) == sigmoid(-2u): computing both
    # sigmoids directly avoids the cancellation in 1 - tanh(u)**2 that ruins float32 tails.
    zc = xp.clip(z, -GELU_CLAMP, GELU_CLAMP)
    u2 = (2.0 * GELU_K) * (zc + GELU_C * zc * zc * zc)
    return zc, _sigmoid(xp, u2), _sigmoid(xp, -u2)


def _gelu(xp, z):
    zc, s, _ = _gelu_sigmoids(xp, z)
    return xp.where(z > GELU_CLAMP, z, xp.where(z < -GELU_CLAMP, xp.zeros_like(z), zc * s))


def _gelu_derivative(xp, z, a):
    zc, s, s_neg = _gelu_sigmoids(xp, z)
    d = s + (2.0 * GELU_K) * zc * s * s_neg * (1.0 + 3.0 * GELU_C * zc * zc)
    return xp.where(z > GELU_CLAMP, xp.ones_like(z), xp.where(z < -GELU_CLAMP, xp.zeros_like(z), d))


def _softplus(xp, z):
    # torch's definition: linear above the threshold; the stable log1p form below it.
    soft = xp.maximum(z, xp.zeros_like(z)) + xp.log1p(xp.exp(-xp.abs(z)))
    return xp.where(z > SOFTPLUS_THRESHOLD, z, soft)


def _softplus_derivative(xp, z, a):
    return xp.where(z > SOFTPLUS_THRESHOLD, xp.ones_like(z), _sigmoid(xp, z))


def _silu_derivative(xp, z, a):
    s = _sigmoid(xp, z)
    return s * (1.0 + z * (1.0 - s))


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in [
        Activation("identity", lambda xp, z: z, lambda xp, z, a: xp.ones_like(z), "xavier"),
        Activation(
            "relu",
            lambda xp, z: xp.where(z > 0, z, xp.zeros_like(z)),
            lambda xp, z, a: xp.astype(z > 0, z.dtype),
            "he",
        ),
        Activation(
            "leaky_relu",
            lambda xp, z: xp.where(z > 0, z, LEAKY_SLOPE * z),
            lambda xp, z, a: xp.where(z > 0, xp.ones_like(z), xp.full_like(z, LEAKY_SLOPE)),
            "he",
        ),
        Activation("sigmoid", _sigmoid, lambda xp, z, a: a * (1.0 - a), "xavier"),
        Activation("tanh", lambda xp, z: xp.tanh(z), lambda xp, z, a: 1.0 - a * a, "xavier"),
        Activation("gelu", _gelu, _gelu_derivative, "he"),
        Activation("silu", lambda xp, z: z * _sigmoid(xp, z), _silu_derivative, "he"),
        Activation(
            "elu",
            # expm1 of min(z, 0): the unused branch of `where` must not overflow either.
            lambda xp, z: xp.where(z > 0, z, xp.expm1(xp.minimum(z, xp.zeros_like(z)))),
            lambda xp, z, a: xp.where(z > 0, xp.ones_like(z), a + 1.0),
            "he",
        ),
        Activation("softplus", _softplus, _softplus_derivative, "he"),
    ]
}


def get_activation(name: str) -> Activation:
    """Look up an activation by name; unknown names list the valid ones."""
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(f"activation={name!r} is unknown: use one of {', '.join(ACTIVATIONS)}.")
    return ACTIVATIONS[name]
