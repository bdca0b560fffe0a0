"""Inverted dropout with masks from a counter-based hash: the same masks on every namespace.

A hidden layer with dropout ``p`` keeps each activation with probability ``1 - p`` and scales the
kept ones by ``1 / (1 - p)`` (inverted dropout), in training only.  Nothing is drawn from a
generator with state: whether element ``idx = row * cols + col`` of layer ``l`` is kept at step
``t`` is a pure function of ``(seed, t, l, idx)``::

    key  = dropout_key(seed, t, l)               # on the host, once per layer and step
    h    = element_hash(idx, key)                # per element, in the kernels
    keep = h < keep_threshold(p)                 # integer comparison: no float rounding

``row`` is the row's place in the GLOBAL batch: a kernel that sees rows ``first_row, first_row + 1,
...`` of it (a data-parallel rank's share, ``xpnet.distributed``) is given ``first_row`` and counts
``idx = (first_row + r) * cols + col`` for its row ``r`` -- on the host, :func:`first_element` is
``first_row * cols`` reduced mod ``2**32`` (only ``idx mod 2**32`` is hashed), and a kernel adds it
to its own ``r * cols + col``.  So the ranks draw, between them, exactly one process's masks.

``mix32`` is written once with ``^ >> * &`` on non-negative integers below ``2**32`` (products
stay below ``2**63``): the same source runs on Python ints, on int64 arrays of any array-API
namespace (the reference kernel set), and compiled by Numba (the CPU kernel set); the CUDA
kernel set has its ``uint32`` twin (``cuda_source.DROPOUT_CUDA``), where wrap-around multiplication
is the same ``mod 2**32`` product.  So NumPy, CuPy, torch and array-api-strict draw identical
masks, the backward pass recomputes the mask instead of storing it, and a resumed run (the
checkpoint keeps the step count) draws the masks the uninterrupted run would have.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .validation import check_real, invalid

MASK32 = 0xFFFFFFFF
MUL1 = 0x7FEB352D  # odd multipliers below 2**31: the int64 products never overflow
MUL2 = 0x5BD1E995


def mix32(x: Any) -> Any:
    """A 32-bit avalanche mix of ``x`` in ``[0, 2**32)``: a Python int, an int64 array or a Numba scalar."""
    x = x ^ (x >> 16)
    x = (x * MUL1) & MASK32
    x = x ^ (x >> 15)
    x = (x * MUL2) & MASK32
    return x ^ (x >> 16)


def element_hash(idx: Any, key: Any) -> Any:
    """The 32-bit hash of element ``idx`` (``row * cols + col``) under a layer-and-step ``key``."""
    return mix32(mix32((idx & MASK32) ^ key) ^ key)


def dropout_key(seed: int, step: int, layer: int) -> int:
    """The 32-bit key of hidden layer ``layer`` at training step ``step`` of a model seeded ``seed``."""
    k = mix32(int(seed) & MASK32) ^ ((int(seed) >> 32) & MASK32)
    k = mix32(k ^ (int(step) & MASK32)) ^ ((int(step) >> 32) & MASK32)
    return int(mix32(mix32(k) ^ (int(layer) & MASK32)))


def first_element(first_row: int, cols: int) -> int:
    """The element counter of row ``first_row``'s first element, ``first_row * cols``, mod ``2**32``: the
    offset a kernel adds to the ``r * cols + col`` of its own rows (0 for a whole batch)."""
    return (int(first_row) * int(cols)) & MASK32


def keep_threshold(p: float) -> int:
    """Elements whose hash is below this are kept: ``round((1 - p) * 2**32)`` (``2**32``: all, for p=0)."""
    return min(1 << 32, round((1.0 - float(p)) * (1 << 32)))


def keep_scale(p: float) -> float:
    """The factor kept activations are multiplied by: ``1 / (1 - p)``."""
    return 1.0 / (1.0 - float(p))


def keep_mask(xp: Any, shape: tuple[int, int], p: float, key: int, device: Any = None, first_row: int = 0) -> Any:
    """The boolean keep-mask of a ``(rows, cols)`` layer output whose first row is row ``first_row`` of
    the global batch, in array-API math (the reference)."""
    rows, cols = shape
    idx = xp.reshape(xp.arange(rows * cols, dtype=xp.int64, device=device), (rows, cols))
    return element_hash(idx + first_element(first_row, cols), key) < keep_threshold(p)


def check_dropout(dropout: Any, n_hidden: int) -> tuple[float, ...]:
    """``dropout`` as one rate per hidden layer: a number in ``[0, 1)`` for all, or one per hidden layer."""
    if isinstance(dropout, np.ndarray) and dropout.ndim == 1:  # e.g. np.array([0.1, 0.2]): one per layer
        dropout = dropout.tolist()
    if isinstance(dropout, (list, tuple)):
        if len(dropout) != n_hidden:
            raise invalid("dropout", dropout, f"give one rate per hidden layer ({n_hidden}), or one number for all")
        return tuple(check_real(f"dropout[{i}]", p, low=0, high=1, high_open=True) for i, p in enumerate(dropout))
    rate = check_real("dropout", dropout, low=0, high=1, high_open=True)
    return (rate,) * n_hidden


def describe(rates: Sequence[float]) -> float | list[float]:
    """The rates as given back to a user or a config: one number when all layers agree."""
    if len(set(rates)) <= 1:
        return rates[0] if rates else 0.0
    return list(rates)
