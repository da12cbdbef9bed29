# Design:
# a) One place turns row-major (C order) products into calls of the column-major
#    BLAS: C = op(A) op(B) in C order is C^T = op(B)^T op(A)^T in Fortran order,
#    so the operands and their sizes are swapped, and no transposed copy is made.
# b) scipy's prototypes take non-const pointers; the const inputs are cast once here.

from scipy.linalg.cython_blas cimport sgemm, dgemm, sgemv, dgemv


cdef void _gemv(BLAS_Order order, BLAS_Trans ta, blas_int m, blas_int n,
                floating alpha, const floating *A, blas_int lda,
                const floating *x, blas_int incx, floating beta,
                floating *y, blas_int incy) noexcept nogil:
    """y := alpha * op(A).x + beta * y, A is (m, n)."""
    cdef char ta_ = ta
    if order == RowMajor:
        # A (m, n) in C order is A^T (n, m) in Fortran order: flip the transpose.
        ta_ = NoTrans if ta == Trans else Trans
        m, n = n, m
    if floating is float:
        sgemv(&ta_, &m, &n, &alpha, <float *> A, &lda, <float *> x, &incx,
              &beta, y, &incy)
    else:
        dgemv(&ta_, &m, &n, &alpha, <double *> A, &lda, <double *> x, &incx,
              &beta, y, &incy)


cdef void _gemm(BLAS_Order order, BLAS_Trans ta, BLAS_Trans tb,
                blas_int m, blas_int n, blas_int k,
                floating alpha, const floating *A, blas_int lda,
                const floating *B, blas_int ldb,
                floating beta, floating *C, blas_int ldc) noexcept nogil:
    """C := alpha * op(A).op(B) + beta * C, C is (m, n), op(A) is (m, k)."""
    cdef char ta_ = ta
    cdef char tb_ = tb
    if order == RowMajor:
        if floating is float:
            sgemm(&tb_, &ta_, &n, &m, &k, &alpha, <float *> B, &ldb,
                  <float *> A, &lda, &beta, C, &ldc)
        else:
            dgemm(&tb_, &ta_, &n, &m, &k, &alpha, <double *> B, &ldb,
                  <double *> A, &lda, &beta, C, &ldc)
    else:
        if floating is float:
            sgemm(&ta_, &tb_, &m, &n, &k, &alpha, <float *> A, &lda,
                  <float *> B, &ldb, &beta, C, &ldc)
        else:
            dgemm(&ta_, &tb_, &m, &n, &k, &alpha, <double *> A, &lda,
                  <double *> B, &ldb, &beta, C, &ldc)


# Python shims, for the tests only ############################################

def _gemm_memview(BLAS_Trans ta, BLAS_Trans tb, double alpha,
                  const floating[:, :] A, const floating[:, :] B,
                  double beta, floating[:, :] C):
    """C := alpha * op(A).op(B) + beta * C on (possibly sliced) C-order views.

    Leading dimensions come from the row strides, so row-sliced views work.
    """
    cdef blas_int m = C.shape[0]
    cdef blas_int n = C.shape[1]
    cdef blas_int k = A.shape[0] if ta == Trans else A.shape[1]
    if A.strides[1] != sizeof(floating) or B.strides[1] != sizeof(floating) \
            or C.strides[1] != sizeof(floating):
        raise ValueError("the last axis of A, B and C must be contiguous")
    cdef blas_int lda = A.strides[0] // sizeof(floating)
    cdef blas_int ldb = B.strides[0] // sizeof(floating)
    cdef blas_int ldc = C.strides[0] // sizeof(floating)
    with nogil:
        _gemm(RowMajor, ta, tb, m, n, k, <floating> alpha, &A[0, 0], lda, &B[0, 0], ldb,
              <floating> beta, &C[0, 0], ldc)


def _gemv_memview(BLAS_Trans ta, double alpha, const floating[:, ::1] A,
                  const floating[::1] x, double beta, floating[::1] y):
    """y := alpha * op(A).x + beta * y on C-contiguous arrays."""
    cdef blas_int m = A.shape[0]
    cdef blas_int n = A.shape[1]
    with nogil:
        _gemv(RowMajor, ta, m, n, <floating> alpha, &A[0, 0], n, &x[0], 1, <floating> beta,
              &y[0], 1)
