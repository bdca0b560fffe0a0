"""Communicators: one rank in-process (:class:`LocalCommunicator`), MPI through ``mpi4py``
(:class:`MPICommunicator`, CPU arrays) and NCCL through CuPy (:class:`NCCLCommunicator`, GPU
arrays; its unique id is exchanged over MPI, and everything on the host still goes over MPI).

All offer the same small set the trainer uses: ``rank``, ``size``, ``device``,
``allreduce_(buf)`` (in-place sum of a flat device array), ``allreduce_host(values, op)``
(host NumPy values; ``op`` is ``"sum"``, ``"min"`` or ``"max"``), ``bcast_(buf, root)`` (in
place), ``bcast_obj(obj, root)``, ``barrier()`` and ``abort(code)``.  ``allreduce_`` adds its
wall time to ``allreduce_seconds`` (and counts ``allreduce_calls``) when ``timing`` is on; on
a GPU that synchronises the stream, so it is off unless a benchmark asks.
"""

from __future__ import annotations

import os
import time
from typing import Any, cast

import numpy as np

from .._typing import Array

# environment variables set by the launchers xpnet knows (mpiexec of MPICH / Intel MPI / Open MPI,
# PMIx, Slurm's srun): their presence means "this process is one rank of a parallel job"
_RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "MV2_COMM_WORLD_RANK")


def launched() -> bool:
    """Whether this process was started by an MPI launcher (``mpiexec``, ``srun``) as part of a job."""
    if any(v in os.environ for v in _RANK_VARS):
        return True
    return "SLURM_PROCID" in os.environ and int(os.environ.get("SLURM_STEP_NUM_TASKS", "1") or 1) > 1


class Communicator:
    """What :class:`~xpnet.Trainer` needs from a communicator (see the module docstring)."""

    rank = 0
    size = 1
    device = "cpu"
    kind = "local"

    def __init__(self) -> None:
        self.timing = False
        self.allreduce_seconds = 0.0
        self.allreduce_calls = 0

    def reset_timing(self, on: bool = True) -> None:
        self.timing, self.allreduce_seconds, self.allreduce_calls = on, 0.0, 0

    def allreduce_(self, buf: Array) -> None:
        start = time.perf_counter() if self.timing else 0.0
        self._allreduce(buf)
        if self.timing:
            self.synchronize()
            self.allreduce_seconds += time.perf_counter() - start
            self.allreduce_calls += 1

    def _allreduce(self, buf: Array) -> None: ...

    def synchronize(self) -> None: ...

    def allreduce_host(self, values: Any, op: str = "sum") -> np.ndarray[Any, Any]:
        return np.array(values, dtype=np.float64, copy=True)

    def bcast_(self, buf: Array, root: int = 0) -> None: ...

    def bcast_obj(self, obj: Any, root: int = 0) -> Any:
        return obj

    def allgather_obj(self, obj: Any) -> list[Any]:
        return [obj]

    def barrier(self) -> None: ...

    def abort(self, code: int = 1) -> None:
        os._exit(code)

    def all_failed(self, timeout: float = 5.0) -> bool:
        return True  # one rank: it is every rank

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, size={self.size}, device={self.device!r})"


class LocalCommunicator(Communicator):
    """One rank, in this process: every collective is the identity (single-process use and tests)."""

    def __init__(self, device: str = "cpu"):
        super().__init__()
        self.device = device


_OPS = ("sum", "min", "max")


class MPICommunicator(Communicator):
    """MPI through ``mpi4py`` (default ``COMM_WORLD``); device buffers that are not NumPy go
    through the host (use :class:`NCCLCommunicator` on GPUs)."""

    kind = "mpi"

    def __init__(self, comm: Any = None) -> None:
        from mpi4py import MPI

        super().__init__()
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.error_comm = self.comm.Dup()  # for all_failed only: never matched with a training collective

    def all_failed(self, timeout: float = 5.0) -> bool:
        """Called by a rank that failed: True when every rank fails within ``timeout`` seconds (the
        same error everywhere, e.g. a bad config: each may exit normally), False when some rank
        goes on (then the job must be aborted, or that rank would wait forever)."""
        one, total = np.ones(1, dtype=np.int64), np.zeros(1, dtype=np.int64)
        request = self.error_comm.Iallreduce(one, total, op=self.MPI.SUM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if request.Test():
                return int(total[0]) == self.size
            time.sleep(0.005)
        return False

    def local_rank(self) -> int:
        """This rank's index among the ranks on its own machine (shared-memory node)."""
        node = self.comm.Split_type(self.MPI.COMM_TYPE_SHARED, key=self.rank)
        try:
            return int(node.Get_rank())
        finally:
            node.Free()

    def _allreduce(self, buf: Array) -> None:
        if isinstance(buf, np.ndarray):
            self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
            return
        host = np.ascontiguousarray(buf.get())  # a CuPy array on plain MPI: through the host
        self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
        buf.set(host)

    def allreduce_host(self, values: Any, op: str = "sum") -> np.ndarray[Any, Any]:
        if op not in _OPS:
            raise ValueError(f"op={op!r}: use one of {_OPS}")
        arr = np.ascontiguousarray(np.array(values, dtype=np.float64, copy=True))
        mpi_op = {"sum": self.MPI.SUM, "min": self.MPI.MIN, "max": self.MPI.MAX}[op]
        self.comm.Allreduce(self.MPI.IN_PLACE, arr, op=mpi_op)
        return arr

    def bcast_(self, buf: Array, root: int = 0) -> None:
        if isinstance(buf, np.ndarray):
            self.comm.Bcast(buf, root=root)
            return
        host = np.ascontiguousarray(buf.get())
        self.comm.Bcast(host, root=root)
        buf.set(host)

    def bcast_obj(self, obj: Any, root: int = 0) -> Any:
        return self.comm.bcast(obj, root=root)

    def allgather_obj(self, obj: Any) -> list[Any]:
        return list(self.comm.allgather(obj))

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, code: int = 1) -> None:
        self.comm.Abort(code)


def _nccl_module() -> Any:
    from cupy.cuda import nccl

    return nccl


class NCCLCommunicator(Communicator):
    """NCCL on GPU ``device_index`` for the flat buffers (CuPy's ``cupy.cuda.nccl``, which
    ``cupyx.distributed`` wraps), the unique id broadcast over ``mpi``; host values, objects and
    barriers go over ``mpi``."""

    kind = "nccl"

    def __init__(self, mpi: MPICommunicator, device_index: int):
        import cupy

        super().__init__()
        self.mpi, self.rank, self.size = mpi, mpi.rank, mpi.size
        self.device_index, self.device = device_index, f"cuda:{device_index}"
        self.cupy = cupy
        self.nccl = _nccl_module()
        cupy.cuda.Device(device_index).use()
        uid = self.nccl.get_unique_id() if self.rank == 0 else None
        uid = mpi.bcast_obj(uid, root=0)
        self.comm = self.nccl.NcclCommunicator(self.size, uid, self.rank)

    def _dtype(self, buf: Array) -> int:
        n = self.nccl
        table = {"float16": n.NCCL_FLOAT16, "float32": n.NCCL_FLOAT32, "float64": n.NCCL_FLOAT64}
        return int(table[str(buf.dtype)])

    def _stream(self) -> int:
        return int(self.cupy.cuda.get_current_stream().ptr)

    def _allreduce(self, buf: Array) -> None:
        ptr = buf.data.ptr
        self.comm.allReduce(ptr, ptr, buf.size, self._dtype(buf), self.nccl.NCCL_SUM, self._stream())

    def synchronize(self) -> None:
        self.cupy.cuda.get_current_stream().synchronize()

    def bcast_(self, buf: Array, root: int = 0) -> None:
        self.comm.bcast(buf.data.ptr, buf.size, self._dtype(buf), root, self._stream())

    def allreduce_host(self, values: Any, op: str = "sum") -> np.ndarray[Any, Any]:
        return self.mpi.allreduce_host(values, op)

    def bcast_obj(self, obj: Any, root: int = 0) -> Any:
        return self.mpi.bcast_obj(obj, root)

    def allgather_obj(self, obj: Any) -> list[Any]:
        return self.mpi.allgather_obj(obj)

    def barrier(self) -> None:
        self.synchronize()
        self.mpi.barrier()

    def abort(self, code: int = 1) -> None:
        self.mpi.abort(code)

    def all_failed(self, timeout: float = 5.0) -> bool:
        return self.mpi.all_failed(timeout)


def _gpu_count() -> int:
    import cupy

    return int(cupy.cuda.runtime.getDeviceCount())


def init(device: str = "cpu", comm: Any = None) -> Communicator:
    """Join the job: MPI's ``COMM_WORLD`` (or ``comm``, an ``mpi4py`` communicator).

    ``device="cuda"`` (or ``"cuda:N"``: the index is ignored, each rank takes its own): each
    rank uses the GPU of its local rank (``comm.device``; build the MLP with ``device=comm.device``)
    and NCCL for the gradients.  Without ``mpi4py`` and outside a launcher it returns a one-rank
    :class:`LocalCommunicator`, so the same script runs alone."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        if launched():
            raise RuntimeError("this process was started by an MPI launcher, but mpi4py is not installed: "
                               'pip install "xpnet[dist]".') from None
        return LocalCommunicator(_one_rank_device(device))
    mpi = MPICommunicator(comm)
    if mpi.size > 1:
        _abort_on_uncaught_exception(mpi)
    return for_device(mpi, device)


def _abort_on_uncaught_exception(comm: MPICommunicator) -> None:
    """An exception that ends this rank's script ends the job (as ``python -m mpi4py`` does), unless
    every rank raised it (an agreed error, or all ranks failing alike): otherwise the other ranks
    would wait forever in their next collective."""
    import sys

    previous = sys.excepthook

    def hook(kind: Any, value: Any, traceback: Any) -> None:
        previous(kind, value, traceback)
        if not getattr(value, "agreed", False) and not comm.all_failed():
            print(f"xpnet.distributed: rank {comm.rank} of {comm.size} failed alone; aborting all ranks.",
                  file=sys.stderr, flush=True)
            comm.abort(1)

    sys.excepthook = hook


def for_device(comm: Communicator, device: str) -> Communicator:
    """``comm`` for a model on ``device``: an MPI communicator becomes an NCCL one on the GPU of
    its local rank for ``"cuda"`` / ``"cuda:N"``; anything else is returned as it is."""
    if not str(device).startswith("cuda") or comm.kind != "mpi":
        return comm
    comm = cast(MPICommunicator, comm)
    from .agree import agree

    with agree(comm):
        local, count = comm.local_rank(), _gpu_count()
        if local >= count:
            raise ValueError(f"rank {comm.rank} is local rank {local} on its machine, which has {count} GPU(s): "
                             "start at most one rank per GPU (NCCL needs one GPU per process).")
    return NCCLCommunicator(comm, local)


def _one_rank_device(device: str) -> str:
    return "cuda:0" if str(device) == "cuda" else str(device)


def from_environment(device: str = "cpu") -> Communicator | None:
    """:func:`init` when started by a launcher (``mpiexec``, ``srun``), else None (the CLI's choice)."""
    return init(device) if launched() else None
