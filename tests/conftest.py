"""Shared test helpers."""

import importlib
import os

import pytest

# Where Debian's dataset-fashion-mnist puts Fashion-MNIST (.ci/run installs it).
SYSTEM_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def require_system_fashion_mnist():
    """Skip a test that needs the system's Fashion-MNIST when it is absent, unless the
    run demands it (MLP_CY_REQUIRE_DATA=1, as .ci/run sets): then it fails."""
    if os.path.isdir(SYSTEM_FASHION_MNIST):
        return
    message = (f"{SYSTEM_FASHION_MNIST} is missing: apt-get install "
               "dataset-fashion-mnist")
    if os.environ.get("MLP_CY_REQUIRE_DATA") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def system_fashion_mnist():
    """The directory of the system's Fashion-MNIST (see require_system_fashion_mnist)."""
    require_system_fashion_mnist()
    return SYSTEM_FASHION_MNIST


def importorskip(name, reason=None):
    """Import and return module `name`, or skip the test when it is not installed:
    pytest.importorskip, except that a run that demands every optional dependency
    (MLP_CY_REQUIRE_EXTRAS=1, as .ci/run sets) fails instead, so that no test of an
    extra (scikit-learn, torch, dask, matplotlib, ...) can silently not run there.
    Tests call this, never pytest.importorskip (test_conftest.py checks)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        message = f"{reason or 'an optional test dependency is missing'}: {exc}"
    if os.environ.get("MLP_CY_REQUIRE_EXTRAS") == "1":
        pytest.fail(f"MLP_CY_REQUIRE_EXTRAS=1 and {message}", pytrace=False)
    pytest.skip(message, allow_module_level=True)


def _missing_module_skip(report):
    """Whether report is a skip by a bare pytest.importorskip (its default reason)."""
    if not report.skipped or not isinstance(report.longrepr, tuple):
        return False
    return report.longrepr[2].startswith("Skipped: could not import ")


def _require_extras(report):
    # The net under importorskip above: a bare pytest.importorskip (in a file that
    # does not use the helper) fails too when the run demands every extra.
    if os.environ.get("MLP_CY_REQUIRE_EXTRAS") == "1" and _missing_module_skip(report):
        report.outcome = "failed"
        report.longrepr = f"MLP_CY_REQUIRE_EXTRAS=1 and {report.longrepr[2]}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    _require_extras(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    report = yield
    _require_extras(report)
    return report


# The instruction-set levels of the zero-skipping kernels that this CPU runs, lowest
# first ("reference" everywhere, then "sse2", "avx2", "avx512" or "neon"): the tests of
# the kernels and of the engine's paths run at each of them.
from mlp_cy import _blas  # noqa: E402

KERNEL_LEVELS = _blas._kernel_levels()


@pytest.fixture(params=KERNEL_LEVELS)
def kernel_level(request):
    """Run the kernels at each level for one test; put the default level back after."""
    old = _blas._set_kernel_level(request.param)
    _blas._kernel_use_reset()
    yield request.param
    _blas._set_kernel_level(old)
