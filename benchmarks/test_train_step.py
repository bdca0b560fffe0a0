"""pytest-benchmark suite for one training step (run with ``pytest benchmarks --benchmark-enable``).

In the normal test run (benchmarks disabled) each case executes once, so the suite cannot rot.
"""

from __future__ import annotations

import numpy as np
import pytest

import xpnet

SIZES = {"small": [64, 128, 10], "mnist": [784, 1024, 1024, 10]}


@pytest.mark.parametrize("batch", [64, 256])
@pytest.mark.parametrize("preset", list(SIZES))
def test_train_step(benchmark, preset, batch):
    sizes = SIZES[preset]
    r = np.random.default_rng(0)
    X = r.normal(size=(batch, sizes[0])).astype(np.float32)
    y = r.integers(0, sizes[-1], size=batch)
    trainer = xpnet.Trainer(xpnet.MLP(sizes, seed=0), optimizer=xpnet.optim.Adam(lr=1e-3))
    Xd, yd = trainer._data(X, y)  # device-resident, validated once, as fit does
    step = lambda: (trainer._forward_backward(Xd, yd), trainer._update())  # noqa: E731
    step()  # warm-up: workspaces, compilation
    benchmark.extra_info.update(preset=preset, batch=batch, kernels=trainer.ops.name)
    benchmark(step)
    assert np.isfinite(float(trainer.train_step(X, y)))
