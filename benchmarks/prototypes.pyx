# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# Throw-away prototypes for profile_engine.py: candidate engine changes, measured
# against the engine as it is. Not part of mlp_cy; built into a temporary directory.
#
#   sigmoid_libm      bias+sigmoid with libm's scalar expf (the engine before bca2d99)
#   sigmoid_poly      the same with an inline, branch-free expf that GCC vectorises at
#                     plain -O3 (SSE2), no -ffast-math, no libmvec
#   sigmoid_poly_clones  the same loop as GCC target_clones (SSE2 / AVX2 / AVX-512),
#                     chosen at load time: the wheel stays baseline x86-64
#   b1_epoch_gemm     batch-1 SGD epoch, gemm calls with m = 1 (the engine before c5160d4)
#   b1_epoch_gemv     batch-1 with sgemv for the forward pass and sger for the update
#   b1_epoch_sparse   batch-1 in plain loops over the non-zero pixels only: a zero
#                     pixel's row of W1 is neither read nor written (baseline SSE2)
#   b1_epoch_fused    the same in one sweep per sample (update this sample's rows, then
#                     the next sample's forward pass from the same rows), AVX2/AVX-512
#                     clones picked at load time

from libc.math cimport expf, logf
from scipy.linalg.cython_blas cimport sgemm, sgemv, sger

ctypedef Py_ssize_t intp_t

cdef extern from *:
    """
    #include <stdint.h>
    /* GCC will not if-convert the float clamps (and so not vectorise the loop) while
       it must preserve FP exception flags; clang does it by default. */
    #if defined(__GNUC__) && !defined(__clang__)
    #pragma GCC push_options
    #pragma GCC optimize ("no-trapping-math")
    #endif
    /* exp(x) = 2^n exp(r), n = nearest(x / ln 2), |r| <= ln(2) / 2; Cephes' expf
       polynomial (about 1 ulp). Rounding by the 1.5 * 2^23 trick and 2^n built in
       the exponent field, so the loop vectorises with SSE2 alone. */
    static inline float proto_expf(float x) {
        union { int32_t i; float f; } two_n;
        float n, r, p;
        x = x < -87.0f ? -87.0f : x;
        x = x > 88.0f ? 88.0f : x;
        n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
        r = x - n * 0.693359375f;
        r = r + n * 2.12194440e-4f;
        p = 1.9875691500e-4f;
        p = p * r + 1.3981999507e-3f;
        p = p * r + 8.3334519073e-3f;
        p = p * r + 4.1665795894e-2f;
        p = p * r + 1.6666665459e-1f;
        p = p * r + 5.0000001201e-1f;
        p = p * r * r + r + 1.0f;
        two_n.i = ((int32_t) n + 127) << 23;
        return p * two_n.f;
    }
    static void proto_sigmoid_rows(float *Z, const float *b, Py_ssize_t n, Py_ssize_t h) {
        for (Py_ssize_t i = 0; i < n; i++) {
            float *row = Z + i * h;
            for (Py_ssize_t j = 0; j < h; j++)
                row[j] = 1.0f / (1.0f + proto_expf(-(row[j] + b[j])));
        }
    }
    /* The same loop built three times, picked at load time by the CPU (GCC ifunc). */
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
    #define PROTO_CLONES __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
    #else
    #define PROTO_CLONES
    #endif
    PROTO_CLONES void proto_sigmoid_rows_tc(float *Z, const float *b, Py_ssize_t n, Py_ssize_t h) {
        for (Py_ssize_t i = 0; i < n; i++) {
            float *row = Z + i * h;
            for (Py_ssize_t j = 0; j < h; j++)
                row[j] = 1.0f / (1.0f + proto_expf(-(row[j] + b[j])));
        }
    }
    PROTO_CLONES void proto_sigmoid_vec(float *z, Py_ssize_t h) {
        for (Py_ssize_t j = 0; j < h; j++)
            z[j] = 1.0f / (1.0f + proto_expf(-z[j]));
    }
    /* One sweep over the rows of W1 (d, h) for batch 1: row j gets the update of the
       current sample (row -= x_upd[j] dz) and then feeds the forward pass of the next
       one (a_next += x_fwd[j] row). Rows where both pixels are zero are not touched.
       Either x may be NULL. */
    PROTO_CLONES void proto_sparse_sweep(float *W1, Py_ssize_t d, Py_ssize_t h,
                                         const float *x_upd, const float *dz,
                                         const float *x_fwd, float *a_next) {
        for (Py_ssize_t j = 0; j < d; j++) {
            float u = x_upd ? x_upd[j] : 0.0f, v = x_fwd ? x_fwd[j] : 0.0f;
            float *row = W1 + j * h;
            if (u != 0.0f && v != 0.0f) {
                for (Py_ssize_t k = 0; k < h; k++) {
                    float w = row[k] - u * dz[k];
                    row[k] = w;
                    a_next[k] += v * w;
                }
            } else if (u != 0.0f) {
                for (Py_ssize_t k = 0; k < h; k++) row[k] -= u * dz[k];
            } else if (v != 0.0f) {
                for (Py_ssize_t k = 0; k < h; k++) a_next[k] += v * row[k];
            }
        }
    }
    #if defined(__GNUC__) && !defined(__clang__)
    #pragma GCC pop_options
    #endif
    """
    float proto_expf(float x) noexcept nogil
    void proto_sigmoid_rows(float *Z, const float *b, Py_ssize_t n, Py_ssize_t h) noexcept nogil
    void proto_sigmoid_vec(float *z, Py_ssize_t h) noexcept nogil
    void proto_sparse_sweep(float *W1, Py_ssize_t d, Py_ssize_t h, const float *x_upd,
                            const float *dz, const float *x_fwd, float *a_next) noexcept nogil
    void proto_sigmoid_rows_tc(float *Z, const float *b, Py_ssize_t n, Py_ssize_t h) noexcept nogil


cdef inline float _sigmoid_libm(float z) noexcept nogil:
    if z < -88.0:
        z = -88.0
    return 1 / (1 + expf(-z))


def sigmoid_libm(float[:, ::1] Z, const float[::1] b, int repeat=1):
    cdef intp_t i, j, r, n = Z.shape[0], h = Z.shape[1]
    cdef float *row
    with nogil:
        for r in range(repeat):
            for i in range(n):
                row = &Z[i, 0]
                for j in range(h):
                    row[j] = _sigmoid_libm(row[j] + b[j])


def sigmoid_poly(float[:, ::1] Z, const float[::1] b, int repeat=1):
    cdef intp_t r
    with nogil:
        for r in range(repeat):
            proto_sigmoid_rows(&Z[0, 0], &b[0], Z.shape[0], Z.shape[1])


def sigmoid_poly_clones(float[:, ::1] Z, const float[::1] b, int repeat=1):
    cdef intp_t r
    with nogil:
        for r in range(repeat):
            proto_sigmoid_rows_tc(&Z[0, 0], &b[0], Z.shape[0], Z.shape[1])


def expf_poly(float[::1] x, float[::1] out):
    cdef intp_t i
    for i in range(x.shape[0]):
        out[i] = proto_expf(x[i])


# --- batch 1 -------------------------------------------------------------------

cdef inline double _output_step(float *a1, float *W2, float *b2, float *z2, float *da1,
                                intp_t h, intp_t K, int label, float eta) noexcept nogil:
    """z2 = a1 W2 + b2 -> dz2 = softmax - onehot; da1 = W2 dz2; W2, b2 updated.

    Returns the sample's loss. a1, da1: (h,), z2: (K,)."""
    cdef intp_t j, c
    cdef float zmax, total, zy
    for c in range(K):
        z2[c] = b2[c]
    for j in range(h):
        for c in range(K):
            z2[c] += a1[j] * W2[j * K + c]
    zmax = z2[0]
    for c in range(1, K):
        if z2[c] > zmax:
            zmax = z2[c]
    zy = z2[label] - zmax
    total = 0
    for c in range(K):
        z2[c] = expf(z2[c] - zmax)
        total += z2[c]
    for c in range(K):
        z2[c] /= total
    z2[label] -= 1
    for j in range(h):
        da1[j] = 0
        for c in range(K):
            da1[j] += W2[j * K + c] * z2[c]
            W2[j * K + c] -= eta * a1[j] * z2[c]
    for c in range(K):
        b2[c] -= eta * z2[c]
    return logf(total) - zy


def b1_epoch_gemm(const float[:, ::1] X, const int[::1] y, const intp_t[::1] order,
                  float[:, ::1] W1, float[::1] b1, float[:, ::1] W2, float[::1] b2,
                  float eta):
    """The engine's batch-1 path: gemm calls with m = 1 (forward and update)."""
    cdef int d = X.shape[1], h = W1.shape[1], K = W2.shape[1], one = 1
    cdef float fone = 1, fzero = 0, neta = -eta
    cdef float[::1] buf = cython_view_alloc(2 * h + K)
    cdef float *a1 = &buf[0]
    cdef float *da1 = a1 + h
    cdef float *z2 = da1 + h
    cdef intp_t s, j
    cdef double loss = 0
    cdef char N = b'N', T = b'T'
    cdef const float *x
    with nogil:
        for s in range(order.shape[0]):
            x = &X[order[s], 0]
            # row-major (1, h) = (1, d) (d, h)  ->  Fortran (h, 1) = W1^T(h, d) x(d, 1)
            sgemm(&N, &N, &h, &one, &d, &fone, &W1[0, 0], &h, <float *> x, &d, &fzero,
                  a1, &h)
            for j in range(h):
                a1[j] = _sigmoid_libm(a1[j] + b1[j])
            loss += _output_step(a1, &W2[0, 0], &b2[0], z2, da1, h, K, y[order[s]], eta)
            for j in range(h):
                da1[j] = da1[j] * a1[j] * (1 - a1[j])
                b1[j] -= eta * da1[j]
            # W1 (d, h) -= eta x^T da1  ->  Fortran (h, d) -= eta da1 (h, 1) x^T (1, d)
            sgemm(&N, &N, &h, &d, &one, &neta, da1, &h, <float *> x, &one, &fone,
                  &W1[0, 0], &h)
    return loss


def b1_epoch_gemv(const float[:, ::1] X, const int[::1] y, const intp_t[::1] order,
                  float[:, ::1] W1, float[::1] b1, float[:, ::1] W2, float[::1] b2,
                  float eta):
    """Batch 1 with sgemv (forward) and sger (rank-1 update of W1)."""
    cdef int d = X.shape[1], h = W1.shape[1], K = W2.shape[1], one = 1
    cdef float fone = 1, fzero = 0, neta = -eta
    cdef float[::1] buf = cython_view_alloc(2 * h + K)
    cdef float *a1 = &buf[0]
    cdef float *da1 = a1 + h
    cdef float *z2 = da1 + h
    cdef intp_t s, j
    cdef double loss = 0
    cdef char N = b'N'
    cdef const float *x
    with nogil:
        for s in range(order.shape[0]):
            x = &X[order[s], 0]
            sgemv(&N, &h, &d, &fone, &W1[0, 0], &h, <float *> x, &one, &fzero, a1, &one)
            for j in range(h):
                a1[j] = _sigmoid_libm(a1[j] + b1[j])
            loss += _output_step(a1, &W2[0, 0], &b2[0], z2, da1, h, K, y[order[s]], eta)
            for j in range(h):
                da1[j] = da1[j] * a1[j] * (1 - a1[j])
                b1[j] -= eta * da1[j]
            sger(&h, &d, &neta, da1, &one, <float *> x, &one, &W1[0, 0], &h)
    return loss


def b1_epoch_sparse(const float[:, ::1] X, const int[::1] y, const intp_t[::1] order,
                    float[:, ::1] W1, float[::1] b1, float[:, ::1] W2, float[::1] b2,
                    float eta, bint poly_sigmoid=True):
    """Batch 1 over the non-zero pixels only; plain loops the compiler vectorises."""
    cdef intp_t d = X.shape[1], h = W1.shape[1], K = W2.shape[1]
    cdef float[::1] buf = cython_view_alloc(2 * h + K)
    cdef intp_t[::1] nzbuf = cython_view_alloc_intp(d)
    cdef float *a1 = &buf[0]
    cdef float *da1 = a1 + h
    cdef float *z2 = da1 + h
    cdef intp_t *nz = &nzbuf[0]
    cdef intp_t s, j, k, t, nnz
    cdef double loss = 0
    cdef const float *x
    cdef float *row
    cdef float xv
    with nogil:
        for s in range(order.shape[0]):
            x = &X[order[s], 0]
            nnz = 0
            for j in range(d):
                if x[j] != 0:
                    nz[nnz] = j
                    nnz += 1
            for k in range(h):
                a1[k] = b1[k]
            for t in range(nnz):
                j = nz[t]
                xv = x[j]
                row = &W1[j, 0]
                for k in range(h):
                    a1[k] += xv * row[k]
            if poly_sigmoid:
                proto_sigmoid_vec(a1, h)
            else:
                for k in range(h):
                    a1[k] = _sigmoid_libm(a1[k])
            loss += _output_step(a1, &W2[0, 0], &b2[0], z2, da1, h, K, y[order[s]], eta)
            for k in range(h):
                da1[k] = eta * da1[k] * a1[k] * (1 - a1[k])
                b1[k] -= da1[k]
            for t in range(nnz):
                j = nz[t]
                xv = x[j]
                row = &W1[j, 0]
                for k in range(h):
                    row[k] -= xv * da1[k]
    return loss


def b1_epoch_fused(const float[:, ::1] X, const int[::1] y, const intp_t[::1] order,
                   float[:, ::1] W1, float[::1] b1, float[:, ::1] W2, float[::1] b2,
                   float eta):
    """Batch 1, one sweep over the non-zero rows of W1 per sample: update for this
    sample and forward pass of the next (design notes section 4); AVX2/AVX-512 clones."""
    cdef intp_t d = X.shape[1], h = W1.shape[1], K = W2.shape[1]
    cdef float[::1] buf = cython_view_alloc(3 * h + K)
    cdef float *a1 = &buf[0]
    cdef float *da1 = a1 + h
    cdef float *z2 = da1 + h
    cdef float *a_next = z2 + K
    cdef intp_t s, k, n = order.shape[0]
    cdef double loss = 0
    cdef const float *x
    cdef const float *x_next
    if n == 0:
        return 0.0
    with nogil:
        for k in range(h):
            a1[k] = b1[k]
        proto_sparse_sweep(&W1[0, 0], d, h, NULL, NULL, &X[order[0], 0], a1)
        for s in range(n):
            x = &X[order[s], 0]
            x_next = &X[order[s + 1], 0] if s + 1 < n else NULL
            proto_sigmoid_vec(a1, h)
            loss += _output_step(a1, &W2[0, 0], &b2[0], z2, da1, h, K, y[order[s]], eta)
            for k in range(h):
                da1[k] = eta * da1[k] * a1[k] * (1 - a1[k])
                b1[k] -= da1[k]
                a_next[k] = b1[k]
            proto_sparse_sweep(&W1[0, 0], d, h, x, da1, x_next, a_next)
            for k in range(h):
                a1[k] = a_next[k]
    return loss


def fraction_nonzero(const float[:, ::1] X):
    cdef intp_t i, j, c = 0
    for i in range(X.shape[0]):
        for j in range(X.shape[1]):
            if X[i, j] != 0:
                c += 1
    return c / <double> (X.shape[0] * X.shape[1])


import numpy as _np


cdef float[::1] cython_view_alloc(intp_t n):
    return _np.zeros(n, dtype=_np.float32)


cdef intp_t[::1] cython_view_alloc_intp(intp_t n):
    return _np.zeros(n, dtype=_np.intp)
