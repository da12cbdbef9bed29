"""mlp_cy on a Dask cluster: out-of-core training with Incremental, and a search.

    python examples/dask_cluster.py                          # a LocalCluster here
    python examples/dask_cluster.py tcp://scheduler:8786 --data-dir /shared/fmnist

Without an address it starts a LocalCluster of 2 worker processes with 1 thread each
on 127.0.0.1 (no dashboard); with one it connects to that scheduler. Needs
``pip install 'mlp_cy[dask]'`` here and on every worker (the same mlp_cy version).

1. Out of core: the Fashion-MNIST training images are decompressed to plain IDX files
   in --data-dir and each block of a dask array is read by a worker from a memory map
   of them (--data-dir must then be the same path on every worker, e.g. a shared file
   system; where the workers do not see it, the blocks are sent from here instead).
   dask-ml's Incremental trains on the blocks one after the other: partial_fit, one
   epoch per block, the model travelling to the worker that holds the next block.
   That is sequential: it bounds memory, it does not make training faster.
2. Search: RandomizedSearchCV under joblib's dask backend spreads its fits over the
   workers; it finishes faster the more workers there are. The scheduler's task
   stream shows where each fit ran.
"""

import argparse
import collections
import gzip
import os
import shutil
import tempfile
import time
import warnings

import numpy as np

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
DEFAULT_SOURCE = "/usr/share/datasets/fashion-mnist"   # Debian's dataset-fashion-mnist


def decompress(source, target):
    """Uncompressed copies of the four IDX files of ``source`` in ``target``."""
    os.makedirs(target, exist_ok=True)
    paths = {}
    for role, name in FILES.items():
        out = os.path.join(target, name)
        if not os.path.isfile(out):
            with gzip.open(os.path.join(source, name + ".gz"), "rb") as f_in, \
                    open(out + ".part", "wb") as f_out:
                shutil.copyfileobj(f_in, f_out, 2**20)
            os.replace(out + ".part", out)
        paths[role] = out
    return paths


def read_block(path, start, stop):
    """Rows start:stop of an IDX image file as float32 in [0, 1] (runs on a worker)."""
    from mlp_cy.datasets import read_idx

    images = read_idx(path, mmap=True)
    X = images[start:stop].reshape(stop - start, -1).astype(np.float32)
    X /= 255
    return X


def image_array(client, path, n, rows, *, on_workers):
    """A dask array of the n images of ``path``, in blocks of ``rows`` rows."""
    import dask
    import dask.array as da

    bounds = [(start, min(start + rows, n)) for start in range(0, n, rows)]
    if on_workers:   # each worker reads its blocks from the file: nothing is sent
        blocks = [dask.delayed(read_block)(path, a, b) for a, b in bounds]
    else:            # read here, sent to the workers once
        blocks = client.scatter([read_block(path, a, b) for a, b in bounds])
    return da.concatenate([da.from_delayed(block, shape=(b - a, 28 * 28),
                                           dtype=np.float32)
                           for block, (a, b) in zip(blocks, bounds)])


def import_mlp_cy():
    import mlp_cy.classifier  # noqa: F401  (scikit-learn and scipy come with it)


def quiet_convergence_warnings():
    # The search's short fits stop at max_iter on purpose; runs here and on the workers.
    warnings.filterwarnings("ignore", message="Stochastic Optimizer: Maximum iterations")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scheduler", nargs="?",
                        help="scheduler address, e.g. tcp://scheduler:8786 "
                             "(default: start a LocalCluster)")
    parser.add_argument("--workers", type=int, default=2,
                        help="LocalCluster worker processes (default: %(default)s)")
    parser.add_argument("--source", default=os.environ.get("MLP_CY_DATA", DEFAULT_SOURCE),
                        help="directory of the gzipped IDX files (default: %(default)s)")
    parser.add_argument("--data-dir", help="where the uncompressed files go, the same "
                                           "path on every worker (default: a temp dir)")
    parser.add_argument("--block-rows", type=int, default=10_000)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--search-rows", type=int, default=10_000)
    args = parser.parse_args(argv)

    import dask.array as da
    import joblib
    from dask.distributed import Client, LocalCluster, get_task_stream
    from dask_ml.wrappers import Incremental
    from sklearn.model_selection import RandomizedSearchCV

    from mlp_cy import MLPClassifier
    from mlp_cy.datasets import read_idx

    if args.scheduler:
        cluster, client = None, Client(args.scheduler)
    else:
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1,
                               processes=True, host="127.0.0.1", dashboard_address=None)
        client = Client(cluster)
    tmp = tempfile.TemporaryDirectory()
    try:
        quiet_convergence_warnings()
        client.run(quiet_convergence_warnings)
        client.run(import_mlp_cy)   # each worker imports it once, before the timings
        workers = client.scheduler_info()["workers"]
        print(f"scheduler {client.scheduler.address}: {len(workers)} workers, "
              f"{sum(w['nthreads'] for w in workers.values())} threads")
        paths = decompress(args.source, args.data_dir or tmp.name)
        size = os.path.getsize(paths["train_images"])
        seen = client.run(lambda p, s: os.path.isfile(p) and os.path.getsize(p) == s,
                          paths["train_images"], size)
        on_workers = all(seen.values())
        print(f"blocks of {args.block_rows} rows "
              + ("read by the workers from memory-mapped "
                 if on_workers else "sent from here (the workers do not see ")
              + paths["train_images"] + ("" if on_workers else ")"))

        # 1. Out-of-core training: partial_fit over the blocks, on the workers.
        y_train = read_idx(paths["train_labels"])
        y_test = read_idx(paths["test_labels"])
        X = image_array(client, paths["train_images"], len(y_train), args.block_rows,
                        on_workers=on_workers)
        X_test = image_array(client, paths["test_images"], len(y_test), args.block_rows,
                             on_workers=on_workers)
        y = client.persist(da.from_array(y_train, chunks=X.chunks[0]))
        incremental = Incremental(
            MLPClassifier(hidden_layer_sizes=128, activation="logistic", solver="sgd",
                          momentum=0.0, alpha=0.0, batch_size=64, learning_rate_init=0.1,
                          random_state=0),
            shuffle_blocks=True,
        )
        start = time.perf_counter()
        for p in range(args.passes):
            # A new block order each pass; partial_fit shuffles the rows in a block.
            incremental.set_params(random_state=p)
            incremental.partial_fit(X, y, classes=np.arange(10))
            accuracy = (incremental.predict(X_test).compute() == y_test).mean()
            print(f"Incremental pass {p + 1}/{args.passes}: test accuracy "
                  f"{accuracy:.4f}, {time.perf_counter() - start:.1f} s")

        # 2. A search whose fits spread over the workers.
        X_small = X[:args.search_rows].compute()
        y_small = y_train[:args.search_rows]
        search = RandomizedSearchCV(
            MLPClassifier(activation="logistic", solver="sgd", momentum=0.0, batch_size=64,
                          max_iter=5, tol=0, random_state=0),
            {"hidden_layer_sizes": [32, 64, 128], "learning_rate_init": [0.03, 0.1, 0.3],
             "alpha": [0.0, 1e-4, 1e-3]},
            n_iter=6, cv=3, n_jobs=-1, random_state=0,
        )
        start = time.perf_counter()
        with get_task_stream(client) as stream, \
                joblib.parallel_backend("dask", scatter=[X_small, y_small]):
            search.fit(X_small, y_small)
        elapsed = time.perf_counter() - start
        pids = client.run(os.getpid)
        ran = collections.Counter(t["worker"] for t in stream.data
                                  if "fit_and_score" in t["key"])
        n_fits = len(search.cv_results_["params"]) * search.n_splits_
        print(f"RandomizedSearchCV: {n_fits} fits and the refit here in {elapsed:.1f} s; "
              f"best {search.best_params_}, cv accuracy {search.best_score_:.4f}")
        for address, n_tasks in sorted(ran.items()):
            print(f"  {n_tasks} fit tasks ran on worker {address} (pid {pids[address]})")
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
        tmp.cleanup()


if __name__ == "__main__":
    main()
