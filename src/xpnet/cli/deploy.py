"""``xpnet predict``, ``xpnet export`` and ``xpnet convert``: from a run directory to predictions and files
other tools read.  Errors are ValueErrors, reported in one line by :func:`xpnet.cli.main`."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path

import numpy as np


def _check_out(out: Path, flag: str = "--out") -> None:
    if os.path.lexists(out):  # a dangling symlink too: never written through
        raise ValueError(f"{out} exists; nothing was written. Choose another {flag}.")
    if not out.parent.is_dir():
        raise ValueError(f"{flag} {out}: its folder {out.parent} does not exist; create it first.")


def _write_new(out: Path, write) -> None:
    """``write(tmp_path)`` beside ``out``, then renamed to it: never a partial file, never an overwrite."""
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        if os.path.lexists(out):
            raise ValueError(f"{out} appeared while writing; nothing was overwritten.")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


# -- predict --------------------------------------------------------------------------------------
def cmd_predict(args) -> int:
    from ..predict import load, read_data

    out = Path(args.out) if args.out else None
    if out is not None:
        _check_out(out)
    if args.data is None and args.split is None:
        raise ValueError("give --data FILE (new data), --split train|val|test (the run's own rows), or both.")
    predictor = load(args.source, checkpoint=args.checkpoint)
    if args.data is not None:
        X, y, columns = read_data(args.data, predictor, target=args.target)
    if args.split is not None:
        X, y, columns = _split_rows(Path(args.source), predictor, args.split,
                                    None if args.data is None else (X, y, columns))
    pred = predictor.predict(X, columns)
    proba = predictor.predict_proba(X, columns) if predictor.is_classifier else None
    text = io.StringIO()
    _predictions_csv(text, predictor, pred, proba)
    if out is None:
        sys.stdout.write(text.getvalue())
        report = sys.stderr
    else:
        _write_new(out, lambda tmp: tmp.write_text(text.getvalue(), encoding="utf-8"))
        report = sys.stdout
        print(f"wrote {out}: {len(pred)} predictions from {predictor.source}", file=report)
    if y is not None:
        if predictor.is_classifier:
            print(f"accuracy {predictor.score(X, y, columns):.4f} on {len(pred)} samples with a target", file=report)
        else:
            print(f"mse {predictor.score(X, y, columns):.6g} on {len(pred)} samples with a target", file=report)
    return 0


def _split_rows(run: Path, predictor, name: str, given):
    """The rows of split ``name`` (recorded in ``run/split.npz``) of the given data, or of the data
    the run's config.toml names."""
    from .. import data
    from ..io import artifact
    from . import config as config_mod
    from .rundir import RUN_MARKER

    if not (run / RUN_MARKER).is_file():
        raise ValueError(f"--split needs a run directory; {run} is not one.")
    rows = artifact.read_split(run)[name]
    split = predictor.preprocessing.get("split") or {}
    if given is None:
        cfg = config_mod.load(run / RUN_MARKER)
        changed = [f for f, digest in runs_fingerprint(cfg["data"]).items()
                   if split.get("data_files", {}).get(f, digest) != digest]
        if changed:
            raise ValueError(f"{changed[0]}: its contents changed since the run; its recorded split no longer "
                             "names the same rows.")
        X, y, names, _, _ = data.load_raw(cfg["data"], not predictor.is_classifier, cfg["train"]["seed"])
        given = (X, y, names)
    X, y, columns = given
    if split.get("n_samples") is not None and len(X) != split["n_samples"]:
        raise ValueError(f"--split {name}: the data has {len(X)} rows but the run split {split['n_samples']}; "
                         "pass the file the run was trained on.")
    return X[rows], (None if y is None else np.asarray(y)[rows]), columns


def runs_fingerprint(data_cfg: dict) -> dict:
    from .runs import data_fingerprint

    return data_fingerprint(data_cfg)


def _predictions_csv(fh, predictor, pred, proba) -> None:
    import csv


    writer = csv.writer(fh, lineterminator="\n")
    pred2 = np.asarray(pred).reshape(len(pred), -1)
    names = ["prediction"] if pred2.shape[1] == 1 else [f"prediction_{i}" for i in range(pred2.shape[1])]
    classes = predictor.classes
    if proba is not None:
        labels = classes if classes is not None and len(classes) == proba.shape[1] else range(proba.shape[1])
        names += [f"proba_{c}" for c in labels]
    writer.writerow(names)
    for i in range(len(pred2)):
        row = [v.item() if hasattr(v, "item") else v for v in pred2[i]]
        if proba is not None:
            row += [repr(float(p)) for p in proba[i]]
        writer.writerow(row)


# -- export ---------------------------------------------------------------------------------------
def cmd_export(args) -> int:
    from ..predict import load

    out = Path(args.out)
    _check_out(out)
    suffix = out.suffix.lower()
    if suffix not in (".pt", ".onnx"):
        raise ValueError(f"--out {out}: the extension names the format: .pt (PyTorch state dict) or .onnx.")
    source = Path(args.source)
    if args.checkpoint is None:
        source = weights_of(source)
    if suffix == ".pt":
        try:
            import torch
        except ImportError:
            raise ValueError("export needs PyTorch: pip install torch.") from None
    else:
        from ..io.onnx import need_onnx

        need_onnx()
    predictor = load(source, checkpoint=args.checkpoint, require_preprocessing=False)
    raw = predictor.preprocessing["mean"] is not None
    weights = predictor.folded_weights()
    if suffix == ".pt":
        from ..io.export import state_dict_from_weights

        _write_new(out, lambda tmp: torch.save(state_dict_from_weights(weights), tmp))
        sizes = predictor.model.sizes
        layers = ", ".join(f"Linear({a}, {b})" for a, b in zip(sizes[:-1], sizes[1:]))
        act = predictor.model.activation.name
        print(f"wrote {out}: nn.Sequential state dict of {layers} with {act} between them; load it with "
              f"xpnet.io.export.load_torch({str(out)!r}, activation={act!r})")
    else:
        from ..io.onnx import OPSET, from_predictor

        model = from_predictor(predictor, probabilities=args.probabilities)
        _write_new(out, lambda tmp: tmp.write_bytes(model.SerializeToString()))
        print(f"wrote {out}: ONNX opset {OPSET}, input 'input' (batch, {predictor.model.n_features}), output 'logits'"
              + (" and 'probabilities'" if args.probabilities else ""))
    print("the exported network takes RAW features (the run's standardisation is folded into its first layer)"
          if raw else "the exported network takes the features as given (the run did not standardise them)")
    return 0


def weights_of(source: Path) -> Path:
    """The weights ``xpnet export SOURCE`` reads: a file, a checkpoint, or a run's final weights --
    with a message naming what to pass instead when a run has not finished or is no run at all."""
    from ..io.checkpoint import latest_intact
    from .rundir import RUN_MARKER

    if not source.is_dir() or (source / "model.safetensors").exists() or (source / "manifest.json").exists():
        return source
    if (source / RUN_MARKER).is_file():
        last = latest_intact(source / "checkpoints")
        hint = f"export its newest checkpoint ({last})" if last else "it has no intact checkpoint yet"
        raise ValueError(f"{source} is a run that has not finished (no model.safetensors): {hint}, or finish it "
                         f"with xpnet train --resume {source}.")
    raise ValueError(f"{source} is neither a run directory, a checkpoint nor a weights file: pass RUN_DIR, "
                     "RUN_DIR/checkpoints/epoch-NNNN or a model.safetensors file.")


# -- convert --------------------------------------------------------------------------------------
def cmd_convert(args) -> int:

    from .. import data

    out = Path(args.out)
    suffix = out.suffix.lower()
    if suffix not in (".npz", ".npy"):
        raise ValueError(f"--out {out}: use .npz (arrays X and y in one file) or .npy (X in FILE.npy, y in "
                         "FILE.y.npy).")
    targets = [out] if suffix == ".npz" else [out, out.with_suffix(".y.npy")]
    for t in targets:
        _check_out(t)
    X, y, names = data.load_csv_named(args.data, args.target, dtype=args.dtype)  # pyarrow, where installed
    if suffix == ".npz":
        _write_new(out, lambda tmp: _save(tmp, np.savez, X=X, y=y, feature_names=np.array(names, dtype=str)))
    else:
        _write_new(targets[1], lambda tmp: _save(tmp, np.save, y))
        _write_new(out, lambda tmp: _save(tmp, np.save, X))
    print(f"wrote {' and '.join(map(str, targets))}: X {X.shape} {X.dtype}, y {y.shape} {y.dtype}")
    return 0


def _save(tmp: Path, fn, *args, **kwargs) -> None:
    with open(tmp, "wb") as fh, contextlib.nullcontext():
        fn(fh, *args, **kwargs)
