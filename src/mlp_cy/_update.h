/* The optimisers' update loops (_parallel.pyx apply_update), for float and double,
 * compiled once per instruction-set level of _cpu.h.
 *
 * Why: the update touches every parameter once per step and its Adam form has a
 * square root and a division per parameter. Built for the baseline (SSE2) alone, as
 * Cython code is, it ran on 2 doubles (or, through libm's sqrt, promoted floats) per
 * instruction and took a quarter of a deep network's step; here the AVX2 and AVX-512
 * builds use the CPU's widest vectors, picked at run time like the kernels'.
 *
 * Each loop can also return the sum of the updated parameters' squares (the next
 * step's L2 penalty), in 16 double partial sums so that the loop stays vectorised;
 * with track == 0 it returns 0 (and the sums cost a few vector adds).
 *
 *   adam:      g = grad + decay p; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
 *              p -= eta m / (sqrt(v) + eps)
 *   nesterov:  g = grad + decay p; u = mu u - eta g; p += mu u - eta g
 *   momentum:  g = grad + decay p; u = mu u - eta g; p += u
 */
#ifndef MLP_CY_UPDATE_H
#define MLP_CY_UPDATE_H

#include <math.h>
#include "_cpu.h"

#define MLP_CY_UPDATE_LANES 16

typedef double (*mlp_cy_update_f32_fn)(float *, const float *, float *, float *,
                                       Py_ssize_t, float, float, float, float, float,
                                       int, int);
typedef double (*mlp_cy_update_f64_fn)(double *, const double *, double *, double *,
                                       Py_ssize_t, double, double, double, double, double,
                                       int, int);

/* One parameter k of each rule; a is mu (momentum, Nesterov) or beta_1 (Adam), b is
 * beta_2 (Adam); `second` is Adam's v. */
#define MLP_CY_ADAM_STEP(T, SQRT, k, lane)                                                 \
    {                                                                                \
        T g = grad[k] + decay * param[k];                                            \
        T m = a * first[k] + (1 - a) * g;                                            \
        T v = b * second[k] + (1 - b) * (g * g);                                     \
        T p = param[k] - eta * m / (SQRT(v) + eps);                                  \
        first[k] = m;                                                                \
        second[k] = v;                                                               \
        param[k] = p;                                                                \
        sums[lane] += (double)p * (double)p;                                         \
    }
#define MLP_CY_NESTEROV_STEP(T, SQRT, k, lane)                                             \
    {                                                                                \
        T g = grad[k] + decay * param[k];                                            \
        T u = a * first[k] - eta * g;                                                \
        T p = param[k] + (a * u - eta * g);                                          \
        first[k] = u;                                                                \
        param[k] = p;                                                                \
        sums[lane] += (double)p * (double)p;                                         \
    }
#define MLP_CY_MOMENTUM_STEP(T, SQRT, k, lane)                                             \
    {                                                                                \
        T g = grad[k] + decay * param[k];                                            \
        T u = a * first[k] - eta * g;                                                \
        T p = param[k] + u;                                                          \
        first[k] = u;                                                                \
        param[k] = p;                                                                \
        sums[lane] += (double)p * (double)p;                                         \
    }
/* Blocks of MLP_CY_UPDATE_LANES parameters (a fixed count the compiler vectorises,
 * each lane with its own partial sum), then the tail. */
#define MLP_CY_UPDATE_LOOP(STEP, T, SQRT)                                            \
    for (i = 0; i + MLP_CY_UPDATE_LANES <= n; i += MLP_CY_UPDATE_LANES)              \
        for (j = 0; j < MLP_CY_UPDATE_LANES; j++)                                    \
            STEP(T, SQRT, i + j, j)                                                  \
    for (j = 0; i + j < n; j++)                                                      \
        STEP(T, SQRT, i + j, j)

/* rule: 0 momentum, 1 Nesterov, 2 Adam. */
#define MLP_CY_DEFINE_UPDATE(ATTR, LEVEL, T, SQRT, NAME)                             \
ATTR static double mlp_cy_update_##NAME##_##LEVEL(                                   \
    T *param, const T *grad, T *first, T *second, Py_ssize_t n, T decay, T a, T b,   \
    T eta, T eps, int rule, int track)                                               \
{                                                                                    \
    double sums[MLP_CY_UPDATE_LANES] = {0};                                          \
    double total = 0;                                                                \
    Py_ssize_t i, j;                                                                 \
    if (rule == 2) {                                                                 \
        MLP_CY_UPDATE_LOOP(MLP_CY_ADAM_STEP, T, SQRT)                                \
    } else if (rule == 1) {                                                          \
        MLP_CY_UPDATE_LOOP(MLP_CY_NESTEROV_STEP, T, SQRT)                            \
    } else {                                                                         \
        MLP_CY_UPDATE_LOOP(MLP_CY_MOMENTUM_STEP, T, SQRT)                            \
    }                                                                                \
    if (!track)                                                                      \
        return 0;                                                                    \
    for (j = 0; j < MLP_CY_UPDATE_LANES; j++)                                        \
        total += sums[j];                                                            \
    return total;                                                                    \
}

#define MLP_CY_NO_UPDATE_ATTR
MLP_CY_DEFINE_UPDATE(MLP_CY_NO_UPDATE_ATTR, baseline, float, sqrtf, f32)
MLP_CY_DEFINE_UPDATE(MLP_CY_NO_UPDATE_ATTR, baseline, double, sqrt, f64)
#if MLP_CY_X86_LEVELS
MLP_CY_DEFINE_UPDATE(__attribute__((target("avx2,fma"))), avx2, float, sqrtf, f32)
MLP_CY_DEFINE_UPDATE(__attribute__((target("avx2,fma"))), avx2, double, sqrt, f64)
MLP_CY_DEFINE_UPDATE(__attribute__((target("avx512f"))), avx512, float, sqrtf, f32)
MLP_CY_DEFINE_UPDATE(__attribute__((target("avx512f"))), avx512, double, sqrt, f64)
#endif

static mlp_cy_update_f32_fn mlp_cy_update_f32_at(int level)
{
#if MLP_CY_X86_LEVELS
    if (level == MLP_CY_LEVEL_AVX512)
        return mlp_cy_update_f32_avx512;
    if (level == MLP_CY_LEVEL_AVX2)
        return mlp_cy_update_f32_avx2;
#endif
    (void)level;
    return mlp_cy_update_f32_baseline;
}

static mlp_cy_update_f64_fn mlp_cy_update_f64_at(int level)
{
#if MLP_CY_X86_LEVELS
    if (level == MLP_CY_LEVEL_AVX512)
        return mlp_cy_update_f64_avx512;
    if (level == MLP_CY_LEVEL_AVX2)
        return mlp_cy_update_f64_avx2;
#endif
    (void)level;
    return mlp_cy_update_f64_baseline;
}

#endif
