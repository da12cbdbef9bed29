#!/usr/bin/env python
"""The zero-skipping kernels at each instruction-set level, against the BLAS.

For every level this CPU runs (reference C, SSE2, AVX2, AVX-512; NEON on aarch64),
in one process, with the rounds of the things compared interleaved:

1. the two products alone on one thread, X W1 and W1's update X^T dZ1, on batches of
   Fashion-MNIST (50% non-zeros), against the BLAS's gemm;
2. whole epochs of plain SGD (h=256, b=64, float32, the seed's configuration) on
   --rows rows: on one thread, the serial step skipping zeros against the same step
   with gemm; on two threads, the parallel step (mlp_cy's threads, no BLAS call)
   against the serial step with 2-thread gemms;
3. the float sigmoid loop (60,000 x 256).

Ratios are the level's time over the BLAS's (below 1: the kernels win). They set
SKIPZERO_PAYS_SERIAL and SKIPZERO_PAYS_PARALLEL in src/mlp_cy/_blas.pyx.

The BLAS runs the kernels OpenBLAS picked for this CPU. To compare a level with the
BLAS of a CPU that has only that level, set OPENBLAS_CORETYPE for this command alone
(an AVX2-only machine: OPENBLAS_CORETYPE=Haswell; it is read when OpenBLAS loads):

    python benchmarks/bench_levels.py
    OPENBLAS_CORETYPE=Haswell python benchmarks/bench_levels.py --levels sse2,avx2

Nothing here is a test: no pass/fail exit status for timings.
"""

import argparse
import gc
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_train as B  # noqa: E402  (data loading, machine line, epoch helper)


# The clock of the one-thread timings: wall, or the process's CPU time (--clock cpu),
# which leaves out the time the process waits for a core on a busy machine.
one_thread_clock = time.perf_counter


def interleaved(fns, rounds, clock=None):
    """Min time of each of fns, their rounds interleaved (a, b, a, b, ...)."""
    clock = clock or time.perf_counter
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            gc.collect()
            t = clock()
            fn()
            best[i] = min(best[i], clock() - t)
    return best


def products(levels, X, rounds, shapes=((64, 256), (256, 1024))):
    """Section 1 (also profile_engine.py's section 6): the products alone, (b, h) in
    shapes, at each level against gemm."""
    from threadpoolctl import threadpool_limits

    from mlp_cy import _blas

    print("\n## 1. The products alone, one thread (time for one epoch's batches; ratio "
          "= kernels / gemm)\n")
    header = "| dtype | b | h | gemm X W1 s |" + "".join(
        f" {lv} |" for lv in levels) + " gemm update s |" + "".join(
        f" {lv} |" for lv in levels)
    print(header)
    print("|" + "---|" * (4 + 2 * len(levels)))
    rng = np.random.RandomState(0)
    with threadpool_limits(1):
        for dtype in (np.float32, np.float64):
            for b, h in shapes:
                batches = 60000 // b
                rows = rng.permutation(X.shape[0])[:8 * b]
                Xb = [np.ascontiguousarray(X[rows[i * b:(i + 1) * b]], dtype)
                      for i in range(8)]
                W = (rng.randn(784, h) * 0.05).astype(dtype)
                G = (rng.randn(b, h) * 0.01).astype(dtype)
                Z = np.empty((b, h), dtype)

                def gemm_fwd():
                    for A in Xb:
                        _blas._gemm_memview(110, 110, 1.0, A, W, 0.0, Z)

                def skip_fwd():
                    for A in Xb:
                        _blas._gemm_skipzero_memview(A, W, Z)

                def gemm_upd():
                    for A in Xb:
                        _blas._gemm_memview(116, 110, -1e-6, A, G, 1.0, W)

                def skip_upd():
                    for A in Xb:
                        _blas._gemm_t_skipzero_memview(-1e-6, A, G, 1.0, W)

                fwd, upd = {}, {}
                for level in levels:
                    _blas._set_kernel_level(level)
                    t = interleaved([gemm_fwd, skip_fwd, gemm_upd, skip_upd], rounds,
                                    one_thread_clock)
                    scale = batches / len(Xb)
                    fwd.setdefault("gemm", []).append(t[0] * scale)
                    upd.setdefault("gemm", []).append(t[2] * scale)
                    fwd[level], upd[level] = t[1] / t[0], t[3] / t[2]
                print(f"| {np.dtype(dtype).name} | {b} | {h} | {min(fwd['gemm']):.3f} |"
                      + "".join(f" {fwd[lv]:.2f} |" for lv in levels)
                      + f" {min(upd['gemm']):.3f} |"
                      + "".join(f" {upd[lv]:.2f} |" for lv in levels))


def epochs(levels, X, y, rounds):
    from threadpoolctl import threadpool_limits

    from mlp_cy import _blas

    h, b = 256, 64
    print(f"\n## 2. Epochs, h={h}, b={b}, float32, {len(X):,} rows, plain SGD "
          "(seconds; ratio = kernels / gemm)\n")
    print("| level | 1 thread: gemm step | skipping zeros | ratio | 2 threads: gemm step "
          "| parallel step | ratio |")
    print("|---|---|---|---|---|---|---|")
    y32 = y.astype(np.int32)
    params = B.glorot(784, h, 10, np.float32)
    order = np.random.RandomState(0).permutation(len(X)).astype(np.intp)

    def epoch(mode):
        run = B.engine_epoch(X, y32, b, [p.copy() for p in params], np.float32)

        def timed():
            _blas._set_skipzero_mode(mode)   # the engine reads it at each call
            run(order)
        return timed

    for level in levels:
        _blas._set_kernel_level(level)
        row = [level]
        for threads in (1, 2):
            with threadpool_limits(threads):
                gemm, skipping = epoch("never"), epoch("always")
                t = interleaved([gemm, skipping], rounds,
                                one_thread_clock if threads == 1 else None)
            row += [f"{t[0]:.3f}", f"{t[1]:.3f}", f"{t[1] / t[0]:.2f}"]
        _blas._set_skipzero_mode("auto")
        print("| " + " | ".join(row) + " |")


def sigmoid(levels, rounds):
    from mlp_cy import _blas
    from mlp_cy.kernels import Activation, _bias_activation

    print("\n## 3. The float sigmoid loop, 60,000 x 256 (ms)\n")
    print("| " + " | ".join(levels) + " |")
    print("|" + "---|" * len(levels))
    Z0 = np.random.RandomState(0).randn(60000, 256).astype(np.float32)
    bias = np.zeros(256, np.float32)
    Z = Z0.copy()
    times = []
    for level in levels:
        _blas._set_kernel_level(level)

        def run():
            Z[...] = Z0
            _bias_activation(Z, bias, Activation.LOGISTIC)
        copy = interleaved([lambda: Z.__setitem__(Ellipsis, Z0)], rounds,
                           one_thread_clock)[0]
        times.append(interleaved([run], rounds, one_thread_clock)[0] - copy)
    print("| " + " | ".join(f"{1e3 * t:.1f}" for t in times) + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--levels", default=None,
                    help="comma list (default: every level this CPU runs)")
    ap.add_argument("--rows", type=int, default=20000, help="rows per epoch (section 2)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--sections", default="1,2,3")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: one-thread timings by process CPU time (2 threads: wall)")
    args = ap.parse_args()
    global one_thread_clock
    if args.clock == "cpu":
        one_thread_clock = time.process_time

    B.set_threads(2, False, ["mlp_cy.network", "mlp_cy.kernels"])
    from threadpoolctl import threadpool_info

    from mlp_cy import _blas

    levels = args.levels.split(",") if args.levels else list(_blas._kernel_levels())
    for level in levels:
        if level not in _blas._kernel_levels():
            sys.exit(f"level {level!r} is not one of {_blas._kernel_levels()} here")
    print(f"# {B.machine_line()}")
    blas = [f"{lib.get('internal_api')} {lib.get('version')} {lib.get('architecture')}"
            for lib in threadpool_info() if lib.get("user_api") == "blas"]
    print(f"# BLAS: {'; '.join(blas)}")
    print(f"# python benchmarks/bench_levels.py {' '.join(sys.argv[1:])}; "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    X, y = B.load("train", np.float32)
    sections = args.sections.split(",")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if "1" in sections:
            products(levels, X, args.rounds)
        if "2" in sections:
            epochs(levels, np.ascontiguousarray(X[:args.rows]), y[:args.rows], args.rounds)
        if "3" in sections:
            sigmoid(levels, args.rounds)


if __name__ == "__main__":
    main()
