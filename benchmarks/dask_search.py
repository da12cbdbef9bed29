"""Wall time of a GridSearchCV over mlp_cy on a Dask LocalCluster: 1 worker against 2.

    python benchmarks/dask_search.py                      # 1 and 2 workers, 3 repeats
    python benchmarks/dask_search.py --workers 1 2 4 --rows 12000 --repeats 5

Each worker is a process with 1 thread and BLAS limited to 1 thread (the environment
variables below are set before the workers start, and threadpoolctl checks them in
every worker). The same search runs on each cluster after a warm-up (the workers
import mlp_cy and scikit-learn first); the best of the repeats is reported, with the
ratio of the 1-worker time to each other one. On more than one worker the search
runs under joblib's dask backend; on 1 worker it is one task (joblib's dask backend
would run it in this process, as it sees a single thread in the whole cluster). The
fits are independent, so the ideal ratio is the number of workers, less the fits'
imbalance and the scheduling costs, and only as long as the machine has that many
idle cores: the load average, printed before and after, says how busy it was, and
the CPU cores the workers used on average (their CPU time over the wall time) how
much of the machine they got. The
search has refit=False: a refit is one more fit, in the client, after the others.
"""

import argparse
import collections
import os
import shlex
import sys
import time

import numpy as np

BLAS_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def warm_up():
    import warnings

    import sklearn.model_selection  # noqa: F401

    import mlp_cy.classifier  # noqa: F401

    warnings.filterwarnings("ignore", message="Stochastic Optimizer: Maximum iter")


def blas_threads():
    from threadpoolctl import threadpool_info

    return sorted({(p["internal_api"], p["num_threads"]) for p in threadpool_info()})


def make_search(n_jobs):
    from sklearn.model_selection import GridSearchCV

    from mlp_cy import MLPClassifier

    return GridSearchCV(
        MLPClassifier(activation="logistic", solver="sgd", momentum=0.0, batch_size=64,
                      max_iter=10, tol=0, random_state=0),
        {"hidden_layer_sizes": [64, 128], "learning_rate_init": [0.05, 0.2],
         "alpha": [0.0, 1e-3]},
        cv=3, n_jobs=n_jobs, refit=False,   # the fits only: a refit runs in the client
    )


def time_search(n_workers, X, y, repeats):
    import dask
    import joblib
    from dask.distributed import Client, LocalCluster, get_task_stream

    with dask.config.set({"distributed.nanny.pre-spawn-environ": BLAS_ENV}), \
            LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                         host="127.0.0.1", dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(n_workers)
        client.run(warm_up)
        threads = client.run(blas_threads)
        for address, pools in threads.items():
            assert all(n == 1 for _, n in pools), (address, pools)
        times, cores = [], []
        for _ in range(repeats):
            cpu_before = client.run(_cpu_seconds)
            with get_task_stream(client) as stream:
                start = time.perf_counter()
                if n_workers == 1:
                    # joblib's dask backend runs a search in this process when the
                    # cluster has a single thread in all: on 1 worker, the whole
                    # search is one task instead, its fits one after the other.
                    data = client.scatter([X, y])
                    search = client.submit(_search_fit, *data, pure=False).result()
                else:
                    search = make_search(n_jobs=-1)
                    with joblib.parallel_backend("dask", scatter=[X, y]):
                        search.fit(X, y)
                times.append(time.perf_counter() - start)
            cpu_after = client.run(_cpu_seconds)
            cores.append(sum(cpu_after[w] - cpu_before[w] for w in cpu_after) / times[-1])
        ran = collections.Counter(t["worker"] for t in stream.data
                                  if "fit_and_score" in t["key"] or
                                  "_search_fit" in t["key"])
        best = int(np.argmin(times))
        return (times, search, sorted(ran.values()), next(iter(threads.values())),
                cores[best])


def _cpu_seconds():
    user, system = os.times()[:2]
    return user + system


def _search_fit(X, y):
    return make_search(n_jobs=1).fit(X, y)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rows", type=int, default=10_000,
                        help="Fashion-MNIST training rows searched over")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import warnings

    from mlp_cy.datasets import load_mnist

    warnings.filterwarnings("ignore", message="Stochastic Optimizer: Maximum iterations")
    X, y, _, _ = load_mnist("fashion-mnist", download=False)
    X, y = X[:args.rows], y[:args.rows]
    search = make_search(n_jobs=1)
    n_fits = search.cv
    n_candidates = int(np.prod([len(v) for v in search.param_grid.values()]))
    print("command: " + " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv))
    print(f"search: GridSearchCV, {n_candidates} candidates x {n_fits} folds = "
          f"{n_candidates * n_fits} fits of MLPClassifier(max_iter=10, batch_size=64) "
          f"on {len(y)} rows; {os.cpu_count()} CPUs; worker env {BLAS_ENV}")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    best, results = {}, {}
    for n_workers in args.workers:
        times, search, spread, threads, cores = time_search(n_workers, X, y,
                                                           args.repeats)
        best[n_workers] = min(times)
        results[n_workers] = search
        print(f"{n_workers} worker(s) x 1 thread: best {min(times):.2f} s of "
              f"{', '.join(f'{t:.2f}' for t in times)}; tasks per worker {spread}; "
              f"BLAS {threads}; the workers used {cores:.2f} CPU cores on average "
              f"in the best run", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    base = args.workers[0]
    for n_workers in args.workers[1:]:
        print(f"ratio {base} worker(s) / {n_workers} workers: "
              f"{best[base] / best[n_workers]:.2f}")
    first = results[base]
    same = all(r.best_params_ == first.best_params_ and np.array_equal(
        r.cv_results_["mean_test_score"], first.cv_results_["mean_test_score"])
        for r in results.values())
    print(f"same best_params_ and cv scores on every cluster: {same} "
          f"({first.best_params_}, {first.best_score_:.4f})")


if __name__ == "__main__":
    main()
