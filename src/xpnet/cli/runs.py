"""Run directories for ``xpnet train``: config, history, curves, checkpoints, resume.

Layout of a run directory::

    config.toml          the resolved configuration (defaults < TOML file < flags)
    history.csv/.json    per-epoch metrics, rewritten atomically after every epoch
    curves.png           loss (and accuracy) curves, when matplotlib is installed
    checkpoints/         epoch-NNNN/ after NNNN epochs, epoch-NNNN-step-SSSSSS/ mid-epoch
                         (model.safetensors + trainer.safetensors + manifest.json); best.json
    model.safetensors    the final weights, with the preprocessing record in its metadata
    preprocessing.json   feature names, standardisation, classes, loss, split (see xpnet.io.artifact)
    split.npz            the train / val / test row indices
    result.json          test metrics of the final model
    extensions.json      each --resume --epochs N extension
    tensorboard/         TensorBoard event files (run.tensorboard = true)

Where a run may go, and what happens to the directory when it fails, is ``xpnet.cli.rundir``'s job.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import io
import json
import math
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..io import checkpoint
from ..train.callbacks import Callback, EarlyStopping
from ..train.metrics import maximize
from . import distrun
from .rundir import RUN_MARKER, RunDir

if TYPE_CHECKING:
    from ..distributed import Communicator
    from ..optim.lr_scheduler import LRScheduler
    from ..train.callbacks import History


def _write_text_atomic(path: Path, text: str) -> None:
    checkpoint.write_atomic(path, text.encode())


def default_run_dir(root="runs", name="run") -> Path:
    """``runs/NAME-YYYYmmdd-HHMMSS``, with ``-2``, ``-3``... when runs start in the same second."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path, n = Path(root) / f"{name}-{stamp}", 1
    while path.exists():
        n += 1
        path = Path(root) / f"{name}-{stamp}-{n}"
    return path


class Checkpointer(Callback):
    """Save a checkpoint after every ``save_every``-th epoch, every ``save_every_steps``-th optimizer
    step (mid-epoch, exactly resumable) and the last epoch (the end of the planned epochs, or an
    early stop); keep the newest ``keep_last`` and the best of the epoch-end ones (``best.json``: by
    ``monitor``, default ``val_loss`` or ``loss`` without validation data; scores such as
    ``val_f1_macro`` are maximized, losses minimized), and rewrite the history files.
    ``save_every=None`` saves no epoch by cadence when ``save_every_steps`` is set (every epoch
    otherwise).  A step that ends an epoch is saved as that epoch's checkpoint.  The first checkpoint
    commits the run (:meth:`RunDir.commit`): from then on it is kept."""

    def __init__(self, run: RunDir, keep_last: int = 3, monitor: str | None = None, extra_callbacks=(),
                 extra_meta: dict | None = None, save_every: int | None = 1, save_every_steps: int | None = None):
        self.run, self.keep_last, self.monitor, self.extra_meta = run, keep_last, monitor, extra_meta
        self.save_every = save_every if save_every is not None or save_every_steps else 1
        self.save_every_steps = save_every_steps
        self.extra_callbacks = extra_callbacks  # callbacks whose state is saved with the checkpoint
        self.history: History | None = None
        self._step_due = False  # a step cadence hit on an epoch's last step: saved at that epoch's end
        self.comm: Communicator | None = None

    @property
    def root(self) -> Path:
        return self.run.path / "checkpoints"

    def on_step_end(self, trainer):
        if not self.save_every_steps or trainer.step_count % self.save_every_steps:
            return
        if trainer.epoch_steps >= trainer.fit_plan.get("steps_per_epoch", math.inf):
            self._step_due = True
            return
        checkpoint.save_in_epoch(self.root, trainer, self.history, self.extra_callbacks, extra_meta=self.extra_meta)
        best = _read_best(self.root / "best.json")
        checkpoint.prune(self.root, self.keep_last, keep={best["checkpoint"]} if best else frozenset())
        self.run.commit()

    def on_epoch_end(self, trainer, epoch, logs):
        self._save_if_due(trainer, epoch, logs)
        if self.comm is not None:  # distributed: the other ranks wait here (every epoch) while rank 0 writes
            self.comm.barrier()

    def _save_if_due(self, trainer, epoch, logs):
        monitor = self.monitor or ("val_loss" if "val_loss" in logs else "loss")
        best = _read_best(self.root / "best.json")
        if best is not None and best.get("monitor") != monitor:  # the monitor changed (e.g. on resume)
            best = None
        higher = maximize(monitor)
        value = logs.get(monitor, -math.inf if higher else math.inf)
        improved = best is None or (math.isfinite(value) and (value > best["value"] if higher
                                                               else value < best["value"]))
        last = epoch + 1 >= getattr(trainer, "fit_plan", {}).get("epochs", 0) or trainer.stop_training
        due, self._step_due = self._step_due, False
        if not (last or due or (self.save_every and (epoch + 1) % self.save_every == 0)):
            write_history(self.run.path, self.history)  # best.json: the best of the saved epochs
            return
        path = checkpoint.save(self.root, trainer, epoch, self.history, self.extra_callbacks,
                               extra_meta=self.extra_meta)
        if improved or best is None:
            best = {"checkpoint": path.name, "monitor": monitor, "value": value, "epoch": epoch}
            _write_text_atomic(self.root / "best.json", json.dumps(_finite_or_null(best), indent=2))
        checkpoint.prune(self.root, self.keep_last, keep={best["checkpoint"]})
        write_history(self.run.path, self.history)
        self.run.commit()


def _read_best(file: Path) -> dict | None:
    """The best checkpoint's record; a missing or damaged one counts as none (it is rewritten)."""
    try:
        best = json.loads(file.read_text())
        return best if isinstance(best, dict) and isinstance(best.get("value"), (int, float)) else None
    except (OSError, ValueError):
        return None


def _finite_or_null(value):
    """JSON has no NaN or inf: such values are written as null (the status says why)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    return value


def write_history(run_dir: Path, history) -> None:
    keys = list(history.history)
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["epoch", *keys])
    for i, epoch in enumerate(history.epoch):
        writer.writerow([epoch + 1, *(history.history[k][i] for k in keys)])
    _write_text_atomic(Path(run_dir) / "history.csv", rows.getvalue())
    record = _finite_or_null({"epoch": [e + 1 for e in history.epoch], **history.history})
    _write_text_atomic(Path(run_dir) / "history.json", json.dumps(record, indent=2, allow_nan=False))


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
    if not epochs:  # e.g. diverged in the first epoch: nothing to draw
        return None
    panels = [k for k in ("loss", "accuracy") if k in h]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
    for ax, key in zip(axes[0], panels):
        ax.plot(epochs, h[key], marker=".", label=f"train {key}")
        if f"val_{key}" in h:
            ax.plot(epochs, h[f"val_{key}"], marker=".", label=f"validation {key}")
        positive = all(v > 0 for v in h[key] + h.get(f"val_{key}", []) if v is not None)
        ax.set(xlabel="epoch", ylabel=key, yscale="log" if key == "loss" and positive else "linear")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    out = Path(run_dir) / "curves.png"
    tmp = out.with_name("curves.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, out)
    return out


def build(config: dict, data_shapes, comm=None, steps_per_epoch: int | None = None):
    """Model, trainer and callbacks for a configuration (before any data is seen); ``comm``:
    distributed training (the model goes on the GPU of this rank for an NCCL communicator);
    ``steps_per_epoch``: optimizer steps per epoch, needed by a schedule that steps per step."""
    from .. import MLP, Trainer
    from ..optim import OPTIMIZERS

    m, t = config["model"], config["train"]
    n_features, n_outputs = data_shapes
    model = MLP([n_features, *m["hidden"], n_outputs], activation=m["activation"], dtype=m["dtype"],
                seed=t["seed"], init=m["init"], device=comm.device if comm is not None and comm.kind == "nccl"
                else m["device"], dropout=m["dropout"])
    kwargs = {"lr": t["lr"]}
    if t["weight_decay"] is not None:
        kwargs["weight_decay"] = t["weight_decay"]
    if t["momentum"] is not None:  # config.validate allows it for sgd and rmsprop only
        kwargs["momentum"] = t["momentum"]
    optimizer = OPTIMIZERS[t["optimizer"]](**kwargs)
    scheduler = build_scheduler(config, optimizer, steps_per_epoch)
    trainer = Trainer(model, loss=t["loss"], optimizer=optimizer, scheduler=scheduler, metrics=t["metrics"],
                      clip_grad_norm=t["clip_grad_norm"], precision=t["precision"], distributed=comm)
    callbacks = []
    if t["early_stopping"]:
        callbacks.append(EarlyStopping(monitor=monitor_of(config), patience=t["patience"],
                                       restore_best_weights=True))
    return trainer, callbacks


def build_scheduler(config: dict, optimizer, steps_per_epoch: int | None = None) -> LRScheduler | None:
    """The learning-rate schedule of ``train.schedule`` (None: a constant lr without warm-up).

    ``plateau``: ReduceLROnPlateau on the run's monitor; ``onecycle``: OneCycleLR from ``train.lr / 25``
    up to ``train.lr`` and down over every step of the run (cycling momentum or beta1 when the
    optimizer has one); the others per epoch, or cosine and the linear warm-up per optimizer step
    with ``schedule_interval = "step"`` (``warmup_epochs`` then ramps over that many epochs' steps)."""
    from ..optim import CosineAnnealingLR, ExponentialLR, LinearLR, OneCycleLR, ReduceLROnPlateau, SequentialLR, StepLR
    from ..optim.lr_scheduler import cycled_momentum
    from .config import schedule_interval

    t = config["train"]
    epochs, interval = t["epochs"], schedule_interval(t)
    if t["schedule"] == "plateau":
        monitor = monitor_of(config)
        return ReduceLROnPlateau(optimizer, mode="max" if maximize(monitor) else "min", factor=t["plateau_factor"],
                                 patience=t["plateau_patience"], monitor=monitor)
    per = 1 if interval == "epoch" else _steps_per_epoch(steps_per_epoch, t["schedule"])
    if t["schedule"] == "onecycle":
        return OneCycleLR(optimizer, max_lr=t["lr"], total_steps=epochs * per,
                          cycle_momentum=cycled_momentum(optimizer) is not None)
    warm = t["warmup_steps"] or t["warmup_epochs"] * per
    if warm >= epochs * per:  # only warmup_steps: warmup_epochs >= epochs is refused by config.validate
        raise ValueError(f"train.warmup_steps = {warm} leaves no step after the warm-up: the run takes "
                         f"{epochs * per} optimizer steps ({epochs} epochs x {per}); use fewer warm-up steps.")
    main = {"constant": None,
            "cosine": lambda: CosineAnnealingLR(optimizer, T_max=max(1, epochs * per - warm), interval=interval),
            "step": lambda: StepLR(optimizer, step_size=max(1, epochs // 3), gamma=0.1),
            "exponential": lambda: ExponentialLR(optimizer, gamma=0.95)}[t["schedule"]]
    scheduler: LRScheduler | None = main() if main else None
    if warm:
        warmup = LinearLR(optimizer, start_factor=0.1, total_iters=warm, interval=interval)
        scheduler = (SequentialLR(optimizer, [warmup, scheduler], [warm], interval=interval) if scheduler
                     else warmup)
    return scheduler


def _steps_per_epoch(steps_per_epoch: int | None, schedule: str) -> int:
    if steps_per_epoch is None:
        raise ValueError(f"train.schedule = {schedule!r} per optimizer step needs the steps per epoch: pass "
                         "steps_per_epoch (the number of batches of the training data).")
    return steps_per_epoch


def monitor_of(config: dict) -> str:
    """``train.monitor``, or by default ``val_loss`` (``loss`` without validation data)."""
    return config["train"]["monitor"] or ("val_loss" if config["data"]["val_fraction"] else "loss")


def train(config: dict, run_dir: Path, resume: bool = False, verbose: bool | int = True, overwrite: bool = False,
          accept_config_changes: bool = False, extend_to: int | None = None) -> dict:
    """Run (or resume) a configured training in ``run_dir``; returns the result dict, whose
    ``status`` is ``"completed"``, ``"diverged"`` or ``"interrupted"`` (SIGINT / SIGTERM).

    Data and model are built first, so a bad data file or config fails before the run
    directory is created or touched; see :mod:`xpnet.cli.rundir` for what a failure leaves.
    A resumed run whose ``config.toml`` was edited since it started is refused (the changed
    keys are named) unless ``accept_config_changes``.  ``extend_to`` (with ``resume``) sets
    ``train.epochs`` to a new total: the run continues from its last checkpoint to that epoch,
    with the learning-rate schedule rebuilt for the new total at the epoch reached (the change is
    written to config.toml and recorded in ``extensions.json``).
    """
    if extend_to is not None:
        from . import config as config_mod

        config["train"]["epochs"] = extend_to
        config_mod.validate(config)
    comm = distrun.job(config["model"]["device"])  # None unless started by mpiexec / srun
    with distrun.agreed():  # a bad data file or model on any rank ends every rank alike
        check_tensorboard(config)
        if comm is not None and comm.size > 1 and config["run"].get("save_every_steps"):
            raise ValueError("run.save_every_steps (mid-epoch checkpoints) is not supported with distributed "
                             "training yet: rank 0 would save only its share of the epoch's metrics. Use "
                             "run.save_every (epochs).")
        parts, prep, indices = _load_data(config)
        steps = -(-parts["train"][0].shape[0] // config["train"]["batch_size"])  # as fit counts them
        trainer, callbacks = build(config, (parts["train"][0].shape[1], _n_outputs(config, parts)), comm, steps)
    if comm is not None and comm.rank != 0:  # rank 0 owns the run directory; this rank writes nothing
        return distrun.follow(comm, config, parts, trainer, callbacks, resume, _streamed(parts))
    with distrun.agreed():
        run = RunDir.resume(run_dir) if resume else RunDir.start(run_dir, overwrite)
    finished = False
    try:
        history = _fit(config, run, parts, trainer, callbacks, resume, verbose, accept_config_changes, prep, indices,
                       extend_to)
        if history.interrupted:
            return _interrupted(run, history)
        run.commit()  # a run that diverged in its first epoch still reports, in full
        finished = True
        try:
            return _finish(run, parts, trainer, history, prep)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(f"interrupted while writing the results; the checkpoints are intact: finish "
                                    f"with xpnet train --resume {run.final}") from None
    finally:
        run.close(failed=not finished)


def check_tensorboard(config: dict) -> None:
    """``run.tensorboard = true`` needs tensorboardX: refused before any data is loaded or any
    directory is made."""
    if not config["run"].get("tensorboard"):
        return
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        raise ValueError("run.tensorboard = true needs tensorboardX: pip install 'xpnet[tensorboard]' (or pip "
                         "install tensorboardX), or leave out --tensorboard / set run.tensorboard = false.") from None


def _load_data(config: dict):
    """The split data, the preprocessing record and the split's row indices; ``train.loss = "auto"``
    is resolved here (and saved resolved in the run's config.toml, so a resume is exact)."""
    from ..data import prepare_run_data
    from ..io import artifact

    parts, info = prepare_run_data(config["data"], config["train"]["loss"], config["train"]["seed"])
    if info["loss_reason"]:
        config["train"]["loss"] = info["loss"]
        print(f"loss: {info['loss']} ({info['loss_reason']}; set --loss to choose another)")
    return parts, artifact.record(info, data_fingerprint(config["data"])), info["split"]["indices"]


def _n_outputs(config: dict, parts) -> int:
    """Classes (labels were checked by ``data.targets_for_loss``) or target columns."""
    y_train = parts["train"][1]
    if y_train.ndim == 1:
        return int(max(v[1].max() for v in parts.values() if len(v[1])) + 1)
    return y_train.shape[1]


def _fit(config, run: RunDir, parts, trainer, callbacks, resume: bool, verbose: bool | int, accept_changes: bool,
         prep: dict, indices: dict, extend_to: int | None = None):
    from ..io import artifact
    from ..train.callbacks import History
    from . import config as config_mod

    history, initial_epoch = History(), 0
    if resume:
        with distrun.agreed():  # a checkpoint that cannot be resumed ends every rank alike
            ckpt = _restore(run, config, trainer, callbacks, history, verbose, accept_changes,
                            extending=extend_to is not None)
            initial_epoch = ckpt.epoch + 1
            if extend_to is not None and extend_to <= initial_epoch:
                raise ValueError(f"--resume {run.path} --epochs {extend_to}: the run has already trained "
                                 f"{initial_epoch} epochs; give a larger total.")
        if trainer.distributed is not None:  # every rank continues from the same checkpoint
            trainer.distributed.bcast_obj(ckpt, root=0)
        if extend_to is not None:
            _note_rebuilt_schedule(trainer, ckpt, extend_to, verbose)
            _record_extension(run.path, initial_epoch, extend_to)
            _write_text_atomic(run.path / RUN_MARKER, config_mod.dump_toml(config))
    else:
        _write_text_atomic(run.path / RUN_MARKER, config_mod.dump_toml(config))
    artifact.write(run.path, prep, indices)
    checkpointer = Checkpointer(run, keep_last=config["run"]["keep_last"], extra_callbacks=callbacks,
                                monitor=config["train"]["monitor"],
                                save_every=config["run"]["save_every"],
                                save_every_steps=config["run"].get("save_every_steps"),
                                extra_meta={"run_config": config, "data_files": prep["split"]["data_files"],
                                            "preprocessing": prep})
    checkpointer.history = history
    checkpointer.comm = trainer.distributed
    t = config["train"]
    loggers = _loggers(config, run)
    if initial_epoch < t["epochs"]:
        val = parts["val"] if len(parts["val"][1]) else None
        with _stop_on_signals(trainer):
            trainer.fit(*parts["train"], epochs=t["epochs"], batch_size=t["batch_size"], validation_data=val,
                        callbacks=[*callbacks, *loggers, checkpointer], verbose=verbose, initial_epoch=initial_epoch,
                        history=history, data_on_device=_streamed(parts))
    return history


def _loggers(config: dict, run: RunDir) -> list[Callback]:
    """``run.tensorboard``: TensorBoard scalars (every epoch log) in RUN_DIR/tensorboard -- written
    in the staging directory of a replacing run, which becomes the run directory at its first
    checkpoint.  (history.csv / history.json, rewritten every epoch, are the CSV log.)"""
    if not config["run"].get("tensorboard"):
        return []
    from ..train import TensorBoard

    return [TensorBoard(run.path / "tensorboard")]


def _note_rebuilt_schedule(trainer, ckpt: checkpoint.Checkpoint, extend_to: int, verbose: bool | int) -> None:
    """--epochs N on --resume: the schedule is the one a run of N epochs has, at the step reached
    (cosine's and onecycle's length, step's step size); say so when that moves the lr."""
    before, after = ckpt.trainer_meta["optimizer"]["lr"], trainer.optimizer.lr
    if verbose and trainer.scheduler is not None and before != after:
        print(f"learning-rate schedule rebuilt for {extend_to} epochs: the lr continues at {after:.4g} "
              f"(it was {before:.4g})")


def _streamed(parts):
    """False (stream host batches) for memory-mapped data; None (the trainer decides) otherwise."""
    import numpy as np

    return False if isinstance(parts["train"][0], np.memmap) else None


def _record_extension(run_dir: Path, from_epochs: int, to_epochs: int) -> None:
    """Append ``{"at": ..., "from_epochs", "to_epochs"}`` to ``extensions.json`` (atomically)."""
    path = Path(run_dir) / "extensions.json"
    try:
        records = json.loads(path.read_text())
    except (OSError, ValueError):
        records = []
    records.append({"at": datetime.datetime.now().isoformat(timespec="seconds"), "trained_epochs": from_epochs,
                    "to_epochs": to_epochs})
    _write_text_atomic(path, json.dumps(records, indent=2))


def _restore(run: RunDir, config, trainer, callbacks, history, verbose: bool | int, accept_changes: bool,
             extending: bool = False) -> checkpoint.Checkpoint:
    """Restore the last intact checkpoint of ``run`` into ``trainer``; returns it."""
    last = checkpoint.latest_intact(run.path / "checkpoints")
    if last is None:
        found = checkpoint.list_checkpoints(run.path / "checkpoints")
        if found:
            raise ValueError(f"--resume {run.path}: none of its {len(found)} checkpoint(s) is intact, so there is "
                             f"nothing to resume from; start the run again with --run-dir {run.path} --overwrite.")
        raise ValueError(f"--resume {run.path}: the run never completed an epoch, so there is no checkpoint to "
                         f"resume from; start it again with --run-dir {run.path} (the directory is reused).")
    found = checkpoint.list_checkpoints(run.path / "checkpoints")
    newer = [p.name for p in found[found.index(last) + 1:]]
    if newer:
        print(f"warning: skipping damaged checkpoint(s) {', '.join(newer)}; resuming from {last.name}.",
              file=sys.stderr)
    ckpt = checkpoint.load(last)
    changed = config_changes(ckpt.trainer_meta.get("run_config"), config)
    if extending:  # --epochs with --resume: the one change that is asked for
        changed = [c for c in changed if not c.startswith("train.epochs:")]
    changed += data_changes(ckpt.trainer_meta.get("data_files"), config["data"])
    if changed and not accept_changes:
        raise ValueError(f"--resume {run.path}: its configuration or data changed since the run started ("
                         f"{'; '.join(changed)}), which would change the run. Restore them, or pass "
                         "--accept-config-changes to continue with the changed ones.")
    checkpoint.restore(trainer, ckpt, callbacks)
    meta = ckpt.trainer_meta
    for i, epoch in enumerate(meta["history_epochs"]):
        history.append(epoch, {k: v[i] for k, v in meta["history"].items()})
    if verbose:
        where = f"{ckpt.epoch + 1} of {config['train']['epochs']} epochs done"
        if ckpt.in_epoch is not None:
            where += f", {ckpt.in_epoch['steps']} steps into epoch {ckpt.epoch + 2}"
        print(f"resuming {run.path} from {last.name} ({where})"
              + (f" with changed config: {'; '.join(changed)}" if changed else ""))
    return ckpt


def data_fingerprint(data_cfg: dict) -> dict:
    """SHA-256 of each data file the run reads (none for digits and synthetic data)."""
    import hashlib

    prints = {}
    for key in ("path", "x_path", "y_path"):
        if data_cfg.get(key):
            digest = hashlib.sha256()
            with open(data_cfg[key], "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            prints[data_cfg[key]] = digest.hexdigest()
    return prints


def data_changes(saved: dict | None, data_cfg: dict) -> list[str]:
    """``"<file>: contents changed"`` for each data file that differs from when the run started."""
    if not saved:
        return []
    now = data_fingerprint(data_cfg)
    return [f"{name}: its contents changed" for name, digest in now.items() if saved.get(name, digest) != digest]


# keys that do not change what a resumed run computes
_NEUTRAL_KEYS = frozenset({"run.dir", "run.keep_last", "run.save_every", "run.save_every_steps", "run.tensorboard"})


def config_changes(saved: dict | None, current: dict) -> list[str]:
    """``"section.key: old -> new"`` for every key whose value differs (none if nothing was saved);
    a key the saved config lacks (a run started before the key existed) counts as its default."""
    from .config import defaults

    if saved is None:
        return []
    flat = {f"{s}.{k}": v for s, keys in defaults().items() for k, v in keys.items()}
    flat.update({f"{s}.{k}": v for s, keys in saved.items() for k, v in keys.items()})
    now = {f"{s}.{k}": v for s, keys in current.items() for k, v in keys.items()}
    return [f"{key}: {flat.get(key)!r} -> {now.get(key)!r}" for key in sorted(flat.keys() | now.keys())
            if key not in _NEUTRAL_KEYS and flat.get(key) != now.get(key)]


@contextlib.contextmanager
def _stop_on_signals(trainer):
    """SIGINT (Ctrl-C) and SIGTERM stop training at the next step boundary; a second one acts
    at once (the signal's previous behaviour), and atomic checkpoint writes keep that safe.  An
    error raised after a signal (e.g. a second Ctrl-C inside a compiler) is reported as the
    interrupt it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[signal.Signals, Any] = {}
    received: list[str] = []

    def stop(signum, frame):
        received.append(signal.Signals(signum).name)
        signal.signal(signum, previous[signum])
        trainer.interrupt(f"interrupted by {received[0]}")

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, stop)
    try:
        yield
    except Exception as exc:
        if received:
            raise KeyboardInterrupt(f"interrupted by {received[0]} ({type(exc).__name__} on the way out); the "
                                    "last checkpoint is intact: resume the run with xpnet train --resume") from exc
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interrupted(run: RunDir, history) -> dict:
    last = checkpoint.latest(run.path / "checkpoints")
    if last is None:
        kept = (f"the previous run in {run.final} is unchanged" if run.replaces else
                f"no epoch was completed, so nothing was kept in {run.final}")
        advice = f"{kept}; start again with the same command."
    else:
        write_history(run.path, history)
        advice = f"the last checkpoint is {last.name}; continue with: xpnet train --resume {run.final}"
    return {"status": "interrupted", "stop_reason": f"{history.stop_reason}; {advice}",
            "epochs_run": len(history.epoch)}


def _finish(run: RunDir, parts, trainer, history, prep: dict) -> dict:
    """Final weights (with the preprocessing record), history, curves and ``result.json`` of a run
    that ran to its end."""
    from ..io import artifact

    checkpoint.save_weights(run.path / "model.safetensors", trainer.model,
                            extra_metadata={artifact.WEIGHTS_KEY: artifact.to_json(prep)})
    write_history(run.path, history)
    plot_curves(run.path, history)
    result = {"status": "diverged" if history.diverged else "completed", "epochs_run": len(history.epoch),
              "stop_reason": history.stop_reason, "train": trainer.evaluate(*parts["train"])}
    if len(parts["test"][1]):
        result["test"] = trainer.evaluate(*parts["test"])
    _write_text_atomic(run.path / "result.json", json.dumps(_finite_or_null(result), indent=2, allow_nan=False))
    result["trainer"] = trainer
    return result


stop_on_signals = _stop_on_signals  # public name: distributed ranks (cli.distrun) stop the same way
