"""Every ``xpnet bench`` argument, output folder and baseline checked before anything is timed."""

from __future__ import annotations

import json
import math
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .defaults import (
    DEFAULT_BATCH_SIZES,
    DEFAULT_MIN_TIME,
    DTYPES,
    GATED_RATIOS,
    IMPLEMENTATIONS,
    MIN_ROUNDS,
    OUTPUT_FILES,
    PRECISIONS,
    PRESETS,
)


# -- arguments -------------------------------------------------------------------------------------
@dataclass
class Plan:
    """What :func:`check_arguments` accepted: the sweep to time and the baseline to gate on."""
    sizes: list
    batch_sizes: list
    impls: tuple
    baseline: dict | None = None


def check_arguments(device="cpu", sizes=None, preset="mnist", batch_sizes=DEFAULT_BATCH_SIZES,
                    impls=IMPLEMENTATIONS, dtype="float32", rounds=7, steps=None, out=None, precision="fp32",
                    min_time=DEFAULT_MIN_TIME, overwrite=False, check_against=None, tolerance=0.2) -> Plan:
    """Refuse any bad argument with a ValueError naming the flag and the fix, before any timing.

    The output folder is checked last, because checking it creates it (with a probe file, removed).
    """
    _check_int("--rounds", rounds, MIN_ROUNDS, f"at least {MIN_ROUNDS} rounds are needed for a meaningful IQR")
    if steps is not None:
        _check_int("--steps", steps, 1, "omit it to calibrate steps to --min-time")
    _check_float("--min-time", min_time, lambda v: v > 0, "a positive number of seconds per round, e.g. 0.2")
    _check_float("--tolerance", tolerance, lambda v: 0 <= v < 1, "a fraction in [0, 1), e.g. 0.35")
    if preset not in PRESETS:
        raise ValueError(f"--preset {preset!r} is unknown: use one of {', '.join(PRESETS)}, or give --sizes.")
    sizes = list(PRESETS[preset] if sizes is None else sizes)
    if len(sizes) < 2 or not all(_positive_int(v) for v in sizes):
        raise ValueError(f"--sizes {sizes}: give at least 2 positive layer sizes (input, ..., output), "
                         "e.g. 784,1024,10.")
    batch_sizes = list(batch_sizes)
    if not batch_sizes or not all(_positive_int(v) for v in batch_sizes):
        raise ValueError(f"--batch-sizes {batch_sizes}: give one or more positive batch sizes, e.g. 64,256.")
    impls = _check_impls(impls)
    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r} is unknown: use {' or '.join(DTYPES)}.")
    _check_device(device)
    _check_precision(precision, device, dtype)
    baseline = None
    if check_against is not None:
        baseline = load_baseline(check_against)
        _check_baseline_matches(baseline, [_key_of(device, sizes, b, dtype, precision) for b in batch_sizes],
                                check_against)
    if out is not None:
        check_out(out, overwrite)
    return Plan(sizes, batch_sizes, impls, baseline)


def _positive_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and bool(v > 0)


def _check_int(flag, value, least, fix):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < least:
        raise ValueError(f"{flag} {value!r} is too small: {fix} (at least {least}).")


def _check_float(flag, value, ok, fix):
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if not math.isfinite(v) or not ok(v):
        raise ValueError(f"{flag} {value!r} is not allowed: give {fix}.")


def _check_impls(impls) -> tuple:
    if isinstance(impls, str):
        impls = impls.split(",")
    impls = tuple(dict.fromkeys(i.strip() for i in impls if i.strip()))  # unique, in order
    unknown = [i for i in impls if i not in IMPLEMENTATIONS]
    if unknown or not impls:
        raise ValueError(f"--impls {','.join(impls) or '(empty)'}: unknown {unknown or 'none given'}; "
                         f"use any of {', '.join(IMPLEMENTATIONS)}.")
    return impls


def _check_device(device) -> None:
    if not isinstance(device, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise ValueError(f"--device {device!r} is not understood: use cpu, cuda or cuda:N (N = GPU index).")
    if device.startswith("cuda"):
        from ..backend import resolve_backend

        try:  # CuPy installed, a driver, a GPU with that index
            resolve_backend(device)
        except (RuntimeError, ValueError) as exc:
            raise ValueError(f"--device {device}: {exc}") from None


def _check_precision(precision, device, dtype) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"--precision {precision!r} is unknown: use {', '.join(PRECISIONS)}.")
    if precision != "fp32" and not device.startswith("cuda"):
        raise ValueError(f"--precision {precision} is measured on the GPU only: use "
                         "--device cuda, or --precision fp32 on the CPU (where it would be a float32 run or "
                         "NumPy's slow float16 / bfloat16).")
    if precision != "fp32" and dtype != "float32":
        raise ValueError(f"--precision {precision} needs --dtype float32 (its float32 weights are the master copy).")


def check_out(out, overwrite=False) -> Path:
    """The output folder: not a file, creatable and writable, and holding no earlier results unless
    ``overwrite``.  A probe file (a fresh temporary name, so never a user's file) proves it writable."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is an existing file, not a folder: give a folder path.")
    existing = [name for name in OUTPUT_FILES if (out / name).exists()]
    if existing and not overwrite:
        raise ValueError(f"--out {out} already holds {', '.join(existing)}: choose another --out, or pass "
                         "--overwrite to replace them.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".xpnet-bench-probe-"):
            pass
    except OSError as exc:
        raise ValueError(f"--out {out} cannot be written ({exc.strerror or exc}): choose a writable folder.") from None
    return out


def load_baseline(path) -> dict:
    """A results.json of an earlier ``xpnet bench --out``: refused with the reason unless it is one."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--check-against {path} is a directory: give the results.json inside it "
                         f"({path / 'results.json'}).")
    if not path.is_file():
        raise ValueError(f"--check-against {path} does not exist; create one with xpnet bench --out DIR and "
                         "commit DIR/results.json.")
    try:
        baseline = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"--check-against {path} is not valid JSON ({exc}): give a results.json of xpnet bench.") \
            from None
    records = baseline.get("records") if isinstance(baseline, dict) else None
    required = ("device", "sizes", "batch_size")
    if (not isinstance(records, list) or not records
            or not all(isinstance(r, dict) and all(k in r for k in required) for r in records)):
        raise ValueError(f"--check-against {path} is not an xpnet bench results file: it needs a non-empty "
                         f"\"records\" list whose entries hold {', '.join(required)}.")
    if not any(ratio in r for r in records for ratio in GATED_RATIOS):
        raise ValueError(f"--check-against {path} holds no ratio to gate on ({', '.join(GATED_RATIOS)}).")
    return baseline


def _key_of(device, sizes, batch_size, dtype="float32", precision="fp32") -> tuple:
    return (device, tuple(sizes), batch_size, dtype, precision)


def record_key(r) -> tuple:
    return _key_of(r["device"], r["sizes"], r["batch_size"], r.get("dtype", "float32"), r.get("precision", "fp32"))


def _check_baseline_matches(baseline, planned, path) -> None:
    held = {record_key(r) for r in baseline["records"]}
    if not held & set(planned):
        def listing(keys):
            return "; ".join(f"{d} {list(s)} batch {b} {t} {p}" for d, s, b, t, p in sorted(keys))

        raise ValueError(f"--check-against {path} matches no point of this sweep ({listing(planned)}); "
                         f"it holds: {listing(held)}. Give a baseline taken with the same device, sizes, "
                         "batch sizes, dtype and precision.")
