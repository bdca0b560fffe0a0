"""``KernelSet``: the operations the model, trainer, precision code, validation and optimizers
call on a kernel set -- exactly these, with one signature on every kernel set.

``ReferenceOps`` (array-API math, the specification), ``NumbaOps`` (CPU) and ``CupyOps`` (GPU)
implement it; ``tests/test_kernel_protocol.py`` checks that each method of each class has the
signature written here (names, order, kinds and defaults of the parameters), so two backends
cannot disagree on an operation's arguments.

Arrays are the backend's arrays (``Array``); every other argument is a plain number, flag or
string.  ``out=`` / ``db_out=`` arrays, when given, receive the result, which is also returned.
Optimizer operations update ``p`` and their state buffers in place and never write ``g``; a
state buffer that an option does not use is ``None``; ``grad_scale`` multiplies the gradients
first (1.0, or what :meth:`KernelSet.clip_scale` returned: global-norm clipping fused into the
update).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .._typing import Array  # an array of the kernel set's backend (NumPy, CuPy, any array-API namespace)

if TYPE_CHECKING:
    from ..activations import Activation
    from ..losses import Loss


@runtime_checkable
class KernelSet(Protocol):
    name: str  # "reference", "numba", "cupy"
    backend: Any
    xp: Any
    dtype: str
    tf32: bool
    launches: int  # fused kernel launches so far (the reference counts none)

    def configured(self, *, tf32: bool) -> KernelSet:
        """A new kernel set of the same kind, backend and dtype (nothing shared)."""

    # -- allocation and data movement ---------------------------------------------------------
    def empty(self, shape: tuple[int, ...]) -> Array: ...

    def zeros_like(self, a: Array) -> Array: ...

    def state_like(self, params: Array) -> Array:
        """A zeroed optimizer-state buffer shaped like ``params``."""

    def fits_on_device(self, nbytes: int) -> bool: ...

    def stream_batches(self, X: Array, y: Array, order: Array,
                       batch_size: int) -> Iterator[tuple[int, int, Array, Array]]: ...

    def gather_rows(self, data: Array, idx: Array, key: str) -> Array: ...

    # -- precision casts -------------------------------------------------------------------
    def cast(self, a: Array, key: str) -> Array: ...

    def cast_into(self, src: Array, out: Array) -> None: ...

    def scale_cast(self, a: Array, scale: float, key: str) -> Array: ...

    def unscale_into(self, grads16: Array, grads: Array, inv_scale: float) -> bool: ...

    # -- input checks on the device -----------------------------------------------------------
    def count_invalid(self, a: Array, kind: str, n_classes: int = 0) -> Array: ...

    def check_device_errors(self) -> None: ...

    # -- layers and loss -----------------------------------------------------------------------
    def matmul(self, a: Array, b: Array, out: Array | None = None) -> Array: ...

    def bias_act(self, z: Array, b: Array, act: Activation, out: Array | None = None, dropout: float = 0.0,
                 dropout_key: int = 0, dropout_row: int = 0) -> tuple[Array, Array]:
        """``(z + b, f(z + b))``; ``dropout > 0``: the activation with inverted dropout, mask from
        ``dropout_key`` (``xpnet.dropout``); ``dropout_row``: the global-batch row of ``z``'s first row
        (a data-parallel rank's share starts there; 0 for a whole batch)."""

    def act_grad(self, g: Array, z: Array, a: Array, act: Activation, db_out: Array | None = None,
                 dropout: float = 0.0, dropout_key: int = 0, dropout_row: int = 0) -> tuple[Array, Array]:
        """``(g * f'(z), its column sums)``; ``dropout > 0``: times the recomputed mask and scale, with
        ``f(z)`` recomputed for ``f'`` (``a`` is then the dropped activation); ``dropout_row`` as in
        :meth:`bias_act`."""

    def bias_grad(self, dz: Array, out: Array | None = None) -> Array: ...

    def loss(self, loss: Loss, logits: Array, targets: Array, weights: Array | None = None) -> tuple[Array, Array]:
        """``(0-d mean loss, dL/dlogits)``; ``weights`` (per row, or None): the weighted mean
        ``sum w_i l_i / sum w_i`` (``xpnet.losses``); None computes exactly the unweighted mean."""

    # -- optimizers: one operation per update rule ----------------------------------------------
    def sgd(self, p: Array, g: Array, buf: Array | None, *, lr: float, momentum: float, dampening: float,
            weight_decay: float, nesterov: bool, first: bool, grad_scale: float | Array = 1.0) -> None: ...

    def adagrad(self, p: Array, g: Array, acc: Array, *, lr: float, weight_decay: float, eps: float,
                grad_scale: float | Array = 1.0) -> None: ...

    def rmsprop(self, p: Array, g: Array, square_avg: Array, grad_avg: Array | None, buf: Array | None, *,
                lr: float, alpha: float, eps: float, weight_decay: float, momentum: float, centered: bool,
                grad_scale: float | Array = 1.0) -> None: ...

    def adam(self, p: Array, g: Array, m: Array, v: Array, vmax: Array | None, *, step_size: float, beta1: float,
             beta2: float, eps: float, l2: float, decay: float, bc2_sqrt: float, amsgrad: bool,
             grad_scale: float | Array = 1.0) -> None: ...

    # -- gradient clipping ------------------------------------------------------------------
    def clip_scale(self, grads: Array, max_norm: float) -> float | Array:
        """``min(max_norm / (||grads|| + 1e-6), 1)``: a number, or a 0-d array left on the device."""

    def clip_grad_norm(self, grads: Array, max_norm: float) -> Array:
        """Scale ``grads`` in place by :meth:`clip_scale`; the norm before clipping (0-d)."""


OPTIMIZER_OPERATIONS = ("sgd", "adagrad", "rmsprop", "adam")


def operation_names() -> list[str]:
    """The methods of :class:`KernelSet` (the operations every kernel set implements)."""
    return [name for name, value in vars(KernelSet).items() if callable(value) and not name.startswith("_")]
