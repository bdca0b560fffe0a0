"""What a sweep reports: the environment block, the text table, JSON / CSV files and plots."""

from __future__ import annotations

import csv
import datetime
import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from .defaults import CSV_EXTRA, NOISY_RELATIVE_IQR


# -- environment -----------------------------------------------------------------------------------
def environment(device: str = "cpu") -> dict[str, Any]:
    """Machine, BLAS, GPU and library versions: printed and stored with every result."""
    from .. import __version__

    env: dict[str, Any] = {
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
        except Exception:
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
        except Exception:
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
