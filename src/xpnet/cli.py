"""Command line: ``xpnet train`` (digits by default), ``xpnet info``."""

from __future__ import annotations

import argparse
import sys
import time
import warnings


def _sizes(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 128,128, got {text!r}") from exc


def build_parser() -> argparse.ArgumentParser:
    from .activations import ACTIVATIONS
    from .optim import OPTIMIZERS

    parser = argparse.ArgumentParser(prog="xpnet", description="Train multilayer perceptrons on any array-API backend.")
    sub = parser.add_subparsers(dest="command")

    t = sub.add_parser("train", help="train an MLP from a TOML config and/or flags (default: the bundled digits)",
                       description="Flags override the --config file, which overrides the defaults. Each run "
                                   "writes a run directory: config, history, curves, checkpoints.")
    t.add_argument("--config", help="TOML file with [data], [model], [train] and [run] tables")
    t.add_argument("--run-dir", help="where this run's files go (default runs/<data>-<timestamp>)")
    t.add_argument("--overwrite", action="store_true", help="replace an existing xpnet run directory (swapped in only when the new run "
                   "has completed its first epoch; a folder holding other files is refused)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    t.add_argument("--accept-config-changes", action="store_true",
                   help="with --resume: continue although RUN_DIR/config.toml was edited since the run started")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    flags = [  # (flag, config key, type, help)
        ("--data", "data.source", str, "digits, synthetic, npz, npy or csv"),
        ("--data-path", "data.path", str, ".npz file (arrays X, y) or .csv file"),
        ("--x-path", "data.x_path", str, ".npy features"), ("--y-path", "data.y_path", str, ".npy targets"),
        ("--target", "data.target", str, "CSV target column"),
        ("--test-fraction", "data.test_fraction", float, None), ("--val-fraction", "data.val_fraction", float, None),
        ("--hidden", "model.hidden", _sizes, "hidden layer sizes, e.g. 256,256"),
        ("--activation", "model.activation", str, None), ("--init", "model.init", str, None),
        ("--dtype", "model.dtype", str, "float32 or float64"), ("--device", "model.device", str, "cpu, cuda, cuda:N"),
        ("--loss", "train.loss", str, "cross_entropy, mse or bce"),
        ("--optimizer", "train.optimizer", str, "sgd, adagrad, rmsprop, adam, adamw"),
        ("--lr", "train.lr", float, None), ("--weight-decay", "train.weight_decay", float, None),
        ("--momentum", "train.momentum", float, None),
        ("--schedule", "train.schedule", str, "constant, cosine, step or exponential"),
        ("--warmup-epochs", "train.warmup_epochs", int, None), ("--epochs", "train.epochs", int, None),
        ("--batch-size", "train.batch_size", int, None), ("--seed", "train.seed", int, None),
        ("--clip-grad-norm", "train.clip_grad_norm", float, None), ("--patience", "train.patience", int, None),
        ("--precision", "train.precision", str, "fp32, tf32 or fp16 (mixed precision)"),
        ("--keep-last", "run.keep_last", int, "checkpoints to keep (the best is kept too)"),
    ]
    for flag, key, typ, text in flags:
        t.add_argument(flag, dest=f"cfg:{key}", type=typ, default=None, metavar=key.split(".")[1].upper(),
                       help=f"{text + '; ' if text else ''}config key {key}")
    t.add_argument("--early-stopping", dest="cfg:train.early_stopping", action="store_const", const=True,
                   default=None, help="stop when the monitored loss stops improving (restores the best weights)")

    b = sub.add_parser("bench", help="training-step throughput vs the GEMM floor and PyTorch")
    b.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    group = b.add_mutually_exclusive_group()
    group.add_argument("--preset", default=None, help="model preset: small, mnist, wide, large (default mnist)")
    group.add_argument("--sizes", type=_sizes, default=None, help="explicit layer sizes, e.g. 784,1024,10")
    b.add_argument("--batch-sizes", type=_sizes, default=None, help="e.g. 32,128,512 (default 32..8192 that fit)")
    b.add_argument("--impls", default="xpnet,reference,torch", help="comma-separated: xpnet, reference, torch")
    b.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    b.add_argument("--precision", choices=["fp32", "tf32", "fp16"], default="fp32",
                   help="tf32 / fp16 (mixed, vs PyTorch AMP) on the GPU")
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

    e = sub.add_parser("export", help="write a run's weights as a torch.nn.Sequential state dict (needs torch)")
    e.add_argument("source", help="a run directory, a checkpoint directory or a model.safetensors file")
    e.add_argument("--out", required=True, help="the .pt file to write (refused if it exists)")

    sub.add_parser("info", help="backends, devices and kernel mode found on this machine")
    return parser


def cmd_train(args) -> int:
    from pathlib import Path

    from . import config as config_mod
    from . import runs
    from .rundir import RunDir

    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg:") and v is not None}
    if args.accept_config_changes and not args.resume:
        raise ValueError("--accept-config-changes goes with --resume only.")
    if args.resume:
        run_dir = Path(args.resume)
        if overrides or args.config or args.overwrite or args.run_dir:
            raise ValueError("--resume continues a run exactly as configured: give no --config or other flags "
                             "(edit RUN_DIR/config.toml and add --accept-config-changes to change it).")
        RunDir.resume(run_dir).close()  # not a run directory, or in use: say so before loading anything
        config = config_mod.load(run_dir / runs.RUN_MARKER)
    else:
        config = config_mod.load(args.config, overrides)
        run_dir = Path(args.run_dir or config["run"]["dir"] or runs.default_run_dir(name=config["data"]["source"]))
        RunDir.check_start(run_dir, args.overwrite)  # refused before any data is loaded
    m, t = config["model"], config["train"]
    print(f"run {run_dir}: data {config['data']['source']}, hidden {m['hidden']} {m['activation']}, "
          f"{t['optimizer']} lr={t['lr']} {t['schedule']}, {t['epochs']} epochs x batch {t['batch_size']}, "
          f"{m['device']} {m['dtype']}")
    start = time.perf_counter()
    with warnings.catch_warnings():  # the divergence message is printed below, once
        warnings.filterwarnings("ignore", message="training diverged", category=RuntimeWarning)
        result = runs.train(config, run_dir, resume=bool(args.resume), verbose=not args.quiet,
                            overwrite=args.overwrite, accept_config_changes=args.accept_config_changes)
    if result["status"] == "interrupted":
        print(f"xpnet train: {result['stop_reason']}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if result["stop_reason"]:
        print(result["stop_reason"], file=sys.stderr if result["status"] == "diverged" else sys.stdout)
    print(f"trained {result['epochs_run']} epochs in {time.perf_counter() - start:.1f} s; "
          f"kernels={result['trainer'].ops.name}; files in {run_dir}")
    final = result.get("test", result["train"])
    name = "test" if "test" in result else "train"
    if "accuracy" in final:
        print(f"{name} loss {final['loss']:.4f}  {name} accuracy {final['accuracy']:.4f}")
    else:
        print(f"{name} loss {final['loss']:.6g}")
    if result["status"] == "diverged":
        print("xpnet train: the run diverged (result.json says so); see the message above.", file=sys.stderr)
        return EXIT_DIVERGED
    return 0


def cmd_bench(args) -> int:
    from . import bench

    if args.steps is not None and args.min_time is not None:
        print("xpnet bench: give --steps (fixed steps per round) or --min-time (calibrated), not both.",
              file=sys.stderr)
        return 2
    try:  # every argument, --out and the baseline are checked inside run, before any timing
        result = bench.run(device=args.device, sizes=args.sizes, preset=args.preset or "mnist",
                           batch_sizes=bench.DEFAULT_BATCH_SIZES if args.batch_sizes is None else args.batch_sizes,
                           impls=args.impls, dtype=args.dtype, rounds=args.rounds, steps=args.steps, out=args.out,
                           progress=not args.quiet, precision=args.precision,
                           min_time=bench.DEFAULT_MIN_TIME if args.min_time is None else args.min_time,
                           overwrite=args.overwrite, check_against=args.check_against, tolerance=args.tolerance)
    except (ValueError, RuntimeError, OSError, MemoryError) as exc:
        print(f"xpnet bench: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback; the type says where to look
        print(f"xpnet bench: unexpected {type(exc).__name__}: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(bench.table(result))
    if result["skipped_batch_sizes"]:
        print(f"skipped (would not fit in memory): batch sizes {result['skipped_batch_sizes']}")
    if args.out:
        print(f"results written to {args.out}/results.json, results.csv and PNG plots (with matplotlib)")
    verdict = result.get("gate")
    if verdict is None:
        return 0
    for line in verdict["problems"]:
        print(f"REGRESSION {line}")
    for line in verdict["noisy"]:
        print(f"NOISY {line}")
    print(f"regression gate: {verdict['compared']} point(s) compared, {len(verdict['problems'])} problem(s) "
          f"(ratios below baseline - {args.tolerance:.0%}), {len(verdict['noisy'])} noisy point(s)")
    return 1 if verdict["problems"] else 0


def cmd_export(args) -> int:
    import os
    from pathlib import Path

    from .checkpoint import load_model, to_torch_state_dict

    out = Path(args.out)
    if out.exists():
        raise ValueError(f"{out} exists; nothing was written. Choose another --out.")
    if not out.parent.is_dir():
        raise ValueError(f"--out {out}: its folder {out.parent} does not exist; create it first.")
    try:
        import torch
    except ImportError:
        raise ValueError("export needs PyTorch: pip install torch.") from None
    model = load_model(args.source)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:  # written beside the target and renamed: a failure never leaves a partial file at --out
        torch.save(to_torch_state_dict(model), tmp)
        if out.exists():
            raise ValueError(f"{out} appeared while exporting; nothing was overwritten.")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    layers = ", ".join(f"Linear({a}, {b})" for a, b in zip(model.sizes[:-1], model.sizes[1:]))
    print(f"wrote {out}: nn.Sequential state dict of {layers} with {model.activation.name} between them")
    return 0


def cmd_info(args) -> int:
    import importlib

    import numpy as np

    from .kernels import default_kernels

    print(f"xpnet kernel mode: {default_kernels()}")
    for name in ("numpy", "array_api_compat", "numba", "cupy", "torch", "array_api_strict"):
        try:
            mod = importlib.import_module(name)
            print(f"{name:18s} {getattr(mod, '__version__', '?')}")
        except Exception as exc:  # noqa: BLE001 - report, don't fail
            print(f"{name:18s} not available ({type(exc).__name__})")
    try:
        import cupy

        for i in range(cupy.cuda.runtime.getDeviceCount()):
            print(f"cuda:{i:<13d} {cupy.cuda.runtime.getDeviceProperties(i)['name'].decode()}")
    except Exception:  # noqa: BLE001
        print("cuda               no GPU available")
    try:
        from threadpoolctl import threadpool_info

        for pool in threadpool_info():
            print(f"blas               {pool.get('internal_api')} {pool.get('version')} "
                  f"core={pool.get('architecture')} threads={pool.get('num_threads')}")
    except ImportError:
        print(f"blas               (install threadpoolctl for details) numpy {np.__version__}")
    return 0


# Exit codes: 0 success, 1 a failure while working (disk full, out of memory, a regression gate),
# 2 bad usage or input (nothing was changed), 3 a training run diverged, 130 interrupted.
EXIT_FAILED, EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 1, 2, 3, 130


def main(argv=None) -> int:
    """The ``xpnet`` command; every error ends in one line on stderr and a non-zero exit code
    (``XPNET_TRACEBACK=1`` shows the traceback of unexpected ones)."""
    import os

    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        parser.print_help()
        return 0
    command = {"train": cmd_train, "bench": cmd_bench, "export": cmd_export, "info": cmd_info}[args.command]
    where = f"xpnet {args.command}"
    try:
        return command(args)
    except KeyboardInterrupt:
        print(f"{where}: interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, TypeError) as exc:  # bad input: refused before anything changed
        print(f"{where}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError:
        print(f"{where}: out of memory; use a smaller model, batch size or data set.", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"{where}: {_describe_os_error(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - a bug or an environment problem: one line, not a traceback
        if os.environ.get("XPNET_TRACEBACK"):
            raise
        print(f"{where}: {type(exc).__name__}: {exc} (set XPNET_TRACEBACK=1 to see where)", file=sys.stderr)
        return EXIT_FAILED


def _describe_os_error(exc: OSError) -> str:
    import errno

    name = f" {exc.filename}" if exc.filename else ""
    if exc.errno == errno.ENOSPC:
        return (f"no space left on the device to write{name}; nothing half-written was kept. Free some space, "
                "then resume the run with xpnet train --resume RUN_DIR (or start it again).")
    return f"cannot access{name}: {exc.strerror or exc}"
