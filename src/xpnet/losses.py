"""Losses, each computing its value and its gradient w.r.t. the logits in one call.

All use mean reduction, as ``torch.nn`` does.  The reference definitions take the
targets in *dense* form, the same shape as the logits: cross-entropy gets one-hot (or
probability) rows; :func:`dense_targets` turns integer labels into that form.
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
    # (xp, logits, dense_targets) -> (0-d loss, dL/dlogits)
    value_and_grad: Callable[[Namespace, Array, Array], tuple[Array, Array]]
    classification: bool  # targets are class labels (accuracy is meaningful)
    integer_labels: bool  # accepts integer class labels (converted to one-hot)


def _cross_entropy(xp: Namespace, logits: Array, targets: Array) -> tuple[Array, Array]:
    # Softmax and negative log-likelihood together, via log-sum-exp: stable for any logits.
    batch = logits.shape[0]
    shifted = logits - xp.max(logits, axis=1, keepdims=True)
    log_sum = xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))
    log_p = shifted - log_sum
    loss = -xp.sum(targets * log_p) / batch
    return loss, (xp.exp(log_p) - targets) / batch


def _mse(xp: Namespace, outputs: Array, targets: Array) -> tuple[Array, Array]:
    diff = outputs - targets
    n = diff.shape[0] * diff.shape[1]
    return xp.sum(diff * diff) / n, (2.0 / n) * diff


def _bce_with_logits(xp: Namespace, logits: Array, targets: Array) -> tuple[Array, Array]:
    # log(1 + exp(-|z|)) never overflows; same formula as torch.nn.BCEWithLogitsLoss.
    n = logits.shape[0] * logits.shape[1]
    zero = xp.zeros_like(logits)
    loss = xp.sum(xp.maximum(logits, zero) - logits * targets + xp.log1p(xp.exp(-xp.abs(logits)))) / n
    return loss, (sigmoid(xp, logits) - targets) / n


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
