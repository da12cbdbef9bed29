/* The zero-skipping kernels' tile shape: _skipzero.h's own kernels (its
 * MLP_CY_DEFINE_SKIPZERO, the same source the extension builds) instantiated at
 * several shapes, ROWS rows (the skipping block) x NV vectors of C in registers,
 * against scipy's OpenBLAS sgemm, on one thread.
 *
 * A block of ROWS rows skips a pixel only where all ROWS rows are zero there, so
 * taller tiles skip less; but every load of W_0 (or of delta) then feeds ROWS
 * multiply-adds instead of 4, and those loads come from L2 (W_0 of 784 x 256 floats
 * is 784 KiB). It times X W_0 (ab) and W_0 := 0.999 W_0 - 0.1 X^T G (atb) over 20,000
 * rows of Fashion-MNIST in batches of M, float32, the shapes alternating round by
 * round, and prints each one's time over the fastest round and its largest
 * difference from gemm's result. Build and run from the repository root (x86-64
 * with AVX-512F, gcc, zlib, Fashion-MNIST in /usr/share/datasets/fashion-mnist,
 * scipy installed):
 *
 *   OB=$(python -c "import glob, os, scipy; print(glob.glob(os.path.join(
 *        os.path.dirname(scipy.__file__), os.pardir, 'scipy.libs',
 *        'libscipy_openblas*.so'))[0])")
 *   gcc -O3 -fno-trapping-math -Isrc/mlp_cy benchmarks/skipzero_tiles.c \
 *       -o /tmp/skipzero_tiles "$OB" -lz -lm -Wl,-rpath,"$(dirname "$OB")"
 *   OPENBLAS_NUM_THREADS=1 /tmp/skipzero_tiles 32 256 7     # batch, hidden, rounds
 *
 * Results are in benchmarks/RESULTS.md ("The zero-skipping tiles' shape").
 */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>
typedef ptrdiff_t Py_ssize_t;
#include "_skipzero.h"

void scipy_cblas_sgemm(int order, int ta, int tb, int m, int n, int k, float alpha,
                       const float *A, int lda, const float *B, int ldb, float beta,
                       float *C, int ldc);
enum { RowMajor = 101, NoTrans = 111, Trans = 112 };

/* The shapes: AVX-512 (32 registers) and AVX2 (16), float32. */
MLP_CY_DEFINE_SKIPZERO(f32, float, mlp_cy_f32x16, 4, 4, 4, 4, MLP_CY_AVX512_ATTR, z4x4)
MLP_CY_DEFINE_SKIPZERO(f32, float, mlp_cy_f32x16, 6, 4, 6, 4, MLP_CY_AVX512_ATTR, z6x4)
MLP_CY_DEFINE_SKIPZERO(f32, float, mlp_cy_f32x16, 8, 3, 8, 3, MLP_CY_AVX512_ATTR, z8x3)
MLP_CY_DEFINE_SKIPZERO(f32, float, mlp_cy_f32x16, 8, 2, 8, 2, MLP_CY_AVX512_ATTR, z8x2)
MLP_CY_DEFINE_SKIPZERO(f32, float, mlp_cy_f32x8, 4, 2, 4, 2, MLP_CY_AVX2_ATTR, y4x2)
MLP_CY_DEFINE_SKIPZERO(f32, float, mlp_cy_f32x8, 6, 2, 6, 2, MLP_CY_AVX2_ATTR, y6x2)
MLP_CY_DEFINE_SKIPZERO(f32, float, mlp_cy_f32x8, 8, 1, 8, 1, MLP_CY_AVX2_ATTR, y8x1)

typedef struct {
    const char *name;
    mlp_cy_ab_f32_fn ab;
    mlp_cy_atb_f32_fn atb;
} shape;

static const shape shapes[] = {
    {"gemm", NULL, NULL},
    {"avx512 4x4", mlp_cy_skipzero_ab_f32_z4x4, mlp_cy_skipzero_atb_f32_z4x4},
    {"avx512 6x4", mlp_cy_skipzero_ab_f32_z6x4, mlp_cy_skipzero_atb_f32_z6x4},
    {"avx512 8x3", mlp_cy_skipzero_ab_f32_z8x3, mlp_cy_skipzero_atb_f32_z8x3},
    {"avx512 8x2", mlp_cy_skipzero_ab_f32_z8x2, mlp_cy_skipzero_atb_f32_z8x2},
    {"avx2 4x2", mlp_cy_skipzero_ab_f32_y4x2, mlp_cy_skipzero_atb_f32_y4x2},
    {"avx2 6x2", mlp_cy_skipzero_ab_f32_y6x2, mlp_cy_skipzero_atb_f32_y6x2},
    {"avx2 8x1", mlp_cy_skipzero_ab_f32_y8x1, mlp_cy_skipzero_atb_f32_y8x1},
};
#define N_SHAPES (int)(sizeof shapes / sizeof shapes[0])

static double seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

int main(int argc, char **argv)
{
    const int n_rows = 20000, K = 784;
    int M = argc > 1 ? atoi(argv[1]) : 32, H = argc > 2 ? atoi(argv[2]) : 256;
    int rounds = argc > 3 ? atoi(argv[3]) : 7;
    if (M < 1 || M > 2048 || H < 16 || H % 16 != 0 || rounds < 1) {
        fprintf(stderr, "usage: %s BATCH(1-2048) HIDDEN(a multiple of 16) ROUNDS\n",
                argv[0]);
        return 2;
    }
    static unsigned char raw[16 + 20000 * 784];
    gzFile f = gzopen("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", "rb");
    if (f == NULL || gzread(f, raw, sizeof raw) != (int)sizeof raw) {
        fprintf(stderr, "cannot read Fashion-MNIST\n");
        return 1;
    }
    gzclose(f);
    float *X = malloc((size_t)n_rows * K * sizeof(float));
    for (long i = 0; i < (long)n_rows * K; i++)
        X[i] = raw[16 + i] / 255.0f;
    float *W = malloc((size_t)K * H * 4), *C = malloc((size_t)M * H * 4);
    float *C_gemm = malloc((size_t)M * H * 4), *G = malloc((size_t)M * H * 4);
    float *W_new = malloc((size_t)K * H * 4), *W_gemm = malloc((size_t)K * H * 4);
    Py_ssize_t *index = malloc(sizeof(Py_ssize_t) * (K > M ? K : M));
    for (long i = 0; i < (long)K * H; i++)
        W[i] = (float)((i * 2654435761u % 1000) / 1000.0 - 0.5);
    for (long i = 0; i < (long)M * H; i++)
        G[i] = (float)((i * 40503u % 997) / 997.0 - 0.5);
    double best_ab[N_SHAPES], best_atb[N_SHAPES], err_ab[N_SHAPES], err_atb[N_SHAPES];
    int batches = n_rows / M;
    for (int s = 0; s < N_SHAPES; s++)
        best_ab[s] = best_atb[s] = 1e30, err_ab[s] = err_atb[s] = 0;
    for (int round = 0; round < rounds; round++) {
        for (int i = 0; i < N_SHAPES; i++) {
            int s = round % 2 ? N_SHAPES - 1 - i : i;      /* forwards, then backwards */
            double t = seconds();
            for (int b = 0; b < batches; b++) {
                const float *A = X + (size_t)b * M * K;
                if (s == 0)
                    scipy_cblas_sgemm(RowMajor, NoTrans, NoTrans, M, H, K, 1, A, K, W, H,
                                      0, C, H);
                else
                    shapes[s].ab(M, H, K, A, K, NULL, W, H, C, H, index);
            }
            t = seconds() - t;
            best_ab[s] = t < best_ab[s] ? t : best_ab[s];
            if (s == 0)
                memcpy(C_gemm, C, (size_t)M * H * 4);
            else if (round == rounds - 1)
                for (long j = 0; j < (long)M * H; j++)
                    err_ab[s] = fmax(err_ab[s], fabs(C[j] - C_gemm[j]));
            memcpy(W_new, W, (size_t)K * H * 4);
            t = seconds();
            for (int b = 0; b < batches; b++) {
                const float *A = X + (size_t)b * M * K;
                if (s == 0)
                    scipy_cblas_sgemm(RowMajor, Trans, NoTrans, K, H, M, -0.1f, A, K, G, H,
                                      0.999f, W_new, H);
                else
                    shapes[s].atb(M, H, K, -0.1f, A, K, NULL, 0, G, H, 0.999f, W_new, H,
                                  index);
            }
            t = seconds() - t;
            best_atb[s] = t < best_atb[s] ? t : best_atb[s];
            if (s == 0)
                memcpy(W_gemm, W_new, (size_t)K * H * 4);
            else if (round == rounds - 1)
                for (long j = 0; j < (long)K * H; j++)
                    err_atb[s] = fmax(err_atb[s], fabs(W_new[j] - W_gemm[j]));
        }
    }
    printf("batch %d, hidden %d, %d rounds, fastest round, seconds per 20,000 rows\n", M, H,
           rounds);
    printf("%-12s %9s %9s %9s %9s\n", "shape", "ab", "/4x4", "atb", "/4x4");
    for (int s = 0; s < N_SHAPES; s++) {
        int ref = s >= 5 ? 5 : 1;
        printf("%-12s %9.4f %9.3f %9.4f %9.3f   (largest difference from gemm: %.1e, "
               "%.1e)\n", shapes[s].name, best_ab[s], best_ab[s] / best_ab[ref],
               best_atb[s], best_atb[s] / best_atb[ref], err_ab[s], err_atb[s]);
    }
    return 0;
}
