"""The benchmark harness's logic: the regression gate, presets, the CLI."""

from __future__ import annotations

import json

import pytest

from xpnet import bench
from xpnet.cli import main


def _result(eff, speedup):
    rec = {"device": "cpu", "sizes": [4, 2], "batch_size": 8, "dtype": "float32", "efficiency": eff,
           "speedup_vs_torch": speedup}
    return {"records": [rec]}


def test_gate_passes_within_tolerance_and_fails_beyond():
    base = _result(0.8, 1.5)
    assert bench.check_against(_result(0.7, 1.3), base, tolerance=0.2) == []
    problems = bench.check_against(_result(0.5, 1.5), base, tolerance=0.2)
    assert len(problems) == 1 and "efficiency 0.500 < baseline 0.800" in problems[0]


def test_gate_ignores_points_missing_from_the_baseline():
    other = {"records": [{**_result(0.8, 1.5)["records"][0], "batch_size": 16}]}
    assert bench.check_against(_result(0.1, 0.1), other) == []


def test_n_params_and_presets():
    assert bench.n_params([784, 1024, 1024, 10]) == 1_863_690
    assert bench.PRESETS["wide"] == [4096] * 5


def test_cli_bench_writes_results_and_gates(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["bench", "--sizes", "8,16,4", "--batch-sizes", "8", "--impls", "xpnet,reference", "--rounds", "2",
            "--steps", "2", "--out", str(out), "--quiet"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "step/floor" in text and "results written" in text
    result = json.loads((out / "results.json").read_text())
    assert result["records"][0]["batch_size"] == 8
    # the same run as its own baseline passes; an impossible baseline fails with exit 1
    baseline = tmp_path / "baseline.json"
    impossible = json.loads((out / "results.json").read_text())
    impossible["records"][0]["efficiency"] = 1e9
    baseline.write_text(json.dumps(impossible))
    assert main(args + ["--check-against", str(baseline)]) == 1
    assert "REGRESSION" in capsys.readouterr().out


def test_cli_bench_refuses_unknown_impl_and_missing_baseline(tmp_path):
    with pytest.raises(SystemExit, match="unknown"):
        main(["bench", "--impls", "jax"])
    with pytest.raises(SystemExit, match="does not exist"):
        main(["bench", "--check-against", str(tmp_path / "nope.json")])


def test_unknown_preset():
    with pytest.raises(ValueError, match="preset='huge' is unknown"):
        bench.run(preset="huge", progress=False)


def test_gpu_precisions_are_refused_on_the_cpu(capsys):
    assert main(["bench", "--precision", "fp16", "--quiet"]) == 2
    assert "precision='fp16' is measured on the GPU only" in capsys.readouterr().err
