"""Training precision: ``Trainer(..., precision="fp32" | "tf32" | "fp16" | "bf16")``.

* ``fp32`` -- the model's own dtype everywhere (the default).
* ``tf32`` -- float32, with the matrix products on NVIDIA tensor cores in TF32 (cuBLAS TF32
  compute); elsewhere float32.  On the CPU it warns once and runs float32.
* ``fp16`` -- mixed precision as in PyTorch AMP: a float16 copy of the weights, float16
  activations and matrix products, the loss and its gradient in float32, float32 master
  weights and optimizer in the model's flat buffers, and dynamic loss scaling
  (:class:`GradScaler`).  The same code runs on NumPy float16 on the CPU (slowly), which is
  how its logic is tested without a GPU.
* ``bf16`` -- mixed precision as ``torch.autocast(dtype=torch.bfloat16)`` without a GradScaler:
  a bfloat16 copy of the weights, bfloat16 activations and matrix products, the loss and its
  gradient in float32, float32 master weights and optimizer in the model's flat buffers, and
  no loss scaling (bfloat16 has float32's exponent range).  Arrays are ``ml_dtypes.bfloat16``:
  CuPy >= 14 on the GPU (fused kernels, bfloat16 storage, float32 compute), NumPy on the CPU
  (``kernels.bfloat16.BFloat16Ops``: slow, float32 compute, bfloat16 results), which is how its
  logic is tested without a GPU.  Refused with a clear error naming what to install when
  ``ml_dtypes`` is missing or CuPy is older than 14.

Each precision is a step strategy built from the model, loss, optimizer and kernel set (never
from the trainer): :class:`FP32Step` (fp32, and tf32 with a TF32-configured kernel set) and
:class:`MixedPrecisionStep` (fp16) and :class:`BF16Step` (bf16).  All offer ``forward_backward(x, y) -> (loss, logits)``
and ``update() -> bool``; :func:`step_for` picks one for a precision name.
"""

from __future__ import annotations

import functools
import warnings
from typing import TYPE_CHECKING, Any

from .._typing import Array
from ..optim.grad_scaler import GradScaler
from ..validation import check_choice

if TYPE_CHECKING:
    from ..kernels.protocol import KernelSet
    from ..losses import Loss
    from ..model import MLP
    from ..optim.optimizers import Optimizer
    from .trainer import Trainer

PRECISIONS = ("fp32", "tf32", "fp16", "bf16")


@functools.cache
def _warn_tf32_cpu() -> None:
    """Warn once per process (cached; no module flag).  ``_warn_tf32_cpu.cache_clear()`` re-arms it."""
    warnings.warn("precision='tf32' only changes matrix products on NVIDIA GPUs; on this backend it runs "
                  "float32.", RuntimeWarning, stacklevel=4)


def check_precision(precision: str, model: MLP) -> str:
    """Validate ``precision`` for ``model`` before anything is built."""
    check_choice("precision", precision, PRECISIONS)
    if precision in ("tf32", "fp16", "bf16") and model.dtype != "float32":
        raise ValueError(f"precision={precision!r} needs a float32 model (its float32 weights are the master "
                         f"copy), not {model.dtype}: build the MLP with dtype='float32'.")
    if precision == "tf32" and model.backend.kind != "cupy":
        _warn_tf32_cpu()
    if precision == "bf16":
        from ..backend import check_bfloat16

        check_bfloat16(model.backend)
    return precision


def _max_norm(clip_grad_norm: float | None) -> float | None:
    return None if clip_grad_norm is None else float(clip_grad_norm)


class FP32Step:
    """The step in the model's own dtype (``fp32``; ``tf32`` when ``ops`` is TF32-configured).

    ``ops`` is the caller's own kernel set (``model.ops.configured(tf32=...)``); nothing here
    writes to the model's, loss's or optimizer's attributes -- the model's buffers and the
    optimizer's state change only through their own methods."""

    scaler: GradScaler | None = None

    def __init__(self, model: MLP, loss: Loss, optimizer: Optimizer, ops: KernelSet,
                 clip_grad_norm: float | None = None) -> None:
        self.model, self.loss, self.optimizer, self.ops = model, loss, optimizer, ops
        self.max_norm = _max_norm(clip_grad_norm)

    def forward_backward(self, x: Array, y: Array, step: int | None = None,
                         weights: Array | None = None, first_row: int = 0) -> tuple[Array, Array]:
        """Loss (0-d, on the device) and logits of batch ``(x, y)``; gradients into ``model.grads``.
        ``step``: the training step, which draws the dropout masks (None: no dropout); ``weights``:
        per-row weights of the loss (``xpnet.losses``), or None; ``first_row``: the global-batch row
        that ``x`` starts at (a data-parallel share; its dropout masks)."""
        logits, tape = self.model.forward(x, tape=True, ops=self.ops, step=step, first_row=first_row)
        loss, dlogits = self.ops.loss(self.loss, logits, y, weights)
        self.model.backward(dlogits, tape, ops=self.ops)
        return loss, logits

    def update(self) -> bool:
        """One optimizer step from ``model.grads`` (clipped first if asked); always applied."""
        return self.apply(self.unscale_grads())

    def unscale_grads(self) -> bool:
        """Put the float32 unscaled gradients in ``model.grads`` (here already there); returns
        whether any is inf or NaN.  A gradient all-reduce goes between this and :meth:`apply`."""
        return False

    def apply(self, found_inf: bool) -> bool:
        """The optimizer step from ``model.grads`` (clipped first if asked), unless ``found_inf``."""
        if not found_inf:
            self.optimizer.step(self.model.params, self.model.grads, self.ops, self.max_norm)
        return not found_inf


class MixedPrecisionStep(FP32Step):
    """The fp16 training step: float16 copy of the weights, float16 forward and backward,
    float32 loss, float32 master update with dynamic loss scaling (:attr:`scaler`)."""

    def __init__(self, model: MLP, loss: Loss, optimizer: Optimizer, ops: KernelSet,
                 clip_grad_norm: float | None = None, scaler: GradScaler | None = None) -> None:
        from ..kernels import ops_for

        super().__init__(model, loss, optimizer, ops, clip_grad_norm)
        self.half = ops_for(model.backend, "float16", getattr(model, "kernels", None))
        self.params16 = self.half.empty((model.n_params,))
        self.grads16 = self.half.empty((model.n_params,))
        self.scaler: GradScaler = GradScaler() if scaler is None else scaler
        # data-parallel training sets this rank's share n_rank / n_global (with sample weights: its rows'
        # weight total over the global batch's): the float16 gradients are then those of the global mean
        # from the start, with one process's magnitudes (and overflows)
        self.grad_weight = 1.0

    def forward_backward(self, x: Array, y: Array, step: int | None = None,
                         weights: Array | None = None, first_row: int = 0) -> tuple[Array, Array]:
        m, half, ops = self.model, self.half, self.ops
        half.cast_into(m.params, self.params16)
        x16 = half.cast(x, "x16")
        logits16, tape = m.forward(x16, tape=True, params=self.params16, ops=half, step=step,
                                   first_row=first_row)
        logits = ops.cast(logits16, "logits32")  # the loss and its gradient in float32, as AMP does
        loss, dlogits = ops.loss(self.loss, logits, y, weights)
        dlogits16 = half.scale_cast(dlogits, self.scaler.scale * self.grad_weight, "dlogits16")
        m.backward(dlogits16, tape, params=self.params16, grads=self.grads16, ops=half)
        return loss, logits

    def update(self) -> bool:
        """Unscale the float16 gradients into the float32 buffer; step unless any is inf or NaN.
        Returns whether the step was applied."""
        return self.apply(self.unscale_grads())

    def unscale_grads(self) -> bool:
        return self.ops.unscale_into(self.grads16, self.model.grads, 1.0 / self.scaler.scale)

    def apply(self, found_inf: bool) -> bool:
        """Update the loss scale; step unless ``found_inf``."""
        self.scaler.update(found_inf)
        return super().apply(found_inf)


class BF16Step(FP32Step):
    """The bf16 training step (``torch.autocast(dtype=torch.bfloat16)``, no GradScaler): bfloat16
    copy of the weights, bfloat16 forward and backward, float32 loss and gradient of the loss,
    float32 master update.  No loss scaling, so every step is applied (:attr:`scaler` is None)."""

    def __init__(self, model: MLP, loss: Loss, optimizer: Optimizer, ops: KernelSet,
                 clip_grad_norm: float | None = None) -> None:
        from ..kernels import ops_for

        super().__init__(model, loss, optimizer, ops, clip_grad_norm)
        self.half = ops_for(model.backend, "bfloat16", getattr(model, "kernels", None))
        self.params16 = self.half.empty((model.n_params,))
        self.grads16 = self.half.empty((model.n_params,))

    def forward_backward(self, x: Array, y: Array, step: int | None = None,
                         weights: Array | None = None, first_row: int = 0) -> tuple[Array, Array]:
        m, half, ops = self.model, self.half, self.ops
        half.cast_into(m.params, self.params16)  # round the float32 master weights to bfloat16
        x16 = half.cast(x, "x16")
        logits16, tape = m.forward(x16, tape=True, params=self.params16, ops=half, step=step,
                                   first_row=first_row)
        logits = ops.cast(logits16, "logits32")  # the loss and its gradient in float32, as autocast does
        loss, dlogits = ops.loss(self.loss, logits, y, weights)
        dlogits16 = half.cast(dlogits, "dlogits16")
        m.backward(dlogits16, tape, params=self.params16, grads=self.grads16, ops=half)
        return loss, logits

    def unscale_grads(self) -> bool:
        """Widen the bfloat16 gradients into the float32 buffer (exact; no scale, never skipped);
        :meth:`update` then steps, always applied."""
        self.ops.cast_into(self.grads16, self.model.grads)
        return False


_STEPS: dict[str, type[FP32Step]] = {"fp16": MixedPrecisionStep, "bf16": BF16Step}


def step_for(precision: str, model: MLP, loss: Loss, optimizer: Optimizer, ops: KernelSet,
             clip_grad_norm: float | None = None) -> FP32Step:
    """The step strategy of a checked ``precision`` (see :func:`check_precision`); ``ops`` must
    already be TF32-configured for ``"tf32"``."""
    cls = _STEPS.get(precision, FP32Step)
    return cls(model, loss, optimizer, ops, clip_grad_norm)


class MixedPrecision(MixedPrecisionStep):
    """Deprecated: the old trainer-bound fp16 step; use :class:`MixedPrecisionStep`."""

    def __init__(self, trainer: Trainer) -> None:
        warnings.warn("xpnet.train.precision.MixedPrecision is deprecated: use MixedPrecisionStep(model, loss, "
                      "optimizer, ops, clip_grad_norm).", DeprecationWarning, stacklevel=2)
        super().__init__(trainer.model, trainer.loss, trainer.optimizer, trainer.ops, trainer.clip_grad_norm)

    def forward_backward(self, *args: Array, step: int | None = None,
                         weights: Array | None = None) -> tuple[Array, Array]:
        """``(x, y)``, or the old ``(trainer, x, y)``."""
        x, y = args[-2:]
        return super().forward_backward(x, y, step=step, weights=weights)

    def update(self, *args: Any) -> bool:
        """``()``, or the old ``(trainer, max_norm)`` (``max_norm`` then replaces the clip value)."""
        if len(args) == 2:
            self.max_norm = _max_norm(args[1])
        return super().update()
