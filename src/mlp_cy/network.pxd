# Public Cython API: the engine of the two-layer network
#     X (n_samples, n_features) -> act(X W1 + b1) (n_samples, n_hidden)
#       -> softmax(. W2 + b2) (n_samples, n_classes), cross-entropy, minibatch SGD.
# All functions run without the GIL on typed memoryviews (float or double),
# with parameters and scratch memory passed in explicitly, so separate models may
# train concurrently from separate threads. Each call is the layers engine's
# (layers.pxd) on this two-layer network: where the thread rule gives 2+ threads it
# runs on a process-wide pool of helper threads (a second concurrent caller runs on
# its own thread instead of waiting), with the BLAS held at one thread meanwhile: see
# docs/cython-api.md.
# Arrays are C-ordered; X may be a row-sliced view (its row stride is honoured).
# X may be uint8, float or double whatever the parameters' type (floating): rows that
# are not of the parameters' type are converted as they are gathered, never all at once.
# Shapes: W1 (n_features, n_hidden), b1 (n_hidden,), W2 (n_hidden, n_classes),
# b2 (n_classes,), y (n_samples,) class codes in [0, n_classes).

from cython cimport floating
from ._typedefs cimport input_t, intp_t, label_t
from .kernels cimport Activation


cpdef enum Solver:
    SGD = 0           # the seed's plain SGD when momentum == 0 (fused update, no gradient buffer)
    ADAM = 1


cdef struct TrainOptions:
    Activation activation
    Solver solver
    double learning_rate      # eta; Adam scales it by its bias correction at each step
    double alpha              # L2 penalty, scaled as scikit-learn: alpha / (2 sum w) ||W||^2
    double momentum           # SGD: velocity v := momentum v - eta grad
    bint nesterov             # SGD: step momentum v - eta grad instead of v
    double beta_1             # Adam: decay of the first moment
    double beta_2             # Adam: decay of the second moment
    double epsilon            # Adam: added to sqrt(second moment)


cdef struct EpochStats:
    double loss_sum           # sum over batches of batch loss * batch rows (scikit-learn's)
    intp_t n_rows_done        # rows trained on, in completed batches
    intp_t n_batches_done
    bint diverged             # stopped at a batch whose loss was not finite (weights untouched by it)


cdef TrainOptions sgd_options(Activation activation, double learning_rate,
                              double alpha) noexcept nogil
# Plain SGD with every other field set (momentum 0; Adam's fields at scikit-learn's defaults).

cdef intp_t optimizer_state_size(const TrainOptions *options, intp_t n_features,
                                 intp_t n_hidden, intp_t n_classes) noexcept nogil
# Length of `optimizer_state`: 0 for plain SGD, one value per parameter for momentum
# (the velocity), two for Adam (first and second moments), laid out as W1, b1, W2, b2.
# Start it at zeros; keep it between epochs to continue an optimisation.

cdef intp_t train_workspace_size(const TrainOptions *options, intp_t batch_size,
                                 intp_t n_features, intp_t n_hidden,
                                 intp_t n_classes) noexcept nogil
# Length of the `work` buffer that train_step and train_epoch need.

cdef int predict_proba(
    const input_t[:, ::1] X,           # IN  (n_samples, n_features)
    const floating[:, ::1] W1,         # IN  (n_features, n_hidden)
    const floating[::1] b1,            # IN  (n_hidden,)
    const floating[:, ::1] W2,         # IN  (n_hidden, n_classes)
    const floating[::1] b2,            # IN  (n_classes,)
    Activation activation,
    floating[:, ::1] proba_out,        # OUT (n_samples, n_classes)
    floating[::1] work,                # any length >= n_hidden (+ n_features when X needs
                                       # converting): rows go through in chunks of
                                       # len(work) // that, in a workspace of the layers
                                       # engine's that the call allocates
) except -1 nogil

cdef double train_step(
    const input_t[:, ::1] X_batch,     # IN  (m, n_features)
    const label_t[::1] y_batch,        # IN  (m,)
    const floating[::1] sample_weight, # IN  (m,), or None for unit weights
    floating[:, ::1] W1, floating[::1] b1,   # IN/OUT, updated in place
    floating[:, ::1] W2, floating[::1] b2,   # IN/OUT, updated in place
    const TrainOptions *options,
    floating[::1] optimizer_state,     # IN/OUT (optimizer_state_size(...),), None for plain SGD
    intp_t *n_updates,                 # IN/OUT updates made so far (Adam's t)
    floating[::1] work,                # scratch, train_workspace_size(options, m, ...)
) except -1 nogil
# One optimiser step on one batch. Returns the batch loss at its forward pass (mean
# weighted cross-entropy plus the L2 term); if it is not finite, nothing is updated.

cdef int train_epoch(
    const input_t[:, ::1] X,           # IN  (n_samples, n_features)
    const label_t[::1] y,              # IN  (n_samples,)
    const floating[::1] sample_weight, # IN  (n_samples,), or None
    const intp_t[::1] order,           # IN  (n_rows,) the rows of X to visit, in this order
                                       #     (n_rows <= n_samples: a training subset may
                                       #     leave rows out), or None: 0 .. n_samples-1
    intp_t batch_size,                 # the last batch takes the rows left over
    floating[:, ::1] W1, floating[::1] b1,   # IN/OUT
    floating[:, ::1] W2, floating[::1] b2,   # IN/OUT
    const TrainOptions *options,
    floating[::1] optimizer_state,     # IN/OUT (optimizer_state_size(...),), None for plain SGD
    intp_t *n_updates,                 # IN/OUT updates made so far (Adam's t)
    floating[::1] work,                # scratch, train_workspace_size(options, batch_size, ...)
    EpochStats *stats_out,             # OUT, valid also when an exception stops the epoch
) except -1 nogil
# One pass over the data, batch after batch. Checks for signals (Ctrl-C) every few
# milliseconds of work and raises KeyboardInterrupt there, between two batches.
