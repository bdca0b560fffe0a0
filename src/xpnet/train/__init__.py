"""Training: the :class:`~xpnet.train.trainer.Trainer`, its callbacks and precision strategies."""

from .callbacks import Callback, EarlyStopping, EpochLine, History, ProgressBar, TerminateOnNaN
from .loggers import CSVLogger, ModelCheckpoint, TensorBoard
from .precision import BF16Step, FP32Step, MixedPrecisionStep
from .trainer import Trainer

__all__ = ["BF16Step", "CSVLogger", "Callback", "EarlyStopping", "EpochLine", "FP32Step", "History",
           "MixedPrecisionStep", "ModelCheckpoint", "ProgressBar", "TensorBoard", "TerminateOnNaN", "Trainer"]
