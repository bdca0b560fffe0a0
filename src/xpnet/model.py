"""The multilayer perceptron: flat parameter / gradient buffers, forward and backward.

Layer ``l`` computes ``z_l = a_{l-1} @ W_l + b_l`` and ``a_l = f(z_l)``; the last layer is
linear and outputs logits.  All parameters live in ONE flat buffer (``params``), laid out
layer by layer as ``W_1, b_1, W_2, b_2, ...``; gradients live in a second flat buffer of
the same layout (``grads``).  Per-layer ``(W, b)`` are slices of these buffers, so the
optimizer updates everything in one pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np

from ._typing import Array, HostArray, Namespace
from .activations import get_activation
from .backend import check_dtype, resolve_backend, to_host
from .dropout import check_dropout, dropout_key
from .initializers import check_init, default_init, draw_weights
from .kernels import ops_for, resolve_kernels
from .validation import check_int, host_memory_bytes, invalid

if TYPE_CHECKING:
    from .kernels.protocol import KernelSet


@dataclass(frozen=True)
class LayerSlot:
    """Where layer ``l``'s weights and bias sit in the flat buffers."""

    fan_in: int
    fan_out: int
    w_start: int
    b_start: int

    @property
    def end(self) -> int:
        return self.b_start + self.fan_out


@dataclass
class Tape:
    """What the forward pass keeps for the backward pass, one entry per layer."""

    inputs: list[Array]  # a_{l-1}: the layer's input
    pre: list[Array]  # z_l: pre-activation (after the bias add)
    post: list[Array]  # a_l: activation output, after dropout (the logits for the last layer)
    step: int | None = None  # the training step whose dropout masks were drawn (None: no dropout)
    first_row: int = 0  # the global-batch row of the batch's first row (a data-parallel share's; dropout masks)


def _check_sizes(sizes: Any) -> list[int]:
    """Layer widths: at least two integers >= 1 (NumPy integers too; bool and float refused)."""
    items = list(sizes) if isinstance(sizes, (list, tuple, np.ndarray)) else None
    if items is None or len(items) < 2 or not all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in items):
        raise invalid("sizes", sizes, "give at least two positive integers, input features first and outputs "
                                      "last, e.g. [64, 128, 10]")
    return [int(s) for s in items]


# params, grads and up to three optimizer buffers of the model's dtype, plus the float64
# host buffer the initial weights are drawn into
_BUFFERS = 5


def _check_memory(sizes: list[int], n_params: int, itemsize: int) -> None:
    """Refuse a model whose buffers cannot fit in this machine's memory, before allocating any
    (a typo such as 10**9 hidden units would otherwise end in a MemoryError or the OOM killer)."""
    limit = host_memory_bytes()
    need = n_params * (_BUFFERS * itemsize + 8)
    if limit is not None and need > limit:
        raise invalid("sizes", sizes, f"{n_params:,} parameters need about {need / 2**30:,.1f} GiB for weights, "
                                      f"gradients and optimizer state, more than this machine's "
                                      f"{limit / 2**30:,.1f} GiB: use narrower or fewer layers")


class MLP:
    """A multilayer perceptron whose arrays live on one array-API backend.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths, input features first and outputs last, e.g. ``[784, 1024, 10]``.
    activation : str
        Hidden-layer activation (see ``xpnet.activations.ACTIVATIONS``); the output is linear.
    dtype : str
        ``"float32"`` (default) or ``"float64"``.
    seed : int or None
        Seeds the host-side generator for the initial weights (identical on every backend);
        ``None`` draws one (kept in ``self.seed``).
    init : str or None
        ``"he_normal"``, ``"xavier_uniform"``, ... ; ``None`` picks the one that fits ``activation``.
    device : str or device, optional
        ``"cpu"`` (NumPy, default), ``"cuda"`` / ``"cuda:N"`` (CuPy), or a device of ``xp``.
    xp : array-API namespace, optional
        Any array-API library (array-api-strict, torch via array-api-compat, ...).
    kernels : ``"auto"``, ``"reference"`` or None
        ``"auto"``: the fused kernels where available; ``"reference"``: the array-API reference
        math only (for debugging and comparisons).  ``None`` (default) takes the innermost
        ``xpnet.use_kernels(...)`` block, else ``XPNET_KERNELS``, else ``"auto"``; the resolved
        choice is kept in ``self.kernels``.
    dropout : float or sequence of float
        Inverted dropout rate of the hidden layers' activations, in ``[0, 1)``: one number for all,
        or one per hidden layer.  Training forward passes only (those given a ``step``); masks are a
        hash of ``(seed, step, layer, element)`` (``xpnet.dropout``), the same on every backend.
    """

    def __init__(self, sizes: Sequence[int], activation: str = "relu", dtype: str = "float32", seed: int | None = 0,
                 init: str | None = None, device: Any = None, xp: Namespace | None = None,
                 kernels: str | None = None, dropout: float | Sequence[float] = 0.0) -> None:
        self.sizes = _check_sizes(sizes)
        self.activation = get_activation(activation)
        self.dtype = check_dtype(dtype)
        self.init = default_init(self.activation.init) if init is None else check_init(init)
        self.kernels = resolve_kernels(kernels)
        self.dropout = check_dropout(dropout, len(self.sizes) - 2)
        seed = check_int("seed", seed, low=0, allow_none=True)
        # None draws a seed, kept in self.seed so the run can be repeated
        self.seed = int(np.random.default_rng().integers(2**31)) if seed is None else seed
        n_params = sum(i * o + o for i, o in zip(self.sizes[:-1], self.sizes[1:]))
        _check_memory(self.sizes, n_params, np.dtype(self.dtype).itemsize)
        self.backend = resolve_backend(device, xp)
        self.ops: KernelSet = ops_for(self.backend, self.dtype, self.kernels)

        self.slots: list[LayerSlot] = []
        offset = 0
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
            self.slots.append(LayerSlot(fan_in, fan_out, offset, offset + fan_in * fan_out))
            offset += fan_in * fan_out + fan_out
        self.n_params = offset

        rng = np.random.default_rng(self.seed)
        host = np.zeros(self.n_params, dtype=np.float64)
        for s in self.slots:
            host[s.w_start:s.b_start] = draw_weights(self.init, s.fan_in, s.fan_out, rng).ravel()
        self.params = self.backend.from_host(host, self.dtype)
        self.grads = self.ops.zeros_like(self.params)
        self._workspace: dict[tuple[int, str], dict[str, list[Array | None]]] = {}

    # -- shapes and views ------------------------------------------------------------
    @property
    def n_features(self) -> int:
        return self.sizes[0]

    @property
    def n_outputs(self) -> int:
        return self.sizes[-1]

    def layer_views(self, flat: Array) -> list[tuple[Array, Array]]:
        """Per-layer ``(W, b)`` slices of a flat buffer (``params`` or ``grads``)."""
        xp = self.backend.xp
        return [(xp.reshape(flat[s.w_start:s.b_start], (s.fan_in, s.fan_out)), flat[s.b_start:s.end])
                for s in self.slots]

    # -- weights on the host -----------------------------------------------------------
    def get_weights(self) -> list[tuple[HostArray, HostArray]]:
        """Copies of the weights on the host: ``[(W, b), ...]``, ``W`` shaped ``(fan_in, fan_out)``."""
        host = to_host(self.params)
        return [(host[s.w_start:s.b_start].reshape(s.fan_in, s.fan_out).copy(), host[s.b_start:s.end].copy())
                for s in self.slots]

    def set_weights(self, weights: Iterable[tuple[Any, Any]]) -> None:
        """Replace all weights from ``[(W, b), ...]`` host arrays (checked before anything changes)."""
        weights = list(weights)
        if len(weights) != len(self.slots):
            raise ValueError(f"weights has {len(weights)} layers; this model has {len(self.slots)}: "
                             "pass one (W, b) pair per layer.")
        host = np.empty(self.n_params, dtype=np.float64)
        for i, (pair, s) in enumerate(zip(weights, self.slots)):
            W, b = (to_host(a) for a in pair)
            if W.shape != (s.fan_in, s.fan_out) or b.shape != (s.fan_out,):
                raise ValueError(f"weights[{i}] has shapes W{W.shape}, b{b.shape}; layer {i} needs "
                                 f"W({s.fan_in}, {s.fan_out}) and b({s.fan_out},).")
            if not (np.all(np.isfinite(W)) and np.all(np.isfinite(b))):
                raise ValueError(f"weights[{i}] contains NaN or inf: pass finite weights.")
            host[s.w_start:s.b_start] = W.ravel()
            host[s.b_start:s.end] = b
        self.params[...] = self.backend.from_host(host, self.dtype)

    def copy_params(self) -> Array:
        """A device-side copy of the flat parameters (for snapshots)."""
        return self.backend.xp.asarray(self.params, copy=True)

    # -- forward and backward ------------------------------------------------------------
    def _buffers(self, batch: int, ops: KernelSet) -> dict[str, list[Array | None]]:
        """Workspaces for one batch size and dtype, allocated once and reused by every kernel set.

        Two shapes per dtype are kept: the full batch and an epoch's shorter last batch.
        """
        key = (batch, ops.dtype)
        ws = self._workspace.get(key)
        if ws is None:
            ws = {
                "z": [ops.empty((batch, s.fan_out)) for s in self.slots],
                "a": [ops.empty((batch, s.fan_out)) for s in self.slots[:-1]] + [None],
                "d": [ops.empty((batch, s.fan_in)) for s in self.slots],  # dL/d(input of layer l)
            }
            same_dtype = [k for k in self._workspace if k[1] == ops.dtype]
            if len(same_dtype) >= 2:
                self._workspace.pop(same_dtype[0])
            self._workspace[key] = ws
        return ws

    @overload
    def forward(self, x: Array, tape: Literal[False] = False, params: Array | None = None,
                ops: KernelSet | None = None, step: int | None = None, first_row: int = 0) -> Array: ...

    @overload
    def forward(self, x: Array, tape: Literal[True], params: Array | None = None,
                ops: KernelSet | None = None, step: int | None = None, first_row: int = 0) -> tuple[Array, Tape]: ...

    @overload
    def forward(self, x: Array, tape: bool, params: Array | None = None, ops: KernelSet | None = None,
                step: int | None = None, first_row: int = 0) -> Array | tuple[Array, Tape]: ...

    def forward(self, x: Array, tape: bool = False, params: Array | None = None, ops: KernelSet | None = None,
                step: int | None = None, first_row: int = 0) -> Array | tuple[Array, Tape]:
        """Logits for a batch ``x`` already on this model's device; ``tape`` keeps what backward needs.

        ``params`` / ``ops`` substitute another flat parameter buffer and kernel set (the
        float16 copy of the weights in mixed precision); by default the model's own.  ``step``
        (training forward passes only) applies dropout with that step's masks; ``None`` never drops.
        ``first_row``: the row of the global batch that ``x`` starts at (a data-parallel rank's share:
        its masks are those rows' of the global batch; 0 for a whole batch).
        """
        if getattr(x, "ndim", None) != 2 or x.shape[1] != self.n_features:  # shapes only: free, never a sync
            raise ValueError(f"x must be a 2-D batch with {self.n_features} features on the model's device, got "
                             f"shape {tuple(getattr(x, 'shape', ()))}; Trainer.predict takes any input and checks it.")
        ops = ops or self.ops
        n = len(self.slots)  # without a tape (prediction): no out= arrays, the kernel set allocates
        ws = self._buffers(x.shape[0], ops) if tape else {"z": [None] * n, "a": [None] * n}
        inputs: list[Array] = []
        pre: list[Array] = []
        post: list[Array] = []
        a = x
        last = len(self.slots) - 1
        for l, (W, b) in enumerate(self.layer_views(self.params if params is None else params)):
            act = self.activation if l < last else _IDENTITY  # the output layer is linear
            inputs.append(a)
            z = ops.matmul(a, W, out=ws["z"][l])  # z_l = a_{l-1} @ W_l
            # z_l += b_l;  a_l = f(z_l), times the dropout mask / (1 - p) in training
            z, a = ops.bias_act(z, b, act, ws["a"][l], *self.dropout_args(l, step, first_row))
            pre.append(z)
            post.append(a)
        return (a, Tape(inputs, pre, post, step, first_row)) if tape else a

    def backward(self, dlogits: Array, tape: Tape, params: Array | None = None, grads: Array | None = None,
                 ops: KernelSet | None = None) -> None:
        """Write ``dL/dparams`` into ``self.grads`` (or ``grads``) from ``dL/dlogits`` and the tape.

        Layer by layer from the output: ``dW_l = a_{l-1}^T @ dz_l``, ``db_l = sum_rows dz_l``,
        ``dz_{l-1} = (dz_l @ W_l^T) * f'(z_{l-1})`` -- each layer's delta multiplies the
        transposed weights of the layer it came through, and every gradient lands in the
        flat buffer the optimizer reads.
        """
        ops, act = ops or self.ops, self.activation
        ws = self._buffers(dlogits.shape[0], ops)
        weights = self.layer_views(self.params if params is None else params)
        grad_views = self.layer_views(self.grads if grads is None else grads)
        last = len(self.slots) - 1
        dz = dlogits
        ops.bias_grad(dz, out=grad_views[last][1])  # db_L = sum_rows dz_L
        for l in range(last, -1, -1):
            ops.matmul(tape.inputs[l].T, dz, out=grad_views[l][0])  # dW_l = a_{l-1}^T @ dz_l
            if l > 0:
                da = ops.matmul(dz, weights[l][0].T, out=ws["d"][l])  # dL/da_{l-1} = dz_l @ W_l^T
                # dz_{l-1} = da * f'(z_{l-1}) and, in the same pass, db_{l-1} = sum_rows dz_{l-1}
                # (times layer l-1's dropout mask / (1 - p), recomputed, when the forward dropped)
                dz, _ = ops.act_grad(da, tape.pre[l - 1], tape.post[l - 1], act, grad_views[l - 1][1],
                                     *self.dropout_args(l - 1, tape.step, tape.first_row))

    def dropout_args(self, layer: int, step: int | None, first_row: int = 0) -> tuple[float, int, int]:
        """``(dropout, dropout_key, dropout_row)`` for layer ``layer``'s kernels at training ``step``, on
        rows from global-batch row ``first_row`` on (``(0.0, 0, 0)``: none)."""
        p = self.dropout[layer] if step is not None and layer < len(self.dropout) else 0.0
        return (p, dropout_key(self.seed, step, layer), int(first_row)) if p and step is not None else (0.0, 0, 0)


_IDENTITY = get_activation("identity")
