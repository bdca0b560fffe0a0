"""What a trained model needs besides its weights to take a user's raw data: the preprocessing record.

A run stores one record (format ``xpnet-preprocessing-1``, JSON)::

    {"format": "xpnet-preprocessing-1",
     "feature_names": [...],          # the input columns, in the order the network reads them
     "n_features": 64,
     "mean": [...] | null,            # standardisation: x' = (x - mean) / scale, per feature
     "scale": [...] | null,           #   (null: the network reads the raw values)
     "loss": "cross_entropy",         # cross_entropy / bce (classification) or mse (regression)
     "task": "classification",
     "classes": ["cat", "dog"] | [0, 1, ...] | null,   # class of each output (cross_entropy)
     "target": "label" | null,        # the CSV target column
     "split": {"algorithm", "seed", "test_fraction", "val_fraction", "stratified", "n_samples",
               "data_files"}}         # how the train / val / test rows were drawn (indices in split.npz)

It is kept in three places, each covered by an integrity check:

* every checkpoint: in ``trainer.safetensors``' metadata (key ``preprocessing``), under the
  checkpoint manifest's SHA-256;
* the final ``model.safetensors``: in its metadata (key ``xpnet_preprocessing``), under the
  file's own SHA-256;
* ``RUN_DIR/preprocessing.json`` (written atomically; a readable copy) and ``RUN_DIR/split.npz``
  (the ``train`` / ``val`` / ``test`` row indices).
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any, cast

import numpy as np

from .._typing import HostArray

Record = dict[str, Any]  # a preprocessing record (JSON values)
Weights = list[tuple[HostArray, HostArray]]

FORMAT = "xpnet-preprocessing-1"
WEIGHTS_KEY = "xpnet_preprocessing"  # the entry in a weights file's safetensors metadata
FILE = "preprocessing.json"
SPLIT_FILE = "split.npz"


def record(info: dict[str, Any], data_files: dict[str, str] | None = None) -> Record:
    """The preprocessing record of a run from :func:`xpnet.data.prepare_run_data`'s ``info``."""
    from ..losses import get_loss

    split = {k: v for k, v in info["split"].items() if k != "indices"}
    split["data_files"] = dict(data_files or {})
    return {"format": FORMAT, "feature_names": list(info["feature_names"]), "n_features": len(info["feature_names"]),
            "mean": info["mean"], "scale": info["scale"], "loss": info["loss"],
            "task": "classification" if get_loss(info["loss"]).classification else "regression",
            "classes": info["classes"], "target": info["target"], "split": split}


def check(rec: Any, where: str) -> Record:
    """``rec`` if it is a well-formed record, else a ValueError naming ``where``."""
    problem: str | None = None
    if not isinstance(rec, dict) or rec.get("format") != FORMAT:
        problem = f"is not an {FORMAT} record"
    else:
        n = rec.get("n_features")
        names = rec.get("feature_names")
        if not (isinstance(n, int) and isinstance(names, list) and len(names) == n):
            problem = "has feature names that do not match its feature count"
        for key in ("mean", "scale"):
            v = rec.get(key)
            if v is not None and not (isinstance(v, list) and len(v) == n
                                      and all(isinstance(x, (int, float)) and math.isfinite(x) for x in v)):
                problem = f"has an invalid {key!r} (it needs {n} finite numbers, or null)"
        if (rec.get("mean") is None) != (rec.get("scale") is None):
            problem = "has only one of mean and scale"
        if rec.get("scale") is not None and any(x == 0 for x in rec["scale"]):
            problem = "has a zero scale"
        if rec.get("loss") not in ("cross_entropy", "bce", "mse"):
            problem = f"has an unknown loss {rec.get('loss')!r}"
    if problem:
        raise ValueError(f"{where}: its preprocessing record {problem}; it was not written by this xpnet or "
                         "was edited. Use the run's checkpoints, or retrain.")
    return cast(Record, rec)


def to_json(rec: Record) -> str:
    return json.dumps(rec, indent=2, allow_nan=False)


def write(run_dir: Path, rec: Record, indices: dict[str, HostArray] | None = None) -> None:
    """``preprocessing.json`` and (with ``indices``) ``split.npz`` in ``run_dir``, each atomically."""
    from .checkpoint import write_atomic

    write_atomic(Path(run_dir) / FILE, to_json(rec).encode())
    if indices is not None:
        buf = io.BytesIO()
        arrays: dict[str, Any] = {k: np.asarray(v, dtype=np.int64) for k, v in indices.items()}
        np.savez(buf, **arrays)
        write_atomic(Path(run_dir) / SPLIT_FILE, buf.getvalue())


def read_split(run_dir: Path) -> dict[str, HostArray]:
    """The ``train`` / ``val`` / ``test`` row indices a run recorded."""
    path = Path(run_dir) / SPLIT_FILE
    if not path.is_file():
        raise ValueError(f"{run_dir}: has no {SPLIT_FILE} (a run from an older xpnet); rerun it to record its split.")
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def transform(rec: Record, X: Any) -> HostArray:
    """Raw features -> what the network reads (float64): standardised with the record's statistics."""
    X64: HostArray = np.asarray(X, dtype=np.float64)
    if rec["mean"] is None:
        return X64
    out: HostArray = (X64 - np.asarray(rec["mean"], dtype=np.float64)) / np.asarray(rec["scale"], dtype=np.float64)
    return out


def fold(rec: Record, weights: Weights) -> Weights:
    """The weights with the standardisation folded into the first layer, so the network takes RAW inputs:
    ``W1' = W1 / s[:, None]``, ``b1' = b1 - (m / s) @ W1`` (computed in float64, returned in the weights' dtype)."""
    if rec["mean"] is None:
        return [(np.array(W), np.array(b)) for W, b in weights]
    m, s = np.asarray(rec["mean"], dtype=np.float64), np.asarray(rec["scale"], dtype=np.float64)
    (W1, b1), rest = weights[0], weights[1:]
    dtype = W1.dtype
    W64 = np.asarray(W1, dtype=np.float64)
    folded = ((W64 / s[:, None]).astype(dtype), (np.asarray(b1, dtype=np.float64) - (m / s) @ W64).astype(dtype))
    return [folded, *((np.array(W), np.array(b)) for W, b in rest)]
