# Design:
# a) One nogil call trains a whole epoch (design notes §4): nothing is allocated per
#    batch and no Python runs per batch, whatever the optimiser.
# b) This module keeps the seed's network's two specialisations; every other step is
#    the layers engine's (note j):
#    - batch_size 1 with plain SGD (f) and
#    - the zero-skipping parallel step (h).
# c) The 1/S (S = the batch's weight sum, its row count without weights) is folded
#    into dZ2 once, so every later gradient inherits it.
# d) Signals are checked with the GIL every CHECK_WORK multiply-adds, not every batch,
#    so another busy Python thread costs this loop almost nothing.
# e) The optimisers follow scikit-learn's SGDOptimizer and AdamOptimizer update for
#    update, so both give the same weights from the same start.
# f) batch_size 1 with plain SGD is bound by memory, not FLOPs: each sample reads W1
#    for its forward pass and reads and writes it for its update. _sample_step does
#    both in one sweep over W1's rows (update row i for this sample, then add row i
#    to the next sample's forward pass), and skips the rows of zero pixels, which
#    need neither (about half of Fashion-MNIST's, 80% of MNIST's). No BLAS call is
#    worth its overhead at this size.
# g) predict_proba's product with X skips X's zeros where that beats gemm
#    (_blas.skipzero_products: one BLAS thread, a kernel level where it pays,
#    mostly-zero data), decided per chunk of rows.
# h) Where the thread rule (_blas.pyx, "Threads") gives 2 or more threads and the
#    kernel level pays for it, every solver runs each batch on threads of mlp_cy's
#    own, skipping zeros, with no BLAS call (_parallel.pyx). The choice is made once
#    per call, from the density of its first batch. Memory for it is allocated once
#    per call; without it the layers engine's step runs.
# i) Threads never run a loop of batches much slower than one thread would: the
#    pacer (_parallel.pyx e) times the batches, on the threads and now and then on
#    one, and keeps one while the threads do not pay (a busy machine). Which thread
#    count runs a batch never changes its bits.
# j) Everything else (one row per batch with another solver or L2, dense data, hidden
#    sizes that are no whole vectors, one thread) is layers.pyx's step on the same
#    parameters: the network as a Shape of two layers (_layers_view), X as its Rows.
#    train_workspace_size covers its workspace too. Measured (benchmarks/RESULTS.md,
#    "engine v2 on its own threads"): on one thread the seed's configuration trains
#    as fast or faster there than on the serial step that skipped zeros, which it
#    replaced.

from libc.math cimport isfinite
from libc.stdlib cimport free, malloc
from libc.string cimport memset
from cpython.exc cimport PyErr_CheckSignals

from ._typedefs cimport blas_int, input_t
from ._blas cimport (_gemm, _gemm_skipzero, _sample_sweep, blas_threads_for,
                    blas_threads_hold, blas_threads_release, skipzero_products,
                    skipzero_parallel_threads, skipzero_sparse_enough, SKIP_FORWARD,
                    RowMajor, NoTrans)
from ._parallel cimport (BatchSource, InputKind, ParallelWork, UpdateRule,
                         INPUT_UINT8, INPUT_FLOAT32, INPUT_FLOAT64, make_rule,
                         pacer_clock, pacer_record, parallel_gather,
                         parallel_predict_proba, parallel_sgd_step, parallel_work_free,
                         parallel_work_init)
from .layers cimport (OUT_SOFTMAX, Rows, Shape, Targets, layers_step, layers_train_epoch,
                      layers_workspace_size)
from .kernels cimport (IDENTITY, LOGISTIC, TANH, RELU, bias_activation,
                       activation_backward, bias_softmax, softmax_cross_entropy)

# About 10 ms of gemm work on one core between two looks at the signal handlers.
cdef intp_t CHECK_WORK = 1 << 28


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


cdef intp_t train_workspace_size(const TrainOptions *options, intp_t batch_size,
                                 intp_t n_features, intp_t n_hidden,
                                 intp_t n_classes) noexcept nogil:
    # X_batch (m, d) | hidden (m, h) | hidden_grad (m, h) | output (m, K)
    # | gradient W1 | b1 | W2 | b2 (only the biases for plain SGD)
    # | (h,) the next sample's X W1 and (d,) its converted row (batch_size 1, plain SGD)
    # and at least what the layers engine's step needs (design note j)
    cdef intp_t units[3]
    cdef Shape shape
    cdef intp_t gradient = (n_hidden + n_classes if _plain_sgd(options)
                            else _n_parameters(n_features, n_hidden, n_classes))
    units[0] = n_features
    units[1] = n_hidden
    units[2] = n_classes
    shape.n_layers = 2
    shape.units = units
    return max(batch_size * (n_features + 2 * n_hidden + n_classes) + gradient
               + n_hidden + n_features, layers_workspace_size(&shape, batch_size))


cdef inline intp_t _row_stride(intp_t stride_bytes, intp_t n_rows, intp_t n_cols,
                              intp_t itemsize) noexcept nogil:
    """Leading dimension, in items, of a C-order (n_rows, n_cols) view; 0 if unusable."""
    if n_rows <= 1:
        return n_cols if n_cols > 0 else 1
    if stride_bytes % itemsize != 0 or stride_bytes // itemsize < n_cols:
        return 0
    return stride_bytes // itemsize


cdef inline bint _needs_conversion(const input_t *x, const floating *w) noexcept nogil:
    # Resolved at compile time for each (input_t, floating) specialisation.
    return not ((input_t is float and floating is float)
                or (input_t is double and floating is double))


cdef inline void _convert_row(const input_t *x, floating *out, intp_t n) noexcept nogil:
    cdef intp_t j
    for j in range(n):
        out[j] = <floating> x[j]


cdef inline const floating *_as_floating(const input_t *x, floating *buffer,
                                         intp_t n) noexcept nogil:
    """x itself when it is already of the parameters' type, else x converted into buffer."""
    if _needs_conversion(x, buffer):
        _convert_row(x, buffer, n)
        return buffer
    return <const floating *> x


cdef inline const floating *_row_block(const input_t[:, ::1] X, intp_t start, intp_t m,
                                       bint convert, floating *buffer) noexcept nogil:
    """Rows start .. start+m of X as floating: X's own memory (row stride X's), or
    converted into buffer (m, n_features) when X is of another type."""
    cdef intp_t i, n_features = X.shape[1]
    if not convert:
        return <const floating *> &X[start, 0]
    for i in range(m):
        _convert_row(&X[start + i, 0], buffer + i * n_features, n_features)
    return buffer


cdef inline InputKind _input_kind(const input_t *x) noexcept nogil:
    if input_t is float:
        return INPUT_FLOAT32
    elif input_t is double:
        return INPUT_FLOAT64
    else:
        return INPUT_UINT8


cdef inline BatchSource _batch_source(const input_t[:, ::1] X) noexcept nogil:
    """X as a BatchSource (rows and start are set per batch)."""
    cdef BatchSource source
    source.X = <const char *> &X[0, 0]
    source.row_bytes = X.strides[0]
    source.kind = _input_kind(<const input_t *> NULL)
    source.rows = NULL
    source.start = 0
    return source


cdef int _parallel_threads(const input_t[:, ::1] X, const intp_t *order,
                           intp_t batch_size, intp_t n_hidden,
                           const floating *like) noexcept nogil:
    """Threads for the parallel step on batches of batch_size rows of X (in `order`),
    or 0: the serial step (design note h)."""
    cdef int threads
    if batch_size < 2:
        return 0
    threads = skipzero_parallel_threads(batch_size, X.shape[1], n_hidden, sizeof(floating))
    if threads > 0 and _sparse_start(X, order, batch_size):
        return threads
    return 0


cdef bint _sparse_start(const input_t[:, ::1] X, const intp_t *order,
                        intp_t m) noexcept nogil:
    """Whether the first m rows (in `order`) are sparse enough to skip zeros."""
    cdef intp_t i, j, row, nonzeros = 0, n_features = X.shape[1]
    for i in range(m):
        row = order[i] if order != NULL else i
        for j in range(n_features):
            nonzeros += X[row, j] != 0
    return skipzero_sparse_enough(nonzeros, m * n_features)


cdef inline double _weight_sum(intp_t m, const floating *sample_weight,
                               const intp_t *rows) noexcept nogil:
    """The batch's weight sum S: m, or the sum of w[i] (w[rows[i]])."""
    cdef intp_t i
    cdef double total = 0
    if sample_weight == NULL:
        return m
    for i in range(m):
        total += sample_weight[rows[i] if rows != NULL else i]
    return total


cdef double _parallel_batch(
    ParallelWork *pw, const BatchSource *source, intp_t m,
    const label_t *y, const floating *sample_weight, const intp_t *rows,
    floating *W1, floating *b1, floating *W2, floating *b2,
    const TrainOptions *options, floating *optimizer_state, intp_t *n_updates,
    floating *work,
) noexcept nogil:
    """One batch on pw's threads, as the layers engine's step computes it (to
    rounding), with X's rows in `source`."""
    cdef const floating *X_batch
    cdef const floating **X_rows
    cdef intp_t ldx
    cdef double weight_sum = _weight_sum(m, sample_weight, rows)
    cdef UpdateRule rule = _update_rule(options)
    if weight_sum <= 0:          # a batch with no weight carries no gradient
        return 0
    parallel_gather(pw, source, m, work, &X_batch, &ldx, &X_rows)
    return parallel_sgd_step(pw, m, X_batch, ldx, X_rows, y, sample_weight, rows,
                             weight_sum, W1, b1, W2, b2, options.activation,
                             options.learning_rate, options.alpha,
                             NULL if _plain_sgd(options) else &rule, optimizer_state,
                             n_updates, work)


cdef inline UpdateRule _update_rule(const TrainOptions *options) noexcept nogil:
    return make_rule(options.solver == ADAM, options.momentum, options.nesterov,
                     options.beta_1, options.beta_2, options.epsilon)


cdef struct LayersView:          # the network as the layers engine sees it
    intp_t units[3]               # n_features, n_hidden, n_classes
    Shape shape
    Rows rows
    Targets targets
    void *coefs[2]                # W1, W2, of the parameters' type
    void *intercepts[2]           # b1, b2


cdef void _layers_view(LayersView *view, const input_t[:, ::1] X,
                       floating[:, ::1] W1, floating[::1] b1,
                       floating[:, ::1] W2, floating[::1] b2, Activation activation,
                       const label_t[::1] y) noexcept nogil:
    """The two-layer network and X, y (checked) as layers.pxd's structs."""
    view.units[0] = X.shape[1]
    view.units[1] = W1.shape[1]
    view.units[2] = W2.shape[1]
    view.shape.n_layers = 2
    view.shape.units = view.units
    view.shape.activation = activation
    view.shape.output = OUT_SOFTMAX
    memset(&view.rows, 0, sizeof(Rows))
    view.rows.n_samples = X.shape[0]
    view.rows.dense = <const char *> &X[0, 0] if X.shape[0] > 0 else NULL
    view.rows.row_bytes = (X.strides[0] if X.shape[0] > 1
                           else X.shape[1] * <intp_t> sizeof(input_t))
    view.rows.kind = _input_kind(<const input_t *> NULL)
    view.targets.codes = &y[0] if y.shape[0] > 0 else NULL
    view.targets.values = NULL
    view.coefs[0] = &W1[0, 0]
    view.coefs[1] = &W2[0, 0]
    view.intercepts[0] = &b1[0]
    view.intercepts[1] = &b2[0]


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
    cdef intp_t chunk, start, m, i, per_row = n_hidden
    cdef floating *hidden = &work[0] if work.shape[0] > 0 else NULL
    cdef floating *converted                # (chunk, n_features) when X needs it
    cdef const floating *X_chunk
    cdef bint convert = _needs_conversion(<const input_t *> NULL, hidden)
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
    converted = hidden + chunk * n_hidden
    cdef intp_t ldx = _row_stride(X.strides[0], n_samples, n_features, sizeof(input_t))
    cdef intp_t ldp = _row_stride(proba_out.strides[0], n_samples, n_classes,
                                  sizeof(floating))
    if ldx == 0 or ldp == 0:
        with gil:
            raise ValueError("X and proba_out need rows that do not overlap")
    # As training (design note h): where the thread rule gives 2+ threads and X is
    # mostly zeros, it goes through mlp_cy's own threads by chunks of 64 rows, with
    # no BLAS call.
    cdef BatchSource source = _batch_source(X)
    cdef int n_threads = _parallel_threads(X, NULL, min(n_samples, 64), n_hidden,
                                           &W1[0, 0])
    if n_threads > 0 and parallel_predict_proba(
            n_threads, &source, n_samples, n_features, &W1[0, 0], &b1[0], &W2[0, 0],
            &b2[0], n_hidden, n_classes, activation, &proba_out[0, 0], ldp) == 0:
        return 0
    cdef intp_t *cols = <intp_t *> malloc(max(n_features, 1) * sizeof(intp_t))
    cdef intp_t ld_chunk = n_features if convert else ldx
    # The BLAS on as many threads as its products pay for (_blas.pyx, "Threads").
    cdef int blas_had = blas_threads_hold(
        blas_threads_for(min(chunk, n_samples), n_features, n_hidden))
    start = 0
    while start < n_samples:
        m = min(chunk, n_samples - start)
        X_chunk = _row_block(X, start, m, convert, converted)
        if cols != NULL and (skipzero_products(X_chunk, ld_chunk, m, n_features, n_hidden)
                             & SKIP_FORWARD):
            _gemm_skipzero(m, n_hidden, n_features, X_chunk, ld_chunk, &W1[0, 0],
                           n_hidden, hidden, n_hidden, cols)
        else:
            _gemm(RowMajor, NoTrans, NoTrans, <blas_int> m, <blas_int> n_hidden,
                  <blas_int> n_features, <floating> 1, X_chunk, <blas_int> ld_chunk,
                  &W1[0, 0], <blas_int> n_hidden, <floating> 0, hidden,
                  <blas_int> n_hidden)
        bias_activation(hidden, &b1[0], m, n_hidden, activation)
        _gemm(RowMajor, NoTrans, NoTrans, <blas_int> m, <blas_int> n_classes,
              <blas_int> n_hidden, <floating> 1, hidden, <blas_int> n_hidden,
              &W2[0, 0], <blas_int> n_classes, <floating> 0, &proba_out[start, 0],
              <blas_int> ldp)
        for i in range(start, start + m):
            bias_softmax(&proba_out[i, 0], &b2[0], 1, n_classes)
        start += m
    blas_threads_release(blas_had)
    free(cols)
    return 0


cdef void _accumulate_rows(
    const floating *x,            # IN  (n_features,)
    const floating *W1,           # IN  (n_features, n_hidden)
    intp_t n_features, intp_t n_hidden,
    floating *pre_out,            # OUT (n_hidden,) x W1, over the nonzero x_i only
) noexcept nogil:
    cdef intp_t i, j
    cdef const floating *row
    cdef floating xi
    for j in range(n_hidden):
        pre_out[j] = 0
    for i in range(n_features):
        xi = x[i]
        if xi != 0:
            row = W1 + i * n_hidden
            for j in range(n_hidden):
                pre_out[j] += xi * row[j]


cdef double _sample_step(
    intp_t n_features, intp_t n_hidden, intp_t n_classes,
    const floating *x,            # IN  (n_features,) this sample
    const floating *x_next,       # IN  (n_features,) the next sample, or NULL
    label_t label,
    floating *W1, floating *b1, floating *W2, floating *b2,   # IN/OUT
    const TrainOptions *options,
    floating *pre,                # IN  x W1 (n_hidden,); OUT x_next W1 with W1 updated
    floating *work,               # (4 n_hidden + 2 n_classes,)
) noexcept nogil:
    """One plain-SGD step on one sample (batch_size 1, no L2); returns its loss."""
    cdef intp_t j, k
    cdef floating *hidden = work                       # (n_hidden,)  A1
    cdef floating *hidden_grad = hidden + n_hidden     # (n_hidden,)  dA1, then dZ1
    cdef floating *b1_grad = hidden_grad + n_hidden    # (n_hidden,)
    cdef floating *output = b1_grad + n_hidden         # (n_classes,) Z2, then dZ2
    cdef floating *b2_grad = output + n_classes        # (n_classes,)
    cdef floating *row
    cdef floating eta = <floating> options.learning_rate
    cdef floating a, g
    cdef double loss

    # Forward: A1 = act(x W1 + b1), Z2 = A1 W2
    for j in range(n_hidden):
        hidden[j] = pre[j]
    bias_activation(hidden, b1, 1, n_hidden, options.activation)
    for k in range(n_classes):
        output[k] = 0
    for j in range(n_hidden):
        a = hidden[j]
        row = W2 + j * n_classes
        for k in range(n_classes):
            output[k] += a * row[k]
    loss = softmax_cross_entropy(output, b2, &label, <const floating *> NULL, NULL, 1,
                                 n_classes, <floating> 1, b2_grad)
    if not isfinite(loss):
        return loss
    # dA1 = W2 dZ2 with W2 as it was, then W2 -= eta A1 dZ2^T, row by row
    for j in range(n_hidden):
        row = W2 + j * n_classes
        g = 0
        for k in range(n_classes):
            g += row[k] * output[k]
        hidden_grad[j] = g
        a = eta * hidden[j]
        for k in range(n_classes):
            row[k] -= a * output[k]
    for k in range(n_classes):
        b2[k] -= eta * b2_grad[k]
    # dZ1 = dA1 act'(Z1) ;  b1 -= eta dZ1
    activation_backward(hidden_grad, hidden, 1, n_hidden, options.activation, b1_grad)
    for j in range(n_hidden):
        b1[j] -= eta * hidden_grad[j]
    # W1 -= eta x dZ1^T, and the next sample's x_next W1 from the updated rows,
    # in one sweep; rows where both samples are zero are not touched.
    _sample_sweep(n_features, n_hidden, x, x_next, eta, hidden_grad, W1, pre)
    return loss


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
    cdef ParallelWork pw
    cdef BatchSource source
    cdef double loss
    cdef int n_threads = _parallel_threads(X_batch, NULL, m, n_hidden, &W1[0, 0])
    if n_threads > 0 and parallel_work_init(&pw, n_threads, m, n_features, n_hidden,
                                            n_classes, &W2[0, 0]) == 0:
        source = _batch_source(X_batch)
        loss = _parallel_batch(&pw, &source, m, &y_batch[0],
                               &sample_weight[0] if sample_weight is not None else NULL,
                               NULL, &W1[0, 0], &b1[0], &W2[0, 0], &b2[0], options,
                               _state_pointer(optimizer_state), n_updates, &work[0])
        parallel_work_free(&pw)
        return loss
    # Everything else: the layers engine's step (design note j).
    cdef LayersView view
    _layers_view(&view, X_batch, W1, b1, W2, b2, options.activation, y_batch)
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
    cdef floating *state = _state_pointer(optimizer_state)

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

    if batch_size == 1 and _plain_sgd(options) and options.alpha == 0:
        return _epoch_sample_by_sample(X, y, sample_weight, order, W1, b1, W2, b2,
                                       options, n_updates, work, stats_out)

    cdef ParallelWork pw
    cdef int n_threads = _parallel_threads(X, &order[0] if order is not None else NULL,
                                           batch_size, n_hidden, &W1[0, 0])
    if n_threads > 0 and parallel_work_init(&pw, n_threads, batch_size, n_features,
                                            n_hidden, n_classes, &W2[0, 0]) == 0:
        try:
            _epoch_parallel(X, y, sample_weight, order, batch_size, W1, b1, W2, b2,
                            options, state, n_updates, work, stats_out, &pw)
        finally:
            parallel_work_free(&pw)
        return 0

    # Everything else: the layers engine's epoch (design note j).
    cdef LayersView view
    _layers_view(&view, X, W1, b1, W2, b2, options.activation, y)
    return layers_train_epoch(&view.shape, &view.rows, &view.targets,
                              &sample_weight[0] if sample_weight is not None else NULL,
                              &order[0] if order is not None else NULL, n_rows,
                              batch_size, <floating **> view.coefs,
                              <floating **> view.intercepts, options, state, n_updates,
                              &work[0], stats_out)


cdef int _batch_done(EpochStats *stats, double loss, intp_t m, intp_t work,
                     intp_t *work_since_check) except -1 nogil:
    """Count a batch of m rows into stats; 1 if its loss diverged (stop), else 0.
    Looks at the signal handlers (and raises there) every CHECK_WORK multiply-adds."""
    if not isfinite(loss):
        stats.diverged = True
        return 1
    stats.loss_sum += loss * m
    stats.n_rows_done += m
    stats.n_batches_done += 1
    work_since_check[0] += work
    if work_since_check[0] >= CHECK_WORK:
        work_since_check[0] = 0
        with gil:
            PyErr_CheckSignals()
    return 0


cdef int _epoch_parallel(
    const input_t[:, ::1] X, const label_t[::1] y,
    const floating[::1] sample_weight, const intp_t[::1] order, intp_t batch_size,
    floating[:, ::1] W1, floating[::1] b1, floating[:, ::1] W2, floating[::1] b2,
    const TrainOptions *options, floating *state, intp_t *n_updates,
    floating[::1] work, EpochStats *stats_out, ParallelWork *pw,
) except -1 nogil:
    """train_epoch's loop over batches on pw's threads (design note h), as many of
    them as pw's pacer finds pay (design note i)."""
    cdef intp_t n_features = X.shape[1]
    cdef intp_t n_rows = order.shape[0] if order is not None else X.shape[0]
    cdef intp_t n_hidden = W1.shape[1], n_classes = W2.shape[1]
    cdef intp_t start, m, work_since_check = 0
    cdef BatchSource source = _batch_source(X)
    cdef const floating *weights = NULL
    cdef const label_t *labels
    cdef double loss, began
    start = 0
    while start < n_rows:
        m = min(batch_size, n_rows - start)
        source.start = start
        if order is None:
            labels = &y[start]
            if sample_weight is not None:
                weights = &sample_weight[start]
        else:
            source.rows = &order[start]
            labels = &y[0]
            if sample_weight is not None:
                weights = &sample_weight[0]
        began = pacer_clock()
        loss = _parallel_batch(pw, &source, m, labels, weights, source.rows, &W1[0, 0],
                               &b1[0], &W2[0, 0], &b2[0], options, state, n_updates,
                               &work[0])
        pacer_record(&pw.pacer, pacer_clock() - began, m)
        if _batch_done(stats_out, loss, m, m * (n_features + n_classes) * n_hidden,
                       &work_since_check):
            return 0
        start += m
    return 0


cdef int _epoch_sample_by_sample(
    const input_t[:, ::1] X, const label_t[::1] y,
    const floating[::1] sample_weight, const intp_t[::1] order,
    floating[:, ::1] W1, floating[::1] b1, floating[:, ::1] W2, floating[::1] b2,
    const TrainOptions *options, intp_t *n_updates, floating[::1] work,
    EpochStats *stats_out,
) except -1 nogil:
    """train_epoch for batch_size 1 and plain SGD without L2 (design note f)."""
    cdef intp_t n_features = X.shape[1]
    cdef intp_t n_rows = order.shape[0] if order is not None else X.shape[0]
    cdef intp_t n_hidden = W1.shape[1], n_classes = W2.shape[1]
    cdef intp_t t, r, work_since_check = 0
    cdef floating *pre = &work[0]                              # (n_hidden,)
    cdef floating *scratch = pre + n_hidden                    # (3 n_hidden + 2 n_classes,)
    cdef floating *row_buffers[2]                              # 2 x (n_features,), if converting
    cdef const floating *x
    cdef const floating *x_next = NULL
    cdef double loss
    row_buffers[0] = scratch + 3 * n_hidden + 2 * n_classes
    row_buffers[1] = row_buffers[0] + n_features

    r = order[0] if order is not None else 0
    x_next = _as_floating(&X[r, 0], row_buffers[0], n_features)
    _accumulate_rows(x_next, &W1[0, 0], n_features, n_hidden, pre)
    for t in range(n_rows):
        r = order[t] if order is not None else t
        x = x_next
        x_next = NULL
        if t + 1 < n_rows:
            x_next = _as_floating(&X[order[t + 1] if order is not None else t + 1, 0],
                                  row_buffers[(t + 1) % 2], n_features)
        if sample_weight is not None and sample_weight[r] <= 0:
            # A row of no weight carries no gradient (and the loss counts it as 0).
            if x_next != NULL:
                _accumulate_rows(x_next, &W1[0, 0], n_features, n_hidden, pre)
            loss = 0
        else:
            # For one row of weight w, dZ2 = w (p - y) / w: the weight cancels.
            loss = _sample_step(n_features, n_hidden, n_classes, x, x_next, y[r],
                                &W1[0, 0], &b1[0], &W2[0, 0], &b2[0], options, pre,
                                scratch)
            if not isfinite(loss):
                stats_out.diverged = True
                return 0
            n_updates[0] += 1
        stats_out.loss_sum += loss
        stats_out.n_rows_done += 1
        stats_out.n_batches_done += 1
        work_since_check += (n_features + n_classes) * n_hidden
        if work_since_check >= CHECK_WORK:
            work_since_check = 0
            with gil:
                PyErr_CheckSignals()
    return 0


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
