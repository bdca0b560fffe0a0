"""Trainer behaviour: fit / evaluate / predict, history, callbacks, schedules, the main job."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import blobs

import xpnet


def test_fit_learns_separable_data(where):
    X, y = blobs(n=200)
    model = xpnet.MLP([6, 32, 3], seed=1, **where)
    trainer = xpnet.Trainer(model, optimizer=xpnet.optim.Adam(lr=0.01))
    history = trainer.fit(X, y, epochs=15, batch_size=32, validation_split=0.25, verbose=False)
    assert history["loss"][-1] < history["loss"][0] / 3
    assert history["val_accuracy"][-1] > 0.95
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}
    result = trainer.evaluate(X, y)
    assert result["accuracy"] > 0.95 and result["loss"] < 0.3
    logits = xpnet.to_host(trainer.predict(X))
    assert logits.shape == (200, 3)
    assert (logits.argmax(1) == y).mean() == pytest.approx(result["accuracy"])


def test_train_step_returns_device_scalar_and_decreases_loss():
    X, y = blobs(n=64)
    trainer = xpnet.Trainer(xpnet.MLP([6, 16, 3], dtype="float64"), optimizer=xpnet.optim.SGD(lr=0.1))
    losses = [float(trainer.train_step(X, y)) for _ in range(30)]
    assert losses[-1] < losses[0] / 2
    assert trainer.step_count == 30


def test_epoch_loss_is_the_mean_over_samples():
    """Logged epoch loss = sample-weighted mean of the batch losses (last batch smaller)."""
    X, y = blobs(n=50)
    model = xpnet.MLP([6, 8, 3], dtype="float64", seed=3)
    trainer = xpnet.Trainer(model, optimizer=xpnet.optim.SGD(lr=0.0))  # lr 0: weights fixed
    history = trainer.fit(X, y, epochs=1, batch_size=16, shuffle=False, verbose=False)
    assert history["loss"][0] == pytest.approx(trainer.evaluate(X, y)["loss"], rel=1e-12)


def test_regression_and_multilabel_losses_train():
    r = np.random.default_rng(0)
    X = r.normal(size=(256, 4))
    y_reg = np.stack([np.sin(X[:, 0]), X[:, 1] * X[:, 2]], axis=1)
    reg = xpnet.Trainer(xpnet.MLP([4, 64, 2], activation="tanh", seed=0), loss="mse",
                        optimizer=xpnet.optim.Adam(lr=0.01))
    h = reg.fit(X, y_reg, epochs=40, batch_size=32, verbose=False)
    assert h["loss"][-1] < 0.2 * h["loss"][0] and "accuracy" not in h.history
    y_bin = (X[:, :3] > 0).astype(np.float64)
    clf = xpnet.Trainer(xpnet.MLP([4, 32, 3], seed=0), loss="bce", optimizer=xpnet.optim.Adam(lr=0.01))
    h = clf.fit(X, y_bin, epochs=20, batch_size=32, verbose=False)
    assert h["accuracy"][-1] > 0.95


def test_one_hot_targets_train_like_labels():
    X, y = blobs(n=60)
    runs = []
    for targets in (y, np.eye(3)[y]):
        t = xpnet.Trainer(xpnet.MLP([6, 8, 3], dtype="float64", seed=2))
        runs.append((t.fit(X, targets, epochs=2, batch_size=16, verbose=False), t.model.get_weights()))
    np.testing.assert_allclose(runs[0][0]["loss"], runs[1][0]["loss"], rtol=1e-12)
    np.testing.assert_allclose(runs[0][1][0][0], runs[1][1][0][0], rtol=1e-12)


def test_shuffle_is_seeded_and_changes_order():
    X, y = blobs(n=64)

    def run(shuffle):
        t = xpnet.Trainer(xpnet.MLP([6, 8, 3], dtype="float64", seed=5), optimizer=xpnet.optim.SGD(lr=0.1))
        t.fit(X, y, epochs=2, batch_size=8, shuffle=shuffle, verbose=False)
        return t.model.get_weights()[0][0]

    np.testing.assert_array_equal(run(True), run(True))
    assert not np.allclose(run(True), run(False))


def test_early_stopping_restores_best_weights():
    X, y = blobs(n=120, seed=3)
    model = xpnet.MLP([6, 64, 3], dtype="float64", seed=0)
    trainer = xpnet.Trainer(model, optimizer=xpnet.optim.SGD(lr=0.5, momentum=0.9))
    snapshots = []

    class Record(xpnet.train.Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            snapshots.append(xpnet.to_host(trainer.model.params).copy())

    stopper = xpnet.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    history = trainer.fit(X, y, epochs=60, batch_size=8, validation_split=0.3, verbose=False,
                          callbacks=[Record(), stopper])
    best = int(np.argmin(history["val_loss"]))
    assert len(history.epoch) == best + 3  # patience 2: stops two epochs after the best
    assert "early stopping" in history.stop_reason
    np.testing.assert_array_equal(xpnet.to_host(model.params), snapshots[best])


def test_early_stopping_without_validation_says_what_to_do():
    X, y = blobs(n=40)
    trainer = xpnet.Trainer(xpnet.MLP([6, 4, 3]))
    with pytest.raises(ValueError, match="monitors 'val_loss'.*pass validation_data or validation_split"):
        trainer.fit(X, y, epochs=2, callbacks=[xpnet.EarlyStopping()], verbose=False)


def test_scheduler_steps_once_per_epoch():
    X, y = blobs(n=32)
    opt = xpnet.optim.SGD(lr=0.1)
    sched = xpnet.optim.StepLR(opt, step_size=1, gamma=0.5)
    trainer = xpnet.Trainer(xpnet.MLP([6, 4, 3]), optimizer=opt, scheduler=sched)
    history = trainer.fit(X, y, epochs=4, batch_size=8, verbose=False)
    assert history["lr"] == pytest.approx([0.1, 0.05, 0.025, 0.0125])
    assert opt.lr == pytest.approx(0.00625)


def test_scheduler_must_wrap_the_trainers_optimizer():
    with pytest.raises(ValueError, match="different optimizer"):
        other = xpnet.optim.SGD()
        xpnet.Trainer(xpnet.MLP([4, 2]), optimizer=xpnet.optim.SGD(), scheduler=xpnet.optim.StepLR(other, 1))


def test_progress_bar_shows_epochs_and_metrics(capsys):
    X, y = blobs(n=32)
    xpnet.Trainer(xpnet.MLP([6, 4, 3])).fit(X, y, epochs=2, batch_size=8, verbose=True)
    err = capsys.readouterr().err
    assert "epoch 1/2" in err and "epoch 2/2" in err and "loss=" in err and "4/4" in err  # a bar per epoch


def test_initialisers_have_the_right_scale():
    fan_in, fan_out = 400, 300
    for init, var in [("he_normal", 2 / fan_in), ("he_uniform", 2 / fan_in), ("xavier_normal", 2 / (fan_in + fan_out)),
                      ("xavier_uniform", 2 / (fan_in + fan_out)), ("lecun_normal", 1 / fan_in),
                      ("lecun_uniform", 1 / fan_in)]:
        W, b = xpnet.MLP([fan_in, fan_out], init=init, dtype="float64").get_weights()[0]
        assert W.var() == pytest.approx(var, rel=0.03), init
        assert not b.any()
    assert xpnet.MLP([4, 2], activation="relu").init == "he_normal"
    assert xpnet.MLP([4, 2], activation="tanh").init == "xavier_uniform"


def test_get_set_weights_round_trip(where):
    src = xpnet.MLP([5, 4, 3], dtype="float64", seed=1)
    dst = xpnet.MLP([5, 4, 3], dtype="float64", seed=2, **where)
    dst.set_weights(src.get_weights())
    for (W0, b0), (W1, b1) in zip(src.get_weights(), dst.get_weights()):
        np.testing.assert_array_equal(W0, W1)
        np.testing.assert_array_equal(b0, b1)


def test_main_job_reaches_97_percent_on_digits(capsys, tmp_path):
    pytest.importorskip("sklearn")
    from xpnet.cli import main

    assert main(["train", "--quiet", "--run-dir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    accuracy = float(out.strip().split()[-1])
    assert accuracy >= 0.97, out


def test_cli_info_runs(capsys):
    from xpnet.cli import main

    assert main(["info"]) == 0
    assert "numpy" in capsys.readouterr().out


def test_streaming_from_host_gives_the_same_training_as_device_resident(where):
    """fit(data_on_device=False) streams batches from host memory; the result is identical."""
    X, y = blobs(n=90)
    weights, histories = [], []
    for resident in (True, False):
        trainer = xpnet.Trainer(xpnet.MLP([6, 16, 3], dtype="float64", seed=2, **where),
                                optimizer=xpnet.optim.Adam(lr=0.01))
        histories.append(trainer.fit(X, y, epochs=3, batch_size=16, validation_split=0.2, verbose=False,
                                     data_on_device=resident))
        weights.append(xpnet.to_host(trainer.model.params))
    np.testing.assert_array_equal(weights[1], weights[0])
    assert histories[1].history == histories[0].history


# -- the public step API -------------------------------------------------------------------------------
def test_public_step_api_matches_train_step():
    """prepare + step (the benchmarks' fast path) and forward_backward + update give train_step's result."""
    X, y = blobs(n=32)
    trainers = [xpnet.Trainer(xpnet.MLP([6, 16, 3], dtype="float64", seed=4), optimizer=xpnet.optim.Adam(lr=0.01),
                              clip_grad_norm=1.0) for _ in range(3)]
    losses = [float(trainers[0].train_step(X, y))]
    Xd, yd = trainers[1].prepare(X, y)
    losses.append(float(trainers[1].step(Xd, yd)))
    with trainers[2].model.backend.context():
        loss, logits = trainers[2].forward_backward(Xd, yd)
        assert logits.shape == (32, 3)
        assert trainers[2].update() is True
    losses.append(float(loss))
    assert losses[0] == losses[1] == losses[2]
    assert [t.step_count for t in trainers] == [1, 1, 1]
    for t in trainers[1:]:
        np.testing.assert_array_equal(t.model.params, trainers[0].model.params)
    with pytest.raises(ValueError):
        trainers[1].prepare(X[:, :5], y)


def test_trainer_holds_a_precision_strategy_built_from_its_parts():
    from xpnet.train.precision import FP32Step, MixedPrecisionStep

    model = xpnet.MLP([6, 16, 3])
    fp32, fp16 = xpnet.Trainer(model), xpnet.Trainer(model, precision="fp16")
    assert type(fp32.precision_step) is FP32Step and fp32.scaler is None
    assert isinstance(fp16.precision_step, MixedPrecisionStep) and fp16.scaler is fp16.precision_step.scaler
    step = fp16.precision_step
    assert (step.model, step.loss, step.optimizer, step.ops) == (model, fp16.loss, fp16.optimizer, fp16.ops)


def test_two_trainers_on_one_model_keep_their_own_kernel_set_and_precision():
    import warnings

    X, y = blobs(n=32)
    model = xpnet.MLP([6, 16, 3], seed=5)
    model_ops = model.ops
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # tf32 on the CPU says it runs float32
        t32 = xpnet.Trainer(model, precision="tf32")
    fp16 = xpnet.Trainer(model, precision="fp16")
    fp32 = xpnet.Trainer(model, precision="fp32")
    assert model.ops is model_ops and not model.ops.tf32  # no trainer wrote to the model
    assert t32.ops.tf32 and not fp32.ops.tf32 and not fp16.ops.tf32
    assert len({id(t.ops) for t in (t32, fp16, fp32)}) == 3 and model.ops not in (t32.ops, fp16.ops, fp32.ops)
    for _ in range(2):
        fp16.train_step(X, y)
        fp32.train_step(X, y)
        t32.train_step(X, y)
    assert fp16.scaler is not None and fp32.scaler is None and t32.scaler is None
    assert (t32.precision, fp16.precision, fp32.precision) == ("tf32", "fp16", "fp32")
    assert model.ops is model_ops and not model.ops.tf32 and t32.ops.tf32 and not fp32.ops.tf32
    assert [t.step_count for t in (t32, fp16, fp32)] == [2, 2, 2]
