"""Fit time of ``xpnet.sklearn.MLPClassifier`` vs ``sklearn.neural_network.MLPClassifier``, same parameters.

Both train the same float64 weights (``tests/test_sklearn.py`` checks they are equal); this measures
how long each takes, median of ``--repeats`` fits, in one process (ratios, not absolute times, carry
over between machines).  ``python benchmarks/sklearn_speed.py [--repeats 3]`` (``--smoke``: tiny, for the tests).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import sklearn
from sklearn import neural_network as sk
from sklearn.datasets import load_digits, make_classification
from sklearn.exceptions import ConvergenceWarning

from xpnet.bench.report import environment
from xpnet.sklearn import MLPClassifier

CASES = {  # name: (data, parameters)
    "digits (1797x64), (100,), adam, 20 epochs": (
        lambda: load_digits(return_X_y=True), dict(max_iter=20)),
    "synthetic 20000x256, (512, 512), adam, 3 epochs": (
        lambda: make_classification(20000, 256, n_informative=64, n_classes=10, random_state=0),
        dict(hidden_layer_sizes=(512, 512), max_iter=3)),
    "synthetic 20000x256, (512, 512), sgd, batch 64, 3 epochs": (
        lambda: make_classification(20000, 256, n_informative=64, n_classes=10, random_state=0),
        dict(hidden_layer_sizes=(512, 512), max_iter=3, solver="sgd", batch_size=64)),
}


def _median_fit(cls, X, y, params, repeats):
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est = cls(random_state=0, **params).fit(X, y)
        times.append(time.perf_counter() - began)
    return statistics.median(times), est


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true",
                        help="300 rows and one epoch per case: checks the script runs (tests/test_sklearn.py)")
    args = parser.parse_args()
    env = environment()
    blas = env.get("blas") or [{}]
    print(f"# {env['cpu']}, {env['cpu_count']} cores, BLAS {blas[0].get('internal_api')} core="
          f"{blas[0].get('architecture')}, numpy {env['numpy']}, scikit-learn {sklearn.__version__}, "
          f"{env['date']}, median of {args.repeats} fits")
    print("| case | scikit-learn s | xpnet s | speed-up | max weight difference |")
    print("|---|---|---|---|---|")
    for name, (data, params) in CASES.items():
        X, y = data()
        if args.smoke:
            X, y, params = X[:300], y[:300], dict(params, max_iter=1)
        X = (X - X.mean(0)) / (X.std(0) + 1e-12)
        ours, ours_est = _median_fit(MLPClassifier, X, y, params, args.repeats)
        theirs, their_est = _median_fit(sk.MLPClassifier, X, y, params, args.repeats)
        diff = max(float(np.abs(a - b).max()) for a, b in zip(ours_est.coefs_, their_est.coefs_))
        print(f"| {name} | {theirs:.2f} | {ours:.2f} | {theirs / ours:.2f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
