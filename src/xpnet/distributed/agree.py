"""Errors that end every rank the same way, never a hang.

``with agree(comm): ...`` runs a block (input checks, loading a checkpoint) on every rank, then
all ranks learn whether any of them failed (one all-reduce of a flag); if one did, the first
failing rank's message is broadcast and EVERY rank raises the same exception type with the same
message (``exc.agreed`` is True: a launcher may exit normally instead of aborting the job).
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .comm import Communicator


class AgreedError(RuntimeError):
    """An error of another rank whose type is not a builtin exception."""


def _rebuild(classes: list[tuple[str, str]], message: str) -> Exception:
    """The failing rank's exception class (``classes``: it and its bases, as ``(module, name)``),
    or the first of its bases that can be imported here and built from a message alone (e.g.
    ``RunDirError``, else ``ValueError``), carrying ``message``."""
    import importlib

    for module, name in classes:
        try:
            cls = getattr(builtins if module == "builtins" else importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        if isinstance(cls, type) and issubclass(cls, Exception):
            try:
                return cls(message)
            except Exception:  # an exception type that needs other arguments: try its bases
                continue
    return AgreedError(message)


@contextlib.contextmanager
def agree(comm: Communicator | None) -> Iterator[None]:
    """Run the block; if it raised on any rank, raise the same error on every rank."""
    error: Exception | None = None
    try:
        yield
    except Exception as exc:
        error = exc
    if comm is None or comm.size == 1:
        if error is not None:
            raise error
        return
    first = int(comm.allreduce_host(np.array([comm.rank if error is not None else comm.size]), "min")[0])
    if first == comm.size:
        return
    payload = None
    if error is not None and comm.rank == first:
        payload = ([(c.__module__, c.__qualname__) for c in type(error).__mro__], str(error))
    classes, message = comm.bcast_obj(payload, root=first)
    same = _rebuild(classes, f"{message} (rank {first} of {comm.size})")
    same.agreed = True  # type: ignore[attr-defined]
    raise same from error
