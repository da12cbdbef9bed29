/* A vectorisable exp for float, for the elementwise kernels (kernels.pyx).
 *
 * libm's expf is an opaque call, so loops over it stay scalar; this one is plain
 * arithmetic that compilers turn into SIMD code. Cody-Waite range reduction
 * x = n ln2 + r, |r| <= ln2/2, then Cephes' degree-6 polynomial for exp(r), and
 * 2^n put straight into the exponent bits. Within 2 ulp of expf over the clamped
 * range [-87.33, 88.37], whose ends give FLT_MIN and about 2.4e38: the result is
 * always a finite, normal float (no overflow to inf, no denormals).
 */
#ifndef MLP_CY_FASTEXP_H
#define MLP_CY_FASTEXP_H

#include <stdint.h>
#include <string.h>

static inline float mlp_cy_expf(float x)
{
    const float magic = 12582912.0f;        /* 1.5 * 2^23: adding it rounds to an integer */
    const int32_t magic_bits = 0x4B400000;  /* the bit pattern of magic */
    float t, n, r, p, scale;
    int32_t bits;

    x = x > 88.3762626647949f ? 88.3762626647949f : x;
    x = x < -87.3365478515625f ? -87.3365478515625f : x;
    t = x * 1.44269504088896341f + magic;   /* n = round(x / ln2), in the low bits */
    n = t - magic;
    r = x - n * 0.693359375f;               /* ln2 in two parts: the first is exact */
    r = r + n * 2.12194440e-4f;
    p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    memcpy(&bits, &t, sizeof bits);
    bits = (bits - magic_bits + 127) << 23; /* 2^n as a float, 1 <= n + 127 <= 254 */
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* The float sigmoid loop of bias_activation, Z := 1 / (1 + exp(-(Z + bias))), row by
 * row; Z is (n_rows, n_cols) C-contiguous, bias (n_cols,).
 *
 * Compiled once per instruction-set level of _cpu.h, so that one wheel uses the
 * widest vectors the CPU has (60,000 x 256 in 5.5 ms with AVX-512); the reference
 * and SSE2/NEON levels share the baseline build, which is plain C.
 * mlp_cy_bias_sigmoid_f32_at(level) gives the level's loop.
 */
#include "_cpu.h"

typedef void (*mlp_cy_bias_sigmoid_f32_fn)(float *, const float *, Py_ssize_t,
                                           Py_ssize_t);

#define MLP_CY_DEFINE_BIAS_SIGMOID(ATTR, LEVEL)                                       \
ATTR static void mlp_cy_bias_sigmoid_f32_##LEVEL(float *z, const float *bias,        \
                                                 Py_ssize_t n_rows, Py_ssize_t n_cols) \
{                                                                                    \
    Py_ssize_t i, j;                                                                 \
    for (i = 0; i < n_rows; i++) {                                                   \
        float *row = z + i * n_cols;                                                 \
        for (j = 0; j < n_cols; j++)                                                 \
            row[j] = 1.0f / (1.0f + mlp_cy_expf(-(row[j] + bias[j])));               \
    }                                                                                \
}

#define MLP_CY_NO_ATTR
MLP_CY_DEFINE_BIAS_SIGMOID(MLP_CY_NO_ATTR, baseline)
#if MLP_CY_X86_LEVELS
MLP_CY_DEFINE_BIAS_SIGMOID(__attribute__((target("avx2,fma"))), avx2)
MLP_CY_DEFINE_BIAS_SIGMOID(__attribute__((target("avx512f"))), avx512)
#endif

static mlp_cy_bias_sigmoid_f32_fn mlp_cy_bias_sigmoid_f32_at(int level)
{
#if MLP_CY_X86_LEVELS
    if (level == MLP_CY_LEVEL_AVX512)
        return mlp_cy_bias_sigmoid_f32_avx512;
    if (level == MLP_CY_LEVEL_AVX2)
        return mlp_cy_bias_sigmoid_f32_avx2;
#endif
    (void)level;
    return mlp_cy_bias_sigmoid_f32_baseline;
}

#endif
