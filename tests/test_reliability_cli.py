"""Reliability of `xpnet train` as an adversarial user meets it: overwrite, failed starts,
locking, signals, divergence, full disks and bad inputs each end in one clear line, with
nothing of the user's lost (docs/reliability.md lists these guarantees)."""

from __future__ import annotations

import errno
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
from xpnet.cli import main, runs
from xpnet.cli.rundir import RunDir
from xpnet.io import checkpoint

FAST = ["--data", "synthetic", "--hidden", "16", "--epochs", "3", "--batch-size", "64", "--quiet"]


def _snapshot(folder):
    """Every file under ``folder`` with its bytes (to prove nothing changed)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def old_run(tmp_path):
    run = tmp_path / "run"
    assert main(["train", *FAST, "--run-dir", str(run)]) == 0
    return run


# -- --overwrite ---------------------------------------------------------------------------
@pytest.mark.parametrize("entry", ["notes.txt", "data.csv", "src"])
def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path, capsys, entry):
    """The current directory, a data folder, a project: --overwrite never empties them."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.toml").write_text("[data]\n")  # even with a file named like a run's
    (folder / entry).mkdir() if entry == "src" else (folder / entry).write_text("precious")
    before = _snapshot(folder)
    assert main(["train", *FAST, "--run-dir", str(folder), "--overwrite"]) == 2
    assert "is not an xpnet run directory" in _one_line(capsys.readouterr().err)
    assert _snapshot(folder) == before


def test_overwrite_refuses_the_current_directory(tmp_path, capsys, monkeypatch):
    (tmp_path / "train.py").write_text("print('my code')")
    monkeypatch.chdir(tmp_path)
    assert main(["train", *FAST, "--run-dir", ".", "--overwrite"]) == 2
    assert "is not an xpnet run directory" in capsys.readouterr().err
    assert (tmp_path / "train.py").read_text() == "print('my code')"


def test_overwrite_checks_the_new_data_before_touching_the_old_run(old_run, capsys):
    before = _snapshot(old_run)
    args = ["train", "--data", "csv", "--data-path", str(old_run.parent / "missing.csv"), "--target", "y",
            "--run-dir", str(old_run), "--overwrite", "--quiet"]
    assert main(args) == 2
    assert "missing.csv" in _one_line(capsys.readouterr().err)
    assert _snapshot(old_run) == before


def test_overwrite_keeps_the_old_run_until_the_new_one_has_a_checkpoint(old_run, capsys, monkeypatch):
    """A replacing run that fails before its first checkpoint leaves the old run as it was."""
    before = _snapshot(old_run)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "checkpoints")

    monkeypatch.setattr(runs.checkpoint, "save", full_disk)
    assert main(["train", *FAST, "--run-dir", str(old_run), "--overwrite", "--seed", "7"]) == 1
    assert "no space left" in _one_line(capsys.readouterr().err)
    assert _snapshot(old_run) == before
    assert [p.name for p in old_run.parent.iterdir()] == ["run"]  # the staging copy is gone


def test_overwrite_swaps_in_the_new_run_atomically(old_run):
    assert main(["train", *FAST, "--run-dir", str(old_run), "--overwrite", "--epochs", "2", "--seed", "3"]) == 0
    assert "seed = 3" in (old_run / "config.toml").read_text()
    assert json.loads((old_run / "history.json").read_text())["epoch"] == [1, 2]
    assert [p.name for p in old_run.parent.iterdir()] == ["run"]


# -- failed starts and reuse ------------------------------------------------------------------
def test_a_failed_start_leaves_nothing_and_the_retry_works(tmp_path, capsys, monkeypatch):
    run = tmp_path / "new" / "run"

    def broken_fit(self, *args, **kwargs):
        raise TypeError("simulated failure inside fit")

    with monkeypatch.context() as patch:
        patch.setattr(xpnet.Trainer, "fit", broken_fit)
        assert main(["train", *FAST, "--run-dir", str(run)]) == 2
    assert "simulated failure" in capsys.readouterr().err
    assert not run.exists()
    assert main(["train", *FAST, "--run-dir", str(run)]) == 0


def test_a_run_killed_before_its_first_epoch_is_reused(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".xpnet-run").write_text('{"xpnet_run": 1}\n')  # what a start killed early leaves
    (run / "config.toml").write_text("[data]\nsource = \"synthetic\"\n")
    (run / "checkpoints").mkdir()
    assert main(["train", *FAST, "--run-dir", str(run)]) == 0
    assert "never completed an epoch; it is reused" in capsys.readouterr().out
    assert (run / "model.safetensors").is_file()


def test_a_failed_start_in_an_existing_empty_folder_keeps_the_folder(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setattr(xpnet.Trainer, "fit", lambda *a, **k: (_ for _ in ()).throw(ValueError("boom")))
    assert main(["train", *FAST, "--run-dir", str(run)]) == 2
    assert run.is_dir() and list(run.iterdir()) == []


def test_a_folder_with_the_users_own_config_is_not_reused(tmp_path, capsys):
    """A hand-written config.toml (no owner mark) is the user's file, not a dead run: refused."""
    folder = tmp_path / "exp"
    folder.mkdir()
    (folder / "config.toml").write_text("# my notes\n[train]\nepochs = 1\n")
    before = _snapshot(folder)
    assert main(["train", *FAST, "--config", str(folder / "config.toml"), "--run-dir", str(folder)]) == 2
    assert "already holds files; nothing was changed" in capsys.readouterr().err
    assert main(["train", *FAST, "--run-dir", str(folder), "--overwrite"]) == 2
    assert "is not an xpnet run directory" in capsys.readouterr().err
    assert _snapshot(folder) == before


@pytest.mark.parametrize("where", ["checkpoints/notes.txt", "checkpoints/epoch-0001/mine.txt",
                                   "checkpoints/newrun/config.toml", "checkpoints/epoch-0002/extra/x.txt",
                                   "tensorboard/notes.txt"])
def test_overwrite_refuses_user_files_deep_inside_a_run(old_run, capsys, where):
    (old_run / where).parent.mkdir(parents=True, exist_ok=True)
    (old_run / where).write_text("keep")
    before = _snapshot(old_run)
    assert main(["train", *FAST, "--run-dir", str(old_run), "--overwrite"]) == 2
    shown = "checkpoints/newrun" if "newrun" in where else where.removesuffix("/x.txt")
    assert f"is not an xpnet run directory (it holds {shown}" in capsys.readouterr().err
    assert _snapshot(old_run) == before


def test_tensorboard_without_tensorboardx_is_refused_before_anything_is_made(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # as if it were not installed
    run = tmp_path / "run"
    assert main(["train", *FAST, "--tensorboard", "--run-dir", str(run)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "run.tensorboard = true needs tensorboardX: pip install 'xpnet[tensorboard]'" in line
    assert not run.exists()


def test_a_run_with_tensorboard_logs_is_replaced_and_its_logs_move_with_it(tmp_path):
    """TensorBoard files are a run's own (--overwrite replaces such a run), and a replacing run's
    logs, written in its staging directory, are in the run directory once it is swapped in."""
    pytest.importorskip("tensorboardX")
    run = tmp_path / "run"
    assert main(["train", *FAST, "--tensorboard", "--run-dir", str(run)]) == 0
    old = sorted((run / "tensorboard").iterdir())
    assert main(["train", *FAST, "--epochs", "2", "--tensorboard", "--run-dir", str(run), "--overwrite"]) == 0
    new = sorted((run / "tensorboard").iterdir())
    assert len(new) == 1 and new != old and new[0].stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_run_inside_another_run_is_refused(old_run, capsys):
    inner = old_run / "checkpoints" / "newrun"
    assert main(["train", *FAST, "--run-dir", str(inner)]) == 2
    assert f"lies inside the run directory {old_run}" in capsys.readouterr().err
    assert not inner.exists()


def test_overwrite_through_a_symlink_is_refused(old_run, capsys):
    link = old_run.parent / "link"
    link.symlink_to(old_run)
    before = _snapshot(old_run)
    assert main(["train", *FAST, "--run-dir", str(link), "--overwrite"]) == 2
    assert "is a symbolic link" in capsys.readouterr().err
    assert link.is_symlink() and _snapshot(old_run) == before


def test_hidden_copies_left_by_killed_processes_are_removed(old_run):
    stale = old_run.parent / f".{old_run.name}.xpnet-new-999999"
    stale.mkdir()
    (stale / "config.toml").write_text("")
    assert main(["train", *FAST, "--run-dir", str(old_run), "--overwrite"]) == 0
    assert sorted(p.name for p in old_run.parent.iterdir()) == ["run"]


# -- locking ----------------------------------------------------------------------------------
def test_a_run_directory_in_use_is_refused(old_run, capsys):
    holder = RunDir.resume(old_run)  # as a concurrent `xpnet train --resume` holds it
    try:
        before = _snapshot(old_run)
        assert main(["train", "--resume", str(old_run), "--quiet"]) == 2
        assert "in use by another xpnet process" in _one_line(capsys.readouterr().err)
        assert main(["train", *FAST, "--run-dir", str(old_run), "--overwrite"]) == 2
        assert "in use by another xpnet process" in capsys.readouterr().err
        assert _snapshot(old_run) == before
    finally:
        holder.close()
    assert main(["train", "--resume", str(old_run), "--quiet"]) == 0


def test_two_processes_resuming_one_run(tmp_path):
    """Two real `--resume` processes on the same run: exactly one trains, the other is refused."""
    run = tmp_path / "run"
    args = [*FAST, "--epochs", "1", "--run-dir", str(run)]
    assert main(["train", *args]) == 0
    (run / "config.toml").write_text((run / "config.toml").read_text().replace("epochs = 1", "epochs = 100"))
    cmd = [sys.executable, "-m", "xpnet", "train", "--resume", str(run), "--quiet", "--accept-config-changes"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    assert any("in use by another xpnet process" in err for _, err in outs)


# -- signals ----------------------------------------------------------------------------------
def test_ctrl_c_stops_at_a_step_and_the_resume_matches_an_uninterrupted_run(tmp_path):
    args = ["--data", "synthetic", "--hidden", "64,64", "--epochs", "8", "--batch-size", "16", "--dtype",
            "float64", "--quiet"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["train", *args, "--run-dir", str(full)]) == 0
    proc = subprocess.Popen([sys.executable, "-m", "xpnet", "train", *args, "--run-dir", str(cut)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (cut / "checkpoints" / "epoch-0001").is_dir():
        assert proc.poll() is None and time.time() < deadline, "the run ended before it could be interrupted"
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    line = _one_line(err)
    assert "interrupted by SIGINT" in line and f"xpnet train --resume {cut}" in line
    assert not (cut / "model.safetensors").exists()
    leftovers = [p.name for p in (cut / "checkpoints").iterdir() if p.name.startswith(".")]
    assert leftovers == []
    checkpoint.load(checkpoint.latest(cut / "checkpoints"))  # intact
    assert main(["train", "--resume", str(cut), "--quiet"]) == 0
    a, b = load_file(full / "model.safetensors"), load_file(cut / "model.safetensors")
    assert all(np.array_equal(a[k], b[k]) for k in a)


def _signal_at_step(monkeypatch, sig, step):
    """Send ``sig`` to this process right after optimizer step ``step``: the real handler, at a real step."""
    update = xpnet.Trainer.update

    def update_then_signal(self):
        applied = update(self)
        if self.step_count == step:
            os.kill(os.getpid(), sig)
        return applied

    monkeypatch.setattr(xpnet.Trainer, "update", update_then_signal)


def test_ctrl_c_before_the_first_checkpoint_leaves_nothing(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    _signal_at_step(monkeypatch, signal.SIGINT, 2)
    assert main(["train", *FAST, "--run-dir", str(run)]) == 130
    line = _one_line(capsys.readouterr().err)
    assert "interrupted by SIGINT: stopped after step 2" in line and "nothing was kept" in line
    assert not run.exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def test_sigterm_is_handled_like_ctrl_c(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    _signal_at_step(monkeypatch, signal.SIGTERM, 5)
    assert main(["train", *FAST, "--epochs", "20", "--batch-size", "8", "--run-dir", str(run)]) == 130
    assert "interrupted by SIGTERM" in capsys.readouterr().err


# -- divergence ---------------------------------------------------------------------------------
@pytest.mark.parametrize("lr", ["1e4", "1e30"])
def test_a_diverged_run_says_so_in_its_exit_code_and_result(tmp_path, capsys, lr):
    run = tmp_path / "run"
    assert main(["train", *FAST, "--optimizer", "sgd", "--lr", lr, "--run-dir", str(run)]) == 3
    err = capsys.readouterr().err
    assert "training diverged: the loss became" in err and "the run diverged" in err and "Traceback" not in err
    result = json.loads((run / "result.json").read_text())  # valid JSON: no NaN
    assert result["status"] == "diverged" and np.isfinite(result["test"]["loss"])
    weights = load_file(run / "model.safetensors")
    assert all(np.isfinite(w).all() for w in weights.values())
    model = checkpoint.load_model(run)
    assert np.isfinite(model.forward(np.ones((2, model.n_features), dtype=np.float32))).all()


# -- data source inference ----------------------------------------------------------------
def _csv(path, n=120):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 3))
    y = (X[:, 0] > 0).astype(int)
    path.write_text("a,b,c,y\n" + "".join(f"{r[0]},{r[1]},{r[2]},{t}\n" for r, t in zip(X, y)))
    return path


def test_a_csv_path_without_data_csv_trains_on_the_csv(tmp_path):
    data = _csv(tmp_path / "d.csv")
    run = tmp_path / "run"
    assert main(["train", "--data-path", str(data), "--target", "y", *FAST[2:], "--run-dir", str(run)]) == 0
    assert 'source = "csv"' in (run / "config.toml").read_text()


@pytest.mark.parametrize("args,message", [
    (["--data", "digits", "--data-path", "d.csv"], "data.source = 'digits' ignores data.path"),
    (["--data-path", "d.parquet"], "cannot tell the kind of data.path"),
    (["--device", "gpu"], "model.device = 'gpu' is invalid: use 'cpu', 'cuda' or 'cuda:N'"),
])
def test_data_and_device_mistakes_are_refused(tmp_path, capsys, args, message):
    run = tmp_path / "run"
    assert main(["train", *args, "--run-dir", str(run), "--quiet"]) == 2
    assert message in _one_line(capsys.readouterr().err)
    assert not run.exists()


# -- errors from deeper down end in one line ---------------------------------------------------
def test_cuda_without_a_gpu_is_one_line(tmp_path, capsys):
    if xpnet.backend.gpu_available():
        pytest.skip("this machine has a GPU")
    run = tmp_path / "run"
    assert main(["train", *FAST, "--device", "cuda", "--run-dir", str(run)]) == 2
    assert "device='cuda" in _one_line(capsys.readouterr().err)
    assert not run.exists()


def test_an_unexpected_error_is_one_line_with_a_hint(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runs, "build", lambda *a: {}["no such key"])
    assert main(["train", *FAST, "--run-dir", str(tmp_path / "run")]) == 1
    line = _one_line(capsys.readouterr().err)
    assert "KeyError" in line and "XPNET_TRACEBACK=1" in line


def test_a_full_disk_leaves_no_temporary_checkpoints(old_run, capsys, monkeypatch):
    """However often a save fails for lack of space, no half-written checkpoint stays behind."""
    (old_run / "config.toml").write_text((old_run / "config.toml").read_text().replace("epochs = 3", "epochs = 6"))
    real_fsync = os.fsync
    calls = {"n": 0}

    def flaky_fsync(fd):  # the data was written, but the disk cannot hold it
        calls["n"] += 1
        if calls["n"] % 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", flaky_fsync)
    for _ in range(4):
        assert main(["train", "--resume", str(old_run), "--quiet", "--accept-config-changes"]) == 1
        assert "no space left on the device" in _one_line(capsys.readouterr().err)
        hidden = [p for p in old_run.rglob("*") if p.name != ".xpnet-run" and (p.name.startswith(".")
                                                                                or p.name.endswith(".tmp"))]
        assert hidden == []
    monkeypatch.setattr(os, "fsync", real_fsync)
    checkpoint.load(checkpoint.latest(old_run / "checkpoints"))
    assert main(["train", "--resume", str(old_run), "--quiet", "--accept-config-changes"]) == 0


# -- every train flag, fuzzed -------------------------------------------------------------------
VALUE_FLAGS = ["--data", "--data-path", "--x-path", "--y-path", "--target", "--test-fraction", "--val-fraction",
               "--hidden", "--activation", "--init", "--dtype", "--device", "--loss", "--optimizer", "--lr",
               "--weight-decay", "--momentum", "--schedule", "--schedule-interval", "--warmup-epochs", "--warmup-steps",
               "--plateau-factor", "--plateau-patience", "--epochs", "--batch-size",
               "--seed", "--clip-grad-norm", "--patience", "--precision", "--keep-last", "--config", "--resume"]


@pytest.mark.parametrize("value", ["nan", "-1", "0", "x\u00e9\x01", "1e999"])
@pytest.mark.parametrize("flag", VALUE_FLAGS)
def test_every_train_flag_with_bad_values(tmp_path, capfd, flag, value):
    """No value of any flag ends in a traceback or a half-made run directory: it trains, or it
    is refused with one line (argparse's errors included)."""
    run = tmp_path / "run"
    base = {} if flag == "--resume" else {"--data": "synthetic", "--hidden": "8", "--epochs": "1",
                                          "--run-dir": str(run)}
    base[flag] = value
    args = ["train", *[x for pair in base.items() for x in pair], "--quiet"]
    try:
        code = main(args)
    except SystemExit as exc:  # argparse: a value of the wrong type
        code = exc.code
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert code in (0, 2, 3), err
    if code:
        assert _one_line(err).startswith("xpnet"), err
        assert not run.exists()


# -- resuming an edited run ----------------------------------------------------------------------
def test_resume_refuses_an_edited_config_naming_the_keys(old_run, capsys):
    config = old_run / "config.toml"
    config.write_text(config.read_text().replace("seed = 0", "seed = 5").replace("epochs = 3", "epochs = 5"))
    before = _snapshot(old_run)
    assert main(["train", "--resume", str(old_run), "--quiet"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "train.epochs: 3 -> 5" in line and "train.seed: 0 -> 5" in line and "--accept-config-changes" in line
    assert _snapshot(old_run) == before
    assert main(["train", "--resume", str(old_run), "--quiet", "--accept-config-changes"]) == 0
    assert json.loads((old_run / "history.json").read_text())["epoch"] == [1, 2, 3, 4, 5]


def test_accept_config_changes_needs_resume(tmp_path, capsys):
    assert main(["train", *FAST, "--run-dir", str(tmp_path / "r"), "--accept-config-changes"]) == 2
    assert "goes with --resume only" in capsys.readouterr().err


# -- data files through the command line --------------------------------------------------------
def _npz(path, X, y):
    np.savez(path, X=X, y=y)
    return path


def test_integer_01_targets_train_with_bce(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4))
    data = _npz(tmp_path / "d.npz", X, (X[:, 0] > 0).astype(np.int64))
    run = tmp_path / "run"
    assert main(["train", "--data-path", str(data), "--loss", "bce", *FAST[2:], "--epochs", "20", "--lr", "0.01",
                 "--batch-size", "16", "--run-dir", str(run)]) == 0
    assert json.loads((run / "result.json").read_text())["test"]["accuracy"] > 0.8


@pytest.mark.parametrize("y,loss,message", [
    (np.linspace(0, 1, 50), "cross_entropy", "--loss mse"),
    (np.arange(50) % 3, "bce", "needs targets in [0, 1]"),
    (np.r_[np.zeros(49), 10**12].astype(np.int64), "cross_entropy", "classes"),
])
def test_targets_that_do_not_fit_the_loss_are_one_line(tmp_path, capsys, y, loss, message):
    data = _npz(tmp_path / "d.npz", np.ones((50, 3)), y)
    run = tmp_path / "run"
    assert main(["train", "--data-path", str(data), "--loss", loss, *FAST[2:], "--run-dir", str(run)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "d.npz" in line and message in line
    assert not run.exists()


@pytest.mark.parametrize("content", [b"", b"not a zip file at all", b"PK\x03\x04broken"])
def test_a_file_that_is_not_npz_is_one_line(tmp_path, capsys, content):
    (tmp_path / "d.npz").write_bytes(content)
    assert main(["train", "--data-path", str(tmp_path / "d.npz"), *FAST[2:], "--run-dir", str(tmp_path / "r")]) == 2
    assert "d.npz" in _one_line(capsys.readouterr().err)


def test_resume_skips_a_damaged_last_checkpoint(old_run, capsys):
    last = checkpoint.latest(old_run / "checkpoints")
    weights = last / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    (old_run / "config.toml").write_text((old_run / "config.toml").read_text().replace("epochs = 3", "epochs = 4"))
    assert main(["train", "--resume", str(old_run), "--quiet", "--accept-config-changes"]) == 0
    err = capsys.readouterr().err
    assert f"skipping damaged checkpoint(s) {last.name}" in err
    assert json.loads((old_run / "history.json").read_text())["epoch"] == [1, 2, 3, 4]


# -- found by adversarial testing --------------------------------------------------------------------
def test_resume_refuses_changed_data_naming_the_file(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    data = _npz(tmp_path / "d.npz", X, (X[:, 0] > 0).astype(np.int64))
    run = tmp_path / "run"
    assert main(["train", "--data-path", str(data), *FAST[2:], "--run-dir", str(run)]) == 0
    _npz(data, -X, (X[:, 0] <= 0).astype(np.int64))  # same shape, other data
    before = _snapshot(run)
    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"{data.resolve()}: its contents changed" in line and "--accept-config-changes" in line
    assert _snapshot(run) == before


def test_relative_data_paths_follow_the_config_file_and_resume_anywhere(tmp_path, monkeypatch):
    (tmp_path / "exp").mkdir()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 3))
    _npz(tmp_path / "exp" / "d.npz", X, (X[:, 0] > 0).astype(np.int64))
    (tmp_path / "exp" / "run.toml").write_text('[data]\npath = "d.npz"\n[model]\nhidden = [8]\n[train]\nepochs = 2\n')
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--config", "exp/run.toml", "--run-dir", "r", "--quiet"]) == 0
    assert f'path = "{(tmp_path / "exp" / "d.npz").resolve()}"' in (tmp_path / "r" / "config.toml").read_text()
    monkeypatch.chdir(tmp_path / "exp")
    assert main(["train", "--resume", str(tmp_path / "r"), "--quiet"]) == 0


def test_a_split_that_leaves_no_test_samples_is_refused(tmp_path, capsys):
    X = np.random.default_rng(0).normal(size=(200, 3))
    data = _npz(tmp_path / "d.npz", X, np.repeat(np.arange(100), 2))  # 100 classes x 2 samples
    assert main(["train", "--data-path", str(data), *FAST[2:], "--test-fraction", "0.2",
                 "--run-dir", str(tmp_path / "r")]) == 2
    assert "test_fraction=0.2 leaves no test samples (100 group(s), the largest of 2)" in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["--resume", ""], "--resume is empty"),
    (["--run-dir", ""], "--run-dir is empty"),
    (["--data", "csv", "--data-path", "d.csv", "--target", "y", "--x-path", "x.npy"],
     "data.x_path is given but data.source = 'csv' does not use it"),
    (["--data", "npz", "--data-path", "d.npz", "--target", "y"], "data.target is given but data.source = 'npz'"),
    (["--hidden", "16,,16"], "expected comma-separated integers"),
    (["--seed", str(2**64)], "train.seed = 18446744073709551616 is invalid"),
    (["--lr", "abc"], "argument --lr: invalid float value: 'abc' (see xpnet train --help)"),
])
def test_more_mistakes_are_one_line(tmp_path, capsys, args, message):
    try:
        code = main(["train", *args, "--quiet"])
    except SystemExit as exc:  # argparse
        code = exc.code
    assert code == 2
    assert message in _one_line(capsys.readouterr().err)


def test_a_config_file_with_a_byte_order_mark_loads(tmp_path):
    from xpnet.cli import config

    cfg = tmp_path / "c.toml"
    cfg.write_bytes(b"\xef\xbb\xbf[train]\nepochs = 2\n")
    assert config.load(cfg)["train"]["epochs"] == 2


def test_an_error_after_ctrl_c_is_reported_as_the_interrupt(tmp_path, capsys, monkeypatch):
    """A second Ctrl-C inside a compiler surfaces as some other error: it is still an interrupt."""
    update = xpnet.Trainer.update

    def interrupted_then_broken(self):
        update(self)
        if self.step_count == 2:
            os.kill(os.getpid(), signal.SIGINT)
            raise RuntimeError("no compiled object yet")

    monkeypatch.setattr(xpnet.Trainer, "update", interrupted_then_broken)
    assert main(["train", *FAST, "--run-dir", str(tmp_path / "run")]) == 130
    line = _one_line(capsys.readouterr().err)
    assert "interrupted by SIGINT (RuntimeError on the way out)" in line
    assert not (tmp_path / "run").exists()


def test_ctrl_c_while_writing_the_results_says_how_to_finish(old_run, capsys, monkeypatch):
    (old_run / "result.json").unlink()

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "plot_curves", interrupted)
    assert main(["train", "--resume", str(old_run), "--quiet"]) == 130
    assert f"finish with xpnet train --resume {old_run}" in _one_line(capsys.readouterr().err)
    monkeypatch.undo()
    assert main(["train", "--resume", str(old_run), "--quiet"]) == 0
    assert (old_run / "result.json").is_file()


def test_resume_with_every_checkpoint_damaged_says_how_to_start_over(old_run, capsys):
    for ckpt in checkpoint.list_checkpoints(old_run / "checkpoints"):
        weights = ckpt / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    assert main(["train", "--resume", str(old_run), "--quiet"]) == 2
    assert f"is intact, so there is nothing to resume from; start the run again with --run-dir {old_run} " \
           "--overwrite" in capsys.readouterr().err
    assert main(["train", *FAST, "--run-dir", str(old_run), "--overwrite"]) == 0


def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = runs.default_run_dir(name="x")
    first.mkdir(parents=True)
    assert runs.default_run_dir(name="x") == first.with_name(first.name + "-2")


def test_export_explains_an_unfinished_run_and_never_writes_through_a_symlink(old_run, capsys):
    pytest.importorskip("torch")
    (old_run / "model.safetensors").unlink()
    assert main(["export", str(old_run), "--out", str(old_run.parent / "m.pt")]) == 2
    assert "is a run that has not finished" in _one_line(capsys.readouterr().err)
    link = old_run.parent / "dangling.pt"
    link.symlink_to(old_run.parent / "nowhere.pt")
    assert main(["export", str(old_run / "checkpoints" / "epoch-0002"), "--out", str(link)]) == 2
    assert link.is_symlink() and not (old_run.parent / "nowhere.pt").exists()


def test_checkpoint_save_checks_its_arguments(tmp_path):
    trainer = xpnet.Trainer(xpnet.MLP([3, 4, 2]))
    for epoch in (-1, 1.5, True):
        with pytest.raises(ValueError, match=r"epoch=.* is invalid"):
            checkpoint.save(tmp_path / "c", trainer, epoch=epoch)
    assert checkpoint.save(tmp_path / "c", trainer, epoch=np.int64(7)).name == "epoch-0008"  # 8 epochs done
    (tmp_path / "file").write_text("mine")
    with pytest.raises(ValueError, match="is a file"):
        checkpoint.save(tmp_path / "file", trainer, epoch=1)
    assert (tmp_path / "file").read_text() == "mine"


def test_bench_that_measures_nothing_fails(tmp_path, capsys):
    assert main(["bench", "--sizes", "10,100000000000,2", "--batch-sizes", "8", "--impls", "xpnet", "--rounds",
                 "3", "--quiet"]) == 2
    assert "fits in memory" in _one_line(capsys.readouterr().err)
    (tmp_path / "b").mkdir()
    assert main(["bench", "--preset", "small", "--check-against", str(tmp_path / "b"), "--quiet"]) == 2
    assert "is a directory: give the results.json inside it" in capsys.readouterr().err
