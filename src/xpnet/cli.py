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

    t = sub.add_parser("train", help="train an MLP on the bundled digits data and report test accuracy")
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--hidden", type=_sizes, default=[256, 256], help="hidden layer sizes, e.g. 256,256")
    t.add_argument("--activation", choices=list(ACTIVATIONS), default="relu")
    t.add_argument("--optimizer", choices=list(OPTIMIZERS), default="adamw")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--schedule", choices=["cosine", "constant"], default="cosine",
                   help="learning-rate schedule over the epochs")
    t.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    t.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    b = sub.add_parser("bench", help="training-step throughput vs the GEMM floor and PyTorch")
    b.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    group = b.add_mutually_exclusive_group()
    group.add_argument("--preset", default=None, help="model preset: small, mnist, wide, large (default mnist)")
    group.add_argument("--sizes", type=_sizes, default=None, help="explicit layer sizes, e.g. 784,1024,10")
    b.add_argument("--batch-sizes", type=_sizes, default=None, help="e.g. 32,128,512 (default 32..8192 that fit)")
    b.add_argument("--impls", default="xpnet,reference,torch", help="comma-separated: xpnet, reference, torch")
    b.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    b.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds per point (median reported)")
    b.add_argument("--steps", type=int, default=None, help="steps per round (default: about 50 ms per round)")
    b.add_argument("--out", default=None, help="folder for results.json, results.csv and PNG plots")
    b.add_argument("--check-against", default=None, metavar="BASELINE_JSON",
                   help="fail (exit 1) if a same-run ratio fell below this baseline by more than --tolerance")
    b.add_argument("--tolerance", type=float, default=0.2)
    b.add_argument("--quiet", action="store_true", help="no progress bar")

    sub.add_parser("info", help="backends, devices and kernel mode found on this machine")
    return parser


def cmd_train(args) -> int:
    from . import MLP, Trainer
    from .data import load_digits, standardize, train_test_split
    from .optim import CosineAnnealingLR, get_optimizer

    X, y = load_digits()
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_fraction=0.25, seed=args.seed)
    X_train, X_test = standardize(X_train, X_test)
    model = MLP([X.shape[1], *args.hidden, 10], activation=args.activation, dtype=args.dtype,
                seed=args.seed, device=args.device)
    optimizer = get_optimizer(args.optimizer, args.lr)
    scheduler = CosineAnnealingLR(optimizer, T_max=args.epochs) if args.schedule == "cosine" else None
    trainer = Trainer(model, loss="cross_entropy", optimizer=optimizer, scheduler=scheduler)
    print(f"digits: {X_train.shape[0]} train / {X_test.shape[0]} test samples; model {model.sizes} "
          f"{args.activation}, {args.optimizer} lr={args.lr}, {model.backend.name}, kernels={model.ops.name}")
    start = time.perf_counter()
    history = trainer.fit(X_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                          verbose=not args.quiet)
    seconds = time.perf_counter() - start
    result = trainer.evaluate(X_test, y_test)
    if history.stop_reason:
        print(history.stop_reason)
    print(f"trained {len(history.epoch)} epochs in {seconds:.1f} s")
    print(f"test loss {result['loss']:.4f}  test accuracy {result['accuracy']:.4f}")
    return 0


def cmd_bench(args) -> int:
    import json
    from pathlib import Path

    from . import bench

    impls = tuple(i.strip() for i in args.impls.split(",") if i.strip())
    unknown = set(impls) - set(bench.IMPLEMENTATIONS)
    if unknown:
        raise SystemExit(f"--impls: unknown {sorted(unknown)}; use any of {', '.join(bench.IMPLEMENTATIONS)}")
    baseline = None
    if args.check_against:  # read it first: a missing baseline fails before minutes of timing
        path = Path(args.check_against)
        if not path.is_file():
            raise SystemExit(f"--check-against: {path} does not exist; create one with xpnet bench --out DIR "
                             "and commit DIR/results.json")
        baseline = json.loads(path.read_text())
    result = bench.run(device=args.device, sizes=args.sizes, preset=args.preset or "mnist",
                       batch_sizes=args.batch_sizes or bench.DEFAULT_BATCH_SIZES, impls=impls, dtype=args.dtype,
                       rounds=args.rounds, steps=args.steps, out=args.out, progress=not args.quiet)
    print(bench.table(result))
    if result["skipped_batch_sizes"]:
        print(f"skipped (would not fit in memory): batch sizes {result['skipped_batch_sizes']}")
    if args.out:
        print(f"results written to {args.out}/results.json, results.csv and PNG plots (with matplotlib)")
    if baseline is not None:
        problems = bench.check_against(result, baseline, args.tolerance)
        for line in problems:
            print(f"REGRESSION {line}")
        print(f"regression gate: {len(problems)} ratio(s) below baseline - {args.tolerance:.0%}")
        return 1 if problems else 0
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
    return {"train": cmd_train, "bench": cmd_bench, "info": cmd_info}[args.command](args)
