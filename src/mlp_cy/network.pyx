# The seed's network (one hidden layer, a softmax output) as the public Cython API of
# network.pxd: typed memoryviews in, the layers engine's calls underneath.
# Design:
# a) One engine: every call here is a thin wrapper of layers.pyx's (layers_step,
#    layers_train_epoch, layers_predict) on a two-layer view of the parameters
#    (_layers_view), so this network runs exactly the general step, its plan and its
#    threads (layers.pyx, "The plan"), including the zero-skipping first layer and
#    the batch-1 sweep. What stays here: the memoryviews' checks with the messages
#    the API documents, and the sizes of the buffers.
# b) One nogil call trains a whole epoch (design notes §4): nothing is allocated per
#    batch and no Python runs per batch, whatever the optimiser. Signals are checked
#    with the GIL every few milliseconds of work (layers.pyx's CHECK_WORK).
# c) The optimisers follow scikit-learn's SGDOptimizer and AdamOptimizer update for
#    update, so both give the same weights from the same start.

from libc.stdlib cimport free, malloc
from libc.string cimport memset

from ._typedefs cimport INPUT_FLOAT32, INPUT_FLOAT64, INPUT_UINT8, InputKind, input_t
from .layers cimport (OUT_SOFTMAX, Rows, Shape, Targets, layers_predict, layers_step,
                      layers_train_epoch, layers_workspace_size)
from .kernels cimport IDENTITY, LOGISTIC, TANH, RELU


cdef TrainOptions sgd_options(Activation activation, double learning_rate,
                              double alpha) noexcept nogil:
    cdef TrainOptions options
    options.activation = activation
    options.solver = SGD
    options.learning_rate = learning_rate
    options.alpha = alpha
    options.momentum = 0
    options.nesterov = False
    options.beta_1 = 0.9
    options.beta_2 = 0.999
    options.epsilon = 1e-8
    return options


cdef inline bint _plain_sgd(const TrainOptions *options) noexcept nogil:
    return options.solver == SGD and options.momentum == 0


cdef inline intp_t _n_parameters(intp_t n_features, intp_t n_hidden,
                                 intp_t n_classes) noexcept nogil:
    return (n_features + 1) * n_hidden + (n_hidden + 1) * n_classes


cdef intp_t optimizer_state_size(const TrainOptions *options, intp_t n_features,
                                 intp_t n_hidden, intp_t n_classes) noexcept nogil:
    if _plain_sgd(options):
        return 0
    return ((2 if options.solver == ADAM else 1)
            * _n_parameters(n_features, n_hidden, n_classes))


cdef struct LayersView:          # the network as the layers engine sees it
    intp_t units[3]               # n_features, n_hidden, n_classes
    Shape shape
    Rows rows
    Targets targets
    void *coefs[2]                # W1, W2, of the parameters' type
    void *intercepts[2]           # b1, b2


cdef void _view_shape(LayersView *view, intp_t n_features, intp_t n_hidden,
                      intp_t n_classes, Activation activation) noexcept nogil:
    view.units[0] = n_features
    view.units[1] = n_hidden
    view.units[2] = n_classes
    view.shape.n_layers = 2
    view.shape.units = view.units
    view.shape.activation = activation
    view.shape.output = OUT_SOFTMAX


cdef intp_t train_workspace_size(const TrainOptions *options, intp_t batch_size,
                                 intp_t n_features, intp_t n_hidden,
                                 intp_t n_classes) noexcept nogil:
    # The layers engine's workspace for the batch (it covers the batch-1 sweep's).
    cdef LayersView view
    _view_shape(&view, n_features, n_hidden, n_classes, LOGISTIC)
    return layers_workspace_size(&view.shape, batch_size)


cdef inline intp_t _row_stride(intp_t stride_bytes, intp_t n_rows, intp_t n_cols,
                              intp_t itemsize) noexcept nogil:
    """Leading dimension, in items, of a C-order (n_rows, n_cols) view; 0 if unusable."""
    if n_rows <= 1:
        return n_cols if n_cols > 0 else 1
    if stride_bytes % itemsize != 0 or stride_bytes // itemsize < n_cols:
        return 0
    return stride_bytes // itemsize


cdef inline InputKind _input_kind(const input_t *x) noexcept nogil:
    if input_t is float:
        return INPUT_FLOAT32
    elif input_t is double:
        return INPUT_FLOAT64
    else:
        return INPUT_UINT8


cdef void _layers_view(LayersView *view, const input_t[:, ::1] X,
                       const floating *W1, const floating *b1, const floating *W2,
                       const floating *b2, intp_t n_hidden, intp_t n_classes,
                       Activation activation, const label_t *y) noexcept nogil:
    """The two-layer network and X, y (checked) as layers.pxd's structs. The engine
    writes the parameters only where the caller's memoryviews are writable."""
    _view_shape(view, X.shape[1], n_hidden, n_classes, activation)
    memset(&view.rows, 0, sizeof(Rows))
    view.rows.n_samples = X.shape[0]
    view.rows.dense = <const char *> &X[0, 0] if X.shape[0] > 0 else NULL
    view.rows.row_bytes = (X.strides[0] if X.shape[0] > 1
                           else X.shape[1] * <intp_t> sizeof(input_t))
    view.rows.kind = _input_kind(<const input_t *> NULL)
    view.targets.codes = y
    view.targets.values = NULL
    view.coefs[0] = <void *> W1
    view.coefs[1] = <void *> W2
    view.intercepts[0] = <void *> b1
    view.intercepts[1] = <void *> b2


cdef int _check_parameters(intp_t n_features, intp_t n_hidden, intp_t n_classes,
                           const floating[:, ::1] W1, const floating[::1] b1,
                           const floating[:, ::1] W2,
                           const floating[::1] b2) except -1 nogil:
    if (W1.shape[0] != n_features or W1.shape[1] != n_hidden
            or b1.shape[0] != n_hidden or W2.shape[0] != n_hidden
            or W2.shape[1] != n_classes or b2.shape[0] != n_classes
            or n_hidden < 1 or n_classes < 1):
        with gil:
            raise ValueError(
                f"parameter shapes disagree: X has {n_features} features, "
                f"W1 is ({W1.shape[0]}, {W1.shape[1]}), b1 ({b1.shape[0]},), "
                f"W2 ({W2.shape[0]}, {W2.shape[1]}), b2 ({b2.shape[0]},)")
    return 0


cdef int _check_activation(Activation activation) except -1 nogil:
    if activation != IDENTITY and activation != LOGISTIC and activation != TANH \
            and activation != RELU:
        with gil:
            raise ValueError(f"unknown activation code {<int> activation}: use one of "
                             "IDENTITY, LOGISTIC, TANH, RELU")
    return 0


cdef int predict_proba(
    const input_t[:, ::1] X,
    const floating[:, ::1] W1, const floating[::1] b1,
    const floating[:, ::1] W2, const floating[::1] b2,
    Activation activation,
    floating[:, ::1] proba_out,
    floating[::1] work,
) except -1 nogil:
    cdef intp_t n_samples = X.shape[0], n_features = X.shape[1]
    cdef intp_t n_hidden = W1.shape[1], n_classes = W2.shape[1]
    cdef intp_t chunk, per_row = n_hidden
    cdef bint convert = not ((input_t is float and floating is float)
                             or (input_t is double and floating is double))
    _check_parameters(n_features, n_hidden, n_classes, W1, b1, W2, b2)
    _check_activation(activation)
    if proba_out.shape[0] != n_samples or proba_out.shape[1] != n_classes:
        with gil:
            raise ValueError(f"proba_out must be ({n_samples}, {n_classes}), "
                             f"got ({proba_out.shape[0]}, {proba_out.shape[1]})")
    if convert:
        per_row += n_features
    chunk = work.shape[0] // per_row
    if chunk < 1:
        with gil:
            raise ValueError(f"work must hold at least {per_row} values")
    if n_samples == 0:
        return 0
    cdef intp_t ldx = _row_stride(X.strides[0], n_samples, n_features, sizeof(input_t))
    cdef intp_t ldp = _row_stride(proba_out.strides[0], n_samples, n_classes,
                                  sizeof(floating))
    if ldx == 0 or ldp == 0:
        with gil:
            raise ValueError("X and proba_out need rows that do not overlap")
    # layers_predict by chunks of as many rows as `work` holds, in a workspace of the
    # layers engine's layout that this call allocates.
    cdef LayersView view
    _layers_view(&view, X, &W1[0, 0], &b1[0], &W2[0, 0], &b2[0], n_hidden, n_classes,
                 activation, NULL)
    chunk = min(chunk, n_samples)
    cdef floating *buffer = <floating *> malloc(
        layers_workspace_size(&view.shape, chunk) * sizeof(floating))
    cdef int status = -1
    if buffer != NULL:
        status = layers_predict(&view.shape, &view.rows, <floating **> view.coefs,
                                <floating **> view.intercepts, &proba_out[0, 0], ldp,
                                buffer, chunk)
    free(buffer)
    if status != 0:
        with gil:
            raise MemoryError("out of memory for predict_proba's buffers")
    return 0


cdef int _check_training(const TrainOptions *options, intp_t n_features,
                         intp_t n_hidden, intp_t n_classes, intp_t batch_size,
                         const floating[::1] optimizer_state,
                         const floating[::1] work) except -1 nogil:
    if options.solver != SGD and options.solver != ADAM:
        with gil:
            raise ValueError(f"unknown solver code {<int> options.solver}")
    _check_activation(options.activation)
    if not (options.learning_rate > 0 and options.alpha >= 0 and options.momentum >= 0
            and options.momentum <= 1 and options.beta_1 >= 0 and options.beta_1 < 1
            and options.beta_2 >= 0 and options.beta_2 < 1 and options.epsilon > 0):
        with gil:
            raise ValueError(
                "options out of range: need learning_rate > 0, alpha >= 0, "
                "0 <= momentum <= 1, 0 <= beta_1, beta_2 < 1, epsilon > 0")
    cdef intp_t needed = optimizer_state_size(options, n_features, n_hidden, n_classes)
    if needed > 0 and (optimizer_state is None or optimizer_state.shape[0] < needed):
        with gil:
            raise ValueError(f"optimizer_state must hold optimizer_state_size(...) = "
                             f"{needed} values")
    if work.shape[0] < train_workspace_size(options, batch_size, n_features, n_hidden,
                                            n_classes):
        with gil:
            raise ValueError("work is shorter than train_workspace_size(...)")
    return 0


cdef double train_step(
    const input_t[:, ::1] X_batch,
    const label_t[::1] y_batch,
    const floating[::1] sample_weight,
    floating[:, ::1] W1, floating[::1] b1,
    floating[:, ::1] W2, floating[::1] b2,
    const TrainOptions *options,
    floating[::1] optimizer_state,
    intp_t *n_updates,
    floating[::1] work,
) except -1 nogil:
    cdef intp_t m = X_batch.shape[0], n_features = X_batch.shape[1]
    cdef intp_t n_hidden = W1.shape[1], n_classes = W2.shape[1]
    _check_parameters(n_features, n_hidden, n_classes, W1, b1, W2, b2)
    _check_batch(m, n_classes, y_batch, sample_weight)
    _check_training(options, n_features, n_hidden, n_classes, m, optimizer_state, work)
    cdef intp_t ldx = _row_stride(X_batch.strides[0], m, n_features, sizeof(input_t))
    if ldx == 0:
        with gil:
            raise ValueError("X_batch needs rows that do not overlap")
    if m == 0:
        return 0
    cdef LayersView view
    _layers_view(&view, X_batch, &W1[0, 0], &b1[0], &W2[0, 0], &b2[0], n_hidden,
                 n_classes, options.activation, &y_batch[0])
    return layers_step(&view.shape, &view.rows, &view.targets,
                       &sample_weight[0] if sample_weight is not None else NULL, NULL, 0,
                       m, <floating **> view.coefs, <floating **> view.intercepts,
                       options, _state_pointer(optimizer_state), n_updates, &work[0])


cdef inline floating *_state_pointer(floating[::1] optimizer_state) noexcept nogil:
    if optimizer_state is None or optimizer_state.shape[0] == 0:
        return NULL
    return &optimizer_state[0]


cdef int _check_batch(intp_t n_samples, intp_t n_classes, const label_t[::1] y,
                      const floating[::1] sample_weight) except -1 nogil:
    cdef intp_t i
    if y.shape[0] != n_samples or (
            sample_weight is not None and sample_weight.shape[0] != n_samples):
        with gil:
            raise ValueError(f"y and sample_weight need {n_samples} entries, one per row of X")
    for i in range(n_samples):
        if y[i] < 0 or y[i] >= n_classes:
            with gil:
                raise ValueError(f"y[{i}] = {y[i]} is not a class code in [0, {n_classes})")
    return 0


cdef int train_epoch(
    const input_t[:, ::1] X,
    const label_t[::1] y,
    const floating[::1] sample_weight,
    const intp_t[::1] order,
    intp_t batch_size,
    floating[:, ::1] W1, floating[::1] b1,
    floating[:, ::1] W2, floating[::1] b2,
    const TrainOptions *options,
    floating[::1] optimizer_state,
    intp_t *n_updates,
    floating[::1] work,
    EpochStats *stats_out,
) except -1 nogil:
    cdef intp_t n_samples = X.shape[0], n_features = X.shape[1]
    # the rows visited: order's, or all of X's
    cdef intp_t n_rows = order.shape[0] if order is not None else n_samples
    cdef intp_t n_hidden = W1.shape[1], n_classes = W2.shape[1]
    cdef intp_t i
    cdef intp_t ldx = _row_stride(X.strides[0], n_samples, n_features, sizeof(input_t))

    stats_out.loss_sum = 0
    stats_out.n_rows_done = 0
    stats_out.n_batches_done = 0
    stats_out.diverged = False
    _check_parameters(n_features, n_hidden, n_classes, W1, b1, W2, b2)
    _check_batch(n_samples, n_classes, y, sample_weight)
    if batch_size < 1:
        with gil:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batch_size = min(batch_size, max(n_rows, 1))
    _check_training(options, n_features, n_hidden, n_classes, batch_size,
                    optimizer_state, work)
    if ldx == 0:
        with gil:
            raise ValueError("X needs rows that do not overlap")
    if order is not None:
        if order.shape[0] > n_samples:
            with gil:
                raise ValueError(f"order has {order.shape[0]} entries for {n_samples} rows")
        for i in range(n_rows):
            if order[i] < 0 or order[i] >= n_samples:
                with gil:
                    raise ValueError(f"order[{i}] = {order[i]} is not a row of X")
    if n_rows == 0:
        return 0
    cdef LayersView view
    _layers_view(&view, X, &W1[0, 0], &b1[0], &W2[0, 0], &b2[0], n_hidden, n_classes,
                 options.activation, &y[0])
    return layers_train_epoch(&view.shape, &view.rows, &view.targets,
                              &sample_weight[0] if sample_weight is not None else NULL,
                              &order[0] if order is not None else NULL, n_rows,
                              batch_size, <floating **> view.coefs,
                              <floating **> view.intercepts, options,
                              _state_pointer(optimizer_state), n_updates, &work[0],
                              stats_out)


# Python entry points, used by the estimator ##################################

def _predict_proba(const input_t[:, ::1] X,
                   const floating[:, ::1] W1, const floating[::1] b1,
                   const floating[:, ::1] W2, const floating[::1] b2,
                   Activation activation,
                   floating[:, ::1] proba_out, floating[::1] work):
    """proba_out := softmax(act(X W1 + b1) W2 + b2), without the GIL."""
    with nogil:
        predict_proba(X, W1, b1, W2, b2, activation, proba_out, work)


cdef TrainOptions _options_from_dict(dict options) except *:
    cdef TrainOptions result = sgd_options(options["activation"],
                                           options["learning_rate"], options["alpha"])
    result.solver = options.get("solver", SGD)
    result.momentum = options.get("momentum", 0.0)
    result.nesterov = options.get("nesterov", False)
    result.beta_1 = options.get("beta_1", 0.9)
    result.beta_2 = options.get("beta_2", 0.999)
    result.epsilon = options.get("epsilon", 1e-8)
    return result


def _train_epoch(const input_t[:, ::1] X, const label_t[::1] y,
                 floating[:, ::1] W1, floating[::1] b1,
                 floating[:, ::1] W2, floating[::1] b2,
                 const floating[::1] sample_weight, const intp_t[::1] order,
                 intp_t batch_size, dict options, floating[::1] optimizer_state,
                 floating[::1] work, double[::1] stats_out not None):
    """One epoch without the GIL; see train_epoch (the parameters come before the
    optional arrays here, so that the fused-type dispatch never looks at a None).

    options holds the TrainOptions fields by name (activation, learning_rate, alpha,
    and optionally solver, momentum, nesterov, beta_1, beta_2, epsilon).
    stats_out (5,) receives loss_sum, n_rows_done, n_batches_done, diverged, and
    holds n_updates in [4] (read and written), also when KeyboardInterrupt stops the
    epoch between two batches.
    """
    cdef TrainOptions train_options = _options_from_dict(options)
    cdef EpochStats stats
    if stats_out.shape[0] < 5:
        raise ValueError(f"stats_out must hold 5 values, got {stats_out.shape[0]}")
    cdef intp_t n_updates = <intp_t> stats_out[4]
    try:
        with nogil:
            train_epoch(X, y, sample_weight, order, batch_size, W1, b1, W2, b2,
                        &train_options, optimizer_state, &n_updates, work, &stats)
    finally:
        stats_out[0] = stats.loss_sum
        stats_out[1] = stats.n_rows_done
        stats_out[2] = stats.n_batches_done
        stats_out[3] = stats.diverged
        stats_out[4] = n_updates


def _train_workspace_size(dict options, intp_t batch_size, intp_t n_features,
                          intp_t n_hidden, intp_t n_classes):
    cdef TrainOptions train_options = _options_from_dict(options)
    return train_workspace_size(&train_options, batch_size, n_features, n_hidden,
                                n_classes)


def _optimizer_state_size(dict options, intp_t n_features, intp_t n_hidden,
                          intp_t n_classes):
    cdef TrainOptions train_options = _options_from_dict(options)
    return optimizer_state_size(&train_options, n_features, n_hidden, n_classes)
