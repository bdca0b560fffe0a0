"""Checkpoints: weights in safetensors, training state beside them, written atomically, verified on load.

A checkpoint is a directory ``epoch-NNNN`` (the state after NNNN completed epochs, as history.csv
counts them) or ``epoch-NNNN-step-SSSSSS`` (a mid-epoch one: NNNN epochs completed, and the run at
optimizer step SSSSSS in the next) holding

* ``model.safetensors`` -- the weights as ``layer{i}.W`` (fan_in, fan_out) and ``layer{i}.b``,
  readable by any safetensors tool; the architecture sits in its metadata;
* ``trainer.safetensors`` -- optimizer state buffers (and early-stopping's best weights), with
  the optimizer's hyperparameters and step, the scheduler, the shuffling RNG state, the epoch,
  the step count and the history in its metadata (a mid-epoch checkpoint: the RNG state the
  epoch started with, and ``in_epoch``, the steps taken in it and its running loss and accuracy sums);
* ``manifest.json`` -- the size and SHA-256 of both files, and a SHA-256 of itself.

All files are written into a temporary directory, flushed and fsynced, and the directory is
then renamed into place (atomic on POSIX), so a crash or kill at any moment leaves either the
complete new checkpoint or none of it -- never a torn one -- and earlier checkpoints untouched.

Integrity (format ``xpnet-checkpoint-2``): safetensors has no checksum, so a flipped bit in a
tensor would otherwise load silently.  :func:`load` checks every byte of every file against the
manifest before parsing anything, then checks what it parsed (tensor names, shapes, dtypes,
finite values, the metadata keys a resume needs) and raises ``ValueError`` naming the file.
A weights file on its own (a run's final ``model.safetensors``) carries a SHA-256 of its
tensors and metadata in its safetensors metadata, checked by :func:`load_model`.

Checkpoints written before this numbering were named from 0 (``epoch-0002`` held the state
after three epochs); they still load and resume correctly, since the epoch is read from the
metadata, never from the name, and they sort before the checkpoints a resumed run adds.

Checkpoints written before the manifest existed (``xpnet-checkpoint-1``) still load, with an
:class:`IntegrityWarning`: their contents are checked, but damage that leaves them well-formed
cannot be detected.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import struct
import warnings
from collections.abc import Iterable, Set
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard, cast

import numpy as np

from .._typing import HostArray, Namespace

if TYPE_CHECKING:
    from ..model import MLP
    from ..train.callbacks import Callback, History
    from ..train.trainer import Trainer

FORMAT = "xpnet-checkpoint-2"
OLD_FORMATS = ("xpnet-checkpoint-1",)  # no manifest, no weights digest: loaded with a warning
PREFIX = "epoch-"
IN_EPOCH = "in_epoch."  # trainer-file tensors of a mid-epoch checkpoint (as Trainer.state_dict names them)
_NAME = re.compile(r"epoch-(\d+)(?:-step-(\d+))?")  # epoch-NNNN, epoch-NNNN-step-SSSSSS
MANIFEST = "manifest.json"
FILES = ("model.safetensors", "trainer.safetensors")
DIGEST_KEY = "sha256"  # weights-file metadata entry: SHA-256 of the tensors and the other metadata
MODEL_KEYS = ("format", "sizes", "activation", "dtype", "init", "seed")
TRAINER_KEYS: dict[str, type | tuple[type, ...]] = {
    "epoch": int, "step_count": int, "optimizer": dict, "rng": dict, "history": dict,
    "history_epochs": list, "scheduler": (dict, type(None))}
OPTIMIZER_KEYS: dict[str, type | tuple[type, ...]] = {
    "type": str, "lr": (int, float), "hparams": dict, "step_count": int}


class IntegrityWarning(UserWarning):
    """A checkpoint or weights file in an old format, whose integrity cannot be verified."""


@dataclass
class Checkpoint:
    path: Path
    weights: list[tuple[HostArray, HostArray]]  # [(W, b), ...] host arrays
    model_meta: dict[str, Any]
    state: dict[str, HostArray]  # name -> host array (optimizer state, early-stopping weights)
    trainer_meta: dict[str, Any]

    @property
    def epoch(self) -> int:
        """The last completed epoch, 0-based (-1 for a checkpoint taken inside the first epoch)."""
        return int(self.trainer_meta["epoch"])

    @property
    def in_epoch(self) -> dict[str, Any] | None:
        """For a mid-epoch checkpoint, ``{"epoch", "steps", "batch_size", "n", "loss_total", "metrics"}``
        (see :meth:`Trainer.epoch_progress`); else None."""
        return cast("dict[str, Any] | None", self.trainer_meta.get("in_epoch"))


def _st() -> Any:
    try:
        import safetensors.numpy as st
    except ImportError as exc:  # pragma: no cover - safetensors is a dependency
        raise RuntimeError("checkpoints need safetensors: pip install safetensors") from exc
    return st


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all: a temporary file, fsynced, renamed over it.  A failed
    write (a full disk, an interrupt) removes the temporary file, so retries leave nothing behind."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_write_atomic = write_atomic  # the old private name, kept for code written against it


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


# -- writing ------------------------------------------------------------------------------------
def model_metadata(model: MLP) -> dict[str, str]:
    from .. import __version__

    meta = {"format": FORMAT, "xpnet_version": __version__, "sizes": json.dumps(model.sizes),
            "activation": model.activation.name, "dtype": model.dtype, "init": model.init, "seed": str(model.seed),
            "layout": "layer{i}.W is (fan_in, fan_out); a layer computes x @ W + b"}
    if any(model.dropout):  # only then: files of models without dropout keep their bytes
        meta["dropout"] = json.dumps(list(model.dropout))
    return meta


def _tensor_digest(tensors: dict[str, HostArray], metadata: dict[str, str]) -> str:
    """SHA-256 over the metadata (less the digest itself) and every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256(_canonical({k: v for k, v in metadata.items() if k != DIGEST_KEY}))
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        h.update(_canonical([name, arr.dtype.str, list(arr.shape)]))
        h.update(arr.tobytes())
    return h.hexdigest()


def _weights_bytes(model: MLP, extra_metadata: dict[str, str] | None = None) -> bytes:
    tensors = {}
    for i, (W, b) in enumerate(model.get_weights()):
        tensors[f"layer{i}.W"], tensors[f"layer{i}.b"] = np.ascontiguousarray(W), b
    meta = {**(extra_metadata or {}), **model_metadata(model)}
    meta[DIGEST_KEY] = _tensor_digest(tensors, meta)
    return cast(bytes, _st().save(tensors, metadata=meta))


def save_weights(path: Path, model: MLP, extra_metadata: dict[str, str] | None = None) -> None:
    """The model's weights alone, as one safetensors file (atomic) carrying its own SHA-256, which
    covers ``extra_metadata`` (string values, e.g. the preprocessing record) too."""
    write_atomic(Path(path), _weights_bytes(model, extra_metadata))


def _trainer_bytes(trainer: Trainer, epoch: int, history: History | None, callbacks: Iterable[Callback],
                   extra_meta: dict[str, Any] | None) -> bytes:
    state, meta = trainer.state_dict()
    meta.update(format=FORMAT, epoch=epoch, history=history.history if history is not None else {},
                history_epochs=history.epoch if history is not None else [], **(extra_meta or {}))
    tensors = {(k if k.startswith(IN_EPOCH) else f"optimizer.{k}"): np.ascontiguousarray(v)
               for k, v in state.items()}  # in_epoch.*: a mid-epoch checkpoint's metric state
    meta["callbacks"] = {}
    for i, cb in enumerate(callbacks):
        if hasattr(cb, "state_dict"):
            cb_meta, cb_tensors = cb.state_dict()
            meta["callbacks"][f"{i}:{type(cb).__name__}"] = cb_meta
            tensors.update({f"callback{i}.{k}": v for k, v in cb_tensors.items()})
    if not tensors:  # safetensors needs at least one tensor
        tensors["_empty"] = np.zeros(0, dtype=np.float32)
    return cast(bytes, _st().save(tensors, metadata={"json": json.dumps(meta)}))


def _manifest_bytes(entries: dict[str, Any]) -> bytes:
    """The manifest for ``{file: {"size", "sha256"}}``; its own SHA-256 covers the rest of it."""
    body = {"format": FORMAT, "files": entries}
    return _canonical({**body, "sha256": _sha256(_canonical(body))}) + b"\n"


def save(root: Path, trainer: Trainer, epoch: int, history: History | None = None,
         callbacks: Iterable[Callback] = (), extra_meta: dict[str, Any] | None = None) -> Path:
    """Write checkpoint ``root/epoch-NNNN`` atomically after epoch ``epoch`` (0-based, as
    ``on_epoch_end`` receives it; NNNN = ``epoch + 1``, the epochs completed) and return its path;
    ``extra_meta`` (JSON values, e.g. a run's configuration) is stored with the training state.  If
    writing fails (a full disk, an interrupt) the half-written temporary directory is removed."""
    from ..validation import check_int

    epoch = check_int("epoch", epoch, low=0)
    if trainer.inside_epoch:
        raise ValueError("checkpoint.save is for the end of an epoch; inside one (on_step_end) use "
                         "checkpoint.save_in_epoch, which records the steps taken in it.")
    return _save(Path(root), f"{PREFIX}{epoch + 1:04d}", trainer, epoch, history, callbacks, extra_meta)


def save_in_epoch(root: Path, trainer: Trainer, history: History | None = None,
                  callbacks: Iterable[Callback] = (), extra_meta: dict[str, Any] | None = None) -> Path:
    """Write a mid-epoch checkpoint ``root/epoch-NNNN-step-SSSSSS`` (NNNN epochs completed, SSSSSS
    the optimizer step count) from inside an epoch (a callback's ``on_step_end``); resuming from
    it continues that epoch exactly (see :meth:`Trainer.state_dict`)."""
    progress = trainer.epoch_progress()
    if progress is None:
        raise ValueError("checkpoint.save_in_epoch works inside an epoch only (from a callback's on_step_end); "
                         "at an epoch's end use checkpoint.save.")
    name = f"{PREFIX}{progress['epoch']:04d}-step-{trainer.step_count:06d}"
    return _save(Path(root), name, trainer, progress["epoch"] - 1, history, callbacks, extra_meta)


def _save(root: Path, name: str, trainer: Trainer, epoch: int, history: History | None,
          callbacks: Iterable[Callback], extra_meta: dict[str, Any] | None) -> Path:
    if root.exists() and not root.is_dir():
        raise ValueError(f"checkpoint root {root} is a file: pass a directory for the checkpoints.")
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    tmp = root / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        contents = dict(zip(FILES, (_weights_bytes(trainer.model),
                                    _trainer_bytes(trainer, epoch, history, callbacks, extra_meta))))
        for file, data in contents.items():
            write_atomic(tmp / file, data)
        write_atomic(tmp / MANIFEST, _manifest_bytes({n: {"size": len(d), "sha256": _sha256(d)}
                                                       for n, d in contents.items()}))
        _fsync_dir(tmp)
        _move_into_place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(root)
    return final


def _move_into_place(tmp: Path, final: Path) -> None:
    if not final.exists():
        os.replace(tmp, final)
        return
    # re-saving an epoch (after a resume): the old one goes only once the new one is whole
    old = final.parent / f".old-{final.name}-{os.getpid()}"
    os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def order_key(name: str) -> tuple[int, int] | None:
    """``(epochs completed, step)`` that orders checkpoint names (an epoch's end before the mid-epoch
    checkpoints of the next: step -1), compared as numbers; None for a name that is no checkpoint's."""
    match = _NAME.fullmatch(name)
    if match is None:
        return None
    return int(match[1]), int(match[2]) if match[2] is not None else -1


def list_checkpoints(root: Path) -> list[Path]:
    """Checkpoint directories under ``root``, oldest first by :func:`order_key` (temporary
    leftovers are ignored; their contents are not checked -- see :func:`latest_intact`)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(key, p) for p in root.iterdir() if p.is_dir() and (key := order_key(p.name)) is not None]
    return [p for _, p in sorted(found)]


def latest(root: Path) -> Path | None:
    """The newest checkpoint directory, intact or not (see :func:`latest_intact`)."""
    found = list_checkpoints(root)
    return found[-1] if found else None


def is_intact(path: Path) -> bool:
    """Whether :func:`load` accepts the checkpoint (old-format ones count as intact)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", IntegrityWarning)
            load(path)
    except ValueError:
        return False
    return True


def latest_intact(root: Path) -> Path | None:
    """The newest checkpoint under ``root`` that :func:`load` accepts, skipping damaged ones; None if none is."""
    return next((p for p in reversed(list_checkpoints(root)) if is_intact(p)), None)


# -- reading and checking -----------------------------------------------------------------------
def _damaged(file: Path, why: str, fix: str | None = None) -> ValueError:
    if fix is None:  # a file inside a checkpoint directory
        fix = (f"Nothing was loaded. Resume from an earlier intact checkpoint instead "
               f"(xpnet.io.checkpoint.latest_intact({str(file.parent.parent)!r}) finds the newest), "
               f"or delete {file.parent} if no other copy of it exists.")
    return ValueError(f"checkpoint file {file} {why}. {fix}")


def _read_bytes(file: Path, fix: str | None = None) -> bytes:
    if not file.exists():
        raise _damaged(file, "is missing (the checkpoint is incomplete or was moved)", fix)
    if not file.is_file():
        raise _damaged(file, "is not a regular file", fix)
    try:
        return file.read_bytes()
    except OSError as exc:
        raise _damaged(file, f"cannot be read ({exc})", fix) from exc


def _parse(file: Path, data: bytes, fix: str | None = None) -> tuple[dict[str, HostArray], dict[str, Any]]:
    """Tensors and metadata of one safetensors file's bytes, or a ValueError naming the file."""
    try:
        tensors = _st().load(data)
        (header_len,) = struct.unpack("<Q", data[:8])
        metadata = json.loads(data[8:8 + header_len]).get("__metadata__") or {}
    except Exception as exc:
        raise _damaged(file, f"is unreadable (truncated or corrupted: {exc})", fix) from exc
    return tensors, metadata


def _read_manifest(path: Path) -> dict[str, Any] | None:
    """The checked ``{file: {"size", "sha256"}}`` of a checkpoint, or None where it has no manifest."""
    file = path / MANIFEST
    if not file.exists():
        return None
    data = _read_bytes(file)
    try:  # byte-identical to the manifest its entries rebuild, self-digest included: no byte was altered
        entries = json.loads(data)["files"]
        intact = data == _manifest_bytes(entries)
    except Exception:
        intact = False
    if not (intact and _well_formed(entries)):
        raise _damaged(file, "is damaged (it does not match its own SHA-256, or lacks entries)")
    return entries


def _well_formed(entries: object) -> TypeGuard[dict[str, Any]]:
    return (isinstance(entries, dict) and sorted(entries) == sorted(FILES)
            and all(isinstance(e, dict) and type(e.get("size")) is int and isinstance(e.get("sha256"), str)
                    for e in entries.values()))


def _verified_files(path: Path) -> dict[str, bytes]:
    """The bytes of each checkpoint file, each checked against the manifest before any is parsed."""
    entries = _read_manifest(path)
    contents = {name: _read_bytes(path / name) for name in FILES}
    if entries is None:
        _, meta = _parse(path / FILES[0], contents[FILES[0]])
        if meta.get("format") not in OLD_FORMATS:
            raise _damaged(path / MANIFEST, "is missing (a checkpoint of this format always has one)")
        warnings.warn(f"checkpoint {path} has the old format {meta['format']!r} without a manifest: "
                      "its files are checked for consistency, but damage to them cannot always be detected.",
                      IntegrityWarning, stacklevel=3)
        return contents
    for name, data in contents.items():
        size, digest = entries[name]["size"], entries[name]["sha256"]
        if len(data) != size:
            raise _damaged(path / name, f"has {len(data)} bytes but its manifest records {size} "
                           "(truncated or overwritten)")
        if _sha256(data) != digest:
            raise _damaged(path / name, "does not match the SHA-256 in its manifest (corrupted or replaced)")
    return contents


def _model_fields(file: Path, meta: dict[str, Any], fix: str | None = None) -> tuple[list[int], str]:
    """The sizes and dtype a weights file's metadata declares, checked."""
    missing = [k for k in MODEL_KEYS if k not in meta]
    if missing:
        raise _damaged(file, f"lacks metadata key(s) {missing}", fix)
    if meta["format"] not in (FORMAT, *OLD_FORMATS):
        raise _damaged(file, f"is not an xpnet weights file (format {meta['format']!r}, expected {FORMAT!r})", fix)
    try:
        sizes = json.loads(meta["sizes"])
        ok = isinstance(sizes, list) and len(sizes) >= 2 and all(type(s) is int and s > 0 for s in sizes)
    except json.JSONDecodeError:
        ok = False
    if not ok:
        raise _damaged(file, f"has invalid layer sizes {meta['sizes']!r} in its metadata", fix)
    from ..backend import FLOAT_DTYPES

    if meta["dtype"] not in FLOAT_DTYPES:
        raise _damaged(file, f"has invalid dtype {meta['dtype']!r} in its metadata", fix)
    return sizes, meta["dtype"]


def _check_finite(file: Path, tensors: dict[str, HostArray], fix: str | None = None) -> None:
    for name, arr in tensors.items():
        if arr.dtype.kind != "f":
            raise _damaged(file, f"holds tensor {name!r} of dtype {arr.dtype}, not floating point", fix)
        if not np.isfinite(arr).all():
            raise _damaged(file, f"holds NaN or infinite values in tensor {name!r} (the run had diverged when it "
                           "was saved, or the file is corrupted)", fix)


def _weights(file: Path, tensors: dict[str, HostArray], meta: dict[str, Any],
             fix: str | None = None) -> list[tuple[HostArray, HostArray]]:
    """``[(W, b), ...]`` from a weights file, after checking its digest, tensor names, shapes, dtypes, values."""
    sizes, dtype = _model_fields(file, meta, fix)
    if meta["format"] == FORMAT and meta.get(DIGEST_KEY) != _tensor_digest(tensors, meta):
        raise _damaged(file, "does not match the SHA-256 in its metadata (corrupted or edited)", fix)
    expected: dict[str, tuple[int, ...]] = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        expected[f"layer{i}.W"], expected[f"layer{i}.b"] = (fan_in, fan_out), (fan_out,)
    if set(tensors) != set(expected):
        raise _damaged(file, f"holds tensors {sorted(tensors)}; layer sizes {sizes} need {sorted(expected)}", fix)
    for name, shape in expected.items():
        if tensors[name].shape != shape or tensors[name].dtype != np.dtype(dtype):
            raise _damaged(file, f"holds tensor {name!r} of shape {tensors[name].shape} and dtype "
                           f"{tensors[name].dtype}; layer sizes {sizes} and dtype {dtype} need {shape}", fix)
    _check_finite(file, tensors, fix)
    return [(tensors[f"layer{i}.W"], tensors[f"layer{i}.b"]) for i in range(len(sizes) - 1)]


def _trainer_meta(file: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The training state in a trainer file's metadata, with every key a resume needs."""
    try:
        state = json.loads(meta["json"])
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise _damaged(file, "has no valid training state in its metadata") from exc
    if not isinstance(state, dict):
        raise _damaged(file, "has no valid training state in its metadata")
    for key, kind in TRAINER_KEYS.items():
        if key not in state:
            raise _damaged(file, f"lacks training-state key {key!r}")
        if not isinstance(state[key], kind):
            raise _damaged(file, f"has training-state key {key!r} of the wrong type ({type(state[key]).__name__})")
    missing = [k for k in OPTIMIZER_KEYS if k not in state["optimizer"]]
    if missing:
        raise _damaged(file, f"lacks optimizer key(s) {missing}")
    wrong = [k for k, kind in OPTIMIZER_KEYS.items() if not isinstance(state["optimizer"][k], kind)]
    if wrong:
        raise _damaged(file, f"has optimizer key(s) {wrong} of the wrong type")
    if not isinstance(state.get("callbacks", {}), dict):
        raise _damaged(file, "has training-state key 'callbacks' of the wrong type")
    if "in_epoch" in state and not _progress_like(state["in_epoch"]):
        raise _damaged(file, "has training-state key 'in_epoch' (a mid-epoch position) that is invalid")
    return state


def _progress_like(value: object) -> bool:
    """Whether ``value`` is a mid-epoch position as :meth:`Trainer.epoch_progress` gives it."""
    if not isinstance(value, dict) or set(value) != {"epoch", "steps", "batch_size", "n", "loss_total", "metrics"}:
        return False
    ints = all(type(value[k]) is int and value[k] >= 0 for k in ("epoch", "steps", "batch_size", "n"))
    metrics = value["metrics"]
    return (ints and isinstance(value["loss_total"], (int, float)) and not isinstance(value["loss_total"], bool)
            and isinstance(metrics, list) and all(isinstance(m, dict) and isinstance(m.get("name"), str)
                                                  and type(m.get("n")) is int for m in metrics))


def _checkpoint_dir(path: str | Path) -> Path:
    path = Path(path)
    if path.is_file() and path.name in (*FILES, MANIFEST):
        path = path.parent
    if not path.is_dir():
        raise ValueError(f"checkpoint {path} does not exist or is not a directory: pass an epoch-NNNN directory "
                         "(xpnet.io.checkpoint.latest_intact(root) finds the newest intact one).")
    return path


def load(path: Path) -> Checkpoint:
    """Read and check a checkpoint directory (or one of its files); nothing is modified.

    Every file is checked against the manifest before anything is parsed, then the contents are
    checked; any damage raises ``ValueError`` naming the file."""
    path = _checkpoint_dir(path)
    contents = _verified_files(path)
    model_file, trainer_file = (path / name for name in FILES)
    tensors, model_meta = _parse(model_file, contents[FILES[0]])
    weights = _weights(model_file, tensors, model_meta)
    state, meta = _parse(trainer_file, contents[FILES[1]])
    trainer_meta = _trainer_meta(trainer_file, meta)
    state.pop("_empty", None)
    _check_finite(trainer_file, state)
    return Checkpoint(path, weights, model_meta, state, trainer_meta)


def load_model(path: str | Path, device: Any = None, xp: Namespace | None = None) -> MLP:
    """An :class:`~xpnet.MLP` from a ``model.safetensors`` file, a run directory (its final
    weights) or a checkpoint directory, placed on ``device`` / ``xp``; damage raises ``ValueError`` naming the file."""
    from ..model import MLP

    path = Path(path)
    if path.is_dir() and not (path / MANIFEST).exists() and not (path / FILES[1]).exists():
        path = path / FILES[0]  # a run directory: its final weights
    if path.is_dir():
        ckpt = load(path)
        file, weights, meta = ckpt.path / FILES[0], ckpt.weights, ckpt.model_meta
    else:
        file = path
        fix = ("Nothing was loaded. Use a copy that is intact, or the weights of a checkpoint: "
               "load_model(<run>/checkpoints/epoch-NNNN).")
        tensors, meta = _parse(file, _read_bytes(file, fix), fix)
        weights = _weights(file, tensors, meta, fix)
        if meta["format"] != FORMAT:
            warnings.warn(f"{file} has the old format {meta['format']!r} without a SHA-256: damage to it cannot "
                          "always be detected.", IntegrityWarning, stacklevel=2)
    try:
        model = MLP(json.loads(meta["sizes"]), activation=meta["activation"], dtype=meta["dtype"],
                    init=meta["init"], seed=int(meta["seed"]), device=device, xp=xp,
                    dropout=json.loads(meta.get("dropout", "0.0")))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{file}: its metadata does not describe a model this xpnet can build ({exc}).") from exc
    model.set_weights(weights)
    return model


def read_weights_metadata(path: Path) -> dict[str, str]:
    """The safetensors metadata of a weights file (its SHA-256 is checked by :func:`load_model`)."""
    fix = "Nothing was loaded."
    _, meta = _parse(Path(path), _read_bytes(Path(path), fix), fix)
    return dict(meta)


def check_compatible(ckpt: Checkpoint, model: MLP) -> None:
    """Refuse a checkpoint whose architecture differs from ``model``'s, naming both."""
    theirs = (json.loads(ckpt.model_meta["sizes"]), ckpt.model_meta["activation"], ckpt.model_meta["dtype"])
    ours = (model.sizes, model.activation.name, model.dtype)
    if theirs != ours:
        raise ValueError(f"checkpoint {ckpt.path} holds a model with sizes {theirs[0]}, activation {theirs[1]!r}, "
                         f"dtype {theirs[2]}; this model has sizes {ours[0]}, activation {ours[1]!r}, dtype {ours[2]}.")


def _prefixed(state: dict[str, HostArray], prefix: str) -> dict[str, HostArray]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _check_restorable(trainer: Trainer, ckpt: Checkpoint, callbacks: Iterable[Callback]) -> None:
    """Everything :func:`restore` will apply, checked against ``trainer`` before any of it is."""
    check_compatible(ckpt, trainer.model)
    meta, where = ckpt.trainer_meta, f"checkpoint {ckpt.path}"
    if meta.get("loss", trainer.loss.name) != trainer.loss.name:
        raise ValueError(f"{where} was trained with loss {meta['loss']!r}; this trainer uses {trainer.loss.name!r}.")
    opt = trainer.optimizer
    if meta["optimizer"]["type"] != type(opt).__name__:
        raise ValueError(f"{where} holds {meta['optimizer']['type']} state; this trainer uses {type(opt).__name__}.")
    buffers = _prefixed(ckpt.state, "optimizer.")
    if buffers and set(buffers) != set(opt.state_names):
        raise ValueError(f"{where} holds optimizer buffers {sorted(buffers)}; this {type(opt).__name__} keeps "
                         f"{sorted(opt.state_names)}.")
    flat = ["optimizer."]  # prefixes of the state buffers shaped like the flat parameters
    for i, cb in enumerate(callbacks):
        saved = meta.get("callbacks", {}).get(f"{i}:{type(cb).__name__}")
        if hasattr(cb, "load_state_dict") and saved is not None:
            try:  # a dry run on a copy: the callback's own state stays untouched
                copy.deepcopy(cb).load_state_dict(saved, _prefixed(ckpt.state, f"callback{i}."), trainer)
            except (AttributeError, KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{where} holds state {saved!r} for callback {type(cb).__name__} that it cannot "
                                 f"restore ({exc!r}).") from exc
            flat.append(f"callback{i}.")
    n_params = trainer.model.n_params
    for name, buf in ckpt.state.items():
        if not name.startswith(tuple(flat)):
            continue
        if buf.shape != (n_params,):
            raise ValueError(f"{where} holds state {name!r} of shape {buf.shape}; this model has {n_params} "
                             "parameters.")
    if (trainer.scheduler is None) != (meta["scheduler"] is None):
        has = "has" if meta["scheduler"] is not None else "has no"
        raise ValueError(f"{where} {has} learning-rate scheduler state, but this trainer "
                         f"{'has no' if trainer.scheduler is None else 'has a'} scheduler: configure the same "
                         "scheduler as the run that saved it.")
    if (meta["scheduler"] is not None and trainer.scheduler is not None  # both or neither, checked above
            and not _numbers_like(meta["scheduler"], trainer.scheduler.state_dict())):
        raise ValueError(f"{where} holds scheduler state {meta['scheduler']!r} this scheduler cannot restore.")
    if trainer.scaler is not None and meta.get("scaler") and not _numbers_like(meta["scaler"],
                                                                               trainer.scaler.state_dict()):
        raise ValueError(f"{where} holds loss-scaler state {meta['scaler']!r} this scaler cannot restore.")
    try:
        trainer.check_rng_state(meta["rng"])
    except ValueError as exc:
        raise ValueError(f"{where} holds an invalid shuffling RNG state ({exc}).") from exc


def _numbers_like(saved: object, current: dict[str, Any]) -> bool:
    """Whether ``saved`` has exactly the keys of state dict ``current``, each a number (as scheduler and
    scaler keep)."""
    return (isinstance(saved, dict) and set(saved) == set(current)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in saved.values()))


def restore(trainer: Trainer, ckpt: Checkpoint, callbacks: Iterable[Callback] = ()) -> None:
    """Put a checkpoint's weights and training state into ``trainer``.

    Everything is checked first (architecture, loss, optimizer kind and buffer shapes, scheduler,
    RNG, callback state), so a refused checkpoint raises ``ValueError`` and changes nothing."""
    _check_restorable(trainer, ckpt, callbacks)
    trainer.model.set_weights(ckpt.weights)
    in_epoch = {k: v for k, v in ckpt.state.items() if k.startswith(IN_EPOCH)}
    trainer.load_state_dict({**_prefixed(ckpt.state, "optimizer."), **in_epoch}, ckpt.trainer_meta)
    saved = ckpt.trainer_meta.get("callbacks", {})
    for i, cb in enumerate(callbacks):
        key = f"{i}:{type(cb).__name__}"
        if hasattr(cb, "load_state_dict") and key in saved:
            cb.load_state_dict(saved[key], _prefixed(ckpt.state, f"callback{i}."), trainer)


def prune(root: Path, keep_last: int, keep: Set[str] = frozenset()) -> None:
    """Delete all but the newest ``keep_last`` checkpoints, sparing the names in ``keep``,
    and the half-written leftovers of saving processes that no longer run.

    If none of the checkpoints kept is intact, the newest intact one is spared too, so a
    resume always has something to fall back to."""
    found = list_checkpoints(root)
    doomed = [p for p in (found[:-keep_last] if keep_last else found) if p.name not in keep]
    kept = [p for p in found if p not in doomed]
    if doomed and not any(is_intact(p) for p in reversed(kept)):
        spare = next((p for p in reversed(doomed) if is_intact(p)), None)
        doomed = [p for p in doomed if p != spare]
    for p in doomed:
        shutil.rmtree(p, ignore_errors=True)
    for p in Path(root).glob(".[to][ml][pd]-*"):  # .tmp-<checkpoint>-PID, .old-<checkpoint>-PID
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def to_torch_state_dict(model: MLP) -> dict[str, Any]:
    """Deprecated: :func:`xpnet.io.export.to_torch_state_dict`."""
    from . import export

    warnings.warn("checkpoint.to_torch_state_dict moved to xpnet.io.export.", DeprecationWarning, stacklevel=2)
    return export.to_torch_state_dict(model)


def to_torch(model: MLP) -> Any:
    """Deprecated: :func:`xpnet.io.export.to_torch`."""
    from . import export

    warnings.warn("checkpoint.to_torch moved to xpnet.io.export.", DeprecationWarning, stacklevel=2)
    return export.to_torch(model)
