"""Models into the wider ecosystem: a ``torch.nn.Sequential`` equal to an xpnet MLP."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..activations import LEAKY_SLOPE

if TYPE_CHECKING:
    from ..model import MLP


def to_torch_state_dict(model: MLP) -> dict[str, Any]:
    """The weights as a ``torch.nn.Sequential`` state dict (``Linear`` layers at even indices)."""
    import torch

    state = {}
    for i, (W, b) in enumerate(model.get_weights()):
        state[f"{2 * i}.weight"] = torch.from_numpy(np.ascontiguousarray(W.T))  # torch stores (out, in)
        state[f"{2 * i}.bias"] = torch.from_numpy(b)
    return state


def to_torch(model: MLP) -> Any:
    """A ``torch.nn.Sequential`` equal to ``model`` (Linear, activation, ..., Linear)."""
    import torch

    acts: dict[str, Callable[[], Any]] = {
            "identity": torch.nn.Identity, "relu": torch.nn.ReLU, "leaky_relu": lambda: torch.nn.LeakyReLU(LEAKY_SLOPE),
            "sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh, "gelu": lambda: torch.nn.GELU(approximate="tanh"),
            "silu": torch.nn.SiLU, "elu": torch.nn.ELU, "softplus": torch.nn.Softplus}
    layers = []
    dtype = getattr(torch, model.dtype)
    for i, (a, b) in enumerate(zip(model.sizes[:-1], model.sizes[1:])):
        layers.append(torch.nn.Linear(a, b, dtype=dtype))
        if i < len(model.sizes) - 2:
            layers.append(acts[model.activation.name]())
    seq = torch.nn.Sequential(*layers)
    seq.load_state_dict(to_torch_state_dict(model))
    return seq
