"""``mpiexec -n N xpnet bench --distributed``: the all-reduce time per step and the scaling
efficiency of data-parallel training, beside the step time.

For each global batch size: rank 0 first times the plain one-process step on the whole batch
(the other ranks wait at a barrier, so it has the machine to itself), then every rank times the
data-parallel step (its share of the same global batch, plus the one all-reduce).  Reported:
the slowest rank's median step time, the mean all-reduce time per step (measured around the
collective, so it includes waiting for the slowest rank), its share of the step, throughput,
and the scaling efficiency ``throughput(N ranks) / (N x throughput(1 rank))``; beside them the
"bare" all-reduce of the same buffer, each after a barrier: the collective's own cost, without
waiting for a slower rank.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np


def _median_step(step, rounds: int, steps: int, sync) -> float:
    times = []
    for _ in range(rounds):
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)


def trainer_buffer(comm: Any, sizes: Sequence[int], dtype: str, device: str) -> Any:
    """A buffer like the step's all-reduce buffer (parameters + 2 slots) on this rank's device."""
    from ..backend import resolve_backend

    n = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:])) + 2
    backend = resolve_backend(comm.device if comm.kind == "nccl" else device)
    return backend.xp.zeros((n,), dtype=getattr(backend.xp, dtype), device=backend.device)


def _bare_allreduce(comm: Any, buf: Any, count: int) -> float:
    """Median seconds of the all-reduce alone, each after a barrier (no waiting for a slower rank)."""
    times = []
    for _ in range(count):
        comm.barrier()
        start = time.perf_counter()
        comm.allreduce_(buf)
        comm.synchronize()
        times.append(time.perf_counter() - start)
    return float(comm.allreduce_host(np.array([statistics.median(times)]), "max")[0])


def run(comm, device="cpu", sizes=(784, 1024, 1024, 10), batch_sizes=(64, 256), dtype="float32", precision="fp32",
        rounds=5, steps=20, warmup=3) -> dict:
    """One row per global batch size (see the module docstring); identical on every rank."""
    from .. import MLP, Trainer
    from ..optim import Adam

    rows = []
    for batch in batch_sizes:
        def trainer_for(distributed, batch=batch):
            model = MLP(list(sizes), dtype=dtype, device=comm.device if comm.kind == "nccl" else device, seed=0)
            trainer = Trainer(model, optimizer=Adam(lr=1e-4), precision=precision, distributed=distributed)
            r = np.random.default_rng(0)
            X, y = trainer.prepare(r.normal(size=(batch, sizes[0])).astype(np.float32),
                                   r.integers(0, sizes[-1], size=batch).astype(np.int64))
            lib = model.backend.lib
            sync = (lambda: lib.cuda.get_current_stream().synchronize()) if model.backend.kind == "cupy" else (
                lambda: None)
            return (lambda: trainer.step(X, y)), sync

        single = 0.0
        if comm.rank == 0:
            step, sync = trainer_for(None)
            for _ in range(warmup):
                step()
            single = _median_step(step, rounds, steps, sync)
        comm.barrier()
        step, sync = trainer_for(comm)
        for _ in range(warmup):
            step()
        comm.barrier()
        comm.reset_timing(True)
        mine = _median_step(step, rounds, steps, sync)
        allreduce = comm.allreduce_seconds / max(comm.allreduce_calls, 1)
        comm.reset_timing(False)
        bare = _bare_allreduce(comm, trainer_buffer(comm, sizes, dtype, device), rounds * steps)
        t_n = float(comm.allreduce_host(np.array([mine]), "max")[0])
        allreduce = float(comm.allreduce_host(np.array([allreduce]), "max")[0])
        single = float(comm.bcast_obj(single, root=0))
        rows.append({"batch": batch, "ranks": comm.size, "step_ms": 1e3 * t_n, "allreduce_ms": 1e3 * allreduce,
                     "allreduce_share": allreduce / t_n, "bare_allreduce_ms": 1e3 * bare,
                     "one_rank_step_ms": 1e3 * single,
                     "samples_per_s": batch / t_n, "efficiency": single / (comm.size * t_n)})
    return {"sizes": list(sizes), "device": device, "dtype": dtype, "precision": precision, "ranks": comm.size,
            "comm": comm.kind, "rows": rows}


def table(result: dict) -> str:
    lines = [f"data-parallel step, {result['ranks']} rank(s) over {result['comm']}, model {result['sizes']}, "
             f"{result['dtype']} {result['precision']}",
             f"{'batch':>6} {'step ms':>9} {'allreduce ms':>13} {'share':>6} {'bare ms':>8} {'1-rank ms':>10} "
             f"{'samples/s':>10} {'efficiency':>10}"]
    for r in result["rows"]:
        lines.append(f"{r['batch']:>6} {r['step_ms']:>9.3f} {r['allreduce_ms']:>13.3f} {r['allreduce_share']:>6.1%} "
                     f"{r['bare_allreduce_ms']:>8.3f} {r['one_rank_step_ms']:>10.3f} {r['samples_per_s']:>10.0f} "
                     f"{r['efficiency']:>10.1%}")
    return "\n".join(lines)
