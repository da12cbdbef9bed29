"""Train small deterministic problems with mlp_cy and save what came out, or compare
two such files (a step of tools/check_aarch64.sh).

    python tools/aarch64_smoke.py run OUT.npz [--expect-from DIR]
    python tools/aarch64_smoke.py compare HOST.npz TARGET.npz

`run` imports whichever mlp_cy the interpreter finds (check_aarch64.sh runs it once on
the x86-64 host and once under qemu-aarch64 against the cross-built package; with
--expect-from DIR it fails unless that mlp_cy is the one in DIR) and fits
MLPClassifier, a sigmoid hidden layer trained by plain SGD without penalty, on data
made with numpy's RandomState, so both machines see the same bits:

  dense-f64, dense-f32    20 dense features, 3 classes, hidden=32, batch_size=32,
                          lr 0.1, 10 epochs (test accuracy 78%).
  images-f64, images-f32  784 "pixels", 90% zeros, 10 classes, hidden=64,
                          batch_size=64, lr 0.3, 10 epochs (test accuracy 51%): first
                          with the zero-skipping kernels off on one BLAS thread (gemm,
                          the baseline), then with them forced on (_set_skipzero_mode
                          "always") on 1 BLAS thread (the serial step) and on 2 (the
                          parallel step, _parallel.pyx), at each kernel level the
                          build and CPU have (_blas._kernel_levels(), where it exists).

Each run saves the weights, the biases, the loss curve and predict_proba on held-out
rows. Where mlp_cy._blas reports which levels' kernels ran (_kernel_levels_used), a
forced run whose kernels did not run at its level is an error.

`compare` checks every run of both files against the host's baseline run of the same
problem (dense: the one run; images: gemm on one thread), scaled by the largest
magnitude of each array: max|a - b| / max|b| <= 1e-9 in float64, 1e-4 in float32.
The BLAS and the kernels sum in other orders on each architecture, and gcc contracts
a*b+c to FMAs on aarch64 only, so bits differ; more than rounding does not. It prints
each comparison and exits 1 if any fails, a problem is missing from either file, or
an aarch64 build that reports kernel levels has no "neon" one.
"""

import json
import platform
import sys
import warnings

import numpy as np

TOLERANCE = {"float64": 1e-9, "float32": 1e-4}
ARRAYS = ("coef0", "coef1", "intercept0", "intercept1", "loss_curve", "proba")
GROUPS = ("dense-f64", "dense-f32", "images-f64", "images-f32")
BASELINE = {"dense": "default", "images": "gemm-1thread"}


def dense_problem(dtype):
    rs = np.random.RandomState(0)
    X = rs.standard_normal((400, 20))
    W = rs.standard_normal((20, 3))
    y = np.argmax(X @ W + 0.5 * rs.standard_normal((400, 3)), axis=1)
    return X[:300].astype(dtype), y[:300], X[300:].astype(dtype)


def images_problem(dtype):
    """MNIST-like rows: a rectangle of ink in a 28 x 28 zero frame, labelled by where
    it lies."""
    rs = np.random.RandomState(1)
    n = 400
    X = np.zeros((n, 28, 28))
    y = np.empty(n, dtype=np.int64)
    for i in range(n):
        r, c = rs.randint(2, 14, size=2)
        h, w = rs.randint(6, 13, size=2)
        X[i, r:r + h, c:c + w] = rs.uniform(0.2, 1.0, size=(h, w))
        y[i] = (r >= 8) * 5 + c // 3
    X[rs.uniform(size=X.shape) < 0.1] = 0
    X = X.reshape(n, 784).astype(dtype)
    return X[:320], y[:320], X[320:]


def fit(X, y, X_test, **params):
    from mlp_cy import MLPClassifier
    # The textbook network, every choice spelled out (not the defaults, which may
    # change): a sigmoid layer trained by plain SGD, whose batches the parallel step
    # takes on 2 threads.
    clf = MLPClassifier(activation="logistic", solver="sgd", momentum=0.0, alpha=0.0,
                        learning_rate="constant", max_iter=10, random_state=0,
                        shuffle=True, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # ConvergenceWarning after 10 epochs
        clf.fit(X, y)
    result = {f"coef{i}": np.asarray(c) for i, c in enumerate(clf.coefs_)}
    result.update({f"intercept{i}": np.asarray(b) for i, b in enumerate(clf.intercepts_)})
    result["loss_curve"] = np.asarray(clf.loss_curve_, dtype=X.dtype)
    result["proba"] = clf.predict_proba(X_test)
    return result


def run(out, expect_from=None):
    import os
    import threadpoolctl
    import mlp_cy
    from mlp_cy import _blas

    print(f"machine {platform.machine()}, Python {platform.python_version()}, "
          f"numpy {np.__version__}, mlp_cy from {mlp_cy.__file__}")
    if expect_from is not None:
        folder = os.path.realpath(expect_from)
        if os.path.commonpath([folder, os.path.realpath(mlp_cy.__file__)]) != folder:
            print(f"ERROR: mlp_cy was imported from {mlp_cy.__file__}, not from {expect_from}")
            return 1
    for pool in threadpoolctl.threadpool_info():
        print(f"  BLAS: {pool.get('internal_api')} {pool.get('version')} "
              f"{pool.get('architecture')}, {pool.get('num_threads')} threads")
    has_levels = hasattr(_blas, "_kernel_levels")
    levels = _blas._kernel_levels() if has_levels else (None,)
    if has_levels:
        print(f"  kernel levels {levels}, current {_blas._kernel_level()!r}")
    else:
        print("  mlp_cy._blas has no _kernel_levels(): the forced runs use the default kernels")
    tracks_use = hasattr(_blas, "_kernel_use_reset") and hasattr(_blas, "_kernel_levels_used")

    saved, errors = {}, []

    def keep(name, result):
        print(f"  {name}: loss {float(result['loss_curve'][-1]):.6f}", flush=True)
        for key, value in result.items():
            saved[f"{name}/{key}"] = value

    for dtype in (np.float64, np.float32):
        tag = "f64" if dtype == np.float64 else "f32"
        X, y, X_test = dense_problem(dtype)
        keep(f"dense-{tag}/default", fit(X, y, X_test, hidden_layer_sizes=32, batch_size=32,
                                         learning_rate_init=0.1))

        X, y, X_test = images_problem(dtype)
        print(f"  images: {np.mean(X == 0):.0%} zeros")
        params = dict(hidden_layer_sizes=64, batch_size=64, learning_rate_init=0.3)
        old_mode = _blas._set_skipzero_mode("never")
        try:
            with threadpoolctl.threadpool_limits(1):
                keep(f"images-{tag}/gemm-1thread", fit(X, y, X_test, **params))
            _blas._set_skipzero_mode("always")
            for level in levels:
                old_level = _blas._set_kernel_level(level) if level is not None else None
                try:
                    for threads in (1, 2):
                        name = f"images-{tag}/skipzero-{level or 'default'}-{threads}thread"
                        if tracks_use:
                            _blas._kernel_use_reset()
                        with threadpoolctl.threadpool_limits(threads):
                            keep(name, fit(X, y, X_test, **params))
                        if tracks_use and level is not None:
                            used = _blas._kernel_levels_used()
                            if used != (level,):
                                errors.append(f"{name}: kernels of levels {used} ran, "
                                              f"expected ({level!r},)")
                finally:
                    if old_level is not None:
                        _blas._set_kernel_level(old_level)
        finally:
            _blas._set_skipzero_mode(old_mode)

    meta = dict(machine=platform.machine(), levels=[lv for lv in levels if lv])
    np.savez(out, __meta__=np.array(json.dumps(meta)), **saved)
    print(f"saved {len(saved)} arrays to {out}")
    for error in errors:
        print(f"ERROR: {error}")
    return 1 if errors else 0


def load(path):
    with np.load(path) as data:
        meta = json.loads(str(data["__meta__"]))
        runs = {}
        for key in data.files:
            if key == "__meta__":
                continue
            name, _, array = key.rpartition("/")
            runs.setdefault(name, {})[array] = data[key]
    return meta, runs


def compare(host_path, target_path):
    host_meta, host = load(host_path)
    target_meta, target = load(target_path)
    print(f"host: {host_meta['machine']}, levels {host_meta['levels']}; "
          f"target: {target_meta['machine']}, levels {target_meta['levels']}")
    print("each run against the host's baseline of its problem: max|a - b| / max|b| "
          "over weights, biases, loss curve and predict_proba")
    failures = []
    # An aarch64 build with kernel levels but no NEON one lost its SIMD kernels.
    if target_meta["machine"] == "aarch64" and target_meta["levels"] \
            and "neon" not in target_meta["levels"]:
        failures.append(f"the aarch64 build has no neon kernel level: {target_meta['levels']}")
    for group in GROUPS:
        baseline_name = f"{group}/{BASELINE[group.split('-')[0]]}"
        if baseline_name not in host:
            failures.append(f"the host file has no {baseline_name}")
            continue
        if not any(name.startswith(group + "/") for name in target):
            failures.append(f"the target file has no {group} runs")
            continue
        baseline = host[baseline_name]
        print(f"\n{group} (against host {baseline_name}):")
        for side, runs in (("host", host), ("target", target)):
            for name in sorted(n for n in runs if n.startswith(group + "/")):
                if side == "host" and name == baseline_name:
                    continue
                worst, worst_array, abs_diff = 0.0, "", 0.0
                dtype = None
                for array in ARRAYS:
                    a, b = runs[name].get(array), baseline.get(array)
                    if a is None or b is None or a.shape != b.shape:
                        failures.append(f"{side} {name}: {array} missing or of another "
                                        f"shape than the baseline's")
                        continue
                    dtype = dtype or str(b.dtype)
                    if a.dtype != b.dtype:
                        failures.append(f"{side} {name}: {array} is {a.dtype}, not {b.dtype}")
                    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
                    if not np.all(np.isfinite(diff)):
                        failures.append(f"{side} {name}: {array} is not finite")
                        continue
                    scaled = float(diff.max() / max(np.abs(b).max(), 1e-300))
                    if scaled >= worst:
                        worst, worst_array, abs_diff = scaled, array, float(diff.max())
                tol = TOLERANCE.get(dtype, 0)
                same_labels = np.mean(np.argmax(runs[name]["proba"], axis=1)
                                      == np.argmax(baseline["proba"], axis=1))
                verdict = "ok" if worst <= tol else "MISMATCH"
                print(f"  {side:6} {name.split('/', 1)[1]:28} {verdict:8} scaled "
                      f"{worst:.2e} (tol {tol:.0e}, worst {worst_array}, abs {abs_diff:.2e}), "
                      f"labels agree {same_labels:.1%}")
                if worst > tol:
                    failures.append(f"{side} {name}: scaled difference {worst:.2e} in "
                                    f"{worst_array} > {tol:.0e}")
    print()
    for failure in failures:
        print(f"FAILED: {failure}")
    if not failures:
        print("aarch64 and x86-64 agree to rounding on every run")
    return 1 if failures else 0


def main(argv):
    if len(argv) in (2, 4) and argv[0] == "run" and argv[2:3] in ([], ["--expect-from"]):
        return run(argv[1], *argv[3:])
    if len(argv) == 3 and argv[0] == "compare":
        return compare(argv[1], argv[2])
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
