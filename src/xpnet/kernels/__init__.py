"""Kernel dispatch: pick the fastest kernel set for a backend and dtype.

``ops_for(backend, dtype, kernels)`` returns a kernel-set object (see ``reference.ReferenceOps``
for the interface).  The model, trainer and optimizers call every hot operation through it and
never know which implementation runs.  With ``kernels="auto"``:

* NumPy, float32/float64  -> ``cpu.NumbaOps`` (fused Numba kernels), if Numba imports;
* CuPy, any float dtype   -> ``cuda.CupyOps`` (fused CUDA kernels, compiled on first use);
* anything else           -> ``reference.ReferenceOps`` (array-API math, the specification);
  for ``"bfloat16"`` its float32-compute form ``bfloat16.BFloat16Ops``.

``kernels="reference"`` forces the reference path, for debugging and for comparisons in
benchmarks.  The choice is an argument (``MLP(..., kernels="reference")``); when it is not
given (``None``) it resolves, at that moment, to the innermost :func:`use_kernels` block of the
current context, else the ``XPNET_KERNELS`` environment variable, else ``"auto"``.  Nothing
here is a mutable module global: a scoped override lives in a :class:`contextvars.ContextVar`,
so it is restored on leaving its block and never leaks into other threads.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import os
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, cast

from .reference import ReferenceOps

if TYPE_CHECKING:
    from ..backend import Backend

KERNEL_MODES = ("auto", "reference")
# the scoped override set by use_kernels (None: none is active in this context)
_override: contextvars.ContextVar[str | None] = contextvars.ContextVar("xpnet_kernels", default=None)

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


def check_kernels(kernels: object) -> str:
    """``kernels`` if it is ``"auto"`` or ``"reference"``, else a clear error."""
    from ..validation import check_choice

    return check_choice("kernels", kernels, KERNEL_MODES)


def default_kernels() -> str:
    """What ``kernels=None`` resolves to now: the innermost :func:`use_kernels` of this context,
    else ``XPNET_KERNELS`` (read at each call, not at import), else ``"auto"``."""
    mode = _override.get()
    if mode is not None:
        return mode
    env = os.environ.get("XPNET_KERNELS", "auto")
    if env not in KERNEL_MODES:
        raise ValueError(f"XPNET_KERNELS={env!r} is unknown: use one of {', '.join(KERNEL_MODES)}.")
    return env


def resolve_kernels(kernels: str | None = None) -> str:
    """An explicit choice, checked, or :func:`default_kernels` for ``None``."""
    return default_kernels() if kernels is None else check_kernels(kernels)


@contextlib.contextmanager
def use_kernels(kernels: str) -> Iterator[None]:
    """Within the block, models built without a ``kernels`` argument use ``kernels``
    (as thinc's ``use_ops``).  Restored on leaving the block, exceptions included; scoped to
    the current thread / asyncio task (a new thread starts without it)."""
    token = _override.set(check_kernels(kernels))
    try:
        yield
    finally:
        _override.reset(token)


def set_kernel_mode(mode: str) -> None:
    """Deprecated: pass ``MLP(..., kernels=mode)``, use ``with use_kernels(mode):`` or set
    ``XPNET_KERNELS``.  Sets the default for models created afterwards in this context (thread)."""
    warnings.warn("xpnet.set_kernel_mode is deprecated: pass MLP(..., kernels=...), use "
                  "xpnet.use_kernels(...) as a context manager, or set XPNET_KERNELS.", DeprecationWarning,
                  stacklevel=2)
    if mode not in KERNEL_MODES:
        raise ValueError(f"kernel mode {mode!r} is unknown: use one of {', '.join(KERNEL_MODES)}.")
    _override.set(mode)


def get_kernel_mode() -> str:
    """Deprecated: :func:`default_kernels` (or a model's ``kernels`` attribute)."""
    warnings.warn("xpnet.get_kernel_mode is deprecated: use xpnet.kernels.default_kernels() or MLP.kernels.",
                  DeprecationWarning, stacklevel=2)
    return default_kernels()


def _import_numba_ops() -> type[ReferenceOps]:
    return cast("type[ReferenceOps]", importlib.import_module(f"{__name__}.cpu").NumbaOps)


@functools.cache
def _warn_numba_missing(reason: str) -> None:
    """Warn once per reason (cached; no module flag).  ``_warn_numba_missing.cache_clear()`` re-arms it."""
    warnings.warn(f"Numba is not available ({reason}); xpnet runs its reference kernels on the CPU, "
                  "which is slower. pip install numba to get the fused kernels.", RuntimeWarning, stacklevel=4)


def numba_ops_class(load: Callable[[], type[ReferenceOps]] = _import_numba_ops) -> type[ReferenceOps] | None:
    """``NumbaOps``, or ``None`` (with one warning) when Numba cannot be imported.

    ``load`` imports and returns the class; tests pass one that raises ImportError."""
    try:
        return load()
    except ImportError as exc:
        _warn_numba_missing(str(exc))
        return None


def ops_for(backend: Backend, dtype: str, kernels: str | None = None) -> ReferenceOps:
    """The kernel set for arrays of ``dtype`` on ``backend``: ``kernels="auto"`` (fused where
    available), ``"reference"``, or ``None`` for :func:`default_kernels`."""
    if resolve_kernels(kernels) == "reference" or (dtype == "bfloat16" and backend.kind != "cupy"):
        if dtype == "bfloat16":
            from .bfloat16 import BFloat16Ops

            return BFloat16Ops(backend, dtype)
        return ReferenceOps(backend, dtype)
    if backend.kind == "numpy" and dtype in ("float32", "float64"):
        cls = numba_ops_class()
        if cls is not None:
            return cls(backend, dtype)
    if backend.kind == "cupy":
        from .cuda import CupyOps

        return CupyOps(backend, dtype)
    return ReferenceOps(backend, dtype)
