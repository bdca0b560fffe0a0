"""scikit-learn's stochastic training loop (``BaseMultilayerPerceptron._fit_stochastic``), step for step, on
an xpnet :class:`~xpnet.Trainer`.

The same random draws in the same order (validation split, then one shuffle of the sample indices per
epoch, from the estimator's ``random_state``), the same mini-batches (``gen_batches``), the same loss
bookkeeping (``loss_curve_`` is the batch losses weighted by batch size, penalty included), the same
stopping rule (``n_iter_no_change`` epochs without a ``tol`` improvement of the training loss, or of the
validation score with ``early_stopping``), learning-rate changes and warnings.  Each batch is one
:meth:`Trainer.forward_backward` and :meth:`Trainer.update` on the model's device (fused kernels); the
host reads one float per epoch.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import gen_batches, shuffle

from .._typing import Array
from ..train.trainer import Trainer
from .objective import Objective
from .solvers import LearningRate


@dataclass
class Rows:
    """Training rows on the model's device: features, targets in xpnet's form, weights (or None), and
    the weights on the host (for each batch's total)."""

    X: Array
    y: Array
    w: Array | None
    host_w: np.ndarray | None


def place(trainer: Trainer, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None) -> Rows:
    Xd, yd = trainer.prepare(X, y)
    if sample_weight is None:
        return Rows(Xd, yd, None, None)
    # the estimator's model is float32 or float64 (half precisions train float32 master weights)
    return Rows(Xd, yd, trainer.model.backend.from_host(sample_weight, trainer.model.dtype), sample_weight)


def batch_size_for(requested: Any, n: int) -> int:
    """scikit-learn's: ``min(200, n)`` for ``"auto"``; else clipped to ``[1, n]`` with its warning."""
    if requested == "auto":
        return min(200, n)
    if requested > n:
        warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going to be clipped",
                      stacklevel=6)
    return int(np.clip(requested, 1, n))


class _GradientHook:
    """``Trainer.update(on_grads=...)``: makes the batch's gradients scikit-learn's; keeps the penalty's value."""

    def __init__(self, objective: Objective, model: Any, weight_sum: float) -> None:
        self.objective, self.model, self.weight_sum = objective, model, weight_sum
        self.penalty: Array | float = 0.0

    def __call__(self) -> None:
        self.penalty = self.objective.finish_gradients(self.model, self.weight_sum)


def run_epoch(trainer: Trainer, objective: Objective, rows: Rows, order: np.ndarray | None,
              batch_size: int) -> tuple[float, int]:
    """One pass over ``rows`` in ``order`` (None: as stored): scikit-learn's epoch loss, and how many updates
    were applied (fp16 loss scaling skips those with inf / NaN gradients)."""
    model, ops = trainer.model, trainer.ops
    xp = model.backend.xp
    n = rows.X.shape[0]
    idx_all = None if order is None else model.backend.from_host(order.astype(np.int64))
    total: Array | float = 0.0
    applied = 0
    with model.backend.context():
        for s in gen_batches(n, batch_size):
            if idx_all is None:
                xb, yb = rows.X[s, ...], rows.y[s, ...]
                wb = None if rows.w is None else rows.w[s]
            else:
                idx = idx_all[s]
                xb, yb = ops.gather_rows(rows.X, idx, "x_batch"), ops.gather_rows(rows.y, idx, "y_batch")
                wb = None if rows.w is None else ops.gather_rows(rows.w, idx, "w_batch")
            n_batch = s.stop - s.start
            if rows.host_w is None:
                weight_sum = float(n_batch)
            else:
                weight_sum = float(rows.host_w[s if order is None else order[s]].sum())
            loss, logits = trainer.forward_backward(xb, yb, wb)
            value = objective.value(xp, logits, yb, wb, weight_sum, loss)  # before the update, as scikit-learn
            hook = _GradientHook(objective, model, weight_sum)
            applied += trainer.update(hook)
            total = total + (value + hook.penalty) * n_batch
    return float(total) / n, applied


@dataclass
class Validation:
    """The held-out rows of ``early_stopping`` and their score (accuracy or R^2, as the estimator's ``score``)."""

    X: np.ndarray
    y: np.ndarray  # in the estimator's label space (classes, or targets)
    sample_weight: np.ndarray | None
    score: Callable[[np.ndarray, np.ndarray, np.ndarray | None], float]  # (X, y, sample_weight) -> score

    def __call__(self) -> float:
        return self.score(self.X, self.y, self.sample_weight)


def split_validation(est: Any, X: np.ndarray, Y: np.ndarray, sample_weight: np.ndarray | None,
                     random_state: np.random.RandomState) -> tuple[Any, ...]:
    """scikit-learn's hold-out for ``early_stopping`` (stratified for a single classification output)."""
    stratify = Y if is_classifier(est) and Y.shape[1] == 1 else None
    arrays = (X, Y) if sample_weight is None else (X, Y, sample_weight)
    parts = train_test_split(*arrays, random_state=random_state, test_size=est.validation_fraction,
                             stratify=stratify)
    if parts[1].shape[0] < 2:
        raise ValueError("The validation set is too small. Increase 'validation_fraction' or the size of "
                         "your dataset.")
    X_train, X_val, Y_train, Y_val = parts[:4]
    sw_train, sw_val = (None, None) if sample_weight is None else parts[4:6]
    return X_train, Y_train, sw_train, X_val, Y_val, sw_val


def update_no_improvement(est: Any, model: Any, validation: Validation | None) -> None:
    """scikit-learn's ``_update_no_improvement_count``: the stall counter, best loss / score and best weights."""
    if validation is not None:
        score = validation()
        est.validation_scores_.append(score)
        if est.verbose:
            print(f"Validation score: {score:f}")
        est._no_improvement_count = est._no_improvement_count + 1 \
            if score < est.best_validation_score_ + est.tol else 0
        if score > est.best_validation_score_:
            est.best_validation_score_ = score
            est._best_params = model.copy_params()
        return
    last = est.loss_curve_[-1]
    est._no_improvement_count = est._no_improvement_count + 1 if last > est.best_loss_ - est.tol else 0
    if last < est.best_loss_:
        est.best_loss_ = last


def _stall_message(est: Any, early_stopping: bool) -> str:
    what = "Validation score" if early_stopping else "Training loss"
    return f"{what} did not improve more than tol={est.tol:f} for {est.n_iter_no_change} consecutive epochs."


def fit_stochastic(est: Any, trainer: Trainer, objective: Objective, rows: Rows, validation: Validation | None,
                   schedule: LearningRate, random_state: np.random.RandomState, incremental: bool) -> None:
    """The epochs of one ``fit`` (up to ``max_iter``) or ``partial_fit`` (one) call of ``est``, whose
    fitted attributes (``n_iter_``, ``t_``, ``loss_``, ``loss_curve_``, ...) it updates as scikit-learn's."""
    n = rows.X.shape[0]
    batch_size = batch_size_for(est.batch_size, n)
    sample_idx = np.arange(n, dtype=int)
    skipped_warned = False
    try:
        est.n_iter_ = 0
        for _ in range(est.max_iter):
            order = None
            if est.shuffle:
                sample_idx = shuffle(sample_idx, random_state=random_state)
                order = sample_idx
            est.loss_, applied = run_epoch(trainer, objective, rows, order, batch_size)
            if applied == 0 and not skipped_warned:
                skipped_warned = True
                warnings.warn(f"precision={trainer.precision!r}: every update of epoch {est.n_iter_ + 1} was skipped "
                              "(inf or NaN gradients in float16): scale the inputs (e.g. StandardScaler) or use "
                              "precision='bf16' or 'fp32'.", RuntimeWarning, stacklevel=5)
            est.n_iter_ += 1
            est.t_ += n
            est.loss_curve_.append(est.loss_)
            if est.verbose:
                print(f"Iteration {est.n_iter_}, loss = {est.loss_:.8f}")
            update_no_improvement(est, trainer.model, validation)
            schedule.iteration_ends(est.t_)
            if est._no_improvement_count > est.n_iter_no_change:
                if schedule.trigger_stopping(_stall_message(est, validation is not None), bool(est.verbose)):
                    break
                est._no_improvement_count = 0
            if incremental:
                break
            if est.n_iter_ == est.max_iter:
                warnings.warn(f"Stochastic Optimizer: Maximum iterations ({est.max_iter}) reached and the "
                              "optimization hasn't converged yet.", ConvergenceWarning, stacklevel=5)
    except KeyboardInterrupt:
        warnings.warn("Training interrupted by user.", stacklevel=5)
    if validation is not None and est._best_params is not None:  # early stopping keeps the best weights
        trainer.model.params[...] = est._best_params
