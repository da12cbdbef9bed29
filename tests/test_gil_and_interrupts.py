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


def _watch_epochs(monkeypatch):
    """Wrap the engine's train_epoch (layers.Network's, which the estimator calls):
    each call's work buffer is filled with NaN first, so that a value in it says the
    engine is inside an epoch (returned: it is out)."""
    from mlp_cy import layers

    state = {"work": None, "returned": False}

    class Watched(layers.Network):
        def train_epoch(self, *args):
            work = args[7]
            work.fill(np.nan)
            state["work"] = work
            try:
                return super().train_epoch(*args)
            finally:
                state["returned"] = True

    monkeypatch.setattr(layers, "Network", Watched)
    return state


@pytest.mark.filterwarnings("ignore:Stochastic Optimizer")   # max_iter=1
@pytest.mark.filterwarnings("ignore:Training did not learn")  # random labels
@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_other_python_threads_run_while_an_epoch_trains(solver, monkeypatch):
    # Plain SGD (the textbook network) runs its own engine path; Adam is the default.
    rng = np.random.RandomState(0)
    X = rng.rand(4000, 784).astype(np.float32)
    y = rng.randint(0, 10, len(X))
    plain_sgd = dict(activation="logistic", momentum=0.0, alpha=0.0) if solver == "sgd" else {}
    clf = MLPClassifier(hidden_layer_sizes=256, batch_size=64, max_iter=1, shuffle=False,
                        solver=solver, random_state=0, **plain_sgd)
    epoch = _watch_epochs(monkeypatch)
    trainer = threading.Thread(target=clf.fit, args=(X, y), daemon=True)
    seen_inside = 0
    # No preemption of a thread that holds the GIL: this thread runs only when the
    # trainer gives it up, so seeing the engine mid-epoch proves it released the GIL.
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    try:
        trainer.start()
        while trainer.is_alive():
            work = epoch["work"]
            if work is not None and not epoch["returned"] and not np.isnan(work).all():
                seen_inside += 1             # pure Python, while the engine trains
            time.sleep(0)                    # gives the GIL back (the engine asks for
                                             # it between batches to look at signals)
    finally:
        sys.setswitchinterval(old_interval)
    trainer.join()
    assert epoch["returned"] and clf.n_iter_ == 1
    assert seen_inside > 0, "this thread never ran while the epoch trained"


INTERRUPTED_FIT = textwrap.dedent("""
    import json, os, signal, threading, time
    import numpy as np
    from mlp_cy import MLPClassifier, layers

    rng = np.random.RandomState(0)
    X = rng.rand(20000, 784).astype(np.float32)
    y = rng.randint(0, 10, len(X))
    clf = MLPClassifier(hidden_layer_sizes=512, batch_size=32, max_iter=10000,
                        activation="logistic", solver="sgd", momentum=0.0, alpha=0.0,
                        learning_rate_init=0.01, tol=0, random_state=0)
    # SIGINT once the first epoch's batches run: its work buffer, NaN before the
    # engine starts, then holds the engine's numbers (no fixed sleep that could
    # land before fit).
    started = threading.Event()
    buffers = []

    class Watched(layers.Network):       # the engine the estimator calls
        def train_epoch(self, *args):
            args[7].fill(np.nan)
            buffers.append(args[7])
            started.set()
            return super().train_epoch(*args)

    layers.Network = Watched

    def interrupt():
        started.wait()
        while np.isnan(buffers[0]).all():
            time.sleep(0.001)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    try:
        clf.fit(X, y)
        result = {"interrupted": False}
    except KeyboardInterrupt:
        epochs = len(buffers)
        weights_finite = all(np.isfinite(p).all() for p in clf.coefs_ + clf.intercepts_)
        proba = clf.predict_proba(X[:50])
        t_before = clf.t_
        clf.partial_fit(X[:256], y[:256])        # still usable: keeps training
        result = {"interrupted": True, "epochs": epochs,
                  "finite": bool(weights_finite),
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
    assert result["finite"] and result["proba_ok"]
    # It stopped within the first epoch, between two of its 625 batches of 32 rows
    # (the engine looks at signals every ~10 ms of work, not at the epoch's end);
    # t_ counts the rows of the completed batches.
    assert result["epochs"] == 1, result
    assert 0 < result["t_before"] < result["n_rows"] and result["t_before"] % 32 == 0
    assert result["t_after"] == result["t_before"] + 256
