"""The products that skip the data's zeros (_skipzero.h, used by the engine).

They must equal gemm's products to rounding, on every shape and layout the engine
hands them, at every instruction-set level this CPU runs (the `kernel_level` fixture:
reference C, then SSE2, AVX2, AVX-512 or NEON), and agree with the reference C build;
and training must not depend on whether they are used: the engine picks them only for
speed (one BLAS thread, a level where they pay, mostly-zero data). Each test first
checks that the kernels it means really ran (_blas._kernel_levels_used).
"""

import os
import platform
import subprocess
import sys

import warnings

import numpy as np
import pytest
from conftest import importorskip

from mlp_cy import MLPClassifier
from mlp_cy import _blas
from reference import sgd_epoch

threadpoolctl = importorskip("threadpoolctl")

LANES = {np.float32: 16, np.float64: 8}     # n must be a multiple of 64 bytes
RTOL = {np.float32: 2e-6, np.float64: 1e-13}


@pytest.fixture
def skipzero_mode():
    """Set the engine's choice for one test, and put 'auto' back after it."""
    old = []

    def set_mode(mode):
        old.append(_blas._set_skipzero_mode(mode))

    yield set_mode
    if old:
        _blas._set_skipzero_mode(old[0])


def _sparse(rng, shape, dtype, density=0.5):
    A = rng.random(shape)
    A[rng.random(shape) >= density] = 0
    return A.astype(dtype)


def _images(n, dtype, seed=0):
    """MNIST-like rows: a blob of ink in the middle of a 28 x 28 zero frame."""
    rng = np.random.default_rng(seed)
    X = np.zeros((n, 28, 28))
    for i in range(n):
        r, c = rng.integers(4, 10, size=2)
        X[i, r:r + rng.integers(8, 15), c:c + rng.integers(8, 15)] = rng.random()
    X[rng.random(X.shape) < 0.1] = 0
    return X.reshape(n, 784).astype(dtype)


def _close(got, expected, dtype):
    scale = max(np.abs(expected).max(), 1e-30)
    np.testing.assert_allclose(got, expected, rtol=0, atol=RTOL[dtype] * scale * 10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m, k, n", [
    (64, 784, 256), (61, 783, 96), (1, 5, 16), (7, 3, 8), (5, 9, 48),
    (4, 4, 80), (6, 10, 100), (3, 7, 3), (130, 17, 1024),
])
def test_product_equals_gemm(dtype, m, k, n, kernel_level):
    rng = np.random.default_rng(m * 1000 + n)
    A = _sparse(rng, (m, k), dtype)
    B = rng.standard_normal((k, n)).astype(dtype)
    C = np.full((m, n), np.nan, dtype)                 # never read
    _blas._gemm_skipzero_memview(A, B, C)
    _close(C, A.astype(np.float64) @ B, dtype)
    # n % LANES columns go to gemm: narrower products never reach the kernels.
    assert _blas._kernel_levels_used() == ((kernel_level,) if n >= LANES[dtype] else ())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m, k, n", [
    (64, 784, 256), (61, 783, 96), (1, 5, 16), (7, 3, 8), (5, 9, 48), (6, 10, 100),
    (3, 7, 3),
])
@pytest.mark.parametrize("beta", [0.0, 1.0, 0.7])
def test_transposed_product_equals_gemm(dtype, m, k, n, beta, kernel_level):
    rng = np.random.default_rng(m * 1000 + n)
    A = _sparse(rng, (m, k), dtype)
    A[:, 1] = 0                                        # a pixel no row has: C decays
    G = rng.standard_normal((m, n)).astype(dtype)
    C0 = rng.standard_normal((k, n)).astype(dtype)
    C = C0.copy() if beta else np.full((k, n), np.nan, dtype)
    _blas._gemm_t_skipzero_memview(-0.25, A, G, beta, C)
    expected = beta * C0.astype(np.float64) - 0.25 * A.T.astype(np.float64) @ G
    _close(C, expected, dtype)
    assert _blas._kernel_levels_used() == ((kernel_level,) if n >= LANES[dtype] else ())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_strided_views_and_nothing_outside_them(dtype, kernel_level):
    # A and C as row slices of bigger arrays (row stride > row length), as the engine
    # passes slices of X; what lies between and around the rows stays untouched.
    rng = np.random.default_rng(5)
    A_big = _sparse(rng, (40, 90), dtype)
    A = A_big[3:30, 5:75]
    B = rng.standard_normal((70, 64)).astype(dtype)
    C_big = np.full((30, 100), 7.0, dtype)
    C = C_big[2:29, 10:74]
    _blas._gemm_skipzero_memview(A, B, C)
    _close(C, A.astype(np.float64) @ B, dtype)
    outside = np.ones(C_big.shape, bool)
    outside[2:29, 10:74] = False
    assert np.all(C_big[outside] == 7.0)

    G = rng.standard_normal((27, 32)).astype(dtype)
    W_big = np.full((80, 50), 3.0, dtype)
    W = W_big[5:75, 9:41]
    W0 = W.astype(np.float64)
    _blas._gemm_t_skipzero_memview(0.5, A, G, 0.9, W)
    _close(W, 0.9 * W0 + 0.5 * A.T.astype(np.float64) @ G, dtype)
    outside = np.ones(W_big.shape, bool)
    outside[5:75, 9:41] = False
    assert np.all(W_big[outside] == 3.0)
    assert _blas._kernel_levels_used() == (kernel_level,)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_zero_and_single_nonzero_data(dtype, kernel_level):
    A = np.zeros((9, 30), dtype)
    B = np.ones((30, 32), dtype)
    C = np.full((9, 32), np.nan, dtype)
    _blas._gemm_skipzero_memview(A, B, C)
    assert np.all(C == 0)
    G = np.ones((9, 32), dtype)
    W = np.full((30, 32), 2.0, dtype)
    _blas._gemm_t_skipzero_memview(1.0, A, G, 0.5, W)
    assert np.all(W == 1.0)
    A[4, 17] = 3.0
    _blas._gemm_skipzero_memview(A, B, C)
    assert np.all(C[4] == 3.0) and np.all(np.delete(C, 4, axis=0) == 0)
    _blas._gemm_t_skipzero_memview(1.0, A, G, 0.0, W)
    assert np.all(W[17] == 3.0) and np.all(np.delete(W, 17, axis=0) == 0)
    assert _blas._kernel_levels_used() == (kernel_level,)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_level_matches_the_reference_build(dtype):
    # The plain-C reference is the oracle of the vector builds. They sum in the same
    # order, so the SSE2 build (no fused multiply-add) gives the reference's bits; the
    # others round a b + c once and agree to rounding.
    rng = np.random.default_rng(11)
    A = _sparse(rng, (45, 301), dtype)          # 45 rows: a short last block of 4
    A_rows = A[::-1]                            # another row stride
    B = rng.standard_normal((301, 96)).astype(dtype)
    G = rng.standard_normal((45, 96)).astype(dtype)
    W0 = rng.standard_normal((301, 96)).astype(dtype)
    results = {}
    old = _blas._kernel_level()
    try:
        for level in _blas._kernel_levels():
            _blas._set_kernel_level(level)
            C = np.full((45, 96), np.nan, dtype)
            _blas._gemm_skipzero_memview(A_rows, B, C)
            W = W0.copy()
            _blas._gemm_t_skipzero_memview(-0.3, A, G, 0.9, W)
            results[level] = (C, W)
    finally:
        _blas._set_kernel_level(old)
    reference = results.pop("reference")
    assert set(results) == set(_blas._kernel_levels()) - {"reference"}
    for level, got in results.items():
        for name, g, e in zip(("X W1", "W1 update"), got, reference):
            if level == "sse2":
                np.testing.assert_array_equal(g, e, err_msg=f"{level}: {name}")
            _close(g, e, dtype)
        if level in ("avx2", "avx512"):
            # Fused multiply-adds round once: bits of their own, so this level's build
            # ran, not the reference table under this level's name.
            assert not np.array_equal(got[0], reference[0]), level


def test_levels_are_what_the_cpu_has():
    levels = _blas._kernel_levels()
    assert levels[0] == "reference"
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        assert levels[:2] == ("reference", "sse2") or sys.platform == "win32"
        if os.path.exists("/proc/cpuinfo"):         # both ways: no level missed or made up
            with open("/proc/cpuinfo") as f:
                flags = set(next(line for line in f if line.startswith("flags")).split())
            assert ("avx2" in levels) == ({"avx2", "fma"} <= flags)
            assert ("avx512" in levels) == ("avx512f" in flags)
    elif machine in ("aarch64", "arm64"):
        assert levels == ("reference", "neon") or sys.platform == "win32"
    if not os.environ.get("MLP_CY_CPU_LEVEL"):
        assert _blas._kernel_level() == levels[-1]   # the highest, by default


@pytest.mark.parametrize("cap", ["reference", "sse2", "neon", "avx2", "avx512", "bogus"])
def test_the_environment_caps_the_level(cap):
    code = "from mlp_cy import _blas; print(_blas._kernel_level())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "MLP_CY_CPU_LEVEL": cap}, timeout=120)
    levels = _blas._kernel_levels()
    if cap == "bogus":
        assert result.returncode != 0
        assert "MLP_CY_CPU_LEVEL='bogus' is not a level" in result.stderr
        return
    assert result.returncode == 0, result.stderr
    rank = _blas.CPU_LEVEL_NAMES
    expected = max((name for name in levels if rank[name] <= rank[cap]), key=rank.get)
    assert result.stdout.strip() == expected


def _windows_has_no_thread_getter():
    """On Windows only cython_blas's own module is searched for the BLAS's thread
    getter (_blas._find_blas_thread_getter): the count is unknown there (0), and the
    engine then plans one thread (gemm's threads might be busy), where it never
    skips zeros on its own."""
    if sys.platform != "win32":
        return False
    assert _blas._blas_num_threads() == 0
    with threadpoolctl.threadpool_limits(1):
        assert _blas._engine_threads(64, 784, 256) == 1
    return True


def test_blas_thread_count_follows_threadpoolctl():
    if _windows_has_no_thread_getter():
        return
    with threadpoolctl.threadpool_limits(1):
        assert _blas._blas_num_threads() in (0, 1)   # 0: a BLAS it cannot ask
    if _blas._blas_num_threads() == 0:
        pytest.fail("mlp_cy cannot ask this BLAS for its thread count: it is not "
                    "OpenBLAS, MKL or BLIS, or ctypes could not open scipy's cython_blas")
    with threadpoolctl.threadpool_limits(2):
        assert _blas._blas_num_threads() == 2


def test_the_engine_skips_zeros_only_where_it_pays(kernel_level):
    # The plan's rule (_blas.skipzero_first_layer) and its density check on the
    # first batch (layers.Network.plan).
    from mlp_cy import layers

    rng = np.random.default_rng(0)
    skip = _blas._skip_first_layer                   # (m, k, n, itemsize, threads)
    serial_pays, parallel_pays = _blas._skipzero_pays()
    assert not serial_pays                           # benchmarks/RESULTS.md: gemm wins
    assert parallel_pays == (kernel_level == "avx512")  # AVX2: gemm wins (RESULTS.md)
    for threads in (1, 2):
        assert skip(64, 784, 256, 4, threads) == (parallel_pays and threads == 2)
    if _windows_has_no_thread_getter() or not parallel_pays:
        return
    assert skip(64, 784, 104, 8, 2)                  # whole vectors of float64
    assert not skip(64, 784, 100, 4, 2)              # 100 % 16 columns: gemm
    assert not skip(64, 784, 8, 4, 2)                # narrower than a vector
    assert skip(1024, 784, 256, 4, 2)                # 1 MiB products, 2 MiB allowed
    assert not skip(1024, 784, 1024, 4, 2)           # 4 MiB: gemm
    # On several threads, row chunks of up to 32 rows and a W_0 of up to 1 MiB
    beats = _blas._skip_pays_for_chunk               # (chunk rows, k, n, itemsize)
    assert beats(32, 784, 256, 4)                    # the seed's network at b=64
    assert not beats(33, 784, 256, 4)
    assert not beats(100, 784, 256, 4)               # scikit-learn's batch of 200
    assert beats(32, 784, 320, 4)                    # W_0 980 KiB
    assert not beats(32, 784, 336, 4)                # 1029 KiB
    assert not beats(32, 784, 256, 8)                # float64: 1568 KiB
    half = _sparse(rng, (64, 784), np.float32, density=0.5)
    dense = _sparse(rng, (64, 784), np.float32, density=0.9)
    params = [np.zeros((784, 256), np.float32), np.zeros((256, 10), np.float32)]
    net = layers.Network(params, [np.zeros(256, np.float32), np.zeros(10, np.float32)],
                         1, 0)
    if _blas._blas_num_threads() == 0:
        return
    with threadpoolctl.threadpool_limits(2):
        assert net.plan(half, 64) == {"threads": 2, "skip_zeros": True, "sweep": False,
                                      "first_columns": 0}
        assert net.plan(dense, 64)["skip_zeros"] is False
        assert net.plan(half.astype(np.uint8), 64)["skip_zeros"] is True
        # larger batches: gemm, with X W_0 by columns for a step, by rows for
        # predict (which has no column cut)
        many = _sparse(rng, (1024, 784), np.float32, density=0.5)
        assert net.plan(many, 128) == {"threads": 2, "skip_zeros": False,
                                       "sweep": False, "first_columns": 2}
        assert net.plan(many, 1024, predict=True) == {
            "threads": 2, "skip_zeros": False, "sweep": False, "first_columns": 0}
        assert net.plan(many, 64, predict=True)["skip_zeros"] is True
    with threadpoolctl.threadpool_limits(1):
        assert net.plan(half, 64) == {"threads": 1, "skip_zeros": False, "sweep": False,
                                      "first_columns": 0}
        sweep = net.plan(half, 1, layers.Options(learning_rate=0.1))
        assert sweep["sweep"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
@pytest.mark.parametrize("options", [
    dict(solver="sgd", momentum=0, alpha=0, batch_size=37),
    dict(solver="sgd", momentum=0, alpha=1e-2, batch_size=64),      # decay: beta != 1
    dict(solver="sgd", momentum=0.9, nesterovs_momentum=True, batch_size=50, h=100),
    dict(solver="adam", batch_size=64, h=64),
    dict(solver="sgd", momentum=0, batch_size=32, activation="relu", weighted=True),
])
# The plan skips zeros on 2+ threads only (mode "always" on one thread too), and needs
# whole vectors of hidden units: h=100 takes gemm in both modes.
@pytest.mark.parametrize("blas_threads", [1, 2])
def test_training_does_not_depend_on_skipping_zeros(dtype, options, blas_threads,
                                                    skipzero_mode, kernel_level):
    options = {"activation": "logistic", **options}
    weighted = options.pop("weighted", False)
    n_hidden = options.pop("h", 48)
    X = _images(300, np.float64)
    X = (X * 255).astype(np.uint8) if dtype == np.uint8 else X.astype(dtype)
    y = np.random.default_rng(1).integers(0, 10, 300)
    sample_weight = np.random.default_rng(2).random(300) if weighted else None
    fits = {}
    for mode in ("never", "always"):
        skipzero_mode(mode)
        _blas._kernel_use_reset()
        clf = MLPClassifier(hidden_layer_sizes=(n_hidden,), random_state=0, max_iter=2,
                            tol=0, n_iter_no_change=100, **options)
        with threadpoolctl.threadpool_limits(blas_threads), warnings.catch_warnings():
            warnings.simplefilter("ignore")   # 2 epochs do not converge
            clf.fit(X, y, sample_weight=sample_weight)
        fits[mode] = clf
        # The two sides really differ: gemm only, then this level's kernels.
        skips = mode == "always" and n_hidden % (64 // clf.coefs_[0].itemsize) == 0
        assert _blas._kernel_levels_used() == ((kernel_level,) if skips else ())
    weights_dtype = fits["never"].coefs_[0].dtype
    rtol = 1e-4 if weights_dtype == np.float32 else 1e-10
    for got, expected in zip(fits["always"].coefs_ + fits["always"].intercepts_,
                             fits["never"].coefs_ + fits["never"].intercepts_):
        np.testing.assert_allclose(got, expected, rtol=rtol,
                                   atol=rtol * np.abs(expected).max())
    np.testing.assert_allclose(fits["always"].loss_curve_, fits["never"].loss_curve_,
                               rtol=rtol)
    skipzero_mode("always")
    proba_skipping = fits["never"].predict_proba(X)
    skipzero_mode("never")
    np.testing.assert_allclose(proba_skipping, fits["never"].predict_proba(X), rtol=0,
                               atol=1e-5 if weights_dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_one_epoch_skipping_zeros_matches_reference(dtype, skipzero_mode, kernel_level):
    # Against the independent NumPy implementation, on image-like data with L2.
    skipzero_mode("always")
    X = _images(150, dtype)
    y = np.random.default_rng(3).integers(0, 10, 150)
    y[:10] = np.arange(10)
    rng = np.random.default_rng(4)
    params = [0.01 * rng.standard_normal((784, 32)), 0.1 * rng.standard_normal(32),
              0.3 * rng.standard_normal((32, 10)), 0.1 * rng.standard_normal(10)]
    params = [p.astype(dtype) for p in params]
    expected, _ = sgd_epoch(X.astype(np.float64), y, [p.astype(np.float64) for p in params],
                            learning_rate=0.05, batch_size=40, n_classes=10, alpha=1e-3)
    clf = MLPClassifier(hidden_layer_sizes=32, warm_start=True, shuffle=False,
                        max_iter=1, learning_rate_init=0.05, batch_size=40,
                        alpha=1e-3, momentum=0, solver="sgd", activation="logistic")
    clf.coefs_ = [params[0].copy(), params[2].copy()]
    clf.intercepts_ = [params[1].copy(), params[3].copy()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # max_iter=1 does not converge
        clf.fit(X, y)
    got = [clf.coefs_[0], clf.intercepts_[0], clf.coefs_[1], clf.intercepts_[1]]
    rtol = 1e-4 if dtype == np.float32 else 1e-9
    for name, g, e in zip(["W1", "b1", "W2", "b2"], got, expected):
        np.testing.assert_allclose(g, e, rtol=rtol, atol=rtol * np.abs(e).max(),
                                   err_msg=name)
    assert _blas._kernel_levels_used() == (kernel_level,)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.uint8])
def test_batch_size_one_matches_reference(dtype, kernel_level):
    # batch_size 1 runs its own loop (one sweep over the rows of W1 of a sample's
    # non-zero pixels, built per level): against the NumPy reference, sample by sample.
    X = _images(60, np.float64, seed=6)
    y = np.random.default_rng(3).integers(0, 10, 60)
    y[:10] = np.arange(10)
    X_in = (X * 255).astype(np.uint8) if dtype == np.uint8 else X.astype(dtype)
    weights_dtype = np.float32 if dtype == np.float32 else np.float64
    rng = np.random.default_rng(4)
    params = [0.01 * rng.standard_normal((784, 48)), 0.1 * rng.standard_normal(48),
              0.3 * rng.standard_normal((48, 10)), 0.1 * rng.standard_normal(10)]
    params = [p.astype(weights_dtype) for p in params]
    scale = 255.0 if dtype == np.uint8 else 1.0
    expected, _ = sgd_epoch(X_in.astype(np.float64), y, [p.astype(np.float64) for p in params],
                            learning_rate=0.05 / scale, batch_size=1, n_classes=10)
    clf = MLPClassifier(hidden_layer_sizes=48, warm_start=True, shuffle=False,
                        max_iter=1, learning_rate_init=0.05 / scale, batch_size=1,
                        momentum=0, solver="sgd", activation="logistic", alpha=0.0)
    clf.coefs_ = [params[0].copy(), params[2].copy()]
    clf.intercepts_ = [params[1].copy(), params[3].copy()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # max_iter=1 does not converge
        clf.fit(X_in, y)
    got = [clf.coefs_[0], clf.intercepts_[0], clf.coefs_[1], clf.intercepts_[1]]
    assert got[0].dtype == weights_dtype
    rtol = 1e-4 if weights_dtype == np.float32 else 1e-9
    for name, g, e in zip(["W1", "b1", "W2", "b2"], got, expected):
        np.testing.assert_allclose(g, e, rtol=rtol, atol=rtol * np.abs(e).max(),
                                   err_msg=name)
