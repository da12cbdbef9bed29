"""The ``mlp-cy`` command line: train, evaluate and apply models on (Fashion-)MNIST.

``python -m mlp_cy`` runs the same program. Subcommands:

* ``train``    fits an MLPClassifier epoch by epoch, reports the loss and the
  accuracy on a held-out part of the training set after every epoch, then the
  test accuracy, and saves the model (optionally a PNG of the curves);
* ``evaluate`` reports a saved model's test accuracy, per-class precision and
  recall and the confusion matrix;
* ``predict``  prints a saved model's labels for the rows of an IDX or .npy file.

Expected failures (missing or corrupt files, bad model files, unusable
arguments) end with one line ``mlp-cy: error: ...`` on stderr and exit status 1
(2 for invalid arguments, as argparse does); Ctrl-C ends with status 130.
"""

import argparse
import contextlib
import os
import sys
import time
import warnings

import numpy as np

from . import __version__, _plot
from .classifier import MLPClassifier
from .datasets import DatasetNotFoundError, load_mnist, read_idx
from .persistence import load

__all__ = ["build_parser", "confusion_matrix", "main"]

PROG = "mlp-cy"
DATASETS = ("fashion-mnist", "mnist")
FASHION_MNIST_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


class CLIError(Exception):
    """An error whose message is shown to the user as is, without a traceback."""


# Arguments ------------------------------------------------------------------------

def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (np.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def _seed(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(
            f"expected an integer in [0, 2**32), got {text!r}"
        )
    return value


def _add_data_arguments(parser):
    parser.add_argument(
        "--dataset", choices=DATASETS, default="fashion-mnist",
        help="data set (default: %(default)s)",
    )
    parser.add_argument(
        "--data-home", metavar="DIR",
        help="directory holding the four IDX files of the data set, directly or in "
             "DIR/<dataset>/; downloads go to DIR/<dataset>/ (default: $MLP_CY_DATA, "
             "else ~/.cache/mlp_cy; /usr/share/datasets/<dataset> is also searched)",
    )
    parser.add_argument(
        "--no-download", action="store_true",
        help="fail instead of downloading the data set when it is not found",
    )


def build_parser():
    """The argument parser of ``mlp-cy``.

    Returns
    -------
    parser : argparse.ArgumentParser
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train and use mlp_cy's two-layer MLP classifier on MNIST and "
                    "Fashion-MNIST.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train", help="train a model and save it",
        description="Train on the training split minus a held-out validation part, "
                    "print one line per epoch, then the test accuracy, and save the "
                    "model.",
    )
    _add_data_arguments(train)
    train.add_argument("--hidden", type=_positive_int, default=256, metavar="N",
                       help="hidden units (default: %(default)s)")
    train.add_argument("--activation", choices=("logistic", "tanh", "relu"),
                       default="logistic", help="hidden activation (default: %(default)s)")
    train.add_argument("--epochs", type=_positive_int, default=20, metavar="N",
                       help="passes over the training data (default: %(default)s)")
    train.add_argument("--batch-size", type=_positive_int, default=64, metavar="N",
                       help="rows per SGD step (default: %(default)s)")
    train.add_argument("--lr", type=_positive_float, default=0.1,
                       help="SGD learning rate (default: %(default)s)")
    train.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                       help="floating-point type of data and weights (default: %(default)s)")
    train.add_argument("--seed", type=_seed, default=0,
                       help="seed of the split, the initial weights and the shuffles "
                            "(default: %(default)s)")
    train.add_argument("--val-fraction", type=_fraction, default=0.1, metavar="F",
                       help="part of the training split held out to report accuracy "
                            "after each epoch; 0 trains on all of it (default: %(default)s)")
    train.add_argument("--out", default="model.npz", metavar="MODEL",
                       help="model file to write (default: %(default)s)")
    train.add_argument("--plot", metavar="PNG",
                       help="also write the loss and accuracy curves and the confusion "
                            "matrix to this PNG (needs matplotlib: mlp_cy[plot])")
    train.set_defaults(func=_train)

    evaluate = commands.add_parser(
        "evaluate", help="test accuracy, per-class precision/recall, confusion matrix",
        description="Evaluate a saved model on the test split of a data set.",
    )
    evaluate.add_argument("model", metavar="MODEL", help="model file written by train")
    _add_data_arguments(evaluate)
    evaluate.set_defaults(func=_evaluate)

    predict = commands.add_parser(
        "predict", help="print the predicted label of each row of a file",
        description="Print one predicted label per line for the rows of FILE: an IDX "
                    "file (e.g. t10k-images-idx3-ubyte.gz) or a .npy array, of shape "
                    "(n, 28, 28) or (n, 784). uint8 pixels are scaled to [0, 1] as in "
                    "training; other values are used as they are.",
    )
    predict.add_argument("model", metavar="MODEL", help="model file written by train")
    predict.add_argument("file", metavar="FILE", help="IDX or .npy file of images")
    predict.add_argument("--out", metavar="TXT",
                         help="write the labels to this file instead of stdout")
    predict.set_defaults(func=_predict)
    return parser


# Entry point ------------------------------------------------------------------------

def main(argv=None):
    """Run ``mlp-cy`` with ``argv`` (default: ``sys.argv[1:]``).

    Parameters
    ----------
    argv : list of str, default=None

    Returns
    -------
    status : int
        0 on success, 1 on an error, 2 on invalid arguments, 130 if interrupted.
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version or an argparse error
        return 0 if exc.code is None else int(exc.code)
    try:
        args.func(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `| head`); silence the final flush of stdout.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (CLIError, _plot.MatplotlibMissingError, OSError, ValueError,
            MemoryError) as exc:
        print(f"{PROG}: error: {_error_message(exc, args)}", file=sys.stderr)
        return 1
    return 0


def _error_message(exc, args):
    if isinstance(exc, DatasetNotFoundError):
        hint = " On the command line, pass the directory with --data-home DIR."
        if getattr(args, "dataset", None) == "mnist":
            hint += (" Or use --dataset fashion-mnist, which Debian/Ubuntu install "
                     "with `apt-get install dataset-fashion-mnist`.")
        text = str(exc) + hint
    elif isinstance(exc, OSError) and exc.strerror and exc.filename:
        text = f"{exc.filename}: {exc.strerror}"
    elif isinstance(exc, MemoryError):
        text = "out of memory" + (f" ({exc})" if str(exc) else "")
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())  # one line, whatever the message


# train ------------------------------------------------------------------------------

def _train(args):
    _check_output(args.out, "--out")
    if args.plot:
        _check_output(args.plot, "--plot")
        _plot.check_available()  # before the data is loaded and minutes are spent

    dtype = np.dtype(args.dtype)
    X, y, X_test, y_test = _load_data(args, dtype)
    X_train, y_train, X_val, y_val = _split(X, y, args.val_fraction, args.seed)
    classes = np.unique(y)
    held_out = f" ({len(y_val)} held out)" if len(y_val) else ""
    print(f"{args.dataset}: training on {len(y_train)} images{held_out}, "
          f"testing on {len(y_test)}; network {X.shape[1]}-{args.hidden}-{len(classes)}, "
          f"{args.activation}, {args.dtype}, batch {args.batch_size}, lr {args.lr}, "
          f"seed {args.seed}", flush=True)

    clf = MLPClassifier(
        hidden_layer_sizes=args.hidden, activation=args.activation,
        batch_size=args.batch_size, learning_rate_init=args.lr, max_iter=args.epochs,
        # An int would re-seed every partial_fit call and repeat one shuffle order.
        random_state=np.random.RandomState(args.seed),
    )
    loss_curve, val_accuracy = [], []
    width = len(str(args.epochs))
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            clf.partial_fit(X_train, y_train, classes=classes)
        seconds = time.perf_counter() - start
        for warning in caught:
            print(f"{PROG}: warning: {' '.join(str(warning.message).split())}",
                  file=sys.stderr)
        if clf.n_iter_ == 0:  # the epoch diverged and was undone
            print(f"{PROG}: warning: stopping after epoch {epoch}; try a smaller --lr",
                  file=sys.stderr)
            break
        loss_curve.append(clf.loss_)
        line = (f"epoch {epoch:{width}d}/{args.epochs}  loss {clf.loss_:.4f}")
        if len(y_val):
            val_accuracy.append(_accuracy(y_val, clf.predict(X_val)))
            line += f"  held-out accuracy {val_accuracy[-1]:.4f}"
        line += f"  {seconds:6.2f} s  {len(y_train) / max(seconds, 1e-9):8.0f} samples/s"
        print(line, flush=True)

    y_pred = clf.predict(X_test)
    accuracy = _accuracy(y_test, y_pred)
    print(f"test accuracy: {accuracy:.4f} ({len(y_test)} images)")
    clf.random_state = args.seed  # the saved hyperparameters record the seed
    clf.save(args.out)
    print(f"model saved to {args.out}")
    if args.plot:
        labels = np.union1d(clf.classes_, y_test)
        _plot.plot_training(
            args.plot, loss_curve, val_accuracy,
            confusion_matrix(y_test, y_pred, labels), _label_names(labels, args.dataset),
            title=f"mlp_cy on {args.dataset}: {args.hidden} hidden units, "
                  f"test accuracy {accuracy:.4f}",
        )
        print(f"plot saved to {args.plot}")


def _check_output(path, option):
    """Fail now, not after training, if ``path`` cannot be written."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CLIError(f"{option} {path}: the directory {directory} does not exist")
    if os.path.isdir(path):
        raise CLIError(f"{option} {path} is a directory")
    if not os.access(directory, os.W_OK):
        raise CLIError(f"{option} {path}: the directory {directory} is not writable")


def _load_data(args, dtype):
    return load_mnist(
        args.dataset, data_home=args.data_home, download=not args.no_download,
        dtype=dtype, verbose=True,
    )


def _split(X, y, fraction, seed):
    """A random part of ``fraction`` of the rows held out, the rest for training."""
    n_val = int(round(fraction * len(y)))
    if n_val == 0:
        return X, y, X[:0], y[:0]
    order = np.random.RandomState(seed).permutation(len(y))
    train, val = np.sort(order[n_val:]), np.sort(order[:n_val])
    return X[train], y[train], X[val], y[val]


# evaluate ---------------------------------------------------------------------------

def _evaluate(args):
    clf = load(args.model)
    if clf.classes_.dtype.kind not in "biu":
        raise CLIError(
            f"{args.model} predicts labels {clf.classes_[:3].tolist()}..., not the "
            f"digits 0-9 of {args.dataset}"
        )
    dtype = clf.coefs_[0].dtype  # the dtype the model computes in
    _, _, X_test, y_test = _load_data(args, dtype)
    _check_n_features(clf, X_test.shape[1], f"the {args.dataset} images")
    y_pred = clf.predict(X_test)
    W1, W2 = clf.coefs_
    print(f"model {args.model}: network {W1.shape[0]}-{W1.shape[1]}-{W2.shape[1]}, "
          f"{clf.activation}, {W1.dtype}")
    print(f"test accuracy: {_accuracy(y_test, y_pred):.4f} ({len(y_test)} images)")
    labels = np.union1d(clf.classes_, y_test)
    confusion = confusion_matrix(y_test, y_pred, labels)
    print()
    print(_format_per_class(confusion, labels, args.dataset))
    print()
    print("confusion matrix (rows: true label, columns: predicted label)")
    print(_format_confusion(confusion, labels))


def confusion_matrix(y_true, y_pred, labels):
    """Count the (true, predicted) pairs, with numpy only.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
    labels : ndarray of shape (n_labels,)
        Sorted labels; pairs with a label outside them are not counted.

    Returns
    -------
    confusion : ndarray of shape (n_labels, n_labels), dtype int64
        ``confusion[i, j]`` is the number of samples of label ``labels[i]``
        predicted as ``labels[j]``.
    """
    labels = np.asarray(labels)
    n = len(labels)
    rows = _codes(np.asarray(y_true), labels)
    cols = _codes(np.asarray(y_pred), labels)
    keep = (rows >= 0) & (cols >= 0)
    counts = np.bincount(rows[keep] * n + cols[keep], minlength=n * n)
    return counts.reshape(n, n).astype(np.int64)


def _codes(values, labels):
    """Index of each value in the sorted ``labels``; -1 for values not in them."""
    index = np.clip(np.searchsorted(labels, values), 0, len(labels) - 1)
    return np.where(labels[index] == values, index, -1)


def _format_per_class(confusion, labels, dataset):
    names = _label_names(labels, dataset)
    true_counts, predicted_counts = confusion.sum(axis=1), confusion.sum(axis=0)
    correct = np.diag(confusion)
    width = max(len("class"), *(len(name) for name in names))
    lines = [f"{'class':<{width}}  precision  recall  support"]
    for name, hits, n_pred, n_true in zip(names, correct, predicted_counts, true_counts):
        precision = f"{hits / n_pred:.4f}" if n_pred else "n/a"
        recall = f"{hits / n_true:.4f}" if n_true else "n/a"
        lines.append(f"{name:<{width}}  {precision:>9}  {recall:>6}  {n_true:>7}")
    return "\n".join(lines)


def _format_confusion(confusion, labels):
    names = [str(label) for label in labels]
    width = max(len(str(confusion.max())), *(len(name) for name in names))
    head = max(len(name) for name in names)
    lines = [" " * head + "  " + " ".join(f"{name:>{width}}" for name in names)]
    for name, row in zip(names, confusion):
        lines.append(f"{name:>{head}}  " + " ".join(f"{c:>{width}d}" for c in row))
    return "\n".join(lines)


def _label_names(labels, dataset):
    if dataset == "fashion-mnist":
        return [f"{label} {FASHION_MNIST_NAMES[label]}"
                if isinstance(label, (int, np.integer)) and 0 <= label < 10
                else str(label) for label in labels]
    return [str(label) for label in labels]


def _accuracy(y_true, y_pred):
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred))) if len(y_true) else 0.0


def _check_n_features(clf, n_features, what):
    if n_features != clf.n_features_in_:
        raise CLIError(
            f"{what} have {n_features} values per row, but the model was trained on "
            f"{clf.n_features_in_}"
        )


# predict ----------------------------------------------------------------------------

def _predict(args):
    clf = load(args.model)
    if args.out:
        _check_output(args.out, "--out")
    X = _read_features(args.file, clf.coefs_[0].dtype)
    _check_n_features(clf, X.shape[1], f"the rows of {args.file}")
    text = "".join(f"{label}\n" for label in clf.predict(X))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()


def _read_features(path, dtype):
    """Rows of an IDX or .npy file as a 2-D ``dtype`` array, uint8 scaled to [0, 1]."""
    with open(path, "rb") as f:
        magic = f.read(len(_NPY_MAGIC))
    if magic.startswith(_ZIP_MAGIC):
        raise CLIError(f"{path} is a zip or .npz archive; pass an IDX or .npy file")
    if magic == _NPY_MAGIC:
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as exc:  # pickled objects, or a corrupt header
            raise CLIError(f"{path}: not a numeric .npy array ({exc})") from exc
    else:
        array = read_idx(path)
    if array.ndim < 2 or array.shape[0] == 0:
        raise CLIError(
            f"{path} holds an array of shape {array.shape}; expected images of shape "
            "(n, 28, 28) or rows of shape (n, n_features), n >= 1"
        )
    if array.dtype.kind not in "buif":
        raise CLIError(f"{path} holds {array.dtype} values, not numbers")
    X = array.reshape(array.shape[0], -1)
    if array.dtype == np.uint8:  # raw pixels, scaled as load_mnist scales them
        X = X.astype(dtype)
        X /= 255
        return X
    return X.astype(dtype)
