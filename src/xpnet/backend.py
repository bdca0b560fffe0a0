"""Array namespace, device and dtype resolution, and host <-> device transfers.

Everything numerical in xpnet is written against the Python array API standard.
A :class:`Backend` bundles the namespace (``xp``), the device arrays live on and the
helpers that move host (NumPy) data there and back.  Random numbers are always drawn
on the host with NumPy's seeded generator and moved once, so one seed gives the same
weights and the same mini-batch order on every backend.
"""

from __future__ import annotations

import re
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, cast

import array_api_compat as aac
import numpy as np

from ._typing import Array, Namespace

FLOAT_DTYPES = ("float16", "float32", "float64")


@dataclass(frozen=True)
class Backend:
    """Where a model's arrays live: namespace ``xp``, ``device`` and library ``kind``.

    ``kind`` is ``"numpy"``, ``"cupy"`` or ``"generic"`` (any other array-API library);
    fused kernels exist only for the first two.
    """

    xp: Any
    device: Any
    kind: str
    name: str
    lib: Any = None  # the array library behind xp: numpy, cupy, or xpnet's GPU emulator (kind "cupy")

    # -- creation ------------------------------------------------------------------
    def dtype(self, name: str) -> Any:
        """The namespace's dtype object for a dtype name such as ``"float32"``; ``"bfloat16"`` is
        ``ml_dtypes.bfloat16`` (the type NumPy arrays and CuPy >= 14 arrays hold)."""
        if name == "bfloat16":
            return bfloat16_dtype()
        return getattr(self.xp, name)

    def zeros(self, shape: int | tuple[int, ...], dtype: str) -> Array:
        with self.context():
            return self.xp.zeros(shape, dtype=self.dtype(dtype), device=self.device)

    def from_host(self, array: np.ndarray, dtype: str | None = None) -> Array:
        """Copy a host NumPy array to this backend's device (optionally casting first)."""
        array = np.ascontiguousarray(array if dtype is None else array.astype(dtype, copy=False))
        if self.kind == "numpy":
            return array
        with self.context():
            if self.kind == "cupy":
                return self.lib.asarray(array)
            return self.xp.asarray(array, device=self.device)

    def context(self) -> AbstractContextManager[Any]:
        """Where a step runs: CuPy creation functions ignore ``device=``, so a device context
        selects the GPU; NumPy's overflow warnings are silenced because a diverging loss is
        reported once, clearly, by ``TerminateOnNaN``."""
        if self.kind == "cupy":
            return cast(AbstractContextManager[Any], self.device)  # a cupy.cuda.Device
        if self.kind == "numpy":
            return np.errstate(over="ignore", invalid="ignore", divide="ignore")
        return _NULL_CONTEXT

    # -- inspection ----------------------------------------------------------------
    def owns(self, array: object) -> bool:
        """True when ``array`` already belongs to this namespace and device."""
        if not aac.is_array_api_obj(array) or isinstance(array, (int, float)):
            return False
        if self.kind == "numpy":
            return type(array) is np.ndarray
        if self.kind == "cupy":
            return isinstance(array, self.lib.ndarray) and array.device.id == self.device.id
        if aac.array_namespace(array) is not self.xp:
            return False
        return _same_device(aac.device(array), self.device)


class _NullContext:
    def __enter__(self) -> _NullContext:
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        return False


_NULL_CONTEXT = _NullContext()


def _same_device(a: Any, b: Any) -> bool:
    return a == b or str(a) == str(b)


def library_name(array: object) -> str:
    """Short name of the library an array comes from ("numpy", "torch", ...)."""
    if isinstance(array, np.ndarray):  # a subclass with .get() is a device array of the GPU emulator
        return "cupy" if hasattr(array, "get") else "numpy"
    module = type(array).__module__.split(".")[0]
    return module


def to_host(array: Any) -> np.ndarray:
    """Any array-API array (or array-like) as a host NumPy array (a copy only if needed)."""
    if type(array) is np.ndarray:
        return array
    if aac.is_cupy_array(array) or (isinstance(array, np.ndarray) and hasattr(array, "get")):  # CuPy, emulated GPU
        return cast(np.ndarray, array.get())
    if isinstance(array, np.ndarray):
        return np.asarray(array)
    if aac.is_torch_array(array):
        return array.detach().cpu().numpy()
    if aac.is_array_api_obj(array):
        xp = aac.array_namespace(array)
        if aac.is_array_api_strict_namespace(xp):
            array = aac.to_device(array, xp.Device("CPU_DEVICE"))
        return np.asarray(array)
    return np.asarray(array)


def resolve_backend(device: str | int | Backend | Any = None, xp: Namespace | None = None) -> Backend:
    """Turn the user's ``device`` / ``xp`` arguments into a :class:`Backend`.

    * ``device=None`` or ``"cpu"`` with no ``xp``: NumPy on the host.
    * ``"cuda"`` / ``"cuda:N"``: CuPy on GPU ``N`` (an error names the missing piece).
    * ``xp=<array-API namespace>``: that library, on ``device`` or its default device.
    """
    if isinstance(device, Backend):  # an explicit backend, e.g. xpnet's GPU emulator in tests
        return device
    if xp is not None:
        namespace = aac.array_namespace(xp.asarray(0.0))  # the compat wrapper, if any
        if aac.is_numpy_namespace(namespace) and device in (None, "cpu"):
            return _numpy_backend()
        if aac.is_cupy_namespace(namespace):
            return _cupy_backend(_cuda_index(device if device is not None else "cuda"))
        probe = xp.asarray(0.0) if device is None else xp.asarray(0.0, device=device)
        dev = aac.device(probe)
        return Backend(namespace, dev, "generic", f"{namespace.__name__.split('.')[-1]}:{dev}")
    if device is None or device == "cpu":
        return _numpy_backend()
    if isinstance(device, str) and device.startswith("cuda"):
        return _cupy_backend(_cuda_index(device))
    raise ValueError(
        f"device={device!r} is not understood: use 'cpu', 'cuda' or 'cuda:N', or pass "
        "xp=<array-API namespace> together with one of its devices."
    )


def _numpy_backend() -> Backend:
    return Backend(aac.array_namespace(np.empty(0)), "cpu", "numpy", "numpy:cpu", lib=np)


def _cuda_index(device: object) -> int:
    if isinstance(device, int):
        return device
    match = re.fullmatch(r"cuda(?::(\d+))?", str(device))
    if match is None:
        raise ValueError(f"device={device!r} is not understood: use 'cuda' or 'cuda:N' (N = GPU index).")
    return int(match.group(1) or 0)


class DeviceUnavailableError(RuntimeError):
    """The device asked for cannot be used here (no CuPy, no driver, no GPU): a usage error."""


def _cupy_backend(index: int) -> Backend:
    try:
        import cupy
    except ImportError as exc:
        raise DeviceUnavailableError(
            "device='cuda' needs CuPy, which is not installed. Install the extra that matches "
            "your CUDA toolkit: pip install 'xpnet[cuda12]' or pip install 'xpnet[cuda13]'."
        ) from exc
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver missing or broken
        raise DeviceUnavailableError(
            f"device='cuda:{index}' needs an NVIDIA GPU and driver, but CUDA reports: {exc}. "
            "Use device='cpu' on this machine."
        ) from exc
    if count == 0:
        raise DeviceUnavailableError("device='cuda' needs an NVIDIA GPU, but CUDA finds none. Use device='cpu'.")
    if index >= count:
        raise ValueError(f"device='cuda:{index}' does not exist: this machine has {count} GPU(s), 0..{count - 1}.")
    import array_api_compat.cupy as cpx

    return Backend(cpx, cupy.cuda.Device(index), "cupy", f"cupy:cuda:{index}", lib=cupy)


def gpu_available() -> bool:
    """Whether CuPy imports and sees at least one CUDA device (never raises)."""
    import importlib.util

    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy

        return bool(cupy.cuda.runtime.getDeviceCount() > 0)
    except Exception:
        return False


BF16_MIN_CUPY = (14, 0)  # the first CuPy with bfloat16 arrays (ml_dtypes.bfloat16; CuPy PR 9494)


def bfloat16_dtype() -> Any:
    """``ml_dtypes.bfloat16`` (a NumPy dtype), or a clear ImportError naming what to install."""
    try:
        import ml_dtypes
    except ImportError as exc:
        raise ImportError("bfloat16 needs the ml_dtypes package (NumPy's and CuPy's bfloat16 type): "
                          "pip install ml_dtypes, or pip install 'xpnet[bf16]'.") from exc
    return ml_dtypes.bfloat16


def check_bfloat16(backend: Backend) -> None:
    """Raise a clear error when ``backend`` cannot train in bfloat16: ``ml_dtypes`` missing, CuPy older
    than :data:`BF16_MIN_CUPY`, or a GPU older than sm_80 (no bfloat16 GEMMs).  NumPy (with ml_dtypes)
    and xpnet's GPU emulator can."""
    bfloat16_dtype()
    lib = backend.lib
    if backend.kind == "cupy" and not getattr(lib, "is_emulator", False):
        version = getattr(lib, "__version__", "0")
        parts = tuple(int(p) for p in re.findall(r"\d+", version)[:2])
        if parts < BF16_MIN_CUPY:
            raise RuntimeError(f"precision='bf16' on the GPU needs CuPy >= {'.'.join(map(str, BF16_MIN_CUPY))} "
                               f"(bfloat16 arrays through ml_dtypes); this is CuPy {version}: "
                               "pip install -U 'cupy-cuda12x>=14' (or cupy-cuda13x), or use precision='fp16'.")
        capability = getattr(backend.device, "compute_capability", None)  # e.g. "90" on an H100 / H200
        if capability is not None and int(capability) < 80:
            raise RuntimeError(f"precision='bf16' needs an NVIDIA GPU of compute capability 8.0 or newer (Ampere, "
                               f"Hopper: bfloat16 tensor-core GEMMs); {backend.name} is {int(capability) / 10:.1f}: "
                               "use precision='fp16' there.")
    elif backend.kind == "generic":
        raise ValueError(f"precision='bf16' runs on NumPy (CPU) or CuPy (GPU), not on {backend.name}.")


def check_dtype(dtype: Any) -> str:
    """Normalise a dtype argument to its name, refusing non-float dtypes."""
    try:
        name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    except TypeError:  # e.g. dtype=5: not a dtype at all, same message as a non-float one
        name = None
    if name == "bfloat16":  # a compute precision, never the weights' dtype
        raise TypeError("dtype='bfloat16' is not a model dtype: bfloat16 training keeps float32 master weights; "
                        "build the MLP with dtype='float32' and train with Trainer(..., precision='bf16').")
    if name not in FLOAT_DTYPES:
        raise TypeError(f"dtype={dtype!r} is not a floating dtype: use one of {', '.join(FLOAT_DTYPES)}.")
    return name
