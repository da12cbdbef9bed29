"""The private row-major BLAS wrapper against NumPy, both dtypes, sliced views."""

import numpy as np
import pytest

from mlp_cy._blas import BLAS_Trans, _gemm_memview, _gemv_memview

RTOL = {np.float32: 1e-5, np.float64: 1e-12}


def _op(A, trans):
    return A.T if trans == BLAS_Trans.Trans else A


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta", [BLAS_Trans.NoTrans, BLAS_Trans.Trans])
@pytest.mark.parametrize("tb", [BLAS_Trans.NoTrans, BLAS_Trans.Trans])
def test_gemm(dtype, ta, tb):
    rng = np.random.RandomState(0)
    m, n, k = 7, 5, 11
    A = rng.randn(*((k, m) if ta == BLAS_Trans.Trans else (m, k))).astype(dtype)
    B = rng.randn(*((n, k) if tb == BLAS_Trans.Trans else (k, n))).astype(dtype)
    C = rng.randn(m, n).astype(dtype)
    expected = 0.5 * _op(A, ta) @ _op(B, tb) - 2.0 * C
    _gemm_memview(ta, tb, 0.5, A, B, -2.0, C)
    np.testing.assert_allclose(C, expected, rtol=RTOL[dtype], atol=RTOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_row_sliced_views(dtype):
    # Leading dimensions come from the row strides: every operand is a view into
    # a larger array.
    rng = np.random.RandomState(1)
    A_big, B_big = rng.randn(10, 12).astype(dtype), rng.randn(16, 8).astype(dtype)
    C_big = np.zeros((12, 9), dtype=dtype)
    A, B, C = A_big[1:5, 2:9], B_big[:14:2, 1:4], C_big[3:7, 4:7]
    _gemm_memview(BLAS_Trans.NoTrans, BLAS_Trans.NoTrans, 1.0, A, B, 0.0, C)
    np.testing.assert_allclose(C, A @ B, rtol=RTOL[dtype])
    untouched = np.ones_like(C_big, dtype=bool)
    untouched[3:7, 4:7] = False
    assert not C_big[untouched].any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta", [BLAS_Trans.NoTrans, BLAS_Trans.Trans])
def test_gemv(dtype, ta):
    rng = np.random.RandomState(2)
    A = rng.randn(6, 4).astype(dtype)
    x = rng.randn(4 if ta == BLAS_Trans.NoTrans else 6).astype(dtype)
    y = rng.randn(6 if ta == BLAS_Trans.NoTrans else 4).astype(dtype)
    expected = 3.0 * _op(A, ta) @ x + 0.5 * y
    _gemv_memview(ta, 3.0, A, x, 0.5, y)
    np.testing.assert_allclose(y, expected, rtol=RTOL[dtype], atol=RTOL[dtype])
