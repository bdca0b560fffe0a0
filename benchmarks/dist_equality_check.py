"""Data-parallel training equals one process, on a real device: ``mpiexec -n N`` ranks (NCCL on GPUs, MPI on
CPUs) against the same case trained in this process, with dropout, sample weights and an uneven last batch.

``python benchmarks/dist_equality_check.py --device cuda --ranks 1,2`` (``benchmarks/gpu_check.sh`` runs it);
float64, so the weights must agree to 1e-10.  Exits 1 when a run differs or fails.  The CPU suite checks
the same on MPI (``tests/test_distributed.py``); this is its GPU counterpart (the CUDA kernels' row offsets
for dropout, NCCL's all-reduce of the weighted shares).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import xpnet

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import dist_worker  # noqa: E402  (the worker tests/test_distributed.py starts under mpiexec)

CASE = {"n": 203, "features": 12, "hidden": [32, 16], "classes": 4, "dtype": "float64", "epochs": 3,
        "batch_size": 40, "optimizer": "adam", "lr": 1e-2, "dropout": 0.2,
        "sample_weight": {"zero": [[40, 60]], "sparse": 0.2}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--ranks", default="1,2", help="comma-separated rank counts")
    args = parser.parse_args()
    case = dict(CASE, device=args.device)
    model, _, history = dist_worker.train(case)
    reference = np.asarray(xpnet.to_host(model.params))
    mpiexec = shutil.which("mpiexec") or str(Path(sys.executable).parent / "mpiexec")
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        case_file = Path(tmp) / "case.json"
        case_file.write_text(json.dumps(case))
        for n in sorted({int(r) for r in args.ranks.split(",")}):
            out = Path(tmp) / f"out{n}.npz"
            env = dict(os.environ, PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
            proc = subprocess.run([mpiexec, "-n", str(n), sys.executable, str(ROOT / "tests" / "dist_worker.py"),
                                   str(case_file), str(out)], capture_output=True, text=True, timeout=300, env=env)
            if proc.returncode != 0:
                print(f"{n} rank(s): FAILED (exit {proc.returncode})\n{proc.stderr[-2000:]}")
                failed += 1
                continue
            diff = float(np.abs(np.load(out)["params"] - reference).max())
            ok = diff <= 1e-10
            failed += not ok
            print(f"{args.device}, {n} rank(s) vs one process, dropout + sample weights: max |weight difference| "
                  f"{diff:.1e} ({'ok' if ok else 'DIFFERS'}); final loss {history.history['loss'][-1]:.6f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
