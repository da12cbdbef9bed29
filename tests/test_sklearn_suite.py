"""scikit-learn's own tests of its MLPs, run on mlp_cy's MLPClassifier and MLPRegressor.

The file is sklearn/neural_network/tests/test_mlp.py of the *installed* scikit-learn,
changed in one line only: its ``from sklearn.neural_network import MLPClassifier,
MLPRegressor`` imports mlp_cy's classes instead (their defaults are scikit-learn's;
test_defaults_are_sklearns checks). The copy runs in a subprocess under pytest, in a
temporary directory (its own rootdir, so this project's conftest does not apply), with
scikit-learn's own conftest (``-p sklearn.conftest``: the ``global_random_seed``
fixture, its thread limits) as scikit-learn's test suite runs it.

Every test of the file must pass, except:
- PRIVATE_INTERNALS: tests that read scikit-learn's private internals, which mlp_cy
  does not have (each is checked to name one);
- KNOWN_FAILURES: incompatibilities not fixed yet; their tests are xfail(strict=True),
  so that a fix shows up as a failure until the entry is removed.
"""

import importlib.util
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import importorskip

importorskip("sklearn", reason="scikit-learn is a test dependency")

import mlp_cy  # noqa: E402

SKLEARN_IMPORT = "from sklearn.neural_network import MLPClassifier, MLPRegressor\n"
MLP_CY_IMPORT = "from mlp_cy import MLPClassifier, MLPRegressor\n"

# {test function: reason}: the tests that read scikit-learn's private internals.
PRIVATE_INTERNALS = {
    "test_gradient":
        "checks scikit-learn's _loss_grad_lbfgs against finite differences; mlp_cy's "
        "gradient has its own test (test_gradients.py)",
    "test_learning_rate_warmstart":
        "reads the learning rate of scikit-learn's _optimizer object",
    "test_adaptive_learning_rate":
        "reads the learning rate of scikit-learn's _optimizer object",
}
# What a test of PRIVATE_INTERNALS must read (so that none is excluded for another
# reason): an attribute of scikit-learn's that mlp_cy does not have.
PRIVATE_ATTRIBUTE = re.compile(
    r"\._(loss_grad_lbfgs|optimizer|forward_pass|backprop|label_binarizer|"
    r"compute_loss_grad|update_no_improvement_count|init_coef|unpack|pack)\b")

# {test function: reason}: incompatibilities not fixed yet (xfail, strict).
KNOWN_FAILURES = {}


def _sklearn_test_file():
    spec = importlib.util.find_spec("sklearn.neural_network")
    for location in spec.submodule_search_locations:
        path = Path(location) / "tests" / "test_mlp.py"
        if path.is_file():
            return path
    raise AssertionError("sklearn/neural_network/tests/test_mlp.py is not in the "
                         "installed scikit-learn")


SOURCE_PATH = _sklearn_test_file()
SOURCE = SOURCE_PATH.read_text(encoding="utf-8")
# The file's test functions, by name (one test each, whatever its parametrization).
TEST_NAMES = re.findall(r"^def (test_\w+)\(", SOURCE, flags=re.MULTILINE)


def _function_source(name):
    """The text of test function `name` in the file, up to the next top-level line."""
    match = re.search(rf"^def {name}\(.*?(?=^\S)", SOURCE + "\nEND",
                      flags=re.MULTILINE | re.DOTALL)
    return match.group(0)


@pytest.fixture(scope="module")
def suite_results(tmp_path_factory):
    """Run the rewritten copy once: {test function: [(test id, outcome, message)]}."""
    assert SOURCE.count(SKLEARN_IMPORT) == 1, (
        f"{SOURCE_PATH} no longer imports its classes with {SKLEARN_IMPORT!r}")
    directory = tmp_path_factory.mktemp("sklearn_suite")
    (directory / "pytest.ini").write_text("[pytest]\n")   # rootdir and inifile here
    copy = directory / "test_mlp.py"
    copy.write_text(SOURCE.replace(SKLEARN_IMPORT, MLP_CY_IMPORT), encoding="utf-8")
    report = directory / "report.xml"
    excluded = {**PRIVATE_INTERNALS}

    # Deselect by exact function name (a --deselect prefix would also take longer
    # names that start with it).
    (directory / "conftest.py").write_text(
        f"EXCLUDED = {sorted(excluded)!r}\n"
        "def pytest_collection_modifyitems(config, items):\n"
        "    kept = [i for i in items if i.originalname not in EXCLUDED]\n"
        "    config.hook.pytest_deselected(items=[i for i in items if i not in kept])\n"
        "    items[:] = kept\n")
    env = dict(os.environ)
    package_root = str(Path(mlp_cy.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(
        [package_root] + [p for p in [env.get("PYTHONPATH")] if p])
    process = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-p", "sklearn.conftest", "--rootdir", str(directory),
         f"--junitxml={report}", str(copy)],
        cwd=directory, env=env, capture_output=True, text=True, timeout=1800)
    assert report.is_file(), f"pytest did not run:\n{process.stdout}\n{process.stderr}"
    results = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        test_id = case.get("name")
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = child.tag
                message = (child.get("message") or "") + "\n" + (child.text or "")
                break
        results.setdefault(test_id.split("[")[0], []).append((test_id, outcome, message))
    # The copy really tested mlp_cy's classes.
    assert "mlp_cy" in copy.read_text(encoding="utf-8")
    return results


def test_defaults_are_sklearns():
    from sklearn import neural_network

    for ours, theirs in [(mlp_cy.MLPClassifier(), neural_network.MLPClassifier()),
                         (mlp_cy.MLPRegressor(), neural_network.MLPRegressor())]:
        params = ours.get_params()
        params.pop("class_weight", None)   # mlp_cy's addition; None: unweighted
        assert params == theirs.get_params()


def test_exclusions_name_tests_that_read_private_internals():
    for name in PRIVATE_INTERNALS:
        assert name in TEST_NAMES, f"{name} is no longer in {SOURCE_PATH}"
        assert PRIVATE_ATTRIBUTE.search(_function_source(name)), (
            f"{name} reads none of scikit-learn's private internals: it must run")
    assert not set(PRIVATE_INTERNALS) & set(KNOWN_FAILURES)


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[name]))
    if name in KNOWN_FAILURES else name
    for name in TEST_NAMES if name not in PRIVATE_INTERNALS
])
def test_sklearn_test_mlp(suite_results, name):
    """Each test function of scikit-learn's test_mlp.py (all its parametrizations)
    passes on mlp_cy's classes."""
    cases = suite_results.get(name)
    assert cases, f"{name} did not run"
    failed = [f"{test_id}: {message}" for test_id, outcome, message in cases
              if outcome in ("failure", "error")]
    assert not failed, "\n\n".join(failed)
    skipped = [message.strip() for _, outcome, message in cases if outcome == "skipped"]
    if skipped:
        # Forwarded as is: the project's conftest fails a "could not import" skip
        # when MLP_CY_REQUIRE_EXTRAS=1.
        pytest.skip(skipped[0].splitlines()[0])
