"""Callbacks that record a run: :class:`CSVLogger` (a row per epoch), :class:`ModelCheckpoint`
(checkpoints through ``xpnet.io.checkpoint``) and :class:`TensorBoard` (scalars through the
optional ``tensorboardX``: ``pip install 'xpnet[tensorboard]'``)."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..validation import check_bool, check_choice, check_str, invalid
from .callbacks import Callback
from .metrics import maximize

if TYPE_CHECKING:
    from .trainer import Trainer


def _path(name: str, value: Any) -> Path:
    if not isinstance(value, (str, Path)) or not str(value):
        raise invalid(name, value, "use a file system path (str or pathlib.Path)")
    return Path(value)


class CSVLogger(Callback):
    """One CSV row per epoch: ``epoch`` (0-based, as Keras), every log of ``fit`` (``loss``, metrics,
    ``val_*``, ``lr``) and ``epoch_time`` (seconds), flushed line by line so a crash loses nothing
    written.  An existing file is never overwritten silently: ``append=True`` adds rows (keeping its
    header's columns), ``overwrite=True`` replaces it; otherwise ``fit`` refuses with
    ``FileExistsError`` before training.  A second ``fit`` with the same logger continues its file."""

    def __init__(self, path: str | Path, append: bool = False, overwrite: bool = False, separator: str = ",") -> None:
        self.path = _path("path", path)
        self.append, self.overwrite = check_bool("append", append), check_bool("overwrite", overwrite)
        self.separator = check_str("separator", separator)
        self._file: IO[str] | None = None
        self._fields: list[str] | None = None
        self._started = False  # this logger has written the file: later fits continue it
        self._began = 0.0

    def on_train_begin(self, trainer: Trainer) -> None:
        exists = self.path.exists() and self.path.stat().st_size > 0
        if exists and not (self.append or self.overwrite or self._started):
            raise FileExistsError(f"CSVLogger: {self.path} exists; pass append=True to add rows to it or "
                                  "overwrite=True to replace it (or choose another path).")
        keep = exists and (self.append or self._started)
        if keep and self._fields is None:
            with self.path.open(newline="") as f:
                self._fields = next(csv.reader(f, delimiter=self.separator), None)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a" if keep else "w", newline="")
        if not keep:
            self._fields = None
        self._started = True

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None:
        self._began = time.perf_counter()

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        assert self._file is not None, "on_train_begin opens the file"
        row = {"epoch": epoch, **logs, "epoch_time": time.perf_counter() - self._began}
        writer = csv.writer(self._file, delimiter=self.separator)
        if self._fields is None:
            self._fields = list(row)
            writer.writerow(self._fields)
        writer.writerow([row.get(k, "") for k in self._fields])
        self._file.flush()

    def on_train_end(self, trainer: Trainer) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class ModelCheckpoint(Callback):
    """Save a checkpoint (``xpnet.io.checkpoint.save``: weights, optimizer, scheduler, RNG and the
    history, restorable with ``checkpoint.restore``) into directory ``path`` after each epoch, or
    with ``save_best_only`` only when ``monitor`` improves (``mode`` ``"min"``/``"max"``, or
    ``"auto"`` as EarlyStopping), keeping only that best one (the directory is this callback's).
    ``best`` / ``best_path`` hold the best value and its checkpoint."""

    def __init__(self, path: str | Path, monitor: str = "val_loss", mode: str = "auto",
                 save_best_only: bool = False) -> None:
        self.path = _path("path", path)
        self.monitor = check_str("monitor", monitor)
        mode = check_choice("mode", mode, ("auto", "min", "max"))
        self.maximize = mode == "max" or (mode == "auto" and maximize(monitor))
        self.save_best_only = check_bool("save_best_only", save_best_only)
        self.best: float | None = None
        self.best_path: Path | None = None
        self.last_path: Path | None = None

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        from ..io import checkpoint

        value = logs.get(self.monitor)
        if value is None and self.save_best_only:
            raise ValueError(f"ModelCheckpoint monitors {self.monitor!r}, which fit does not report (it reports "
                             f"{', '.join(logs)}): pass validation_data or validation_split, or choose a "
                             "reported monitor.")
        improved = value is not None and value == value and (  # NaN never improves
            self.best is None or (value > self.best if self.maximize else value < self.best))
        if self.save_best_only and not improved:
            return
        self.last_path = checkpoint.save(self.path, trainer, epoch, trainer.history)
        if improved:
            self.best, self.best_path = value, self.last_path
        if self.save_best_only:
            checkpoint.prune(self.path, keep_last=1)


class TensorBoard(Callback):
    """Write every epoch log (``loss``, metrics, ``val_*``, ``lr``) as a TensorBoard scalar at step
    ``epoch`` into ``log_dir``, through ``tensorboardX`` (``pip install 'xpnet[tensorboard]'``); each
    ``fit`` writes a new event file beside the earlier ones."""

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = _path("log_dir", log_dir)
        try:
            from tensorboardX import SummaryWriter
        except ImportError as exc:
            raise ImportError("TensorBoard logging needs tensorboardX: pip install 'xpnet[tensorboard]' "
                              "(or pip install tensorboardX).") from exc
        self._writer_type = SummaryWriter
        self.writer: Any = None

    def on_train_begin(self, trainer: Trainer) -> None:
        # tensorboardX names its file by the second (events.out.tfevents.SECONDS.HOST) and truncates one
        # that exists: a nanosecond suffix keeps an earlier fit's file (a resumed run in the same second)
        # purge_step: a resumed fit re-runs the epochs after its checkpoint; TensorBoard drops the earlier
        # file's events from that epoch on, so no epoch is shown twice
        self.writer = self._writer_type(str(self.log_dir), filename_suffix=f".{time.time_ns()}",
                                        purge_step=trainer.fit_plan.get("initial_epoch", 0) or None)

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        for k, v in logs.items():
            self.writer.add_scalar(k, v, epoch)
        self.writer.flush()

    def on_train_end(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
