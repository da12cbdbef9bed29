# Private row-major BLAS over scipy.linalg.cython_blas, for float and double.
# Nothing else in mlp_cy calls scipy.linalg.cython_blas.

from cython cimport floating
from ._typedefs cimport blas_int


cpdef enum BLAS_Order:
    RowMajor = 101    # C contiguous
    ColMajor = 102    # Fortran contiguous


cpdef enum BLAS_Trans:
    NoTrans = 110     # 'n'
    Trans = 116       # 't'


# BLAS Level 2 ################################################################
cdef void _gemv(BLAS_Order order, BLAS_Trans ta, blas_int m, blas_int n,
                floating alpha, const floating *A, blas_int lda,
                const floating *x, blas_int incx, floating beta,
                floating *y, blas_int incy) noexcept nogil

# BLAS Level 3 ################################################################
cdef void _gemm(BLAS_Order order, BLAS_Trans ta, BLAS_Trans tb,
                blas_int m, blas_int n, blas_int k,
                floating alpha, const floating *A, blas_int lda,
                const floating *B, blas_int ldb,
                floating beta, floating *C, blas_int ldc) noexcept nogil
