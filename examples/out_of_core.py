"""Out-of-core training on one machine: memory-mapped IDX files and partial_fit.

The training images are never loaded whole: they are decompressed once to plain IDX
files, memory-mapped with ``read_idx(path, mmap=True)``, and the network trains with
``partial_fit`` over chunks of rows, so memory is bounded by the chunk, not the file.
Each pass visits the chunks in a new random order, and ``partial_fit`` shuffles the
rows within each chunk (one epoch over the chunk per call).

    python examples/out_of_core.py                       # Fashion-MNIST, temp dir
    python examples/out_of_core.py --data-dir ~/fmnist   # keep the decompressed files
    python examples/out_of_core.py --chunk-rows 10000 --passes 10
    python examples/out_of_core.py --raw --lr 0.01       # uint8 chunks, nothing copied

Each chunk is read through a fresh memory map, dropped after the chunk: the pages of
a map stay in the process's resident set (RSS) while the map is open, so one map held
for the whole run would show the whole file in RSS by the end of the first pass
(page cache that the kernel can reclaim, but RSS all the same).
"""

import argparse
import gzip
import os
import shutil
import sys
import tempfile
import time

import numpy as np

from mlp_cy import MLPClassifier
from mlp_cy.datasets import read_idx

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
DEFAULT_SOURCE = "/usr/share/datasets/fashion-mnist"   # Debian's dataset-fashion-mnist


def decompress(source, target):
    """Uncompressed copies of the four IDX files of ``source`` in ``target``.

    Streams through gzip in 1 MiB pieces: memory stays small whatever the file size.
    Files already uncompressed in ``target`` (or in ``source``) are used as they are.
    """
    os.makedirs(target, exist_ok=True)
    paths = {}
    for role, name in FILES.items():
        out = os.path.join(target, name)
        if not os.path.isfile(out):
            if os.path.isfile(os.path.join(source, name)):
                out = os.path.join(source, name)
            else:
                with gzip.open(os.path.join(source, name + ".gz"), "rb") as f_in, \
                        open(out + ".part", "wb") as f_out:
                    shutil.copyfileobj(f_in, f_out, 2**20)
                os.replace(out + ".part", out)
        paths[role] = out
    return paths


def chunks(images_path, labels, rows, order, raw=False):
    """(X, y) for each chunk of ``rows`` rows, in the chunk order ``order``.

    X is float32 in [0, 1], the only copy of the chunk that is made; with ``raw``,
    the uint8 pixels of the map themselves (0..255), which partial_fit reads as they
    are, converting them batch by batch: nothing is copied, but the weights are
    float64 and raw pixels want a smaller learning rate (and train less well).
    """
    for k in order:
        images = read_idx(images_path, mmap=True)       # a fresh map per chunk
        pixels = images[k * rows:(k + 1) * rows]         # a view: nothing read yet
        X = pixels.reshape(len(pixels), -1)
        if not raw:
            X = X.astype(np.float32)
            X /= 255
        del images, pixels        # the map goes (and its pages leave RSS) with X
        yield X, labels[k * rows:(k + 1) * rows]


def accuracy(clf, images_path, labels, rows, raw=False):
    n_chunks = -(-len(labels) // rows)
    correct = sum(int((clf.predict(X) == y).sum())
                  for X, y in chunks(images_path, labels, rows, range(n_chunks), raw))
    return correct / len(labels)


def rss_mb(field="VmHWM"):
    """Resident memory in MB: now (VmRSS) or the peak so far (VmHWM, the default).

    Linux only for VmRSS; elsewhere both are the peak (ru_maxrss).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import resource
    except ImportError:
        return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=os.environ.get("MLP_CY_DATA", DEFAULT_SOURCE),
                        help="directory of the four Fashion-MNIST (or MNIST) IDX files, "
                             "gzipped or not (default: $MLP_CY_DATA or %(default)s)")
    parser.add_argument("--data-dir", help="where to keep the decompressed files "
                                           "(default: a temporary directory)")
    parser.add_argument("--chunk-rows", type=int, default=5000)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--raw", action="store_true",
                        help="train on the map's uint8 pixels, unscaled and uncopied")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        paths = decompress(args.source, args.data_dir or tmp)
        images = read_idx(paths["train_images"], mmap=True)
        y_train = read_idx(paths["train_labels"])           # labels are small: in memory
        y_test = read_idx(paths["test_labels"])
        n, rows = images.shape[0], args.chunk_rows
        print(f"{paths['train_images']}: {images.shape} {images.dtype}, "
              f"{os.path.getsize(paths['train_images']) / 1e6:.0f} MB, memory-mapped; "
              f"chunks of {rows} rows ("
              + ("uint8, not copied)" if args.raw else
                 f"{rows * images[0].size * 4 / 1e6:.1f} MB as float32)"))
        del images

        # The textbook network: a sigmoid hidden layer and plain minibatch SGD.
        clf = MLPClassifier(hidden_layer_sizes=args.hidden, activation="logistic",
                            solver="sgd", momentum=0.0, alpha=0.0,
                            batch_size=args.batch_size, learning_rate_init=args.lr,
                            random_state=args.seed)
        classes = np.arange(10)
        rng = np.random.default_rng(args.seed)
        n_chunks = -(-n // rows)
        rss_before = rss_mb("VmRSS")
        start = time.perf_counter()
        for p in range(args.passes):
            for X, y in chunks(paths["train_images"], y_train, rows,
                               rng.permutation(n_chunks), args.raw):
                clf.partial_fit(X, y, classes=classes)
            print(f"pass {p + 1}/{args.passes}: loss of the last chunk {clf.loss_:.4f}, "
                  f"{time.perf_counter() - start:.1f} s")
        test_accuracy = accuracy(clf, paths["test_images"], y_test, rows, args.raw)
        print(f"test accuracy: {test_accuracy:.4f}")
        print(f"peak RSS {rss_mb():.0f} MB, {rss_mb() - rss_before:.0f} MB above the RSS "
              f"before training: a few chunks, whatever the size of the file")


if __name__ == "__main__":
    main()
