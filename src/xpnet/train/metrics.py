"""Epoch metrics, named as scikit-learn's scorers, accumulated on the device.

Each metric is a small object: :meth:`Metric.start` makes its state (a few device arrays),
:meth:`Metric.update` folds in one batch of ``(logits, y)`` with array-API operations only (no
host read, every namespace), and :meth:`Metric.result` reads the epoch's value back once.
Values are exact over the epoch, never averaged per batch:

* ``accuracy``, ``top_k_accuracy`` (k = 2, scikit-learn's default): hit counts.
* ``precision``, ``recall``, ``f1`` (binary, positive class 1), their ``_macro`` / ``_micro`` /
  ``_weighted`` forms and ``balanced_accuracy``: a confusion matrix of int64 counts.
* ``roc_auc`` (binary) and ``roc_auc_ovr`` (one-vs-rest, macro average): exact, from the
  epoch's scores.  The scores are kept on the device until the epoch ends (memory: one
  value per sample for ``roc_auc``, one per sample and class for ``roc_auc_ovr``, in the
  logits' dtype, plus the int64 labels and, weighted, the weights), then ranked on the host
  (ties count one half).  A class without positives or negatives (by weight, when weighted)
  has no AUC: it is left out of the average, and a problem where no class has one reports NaN.
* ``neg_log_loss``: the summed per-sample cross-entropy of the predicted probabilities.
* ``r2``, ``neg_mean_absolute_error``, ``neg_mean_squared_error``,
  ``neg_root_mean_squared_error``: per-output sums (R^2 with the targets' mean and spread
  merged batch by batch, Chan et al.), averaged uniformly over outputs as scikit-learn does.

Every metric also takes per-sample weights (``Trainer.fit(sample_weight=, class_weight=)``,
``Trainer.evaluate(sample_weight=)``): :meth:`Metric.update_weighted` folds in a batch whose rows
weigh ``w_i``, with the meaning of ``sample_weight`` in the matching ``sklearn.metrics`` function
(a row of weight 2 counts as the row twice; a row of weight 0 as no row).  Counts become sums of
weights in the logits' dtype (the confusion matrix too), sums become weighted sums, ``n`` the
weight total, the AUC weighs each positive-negative pair by ``w_i w_j`` (scikit-learn's weighted
ROC curve), and R^2 merges weighted means and spreads.  Still no host read per batch: the batch's
weight total comes from the host.

Problems: ``"binary"`` (``bce`` with one output, or ``cross_entropy`` with two classes; class 1
is positive), ``"multiclass"`` (``cross_entropy``), ``"multilabel"`` (``bce`` with several
outputs: ``accuracy`` per output only) and ``"regression"`` (``mse``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._typing import Array

PROBLEMS = ("binary", "multiclass", "multilabel", "regression")


def problem_of(loss_name: str, n_outputs: int) -> str:
    """The kind of problem a loss and an output count describe (see the module docstring)."""
    if loss_name == "mse":
        return "regression"
    if loss_name == "bce":
        return "binary" if n_outputs == 1 else "multilabel"
    return "binary" if n_outputs == 2 else "multiclass"


class Metric:
    """One metric's state for one pass over some data (a training epoch or an evaluation)."""

    name: str = ""
    greater_is_better: bool = True
    accumulators: tuple[str, ...] = ()  # the attributes start() zeroes and update() folds batches into

    def __init__(self, problem: str) -> None:
        self.problem = problem

    def start(self, xp: Any, device: Any, dtype: Any) -> Metric:
        """Zero the state on ``device`` (``dtype``: the logits' floating dtype); returns self."""
        self.xp, self.device, self.dtype = xp, device, dtype
        self.n: int | float = 0  # samples seen (a float weight total when weighted)
        return self

    def update(self, logits: Array, y: Array) -> None:
        raise NotImplementedError

    def update_weighted(self, logits: Array, y: Array, weights: Array, total: float) -> None:
        """Fold in a batch whose rows weigh ``weights`` (device, one per row), ``total`` their host
        sum: ``sample_weight`` as in the matching ``sklearn.metrics`` function (every metric
        implements it)."""
        raise NotImplementedError

    def _weights(self, weights: Array) -> Array:
        """A batch's weights as a fresh array in the state's floating dtype (a batch buffer may be
        reused by the next step, so never a view of it)."""
        return self.xp.astype(weights, self.dtype, copy=True)

    def _as_sums(self, count: Array) -> Array:
        """A count state (int64 until then) as a sum of weights in the state's floating dtype."""
        xp = self.xp
        return count if xp.isdtype(count.dtype, "real floating") else xp.astype(count, self.dtype)

    def result(self) -> float:
        raise NotImplementedError

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``(meta, arrays)``: the state accumulated so far, on the host (a mid-epoch checkpoint).
        Arrays are float64 (exact for the float32/float64 sums and int64 counts kept here); ``meta``
        records each one's dtype and shape, and whether it was a list of batches (kept as one) or not
        started."""
        from ..backend import to_host

        meta: dict[str, Any] = {"name": self.name, "n": self.n if isinstance(self.n, float) else int(self.n)}
        arrays: dict[str, np.ndarray] = {}
        for attr in self.accumulators:
            value = getattr(self, attr)
            is_list = isinstance(value, list)
            if is_list:
                value = self.xp.concat(value, axis=0) if value else None
            if value is None:
                meta[attr] = {"list": is_list, "dtype": None}
                continue
            host = np.asarray(to_host(value))
            meta[attr] = {"list": is_list, "dtype": host.dtype.name, "shape": list(host.shape)}
            arrays[attr] = host.astype(np.float64)
        return meta, arrays

    def load_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray],
                   from_host: Callable[[np.ndarray], Array]) -> None:
        """Put back what :meth:`state` returned (after :meth:`start`); ``from_host`` moves an array
        to this metric's device."""
        if meta.get("name") != self.name:
            raise ValueError(f"the saved state is for metric {meta.get('name')!r}, not {self.name!r}.")
        self.n = meta["n"] if isinstance(meta["n"], float) else int(meta["n"])  # float: a weight total
        for attr in self.accumulators:
            if attr not in meta:  # saved before this accumulator existed: keep start()'s empty state
                continue
            kind = meta[attr]
            value = None if kind["dtype"] is None else self.xp.reshape(  # 0-d arrays come back 1-d
                from_host(arrays[attr].astype(np.dtype(kind["dtype"]))), tuple(kind["shape"]))
            if kind["list"]:
                value = [] if value is None else [value]
            setattr(self, attr, value)

    # -- shared views of a batch -----------------------------------------------------------
    def _labels(self, logits: Array, y: Array) -> tuple[Array, Array]:
        """``(class scores (n, C), int64 labels (n,))`` of a single-label problem; ``bce`` with one
        output is seen as the two classes ``[0, z]`` (so argmax is ``z > 0``)."""
        xp = self.xp
        if self.problem == "binary" and logits.shape[1] == 1:
            scores = xp.concat([xp.zeros_like(logits), logits], axis=1)
            return scores, xp.astype(y[:, 0] > 0.5, xp.int64)
        labels = y if y.ndim == 1 else xp.argmax(y, axis=1)
        return logits, xp.astype(labels, xp.int64)

    def _one_hot(self, labels: Array, n_classes: int, dtype: Any) -> Array:
        xp = self.xp
        classes = xp.arange(n_classes, dtype=xp.int64, device=self.device)
        return xp.astype(labels[:, None] == classes[None, :], dtype)


class Accuracy(Metric):
    """Correct predictions over all predictions (per output for ``bce``), as before metrics were
    pluggable: the count accumulates in the logits' dtype."""

    name = "accuracy"
    accumulators = ("correct",)

    def start(self, xp: Any, device: Any, dtype: Any) -> Metric:
        super().start(xp, device, dtype)
        self.correct = xp.zeros((), dtype=dtype, device=device)
        return self

    def update(self, logits: Array, y: Array) -> None:
        xp = self.xp
        if self.problem == "multilabel" or (self.problem == "binary" and logits.shape[1] == 1):  # bce
            self.correct = self.correct + xp.sum(xp.astype((logits > 0) == (y > 0.5), logits.dtype))
            self.n += y.shape[0] * y.shape[1]
            return
        labels = y if y.ndim == 1 else xp.argmax(y, axis=1)
        self.correct = self.correct + xp.sum(xp.astype(xp.argmax(logits, axis=1) == labels, logits.dtype))
        self.n += y.shape[0]

    def update_weighted(self, logits: Array, y: Array, weights: Array, total: float) -> None:
        """scikit-learn's ``accuracy_score(sample_weight=...)``: ``n`` becomes the weight total
        (per output for ``bce``, whose accuracy counts each output)."""
        xp = self.xp
        w = xp.astype(weights, logits.dtype)
        if self.problem == "multilabel" or (self.problem == "binary" and logits.shape[1] == 1):  # bce
            hits = xp.astype((logits > 0) == (y > 0.5), logits.dtype)
            self.correct = self.correct + xp.sum(w[:, None] * hits)
            self.n += total * y.shape[1]
            return
        labels = y if y.ndim == 1 else xp.argmax(y, axis=1)
        self.correct = self.correct + xp.sum(w * xp.astype(xp.argmax(logits, axis=1) == labels, logits.dtype))
        self.n += total

    def result(self) -> float:
        return float(self.correct) / self.n if self.n else float("nan")


class TopKAccuracy(Metric):
    """The true class among the ``k`` highest scores (ties favour the true class)."""

    name = "top_k_accuracy"
    accumulators = ("hits",)

    def __init__(self, problem: str, k: int = 2) -> None:
        super().__init__(problem)
        self.k = k

    def start(self, xp: Any, device: Any, dtype: Any) -> Metric:
        super().start(xp, device, dtype)
        self.hits = xp.zeros((), dtype=xp.int64, device=device)
        return self

    def update(self, logits: Array, y: Array) -> None:
        xp = self.xp
        self.hits = self.hits + xp.sum(xp.astype(self._hit(logits, y), xp.int64))
        self.n += y.shape[0]

    def update_weighted(self, logits: Array, y: Array, weights: Array, total: float) -> None:
        """``top_k_accuracy_score(sample_weight=...)``: the weight of the hits over the weight total."""
        xp = self.xp
        hits = self._weights(weights) * xp.astype(self._hit(logits, y), self.dtype)
        self.hits = self._as_sums(self.hits) + xp.sum(hits)
        self.n += total

    def _hit(self, logits: Array, y: Array) -> Array:
        """Whether each row's true class is among its ``k`` highest scores (bool)."""
        xp = self.xp
        scores, labels = self._labels(logits, y)
        mask = self._one_hot(labels, scores.shape[1], xp.bool)
        true_score = xp.max(xp.where(mask, scores, -xp.inf), axis=1)
        above = xp.sum(xp.astype(scores > true_score[:, None], xp.int64), axis=1)
        return above < self.k

    def result(self) -> float:
        return float(self.hits) / self.n if self.n else float("nan")


class Confusion(Metric):
    """Precision, recall, F1 (``average``: binary, macro, micro, weighted) or balanced accuracy from
    a ``C x C`` confusion matrix of int64 counts (rows: true class, columns: predicted); weighted,
    of sums of weights in the logits' dtype (``confusion_matrix(sample_weight=...)``)."""

    accumulators = ("matrix",)

    def __init__(self, problem: str, score: str, average: str) -> None:
        super().__init__(problem)
        self.score, self.average = score, average

    def start(self, xp: Any, device: Any, dtype: Any) -> Metric:
        super().start(xp, device, dtype)
        self.matrix: Array | None = None
        return self

    def update(self, logits: Array, y: Array) -> None:
        xp = self.xp
        scores, labels = self._labels(logits, y)
        c = scores.shape[1]
        # 0/1 products summed in floats are exact below 2**24 per batch; the epoch sums are int64
        counts = xp.matmul(xp.matrix_transpose(self._one_hot(labels, c, scores.dtype)),
                           self._one_hot(xp.argmax(scores, axis=1), c, scores.dtype))
        counts = xp.astype(xp.round(counts), xp.int64)
        self.matrix = counts if self.matrix is None else self.matrix + counts
        self.n += y.shape[0]

    def update_weighted(self, logits: Array, y: Array, weights: Array, total: float) -> None:
        """Each cell the summed weight of its rows, as ``confusion_matrix(sample_weight=...)``."""
        xp = self.xp
        scores, labels = self._labels(logits, y)
        c = scores.shape[1]
        true = self._one_hot(labels, c, self.dtype) * self._weights(weights)[:, None]
        sums = xp.matmul(xp.matrix_transpose(true), self._one_hot(xp.argmax(scores, axis=1), c, self.dtype))
        self.matrix = sums if self.matrix is None else self._as_sums(self.matrix) + sums
        self.n += total

    def result(self) -> float:
        from ..backend import to_host

        if self.matrix is None:
            return float("nan")
        return confusion_score(np.asarray(to_host(self.matrix)), self.score, self.average)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0 where ``den`` is 0 (scikit-learn's ``zero_division`` default)."""
    return np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)


def confusion_score(matrix: np.ndarray, score: str, average: str) -> float:
    """A confusion-matrix score as scikit-learn computes it (labels: every class of the model);
    ``matrix``: counts, or sums of weights (a class of no weight is a class without samples)."""
    tp = np.diag(matrix).astype(np.float64)
    predicted, actual = matrix.sum(axis=0).astype(np.float64), matrix.sum(axis=1).astype(np.float64)
    if score == "balanced_accuracy":
        present = actual > 0
        return float(np.mean(tp[present] / actual[present])) if present.any() else 0.0
    if average == "micro":
        tp, predicted, actual = tp.sum(keepdims=True), predicted.sum(keepdims=True), actual.sum(keepdims=True)
    elif average == "binary":
        tp, predicted, actual = tp[1:2], predicted[1:2], actual[1:2]
    precision, recall = _ratio(tp, predicted), _ratio(tp, actual)
    values = {"precision": precision, "recall": recall,
              "f1": _ratio(2 * tp, predicted + actual)}[score]
    if average == "weighted":
        return float(np.sum(values * actual) / actual.sum()) if actual.sum() else 0.0
    return float(np.mean(values))


class RocAuc(Metric):
    """Exact ROC AUC: the epoch's scores (and weights, when weighted) stay on the device, ranked on
    the host at the end."""

    accumulators = ("scores", "labels", "weights")

    def __init__(self, problem: str, multiclass: bool) -> None:
        super().__init__(problem)
        self.multiclass = multiclass

    def start(self, xp: Any, device: Any, dtype: Any) -> Metric:
        super().start(xp, device, dtype)
        self.scores: list[Array] = []
        self.labels: list[Array] = []
        self.weights: list[Array] = []  # empty unless weighted
        return self

    def update(self, logits: Array, y: Array) -> None:
        self._keep(logits, y)
        self.n += y.shape[0]

    def update_weighted(self, logits: Array, y: Array, weights: Array, total: float) -> None:
        """``roc_auc_score(sample_weight=...)``: each row's weight kept beside its score."""
        self._keep(logits, y)
        self.weights.append(self._weights(weights))
        self.n += total

    def _keep(self, logits: Array, y: Array) -> None:
        """Append the batch's scores and labels."""
        xp = self.xp
        scores, labels = self._labels(logits, y)
        if self.multiclass:  # one-vs-rest ranks each class by its probability (softmax)
            shifted = xp.exp(scores - xp.max(scores, axis=1, keepdims=True))
            self.scores.append(shifted / xp.sum(shifted, axis=1, keepdims=True))
        else:  # binary: any increasing function of P(class 1) ranks alike
            self.scores.append(scores[:, 1] - scores[:, 0])
        self.labels.append(labels)

    def result(self) -> float:
        from ..backend import to_host

        if not self.scores:
            return float("nan")
        xp = self.xp
        scores = to_host(xp.concat(self.scores, axis=0)).astype(np.float64)
        labels = to_host(xp.concat(self.labels, axis=0))
        weights = to_host(xp.concat(self.weights, axis=0)).astype(np.float64) if self.weights else None
        if not self.multiclass:
            return rank_auc(scores, labels == 1, weights)
        aucs = [rank_auc(scores[:, c], labels == c, weights) for c in range(scores.shape[1])]
        defined = [a for a in aucs if not np.isnan(a)]
        return float(np.mean(defined)) if defined else float("nan")


def rank_auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray | None = None) -> float:
    """ROC AUC as the Mann-Whitney U statistic: the (weighted) share of positive-negative pairs
    ranked right, tied pairs counting one half -- the area under scikit-learn's ROC curve, whose
    steps through tied scores are diagonal.  A pair weighs ``w_i w_j`` (``sample_weight``); NaN
    without positive and negative weight."""
    w = np.ones(positive.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    _, inverse = np.unique(scores, return_inverse=True)
    inverse = inverse.reshape(-1)
    pos = np.bincount(inverse, weights=np.where(positive, w, 0.0))  # per distinct score, ascending
    neg = np.bincount(inverse, weights=np.where(positive, 0.0, w))
    w_pos, w_neg = float(pos.sum()), float(neg.sum())
    if not (w_pos > 0 and w_neg > 0):
        return float("nan")
    below = np.cumsum(neg) - neg  # negative weight strictly below each distinct score
    return float(np.sum(pos * (below + neg / 2.0)) / (w_pos * w_neg))


class NegLogLoss(Metric):
    """Minus the mean cross-entropy of the predicted class probabilities (softmax, or sigmoid
    for ``bce`` with one output)."""

    name = "neg_log_loss"
    accumulators = ("total",)

    def start(self, xp: Any, device: Any, dtype: Any) -> Metric:
        super().start(xp, device, dtype)
        self.total = xp.zeros((), dtype=dtype, device=device)
        return self

    def update(self, logits: Array, y: Array) -> None:
        self.total = self.total + self.xp.sum(self._losses(logits, y))
        self.n += y.shape[0]

    def update_weighted(self, logits: Array, y: Array, weights: Array, total: float) -> None:
        """``log_loss(sample_weight=...)``: the weighted sum, over the weight total."""
        self.total = self.total + self.xp.sum(self._weights(weights) * self._losses(logits, y))
        self.n += total

    def _losses(self, logits: Array, y: Array) -> Array:
        """Each row's cross-entropy, by log-sum-exp (finite for finite logits)."""
        xp = self.xp
        scores, labels = self._labels(logits, y)
        top = xp.max(scores, axis=1)
        log_norm = top + xp.log(xp.sum(xp.exp(scores - top[:, None]), axis=1))
        mask = self._one_hot(labels, scores.shape[1], xp.bool)
        return log_norm - xp.sum(xp.where(mask, scores, xp.zeros_like(scores)), axis=1)

    def result(self) -> float:
        return -float(self.total) / self.n if self.n else float("nan")


class Regression(Metric):
    """``r2``, ``neg_mean_absolute_error``, ``neg_mean_squared_error`` or
    ``neg_root_mean_squared_error``, per output then averaged uniformly over outputs; weighted,
    as scikit-learn's ``sample_weight`` (weighted sums over the weight total; R^2 about the
    weighted mean)."""

    accumulators = ("abs_err", "sq_err", "mean", "m2")

    def __init__(self, problem: str, score: str) -> None:
        super().__init__(problem)
        self.score = score

    def start(self, xp: Any, device: Any, dtype: Any) -> Metric:
        super().start(xp, device, dtype)
        self.abs_err: Array | None = None  # per output: sum |e|, sum e^2, mean of y, sum (y - mean)^2
        self.sq_err: Array | None = None
        self.mean: Array | None = None
        self.m2: Array | None = None
        return self

    def update(self, logits: Array, y: Array) -> None:
        xp = self.xp
        err = logits - y
        mean_b = xp.mean(y, axis=0)
        self.fold(xp.sum(xp.abs(err), axis=0), xp.sum(err * err, axis=0), mean_b,
                  xp.sum((y - mean_b) ** 2, axis=0), y.shape[0])

    def update_weighted(self, logits: Array, y: Array, weights: Array, total: float) -> None:
        """Weighted sums of ``|e|`` and ``e^2``, and the batch's weighted mean and spread of ``y``."""
        if not total > 0:  # a batch of no weight changes nothing (and has no mean)
            return
        xp = self.xp
        w = self._weights(weights)[:, None]
        err = logits - y
        mean_b = xp.sum(w * y, axis=0) / total
        self.fold(xp.sum(w * xp.abs(err), axis=0), xp.sum(w * err * err, axis=0), mean_b,
                  xp.sum(w * (y - mean_b) ** 2, axis=0), total)

    def fold(self, abs_err: Array, sq_err: Array, mean: Array, m2: Array, count: int | float) -> None:
        """Merge a summary of ``count`` samples (or that much weight): per output the sums of
        ``|e|`` and ``e^2``, the targets' mean and their summed squared deviations from it."""
        if self.abs_err is None or self.sq_err is None or self.mean is None or self.m2 is None:
            self.abs_err, self.sq_err, self.mean, self.m2, self.n = abs_err, sq_err, mean, m2, count
            return
        n, total = self.n, self.n + count
        delta = mean - self.mean  # Chan et al.: merge two (count, mean, M2) summaries exactly
        self.mean = self.mean + delta * (count / total)
        self.m2 = self.m2 + m2 + delta * delta * (n * count / total)
        self.abs_err, self.sq_err, self.n = self.abs_err + abs_err, self.sq_err + sq_err, total

    def result(self) -> float:
        from ..backend import to_host

        if self.abs_err is None or self.sq_err is None or self.m2 is None:
            return float("nan")
        if self.score == "neg_mean_absolute_error":
            return -float(np.mean(to_host(self.abs_err))) / self.n
        sq = to_host(self.sq_err).astype(np.float64)
        if self.score == "neg_mean_squared_error":
            return -float(np.mean(sq)) / self.n
        if self.score == "neg_root_mean_squared_error":
            return -float(np.mean(np.sqrt(sq / self.n)))
        m2 = to_host(self.m2).astype(np.float64)  # r2; a constant target scores 1 if fitted, else 0
        r2 = np.where(m2 > 0, 1.0 - sq / np.where(m2 > 0, m2, 1.0), np.where(sq == 0, 1.0, 0.0))
        return float(np.mean(r2))


@dataclass(frozen=True)
class Spec:
    """A registered metric: how to build it, whether higher is better, the problems it fits."""

    build: Callable[[str], Metric]
    greater_is_better: bool
    problems: tuple[str, ...]


_CLASSES = ("binary", "multiclass")


def _confusion(score: str, average: str) -> Spec:
    problems = ("binary",) if average == "binary" else _CLASSES
    return Spec(lambda p: Confusion(p, score, average), True, problems)


def _regression(score: str) -> Spec:
    return Spec(lambda p: Regression(p, score), True, ("regression",))


REGISTRY: dict[str, Spec] = {
    "accuracy": Spec(Accuracy, True, (*_CLASSES, "multilabel")),
    "top_k_accuracy": Spec(TopKAccuracy, True, _CLASSES),
    "balanced_accuracy": _confusion("balanced_accuracy", "macro"),
    **{f"{score}{suffix}": _confusion(score, average or "binary")
       for score in ("precision", "recall", "f1")
       for suffix, average in (("", None), ("_macro", "macro"), ("_micro", "micro"), ("_weighted", "weighted"))},
    "roc_auc": Spec(lambda p: RocAuc(p, multiclass=False), True, ("binary",)),
    "roc_auc_ovr": Spec(lambda p: RocAuc(p, multiclass=True), True, _CLASSES),
    "neg_log_loss": Spec(NegLogLoss, True, _CLASSES),
    **{name: _regression(name)
       for name in ("r2", "neg_mean_absolute_error", "neg_mean_squared_error", "neg_root_mean_squared_error")},
}


def check_names(names: Sequence[str], problem: str) -> tuple[str, ...]:
    """``names`` validated for ``problem``: unknown names and names that do not fit it raise
    ``ValueError`` with the valid choices."""
    for name in names:
        if name not in REGISTRY:
            raise ValueError(f"metrics contains {name!r}, which is unknown: use any of {', '.join(REGISTRY)}.")
        if problem not in REGISTRY[name].problems:
            fits = [n for n, s in REGISTRY.items() if problem in s.problems]
            raise ValueError(f"metric {name!r} does not apply to a {problem} problem (it needs "
                             f"{' or '.join(REGISTRY[name].problems)}): for this one use any of {', '.join(fits)}.")
    if len(set(names)) != len(names):
        raise ValueError(f"metrics={tuple(names)!r} names a metric twice: give each once.")
    return tuple(names)


def build(names: Sequence[str], problem: str) -> list[Metric]:
    """Fresh metric objects for ``names`` (already checked), each named by its key."""
    metrics = []
    for name in names:
        metric = REGISTRY[name].build(problem)
        metric.name, metric.greater_is_better = name, REGISTRY[name].greater_is_better
        metrics.append(metric)
    return metrics


def maximize(monitor: str) -> bool:
    """Whether a logged value improves upward: registered metrics (``val_`` prefix or not) by
    their ``greater_is_better``, losses downward, other names with ``acc`` in them upward."""
    name = monitor[4:] if monitor.startswith("val_") else monitor
    if name in REGISTRY:
        return REGISTRY[name].greater_is_better
    return "acc" in monitor and "loss" not in monitor
