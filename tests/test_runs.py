"""`xpnet train` runs: run directories, checkpoints, exact resume after a kill, config and data errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

import xpnet
from xpnet.cli import main

FAST = ["--data", "synthetic", "--hidden", "32,32", "--epochs", "4", "--batch-size", "32", "--val-fraction", "0.1",
        "--quiet"]


def test_a_run_writes_its_directory(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *FAST, "--run-dir", str(run), "--keep-last", "2"]) == 0
    names = {p.name for p in run.iterdir()}
    assert {"config.toml", "history.csv", "history.json", "checkpoints", "model.safetensors", "result.json"} <= names
    pytest.importorskip("matplotlib")
    assert (run / "curves.png").is_file()
    history = json.loads((run / "history.json").read_text())
    assert history["epoch"] == [1, 2, 3, 4] and len(history["val_loss"]) == 4
    assert (run / "history.csv").read_text().splitlines()[0].startswith("epoch,loss,accuracy,val_loss")
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir() if p.is_dir())
    best = json.loads((run / "checkpoints" / "best.json").read_text())
    assert best["monitor"] == "val_loss" and best["checkpoint"] in ckpts
    assert ckpts[-2:] == ["epoch-0002", "epoch-0003"] and len(ckpts) <= 3  # last 2, plus the best
    result = json.loads((run / "result.json").read_text())
    assert result["test"]["accuracy"] > 0.9
    assert "test accuracy" in capsys.readouterr().out


def test_an_existing_run_directory_is_not_overwritten(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *FAST, "--run-dir", str(run)]) == 0
    before = (run / "model.safetensors").read_bytes()
    assert main(["train", *FAST, "--run-dir", str(run)]) == 2
    assert "already holds files; nothing was changed" in capsys.readouterr().err
    assert (run / "model.safetensors").read_bytes() == before
    assert main(["train", *FAST, "--run-dir", str(run), "--overwrite", "--epochs", "2"]) == 0
    assert json.loads((run / "history.json").read_text())["epoch"] == [1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no staging or parked copies left


def test_config_file_and_flags(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nsource = "synthetic"\nn_classes = 3\n[train]\nepochs = 9\noptimizer = "sgd"\n'
                   'momentum = 0.9\nlr = 0.05\n[model]\nhidden = [16]\n')
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--epochs", "2", "--run-dir", str(run), "--quiet"]) == 0
    saved = (run / "config.toml").read_text()
    assert "epochs = 2" in saved and 'optimizer = "sgd"' in saved and "momentum = 0.9" in saved


def test_dropout_flag_and_config(tmp_path):
    run = tmp_path / "run"
    assert main(["train", *FAST, "--dropout", "0.2", "--run-dir", str(run)]) == 0
    assert "dropout = 0.2" in (run / "config.toml").read_text()
    assert xpnet.io.checkpoint.load_model(run).dropout == (0.2, 0.2)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nsource = "synthetic"\n[train]\nepochs = 1\n[model]\nhidden = [16, 8]\n'
                   'dropout = [0.1, 0.3]\n')
    assert main(["train", "--config", str(cfg), "--run-dir", str(tmp_path / "r2"), "--quiet"]) == 0
    assert xpnet.io.checkpoint.load_model(tmp_path / "r2").dropout == (0.1, 0.3)


@pytest.mark.parametrize("args,message", [
    (["--optimizer", "lbfgs"], "train.optimizer = 'lbfgs' is invalid: use one of"),
    (["--data", "csv", "--data-path", "x.csv"], "data.source = 'csv' needs data.target"),
    (["--resume", "nowhere"], "give no --config or other flags"),
])
def test_bad_runs_fail_before_touching_anything(tmp_path, capsys, args, message):
    run = tmp_path / "run"
    assert main(["train", *args, "--run-dir", str(run), "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert not run.exists()


def test_data_file_errors_name_file_and_column(tmp_path, capsys):
    csv = tmp_path / "d.csv"
    csv.write_text("a,b,y\n1,2,0\n3,,1\n")
    run = tmp_path / "run"
    assert main(["train", "--data", "csv", "--data-path", str(csv), "--target", "y", "--run-dir", str(run)]) == 2
    assert "d.csv: column 'b' has missing values" in capsys.readouterr().err
    assert not run.exists()


def test_resume_after_a_kill_ends_with_the_same_weights(tmp_path):
    """A run SIGKILLed mid-training and resumed ends bit-identical to one never interrupted."""
    args = ["--data", "synthetic", "--hidden", "64,64", "--epochs", "8", "--batch-size", "16", "--val-fraction",
            "0.1", "--dtype", "float64", "--early-stopping", "--patience", "20", "--quiet"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["train", *args, "--run-dir", str(full)]) == 0
    proc = subprocess.Popen([sys.executable, "-m", "xpnet", "train", *args, "--run-dir", str(cut)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (cut / "checkpoints" / "epoch-0002").is_dir():
            assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
            time.sleep(0.01)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (cut / "model.safetensors").exists()  # it really was interrupted
    assert main(["train", "--resume", str(cut), "--quiet"]) == 0
    a, b = load_file(full / "model.safetensors"), load_file(cut / "model.safetensors")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert json.loads((full / "history.json").read_text()) == json.loads((cut / "history.json").read_text())


def test_resume_refuses_extra_flags(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *FAST, "--run-dir", str(run)]) == 0
    assert main(["train", "--resume", str(run), "--lr", "0.5"]) == 2
    assert "give no --config or other flags" in capsys.readouterr().err


def test_export_a_run_to_torch(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from xpnet.io.checkpoint import load_model
    from xpnet.io.export import to_torch

    run = tmp_path / "run"
    assert main(["train", *FAST, "--run-dir", str(run), "--activation", "tanh"]) == 0
    out = tmp_path / "model.pt"
    assert main(["export", str(run), "--out", str(out)]) == 0
    state = torch.load(out)
    seq = to_torch(load_model(run))
    seq.load_state_dict(state)
    x = torch.randn(5, seq[0].in_features, dtype=seq[0].weight.dtype)
    # the export takes raw features: the run's standardisation is folded into its first layer
    np.testing.assert_allclose(seq(x).detach().numpy(), xpnet.load(run).decision_function(x.numpy()),
                               rtol=1e-5, atol=1e-5)
    assert main(["export", str(run), "--out", str(out)]) == 2  # never overwrites
    assert "exists; nothing was written" in capsys.readouterr().err


def test_fp16_run_checkpoints_its_loss_scaler(tmp_path):
    from xpnet.io import checkpoint

    run = tmp_path / "run"
    assert main(["train", *FAST, "--precision", "fp16", "--run-dir", str(run)]) == 0
    ckpt = checkpoint.load(checkpoint.latest(run / "checkpoints"))
    assert ckpt.trainer_meta["precision"] == "fp16" and ckpt.trainer_meta["scaler"]["scale"] > 0
    assert json.loads((run / "result.json").read_text())["test"]["accuracy"] > 0.9


def test_bf16_run_records_its_precision_and_resumes_from_its_checkpoint(tmp_path):
    pytest.importorskip("ml_dtypes")
    from xpnet.io import checkpoint

    run = tmp_path / "run"
    assert main(["train", *FAST, "--precision", "bf16", "--run-dir", str(run)]) == 0
    assert "precision = \"bf16\"" in (run / "config.toml").read_text()
    ckpt = checkpoint.load(checkpoint.latest(run / "checkpoints"))
    assert ckpt.trainer_meta["precision"] == "bf16" and ckpt.trainer_meta["scaler"] is None
    assert json.loads((run / "result.json").read_text())["test"]["accuracy"] > 0.9


def test_bf16_resume_after_a_kill_ends_with_the_same_weights(tmp_path):
    """bf16 (bfloat16 compute, float32 master weights and Adam state in the checkpoint): a run
    SIGKILLed mid-training and resumed ends bit-identical to one never interrupted."""
    pytest.importorskip("ml_dtypes")
    args = ["--data", "synthetic", "--hidden", "64,64", "--epochs", "8", "--batch-size", "16", "--val-fraction",
            "0.1", "--precision", "bf16", "--quiet"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["train", *args, "--run-dir", str(full)]) == 0
    proc = subprocess.Popen([sys.executable, "-m", "xpnet", "train", *args, "--run-dir", str(cut)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (cut / "checkpoints" / "epoch-0002").is_dir():
            assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
            time.sleep(0.01)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (cut / "model.safetensors").exists()  # it really was interrupted
    assert main(["train", "--resume", str(cut), "--quiet"]) == 0
    a, b = load_file(full / "model.safetensors"), load_file(cut / "model.safetensors")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert json.loads((full / "history.json").read_text()) == json.loads((cut / "history.json").read_text())
