"""scikit-learn's MLP objective on xpnet's losses: output activation, loss scale and the L2 penalty.

scikit-learn minimises, per mini-batch, ``loss + alpha / 2 * sum ||W||^2 / sum(w)`` (weights only, not
intercepts; ``sum(w)`` the batch's sample weights, or its size), with

* ``"softmax"`` outputs (multiclass): the cross-entropy -- xpnet's ``cross_entropy`` (its gradient; the
  value scikit-learn reports clips the probabilities to ``[eps, 1 - eps]``, :meth:`Objective.value`);
* ``"logistic"`` outputs (binary, multilabel): the binary log-loss SUMMED over the k outputs -- k times
  xpnet's ``bce`` (a mean over them) in the gradient (the value is clipped as above);
* ``"identity"`` outputs (regression): half the squared error, its value averaged over the k outputs
  (half xpnet's ``mse``) but its gradient that of the sum over them (k / 2 times xpnet's).

:class:`Objective` holds those scales; :meth:`Objective.finish_gradients` turns xpnet's gradient of a batch
into scikit-learn's (scale, then the penalty's ``alpha / sum(w) * W``) and returns the penalty's value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .._typing import Array
from ..activations import sigmoid

# scikit-learn's hidden-layer activations, by xpnet's name; xpnet's others keep their names
SKLEARN_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}


@dataclass(frozen=True)
class Objective:
    out_activation: str  # scikit-learn's out_activation_: "softmax", "logistic" or "identity"
    loss: str  # xpnet's loss
    grad_scale: float  # scikit-learn's gradient / xpnet's
    alpha: float

    @classmethod
    def for_outputs(cls, out_activation: str, n_outputs: int, alpha: float) -> Objective:
        if out_activation == "softmax":
            return cls(out_activation, "cross_entropy", 1.0, alpha)
        if out_activation == "logistic":
            return cls(out_activation, "bce", float(n_outputs), alpha)
        return cls(out_activation, "mse", n_outputs / 2.0, alpha)

    def finish_gradients(self, model: Any, weight_sum: float) -> Array | float:
        """Make ``model.grads`` (xpnet's gradient of the batch) scikit-learn's and return the L2 penalty's
        value (0 without ``alpha``, and for a batch of zero total weight, whose gradient is 0)."""
        if self.grad_scale != 1.0:
            model.grads *= self.grad_scale
        if self.alpha == 0.0 or weight_sum <= 0.0:
            return 0.0
        xp, c = model.backend.xp, self.alpha / weight_sum
        total: Array | float = 0.0
        for s in model.slots:
            W = model.params[s.w_start:s.b_start]
            model.grads[s.w_start:s.b_start] += c * W
            total = total + xp.vecdot(W, W)
        return (0.5 * c) * total

    def value(self, xp: Any, logits: Array, targets: Array, weights: Array | None, weight_sum: float,
              fused_value: Array) -> Array | float:
        """scikit-learn's loss of a batch (without the penalty), on the device: for probabilities, computed as
        it does, clipped to ``[eps, 1 - eps]`` (which bounds the loss of saturated outputs); for values, half
        xpnet's ``mse`` (``fused_value``)."""
        if self.out_activation == "identity":
            return fused_value * 0.5
        if weight_sum <= 0.0:
            return 0.0  # xpnet's convention for a batch without weight (scikit-learn divides by zero)
        eps = float(np.finfo(np.dtype(str(logits.dtype))).eps)
        if self.out_activation == "softmax":
            p = xp.exp(logits - xp.max(logits, axis=1, keepdims=True))
            p = xp.clip(p / xp.sum(p, axis=1, keepdims=True), eps, 1.0 - eps)
            per_row = -xp.sum(targets * xp.log(p), axis=1)
        else:
            p = xp.clip(sigmoid(xp, logits), eps, 1.0 - eps)
            per_row = -xp.sum(targets * xp.log(p) + (1.0 - targets) * xp.log(1.0 - p), axis=1)
        if weights is None:
            return xp.sum(per_row) / per_row.shape[0]
        return xp.sum(xp.astype(weights, per_row.dtype) * per_row) / weight_sum

    def outputs(self, logits: np.ndarray) -> np.ndarray:
        """scikit-learn's network outputs (``_forward_pass_fast``) from xpnet's logits, on the host."""
        if self.out_activation == "softmax":
            shifted = logits - logits.max(axis=1, keepdims=True)
            p = np.exp(shifted)
            return p / p.sum(axis=1, keepdims=True)
        if self.out_activation == "logistic":  # stable for either sign of the logit
            e = np.exp(-np.abs(logits))
            return np.where(logits >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        return logits
