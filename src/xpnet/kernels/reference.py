"""The reference kernel set: plain array-API math, valid on every namespace and device.

This is the specification.  Fused kernel sets (``cpu.py``, ``cuda.py``) subclass it and
override only the operations they accelerate, for the dtypes they handle, and must give
the same results.  Every kernel set writes its result into ``out=`` (``db_out=``) when one is
given, and returns it; the signatures are those of ``protocol.KernelSet``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np

from .._typing import Array
from ..dropout import keep_mask, keep_scale
from ..losses import dense_targets

if TYPE_CHECKING:
    from ..activations import Activation
    from ..backend import Backend
    from ..losses import Loss

F = TypeVar("F", bound=Callable[..., Any])


def counted(launches: int) -> Callable[[F], F]:
    """Decorator: the operation launches ``launches`` kernels; adds them to ``self.launches``.

    The one place a kernel set counts its launches (``xpnet bench`` reports them per step and
    tests pin them); the count is added after the operation returns.
    """

    def wrap(method: F) -> F:
        @functools.wraps(method)
        def run(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = method(self, *args, **kwargs)
            self.launches += launches
            return result

        run.launches = launches  # type: ignore[attr-defined]  # read by tests and bench, on the function
        return cast(F, run)

    return wrap


class ReferenceOps:
    name = "reference"

    def __init__(self, backend: Backend, dtype: str, tf32: bool = False) -> None:
        self.backend = backend
        self.xp = backend.xp
        self.dtype = dtype
        self.tf32 = bool(tf32)  # float32 matrix products in TF32 (CuPy only); fixed for this kernel set
        self.launches = 0  # fused kernel launches (the reference counts none)

    def configured(self, *, tf32: bool) -> ReferenceOps:
        """A new kernel set of the same kind for the same backend and dtype (nothing shared)."""
        return type(self)(self.backend, self.dtype, tf32=tf32)

    # -- allocation ----------------------------------------------------------------
    @property
    def uses_workspace(self) -> bool:
        """Whether ``out=`` buffers are honoured: True for every kernel set (kept for compatibility)."""
        return True

    def empty(self, shape: tuple[int, ...]) -> Array:
        return self.backend.zeros(shape, self.dtype)

    def zeros_like(self, a: Array) -> Array:
        return self.xp.zeros_like(a)

    def state_like(self, params: Array) -> Array:
        """A zeroed optimizer-state buffer for ``params`` (float32 for float16 params on the GPU)."""
        return self.xp.zeros_like(params)

    def fits_on_device(self, nbytes: int) -> bool:
        """Whether a data set of ``nbytes`` should live on the device (host memory: always)."""
        return True

    def stream_batches(self, X: Array, y: Array, order: Array,
                       batch_size: int) -> Iterator[tuple[int, int, Array, Array]]:
        """``(start, stop, x, y)`` batches of host arrays in ``order``, moved to the device one at a
        time (synchronously here; the GPU kernel set overlaps the copies with training)."""
        backend = self.backend
        for start in range(0, len(order), batch_size):
            stop = min(start + batch_size, len(order))
            idx = order[start:stop]
            yield start, stop, backend.from_host(np.take(X, idx, axis=0)), backend.from_host(np.take(y, idx, axis=0))

    def gather_rows(self, data: Array, idx: Array, key: str) -> Array:
        """``data[idx]`` (a mini-batch); fused sets write into a reused buffer named ``key``."""
        return self.xp.take(data, idx, axis=0)

    # -- precision casts (mixed precision) ------------------------------------------
    def cast(self, a: Array, key: str) -> Array:
        """``a`` in this kernel set's dtype (fused sets reuse a buffer named ``key``)."""
        return self.xp.astype(a, self.backend.dtype(self.dtype))

    def cast_into(self, src: Array, out: Array) -> None:
        out[...] = self.xp.astype(src, out.dtype)

    def scale_cast(self, a: Array, scale: float, key: str) -> Array:
        """``a * scale`` in this kernel set's dtype (the loss-scaled gradient in float16)."""
        return self.xp.astype(a * scale, self.backend.dtype(self.dtype))

    def unscale_into(self, grads16: Array, grads: Array, inv_scale: float) -> bool:
        """``grads = grads16 * inv_scale`` in the float32 buffer; True if any value is inf or NaN.

        Reading the flag back is one host synchronisation per step (as in torch's GradScaler).
        """
        xp = self.xp
        grads[...] = xp.astype(grads16, grads.dtype) * inv_scale
        return not bool(xp.all(xp.isfinite(grads16)))

    # -- layers --------------------------------------------------------------------
    def matmul(self, a: Array, b: Array, out: Array | None = None) -> Array:
        if self.tf32 and self.backend.kind == "cupy" and a.dtype == self.backend.lib.float32:
            from .cuda import matmul_tf32

            return matmul_tf32(self.backend.lib, a, b, out)
        return _into(out, a @ b)

    # -- input checks on the device ----------------------------------------------------
    def count_invalid(self, a: Array, kind: str, n_classes: int = 0) -> Array:
        """How many values of ``a`` are invalid: ``"finite"`` (NaN/inf), ``"probability"`` (outside
        [0, 1] or NaN) or ``"labels"`` (outside [0, n_classes)); a 0-d array on ``a``'s device."""
        xp = self.xp
        if kind == "labels":
            bad = (a < 0) | (a >= n_classes)
        elif kind == "probability":
            bad = ~((a >= 0) & (a <= 1))
        else:
            bad = ~xp.isfinite(a)
        return xp.sum(xp.astype(bad, xp.int64))

    def check_device_errors(self) -> None:
        """Raise what the kernels found on the device since the last check (nothing here)."""

    def bias_act(self, z: Array, b: Array, act: Activation, out: Array | None = None, dropout: float = 0.0,
                 dropout_key: int = 0, dropout_row: int = 0) -> tuple[Array, Array]:
        """``z + b`` and its activation; returns ``(pre_activation, activation)``.

        ``dropout > 0``: inverted dropout on the activation, the mask of ``xpnet.dropout.keep_mask``
        under ``dropout_key`` for rows from global row ``dropout_row`` on (dropped elements 0, kept
        ones times ``1 / (1 - dropout)``)."""
        z = z + b
        a = act.forward(self.xp, z)
        if dropout:
            a = self._dropped(a, dropout, dropout_key, dropout_row)
        return z, _into(out, a)

    def act_grad(self, g: Array, z: Array, a: Array, act: Activation, db_out: Array | None = None,
                 dropout: float = 0.0, dropout_key: int = 0, dropout_row: int = 0) -> tuple[Array, Array]:
        """``dz = g * f'(z)`` and its column sums (the bias gradient of that layer).

        ``dropout > 0``: ``a`` is the dropped activation, so ``f(z)`` is recomputed for ``f'``, and
        the forward's mask (recomputed from ``dropout_key`` and ``dropout_row``) and scale multiply ``dz``."""
        if dropout:
            dz = self._dropped(g * act.derivative(self.xp, z, act.forward(self.xp, z)), dropout, dropout_key,
                               dropout_row)
        else:
            dz = g * act.derivative(self.xp, z, a)
        return dz, _into(db_out, self.xp.sum(dz, axis=0))

    def _dropped(self, v: Array, p: float, key: int, first_row: int = 0) -> Array:
        """``v`` (rows from global row ``first_row`` on) with the dropout mask of ``key`` applied: kept
        elements times ``1 / (1 - p)``, the rest 0."""
        xp = self.xp
        keep = keep_mask(xp, (v.shape[0], v.shape[1]), p, key, device=self.backend.device, first_row=first_row)
        return xp.where(keep, v * keep_scale(p), xp.zeros_like(v))

    def bias_grad(self, dz: Array, out: Array | None = None) -> Array:
        return _into(out, self.xp.sum(dz, axis=0))

    # -- loss ----------------------------------------------------------------------
    def loss(self, loss: Loss, logits: Array, targets: Array, weights: Array | None = None) -> tuple[Array, Array]:
        """``(0-d loss, dL/dlogits)``; integer labels are expanded to one-hot rows here; ``weights``:
        per-row weights of a weighted mean (``xpnet.losses``)."""
        xp = self.xp
        if loss.integer_labels and targets.ndim == 1:
            targets = dense_targets(xp, targets, logits.shape[1], logits.dtype, self.backend.device)
        value, grad = loss.value_and_grad(xp, logits, targets, weights)
        return xp.asarray(value), grad  # NumPy reductions give scalars; keep a 0-d array

    # -- optimizers: one operation per update rule, the same signature on every kernel set --------
    # Arrays first (parameters, gradients, state buffers; a buffer an option does not use is None),
    # then numbers only, keyword-only.  ``grad_scale`` multiplies every gradient first: 1.0, or what
    # ``clip_scale`` returned (global-norm clipping fused into the update).  ``g`` is never written.
    def sgd(self, p: Array, g: Array, buf: Array | None, *, lr: float, momentum: float, dampening: float,
            weight_decay: float, nesterov: bool, first: bool, grad_scale: float | Array = 1.0) -> None:
        """``torch.optim.SGD``; ``first``: the first step, which fills ``buf`` with the gradient."""
        g = _scaled(g, grad_scale)
        if weight_decay:
            g = g + weight_decay * p
        if momentum:
            assert buf is not None, "SGD with momentum needs its buffer"
            if first:  # torch initialises the buffer with the first gradient
                buf[...] = g
            else:
                buf *= momentum
                buf += (1.0 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        p -= lr * g

    def adagrad(self, p: Array, g: Array, acc: Array, *, lr: float, weight_decay: float, eps: float,
                grad_scale: float | Array = 1.0) -> None:
        """``torch.optim.Adagrad``; ``lr`` is this step's decayed rate ``lr / (1 + (t - 1) * lr_decay)``."""
        g = _scaled(g, grad_scale)
        if weight_decay:
            g = g + weight_decay * p
        acc += g * g
        p -= lr * (g / (self.xp.sqrt(acc) + eps))

    def rmsprop(self, p: Array, g: Array, square_avg: Array, grad_avg: Array | None, buf: Array | None, *,
                lr: float, alpha: float, eps: float, weight_decay: float, momentum: float, centered: bool,
                grad_scale: float | Array = 1.0) -> None:
        """``torch.optim.RMSprop``; ``grad_avg`` is used when ``centered``, ``buf`` when ``momentum``."""
        xp = self.xp
        g = _scaled(g, grad_scale)
        if weight_decay:
            g = g + weight_decay * p
        square_avg *= alpha
        square_avg += (1.0 - alpha) * (g * g)
        if centered:
            assert grad_avg is not None, "centered RMSprop needs grad_avg"
            grad_avg += (1.0 - alpha) * (g - grad_avg)  # torch: grad_avg.lerp_(grad, 1 - alpha)
            avg = xp.sqrt(square_avg - grad_avg * grad_avg) + eps
        else:
            avg = xp.sqrt(square_avg) + eps
        if momentum:
            assert buf is not None, "RMSprop with momentum needs its buffer"
            buf *= momentum
            buf += g / avg
            p -= lr * buf
        else:
            p -= lr * (g / avg)

    def adam(self, p: Array, g: Array, m: Array, v: Array, vmax: Array | None, *, step_size: float, beta1: float,
             beta2: float, eps: float, l2: float, decay: float, bc2_sqrt: float, amsgrad: bool,
             grad_scale: float | Array = 1.0) -> None:
        """``torch.optim.Adam`` / ``AdamW``: ``p *= decay`` (AdamW's decoupled decay ``1 - lr * wd``, else 1),
        ``g += l2 * p`` (Adam's L2 term, else 0); ``step_size = lr / (1 - beta1**t)`` and
        ``bc2_sqrt = sqrt(1 - beta2**t)`` are the bias corrections; ``vmax`` is used when ``amsgrad``."""
        xp = self.xp
        g = _scaled(g, grad_scale)
        if decay != 1.0:
            p *= decay
        if l2:
            g = g + l2 * p
        m += (1.0 - beta1) * (g - m)  # torch: exp_avg.lerp_(grad, 1 - beta1)
        v *= beta2
        v += (1.0 - beta2) * (g * g)
        if amsgrad:
            assert vmax is not None, "AMSGrad needs vmax"
            vmax[...] = xp.maximum(vmax, v)
            v = vmax
        p -= step_size * (m / (xp.sqrt(v) / bc2_sqrt + eps))

    # -- gradient clipping ---------------------------------------------------------------
    def _norm_and_coef(self, grads: Array, max_norm: float) -> tuple[Array, Array]:
        xp = self.xp
        norm = xp.sqrt(xp.sum(grads * grads))
        return norm, xp.minimum(max_norm / (norm + 1e-6), xp.ones_like(norm))

    def clip_scale(self, grads: Array, max_norm: float) -> float | Array:
        """The factor ``min(max_norm / (||grads|| + 1e-6), 1)`` (torch's clip_grad_norm_ rule) that an
        optimizer operation's ``grad_scale`` takes; a 0-d array on the device (no host sync)."""
        return self._norm_and_coef(grads, max_norm)[1]

    def clip_grad_norm(self, grads: Array, max_norm: float) -> Array:
        """Scale ``grads`` in place by :meth:`clip_scale`; returns the norm before clipping (0-d)."""
        norm, coef = self._norm_and_coef(grads, max_norm)
        grads *= coef
        return norm


def _into(out: Array | None, value: Array) -> Array:
    """``value``, written into ``out`` when one is given (then ``out`` is returned)."""
    if out is None:
        return value
    out[...] = value
    return out


def _scaled(g: Array, grad_scale: float | Array) -> Array:
    """``g * grad_scale`` as a new array (``g`` itself when the scale is the number 1)."""
    if isinstance(grad_scale, (int, float)) and grad_scale == 1.0:
        return g
    return g * grad_scale
