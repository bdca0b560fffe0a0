"""Datasets: the handwritten digits bundled with scikit-learn, and a seeded split/standardiser."""

from __future__ import annotations

import numpy as np


def load_digits():
    """The 8x8 handwritten digits (1,797 samples, 64 features, 10 classes) shipped with scikit-learn.

    Nothing is downloaded.  Needs the ``examples`` extra: ``pip install 'xpnet[examples]'``.
    """
    try:
        from sklearn.datasets import load_digits as _load
    except ImportError as exc:
        raise RuntimeError("The digits data comes with scikit-learn: pip install 'xpnet[examples]'.") from exc
    data = _load()
    return data.data.astype(np.float64), data.target.astype(np.int64)


def train_test_split(X, y, test_fraction=0.25, seed=0):
    """Seeded split of ``test_fraction`` of the samples, stratified by class label.

    Each class contributes the same fraction to the test set, so a small data set such
    as digits gives a test accuracy that depends little on the seed.
    """
    rng = np.random.default_rng(seed)
    test = []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        test.append(members[: int(round(len(members) * test_fraction))])
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(len(y)), test)
    return X[train], X[test], y[train], y[test]


def standardize(X_train, *others):
    """Scale features to zero mean, unit variance using statistics of ``X_train`` only."""
    mean = X_train.mean(axis=0)
    std = X_train.std(axis=0)
    std[std == 0] = 1.0  # constant features (e.g. always-blank pixels) stay 0
    return tuple((X - mean) / std for X in (X_train, *others))
