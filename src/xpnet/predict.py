"""A trained model as a predictor on raw data: ``xpnet.load(RUN_DIR).predict(X_raw)``.

:func:`load` reads the weights and the preprocessing record (:mod:`xpnet.io.artifact`) of a run
directory (its final ``model.safetensors``), one of its checkpoints (``checkpoint="best"``,
``"last"`` or a path), a checkpoint directory or a ``model.safetensors`` file; every file is
checked against its SHA-256 first.  The :class:`Predictor` standardises raw inputs as the run
did, checks their feature names (CSV headers, DataFrame columns) or count against the ones the
model was trained on, and maps outputs back to the class labels the data used.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .io import artifact

__all__ = ["Predictor", "load", "read_data"]


class Predictor:
    """A model plus its preprocessing: ``predict``, ``predict_proba`` and ``decision_function``
    take raw features (as in the training data) and return NumPy arrays."""

    def __init__(self, model, preprocessing: dict, source: Path):
        self.model, self.preprocessing, self.source = model, preprocessing, Path(source)
        if model.n_features != preprocessing["n_features"]:
            raise ValueError(f"{source}: the model reads {model.n_features} features but its preprocessing "
                             f"record names {preprocessing['n_features']}; the files do not belong together.")

    @property
    def feature_names(self) -> list:
        return list(self.preprocessing["feature_names"])

    @property
    def classes(self):
        classes = self.preprocessing["classes"]
        return None if classes is None else np.asarray(classes)

    @property
    def loss(self) -> str:
        return self.preprocessing["loss"]

    @property
    def is_classifier(self) -> bool:
        return self.preprocessing["task"] == "classification"

    def features(self, X, columns=None) -> np.ndarray:
        """``X`` as the float64 matrix the model reads, columns in training order; ``columns``
        (or a DataFrame's own) are matched to the training feature names by name."""
        if columns is None and hasattr(X, "columns"):  # a pandas DataFrame
            columns = [str(c) for c in X.columns]
        X = np.asarray(X)
        if X.ndim == 1:
            X = X.reshape(1, -1)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (samples, features), got shape {X.shape}.")
        names = self.feature_names
        if columns is not None:
            columns = list(columns)
            missing = [n for n in names if n not in columns]
            if missing:
                raise ValueError(f"the data lacks feature column(s) {missing[:10]} the model was trained on "
                                 f"(it expects {len(names)}: {names[:10]}{' ...' if len(names) > 10 else ''}).")
            if columns != names:
                X = X[:, [columns.index(n) for n in names]]
        elif X.shape[1] != len(names):
            raise ValueError(f"X has {X.shape[1]} features but the model was trained on {len(names)} "
                             f"({names[:10]}{' ...' if len(names) > 10 else ''}).")
        if X.dtype.kind not in "fiub":
            raise ValueError(f"X must hold numbers, got dtype {X.dtype}.")
        X = X.astype(np.float64)
        if not np.isfinite(X).all():
            raise ValueError("X has missing or infinite values; fill or drop them first.")
        return X

    def decision_function(self, X, columns=None) -> np.ndarray:
        """The network's outputs (logits) for raw ``X``."""
        from .backend import to_host

        Z = artifact.transform(self.preprocessing, self.features(X, columns))
        with self.model.backend.context():
            out = [to_host(self.model.forward(self.model.backend.from_host(Z[a:a + 4096], self.model.dtype)))
                   for a in range(0, Z.shape[0], 4096)]
        return np.concatenate(out, axis=0).astype(np.float64)

    def predict_proba(self, X, columns=None) -> np.ndarray:
        """Class probabilities (softmax for cross-entropy, sigmoid per output for bce), one column per class."""
        if not self.is_classifier:
            raise ValueError(f"predict_proba is for classifiers; this model was trained with --loss {self.loss} "
                             "(regression): use predict.")
        Z = self.decision_function(X, columns)
        if self.loss == "bce":
            return 1.0 / (1.0 + np.exp(-Z))
        Z = Z - Z.max(axis=1, keepdims=True)
        E = np.exp(Z)
        return E / E.sum(axis=1, keepdims=True)

    def predict(self, X, columns=None) -> np.ndarray:
        """Class labels as the training data named them (cross-entropy); 0/1 per output (bce);
        values (mse; 1-D for a single target)."""
        Z = self.decision_function(X, columns)
        if self.loss == "cross_entropy":
            return self.classes[np.argmax(Z, axis=1)]
        if self.loss == "bce":
            P = (Z > 0).astype(np.int64)
            classes = self.classes
            if P.shape[1] == 1 and classes is not None and len(classes) == 2:
                return classes[P[:, 0]]
            return P[:, 0] if P.shape[1] == 1 else P
        return Z[:, 0] if Z.shape[1] == 1 else Z

    def score(self, X, y, columns=None) -> float:
        """Accuracy (classification) or mean squared error (regression) on raw ``X`` and targets ``y``."""
        pred = self.predict(X, columns)
        y = np.asarray(y)
        if self.is_classifier:
            if self.classes is not None and y.dtype.kind not in "UOS" and self.classes.dtype.kind in "UOS":
                y = y.astype(str)
            return float(np.mean(pred.reshape(len(y), -1) == y.reshape(len(y), -1)))
        return float(np.mean((np.asarray(pred, dtype=np.float64).reshape(len(y), -1) - y.reshape(len(y), -1)) ** 2))

    def folded_weights(self) -> list:
        """Host ``[(W, b), ...]`` of an equivalent network on RAW inputs (standardisation folded into layer 1)."""
        return artifact.fold(self.preprocessing, self.model.get_weights())


def _resolve(source: Path, checkpoint) -> Path:
    """The weights file or checkpoint directory ``load(source, checkpoint)`` reads."""
    from .io import checkpoint as ckpt_mod

    if checkpoint is not None:
        if checkpoint in ("best", "last"):
            root = source / "checkpoints"
            if not root.is_dir():
                raise ValueError(f"{source}: has no checkpoints/ folder, so --checkpoint {checkpoint} names "
                                 "nothing; pass a run directory.")
            if checkpoint == "last":
                found = ckpt_mod.latest_intact(root)
                if found is None:
                    raise ValueError(f"{source}: has no intact checkpoint.")
                return found
            try:
                best = json.loads((root / "best.json").read_text())["checkpoint"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{root / 'best.json'} is missing or damaged ({exc}); use --checkpoint last.") \
                    from None
            return root / best
        path = Path(checkpoint)
        return path if path.is_absolute() or path.exists() else source / path
    if source.is_dir() and not (source / ckpt_mod.MANIFEST).exists():
        final = source / "model.safetensors"
        if not final.exists():
            raise ValueError(f"{source} has no final model.safetensors (the run has not finished, or it is no run "
                             "directory): choose a checkpoint with --checkpoint last (or best).")
        return final
    return source


def load(source, checkpoint=None, device=None, require_preprocessing: bool = True) -> Predictor:
    """A :class:`Predictor` from a run directory (its final weights), ``checkpoint="best"`` / ``"last"``
    (of that run) or a checkpoint path; or a checkpoint directory or ``model.safetensors`` file.

    Weights without a preprocessing record (an older xpnet) are refused, unless
    ``require_preprocessing=False``: then inputs are passed to the network as they are."""
    import warnings

    from .io import checkpoint as ckpt_mod

    source = Path(source)
    if not source.exists():
        raise ValueError(f"{source} does not exist: pass a run directory, a checkpoint or a model.safetensors file.")
    path = _resolve(source, checkpoint)
    if path.is_dir():
        ckpt = ckpt_mod.load(path)
        rec = ckpt.trainer_meta.get("preprocessing")
        where = path
    else:
        raw = ckpt_mod.read_weights_metadata(path).get(artifact.WEIGHTS_KEY)
        rec = json.loads(raw) if raw else None
        where = path
    if rec is None and not require_preprocessing:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ckpt_mod.IntegrityWarning)
            model = ckpt_mod.load_model(path, device=device)
        return Predictor(model, _identity_record(model.n_features), path)
    if rec is None:
        raise ValueError(f"{where}: holds no preprocessing record (written by an older xpnet); it cannot be used on "
                         "raw data. Retrain the run with this xpnet.")
    artifact.check(rec, str(where))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ckpt_mod.IntegrityWarning)
        model = ckpt_mod.load_model(path, device=device)  # checks every byte against its SHA-256
    return Predictor(model, rec, path)


def _identity_record(n_features: int) -> dict:
    return {"format": artifact.FORMAT, "feature_names": [f"x{i}" for i in range(n_features)], "n_features": n_features,
            "mean": None, "scale": None, "loss": "mse", "task": "regression", "classes": None, "target": None,
            "split": None}


def read_data(path, predictor: Predictor, target: str | None = None):
    """``(X, y or None, columns)`` from a data file for ``predictor``: a CSV (header; the target
    column, when present, is returned as ``y``), an ``.npz`` (``X``, optionally ``y``) or an ``.npy`` (features)."""
    from . import data

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: {'is a directory' if path.is_dir() else 'does not exist'}; pass a data file.")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        names = predictor.feature_names
        X, y = data.read_csv_features(path, names, target or predictor.preprocessing.get("target"))
        return X, y, names
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            if "X" not in z.files:
                raise ValueError(f"{path}: lacks an array X (it holds {z.files}).")
            return z["X"], (z["y"] if "y" in z.files else None), None
    if suffix == ".npy":
        return np.load(path, mmap_mode="r", allow_pickle=False), None, None
    raise ValueError(f"{path}: unknown kind of data file {suffix!r}; use .csv, .npz or .npy.")
