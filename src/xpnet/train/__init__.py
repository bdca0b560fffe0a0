"""Training: the :class:`~xpnet.train.trainer.Trainer`, its callbacks and precision strategies."""

from .callbacks import Callback, EarlyStopping, History, ProgressBar, TerminateOnNaN
from .precision import BF16Step, FP32Step, MixedPrecisionStep
from .trainer import Trainer

__all__ = ["BF16Step", "Callback", "EarlyStopping", "FP32Step", "History", "MixedPrecisionStep", "ProgressBar",
           "TerminateOnNaN", "Trainer"]
