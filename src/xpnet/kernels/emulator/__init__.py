"""xpnet's GPU emulator: the real CuPy kernel set (``kernels/cuda.py``) run on the CPU.

``Emulator()`` is a stand-in for the ``cupy`` module that ``CupyOps`` is handed instead of the
real one.  Device arrays are NumPy arrays of a subclass (``Emulator.ndarray``); every kernel
that xpnet writes runs from its CUDA source:

* ``ElementwiseKernel`` / ``ReductionKernel``: CuPy's own code generator (``cupy_codegen``) turns
  the call into the exact source CuPy would compile on a GPU (type placeholders bound, scalars
  cast, dimensions merged), which ``host_build`` compiles for the host with ``host_cuda.h`` and
  launches with CuPy's grid and block sizes;
* ``RawModule``: xpnet's CUDA source, compiled for the host, launched with the grid and block
  the caller passes; warps are 32 fibers that exchange values at each ``__shfl_*_sync``.

CuPy's own routines that xpnet calls (``matmul``'s cuBLAS, ``sum``, ``take``, ``copyto``) are
stood in by their NumPy equivalents, and cuBLAS ``gemmEx`` by a column-major product that
honours the TF32 compute type.  Streams, events and pinned memory are modelled just enough to
check ordering: a copy on a non-default stream stays pending until an event or a
synchronisation orders it, and releasing pinned memory with a copy still in flight is recorded
in ``Emulator.errors``.  Anything else raises ``NotImplementedError`` (never a silent no-op).
"""

from __future__ import annotations

import struct
import types
import weakref
from typing import Any

import numpy as np

from .. import cupy_codegen as codegen
from .host_build import FloatMode, KernelError, build, compiler  # noqa: F401  (re-exported)

_MODELLED = {  # CuPy routines that xpnet uses, stood in by NumPy on device arrays
    "sqrt", "matmul", "copyto", "take", "ascontiguousarray", "empty_like", "zeros_like", "ones_like",
    "full_like", "maximum", "minimum", "where", "exp", "log", "log1p", "abs", "isfinite", "argmax", "concatenate",
    "stack", "reshape", "clip", "arange", "all", "any", "min", "max", "count_nonzero", "logical_not", "tanh",
    "equal", "astype", "expm1", "mean",
}


class Emulator:
    """A ``cupy``-like namespace whose kernels run on the CPU from their CUDA source."""

    is_emulator = True

    def __init__(self, mode: FloatMode | None = None, free_memory: int = 1 << 30):
        self.mode = mode if mode is not None else FloatMode()
        self.errors: list[str] = []
        self.launches: list[str] = []  # names of kernels launched, in order
        self.host_reads = 0  # device-to-host copies (ndarray.get)
        self.free_memory = free_memory
        emu = self

        class ndarray(np.ndarray):
            """A device array of the emulated GPU."""

            __array_priority__ = 10.0

            @property
            def device(self):
                return emu.cuda.Device(0)

            def get(self, stream=None):
                emu.host_reads += 1
                return np.array(self, copy=True).view(np.ndarray)

            def set(self, arr, stream=None):
                if type(arr) is not np.ndarray:
                    raise TypeError("ndarray.set takes a host numpy.ndarray")
                if arr.shape != self.shape or arr.dtype != self.dtype:
                    raise ValueError(f"ndarray.set: {arr.shape} {arr.dtype} into {self.shape} {self.dtype}")
                emu.cuda._copy(self, arr, stream)

            def __reduce__(self):  # never pickled as a device array
                raise TypeError("emulated device arrays cannot be pickled; call .get() first")

        self.ndarray = ndarray
        for name in ("float16", "float32", "float64", "int32", "int64", "uint8", "bool_", "dtype"):
            setattr(self, name, getattr(np, name))
        try:  # CuPy >= 14 holds bfloat16 arrays of ml_dtypes' type (cupy has no bfloat16 attribute)
            import ml_dtypes

            self._bf16 = np.dtype(ml_dtypes.bfloat16)
        except ImportError:
            self._bf16 = None
        self.cuda = _Cuda(self)
        self.cupyx = types.SimpleNamespace(empty_pinned=self.cuda._empty_pinned)
        self.cublas = _Cublas(self)

    # -- arrays --------------------------------------------------------------------------------
    def device_array(self, a) -> np.ndarray:
        return np.asarray(a).view(self.ndarray)

    def is_device(self, a) -> bool:
        return isinstance(a, self.ndarray)

    def empty(self, shape, dtype=np.float32):
        return np.empty(shape, dtype=dtype).view(self.ndarray)

    def zeros(self, shape, dtype=np.float32):
        return np.zeros(shape, dtype=dtype).view(self.ndarray)

    def asarray(self, a, dtype=None):
        if isinstance(a, self.ndarray):
            return a if dtype is None else a.astype(dtype)
        return np.array(a, dtype=dtype, copy=True).view(self.ndarray)

    def sum(self, a, axis=None, dtype=None, out=None, keepdims=False):
        """CuPy sums float16 (and xpnet sums bfloat16) in float32 accumulators; NumPy would round every
        partial sum to the half type."""
        if type(a) is np.ndarray:
            raise TypeError("cupy.sum got a host numpy.ndarray")
        wide = a.astype(np.float32) if a.dtype in (np.float16, self._bf16) else a
        result = np.sum(wide.view(np.ndarray), axis=axis, keepdims=keepdims).astype(dtype or a.dtype)
        if out is None:
            return np.asarray(result).view(self.ndarray)
        out.view(np.ndarray)[...] = result
        return out

    def __getattr__(self, name):
        if name not in _MODELLED:
            raise NotImplementedError(f"cupy.{name} is not modelled by xpnet's GPU emulator")
        fn = getattr(np, name)

        def routine(*args, **kwargs):
            for a in list(args) + list(kwargs.values()):
                if type(a) is np.ndarray:
                    raise TypeError(f"cupy.{name} got a host numpy.ndarray: CuPy routines take device arrays "
                                    "(the emulator refuses the mix, as CuPy does)")
            out = fn(*args, **kwargs)
            if isinstance(out, np.ndarray) and not isinstance(out, self.ndarray):
                return out.view(self.ndarray)
            if isinstance(out, np.generic):  # CuPy reductions return 0-d device arrays
                return np.asarray(out).view(self.ndarray)
            return out

        return routine

    # -- kernels -------------------------------------------------------------------------------
    def ElementwiseKernel(self, in_params, out_params, operation, name="kernel", preamble="",
                          reduce_dims=True, **kwargs):
        if kwargs:
            raise NotImplementedError(f"ElementwiseKernel options {sorted(kwargs)} are not modelled")
        return _ElementwiseKernel(self, in_params, out_params, operation, name, preamble, reduce_dims)

    def ReductionKernel(self, in_params, out_params, map_expr, reduce_expr, post_map_expr, identity,
                        name="reduce_kernel", reduce_type=None, preamble="", options=()):
        return _ReductionKernel(self, in_params, out_params, map_expr, reduce_expr, post_map_expr, identity, name,
                                reduce_type, preamble, options)

    def RawModule(self, code, options=(), name_expressions=()):
        return _RawModule(self, code, tuple(name_expressions))

    def _ftz(self, dtypes) -> bool:
        """-ftz=true flushes float32 arithmetic; the host flag would flush doubles too, so
        launches that touch float64 run without it."""
        return self.mode.ftz and all(np.dtype(d) != np.float64 for d in dtypes if d is not None)


# -- argument packing: the byte layout CuPy hands to cuLaunchKernel -----------------------------
def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def _pack_array(a: np.ndarray, view: codegen.ArrayView | None = None) -> bytes:
    """``CArray<T, ndim, ...>``: data pointer, size, shape[ndim], strides[ndim] (bytes).  A raw
    pointer parameter reads the first eight bytes, the data pointer, as it does on a GPU."""
    shape, strides = (view.shape, view.strides) if view is not None else (a.shape, a.strides)
    return struct.pack(f"Pq{2 * len(shape)}q", _address(a), int(np.prod(shape, dtype=np.int64)), *shape, *strides)


def _pack_indexer(shape) -> bytes:
    return struct.pack(f"q{2 * len(shape)}q", int(np.prod(shape, dtype=np.int64)), *shape, *([0] * len(shape)))


def _linear_launch(size: int, block_max: int) -> tuple[tuple, tuple]:
    """Grid and block of CuPy's ``Function.linear_launch``."""
    return (min(0x7FFFFFFF, (size + block_max - 1) // block_max),), (min(block_max, size),)


class _ElementwiseKernel:
    def __init__(self, emu, in_params, out_params, operation, name, preamble, reduce_dims):
        self.emu = emu
        self.in_params, self.out_params = codegen.param_info(in_params, out_params)
        self.params = codegen.elementwise_params(self.in_params, self.out_params)
        self.operation, self.name, self.preamble, self.reduce_dims = operation, name, preamble, reduce_dims
        self.nin, self.nout = len(self.in_params), len(self.out_params)

    def __call__(self, *args, block_size=128, stream=None, size=None):
        if size is not None:
            raise NotImplementedError("ElementwiseKernel(size=...) is not modelled")
        code, packed, n, outs, dtypes = self.prepare(*args)
        if n:
            module = build(codegen.cupy_headers(host=True) + code, [self.name], self.emu.mode, (codegen.include_dir(),))
            grid, block = _linear_launch(n, block_size)
            self.emu.launches.append(self.name)
            module.launch(self.name, packed, grid, block, self.emu._ftz(dtypes))
        return outs[0] if self.nout == 1 else tuple(outs)

    def prepare(self, *args):
        """CuPy's steps before a launch: ``(source, packed arguments, size, outputs, dtypes)``."""
        emu = self.emu
        if len(args) not in (self.nin, self.nin + self.nout):
            raise TypeError(f"Wrong number of arguments for {self.name!r}")
        params = self.in_params + self.out_params
        for p, a in zip(params, args):
            if type(a) is np.ndarray:
                raise TypeError(f"{self.name}: argument {p.name} is a host numpy.ndarray (CuPy needs device arrays)")
        arrays = [a if emu.is_device(a) else None for a in args]
        shape = np.broadcast_shapes(*[a.shape for p, a in zip(params, arrays) if a is not None and not p.raw])
        outs = list(args[self.nin:])
        in_types, out_types, type_map = codegen.decide_types(
            self.in_params, self.out_params, [a.dtype if a is not None else None for a in arrays[:self.nin]],
            [a.dtype for a in outs])
        if not outs:
            outs = [emu.empty(shape, dtype=t) for t in out_types]
        for p, o in zip(self.out_params, outs):
            if not p.raw and o.shape != shape:
                raise ValueError("Out shape is mismatched")
        values = list(args[:self.nin]) + outs
        views = [None if not emu.is_device(v) else (
            codegen.ArrayView(v.dtype, v.shape, v.strides) if p.raw else
            codegen.ArrayView(v.dtype, shape, np.broadcast_to(v, shape).strides)) for p, v in zip(params, values)]
        if self.reduce_dims:
            views, shape = codegen.reduce_dims(views, [p.raw for p in params], shape)
        infos, packed = [], []
        for i, (v, view) in enumerate(zip(values, views)):
            if view is None:  # a scalar, cast to the type its placeholder was bound to
                infos.append(codegen.scalar_arginfo(in_types[i]))
                packed.append(np.asarray(v, dtype=in_types[i]).tobytes())
            else:
                infos.append(codegen.array_arginfo(view))
                packed.append(_pack_array(v, view))
        infos.append(codegen.indexer_arginfo(shape))
        packed.append(_pack_indexer(shape))
        code = codegen.elementwise_code(self, tuple(infos), type_map)
        return code, packed, int(np.prod(shape, dtype=np.int64)), outs, list(in_types) + list(out_types)


class _ReductionKernel:
    """Full reductions (``axis=None``), the only kind xpnet launches."""

    def __init__(self, emu, in_params, out_params, map_expr, reduce_expr, post_map_expr, identity, name,
                 reduce_type, preamble, options):
        self.emu = emu
        self.in_params, self.out_params = codegen.param_info(in_params, out_params)
        self.params = codegen.reduction_params(self.in_params, self.out_params)
        self.map_expr, self.reduce_expr, self.post_map_expr = map_expr, reduce_expr, post_map_expr
        self.identity, self.name, self.preamble, self.options = str(identity), name, preamble, tuple(options)
        self.reduce_type = reduce_type or self.out_params[0].ctype

    def __call__(self, *args, out=None, axis=None, keepdims=False, stream=None):
        if axis is not None or keepdims:
            raise NotImplementedError("the emulator models full reductions only (axis=None)")
        code, packed, grid, block, out, dtypes = self.prepare(*args, out=out)
        module = build(codegen.cupy_headers(host=True) + code, [self.name], self.emu.mode, (codegen.include_dir(),))
        self.emu.launches.append(self.name)
        module.launch(self.name, packed, grid, block, self.emu._ftz(dtypes))
        return out

    def prepare(self, *args, out=None):
        """CuPy's steps before a full reduction: ``(source, packed args, grid, block, out, dtypes)``."""
        emu = self.emu
        if len(args) != len(self.in_params) or not all(emu.is_device(a) for a in args):
            raise TypeError(f"{self.name}: pass {len(self.in_params)} device arrays")
        in_types, out_types, _ = codegen.decide_types(self.in_params, self.out_params, [a.dtype.type for a in args],
                                                      [out.dtype.type] if out is not None else [])
        if out is None:
            out = emu.empty((), dtype=out_types[0])
        elif out.shape != ():
            raise ValueError("Out shape is mismatched")
        shape = np.broadcast_shapes(*[a.shape for a in args])
        views = [codegen.ArrayView(a.dtype, shape, np.broadcast_to(a, shape).strides) for a in args]
        views, shape = codegen.reduce_dims(views, [False] * len(views), shape)
        in_size = int(np.prod(shape, dtype=np.int64))
        type_dict = {p.ctype: t for p, t in zip(self.in_params + self.out_params, in_types + out_types)
                     if p.dtype is None}
        index_type = ("IndexT", "int64" if in_size > 0x7FFFFFFF else "int32")
        type_map = codegen._kernel._TypeMap(tuple(sorted(type_dict.items())) + (index_type,))
        block_size, block_stride, out_blocks = codegen.block_specs(in_size, 1, 1)
        infos = [codegen.array_arginfo(v) for v in views] + [
            codegen.array_arginfo(codegen.ArrayView(out.dtype, (), ())),
            codegen.indexer_arginfo(shape), codegen.indexer_arginfo(()), codegen.scalar_arginfo(np.int32)]
        packed = [_pack_array(a, v) for a, v in zip(args, views)] + [
            _pack_array(out), _pack_indexer(shape), _pack_indexer(()), np.int32(block_stride).tobytes()]
        code = codegen.reduction_code(self, self.params, tuple(infos), type_map, block_size)
        grid, block = _linear_launch(out_blocks * block_size, block_size)
        return code, packed, grid, block, out, list(in_types) + list(out_types)


class _RawModule:
    def __init__(self, emu, code, name_expressions):
        self.emu, self.code, self.names = emu, code, name_expressions
        self._module = None

    def get_function(self, name):
        if name not in self.names:
            raise NotImplementedError(f"{name} is not among the module's name_expressions")
        if self._module is None:
            self._module = build(self.code, list(self.names), self.emu.mode)
        return _RawFunction(self.emu, self._module, name)


class _RawFunction:
    def __init__(self, emu, module, name):
        self.emu, self.module, self.name = emu, module, name

    def __call__(self, grid, block, args, shared_mem=0, stream=None):
        packed, dtypes = [], []
        for a in args:
            if self.emu.is_device(a):
                packed.append(_pack_array(a))
                dtypes.append(a.dtype)
            elif isinstance(a, np.generic):
                packed.append(a.tobytes())
            else:  # CuPy would pass a Python int as 8 bytes whatever the parameter's type: refuse
                raise TypeError(f"{self.name}: pass device arrays and NumPy scalars (got {type(a).__name__})")
        self.emu.launches.append(self.name)
        self.module.launch(self.name, packed, tuple(grid), tuple(block), self.emu._ftz(dtypes))


# -- the CUDA runtime: devices, streams, events, pinned memory ---------------------------------------
class _Device:
    def __init__(self, index=0):
        if index != 0:
            raise NotImplementedError("the emulator models one GPU (device 0)")
        self.id = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __eq__(self, other):
        return isinstance(other, _Device) and other.id == self.id

    def __hash__(self):
        return hash(("emulated-gpu", self.id))

    def __repr__(self):
        return "<emulated CUDA Device 0>"

    @property
    def cublas_handle(self):
        return 1


class _Stream:
    def __init__(self, runtime, non_blocking=False, null=False):
        self.runtime, self.null = runtime, null
        self.pending: list = []  # (seq, copy) not yet performed
        self.ptr = 0 if null else id(self)

    def synchronize(self):
        self.flush(None)

    def flush(self, upto):
        keep = []
        for seq, copy in self.pending:
            if upto is None or seq <= upto:
                copy()
            else:
                keep.append((seq, copy))
        self.pending = keep

    def wait_event(self, event):
        event.synchronize()  # compute runs eagerly: what it waits for must be done now


class _Event:
    def __init__(self, runtime, *args, **kwargs):
        self.runtime, self.stream, self.seq = runtime, None, 0

    def record(self, stream=None):
        self.stream = stream or self.runtime.null_stream
        self.seq = self.runtime.seq

    def synchronize(self):
        if self.stream is not None:
            self.stream.flush(self.seq)

    @property
    def done(self):
        return self.stream is None or all(seq > self.seq for seq, _ in self.stream.pending)


class _Cuda:
    def __init__(self, emu):
        self.emu = emu
        self.seq = 0
        self.null_stream = _Stream(self, null=True)
        self.Device = _Device
        import cupy

        self.runtime = types.SimpleNamespace(memGetInfo=lambda: (emu.free_memory, 2 * emu.free_memory),
                                             getDeviceCount=lambda: 1, CUDA_R_32F=cupy.cuda.runtime.CUDA_R_32F,
                                             CUDA_R_64F=cupy.cuda.runtime.CUDA_R_64F,
                                             CUDA_R_16BF=cupy.cuda.runtime.CUDA_R_16BF)
        self.device = types.SimpleNamespace(get_cublas_handle=lambda: 1)
        self._streams: list = []
        self._pinned: dict[int, str] = {}

    def Stream(self, non_blocking=False):
        s = _Stream(self, non_blocking)
        self._streams.append(weakref.ref(s))
        return s

    def Event(self, *args, **kwargs):
        return _Event(self, *args, **kwargs)

    def get_current_stream(self):
        return self.null_stream

    def _copy(self, dst, src, stream):
        if stream is None or stream.null:
            dst.view(np.ndarray)[...] = src
            return
        self.seq += 1
        src_ref = weakref.ref(src.base if src.base is not None else src)  # pinned memory: may be released
        src_view = (src.__array_interface__["data"][0], src.shape, src.dtype)
        emu = self.emu

        def copy():
            base = src_ref()
            if base is None:
                emu.errors.append("a copy ran from pinned memory that had been released")
                return
            addr, shape, dtype = src_view
            data = np.ctypeslib.as_array((np.ctypeslib.as_ctypes_type(dtype) * int(np.prod(shape))).from_address(addr))
            dst.view(np.ndarray)[...] = data.reshape(shape)

        stream.pending.append((self.seq, copy))

    def _empty_pinned(self, shape, dtype=np.float32):
        a = np.empty(shape, dtype=dtype)
        emu, streams = self.emu, self._streams

        def released(addr=_address(a)):  # noqa: B008 - the address is bound now, by design
            in_flight = any(s() is not None and s().pending for s in streams)
            if in_flight:
                emu.errors.append(f"pinned buffer at {addr:#x} released while a copy on a stream was in flight")

        weakref.finalize(a, released)
        return a


class _Cublas:
    """cuBLAS ``gemmEx`` on the host: column-major, ``op(A)`` of m x k times ``op(B)`` of k x n.

    With ``CUBLAS_COMPUTE_32F_FAST_TF32`` the inputs are rounded to TF32 (10 mantissa bits,
    round to nearest) before a float32 product, as tensor cores do.  bfloat16 operands
    (``CUDA_R_16BF``, ``CUBLAS_COMPUTE_32F``) are multiplied exactly and summed in float32, and the
    result is rounded once to bfloat16."""

    # cuBLAS's ABI values (cublas_api.h); CuPy's cublas module cannot load without libcublas.
    CUBLAS_OP_N, CUBLAS_OP_T = 0, 1
    CUBLAS_COMPUTE_32F, CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_COMPUTE_64F = 68, 77, 70
    CUBLAS_GEMM_DEFAULT, CUBLAS_GEMM_DEFAULT_TENSOR_OP = -1, 99

    def __init__(self, emu):
        self.emu = emu
        self.R32F, self.R64F = emu.cuda.runtime.CUDA_R_32F, emu.cuda.runtime.CUDA_R_64F
        self.R16BF = emu.cuda.runtime.CUDA_R_16BF
        self.calls: list[int] = []  # compute types, in order

    def _matrix(self, ptr, dtype, ld, rows, cols, trans):
        """The column-major matrix at ``ptr`` (ld >= stored rows), as op() sees it."""
        stored_rows, stored_cols = (cols, rows) if trans else (rows, cols)
        if ld < max(1, stored_rows):
            raise KernelError(f"gemmEx: ld={ld} < rows={stored_rows}")
        n = ld * (stored_cols - 1) + stored_rows
        dtype = np.dtype(dtype)
        storage = np.uint16 if dtype == self.emu._bf16 else dtype  # ctypes has no bfloat16: its bits
        buf = np.ctypeslib.as_array((np.ctypeslib.as_ctypes_type(storage) * n).from_address(ptr)).view(dtype)
        m = np.lib.stride_tricks.as_strided(buf, (stored_rows, stored_cols), (buf.itemsize, ld * buf.itemsize))
        return m.T if trans else m

    def gemmEx(self, handle, transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb, beta, C, Ctype,
               ldc, compute_type, algo):
        dtypes: dict[int, Any] = {self.R32F: np.float32, self.R64F: np.float64}
        if self.emu._bf16 is not None:
            dtypes[self.R16BF] = self.emu._bf16
        if not (Atype == Btype == Ctype) or Atype not in dtypes:
            raise NotImplementedError("the emulated gemmEx models float32, float64 and bfloat16 products of one type")
        dt = dtypes[Atype]
        if Atype == self.R16BF and compute_type != self.CUBLAS_COMPUTE_32F:
            raise NotImplementedError("the emulated gemmEx models bfloat16 products with CUBLAS_COMPUTE_32F only")
        wide = np.float64 if dt == np.float64 else np.float32  # the compute type's precision (and alpha's)
        a = self._matrix(A, dt, lda, m, k, transa == self.CUBLAS_OP_T).astype(wide)
        b = self._matrix(B, dt, ldb, k, n, transb == self.CUBLAS_OP_T).astype(wide)
        al = np.ctypeslib.as_array((np.ctypeslib.as_ctypes_type(wide) * 1).from_address(alpha))[0]
        be = np.ctypeslib.as_array((np.ctypeslib.as_ctypes_type(wide) * 1).from_address(beta))[0]
        if compute_type == self.CUBLAS_COMPUTE_32F_FAST_TF32:
            a, b = tf32_round(a), tf32_round(b)
        self.calls.append(compute_type)
        c = self._matrix(C, dt, ldc, m, n, False)
        c[...] = (al * (a @ b) + (be * c.astype(wide) if be != 0 else 0)).astype(dt)  # float32 sums, one rounding


def tf32_round(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to TF32's 10-bit mantissa (nearest, ties away from zero)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)
    finite = np.isfinite(x)
    return np.where(finite, rounded.view(np.float32), x).astype(np.float32)


def emulated_backend(emulator: Emulator):
    """A :class:`xpnet.backend.Backend` on the emulated GPU: ``MLP(..., device=emulated_backend(emu))``."""
    from ...backend import Backend

    return Backend(EmulatedNamespace(emulator), emulator.cuda.Device(0), "cupy", "emulated-cuda:0", lib=emulator)


class EmulatedNamespace:
    """The array-API namespace of the emulated GPU: array-api-compat's NumPy namespace, with
    ``device=`` the emulated device and every array result a device array."""

    def __init__(self, emulator: Emulator):
        import array_api_compat.numpy as xnp

        self._xnp, self._emu = xnp, emulator
        self.__name__ = "xpnet.kernels.emulator"

    def __getattr__(self, name):
        attr = getattr(self._xnp, name)
        if not callable(attr) or isinstance(attr, type) or name in ("isdtype",):
            return attr
        emu = self._emu

        def fn(*args, **kwargs):
            if "device" in kwargs:
                dev = kwargs.pop("device")
                if dev is not None and dev != emu.cuda.Device(0):
                    raise ValueError(f"device={dev!r} is not the emulated GPU")
            out = attr(*args, **kwargs)
            if isinstance(out, np.ndarray) and not emu.is_device(out):
                return out.view(emu.ndarray)
            if isinstance(out, np.generic):
                return np.asarray(out).view(emu.ndarray)
            return out

        return fn
