"""Activations: ONE registry; each entry is the activation in two forms that must agree.

* ``forward(xp, z)`` / ``derivative(xp, z, a)``: array-API reference math, the specification.
* ``scalar``: the same math on one Python float (``math`` module), compiled by Numba into the
  fused CPU kernels (``xpnet.kernels.cpu`` builds its own compiled table from it).

The CUDA form of each activation (two device-function bodies) lives with the rest of the GPU
code, in ``xpnet.kernels.cuda_source.ACTIVATION_CUDA``; a test checks every activation has one.

``a`` is the activation output, ``z`` the pre-activation; a derivative uses whichever is cheaper
and more stable.  Every form is stable for large ``|z|`` (no overflow, no inf * 0), and NaN
propagates.  Adding an activation means adding one entry here and its CUDA bodies there; the
tests compare all forms with each other and with torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._typing import Array, Namespace

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
    forward: Callable[[Namespace, Array], Array]  # (xp, z) -> a
    derivative: Callable[[Namespace, Array, Array], Array]  # (xp, z, a) -> da/dz
    init: str  # default initialiser family that fits this activation: "he", "xavier" or "lecun"
    # (z) -> a, (z, a) -> da/dz on Python floats
    scalar: tuple[Callable[[float], float], Callable[[float, float], float]]
    # Deprecated: CUDA bodies belong in xpnet.kernels.cuda_source.ACTIVATION_CUDA (used only for an
    # activation that has no entry there).
    cuda: tuple[str, str] | None = None


# -- shared pieces ----------------------------------------------------------------------------
def sigmoid(xp: Namespace, z: Array) -> Array:
    """The logistic function, stable for any ``z`` (also the loss module's; the one array form)."""
    e = xp.exp(-xp.abs(z))  # exp of a non-positive number: never overflows
    return xp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def sigmoid_scalar(z: float) -> float:
    """The same on one float (compiled by Numba into the CPU kernels; the one scalar form)."""
    e = math.exp(-abs(z))
    return 1.0 / (1.0 + e) if z >= 0.0 else e / (1.0 + e)


# -- gelu (tanh approximation) ----------------------------------------------------------------
# 0.5 * (1 + tanh(u)) == sigmoid(2u) and 0.5 * (1 - tanh(u)) == sigmoid(-2u): computing both
# sigmoids directly avoids the cancellation in 1 - tanh(u)**2 that ruins float32 tails.
def _gelu_sigmoids(xp: Namespace, z: Array) -> tuple[Array, Array, Array]:
    zc = xp.clip(z, -GELU_CLAMP, GELU_CLAMP)
    u2 = (2.0 * GELU_K) * (zc + GELU_C * zc * zc * zc)
    return zc, sigmoid(xp, u2), sigmoid(xp, -u2)


def _gelu(xp: Namespace, z: Array) -> Array:
    zc, s, _ = _gelu_sigmoids(xp, z)
    return xp.where(z > GELU_CLAMP, z, xp.where(z < -GELU_CLAMP, xp.zeros_like(z), zc * s))


def _gelu_derivative(xp: Namespace, z: Array, a: Array) -> Array:
    zc, s, s_neg = _gelu_sigmoids(xp, z)
    d = s + (2.0 * GELU_K) * zc * s * s_neg * (1.0 + 3.0 * GELU_C * zc * zc)
    return xp.where(z > GELU_CLAMP, xp.ones_like(z), xp.where(z < -GELU_CLAMP, xp.zeros_like(z), d))


def _gelu_s(z: float) -> float:
    if z > GELU_CLAMP:
        return z
    if z < -GELU_CLAMP:
        return 0.0
    return z * sigmoid_scalar((2.0 * GELU_K) * (z + GELU_C * z * z * z))  # NaN falls through


def _gelu_ds(z: float, a: float) -> float:
    if z > GELU_CLAMP:
        return 1.0
    if z < -GELU_CLAMP:
        return 0.0
    u2 = (2.0 * GELU_K) * (z + GELU_C * z * z * z)
    s, s_neg = sigmoid_scalar(u2), sigmoid_scalar(-u2)
    return s + (2.0 * GELU_K) * z * s * s_neg * (1.0 + 3.0 * GELU_C * z * z)


# -- softplus ---------------------------------------------------------------------------------
def _softplus(xp: Namespace, z: Array) -> Array:
    # torch's definition: linear above the threshold; the stable log1p form below it.
    soft = xp.maximum(z, xp.zeros_like(z)) + xp.log1p(xp.exp(-xp.abs(z)))
    return xp.where(z > SOFTPLUS_THRESHOLD, z, soft)


def _softplus_s(z: float) -> float:
    if z > SOFTPLUS_THRESHOLD:
        return z
    return (z if z > 0.0 else 0.0) + math.log1p(math.exp(-abs(z)))


# -- the registry -----------------------------------------------------------------------------
ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in [
        Activation(
            "identity",
            lambda xp, z: z,
            lambda xp, z, a: xp.ones_like(z),
            "xavier",
            scalar=(lambda z: z, lambda z, a: 1.0),
        ),
        Activation(
            "relu",
            lambda xp, z: xp.maximum(z, xp.zeros_like(z)),  # maximum propagates NaN
            lambda xp, z, a: xp.astype(z > 0, z.dtype),
            "he",
            scalar=(lambda z: z if (z > 0.0 or z != z) else 0.0, lambda z, a: 1.0 if z > 0.0 else 0.0),
        ),
        Activation(
            "leaky_relu",
            lambda xp, z: xp.where(z > 0, z, LEAKY_SLOPE * z),
            lambda xp, z, a: xp.where(z > 0, xp.ones_like(z), xp.full_like(z, LEAKY_SLOPE)),
            "he",
            scalar=(lambda z: z if z > 0.0 else LEAKY_SLOPE * z, lambda z, a: 1.0 if z > 0.0 else LEAKY_SLOPE),
        ),
        Activation(
            "sigmoid",
            sigmoid,
            lambda xp, z, a: a * (1.0 - a),
            "xavier",
            scalar=(sigmoid_scalar, lambda z, a: a * (1.0 - a)),
        ),
        Activation(
            "tanh",
            lambda xp, z: xp.tanh(z),
            lambda xp, z, a: 1.0 - a * a,
            "xavier",
            scalar=(lambda z: math.tanh(z), lambda z, a: 1.0 - a * a),
        ),
        Activation("gelu", _gelu, _gelu_derivative, "he", scalar=(_gelu_s, _gelu_ds)),
        Activation(
            "silu",
            lambda xp, z: z * sigmoid(xp, z),
            lambda xp, z, a: sigmoid(xp, z) * (1.0 + z * (1.0 - sigmoid(xp, z))),
            "he",
            scalar=(lambda z: z * sigmoid_scalar(z),
                    lambda z, a: sigmoid_scalar(z) * (1.0 + z * (1.0 - sigmoid_scalar(z)))),
        ),
        Activation(
            "elu",
            # expm1 of min(z, 0): the unused branch of `where` must not overflow either.
            lambda xp, z: xp.where(z > 0, z, xp.expm1(xp.minimum(z, xp.zeros_like(z)))),
            lambda xp, z, a: xp.where(z > 0, xp.ones_like(z), a + 1.0),
            "he",
            scalar=(lambda z: z if z > 0.0 else math.expm1(z), lambda z, a: 1.0 if z > 0.0 else a + 1.0),
        ),
        Activation(
            "softplus",
            _softplus,
            lambda xp, z, a: xp.where(z > SOFTPLUS_THRESHOLD, xp.ones_like(z), sigmoid(xp, z)),
            "he",
            scalar=(_softplus_s, lambda z, a: 1.0 if z > SOFTPLUS_THRESHOLD else sigmoid_scalar(z)),
        ),
    ]
}


def get_activation(name: str) -> Activation:
    """Look up an activation by name; unknown names list the valid ones."""
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(f"activation={name!r} is unknown: use one of {', '.join(ACTIVATIONS)}.")
    return ACTIVATIONS[name]


def __getattr__(name: str) -> Any:  # deprecated module attributes, moved to the CUDA kernel module
    if name == "CUDA_PRELUDE":
        import warnings

        from .kernels.cuda_source import CUDA_PRELUDE

        warnings.warn("xpnet.activations.CUDA_PRELUDE moved to xpnet.kernels.cuda_source.CUDA_PRELUDE",
                      DeprecationWarning, stacklevel=2)
        return CUDA_PRELUDE
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
