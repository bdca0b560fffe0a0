"""Learning-rate schedules with ``torch.optim.lr_scheduler`` semantics (closed forms).

A scheduler wraps an optimizer, remembers its initial ``lr`` and sets ``optimizer.lr``
each time :meth:`LRScheduler.step` is called.

When ``Trainer.fit`` steps it is the scheduler's ``interval`` attribute (a constructor keyword of
every scheduler): ``"epoch"`` (the default, as ``torch`` examples step per epoch) steps it after
each epoch, ``"step"`` after each optimizer update (``OneCycleLR``'s default; pass
``interval="step"`` to ``LinearLR`` / ``CosineAnnealingLR`` for a warm-up or a cosine counted in
steps -- ``total_iters`` and ``T_max`` then count steps).  :class:`ReduceLROnPlateau` is stepped
with a metric at each epoch end (its ``monitor``: ``val_loss`` if reported, else ``loss``).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from ..validation import check_bool, check_choice, check_int, check_real, check_str, invalid

if TYPE_CHECKING:
    from .optimizers import Optimizer


INTERVALS = ("epoch", "step")


def _check_optimizer(optimizer: object) -> Optimizer:
    from .optimizers import Optimizer  # deferred: kept lazy as before

    if not isinstance(optimizer, Optimizer):
        raise invalid("optimizer", optimizer, "pass an xpnet.optim optimizer, e.g. xpnet.optim.SGD(lr=0.1)")
    return optimizer


class LRScheduler:
    """Base class.  Subclasses check their own arguments BEFORE calling this ``__init__``, which
    is the first place the optimizer is modified, so a refused argument leaves it untouched.

    ``interval``: ``"epoch"`` or ``"step"``, how often ``Trainer.fit`` calls :meth:`step`."""

    interval: str = "epoch"

    def __init__(self, optimizer: Optimizer, interval: str = "epoch") -> None:
        self.interval = check_choice("interval", interval, INTERVALS)
        self.optimizer = _check_optimizer(optimizer)
        # The first scheduler records the optimizer's initial lr; later ones (chained in a
        # SequentialLR) start from it too, not from the lr the previous one has set.
        if not hasattr(optimizer, "initial_lr"):
            optimizer.initial_lr = optimizer.lr
        self.base_lr = optimizer.initial_lr
        self.last_epoch = 0
        self._apply(0)

    def factor(self, t: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def lr_at(self, t: int) -> float:
        return self.base_lr * self.factor(t)

    def step(self) -> None:
        self.last_epoch += 1
        self._apply(self.last_epoch)

    def _apply(self, t: int) -> None:
        """Set the optimizer's hyperparameters for step/epoch ``t``."""
        self.optimizer.lr = self.lr_at(t)

    def get_last_lr(self) -> list[float]:
        return [self.optimizer.lr]

    def state_dict(self) -> dict[str, Any]:
        return {"base_lr": self.base_lr, "last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base_lr, self.last_epoch = float(state["base_lr"]), int(state["last_epoch"])
        self._apply(self.last_epoch)


def _gamma(gamma: Any) -> float:
    # torch accepts any gamma, but gamma <= 0 flips or zeroes the lr and NaN poisons every step
    return check_real("gamma", gamma, low=0, low_open=True)


class StepLR(LRScheduler):
    """Multiply the lr by ``gamma`` every ``step_size`` epochs."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, *, interval: str = "epoch") -> None:
        self.step_size, self.gamma = check_int("step_size", step_size, low=1), _gamma(gamma)
        super().__init__(optimizer, interval)

    def factor(self, t: int) -> float:
        return self.gamma ** (t // self.step_size)


class ExponentialLR(LRScheduler):
    """Multiply the lr by ``gamma`` every epoch."""

    def __init__(self, optimizer: Optimizer, gamma: float, *, interval: str = "epoch") -> None:
        self.gamma = _gamma(gamma)
        super().__init__(optimizer, interval)

    def factor(self, t: int) -> float:
        return self.gamma**t


class CosineAnnealingLR(LRScheduler):
    """Cosine from the initial lr down to ``eta_min`` over ``T_max`` epochs."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, *, interval: str = "epoch") -> None:
        # eta_min above the initial lr is allowed, as in torch (the schedule then rises)
        self.T_max, self.eta_min = check_int("T_max", T_max, low=1), check_real("eta_min", eta_min, low=0)
        super().__init__(optimizer, interval)

    def lr_at(self, t: int) -> float:
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2


class LinearLR(LRScheduler):
    """Linear ramp of the lr factor from ``start_factor`` to ``end_factor`` (a warm-up)."""

    def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3, end_factor: float = 1.0,
                 total_iters: int = 5, *, interval: str = "epoch") -> None:
        # ranges as in torch.optim.lr_scheduler.LinearLR
        self.start_factor = check_real("start_factor", start_factor, low=0, high=1, low_open=True)
        self.end_factor = check_real("end_factor", end_factor, low=0, high=1)
        self.total_iters = check_int("total_iters", total_iters, low=1)
        super().__init__(optimizer, interval)

    def factor(self, t: int) -> float:
        return self.start_factor + (self.end_factor - self.start_factor) * min(t, self.total_iters) / self.total_iters


class SequentialLR(LRScheduler):
    """Run ``schedulers`` one after another, switching at the epochs in ``milestones``."""

    def __init__(self, optimizer: Optimizer, schedulers: Sequence[LRScheduler], milestones: Sequence[int], *,
                 interval: str = "epoch") -> None:
        self.schedulers = _check_schedulers(_check_optimizer(optimizer), schedulers)
        self.milestones = _check_milestones(milestones, len(self.schedulers))
        super().__init__(optimizer, interval)

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
        if not isinstance(s, LRScheduler) or isinstance(s, (ReduceLROnPlateau, OneCycleLR)):
            raise invalid(f"schedulers[{i}]", s, "pass a closed-form xpnet lr scheduler such as StepLR(optimizer, 10) "
                          "(not ReduceLROnPlateau or OneCycleLR)")
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


class ReduceLROnPlateau(LRScheduler):
    """``torch.optim.lr_scheduler.ReduceLROnPlateau``: multiply the lr by ``factor`` once ``monitor``
    has not improved (by ``threshold``, relative or absolute) for more than ``patience`` epochs; wait
    ``cooldown`` epochs after a reduction; never below ``min_lr``; changes smaller than ``eps`` are
    skipped.  ``step(metric)`` takes the monitored value: ``Trainer.fit`` passes ``logs[monitor]`` at
    each epoch end, ``monitor`` defaulting (None) to ``"val_loss"`` when validation data is given,
    else ``"loss"``.  Always per epoch; it does not set the lr when built."""

    def __init__(self, optimizer: Optimizer, mode: str = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0, min_lr: float = 0.0,
                 eps: float = 1e-8, *, monitor: str | None = None) -> None:
        self.mode = check_choice("mode", mode, ("min", "max"))
        self.lr_factor = check_real("factor", factor, low=0, high=1, low_open=True, high_open=True)
        self.patience = check_int("patience", patience, low=0)
        self.threshold = check_real("threshold", threshold, low=0)
        self.threshold_mode = check_choice("threshold_mode", threshold_mode, ("rel", "abs"))
        self.cooldown = check_int("cooldown", cooldown, low=0)
        self.min_lr, self.eps = check_real("min_lr", min_lr, low=0), check_real("eps", eps, low=0)
        self.monitor = None if monitor is None else check_str("monitor", monitor)
        self.interval = "epoch"
        self.optimizer = _check_optimizer(optimizer)
        self.base_lr = optimizer.lr
        self.last_epoch = 0
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = self.cooldown_counter = 0

    def is_better(self, a: float, best: float) -> bool:
        if self.mode == "min":
            return a < (best * (1.0 - self.threshold) if self.threshold_mode == "rel" else best - self.threshold)
        return a > (best * (self.threshold + 1.0) if self.threshold_mode == "rel" else best + self.threshold)

    def lr_at(self, t: int) -> float:
        return self.optimizer.lr  # not a closed form: the lr depends on the metrics seen

    def step(self, metrics: float | None = None) -> None:
        if metrics is None:
            raise TypeError("ReduceLROnPlateau.step needs the monitored value: step(val_loss).")
        current = float(metrics)
        self.last_epoch += 1
        if self.is_better(current, self.best):
            self.best, self.num_bad_epochs = current, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            old = self.optimizer.lr
            new = max(old * self.lr_factor, self.min_lr)
            if old - new > self.eps:
                self.optimizer.lr = new
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0

    def state_dict(self) -> dict[str, Any]:
        return {"last_epoch": self.last_epoch, "best": self.best, "num_bad_epochs": self.num_bad_epochs,
                "cooldown_counter": self.cooldown_counter, "lr": self.optimizer.lr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_epoch, self.best = int(state["last_epoch"]), float(state["best"])
        self.num_bad_epochs, self.cooldown_counter = int(state["num_bad_epochs"]), int(state["cooldown_counter"])
        self.optimizer.lr = float(state["lr"])


def _anneal(strategy: str, start: float, end: float, pct: float) -> float:
    if strategy == "cos":
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
    return (end - start) * pct + start


class OneCycleLR(LRScheduler):
    """``torch.optim.lr_scheduler.OneCycleLR`` (the 1cycle policy), stepped after every optimizer
    update (``interval="step"``): the lr rises from ``max_lr / div_factor`` to ``max_lr`` over
    ``pct_start`` of ``total_steps`` (or ``epochs * steps_per_epoch``), then anneals (``"cos"`` or
    ``"linear"``) to ``initial_lr / final_div_factor``; ``three_phase`` comes back to the initial lr
    before the final annealing.  ``cycle_momentum`` cycles SGD/RMSprop ``momentum`` or Adam's
    ``beta1`` inversely between ``max_momentum`` and ``base_momentum`` (the optimizer needs
    momentum > 0, or beta1).  Stepping past ``total_steps`` raises ``ValueError``, as in torch; the lr
    after the last step (``total_steps``, used by no update) is the final lr, where torch extrapolates."""

    def __init__(self, optimizer: Optimizer, max_lr: float, total_steps: int | None = None,
                 epochs: int | None = None, steps_per_epoch: int | None = None, pct_start: float = 0.3,
                 anneal_strategy: str = "cos", cycle_momentum: bool = True, base_momentum: float = 0.85,
                 max_momentum: float = 0.95, div_factor: float = 25.0, final_div_factor: float = 1e4,
                 three_phase: bool = False, *, interval: str = "step") -> None:
        self.max_lr = check_real("max_lr", max_lr, low=0, low_open=True)
        self.total_steps = _total_steps(total_steps, epochs, steps_per_epoch)
        self.pct_start = check_real("pct_start", pct_start, low=0, high=1)
        self.anneal_strategy = check_choice("anneal_strategy", anneal_strategy, ("cos", "linear"))
        self.cycle_momentum = check_bool("cycle_momentum", cycle_momentum)
        self.base_momentum = check_real("base_momentum", base_momentum, low=0, high=1)
        self.max_momentum = check_real("max_momentum", max_momentum, low=0, high=1)
        self.div_factor = check_real("div_factor", div_factor, low=0, low_open=True)
        self.final_div_factor = check_real("final_div_factor", final_div_factor, low=0, low_open=True)
        self.three_phase = check_bool("three_phase", three_phase)
        self.momentum_key = _momentum_key(_check_optimizer(optimizer)) if self.cycle_momentum else None
        self.phases = self._phases()
        super().__init__(optimizer, interval)

    def _phases(self) -> list[tuple[float, float, float, float, float]]:
        """``(end_step, start_lr, end_lr, start_momentum, end_momentum)`` per phase, as torch."""
        lo, hi, n, p = self.max_lr / self.div_factor, self.max_lr, self.total_steps, self.pct_start
        final, mb, mm = lo / self.final_div_factor, self.base_momentum, self.max_momentum
        if self.three_phase:
            return [(p * n - 1, lo, hi, mm, mb), (2 * p * n - 2, hi, lo, mb, mm), (n - 1, lo, final, mm, mm)]
        return [(p * n - 1, lo, hi, mm, mb), (n - 1, hi, final, mb, mm)]

    def _at(self, t: int) -> tuple[float, float]:
        if t > self.total_steps:
            raise ValueError(f"OneCycleLR stepped {t} times, past total_steps={self.total_steps}: build it with "
                             "the steps fit will take (epochs * steps_per_epoch).")
        start = 0.0
        for i, (end, lr0, lr1, m0, m1) in enumerate(self.phases):
            if t <= end or i == len(self.phases) - 1:
                # t = total_steps (after the last update; its lr is never used) stays at the final lr:
                # torch extrapolates there, to a negative lr with anneal_strategy="linear"
                pct = min((t - start) / (end - start), 1.0)
                return (_anneal(self.anneal_strategy, lr0, lr1, pct), _anneal(self.anneal_strategy, m0, m1, pct))
            start = end
        raise AssertionError("unreachable: the last phase always matches")  # pragma: no cover

    def lr_at(self, t: int) -> float:
        return self._at(t)[0]

    def _apply(self, t: int) -> None:
        lr, momentum = self._at(t)
        self.optimizer.lr = lr
        if self.momentum_key is not None:
            self.optimizer.hparams[self.momentum_key] = momentum


def _total_steps(total_steps: Any, epochs: Any, steps_per_epoch: Any) -> int:
    if total_steps is not None:
        return check_int("total_steps", total_steps, low=1)
    if epochs is None or steps_per_epoch is None:
        raise ValueError("OneCycleLR needs total_steps, or both epochs and steps_per_epoch.")
    return check_int("epochs", epochs, low=1) * check_int("steps_per_epoch", steps_per_epoch, low=1)


def cycled_momentum(optimizer: Optimizer) -> str | None:
    """The hyperparameter OneCycleLR can cycle: ``momentum`` (if > 0: its buffer exists), ``beta1``, or None."""
    if optimizer.hparams.get("momentum", 0) > 0:
        return "momentum"
    return "beta1" if "beta1" in optimizer.hparams else None


def _momentum_key(optimizer: Optimizer) -> str:
    key = cycled_momentum(optimizer)
    if key is not None:
        return key
    raise ValueError(f"cycle_momentum=True needs an optimizer with momentum > 0 or betas (e.g. SGD(momentum=0.9) "
                     f"or Adam); {type(optimizer).__name__} has none: pass cycle_momentum=False.")
