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
    return {"train": cmd_train, "info": cmd_info}[args.command](args)
