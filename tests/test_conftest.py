"""The test suite's own switches: MLP_CY_REQUIRE_EXTRAS turns the skips for a missing
optional dependency into failures (as MLP_CY_REQUIRE_DATA does for the data)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

MISSING = """
import pytest
from conftest import importorskip


def test_helper():
    importorskip("mlp_cy_no_such_module", reason="needs the 'nothing' extra")


def test_bare_pytest_importorskip():
    pytest.importorskip("mlp_cy_no_such_module")


def test_other_skips_stay_skips():
    pytest.skip("not about a missing module")
"""

MISSING_AT_MODULE_LEVEL = """
from conftest import importorskip

importorskip("mlp_cy_no_such_module")


def test_never_collected():
    pass
"""


def _run_pytest(tmp_path, require):
    (tmp_path / "test_missing.py").write_text(MISSING)
    (tmp_path / "test_missing_module.py").write_text(MISSING_AT_MODULE_LEVEL)
    env = {**os.environ, "MLP_CY_REQUIRE_EXTRAS": require,
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    # -p conftest: this suite's conftest as a plugin, its hooks included.
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider",
         "--continue-on-collection-errors", "-rA", "-q", str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    return proc.stdout


def test_missing_extras_skip_by_default(tmp_path):
    out = _run_pytest(tmp_path, "0")
    assert re.search(r"\b4 skipped\b", out), out
    assert "failed" not in out and "error" not in out, out


def test_require_extras_fails_every_missing_module_skip(tmp_path):
    out = _run_pytest(tmp_path, "1")
    assert "FAILED test_missing.py::test_helper" in out, out
    assert "FAILED test_missing.py::test_bare_pytest_importorskip" in out, out
    assert "ERROR test_missing_module.py" in out, out
    assert "SKIPPED [1] test_missing.py" in out, out      # other skips stay skips
    assert out.count("MLP_CY_REQUIRE_EXTRAS=1 and") >= 3, out


def test_tests_use_the_switchable_importorskip():
    # conftest.importorskip fails under MLP_CY_REQUIRE_EXTRAS; pytest's own is caught
    # there only with its default reason (a bare call), so a custom reason would hide.
    offenders = []
    for path in sorted(TESTS.glob("test_*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            call = re.search(r"pytest\.importorskip\((.*)", line)
            if call and not re.fullmatch(r"""["'][\w.]+["']\)\s*(#.*)?""", call.group(1)):
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert offenders == []


@pytest.mark.parametrize("name", ["MLP_CY_REQUIRE_DATA", "MLP_CY_REQUIRE_EXTRAS"])
def test_ci_sets_the_require_switches(name):
    # .ci/run demands the data and every extra, so that its `pytest -rs` proves the
    # whole suite ran; the GitHub workflows say what they set (see their comments).
    ci_run = (TESTS.parent / ".ci" / "run")
    if not ci_run.exists():
        pytest.skip("no .ci/run beside these tests (an installed copy of the tests)")
    assert re.search(rf"\b{name}=1\b", ci_run.read_text())
