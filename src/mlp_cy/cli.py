"""The ``mlp-cy`` command line: train, evaluate and apply models on (Fashion-)MNIST.

``python -m mlp_cy`` runs the same program. Subcommands:

* ``train``    fits an MLPClassifier epoch by epoch, reports the loss and the
  accuracy on a held-out part of the training set after every epoch, then the
  test accuracy, and saves the model with its training history (optionally a PNG
  of the curves); Ctrl-C saves the model of the last completed epoch;
* ``evaluate`` reports a saved model's test accuracy, per-class precision and
  recall and the confusion matrix;
* ``predict``  prints a saved model's labels for the rows of an IDX or .npy file;
* ``plot``     draws a saved model's training history to a PNG.

Expected failures (missing or corrupt files, bad model files, unusable
arguments) end with one line ``mlp-cy: error: ...`` on stderr (a missing data
set with a few: where it was looked for and what to do) and exit status 1
(2 for invalid arguments, as argparse does); Ctrl-C ends with status 130.
The optional packages (matplotlib, threadpoolctl) are imported only by the
options that need them.
"""

import argparse
import contextlib
import copy
import os
import sys
import threading
import time
import warnings

import numpy as np

from . import __version__, _atomic, _plot
from ._base import _still_improving
from .classifier import MLPClassifier, _chance_loss, _learning_problem
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


def _momentum(text):
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def _non_negative_float(text):
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (np.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
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


def _add_threads_argument(parser):
    parser.add_argument(
        "--threads", type=_positive_int, metavar="N",
        help="use at most N threads for the BLAS and mlp_cy's own threads (needs "
             "threadpoolctl; default: the BLAS's own setting, e.g. OPENBLAS_NUM_THREADS)",
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
    train.add_argument("--activation", choices=("logistic", "tanh", "relu", "identity"),
                       default="logistic", help="hidden activation (default: %(default)s)")
    train.add_argument("--solver", choices=("sgd", "adam"), default="sgd",
                       help="minibatch SGD (with --momentum) or Adam "
                            "(default: %(default)s)")
    train.add_argument("--epochs", type=_positive_int, default=20, metavar="N",
                       help="passes over the training data (default: %(default)s)")
    train.add_argument("--batch-size", type=_positive_int, default=64, metavar="N",
                       help="rows per step (default: %(default)s)")
    train.add_argument("--lr", type=_positive_float, default=None,
                       help="learning rate (default: 0.1 with sgd, 0.001 with adam)")
    train.add_argument("--momentum", type=_momentum, default=0.0, metavar="M",
                       help="momentum of sgd, in [0, 1] as scikit-learn's (default: %(default)s)")
    train.add_argument("--alpha", type=_non_negative_float, default=0.0,
                       help="L2 penalty on the weights (default: %(default)s)")
    train.add_argument("--early-stopping", action="store_true",
                       help="stop once the held-out accuracy has not improved for "
                            "--patience epochs, and keep the best epoch's weights")
    train.add_argument("--patience", type=_positive_int, default=10, metavar="N",
                       help="epochs without improvement before --early-stopping stops "
                            "(default: %(default)s)")
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
                            "matrix to this PNG (needs matplotlib)")
    train.add_argument("--no-save-on-interrupt", dest="save_on_interrupt",
                       action="store_false",
                       help="on Ctrl-C, exit without saving (default: save the model "
                            "of the last completed epoch to --out)")
    _add_threads_argument(train)
    train.set_defaults(func=_train)

    evaluate = commands.add_parser(
        "evaluate", help="test accuracy, per-class precision/recall, confusion matrix",
        description="Evaluate a saved model on the test split of a data set.",
    )
    evaluate.add_argument("model", metavar="MODEL", help="model file written by train")
    _add_data_arguments(evaluate)
    _add_threads_argument(evaluate)
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
    _add_threads_argument(predict)
    predict.set_defaults(func=_predict)

    plot = commands.add_parser(
        "plot", help="plot a saved model's training history",
        description="Write a PNG of a saved model's training history: the training "
                    "and held-out loss and the held-out accuracy of every epoch. "
                    "Needs matplotlib.",
    )
    plot.add_argument("model", metavar="MODEL", help="model file written by train")
    plot.add_argument("--out", metavar="PNG",
                      help="PNG file to write (default: MODEL with the suffix .png)")
    plot.set_defaults(func=_plot_model)
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
        with _thread_limit(getattr(args, "threads", None)):
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


@contextlib.contextmanager
def _thread_limit(n_threads):
    """At most ``n_threads`` BLAS threads meanwhile; mlp_cy's own threads follow the
    BLAS's count. threadpoolctl does it for the libraries already loaded, which
    environment variables such as OPENBLAS_NUM_THREADS, read at load, cannot."""
    if n_threads is None:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        raise CLIError(
            "--threads needs threadpoolctl, which is not installed: pip install "
            "threadpoolctl (or, without it, set OPENBLAS_NUM_THREADS=N and "
            "OMP_NUM_THREADS=N in the environment of mlp-cy)"
        ) from None
    with threadpool_limits(limits=n_threads):
        yield


def _error_message(exc, args):
    if isinstance(exc, DatasetNotFoundError):
        # The one error of several lines: where the files were looked for and what
        # to do, an item a line, as load_mnist words them; then the options.
        lines = [line.rstrip() for line in str(exc).splitlines() if line.strip()]
        lines.append("On the command line, pass the directory with --data-home DIR.")
        if getattr(args, "dataset", None) == "mnist":
            lines.append("Or use --dataset fashion-mnist (Debian, Ubuntu: "
                         "apt-get install dataset-fashion-mnist).")
        return "\n".join(lines)
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        text = f"{exc.filename}: {exc.strerror}"
    elif isinstance(exc, MemoryError):
        text = "out of memory" + (f" ({exc})" if str(exc) else "")
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())  # one line, whatever the message


# train ------------------------------------------------------------------------------

def _train(args):
    _check_output(args.out, "--out", probe=True)
    if args.plot:
        _check_output(args.plot, "--plot", probe=True)
        _plot.check_available()  # before the data is loaded and minutes are spent
    if args.early_stopping and args.val_fraction == 0:
        raise CLIError("--early-stopping stops on the held-out accuracy: it needs "
                       "--val-fraction > 0")
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.solver]

    dtype = np.dtype(args.dtype)
    X, y, X_test, y_test = _load_data(args, dtype)
    X_train, y_train, X_val, y_val = _split(X, y, args.val_fraction, args.seed)
    classes = np.unique(y)
    held_out = f" ({len(y_val)} held out)" if len(y_val) else ""
    optimizer = args.solver + (f" momentum {args.momentum}"
                               if args.solver == "sgd" and args.momentum else "")
    alpha = f", alpha {args.alpha}" if args.alpha else ""
    print(f"{args.dataset}: training on {len(y_train)} images{held_out}, "
          f"testing on {len(y_test)}; network {X.shape[1]}-{args.hidden}-{len(classes)}, "
          f"{args.activation}, {args.dtype}, {optimizer}, batch {args.batch_size}, "
          f"lr {lr}{alpha}, seed {args.seed}", flush=True)

    clf = MLPClassifier(
        hidden_layer_sizes=args.hidden, activation=args.activation, solver=args.solver,
        alpha=args.alpha, momentum=args.momentum, batch_size=args.batch_size,
        learning_rate_init=lr, max_iter=args.epochs,
        # An int would re-seed every partial_fit call and repeat one shuffle order.
        random_state=np.random.RandomState(args.seed),
    )
    run = _Run(args)
    try:
        _train_epochs(args, clf, run, X_train, y_train, X_val, y_val, classes)
    except KeyboardInterrupt:
        if run.last is not None and args.save_on_interrupt:
            # The copy made after the last completed epoch: the interrupted one is
            # half done. A second Ctrl-C while saving leaves no partial file.
            epoch, last = run.last
            _save(run.finished(last, epoch), args)
            print(f"{PROG}: interrupted in epoch {epoch + 1}; saved the model "
                  f"of epoch {epoch} to {args.out} (--no-save-on-interrupt "
                  "exits without saving)", file=sys.stderr)
        raise
    clf = run.finished(clf)
    problem = _learning_problem(clf.loss_curve_, _chance_loss(
        np.searchsorted(clf.classes_, y_train)))
    if problem:
        default = DEFAULT_LR[args.solver]
        causes = [f"--lr {lr} is too large or too small for --solver {args.solver}"
                  + (f" (its default is {default})" if lr != default else "")]
        if run.epochs_done == args.epochs and _still_improving(clf.loss_curve_):
            causes.append(f"--epochs {args.epochs} are too few")
        print(f"{PROG}: warning: {problem} Likely causes: {'; or '.join(causes)}.",
              file=sys.stderr)

    y_pred = clf.predict(X_test)
    accuracy = _accuracy(y_test, y_pred)
    print(f"test accuracy: {accuracy:.4f} ({len(y_test)} images)")
    _save(clf, args)
    print(f"model saved to {args.out}")
    if args.plot:
        labels = np.union1d(clf.classes_, y_test)
        _plot.plot_training(
            args.plot, clf.loss_curve_, clf.validation_scores_ or [],
            confusion_matrix(y_test, y_pred, labels), _label_names(labels, args.dataset),
            val_loss=clf.validation_loss_curve_ or [],
            title=f"mlp_cy on {args.dataset}: {args.hidden} hidden units, "
                  f"test accuracy {accuracy:.4f}",
        )
        print(f"plot saved to {args.plot}")


DEFAULT_LR = {"sgd": 0.1, "adam": 0.001}
# Early stopping: an improvement of the held-out accuracy smaller than this is none.
EARLY_STOPPING_TOL = 1e-4


class _Run:
    """What train keeps across epochs: the held-out curves, a copy of the model after
    the last completed epoch (saved on Ctrl-C) and, with --early-stopping, the
    weights of the best epoch."""

    def __init__(self, args):
        self.early_stopping, self.patience = args.early_stopping, args.patience
        self.val_accuracy, self.val_loss = [], []
        self.epochs_done = 0
        self.last = None
        self.best_score, self.best_epoch, self.best_weights = -np.inf, 0, None

    def epoch_done(self, clf, epoch, accuracy=None, loss=None):
        """Record a completed epoch; False when early stopping says stop."""
        self.epochs_done = epoch
        if accuracy is not None:
            self.val_accuracy.append(accuracy)
            self.val_loss.append(loss)
            # The model file keeps them: `mlp-cy plot MODEL` draws them.
            clf.validation_scores_ = list(self.val_accuracy)
            clf.validation_loss_curve_ = list(self.val_loss)
            clf.best_validation_score_ = max(self.val_accuracy)
        go_on = True
        if self.early_stopping:
            if accuracy > self.best_score + EARLY_STOPPING_TOL:
                self.best_score, self.best_epoch = accuracy, epoch
                self.best_weights = [p.copy() for p in clf.coefs_ + clf.intercepts_]
            go_on = epoch - self.best_epoch < self.patience
        # One assignment, (epoch, copy): a Ctrl-C during the copy leaves the previous
        # pair whole, never this epoch's number with the last epoch's weights.
        self.last = (epoch, copy.deepcopy(clf))
        return go_on

    def finished(self, clf, epoch=None):
        """clf, trained for `epoch` epochs (default: all done), as it is saved: with
        --early-stopping, with the best epoch's weights."""
        epoch = self.epochs_done if epoch is None else epoch
        if self.best_weights is not None and self.best_epoch < epoch:
            W1, W2, b1, b2 = (w.copy() for w in self.best_weights)
            clf.coefs_, clf.intercepts_ = [W1, W2], [b1, b2]
        return clf


def _train_epochs(args, clf, run, X_train, y_train, X_val, y_val, classes):
    width = len(str(args.epochs))
    seconds = None
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught, \
                _Progress(f"epoch {epoch:{width}d}/{args.epochs}", seconds):
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
        line = (f"epoch {epoch:{width}d}/{args.epochs}  loss {clf.loss_:.4f}")
        accuracy = loss = None
        if len(y_val):
            accuracy, loss = _held_out_scores(clf, X_val, y_val)
            line += f"  held-out accuracy {accuracy:.4f}, loss {loss:.4f}"
        line += f"  {seconds:6.2f} s  {len(y_train) / max(seconds, 1e-9):8.0f} samples/s"
        print(line, flush=True)
        if not run.epoch_done(clf, epoch, accuracy, loss):
            print(f"early stopping: the held-out accuracy has not improved for "
                  f"{args.patience} epochs; keeping the weights of epoch "
                  f"{run.best_epoch} (held-out accuracy {run.best_score:.4f})", flush=True)
            break
    else:
        if run.best_weights is not None and run.best_epoch != run.epochs_done:
            print(f"early stopping: keeping the weights of epoch {run.best_epoch} "
                  f"(held-out accuracy {run.best_score:.4f})", flush=True)


def _held_out_scores(clf, X_val, y_val):
    """(accuracy, mean cross-entropy) of clf on the held-out rows."""
    proba = clf.predict_proba(X_val)
    codes = np.searchsorted(clf.classes_, y_val)
    accuracy = float(np.mean(np.argmax(proba, axis=1) == codes))
    tiny = np.finfo(proba.dtype).tiny
    loss = float(-np.mean(np.log(np.maximum(proba[np.arange(len(codes)), codes], tiny))))
    return accuracy, loss


def _save(clf, args):
    clf.random_state = args.seed  # the saved hyperparameters record the seed
    clf.save(args.out)


class _Progress:
    """How far an epoch is, on one line that rewrites itself, while it runs.

    Only on a terminal (stdout, else stderr), only once an epoch has run for DELAY
    seconds, and at most every INTERVAL seconds; a thread draws it while the epoch
    runs without the GIL, and clears it before the epoch's own line is printed. The
    fraction done is estimated from the previous epoch's time (epochs take the same
    time); the first epoch shows the time so far.
    """

    DELAY = 1.0
    INTERVAL = 0.5
    WIDTH = 20

    def __init__(self, label, expected_seconds):
        self.label, self.expected = label, expected_seconds
        self.stream = next((s for s in (sys.stdout, sys.stderr) if _is_terminal(s)), None)
        self.thread, self.shown = None, False

    def __enter__(self):
        if self.stream is not None:
            self.stop = threading.Event()
            self.thread = threading.Thread(target=self._draw, name="mlp-cy progress",
                                           daemon=True)
            self.thread.start()
        return self

    def _draw(self):
        start = time.perf_counter()
        if self.stop.wait(self.DELAY):
            return
        while True:
            elapsed = time.perf_counter() - start
            text = f"{self.label}  "
            if self.expected:
                done = min(elapsed / self.expected, 0.99)
                bar = "=" * int(done * self.WIDTH)
                text += (f"[{bar:<{self.WIDTH}}] {done:4.0%}  {elapsed:.0f} s of about "
                         f"{self.expected:.0f} s")
            else:
                text += f"{elapsed:.0f} s"
            with contextlib.suppress(OSError, ValueError):
                self.stream.write(f"\r{text}\x1b[K")
                self.stream.flush()
                self.shown = True
            if self.stop.wait(self.INTERVAL):
                return

    def __exit__(self, *exc_info):
        if self.thread is None:
            return
        self.stop.set()
        self.thread.join()
        if self.shown:
            with contextlib.suppress(OSError, ValueError):
                self.stream.write("\r\x1b[K")
                self.stream.flush()


def _is_terminal(stream):
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):
        return False


def _check_output(path, option, *, probe=False):
    """Fail now, not after training, if ``path`` cannot be written.

    With ``probe``, a temporary file like the one the model is written to is
    created and removed: permissions alone do not tell (root may write anywhere
    by them, yet nothing can be created in /proc), and an existing FIFO or device
    is never replaced.
    """
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CLIError(f"{option} {path}: the directory {directory} does not exist")
    if os.path.isdir(path):
        raise CLIError(f"{option} {path} is a directory")
    if not os.access(directory, os.W_OK):
        raise CLIError(f"{option} {path}: the directory {directory} is not writable")
    if probe:
        try:
            _atomic.check_writable(path)
        except OSError as exc:
            raise CLIError(f"{option} {path}: cannot be written "
                           f"({exc.strerror or exc})") from exc


def _load_data(args, dtype):
    if args.data_home is not None and not os.path.isdir(args.data_home):
        # Not silently passed over for the other places searched.
        raise CLIError(f"--data-home {args.data_home}: no such directory")
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


# plot -------------------------------------------------------------------------------

def _plot_model(args):
    _plot.check_available()
    out = args.out if args.out else os.path.splitext(args.model)[0] + ".png"
    if os.path.abspath(out) == os.path.abspath(args.model):
        raise CLIError(f"the plot would replace the model {args.model}; name it with --out")
    _check_output(out, "--out", probe=True)
    clf = load(args.model)
    W1, W2 = clf.coefs_
    if not clf.loss_curve_:
        raise CLIError(f"{args.model} has no training history to plot (no epoch)")
    held_out = (f", held-out accuracy {clf.validation_scores_[-1]:.4f}"
                if clf.validation_scores_ else "")
    _plot.plot_training(
        out, clf.loss_curve_, clf.validation_scores_ or [],
        val_loss=clf.validation_loss_curve_ or [],
        title=f"{os.path.basename(args.model)}: network {W1.shape[0]}-{W1.shape[1]}-"
              f"{W2.shape[1]}, {clf.activation}, {clf.solver}, "
              f"{len(clf.loss_curve_)} epochs{held_out}",
    )
    print(f"plot saved to {out}")


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
    # A regular file only: open() of a FIFO would wait for a writer forever.
    with _atomic.open_regular(path) as f:
        magic = f.read(len(_NPY_MAGIC))
        if magic.startswith(_ZIP_MAGIC):
            raise CLIError(f"{path} is a zip or .npz archive; pass an IDX or .npy file")
        if magic == _NPY_MAGIC:
            f.seek(0)
            try:
                array = np.load(f, allow_pickle=False)
            except ValueError as exc:  # pickled objects, or a corrupt header
                raise CLIError(f"{path}: not a numeric .npy array ({exc})") from exc
    if magic != _NPY_MAGIC:
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
