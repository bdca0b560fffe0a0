"""Old module paths keep working, with a DeprecationWarning, after the package was regrouped into
library (``train/``, ``io/``, ``optim/``) and application (``cli/``, ``bench/``) parts.

``import xpnet.trainer`` (or ``xpnet.trainer`` as an attribute) gives the module ``xpnet.train.trainer``
itself, so code and monkeypatches written against the old path act on the real module.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

MOVED = {
    "xpnet.trainer": "xpnet.train.trainer",
    "xpnet.callbacks": "xpnet.train.callbacks",
    "xpnet.precision": "xpnet.train.precision",
    "xpnet.checkpoint": "xpnet.io.checkpoint",
    "xpnet.config": "xpnet.cli.config",
    "xpnet.runs": "xpnet.cli.runs",
    "xpnet.lr_scheduler": "xpnet.optim.lr_scheduler",
}


def warn_moved(old: str) -> None:
    warnings.warn(f"{old} has moved to {MOVED[old]}: import it from there (the old path will be removed).",
                  DeprecationWarning, stacklevel=4)


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, old: str):
        self.old = old

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        warn_moved(self.old)
        return importlib.import_module(MOVED[self.old])  # the real module, not a copy

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the real module is already imported."""


class MovedFinder(importlib.abc.MetaPathFinder):
    """Finds the old paths of moved modules (installed once by ``xpnet/__init__.py``)."""

    def find_spec(self, name: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if name in MOVED:
            return importlib.util.spec_from_loader(name, _AliasLoader(name))
        return None


def install() -> None:
    if not any(isinstance(f, MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedFinder())
