# Public Cython API: the elementwise kernels of the two-layer network.
# Every kernel works on raw C-order buffers with explicit sizes, runs without
# the GIL and never allocates. Buffers are (n_rows, n_cols) with n_cols contiguous.
# cimport from mlp_cy.kernels; see mlp_cy.get_include().

from cython cimport floating
from ._typedefs cimport intp_t, label_t


cpdef enum Activation:
    IDENTITY = 0
    LOGISTIC = 1      # the seed's sigmoid, the default
    TANH = 2
    RELU = 3


cdef void bias_activation(
    floating *Z,                 # IN X W, OUT act(X W + bias)   (n_rows, n_cols)
    const floating *bias,        # IN                             (n_cols,)
    intp_t n_rows, intp_t n_cols, Activation activation,
) noexcept nogil

cdef void activation_backward(
    floating *dA,                # IN dL/dA, OUT dL/dZ = dL/dA * act'(Z)  (n_rows, n_cols)
    const floating *A,           # IN act(Z), the forward output          (n_rows, n_cols)
    intp_t n_rows, intp_t n_cols, Activation activation,
    floating *bias_grad_out,     # OUT sum over rows of dL/dZ             (n_cols,)
) noexcept nogil

cdef void bias_softmax(
    floating *Z,                 # IN A W, OUT softmax(A W + bias), row by row  (n_rows, n_cols)
    const floating *bias,        # IN                                           (n_cols,)
    intp_t n_rows, intp_t n_cols,
) noexcept nogil

cdef double softmax_cross_entropy(
    floating *Z,                 # IN A W, OUT dL/dZ = w_i scale (softmax(A W + bias) - onehot(y))
                                 #                                        (n_rows, n_classes)
    const floating *bias,        # IN                                     (n_classes,)
    const label_t *y,            # IN class codes, y[i] or y[rows[i]]
    const floating *sample_weight,  # IN w_i, same indexing; NULL means all ones
    const intp_t *rows,          # IN row indices into y and sample_weight; NULL means 0 .. n_rows-1
    intp_t n_rows, intp_t n_classes,
    floating scale,              # IN 1 / (sum of the batch's weights)
    floating *bias_grad_out,     # OUT sum over rows of dL/dZ             (n_classes,)
) noexcept nogil
# Returns sum_i w_i (logsumexp(z_i) - z_i[y_i]), the weighted cross-entropy sum, in double.

cdef double sum_of_squares(const floating *x, intp_t n) noexcept nogil
