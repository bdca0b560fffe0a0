"""`xpnet train` runs: run directories, checkpoints, exact resume after a kill, config and data errors."""

from __future__ import annotations

import json
import os
import signal
import struct
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
    assert ckpts[-2:] == ["epoch-0003", "epoch-0004"] and len(ckpts) <= 3  # last 2, plus the best
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
    (["--schedule-interval", "step", "--warmup-steps", "100000"],  # known once the data is: 30 epochs x 43 steps
     "train.warmup_steps = 100000 leaves no step after the warm-up: the run takes 1290 optimizer steps"),
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


def _kill_when(args, cut, ready):
    """Start ``xpnet train ARGS --run-dir CUT`` in a subprocess and SIGKILL it once ``ready()``."""
    proc = subprocess.Popen([sys.executable, "-m", "xpnet", "train", *args, "--run-dir", str(cut)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not ready():
            assert proc.poll() is None and time.time() < deadline, "the run ended before it could be killed"
            time.sleep(0.01)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (cut / "model.safetensors").exists()  # it really was interrupted


def _kill_then_resume_equals_uninterrupted(args, full, cut, marker="epoch-0003"):
    """Run ``args`` uninterrupted into ``full``; into ``cut`` SIGKILL it once a checkpoint named
    ``marker`` (or matching it, e.g. ``epoch-0002-step-*``) is saved, then --resume: weights and
    history must be bit-identical."""
    assert main(["train", *args, "--run-dir", str(full)]) == 0
    _kill_when(args, cut, lambda: any(p.is_dir() for p in (cut / "checkpoints").glob(marker)))
    assert main(["train", "--resume", str(cut), "--quiet"]) == 0
    a, b = load_file(full / "model.safetensors"), load_file(cut / "model.safetensors")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert json.loads((full / "history.json").read_text()) == json.loads((cut / "history.json").read_text())


def test_resume_after_a_kill_ends_with_the_same_weights(tmp_path):
    """A run SIGKILLed mid-training and resumed ends bit-identical to one never interrupted."""
    args = ["--data", "synthetic", "--hidden", "64,64", "--epochs", "8", "--batch-size", "16", "--val-fraction",
            "0.1", "--dtype", "float64", "--early-stopping", "--patience", "20", "--quiet"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    _kill_then_resume_equals_uninterrupted(args, full, cut)


def test_resume_after_a_kill_mid_epoch_ends_with_the_same_weights(tmp_path):
    """--save-every-steps: a run SIGKILLed after a mid-epoch checkpoint resumes inside that epoch
    (same permutation, the steps taken skipped, the running loss and accuracy sums carried on) and
    ends bit-identical to one never interrupted, history included."""
    from xpnet.io import checkpoint

    args = ["--data", "synthetic", "--hidden", "64,64", "--epochs", "6", "--batch-size", "16", "--val-fraction",
            "0.1", "--dtype", "float64", "--save-every-steps", "37", "--keep-last", "2", "--quiet"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["train", *args, "--run-dir", str(full)]) == 0
    assert checkpoint.latest(full / "checkpoints").name == "epoch-0006"  # the final one is always written
    _kill_when(args, cut, lambda: any(p.name.startswith("epoch-0002-step-")
                                      for p in (cut / "checkpoints").glob("epoch-*")))
    last = checkpoint.latest_intact(cut / "checkpoints")
    assert "-step-" in last.name and checkpoint.load(last).in_epoch["steps"] > 0  # resumed inside an epoch
    assert main(["train", "--resume", str(cut), "--quiet"]) == 0
    a, b = load_file(full / "model.safetensors"), load_file(cut / "model.safetensors")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert json.loads((full / "history.json").read_text()) == json.loads((cut / "history.json").read_text())


def test_a_run_with_old_zero_based_checkpoint_names_resumes_and_extends(tmp_path):
    """Checkpoints named by the old 0-based numbering (epoch-0002 = after 3 epochs) resume from the
    epoch in their metadata; the new ones sort after them and prune keeps the newest 2 + the best."""
    from xpnet.io import checkpoint

    args = [*FAST, "--epochs", "3", "--dtype", "float64", "--keep-last", "2"]
    new, old = tmp_path / "new", tmp_path / "old"
    for run in (new, old):
        assert main(["train", *args, "--run-dir", str(run)]) == 0
    root = old / "checkpoints"
    for path in checkpoint.list_checkpoints(root):  # as the earlier numbering named them
        path.rename(root / f"epoch-{int(path.name[6:]) - 1:04d}")
    best = json.loads((root / "best.json").read_text())
    best["checkpoint"] = f"epoch-{int(best['checkpoint'][6:]) - 1:04d}"
    (root / "best.json").write_text(json.dumps(best))
    assert checkpoint.load(checkpoint.latest_intact(root)).epoch == 2  # epoch-0002: after 3 epochs
    for run in (new, old):
        assert main(["train", "--resume", str(run), "--epochs", "5"]) == 0
    names = [p.name for p in checkpoint.list_checkpoints(root)]
    assert names[-2:] == ["epoch-0004", "epoch-0005"] and len(names) <= 3
    assert json.loads((root / "best.json").read_text())["checkpoint"] in names
    a, b = load_file(new / "model.safetensors"), load_file(old / "model.safetensors")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert json.loads((new / "history.json").read_text()) == json.loads((old / "history.json").read_text())


def test_save_every_steps_alone_saves_steps_and_epoch_ends_only_where_due(tmp_path):
    """--save-every-steps 1 without --save-every: every step inside an epoch is a mid-epoch
    checkpoint named epoch-NNNN-step-SSSSSS; a step that ends an epoch is saved as that epoch's
    checkpoint (with its metrics), and the final one is always written."""
    from xpnet.io import checkpoint

    run = tmp_path / "run"
    assert main(["train", *FAST, "--epochs", "2", "--hidden", "8", "--save-every-steps", "1", "--keep-last", "1000",
                 "--run-dir", str(run)]) == 0
    names = [p.name for p in checkpoint.list_checkpoints(run / "checkpoints")]
    steps = checkpoint.load(run / "checkpoints" / "epoch-0001").trainer_meta["step_count"]
    assert [n for n in names if "-step-" not in n] == ["epoch-0001", "epoch-0002"]
    assert names == [*(f"epoch-0000-step-{s:06d}" for s in range(1, steps)), "epoch-0001",
                     *(f"epoch-0001-step-{s:06d}" for s in range(steps + 1, 2 * steps)), "epoch-0002"]
    assert json.loads((run / "checkpoints" / "best.json").read_text())["checkpoint"] in ("epoch-0001", "epoch-0002")


def test_save_every_steps_is_validated(tmp_path, capsys):
    assert main(["train", *FAST, "--save-every-steps", "0", "--run-dir", str(tmp_path / "run")]) == 2
    assert "run.save_every_steps = 0 is invalid: use an integer >= 1" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


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
    _kill_then_resume_equals_uninterrupted(args, full, cut)


# -- schedules and logging selected by the config ------------------------------------------------
SCHEDULED = ["--data", "synthetic", "--hidden", "16", "--epochs", "4", "--batch-size", "64", "--val-fraction", "0.1",
             "--quiet"]


def _steps_per_epoch(run, epochs):
    from xpnet.io import checkpoint

    return checkpoint.load(checkpoint.latest(run / "checkpoints")).trainer_meta["step_count"] // epochs


def _drive(scheduler, epochs, steps, monitored=None, first_epoch=0):
    """The lr fit logs at each epoch end (per epoch: the lr the epoch used; per step: the lr after
    its last step), with ``scheduler`` stepped directly, as fit steps it."""
    lrs = []
    for epoch in range(first_epoch, epochs):
        if scheduler.interval == "step":
            for _ in range(steps):
                scheduler.step()
        lrs.append(scheduler.optimizer.lr)
        if scheduler.interval == "epoch":
            scheduler.step(*([] if monitored is None else [monitored[epoch]]))
    return lrs


def _plateau(opt, steps, *, mode="min", factor):
    return xpnet.optim.ReduceLROnPlateau(opt, mode=mode, factor=factor, patience=0)


def _cosine_per_step(opt, steps):
    total = 4 * steps
    return xpnet.optim.SequentialLR(opt, [xpnet.optim.LinearLR(opt, 0.1, total_iters=10, interval="step"),
                                          xpnet.optim.CosineAnnealingLR(opt, total - 10, interval="step")], [10],
                                    interval="step")


@pytest.mark.parametrize("args,monitor,expected", [
    (["--schedule", "plateau", "--plateau-patience", "0", "--plateau-factor", "0.5", "--lr", "0.2"], "val_loss",
     lambda opt, steps: _plateau(opt, steps, factor=0.5)),
    (["--schedule", "plateau", "--plateau-patience", "0", "--lr", "0.05", "--monitor", "val_accuracy"],
     "val_accuracy", lambda opt, steps: _plateau(opt, steps, mode="max", factor=0.1)),
    (["--schedule", "onecycle", "--lr", "0.01"], None,
     lambda opt, steps: xpnet.optim.OneCycleLR(opt, max_lr=0.01, total_steps=4 * steps)),
    (["--schedule", "cosine", "--schedule-interval", "step", "--warmup-steps", "10"], None, _cosine_per_step),
    (["--schedule", "constant", "--schedule-interval", "step", "--warmup-epochs", "2"], None,
     lambda opt, steps: xpnet.optim.LinearLR(opt, 0.1, total_iters=2 * steps, interval="step")),
], ids=["plateau", "plateau-max", "onecycle", "cosine-per-step", "warmup-epochs-per-step"])
def test_each_schedule_sets_the_lr_as_the_library_scheduler(tmp_path, args, monitor, expected):
    """The history's lr column equals the library scheduler stepped directly (per epoch, or after
    every optimizer step), and the optimizer's last hyperparameters (onecycle cycles AdamW's beta1)
    agree too."""
    from xpnet.io import checkpoint

    run = tmp_path / "run"
    assert main(["train", *SCHEDULED, *args, "--run-dir", str(run)]) == 0
    history = json.loads((run / "history.json").read_text())
    lr = float(args[args.index("--lr") + 1]) if "--lr" in args else 1e-3
    opt = xpnet.optim.AdamW(lr=lr)
    steps = _steps_per_epoch(run, 4)
    scheduler = expected(opt, steps)
    assert history["lr"] == pytest.approx(_drive(scheduler, 4, steps, history.get(monitor)), rel=1e-12)
    assert len(set(history["lr"])) > 1  # the schedule did change the lr
    saved = checkpoint.load(checkpoint.latest(run / "checkpoints")).trainer_meta
    assert saved["optimizer"]["hparams"] == pytest.approx(opt.hparams, rel=1e-12)
    assert saved["scheduler"] == pytest.approx(scheduler.state_dict(), rel=1e-12)


@pytest.mark.parametrize("schedule", [
    ["--schedule", "onecycle"],
    ["--schedule", "cosine", "--schedule-interval", "step", "--warmup-steps", "30"],
    ["--schedule", "plateau", "--plateau-patience", "0", "--plateau-factor", "0.5", "--lr", "0.2"],
], ids=["onecycle", "cosine-per-step", "plateau"])
def test_resume_after_a_kill_mid_epoch_with_a_schedule_is_exact(tmp_path, schedule):
    """The scheduler's state (OneCycleLR's and the per-step cosine's step, ReduceLROnPlateau's best
    and counters) goes into every checkpoint, mid-epoch ones included: killed and resumed, the run
    ends bit-identical to one never interrupted, lr column included."""
    args = ["--data", "synthetic", "--hidden", "64,64", "--epochs", "6", "--batch-size", "16", "--val-fraction",
            "0.1", "--dtype", "float64", "--save-every-steps", "37", "--keep-last", "2", "--quiet", *schedule]
    _kill_then_resume_equals_uninterrupted(args, tmp_path / "full", tmp_path / "cut", marker="epoch-0002-step-*")


def test_extending_a_onecycle_run_rebuilds_its_cycle_for_the_new_total(tmp_path, capsys):
    """--resume RUN --epochs N on a finished onecycle run: as for cosine, the schedule is the one a
    run of N epochs has (total_steps = N x steps per epoch), continued at the step reached; the lr
    it jumps to is printed."""
    run = tmp_path / "run"
    assert main(["train", *SCHEDULED, "--epochs", "3", "--schedule", "onecycle", "--run-dir", str(run)]) == 0
    steps = _steps_per_epoch(run, 3)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "5"]) == 0
    assert "learning-rate schedule rebuilt for 5 epochs: the lr continues at" in capsys.readouterr().out
    lrs = json.loads((run / "history.json").read_text())["lr"]
    first = _drive(xpnet.optim.OneCycleLR(xpnet.optim.AdamW(lr=1e-3), max_lr=1e-3, total_steps=3 * steps), 3, steps)
    longer = xpnet.optim.OneCycleLR(xpnet.optim.AdamW(lr=1e-3), max_lr=1e-3, total_steps=5 * steps)
    longer.last_epoch = 3 * steps  # where the run stood
    assert lrs == pytest.approx(first + _drive(longer, 5, steps, first_epoch=3), rel=1e-12)
    assert json.loads((run / "extensions.json").read_text())[-1]["to_epochs"] == 5
    assert "epochs = 5" in (run / "config.toml").read_text()


def _tensorboard_scalars(folder):
    """{tag: [(step, value), ...]} from every TensorBoard event file in ``folder`` (TFRecord framing:
    length, its CRC, the Event, the Event's CRC)."""
    from tensorboardX.proto import event_pb2

    found = {}
    for file in sorted(folder.glob("events.out.tfevents.*")):
        data, i = file.read_bytes(), 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            for value in event.summary.value:
                found.setdefault(value.tag, []).append((event.step, value.simple_value))
    return found


def test_tensorboard_logs_every_epoch_and_continues_on_resume(tmp_path, capsys):
    """run.tensorboard (--tensorboard): every epoch log as a TensorBoard scalar in RUN_DIR/tensorboard;
    --resume adds the new epochs (a second event file).  history.csv already is the per-epoch CSV log."""
    pytest.importorskip("tensorboardX")
    run = tmp_path / "run"
    assert main(["train", *FAST, "--epochs", "2", "--tensorboard", "--run-dir", str(run)]) == 0
    assert f"TensorBoard logs in {run}/tensorboard" in capsys.readouterr().out
    assert "tensorboard = true" in (run / "config.toml").read_text()
    history = json.loads((run / "history.json").read_text())
    scalars = _tensorboard_scalars(run / "tensorboard")
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "lr"} <= set(scalars)
    assert scalars["val_loss"] == [(i, pytest.approx(v, rel=1e-6)) for i, v in enumerate(history["val_loss"])]
    assert len((run / "history.csv").read_text().splitlines()) == 3  # header + one row per epoch
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 0
    assert [step for step, _ in _tensorboard_scalars(run / "tensorboard")["loss"]] == [0, 1, 2]
