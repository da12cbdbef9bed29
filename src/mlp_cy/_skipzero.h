/* Matrix products that skip the zeros of the data matrix, for _blas.pyx.
 *
 * MNIST-style images are about half zeros (Fashion-MNIST 50%, MNIST 81%), and a dense
 * gemm multiplies every one of them. These two products skip a column (pixel) of a
 * block of rows when it is zero in all of them, and a row of a block of pixels when
 * all of those are zero in it (blocks of 4, or 8 rows for AVX-512's forward product):
 *
 *   mlp_cy_skipzero_ab_*    C (m, n) = A (m, k) B (k, n)                   X W1
 *   mlp_cy_skipzero_atb_*   C (k, n) = beta C + alpha A^T (k, m) G (m, n)  W1's update
 *
 * and batch_size 1's sweep over the rows of W1 of a sample's non-zero pixels
 * (mlp_cy_sample_sweep_*, in _skipzero_ref.h: plain C at every level).
 *
 * A is the data: row i at A + i lda, or, when A_rows is not NULL, at A_rows[i] (the
 * rows of a shuffled batch where they lie in X, not copied; atb reads columns a_col
 * on). B, C, G are dense with row strides ldb, ldc, ldg.
 * As in gemm, beta == 0 means C is not read. n must be a multiple of 64 bytes
 * (MLP_CY_SKIPZERO_LANES_F32 or _F64 values; the caller hands the last columns to
 * gemm), whatever the level. Sums run in another order than a BLAS gemm's: results
 * agree to rounding.
 *
 * One source, one build per instruction-set level (_cpu.h): the plain-C reference
 * (_skipzero_ref.h), and the vector kernels below, GCC/clang vector extensions of
 * 16 bytes (SSE2, NEON), 32 (AVX2 + FMA) and 64 (AVX-512F), the wider ones compiled
 * with __attribute__((target)). mlp_cy_skipzero_kernels(level) gives a level's table;
 * _blas.pyx picks the level once per process (and where each one pays: there).
 *
 * Each vector kernel keeps a tile of ROWS rows x NV vectors of C in registers while
 * it walks the selected columns (or rows), the shape of a gemm micro-kernel, so every
 * load of B (or G) feeds ROWS multiply-adds. The tiles fit the register file: 4 x 4
 * in the 32 registers of NEON and for AVX-512's atb, 4 x 2 in the 16 of SSE2 and
 * AVX2. AVX-512's ab takes 8 x 3: a taller block skips fewer pixels, but each load of
 * W_0 (from L2) then feeds 8 multiply-adds, and X W_0 took 0.86x the time of 4 x 4
 * (benchmarks/skipzero_tiles.c; atb at 8 x 3 took 1.5x, so it stays 4 x 4). Taller
 * blocks only add terms x = 0, each adding an exact zero: the sums are those of 4-row
 * blocks, bit for bit.
 */
#ifndef MLP_CY_SKIPZERO_H
#define MLP_CY_SKIPZERO_H

#include <stddef.h>

#include "_cpu.h"
#include "_skipzero_ref.h"

#define MLP_CY_SKIPZERO_LANES_F32 16
#define MLP_CY_SKIPZERO_LANES_F64 8

typedef void (*mlp_cy_ab_f32_fn)(Py_ssize_t, Py_ssize_t, Py_ssize_t, const float *,
                                 Py_ssize_t, const float *const *, const float *,
                                 Py_ssize_t, float *, Py_ssize_t, Py_ssize_t *);
typedef void (*mlp_cy_ab_f64_fn)(Py_ssize_t, Py_ssize_t, Py_ssize_t, const double *,
                                 Py_ssize_t, const double *const *, const double *,
                                 Py_ssize_t, double *, Py_ssize_t, Py_ssize_t *);
typedef void (*mlp_cy_atb_f32_fn)(Py_ssize_t, Py_ssize_t, Py_ssize_t, float,
                                  const float *, Py_ssize_t, const float *const *,
                                  Py_ssize_t, const float *, Py_ssize_t, float, float *,
                                  Py_ssize_t, Py_ssize_t *);
typedef void (*mlp_cy_atb_f64_fn)(Py_ssize_t, Py_ssize_t, Py_ssize_t, double,
                                  const double *, Py_ssize_t, const double *const *,
                                  Py_ssize_t, const double *, Py_ssize_t, double,
                                  double *, Py_ssize_t, Py_ssize_t *);
typedef void (*mlp_cy_sample_sweep_f32_fn)(Py_ssize_t, Py_ssize_t, const float *,
                                           const float *, float, const float *, float *,
                                           float *);
typedef void (*mlp_cy_sample_sweep_f64_fn)(Py_ssize_t, Py_ssize_t, const double *,
                                           const double *, double, const double *,
                                           double *, double *);

/* One level's kernels. */
typedef struct {
    mlp_cy_ab_f32_fn ab_f32;
    mlp_cy_ab_f64_fn ab_f64;
    mlp_cy_atb_f32_fn atb_f32;
    mlp_cy_atb_f64_fn atb_f64;
    mlp_cy_sample_sweep_f32_fn sample_sweep_f32;
    mlp_cy_sample_sweep_f64_fn sample_sweep_f64;
} mlp_cy_skipzero_table;

/* SWEEP: the level whose build of the sample sweep goes with this one. */
#define MLP_CY_SKIPZERO_TABLE(LEVEL, SWEEP)                                          \
    {mlp_cy_skipzero_ab_f32_##LEVEL, mlp_cy_skipzero_ab_f64_##LEVEL,                 \
     mlp_cy_skipzero_atb_f32_##LEVEL, mlp_cy_skipzero_atb_f64_##LEVEL,               \
     mlp_cy_sample_sweep_f32_##SWEEP, mlp_cy_sample_sweep_f64_##SWEEP}

static const mlp_cy_skipzero_table mlp_cy_skipzero_reference =
    MLP_CY_SKIPZERO_TABLE(reference, reference);

#if MLP_CY_X86_LEVELS || MLP_CY_NEON_LEVEL

/* One NV-vector-wide tile of the forward product: C rows i0 .. i0 + n_rows, columns
 * j0 .. j0 + NV * lanes, summed over the selected columns cols[0 .. n_cols] of the
 * ROWS rows a[] (the last row repeated when the block is short; it is not stored). */
#define MLP_CY_AB_TILE(T, V, ROWS, NV)                                               \
    do {                                                                             \
        V acc_[ROWS][NV], w_[NV];                                                    \
        Py_ssize_t q_, r_, v_;                                                       \
        for (r_ = 0; r_ < ROWS; r_++)                                                \
            for (v_ = 0; v_ < NV; v_++)                                              \
                acc_[r_][v_] = (V){0};                                               \
        for (q_ = 0; q_ < n_cols; q_++) {                                            \
            const Py_ssize_t p_ = cols[q_];                                          \
            const V *b_ = (const V *)(B + p_ * ldb + j0);                            \
            for (v_ = 0; v_ < NV; v_++)                                              \
                w_[v_] = b_[v_];                                                     \
            for (r_ = 0; r_ < ROWS; r_++) {                                          \
                const T x_ = a[r_][p_];                                              \
                for (v_ = 0; v_ < NV; v_++)                                          \
                    acc_[r_][v_] += x_ * w_[v_];                                     \
            }                                                                        \
        }                                                                            \
        for (r_ = 0; r_ < n_rows; r_++)                                              \
            for (v_ = 0; v_ < NV; v_++)                                              \
                *(V *)(C + (i0 + r_) * ldc + j0 + v_ * lanes) = acc_[r_][v_];        \
    } while (0)

/* One NV-vector-wide tile of the transposed product: C rows (pixels) p0 .. p0 +
 * n_out (ROWS pixels, the last repeated when the block is short), columns j0 .. j0 +
 * NV * lanes, summed over the selected rows rows[0 .. n_rows] of A and G. */
#define MLP_CY_ATB_TILE(T, V, ROWS, NV)                                              \
    do {                                                                             \
        V acc_[ROWS][NV], w_[NV];                                                    \
        Py_ssize_t q_, r_, v_;                                                       \
        for (r_ = 0; r_ < ROWS; r_++)                                                \
            for (v_ = 0; v_ < NV; v_++) {                                            \
                acc_[r_][v_] = (V){0};                                               \
                if (r_ < n_out && beta != 0)                                         \
                    acc_[r_][v_] = beta * *(const V *)(C + (p0 + r_) * ldc + j0 + v_ * lanes); \
            }                                                                        \
        for (q_ = 0; q_ < n_rows; q_++) {                                            \
            const Py_ssize_t i_ = rows[q_];                                          \
            const V *g_ = (const V *)(G + i_ * ldg + j0);                            \
            const T *x_ = A_rows != NULL ? A_rows[i_] + a_col : A + i_ * lda;        \
            for (v_ = 0; v_ < NV; v_++)                                              \
                w_[v_] = g_[v_];                                                     \
            for (r_ = 0; r_ < ROWS; r_++) {                                          \
                const T s_ = alpha * x_[pix[r_]];                                    \
                for (v_ = 0; v_ < NV; v_++)                                          \
                    acc_[r_][v_] += s_ * w_[v_];                                     \
            }                                                                        \
        }                                                                            \
        for (r_ = 0; r_ < n_out; r_++)                                               \
            for (v_ = 0; v_ < NV; v_++)                                              \
                *(V *)(C + (p0 + r_) * ldc + j0 + v_ * lanes) = acc_[r_][v_];        \
    } while (0)

#define MLP_CY_DEFINE_SKIPZERO(SUFFIX, T, V, AB_ROWS, AB_NV, ATB_ROWS, ATB_NV, ATTR, \
                               LEVEL)                                                \
ATTR static void                                                                     \
mlp_cy_skipzero_ab_##SUFFIX##_##LEVEL(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,      \
                            const T *A, Py_ssize_t lda, const T *const *A_rows,      \
                            const T *B, Py_ssize_t ldb,                              \
                            T *C, Py_ssize_t ldc, Py_ssize_t *cols)                  \
{                                                                                    \
    const Py_ssize_t lanes = (Py_ssize_t)(sizeof(V) / sizeof(T));                    \
    const Py_ssize_t wide = AB_NV * lanes;                                           \
    Py_ssize_t i0, j0, p, r, n_rows, n_cols;                                         \
    int nonzero;                                                                     \
    const T *a[AB_ROWS];                                                             \
    for (i0 = 0; i0 < m; i0 += AB_ROWS) {                                            \
        n_rows = m - i0 < AB_ROWS ? m - i0 : AB_ROWS;                                \
        for (r = 0; r < AB_ROWS; r++) {                                              \
            const Py_ssize_t i_ = i0 + (r < n_rows ? r : n_rows - 1);                \
            a[r] = A_rows != NULL ? A_rows[i_] : A + i_ * lda;                       \
        }                                                                            \
        n_cols = 0;                                                                  \
        for (p = 0; p < k; p++) {   /* branch-free: the test is close to a coin toss */ \
            nonzero = 0;                                                             \
            for (r = 0; r < AB_ROWS; r++)                                            \
                nonzero |= a[r][p] != 0;                                             \
            cols[n_cols] = p;                                                        \
            n_cols += nonzero;                                                       \
        }                                                                            \
        for (j0 = 0; j0 + wide <= n; j0 += wide)                                     \
            MLP_CY_AB_TILE(T, V, AB_ROWS, AB_NV);                                    \
        for (; j0 < n; j0 += lanes)                                                  \
            MLP_CY_AB_TILE(T, V, AB_ROWS, 1);                                        \
    }                                                                                \
}                                                                                    \
                                                                                     \
ATTR static void                                                                     \
mlp_cy_skipzero_atb_##SUFFIX##_##LEVEL(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, T alpha, \
                             const T *A, Py_ssize_t lda, const T *const *A_rows,     \
                             Py_ssize_t a_col, const T *G, Py_ssize_t ldg,           \
                             T beta, T *C, Py_ssize_t ldc, Py_ssize_t *rows)         \
{                                                                                    \
    const Py_ssize_t lanes = (Py_ssize_t)(sizeof(V) / sizeof(T));                    \
    const Py_ssize_t wide = ATB_NV * lanes;                                          \
    Py_ssize_t p0, j0, i, j, r, n_rows, n_out;                                       \
    int nonzero;                                                                     \
    Py_ssize_t pix[ATB_ROWS];                                                        \
    for (p0 = 0; p0 < k; p0 += ATB_ROWS) {                                           \
        n_out = k - p0 < ATB_ROWS ? k - p0 : ATB_ROWS;                               \
        for (r = 0; r < ATB_ROWS; r++)                                               \
            pix[r] = p0 + (r < n_out ? r : n_out - 1);                               \
        n_rows = 0;                                                                  \
        for (i = 0; i < m; i++) {                                                    \
            const T *x = A_rows != NULL ? A_rows[i] + a_col : A + i * lda;           \
            nonzero = 0;                                                             \
            for (r = 0; r < ATB_ROWS; r++)                                           \
                nonzero |= x[pix[r]] != 0;                                           \
            rows[n_rows] = i;                                                        \
            n_rows += nonzero;                                                       \
        }                                                                            \
        if (n_rows == 0) {          /* no data in these pixels: C only decays */     \
            if (beta != 1)                                                           \
                for (r = 0; r < n_out; r++)                                          \
                    for (j = 0; j < n; j++)                                          \
                        C[(p0 + r) * ldc + j] =                                      \
                            beta == 0 ? 0 : beta * C[(p0 + r) * ldc + j];            \
            continue;                                                                \
        }                                                                            \
        for (j0 = 0; j0 + wide <= n; j0 += wide)                                     \
            MLP_CY_ATB_TILE(T, V, ATB_ROWS, ATB_NV);                                 \
        for (; j0 < n; j0 += lanes)                                                  \
            MLP_CY_ATB_TILE(T, V, ATB_ROWS, 1);                                      \
    }                                                                                \
}

/* Vector types that may sit at any element-aligned address and alias their element. */
#define MLP_CY_VECTOR(NAME, T, BYTES) \
    typedef T NAME __attribute__((vector_size(BYTES), aligned(sizeof(T)), may_alias))
MLP_CY_VECTOR(mlp_cy_f32x4, float, 16);
MLP_CY_VECTOR(mlp_cy_f64x2, double, 16);

/* The baseline: SSE2 on x86-64, NEON on aarch64; no target attribute needed. */
#define MLP_CY_BASELINE_ATTR
#if MLP_CY_NEON_LEVEL
#define MLP_CY_BASELINE_NV 4    /* 32 registers */
#else
#define MLP_CY_BASELINE_NV 2    /* 16 registers */
#endif
MLP_CY_DEFINE_SKIPZERO(f32, float, mlp_cy_f32x4, 4, MLP_CY_BASELINE_NV, 4, MLP_CY_BASELINE_NV,
                       MLP_CY_BASELINE_ATTR, baseline)
MLP_CY_DEFINE_SKIPZERO(f64, double, mlp_cy_f64x2, 4, MLP_CY_BASELINE_NV, 4, MLP_CY_BASELINE_NV,
                       MLP_CY_BASELINE_ATTR, baseline)
/* The baseline's sample sweep is the reference one: the same source, compiled alike. */
static const mlp_cy_skipzero_table mlp_cy_skipzero_baseline =
    MLP_CY_SKIPZERO_TABLE(baseline, reference);

#if MLP_CY_X86_LEVELS
MLP_CY_VECTOR(mlp_cy_f32x8, float, 32);
MLP_CY_VECTOR(mlp_cy_f64x4, double, 32);
MLP_CY_VECTOR(mlp_cy_f32x16, float, 64);
MLP_CY_VECTOR(mlp_cy_f64x8, double, 64);

#define MLP_CY_AVX2_ATTR __attribute__((target("avx2,fma")))
MLP_CY_DEFINE_SKIPZERO(f32, float, mlp_cy_f32x8, 4, 2, 4, 2, MLP_CY_AVX2_ATTR, avx2)
MLP_CY_DEFINE_SKIPZERO(f64, double, mlp_cy_f64x4, 4, 2, 4, 2, MLP_CY_AVX2_ATTR, avx2)
MLP_CY_DEFINE_SAMPLE_SWEEP(f32, float, MLP_CY_AVX2_ATTR, avx2)
MLP_CY_DEFINE_SAMPLE_SWEEP(f64, double, MLP_CY_AVX2_ATTR, avx2)
static const mlp_cy_skipzero_table mlp_cy_skipzero_avx2 = MLP_CY_SKIPZERO_TABLE(avx2, avx2);

#define MLP_CY_AVX512_ATTR __attribute__((target("avx512f")))
MLP_CY_DEFINE_SKIPZERO(f32, float, mlp_cy_f32x16, 8, 3, 4, 4, MLP_CY_AVX512_ATTR, avx512)
MLP_CY_DEFINE_SKIPZERO(f64, double, mlp_cy_f64x8, 8, 3, 4, 4, MLP_CY_AVX512_ATTR, avx512)
MLP_CY_DEFINE_SAMPLE_SWEEP(f32, float, MLP_CY_AVX512_ATTR, avx512)
MLP_CY_DEFINE_SAMPLE_SWEEP(f64, double, MLP_CY_AVX512_ATTR, avx512)
static const mlp_cy_skipzero_table mlp_cy_skipzero_avx512 =
    MLP_CY_SKIPZERO_TABLE(avx512, avx512);
#endif

#endif  /* vector levels */

/* The kernels of a level this build has (mlp_cy_level_built), else NULL. */
static const mlp_cy_skipzero_table *mlp_cy_skipzero_kernels(int level)
{
    switch (level) {
    case MLP_CY_LEVEL_REFERENCE: return &mlp_cy_skipzero_reference;
#if MLP_CY_X86_LEVELS || MLP_CY_NEON_LEVEL
    case MLP_CY_LEVEL_BASELINE: return &mlp_cy_skipzero_baseline;
#endif
#if MLP_CY_X86_LEVELS
    case MLP_CY_LEVEL_AVX2: return &mlp_cy_skipzero_avx2;
    case MLP_CY_LEVEL_AVX512: return &mlp_cy_skipzero_avx512;
#endif
    default: return NULL;
    }
}

#endif
