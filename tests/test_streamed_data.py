"""Memory-mapped .npy data: checked and standardised in chunks, never loaded whole or upcast, and
streamed batch by batch -- a data set larger than the process's data-memory limit trains."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from xpnet import data

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_DATA semantics are Linux's")


def _write_npy(path, n, d, seed=0):
    """An (n, d) float32 .npy written in blocks (never whole in this process) and 0/1 labels."""
    X = np.lib.format.open_memmap(path / "x.npy", mode="w+", dtype=np.float32, shape=(n, d))
    y = np.empty(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    for a in range(0, n, 50_000):
        b = min(n, a + 50_000)
        block = rng.normal(size=(b - a, d)).astype(np.float32)
        X[a:b] = block * 3 + 7
        y[a:b] = block[:, 0] + block[:, 1] > 0
    X.flush()
    del X
    np.save(path / "y.npy", y)
    return path / "x.npy", path / "y.npy"


def test_npy_features_stay_memory_mapped_and_float32(tmp_path):
    x, y = _write_npy(tmp_path, 2000, 5)
    X, _ = data.load_npy_pair(x, y, mmap=True)
    assert isinstance(X, np.memmap) and X.dtype == np.float32
    cfg = {"source": "npy", "x_path": str(x), "y_path": str(y), "test_fraction": 0.25, "val_fraction": 0.1,
           "standardize": True}
    parts, info = data.prepare_run_data(cfg, "auto", seed=0)
    train = parts["train"][0]
    assert isinstance(train, np.memmap) and train.dtype == np.float32
    full = np.load(x)[info["split"]["indices"]["train"]].astype(np.float64)
    np.testing.assert_allclose(info["mean"], full.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(info["scale"], full.std(axis=0), rtol=1e-10)
    np.testing.assert_allclose(train, (full - full.mean(0)) / full.std(0), rtol=1e-5, atol=1e-5)


def test_a_memory_mapped_npy_larger_than_the_memory_limit_trains(tmp_path):
    """X is 600 MB; the training process may allocate at most 300 MB of private data (RLIMIT_DATA:
    heap and private mappings -- a read-only memory-mapped file is not private data, which is the
    point). Loading X whole (as before) needs more than the limit; streaming it does not.
    RLIMIT_AS cannot be the limit here: it counts every mapping, a file mapping too, so no
    mapping of a file larger than it can exist."""
    n, d = 600_000, 250
    x, y = _write_npy(tmp_path, n, d)
    assert x.stat().st_size > 1.9 * (300 << 20)  # 572 MiB
    run = tmp_path / "run"
    script = textwrap.dedent(f"""
        import resource, sys
        limit = 300 << 20
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
        from xpnet.cli import main
        sys.exit(main(["train", "--x-path", {str(x)!r}, "--y-path", {str(y)!r}, "--hidden", "16", "--epochs", "1",
                       "--batch-size", "512", "--lr", "0.01", "--quiet", "--run-dir", {str(run)!r}]))
    """)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((run / "result.json").read_text())
    assert result["test"]["accuracy"] > 0.9
    # the same load, whole in memory, does not fit under the limit
    whole = textwrap.dedent(f"""
        import resource, numpy as np
        limit = 300 << 20
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
        np.load({str(x)!r}).astype(np.float64)
    """)
    assert subprocess.run([sys.executable, "-c", whole], capture_output=True, env=env, timeout=600).returncode != 0
