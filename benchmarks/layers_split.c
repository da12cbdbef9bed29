/* Prototype, measured and dropped: cutting a deep network's step by columns of each
 * layer instead of by rows of the batch (issue 16, the (512, 256, 128) row).
 *
 * The layers engine (layers.pyx, "The plan") runs a step in two regions: rows (each
 * thread takes m / T rows of the batch through every layer forward and back) and
 * params (each thread takes chunks of rows of the W_i: gradient, then update). With
 * rows cut in two, each thread's gemms have half the rows but still pack a whole W_i,
 * and the kernel reuses each packed block of W over half as many rows. This file times
 * one Adam step of 784-512-256-128-10 (relu, softmax, b=200, float32, scikit-learn's
 * defaults) cut three ways, on T threads with a spinning barrier:
 *
 *   0  the engine's cut: rows region, then params region (chunks of W_i's rows, two
 *      per thread, as _plan's param_target)
 *   1  each hidden layer's forward product cut by columns (every thread: all m rows,
 *      its columns of W_i; a barrier per layer), each backward product delta_i W_i^T
 *      by columns of the result (rows of W_i); the output layer by rows; params as 0
 *   2  as 1, and the params region cut by the forward's columns (a thread updates the
 *      columns of W_i that it read forward: each W_i column block stays in one core)
 *
 * in blocks of 20 steps, the cuts alternating block by block in one process (this
 * machine is shared; alternating keeps the comparison fair), and prints each cut's
 * median and fastest block. The data are random, half zeros; the batches are rows of a
 * 60,000-row X in a shuffled order, gathered as the engine gathers them. The softmax
 * and Adam loops are plain C (-O3 -ffast-math vectorises them). Build and run from the
 * repository root (gcc; scipy installed, whose OpenBLAS this links):
 *
 *   OB=$(python -c "import glob, os, scipy; print(glob.glob(os.path.join(
 *        os.path.dirname(scipy.__file__), os.pardir, 'scipy.libs',
 *        'libscipy_openblas*.so'))[0])")
 *   gcc -O3 -march=native -ffast-math benchmarks/layers_split.c -o /tmp/layers_split \
 *       "$OB" -lpthread -lm -Wl,-rpath,"$(dirname "$OB")"
 *   /tmp/layers_split 2 012      # threads, the cuts to alternate
 *   /tmp/layers_split 1 0
 *
 * Results are in benchmarks/RESULTS.md ("Cutting a deep step by columns").
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { RowMajor = 101, NoTrans = 111, Trans = 112 };
void scipy_cblas_sgemm(int order, int transa, int transb, int m, int n, int k,
                       float alpha, const float *a, int lda, const float *b, int ldb,
                       float beta, float *c, int ldc);
void scipy_openblas_set_num_threads(int n);

#define L 4                         /* weight layers */
#define BLOCK 20                    /* steps per timed block */
#define MAX_CUTS 3
static const int units[L + 1] = {784, 512, 256, 128, 10};
#define N_STEPS 3000                /* 150 blocks, split among the cuts */
static const int batch = 200, n_rows = 60000, n_steps = N_STEPS;
static int n_threads = 2, n_cuts = 2, cuts[MAX_CUTS] = {0, 1, 2};

static float *X;                    /* (n_rows, 784) */
static int *order;                  /* (n_rows,) the shuffled rows */
static float *W[L], *bias[L];       /* (units[i], units[i+1]), (units[i+1],) */
static float *grad[L], *m1[L], *m2[L];  /* like W[i]: gradient, Adam's two moments */
static float *act[L + 1];           /* (batch, units[i]): act[0] the gathered rows */
static float *delta[L];             /* (batch, units[i+1]) */
static double block_s[MAX_CUTS][N_STEPS / BLOCK + 1];
static int n_blocks[MAX_CUTS];

static volatile int barrier_count = 0, barrier_sense = 0;

static void barrier(int *sense)
{
    *sense = !*sense;
    if (__atomic_add_fetch(&barrier_count, 1, __ATOMIC_ACQ_REL) == n_threads) {
        barrier_count = 0;
        __atomic_store_n(&barrier_sense, *sense, __ATOMIC_RELEASE);
    }
    else {
        while (__atomic_load_n(&barrier_sense, __ATOMIC_ACQUIRE) != *sense)
            __builtin_ia32_pause();
    }
}

static double seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static void gemm(int ta, int tb, int m, int n, int k, const float *a, int lda,
                 const float *b, int ldb, float *c, int ldc)
{
    scipy_cblas_sgemm(RowMajor, ta, tb, m, n, k, 1, a, lda, b, ldb, 0, c, ldc);
}

/* Adam with L2 on rows x n values of row stride ld. */
static void adam(float *w, const float *g, float *a, float *v, long rows, long n, long ld)
{
    for (long r = 0; r < rows; r++)
        for (long j = r * ld; j < r * ld + n; j++) {
            float gj = g[j] + 1e-4f * w[j];
            a[j] = 0.9f * a[j] + 0.1f * gj;
            v[j] = 0.999f * v[j] + 0.001f * gj * gj;
            w[j] -= 1e-3f * a[j] / (sqrtf(v[j]) + 1e-8f);
        }
}

/* a[r0:r1, c0:c1] := relu(a + bias) (row stride ld). */
static void bias_relu(float *a, const float *b, int r0, int r1, int c0, int c1, int ld)
{
    for (int i = r0; i < r1; i++)
        for (int j = c0; j < c1; j++) {
            float z = a[i * ld + j] + b[j];
            a[i * ld + j] = z > 0 ? z : 0;
        }
}

/* d[r0:r1, c0:c1] *= relu'(a). */
static void relu_backward(float *d, const float *a, int r0, int r1, int c0, int c1, int ld)
{
    for (int i = r0; i < r1; i++)
        for (int j = c0; j < c1; j++)
            if (a[i * ld + j] <= 0)
                d[i * ld + j] = 0;
}

/* Rows r0..r1: the output's softmax minus a one-hot target, over the batch. */
static void output_delta(int r0, int r1)
{
    const int k = units[L];
    for (int i = r0; i < r1; i++) {
        float *z = act[L] + i * k, top = -INFINITY, sum = 0;
        for (int j = 0; j < k; j++) {
            z[j] += bias[L - 1][j];
            top = z[j] > top ? z[j] : top;
        }
        for (int j = 0; j < k; j++) {
            z[j] = expf(z[j] - top);
            sum += z[j];
        }
        for (int j = 0; j < k; j++)
            delta[L - 1][i * k + j] = (z[j] / sum - (j == i % k)) / batch;
    }
}

/* The params region as the engine cuts it: chunks of W_i's rows, two per thread. */
static void params_by_rows(int id)
{
    long weights = 0, chunk = 0;
    for (int i = 0; i < L; i++)
        weights += (long)units[i] * units[i + 1];
    long target = weights / (2 * n_threads) > 4096 ? weights / (2 * n_threads) : 4096;
    for (int i = 0; i < L; i++) {
        long fan_in = units[i], fan_out = units[i + 1];
        long count = (fan_in * fan_out + target - 1) / target;
        count = count < 1 ? 1 : (count > fan_in ? fan_in : count);
        long per = (fan_in + count - 1) / count;
        for (long p0 = 0; p0 < fan_in; p0 += per, chunk++) {
            if (chunk % n_threads != id)
                continue;
            long p1 = p0 + per < fan_in ? p0 + per : fan_in, at = p0 * fan_out;
            gemm(Trans, NoTrans, p1 - p0, fan_out, batch, act[i] + p0, fan_in, delta[i],
                 fan_out, grad[i] + at, fan_out);
            adam(W[i] + at, grad[i] + at, m1[i] + at, m2[i] + at, p1 - p0, fan_out, fan_out);
        }
    }
}

/* The params region cut by the forward pass's columns (the output layer by rows). */
static void params_by_columns(int id)
{
    for (int i = 0; i < L; i++) {
        int fan_in = units[i], fan_out = units[i + 1];
        if (i == L - 1) {
            int p0 = fan_in * id / n_threads, p1 = fan_in * (id + 1) / n_threads;
            long at = (long)p0 * fan_out;
            gemm(Trans, NoTrans, p1 - p0, fan_out, batch, act[i] + p0, fan_in, delta[i],
                 fan_out, grad[i] + at, fan_out);
            adam(W[i] + at, grad[i] + at, m1[i] + at, m2[i] + at, p1 - p0, fan_out, fan_out);
            continue;
        }
        int c0 = fan_out * id / n_threads, c1 = fan_out * (id + 1) / n_threads;
        gemm(Trans, NoTrans, fan_in, c1 - c0, batch, act[i], fan_in, delta[i] + c0,
             fan_out, grad[i] + c0, fan_out);
        adam(W[i] + c0, grad[i] + c0, m1[i] + c0, m2[i] + c0, fan_in, c1 - c0, fan_out);
    }
}

static void forward_backward_by_rows(int r0, int r1)
{
    int m = r1 - r0;
    for (int i = 0; i < L; i++) {
        gemm(NoTrans, NoTrans, m, units[i + 1], units[i], act[i] + r0 * units[i], units[i],
             W[i], units[i + 1], act[i + 1] + r0 * units[i + 1], units[i + 1]);
        if (i < L - 1)
            bias_relu(act[i + 1], bias[i], r0, r1, 0, units[i + 1], units[i + 1]);
    }
    output_delta(r0, r1);
    for (int i = L - 1; i > 0; i--) {
        gemm(NoTrans, Trans, m, units[i], units[i + 1], delta[i] + r0 * units[i + 1],
             units[i + 1], W[i], units[i + 1], delta[i - 1] + r0 * units[i], units[i]);
        relu_backward(delta[i - 1], act[i], r0, r1, 0, units[i], units[i]);
    }
}

static void forward_backward_by_columns(int id, int r0, int r1, int *sense)
{
    for (int i = 0; i < L; i++) {
        int fan_out = units[i + 1];
        if (i == L - 1) {
            gemm(NoTrans, NoTrans, r1 - r0, fan_out, units[i], act[i] + r0 * units[i],
                 units[i], W[i], fan_out, act[i + 1] + r0 * fan_out, fan_out);
            output_delta(r0, r1);
        }
        else {
            int c0 = fan_out * id / n_threads, c1 = fan_out * (id + 1) / n_threads;
            gemm(NoTrans, NoTrans, batch, c1 - c0, units[i], act[i], units[i], W[i] + c0,
                 fan_out, act[i + 1] + c0, fan_out);
            bias_relu(act[i + 1], bias[i], 0, batch, c0, c1, fan_out);
        }
        barrier(sense);
    }
    for (int i = L - 1; i > 0; i--) {   /* delta_{i-1}[:, c0:c1] = delta_i W_i[c0:c1, :]^T */
        int c0 = units[i] * id / n_threads, c1 = units[i] * (id + 1) / n_threads;
        gemm(NoTrans, Trans, batch, c1 - c0, units[i + 1], delta[i], units[i + 1],
             W[i] + (long)c0 * units[i + 1], units[i + 1], delta[i - 1] + c0, units[i]);
        relu_backward(delta[i - 1], act[i], 0, batch, c0, c1, units[i]);
        barrier(sense);
    }
}

static void *thread_main(void *arg)
{
    int id = (int)(long)arg, sense = 0;
    int r0 = batch * id / n_threads, r1 = batch * (id + 1) / n_threads;
    double block_start = 0;
    for (int step = 0; step < n_steps; step++) {
        int cut = cuts[(step / BLOCK) % n_cuts];
        if (step % BLOCK == 0 && id == 0) {
            double now = seconds();
            if (step > 0) {
                int last = cuts[((step - 1) / BLOCK) % n_cuts];
                block_s[last][n_blocks[last]++] = now - block_start;
            }
            block_start = now;
        }
        const int *rows = order + (long)(step % (n_rows / batch)) * batch;
        for (int i = r0; i < r1; i++)
            memcpy(act[0] + (long)i * units[0], X + (long)rows[i] * units[0],
                   units[0] * sizeof(float));
        if (cut == 0) {
            forward_backward_by_rows(r0, r1);
        }
        else {
            barrier(&sense);          /* every row gathered */
            forward_backward_by_columns(id, r0, r1, &sense);
        }
        barrier(&sense);
        if (cut == 2)
            params_by_columns(id);
        else
            params_by_rows(id);
        barrier(&sense);
    }
    return NULL;
}

static float *zeros(long n)
{
    float *p = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
    memset(p, 0, n * sizeof(float));
    return p;
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s THREADS CUTS (e.g. 2 012)\n", argv[0]);
        return 2;
    }
    n_threads = atoi(argv[1]);
    n_cuts = (int)strlen(argv[2]);
    if (n_threads < 1 || n_threads > 64 || n_cuts < 1 || n_cuts > MAX_CUTS) {
        fprintf(stderr, "threads 1-64, 1-3 cuts among 0, 1, 2\n");
        return 2;
    }
    for (int k = 0; k < n_cuts; k++) {
        cuts[k] = argv[2][k] - '0';
        if (cuts[k] < 0 || cuts[k] > 2) {
            fprintf(stderr, "a cut is 0, 1 or 2\n");
            return 2;
        }
    }
    scipy_openblas_set_num_threads(1);
    srand(1);
    X = zeros((long)n_rows * units[0]);
    for (long i = 0; i < (long)n_rows * units[0]; i++)
        X[i] = rand() % 2 ? (rand() % 256) / 255.f : 0;
    order = malloc(sizeof(int) * n_rows);
    for (int i = 0; i < n_rows; i++)
        order[i] = i;
    for (int i = n_rows - 1; i > 0; i--) {
        int j = rand() % (i + 1), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    act[0] = zeros((long)batch * units[0]);
    for (int i = 0; i < L; i++) {
        long n = (long)units[i] * units[i + 1];
        W[i] = zeros(n);
        grad[i] = zeros(n);
        m1[i] = zeros(n);
        m2[i] = zeros(n);
        bias[i] = zeros(units[i + 1]);
        for (long j = 0; j < n; j++)
            W[i][j] = ((rand() % 2001) - 1000) / 1000.f / sqrtf((float)units[i]);
        act[i + 1] = zeros((long)batch * units[i + 1]);
        delta[i] = zeros((long)batch * units[i + 1]);
    }
    pthread_t threads[64];
    for (int t = 1; t < n_threads; t++)
        pthread_create(&threads[t], NULL, thread_main, (void *)(long)t);
    thread_main(NULL);
    for (int t = 1; t < n_threads; t++)
        pthread_join(threads[t], NULL);
    for (int k = 0; k < n_cuts; k++) {
        int cut = cuts[k], n = n_blocks[cut];
        qsort(block_s[cut], n, sizeof(double), by_value);
        printf("threads %d, cut %d: median %.3f ms a step, fastest block %.3f (%d blocks "
               "of %d)\n", n_threads, cut, 1e3 * block_s[cut][n / 2] / BLOCK,
               1e3 * block_s[cut][0] / BLOCK, n, BLOCK);
    }
    return 0;
}
