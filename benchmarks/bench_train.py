#!/usr/bin/env python
"""Per-epoch training and inference timings of mlp_cy against its peers and limits.

Every measurement runs in its own subprocess (``--child``), so that each one has
its own thread settings (threadpoolctl limits + torch.set_num_threads) and its own
peak RSS. The parent only schedules children and prints the report.

    python benchmarks/bench_train.py            # full run: ~15 min on a quiet 2-core machine
    python benchmarks/bench_train.py --quick    # ~1.5 min: 1 thread, 2 configs, 1 round

Peers, same data (Fashion-MNIST train, scaled to [0, 1]), same hyperparameters
(sigmoid hidden layer, softmax, cross-entropy, plain SGD, eta = 0.1, shuffled):

    mlp_cy-f32/f64   MLPClassifier.partial_fit (one epoch, the public API) and
                     network._train_epoch (the engine call that fit makes per epoch)
    mlp_cy-gemm      the same with the zero-skipping products turned off: gemm only
                     (on one BLAS thread the engine skips the zero pixels by itself)
    numpy-f32        the same math in plain numpy: preallocated buffers, np.take
                     gathers, out= matmuls, in-place ufuncs
    sklearn-f32/f64  sklearn.neural_network.MLPClassifier.partial_fit, logistic,
                     sgd, momentum=0, alpha=0
    torch-manual     hand-written step without autograd (index_select, mm, addmm_)
    torch-module     nn.Sequential + F.cross_entropy + autograd + torch.optim.SGD
    torch-compile    the same with torch.compile(dynamic=False) on model + loss

Limits, through scipy.linalg.blas (the library mlp_cy's cython_blas calls use):
large sgemm/dgemm GFLOP/s, FLOPs per epoch n(4dh + 6hK), and the GEMM floor: the
five GEMMs of one training step at the training shapes, each timed alone in a loop,
minus the Python wrapper's per-call cost, times n/b batches.

Timings are reported as the fastest of the rounds; ratios are within this run only.
Nothing here is a test: there is no pass/fail exit status for timings.
"""

import argparse
import contextlib
import gc
import gzip
import json
import math
import os
import platform
import resource
import struct
import subprocess
import sys
import time
import warnings

import numpy as np

DATA_DIR = os.environ.get("MLP_CY_BENCH_DATA", "/usr/share/datasets/fashion-mnist")
N_CLASSES = 10
ETA = 0.1
MARK = "@@RESULT@@ "
CLOCK_CHOICE = ["wall"]


# ---------------------------------------------------------------------------
# Data, memory, threads
# ---------------------------------------------------------------------------

def read_idx_gz(path):
    """uint8 IDX file (gzip) -> ndarray; nothing but gzip, struct and numpy."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(f"{path}: not a uint8 IDX file")
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(split, dtype):
    """(X, y): X C-contiguous `dtype` in [0, 1], y int64; no intermediate float copy."""
    prefix = "train" if split == "train" else "t10k"
    images = read_idx_gz(os.path.join(DATA_DIR, f"{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx_gz(os.path.join(DATA_DIR, f"{prefix}-labels-idx1-ubyte.gz"))
    n = images.shape[0]
    X = np.empty((n, images.shape[1] * images.shape[2]), dtype=dtype)
    np.multiply(images.reshape(n, -1), dtype(1 / 255), out=X)
    return X, labels.astype(np.int64)


def rss_mb():
    """(current RSS, peak RSS since the last reset) of this process, in MiB."""
    cur = peak = None
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    return cur, peak


def reset_peak_rss():
    """Reset VmHWM (and with it getrusage's ru_maxrss); False if the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def maxrss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def blas_info():
    from threadpoolctl import threadpool_info

    out = []
    for lib in threadpool_info():
        out.append({
            "api": lib.get("internal_api"),
            "file": os.path.basename(lib.get("filepath", "")),
            "version": lib.get("version"),
            "threads": lib.get("num_threads"),
            "arch": lib.get("architecture"),
            "layer": lib.get("threading_layer"),
        })
    return out


def glorot(d, h, K, dtype, seed=0):
    rng = np.random.RandomState(seed)
    params = []
    for fan_in, fan_out in ((d, h), (h, K)):
        bound = np.sqrt(2.0 / (fan_in + fan_out))
        params.append(rng.uniform(-bound, bound, (fan_in, fan_out)).astype(dtype))
        params.append(rng.uniform(-bound, bound, fan_out).astype(dtype))
    return params   # W1, b1, W2, b2


def engine_epoch(X, y32, b, params, dtype):
    """f(order) -> loss_sum: one network._train_epoch (plain SGD, eta, no L2) on params.

    The entry point is private and its argument order has changed between engine
    versions, so it is called by keyword: TrainOptions as a dict with an optimiser
    state (newer engines), or activation/learning_rate/alpha (the first one).
    """
    from mlp_cy import network

    W1, b1, W2, b2 = params
    d, h, K = X.shape[1], W1.shape[1], W2.shape[1]
    opts = {"activation": 1, "learning_rate": ETA, "alpha": 0.0, "solver": 0,
            "momentum": 0.0}
    args = dict(X=X, y=y32, W1=W1, b1=b1, W2=W2, b2=b2, sample_weight=None,
                batch_size=b)
    try:
        size = network._train_workspace_size(opts, b, d, h, K)
        args.update(options=opts, stats_out=np.zeros(5), optimizer_state=np.zeros(
            network._optimizer_state_size(opts, d, h, K), dtype))
    except TypeError:
        size = network._train_workspace_size(b, d, h, K)
        args.update(activation=1, learning_rate=ETA, alpha=0.0, stats_out=np.zeros(4))
    args["work"] = np.empty(size, dtype)

    def run(order):
        network._train_epoch(order=order, **args)
        return args["stats_out"][0]
    return run


def orders(n, rounds):
    """One permutation per round (round 0 is the warm-up), shared by the hand-written peers."""
    return [np.random.RandomState(1000 + r).permutation(n).astype(np.intp)
            for r in range(rounds + 1)]


# The clock of every timed loop. Children at 1 thread may use CPU time instead (--clock
# cpu): on a shared machine it leaves out the time the process waits for a core.
_clock = time.perf_counter


def best_time(fn, rounds):
    times = []
    for r in range(rounds):
        gc.collect()
        t = _clock()
        fn(r)
        times.append(_clock() - t)
    return min(times), times


# ---------------------------------------------------------------------------
# Peers: each returns  epoch(order) -> loss_sum  for rows X[order]
# ---------------------------------------------------------------------------

def numpy_trainer(X, y, h, b, dtype):
    d, K = X.shape[1], N_CLASSES
    W1, b1, W2, b2 = glorot(d, h, K, dtype)
    Xb = np.empty((b, d), dtype)
    H = np.empty((b, h), dtype)
    T = np.empty((b, h), dtype)
    dA = np.empty((b, h), dtype)
    Z = np.empty((b, K), dtype)
    dW1 = np.empty((d, h), dtype)
    dW2 = np.empty((h, K), dtype)
    zmax = np.empty((b, 1), dtype)
    zsum = np.empty((b, 1), dtype)
    g1 = np.empty(h, dtype)
    g2 = np.empty(K, dtype)
    rows = np.arange(b)

    def epoch(order):
        loss = 0.0
        n = order.shape[0]
        with np.errstate(over="ignore"):
            for s in range(0, n, b):
                idx = order[s:s + b]
                m = idx.shape[0]
                if m == b:
                    xb, hh, tt, da, z, zm, zs, r = Xb, H, T, dA, Z, zmax, zsum, rows
                else:
                    xb, hh, tt, da, z, zm, zs, r = (Xb[:m], H[:m], T[:m], dA[:m], Z[:m],
                                                    zmax[:m], zsum[:m], rows[:m])
                yb = y[idx]
                np.take(X, idx, axis=0, out=xb, mode="clip")
                # A1 = sigmoid(X W1 + b1)
                np.matmul(xb, W1, out=hh)
                hh += b1
                np.negative(hh, out=hh)
                np.exp(hh, out=hh)
                hh += 1
                np.reciprocal(hh, out=hh)
                # Z2 = A1 W2 + b2 ; dZ2 = eta (softmax(Z2) - Y) / m ; loss from log-softmax
                np.matmul(hh, W2, out=z)
                z += b2
                np.max(z, axis=1, keepdims=True, out=zm)
                z -= zm
                zy = z[r, yb]
                np.exp(z, out=z)
                np.sum(z, axis=1, keepdims=True, out=zs)
                loss += float(np.log(zs).sum() - zy.sum())
                z /= zs
                z[r, yb] -= 1
                z *= dtype(ETA / m)
                # dA1 = dZ2 W2^T (W2 before its update)
                np.matmul(z, W2.T, out=da)
                np.matmul(hh.T, z, out=dW2)
                np.subtract(W2, dW2, out=W2)
                np.sum(z, axis=0, out=g2)
                np.subtract(b2, g2, out=b2)
                # dZ1 = dA1 A1 (1 - A1)
                np.subtract(1, hh, out=tt)
                da *= hh
                da *= tt
                np.sum(da, axis=0, out=g1)
                np.subtract(b1, g1, out=b1)
                np.matmul(xb.T, da, out=dW1)
                np.subtract(W1, dW1, out=W1)
        return loss

    return epoch


def torch_manual_trainer(X, y, h, b, dtype):
    import torch

    d, K = X.shape[1], N_CLASSES
    tdt = torch.float32 if dtype == np.float32 else torch.float64
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    W1, b1, W2, b2 = (torch.from_numpy(p) for p in glorot(d, h, K, dtype))
    Xb = torch.empty((b, d), dtype=tdt)
    H = torch.empty((b, h), dtype=tdt)
    T = torch.empty((b, h), dtype=tdt)
    dA = torch.empty((b, h), dtype=tdt)
    Z = torch.empty((b, K), dtype=tdt)
    rows = torch.arange(b)

    @torch.no_grad()
    def epoch(order):
        order = torch.from_numpy(order)
        n = order.shape[0]
        loss = torch.zeros((), dtype=torch.float64)
        for s in range(0, n, b):
            idx = order[s:s + b]
            m = idx.shape[0]
            if m == b:
                xb, hh, tt, da, z, r = Xb, H, T, dA, Z, rows
            else:
                xb, hh, tt, da, z, r = Xb[:m], H[:m], T[:m], dA[:m], Z[:m], rows[:m]
            yb = yt[idx]
            torch.index_select(Xt, 0, idx, out=xb)
            torch.mm(xb, W1, out=hh)
            hh.add_(b1)
            torch.sigmoid(hh, out=hh)
            torch.mm(hh, W2, out=z)
            z.add_(b2)
            lse = torch.logsumexp(z, 1, keepdim=True)
            loss += (lse.sum() - z[r, yb].sum()).double()
            z.sub_(lse).exp_()
            z[r, yb] -= 1
            z.mul_(ETA / m)
            torch.mm(z, W2.t(), out=da)
            W2.addmm_(hh.t(), z, alpha=-1)
            b2.sub_(z.sum(0))
            torch.sub(1, hh, out=tt)
            da.mul_(hh).mul_(tt)
            b1.sub_(da.sum(0))
            W1.addmm_(xb.t(), da, alpha=-1)
        return float(loss)

    return epoch


def torch_module_trainer(X, y, h, b, dtype, compiled=False):
    import torch
    import torch.nn.functional as F

    d, K = X.shape[1], N_CLASSES
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    model = torch.nn.Sequential(torch.nn.Linear(d, h), torch.nn.Sigmoid(),
                                torch.nn.Linear(h, K))
    W1, b1, W2, b2 = glorot(d, h, K, dtype)
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(W1.T.copy()))
        model[0].bias.copy_(torch.from_numpy(b1))
        model[2].weight.copy_(torch.from_numpy(W2.T.copy()))
        model[2].bias.copy_(torch.from_numpy(b2))
    if dtype == np.float64:
        model = model.double()
    opt = torch.optim.SGD(model.parameters(), lr=ETA, momentum=0.0)

    def loss_fn(xb, yb):
        return F.cross_entropy(model(xb), yb)

    step_loss = torch.compile(loss_fn, dynamic=False) if compiled else loss_fn

    def epoch(order):
        order = torch.from_numpy(order)
        n = order.shape[0]
        total = 0.0
        for s in range(0, n, b):
            idx = order[s:s + b]
            loss = step_loss(Xt[idx], yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * idx.shape[0]
        return total

    return epoch


# ---------------------------------------------------------------------------
# Children
# ---------------------------------------------------------------------------

def set_threads(nt, need_torch, modules=()):
    """Limit every BLAS/OpenMP pool to nt threads (and torch's pool).

    threadpoolctl only sees libraries already loaded, so everything that brings a BLAS
    (scipy's for mlp_cy, numpy's, torch's MKL, sklearn's OpenMP) is imported first.
    """
    import importlib

    import scipy.linalg.blas  # noqa: F401  (scipy's OpenBLAS: the one mlp_cy calls)
    import scipy.linalg.cython_blas  # noqa: F401
    from threadpoolctl import threadpool_limits

    for mod in modules:
        importlib.import_module(mod)

    limiter = threadpool_limits(limits=nt)
    torch_threads = None
    if need_torch:
        import torch

        torch.set_num_threads(nt)
        torch_threads = torch.get_num_threads()
    return limiter, torch_threads


def child_train(spec):
    peer, dtype_name, h, b, nt = (spec["peer"], spec["dtype"], spec["h"], spec["b"],
                                  spec["threads"])
    rows, rounds = spec["rows"], spec["rounds"]
    dtype = np.float32 if dtype_name == "f32" else np.float64
    need_torch = peer.startswith("torch")
    modules = {"mlp_cy": ["mlp_cy.network"], "mlp_cy-gemm": ["mlp_cy.network"],
               "sklearn": ["sklearn.neural_network"]}.get(
        peer, ["torch"] if need_torch else [])
    limiter, torch_threads = set_threads(nt, need_torch, modules)  # noqa: F841 (kept alive)
    warnings.simplefilter("ignore")
    X, y = load("train", dtype)
    Xs, ys = X[:rows], y[:rows]           # views: the subset copies nothing
    # Warm-up rows end on the same short last batch as the timed epochs (torch.compile
    # specialises on shapes).
    warm_rows = min(rows, b * max(1, 4096 // b) + rows % b)
    perms = orders(rows, rounds)
    warm_order = perms[0][:warm_rows]
    res = {"x_mb": X.nbytes / 2**20, "rows": rows, "loadavg": os.getloadavg()[0]}
    t_setup = time.perf_counter()

    if peer in ("mlp_cy", "mlp_cy-gemm"):
        from mlp_cy import MLPClassifier

        if peer == "mlp_cy-gemm":
            from mlp_cy import _blas
            _blas._set_skipzero_mode("never")
        try:                                 # the engine's plan (layers.py "The plan")
            from mlp_cy import layers
            net = layers.Network([np.zeros((X.shape[1], h), X.dtype),
                                  np.zeros((h, 10), X.dtype)],
                                 [np.zeros(h, X.dtype), np.zeros(10, X.dtype)], 1, 0)
            plan = net.plan(X[:max(b, 1)], b, layers.Options(learning_rate=ETA))
            res["skipzero"] = plan["skip_zeros"] or plan["sweep"]
            res["parallel"] = plan["threads"] if plan["threads"] > 1 else 0
        except (ImportError, AttributeError):
            res["skipzero"] = False          # an engine from before the plan
            res["parallel"] = 0

        clf = MLPClassifier(hidden_layer_sizes=(h,), activation="logistic", solver="sgd",
                            momentum=0.0, alpha=0.0, batch_size=b, learning_rate_init=ETA,
                            max_iter=1, random_state=0, shuffle=True, tol=0.0,
                            n_iter_no_change=10**9)
        y32 = ys.astype(np.int32)
        gc.collect()
        base, _ = rss_mb()
        res["maxrss_before_mb"] = maxrss_mb()
        res["hwm_reset"] = reset_peak_rss()
        t = time.perf_counter()
        clf.fit(Xs, ys)                   # first fit: init + one epoch; memory probe
        res["first_fit_s"] = time.perf_counter() - t
        res["fit_peak_above_base_mb"] = rss_mb()[1] - base
        res["fit_maxrss_mb"] = maxrss_mb()
        res["fit_shares_X"] = True        # coefs only; X itself is never stored

        def api(r):
            clf.partial_fit(Xs, ys)       # one shuffled epoch through the public API
        res["api_s"], res["api_all"] = best_time(api, rounds)
        res["loss"] = float(clf.loss_)
        run_engine = engine_epoch(Xs, y32, b, glorot(X.shape[1], h, N_CLASSES, dtype), dtype)

        def engine(r):
            run_engine(perms[r + 1])
        engine(-1)
        res["engine_s"], res["engine_all"] = best_time(engine, rounds)
        res["epoch_s"] = res["api_s"]
    elif peer == "sklearn":
        from sklearn.neural_network import MLPClassifier as SK

        clf = SK(hidden_layer_sizes=(h,), activation="logistic", solver="sgd",
                 momentum=0.0, nesterovs_momentum=False, alpha=0.0, batch_size=b,
                 learning_rate="constant", learning_rate_init=ETA, max_iter=1,
                 shuffle=True, random_state=0, tol=0.0)
        gc.collect()
        base, _ = rss_mb()
        res["maxrss_before_mb"] = maxrss_mb()
        res["hwm_reset"] = reset_peak_rss()
        clf.partial_fit(Xs[:warm_rows], ys[:warm_rows], classes=np.arange(N_CLASSES))
        res["coef_dtype"] = str(clf.coefs_[0].dtype)

        def api(r):
            clf.partial_fit(Xs, ys)
        res["epoch_s"], res["epoch_all"] = best_time(api, rounds)
        res["fit_peak_above_base_mb"] = rss_mb()[1] - base
        res["loss"] = float(clf.loss_)
    else:
        if peer == "numpy":
            epoch = numpy_trainer(Xs, ys, h, b, dtype)
        elif peer == "torch-manual":
            epoch = torch_manual_trainer(Xs, ys, h, b, dtype)
        elif peer == "torch-module":
            epoch = torch_module_trainer(Xs, ys, h, b, dtype)
        elif peer == "torch-compile":
            epoch = torch_module_trainer(Xs, ys, h, b, dtype, compiled=True)
        else:
            raise ValueError(peer)
        gc.collect()
        base, _ = rss_mb()
        res["maxrss_before_mb"] = maxrss_mb()
        res["hwm_reset"] = reset_peak_rss()
        t = time.perf_counter()
        epoch(warm_order)
        res["warmup_s"] = time.perf_counter() - t
        losses = []

        def run(r):
            losses.append(epoch(perms[r + 1]))
        res["epoch_s"], res["epoch_all"] = best_time(run, rounds)
        res["fit_peak_above_base_mb"] = rss_mb()[1] - base
        res["loss"] = losses[-1] / rows
    res["setup_to_end_s"] = time.perf_counter() - t_setup
    res["baseline_rss_mb"] = base
    res["maxrss_mb"] = maxrss_mb()
    res["per60k_s"] = res["epoch_s"] * 60000 / rows
    if "engine_s" in res:
        res["engine_per60k_s"] = res["engine_s"] * 60000 / rows
    res["blas"] = blas_info()
    res["torch_threads"] = torch_threads
    return res


def _gemm_fn(dtype):
    from scipy.linalg import blas

    return blas.sgemm if dtype == np.float32 else blas.dgemm


def rowmajor_gemm(fn, A, B, C, ta=False, tb=False, alpha=1.0, beta=0.0):
    """Row-major C := alpha op(A) op(B) + beta C through the Fortran BLAS, no copies."""
    return fn(alpha, B.T, A.T, beta=beta, c=C.T, trans_a=int(tb), trans_b=int(ta),
              overwrite_c=1)


def time_calls(call, min_time):
    """Best per-call time of `call`, in loops of about min_time seconds, 3 rounds."""
    call()
    n = 1
    while True:
        t = _clock()
        for _ in range(n):
            call()
        dt = _clock() - t
        if dt > min_time / 3 or n > 1 << 20:
            break
        n *= 4
    reps = max(1, int(n * (min_time / 3) / max(dt, 1e-9)))
    best = math.inf
    for _ in range(3):
        t = _clock()
        for _ in range(reps):
            call()
        best = min(best, (_clock() - t) / reps)
    return best


def call_overhead(dtype):
    fn = _gemm_fn(dtype)
    a = np.ones((1, 1), dtype, order="F")
    c = np.zeros((1, 1), dtype, order="F")
    return time_calls(lambda: fn(1.0, a, a, beta=0.0, c=c, overwrite_c=1), 0.2)


def gemm_floor_step(h, b, dtype, d=784, K=N_CLASSES, min_time=0.3, numpy_blas=False):
    """Per-call times of the five GEMMs of one training step (row-major shapes)."""
    fn = _gemm_fn(dtype)
    rng = np.random.RandomState(0)
    r = lambda *s: rng.rand(*s).astype(dtype)   # noqa: E731
    Xb, W1, A1, W2 = r(b, d), r(d, h) * 0.01, r(b, h), r(h, K)
    Z1, Z2, dZ2, dA1, dZ1 = (np.empty((b, h), dtype), np.empty((b, K), dtype), r(b, K),
                             np.empty((b, h), dtype), r(b, h) * 1e-6)
    calls = {
        "Z1=X.W1": lambda: rowmajor_gemm(fn, Xb, W1, Z1),
        "Z2=A1.W2": lambda: rowmajor_gemm(fn, A1, W2, Z2),
        "dA1=dZ2.W2T": lambda: rowmajor_gemm(fn, dZ2, W2, dA1, tb=True),
        "W2-=A1T.dZ2": lambda: rowmajor_gemm(fn, A1, dZ2, W2, ta=True, alpha=-1e-9,
                                             beta=1.0),
        "W1-=XT.dZ1": lambda: rowmajor_gemm(fn, Xb, dZ1, W1, ta=True, alpha=-1e-9,
                                            beta=1.0),
    }
    if numpy_blas:   # numpy's own OpenBLAS build; updates as out= products (beta = 0)
        dW1, dW2 = np.empty_like(W1), np.empty_like(W2)
        calls = {
            "Z1=X.W1": lambda: np.matmul(Xb, W1, out=Z1),
            "Z2=A1.W2": lambda: np.matmul(A1, W2, out=Z2),
            "dA1=dZ2.W2T": lambda: np.matmul(dZ2, W2.T, out=dA1),
            "W2-=A1T.dZ2": lambda: np.matmul(A1.T, dZ2, out=dW2),
            "W1-=XT.dZ1": lambda: np.matmul(Xb.T, dZ1, out=dW1),
        }
    out = rowmajor_gemm(fn, Xb, W1, Z1)
    assert np.shares_memory(out, Z1), "scipy copied the output: the floor would be wrong"
    return {k: time_calls(c, min_time) for k, c in calls.items()}


def child_limits(spec):
    from scipy.linalg import blas

    nt = spec["threads"]
    limiter, _ = set_threads(nt, False)   # noqa: F841
    res = {"threads": nt, "blas": blas_info(), "loadavg": os.getloadavg()[0]}
    N = spec["large_n"]
    for name, dtype, fn in (("sgemm", np.float32, blas.sgemm),
                            ("dgemm", np.float64, blas.dgemm)):
        A = np.asfortranarray(np.random.RandomState(0).rand(N, N).astype(dtype))
        C = np.zeros((N, N), dtype, order="F")
        fn(1.0, A, A, beta=0.0, c=C, overwrite_c=1)
        t, _ = best_time(lambda r: fn(1.0, A, A, beta=0.0, c=C, overwrite_c=1),
                         spec["rounds"])
        res[name + "_gflops"] = 2 * N**3 / t / 1e9
        del A, C
    res["overhead_s"] = {"f32": call_overhead(np.float32), "f64": call_overhead(np.float64)}
    res["floors"] = {}
    for h, b in spec["configs"]:
        for dn, dtype in (("f32", np.float32), ("f64", np.float64)):
            steps = gemm_floor_step(h, b, dtype, min_time=spec["floor_time"])
            ov = res["overhead_s"][dn]
            net = {k: max(v - ov, 0.0) for k, v in steps.items()}
            res["floors"][f"{h},{b},{dn}"] = {
                "per_call_s": steps,
                "epoch_s": sum(net.values()) * 60000 / b,
                "epoch_raw_s": sum(steps.values()) * 60000 / b,
            }
            if dn == "f32":
                steps = gemm_floor_step(h, b, dtype, min_time=spec["floor_time"],
                                        numpy_blas=True)
                res["floors"][f"{h},{b},{dn}"]["numpy_epoch_raw_s"] = (
                    sum(steps.values()) * 60000 / b)
                res["floors"][f"{h},{b},{dn}"]["numpy_per_call_s"] = steps
    return res


def child_infer(spec):
    from mlp_cy import MLPClassifier

    nt = spec["threads"]
    limiter, _ = set_threads(nt, False, ["mlp_cy.network"])   # noqa: F841
    warnings.simplefilter("ignore")
    res = {"threads": nt}
    for dn, dtype in (("f32", np.float32), ("f64", np.float64)):
        Xte, yte = load("test", dtype)
        fn = _gemm_fn(dtype)
        for h in spec["hs"]:
            W1, b1, W2, b2 = glorot(Xte.shape[1], h, N_CLASSES, dtype)
            clf = MLPClassifier(hidden_layer_sizes=(h,), activation="logistic",
                                max_iter=1, batch_size=200,
                                random_state=0).fit(Xte[:400], yte[:400])
            clf.coefs_, clf.intercepts_ = [W1, W2], [b1, b2]
            A1 = np.empty((Xte.shape[0], h), dtype)
            P = np.empty((Xte.shape[0], N_CLASSES), dtype)
            t_pred = time_calls(lambda: clf.predict_proba(Xte), spec["min_time"])
            t_g1 = time_calls(lambda: rowmajor_gemm(fn, Xte, W1, A1), spec["min_time"])
            t_g2 = time_calls(lambda: rowmajor_gemm(fn, A1, W2, P), spec["min_time"])
            res[f"{h},{dn}"] = {"predict_s": t_pred, "gemm1_s": t_g1, "gemm2_s": t_g2,
                                "ratio": t_pred / (t_g1 + t_g2)}
    return res


def run_child_main(spec):
    global _clock
    if spec.get("clock") == "cpu" and spec.get("threads") == 1:
        _clock = time.process_time
    kind = spec["kind"]
    fn = {"train": child_train, "limits": child_limits, "infer": child_infer}[kind]
    res = fn(spec)
    print(MARK + json.dumps(res), flush=True)


# ---------------------------------------------------------------------------
# Parent
# ---------------------------------------------------------------------------

def spawn(spec, timeout, log):
    spec = dict(spec, clock=CLOCK_CHOICE[0])
    t = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, os.path.abspath(__file__), "--child",
                            json.dumps(spec)], capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        log(f"  ! timeout after {timeout}s: {spec}")
        return None
    wall = time.perf_counter() - t
    for line in p.stdout.splitlines():
        if line.startswith(MARK):
            res = json.loads(line[len(MARK):])
            res["wall_s"] = wall
            return res
    err = (p.stderr.strip().splitlines() or ["?"])[-1]
    log(f"  ! child failed ({spec.get('peer', spec['kind'])}): {err}")
    return None


def machine_line():
    import numpy
    import scipy

    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    vers = {"python": platform.python_version(), "numpy": numpy.__version__,
            "scipy": scipy.__version__}
    for mod in ("sklearn", "torch", "threadpoolctl", "mlp_cy"):
        try:
            vers[mod] = __import__(mod).__version__
        except Exception:
            vers[mod] = "absent"
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    line = (f"CPU: {cpu}, {ncpu} cores usable ({os.cpu_count()} online); "
            + ", ".join(f"{k} {v}" for k, v in vers.items()))
    ct = os.environ.get("OPENBLAS_CORETYPE")
    if ct:
        line += f"; OPENBLAS_CORETYPE={ct} (set in the environment, left as is)"
    return line


def fmt_blas(blas):
    parts = []
    for lib in blas:
        if lib["api"] == "openblas" or lib["api"] == "mkl":
            parts.append(f"{lib['file']} {lib['version']} {lib['arch']} "
                         f"{lib['layer']} x{lib['threads']}")
        else:
            parts.append(f"{lib['file']} ({lib['api']}) x{lib['threads']}")
    return "; ".join(parts)


def log_train(log, h, b, nt, peer, dn, res):
    extra = f" engine {res['engine_per60k_s']:.3f}s" if "engine_per60k_s" in res else ""
    extra += " (skips zeros)" if res.get("skipzero") else ""
    extra += f" (own {res['parallel']} threads)" if res.get("parallel") else ""
    log(f"  h={h:<5d} b={b:<4d} t={nt} {peer:14s} {dn}: {res['per60k_s']:.3f}s/60k{extra} "
        f"(rows {res['rows']}, load avg {res['loadavg']:.1f}, child {res['wall_s']:.0f}s)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer configs, 1 round (~2 min)")
    ap.add_argument("--threads", default=None, help="comma list, default 1,2 (quick: 1)")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds (default 3)")
    ap.add_argument("--configs", default=None,
                    help="comma list of HxB, e.g. 256x64,1024x256 (default: all four)")
    ap.add_argument("--peers", default=None,
                    help="comma list among mlp_cy,mlp_cy-gemm,numpy,sklearn,torch-manual,"
                         "torch-module,torch-compile (default: all available)")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: time 1-thread runs by process CPU time (robust to other "
                         "load on a shared machine); 2-thread runs stay on the wall clock")
    ap.add_argument("--json", default=None, help="write all raw results here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        run_child_main(json.loads(args.child))
        return 0

    CLOCK_CHOICE[0] = args.clock
    quick = args.quick
    rounds = args.rounds or (1 if quick else 3)
    threads = [int(t) for t in (args.threads or ("1" if quick else "1,2")).split(",")]
    configs = [(256, 64), (256, 1)] if quick else [(256, 64), (256, 256), (1024, 256),
                                                   (256, 1)]
    if args.configs:
        configs = [tuple(int(v) for v in c.lower().split("x")) for c in args.configs.split(",")]
    try:
        import torch  # noqa: F401
        have_torch = not args.no_torch
    except ImportError:
        have_torch = False
    peers = [("mlp_cy", "f32"), ("mlp_cy", "f64"), ("mlp_cy-gemm", "f32"), ("numpy", "f32"),
             ("sklearn", "f32"), ("sklearn", "f64")]
    if have_torch:
        peers += [("torch-manual", "f32"), ("torch-module", "f32")]
        if not args.no_compile and not quick:
            peers += [("torch-compile", "f32")]
    if args.peers:
        wanted = set(args.peers.split(",")) | {"mlp_cy"}
        peers = [(p, d) for p, d in peers if p in wanted]
    # Rows timed per epoch at b=1 (then scaled to 60,000); minibatch configs use all rows.
    b1_rows = {"mlp_cy": 60000, "mlp_cy-gemm": 60000, "numpy": 10000, "sklearn": 2000 if not quick else 1000,
               "torch-manual": 10000, "torch-module": 3000, "torch-compile": 2000}
    if quick:
        b1_rows.update(mlp_cy=20000, numpy=5000, **{"torch-manual": 5000,
                                                   "torch-module": 2000})

    out_lines = []

    def log(s=""):
        print(s, flush=True)

    def emit(s=""):
        out_lines.append(s)
        print(s, flush=True)

    t_start = time.perf_counter()
    cmd = "python benchmarks/bench_train.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:]
                                                 else "")
    raw = {"machine": machine_line(), "command": cmd, "limits": {}, "train": {},
           "infer": {}}
    log(f"# {raw['machine']}")
    log(f"# {cmd}")
    for nt in threads:
        log(f"limits, {nt} thread(s) ...")
        raw["limits"][nt] = spawn({"kind": "limits", "threads": nt,
                                   "large_n": 2048 if quick else 4096,
                                   "rounds": rounds if not quick else 2,
                                   "configs": configs,
                                   "floor_time": 0.15 if quick else 0.3}, 600, log)
    for h, b in configs:
        for nt in threads:
            for peer, dn in peers:
                rows = b1_rows[peer] if b == 1 else 60000
                spec = {"kind": "train", "peer": peer, "dtype": dn, "h": h, "b": b,
                        "threads": nt, "rows": rows, "rounds": rounds}
                res = spawn(spec, 900, log)
                raw["train"][f"{h},{b},{nt},{peer},{dn}"] = res
                if res:
                    log_train(log, h, b, nt, peer, dn, res)
            # The reference again, after its peers: the faster of the two is kept, so
            # that a burst of load on the shared machine does not flatter the peers.
            spec = {"kind": "train", "peer": "mlp_cy", "dtype": "f32", "h": h, "b": b,
                    "threads": nt, "rows": b1_rows["mlp_cy"] if b == 1 else 60000,
                    "rounds": rounds}
            res = spawn(spec, 900, log)
            if res:
                log_train(log, h, b, nt, "mlp_cy (again)", "f32", res)
                key = f"{h},{b},{nt},mlp_cy,f32"
                old = raw["train"].get(key)
                if old:
                    res["per60k_s"] = min(res["per60k_s"], old["per60k_s"])
                    res["engine_per60k_s"] = min(res["engine_per60k_s"],
                                                 old["engine_per60k_s"])
                    res["fit_peak_above_base_mb"] = max(res["fit_peak_above_base_mb"],
                                                        old["fit_peak_above_base_mb"])
                    res["runs"] = 2
                raw["train"][key] = res
    for nt in threads:
        log(f"inference, {nt} thread(s) ...")
        raw["infer"][nt] = spawn({"kind": "infer", "threads": nt,
                                  "hs": [256] if quick else [256, 1024],
                                  "min_time": 0.3 if quick else 0.6}, 600, log)
    # Drift: the large sgemm again, at the end of the run.
    raw["limits_end"] = spawn({"kind": "limits", "threads": threads[0],
                               "large_n": 2048 if quick else 4096, "rounds": 2,
                               "configs": [], "floor_time": 0.1}, 600, log)
    raw["elapsed_s"] = time.perf_counter() - t_start
    report(raw, configs, threads, peers, emit)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(raw, f, indent=1, default=str)
    return 0


def report(raw, configs, threads, peers, emit):
    emit()
    emit(f"Machine: {raw['machine']}")
    lim0 = next((raw["limits"][nt] for nt in threads if raw["limits"].get(nt)), None)
    if lim0:
        emit(f"BLAS (threadpoolctl, limits child): {fmt_blas(lim0['blas'])}")
    emit(f"Command: `{raw['command']}`; whole run {raw['elapsed_s'] / 60:.1f} min; clock: "
         + ("process CPU time at 1 thread, wall at 2" if CLOCK_CHOICE[0] == "cpu"
            else "wall (time.perf_counter)"))
    emit()
    emit("Limits (scipy.linalg.blas, the BLAS mlp_cy calls):")
    emit()
    emit("| threads | large sgemm GFLOP/s | large dgemm GFLOP/s | wrapper cost/call f32 |")
    emit("|---|---|---|---|")
    for nt in threads:
        L = raw["limits"].get(nt)
        if L:
            emit(f"| {nt} | {L['sgemm_gflops']:.1f} | {L['dgemm_gflops']:.1f} | "
                 f"{L['overhead_s']['f32'] * 1e6:.2f} us |")
    end = raw.get("limits_end")
    if end and raw["limits"].get(threads[0]):
        emit(f"\nDrift: large sgemm at {threads[0]} thread(s) was "
             f"{raw['limits'][threads[0]]['sgemm_gflops']:.1f} GFLOP/s at the start and "
             f"{end['sgemm_gflops']:.1f} at the end of the run.")
    emit()
    emit("Training, seconds per epoch of 60,000 rows (fastest of the rounds); ratio = "
         "peer / mlp_cy-f32 (public API epoch), >1 means mlp_cy is faster.")
    emit("GFLOP/s = n(4dh + 6hK) / time; % peak = of the large sgemm (dgemm for f64) "
         "at the same thread count; x floor = time / GEMM floor of the same dtype.")
    emit("'engine' = network._train_epoch alone (what fit calls once per epoch); rows timed "
         "< 60000: timed on those rows and scaled. The loss column is a sanity check only "
         "(the peers start from different draws and have run different numbers of epochs).")
    for h, b in configs:
        flops = 60000 * (4 * 784 * h + 6 * h * N_CLASSES)
        for nt in threads:
            L = raw["limits"].get(nt) or {}
            fl32 = (L.get("floors") or {}).get(f"{h},{b},f32")
            fl64 = (L.get("floors") or {}).get(f"{h},{b},f64")
            emit()
            head = f"h={h}, b={b}, {nt} thread(s); {flops / 1e9:.1f} GFLOP per epoch"
            if fl32:
                head += (f"; GEMM floor f32 {fl32['epoch_s']:.3f}s, f64 "
                         f"{fl64['epoch_s']:.3f}s (same five products through numpy's "
                         f"OpenBLAS, updates as beta=0: {fl32['numpy_epoch_raw_s']:.3f}s)")
            emit(f"**{head}**")
            emit()
            emit("| peer | s/epoch | ratio | GFLOP/s | % peak | x floor | peak RSS above "
                 "base (MiB) | rows timed | loss, last epoch |")
            emit("|---|---|---|---|---|---|---|---|---|")
            ref = raw["train"].get(f"{h},{b},{nt},mlp_cy,f32")
            ref_t = ref["per60k_s"] if ref else None
            for peer, dn in peers:
                res = raw["train"].get(f"{h},{b},{nt},{peer},{dn}")
                if not res:
                    emit(f"| {peer} {dn} | n/a | | | | | | | |")
                    continue
                peak = L.get("sgemm_gflops" if dn == "f32" else "dgemm_gflops")
                fl = fl32 if dn == "f32" else fl64
                name = f"{peer} {dn}" + (" (skips zeros)" if res.get("skipzero") else "")
                name += f" (own {res['parallel']} threads)" if res.get("parallel") else ""
                rows_list = [(name, res["per60k_s"])]
                if "engine_per60k_s" in res:
                    rows_list.append((f"{name} engine", res["engine_per60k_s"]))
                for name, t in rows_list:
                    g = flops / t / 1e9
                    emit(f"| {name} | {t:.3f} | "
                         f"{(t / ref_t) if ref_t else float('nan'):.2f} | {g:.1f} | "
                         f"{100 * g / peak if peak else float('nan'):.0f}% | "
                         f"{t / fl['epoch_s'] if fl else float('nan'):.2f} | "
                         f"{res['fit_peak_above_base_mb']:.1f} | {res['rows']} | "
                         f"{res.get('loss', float('nan')):.3f} |")
    emit()
    emit("Inference: predict_proba on the 10,000 test rows vs the two forward GEMMs alone "
         "(one call each, all rows).")
    emit()
    emit("| threads | h | dtype | predict_proba ms | 2 GEMMs ms | ratio |")
    emit("|---|---|---|---|---|---|")
    for nt in threads:
        I = raw["infer"].get(nt)
        if not I:
            continue
        for key, v in I.items():
            if key == "threads" or key == "wall_s":
                continue
            h, dn = key.split(",")
            emit(f"| {nt} | {h} | {dn} | {v['predict_s'] * 1e3:.2f} | "
                 f"{(v['gemm1_s'] + v['gemm2_s']) * 1e3:.2f} | {v['ratio']:.2f} |")
    emit()
    threads_line(raw, threads, emit)
    emit()
    targets(raw, configs, threads, peers, emit)


def threads_line(raw, threads, emit):
    emit("Thread counts seen inside the children (threadpoolctl after the limit; torch):")
    seen = set()
    for key, res in raw["train"].items():
        if not res:
            continue
        nt = key.split(",")[2]
        peer = key.split(",")[3]
        tag = (nt, peer.split("-")[0])
        if tag in seen:
            continue
        seen.add(tag)
        libs = ", ".join(f"{lib['file'].split('-')[0]}={lib['threads']}"
                         for lib in res["blas"])
        emit(f"- limit {nt}, {peer}: {libs}"
             + (f", torch.get_num_threads()={res['torch_threads']}"
                if res.get("torch_threads") else ""))


def targets(raw, configs, threads, peers, emit):
    emit("Targets (float32, this run):")
    emit()
    emit("| target | threads | figure | met |")
    emit("|---|---|---|---|")
    T = raw["train"]

    def get(h, b, nt, peer, dn, key="per60k_s"):
        res = T.get(f"{h},{b},{nt},{peer},{dn}")
        return res.get(key) if res else None

    def row(name, nt, fig, ok):
        emit(f"| {name} | {nt} | {fig} | {'met' if ok else 'MISSED'} |")

    for nt in threads:
        L = raw["limits"].get(nt) or {}
        floors = L.get("floors", {})
        if (256, 64) in configs:
            api, eng = get(256, 64, nt, "mlp_cy", "f32"), get(256, 64, nt, "mlp_cy", "f32",
                                                              "engine_per60k_s")
            fl = floors.get("256,64,f32", {}).get("epoch_s")
            if api and fl:
                row("h=256,b=64 epoch <= 1.10x GEMM floor", nt,
                    f"API {api / fl:.2f}x, engine {eng / fl:.2f}x (floor {fl:.3f}s)",
                    api / fl <= 1.10)
            others = [(get(256, 64, nt, p, d), f"{p} {d}") for p, d in peers
                      if not p.startswith("mlp_cy") and get(256, 64, nt, p, d)]
            if api and others:
                best = min(others)
                row("h=256,b=64 >= 1.5x faster than fastest peer", nt,
                    f"{best[0] / api:.2f}x ({best[1]} {best[0]:.3f}s vs {api:.3f}s)",
                    best[0] / api >= 1.5)
            sk = get(256, 64, nt, "sklearn", "f32")
            if api and sk:
                row("h=256,b=64 >= 2.5x faster than sklearn", nt,
                    f"{sk / api:.2f}x (f32; f64 sklearn "
                    f"{(get(256, 64, nt, 'sklearn', 'f64') or float('nan')) / api:.2f}x)",
                    sk / api >= 2.5)
        if (1024, 256) in configs:
            t = get(1024, 256, nt, "mlp_cy", "f32")
            te = get(1024, 256, nt, "mlp_cy", "f32", "engine_per60k_s")
            if t and L.get("sgemm_gflops"):
                fl = 60000 * (4 * 784 * 1024 + 6 * 1024 * N_CLASSES)
                pct, pcte = fl / t / 1e9 / L["sgemm_gflops"], fl / te / 1e9 / L["sgemm_gflops"]
                row("h=1024,b=256 >= 85% of large sgemm", nt,
                    f"API {100 * pct:.0f}%, engine {100 * pcte:.0f}% "
                    f"({fl / t / 1e9:.0f} of {L['sgemm_gflops']:.0f} GFLOP/s)", pct >= 0.85)
        if (256, 1) in configs:
            t = get(256, 1, nt, "mlp_cy", "f32")
            others = [(get(256, 1, nt, p, d), f"{p} {d}") for p, d in peers
                      if not p.startswith("mlp_cy") and get(256, 1, nt, p, d)]
            if t and others:
                best = min(others)
                row("b=1 >= 5x faster than fastest peer", nt,
                    f"{best[0] / t:.2f}x ({best[1]} {best[0]:.2f}s vs {t:.2f}s per 60k)",
                    best[0] / t >= 5)
        I = raw["infer"].get(nt) or {}
        for key, v in I.items():
            if key.endswith(",f32"):
                row(f"predict_proba 10k rows <= 1.2x two GEMMs (h={key.split(',')[0]})", nt,
                    f"{v['ratio']:.2f}x", v["ratio"] <= 1.2)
        for h, b in configs:
            t32, t64 = get(h, b, nt, "mlp_cy", "f32"), get(h, b, nt, "mlp_cy", "f64")
            if t32 and t64:
                row(f"float64 <= 2.2x float32 (h={h},b={b})", nt, f"{t64 / t32:.2f}x",
                    t64 / t32 <= 2.2)
    res = T.get(f"256,64,{threads[0]},mlp_cy,f32")
    if res:
        ok = res["fit_peak_above_base_mb"] < 0.5 * res["x_mb"]
        row("fit copies nothing of X (f32, C-contiguous)", threads[0],
            f"first fit peak RSS +{res['fit_peak_above_base_mb']:.1f} MiB above baseline, "
            f"X is {res['x_mb']:.1f} MiB", ok)


if __name__ == "__main__":
    sys.exit(main())
