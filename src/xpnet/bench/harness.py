"""Timing: the implementations of a training step, rounds calibrated to a minimum time, the sweep."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .checks import check_arguments
from .defaults import (
    DEFAULT_BATCH_SIZES,
    DEFAULT_MIN_TIME,
    IMPLEMENTATIONS,
    MAX_STEPS_PER_ROUND,
    MIN_ROUNDS,
    NOISY_RELATIVE_IQR,
)
from .gate import gate
from .report import environment, write_results


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


def xpnet_step(sizes, batch, device, dtype, kernels, precision="fp32"):
    from .. import MLP, Trainer
    from ..optim import Adam

    model = MLP(sizes, dtype=dtype, device=device, seed=0, kernels="reference" if kernels == "reference" else "auto")
    trainer = Trainer(model, optimizer=Adam(lr=1e-4), precision=precision)
    X, y = trainer.prepare(*_data(sizes, batch))  # device-resident batch, as fit keeps it

    def step():
        trainer.step(X, y)

    return step, trainer


def torch_step(sizes, batch, device, dtype, precision="fp32"):
    """PyTorch eager, same model and Adam (fused on the GPU); AMP with GradScaler for fp16, and
    ``autocast(bfloat16)`` without a scaler for bf16."""
    import torch

    dev = "cuda" if device.startswith("cuda") else "cpu"
    tdtype = getattr(torch, dtype)
    layers: list[Any] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b, dtype=tdtype, device=dev))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    fused: dict[str, Any] = dict(fused=True) if dev == "cuda" else dict(foreach=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, **fused)
    X, y = _data(sizes, batch)
    X, y = torch.tensor(X, dtype=tdtype, device=dev), torch.tensor(y, device=dev)

    if precision == "fp16":
        scaler = torch.amp.GradScaler("cuda")

        def step_fp16() -> None:
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = torch.nn.functional.cross_entropy(model(X), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

        return step_fp16

    if precision == "bf16":  # autocast without a GradScaler: bfloat16 has float32's range

        def step_bf16() -> None:
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(model(X), y)
            loss.backward()
            opt.step()

        return step_bf16

    def step():
        if dev == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(X), y).backward()
        opt.step()

    return step


def floor_step(sizes, batch, device, dtype, precision="fp32"):
    """The step's matrix products alone, into preallocated outputs, in the step's precision."""
    if not device.startswith("cuda"):
        return _floor_with(np, sizes, batch, dtype)
    import cupy as lib

    with lib.cuda.Device(int(device.split(":")[1]) if ":" in device else 0):
        if precision == "bf16":
            from ..backend import bfloat16_dtype

            bfloat16_dtype()  # registers the "bfloat16" dtype name with NumPy (and so CuPy)
        half = {"fp16": "float16", "bf16": "bfloat16"}.get(precision, dtype)
        return _floor_with(lib, sizes, batch, half, tf32=precision == "tf32")


def _floor_with(lib, sizes, batch, dtype, tf32=False):
    """The products of a step; ``tf32`` runs them as xpnet's TF32 kernel set does (per-product cuBLAS
    TF32 compute type), and bfloat16 as its bf16 kernel set does (``gemmEx``, float32 accumulation),
    so the floor and the xpnet / reference paths compare like with like."""
    if tf32:
        from ..kernels.cuda import matmul_tf32

        def matmul(a, b, out):
            return matmul_tf32(lib, a, b, out)
    elif dtype == "bfloat16":
        from ..kernels.cuda import matmul_bf16

        def matmul(a, b, out):
            return matmul_bf16(lib, a, b, out)
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
    runners = {"floor": floor_step(point.sizes, point.batch_size, point.device, point.dtype, point.precision)}
    trainer = None
    for impl in impls:
        if impl == "torch":
            try:
                runners["torch"] = torch_step(point.sizes, point.batch_size, point.device, point.dtype,
                                               point.precision)
            except ImportError:
                continue
        elif impl in ("xpnet", "reference"):
            step, tr = xpnet_step(point.sizes, point.batch_size, point.device, point.dtype, impl, point.precision)
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
    times: dict[str, list[float]] = {k: [] for k in runners}
    ran: dict[str, list[int]] = {k: [] for k in runners}
    lengths: dict[str, list[float]] = {k: [] for k in runners}
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

    ``precision`` (``fp32``, ``tf32``, ``fp16``, ``bf16``) applies to xpnet, PyTorch (TF32 matmuls / AMP
    with GradScaler / ``autocast(bfloat16)``) and the GEMM floor alike; all but fp32 are GPU-only here.  With
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
    if not points:  # a "successful" sweep that measured nothing would mislead a CI gate
        raise ValueError(f"no batch size of {plan.batch_sizes} fits in memory for sizes {list(sizes)} on "
                         f"{device}: use smaller --batch-sizes or a smaller model.")
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


