"""Run configuration for ``xpnet train``: defaults, a TOML file, command-line flags (which win).

Every key is declared once in :data:`SCHEMA` with its default and what it accepts; an unknown
section or key, or a value of the wrong kind, raises a ``ValueError`` that names the key and
the allowed values.  :func:`dump_toml` writes the resolved configuration into the run
directory, so ``xpnet train --config RUN_DIR/config.toml`` repeats a run.
"""

from __future__ import annotations

import copy
import math
import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

from ..activations import ACTIVATIONS
from ..initializers import INITIALIZERS
from ..losses import LOSSES
from ..optim import OPTIMIZERS

DATA_SOURCES = ("digits", "synthetic", "npz", "npy", "csv")
SCHEDULES = ("constant", "cosine", "step", "exponential", "plateau", "onecycle")
# train.schedule_interval each schedule allows: how often it sets the lr (the first is its default)
SCHEDULE_INTERVALS = {"constant": ("epoch", "step"), "cosine": ("epoch", "step"), "step": ("epoch",),
                      "exponential": ("epoch",), "plateau": ("epoch",), "onecycle": ("step",)}


def _choice(*options):
    return ("choice", options)


# section -> key -> (default, accepted): "int+", "int0", "float+", "float0", "fraction", "bool", "str",
# "str?", "sizes", ("choice", options) -- "?" allows None (absent).
SCHEMA: dict[str, dict[str, tuple]] = {
    "data": {
        "source": ("digits", _choice(*DATA_SOURCES)),
        "path": (None, "str?"),  # npz file (arrays X, y) or csv file
        "x_path": (None, "str?"),  # npy pair
        "y_path": (None, "str?"),
        "target": (None, "str?"),  # csv target column
        "test_fraction": (0.25, "fraction"),
        "val_fraction": (0.0, "fraction"),
        "standardize": (True, "bool"),
        "n_samples": (2000, "int+"),  # synthetic
        "n_features": (20, "int+"),
        "n_classes": (4, "int+"),
    },
    "model": {
        "hidden": ([256, 256], "sizes"),
        "activation": ("relu", _choice(*ACTIVATIONS)),
        "dropout": (0.0, "rates"),  # hidden layers, training only: one rate, or one per hidden layer
        "init": (None, ("choice?", INITIALIZERS)),
        "dtype": ("float32", _choice("float32", "float64")),
        "device": ("cpu", "device"),
    },
    "train": {
        "loss": ("auto", _choice("auto", *LOSSES)),  # auto: resolved from the targets, saved resolved
        "optimizer": ("adamw", _choice(*OPTIMIZERS)),
        "lr": (1e-3, "float+"),
        "weight_decay": (None, "float0?"),
        "momentum": (None, "float0?"),
        "schedule": ("cosine", _choice(*SCHEDULES)),
        # how often the schedule sets the lr: per epoch, or after every optimizer step (cosine and the
        # warm-up); none: onecycle per step, the others per epoch
        "schedule_interval": (None, ("choice?", ("epoch", "step"))),
        "warmup_epochs": (0, "int0"),
        "warmup_steps": (0, "int0"),  # a warm-up counted in optimizer steps (schedule_interval = "step")
        "plateau_factor": (0.1, "fraction+"),  # schedule = "plateau": lr multiplied by this on a plateau
        "plateau_patience": (10, "int0"),  # ... after this many epochs without improvement of the monitor
        "epochs": (30, "int+"),
        "batch_size": (32, "int+"),
        "seed": (0, "int0"),
        "clip_grad_norm": (None, "float+?"),
        "precision": ("fp32", _choice("fp32", "tf32", "fp16", "bf16")),
        "early_stopping": (False, "bool"),
        "patience": (5, "int0"),
        "metrics": (None, "names?"),  # scikit-learn scorer names (xpnet.train.metrics); default: accuracy
        "monitor": (None, "str?"),  # best checkpoint and early stopping; default val_loss (loss without val)
    },
    "run": {
        "dir": (None, "str?"),
        "keep_last": (3, "int+"),
        # epochs between checkpoints (the last epoch is always saved); none: 1, unless save_every_steps is set
        "save_every": (None, "int+?"),
        "save_every_steps": (None, "int+?"),  # optimizer steps between (mid-epoch) checkpoints
        "tensorboard": (False, "bool"),  # TensorBoard event files in RUN_DIR/tensorboard (needs tensorboardX)
    },
}


def defaults() -> dict:
    return {section: {k: copy.deepcopy(v[0]) for k, v in keys.items()} for section, keys in SCHEMA.items()}


def _describe(accepted) -> str:
    if isinstance(accepted, tuple):
        optional = " (or leave it out)" if accepted[0].endswith("?") else ""
        return "one of " + ", ".join(map(repr, accepted[1])) + optional
    return {
        "int+": "an integer >= 1", "int+?": "an integer >= 1 (or leave it out)",
        "int0": "an integer >= 0", "float+": "a number > 0", "float0": "a number >= 0",
        "float0?": "a number >= 0 (or leave it out)", "float+?": "a number > 0 (or leave it out)",
        "fraction": "a number in [0, 1)", "fraction+": "a number in (0, 1)", "bool": "true or false",
        "str": "a string",
        "str?": "a string (or leave it out)",
        "sizes": "a list of positive integers, e.g. [256, 256]", "device": "'cpu', 'cuda' or 'cuda:N'",
        "names?": "a list of metric names, e.g. [\"f1_macro\", \"roc_auc_ovr\"] (or leave it out)",
        "rates": "a number in [0, 1), or a list of them (one per hidden layer)",
    }[accepted]


def _valid(value, accepted) -> bool:
    if isinstance(accepted, tuple):
        return (value is None and accepted[0].endswith("?")) or value in accepted[1]
    if value is None:
        return accepted.endswith("?")
    is_int = isinstance(value, int) and not isinstance(value, bool) and value < 2**63  # TOML integers are 64-bit
    is_num = (is_int or isinstance(value, float)) and math.isfinite(value)
    kind = accepted.rstrip("?")
    return {
        "int+": is_int and value >= 1, "int0": is_int and value >= 0,
        "float+": is_num and value > 0, "float0": is_num and value >= 0,
        "fraction": is_num and 0 <= value < 1, "fraction+": is_num and 0 < value < 1,
        "bool": isinstance(value, bool), "str": isinstance(value, str),
        "rates": all(_is_fraction(v) for v in (value if isinstance(value, list) else [value])),
        "device": isinstance(value, str) and re.fullmatch(r"cpu|cuda(:\d+)?", value) is not None,
        "sizes": isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                                 for v in value),
        "names": isinstance(value, list) and all(isinstance(v, str) for v in value),
    }[kind]


def _is_fraction(value) -> bool:
    """A number in [0, 1) (not bool): one dropout rate."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and 0 <= value < 1


def validate(config: dict, origin: str = "config") -> dict:
    """Check every section and key; return the config unchanged if it is valid."""
    for section, keys in config.items():
        if section not in SCHEMA:
            raise ValueError(f"{origin}: unknown section [{section}]; allowed sections: {', '.join(SCHEMA)}.")
        if not isinstance(keys, dict):
            raise ValueError(f"{origin}: [{section}] must be a table of keys.")
        for key, value in keys.items():
            if key not in SCHEMA[section]:
                raise ValueError(f"{origin}: unknown key {section}.{key}; allowed keys in [{section}]: "
                                 f"{', '.join(SCHEMA[section])}.")
            accepted = SCHEMA[section][key][1]
            if not _valid(value, accepted):
                raise ValueError(f"{origin}: {section}.{key} = {value!r} is invalid: use {_describe(accepted)}.")
    data = config.get("data", {})
    uses = {"npz": ["path"], "csv": ["path", "target"], "npy": ["x_path", "y_path"]}
    needs = uses.get(data.get("source"), [])
    for key in needs:
        if not data.get(key):
            raise ValueError(f"{origin}: data.source = {data['source']!r} needs data.{key}.")
    if data.get("source") in uses:  # digits / synthetic: see _infer_source
        for key in ("path", "x_path", "y_path", "target"):
            if data.get(key) and key not in needs:
                raise ValueError(f"{origin}: data.{key} is given but data.source = {data['source']!r} does not use "
                                 f"it (it reads {', '.join('data.' + k for k in needs)}): remove it.")
    if data.get("test_fraction", 0) + data.get("val_fraction", 0) >= 1:
        raise ValueError(f"{origin}: data.test_fraction + data.val_fraction must be below 1.")
    train = config.get("train", {})
    if train.get("warmup_epochs", 0) and train.get("warmup_epochs", 0) >= train.get("epochs", math.inf):
        raise ValueError(f"{origin}: train.warmup_epochs = {train['warmup_epochs']} leaves no epoch after the "
                         f"warm-up of train.epochs = {train['epochs']}: use fewer warm-up epochs.")
    _check_schedule(train, origin)
    _check_metrics(train, data, origin)
    if train.get("momentum") is not None and train.get("optimizer") not in (None, "sgd", "rmsprop"):
        raise ValueError(f"{origin}: train.momentum applies to sgd and rmsprop, not {train['optimizer']!r}: "
                         "leave it out or choose one of those optimizers.")
    return config


def schedule_interval(train: dict) -> str:
    """How often ``train.schedule`` sets the lr: ``train.schedule_interval``, or the schedule's own
    (per optimizer step for onecycle, per epoch for the others)."""
    return train.get("schedule_interval") or SCHEDULE_INTERVALS[train.get("schedule", "cosine")][0]


def _check_schedule(train: dict, origin: str) -> None:
    """The schedule keys fit together (a key given alone, e.g. in a file that flags complete, is
    checked once the schedule is known)."""
    schedule, interval = train.get("schedule"), train.get("schedule_interval")
    warm = [k for k in ("warmup_epochs", "warmup_steps") if train.get(k)]
    if len(warm) == 2:
        raise ValueError(f"{origin}: train.warmup_epochs and train.warmup_steps are both set: give one (warmup_steps "
                         "counts optimizer steps, warmup_epochs epochs) and leave the other at 0.")
    if schedule is None:
        return
    if interval is not None and interval not in SCHEDULE_INTERVALS[schedule]:
        why = {"onecycle": "it always sets the lr after every optimizer step",
               "plateau": "it acts once per epoch, on the monitored value"}.get(schedule, "it decays per epoch")
        other = "" if schedule == "onecycle" else " (a schedule per step: cosine, or constant with a warm-up)"
        raise ValueError(f"{origin}: train.schedule = {schedule!r} with train.schedule_interval = {interval!r}: "
                         f"{why}; remove train.schedule_interval{other}.")
    if warm and schedule in ("onecycle", "plateau"):
        why = ("has its own warm-up (the lr rises over the first 30% of the steps)" if schedule == "onecycle"
               else "cannot follow a warm-up")
        raise ValueError(f"{origin}: train.schedule = {schedule!r} {why}: remove train.{warm[0]} (or use "
                         "schedule cosine or constant with a warm-up).")
    if train.get("warmup_steps") and schedule_interval(train) != "step":
        raise ValueError(f"{origin}: train.warmup_steps counts optimizer steps, so the schedule must step per "
                         "optimizer step: set train.schedule_interval = \"step\" (--schedule-interval step) with "
                         "schedule cosine or constant, or warm up with train.warmup_epochs.")
    for key in ("plateau_factor", "plateau_patience"):
        if schedule != "plateau" and train.get(key, SCHEMA["train"][key][0]) != SCHEMA["train"][key][0]:
            raise ValueError(f"{origin}: train.{key} is set but train.schedule = {schedule!r} does not use it: "
                             "remove it, or set train.schedule = \"plateau\".")


def _check_metrics(train: dict, data: dict, origin: str) -> None:
    """train.metrics are known names; train.monitor is a loss or one of them, ``val_`` only with
    validation data (whether a metric fits the problem is checked when the data is known)."""
    from ..train.metrics import REGISTRY

    names = train.get("metrics") or []
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ValueError(f"{origin}: train.metrics names {unknown[0]!r}, which is unknown: use any of "
                         f"{', '.join(REGISTRY)}.")
    monitor = train.get("monitor")
    if monitor is None:
        return
    base = monitor[4:] if monitor.startswith("val_") else monitor
    reported = ["loss", *(names if train.get("metrics") is not None else ["accuracy"])]
    if base not in reported:
        raise ValueError(f"{origin}: train.monitor = {monitor!r} is not reported: use loss, val_loss or one of "
                         f"train.metrics ({', '.join(reported[1:]) or 'none'}), with val_ for validation data.")
    if monitor.startswith("val_") and not data.get("val_fraction"):
        raise ValueError(f"{origin}: train.monitor = {monitor!r} needs validation data: set data.val_fraction "
                         f"(--val-fraction) or monitor {base!r}.")


def load(path: str | Path | None = None, overrides: dict | None = None) -> dict:
    """Defaults, updated by the TOML file at ``path``, updated by ``overrides`` (flags win)."""
    config, loaded = defaults(), {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"config file {path} {'is a directory' if path.is_dir() else 'does not exist'}: "
                             "give the path of a TOML file.")
        try:
            loaded = tomllib.loads(path.read_text(encoding="utf-8-sig"))  # a BOM (Notepad) is fine
        except UnicodeDecodeError as exc:
            raise ValueError(f"config file {path} is not UTF-8 text ({exc.reason} at byte {exc.start}): "
                             "save it as UTF-8 TOML.") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"config file {path} is not valid TOML: {exc}") from exc
        validate(loaded, origin=str(path))
        _absolute_paths(loaded.get("data", {}), relative_to=path.resolve().parent)
        for section, keys in loaded.items():
            config[section].update(keys)
    for dotted, value in (overrides or {}).items():
        section, key = dotted.split(".")
        config[section][key] = value
        loaded.setdefault(section, {})[key] = value
    _absolute_paths(config["data"], relative_to=Path.cwd())
    _infer_source(config["data"], explicit="source" in loaded.get("data", {}))
    return validate(config)


DATA_PATHS = ("path", "x_path", "y_path")


def _absolute_paths(data: dict, relative_to: Path) -> None:
    """Data paths made absolute: relative ones in a TOML file are relative to that file's folder,
    on the command line to the current directory.  The run's ``config.toml`` then names the same
    files wherever ``--resume`` is started from."""
    for key in DATA_PATHS:
        if isinstance(data.get(key), str) and data[key].strip():
            data[key] = str((relative_to / Path(data[key]).expanduser()).resolve())


SOURCE_BY_SUFFIX = {".csv": "csv", ".npz": "npz"}


def _infer_source(data: dict, explicit: bool) -> None:
    """A data path without a source names its kind by its extension (``.csv``, ``.npz``; an
    ``x_path``/``y_path`` pair is ``npy``); a source that ignores the given path is refused."""
    paths = [k for k in ("path", "x_path", "y_path") if data.get(k)]
    if not paths or data["source"] not in ("digits", "synthetic"):
        return
    if explicit:
        raise ValueError(f"config: data.source = {data['source']!r} ignores data.{paths[0]} = "
                         f"{data[paths[0]]!r}: remove the path, or set data.source (--data) to csv, npz or npy.")
    if data.get("path"):
        suffix = Path(data["path"]).suffix.lower()
        if suffix not in SOURCE_BY_SUFFIX:
            raise ValueError(f"config: cannot tell the kind of data.path = {data['path']!r} from its extension: "
                             "set data.source (--data) to csv or npz.")
        data["source"] = SOURCE_BY_SUFFIX[suffix]
    else:
        data["source"] = "npy"


def dump_toml(config: dict) -> str:
    """The configuration as TOML (keys that are None are left out, as TOML has no null)."""
    lines = []
    for section, keys in config.items():
        lines.append(f"[{section}]")
        for key, value in keys.items():
            if value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
