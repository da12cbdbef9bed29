# Design:
# a) One scalar helper per activation, then plain loops the compiler can vectorise.
#    Backward passes take the activation's output A, not Z: every derivative used
#    here is a function of A (sigmoid' = A(1-A), tanh' = 1-A^2), so Z need not be kept.
# b) Numerics (design notes §1): sigmoid clamps its argument so exp never overflows;
#    softmax subtracts the row maximum; the loss is logsumexp(z) - z_y, never
#    log of a probability that may underflow to 0.
# d) float's exp is _fastexp.h's: libm's expf is an opaque call that keeps the
#    sigmoid loop scalar, and that loop alone cost a quarter of an epoch's GEMM time.
#    double keeps libm's exp, whose accuracy float64 users expect. The loop is built
#    for each instruction-set level and runs at the level _blas picked for the kernels.
# c) Bias gradients are summed in the same pass that forms dZ, while the row is hot.

from libc.math cimport INFINITY, exp, log, logf, tanh, tanhf

from ._typedefs cimport intp_t, label_t
from ._blas cimport active_level

cdef extern from "_fastexp.h" nogil:
    float mlp_cy_expf(float x)
    ctypedef void (*bias_sigmoid_f32_fn)(float *z, const float *bias, Py_ssize_t n_rows,
                                         Py_ssize_t n_cols) noexcept nogil
    bias_sigmoid_f32_fn mlp_cy_bias_sigmoid_f32_at(int level)


cdef inline floating _exp(floating x) noexcept nogil:
    if floating is float:
        return mlp_cy_expf(x)     # vectorisable, clamps its argument
    else:
        return exp(x)


cdef inline floating _log(floating x) noexcept nogil:
    if floating is float:
        return logf(x)
    else:
        return log(x)


cdef inline floating _sigmoid(floating z) noexcept nogil:
    # exp(88) and exp(708) are the largest powers of e that fit float and double.
    cdef floating limit = 88.0 if floating is float else 708.0
    if z < -limit:
        z = -limit
    return 1 / (1 + _exp(-z))


cdef inline floating _activate(floating z, Activation activation) noexcept nogil:
    if activation == LOGISTIC:
        return _sigmoid(z)
    elif activation == TANH:
        if floating is float:
            return tanhf(z)
        else:
            return tanh(z)
    elif activation == RELU:
        return z if z > 0 else 0
    return z


cdef void bias_activation(
    floating *Z, const floating *bias,
    intp_t n_rows, intp_t n_cols, Activation activation,
) noexcept nogil:
    cdef intp_t i, j
    cdef floating *row
    if floating is float:
        if activation == LOGISTIC:      # the hot case: SIMD builds (_fastexp.h)
            mlp_cy_bias_sigmoid_f32_at(active_level())(Z, bias, n_rows, n_cols)
            return
    cdef floating z
    # One loop per activation, so that each vectorises (a test of `activation` in
    # the loop kept relu's scalar, and it cost more than the gemm before it).
    for i in range(n_rows):
        row = Z + i * n_cols
        if activation == LOGISTIC:
            for j in range(n_cols):
                row[j] = _sigmoid(row[j] + bias[j])
        elif activation == RELU:
            for j in range(n_cols):
                z = row[j] + bias[j]
                row[j] = z if z > 0 else 0
        elif activation == IDENTITY:
            for j in range(n_cols):
                row[j] = row[j] + bias[j]
        else:
            for j in range(n_cols):
                row[j] = _activate(row[j] + bias[j], activation)


cdef void activation_backward(
    floating *dA, const floating *A,
    intp_t n_rows, intp_t n_cols, Activation activation,
    floating *bias_grad_out,
) noexcept nogil:
    cdef intp_t i, j
    cdef floating *d_row
    cdef const floating *a_row
    for j in range(n_cols):
        bias_grad_out[j] = 0
    for i in range(n_rows):
        d_row = dA + i * n_cols
        a_row = A + i * n_cols
        if activation == LOGISTIC:
            for j in range(n_cols):
                d_row[j] = d_row[j] * a_row[j] * (1 - a_row[j])
                bias_grad_out[j] += d_row[j]
        elif activation == RELU:
            for j in range(n_cols):
                d_row[j] = d_row[j] if a_row[j] > 0 else 0
                bias_grad_out[j] += d_row[j]
        elif activation == TANH:
            for j in range(n_cols):
                d_row[j] = d_row[j] * (1 - a_row[j] * a_row[j])
                bias_grad_out[j] += d_row[j]
        else:
            for j in range(n_cols):
                bias_grad_out[j] += d_row[j]


cdef inline floating _add_bias_max(floating *z, const floating *bias,
                                   intp_t n_cols) noexcept nogil:
    """z := z + bias; returns max(z)."""
    cdef intp_t j
    cdef floating row_max
    for j in range(n_cols):
        z[j] += bias[j]
    row_max = z[0]
    for j in range(1, n_cols):
        if z[j] > row_max:
            row_max = z[j]
    return row_max


cdef inline floating _exp_shifted_sum(floating *z, floating row_max,
                                      intp_t n_cols) noexcept nogil:
    """z := exp(z - row_max); returns the sum, which is >= 1."""
    cdef intp_t j
    cdef floating total = 0
    for j in range(n_cols):
        z[j] = _exp(z[j] - row_max)
        total += z[j]
    return total


cdef void bias_softmax(
    floating *Z, const floating *bias, intp_t n_rows, intp_t n_cols,
) noexcept nogil:
    cdef intp_t i, j
    cdef floating *row
    cdef floating total, row_max
    for i in range(n_rows):
        row = Z + i * n_cols
        row_max = _add_bias_max(row, bias, n_cols)
        if row_max == INFINITY:
            # softmax's limit: the +inf logits share probability 1 (inf - inf is NaN)
            total = 0
            for j in range(n_cols):
                row[j] = 1 if row[j] == INFINITY else 0
                total += row[j]
        else:
            total = _exp_shifted_sum(row, row_max, n_cols)
        for j in range(n_cols):
            row[j] /= total


cdef double softmax_cross_entropy(
    floating *Z, const floating *bias,
    const label_t *y, const floating *sample_weight, const intp_t *rows,
    intp_t n_rows, intp_t n_classes, floating scale,
    floating *bias_grad_out,
) noexcept nogil:
    cdef intp_t i, j, r
    cdef label_t label
    cdef floating *row
    cdef floating row_max, label_shifted, total, weight, row_scale
    cdef double loss_sum = 0
    for j in range(n_classes):
        bias_grad_out[j] = 0
    for i in range(n_rows):
        r = rows[i] if rows != NULL else i
        label = y[r]
        weight = sample_weight[r] if sample_weight != NULL else 1
        row = Z + i * n_classes
        row_max = _add_bias_max(row, bias, n_classes)
        # loss_i = logsumexp(z) - z_y = log(sum exp(z - max)) - (z_y - max):
        # taken before exp, so it stays finite when exp(z_y - max) underflows to 0.
        label_shifted = row[label] - row_max
        total = _exp_shifted_sum(row, row_max, n_classes)
        loss_sum += weight * (<double> _log(total) - <double> label_shifted)
        row_scale = weight * scale
        for j in range(n_classes):
            row[j] = row[j] / total * row_scale
        row[label] -= row_scale
        for j in range(n_classes):
            bias_grad_out[j] += row[j]
    return loss_sum


cdef double sum_of_squares(const floating *x, intp_t n) noexcept nogil:
    cdef intp_t i
    cdef double total = 0
    for i in range(n):
        total += <double> x[i] * x[i]
    return total


# Python shims, for the tests only ############################################
# They take C-contiguous arrays and work in place, as the kernels do.

def _bias_activation(floating[:, ::1] Z, const floating[::1] bias, Activation activation):
    with nogil:
        bias_activation(&Z[0, 0], &bias[0], Z.shape[0], Z.shape[1], activation)


def _activation_backward(floating[:, ::1] dA, const floating[:, ::1] A,
                         Activation activation, floating[::1] bias_grad_out):
    with nogil:
        activation_backward(&dA[0, 0], &A[0, 0], dA.shape[0], dA.shape[1], activation,
                            &bias_grad_out[0])


def _bias_softmax(floating[:, ::1] Z, const floating[::1] bias):
    with nogil:
        bias_softmax(&Z[0, 0], &bias[0], Z.shape[0], Z.shape[1])


def _softmax_cross_entropy(floating[:, ::1] Z, const floating[::1] bias,
                           const label_t[::1] y, const floating[::1] sample_weight,
                           double scale, floating[::1] bias_grad_out):
    cdef double loss_sum
    with nogil:
        loss_sum = softmax_cross_entropy(
            &Z[0, 0], &bias[0], &y[0],
            &sample_weight[0] if sample_weight is not None else NULL, NULL,
            Z.shape[0], Z.shape[1], <floating> scale, &bias_grad_out[0])
    return loss_sum
