"""xpnet: hand-written backpropagation for MLPs on any Python array-API backend.

The same code trains on NumPy (CPU) and CuPy (CUDA GPUs), with fused kernels for the
hot elementwise work.  Start with :class:`MLP` and :class:`Trainer`.
"""

from . import callbacks, checkpoint, optim, precision
from .activations import ACTIVATIONS
from .backend import to_host
from .callbacks import EarlyStopping, History, ProgressBar, TerminateOnNaN
from .kernels import get_kernel_mode, set_kernel_mode, use_kernels
from .losses import LOSSES
from .model import MLP
from .trainer import Trainer

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS", "LOSSES", "MLP", "Trainer", "EarlyStopping", "TerminateOnNaN", "ProgressBar", "History",
    "callbacks", "checkpoint", "optim", "precision", "to_host", "use_kernels", "set_kernel_mode", "get_kernel_mode",
    "__version__",
]
