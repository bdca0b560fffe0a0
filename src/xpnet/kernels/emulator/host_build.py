"""Compile CUDA source for the host with the system C++ compiler and launch it like CUDA.

A module's source (CuPy's generated kernel, or xpnet's own ``RawModule`` source) is compiled
after ``host_cuda.h`` into a shared library with one launcher per kernel; the launcher takes
CUDA's ``kernelParams`` convention (an array of pointers, one per argument), so arguments are
packed exactly as CuPy packs them for ``cuLaunchKernel``.  Libraries are cached on disk by a
hash of the source and the floating-point mode, so a module compiles once per machine.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

HEADER = Path(__file__).with_name("host_cuda.h")
BF16_INCLUDE = Path(__file__).with_name("include")  # cuda_bf16.h for the host (only bfloat16 kernels use it)
_BARRIER_WORDS = ("__syncthreads", "__shfl", "__syncwarp")


def compiler() -> str | None:
    """The host C++ compiler (``$CXX`` or ``g++``), or None when there is none."""
    return shutil.which(os.environ.get("CXX", "g++"))


def cache_dir() -> Path:
    root = os.environ.get("XPNET_EMULATOR_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "xpnet-emulator")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class FloatMode:
    """How the host compiles device arithmetic.

    ``fma``: contract ``a * b + c`` into fused multiply-adds, as NVRTC does by default
    (``--fmad=true``); off, every product is rounded before the add.  ``ftz``: float32
    kernels run with denormals flushed to zero, as CuPy compiles (``-ftz=true``).
    """

    fma: bool = True
    ftz: bool = True

    def flags(self) -> list[str]:
        return ["-mfma", "-ffp-contract=fast"] if self.fma else ["-ffp-contract=off"]


class KernelError(RuntimeError):
    """A kernel did something a GPU would not allow (or that the emulator does not model)."""


class HostModule:
    """A compiled module: ``launch(name, args, grid, block, ftz)``."""

    def __init__(self, lib_path: Path, names: list[str], uses_barriers: bool):
        self._lib = ctypes.CDLL(str(lib_path))
        self.names = names
        self.uses_barriers = uses_barriers
        self._fns = {}
        for i, name in enumerate(names):
            fn = getattr(self._lib, f"xpnet_emu_launch_{i}")
            fn.restype = ctypes.c_int
            fn.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_uint),
                           ctypes.POINTER(ctypes.c_uint), ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
            self._fns[name] = fn

    def launch(self, name: str, packed: list[bytes], grid, block, ftz: bool) -> None:
        keep = [ctypes.create_string_buffer(b, max(len(b), 1)) for b in packed]
        ptrs = (ctypes.c_void_p * max(len(keep), 1))(*[ctypes.cast(k, ctypes.c_void_p) for k in keep])
        g = (ctypes.c_uint * 3)(*(tuple(grid) + (1, 1, 1))[:3])
        b = (ctypes.c_uint * 3)(*(tuple(block) + (1, 1, 1))[:3])
        err = ctypes.create_string_buffer(512)
        if self._fns[name](ptrs, g, b, int(self.uses_barriers), int(ftz), err, 512):
            raise KernelError(f"kernel {name}: {err.value.decode()}")


_loaded: dict[str, HostModule] = {}


def build(source: str, kernel_exprs: list[str], mode: FloatMode, include_dirs: tuple[str, ...] = ()) -> HostModule:
    """Compile ``source`` (CUDA C++) for the host with a launcher for each kernel expression
    (a function name, or a template instance such as ``f<float, float>``)."""
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("the GPU emulator needs a C++ compiler (g++ or $CXX): apt-get install g++")
    # extern "C" only fixes the symbol name for the CUDA driver; on the host it would clash
    # when several kernels of one name live in one library, and launchers call by address.
    body = re.sub(r'extern\s+"C"\s+', "", source)
    launchers = "".join(
        f'extern "C" int xpnet_emu_launch_{i}(void** a, const unsigned* g, const unsigned* b, int fibers, int ftz, '
        f"char* err, int n) {{ return xpnet_emu::launch(&{expr}, a, g, b, fibers, ftz, err, n); }}\n"
        for i, expr in enumerate(kernel_exprs))
    text = f'#include "{HEADER}"\n{body}\n{launchers}'
    flags = ["-std=c++17", "-O1", "-shared", "-fPIC", "-w", *mode.flags(), *[f"-I{d}" for d in include_dirs]]
    headers = HEADER.read_text()
    if "bfloat16" in body:  # CuPy's bfloat16.cuh includes <cuda_bf16.h>: the host's stands in for it
        flags.append(f"-I{BF16_INCLUDE}")
        headers += (BF16_INCLUDE / "cuda_bf16.h").read_text()
    key = hashlib.sha256((text + headers + " ".join(flags)).encode()).hexdigest()[:24]
    if key in _loaded:
        return _loaded[key]
    lib = cache_dir() / f"{key}.so"
    if not lib.exists():
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "module.cpp"
            src.write_text(text)
            out = Path(tmp) / "module.so"
            result = subprocess.run([cxx, *flags, str(src), "-o", str(out)], capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError(f"host compile of CUDA source failed:\n{result.stderr[-6000:]}")
            os.replace(out, lib)  # atomic: a parallel test worker never loads half a library
    module = HostModule(lib, list(kernel_exprs), any(w in body for w in _BARRIER_WORDS))
    _loaded[key] = module
    return module
