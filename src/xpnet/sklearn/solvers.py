"""scikit-learn's stochastic solvers (``solver="sgd"`` / ``"adam"`` with ``learning_rate``), with its exact
update rules, run by xpnet's fused optimizer kernels.

scikit-learn's SGD keeps learning-rate-scaled velocities (``v = momentum * v - lr * g``), xpnet's (torch's)
keeps a buffer of gradients (``b = momentum * b + g``, step ``-lr * b``): the two are the same update while
the learning rate is constant, and :meth:`SklearnSGD.set_lr` rescales the buffer by ``old / new`` when it
changes (``invscaling``, ``adaptive``), which keeps them equal after a change too.  scikit-learn's Adam adds
``epsilon`` to ``sqrt(v)`` before the bias correction of ``v`` (torch after it): :class:`SklearnAdam` feeds
the Adam kernel the bias corrections that give scikit-learn's placement.
"""

from __future__ import annotations

from typing import Any

from ..optim import OPTIMIZERS
from ..optim.optimizers import SGD, Adam, Optimizer

SKLEARN_SOLVERS = ("sgd", "adam")
XPNET_SOLVERS = ("adamw", "rmsprop", "adagrad")  # xpnet's own, with torch.optim's defaults


class SklearnSGD(SGD):
    """``torch.optim.SGD`` whose learning rate can change as scikit-learn's does (see the module)."""

    def set_lr(self, lr: float) -> None:
        buffer = self.state.get("momentum_buffer")
        if buffer is not None and lr > 0:  # scikit-learn's velocity is -lr * buffer: keep it
            buffer *= self.lr / lr
        self.lr = lr


class SklearnAdam(Adam):
    """Adam with scikit-learn's epsilon: ``p -= lr * sqrt(1 - beta2**t) / (1 - beta1**t) * m / (sqrt(v) + eps)``."""

    def scalars(self) -> dict[str, Any]:
        s = super().scalars()
        s["step_size"] *= s["bias_correction2_sqrt"]
        s["bias_correction2_sqrt"] = 1.0
        return s


def make_solver(est: Any) -> Optimizer:
    """The optimizer of an estimator's ``solver`` and its hyperparameters (scikit-learn's meaning)."""
    lr = float(est.learning_rate_init)
    if est.solver == "sgd":
        momentum = float(est.momentum)
        return SklearnSGD(lr=lr, momentum=momentum, nesterov=bool(est.nesterovs_momentum) and momentum > 0)
    if est.solver == "adam":
        return SklearnAdam(lr=lr, betas=(float(est.beta_1), float(est.beta_2)), eps=float(est.epsilon))
    return OPTIMIZERS[est.solver](lr=lr)


class LearningRate:
    """scikit-learn's ``learning_rate`` for ``solver="sgd"``: ``"constant"``; ``"invscaling"``
    (``lr = learning_rate_init / (t + 1) ** power_t`` after each epoch, ``t`` the samples seen);
    ``"adaptive"`` (divided by 5 each time the loss or validation score stalls, stopping once it is
    at most 1e-6).  Other solvers keep ``learning_rate_init`` and stop at the first stall."""

    def __init__(self, optimizer: Optimizer, rule: str, lr_init: float, power_t: float) -> None:
        self.optimizer = optimizer
        self.rule = rule if isinstance(optimizer, SklearnSGD) else "constant"
        self.lr_init, self.power_t = float(lr_init), float(power_t)

    def _set(self, lr: float) -> None:
        opt = self.optimizer
        assert isinstance(opt, SklearnSGD)
        opt.set_lr(lr)

    def iteration_ends(self, samples_seen: int) -> None:
        if self.rule == "invscaling":
            self._set(self.lr_init / (samples_seen + 1) ** self.power_t)

    def trigger_stopping(self, message: str, verbose: bool) -> bool:
        """Whether a stall ends training (``message`` says which stall); ``adaptive`` lowers the rate instead."""
        if self.rule != "adaptive":
            if verbose:
                print(message + " Stopping.")
            return True
        if self.optimizer.lr <= 1e-6:
            if verbose:
                print(message + " Learning rate too small. Stopping.")
            return True
        self._set(self.optimizer.lr / 5.0)
        if verbose:
            print(message + f" Setting learning rate to {self.optimizer.lr:f}")
        return False
