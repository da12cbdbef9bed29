"""Two of the plan's choices for the first layer against their alternative, in one
process: the zero-skipping products (default) or the first product cut by columns
(``--first-columns``).

Epochs of ``MLPClassifier.partial_fit`` on 20,000 Fashion-MNIST rows (float32),
alternating the plan's choice (mode "auto") with the choice off (mode "never":
``_blas._set_skipzero_mode`` or ``layers._set_first_columns``), round after round,
so that both see the same machine. Prints the ratio auto / never per round and its
median: below 1, the choice pays. Usage:

    python benchmarks/bench_skip_first_layer.py THREADS HIDDEN BATCH [sgd|adam]
    python benchmarks/bench_skip_first_layer.py 2 256 64            # the textbook network
    python benchmarks/bench_skip_first_layer.py 2 512,256,128 200 adam
    python benchmarks/bench_skip_first_layer.py 2 512,256,128 200 adam --first-columns

sgd: logistic, plain SGD (eta 0.1, no L2); adam: scikit-learn's defaults. With
--first-columns, X's zeros are never skipped in either arm (the column cut applies
only to gemm's first product); --always compares "always" with "never" instead.
"""

import sys
import time
import warnings

import numpy as np
import threadpoolctl

from bench_sklearn import load
from mlp_cy import MLPClassifier, _blas, layers

ROWS = 20000
ROUNDS = 5


def main(argv):
    first_columns = "--first-columns" in argv
    on = "always" if "--always" in argv else "auto"
    argv = [a for a in argv if not a.startswith("--")]
    threads, sizes, batch = int(argv[0]), tuple(int(s) for s in argv[1].split(",")), int(argv[2])
    solver = argv[3] if len(argv) > 3 else "sgd"
    if first_columns:
        _blas._set_skipzero_mode("never")
        switch = layers._set_first_columns
    else:
        switch = _blas._set_skipzero_mode
    warnings.simplefilter("ignore")
    X, y = load("train", np.float32)
    X, y = X[:ROWS], y[:ROWS]
    if solver == "sgd":
        params = dict(activation="logistic", solver="sgd", momentum=0.0, alpha=0.0,
                      learning_rate_init=0.1)
    else:
        params = {}
    times = {on: [], "never": []}
    old = switch("auto")
    try:
        with threadpoolctl.threadpool_limits(threads):
            for r in range(ROUNDS):
                for mode in (on, "never") if r % 2 == 0 else ("never", on):
                    switch(mode)
                    clf = MLPClassifier(hidden_layer_sizes=sizes, batch_size=batch,
                                        random_state=0, **params)
                    clf.partial_fit(X[:2000], y[:2000], classes=np.arange(10))
                    start = time.perf_counter()
                    clf.partial_fit(X, y)
                    times[mode].append(time.perf_counter() - start)
    finally:
        switch(old)
    ratios = [a / n for a, n in zip(times[on], times["never"])]
    what = "first product by columns" if first_columns else "zero skipping"
    print(f"threads={threads} hidden={sizes} batch={batch} {solver}, {what}: {on} / never "
          f"per round {[round(x, 3) for x in ratios]}, median {np.median(ratios):.3f}; "
          f"fastest {on} {min(times[on]):.4f} s, never {min(times['never']):.4f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
