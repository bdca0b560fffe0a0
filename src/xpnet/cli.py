"""Command line: ``xpnet train`` (digits by default), ``xpnet info``."""

from __future__ import annotations

import argparse
import sys
import time


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
    t.add_argument("--overwrite", action="store_true", help="replace an existing --run-dir")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
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

    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg:") and v is not None}
    try:
        if args.resume:
            run_dir = Path(args.resume)
            if not (run_dir / runs.RUN_MARKER).is_file():
                raise ValueError(f"--resume {run_dir}: no {runs.RUN_MARKER} there, so it is not an xpnet run directory.")
            if overrides or args.config:
                raise ValueError("--resume continues a run exactly as configured: give no --config or other flags.")
            config = config_mod.load(run_dir / runs.RUN_MARKER)
        else:
            config = config_mod.load(args.config, overrides)
            run_dir = Path(args.run_dir or config["run"]["dir"] or runs.default_run_dir(name=config["data"]["source"]))
            if run_dir.is_dir() and any(run_dir.iterdir()) and not args.overwrite:
                runs.prepare_run_dir(run_dir)  # raises the "already holds files" error before any work
    except ValueError as exc:
        print(f"xpnet train: {exc}", file=sys.stderr)
        return 2
    m, t = config["model"], config["train"]
    print(f"run {run_dir}: data {config['data']['source']}, hidden {m['hidden']} {m['activation']}, "
          f"{t['optimizer']} lr={t['lr']} {t['schedule']}, {t['epochs']} epochs x batch {t['batch_size']}, "
          f"{m['device']} {m['dtype']}")
    start = time.perf_counter()
    try:
        result = runs.train(config, run_dir, resume=bool(args.resume), verbose=not args.quiet,
                            overwrite=args.overwrite)
    except ValueError as exc:
        print(f"xpnet train: {exc}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    if result["stop_reason"]:
        print(result["stop_reason"])
    print(f"trained {result['epochs_run']} epochs in {seconds:.1f} s; kernels={result['trainer'].ops.name}; "
          f"files in {run_dir}")
    final = result.get("test", result["train"])
    name = "test" if "test" in result else "train"
    if "accuracy" in final:
        print(f"{name} loss {final['loss']:.4f}  {name} accuracy {final['accuracy']:.4f}")
    else:
        print(f"{name} loss {final['loss']:.6g}")
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
    from pathlib import Path

    from .checkpoint import load_model, to_torch_state_dict

    out = Path(args.out)
    if out.exists():
        print(f"xpnet export: {out} exists; nothing was written. Choose another --out.", file=sys.stderr)
        return 2
    try:
        import torch
    except ImportError:
        print("xpnet export: needs PyTorch (pip install torch).", file=sys.stderr)
        return 2
    try:
        model = load_model(args.source)
    except ValueError as exc:
        print(f"xpnet export: {exc}", file=sys.stderr)
        return 2
    torch.save(to_torch_state_dict(model), out)
    layers = ", ".join(f"Linear({a}, {b})" for a, b in zip(model.sizes[:-1], model.sizes[1:]))
    print(f"wrote {out}: nn.Sequential state dict of {layers} with {model.activation.name} between them")
    return 0


def cmd_info(args) -> int:
    import importlib

    import numpy as np

    from .kernels import get_kernel_mode

    print(f"xpnet kernel mode: {get_kernel_mode()}")
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


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command is None:
        parser.print_help()
        return 0
    return {"train": cmd_train, "bench": cmd_bench, "export": cmd_export, "info": cmd_info}[args.command](args)
