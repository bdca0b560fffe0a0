"""Learning-rate schedules with ``torch.optim.lr_scheduler`` semantics (closed forms).

A scheduler wraps an optimizer, remembers its initial ``lr`` and sets ``optimizer.lr``
each time :meth:`LRScheduler.step` is called (``Trainer.fit`` calls it once per epoch).
"""

from __future__ import annotations

import bisect
import math


class LRScheduler:
    def __init__(self, optimizer):
        self.optimizer = optimizer
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

    def state_dict(self) -> dict:
        return {"base_lr": self.base_lr, "last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.base_lr, self.last_epoch = float(state["base_lr"]), int(state["last_epoch"])
        self.optimizer.lr = self.lr_at(self.last_epoch)


def _positive_int(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name}={value!r} is invalid: use a positive integer.")
    return value


class StepLR(LRScheduler):
    """Multiply the lr by ``gamma`` every ``step_size`` epochs."""

    def __init__(self, optimizer, step_size: int, gamma: float = 0.1):
        self.step_size, self.gamma = _positive_int("step_size", step_size), float(gamma)
        super().__init__(optimizer)

    def factor(self, t):
        return self.gamma ** (t // self.step_size)


class ExponentialLR(LRScheduler):
    """Multiply the lr by ``gamma`` every epoch."""

    def __init__(self, optimizer, gamma: float):
        self.gamma = float(gamma)
        super().__init__(optimizer)

    def factor(self, t):
        return self.gamma**t


class CosineAnnealingLR(LRScheduler):
    """Cosine from the initial lr down to ``eta_min`` over ``T_max`` epochs."""

    def __init__(self, optimizer, T_max: int, eta_min: float = 0.0):  # noqa: N803 (torch's name)
        self.T_max, self.eta_min = _positive_int("T_max", T_max), float(eta_min)
        super().__init__(optimizer)

    def lr_at(self, t):
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2


class LinearLR(LRScheduler):
    """Linear ramp of the lr factor from ``start_factor`` to ``end_factor`` (a warm-up)."""

    def __init__(self, optimizer, start_factor: float = 1.0 / 3, end_factor: float = 1.0, total_iters: int = 5):
        if not 0 < start_factor <= 1 or not 0 <= end_factor <= 1:
            raise ValueError("start_factor must lie in (0, 1] and end_factor in [0, 1] (as in torch).")
        self.start_factor, self.end_factor = float(start_factor), float(end_factor)
        self.total_iters = _positive_int("total_iters", total_iters)
        super().__init__(optimizer)

    def factor(self, t):
        return self.start_factor + (self.end_factor - self.start_factor) * min(t, self.total_iters) / self.total_iters


class SequentialLR(LRScheduler):
    """Run ``schedulers`` one after another, switching at the epochs in ``milestones``."""

    def __init__(self, optimizer, schedulers, milestones):
        if len(milestones) != len(schedulers) - 1 or list(milestones) != sorted(milestones):
            raise ValueError("milestones must be sorted and one shorter than schedulers.")
        self.schedulers, self.milestones = list(schedulers), list(milestones)
        super().__init__(optimizer)

    def lr_at(self, t):
        i = bisect.bisect_right(self.milestones, t)
        start = self.milestones[i - 1] if i else 0
        return self.schedulers[i].lr_at(t - start)
