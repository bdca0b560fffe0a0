"""xpnet: hand-written backpropagation for MLPs on any Python array-API backend.

The same code trains on NumPy (CPU) and CuPy (CUDA GPUs), with fused kernels for the
hot elementwise work.  Start with :class:`MLP` and :class:`Trainer`.

Library: ``backend``, ``kernels``, the network pieces (``activations``, ``losses``,
``initializers``, ``model``), ``optim`` (optimizers, schedules, loss scaling), ``train``
(trainer, callbacks, precision strategies), ``io`` (checkpoints, exports), ``data``,
``sklearn``.  Application: ``cli`` (``xpnet train``, runs, configs) and ``bench``.
"""

import os
from types import ModuleType
from typing import TYPE_CHECKING

from . import _moved, io, optim, train
from .activations import ACTIVATIONS
from .backend import to_host
from .kernels import get_kernel_mode, set_kernel_mode, use_kernels
from .losses import LOSSES
from .model import MLP
from .train.callbacks import EarlyStopping, History, ProgressBar, TerminateOnNaN
from .train.trainer import Trainer

if TYPE_CHECKING:
    from .predict import Predictor

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS", "LOSSES", "MLP", "EarlyStopping", "History", "ProgressBar", "TerminateOnNaN", "Trainer",
    "__version__", "get_kernel_mode", "io", "load", "optim", "set_kernel_mode", "to_host", "train", "use_kernels",
]

_moved.install()


def load(source: "str | os.PathLike[str]", checkpoint: "str | None" = None,
         device: "str | None" = None) -> "Predictor":
    """A trained model that predicts on raw data: ``xpnet.load(RUN_DIR).predict(X_raw)``
    (see :func:`xpnet.predict.load`)."""
    from .predict import load as _load

    return _load(source, checkpoint=checkpoint, device=device)


def __getattr__(name: str) -> ModuleType:
    """``xpnet.checkpoint``, ``xpnet.callbacks``, ... : the moved modules under their old names (deprecated)."""
    if f"{__name__}.{name}" in _moved.MOVED:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
