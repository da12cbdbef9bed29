#!/usr/bin/env python
"""Threads on a quiet and on a busy machine: mlp_cy at its default thread count,
at threadpoolctl's limit of 1, and oversubscribed at 4 x the cores, in one process.

    python benchmarks/bench_threads.py              # ~6 min on 2 cores
    python benchmarks/bench_threads.py --quick      # ~1.5 min: fewer rows and epochs

"Busy" starts as many spinning processes as this process has cores beside it, as
other programs on a laptop, a CI runner or a shared server would. Workloads, on
Fashion-MNIST's first 20,000 training rows scaled to [0, 1] (float32), h=256, b=64:

    sgd          the seed's network: logistic, plain SGD, eta 0.1
    momentum     SGD with momentum 0.9
    nesterov     SGD with Nesterov's momentum 0.9
    adam         Adam, scikit-learn's defaults
    predict      predict_proba of the 10,000 test rows
    numpy-sgd    the seed's step in plain NumPy (a peer, on the BLAS's threads)

Each time is the median of the epochs (or predict calls) after the first; the
ratios compare settings within one load, in the same run. Nothing here is a test:
no timing is a pass or a fail.
"""

import argparse
import contextlib
import os
import subprocess
import sys
import time
import warnings

import numpy as np

DATA_DIR = os.environ.get("MLP_CY_BENCH_DATA", "/usr/share/datasets/fashion-mnist")


def load(n_rows):
    from mlp_cy.datasets import read_idx
    X = read_idx(os.path.join(DATA_DIR, "train-images-idx3-ubyte.gz"))[:n_rows]
    y = read_idx(os.path.join(DATA_DIR, "train-labels-idx1-ubyte.gz"))[:n_rows]
    X_test = read_idx(os.path.join(DATA_DIR, "t10k-images-idx3-ubyte.gz"))
    scale = np.float32(1 / 255)
    return (X.reshape(len(X), -1).astype(np.float32) * scale, y.astype(np.int64),
            X_test.reshape(len(X_test), -1).astype(np.float32) * scale)


@contextlib.contextmanager
def busy(n_processes):
    """n_processes spinning Python processes, stopped on the way out."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(n_processes)]
    try:
        time.sleep(0.5)                   # let the scheduler see them
        yield
    finally:
        for p in spinners:
            p.kill()
        for p in spinners:
            p.wait()


SOLVERS = {
    "sgd": dict(solver="sgd", momentum=0.0, learning_rate_init=0.1),
    "momentum": dict(solver="sgd", momentum=0.9, nesterovs_momentum=False,
                     learning_rate_init=0.01),
    "nesterov": dict(solver="sgd", momentum=0.9, nesterovs_momentum=True,
                     learning_rate_init=0.01),
    "adam": dict(solver="adam", learning_rate_init=0.001),
}


def epochs_mlp_cy(X, y, solver, n_epochs):
    from mlp_cy import MLPClassifier
    clf = MLPClassifier(hidden_layer_sizes=(256,), activation="logistic", alpha=0.0,
                        batch_size=64, random_state=0, **SOLVERS[solver])
    classes = np.arange(10)
    times = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(n_epochs):
            start = time.perf_counter()
            clf.partial_fit(X, y, classes=classes)
            times.append(time.perf_counter() - start)
    return times


def predict_mlp_cy(X, y, X_test, n_calls):
    from mlp_cy import MLPClassifier
    clf = MLPClassifier(hidden_layer_sizes=(256,), activation="logistic", solver="sgd",
                        momentum=0.0, learning_rate_init=0.1, batch_size=64,
                        random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.partial_fit(X[:2000], y[:2000], classes=np.arange(10))
    times = []
    for _ in range(n_calls):
        start = time.perf_counter()
        clf.predict_proba(X_test)
        times.append(time.perf_counter() - start)
    return times


def epochs_numpy(X, y, n_epochs, h=256, b=64, eta=np.float32(0.1)):
    """The seed's step in NumPy: preallocated buffers, out= products."""
    rng = np.random.default_rng(0)
    d, K = X.shape[1], 10
    W1 = (rng.standard_normal((d, h)) * np.sqrt(2 / (d + h))).astype(np.float32)
    b1 = np.zeros(h, np.float32)
    W2 = (rng.standard_normal((h, K)) * np.sqrt(2 / (h + K))).astype(np.float32)
    b2 = np.zeros(K, np.float32)
    A1 = np.empty((b, h), np.float32)
    Z2 = np.empty((b, K), np.float32)
    dA1 = np.empty((b, h), np.float32)
    Xb = np.empty((b, d), np.float32)
    onehot = np.eye(K, dtype=np.float32)
    times = []
    for _ in range(n_epochs):
        start = time.perf_counter()
        order = rng.permutation(len(X))
        for s in range(0, len(X) - b + 1, b):
            rows = order[s:s + b]
            np.take(X, rows, axis=0, out=Xb)
            np.matmul(Xb, W1, out=A1)
            A1 += b1
            np.negative(A1, out=A1)
            np.exp(A1, out=A1)
            A1 += 1
            np.reciprocal(A1, out=A1)
            np.matmul(A1, W2, out=Z2)
            Z2 += b2
            Z2 -= Z2.max(axis=1, keepdims=True)
            np.exp(Z2, out=Z2)
            Z2 /= Z2.sum(axis=1, keepdims=True)
            Z2 -= onehot[y[rows]]
            Z2 /= b
            np.matmul(Z2, W2.T, out=dA1)
            W2 -= eta * (A1.T @ Z2)
            b2 -= eta * Z2.sum(axis=0)
            dA1 *= A1 * (1 - A1)
            W1 -= eta * (Xb.T @ dA1)
            b1 -= eta * dA1.sum(axis=0)
        times.append(time.perf_counter() - start)
    return times


def median_after_first(times):
    return float(np.median(times[1:] if len(times) > 1 else times))


def measure(workload, X, y, X_test, n_epochs):
    if workload == "predict":
        return median_after_first(predict_mlp_cy(X, y, X_test, 2 * n_epochs))
    if workload == "numpy-sgd":
        return median_after_first(epochs_numpy(X, y, n_epochs))
    return median_after_first(epochs_mlp_cy(X, y, workload, n_epochs))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=4,
                        help="epochs (predict: twice as many calls) per measurement")
    parser.add_argument("--busy", type=int, default=None,
                        help="spinning processes beside the busy runs (default: cores)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workloads", default="sgd,momentum,nesterov,adam,predict,numpy-sgd")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.epochs = 6000, 3
    import threadpoolctl
    from mlp_cy import _blas
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    n_busy = cores if args.busy is None else args.busy
    X, y, X_test = load(args.rows)
    workloads = args.workloads.split(",")
    limits = {"default": None, "1 thread": 1, f"{4 * cores} threads": 4 * cores}
    import mlp_cy
    print(f"# mlp_cy {mlp_cy.__version__}")
    print(f"# cores this process may use: {cores}; BLAS threads by default: "
          f"{_blas._blas_num_threads()}; kernel level: {_blas._kernel_level()}; "
          f"{args.rows} rows, h=256, b=64, float32")
    for load_name, n_spinners in (("quiet", 0), (f"busy ({n_busy} spinning processes)",
                                                 n_busy)):
        results = {}
        with busy(n_spinners):
            for workload in workloads:
                for name, limit in limits.items():
                    context = (threadpoolctl.threadpool_limits(limit) if limit
                               else contextlib.nullcontext())
                    with context:
                        results[workload, name] = measure(workload, X, y, X_test,
                                                          args.epochs)
        print(f"\n## {load_name}\n")
        names = list(limits)
        print("| workload | " + " | ".join(f"{n} (s)" for n in names)
              + " | default / 1 thread | " + f"{names[2]} / 1 thread |")
        print("|---" * (len(names) + 3) + "|")
        for workload in workloads:
            row = [results[workload, n] for n in names]
            one = results[workload, "1 thread"]
            print(f"| {workload} | " + " | ".join(f"{t:.3f}" for t in row)
                  + f" | {row[0] / one:.2f}x | {row[2] / one:.2f}x |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
