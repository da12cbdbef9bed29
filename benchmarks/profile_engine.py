#!/usr/bin/env python
"""Where mlp_cy's training time goes, and what candidate engine changes would buy.

    python benchmarks/profile_engine.py [--threads 1] [--clock cpu] [--no-perf] [--no-proto]
                                        [--only-skipzero]

Sections (all float32, Fashion-MNIST train, eta = 0.1):

1. perf profile of network._train_epoch at h=256, b=64 (if `perf` is installed and
   permitted), grouped: BLAS kernel, BLAS packing, sigmoid, softmax, backward, gather.
2. The same step taken apart without perf: the five GEMMs (scipy.linalg.blas), the
   engine's own elementwise kernels (their test shims in mlp_cy.kernels) and the
   gather, each timed alone at the training shapes, times n/b, against the epoch.
3. Prototypes (benchmarks/prototypes.pyx, built into a temporary directory when
   Cython and a C compiler are present): a vectorisable sigmoid, and batch-1 paths
   (gemv/ger, sparse rows) against the engine's b=1 epoch.
4. predict_proba's chunk size: network._predict_proba on the 10,000 test rows with
   different chunk lengths, against the two forward GEMMs.
5. fit's own cost around the engine: partial_fit epoch minus engine epoch, and the
   temporary that input validation allocates (np.isfinite over all of X).
6. The zero-skipping products (src/mlp_cy/_skipzero.h) against gemm, one product at
   a time on shuffled Fashion-MNIST batches (float32 and float64), and whole epochs
   with and without them as the share of non-zeros grows (zeros filled at random).
   Needs an AVX-512 CPU; meaningful at --threads 1, the only case the engine uses them.

Nothing here changes the installed package; timings are fastest of 3 unless said.
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True   # no __pycache__ in the source tree
import bench_train as B  # noqa: E402

K = B.N_CLASSES


def engine_epoch_fn(X, y32, h, b, dtype=np.float32):
    run = B.engine_epoch(X, y32, b, B.glorot(X.shape[1], h, K, dtype), dtype)
    order = np.random.RandomState(0).permutation(X.shape[0]).astype(np.intp)
    return lambda: run(order)


def best_of(fn, rounds=3):
    best = float("inf")
    for _ in range(rounds):
        t = B._clock()
        fn()
        best = min(best, B._clock() - t)
    return best


# 1 -------------------------------------------------------------------------

GROUPS = [
    ("zero-skipping X W1 (_skipzero.h)", r"skipzero_ab"),
    ("zero-skipping W1 update (_skipzero.h)", r"skipzero_atb"),
    ("BLAS compute kernel", r"gemm_kernel|gemm_small_kernel|gemv|ger_k|axpy|dot_k"),
    ("BLAS packing (copy)", r"gemm_[io][nt]copy|gemm_beta"),
    ("BLAS other", r"gemm_|blas_thread|openblas|exec_blas|scipy_[sd]gemm"),
    ("sigmoid (bias_activation + expf)", r"bias_activation|bias_sigmoid|expf|__exp"),
    ("softmax + cross-entropy", r"softmax|logf|__log"),
    ("sigmoid backward + db1", r"activation_backward"),
    ("gather (memcpy, conversion)", r"memmove|memcpy|_gather_rows"),
    ("waiting for the other parts (_workers.h)", r"worker_main|workers_run|_region_part"),
    ("choosing the products (density scan)", r"_nonzeros"),
    ("engine loop, other", r"mlp_cy|_step|train_epoch"),
]


def perf_profile(X, y32, h, b, epochs):
    if not shutil.which("perf"):
        print("perf not found (apt-get install linux-perf); section 1 skipped")
        return
    run = engine_epoch_fn(X, y32, h, b)
    run()
    out = os.path.join(tempfile.mkdtemp(prefix="mlpcy_perf_"), "perf.data")
    p = subprocess.Popen(["perf", "record", "-q", "-o", out, "-p", str(os.getpid())],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)
    if p.poll() is not None:
        print("perf record failed:", p.stderr.read().decode().strip()[:200])
        return
    t = B._clock()
    for _ in range(epochs):
        run()
    epoch = (B._clock() - t) / epochs
    p.send_signal(signal.SIGINT)
    p.wait()
    rep = subprocess.run(["perf", "report", "-i", out, "--no-children", "--stdio",
                          "--sort", "symbol", "--percent-limit", "0.05"],
                         capture_output=True, text=True).stdout
    shutil.rmtree(os.path.dirname(out), ignore_errors=True)
    sums = {name: 0.0 for name, _ in GROUPS}
    sums["rest (kernel, python, ...)"] = 0.0
    top = []
    for line in rep.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+\[[.k]\]\s+(\S+)", line)
        if not m:
            continue
        pct, sym = float(m.group(1)), m.group(2)
        top.append((pct, sym))
        for name, pat in GROUPS:
            if re.search(pat, sym):
                sums[name] += pct
                break
        else:
            sums["rest (kernel, python, ...)"] += pct
    print(f"\n## 1. perf profile, h={h}, b={b}, {epochs} epochs of {epoch:.3f}s\n")
    print("| share of samples | group | ~ms per epoch |")
    print("|---|---|---|")
    for name, pct in sums.items():
        print(f"| {pct:.1f}% | {name} | {pct / 100 * epoch * 1e3:.0f} |")
    print("\ntop symbols: " + ", ".join(f"{s} {p:.1f}%" for p, s in top[:8]))


# 2 -------------------------------------------------------------------------

def breakdown(X, y32, h, b, min_time):
    from mlp_cy import kernels

    d = X.shape[1]
    n_batches = X.shape[0] / b
    run = engine_epoch_fn(X, y32, h, b)
    run()
    epoch = best_of(run)
    steps = B.gemm_floor_step(h, b, np.float32, min_time=min_time)
    ov = B.call_overhead(np.float32)
    rng = np.random.RandomState(0)
    Z1 = rng.randn(b, h).astype(np.float32)
    b1 = np.zeros(h, np.float32)
    Z2 = rng.randn(b, K).astype(np.float32)
    b2 = np.zeros(K, np.float32)
    A1 = rng.rand(b, h).astype(np.float32)
    dA = rng.randn(b, h).astype(np.float32)
    g1 = np.empty(h, np.float32)
    g2 = np.empty(K, np.float32)
    yb = y32[:b].copy()
    idx = rng.permutation(X.shape[0])[:b]
    Xb = np.empty((b, d), np.float32)
    Z2w, dAw = Z2.copy(), dA.copy()
    noop = B.time_calls(lambda: kernels._bias_activation(Z1[:1, :1], b1[:1], 1), min_time)

    def softmax():
        np.copyto(Z2w, Z2)
        kernels._softmax_cross_entropy(Z2w, b2, yb, None, 1.0 / b, g2)

    def backward():   # on a fresh copy: repeated in place it would sink into denormals
        np.copyto(dAw, dA)
        kernels._activation_backward(dAw, A1, 1, g1)
    parts = {
        "bias + sigmoid": B.time_calls(
            lambda: kernels._bias_activation(Z1, b1, 1), min_time),
        "softmax + CE + dZ2": B.time_calls(softmax, min_time)
        - B.time_calls(lambda: np.copyto(Z2w, Z2), min_time),
        "sigmoid backward + db1": B.time_calls(backward, min_time)
        - B.time_calls(lambda: np.copyto(dAw, dA), min_time),
        "gather (np.take)": B.time_calls(
            lambda: np.take(X, idx, axis=0, out=Xb, mode="clip"), min_time),
    }
    print(f"\n## 2. one step taken apart, h={h}, b={b} (x {n_batches:.1f} batches)\n")
    print("(the five products as gemms, whether or not the engine skips zeros in the two "
          "with X: section 6 compares those)\n")
    print(f"engine epoch {epoch * 1e3:.0f} ms; python-call cost subtracted: "
          f"{ov * 1e6:.2f} us per gemm call, {noop * 1e6:.2f} us per kernel shim call\n")
    print("| piece | us per batch | ms per epoch | share of engine epoch |")
    print("|---|---|---|---|")
    total = 0.0
    for name, t in list(steps.items()) + list(parts.items()):
        net = max(t - (ov if name in steps else noop), 0.0)
        total += net
        print(f"| {name} | {net * 1e6:.1f} | {net * n_batches * 1e3:.1f} | "
              f"{100 * net * n_batches / epoch:.1f}% |")
    print(f"| **sum** | {total * 1e6:.1f} | {total * n_batches * 1e3:.1f} | "
          f"{100 * total * n_batches / epoch:.1f}% |")


# 3 -------------------------------------------------------------------------

def build_prototypes():
    try:
        import Cython  # noqa: F401
        import setuptools  # noqa: F401
    except ImportError:
        print("Cython/setuptools missing: pip install cython setuptools; section 3 skipped")
        return None
    tmp = tempfile.mkdtemp(prefix="mlpcy_proto_")
    shutil.copy(os.path.join(HERE, "prototypes.pyx"), tmp)
    with open(os.path.join(tmp, "setup.py"), "w") as f:
        f.write("from setuptools import setup, Extension\n"
                "from Cython.Build import cythonize\n"
                "setup(ext_modules=cythonize([Extension('prototypes', ['prototypes.pyx'],"
                " extra_compile_args=['-O3'])], quiet=True))\n")
    p = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tmp,
                       capture_output=True, text=True)
    if p.returncode:
        print("prototype build failed; section 3 skipped:\n", p.stderr[-800:])
        return None
    sys.path.insert(0, tmp)
    import prototypes
    return prototypes


def prototypes_section(P, X, y32, n_b1):
    from mlp_cy import kernels

    print("\n## 3. prototypes\n")
    x = np.linspace(-87, 88, 1_000_001).astype(np.float32)
    out = np.empty_like(x)
    P.expf_poly(x, out)
    ref = np.exp(x.astype(np.float64))
    print(f"inline expf: max relative error {np.max(np.abs(out - ref) / ref):.2e} "
          f"on [-87, 88]\n")
    print("| sigmoid kernel | shape | us per call | ns per element | vs libm |")
    print("|---|---|---|---|---|")
    for n, h in ((64, 256), (256, 256), (256, 1024), (1024, 256)):
        Z = np.random.RandomState(0).randn(n, h).astype(np.float32) * 4
        bias = np.zeros(h, np.float32)
        reps = max(1, 2_000_000 // (n * h))
        base = None

        def installed(Zc, bias, reps):   # the installed engine's kernel, via its shim
            for _ in range(reps):
                kernels._bias_activation(Zc, bias, 1)
        for name, fn in (("libm expf", P.sigmoid_libm),
                         ("installed mlp_cy.kernels", installed),
                         ("inline expf, SSE2", P.sigmoid_poly),
                         ("inline expf, target_clones", P.sigmoid_poly_clones)):
            Zc = Z.copy()
            fn(Zc, bias, 1)
            t = best_of(lambda: fn(Zc, bias, reps)) / reps
            base = base or t
            print(f"| {name} | {n}x{h} | {t * 1e6:.1f} | {t / n / h * 1e9:.2f} | "
                  f"{base / t:.1f}x |")
    # batch 1
    print(f"\nbatch 1, h=256, {n_b1} rows (per 60,000 rows scaled); all variants start "
          "from the same weights\n")
    Xs, ys = X[:n_b1], y32[:n_b1]
    order = np.random.RandomState(0).permutation(n_b1).astype(np.intp)
    print(f"non-zero pixels: {100 * P.fraction_nonzero(Xs):.1f}%\n")
    print("| b=1 path | s per 60k | vs engine | max abs diff of W1 from engine after 20 "
          "steps |")
    print("|---|---|---|---|")
    variants = {
        "installed engine": None,
        "gemv + ger": P.b1_epoch_gemv,
        "sparse rows, SSE2": P.b1_epoch_sparse,
        "fused sparse sweep, clones": P.b1_epoch_fused,
    }

    def run(fn, Xn, yn, on):
        params = B.glorot(Xn.shape[1], 256, K, np.float32)
        if fn is None:
            B.engine_epoch(Xn, yn, 1, params, np.float32)(on)
        else:
            fn(Xn, yn, on, *params, B.ETA)
        return params[0]
    X20, y20, o20 = Xs[order[:20]], ys[order[:20]], np.arange(20, dtype=np.intp)
    ref_W1 = run(None, X20, y20, o20)
    times = {}
    for name, fn in variants.items():
        diff = float(np.abs(run(fn, X20, y20, o20) - ref_W1).max())
        times[name] = best_of(lambda: run(fn, Xs, ys, order)) * 60000 / n_b1
        print(f"| {name} | {times[name]:.2f} | "
              f"{times['installed engine'] / times[name]:.2f}x | {diff:.1e} |")


# 4 -------------------------------------------------------------------------

def predict_chunks(min_time):
    from mlp_cy import network

    Xte, _ = B.load("test", np.float32)
    fn = B._gemm_fn(np.float32)
    print("\n## 4. predict_proba chunk rows (network._predict_proba, 10,000 rows)\n")
    print("| h | chunk rows | ms | x two GEMMs |")
    print("|---|---|---|---|")
    for h in (256, 1024):
        W1, b1, W2, b2 = B.glorot(Xte.shape[1], h, K, np.float32)
        A1 = np.empty((Xte.shape[0], h), np.float32)
        P = np.empty((Xte.shape[0], K), np.float32)
        floor = (B.time_calls(lambda: B.rowmajor_gemm(fn, Xte, W1, A1), min_time)
                 + B.time_calls(lambda: B.rowmajor_gemm(fn, A1, W2, P), min_time))
        for chunk in (64, 256, 1024, 2048, 4096, 10000):
            work = np.empty(chunk * h, np.float32)
            t = B.time_calls(lambda: network._predict_proba(Xte, W1, b1, W2, b2, 1, P, work),
                             min_time)
            print(f"| {h} | {chunk} | {t * 1e3:.2f} | {t / floor:.2f} |")
        print(f"| {h} | two GEMMs alone | {floor * 1e3:.2f} | 1.00 |")


# 5 -------------------------------------------------------------------------

def api_overhead(X, y):
    from mlp_cy import MLPClassifier

    print("\n## 5. fit's cost around the engine (h=256, b=64)\n")
    warnings.simplefilter("ignore")
    clf = MLPClassifier(hidden_layer_sizes=(256,), activation="logistic", solver="sgd",
                        momentum=0.0, alpha=0.0,
                        batch_size=64, learning_rate_init=B.ETA, max_iter=1, random_state=0,
                        tol=0.0, n_iter_no_change=10**9)
    clf.fit(X, y)
    api = best_of(lambda: clf.partial_fit(X, y))
    eng = best_of(engine_epoch_fn(X, y.astype(np.int32), 256, 64))
    fin = best_of(lambda: np.isfinite(X).all())

    def chunked():
        step = 1 << 16
        flat = X.reshape(-1)
        return all(np.isfinite(flat[i:i + step]).all() for i in range(0, flat.size, step))
    fin_c = best_of(chunked)
    base, _ = B.rss_mb()
    B.reset_peak_rss()
    np.isfinite(X).all()
    peak1 = B.rss_mb()[1] - base
    B.reset_peak_rss()
    chunked()
    peak2 = B.rss_mb()[1] - base
    print(f"partial_fit epoch {api * 1e3:.0f} ms, engine epoch {eng * 1e3:.0f} ms: "
          f"{(api - eng) * 1e3:.0f} ms ({100 * (api / eng - 1):.1f}%) around the engine")
    print(f"np.isfinite(X).all(): {fin * 1e3:.1f} ms, +{peak1:.1f} MiB peak "
          f"(X is {X.nbytes / 2**20:.1f} MiB); in 64K-element chunks: {fin_c * 1e3:.1f} ms, "
          f"+{peak2:.1f} MiB")


# 6 -------------------------------------------------------------------------

def skipzero_section(X, y):
    from mlp_cy import MLPClassifier, _blas

    print(f"\n## 6. zero-skipping products vs gemm (kernels: {_blas._kernel_level()})\n")
    import bench_levels

    rng = np.random.RandomState(0)
    print(f"non-zeros in X: {100 * np.count_nonzero(X) / X.size:.1f}%")
    bench_levels.products([_blas._kernel_level()], X, rounds=5,
                          shapes=((64, 256), (256, 256), (256, 1024), (1024, 256)))
    print("\nWhole epochs (partial_fit, float32, 30,000 rows), zeros of X filled with "
          "0.01 at random up to the share shown; ratio = skipping / gemm time\n")
    print("| non-zeros | h=256, b=64 | h=1024, b=256 |")
    print("|---|---|---|")
    X0, y0 = X[:30000], y[:30000]
    density0 = np.count_nonzero(X0) / X0.size
    for target in (0.3, 0.5, 0.55, 0.6, 0.7, 0.8):
        Xd = X0.copy()
        if target < density0:          # fewer non-zeros: drop the faintest pixels
            Xd[Xd < np.quantile(Xd[Xd > 0], 1 - target / density0)] = 0
        else:
            Xd[(Xd == 0) & (rng.rand(*Xd.shape) < (target - density0) / (1 - density0))] = 0.01
        ratios = []
        for h, b in ((256, 64), (1024, 256)):
            times = {}
            for mode in ("never", "always", "never", "always"):
                _blas._set_skipzero_mode(mode)
                clf = MLPClassifier(hidden_layer_sizes=(h,), activation="logistic",
                                    solver="sgd", learning_rate_init=0.1, momentum=0,
                                    alpha=0, batch_size=b, random_state=0)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    clf.partial_fit(Xd[:1000], y0[:1000], classes=np.arange(K))
                t0 = B._clock()
                clf.partial_fit(Xd, y0)
                times.setdefault(mode, []).append(B._clock() - t0)
            ratios.append(min(times["always"]) / min(times["never"]))
        _blas._set_skipzero_mode("auto")
        print(f"| {100 * np.count_nonzero(Xd) / Xd.size:.0f}% | {ratios[0]:.2f} | "
              f"{ratios[1]:.2f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-perf", action="store_true")
    ap.add_argument("--no-proto", action="store_true")
    ap.add_argument("--b1-rows", type=int, default=10000)
    ap.add_argument("--only-skipzero", action="store_true", help="section 6 alone")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: process CPU time (only with --threads 1)")
    args = ap.parse_args()
    if args.clock == "cpu" and args.threads == 1:
        B._clock = time.process_time
    limiter, _ = B.set_threads(args.threads, False, ["mlp_cy.network", "mlp_cy.kernels"])
    print(f"# {B.machine_line()}")
    print(f"# BLAS: {B.fmt_blas(B.blas_info())}")
    print(f"# python benchmarks/profile_engine.py {' '.join(sys.argv[1:])}; clock: "
          f"{'process CPU time' if B._clock is time.process_time else 'wall'}")
    X, y = B.load("train", np.float32)
    y32 = y.astype(np.int32)
    if args.only_skipzero:
        skipzero_section(X, y)
        return
    if not args.no_perf:
        perf_profile(X, y32, 256, 64, epochs=4)
    breakdown(X, y32, 256, 64, 0.2)
    breakdown(X, y32, 1024, 256, 0.2)
    if not args.no_proto:
        P = build_prototypes()
        if P is not None:
            prototypes_section(P, X, y32, args.b1_rows)
    predict_chunks(0.3)
    api_overhead(X, y)
    skipzero_section(X, y)


if __name__ == "__main__":
    main()
