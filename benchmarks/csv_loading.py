"""Loading a float CSV: peak memory (RSS) and time of xpnet's readers vs ``np.loadtxt``.

Not a timed test: run it by hand and copy the table into docs/benchmarks.md::

    python benchmarks/csv_loading.py --rows 1000000 --cols 100     # the issue's size (~2 GB of CSV)
    python benchmarks/csv_loading.py --rows 50000 --cols 100       # a quick run

Each reader runs in its own fresh subprocess, so its peak RSS (``ru_maxrss``) is its own; the
baseline RSS of a Python with NumPy (and pyarrow) imported is printed for reference.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

READERS = {
    "np.loadtxt float64": "np.loadtxt(path, delimiter=',', skiprows=1)",
    "xpnet python float64": "data.load_csv_named(path, 'y', dtype=np.float64, engine='python')",
    "xpnet pyarrow float64": "data.load_csv_named(path, 'y', dtype=np.float64, engine='pyarrow')",
    "xpnet pyarrow float32": "data.load_csv_named(path, 'y', dtype=np.float32, engine='pyarrow')",
    "baseline (imports only)": "None",
}

CHILD = """
import resource, sys, time
import numpy as np
import pyarrow.csv
from xpnet import data
path = sys.argv[1]
t = time.perf_counter()
out = {expr}
elapsed = time.perf_counter() - t
print(elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def write_csv(path: str, rows: int, cols: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with open(path, "w") as fh:
        fh.write(",".join([f"f{i}" for i in range(cols)] + ["y"]) + "\n")
        for start in range(0, rows, 10_000):
            n = min(10_000, rows - start)
            block = np.column_stack([rng.normal(size=(n, cols)), rng.integers(0, 10, n)])
            np.savetxt(fh, block, delimiter=",", fmt=["%.9g"] * cols + ["%d"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--cols", type=int, default=100)
    ap.add_argument("--skip", default="", help="comma-separated readers to skip (e.g. 'xpnet python float64')")
    args = ap.parse_args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "data.csv")
        write_csv(path, args.rows, args.cols)
        size = os.path.getsize(path)
        result_mb = args.rows * args.cols * 4 / 2**20
        print(f"{args.rows} x {args.cols} floats, CSV {size / 2**20:.0f} MiB; float32 result {result_mb:.0f} MiB; "
              f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs, Python "
              f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}")
        print("| reader | time (s) | peak RSS (MiB) |\n|---|---:|---:|")
        rows = {}
        for name, expr in READERS.items():
            if name in skip:
                continue
            out = subprocess.run([sys.executable, "-c", CHILD.format(expr=expr), path], capture_output=True,
                                 text=True, check=True).stdout.split()
            elapsed, rss_kib = float(out[0]), int(out[1])
            rows[name] = {"seconds": elapsed, "peak_rss_mib": rss_kib / 1024}
            print(f"| {name} | {elapsed:.2f} | {rss_kib / 1024:.0f} |", flush=True)
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
