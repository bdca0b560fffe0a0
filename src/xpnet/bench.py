"""The benchmark harness behind ``xpnet bench``: training-step throughput with yardsticks.

For every point (device x model x batch size) it times, interleaved in the same process:

* ``floor``     -- the step's matrix products alone (forward ``x @ W``, ``dW = x^T @ g``,
                   ``dX = g @ W^T``; no ``dX`` for the first layer): the GEMM floor;
* ``xpnet``     -- a full xpnet training step (fused kernels), Adam, softmax cross-entropy;
* ``reference`` -- the same step on the reference (array-API) kernels;
* ``torch``     -- the same model and optimizer in PyTorch eager, when torch is installed.

Each implementation is warmed up first (compilation, caches, memory pools), then timed in
``rounds`` interleaved rounds (CUDA events on the GPU).  Unless ``steps`` is given, each
implementation's steps per round are calibrated so that one round lasts at least ``min_time``
seconds: a handful of steps is too short to time on a shared machine.  A round's time per step
is its total divided by its steps; the reported value is the median over rounds, with the
inter-quartile range (IQR).  A point whose relative IQR (IQR / median) exceeds
:data:`NOISY_RELATIVE_IQR` for some implementation is flagged ``noisy``.  Ratios -- efficiency =
floor / step, speed-up over torch = torch / xpnet -- come from the same run, so they survive
noisy shared machines; the regression gate (:func:`check_against`) compares only such ratios.

Every argument, the output folder and the baseline are checked by :func:`check_arguments`
before anything is timed, so a bad value never costs a timing run.
"""

from __future__ import annotations

import csv
import datetime
import json
import os
import math
import platform
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PRESETS = {
    "small": [64, 128, 128, 10],
    "mnist": [784, 1024, 1024, 10],
    "wide": [4096, 4096, 4096, 4096, 4096],
    "large": [1024, 4096, 4096, 4096, 1024],
}
IMPLEMENTATIONS = ("xpnet", "reference", "torch")
DEFAULT_BATCH_SIZES = tuple(2**k for k in range(5, 14))  # 32 ... 8192
GATED_RATIOS = ("efficiency", "speedup_vs_torch", "speedup_vs_reference")
DTYPES = ("float32", "float64")
PRECISIONS = ("fp32", "tf32", "fp16")
MIN_ROUNDS = 3  # fewer rounds give no meaningful quartiles
DEFAULT_MIN_TIME = 0.2  # seconds per round per implementation: long enough for a timer and a scheduler
MAX_STEPS_PER_ROUND = 1_000_000  # caps calibration (and a probe) for implausibly fast steps
# A point is "noisy" when an implementation's IQR over rounds exceeds this fraction of its median:
# its ratios then move by about as much between runs, which is close to a CI gate's tolerance.
NOISY_RELATIVE_IQR = 0.10
OUTPUT_FILES = ("results.json", "results.csv", "throughput.png", "efficiency.png")


def n_params(sizes) -> int:
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


# -- timing ----------------------------------------------------------------------------------------
class Timer:
    """Wall-clock on the CPU; CUDA events (and a final synchronise) on the GPU."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")

    def __call__(self, fn, steps: int) -> float:
        """Seconds per call of ``fn``, averaged over ``steps`` back-to-back calls."""
        if not self.cuda:
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            return (time.perf_counter() - start) / steps
        import cupy

        begin, end = cupy.cuda.Event(), cupy.cuda.Event()
        begin.record()
        for _ in range(steps):
            fn()
        end.record()
        end.synchronize()
        return cupy.cuda.get_elapsed_time(begin, end) / 1e3 / steps

    def round(self, fn, steps: int, min_time: float = 0.0) -> tuple[float, int, float]:
        """One timed round: ``steps`` calls, then on the CPU more calls until ``min_time`` has
        passed, so that a calibration probe sped up or slowed down by another process cannot
        shorten the round.  Returns (seconds per step, steps run, seconds)."""
        if self.cuda or min_time <= 0:  # GPU: the calibrated count (events; no host-side clock)
            per_step = self(fn, steps)
            return per_step, steps, per_step * steps
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        ran = steps
        while (elapsed := time.perf_counter() - start) < min_time:
            fn()
            ran += 1
        return elapsed / ran, ran, elapsed


_Timer = Timer  # the old private name, kept for scripts written against it


# -- the implementations ---------------------------------------------------------------------------
def _data(sizes, batch, seed=0):
    r = np.random.default_rng(seed)
    return r.normal(size=(batch, sizes[0])).astype(np.float32), r.integers(0, sizes[-1], size=batch).astype(np.int64)


def _xpnet_step(sizes, batch, device, dtype, kernels, precision="fp32"):
    from . import MLP, Trainer
    from .optim import Adam

    model = MLP(sizes, dtype=dtype, device=device, seed=0, kernels="reference" if kernels == "reference" else "auto")
    trainer = Trainer(model, optimizer=Adam(lr=1e-4), precision=precision)
    X, y = trainer.prepare(*_data(sizes, batch))  # device-resident batch, as fit keeps it

    def step():
        trainer.step(X, y)

    return step, trainer


def _torch_step(sizes, batch, device, dtype, precision="fp32"):
    """PyTorch eager, same model and Adam (fused on the GPU); AMP with GradScaler for fp16."""
    import torch

    dev = "cuda" if device.startswith("cuda") else "cpu"
    tdtype = getattr(torch, dtype)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b, dtype=tdtype, device=dev))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    fused = dict(fused=True) if dev == "cuda" else dict(foreach=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, **fused)
    X, y = _data(sizes, batch)
    X, y = torch.tensor(X, dtype=tdtype, device=dev), torch.tensor(y, device=dev)

    if precision == "fp16":
        scaler = torch.amp.GradScaler("cuda")

        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = torch.nn.functional.cross_entropy(model(X), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

        return step

    def step():
        if dev == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(X), y).backward()
        opt.step()

    return step


def _floor_step(sizes, batch, device, dtype, precision="fp32"):
    """The step's matrix products alone, into preallocated outputs, in the step's precision."""
    if not device.startswith("cuda"):
        return _floor_with(np, sizes, batch, dtype)
    import cupy as lib

    with lib.cuda.Device(int(device.split(":")[1]) if ":" in device else 0):
        return _floor_with(lib, sizes, batch, "float16" if precision == "fp16" else dtype, tf32=precision == "tf32")


def _floor_with(lib, sizes, batch, dtype, tf32=False):
    """The products of a step; ``tf32`` runs them as xpnet's TF32 kernel set does (per-product cuBLAS
    TF32 compute type), so the floor and the xpnet / reference paths compare like with like."""
    if tf32:
        from .kernels.cuda import matmul_tf32

        def matmul(a, b, out):
            return matmul_tf32(lib, a, b, out)
    else:
        matmul = lib.matmul
    r = np.random.default_rng(0)
    Ws = [lib.asarray(r.normal(size=(a, b)).astype(dtype)) for a, b in zip(sizes[:-1], sizes[1:])]
    acts = [lib.asarray(r.normal(size=(batch, s)).astype(dtype)) for s in sizes]
    outs = [lib.empty((batch, s), dtype=dtype) for s in sizes]
    dWs = [lib.empty_like(W) for W in Ws]

    def step():
        for l, W in enumerate(Ws):
            matmul(acts[l], W, out=outs[l + 1])
        for l in range(len(Ws) - 1, -1, -1):
            matmul(acts[l].T, outs[l + 1], out=dWs[l])
            if l > 0:
                matmul(outs[l + 1], Ws[l].T, out=outs[l])

    return step


def _run_for(fn, seconds: float) -> None:
    end = time.perf_counter() + seconds
    fn()
    while time.perf_counter() < end:
        fn()


# -- environment -----------------------------------------------------------------------------------
def environment(device: str = "cpu") -> dict:
    """Machine, BLAS, GPU and library versions: printed and stored with every result."""
    from . import __version__

    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "xpnet": __version__,
        "numpy": np.__version__,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "kernel_mode": os.environ.get("XPNET_KERNELS", "auto"),
    }
    try:
        from threadpoolctl import threadpool_info

        env["blas"] = [{k: p.get(k) for k in ("internal_api", "version", "architecture", "num_threads",
                                                "threading_layer")} for p in threadpool_info()
                       if p.get("user_api") == "blas"]
    except ImportError:
        env["blas"] = "unknown (install threadpoolctl)"
    for name in ("numba", "cupy", "torch"):
        try:
            env[name] = __import__(name).__version__
            if name == "numba":
                import numba

                env["numba_threads"] = numba.get_num_threads()
        except Exception:  # noqa: BLE001 - absent or broken: say so
            env[name] = None
    if device.startswith("cuda"):
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        env.update(gpu=props["name"].decode(), driver=cupy.cuda.runtime.driverGetVersion(),
                   cuda_runtime=cupy.cuda.runtime.runtimeGetVersion(),
                   tf32=os.environ.get("CUPY_TF32", "0") == "1")
    else:
        try:
            import torch

            env["torch_threads"] = torch.get_num_threads()
        except Exception:  # noqa: BLE001
            pass
    return env


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


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
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0


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
        from .backend import resolve_backend

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
                         "NumPy's slow float16).")
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


def _record_key(r) -> tuple:
    return _key_of(r["device"], r["sizes"], r["batch_size"], r.get("dtype", "float32"), r.get("precision", "fp32"))


def _check_baseline_matches(baseline, planned, path) -> None:
    held = {_record_key(r) for r in baseline["records"]}
    if not held & set(planned):
        def listing(keys):
            return "; ".join(f"{d} {list(s)} batch {b} {t} {p}" for d, s, b, t, p in sorted(keys))

        raise ValueError(f"--check-against {path} matches no point of this sweep ({listing(planned)}); "
                         f"it holds: {listing(held)}. Give a baseline taken with the same device, sizes, "
                         "batch sizes, dtype and precision.")


# -- the sweep -------------------------------------------------------------------------------------
@dataclass
class Point:
    device: str
    sizes: list
    batch_size: int
    dtype: str = "float32"
    precision: str = "fp32"


def _fits(sizes, batch, device) -> bool:
    """Whether a point's arrays (params, grads, Adam state, activations) fit comfortably."""
    need = 4 * (5 * n_params(sizes) + 4 * batch * sum(sizes))
    if device.startswith("cuda"):
        import cupy

        free, _ = cupy.cuda.runtime.memGetInfo()
        return need < 0.5 * free
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return True
    return need < 0.5 * avail


def spread(seconds_per_step) -> dict:
    """Median, quartiles and relative IQR of one implementation's per-round times (seconds per step);
    ``noisy`` when the relative IQR exceeds :data:`NOISY_RELATIVE_IQR`."""
    t = np.asarray(seconds_per_step, dtype=float)
    if t.size < MIN_ROUNDS or not np.all(np.isfinite(t)) or np.any(t <= 0):
        raise RuntimeError(f"timing gave {t.size} round time(s) {t.tolist()}: need {MIN_ROUNDS}+ positive, "
                           "finite ones.")
    q1, median, q3 = (float(v) for v in np.percentile(t, [25, 50, 75]))
    relative = (q3 - q1) / median
    return {"median": median, "q1": q1, "q3": q3, "iqr": q3 - q1, "relative_iqr": relative,
            "noisy": relative > NOISY_RELATIVE_IQR}


def calibrate_steps(timer, fn, min_time: float, cap: int = MAX_STEPS_PER_ROUND) -> int:
    """Steps per round so that a round of ``fn`` lasts at least ``min_time`` seconds.

    Probes 1, 4, 16, ... steps until a probe lasts a quarter of ``min_time`` (long enough to
    extrapolate from), then probes that many once more and keeps the faster of the two -- one
    disturbed probe would otherwise shrink every round -- and scales up with a 5 % margin.
    """
    n = 1
    while True:
        per_step = max(timer(fn, n), 1e-9)
        if per_step * n >= min_time / 4 or n >= cap:
            break
        n = min(cap, n * 4)
    per_step = max(min(per_step, timer(fn, n)), 1e-9)
    return int(min(cap, max(1, math.ceil(1.05 * min_time / per_step))))


def measure(point: Point, impls=IMPLEMENTATIONS, rounds=7, steps=None, warmup=3,
            min_time=DEFAULT_MIN_TIME) -> dict:
    """Time one point; returns a JSON-ready record.  ``steps=None`` calibrates each implementation's
    steps per round to ``min_time`` seconds (see :func:`calibrate_steps`)."""
    timer = Timer(point.device)
    flops = 6.0 * n_params(point.sizes) * point.batch_size
    runners = {"floor": _floor_step(point.sizes, point.batch_size, point.device, point.dtype, point.precision)}
    trainer = None
    for impl in impls:
        if impl == "torch":
            try:
                runners["torch"] = _torch_step(point.sizes, point.batch_size, point.device, point.dtype,
                                               point.precision)
            except ImportError:
                continue
        elif impl in ("xpnet", "reference"):
            step, tr = _xpnet_step(point.sizes, point.batch_size, point.device, point.dtype, impl, point.precision)
            runners[impl] = step
            trainer = tr if impl == "xpnet" else trainer
        else:
            raise ValueError(f"impls contains {impl!r}: use any of {', '.join(IMPLEMENTATIONS)}.")
    for fn in runners.values():
        for _ in range(warmup):
            fn()
        timer(fn, 1)
    settle = 0.1 if not point.device.startswith("cuda") else 0.0
    counts = {}
    for name, fn in runners.items():
        _run_for(fn, settle)  # as before a timed round (below): the probe must not pay another's threads
        counts[name] = steps if steps is not None else calibrate_steps(timer, fn, min_time)
    times, ran, lengths = ({k: [] for k in runners} for _ in range(3))
    for _ in range(rounds):
        for name, fn in runners.items():  # interleaved: drift affects all alike
            # Untimed steps first, for `settle` seconds: the previous library's BLAS / OpenMP
            # threads keep spinning for up to ~0.1 s after their last call and would steal the
            # cores from this one -- a cost no program that uses one library pays.
            _run_for(fn, settle)
            per_step, n, seconds = timer.round(fn, counts[name], min_time if steps is None else 0.0)
            times[name].append(per_step)
            ran[name].append(n)
            lengths[name].append(seconds)
    stats = {name: spread(t) for name, t in times.items()}
    return _record(point, rounds, {k: min(v) for k, v in ran.items()}, stats, flops, runners, trainer,
                   shortest={k: min(v) for k, v in lengths.items()})


def _record(point, rounds, counts, stats, flops, runners, trainer, shortest=None) -> dict:
    """The JSON record of one point from its per-implementation statistics; ``counts`` are the
    fewest steps a round of each implementation ran, ``shortest`` its shortest round in seconds."""
    rec = {"device": point.device, "sizes": point.sizes, "params": n_params(point.sizes),
           "batch_size": point.batch_size, "dtype": point.dtype, "precision": point.precision, "rounds": rounds,
           "steps_per_round": dict(counts)}
    floor = stats["floor"]["median"]
    rec["gemm_floor_ms"] = floor * 1e3
    for name, st in stats.items():
        entry = {"ms_per_step": st["median"] * 1e3, "iqr_ms": st["iqr"] * 1e3, "q1_ms": st["q1"] * 1e3,
                 "q3_ms": st["q3"] * 1e3, "relative_iqr": st["relative_iqr"], "noisy": st["noisy"],
                 "steps_per_round": counts[name]}
        if shortest is not None:
            entry["shortest_round_s"] = shortest[name]
        if name != "floor":
            entry.update(samples_per_s=point.batch_size / st["median"], gflops=flops / st["median"] / 1e9,
                         efficiency=floor / st["median"])
        rec[name] = entry
    rec["noisy"] = [name for name, st in stats.items() if st["noisy"]]
    if "xpnet" in rec:
        x = rec["xpnet"]
        rec.update(ms_per_step=x["ms_per_step"], iqr_ms=x["iqr_ms"], relative_iqr=x["relative_iqr"],
                   samples_per_s=x["samples_per_s"], gflops=x["gflops"], efficiency=x["efficiency"])
        if "torch" in rec:
            rec["speedup_vs_torch"] = stats["torch"]["median"] / stats["xpnet"]["median"]
        if "reference" in rec:
            rec["speedup_vs_reference"] = stats["reference"]["median"] / stats["xpnet"]["median"]
        if trainer is not None and trainer.ops.name != "reference":  # launches matter on the GPU most
            before = trainer.ops.launches
            runners["xpnet"]()
            rec["launches_per_step"] = trainer.ops.launches - before
    return rec


def run(device="cpu", sizes=None, preset="mnist", batch_sizes=DEFAULT_BATCH_SIZES, impls=IMPLEMENTATIONS,
        dtype="float32", rounds=7, steps=None, out=None, progress=True, precision="fp32",
        min_time=DEFAULT_MIN_TIME, overwrite=False, check_against=None, tolerance=0.2) -> dict:
    """Sweep batch sizes for one model on one device; optionally write JSON, CSV and PNG to ``out``.

    ``precision`` (``fp32``, ``tf32``, ``fp16``) applies to xpnet, PyTorch (TF32 matmuls / AMP with
    GradScaler) and the GEMM floor alike; ``tf32`` and ``fp16`` are GPU-only here.  With
    ``check_against`` (a baseline results.json) the result carries a ``gate`` entry (see :func:`gate`).
    Every argument is checked (:func:`check_arguments`) before anything is timed.
    """
    plan = check_arguments(device=device, sizes=sizes, preset=preset, batch_sizes=batch_sizes, impls=impls,
                           dtype=dtype, rounds=rounds, steps=steps, out=out, precision=precision,
                           min_time=min_time, overwrite=overwrite, check_against=check_against,
                           tolerance=tolerance)
    sizes = plan.sizes
    _threads_alike(device)
    env = environment(device)
    points = [Point(device, list(sizes), b, dtype, precision) for b in plan.batch_sizes]
    skipped = [p.batch_size for p in points if not _fits(p.sizes, p.batch_size, device)]
    points = [p for p in points if p.batch_size not in skipped]
    records = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(points, desc=f"xpnet bench {device} {sizes}", unit="point")
    for p in bar if bar is not None else points:
        records.append(measure(p, plan.impls, rounds, steps, min_time=min_time))
        if bar is not None:
            r = records[-1]
            bar.set_postfix(batch=p.batch_size, ms=f"{r.get('ms_per_step', float('nan')):.3g}")
    result = {"environment": env, "records": records, "skipped_batch_sizes": skipped,
              "min_time_s": min_time, "noisy_relative_iqr": NOISY_RELATIVE_IQR}
    for r in records:
        r["environment"] = env  # each record stands alone in the JSON
    if plan.baseline is not None:
        result["gate"] = {"baseline": str(check_against), "tolerance": tolerance,
                          **gate(result, plan.baseline, tolerance)}
    if out is not None:
        write_results(result, Path(out))
    return result


def _threads_alike(device: str) -> None:
    """On the CPU, give PyTorch the same thread count as NumPy's BLAS, for a fair comparison."""
    if device != "cpu":
        return
    try:
        import torch
        from threadpoolctl import threadpool_info
    except ImportError:
        return
    threads = [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]
    if threads:
        torch.set_num_threads(threads[0])


# -- output ----------------------------------------------------------------------------------------
COLUMNS = ("device", "precision", "batch_size", "ms_per_step", "iqr_ms", "relative_iqr", "samples_per_s", "gflops",
           "gemm_floor_ms", "efficiency", "speedup_vs_torch", "speedup_vs_reference", "launches_per_step")
NOISY_MARK = "!"


def table(result: dict) -> str:
    """A readable text table of a sweep; noisy points are marked, with a footnote."""
    head = ["batch", "xpnet ms", "IQR", "samples/s", "GFLOP/s", "floor ms", "step/floor", "vs torch", "vs ref",
            "launches", "noisy"]
    rows = []
    for r in result["records"]:
        noisy = r.get("noisy") or []
        rows.append([str(r["batch_size"]), _f(r.get("ms_per_step")), _pct(r.get("relative_iqr")),
                     _f(r.get("samples_per_s"), 0), _f(r.get("gflops"), 1), _f(r.get("gemm_floor_ms")),
                     _f(1 / r["efficiency"] if r.get("efficiency") else None, 2),
                     _x(r.get("speedup_vs_torch")), _x(r.get("speedup_vs_reference")),
                     str(r.get("launches_per_step", "-")), f"{NOISY_MARK} {','.join(noisy)}" if noisy else ""])
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths[:-1]) + "  {}"
    env = result["environment"]
    precision = result["records"][0].get("precision", "fp32") if result["records"] else "fp32"
    lines = [f"{env.get('gpu') or env['cpu']} | {_blas(env)} | numpy {env['numpy']} numba {env.get('numba')} "
             f"torch {env.get('torch')} | {precision} | {env['date']}", fmt.format(*head).rstrip()]
    lines += [fmt.format(*row).rstrip() for row in rows]
    lines.append("IQR: inter-quartile range of xpnet's round times, relative to their median.")
    if any(r.get("noisy") for r in result["records"]):
        lines.append(f"{NOISY_MARK} noisy: relative IQR above {NOISY_RELATIVE_IQR:.0%} for the named "
                     "implementations; their ratios are less trustworthy (raise --min-time or --rounds, or use a "
                     "quieter machine).")
    return "\n".join(lines)


def _blas(env) -> str:
    blas = env.get("blas")
    if isinstance(blas, list) and blas:
        b = blas[0]
        return f"{b['internal_api']} {b['version']} core={b['architecture']} threads={b['num_threads']}"
    return str(blas)


def _f(v, digits=3):
    if v is None:
        return "-"
    return f"{v:.{digits}f}" if digits else f"{v:,.0f}"


def _x(v):
    return "-" if v is None else f"{v:.2f}x"


def _pct(v):
    return "-" if v is None else f"±{v:.1%}"


CSV_EXTRA = ("noisy", "floor_iqr_ms", "torch_ms", "torch_iqr_ms", "reference_ms", "reference_iqr_ms")


def write_results(result: dict, out: Path) -> None:
    """``results.json``, ``results.csv`` and (with matplotlib) ``throughput.png`` / ``efficiency.png``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    with open(out / "results.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["sizes", *COLUMNS, *CSV_EXTRA])
        for r in result["records"]:
            writer.writerow(["-".join(map(str, r["sizes"])), *(r.get(c) for c in COLUMNS),
                             " ".join(r.get("noisy") or []), r.get("floor", {}).get("iqr_ms"),
                             r.get("torch", {}).get("ms_per_step"), r.get("torch", {}).get("iqr_ms"),
                             r.get("reference", {}).get("ms_per_step"), r.get("reference", {}).get("iqr_ms")])
    plot(result, out)


def error_bars(recs, impl: str, key: str) -> np.ndarray:
    """(2, n) distances from the median value to the values at the round-time quartiles, for
    ``samples_per_s`` or ``efficiency`` (a slower quartile gives the lower bar); zero when absent."""
    bars = np.zeros((2, len(recs)))
    for i, r in enumerate(recs):
        e = r[impl]
        if "q1_ms" not in e or "q3_ms" not in e:
            continue
        scale = r["batch_size"] * 1e3 if key == "samples_per_s" else r["gemm_floor_ms"]
        low, high = scale / e["q3_ms"], scale / e["q1_ms"]
        bars[:, i] = e[key] - low, high - e[key]
    return np.clip(bars, 0, None)


def plot(result: dict, out: Path) -> list[Path]:
    """``throughput.png`` (samples/s vs batch size) and ``efficiency.png`` (floor / step), with
    error bars from the quartiles of the round times."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    recs = result["records"]
    if not recs:
        return []
    batches = [r["batch_size"] for r in recs]
    label = f"{recs[0]['device']} {'-'.join(map(str, recs[0]['sizes']))} {recs[0].get('precision', 'fp32')}"
    floor = [r["batch_size"] / r["gemm_floor_ms"] * 1e3 for r in recs]
    panels = [("throughput.png", "samples_per_s", "samples / s", f"Training throughput, {label}", floor),
              ("efficiency.png", "efficiency", "GEMM floor / step", f"Efficiency, {label}", [1.0] * len(recs))]
    paths = []
    for name, key, ylabel, title, reference in panels:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for impl in ("xpnet", "reference", "torch"):
            if impl in recs[0]:
                ax.errorbar(batches, [r[impl][key] for r in recs], yerr=error_bars(recs, impl, key), marker="o",
                            capsize=3, label=impl)
        ax.plot(batches, reference, ls="--", color="gray", label="GEMM floor")
        ax.set(xscale="log", xlabel="batch size", ylabel=ylabel, title=title)
        if key == "samples_per_s":
            ax.set_yscale("log")
        else:
            ax.set_ylim(0, 1.1)
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        paths.append(out / name)
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths


# -- regression gate -------------------------------------------------------------------------------
def check_against(result: dict, baseline: dict, tolerance: float = 0.2) -> list[str]:
    """Compare same-run ratios with a committed baseline; return one line per regression.

    A ratio regresses when it falls below ``baseline * (1 - tolerance)``.  Absolute times are
    never compared: shared CI machines are too noisy for them.  A line names the noisy
    implementations of either run, since a noisy point's ratio may have moved by noise alone.
    """
    base = {_record_key(r): r for r in baseline["records"]}
    problems = []
    for r in result["records"]:
        b = base.get(_record_key(r))
        if b is None:
            continue
        note = _noise_note(r, b)
        for ratio in GATED_RATIOS:
            if ratio in r and ratio in b and r[ratio] < b[ratio] * (1 - tolerance):
                problems.append(f"{r['device']} {r['sizes']} batch {r['batch_size']}: {ratio} {r[ratio]:.3f} < "
                                f"baseline {b[ratio]:.3f} - {tolerance:.0%}{note}")
    return problems


def gate(result: dict, baseline: dict, tolerance: float = 0.2) -> dict:
    """The regression gate's verdict: ``problems`` (regressions, plus a line when no point of the
    run matched the baseline -- a gate that compared nothing must not pass), ``compared`` (points)
    and ``noisy`` (one line per compared point that was noisy in this run or the baseline)."""
    base = {_record_key(r): r for r in baseline["records"]}
    pairs = [(r, base[_record_key(r)]) for r in result["records"] if _record_key(r) in base]
    problems = check_against(result, baseline, tolerance)
    if not pairs:
        problems.append("no point of this run matched the baseline, so nothing was compared")
    noisy = [f"{r['device']} {r['sizes']} batch {r['batch_size']}:{_noise_note(r, b)}" for r, b in pairs
             if _noise_note(r, b)]
    return {"compared": len(pairs), "problems": problems, "noisy": noisy}


def _noise_note(run_rec: dict, base_rec: dict) -> str:
    parts = [f"{label} {', '.join(rec['noisy'])}" for label, rec in (("noisy in this run:", run_rec),
                                                                    ("noisy in baseline:", base_rec))
             if rec.get("noisy")]
    return f" [{'; '.join(parts)}; relative IQR > {NOISY_RELATIVE_IQR:.0%}]" if parts else ""
