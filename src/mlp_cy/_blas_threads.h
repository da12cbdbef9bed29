/* How many threads the BLAS behind scipy.linalg.cython_blas will use, for _blas.pyx.
 *
 * The engine has kernels of its own (_skipzero.h) that run on one thread; they beat
 * a one-thread gemm but not a multi-threaded one. So it asks the BLAS library, the
 * way threadpoolctl does: find the shared object that holds a cython_blas function,
 * then look up the library's own thread-count getter. threadpoolctl's limits (and
 * OPENBLAS_NUM_THREADS etc.) are what that getter reports.
 *
 * mlp_cy_blas_threads_init(symbol) is called once, with the address of a function of
 * scipy.linalg.cython_blas; mlp_cy_blas_num_threads() then returns the count, or 0
 * when the library is unknown or the platform has no dladdr (then the engine
 * assumes several threads and uses gemm).
 */
#ifndef MLP_CY_BLAS_THREADS_H
#define MLP_CY_BLAS_THREADS_H

#include <stddef.h>

typedef int (*mlp_cy_get_threads_fn)(void);
static mlp_cy_get_threads_fn mlp_cy_blas_get_threads = NULL;

#if defined(__unix__) || defined(__APPLE__)
#include <dlfcn.h>

static void mlp_cy_blas_threads_init(void *symbol)
{
    /* Getters of OpenBLAS (scipy's build prefixes its symbols with scipy_; ILP64
     * builds suffix them with 64_), MKL and BLIS. */
    static const char *const names[] = {
        "scipy_openblas_get_num_threads", "openblas_get_num_threads",
        "scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_",
        "MKL_Get_Max_Threads", "bli_thread_get_num_threads",
    };
    Dl_info info;
    void *library, *getter = NULL;
    size_t i;
    if (symbol == NULL || !dladdr(symbol, &info) || info.dli_fname == NULL)
        return;
    /* Already loaded: RTLD_NOLOAD only takes a reference. dlsym on this handle also
     * searches the libraries it depends on, where the BLAS itself is. */
    library = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
    if (library == NULL)
        return;
    for (i = 0; i < sizeof names / sizeof names[0] && getter == NULL; i++)
        getter = dlsym(library, names[i]);
    if (getter != NULL)
        *(void **)&mlp_cy_blas_get_threads = getter;
    /* The reference is dropped; the library stays loaded by scipy, which imported it. */
    dlclose(library);
}

#else

static void mlp_cy_blas_threads_init(void *symbol) { (void)symbol; }

#endif

static int mlp_cy_blas_num_threads(void)
{
    return mlp_cy_blas_get_threads != NULL ? mlp_cy_blas_get_threads() : 0;
}

#endif
