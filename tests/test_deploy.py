"""From a user's data to a deployed model: the preprocessing record, xpnet.load / xpnet predict on raw
data, exports that take raw inputs (torch, ONNX), string labels, --loss auto, xpnet convert."""

from __future__ import annotations

import json

import numpy as np
import pytest

import xpnet
from xpnet.cli import main
from xpnet.io import artifact, checkpoint

NAMES = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
FAST = ["--hidden", "32", "--epochs", "6", "--batch-size", "32", "--quiet"]


def _write_csv(path, X, y, names, target="digit", target_first=False):
    header = [*names, target] if not target_first else [target, *names]
    lines = [",".join(header)]
    for xr, t in zip(X, y):
        values = [repr(float(v)) for v in xr]
        lines.append(",".join([*values, str(t)] if not target_first else [str(t), *values]))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A run trained through the CLI on a raw CSV whose target column holds class names (strings)."""
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits

    tmp = tmp_path_factory.mktemp("deploy")
    d = load_digits()
    X, y = d.data * 3.0 + 5.0, NAMES[d.target]  # raw, unstandardised features with an offset
    names = [f"px{i}" for i in range(64)]
    csv = _write_csv(tmp / "digits.csv", X, y, names)
    run = tmp / "run"
    assert main(["train", "--data-path", str(csv), "--target", "digit", *FAST, "--run-dir", str(run)]) == 0
    return {"tmp": tmp, "run": run, "X": X, "y": y, "names": names, "csv": csv}


def test_every_checkpoint_and_the_final_weights_hold_the_preprocessing(digits_run):
    run, X = digits_run["run"], digits_run["X"]
    rec = json.loads((run / "preprocessing.json").read_text())
    assert rec["feature_names"] == digits_run["names"] and rec["loss"] == "cross_entropy"
    assert rec["classes"] == sorted(NAMES.tolist()) and rec["target"] == "digit"
    idx = artifact.read_split(run)
    train = X[idx["train"]]
    np.testing.assert_array_equal(rec["mean"], train.mean(axis=0))
    assert rec["split"]["algorithm"] == "xpnet.data.split_indices/v1" and rec["split"]["seed"] == 0
    assert sorted(np.concatenate(list(idx.values())).tolist()) == list(range(len(X)))
    for ckpt in checkpoint.list_checkpoints(run / "checkpoints"):  # under the manifest's SHA-256
        assert checkpoint.load(ckpt).trainer_meta["preprocessing"] == rec
    assert xpnet.load(run).preprocessing == rec  # the final weights' metadata, under their SHA-256
    assert 'loss = "cross_entropy"' in (run / "config.toml").read_text()  # auto, saved resolved


def test_predict_on_a_second_raw_csv_matches_the_reported_test_accuracy(digits_run, capsys):
    run, tmp = digits_run["run"], digits_run["tmp"]
    test = artifact.read_split(run)["test"]
    # another CSV: the test rows, columns in another order, target first
    order = np.random.default_rng(1).permutation(64)
    names = [digits_run["names"][i] for i in order]
    csv = _write_csv(tmp / "new.csv", digits_run["X"][test][:, order], digits_run["y"][test], names,
                     target_first=True)
    out = tmp / "pred.csv"
    capsys.readouterr()
    assert main(["predict", str(run), "--data", str(csv), "--out", str(out)]) == 0
    reported = json.loads((run / "result.json").read_text())["test"]["accuracy"]
    printed = capsys.readouterr().out
    rows = out.read_text().splitlines()
    assert rows[0].split(",")[:2] == ["prediction", "proba_eight"]
    predicted = np.array([r.split(",")[0] for r in rows[1:]])
    accuracy = np.mean(predicted == digits_run["y"][test])
    assert accuracy == pytest.approx(reported, abs=1e-12)
    assert f"accuracy {reported:.4f}" in printed
    assert set(predicted) <= set(NAMES)
    proba = np.array([[float(v) for v in r.split(",")[1:]] for r in rows[1:]])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    # never overwrites; one line on stderr
    assert main(["predict", str(run), "--data", str(csv), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "exists; nothing was written" in err and err.count("\n") == 1


def test_python_load_best_last_and_path_agree_with_the_cli(digits_run):
    run, X = digits_run["run"], digits_run["X"]
    final = xpnet.load(run)
    labels = final.predict(X[:50])
    assert labels.dtype.kind == "U" and final.predict_proba(X[:50]).shape == (50, 10)
    last = checkpoint.latest_intact(run / "checkpoints")
    np.testing.assert_array_equal(xpnet.load(run, checkpoint="last").predict(X[:50]),
                                  xpnet.load(run, checkpoint=str(last)).predict(X[:50]))
    best = json.loads((run / "checkpoints" / "best.json").read_text())["checkpoint"]
    assert xpnet.load(run, checkpoint="best").source.name == best
    # the final weights are the last epoch's
    np.testing.assert_allclose(xpnet.load(run, checkpoint="last").decision_function(X[:50]),
                               final.decision_function(X[:50]), rtol=1e-6, atol=1e-6)


def test_input_columns_are_checked_against_the_training_features(digits_run, capsys):
    run, tmp = digits_run["run"], digits_run["tmp"]
    p = xpnet.load(run)
    with pytest.raises(ValueError, match="63 features but the model was trained on 64"):
        p.predict(digits_run["X"][:3, :63])
    csv = _write_csv(tmp / "fewer.csv", digits_run["X"][:5, 1:], digits_run["y"][:5], digits_run["names"][1:])
    assert main(["predict", str(run), "--data", str(csv)]) == 2
    err = capsys.readouterr().err
    assert "lacks feature column(s) ['px0']" in err and err.count("\n") == 1


def test_exports_take_raw_inputs_torch_and_onnx(digits_run, capsys):
    torch = pytest.importorskip("torch")
    ort = pytest.importorskip("onnxruntime")
    from xpnet.io.export import load_torch

    run, tmp, X = digits_run["run"], digits_run["tmp"], digits_run["X"]
    p = xpnet.load(run)
    logits, labels = p.decision_function(X), p.predict(X)
    # float32 on raw inputs: the folded offset (m / s) @ W1 cancels against x @ W1', so agreement is
    # to 1e-5 of the logits' scale (the float64 fold is exact to 1e-12: test_fold_standardisation_...)
    tol = 1e-5 * np.abs(logits).max()
    assert main(["export", str(run), "--out", str(tmp / "m.onnx"), "--probabilities"]) == 0
    assert "opset 17" in capsys.readouterr().out
    session = ort.InferenceSession(str(tmp / "m.onnx"))
    onnx_logits, onnx_proba = session.run(None, {"input": X.astype(np.float32)})
    np.testing.assert_allclose(onnx_logits, logits, rtol=1e-5, atol=tol)
    np.testing.assert_allclose(onnx_proba, p.predict_proba(X), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(p.classes[onnx_logits.argmax(axis=1)], labels)
    assert main(["export", str(run), "--out", str(tmp / "m.pt")]) == 0
    net = load_torch(tmp / "m.pt", activation="relu")
    torch_logits = net(torch.as_tensor(X, dtype=torch.float32)).detach().numpy()
    np.testing.assert_allclose(torch_logits, logits, rtol=1e-5, atol=tol)
    np.testing.assert_array_equal(p.classes[torch_logits.argmax(axis=1)], labels)
    assert main(["export", str(run), "--out", str(tmp / "m.onnx")]) == 2  # never overwrites
    assert "exists; nothing was written" in capsys.readouterr().err


@pytest.mark.parametrize("activation", ["gelu", "silu", "leaky_relu", "tanh", "elu", "softplus", "sigmoid"])
def test_onnx_activations_match_xpnet(activation):
    ort = pytest.importorskip("onnxruntime")
    from xpnet.io import onnx as xonnx

    model = xpnet.MLP([5, 7, 3], activation=activation, dtype="float64", seed=1)
    X = np.random.default_rng(0).normal(size=(20, 5)) * 4
    onnx_model = xonnx.build(model.get_weights(), activation)
    out = ort.InferenceSession(onnx_model.SerializeToString()).run(None, {"input": X})[0]
    np.testing.assert_allclose(out, model.forward(X), rtol=1e-6, atol=1e-7)


def test_fold_standardisation_into_the_first_layer():
    rng = np.random.default_rng(0)
    model = xpnet.MLP([4, 6, 2], dtype="float64", seed=0)
    X = rng.normal(size=(10, 4)) * 7 + 3
    rec = {"mean": X.mean(0).tolist(), "scale": X.std(0).tolist()}
    folded = artifact.fold(rec, model.get_weights())
    raw_model = xpnet.MLP([4, 6, 2], dtype="float64")
    raw_model.set_weights(folded)
    np.testing.assert_allclose(raw_model.forward(X), model.forward(artifact.transform(rec, X)), rtol=1e-12)


@pytest.mark.parametrize("y,loss", [
    (np.arange(60) % 3, "cross_entropy"),
    ((np.arange(60) % 3).astype(np.float64), "cross_entropy"),  # integral floats
    (np.linspace(0, 1, 60), "mse"),
])
def test_loss_auto_is_inferred_printed_and_saved(tmp_path, capsys, y, loss):
    X = np.random.default_rng(0).normal(size=(60, 3))
    np.savez(tmp_path / "d.npz", X=X, y=y)
    run = tmp_path / "run"
    assert main(["train", "--data-path", str(tmp_path / "d.npz"), *FAST, "--run-dir", str(run)]) == 0
    assert f"loss: {loss} (" in capsys.readouterr().out
    assert f'loss = "{loss}"' in (run / "config.toml").read_text()
    pred = xpnet.load(run).predict(X)
    assert pred.shape == (60,)
    assert main(["train", "--resume", str(run), "--quiet"]) == 0  # resume sees the resolved loss: no change


def test_bce_with_string_labels_and_regression_predict(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = np.where(X[:, 0] > 0, "yes", "no")
    csv = _write_csv(tmp_path / "b.csv", X, y, ["a", "b", "c"], target="answer")
    run = tmp_path / "run"
    assert main(["train", "--data-path", str(csv), "--target", "answer", "--loss", "bce", *FAST, "--lr", "0.01",
                 "--run-dir", str(run)]) == 0
    p = xpnet.load(run)
    test = artifact.read_split(run)["test"]
    reported = json.loads((run / "result.json").read_text())["test"]["accuracy"]
    assert set(p.predict(X)) <= {"yes", "no"} and p.score(X[test], y[test]) == pytest.approx(reported, abs=1e-12)
    assert p.classes.tolist() == ["no", "yes"] and reported > 0.8
    assert p.predict_proba(X).shape == (200, 1)
    yr = X @ np.array([1.0, -2.0, 0.5])
    csv = _write_csv(tmp_path / "r.csv", X, yr, ["a", "b", "c"], target="value")
    run = tmp_path / "reg"
    assert main(["train", "--data-path", str(csv), "--target", "value", *FAST, "--epochs", "20",
                 "--run-dir", str(run)]) == 0
    p = xpnet.load(run)
    assert p.loss == "mse" and p.predict(X).shape == (200,)
    with pytest.raises(ValueError, match="predict_proba is for classifiers"):
        p.predict_proba(X)


def test_convert_csv_to_npz_and_npy(tmp_path, capsys):
    X = np.random.default_rng(0).normal(size=(30, 3))
    y = np.array(["a", "b", "c"] * 10)
    csv = _write_csv(tmp_path / "d.csv", X, y, ["f1", "f2", "f3"], target="t")
    assert main(["convert", str(csv), "--target", "t", "--out", str(tmp_path / "d.npz")]) == 0
    with np.load(tmp_path / "d.npz") as z:
        assert z["X"].dtype == np.float32 and z["y"].tolist() == y.tolist()
        assert z["feature_names"].tolist() == ["f1", "f2", "f3"]
    assert main(["convert", str(csv), "--target", "t", "--out", str(tmp_path / "d.npy"), "--dtype", "float64"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "d.npy"), X)
    assert np.load(tmp_path / "d.y.npy").tolist() == y.tolist()
    assert main(["convert", str(csv), "--target", "t", "--out", str(tmp_path / "d.npz")]) == 2
    assert "exists; nothing was written" in capsys.readouterr().err


def test_weights_without_a_record_are_refused_for_raw_prediction(tmp_path):
    model = xpnet.MLP([3, 2])
    checkpoint.save_weights(tmp_path / "m.safetensors", model)
    with pytest.raises(ValueError, match="holds no preprocessing record"):
        xpnet.load(tmp_path / "m.safetensors")


def test_npz_with_string_labels_trains(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 2)) + np.repeat(np.eye(3, 2) * 4, 30, axis=0)
    np.savez(tmp_path / "d.npz", X=X, y=np.repeat(["red", "green", "blue"], 30))
    run = tmp_path / "run"
    assert main(["train", "--data-path", str(tmp_path / "d.npz"), *FAST, "--run-dir", str(run)]) == 0
    assert xpnet.load(run).classes.tolist() == ["blue", "green", "red"]


@pytest.mark.parametrize("target", ["num", "name"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_pyarrow_and_python_csv_readers_agree(tmp_path, target, dtype):
    pytest.importorskip("pyarrow")
    from xpnet import data

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3)) * 10.0 ** rng.integers(-5, 5, size=3)
    y = np.array(["cat", "dog"])[rng.integers(0, 2, 40)] if target == "name" else rng.integers(0, 4, 40)
    csv = _write_csv(tmp_path / "d.csv", X, y, ["a", "b", "c"], target=target, target_first=True)
    assert data._load_csv_arrow(str(csv), target, np.dtype(dtype)) is not None  # the fast path is taken
    fast = data.load_csv_named(csv, target, dtype=dtype, engine="pyarrow")
    slow = data.load_csv_named(csv, target, dtype=dtype, engine="python")
    np.testing.assert_array_equal(fast[0], slow[0])
    assert fast[0].dtype == dtype and fast[1].tolist() == slow[1].tolist() == y.tolist() and fast[2] == slow[2]
    np.testing.assert_array_equal(fast[0], X.astype(dtype))


def test_predict_split_uses_the_recorded_split(digits_run, capsys):
    run = digits_run["run"]
    reported = json.loads((run / "result.json").read_text())["test"]["accuracy"]
    capsys.readouterr()
    assert main(["predict", str(run), "--split", "test", "--out", str(digits_run["tmp"] / "split.csv")]) == 0
    assert f"accuracy {reported:.4f}" in capsys.readouterr().out
    test = artifact.read_split(run)["test"]
    assert len((digits_run["tmp"] / "split.csv").read_text().splitlines()) == len(test) + 1
    assert main(["predict", str(run)]) == 2
    assert "give --data FILE" in capsys.readouterr().err


SYN = ["--data", "synthetic", "--hidden", "16", "--batch-size", "64", "--quiet"]


def test_resume_with_epochs_extends_a_finished_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *SYN, "--epochs", "3", "--run-dir", str(run)]) == 0
    assert main(["train", "--resume", str(run), "--epochs", "5"]) == 0
    history = json.loads((run / "history.json").read_text())
    assert history["epoch"] == [1, 2, 3, 4, 5]
    assert "epochs = 5" in (run / "config.toml").read_text()
    assert json.loads((run / "extensions.json").read_text())[0]["to_epochs"] == 5
    last = checkpoint.latest(run / "checkpoints")
    assert last.name == "epoch-0005" and checkpoint.load(last).trainer_meta["run_config"]["train"]["epochs"] == 5
    assert main(["train", "--resume", str(run), "--epochs", "4"]) == 2
    assert "already trained 5 epochs" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--quiet"]) == 0  # the extension is the config now: no change


def test_save_every_keeps_the_best_and_the_last(tmp_path):
    run = tmp_path / "run"
    assert main(["train", *SYN, "--epochs", "7", "--save-every", "3", "--keep-last", "10", "--lr", "1e-5",
                 "--run-dir", str(run)]) == 0
    names = [p.name for p in checkpoint.list_checkpoints(run / "checkpoints")]
    assert names == ["epoch-0003", "epoch-0006", "epoch-0007"]  # epochs 3 and 6, and the last (7)
    best = json.loads((run / "checkpoints" / "best.json").read_text())["checkpoint"]
    assert best in names
    assert json.loads((run / "history.json").read_text())["epoch"] == list(range(1, 8))


def test_convert_then_train_on_the_memory_mapped_pair(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 2)) * 5 + 20 + np.repeat(np.eye(3, 2) * 20, 50, axis=0)
    csv = _write_csv(tmp_path / "d.csv", X, np.repeat(["a", "b", "c"], 50), ["u", "v"], target="kind")
    assert main(["convert", str(csv), "--target", "kind", "--out", str(tmp_path / "d.npy")]) == 0
    run = tmp_path / "run"
    assert main(["train", "--x-path", str(tmp_path / "d.npy"), "--y-path", str(tmp_path / "d.y.npy"), *FAST,
                 "--lr", "0.01", "--run-dir", str(run)]) == 0
    p = xpnet.load(run)
    test = artifact.read_split(run)["test"]
    reported = json.loads((run / "result.json").read_text())["test"]["accuracy"]
    assert p.classes.tolist() == ["a", "b", "c"]
    X32 = np.load(tmp_path / "d.npy")  # what the run read (float32)
    assert p.score(X32[test], np.repeat(["a", "b", "c"], 50)[test]) == pytest.approx(reported, abs=1e-12)
