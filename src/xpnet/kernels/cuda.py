"""Fused GPU kernels (CuPy) for float16 / bfloat16 / float32 / float64 arrays on NVIDIA GPUs.

The CUDA code comes from ``cuda_source.py`` (which assembles ``xpnet_kernels.cu`` and the
activations' device functions, ``cuda_source.ACTIVATION_CUDA``).  Kernels compile on first use and CuPy caches them
on disk (``CUPY_CACHE_DIR``), so ``import xpnet`` never needs a GPU.  Launches per training
step, besides the matrix products: one per layer for bias + activation, two per hidden layer
backward (derivative, bias column sums), two for the loss (row kernel, sum), one for the last
layer's bias gradient, and ONE for the whole optimizer step (plus one reduction with
gradient clipping).  Nothing here reads a value back to the host.

The array library is the backend's (``backend.lib``): CuPy on a GPU, or xpnet's GPU emulator
(``kernels/emulator``), which runs this same code on the CPU with every kernel executed from
its CUDA source.  Nothing in this module imports CuPy at import time.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from .._typing import Array
from ..dropout import first_element, keep_scale, keep_threshold
from ..losses import labels_outside_message, weight_total
from . import cuda_source as src
from .buffered import BufferedOps, counted

if TYPE_CHECKING:
    from ..activations import Activation
    from ..losses import Loss

# CuPy's own half type computes in float; everything else in its own precision.
_CUPY_PREAMBLE = "template <> struct xpnet_compute<float16> { typedef float type; };\n"
# CuPy >= 14's bfloat16 (cupy/bfloat16.cuh, included by CuPy when an argument is bfloat16) too;
# added only to kernels built for bfloat16, so every other kernel's source stays as it was.
_CUPY_BF16_PREAMBLE = "template <> struct xpnet_compute<bfloat16> { typedef float type; };\n"
_WARPS_PER_BLOCK = 8  # row kernels: one warp per row


def cuda_libs(lib):
    """``(cupyx, cublas)`` that go with ``lib`` (CuPy, or the emulator's stand-ins)."""
    if getattr(lib, "is_emulator", False):
        return lib.cupyx, lib.cublas
    import cupyx
    from cupy_backends.cuda.libs import cublas

    return cupyx, cublas


# Kernel objects per array library: compiled on first call, then reused.
@functools.cache
def _elementwise(lib, spec: src.Elementwise, bf16: bool = False):
    """``bf16``: the kernel for bfloat16 arrays (its preamble names CuPy's bfloat16 type)."""
    return lib.ElementwiseKernel(spec.in_params, spec.out_params, spec.body, spec.name,
                                 preamble=src.cuda_source() + _CUPY_PREAMBLE + (_CUPY_BF16_PREAMBLE if bf16 else ""))


@functools.cache
def _loss_module(lib):
    names = [f"xpnet_{k}<{t}, {t}>" for k in src.LOSS_KERNELS for t in ("float", "double")]
    # plain CUDA C++: CuPy's float16 type (and so _CUPY_PREAMBLE) exists only in its elementwise kernels
    return lib.RawModule(code=src.cuda_source(), options=("-std=c++14",), name_expressions=names)


@functools.cache
def _reduction(lib, spec: src.Reduction):
    preamble = src.cuda_source() + _CUPY_PREAMBLE if spec.preamble else ""
    return lib.ReductionKernel(spec.in_params, spec.out_params, spec.map_expr, "a + b", spec.post_map_expr, "0",
                               spec.name, preamble=preamble)


def _pointer(a) -> int:
    if isinstance(a, np.ndarray):  # the emulator's device arrays (``.data`` refuses bfloat16 buffers)
        return a.__array_interface__["data"][0]
    return a.data.ptr


def matmul_tf32(lib: Any, a: Array, b: Array, out: Array | None = None) -> Array:
    """``a @ b`` for 2-D float32 arrays with cuBLAS's TF32 compute type, for this product only.

    CuPy's own switch (``cupy._core.set_compute_type``) is process-wide, so toggling it around a
    product would leak TF32 into other threads' products; a direct ``gemmEx`` call with
    ``CUBLAS_COMPUTE_32F_FAST_TF32`` leaves every other product alone.
    """
    _, cublas = cuda_libs(lib)
    return _gemm_ex(lib, a, b, out, lib.float32, lib.cuda.runtime.CUDA_R_32F, cublas.CUBLAS_COMPUTE_32F_FAST_TF32)


def matmul_bf16(lib, a, b, out=None):
    """``a @ b`` for 2-D bfloat16 arrays: one cuBLAS ``gemmEx``, bfloat16 operands and result, float32
    accumulation (``CUBLAS_COMPUTE_32F``, tensor cores on sm_80+), as PyTorch's bfloat16 autocast GEMMs --
    stated here rather than left to which path CuPy's ``matmul`` takes for 16-bit types."""
    _, cublas = cuda_libs(lib)
    return _gemm_ex(lib, a, b, out, a.dtype, lib.cuda.runtime.CUDA_R_16BF, cublas.CUBLAS_COMPUTE_32F)


def _gemm_ex(lib, a, b, out, dtype, cuda_type, compute_type):
    """Row-major ``C = A @ B`` as column-major ``C^T = B^T @ A^T``: each operand's memory already holds
    its transpose in column-major order when it is C-contiguous, or itself when it is F-contiguous.
    ``alpha`` and ``beta`` are float32 (both compute types here are 32-bit)."""
    _, cublas = cuda_libs(lib)
    (m, k), (k2, n) = a.shape, b.shape
    if k != k2:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not align")
    if out is None:
        out = lib.empty((m, n), dtype=dtype)
    if not out.flags.c_contiguous or out.shape != (m, n):
        raise ValueError("a gemmEx product writes into a C-contiguous (m, n) output")

    def operand(x):  # (cuBLAS op that yields x^T from x's memory, leading dimension, array)
        if x.flags.c_contiguous:
            return cublas.CUBLAS_OP_N, max(1, x.shape[1]), x
        if x.flags.f_contiguous:
            return cublas.CUBLAS_OP_T, max(1, x.shape[0]), x
        x = lib.ascontiguousarray(x)
        return cublas.CUBLAS_OP_N, max(1, x.shape[1]), x

    op_b, ldb, b = operand(b)
    op_a, lda, a = operand(a)
    one, zero = np.ones(1, np.float32), np.zeros(1, np.float32)
    cublas.gemmEx(lib.cuda.device.get_cublas_handle(), op_b, op_a, n, m, k, one.ctypes.data, _pointer(b), cuda_type,
                  ldb, _pointer(a), cuda_type, lda, zero.ctypes.data, _pointer(out), cuda_type, max(1, n),
                  compute_type, cublas.CUBLAS_GEMM_DEFAULT_TENSOR_OP)
    return out


def _dropout_args(a: Array, p: float, key: int, first_row: int) -> tuple[np.uint32, np.uint32, np.uint64, np.float64]:
    """The dropout kernels' scalars ``(key, first, keep_below, scale)`` for the 2-D array ``a`` whose first
    row is global row ``first_row``, as NumPy scalars of their parameter types."""
    return (np.uint32(key), np.uint32(first_element(first_row, a.shape[1])), np.uint64(keep_threshold(p)),
            np.float64(keep_scale(p)))


class CupyOps(BufferedOps):
    """Fused CUDA kernel set; operations it does not override use the reference math on CuPy.

    ``tf32=True`` (fixed at construction, never shared) runs float32 matrix products on tensor
    cores in TF32 (``Trainer(precision="tf32")`` builds its own kernel set with it).
    """

    name = "cupy"

    def __init__(self, backend, dtype, tf32: bool = False):
        super().__init__(backend, dtype, tf32=tf32)
        self.lib = backend.lib
        self.state_dtype = "float32" if dtype in ("float16", "bfloat16") else dtype  # low precision updates in float32
        self.bf16 = dtype == "bfloat16"  # bfloat16 storage: elementwise kernels built for it, float32 sums
        self._n_classes = 0  # of the last labelled loss, for the error message
        with backend.context():
            self._sumsq = self.lib.zeros((), dtype=self.state_dtype)
            self._clip = self.lib.zeros((), dtype=self.state_dtype)  # written by clip_scale
            self._one = self.lib.zeros((1,), dtype=self.state_dtype)  # the gradient scale without clipping
            self._one.fill(1)
            self._gscale = self.lib.zeros((1,), dtype=self.state_dtype)  # a number given as grad_scale
            self._bad_labels = self.lib.zeros((1,), dtype=self.lib.int32)  # written by the loss kernel

    def state_like(self, params: Array) -> Array:
        with self.backend.context():
            return self.lib.zeros(params.shape, dtype=self.state_dtype)

    @counted(1)
    def matmul(self, a: Array, b: Array, out: Array | None = None) -> Array:
        if self.bf16:
            return matmul_bf16(self.lib, a, b, out)
        if not self.tf32 or a.dtype != self.lib.float32:
            return self.lib.matmul(a, b, out=out)
        return matmul_tf32(self.lib, a, b, out)

    @counted(1)
    def scale_cast(self, a: Array, scale: float, key: str) -> Array:
        out = self._buf(key, a.shape)
        _elementwise(self.lib, src.SCALE_CAST, self.bf16)(a, float(scale), out)
        return out

    @counted(2)
    def unscale_into(self, grads16: Array, grads: Array, inv_scale: float) -> bool:
        """One fused pass (unscale into float32), one count of non-finite values, ONE host read."""
        _elementwise(self.lib, src.UNSCALE, grads16.dtype.name == "bfloat16")(grads16, float(inv_scale), grads)
        bad = _reduction(self.lib, src.COUNT_NONFINITE)(grads)
        return bool(int(bad) > 0)

    @counted(1)
    def count_invalid(self, a: Array, kind: str, n_classes: int = 0) -> Array:
        """One reduction on the device: how many values of ``a`` are invalid for ``kind``."""
        if kind == "labels":
            return _reduction(self.lib, src.count_bad_labels(n_classes))(a)
        return _reduction(self.lib, src.COUNT_NONFINITE if kind == "finite" else src.COUNT_NOT_PROBABILITY)(a)

    def check_device_errors(self) -> None:
        """Raise if a loss kernel met labels outside ``[0, n_classes)`` since the last check (one host read)."""
        bad = int(self._bad_labels.get()[0])
        if bad:
            self._bad_labels[...] = 0
            raise ValueError(labels_outside_message(bad, self._n_classes))

    def fits_on_device(self, nbytes: int) -> bool:
        """Data sets up to half of the GPU's free memory live on the device; larger ones stream."""
        with self.backend.context():
            free, _ = self.lib.cuda.runtime.memGetInfo()
        return nbytes <= 0.5 * free

    def stream_batches(self, X: Array, y: Array, order: Array,
                       batch_size: int) -> Iterator[tuple[int, int, Array, Array]]:
        """Batches of host arrays, double-buffered: while batch i trains on the current stream,
        batch i+1 is gathered into pinned host memory and copied on a second stream.

        Events order the work without host waits in the steady state: the copy of batch i+1
        waits for the step that last used its device buffer; the step waits for its copy.
        However the loop ends (finished, stopped early, an exception), the copy stream is
        synchronised before the pinned and device buffers can be released.
        """
        lib = self.lib
        cupyx, _ = cuda_libs(lib)
        compute = lib.cuda.get_current_stream()
        copier = lib.cuda.Stream(non_blocking=True)
        slots = []
        for _ in range(2):
            slot = {"hx": cupyx.empty_pinned((batch_size,) + X.shape[1:], X.dtype),
                    "hy": cupyx.empty_pinned((batch_size,) + y.shape[1:], y.dtype),
                    "dx": lib.empty((batch_size,) + X.shape[1:], X.dtype),
                    "dy": lib.empty((batch_size,) + y.shape[1:], y.dtype),
                    "copied": lib.cuda.Event(), "used": lib.cuda.Event()}
            slot["copied"].record(copier)
            slot["used"].record(compute)
            slots.append(slot)
        starts = list(range(0, len(order), batch_size))

        def stage(i):
            start = starts[i]
            self._stage_batch(slots[i % 2], copier, X, y, order[start:min(start + batch_size, len(order))])

        try:
            stage(0)
            for i, start in enumerate(starts):
                if i + 1 < len(starts):
                    stage(i + 1)
                slot = slots[i % 2]
                m = min(start + batch_size, len(order)) - start
                compute.wait_event(slot["copied"])
                yield start, start + m, slot["dx"][:m], slot["dy"][:m]
                slot["used"].record(compute)
        finally:
            copier.synchronize()  # no copy may still be in flight into buffers about to be released

    @counted(2)
    def _stage_batch(self, slot, copier, X, y, idx) -> None:
        """Gather rows ``idx`` into the slot's pinned buffers and copy them to its device buffers on
        ``copier`` (two copies), once the slot's previous step is done."""
        m = len(idx)
        slot["copied"].synchronize()  # the pinned buffer's previous copy is done (long since)
        np.take(X, idx, axis=0, out=slot["hx"][:m])
        np.take(y, idx, axis=0, out=slot["hy"][:m])
        copier.wait_event(slot["used"])  # the device buffer's previous step is done
        slot["dx"][:m].set(slot["hx"][:m], stream=copier)
        slot["dy"][:m].set(slot["hy"][:m], stream=copier)
        slot["copied"].record(copier)

    @counted(1)
    def bias_act(self, z: Array, b: Array, act: Activation, out: Array | None = None, dropout: float = 0.0,
                 dropout_key: int = 0, dropout_row: int = 0) -> tuple[Array, Array]:
        if act.name == "identity" and not dropout:
            _elementwise(self.lib, src.BIAS_ADD, self.bf16)(b, z)
            return z, z
        if out is None:
            out = self.lib.empty_like(z)
        if dropout:
            args = _dropout_args(z, dropout, dropout_key, dropout_row)
            _elementwise(self.lib, src.bias_act_dropout(act.name), self.bf16)(b, *args, z, out)
        else:
            _elementwise(self.lib, src.bias_act(act.name), self.bf16)(b, z, out)
        return z, out

    @counted(2)
    def act_grad(self, g: Array, z: Array, a: Array, act: Activation, db_out: Array | None = None,
                 dropout: float = 0.0, dropout_key: int = 0, dropout_row: int = 0) -> tuple[Array, Array]:
        if dropout:
            args = _dropout_args(g, dropout, dropout_key, dropout_row)
            _elementwise(self.lib, src.act_grad_dropout(act.name), self.bf16)(z, a, *args, g)
        else:
            _elementwise(self.lib, src.act_grad(act.name), self.bf16)(z, a, g)
        return g, self._column_sums(g, db_out)

    @counted(1)
    def bias_grad(self, dz: Array, out: Array | None = None) -> Array:
        return self._column_sums(dz, out)

    def _column_sums(self, g: Array, out: Array | None) -> Array:
        """Bias gradients; bfloat16 columns are summed in float32 (one rounding, into ``out``)."""
        if not self.bf16:
            return self.lib.sum(g, axis=0, out=out)
        sums = self.lib.sum(g, axis=0, dtype=self.lib.float32)
        if out is None:
            return sums.astype(g.dtype)
        out[...] = sums
        return out

    def loss(self, loss: Loss, logits: Array, targets: Array, weights: Array | None = None) -> tuple[Array, Array]:
        lib = self.lib
        if logits.dtype not in (lib.float32, lib.float64):  # half logits: reference math in float32
            value, grad = super().loss(loss, logits.astype(lib.float32), targets, weights)
            return value.astype(logits.dtype), grad.astype(logits.dtype)
        return self._fused_loss(loss, logits, targets, weights)

    @counted(2)
    def _fused_loss(self, loss, logits, targets, weights=None):
        """The row kernel (value and gradient of each row, weighted if asked) and the sum of the row
        losses; weights are normalised on the device (no host read)."""
        lib = self.lib
        rows, cols = logits.shape
        ctype = "float" if logits.dtype == lib.float32 else "double"
        grad = self._buf("dlogits", logits.shape)
        row_loss = self._buf("row_loss", (rows,))
        kind = loss.name if loss.name != "cross_entropy" else ("ce_labels" if targets.ndim == 1 else "ce_dense")
        if targets.ndim == 2 and targets.dtype != logits.dtype:
            targets = targets.astype(logits.dtype)
        if kind == "ce_labels":
            targets = targets.astype(lib.int64, copy=False)
            self._n_classes = cols
        kernel = _loss_module(lib).get_function(f"xpnet_{kind}<{ctype}, {ctype}>")
        blocks = (rows + _WARPS_PER_BLOCK - 1) // _WARPS_PER_BLOCK
        per_row = 1 if loss.name == "cross_entropy" else cols
        if weights is None:  # w and w_inv unread: any device arrays
            w, w_inv, denom = row_loss, row_loss, rows * per_row
        else:
            w = lib.ascontiguousarray(weights.astype(row_loss.dtype, copy=False))
            denom = weight_total(lib, w, per_row)
            w_inv = lib.reshape(1 / denom, (1,))
        kernel((blocks,), (32 * _WARPS_PER_BLOCK,),
               (lib.ascontiguousarray(logits), lib.ascontiguousarray(targets), grad, row_loss, self._bad_labels,
                w, w_inv, np.int32(weights is not None), np.int32(rows), np.int32(cols)))
        return lib.sum(row_loss) / denom, grad

    # -- optimizers: one elementwise kernel per step (cuda_source.OPTIMIZER_KERNELS) ------------------
    def _grad_scale(self, grad_scale):
        """The one-element device array the optimizer kernels read their gradient scale from."""
        on_device = self.lib.is_device(grad_scale) if getattr(self.lib, "is_emulator", False) else \
            isinstance(grad_scale, self.lib.ndarray)
        if on_device:  # clip_scale's 0-d array: stays on the device
            return grad_scale.reshape(1)
        if float(grad_scale) == 1.0:
            return self._one
        self._gscale.fill(float(grad_scale))  # a host number: one small fill
        return self._gscale

    def _optimizer(self, rule, p, g, buffers, grad_scale, **scalars) -> None:
        spec = src.OPTIMIZER_KERNELS[rule]
        kernel = _elementwise(self.lib, src.optimizer(rule, tuple(b is not None for b in buffers)))
        values = [int(bool(scalars[name])) if kind == "flag" else float(scalars[name]) for name, kind in spec.scalars]
        kernel(g, self._grad_scale(grad_scale), *values, p, *[b for b in buffers if b is not None])

    @counted(1)
    def sgd(self, p: Array, g: Array, buf: Array | None, *, lr: float, momentum: float, dampening: float,
            weight_decay: float, nesterov: bool, first: bool, grad_scale: float | Array = 1.0) -> None:
        self._optimizer("sgd", p, g, (buf,), grad_scale, lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, first=first)

    @counted(1)
    def adagrad(self, p: Array, g: Array, acc: Array, *, lr: float, weight_decay: float, eps: float,
                grad_scale: float | Array = 1.0) -> None:
        self._optimizer("adagrad", p, g, (acc,), grad_scale, lr=lr, weight_decay=weight_decay, eps=eps)

    @counted(1)
    def rmsprop(self, p: Array, g: Array, square_avg: Array, grad_avg: Array | None, buf: Array | None, *,
                lr: float, alpha: float, eps: float, weight_decay: float, momentum: float, centered: bool,
                grad_scale: float | Array = 1.0) -> None:
        self._optimizer("rmsprop", p, g, (square_avg, grad_avg, buf), grad_scale, lr=lr, alpha=alpha, eps=eps,
                        weight_decay=weight_decay, momentum=momentum, centered=centered)

    @counted(1)
    def adam(self, p: Array, g: Array, m: Array, v: Array, vmax: Array | None, *, step_size: float, beta1: float,
             beta2: float, eps: float, l2: float, decay: float, bc2_sqrt: float, amsgrad: bool,
             grad_scale: float | Array = 1.0) -> None:
        self._optimizer("adam", p, g, (m, v, vmax), grad_scale, step_size=step_size, beta1=beta1, beta2=beta2,
                        eps=eps, l2=l2, decay=decay, bc2_sqrt=bc2_sqrt, amsgrad=amsgrad)

    # -- clipping ----------------------------------------------------------------------------
    @counted(1)
    def clip_scale(self, grads: Array, max_norm: float) -> float | Array:
        """One reduction: the clipping factor as a 0-d device array (no host read)."""
        return _reduction(self.lib, src.clip_scale(max_norm))(grads, out=self._clip)

    @counted(2)
    def clip_grad_norm(self, grads: Array, max_norm: float) -> Array:
        _reduction(self.lib, src.SUM_OF_SQUARES)(grads, out=self._sumsq)
        _elementwise(self.lib, src.SCALE)(self._sumsq.reshape(1), float(max_norm), grads)
        return self.lib.sqrt(self._sumsq)
