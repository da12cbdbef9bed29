/* The reference versions of the kernels in _skipzero.h: plain C, written to be read.
 *
 * They compute what the vector builds compute, in the same order per output value
 * (a product's terms in increasing order of the summed index, starting from 0, or
 * from beta C), so a build without fused multiply-add (SSE2) gives the same bits,
 * and the others (AVX2, AVX-512, NEON contract a b + c into one rounding) agree to
 * rounding. They are the kernels wherever no vector build applies (MSVC, other
 * compilers and CPUs) and the oracle of the tests for the vector builds. Zeros of
 * the data are skipped one value at a time here; the vector builds skip them by
 * blocks of 4 (adding 0 x b changes no sum).
 *
 * Arguments as in _skipzero.h; any n works here.
 *
 * The sample sweep (batch_size 1) is plain C at every level: the compiler vectorises
 * its loops, and _skipzero.h compiles this same source once per level.
 */
#ifndef MLP_CY_SKIPZERO_REF_H
#define MLP_CY_SKIPZERO_REF_H

#include <stddef.h>

#define MLP_CY_DEFINE_REFERENCE(SUFFIX, T)                                           \
/* C (m, n) = A (m, k) B (k, n), over A's non-zero values. */                       \
static void                                                                          \
mlp_cy_skipzero_ab_##SUFFIX##_reference(                                             \
    Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const T *A, Py_ssize_t lda,            \
    const T *const *A_rows, const T *B, Py_ssize_t ldb, T *C, Py_ssize_t ldc,        \
    Py_ssize_t *cols)                                                                \
{                                                                                    \
    Py_ssize_t i, j, p;                                                              \
    (void)cols;                                                                      \
    for (i = 0; i < m; i++) {                                                        \
        const T *a = A_rows != NULL ? A_rows[i] : A + i * lda;                       \
        T *c = C + i * ldc;                                                          \
        for (j = 0; j < n; j++)                                                      \
            c[j] = 0;                                                                \
        for (p = 0; p < k; p++) {                                                    \
            const T *b = B + p * ldb;                                                \
            if (a[p] == 0)                                                           \
                continue;                                                            \
            for (j = 0; j < n; j++)                                                  \
                c[j] += a[p] * b[j];                                                 \
        }                                                                            \
    }                                                                                \
}                                                                                    \
                                                                                     \
/* C (k, n) = beta C + alpha A^T G, A (m, k) from column a_col of its rows, G (m, n), \
 * over A's non-zero values; C is not read when beta is 0. */                        \
static void                                                                          \
mlp_cy_skipzero_atb_##SUFFIX##_reference(                                            \
    Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, T alpha, const T *A, Py_ssize_t lda,   \
    const T *const *A_rows, Py_ssize_t a_col, const T *G, Py_ssize_t ldg, T beta,    \
    T *C, Py_ssize_t ldc, Py_ssize_t *rows)                                          \
{                                                                                    \
    Py_ssize_t i, j, p;                                                              \
    (void)rows;                                                                      \
    for (p = 0; p < k; p++)                                                          \
        for (j = 0; j < n; j++)                                                      \
            C[p * ldc + j] = beta == 0 ? 0 : beta * C[p * ldc + j];                  \
    for (i = 0; i < m; i++) {                                                        \
        const T *x = A_rows != NULL ? A_rows[i] + a_col : A + i * lda;               \
        const T *g = G + i * ldg;                                                    \
        for (p = 0; p < k; p++) {                                                    \
            const T scale = alpha * x[p];                                            \
            if (x[p] == 0)                                                           \
                continue;                                                            \
            for (j = 0; j < n; j++)                                                  \
                C[p * ldc + j] += scale * g[j];                                      \
        }                                                                            \
    }                                                                                \
}

MLP_CY_DEFINE_REFERENCE(f32, float)
MLP_CY_DEFINE_REFERENCE(f64, double)

/* batch_size 1's update of W1 (n_features, n_hidden) and the next sample's forward
 * product, in one sweep over the rows of W1 (network.pyx, _sample_step):
 *
 *   W1 -= eta x grad^T          then   pre = x_next W1   (with W1 updated)
 *
 * x (n_features,) is this sample, x_next the next one or NULL, grad (n_hidden,) this
 * sample's dZ1. Rows where both x and x_next are zero are not touched. */
#define MLP_CY_DEFINE_SAMPLE_SWEEP(SUFFIX, T, ATTR, LEVEL)                            \
ATTR static void                                                                     \
mlp_cy_sample_sweep_##SUFFIX##_##LEVEL(Py_ssize_t n_features, Py_ssize_t n_hidden,   \
                                       const T *x, const T *x_next, T eta,           \
                                       const T *grad, T *W1, T *pre)                 \
{                                                                                    \
    Py_ssize_t i, j;                                                                 \
    for (j = 0; j < n_hidden; j++)                                                   \
        pre[j] = 0;                                                                  \
    for (i = 0; i < n_features; i++) {                                               \
        const T xi = x[i], xn = x_next != NULL ? x_next[i] : 0, step = eta * xi;     \
        T *row = W1 + i * n_hidden;                                                  \
        if (xi != 0 && xn != 0)                                                      \
            for (j = 0; j < n_hidden; j++) {                                         \
                row[j] -= step * grad[j];                                            \
                pre[j] += xn * row[j];                                               \
            }                                                                        \
        else if (xi != 0)                                                            \
            for (j = 0; j < n_hidden; j++)                                           \
                row[j] -= step * grad[j];                                            \
        else if (xn != 0)                                                            \
            for (j = 0; j < n_hidden; j++)                                           \
                pre[j] += xn * row[j];                                               \
    }                                                                                \
}

#define MLP_CY_NO_TARGET
MLP_CY_DEFINE_SAMPLE_SWEEP(f32, float, MLP_CY_NO_TARGET, reference)
MLP_CY_DEFINE_SAMPLE_SWEEP(f64, double, MLP_CY_NO_TARGET, reference)

#endif
