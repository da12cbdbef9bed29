"""The textbook network's step on several threads (the layers engine's regions on
_workers.h's threads, the first layer skipping X's zeros where the plan says so).

Where the thread rule gives 2 or more threads, every solver runs each batch on threads
of mlp_cy's own: skipping the data's zeros where that pays, else by gemm on one BLAS
thread. It must compute what one thread does, to rounding, for every dtype,
activation, solver, weighting and batch shape; give the same bits for the same thread
count whichever thread runs which chunk; survive fork() and concurrent callers;
follow threadpoolctl's limit; and update nothing on a step whose loss is not finite.
predict_proba takes the same road (by chunks of rows). The rule and the pacer:
test_threads.py.
`_blas._set_parallel_threads(n)` forces n parts whatever the BLAS has, and the
`kernel_level` fixture runs the kernels at each instruction-set level this CPU has, so
these tests run the same on any machine, whatever its vector units.
"""

import multiprocessing
import threading
import warnings

import numpy as np
import pytest

from conftest import importorskip
from mlp_cy import MLPClassifier, _blas, network
from mlp_cy.kernels import Activation
from reference import sgd_epoch
from test_skipzero import _images as skipzero_images

threadpoolctl = importorskip("threadpoolctl")

N_HIDDEN = 48          # whole vectors for float32 (16 lanes) and float64 (8)


@pytest.fixture
def engine():
    """Set the parallel step's thread count and the zero-skipping mode for one test."""
    old_threads, old_mode = [], []

    def set_engine(threads=None, mode=None):
        if threads is not None:
            old_threads.append(_blas._set_parallel_threads(threads))
        if mode is not None:
            old_mode.append(_blas._set_skipzero_mode(mode))

    yield set_engine
    if old_threads:
        _blas._set_parallel_threads(old_threads[0])
    if old_mode:
        _blas._set_skipzero_mode(old_mode[0])


def _images(n, seed=0):
    """test_skipzero's MNIST-like rows (a blob of ink in a 28 x 28 zero frame), float64."""
    return skipzero_images(n, np.float64, seed)


def _params(dtype, n_hidden=N_HIDDEN, seed=1):
    rng = np.random.default_rng(seed)
    return [(0.05 * rng.standard_normal((784, n_hidden))).astype(dtype),
            (0.1 * rng.standard_normal(n_hidden)).astype(dtype),
            (0.3 * rng.standard_normal((n_hidden, 10))).astype(dtype),
            (0.1 * rng.standard_normal(10)).astype(dtype)]


# The solvers as the engine's options (network.Solver: SGD 0, ADAM 1).
SOLVERS = {
    "sgd": {},
    "momentum": dict(solver=0, momentum=0.9),
    "nesterov": dict(solver=0, momentum=0.9, nesterov=True),
    "adam": dict(solver=1),
}


def _train(X, y, dtype, *, batch_size=64, shuffle=True, activation=Activation.LOGISTIC,
           alpha=0.0, sample_weight=None, epochs=2, learning_rate=0.1, solver="sgd"):
    """epochs of network._train_epoch from _params; returns (params + the optimiser's
    state, stats)."""
    params = _params(dtype)
    options = dict(activation=int(activation), learning_rate=learning_rate, alpha=alpha,
                   **SOLVERS[solver])
    work = np.empty(network._train_workspace_size(options, batch_size, X.shape[1],
                                                  N_HIDDEN, 10), dtype)
    state = np.zeros(network._optimizer_state_size(options, X.shape[1], N_HIDDEN, 10),
                     dtype)
    stats = np.zeros(5)
    rng = np.random.default_rng(7)
    weights = None if sample_weight is None else sample_weight.astype(dtype)
    for _ in range(epochs):
        order = rng.permutation(len(X)).astype(np.intp) if shuffle else None
        network._train_epoch(X, y, *params, weights, order, batch_size, options,
                             state if len(state) else None, work, stats)
    return params + ([state] if len(state) else []), stats


def _assert_close(got, expected, dtype):
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    assert len(got) == len(expected)
    for name, g, e in zip(["W1", "b1", "W2", "b2", "state"], got, expected):
        np.testing.assert_allclose(g, e, rtol=rtol, atol=rtol * np.abs(e).max(),
                                   err_msg=name)


CASES = {
    "logistic, b=37": dict(batch_size=37),
    "L2, b=64": dict(alpha=1e-2),
    "relu, weighted": dict(activation=Activation.RELU, weighted=True, batch_size=32),
    "tanh, in order": dict(activation=Activation.TANH, shuffle=False, batch_size=50),
    "identity, b=8": dict(activation=Activation.IDENTITY, batch_size=8,
                          learning_rate=0.01),
}


# (X's dtype, the parameters'): uint8 pixels are converted as rows are gathered.
# Not uint8 into float32 without a squashing activation: pre-activations 255 times
# larger make float32 itself the error (gemm and the serial kernels differ by 1e-4).
DTYPES = {"float32": (np.float32, np.float32), "float64": (np.float64, np.float64),
          "uint8->float64": (np.uint8, np.float64), "uint8->float32": (np.uint8, np.float32)}
COMBINATIONS = [(case, dtypes) for case in CASES for dtypes in DTYPES
                if not (dtypes == "uint8->float32" and "identity" in case)]


@pytest.mark.parametrize("threads", [2, 3, 7])
@pytest.mark.parametrize("case, dtypes", COMBINATIONS)
def test_parallel_step_matches_the_serial_step(engine, threads, case, dtypes,
                                                kernel_level):
    options = dict(CASES[case])
    weighted = options.pop("weighted", False)
    x_dtype, dtype = DTYPES[dtypes]
    X = _images(300)
    X = (X * 255).astype(np.uint8) if x_dtype == np.uint8 else X.astype(x_dtype)
    if x_dtype == np.uint8:
        options["learning_rate"] = options.get("learning_rate", 0.1) / 255
    y = np.random.default_rng(1).integers(0, 10, 300).astype(np.int32)
    weights = np.random.default_rng(2).random(300) if weighted else None
    # Against the serial step skipping zeros too (test_skipzero.py checks it against
    # gemm): in float32 two epochs on uint8 pixels amplify any change of rounding
    # to ~1e-4, gemm's included.
    with threadpoolctl.threadpool_limits(1):
        engine(threads=0, mode="always")
        expected, expected_stats = _train(X, y, dtype, sample_weight=weights, **options)
        engine(threads=threads, mode="auto")
        got, stats = _train(X, y, dtype, sample_weight=weights, **options)
    assert _blas._kernel_levels_used() == (kernel_level,)
    _assert_close(got, expected, dtype)
    np.testing.assert_allclose(stats[0], expected_stats[0],
                               rtol=1e-5 if dtype == np.float32 else 1e-12)
    np.testing.assert_array_equal(stats[1:], expected_stats[1:])  # rows, batches, updates


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_parallel_epoch_matches_the_numpy_reference(engine, dtype, kernel_level):
    # The independent implementation of tests/reference.py, with L2, rows in order.
    engine(threads=2, mode="auto")
    X = _images(150).astype(dtype)
    y = np.random.default_rng(3).integers(0, 10, 150).astype(np.int32)
    params = _params(dtype)
    expected, expected_loss = sgd_epoch(
        X.astype(np.float64), y, [p.astype(np.float64) for p in params],
        learning_rate=0.05, batch_size=40, n_classes=10, alpha=1e-3)
    options = dict(activation=int(Activation.LOGISTIC), learning_rate=0.05, alpha=1e-3)
    work = np.empty(network._train_workspace_size(options, 40, 784, N_HIDDEN, 10), dtype)
    stats = np.zeros(5)
    with threadpoolctl.threadpool_limits(1):
        network._train_epoch(X, y, *params, None, None, 40, options, None, work, stats)
    rtol = 1e-4 if dtype == np.float32 else 1e-9
    for name, g, e in zip(["W1", "b1", "W2", "b2"], params, expected):
        np.testing.assert_allclose(g, e, rtol=rtol, atol=rtol * np.abs(e).max(),
                                   err_msg=name)
    np.testing.assert_allclose(stats[0] / stats[1], expected_loss, rtol=rtol)
    assert tuple(stats[1:]) == (150, 4, 0, 4)
    assert _blas._kernel_levels_used() == (kernel_level,)


@pytest.mark.parametrize("x_dtype", [np.float32, np.uint8])
def test_the_thread_count_changes_only_rounding(engine, x_dtype, kernel_level):
    # The plan cuts the rows in one chunk per thread, whose partial sums are added in
    # chunk order: on 1, 2, 3 or 7 threads the weights agree to rounding, and a
    # second run on as many threads gives the same bits.
    X = _images(256)
    X = (X * 255).astype(np.uint8) if x_dtype == np.uint8 else X.astype(x_dtype)
    y = np.random.default_rng(1).integers(0, 10, 256).astype(np.int32)
    results = {}
    options = dict(batch_size=37, alpha=1e-3,
                   learning_rate=0.1 / (255 if x_dtype == np.uint8 else 1))
    for threads in (1, 2, 3, 7):
        engine(threads=threads, mode="auto")
        _blas._kernel_use_reset()
        results[threads] = _train(X, y, np.float32, **options)
        assert _blas._kernel_levels_used() == (kernel_level,)
        again = _train(X, y, np.float32, **options)
        for a, b in zip(again[0], results[threads][0]):
            np.testing.assert_array_equal(a, b)
    for threads in (2, 3, 7):
        _assert_close(results[threads][0], results[1][0], np.float32)
        np.testing.assert_array_equal(results[threads][1][1:], results[1][1][1:])


def test_concurrent_callers_get_the_bits_of_a_lone_caller(engine):
    # One pool per process: a caller that finds it busy runs its parts itself.
    # Which thread runs a part must not change a bit of the result.
    X = _images(512).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 10, 512).astype(np.int32)
    engine(threads=2, mode="auto")
    alone, _ = _train(X, y, np.float32, epochs=3)
    results = [None] * 4

    def train(i):
        results[i] = _train(X, y, np.float32, epochs=3)[0]

    threads = [threading.Thread(target=train, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive(), "a concurrent parallel epoch hung"
    for params in results:
        for a, b in zip(params, alone):
            np.testing.assert_array_equal(a, b)


def _train_in_child(queue):
    X = _images(256).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 10, 256).astype(np.int32)
    queue.put([p.tolist() for p in _train(X, y, np.float32)[0]])


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(),
                    reason="needs fork()")
def test_a_forked_child_trains_in_parallel(engine):
    # The parent's helper threads do not exist in the child: it must start its own,
    # not wait for them.
    engine(threads=2, mode="auto")
    X = _images(256).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 10, 256).astype(np.int32)
    parent, _ = _train(X, y, np.float32)            # the pool's helpers now exist
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_train_in_child, args=(queue,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # fork with threads
        child.start()
    try:
        got = queue.get(timeout=120)
    finally:
        child.join(timeout=30)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0
    for a, b in zip(got, parent):
        np.testing.assert_array_equal(np.asarray(a, np.float32), b)


def test_thread_count_follows_the_rule(engine, kernel_level):
    # min(the BLAS's limit, the cores, the work): _blas.pyx, "Threads".
    if _blas._blas_num_threads() == 0:
        pytest.skip("this BLAS does not say how many threads it has (not OpenBLAS, "
                    "MKL or BLIS): the parallel step is never chosen")
    threads = _blas._engine_threads
    skip = _blas._skip_first_layer                 # (m, k, n, itemsize, threads)
    old_budget = _blas._set_cpu_budget(8)
    try:
        with threadpoolctl.threadpool_limits(1):
            assert threads(64, 784, 256) == 1
        serial_pays, parallel_pays = _blas._skipzero_pays()
        assert parallel_pays == (kernel_level == "avx512")   # RESULTS.md, levels
        assert not serial_pays                    # one thread: the gemm step wins
        assert not skip(64, 784, 256, 4, 1)
        if not parallel_pays:
            assert not skip(64, 784, 256, 4, 2)
            engine(mode="always")                         # the tests' way in
            assert skip(64, 784, 256, 4, 2)
            return
        assert skip(64, 784, 256, 4, 2)
        assert skip(64, 784, 256, 8, 2)
        assert not skip(64, 784, 100, 4, 2)               # not whole vectors
        assert not skip(64, 784, 8, 4, 2)                 # narrower than one
        assert skip(512, 784, 1024, 4, 2)                 # X W1 of 2 MiB: 1 MiB a thread
        assert not skip(1024, 784, 1024, 4, 2)            # beyond
        engine(mode="never")
        assert not skip(64, 784, 256, 4, 2)
        engine(mode="auto")
        with threadpoolctl.threadpool_limits(2):
            assert threads(64, 784, 256) == 2
            assert threads(8, 784, 256) == 1              # one chunk of rows: no work to share
        with threadpoolctl.threadpool_limits(3):
            assert threads(64, 784, 256) == 3
        with threadpoolctl.threadpool_limits(64):
            assert threads(64, 784, 256) == 8             # 8 chunks of 8 rows
            assert threads(512, 784, 256) == 8            # the 8 cores
            assert threads(512, 64, 256) == 8             # 8 Mi multiply-adds
            assert threads(64, 64, 256) == 1              # 1 Mi: one thread's work
        _blas._set_cpu_budget(2)                          # a container given 2 CPUs
        with threadpoolctl.threadpool_limits(64):
            assert threads(512, 784, 256) == 2
    finally:
        _blas._set_cpu_budget(old_budget)


def test_the_estimator_takes_the_parallel_step_at_two_blas_threads(engine, kernel_level):
    # Same bits as 2 forced parts at 1 BLAS thread, other bits than the serial step;
    # at a level where skipping zeros does not pay on 2 threads, gemm and no kernel.
    if _blas._blas_num_threads() == 0:
        pytest.skip("this BLAS does not say how many threads it has")
    X = _images(400).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 10, 400)

    def fit(limit, forced):
        engine(threads=forced)
        clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=2, random_state=0,
                            activation="logistic", solver="sgd", momentum=0.0, alpha=0.0,
                            learning_rate_init=0.1, batch_size=64, tol=0,
                            n_iter_no_change=100)
        with threadpoolctl.threadpool_limits(limit), warnings.catch_warnings():
            warnings.simplefilter("ignore")           # 2 epochs do not converge
            clf.fit(X, y)
        return clf.coefs_ + clf.intercepts_

    at_two = fit(2, 0)
    if not _blas._skipzero_pays()[1]:
        assert _blas._kernel_levels_used() == ()
        return
    assert _blas._kernel_levels_used() == (kernel_level,)
    forced = fit(1, 2)
    serial = fit(1, 0)
    for a, b in zip(at_two, forced):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(at_two, serial))
    _assert_close(at_two, serial, np.float32)


def test_dense_data_takes_the_serial_step(engine):
    # The first batch decides: dense rows go to the layers engine's gemm step, bit for
    # bit (on the same thread count: its chunks are cut per thread).
    X = np.random.default_rng(0).random((200, 784)).astype(np.float32) + 0.1
    y = np.random.default_rng(1).integers(0, 10, 200).astype(np.int32)
    with threadpoolctl.threadpool_limits(1):
        engine(threads=2, mode="never")
        expected, _ = _train(X, y, np.float32, learning_rate=0.01)
        engine(threads=2, mode="auto")
        _blas._kernel_use_reset()
        got, _ = _train(X, y, np.float32, learning_rate=0.01)
    assert _blas._kernel_levels_used() == ()
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtypes", ["float32", "float64", "uint8->float64"])
@pytest.mark.parametrize("solver", ["momentum", "nesterov", "adam"])
def test_every_solver_on_the_parallel_step(engine, solver, dtypes, kernel_level):
    # Momentum, Nesterov and Adam update by chunks of parameters on the step's
    # threads: as the serial step to rounding (optimiser state included), the same
    # bits on 1, 2, 3 and 7 threads.
    x_dtype, dtype = DTYPES[dtypes]
    rng = np.random.default_rng(5)
    X = _images(300)
    X = (X * 255).astype(np.uint8) if x_dtype == np.uint8 else X.astype(x_dtype)
    y = rng.integers(0, 10, 300).astype(np.int32)
    weights = rng.random(300)
    learning_rate = (0.01 if solver != "adam" else 0.001) / (255 if x_dtype == np.uint8
                                                             else 1)
    options = dict(solver=solver, alpha=1e-3, batch_size=37, sample_weight=weights,
                   learning_rate=learning_rate)
    with threadpoolctl.threadpool_limits(1):
        engine(threads=0, mode="never")
        expected, expected_stats = _train(X, y, dtype, **options)
        engine(mode="auto")
        results = {}
        for threads in (1, 2, 3, 7):
            engine(threads=threads)
            _blas._kernel_use_reset()
            results[threads], stats = _train(X, y, dtype, **options)
            assert _blas._kernel_levels_used() == (kernel_level,)
            np.testing.assert_array_equal(stats[1:], expected_stats[1:])
    for threads in (1, 2, 3, 7):
        _assert_close(results[threads], expected, dtype)


def test_a_step_with_a_non_finite_loss_updates_nothing(engine):
    # The estimator rejects such X; the engine must still not write NaN weights.
    engine(threads=2, mode="auto")
    X = _images(128).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 10, 128).astype(np.int32)
    X[70, 300] = np.nan                               # in the second batch of 64
    params = _params(np.float32)
    options = dict(activation=int(Activation.LOGISTIC), learning_rate=0.1, alpha=0.0)
    work = np.empty(network._train_workspace_size(options, 64, 784, N_HIDDEN, 10),
                    np.float32)
    stats = np.zeros(5)
    network._train_epoch(X, y, *params, None, None, 64, options, None, work, stats)
    after_first = _params(np.float32)
    network._train_epoch(X[:64], y[:64], *after_first, None, None, 64, options, None,
                         work.copy(), np.zeros(5))
    assert tuple(stats[1:]) == (64, 1, 1, 1)          # stopped at batch 2, flagged
    for a, b in zip(params, after_first):
        np.testing.assert_array_equal(a, b)
        assert np.isfinite(a).all()


@pytest.mark.parametrize("n_rows", [1, 63, 64, 65, 300])
@pytest.mark.parametrize("dtypes", list(DTYPES))
@pytest.mark.parametrize("activation", [Activation.LOGISTIC, Activation.RELU,
                                        Activation.TANH, Activation.IDENTITY])
def test_parallel_predict_proba_matches_the_serial_one(engine, n_rows, dtypes, activation,
                                                      kernel_level):
    x_dtype, dtype = DTYPES[dtypes]
    X = _images(n_rows, seed=5)
    X = (X * 255).astype(np.uint8) if x_dtype == np.uint8 else X.astype(x_dtype)
    W1, b1, W2, b2 = _params(dtype)
    if x_dtype == np.uint8:
        W1 /= 255
    work = np.empty(32 * (N_HIDDEN + 784), dtype)
    results = {}
    with threadpoolctl.threadpool_limits(1):
        for threads, mode in ((0, "never"), (1, "auto"), (2, "auto"), (3, "auto")):
            engine(threads=threads, mode=mode)
            proba = np.full((n_rows, 10), np.nan, dtype)
            network._predict_proba(X, W1, b1, W2, b2, int(activation), proba, work)
            results[threads] = proba
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(results[2], results[0], rtol=0, atol=tol)
    np.testing.assert_allclose(results[2].sum(axis=1), 1, rtol=0, atol=10 * tol)
    for threads in (1, 3):
        np.testing.assert_allclose(results[threads], results[2], rtol=0, atol=tol)
