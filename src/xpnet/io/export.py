"""Models into the wider ecosystem: a ``torch.nn.Sequential`` equal to an xpnet MLP."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .._typing import HostArray
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


def state_dict_from_weights(weights: list[tuple[HostArray, HostArray]]) -> dict[str, Any]:
    """A ``torch.nn.Sequential`` state dict from host ``[(W (in, out), b), ...]`` (e.g. the folded
    weights of :meth:`xpnet.predict.Predictor.folded_weights`, which take raw inputs)."""
    import torch

    state = {}
    for i, (W, b) in enumerate(weights):
        state[f"{2 * i}.weight"] = torch.from_numpy(np.ascontiguousarray(np.asarray(W).T))
        state[f"{2 * i}.bias"] = torch.from_numpy(np.ascontiguousarray(b))
    return state


def load_torch(path: str | os.PathLike[str], activation: str = "relu") -> Any:
    """The ``torch.nn.Sequential`` an ``xpnet export --out FILE.pt`` wrote, ready to call on RAW features.

    The file is a plain state dict (``torch.load`` it with ``weights_only=True`` anywhere); the layer
    sizes are read from its shapes, the activation (printed by ``xpnet export``) is given here::

        from xpnet.io.export import load_torch
        net = load_torch("model.pt", activation="relu")
        logits = net(torch.as_tensor(X_raw, dtype=torch.float32))
    """
    import torch

    from .. import MLP

    state = torch.load(path, weights_only=True)
    n_layers = len([k for k in state if k.endswith(".weight")])
    sizes = [int(state["0.weight"].shape[1])] + [int(state[f"{2 * i}.weight"].shape[0]) for i in range(n_layers)]
    dtype = str(state["0.weight"].dtype).removeprefix("torch.")
    seq = to_torch(MLP(sizes, activation=activation, dtype=dtype))
    seq.load_state_dict(state)
    return seq.eval()
