"""What each ``xpnet`` subcommand does; errors propagate to :func:`xpnet.cli.main`, which reports them."""

from __future__ import annotations

import sys
import time
import warnings

from .exit_codes import EXIT_DIVERGED, EXIT_INTERRUPTED


def cmd_train(args) -> int:
    from pathlib import Path

    from . import config as config_mod
    from . import distrun, runs
    from .rundir import RunDir

    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg:") and v is not None}
    resume = args.resume is not None  # --resume "" is an empty name, not "no resume"
    for flag, value in (("--resume", args.resume), ("--run-dir", args.run_dir), ("--config", args.config)):
        if value is not None and not value.strip():
            raise ValueError(f"{flag} is empty: give a path (is a shell variable unset?).")
    if args.accept_config_changes and not resume:
        raise ValueError("--accept-config-changes goes with --resume only.")
    distrun.silence_followers()  # under mpiexec / srun: rank 0 prints, the other ranks stay quiet
    if resume:
        run_dir = Path(args.resume)
        extend_to = overrides.pop("train.epochs", None)  # --resume RUN --epochs N extends the run to N epochs
        if overrides or args.config or args.overwrite or args.run_dir:
            raise ValueError("--resume continues a run exactly as configured: give no --config or other flags "
                             "but --epochs N (to extend it) (edit RUN_DIR/config.toml and add "
                             "--accept-config-changes to change it).")
        # not a run directory, or in use: say so before loading anything (distributed: rank 0 checks)
        distrun.on_root(lambda: RunDir.resume(run_dir).close())
        config = config_mod.load(run_dir / runs.RUN_MARKER)
        if extend_to is not None:
            config["train"]["epochs"] = extend_to
    else:
        extend_to = None
        config = config_mod.load(args.config, overrides)
        run_dir = Path(args.run_dir or config["run"]["dir"] or runs.default_run_dir(name=config["data"]["source"]))
        distrun.on_root(lambda: RunDir.check_start(run_dir, args.overwrite))  # refused before any data is loaded
    print(_summary(run_dir, config))
    start = time.perf_counter()
    with warnings.catch_warnings():  # the divergence message is printed below, once
        warnings.filterwarnings("ignore", message="training diverged", category=RuntimeWarning)
        result = runs.train(config, run_dir, resume=resume, verbose=_verbosity(args.quiet),
                            overwrite=args.overwrite, accept_config_changes=args.accept_config_changes,
                            extend_to=extend_to)
    if result["status"] == "interrupted":
        print(f"xpnet train: {result['stop_reason']}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if result["stop_reason"]:
        print(result["stop_reason"], file=sys.stderr if result["status"] == "diverged" else sys.stdout)
    print(f"trained {result['epochs_run']} epochs in {time.perf_counter() - start:.1f} s; "
          f"kernels={result['trainer'].ops.name}; files in {run_dir}")
    final = result.get("test", result["train"])
    name = "test" if "test" in result else "train"
    if len(final) > 1:  # the loss and the run's metrics
        print("  ".join(f"{name} {key} {value:.4f}" for key, value in final.items()))
    else:
        print(f"{name} loss {final['loss']:.6g}")
    if result["status"] == "diverged":
        print("xpnet train: the run diverged (result.json says so); see the message above.", file=sys.stderr)
        return EXIT_DIVERGED
    return 0


def _summary(run_dir, config: dict) -> str:
    """The run's one-line summary: data, model, optimizer and schedule, epochs, device."""
    m, t = config["model"], config["train"]
    line = (f"run {run_dir}: data {config['data']['source']}, hidden {m['hidden']} {m['activation']}, "
            f"{t['optimizer']} lr={t['lr']} {_schedule_text(config)}, {t['epochs']} epochs x batch "
            f"{t['batch_size']}, {m['device']} {m['dtype']}")
    return line + (f"; TensorBoard logs in {run_dir}/tensorboard" if config["run"]["tensorboard"] else "")


def _schedule_text(config: dict) -> str:
    """E.g. ``cosine``, ``cosine per step after 500 warm-up steps``, ``plateau (x0.1 when val_loss has
    not improved for more than 10 epochs)``, ``onecycle per step``."""
    from .config import schedule_interval
    from .runs import monitor_of

    t = config["train"]
    text = t["schedule"] + (" per step" if schedule_interval(t) == "step" else "")
    if t["schedule"] == "plateau":
        text += (f" (x{t['plateau_factor']} when {monitor_of(config)} has not improved for more than "
                 f"{t['plateau_patience']} epochs)")
    if t["warmup_steps"] or t["warmup_epochs"]:
        text += (f" after {t['warmup_steps']} warm-up steps" if t["warmup_steps"]
                 else f" after {t['warmup_epochs']} warm-up epochs")
    return text


def _verbosity(quiet: bool) -> int:
    """fit's verbose: a progress bar on a terminal, one line per epoch (verbose=2) into a log file or pipe."""
    return 0 if quiet else (1 if sys.stdout.isatty() else 2)


def cmd_bench(args) -> int:
    from .. import bench

    if args.distributed:
        from . import distrun

        return distrun.bench(args)
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
    except Exception as exc:
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


def cmd_info(args) -> int:
    import importlib

    import numpy as np

    from ..kernels import default_kernels

    print(f"xpnet kernel mode: {default_kernels()}")
    for name in ("numpy", "array_api_compat", "numba", "cupy", "ml_dtypes", "torch", "array_api_strict"):
        try:
            mod = importlib.import_module(name)
            print(f"{name:18s} {getattr(mod, '__version__', '?')}")
        except Exception as exc:
            print(f"{name:18s} not available ({type(exc).__name__})")
    try:
        import cupy

        for i in range(cupy.cuda.runtime.getDeviceCount()):
            print(f"cuda:{i:<13d} {cupy.cuda.runtime.getDeviceProperties(i)['name'].decode()}")
    except Exception:
        print("cuda               no GPU available")
    try:
        from threadpoolctl import threadpool_info

        for pool in threadpool_info():
            print(f"blas               {pool.get('internal_api')} {pool.get('version')} "
                  f"core={pool.get('architecture')} threads={pool.get('num_threads')}")
    except ImportError:
        print(f"blas               (install threadpoolctl for details) numpy {np.__version__}")
    return 0
