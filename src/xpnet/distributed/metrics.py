"""Epoch metrics of a data-parallel epoch: every rank's metric states (``xpnet.train.metrics``)
gathered and merged, so every rank reports the metrics of the whole epoch, exactly as one process
would (counts and sums added, ROC AUC scores concatenated -- the AUC is rank-based, so the order
does not matter -- and regression summaries combined with Chan et al.'s formula).  Weighted states
(sums of weights, the AUC's kept weights, a weight total ``n``) merge the same way."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..train import metrics as m

if TYPE_CHECKING:
    from .comm import Communicator

_SKIP = ("xp", "device", "dtype")


def _host(value: Any) -> Any:
    from ..backend import to_host

    if isinstance(value, list):
        return [_host(v) for v in value]
    if value is None or isinstance(value, (int, float, str, bool, np.generic)):
        return value
    if hasattr(value, "shape"):
        return np.asarray(to_host(value))
    return value


def _state(metric: m.Metric) -> dict[str, Any]:
    return {k: _host(v) for k, v in vars(metric).items() if k not in _SKIP}


def _merge(into: m.Metric, other: dict[str, Any]) -> None:
    """Add the state ``other`` (another rank's, on the host) to ``into`` (this rank's, merged so far)."""
    xp, device = into.xp, into.device

    def dev(a: Any) -> Any:
        return None if a is None else xp.asarray(a, device=device)

    n_other = other["n"]
    if isinstance(into, m.Accuracy):
        into.correct = into.correct + dev(other["correct"])
    elif isinstance(into, m.TopKAccuracy):
        into.hits = into.hits + dev(other["hits"])
    elif isinstance(into, m.NegLogLoss):
        into.total = into.total + dev(other["total"])
    elif isinstance(into, m.Confusion):
        if other["matrix"] is not None:
            into.matrix = dev(other["matrix"]) if into.matrix is None else into.matrix + dev(other["matrix"])
    elif isinstance(into, m.RocAuc):
        into.scores = into.scores + [dev(a) for a in other["scores"]]
        into.labels = into.labels + [dev(a) for a in other["labels"]]
        into.weights = into.weights + [dev(a) for a in other.get("weights", [])]
    elif isinstance(into, m.Regression):
        if other["abs_err"] is not None:  # Chan et al.'s merge, as between batches
            into.fold(dev(other["abs_err"]), dev(other["sq_err"]), dev(other["mean"]), dev(other["m2"]), n_other)
        return
    else:
        raise ValueError(f"metric {into.name!r} cannot be merged across ranks yet.")
    into.n += n_other


def reduce_metrics(comm: Communicator, metrics: list[m.Metric]) -> None:
    """Merge every rank's ``metrics`` states into each rank's (in place; one gather of host states)."""
    if comm.size == 1 or not metrics:
        return
    states = comm.allgather_obj([_state(x) for x in metrics])
    for i, metric in enumerate(metrics):  # rank 0's state, then ranks 1, 2, ...: the same sums on every rank
        _load(metric, states[0][i])
        for theirs in states[1:]:
            _merge(metric, theirs[i])


def _load(into: m.Metric, state: dict[str, Any]) -> None:
    """Replace ``into``'s state by ``state`` (host values put on ``into``'s device)."""
    xp, device = into.xp, into.device
    for k, v in state.items():
        if isinstance(v, list):
            v = [xp.asarray(a, device=device) for a in v]
        elif isinstance(v, np.ndarray):
            v = xp.asarray(v, device=device)
        setattr(into, k, v)
