"""The data-parallel step the trainer runs when given ``distributed=comm``.

Sharding: each global batch of ``n`` rows (the trainer's ``batch_size``; the last may be
shorter) is split into contiguous shares, rank ``r`` taking rows ``[n*r//size, n*(r+1)//size)``
of it (:func:`shard_bounds`).  Every rank draws the same permutation from the same seeded host
generator, so no data is sent and the result does not depend on the number of ranks.

Weighting: the loss kernels return the MEAN gradient over a rank's own rows, so each rank
multiplies its gradient by its share ``n_rank / n`` and the ranks SUM them (in place:
``model.grads`` is made a view of the first slots of the all-reduce buffer, so a step copies
nothing) -- exactly the gradient of the mean over the global batch (up to rounding), including an
uneven last batch and a rank with no rows (it runs no forward pass and contributes zeros).  With
sample weights (``sample_weight`` / ``class_weight``) a rank's loss is the weighted mean
``sum w_i l_i / sum w_i`` over its rows, so its share is ``W_rank / W``: its rows' weight total over
the global batch's, both summed on the host from the host weights
(:meth:`DistributedStep.batch_weights`; 0 when ``W`` is 0, as such a batch has loss and gradient 0
in one process too).  Its loss (times the same share) and an interrupt flag ride in two extra slots
of the same buffer: ONE all-reduce per step.  Clipping and the optimizer then run identically on
every rank.  With fp16 the share is applied with the loss scale, before the float16 cast, so a
rank's float16 gradients have one process's magnitudes (and overflow where it would); they are
unscaled into the float32 buffer, which is what is reduced, and the skip/grow decision is taken
from the reduced buffer, so every rank takes the same one.

Dropout: the masks are drawn by the row's place in the GLOBAL batch (``xpnet.dropout``); a rank
passes the row its share starts at, so the ranks draw, between them, one process's masks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
from array_api_compat import array_namespace

from .._typing import Array
from ..backend import to_host
from ..train.precision import MixedPrecisionStep
from .agree import agree

if TYPE_CHECKING:
    from ..model import MLP
    from ..train.precision import FP32Step
    from ..train.trainer import Trainer
    from .comm import Communicator


def shard_bounds(n: int, rank: int, size: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of a batch of ``n`` rows that ``rank`` of ``size`` takes (contiguous,
    sizes differ by at most one; a rank may get none when ``n < size``)."""
    return n * rank // size, n * (rank + 1) // size


class DistributedStep:
    """Wraps a precision step (``FP32Step`` / ``MixedPrecisionStep``) with the gradient all-reduce.

    ``forward_backward(x, y)`` takes a GLOBAL batch (every rank passes the same one) and
    computes this rank's share; :meth:`forward_backward_share` takes the share itself."""

    def __init__(self, inner: FP32Step, comm: Communicator, model: MLP,
                 interrupt_requested: Callable[[], bool] = lambda: False) -> None:
        self.inner, self.comm, self.model = inner, comm, model
        self.interrupt_requested = interrupt_requested
        backend = model.backend
        self.lib, self.xp = backend.lib, backend.xp
        n = model.n_params
        self.buf = self.xp.zeros((n + 2,), dtype=model.grads.dtype, device=backend.device)
        self.n = n
        self._bind_grads()
        self.found_inf = False
        self.interrupted = False  # agreed by all ranks at the last check
        self.check_every = 50 if backend.kind == "cupy" else 1  # reading the flag syncs a GPU
        self._steps = 0

    # the precision step's own attributes (scaler, max_norm, ...) stay reachable
    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _bind_grads(self) -> None:
        """Make ``model.grads`` a view of the all-reduce buffer (its first ``n_params`` slots), so a
        step copies nothing: the gradients are scaled and reduced where the backward pass wrote them."""
        view = self.buf[: self.n]
        view[...] = self.model.grads
        self.model.grads = self._grads = view

    def reset(self) -> None:
        self.interrupted, self._steps = False, 0

    def forward_backward(self, x: Array, y: Array, step: int | None = None,
                         weights: Array | None = None) -> tuple[Array, Array | None]:
        """``weights``: the global batch's row weights on the device, or None (their totals are read
        back to the host here; ``fit`` passes its host totals to :meth:`forward_backward_share`)."""
        lo, hi = shard_bounds(x.shape[0], self.comm.rank, self.comm.size)
        xs, ys = (x[lo:hi, ...], y[lo:hi, ...]) if hi > lo else (None, None)
        if weights is None:
            return self.forward_backward_share(xs, ys, x.shape[0], step)
        host = np.asarray(to_host(weights), dtype=np.float64)
        ws = weights[lo:hi] if hi > lo else None
        return self.forward_backward_share(xs, ys, x.shape[0], step, ws, (float(host[lo:hi].sum()), float(host.sum())))

    def forward_backward_share(self, xs: Array | None, ys: Array | None, n_global: int, step: int | None = None,
                               weights: Array | None = None,
                               weight_totals: tuple[float, float] | None = None) -> tuple[Array, Array | None]:
        """This rank's rows ``(xs, ys)`` (None when it has none; rows ``shard_bounds(n_global, rank,
        size)`` of the global batch) of a global batch of ``n_global`` rows: returns the GLOBAL loss
        (0-d, identical on every rank) and this rank's logits (or None); ``model.grads`` then holds
        the reduced gradient of the global batch.  Weighted: ``weights`` are this rank's rows' weights
        on the device and ``weight_totals`` ``(their host total, the global batch's host total)``."""
        m, buf, n = self.model, self.buf, self.n
        if m.grads is not self._grads:  # someone replaced the model's buffer: view the all-reduce one again
            self._bind_grads()
        n_local = 0 if xs is None else int(xs.shape[0])
        if weight_totals is not None and n_local and weights is None:
            raise ValueError("weight_totals without weights: pass this rank's rows' weights too.")
        w = _share(n_local, n_global, weight_totals)
        inner = self.inner
        prescaled = isinstance(inner, MixedPrecisionStep)  # fp16: weighted before the float16 cast
        if n_local:
            if isinstance(inner, MixedPrecisionStep):
                inner.grad_weight = w
            first_row = shard_bounds(n_global, self.comm.rank, self.comm.size)[0]  # its dropout masks
            loss, logits = inner.forward_backward(xs, ys, step=step, weights=weights, first_row=first_row)
            inner.unscale_grads()  # fp16: the float32 unscaled gradients are what is reduced
        else:
            m.grads[...] = 0
            loss, logits = None, None
        if n_local and w != 1.0 and not prescaled:
            self.lib.multiply(m.grads, w, out=m.grads)  # in place: model.grads is buf[:n]
        buf[n] = 0 if loss is None else loss * w
        buf[n + 1] = 1 if self.interrupt_requested() else 0
        self.comm.allreduce_(buf)
        self._steps += 1
        if self._steps % self.check_every == 0:
            self.interrupted = bool(buf[n + 1] > 0)
        if self.inner.scaler is not None:  # the skip decision from the reduced buffer: the same everywhere
            self.found_inf = not bool(self.xp.all(self.xp.isfinite(buf[:n])))
        return self.xp.asarray(buf[n], copy=True), logits

    def unscale_grads(self) -> bool:
        return self.found_inf

    def update(self) -> bool:
        return bool(self.inner.apply(self.found_inf))

    def apply(self, found_inf: bool) -> bool:
        return bool(self.inner.apply(found_inf))

    def shares(self, n: int, batch_size: int, first: int = 0) -> Iterator[tuple[int, int, int, int]]:
        """``(start, stop, a, b)`` for each global batch of an epoch of ``n`` rows: the batch is rows
        ``start:stop`` of the epoch's order and this rank's share rows ``a:b`` (``a == b``: none); ``first``
        skips the steps a mid-epoch checkpoint had taken."""
        for start in range(first, n, batch_size):
            stop = min(start + batch_size, n)
            lo, hi = shard_bounds(stop - start, self.comm.rank, self.comm.size)
            yield start, stop, start + lo, start + hi

    def batches(self, X: Array, y: Array, order: Array | None, host_order: np.ndarray[Any, Any], n: int,
                batch_size: int, on_device: Callable[[Array], Array],
                first: int = 0) -> Iterator[tuple[int, int, Array, Array]]:
        """``(start, stop, xs, ys)`` of this rank's share of each global batch (``None, None`` when
        it has no rows); ``order`` is the device permutation of resident data (None: in order)."""
        resident = self.model.backend.owns(X)
        ops = self.inner.ops
        for start, stop, a, b in self.shares(n, batch_size, first):
            if a == b:
                yield start, stop, None, None
            elif resident and order is None:
                yield start, stop, X[a:b, ...], y[a:b, ...]
            elif resident and order is not None:
                idx = order[a:b]
                yield start, stop, ops.gather_rows(X, idx, "x_batch"), ops.gather_rows(y, idx, "y_batch")
            else:
                idx = host_order[a:b]
                yield start, stop, on_device(X[idx, ...]), on_device(y[idx, ...])

    def batch_weights(self, host: np.ndarray[Any, Any], device: Array | None, host_order: np.ndarray[Any, Any],
                      order: Array | None, n: int, batch_size: int, dtype: str,
                      first: int = 0) -> Iterator[tuple[Array | None, float, float]]:
        """For each share of :meth:`batches` (same arguments): this rank's rows' weights on the device
        (None when it has no rows), their total and the global batch's total, both summed on the
        host from ``host`` (the rows' float64 weights; ``device``: their copy on the device when the
        data is resident, else None) -- the global total exactly as one process sums its batch."""
        backend, ops = self.model.backend, self.inner.ops
        for start, stop, a, b in self.shares(n, batch_size, first):
            batch = host[host_order[start:stop]]
            lo, hi = a - start, b - start
            if a == b:
                ws = None
            elif device is None:
                ws = backend.from_host(batch[lo:hi], dtype)
            elif order is None:
                ws = device[a:b]
            else:
                ws = ops.gather_rows(device, order[a:b], "w_batch")
            yield ws, float(batch[lo:hi].sum()), float(batch.sum())

    def reduce_metrics(self, metrics: list[Any]) -> None:
        """Every rank's epoch metric states merged into this rank's (the loss total is global already)."""
        from .metrics import reduce_metrics

        reduce_metrics(self.comm, metrics)


def _share(n_local: int, n_global: int, weight_totals: tuple[float, float] | None) -> float:
    """A rank's weight in the global mean: ``n_local / n_global``, or (weighted) its rows' weight total
    over the global batch's -- 0 when that is 0 (the batch's loss and gradient are 0, as in one process)."""
    if weight_totals is None:
        return n_local / n_global
    mine, total = weight_totals
    return mine / total if total > 0 else 0.0


def _checksum(X: Array, y: Array) -> str:
    """A fingerprint of the training data (one pass, one host read per array): ranks given different
    data of the same shape differ here."""
    xp = array_namespace(X)
    sums = [float(xp.sum(xp.astype(a, xp.float64))) for a in (X, y)]
    return hashlib.sha256(repr(sums).encode()).hexdigest()[:16]


def _weights_checksum(weights: tuple[Any, Any] | None) -> str | None:
    """A fingerprint of the training and validation rows' host weights (None without weights)."""
    if weights is None:
        return None
    parts = (np.asarray(w, np.float64).tobytes() for w in weights if w is not None)
    return hashlib.sha256(b"".join(parts)).hexdigest()[:16]


def begin_fit(trainer: Trainer, comm: Communicator, X: Array, y: Array, batch_size: int, epochs: int,
              initial_epoch: int, shuffle: bool, weights: tuple[Any, Any] | None = None) -> None:
    """Before the first step of ``fit``: every rank checks that it runs the same training (data,
    sample weights, model, options, shuffling state) -- a difference ends every rank with the same
    error -- then rank 0's weights are broadcast as a guard.  ``weights``: the host weights
    (``sample_weight`` times ``class_weight``) of the training rows and of the validation rows (or
    None), or None."""
    state = repr(trainer._rng.bit_generator.state).encode()
    model = trainer.model
    n = int(X.shape[0])
    mine = {"samples": n, "data checksum": _checksum(X, y), "sample weights checksum": _weights_checksum(weights),
            "parameters": model.n_params, "dropout": list(model.dropout),
            "dropout seed": model.seed if any(model.dropout) else None, "batch_size": batch_size, "epochs": epochs,
            "initial_epoch": initial_epoch, "shuffle": shuffle, "dtype": str(model.dtype),
            "precision": trainer.precision, "optimizer steps": trainer.optimizer.step_count,
            "shuffling state": hashlib.sha256(state).hexdigest()[:16]}
    root = comm.bcast_obj(mine, root=0)
    with agree(comm):
        differ = [f"{k} {mine[k]!r} (rank 0: {root[k]!r})" for k in mine if mine[k] != root[k]]
        if differ:
            raise ValueError(f"rank {comm.rank} would train differently from rank 0: {'; '.join(differ)}. Every "
                             "rank must get the same data, model and options.")
    comm.bcast_(model.params, root=0)
    step = trainer.precision_step
    if isinstance(step, DistributedStep):
        step.reset()


def check_communicator(comm: Any, model: MLP) -> Communicator:
    """``comm`` checked for ``model``: a communicator, and an NCCL one only for a model on its GPU."""
    from .comm import Communicator

    if not isinstance(comm, Communicator):
        raise TypeError(f"distributed={comm!r} is invalid: pass a communicator from xpnet.distributed.init() "
                        "(or xpnet.distributed.LocalCommunicator()).")
    if model.backend.kind not in ("numpy", "cupy"):
        raise ValueError(f"distributed training runs on NumPy (CPU) and CuPy (GPU) models, not on "
                         f"{model.backend.name}: build the MLP with device='cpu' or 'cuda'.")
    on_gpu = model.backend.kind == "cupy"
    if comm.kind == "nccl" and not on_gpu:
        raise ValueError(f"distributed={comm!r} is an NCCL communicator but the model is on the CPU: call "
                         "xpnet.distributed.init() (device 'cpu') for CPU training.")
    if comm.kind == "nccl" and model.backend.name != f"cupy:{comm.device}":
        raise ValueError(f"the model is on {model.backend.name}, but this rank's GPU is {comm.device}: build the "
                         "MLP with device=comm.device.")
    return comm
