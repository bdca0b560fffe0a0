"""Optimizers with ``torch.optim`` semantics, learning-rate schedules and loss scaling.

``optimizers`` (SGD, Adagrad, RMSprop, Adam, AdamW over flat buffers, gradient clipping),
``lr_scheduler`` (StepLR, ExponentialLR, CosineAnnealingLR, LinearLR, SequentialLR, OneCycleLR,
ReduceLROnPlateau) and
``grad_scaler`` (dynamic loss scaling for ``precision="fp16"``); every name is importable from
``xpnet.optim`` itself, as from ``torch.optim``.
"""

from .grad_scaler import GradScaler
from .lr_scheduler import (
    CosineAnnealingLR,
    ExponentialLR,
    LinearLR,
    LRScheduler,
    OneCycleLR,
    ReduceLROnPlateau,
    SequentialLR,
    StepLR,
)
from .optimizers import OPTIMIZERS, SGD, Adagrad, Adam, AdamW, Optimizer, RMSprop, clip_grad_norm_, get_optimizer

__all__ = [
    "OPTIMIZERS",
    "SGD",
    "Adagrad",
    "Adam",
    "AdamW",
    "CosineAnnealingLR",
    "ExponentialLR",
    "GradScaler",
    "LRScheduler",
    "LinearLR",
    "OneCycleLR",
    "Optimizer",
    "RMSprop",
    "ReduceLROnPlateau",
    "SequentialLR",
    "StepLR",
    "clip_grad_norm_",
    "get_optimizer",
]
