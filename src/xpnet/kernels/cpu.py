"""Fused CPU kernels (Numba) for NumPy float32 / float64 arrays.

Each hot elementwise step is one pass over memory instead of NumPy's chain of temporaries:
bias add + activation, activation derivative x upstream gradient + bias-gradient column sums,
softmax cross-entropy (and MSE, BCE) value + gradient, and every optimizer over the whole
flat parameter buffer.  Kernels are compiled lazily on first use and cached on disk
(``cache=True``), so ``import xpnet`` never waits on the compiler.  Activation math comes
from the ``scalar`` form in ``xpnet.activations`` -- the same registry as the reference.

Every kernel is written once with ``prange`` and compiled in two variants: serial (the
default) and ``parallel=True`` (used for arrays of at least ``parallel_min`` elements by a
``NumbaOps(..., parallel=True)``; ``parallel`` defaults to ``XPNET_CPU_PARALLEL=1`` in the
environment when the kernel set is built).  Why serial by default, measured on the 2-core reference machine
(docs/performance.md): the serial kernels vectorise (``error_model="numpy"``) and already
saturate memory bandwidth -- the fused Adam step over 1.9 M parameters takes the same time
serial or parallel -- while a parallel launch costs 20-90 us and, with Numba's OpenMP layer,
stalls for milliseconds right after an OpenBLAS call whose threads are still spinning.
"""

from __future__ import annotations

import math
import os
import types
from typing import TYPE_CHECKING, Any

import numba
import numpy as np
from numba import njit, prange

from .._typing import Array
from ..activations import get_activation, sigmoid_scalar
from ..dropout import element_hash, first_element, keep_scale, keep_threshold
from ..losses import labels_outside_message
from .buffered import BufferedOps, counted

if TYPE_CHECKING:
    from ..activations import Activation
    from ..losses import Loss

_JIT: dict[str, Any] = dict(cache=True, nogil=True, error_model="numpy")  # numpy error model: no checks, vectorises
PARALLEL_MIN = 1 << 18  # elements; below this a thread launch costs more than it saves (the default)
_compiled: dict[tuple[str, str], object] = {}  # compiled-kernel caches (never configuration)
_scalar_jit: dict[object, object] = {}
_IDENTITY = get_activation("identity")


def parallel_from_env() -> bool:
    """``XPNET_CPU_PARALLEL=1``: the default of ``NumbaOps(parallel=...)``, read when a kernel set is built."""
    return os.environ.get("XPNET_CPU_PARALLEL", "0") == "1"


def jit_scalar(fn):
    """``fn`` (a registry's scalar form) compiled for use inside the kernels.

    The plain-Python helpers it calls from its own module (``sigmoid_scalar``, ...) are compiled
    the same way and bound into a copy of its globals: nothing in the registry's module changes.
    """
    jitted = _scalar_jit.get(fn)
    if jitted is None:
        scope = dict(fn.__globals__)
        for name in fn.__code__.co_names:
            helper = scope.get(name)
            if isinstance(helper, types.FunctionType) and helper.__module__ == fn.__module__:
                scope[name] = jit_scalar(helper)
        clone = types.FunctionType(fn.__code__, scope, fn.__name__, fn.__defaults__, fn.__closure__)
        jitted = _scalar_jit[fn] = njit(inline="always")(clone)
    return jitted


class _Kernel:
    """One kernel source, compiled lazily as a serial and (if asked for) a parallel variant."""

    def __init__(self, py_func):
        self.py_func = py_func
        self._serial = self._parallel = None

    def __call__(self, parallel: bool, *args):
        if parallel:
            if self._parallel is None:
                self._parallel = njit(parallel=True, **_JIT)(self.py_func)
            return self._parallel(*args)
        if self._serial is None:
            self._serial = njit(**_JIT)(self.py_func)
        return self._serial(*args)


def kernel(py_func):
    return _Kernel(py_func)


@njit(inline="always", **_JIT)
def _sum_partials(partial, db):
    """Column sums of the per-chunk partial sums (float64) into the bias gradient."""
    for j in range(db.shape[0]):
        s = 0.0
        for c in range(partial.shape[0]):
            s += partial[c, j]
        db[j] = s


# -- layer kernels (one per activation, built from the registry) -------------------------------
# ``keep_below`` and ``scale``: the dropout threshold and factor (``xpnet.dropout``); ``keep_below`` is
# 2**32 without dropout, and then every element is kept with the factor 1 -- one kernel for both.
# ``first``: the global-batch element counter of the array's first element (``first_element``).
_element_hash = jit_scalar(element_hash)  # the same source as the reference's masks


def _bias_act_kernel(act):
    f = jit_scalar(act.scalar[0])

    @kernel
    def bias_act(z, b, a, key, first, keep_below, scale):
        rows, cols = z.shape
        drop = keep_below < 4294967296
        for i in prange(rows):
            for j in range(cols):
                v = z[i, j] + b[j]
                z[i, j] = v
                if drop:
                    a[i, j] = f(v) * scale if _element_hash(first + i * cols + j, key) < keep_below else 0.0
                else:
                    a[i, j] = f(v)

    return bias_act


def _act_grad_kernel(act):
    f = jit_scalar(act.scalar[0])
    d = jit_scalar(act.scalar[1])

    @kernel
    def act_grad(g, z, a, partial, db, key, first, keep_below, scale):
        # g <- g * f'(z) in place, and db <- column sums of the result: one pass over g.  With dropout,
        # f(z) is recomputed (``a`` holds the dropped activation) and the forward's mask is redrawn.
        rows, cols = g.shape
        chunks = partial.shape[0]
        per = (rows + chunks - 1) // chunks
        drop = keep_below < 4294967296
        for c in prange(chunks):
            for j in range(cols):
                partial[c, j] = 0.0
            for i in range(c * per, min(rows, (c + 1) * per)):
                for j in range(cols):
                    if drop:
                        v = g[i, j] * d(z[i, j], f(z[i, j]))
                        v = v * scale if _element_hash(first + i * cols + j, key) < keep_below else 0.0
                    else:
                        v = g[i, j] * d(z[i, j], a[i, j])
                    g[i, j] = v
                    partial[c, j] += v
        _sum_partials(partial, db)

    return act_grad


def _kernel(kind: str, act):
    key = (kind, act.name)
    if key not in _compiled:
        _compiled[key] = (_bias_act_kernel if kind == "bias_act" else _act_grad_kernel)(act)
    return _compiled[key]


def _dropout_args(a: Array, p: float, key: int, first_row: int) -> tuple[int, int, int, Any]:
    """``(key, first, keep_below, scale)`` kernel arguments for the 2-D array ``a`` whose first row is
    global row ``first_row``; ``keep_below = 2**32`` keeps everything (p = 0)."""
    if not p:
        return 0, 0, 1 << 32, a.dtype.type(1.0)
    return int(key), first_element(first_row, a.shape[1]), keep_threshold(p), a.dtype.type(keep_scale(p))


# -- losses: value and gradient in one pass over each row -------------------------------------
@njit(inline="always", **_JIT)
def _row_logsumexp(logits, i):
    m = -np.inf
    for j in range(logits.shape[1]):
        if logits[i, j] > m or logits[i, j] != logits[i, j]:  # NaN wins, so it propagates
            m = logits[i, j]
    s = 0.0
    for j in range(logits.shape[1]):
        s += math.exp(logits[i, j] - m)
    return m + math.log(s)


# Every loss kernel takes per-row weights ``w`` (empty: unweighted) and ``inv``, the gradient's
# normaliser (1 / rows, 1 / (rows * cols), or 1 / the weight total): row i's gradient is scaled by
# ``w[i] * inv`` (unweighted: ``inv``, exactly as before weights) and its loss by ``w[i]``.
@njit(inline="always", **_JIT)
def _row_scale(w, inv, i):
    return (w[i] * inv, w[i]) if w.shape[0] else (inv, 1.0)


@kernel
def _cross_entropy_labels(logits, labels, w, inv, grad, row_loss):
    # A label outside [0, cols) never indexes the row: the row's loss is NaN, its gradient 0, and
    # the count of such labels is returned (the caller raises before any weight changes).
    rows, cols = logits.shape
    bad = 0
    for i in prange(rows):
        y = labels[i]
        if y < 0 or y >= cols:
            bad += 1
            row_loss[i] = np.nan
            for j in range(cols):
                grad[i, j] = 0.0
            continue
        scale, wi = _row_scale(w, inv, i)
        shift = _row_logsumexp(logits, i)
        row_loss[i] = (shift - logits[i, y]) * wi
        for j in range(cols):
            p = math.exp(logits[i, j] - shift)
            grad[i, j] = (p - (1.0 if j == y else 0.0)) * scale
    return bad


@kernel
def _cross_entropy_dense(logits, targets, w, inv, grad, row_loss):
    rows, cols = logits.shape
    for i in prange(rows):
        scale, wi = _row_scale(w, inv, i)
        shift = _row_logsumexp(logits, i)
        acc = 0.0
        for j in range(cols):
            log_p = logits[i, j] - shift
            acc -= targets[i, j] * log_p
            grad[i, j] = (math.exp(log_p) - targets[i, j]) * scale
        row_loss[i] = acc * wi


def _mse_term(z, t):
    diff = z - t
    return diff * diff, 2.0 * diff


def _bce_term(z, t):
    softplus_tail = math.log1p(math.exp(-abs(z)))  # no overflow for any z
    return (z if z > 0.0 else 0.0) - z * t + softplus_tail, _sigmoid(z) - t


_sigmoid = jit_scalar(sigmoid_scalar)  # the registry's one scalar sigmoid


def _elementwise_loss_kernel(term):
    """A loss that is a mean of per-element terms: ``term(z, t) -> (loss, d loss / d z)``."""
    f = njit(inline="always")(term)

    @kernel
    def loss(out, targets, w, inv, grad, row_loss):
        rows, cols = out.shape
        for i in prange(rows):
            scale, wi = _row_scale(w, inv, i)
            acc = 0.0
            for j in range(cols):
                value, d = f(out[i, j], targets[i, j])
                acc += value
                grad[i, j] = d * scale
            row_loss[i] = acc * wi

    return loss


# -- optimizers: one pass over the flat buffers; gscale folds in gradient clipping ---------------
# Scalars arrive in the parameters' dtype, with complements such as 1 - beta1 precomputed, so a
# float32 update runs in float32 (8-wide SIMD) as NumPy's reference does.
@kernel
def _sgd(p, g, buf, lr, momentum, one_minus_dampening, weight_decay, nesterov, first, gscale):
    for i in prange(p.shape[0]):
        gi = g[i] * gscale
        if weight_decay != 0:
            gi += weight_decay * p[i]
        if momentum != 0:
            b = gi if first else momentum * buf[i] + one_minus_dampening * gi
            buf[i] = b
            gi = gi + momentum * b if nesterov else b
        p[i] -= lr * gi


@kernel
def _adagrad(p, g, acc, clr, weight_decay, eps, gscale):
    for i in prange(p.shape[0]):
        gi = g[i] * gscale
        if weight_decay != 0:
            gi += weight_decay * p[i]
        s = acc[i] + gi * gi
        acc[i] = s
        p[i] -= clr * (gi / (math.sqrt(s) + eps))


@kernel
def _rmsprop(p, g, sq, gavg, buf, lr, alpha, one_minus_alpha, eps, weight_decay, momentum, centered, gscale):
    for i in prange(p.shape[0]):
        gi = g[i] * gscale
        if weight_decay != 0:
            gi += weight_decay * p[i]
        s = alpha * sq[i] + one_minus_alpha * gi * gi
        sq[i] = s
        if centered:
            ga = gavg[i] + one_minus_alpha * (gi - gavg[i])
            gavg[i] = ga
            avg = math.sqrt(s - ga * ga) + eps
        else:
            avg = math.sqrt(s) + eps
        if momentum != 0:
            b = momentum * buf[i] + gi / avg
            buf[i] = b
            p[i] -= lr * b
        else:
            p[i] -= lr * (gi / avg)


@kernel
def _adam(p, g, m, v, vmax, step_size, one_minus_beta1, beta2, one_minus_beta2, eps, l2, decay_factor, bc2_sqrt,
          amsgrad, gscale):
    for i in prange(p.shape[0]):
        gi = g[i] * gscale
        pi = p[i] * decay_factor  # AdamW's decoupled decay (factor 1 for Adam)
        if l2 != 0:
            gi += l2 * pi  # Adam's L2 weight decay
        mi = m[i] + one_minus_beta1 * (gi - m[i])
        m[i] = mi
        vi = beta2 * v[i] + one_minus_beta2 * gi * gi
        v[i] = vi
        if amsgrad:
            vi = max(vmax[i], vi)
            vmax[i] = vi
        p[i] = pi - step_size * (mi / (math.sqrt(vi) / bc2_sqrt + eps))


@kernel
def _sum_of_squares(g):
    s = 0.0
    for i in prange(g.shape[0]):
        s += g[i] * g[i]
    return s


@kernel
def _unscale(g, inv_scale):
    # unscale the (widened) float16 gradients in place, counting non-finite values on the way
    bad = 0
    for i in prange(g.shape[0]):
        v = g[i]
        if not math.isfinite(v):
            bad += 1
        g[i] = v * inv_scale
    return bad


@kernel
def _scale(g, c):
    for i in prange(g.shape[0]):
        g[i] *= c


_NO_WEIGHTS = np.empty(0, dtype=np.float64)  # the loss kernels' "unweighted"
_LOSS_KERNELS = {"mse": _elementwise_loss_kernel(_mse_term), "bce": _elementwise_loss_kernel(_bce_term)}


class NumbaOps(BufferedOps):
    """Fused CPU kernel set; everything else is inherited from the reference.

    ``parallel`` (default: ``XPNET_CPU_PARALLEL=1`` in the environment, read here) runs kernels over
    at least ``parallel_min`` elements in their ``parallel=True`` variant.  Both are fixed for
    this kernel set.
    """

    name = "numba"
    lib = np

    def __init__(self, backend, dtype, tf32=False, *, parallel: bool | None = None, parallel_min: int = PARALLEL_MIN):
        super().__init__(backend, dtype, tf32=tf32)
        self.parallel = parallel_from_env() if parallel is None else bool(parallel)
        self.parallel_min = int(parallel_min)
        # column-sum partials: one row per thread (parallel) or a single row (serial)
        self.chunks = numba.get_num_threads() if self.parallel else 1

    def configured(self, *, tf32: bool) -> NumbaOps:
        return type(self)(self.backend, self.dtype, tf32=tf32, parallel=self.parallel, parallel_min=self.parallel_min)

    def _par(self, work: int) -> bool:
        """Whether a kernel over ``work`` elements runs its parallel variant."""
        return self.parallel and work >= self.parallel_min

    @counted(2)
    def unscale_into(self, grads16: Array, grads: Array, inv_scale: float) -> bool:
        # Numba has no float16 on the CPU: widen with NumPy into the float32 buffer, then one pass
        np.copyto(grads, grads16, casting="unsafe")
        found = _unscale(self._par(grads.size), grads, grads.dtype.type(inv_scale))
        return bool(found)

    @counted(1)
    def bias_act(self, z: Array, b: Array, act: Activation, out: Array | None = None, dropout: float = 0.0,
                 dropout_key: int = 0, dropout_row: int = 0) -> tuple[Array, Array]:
        if out is None:
            out = z if act.name == "identity" and not dropout else np.empty_like(z)
        _kernel("bias_act", act)(self._par(z.size), z, b, out, *_dropout_args(z, dropout, dropout_key, dropout_row))
        return z, out

    @counted(1)
    def act_grad(self, g: Array, z: Array, a: Array, act: Activation, db_out: Array | None = None,
                 dropout: float = 0.0, dropout_key: int = 0, dropout_row: int = 0) -> tuple[Array, Array]:
        db = np.empty(g.shape[1], dtype=g.dtype) if db_out is None else db_out
        partial = self._buf(("partial", g.shape[1]), (self.chunks, g.shape[1]), np.float64)
        _kernel("act_grad", act)(self._par(g.size), g, z, a, partial, db,
                                 *_dropout_args(g, dropout, dropout_key, dropout_row))
        return g, db

    def bias_grad(self, dz: Array, out: Array | None = None) -> Array:
        # the linear output layer: the derivative pass of the identity (dz * 1, exact) gives its column sums
        return self.act_grad(dz, dz, dz, _IDENTITY, db_out=out)[1]

    @counted(1)
    def loss(self, loss: Loss, logits: Array, targets: Array, weights: Array | None = None) -> tuple[Array, Array]:
        rows = logits.shape[0]
        grad = self._buf("dlogits", logits.shape)
        row_loss = self._buf("row_loss", (rows,), np.float64)
        if loss.name == "cross_entropy":
            kernel = _cross_entropy_labels if targets.ndim == 1 else _cross_entropy_dense
        else:
            kernel = _LOSS_KERNELS[loss.name]
        per_row = 1 if loss.name == "cross_entropy" else logits.shape[1]
        if weights is None:
            w, denom = _NO_WEIGHTS, float(rows * per_row)
        else:  # the weight total of the batch (1 when all are zero: loss and gradient 0)
            w = np.ascontiguousarray(weights, dtype=np.float64)
            denom = float(w.sum(dtype=np.float64)) * per_row or 1.0
        bad = kernel(self._par(logits.size), logits, targets, w, 1.0 / denom, grad, row_loss)
        if bad:
            raise ValueError(labels_outside_message(bad, logits.shape[1]))
        return np.asarray(row_loss.sum() / denom, dtype=logits.dtype), grad

    # -- optimizers: scalars in the parameters' dtype (no float64 promotion in float32 loops) -----
    # A buffer an option does not use (None) is passed as ``p``: the kernel never touches it.
    @counted(1)
    def sgd(self, p: Array, g: Array, buf: Array | None, *, lr: float, momentum: float, dampening: float,
            weight_decay: float, nesterov: bool, first: bool, grad_scale: float | Array = 1.0) -> None:
        t = p.dtype.type
        _sgd(self._par(p.size), p, g, p if buf is None else buf, t(lr), t(momentum), t(1.0 - dampening),
             t(weight_decay), bool(nesterov), bool(first), t(grad_scale))

    @counted(1)
    def adagrad(self, p: Array, g: Array, acc: Array, *, lr: float, weight_decay: float, eps: float,
                grad_scale: float | Array = 1.0) -> None:
        t = p.dtype.type
        _adagrad(self._par(p.size), p, g, acc, t(lr), t(weight_decay), t(eps), t(grad_scale))

    @counted(1)
    def rmsprop(self, p: Array, g: Array, square_avg: Array, grad_avg: Array | None, buf: Array | None, *,
                lr: float, alpha: float, eps: float, weight_decay: float, momentum: float, centered: bool,
                grad_scale: float | Array = 1.0) -> None:
        t = p.dtype.type
        _rmsprop(self._par(p.size), p, g, square_avg, p if grad_avg is None else grad_avg, p if buf is None else buf,
                 t(lr), t(alpha), t(1.0 - alpha), t(eps), t(weight_decay), t(momentum), bool(centered), t(grad_scale))

    @counted(1)
    def adam(self, p: Array, g: Array, m: Array, v: Array, vmax: Array | None, *, step_size: float, beta1: float,
             beta2: float, eps: float, l2: float, decay: float, bc2_sqrt: float, amsgrad: bool,
             grad_scale: float | Array = 1.0) -> None:
        t = p.dtype.type
        _adam(self._par(p.size), p, g, m, v, p if vmax is None else vmax, t(step_size), t(1.0 - beta1), t(beta2),
              t(1.0 - beta2), t(eps), t(l2), t(decay), t(bc2_sqrt), bool(amsgrad), t(grad_scale))

    # -- clipping -----------------------------------------------------------------------------
    def _norm(self, grads) -> float:
        return math.sqrt(_sum_of_squares(self._par(grads.size), grads))

    @counted(1)
    def clip_scale(self, grads: Array, max_norm: float) -> float | Array:
        return min(max_norm / (self._norm(grads) + 1e-6), 1.0)  # a host float: the CPU has no device to stay on

    def clip_grad_norm(self, grads: Array, max_norm: float) -> Array:
        norm = self._norm(grads)
        _scale(self._par(grads.size), grads, min(max_norm / (norm + 1e-6), 1.0))
        return np.asarray(norm, dtype=grads.dtype)
