"""GPU code checked without a GPU: every module imports against the real CuPy, and every kernel
the GPU kernel set can build compiles with NVRTC from the source CuPy generates for it.

The sources come from the same code path the emulator launches (``Emulator``'s
``ElementwiseKernel.prepare`` / ``ReductionKernel.prepare``, which call CuPy's own code
generator), for float16, float32 and float64, and are compiled with CuPy's NVRTC options for
sm_80 and sm_90.  NVRTC comes from the ``nvidia-cuda-nvrtc-cu12`` wheel (test extra).
"""

from __future__ import annotations

import importlib
import pkgutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import xpnet
from xpnet import optim
from xpnet.activations import ACTIVATIONS
from xpnet.kernels import cuda_source as src

cupy = pytest.importorskip("cupy", reason="CuPy is in the test extra: pip install -e '.[test]'")
from xpnet.kernels import cupy_codegen as codegen  # noqa: E402
from xpnet.kernels.cuda import _CUPY_BF16_PREAMBLE, _CUPY_PREAMBLE  # noqa: E402
from xpnet.kernels.emulator import Emulator  # noqa: E402

ARCHS = ("80", "90")
BINDINGS = {"float16": ("float16", "float32"), "float32": ("float32", "float32"), "float64": ("float64", "float64")}


def test_every_module_imports_with_cupy_installed():
    names = [m.name for m in pkgutil.walk_packages(xpnet.__path__, "xpnet.")]
    assert "xpnet.kernels.cuda" in names and "xpnet.kernels.emulator" in names
    for name in names:
        if name != "xpnet.__main__":  # runs the CLI
            importlib.import_module(name)


def _flat(spec: src.Elementwise) -> bool:
    return not spec.name.startswith(("xpnet_bias_act", "xpnet_act_grad", "xpnet_bias_add"))


def _elementwise_sources():
    """(name, CuPy's source) of every elementwise kernel, for each dtype it can be built for."""
    emu = Emulator()
    for spec in src.all_elementwise():
        mixed = spec in (src.SCALE_CAST, src.UNSCALE)
        for dtype in (["float16"] if mixed else BINDINGS):
            t, s = (np.dtype(d) for d in BINDINGS[dtype])
            kernel = emu.ElementwiseKernel(spec.in_params, spec.out_params, spec.body, spec.name,
                                           preamble=src.cuda_source() + _CUPY_PREAMBLE)
            args = []
            for p in kernel.in_params + kernel.out_params:
                typ = t if p.ctype == "T" else s
                if p.name in spec.scalars:
                    args.append(1.0)
                elif p.raw:
                    args.append(emu.zeros((1,), typ))
                elif _flat(spec):
                    args.append(emu.zeros((96,), typ))
                else:
                    args.append(emu.zeros((8,) if p.name == "b" else (4, 8), typ))
            yield f"{spec.name}[{dtype}]", codegen.cupy_headers() + kernel.prepare(*args)[0]


def _reduction_sources():
    emu = Emulator()
    for spec in (src.COUNT_NONFINITE, src.COUNT_NOT_PROBABILITY, src.SUM_OF_SQUARES, src.count_bad_labels(10),
                 src.clip_scale(0.3)):
        for dtype in (["int64"] if spec.name.startswith("xpnet_count_bad") else BINDINGS):
            t, s = (np.dtype(d) for d in BINDINGS.get(dtype, ("int64", "int64")))
            kernel = emu.ReductionKernel(spec.in_params, spec.out_params, spec.map_expr, "a + b", spec.post_map_expr,
                                         "0", spec.name,
                                         preamble=src.cuda_source() + _CUPY_PREAMBLE if spec.preamble else "")
            out = emu.zeros((), s if "S y" in spec.out_params else np.int64)
            yield f"{spec.name}[{dtype}]", codegen.cupy_headers() + kernel.prepare(emu.zeros((1000,), t), out=out)[0]


SOURCES = dict(_elementwise_sources()) | dict(_reduction_sources())


def test_the_catalogue_covers_every_kernel_and_dtype():
    for name in ACTIVATIONS:
        for dtype in BINDINGS:
            assert f"xpnet_bias_act_{name}[{dtype}]" in SOURCES and f"xpnet_act_grad_{name}[{dtype}]" in SOURCES
            assert f"xpnet_bias_act_dropout_{name}[{dtype}]" in SOURCES
            assert f"xpnet_act_grad_dropout_{name}[{dtype}]" in SOURCES
    rules = {cls.rule for cls in optim.OPTIMIZERS.values()} - {"adamw"}  # AdamW runs the Adam kernel
    assert rules == set(src.OPTIMIZER_KERNELS)
    for rule, spec in src.OPTIMIZER_KERNELS.items():
        assert sum(k.startswith(f"xpnet_{rule}_") for k in SOURCES) == 3 * 2 ** len(spec.buffers)
    assert all(f"{src.clip_scale(0.3).name}[{dtype}]" in SOURCES for dtype in BINDINGS)
    assert "float16 " in SOURCES["xpnet_bias_act_relu[float16]"] or "float16" in SOURCES["xpnet_bias_act_relu[float16]"]


def _compile_all(items):
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda kv: (kv[0], codegen.nvrtc_compile(kv[1][0], kv[1][1], *kv[1][2:])), items))


@pytest.mark.parametrize("arch", ARCHS)
def test_every_kernel_compiles_with_nvrtc_as_cupy_compiles_it(arch):
    items = [(name, (code, arch)) for name, code in SOURCES.items()]
    loss_names = [f"xpnet_{k}<{t}, {t}>" for k in src.LOSS_KERNELS for t in ("float", "double")]
    items.append(("row kernels (RawModule)", (src.cuda_source(), arch, ("-std=c++14",), loss_names)))
    for name, cubin in _compile_all(items):
        assert len(cubin) > 0, name


def test_the_nvrtc_check_can_fail():
    good = SOURCES["xpnet_bias_act_gelu[float32]"]
    broken = good.replace("xpnet_gelu_fwd<C>(v)", "xpnet_gelu_fwd<C>(v, v)", 1)
    assert broken != good
    from cupy.cuda.compiler import CompileException

    with pytest.raises(CompileException):
        codegen.nvrtc_compile(broken, "90")


# -- bfloat16 (precision="bf16"): the kernels its bfloat16 kernel set launches, T = bfloat16 -------------
def _bf16_dtype():
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes is in the test extra")
    if int(cupy.__version__.split(".")[0]) < 14:
        pytest.skip("CuPy >= 14 generates bfloat16 kernels")
    return np.dtype(ml_dtypes.bfloat16)


def bf16_sources() -> dict[str, str]:
    """(name, CuPy's source) of every kernel a bfloat16 ``CupyOps`` builds: bias + activation and
    derivative for every activation, the output layer's bias add, the casts in and out of float32
    (loss gradient, gradients), and the reductions over bfloat16 arrays; state ``S`` is float32."""
    bf16, f32 = _bf16_dtype(), np.dtype("float32")
    emu = Emulator()
    out = {}
    specs = [src.BIAS_ADD, src.SCALE_CAST, src.UNSCALE] + [
        f(n) for n in ACTIVATIONS for f in (src.bias_act, src.act_grad, src.bias_act_dropout, src.act_grad_dropout)]
    for spec in specs:
        kernel = emu.ElementwiseKernel(spec.in_params, spec.out_params, spec.body, spec.name,
                                       preamble=src.cuda_source() + _CUPY_PREAMBLE + _CUPY_BF16_PREAMBLE)
        args = []
        for p in kernel.in_params + kernel.out_params:
            typ = bf16 if p.ctype == "T" else f32
            if p.name in spec.scalars:
                args.append(1.0)
            elif _flat(spec):
                args.append(emu.zeros((96,), typ))
            else:
                args.append(emu.zeros((8,) if p.name == "b" else (4, 8), typ))
        out[f"{spec.name}[bfloat16]"] = codegen.cupy_headers() + kernel.prepare(*args)[0]
    for spec in (src.COUNT_NONFINITE, src.SUM_OF_SQUARES):
        kernel = emu.ReductionKernel(spec.in_params, spec.out_params, spec.map_expr, "a + b", spec.post_map_expr, "0",
                                     spec.name)
        y = emu.zeros((), f32 if "S y" in spec.out_params else np.int64)
        out[f"{spec.name}[bfloat16]"] = codegen.cupy_headers() + kernel.prepare(emu.zeros((1000,), bf16), out=y)[0]
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_every_bf16_kernel_compiles_with_nvrtc_as_cupy_compiles_it(arch):
    sources = bf16_sources()
    assert len(sources) == 3 + 4 * len(ACTIVATIONS) + 2
    assert all('#include "cupy/bfloat16.cuh"' in code for code in sources.values())  # CuPy's own bfloat16 type
    assert "CArray<bfloat16, 2" in sources["xpnet_bias_act_relu[bfloat16]"]
    for name, cubin in _compile_all([(name, (code, arch)) for name, code in sources.items()]):
        assert len(cubin) > 0, name
