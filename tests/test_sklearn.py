"""scikit-learn estimators: check_estimator, pipelines, grid search, partial_fit, warm_start, pickling."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
from sklearn.datasets import load_digits, make_regression  # noqa: E402
from sklearn.model_selection import GridSearchCV, train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from xpnet.sklearn import MLPClassifier, MLPRegressor  # noqa: E402


# Checks that cannot apply here are skipped by scikit-learn itself, with the reason in the test
# report: the pandas-input checks (pandas is not a test dependency) and the array-API input
# check (it runs only with SCIPY_ARRAY_API=1; xpnet's estimators convert inputs to NumPy).
@parametrize_with_checks([MLPClassifier(random_state=0), MLPRegressor(random_state=0)])
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


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


def test_string_labels_and_grid_search():
    X, y = load_digits(n_class=3, return_X_y=True)
    labels = np.array(["zero", "one", "two"])[y]
    grid = GridSearchCV(MLPClassifier(max_iter=20, random_state=0), {"hidden_layer_sizes": [(16,), (32,)]}, cv=2)
    grid.fit(X / 16.0, labels)
    assert set(grid.predict(X[:20] / 16.0)) <= set(labels)
    assert grid.best_params_["hidden_layer_sizes"] in [(16,), (32,)]


def test_partial_fit_and_warm_start():
    X, y = load_digits(n_class=4, return_X_y=True)
    X = X / 16.0
    clf = MLPClassifier(hidden_layer_sizes=(32,), learning_rate_init=1e-2, random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(X, y)
    for _ in range(5):
        clf.partial_fit(X, y, classes=[0, 1, 2, 3])
    assert clf.n_iter_ == 5 and clf.score(X, y) > 0.9
    warm = MLPClassifier(hidden_layer_sizes=(32,), max_iter=3, warm_start=True, random_state=0, tol=0)
    warm.fit(X, y)
    first = warm.coefs_[0].copy()
    warm.fit(X, y)  # continues from the current weights
    assert warm.n_iter_ == 6 and not np.allclose(first, warm.coefs_[0])
    cold = MLPClassifier(hidden_layer_sizes=(32,), max_iter=3, random_state=0, tol=0).fit(X, y)
    np.testing.assert_allclose(cold.coefs_[0], first)  # warm_start's first fit equals a cold fit


def test_early_stopping_holds_out_validation():
    X, y = make_regression(n_samples=300, n_features=8, noise=5.0, random_state=0)
    reg = MLPRegressor(hidden_layer_sizes=(32,), early_stopping=True, validation_fraction=0.2, n_iter_no_change=3,
                       max_iter=500, learning_rate_init=1e-2, random_state=0)
    reg.fit(X, y / y.std())
    assert reg.n_iter_ < 500 and len(reg.validation_scores_) == reg.n_iter_
    assert reg.score(X, y / y.std()) > 0.8


def test_pickle_round_trip_keeps_predictions_and_optimizer_state(digits):
    X_train, X_test, y_train, _ = digits
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=5, random_state=0).fit(X_train / 16, y_train)
    clone = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(clone.predict_proba(X_test / 16), clf.predict_proba(X_test / 16))
    clf.partial_fit(X_train / 16, y_train)
    clone.partial_fit(X_train / 16, y_train)  # Adam's moments travelled with the pickle
    np.testing.assert_allclose(clone.coefs_[0], clf.coefs_[0], rtol=1e-12)


def test_bad_parameters_are_reported():
    X, y = load_digits(n_class=2, return_X_y=True)
    # scikit-learn's own parameter validation (its message style), run at the start of fit
    with pytest.raises(ValueError, match="The 'optimizer' parameter of MLPClassifier must be a str among .*'adam'.*"
                                         "Got 'lbfgs' instead"):
        MLPClassifier(optimizer="lbfgs").fit(X, y)
    with pytest.raises(ValueError, match="The 'activation' parameter of MLPClassifier .*Got 'swish' instead"):
        MLPClassifier(activation="swish").fit(X, y)
