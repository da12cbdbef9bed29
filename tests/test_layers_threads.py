"""The layers engine on mlp_cy's own threads (layers.pyx, "The plan"): its two
parallel regions against the same step on one thread, for every solver, input and
call; the bits fixed by the plan's thread count, whatever the pacer or another
caller does."""

import threading

import numpy as np
import pytest
import scipy.sparse as sp
import threadpoolctl

from mlp_cy import _blas, _parallel
from mlp_cy.layers import Epoch, Network, Options, Output

# (solver options for Network.train_epoch: network.Solver SGD 0, ADAM 1)
SOLVERS = {
    "sgd": dict(solver=0),
    "momentum": dict(solver=0, momentum=0.9),
    "nesterov": dict(solver=0, momentum=0.9, nesterov=True),
    "adam": dict(solver=1),
}
UNITS = [60, 48, 24, 5]          # two hidden layers


@pytest.fixture
def threads():
    """Set the plan's thread count for one test (0: the rule's)."""
    old = []

    def set_threads(n):
        old.append(_blas._set_parallel_threads(n))

    yield set_threads
    if old:
        _blas._set_parallel_threads(old[0])


def _data(kind, dtype, n=203, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, UNITS[0])) * (rng.random((n, UNITS[0])) < 0.4)
    y = rng.integers(0, UNITS[-1], n).astype(np.int32)
    if kind == "uint8":
        return (X * 255).astype(np.uint8), y
    if kind == "csr":
        csr = sp.csr_matrix(X.astype(dtype))
        return (csr.data, csr.indices.astype(np.intp), csr.indptr.astype(np.intp)), y
    return X.astype(dtype), y


def _parameters(dtype, units=UNITS, seed=1):
    rng = np.random.default_rng(seed)
    coefs = [(rng.standard_normal((a, b)) / np.sqrt(a)).astype(dtype)
             for a, b in zip(units[:-1], units[1:])]
    intercepts = [(0.1 * rng.standard_normal(b)).astype(dtype) for b in units[1:]]
    return coefs, intercepts


def _train(X, y, dtype, solver, *, alpha=1e-3, batch_size=50, epochs=2, weights=None,
           units=UNITS):
    coefs, intercepts = _parameters(dtype, units)
    net = Network(coefs, intercepts, 3, int(Output.OUT_SOFTMAX))   # relu
    learning_rate = 0.001 if solver == "adam" else 0.05
    if isinstance(X, np.ndarray) and X.dtype == np.uint8:
        learning_rate /= 255
    options = Options(learning_rate=learning_rate, alpha=alpha, **SOLVERS[solver])
    state = np.zeros(net.state_size(options), dtype)
    work = np.empty(net.workspace_size(batch_size), dtype)
    epoch = Epoch()
    rng = np.random.default_rng(7)
    n = len(y)
    for _ in range(epochs):
        net.train_epoch(X, y, weights, rng.permutation(n).astype(np.intp), batch_size,
                        options, state if len(state) else None, work, epoch)
    stats = np.array([epoch.loss_sum, epoch.n_rows_done, epoch.n_batches_done,
                      epoch.diverged, epoch.n_updates])
    return coefs + intercepts + ([state] if len(state) else []), stats


def _assert_close(got, expected, dtype):
    rtol = 2e-5 if dtype == np.float32 else 1e-12
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=rtol, atol=rtol * np.abs(e).max())


@pytest.mark.parametrize("kind, dtype", [("dense", np.float32), ("dense", np.float64),
                                         ("uint8", np.float64), ("csr", np.float64),
                                         ("csr", np.float32)])
@pytest.mark.parametrize("solver", list(SOLVERS))
def test_threads_train_as_one_thread(threads, solver, kind, dtype):
    # 2, 3 and 7 threads cut the batch in other chunks than one thread: the same
    # step to rounding, weights and optimiser state, and it did run on several.
    X, y = _data(kind, dtype)
    weights = np.random.default_rng(3).random(len(y)).astype(dtype)
    threads(1)
    expected, expected_stats = _train(X, y, dtype, solver, weights=weights)
    for n in (2, 3, 7):
        threads(n)
        _parallel._pacer_reset()
        got, stats = _train(X, y, dtype, solver, weights=weights)
        _assert_close(got, expected, dtype)
        np.testing.assert_allclose(stats[0], expected_stats[0],
                                   rtol=1e-5 if dtype == np.float32 else 1e-12)
        np.testing.assert_array_equal(stats[1:], expected_stats[1:])
        assert _parallel._pacer_steps()[1] > 0      # steps on several threads


@pytest.fixture
def reproducible():
    """mlp_cy.reproducible_threads for one test, given back after it."""
    import mlp_cy
    settings = []

    def set_cut(n):
        settings.append(mlp_cy.reproducible_threads(n))

    yield set_cut
    for setting in reversed(settings):
        setting.restore()


@pytest.mark.parametrize("kind, dtype", [("dense", np.float32), ("dense", np.float64),
                                         ("uint8", np.float32), ("csr", np.float64)])
@pytest.mark.parametrize("solver", list(SOLVERS))
def test_reproducible_threads_give_the_same_bits_on_any_count(threads, reproducible,
                                                              solver, kind, dtype):
    # Cut as for 4 threads, on 1, 2, 3 and 7: the same bits, weights, optimiser state
    # and loss. Without the setting the cut follows the thread count, and the results
    # agree with these to rounding (on the machine this was written on, their last
    # bits differ for most of these cases; for some shapes a BLAS gives the same).
    X, y = _data(kind, dtype)
    weights = np.random.default_rng(3).random(len(y)).astype(dtype)
    reproducible(4)
    runs = []
    for n in (1, 2, 3, 7):
        threads(n)
        runs.append(_train(X, y, dtype, solver, weights=weights))
    for got, stats in runs[1:]:
        for g, e in zip(got, runs[0][0]):
            np.testing.assert_array_equal(g, e)
        np.testing.assert_array_equal(stats, runs[0][1])
    reproducible(None)
    threads(3)
    _assert_close(_train(X, y, dtype, solver, weights=weights)[0], runs[0][0], dtype)


def test_reproducible_threads_in_the_estimators(threads, reproducible, kernel_level):
    # fit (minibatch, with zero skipping where the level pays: the plan decides it for
    # the cut's count), predict_proba and L-BFGS, through the public setting; and its
    # checks. Given back on exit.
    import warnings

    import mlp_cy
    from mlp_cy import MLPClassifier

    rng = np.random.default_rng(0)
    X = rng.random((300, 784)).astype(np.float32) * (rng.random((300, 784)) < 0.5)
    y = rng.integers(0, 10, 300)

    def fit(n, **params):
        threads(n)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")          # 2 iterations do not converge
            clf = MLPClassifier(random_state=0, max_iter=2, batch_size=64, tol=0,
                                **params).fit(X, y)
        return clf.coefs_ + clf.intercepts_ + [clf.predict_proba(X), np.array(clf.loss_)]

    seed = dict(hidden_layer_sizes=(64,), activation="logistic", solver="sgd",
                momentum=0.0, alpha=0.0, learning_rate_init=0.1)
    for params in (seed, dict(hidden_layer_sizes=(64, 32, 16)),
                   dict(hidden_layer_sizes=(100,), solver="lbfgs")):
        with mlp_cy.reproducible_threads(3) as setting:
            assert mlp_cy.reproducible_threads.current() == 3
            runs = [fit(n, **params) for n in (1, 2, 7)]
        assert setting.n == 3 and mlp_cy.reproducible_threads.current() is None
        for run in runs[1:]:
            for a, b in zip(run, runs[0]):
                np.testing.assert_array_equal(a, b)
    for bad in (0, 65, 2.5, True, "4"):
        with pytest.raises(ValueError, match="whole number of threads from 1 to 64"):
            mlp_cy.reproducible_threads(bad)
    assert mlp_cy.reproducible_threads.current() is None


def test_reproducible_threads_from_the_environment():
    # MLP_CY_REPRODUCIBLE_THREADS at import: a count, or an error that says what to do.
    import os
    import subprocess
    import sys

    code = "import mlp_cy; print(mlp_cy.reproducible_threads.current())"
    env = dict(os.environ, MLP_CY_REPRODUCIBLE_THREADS="3")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "3"
    env["MLP_CY_REPRODUCIBLE_THREADS"] = "many"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True)
    assert out.returncode != 0
    assert "MLP_CY_REPRODUCIBLE_THREADS='many' must be a whole number" in out.stderr
    assert "or unset" in out.stderr


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_the_pacer_and_other_callers_change_no_bit(threads, solver):
    # The chunks are the plan's: run on one part (helpers that stall make the pacer
    # fall back to one thread), on the plan's threads, or by a caller that finds the
    # pool busy, the same bits.
    X, y = _data("dense", np.float32, n=1200)
    threads(2)
    _parallel._pacer_reset()
    quiet, _ = _train(X, y, np.float32, solver, epochs=3)
    assert _parallel._pacer_steps()[1] > 0
    old = _parallel._set_helper_stall(20000)
    try:
        _parallel._pacer_reset()
        stalled, _ = _train(X, y, np.float32, solver, epochs=3)
    finally:
        _parallel._set_helper_stall(old)
    assert _parallel._pacer_steps()[0] > 0          # the pacer took one thread
    results = [None] * 3

    def train(i):
        results[i] = _train(X, y, np.float32, solver, epochs=3)[0]

    callers = [threading.Thread(target=train, args=(i,)) for i in range(3)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    for run in [stalled] + results:
        for a, b in zip(run, quiet):
            np.testing.assert_array_equal(a, b)


def test_a_caller_beside_another_plans_as_a_lone_one():
    # While one model's call holds the BLAS at one thread, another's thread count is
    # still planned from the user's limit (not the held count): without any override,
    # three models trained at once get a lone model's bits.
    X, y = _data("dense", np.float32, n=1200)
    with threadpoolctl.threadpool_limits(2):
        alone, _ = _train(X, y, np.float32, "adam", epochs=3)
        results = [None] * 3

        def train(i):
            results[i] = _train(X, y, np.float32, "adam", epochs=3)[0]

        callers = [threading.Thread(target=train, args=(i,)) for i in range(3)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join()
        assert _blas._blas_num_threads() == 2
    for run in results:
        for a, b in zip(run, alone):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["dense", "csr"])
def test_loss_gradient_and_predict_on_threads(threads, kind):
    X, y = _data(kind, np.float64, n=517)
    coefs, intercepts = _parameters(np.float64)
    net = Network(coefs, intercepts, 3, int(Output.OUT_SOFTMAX))
    weights = np.random.default_rng(4).random(len(y))
    results = {}
    for n in (1, 3):
        threads(n)
        gradient = np.empty(net.n_parameters)
        # chunks of 100 rows: the gradient adds five of them
        loss = net.loss_gradient(X, y, weights, 1e-3, gradient, chunk_rows=100)
        results[n] = loss, gradient, net.predict(X, chunk_rows=128)
    np.testing.assert_allclose(results[3][0], results[1][0], rtol=1e-13)
    np.testing.assert_allclose(results[3][1], results[1][1], rtol=1e-12,
                               atol=1e-14 * np.abs(results[1][1]).max())
    np.testing.assert_allclose(results[3][2], results[1][2], rtol=1e-13, atol=1e-15)
    # and the chunked gradient is the whole one
    threads(1)
    gradient = np.empty(net.n_parameters)
    whole = net.loss_gradient(X, y, weights, 1e-3, gradient, chunk_rows=len(y))
    np.testing.assert_allclose(whole, results[1][0], rtol=1e-13)
    np.testing.assert_allclose(gradient, results[1][1], rtol=1e-12,
                               atol=1e-14 * np.abs(gradient).max())


def test_the_blas_gets_its_threads_back(threads):
    # The engine holds the BLAS at one thread while its own run (no BLAS threads
    # under each of ours), and gives the count back after the call, also after an
    # error inside it.
    X, y = _data("dense", np.float64)
    with threadpoolctl.threadpool_limits(2):
        before = _blas._blas_num_threads()
        threads(2)
        _train(X, y, np.float64, "adam", epochs=1)
        assert _blas._blas_num_threads() == before
        with pytest.raises(ValueError, match="batch_size"):
            _train(X, y, np.float64, "adam", epochs=1, batch_size=0)
        assert _blas._blas_num_threads() == before


def test_lbfgs_gives_the_blas_its_threads_back():
    # L-BFGS runs scipy's own BLAS calls on one thread between the engine's
    # evaluations (_blas._set_blas_threads): the user's count is back after fit.
    from mlp_cy import MLPClassifier
    X, y = _data("dense", np.float64)
    with threadpoolctl.threadpool_limits(2):
        before = _blas._blas_num_threads()
        clf = MLPClassifier(hidden_layer_sizes=(8,), solver="lbfgs", max_iter=5)
        with pytest.warns(Warning):
            clf.fit(X, y)
        assert _blas._blas_num_threads() == before


def test_other_chunks_give_the_same_step(threads):
    # The plan's chunk counts change the sums' order only: more row and weight chunks
    # per thread, the same training to rounding.
    from mlp_cy import layers
    X, y = _data("dense", np.float64)
    threads(2)
    expected, _ = _train(X, y, np.float64, "adam")
    old = layers._set_chunks(3, 5)
    try:
        got, _ = _train(X, y, np.float64, "adam")
    finally:
        layers._set_chunks(*old)
    _assert_close(got, expected, np.float64)
    assert any(not np.array_equal(a, b) for a, b in zip(got, expected))
    with pytest.raises(ValueError, match=">= 1"):
        layers._set_chunks(0, 2)


@pytest.fixture
def first_columns():
    """layers._set_first_columns for one test, with X's zeros never skipped (the
    plan cuts the first product by columns only where the gemms compute it)."""
    from mlp_cy import layers
    old_mode = layers._set_first_columns("auto")
    old_skip = _blas._set_skipzero_mode("never")
    yield layers._set_first_columns
    layers._set_first_columns(old_mode)
    _blas._set_skipzero_mode(old_skip)


@pytest.mark.parametrize("units", [[60, 48, 24, 5], [60, 50, 5]])
@pytest.mark.parametrize("kind, dtype", [("dense", np.float32), ("dense", np.float64),
                                         ("uint8", np.float32)])
@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_first_product_by_columns_trains_as_one_thread(threads, first_columns, solver,
                                                       kind, dtype, units):
    # X W_0 in column chunks of its own region (after the row chunks gathered the
    # shuffled rows), the rest by rows: on 2, 3 and 7 threads the same training as
    # one thread to rounding, on several threads. 48 and 50 columns cut at whole
    # cache lines of a row: 7 threads get 3 chunks (float32) or 6 (float64), and 50
    # columns end in a ragged one.
    X, y = _data(kind, dtype)
    coefs, intercepts = _parameters(dtype, units)
    net = Network(coefs, intercepts, 3, int(Output.OUT_SOFTMAX))
    first_columns("always")
    threads(1)
    assert net.plan(X, 50)["first_columns"] == 0
    expected, expected_stats = _train(X, y, dtype, solver, units=units)
    for n in (2, 3, 7):
        threads(n)
        lanes = 64 // np.dtype(dtype).itemsize
        assert net.plan(X, 50)["first_columns"] == min(n, units[1] // lanes)
        _parallel._pacer_reset()
        got, stats = _train(X, y, dtype, solver, units=units)
        assert _parallel._pacer_steps()[1] > 0      # steps on several threads
        _assert_close(got, expected, dtype)
        np.testing.assert_allclose(stats[0], expected_stats[0],
                                   rtol=1e-5 if dtype == np.float32 else 1e-12)
        np.testing.assert_array_equal(stats[1:], expected_stats[1:])


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_first_product_by_columns_gives_the_same_bits_on_any_count(
        threads, reproducible, first_columns, solver):
    # Cut as for 4 threads (4 column chunks of X W_0), run on 1, 2, 3 and 7: the same
    # bits, as for the row cut.
    X, y = _data("dense", np.float32)
    first_columns("always")
    reproducible(4)
    runs = []
    for n in (1, 2, 3, 7):
        threads(n)
        runs.append(_train(X, y, np.float32, solver, units=[60, 64, 24, 5]))
    for got, stats in runs[1:]:
        for g, e in zip(got, runs[0][0]):
            np.testing.assert_array_equal(g, e)
        np.testing.assert_array_equal(stats, runs[0][1])


def test_first_product_by_columns_in_the_gradient(threads, first_columns):
    # L-BFGS's loss and gradient read X's rows in place (no gather): by columns on 3
    # threads, the one-thread gradient to rounding.
    X, y = _data("dense", np.float64, n=517)
    wide = np.zeros((len(y), UNITS[0] + 5))
    wide[:, :UNITS[0]] = X
    X = wide[:, :UNITS[0]]                          # rows 5 values apart: ldx > units[0]
    coefs, intercepts = _parameters(np.float64)
    net = Network(coefs, intercepts, 3, int(Output.OUT_SOFTMAX))
    first_columns("always")
    results = {}
    for n in (1, 3):
        threads(n)
        gradient = np.empty(net.n_parameters)
        results[n] = net.loss_gradient(X, y, None, 1e-3, gradient, chunk_rows=100), gradient
    assert net.plan(X, 100)["first_columns"] == 3
    np.testing.assert_allclose(results[3][0], results[1][0], rtol=1e-13)
    np.testing.assert_allclose(results[3][1], results[1][1], rtol=1e-12,
                               atol=1e-14 * np.abs(results[1][1]).max())


def test_the_plan_cuts_the_first_product_by_columns_where_it_pays(threads, first_columns):
    # The rule: dense X, no zero skipping, chunks cut for 2 threads or more, and a
    # row chunk narrower than W_0 has columns (scikit-learn's batch of 200 on 2
    # threads at 512 units: yes; at 64 units: no). "never" turns it off.
    from mlp_cy import layers
    rng = np.random.default_rng(0)
    X = rng.random((400, 784)).astype(np.float32)

    def plan(hidden, rows=200, data=X):
        coefs, intercepts = _parameters(np.float32, [784, hidden, 10])
        return Network(coefs, intercepts, 3, 0).plan(data, rows)

    threads(2)
    assert plan(512)["first_columns"] == 2
    assert plan(64)["first_columns"] == 0
    assert plan(64, rows=64)["first_columns"] == 2
    csr = sp.csr_matrix(X)
    csr = (csr.data, csr.indices.astype(np.intp), csr.indptr.astype(np.intp))
    assert plan(512, data=csr)["first_columns"] == 0
    first_columns("never")
    assert plan(512)["first_columns"] == 0
    first_columns("auto")
    _blas._set_skipzero_mode("always")
    assert plan(512)["skip_zeros"] and plan(512)["first_columns"] == 0
    threads(1)
    _blas._set_skipzero_mode("never")
    assert plan(512)["first_columns"] == 0
    with pytest.raises(ValueError, match="mode must be one of"):
        layers._set_first_columns("sometimes")


@pytest.mark.parametrize("kind", ["dense", "uint8"])
def test_zero_skipping_by_columns_trains_as_one_thread(threads, first_columns, kind):
    # The plan does not choose it, but "always" reaches it: X W_0's column chunks by
    # the zero-skipping kernels, on shuffled float32 rows read in place (a list of
    # row pointers) or on gathered (converted) uint8 rows.
    X, y = _data(kind, np.float32)
    _blas._set_skipzero_mode("always")
    first_columns("always")
    threads(1)
    expected, expected_stats = _train(X, y, np.float32, "adam")
    for n in (2, 3):
        threads(n)
        coefs, intercepts = _parameters(np.float32)
        plan = Network(coefs, intercepts, 3, 0).plan(X, 50)
        assert plan["skip_zeros"] and plan["first_columns"] == n
        got, stats = _train(X, y, np.float32, "adam")
        _assert_close(got, expected, np.float32)
        np.testing.assert_array_equal(stats[1:], expected_stats[1:])
