"""Datasets: the handwritten digits bundled with scikit-learn, and a seeded split/standardiser."""

from __future__ import annotations

import numpy as np

from .validation import check_bool, check_int, check_real


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
    check_real("test_fraction", test_fraction, low=0, high=1, low_open=True, high_open=True)
    rng = np.random.default_rng(check_int("seed", seed, low=0))
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


# -- data sets for `xpnet train` ----------------------------------------------------------------
def synthetic(n_samples=2000, n_features=20, n_classes=4, regression=False, seed=0):
    """Seeded synthetic data: Gaussian class clusters, or a smooth nonlinear regression target."""
    n_samples, n_features = check_int("n_samples", n_samples, low=1), check_int("n_features", n_features, low=1)
    n_classes, regression = check_int("n_classes", n_classes, low=1), check_bool("regression", regression)
    rng = np.random.default_rng(check_int("seed", seed, low=0))
    if regression:
        X = rng.normal(size=(n_samples, n_features))
        w = rng.normal(size=(n_features, n_classes)) / np.sqrt(n_features)
        return X, np.tanh(X @ w) + 0.05 * rng.normal(size=(n_samples, n_classes))
    centers = rng.normal(0, 2.0, size=(n_classes, n_features))
    y = rng.integers(0, n_classes, size=n_samples)
    return centers[y] + rng.normal(size=(n_samples, n_features)), y.astype(np.int64)


def _check_loaded(X, y, where: str, x_name="X", y_name="y"):
    if X.ndim != 2:
        raise ValueError(f"{where}: {x_name} must be 2-D (samples, features), got shape {X.shape}.")
    if y.ndim not in (1, 2):
        raise ValueError(f"{where}: {y_name} must be 1-D or 2-D, got shape {y.shape}.")
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"{where}: {x_name} has {X.shape[0]} rows but {y_name} has {y.shape[0]}.")
    if X.shape[0] == 0:
        raise ValueError(f"{where}: no samples.")
    if X.dtype.kind not in "fiu" or y.dtype.kind not in "fiub":
        raise ValueError(f"{where}: {x_name} and {y_name} must be numeric (got {X.dtype} and {y.dtype}).")
    bad = np.flatnonzero(~np.isfinite(X.astype(np.float64)).all(axis=0))
    if bad.size:
        raise ValueError(f"{where}: {x_name} has missing or infinite values in column(s) {bad[:10].tolist()}.")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ValueError(f"{where}: {y_name} has missing or infinite values.")
    return X.astype(np.float64), y


def load_npz(path):
    """Arrays ``X`` and ``y`` from an ``.npz`` file."""
    path = str(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("X", "y") if k not in data.files]
            if missing:
                raise ValueError(f"{path}: lacks array(s) {missing}; it holds {data.files}. Save with "
                                 "numpy.savez(path, X=features, y=targets).")
            return _check_loaded(data["X"], data["y"], path)
    except (OSError, EOFError, ValueError) as exc:
        if isinstance(exc, ValueError) and str(exc).startswith(path):
            raise
        raise ValueError(f"{path}: cannot be read as .npz ({exc}).") from exc


def load_npy_pair(x_path, y_path):
    """Features and targets from two ``.npy`` files."""
    arrays = []
    for p in (x_path, y_path):
        try:
            arrays.append(np.load(str(p), allow_pickle=False))
        except (OSError, ValueError, EOFError) as exc:
            raise ValueError(f"{p}: cannot be read as .npy ({exc}).") from exc
    return _check_loaded(arrays[0], arrays[1], f"{x_path} + {y_path}", x_name=str(x_path), y_name=str(y_path))


def load_csv(path, target: str):
    """A CSV file with a header row; ``target`` names the target column, the rest are features."""
    import csv

    path = str(path)
    try:
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc}).") from exc
    if len(rows) < 2:
        raise ValueError(f"{path}: needs a header row and at least one data row.")
    header = [h.strip() for h in rows[0]]
    if target not in header:
        raise ValueError(f"{path}: has no target column {target!r}; its columns are {header}.")
    columns = list(zip(*[r for r in rows[1:] if r]))
    if any(len(r) != len(header) for r in rows[1:] if r):
        line = next(i + 2 for i, r in enumerate(rows[1:]) if r and len(r) != len(header))
        raise ValueError(f"{path}: line {line} has a different number of fields than the header.")
    parsed = {}
    for name, values in zip(header, columns):
        if any(v.strip() in ("", "NA", "NaN", "nan", "null") for v in values):
            raise ValueError(f"{path}: column {name!r} has missing values; fill or drop them first.")
        try:
            parsed[name] = np.array([float(v) for v in values])
        except ValueError as exc:
            raise ValueError(f"{path}: column {name!r} is not numeric ({exc}).") from exc
    y = parsed.pop(target)
    if np.all(y == np.round(y)):
        y = y.astype(np.int64)
    X = np.stack(list(parsed.values()), axis=1)
    return _check_loaded(X, y, path)


def split(X, y, test_fraction=0.25, val_fraction=0.0, seed=0, stratify=True):
    """Seeded train / validation / test split (stratified for class labels)."""
    test_fraction = check_real("test_fraction", test_fraction, low=0, high=1, high_open=True)
    val_fraction = check_real("val_fraction", val_fraction, low=0, high=1, high_open=True)
    if test_fraction + val_fraction >= 1:
        raise ValueError(f"test_fraction={test_fraction!r} + val_fraction={val_fraction!r} leaves no training "
                         "samples: make their sum below 1.")
    seed, stratify = check_int("seed", seed, low=0), check_bool("stratify", stratify)
    labels = y if stratify and y.ndim == 1 and y.dtype.kind in "iu" else None
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)] if labels is not None else [np.arange(len(y))]
    parts = {"train": [], "val": [], "test": []}
    for members in groups:
        members = rng.permutation(members)
        n_test = int(round(len(members) * test_fraction))
        n_val = int(round(len(members) * val_fraction))
        parts["test"].append(members[:n_test])
        parts["val"].append(members[n_test:n_test + n_val])
        parts["train"].append(members[n_test + n_val:])
    out = {}
    for name, idx in parts.items():
        idx = np.sort(np.concatenate(idx))
        out[name] = (X[idx], y[idx])
    return out


def load_for_run(data_cfg: dict, regression: bool, seed: int):
    """The data a run configuration names, split and (optionally) standardised on the train split."""
    source = data_cfg["source"]
    if source == "digits":
        X, y = load_digits()
    elif source == "synthetic":
        X, y = synthetic(data_cfg["n_samples"], data_cfg["n_features"], data_cfg["n_classes"], regression, seed)
    elif source == "npz":
        X, y = load_npz(data_cfg["path"])
    elif source == "npy":
        X, y = load_npy_pair(data_cfg["x_path"], data_cfg["y_path"])
    else:
        X, y = load_csv(data_cfg["path"], data_cfg["target"])
    if regression and y.dtype.kind != "f":
        y = y.astype(np.float64)
    if regression and y.ndim == 1:
        y = y[:, None]
    parts = split(X, y, data_cfg["test_fraction"], data_cfg["val_fraction"], seed, stratify=not regression)
    if parts["train"][0].shape[0] == 0:
        raise ValueError(f"data: the split leaves no training samples (test_fraction {data_cfg['test_fraction']}, "
                         f"val_fraction {data_cfg['val_fraction']}).")
    if data_cfg["standardize"]:
        mean = parts["train"][0].mean(axis=0)
        std = parts["train"][0].std(axis=0)
        std[std == 0] = 1.0
        parts = {k: ((Xp - mean) / std, yp) for k, (Xp, yp) in parts.items()}
    return parts
