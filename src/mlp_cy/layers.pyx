# The engine for any number of layers; see layers.pxd for the contract.
# Design:
# a) One step, written once: _forward (every layer's activations), _output_delta
#    (the loss and dL/dZ of the output layer, for each of the four output layers),
#    _backward (dL/dZ down the layers, each layer's gradient written or, for plain
#    SGD, applied inside its gemm). layers_step, layers_loss_gradient (L-BFGS)
#    and layers_predict are these three in different orders.
# b) The first layer is the only one that reads X: dense rows are gathered and
#    converted per batch (or read in place) for gemm; CSR rows are read through
#    their index lists, exactly. Every later layer is a gemm. The products that skip
#    X's zeros (network.pyx note g) are not used here: at scikit-learn's batch of
#    200 they were 1.1-1.2x slower than gemm on Fashion-MNIST (50% non-zeros) at
#    (512, 256, 128), (256, 128) and (100,), and even at 27% non-zeros (one thread,
#    relu, Adam; benchmarks/RESULTS.md).
# c) As network.pyx: the 1/S of the batch's weight sum is folded into the output
#    delta; plain SGD updates W := (1 - eta alpha / S) W - eta A^T dZ in the gemm,
#    after dA = dZ W^T has been taken from W as it was; other optimisers get the
#    gradient in one flat buffer and apply_update (shared with network's step).
# d) scikit-learn's formulas: the output delta is act(z) - y times the row's weight
#    for all four pairs of output and loss (canonical links); the losses are its
#    LOSS_FUNCTIONS, with its clipping of probabilities for the logistic output.
# e) CSR X and an optimiser with state (momentum, Adam): W_0 is the widest matrix
#    (50,000 x 256 for a TF-IDF input) and its update is bound by memory. The batch's
#    entries are sorted by column once (_columns_of), and each row of W_0 gets its
#    gradient formed in a small buffer and applied at once
#    (_csr_first_layer_update): no (units[0], units[1]) gradient is zeroed, written
#    or read, which was 4 of the step's 11 passes over W_0. The update also sums
#    the new W^2 (apply_update's squares_out), the next step's L2 penalty, which
#    then needs no pass of its own.
# f) The BLAS gets the threads its largest gemm pays for (_blas.pyx, "Threads"); a
#    first layer that is no gemm (CSR X) does not
#    count, or a 50,000-row W_0 would wake the BLAS's threads for a 256 x 20 gemm.

from libc.float cimport DBL_EPSILON, FLT_EPSILON
from libc.math cimport exp, isfinite, log, pow, sqrt
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset
from cpython.exc cimport PyErr_CheckSignals

from ._typedefs cimport blas_int, intp_t, label_t
from ._blas cimport (_gemm, blas_threads_for, blas_threads_hold, blas_threads_release,
                    RowMajor, NoTrans, Trans)
from ._parallel cimport UpdateRule, apply_update, make_rule, step_size_at
from .kernels cimport (IDENTITY, LOGISTIC, TANH, RELU, activation_backward,
                       bias_activation, bias_softmax, softmax_cross_entropy,
                       sum_of_squares)
from .network cimport ADAM, SGD, EpochStats, TrainOptions, sgd_options

# About 10 ms of gemm work on one core between two looks at the signal handlers.
cdef intp_t CHECK_WORK = 1 << 28


# Sizes ########################################################################

cdef intp_t layers_parameter_count(const Shape *shape) noexcept nogil:
    cdef intp_t i, total = 0
    for i in range(shape.n_layers):
        total += (shape.units[i] + 1) * shape.units[i + 1]
    return total


cdef inline bint _plain_sgd(const TrainOptions *options) noexcept nogil:
    return options.solver == SGD and options.momentum == 0


cdef intp_t layers_state_size(const Shape *shape, const TrainOptions *options) noexcept nogil:
    if _plain_sgd(options):
        return 0
    return (2 if options.solver == ADAM else 1) * layers_parameter_count(shape)


cdef inline intp_t _widest_hidden(const Shape *shape) noexcept nogil:
    cdef intp_t i, widest = 0
    for i in range(1, shape.n_layers):
        widest = max(widest, shape.units[i])
    return widest


cdef intp_t layers_workspace_size(const Shape *shape, intp_t batch_rows) noexcept nogil:
    # X_batch (m, units[0]) | A_1 .. A_{L-1} (m, units[i]) | output (m, units[L])
    # | 2 x dA (m, widest hidden) | gradient (P,) | bias scratch (widest layer,)
    cdef intp_t i, m = batch_rows, total = m * shape.units[0]
    cdef intp_t widest = 0
    for i in range(1, shape.n_layers + 1):
        total += m * shape.units[i]
        widest = max(widest, shape.units[i])
    return total + 2 * m * _widest_hidden(shape) + layers_parameter_count(shape) + widest


cdef int layers_check(const Shape *shape) except -1 nogil:
    cdef intp_t i
    if shape.n_layers < 1:
        with gil:
            raise ValueError(f"a network needs at least 1 weight layer, got {shape.n_layers}")
    for i in range(shape.n_layers + 1):
        if shape.units[i] < 1:
            with gil:
                raise ValueError(f"layer sizes must be >= 1, got units[{i}] = "
                                 f"{shape.units[i]}")
    if shape.activation != IDENTITY and shape.activation != LOGISTIC \
            and shape.activation != TANH and shape.activation != RELU:
        with gil:
            raise ValueError(f"unknown activation code {<int> shape.activation}")
    if shape.output != OUT_SOFTMAX and shape.output != OUT_LOGISTIC \
            and shape.output != OUT_IDENTITY and shape.output != OUT_EXP:
        with gil:
            raise ValueError(f"unknown output code {<int> shape.output}")
    return 0


# The batch's view of X ########################################################

cdef struct Batch:                # the first layer's input for one batch
    const intp_t *rows            # (m,) rows of X, or NULL: start .. start + m
    intp_t start, m
    intp_t ldx                    # dense: row stride of x (the batch, gathered or in place)


cdef inline floating _value(const char *row, InputKind kind, intp_t j,
                            floating like) noexcept nogil:
    if kind == INPUT_UINT8:
        return <floating> (<const unsigned char *> row)[j]
    elif kind == INPUT_FLOAT32:
        return <floating> (<const float *> row)[j]
    return <floating> (<const double *> row)[j]


cdef inline bint _same_kind(InputKind kind, const floating *like) noexcept nogil:
    if floating is float:
        return kind == INPUT_FLOAT32
    else:
        return kind == INPUT_FLOAT64


cdef const floating *_dense_batch(const Rows *X, Batch *batch, intp_t n_features,
                                  floating *buffer) noexcept nogil:
    """The batch's rows of dense X as floating (m, n_features), row stride batch.ldx:
    X's own memory when X is of the parameters' type and the rows are consecutive,
    else gathered (and converted) into buffer."""
    cdef intp_t i, j, r
    cdef const char *row
    if _same_kind(X.kind, buffer) and batch.rows == NULL:
        batch.ldx = max(X.row_bytes // <intp_t> sizeof(floating), n_features)
        return <const floating *> (X.dense + batch.start * X.row_bytes)
    batch.ldx = n_features
    for i in range(batch.m):
        r = batch.rows[i] if batch.rows != NULL else batch.start + i
        row = X.dense + r * X.row_bytes
        if _same_kind(X.kind, buffer):
            memcpy(buffer + i * n_features, row, n_features * sizeof(floating))
        else:
            for j in range(n_features):
                buffer[i * n_features + j] = _value(row, X.kind, j, buffer[0])
    return buffer


cdef void _csr_forward(const Rows *X, const Batch *batch, const floating *W, intp_t n,
                       floating *out) noexcept nogil:
    """out (m, n) := X's batch rows (CSR) times W (units[0], n)."""
    cdef intp_t i, p, j, r
    cdef const floating *data = <const floating *> X.csr_data
    cdef const floating *w_row
    cdef floating v
    cdef floating *o
    for i in range(batch.m):
        r = batch.rows[i] if batch.rows != NULL else batch.start + i
        o = out + i * n
        for j in range(n):
            o[j] = 0
        for p in range(X.csr_indptr[r], X.csr_indptr[r + 1]):
            v = data[p]
            w_row = W + X.csr_indices[p] * n
            for j in range(n):
                o[j] += v * w_row[j]


cdef void _csr_transpose_product(const Rows *X, const Batch *batch, floating alpha,
                                 const floating *G, intp_t n, floating beta,
                                 floating *C, intp_t n_features) noexcept nogil:
    """C (units[0], n) := beta C + alpha X_batch^T G, G (m, n), X's batch rows CSR."""
    cdef intp_t i, p, j, r
    cdef const floating *data = <const floating *> X.csr_data
    cdef const floating *g
    cdef floating *c_row
    cdef floating v
    if beta == 0:
        memset(C, 0, n_features * n * sizeof(floating))
    elif beta != 1:
        for p in range(n_features * n):
            C[p] *= beta
    for i in range(batch.m):
        r = batch.rows[i] if batch.rows != NULL else batch.start + i
        g = G + i * n
        for p in range(X.csr_indptr[r], X.csr_indptr[r + 1]):
            v = alpha * data[p]
            c_row = C + X.csr_indices[p] * n
            for j in range(n):
                c_row[j] += v * g[j]


cdef struct Columns:              # a CSR batch's entries, column by column (CSC)
    intp_t *start                 # (units[0] + 1,) column j's entries: start[j] .. [j + 1]
    intp_t *row                   # (capacity,) the entry's row in the batch, ascending
    intp_t *source                # (capacity,) the entry's index in X's CSR data
    intp_t capacity


cdef int _columns_of(const Rows *X, const Batch *batch, intp_t n_features,
                     Columns *out) noexcept nogil:
    """The batch's CSR entries sorted by column, stable in the batch's row order (a
    counting sort); -1 if they are more than capacity."""
    cdef intp_t i, p, r, j, nnz = 0
    for i in range(batch.m):
        r = batch.rows[i] if batch.rows != NULL else batch.start + i
        nnz += X.csr_indptr[r + 1] - X.csr_indptr[r]
    if nnz > out.capacity:
        return -1
    memset(out.start, 0, (n_features + 1) * sizeof(intp_t))
    for i in range(batch.m):
        r = batch.rows[i] if batch.rows != NULL else batch.start + i
        for p in range(X.csr_indptr[r], X.csr_indptr[r + 1]):
            out.start[X.csr_indices[p] + 1] += 1
    for j in range(n_features):
        out.start[j + 1] += out.start[j]
    for i in range(batch.m):
        r = batch.rows[i] if batch.rows != NULL else batch.start + i
        for p in range(X.csr_indptr[r], X.csr_indptr[r + 1]):
            j = X.csr_indices[p]
            out.row[out.start[j]] = i
            out.source[out.start[j]] = p
            out.start[j] += 1
    for j in range(n_features, 0, -1):     # the sort moved each start to the next's
        out.start[j] = out.start[j - 1]
    out.start[0] = 0
    return 0


cdef void _csr_first_layer_update(
    const Shape *shape, const Rows *X, const Columns *columns,
    const floating *delta,        # IN (m, units[1]) delta_0
    floating *W,                  # IN/OUT (units[0], units[1]) W_0
    floating *state,              # IN/OUT W_0's optimiser state (stride P to Adam's v)
    intp_t P, double l2, const UpdateRule *rule, double step_size,
    floating *row_gradient,       # scratch (units[1],)
    double *squares_out,          # as apply_update's
) noexcept nogil:
    """W_0's optimiser update from CSR X, row by row of W_0: each row's gradient
    (sum over the batch's entries in that column of value * delta row, in the batch's
    row order: the bits of the scatter into a zeroed gradient) is formed in `row_gradient`
    and applied at once, so no (units[0], units[1]) gradient is written or read."""
    cdef intp_t j, q, k, n = shape.units[1]
    cdef const floating *data = <const floating *> X.csr_data
    cdef const floating *d
    cdef floating v
    for j in range(shape.units[0]):
        for k in range(n):
            row_gradient[k] = 0
        for q in range(columns.start[j], columns.start[j + 1]):
            v = data[columns.source[q]]
            d = delta + columns.row[q] * n
            for k in range(n):
                row_gradient[k] += v * d[k]
        apply_update(W + j * n, row_gradient, state + j * n, n, P, l2, rule, step_size,
                     squares_out)


# The step's three parts #######################################################

cdef inline floating *_activation_buffer(const Shape *shape, floating *work, intp_t m,
                                         intp_t layer) noexcept nogil:
    """Layer `layer`'s output (m, units[layer]), 1 <= layer <= L (L: the output)."""
    cdef intp_t i, offset = m * shape.units[0]
    for i in range(1, layer):
        offset += m * shape.units[i]
    return work + offset


cdef inline floating *_delta_buffer(const Shape *shape, floating *work, intp_t m,
                                    int which) noexcept nogil:
    return (_activation_buffer(shape, work, m, shape.n_layers)
            + m * shape.units[shape.n_layers] + which * m * _widest_hidden(shape))


cdef inline floating *_gradient_buffer(const Shape *shape, floating *work,
                                       intp_t m) noexcept nogil:
    return _delta_buffer(shape, work, m, 2)


cdef void _first_product(const Shape *shape, const Rows *X, const Batch *batch,
                         const floating *x, const floating *W, floating *out) noexcept nogil:
    """out (m, units[1]) := X_batch W_0, the one product of the forward pass that reads X."""
    cdef intp_t n = shape.units[1], d = shape.units[0]
    if X.dense == NULL:
        _csr_forward(X, batch, W, n, out)
    else:
        _gemm(RowMajor, NoTrans, NoTrans, <blas_int> batch.m, <blas_int> n, <blas_int> d,
              <floating> 1, x, <blas_int> batch.ldx, W, <blas_int> n, <floating> 0, out,
              <blas_int> n)


cdef void _first_update(const Shape *shape, const Rows *X, const Batch *batch,
                        const floating *x, floating alpha, const floating *G,
                        floating beta, floating *C) noexcept nogil:
    """C (units[0], units[1]) := beta C + alpha X_batch^T G: W_0's gradient or update."""
    cdef intp_t n = shape.units[1], d = shape.units[0]
    if X.dense == NULL:
        _csr_transpose_product(X, batch, alpha, G, n, beta, C, d)
    else:
        _gemm(RowMajor, Trans, NoTrans, <blas_int> d, <blas_int> n, <blas_int> batch.m,
              alpha, x, <blas_int> batch.ldx, G, <blas_int> n, beta, C, <blas_int> n)


cdef const floating *_forward(const Shape *shape, const Rows *X, Batch *batch,
                              floating **coefs, floating **intercepts,
                              floating *work) noexcept nogil:
    """Every hidden layer's activations, and the output layer's A W (no bias yet).
    Returns the batch's dense rows (gathered or in place; NULL for CSR X), which the
    backward pass reads again."""
    cdef intp_t i, m = batch.m
    cdef floating *out
    cdef floating *previous
    cdef const floating *x = NULL
    if X.dense != NULL:
        x = _dense_batch(X, batch, shape.units[0], work)
    out = _activation_buffer(shape, work, m, 1)
    _first_product(shape, X, batch, x, coefs[0], out)
    for i in range(1, shape.n_layers):
        bias_activation(out, intercepts[i - 1], m, shape.units[i], shape.activation)
        previous = out
        out = _activation_buffer(shape, work, m, i + 1)
        _gemm(RowMajor, NoTrans, NoTrans, <blas_int> m, <blas_int> shape.units[i + 1],
              <blas_int> shape.units[i], <floating> 1, previous, <blas_int> shape.units[i],
              coefs[i], <blas_int> shape.units[i + 1], <floating> 0, out,
              <blas_int> shape.units[i + 1])
    return x


cdef void _output_activation(const Shape *shape, floating *Z, const floating *bias,
                             intp_t m) noexcept nogil:
    """Z (m, K) := out(Z + bias)."""
    cdef intp_t i, K = shape.units[shape.n_layers]
    if shape.output == OUT_SOFTMAX:
        bias_softmax(Z, bias, m, K)
    elif shape.output == OUT_LOGISTIC:
        bias_activation(Z, bias, m, K, LOGISTIC)
    elif shape.output == OUT_IDENTITY:
        bias_activation(Z, bias, m, K, IDENTITY)
    else:
        for i in range(m * K):
            Z[i] = exp(Z[i] + bias[i % K])


cdef inline double _xlogy(double x, double y) noexcept nogil:
    return 0 if x == 0 else x * log(y)


cdef double _output_delta(
    const Shape *shape, floating *Z,     # IN A W, OUT dL/dZ = w scale (out(Z + b) - y)
    const floating *bias, const Targets *targets, const floating *sample_weight,
    const intp_t *rows, intp_t start, intp_t m, floating scale,
    floating *bias_grad,                 # OUT (K,) sum over rows of dL/dZ
) noexcept nogil:
    """The output layer's loss sum (weighted, unscaled) and its delta, in place."""
    cdef intp_t i, k, r, K = shape.units[shape.n_layers]
    cdef const floating *values = <const floating *> targets.values
    cdef const floating *y
    cdef floating *z
    cdef double p, t, clipped, w, row_loss, total = 0
    cdef double eps = FLT_EPSILON if floating is float else DBL_EPSILON
    cdef floating g
    if shape.output == OUT_SOFTMAX:
        if rows == NULL:
            return softmax_cross_entropy(
                Z, bias, targets.codes + start,
                sample_weight + start if sample_weight != NULL else NULL, NULL, m, K,
                scale, bias_grad)
        return softmax_cross_entropy(Z, bias, targets.codes, sample_weight, rows, m, K,
                                     scale, bias_grad)
    # The outputs as predict gives them, then loss and delta from them.
    _output_activation(shape, Z, bias, m)
    for k in range(K):
        bias_grad[k] = 0
    for i in range(m):
        r = rows[i] if rows != NULL else start + i
        w = sample_weight[r] if sample_weight != NULL else 1
        y = values + r * K
        z = Z + i * K
        row_loss = 0
        for k in range(K):
            p = z[k]
            t = y[k]
            if shape.output == OUT_LOGISTIC:
                clipped = min(max(p, eps), 1 - eps)
                row_loss -= _xlogy(t, clipped) + _xlogy(1 - t, 1 - clipped)
            elif shape.output == OUT_IDENTITY:
                row_loss += (t - p) * (t - p) / (2 * K)
            else:
                row_loss += _xlogy(t, t / p) - t + p
            g = <floating> ((p - t) * w) * scale
            z[k] = g
            bias_grad[k] += g
        total += w * row_loss
    return total


cdef inline intp_t _coef_offset(const Shape *shape, intp_t layer) noexcept nogil:
    """Where W_layer starts in the flat layout W_0 | b_0 | W_1 | b_1 | ..."""
    cdef intp_t i, offset = 0
    for i in range(layer):
        offset += (shape.units[i] + 1) * shape.units[i + 1]
    return offset


cdef void _backward(
    const Shape *shape, const Rows *X, const Batch *batch, const floating *x,
    floating **coefs, floating **intercepts,
    floating *work,
    floating *bias_scratch,     # IN the output layer's bias gradient; then scratch
                                #    (widest layer,)
    floating *gradient,         # OUT (P,) the gradient, flat; or NULL: plain SGD, fused
    bint accumulate,            # add to `gradient` instead of overwriting it
    floating eta, floating decay,   # plain SGD: W := decay W - eta grad
    floating **first_delta=NULL,    # OUT, if not NULL: delta_0 (m, units[1]), whose
                                    #     product with X (W_0's gradient) is left out
) noexcept nogil:
    """From the output delta (in the output buffer), every layer's gradient, or plain
    SGD's update, from the last layer to the first."""
    cdef intp_t i, j, m = batch.m, L = shape.n_layers
    cdef intp_t fan_in, fan_out
    cdef floating *delta = _activation_buffer(shape, work, m, L)
    cdef floating *spare = _delta_buffer(shape, work, m, 0)
    cdef floating *other
    cdef floating *A
    cdef floating *W_grad
    cdef floating *b_grad
    cdef floating beta = 1 if accumulate else 0
    for i in range(L - 1, -1, -1):
        fan_in = shape.units[i]
        fan_out = shape.units[i + 1]
        # this layer's bias gradient is in bias_scratch (the caller's, or below)
        if i > 0:
            # dA_i = delta W_i^T, with W_i as it was at the forward pass
            _gemm(RowMajor, NoTrans, Trans, <blas_int> m, <blas_int> fan_in,
                  <blas_int> fan_out, <floating> 1, delta, <blas_int> fan_out, coefs[i],
                  <blas_int> fan_out, <floating> 0, spare, <blas_int> fan_in)
        A = _activation_buffer(shape, work, m, i)     # the layer's input (i > 0)
        if gradient == NULL:
            if i == 0:
                _first_update(shape, X, batch, x, -eta, delta, decay, coefs[0])
            else:
                _gemm(RowMajor, Trans, NoTrans, <blas_int> fan_in, <blas_int> fan_out,
                      <blas_int> m, -eta, A, <blas_int> fan_in, delta, <blas_int> fan_out,
                      decay, coefs[i], <blas_int> fan_out)
            for j in range(fan_out):
                intercepts[i][j] -= eta * bias_scratch[j]
        else:
            W_grad = gradient + _coef_offset(shape, i)
            b_grad = W_grad + fan_in * fan_out
            if i == 0 and first_delta != NULL:
                first_delta[0] = delta
            elif i == 0:
                _first_update(shape, X, batch, x, <floating> 1, delta, beta, W_grad)
            else:
                _gemm(RowMajor, Trans, NoTrans, <blas_int> fan_in, <blas_int> fan_out,
                      <blas_int> m, <floating> 1, A, <blas_int> fan_in, delta,
                      <blas_int> fan_out, beta, W_grad, <blas_int> fan_out)
            for j in range(fan_out):
                if accumulate:
                    b_grad[j] += bias_scratch[j]
                else:
                    b_grad[j] = bias_scratch[j]
        if i > 0:
            # delta_{i-1} = dA_i act'(A_i), the next layer down's bias gradient with it
            activation_backward(spare, A, m, fan_in, shape.activation, bias_scratch)
            other = delta if i < L - 1 else _delta_buffer(shape, work, m, 1)
            delta = spare
            spare = other


# Public calls #################################################################

cdef double _weight_sum(const floating *sample_weight, const intp_t *rows, intp_t start,
                        intp_t m) noexcept nogil:
    cdef intp_t i
    cdef double total = 0
    if sample_weight == NULL:
        return m
    for i in range(m):
        total += sample_weight[rows[i] if rows != NULL else start + i]
    return total


cdef double _penalty(const Shape *shape, floating **coefs) noexcept nogil:
    """sum over layers of ||W_i||^2."""
    cdef intp_t i
    cdef double total = 0
    for i in range(shape.n_layers):
        total += sum_of_squares(coefs[i], shape.units[i] * shape.units[i + 1])
    return total


cdef inline UpdateRule _update_rule(const TrainOptions *options) noexcept nogil:
    return make_rule(options.solver == ADAM, options.momentum, options.nesterov,
                     options.beta_1, options.beta_2, options.epsilon)


cdef double _batch_step(
    const Shape *shape, const Rows *X, const Targets *targets,
    const floating *sample_weight, Batch *batch,
    floating **coefs, floating **intercepts, const TrainOptions *options,
    floating *optimizer_state, intp_t *n_updates, floating *work,
    double *squares,              # IN/OUT sum of every W_i^2, or < 0: not known
    Columns *columns=NULL,        # scratch for CSR X: W_0 updated row by row, or NULL
) noexcept nogil:
    """layers_step on a Batch. `squares` carries the L2
    penalty's sum from one step to the next: the update sums it as it goes."""
    cdef intp_t i, L = shape.n_layers, m = batch.m
    cdef intp_t P = layers_parameter_count(shape)
    cdef floating *output = _activation_buffer(shape, work, m, L)
    cdef floating *gradient = _gradient_buffer(shape, work, m)
    cdef floating *bias_scratch = gradient + P
    cdef const floating *x = NULL
    cdef double loss, l2, step_size
    cdef double weight_sum = _weight_sum(sample_weight, batch.rows, batch.start, m)
    cdef bint fused = _plain_sgd(options)
    cdef UpdateRule rule
    if weight_sum <= 0:          # a batch with no weight carries no gradient
        return 0
    x = _forward(shape, X, batch, coefs, intercepts, work)
    loss = _output_delta(shape, output, intercepts[L - 1], targets, sample_weight,
                         batch.rows, batch.start, m, <floating> (1 / weight_sum),
                         bias_scratch)
    loss = loss / weight_sum
    if options.alpha > 0:
        if squares[0] < 0:
            squares[0] = _penalty(shape, coefs)
        loss += 0.5 * options.alpha * squares[0] / weight_sum
    if not isfinite(loss):
        return loss
    l2 = options.alpha / weight_sum
    squares[0] = -1              # the weights change
    if fused:
        _backward(shape, X, batch, x, coefs, intercepts, work, bias_scratch, NULL, False,
                  <floating> options.learning_rate,
                  <floating> (1 - options.learning_rate * l2))
        n_updates[0] += 1
        return loss
    # CSR X: W_0's gradient is formed row by row inside its update (no pass of its own)
    cdef floating *first_delta = NULL
    cdef bint by_columns = (columns != NULL and X.dense == NULL
                            and _columns_of(X, batch, shape.units[0], columns) == 0)
    _backward(shape, X, batch, x, coefs, intercepts, work, bias_scratch, gradient, False,
              0, 1, &first_delta if by_columns else NULL)
    n_updates[0] += 1
    rule = _update_rule(options)
    step_size = step_size_at(&rule, options.learning_rate, n_updates[0])
    cdef intp_t offset = 0, n_weights
    cdef double new_squares = 0
    for i in range(L):
        n_weights = shape.units[i] * shape.units[i + 1]
        if i == 0 and first_delta != NULL:
            # bias_scratch is free now (the bias gradients are in `gradient`)
            _csr_first_layer_update(shape, X, columns, first_delta, coefs[0],
                                    optimizer_state, P, l2, &rule, step_size,
                                    bias_scratch,
                                    &new_squares if options.alpha > 0 else NULL)
        else:
            apply_update(coefs[i], gradient + offset, optimizer_state + offset, n_weights,
                         P, l2, &rule, step_size,
                         &new_squares if options.alpha > 0 else NULL)
        offset += n_weights
        apply_update(intercepts[i], gradient + offset, optimizer_state + offset,
                     shape.units[i + 1], P, 0, &rule, step_size)
        offset += shape.units[i + 1]
    if options.alpha > 0:
        squares[0] = new_squares
    return loss


cdef inline Batch _batch(const Shape *shape, const intp_t *rows, intp_t start,
                         intp_t m) noexcept nogil:
    cdef Batch batch
    batch.rows = rows
    batch.start = start
    batch.m = m
    batch.ldx = shape.units[0]
    return batch


cdef double layers_step(
    const Shape *shape, const Rows *X, const Targets *targets,
    const floating *sample_weight, const intp_t *rows, intp_t start, intp_t m,
    floating **coefs, floating **intercepts, const TrainOptions *options,
    floating *optimizer_state, intp_t *n_updates, floating *work,
) noexcept nogil:
    cdef Batch batch = _batch(shape, rows, start, m)
    cdef double loss, squares = -1
    if m == 0:
        return 0
    cdef int blas_had = blas_threads_hold(_layer_threads(shape, X, m))
    loss = _batch_step(shape, X, targets, sample_weight, &batch, coefs, intercepts,
                       options, optimizer_state, n_updates, work, &squares)
    blas_threads_release(blas_had)
    return loss


cdef inline int _layer_threads(const Shape *shape, const Rows *X,
                               intp_t m) noexcept nogil:
    """The BLAS's threads for batches of m rows: as the largest gemm pays for. The first
    layer's products are no gemm on CSR X."""
    cdef intp_t i, best = 0, k = 1, n = 1
    for i in range(0 if X.dense != NULL else 1, shape.n_layers):
        if shape.units[i] * shape.units[i + 1] > best:
            best = shape.units[i] * shape.units[i + 1]
            k = shape.units[i]
            n = shape.units[i + 1]
    return blas_threads_for(m, k, n)


cdef int layers_train_epoch(
    const Shape *shape, const Rows *X, const Targets *targets,
    const floating *sample_weight, const intp_t *order, intp_t n_rows, intp_t batch_size,
    floating **coefs, floating **intercepts, const TrainOptions *options,
    floating *optimizer_state, intp_t *n_updates, floating *work,
    EpochStats *stats_out,
) except -1 nogil:
    cdef intp_t start, m, work_since_check = 0
    cdef intp_t per_row = layers_parameter_count(shape) - shape.units[shape.n_layers]
    cdef Batch batch
    cdef double loss, squares = -1    # the L2 penalty's sum, carried between steps
    stats_out.loss_sum = 0
    stats_out.n_rows_done = 0
    stats_out.n_batches_done = 0
    stats_out.diverged = False
    layers_check(shape)
    if batch_size < 1:
        with gil:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if n_rows < 0 or (order == NULL and n_rows > X.n_samples):
        with gil:
            raise ValueError(f"{n_rows} rows to visit in X of {X.n_samples}")
    if n_rows == 0:
        return 0
    batch_size = min(batch_size, n_rows)
    # CSR X with an optimiser other than plain SGD: the batches' entries by column,
    # for W_0's update row by row; without the memory, the scatter into a gradient.
    cdef Columns columns
    cdef Columns *by_columns = NULL
    memset(&columns, 0, sizeof(Columns))
    if X.dense == NULL and not _plain_sgd(options):
        columns.capacity = _largest_batch_nnz(X, order, n_rows, batch_size)
        columns.start = <intp_t *> malloc((shape.units[0] + 1) * sizeof(intp_t))
        columns.row = <intp_t *> malloc(max(columns.capacity, 1) * sizeof(intp_t))
        columns.source = <intp_t *> malloc(max(columns.capacity, 1) * sizeof(intp_t))
        if columns.start != NULL and columns.row != NULL and columns.source != NULL:
            by_columns = &columns
    cdef int blas_had = blas_threads_hold(_layer_threads(shape, X, batch_size))
    try:
        start = 0
        while start < n_rows:
            m = min(batch_size, n_rows - start)
            batch = _batch(shape, order + start if order != NULL else NULL,
                           start if order == NULL else 0, m)
            loss = _batch_step(shape, X, targets, sample_weight, &batch, coefs,
                               intercepts, options, optimizer_state, n_updates, work,
                               &squares, by_columns)
            if not isfinite(loss):
                stats_out.diverged = True
                return 0
            stats_out.loss_sum += loss * m
            stats_out.n_rows_done += m
            stats_out.n_batches_done += 1
            work_since_check += m * per_row
            if work_since_check >= CHECK_WORK:
                work_since_check = 0
                with gil:
                    PyErr_CheckSignals()
            start += m
    finally:
        blas_threads_release(blas_had)
        free(columns.start)
        free(columns.row)
        free(columns.source)
    return 0


cdef intp_t _largest_batch_nnz(const Rows *X, const intp_t *order, intp_t n_rows,
                               intp_t batch_size) noexcept nogil:
    """The most CSR entries in any batch of the epoch."""
    cdef intp_t i, r, batch_nnz = 0, largest = 0
    for i in range(n_rows):
        if i % batch_size == 0:
            batch_nnz = 0
        r = order[i] if order != NULL else i
        batch_nnz += X.csr_indptr[r + 1] - X.csr_indptr[r]
        largest = max(largest, batch_nnz)
    return largest


cdef double layers_loss_gradient(
    const Shape *shape, const Rows *X, const Targets *targets,
    const floating *sample_weight, floating **coefs, floating **intercepts,
    double alpha, floating *gradient, floating *work, intp_t chunk_rows,
) noexcept nogil:
    cdef intp_t i, j, start, m, L = shape.n_layers, n_samples = X.n_samples
    cdef intp_t P = layers_parameter_count(shape), offset, n_weights
    cdef double weight_sum = _weight_sum(sample_weight, NULL, 0, n_samples)
    cdef double loss = 0
    cdef const floating *x
    cdef floating *W_grad
    cdef Batch batch
    if n_samples == 0 or weight_sum <= 0:
        memset(gradient, 0, P * sizeof(floating))
        return 0
    chunk_rows = max(1, min(chunk_rows, n_samples))
    cdef floating *bias_scratch
    # The BLAS on as many threads as its products pay for (_blas.pyx, "Threads").
    cdef int blas_had = blas_threads_hold(_layer_threads(shape, X, chunk_rows))
    start = 0
    while start < n_samples:
        m = min(chunk_rows, n_samples - start)
        batch = _batch(shape, NULL, start, m)
        x = _forward(shape, X, &batch, coefs, intercepts, work)
        bias_scratch = _gradient_buffer(shape, work, m) + P
        loss += _output_delta(shape, _activation_buffer(shape, work, m, L),
                              intercepts[L - 1], targets, sample_weight, NULL, start, m,
                              <floating> (1 / weight_sum), bias_scratch)
        _backward(shape, X, &batch, x, coefs, intercepts, work, bias_scratch, gradient,
                  start > 0, 0, 1)
        start += m
    blas_threads_release(blas_had)
    # scikit-learn's L2: loss + alpha/(2S) sum ||W||^2, gradient + alpha/S W
    loss = loss / weight_sum + 0.5 * alpha * _penalty(shape, coefs) / weight_sum
    offset = 0
    for i in range(L):
        n_weights = shape.units[i] * shape.units[i + 1]
        W_grad = gradient + offset
        for j in range(n_weights):
            W_grad[j] += <floating> (alpha / weight_sum) * coefs[i][j]
        offset += n_weights + shape.units[i + 1]
    return loss


cdef int layers_predict(
    const Shape *shape, const Rows *X, floating **coefs, floating **intercepts,
    floating *out, intp_t ld_out, floating *work, intp_t chunk_rows,
) noexcept nogil:
    cdef intp_t start, m, L = shape.n_layers, K = shape.units[shape.n_layers]
    cdef intp_t i, n_samples = X.n_samples
    cdef const floating *x
    cdef floating *output
    cdef Batch batch
    chunk_rows = max(1, min(chunk_rows, n_samples))
    cdef int blas_had = blas_threads_hold(_layer_threads(shape, X, chunk_rows))
    start = 0
    while start < n_samples:
        m = min(chunk_rows, n_samples - start)
        batch = _batch(shape, NULL, start, m)
        x = _forward(shape, X, &batch, coefs, intercepts, work)
        output = _activation_buffer(shape, work, m, L)
        _output_activation(shape, output, intercepts[L - 1], m)
        for i in range(m):
            memcpy(out + (start + i) * ld_out, output + i * K, K * sizeof(floating))
        start += m
    blas_threads_release(blas_had)
    return 0


# Python entry points, used by the estimators ###################################

import numpy as np

INPUT_KINDS = {np.dtype(np.uint8): INPUT_UINT8, np.dtype(np.float32): INPUT_FLOAT32,
               np.dtype(np.float64): INPUT_FLOAT64}


cdef inline const void *_address(object array):
    return <const void *> <size_t> array.__array_interface__["data"][0]


cdef class Network:
    """A network's shape and its parameters, checked once, for the calls below.

    coefs, intercepts: lists of L writable C-ordered arrays of one float dtype,
    shapes (units[i], units[i+1]) and (units[i+1],), updated in place by training.
    activation: a kernels.Activation code; output: an Output code.
    X, for every call: a dense 2-D array of uint8, float32 or float64 whose rows are
    contiguous, or a tuple (data, indices, indptr) of CSR arrays (data of the
    parameters' dtype, indices and indptr of numpy.intp). y: int32 class codes for
    OUT_SOFTMAX, else a C-ordered (n_samples, units[L]) array of the parameters' dtype.
    """
    cdef intp_t[::1] units
    cdef Shape shape
    cdef list arrays              # keeps the parameters alive
    cdef void **coef_pointers
    cdef void **intercept_pointers
    cdef readonly object dtype
    cdef bint single              # float32 parameters, else float64

    def __cinit__(self, list coefs, list intercepts, int activation, int output):
        cdef intp_t i, L = len(coefs)
        if L < 1 or len(intercepts) != L:
            raise ValueError("coefs and intercepts must be lists of the same length >= 1")
        self.dtype = np.asarray(coefs[0]).dtype
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"parameters must be float32 or float64, got {self.dtype}")
        self.single = self.dtype == np.float32
        self.units = _units(coefs)
        self.shape.n_layers = L
        self.shape.units = &self.units[0]
        self.shape.activation = <Activation> activation
        self.shape.output = <Output> output
        layers_check(&self.shape)
        self.arrays = list(coefs) + list(intercepts)
        self.coef_pointers = <void **> malloc(L * sizeof(void *))
        self.intercept_pointers = <void **> malloc(L * sizeof(void *))
        if self.coef_pointers == NULL or self.intercept_pointers == NULL:
            raise MemoryError()
        for i in range(L):
            self.coef_pointers[i] = _pointer(coefs[i], self.dtype,
                                             (self.units[i], self.units[i + 1]))
            self.intercept_pointers[i] = _pointer(intercepts[i], self.dtype,
                                                  (self.units[i + 1],))

    def __dealloc__(self):
        free(self.coef_pointers)
        free(self.intercept_pointers)

    @property
    def n_parameters(self):
        """P, the length of the flat gradient."""
        return layers_parameter_count(&self.shape)

    def state_size(self, dict options):
        """Length of the optimiser state for these options (see TrainOptions)."""
        cdef TrainOptions train_options = _options_from_dict(options)
        return layers_state_size(&self.shape, &train_options)

    def workspace_size(self, intp_t batch_rows):
        """Length of `work` for batches or chunks of batch_rows rows."""
        return layers_workspace_size(&self.shape, batch_rows)

    def train_epoch(self, X, y, sample_weight, order, intp_t batch_size, dict options,
                    state, work, double[::1] stats_out not None):
        """One epoch, without the GIL; see layers_train_epoch. order: the rows of X to
        visit (a subset may leave rows out), or None: all, in order. stats_out (5,):
        as network._train_epoch's (loss_sum, rows, batches, diverged, n_updates)."""
        cdef Rows rows
        cdef Targets targets
        cdef TrainOptions train_options = _options_from_dict(options)
        cdef EpochStats stats
        cdef const void *weights = NULL
        cdef const intp_t *order_pointer = NULL
        cdef void *state_pointer = NULL
        cdef void *work_pointer
        cdef intp_t n_updates, needed, n_rows
        if stats_out.shape[0] < 5:
            raise ValueError(f"stats_out must hold 5 values, got {stats_out.shape[0]}")
        if not all(array.flags.writeable for array in self.arrays):
            raise ValueError("training updates the parameters in place: they must be "
                             "writable")
        self._rows(&rows, X)
        self._targets(&targets, y, rows.n_samples)
        weights = self._vector(sample_weight, rows.n_samples, "sample_weight")
        n_rows = rows.n_samples
        if order is not None:
            order = np.asarray(order)
            if order.dtype != np.intp or order.ndim != 1 \
                    or not order.flags.c_contiguous:
                raise ValueError("order must be a contiguous 1-D intp array")
            n_rows = order.shape[0]
            if n_rows and (order.min() < 0 or order.max() >= rows.n_samples):
                raise ValueError("order has entries that are not rows of X")
            order_pointer = <const intp_t *> _address(order)
        needed = layers_state_size(&self.shape, &train_options)
        if needed > 0:
            state_pointer = <void *> self._vector(state, -needed, "optimizer state")
        work_pointer = <void *> self._vector(
            work, -layers_workspace_size(&self.shape, max(1, min(batch_size,
                                                                 rows.n_samples))),
            "work")
        n_updates = <intp_t> stats_out[4]
        try:
            with nogil:
                if self.single:
                    layers_train_epoch(&self.shape, &rows, &targets, <const float *> weights,
                                       order_pointer, n_rows, batch_size,
                                       <float **> self.coef_pointers,
                                       <float **> self.intercept_pointers, &train_options,
                                       <float *> state_pointer, &n_updates,
                                       <float *> work_pointer, &stats)
                else:
                    layers_train_epoch(&self.shape, &rows, &targets, <const double *> weights,
                                       order_pointer, n_rows, batch_size,
                                       <double **> self.coef_pointers,
                                       <double **> self.intercept_pointers, &train_options,
                                       <double *> state_pointer, &n_updates,
                                       <double *> work_pointer, &stats)
        finally:
            stats_out[0] = stats.loss_sum
            stats_out[1] = stats.n_rows_done
            stats_out[2] = stats.n_batches_done
            stats_out[3] = stats.diverged
            stats_out[4] = n_updates

    def loss_gradient(self, X, y, sample_weight, double alpha, gradient,
                      intp_t chunk_rows=4096):
        """The loss of all of X (scikit-learn's, with its L2 term) and its gradient
        into `gradient` (P,), laid out W_0 | b_0 | W_1 | b_1 | ..., without the GIL."""
        cdef Rows rows
        cdef Targets targets
        cdef const void *weights
        cdef void *gradient_pointer
        cdef double loss
        self._rows(&rows, X)
        self._targets(&targets, y, rows.n_samples)
        weights = self._vector(sample_weight, rows.n_samples, "sample_weight")
        gradient_pointer = <void *> self._vector(
            gradient, layers_parameter_count(&self.shape), "gradient")
        chunk_rows = max(1, min(chunk_rows, rows.n_samples))
        work = np.empty(layers_workspace_size(&self.shape, chunk_rows), dtype=self.dtype)
        cdef void *work_pointer = <void *> _address(work)
        with nogil:
            if self.single:
                loss = layers_loss_gradient(
                    &self.shape, &rows, &targets, <const float *> weights,
                    <float **> self.coef_pointers, <float **> self.intercept_pointers,
                    alpha, <float *> gradient_pointer, <float *> work_pointer, chunk_rows)
            else:
                loss = layers_loss_gradient(
                    &self.shape, &rows, &targets, <const double *> weights,
                    <double **> self.coef_pointers, <double **> self.intercept_pointers,
                    alpha, <double *> gradient_pointer, <double *> work_pointer,
                    chunk_rows)
        return loss

    def predict(self, X, intp_t chunk_rows=1024):
        """The output layer's activations, (n_samples, units[L]), without the GIL."""
        cdef Rows rows
        self._rows(&rows, X)
        cdef intp_t K = self.units[self.shape.n_layers]
        out = np.empty((rows.n_samples, K), dtype=self.dtype)
        if rows.n_samples == 0:
            return out
        chunk_rows = max(1, min(chunk_rows, rows.n_samples))
        work = np.empty(layers_workspace_size(&self.shape, chunk_rows), dtype=self.dtype)
        cdef void *out_pointer = <void *> _address(out)
        cdef void *work_pointer = <void *> _address(work)
        with nogil:
            if self.single:
                layers_predict(&self.shape, &rows, <float **> self.coef_pointers,
                               <float **> self.intercept_pointers, <float *> out_pointer,
                               K, <float *> work_pointer, chunk_rows)
            else:
                layers_predict(&self.shape, &rows, <double **> self.coef_pointers,
                               <double **> self.intercept_pointers, <double *> out_pointer,
                               K, <double *> work_pointer, chunk_rows)
        return out

    cdef int _rows(self, Rows *rows, object X) except -1:
        cdef intp_t n_features = self.units[0]
        memset(rows, 0, sizeof(Rows))
        if isinstance(X, tuple):
            data, indices, indptr = X
            n = len(indptr) - 1
            for name, array, dtype in (("data", data, self.dtype), ("indices", indices, np.intp),
                                       ("indptr", indptr, np.intp)):
                if not isinstance(array, np.ndarray) or array.dtype != dtype \
                        or array.ndim != 1 or not array.flags.c_contiguous:
                    raise ValueError(f"CSR {name} must be a contiguous 1-D {np.dtype(dtype)} "
                                     "array")
            if n < 0 or indptr[0] != 0 or indptr[n] != len(data) \
                    or len(indices) != len(data) or np.any(np.diff(indptr) < 0):
                raise ValueError("CSR indptr does not describe data and indices")
            if len(indices) and (indices.min() < 0 or indices.max() >= n_features):
                raise ValueError(f"CSR column indices must be in [0, {n_features})")
            rows.n_samples = n
            rows.csr_data = _address(data)
            rows.csr_indices = <const intp_t *> _address(indices)
            rows.csr_indptr = <const intp_t *> _address(indptr)
            return 0
        if not isinstance(X, np.ndarray) or X.ndim != 2 or X.dtype not in INPUT_KINDS:
            raise ValueError("X must be a 2-D uint8, float32 or float64 array")
        if X.shape[1] != n_features:
            raise ValueError(f"X has {X.shape[1]} features, the network {n_features}")
        if X.shape[0] > 1 and X.strides[0] < X.shape[1] * X.itemsize \
                or X.shape[1] > 1 and X.strides[1] != X.itemsize:
            raise ValueError("X needs contiguous rows that do not overlap")
        rows.n_samples = X.shape[0]
        rows.dense = <const char *> _address(X)
        rows.row_bytes = X.strides[0] if X.shape[0] > 1 else X.shape[1] * X.itemsize
        rows.kind = INPUT_KINDS[X.dtype]
        if rows.n_samples > 0 and rows.dense == NULL:
            raise ValueError("X has no data")
        return 0

    cdef int _targets(self, Targets *targets, object y, intp_t n_samples) except -1:
        cdef intp_t K = self.units[self.shape.n_layers]
        targets.codes = NULL
        targets.values = NULL
        if self.shape.output == OUT_SOFTMAX:
            if not isinstance(y, np.ndarray) or y.dtype != np.int32 \
                    or y.shape != (n_samples,) or not y.flags.c_contiguous:
                raise ValueError(f"y must be {n_samples} int32 class codes")
            if n_samples and (y.min() < 0 or y.max() >= K):
                raise ValueError(f"y has class codes outside [0, {K})")
            targets.codes = <const label_t *> _address(y)
        else:
            if not isinstance(y, np.ndarray) or y.dtype != self.dtype \
                    or y.shape != (n_samples, K) or not y.flags.c_contiguous:
                raise ValueError(f"y must be a C-ordered ({n_samples}, {K}) "
                                 f"{self.dtype} array")
            targets.values = _address(y)
        return 0

    cdef const void *_vector(self, object array, intp_t length, str name) except? NULL:
        """array's data, checked: None (NULL), or 1-D contiguous of the parameters'
        dtype with `length` entries (at least -length when length < 0)."""
        if array is None:
            if length < 0:
                raise ValueError(f"{name} must hold at least {-length} values")
            return NULL
        if not isinstance(array, np.ndarray) or array.dtype != self.dtype \
                or array.ndim != 1 or not array.flags.c_contiguous \
                or (length >= 0 and array.shape[0] != length) \
                or (length < 0 and array.shape[0] < -length):
            raise ValueError(f"{name} must be a contiguous 1-D {self.dtype} array of "
                             f"{'at least ' if length < 0 else ''}{abs(length)} values")
        if array.shape[0] == 0:
            return NULL
        return _address(array)


cdef intp_t[::1] _units(list coefs):
    units = np.empty(len(coefs) + 1, dtype=np.intp)
    for i, coef in enumerate(coefs):
        coef = np.asarray(coef)
        if coef.ndim != 2 or (i > 0 and coef.shape[0] != units[i]):
            raise ValueError(f"coefs[{i}] has shape {coef.shape}, which does not follow "
                             f"the layer before it ({units[i]} units)")
        units[i] = coef.shape[0]
        units[i + 1] = coef.shape[1]
    return units


cdef void *_pointer(object array, object dtype, tuple shape) except NULL:
    if (not isinstance(array, np.ndarray) or array.dtype != dtype or array.shape != shape
            or not array.flags.c_contiguous):
        raise ValueError(f"parameters must be C-ordered {dtype} arrays of shape "
                         f"{shape}, got {getattr(array, 'dtype', type(array))} "
                         f"{getattr(array, 'shape', '')}")
    return <void *> _address(array)


cdef TrainOptions _options_from_dict(dict options) except *:
    cdef TrainOptions result = sgd_options(IDENTITY, options["learning_rate"],
                                           options["alpha"])
    result.solver = options.get("solver", SGD)
    result.momentum = options.get("momentum", 0.0)
    result.nesterov = options.get("nesterov", False)
    result.beta_1 = options.get("beta_1", 0.9)
    result.beta_2 = options.get("beta_2", 0.999)
    result.epsilon = options.get("epsilon", 1e-8)
    if result.solver != SGD and result.solver != ADAM:
        raise ValueError(f"unknown solver code {<int> result.solver}")
    if not (result.learning_rate > 0 and result.alpha >= 0 and result.momentum >= 0
            and result.momentum <= 1 and 0 <= result.beta_1 < 1
            and 0 <= result.beta_2 < 1 and result.epsilon > 0):
        raise ValueError("options out of range: need learning_rate > 0, alpha >= 0, "
                         "0 <= momentum <= 1, 0 <= beta_1, beta_2 < 1, epsilon > 0")
    return result
