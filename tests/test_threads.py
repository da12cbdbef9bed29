"""How many threads the engine uses, and the pacer that keeps it from losing to one.

The rule (_blas.pyx, "Threads"): min(the BLAS's limit, the cores this process may use,
the work of a batch). The pacer (_parallel.pyx, note a): a loop of steps times them on
its threads and on one, and keeps one where the threads do not pay. No test here
measures a speed: the pacer is driven by made-up step times (_pacer_simulate), or by
helper threads made to stall (_set_helper_stall), where the choice is not close.
"""

import os
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest

from conftest import importorskip
from mlp_cy import MLPClassifier, _blas, _parallel
from test_parallel import _images, _train

threadpoolctl = importorskip("threadpoolctl")


@pytest.fixture
def forced_threads():
    """Force the parallel step's thread count and zero-skipping mode for one test."""
    old = []

    def force(threads, mode="auto"):
        old.append((_blas._set_parallel_threads(threads), _blas._set_skipzero_mode(mode)))

    yield force
    if old:
        _blas._set_parallel_threads(old[0][0])
        _blas._set_skipzero_mode(old[0][1])


@pytest.fixture
def cpu_budget():
    old = _blas._cpu_budget()
    yield _blas._set_cpu_budget
    _blas._set_cpu_budget(old)


# The rule ####################################################################

def test_threads_are_the_least_of_limit_cores_and_work(cpu_budget):
    if _blas._blas_num_threads() == 0:
        pytest.skip("this BLAS does not say how many threads it has")
    threads = _blas._engine_threads
    cpu_budget(4)
    with threadpoolctl.threadpool_limits(1):
        assert threads(64, 784, 256) == 1                 # the user's limit
    with threadpoolctl.threadpool_limits(3):
        assert threads(64, 784, 256) == 3
    with threadpoolctl.threadpool_limits(64):              # oversubscribed: the cores
        assert threads(64, 784, 256) == 4
        assert threads(16, 784, 256) == 2                 # 2 chunks of 8 rows
        assert threads(1024, 32, 64) == 2                 # 2 Mi multiply-adds
        assert threads(1024, 16, 16) == 1                 # too little work to share
    cpu_budget(1)
    with threadpoolctl.threadpool_limits(64):
        assert threads(64, 784, 256) == 1


def test_usable_cores_follow_the_affinity_mask():
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no os.sched_setaffinity on this platform (not Linux)")
    cpu = sorted(os.sched_getaffinity(0))[0]
    code = (f"import os; os.sched_setaffinity(0, {{{cpu}}}); "
            "from mlp_cy import _blas; print(_blas._cpu_budget(), _blas._usable_cores())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    assert out == ["1", "1"]
    assert _blas._usable_cores() == min(len(os.sched_getaffinity(0)),
                                        _quota_cores() or 10 ** 6)


def _quota_cores():
    import math
    quota = _blas._cgroup_cpu_quota()
    return None if quota is None else max(1, math.ceil(quota))


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota(tmp_path):
    _write(tmp_path / "self", "0::/box\n")
    _write(tmp_path / "fs" / "box" / "cpu.max", "150000 100000\n")
    assert _blas._cgroup_cpu_quota(tmp_path / "fs", tmp_path / "self") == 1.5
    _write(tmp_path / "fs" / "box" / "cpu.max", "max 100000\n")
    assert _blas._cgroup_cpu_quota(tmp_path / "fs", tmp_path / "self") is None


def test_cgroup_v1_quota(tmp_path):
    _write(tmp_path / "self", "5:memory:/box\n4:cpu,cpuacct:/box\n")
    folder = tmp_path / "fs" / "cpu,cpuacct" / "box"
    _write(folder / "cpu.cfs_quota_us", "200000\n")
    _write(folder / "cpu.cfs_period_us", "100000\n")
    assert _blas._cgroup_cpu_quota(tmp_path / "fs", tmp_path / "self") == 2.0
    _write(folder / "cpu.cfs_quota_us", "-1\n")              # no quota
    assert _blas._cgroup_cpu_quota(tmp_path / "fs", tmp_path / "self") is None


def test_no_cgroups_no_quota(tmp_path):
    assert _blas._cgroup_cpu_quota(tmp_path, tmp_path / "missing") is None
    _write(tmp_path / "self", "garbage\n0::/x\n")
    assert _blas._cgroup_cpu_quota(tmp_path / "fs", tmp_path / "self") is None


# The pacer, on made-up step times ###########################################

def _share_on_one(used):
    return sum(1 for t in used if t == 1) / len(used)


def test_the_pacer_keeps_threads_that_pay():
    used = _parallel._pacer_simulate(4, lambda t, step: 1.0 if t == 1 else 0.4, 4000)
    assert used[0] == 4
    assert _share_on_one(used) < 0.05           # the probes of one thread only


def test_the_pacer_drops_threads_that_do_not_pay():
    # A busy machine: each step on the threads waits for a descheduled helper.
    used = _parallel._pacer_simulate(2, lambda t, step: 1.0 if t == 1 else 3.0, 4000)
    assert _share_on_one(used) > 0.95
    # Threads barely faster are not worth another core (the 0.9 margin).
    used = _parallel._pacer_simulate(2, lambda t, step: 1.0 if t == 1 else 0.95, 4000)
    assert _share_on_one(used) > 0.9


def test_the_pacer_follows_the_load_as_it_comes_and_goes():
    def cost(threads, step):
        busy = 1000 <= step < 3000
        return 1.0 if threads == 1 else (3.0 if busy else 0.5)

    used = _parallel._pacer_simulate(2, cost, 4000)
    # Quiet: 7 probes of one thread in the first 1000 steps (the hold grows 1, 2, 4,
    # ... windows), then the load is found at the next window, within 10 steps.
    assert _share_on_one(used[:1000]) < 0.08
    assert _share_on_one(used[1010:3000]) > 0.95
    # Quiet again: the next probe of the threads (at most 64 windows later) finds it.
    assert _share_on_one(used[3000 + 8 * 65 + 20:]) < 0.05


def test_the_pacer_with_one_thread_never_probes():
    assert set(_parallel._pacer_simulate(1, lambda t, step: 1.0, 100)) == {1}


# The pacer in training ######################################################

def _dense(n, seed=0):
    return np.random.default_rng(seed).random((n, 784)).astype(np.float32)


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_stalled_helpers_make_the_epoch_fall_back_to_one_thread(forced_threads, solver,
                                                                kernel_level):
    X = _images(3000).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 10, 3000).astype(np.int32)
    options = dict(batch_size=16, epochs=1, solver=solver,
                   learning_rate=0.1 if solver == "sgd" else 0.001)
    forced_threads(2)
    expected, expected_stats = _train(X, y, np.float32, **options)
    _parallel._pacer_reset()
    # 20 ms before each part a helper runs: far more than a busy machine's preemption
    # of the one-thread windows, so that the choice never flips back to 2 by chance.
    old = _parallel._set_helper_stall(20000)
    try:
        got, stats = _train(X, y, np.float32, **options)
    finally:
        _parallel._set_helper_stall(old)
    on_one, on_many = _parallel._pacer_steps()
    assert on_one + on_many == 188
    # Steps on 2 threads now take over 20 ms a region, on one well under: after the
    # first window, one thread, but for the probes of 2 (ever rarer).
    assert on_one > 2 * on_many
    # The next epoch of this shape starts from that choice instead of probing afresh.
    (threads, features, hidden, classes, itemsize), start, _ = _parallel._pacer_memory()
    assert (threads, features, classes, itemsize) == (2, 784, 10, 4) and start == 1
    for a, b in zip(got, expected):                       # the same bits either way
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(stats, expected_stats)


def test_helpers_that_keep_up_keep_the_threads(forced_threads):
    # The other way round, with no stall: the pacer's probes of one thread are a
    # small share of the steps when the threads are not slower. (Not a speed test:
    # on a loaded machine one thread may win; then the steps still all run.)
    X = _images(2400).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 10, 2400).astype(np.int32)
    forced_threads(2)
    _parallel._pacer_reset()
    _train(X, y, np.float32, batch_size=16, epochs=1)
    on_one, on_many = _parallel._pacer_steps()
    assert on_one + on_many == 150
    assert on_many >= 9                                   # the first window ran on 2


# The BLAS's threads during a call ###########################################

def _fit(X, y, **params):
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=2, random_state=0,
                        batch_size=32, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return clf.fit(X, y)


@pytest.mark.filterwarnings("ignore")      # 2 epochs; warnings from other threads too
@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_the_blas_gets_its_threads_back(solver):
    if not _blas._blas_threads_settable() or _blas._blas_num_threads() == 0:
        pytest.skip("this BLAS's thread count cannot be set from here")
    X = _dense(300)
    y = np.random.default_rng(1).integers(0, 10, 300)
    for limit in (2, 5):
        with threadpoolctl.threadpool_limits(limit):
            _fit(X, y, solver=solver)
            _fit(X, y, solver=solver).predict_proba(X)
            assert _blas._blas_num_threads() == limit
            # Two fits at once: one holds the BLAS, the other leaves it alone.
            threads = [threading.Thread(target=_fit, args=(X, y), kwargs=dict(solver=solver),
                                        daemon=True) for _ in range(3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
                assert not t.is_alive(), "a concurrent fit hung"
            assert _blas._blas_num_threads() == limit


@pytest.mark.parametrize("n_hidden, batch_size", [(32, 32), (1024, 256)])  # BLAS on 1, 2
def test_the_blas_threads_come_back_after_an_exception_inside_the_epoch(n_hidden,
                                                                         batch_size):
    # A signal handler that raises, as Ctrl-C would, between two batches.
    import signal
    if not _blas._blas_threads_settable() or _blas._blas_num_threads() == 0:
        pytest.skip("this BLAS's thread count cannot be set from here")
    if not hasattr(signal, "setitimer"):
        pytest.skip("no signal.setitimer on this platform")
    from mlp_cy import network
    X = _dense(30000)
    y = np.random.default_rng(1).integers(0, 10, 30000).astype(np.int32)
    rng = np.random.default_rng(2)
    params = [0.01 * rng.standard_normal((784, n_hidden)).astype(np.float32),
              np.zeros(n_hidden, np.float32),
              0.01 * rng.standard_normal((n_hidden, 10)).astype(np.float32),
              np.zeros(10, np.float32)]
    options = dict(activation=1, learning_rate=0.01, alpha=0.0)
    work = np.empty(network._train_workspace_size(options, batch_size, 784, n_hidden, 10),
                    np.float32)
    stats = np.zeros(5)

    def stop(signum, frame):
        raise RuntimeError("stopped by the test")

    old_handler = signal.signal(signal.SIGALRM, stop)
    try:
        with threadpoolctl.threadpool_limits(2):
            signal.setitimer(signal.ITIMER_REAL, 0.01)
            with pytest.raises(RuntimeError, match="stopped by the test"):
                network._train_epoch(X, y, *params, None, None, batch_size, options,
                                     None, work, stats)
            assert 0 < stats[1] < 30000                   # stopped inside the epoch
            assert _blas._blas_num_threads() == 2
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
