"""The plan's zero-skipping first layer against gemm, in one process.

Epochs of ``MLPClassifier.partial_fit`` on 20,000 Fashion-MNIST rows (float32),
alternating the plan's choice (mode "auto") with every product a gemm
(``_blas._set_skipzero_mode("never")``), round after round, so that both see the
same machine. Prints the ratio auto / never per round and its median: below 1, the
zero skipping pays. Usage:

    python benchmarks/bench_skip_first_layer.py THREADS HIDDEN BATCH [sgd|adam]
    python benchmarks/bench_skip_first_layer.py 2 256 64            # the textbook network
    python benchmarks/bench_skip_first_layer.py 2 512,256,128 200 adam

sgd: logistic, plain SGD (eta 0.1, no L2); adam: scikit-learn's defaults.
"""

import sys
import time
import warnings

import numpy as np
import threadpoolctl

from bench_sklearn import load
from mlp_cy import MLPClassifier, _blas

ROWS = 20000
ROUNDS = 5


def main(argv):
    threads, sizes, batch = int(argv[0]), tuple(int(s) for s in argv[1].split(",")), int(argv[2])
    solver = argv[3] if len(argv) > 3 else "sgd"
    warnings.simplefilter("ignore")
    X, y = load("train", np.float32)
    X, y = X[:ROWS], y[:ROWS]
    if solver == "sgd":
        params = dict(activation="logistic", solver="sgd", momentum=0.0, alpha=0.0,
                      learning_rate_init=0.1)
    else:
        params = {}
    times = {"auto": [], "never": []}
    old = _blas._set_skipzero_mode("auto")
    try:
        with threadpoolctl.threadpool_limits(threads):
            for r in range(ROUNDS):
                for mode in ("auto", "never") if r % 2 == 0 else ("never", "auto"):
                    _blas._set_skipzero_mode(mode)
                    clf = MLPClassifier(hidden_layer_sizes=sizes, batch_size=batch,
                                        random_state=0, **params)
                    clf.partial_fit(X[:2000], y[:2000], classes=np.arange(10))
                    start = time.perf_counter()
                    clf.partial_fit(X, y)
                    times[mode].append(time.perf_counter() - start)
    finally:
        _blas._set_skipzero_mode(old)
    ratios = [a / n for a, n in zip(times["auto"], times["never"])]
    print(f"threads={threads} hidden={sizes} batch={batch} {solver}: auto / never per "
          f"round {[round(x, 3) for x in ratios]}, median {np.median(ratios):.3f}; "
          f"fastest auto {min(times['auto']):.4f} s, never {min(times['never']):.4f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
