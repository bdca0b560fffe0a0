"""Fused GPU kernels (CuPy) for float16 / float32 / float64 arrays on NVIDIA GPUs.

The CUDA code comes from ``cuda_source.py`` (which assembles ``xpnet_kernels.cu`` and the
activation registry's device functions).  Kernels compile on first use and CuPy caches them
on disk (``CUPY_CACHE_DIR``), so ``import xpnet`` never needs a GPU.  Launches per training
step, besides the matrix products: one per layer for bias + activation, two per hidden layer
backward (derivative, bias column sums), two for the loss (row kernel, sum), one for the last
layer's bias gradient, and ONE for the whole optimizer step (plus one reduction with
gradient clipping).  Nothing here reads a value back to the host.
"""

from __future__ import annotations

import functools

import cupy
import numpy as np
from cupy._core import _linalg

from . import cuda_source as src
from .buffered import BufferedOps

# CuPy's own half type computes in float; everything else in its own precision.
_CUPY_PREAMBLE = "template <> struct xpnet_compute<float16> { typedef float type; };\n"


@functools.lru_cache(maxsize=None)
def _preamble() -> str:
    return src.cuda_source() + _CUPY_PREAMBLE


@functools.lru_cache(maxsize=None)
def _elementwise(spec: src.Elementwise):
    return cupy.ElementwiseKernel(spec.in_params, spec.out_params, spec.body, spec.name, preamble=_preamble())


@functools.lru_cache(maxsize=None)
def _loss_module():
    names = [f"xpnet_{k}<{t}, {t}>" for k in src.LOSS_KERNELS for t in ("float", "double")]
    # plain CUDA C++: CuPy's float16 type (and so _CUPY_PREAMBLE) exists only in its elementwise kernels
    return cupy.RawModule(code=src.cuda_source(), options=("-std=c++14",), name_expressions=names)


@functools.lru_cache(maxsize=None)
def _count_nonfinite():
    return cupy.ReductionKernel("T x", "int64 y", "isfinite(x) ? 0 : 1", "a + b", "y = a", "0",
                                "xpnet_count_nonfinite")


@functools.lru_cache(maxsize=None)
def _sum_of_squares():
    return cupy.ReductionKernel("T x", "S y", "(S)x * (S)x", "a + b", "y = a", "0", "xpnet_sum_of_squares")


class CupyOps(BufferedOps):
    """Fused CUDA kernel set; operations it does not override use the reference math on CuPy."""

    name = "cupy"
    lib = cupy

    def __init__(self, backend, dtype):
        super().__init__(backend, dtype)
        self.state_dtype = "float32" if dtype == "float16" else dtype  # low precision updates in float32
        self.tf32 = False  # set by Trainer(precision="tf32")
        with backend.device:
            self._sumsq = cupy.zeros((), dtype=self.state_dtype)

    def state_like(self, params):
        with self.backend.device:
            return cupy.zeros(params.shape, dtype=self.state_dtype)

    def matmul(self, a, b, out=None):
        if not self.tf32 or a.dtype != cupy.float32:
            return super().matmul(a, b, out)
        previous = cupy._core.get_compute_type(cupy.float32)  # TF32 for this product only
        cupy._core.set_compute_type(cupy.float32, _linalg.COMPUTE_TYPE_TF32)
        try:
            return super().matmul(a, b, out)
        finally:
            cupy._core.set_compute_type(cupy.float32, previous)

    def scale_cast(self, a, scale, key):
        out = self._buf(key, a.shape)
        _elementwise(src.SCALE_CAST)(a, float(scale), out)
        self.launches += 1
        return out

    def unscale_into(self, grads16, grads, inv_scale):
        """One fused pass (unscale into float32), one count of non-finite values, ONE host read."""
        _elementwise(src.UNSCALE)(grads16, float(inv_scale), grads)
        bad = _count_nonfinite()(grads)
        self.launches += 2
        return bool(int(bad) > 0)

    def fits_on_device(self, nbytes: int) -> bool:
        """Data sets up to half of the GPU's free memory live on the device; larger ones stream."""
        with self.backend.device:
            free, _ = cupy.cuda.runtime.memGetInfo()
        return nbytes <= 0.5 * free

    def stream_batches(self, X, y, order, batch_size):
        """Batches of host arrays, double-buffered: while batch i trains on the current stream,
        batch i+1 is gathered into pinned host memory and copied on a second stream.

        Events order the work without host waits in the steady state: the copy of batch i+1
        waits for the step that last used its device buffer; the step waits for its copy.
        """
        import cupyx

        compute = cupy.cuda.get_current_stream()
        copier = cupy.cuda.Stream(non_blocking=True)
        slots = []
        for _ in range(2):
            slot = {"hx": cupyx.empty_pinned((batch_size,) + X.shape[1:], X.dtype),
                    "hy": cupyx.empty_pinned((batch_size,) + y.shape[1:], y.dtype),
                    "dx": cupy.empty((batch_size,) + X.shape[1:], X.dtype),
                    "dy": cupy.empty((batch_size,) + y.shape[1:], y.dtype),
                    "copied": cupy.cuda.Event(), "used": cupy.cuda.Event()}
            slot["copied"].record(copier)
            slot["used"].record(compute)
            slots.append(slot)
        starts = list(range(0, len(order), batch_size))

        def stage(i):
            slot, start = slots[i % 2], starts[i]
            m = min(start + batch_size, len(order)) - start
            slot["copied"].synchronize()  # the pinned buffer's previous copy is done (long since)
            np.take(X, order[start:start + m], axis=0, out=slot["hx"][:m])
            np.take(y, order[start:start + m], axis=0, out=slot["hy"][:m])
            copier.wait_event(slot["used"])  # the device buffer's previous step is done
            slot["dx"][:m].set(slot["hx"][:m], stream=copier)
            slot["dy"][:m].set(slot["hy"][:m], stream=copier)
            slot["copied"].record(copier)
            self.launches += 2

        stage(0)
        for i, start in enumerate(starts):
            if i + 1 < len(starts):
                stage(i + 1)
            slot = slots[i % 2]
            m = min(start + batch_size, len(order)) - start
            compute.wait_event(slot["copied"])
            yield start, start + m, slot["dx"][:m], slot["dy"][:m]
            slot["used"].record(compute)

    def bias_act(self, z, b, act, out=None):
        self.launches += 1
        if act.name == "identity":
            _elementwise(src.BIAS_ADD)(b, z)
            return z, z
        if out is None:
            out = cupy.empty_like(z)
        _elementwise(src.bias_act(act.name))(b, z, out)
        return z, out

    def act_grad(self, g, z, a, act, db_out=None):
        _elementwise(src.act_grad(act.name))(z, a, g)
        self.launches += 2
        return g, cupy.sum(g, axis=0, out=db_out)

    def bias_grad(self, dz, out=None):
        self.launches += 1
        return cupy.sum(dz, axis=0, out=out)

    def loss(self, loss, logits, targets):
        if logits.dtype not in (cupy.float32, cupy.float64):  # half logits: reference math in float32
            value, grad = super().loss(loss, logits.astype(cupy.float32), targets)
            return value.astype(logits.dtype), grad.astype(logits.dtype)
        rows, cols = logits.shape
        ctype = "float" if logits.dtype == cupy.float32 else "double"
        grad = self._buf("dlogits", logits.shape)
        row_loss = self._buf("row_loss", (rows,))
        kind = loss.name if loss.name != "cross_entropy" else ("ce_labels" if targets.ndim == 1 else "ce_dense")
        if targets.ndim == 2 and targets.dtype != logits.dtype:
            targets = targets.astype(logits.dtype)
        kernel = _loss_module().get_function(f"xpnet_{kind}<{ctype}, {ctype}>")
        warps_per_block = 8  # one warp per row
        kernel(((rows + warps_per_block - 1) // warps_per_block,), (32 * warps_per_block,),
               (cupy.ascontiguousarray(logits), cupy.ascontiguousarray(targets), grad, row_loss,
                cupy.int32(rows), cupy.int32(cols)))
        self.launches += 2
        return cupy.sum(row_loss) / (rows if loss.name == "cross_entropy" else rows * cols), grad

    def optimizer_update(self, optimizer, params, grads, state, s, max_norm=None):
        rule = "adam" if optimizer.rule == "adamw" else optimizer.rule
        if rule not in src.RULES:
            return super().optimizer_update(optimizer, params, grads, state, s, max_norm)
        names, scalar_names, _ = src.RULES[rule]
        norm_arg = -1.0
        if max_norm is not None:  # the clipping scale is computed on the device inside the update
            _sum_of_squares()(grads, out=self._sumsq)
            norm_arg = float(max_norm)
            self.launches += 1
        values = dict(s, first=float(s["step"] == 1.0), bc2=s.get("bias_correction2_sqrt", 1.0),
                      l2=0.0 if getattr(optimizer, "decoupled", False) else s.get("weight_decay", 0.0))
        kernel = _elementwise(src.optimizer(rule, tuple(n in state for n in names)))
        kernel(grads, self._sumsq.reshape(1), norm_arg, *[float(values[k]) for k in scalar_names.split()],
               params, *[state[n] for n in names if n in state])
        self.launches += 1

    def clip_grad_norm(self, grads, max_norm):
        _sum_of_squares()(grads, out=self._sumsq)
        _elementwise(src.SCALE)(self._sumsq.reshape(1), float(max_norm), grads)
        self.launches += 2
        return cupy.sqrt(self._sumsq)
