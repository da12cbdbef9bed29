"""Past one machine: out-of-core partial_fit, dask-ml's Incremental, dask-backed search.

The memory test needs neither dask nor the data set. The others start one real
dask.distributed LocalCluster (2 worker processes, 1 thread each, on 127.0.0.1, no
dashboard) for the module and need the ``dask`` extra (``pip install '.[dask]'``);
without it they are reported as skipped, with the reason, never silently passed.
"""

import json
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import importorskip, require_system_fashion_mnist

from mlp_cy import MLPClassifier
from mlp_cy.datasets import load_mnist, read_idx, write_idx

CLASSES = np.arange(10)
pytestmark = pytest.mark.filterwarnings("ignore:Stochastic Optimizer:UserWarning")
DASK_REASON = (
    "needs dask[distributed,array] and dask-ml: pip install 'mlp_cy[dask]' "
    "(CI installs it)"
)


def _importorskip(name):
    return importorskip(name, reason=DASK_REASON)


# Out of core on one machine --------------------------------------------------------

# Runs in a fresh interpreter, so that its peak RSS is that of the training alone.
# Each chunk is read through a fresh memory map that is dropped after the chunk: the
# file's pages then leave the process's RSS (one map kept open for the whole file
# would count every page read so far in RSS, though the kernel may reclaim them).
_OUT_OF_CORE_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from mlp_cy import MLPClassifier
    from mlp_cy.datasets import read_idx

    def rss(field):
        # Linux: VmRSS (now) and VmHWM (peak); elsewhere the peak, for both.
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024

    images_path, labels_path, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
    y = read_idx(labels_path)
    n = read_idx(images_path, mmap=True).shape[0]
    clf = MLPClassifier(hidden_layer_sizes=8, batch_size=500, learning_rate_init=1e-4,
                        random_state=0)
    # Whether the engine read each chunk in place: uint8, in the map's memory.
    from mlp_cy import layers
    in_place, current = [], {}

    class Watched(layers.Network):       # the engine the estimator calls
        def train_epoch(self, X, *args):
            in_place.append(X.dtype == np.uint8 and np.shares_memory(X, current["chunk"]))
            return super().train_epoch(X, *args)

    layers.Network = Watched
    before = rss("VmRSS")   # resident now; the imports may have peaked higher
    for start in range(0, n, rows):
        images = read_idx(images_path, mmap=True)
        assert isinstance(images, np.memmap) and images.dtype == np.uint8
        chunk = images[start:start + rows].reshape(-1, 28 * 28)   # a view of the map
        current["chunk"] = chunk
        clf.partial_fit(chunk, y[start:start + rows], classes=np.arange(10))
        del images, chunk, current["chunk"]
    print(json.dumps({"before": before, "after": rss("VmHWM"), "t": int(clf.t_),
                      "dtype": str(clf.coefs_[0].dtype), "in_place": in_place}))
""")


@pytest.mark.skipif(sys.platform == "win32", reason="peak RSS is read the POSIX way")
def test_partial_fit_over_memmapped_chunks_keeps_memory_bounded_by_the_chunk(tmp_path):
    n, rows = 200_000, 5_000
    images_path = tmp_path / "big-images-idx3-ubyte"
    labels_path = tmp_path / "big-labels-idx1-ubyte"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    write_idx(images_path, images)
    del images
    write_idx(labels_path, rng.integers(0, 10, size=n, dtype=np.uint8))
    file_size = images_path.stat().st_size
    assert file_size > 150e6

    result = subprocess.run(
        [sys.executable, "-c", _OUT_OF_CORE_SCRIPT, str(images_path), str(labels_path),
         str(rows)],
        check=False, capture_output=True, text=True, timeout=300,
        # One BLAS thread: on a busy machine, more only wait for each other.
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
             "MKL_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    assert stats["t"] == n                       # every row was trained on
    assert stats["dtype"] == "float64"           # uint8 X trains float64 weights
    # No chunk was copied or converted whole (float32 or float64) before training:
    # the engine read every one in place, uint8, from the map.
    assert stats["in_place"] == [True] * (n // rows)
    growth = stats["after"] - stats["before"]
    # partial_fit reads a uint8 chunk of the map as it is (C-contiguous rows) and
    # converts it batch by batch: measured about 10 MB here, the chunk's pages and a
    # workspace. A chunk converted whole to float64 would be 31 MB (5,000 x 784 x 8
    # B), the whole file 157 MB.
    assert growth < file_size / 4, (
        f"peak RSS grew by {growth / 1e6:.0f} MB while training on a "
        f"{file_size / 1e6:.0f} MB file in chunks of {rows} rows"
    )


# Pickling across processes ----------------------------------------------------------

def _small_problem():
    rng = np.random.default_rng(1)
    X = rng.random((600, 20))
    y = (X[:, :3].sum(axis=1) * 3).astype(int) % 4
    return X, y


def _estimator(**params):
    base = {"hidden_layer_sizes": 16, "activation": "logistic", "solver": "sgd",
            "learning_rate_init": 0.2, "batch_size": 50, "max_iter": 5, "tol": 0,
            "momentum": 0.9, "random_state": 0}
    return MLPClassifier(**{**base, **params})


def test_pickle_in_a_fresh_interpreter_predicts_the_same(tmp_path):
    # Needs no dask: a fitted estimator, pickled here and unpickled by another Python
    # process, predicts exactly the same probabilities there.
    X, y = _small_problem()
    clf = _estimator().fit(X, y)
    np.save(tmp_path / "X.npy", X)
    (tmp_path / "clf.pkl").write_bytes(pickle.dumps(clf))
    code = (
        "import pickle, sys, numpy as np\n"
        "d = sys.argv[1]\n"
        "clf = pickle.load(open(d + '/clf.pkl', 'rb'))\n"
        "np.save(d + '/proba.npy', clf.predict_proba(np.load(d + '/X.npy')))\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=120)
    np.testing.assert_array_equal(np.load(tmp_path / "proba.npy"), clf.predict_proba(X))


# A real cluster ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def client():
    distributed = _importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None,
    )
    client = distributed.Client(cluster)
    try:
        client.wait_for_workers(2, timeout=120)
        # The workers import mlp_cy once here, not inside the first timed test.
        client.run(lambda: __import__("mlp_cy") and None)
        yield client
    finally:
        client.close()
        cluster.close()


@pytest.fixture(scope="module")
def fashion_subset(tmp_path_factory):
    """6,000 training and 2,000 test images, also as an uncompressed IDX file."""
    require_system_fashion_mnist()
    X_train, y_train, X_test, y_test = load_mnist("fashion-mnist", download=False,
                                                  dtype=np.uint8)
    images_path = tmp_path_factory.mktemp("fashion") / "train-images-idx3-ubyte"
    write_idx(images_path, X_train[:6000].reshape(-1, 28, 28))
    return (_scale(X_train[:6000]), y_train[:6000], _scale(X_test[:2000]),
            y_test[:2000], str(images_path))


def _scale(pixels):
    X = pixels.reshape(len(pixels), -1).astype(np.float32)
    X /= 255
    return X


def _single_blas_thread():
    # The workers run BLAS on one thread (dask sets OPENBLAS_NUM_THREADS=1 before it
    # spawns them); the in-memory references here do the same.
    threadpoolctl = importorskip("threadpoolctl")
    return threadpoolctl.threadpool_limits(1)


def test_pickled_estimators_round_trip_through_the_workers(client):
    X, y = _small_problem()
    with _single_blas_thread():
        local = _estimator().fit(X, y)
        continued = pickle.loads(pickle.dumps(local)).partial_fit(X[:300], y[:300])

    # An unfitted estimator travels to a worker, is fitted there and travels back.
    remote = client.submit(lambda est, X, y: est.fit(X, y), _estimator(), X, y,
                           pure=False).result()
    for a, b in zip(remote.coefs_ + remote.intercepts_,
                    local.coefs_ + local.intercepts_):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(remote.predict_proba(X), local.predict_proba(X))

    # A fitted one predicts the same on a worker, in another process.
    pids = client.run(os.getpid)
    remote_pid, proba = client.submit(
        lambda est, X: (os.getpid(), est.predict_proba(X)), local, X, pure=False,
    ).result()
    assert remote_pid in pids.values() and remote_pid != os.getpid()
    np.testing.assert_array_equal(proba, local.predict_proba(X))

    # Its optimiser state (momentum velocities, schedule, step count) travels too:
    # partial_fit continues on the worker exactly as it does here.
    remote = client.submit(lambda est, X, y: est.partial_fit(X, y), local, X[:300],
                           y[:300], pure=False).result()
    for a, b in zip(remote.coefs_, continued.coefs_):
        np.testing.assert_array_equal(a, b)


def _in_memory_partial_fits(estimator, X, y, order, block_rows):
    with _single_blas_thread():
        for i in order:
            rows = slice(i * block_rows, (i + 1) * block_rows)
            estimator.partial_fit(X[rows], y[rows], classes=CLASSES)
    return estimator


@pytest.mark.parametrize("shuffle_blocks", [False, True])
def test_incremental_over_a_dask_array_equals_in_memory_partial_fit(
    client, fashion_subset, shuffle_blocks
):
    dask = _importorskip("dask")
    da = _importorskip("dask.array")
    wrappers = _importorskip("dask_ml.wrappers")
    X, y, X_test, y_test, images_path = fashion_subset
    block_rows, n_blocks = 1000, 6

    # Each block is read by a worker from a memory map of the IDX file and scaled
    # there, as _scale does (a closure: cloudpickle ships it by value to the workers,
    # which cannot import this test module).
    def read_block(start):
        images = read_idx(images_path, mmap=True)
        block = images[start:start + block_rows].reshape(block_rows, -1)
        block = block.astype(np.float32)
        block /= 255
        return block

    X_dask = da.concatenate([
        da.from_delayed(dask.delayed(read_block)(i * block_rows),
                        shape=(block_rows, X.shape[1]), dtype=np.float32)
        for i in range(n_blocks)
    ])
    y_dask = client.persist(da.from_array(y, chunks=block_rows))
    assert X_dask.numblocks == (n_blocks, 1)

    estimator = MLPClassifier(hidden_layer_sizes=32, activation="logistic", solver="sgd",
                              momentum=0.0, alpha=0.0, learning_rate_init=0.1,
                              batch_size=100, random_state=0)
    incremental = wrappers.Incremental(estimator, shuffle_blocks=shuffle_blocks,
                                       random_state=3)
    incremental.fit(X_dask, y_dask, classes=CLASSES)

    # dask-ml visits the blocks in order, or (shuffle_blocks=True) in the order that
    # a RandomState(random_state).shuffle gives; partial_fit gets classes= every time.
    order = list(range(n_blocks))
    if shuffle_blocks:
        np.random.RandomState(3).shuffle(order)
        assert order != list(range(n_blocks))
    reference = _in_memory_partial_fits(
        MLPClassifier(**estimator.get_params()), X, y, order, block_rows
    )
    fitted = incremental.estimator_
    assert fitted.t_ == reference.t_ == len(X)
    for a, b in zip(fitted.coefs_ + fitted.intercepts_,
                    reference.coefs_ + reference.intercepts_):
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a, b)

    # A second pass continues from the first, as a second loop over the blocks does.
    incremental.partial_fit(X_dask, y_dask, classes=CLASSES)
    _in_memory_partial_fits(reference, X, y, order, block_rows)
    for a, b in zip(incremental.estimator_.coefs_, reference.coefs_):
        np.testing.assert_array_equal(a, b)

    # Prediction over a dask array runs block by block on the workers.
    predicted = incremental.predict(da.from_array(X_test, chunks=500)).compute()
    np.testing.assert_array_equal(predicted, reference.predict(X_test))
    assert (predicted == y_test).mean() > 0.5    # 10 classes: chance is 0.1


@pytest.mark.parametrize("search", ["grid", "randomized"])
def test_search_on_the_cluster_matches_the_local_search(client, fashion_subset, search):
    joblib = _importorskip("joblib")
    distributed = _importorskip("distributed")
    model_selection = importorskip("sklearn.model_selection")
    X, y = fashion_subset[0][:3000], fashion_subset[1][:3000]
    estimator = MLPClassifier(hidden_layer_sizes=16, activation="logistic", solver="sgd",
                              momentum=0.0, batch_size=100, max_iter=4, tol=0,
                              random_state=0)
    grid = {"learning_rate_init": [0.02, 0.3], "alpha": [0.0, 1e-2]}
    if search == "grid":
        def make():
            return model_selection.GridSearchCV(estimator, grid, cv=3, n_jobs=-1)
    else:
        def make():
            return model_selection.RandomizedSearchCV(
                estimator, {**grid, "hidden_layer_sizes": [8, 16]}, n_iter=4, cv=3,
                n_jobs=-1, random_state=0,
            )

    with _single_blas_thread():
        local = make().set_params(n_jobs=1).fit(X, y)

    with distributed.get_task_stream(client) as task_stream, \
            joblib.parallel_backend("dask", scatter=[X, y]):
        on_cluster = make().fit(X, y)

    assert on_cluster.best_params_ == local.best_params_
    for key in [k for k in local.cv_results_ if "test_score" in k] + ["params"]:
        assert list(on_cluster.cv_results_[key]) == list(local.cv_results_[key]), key
    # The fits ran on the cluster's workers (joblib's dask backend submits batches of
    # _fit_and_score calls as tasks; the scheduler records where each one ran). Which
    # workers get them is the scheduler's choice: one may take them all.
    fit_workers = {task["worker"] for task in task_stream.data
                   if "fit_and_score" in task["key"]}
    assert fit_workers and fit_workers <= set(client.scheduler_info()["workers"])
