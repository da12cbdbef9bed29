/* Instruction-set levels of the vector kernels (_skipzero.h, _fastexp.h), and which
 * one this CPU can run.
 *
 *   level                      x86-64 (gcc, clang)     aarch64 (gcc, clang)   else
 *   MLP_CY_LEVEL_REFERENCE     plain C                 plain C                plain C
 *   MLP_CY_LEVEL_BASELINE      SSE2, 16-byte vectors   NEON, 16-byte vectors  -
 *   MLP_CY_LEVEL_AVX2          AVX2 + FMA, 32 bytes    -                      -
 *   MLP_CY_LEVEL_AVX512        AVX-512F, 64 bytes      -                      -
 *
 * A wheel is built for the architecture's baseline (every x86-64 CPU has SSE2, every
 * aarch64 CPU NEON); the wider levels are compiled per function with
 * __attribute__((target)) and chosen at run time (_blas.pyx), so one wheel runs on
 * every CPU of its architecture and uses the widest vectors the CPU has.
 *
 * MSVC and other compilers have no vector extensions: they get the reference level
 * only. Defining MLP_CY_PORTABLE_ONLY gives any compiler that path (and no compiler
 * extension in mlp_cy's headers), so that it can be compiled and tested everywhere.
 */
#ifndef MLP_CY_CPU_H
#define MLP_CY_CPU_H

#define MLP_CY_LEVEL_REFERENCE 0
#define MLP_CY_LEVEL_BASELINE 1
#define MLP_CY_LEVEL_AVX2 2
#define MLP_CY_LEVEL_AVX512 3
#define MLP_CY_N_LEVELS 4

#if !defined(MLP_CY_PORTABLE_ONLY) && (defined(__GNUC__) || defined(__clang__))
#if defined(__x86_64__)
#define MLP_CY_X86_LEVELS 1
#elif defined(__aarch64__)
#define MLP_CY_NEON_LEVEL 1
#endif
#endif

#ifndef MLP_CY_X86_LEVELS
#define MLP_CY_X86_LEVELS 0
#endif
#ifndef MLP_CY_NEON_LEVEL
#define MLP_CY_NEON_LEVEL 0
#endif

/* Whether this build has the level's kernels (the CPU may still lack them). */
static inline int mlp_cy_level_built(int level)
{
    switch (level) {
    case MLP_CY_LEVEL_REFERENCE: return 1;
    case MLP_CY_LEVEL_BASELINE: return MLP_CY_X86_LEVELS || MLP_CY_NEON_LEVEL;
    case MLP_CY_LEVEL_AVX2: return MLP_CY_X86_LEVELS;
    case MLP_CY_LEVEL_AVX512: return MLP_CY_X86_LEVELS;
    default: return 0;
    }
}

/* The level's name on this architecture ("sse2" and "neon" are both the baseline). */
static inline const char *mlp_cy_level_name(int level)
{
    switch (level) {
    case MLP_CY_LEVEL_REFERENCE: return "reference";
    case MLP_CY_LEVEL_BASELINE: return MLP_CY_NEON_LEVEL ? "neon" : "sse2";
    case MLP_CY_LEVEL_AVX2: return "avx2";
    case MLP_CY_LEVEL_AVX512: return "avx512";
    default: return "?";
    }
}

/* The highest level that this build has and this CPU runs. The x86 checks include
 * the operating system's support for the wider registers (gcc's and clang's
 * __builtin_cpu_supports read XCR0). */
static inline int mlp_cy_cpu_level(void)
{
#if MLP_CY_X86_LEVELS
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        return MLP_CY_LEVEL_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return MLP_CY_LEVEL_AVX2;
    return MLP_CY_LEVEL_BASELINE;
#elif MLP_CY_NEON_LEVEL
    return MLP_CY_LEVEL_BASELINE;
#else
    return MLP_CY_LEVEL_REFERENCE;
#endif
}

#endif
