# Public Cython API: the engine for any number of layers (engine v2)
#     X (n_samples, units[0]) -> act(. W_0 + b_0) -> ... -> act(. W_{L-2} + b_{L-2})
#       -> out(. W_{L-1} + b_{L-1}) (n_samples, units[L])
# with L weight layers (L - 1 hidden layers, L >= 1) and one of scikit-learn's four
# output layers and losses (Output). The seed's network is L = 2 with OUT_SOFTMAX;
# network.pxd's calls are thin wrappers of these. One plan per call decides how it
# runs (threads, the first layer's zero-skipping products, the batch-1 sweep of the
# seed's network): layers.pyx, "The plan".
#
# Parameters are arrays of pointers, one per layer: coefs[i] (units[i], units[i+1])
# and intercepts[i] (units[i+1],), C order, of the floating type the call is
# specialised for. The gradient and the optimiser's state are flat, laid out layer
# by layer as W_0 | b_0 | W_1 | b_1 | ... (network.pxd's W1 | b1 | W2 | b2 for L = 2).
# Every function runs without the GIL and allocates nothing but a little scratch per
# call (each thread's partial sums; CSR X's index lists); the `work` buffers are the
# caller's (layers_workspace_size).
#
# Threads: every call runs on as many of mlp_cy's own threads as the rule of
# _blas.pyx ("Threads") gives (the BLAS's limit, threadpoolctl's included, the cores
# this process may use, the work), with the BLAS held at one thread meanwhile and
# given back after; an epoch falls back to one thread while more do not pay. Results
# depend on that thread count only to rounding, and are the same bits for the same
# count whatever the load or other callers. threadpool_limits(1): one thread.
#
# X is a Rows: dense rows of uint8, float or double (converted as they are gathered,
# never all at once), or CSR of the parameters' type. Targets are class codes
# (OUT_SOFTMAX) or a (n_samples, units[L]) matrix of the parameters' type.

from cython cimport floating
from ._typedefs cimport InputKind, INPUT_FLOAT32, INPUT_FLOAT64, INPUT_UINT8, intp_t, label_t
from .kernels cimport Activation
from .network cimport EpochStats, TrainOptions


cpdef enum Output:
    OUT_SOFTMAX = 0     # multiclass: softmax, cross-entropy; targets are class codes
    OUT_LOGISTIC = 1    # binary and multilabel: logistic units, binary cross-entropy
    OUT_IDENTITY = 2    # regression: identity, squared error / 2 (averaged over outputs)
    OUT_EXP = 3         # Poisson regression: exp, the Poisson deviance / 2


cdef struct Shape:              # the network
    intp_t n_layers             # L, weight layers: hidden layers + 1
    const intp_t *units         # (L + 1,) units[0] = n_features, units[L] = n_outputs
    Activation activation       # of the hidden layers
    Output output


cdef struct Rows:               # X: dense rows of any input kind, or CSR
    intp_t n_samples
    const char *dense           # (n_samples, units[0]) rows, row_bytes apart; NULL: CSR
    intp_t row_bytes
    InputKind kind
    const void *csr_data        # (nnz,) values of the parameters' type
    const intp_t *csr_indices   # (nnz,) column of each value
    const intp_t *csr_indptr    # (n_samples + 1,) row i is csr_indptr[i] .. [i + 1]


cdef struct Targets:
    const label_t *codes        # (n_samples,) class codes in [0, units[L]), OUT_SOFTMAX
    const void *values          # (n_samples, units[L]) of the parameters' type, otherwise


cdef intp_t layers_parameter_count(const Shape *shape) noexcept nogil
# P = sum over layers of (units[i] + 1) units[i+1]; optimiser state: 0, P (momentum) or
# 2P (Adam: first moments, then second), as network.optimizer_state_size.

cdef intp_t layers_state_size(const Shape *shape, const TrainOptions *options) noexcept nogil

cdef intp_t layers_workspace_size(const Shape *shape, intp_t batch_rows) noexcept nogil
# Length of `work` for train/loss-gradient calls on batches (or chunks) of batch_rows rows.

cdef int layers_check(const Shape *shape) except -1 nogil
# Raises ValueError for L < 1, a size < 1, or an unknown activation or output.

cdef double layers_step(
    const Shape *shape, const Rows *X, const Targets *targets,
    const floating *sample_weight,      # IN (n_samples,) or NULL
    const intp_t *rows, intp_t start, intp_t m,   # the batch: X's rows[0..m) or start..start+m
    floating **coefs, floating **intercepts,      # IN/OUT
    const TrainOptions *options,
    floating *optimizer_state,          # IN/OUT (layers_state_size,), NULL for plain SGD
    intp_t *n_updates,                  # IN/OUT
    floating *work,                     # (layers_workspace_size(shape, m),)
) noexcept nogil
# One optimiser step on one batch; returns its loss (weighted mean + the L2 term), as
# scikit-learn's batch loss. A loss that is not finite leaves the parameters untouched.

cdef double layers_loss_gradient(
    const Shape *shape, const Rows *X, const Targets *targets,
    const floating *sample_weight,      # IN (n_samples,) or NULL
    floating **coefs, floating **intercepts,      # IN
    double alpha,
    floating *gradient,                 # OUT (P,) laid out W_0 | b_0 | ...
    floating *work,                     # (layers_workspace_size(shape, chunk_rows),)
    intp_t chunk_rows,                  # rows per pass; all n_samples in one if >= it
) noexcept nogil
# The loss of all of X and its gradient, as scikit-learn's _loss_grad_lbfgs.

cdef int layers_predict(
    const Shape *shape, const Rows *X,
    floating **coefs, floating **intercepts,
    floating *out, intp_t ld_out,       # OUT (n_samples, units[L]), row stride ld_out
    floating *work,                     # (layers_workspace_size(shape, chunk_rows),)
    intp_t chunk_rows,
) noexcept nogil
# The output layer's activations (probabilities, or predicted values): 0, or -1 when
# out of memory for its small buffers.

cdef int layers_train_epoch(
    const Shape *shape, const Rows *X, const Targets *targets,
    const floating *sample_weight,      # IN (n_samples,) or NULL
    const intp_t *order,                # IN (n_rows,) the rows of X to visit, in this order
    intp_t n_rows,                      #    (a subset may leave rows out); order NULL:
                                        #    rows 0 .. n_rows - 1
    intp_t batch_size,
    floating **coefs, floating **intercepts,      # IN/OUT
    const TrainOptions *options,
    floating *optimizer_state, intp_t *n_updates,
    floating *work,                     # (layers_workspace_size(shape, batch_size),)
    EpochStats *stats_out,
) except -1 nogil
# One pass over X in batches, as network.train_epoch (signals checked between batches).
