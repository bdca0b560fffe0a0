"""``mpiexec -n 4 xpnet train ...`` (or ``srun``): the CLI's side of data-parallel training.

Under a launcher every rank runs the same command.  Rank 0 prints progress and owns the run
directory (creates, checkpoints, writes results); the other ranks print nothing, write nothing
and wait at a barrier while rank 0 checkpoints.  On resume rank 0 loads the checkpoint and
broadcasts it, so every rank continues from the same state.  An error raised on every rank
alike (agreed, see ``xpnet.distributed.agree``) ends each rank normally; any other error on one
rank (a failed write, a crash) aborts the whole job through MPI, so no rank is left waiting.
"""

from __future__ import annotations

import functools
import os
import sys

from ..distributed.agree import agree


@functools.cache
def _job():
    from ..distributed import from_environment

    return from_environment()


def job(device: str | None = None):
    """This process's communicator under ``mpiexec`` / ``srun`` (None when run alone); with a
    CUDA ``device`` an NCCL one on the GPU of the local rank."""
    comm = _job()
    if comm is None or device is None or not str(device).startswith("cuda"):
        return comm
    return _nccl_for(comm, str(device))


@functools.cache
def _nccl_for(comm, device: str):
    from ..distributed import for_device

    return for_device(comm, device)


def is_follower() -> bool:
    comm = _job()
    return comm is not None and comm.rank != 0


def silence_followers() -> None:
    """Ranks other than 0 print nothing on stdout (errors still reach stderr)."""
    if is_follower():
        sys.stdout = open(os.devnull, "w")


def on_root(fn):
    """``fn()`` on rank 0 only (everything when run alone); an error there ends every rank alike."""
    comm = _job()
    if comm is None:
        return fn()
    result = None
    with agree(comm):
        if comm.rank == 0:
            result = fn()
    return result


def agreed():
    """``agree`` over the job's communicator (a plain block when run alone)."""
    import contextlib

    comm = _job()
    return contextlib.nullcontext() if comm is None else agree(comm)


def guard(command, args) -> int:
    """Run a subcommand; under a launcher with several ranks, an error that not every rank
    raised (within a few seconds: a bad flag or config fails everywhere alike) is printed and
    aborts the whole job (MPI_Abort), so no rank hangs."""
    try:
        return command(args)
    except BaseException as exc:
        comm = _job() if _job.cache_info().currsize else None
        if comm is not None and comm.size > 1 and not getattr(exc, "agreed", False) and not comm.all_failed():
            from .exit_codes import EXIT_FAILED, EXIT_INTERRUPTED

            print(f"xpnet: rank {comm.rank} of {comm.size} failed ({type(exc).__name__}: {exc}); aborting all "
                  "ranks. Resume from the last checkpoint with mpiexec ... xpnet train --resume RUN_DIR.",
                  file=sys.stderr, flush=True)
            comm.abort(EXIT_INTERRUPTED if isinstance(exc, KeyboardInterrupt) else EXIT_FAILED)
        raise


def follow(comm, config: dict, parts, trainer, callbacks, resume: bool, data_on_device=None) -> dict:
    """A rank other than 0 of ``xpnet train``: the same collectives as rank 0, no files."""
    from ..io import checkpoint
    from ..train.callbacks import Callback, History

    with agree(comm):  # rank 0 starts or resumes the run directory
        pass
    history, initial_epoch = History(), 0
    if resume:
        with agree(comm):  # rank 0 loads and checks the checkpoint
            pass
        ckpt = comm.bcast_obj(None, root=0)
        checkpoint.restore(trainer, ckpt, callbacks)
        meta = ckpt.trainer_meta
        for i, epoch in enumerate(meta["history_epochs"]):
            history.append(epoch, {k: v[i] for k, v in meta["history"].items()})
        initial_epoch = ckpt.epoch + 1

    class WaitForCheckpoint(Callback):  # rank 0 writes; this rank waits at the same barrier
        def on_epoch_end(self, trainer, epoch, logs):
            comm.barrier()

    from .runs import stop_on_signals

    t = config["train"]
    if initial_epoch < t["epochs"]:
        val = parts["val"] if len(parts["val"][1]) else None
        with stop_on_signals(trainer):
            trainer.fit(*parts["train"], epochs=t["epochs"], batch_size=t["batch_size"], validation_data=val,
                        callbacks=[*callbacks, WaitForCheckpoint()], verbose=False, initial_epoch=initial_epoch,
                        history=history, data_on_device=data_on_device)
    if history.interrupted:
        return {"status": "interrupted", "stop_reason": history.stop_reason, "epochs_run": len(history.epoch)}
    return {"status": "diverged" if history.diverged else "completed", "epochs_run": len(history.epoch),
            "stop_reason": history.stop_reason, "train": {"loss": float("nan")}, "trainer": trainer}


def bench(args) -> int:
    """``xpnet bench --distributed`` (see ``xpnet.bench.distributed``); rank 0 prints and writes."""
    import json
    from pathlib import Path

    from ..bench import PRESETS
    from ..bench import distributed as dbench
    from ..distributed import init

    comm = job(args.device) or init(args.device)  # alone: one rank (efficiency 100% by definition)
    sizes = args.sizes or PRESETS[args.preset or "mnist"]
    result = dbench.run(comm, device=args.device, sizes=sizes, batch_sizes=args.batch_sizes or (64, 256),
                        dtype=args.dtype, precision=args.precision, rounds=max(args.rounds, 3),
                        steps=args.steps or 20)
    if comm.rank == 0:
        print(dbench.table(result))
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "distributed.json").write_text(json.dumps(result, indent=2))
    return 0
