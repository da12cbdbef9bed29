/* Prototype, measured and dropped: the zero-skipping products on 2 threads.
 *
 * mlp_cy's zero-skipping products (src/mlp_cy/_skipzero.h) run on one thread, so the
 * engine uses them only when the BLAS has one thread. This file is the 2-thread
 * version that was tried: a small pthread pool (no OpenMP) splits the 4-row blocks of
 * X W1, or the 4-pixel blocks of W1's update, between the caller and a helper. It
 * times, on Fashion-MNIST batches, per epoch (60,000 rows):
 *
 *   gemm      scipy's OpenBLAS sgemm (threads from OPENBLAS_NUM_THREADS)
 *   skip      the products on T threads, right after the gemm loop (OpenBLAS's
 *             worker threads still spin, waiting for more work)
 *   skip-idle the same after 0.5 s of sleep (OpenBLAS's workers have gone to sleep)
 *
 * Build and run from the repository root (x86-64 with AVX-512F, gcc, zlib, Fashion-
 * MNIST in /usr/share/datasets/fashion-mnist, scipy installed):
 *
 *   OB=$(python -c "import glob, os, scipy; print(glob.glob(os.path.join(
 *        os.path.dirname(scipy.__file__), os.pardir, 'scipy.libs',
 *        'libscipy_openblas*.so'))[0])")
 *   gcc -O3 -fno-trapping-math -Isrc/mlp_cy benchmarks/skipzero_threads.c \
 *       -o /tmp/skipzero_threads "$OB" -lz -lm -lpthread -Wl,-rpath,"$(dirname "$OB")"
 *   OPENBLAS_NUM_THREADS=2 /tmp/skipzero_threads 64 256 2    # batch, hidden, threads
 *
 * Results are in benchmarks/RESULTS.md.
 */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

typedef ptrdiff_t Py_ssize_t;
#include "_skipzero.h"

void scipy_cblas_sgemm(int order, int ta, int tb, int m, int n, int k, float alpha,
                       const float *A, int lda, const float *B, int ldb, float beta,
                       float *C, int ldc);
enum { RowMajor = 101, NoTrans = 111, Trans = 112 };

/* ---- the pool ------------------------------------------------------------ */
/* A few helper threads for the zero-skipping products (_skipzero.h), for _blas.pyx.
 *
 * With T BLAS threads (threadpoolctl's limit), gemm runs on T cores; the
 * zero-skipping products must too, or they lose to it. They run between BLAS calls,
 * never during one, so T threads of ours plus T of the BLAS never compete for cores.
 * OpenMP would do this, but it would put libgomp in the wheels and hang forked
 * children; this is the little of it that is needed:
 *
 *   mlp_cy_workers_run(n_parts, fn, ctx)   runs fn(ctx, 0) .. fn(ctx, n_parts - 1),
 *                                          part 0 on the calling thread, the others on
 *                                          helpers; returns when all are done.
 *
 * - One pool per process, started on first use, at most MLP_CY_MAX_WORKERS helpers.
 *   A second caller while the pool is busy (two models training in two Python
 *   threads) runs all parts itself: never more threads than asked for.
 * - A helper spins a little after each part (the next one comes within a training
 *   step, ~100 us), then sleeps on a condition variable.
 * - Helpers block every signal, so Ctrl-C reaches the Python thread.
 * - fork(): the child forgets the parent's helpers (they do not exist there) and
 *   starts its own on first use.
 *
 * POSIX threads only; elsewhere mlp_cy_workers_run runs every part in the caller.
 */

typedef void (*mlp_cy_part_fn)(void *ctx, int part, int n_parts);

#define MLP_CY_MAX_WORKERS 63

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>

typedef struct {
    pthread_t thread;
    /* Written by the caller, then published by `ticket` (release); read by the helper
     * after it sees the new ticket (acquire). */
    mlp_cy_part_fn fn;
    void *ctx;
    int part, n_parts;
    atomic_ulong ticket;        /* incremented once per part handed over */
    atomic_ulong finished;      /* set to ticket when the part is done */
} mlp_cy_worker;

static struct {
    pthread_mutex_t lock;       /* one caller at a time (trylock) */
    pthread_mutex_t sleep_lock; /* with `wake`, for helpers that stopped spinning */
    pthread_cond_t wake;
    int n_started;
    int atfork_registered;
    mlp_cy_worker workers[MLP_CY_MAX_WORKERS];
} mlp_cy_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
                 PTHREAD_COND_INITIALIZER, 0, 0};

/* Spin iterations before a helper sleeps: about 100-200 us. */
#define MLP_CY_SPIN 20000

static inline void mlp_cy_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void *mlp_cy_worker_main(void *arg)
{
    mlp_cy_worker *w = (mlp_cy_worker *)arg;
    unsigned long seen = 0;
    for (;;) {
        unsigned long ticket;
        int spins = 0;
        while ((ticket = atomic_load_explicit(&w->ticket, memory_order_acquire)) == seen) {
            if (++spins < MLP_CY_SPIN) {
                mlp_cy_cpu_relax();
                continue;
            }
            pthread_mutex_lock(&mlp_cy_pool.sleep_lock);
            while (atomic_load(&w->ticket) == seen)
                pthread_cond_wait(&mlp_cy_pool.wake, &mlp_cy_pool.sleep_lock);
            pthread_mutex_unlock(&mlp_cy_pool.sleep_lock);
            spins = 0;
        }
        seen = ticket;
        w->fn(w->ctx, w->part, w->n_parts);
        atomic_store_explicit(&w->finished, ticket, memory_order_release);
    }
    return NULL;
}

static void mlp_cy_workers_atfork_child(void)
{
    /* Only the forking thread exists in the child: start afresh. */
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t fresh_cond = PTHREAD_COND_INITIALIZER;
    mlp_cy_pool.lock = fresh;
    mlp_cy_pool.sleep_lock = fresh;
    mlp_cy_pool.wake = fresh_cond;
    mlp_cy_pool.n_started = 0;
}

/* Start helpers up to n (caller holds pool.lock); returns how many there are. */
static int mlp_cy_workers_start(int n)
{
    sigset_t all, old;
    if (n > MLP_CY_MAX_WORKERS)
        n = MLP_CY_MAX_WORKERS;
    if (!mlp_cy_pool.atfork_registered) {
        if (pthread_atfork(NULL, NULL, mlp_cy_workers_atfork_child) != 0)
            return 0;           /* a forked child would wait for ghosts: no helpers */
        mlp_cy_pool.atfork_registered = 1;
    }
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);   /* inherited by the new threads */
    while (mlp_cy_pool.n_started < n) {
        mlp_cy_worker *w = &mlp_cy_pool.workers[mlp_cy_pool.n_started];
        atomic_init(&w->ticket, 0);
        atomic_init(&w->finished, 0);
        if (pthread_create(&w->thread, NULL, mlp_cy_worker_main, w) != 0)
            break;
        pthread_detach(w->thread);
        mlp_cy_pool.n_started++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return mlp_cy_pool.n_started;
}

static void mlp_cy_workers_run(int n_parts, mlp_cy_part_fn fn, void *ctx)
{
    int i, n_helpers;
    if (n_parts > 1 && pthread_mutex_trylock(&mlp_cy_pool.lock) == 0) {
        n_helpers = mlp_cy_workers_start(n_parts - 1);
        if (n_helpers > n_parts - 1)
            n_helpers = n_parts - 1;
        if (n_helpers > 0) {
            unsigned long tickets[MLP_CY_MAX_WORKERS];
            for (i = 0; i < n_helpers; i++) {
                mlp_cy_worker *w = &mlp_cy_pool.workers[i];
                w->fn = fn;
                w->ctx = ctx;
                w->part = i + 1;
                w->n_parts = n_parts;
                tickets[i] = atomic_load(&w->ticket) + 1;
                atomic_store_explicit(&w->ticket, tickets[i], memory_order_release);
            }
            /* Wakes the helpers that went to sleep (cheap when none did: no waiter,
             * no system call). A helper tests its ticket under sleep_lock before it
             * waits, so it cannot miss this. */
            pthread_mutex_lock(&mlp_cy_pool.sleep_lock);
            pthread_cond_broadcast(&mlp_cy_pool.wake);
            pthread_mutex_unlock(&mlp_cy_pool.sleep_lock);
            /* Part 0 here, then the parts beyond the helpers, if any. */
            fn(ctx, 0, n_parts);
            for (i = n_helpers + 1; i < n_parts; i++)
                fn(ctx, i, n_parts);
            for (i = 0; i < n_helpers; i++)
                while (atomic_load_explicit(&mlp_cy_pool.workers[i].finished,
                                            memory_order_acquire) != tickets[i])
                    mlp_cy_cpu_relax();
            pthread_mutex_unlock(&mlp_cy_pool.lock);
            return;
        }
        pthread_mutex_unlock(&mlp_cy_pool.lock);
    }
    for (i = 0; i < n_parts; i++)
        fn(ctx, i, n_parts);
}

#else

static void mlp_cy_workers_run(int n_parts, mlp_cy_part_fn fn, void *ctx)
{
    int i;
    for (i = 0; i < n_parts; i++)
        fn(ctx, i, n_parts);
}

#endif


/* ---- the products on n_parts threads --------------------------------------- */

/* Part `part` of n_parts of n_items rows, split at multiples of 4 (the tiles' rows
 * when this was measured). */
#define MLP_CY_TILE_ROWS 4
static void mlp_cy_block_range(Py_ssize_t n_items, int part, int n_parts,
                               Py_ssize_t *begin, Py_ssize_t *end)
{
    Py_ssize_t blocks = (n_items + MLP_CY_TILE_ROWS - 1) / MLP_CY_TILE_ROWS;
    *begin = blocks * part / n_parts * MLP_CY_TILE_ROWS;
    *end = blocks * (part + 1) / n_parts * MLP_CY_TILE_ROWS;
    if (*begin > n_items)
        *begin = n_items;
    if (*end > n_items)
        *end = n_items;
}

/* The same products on n_parts threads (_workers.h): part p takes a contiguous range
 * of the 4-row blocks of C (ab) or of the 4-pixel blocks (atb), so the parts write
 * disjoint rows of C. scratch holds n_parts * scratch_stride indices. */
#define MLP_CY_DEFINE_SKIPZERO_PARTS(SUFFIX, T)                                       \
typedef struct {                                                                     \
    Py_ssize_t m, n, k, lda, ldb, ldc, scratch_stride;                               \
    const T *A, *B;                                                                  \
    T *C, alpha, beta;                                                               \
    Py_ssize_t *scratch;                                                             \
} mlp_cy_skipzero_args_##SUFFIX;                                                     \
                                                                                     \
static void mlp_cy_skipzero_ab_part_##SUFFIX(void *ctx, int part, int n_parts)       \
{                                                                                    \
    const mlp_cy_skipzero_args_##SUFFIX *a = (const mlp_cy_skipzero_args_##SUFFIX *)ctx; \
    Py_ssize_t r0, r1;                                                               \
    mlp_cy_block_range(a->m, part, n_parts, &r0, &r1);                               \
    if (r1 > r0)                                                                     \
        mlp_cy_skipzero_ab_##SUFFIX##_avx512(r1 - r0, a->n, a->k, a->A + r0 * a->lda, a->lda, \
                                    NULL, a->B, a->ldb, a->C + r0 * a->ldc, a->ldc,        \
                                    a->scratch + part * a->scratch_stride);          \
}                                                                                    \
                                                                                     \
static void mlp_cy_skipzero_atb_part_##SUFFIX(void *ctx, int part, int n_parts)      \
{                                                                                    \
    const mlp_cy_skipzero_args_##SUFFIX *a = (const mlp_cy_skipzero_args_##SUFFIX *)ctx; \
    Py_ssize_t p0, p1;                                                               \
    mlp_cy_block_range(a->k, part, n_parts, &p0, &p1);                               \
    if (p1 > p0)                                                                     \
        mlp_cy_skipzero_atb_##SUFFIX##_avx512(a->m, a->n, p1 - p0, a->alpha, a->A + p0, a->lda, \
                                     NULL, 0, a->B, a->ldb, a->beta, a->C + p0 * a->ldc,      \
                                     a->ldc, a->scratch + part * a->scratch_stride); \
}                                                                                    \
                                                                                     \
static void mlp_cy_skipzero_ab_parts_##SUFFIX(int n_parts, Py_ssize_t m, Py_ssize_t n, \
        Py_ssize_t k, const T *A, Py_ssize_t lda, const T *B, Py_ssize_t ldb, T *C,  \
        Py_ssize_t ldc, Py_ssize_t *scratch, Py_ssize_t scratch_stride)              \
{                                                                                    \
    mlp_cy_skipzero_args_##SUFFIX a = {m, n, k, lda, ldb, ldc, scratch_stride,       \
                                       A, B, C, 1, 0, scratch};                      \
    mlp_cy_workers_run(n_parts, mlp_cy_skipzero_ab_part_##SUFFIX, &a);               \
}                                                                                    \
                                                                                     \
static void mlp_cy_skipzero_atb_parts_##SUFFIX(int n_parts, Py_ssize_t m, Py_ssize_t n, \
        Py_ssize_t k, T alpha, const T *A, Py_ssize_t lda, const T *G, Py_ssize_t ldg, \
        T beta, T *C, Py_ssize_t ldc, Py_ssize_t *scratch, Py_ssize_t scratch_stride) \
{                                                                                    \
    mlp_cy_skipzero_args_##SUFFIX a = {m, n, k, lda, ldg, ldc, scratch_stride,       \
                                       A, G, C, alpha, beta, scratch};               \
    mlp_cy_workers_run(n_parts, mlp_cy_skipzero_atb_part_##SUFFIX, &a);              \
}

MLP_CY_DEFINE_SKIPZERO_PARTS(f32, float)


/* ---- the measurement ----------------------------------------------------- */

static double seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

int main(int argc, char **argv)
{
    const int d = 784, n = 60000;
    int m, h, threads, batches, b, rep, i;
    static unsigned char raw[16 + 60000 * 784];
    float *X, *W1, *W1_skip, *Z, *Z_skip, *G;
    Py_ssize_t *scratch, stride;
    double t, best[6] = {1e9, 1e9, 1e9, 1e9, 1e9, 1e9}, err_fwd = 0, err_upd = 0;
    gzFile f;
    if (argc != 4) {
        fprintf(stderr, "usage: %s batch_size n_hidden threads\n", argv[0]);
        return 2;
    }
    m = atoi(argv[1]), h = atoi(argv[2]), threads = atoi(argv[3]);
    if (m < 1 || h < 16 || h % 16 || threads < 1 || mlp_cy_cpu_level() != MLP_CY_LEVEL_AVX512) {
        fprintf(stderr, "need batch >= 1, n_hidden a multiple of 16, AVX-512F\n");
        return 2;
    }
    f = gzopen("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", "rb");
    if (f == NULL || gzread(f, raw, sizeof raw) != (int)sizeof raw) {
        fprintf(stderr, "cannot read Fashion-MNIST\n");
        return 1;
    }
    gzclose(f);
    X = malloc(sizeof(float) * (size_t)n * d);
    W1 = malloc(sizeof(float) * d * h), W1_skip = malloc(sizeof(float) * d * h);
    Z = malloc(sizeof(float) * m * h), Z_skip = malloc(sizeof(float) * m * h);
    G = malloc(sizeof(float) * m * h);
    stride = d > m ? d : m;
    scratch = malloc(sizeof(Py_ssize_t) * stride * threads);
    for (i = 0; i < n * d; i++)
        X[i] = raw[16 + i] / 255.0f;
    srand(0);
    for (i = 0; i < d * h; i++)
        W1[i] = W1_skip[i] = (rand() / (float)RAND_MAX - 0.5f) * 0.1f;
    for (i = 0; i < m * h; i++)
        G[i] = (rand() / (float)RAND_MAX - 0.5f) * 0.01f;
    batches = n / m;
    for (rep = 0; rep < 3; rep++) {
        t = seconds();
        for (b = 0; b < batches; b++)
            scipy_cblas_sgemm(RowMajor, NoTrans, NoTrans, m, h, d, 1, X + (size_t)b * m * d,
                              d, W1, h, 0, Z, h);
        t = seconds() - t, best[0] = t < best[0] ? t : best[0];
        t = seconds();
        for (b = 0; b < batches; b++)
            mlp_cy_skipzero_ab_parts_f32(threads, m, h, d, X + (size_t)b * m * d, d, W1, h,
                                         Z_skip, h, scratch, stride);
        t = seconds() - t, best[1] = t < best[1] ? t : best[1];
        usleep(500000);
        t = seconds();
        for (b = 0; b < batches; b++)
            mlp_cy_skipzero_ab_parts_f32(threads, m, h, d, X + (size_t)b * m * d, d, W1, h,
                                         Z_skip, h, scratch, stride);
        t = seconds() - t, best[2] = t < best[2] ? t : best[2];
        t = seconds();
        for (b = 0; b < batches; b++)
            scipy_cblas_sgemm(RowMajor, Trans, NoTrans, d, h, m, -0.1f, X + (size_t)b * m * d,
                              d, G, h, 1, W1, h);
        t = seconds() - t, best[3] = t < best[3] ? t : best[3];
        t = seconds();
        for (b = 0; b < batches; b++)
            mlp_cy_skipzero_atb_parts_f32(threads, m, h, d, -0.1f, X + (size_t)b * m * d, d,
                                          G, h, 1, W1_skip, h, scratch, stride);
        t = seconds() - t, best[4] = t < best[4] ? t : best[4];
        usleep(500000);
        t = seconds();
        for (b = 0; b < batches; b++)
            mlp_cy_skipzero_atb_parts_f32(threads, m, h, d, -0.1f, X + (size_t)b * m * d, d,
                                          G, h, 1, W1_skip, h, scratch, stride);
        t = seconds() - t, best[5] = t < best[5] ? t : best[5];
    }
    /* The last batch once more through both, from the same W1, as a check. */
    scipy_cblas_sgemm(RowMajor, NoTrans, NoTrans, m, h, d, 1, X, d, W1, h, 0, Z, h);
    mlp_cy_skipzero_ab_parts_f32(threads, m, h, d, X, d, W1, h, Z_skip, h, scratch, stride);
    for (i = 0; i < m * h; i++)
        err_fwd = fmax(err_fwd, fabs(Z[i] - Z_skip[i]) / (1 + fabs(Z[i])));
    for (i = 0; i < d * h; i++)
        W1_skip[i] = W1[i];
    scipy_cblas_sgemm(RowMajor, Trans, NoTrans, d, h, m, -0.1f, X, d, G, h, 1, W1, h);
    mlp_cy_skipzero_atb_parts_f32(threads, m, h, d, -0.1f, X, d, G, h, 1, W1_skip, h,
                                  scratch, stride);
    for (i = 0; i < d * h; i++)
        err_upd = fmax(err_upd, fabs(W1[i] - W1_skip[i]) / (1 + fabs(W1[i])));
    printf("b=%d h=%d, %d thread(s), s/epoch | X W1: gemm %.3f, skip %.3f (%.2fx), "
           "skip-idle %.3f (%.2fx) | W1 update: gemm %.3f, skip %.3f (%.2fx), skip-idle "
           "%.3f (%.2fx) | max rel. difference %.1e, %.1e\n", m, h, threads, best[0],
           best[1], best[1] / best[0], best[2], best[2] / best[0], best[3], best[4],
           best[4] / best[3], best[5], best[5] / best[3], err_fwd, err_upd);
    return 0;
}
