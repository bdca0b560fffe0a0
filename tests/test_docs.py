"""The reliability promises in the docs name real tests: every ``file.py::test_name`` that
docs/reliability.md or the README cites must exist, so a renamed or deleted test breaks CI."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _cited(doc: Path) -> list[tuple[str, str]]:
    """``(file, test)`` pairs; a bare ``::test_x`` belongs to the test file named last before it."""
    pairs, current = [], None
    for match in re.finditer(r"(test_\w+\.py)|::(test_\w+)", doc.read_text()):
        if match.group(1):
            current = match.group(1)
        else:
            pairs.append((current, match.group(2)))
    return pairs


def _tests_in(file: str) -> set[str]:
    tree = ast.parse((ROOT / "tests" / file).read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}


@pytest.mark.parametrize("doc", ["docs/reliability.md", "README.md"])
def test_every_cited_test_exists(doc):
    cited = _cited(ROOT / doc)
    if doc == "docs/reliability.md":
        assert len(cited) > 30
    missing = [f"{f}::{t}" for f, t in cited if t not in _tests_in(f)]
    assert not missing, f"{doc} cites tests that do not exist: {missing}"
