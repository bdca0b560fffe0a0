"""Every bad input raises a clear error naming the argument and the fix, before any weight changes."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import blobs

import xpnet


@pytest.fixture
def setup():
    model = xpnet.MLP([6, 8, 3], dtype="float64", seed=0)
    trainer = xpnet.Trainer(model, optimizer=xpnet.optim.Adam(lr=0.01))
    X, y = blobs(n=40)
    before = xpnet.to_host(model.params).copy()
    yield trainer, X, y
    # nothing was touched: weights, optimizer state and step count are as they were
    np.testing.assert_array_equal(xpnet.to_host(model.params), before)
    assert trainer.optimizer.state == {} and trainer.step_count == 0


def _fit(trainer, X, y, **kw):
    return trainer.fit(X, y, epochs=1, batch_size=8, verbose=False, **kw)


def test_wrong_feature_count(setup):
    trainer, X, y = setup
    with pytest.raises(ValueError, match=r"X has 5 features but the model expects 6"):
        _fit(trainer, X[:, :5], y)


def test_length_mismatch(setup):
    trainer, X, y = setup
    with pytest.raises(ValueError, match=r"X and y have different lengths \(40 vs 39\)"):
        _fit(trainer, X, y[:-1])


def test_empty_data(setup):
    trainer, X, y = setup
    with pytest.raises(ValueError, match="X is empty"):
        _fit(trainer, X[:0], y[:0])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_in_features(setup, bad):
    trainer, X, y = setup
    X = X.copy()
    X[3, 2] = bad
    with pytest.raises(ValueError, match="X contains NaN or inf"):
        _fit(trainer, X, y)


def test_nan_in_regression_targets():
    model = xpnet.MLP([6, 4, 1], dtype="float64")
    X, _ = blobs(n=10)
    y = np.ones(10)
    y[4] = np.nan
    with pytest.raises(ValueError, match="y contains NaN or inf"):
        xpnet.Trainer(model, loss="mse").fit(X, y, verbose=False)


def test_labels_out_of_range(setup):
    trainer, X, y = setup
    y = y.copy()
    y[0] = 3
    with pytest.raises(ValueError, match=r"labels in \[0, 3\] but the model has 3 outputs.*\[0, 2\]"):
        _fit(trainer, X, y)


def test_negative_labels(setup):
    trainer, X, y = setup
    with pytest.raises(ValueError, match=r"labels in \[-1, "):
        _fit(trainer, X, y - 1)


def test_labels_not_integers(setup):
    trainer, X, y = setup
    pattern = r"y holds float64 values, but cross_entropy needs integer class labels.*astype\('int64'\)"
    with pytest.raises(TypeError, match=pattern):
        _fit(trainer, X, y.astype(np.float64))


def test_non_float_features(setup):
    trainer, X, y = setup
    with pytest.raises(TypeError, match=r"X has dtype int64, but features must be floating point.*astype\('float32'\)"):
        _fit(trainer, X.astype(np.int64), y)


@pytest.mark.parametrize("loss,targets", [("mse", np.ones((10, 2), dtype=np.int64)),
                                          ("bce", np.arange(10) % 2), ("bce", np.arange(10) % 2 == 1)])
def test_integer_targets_simply_work_for_mse_and_bce(loss, targets):
    """A 0/1 integer (or bool) column is a valid binary target; integers are exact as floats."""
    n_out = 1 if targets.ndim == 1 else targets.shape[1]
    X, _ = blobs(n=10)
    trained = []
    for y in (targets, targets.astype(np.float64)):
        model = xpnet.MLP([6, 4, n_out], dtype="float64")
        xpnet.Trainer(model, loss=loss).fit(X, y, epochs=2, verbose=False)
        trained.append(xpnet.to_host(model.params))
    np.testing.assert_array_equal(*trained)


def test_non_numeric_regression_targets():
    model = xpnet.MLP([6, 4, 2], dtype="float64")
    X, _ = blobs(n=10)
    with pytest.raises(TypeError, match=r"y has dtype <U1, but mse needs numeric targets"):
        xpnet.Trainer(model, loss="mse").fit(X, np.full((10, 2), "a"), verbose=False)


def test_non_float_model_dtype():
    with pytest.raises(TypeError, match=r"dtype='int32' is not a floating dtype: use one of float16, float32, float64"):
        xpnet.MLP([4, 2], dtype="int32")


def test_bce_targets_outside_unit_interval():
    model = xpnet.MLP([6, 4, 1], dtype="float64")
    X, _ = blobs(n=10)
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        xpnet.Trainer(model, loss="bce").fit(X, np.full(10, 2.0), verbose=False)


@pytest.mark.parametrize("make,pattern", [
    (lambda: xpnet.MLP([4, 2], activation="swish"), r"activation='swish' is unknown: use one of identity, relu, "),
    (lambda: xpnet.Trainer(xpnet.MLP([4, 2]), loss="hinge"),
     r"loss='hinge' is unknown: use one of cross_entropy, mse, bce"),
    (lambda: xpnet.Trainer(xpnet.MLP([4, 2]), optimizer="lbfgs"),
     r"optimizer='lbfgs' is unknown: use one of sgd, adagrad, rmsprop, adam, adamw"),
    (lambda: xpnet.MLP([4, 2], init="orthogonal"), r"init='orthogonal' is unknown: use one of he_normal"),
    (lambda: xpnet.Trainer(xpnet.MLP([4, 2]), metrics=["f2"]), r"metrics contains 'f2', which is unknown"),
    (lambda: xpnet.MLP([4]), r"sizes=\[4\] is invalid: give at least two positive integers"),
    (lambda: xpnet.MLP([4, 0, 2]), r"is invalid: give at least two positive integers"),
])
def test_unknown_names_list_the_valid_ones(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


@pytest.mark.parametrize("batch_size", [0, -4, 2.5])
def test_bad_batch_size(setup, batch_size):
    trainer, X, y = setup
    with pytest.raises(ValueError, match=rf"batch_size={batch_size!r} is invalid: use a positive integer"):
        trainer.fit(X, y, batch_size=batch_size, verbose=False)


def test_bad_epochs_and_split(setup):
    trainer, X, y = setup
    with pytest.raises(ValueError, match="epochs=0 is invalid"):
        trainer.fit(X, y, epochs=0, verbose=False)
    with pytest.raises(ValueError, match="validation_split=1.5 is invalid"):
        trainer.fit(X, y, validation_split=1.5, verbose=False)


def test_mixed_namespaces(setup):
    torch = pytest.importorskip("torch")
    trainer, X, y = setup
    with pytest.raises(TypeError, match=r"mixed namespaces \(X from numpy, y from torch\).*same library"):
        _fit(trainer, X, torch.tensor(y))


def test_bad_validation_data_checked_before_training(setup):
    trainer, X, y = setup
    with pytest.raises(ValueError, match=r"validation_data\[0\] has 5 features"):
        _fit(trainer, X, y, validation_data=(X[:, :5], y))


def test_train_step_checks_too(setup):
    trainer, X, y = setup
    with pytest.raises(ValueError, match=r"x has 5 features"):
        trainer.train_step(X[:, :5], y)


def test_set_weights_checks_shapes_first():
    model = xpnet.MLP([4, 3, 2], dtype="float64")
    before = xpnet.to_host(model.params).copy()
    good = model.get_weights()
    bad = [good[0], (np.zeros((3, 3)), np.zeros(2))]
    with pytest.raises(ValueError, match=r"weights\[1\] has shapes W\(3, 3\), b\(2,\); layer 1 needs W\(3, 2\)"):
        model.set_weights(bad)
    np.testing.assert_array_equal(xpnet.to_host(model.params), before)


def _diverging_fit(callbacks=(), gamma=1.0, lr=1e6, epochs=50):
    X, y = blobs(n=64)
    model = xpnet.MLP([6, 32, 3], dtype="float64", seed=0)
    optimizer = xpnet.optim.SGD(lr=lr)
    trainer = xpnet.Trainer(model, optimizer=optimizer, scheduler=xpnet.optim.ExponentialLR(optimizer, gamma=gamma))
    with pytest.warns(RuntimeWarning, match=r"training diverged: the loss became (nan|inf) at step \d+ \(epoch \d+\); "
                                            r"restored the weights from"):
        history = trainer.fit(X, y, epochs=epochs, batch_size=8, verbose=False, callbacks=callbacks)
    return trainer, history, X, y


@pytest.mark.parametrize("callbacks", [(), (xpnet.TerminateOnNaN(check_every=3),)], ids=["every-step", "deferred"])
def test_divergence_restores_weights_that_evaluate_finite(callbacks):
    """The weights kept after a NaN loss are not the ones that produced it (finite but ~1e18):
    they evaluate to a finite loss, and the message names the loss they give."""
    trainer, history, X, y = _diverging_fit(callbacks)
    assert history.diverged and "Lower the learning rate" in history.stop_reason
    assert len(history.epoch) < 50
    loss = trainer.evaluate(X, y)["loss"]
    assert np.isfinite(loss) and f"(training loss {loss:.6g})" in history.stop_reason
    assert np.all(np.abs(xpnet.to_host(trainer.model.params)) < 1e3)


def test_divergence_after_good_epochs_restores_the_best_epoch():
    """An lr that grows 30x per epoch trains well at first, then diverges: the weights of the
    epoch with the lowest training loss come back, with its optimizer state, not the start."""
    trainer, history, X, y = _diverging_fit(gamma=30.0, lr=1e-3)
    best = int(np.argmin(history["loss"])) + 1
    assert f"restored the weights from the end of epoch {best} " in history.stop_reason
    assert trainer.evaluate(X, y)["loss"] < history["loss"][0]
    assert trainer.optimizer.step_count == best * 8  # 64 samples / batch 8


def test_divergence_in_the_first_epoch_restores_the_initial_weights():
    X, y = blobs(n=64)
    model = xpnet.MLP([6, 32, 3], dtype="float64", seed=0)
    initial = xpnet.to_host(model.params).copy()
    trainer = xpnet.Trainer(model, optimizer=xpnet.optim.SGD(lr=1e30))
    with pytest.warns(RuntimeWarning, match="restored the weights from the start of training"):
        history = trainer.fit(X, y, epochs=5, batch_size=8, verbose=False)
    assert history.diverged and history.epoch == []
    np.testing.assert_array_equal(xpnet.to_host(model.params), initial)


@pytest.mark.parametrize("kwargs,pattern", [
    ({"callbacks": [1]}, r"callbacks contains 1, which is not an xpnet.train.Callback"),
    ({"shuffle": "no"}, r"shuffle='no' is invalid: use True or False"),
    ({"data_on_device": "yes"}, r"data_on_device='yes' is invalid"),
    ({"history": 5}, r"history=5 is invalid: pass the History of an earlier fit"),
    ({"validation_split": float("nan")}, r"validation_split=nan is invalid"),
])
def test_fit_options_are_checked_before_training(setup, kwargs, pattern):
    trainer, X, y = setup
    before = xpnet.to_host(trainer.model.params).copy()
    with pytest.raises((TypeError, ValueError), match=pattern):
        trainer.fit(X, y, verbose=False, **kwargs)
    np.testing.assert_array_equal(xpnet.to_host(trainer.model.params), before)


@pytest.mark.parametrize("x", [np.ones(6), np.ones((2, 5)), np.ones((2, 6, 1)), "abc"])
def test_forward_refuses_a_batch_of_the_wrong_shape(x):
    model = xpnet.MLP([6, 4, 3], dtype="float64")
    with pytest.raises(ValueError, match=r"x must be a 2-D batch with 6 features"):
        model.forward(x)


@pytest.mark.parametrize("bad", [3, -1, 2**40, -(2**62)])
def test_train_step_on_host_arrays_refuses_labels_out_of_range(bad):
    """NumPy arrays on the CPU are the model's own device, yet a step still scans them: a label
    out of range once made the Numba loss kernel read out of bounds (a segfault)."""
    X, y = blobs(n=16)
    model = xpnet.MLP([6, 8, 3], dtype="float64")
    trainer = xpnet.Trainer(model)
    before = xpnet.to_host(model.params).copy()
    y = y.copy()
    y[5] = bad
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\]"):
        trainer.train_step(X, y)
    np.testing.assert_array_equal(xpnet.to_host(model.params), before)


def test_train_step_on_host_arrays_refuses_nan_features():
    X, y = blobs(n=16)
    X[3, 2] = np.nan
    model = xpnet.MLP([6, 8, 3], dtype="float64")
    before = xpnet.to_host(model.params).copy()
    with pytest.raises(ValueError, match="x contains NaN or inf"):
        xpnet.Trainer(model).train_step(X, y)
    np.testing.assert_array_equal(xpnet.to_host(model.params), before)


@pytest.mark.parametrize("bad", [3, -1, 2**40])
def test_cpu_loss_kernel_never_reads_outside_its_rows(bad):
    """The fused cross-entropy kernel itself guards each label: no out-of-bounds read even when
    called directly, past every validation."""
    numba_ops = pytest.importorskip("xpnet.kernels.cpu")
    model = xpnet.MLP([6, 8, 3], dtype="float64")
    ops = numba_ops.NumbaOps(model.backend, "float64")
    logits = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"1 label\(s\) outside \[0, 2\]"):
        ops.loss(xpnet.losses.get_loss("cross_entropy"), logits, np.array([0, 1, bad, 2]))
