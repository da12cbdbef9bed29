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
from libc.stdlib cimport free, malloc
from libc.string cimport memset

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

from mlp_cy.layers cimport (
    INPUT_FLOAT64,
    Output,
    Rows,
    Shape,
    Targets,
    layers_check,
    layers_loss_gradient,
    layers_parameter_count,
    layers_predict,
    layers_workspace_size,
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


# Any depth: mlp_cy.layers, on float64 (the float specialisations are the same code).

cdef class _Layers:
    """A network of L layers as layers.pxd takes it: sizes and pointer arrays."""
    cdef Shape shape
    cdef Py_ssize_t *units
    cdef double **coefs
    cdef double **intercepts
    cdef list keep

    def __cinit__(self, list coefs, list intercepts, int activation, int output):
        cdef Py_ssize_t i, L = len(coefs)
        cdef double[:, ::1] coef
        cdef double[::1] intercept
        self.units = <Py_ssize_t *> malloc((L + 1) * sizeof(Py_ssize_t))
        self.coefs = <double **> malloc(L * sizeof(double *))
        self.intercepts = <double **> malloc(L * sizeof(double *))
        if self.units == NULL or self.coefs == NULL or self.intercepts == NULL:
            raise MemoryError()
        self.keep = coefs + intercepts
        for i in range(L):
            coef = coefs[i]
            intercept = intercepts[i]
            self.units[i] = coef.shape[0]
            self.units[i + 1] = coef.shape[1]
            self.coefs[i] = &coef[0, 0]
            self.intercepts[i] = &intercept[0]
        self.shape.n_layers = L
        self.shape.units = self.units
        self.shape.activation = <Activation> activation
        self.shape.output = <Output> output
        layers_check(&self.shape)

    def __dealloc__(self):
        free(self.units)
        free(self.coefs)
        free(self.intercepts)


cdef Rows _dense_rows(const double[:, ::1] X):
    cdef Rows rows
    memset(&rows, 0, sizeof(Rows))
    rows.n_samples = X.shape[0]
    rows.dense = <const char *> &X[0, 0]
    rows.row_bytes = X.strides[0]
    rows.kind = INPUT_FLOAT64
    return rows


def deep_predict(const double[:, ::1] X, list coefs, list intercepts, int activation,
                 int output, double[:, ::1] out):
    """out (n_samples, n_outputs) := the output layer of an L-layer network."""
    cdef _Layers net = _Layers(coefs, intercepts, activation, output)
    cdef Rows rows = _dense_rows(X)
    cdef Py_ssize_t chunk = 64
    cdef double *work = <double *> malloc(layers_workspace_size(&net.shape, chunk)
                                          * sizeof(double))
    if work == NULL:
        raise MemoryError()
    with nogil:
        layers_predict(&net.shape, &rows, net.coefs, net.intercepts, &out[0, 0],
                       out.shape[1], work, chunk)
    free(work)


def deep_loss_gradient(const double[:, ::1] X, const double[:, ::1] Y, list coefs,
                       list intercepts, int activation, int output, double alpha,
                       double[::1] gradient):
    """The loss of all rows and its gradient (W_0 | b_0 | W_1 | ...) into gradient;
    Y (n_samples, n_outputs) targets (not OUT_SOFTMAX, which takes class codes)."""
    cdef _Layers net = _Layers(coefs, intercepts, activation, output)
    cdef Rows rows = _dense_rows(X)
    cdef Targets targets
    cdef double loss
    targets.codes = NULL
    targets.values = &Y[0, 0]
    assert gradient.shape[0] == layers_parameter_count(&net.shape)
    cdef double *work = <double *> malloc(layers_workspace_size(&net.shape, X.shape[0])
                                          * sizeof(double))
    if work == NULL:
        raise MemoryError()
    with nogil:
        loss = layers_loss_gradient(&net.shape, &rows, &targets, NULL, net.coefs,
                                    net.intercepts, alpha, &gradient[0], work,
                                    X.shape[0])
    free(work)
    return loss
