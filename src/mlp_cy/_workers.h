/* A few helper threads for the layers engine's parallel regions (_parallel.pyx).
 *
 *   mlp_cy_workers_run(n_parts, fn, ctx)   runs fn(ctx, 0, n_parts) .. fn(ctx,
 *                                          n_parts - 1, n_parts): part 0 on the calling
 *                                          thread, the others on helpers; returns when
 *                                          all are done.
 *   mlp_cy_claim(&next_chunk)              inside a part: the index of the next chunk
 *                                          of the region's work nobody has taken yet.
 *
 * Why not OpenMP: it would put libgomp in the wheels and hang forked children. Why
 * not the BLAS's threads: the step's products skip the data's zeros, which no BLAS
 * does, and a multi-threaded BLAS call between them wakes the BLAS's workers, which
 * then spin on the cores these parts need (benchmarks/RESULTS.md).
 *
 * - One pool per process, started on first use; at most MLP_CY_MAX_WORKERS helpers.
 *   A second caller while the pool is busy (two models training in two Python
 *   threads) runs all its parts itself: never more threads than asked for. Which
 *   thread runs a part never changes what it computes.
 * - A helper spins for a short while after each part (the next one comes within a
 *   training step, tens of microseconds), then sleeps on a semaphore; the caller,
 *   waiting for the helpers' parts, does the same.
 * - Threads and semaphores are CPython's (PyThread_*): no new libc symbols, so the
 *   wheels keep their manylinux tag. Helpers never touch Python objects or the GIL.
 * - fork(): helpers do not exist in the child. The pool remembers the process id it
 *   was started in and starts afresh in a new process.
 *
 * GCC and clang only (__atomic builtins); elsewhere (MSVC, or MLP_CY_PORTABLE_ONLY
 * defined: _cpu.h) every part runs on the caller, one after the other.
 */
#ifndef MLP_CY_WORKERS_H
#define MLP_CY_WORKERS_H

#include <Python.h>
#include <pythread.h>

typedef void (*mlp_cy_part_fn)(void *ctx, int part, int n_parts);

#define MLP_CY_MAX_WORKERS 63

/* A monotonic clock in seconds, for the pacer (_parallel.pyx) that times the steps. */
#if defined(_WIN32)
#include <windows.h>
static double mlp_cy_seconds(void)
{
    LARGE_INTEGER frequency, count;
    QueryPerformanceFrequency(&frequency);
    QueryPerformanceCounter(&count);
    return (double)count.QuadPart / (double)frequency.QuadPart;
}
static void mlp_cy_sleep_us(int us) { Sleep((DWORD)((us + 999) / 1000)); }
#else
#include <time.h>
#include <unistd.h>
static double mlp_cy_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}
static void mlp_cy_sleep_us(int us) { usleep((useconds_t)us); }
#endif

/* For the tests only: each helper sleeps this many microseconds before each part it
 * runs, as if another process held its core (set through _parallel._set_helper_stall). */
static int mlp_cy_helper_stall_us = 0;

#if (defined(__GNUC__) || defined(__clang__)) && !defined(MLP_CY_PORTABLE_ONLY)

#if defined(_WIN32)
#include <process.h>
#define mlp_cy_getpid() ((long)_getpid())
#else
#define mlp_cy_getpid() ((long)getpid())
#endif

typedef struct {
    /* Written by the caller, then published by `ticket` (release); read by the helper
     * after it sees the new ticket (acquire). */
    mlp_cy_part_fn fn;
    void *ctx;
    int part, n_parts;
    unsigned long ticket;       /* incremented once per part handed over */
    int sleeping;               /* 1 while the helper waits, or is about to, on `wake` */
    PyThread_type_lock wake;    /* a semaphore: released once per wake-up */
} mlp_cy_worker;

static struct {
    long busy;                  /* 0, or the process id of the caller using the pool */
    int n_started;
    long pid;                   /* the process the helpers run in */
    mlp_cy_worker *workers[MLP_CY_MAX_WORKERS];
    int pending;                /* helpers' parts of the current run not yet done */
    int caller_sleeping;        /* 1 while the caller waits, or is about to, on `done` */
    PyThread_type_lock done;    /* a semaphore: released when the last part is done */
} mlp_cy_pool;

/* Spin iterations (pause instructions) before a helper sleeps: about 50-100 us. */
#define MLP_CY_SPIN 2000

static inline void mlp_cy_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void mlp_cy_worker_main(void *arg)
{
    mlp_cy_worker *w = (mlp_cy_worker *)arg;
    unsigned long seen = 0, ticket;
    int spins;
    for (;;) {
        spins = 0;
        while ((ticket = __atomic_load_n(&w->ticket, __ATOMIC_ACQUIRE)) == seen) {
            if (++spins < MLP_CY_SPIN) {
                mlp_cy_cpu_relax();
                continue;
            }
            /* Announce the sleep, then look again: the caller publishes the ticket
             * before it looks at `sleeping` (both sequentially consistent), so one
             * of the two sees the other. */
            __atomic_store_n(&w->sleeping, 1, __ATOMIC_SEQ_CST);
            /* The store before the load, also where seq_cst accesses alone are not
             * kept in order (qemu-user emulating aarch64: tools/check_aarch64.sh). */
            __atomic_thread_fence(__ATOMIC_SEQ_CST);
            if (__atomic_load_n(&w->ticket, __ATOMIC_SEQ_CST) != seen) {
                /* Work came meanwhile. If the caller already took the flag back, it
                 * released the semaphore too: consume that. */
                if (__atomic_exchange_n(&w->sleeping, 0, __ATOMIC_SEQ_CST) == 0)
                    PyThread_acquire_lock(w->wake, WAIT_LOCK);
            }
            else {
                PyThread_acquire_lock(w->wake, WAIT_LOCK);
            }
            spins = 0;
        }
        seen = ticket;
        if (__atomic_load_n(&mlp_cy_helper_stall_us, __ATOMIC_RELAXED) > 0)
            mlp_cy_sleep_us(__atomic_load_n(&mlp_cy_helper_stall_us, __ATOMIC_RELAXED));
        w->fn(w->ctx, w->part, w->n_parts);
        /* The last part done wakes the caller if it went to sleep (same handshake). */
        if (__atomic_sub_fetch(&mlp_cy_pool.pending, 1, __ATOMIC_SEQ_CST) == 0
                && __atomic_exchange_n(&mlp_cy_pool.caller_sleeping, 0,
                                       __ATOMIC_SEQ_CST) == 1)
            PyThread_release_lock(mlp_cy_pool.done);
    }
}

/* Take the pool for this caller: 1, or 0 if another thread of this process has it.
 * After fork() the child may find `busy` set by a thread of its parent, which does
 * not exist here: the child takes it over, and forgets the parent's helpers. Their
 * records are left behind, a few hundred bytes, never reused. */
static int mlp_cy_workers_acquire(void)
{
    long pid = mlp_cy_getpid(), holder = 0;
    if (!__atomic_compare_exchange_n(&mlp_cy_pool.busy, &holder, pid, 0,
                                     __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
        if (holder == pid)
            return 0;
        if (!__atomic_compare_exchange_n(&mlp_cy_pool.busy, &holder, pid, 0,
                                         __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
            return 0;
    }
    if (mlp_cy_pool.pid != pid) {
        mlp_cy_pool.n_started = 0;
        mlp_cy_pool.pending = 0;
        mlp_cy_pool.caller_sleeping = 0;
        mlp_cy_pool.done = PyThread_allocate_lock();
        if (mlp_cy_pool.done == NULL) {
            __atomic_store_n(&mlp_cy_pool.busy, 0, __ATOMIC_RELEASE);
            return 0;
        }
        PyThread_acquire_lock(mlp_cy_pool.done, NOWAIT_LOCK);   /* the next acquire waits */
        mlp_cy_pool.pid = pid;
    }
    return 1;
}

/* Wait until the helpers' parts of this run are done. Spin first (they usually finish
 * within microseconds of the caller), then sleep: a caller spinning on its core would
 * keep a helper that another process pushed off its own core from moving over. */
static void mlp_cy_workers_wait(void)
{
    int spins = 0;
    while (__atomic_load_n(&mlp_cy_pool.pending, __ATOMIC_ACQUIRE) != 0) {
        if (++spins < MLP_CY_SPIN) {
            mlp_cy_cpu_relax();
            continue;
        }
        __atomic_store_n(&mlp_cy_pool.caller_sleeping, 1, __ATOMIC_SEQ_CST);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);    /* as in mlp_cy_worker_main */
        if (__atomic_load_n(&mlp_cy_pool.pending, __ATOMIC_SEQ_CST) != 0) {
            PyThread_acquire_lock(mlp_cy_pool.done, WAIT_LOCK);
        }
        else if (__atomic_exchange_n(&mlp_cy_pool.caller_sleeping, 0,
                                     __ATOMIC_SEQ_CST) == 0) {
            PyThread_acquire_lock(mlp_cy_pool.done, WAIT_LOCK);    /* consume its release */
        }
        spins = 0;
    }
}

/* Start helpers up to n (the caller holds `busy`); returns how many there are. */
static int mlp_cy_workers_start(int n)
{
    if (n > MLP_CY_MAX_WORKERS)
        n = MLP_CY_MAX_WORKERS;
    while (mlp_cy_pool.n_started < n) {
        mlp_cy_worker *w = (mlp_cy_worker *)PyMem_RawCalloc(1, sizeof(mlp_cy_worker));
        if (w == NULL)
            break;
        w->wake = PyThread_allocate_lock();
        if (w->wake == NULL) {
            PyMem_RawFree(w);
            break;
        }
        PyThread_acquire_lock(w->wake, NOWAIT_LOCK);     /* taken: the next acquire waits */
        if (PyThread_start_new_thread(mlp_cy_worker_main, w) == PYTHREAD_INVALID_THREAD_ID) {
            PyThread_free_lock(w->wake);
            PyMem_RawFree(w);
            break;
        }
        mlp_cy_pool.workers[mlp_cy_pool.n_started++] = w;
    }
    return mlp_cy_pool.n_started;
}

static void mlp_cy_workers_run(int n_parts, mlp_cy_part_fn fn, void *ctx)
{
    int i, n_helpers;
    if (n_parts > 1 && mlp_cy_workers_acquire()) {
        n_helpers = mlp_cy_workers_start(n_parts - 1);
        if (n_helpers > n_parts - 1)
            n_helpers = n_parts - 1;
        __atomic_store_n(&mlp_cy_pool.pending, n_helpers, __ATOMIC_SEQ_CST);
        for (i = 0; i < n_helpers; i++) {
            mlp_cy_worker *w = mlp_cy_pool.workers[i];
            w->fn = fn;
            w->ctx = ctx;
            w->part = i + 1;
            w->n_parts = n_parts;
            __atomic_store_n(&w->ticket, w->ticket + 1, __ATOMIC_SEQ_CST);
            __atomic_thread_fence(__ATOMIC_SEQ_CST);    /* as in mlp_cy_worker_main */
            if (__atomic_exchange_n(&w->sleeping, 0, __ATOMIC_SEQ_CST) == 1)
                PyThread_release_lock(w->wake);
        }
        /* Part 0 here, then the parts beyond the helpers, if any. */
        fn(ctx, 0, n_parts);
        for (i = n_helpers + 1; i < n_parts; i++)
            fn(ctx, i, n_parts);
        mlp_cy_workers_wait();
        __atomic_store_n(&mlp_cy_pool.busy, 0, __ATOMIC_RELEASE);
        return;
    }
    for (i = 0; i < n_parts; i++)
        fn(ctx, i, n_parts);
}

/* The next chunk of a region's work for the calling part: parts claim chunks until
 * they run out, so a part slowed down (its core shared with another process) takes
 * fewer. */
static inline Py_ssize_t mlp_cy_claim(Py_ssize_t *next_chunk)
{
    return __atomic_fetch_add(next_chunk, 1, __ATOMIC_RELAXED);
}

#else   /* no __atomic builtins: every part on the caller */

static inline Py_ssize_t mlp_cy_claim(Py_ssize_t *next_chunk)
{
    return (*next_chunk)++;
}

static void mlp_cy_workers_run(int n_parts, mlp_cy_part_fn fn, void *ctx)
{
    int i;
    for (i = 0; i < n_parts; i++)
        fn(ctx, i, n_parts);
}

#endif

#endif
