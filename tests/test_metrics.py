"""Epoch metrics (xpnet.train.metrics) against sklearn.metrics, on every namespace; EarlyStopping
and the CLI on them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xpnet import MLP, Trainer
from xpnet.train import EarlyStopping
from xpnet.train import metrics as M

sk = pytest.importorskip("sklearn.metrics")

BATCHES = (0, 40, 80, 120, 157)  # uneven last batch


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _run(names, problem, logits, y, where):
    """Each metric fed batch by batch on ``where``'s namespace; ``{name: result}``."""
    backend = MLP([2, 2], dtype="float64", **where).backend
    metrics = [m.start(backend.xp, backend.device, backend.xp.float64) for m in M.build(names, problem)]
    for a, b in zip(BATCHES[:-1], BATCHES[1:]):
        zb, yb = backend.from_host(logits[a:b]), backend.from_host(y[a:b])
        for m in metrics:
            m.update(zb, yb)
    return {m.name: m.result() for m in metrics}


def _classification_expected(z, labels, n_classes):
    p = _softmax(z)
    classes = list(range(n_classes))
    pred = z.argmax(axis=1)
    out = {"accuracy": sk.accuracy_score(labels, pred),
           "top_k_accuracy": sk.top_k_accuracy_score(labels, z, k=2, labels=classes),
           "balanced_accuracy": sk.balanced_accuracy_score(labels, pred),
           "neg_log_loss": -sk.log_loss(labels, p, labels=classes),
           "roc_auc_ovr": sk.roc_auc_score(labels, p, multi_class="ovr", labels=classes)}
    for score in ("precision", "recall", "f1"):
        fn = getattr(sk, f"{score}_score")
        for average in ("macro", "micro", "weighted"):
            out[f"{score}_{average}"] = fn(labels, pred, average=average, labels=classes, zero_division=0)
    return out


def test_multiclass_metrics_match_sklearn(where):
    r = np.random.default_rng(0)
    z, labels = r.normal(size=(157, 4)), r.integers(0, 4, 157)
    expected = _classification_expected(z, labels, 4)
    got = _run(list(expected), "multiclass", z, labels, where)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name
    one_hot = np.eye(4)[labels]  # one-hot targets give the same values
    assert _run(["f1_macro", "roc_auc_ovr"], "multiclass", z, one_hot, where)["f1_macro"] == got["f1_macro"]


def _binary_expected(score, labels):
    pred = (score > 0).astype(int)
    out = {"accuracy": sk.accuracy_score(labels, pred), "roc_auc": sk.roc_auc_score(labels, score),
           "neg_log_loss": -sk.log_loss(labels, _sigmoid(score)), "top_k_accuracy": 1.0}
    for score_name in ("precision", "recall", "f1"):
        fn = getattr(sk, f"{score_name}_score")
        out[score_name] = fn(labels, pred, zero_division=0)
        for average in ("macro", "micro", "weighted"):
            out[f"{score_name}_{average}"] = fn(labels, pred, average=average, zero_division=0)
    return out


@pytest.mark.parametrize("loss", ["bce", "cross_entropy"])
def test_binary_metrics_match_sklearn(where, loss):
    r = np.random.default_rng(1)
    z2, labels = r.normal(size=(157, 2)), r.integers(0, 2, 157)
    score = z2[:, 1] - z2[:, 0]
    expected = _binary_expected(score, labels)
    if loss == "bce":  # one output column, float 0/1 targets
        got = _run(list(expected), "binary", score[:, None], labels[:, None].astype(np.float64), where)
    else:
        got = _run(list(expected), "binary", z2, labels, where)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name


def test_regression_metrics_match_sklearn(where):
    r = np.random.default_rng(2)
    y = r.normal(loc=[100.0, -3.0], scale=[0.5, 2.0], size=(157, 2))  # a large mean: R^2 stays exact
    z = y + r.normal(scale=0.3, size=y.shape)
    expected = {"r2": sk.r2_score(y, z), "neg_mean_absolute_error": -sk.mean_absolute_error(y, z),
                "neg_mean_squared_error": -sk.mean_squared_error(y, z),
                "neg_root_mean_squared_error": -sk.root_mean_squared_error(y, z)}
    got = _run(list(expected), "regression", z, y, where)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name


def test_auc_ties_and_missing_classes():
    s = np.array([0.1, 0.4, 0.4, 0.4, 0.9, 0.9])
    pos = np.array([0, 1, 0, 1, 1, 0], dtype=bool)
    assert M.rank_auc(s, pos) == pytest.approx(sk.roc_auc_score(pos, s), abs=1e-15)
    assert np.isnan(M.rank_auc(s, np.zeros(6, dtype=bool)))


def test_names_are_checked_with_the_valid_ones_listed():
    model = MLP([3, 4], seed=0)
    with pytest.raises(ValueError, match="unknown: use any of accuracy, top_k_accuracy"):
        Trainer(model, metrics=["f2"])
    with pytest.raises(ValueError, match="'f1' does not apply to a multiclass problem.*f1_macro"):
        Trainer(model, metrics=["f1"])
    with pytest.raises(ValueError, match="'r2' does not apply"):
        Trainer(model, metrics=["r2"])
    with pytest.raises(ValueError, match="'accuracy' does not apply to a regression"):
        Trainer(MLP([3, 1]), loss="mse", metrics=["accuracy"])
    assert Trainer(MLP([3, 1]), loss="bce", metrics=["f1", "roc_auc"]).metrics == ("f1", "roc_auc")


def test_modes_follow_the_scorers():
    assert M.maximize("val_f1") and M.maximize("neg_log_loss") and M.maximize("val_neg_root_mean_squared_error")
    assert not M.maximize("val_loss") and not M.maximize("loss") and M.maximize("val_accuracy")
    assert EarlyStopping(monitor="val_f1_macro").maximize and not EarlyStopping(monitor="val_loss").maximize


def test_fit_logs_epoch_metrics_that_match_sklearn_on_the_predictions():
    r = np.random.default_rng(3)
    X, y = r.normal(size=(150, 5)), r.integers(0, 3, 150)
    Xv, yv = r.normal(size=(61, 5)), r.integers(0, 3, 61)
    t = Trainer(MLP([5, 8, 3], dtype="float64", seed=0), metrics=["accuracy", "f1_macro", "roc_auc_ovr"])
    h = t.fit(X, y, epochs=2, batch_size=16, validation_data=(Xv, yv), verbose=False)
    z = np.asarray(t.predict(Xv))
    assert h["val_f1_macro"][-1] == pytest.approx(sk.f1_score(yv, z.argmax(1), average="macro"), abs=1e-12)
    assert h["val_roc_auc_ovr"][-1] == pytest.approx(sk.roc_auc_score(yv, _softmax(z), multi_class="ovr"),
                                                     abs=1e-12)
    assert h["val_accuracy"][-1] == pytest.approx(sk.accuracy_score(yv, z.argmax(1)), abs=1e-12)
    assert t.evaluate(Xv, yv)["f1_macro"] == h["val_f1_macro"][-1]


def test_early_stopping_on_val_f1():
    r = np.random.default_rng(4)
    X = r.normal(size=(120, 4))
    y = (X[:, 0] > 0).astype(np.float64)[:, None]
    stop = EarlyStopping(monitor="val_f1", patience=1, min_delta=2.0)  # never improves after the first epoch
    t = Trainer(MLP([4, 1], dtype="float64", seed=0), loss="bce", metrics=["f1"])
    h = t.fit(X, y, epochs=10, validation_split=0.25, callbacks=[stop], verbose=False)
    assert stop.maximize and len(h.epoch) == 2 and "val_f1" in h.history
    assert "early stopping: val_f1" in h.stop_reason


def test_cli_metrics_and_monitor_drive_history_and_best(tmp_path, capsys):
    from xpnet.cli import main

    run = tmp_path / "run"
    assert main(["train", "--data", "synthetic", "--hidden", "16", "--epochs", "4", "--val-fraction", "0.2",
                 "--quiet", "--lr", "0.03", "--metrics", "f1_macro,roc_auc_ovr", "--monitor", "val_f1_macro",
                 "--run-dir", str(run)]) == 0
    header = (run / "history.csv").read_text().splitlines()[0]
    assert header == "epoch,loss,f1_macro,roc_auc_ovr,val_loss,val_f1_macro,val_roc_auc_ovr,lr"
    history = json.loads((run / "history.json").read_text())
    best = json.loads((run / "checkpoints" / "best.json").read_text())
    scores = history["val_f1_macro"]
    first_best = scores.index(max(scores))
    assert best["monitor"] == "val_f1_macro" and best["value"] == max(scores) and best["epoch"] == first_best
    assert 'metrics = ["f1_macro", "roc_auc_ovr"]' in (run / "config.toml").read_text()
    assert "test f1_macro" in capsys.readouterr().out


@pytest.mark.parametrize("flags, message", [
    (["--metrics", "f2"], "train.metrics names 'f2', which is unknown"),
    (["--metrics", "f1_macro", "--monitor", "val_accuracy"], "train.monitor = 'val_accuracy' is not reported"),
    (["--monitor", "val_accuracy"], "needs validation data"),
    (["--metrics", "r2"], "'r2' does not apply to a multiclass problem"),
])
def test_cli_refuses_bad_metrics_and_monitors(tmp_path, capsys, flags, message):
    from xpnet.cli import main

    assert main(["train", "--data", "synthetic", "--epochs", "1", "--quiet", "--run-dir", str(tmp_path / "r"),
                 *flags]) != 0
    assert message in capsys.readouterr().err


def test_multilabel_accuracy_is_per_output_as_before(where):
    r = np.random.default_rng(5)
    z, y = r.normal(size=(157, 3)), r.integers(0, 2, size=(157, 3)).astype(np.float64)
    got = _run(["accuracy"], "multilabel", z, y, where)["accuracy"]
    assert got == pytest.approx(np.mean((z > 0) == (y > 0.5)), abs=1e-12)
    with pytest.raises(ValueError, match="'f1_macro' does not apply to a multilabel problem"):
        Trainer(MLP([3, 3]), loss="bce", metrics=["f1_macro"])
