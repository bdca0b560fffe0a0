"""Datasets: the handwritten digits bundled with scikit-learn, and a seeded split/standardiser."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
from numpy.typing import ArrayLike

from ._typing import HostArray
from .validation import check_bool, check_int, check_real


def load_digits() -> tuple[HostArray, HostArray]:
    """The 8x8 handwritten digits (1,797 samples, 64 features, 10 classes) shipped with scikit-learn.

    Nothing is downloaded.  Needs the ``examples`` extra: ``pip install 'xpnet[examples]'``.
    """
    try:
        from sklearn.datasets import load_digits as _load
    except ImportError as exc:
        raise RuntimeError("The digits data comes with scikit-learn: pip install 'xpnet[examples]'.") from exc
    data = _load()
    return data.data.astype(np.float64), data.target.astype(np.int64)


def train_test_split(X: HostArray, y: HostArray, test_fraction: float = 0.25,
                     seed: int = 0) -> tuple[HostArray, HostArray, HostArray, HostArray]:
    """Seeded split of ``test_fraction`` of the samples, stratified by class label.

    Each class contributes the same fraction to the test set, so a small data set such
    as digits gives a test accuracy that depends little on the seed.
    """
    check_real("test_fraction", test_fraction, low=0, high=1, low_open=True, high_open=True)
    parts = split(X, y, test_fraction=test_fraction, seed=seed)
    return parts["train"][0], parts["test"][0], parts["train"][1], parts["test"][1]


def standardize_stats(X_train: HostArray) -> tuple[HostArray, HostArray]:
    """``(mean, scale)`` of each feature of ``X_train``; a constant feature gets scale 1 (it stays 0)."""
    mean = X_train.mean(axis=0)
    std = X_train.std(axis=0)
    std[std == 0] = 1.0  # constant features (e.g. always-blank pixels) stay 0
    return mean, std


def standardize(X_train: HostArray, *others: HostArray) -> tuple[HostArray, ...]:
    """Scale features to zero mean, unit variance using statistics of ``X_train`` only."""
    mean, std = standardize_stats(X_train)
    return tuple((X - mean) / std for X in (X_train, *others))


# -- data sets for `xpnet train` ----------------------------------------------------------------
def synthetic(n_samples: int = 2000, n_features: int = 20, n_classes: int = 4, regression: bool = False,
              seed: int = 0) -> tuple[HostArray, HostArray]:
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


# -- loading data files: every problem is a ValueError naming the file, what is wrong and the fix ----
MAX_CLASSES = 100_000  # an output layer wider than this is a mistake (IDs, not class indices), not a model
MISSING = {"", "na", "n/a", "nan", "null", "none"}
_EXACT_INT = 2.0 ** 53  # float64 holds every integer up to here exactly


def _chunks(X: HostArray, index: HostArray | None, chunk_bytes: int) -> Iterator[HostArray]:
    """Row blocks of ``X`` (of its rows ``index``, in order, where given) of about ``chunk_bytes`` as float64."""
    n = X.shape[0] if index is None else len(index)
    step = max(1, chunk_bytes // (8 * max(1, X.shape[1])))
    for a in range(0, n, step):
        yield np.asarray(X[a:a + step] if index is None else X[index[a:a + step]], dtype=np.float64)


def column_stats(X: HostArray, index: HostArray | None = None,
                 chunk_bytes: int = 4 << 20) -> tuple[HostArray, HostArray, HostArray]:
    """``(finite, mean, std)`` per column of ``X`` (or of its rows ``index``), float64 statistics
    computed a few MiB of rows at a time: a memory-mapped or float32 array is scanned in chunks,
    never copied or upcast whole."""
    n, d = (X.shape[0] if index is None else len(index)), X.shape[1]
    finite = np.ones(d, dtype=bool)
    total = np.zeros(d)
    with np.errstate(over="ignore", invalid="ignore"):
        for chunk in _chunks(X, index, chunk_bytes):
            finite &= np.isfinite(chunk).all(axis=0)
            total += chunk.sum(axis=0)
        mean = total / n
        squares = np.zeros(d)
        for chunk in _chunks(X, index, chunk_bytes):
            squares += ((chunk - mean) ** 2).sum(axis=0)
        std = np.sqrt(squares / n)
    return finite, mean, std


def scratch_copy(X: HostArray, index: HostArray, mean: HostArray | None = None, scale: HostArray | None = None,
                 dtype: Any = None, chunk_bytes: int = 16 << 20) -> HostArray:
    """Rows ``index`` of ``X``, standardised with ``mean`` / ``scale`` where given, written in chunks
    to an unlinked temporary ``.npy`` and returned memory-mapped: a part of a memory-mapped data set
    that streams batch by batch without ever being in memory whole (the disk space is freed when
    the array goes)."""
    import os
    import tempfile

    dtype = np.dtype(dtype or X.dtype)
    fd, name = tempfile.mkstemp(prefix="xpnet-part-", suffix=".npy")
    os.close(fd)
    try:
        out = np.lib.format.open_memmap(name, mode="w+", dtype=dtype, shape=(len(index), X.shape[1]))
    finally:
        os.unlink(name)  # the mapping stays valid; the file goes with it
    a = 0
    for chunk in _chunks(X, index, chunk_bytes):
        if mean is not None:
            chunk = (chunk - mean) / scale
        out[a:a + len(chunk)] = chunk
        a += len(chunk)
    return out


def _check_loaded(X: HostArray, y: HostArray, where: str, x_name: str = "X", y_name: str = "y",
                  columns: list[str] | None = None, dtype: Any = np.float64) -> tuple[HostArray, HostArray]:
    """Features as float64 and targets as loaded, after checking shapes, dtypes and values.

    ``columns`` names the feature columns in messages (CSV headers); otherwise they are numbered.
    """
    if X.ndim != 2:
        fix = " For one feature, reshape it with X.reshape(-1, 1)." if X.ndim == 1 else (
            " Flatten each sample with X.reshape(len(X), -1)." if X.ndim > 2 else "")
        raise ValueError(f"{where}: {x_name} must be 2-D (samples, features), got shape {X.shape}.{fix}")
    if y.ndim not in (1, 2):
        raise ValueError(f"{where}: {y_name} must be 1-D (one target per sample) or 2-D (samples, targets), "
                         f"got shape {y.shape}.")
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"{where}: {x_name} has {X.shape[0]} rows but {y_name} has {y.shape[0]}; "
                         "they need one row per sample each.")
    if X.shape[0] == 0 or X.shape[1] == 0 or y.size == 0:
        raise ValueError(f"{where}: no data ({x_name} has shape {X.shape}, {y_name} {y.shape}); "
                         "it needs at least one sample, one feature and one target.")
    for name, arr in ((x_name, X), (y_name, y)):
        if arr.dtype.kind not in "fiub" and not (arr is y and arr.dtype.kind == "U"):  # class names are fine
            raise ValueError(f"{where}: {name} must be real numbers (int, float or bool), got dtype {arr.dtype}; "
                             "convert it before saving, e.g. arr.astype(float)"
                             + (" (complex values: store real and imaginary parts as two columns)."
                                if arr.dtype.kind == "c" else "."))
    if dtype is None:  # keep float32 / float64 (e.g. a memory-mapped file: never upcast whole)
        dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.float64
    if X.dtype != dtype:
        X = X.astype(dtype)
    names = columns if columns is not None else list(range(X.shape[1]))
    finite, mean, std = column_stats(X)
    _check_columns(where, x_name, names, ~finite, "has missing or infinite values", "fill or drop them first")
    scale = np.isfinite(mean) & np.isfinite(std)  # what standardising computes must stay finite
    _check_columns(where, x_name, names, ~scale, "has values too large to standardise (their mean or standard "
                   "deviation overflows float64)", "rescale them, e.g. divide by a power of ten")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ValueError(f"{where}: {y_name} has missing or infinite values; fill or drop those samples first.")
    return X, y


def _check_columns(where: str, x_name: str, names: list[str] | list[int], bad: ArrayLike, problem: str,
                   fix: str) -> None:
    bad = np.flatnonzero(bad)
    if bad.size:
        shown = [names[i] for i in bad[:10]]
        raise ValueError(f"{where}: {x_name} {problem} in column(s) {shown}; {fix}.")


def check_class_labels(y: HostArray, where: str) -> int:
    """The number of classes in class labels ``y`` (``max + 1``), after refusing labels that cannot be.

    Labels must be integers (integer-valued floats are fine) from 0, and the number of classes
    at most ``MAX_CLASSES`` (100,000) and at most ``max(1000, 10 * len(y))`` -- a larger maximum
    means the labels are IDs rather than class indices, and sizing the output layer from them would
    allocate a huge, mostly unused model.
    """
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.size == 0 or y.dtype.kind not in "fiub":
        raise ValueError(f"{where}: class labels must be a non-empty 1-D array of integers, got shape {y.shape} "
                         f"and dtype {y.dtype}.")
    if y.dtype.kind == "f" and not (np.isfinite(y).all() and np.all(y == np.round(y))):
        raise ValueError(f"{where}: class labels must be whole numbers 0, 1, 2, ...; these have fractions or "
                         "missing values. For continuous targets use --loss mse (or --loss bce for "
                         "probabilities in [0, 1]); otherwise encode each class as an integer.")
    low, high = float(y.min()), float(y.max())
    if low < 0:
        raise ValueError(f"{where}: class labels must be 0, 1, 2, ...; found {low:g}. Encode classes as 0..K-1, "
                         "e.g. with numpy.unique(y, return_inverse=True)[1].")
    limit = min(MAX_CLASSES, max(1000, 10 * y.size))
    if high + 1 > limit:
        raise ValueError(f"{where}: the largest class label is {high:g}, which would make {high + 1:.0f} output "
                         f"classes for {y.size} samples (at most {limit} are allowed). Labels must be class "
                         "indices 0..K-1, not IDs: re-encode them, e.g. with numpy.unique(y, return_inverse=True)[1].")
    return int(high) + 1


def targets_for_loss(y: Any, loss_name: str, where: str) -> HostArray:
    """``y`` converted to what loss ``loss_name`` trains on, or a ValueError saying what to change.

    * ``cross_entropy``: 1-D (or one-column) class labels -> int64 labels, checked by
      :func:`check_class_labels`; a 2-D array with several columns is one-hot / probabilities
      -> float64, each value in [0, 1];
    * ``bce``: 0/1 labels or probabilities in [0, 1] (int, bool or float) -> float64, 1-D becomes one column;
    * ``mse``: any finite numbers -> float64, 1-D becomes one column.
    """
    from .losses import get_loss

    loss = get_loss(loss_name)
    y = np.asarray(y)
    if y.dtype.kind not in "fiub":
        raise ValueError(f"{where}: targets must be numbers, got dtype {y.dtype}.")
    if loss.integer_labels and (y.ndim == 1 or y.shape[1] == 1):
        check_class_labels(y, where)
        return cast(HostArray, y.reshape(-1).astype(np.int64))
    y = y.astype(np.float64)
    if loss.classification and not np.all((y >= 0) & (y <= 1)):
        suggestion = ("class labels 0..K-1 with --loss cross_entropy, or --loss mse for continuous targets"
                      if loss.name == "bce" else "--loss mse for continuous targets")
        raise ValueError(f"{where}: --loss {loss.name} needs targets in [0, 1] (0/1 labels or probabilities); "
                         f"found values from {y.min():g} to {y.max():g}. Use {suggestion}.")
    return cast(HostArray, y[:, None] if y.ndim == 1 else y)


def _open_check(path: str, kind: str) -> None:
    import os

    if not os.path.exists(path):
        raise ValueError(f"{path}: does not exist; check the path of the {kind} file.")
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a directory; pass the {kind} file inside it.")


def _magic(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(6)


NPY_MAGIC, ZIP_MAGIC = b"\x93NUMPY", b"PK"


def load_npz(path: str) -> tuple[HostArray, HostArray]:
    """Arrays ``X`` and ``y`` from an ``.npz`` file."""
    path = str(path)
    _open_check(path, ".npz")
    try:
        magic = _magic(path)
        if not magic.startswith(ZIP_MAGIC):
            hint = (" It is a single .npy array: use a pair of .npy files (--data npy --x-path/--y-path)."
                    if magic == NPY_MAGIC else "")
            raise ValueError(f"{path}: is not an .npz archive (no zip header).{hint} Save one with "
                             "numpy.savez(path, X=features, y=targets).")
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("X", "y") if k not in data.files]
            if missing:
                raise ValueError(f"{path}: lacks array(s) {missing}; it holds {data.files}. Save with "
                                 "numpy.savez(path, X=features, y=targets).")
            X, y = _npz_member(data, "X", path), _npz_member(data, "y", path)
    except ValueError as exc:
        if str(exc).startswith(path):
            raise
        raise ValueError(f"{path}: cannot be read as .npz ({exc}); re-save it with numpy.savez.") from exc
    except Exception as exc:
        raise ValueError(f"{path}: cannot be read as .npz ({type(exc).__name__}: {exc}); the file is damaged or "
                         "not written by numpy.savez: re-save it.") from exc
    return _check_loaded(X, y, path)


def _npz_member(data: Any, name: str, path: str) -> HostArray:
    try:
        return cast(HostArray, data[name])  # an NpzFile member
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise ValueError(f"{path}: array {name!r} holds Python objects, which are not loaded (pickles can run "
                             f"code); save it as a numeric array, e.g. {name}.astype(float).") from exc
        raise


def _load_npy(path: str, mmap: bool = False) -> HostArray:
    _open_check(path, ".npy")
    try:
        magic = _magic(path)
        if magic != NPY_MAGIC:
            hint = (" It is an .npz archive: use --data npz --data-path." if magic.startswith(ZIP_MAGIC) else "")
            raise ValueError(f"{path}: is not a .npy file (wrong magic bytes {magic!r}).{hint} "
                             "Save one with numpy.save(path, array).")
        # memory-mapped first: a header that promises more data than the file holds fails here, unallocated
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
        return mapped if mmap and mapped.dtype.kind == "f" and mapped.ndim == 2 else np.array(mapped)
    except ValueError as exc:
        if str(exc).startswith(path):
            raise
        if "allow_pickle" in str(exc) or "Python objects" in str(exc):  # numpy's words for a pickled array
            raise ValueError(f"{path}: holds Python objects, which are not loaded (pickles can run code); save a "
                             "numeric array, e.g. numpy.save(path, array.astype(float)).") from exc
        raise ValueError(f"{path}: cannot be read as .npy ({exc}); the file is truncated or damaged: re-save it "
                         "with numpy.save.") from exc
    except Exception as exc:
        raise ValueError(f"{path}: cannot be read as .npy ({type(exc).__name__}: {exc}); the file is truncated or "
                         "damaged: re-save it with numpy.save.") from exc


def load_npy_pair(x_path: str, y_path: str, mmap: bool = False) -> tuple[HostArray, HostArray]:
    """Features and targets from two ``.npy`` files.  ``mmap``: float features stay memory-mapped
    (read-only, in their own float32 / float64 dtype), checked in chunks, never loaded whole."""
    X, y = _load_npy(str(x_path), mmap), _load_npy(str(y_path))
    return _check_loaded(X, y, f"{x_path} + {y_path}", x_name=str(x_path), y_name=str(y_path),
                         dtype=None if isinstance(X, np.memmap) else np.float64)


def _read_text(path: str) -> str:
    """A CSV file's text: UTF-8 (a byte-order mark is dropped) or UTF-16 with a byte-order mark."""
    _open_check(path, "CSV")
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc}).") from exc
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: starts like UTF-16 but is not valid UTF-16 ({exc}); save it as UTF-8.") from exc
    if b"\0" in raw:
        raise ValueError(f"{path}: is not a text CSV file (it contains NUL bytes: binary data, or UTF-16 without a "
                         "byte-order mark); export the data as UTF-8 CSV.")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ValueError(f"{path}: is not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}); re-save it as "
                         "UTF-8, e.g. iconv -f LATIN1 -t UTF-8 in.csv > out.csv for a Latin-1/Windows file.") from exc


def _csv_rows(text: str, path: str) -> list[tuple[int, list[str]]]:
    """``[(line number, fields), ...]`` of the non-blank rows, header first.

    The delimiter is a comma; a header line with no comma selects ';' or a tab if it has one
    (as spreadsheets in some locales write)."""
    import csv

    first = next((line for line in text.splitlines() if line.strip()), "")
    delimiter = next((d for d in ",;\t" if d in first), ",")
    reader = csv.reader(text.splitlines(), delimiter=delimiter)
    try:
        rows = [(reader.line_num, r) for r in reader if any(f.strip() for f in r)]
    except csv.Error as exc:
        raise ValueError(f"{path}: is not valid CSV (line {reader.line_num}: {exc}).") from exc
    if not rows:
        raise ValueError(f"{path}: is empty; it needs a header row and at least one data row.")
    return rows


def _csv_header(fields: list[str], target: str, path: str) -> tuple[list[str], str]:
    header = [h.strip() for h in fields]
    if not target:
        raise ValueError(f"{path}: no target column given; name it with --target (columns: {header}).")
    target = target.strip()
    unnamed = [i + 1 for i, h in enumerate(header) if not h]
    if unnamed:
        raise ValueError(f"{path}: column(s) {unnamed} of the header have no name; give every column a name.")
    dupes = sorted(h for h, n in collections.Counter(header).items() if n > 1)  # linear: 100k columns are fine
    if dupes:
        which = "the target column" if target in dupes else "column(s)"
        raise ValueError(f"{path}: {which} {dupes} appear more than once in the header; rename or drop the copies.")
    if target not in header:
        raise ValueError(f"{path}: has no target column {target!r}; its columns are {header}.")
    if len(header) < 2:
        raise ValueError(f"{path}: has only the target column {target!r}; it needs at least one feature column.")
    return header, target


def _csv_number(value: str, name: str, line: int, path: str) -> float:
    v = value.strip()
    if v.lower() in MISSING:
        raise ValueError(f"{path}: column {name!r} has missing values (line {line}); fill or drop them first.")
    try:
        x = float(v)
    except ValueError:
        hint = " (decimal commas? write 1.5, not 1,5)" if "," in v else ""
        raise ValueError(f"{path}: column {name!r} is not numeric: line {line} has {value!r}{hint}; "
                         "encode it as numbers or drop the column.") from None
    if not np.isfinite(x):
        raise ValueError(f"{path}: column {name!r} has an infinite or out-of-range value {value!r} on line {line} "
                         "(float64 holds magnitudes up to about 1.8e308); rescale or drop it.")
    return x


def _csv_target(cells: list[tuple[int, str]], name: str, path: str) -> HostArray:
    """The target column: numbers (integer-valued ones as int64 labels), or, when any value is not
    a number, class names as strings (missing values are refused either way)."""
    for line, v in cells:
        if v.strip().lower() in MISSING:
            raise ValueError(f"{path}: column {name!r} has missing values (line {line}); fill or drop them first.")
    try:
        y = np.array([float(v) for _, v in cells])
    except ValueError:
        return np.array([v.strip() for _, v in cells], dtype=str)
    if not np.isfinite(y).all():
        line = cells[int(np.flatnonzero(~np.isfinite(y))[0])][0]
        raise ValueError(f"{path}: column {name!r} has an infinite or out-of-range value on line {line}; "
                         "rescale or drop it.")
    if np.all(y == np.round(y)) and np.all(np.abs(y) < _EXACT_INT):
        y = y.astype(np.int64)
    return y


CSV_ENGINES = ("auto", "pyarrow", "python")


def _arrow_layout(path: str, target: str) -> tuple[str, list[str], str] | None:
    """``(delimiter, header, target)`` of a CSV the fast reader can take, or None (the careful reader
    then reads it): no BOM / UTF-16 / NUL bytes, a clean UTF-8 header with unique, trimmed names."""
    import csv

    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    if head.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")) or b"\0" in head or not head.strip():
        return None
    try:
        first = head.split(b"\n", 1)[0].decode("utf-8").rstrip("\r")
    except UnicodeDecodeError:
        return None
    delimiter = next((d for d in ",;\t" if d in first), ",")
    header = next(csv.reader([first], delimiter=delimiter))
    target = (target or "").strip()
    if (not first.strip() or any(h != h.strip() or not h for h in header) or len(set(header)) != len(header)
            or target not in header or len(header) < 2):
        return None
    return delimiter, header, target


def _arrow_targets(cells: HostArray) -> HostArray | None:
    """The target column's cells as numbers (int64 when all whole) or class names; None if any is missing."""
    cells = cells.astype(str)
    if np.isin(np.char.lower(np.char.strip(cells)), list(MISSING)).any():
        return None
    try:
        y: HostArray = cells.astype(np.float64)
    except ValueError:
        return cast(HostArray, np.char.strip(cells))
    if not np.isfinite(y).all():
        return None
    if np.all(y == np.round(y)) and np.all(np.abs(y) < _EXACT_INT):
        y = y.astype(np.int64)
    return y


def _load_csv_arrow(path: str, target: str, dtype: Any) -> tuple[HostArray, HostArray, list[str]] | None:
    """``(X, y, feature names)`` read by ``pyarrow.csv`` in blocks straight into one preallocated
    ``dtype`` array (peak memory near that array), or None where pyarrow is missing or the file
    needs the careful reader (BOM / UTF-16, odd header, missing values, values it cannot parse):
    :func:`load_csv_named` then reads it the slow way, with its precise messages."""
    try:
        import pyarrow as pa
        import pyarrow.csv as pv
    except ImportError:
        return None
    layout = _arrow_layout(path, target)
    if layout is None:
        return None
    delimiter, header, target = layout
    features = [h for h in header if h != target]
    n_upper = 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            n_upper += block.count(b"\n")
    X = np.empty((n_upper + 1, len(features)), dtype=dtype)
    convert = pv.ConvertOptions(column_types={**{h: pa.float64() for h in features}, target: pa.string()},
                                strings_can_be_null=False, quoted_strings_can_be_null=False)
    try:  # a Python file object, 1 MiB blocks: pyarrow neither maps the file nor reads far ahead
        with open(path, "rb") as fh:
            reader = pv.open_csv(fh, read_options=pv.ReadOptions(block_size=1 << 20),
                                 parse_options=pv.ParseOptions(delimiter=delimiter), convert_options=convert)
            batches = list(_fill_batches(reader, X, features, target))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, UnicodeDecodeError):
        return None
    done = [b for b in batches if b is not None]
    row = sum(m for _, m in done)
    if len(done) != len(batches) or row == 0:
        return None
    y = _arrow_targets(np.concatenate([cells for cells, _ in done]))
    if y is None:
        return None
    X, y = _check_loaded(X[:row], y, path, columns=features, dtype=dtype)
    return X, y, features


def _fill_batches(reader: Any, X: HostArray, features: list[str],
                  target: str) -> Iterator[tuple[HostArray, int] | None]:
    """Each batch's target cells and row count, its features written into ``X``; None (and stop) at
    a missing or non-finite feature value."""
    row = 0
    for batch in reader:
        m = batch.num_rows
        for j, name in enumerate(features):
            column = batch.column(name)
            values = column.to_numpy(zero_copy_only=False) if not column.null_count else None
            if values is None or not np.isfinite(values).all():
                yield None
                return
            X[row:row + m, j] = values
        yield batch.column(target).to_numpy(zero_copy_only=False), m
        row += m


def load_csv(path: str, target: str) -> tuple[HostArray, HostArray]:
    """A CSV file with a header row; ``target`` names the target column, the rest are features.

    UTF-8 (with or without a byte-order mark) or UTF-16 with a byte-order mark; comma-separated, or
    ';' / tab when the header has no comma; whitespace around names and values and quotes around
    numbers are fine; blank lines are skipped.  Integer-valued targets become int64 labels; a
    target column with any non-numeric value is class names (a string array).
    """
    return load_csv_named(path, target)[:2]


def load_csv_named(path: str, target: str, dtype: Any = np.float64,
                   engine: str = "auto") -> tuple[HostArray, HostArray, list[str]]:
    """:func:`load_csv` plus the feature names (the header less the target, in column order).

    ``dtype`` is that of ``X``; ``engine``: ``"pyarrow"`` reads in blocks into one preallocated
    array (the ``csv`` extra; memory near the result), ``"python"`` with the standard library
    (slow, memory-hungry), ``"auto"`` pyarrow where installed and the file suits it, else python.
    Both give the same arrays and refuse the same files."""
    path = str(path)
    if engine not in CSV_ENGINES:
        raise ValueError(f"engine={engine!r} is unknown: use one of {', '.join(CSV_ENGINES)}.")
    if engine != "python":
        _open_check(path, "CSV")
        fast = _load_csv_arrow(path, target, np.dtype(dtype))
        if fast is not None:
            return fast
        if engine == "pyarrow":
            import importlib.util

            if importlib.util.find_spec("pyarrow") is None:
                raise ValueError("engine='pyarrow' needs pyarrow: pip install 'xpnet[csv]'.")
    rows = _csv_rows(_read_text(path), path)
    header, target = _csv_header(rows[0][1], target, path)
    if len(rows) < 2:
        raise ValueError(f"{path}: has a header but no data rows.")
    for line, r in rows[1:]:
        if len(r) != len(header):
            raise ValueError(f"{path}: line {line} has {len(r)} fields but the header has {len(header)}; "
                             "every row needs one value per column.")
    parsed = {name: np.array([_csv_number(r[j], name, line, path) for line, r in rows[1:]])
              for j, name in enumerate(header) if name != target}
    y = _csv_target([(line, r[header.index(target)]) for line, r in rows[1:]], target, path)
    X = np.stack(list(parsed.values()), axis=1)
    X, y = _check_loaded(X, y, path, columns=list(parsed), dtype=dtype)
    return X, y, list(parsed)


def read_csv_features(path: str | Path, feature_names: list[str],
                      target: str | None = None) -> tuple[HostArray, HostArray | None]:
    """``(X, y or None)`` from a CSV for a model trained on ``feature_names``: those columns, in that
    order, whatever the file's order (extra columns are ignored); the ``target`` column, if present."""
    path = str(path)
    rows = _csv_rows(_read_text(path), path)
    header = [h.strip() for h in rows[0][1]]
    if len(rows) < 2:
        raise ValueError(f"{path}: has a header but no data rows.")
    missing = [n for n in feature_names if n not in header]
    if missing:
        raise ValueError(f"{path}: lacks feature column(s) {missing[:10]} the model was trained on; its columns are "
                         f"{header[:20]}.")
    for line, r in rows[1:]:
        if len(r) != len(header):
            raise ValueError(f"{path}: line {line} has {len(r)} fields but the header has {len(header)}.")
    cols = [header.index(n) for n in feature_names]
    X = np.array([[_csv_number(r[j], header[j], line, path) for j in cols] for line, r in rows[1:]])
    y = None
    if target and target in header:
        y = _csv_target([(line, r[header.index(target)]) for line, r in rows[1:]], target, path)
    return X, y


def split(X: HostArray, y: HostArray, test_fraction: float = 0.25, val_fraction: float = 0.0, seed: int = 0,
          stratify: bool = True) -> dict[str, tuple[HostArray, HostArray]]:
    """Seeded train / validation / test split (stratified for class labels)."""
    test_fraction = check_real("test_fraction", test_fraction, low=0, high=1, high_open=True)
    val_fraction = check_real("val_fraction", val_fraction, low=0, high=1, high_open=True)
    if test_fraction + val_fraction >= 1:
        raise ValueError(f"test_fraction={test_fraction!r} + val_fraction={val_fraction!r} leaves no training "
                         "samples: make their sum below 1.")
    idx = split_indices(y, test_fraction, val_fraction, seed, stratify)
    return {name: (X[i], y[i]) for name, i in idx.items()}


SPLIT_ALGORITHM = "xpnet.data.split_indices/v1"  # a seeded permutation per class (stratified) or of all rows


def split_indices(y: HostArray, test_fraction: float = 0.25, val_fraction: float = 0.0, seed: int = 0,
                  stratify: bool = True) -> dict[str, HostArray]:
    """The sorted row indices of the ``train``, ``val`` and ``test`` parts :func:`split` takes."""
    test_fraction = check_real("test_fraction", test_fraction, low=0, high=1, high_open=True)
    val_fraction = check_real("val_fraction", val_fraction, low=0, high=1, high_open=True)
    if test_fraction + val_fraction >= 1:
        raise ValueError(f"test_fraction={test_fraction!r} + val_fraction={val_fraction!r} leaves no training "
                         "samples: make their sum below 1.")
    seed, stratify = check_int("seed", seed, low=0), check_bool("stratify", stratify)
    labels = y if stratify and y.ndim == 1 and y.dtype.kind in "iu" else None
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)] if labels is not None else [np.arange(len(y))]
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for members in groups:
        members = rng.permutation(members)
        n_test = int(round(len(members) * test_fraction))
        n_val = int(round(len(members) * val_fraction))
        parts["test"].append(members[:n_test])
        parts["val"].append(members[n_test:n_test + n_val])
        parts["train"].append(members[n_test + n_val:])
    out = {name: np.sort(np.concatenate(idx)) for name, idx in parts.items()}
    for name, fraction in (("test", test_fraction), ("val", val_fraction)):
        if fraction > 0 and len(out[name]) == 0:  # rounding per class gave nothing: never silently
            largest = max(len(g) for g in groups)
            raise ValueError(f"{name}_fraction={fraction} leaves no {name} samples ({len(groups)} group(s), the "
                             f"largest of {largest}): use a larger fraction, or 0 for no {name} set.")
    return out


def infer_loss(y: Any) -> tuple[str, str]:
    """The loss ``--loss auto`` picks for targets ``y``, and why: class names (strings), integers, bools
    or whole-number floats in one column -> ``cross_entropy``; anything else -> ``mse``."""
    y = np.asarray(y)
    one_column = y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1)
    if y.dtype.kind in "UOS":
        return "cross_entropy", "the targets are class names"
    if one_column and y.dtype.kind in "iub":
        return "cross_entropy", "the targets are integers"
    if one_column and y.dtype.kind == "f" and np.isfinite(y).all() and np.all(y == np.round(y)):
        return "cross_entropy", "the targets are whole numbers"
    return "mse", "the targets are continuous numbers"


def encode_labels(y: Any, where: str) -> tuple[HostArray, list[str] | None]:
    """String class names -> ``(int64 codes, sorted class names)``; other targets pass unchanged (None)."""
    y = np.asarray(y)
    if y.dtype.kind not in "UOS":
        return y, None
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{where}: class names must be one column, got shape {y.shape}.")
    classes, codes = np.unique(y.astype(str), return_inverse=True)
    return codes.astype(np.int64), [str(c) for c in classes]


def load_raw(data_cfg: dict[str, Any], regression: bool,
             seed: int) -> tuple[HostArray, HostArray, list[str], str | None, str]:
    """``(X, y, feature names, target name, where)`` of the data a run configuration names, unprocessed."""
    source = data_cfg["source"]
    where = data_cfg.get("y_path") if source == "npy" else data_cfg.get("path") if source in ("npz", "csv") else source
    names = None
    if source == "digits":
        X, y = load_digits()
    elif source == "synthetic":
        X, y = synthetic(data_cfg["n_samples"], data_cfg["n_features"], data_cfg["n_classes"], regression, seed)
    elif source == "npz":
        X, y = load_npz(data_cfg["path"])
    elif source == "npy":
        X, y = load_npy_pair(data_cfg["x_path"], data_cfg["y_path"], mmap=True)
    else:
        X, y, names = load_csv_named(data_cfg["path"], data_cfg["target"])
    if names is None:
        names = [f"x{i}" for i in range(X.shape[1])]
    return X, y, names, data_cfg.get("target") if source == "csv" else None, str(where)



def prepare_run_data(data_cfg: dict[str, Any], loss_name: str,
                     seed: int) -> tuple[dict[str, tuple[HostArray, HostArray]], dict[str, Any]]:
    """``(parts, info)``: the data a run configuration names, with targets as the loss needs them
    (see :func:`targets_for_loss`), split and (optionally) standardised on the train split; and
    what a trained model needs to take raw inputs: ``info`` holds ``loss`` (``"auto"`` resolved
    by :func:`infer_loss`, with ``loss_reason``), ``feature_names``, ``target``, ``classes`` (the
    class names for classification, in output order), ``mean`` / ``scale`` (None unless
    standardised) and ``split`` (the algorithm, its parameters and the row indices)."""
    from .losses import get_loss

    info: dict[str, Any] = {"loss": loss_name, "loss_reason": None}
    regression = loss_name != "auto" and not get_loss(loss_name).classification
    X, y, names, target, where = load_raw(data_cfg, regression, seed)
    if loss_name == "auto":
        info["loss"], info["loss_reason"] = infer_loss(y)
        regression = not get_loss(info["loss"]).classification
    classes: list[Any] | None
    y, classes = encode_labels(y, where) if not regression else (y, None)
    y = targets_for_loss(y, info["loss"], where)
    if classes is None and not regression and y.ndim == 1:
        classes = list(range(check_class_labels(y, where)))
    elif classes is None and not regression:
        classes = list(range(y.shape[1]))
    idx = split_indices(y, data_cfg["test_fraction"], data_cfg["val_fraction"], seed, stratify=not regression)
    if idx["train"].shape[0] == 0:
        raise ValueError(f"data: the split leaves no training samples (test_fraction {data_cfg['test_fraction']}, "
                         f"val_fraction {data_cfg['val_fraction']}).")
    mean = scale = None
    if isinstance(X, np.memmap):  # streamed: statistics in chunks, each part a memory-mapped scratch copy
        if data_cfg["standardize"]:
            _, mean, scale = column_stats(X, idx["train"])
            scale[scale == 0] = 1.0
        parts = {name: (scratch_copy(X, i, mean, scale), y[i]) for name, i in idx.items()}
    else:
        parts = {name: (X[i], y[i]) for name, i in idx.items()}
        if data_cfg["standardize"]:
            mean, scale = standardize_stats(parts["train"][0])
            parts = {k: ((Xp - mean) / scale, yp) for k, (Xp, yp) in parts.items()}
    info.update(feature_names=list(names), target=target, classes=classes,
                mean=None if mean is None else mean.tolist(), scale=None if scale is None else scale.tolist(),
                split={"algorithm": SPLIT_ALGORITHM, "seed": seed, "test_fraction": data_cfg["test_fraction"],
                       "val_fraction": data_cfg["val_fraction"], "stratified": not regression,
                       "n_samples": int(X.shape[0]), "indices": idx})
    return parts, info


def load_for_run(data_cfg: dict[str, Any], loss_name: str, seed: int) -> dict[str, tuple[HostArray, HostArray]]:
    """The data a run configuration names, with targets as ``loss_name`` needs them (see
    :func:`targets_for_loss`), split and (optionally) standardised on the train split
    (:func:`prepare_run_data` without what it records)."""
    return prepare_run_data(data_cfg, loss_name, seed)[0]
