"""The benchmark harness's logic: argument checks before timing, calibration, statistics, output,
the regression gate, the CLI.  No test asserts a speed: timing is faked where it matters."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from xpnet import bench
from xpnet.backend import gpu_available
from xpnet.bench import harness, report
from xpnet.cli import main

BASELINE = Path(__file__).resolve().parents[1] / "benchmarks" / "baseline-cpu.json"
SMALL = ["--preset", "small", "--batch-sizes", "8", "--rounds", "3", "--min-time", "0.01", "--quiet"]


@pytest.fixture
def no_timing(monkeypatch):
    """Any timing at all fails the test: refusals must come before it."""
    def timed(*args, **kwargs):
        raise AssertionError("timing started before the arguments were refused")

    monkeypatch.setattr(harness, "measure", timed)
    monkeypatch.setattr(harness, "calibrate_steps", timed)


def _result(eff, speedup, noisy=()):
    rec = {"device": "cpu", "sizes": [4, 2], "batch_size": 8, "dtype": "float32", "efficiency": eff,
           "speedup_vs_torch": speedup, "noisy": list(noisy)}
    return {"records": [rec]}


# -- refusals before timing ------------------------------------------------------------------------
BAD_ARGUMENTS = [
    (dict(rounds=0), "--rounds"), (dict(rounds=2), "--rounds 2 is too small: at least 3 rounds"),
    (dict(steps=0), "--steps"), (dict(steps=-3), "--steps"),
    (dict(tolerance=-0.1), "--tolerance"), (dict(tolerance=math.nan), "--tolerance"),
    (dict(tolerance=math.inf), "--tolerance"), (dict(tolerance=1.0), "--tolerance"),
    (dict(min_time=0), "--min-time"), (dict(min_time=-1), "--min-time"), (dict(min_time=math.nan), "--min-time"),
    (dict(min_time=math.inf), "--min-time"),
    (dict(batch_sizes=[]), "--batch-sizes"), (dict(batch_sizes=[8, 0]), "--batch-sizes"),
    (dict(batch_sizes=[-8]), "--batch-sizes"),
    (dict(sizes=[10]), "--sizes"), (dict(sizes=[10, 0, 2]), "--sizes"),
    (dict(preset="huge"), "--preset 'huge' is unknown: use one of small, mnist, wide, large"),
    (dict(impls=("xpnet", "jax")), r"--impls .*unknown \['jax'\]"), (dict(impls=()), "--impls"),
    (dict(device="gpu"), "--device 'gpu' is not understood"), (dict(device="cuda:x"), "--device"),
    (dict(dtype="float16"), "--dtype 'float16' is unknown"),
    (dict(precision="bf8"), "--precision 'bf8' is unknown"),
    (dict(precision="bf16"), "--precision bf16 is measured on the GPU only"),
    (dict(precision="fp16"), "--precision fp16 is measured on the GPU only"),
    (dict(precision="tf32"), "--precision tf32"),
]


@pytest.mark.parametrize("bad, message", BAD_ARGUMENTS)
def test_bad_arguments_are_refused_before_timing(no_timing, bad, message):
    kwargs = dict(preset="small", batch_sizes=[8], rounds=3, progress=False) | bad
    with pytest.raises(ValueError, match=message):
        bench.run(**kwargs)


@pytest.mark.skipif(gpu_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_refused_clearly(no_timing):
    with pytest.raises(ValueError, match="--device cuda: .*(CuPy|GPU)"):
        bench.run(device="cuda", preset="small", batch_sizes=[8], progress=False)


@pytest.mark.parametrize("argv", [
    ["--rounds", "1"], ["--steps", "0"], ["--tolerance", "nan"], ["--tolerance", "1.5"], ["--min-time", "0"],
    ["--batch-sizes", "0,64"], ["--sizes", "784"], ["--impls", "jax"], ["--device", "tpu"],
    ["--precision", "fp16"], ["--steps", "5", "--min-time", "0.1"], ["--check-against", "/nonexistent/base.json"],
])
def test_cli_refusals_exit_2_with_one_line(no_timing, capsys, argv):
    model = [] if "--sizes" in argv else ["--preset", "small"]
    assert main(["bench", *model, "--batch-sizes", "8", "--rounds", "3", "--quiet", *argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xpnet bench: ") and "Traceback" not in captured.err
    assert captured.out == ""


def test_out_that_is_a_file_is_refused_and_left_alone(no_timing, tmp_path):
    out = tmp_path / "results"
    out.write_bytes(b"my notes")
    with pytest.raises(ValueError, match="is an existing file, not a folder"):
        bench.run(preset="small", batch_sizes=[8], rounds=3, out=out, progress=False)
    assert out.read_bytes() == b"my notes"


def test_out_under_a_file_cannot_be_created(no_timing, tmp_path):
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(ValueError, match="cannot be written"):
        bench.run(preset="small", batch_sizes=[8], rounds=3, out=tmp_path / "file" / "sub", progress=False)
    assert (tmp_path / "file").read_bytes() == b"x"


@pytest.mark.parametrize("name", ["results.json", "results.csv", "throughput.png"])
def test_earlier_results_are_not_overwritten_without_the_flag(no_timing, tmp_path, capsys, name):
    (tmp_path / name).write_bytes(b"saved earlier")
    (tmp_path / "mine.txt").write_bytes(b"user file")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["bench", *SMALL, "--out", str(tmp_path)]) == 2
    assert f"already holds {name}" in capsys.readouterr().err
    assert (tmp_path / name).read_bytes() == b"saved earlier" and (tmp_path / "mine.txt").read_bytes() == b"user file"
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no probe file left behind
    assert bench.check_out(tmp_path, overwrite=True) == tmp_path  # the flag lets it through
    assert (tmp_path / "mine.txt").read_bytes() == b"user file"


# -- the baseline ----------------------------------------------------------------------------------
@pytest.mark.parametrize("content, message", [
    ("{not json", "is not valid JSON"),
    ('{"rows": []}', "is not an xpnet bench results file"),
    ('{"records": [{"device": "cpu"}]}', "is not an xpnet bench results file"),
    ('[1, 2]', "is not an xpnet bench results file"),
    ('{"records": [{"device": "cpu", "sizes": [4, 2], "batch_size": 8}]}', "holds no ratio"),
])
def test_malformed_baselines_are_refused(no_timing, tmp_path, content, message):
    path = tmp_path / "base.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=f"--check-against .*{message}"):
        bench.run(preset="small", batch_sizes=[8], rounds=3, check_against=path, progress=False)


def test_a_baseline_that_matches_no_point_is_refused_listing_what_it_holds(no_timing):
    with pytest.raises(ValueError, match=r"matches no point.*holds: cpu \[784, 1024, 1024, 10\] batch 64"):
        bench.run(preset="small", batch_sizes=[8], rounds=3, check_against=BASELINE, progress=False)


def test_the_committed_baseline_is_accepted_for_the_ci_sweep():
    plan = bench.check_arguments(device="cpu", preset="mnist", batch_sizes=[64, 256], rounds=5,
                                 check_against=BASELINE, tolerance=0.35)
    assert plan.sizes == bench.PRESETS["mnist"] and plan.baseline["records"]


# -- calibration and statistics ---------------------------------------------------------------------
@pytest.mark.parametrize("step_s, min_time", [(0.003, 0.01), (1e-6, 0.2), (0.05, 0.2), (0.5, 0.2)])
def test_calibrated_rounds_last_at_least_min_time(step_s, min_time):
    calls = []

    def timer(fn, steps):  # a step of known duration: no real timing
        calls.append(steps)
        return step_s

    steps = bench.calibrate_steps(timer, None, min_time)
    assert steps * step_s >= min_time and (steps == 1 or (steps - 1) * step_s < 1.1 * min_time)
    assert sum(calls) * step_s < 1.5 * (min_time + step_s)  # the probes cost less than two rounds


def test_calibration_keeps_the_faster_of_two_final_probes():
    durations = iter([0.1, 0.01])  # the first probe was disturbed (10x slow)
    assert bench.calibrate_steps(lambda fn, steps: next(durations), None, 0.2) == math.ceil(1.05 * 0.2 / 0.01)


def test_calibration_is_capped():
    assert bench.calibrate_steps(lambda fn, steps: 1e-12, None, 0.2) == bench.MAX_STEPS_PER_ROUND


class FakeClock:
    """perf_counter for the harness; fake steps advance it by their duration."""
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def step(self, seconds):
        def fn():
            self.now += seconds
        return fn


def test_measure_calibrates_each_implementation_to_min_time(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(harness, "time", SimpleNamespace(perf_counter=clock))
    monkeypatch.setattr(harness, "floor_step", lambda *a: clock.step(0.001))
    monkeypatch.setattr(harness, "xpnet_step", lambda *a: (clock.step(0.003), None))
    rec = bench.measure(bench.Point("cpu", [4, 8, 2], 4), impls=("xpnet", "reference"), rounds=3, min_time=0.05)
    for name in ("floor", "xpnet", "reference"):
        per_step = rec[name]["ms_per_step"] / 1e3
        assert rec["steps_per_round"][name] == rec[name]["steps_per_round"]
        assert rec[name]["steps_per_round"] * per_step >= 0.05 and rec[name]["shortest_round_s"] >= 0.05
        assert rec[name]["iqr_ms"] == pytest.approx(0, abs=1e-9) and rec[name]["noisy"] is False
    assert rec["xpnet"]["ms_per_step"] == pytest.approx(3.0) and rec["gemm_floor_ms"] == pytest.approx(1.0)
    assert rec["efficiency"] == pytest.approx(1 / 3) and rec["noisy"] == []


def test_a_round_runs_on_until_min_time_when_calibration_was_fooled(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(harness, "time", SimpleNamespace(perf_counter=clock))
    # a probe disturbed by another process: 10x too slow, so too few steps were calibrated
    per_step, ran, seconds = bench.Timer("cpu").round(clock.step(0.001), 5, min_time=0.05)
    assert ran in (50, 51) and seconds >= 0.05 and per_step == pytest.approx(0.001)  # 51: float rounding


def test_fixed_steps_are_used_as_given(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(harness, "time", SimpleNamespace(perf_counter=clock))
    monkeypatch.setattr(harness, "floor_step", lambda *a: clock.step(0.001))
    monkeypatch.setattr(harness, "xpnet_step", lambda *a: (clock.step(0.002), None))
    rec = bench.measure(bench.Point("cpu", [4, 8, 2], 4), impls=("xpnet",), rounds=3, steps=1)
    assert rec["steps_per_round"] == {"floor": 1, "xpnet": 1} and rec["samples_per_s"] == pytest.approx(2000)


def test_spread_quartiles_and_noisy_flag():
    quiet = bench.spread([0.95, 1.0, 1.05])
    assert quiet["median"] == 1.0 and quiet["iqr"] == pytest.approx(0.05)
    assert quiet["relative_iqr"] == pytest.approx(0.05) and not quiet["noisy"]
    noisy = bench.spread([1.0, 1.0, 1.5, 2.0, 2.0])
    assert (noisy["q1"], noisy["median"], noisy["q3"]) == (1.0, 1.5, 2.0)
    assert noisy["relative_iqr"] == pytest.approx(2 / 3) and noisy["noisy"]
    for d, flagged in ((0.0495, False), (0.0505, True)):  # relative IQR 2d: just below / above 10 %
        edge = bench.spread([0.5, 1 - d, 1.0, 1 + d, 9.0])  # the outer rounds do not move the quartiles
        assert edge["relative_iqr"] == pytest.approx(2 * d) and edge["noisy"] is flagged


@pytest.mark.parametrize("times", [[1.0, 1.0], [1.0, 0.0, 1.0], [1.0, -1.0, 1.0], [1.0, math.inf, 1.0]])
def test_spread_refuses_times_that_would_give_nonsense(times):
    with pytest.raises(RuntimeError, match="positive, finite"):
        bench.spread(times)


# -- output ----------------------------------------------------------------------------------------
ENV = {"cpu": "test cpu", "numpy": "2", "date": "today", "blas": "unknown"}


def _synthetic_result():
    """Two points from synthetic round times; the second one's torch is noisy."""
    records = []
    for batch, torch_times in ((8, [2.0, 2.0, 2.0]), (64, [2.0, 3.0, 4.0])):
        stats = {"floor": bench.spread([0.5] * 3), "xpnet": bench.spread([0.99, 1.0, 1.01]),
                 "torch": bench.spread(torch_times)}
        counts = dict.fromkeys(stats, 10)
        records.append(harness._record(bench.Point("cpu", [4, 8, 2], batch), 3, counts, stats, 1.0, {}, None))
    return {"environment": ENV, "records": records, "skipped_batch_sizes": []}


def test_records_carry_iqr_and_noisy():
    quiet, noisy = _synthetic_result()["records"]
    assert quiet["noisy"] == [] and noisy["noisy"] == ["torch"] and noisy["torch"]["noisy"]
    assert noisy["torch"]["q1_ms"] == pytest.approx(2500) and noisy["torch"]["q3_ms"] == pytest.approx(3500)
    assert noisy["relative_iqr"] == pytest.approx(0.01) and noisy["speedup_vs_torch"] == pytest.approx(3.0)


def test_table_shows_iqr_and_marks_noisy_points():
    text = bench.table(_synthetic_result())
    head, quiet, noisy = text.splitlines()[1:4]
    assert "IQR" in head and "noisy" in head
    assert "±1.0%" in quiet and bench.NOISY_MARK not in quiet
    assert noisy.rstrip().endswith(f"{bench.NOISY_MARK} torch")
    assert f"{bench.NOISY_MARK} noisy: relative IQR above 10%" in text


def test_csv_holds_iqr_and_noisy(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "plot", lambda result, out: [])
    bench.write_results(_synthetic_result(), tmp_path)
    import csv

    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert float(rows[0]["iqr_ms"]) == pytest.approx(10.0) and float(rows[0]["relative_iqr"]) == pytest.approx(0.01)
    assert rows[0]["noisy"] == "" and rows[1]["noisy"] == "torch" and float(rows[1]["torch_iqr_ms"]) == 1000


def test_plots_have_error_bars_from_the_quartiles(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.axes import Axes

    result = _synthetic_result()
    bars = bench.error_bars(result["records"], "torch", "samples_per_s")
    # batch 64 at 2.5 / 3 / 3.5 s per step: 64/3.5 below, 64/2.5 above the median's 64/3
    assert bars[:, 1] == pytest.approx([64 / 3 - 64 / 3.5, 64 / 2.5 - 64 / 3])
    calls = []
    original = Axes.errorbar
    monkeypatch.setattr(Axes, "errorbar", lambda self, *a, **k: calls.append(k["yerr"]) or original(self, *a, **k))
    paths = bench.plot(result, tmp_path)
    assert [p.name for p in paths] == ["throughput.png", "efficiency.png"] and all(p.is_file() for p in paths)
    assert len(calls) == 4 and any(c.any() for c in calls)


# -- the regression gate ---------------------------------------------------------------------------
def test_gate_passes_within_tolerance_and_fails_beyond():
    base = _result(0.8, 1.5)
    assert bench.check_against(_result(0.7, 1.3), base, tolerance=0.2) == []
    problems = bench.check_against(_result(0.5, 1.5), base, tolerance=0.2)
    assert len(problems) == 1 and "efficiency 0.500 < baseline 0.800" in problems[0]


def test_gate_ignores_points_missing_from_the_baseline():
    other = {"records": [{**_result(0.8, 1.5)["records"][0], "batch_size": 16}]}
    assert bench.check_against(_result(0.1, 0.1), other) == []


def test_gate_that_compared_nothing_does_not_pass():
    other = {"records": [{**_result(0.8, 1.5)["records"][0], "batch_size": 16}]}
    verdict = bench.gate(_result(0.8, 1.5), other)
    assert verdict["compared"] == 0 and "nothing was compared" in verdict["problems"][0]


def test_gate_reports_noisy_points_passing_or_failing():
    verdict = bench.gate(_result(0.8, 1.5, noisy=["torch"]), _result(0.8, 1.5), 0.2)
    assert verdict["problems"] == [] and verdict["compared"] == 1
    assert "noisy in this run: torch" in verdict["noisy"][0]
    failing = bench.gate(_result(0.5, 1.5), _result(0.8, 1.5, noisy=["floor"]), 0.2)
    assert "noisy in baseline: floor" in failing["problems"][0] and len(failing["noisy"]) == 1


def test_n_params_and_presets():
    assert bench.n_params([784, 1024, 1024, 10]) == 1_863_690
    assert bench.PRESETS["wide"] == [4096] * 5


# -- end to end (real, tiny timing) ----------------------------------------------------------------
def test_cli_bench_writes_results_and_gates(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["bench", "--sizes", "8,16,4", "--batch-sizes", "8", "--impls", "xpnet,reference", "--rounds", "3",
            "--min-time", "0.01", "--quiet"]
    assert main([*args, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "step/floor" in text and "IQR" in text and "results written" in text
    result = json.loads((out / "results.json").read_text())
    rec = result["records"][0]
    assert rec["batch_size"] == 8 and set(rec["steps_per_round"]) == {"floor", "xpnet", "reference"}
    assert isinstance(rec["noisy"], list) and "relative_iqr" in rec["xpnet"] and rec["samples_per_s"] > 0
    # the first run as a baseline passes with a wide tolerance (timing is real, so not a tight one);
    # an impossible baseline fails with exit 1
    assert main([*args, "--check-against", str(out / "results.json"), "--tolerance", "0.99"]) == 0
    assert "regression gate: 1 point(s) compared, 0 problem(s)" in capsys.readouterr().out
    baseline = tmp_path / "baseline.json"
    impossible = json.loads((out / "results.json").read_text())
    impossible["records"][0]["efficiency"] = 1e9
    baseline.write_text(json.dumps(impossible))
    assert main([*args, "--out", str(out), "--overwrite", "--check-against", str(baseline)]) == 1
    assert "REGRESSION" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["gate"]["problems"]  # the verdict is saved too


def test_cli_failure_during_timing_is_one_line_not_a_traceback(monkeypatch, tmp_path, capsys):
    def broken(*args, **kwargs):
        raise TypeError("something broke\nacross lines")

    monkeypatch.setattr(harness, "measure", broken)
    assert main(["bench", *SMALL]) == 2
    err = capsys.readouterr().err
    assert err == "xpnet bench: unexpected TypeError: something broke across lines\n"
