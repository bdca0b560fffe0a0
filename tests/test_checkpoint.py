"""Checkpoints: round trip, atomic under SIGKILL, clear errors on bad files, torch export."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import struct
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
from conftest import blobs

import xpnet
from xpnet.io import checkpoint, export


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


# -- integrity: any damage is refused before anything is loaded --------------------------------
def _small(seed=1, sizes=(4, 8, 3)):
    X, y = blobs(n=32, features=4)
    opt = xpnet.optim.AdamW(lr=0.01)
    trainer = xpnet.Trainer(xpnet.MLP(list(sizes), dtype="float64", seed=seed), optimizer=opt,
                            scheduler=xpnet.optim.StepLR(opt, 1, 0.5))
    return trainer, trainer.fit(X, y, epochs=2, batch_size=16, verbose=False)


def _snapshot(root):
    return {p: (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def _refused(path, name, root):
    """Loading ``path`` raises ValueError naming file ``name``, and writes nothing under ``root``."""
    before = _snapshot(root)
    with pytest.raises(ValueError, match=re.escape(name)):
        checkpoint.load(path)
    with pytest.raises(ValueError, match=re.escape(name)):
        checkpoint.load_model(path)
    assert _snapshot(root) == before


@pytest.fixture
def saved(tmp_path):
    trainer, history = _small()
    return checkpoint.save(tmp_path / "ckpts", trainer, 0, history), tmp_path


FILES = ["model.safetensors", "trainer.safetensors", "manifest.json"]


def test_a_clean_checkpoint_has_a_manifest_and_loads_without_warnings(saved):
    path, _ = saved
    assert sorted(p.name for p in path.iterdir()) == sorted(FILES)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format"] == checkpoint.FORMAT == "xpnet-checkpoint-2"
    assert manifest["files"]["model.safetensors"]["size"] == (path / "model.safetensors").stat().st_size
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        checkpoint.load(path)
        checkpoint.load_model(path)


@pytest.mark.parametrize("name", FILES)
def test_every_flipped_byte_of_every_file_is_refused(saved, name):
    path, _ = saved
    target = path / name
    original = target.read_bytes()
    for offset in range(len(original)):  # every byte: length field, header, metadata JSON, tensor data
        for mask in (0x01, 0xFF) if offset % 7 == 0 else (0x01,):
            data = bytearray(original)
            data[offset] ^= mask
            target.write_bytes(bytes(data))
            with pytest.raises(ValueError, match=re.escape(name)):
                checkpoint.load(path)
    target.write_bytes(original)
    checkpoint.load(path)


@pytest.mark.parametrize("name", FILES)
def test_truncated_deleted_emptied_or_replaced_files_are_refused(saved, name):
    path, root = saved
    target = path / name
    original = target.read_bytes()
    for length in sorted({0, 1, 7, 8, 9, 64, len(original) // 2, len(original) - 8, len(original) - 1}):
        target.write_bytes(original[:length])
        _refused(path, name, root)
    target.write_bytes(original + b"\0")
    _refused(path, name, root)
    target.unlink()
    _refused(path, name, root)
    target.mkdir()
    _refused(path, name, root)


def test_weights_swapped_between_checkpoints_are_refused(saved):
    path, root = saved
    trainer, history = _small(sizes=(4, 5, 3))
    other = checkpoint.save(root / "other", trainer, 0, history)
    same, _ = _small(seed=2)
    twin = checkpoint.save(root / "twin", same, 0, history)
    for donor in (other, twin):  # a different architecture, and the same architecture with other weights
        (path / "model.safetensors").write_bytes((donor / "model.safetensors").read_bytes())
        _refused(path, "model.safetensors", root)


@pytest.mark.parametrize("edit", ["size", "digest", "whitespace", "extra key", "not json", "drop file"])
def test_edited_manifests_are_refused(saved, edit):
    path, root = saved
    file = path / "manifest.json"
    manifest = json.loads(file.read_text())
    entry = manifest["files"]["model.safetensors"]
    if edit == "size":
        entry["size"] += 1
    elif edit == "digest":
        entry["sha256"] = "0" * 64
    elif edit == "extra key":
        manifest["note"] = "hi"
    elif edit == "drop file":
        del manifest["files"]["trainer.safetensors"]
    text = json.dumps(manifest, indent=1 if edit == "whitespace" else None, separators=(",", ":"))
    file.write_text("[" if edit == "not json" else text + "\n")
    _refused(path, "manifest.json", root)


def test_a_resealed_manifest_of_the_wrong_shape_is_refused(saved):
    path, root = saved
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["model.safetensors"]["size"] = "big"
    (path / "manifest.json").write_bytes(checkpoint._manifest_bytes(manifest["files"]))
    _refused(path, "manifest.json is damaged", root)


def _rewrite(path, name, change_tensors=None, change_meta=None):
    """Alter one file's contents and re-seal it (weights digest, manifest) so only the content checks can object."""
    from safetensors.numpy import load_file, save_file

    file = path / name
    tensors = load_file(file)
    with open(file, "rb") as fh:
        meta = json.loads(fh.read(struct.unpack("<Q", fh.read(8))[0]))["__metadata__"]
    if change_tensors:
        change_tensors(tensors)
    if change_meta:
        change_meta(meta)
    if name == "model.safetensors" and "sha256" in meta:
        meta["sha256"] = checkpoint._tensor_digest(tensors, meta)
    save_file(tensors, file, metadata=meta)
    if (path / "manifest.json").exists():
        files = {n: {"size": (path / n).stat().st_size, "sha256": hashlib.sha256((path / n).read_bytes()).hexdigest()}
                 for n in ("model.safetensors", "trainer.safetensors")}
        (path / "manifest.json").write_bytes(checkpoint._manifest_bytes(files))


def _set(key, value):
    return lambda d: d.__setitem__(key, value)


def _edit_state(fn):
    def change(meta):
        state = json.loads(meta["json"])
        fn(state)
        meta["json"] = json.dumps(state)
    return change


@pytest.mark.parametrize("name, change_tensors, change_meta, message", [
    ("model.safetensors", _set("layer0.W", np.zeros((5, 8))), None, r"tensor 'layer0.W' of shape \(5, 8\)"),
    ("model.safetensors", _set("layer1.b", np.zeros(3, np.float32)), None, r"'layer1.b' .* dtype float32"),
    ("model.safetensors", lambda t: t["layer0.W"].__setitem__((0, 0), np.nan), None, r"NaN .* 'layer0.W'"),
    ("model.safetensors", lambda t: t.pop("layer1.b"), None, r"holds tensors .* need"),
    ("model.safetensors", None, lambda m: m.pop("sizes"), r"lacks metadata key\(s\) \['sizes'\]"),
    ("model.safetensors", None, _set("sizes", "[4, -8, 3]"), r"invalid layer sizes"),
    ("model.safetensors", None, _set("format", "something-else"), r"is not an xpnet weights file"),
    ("trainer.safetensors", lambda t: t["optimizer.exp_avg"].__setitem__(3, np.inf), None,
     r"infinite values in tensor 'optimizer.exp_avg'"),
    ("trainer.safetensors", None, _edit_state(lambda s: s.pop("rng")), r"lacks training-state key 'rng'"),
    ("trainer.safetensors", None, _edit_state(lambda s: s["optimizer"].pop("lr")),
     r"lacks optimizer key\(s\) \['lr'\]"),
    ("trainer.safetensors", None, _edit_state(lambda s: s.update(epoch="3")), r"'epoch' of the wrong type"),
    ("trainer.safetensors", None, _edit_state(lambda s: s["optimizer"].update(lr="fast")),
     r"optimizer key\(s\) \['lr'\] of the wrong type"),
    ("trainer.safetensors", None, lambda m: m.pop("json"), r"has no valid training state"),
])
def test_well_formed_but_wrong_contents_are_refused_naming_file_and_tensor(saved, name, change_tensors, change_meta,
                                                                           message):
    path, _ = saved
    _rewrite(path, name, change_tensors, change_meta)
    with pytest.raises(ValueError, match=re.escape(name) + ".*" + message):
        checkpoint.load(path)


def test_a_bare_weights_file_carries_its_own_digest(tmp_path):
    trainer, _ = _small()
    file = tmp_path / "model.safetensors"
    checkpoint.save_weights(file, trainer.model)
    np.testing.assert_array_equal(checkpoint.load_model(file).params, trainer.model.params)
    original = file.read_bytes()
    for offset in range(len(original)):
        data = bytearray(original)
        data[offset] ^= 0x01
        file.write_bytes(bytes(data))
        with pytest.raises(ValueError, match=r"model.safetensors .*Nothing was loaded"):
            checkpoint.load_model(file)
    file.write_bytes(original[:-1])
    with pytest.raises(ValueError, match=r"model.safetensors is unreadable"):
        checkpoint.load_model(file)


def _as_version_1(path):
    """Turn a checkpoint into what xpnet-checkpoint-1 wrote: no manifest, no weights digest."""
    (path / "manifest.json").unlink()

    def old(meta):
        meta["format"] = "xpnet-checkpoint-1"
        meta.pop("sha256")
    _rewrite(path, "model.safetensors", change_meta=old)


def test_old_checkpoints_without_a_manifest_load_with_a_warning(saved):
    path, _ = saved
    _as_version_1(path)
    with pytest.warns(checkpoint.IntegrityWarning, match="old format 'xpnet-checkpoint-1'"):
        ckpt = checkpoint.load(path)
    assert ckpt.epoch == 0
    with pytest.warns(checkpoint.IntegrityWarning):
        checkpoint.load_model(path / "model.safetensors")


def test_a_new_checkpoint_without_its_manifest_is_refused(saved):
    path, root = saved
    (path / "manifest.json").unlink()
    _refused(path, "manifest.json is missing", root)


def _host_state(trainer):
    return (xpnet.to_host(trainer.model.params).copy(), {k: xpnet.to_host(v).copy() for k, v in
            trainer.optimizer.state.items()}, trainer.optimizer.lr, trainer.optimizer.step_count, trainer.step_count,
            json.dumps(trainer._rng.bit_generator.state), json.dumps(trainer.scheduler.state_dict()))


def _assert_same(a, b):
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1].keys() == b[1].keys() and all(np.array_equal(a[1][k], b[1][k]) for k in a[1])
    assert a[2:] == b[2:]


@pytest.mark.parametrize("damage, message", [
    (lambda c: c.state.update({"optimizer.exp_avg": np.zeros(5)}), r"'optimizer.exp_avg' of shape \(5,\).* 67 param"),
    (lambda c: c.state.pop("optimizer.exp_avg"), r"holds optimizer buffers \['optimizer.exp_avg_sq'\]|"
                                                 r"holds optimizer buffers \['exp_avg_sq'\]"),
    (lambda c: c.trainer_meta.update(scheduler=None), r"has no learning-rate scheduler state, but this trainer has a"),
    (lambda c: c.trainer_meta["optimizer"].update(type="SGD"), r"holds SGD state; this trainer uses AdamW"),
    (lambda c: c.trainer_meta.update(loss="mse"), r"trained with loss 'mse'"),
    (lambda c: c.trainer_meta.update(rng={"bit_generator": "nope"}), r"invalid shuffling RNG state"),
    (lambda c: c.trainer_meta["scheduler"].pop("last_epoch"), r"scheduler state"),
    (lambda c: c.trainer_meta["scheduler"].update(last_epoch="2"), r"scheduler state"),
])
def test_a_refused_restore_leaves_the_trainer_untouched(saved, damage, message):
    path, _ = saved
    ckpt = checkpoint.load(path)
    damage(ckpt)
    trainer, _ = _small(seed=5)
    before = _host_state(trainer)
    with pytest.raises(ValueError, match=message):
        checkpoint.restore(trainer, ckpt)
    _assert_same(_host_state(trainer), before)


def _damage(path):
    data = bytearray((path / "model.safetensors").read_bytes())
    data[-1] ^= 0x01
    (path / "model.safetensors").write_bytes(bytes(data))


def test_latest_intact_skips_damaged_checkpoints(tmp_path):
    trainer, history = _small()
    for epoch in range(3):
        checkpoint.save(tmp_path, trainer, epoch, history)
    assert checkpoint.latest_intact(tmp_path).name == "epoch-0003"
    _damage(tmp_path / "epoch-0003")
    (tmp_path / "epoch-0002" / "trainer.safetensors").unlink()
    assert checkpoint.latest(tmp_path).name == "epoch-0003"
    assert checkpoint.latest_intact(tmp_path).name == "epoch-0001"
    assert not checkpoint.is_intact(tmp_path / "epoch-0003") and checkpoint.is_intact(tmp_path / "epoch-0001")
    _damage(tmp_path / "epoch-0001")
    assert checkpoint.latest_intact(tmp_path) is None
    assert checkpoint.latest_intact(tmp_path / "nowhere") is None


def test_prune_never_deletes_the_only_intact_checkpoint(tmp_path):
    trainer, history = _small()
    for epoch in range(5):
        checkpoint.save(tmp_path, trainer, epoch, history)
    _damage(tmp_path / "epoch-0004")
    _damage(tmp_path / "epoch-0005")
    checkpoint.prune(tmp_path, keep_last=2)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["epoch-0003", "epoch-0004", "epoch-0005"]
    checkpoint.save(tmp_path, trainer, 5, history)
    checkpoint.prune(tmp_path, keep_last=1)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["epoch-0006"]


def test_prune_keeps_the_newest_and_the_best(tmp_path):
    trainer, history, _ = _trained()
    for epoch in range(6):
        checkpoint.save(tmp_path, trainer, epoch, history)
    checkpoint.prune(tmp_path, keep_last=2, keep={"epoch-0002"})
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["epoch-0002", "epoch-0005", "epoch-0006"]


SAVER = textwrap.dedent("""
    import sys, numpy as np, xpnet
    from xpnet.io import checkpoint
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
    seq = export.to_torch(trainer.model)
    with torch.no_grad():
        theirs = seq(torch.tensor(X)).numpy()
    np.testing.assert_allclose(theirs, xpnet.to_host(trainer.predict(X)), rtol=1e-12, atol=1e-12)
    state = export.to_torch_state_dict(trainer.model)
    assert set(state) == {"0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"}
    assert tuple(state["0.weight"].shape) == (16, 6)  # torch's (out, in)
    json.dumps({k: list(v.shape) for k, v in state.items()})


def test_a_refused_callback_state_leaves_trainer_and_callback_untouched(tmp_path):
    X, y = blobs(n=32, features=4)
    trainer, _ = _small()
    stopper = xpnet.EarlyStopping(monitor="loss", patience=3, restore_best_weights=True)
    history = trainer.fit(X, y, epochs=2, batch_size=16, verbose=False, callbacks=[stopper])
    ckpt = checkpoint.load(checkpoint.save(tmp_path, trainer, 1, history, callbacks=[stopper]))
    ckpt.trainer_meta["callbacks"]["0:EarlyStopping"].pop("wait")
    fresh, _ = _small(seed=5)
    fresh_stopper = xpnet.EarlyStopping(monitor="loss", patience=3, restore_best_weights=True)
    before = _host_state(fresh), dict(vars(fresh_stopper))
    with pytest.raises(ValueError, match=r"for callback EarlyStopping that it cannot restore \(KeyError\('wait'\)\)"):
        checkpoint.restore(fresh, ckpt, callbacks=[fresh_stopper])
    _assert_same(_host_state(fresh), before[0])
    assert vars(fresh_stopper) == before[1]


class _SaveAtStep(xpnet.train.Callback):
    """Saves a mid-epoch checkpoint at optimizer step ``at``."""

    def __init__(self, root, at):
        self.root, self.at, self.path = root, at, None

    def on_step_end(self, trainer):
        if trainer.step_count == self.at:
            self.path = checkpoint.save_in_epoch(self.root, trainer)


@pytest.mark.parametrize(("shuffle", "resident"), [(True, None), (False, None), (True, False)])
def test_a_mid_epoch_checkpoint_resumes_exactly(tmp_path, where, shuffle, resident):
    """Saved 3 steps into the second epoch (4 steps an epoch): the epoch's starting RNG state, the
    steps taken and the running sums come back, and the resumed fit ends bit-identical (on every
    namespace, data resident or streamed from the host, shuffled or not)."""
    X, y = blobs(n=64)

    def make():
        opt = xpnet.optim.AdamW(lr=0.01)
        return xpnet.Trainer(xpnet.MLP([6, 16, 3], dtype="float64", seed=1, **where), optimizer=opt,
                             scheduler=xpnet.optim.StepLR(opt, 1, 0.5))

    fit = {"epochs": 3, "batch_size": 16, "verbose": False, "shuffle": shuffle, "data_on_device": resident}
    trainer, saver = make(), _SaveAtStep(tmp_path, at=7)
    full = trainer.fit(X, y, callbacks=[saver], **fit)
    assert saver.path.name == "epoch-0001-step-000007"
    ckpt = checkpoint.load(saver.path)
    assert ckpt.epoch == 0 and ckpt.in_epoch["epoch"] == 1 and ckpt.in_epoch["steps"] == 3
    fresh = make()
    checkpoint.restore(fresh, ckpt)
    history = fresh.fit(X, y, initial_epoch=ckpt.epoch + 1, **fit)
    np.testing.assert_array_equal(xpnet.to_host(fresh.model.params), xpnet.to_host(trainer.model.params))
    assert history["loss"] == full["loss"][1:] and history["accuracy"] == full["accuracy"][1:]
    with pytest.raises(ValueError, match="save_in_epoch works inside an epoch only"):
        checkpoint.save_in_epoch(tmp_path, fresh)
    again = make()
    checkpoint.restore(again, ckpt)
    with pytest.raises(ValueError, match="cannot continue that epoch exactly"):
        again.fit(X, y, epochs=3, batch_size=8, verbose=False, initial_epoch=1)


def test_checkpoint_names_sort_by_epoch_then_step_and_old_names_mix_in(tmp_path):
    """epoch-NNNN counts completed epochs; mid-epoch ones (epoch-NNNN-step-SSSSSS) sort after the
    epoch they follow, numerically (not by string); old 0-based names sort by their number too, and
    prune keeps the newest K plus the names it is told."""
    trainer, history = _small()
    for name in ["epoch-0000", "epoch-0001", "epoch-0002-step-000099", "epoch-0002-step-1000000", "epoch-0003",
                 "epoch-0002", "epoch-0010", "epoch-0003-step-000120"]:
        checkpoint.save(tmp_path / "new", trainer, 0, history).rename(tmp_path / name)
    (tmp_path / "epoch-0004-notes").mkdir()
    names = [p.name for p in checkpoint.list_checkpoints(tmp_path)]
    assert names == ["epoch-0000", "epoch-0001", "epoch-0002", "epoch-0002-step-000099", "epoch-0002-step-1000000",
                     "epoch-0003", "epoch-0003-step-000120", "epoch-0010"]
    assert checkpoint.latest(tmp_path).name == checkpoint.latest_intact(tmp_path).name == "epoch-0010"
    checkpoint.prune(tmp_path, keep_last=2, keep={"epoch-0001"})
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == ["epoch-0001", "epoch-0003-step-000120",
                                                                       "epoch-0010"]


@pytest.mark.parametrize(("loss", "metrics"), [
    ("cross_entropy", ("accuracy", "top_k_accuracy", "f1_macro", "roc_auc_ovr", "neg_log_loss")),
    ("mse", ("r2", "neg_mean_absolute_error"))])
def test_a_mid_epoch_checkpoint_carries_every_metrics_running_state(tmp_path, loss, metrics):
    """Each kind of metric state (counts, a confusion matrix, the epoch's scores for ROC AUC, the
    merged mean and spread for R^2) is saved mid-epoch and continued: the epoch's metrics and the
    weights equal an uninterrupted fit's exactly."""
    X, y = blobs(n=64)
    if loss == "mse":
        y = np.eye(3)[y] * 2.0 - 0.5

    def make():
        return xpnet.Trainer(xpnet.MLP([6, 16, 3], dtype="float64", seed=1), loss=loss,
                             optimizer=xpnet.optim.AdamW(lr=0.01), metrics=metrics)

    trainer, saver = make(), _SaveAtStep(tmp_path, at=6)
    full = trainer.fit(X, y, epochs=2, batch_size=16, verbose=False, callbacks=[saver])
    ckpt = checkpoint.load(saver.path)
    assert [m["name"] for m in ckpt.in_epoch["metrics"]] == list(metrics)
    fresh = make()
    checkpoint.restore(fresh, ckpt)
    history = fresh.fit(X, y, epochs=2, batch_size=16, verbose=False, initial_epoch=1)
    np.testing.assert_array_equal(xpnet.to_host(fresh.model.params), xpnet.to_host(trainer.model.params))
    assert {k: v[1:] for k, v in full.history.items()} == history.history
    other = xpnet.Trainer(xpnet.MLP([6, 16, 3], dtype="float64", seed=1), loss=loss,
                          optimizer=xpnet.optim.AdamW(lr=0.01), metrics=metrics[:1])
    checkpoint.restore(other, ckpt)
    with pytest.raises(ValueError, match="saved inside an epoch with metrics"):
        other.fit(X, y, epochs=2, batch_size=16, verbose=False, initial_epoch=1)
