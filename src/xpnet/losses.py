"""Losses, each computing its value and its gradient w.r.t. the logits in one call.

All use mean reduction, as ``torch.nn`` does.  The reference definitions take the
targets in *dense* form, the same shape as the logits: cross-entropy gets one-hot (or
probability) rows; :func:`dense_targets` turns integer labels into that form.

Weights: each definition takes optional per-row ``weights`` ``w`` (the product of a sample's
``sample_weight`` and its class's ``class_weight``).  The loss is then the weighted mean
``sum_i w_i l_i / sum_i w_i`` -- torch's ``CrossEntropyLoss(weight=...)`` normalisation, used for
per-sample weights too -- where ``l_i`` is a row's loss (cross-entropy) or the mean of its
elements' losses (``mse``, ``bce``: a row's weight applies to each of its elements).  A batch whose
weights are all zero has loss 0 and gradient 0 (torch gives NaN there).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._typing import Array, Namespace
from .activations import sigmoid


@dataclass(frozen=True)
class Loss:
    name: str
    # (xp, logits, dense_targets, per-row weights or None) -> (0-d loss, dL/dlogits)
    value_and_grad: Callable[[Namespace, Array, Array, Array | None], tuple[Array, Array]]
    classification: bool  # targets are class labels (accuracy is meaningful)
    integer_labels: bool  # accepts integer class labels (converted to one-hot)


def weight_total(xp: Namespace, weights: Array, per_row: int) -> Array:
    """``sum(weights) * per_row`` as a 0-d array, or 1 where the weights are all zero (so a batch
    without weight divides nothing by zero: its loss and gradient are 0)."""
    total = xp.sum(weights) * per_row
    return xp.where(total > 0, total, xp.ones_like(total))


def _weighted(xp: Namespace, terms: Array, grads: Array, weights: Array) -> tuple[Array, Array]:
    """``sum_i w_i terms_i / total`` and ``w_i grads_i / total``: ``terms`` / ``grads`` are the
    per-element loss and derivative, unnormalised."""
    total = weight_total(xp, weights, terms.shape[1])
    w = xp.astype(weights, terms.dtype)[:, None]
    return xp.sum(w * terms) / total, (w * grads) / total


def _cross_entropy(xp: Namespace, logits: Array, targets: Array,
                   weights: Array | None = None) -> tuple[Array, Array]:
    # Softmax and negative log-likelihood together, via log-sum-exp: stable for any logits.
    batch = logits.shape[0]
    shifted = logits - xp.max(logits, axis=1, keepdims=True)
    log_sum = xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))
    log_p = shifted - log_sum
    if weights is not None:
        value, grad = _weighted(xp, -xp.sum(targets * log_p, axis=1, keepdims=True), xp.exp(log_p) - targets,
                                weights)
        return value, grad
    loss = -xp.sum(targets * log_p) / batch
    return loss, (xp.exp(log_p) - targets) / batch


def _mse(xp: Namespace, outputs: Array, targets: Array, weights: Array | None = None) -> tuple[Array, Array]:
    diff = outputs - targets
    if weights is not None:
        return _weighted(xp, diff * diff, 2.0 * diff, weights)
    n = diff.shape[0] * diff.shape[1]
    return xp.sum(diff * diff) / n, (2.0 / n) * diff


def _bce_with_logits(xp: Namespace, logits: Array, targets: Array,
                     weights: Array | None = None) -> tuple[Array, Array]:
    # log(1 + exp(-|z|)) never overflows; same formula as torch.nn.BCEWithLogitsLoss.
    n = logits.shape[0] * logits.shape[1]
    zero = xp.zeros_like(logits)
    terms = xp.maximum(logits, zero) - logits * targets + xp.log1p(xp.exp(-xp.abs(logits)))
    if weights is not None:
        return _weighted(xp, terms, sigmoid(xp, logits) - targets, weights)
    return xp.sum(terms) / n, (sigmoid(xp, logits) - targets) / n


LOSSES: dict[str, Loss] = {
    "cross_entropy": Loss("cross_entropy", _cross_entropy, classification=True, integer_labels=True),
    "mse": Loss("mse", _mse, classification=False, integer_labels=False),
    "bce": Loss("bce", _bce_with_logits, classification=True, integer_labels=False),
}


def get_loss(name: str) -> Loss:
    """Look up a loss by name; unknown names list the valid ones."""
    if not isinstance(name, str) or name not in LOSSES:
        raise ValueError(f"loss={name!r} is unknown: use one of {', '.join(LOSSES)}.")
    return LOSSES[name]


def dense_targets(xp: Namespace, labels: Array, n_classes: int, dtype: Any, device: Any) -> Array:
    """Integer labels ``(B,)`` -> one-hot rows ``(B, n_classes)`` on ``device``."""
    classes = xp.arange(n_classes, dtype=labels.dtype, device=device)
    return xp.astype(labels[:, None] == classes[None, :], dtype)


def labels_outside_message(count: int | str, n_classes: int, name: str = "y") -> str:
    """The error for labels outside ``[0, n_classes)`` found by a loss kernel or a device check."""
    return (f"{name} has {count} label(s) outside [0, {n_classes - 1}], but the model has {n_classes} outputs: "
            f"labels must lie in [0, {n_classes - 1}]; encode them as 0..n_classes-1.")
