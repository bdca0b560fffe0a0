"""The common ground of the fused kernel sets: NumPy-like libraries (NumPy, CuPy) that write
into ``out=`` arrays, so matrix products, casts and batch gathers reuse workspaces sized once
per shape instead of allocating every step."""

from __future__ import annotations

from typing import Any

from .._typing import Array
from .reference import ReferenceOps, counted


class BufferedOps(ReferenceOps):
    lib: Any = None  # numpy or cupy: the same calls on both

    def __init__(self, backend, dtype, tf32=False):
        super().__init__(backend, dtype, tf32=tf32)
        self._ws: dict = {}

    @property
    def uses_workspace(self) -> bool:
        return True

    def _buf(self, key, shape, dtype=None):
        """A workspace array named ``key``, reused while its shape and dtype stay the same."""
        dtype = self.lib.dtype(dtype or self.dtype)
        arr = self._ws.get(key)
        if arr is None or arr.shape != shape or arr.dtype != dtype:
            with self.backend.context():
                arr = self._ws[key] = self.lib.empty(shape, dtype=dtype)
        return arr

    def empty(self, shape: tuple[int, ...]) -> Array:
        with self.backend.context():
            return self.lib.empty(shape, dtype=self.dtype)

    @counted(1)
    def matmul(self, a: Array, b: Array, out: Array | None = None) -> Array:
        return self.lib.matmul(a, b, out=out)

    @counted(1)
    def cast(self, a: Array, key: str) -> Array:
        out = self._buf(key, a.shape)
        self.lib.copyto(out, a, casting="unsafe")
        return out

    @counted(1)
    def cast_into(self, src: Array, out: Array) -> None:
        self.lib.copyto(out, src, casting="unsafe")

    @counted(1)
    def gather_rows(self, data: Array, idx: Array, key: str) -> Array:
        return self.lib.take(data, idx, axis=0, out=self._buf(key, (len(idx),) + data.shape[1:], data.dtype))
