"""Synchronous data-parallel training over MPI (CPU) and NCCL (GPUs), as ChainerMN did.

``comm = xpnet.distributed.init()`` joins MPI's ``COMM_WORLD`` (through ``mpi4py``); on
``device="cuda"`` each rank takes the GPU of its local rank (``comm.device``) and an NCCL
communicator whose id is exchanged over MPI.  ``Trainer(..., distributed=comm)`` then trains
data-parallel: ``batch_size`` is the GLOBAL batch, each rank takes its contiguous share of it,
and the weighted gradients are summed in one all-reduce of the flat gradient buffer per step.
See ``docs/distributed.md``.  Modules: ``comm`` (communicators), ``sync`` (the step and batch
sharding the trainer uses), ``agree`` (errors that end every rank the same way).
"""

from __future__ import annotations

from .agree import AgreedError, agree
from .comm import (
                   Communicator,
                   LocalCommunicator,
                   MPICommunicator,
                   NCCLCommunicator,
                   for_device,
                   from_environment,
                   init,
                   launched,
)
from .sync import DistributedStep, shard_bounds

__all__ = ["AgreedError", "Communicator", "DistributedStep", "LocalCommunicator", "MPICommunicator",
           "NCCLCommunicator", "agree", "for_device", "from_environment", "init", "launched", "shard_bounds"]
