"""scikit-learn estimators: scikit-learn's own checks, and parity with ``sklearn.neural_network``.

The oracle is scikit-learn itself: with the same parameters and ``random_state`` (float64), xpnet's
estimators must end with scikit-learn's weights, loss curve, iteration count, validation scores,
learning rate and warnings -- for every solver, learning-rate schedule, output kind (binary, multiclass,
multilabel, single- and multi-output regression), with sample weights, early stopping, warm starts and
partial_fit.  Then pipelines, grid search, pickling and xpnet's own parameters.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
from sklearn import neural_network as sk  # noqa: E402
from sklearn.datasets import (  # noqa: E402
    load_digits,
    load_iris,
    make_circles,
    make_moons,
    make_multilabel_classification,
    make_regression,
)
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import MinMaxScaler, StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from xpnet.backend import gpu_available  # noqa: E402
from xpnet.sklearn import MLPClassifier, MLPRegressor  # noqa: E402
from xpnet.sklearn.solvers import SklearnSGD  # noqa: E402


# Checks that cannot apply here are skipped by scikit-learn itself, with the reason in the test
# report: the pandas-input checks (pandas is not a test dependency) and the array-API input
# check (it runs only with SCIPY_ARRAY_API=1; xpnet's estimators convert inputs to NumPy).
@parametrize_with_checks([MLPClassifier(random_state=0, max_iter=100), MLPRegressor(random_state=0, max_iter=100),
                          MLPClassifier(solver="sgd", random_state=0, max_iter=50)])
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


# -- data ----------------------------------------------------------------------------------------
def _digits(n_class=10):
    X, y = load_digits(n_class=n_class, return_X_y=True)
    return X[:400] / 16.0, y[:400]


def _multilabel():
    return make_multilabel_classification(n_samples=240, n_features=10, n_classes=4, random_state=0)


def _regression(n_targets):
    X, y = make_regression(n_samples=240, n_features=8, n_targets=n_targets, noise=1.0, random_state=0)
    return X, y / y.std()


PROBLEMS = {
    "binary": (MLPClassifier, sk.MLPClassifier, lambda: (_digits()[0], _digits()[1] > 4)),
    "multiclass": (MLPClassifier, sk.MLPClassifier, _digits),
    "string-labels": (MLPClassifier, sk.MLPClassifier,
                      lambda: (_digits(3)[0], np.array(["zero", "one", "two"])[_digits(3)[1]])),
    "multilabel": (MLPClassifier, sk.MLPClassifier, _multilabel),
    "regression": (MLPRegressor, sk.MLPRegressor, lambda: _regression(1)),
    "multi-output": (MLPRegressor, sk.MLPRegressor, lambda: _regression(3)),
}

SETTINGS = {
    "adam": dict(solver="adam", learning_rate_init=0.01),
    "sgd-nesterov": dict(solver="sgd", learning_rate_init=0.05),
    "sgd-momentum": dict(solver="sgd", nesterovs_momentum=False, learning_rate_init=0.05, batch_size=64),
    "sgd-plain-alpha": dict(solver="sgd", momentum=0.0, alpha=0.5, learning_rate_init=0.1),
    "sgd-invscaling": dict(solver="sgd", learning_rate="invscaling", learning_rate_init=0.5, power_t=0.3),
    "sgd-adaptive": dict(solver="sgd", learning_rate="adaptive", learning_rate_init=0.2, tol=0.05,
                         n_iter_no_change=1),
    "adam-early-stopping": dict(solver="adam", early_stopping=True, n_iter_no_change=2, tol=0.01,
                                activation="tanh", learning_rate_init=0.01),
    "sgd-logistic-unshuffled": dict(solver="sgd", activation="logistic", shuffle=False, learning_rate_init=0.3),
    "adam-identity-big-batch": dict(solver="adam", activation="identity", batch_size=500),
    "warm-start-early-stopping": dict(solver="adam", warm_start=True, early_stopping=True, n_iter_no_change=1,
                                      max_iter=6),
}

FITTED = ("n_iter_", "t_", "n_layers_", "n_outputs_", "out_activation_", "best_loss_", "best_validation_score_",
          "n_features_in_")


def _fit_both(problem, settings, sample_weight=False, xpnet_only=None, **extra):
    """Both estimators fitted with the same parameters (``xpnet_only``: xpnet's own, e.g. ``device``)."""
    ours_cls, sk_cls, data = PROBLEMS[problem]
    X, y = data()
    w = np.random.default_rng(1).uniform(0.0, 2.0, len(X)) if sample_weight else None
    params = {**dict(hidden_layer_sizes=(12, 6), max_iter=12, random_state=0), **SETTINGS[settings], **extra}
    fitted = []
    for cls in (ours_cls, sk_cls):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            own = (xpnet_only or {}) if cls is ours_cls else {}
            est = cls(**params, **own).fit(X, y, sample_weight=w)
        fitted.append((est, [type(c.message) for c in caught if issubclass(c.category, ConvergenceWarning)]))
    return X, y, fitted


def assert_same_fit(ours, theirs, X, atol=1e-9):
    for name in FITTED:
        a, b = getattr(ours, name), getattr(theirs, name)
        assert (a == b) or (a is not None and np.isclose(a, b, atol=atol, rtol=0)), (name, a, b)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, atol=atol, rtol=0)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, atol=atol, rtol=0)
    if theirs.validation_scores_ is None:
        assert ours.validation_scores_ is None
    else:
        np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_, atol=atol, rtol=0)
    if not hasattr(theirs, "classes_"):
        np.testing.assert_allclose(ours.predict(X), theirs.predict(X), atol=atol, rtol=0)
    else:
        np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
        np.testing.assert_array_equal(ours.classes_, theirs.classes_)
        np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), atol=atol, rtol=0)


# -- parity with scikit-learn ------------------------------------------------------------------------
@pytest.mark.parametrize("settings", SETTINGS)
@pytest.mark.parametrize("problem", PROBLEMS)
def test_trains_to_scikit_learns_weights(problem, settings):
    X, _, [(ours, our_warnings), (theirs, their_warnings)] = _fit_both(problem, settings)
    assert_same_fit(ours, theirs, X)
    assert our_warnings == their_warnings  # ConvergenceWarning exactly when scikit-learn warns


@pytest.mark.parametrize("settings", ["adam", "sgd-adaptive", "adam-early-stopping"])
@pytest.mark.parametrize("problem", ["binary", "multiclass", "multilabel", "multi-output"])
def test_sample_weight_trains_as_scikit_learn(problem, settings):
    X, _, [(ours, _), (theirs, _)] = _fit_both(problem, settings, sample_weight=True)
    assert_same_fit(ours, theirs, X)


def test_adaptive_learning_rate_follows_scikit_learn():
    _, _, [(ours, _), (theirs, _)] = _fit_both("multiclass", "sgd-adaptive", max_iter=30)
    assert theirs._optimizer.learning_rate < 0.2  # the schedule did lower the rate (else this tests nothing)
    assert ours._trainer.optimizer.lr == pytest.approx(theirs._optimizer.learning_rate, rel=1e-12)


def test_momentum_is_rescaled_when_the_learning_rate_changes():
    """scikit-learn's velocity is -lr * xpnet's buffer: a learning-rate change rescales the buffer."""
    opt = SklearnSGD(lr=0.5, momentum=0.9)
    opt.state["momentum_buffer"] = np.array([2.0, -4.0])
    opt.set_lr(0.1)
    np.testing.assert_allclose(opt.state["momentum_buffer"], [10.0, -20.0])
    assert opt.lr == 0.1


@pytest.mark.parametrize("problem", ["multiclass", "multilabel", "regression"])
def test_partial_fit_and_warm_start_train_as_scikit_learn(problem):
    ours_cls, sk_cls, data = PROBLEMS[problem]
    X, y = data()
    w = np.random.default_rng(2).uniform(0.5, 1.5, len(X))
    kwargs = dict(hidden_layer_sizes=(10,), random_state=0, solver="sgd", learning_rate_init=0.05)
    ours, theirs = ours_cls(**kwargs), sk_cls(**kwargs)
    extra = {"classes": np.unique(y) if problem == "multiclass" else np.arange(4)} if problem != "regression" else {}
    for i in range(4):
        part = slice(60 * i, 60 * i + 120)
        ours.partial_fit(X[part], y[part], sample_weight=w[part], **extra)
        theirs.partial_fit(X[part], y[part], sample_weight=w[part], **extra)
    assert ours.n_iter_ == theirs.n_iter_ == 1 and ours.t_ == theirs.t_
    assert_same_fit(ours, theirs, X)
    warm = dict(kwargs, warm_start=True, max_iter=3)
    ours, theirs = ours_cls(**warm), sk_cls(**warm)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(3):  # each fit continues from the weights, with a fresh optimizer
            ours.fit(X, y)
            theirs.fit(X, y)
    assert_same_fit(ours, theirs, X)


def test_float32_input_trains_in_float32_close_to_scikit_learn():
    X, y = _digits()
    kwargs = dict(hidden_layer_sizes=(16,), max_iter=5, random_state=0, solver="sgd", learning_rate_init=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = MLPClassifier(**kwargs).fit(X.astype(np.float32), y)
        theirs = sk.MLPClassifier(**kwargs).fit(X.astype(np.float32), y)
    assert ours.coefs_[0].dtype == np.float32
    for a, b in zip(ours.coefs_, theirs.coefs_, strict=True):
        np.testing.assert_allclose(a, b, atol=2e-5)


def test_verbose_prints_scikit_learns_lines(capsys):
    X, y = _digits(3)
    kwargs = dict(hidden_layer_sizes=(8,), max_iter=30, random_state=0, verbose=True, early_stopping=True,
                  n_iter_no_change=2, tol=0.5)
    MLPClassifier(**kwargs).fit(X, y)
    ours = capsys.readouterr().out
    sk.MLPClassifier(**kwargs).fit(X, y)
    theirs = capsys.readouterr().out
    assert "Stopping." in theirs
    assert [line.split("=")[0] for line in ours.splitlines()] == [line.split("=")[0] for line in theirs.splitlines()]


# -- a scikit-learn example, unchanged but for the estimator -------------------------------------------
# From scikit-learn's example "Compare Stochastic learning strategies for MLPClassifier"
# (examples/neural_networks/plot_mlp_training_curves.py, BSD-3-Clause), without the plotting.
EXAMPLE_PARAMS = [
    {"solver": "sgd", "learning_rate": "constant", "momentum": 0, "learning_rate_init": 0.2},
    {"solver": "sgd", "learning_rate": "constant", "momentum": 0.9, "nesterovs_momentum": False,
     "learning_rate_init": 0.2},
    {"solver": "sgd", "learning_rate": "constant", "momentum": 0.9, "nesterovs_momentum": True,
     "learning_rate_init": 0.2},
    {"solver": "sgd", "learning_rate": "invscaling", "momentum": 0, "learning_rate_init": 0.2},
    {"solver": "sgd", "learning_rate": "invscaling", "momentum": 0.9, "nesterovs_momentum": False,
     "learning_rate_init": 0.2},
    {"solver": "sgd", "learning_rate": "invscaling", "momentum": 0.9, "nesterovs_momentum": True,
     "learning_rate_init": 0.2},
    {"solver": "adam", "learning_rate_init": 0.01},
]


def _example(estimator, X, y, name):
    X = MinMaxScaler().fit_transform(X)
    max_iter = 15 if name == "digits" else 400  # the example's settings (it then plots loss_curve_)
    results = []
    for param in EXAMPLE_PARAMS:
        mlp = estimator(random_state=0, max_iter=max_iter, **param)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=ConvergenceWarning)
            mlp.fit(X, y)
        results.append((mlp.score(X, y), mlp.loss_, mlp.loss_curve_))
    return results


@pytest.mark.parametrize("name", ["iris", "digits", "circles", "moons"])
def test_scikit_learn_example_gives_the_same_scores(name):
    X, y = {"iris": lambda: load_iris(return_X_y=True), "digits": lambda: load_digits(return_X_y=True),
            "circles": lambda: make_circles(noise=0.2, factor=0.5, random_state=1),
            "moons": lambda: make_moons(noise=0.3, random_state=0)}[name]()
    for (score, loss, curve), (sk_score, sk_loss, sk_curve) in zip(_example(MLPClassifier, X, y, name),
                                                                   _example(sk.MLPClassifier, X, y, name)):
        assert len(curve) == len(sk_curve)
        assert score == pytest.approx(sk_score, abs=1.5 / len(y))  # at most one sample decided otherwise
        assert loss == pytest.approx(sk_loss, rel=1e-6)


# -- in scikit-learn's tools -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)


def test_classifier_in_a_pipeline_learns_digits(digits):
    X_train, X_test, y_train, y_test = digits
    clf = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(128,), max_iter=60, random_state=0))
    clf.fit(X_train, y_train)
    assert clf.score(X_test, y_test) > 0.95
    proba = clf.predict_proba(X_test)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    mlp = clf[-1]
    assert mlp.n_iter_ >= 1 and len(mlp.loss_curve_) == mlp.n_iter_ and mlp.loss_curve_[-1] < mlp.loss_curve_[0]


def test_grid_search_with_scikit_learns_parameter_names():
    X, y = load_digits(n_class=3, return_X_y=True)
    labels = np.array(["zero", "one", "two"])[y]
    grid = GridSearchCV(MLPClassifier(max_iter=20, random_state=0),
                        {"hidden_layer_sizes": [(16,), (32,)], "solver": ["adam", "sgd"],
                         "learning_rate": ["constant", "adaptive"]}, cv=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        grid.fit(X / 16.0, labels)
    assert set(grid.predict(X[:20] / 16.0)) <= set(labels)
    assert grid.best_params_["hidden_layer_sizes"] in [(16,), (32,)]
    # the parameters of a scikit-learn MLP carry over unchanged
    params = sk.MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=0).get_params()
    scores = cross_val_score(MLPClassifier(**params), X / 16.0, y, cv=2)
    assert scores.shape == (2,)


def test_pickle_round_trip_keeps_predictions_and_optimizer_state(digits):
    X_train, X_test, y_train, _ = digits
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X_train / 16, y_train)
    clone = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(clone.predict_proba(X_test / 16), clf.predict_proba(X_test / 16))
    clf.partial_fit(X_train / 16, y_train)
    clone.partial_fit(X_train / 16, y_train)  # Adam's moments travelled with the pickle
    np.testing.assert_array_equal(clone.coefs_[0], clf.coefs_[0])
    theirs = sk.MLPClassifier(hidden_layer_sizes=(32,), max_iter=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        theirs.fit(X_train / 16, y_train)
    theirs.partial_fit(X_train / 16, y_train)
    np.testing.assert_allclose(clone.coefs_[0], theirs.coefs_[0], atol=1e-9)


def test_coefs_are_the_models_weights():
    X, y = _digits(3)
    clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0, tol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    before = clf.predict_proba(X)
    clf.intercepts_[-1][:] = [0.0, 0.0, 50.0]  # edited in place (CPU: views of the parameters)
    assert (clf.predict(X) == clf.classes_[2]).all()
    clf.intercepts_[-1] = np.zeros(3)  # a new array replaces the layer's biases at the next predict
    clf.coefs_ = [np.zeros_like(W) for W in clf.coefs_]
    np.testing.assert_allclose(clf.predict_proba(X), 1 / 3)
    assert not np.allclose(before, 1 / 3)
    clf.coefs_ = clf.coefs_[:1]
    with pytest.raises(ValueError, match="weights has 1 layers; this model has 2"):
        clf.predict(X)


# -- xpnet's own parameters ---------------------------------------------------------------------------
def test_xpnet_parameters_dropout_dtype_and_precision(digits):
    X_train, X_test, y_train, y_test = digits
    kwargs = dict(hidden_layer_sizes=(64,), max_iter=15, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        dropped = MLPClassifier(dropout=0.2, **kwargs).fit(X_train / 16, y_train)
        again = MLPClassifier(dropout=0.2, **kwargs).fit(X_train / 16, y_train)
        plain = MLPClassifier(**kwargs).fit(X_train / 16, y_train)
        half = MLPClassifier(precision="fp16", **kwargs).fit(X_train / 16, y_train)
    np.testing.assert_array_equal(dropped.coefs_[0], again.coefs_[0])  # masks from random_state
    assert not np.allclose(dropped.coefs_[0], plain.coefs_[0])
    assert half.coefs_[0].dtype == np.float32
    for est in (dropped, plain, half):
        assert est.score(X_test / 16, y_test) > 0.9


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="needs an NVIDIA GPU (benchmarks/gpu_check.sh runs it)")
@pytest.mark.parametrize("problem", ["multiclass", "multilabel", "multi-output"])
def test_on_a_gpu_trains_to_scikit_learns_weights(problem):
    X, _, [(ours, _), (theirs, _)] = _fit_both(problem, "sgd-invscaling", sample_weight=True, alpha=0.1,
                                               xpnet_only={"device": "cuda"})
    assert ours._trainer.ops.name == "cupy"
    assert_same_fit(ours, theirs, X)


def test_xpnet_solvers_train():
    X, y = _digits(4)
    for solver in ("adamw", "rmsprop", "adagrad"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf = MLPClassifier(hidden_layer_sizes=(32,), solver=solver, learning_rate_init=0.01, max_iter=30,
                                random_state=0).fit(X, y)
        assert clf.score(X, y) > 0.9, solver


# -- bad input ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("params", "message"), [
    (dict(solver="lbfgs"), "solver='lbfgs' is not offered by xpnet"),
    (dict(solver="newton"), "The 'solver' parameter of MLPClassifier must be a str among"),
    (dict(activation="swish"), "The 'activation' parameter of MLPClassifier .*Got 'swish' instead"),
    (dict(momentum=1.5), "The 'momentum' parameter of MLPClassifier must be a float in the range"),
    (dict(hidden_layer_sizes=(8, 0)), "hidden_layer_sizes"),
    (dict(precision="fp8"), "The 'precision' parameter"),
    (dict(dropout=1.0), "dropout"),
    (dict(device="tpu"), "device"),
])
def test_bad_parameters_are_reported_before_training(params, message):
    X, y = load_digits(n_class=2, return_X_y=True)
    clf = MLPClassifier(**params)
    with pytest.raises(ValueError, match=message):
        clf.fit(X, y)
    assert not hasattr(clf, "coefs_")


def test_regressor_and_partial_fit_errors():
    X, y = _regression(1)
    with pytest.raises(ValueError, match="loss='poisson' is not offered"):
        MLPRegressor(loss="poisson").fit(X, y)
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping=True"):
        MLPRegressor(early_stopping=True).partial_fit(X, y)
    with pytest.raises(ValueError, match="classes must be passed on the first call to partial_fit"):
        MLPClassifier().partial_fit(*_digits())
    clf = MLPClassifier(warm_start=True, max_iter=2, hidden_layer_sizes=(4,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(*_digits(3))
    with pytest.raises(ValueError, match="warm_start can only be used where `y` has the same classes"):
        clf.fit(*_digits(4))
    with pytest.raises(ValueError, match="The validation set is too small"):
        MLPRegressor(early_stopping=True, validation_fraction=0.01).fit(X[:20], y[:20])


def test_divergence_is_reported_as_scikit_learn_does():
    """Non-finite losses: training goes on as scikit-learn's does, and the same error (or none) ends it."""
    X, y = _regression(1)
    for scale, solver in ((1e155, "sgd"), (1e160, "adam")):
        kwargs = dict(solver=solver, max_iter=12, random_state=0, hidden_layer_sizes=(8,))
        outcomes = []
        for cls in (MLPRegressor, sk.MLPRegressor):
            est = cls(**kwargs)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    est.fit(X, y * scale)
                    outcomes.append(("ok", est.n_iter_, est.loss_curve_))
                except ValueError as exc:
                    outcomes.append((str(exc).split(".")[0], est.n_iter_, est.loss_curve_))
        assert outcomes[0][:2] == outcomes[1][:2], (scale, solver, outcomes)
        np.testing.assert_allclose(outcomes[0][2], outcomes[1][2], rtol=1e-9)


def test_an_estimator_pickled_by_an_older_xpnet_still_predicts():
    """Before scikit-learn's names: ``optimizer=``, a LabelEncoder and one softmax output per class
    (also for two classes), torch's Adam state.  Predictions stay; the optimizer state is dropped."""
    X, y = _digits(2)
    rng = np.random.default_rng(0)
    coefs, intercepts = [rng.normal(size=(64, 5)), rng.normal(size=(5, 2))], [rng.normal(size=5), rng.normal(size=2)]
    from sklearn.preprocessing import LabelEncoder

    old = dict(hidden_layer_sizes=(5,), activation="relu", optimizer="adam", alpha=1e-4, batch_size="auto",
               learning_rate_init=1e-3, max_iter=200, shuffle=True, random_state=0, tol=1e-4, verbose=False,
               warm_start=False, early_stopping=False, validation_fraction=0.1, n_iter_no_change=10, device="cpu",
               dtype="float64", n_features_in_=64, _encoder=LabelEncoder().fit(y), classes_=np.array([0, 1]),
               coefs_=coefs, intercepts_=intercepts, loss_curve_=[0.5], n_iter_=1, t_=400,
               _training_state=({}, {"optimizer": {"type": "Adam"}}))
    clf = MLPClassifier.__new__(MLPClassifier)
    with pytest.warns(UserWarning, match="optimizer state is dropped"):
        clf.__setstate__(old)
    logits = np.maximum(X @ coefs[0] + intercepts[0], 0) @ coefs[1] + intercepts[1]
    np.testing.assert_array_equal(clf.predict(X), np.argmax(logits, axis=1))
    assert clf.predict_proba(X).shape == (len(X), 2) and clf.get_params()["solver"] == "adam"
    clf.partial_fit(X, y)  # trains on, with a fresh optimizer


def test_docstring_example_runs():
    import doctest

    from xpnet.sklearn import estimators

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = doctest.testmod(estimators)
    assert result.attempted >= 4 and result.failed == 0


def test_saturated_outputs_report_scikit_learns_clipped_loss():
    """Unscaled inputs saturate the outputs: the loss is then scikit-learn's, with probabilities clipped to
    [eps, 1 - eps], so the stopping decisions (and weights) are the same."""
    X = np.random.RandomState(0).rand(50, 4) * 1000
    y = (X[:, 0] > 500).astype(int)
    kwargs = dict(hidden_layer_sizes=(5,), max_iter=50, random_state=0, solver="sgd", learning_rate_init=1e-5)
    for target in (y, y % 3 + (X[:, 1] > 500), np.c_[y, 1 - y, X[:, 2] > 500]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            ours, theirs = MLPClassifier(**kwargs).fit(X, target), sk.MLPClassifier(**kwargs).fit(X, target)
        assert ours.n_iter_ == theirs.n_iter_
        np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-9)
        np.testing.assert_allclose(ours.coefs_[0], theirs.coefs_[0], atol=1e-9)


def test_warm_start_refits_keep_scikit_learns_weights():
    X, y = _digits()
    kwargs = dict(hidden_layer_sizes=(12,), random_state=0, warm_start=True, early_stopping=True, max_iter=4,
                  n_iter_no_change=1, tol=0.5)
    ours, theirs = MLPClassifier(**kwargs), sk.MLPClassifier(**kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(3):  # later fits do not beat the first one's best score: scikit-learn keeps the last weights
            ours.fit(X, y)
            theirs.fit(X, y)
            assert_same_fit(ours, theirs, X)


def test_set_params_after_fit_changes_the_network_as_scikit_learns():
    X, y = _regression(1)
    kwargs = dict(hidden_layer_sizes=(8,), max_iter=3, random_state=0, warm_start=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours, theirs = MLPRegressor(**kwargs).fit(X, y), sk.MLPRegressor(**kwargs).fit(X, y)
        ours.set_params(activation="tanh")
        theirs.set_params(activation="tanh")
        np.testing.assert_allclose(ours.predict(X), theirs.predict(X), atol=1e-9)  # the same weights, tanh now
        ours.fit(X, y)
        theirs.fit(X, y)
        assert_same_fit(ours, theirs, X)
        ours.set_params(dtype="float32", dropout=0.5)  # xpnet's own: the model is rebuilt with them
        ours.fit(X, y)
    assert ours.coefs_[0].dtype == np.float32 and ours._model.dropout == (0.5,)


def test_partial_fit_precision_change_keeps_the_optimizer_state():
    X, y = _digits(3)
    clf = MLPClassifier(hidden_layer_sizes=(8,), random_state=0, dtype="float32")
    clf.partial_fit(X, y, classes=[0, 1, 2])
    steps = clf._trainer.optimizer.step_count
    clf.set_params(precision="bf16")
    clf.partial_fit(X, y)
    assert clf._trainer.precision == "bf16" and clf._trainer.optimizer.step_count == 2 * steps
    with pytest.raises(ValueError, match="precision='fp16' trains float32 master weights"):
        MLPClassifier(precision="fp16", dtype="float64").partial_fit(X, y, classes=[0, 1, 2])


def test_fp16_that_skips_every_update_warns():
    X, y = _regression(1)
    reg = MLPRegressor(random_state=0, dtype="float32", precision="fp16", max_iter=3)
    with pytest.warns(RuntimeWarning, match="every update of epoch 1 was skipped"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            reg.fit(X * 1e5, y)


def test_a_refit_refused_for_xpnets_parameters_changes_nothing():
    X, y = _digits(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=2, random_state=0).fit(X, y)
    before, state = clf.predict_proba(X), dict(clf.__dict__)
    clf.set_params(dropout=[0.1, 0.2])  # two rates for one hidden layer
    with pytest.raises(ValueError, match="dropout"):
        clf.fit(X, np.array(list("wxyz"))[y])
    assert clf.__dict__.keys() == state.keys() and clf.classes_ is state["classes_"]
    clf.set_params(dropout=0.0)
    np.testing.assert_array_equal(clf.predict_proba(X), before)


def test_refused_precision_or_parameters_change_nothing():
    X, y = _digits(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0).fit(X, y)
    before, n_iter = clf.predict_proba(X), clf.n_iter_
    clf.set_params(precision="fp16", dtype="float64")
    with pytest.raises(ValueError, match="precision='fp16' trains float32 master weights: set dtype='float32'"):
        clf.fit(X, y)
    clf.set_params(precision="fp32")
    assert clf.n_iter_ == n_iter
    np.testing.assert_array_equal(clf.predict_proba(X), before)
    fresh = MLPClassifier(alpha=-1.0)
    with pytest.raises(ValueError, match="'alpha' parameter"):
        fresh.partial_fit(X, y, classes=[0, 1, 2])
    assert not hasattr(fresh, "classes_")  # validated before anything is set, as scikit-learn's


def test_classes_errors_as_scikit_learns():
    X, y = _digits(3)
    Y = np.eye(3)[y].astype(int)
    for cls in (MLPClassifier, sk.MLPClassifier):
        warm = cls(warm_start=True, hidden_layer_sizes=(4,), random_state=0)
        warm.partial_fit(X, y, classes=[0, 1, 2])
        with pytest.raises(ValueError, match="warm_start can only be used where `y` has the same classes"):
            warm.partial_fit(X[y < 2], y[y < 2])
        with pytest.raises(ValueError, match="`y` has classes not in `self.classes_`"):
            cls(hidden_layer_sizes=(4,)).partial_fit(X, Y, classes=[0, 1])


def test_outputs_keep_float32_and_refuse_strings():
    X, y = _digits(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=2, random_state=0).fit(X.astype(np.float32), y)
    assert clf.predict_proba(X.astype(np.float32)).dtype == np.float32
    with pytest.raises(ValueError, match="dtype='numeric' is not compatible"):
        clf.predict(X.astype(str))


def test_the_speed_benchmark_script_runs():
    """benchmarks/sklearn_speed.py (docs/sklearn.md's table) on tiny data: it runs and both fits agree."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "sklearn_speed.py"
    out = subprocess.run([sys.executable, str(script), "--repeats", "1", "--smoke"], capture_output=True, text=True,
                         timeout=300, check=True).stdout
    rows = [line for line in out.splitlines() if line.startswith("| ") and "x |" in line]
    assert len(rows) == 3
    assert all(float(row.rstrip(" |").rsplit("|", 1)[1]) < 1e-9 for row in rows)  # same weights
