/* Prototype, measured and dropped: the zero-skipping products as sparse-times-dense
 * products (SpMM) instead of _skipzero.h's 4 x 4 tiles.
 *
 * _skipzero.h skips a pixel of X W_0 only where it is zero in all 4 rows of a tile:
 * on shuffled Fashion-MNIST 79% of those (4-row, pixel) blocks still hold a non-zero,
 * against 50% of single values; for X^T delta, 62% of (row, 4-pixel) blocks do. This
 * file tries the other way: each row's (or pixel's) own non-zeros as an index list
 * (CSR, or CSC for X^T delta), one output row at a time, NV vectors wide, with the
 * summed index cut into blocks whose panel of B (or delta) fits in the L1 cache. That
 * does half the multiply-adds of gemm, but only one per load (the tiles: 4 per load).
 * It times, on one thread, per 20,000 rows of Fashion-MNIST in batches of M:
 *
 *   gemm          scipy's OpenBLAS sgemm
 *   old-*         _skipzero.h's kernels at AVX2 and AVX-512
 *   new-*-NV      the SpMM kernels below, NV vectors a row
 *   2row-*-NV     X W_0 only: _skipzero.h's tile with 2 rows instead of 4 (a pixel is
 *                 skipped where both rows are zero: 66% of blocks hold a non-zero,
 *                 against 79% for 4 rows) and NV vectors a row
 *
 * and each one's largest difference from gemm's result. Build and run from the
 * repository root (x86-64 with AVX-512F, gcc, zlib, Fashion-MNIST in
 * /usr/share/datasets/fashion-mnist, scipy installed):
 *
 *   OB=$(python -c "import glob, os, scipy; print(glob.glob(os.path.join(
 *        os.path.dirname(scipy.__file__), os.pardir, 'scipy.libs',
 *        'libscipy_openblas*.so'))[0])")
 *   gcc -O3 -fno-trapping-math -Isrc/mlp_cy benchmarks/skipzero_spmm.c \
 *       -o /tmp/skipzero_spmm "$OB" -lz -lm -Wl,-rpath,"$(dirname "$OB")"
 *   OPENBLAS_NUM_THREADS=1 /tmp/skipzero_spmm 32 256       # batch, hidden
 *
 * Results are in benchmarks/RESULTS.md ("The AVX2 level against its peers").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <stddef.h>
#include <time.h>
#include <math.h>
#include <zlib.h>
typedef ptrdiff_t Py_ssize_t;
#include "_skipzero.h"
void scipy_cblas_sgemm(int order, int ta, int tb, int m, int n, int k, float alpha,
                       const float *A, int lda, const float *B, int ldb, float beta,
                       float *C, int ldc);
enum { RowMajor = 101, NoTrans = 111, Trans = 112 };

#ifndef KB_BYTES
#define KB_BYTES 16384
#endif
#define RB 64
#define PB 64

/* ab: C (m, n) = A (m, k) B (k, n) */
#define DEF_AB(NAME, T, V, NV, ATTR)                                                   \
ATTR static void NAME(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const T *A, Py_ssize_t lda, \
    const T *const *A_rows, const T *B, Py_ssize_t ldb, T *C, Py_ssize_t ldc, void *scratch) \
{                                                                                      \
    const Py_ssize_t lanes = sizeof(V) / sizeof(T), wide = NV * lanes;                \
    int32_t *idx = scratch;                                                             \
    T *val = (T *)(idx + RB * k);                                                        \
    Py_ssize_t *start = (Py_ssize_t *)(val + RB * k);                                    \
    Py_ssize_t *until = start + RB + 1;                                                  \
    Py_ssize_t *end = until + RB;                                                  \
    Py_ssize_t kb = KB_BYTES / (wide * sizeof(T));                                       \
    Py_ssize_t g0, r, p, e, rows, kb0, kb1, j0, v, q;                                    \
    if (kb < 8) kb = 8;                                                                  \
    for (g0 = 0; g0 < m; g0 += RB) {                                                   \
        rows = m - g0 < RB ? m - g0 : RB;                                              \
        e = 0;                                                                         \
        for (r = 0; r < rows; r++) {                                                   \
            const T *a = A_rows != NULL ? A_rows[g0 + r] : A + (g0 + r) * lda;           \
            start[r] = e;                                                              \
            for (p = 0; p < k; p++) {                                                  \
                idx[e] = (int32_t)p; val[e] = a[p]; e += a[p] != 0;                     \
            }                                                                          \
        }                                                                              \
        start[rows] = e;                                                               \
        for (r = 0; r < rows; r++) end[r] = start[r + 1];                               \
        for (kb0 = 0; kb0 < k; kb0 += kb) {                                             \
            kb1 = kb0 + kb < k ? kb0 + kb : k;                                           \
            for (r = 0; r < rows; r++) {                                               \
                q = start[r]; while (q < end[r] && idx[q] < kb1) q++;             \
                until[r] = q;                                                          \
            }                                                                          \
            for (j0 = 0; j0 + wide <= n; j0 += wide) {                                  \
                for (r = 0; r < rows; r++) {                                           \
                    V acc[NV];                                                         \
                    V *c = (V *)(C + (g0 + r) * ldc + j0);                              \
                    for (v = 0; v < NV; v++) if (kb0 == 0) acc[v] = (V){0}; else acc[v] = c[v];          \
                    for (q = start[r]; q < until[r]; q++) {                            \
                        const V *b = (const V *)(B + idx[q] * ldb + j0);                \
                        const T x = val[q];                                            \
                        for (v = 0; v < NV; v++) acc[v] += x * b[v];                    \
                    }                                                                  \
                    for (v = 0; v < NV; v++) c[v] = acc[v];                            \
                }                                                                      \
            }                                                                          \
            for (r = 0; r < rows; r++) start[r] = until[r];                            \
        }                                                                              \
    }                                                                                  \
}

/* atb: C (k, n) = beta C + alpha A^T G; A (m, k) */
#define DEF_ATB(NAME, T, V, NV, ATTR)                                                  \
ATTR static void NAME(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, T alpha, const T *A,   \
    Py_ssize_t lda, const T *const *A_rows, Py_ssize_t a_col, const T *G, Py_ssize_t ldg, \
    T beta, T *C, Py_ssize_t ldc, void *scratch)                                         \
{                                                                                      \
    const Py_ssize_t lanes = sizeof(V) / sizeof(T), wide = NV * lanes;                \
    int32_t *idx = scratch;                                                             \
    T *val = (T *)(idx + PB * m);                                                        \
    Py_ssize_t *count = (Py_ssize_t *)(val + PB * m);                                    \
    Py_ssize_t *cur = count + PB;                                                       \
    Py_ssize_t *until = cur + PB;                                                       \
    Py_ssize_t kb = KB_BYTES / (wide * sizeof(T));                                       \
    Py_ssize_t p0, np, i, p, r, ib0, ib1, j0, v, q;                                     \
    if (kb < 8) kb = 8;                                                                  \
    for (p0 = 0; p0 < k; p0 += PB) {                                                   \
        np = k - p0 < PB ? k - p0 : PB;                                                \
        for (p = 0; p < np; p++) count[p] = 0;                                         \
        for (i = 0; i < m; i++) {                                                      \
            const T *x = (A_rows != NULL ? A_rows[i] + a_col : A + i * lda) + p0;        \
            for (p = 0; p < np; p++) {                                                 \
                const Py_ssize_t at = p * m + count[p];                                 \
                idx[at] = (int32_t)i; val[at] = alpha * x[p]; count[p] += x[p] != 0;   \
            }                                                                          \
        }                                                                              \
        for (p = 0; p < np; p++) cur[p] = p * m;                                        \
        for (ib0 = 0; ib0 < m; ib0 += kb) {                                             \
            ib1 = ib0 + kb < m ? ib0 + kb : m;                                           \
            for (p = 0; p < np; p++) {                                                 \
                q = cur[p]; while (q < p * m + count[p] && idx[q] < ib1) q++;           \
                until[p] = q;                                                          \
            }                                                                          \
            for (j0 = 0; j0 + wide <= n; j0 += wide) {                                  \
                for (p = 0; p < np; p++) {                                             \
                    V acc[NV];                                                         \
                    V *c = (V *)(C + (p0 + p) * ldc + j0);                              \
                    if (ib0 > 0 && cur[p] == until[p]) continue;                       \
                    for (v = 0; v < NV; v++)                                           \
                        if (ib0 > 0) acc[v] = c[v]; else if (beta == 0) acc[v] = (V){0}; else acc[v] = beta * c[v];  \
                    for (q = cur[p]; q < until[p]; q++) {                              \
                        const V *g = (const V *)(G + idx[q] * ldg + j0);                \
                        const T x = val[q];                                            \
                        for (v = 0; v < NV; v++) acc[v] += x * g[v];                    \
                    }                                                                  \
                    for (v = 0; v < NV; v++) c[v] = acc[v];                            \
                }                                                                      \
            }                                                                          \
            for (p = 0; p < np; p++) cur[p] = until[p];                                \
        }                                                                              \
    }                                                                                  \
}

#define AVX2 __attribute__((target("avx2,fma"), noinline))
#define AVX512 __attribute__((target("avx512f"), noinline))
DEF_AB(ab_avx2_8, float, mlp_cy_f32x8, 8, AVX2)
DEF_AB(ab_avx2_4, float, mlp_cy_f32x8, 4, AVX2)
DEF_AB(ab_avx512_4, float, mlp_cy_f32x16, 4, AVX512)
DEF_AB(ab_avx512_8, float, mlp_cy_f32x16, 8, AVX512)

#define AB2_TILE(T, V, NV)                                                            \
    do {                                                                             \
        V acc_[2][NV];                                                               \
        Py_ssize_t q_, r_, v_;                                                        \
        for (r_ = 0; r_ < 2; r_++)                                                   \
            for (v_ = 0; v_ < NV; v_++)                                              \
                acc_[r_][v_] = (V){0};                                               \
        for (q_ = 0; q_ < n_cols; q_++) {                                            \
            const Py_ssize_t p_ = cols[q_];                                           \
            const V *b_ = (const V *)(B + p_ * ldb + j0);                            \
            const T x0_ = a[0][p_], x1_ = a[1][p_];                                  \
            for (v_ = 0; v_ < NV; v_++) {                                            \
                acc_[0][v_] += x0_ * b_[v_];                                         \
                acc_[1][v_] += x1_ * b_[v_];                                         \
            }                                                                        \
        }                                                                            \
        for (r_ = 0; r_ < n_rows; r_++)                                              \
            for (v_ = 0; v_ < NV; v_++)                                              \
                *(V *)(C + (i0 + r_) * ldc + j0 + v_ * lanes) = acc_[r_][v_];        \
    } while (0)

#define DEF_AB2(NAME, T, V, NV, ATTR)                                                  \
ATTR static void NAME(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const T *A, Py_ssize_t lda, \
    const T *const *A_rows, const T *B, Py_ssize_t ldb, T *C, Py_ssize_t ldc, Py_ssize_t *cols) \
{                                                                                      \
    const Py_ssize_t lanes = sizeof(V) / sizeof(T), wide = NV * lanes;                \
    Py_ssize_t i0, j0, p, n_rows, n_cols;                                              \
    const T *a[2];                                                                     \
    for (i0 = 0; i0 < m; i0 += 2) {                                                    \
        n_rows = m - i0 < 2 ? m - i0 : 2;                                              \
        a[0] = A_rows != NULL ? A_rows[i0] : A + i0 * lda;                              \
        a[1] = n_rows > 1 ? (A_rows != NULL ? A_rows[i0 + 1] : A + (i0 + 1) * lda) : a[0]; \
        n_cols = 0;                                                                    \
        for (p = 0; p < k; p++) {                                                      \
            cols[n_cols] = p;                                                          \
            n_cols += (a[0][p] != 0) | (a[1][p] != 0);                                 \
        }                                                                              \
        for (j0 = 0; j0 + wide <= n; j0 += wide)                                       \
            AB2_TILE(T, V, NV);                                                        \
        for (; j0 < n; j0 += lanes)                                                    \
            AB2_TILE(T, V, 1);                                                         \
    }                                                                                  \
}
DEF_AB2(ab2_avx2_4, float, mlp_cy_f32x8, 4, AVX2)
DEF_AB2(ab2_avx512_8, float, mlp_cy_f32x16, 8, AVX512)
DEF_ATB(atb_avx2_8, float, mlp_cy_f32x8, 8, AVX2)
DEF_ATB(atb_avx2_4, float, mlp_cy_f32x8, 4, AVX2)
DEF_ATB(atb_avx512_4, float, mlp_cy_f32x16, 4, AVX512)
DEF_ATB(atb_avx512_8, float, mlp_cy_f32x16, 8, AVX512)

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }

int main(int argc, char **argv) {
    int N = 20000, K = 784, H = argc > 2 ? atoi(argv[2]) : 256, M = argc > 1 ? atoi(argv[1]) : 32;
    float *X = malloc((size_t)N * K * 4);
    static unsigned char raw[16 + 20000 * 784];
    gzFile f = gzopen("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", "rb");
    if (f == NULL || gzread(f, raw, sizeof raw) != (int)sizeof raw) {
        fprintf(stderr, "cannot read Fashion-MNIST\n");
        return 1;
    }
    gzclose(f);
    for (long i = 0; i < (long)N * K; i++)
        X[i] = raw[16 + i] / 255.0f;
    float *W = malloc((size_t)K * H * 4), *C = malloc((size_t)2048 * H * 4), *R = malloc((size_t)2048 * H * 4);
    float *G = malloc((size_t)2048 * H * 4), *W2 = malloc((size_t)K * H * 4), *W3 = malloc((size_t)K * H * 4);
    for (long i = 0; i < (long)K * H; i++) W[i] = (float)((i * 2654435761u % 1000) / 1000.0 - 0.5);
    for (long i = 0; i < (long)2048 * H; i++) G[i] = (float)((i * 40503u % 997) / 997.0 - 0.5);
    void *scratch = malloc(64 << 20);
    Py_ssize_t *cols = malloc(1 << 20);
    const mlp_cy_skipzero_table *t2 = mlp_cy_skipzero_kernels(MLP_CY_LEVEL_AVX2), *t5 = mlp_cy_skipzero_kernels(MLP_CY_LEVEL_AVX512);
    int nb = N / M;
    const char *names[] = {"gemm", "old-avx2", "new-avx2-8", "new-avx2-4", "old-avx512", "new-avx512-4", "new-avx512-8", "2row-avx2-4", "2row-avx512-8"};
    for (int round = 0; round < 3; round++) {
      printf("ab m=%d h=%d:", M, H);
      for (int which = 0; which < 9; which++) {
        double t0 = now();
        for (int b = 0; b < nb; b++) {
            const float *A = X + (size_t)b * M * K;
            switch (which) {
            case 0: scipy_cblas_sgemm(RowMajor, NoTrans, NoTrans, M, H, K, 1, A, K, W, H, 0, C, H); break;
            case 1: t2->ab_f32(M, H, K, A, K, NULL, W, H, C, H, cols); break;
            case 2: ab_avx2_8(M, H, K, A, K, NULL, W, H, C, H, scratch); break;
            case 3: ab_avx2_4(M, H, K, A, K, NULL, W, H, C, H, scratch); break;
            case 4: t5->ab_f32(M, H, K, A, K, NULL, W, H, C, H, cols); break;
            case 5: ab_avx512_4(M, H, K, A, K, NULL, W, H, C, H, scratch); break;
            case 6: ab_avx512_8(M, H, K, A, K, NULL, W, H, C, H, scratch); break;
            case 7: ab2_avx2_4(M, H, K, A, K, NULL, W, H, C, H, cols); break;
            case 8: ab2_avx512_8(M, H, K, A, K, NULL, W, H, C, H, cols); break;
            }
        }
        double t = now() - t0;
        if (which == 0) memcpy(R, C, (size_t)M * H * 4);
        double err = 0; for (long i = 0; i < (long)M * H; i++) err = fmax(err, fabs(C[i] - R[i]));
        printf(" %s %.3fs(%.1e)", names[which], t, err);
      }
      printf("\natb m=%d h=%d:", M, H);
      for (int which = 0; which < 7; which++) {
        memcpy(W2, W, (size_t)K * H * 4);
        double t0 = now();
        for (int b = 0; b < nb; b++) {
            const float *A = X + (size_t)b * M * K;
            switch (which) {
            case 0: scipy_cblas_sgemm(RowMajor, Trans, NoTrans, K, H, M, -0.1f, A, K, G, H, 0.999f, W2, H); break;
            case 1: t2->atb_f32(M, H, K, -0.1f, A, K, NULL, 0, G, H, 0.999f, W2, H, cols); break;
            case 2: atb_avx2_8(M, H, K, -0.1f, A, K, NULL, 0, G, H, 0.999f, W2, H, scratch); break;
            case 3: atb_avx2_4(M, H, K, -0.1f, A, K, NULL, 0, G, H, 0.999f, W2, H, scratch); break;
            case 4: t5->atb_f32(M, H, K, -0.1f, A, K, NULL, 0, G, H, 0.999f, W2, H, cols); break;
            case 5: atb_avx512_4(M, H, K, -0.1f, A, K, NULL, 0, G, H, 0.999f, W2, H, scratch); break;
            case 6: atb_avx512_8(M, H, K, -0.1f, A, K, NULL, 0, G, H, 0.999f, W2, H, scratch); break;
            }
        }
        double t = now() - t0;
        if (which == 0) memcpy(W3, W2, (size_t)K * H * 4);
        double err = 0; for (long i = 0; i < (long)K * H; i++) err = fmax(err, fabs(W2[i] - W3[i]));
        printf(" %s %.3fs(%.1e)", names[which], t, err);
      }
      printf("\n");
    }
    return 0;
}
