"""The ``xpnet`` argument parser: ``train`` (one flag per config key), ``bench``, ``export``, ``info``."""

from __future__ import annotations

import argparse


def _sizes(text: str) -> list[int]:
    """``"256,128"`` -> ``[256, 128]``; ``""`` is no hidden layer (a linear model)."""
    if not text.strip():
        return []
    try:
        return [int(s) for s in text.split(",")]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 128,128, got {text!r}") from exc


def _names(text: str) -> list[str]:
    """``"f1_macro,roc_auc_ovr"`` -> ``["f1_macro", "roc_auc_ovr"]``; ``""`` is no metric."""
    return [s.strip() for s in text.split(",") if s.strip()]


TRAIN_FLAGS = [  # (flag, config key, type, help): each sets one config key
    ("--data", "data.source", str, "digits, synthetic, npz, npy or csv"),
    ("--data-path", "data.path", str, ".npz file (arrays X, y) or .csv file"),
    ("--x-path", "data.x_path", str, ".npy features"), ("--y-path", "data.y_path", str, ".npy targets"),
    ("--target", "data.target", str, "CSV target column"),
    ("--test-fraction", "data.test_fraction", float, None), ("--val-fraction", "data.val_fraction", float, None),
    ("--hidden", "model.hidden", _sizes, "hidden layer sizes, e.g. 256,256"),
    ("--activation", "model.activation", str, None), ("--init", "model.init", str, None),
    ("--dropout", "model.dropout", float, "dropout rate of the hidden layers in training, in [0, 1) (default 0)"),
    ("--dtype", "model.dtype", str, "float32 or float64"), ("--device", "model.device", str, "cpu, cuda, cuda:N"),
    ("--loss", "train.loss", str, "cross_entropy, mse, bce or auto (the default: cross_entropy for class "
                                  "labels, mse for continuous targets)"),
    ("--optimizer", "train.optimizer", str, "sgd, adagrad, rmsprop, adam, adamw"),
    ("--lr", "train.lr", float, None), ("--weight-decay", "train.weight_decay", float, None),
    ("--momentum", "train.momentum", float, None),
    ("--schedule", "train.schedule", str, "constant, cosine, step, exponential, plateau (ReduceLROnPlateau on "
                                          "--monitor) or onecycle (OneCycleLR up to --lr, per optimizer step)"),
    ("--schedule-interval", "train.schedule_interval", str, "epoch or step: how often cosine and the warm-up set "
                                                            "the lr (default: onecycle per step, the others per "
                                                            "epoch)"),
    ("--warmup-epochs", "train.warmup_epochs", int, "linear warm-up over N epochs before the schedule"),
    ("--warmup-steps", "train.warmup_steps", int, "linear warm-up over N optimizer steps (with "
                                                  "--schedule-interval step)"),
    ("--plateau-factor", "train.plateau_factor", float, "--schedule plateau: multiply the lr by this, in (0, 1) "
                                                        "(default 0.1)"),
    ("--plateau-patience", "train.plateau_patience", int, "--schedule plateau: ... after N epochs without "
                                                          "improvement of the monitor (default 10)"),
    ("--epochs", "train.epochs", int, None),
    ("--batch-size", "train.batch_size", int, None), ("--seed", "train.seed", int, None),
    ("--clip-grad-norm", "train.clip_grad_norm", float, None), ("--patience", "train.patience", int, None),
    ("--metrics", "train.metrics", _names, "comma-separated scikit-learn scorer names, e.g. f1_macro,roc_auc_ovr "
                                           "(default accuracy for classification); logged as NAME and val_NAME"),
    ("--monitor", "train.monitor", str, "what picks the best checkpoint and drives --early-stopping, e.g. "
                                        "val_f1_macro (default val_loss, or loss without validation data)"),
    ("--precision", "train.precision", str, "fp32, tf32, fp16 or bf16 (mixed precision)"),
    ("--keep-last", "run.keep_last", int, "checkpoints to keep (the best is kept too)"),
    ("--save-every", "run.save_every", int, "checkpoint every N epochs (default 1, or none when only "
                                            "--save-every-steps is given; the last epoch is always saved)"),
    ("--save-every-steps", "run.save_every_steps", int, "also checkpoint every N optimizer steps, mid-epoch "
                                                        "(exactly resumable)"),
]


class _OneLineParser(argparse.ArgumentParser):
    """argparse, with its errors in one line (and where to read more) instead of the usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="xpnet", description="Train multilayer perceptrons on any array-API backend.")
    sub = parser.add_subparsers(dest="command", parser_class=_OneLineParser)
    _add_train(sub)
    _add_bench(sub)
    e = sub.add_parser("export", help="write a run's model, taking RAW features, as a torch state dict (.pt) "
                                      "or an ONNX model (.onnx)")
    e.add_argument("source", help="a run directory, a checkpoint directory or a model.safetensors file")
    e.add_argument("--out", required=True, help="FILE.pt (torch.nn.Sequential state dict, needs torch) or "
                                                "FILE.onnx (opset 17, needs onnx); refused if it exists")
    e.add_argument("--checkpoint", default=None, help="best, last or a checkpoint path (default: the final weights)")
    e.add_argument("--probabilities", action="store_true",
                   help=".onnx: add a 'probabilities' output (softmax, or sigmoid for bce) beside 'logits'")
    p = sub.add_parser("predict", help="predict on raw data (CSV, .npz, .npy) with a trained run")
    p.add_argument("source", help="a run directory, a checkpoint directory or a model.safetensors file")
    p.add_argument("--data", default=None, help="CSV (header with the feature names; the target column may be "
                                                "present), .npz (X, optionally y) or .npy (features)")
    p.add_argument("--split", choices=["train", "val", "test"], default=None,
                   help="only the rows of this part of the run's recorded split (of --data, or by default of the "
                        "data the run was trained on)")
    p.add_argument("--out", default=None, help="CSV to write (refused if it exists; default: standard output)")
    p.add_argument("--checkpoint", default=None, help="best, last or a checkpoint path (default: the final weights)")
    p.add_argument("--target", default=None, help="CSV target column, if it differs from the run's")
    c = sub.add_parser("convert", help="convert a CSV to .npz or .npy (memory-mapped when training)")
    c.add_argument("data", help="the CSV file")
    c.add_argument("--target", required=True, help="the target column")
    c.add_argument("--out", required=True, help="FILE.npz (X, y, feature_names) or FILE.npy (X; y goes to "
                                                "FILE.y.npy); refused if it exists")
    c.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="of X (default float32)")
    sub.add_parser("info", help="backends, devices and kernel mode found on this machine")
    return parser


def _add_train(sub) -> None:
    t = sub.add_parser("train", help="train an MLP from a TOML config and/or flags (default: the bundled digits)",
                       description="Flags override the --config file, which overrides the defaults. Each run "
                                   "writes a run directory: config, history, curves, checkpoints.")
    t.add_argument("--config", help="TOML file with [data], [model], [train] and [run] tables")
    t.add_argument("--run-dir", help="where this run's files go (default runs/<data>-<timestamp>)")
    t.add_argument("--overwrite", action="store_true",
                   help="replace an existing xpnet run directory (swapped in only when the new run has completed "
                        "its first epoch; a folder holding other files is refused)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint; with "
                                                        "--epochs N, extend it (also a finished run) to N epochs")
    t.add_argument("--accept-config-changes", action="store_true",
                   help="with --resume: continue although RUN_DIR/config.toml was edited since the run started")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    for flag, key, typ, text in TRAIN_FLAGS:
        t.add_argument(flag, dest=f"cfg:{key}", type=typ, default=None, metavar=key.split(".")[1].upper(),
                       help=f"{text + '; ' if text else ''}config key {key}")
    t.add_argument("--early-stopping", dest="cfg:train.early_stopping", action="store_const", const=True,
                   default=None, help="stop when the monitored loss stops improving (restores the best weights)")
    t.add_argument("--tensorboard", dest="cfg:run.tensorboard", action="store_const", const=True, default=None,
                   help="write TensorBoard event files into RUN_DIR/tensorboard (needs tensorboardX: pip install "
                        "'xpnet[tensorboard]'); config key run.tensorboard")


def _add_bench(sub) -> None:
    b = sub.add_parser("bench", help="training-step throughput vs the GEMM floor and PyTorch")
    b.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    group = b.add_mutually_exclusive_group()
    group.add_argument("--preset", default=None, help="model preset: small, mnist, wide, large (default mnist)")
    group.add_argument("--sizes", type=_sizes, default=None, help="explicit layer sizes, e.g. 784,1024,10")
    b.add_argument("--batch-sizes", type=_sizes, default=None, help="e.g. 32,128,512 (default 32..8192 that fit)")
    b.add_argument("--impls", default="xpnet,reference,torch", help="comma-separated: xpnet, reference, torch")
    b.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    b.add_argument("--precision", choices=["fp32", "tf32", "fp16", "bf16"], default="fp32",
                   help="tf32 / fp16 / bf16 (mixed, vs PyTorch AMP / autocast) on the GPU")
    b.add_argument("--rounds", type=int, default=7,
                   help="interleaved timing rounds per point, at least 3 (median and IQR reported)")
    b.add_argument("--min-time", type=float, default=None, metavar="SECONDS",
                   help="calibrate steps so each round of each implementation lasts at least this long "
                        "(default 0.2)")
    b.add_argument("--steps", type=int, default=None,
                   help="fixed steps per round for every implementation (default: calibrated to --min-time)")
    b.add_argument("--out", default=None, help="folder for results.json, results.csv and PNG plots")
    b.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    b.add_argument("--check-against", default=None, metavar="BASELINE_JSON",
                   help="fail (exit 1) if a same-run ratio fell below this baseline by more than --tolerance")
    b.add_argument("--tolerance", type=float, default=0.2, help="allowed fall of a ratio, in [0, 1) (default 0.2)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.add_argument("--distributed", action="store_true",
                   help="under mpiexec: all-reduce time per step and scaling efficiency of data-parallel training")
