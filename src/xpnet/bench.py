"""The benchmark harness behind ``xpnet bench``: training-step throughput with yardsticks.

For every point (device x model x batch size) it times, interleaved in the same process:

* ``floor``     -- the step's matrix products alone (forward ``x @ W``, ``dW = x^T @ g``,
                   ``dX = g @ W^T``; no ``dX`` for the first layer): the GEMM floor;
* ``xpnet``     -- a full xpnet training step (fused kernels), Adam, softmax cross-entropy;
* ``reference`` -- the same step on the reference (array-API) kernels;
* ``torch``     -- the same model and optimizer in PyTorch eager, when torch is installed.

Each implementation is warmed up first (compilation, caches, memory pools), then timed in
``rounds`` interleaved rounds of ``steps`` steps each (CUDA events on the GPU); a round's
time per step is the round's total divided by ``steps``, and the reported value is the median
over rounds with the inter-quartile spread.  Ratios -- efficiency = floor / step, speed-up over
torch = torch / xpnet -- come from the same run, so they survive noisy shared machines;
the regression gate (:func:`check_against`) compares only such ratios.
"""

from __future__ import annotations

import csv
import datetime
import json
import os
import platform
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


def n_params(sizes) -> int:
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


# -- timing ----------------------------------------------------------------------------------------
class _Timer:
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


# -- the implementations ---------------------------------------------------------------------------
def _data(sizes, batch, seed=0):
    r = np.random.default_rng(seed)
    return r.normal(size=(batch, sizes[0])).astype(np.float32), r.integers(0, sizes[-1], size=batch).astype(np.int64)


def _xpnet_step(sizes, batch, device, dtype, kernels, precision="fp32"):
    from . import MLP, Trainer, kernels as kmod
    from .optim import Adam

    previous = kmod.get_kernel_mode()
    kmod.set_kernel_mode("reference" if kernels == "reference" else "auto")
    try:
        trainer = Trainer(MLP(sizes, dtype=dtype, device=device, seed=0), optimizer=Adam(lr=1e-4),
                          precision=precision)
    finally:
        kmod.set_kernel_mode(previous)
    X, y = trainer._data(*_data(sizes, batch))  # device-resident batch, as fit keeps it
    ctx = trainer.model.backend.context

    def step():
        with ctx():
            trainer._forward_backward(X, y)
            trainer._update()

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


def measure(point: Point, impls=IMPLEMENTATIONS, rounds=7, steps=None, warmup=3) -> dict:
    """Time one point; returns a JSON-ready record."""
    timer = _Timer(point.device)
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
    if steps is None:  # aim for ~50 ms per round and implementation, at least 2 steps
        probe = timer(runners["floor"], 2)
        steps = int(max(2, min(200, 0.05 / max(probe, 1e-6))))
    settle = 0.1 if not point.device.startswith("cuda") else 0.0
    times = {k: [] for k in runners}
    for _ in range(rounds):
        for name, fn in runners.items():  # interleaved: drift affects all alike
            # Untimed steps first, for `settle` seconds: the previous library's BLAS / OpenMP
            # threads keep spinning for up to ~0.1 s after their last call and would steal the
            # cores from this one -- a cost no program that uses one library pays.
            _run_for(fn, settle)
            times[name].append(timer(fn, steps))
    rec = {"device": point.device, "sizes": point.sizes, "params": n_params(point.sizes),
           "batch_size": point.batch_size, "dtype": point.dtype, "precision": point.precision, "rounds": rounds,
           "steps_per_round": steps}
    med = {k: float(np.median(v)) for k, v in times.items()}
    rec["gemm_floor_ms"] = med["floor"] * 1e3
    for impl in runners:
        if impl == "floor":
            continue
        q1, q3 = np.percentile(times[impl], [25, 75])
        rec[impl] = {"ms_per_step": med[impl] * 1e3, "iqr_ms": (q3 - q1) * 1e3,
                     "samples_per_s": point.batch_size / med[impl], "gflops": flops / med[impl] / 1e9,
                     "efficiency": med["floor"] / med[impl]}
    if "xpnet" in rec:
        x = rec["xpnet"]
        rec.update(ms_per_step=x["ms_per_step"], samples_per_s=x["samples_per_s"], gflops=x["gflops"],
                   efficiency=x["efficiency"])
        if "torch" in rec:
            rec["speedup_vs_torch"] = med["torch"] / med["xpnet"]
        if "reference" in rec:
            rec["speedup_vs_reference"] = med["reference"] / med["xpnet"]
        if trainer is not None and trainer.ops.name != "reference":  # launches matter on the GPU most
            before = trainer.ops.launches
            runners["xpnet"]()
            rec["launches_per_step"] = trainer.ops.launches - before
    return rec


def run(device="cpu", sizes=None, preset="mnist", batch_sizes=DEFAULT_BATCH_SIZES, impls=IMPLEMENTATIONS,
        dtype="float32", rounds=7, steps=None, out=None, progress=True, precision="fp32") -> dict:
    """Sweep batch sizes for one model on one device; optionally write JSON, CSV and PNG to ``out``.

    ``precision`` (``fp32``, ``tf32``, ``fp16``) applies to xpnet, PyTorch (TF32 matmuls / AMP with
    GradScaler) and the GEMM floor alike; ``tf32`` and ``fp16`` are GPU-only here.
    """
    if precision not in ("fp32", "tf32", "fp16"):
        raise ValueError(f"precision={precision!r} is unknown: use fp32, tf32 or fp16.")
    if precision != "fp32" and not device.startswith("cuda"):
        raise ValueError(f"precision={precision!r} is measured on the GPU only: use --device cuda "
                         "(on the CPU it is a float32 run or NumPy's slow float16).")
    if sizes is None:
        if preset not in PRESETS:
            raise ValueError(f"preset={preset!r} is unknown: use one of {', '.join(PRESETS)}, or give sizes.")
        sizes = PRESETS[preset]
    _threads_alike(device)
    env = environment(device)
    points = [Point(device, list(sizes), b, dtype, precision) for b in batch_sizes]
    skipped = [p.batch_size for p in points if not _fits(p.sizes, p.batch_size, device)]
    points = [p for p in points if p.batch_size not in skipped]
    records = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(points, desc=f"xpnet bench {device} {sizes}", unit="point")
    for p in bar if bar is not None else points:
        records.append(measure(p, impls, rounds, steps))
        if bar is not None:
            r = records[-1]
            bar.set_postfix(batch=p.batch_size, ms=f"{r.get('ms_per_step', float('nan')):.3g}")
    result = {"environment": env, "records": records, "skipped_batch_sizes": skipped}
    for r in records:
        r["environment"] = env  # each record stands alone in the JSON
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
COLUMNS = ("device", "precision", "batch_size", "ms_per_step", "samples_per_s", "gflops", "gemm_floor_ms", "efficiency",
           "speedup_vs_torch", "speedup_vs_reference", "launches_per_step")


def table(result: dict) -> str:
    """A readable text table of a sweep."""
    head = ["batch", "xpnet ms", "samples/s", "GFLOP/s", "floor ms", "step/floor", "vs torch", "vs ref", "launches"]
    rows = []
    for r in result["records"]:
        rows.append([str(r["batch_size"]), _f(r.get("ms_per_step")), _f(r.get("samples_per_s"), 0),
                     _f(r.get("gflops"), 1), _f(r.get("gemm_floor_ms")), _f(1 / r["efficiency"] if r.get("efficiency")
                                                                              else None, 2),
                     _x(r.get("speedup_vs_torch")), _x(r.get("speedup_vs_reference")),
                     str(r.get("launches_per_step", "-"))])
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    env = result["environment"]
    precision = result["records"][0].get("precision", "fp32") if result["records"] else "fp32"
    lines = [f"{env.get('gpu') or env['cpu']} | {_blas(env)} | numpy {env['numpy']} numba {env.get('numba')} "
             f"torch {env.get('torch')} | {precision} | {env['date']}", fmt.format(*head)]
    lines += [fmt.format(*row) for row in rows]
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


def write_results(result: dict, out: Path) -> None:
    """``results.json``, ``results.csv`` and (with matplotlib) ``throughput.png`` / ``efficiency.png``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    with open(out / "results.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["sizes", *COLUMNS, "torch_ms", "reference_ms"])
        for r in result["records"]:
            writer.writerow(["-".join(map(str, r["sizes"])), *(r.get(c) for c in COLUMNS),
                             r.get("torch", {}).get("ms_per_step"), r.get("reference", {}).get("ms_per_step")])
    plot(result, out)


def plot(result: dict, out: Path) -> list[Path]:
    """``throughput.png`` (samples/s vs batch size) and ``efficiency.png`` (floor / step)."""
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
                ax.plot(batches, [r[impl][key] for r in recs], marker="o", label=impl)
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
    never compared: shared CI machines are too noisy for them.
    """
    def key(r):
        return (r["device"], tuple(r["sizes"]), r["batch_size"], r.get("dtype", "float32"), r.get("precision", "fp32"))

    base = {key(r): r for r in baseline["records"]}
    problems = []
    for r in result["records"]:
        b = base.get(key(r))
        if b is None:
            continue
        for ratio in GATED_RATIOS:
            if ratio in r and ratio in b and r[ratio] < b[ratio] * (1 - tolerance):
                problems.append(f"{r['device']} {r['sizes']} batch {r['batch_size']}: {ratio} {r[ratio]:.3f} < "
                                f"baseline {b[ratio]:.3f} - {tolerance:.0%}")
    return problems
