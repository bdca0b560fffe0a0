"""CuPy's own code generation, called without a GPU.

CuPy turns an ``ElementwiseKernel`` or ``ReductionKernel`` into CUDA source at its first call,
from the argument types: it binds the type placeholders (``T``, ``S``) to dtypes, casts Python
scalars to the bound types, broadcasts and merges array dimensions, and writes a
``__global__`` function over ``CArray`` / ``CIndexer`` parameters.  Those steps need no GPU,
and this module calls CuPy's own functions for each (``_decide_params_type``,
``_get_elementwise_kernel_code``, ``_ReductionKernel_get_cached_function_code``, the
compiler's option assembly), so the source compiled by the NVRTC check and executed by the
host emulator is the source CuPy builds on a GPU, byte for byte.  Only the merging of array
dimensions (``_reduced_view_core``, a ``cdef`` function) is restated here, line for line.

Requires CuPy (any ``cupy-cuda*`` wheel imports without a GPU).
"""

from __future__ import annotations

from dataclasses import dataclass

import cupy
import numpy as np
from cupy._core import _carray, _kernel, _reduction, _scalar

ARG_NDARRAY, ARG_INDEXER, ARG_SCALAR = 1, 2, 3  # cupy._core._kernel._ArgKind
INT32_MAX = (1 << 31)


def param_info(in_params: str, out_params: str) -> tuple[tuple, tuple]:
    return _kernel._get_param_info(in_params, True), _kernel._get_param_info(out_params, False)


def elementwise_params(in_params, out_params) -> tuple:
    """Parameter list of an ``ElementwiseKernel`` (as its ``__init__``): inputs, outputs, indexer."""
    return in_params + out_params + _kernel._get_param_info("CIndexer _ind", False)


def decide_types(in_params, out_params, in_dtypes, out_dtypes):
    """``(in_types, out_types, type_map)`` as CuPy binds them (None for scalars / missing outputs)."""
    return _kernel._decide_params_type(in_params, out_params, tuple(in_dtypes), tuple(out_dtypes))


@dataclass(frozen=True)
class ArrayView:
    """What CuPy's kernel code depends on for one array argument (its data is not needed)."""

    dtype: np.dtype
    shape: tuple
    strides: tuple  # in bytes

    @property
    def c_contiguous(self) -> bool:
        expected, ok = self.dtype.itemsize, True
        for n, s in zip(reversed(self.shape), reversed(self.strides)):
            if n != 1 and s != expected:
                ok = False
            expected *= n
        return ok

    @property
    def index_32_bits(self) -> bool:
        span = sum((n - 1) * abs(s) for n, s in zip(self.shape, self.strides)) + self.dtype.itemsize
        return max(span, int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize) <= INT32_MAX


def array_arginfo(v: ArrayView):
    return _kernel._ArgInfo(ARG_NDARRAY, cupy.ndarray, v.dtype, len(v.shape), v.c_contiguous, v.index_32_bits)


def scalar_arginfo(dtype):
    return _kernel._ArgInfo(ARG_SCALAR, _scalar.CScalar, np.dtype(dtype), 0, True, True)


def indexer_arginfo(shape):
    size = int(np.prod(shape, dtype=np.int64))
    return _kernel._ArgInfo(ARG_INDEXER, _carray.Indexer, None, len(shape), True, size <= INT32_MAX)


def reduce_dims(views: list, raw: list[bool], shape: tuple) -> tuple[list, tuple]:
    """CuPy's ``_reduce_dims`` / ``_reduced_view_core``: merge axes that every array walks
    contiguously.  ``views`` holds ArrayView or None (scalars); returns new views and shape."""
    if len(shape) <= 1 or not views:
        return views, shape
    arrays = [i for i, v in enumerate(views) if v is not None and not raw[i]]
    if len(views) == 1:  # the single-argument fast path (ndarray.reduced_view)
        if not arrays:
            return views, shape
        return _single_reduced(views, shape)
    strided = [i for i in arrays if not views[i].c_contiguous]
    if not arrays:
        return views, shape
    if strided and len(shape) == 2:
        return views, shape
    out = list(views)
    if not strided:
        total = int(np.prod(shape, dtype=np.int64))
        for i in arrays:
            out[i] = ArrayView(views[i].dtype, (total,), (views[i].dtype.itemsize,))
        return out, (total,)
    vecshape, axes, last = list(shape), [], -1
    for ax in range(len(shape)):
        if vecshape[ax] == 1:
            continue
        if last < 0:
            last = ax
            continue
        if any(views[i].strides[ax] * vecshape[ax] != views[i].strides[last] for i in strided):
            axes.append(last)
        else:
            vecshape[ax] *= vecshape[last]
        last = ax
    if last >= 0:
        axes.append(last)
    if len(axes) == len(shape):
        return views, shape
    new_shape = tuple(vecshape[ax] for ax in axes)
    for i in arrays:
        out[i] = ArrayView(views[i].dtype, new_shape, tuple(views[i].strides[ax] for ax in axes))
    return out, new_shape


def _single_reduced(views, shape):
    v = views[0]
    if v.c_contiguous:
        return [ArrayView(v.dtype, (int(np.prod(shape)),), (v.dtype.itemsize,))], (int(np.prod(shape)),)
    return views, shape  # ndarray.reduced_view of a strided array: left as it is (not used by xpnet)


def elementwise_code(kernel, arginfos: tuple, type_map) -> str:
    """The source CuPy compiles for ``kernel`` (an ``ElementwiseKernel`` spec) and these arguments."""
    return _kernel._get_elementwise_kernel_code(arginfos, type_map, kernel.params, kernel.operation, kernel.name,
                                                kernel.preamble)


def reduction_params(in_params, out_params) -> tuple:
    """Parameter list of a ``ReductionKernel`` (as ``_AbstractReductionKernel.__init__``)."""
    return (in_params + out_params + _kernel._get_param_info("CIndexer _in_ind, CIndexer _out_ind", False)
            + _kernel._get_param_info("int32 _block_stride", True))


def reduction_code(kernel, params, arginfos, type_map, block_size: int) -> str:
    return _reduction._ReductionKernel_get_cached_function_code(
        len(kernel.in_params), len(kernel.out_params), params, arginfos, type_map, kernel.name, block_size,
        kernel.reduce_type, kernel.identity, kernel.map_expr, kernel.reduce_expr, kernel.post_map_expr,
        kernel.preamble, kernel.options)


def block_specs(in_size: int, out_size: int, contiguous_size: int) -> tuple[int, int, int]:
    """``(block_size, block_stride, out_block_num)`` as CuPy's ``_get_block_specs`` (CUDA)."""
    return _reduction._get_block_specs(in_size, out_size, contiguous_size, -1)


def cupy_headers(host: bool = False) -> str:
    """The ``#include`` lines ``compile_with_cache`` puts before elementwise and reduction kernels.

    ``host=True`` leaves out complex numbers and atomics (built on CCCL/thrust, which does not
    compile for the host): xpnet's kernels use neither, and ``host_cuda.h`` has the atomics.
    """
    from cupy._core import core

    skip = ("cupy/complex.cuh", "cupy/atomics.cuh") if host else ()
    return "".join(f"#include <{h}>\n" for h in core._cupy_header_list if h not in skip)


def nvrtc_options(options: tuple = ()) -> tuple:
    """The NVRTC options CuPy compiles with (``assemble_cupy_compiler_options`` + ``-ftz=true``)."""
    from cupy._core import core

    return tuple(core.assemble_cupy_compiler_options(tuple(options))) + ("-ftz=true",)


def include_dir() -> str:
    from cupy._core import core

    return core._get_header_dir_path()


def nvrtc_compile(source: str, arch: str, options: tuple = (), name_expressions=None) -> bytes:
    """Compile ``source`` to a cubin for ``sm_<arch>`` with NVRTC, with the options CuPy's
    ``_compile_using_nvrtc_no_warning`` adds (``-arch=sm_XX``, ``--device-as-default-execution-space``)
    to ``nvrtc_options(options)``.  CuPy's own program wrapper is used; the only step skipped is
    asking the driver for the device's architecture, which needs a GPU."""
    from cupy.cuda import compiler

    opts = nvrtc_options(options) + (f"-arch=sm_{arch}", "--device-as-default-execution-space")
    program = compiler._NVRTCProgram(source, "xpnet_check.cu", name_expressions=name_expressions, method="cubin")
    cubin, _ = program.compile(opts)
    return cubin
