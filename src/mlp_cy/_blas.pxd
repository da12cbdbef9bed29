# Private row-major BLAS over scipy.linalg.cython_blas, for float and double, and
# the products that skip the data's zeros (_skipzero.h) where they beat it.
# Nothing else in mlp_cy calls scipy.linalg.cython_blas.

from cython cimport floating
from ._typedefs cimport blas_int, intp_t


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

# Products that skip the zeros of A, the data (_skipzero.h) ##################
cdef int blas_num_threads() noexcept nogil

# The instruction-set level of the kernels (_cpu.h's MLP_CY_LEVEL_*), for kernels.pyx
cdef int active_level() noexcept nogil

# Threads: the rule in _blas.pyx ("Threads"), and the BLAS's own count during a call
cdef int engine_threads(intp_t m, intp_t k, intp_t n) noexcept nogil
cdef int chunk_threads(int threads) noexcept nogil
cdef int blas_threads_hold(int threads) noexcept nogil
cdef void blas_threads_release(int had) noexcept nogil

cdef bint skipzero_first_layer(intp_t m, intp_t k, intp_t n, intp_t itemsize,
                               int threads) noexcept nogil
cdef bint skipzero_pays_for_chunk(intp_t chunk_rows, intp_t k, intp_t n,
                                  intp_t itemsize) noexcept nogil
cdef bint skipzero_sparse_enough(intp_t nonzeros, intp_t size) noexcept nogil

cdef void _gemm_skipzero(intp_t m, intp_t n, intp_t k,
                         const floating *A, intp_t lda, const floating *B, intp_t ldb,
                         floating *C, intp_t ldc, intp_t *cols) noexcept nogil

cdef void _gemm_t_skipzero(intp_t m, intp_t n, intp_t k, floating alpha,
                           const floating *A, intp_t lda, const floating *G, intp_t ldg,
                           floating beta, floating *C, intp_t ldc,
                           intp_t *rows) noexcept nogil

cdef void _gemm_skipzero_rows(intp_t m, intp_t n, intp_t k,
                              const floating *const *A_rows, const floating *B,
                              intp_t ldb, floating *C, intp_t ldc,
                              intp_t *cols) noexcept nogil

cdef void _gemm_t_skipzero_rows(intp_t m, intp_t n, intp_t k, floating alpha,
                                const floating *const *A_rows, intp_t a_col,
                                const floating *G, intp_t ldg, floating beta,
                                floating *C, intp_t ldc, intp_t *rows) noexcept nogil

cdef void _sample_sweep(intp_t n_features, intp_t n_hidden, const floating *x,
                        const floating *x_next, floating eta, const floating *grad,
                        floating *W1, floating *pre) noexcept nogil

