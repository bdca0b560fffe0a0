"""Per-sample weights of ``Trainer.fit`` / ``evaluate``: ``sample_weight`` times ``class_weight``.

A row's weight ``w_i`` is its ``sample_weight`` (default 1) times its class's ``class_weight``
(``"balanced"``: scikit-learn's ``compute_class_weight``, ``n_samples / (n_classes * bincount)``
over the classes present; a dict ``{class: weight}``, classes not named weigh 1).  The loss is
the weighted mean ``sum w_i l_i / sum w_i`` (``xpnet.losses``), and every metric is weighted as
its ``sklearn.metrics`` function's ``sample_weight`` (``xpnet.train.metrics``; ``accuracy`` as
``accuracy_score(sample_weight=...)``).

Classes: integer labels (or the argmax of one-hot rows) for ``cross_entropy``, 0/1 for ``bce``
with one output.  ``class_weight`` is refused for ``mse`` (not a classification loss) and for
``bce`` with several outputs (multi-label: a row has no single class).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._typing import Array
from ..backend import to_host
from ..losses import Loss
from ..validation import check_class_weight, check_sample_weight


def balanced_class_weight(labels: np.ndarray) -> dict[int, float]:
    """scikit-learn's ``compute_class_weight("balanced", classes=np.unique(labels), y=labels)``."""
    classes, counts = np.unique(labels, return_counts=True)
    weights = labels.shape[0] / (classes.shape[0] * counts.astype(np.float64))
    return {int(c): float(w) for c, w in zip(classes, weights)}


def _class_labels(y: Array, loss: Loss, n_outputs: int) -> np.ndarray:
    """Each row's class (host int64) for ``class_weight``; refuses losses without one."""
    if not loss.classification:
        raise ValueError(f"class_weight is only for classification losses (cross_entropy, bce), not {loss.name}: "
                         "weight the samples with sample_weight instead.")
    if loss.name == "bce" and n_outputs != 1:
        raise ValueError(f"class_weight needs one class per row, but bce with {n_outputs} outputs is multi-label: "
                         "weight the samples with sample_weight instead.")
    host = np.asarray(to_host(y))
    if host.ndim == 1:
        return np.asarray(host, dtype=np.int64)
    if loss.name == "bce":
        return np.asarray(host[:, 0] > 0.5, dtype=np.int64)
    return np.asarray(np.argmax(host, axis=1), dtype=np.int64)


def row_weights(sample_weight: Any, class_weight: Any, y: Array, loss: Loss, n_outputs: int,
                names: tuple[str, str] = ("sample_weight", "class_weight")) -> np.ndarray | None:
    """The float64 host weight of each row of ``y`` (validated targets), or None when both are None."""
    n = int(y.shape[0])
    sw = check_sample_weight(sample_weight, n, names[0])
    n_classes = 2 if loss.name == "bce" else n_outputs
    cw = check_class_weight(class_weight, n_classes, names[1])
    if cw is None:
        return sw
    labels = _class_labels(y, loss, n_outputs)
    table = np.ones(n_classes, dtype=np.float64)
    chosen = balanced_class_weight(labels) if isinstance(cw, str) else cw
    for c, cw_c in chosen.items():
        table[c] = cw_c
    w: np.ndarray = table[labels] if sw is None else sw * table[labels]
    if not np.any(w > 0):
        raise ValueError(f"{names[0]} times {names[1]} is zero for every sample: at least one sample needs a "
                         "positive weight.")
    return w
