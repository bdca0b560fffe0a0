"""Epoch metrics of a data-parallel epoch: every rank's metric states (``xpnet.train.metrics``)
gathered and merged, so every rank reports the metrics of the whole epoch, exactly as one process
would (counts and sums added, ROC AUC scores concatenated -- the AUC is rank-based, so the order
does not matter -- and regression summaries combined with Chan et al.'s formula)."""

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
    elif isinstance(into, m.Regression):
        if other["abs_err"] is None:
            return
        if into.abs_err is None or into.sq_err is None or into.mean is None or into.m2 is None:
            into.abs_err, into.sq_err = dev(other["abs_err"]), dev(other["sq_err"])
            into.mean, into.m2, into.n = dev(other["mean"]), dev(other["m2"]), n_other
            return
        n, total = into.n, into.n + n_other
        delta = dev(other["mean"]) - into.mean
        into.mean = into.mean + delta * (n_other / total)
        into.m2 = into.m2 + dev(other["m2"]) + delta * delta * (n * n_other / total)
        into.abs_err, into.sq_err = into.abs_err + dev(other["abs_err"]), into.sq_err + dev(other["sq_err"])
        into.n = total
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
