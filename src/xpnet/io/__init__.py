"""Models in and out: atomic, checksummed checkpoints (:mod:`.checkpoint`) and exports (:mod:`.export`)."""

from . import checkpoint, export

__all__ = ["checkpoint", "export"]
