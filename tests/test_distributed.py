"""Data-parallel training (xpnet.distributed): mpiexec runs with 2 and 3 ranks against
single-process training on the same data and global batch, in-process sharding/weighting with
one-rank communicators, agreed errors, the CLI (rank 0 writes; resume on another number of
ranks) and the NCCL path with a fake ``cupy.cuda.nccl``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

import xpnet
from xpnet.distributed import LocalCommunicator, agree, shard_bounds

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import dist_worker  # noqa: E402

MPIEXEC = shutil.which("mpiexec") or (shutil.which("mpiexec", path=str(Path(sys.executable).parent)))
needs_mpi = pytest.mark.skipif(MPIEXEC is None or not __import__("importlib").util.find_spec("mpi4py"),
                               reason="needs mpi4py and mpiexec (pip install 'xpnet[dist]')")

BASE = {"n": 53, "features": 5, "hidden": [7], "classes": 3, "dtype": "float64", "epochs": 3, "batch_size": 8}
# unshuffled, batches of 8: in the second batch rank 0's rows all weigh 0 (2 ranks: rows 8-11; 3 ranks:
# rows 8-9), and the third batch weighs 0 as a whole
WEIGHTED = {"shuffle": False, "sample_weight": {"zero": [[8, 12], [16, 24]]}}


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    src = str(Path(xpnet.__file__).parent.parent)
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _mpiexec(n, args, timeout=120, cwd=None):
    return subprocess.run([MPIEXEC, "-n", str(n), *args], capture_output=True, text=True, timeout=timeout,
                          env=_env(), cwd=cwd)


def _run_ranks(tmp_path, case, n):
    case_file, out = tmp_path / f"case{n}.json", tmp_path / f"out{n}.npz"
    case_file.write_text(json.dumps(case))
    proc = _mpiexec(n, [sys.executable, str(HERE / "dist_worker.py"), str(case_file), str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(out)
    for r in range(1, n):  # every rank ends with the same weights, history and loss scale
        other = np.load(f"{out}.rank{r}.npz")
        for key in ("params", "loss", "accuracy", "epochs", "scale", "skipped", "history"):
            np.testing.assert_array_equal(other[key], got[key], err_msg=f"rank {r}: {key}")
    return got


def _single(case):
    model, trainer, history = dist_worker.train(case)
    return model, trainer, history


# -- in-process: sharding and weighting --------------------------------------------------

def test_shard_bounds_cover_the_batch_contiguously():
    for n in range(0, 12):
        for size in range(1, 5):
            parts = [shard_bounds(n, r, size) for r in range(size)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            assert max(b - a for a, b in parts) - min(b - a for a, b in parts) <= 1
    assert [shard_bounds(2, r, 3) for r in range(3)] == [(0, 0), (0, 1), (1, 2)]  # rank 0 gets no rows


class _SimulatedRanks(LocalCommunicator):
    """Rank ``rank`` of ``size``, whose all-reduce adds the other ranks' buffers, computed here
    by one-rank trainers on their shares: the weighting checked without MPI."""

    def __init__(self, rank, size, others):
        super().__init__()
        self.rank, self.size, self.others = rank, size, others

    def _allreduce(self, buf):
        for other in self.others:
            buf += other()


def test_weighted_shares_sum_to_the_single_process_gradient():
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((2, 4)), rng.integers(0, 3, 2)
    ref = xpnet.MLP([4, 6, 3], dtype="float64", seed=0)
    t = xpnet.Trainer(ref, optimizer="sgd")
    t.forward_backward(X, y)
    expected = ref.grads.copy()
    # 3 ranks, global batch of 2: rank 0 has no rows
    shares = []
    for r in range(3):
        m = xpnet.MLP([4, 6, 3], dtype="float64", seed=0)
        tr = xpnet.Trainer(m, optimizer="sgd", distributed=LocalCommunicator())
        step = tr.precision_step
        step.comm = _SimulatedRanks(r, 3, [])
        loss, _ = step.forward_backward(X, y)
        shares.append((m.grads.copy(), float(loss)))
    total = sum(g for g, _ in shares)
    np.testing.assert_allclose(total, expected, rtol=0, atol=1e-15)
    assert not shares[0][0].any() and shares[0][1] == 0.0
    ref_loss = float(xpnet.Trainer(xpnet.MLP([4, 6, 3], dtype="float64", seed=0)).evaluate(X, y)["loss"])
    assert abs(sum(l for _, l in shares) - ref_loss) < 1e-14


@pytest.mark.parametrize("batch, zero_rows", [(7, [2, 3]), (2, []), (5, [0, 1, 2, 3, 4])],
                         ids=["zero-weight-rank", "rank-without-rows", "zero-weight-batch"])
def test_weighted_dropout_shares_sum_to_the_single_process_gradient(batch, zero_rows):
    # 3 ranks; batch 7: shares of 2, 2 and 3 rows, rank 1's rows all weigh 0; batch 2: rank 0 has no
    # rows; batch 5: every weight is 0 (loss and gradient 0, as in one process)
    rng = np.random.default_rng(4)
    X, y = rng.standard_normal((batch, 4)), rng.integers(0, 3, batch)
    w = rng.uniform(0.5, 2.0, batch)
    w[zero_rows] = 0.0

    def model():
        return xpnet.MLP([4, 9, 8, 3], dtype="float64", seed=0, dropout=[0.4, 0.3])

    ref = model()
    t = xpnet.Trainer(ref, optimizer="sgd")
    t.step_count = 6
    expected_loss = float(t.forward_backward(X, y, weights=w)[0])
    expected = ref.grads.copy()
    shares = []
    for r in range(3):
        m = model()
        step = xpnet.Trainer(m, optimizer="sgd", distributed=LocalCommunicator()).precision_step
        step.comm = _SimulatedRanks(r, 3, [])
        loss, _ = step.forward_backward(X, y, step=6, weights=w)
        shares.append((m.grads.copy(), float(loss)))
    np.testing.assert_allclose(sum(g for g, _ in shares), expected, rtol=0, atol=1e-15)
    assert abs(sum(l for _, l in shares) - expected_loss) < 1e-14
    if zero_rows == [2, 3]:
        assert not shares[1][0].any() and shares[1][1] == 0.0
    if len(zero_rows) == batch:
        assert not expected.any() and expected_loss == 0.0
    # the masks are the global batch's: without dropout the sum would differ
    plain = xpnet.Trainer(xpnet.MLP([4, 9, 8, 3], dtype="float64", seed=0), optimizer="sgd")
    plain.forward_backward(X, y, weights=w)
    assert len(zero_rows) == batch or not np.allclose(plain.model.grads, expected)


def test_one_rank_communicator_trains_exactly_as_without():
    case = dict(BASE, dtype="float32", precision="fp16", clip=0.5)
    a, _, ha = _single(case)
    m, _t, hb = dist_worker.train(case, LocalCommunicator())
    np.testing.assert_array_equal(a.params, m.params)
    assert ha.history == hb.history


@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weights-dropout"])
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_one_rank_communicator_trains_mixed_precision_exactly_as_without(precision, weighted):
    if precision == "bf16":
        pytest.importorskip("ml_dtypes")
    case = dict(BASE, dtype="float32", precision=precision, n=40)
    if weighted:
        case.update(WEIGHTED, dropout=0.3, class_weight="balanced")
    a, _, ha = _single(case)
    m, _, hb = dist_worker.train(case, LocalCommunicator())
    np.testing.assert_array_equal(a.params, m.params)
    assert ha.history == hb.history


def test_agree_reraises_on_one_rank_and_rejects_bad_communicators():
    with pytest.raises(ValueError, match="boom"), agree(LocalCommunicator()):
        raise ValueError("boom")
    with pytest.raises(TypeError, match="communicator"):
        xpnet.Trainer(xpnet.MLP([2, 2]), distributed="mpi")
    xps = pytest.importorskip("array_api_strict")
    with pytest.raises(ValueError, match="NumPy .* and CuPy"):
        xpnet.Trainer(xpnet.MLP([2, 2], xp=xps), distributed=LocalCommunicator())


def test_init_without_a_launcher_is_one_rank(monkeypatch):
    for var in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "MV2_COMM_WORLD_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(var, raising=False)
    assert xpnet.distributed.from_environment() is None
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # mpi4py missing: a one-rank communicator
    comm = xpnet.distributed.init()
    assert isinstance(comm, LocalCommunicator) and comm.size == 1
    monkeypatch.setenv("PMI_RANK", "0")
    with pytest.raises(RuntimeError, match="mpi4py"):
        xpnet.distributed.init()


# -- NCCL, with a fake cupy.cuda.nccl ---------------------------------------------------

class _FakeNccl:
    NCCL_FLOAT16, NCCL_FLOAT32, NCCL_FLOAT64, NCCL_SUM = 6, 7, 8, 0

    def __init__(self):
        self.calls = []

    def get_unique_id(self):
        return (42,) * 8

    def NcclCommunicator(self, size, uid, rank):
        self.calls.append(("init", size, uid, rank))
        fake = self

        class Comm:
            def allReduce(self, src, dst, count, dtype, op, stream):
                fake.calls.append(("allReduce", count, dtype, op))

            def bcast(self, ptr, count, dtype, root, stream):
                fake.calls.append(("bcast", count, dtype, root))

        return Comm()


def test_nccl_id_goes_over_mpi_and_buffers_over_nccl(monkeypatch):
    from xpnet.distributed import comm as comm_mod

    class FakeMPI(LocalCommunicator):
        kind = "mpi"

        def __init__(self, rank):
            super().__init__()
            self.rank, self.size, self.sent = rank, 2, []

        def bcast_obj(self, obj, root=0):
            self.sent.append(obj)
            return (42,) * 8 if obj is None else obj

        def local_rank(self):
            return self.rank

    class FakeCupy:
        class cuda:
            used: ClassVar[list] = []

            class Device:
                def __init__(self, i):
                    self.i = i

                def use(self):
                    FakeCupy.cuda.used.append(self.i)

            class runtime:
                @staticmethod
                def getDeviceCount():
                    return 2

            @staticmethod
            def get_current_stream():
                class S:
                    ptr = 0

                    def synchronize(self):
                        pass

                return S()

    nccl = _FakeNccl()
    monkeypatch.setitem(sys.modules, "cupy", FakeCupy)
    monkeypatch.setattr(comm_mod, "_nccl_module", lambda: nccl)
    for rank in (0, 1):
        mpi = FakeMPI(rank)
        c = comm_mod.NCCLCommunicator(mpi, rank)
        assert c.device == f"cuda:{rank}" and c.kind == "nccl" and c.size == 2
        assert mpi.sent == [(42,) * 8 if rank == 0 else None]  # rank 0 sends the id, the other receives it
        assert nccl.calls[-1] == ("init", 2, (42,) * 8, rank)

        class Buf:
            dtype, size = np.dtype("float32"), 10

            class data:
                ptr = 1234

        c.allreduce_(Buf())
        assert nccl.calls[-1] == ("allReduce", 10, nccl.NCCL_FLOAT32, nccl.NCCL_SUM)
    assert FakeCupy.cuda.used == [0, 1]
    # init(device="cuda") takes the local rank's GPU; too many ranks per machine is refused
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # init() hooks it for 2 ranks: undone after the test
    monkeypatch.setattr(comm_mod, "MPICommunicator", lambda comm=None: FakeMPI(1))
    monkeypatch.setitem(sys.modules, "mpi4py", type(sys)("mpi4py"))
    c = comm_mod.init("cuda")
    assert isinstance(c, comm_mod.NCCLCommunicator) and c.device == "cuda:1"
    assert isinstance(comm_mod.init("cpu"), FakeMPI)
    # an NCCL communicator with a CPU model is refused
    with pytest.raises(ValueError, match="NCCL communicator but the model is on the CPU"):
        xpnet.Trainer(xpnet.MLP([2, 2]), distributed=c)


# -- mpiexec: 2 and 3 ranks against one process --------------------------------------------

@needs_mpi
@pytest.mark.parametrize("n", [2, 3])
def test_float64_ranks_match_one_process_with_uneven_and_empty_shares(tmp_path, n):
    # 53 samples, batch 8: the last global batch has 5 rows; with 3 ranks and n=50 batch 8 the
    # last has 2 rows, so rank 0 has none in that step
    case = dict(BASE, n=53 if n == 2 else 50)
    got = _run_ranks(tmp_path, case, n)
    model, _, history = _single(case)
    assert int(got["size"]) == n
    np.testing.assert_allclose(got["params"], model.params, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got["loss"], history["loss"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(got["accuracy"], history["accuracy"], rtol=0, atol=1e-12)


@needs_mpi
@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("extra", [
    {"dropout": [0.3, 0.5], "hidden": [7, 6]},
    {"dropout": 0.4, **WEIGHTED, "class_weight": "balanced"},
    {"sample_weight": {"sparse": 0.4}},
    {"sample_weight": {"zero": [[0, 20]]}, "class_weight": "balanced"},
], ids=["dropout", "dropout-weights", "sparse-weights", "class-weight"])
def test_dropout_and_weights_on_ranks_match_one_process(tmp_path, n, extra):
    # uneven last batch (5 rows; with 3 ranks and n=50 it has 2 rows, so rank 0 has none), a rank whose
    # rows all weigh 0 and a batch that weighs 0 (WEIGHTED), shuffled shares of sparse weights
    case = dict(BASE, n=53 if n == 2 else 50, **extra)
    got = _run_ranks(tmp_path, case, n)
    model, _, history = _single(case)
    np.testing.assert_allclose(got["params"], model.params, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got["loss"], history["loss"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(got["accuracy"], history["accuracy"], rtol=0, atol=1e-12)
    # and the option changed the training: the ranks did not just agree with each other
    plain, _, _ = _single(dict(BASE, n=case["n"], hidden=case["hidden"]))
    assert not np.allclose(model.params, plain.params, rtol=0, atol=1e-6)


@needs_mpi
def test_fp16_weighted_dropout_ranks_take_the_same_skip_decisions(tmp_path):
    case = dict(BASE, dtype="float32", precision="fp16", n=50, optimizer="sgd", lr=0.1, init_scale=2.0**22,
                epochs=1, dropout=0.3, **WEIGHTED, class_weight="balanced")
    got = _run_ranks(tmp_path, case, 3)
    model, trainer, _ = _single(case)
    assert float(got["scale"]) == trainer.scaler.scale
    assert int(got["skipped"]) == trainer.scaler.skipped_steps > 0
    np.testing.assert_allclose(got["params"], model.params, rtol=0, atol=1e-3)


CLASSIFICATION_METRICS = ["accuracy", "top_k_accuracy", "f1_macro", "roc_auc_ovr", "neg_log_loss", "balanced_accuracy"]
REGRESSION = {"loss": "mse", "classes": 2, "metrics": ["r2", "neg_mean_absolute_error", "neg_root_mean_squared_error"]}


@needs_mpi
@pytest.mark.parametrize("extra", [
    {"metrics": CLASSIFICATION_METRICS},
    REGRESSION,
    # weighted (every metric takes sample weights): a rank whose rows weigh 0, a batch that weighs 0
    {"metrics": CLASSIFICATION_METRICS, **WEIGHTED, "class_weight": "balanced"},
    {**REGRESSION, "sample_weight": {"zero": [[8, 10], [16, 24]], "sparse": 0.3}},
], ids=["classification", "regression", "classification-weighted", "regression-weighted"])
def test_epoch_metrics_are_merged_over_ranks_as_one_process_computes_them(tmp_path, extra):
    case = dict(BASE, n=50, **extra)  # 3 ranks, last global batch of 2: one rank has no rows
    got = _run_ranks(tmp_path, case, 3)
    _, _, history = _single(case)
    merged = json.loads(str(got["history"]))
    assert merged.keys() == history.history.keys()
    for key, values in history.history.items():
        np.testing.assert_allclose(merged[key], values, rtol=1e-9, atol=1e-12, err_msg=key)


@needs_mpi
def test_float32_and_clipping_match_one_process(tmp_path):
    case = dict(BASE, dtype="float32", clip=0.05)
    got = _run_ranks(tmp_path, case, 3)
    model, _, history = _single(case)
    np.testing.assert_allclose(got["params"], model.params, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got["loss"], history["loss"], rtol=0, atol=1e-6)


@needs_mpi
@pytest.mark.parametrize("init_scale", [1024.0, 2.0**22])
def test_fp16_ranks_take_the_same_skip_decisions(tmp_path, init_scale):
    # float16 sums split over ranks round differently (about 1e-4 here), so fp16 matches one
    # process to float16 rounding, not 1e-6.  At 2**22 the first steps overflow and are skipped:
    # a rank's share is weighted before the float16 cast, so it overflows where one process does
    # and the ranks (which take one decision from the reduced buffer, see _run_ranks) skip the
    # same steps as one process
    case = dict(BASE, dtype="float32", precision="fp16", clip=1.0, n=50, optimizer="sgd", lr=0.1,
                init_scale=init_scale, epochs=1 if init_scale > 1024 else 3)
    got = _run_ranks(tmp_path, case, 3)
    model, trainer, _ = _single(case)
    assert float(got["scale"]) == trainer.scaler.scale
    assert int(got["skipped"]) == trainer.scaler.skipped_steps
    assert (int(got["skipped"]) > 0) == (init_scale > 1024)
    np.testing.assert_allclose(got["params"], model.params, rtol=0, atol=1e-3)


@needs_mpi
def test_early_stopping_stops_every_rank_in_the_same_epoch(tmp_path):
    case = dict(BASE, epochs=30, patience=1, min_delta=0.5, lr=1e-3)
    got = _run_ranks(tmp_path, case, 2)
    _, _, history = _single(case)
    assert int(got["epochs"]) == len(history.epoch) < 30
    assert "early stopping" in str(got["stop_reason"])


@needs_mpi
def test_divergence_stops_every_rank_at_the_same_step(tmp_path):
    import warnings

    case = dict(BASE, optimizer="sgd", lr=1e50)
    got = _run_ranks(tmp_path, case, 3)  # _run_ranks: every rank ends with the same (restored) weights
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        model, _, history = _single(case)
    assert history.diverged and str(got["stop_reason"]) == history.stop_reason
    np.testing.assert_allclose(got["params"], model.params, rtol=0, atol=1e-12)


@needs_mpi
def test_bad_input_on_one_rank_ends_all_ranks_with_the_same_error(tmp_path):
    case_file = tmp_path / "case.json"
    case_file.write_text(json.dumps(dict(BASE, bad_rank=1)))
    proc = _mpiexec(2, [sys.executable, str(HERE / "dist_worker.py"), str(case_file), str(tmp_path / "o.npz")],
                    timeout=60)
    assert proc.returncode != 0
    # each rank's traceback ends in the same message (the ranks' output may interleave)
    message = "ValueError: X contains NaN or inf values: clean or impute them before training. (rank 1 of 2)"
    assert proc.stderr.count(message) == 2, proc.stderr[-3000:]


def _refused_on_every_rank(tmp_path, case, n, rank, message):
    """The case fails on all ``n`` ranks with ``message`` raised by ``rank`` (their output may interleave)."""
    case_file = tmp_path / "case.json"
    case_file.write_text(json.dumps(case))
    proc = _mpiexec(n, [sys.executable, str(HERE / "dist_worker.py"), str(case_file), str(tmp_path / "o.npz")],
                    timeout=60)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.count(f"(rank {rank} of {n})") >= 2  # every rank raised it


@needs_mpi
def test_different_data_on_one_rank_is_refused_on_every_rank(tmp_path):
    _refused_on_every_rank(tmp_path, dict(BASE, other_data_rank=2), 3, 2,  # same shape, other values
                           "ValueError: rank 2 would train differently from rank 0: data checksum")


@needs_mpi
def test_different_sample_weights_on_one_rank_are_refused_on_every_rank(tmp_path):
    _refused_on_every_rank(tmp_path, dict(BASE, sample_weight={"sparse": 0.2}, other_weights_rank=1), 2, 1,
                           "rank 1 would train differently from rank 0: sample weights checksum")


@needs_mpi
def test_a_rank_that_dies_takes_the_job_down_instead_of_hanging(tmp_path):
    case_file = tmp_path / "case.json"
    case_file.write_text(json.dumps(dict(BASE, die_rank=1, epochs=50)))
    proc = _mpiexec(2, [sys.executable, str(HERE / "dist_worker.py"), str(case_file), str(tmp_path / "o.npz")],
                    timeout=60)  # subprocess.TimeoutExpired here would be a hang
    assert proc.returncode != 0 and not (tmp_path / "o.npz").exists()


@needs_mpi
def test_an_uncaught_exception_on_one_rank_ends_the_job(tmp_path):
    script = tmp_path / "raise.py"
    script.write_text("import numpy as np, xpnet.distributed as d\nc = d.init()\nif c.rank == 1:\n"
                      "    raise RuntimeError('boom on rank 1')\nc.allreduce_host(np.zeros(1))\n")
    proc = _mpiexec(2, [sys.executable, str(script)], timeout=60)  # without the hook: rank 0 waits forever
    # no hang, a failed job; the messages are usually there (an abort may cut the output of a loaded machine)
    assert proc.returncode != 0, proc.stderr[-3000:]
    assert "boom on rank 1" in proc.stderr or "Abort" in proc.stderr, proc.stderr[-3000:]


# -- the CLI: mpiexec -n N xpnet train ------------------------------------------------------

CLI_CONFIG = """[data]
source = "synthetic"
n_samples = 230
n_features = 6
n_classes = 3
val_fraction = 0.1
[model]
hidden = [8]
dtype = "float64"
[train]
epochs = 4
batch_size = 16
early_stopping = true
patience = 20
"""


@needs_mpi
@pytest.mark.parametrize("model_extra", ["", "dropout = 0.3\n"], ids=["plain", "dropout"])
def test_cli_resume_on_another_number_of_ranks_matches_one_uninterrupted_run(tmp_path, model_extra):
    from safetensors.numpy import load_file

    from xpnet.cli import main

    cfg = tmp_path / "run.toml"
    cfg.write_text(CLI_CONFIG.replace("[train]\n", model_extra + "[train]\n"))
    single, dist = tmp_path / "single", tmp_path / "dist"
    assert main(["train", "--config", str(cfg), "--run-dir", str(single), "--quiet"]) == 0
    proc = _mpiexec(2, [sys.executable, "-m", "xpnet", "train", "--config", str(cfg), "--run-dir", str(dist)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("trained 4 epochs") == 1  # rank 0 prints; the other rank is quiet
    assert not list(tmp_path.glob("runs*")) and sorted(p.name for p in tmp_path.iterdir()) == [
        "dist", "run.toml", "single"]  # the other rank wrote nothing anywhere
    # as if killed after epoch 2: resume with 3 ranks
    for path in sorted((dist / "checkpoints").glob("epoch-*"))[-2:]:
        shutil.rmtree(path)
    (dist / "checkpoints" / "best.json").unlink()
    for name in ("model.safetensors", "result.json"):
        (dist / name).unlink()
    proc = _mpiexec(3, [sys.executable, "-m", "xpnet", "train", "--resume", str(dist)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("resuming") == 1
    a, b = load_file(single / "model.safetensors"), load_file(dist / "model.safetensors")
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-12)
    ha, hb = (json.loads((d / "history.json").read_text()) for d in (single, dist))
    assert ha.keys() == hb.keys()
    for k in ha:
        np.testing.assert_allclose(hb[k], ha[k], rtol=0, atol=1e-12)


@needs_mpi
def test_cli_saving_every_few_epochs_keeps_the_ranks_in_step(tmp_path):
    from safetensors.numpy import load_file

    from xpnet.cli import main

    cfg = tmp_path / "run.toml"
    cfg.write_text(CLI_CONFIG + "[run]\nsave_every = 3\n")
    single, dist = tmp_path / "single", tmp_path / "dist"
    assert main(["train", "--config", str(cfg), "--run-dir", str(single), "--quiet"]) == 0
    proc = _mpiexec(2, [sys.executable, "-m", "xpnet", "train", "--config", str(cfg), "--run-dir", str(dist)],
                    timeout=90)  # a barrier on one rank and not the other would hang here
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (dist / "checkpoints").glob("epoch-*")) == sorted(
        p.name for p in (single / "checkpoints").glob("epoch-*"))
    a, b = load_file(single / "model.safetensors"), load_file(dist / "model.safetensors")
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-12)


@needs_mpi
def test_cli_per_step_schedule_and_tensorboard_match_one_process(tmp_path):
    """train.schedule = "onecycle" counts the global steps on every rank (the same lr sequence as
    one process), and only rank 0 writes the TensorBoard files."""
    pytest.importorskip("tensorboardX")
    from safetensors.numpy import load_file

    from xpnet.cli import main

    cfg = tmp_path / "run.toml"
    cfg.write_text(CLI_CONFIG + 'schedule = "onecycle"\n[run]\ntensorboard = true\n')
    single, dist = tmp_path / "single", tmp_path / "dist"
    assert main(["train", "--config", str(cfg), "--run-dir", str(single), "--quiet"]) == 0
    proc = _mpiexec(2, [sys.executable, "-m", "xpnet", "train", "--config", str(cfg), "--run-dir", str(dist)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    ha, hb = (json.loads((d / "history.json").read_text()) for d in (single, dist))
    np.testing.assert_allclose(hb["lr"], ha["lr"], rtol=1e-15, atol=0)
    assert len(set(ha["lr"])) == len(ha["lr"])
    a, b = load_file(single / "model.safetensors"), load_file(dist / "model.safetensors")
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-12)
    assert len(list((dist / "tensorboard").glob("events.out.tfevents.*"))) == 1  # rank 0's


@needs_mpi
def test_cli_error_on_every_rank_is_reported_once_per_rank_without_a_hang(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text(CLI_CONFIG)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("user file")
    proc = _mpiexec(2, [sys.executable, "-m", "xpnet", "train", "--config", str(cfg), "--run-dir",
                        str(tmp_path / "taken")], timeout=60)
    assert proc.returncode == 2
    message = "replace it. (rank 0 of 2)"  # the end of the same message on both ranks (which may interleave)
    assert proc.stderr.count(message) == 2 and proc.stderr.count("already holds files") == 2, proc.stderr


@needs_mpi
def test_bench_distributed_reports_allreduce_time_and_efficiency(tmp_path):
    proc = _mpiexec(2, [sys.executable, "-m", "xpnet", "bench", "--distributed", "--preset", "small", "--batch-sizes",
                        "32", "--rounds", "3", "--steps", "3", "--out", str(tmp_path)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("allreduce ms") == 1  # rank 0 prints
    result = json.loads((tmp_path / "distributed.json").read_text())
    row = result["rows"][0]
    assert result["ranks"] == 2 and row["batch"] == 32
    # (the mean all-reduce and the median step are separate statistics: no order between them is asserted)
    assert row["allreduce_ms"] > 0 and row["step_ms"] > 0 and row["efficiency"] > 0


@needs_mpi
def test_ctrl_c_under_mpiexec_stops_every_rank_at_the_same_step_and_resumes_alone(tmp_path):
    import signal
    import time

    from safetensors.numpy import load_file

    from xpnet.cli import main

    cfg = tmp_path / "run.toml"
    cfg.write_text(CLI_CONFIG.replace("n_samples = 230", "n_samples = 600").replace("epochs = 4", "epochs = 30"))
    single, dist = tmp_path / "single", tmp_path / "dist"
    proc = subprocess.Popen([MPIEXEC, "-n", "2", sys.executable, "-m", "xpnet", "train", "--config", str(cfg),
                             "--run-dir", str(dist)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env())
    try:
        deadline = time.time() + 60
        while not (dist / "checkpoints" / "epoch-0001").is_dir():
            assert proc.poll() is None and time.time() < deadline, "the run ended before it could be interrupted"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)  # mpiexec forwards it to every rank
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    stops = {line.split("stopped after step ")[1].split()[0] for line in err.split("xpnet train: ")[1:]
             if "stopped after step" in line}
    assert len(stops) == 1, err  # both ranks stopped after the same step
    assert not (dist / "model.safetensors").exists()
    assert main(["train", "--resume", str(dist), "--quiet"]) == 0  # resumed by one process, no mpiexec
    assert main(["train", "--config", str(cfg), "--run-dir", str(single), "--quiet"]) == 0
    a, b = load_file(single / "model.safetensors"), load_file(dist / "model.safetensors")
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-12)


@needs_mpi
def test_cli_error_raised_on_every_rank_exits_normally_with_its_code(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(f'[data]\npath = "{tmp_path / "missing.npz"}"\n[model]\nhidden = [8]\n')
    proc = _mpiexec(2, [sys.executable, "-m", "xpnet", "train", "--config", str(cfg), "--run-dir",
                        str(tmp_path / "run")], timeout=60)
    assert proc.returncode == 2, proc.stderr  # a bad input (2), not an abort
    assert proc.stderr.count("missing.npz: does not exist") == 2 and "aborting" not in proc.stderr
    assert not (tmp_path / "run").exists()



def test_ranks_with_other_dropout_seeds_are_refused():
    """The masks are keyed by the model's seed: ranks whose seeds differ (e.g. models built apart, then
    loaded from one checkpoint: same weights, same shuffling state) would drop different units."""
    from xpnet.distributed.sync import begin_fit

    class OtherSeedAtRoot(LocalCommunicator):
        def bcast_obj(self, obj, root=0):
            return {**obj, "dropout seed": obj["dropout seed"] + 1}

    X, y = np.zeros((8, 4)), np.zeros(8, dtype=np.int64)
    model = xpnet.MLP([4, 6, 3], dtype="float64", seed=0, dropout=0.2)
    trainer = xpnet.Trainer(model, distributed=LocalCommunicator())
    with pytest.raises(ValueError, match="dropout seed 0 .rank 0: 1."):
        begin_fit(trainer, OtherSeedAtRoot(), X, y, batch_size=4, epochs=1, initial_epoch=0, shuffle=True)
