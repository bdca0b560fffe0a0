"""Run configuration: defaults, TOML, flags winning, errors that name the key and allowed values."""

from __future__ import annotations

import pytest

from xpnet.cli import config


def test_defaults_are_valid_and_round_trip_through_toml(tmp_path):
    cfg = config.load()
    assert cfg["data"]["source"] == "digits" and cfg["train"]["epochs"] == 30
    path = tmp_path / "c.toml"
    path.write_text(config.dump_toml(cfg))
    assert config.load(path) == cfg


def test_toml_then_flags(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[train]\nepochs = 7\nlr = 0.01\n[model]\nhidden = [8, 8]\nactivation = "tanh"\n')
    cfg = config.load(path, {"train.epochs": 3})
    assert cfg["train"]["epochs"] == 3  # flags win
    assert cfg["train"]["lr"] == 0.01 and cfg["model"]["hidden"] == [8, 8] and cfg["model"]["activation"] == "tanh"
    assert cfg["train"]["batch_size"] == 32  # untouched keys keep their defaults


@pytest.mark.parametrize("text,pattern", [
    ("[trainer]\nepochs = 3\n", r"unknown section \[trainer\]; allowed sections: data, model, train, run"),
    ("[train]\nepoch = 3\n", r"unknown key train.epoch; allowed keys in \[train\]: loss, optimizer"),
    ("[train]\nepochs = 0\n", r"train.epochs = 0 is invalid: use an integer >= 1"),
    ("[train]\noptimizer = \"lbfgs\"\n", r"train.optimizer = 'lbfgs' is invalid: use one of 'sgd', 'adagrad'"),
    ("[model]\nactivation = \"swish\"\n", r"model.activation = 'swish' is invalid: use one of 'identity', 'relu'"),
    ("[model]\nhidden = [8, -1]\n", r"model.hidden = \[8, -1\] is invalid: use a list of positive integers"),
    ("[model]\ndropout = 1.0\n", r"model.dropout = 1.0 is invalid: use a number in \[0, 1\), or a list of them"),
    ("[model]\ndropout = [0.1, -0.2]\n", r"model.dropout = \[0.1, -0.2\] is invalid: use a number in \[0, 1\)"),
    ("[data]\nsource = \"csv\"\npath = \"x.csv\"\n", r"data.source = 'csv' needs data.target"),
    ("[data]\ntest_fraction = 0.6\nval_fraction = 0.5\n", r"test_fraction \+ data.val_fraction must be below 1"),
    ("[train\nepochs = 3\n", r"is not valid TOML"),
])
def test_config_errors_name_the_key(tmp_path, text, pattern):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=pattern):
        config.load(path)


def test_flag_errors_name_the_key():
    with pytest.raises(ValueError, match=r"config: train.batch_size = -2 is invalid: use an integer >= 1"):
        config.load(None, {"train.batch_size": -2})


def test_missing_config_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        config.load(tmp_path / "nope.toml")
