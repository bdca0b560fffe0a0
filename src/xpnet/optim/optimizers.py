"""Optimizers with ``torch.optim`` semantics over flat parameter buffers, plus clipping.

Names, defaults and update rules follow ``torch.optim`` exactly (single-tensor, non-
``maximize`` variants), so the same hyperparameters give the same weights step for step.
Each optimizer keeps its state (momentum, moments, ...) as flat buffers shaped like the
flat parameter buffer; one update touches everything at once, so a fused kernel can do
the whole step in a single pass.  Each optimizer computes its host-side scalars (bias
corrections, decayed rates) and calls ONE operation of the kernel set -- ``ops.sgd``,
``ops.adagrad``, ``ops.rmsprop`` or ``ops.adam`` -- whose signature is the same on every
kernel set (``xpnet.kernels.protocol.KernelSet``); the reference math is in
``xpnet.kernels.reference``.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

from .._typing import Array, Namespace
from ..validation import HyperparameterError, check_bool, check_int, check_real, invalid

if TYPE_CHECKING:
    from ..backend import Backend
    from ..kernels.protocol import KernelSet


def _nonneg(name: str, value: Any) -> float:
    return check_real(name, value, low=0)


def _betas(betas: Any) -> tuple[float, float]:
    """Adam's ``betas``: a pair of numbers, each in [0, 1) (as torch.optim.Adam)."""
    if isinstance(betas, str) or not hasattr(betas, "__len__") or len(betas) != 2:
        raise invalid("betas", betas, "use a pair (beta1, beta2) of numbers in [0, 1), e.g. (0.9, 0.999)")
    beta1, beta2 = (check_real(f"betas[{i}]", b, low=0, high=1, high_open=True) for i, b in enumerate(betas))
    return beta1, beta2


class Optimizer:
    """Base class: holds hyperparameters, the step count and flat state buffers.

    Subclasses define ``rule`` (the update rule's name), ``state_names`` and ``_update``,
    which calls one kernel operation (``ops.adam``, ...) with this step's scalars.
    Hyperparameters are plain Python floats so NumPy never promotes float32 to float64.
    """

    rule = ""
    state_names: tuple[str, ...] = ()
    initial_lr: float  # set by the first LR scheduler attached (absent until then)

    def __init__(self, lr: float, **hparams: Any) -> None:
        self.lr = lr
        self.hparams = hparams
        self.step_count = 0
        self.state: dict[str, Array] = {}

    @property
    def lr(self) -> float:
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:  # checked on every assignment: a scheduler or user cannot set NaN
        self._lr = _nonneg("lr", value)

    # -- the public step -----------------------------------------------------------
    def step(self, params: Array, grads: Array, ops: KernelSet, max_norm: float | None = None) -> None:
        """Update ``params`` in place from ``grads`` (flat buffers) with kernel set ``ops``.

        ``max_norm`` clips the gradients' global L2 norm first (fused into the update where
        the kernel set allows).
        """
        if not self.state:
            self.state = {name: self._initial_state(name, params, ops) for name in self.state_names}
        self.step_count += 1
        grad_scale = 1.0 if max_norm is None else ops.clip_scale(grads, float(max_norm))
        self._update(ops, params, grads, grad_scale)

    def _update(self, ops: KernelSet, params: Array, grads: Array, grad_scale: float | Array) -> None:
        """One call of this optimizer's kernel operation (``ops.<rule>``) over the flat buffers."""
        if type(self)._reference is not Optimizer._reference:  # a subclass of the old interface
            warnings.warn(f"{type(self).__name__}._reference is deprecated: override _update and call one kernel "
                          "operation (see CONTRIBUTING.md, 'Adding an optimizer').", DeprecationWarning, stacklevel=3)
            if not (isinstance(grad_scale, (int, float)) and grad_scale == 1.0):
                grads = grads * grad_scale
            self._reference(ops.xp, params, grads, self.state, self.scalars())
            return
        raise NotImplementedError(f"{type(self).__name__} defines no _update")

    def scalars(self) -> dict[str, Any]:
        """Host-side scalars of this step (bias corrections folded in), fed to the kernel."""
        return dict(lr=self.lr, step=float(self.step_count), **self.hparams)

    def _initial_state(self, name: str, params: Array, ops: KernelSet) -> Array:
        return ops.state_like(params)

    # deprecated extension point (see _update)
    def _reference(self, xp: Namespace, p: Array, g: Array, state: dict[str, Array], s: dict[str, Any]) -> None:
        raise NotImplementedError

    # -- checkpointing ------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Hyperparameters, step count and state buffers (as host NumPy arrays)."""
        from ..backend import to_host

        return {
            "type": type(self).__name__,
            "lr": self.lr,
            "hparams": dict(self.hparams),
            "step_count": self.step_count,
            "state": {k: to_host(v).copy() for k, v in self.state.items()},
        }

    @classmethod
    def _init_kwargs(cls, hparams: dict[str, Any]) -> dict[str, Any]:
        """Constructor arguments that rebuild ``hparams`` (Adam stores ``betas`` as two entries)."""
        return dict(hparams)

    def load_state_dict(self, state: dict[str, Any], backend: Backend | None = None) -> None:
        """Restore :meth:`state_dict`'s output; everything is checked before anything changes."""
        name = type(self).__name__
        if not isinstance(state, dict):
            raise invalid("state_dict", type(state).__name__, "pass the dict that state_dict() returned")
        if state.get("type") != name:
            raise ValueError(f"state_dict is for {state.get('type')!r}, not {name}.")
        missing = [k for k in ("lr", "hparams", "step_count", "state") if k not in state]
        if missing:
            raise ValueError(f"state_dict lacks {', '.join(missing)}: pass the dict that {name}.state_dict() returned.")
        hparams = state["hparams"]
        if not isinstance(hparams, dict) or set(hparams) != set(self.hparams):
            keys = sorted(hparams) if isinstance(hparams, dict) else hparams
            raise ValueError(f"state_dict['hparams'] has keys {keys!r}; {name} needs {sorted(self.hparams)}.")
        try:  # the constructor's checks, on a throwaway instance (no buffers are allocated)
            probe = type(self)(lr=state["lr"], **self._init_kwargs(hparams))
        except ValueError as exc:
            raise ValueError(f"state_dict holds an invalid hyperparameter for {name}: {exc}") from None
        step_count = check_int("state_dict['step_count']", state["step_count"], low=0)
        buffers = state["state"]
        if not isinstance(buffers, dict) or (buffers and set(buffers) != set(probe.state_names)):
            names = sorted(buffers) if isinstance(buffers, dict) else buffers
            raise ValueError(f"state_dict['state'] has buffers {names!r}; {probe!r} keeps {sorted(probe.state_names)}.")
        self.lr, self.hparams, self.state_names = probe.lr, probe.hparams, probe.state_names
        self.step_count = step_count
        self.state = {k: (backend.from_host(v) if backend else v) for k, v in buffers.items()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in {"lr": self.lr, **self.hparams}.items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """``torch.optim.SGD``: momentum, dampening, L2 weight decay and Nesterov momentum."""

    rule = "sgd"

    def __init__(self, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False) -> None:
        momentum, dampening = _nonneg("momentum", momentum), check_real("dampening", dampening)
        nesterov = check_bool("nesterov", nesterov)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov=True needs momentum > 0 and dampening = 0 (as in torch.optim.SGD).")
        super().__init__(_nonneg("lr", lr), momentum=momentum, dampening=dampening,
                         weight_decay=_nonneg("weight_decay", weight_decay), nesterov=nesterov)
        self.state_names = ("momentum_buffer",) if momentum else ()

    def _update(self, ops: KernelSet, p: Array, g: Array, grad_scale: float | Array) -> None:
        h = self.hparams
        ops.sgd(p, g, self.state.get("momentum_buffer"), lr=self.lr, momentum=h["momentum"],
                dampening=h["dampening"], weight_decay=h["weight_decay"], nesterov=h["nesterov"],
                first=self.step_count == 1, grad_scale=grad_scale)


class Adagrad(Optimizer):
    """``torch.optim.Adagrad``."""

    rule = "adagrad"
    state_names = ("sum",)

    def __init__(self, lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10) -> None:
        super().__init__(_nonneg("lr", lr), lr_decay=_nonneg("lr_decay", lr_decay),
                         weight_decay=_nonneg("weight_decay", weight_decay),
                         initial_accumulator_value=_nonneg("initial_accumulator_value", initial_accumulator_value),
                         eps=_nonneg("eps", eps))

    def _initial_state(self, name: str, params: Array, ops: KernelSet) -> Array:
        buf = ops.state_like(params)
        buf += self.hparams["initial_accumulator_value"]
        return buf

    def scalars(self) -> dict[str, Any]:
        s = super().scalars()
        s["clr"] = self.lr / (1.0 + (self.step_count - 1) * s["lr_decay"])
        return s

    def _update(self, ops: KernelSet, p: Array, g: Array, grad_scale: float | Array) -> None:
        s = self.scalars()
        ops.adagrad(p, g, self.state["sum"], lr=s["clr"], weight_decay=s["weight_decay"], eps=s["eps"],
                    grad_scale=grad_scale)


class RMSprop(Optimizer):
    """``torch.optim.RMSprop``, including ``centered`` and ``momentum``."""

    rule = "rmsprop"

    def __init__(self, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
                 momentum: float = 0.0, centered: bool = False) -> None:
        # torch only asks alpha >= 0, but alpha > 1 makes (1 - alpha) negative and square_avg with it
        super().__init__(_nonneg("lr", lr), alpha=check_real("alpha", alpha, low=0, high=1), eps=_nonneg("eps", eps),
                         weight_decay=_nonneg("weight_decay", weight_decay), momentum=_nonneg("momentum", momentum),
                         centered=check_bool("centered", centered))
        self.state_names = (("square_avg",) + (("grad_avg",) if centered else ())
                            + (("momentum_buffer",) if momentum else ()))

    def _update(self, ops: KernelSet, p: Array, g: Array, grad_scale: float | Array) -> None:
        h, st = self.hparams, self.state
        ops.rmsprop(p, g, st["square_avg"], st.get("grad_avg"), st.get("momentum_buffer"), lr=self.lr,
                    alpha=h["alpha"], eps=h["eps"], weight_decay=h["weight_decay"], momentum=h["momentum"],
                    centered=h["centered"], grad_scale=grad_scale)


class Adam(Optimizer):
    """``torch.optim.Adam`` (L2 weight decay added to the gradient; optional AMSGrad)."""

    rule = "adam"
    decoupled = False

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False) -> None:
        beta1, beta2 = _betas(betas)
        super().__init__(_nonneg("lr", lr), beta1=beta1, beta2=beta2, eps=_nonneg("eps", eps),
                         weight_decay=_nonneg("weight_decay", weight_decay), amsgrad=check_bool("amsgrad", amsgrad))
        self.state_names = ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if amsgrad else ())

    @classmethod
    def _init_kwargs(cls, hparams: dict[str, Any]) -> dict[str, Any]:
        kwargs = dict(hparams)
        kwargs["betas"] = (kwargs.pop("beta1"), kwargs.pop("beta2"))
        return kwargs

    def scalars(self) -> dict[str, Any]:
        s = super().scalars()
        t = self.step_count
        s["step_size"] = self.lr / (1.0 - s["beta1"] ** t)  # bias corrections as host scalars
        s["bias_correction2_sqrt"] = math.sqrt(1.0 - s["beta2"] ** t)
        s["decay_factor"] = 1.0 - self.lr * s["weight_decay"] if self.decoupled else 1.0
        return s

    def _update(self, ops: KernelSet, p: Array, g: Array, grad_scale: float | Array) -> None:
        s, st = self.scalars(), self.state
        ops.adam(p, g, st["exp_avg"], st["exp_avg_sq"], st.get("max_exp_avg_sq"), step_size=s["step_size"],
                 beta1=s["beta1"], beta2=s["beta2"], eps=s["eps"], l2=0.0 if self.decoupled else s["weight_decay"],
                 decay=s["decay_factor"], bc2_sqrt=s["bias_correction2_sqrt"], amsgrad=s["amsgrad"],
                 grad_scale=grad_scale)


class AdamW(Adam):
    """``torch.optim.AdamW``: decoupled weight decay ``p *= 1 - lr * weight_decay``."""

    rule = "adamw"
    decoupled = True

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False) -> None:
        super().__init__(lr, betas, eps, weight_decay, amsgrad)


OPTIMIZERS = {cls.__name__.lower(): cls for cls in (SGD, Adagrad, RMSprop, Adam, AdamW)}


def get_optimizer(optimizer: Optimizer | str | None, lr: float | None = None) -> Optimizer:
    """An optimizer instance from an instance, or a name (``"adam"``) plus ``lr``."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if optimizer is None:
        optimizer = "adam"
    if not isinstance(optimizer, str) or optimizer.lower() not in OPTIMIZERS:
        raise HyperparameterError(f"optimizer={optimizer!r} is unknown: use one of {', '.join(OPTIMIZERS)} "
                                  "or an instance such as xpnet.optim.Adam(lr=1e-3).")
    cls = OPTIMIZERS[optimizer.lower()]
    return cls() if lr is None else cls(lr=lr)


def clip_grad_norm_(grads: Array, max_norm: float, ops: KernelSet) -> Array:
    """Scale the flat gradient buffer in place so its global L2 norm is at most ``max_norm``.

    Same rule as ``torch.nn.utils.clip_grad_norm_`` (coefficient ``max_norm / (norm + 1e-6)``
    clamped to 1).  Stays on the device: returns the norm as a 0-d array, no host sync.
    """
    return ops.clip_grad_norm(grads, float(max_norm))
