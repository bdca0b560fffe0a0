"""Devices the pytest-benchmark suite sweeps (the CuPy GPU only when present)."""

from __future__ import annotations

import importlib.util

import pytest


def _gpu() -> bool:
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001
        return False


DEVICES = [pytest.param("cpu", id="cpu"),
           pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(not _gpu(), reason="needs CuPy and a GPU"))]
