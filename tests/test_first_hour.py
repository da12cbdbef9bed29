"""A newcomer's first hour (issue 15): defaults that learn, a fast import that leaves
scikit-learn alone until it is used, and runs that say when they did not learn."""

import json
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from conftest import importorskip

from mlp_cy import MLPClassifier
from mlp_cy._compat import ConvergenceWarning

pytestmark = pytest.mark.filterwarnings("ignore:Stochastic Optimizer")  # short fits

OPTIONAL = ("sklearn", "pandas", "matplotlib", "dask", "distributed", "threadpoolctl")


def _python(code):
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _optional_modules_after(code):
    stdout = _python(textwrap.dedent(code) + textwrap.dedent(f"""
        import sys
        print({OPTIONAL!r} and sorted({{m.split(".")[0] for m in sys.modules}}
                                      & set({OPTIONAL!r})))
    """))
    return stdout.strip().splitlines()[-1]


# Fast import --------------------------------------------------------------------------

def test_import_mlp_cy_imports_nothing_optional():
    assert _optional_modules_after("import mlp_cy\nfrom mlp_cy import MLPClassifier\n"
                                   "MLPClassifier().get_params()\n") == "[]"


def test_the_command_line_imports_nothing_optional():
    # --version, and the parser of every command, as the mlp-cy script runs them.
    code = """
        import contextlib, io
        from mlp_cy.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["--version"]) == 0
            for command in ("train", "evaluate", "predict", "plot"):
                assert main([command, "--help"]) == 0
    """
    assert _optional_modules_after(code) == "[]"
    result = subprocess.run([sys.executable, "-m", "mlp_cy", "--version"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("mlp-cy 0.")


def test_import_adds_little_beyond_numpy_and_scipy():
    # What `import mlp_cy` (and its command line) adds to `import numpy, scipy.linalg`,
    # which it needs: its own modules and a few of the standard library's, nothing
    # else. Counted, not timed (times are measured in the closing notes, not here).
    def imported(code):
        out = subprocess.run([sys.executable, "-X", "importtime", "-c", code],
                             capture_output=True, text=True, timeout=120)
        return {line[len("import time:"):].split("|")[2].strip()
                for line in out.stderr.splitlines()
                if line.startswith("import time:") and "cumulative" not in line}

    extra = imported("import mlp_cy.cli") - imported("import numpy, scipy.linalg")
    packages = {name.split(".")[0].lstrip("_") for name in extra}
    assert "mlp_cy" in packages
    third_party = packages - {"mlp_cy"} - set(sys.stdlib_module_names)
    assert not third_party, sorted(third_party)
    assert len(extra) < 60, sorted(extra)


SKLEARN_VIEW = """
    import json, pickle, warnings
    {first}
    import sklearn
    from sklearn.base import BaseEstimator, ClassifierMixin, clone, is_classifier
    from sklearn.exceptions import ConvergenceWarning, NotFittedError
    from sklearn.utils import get_tags
    from mlp_cy import MLPClassifier
    from mlp_cy._compat import ConvergenceWarning as OurConvergenceWarning

    clf = MLPClassifier(hidden_layer_sizes=3, max_iter=2)
    try:
        clf.predict([[0.0]])
    except NotFittedError:
        not_fitted = True
    with sklearn.config_context(enable_metadata_routing=True):
        routed = type(clf.set_fit_request(sample_weight=True)).__name__
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        try:
            warnings.warn("x", OurConvergenceWarning)
        except ConvergenceWarning:
            caught = True
    print(json.dumps({{
        "mro": [c.__module__ + "." + c.__name__ for c in MLPClassifier.__mro__],
        "attributes": sorted(dir(MLPClassifier)),
        "isinstance": isinstance(clf, BaseEstimator) and isinstance(clf, ClassifierMixin),
        "is_classifier": is_classifier(clf),
        "estimator_type": get_tags(clf).estimator_type,
        "clone": repr(clone(clf)),
        "routing": routed,
        "not_fitted": not_fitted, "caught": caught,
        "pickle": repr(pickle.loads(pickle.dumps(clf))) == repr(clf),
    }}))
"""


def test_scikit_learn_integration_whichever_is_imported_first():
    importorskip("sklearn", reason="scikit-learn is a test dependency")
    before = json.loads(_python(SKLEARN_VIEW.format(first="import sklearn.base")))
    after = json.loads(_python(SKLEARN_VIEW.format(first="import mlp_cy")))
    assert after == before
    assert after["mro"][1:4] == ["sklearn.base.ClassifierMixin", "mlp_cy._base.BaseMLP",
                                 "sklearn.base.BaseEstimator"]
    assert after["isinstance"] and after["is_classifier"] and after["not_fitted"]
    assert after["estimator_type"] == "classifier" and after["caught"] and after["pickle"]
    assert after["clone"] == "MLPClassifier(hidden_layer_sizes=3, max_iter=2)"
    assert after["routing"] == "MLPClassifier"


# Defaults that learn --------------------------------------------------------------------

def test_defaults_are_scikit_learns():
    sklearn_neural = importorskip("sklearn.neural_network")
    theirs = sklearn_neural.MLPClassifier().get_params()
    ours = MLPClassifier().get_params()
    assert {k: v for k, v in theirs.items() if k in ours} == \
        {k: v for k, v in ours.items() if k in theirs}
    assert (ours["activation"], ours["solver"], ours["alpha"], ours["momentum"],
            ours["learning_rate_init"]) == ("relu", "adam", 1e-4, 0.9, 0.001)


def test_the_default_constructor_learns_like_scikit_learns():
    datasets = importorskip("sklearn.datasets")
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier as SkMLP

    X, y = datasets.load_digits(return_X_y=True)      # raw 0-16 pixel counts
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = MLPClassifier(random_state=0).fit(X_train, y_train)
    assert not [w for w in caught if "did not learn" in str(w.message)]
    theirs = SkMLP(random_state=0).fit(X_train, y_train)
    assert ours.score(X_test, y_test) > 0.95
    assert ours.score(X_test, y_test) >= theirs.score(X_test, y_test) - 0.02


# Runs that do not learn -----------------------------------------------------------------

def _pixels(n=600, seed=0):
    """Raw 0-255 "images" of 4 classes, each a bright block in its own place."""
    rng = np.random.RandomState(seed)
    y = np.arange(n) % 4
    X = rng.randint(0, 40, size=(n, 64)).astype(np.float64)
    for k in range(4):
        X[y == k, 16 * k:16 * k + 16] += 200
    return X, y


@pytest.mark.parametrize("params", [
    dict(),                                                           # Adam
    dict(activation="logistic", solver="sgd", momentum=0.0, alpha=0.0),
], ids=["adam", "plain-sgd"])
def test_a_learning_rate_far_too_large_on_raw_pixels_warns(params, system_fashion_mnist):
    # The newcomer's mistake: learning_rate_init=10 on raw 0-255 Fashion-MNIST pixels
    # ended at accuracy 0.10 without a word.
    from mlp_cy.datasets import load_mnist

    X, y, _, _ = load_mnist("fashion-mnist", data_home=system_fashion_mnist,
                            download=False, dtype=np.uint8)
    X, y = X[:2000].astype(np.float32), y[:2000]
    clf = MLPClassifier(learning_rate_init=10, random_state=0, **params)
    with pytest.warns(ConvergenceWarning, match="did not learn") as record:
        clf.fit(X, y)
    message = str([w for w in record if "did not learn" in str(w.message)][0].message)
    assert "chance level" in message
    assert "learning_rate_init=10" in message and "not scaled" in message
    assert "0 to 255" in message and "StandardScaler" in message
    # Far from what it learns on scaled pixels (about 0.8). Where the run ends is
    # chaotic: 0.10-0.25 depending on the last bits of the products (which threads,
    # gemm or the zero-skipping kernels), so the bound is not closer to chance.
    assert clf.score(X, y) < 0.3


def test_a_learning_rate_far_too_small_warns_without_blaming_scaled_inputs():
    X, y = _pixels()
    with pytest.warns(ConvergenceWarning, match="did not learn") as record:
        MLPClassifier(hidden_layer_sizes=16, learning_rate_init=1e-7, max_iter=5,
                      random_state=0).fit(X / 255, y)
    message = str([w for w in record if "did not learn" in str(w.message)][0].message)
    assert "learning_rate_init=1e-07" in message and "not scaled" not in message


def test_a_run_that_learns_does_not_warn_so():
    X, y = _pixels()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf = MLPClassifier(hidden_layer_sizes=16, random_state=0).fit(X / 255, y)
    assert clf.score(X / 255, y) == 1.0
    assert not [w for w in caught if "did not learn" in str(w.message)]


def test_loss_and_n_iter_are_set_when_the_first_epoch_diverges():
    # float32 logits overflow to infinity within the first epoch's 10 batches.
    rng = np.random.RandomState(0)
    X = rng.randn(100, 5).astype(np.float32) * 1e3
    y = (X[:, 0] > 0).astype(int)
    clf = MLPClassifier(hidden_layer_sizes=8, activation="identity", solver="sgd",
                        momentum=0.0, batch_size=10, learning_rate_init=1e6,
                        random_state=0)
    with pytest.warns(ConvergenceWarning, match="Training diverged in epoch 1"):
        clf.fit(X, y)
    assert clf.n_iter_ == 0 and clf.loss_ == np.inf and clf.loss_curve_ == []
    # A second fit that diverges does not keep the first fit's values either.
    clf.set_params(learning_rate_init=1e-3).fit(X / 1e3, y)
    assert np.isfinite(clf.loss_) and clf.n_iter_ > 0
    clf.set_params(learning_rate_init=1e6)
    with pytest.warns(ConvergenceWarning, match="Training diverged in epoch 1"):
        clf.fit(X, y)
    assert clf.n_iter_ == 0 and clf.loss_ == np.inf


# Package metadata -----------------------------------------------------------------------

@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is new in Python 3.11")
def test_package_metadata():
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml")
                              .read_text())
    project = pyproject["project"]
    assert project["license"] == "BSD-3-Clause" and project["license-files"] == ["LICENSE"]
    classifiers = project["classifiers"]
    assert not [c for c in classifiers if c.startswith("License ::")]  # PEP 639: SPDX
    assert len(set(classifiers)) == len(classifiers)
    # One classifier per CPython version that wheels are built for.
    built = pyproject["tool"]["cibuildwheel"]["build"].split()
    versions = [f"3.{b[3:].split('-')[0]}" for b in built]
    assert [c.rsplit(" ", 1)[1] for c in classifiers
            if c.startswith("Programming Language :: Python :: 3.")] == versions
    assert project["requires-python"] == f">={versions[0]}"
    assert project["keywords"]
    # The optional packages of the command line are extras, and never dependencies.
    extras = project["optional-dependencies"]
    assert extras["plot"] == ["matplotlib>=3.5"] and extras["threads"] == ["threadpoolctl>=3"]
    assert [d.split(">")[0] for d in project["dependencies"]] == ["numpy", "scipy"]
