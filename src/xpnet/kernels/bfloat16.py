"""The bfloat16 reference kernel set: bfloat16 storage, float32 arithmetic, on any NumPy-like library.

``precision="bf16"`` keeps a bfloat16 copy of the weights, bfloat16 activations and bfloat16
matrix products.  NumPy holds bfloat16 arrays through ``ml_dtypes`` but its bfloat16 operations
are patchy (``a @ b`` of two bfloat16 arrays returns float32, sums accumulate in bfloat16, no
BLAS), so every operation here widens its operands to float32, computes there, and rounds the
result to bfloat16 once -- what the GPU does: cuBLAS bfloat16 products accumulate in float32 and
the fused kernels (``cuda.py``, ``T = bfloat16``, compute type ``C = float``) compute in float32.
Column sums (bias gradients) add the bfloat16 values in float32, as ``CupyOps`` does.

This is the CPU path of ``bf16`` (slow, but on every CI run) and the specification the fused
GPU kernels are compared with on the emulated GPU (``tests/test_emulated_gpu.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._typing import Array
from .reference import ReferenceOps

if TYPE_CHECKING:
    from ..activations import Activation
    from ..backend import Backend
    from ..losses import Loss


class BFloat16Ops(ReferenceOps):
    """Reference math for ``dtype="bfloat16"`` arrays: float32 compute, bfloat16 results."""

    name = "reference-bf16"

    def __init__(self, backend: Backend, dtype: str = "bfloat16", tf32: bool = False) -> None:
        if dtype != "bfloat16":
            raise ValueError(f"BFloat16Ops holds bfloat16 arrays, not {dtype}")
        super().__init__(backend, dtype, tf32=tf32)
        self._bf16: Any = backend.dtype("bfloat16")

    def _f32(self, a: Array) -> Array:
        return self.xp.astype(a, self.xp.float32)

    def _bf(self, a: Array) -> Array:
        return self.xp.astype(a, self._bf16)

    def matmul(self, a: Array, b: Array, out: Array | None = None) -> Array:
        """bfloat16 ``a @ b``: exact float32 products of the bfloat16 values, float32 sums, one rounding."""
        return _store(out, self._bf(self._f32(a) @ self._f32(b)))

    def bias_act(self, z: Array, b: Array, act: Activation, out: Array | None = None, dropout: float = 0.0,
                 dropout_key: int = 0, dropout_row: int = 0) -> tuple[Array, Array]:
        v = self._f32(z) + self._f32(b)  # the activation sees the float32 sum, as the fused kernel does
        a = act.forward(self.xp, v)
        if dropout:
            a = self._dropped(a, dropout, dropout_key, dropout_row)
        return self._bf(v), _store(out, self._bf(a))

    def act_grad(self, g: Array, z: Array, a: Array, act: Activation, db_out: Array | None = None,
                 dropout: float = 0.0, dropout_key: int = 0, dropout_row: int = 0) -> tuple[Array, Array]:
        z32 = self._f32(z)
        if dropout:
            d = self._dropped(self._f32(g) * act.derivative(self.xp, z32, act.forward(self.xp, z32)), dropout,
                              dropout_key, dropout_row)
        else:
            d = self._f32(g) * act.derivative(self.xp, z32, self._f32(a))
        dz = self._bf(d)
        return dz, self.bias_grad(dz, out=db_out)

    def bias_grad(self, dz: Array, out: Array | None = None) -> Array:
        return _store(out, self._bf(self.xp.sum(self._f32(dz), axis=0)))

    def loss(self, loss: Loss, logits: Array, targets: Array, weights: Array | None = None) -> tuple[Array, Array]:
        """In float32 (the bf16 step computes its loss on float32 logits; this is for completeness)."""
        value, grad = super().loss(loss, self._f32(logits), targets, weights)
        return value, self._bf(grad)

    def clip_scale(self, grads: Array, max_norm: float) -> float | Array:
        return super().clip_scale(self._f32(grads), max_norm)


def _store(out: Array | None, value: Array) -> Array:
    """``value``, written into ``out`` when one is given (then ``out`` is returned)."""
    if out is None:
        return value
    out[...] = value
    return out
