#!/usr/bin/env python
"""scikit-learn's defaults at depth, the regressor, lbfgs and sparse input (issues 16, 17).

Every measurement runs in its own subprocess (``--child``) with its own thread limits
(threadpoolctl after every BLAS/OpenMP library is loaded, plus torch.set_num_threads),
as in bench_train.py. Times are the fastest of the rounds; ratios are within this run.
Nothing here is a test: there is no pass/fail exit status for timings.

    python benchmarks/bench_sklearn.py --baseline-ref 9748dae       # everything, 2 threads
    python benchmarks/bench_sklearn.py --only depth --threads 1,2   # one table, 1 and 2 threads
    python benchmarks/bench_sklearn.py --quick                      # smoke run, ~3-5 min

Tables:

depth (issue 16)  Fashion-MNIST train (60,000 x 784 float32 in [0, 1]), scikit-learn's
                  MLPClassifier defaults (relu, adam, batch 200, alpha 1e-4,
                  learning_rate_init 1e-3) at hidden_layer_sizes (100,), (256, 128) and
                  (512, 256, 128); seconds per epoch (partial_fit on all rows) of
                    mlp_cy        mlp_cy.MLPClassifier.partial_fit
                    sklearn       sklearn.neural_network.MLPClassifier.partial_fit
                    numpy         the same math in NumPy: preallocated buffers, np.take
                                  gathers, out= matmuls, in-place Adam
                    torch-manual  the same math in torch without autograd (mm(out=),
                                  addmm_, in-place Adam)
                    torch-module  nn.Sequential + F.cross_entropy + alpha/(2m) sum W^2
                                  added to the loss + autograd + torch.optim.Adam
seed (issue 16)   the seed configuration (one logistic layer of 256, batch 64, plain SGD,
                  eta 0.1, alpha 0) in the installed mlp_cy against --baseline-ref, built
                  into a temporary directory; children alternate A/B in the same run
lbfgs (issue 17)  solver="lbfgs" on 10,000 Fashion-MNIST rows, hidden (100,), both
                  capped at the same max_fun; seconds per function evaluation
regressor         MLPRegressor at scikit-learn's defaults on make_regression (20,000 x 200,
                  float32, standardised target); seconds per epoch
sparse            a TF-IDF-like CSR matrix (20,000 x 50,000, 0.5% non-zeros, float32, rows
                  L2-normalised, 20 classes), hidden (256,), default adam, the same CSR
                  matrix to both; seconds per epoch

A row that the installed mlp_cy cannot run (an estimator, solver, depth or input it
does not have yet) is reported as "not available at this commit" with its error.
"""

import argparse
import contextlib
import gc
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_train import blas_info, fmt_blas, load, machine_line, set_threads  # noqa: E402

MARK = "@@RESULT@@ "
N_CLASSES = 10
DEPTH_CONFIGS = [(100,), (256, 128), (512, 256, 128)]
DEPTH_PEERS = ["mlp_cy", "sklearn", "numpy", "torch-manual", "torch-module"]
ALPHA, LR, BATCH, BETA1, BETA2, EPS = 1e-4, 1e-3, 200, 0.9, 0.999, 1e-8
_clock = time.perf_counter


def best_time(fn, rounds):
    times = []
    for r in range(rounds):
        gc.collect()
        t = _clock()
        fn(r)
        times.append(_clock() - t)
    return min(times), times


def unavailable(exc):
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0] if msg else ''}"[:160]


def sk_init(layers, dtype, seed=0, activation="relu"):
    """scikit-learn's Glorot-uniform initialisation (factor 6, 2 for logistic)."""
    rng = np.random.RandomState(seed)
    Ws, bs = [], []
    for fan_in, fan_out in zip(layers[:-1], layers[1:]):
        factor = 2.0 if activation == "logistic" else 6.0
        bound = np.sqrt(factor / (fan_in + fan_out))
        Ws.append(rng.uniform(-bound, bound, (fan_in, fan_out)).astype(dtype))
        bs.append(rng.uniform(-bound, bound, fan_out).astype(dtype))
    return Ws, bs


# ---------------------------------------------------------------------------
# Hand-written peers: relu hidden layers, softmax, cross-entropy, L2 alpha/(2m) sum W^2,
# Adam as scikit-learn's (lr_t = lr sqrt(1 - b2^t) / (1 - b1^t), m / (sqrt(v) + eps)).
# Each returns epoch(order) -> mean loss.
# ---------------------------------------------------------------------------

def numpy_adam_trainer(X, y, sizes, b, dtype=np.float32):
    d = X.shape[1]
    layers = [d, *sizes, N_CLASSES]
    L = len(layers) - 1
    Ws, bs = sk_init(layers, dtype)
    params = Ws + bs
    grads = [np.empty_like(p) for p in params]
    gW, gb = grads[:L], grads[L:]
    ms = [np.zeros_like(p) for p in params]
    vs = [np.zeros_like(p) for p in params]
    tmps = [np.empty_like(p) for p in params]
    A = [np.empty((b, u), dtype) for u in layers]          # A[0] = the gathered batch
    D = [np.empty((b, u), dtype) for u in layers[1:]]      # deltas of layers 1..L
    masks = [np.empty((b, u), bool) for u in layers[1:-1]]
    zmax = np.empty((b, 1), dtype)
    zsum = np.empty((b, 1), dtype)
    rows = np.arange(b)
    state = {"t": 0}

    def epoch(order):
        n = order.shape[0]
        loss = 0.0
        for s in range(0, n, b):
            idx = order[s:s + b]
            m = idx.shape[0]
            a = [x[:m] for x in A]
            dl = [x[:m] for x in D]
            mk = [x[:m] for x in masks]
            zm, zs, r = zmax[:m], zsum[:m], rows[:m]
            yb = y[idx]
            np.take(X, idx, axis=0, out=a[0], mode="clip")
            for i in range(L):
                np.matmul(a[i], Ws[i], out=a[i + 1])
                a[i + 1] += bs[i]
                if i < L - 1:
                    np.maximum(a[i + 1], 0, out=a[i + 1])
            z = a[L]
            np.max(z, axis=1, keepdims=True, out=zm)
            z -= zm
            np.exp(z, out=z)
            np.sum(z, axis=1, keepdims=True, out=zs)
            z /= zs
            pz = z[r, yb]
            loss_b = -float(np.log(np.maximum(pz, 1e-10)).sum()) / m
            loss_b += 0.5 * ALPHA * sum(float(np.vdot(W, W)) for W in Ws) / m
            loss += loss_b * m
            # delta_L = (P - Y) / m ; grads of W include (alpha / m) W
            np.copyto(dl[L - 1], z)
            dl[L - 1][r, yb] -= 1
            dl[L - 1] *= dtype(1 / m)
            for i in range(L - 1, -1, -1):
                np.matmul(a[i].T, dl[i], out=gW[i])
                np.multiply(Ws[i], dtype(ALPHA / m), out=tmps[i])
                gW[i] += tmps[i]
                np.sum(dl[i], axis=0, out=gb[i])
                if i > 0:
                    np.matmul(dl[i], Ws[i].T, out=dl[i - 1])
                    np.less_equal(a[i], 0, out=mk[i - 1])
                    np.copyto(dl[i - 1], 0, where=mk[i - 1])
            state["t"] += 1
            t = state["t"]
            lr_t = dtype(LR * math.sqrt(1 - BETA2 ** t) / (1 - BETA1 ** t))
            for p, g, m_, v_, tmp in zip(params, grads, ms, vs, tmps):
                m_ *= dtype(BETA1)
                np.multiply(g, dtype(1 - BETA1), out=tmp)
                m_ += tmp
                v_ *= dtype(BETA2)
                np.multiply(g, g, out=tmp)
                tmp *= dtype(1 - BETA2)
                v_ += tmp
                np.sqrt(v_, out=tmp)
                tmp += dtype(EPS)
                np.divide(m_, tmp, out=tmp)
                tmp *= lr_t
                p -= tmp
        return loss / n

    return epoch


def torch_manual_trainer(X, y, sizes, b):
    import torch

    d = X.shape[1]
    layers = [d, *sizes, N_CLASSES]
    L = len(layers) - 1
    Ws, bs = sk_init(layers, np.float32)
    Ws = [torch.from_numpy(W) for W in Ws]
    bs = [torch.from_numpy(v) for v in bs]
    params = Ws + bs
    grads = [torch.empty_like(p) for p in params]
    gW, gb = grads[:L], grads[L:]
    ms = [torch.zeros_like(p) for p in params]
    vs = [torch.zeros_like(p) for p in params]
    tmps = [torch.empty_like(p) for p in params]
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    A = [torch.empty((b, u)) for u in layers]
    D = [torch.empty((b, u)) for u in layers[1:]]
    rows = torch.arange(b)
    state = {"t": 0}

    @torch.no_grad()
    def epoch(order):
        order = torch.from_numpy(order)
        n = order.shape[0]
        loss = torch.zeros((), dtype=torch.float64)
        for s in range(0, n, b):
            idx = order[s:s + b]
            m = idx.shape[0]
            a = [x[:m] for x in A]
            dl = [x[:m] for x in D]
            r = rows[:m]
            yb = yt[idx]
            torch.index_select(Xt, 0, idx, out=a[0])
            for i in range(L):
                torch.addmm(bs[i], a[i], Ws[i], out=a[i + 1])
                if i < L - 1:
                    a[i + 1].clamp_min_(0)
            z = a[L]
            torch.softmax(z, 1, out=dl[L - 1])
            pz = dl[L - 1][r, yb]
            l2 = sum(torch.dot(W.view(-1), W.view(-1)) for W in Ws)
            loss += (-pz.clamp_min(1e-10).log().sum() + 0.5 * ALPHA * l2).double()
            dl[L - 1][r, yb] -= 1
            dl[L - 1].mul_(1 / m)
            for i in range(L - 1, -1, -1):
                torch.addmm(Ws[i], a[i].t(), dl[i], beta=ALPHA / m, out=gW[i])
                torch.sum(dl[i], 0, out=gb[i])
                if i > 0:
                    torch.mm(dl[i], Ws[i].t(), out=dl[i - 1])
                    dl[i - 1].masked_fill_(a[i] <= 0, 0)
            state["t"] += 1
            t = state["t"]
            lr_t = LR * math.sqrt(1 - BETA2 ** t) / (1 - BETA1 ** t)
            for p, g, m_, v_, tmp in zip(params, grads, ms, vs, tmps):
                m_.mul_(BETA1).add_(g, alpha=1 - BETA1)
                v_.mul_(BETA2).addcmul_(g, g, value=1 - BETA2)
                torch.sqrt(v_, out=tmp).add_(EPS)
                p.addcdiv_(m_, tmp, value=-lr_t)
        return float(loss) / n

    return epoch


def torch_module_trainer(X, y, sizes, b):
    import torch
    import torch.nn.functional as F

    d = X.shape[1]
    layers = [d, *sizes, N_CLASSES]
    Ws, bs = sk_init(layers, np.float32)
    mods = []
    for i, (W, v) in enumerate(zip(Ws, bs)):
        lin = torch.nn.Linear(W.shape[0], W.shape[1])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W.T.copy()))
            lin.bias.copy_(torch.from_numpy(v))
        mods.append(lin)
        if i < len(Ws) - 1:
            mods.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*mods)
    weights = [m.weight for m in model if isinstance(m, torch.nn.Linear)]
    opt = torch.optim.Adam(model.parameters(), lr=LR, betas=(BETA1, BETA2), eps=EPS)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)

    def epoch(order):
        order = torch.from_numpy(order)
        n = order.shape[0]
        total = 0.0
        for s in range(0, n, b):
            idx = order[s:s + b]
            m = idx.shape[0]
            loss = F.cross_entropy(model(Xt[idx]), yt[idx])
            loss = loss + (0.5 * ALPHA / m) * sum((W * W).sum() for W in weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * m
        return total / n

    return epoch


# ---------------------------------------------------------------------------
# Data for table B
# ---------------------------------------------------------------------------

def regression_data(n=20000, d=200):
    from sklearn.datasets import make_regression

    X, y = make_regression(n_samples=n, n_features=d, n_informative=50, noise=1.0,
                           random_state=0)
    y = (y - y.mean()) / y.std()
    return np.ascontiguousarray(X, np.float32), y.astype(np.float32)


def sparse_data(n=20000, d=50000, density=0.005, k=20, seed=0):
    """TF-IDF-like CSR: exactly round(d * density) non-zeros per row at uniformly drawn
    columns, log-normal values, rows L2-normalised; labels from a random linear map."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    per_row = int(round(d * density))
    indices = np.empty(n * per_row, np.int32)
    for i in range(n):
        indices[i * per_row:(i + 1) * per_row] = np.sort(
            rng.choice(d, per_row, replace=False))
    data = rng.lognormal(0.0, 1.0, n * per_row).astype(np.float32)
    data = data.reshape(n, per_row)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    indptr = np.arange(0, n * per_row + 1, per_row, dtype=np.int32)
    X = sp.csr_matrix((data.ravel(), indices, indptr), shape=(n, d))
    R = rng.standard_normal((d, k)).astype(np.float32)
    scores = X @ R + 0.1 * rng.standard_normal((n, k)).astype(np.float32)
    return X, np.asarray(scores.argmax(1), np.int64)


# ---------------------------------------------------------------------------
# lbfgs: count the function evaluations of scipy's L-BFGS-B, whoever calls it
# ---------------------------------------------------------------------------

_NFEV = []


def patch_lbfgsb_counter():
    import scipy.optimize._lbfgsb_py as lb
    import scipy.optimize._minimize as mz

    orig = lb._minimize_lbfgsb

    def counted(*args, **kwargs):
        res = orig(*args, **kwargs)
        _NFEV.append(int(res.nfev))
        return res
    lb._minimize_lbfgsb = counted
    mz._minimize_lbfgsb = counted


# ---------------------------------------------------------------------------
# Children
# ---------------------------------------------------------------------------

def estimator(peer, kind, **params):
    if peer == "sklearn":
        from sklearn import neural_network as mod
    else:
        import mlp_cy as mod
    cls = getattr(mod, "MLPRegressor" if kind == "reg" else "MLPClassifier")
    return cls(**params)


def time_partial_fit(res, clf, X, y, rounds, warm_rows, classes):
    """Warm-up partial_fit on the first rows (initialisation), then full epochs."""
    if classes is not None:
        clf.partial_fit(X[:warm_rows], y[:warm_rows], classes=classes)
    else:
        clf.partial_fit(X[:warm_rows], y[:warm_rows])

    def epoch(r):
        clf.partial_fit(X, y)
    res["epoch_s"], res["all_s"] = best_time(epoch, rounds)
    res["loss"] = float(clf.loss_)


def child(spec):
    global _clock
    kind, peer, nt, rounds = spec["kind"], spec["peer"], spec["threads"], spec["rounds"]
    need_torch = peer.startswith("torch")
    modules = {"mlp_cy": ["mlp_cy", "mlp_cy.network"],
               "sklearn": ["sklearn.neural_network"]}.get(peer, ["torch"] if need_torch
                                                          else [])
    if kind in ("reg", "sparse"):
        modules = modules + ["scipy.sparse", "sklearn.datasets"]
    limiter, torch_threads = set_threads(nt, need_torch, modules)  # noqa: F841 (kept alive)
    warnings.simplefilter("ignore")
    res = {"loadavg": os.getloadavg()[0], "torch_threads": torch_threads}
    if peer == "mlp_cy":
        import mlp_cy
        res["mlp_cy_version"] = getattr(mlp_cy, "__version__", "?")
        res["mlp_cy_from"] = ("baseline build" if spec.get("pythonpath") else "installed")
        if spec.get("pythonpath") and not os.path.abspath(mlp_cy.__file__).startswith(
                os.path.abspath(spec["pythonpath"])):
            raise RuntimeError("the baseline child imported the installed mlp_cy")
    t0 = time.perf_counter()

    if kind in ("depth", "seed"):
        X, y = load("train", np.float32)
        rows = spec.get("rows") or X.shape[0]
        X, y = X[:rows], y[:rows]
        res["rows"] = rows
        if kind == "depth":
            sizes = tuple(spec["sizes"])
            params = dict(hidden_layer_sizes=sizes, random_state=0)
            b = BATCH
        else:
            sizes = (256,)
            b = 64
            params = dict(hidden_layer_sizes=sizes, activation="logistic", solver="sgd",
                          momentum=0.0, alpha=0.0, batch_size=b, learning_rate_init=0.1,
                          random_state=0)
        warm_rows = min(rows, 2000)
        if peer in ("mlp_cy", "sklearn"):
            try:
                clf = estimator(peer, "clf", **params)
                clf.partial_fit(X[:b * 2], y[:b * 2], classes=np.arange(N_CLASSES))
            except Exception as e:       # a depth this mlp_cy does not have
                res["unavailable"] = unavailable(e)
                return res
            time_partial_fit(res, clf, X, y, rounds, warm_rows, None)
        else:
            order = [np.random.RandomState(1000 + r).permutation(rows).astype(np.intp)
                     for r in range(rounds + 1)]
            fn = {"numpy": numpy_adam_trainer, "torch-manual": torch_manual_trainer,
                  "torch-module": torch_module_trainer}[peer]
            epoch = fn(X, y, sizes, b)
            epoch(order[0][:warm_rows])
            losses = []
            res["epoch_s"], res["all_s"] = best_time(
                lambda r: losses.append(epoch(order[r + 1])), rounds)
            res["loss"] = losses[-1]
        res["per60k_s"] = res["epoch_s"] * 60000 / rows

    elif kind == "lbfgs":
        X, y = load("train", np.float32)
        X, y = X[:spec["rows"]], y[:spec["rows"]]
        patch_lbfgsb_counter()
        max_fun = spec["max_fun"]
        params = dict(hidden_layer_sizes=(100,), solver="lbfgs", max_iter=100000,
                      max_fun=max_fun, tol=0.0, random_state=0)
        try:
            estimator(peer, "clf", **dict(params, max_fun=5)).fit(X[:2000], y[:2000])
        except Exception as e:
            res["unavailable"] = unavailable(e)
            return res
        fits = []

        def fit(r):
            _NFEV.clear()
            clf = estimator(peer, "clf", **params)
            t = _clock()
            clf.fit(X, y)
            dt = _clock() - t
            nfev = _NFEV[-1] if _NFEV else None
            for attr in ("n_fun_", "n_fev_", "nfev_"):   # an engine of its own
                if nfev is None and hasattr(clf, attr):
                    nfev = int(getattr(clf, attr))
            fits.append({"s": dt, "nfev": nfev, "counted": bool(_NFEV),
                         "n_iter": int(clf.n_iter_), "loss": float(clf.loss_)})
        for r in range(rounds):
            gc.collect()
            fit(r)
        for f in fits:
            f["per_eval_s"] = f["s"] / (f["nfev"] or max_fun)
        best = min(fits, key=lambda f: f["per_eval_s"])
        res.update(best, fits=fits, rows=spec["rows"], max_fun=max_fun)

    elif kind in ("reg", "sparse"):
        if kind == "reg":
            X, y = regression_data()
            params = dict(random_state=0)
            classes = None
        else:
            X, y = sparse_data()
            params = dict(hidden_layer_sizes=(256,), random_state=0)
            classes = np.arange(20)
            res["nnz"] = int(X.nnz)
            res["density"] = X.nnz / (X.shape[0] * X.shape[1])
        res["shape"] = list(X.shape)
        res["data_s"] = time.perf_counter() - t0
        try:
            clf = estimator(peer, kind, **params)
            if classes is not None:
                clf.partial_fit(X[:400], y[:400], classes=classes)
            else:
                clf.partial_fit(X[:400], y[:400])
        except Exception as e:            # no MLPRegressor / no sparse input here
            res["unavailable"] = unavailable(e)
            return res
        time_partial_fit(res, clf, X, y, rounds, 2000, None)
    else:
        raise ValueError(kind)
    res["blas"] = blas_info()
    res["setup_to_end_s"] = time.perf_counter() - t0
    return res


def run_child_main(spec):
    res = child(spec)
    print(MARK + json.dumps(res), flush=True)


# ---------------------------------------------------------------------------
# Parent
# ---------------------------------------------------------------------------

def spawn(spec, timeout, log):
    env = dict(os.environ)
    if spec.get("pythonpath"):
        env["PYTHONPATH"] = spec["pythonpath"] + (
            os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    t = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, os.path.abspath(__file__), "--child",
                            json.dumps(spec)], capture_output=True, text=True,
                           timeout=timeout, env=env, cwd=tempfile.gettempdir())
    except subprocess.TimeoutExpired:
        log(f"  ! timeout after {timeout}s: {spec['kind']} {spec['peer']}")
        return {"failed": f"timeout after {timeout}s"}
    wall = time.perf_counter() - t
    for line in p.stdout.splitlines():
        if line.startswith(MARK):
            res = json.loads(line[len(MARK):])
            res["wall_s"] = wall
            return res
    err = (p.stderr.strip().splitlines() or ["?"])[-1]
    log(f"  ! child failed ({spec['kind']} {spec['peer']}): {err}")
    return {"failed": err[:160]}


def git(*args, cwd=HERE):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def build_ref(ref, build_root, log):
    """Build mlp_cy at git `ref` into build_root/mlp_cy-<sha>/site (pip --target, no
    deps, no build isolation: the venv's Cython, setuptools, numpy and scipy); reused
    when it is already there. Returns (sha, the directory to put on PYTHONPATH)."""
    sha = git("rev-parse", "--verify", f"{ref}^{{commit}}")
    dest = os.path.join(build_root, f"mlp_cy-{sha[:12]}")
    site = os.path.join(dest, "site")
    if os.path.exists(os.path.join(dest, "BUILT")):
        log(f"baseline {ref} ({sha[:9]}): reusing the build in {dest}")
        return sha, site
    shutil.rmtree(dest, ignore_errors=True)
    tree = os.path.join(dest, "tree")
    os.makedirs(tree)
    log(f"baseline {ref} ({sha[:9]}): building into {dest} ...")
    top = git("rev-parse", "--show-toplevel")     # git archive in a subdirectory
    archive = subprocess.run(["git", "archive", "--format=tar", sha], cwd=top,   # keeps
                             check=True, capture_output=True).stdout            # only it
    tar_path = os.path.join(dest, "tree.tar")
    with open(tar_path, "wb") as f:
        f.write(archive)
    with tarfile.open(tar_path) as tf:
        tf.extractall(tree, filter="data")
    os.unlink(tar_path)
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                        "--no-build-isolation", "--target", site, tree],
                       capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"building {ref} failed:\n{p.stderr[-3000:]}")
    shutil.rmtree(tree, ignore_errors=True)
    with open(os.path.join(dest, "BUILT"), "w") as f:
        f.write(sha + "\n")
    log(f"  built in {time.perf_counter() - t:.0f}s")
    return sha, site


def fmt_s(res, key="per60k_s"):
    if not res:
        return "-"
    if "unavailable" in res:
        return "n/a"
    if "failed" in res:
        return "failed"
    return f"{res[key]:.3f}"


def ok(res):
    return bool(res) and "unavailable" not in res and "failed" not in res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="2", help="comma list (default 2)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="timed epochs / fits per child (default 3; lbfgs 2)")
    ap.add_argument("--only", default="depth,seed,lbfgs,regressor,sparse",
                    help="comma list among depth,seed,lbfgs,regressor,sparse")
    ap.add_argument("--peers", default=",".join(DEPTH_PEERS),
                    help="depth table: comma list among " + ",".join(DEPTH_PEERS))
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--baseline-ref", default=None,
                    help="git ref of mlp_cy for the seed A/B (e.g. 9748dae); without it "
                         "the seed table shows the installed mlp_cy alone")
    ap.add_argument("--build-dir", default=None,
                    help="where baseline builds go (default: the system temp dir)")
    ap.add_argument("--pairs", type=int, default=4, help="A/B child pairs per thread count")
    ap.add_argument("--repeats", type=int, default=2,
                    help="depth table: children per peer, in alternating rounds (default 2)")
    ap.add_argument("--max-fun", type=int, default=100, help="lbfgs: max_fun of both")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 12,000 rows in the depth table, 1 round, 1 A/B pair")
    ap.add_argument("--json", default=None, help="write all raw results here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        run_child_main(json.loads(args.child))
        return 0

    threads = [int(t) for t in args.threads.split(",")]
    only = set(args.only.split(","))
    rounds = args.rounds or (1 if args.quick else 3)
    lbfgs_rounds = args.rounds or (1 if args.quick else 2)
    rows = 12000 if args.quick else None
    pairs = 1 if args.quick else args.pairs
    repeats = 1 if args.quick else max(1, args.repeats)
    try:
        import torch  # noqa: F401
        have_torch = not args.no_torch
    except ImportError:
        have_torch = False
    peers = [p for p in args.peers.split(",") if have_torch or not p.startswith("torch")]
    if "mlp_cy" not in peers:
        peers.insert(0, "mlp_cy")

    def log(s=""):
        print(s, flush=True)

    out = []

    def emit(s=""):
        out.append(s)
        print(s, flush=True)

    t_start = time.perf_counter()
    cmd = "python benchmarks/bench_sklearn.py" + (" " + " ".join(sys.argv[1:])
                                                   if sys.argv[1:] else "")
    try:
        head = git("rev-parse", "--short=9", "HEAD")
    except (subprocess.CalledProcessError, OSError):
        head = "?"
    raw = {"machine": machine_line(), "command": cmd, "head": head,
           "load_start": os.getloadavg(), "depth": {}, "seed": {}, "lbfgs": {},
           "reg": {}, "sparse": {}}
    log(f"# {raw['machine']}")
    log(f"# {cmd}  (checkout {head}, load average {raw['load_start'][0]:.2f})")

    baseline = None
    if "seed" in only and args.baseline_ref:
        build_root = args.build_dir or os.path.join(tempfile.gettempdir(),
                                                     "mlp_cy_bench_builds")
        try:
            baseline = build_ref(args.baseline_ref, build_root, log)
        except (RuntimeError, subprocess.CalledProcessError) as e:
            log(f"  ! {e}")
        raw["baseline"] = {"ref": args.baseline_ref,
                           "sha": baseline[0] if baseline else None}

    def show(tag, res):
        if not res:
            return
        if "unavailable" in res:
            log(f"  {tag}: not available at this commit ({res['unavailable']})")
        elif "failed" not in res:
            main_s = res.get("per60k_s", res.get("per_eval_s", res.get("epoch_s")))
            log(f"  {tag}: {main_s:.4f}s (load avg {res['loadavg']:.1f}, "
                f"child {res['wall_s']:.0f}s)")

    if "depth" in only:
        for sizes in DEPTH_CONFIGS:
            for nt in threads:
                # Every peer gets the same number of children, in rounds that run each
                # peer once, forwards then backwards: a peer timed only while another
                # process held the machine would otherwise lose (or win) a row by
                # luck. Each peer keeps its fastest child; each round also gives its
                # own ratios, from children minutes apart at most.
                for r in range(repeats):
                    for peer in (peers if r % 2 == 0 else peers[::-1]):
                        spec = {"kind": "depth", "peer": peer, "threads": nt,
                                "rounds": rounds, "sizes": list(sizes), "rows": rows}
                        res = spawn(spec, 1800, log)
                        show(f"depth {sizes} t={nt} {peer} (round {r + 1})", res)
                        key = f"{sizes},{nt},{peer}"
                        old = raw["depth"].get(key)
                        if ok(res):
                            times = (old or {}).get("children", []) + [res["per60k_s"]]
                            if ok(old) and old["per60k_s"] < res["per60k_s"]:
                                res = old
                            res["children"] = times
                        if not (ok(old) and not ok(res)):
                            raw["depth"][key] = res

    if "seed" in only:
        for nt in threads:
            runs = {"current": [], "baseline": []}
            for i in range(pairs):
                sides = ["baseline", "current"] if i % 2 == 0 else ["current", "baseline"]
                for side in sides:
                    if side == "baseline" and not baseline:
                        continue
                    spec = {"kind": "seed", "peer": "mlp_cy", "threads": nt,
                            "rounds": max(rounds, 5) if not args.quick else 2,
                            "rows": rows,
                            "pythonpath": baseline[1] if side == "baseline" else None}
                    res = spawn(spec, 900, log)
                    show(f"seed t={nt} {side} #{i + 1}", res)
                    if ok(res):
                        runs[side].append(res)
            raw["seed"][nt] = runs

    if "lbfgs" in only:
        for nt in threads:
            for peer in ("mlp_cy", "sklearn", "mlp_cy"):
                spec = {"kind": "lbfgs", "peer": peer, "threads": nt, "rows": 10000,
                        "rounds": lbfgs_rounds, "max_fun": args.max_fun}
                res = spawn(spec, 1800, log)
                show(f"lbfgs t={nt} {peer}", res)
                key = f"{nt},{peer}"
                old = raw["lbfgs"].get(key)
                if ok(res) and ok(old) and old["per_eval_s"] < res["per_eval_s"]:
                    res = old
                if not (ok(old) and not ok(res)):
                    raw["lbfgs"][key] = res

    for kind, name in (("reg", "regressor"), ("sparse", "sparse")):
        if name not in only:
            continue
        for nt in threads:
            for peer in ("mlp_cy", "sklearn", "mlp_cy"):
                # a regressor epoch is short (~0.1 s): more of them
                spec = {"kind": kind, "peer": peer, "threads": nt,
                        "rounds": rounds * 3 if kind == "reg" else rounds}
                res = spawn(spec, 3600, log)
                show(f"{name} t={nt} {peer}", res)
                key = f"{nt},{peer}"
                old = raw[kind].get(key)
                if ok(res) and ok(old) and old["epoch_s"] < res["epoch_s"]:
                    res = old
                if not (ok(old) and not ok(res)):
                    raw[kind][key] = res

    raw["load_end"] = os.getloadavg()
    raw["elapsed_s"] = time.perf_counter() - t_start
    report(raw, threads, peers, only, rounds, emit)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(raw, f, indent=1, default=str)
    return 0


def ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "-"


def loads(results):
    vals = [r["loadavg"] for r in results if r and "loadavg" in r]
    return f"{min(vals):.1f}-{max(vals):.1f}" if vals else "-"


def report(raw, threads, peers, only, rounds, emit):
    emit()
    emit(f"Machine: {raw['machine']}")
    anyres = next((r for sect in ("depth", "lbfgs", "reg", "sparse")
                   for r in raw[sect].values() if ok(r) and r.get("blas")), None)
    if anyres:
        emit(f"BLAS (threadpoolctl, in a child): {fmt_blas(anyres['blas'])}")
    emit(f"Command: `{raw['command']}` at {raw['head']}; whole run "
         f"{raw['elapsed_s'] / 60:.1f} min; load average {raw['load_start'][0]:.2f} at the "
         f"start, {raw['load_end'][0]:.2f} at the end; wall clock, fastest of {rounds} "
         f"rounds per child")

    if "depth" in only:
        emit()
        emit("Issue 16: scikit-learn's defaults (relu, adam, batch 200, alpha 1e-4, "
             "lr 1e-3), Fashion-MNIST float32, seconds per epoch of 60,000 rows")
        emit()
        emit("| hidden | threads | " + " | ".join(peers)
             + " | sklearn / mlp_cy | fastest other peer / mlp_cy | the same, per round "
             "| load avg |")
        emit("|---|---|" + "---|" * len(peers) + "---|---|---|---|")
        for sizes in DEPTH_CONFIGS:
            for nt in threads:
                row = {p: raw["depth"].get(f"{tuple(sizes)},{nt},{p}") for p in peers}
                me = row["mlp_cy"]["per60k_s"] if ok(row["mlp_cy"]) else None
                sk = row.get("sklearn")["per60k_s"] if ok(row.get("sklearn")) else None
                others = [(row[p]["per60k_s"], p) for p in peers
                          if p != "mlp_cy" and ok(row[p])]
                fastest = min(others) if others else None
                cells = [fmt_s(row[p]) for p in peers]
                if row["mlp_cy"] and "unavailable" in row["mlp_cy"]:
                    cells[0] = "not available at this commit"
                emit(f"| {','.join(map(str, sizes))} | {nt} | " + " | ".join(cells)
                     + f" | {ratio(sk, me)} | "
                     + (f"{ratio(fastest[0], me)} ({fastest[1]})" if fastest and me
                        else "-")
                     + f" | {per_round(row, peers)} | {loads(row.values())} |")
        rows_timed = {r.get("rows") for r in raw["depth"].values() if ok(r)}
        if rows_timed and rows_timed != {60000}:
            emit()
            emit(f"(rows timed: {sorted(rows_timed)}, scaled to 60,000)")
        unav = {r["unavailable"] for r in raw["depth"].values()
                if r and "unavailable" in r}
        for u in sorted(unav):
            emit(f"- not available at this commit: {u}")

    if "seed" in only and raw["seed"]:
        emit()
        base = raw.get("baseline")
        emit("Issue 16: the seed configuration (logistic, 256 hidden, batch 64, plain SGD "
             "eta 0.1, alpha 0), seconds per epoch, installed mlp_cy against "
             + (f"{base['ref']} ({(base['sha'] or '?')[:9]})" if base else "no baseline")
             + ", children alternating")
        emit()
        emit("| threads | baseline (fastest) | current (fastest) | current / baseline "
             "| per-pair ratios | load avg |")
        emit("|---|---|---|---|---|---|")
        for nt, runs in raw["seed"].items():
            b = [r["per60k_s"] for r in runs["baseline"]]
            c = [r["per60k_s"] for r in runs["current"]]
            pr = [f"{ci / bi:.3f}" for bi, ci in zip(b, c)]
            emit(f"| {nt} | " + (f"{min(b):.4f}" if b else "-") + " | "
                 + (f"{min(c):.4f}" if c else "-") + " | "
                 + (f"{min(c) / min(b):.3f}" if b and c else "-") + " | "
                 + (", ".join(pr) or "-") + " | "
                 + loads(runs["baseline"] + runs["current"]) + " |")

    if "lbfgs" in only and raw["lbfgs"]:
        emit()
        emit("Issue 17 (1): solver='lbfgs', 10,000 Fashion-MNIST rows, hidden (100,), "
             "relu, alpha 1e-4, tol 0, both with the same max_fun; seconds per function "
             "evaluation (fit time / evaluations)")
        emit()
        emit("| threads | mlp_cy s/eval (evals, iters) | sklearn s/eval (evals, iters) "
             "| sklearn / mlp_cy | load avg |")
        emit("|---|---|---|---|---|")
        for nt in threads:
            me, sk = raw["lbfgs"].get(f"{nt},mlp_cy"), raw["lbfgs"].get(f"{nt},sklearn")
            emit(f"| {nt} | {lbfgs_cell(me)} | {lbfgs_cell(sk)} | "
                 + (ratio(sk["per_eval_s"], me["per_eval_s"]) if ok(me) and ok(sk) else "-")
                 + f" | {loads([me, sk])} |")
        for r in raw["lbfgs"].values():
            if r and "unavailable" in r:
                emit(f"- mlp_cy: not available at this commit ({r['unavailable']})")
                break

    for kind, name, what in (
            ("reg", "regressor", "Issue 17 (2): MLPRegressor at scikit-learn's defaults "
             "(hidden (100,), relu, adam, batch 200) on make_regression (20,000 x 200, 50 "
             "informative, noise 1, float32, target standardised); seconds per epoch"),
            ("sparse", "sparse", "Issue 17 (3): TF-IDF-like CSR input (20,000 x 50,000, "
             "0.5% non-zeros, float32, 20 classes), hidden (256,), default adam, the same "
             "CSR matrix to both; seconds per epoch")):
        if name not in only or not raw[kind]:
            continue
        emit()
        emit(what)
        emit()
        emit("| threads | mlp_cy | sklearn | sklearn / mlp_cy | load avg |")
        emit("|---|---|---|---|---|")
        for nt in threads:
            me, sk = raw[kind].get(f"{nt},mlp_cy"), raw[kind].get(f"{nt},sklearn")
            cell = ("not available at this commit" if me and "unavailable" in me
                    else fmt_s(me, "epoch_s"))
            emit(f"| {nt} | {cell} | {fmt_s(sk, 'epoch_s')} | "
                 + (ratio(sk["epoch_s"], me["epoch_s"]) if ok(me) and ok(sk) else "-")
                 + f" | {loads([me, sk])} |")
        for r in raw[kind].values():
            if r and "unavailable" in r:
                emit(f"- mlp_cy: not available at this commit ({r['unavailable']})")
                break


def per_round(row, peers):
    """Round r's fastest other peer over mlp_cy in round r, for each round."""
    mine = row["mlp_cy"].get("children", []) if ok(row["mlp_cy"]) else []
    out = []
    for r, me in enumerate(mine):
        others = [row[p]["children"][r] for p in peers if p != "mlp_cy" and ok(row[p])
                  and len(row[p].get("children", [])) > r]
        if others:
            out.append(f"{min(others) / me:.2f}")
    return ", ".join(out) or "-"


def lbfgs_cell(res):
    if not res:
        return "-"
    if "unavailable" in res:
        return "not available at this commit"
    if "failed" in res:
        return "failed"
    ev = res["nfev"] if res["nfev"] is not None else f"{res.get('max_fun', '?')} assumed"
    return f"{res['per_eval_s']:.4f} ({ev}, {res['n_iter']})"


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
