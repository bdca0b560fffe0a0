"""Weights: ``fit(..., sample_weight=, class_weight=)`` in the loss, its gradient (every kernel
set) and every metric, against PyTorch (``reduction`` with weights) and scikit-learn (the metrics
themselves are checked weighted in test_metrics.py)."""

from __future__ import annotations

import numpy as np
import pytest

import xpnet
from xpnet import optim
from xpnet.backend import resolve_backend
from xpnet.kernels import ReferenceOps
from xpnet.losses import LOSSES
from xpnet.train.metrics import REGISTRY
from xpnet.train.weights import balanced_class_weight, row_weights

torch = pytest.importorskip("torch")
sklearn_metrics = pytest.importorskip("sklearn.metrics")
cpu = pytest.importorskip("xpnet.kernels.cpu")

SHAPES = [(1, 1), (7, 3), (64, 31)]


def _case(loss, shape, seed=0):
    """(logits, targets (labels for cross_entropy), per-row weights with zeros) on the host."""
    r = np.random.default_rng(seed)
    logits = r.normal(0, 3, size=shape)
    if loss == "cross_entropy":
        targets = r.integers(0, shape[1], size=shape[0]).astype(np.int64)
    elif loss == "bce":
        targets = (r.random(shape) > 0.5).astype(np.float64)
    else:
        targets = r.normal(size=shape)
    w = r.uniform(0, 3, size=shape[0])
    w[::3] = 0.0
    if not w.any():
        w[0] = 0.5
    return logits, targets, w


def _torch_weighted(loss, logits, targets, w):
    """Torch's value and gradient: per-element losses (``reduction='none'``), weighted by hand."""
    z = torch.tensor(logits, requires_grad=True)
    t, tw = torch.tensor(targets), torch.tensor(w)
    if loss == "cross_entropy":
        value = (tw * torch.nn.functional.cross_entropy(z, t, reduction="none")).sum() / tw.sum()
    else:
        fn = torch.nn.functional.mse_loss if loss == "mse" else torch.nn.functional.binary_cross_entropy_with_logits
        value = (tw[:, None] * fn(z, t, reduction="none")).sum() / (tw.sum() * logits.shape[1])
    value.backward()
    return value.item(), z.grad.numpy()


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("loss", list(LOSSES))
def test_weighted_loss_and_gradient_match_torch(loss, shape):
    logits, targets, w = _case(loss, shape)
    ops = ReferenceOps(resolve_backend("cpu"), "float64")
    value, grad = ops.loss(LOSSES[loss], logits, targets, w)
    expected, expected_grad = _torch_weighted(loss, logits, targets, w)
    np.testing.assert_allclose(float(value), expected, rtol=1e-12)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-12, atol=1e-15)


def test_class_weights_equal_torch_cross_entropy_weight():
    logits, labels, _ = _case("cross_entropy", (40, 4), seed=1)
    cw = np.array([0.5, 2.0, 1.0, 3.0])
    z = torch.tensor(logits, requires_grad=True)
    ref = torch.nn.CrossEntropyLoss(weight=torch.tensor(cw))(z, torch.tensor(labels))
    ref.backward()
    value, grad = ReferenceOps(resolve_backend("cpu"), "float64").loss(LOSSES["cross_entropy"], logits, labels,
                                                                        cw[labels])
    np.testing.assert_allclose(float(value), ref.item(), rtol=1e-12)
    np.testing.assert_allclose(grad, z.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_all_zero_weights_give_zero_loss_and_gradient():
    logits, labels, _ = _case("cross_entropy", (5, 3))
    for ops in (ReferenceOps(resolve_backend("cpu"), "float64"), cpu.NumbaOps(resolve_backend("cpu"), "float64")):
        value, grad = ops.loss(LOSSES["cross_entropy"], logits, labels, np.zeros(5))
        assert float(value) == 0.0 and not np.any(grad)


def _check_fused(fused, ref, dev, host, loss, shape, dtype, tol):
    logits, targets, w = _case(loss, shape, seed=2)
    forms = [targets, np.eye(shape[1])[targets]] if loss == "cross_entropy" else [targets]
    for t in forms:
        t = t if t.dtype == np.int64 else t.astype(dtype)
        vf, gf = fused.loss(LOSSES[loss], dev(logits.astype(dtype)), dev(t), dev(w.astype(dtype)))
        vr, gr = ref.loss(LOSSES[loss], logits.astype(dtype), t, w.astype(dtype))
        np.testing.assert_allclose(float(host(vf)), float(vr), **tol)
        np.testing.assert_allclose(host(gf), gr, **tol)


TOL = {"float32": dict(rtol=1e-5, atol=1e-7), "float64": dict(rtol=1e-12, atol=1e-15)}


@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("loss", list(LOSSES))
def test_numba_weighted_loss_matches_reference(loss, shape, dtype, parallel):
    backend = resolve_backend("cpu")
    fused = cpu.NumbaOps(backend, dtype, parallel=parallel, parallel_min=0 if parallel else cpu.PARALLEL_MIN)
    _check_fused(fused, ReferenceOps(backend, dtype), np.asarray, np.asarray, loss, shape, dtype, TOL[dtype])


@pytest.mark.parametrize("loss", list(LOSSES))
def test_numba_unweighted_path_is_unchanged(loss):
    """weights=None is the old kernel call: bit-identical to omitting the argument."""
    logits, targets, _ = _case(loss, (9, 4))
    ops = cpu.NumbaOps(resolve_backend("cpu"), "float64")
    v1, g1 = ops.loss(LOSSES[loss], logits, targets)
    g1 = g1.copy()
    v2, g2 = ops.loss(LOSSES[loss], logits, targets, None)
    assert float(v1) == float(v2) and np.array_equal(g1, g2)


@pytest.mark.emulated
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loss", list(LOSSES))
def test_emulated_cuda_weighted_loss_matches_reference(loss, dtype):
    from xpnet.kernels.emulator import Emulator, compiler, emulated_backend

    if compiler() is None:
        pytest.skip("no C++ compiler for the GPU emulator")
    from xpnet.kernels.cuda import CupyOps

    backend = emulated_backend(Emulator())
    for shape in SHAPES:
        _check_fused(CupyOps(backend, dtype), ReferenceOps(resolve_backend("cpu"), dtype), backend.from_host,
                     xpnet.to_host, loss, shape, dtype, TOL[dtype])


# -- class_weight, fit and evaluate -------------------------------------------------------------
def test_balanced_equals_sklearn_compute_class_weight():
    from sklearn.utils.class_weight import compute_class_weight

    y = np.array([0, 0, 0, 1, 2, 2, 4, 4, 4, 4])
    classes = np.unique(y)
    expected = compute_class_weight("balanced", classes=classes, y=y)
    got = balanced_class_weight(y)
    np.testing.assert_allclose([got[int(c)] for c in classes], expected, rtol=1e-15)
    w = row_weights(None, "balanced", y, LOSSES["cross_entropy"], 5)
    np.testing.assert_allclose(w, expected[np.searchsorted(classes, y)], rtol=1e-15)


def _blobs(n=30, features=5, classes=3, seed=0):
    r = np.random.default_rng(seed)
    y = r.integers(0, classes, size=n)
    return r.normal(size=(classes, features))[y] * 2 + r.normal(size=(n, features)), y.astype(np.int64)


MULTICLASS_METRICS = tuple(name for name, spec in REGISTRY.items() if "multiclass" in spec.problems)


def _fit(X, y, kernels="reference", **kwargs):
    model = xpnet.MLP([X.shape[1], 8, 3], dtype="float64", seed=1, kernels=kernels)
    trainer = xpnet.Trainer(model, optimizer=optim.SGD(lr=0.1), metrics=kwargs.pop("metrics", None))
    history = trainer.fit(X, y, epochs=3, batch_size=kwargs.pop("batch_size", len(X)), shuffle=False,
                          verbose=False, **kwargs)
    return xpnet.to_host(model.params).copy(), history, trainer


@pytest.mark.parametrize("data_on_device", [True, False], ids=["resident", "streamed"])
@pytest.mark.parametrize("kernels", ["reference", "auto"])
def test_weighted_fit_equals_fit_on_duplicated_rows(kernels, data_on_device):
    """Integer weights train as the rows repeated, and every epoch metric is the unweighted one on the
    repeated rows (exact over the epoch)."""
    X, y = _blobs()
    counts = np.random.default_rng(3).integers(0, 4, size=len(y))
    counts[0] = 1
    p_w, h_w, _ = _fit(X, y, kernels, sample_weight=counts.astype(float), data_on_device=data_on_device,
                       metrics=MULTICLASS_METRICS)
    p_d, h_d, _ = _fit(np.repeat(X, counts, axis=0), np.repeat(y, counts), kernels, metrics=MULTICLASS_METRICS)
    np.testing.assert_allclose(p_w, p_d, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(h_w.history["loss"], h_d.history["loss"], rtol=1e-11)
    for name in MULTICLASS_METRICS:
        np.testing.assert_allclose(h_w.history[name], h_d.history[name], rtol=1e-11, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("loss", ["bce", "mse"])
def test_weighted_fit_metrics_equal_duplicated_rows_for_binary_and_regression(loss):
    X, y = _blobs(classes=2)
    targets = y[:, None].astype(float) if loss == "bce" else X[:, :2] @ np.array([[1.0, -2.0], [0.5, 3.0]])
    names = tuple(name for name, spec in REGISTRY.items() if ("binary" if loss == "bce" else "regression")
                  in spec.problems)
    counts = np.random.default_rng(4).integers(0, 4, size=len(y))
    counts[0] = 1
    histories = []
    for X_, t_, w_ in ((X, targets, counts.astype(float)), (np.repeat(X, counts, axis=0),
                                                            np.repeat(targets, counts, axis=0), None)):
        model = xpnet.MLP([5, 8, targets.shape[1]], dtype="float64", seed=1)
        trainer = xpnet.Trainer(model, loss=loss, optimizer=optim.SGD(lr=0.05), metrics=names)
        histories.append(trainer.fit(X_, t_, epochs=2, batch_size=len(X_), shuffle=False, verbose=False,
                                     sample_weight=w_).history)
    for name in ("loss", *names):
        np.testing.assert_allclose(histories[0][name], histories[1][name], rtol=1e-11, atol=1e-12, err_msg=name)


def test_class_weight_dict_equals_duplicated_classes():
    X, y = _blobs()
    cw = {0: 2, 1: 1, 2: 3}
    counts = np.array([cw[int(c)] for c in y])
    p_w, _, _ = _fit(X, y, class_weight=cw)
    p_d, _, _ = _fit(np.repeat(X, counts, axis=0), np.repeat(y, counts))
    np.testing.assert_allclose(p_w, p_d, rtol=1e-11, atol=1e-13)


def test_shuffled_weighted_fit_is_the_same_resident_or_streamed():
    X, y = _blobs(n=50)
    w = np.random.default_rng(5).uniform(0, 2, size=50)
    runs = [_fit(X, y, "auto", sample_weight=w, class_weight="balanced", batch_size=8, data_on_device=d,
                 metrics=MULTICLASS_METRICS) for d in (True, False)]
    np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=1e-12, atol=1e-14)
    for name in ("loss", *MULTICLASS_METRICS):  # the weights gathered on the device, or copied per batch
        np.testing.assert_allclose(runs[0][1].history[name], runs[1][1].history[name], rtol=1e-12, err_msg=name)


def test_weighted_evaluate_matches_sklearn():
    X, y = _blobs(n=40)
    _, _, trainer = _fit(X, y, metrics=("accuracy", "f1_macro", "balanced_accuracy", "roc_auc_ovr", "neg_log_loss"))
    w = np.random.default_rng(6).uniform(0, 2, size=40)
    w[::4] = 0.0
    logs = trainer.evaluate(X, y, batch_size=7, sample_weight=w)
    logits = xpnet.to_host(trainer.predict(X))
    proba = np.exp(logits - logits.max(axis=1, keepdims=True))
    proba /= proba.sum(axis=1, keepdims=True)
    pred = logits.argmax(axis=1)
    sk = sklearn_metrics
    assert logs["accuracy"] == pytest.approx(sk.accuracy_score(y, pred, sample_weight=w), rel=1e-12)
    assert logs["loss"] == pytest.approx(sk.log_loss(y, proba, sample_weight=w), rel=1e-10)
    assert logs["neg_log_loss"] == pytest.approx(-logs["loss"], rel=1e-12)
    assert logs["f1_macro"] == pytest.approx(sk.f1_score(y, pred, average="macro", sample_weight=w), rel=1e-12)
    assert logs["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(y, pred, sample_weight=w), rel=1e-12)
    assert logs["roc_auc_ovr"] == pytest.approx(sk.roc_auc_score(y, proba, multi_class="ovr", sample_weight=w),
                                                rel=1e-12)


def test_weighted_bce_accuracy_matches_sklearn():
    X, y = _blobs(n=40, classes=2)
    model = xpnet.MLP([5, 8, 1], dtype="float64", seed=1, kernels="reference")
    trainer = xpnet.Trainer(model, loss="bce", optimizer=optim.SGD(lr=0.1))
    w = np.random.default_rng(7).uniform(0, 2, size=40)
    trainer.fit(X, y.astype(float), epochs=2, batch_size=16, verbose=False, sample_weight=w, class_weight="balanced")
    logs = trainer.evaluate(X, y.astype(float), sample_weight=w)
    pred = (xpnet.to_host(trainer.predict(X))[:, 0] > 0).astype(int)
    assert logs["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(y, pred, sample_weight=w), rel=1e-12)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"sample_weight": np.ones(29)}, "sample_weight has shape"),
    ({"sample_weight": np.ones((30, 1))}, "sample_weight has shape"),
    ({"sample_weight": np.r_[np.nan, np.ones(29)]}, "sample_weight contains NaN"),
    ({"sample_weight": np.r_[-1.0, np.ones(29)]}, "sample_weight contains negative"),
    ({"sample_weight": np.zeros(30)}, "sample_weight is all zero"),
    ({"class_weight": {5: 1.0}}, "class_weight has key 5"),
    ({"class_weight": {0: -1.0}}, "class_weight"),
    ({"class_weight": "balance"}, "class_weight"),
    ({"class_weight": {0: 0, 1: 0, 2: 0}}, "zero for every sample"),
    ({"sample_weight": np.r_[np.ones(24), np.zeros(6)], "validation_split": 0.2},
     "the validation rows of validation_split=0.2 all weigh 0"),
    ({"sample_weight": np.r_[np.zeros(24), np.ones(6)], "validation_split": 0.2},
     "the training rows of validation_split=0.2 all weigh 0"),
])
def test_bad_weights_are_refused_before_anything_changes(kwargs, match):
    X, y = _blobs()
    model = xpnet.MLP([5, 8, 3], dtype="float64", seed=1, kernels="reference")
    trainer = xpnet.Trainer(model, optimizer=optim.SGD(lr=0.1))
    before = xpnet.to_host(model.params).copy()
    with pytest.raises((ValueError, TypeError), match=match):
        trainer.fit(X, y, epochs=1, verbose=False, **kwargs)
    assert np.array_equal(xpnet.to_host(model.params), before) and trainer.step_count == 0


def test_class_weight_refused_for_regression_and_every_metric_takes_weights():
    """class_weight needs classes; sample_weight is taken by every metric (none refuses it any more)."""
    X, y = _blobs()
    reg = xpnet.Trainer(xpnet.MLP([5, 8, 1], dtype="float64", kernels="reference"), loss="mse",
                        metrics=("r2", "neg_mean_absolute_error", "neg_root_mean_squared_error"))
    with pytest.raises(ValueError, match="class_weight is only for classification"):
        reg.fit(X, y.astype(float), verbose=False, class_weight="balanced")
    assert reg.step_count == 0
    w = np.random.default_rng(9).uniform(0, 2, size=30)
    reg.fit(X, y.astype(float), verbose=False, sample_weight=w)
    logs = reg.evaluate(X, y.astype(float), batch_size=7, sample_weight=w)
    z = xpnet.to_host(reg.predict(X))[:, 0]
    assert logs["r2"] == pytest.approx(sklearn_metrics.r2_score(y, z, sample_weight=w), rel=1e-12)
    assert logs["neg_mean_absolute_error"] == pytest.approx(-sklearn_metrics.mean_absolute_error(y, z, sample_weight=w),
                                                            rel=1e-12)
    assert logs["neg_root_mean_squared_error"] == pytest.approx(
        -sklearn_metrics.root_mean_squared_error(y, z, sample_weight=w), rel=1e-12)
    clf = xpnet.Trainer(xpnet.MLP([5, 8, 3], dtype="float64", kernels="reference"), metrics=MULTICLASS_METRICS)
    history = clf.fit(X, y, verbose=False, sample_weight=np.ones(30), class_weight="balanced")
    assert set(MULTICLASS_METRICS) <= set(history.history) and clf.step_count == 1


@pytest.mark.emulated
@pytest.mark.parametrize("data_on_device", [True, False], ids=["resident", "streamed"])
def test_emulated_cuda_weighted_fit_matches_reference(data_on_device):
    from xpnet.kernels.emulator import Emulator, compiler, emulated_backend

    if compiler() is None:
        pytest.skip("no C++ compiler for the GPU emulator")
    X, y = _blobs(n=50)
    w = np.random.default_rng(8).uniform(0, 2, size=50)
    params, logs = [], []
    for device in (emulated_backend(Emulator()), None):
        model = xpnet.MLP([5, 8, 3], dtype="float64", seed=1, device=device,
                          kernels="auto" if device is not None else "reference")
        trainer = xpnet.Trainer(model, optimizer=optim.Adam(lr=0.01), metrics=MULTICLASS_METRICS)
        h = trainer.fit(X, y, epochs=2, batch_size=8, verbose=False, sample_weight=w, class_weight="balanced",
                        validation_split=0.2, data_on_device=data_on_device if device is not None else None)
        params.append(xpnet.to_host(model.params).copy())
        logs.append(h.history)
    np.testing.assert_allclose(params[0], params[1], rtol=1e-9, atol=1e-11)
    for key in logs[1]:
        np.testing.assert_allclose(logs[0][key], logs[1][key], rtol=1e-9, err_msg=key)


def test_weights_with_distributed_training_on_one_rank_train_as_without():
    """(2 and 3 ranks against one process: tests/test_distributed.py.)"""
    from xpnet.distributed import LocalCommunicator

    X, y = _blobs()
    w = np.random.default_rng(5).uniform(0.0, 2.0, 30)
    w[:8] = 0.0  # the first batch weighs 0 (shuffle=False)
    runs = []
    for comm in (None, LocalCommunicator()):
        trainer = xpnet.Trainer(xpnet.MLP([5, 8, 3], dtype="float64", kernels="reference"), optimizer="sgd",
                                distributed=comm)
        history = trainer.fit(X, y, epochs=2, batch_size=8, verbose=False, shuffle=False, sample_weight=w,
                              class_weight="balanced")
        runs.append((trainer.model.params, history.history))
    np.testing.assert_array_equal(runs[1][0], runs[0][0])
    assert runs[1][1] == runs[0][1]
