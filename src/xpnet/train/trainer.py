"""The training loop: one mini-batch step, ``fit`` over epochs, evaluation, prediction.

Data flows one way: batches -> model forward -> loss and its gradient -> model backward
(into the flat gradient buffer) -> optional clipping -> optimizer (flat buffers, in place).
Nothing in a step reads a value back to the host: the loss is returned as a 0-d array on
the model's device, and ``fit`` reads losses only at epoch ends (and where a callback asks).
"""

from __future__ import annotations

import contextlib
import itertools
import numbers
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .._typing import Array
from ..losses import get_loss
from ..optim import get_optimizer
from ..validation import (
    DeviceChecks,
    check_bool,
    check_features,
    check_positive_int,
    check_real,
    check_same_library,
    check_targets,
)
from . import metrics as metrics_mod
from .callbacks import Callback, EpochLine, History, ProgressBar, TerminateOnNaN
from .precision import FP32Step, check_precision, step_for
from .weights import row_weights

if TYPE_CHECKING:
    from ..distributed.comm import Communicator
    from ..distributed.sync import DistributedStep
    from ..model import MLP
    from ..optim.grad_scaler import GradScaler
    from ..optim.lr_scheduler import LRScheduler
    from ..optim.optimizers import Optimizer

IN_EPOCH = "in_epoch."  # state_dict keys of a mid-epoch checkpoint's metric state
METRICS = tuple(metrics_mod.REGISTRY)  # scikit-learn's scorer names; see xpnet.train.metrics


def _batches(n: int, batch_size: int, first: int = 0) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of each mini-batch from sample ``first``; stops never run past ``n`` (the array
    API forbids it)."""
    for start in range(first, n, batch_size):
        yield start, min(start + batch_size, n)


def _agreed(comm: Communicator | None) -> contextlib.AbstractContextManager[None]:
    """``agree(comm)`` when training distributed (an error on any rank raised on all), else nothing."""
    if comm is None:
        return contextlib.nullcontext()
    from ..distributed.agree import agree

    return agree(comm)


def _check_fit_options(epochs: int, shuffle: Any, validation_data: Any, validation_split: Any, callbacks: Any,
                       initial_epoch: Any, history: Any, data_on_device: Any) -> None:
    """``fit``'s options, checked before anything is moved or trained."""
    check_real("validation_split", validation_split, low=0, high=1, high_open=True)
    if validation_split and validation_data is not None:
        raise ValueError("pass validation_data or validation_split, not both.")
    check_bool("shuffle", shuffle)
    if data_on_device is not None:
        check_bool("data_on_device", data_on_device)
    if not isinstance(initial_epoch, numbers.Integral) or not 0 <= int(initial_epoch) <= epochs:
        raise ValueError(f"initial_epoch={initial_epoch!r} is invalid: use an integer in [0, epochs].")
    if history is not None and not isinstance(history, History):
        raise TypeError(f"history={history!r} is invalid: pass the History of an earlier fit, or None.")
    if isinstance(callbacks, Callback) or not isinstance(callbacks, (list, tuple)):
        raise TypeError(f"callbacks={callbacks!r} is invalid: pass a list of callbacks, e.g. callbacks=[cb].")
    bad = [c for c in callbacks if not isinstance(c, Callback)]
    if bad:
        raise TypeError(f"callbacks contains {bad[0]!r}, which is not an xpnet.train.Callback: subclass "
                        "Callback and override the hooks you need.")


def _check_verbose(verbose: Any) -> None:
    if not isinstance(verbose, (bool, numbers.Integral)) or verbose not in (0, 1, 2):
        raise ValueError(f"verbose={verbose!r} is invalid: use 0 (silent), 1 (a progress bar) or 2 (a line "
                         "per epoch).")


class Trainer:
    """Trains an :class:`~xpnet.MLP` with a loss and an optimizer.

    Parameters
    ----------
    model : MLP
    loss : ``"cross_entropy"`` (softmax + NLL; integer labels or one-hot), ``"mse"`` or ``"bce"``
        (binary cross-entropy with logits).
    optimizer : an ``xpnet.optim`` optimizer or its name; default ``Adam(lr=1e-3)``.
    metrics : names reported besides the loss (and as ``val_<name>`` on validation data), named as
        scikit-learn's scorers: ``accuracy``, ``top_k_accuracy``, ``f1`` / ``f1_macro`` / ``f1_micro``,
        ``precision``, ``recall``, ``roc_auc``, ``roc_auc_ovr``, ``neg_log_loss``, ``r2``,
        ``neg_mean_absolute_error``, ``neg_root_mean_squared_error``, ... (``xpnet.train.metrics``);
        default ``("accuracy",)`` for classification.
    scheduler : an ``xpnet.optim`` lr scheduler built on ``optimizer``; stepped after each epoch, or after
        each optimizer update if its ``interval`` is ``"step"`` (``OneCycleLR``; ``LinearLR(...,
        interval="step")``); ``ReduceLROnPlateau`` is stepped with its monitored metric at each epoch end.
    clip_grad_norm : clip the global gradient norm to this value before each update.
    precision : ``"fp32"`` (default), ``"tf32"`` (tensor-core matrix products on NVIDIA GPUs),
        ``"fp16"`` (mixed precision with dynamic loss scaling, as PyTorch AMP) or ``"bf16"`` (bfloat16
        mixed precision without loss scaling, as ``torch.autocast(dtype=torch.bfloat16)``); see
        ``xpnet.train.precision``.
    distributed : a communicator from ``xpnet.distributed.init()``: synchronous data-parallel
        training, ``batch_size`` being the global batch; see ``xpnet.distributed`` and docs/distributed.md.
    """

    def __init__(self, model: MLP, loss: str = "cross_entropy", optimizer: Optimizer | str | None = None,
                 metrics: Sequence[str] | None = None, scheduler: LRScheduler | None = None,
                 clip_grad_norm: float | None = None, precision: str = "fp32",
                 distributed: Communicator | None = None) -> None:
        from ..model import MLP
        from ..optim.lr_scheduler import LRScheduler
        from ..validation import check_real, invalid

        # every argument is checked before anything is built (the model is never touched here)
        if not isinstance(model, MLP):
            raise invalid("model", model, "pass an xpnet.MLP, e.g. xpnet.MLP([64, 128, 10])")
        self.model = model
        self.loss = get_loss(loss)
        self.optimizer = get_optimizer(optimizer)
        if metrics is None:
            metrics = ("accuracy",) if self.loss.classification else ()
        if isinstance(metrics, str) or not hasattr(metrics, "__iter__"):  # "accuracy" would iterate letters
            raise invalid("metrics", metrics, "use a tuple of names, e.g. metrics=('accuracy',)")
        self.problem = metrics_mod.problem_of(self.loss.name, model.n_outputs)
        self.metrics = metrics_mod.check_names(tuple(metrics), self.problem)
        if scheduler is not None and not isinstance(scheduler, LRScheduler):
            raise invalid("scheduler", scheduler,
                          "pass an xpnet.optim lr scheduler (e.g. StepLR(optimizer, 10)) or None")
        if scheduler is not None and scheduler.optimizer is not self.optimizer:
            raise ValueError("scheduler was built on a different optimizer: build it on the one given to Trainer.")
        self.scheduler = scheduler
        self.clip_grad_norm = check_real("clip_grad_norm", clip_grad_norm, low=0, low_open=True, allow_none=True)
        self.precision = check_precision(precision, model)
        # this trainer's own kernel set: TF32 (or not) is fixed here and never leaks to other trainers
        self.ops = model.ops.configured(tf32=self.precision == "tf32")
        # the precision strategy: built from the parts, never from this trainer; the step code
        # below calls it and never branches on the precision
        self.precision_step: FP32Step | DistributedStep = step_for(self.precision, model, self.loss,
                                                                   self.optimizer, self.ops, self.clip_grad_norm)
        self.distributed: Communicator | None = None
        self._sync: DistributedStep | None = None  # the data-parallel step (wraps the precision step)
        if distributed is not None:
            from ..distributed.sync import DistributedStep, check_communicator

            self.distributed = check_communicator(distributed, model)
            self._sync = DistributedStep(self.precision_step, self.distributed, model,
                                         lambda: self._interrupt is not None)
            self.precision_step = self._sync
        self.step_count = 0
        self.stop_training = False
        self.stop_reason: str | None = None
        self._rng = np.random.default_rng(model.seed)  # host-side: same batch order on every backend
        self.fit_plan: dict[str, int] = {}
        self.epoch = 0  # the epoch fit is in (0-based)
        self.history: History | None = None  # the History the current (or last) fit appends to
        self._interrupt: str | None = None
        # inside an epoch: where it stands (see epoch_progress); after load_state_dict of a mid-epoch
        # checkpoint: where the next fit resumes its first epoch
        self._progress: dict[str, Any] | None = None
        self._totals: tuple[Array, list[metrics_mod.Metric]] | None = None
        self._resume_at: tuple[dict[str, Any], dict[str, Any]] | None = None
        # inside fit with sample_weight / class_weight: the training rows' host weights and their
        # device copy (None when streamed), and the validation rows' host weights
        self._fit_weights: tuple[np.ndarray, Array | None] | None = None
        self._val_weights: np.ndarray | None = None

    def interrupt(self, reason: str = "interrupted") -> None:
        """Ask ``fit`` to stop after the current step (safe to call from a signal handler):
        the epoch in progress is dropped, so a checkpointed run resumes exactly from its last checkpoint
        (the start of that epoch, or a mid-epoch checkpoint inside it)."""
        self._interrupt = reason

    # -- data -------------------------------------------------------------------------
    def prepare(self, X: Any, y: Any, names: tuple[str, str] = ("X", "y"), full: bool = True,
                place: bool = True) -> tuple[Array, Array]:
        """``(X, y)`` validated for this model and loss and (``place``) put on the model's device.

        Host arrays are checked in full; ``full=False`` checks arrays already on the device for
        shape and dtype only (no device read).  The result is what :meth:`step` and
        :meth:`forward_backward` take."""
        check_same_library(**{names[0]: X, names[1]: y})
        m = self.model
        checks = DeviceChecks(self.ops)  # device arrays: scanned on the device, one host read for both
        Xd = check_features(names[0], X, m.n_features, m.backend, m.dtype, checks, full, place)
        yd = check_targets(names[1], y, self.loss, m.n_outputs, Xd.shape[0], m.backend, m.dtype, checks, full, place)
        checks.run()
        return Xd, yd

    def _on_device(self, a: Array) -> Array:
        """A batch on the model's device (host batches of streamed data are moved here)."""
        backend = self.model.backend
        return a if backend.owns(a) else backend.from_host(a)

    # -- one step -----------------------------------------------------------------------
    def train_step(self, x: Any, y: Any) -> Array:
        """One mini-batch update; returns the loss as a 0-d array on the model's device.

        Host inputs are fully validated; arrays already on the model's device are checked
        for shape and dtype only, so the step never waits on the GPU.
        """
        x, y = self.prepare(x, y, ("x", "y"), full=False)
        return self.step(x, y)

    def step(self, x: Array, y: Array) -> Array:
        """:meth:`forward_backward` then :meth:`update` on a batch from :meth:`prepare` (no checks:
        the fast path for benchmarks); returns the loss as a 0-d array on the model's device."""
        with self.model.backend.context():
            loss, _ = self.forward_backward(x, y)
            self.update()
        return loss

    def forward_backward(self, x: Array, y: Array, weights: Array | None = None) -> tuple[Array, Array]:
        """``(loss, logits)`` of a prepared batch; the gradients land in ``model.grads``
        (in this trainer's precision and kernel set).  Call inside ``model.backend.context()``.
        The model's dropout (if any) draws the masks of step :attr:`step_count`; ``weights``: the
        rows' weights on the device (a weighted mean loss, ``xpnet.losses``), or None."""
        return self.precision_step.forward_backward(x, y, step=self.step_count, weights=weights)

    def update(self, on_grads: Callable[[], None] | None = None) -> bool:
        """Apply the gradients of the last :meth:`forward_backward` (clipped if asked); returns
        False when fp16 loss scaling skipped the step (inf/NaN gradients).  Counts the step.

        ``on_grads`` is called once the batch's unscaled float32 gradients are in ``model.grads``,
        before clipping and the optimizer: the place to change them in place (a penalty's gradient,
        as ``xpnet.sklearn`` adds scikit-learn's L2 term).  Not with distributed training, whose
        gradients are all-reduced in between."""
        if on_grads is None:
            applied = self.precision_step.update()
        elif self._sync is not None:
            raise ValueError("update(on_grads=...) is not supported with distributed training: change the "
                             "gradients in the loss instead, or train in one process.")
        else:
            found_inf = self.precision_step.unscale_grads()
            on_grads()
            applied = self.precision_step.apply(found_inf)
        self.step_count += 1
        return applied

    @property
    def scaler(self) -> GradScaler | None:
        """The loss scaler of ``precision="fp16"`` (None otherwise)."""
        return self.precision_step.scaler

    # -- epochs -------------------------------------------------------------------------
    def fit(self, X: Any, y: Any, epochs: int = 1, batch_size: int = 32, shuffle: bool = True,
            validation_data: tuple[Any, Any] | None = None, validation_split: float = 0.0,
            callbacks: Sequence[Callback] = (), verbose: bool | int = True, initial_epoch: int = 0,
            history: History | None = None, data_on_device: bool | None = None, sample_weight: Any = None,
            class_weight: Any = None) -> History:
        """Train for ``epochs`` passes over ``(X, y)`` in mini-batches; returns a :class:`History`.

        ``validation_split`` holds out the last fraction of the samples (before shuffling);
        ``validation_data=(X_val, y_val)`` gives a separate set.  Both are evaluated after
        each epoch (``val_loss``, and ``val_<metric>`` for each of ``metrics``).  Training stops early, keeping the last
        good weights, if the loss becomes NaN or inf.  ``initial_epoch`` and ``history``
        continue an earlier run (as when resuming from a checkpoint): epochs
        ``initial_epoch .. epochs - 1`` run and append to ``history``.

        ``data_on_device``: ``None`` (default) puts host data on the device when it fits
        (always, except on a GPU whose free memory is too small) and otherwise streams each
        batch from host memory; ``True`` / ``False`` force either.  Both give the same batches.

        ``verbose``: 0 / False silent, 1 / True a progress bar, 2 one line per epoch with its metrics
        and time (as Keras; for logs).  Each epoch's wall time is in ``history["epoch_time"]``.

        ``sample_weight`` (one finite weight >= 0 per sample) and ``class_weight`` (``"balanced"``
        or ``{class: weight}``, classification losses only) weight the loss, its gradient and every
        metric: each batch's loss is ``sum w_i l_i / sum w_i`` (``xpnet.train.weights``), and each
        metric is weighted as its ``sklearn.metrics`` function's ``sample_weight``
        (``xpnet.train.metrics``); ``validation_split`` holds out the last samples' weights with
        them (``validation_data`` is unweighted).
        """
        comm = self.distributed
        with _agreed(comm):  # distributed: a bad input on any rank ends every rank with the same error
            epochs, batch_size = check_positive_int("epochs", epochs), check_positive_int("batch_size", batch_size)
            _check_fit_options(epochs, shuffle, validation_data, validation_split, callbacks, initial_epoch,
                               history, data_on_device)
            _check_verbose(verbose)
            X, y, validation_data, weights = self._prepare_fit_data(X, y, validation_data, validation_split,
                                                                    data_on_device, sample_weight, class_weight)
        if comm is not None:
            from ..distributed.sync import begin_fit

            begin_fit(self, comm, X, y, batch_size, epochs, initial_epoch, shuffle, weights)
            verbose = verbose if comm.rank == 0 else 0
        callbacks = self._callbacks_for(callbacks, int(verbose))
        self._set_fit_weights(X, weights)
        self.fit_plan = {"epochs": epochs, "steps_per_epoch": -(-X.shape[0] // batch_size),
                         "batch_size": batch_size, "initial_epoch": initial_epoch}
        self.stop_training, self.stop_reason, self._interrupt = False, None, None
        self.history = history = History() if history is None else history
        for c in callbacks:
            c.on_train_begin(self)
        try:
            with self.model.backend.context():
                self._run_epochs(X, y, validation_data, range(initial_epoch, epochs), batch_size, shuffle,
                                 callbacks, history)
                self._finish(X, y, callbacks, history)
        finally:
            self._fit_weights = self._val_weights = None
            for c in callbacks:
                c.on_train_end(self)
        history.stop_reason = self.stop_reason
        return history

    def _prepare_fit_data(self, X: Any, y: Any, validation_data: Any, validation_split: float,
                          data_on_device: bool | None, sample_weight: Any = None, class_weight: Any = None,
                          ) -> tuple[Array, Array, tuple[Array, Array] | None, tuple[Any, Any] | None]:
        """Training and validation data checked and placed (or left on the host to stream), and the
        host weights of the training and validation rows (None without weights)."""
        if data_on_device is None:
            data_on_device = self.ops.fits_on_device(getattr(X, "nbytes", 0) + getattr(y, "nbytes", 0))
        X, y = self.prepare(X, y, place=bool(data_on_device))
        w = row_weights(sample_weight, class_weight, y, self.loss, self.model.n_outputs)
        if validation_split:
            n_val = int(round(X.shape[0] * validation_split))
            if n_val == 0 or n_val == X.shape[0]:
                raise ValueError(f"validation_split={validation_split} leaves {n_val} of {X.shape[0]} samples "
                                 "for validation: use a fraction that leaves samples on both sides.")
            weights = None if w is None else (w[:-n_val], w[-n_val:])
            for side, part in (("training", 0), ("validation", 1)):
                if weights is not None and not float(weights[part].sum()) > 0:
                    raise ValueError(f"sample_weight / class_weight: the {side} rows of validation_split="
                                     f"{validation_split} all weigh 0, so their weighted loss is undefined: "
                                     "shuffle the rows first or pass validation_data.")
            return X[:-n_val, ...], y[:-n_val, ...], (X[-n_val:, ...], y[-n_val:, ...]), weights
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data must be a pair (X_val, y_val).")
            X_val, y_val = validation_data
            validation_data = self.prepare(X_val, y_val, names=("validation_data[0]", "validation_data[1]"),
                                           place=bool(data_on_device))
        return X, y, validation_data, None if w is None else (w, None)

    def _weight_dtype(self) -> str:
        """The dtype of the weights on the device: the model's, or float32 for half models."""
        return self.model.dtype if self.model.dtype in ("float32", "float64") else "float32"

    def _set_fit_weights(self, X: Array, weights: tuple[Any, Any] | None) -> None:
        """Keep the rows' host weights for :meth:`_epoch` (and a device copy when ``X`` is resident)."""
        if weights is None:
            self._fit_weights = self._val_weights = None
            return
        backend = self.model.backend
        device = backend.from_host(weights[0], self._weight_dtype()) if backend.owns(X) else None
        self._fit_weights, self._val_weights = (weights[0], device), weights[1]

    @staticmethod
    def _callbacks_for(callbacks: Iterable[Callback], verbose: int) -> list[Callback]:
        """The user's callbacks, with a NaN guard first (unless given) and a progress bar (verbose=1)
        or an epoch line (verbose=2)."""
        callbacks = list(callbacks)
        if not any(isinstance(c, TerminateOnNaN) for c in callbacks):
            callbacks.insert(0, TerminateOnNaN())
        if verbose == 1 and not any(isinstance(c, ProgressBar) for c in callbacks):
            callbacks.append(ProgressBar())
        if verbose == 2 and not any(isinstance(c, EpochLine) for c in callbacks):
            callbacks.append(EpochLine())
        return callbacks

    def _run_epochs(self, X: Array, y: Array, validation_data: tuple[Array, Array] | None, epochs: Iterable[int],
                    batch_size: int, shuffle: bool, callbacks: list[Callback], history: History) -> None:
        """The epochs in ``epochs``, until one is stopped inside (NaN loss, interrupt) or a callback
        sets ``stop_training``."""
        for epoch in epochs:
            self.epoch = epoch
            for c in callbacks:
                c.on_epoch_begin(self, epoch)
            began = time.perf_counter()
            logs = self._epoch(X, y, X.shape[0], batch_size, shuffle, callbacks)
            if logs is None:  # stopped inside the epoch (NaN loss or interrupt)
                return
            if validation_data is not None:
                logs.update({f"val_{k}": v for k, v in
                             self._evaluate(*validation_data, weights=self._val_weights).items()})
            logs["lr"] = self.optimizer.lr
            self._step_scheduler_at_epoch_end(logs)
            history.append(epoch, logs, epoch_time=time.perf_counter() - began)
            for c in callbacks:
                c.on_epoch_end(self, epoch, logs)
            if self.stop_training:
                return

    def _step_scheduler_at_epoch_end(self, logs: dict[str, float]) -> None:
        """Step a per-epoch scheduler; ReduceLROnPlateau gets its monitored value from ``logs``."""
        from ..optim.lr_scheduler import ReduceLROnPlateau

        sched = self.scheduler
        if sched is None or sched.interval != "epoch":
            return
        if not isinstance(sched, ReduceLROnPlateau):
            sched.step()
            return
        key = sched.monitor or ("val_loss" if "val_loss" in logs else "loss")
        if key not in logs:
            raise ValueError(f"ReduceLROnPlateau monitors {key!r}, which fit does not report (it reports "
                             f"{', '.join(logs)}): pass validation_data or choose a reported monitor.")
        sched.step(logs[key])

    def _finish(self, X: Array, y: Array, callbacks: list[Callback], history: History) -> None:
        """After the epochs: recover from divergence, or record an interrupt."""
        guard = next(c for c in callbacks if isinstance(c, TerminateOnNaN))
        if guard.diverged:
            weights = None if self._fit_weights is None else self._fit_weights[0]
            self.stop_reason = guard.recover(self, lambda: self._evaluate(X, y, weights=weights)["loss"])
            history.diverged = True
            warnings.warn(self.stop_reason, RuntimeWarning, stacklevel=3)
        elif self._interrupt is not None:
            self.stop_reason = (f"{self._interrupt}: stopped after step {self.step_count} in epoch "
                                f"{self.epoch + 1}; that epoch's steps are dropped")
            history.interrupted = True

    def _epoch(self, X: Array, y: Array, n: int, batch_size: int, shuffle: bool,
               callbacks: list[Callback]) -> dict[str, float] | None:
        backend = self.model.backend
        start_rng = self._rng.bit_generator.state  # a mid-epoch checkpoint redraws this epoch's order from it
        host_order = self._rng.permutation(n).astype(np.int64) if shuffle else np.arange(n, dtype=np.int64)
        steps, totals = self._resumed_progress(n, batch_size)
        if self._sync is not None and self._sync.comm.rank != 0:  # a restored partial epoch: counted once, on rank 0
            totals = (totals[0], self._zero_totals()[1])
        first = steps * batch_size  # the samples of the steps a mid-epoch checkpoint had already taken
        batches: Iterator[tuple[int, int, Array, Array]]
        sync = self._sync
        order = None
        if sync is not None:  # this rank's share of each global batch
            order = backend.from_host(host_order) if shuffle and backend.owns(X) else None
            batches = sync.batches(X, y, order, host_order, n, batch_size, self._on_device, first)
        elif backend.owns(X):  # device-resident: the host-drawn permutation is applied on the device
            order = backend.from_host(host_order) if shuffle else None
            batches = self._resident_batches(X, y, order, n, batch_size, first)
        else:  # streamed from host memory, the next batch copied while this one trains
            batches = self.ops.stream_batches(X, y, host_order[first:], batch_size)
        weights = self._batch_weights(host_order, order, n, batch_size, first)
        self._progress = {"epoch": self.epoch, "steps": steps, "rng": start_rng, "batch_size": batch_size, "n": n}
        self._totals = totals
        per_step = self.scheduler if self.scheduler is not None and self.scheduler.interval == "step" else None
        batch_hooks = [c for c in callbacks if type(c).on_batch_end is not Callback.on_batch_end]
        try:
            for (start, stop, xb, yb), (wb, w_rows, w_sum) in zip(batches, weights):
                if sync is not None:  # the global loss; gradients all-reduced
                    w_totals = None if self._fit_weights is None else (w_rows, w_sum)
                    loss, logits = sync.forward_backward_share(xb, yb, stop - start, self.step_count, wb, w_totals)
                else:
                    loss, logits = self.forward_backward(xb, yb, wb)
                if not all([c.on_step_loss(self, loss) for c in callbacks]):  # noqa: C419 - every callback sees every step
                    return None
                self.update()
                if per_step is not None:
                    per_step.step()
                if self._interrupted():
                    return None
                count = stop - start if self._fit_weights is None else w_sum  # the global batch's
                self._totals = totals = self._tally(totals, loss, logits, yb, count, wb, w_rows)
                self._progress["steps"] += 1
                for c in callbacks:
                    c.on_step_end(self)
                if batch_hooks:
                    self._batch_end(batch_hooks, loss)
        finally:
            self._progress = self._totals = None
            if hasattr(batches, "close"):
                batches.close()  # a stream of batches stops its copies before its buffers go
        if sync is not None:
            with _agreed(self.distributed):  # a device error on one rank (bad labels) ends them all
                self.ops.check_device_errors()
            sync.reduce_metrics(totals[1])  # each rank's metric states merged into every rank's
        return self._metrics(totals, n if self._fit_weights is None else float(self._fit_weights[0].sum()), y)

    def _batch_weights(self, host_order: np.ndarray, order: Array | None, n: int, batch_size: int,
                       first: int) -> Iterator[tuple[Array | None, float, float]]:
        """``(the batch's weights on the device, their host sum, the same sum)`` for each batch of
        :meth:`_epoch`, in its order: gathered on the device when resident, copied from the host when
        streamed; ``(None, 0.0, 0.0)`` for every batch without weights.  Distributed: this rank's rows'
        weights (None if it has none), their sum and the global batch's sum."""
        if self._fit_weights is None:
            yield from itertools.repeat((None, 0.0, 0.0))
            return
        host, device = self._fit_weights
        if self._sync is not None:
            yield from self._sync.batch_weights(host, device, host_order, order, n, batch_size, self._weight_dtype(),
                                                first)
            return
        for start, stop in _batches(n, batch_size, first):
            rows = host_order[start:stop]
            if device is None:  # streamed: a small synchronous copy next to the batch's
                wb = self.model.backend.from_host(host[rows], self._weight_dtype())
            elif order is None:
                wb = device[start:stop]
            else:
                wb = self.ops.gather_rows(device, order[start:stop], "w_batch")
            w_sum = float(host[rows].sum())
            yield wb, w_sum, w_sum

    def _batch_end(self, callbacks: list[Callback], loss: Array) -> None:
        """``on_batch_end(trainer, step, logs)`` for the callbacks that define it: ``step`` is the
        0-based step in the epoch, ``logs`` the batch's loss (a host read: a GPU sync) and the lr."""
        logs = {"loss": float(loss), "lr": self.optimizer.lr}
        for c in callbacks:
            c.on_batch_end(self, self.epoch_steps - 1, logs)

    def _resumed_progress(self, n: int, batch_size: int) -> tuple[int, tuple[Array, list[metrics_mod.Metric]]]:
        """``(steps already taken, running totals)`` of this epoch: zero, or what a mid-epoch
        checkpoint restored by :meth:`load_state_dict` recorded (used once, by the epoch it names)."""
        resume, self._resume_at = self._resume_at, None
        totals = self._zero_totals()
        if resume is None or resume[0]["epoch"] != self.epoch:
            return 0, totals
        at, arrays = resume
        if (at["n"], at["batch_size"]) != (n, batch_size):
            raise ValueError(f"the checkpoint was saved {at['steps']} steps into epoch {at['epoch'] + 1} of "
                             f"{at['n']} samples in batches of {at['batch_size']}; this fit has {n} samples in "
                             f"batches of {batch_size}, so it cannot continue that epoch exactly.")
        if [m["name"] for m in at["metrics"]] != [m.name for m in totals[1]]:
            raise ValueError(f"the checkpoint was saved inside an epoch with metrics "
                             f"{[m['name'] for m in at['metrics']]}; this trainer has {list(self.metrics)}.")
        backend = self.model.backend
        for i, (metric, saved) in enumerate(zip(totals[1], at["metrics"])):
            metric.load_state(saved, {k: v for k in metric.accumulators if (v := arrays.get(f"metric{i}.{k}"))
                                      is not None}, backend.from_host)
        total = backend.xp.asarray(at["loss_total"], dtype=self.model.params.dtype, device=backend.device)
        return int(at["steps"]), (total, totals[1])

    @property
    def inside_epoch(self) -> bool:
        """Whether ``fit`` is inside an epoch (a callback's ``on_step_loss`` / ``on_step_end``)."""
        return self._progress is not None

    @property
    def epoch_steps(self) -> int:
        """Steps taken in the epoch in progress (a resumed mid-epoch one counts those before the
        checkpoint); 0 between epochs.  Reads nothing from the device."""
        return int(self._progress["steps"]) if self._progress is not None else 0

    def epoch_progress(self) -> dict[str, Any] | None:
        """Inside an epoch (e.g. from a callback's ``on_step_end``): ``{"epoch", "steps", "batch_size",
        "n", "loss_total", "metrics"}`` -- the epoch in progress (0-based), the steps taken in it, its
        running loss sum and each metric's state (:meth:`Metric.state`'s metadata; host reads); None
        between epochs."""
        state = self._epoch_state()
        return state[0] if state is not None else None

    def _epoch_state(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """:meth:`epoch_progress` and the metrics' arrays, keyed ``in_epoch.metric{i}.{name}``."""
        if self._progress is None or self._totals is None:
            return None
        meta = {k: v for k, v in self._progress.items() if k != "rng"}
        meta["loss_total"], meta["metrics"] = float(self._totals[0]), []
        arrays = {}
        for i, metric in enumerate(self._totals[1]):
            m_meta, m_arrays = metric.state()
            meta["metrics"].append(m_meta)
            arrays.update({f"{IN_EPOCH}metric{i}.{k}": v for k, v in m_arrays.items()})
        return meta, arrays

    def _interrupted(self) -> bool:
        """Whether to stop after this step; distributed, only when the ranks agreed on it (same step)."""
        if self._sync is None:
            return self._interrupt is not None
        if self._sync.interrupted and self._interrupt is None:
            self._interrupt = "interrupted (on another rank)"
        return self._sync.interrupted

    # -- metrics: one accumulation for training epochs and evaluation ----------------------
    def _zero_totals(self) -> tuple[Array, list[metrics_mod.Metric]]:
        """``(sum of loss * batch size, fresh metric states)`` on the device: nothing is read back per batch."""
        xp, backend, dtype = self.model.backend.xp, self.model.backend, self.model.params.dtype
        total = xp.zeros((), dtype=dtype, device=backend.device)
        return total, [m.start(xp, backend.device, dtype) for m in metrics_mod.build(self.metrics, self.problem)]

    def _tally(self, totals: tuple[Array, list[metrics_mod.Metric]], loss: Array, logits: Array, y: Array,
               count: float, weights: Array | None = None,
               weights_total: float | None = None) -> tuple[Array, list[metrics_mod.Metric]]:
        """``totals`` plus one batch of ``count`` samples (weighted: ``count`` is the batch's weight
        total): its loss times ``count``, and each metric updated on the device.  ``weights_total``:
        the total of ``weights`` (default ``count``; distributed, this rank's rows' total)."""
        total, metrics = totals
        if logits is not None:  # None: a rank without rows in the step (distributed)
            for m in metrics:
                if weights is None:
                    m.update(logits, y)
                else:
                    m.update_weighted(logits, y, weights, count if weights_total is None else weights_total)
        return total + loss * float(count), metrics

    def _metrics(self, totals: tuple[Array, list[metrics_mod.Metric]], n: float, y: Array) -> dict[str, float]:
        """Mean loss and the metrics over ``n`` samples from ``totals`` (one host read each); device
        errors met by a kernel (e.g. labels out of range) are raised here."""
        self.ops.check_device_errors()
        out = {"loss": float(totals[0]) / n}
        out.update({m.name: m.result() for m in totals[1]})
        return out

    def _resident_batches(self, X: Array, y: Array, order: Array | None, n: int, batch_size: int,
                          first: int = 0) -> Iterator[tuple[int, int, Array, Array]]:
        for start, stop in _batches(n, batch_size, first):
            if order is None:
                yield start, stop, X[start:stop, ...], y[start:stop, ...]
            else:
                idx = order[start:stop]
                yield start, stop, self.ops.gather_rows(X, idx, "x_batch"), self.ops.gather_rows(y, idx, "y_batch")

    # -- state for checkpoints ------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(arrays, metadata)``: optimizer state buffers on the host (and, inside an epoch, the
        metrics' running state, keyed ``in_epoch.*``), and everything else
        a resumed run needs to continue exactly (optimizer hyperparameters and step, scheduler,
        shuffling RNG, step count) as JSON-ready values.

        Inside an epoch (a mid-epoch checkpoint) the RNG state is the one the epoch started with
        and ``"in_epoch"`` holds :meth:`epoch_progress`: a resumed fit redraws the same order, skips
        the steps already taken and continues the epoch's running totals."""
        opt = self.optimizer.state_dict()
        progress = self._epoch_state()
        meta = {
            "optimizer": {k: opt[k] for k in ("type", "lr", "hparams", "step_count")},
            "initial_lr": getattr(self.optimizer, "initial_lr", None),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": self._rng.bit_generator.state if self._progress is None else self._progress["rng"],
            "step_count": self.step_count,
            "loss": self.loss.name,
            "precision": self.precision,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }
        if progress is None:
            return opt["state"], meta
        meta["in_epoch"] = progress[0]
        return {**opt["state"], **progress[1]}, meta

    def check_rng_state(self, state: Any) -> None:
        """Raise ValueError unless ``state`` can restore the shuffling RNG (tried on a throwaway
        generator of the same kind: this trainer's own stays untouched)."""
        try:
            type(self._rng.bit_generator)().state = state
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(str(exc)) from exc

    def load_state_dict(self, arrays: dict[str, Any], meta: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (the weights are restored separately)."""
        if meta.get("loss", self.loss.name) != self.loss.name:
            raise ValueError(f"the saved state is for loss {meta['loss']!r}, this trainer uses {self.loss.name!r}.")
        in_epoch = {k[len(IN_EPOCH):]: v for k, v in arrays.items() if k.startswith(IN_EPOCH)}
        arrays = {k: v for k, v in arrays.items() if not k.startswith(IN_EPOCH)}
        self.optimizer.load_state_dict({**meta["optimizer"], "state": arrays}, backend=self.model.backend)
        if meta.get("initial_lr") is not None:
            self.optimizer.initial_lr = meta["initial_lr"]
        if self.scheduler is not None and meta.get("scheduler") is not None:
            self.scheduler.load_state_dict(meta["scheduler"])
        self._rng.bit_generator.state = meta["rng"]
        self.step_count = int(meta["step_count"])
        if self.scaler is not None and meta.get("scaler"):
            self.scaler.load_state_dict(meta["scaler"])
        self._resume_at = (dict(meta["in_epoch"]), in_epoch) if meta.get("in_epoch") else None

    # -- inference ----------------------------------------------------------------------
    def evaluate(self, X: Any, y: Any, batch_size: int = 1024, sample_weight: Any = None) -> dict[str, float]:
        """Mean loss and the trainer's metrics over ``(X, y)``, as Python floats; ``sample_weight``:
        the weighted mean loss and weighted metrics (as in :meth:`fit`)."""
        batch_size = check_positive_int("batch_size", batch_size)
        X, y = self.prepare(X, y)
        weights = row_weights(sample_weight, None, y, self.loss, self.model.n_outputs)
        with self.model.backend.context():
            return self._evaluate(X, y, batch_size, weights)

    def _evaluate(self, X: Array, y: Array, batch_size: int = 1024,
                  weights: np.ndarray | None = None) -> dict[str, float]:
        totals = self._zero_totals()
        for start, stop in _batches(X.shape[0], batch_size):
            xb, yb = self._on_device(X[start:stop, ...]), self._on_device(y[start:stop, ...])
            logits = self.model.forward(xb, ops=self.ops)
            if weights is None:
                loss, _ = self.ops.loss(self.loss, logits, yb)
                totals = self._tally(totals, loss, logits, yb, stop - start)
                continue
            wb = self.model.backend.from_host(weights[start:stop], self._weight_dtype())
            loss, _ = self.ops.loss(self.loss, logits, yb, wb)
            totals = self._tally(totals, loss, logits, yb, float(weights[start:stop].sum()), wb)
        return self._metrics(totals, X.shape[0] if weights is None else float(weights.sum()), y)

    def predict(self, X: Any, batch_size: int = 1024) -> Array:
        """Network outputs (logits) for ``X``, as an array on the model's device."""
        batch_size = check_positive_int("batch_size", batch_size)
        m = self.model
        checks = DeviceChecks(self.ops)
        X = check_features("X", X, m.n_features, m.backend, m.dtype, checks)
        checks.run()
        xp = m.backend.xp
        with m.backend.context():
            parts = [m.forward(X[a:b, ...], ops=self.ops) for a, b in _batches(X.shape[0], batch_size)]
            return parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)
