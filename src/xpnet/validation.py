"""Input checks that run before any weight changes, with messages naming argument and fix."""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal, overload

import array_api_compat as aac
import numpy as np

from ._typing import Array, HostArray
from .backend import Backend, library_name, to_host
from .losses import Loss, labels_outside_message

if TYPE_CHECKING:
    from .kernels.protocol import KernelSet


# -- hyperparameters: one helper per concept, one message style -------------------------------
class HyperparameterError(ValueError, TypeError):
    """A constructor argument of the wrong type or out of range.

    Both a ValueError and a TypeError (as scikit-learn's InvalidParameterError), so callers
    catching either keep working whichever of the two a check used to raise.
    """


def invalid(name: str, value: object, rule: str) -> HyperparameterError:
    """The error for ``name=value``: ``"lr=-1 is invalid: use a finite number >= 0."``."""
    return HyperparameterError(f"{name}={value!r} is invalid: {rule}.")


def _is_bool(value: object) -> bool:
    return isinstance(value, (bool, np.bool_))


def _bounds(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return ""


@overload
def check_real(name: str, value: Any, *, low: float | None = None, high: float | None = None, low_open: bool = False,
               high_open: bool = False, allow_none: Literal[False] = False) -> float: ...


@overload
def check_real(name: str, value: Any, *, low: float | None = None, high: float | None = None, low_open: bool = False,
               high_open: bool = False, allow_none: bool) -> float | None: ...


def check_real(name: str, value: Any, *, low: float | None = None, high: float | None = None, low_open: bool = False,
               high_open: bool = False, allow_none: bool = False) -> float | None:
    """``value`` as a float: a real number (not bool), finite, within the bounds; or None if allowed."""
    if value is None and allow_none:
        return None
    rule = " ".join(filter(None, ("use a finite number", _bounds(low, high, low_open, high_open))))
    rule += " or None" if allow_none else ""
    if not isinstance(value, numbers.Real) or _is_bool(value):
        raise invalid(name, value, rule)
    try:
        x = float(value)
    except OverflowError:  # an int too large for a float
        raise invalid(name, value, rule) from None
    if not math.isfinite(x) or (low is not None and (x <= low if low_open else x < low)) \
            or (high is not None and (x >= high if high_open else x > high)):
        raise invalid(name, value, rule)
    return x


@overload
def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None,
              allow_none: Literal[False] = False) -> int: ...


@overload
def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None,
              allow_none: bool) -> int | None: ...


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None,
              allow_none: bool = False) -> int | None:
    """``value`` as an int (Python or NumPy integer, not bool) within ``[low, high]``; or None if allowed."""
    if value is None and allow_none:
        return None
    if low == 1 and high is None:
        rule = "use a positive integer"
    else:
        rule = " ".join(filter(None, ("use an integer", _bounds(low, high, False, False))))
    rule += " or None" if allow_none else ""
    if not isinstance(value, numbers.Integral) or _is_bool(value) \
            or (low is not None and int(value) < low) or (high is not None and int(value) > high):
        raise invalid(name, value, rule)
    return int(value)


def check_positive_int(name: str, value: Any) -> int:
    return check_int(name, value, low=1)


def check_bool(name: str, value: Any) -> bool:
    """``value`` as a bool; 0/1 or "yes" are refused, so a misplaced argument does not pass silently."""
    if not _is_bool(value):
        raise invalid(name, value, "use True or False")
    return bool(value)


def check_str(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise invalid(name, value, "use a non-empty string")
    return value


def check_choice(name: str, value: Any, options: Iterable[str]) -> str:
    """``value`` if it is one of ``options`` (compared by equality, so unhashable values fail cleanly)."""
    if not isinstance(value, str) or value not in options:
        raise HyperparameterError(f"{name}={value!r} is unknown: use one of {', '.join(map(str, options))}.")
    return value


def host_memory_bytes() -> int | None:
    """Physical memory of this machine, or None where the OS does not say (e.g. Windows)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_same_library(**arrays: Any) -> None:
    """Refuse arrays that come from different array libraries (e.g. NumPy X with torch y)."""
    libs = {name: library_name(a) for name, a in arrays.items() if aac.is_array_api_obj(a)}
    if len(set(libs.values())) > 1:
        detail = ", ".join(f"{n} from {lib}" for n, lib in libs.items())
        raise TypeError(f"Arrays from mixed namespaces ({detail}): pass them all from the same library, "
                        "e.g. convert with numpy.asarray(...) first.")


def _as_array(name: str, value: Any, backend: Backend) -> tuple[Array, bool]:
    """Host NumPy view of ``value`` plus whether it already lives on ``backend``'s device."""
    if backend.owns(value):
        return value, True
    if backend.kind == "cupy" and aac.is_cupy_array(value):  # on another GPU: never a silent copy
        raise ValueError(f"{name} is on GPU {value.device.id} but the model is on {backend.name}: move it with "
                         f"cupy.asarray({name}) inside `with cupy.cuda.Device({backend.device.id}):`, or build "
                         f"the model with device='cuda:{value.device.id}'.")
    try:
        host = to_host(value)
    except Exception as exc:
        raise TypeError(f"{name} could not be read as an array ({exc}); pass a NumPy or array-API array.") from exc
    return host, False


class DeviceChecks:
    """Value checks of arrays already on the device: one counting reduction per array (``ops``'
    fused kernel where it has one), and ONE host read for all of them in :meth:`run`, which
    raises the first failed check's message.  Nothing is copied to the host."""

    def __init__(self, ops: KernelSet) -> None:
        self.ops = ops
        self.items: list[tuple[Array, str]] = []

    def add(self, array: Array, kind: str, message: str, n_classes: int = 0) -> None:
        with self.ops.backend.context():
            self.items.append((self.ops.count_invalid(array, kind, n_classes), message))

    def run(self) -> None:
        if not self.items:
            return
        xp = self.ops.backend.xp
        with self.ops.backend.context():
            counts = to_host(xp.stack([xp.reshape(c, (1,)) for c, _ in self.items]))
        items, self.items = self.items, []
        for count, (_, message) in zip(counts.reshape(-1), items):
            if count:
                raise ValueError(message.format(count=int(count)))


def _on_host(a: Array) -> bool:
    """Whether ``a`` lives in host memory (a NumPy array, also as the NumPy backend's device)."""
    return type(a) is np.ndarray


def check_features(name: str, X: Any, n_features: int, backend: Backend, dtype: str, checks: DeviceChecks,
                   full: bool = True, place: bool = True) -> Array:
    """Validate a feature matrix and return it on the model's device in ``dtype``.

    ``full=False`` skips the value scan (NaN / inf) for arrays already on the device, so a
    training step never waits on the GPU for validation.  ``place=False`` keeps host data on
    the host (to be streamed to the device batch by batch).  Device arrays are scanned on the
    device: their checks are added to ``checks``, which the caller runs once for all arrays.
    """
    X, on_device = _as_array(name, X, backend)
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {tuple(X.shape)}; "
                         "reshape a single sample with X.reshape(1, -1).")
    if X.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 samples): pass at least one sample.")
    if X.shape[1] != n_features:
        raise ValueError(f"{name} has {X.shape[1]} features but the model expects {n_features}: "
                         "pass data with that many columns or build the MLP with sizes[0] = "
                         f"{X.shape[1]}.")
    kind = _kind(backend, X) if on_device else X.dtype.kind
    if kind != "f":
        raise TypeError(f"{name} has dtype {X.dtype}, but features must be floating point: "
                        f"convert with {name}.astype('float32').")
    nonfinite = f"{name} contains NaN or inf values: clean or impute them before training."
    if _on_host(X) or isinstance(X, np.memmap):  # host memory: a scan costs one pass, far less than a step
        if not _all_finite(X):
            raise ValueError(nonfinite)
    elif full:
        checks.add(X, "finite", nonfinite)
    if on_device:
        return X if X.dtype == backend.dtype(dtype) else backend.xp.astype(X, backend.dtype(dtype))
    return backend.from_host(X, dtype) if place else np.ascontiguousarray(X, dtype=dtype)


def _all_finite(X: HostArray, chunk_bytes: int = 16 << 20) -> bool:
    """Whether every value of host ``X`` is finite, scanned in row chunks (a memory-mapped data set
    is never materialised, nor a boolean mask of its size)."""
    if X.nbytes <= chunk_bytes or X.ndim != 2:
        return bool(np.all(np.isfinite(X)))
    step = max(1, chunk_bytes // max(1, X.shape[1] * X.itemsize))
    return all(np.isfinite(X[a:a + step]).all() for a in range(0, X.shape[0], step))


def _kind(backend: Backend, X: Array) -> str:
    xp = backend.xp
    if xp.isdtype(X.dtype, "real floating"):
        return "f"
    if xp.isdtype(X.dtype, "integral") or X.dtype == xp.bool:
        return "i"
    return "O"


def check_targets(name: str, y: Any, loss: Loss, n_outputs: int, n_samples: int, backend: Backend, dtype: str,
                  checks: DeviceChecks, full: bool = True, place: bool = True) -> Array:
    """Validate targets for ``loss`` and return them on the model's device.

    Cross-entropy takes integer labels in ``[0, n_outputs)`` (kept as int64) or one-hot /
    probability rows; MSE and BCE take float targets shaped like the outputs (1-D allowed
    for a single output).
    """
    y, on_device = _as_array(name, y, backend)
    if y.ndim == 0 or y.ndim > 2:
        raise ValueError(f"{name} must be 1-D labels or 2-D (n_samples, n_outputs), got shape {tuple(y.shape)}.")
    if y.shape[0] != n_samples:
        raise ValueError(f"X and {name} have different lengths ({n_samples} vs {y.shape[0]}): "
                         "pass one target per sample.")
    kind = _kind(backend, y) if on_device else ("f" if y.dtype.kind == "f" else "i" if y.dtype.kind in "iub" else "O")
    host_scan, device_scan = _on_host(y), on_device and full and not _on_host(y)
    if loss.integer_labels and y.ndim == 1:
        if kind != "i":
            raise TypeError(f"{name} holds {y.dtype} values, but {loss.name} needs integer class labels: "
                            f"convert with {name}.astype('int64') (or pass one-hot rows).")
        if host_scan:
            lo, hi = int(y.min()), int(y.max())
            if lo < 0 or hi >= n_outputs:
                raise ValueError(f"{name} has labels in [{lo}, {hi}] but the model has {n_outputs} outputs: labels "
                                 f"must lie in [0, {n_outputs - 1}]; encode them as 0..n_classes-1.")
        elif device_scan:
            checks.add(y, "labels", labels_outside_message("{count}", n_outputs, name), n_outputs)
        if on_device:
            return backend.xp.astype(y, backend.xp.int64)
        return backend.from_host(y.astype(np.int64)) if place else np.ascontiguousarray(y, dtype=np.int64)
    if y.ndim == 1:
        if n_outputs != 1:
            raise ValueError(f"{name} is 1-D but the model has {n_outputs} outputs: pass shape "
                             f"(n_samples, {n_outputs}).")
        y = backend.xp.reshape(y, (-1, 1)) if on_device else y.reshape(-1, 1)
    if y.shape[1] != n_outputs:
        raise ValueError(f"{name} has {y.shape[1]} columns but the model has {n_outputs} outputs: "
                         "they must match.")
    if kind not in "fi":
        raise TypeError(f"{name} has dtype {y.dtype}, but {loss.name} needs numeric targets: "
                        f"convert with {name}.astype('float32').")
    if kind == "i":  # integer targets (e.g. a 0/1 column for bce) are exact in floats: they simply work
        y = backend.xp.astype(y, backend.dtype(dtype)) if on_device else y.astype(np.float64)
    nonfinite = f"{name} contains NaN or inf values: clean them before training."
    outside = f"{name} must hold probabilities in [0, 1] for {loss.name}; got values outside that range."
    if host_scan:
        if not np.all(np.isfinite(y)):
            raise ValueError(nonfinite)
        if loss.classification and (y.min() < 0 or y.max() > 1):
            raise ValueError(outside)
    elif device_scan:
        checks.add(y, "finite", nonfinite)
        if loss.classification:
            checks.add(y, "probability", outside)
    if on_device:
        return y if y.dtype == backend.dtype(dtype) else backend.xp.astype(y, backend.dtype(dtype))
    return backend.from_host(y, dtype) if place else np.ascontiguousarray(y, dtype=dtype)


def check_sample_weight(sample_weight: Any, n_samples: int, name: str = "sample_weight") -> np.ndarray | None:
    """``sample_weight`` as a float64 host array of ``n_samples`` finite, non-negative weights, not
    all zero (None stays None); device arrays are read back once."""
    if sample_weight is None:
        return None
    try:
        w = np.asarray(to_host(sample_weight) if not isinstance(sample_weight, (list, tuple)) else sample_weight)
    except Exception as exc:  # any unreadable value gets the same message
        raise invalid(name, sample_weight, "pass a 1-D array of one weight per sample") from exc
    if w.ndim != 1 or w.shape[0] != n_samples:
        raise ValueError(f"{name} has shape {tuple(w.shape)}, but X has {n_samples} samples: pass a 1-D array "
                         f"of {n_samples} weights, one per sample.")
    if w.dtype.kind not in "fiub":
        raise TypeError(f"{name} has dtype {w.dtype}: pass numeric weights.")
    w = w.astype(np.float64)
    if not np.all(np.isfinite(w)):
        raise ValueError(f"{name} contains NaN or inf values: weights must be finite.")
    if np.any(w < 0):
        raise ValueError(f"{name} contains negative values: weights must be >= 0.")
    if not np.any(w > 0):
        raise ValueError(f"{name} is all zero: at least one sample needs a positive weight.")
    return w


def check_class_weight(class_weight: Any, n_classes: int, name: str = "class_weight") -> dict[int, float] | str | None:
    """``"balanced"``, ``None``, or a dict ``{class: weight}`` whose keys are classes in
    ``[0, n_classes)`` and whose weights are finite and >= 0 (returned with int keys, float values)."""
    if class_weight is None or class_weight == "balanced":
        return class_weight  # type: ignore[no-any-return]
    if not isinstance(class_weight, dict):
        raise invalid(name, class_weight, "use 'balanced', a dict {class: weight} or None")
    out: dict[int, float] = {}
    for key, value in class_weight.items():
        if _is_bool(key) or not isinstance(key, numbers.Integral) or not 0 <= int(key) < n_classes:
            raise ValueError(f"{name} has key {key!r}, which is not a class: keys must be class labels in "
                             f"[0, {n_classes - 1}].")
        out[int(key)] = check_real(f"{name}[{key!r}]", value, low=0)
    return out
