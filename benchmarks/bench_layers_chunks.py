#!/usr/bin/env python
"""How the layers engine cuts a batch (layers.pyx, "The plan"): epochs of
Network.train_epoch at one chunk setting against another, in alternating child
processes (this machine is shared: compare within a run, by the median of pairs).

    python benchmarks/bench_layers_chunks.py                       # 1 and 2 threads
    python benchmarks/bench_layers_chunks.py --settings 1,2 2,2 1,1 --threads 2

A setting is ROW_CHUNKS_PER_THREAD,PARAM_CHUNKS_PER_THREAD (layers._set_chunks); the
first is the reference. Random data with 40% non-zeros, (512, 256, 128), relu, Adam,
batch 200, float32, 6,000 rows per epoch, min of 8 epochs per child. Nothing here is
a test.
"""

import argparse
import statistics
import subprocess
import sys
import time

import numpy as np


def child(setting, threads, hidden):
    from threadpoolctl import threadpool_limits

    from mlp_cy import layers
    layers._set_chunks(*setting)
    rng = np.random.default_rng(0)
    units = [784, *hidden, 10]
    coefs = [(rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
             for a, b in zip(units, units[1:])]
    intercepts = [np.zeros(b, np.float32) for b in units[1:]]
    X = (rng.random((6000, 784)) * (rng.random((6000, 784)) < 0.4)).astype(np.float32)
    y = rng.integers(0, 10, 6000).astype(np.int32)
    net = layers.Network(coefs, intercepts, 3, 0)
    options = layers.Options(learning_rate=1e-3, alpha=1e-4, solver=1)   # Adam
    state = np.zeros(net.state_size(options), np.float32)
    work = np.empty(net.workspace_size(200), np.float32)
    epoch = layers.Epoch()
    times = []
    with threadpool_limits(threads):
        for _ in range(8):
            order = rng.permutation(6000).astype(np.intp)
            start = time.perf_counter()
            net.train_epoch(X, y, None, order, 200, options, state, work, epoch)
            times.append(time.perf_counter() - start)
    print(min(times))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", nargs="+", default=["1,2", "4,2", "1,1"])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--hidden", default="512,256,128")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        setting, threads, hidden = args.child
        child(tuple(map(int, setting.split(","))), int(threads),
              tuple(map(int, hidden.split(","))))
        return

    def run(setting, threads):
        out = subprocess.run([sys.executable, __file__, "--child", setting, str(threads),
                              args.hidden], check=True, capture_output=True, text=True)
        return float(out.stdout.split()[-1])

    reference = args.settings[0]
    print(f"hidden {args.hidden}; seconds per epoch of 6,000 rows; reference {reference}")
    for threads in map(int, args.threads.split(",")):
        for setting in args.settings[1:]:
            a, b = [], []
            for _ in range(args.pairs):
                a.append(run(reference, threads))
                b.append(run(setting, threads))
            ratios = [y / x for x, y in zip(a, b)]
            print(f"threads {threads}: {setting} / {reference}: median of pairs "
                  f"{statistics.median(ratios):.3f}, fastest {min(b):.3f} / {min(a):.3f}")


if __name__ == "__main__":
    main()
