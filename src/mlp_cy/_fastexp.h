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
 * Where GCC can build function clones that glibc picks at load time (ifunc), the loop
 * is compiled three times, for AVX-512, AVX2 and the baseline (SSE2 on x86-64), so one
 * wheel runs everywhere and uses the widest vectors the CPU has. Elsewhere (clang,
 * MSVC, musl, macOS, other architectures) it is the baseline version only.
 */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) \
    && defined(__linux__) && defined(__GLIBC__)
#define MLP_CY_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define MLP_CY_CLONES
#endif

MLP_CY_CLONES
static void mlp_cy_bias_sigmoid_f32(float *z, const float *bias,
                                    Py_ssize_t n_rows, Py_ssize_t n_cols)
{
    Py_ssize_t i, j;
    for (i = 0; i < n_rows; i++) {
        float *row = z + i * n_cols;
        for (j = 0; j < n_cols; j++)
            row[j] = 1.0f / (1.0f + mlp_cy_expf(-(row[j] + bias[j])));
    }
}

#endif
