"""Run directories for ``xpnet train``: config, history, curves, checkpoints, resume.

Layout of a run directory::

    config.toml          the resolved configuration (defaults < TOML file < flags)
    history.csv/.json    per-epoch metrics, rewritten atomically after every epoch
    curves.png           loss (and accuracy) curves, when matplotlib is installed
    checkpoints/         epoch-NNNN/ (model.safetensors + trainer.safetensors); best.json
    model.safetensors    the final weights
    result.json          test metrics of the final model

An existing run directory is never overwritten unless ``overwrite=True`` is asked for.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import math
import os
import shutil
from pathlib import Path

from . import checkpoint
from .callbacks import Callback, EarlyStopping

RUN_MARKER = "config.toml"


def _write_text_atomic(path: Path, text: str) -> None:
    checkpoint._write_atomic(path, text.encode())


def prepare_run_dir(path, overwrite: bool = False) -> Path:
    """Create ``path`` for a new run; refuse one that already holds files unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"run directory {path} is a file: choose another --run-dir.")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise ValueError(f"run directory {path} already holds files; nothing was changed. Resume it with "
                             f"--resume {path}, choose another --run-dir, or pass --overwrite to replace it.")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_run_dir(root="runs", name="run") -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{name}-{stamp}"


class Checkpointer(Callback):
    """Save a checkpoint after every epoch, keep the newest ``keep_last`` and the best one,
    and rewrite the history files, so a killed run loses at most one epoch."""

    def __init__(self, run_dir: Path, keep_last: int = 3, monitor: str | None = None, extra_callbacks=()):
        self.run_dir, self.keep_last, self.monitor = Path(run_dir), keep_last, monitor
        self.extra_callbacks = extra_callbacks  # callbacks whose state is saved with the checkpoint
        self.history = None

    @property
    def root(self) -> Path:
        return self.run_dir / "checkpoints"

    def on_epoch_end(self, trainer, epoch, logs):
        monitor = self.monitor or ("val_loss" if "val_loss" in logs else "loss")
        path = checkpoint.save(self.root, trainer, epoch, self.history, self.extra_callbacks)
        best_file = self.root / "best.json"
        best = json.loads(best_file.read_text()) if best_file.is_file() else None
        value = logs.get(monitor, math.inf)
        if best is None or (math.isfinite(value) and value < best["value"]):
            best = {"checkpoint": path.name, "monitor": monitor, "value": value, "epoch": epoch}
            _write_text_atomic(best_file, json.dumps(best, indent=2))
        checkpoint.prune(self.root, self.keep_last, keep={best["checkpoint"]})
        write_history(self.run_dir, self.history)


def write_history(run_dir: Path, history) -> None:
    keys = list(history.history)
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["epoch", *keys])
    for i, epoch in enumerate(history.epoch):
        writer.writerow([epoch + 1, *(history.history[k][i] for k in keys)])
    _write_text_atomic(Path(run_dir) / "history.csv", rows.getvalue())
    _write_text_atomic(Path(run_dir) / "history.json",
                       json.dumps({"epoch": [e + 1 for e in history.epoch], **history.history}, indent=2))


def plot_curves(run_dir: Path, history) -> Path | None:
    """Loss (and accuracy) per epoch as ``curves.png``; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    h = history.history
    epochs = [e + 1 for e in history.epoch]
    panels = [k for k in ("loss", "accuracy") if k in h]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
    for ax, key in zip(axes[0], panels):
        ax.plot(epochs, h[key], marker=".", label=f"train {key}")
        if f"val_{key}" in h:
            ax.plot(epochs, h[f"val_{key}"], marker=".", label=f"validation {key}")
        ax.set(xlabel="epoch", ylabel=key, yscale="log" if key == "loss" else "linear")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    out = Path(run_dir) / "curves.png"
    tmp = out.with_name("curves.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, out)
    return out


def build(config: dict, data_shapes):
    """Model, trainer and callbacks for a configuration (before any data is seen)."""
    from . import MLP, Trainer
    from .optim import OPTIMIZERS, CosineAnnealingLR, ExponentialLR, LinearLR, SequentialLR, StepLR

    m, t = config["model"], config["train"]
    n_features, n_outputs = data_shapes
    model = MLP([n_features, *m["hidden"], n_outputs], activation=m["activation"], dtype=m["dtype"],
                seed=t["seed"], init=m["init"], device=m["device"])
    kwargs = {"lr": t["lr"]}
    if t["weight_decay"] is not None:
        kwargs["weight_decay"] = t["weight_decay"]
    if t["momentum"] is not None:
        if t["optimizer"] not in ("sgd", "rmsprop"):
            raise ValueError(f"config: train.momentum applies to sgd and rmsprop, not {t['optimizer']!r}.")
        kwargs["momentum"] = t["momentum"]
    optimizer = OPTIMIZERS[t["optimizer"]](**kwargs)
    epochs, warm = t["epochs"], t["warmup_epochs"]
    main = {"constant": None,
            "cosine": lambda: CosineAnnealingLR(optimizer, T_max=max(1, epochs - warm)),
            "step": lambda: StepLR(optimizer, step_size=max(1, epochs // 3), gamma=0.1),
            "exponential": lambda: ExponentialLR(optimizer, gamma=0.95)}[t["schedule"]]
    scheduler = main() if main else None
    if warm:
        warmup = LinearLR(optimizer, start_factor=0.1, total_iters=warm)
        scheduler = SequentialLR(optimizer, [warmup, scheduler], [warm]) if scheduler else warmup
    trainer = Trainer(model, loss=t["loss"], optimizer=optimizer, scheduler=scheduler,
                      clip_grad_norm=t["clip_grad_norm"], precision=t["precision"])
    callbacks = []
    if t["early_stopping"]:
        callbacks.append(EarlyStopping(monitor="val_loss" if config["data"]["val_fraction"] else "loss",
                                       patience=t["patience"], restore_best_weights=True))
    return trainer, callbacks


def train(config: dict, run_dir: Path, resume: bool = False, verbose: bool = True, overwrite: bool = False) -> dict:
    """Run (or resume) a configured training in ``run_dir``; returns the final result dict.

    Data and model are built first, so a bad data file or config fails before the run
    directory is created or touched.
    """
    from . import config as config_mod
    from .callbacks import History
    from .data import load_for_run
    from .losses import get_loss

    run_dir = Path(run_dir)
    regression = not get_loss(config["train"]["loss"]).classification
    parts = load_for_run(config["data"], regression, config["train"]["seed"])
    X_train, y_train = parts["train"]
    if config["train"]["loss"] == "cross_entropy":
        n_out = int(max(v[1].max() for v in parts.values() if len(v[1])) + 1) if y_train.ndim == 1 else y_train.shape[1]
    else:
        n_out = 1 if y_train.ndim == 1 else y_train.shape[1]
    trainer, callbacks = build(config, (X_train.shape[1], n_out))
    checkpointer = Checkpointer(run_dir, keep_last=config["run"]["keep_last"], extra_callbacks=callbacks)
    history, initial_epoch = History(), 0
    if resume:
        last = checkpoint.latest(checkpointer.root)
        if last is None:
            raise ValueError(f"--resume {run_dir}: it has no complete checkpoint to resume from.")
        ckpt = checkpoint.load(last)
        checkpoint.restore(trainer, ckpt, callbacks)
        for e, i in zip(ckpt.trainer_meta["history_epochs"], range(len(ckpt.trainer_meta["history_epochs"]))):
            history.append(e, {k: v[i] for k, v in ckpt.trainer_meta["history"].items()})
        initial_epoch = ckpt.epoch + 1
        if verbose:
            print(f"resuming {run_dir} from {last.name} (epoch {initial_epoch} of {config['train']['epochs']})")
    else:
        prepare_run_dir(run_dir, overwrite=overwrite)
        _write_text_atomic(run_dir / RUN_MARKER, config_mod.dump_toml(config))
    checkpointer.history = history
    val = parts["val"] if len(parts["val"][1]) else None
    if initial_epoch < config["train"]["epochs"]:
        trainer.fit(X_train, y_train, epochs=config["train"]["epochs"], batch_size=config["train"]["batch_size"],
                    validation_data=val, callbacks=[*callbacks, checkpointer], verbose=verbose,
                    initial_epoch=initial_epoch, history=history)
    checkpoint.save_weights(run_dir / "model.safetensors", trainer.model)
    write_history(run_dir, history)
    plot_curves(run_dir, history)
    result = {"epochs_run": len(history.epoch), "stop_reason": history.stop_reason,
              "train": trainer.evaluate(X_train, y_train)}
    if len(parts["test"][1]):
        result["test"] = trainer.evaluate(*parts["test"])
    _write_text_atomic(run_dir / "result.json", json.dumps(result, indent=2))
    result["trainer"] = trainer
    return result
