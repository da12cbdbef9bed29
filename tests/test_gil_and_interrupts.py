"""Training releases the GIL, and Ctrl-C stops it between two batches."""

import json
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from mlp_cy import MLPClassifier


@pytest.mark.filterwarnings("ignore:Stochastic Optimizer")   # max_iter=1
@pytest.mark.filterwarnings("ignore:Training did not learn")  # random labels
@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_other_python_threads_run_while_an_epoch_trains(solver):
    # Plain SGD (the textbook network) runs its own engine path; Adam is the default.
    rng = np.random.RandomState(0)
    X = rng.rand(20000, 784).astype(np.float32)
    y = rng.randint(0, 10, len(X))
    plain_sgd = dict(activation="logistic", momentum=0.0, alpha=0.0) if solver == "sgd" else {}
    clf = MLPClassifier(hidden_layer_sizes=256, batch_size=64, max_iter=1, shuffle=False,
                        solver=solver, random_state=0, **plain_sgd)
    done = threading.Event()

    def train():
        try:
            clf.fit(X, y)
        finally:
            done.set()

    trainer = threading.Thread(target=train)
    stamps = []
    start = time.perf_counter()
    trainer.start()
    while not done.is_set():           # pure-Python work: needs the GIL to advance
        stamps.append(time.perf_counter())
        sum(range(200))
    trainer.join()
    duration = time.perf_counter() - start
    gaps = np.diff(stamps)
    # Holding the GIL for the epoch would leave one gap as long as the whole fit.
    assert duration > 0.1, "the epoch was too short to tell"
    assert gaps.max() < 0.25 * duration, (gaps.max(), duration)
    assert len(stamps) > 100


INTERRUPTED_FIT = textwrap.dedent("""
    import json, os, signal, threading, time
    import numpy as np
    from mlp_cy import MLPClassifier

    rng = np.random.RandomState(0)
    X = rng.rand(20000, 784).astype(np.float32)
    y = rng.randint(0, 10, len(X))
    clf = MLPClassifier(hidden_layer_sizes=512, batch_size=32, max_iter=10000,
                        activation="logistic", solver="sgd", momentum=0.0, alpha=0.0,
                        learning_rate_init=0.01, tol=0, random_state=0)
    sent = {}

    def interrupt():
        time.sleep(1.0)
        sent["at"] = time.perf_counter()
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    try:
        clf.fit(X, y)
        result = {"interrupted": False}
    except KeyboardInterrupt:
        latency = time.perf_counter() - sent["at"]
        weights_finite = all(np.isfinite(p).all() for p in clf.coefs_ + clf.intercepts_)
        proba = clf.predict_proba(X[:50])
        t_before = clf.t_
        clf.partial_fit(X[:256], y[:256])        # still usable: keeps training
        result = {"interrupted": True, "latency": latency, "finite": bool(weights_finite),
                  "proba_ok": bool(np.allclose(proba.sum(axis=1), 1)),
                  "t_before": t_before, "t_after": clf.t_, "n_rows": len(X)}
    print(json.dumps(result))
""")


def test_ctrl_c_stops_a_long_fit_between_batches():
    out = subprocess.run([sys.executable, "-c", INTERRUPTED_FIT], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["interrupted"], "fit ran to the end: the signal was never seen"
    assert result["latency"] < 1.5, result
    assert result["finite"] and result["proba_ok"]
    # t_ counts the rows of the completed batches (20000 rows are 625 batches of 32).
    assert result["t_before"] > 0 and result["t_before"] % 32 == 0
    assert result["t_after"] == result["t_before"] + 256
