"""Callbacks for ``Trainer.fit``: early stopping, stop on NaN/inf loss, progress display.

Hooks (all optional): ``on_train_begin(trainer)``, ``on_epoch_begin(trainer, epoch)``,
``on_step_loss(trainer, loss) -> bool`` (called after the backward pass and BEFORE the update;
returning ``False`` skips the update and stops training), ``on_step_end(trainer)`` (after the
update, with ``trainer.epoch_progress()`` counting the step), ``on_batch_end(trainer, step, logs)``
(after ``on_step_end``; ``step`` is 0-based within the epoch, ``logs`` holds the batch's ``loss``
and the ``lr`` as floats -- reading the loss forces a device synchronisation on GPUs every step, so
this hook is called only for callbacks that override it), ``on_epoch_end(trainer, epoch, logs)``
and ``on_train_end(trainer)``.  Other callbacks: ``xpnet.train.loggers`` (CSVLogger,
ModelCheckpoint, TensorBoard).
A callback sets ``trainer.stop_training = True`` to stop after the current epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .._typing import Array
from .metrics import maximize

if TYPE_CHECKING:
    from .trainer import Trainer


class Callback:
    def on_train_begin(self, trainer: Trainer) -> None: ...

    def on_step_loss(self, trainer: Trainer, loss: Array) -> bool:
        return True

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None: ...

    def on_step_end(self, trainer: Trainer) -> None: ...

    def on_batch_end(self, trainer: Trainer, step: int, logs: dict[str, float]) -> None: ...

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None: ...

    def on_train_end(self, trainer: Trainer) -> None: ...


class TerminateOnNaN(Callback):
    """Stop training when the loss becomes NaN or inf, and fall back to weights that evaluate finite.

    Detection: on host backends every step's loss is checked before the update, for free; on
    the GPU reading a loss forces a host synchronisation, so losses are checked every
    ``check_every`` steps (default 50) and at each epoch end.

    Recovery: the weights and optimizer state are snapshotted (on the device) when training
    begins and at the end of the epoch with the lowest training loss so far (all its metrics
    finite).  The weights at the moment of divergence are not kept: they produced the NaN
    (often finite but huge).  ``fit`` evaluates both snapshots on the training data, restores
    the one with the lower finite loss, says which in ``stop_reason`` and sets
    ``History.diverged``.
    """

    def __init__(self, check_every: int | None = None) -> None:
        from ..validation import check_int

        self.check_every = check_int("check_every", check_every, low=1, allow_none=True)

    def on_train_begin(self, trainer: Trainer) -> None:
        self.every = self.check_every or (50 if trainer.model.backend.kind == "cupy" else 1)
        self.pending: list[Array] = []
        self.diverged: tuple[float, int, int] | None = None  # (loss, step, epoch) where it happened
        self.initial = _Snapshot.take(trainer, epochs_done=trainer.fit_plan.get("initial_epoch", 0))
        self.best: _Snapshot | None = None  # after the epoch with the lowest finite training loss
        self.restored_epochs: int | None = None

    def on_step_loss(self, trainer: Trainer, loss: Array) -> bool:
        if self.every == 1:
            return self._ok_or_stop(trainer, float(loss))
        self.pending.append(loss)
        if len(self.pending) < self.every:
            return True
        xp = trainer.model.backend.xp
        total = float(xp.sum(xp.stack(self.pending)))
        self.pending = []
        return self._ok_or_stop(trainer, total)

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        self.pending = []  # the epoch's mean loss covers every step not yet checked
        if all(math.isfinite(v) for k, v in logs.items() if k in ("loss", "val_loss")):  # an AUC may be NaN
            if self.best is None or logs["loss"] < self.best.loss:
                self.best = _Snapshot.take(trainer, epochs_done=epoch + 1, loss=logs["loss"])
        else:
            self._ok_or_stop(trainer, logs["loss"] if not math.isfinite(logs["loss"]) else math.nan)

    def _ok_or_stop(self, trainer: Trainer, value: float) -> bool:
        if math.isfinite(value):
            return True
        trainer.stop_training = True
        self.diverged = (value, trainer.step_count + 1, trainer.epoch)
        return False

    def recover(self, trainer: Trainer, training_loss: Callable[[], float]) -> str:
        """Restore the snapshot whose weights give the lowest finite ``training_loss()``; the
        message says what happened and what was restored (``fit`` sets it as ``stop_reason``)."""
        assert self.diverged is not None, "recover() is called only after on_batch_end reported a divergence"
        value, step, epoch = self.diverged
        what = f"training diverged: the loss became {value} at step {step} (epoch {epoch + 1})"
        advice = ("Lower the learning rate, clip gradients (clip_grad_norm=...) or check the data "
                  "for extreme values.")
        scored = []
        for snap in [s for s in (self.best, self.initial) if s is not None]:
            snap.restore(trainer)
            scored.append((training_loss(), snap))
        finite = [(loss, snap) for loss, snap in scored if math.isfinite(loss)]
        if not finite:
            self.restored_epochs = None  # the initial weights stay restored (restored last)
            return (f"{what}; even the weights from the start of training give a non-finite loss on "
                    f"the training data; they were restored. {advice}")
        loss, snap = min(finite, key=lambda pair: pair[0])
        snap.restore(trainer)
        self.restored_epochs = snap.epochs_done
        where = f"the end of epoch {snap.epochs_done}" if snap.epochs_done else "the start of training"
        return f"{what}; restored the weights from {where} (training loss {loss:.6g}). {advice}"


class _Snapshot:
    """Device-side copy of the weights, optimizer state and loss scale after ``epochs_done`` epochs."""

    def __init__(self, params: Array, optimizer_state: dict[str, Array], optimizer_steps: int,
                 scaler: dict[str, Any] | None, epochs_done: int, loss: float) -> None:
        self.params, self.optimizer_state, self.optimizer_steps = params, optimizer_state, optimizer_steps
        self.scaler, self.epochs_done, self.loss = scaler, epochs_done, loss

    @classmethod
    def take(cls, trainer: Trainer, epochs_done: int, loss: float = math.inf) -> _Snapshot:
        xp, opt = trainer.model.backend.xp, trainer.optimizer
        state = {k: xp.asarray(v, copy=True) for k, v in opt.state.items()}
        scaler = trainer.scaler.state_dict() if trainer.scaler is not None else None
        return cls(trainer.model.copy_params(), state, opt.step_count, scaler, epochs_done, loss)

    def restore(self, trainer: Trainer) -> None:
        xp, opt = trainer.model.backend.xp, trainer.optimizer
        trainer.model.params[...] = self.params
        opt.state = {k: xp.asarray(v, copy=True) for k, v in self.optimizer_state.items()}
        opt.step_count = self.optimizer_steps
        if self.scaler is not None:
            assert trainer.scaler is not None, "scaler state is snapshotted only from a trainer with a scaler"
            trainer.scaler.load_state_dict(self.scaler)


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs (Keras semantics).

    ``mode="auto"`` maximizes the metrics of ``xpnet.train.metrics`` (scores and ``neg_*``, e.g.
    ``val_f1``, ``val_neg_log_loss``) and names with ``acc`` in them, and minimizes losses."""

    best: float | None
    best_epoch: int
    wait: int
    best_params: Array | None
    _restored: bool

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0, mode: str = "auto",
                 restore_best_weights: bool = False) -> None:
        from ..validation import check_bool, check_choice, check_int, check_real, check_str

        check_choice("mode", mode, ("auto", "min", "max"))
        self.monitor, self.patience = check_str("monitor", monitor), check_int("patience", patience, low=0)
        self.min_delta = abs(check_real("min_delta", min_delta))  # Keras: the sign of min_delta is ignored
        self.maximize = mode == "max" or (mode == "auto" and maximize(monitor))
        self.restore_best_weights = check_bool("restore_best_weights", restore_best_weights)

    def on_train_begin(self, trainer: Trainer) -> None:
        if not getattr(self, "_restored", False):
            self.best, self.best_epoch, self.wait, self.best_params = None, -1, 0, None
        self._restored = False

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        if self.monitor not in logs:
            raise ValueError(f"EarlyStopping monitors {self.monitor!r}, which fit does not report "
                             f"(it reports {', '.join(logs)}): pass validation_data or validation_split, "
                             "or choose a reported monitor.")
        value = logs[self.monitor]
        improved = self.best is None or (value > self.best + self.min_delta if self.maximize
                                         else value < self.best - self.min_delta)
        if improved:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_params = trainer.model.copy_params()
            return
        self.wait += 1
        if self.wait >= self.patience:
            trainer.stop_training = True
            trainer.stop_reason = (f"early stopping: {self.monitor} has not improved for {self.patience} "
                                   f"epochs (best {self.best:.6g} at epoch {self.best_epoch + 1})")

    def on_train_end(self, trainer: Trainer) -> None:
        if self.restore_best_weights and self.best_params is not None:
            trainer.model.params[...] = self.best_params

    def state_dict(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(metadata, arrays)`` for checkpoints: a resumed run stops where this one would."""
        from ..backend import to_host

        arrays = {"best_params": to_host(self.best_params).copy()} if self.best_params is not None else {}
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}, arrays

    def load_state_dict(self, meta: dict[str, Any], arrays: dict[str, Any], trainer: Trainer) -> None:
        self.best, self.best_epoch, self.wait = meta["best"], meta["best_epoch"], meta["wait"]
        self.best_params, self._restored = None, True
        if "best_params" in arrays:
            self.best_params = trainer.model.backend.from_host(arrays["best_params"])


class ProgressBar(Callback):
    """A tqdm bar per epoch with the live loss, and the epoch's metrics when it ends.

    The live loss is read from the device only when the bar is about to redraw (every
    ``refresh_s`` seconds), so on the GPU it costs one synchronisation per redraw, not per step.
    """

    bar: Any  # a tqdm bar, or None between epochs
    last: float

    def __init__(self, refresh_s: float = 0.25, **tqdm_kwargs: Any) -> None:
        from ..validation import check_real

        self.refresh_s = check_real("refresh_s", refresh_s, low=0)
        self.tqdm_kwargs = tqdm_kwargs

    def on_train_begin(self, trainer: Trainer) -> None:
        self.bar, self.last = None, 0.0

    def on_step_loss(self, trainer: Trainer, loss: Array) -> bool:
        import time

        from tqdm.auto import tqdm

        plan = trainer.fit_plan
        if self.bar is None:
            self.bar = tqdm(total=plan["steps_per_epoch"], desc=f"epoch {trainer.epoch + 1}/{plan['epochs']}",
                            initial=trainer.epoch_steps, unit="step", dynamic_ncols=True, **self.tqdm_kwargs)
            self.last = time.perf_counter()
        self.bar.update(1)
        now = time.perf_counter()
        if now - self.last >= self.refresh_s:
            self.bar.set_postfix(loss=f"{float(loss):.4g}", refresh=False)
            self.last = now
        return True

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()}, refresh=True)
            self.bar.close()
            self.bar = None

    def on_train_end(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class EpochLine(Callback):
    """``fit(verbose=2)``: one line per epoch, as Keras --
    ``Epoch 3/10 - 0.41s - loss: 0.2134 - accuracy: 0.9312 - val_loss: ... - lr: 0.001``."""

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None:
        import time

        self.began = time.perf_counter()

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        import time

        seconds = time.perf_counter() - self.began
        metrics = " - ".join(f"{k}: {v:.4g}" for k, v in logs.items())
        print(f"Epoch {epoch + 1}/{trainer.fit_plan['epochs']} - {seconds:.2f}s - {metrics}", flush=True)


class History:
    """Per-epoch metrics from ``fit``: ``history["loss"]``, ``history["val_accuracy"]``, ..."""

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []
        self.stop_reason: str | None = None
        self.diverged = False  # the loss became NaN/inf; see stop_reason for what was restored
        self.interrupted = False  # stopped by Trainer.interrupt (e.g. Ctrl-C) at a step boundary
        # wall seconds of each epoch run into this object (training + validation); not saved in
        # checkpoints, so a resumed run's list starts at the resume; also ``history["epoch_time"]``
        self.epoch_time: list[float] = []

    def append(self, epoch: int, logs: dict[str, float], epoch_time: float | None = None) -> None:
        self.epoch.append(epoch)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(v)
        if epoch_time is not None:
            self.epoch_time.append(epoch_time)

    def __getitem__(self, key: str) -> list[float]:
        return self.epoch_time if key == "epoch_time" else self.history[key]

    def __repr__(self) -> str:
        last = {k: round(v[-1], 6) for k, v in self.history.items() if v and np.isfinite(v[-1])}
        return (f"History(epochs={len(self.epoch)}, last={last}, diverged={self.diverged}, "
                f"stop_reason={self.stop_reason!r})")
