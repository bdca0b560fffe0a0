"""Learning-rate schedules with ``torch.optim.lr_scheduler`` semantics (closed forms).

A scheduler wraps an optimizer, remembers its initial ``lr`` and sets ``optimizer.lr``
each time :meth:`LRScheduler.step` is called (``Trainer.fit`` calls it once per epoch).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from ..validation import check_int, check_real, invalid

if TYPE_CHECKING:
    from .optimizers import Optimizer


def _check_optimizer(optimizer: object) -> Optimizer:
    from .optimizers import Optimizer  # deferred: kept lazy as before

    if not isinstance(optimizer, Optimizer):
        raise invalid("optimizer", optimizer, "pass an xpnet.optim optimizer, e.g. xpnet.optim.SGD(lr=0.1)")
    return optimizer


class LRScheduler:
    """Base class.  Subclasses check their own arguments BEFORE calling this ``__init__``, which
    is the first place the optimizer is modified, so a refused argument leaves it untouched."""

    def __init__(self, optimizer: Optimizer) -> None:
        self.optimizer = _check_optimizer(optimizer)
        # The first scheduler records the optimizer's initial lr; later ones (chained in a
        # SequentialLR) start from it too, not from the lr the previous one has set.
        if not hasattr(optimizer, "initial_lr"):
            optimizer.initial_lr = optimizer.lr
        self.base_lr = optimizer.initial_lr
        self.last_epoch = 0
        optimizer.lr = self.lr_at(0)

    def factor(self, t: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def lr_at(self, t: int) -> float:
        return self.base_lr * self.factor(t)

    def step(self) -> None:
        self.last_epoch += 1
        self.optimizer.lr = self.lr_at(self.last_epoch)

    def get_last_lr(self) -> list[float]:
        return [self.optimizer.lr]

    def state_dict(self) -> dict[str, Any]:
        return {"base_lr": self.base_lr, "last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base_lr, self.last_epoch = float(state["base_lr"]), int(state["last_epoch"])
        self.optimizer.lr = self.lr_at(self.last_epoch)


def _gamma(gamma: Any) -> float:
    # torch accepts any gamma, but gamma <= 0 flips or zeroes the lr and NaN poisons every step
    return check_real("gamma", gamma, low=0, low_open=True)


class StepLR(LRScheduler):
    """Multiply the lr by ``gamma`` every ``step_size`` epochs."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        self.step_size, self.gamma = check_int("step_size", step_size, low=1), _gamma(gamma)
        super().__init__(optimizer)

    def factor(self, t: int) -> float:
        return self.gamma ** (t // self.step_size)


class ExponentialLR(LRScheduler):
    """Multiply the lr by ``gamma`` every epoch."""

    def __init__(self, optimizer: Optimizer, gamma: float) -> None:
        self.gamma = _gamma(gamma)
        super().__init__(optimizer)

    def factor(self, t: int) -> float:
        return self.gamma**t


class CosineAnnealingLR(LRScheduler):
    """Cosine from the initial lr down to ``eta_min`` over ``T_max`` epochs."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:
        # eta_min above the initial lr is allowed, as in torch (the schedule then rises)
        self.T_max, self.eta_min = check_int("T_max", T_max, low=1), check_real("eta_min", eta_min, low=0)
        super().__init__(optimizer)

    def lr_at(self, t: int) -> float:
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2


class LinearLR(LRScheduler):
    """Linear ramp of the lr factor from ``start_factor`` to ``end_factor`` (a warm-up)."""

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3, end_factor: float = 1.0,
                 total_iters: int = 5) -> None:
        # ranges as in torch.optim.lr_scheduler.LinearLR
        self.start_factor = check_real("start_factor", start_factor, low=0, high=1, low_open=True)
        self.end_factor = check_real("end_factor", end_factor, low=0, high=1)
        self.total_iters = check_int("total_iters", total_iters, low=1)
        super().__init__(optimizer)

    def factor(self, t: int) -> float:
        return self.start_factor + (self.end_factor - self.start_factor) * min(t, self.total_iters) / self.total_iters


class SequentialLR(LRScheduler):
    """Run ``schedulers`` one after another, switching at the epochs in ``milestones``."""

    def __init__(self, optimizer: Optimizer, schedulers: Sequence[LRScheduler], milestones: Sequence[int]) -> None:
        self.schedulers = _check_schedulers(_check_optimizer(optimizer), schedulers)
        self.milestones = _check_milestones(milestones, len(self.schedulers))
        super().__init__(optimizer)

    def lr_at(self, t: int) -> float:
        i = bisect.bisect_right(self.milestones, t)
        start = self.milestones[i - 1] if i else 0
        return self.schedulers[i].lr_at(t - start)


def _check_schedulers(optimizer: Optimizer, schedulers: Any) -> list[LRScheduler]:
    """A non-empty list of schedulers, all built on ``optimizer``."""
    if isinstance(schedulers, (str, LRScheduler)) or not hasattr(schedulers, "__iter__"):
        raise invalid("schedulers", schedulers,
                      "pass a list of schedulers, e.g. [LinearLR(opt), ExponentialLR(opt, 0.9)]")
    schedulers = list(schedulers)
    if not schedulers:
        raise invalid("schedulers", schedulers, "pass at least one scheduler")
    for i, s in enumerate(schedulers):
        if not isinstance(s, LRScheduler):
            raise invalid(f"schedulers[{i}]", s, "pass an xpnet lr scheduler such as StepLR(optimizer, 10)")
        if s.optimizer is not optimizer:
            raise ValueError(f"schedulers[{i}] was built on a different optimizer: build every scheduler on "
                             "the one given to SequentialLR.")
    return cast("list[LRScheduler]", schedulers)  # checked above: a list of schedulers


def _check_milestones(milestones: Any, n_schedulers: int) -> list[int]:
    """Epochs > 0, strictly increasing, one fewer than the schedulers."""
    rule = f"use {n_schedulers - 1} strictly increasing integers > 0 (one fewer than schedulers)"
    if isinstance(milestones, str) or not hasattr(milestones, "__iter__"):
        raise invalid("milestones", milestones, rule)
    values = [check_int(f"milestones[{i}]", m, low=1) for i, m in enumerate(milestones)]
    if len(values) != n_schedulers - 1 or any(a >= b for a, b in zip(values, values[1:])):
        raise invalid("milestones", milestones, rule)
    return values
