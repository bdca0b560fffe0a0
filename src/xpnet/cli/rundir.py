"""Run directories that never lose a user's files: locked, built beside the old run, swapped in.

A directory belongs to xpnet when it holds a ``config.toml`` and nothing but the files a run
writes, at any depth (:func:`foreign_entries`), and either the owner mark ``.xpnet-run`` that
every new run writes first or a checkpoint.  The rules, each tested in
``tests/test_reliability_cli.py``:

* A new run goes into an empty or new directory, never into another run's folder.  Until its
  first checkpoint (or its end) it is *tentative*: if it fails or is interrupted before then,
  everything it wrote is removed, so a retry finds the directory as it was.
* A directory holding only an xpnet run that never completed an epoch (killed before its first
  checkpoint; recognised by the owner mark) is reused.  A folder with the user's own files --
  even a hand-written ``config.toml`` alone -- is refused.
* ``overwrite=True`` replaces only an xpnet run directory -- never a folder holding anything
  else (the current directory, the data folder, a file inside ``checkpoints/``), never through
  a symbolic link -- and only once the new run has started cleanly: the new run is built in a
  hidden sibling and swapped in at its first checkpoint; until then the old run is untouched.
  Hidden siblings left by killed processes are removed by the next start.
* Every run directory is locked (``flock``) while a process trains in it, so two processes
  never train in (or resume) the same directory at once.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
from pathlib import Path

RUN_MARKER = "config.toml"
OWNER_MARK = ".xpnet-run"  # written first by every new run: proof that xpnet made the directory
RUN_FILES = frozenset({RUN_MARKER, OWNER_MARK, "history.csv", "history.json", "curves.png", "model.safetensors",
                       "result.json", "preprocessing.json", "split.npz", "extensions.json"})
CHECKPOINT_FILES = frozenset({"model.safetensors", "trainer.safetensors", "manifest.json"})
_CHECKPOINT_DIR = re.compile(r"epoch-\d+|\.(tmp|old)-epoch-\d+-\d+")
TENSORBOARD_DIR = "tensorboard"  # run.tensorboard: event files (events.out.tfevents.*) only


class RunDirError(ValueError):
    """A run directory cannot be used as asked; nothing was changed."""


def _is_temporary(name: str) -> bool:
    return name.endswith(".tmp") or name == "curves.tmp.png"


def _plain_file(p: Path) -> bool:
    return p.is_file() and not p.is_symlink()


def foreign_entries(path: Path) -> list[str]:
    """Paths below ``path`` (relative, at any depth) that an xpnet run does not write."""
    found = []
    for p in path.iterdir():
        if _plain_file(p) and (p.name in RUN_FILES or _is_temporary(p.name)):
            continue
        if p.name == "checkpoints" and p.is_dir() and not p.is_symlink():
            found += [f"checkpoints/{name}" for name in _foreign_in_checkpoints(p)]
        elif p.name == TENSORBOARD_DIR and p.is_dir() and not p.is_symlink():
            found += [f"{TENSORBOARD_DIR}/{f.name}" for f in p.iterdir()
                      if not (_plain_file(f) and f.name.startswith("events.out.tfevents."))]
        else:
            found.append(p.name)
    return sorted(found)


def _foreign_in_checkpoints(root: Path):
    for p in root.iterdir():
        if _plain_file(p) and (p.name == "best.json" or _is_temporary(p.name)):
            continue
        if not (p.is_dir() and not p.is_symlink() and _CHECKPOINT_DIR.fullmatch(p.name)):
            yield p.name
            continue
        for f in p.iterdir():
            if not (_plain_file(f) and (f.name in CHECKPOINT_FILES or _is_temporary(f.name))):
                yield f"{p.name}/{f.name}"


def has_trained(path: Path) -> bool:
    """Whether the run in ``path`` completed an epoch (a checkpoint or final weights exist)."""
    from ..io.checkpoint import list_checkpoints

    return (path / "model.safetensors").exists() or bool(list_checkpoints(path / "checkpoints"))


def is_run_dir(path: Path) -> bool:
    """A directory xpnet made and holds nothing else (what ``overwrite`` may replace)."""
    if not path.is_dir() or not (path / RUN_MARKER).is_file() or foreign_entries(path):
        return False
    return (path / OWNER_MARK).is_file() or has_trained(path)


def _inside_a_run(path: Path) -> Path | None:
    """The run directory that ``path`` would sit inside, if any."""
    for parent in path.resolve().parents:
        if (parent / OWNER_MARK).is_file() or ((parent / RUN_MARKER).is_file() and (parent / "checkpoints").is_dir()):
            return parent
    return None


def _remove_stale_siblings(final: Path) -> None:
    """Hidden staging copies (``.NAME.xpnet-new-PID``) left by processes killed mid-start or
    mid-swap: no process holds their lock any more, so they are removed."""
    for p in final.parent.glob(f".{final.name}.xpnet-*-*"):
        if p.is_dir() and not p.is_symlink():
            try:
                lock = _Lock(p, "staging directory")
            except RunDirError:
                continue  # a live process is building it
            lock.release()
            shutil.rmtree(p, ignore_errors=True)


def _exchange(a: Path, b: Path) -> None:
    """Swap two directories atomically (Linux ``renameat2(RENAME_EXCHANGE)``), or with three
    renames where that is missing -- a crash between them leaves both runs, hidden, never neither."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        at_fdcwd, rename_exchange = -100, 2
        if libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
            return
    except (AttributeError, OSError):
        pass
    parked = b.parent / f".{b.name}.xpnet-old-{os.getpid()}"
    os.rename(b, parked)
    os.rename(a, b)
    os.rename(parked, a)


class _Lock:
    """An exclusive ``flock`` on a directory, held until :meth:`release`."""

    def __init__(self, path: Path, what: str):
        self.fd = None
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no locking
            return
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunDirError(f"{what} {path} is in use by another xpnet process (it is locked); wait for "
                              "that run to end, or choose another --run-dir.") from None
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the lock
            self.fd = None


class RunDir:
    """Where a run writes (:attr:`path`), and the bookkeeping that keeps failures harmless.

    Use :meth:`start` for a new run and :meth:`resume` for an existing one; call
    :meth:`commit` once the run has started cleanly (its first checkpoint) and
    :meth:`close` at the end, with ``failed=True`` when it ended by an exception or before
    it committed, to remove whatever a tentative run wrote.
    """

    def __init__(self, final: Path, path: Path, replaces: bool, created: bool, locks: list[_Lock]):
        self.final, self.path = final, path  # path: the staging sibling until commit when replacing
        self.replaces, self.created, self.locks = replaces, created, locks
        self.committed = False

    @staticmethod
    def check_start(final, overwrite: bool = False) -> str:
        """How a new run would use ``final`` -- ``"new"``, ``"reuse"`` (a run that never completed
        an epoch) or ``"replace"`` -- or a :class:`RunDirError`; nothing is changed."""
        final = Path(final)
        if str(final).strip() == "":
            raise RunDirError("--run-dir is empty: give a directory for the run's files.")
        if final.exists() and not final.is_dir():
            raise RunDirError(f"run directory {final} is a file: choose another --run-dir.")
        host = _inside_a_run(final)
        if host is not None:
            raise RunDirError(f"run directory {final} lies inside the run directory {host}: choose a --run-dir "
                              "outside any run.")
        if not final.is_dir() or not any(final.iterdir()):
            return "new"
        if final.is_symlink():
            raise RunDirError(f"run directory {final} is a symbolic link to a folder that holds files; nothing was "
                              f"changed. Pass the folder itself ({final.resolve()}) or choose another --run-dir.")
        if is_run_dir(final) and (final / OWNER_MARK).is_file() and not has_trained(final):
            _Lock(final, "run directory").release()
            return "reuse"
        if not overwrite:
            raise RunDirError(f"run directory {final} already holds files; nothing was changed. Resume it with "
                              f"--resume {final}, choose another --run-dir, or pass --overwrite to replace it.")
        if not is_run_dir(final):
            foreign = foreign_entries(final)
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise RunDirError(f"--overwrite refused: {final} is not an xpnet run directory (it holds "
                              f"{shown or 'no trace of an xpnet run'}), and --overwrite replaces only run "
                              "directories. Nothing was changed; choose another --run-dir.")
        _Lock(final, "run directory").release()
        return "replace"

    @classmethod
    def start(cls, final, overwrite: bool = False) -> RunDir:
        """A fresh run in ``final``; raises :class:`RunDirError`, changing nothing, if it may not."""
        final = Path(final)
        how = cls.check_start(final, overwrite)
        _remove_stale_siblings(final)
        if how == "new":
            created = not final.exists()
            final.mkdir(parents=True, exist_ok=True)
            run = cls(final, final, replaces=False, created=created, locks=[_Lock(final, "run directory")])
        elif how == "reuse":  # a start that died before its first epoch left only its own files
            lock = _Lock(final, "run directory")
            for p in final.iterdir():
                shutil.rmtree(p) if p.is_dir() else p.unlink()
            print(f"note: {final} held a run that never completed an epoch; it is reused.")
            run = cls(final, final, replaces=False, created=False, locks=[lock])
        else:
            lock = _Lock(final, "run directory")
            staging = final.parent / f".{final.name}.xpnet-new-{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            run = cls(final, staging, replaces=True, created=True, locks=[lock, _Lock(staging, "run directory")])
        mark = {"xpnet_run": 1, "created": datetime.datetime.now().isoformat(timespec="seconds"), "pid": os.getpid()}
        (run.path / OWNER_MARK).write_text(json.dumps(mark) + "\n")
        return run

    @classmethod
    def resume(cls, final) -> RunDir:
        final = Path(final)
        if str(final).strip() == "":
            raise RunDirError("--resume is empty: give the run directory to continue.")
        if not (final / RUN_MARKER).is_file():
            raise RunDirError(f"--resume {final}: no {RUN_MARKER} there, so it is not an xpnet run directory.")
        run = cls(final, final, replaces=False, created=False, locks=[_Lock(final, "run directory")])
        run.committed = True  # an existing run is never removed
        return run

    def commit(self) -> None:
        """The run has started cleanly: from now on it is kept whatever happens.  A replacing
        run swaps places with the old one here (two renames; the old one is then deleted)."""
        if self.committed:
            return
        if self.replaces:
            _exchange(self.path, self.final)  # now self.path holds the old run
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = self.final
        self.committed = True

    def close(self, failed: bool = False) -> None:
        """Release the locks; a run that failed before :meth:`commit` leaves nothing behind."""
        try:
            if failed and not self.committed:
                if self.created:
                    shutil.rmtree(self.path, ignore_errors=True)
                else:
                    for p in list(self.path.iterdir()):
                        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        finally:
            for lock in self.locks:
                lock.release()
