"""Kernel dispatch: pick the fastest kernel set for a backend and dtype.

``ops_for(backend, dtype)`` returns a kernel-set object (see ``reference.ReferenceOps`` for
the interface).  The model, trainer and optimizers call every hot operation through it and
never know which implementation runs:

* NumPy, float32/float64  -> ``cpu.NumbaOps`` (fused Numba kernels), if Numba imports;
* CuPy, any float dtype   -> ``cuda.CupyOps`` (fused CUDA kernels, compiled on first use);
* anything else           -> ``reference.ReferenceOps`` (array-API math, the specification).

``XPNET_KERNELS=reference`` in the environment, or :func:`set_kernel_mode`, forces the
reference path for debugging and for comparisons in benchmarks.
"""

from __future__ import annotations

import os
import warnings

from .reference import ReferenceOps

KERNEL_MODES = ("auto", "reference")
_mode = os.environ.get("XPNET_KERNELS", "auto")
_warned_numba = False

# Every operation a fused kernel set implements, with the registry whose entries it covers.
# tests/test_kernels.py generates its fused-vs-reference cases from this table.
FUSED_OPERATIONS = {
    "bias_act": "activations",
    "act_grad": "activations",
    "bias_grad": None,
    "loss": "losses",
    "sgd": "optimizers",
    "adagrad": "optimizers",
    "rmsprop": "optimizers",
    "adam": "optimizers",  # Adam and AdamW (decoupled decay)
    "clip_scale": None,
    "clip_grad_norm": None,
}


def set_kernel_mode(mode: str) -> None:
    """``"auto"`` (fused kernels where available) or ``"reference"`` (array-API math only).

    Applies to models created afterwards.
    """
    global _mode
    if mode not in KERNEL_MODES:
        raise ValueError(f"kernel mode {mode!r} is unknown: use one of {', '.join(KERNEL_MODES)}.")
    _mode = mode


def get_kernel_mode() -> str:
    if _mode not in KERNEL_MODES:
        raise ValueError(f"XPNET_KERNELS={_mode!r} is unknown: use one of {', '.join(KERNEL_MODES)}.")
    return _mode


def numba_ops_class():
    """``NumbaOps``, or ``None`` (with one warning) when Numba cannot be imported."""
    global _warned_numba
    try:
        from .cpu import NumbaOps
    except ImportError as exc:
        if not _warned_numba:
            warnings.warn(f"Numba is not available ({exc}); xpnet runs its reference kernels on the CPU, "
                          "which is slower. pip install numba to get the fused kernels.", RuntimeWarning, stacklevel=3)
            _warned_numba = True
        return None
    return NumbaOps


def ops_for(backend, dtype: str) -> ReferenceOps:
    """The kernel set for arrays of ``dtype`` on ``backend``."""
    if get_kernel_mode() == "reference":
        return ReferenceOps(backend, dtype)
    if backend.kind == "numpy" and dtype in ("float32", "float64"):
        cls = numba_ops_class()
        if cls is not None:
            return cls(backend, dtype)
    if backend.kind == "cupy":
        from .cuda import CupyOps

        return CupyOps(backend, dtype)
    return ReferenceOps(backend, dtype)
