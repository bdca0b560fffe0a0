"""The shape the code base promises (CONTRIBUTING.md): short functions, no module reaching into
another's private names.  Cheap AST checks, so a regression fails CI instead of a review."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "xpnet"
MAX_FUNCTION_LINES = 60
PRIVATE_MODULES = {"_moved", "_typing"}  # package-internal helper modules, private to xpnet as a whole


def _modules():
    return [(p, ast.parse(p.read_text())) for p in sorted(SRC.rglob("*.py"))]


def test_no_function_is_longer_than_60_lines():
    long = [f"{p.relative_to(SRC)}:{n.name} ({n.end_lineno - n.lineno + 1} lines)" for p, tree in _modules()
            for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"split these into named phases: {long}"


def test_no_module_imports_another_modules_private_names():
    found = []
    for p, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level > 0:  # xpnet's own modules only
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__") \
                            and alias.name not in PRIVATE_MODULES:
                        found.append(f"{p.relative_to(SRC)} imports {alias.name} from {'.' * node.level}"
                                     f"{node.module or ''}")
    assert not found, found
