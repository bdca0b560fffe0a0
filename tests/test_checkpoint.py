"""Checkpoints: round trip, atomic under SIGKILL, clear errors on bad files, torch export."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import xpnet
from conftest import blobs
from xpnet import checkpoint


def _trained(sizes=(6, 16, 3), epochs=2, **kw):
    X, y = blobs(n=64)
    opt = xpnet.optim.AdamW(lr=0.01)
    trainer = xpnet.Trainer(xpnet.MLP(list(sizes), dtype="float64", seed=1, **kw), optimizer=opt,
                            scheduler=xpnet.optim.StepLR(opt, 1, 0.5))
    history = trainer.fit(X, y, epochs=epochs, batch_size=16, verbose=False)
    return trainer, history, (X, y)


def test_round_trip_restores_everything_a_resume_needs(tmp_path):
    trainer, history, (X, y) = _trained()
    path = checkpoint.save(tmp_path, trainer, epoch=1, history=history)
    ckpt = checkpoint.load(path)
    assert ckpt.epoch == 1 and ckpt.trainer_meta["history"]["loss"] == history["loss"]
    fresh = xpnet.Trainer(xpnet.MLP([6, 16, 3], dtype="float64", seed=99), optimizer=(o := xpnet.optim.AdamW(lr=0.01)),
                          scheduler=xpnet.optim.StepLR(o, 1, 0.5))
    checkpoint.restore(fresh, ckpt)
    np.testing.assert_array_equal(xpnet.to_host(fresh.model.params), xpnet.to_host(trainer.model.params))
    assert fresh.optimizer.step_count == trainer.optimizer.step_count and fresh.optimizer.lr == trainer.optimizer.lr
    # continuing both gives identical weights: optimizer moments, scheduler and shuffling RNG all came back
    trainer.fit(X, y, epochs=4, batch_size=16, verbose=False, initial_epoch=2)
    fresh.fit(X, y, epochs=4, batch_size=16, verbose=False, initial_epoch=2)
    np.testing.assert_array_equal(xpnet.to_host(fresh.model.params), xpnet.to_host(trainer.model.params))


def test_weights_file_is_plain_safetensors(tmp_path):
    from safetensors.numpy import load_file

    trainer, history, _ = _trained()
    path = checkpoint.save(tmp_path, trainer, 0, history)
    tensors = load_file(path / "model.safetensors")
    W0, b0 = trainer.model.get_weights()[0]
    np.testing.assert_array_equal(tensors["layer0.W"], W0)
    np.testing.assert_array_equal(tensors["layer0.b"], b0)


def test_mismatched_architecture_is_refused_and_nothing_changes(tmp_path):
    trainer, history, _ = _trained()
    path = checkpoint.save(tmp_path, trainer, 0, history)
    other = xpnet.Trainer(xpnet.MLP([6, 8, 3], dtype="float64"))
    before = xpnet.to_host(other.model.params).copy()
    with pytest.raises(ValueError, match=r"holds a model with sizes \[6, 16, 3\].*this model has sizes \[6, 8, 3\]"):
        checkpoint.restore(other, checkpoint.load(path))
    np.testing.assert_array_equal(xpnet.to_host(other.model.params), before)


@pytest.mark.parametrize("damage", ["truncate", "garble", "delete"])
def test_damaged_files_raise_a_clear_error_naming_the_file(tmp_path, damage):
    trainer, history, _ = _trained()
    path = checkpoint.save(tmp_path, trainer, 0, history)
    target = path / "trainer.safetensors"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:-100])
    elif damage == "garble":
        data = bytearray(target.read_bytes())
        data[8:40] = b"x" * 32
        target.write_bytes(bytes(data))
    else:
        target.unlink()
    snapshot = {p.name: p.read_bytes() for p in path.iterdir()}
    with pytest.raises(ValueError, match=r"trainer.safetensors (is unreadable|is missing)"):
        checkpoint.load(path)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == snapshot  # loading wrote nothing


def test_prune_keeps_the_newest_and_the_best(tmp_path):
    trainer, history, _ = _trained()
    for epoch in range(6):
        checkpoint.save(tmp_path, trainer, epoch, history)
    checkpoint.prune(tmp_path, keep_last=2, keep={"epoch-0001"})
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["epoch-0001", "epoch-0004", "epoch-0005"]


SAVER = textwrap.dedent("""
    import sys, numpy as np, xpnet
    from xpnet import checkpoint
    root = sys.argv[1]
    trainer = xpnet.Trainer(xpnet.MLP([512, 1024, 512, 10], dtype="float64"), optimizer=xpnet.optim.Adam())
    X = np.zeros((4, 512)); y = np.zeros(4, dtype=np.int64)
    trainer.train_step(X, y)  # allocates the optimizer state
    for epoch in range(100000):
        trainer.model.params[...] = float(epoch)
        for buf in trainer.optimizer.state.values():
            buf[...] = float(epoch)
        checkpoint.save(root, trainer, epoch)
        checkpoint.prune(root, keep_last=2)
        print(epoch, flush=True)
""")


@pytest.mark.parametrize("delay", [0.0, 0.037, 0.11, 0.23])
def test_a_kill_during_saving_never_leaves_a_torn_checkpoint(tmp_path, delay):
    """SIGKILL a process that saves ~18 MB checkpoints back to back; every surviving one is whole."""
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "0"  # the first checkpoint is complete
        time.sleep(delay)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    found = checkpoint.list_checkpoints(tmp_path)
    assert found, "the previous checkpoint was lost"
    for path in found:
        ckpt = checkpoint.load(path)
        epoch = ckpt.epoch
        assert all(np.all(W == epoch) and np.all(b == epoch) for W, b in ckpt.weights), path
        assert all(np.all(v == epoch) for k, v in ckpt.state.items() if k.startswith("optimizer.")), path


def test_export_to_torch_sequential_gives_the_same_outputs():
    torch = pytest.importorskip("torch")
    trainer, _, (X, _) = _trained(sizes=(6, 16, 12, 3), activation="gelu")
    seq = checkpoint.to_torch(trainer.model)
    with torch.no_grad():
        theirs = seq(torch.tensor(X)).numpy()
    np.testing.assert_allclose(theirs, xpnet.to_host(trainer.predict(X)), rtol=1e-12, atol=1e-12)
    state = checkpoint.to_torch_state_dict(trainer.model)
    assert set(state) == {"0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"}
    assert tuple(state["0.weight"].shape) == (16, 6)  # torch's (out, in)
    json.dumps({k: list(v.shape) for k, v in state.items()})
