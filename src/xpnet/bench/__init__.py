"""``xpnet bench``: training-step throughput with yardsticks (harness, report, gate).

For every point (device x model x batch size) it times, interleaved in the same process:

* ``floor``     -- the step's matrix products alone (forward ``x @ W``, ``dW = x^T @ g``,
                   ``dX = g @ W^T``; no ``dX`` for the first layer): the GEMM floor;
* ``xpnet``     -- a full xpnet training step (fused kernels), Adam, softmax cross-entropy;
* ``reference`` -- the same step on the reference (array-API) kernels;
* ``torch``     -- the same model and optimizer in PyTorch eager, when torch is installed.

Each implementation is warmed up first (compilation, caches, memory pools), then timed in
``rounds`` interleaved rounds (CUDA events on the GPU).  Unless ``steps`` is given, each
implementation's steps per round are calibrated so that one round lasts at least ``min_time``
seconds: a handful of steps is too short to time on a shared machine.  A round's time per step
is its total divided by its steps; the reported value is the median over rounds, with the
inter-quartile range (IQR).  A point whose relative IQR (IQR / median) exceeds
:data:`NOISY_RELATIVE_IQR` for some implementation is flagged ``noisy``.  Ratios -- efficiency =
floor / step, speed-up over torch = torch / xpnet -- come from the same run, so they survive
noisy shared machines; the regression gate (:func:`check_against`) compares only such ratios.

Every argument, the output folder and the baseline are checked by :func:`check_arguments`
before anything is timed, so a bad value never costs a timing run."""

from .checks import Plan, check_arguments, check_out, load_baseline
from .defaults import (
                       DEFAULT_BATCH_SIZES,
                       DEFAULT_MIN_TIME,
                       DTYPES,
                       GATED_RATIOS,
                       IMPLEMENTATIONS,
                       MAX_STEPS_PER_ROUND,
                       MIN_ROUNDS,
                       NOISY_RELATIVE_IQR,
                       OUTPUT_FILES,
                       PRECISIONS,
                       PRESETS,
)
from .gate import check_against, gate
from .harness import Point, Timer, calibrate_steps, measure, n_params, run, spread
from .report import COLUMNS, NOISY_MARK, environment, error_bars, plot, table, write_results

__all__ = [
    "COLUMNS", "DEFAULT_BATCH_SIZES", "DEFAULT_MIN_TIME", "DTYPES", "GATED_RATIOS", "IMPLEMENTATIONS",
    "MAX_STEPS_PER_ROUND", "MIN_ROUNDS", "NOISY_MARK", "NOISY_RELATIVE_IQR", "OUTPUT_FILES", "PRECISIONS",
    "PRESETS", "Plan", "Point", "Timer", "calibrate_steps", "check_against", "check_arguments", "check_out",
    "environment", "error_bars", "gate", "load_baseline", "measure", "n_params", "plot", "run", "spread",
    "table", "write_results",
]
