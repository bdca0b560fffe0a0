"""Epoch metrics (xpnet.train.metrics) against sklearn.metrics, on every namespace, unweighted and
with ``sample_weight``; EarlyStopping and the CLI on them."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from xpnet import MLP, Trainer
from xpnet.train import EarlyStopping
from xpnet.train import metrics as M

sk = pytest.importorskip("sklearn.metrics")

BATCH = 40  # 157 rows: batches 0, 40, 80, 120, 157 (uneven last batch)


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _start(names, problem, where):
    backend = MLP([2, 2], dtype="float64", **where).backend
    return backend, [m.start(backend.xp, backend.device, backend.xp.float64) for m in M.build(names, problem)]


def _feed(backend, metrics, logits, y, w=None, first=0):
    """Batches of ``BATCH`` rows from row ``first``, weighted by ``w`` (host) when given, as the trainer's
    ``_tally`` does (the batch's weights on the device, their sum from the host)."""
    n = y.shape[0]
    for a in range(first, n, BATCH):
        b = min(a + BATCH, n)
        zb, yb = backend.from_host(logits[a:b]), backend.from_host(y[a:b])
        wb = None if w is None else backend.from_host(w[a:b])
        for m in metrics:
            if w is None:
                m.update(zb, yb)
            else:
                m.update_weighted(zb, yb, wb, float(w[a:b].sum()))


def _run(names, problem, logits, y, where, w=None):
    """Each metric fed batch by batch on ``where``'s namespace (weighted by ``w``); ``{name: result}``."""
    backend, metrics = _start(names, problem, where)
    _feed(backend, metrics, logits, y, w)
    return {m.name: m.result() for m in metrics}


def _check(got, expected):
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-12, nan_ok=True), name


WEIGHTS = ("fractional", "zeros", "integers", "absent")


def _weights(kind, labels, seed=7):
    """Sample weights: non-integer; with zeros (every third row, and the whole first batch); small
    integers (zeros included); or non-integer with the largest class weighing nothing."""
    r = np.random.default_rng(seed)
    n = labels.shape[0]
    if kind == "integers":
        return r.integers(0, 4, n).astype(np.float64)
    w = r.uniform(0.1, 2.5, n)
    if kind == "zeros":
        w[::3] = 0.0
        w[:BATCH] = 0.0
    elif kind == "absent":
        w[labels == labels.max()] = 0.0
    return w


def _ovr_expected(labels, p, w):
    """roc_auc_score(multi_class="ovr", average="macro", sample_weight=w); a class of no weight (no
    positives) has no AUC and is left out of the average, as a class without samples is (where
    scikit-learn's average would be NaN)."""
    classes = list(range(p.shape[1]))
    weight = np.ones(labels.shape[0]) if w is None else w
    if all(weight[labels == c].sum() > 0 for c in classes):
        return sk.roc_auc_score(labels, p, multi_class="ovr", labels=classes, sample_weight=w)
    return np.mean([sk.roc_auc_score(labels == c, p[:, c], sample_weight=w) for c in classes
                    if weight[labels == c].sum() > 0])


def _classification_expected(z, labels, n_classes, w=None):
    p = _softmax(z)
    classes = list(range(n_classes))
    pred = z.argmax(axis=1)
    with warnings.catch_warnings():  # a class of no weight: scikit-learn warns, and leaves it out
        warnings.simplefilter("ignore")
        out = {"accuracy": sk.accuracy_score(labels, pred, sample_weight=w),
               "top_k_accuracy": sk.top_k_accuracy_score(labels, z, k=2, labels=classes, sample_weight=w),
               "balanced_accuracy": sk.balanced_accuracy_score(labels, pred, sample_weight=w),
               "neg_log_loss": -sk.log_loss(labels, p, labels=classes, sample_weight=w),
               "roc_auc_ovr": _ovr_expected(labels, p, w)}
        for score in ("precision", "recall", "f1"):
            fn = getattr(sk, f"{score}_score")
            for average in ("macro", "micro", "weighted"):
                out[f"{score}_{average}"] = fn(labels, pred, average=average, labels=classes, zero_division=0,
                                               sample_weight=w)
    return out


def test_multiclass_metrics_match_sklearn(where):
    r = np.random.default_rng(0)
    z, labels = r.normal(size=(157, 4)), r.integers(0, 4, 157)
    expected = _classification_expected(z, labels, 4)
    got = _run(list(expected), "multiclass", z, labels, where)
    _check(got, expected)
    one_hot = np.eye(4)[labels]  # one-hot targets give the same values
    assert _run(["f1_macro", "roc_auc_ovr"], "multiclass", z, one_hot, where)["f1_macro"] == got["f1_macro"]


@pytest.mark.parametrize("kind", WEIGHTS)
def test_weighted_multiclass_metrics_match_sklearn(where, kind):
    r = np.random.default_rng(0)
    z, labels = r.normal(size=(157, 4)), r.integers(0, 4, 157)
    w = _weights(kind, labels)
    expected = _classification_expected(z, labels, 4, w)
    _check(_run(list(expected), "multiclass", z, labels, where, w), expected)
    one_hot = np.eye(4)[labels]  # one-hot targets give the same values
    assert _run(list(expected), "multiclass", z, one_hot, where, w) == _run(list(expected), "multiclass", z,
                                                                            labels, where, w)


def _binary_expected(score, labels, w=None):
    pred = (score > 0).astype(int)
    with warnings.catch_warnings():  # the positive class of no weight: no AUC (NaN), precision 0
        warnings.simplefilter("ignore")
        out = {"accuracy": sk.accuracy_score(labels, pred, sample_weight=w),
               "roc_auc": sk.roc_auc_score(labels, score, sample_weight=w),
               "balanced_accuracy": sk.balanced_accuracy_score(labels, pred, sample_weight=w),
               "neg_log_loss": -sk.log_loss(labels, _sigmoid(score), sample_weight=w),
               "top_k_accuracy": sk.top_k_accuracy_score(labels, score, k=2, sample_weight=w)}  # 1: two classes
        for score_name in ("precision", "recall", "f1"):
            fn = getattr(sk, f"{score_name}_score")
            out[score_name] = fn(labels, pred, zero_division=0, sample_weight=w)
            for average in ("macro", "micro", "weighted"):
                out[f"{score_name}_{average}"] = fn(labels, pred, average=average, zero_division=0, sample_weight=w)
    return out


def _binary_run(names, loss, z2, labels, where, w=None):
    if loss == "bce":  # one output column (the score), float 0/1 targets
        score = z2[:, 1] - z2[:, 0]
        return _run(names, "binary", score[:, None], labels[:, None].astype(np.float64), where, w)
    return _run(names, "binary", z2, labels, where, w)


@pytest.mark.parametrize("loss", ["bce", "cross_entropy"])
def test_binary_metrics_match_sklearn(where, loss):
    r = np.random.default_rng(1)
    z2, labels = r.normal(size=(157, 2)), r.integers(0, 2, 157)
    expected = _binary_expected(z2[:, 1] - z2[:, 0], labels)
    _check(_binary_run(list(expected), loss, z2, labels, where), expected)


@pytest.mark.parametrize("kind", WEIGHTS)
@pytest.mark.parametrize("loss", ["bce", "cross_entropy"])
def test_weighted_binary_metrics_match_sklearn(where, loss, kind):
    r = np.random.default_rng(1)
    z2, labels = r.normal(size=(157, 2)), r.integers(0, 2, 157)
    w = _weights(kind, labels)
    expected = _binary_expected(z2[:, 1] - z2[:, 0], labels, w)
    if kind == "absent":  # the positive class weighs nothing: no AUC, on both sides
        assert np.isnan(expected["roc_auc"])
    _check(_binary_run(list(expected), loss, z2, labels, where, w), expected)


def _regression_data():
    r = np.random.default_rng(2)
    y = r.normal(loc=[100.0, -3.0], scale=[0.5, 2.0], size=(157, 2))  # a large mean: R^2 stays exact
    return y + r.normal(scale=0.3, size=y.shape), y


def _regression_expected(z, y, w=None):
    return {"r2": sk.r2_score(y, z, sample_weight=w),
            "neg_mean_absolute_error": -sk.mean_absolute_error(y, z, sample_weight=w),
            "neg_mean_squared_error": -sk.mean_squared_error(y, z, sample_weight=w),
            "neg_root_mean_squared_error": -sk.root_mean_squared_error(y, z, sample_weight=w)}


def test_regression_metrics_match_sklearn(where):
    z, y = _regression_data()
    expected = _regression_expected(z, y)
    _check(_run(list(expected), "regression", z, y, where), expected)


@pytest.mark.parametrize("kind", ["fractional", "zeros", "integers"])
def test_weighted_regression_metrics_match_sklearn(where, kind):
    z, y = _regression_data()
    w = _weights(kind, y[:, 0])
    expected = _regression_expected(z, y, w)
    _check(_run(list(expected), "regression", z, y, where, w), expected)


def test_every_metric_takes_weights_and_is_checked_weighted():
    """A new metric must implement update_weighted, and be checked weighted above."""
    for name, spec in M.REGISTRY.items():
        metric = spec.build(spec.problems[0])
        assert type(metric).update_weighted is not M.Metric.update_weighted, name
    z, labels = np.random.default_rng(0).normal(size=(6, 3)), np.arange(6) % 3
    checked = {*_classification_expected(z, labels, 3), *_binary_expected(z[:, 0], labels % 2),
               *_regression_expected(z, z)}
    assert checked == set(M.REGISTRY)


def test_auc_ties_and_missing_classes():
    s = np.array([0.1, 0.4, 0.4, 0.4, 0.9, 0.9])
    pos = np.array([0, 1, 0, 1, 1, 0], dtype=bool)
    assert M.rank_auc(s, pos) == pytest.approx(sk.roc_auc_score(pos, s), abs=1e-15)
    assert np.isnan(M.rank_auc(s, np.zeros(6, dtype=bool)))
    w = np.array([0.5, 2.0, 0.0, 1.5, 0.25, 3.0])  # ties, a zero weight
    assert M.rank_auc(s, pos, w) == pytest.approx(sk.roc_auc_score(pos, s, sample_weight=w), abs=1e-15)
    assert np.isnan(M.rank_auc(s, pos, np.where(pos, 0.0, 1.0)))  # positives of no weight: no AUC


@pytest.mark.parametrize("loss", ["bce", "cross_entropy"])
def test_weighted_auc_with_tied_scores_matches_sklearn(where, loss):
    """Tied scores (within and across classes) count as scikit-learn's ROC curve counts them, weighted."""
    r = np.random.default_rng(8)
    score, labels = r.integers(-3, 4, 157) * 0.5, r.integers(0, 2, 157)  # 7 distinct scores
    z2 = np.stack([np.zeros(157), score], axis=1)
    for w in (None, _weights("zeros", labels), _weights("integers", labels)):
        got = _binary_run(["roc_auc"], loss, z2, labels, where, w)["roc_auc"]
        assert got == pytest.approx(sk.roc_auc_score(labels, score, sample_weight=w), abs=1e-12)


def test_weighted_ovr_auc_with_tied_scores_matches_sklearn(where):
    r = np.random.default_rng(9)
    z, labels = r.normal(size=(6, 4))[r.integers(0, 6, 157)], r.integers(0, 4, 157)  # 6 distinct rows: ties
    for w in (None, _weights("fractional", labels), _weights("absent", labels)):
        got = _run(["roc_auc_ovr"], "multiclass", z, labels, where, w)["roc_auc_ovr"]
        assert got == pytest.approx(_ovr_expected(labels, _softmax(z), w), abs=1e-12)


def _problem_data(problem):
    """(logits, targets, labels) of a problem: multiclass, binary (bce) or regression."""
    r = np.random.default_rng(10)
    if problem == "regression":
        z, y = _regression_data()
        return z, y, y[:, 0]
    labels = r.integers(0, 4 if problem == "multiclass" else 2, 157)
    if problem == "multiclass":
        return r.normal(size=(157, 4)), labels, labels
    return r.normal(size=(157, 1)), labels[:, None].astype(np.float64), labels


@pytest.mark.parametrize("problem", ["multiclass", "binary", "regression"])
def test_integer_weights_equal_the_rows_duplicated(where, problem):
    """A row of weight k counts as the row k times (0: as no row), in every metric, over an epoch."""
    z, y, labels = _problem_data(problem)
    counts = _weights("integers", labels)
    names = [name for name, spec in M.REGISTRY.items() if problem in spec.problems]
    weighted = _run(names, problem, z, y, where, counts)
    reps = counts.astype(np.int64)
    duplicated = _run(names, problem, np.repeat(z, reps, axis=0), np.repeat(y, reps, axis=0), where)
    _check(weighted, duplicated)


@pytest.mark.parametrize("problem", ["multiclass", "binary", "regression"])
def test_weighted_state_is_saved_and_continued_mid_epoch(where, problem):
    """Weighted states (sums of weights, kept weights, a float total) survive state() / load_state()."""
    z, y, labels = _problem_data(problem)
    w = _weights("zeros", labels)
    names = [name for name, spec in M.REGISTRY.items() if problem in spec.problems]
    backend, metrics = _start(names, problem, where)
    _feed(backend, metrics, z[:2 * BATCH], y[:2 * BATCH], w[:2 * BATCH])
    saved = [m.state() for m in metrics]
    _, fresh = _start(names, problem, where)
    for m, (meta, arrays) in zip(fresh, saved):
        m.load_state(meta, arrays, backend.from_host)
    _feed(backend, fresh, z, y, w, first=2 * BATCH)
    assert {m.name: m.result() for m in fresh} == pytest.approx(_run(names, problem, z, y, where, w), abs=1e-15,
                                                                 nan_ok=True)


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


class _TwoRanks:
    """The communicator of one of two ranks, in process: ``allgather_obj`` hands back the states sent
    (this rank's first) and those of the other rank, given beforehand (None: only its own)."""

    size = 2

    def __init__(self, theirs=None):
        self.theirs, self.sent = theirs, None

    def allgather_obj(self, obj):
        self.sent = obj
        return [obj] if self.theirs is None else [obj, self.theirs]


@pytest.mark.parametrize("problem", ["multiclass", "binary", "regression"])
@pytest.mark.parametrize("kind", [None, "zeros"])
def test_metric_states_merged_over_ranks_equal_one_process(where, problem, kind):
    """xpnet.distributed.metrics merges two ranks' states (weighted ones too: sums of weights, kept AUC
    weights, weight totals) into the states of one process that saw every row."""
    from xpnet.distributed.metrics import reduce_metrics

    z, y, labels = _problem_data(problem)
    w = None if kind is None else _weights(kind, labels)
    names = [name for name, spec in M.REGISTRY.items() if problem in spec.problems]
    ranks = [_start(names, problem, where) for _ in range(2)]
    for (backend, metrics), rows in zip(ranks, (slice(0, 2 * BATCH), slice(2 * BATCH, None))):
        _feed(backend, metrics, z[rows], y[rows], None if w is None else w[rows])
    other = _TwoRanks()
    reduce_metrics(other, ranks[1][1])
    reduce_metrics(_TwoRanks(other.sent), ranks[0][1])
    _check({m.name: m.result() for m in ranks[0][1]}, _run(names, problem, z, y, where, w))
