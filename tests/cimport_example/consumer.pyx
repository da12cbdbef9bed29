# A module of some other project that cimports mlp_cy's public Cython API.
# tests/test_cython_api.py builds it in a temporary directory against the installed
# mlp_cy (include_path=[mlp_cy.get_include()]) and compares it with the Python API.
#
# Every call into mlp_cy runs inside `with nogil:`, so it only compiles if the .pxd
# declares the functions nogil. The def functions are fused on `floating`: calling one
# with float32 and with float64 arrays reaches both exported specialisations.
# X may also be uint8 (mlp_cy converts its rows as it reads them): rows_t spells out
# mlp_cy's input_t. TrainOptions crosses the Python boundary as a dict (Cython converts
# structs). Types come from the C library, not from mlp_cy's private _typedefs:
# label_t is int32_t and intp_t is Py_ssize_t.
# W1 comes before the optional (None) arguments of type floating: a fused def function
# picks its specialisation from the first argument of each fused type, and None has none.

from cython cimport floating
from libc.stdint cimport int32_t

from mlp_cy.kernels cimport (
    Activation,
    activation_backward,
    bias_activation,
    bias_softmax,
    softmax_cross_entropy,
    sum_of_squares,
)
from mlp_cy.network cimport (
    EpochStats,
    TrainOptions,
    optimizer_state_size,
    predict_proba,
    sgd_options,
    train_epoch,
    train_step,
    train_workspace_size,
)

ctypedef fused rows_t:
    unsigned char
    float
    double


def sgd(int activation, double learning_rate, double alpha):
    """sgd_options(...), as a dict."""
    return sgd_options(<Activation> activation, learning_rate, alpha)


def state_size(TrainOptions options, Py_ssize_t n_features, Py_ssize_t n_hidden,
               Py_ssize_t n_classes):
    return optimizer_state_size(&options, n_features, n_hidden, n_classes)


def workspace_size(TrainOptions options, Py_ssize_t batch_size, Py_ssize_t n_features,
                   Py_ssize_t n_hidden, Py_ssize_t n_classes):
    return train_workspace_size(&options, batch_size, n_features, n_hidden, n_classes)


def proba(const rows_t[:, ::1] X,
          const floating[:, ::1] W1, const floating[::1] b1,
          const floating[:, ::1] W2, const floating[::1] b2,
          int activation,
          floating[:, ::1] proba_out,     # OUT (n_samples, n_classes)
          floating[::1] work):            # scratch, >= n_hidden (+ n_features) values
    with nogil:
        predict_proba(X, W1, b1, W2, b2, <Activation> activation, proba_out, work)


def step(const rows_t[:, ::1] X_batch, const int32_t[::1] y_batch,
         floating[:, ::1] W1, floating[::1] b1,
         floating[:, ::1] W2, floating[::1] b2,
         const floating[::1] sample_weight, TrainOptions options, floating[::1] optimizer_state, Py_ssize_t n_updates,
         floating[::1] work):
    """One step on one batch; returns (batch loss, n_updates)."""
    cdef double loss
    with nogil:
        loss = train_step(X_batch, y_batch, sample_weight, W1, b1, W2, b2,
                          &options, optimizer_state, &n_updates, work)
    return loss, n_updates


def epoch(const rows_t[:, ::1] X, const int32_t[::1] y,
          floating[:, ::1] W1, floating[::1] b1,
          floating[:, ::1] W2, floating[::1] b2,
          const floating[::1] sample_weight, const Py_ssize_t[::1] order,
          Py_ssize_t batch_size, TrainOptions options, floating[::1] optimizer_state, Py_ssize_t n_updates,
          floating[::1] work):
    """One epoch; returns (loss_sum, n_rows_done, n_batches_done, diverged, n_updates)."""
    cdef EpochStats stats
    with nogil:
        train_epoch(X, y, sample_weight, order, batch_size, W1, b1, W2, b2,
                    &options, optimizer_state, &n_updates, work, &stats)
    return (stats.loss_sum, stats.n_rows_done, stats.n_batches_done,
            bool(stats.diverged), n_updates)


def squares(const floating[::1] x):
    """sum(x ** 2) through the raw-pointer kernel API."""
    cdef double total
    with nogil:
        total = sum_of_squares(&x[0], x.shape[0])
    return total


def activate(floating[:, ::1] Z, const floating[::1] bias, int activation):
    """Z := act(Z + bias), in place."""
    with nogil:
        bias_activation(&Z[0, 0], &bias[0], Z.shape[0], Z.shape[1],
                        <Activation> activation)


def backward(floating[:, ::1] dA, const floating[:, ::1] A, int activation,
             floating[::1] bias_grad):
    """dA := dA act'(Z) given A = act(Z), in place; bias_grad := its column sums."""
    with nogil:
        activation_backward(&dA[0, 0], &A[0, 0], dA.shape[0], dA.shape[1],
                            <Activation> activation, &bias_grad[0])


def softmax(floating[:, ::1] Z, const floating[::1] bias):
    """Z := softmax(Z + bias) row by row, in place."""
    with nogil:
        bias_softmax(&Z[0, 0], &bias[0], Z.shape[0], Z.shape[1])


def cross_entropy(floating[:, ::1] Z, const floating[::1] bias, const int32_t[::1] y,
                  const floating[::1] sample_weight, double scale,
                  floating[::1] bias_grad):
    """Z := w scale (softmax(Z + bias) - onehot(y)) in place; returns the weighted
    cross-entropy sum (sample_weight None: all ones)."""
    cdef double total
    cdef const floating *weights = NULL
    if sample_weight is not None:
        weights = &sample_weight[0]
    with nogil:
        total = softmax_cross_entropy(&Z[0, 0], &bias[0], &y[0], weights, NULL,
                                      Z.shape[0], Z.shape[1], <floating> scale,
                                      &bias_grad[0])
    return total
