"""Threads and leaks.

* predict and predict_proba from 8 threads at once on one fitted model give exactly
  the serial results (each thread on its own rows, so a shared scratch buffer would
  mix them up); 8 models fitted in 8 threads at once equal the same fits run serially.
* 300 fit/predict cycles, error paths included, keep the process's RSS and the
  interpreter's allocated blocks flat after a warm-up (in a child process, so that
  nothing else the test session allocates is counted).

The valgrind check of the compiled code is tools/memcheck.sh (docs/reliability.md).
"""

import json
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from mlp_cy import MLPClassifier

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")   # ConvergenceWarning

N_THREADS = 8


def _problem(dtype=np.float64, n_samples=3000, n_features=20, n_classes=4, seed=0):
    rng = np.random.RandomState(seed)
    y = np.arange(n_samples) % n_classes
    centers = rng.normal(scale=2, size=(n_classes, n_features))
    X = (centers[y] + rng.normal(size=(n_samples, n_features))).astype(dtype)
    return X, y


def _run_in_threads(target, n_threads=N_THREADS):
    """target(i) in n_threads threads released together; returns results, re-raises."""
    barrier = threading.Barrier(n_threads)
    results, errors = [None] * n_threads, []

    def run(i):
        try:
            barrier.wait()
            results[i] = target(i)
        except BaseException as exc:     # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)

    # Daemon threads: one that hangs fails the test below and cannot keep pytest alive.
    threads = [threading.Thread(target=run, args=(i,), daemon=True)
               for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]
    return results


@pytest.mark.parametrize("model_dtype, X_dtype", [
    (np.float32, np.float32), (np.float64, np.float64),
    (np.float64, np.float32), (np.float64, np.uint8),     # rows converted per chunk
])
def test_concurrent_predictions_equal_serial_ones(model_dtype, X_dtype):
    X, y = _problem(model_dtype)
    clf = MLPClassifier(hidden_layer_sizes=32, learning_rate_init=0.1, batch_size=64,
                        max_iter=3, random_state=0, solver="sgd", **TEXTBOOK).fit(X, y)
    X = (X - X.min()).astype(X_dtype)
    # Thread i predicts rows [starts[i], starts[i] + sizes[i]): sizes straddle the
    # 1024-row chunk of predict_proba, and every thread's rows differ.
    starts = [0, 7, 100, 333, 500, 1200, 1500, 2999]
    sizes = [3000, 1, 1024, 1025, 2048, 1800, 17, 1]
    slices = [slice(s, s + n) for s, n in zip(starts, sizes)]
    serial = [(clf.predict_proba(X[s]), clf.predict(X[s]), clf.predict_log_proba(X[s]))
              for s in slices]

    def predict(i):
        out = []
        for _ in range(4):
            out.append((clf.predict_proba(X[slices[i]]), clf.predict(X[slices[i]]),
                        clf.predict_log_proba(X[slices[i]])))
        return out

    for i, runs in enumerate(_run_in_threads(predict)):
        for proba, labels, log_proba in runs:
            np.testing.assert_array_equal(proba, serial[i][0], err_msg=f"thread {i}")
            np.testing.assert_array_equal(labels, serial[i][1], err_msg=f"thread {i}")
            np.testing.assert_array_equal(log_proba, serial[i][2], err_msg=f"thread {i}")


# Each on top of the textbook network's settings (the defaults before they became
# scikit-learn's), so that plain SGD and the sigmoid keep their share of the mix.
TEXTBOOK = dict(activation="logistic", momentum=0.0, alpha=0.0)
CONFIGS = [{**TEXTBOOK, **config} for config in [
    dict(solver="sgd", batch_size=32),
    dict(solver="sgd", batch_size=1, shuffle=False),
    dict(solver="sgd", momentum=0.9, batch_size=16),
    dict(solver="adam", batch_size=50, learning_rate_init=0.01),
    dict(solver="sgd", early_stopping=True, n_iter_no_change=2),
    dict(solver="adam", batch_size=1, alpha=0.01, learning_rate_init=0.01),
    dict(solver="sgd", learning_rate="invscaling", activation="relu"),
    dict(solver="sgd", class_weight="balanced", activation="tanh"),
]]


def test_concurrent_fits_of_separate_models_equal_serial_fits():
    problems = [_problem(np.float32 if i % 2 else np.float64, n_samples=400, seed=i)
                for i in range(N_THREADS)]
    weights = [np.random.RandomState(i).rand(400) for i in range(N_THREADS)]

    def fit(i):
        params = {"hidden_layer_sizes": 16, "learning_rate_init": 0.1, "max_iter": 4,
                  "random_state": i, **CONFIGS[i]}
        X, y = problems[i]
        return MLPClassifier(**params).fit(X, y, sample_weight=weights[i])

    serial = [fit(i) for i in range(N_THREADS)]
    concurrent = _run_in_threads(fit)
    for i, (a, b) in enumerate(zip(serial, concurrent)):
        for got, want in zip(b.coefs_ + b.intercepts_, a.coefs_ + a.intercepts_):
            np.testing.assert_array_equal(got, want, err_msg=f"model {i}: {CONFIGS[i]}")
        assert b.loss_curve_ == a.loss_curve_, i
        assert b.n_iter_ == a.n_iter_ and b.t_ == a.t_, i


LEAK_CHECK = textwrap.dedent("""
    import gc, json, os, resource, sys, time, warnings
    import numpy as np
    from mlp_cy import MLPClassifier, network

    warnings.simplefilter("ignore")
    CONFIGS = [  # plain SGD, its per-sample loop, momentum, Adam with early stopping
        dict(solver="sgd", momentum=0.0, alpha=0.0, activation="logistic", batch_size=16),
        dict(solver="sgd", momentum=0.0, alpha=0.0, activation="logistic", batch_size=1),
        dict(solver="sgd", momentum=0.9, nesterovs_momentum=False, batch_size=8),
        dict(solver="adam", batch_size=32, early_stopping=True),
    ]
    rng = np.random.RandomState(0)
    DATA = [((255 * rng.rand(200, 50)).astype(dtype), np.arange(200) % 3)
            for dtype in (np.float64, np.float32, np.uint8)]   # uint8: read directly
    BIG = rng.rand(1500, 50)            # more rows than one predict_proba chunk
    WEIGHTS = rng.rand(200)

    def rss():
        if os.path.exists("/proc/self/statm"):
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def expect_error(call):
        try:
            call()
        except (ValueError, TypeError):
            return
        raise AssertionError("no error")

    def cycle(i):
        X, y = DATA[i % 3]
        clf = MLPClassifier(hidden_layer_sizes=64, learning_rate_init=0.1, max_iter=2,
                            random_state=i, **CONFIGS[i % len(CONFIGS)])
        clf.fit(X, y, sample_weight=WEIGHTS if i % 3 == 0 else None)
        if not clf.early_stopping:
            clf.partial_fit(X[:50], y[:50])
        clf.predict(X)
        clf.predict_proba(BIG)
        clf.predict_proba(BIG.astype(np.float32))      # converted chunk by chunk
        # error paths: raised with the GIL re-acquired inside nogil code
        expect_error(lambda: clf.predict(X[:, :3]))
        expect_error(lambda: clf.fit(np.where(X > 250, np.nan, X), y))
        W1, W2 = clf.coefs_
        b1, b2 = clf.intercepts_
        expect_error(lambda: network._predict_proba(
            X=X, W1=W1, b1=b1, W2=W2, b2=b2, activation=1,
            proba_out=np.empty((5, 3), X.dtype), work=np.empty(64, X.dtype)))
        bad_y = np.full(len(X), 7, np.int32)
        expect_error(lambda: network._train_epoch(
            X=X, y=bad_y, W1=W1, b1=b1, W2=W2, b2=b2, sample_weight=None, order=None,
            batch_size=16, options=dict(activation=1, learning_rate=0.1, alpha=0.0),
            optimizer_state=None, work=np.empty(100000, X.dtype), stats_out=np.zeros(5)))

    for i in range(int(sys.argv[1])):       # warm-up: caches, BLAS buffers, arenas
        cycle(i)
    gc.collect()
    rss0, blocks0 = rss(), sys.getallocatedblocks()
    start = time.perf_counter()
    for i in range(int(sys.argv[2])):
        cycle(i)
    gc.collect()
    print(json.dumps({"rss_growth": rss() - rss0,
                      "block_growth": sys.getallocatedblocks() - blocks0,
                      "seconds": time.perf_counter() - start}))
""")


def test_600_fit_predict_cycles_keep_memory_flat():
    # One BLAS thread: a busy machine makes BLAS worker threads spin, not leak.
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", LEAK_CHECK, "40", "600"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(result)
    # A leaked X copy, work buffer or predict chunk would be 40-500 KiB per cycle,
    # a leaked weight array 13-25 KiB: 7.8-300 MiB over 600 cycles, at least 4 times
    # the bound (measured: no growth at all). Any leak of 3.5 KiB a cycle fails.
    assert result["rss_growth"] < 2 * 2**20, result
    # One leaked Python object per cycle would be 600 blocks or more.
    assert result["block_growth"] < 300, result
