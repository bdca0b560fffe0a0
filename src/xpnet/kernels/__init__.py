"""Kernel dispatch: pick the fastest kernel set for a backend and dtype.

``ops_for(backend, dtype)`` returns a kernel-set object (see ``reference.ReferenceOps``
for the interface).  The model, trainer and optimizers call every hot operation through
it and never know which implementation runs.  ``XPNET_KERNELS=reference`` in the
environment, or :func:`set_kernel_mode`, forces the reference path for debugging and for
comparisons in benchmarks.
"""

from __future__ import annotations

import os

from .reference import ReferenceOps

KERNEL_MODES = ("auto", "reference")
_mode = os.environ.get("XPNET_KERNELS", "auto")


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


def ops_for(backend, dtype: str) -> ReferenceOps:
    """The kernel set for arrays of ``dtype`` on ``backend``."""
    get_kernel_mode()
    return ReferenceOps(backend, dtype)
