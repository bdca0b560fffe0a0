"""Devices the pytest-benchmark suite sweeps (the CuPy GPU only when present)."""

from __future__ import annotations

import pytest

from xpnet.backend import gpu_available

DEVICES = [pytest.param("cpu", id="cpu"),
           pytest.param("cuda", id="cuda",
                        marks=pytest.mark.skipif(not gpu_available(), reason="needs CuPy and a GPU"))]
