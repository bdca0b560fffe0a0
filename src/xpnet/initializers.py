"""Weight initialisation, drawn on the host from a seed so every backend starts identical."""

from __future__ import annotations

import math

import numpy as np

# family -> fan-based variance scale: Var(W) = scale / fan
_FAMILIES = {
    "he": lambda fan_in, fan_out: 2.0 / fan_in,  # He et al. 2015, for ReLU-like units
    "xavier": lambda fan_in, fan_out: 2.0 / (fan_in + fan_out),  # Glorot & Bengio 2010
    "lecun": lambda fan_in, fan_out: 1.0 / fan_in,  # LeCun et al. 1998
}
INITIALIZERS = tuple(f"{family}_{dist}" for family in _FAMILIES for dist in ("normal", "uniform"))


def default_init(family: str) -> str:
    """The initialiser that fits an activation's family (see ``Activation.init``)."""
    return "he_normal" if family == "he" else f"{family}_uniform"


def check_init(init: str) -> str:
    if not isinstance(init, str) or init not in INITIALIZERS:
        raise ValueError(f"init={init!r} is unknown: use one of {', '.join(INITIALIZERS)}, or None for the default.")
    return init


def draw_weights(init: str, fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """A ``(fan_in, fan_out)`` float64 weight matrix; biases start at zero."""
    family, dist = check_init(init).split("_")
    var = _FAMILIES[family](fan_in, fan_out)
    if dist == "normal":
        return rng.normal(0.0, math.sqrt(var), size=(fan_in, fan_out))
    bound = math.sqrt(3.0 * var)  # Var(U(-a, a)) = a^2 / 3
    return rng.uniform(-bound, bound, size=(fan_in, fan_out))
