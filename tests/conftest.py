"""Shared fixtures: the array namespaces and devices every backend-agnostic test runs on.

Like scikit-learn's ``yield_namespace_device_dtype_combinations``: NumPy, array-api-strict
on its default and on its fake second device (a missed device hand-off fails there),
torch-CPU through array-api-compat, and CuPy when a GPU is present.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from xpnet.backend import gpu_available

HAS_GPU = gpu_available()


def _namespaces():
    yield pytest.param({"device": "cpu"}, id="numpy")
    if importlib.util.find_spec("array_api_strict"):
        import array_api_strict as xps

        yield pytest.param({"xp": xps}, id="strict")
        yield pytest.param({"xp": xps, "device": xps.Device("device1")}, id="strict-device1")
    if importlib.util.find_spec("torch"):
        import torch

        yield pytest.param({"xp": torch, "device": "cpu"}, id="torch")
    yield pytest.param({"device": "cuda"}, id="cupy", marks=[pytest.mark.gpu, pytest.mark.skipif(
        not HAS_GPU, reason="needs CuPy and an NVIDIA GPU")])


NAMESPACES = list(_namespaces())


@pytest.fixture(params=NAMESPACES)
def where(request) -> dict:
    """``MLP(..., **where)`` places the model on one namespace/device."""
    return request.param


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def blobs(n=120, features=6, classes=3, seed=0):
    """Small separable classification data (float64 features, int64 labels)."""
    r = np.random.default_rng(seed)
    centers = r.normal(0, 3, size=(classes, features))
    y = r.integers(0, classes, size=n)
    X = centers[y] + r.normal(0, 1, size=(n, features))
    return X, y.astype(np.int64)
