"""pytest-benchmark suite: one xpnet training step per device x batch size x implementation.

``python -m pytest benchmarks --benchmark-enable`` times it (about a minute on 2 CPU cores);
the normal test run executes each case once, untimed, so the harness cannot rot.  Each case
records samples/s and the same-run efficiency against the GEMM floor in ``extra_info``, which
``--benchmark-json`` writes out for CI dashboards.
"""

from __future__ import annotations

import pytest
from bench_devices import DEVICES

from xpnet import bench
from xpnet.bench import harness

MODELS = {"small": bench.PRESETS["small"], "mnist": bench.PRESETS["mnist"]}


@pytest.mark.parametrize("batch", [64, 256])
@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("impl", ["xpnet", "reference"])
@pytest.mark.parametrize("device", DEVICES)
def test_train_step(benchmark, device, impl, model, batch):
    sizes = MODELS[model]
    step, trainer = harness.xpnet_step(sizes, batch, device, "float32", impl)
    floor = harness.floor_step(sizes, batch, device, "float32")
    timer = bench.Timer(device)
    for fn in (step, floor):
        fn()
    # the GEMM floor of the same shapes, timed in the same run, so efficiency is a same-run ratio
    floor_s = min(timer(floor, 3) for _ in range(3))
    step_s = min(timer(step, 3) for _ in range(3))
    benchmark.extra_info.update(device=device, impl=impl, sizes=sizes, batch_size=batch,
                                kernels=trainer.ops.name, samples_per_s=batch / step_s,
                                efficiency=floor_s / step_s, gemm_floor_ms=floor_s * 1e3)
    benchmark(step)
    assert trainer.ops.name == ("reference" if impl == "reference" else ("cupy" if device == "cuda" else "numba"))


def test_quick_sweep_writes_every_output(tmp_path):
    """The harness end to end on a tiny model: records, ratios, environment block, files."""
    result = bench.run(device="cpu", sizes=[16, 32, 4], batch_sizes=[8, 32], rounds=3, steps=2,
                       out=tmp_path, progress=False)
    assert [r["batch_size"] for r in result["records"]] == [8, 32]
    for r in result["records"]:
        for key in ("batch_size", "samples_per_s", "ms_per_step", "gemm_floor_ms", "efficiency",
                    "speedup_vs_reference", "environment", "relative_iqr", "noisy", "steps_per_round"):
            assert key in r, key
        assert "blas" in r["environment"] and r["environment"]["cpu"]
    assert (tmp_path / "results.json").is_file() and (tmp_path / "results.csv").is_file()
    pytest.importorskip("matplotlib")
    assert (tmp_path / "throughput.png").is_file() and (tmp_path / "efficiency.png").is_file()


def test_gpu_check_script_dry_run_on_the_cpu(tmp_path):
    """benchmarks/gpu_check.sh is run on a GPU machine only rarely; its logic (tests, sweeps with
    the bench flags it passes, the summary) runs here on every CI run in its CPU dry-run mode."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    script = Path(__file__).with_name("gpu_check.sh")
    env = {**os.environ, "XPNET_GPU_CHECK_DEVICE": "cpu", "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(script), str(tmp_path / "out")], capture_output=True, text=True, env=env,
                          timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert "mnist: exit 0" in summary and "small-fp32: exit 0" in summary
    assert (tmp_path / "out" / "mnist" / "results.json").is_file()
    if "distributed check skipped" not in summary:  # with mpi4py: the 1-rank data-parallel check
        assert "distributed-1: exit 0" in (tmp_path / "out" / "sweeps.status").read_text()
        assert "allreduce ms" in summary
