"""Shared test helpers."""

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
