"""Tests for the mlp-cy command line, end to end on small synthetic IDX data.

The synthetic data set has the four files of Fashion-MNIST, with 28 x 28 uint8
images of 10 classes: class k is a bright 6 x 6 square at its own place in a 2 x 5
grid, plus noise, so that a small network learns it in a few epochs.
"""

import contextlib
import io
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import importorskip
from numpy.testing import assert_array_equal

import mlp_cy
from mlp_cy import datasets
from mlp_cy.cli import confusion_matrix, main
from mlp_cy.datasets import load_mnist, write_idx

N_TRAIN, N_TEST = 400, 150
TRAIN_ARGS = ["--epochs", "4", "--hidden", "24", "--lr", "0.5", "--batch-size", "20"]
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # ConvergenceWarning


def _images(labels, rng):
    images = rng.randint(0, 60, size=(len(labels), 28, 28)).astype(np.uint8)
    for image, label in zip(images, labels):
        row, col = 3 + 12 * (label // 5), 1 + 5 * (label % 5)
        image[row:row + 6, col:col + 6] = rng.randint(180, 256, size=(6, 6))
    return images


@pytest.fixture(scope="module")
def data_home(tmp_path_factory):
    """A data home with synthetic data in data_home/fashion-mnist/."""
    home = tmp_path_factory.mktemp("data")
    rng = np.random.RandomState(0)
    y_train = (np.arange(N_TRAIN) % 10).astype(np.uint8)
    y_test = rng.randint(0, 10, size=N_TEST).astype(np.uint8)
    directory = home / "fashion-mnist"
    directory.mkdir()
    write_idx(directory / "train-images-idx3-ubyte.gz", _images(y_train, rng))
    write_idx(directory / "train-labels-idx1-ubyte.gz", y_train)
    write_idx(directory / "t10k-images-idx3-ubyte.gz", _images(y_test, rng))
    write_idx(directory / "t10k-labels-idx1-ubyte", y_test)  # uncompressed works too
    return home


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Keep the real cache, data directories and network out of every test."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("MLP_CY_DATA", raising=False)
    monkeypatch.setattr(datasets, "_SYSTEM_DATA_DIRS", (str(tmp_path / "system"),))


def run(*argv):
    """Run main(argv); return (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def assert_one_line_error(status, err, expected_status=1):
    assert status == expected_status
    # "Loading <data set> from <dir>" may come first: progress, not the error.
    lines = [line for line in err.strip().splitlines() if not line.startswith("Loading ")]
    assert len(lines) == 1 and lines[0].startswith("mlp-cy: error: "), err
    assert "Traceback" not in err


def printed_accuracy(out):
    lines = [line for line in out.splitlines() if line.startswith("test accuracy: ")]
    assert len(lines) == 1, out
    return float(lines[0].split()[2])


@pytest.fixture(scope="module")
def trained(data_home, tmp_path_factory):
    """(model path, stdout of train) of one training run on the synthetic data."""
    model = tmp_path_factory.mktemp("model") / "model.npz"
    status, out, err = run("train", "--data-home", data_home, *TRAIN_ARGS,
                           "--out", model)
    assert status == 0, err
    return model, out


# train, evaluate, predict -----------------------------------------------------------

def test_train_prints_progress_and_saves_the_model(trained, data_home):
    model, out = trained
    epochs = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 4
    assert all("loss" in e and "held-out accuracy" in e and "samples/s" in e
               for e in epochs)
    assert "360 images (40 held out)" in out
    accuracy = printed_accuracy(out)
    assert accuracy > 0.9
    clf = mlp_cy.load(model)
    assert clf.coefs_[0].shape == (784, 24) and clf.coefs_[0].dtype == np.float32
    assert clf.n_iter_ == 1 and clf.t_ == 4 * 360 and len(clf.loss_curve_) == 4
    assert clf.random_state == 0
    _, _, X_test, y_test = load_mnist("fashion-mnist", data_home=data_home)
    assert np.mean(clf.predict(X_test) == y_test) == pytest.approx(accuracy, abs=1e-4)


def test_train_is_reproducible_with_a_seed(trained, data_home, tmp_path):
    model, out = trained                                # the default, --seed 0
    runs = {}
    for name, seed in [("zero", "0"), ("one", "1"), ("one-again", "1")]:
        status, out, _ = run("train", "--data-home", data_home, *TRAIN_ARGS,
                             "--seed", seed, "--out", tmp_path / f"{name}.npz")
        assert status == 0 and f"seed {seed}" in out.splitlines()[0]
        runs[name] = mlp_cy.load(tmp_path / f"{name}.npz")
        assert runs[name].random_state == int(seed)
    assert_array_equal(runs["zero"].coefs_[0], mlp_cy.load(model).coefs_[0])
    assert_array_equal(runs["one"].coefs_[0], runs["one-again"].coefs_[0])
    assert not np.array_equal(runs["one"].coefs_[0], runs["zero"].coefs_[0])


def test_train_float64_without_validation(data_home, tmp_path):
    status, out, _ = run("train", "--data-home", data_home, "--epochs", "1",
                         "--hidden", "8", "--dtype", "float64", "--val-fraction", "0",
                         "--out", tmp_path / "m")
    assert status == 0
    assert "held-out" not in out and "training on 400 images" in out
    assert mlp_cy.load(tmp_path / "m").coefs_[0].dtype == np.float64


def test_evaluate_prints_the_same_accuracy(trained, data_home):
    model, train_out = trained
    status, out, _ = run("evaluate", model, "--data-home", data_home)
    assert status == 0
    assert printed_accuracy(out) == printed_accuracy(train_out)
    assert "precision" in out and "recall" in out and "9 Ankle boot" in out
    assert "confusion matrix" in out
    # The confusion matrix: a header and 10 rows whose counts add up to N_TEST.
    rows = out.split("confusion matrix")[1].strip().splitlines()[2:]
    assert len(rows) == 10
    assert sum(int(c) for row in rows for c in row.split()[1:]) == N_TEST


def test_predict_idx_and_npy_files(trained, data_home, tmp_path):
    model, _ = trained
    images = data_home / "fashion-mnist" / "t10k-images-idx3-ubyte.gz"
    status, out, _ = run("predict", model, images)
    assert status == 0
    labels = out.split()
    assert len(labels) == N_TEST

    _, _, X_test, y_test = load_mnist("fashion-mnist", data_home=data_home)
    expected = [str(v) for v in mlp_cy.load(model).predict(X_test)]
    assert labels == expected

    # .npy: raw uint8 images, and float rows already in [0, 1]
    raw = datasets.read_idx(images)
    np.save(tmp_path / "raw.npy", raw)
    np.save(tmp_path / "rows.npy", X_test)
    for name in ("raw.npy", "rows.npy"):
        status, out, _ = run("predict", model, tmp_path / name)
        assert status == 0 and out.split() == expected

    status, out, _ = run("predict", model, tmp_path / "rows.npy",
                         "--out", tmp_path / "labels.txt")
    assert status == 0 and out == ""
    assert (tmp_path / "labels.txt").read_text().split() == expected


def test_evaluate_names_the_classes_of_its_dataset(trained, data_home, tmp_path):
    # The same synthetic files as MNIST: digits instead of Fashion-MNIST's names.
    import shutil

    model, train_out = trained
    shutil.copytree(data_home / "fashion-mnist", tmp_path / "mnist")
    status, out, err = run("evaluate", model, "--dataset", "mnist", "--no-download",
                           "--data-home", tmp_path)
    assert status == 0, err
    assert printed_accuracy(out) == printed_accuracy(train_out)
    assert "Ankle boot" not in out and "mnist" in err
    status, out, err = run("evaluate", model, "--dataset", "mnist", "--no-download",
                           "--data-home", data_home)          # no mnist/ there
    assert status == 1 and "Traceback" not in err
    assert err.startswith("mlp-cy: error: Could not find the mnist data set.")


@pytest.mark.parametrize("activation", ["logistic", "tanh", "relu", "identity"])
def test_activation_reaches_the_model(data_home, tmp_path, activation):
    status, out, err = run("train", "--data-home", data_home, "--epochs", "1",
                           "--hidden", "8", "--activation", activation,
                           "--out", tmp_path / "m.npz")
    assert status == 0, err
    assert f"784-8-10, {activation}, float32, sgd" in out.splitlines()[0]
    clf = mlp_cy.load(tmp_path / "m.npz")
    assert clf.activation == activation
    status, out, err = run("evaluate", tmp_path / "m.npz", "--data-home", data_home)
    assert status == 0 and f"784-8-10, {activation}, float32" in out


def test_two_hidden_layers_train_evaluate_and_predict(data_home, tmp_path):
    status, out, err = run("train", "--data-home", data_home, "--epochs", "1",
                           "--hidden", "16,8", "--out", tmp_path / "m.npz")
    assert status == 0, err
    assert "network 784-16-8-10, logistic" in out.splitlines()[0]
    clf = mlp_cy.load(tmp_path / "m.npz")
    assert [c.shape for c in clf.coefs_] == [(784, 16), (16, 8), (8, 10)]
    status, out, err = run("evaluate", tmp_path / "m.npz", "--data-home", data_home)
    assert status == 0 and "network 784-16-8-10, logistic, float32" in out, err


def test_a_regressor_file_is_refused_by_evaluate(data_home, tmp_path):
    from mlp_cy import MLPRegressor

    X = np.random.RandomState(0).rand(20, 784)
    MLPRegressor(hidden_layer_sizes=3, max_iter=2).fit(X, X[:, 0]).save(tmp_path / "r.npz")
    status, out, err = run("evaluate", tmp_path / "r.npz", "--data-home", data_home)
    assert status != 0 and "is a MLPRegressor, not a classifier" in err


@pytest.mark.parametrize("bad", ["0", "16,", "16,-2", "a,b"])
def test_bad_hidden_sizes_are_refused(data_home, tmp_path, bad):
    status, out, err = run("train", "--data-home", data_home, "--hidden", bad,
                           "--out", tmp_path / "m.npz")
    assert status == 2 and "--hidden" in err and "positive integer" in err


def test_the_installed_mlp_cy_script_runs(tmp_path):
    # The console script of pyproject.toml, as pip installs it beside this Python.
    import sysconfig

    scripts = sysconfig.get_path("scripts")
    path = os.path.join(scripts, "mlp-cy.exe" if os.name == "nt" else "mlp-cy")
    installed = any(os.path.realpath(mlp_cy.__file__).startswith(
        os.path.realpath(sysconfig.get_path(lib)) + os.sep) for lib in ("purelib", "platlib"))
    if not os.path.isfile(path):
        assert not installed, f"mlp_cy is installed but {path} is missing"
        pytest.skip(f"mlp_cy is imported from a source tree ({mlp_cy.__file__}) and no "
                    "mlp-cy script is installed")
    result = subprocess.run([path, "--version"], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"mlp-cy {mlp_cy.__version__}"
    result = subprocess.run([path, "train", "--epochs", "0"], capture_output=True,
                            text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2 and "--epochs" in result.stderr


def test_a_diverging_run_warns_and_stops(data_home, tmp_path):
    status, out, err = run("train", "--data-home", data_home, "--epochs", "3",
                           "--hidden", "8", "--lr", "1e300", "--out", tmp_path / "m.npz")
    assert status == 0
    warnings_ = [line for line in err.splitlines() if line.startswith("mlp-cy: warning: ")]
    assert len(warnings_) == 2, err
    assert "Training diverged in epoch 1: the loss is no longer finite" in warnings_[0]
    assert warnings_[1] == "mlp-cy: warning: stopping after epoch 1; try a smaller --lr"
    assert not [line for line in out.splitlines() if line.startswith("epoch")]
    clf = mlp_cy.load(tmp_path / "m.npz")       # the weights before the diverging epoch
    assert clf.loss_curve_ == [] and all(np.isfinite(w).all() for w in clf.coefs_)


def test_predict_refuses_archives_and_non_numbers(trained, tmp_path):
    model, _ = trained
    rows = np.zeros((3, 784), np.float32)
    np.savez(tmp_path / "rows.npz", X=rows)
    status, out, err = run("predict", model, tmp_path / "rows.npz")
    assert_one_line_error(status, err)
    assert "is a zip or .npz archive; pass an IDX or .npy file" in err and out == ""
    np.save(tmp_path / "text.npy", np.full((3, 784), "a"))
    status, out, err = run("predict", model, tmp_path / "text.npy")
    assert_one_line_error(status, err)
    assert "holds <U1 values, not numbers" in err and out == ""
    np.save(tmp_path / "objects.npy", np.full((3, 784), None, dtype=object),
            allow_pickle=True)
    status, out, err = run("predict", model, tmp_path / "objects.npy")
    assert_one_line_error(status, err)
    assert "not a numeric .npy array" in err and out == ""


def test_confusion_matrix():
    labels = np.array([0, 1, 2])
    cm = confusion_matrix([0, 0, 1, 2, 2, 5], [0, 1, 1, 2, 0, 2], labels)
    assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [1, 0, 1]])


# Errors -----------------------------------------------------------------------------

def test_corrupt_idx_gives_one_line_error_without_traceback(trained, tmp_path):
    model, _ = trained
    bad = tmp_path / "bad-idx3-ubyte"
    bad.write_bytes(b"\x00\x00\x08\x03" + b"\x00\x00\x00\x05" * 3 + b"short")
    result = subprocess.run(
        [sys.executable, "-m", "mlp_cy", "predict", str(model), str(bad)],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )
    assert_one_line_error(result.returncode, result.stderr)
    assert "bad-idx3-ubyte" in result.stderr and "truncated" in result.stderr
    assert result.stdout == ""


def test_corrupt_dataset_file(data_home, tmp_path):
    broken = tmp_path / "broken" / "fashion-mnist"
    broken.mkdir(parents=True)
    for name in os.listdir(data_home / "fashion-mnist"):
        (broken / name).write_bytes((data_home / "fashion-mnist" / name).read_bytes())
    labels = broken / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:-9])
    status, out, err = run("train", "--data-home", broken.parent, "--epochs", "1",
                           "--out", tmp_path / "m.npz")
    assert_one_line_error(status, err)
    assert "train-labels-idx1-ubyte.gz" in err
    assert not (tmp_path / "m.npz").exists()


def test_corrupt_model_file(trained, data_home, tmp_path):
    model, _ = trained
    broken = tmp_path / "broken.npz"
    broken.write_bytes(model.read_bytes()[:1000])
    status, _, err = run("evaluate", broken, "--data-home", data_home)
    assert_one_line_error(status, err)
    assert "not a valid mlp_cy model file" in err


def test_model_for_other_features(data_home, tmp_path):
    X = np.random.RandomState(0).rand(40, 4)
    mlp_cy.MLPClassifier(hidden_layer_sizes=3, max_iter=2).fit(
        X, np.arange(40) % 2).save(tmp_path / "small.npz")
    images = data_home / "fashion-mnist" / "t10k-images-idx3-ubyte.gz"
    status, _, err = run("predict", tmp_path / "small.npz", images)
    assert_one_line_error(status, err)
    assert "784 values per row" in err and "trained on 4" in err


def test_missing_data_set(tmp_path):
    (tmp_path / "empty").mkdir()
    status, out, err = run("train", "--dataset", "mnist", "--no-download",
                           "--data-home", tmp_path / "empty", "--out", tmp_path / "m")
    # The one error on several lines: where it looked, and what to do, a line each.
    assert status == 1 and "Traceback" not in err and out == ""
    lines = [line for line in err.strip().splitlines() if not line.startswith("Loading ")]
    assert lines[0].startswith("mlp-cy: error: ") and len(lines) >= 4
    assert lines[-2] == "On the command line, pass the directory with --data-home DIR."
    assert lines[-1].startswith("Or use --dataset fashion-mnist") and len(lines[-1]) < 100
    assert "apt-get install dataset-fashion-mnist" in lines[-1]
    assert any(str(tmp_path / "empty") in line for line in lines)


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--lr", "0"],
        ["train", "--epochs", "-3"],
        ["train", "--dataset", "cifar"],
        ["train", "--val-fraction", "1"],
        ["predict", "model.npz"],
        [],
    ],
)
def test_bad_arguments_exit_2(argv):
    status, out, err = run(*argv)
    assert status == 2
    assert "error:" in err and "Traceback" not in err


def test_unwritable_output_fails_before_training(data_home, tmp_path):
    status, out, err = run("train", "--data-home", data_home,
                           "--out", tmp_path / "no" / "such" / "dir" / "m.npz")
    assert_one_line_error(status, err)
    assert "does not exist" in err and out == ""


def test_keyboard_interrupt_exits_130(data_home, tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mlp_cy.MLPClassifier, "partial_fit", interrupt)
    status, _, err = run("train", "--data-home", data_home, "--out", tmp_path / "m")
    assert status == 130
    assert err.strip().splitlines()[-1] == "mlp-cy: interrupted"
    assert not (tmp_path / "m").exists()


# --plot -----------------------------------------------------------------------------

def test_plot_writes_a_png(data_home, tmp_path):
    importorskip("matplotlib", reason="--plot needs matplotlib (mlp_cy[plot])")
    png = tmp_path / "report.png"
    status, out, err = run("train", "--data-home", data_home, *TRAIN_ARGS,
                           "--out", tmp_path / "m.npz", "--plot", png)
    assert status == 0, err
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert f"plot saved to {png}" in out


def test_plot_without_matplotlib_fails_before_training(data_home, tmp_path, monkeypatch):
    # None in sys.modules makes `import matplotlib` raise ImportError.
    for name in [m for m in sys.modules if m.startswith("matplotlib")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)
    status, out, err = run("train", "--data-home", data_home, "--out", tmp_path / "m",
                           "--plot", tmp_path / "p.png")
    assert_one_line_error(status, err)
    assert "matplotlib" in err and "pip install" in err
    assert out == "" and not (tmp_path / "m").exists()


# Real data --------------------------------------------------------------------------

def test_train_on_debian_fashion_mnist(tmp_path, system_fashion_mnist):
    status, out, err = run("train", "--data-home", os.path.dirname(DEBIAN_FASHION_MNIST),
                           "--no-download", "--epochs", "1", "--hidden", "64",
                           "--out", tmp_path / "m.npz")
    assert status == 0, err
    assert "training on 54000 images (6000 held out), testing on 10000" in out
    assert printed_accuracy(out) > 0.7


# A training tool: options, history, Ctrl-C, plot, progress, threads (issue 15) ------

def test_data_home_that_does_not_exist_is_an_error(trained, tmp_path):
    for command in (["train", "--out", tmp_path / "m.npz"], ["evaluate", trained[0]]):
        status, out, err = run(*command, "--data-home", tmp_path / "no-such-dir")
        assert_one_line_error(status, err)
        assert "--data-home" in err and "no-such-dir" in err and "no such directory" in err
        assert out == ""


def test_solver_activation_momentum_alpha_reach_the_model(data_home, tmp_path):
    status, out, err = run("train", "--data-home", data_home, "--epochs", "2",
                           "--hidden", "8", "--solver", "adam", "--activation", "relu",
                           "--alpha", "0.01", "--out", tmp_path / "adam.npz")
    assert status == 0, err
    assert "relu, float32, adam, batch 64, lr 0.001, alpha 0.01" in out
    params = mlp_cy.load(tmp_path / "adam.npz").get_params()
    assert (params["solver"], params["activation"], params["alpha"],
            params["learning_rate_init"]) == ("adam", "relu", 0.01, 0.001)

    status, out, err = run("train", "--data-home", data_home, "--epochs", "2",
                           "--hidden", "8", "--momentum", "0.5", "--out", tmp_path / "m.npz")
    assert status == 0, err
    assert "sgd momentum 0.5" in out
    params = mlp_cy.load(tmp_path / "m.npz").get_params()
    assert (params["solver"], params["momentum"], params["activation"], params["alpha"],
            params["learning_rate_init"]) == ("sgd", 0.5, "logistic", 0.0, 0.1)


@pytest.mark.parametrize("argv", [["--momentum", "1.5"], ["--alpha", "-1"],
                                  ["--solver", "lbfgs"], ["--patience", "0"],
                                  ["--threads", "0"]])
def test_bad_training_options_exit_2(argv):
    status, out, err = run("train", *argv)
    assert status == 2 and "error:" in err and "Traceback" not in err


def test_the_model_file_keeps_the_training_history(trained):
    model, out = trained
    lines = [line.split() for line in out.splitlines() if line.startswith("epoch ")]
    clf = mlp_cy.load(model)
    assert clf.loss_curve_ == [pytest.approx(float(f[3]), abs=1e-4) for f in lines]
    # "training accuracy 0.9612"
    assert clf.training_scores_ == [pytest.approx(float(f[6]), abs=1e-4) for f in lines]
    assert all(0 <= score <= 1 for score in clf.training_scores_)
    # "held-out accuracy 0.9750, loss 0.1234"
    assert clf.validation_scores_ == [pytest.approx(float(f[9].rstrip(",")), abs=1e-4)
                                      for f in lines]
    assert clf.validation_loss_curve_ == [pytest.approx(float(f[11]), abs=1e-4)
                                          for f in lines]
    assert clf.best_validation_score_ == max(clf.validation_scores_)


def test_early_stopping_stops_and_keeps_the_best_epoch(data_home, tmp_path, monkeypatch):
    kept = {}
    real = mlp_cy.MLPClassifier.partial_fit

    def partial_fit(self, *args, **kwargs):
        result = real(self, *args, **kwargs)
        kept[len(self.loss_curve_)] = [p.copy() for p in self.coefs_ + self.intercepts_]
        return result

    monkeypatch.setattr(mlp_cy.MLPClassifier, "partial_fit", partial_fit)
    status, out, err = run("train", "--data-home", data_home, *TRAIN_ARGS[2:],
                           "--epochs", "40", "--early-stopping", "--patience", "2",
                           "--out", tmp_path / "m.npz")
    assert status == 0, err
    epochs = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(epochs) < 40 and "early stopping: the held-out accuracy has not " \
        "improved for 2 epochs" in out
    clf = mlp_cy.load(tmp_path / "m.npz")
    assert len(clf.loss_curve_) == len(epochs)        # the whole history is kept
    best = int(np.argmax(clf.validation_scores_)) + 1  # the first best epoch
    assert f"keeping the weights of epoch {best} " in out
    for got, want in zip(clf.coefs_ + clf.intercepts_, kept[best]):
        assert_array_equal(got, want)

    status, _, err = run("train", "--data-home", data_home, "--early-stopping",
                         "--val-fraction", "0", "--out", tmp_path / "x.npz")
    assert_one_line_error(status, err)
    assert "--val-fraction" in err


def test_a_run_that_does_not_learn_warns(data_home, tmp_path):
    status, out, err = run("train", "--data-home", data_home, *TRAIN_ARGS[:4],
                           "--lr", "30", "--batch-size", "20", "--out", tmp_path / "m.npz")
    assert status == 0
    warning = [line for line in err.splitlines() if "did not learn" in line]
    assert len(warning) == 1 and warning[0].startswith("mlp-cy: warning: ")
    assert "chance level" in warning[0] and "--lr 30.0 is too large" in warning[0]
    status, out, err = run("train", "--data-home", data_home, *TRAIN_ARGS,
                           "--out", tmp_path / "m.npz")
    assert status == 0 and "did not learn" not in err


def _interrupt_in_epoch(monkeypatch, n):
    real = mlp_cy.MLPClassifier.partial_fit
    calls = []

    def partial_fit(self, *args, **kwargs):
        calls.append(None)
        if len(calls) == n:
            real(self, *args, **kwargs)   # the weights move on, as a half epoch's do
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(mlp_cy.MLPClassifier, "partial_fit", partial_fit)


def test_ctrl_c_saves_the_last_completed_epoch(data_home, tmp_path, monkeypatch):
    _, _, err = run("train", "--data-home", data_home, *TRAIN_ARGS[:2], *TRAIN_ARGS[4:],
                    "--epochs", "2", "--out", tmp_path / "two.npz")
    _interrupt_in_epoch(monkeypatch, 3)
    status, out, err = run("train", "--data-home", data_home, *TRAIN_ARGS[:2],
                           *TRAIN_ARGS[4:], "--epochs", "10", "--out", tmp_path / "m.npz")
    assert status == 130
    lines = err.strip().splitlines()
    assert lines[-1] == "mlp-cy: interrupted"
    assert lines[-2].startswith(f"mlp-cy: interrupted in epoch 3; saved the model of epoch 2 "
                                f"to {tmp_path / 'm.npz'}")
    assert "test accuracy" not in out
    clf, two = mlp_cy.load(tmp_path / "m.npz"), mlp_cy.load(tmp_path / "two.npz")
    assert len(clf.loss_curve_) == 2 and clf.t_ == 2 * 360
    assert len(clf.validation_scores_) == 2
    for got, want in zip(clf.coefs_ + clf.intercepts_, two.coefs_ + two.intercepts_):
        assert_array_equal(got, want)      # epoch 2's weights, not half of epoch 3's
    assert sorted(os.listdir(tmp_path)) == ["m.npz", "two.npz"]  # no temporary file


def test_ctrl_c_without_saving(data_home, tmp_path, monkeypatch):
    _interrupt_in_epoch(monkeypatch, 3)
    status, out, err = run("train", "--data-home", data_home, *TRAIN_ARGS,
                           "--no-save-on-interrupt", "--out", tmp_path / "m.npz")
    assert status == 130 and err.strip().splitlines()[-1] == "mlp-cy: interrupted"
    assert "saved" not in err and not (tmp_path / "m.npz").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="Windows has no SIGINT to send")
def test_sigint_during_training_saves_the_model(data_home, tmp_path):
    # The real thing: SIGINT to the process while it trains, as Ctrl-C sends it.
    import signal
    import time

    model = tmp_path / "m.npz"
    process = subprocess.Popen(
        [sys.executable, "-m", "mlp_cy", "train", "--data-home", str(data_home),
         "--hidden", "24", "--epochs", "100000", "--out", str(model)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        for line in process.stdout:
            if line.startswith("epoch") and "/100000" in line and " 3/" in line:
                break
        time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "saved the model of epoch" in err and err.strip().endswith("mlp-cy: interrupted")
    epochs = int(err.split("saved the model of epoch ")[1].split()[0])
    clf = mlp_cy.load(model)
    assert epochs >= 3 and len(clf.loss_curve_) == epochs
    assert os.listdir(tmp_path) == ["m.npz"]


def test_plot_command_draws_a_saved_model(trained, tmp_path):
    importorskip("matplotlib", reason="plot needs matplotlib")
    model, _ = trained
    copy = tmp_path / "saved.npz"
    copy.write_bytes(model.read_bytes())
    status, out, err = run("plot", copy)
    assert status == 0, err
    png = tmp_path / "saved.png"                  # the model's name, .png
    assert out.strip() == f"plot saved to {png}"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    status, out, err = run("plot", copy, "--out", tmp_path / "other.png")
    assert status == 0 and (tmp_path / "other.png").stat().st_size > 20_000
    status, _, err = run("plot", tmp_path / "missing.npz")
    assert_one_line_error(status, err)


def test_plot_command_without_matplotlib(trained, monkeypatch, tmp_path):
    for name in [m for m in sys.modules if m.startswith("matplotlib")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)
    status, out, err = run("plot", trained[0], "--out", tmp_path / "p.png")
    assert_one_line_error(status, err)
    assert "matplotlib" in err and "pip install" in err


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_line_within_long_epochs_on_a_terminal(data_home, tmp_path, monkeypatch):
    import time

    from mlp_cy import cli

    real = mlp_cy.MLPClassifier.partial_fit

    def slow_partial_fit(self, *args, **kwargs):
        time.sleep(1.8)        # a long epoch: the progress line shows after DELAY
        return real(self, *args, **kwargs)

    monkeypatch.setattr(mlp_cy.MLPClassifier, "partial_fit", slow_partial_fit)
    out, err = _Terminal(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in ("train", "--data-home", data_home, *TRAIN_ARGS[2:],
                                        "--epochs", "2", "--out", tmp_path / "m.npz")])
    assert status == 0, err.getvalue()
    text = out.getvalue()
    updates = [part for part in text.split("\r") if part.startswith("epoch ")
               and "\x1b[K" in part and "loss" not in part]
    first = [u for u in updates if u.startswith("epoch 1/2")]
    second = [u for u in updates if u.startswith("epoch 2/2")]
    # Shown from DELAY (1 s) on, at most every INTERVAL (0.5 s): 1-2 updates per epoch.
    assert cli._Progress.DELAY >= 0.5 and cli._Progress.INTERVAL >= 0.25
    assert 1 <= len(first) <= 2 and 1 <= len(second) <= 2, updates
    assert " s" in first[0] and "%" not in first[0]       # epoch 1: time so far
    assert "%" in second[0] and "s of about " in second[0]  # then from the last epoch
    # Each update is cleared before the epoch's own line, which stays as it was.
    # What the terminal shows: each line from its last carriage return and clear.
    lines = [line.split("\r")[-1].replace("\x1b[K", "") for line in text.split("\n")]
    assert [line[:9] for line in lines if line.startswith("epoch ")] == \
        ["epoch 1/2", "epoch 2/2"]
    assert "\r" not in err.getvalue()


def test_no_progress_line_when_not_a_terminal(trained):
    _, out = trained
    assert "\r" not in out and "\x1b" not in out


def test_threads_limits_the_blas_for_the_run(data_home, tmp_path, monkeypatch):
    importorskip("threadpoolctl", reason="--threads uses threadpoolctl")
    from mlp_cy import _blas

    if _blas._blas_num_threads() == 0:
        pytest.skip("this BLAS does not tell its thread count")
    seen = []
    real = mlp_cy.MLPClassifier.partial_fit

    def partial_fit(self, *args, **kwargs):
        seen.append(_blas._blas_num_threads())    # what the engine's threads follow
        return real(self, *args, **kwargs)

    monkeypatch.setattr(mlp_cy.MLPClassifier, "partial_fit", partial_fit)
    before = _blas._blas_num_threads()
    status, _, err = run("train", "--data-home", data_home, *TRAIN_ARGS, "--threads", "1",
                         "--out", tmp_path / "m.npz")
    assert status == 0, err
    assert seen == [1] * 4
    assert _blas._blas_num_threads() == before     # restored after the run


def test_threads_without_threadpoolctl_says_what_to_do(data_home, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)
    status, out, err = run("train", "--data-home", data_home, "--threads", "1",
                           "--out", tmp_path / "m.npz")
    assert_one_line_error(status, err)
    assert "pip install threadpoolctl" in err and "OPENBLAS_NUM_THREADS" in err
    assert out == ""
