"""Schedules (ReduceLROnPlateau, OneCycleLR, per-step schedules) against torch, their checkpoint
round trip, and the callbacks CSVLogger / ModelCheckpoint / TensorBoard / verbose=2."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import blobs

import xpnet
from xpnet import optim
from xpnet.io import checkpoint
from xpnet.validation import HyperparameterError


def _torch_sgd(torch, lr=0.1, **kw):
    return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr, **kw)


ONE_CYCLE = [
    dict(max_lr=0.5, total_steps=100, cycle_momentum=False),
    dict(max_lr=0.5, total_steps=97, anneal_strategy="linear", cycle_momentum=False),
    dict(max_lr=1.0, epochs=7, steps_per_epoch=13, three_phase=True, cycle_momentum=False),
    dict(max_lr=0.3, total_steps=50, pct_start=0.45, div_factor=10.0, final_div_factor=100.0, three_phase=True,
         anneal_strategy="linear", cycle_momentum=False),
    dict(max_lr=0.2, total_steps=80, base_momentum=0.8, max_momentum=0.9),  # cycles SGD momentum
]


@pytest.mark.parametrize("kwargs", ONE_CYCLE)
def test_one_cycle_matches_torch(kwargs):
    torch = pytest.importorskip("torch")
    momentum = 0.9 if kwargs.get("cycle_momentum", True) else 0.0
    ours_opt, t_opt = optim.SGD(lr=0.1, momentum=momentum), _torch_sgd(torch, momentum=momentum)
    ours = optim.OneCycleLR(ours_opt, **kwargs)
    theirs = torch.optim.lr_scheduler.OneCycleLR(t_opt, **kwargs)
    assert ours.interval == "step"
    for _ in range(ours.total_steps):
        assert ours_opt.lr == pytest.approx(t_opt.param_groups[0]["lr"], rel=1e-12, abs=1e-12)
        assert ours_opt.hparams["momentum"] == pytest.approx(t_opt.param_groups[0]["momentum"], abs=1e-12)
        t_opt.step()
        ours.step(), theirs.step()
    with pytest.raises(ValueError, match="past total_steps"):
        ours.step()


def test_one_cycle_cycles_adam_beta1_like_torch():
    torch = pytest.importorskip("torch")
    ours_opt = optim.Adam(lr=0.1)
    t_opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=0.1)
    ours, theirs = optim.OneCycleLR(ours_opt, 0.1, 40), torch.optim.lr_scheduler.OneCycleLR(t_opt, 0.1, 40)
    for _ in range(40):
        assert ours_opt.hparams["beta1"] == pytest.approx(t_opt.param_groups[0]["betas"][0], abs=1e-12)
        assert ours_opt.lr == pytest.approx(t_opt.param_groups[0]["lr"], abs=1e-12)
        t_opt.step()
        ours.step(), theirs.step()


PLATEAU = [
    dict(),
    dict(mode="max", factor=0.5, patience=2, threshold=0.01, threshold_mode="abs", cooldown=1),
    dict(factor=0.3, patience=0, cooldown=2, min_lr=0.005, eps=1e-4),
    dict(mode="min", patience=1, threshold=0.1, threshold_mode="rel"),
]


@pytest.mark.parametrize("kwargs", PLATEAU)
def test_reduce_on_plateau_matches_torch_on_the_same_metrics(kwargs):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    metrics = np.concatenate([np.linspace(1, 0.5, 10), 0.5 + 0.05 * rng.standard_normal(60),
                              np.linspace(0.5, 0.1, 10), np.full(40, 0.1)])
    ours_opt, t_opt = optim.SGD(lr=0.1), _torch_sgd(torch)
    ours = optim.ReduceLROnPlateau(ours_opt, **kwargs)
    theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(t_opt, **kwargs)
    lrs = []
    for m in metrics:
        ours.step(float(m)), theirs.step(float(m))
        assert ours_opt.lr == pytest.approx(t_opt.param_groups[0]["lr"], rel=1e-12, abs=1e-12)
        lrs.append(ours_opt.lr)
    assert len(set(lrs)) > 1  # the sequence does reduce


@pytest.mark.parametrize("name,kwargs", [("LinearLR", dict(start_factor=0.01, total_iters=10)),
                                         ("CosineAnnealingLR", dict(T_max=12, eta_min=1e-4))])
def test_per_step_schedules_in_fit_match_torch_stepped_per_batch(name, kwargs):
    torch = pytest.importorskip("torch")
    X, y = blobs(n=40)
    opt = optim.SGD(lr=0.1)
    sched = getattr(optim, name)(opt, **kwargs, interval="step")
    seen = []

    class Record(xpnet.train.Callback):
        def on_step_loss(self, trainer, loss):
            seen.append(trainer.optimizer.lr)  # the lr this update uses
            return True

    xpnet.Trainer(xpnet.MLP([6, 4, 3]), optimizer=opt, scheduler=sched).fit(
        X, y, epochs=3, batch_size=8, verbose=0, callbacks=[Record()])
    t_opt = _torch_sgd(torch)
    theirs = getattr(torch.optim.lr_scheduler, name)(t_opt, **kwargs)
    expected = []
    for _ in range(15):
        expected.append(t_opt.param_groups[0]["lr"])
        t_opt.step(), theirs.step()
    np.testing.assert_allclose(seen, expected, rtol=1e-12, atol=1e-15)
    assert sched.last_epoch == 15


def test_plateau_in_fit_monitors_val_loss_else_loss():
    X, y = blobs(n=40)
    for validation, key in ((0.25, "val_loss"), (0.0, "loss")):
        opt = optim.SGD(lr=0.1)
        sched = optim.ReduceLROnPlateau(opt, patience=0)
        seen = []
        sched.step = lambda m, _s=sched.step, _seen=seen: (_seen.append(m), _s(m))
        history = xpnet.Trainer(xpnet.MLP([6, 4, 3]), optimizer=opt, scheduler=sched).fit(
            X, y, epochs=3, batch_size=8, verbose=0, validation_split=validation)
        assert seen == history[key]
    opt = optim.SGD(lr=0.1)
    trainer = xpnet.Trainer(xpnet.MLP([6, 4, 3]), optimizer=opt,
                            scheduler=optim.ReduceLROnPlateau(opt, monitor="val_accuracy", mode="max"))
    with pytest.raises(ValueError, match="monitors 'val_accuracy'"):
        trainer.fit(X, y, epochs=1, verbose=0)


def _resume_run(tmp_path, make_sched, epochs=4, stop=2, batch_size=8):
    X, y = blobs(n=40)

    def build():
        opt = optim.SGD(lr=0.1, momentum=0.9)
        return xpnet.Trainer(xpnet.MLP([6, 8, 3], dtype="float64", seed=3), optimizer=opt, scheduler=make_sched(opt))

    straight = build()
    full = straight.fit(X, y, epochs=epochs, batch_size=batch_size, verbose=0, validation_split=0.2)
    first = build()
    history = first.fit(X, y, epochs=stop, batch_size=batch_size, verbose=0, validation_split=0.2)
    path = checkpoint.save(tmp_path, first, epoch=stop - 1, history=history)
    resumed = build()
    checkpoint.restore(resumed, checkpoint.load(path))
    resumed.fit(X, y, epochs=epochs, batch_size=batch_size, verbose=0, validation_split=0.2, initial_epoch=stop,
                history=history)
    assert history["lr"] == full["lr"] and history["loss"] == full["loss"]
    np.testing.assert_array_equal(xpnet.to_host(resumed.model.params), xpnet.to_host(straight.model.params))
    return straight


@pytest.mark.parametrize("make", [
    lambda o: optim.ReduceLROnPlateau(o, patience=0, factor=0.5, cooldown=1, threshold=0.5),
    lambda o: optim.OneCycleLR(o, max_lr=0.2, epochs=4, steps_per_epoch=4),
    lambda o: optim.LinearLR(o, start_factor=0.1, total_iters=6, interval="step"),
], ids=["plateau", "one_cycle", "linear_per_step"])
def test_scheduler_state_round_trips_through_checkpoints_and_resume_is_exact(tmp_path, make):
    straight = _resume_run(tmp_path, make)
    assert straight.scheduler.last_epoch in (4, 16)


@pytest.mark.parametrize("cls,kwargs,match", [
    (optim.ReduceLROnPlateau, dict(mode="up"), "mode='up' is unknown"),
    (optim.ReduceLROnPlateau, dict(factor=1.0), r"factor=1.0 is invalid: use a finite number in \(0, 1\)"),
    (optim.ReduceLROnPlateau, dict(patience=-1), "patience=-1 is invalid"),
    (optim.ReduceLROnPlateau, dict(threshold=float("nan")), "threshold=nan is invalid"),
    (optim.ReduceLROnPlateau, dict(threshold_mode="x"), "threshold_mode='x' is unknown"),
    (optim.ReduceLROnPlateau, dict(cooldown=1.5), "cooldown=1.5 is invalid"),
    (optim.ReduceLROnPlateau, dict(min_lr=-1), "min_lr=-1 is invalid"),
    (optim.ReduceLROnPlateau, dict(eps=-1), "eps=-1 is invalid"),
    (optim.ReduceLROnPlateau, dict(monitor=""), "monitor='' is invalid"),
    (optim.OneCycleLR, dict(max_lr=0, total_steps=5), "max_lr=0 is invalid"),
    (optim.OneCycleLR, dict(max_lr=1), "needs total_steps, or both epochs and steps_per_epoch"),
    (optim.OneCycleLR, dict(max_lr=1, total_steps=0), "total_steps=0 is invalid"),
    (optim.OneCycleLR, dict(max_lr=1, epochs=2, steps_per_epoch=0), "steps_per_epoch=0 is invalid"),
    (optim.OneCycleLR, dict(max_lr=1, total_steps=5, pct_start=1.5), "pct_start=1.5 is invalid"),
    (optim.OneCycleLR, dict(max_lr=1, total_steps=5, anneal_strategy="exp"), "anneal_strategy='exp' is unknown"),
    (optim.OneCycleLR, dict(max_lr=1, total_steps=5, div_factor=0), "div_factor=0 is invalid"),
    (optim.OneCycleLR, dict(max_lr=1, total_steps=5, final_div_factor=-1), "final_div_factor=-1 is invalid"),
    (optim.OneCycleLR, dict(max_lr=1, total_steps=5, three_phase=1), "three_phase=1 is invalid"),
    (optim.OneCycleLR, dict(max_lr=1, total_steps=5), "cycle_momentum=True needs an optimizer with momentum"),
    (optim.OneCycleLR, dict(max_lr=1, total_steps=5, cycle_momentum=False, interval="batch"),
     "interval='batch' is unknown"),
    (optim.StepLR, dict(step_size=1, interval="epochs"), "interval='epochs' is unknown"),
])
def test_constructor_arguments_are_checked_and_leave_the_optimizer_alone(cls, kwargs, match):
    opt = optim.SGD(lr=0.1)
    with pytest.raises((HyperparameterError, ValueError), match=match):
        cls(opt, **kwargs)
    assert opt.lr == 0.1 and not hasattr(opt, "initial_lr")


def test_sequential_refuses_plateau_and_one_cycle():
    opt = optim.SGD(lr=0.1)
    with pytest.raises(HyperparameterError, match="closed-form"):
        optim.SequentialLR(opt, [optim.LinearLR(opt), optim.ReduceLROnPlateau(opt)], [2])


# -- callbacks ------------------------------------------------------------------------------------
def _fit(callbacks=(), epochs=3, **kw):
    X, y = blobs(n=40)
    trainer = xpnet.Trainer(xpnet.MLP([6, 4, 3], dtype="float64", seed=2))
    return trainer, trainer.fit(X, y, epochs=epochs, batch_size=8, verbose=0, callbacks=list(callbacks), **kw)


def test_csv_logger_writes_a_flushed_row_per_epoch_and_never_overwrites_silently(tmp_path):
    import csv

    path = tmp_path / "log.csv"
    _, history = _fit([xpnet.train.CSVLogger(path)], validation_split=0.25)
    rows = list(csv.DictReader(path.open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert [float(r["val_loss"]) for r in rows] == pytest.approx(history["val_loss"], rel=1e-12)
    assert all(float(r["epoch_time"]) > 0 for r in rows) and "lr" in rows[0]
    with pytest.raises(FileExistsError, match="append=True.*overwrite=True"):
        _fit([xpnet.train.CSVLogger(path)])
    assert len(list(csv.DictReader(path.open()))) == 3  # untouched
    _fit([xpnet.train.CSVLogger(path, append=True)], epochs=2, validation_split=0.25)
    assert len(list(csv.DictReader(path.open()))) == 5
    _fit([xpnet.train.CSVLogger(path, overwrite=True)], epochs=1)
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 1 and "val_loss" not in rows[0]
    with pytest.raises(HyperparameterError, match="append=1 is invalid"):
        xpnet.train.CSVLogger(path, append=1)


def test_model_checkpoint_saves_restorable_checkpoints_and_keeps_the_best(tmp_path):
    cb = xpnet.train.ModelCheckpoint(tmp_path / "all", monitor="loss")
    trainer, _ = _fit([cb])
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path / "all")] == ["epoch-0001", "epoch-0002",
                                                                               "epoch-0003"]
    fresh = xpnet.Trainer(xpnet.MLP([6, 4, 3], dtype="float64", seed=9))
    checkpoint.restore(fresh, checkpoint.load(cb.last_path))
    np.testing.assert_array_equal(xpnet.to_host(fresh.model.params), xpnet.to_host(trainer.model.params))
    assert checkpoint.load(cb.last_path).trainer_meta["history"]["loss"] == trainer.history["loss"]

    best = xpnet.train.ModelCheckpoint(tmp_path / "best", monitor="val_accuracy", save_best_only=True)
    _, history = _fit([best], epochs=4, validation_split=0.25)
    kept = checkpoint.list_checkpoints(tmp_path / "best")
    assert kept == [best.best_path] and best.best == max(history["val_accuracy"])
    assert int(kept[0].name.split("-")[1]) == history["val_accuracy"].index(best.best) + 1
    with pytest.raises(ValueError, match="monitors 'val_loss'"):
        _fit([xpnet.train.ModelCheckpoint(tmp_path / "x", save_best_only=True)])
    with pytest.raises(HyperparameterError, match="mode='up' is unknown"):
        xpnet.train.ModelCheckpoint(tmp_path, mode="up")


def test_tensorboard_without_tensorboardx_says_how_to_install(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(ImportError, match=r"pip install 'xpnet\[tensorboard\]'"):
        xpnet.train.TensorBoard(tmp_path)


def test_tensorboard_writes_event_files(tmp_path):
    pytest.importorskip("tensorboardX")
    _fit([xpnet.train.TensorBoard(tmp_path / "tb")], epochs=2)
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_tensorboard_fits_in_the_same_second_keep_each_others_files(tmp_path, monkeypatch):
    """tensorboardX names event files by the second and truncates an existing one: each fit gets
    its own file (a nanosecond suffix), so a second fit (a resumed run) loses none of the first."""
    import time

    pytest.importorskip("tensorboardX")
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0)  # both fits in the same second
    tb = xpnet.train.TensorBoard(tmp_path / "tb")
    _fit([tb], epochs=1)
    first = {p.name: p.read_bytes() for p in (tmp_path / "tb").iterdir()}
    _fit([xpnet.train.TensorBoard(tmp_path / "tb")], epochs=1)
    files = {p.name: p.read_bytes() for p in (tmp_path / "tb").iterdir()}
    assert len(files) == 2 and all(files[name] == data for name, data in first.items())


def _events(path):
    """The records of a TensorBoard event file (TFRecord framing: length, its CRC, data, its CRC)."""
    import struct

    from tensorboardX.proto import event_pb2

    data, events, at = path.read_bytes(), [], 0
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at:at + 8])
        events.append(event_pb2.Event.FromString(data[at + 12:at + 12 + length]))
        at += 12 + length + 4
    return events


def test_tensorboard_resumed_fit_purges_the_epochs_it_reruns(tmp_path):
    """A resumed fit (initial_epoch=k) re-runs epochs k.. that the first run may have logged: its file
    starts with a session START at step k, which makes TensorBoard drop the earlier events from k on."""
    pytest.importorskip("tensorboardX")
    trainer, history = _fit([xpnet.train.TensorBoard(tmp_path / "tb")], epochs=3)
    trainer.fit(*blobs(n=40), epochs=5, initial_epoch=2, history=history, batch_size=8, verbose=0,
                callbacks=[xpnet.train.TensorBoard(tmp_path / "tb")])
    files = sorted((tmp_path / "tb").glob("events.out.tfevents.*"), key=lambda p: p.name)
    starts = [[(e.step, e.session_log.status) for e in _events(f) if e.HasField("session_log")] for f in files]
    assert starts[0] == [] and starts[1] == [(2, 1)]  # SessionLog.START == 1, at the resumed epoch
    steps = sorted({e.step for e in _events(files[1]) if e.HasField("summary")})
    assert steps == [2, 3, 4]


def test_epoch_begin_and_batch_end_hooks_see_every_epoch_and_step():
    calls = []

    class Hooks(xpnet.train.Callback):
        def on_epoch_begin(self, trainer, epoch):
            calls.append(("begin", epoch))

        def on_batch_end(self, trainer, step, logs):
            assert set(logs) == {"loss", "lr"} and isinstance(logs["loss"], float)
            calls.append(("batch", step))

        def on_epoch_end(self, trainer, epoch, logs):
            calls.append(("end", epoch))

    _fit([Hooks()], epochs=2)
    per_epoch = [[("begin", e)] + [("batch", s) for s in range(5)] + [("end", e)] for e in range(2)]
    assert calls == per_epoch[0] + per_epoch[1]


def test_verbose_2_prints_a_line_per_epoch_and_history_records_epoch_times(capsys):
    X, y = blobs(n=40)
    history = xpnet.Trainer(xpnet.MLP([6, 4, 3])).fit(X, y, epochs=3, batch_size=8, verbose=2,
                                                      validation_split=0.25)
    out = capsys.readouterr()
    lines = out.out.strip().splitlines()
    assert len(lines) == 3 and not out.err  # no progress bar
    assert lines[0].startswith("Epoch 1/3 - ") and "s - loss: " in lines[0] and "val_accuracy: " in lines[2]
    assert len(history["epoch_time"]) == 3 and all(t > 0 for t in history["epoch_time"])
    assert "epoch_time" not in history.history  # kept out of the checkpointed metrics
    with pytest.raises(ValueError, match="verbose=3 is invalid"):
        xpnet.Trainer(xpnet.MLP([6, 4, 3])).fit(X, y, verbose=3)


def test_cli_prints_a_line_per_epoch_when_stdout_is_not_a_terminal(tmp_path, capsys):
    from xpnet.cli import main

    args = ["train", "--data", "synthetic", "--hidden", "8", "--epochs", "2", "--batch-size", "64",
            "--run-dir", str(tmp_path / "run")]
    assert main(args) == 0
    out = capsys.readouterr()
    assert "Epoch 1/2 - " in out.out and "Epoch 2/2 - " in out.out and "it/s" not in out.err


def test_a_per_step_schedule_resumes_exactly_from_a_mid_epoch_checkpoint(tmp_path):
    X, y = blobs(n=64)

    def make():
        opt = optim.SGD(lr=0.1, momentum=0.9)
        return xpnet.Trainer(xpnet.MLP([6, 16, 3], dtype="float64", seed=1), optimizer=opt,
                             scheduler=optim.OneCycleLR(opt, max_lr=0.3, epochs=3, steps_per_epoch=4))

    class SaveAt7(xpnet.train.Callback):
        path = None

        def on_step_end(self, trainer):
            if trainer.step_count == 7:
                self.path = checkpoint.save_in_epoch(tmp_path, trainer)

    fit = {"epochs": 3, "batch_size": 16, "verbose": 0}
    trainer, saver = make(), SaveAt7()
    full = trainer.fit(X, y, callbacks=[saver], **fit)
    ckpt = checkpoint.load(saver.path)
    fresh = make()
    checkpoint.restore(fresh, ckpt)
    assert fresh.scheduler.last_epoch == 7 and fresh.optimizer.lr == pytest.approx(fresh.scheduler.lr_at(7))
    history = fresh.fit(X, y, initial_epoch=ckpt.epoch + 1, **fit)
    np.testing.assert_array_equal(xpnet.to_host(fresh.model.params), xpnet.to_host(trainer.model.params))
    assert history["lr"] == full["lr"][1:] and fresh.scheduler.last_epoch == 12
