# Design:
# a) One place turns row-major (C order) products into calls of the column-major
#    BLAS: C = op(A) op(B) in C order is C^T = op(B)^T op(A)^T in Fortran order,
#    so the operands and their sizes are swapped, and no transposed copy is made.
# b) scipy's prototypes take non-const pointers; the const inputs are cast once here.
# c) The zero-skipping products (_skipzero.h) exist at several instruction-set levels
#    (_cpu.h): reference C everywhere, SSE2/AVX2/AVX-512 on x86-64, NEON on aarch64.
#    The level is picked once per process, the highest the CPU has (capped by the
#    environment variable MLP_CY_CPU_LEVEL), and every kernel call goes through that
#    level's table. Whether the engine uses them instead of gemm is decided here too,
#    per level, from measurements (skipzero_first_layer, which the layers engine's
#    plan asks). Their result differs from gemm's by rounding only, so no choice
#    changes what is computed.
# d) The engine runs the BLAS on one thread during its calls and its products on
#    mlp_cy's own threads (layers.pyx, "The plan"); how many is decided here
#    ("Threads").

import os

from scipy.linalg.cython_blas cimport sgemm, dgemm, sgemv, dgemv

cdef extern from "_skipzero.h" nogil:
    enum:
        MLP_CY_SKIPZERO_LANES_F32
        MLP_CY_SKIPZERO_LANES_F64
        MLP_CY_LEVEL_REFERENCE
        MLP_CY_LEVEL_BASELINE
        MLP_CY_LEVEL_AVX2
        MLP_CY_LEVEL_AVX512
        MLP_CY_N_LEVELS
    ctypedef void (*ab_f32_fn)(intp_t m, intp_t n, intp_t k, const float *A, intp_t lda,
                               const float *const *A_rows, const float *B, intp_t ldb,
                               float *C, intp_t ldc, intp_t *cols) noexcept nogil
    ctypedef void (*ab_f64_fn)(intp_t m, intp_t n, intp_t k, const double *A, intp_t lda,
                               const double *const *A_rows, const double *B, intp_t ldb,
                               double *C, intp_t ldc, intp_t *cols) noexcept nogil
    ctypedef void (*atb_f32_fn)(intp_t m, intp_t n, intp_t k, float alpha,
                                const float *A, intp_t lda, const float *const *A_rows,
                                intp_t a_col, const float *G, intp_t ldg, float beta,
                                float *C, intp_t ldc, intp_t *rows) noexcept nogil
    ctypedef void (*atb_f64_fn)(intp_t m, intp_t n, intp_t k, double alpha,
                                const double *A, intp_t lda, const double *const *A_rows,
                                intp_t a_col, const double *G, intp_t ldg, double beta,
                                double *C, intp_t ldc, intp_t *rows) noexcept nogil
    ctypedef void (*sample_sweep_f32_fn)(intp_t n_features, intp_t n_hidden,
                                         const float *x, const float *x_next, float eta,
                                         const float *grad, float *W1,
                                         float *pre) noexcept nogil
    ctypedef void (*sample_sweep_f64_fn)(intp_t n_features, intp_t n_hidden,
                                         const double *x, const double *x_next,
                                         double eta, const double *grad, double *W1,
                                         double *pre) noexcept nogil
    ctypedef struct mlp_cy_skipzero_table:
        ab_f32_fn ab_f32
        ab_f64_fn ab_f64
        atb_f32_fn atb_f32
        atb_f64_fn atb_f64
        sample_sweep_f32_fn sample_sweep_f32
        sample_sweep_f64_fn sample_sweep_f64
    int mlp_cy_level_built(int level)
    const char *mlp_cy_level_name(int level)
    int mlp_cy_cpu_level()
    const mlp_cy_skipzero_table *mlp_cy_skipzero_kernels(int level)

# Measured (benchmarks/RESULTS.md, one thread): an epoch on Fashion-MNIST (50%
# non-zeros) takes 0.79-0.81x (h=256, b=64) to 0.87-0.90x (h=1024, b=256) of its time
# with gemm; with non-zeros spread at random, the kernels stop paying at 56-60%
# (h=1024, b=256) to 70-75% (h=256, b=64) non-zeros.
cdef double SKIPZERO_MAX_DENSITY = 0.55
# The X W_0 products (m, n) beyond which gemm's packed panels win (profile_engine.py
# section 6): 2 MiB (double, 256 x 1024: 1.11x gemm's time; double predict chunks,
# 1024 x 256: 1.3x). X^T delta_0 keeps paying to 2 MiB (8 MiB: 1.4x).
cdef intp_t SKIPZERO_MAX_FORWARD_BYTES = 1 << 20

# Where each level's kernels beat the BLAS, by level (reference, SSE2 or NEON, AVX2,
# AVX-512): alone, on one thread, against the BLAS's own kernels for this CPU
# (SERIAL); and in the layers step on 2 threads against 2-thread gemms (PARALLEL).
# Measured in benchmarks/RESULTS.md ("Instruction-set levels"); the reference level
# is the portable fallback, never chosen for speed.
cdef bint SKIPZERO_PAYS_SERIAL[4]
cdef bint SKIPZERO_PAYS_PARALLEL[4]
# On one thread the layers engine's gemm step beats its zero-skipping first layer at
# every level: AVX-512, h=256, b=64, Fashion-MNIST, 1.05x its time (RESULTS.md,
# "engine v2: the step written once"). On 2 threads it pays with AVX-512 (0.70x at
# h=256, b=64) but not with AVX2 against OpenBLAS's Haswell gemm: 1.07-1.14x its time
# in five runs, h=256 at b=64 (SGD) and b=200 (Adam) and (256, 128) (RESULTS.md, "The
# AVX2 level against its peers").
SKIPZERO_PAYS_SERIAL[:] = [False, False, False, False]
SKIPZERO_PAYS_PARALLEL[:] = [False, False, False, True]
# On several threads the gemm step's first product is cut by columns (layers.pyx,
# Plan.first_columns), which made it faster, and the zero skipping pays against that
# only for small row chunks over a W_0 that stays in a core's L2 cache
# (skipzero_pays_for_chunk). AVX-512, 2 threads, Fashion-MNIST float32, epochs
# alternating in one process, median of 9-11 rounds (RESULTS.md, "The first product
# by columns"): h=256 at b=64 (32 rows a chunk, W_0 784 KiB), skipping 0.92-0.95x the
# time of gemm by columns; h=256 at b=128 (64 rows), gemm by columns 0.93x of
# skipping; h=512 at b=64 (W_0 1.5 MiB), 0.93x; (256, 128) and (512, 256, 128) at
# b=200 (100 rows), 0.92x and 0.94x. Predict (chunks of 1,024 rows, no column cut)
# lost to gemm by rows too: h=256, 10,000 rows, 21.4 ms skipping, 16.8 ms with gemm.
cdef intp_t SKIPZERO_MAX_CHUNK_ROWS = 32
cdef intp_t SKIPZERO_MAX_W0_BYTES = 1 << 20

# The level the kernels run at (MLP_CY_LEVEL_*), and its table: set at import
# (_init_kernel_level) and only through _set_kernel_level after that.
cdef int kernel_level = MLP_CY_LEVEL_REFERENCE
cdef const mlp_cy_skipzero_table *kernels = mlp_cy_skipzero_kernels(MLP_CY_LEVEL_REFERENCE)
# Which levels' kernels ran since the tests last asked (_kernel_use_reset): a test
# that compares two paths first checks that the kernels it means did run. A plain
# store, the same value from any thread.
cdef bint kernel_used[4]


cdef inline void _note_kernel_use() noexcept nogil:
    if not kernel_used[kernel_level]:     # a read, after the first call: no cache-line
        kernel_used[kernel_level] = True  # traffic between the threads that call kernels

# 0: decide (skipzero_first_layer); 1: never skip zeros; 2: always where the CPU can.
# Set only through _set_skipzero_mode, by the tests and benchmarks.
cdef int skipzero_mode = 0
# Threads of the layers engine's regions: 0 follows the rule. Set only through
# _set_parallel_threads, by the tests and benchmarks.
cdef int parallel_threads_override = 0


# The BLAS library's own thread-count getter and setter, found the way threadpoolctl
# finds them, so that its limits (and OPENBLAS_NUM_THREADS etc.) are what
# blas_num_threads reports, and the engine can run the BLAS on fewer threads during a
# call (blas_threads_hold).
ctypedef int (*thread_getter)() noexcept nogil
ctypedef void (*thread_setter)(int) noexcept nogil
cdef thread_getter blas_get_threads = NULL
cdef thread_setter blas_set_threads = NULL

# OpenBLAS (scipy's build prefixes its symbols with scipy_; ILP64 builds add 64_),
# MKL, BLIS: (getter, setter) pairs. BLIS's setter takes a 64-bit count: not called.
THREAD_FUNCTIONS = (
    ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
    ("openblas_get_num_threads", "openblas_set_num_threads"),
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
    ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
    ("MKL_Get_Max_Threads", "MKL_Set_Num_Threads"),
    ("bli_thread_get_num_threads", None),
)


def _find_blas_thread_functions():
    """Addresses of the (getter, setter) in the BLAS that scipy.linalg.cython_blas
    calls, 0 for what is missing.

    dlsym on cython_blas's own handle also searches the libraries it links, where
    the BLAS is (on Windows only the module itself is searched: 0, and gemm is used).
    """
    import ctypes
    from scipy.linalg import cython_blas
    try:
        library = ctypes.CDLL(cython_blas.__file__)
    except (OSError, AttributeError):
        return 0, 0
    for getter, setter in THREAD_FUNCTIONS:
        try:
            get = ctypes.cast(getattr(library, getter), ctypes.c_void_p).value or 0
        except AttributeError:
            continue
        try:
            put = (ctypes.cast(getattr(library, setter), ctypes.c_void_p).value or 0
                   if setter is not None else 0)
        except AttributeError:
            put = 0
        return get, put
    return 0, 0


_getter_address, _setter_address = _find_blas_thread_functions()
blas_get_threads = <thread_getter> <size_t> _getter_address
blas_set_threads = <thread_setter> <size_t> _setter_address


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


cdef int blas_num_threads() noexcept nogil:
    """Threads the BLAS behind cython_blas will use; 0 if it cannot be asked."""
    return blas_get_threads() if blas_get_threads != NULL else 0


# Threads ####################################################################
#
# How many threads a call of the engine uses, decided here and nowhere else:
#   limit  the BLAS's thread count: threadpoolctl's limits, OPENBLAS_NUM_THREADS and
#          the like are how users say how many threads a process may have;
#   cores  the CPUs this process may run on: its affinity mask and its cgroup's CPU
#          quota (a container given 2 CPUs of a 64-core host: the BLAS counts 64);
#   work   one thread per WORK_PER_THREAD multiply-adds of the batch's first product
#          (X W1, the largest), and one per chunk of rows at most: below that, the
#          hand-over costs more than the thread saves.
#   threads = min(limit, cores, work)
# That is the count the layers engine's plan gives its regions (layers.pyx, "The
# plan"), with the BLAS held at one thread meanwhile. While a loop of steps runs, its
# pacer (_parallel.pyx) times the steps on those threads and on one, and keeps one
# where the threads do not pay: a busy machine, a core taken away.
#
# Measured (benchmarks/RESULTS.md, "Threads on a busy machine"): a parallel region
# costs about 5-20 us to hand over and gather on a quiet machine; 2^20 multiply-adds
# take 50-100 us on one core.
cdef intp_t WORK_PER_THREAD = 1 << 20
cdef intp_t ROWS_PER_THREAD = 8         # fewer rows a thread: the hand-over costs more
#
# The layers engine cuts a batch into chunks per thread (one chunk of rows, two of
# weights), and a BLAS product's bits depend on its shape, so results agree across
# thread counts to rounding, not bit for bit. Where the bits must not depend on the
# thread count, reproducible_threads (mlp_cy.reproducible_threads, or the environment
# variable MLP_CY_REPRODUCIBLE_THREADS) fixes the cut: every call is cut as for that
# many threads, on however many run it. That costs speed where fewer threads run
# (one chunk of rows packs W_0 once; two pack it twice).
cdef int reproducible_threads = 0       # 0: cut per thread count (the default)
# The cores this process may use (_usable_cores), set at import; _set_cpu_budget
# changes it for tests and benchmarks.
cdef int cpu_budget = 1


def _usable_cores():
    """The CPUs this process may run on: its affinity mask (os.sched_getaffinity) or
    os.cpu_count(), capped by the cgroup's CPU quota where there is one (Linux
    containers: cgroup v2 cpu.max, v1 cpu.cfs_quota_us), at least 1."""
    import math
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def _cgroup_cpu_quota(root="/sys/fs/cgroup", self_cgroup="/proc/self/cgroup"):
    """CPUs' worth of time the cgroup of this process may use (quota / period), or
    None where no quota is set or there are no cgroups (not Linux). root and
    self_cgroup: where the cgroup file systems and this process's cgroup list are."""
    root = os.fspath(root)
    try:
        with open(self_cgroup) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        path = path.lstrip("/")
        if hierarchy == "0" and controllers == "":            # cgroup v2
            text = _read_small(os.path.join(root, path, "cpu.max"))
            if text is None and path:
                text = _read_small(os.path.join(root, "cpu.max"))
            if text:
                fields = text.split()
                if len(fields) == 2 and fields[0] != "max":
                    try:
                        return int(fields[0]) / int(fields[1])
                    except (ValueError, ZeroDivisionError):
                        return None
        elif "cpu" in controllers.split(","):                 # cgroup v1
            for folder in (os.path.join(root, controllers, path),
                           os.path.join(root, "cpu", path), os.path.join(root, "cpu")):
                quota = _read_small(os.path.join(folder, "cpu.cfs_quota_us"))
                period = _read_small(os.path.join(folder, "cpu.cfs_period_us"))
                if quota is not None and period is not None:
                    try:
                        quota, period = int(quota), int(period)
                    except ValueError:
                        return None
                    return quota / period if quota > 0 and period > 0 else None
    return None


def _read_small(path):
    try:
        with open(path) as f:
            return f.read(256).strip()
    except (OSError, ValueError):
        return None


cpu_budget = _usable_cores()


# Who holds the BLAS's thread count (blas_threads_hold): how many calls of the engine
# hold it now, and what it was before the first. Changed with the GIL held.
cdef int blas_threads_held = 0
cdef int blas_threads_saved = 0


cdef int chunk_threads(int threads) noexcept nogil:
    """The thread count a call on `threads` threads cuts its batches for: its own, or
    the fixed one of reproducible_threads."""
    return reproducible_threads if reproducible_threads > 0 else threads


cdef int engine_threads(intp_t m, intp_t k, intp_t n) noexcept nogil:
    """Threads for steps of m rows, k features and n hidden units: the rule above.
    At least 1. _set_parallel_threads (tests, benchmarks) overrides it. While calls
    of the engine hold the BLAS (blas_threads_hold), its limit is what it was before
    them: another model's call in progress does not change this one's count."""
    cdef int limit = blas_threads_saved if blas_threads_held > 0 else blas_num_threads()
    cdef intp_t work
    if parallel_threads_override > 0:
        return parallel_threads_override
    if limit < 1:
        limit = 1
    work = max(1, min((m + ROWS_PER_THREAD - 1) // ROWS_PER_THREAD,
                      m * k * n // WORK_PER_THREAD))
    return <int> min(<intp_t> min(limit, cpu_budget), work)


cdef bint skipzero_first_layer(intp_t m, intp_t k, intp_t n, intp_t itemsize,
                               int threads) noexcept nogil:
    """Whether the first layer's two products with the data, X W_0 and X^T delta_0,
    skip X's zeros (the layers engine's plan) for batches of m rows of k features,
    n = units[1], on `threads` threads; the density is the plan's to check
    (skipzero_sparse_enough).

    Where the kernels pay at this level (one thread: SKIPZERO_PAYS_SERIAL; several:
    SKIPZERO_PAYS_PARALLEL), n is whole vectors and X W_0 is no larger than
    SKIPZERO_MAX_FORWARD_BYTES a thread. On several threads the plan then also asks
    skipzero_pays_for_chunk. Mode "always" (tests, benchmarks) takes them
    at any level and size, "never" never; _set_parallel_threads (tests) at any level.
    """
    cdef intp_t lanes = 64 // itemsize, out_bytes = m * n * itemsize
    if skipzero_mode == 1 or n < lanes or n % lanes != 0 or m < 1 or k < 1:
        return False
    if skipzero_mode == 2:
        return True
    if parallel_threads_override == 0 and not (
            SKIPZERO_PAYS_PARALLEL[kernel_level] if threads > 1
            else SKIPZERO_PAYS_SERIAL[kernel_level]):
        return False
    # The forward product's limit holds per thread (measured: float64, h=1024, b=256,
    # 2 MiB on 2 threads, 0.72x the time of the gemm step).
    return out_bytes <= SKIPZERO_MAX_FORWARD_BYTES * max(threads, 1)


cdef enum:
    HELD_BY_ANOTHER = -1          # blas_threads_hold: nested in another call's hold


cdef int blas_threads_hold(int threads) noexcept nogil:
    """Run the BLAS on `threads` threads (at most what it has) until
    blas_threads_release; returns what it had, to give back, or 0 where this call
    changed nothing (no setter; the BLAS has one thread).

    Calls that overlap (models trained in several Python threads) share the hold: the
    first one sets the count, the others find it set (HELD_BY_ANOTHER), and the last
    to release gives back what the first found. So no call's products change their
    thread count, and with it their bits, when another call ends.

    Process-wide while held, like threadpoolctl's limits: other threads' numpy
    products run on as many threads meanwhile.
    """
    global blas_threads_held, blas_threads_saved
    cdef int had
    if blas_set_threads == NULL:
        return 0
    with gil:
        if blas_threads_held > 0:
            blas_threads_held += 1
            return HELD_BY_ANOTHER
        had = blas_num_threads()
        if had <= 1:
            return 0
        blas_threads_held = 1
        blas_threads_saved = had
        threads = max(1, min(threads, had))
        if threads != had:
            blas_set_threads(threads)
    return had


cdef void blas_threads_release(int had) noexcept nogil:
    """End a blas_threads_hold that returned `had` (0: nothing to end)."""
    global blas_threads_held
    if had == 0:
        return
    with gil:
        blas_threads_held -= 1
        if blas_threads_held == 0:
            blas_set_threads(blas_threads_saved)


cdef bint skipzero_pays_for_chunk(intp_t chunk_rows, intp_t k, intp_t n,
                                  intp_t itemsize) noexcept nogil:
    """On several threads, whether skipping zeros by row chunks of chunk_rows rows
    still pays, W_0 (k, n) of itemsize bytes: SKIPZERO_MAX_CHUNK_ROWS and
    SKIPZERO_MAX_W0_BYTES. Mode "always" (tests, benchmarks) says yes."""
    return skipzero_mode == 2 or (chunk_rows <= SKIPZERO_MAX_CHUNK_ROWS
                                  and k * n * itemsize <= SKIPZERO_MAX_W0_BYTES)


cdef bint skipzero_sparse_enough(intp_t nonzeros, intp_t size) noexcept nogil:
    """Whether data with this many non-zeros in size values is worth skipping."""
    return skipzero_mode == 2 or nonzeros <= SKIPZERO_MAX_DENSITY * size


cdef void _sample_sweep(intp_t n_features, intp_t n_hidden, const floating *x,
                        const floating *x_next, floating eta, const floating *grad,
                        floating *W1, floating *pre) noexcept nogil:
    """batch_size 1: W1 -= eta x grad^T, then pre := x_next W1 (0 if x_next is NULL),
    in one sweep over the rows of W1 where x or x_next is not zero."""
    _note_kernel_use()
    if floating is float:
        kernels.sample_sweep_f32(n_features, n_hidden, x, x_next, eta, grad, W1, pre)
    else:
        kernels.sample_sweep_f64(n_features, n_hidden, x, x_next, eta, grad, W1, pre)


cdef void _gemm_skipzero(intp_t m, intp_t n, intp_t k,
                         const floating *A, intp_t lda, const floating *B, intp_t ldb,
                         floating *C, intp_t ldc, intp_t *cols) noexcept nogil:
    """C (m, n) := A (m, k) B (k, n), all row-major, skipping A's zeros.

    cols: scratch for k indices. The last n % lanes columns go to gemm.
    """
    cdef intp_t lanes = (MLP_CY_SKIPZERO_LANES_F32 if floating is float
                         else MLP_CY_SKIPZERO_LANES_F64)
    cdef intp_t n_vec = n - n % lanes
    if n_vec > 0:
        _note_kernel_use()
        if floating is float:
            kernels.ab_f32(m, n_vec, k, A, lda, NULL, B, ldb, C, ldc, cols)
        else:
            kernels.ab_f64(m, n_vec, k, A, lda, NULL, B, ldb, C, ldc, cols)
    if n_vec < n:
        _gemm(RowMajor, NoTrans, NoTrans, <blas_int> m, <blas_int> (n - n_vec),
              <blas_int> k, <floating> 1, A, <blas_int> lda, B + n_vec, <blas_int> ldb,
              <floating> 0, C + n_vec, <blas_int> ldc)


cdef void _gemm_skipzero_rows(intp_t m, intp_t n, intp_t k,
                              const floating *const *A_rows, const floating *B,
                              intp_t ldb, floating *C, intp_t ldc,
                              intp_t *cols) noexcept nogil:
    """_gemm_skipzero with A's rows at A_rows[0 .. m]; n a multiple of the vector
    width (no gemm for the last columns: there is no strided A to give it)."""
    _note_kernel_use()
    if floating is float:
        kernels.ab_f32(m, n, k, NULL, 0, A_rows, B, ldb, C, ldc, cols)
    else:
        kernels.ab_f64(m, n, k, NULL, 0, A_rows, B, ldb, C, ldc, cols)


cdef void _gemm_t_skipzero_rows(intp_t m, intp_t n, intp_t k, floating alpha,
                                const floating *const *A_rows, intp_t a_col,
                                const floating *G, intp_t ldg, floating beta,
                                floating *C, intp_t ldc, intp_t *rows) noexcept nogil:
    """_gemm_t_skipzero over columns a_col .. a_col + k of the rows A_rows[0 .. m];
    n a multiple of the vector width."""
    _note_kernel_use()
    if floating is float:
        kernels.atb_f32(m, n, k, alpha, NULL, 0, A_rows, a_col, G, ldg, beta, C,
                                ldc, rows)
    else:
        kernels.atb_f64(m, n, k, alpha, NULL, 0, A_rows, a_col, G, ldg, beta, C,
                                ldc, rows)


cdef void _gemm_t_skipzero(intp_t m, intp_t n, intp_t k, floating alpha,
                           const floating *A, intp_t lda, const floating *G, intp_t ldg,
                           floating beta, floating *C, intp_t ldc,
                           intp_t *rows) noexcept nogil:
    """C (k, n) := beta C + alpha A^T G, A (m, k), G (m, n), skipping A's zeros.

    As in gemm, C is not read when beta is 0. rows: scratch for m indices.
    """
    cdef intp_t lanes = (MLP_CY_SKIPZERO_LANES_F32 if floating is float
                         else MLP_CY_SKIPZERO_LANES_F64)
    cdef intp_t n_vec = n - n % lanes
    if n_vec > 0:
        _note_kernel_use()
        if floating is float:
            kernels.atb_f32(m, n_vec, k, alpha, A, lda, NULL, 0, G, ldg, beta, C,
                                    ldc, rows)
        else:
            kernels.atb_f64(m, n_vec, k, alpha, A, lda, NULL, 0, G, ldg, beta, C,
                                    ldc, rows)
    if n_vec < n:
        _gemm(RowMajor, Trans, NoTrans, <blas_int> k, <blas_int> (n - n_vec),
              <blas_int> m, alpha, A, <blas_int> lda, G + n_vec, <blas_int> ldg,
              beta, C + n_vec, <blas_int> ldc)


# For the estimators' L-BFGS ###################################################

def _set_blas_threads(int n):
    """Set the BLAS's thread count to n (at least 1); returns the count it had, or 0
    where it cannot be set (then nothing changes).

    _base's L-BFGS runs scipy's own BLAS calls on one thread between the engine's
    calls: a threaded ddot there wakes the BLAS's workers, which then spin for
    milliseconds on the cores the engine's threads need (each evaluation took 1.6-2x
    as long; benchmarks/RESULTS.md, "engine v2 on its own threads")."""
    cdef int had = blas_num_threads()
    if blas_set_threads == NULL or had < 1:
        return 0
    blas_set_threads(max(1, n))
    return had


# Python shims, for the tests only ############################################

def _blas_num_threads():
    """blas_num_threads(): what the engine believes the BLAS will use (0: unknown)."""
    return blas_num_threads()


cdef int active_level() noexcept nogil:
    """The instruction-set level (MLP_CY_LEVEL_*) the kernels run at."""
    return kernel_level


def _level_number(name):
    for level in range(MLP_CY_N_LEVELS):
        if mlp_cy_level_built(level) and mlp_cy_level_name(level).decode() == name:
            return level
    raise ValueError(name)


def _kernel_levels():
    """The levels this build has and this CPU runs, lowest first: ("reference", "sse2",
    "avx2", "avx512") on an AVX-512 x86-64 CPU, ("reference", "neon") on aarch64."""
    return tuple(mlp_cy_level_name(level).decode() for level in range(MLP_CY_N_LEVELS)
                 if mlp_cy_level_built(level) and level <= mlp_cy_cpu_level())


def _kernel_level():
    """The level the kernels run at now."""
    return mlp_cy_level_name(kernel_level).decode()


def _set_kernel_level(name):
    """Run the kernels at level `name` (one of _kernel_levels()); returns the old one.

    For tests and benchmarks: process-wide, not thread-safe.
    """
    global kernel_level, kernels
    levels = _kernel_levels()
    if name not in levels:
        raise ValueError(f"kernel level must be one of {levels} on this CPU, got {name!r}")
    old = _kernel_level()
    kernel_level = _level_number(name)
    kernels = mlp_cy_skipzero_kernels(kernel_level)
    return old


# Every name MLP_CY_CPU_LEVEL takes, in rank order; "sse2" and "neon" are the same
# rank, each architecture's baseline.
CPU_LEVEL_NAMES = {"reference": 0, "sse2": 1, "neon": 1, "avx2": 2, "avx512": 3}


def _init_kernel_level(cap=None):
    """Pick the highest level the CPU has, at most `cap` (a name of CPU_LEVEL_NAMES;
    default: the environment variable MLP_CY_CPU_LEVEL, if set)."""
    if cap is None:
        cap = os.environ.get("MLP_CY_CPU_LEVEL", "").strip().lower() or None
    levels = _kernel_levels()
    if cap is not None:
        if cap not in CPU_LEVEL_NAMES:
            raise ValueError(
                f"MLP_CY_CPU_LEVEL={cap!r} is not a level: use one of "
                f"{', '.join(CPU_LEVEL_NAMES)} (this CPU runs up to {max(levels, key=CPU_LEVEL_NAMES.get)!r}), "
                "or unset it")
        levels = [name for name in levels if CPU_LEVEL_NAMES[name] <= CPU_LEVEL_NAMES[cap]]
    _set_kernel_level(max(levels, key=CPU_LEVEL_NAMES.get))


_init_kernel_level()


def _kernel_use_reset():
    """Forget which levels' kernels ran (see _kernel_levels_used)."""
    for level in range(MLP_CY_N_LEVELS):
        kernel_used[level] = False


def _kernel_levels_used():
    """The levels whose zero-skipping or dot-product kernels ran since the last
    _kernel_use_reset(), lowest first."""
    return tuple(mlp_cy_level_name(level).decode() for level in range(MLP_CY_N_LEVELS)
                 if kernel_used[level])


def _skipzero_pays():
    """Whether the plan skips zeros at the current level: (on one thread, on
    several)."""
    return bool(SKIPZERO_PAYS_SERIAL[kernel_level]), bool(SKIPZERO_PAYS_PARALLEL[kernel_level])


def _set_skipzero_mode(mode):
    """'auto' (the default), 'never' or 'always' (where available); returns the old one.

    For tests and benchmarks: process-wide, not thread-safe.
    """
    global skipzero_mode
    modes = ("auto", "never", "always")
    if mode not in modes:
        raise ValueError(f"mode must be one of {modes}, got {mode!r}")
    old = modes[skipzero_mode]
    skipzero_mode = modes.index(mode)
    return old


def _set_parallel_threads(n):
    """Threads of the parallel training step: 0 follows the BLAS (the default), n >= 1
    forces n parts even at one BLAS thread. Returns the old value.

    For tests and benchmarks: process-wide, not thread-safe.
    """
    global parallel_threads_override
    if not 0 <= n <= 1024:
        raise ValueError(f"n must be in [0, 1024], got {n!r}")
    old = parallel_threads_override
    parallel_threads_override = n
    return old


MAX_REPRODUCIBLE_THREADS = 64         # layers.pyx's MAX_THREADS


def _check_reproducible_threads(n, source, off="None"):
    """n as a thread count for reproducible_threads (None: off, 0), or ValueError."""
    import operator
    if n is None:
        return 0
    try:
        count = operator.index(n) if not isinstance(n, bool) else None
    except TypeError:
        count = None
    if count is None or not 1 <= count <= MAX_REPRODUCIBLE_THREADS:
        raise ValueError(
            f"{source} must be a whole number of threads from 1 to "
            f"{MAX_REPRODUCIBLE_THREADS}, or {off} for the default (chunks cut per "
            f"thread count); got {n!r}")
    return count


def _set_reproducible_threads(n):
    """Cut every call as for n threads (None: per thread count, the default); returns
    the old setting. Process-wide, like threadpoolctl's limits."""
    global reproducible_threads
    value = _check_reproducible_threads(n, "reproducible_threads")
    old = reproducible_threads or None
    reproducible_threads = value
    return old


def _reproducible_threads():
    """The thread count every call is cut for, or None (per thread count)."""
    return reproducible_threads or None


def _init_reproducible_threads():
    """The environment variable MLP_CY_REPRODUCIBLE_THREADS, at import."""
    text = os.environ.get("MLP_CY_REPRODUCIBLE_THREADS", "").strip()
    if not text:
        return
    try:
        n = int(text)
    except ValueError:
        n = text
    global reproducible_threads
    reproducible_threads = _check_reproducible_threads(
        n, f"MLP_CY_REPRODUCIBLE_THREADS={text!r}", off="unset")


_init_reproducible_threads()


def _engine_threads(intp_t m, intp_t k, intp_t n):
    """engine_threads: the thread rule's count for steps of m rows, k features, n
    hidden units (at least 1)."""
    return engine_threads(m, k, n)


def _cpu_budget():
    """The cores the thread rule counts this process may use."""
    return cpu_budget


def _set_cpu_budget(n=None):
    """Let the thread rule count n cores (None: _usable_cores() again); returns the
    old count. For tests and benchmarks: process-wide, not thread-safe."""
    global cpu_budget
    old = cpu_budget
    if n is None:
        n = _usable_cores()
    if not 1 <= n <= 4096:
        raise ValueError(f"n must be in [1, 4096], got {n!r}")
    cpu_budget = n
    return old


def _blas_threads_settable():
    """Whether the engine can change the BLAS's thread count during a call."""
    return blas_set_threads != NULL


def _skip_first_layer(intp_t m, intp_t k, intp_t n, intp_t itemsize, int threads):
    """skipzero_first_layer: whether the first layer's products skip zeros on batches
    (m, k) with n units of itemsize bytes, on `threads` threads (density aside)."""
    return skipzero_first_layer(m, k, n, itemsize, threads)


def _skip_pays_for_chunk(intp_t chunk_rows, intp_t k, intp_t n, intp_t itemsize):
    """skipzero_pays_for_chunk, for the tests."""
    return skipzero_pays_for_chunk(chunk_rows, k, n, itemsize)


def _gemm_skipzero_memview(const floating[:, :] A, const floating[:, ::1] B,
                           floating[:, :] C):
    """C := A B by _gemm_skipzero on C-order views (A and C may be row-sliced)."""
    import numpy as np
    if A.strides[1] != sizeof(floating) or C.strides[1] != sizeof(floating):
        raise ValueError("the last axis of A and C must be contiguous")
    if A.shape[1] != B.shape[0] or C.shape[0] != A.shape[0] or C.shape[1] != B.shape[1]:
        raise ValueError("shapes disagree")
    cdef intp_t[::1] cols = np.empty(max(A.shape[1], 1), dtype=np.intp)
    with nogil:
        _gemm_skipzero(A.shape[0], B.shape[1], A.shape[1], &A[0, 0],
                       A.strides[0] // sizeof(floating), &B[0, 0], B.shape[1],
                       &C[0, 0], C.strides[0] // sizeof(floating), &cols[0])


def _gemm_t_skipzero_memview(double alpha, const floating[:, :] A,
                             const floating[:, ::1] G, double beta, floating[:, :] C):
    """C := beta C + alpha A^T G by _gemm_t_skipzero on C-order views."""
    import numpy as np
    if A.strides[1] != sizeof(floating) or C.strides[1] != sizeof(floating):
        raise ValueError("the last axis of A and C must be contiguous")
    if A.shape[0] != G.shape[0] or C.shape[0] != A.shape[1] or C.shape[1] != G.shape[1]:
        raise ValueError("shapes disagree")
    cdef intp_t[::1] rows = np.empty(max(A.shape[0], 1), dtype=np.intp)
    with nogil:
        _gemm_t_skipzero(A.shape[0], G.shape[1], A.shape[1], <floating> alpha, &A[0, 0],
                         A.strides[0] // sizeof(floating), &G[0, 0], G.shape[1],
                         <floating> beta, &C[0, 0], C.strides[0] // sizeof(floating),
                         &rows[0])



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

