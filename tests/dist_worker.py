"""One rank of a distributed test run (started by tests/test_distributed.py under mpiexec).

``python dist_worker.py CASE.json OUT.npz``: trains the case's model on its synthetic data with
``xpnet.distributed.init()`` and rank 0 saves the weights and history to OUT.npz.  The same
function runs in-process (no MPI) for the single-process reference.
"""

from __future__ import annotations

import json
import sys

import numpy as np


def data(case, rank=0):
    rng = np.random.default_rng(case.get("data_seed", 0) + (rank == case.get("other_data_rank", -1)))
    n, f = case["n"], case["features"]
    X = rng.standard_normal((n, f)).astype(case["dtype"])
    y = rng.integers(0, case["classes"], n)
    if case.get("loss") == "mse":  # regression: classes = target columns
        y = rng.standard_normal((n, case["classes"])).astype(case["dtype"])
    return X, y


def sample_weight(case):
    """The case's sample weights (None without): positive, with the ``zero`` row ranges (in data order)
    and, with ``sparse``, that fraction of the rows at weight 0."""
    spec = case.get("sample_weight")
    if spec is None:
        return None
    rng = np.random.default_rng(case.get("data_seed", 0) + 7)
    w = rng.uniform(0.2, 3.0, case["n"])
    for a, b in spec.get("zero", []):
        w[a:b] = 0.0
    if spec.get("sparse"):
        w[rng.random(case["n"]) < spec["sparse"]] = 0.0
    return w


def train(case, comm=None):
    import xpnet
    from xpnet.train.callbacks import EarlyStopping

    X, y = data(case, comm.rank if comm is not None else 0)
    w = sample_weight(case)
    if comm is not None and comm.rank == case.get("other_weights_rank", -1):
        w[0] += 1.0  # other sample weights on this rank only
    if comm is not None and comm.rank == case.get("bad_rank", -1):
        X[3, 1] = np.nan  # a bad input on this rank only
    device = comm.device if comm is not None else case.get("device", "cpu")  # a GPU per rank under NCCL
    model = xpnet.MLP([case["features"], *case["hidden"], case["classes"]], dtype=case["dtype"], seed=3,
                      dropout=case.get("dropout", 0.0), device=device)
    opt = xpnet.optim.get_optimizer(case.get("optimizer", "adam"), case.get("lr", 1e-2))
    trainer = xpnet.Trainer(model, optimizer=opt, clip_grad_norm=case.get("clip"),
                            loss=case.get("loss", "cross_entropy"), metrics=case.get("metrics"),
                            precision=case.get("precision", "fp32"), distributed=comm)
    if case.get("init_scale"):
        trainer.scaler.scale = float(case["init_scale"])
    callbacks = []
    if case.get("patience") is not None:
        callbacks.append(EarlyStopping(monitor="loss", patience=case["patience"], min_delta=case.get("min_delta", 0)))
    if comm is not None and comm.rank == case.get("die_rank", -1):
        import os

        class Die(xpnet.train.callbacks.Callback):  # a crash on this rank only, mid-training
            def on_epoch_end(self, trainer, epoch, logs):
                os._exit(7)

        callbacks.append(Die())
    history = trainer.fit(X, y, epochs=case["epochs"], batch_size=case["batch_size"], verbose=False,
                          callbacks=callbacks, shuffle=case.get("shuffle", True), sample_weight=w,
                          class_weight=case.get("class_weight"))
    return model, trainer, history


def main(case_file, out):
    import warnings

    import xpnet.distributed

    warnings.simplefilter("ignore", RuntimeWarning)  # a diverging case warns on every rank

    case = json.loads(open(case_file).read())
    comm = xpnet.distributed.init(case.get("device", "cpu"))
    model, trainer, history = train(case, comm)
    if comm.rank > 0:  # every rank's final state, to check that the ranks agree
        out = f"{out}.rank{comm.rank}.npz"
    if True:
        np.savez(out, params=xpnet.to_host(model.params), loss=np.array(history.history.get("loss", [])),
                 accuracy=np.array(history.history.get("accuracy", [])), epochs=len(history.epoch), size=comm.size,
                 scale=trainer.scaler.scale if trainer.scaler is not None else 0.0,
                 stop_reason=str(history.stop_reason), history=json.dumps(history.history),
                 skipped=trainer.scaler.skipped_steps if trainer.scaler is not None else 0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
