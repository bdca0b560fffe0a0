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


@pytest.mark.parametrize("text,pattern", [
    ('[train]\nschedule = "linear"\n', r"train.schedule = 'linear' is invalid: use one of 'constant', 'cosine', "
                                       r"'step', 'exponential', 'plateau', 'onecycle'"),
    ('[train]\nschedule_interval = "batch"\n', r"train.schedule_interval = 'batch' is invalid: use one of 'epoch', "
                                               r"'step' \(or leave it out\)"),
    ("[train]\nwarmup_steps = -1\n", r"train.warmup_steps = -1 is invalid: use an integer >= 0"),
    ("[train]\nwarmup_steps = 1.5\n", r"train.warmup_steps = 1.5 is invalid: use an integer >= 0"),
    ("[train]\nplateau_factor = 0\n", r"train.plateau_factor = 0 is invalid: use a number in \(0, 1\)"),
    ("[train]\nplateau_factor = 1.0\n", r"train.plateau_factor = 1.0 is invalid: use a number in \(0, 1\)"),
    ("[train]\nplateau_patience = -2\n", r"train.plateau_patience = -2 is invalid: use an integer >= 0"),
    ('[run]\ntensorboard = "yes"\n', r"run.tensorboard = 'yes' is invalid: use true or false"),
    # combinations: one line that names the keys and the fix
    ('[train]\nschedule = "onecycle"\nwarmup_epochs = 2\n',
     r"train.schedule = 'onecycle' has its own warm-up .*: remove train.warmup_epochs"),
    ('[train]\nschedule = "onecycle"\nschedule_interval = "step"\nwarmup_steps = 10\n',
     r"train.schedule = 'onecycle' has its own warm-up .*: remove train.warmup_steps"),
    ('[train]\nschedule = "plateau"\nwarmup_epochs = 1\n',
     r"train.schedule = 'plateau' cannot follow a warm-up: remove train.warmup_epochs"),
    ('[train]\nschedule = "onecycle"\nschedule_interval = "epoch"\n',
     r"train.schedule = 'onecycle' with train.schedule_interval = 'epoch': it always sets the lr after every "
     r"optimizer step; remove train.schedule_interval\."),
    ('[train]\nschedule = "plateau"\nschedule_interval = "step"\n',
     r"train.schedule = 'plateau' with train.schedule_interval = 'step': it acts once per epoch.*remove "
     r"train.schedule_interval"),
    ('[train]\nschedule = "exponential"\nschedule_interval = "step"\n',
     r"'exponential' with train.schedule_interval = 'step': it decays per epoch; remove train.schedule_interval"),
    ("[train]\nwarmup_epochs = 1\nwarmup_steps = 10\n",
     r"train.warmup_epochs and train.warmup_steps are both set: give one"),
    ("[train]\nwarmup_steps = 10\n",
     r"train.warmup_steps counts optimizer steps.*set train.schedule_interval = \"step\""),
    ('[train]\nschedule = "cosine"\nschedule_interval = "epoch"\nwarmup_steps = 10\n',
     r"train.warmup_steps counts optimizer steps.*set train.schedule_interval = \"step\""),
    ('[train]\nschedule = "step"\nplateau_patience = 3\n',
     r"train.plateau_patience is set but train.schedule = 'step' does not use it: remove it, or set "
     r"train.schedule = \"plateau\""),
    ("[train]\nplateau_factor = 0.5\n", r"train.plateau_factor is set but train.schedule = 'cosine'"),
])
def test_schedule_and_logging_keys_are_checked(tmp_path, text, pattern):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=pattern) as info:
        config.load(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("overrides,interval", [
    ({}, "epoch"),
    ({"train.schedule": "onecycle"}, "step"),
    ({"train.schedule": "plateau", "train.plateau_factor": 0.5, "train.plateau_patience": 0}, "epoch"),
    ({"train.schedule_interval": "step", "train.warmup_steps": 100}, "step"),
    ({"train.schedule": "constant", "train.schedule_interval": "step", "train.warmup_epochs": 2}, "step"),
    ({"train.schedule": "exponential", "train.schedule_interval": "epoch", "train.warmup_epochs": 2}, "epoch"),
])
def test_valid_schedule_combinations_load_and_round_trip(tmp_path, overrides, interval):
    cfg = config.load(None, {**overrides, "run.tensorboard": True})
    assert config.schedule_interval(cfg["train"]) == interval
    path = tmp_path / "c.toml"
    path.write_text(config.dump_toml(cfg))
    assert config.load(path) == cfg


def test_a_run_saved_before_a_key_existed_resumes_without_changes():
    """The saved config of an older run lacks the newer keys: they count as their defaults, so
    --resume does not see a change (turning TensorBoard on is no change of the computation)."""
    from xpnet.cli import runs

    saved = config.defaults()
    for key in ("schedule_interval", "warmup_steps", "plateau_factor", "plateau_patience"):
        del saved["train"][key]
    del saved["run"]["tensorboard"]
    current = config.defaults()
    assert runs.config_changes(saved, current) == []
    current["run"]["tensorboard"] = True
    assert runs.config_changes(saved, current) == []
    current["train"]["warmup_steps"] = 5
    assert runs.config_changes(saved, current) == ["train.warmup_steps: 0 -> 5"]
