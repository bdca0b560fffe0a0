"""Checkpoints: weights in safetensors, training state beside them, written atomically.

A checkpoint is a directory ``epoch-NNNN`` holding

* ``model.safetensors`` -- the weights as ``layer{i}.W`` (fan_in, fan_out) and ``layer{i}.b``,
  readable by any safetensors tool; the architecture sits in its metadata;
* ``trainer.safetensors`` -- optimizer state buffers (and early-stopping's best weights), with
  the optimizer's hyperparameters and step, the scheduler, the shuffling RNG state, the epoch,
  the step count and the history in its metadata.

Both files are written into a temporary directory, flushed and fsynced, and the directory is
then renamed into place (atomic on POSIX), so a crash or kill at any moment leaves either the
complete new checkpoint or none of it -- never a torn one -- and earlier checkpoints untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT = "xpnet-checkpoint-1"
PREFIX = "epoch-"


@dataclass
class Checkpoint:
    path: Path
    weights: list  # [(W, b), ...] host arrays
    model_meta: dict
    state: dict  # name -> host array (optimizer state, early-stopping weights)
    trainer_meta: dict

    @property
    def epoch(self) -> int:
        return int(self.trainer_meta["epoch"])


def _st():
    try:
        import safetensors.numpy as st
    except ImportError as exc:  # pragma: no cover - safetensors is a dependency
        raise RuntimeError("checkpoints need safetensors: pip install safetensors") from exc
    return st


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def model_metadata(model) -> dict:
    from . import __version__

    return {"format": FORMAT, "xpnet_version": __version__, "sizes": json.dumps(model.sizes),
            "activation": model.activation.name, "dtype": model.dtype, "init": model.init, "seed": str(model.seed),
            "layout": "layer{i}.W is (fan_in, fan_out); a layer computes x @ W + b"}


def save_weights(path: Path, model) -> None:
    """The model's weights alone, as one safetensors file (atomic)."""
    tensors = {}
    for i, (W, b) in enumerate(model.get_weights()):
        tensors[f"layer{i}.W"], tensors[f"layer{i}.b"] = np.ascontiguousarray(W), b
    _write_atomic(Path(path), _st().save(tensors, metadata=model_metadata(model)))


def save(root: Path, trainer, epoch: int, history=None, callbacks=(), extra_meta: dict | None = None) -> Path:
    """Write checkpoint ``root/epoch-NNNN`` atomically and return its path; ``extra_meta`` (JSON
    values, e.g. a run's configuration) is stored with the training state."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{epoch:04d}"
    tmp = root / f".tmp-{PREFIX}{epoch:04d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_weights(tmp / "model.safetensors", trainer.model)
    state, meta = trainer.state_dict()
    meta.update(format=FORMAT, epoch=epoch, history=history.history if history is not None else {},
                history_epochs=history.epoch if history is not None else [], **(extra_meta or {}))
    tensors = {f"optimizer.{k}": np.ascontiguousarray(v) for k, v in state.items()}
    meta["callbacks"] = {}
    for i, cb in enumerate(callbacks):
        if hasattr(cb, "state_dict"):
            cb_meta, cb_tensors = cb.state_dict()
            meta["callbacks"][f"{i}:{type(cb).__name__}"] = cb_meta
            tensors.update({f"callback{i}.{k}": v for k, v in cb_tensors.items()})
    if not tensors:  # safetensors needs at least one tensor
        tensors["_empty"] = np.zeros(0, dtype=np.float32)
    _write_atomic(tmp / "trainer.safetensors", _st().save(tensors, metadata={"json": json.dumps(meta)}))
    _fsync_dir(tmp)
    if final.exists():  # re-saving an epoch (after a resume): replace it only once the new one is whole
        old = root / f".old-{final.name}-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(root)
    return final


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first (temporary leftovers are ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[6:].isdigit())


def latest(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def _read(file: Path):
    """Tensors and metadata of one safetensors file, or a ValueError naming the file."""
    if not file.is_file():
        raise ValueError(f"checkpoint file {file} is missing: the checkpoint is incomplete or was moved.")
    try:
        data = file.read_bytes()
        tensors = _st().load(data)
        (header_len,) = struct.unpack("<Q", data[:8])
        metadata = json.loads(data[8:8 + header_len]).get("__metadata__") or {}
    except Exception as exc:  # noqa: BLE001 - safetensors, struct and json each raise their own errors
        raise ValueError(f"checkpoint file {file} is unreadable (truncated or corrupted): {exc}") from exc
    return tensors, metadata


def load(path: Path) -> Checkpoint:
    """Read a checkpoint directory (or its ``model.safetensors``); nothing is modified."""
    path = Path(path)
    if path.is_file():
        path = path.parent
    if not path.is_dir():
        raise ValueError(f"checkpoint {path} does not exist.")
    tensors, model_meta = _read(path / "model.safetensors")
    if model_meta.get("format") != FORMAT:
        raise ValueError(f"checkpoint file {path / 'model.safetensors'} is not an xpnet checkpoint "
                         f"(format {model_meta.get('format')!r}, expected {FORMAT!r}).")
    n_layers = len(json.loads(model_meta["sizes"])) - 1
    try:
        weights = [(tensors[f"layer{i}.W"], tensors[f"layer{i}.b"]) for i in range(n_layers)]
    except KeyError as exc:
        raise ValueError(f"checkpoint file {path / 'model.safetensors'} lacks tensor {exc}.") from exc
    state_tensors, state_meta = _read(path / "trainer.safetensors")
    try:
        trainer_meta = json.loads(state_meta["json"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"checkpoint file {path / 'trainer.safetensors'} has no valid training state.") from exc
    return Checkpoint(path, weights, model_meta, state_tensors, trainer_meta)


def load_model(path, device=None, xp=None):
    """An :class:`~xpnet.MLP` from a ``model.safetensors`` file (a run's final weights) or a
    checkpoint directory, placed on ``device`` / ``xp``."""
    from .model import MLP

    path = Path(path)
    file = path / "model.safetensors" if path.is_dir() else path
    tensors, meta = _read(file)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{file} is not an xpnet weights file (format {meta.get('format')!r}, expected {FORMAT!r}).")
    model = MLP(json.loads(meta["sizes"]), activation=meta["activation"], dtype=meta["dtype"], init=meta["init"],
                seed=int(meta["seed"]), device=device, xp=xp)
    try:
        model.set_weights([(tensors[f"layer{i}.W"], tensors[f"layer{i}.b"]) for i in range(len(model.slots))])
    except KeyError as exc:
        raise ValueError(f"{file} lacks tensor {exc}.") from exc
    return model


def check_compatible(ckpt: Checkpoint, model) -> None:
    """Refuse a checkpoint whose architecture differs from ``model``'s, naming both."""
    theirs = (json.loads(ckpt.model_meta["sizes"]), ckpt.model_meta["activation"], ckpt.model_meta["dtype"])
    ours = (model.sizes, model.activation.name, model.dtype)
    if theirs != ours:
        raise ValueError(f"checkpoint {ckpt.path} holds a model with sizes {theirs[0]}, activation {theirs[1]!r}, "
                         f"dtype {theirs[2]}; this model has sizes {ours[0]}, activation {ours[1]!r}, dtype {ours[2]}.")


def restore(trainer, ckpt: Checkpoint, callbacks=()) -> None:
    """Put a checkpoint's weights and training state into ``trainer`` (checked first)."""
    check_compatible(ckpt, trainer.model)
    optimizer_state = {k[len("optimizer."):]: v for k, v in ckpt.state.items() if k.startswith("optimizer.")}
    trainer.model.set_weights(ckpt.weights)
    trainer.load_state_dict(optimizer_state, ckpt.trainer_meta)
    saved = ckpt.trainer_meta.get("callbacks", {})
    for i, cb in enumerate(callbacks):
        key = f"{i}:{type(cb).__name__}"
        if hasattr(cb, "load_state_dict") and key in saved:
            prefix = f"callback{i}."
            cb.load_state_dict(saved[key], {k[len(prefix):]: v for k, v in ckpt.state.items() if k.startswith(prefix)},
                               trainer)


def prune(root: Path, keep_last: int, keep: set[str] = frozenset()) -> None:
    """Delete all but the newest ``keep_last`` checkpoints, sparing the names in ``keep``,
    and the half-written leftovers of saving processes that no longer run."""
    found = list_checkpoints(root)
    for p in found[:-keep_last] if keep_last else found:
        if p.name not in keep:
            shutil.rmtree(p, ignore_errors=True)
    for p in Path(root).glob(".[to][ml][pd]-*"):  # .tmp-epoch-NNNN-PID, .old-epoch-NNNN-PID
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


# -- moving models into the wider ecosystem ---------------------------------------------------
def to_torch_state_dict(model) -> dict:
    """The weights as a ``torch.nn.Sequential`` state dict (``Linear`` layers at even indices)."""
    import torch

    state = {}
    for i, (W, b) in enumerate(model.get_weights()):
        state[f"{2 * i}.weight"] = torch.from_numpy(np.ascontiguousarray(W.T))  # torch stores (out, in)
        state[f"{2 * i}.bias"] = torch.from_numpy(b)
    return state


def to_torch(model):
    """A ``torch.nn.Sequential`` equal to ``model`` (Linear, activation, ..., Linear)."""
    import torch

    acts = {"identity": torch.nn.Identity, "relu": torch.nn.ReLU, "leaky_relu": lambda: torch.nn.LeakyReLU(0.01),
            "sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh, "gelu": lambda: torch.nn.GELU(approximate="tanh"),
            "silu": torch.nn.SiLU, "elu": torch.nn.ELU, "softplus": torch.nn.Softplus}
    layers = []
    dtype = getattr(torch, model.dtype)
    for i, (a, b) in enumerate(zip(model.sizes[:-1], model.sizes[1:])):
        layers.append(torch.nn.Linear(a, b, dtype=dtype))
        if i < len(model.sizes) - 2:
            layers.append(acts[model.activation.name]())
    seq = torch.nn.Sequential(*layers)
    seq.load_state_dict(to_torch_state_dict(model))
    return seq
