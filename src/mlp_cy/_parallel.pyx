# Design:
# a) Where the BLAS runs on 2 or more threads (threadpoolctl's limit), plain SGD
#    runs each batch on as many threads of mlp_cy's own (_workers.h), and calls no
#    BLAS at all: a multi-threaded gemm between the zero-skipping products wakes
#    the BLAS's workers, which then spin on the cores the products need
#    (benchmarks/RESULTS.md). Three parallel regions per batch:
#      gather   each thread converts its rows of the batch, if X is not of the
#               parameters' type (else the kernels read X's rows where they are);
#      rows     the forward pass, the loss and the backward pass to dZ1, by rows,
#               with partial sums of the loss and the bias gradients;
#      update   W1 by rows (pixels), W2 and b1 by columns (hidden units).
# b) W2 is also kept transposed, W2_t (K, h), so that the three products with the
#    narrow output layer run along the hidden units: A1 W2 as dot products
#    (_dot_rows), dZ2 W2^T and W2's update as the zero-skipping kernels with K as
#    their inner size. Both copies are updated together.
# c) Each region's work is cut into chunks of rows (8), of pixels (32) or of hidden
#    units (4 vectors), and the threads claim chunks until none is left, so a thread
#    slowed down by another process does less of it. Partial sums are kept per chunk
#    and added in chunk order: the result does not depend on the number of threads
#    or on which thread ran which chunk, bit for bit.

from libc.math cimport isfinite
from libc.stdlib cimport free, malloc

from ._typedefs cimport intp_t, label_t
from ._blas cimport (_dot_rows, _gemm_skipzero, _gemm_skipzero_rows, _gemm_t_skipzero,
                    _gemm_t_skipzero_rows)
from .kernels cimport (Activation, activation_backward, bias_activation, bias_softmax,
                       softmax_cross_entropy, sum_of_squares)

cdef extern from "_workers.h" nogil:
    ctypedef void (*mlp_cy_part_fn)(void *ctx, int part, int n_parts) noexcept nogil
    void mlp_cy_workers_run(int n_parts, mlp_cy_part_fn fn, void *ctx)
    intp_t mlp_cy_claim(intp_t *next_chunk)
    enum:
        MLP_CY_MAX_WORKERS

# The kernels' vector width in bytes. Chunks: multiples of the kernels' 4-row (and
# 4-pixel) blocks, large enough that a claim (an atomic add) costs nothing next to
# them, small enough to even out the threads' shares.
cdef intp_t VECTOR_BYTES = 64
cdef intp_t ROW_CHUNK = 8
cdef intp_t PIXEL_CHUNK = 32
cdef intp_t VECTORS_PER_CHUNK = 4


cdef struct StepContext:          # one region's arguments, shared by its parts
    ParallelWork *pw
    intp_t next_chunk             # the first chunk no part has claimed yet
    intp_t n_chunks
    bint is_double                # the parameters' type
    intp_t m
    const BatchSource *source     # gather
    void *buffer                  # gather: (m, n_features) for copied rows
    const void *X_batch           # rows, update: (m, n_features), row stride ldx
    intp_t ldx
    const void **X_rows           # or NULL X_batch and these rows
    const label_t *y
    const void *sample_weight
    const intp_t *rows
    void *W1
    void *b1
    void *W2
    void *b2
    void *hidden                  # (m, n_hidden)  A1
    void *hidden_grad             # (m, n_hidden)  dA1, then dZ1
    void *output                  # (m, n_classes) Z2, then dZ2
    Activation activation
    double scale                  # 1 / the batch's weight sum
    double eta
    double decay                  # 1 - eta alpha / S
    bint want_squares


cdef inline void _split(intp_t n_items, intp_t unit, int part, int n_parts,
                        intp_t *begin, intp_t *end) noexcept nogil:
    """Part `part` of n_parts of n_items, split at multiples of unit."""
    cdef intp_t units = (n_items + unit - 1) // unit
    begin[0] = min(units * part // n_parts * unit, n_items)
    end[0] = min(units * (part + 1) // n_parts * unit, n_items)


cdef int parallel_work_init(ParallelWork *pw, int n_threads, intp_t batch_size,
                            intp_t n_features, intp_t n_hidden, intp_t n_classes,
                            const floating *W2) noexcept nogil:
    cdef intp_t itemsize = sizeof(floating), j, k
    # More parts than threads would run one after the other: no more than that.
    pw.n_threads = min(n_threads, MLP_CY_MAX_WORKERS + 1)
    pw.n_features = n_features
    pw.n_hidden = n_hidden
    pw.n_classes = n_classes
    pw.index_stride = max(batch_size, max(n_features, n_classes))
    pw.max_row_chunks = (batch_size + ROW_CHUNK - 1) // ROW_CHUNK
    pw.indices = <intp_t *> malloc(pw.n_threads * pw.index_stride * sizeof(intp_t))
    pw.X_rows = <const void **> malloc(batch_size * sizeof(void *))
    pw.W2_t = malloc(n_classes * n_hidden * itemsize)
    pw.bias_grads = malloc((pw.max_row_chunks + 1) * (n_hidden + n_classes) * itemsize)
    pw.sums = <double *> malloc(2 * pw.max_row_chunks * sizeof(double))
    if (pw.indices == NULL or pw.X_rows == NULL or pw.W2_t == NULL or pw.bias_grads == NULL
            or pw.sums == NULL):
        parallel_work_free(pw)
        return -1
    for j in range(n_hidden):
        for k in range(n_classes):
            (<floating *> pw.W2_t)[k * n_hidden + j] = W2[j * n_classes + k]
    return 0


cdef void parallel_work_free(ParallelWork *pw) noexcept nogil:
    free(pw.indices)
    free(pw.X_rows)
    free(pw.W2_t)
    free(pw.bias_grads)
    free(pw.sums)
    pw.indices = NULL
    pw.X_rows = NULL
    pw.W2_t = NULL
    pw.bias_grads = NULL
    pw.sums = NULL


# Gather ######################################################################

cdef void _copy_row(const char *x, InputKind kind, floating *out, intp_t n) noexcept nogil:
    """out := x (n,), converted from its kind."""
    cdef intp_t j
    if kind == INPUT_UINT8:
        for j in range(n):
            out[j] = <floating> (<const unsigned char *> x)[j]
    elif kind == INPUT_FLOAT32:
        for j in range(n):
            out[j] = <floating> (<const float *> x)[j]
    else:
        for j in range(n):
            out[j] = <floating> (<const double *> x)[j]


cdef void _gather_part_typed(StepContext *c, int part, int n_parts,
                             floating *buffer) noexcept nogil:
    cdef const BatchSource *source = c.source
    cdef intp_t d = c.pw.n_features, i, row, chunk
    while True:
        chunk = mlp_cy_claim(&c.next_chunk)
        if chunk >= c.n_chunks:
            return
        for i in range(chunk * ROW_CHUNK, min(c.m, (chunk + 1) * ROW_CHUNK)):
            row = source.rows[i] if source.rows != NULL else source.start + i
            _copy_row(source.X + row * source.row_bytes, source.kind, buffer + i * d, d)


cdef void _gather_part(void *ctx, int part, int n_parts) noexcept nogil:
    cdef StepContext *c = <StepContext *> ctx
    if c.is_double:
        _gather_part_typed(c, part, n_parts, <double *> c.buffer)
    else:
        _gather_part_typed(c, part, n_parts, <float *> c.buffer)


cdef void parallel_gather(ParallelWork *pw, const BatchSource *source, intp_t m,
                          floating *buffer, const floating **batch_out,
                          intp_t *ld_out, const floating ***rows_out) noexcept nogil:
    cdef StepContext c
    cdef intp_t i
    cdef InputKind own_kind = INPUT_FLOAT32
    if floating is double:
        own_kind = INPUT_FLOAT64
    rows_out[0] = NULL
    if source.kind == own_kind:
        if source.rows == NULL:           # consecutive rows: X itself
            batch_out[0] = <const floating *> (source.X + source.start * source.row_bytes)
            ld_out[0] = source.row_bytes // sizeof(floating)
        else:                             # a shuffled batch: where its rows are
            for i in range(m):
                pw.X_rows[i] = source.X + source.rows[i] * source.row_bytes
            batch_out[0] = NULL
            ld_out[0] = 0
            rows_out[0] = <const floating **> pw.X_rows
        return
    c.pw = pw
    c.is_double = floating is double
    c.m = m
    c.source = source
    c.buffer = buffer
    c.next_chunk = 0
    c.n_chunks = (m + ROW_CHUNK - 1) // ROW_CHUNK
    mlp_cy_workers_run(pw.n_threads, _gather_part, &c)
    batch_out[0] = buffer
    ld_out[0] = pw.n_features


# Rows: forward, loss, backward to dZ1 #########################################

cdef void _rows_chunk(StepContext *c, intp_t chunk, intp_t *indices,
                      floating *unused) noexcept nogil:
    """Rows chunk * ROW_CHUNK .. of the batch: forward, loss, backward to dZ1."""
    cdef ParallelWork *pw = c.pw
    cdef intp_t d = pw.n_features, h = pw.n_hidden, K = pw.n_classes
    cdef intp_t r0 = chunk * ROW_CHUNK, mp = min(c.m - r0, ROW_CHUNK), p0, p1
    cdef floating *b1_grad = <floating *> pw.bias_grads + chunk * (h + K)
    cdef floating *b2_grad = b1_grad + h
    cdef floating *hidden = <floating *> c.hidden + r0 * h
    cdef floating *hidden_grad = <floating *> c.hidden_grad + r0 * h
    cdef floating *output = <floating *> c.output + r0 * K
    cdef const floating *W2_t = <const floating *> pw.W2_t
    cdef const floating *weights = <const floating *> c.sample_weight
    cdef const label_t *labels = c.y
    cdef const intp_t *rows = NULL
    cdef double squares = 0
    if c.rows != NULL:
        rows = c.rows + r0
    else:
        labels += r0
        if weights != NULL:
            weights += r0
    # A1 = act(X W1 + b1) ; Z2 = A1 W2
    if c.X_rows != NULL:
        _gemm_skipzero_rows(mp, h, d, <const floating **> c.X_rows + r0,
                            <const floating *> c.W1, h, hidden, h, indices)
    else:
        _gemm_skipzero(mp, h, d, <const floating *> c.X_batch + r0 * c.ldx, c.ldx,
                       <const floating *> c.W1, h, hidden, h, indices)
    bias_activation(hidden, <const floating *> c.b1, mp, h, c.activation)
    _dot_rows(mp, h, K, hidden, h, W2_t, h, output, K)
    # dZ2 = w (softmax(Z2 + b2) - Y) / S ;  dA1 = dZ2 W2^T ;  dZ1 = dA1 act'(Z1)
    pw.sums[2 * chunk] = softmax_cross_entropy(
        output, <const floating *> c.b2, labels, weights, rows, mp, K,
        <floating> c.scale, b2_grad)
    _gemm_skipzero(mp, h, K, output, K, W2_t, h, hidden_grad, h, indices)
    activation_backward(hidden_grad, hidden, mp, h, c.activation, b1_grad)
    if c.want_squares:        # the L2 term: this chunk's share of W1's rows (and W2)
        _split(d, 1, chunk, c.n_chunks, &p0, &p1)
        squares = sum_of_squares(<const floating *> c.W1 + p0 * h, (p1 - p0) * h)
        if chunk == 0:
            squares += sum_of_squares(<const floating *> c.W2, h * K)
    pw.sums[2 * chunk + 1] = squares


cdef void _rows_part(void *ctx, int part, int n_parts) noexcept nogil:
    cdef StepContext *c = <StepContext *> ctx
    cdef intp_t *indices = c.pw.indices + part * c.pw.index_stride
    cdef intp_t chunk
    while True:
        chunk = mlp_cy_claim(&c.next_chunk)
        if chunk >= c.n_chunks:
            return
        if c.is_double:
            _rows_chunk(c, chunk, indices, <double *> NULL)
        else:
            _rows_chunk(c, chunk, indices, <float *> NULL)


# Update: W1 by pixels, W2 and b1 by hidden units ##############################

cdef void _update_chunk(StepContext *c, intp_t chunk, intp_t *indices,
                        floating *unused) noexcept nogil:
    """Chunk `chunk` of the update: W1's rows of PIXEL_CHUNK pixels, then W2's (and
    b1's) columns of VECTORS_PER_CHUNK vectors of hidden units."""
    cdef ParallelWork *pw = c.pw
    cdef intp_t d = pw.n_features, h = pw.n_hidden, K = pw.n_classes
    cdef intp_t n_pixel_chunks = (d + PIXEL_CHUNK - 1) // PIXEL_CHUNK
    cdef intp_t columns = VECTORS_PER_CHUNK * (VECTOR_BYTES // sizeof(floating))
    cdef intp_t p0, p1, j0, j1, j, k
    cdef floating eta = <floating> c.eta, decay = <floating> c.decay
    cdef floating *W1 = <floating *> c.W1
    cdef floating *W2 = <floating *> c.W2
    cdef floating *W2_t = <floating *> pw.W2_t
    cdef floating *b1 = <floating *> c.b1
    cdef const floating *b1_grad = (<const floating *> pw.bias_grads
                                    + pw.max_row_chunks * (h + K))    # the sums
    if chunk < n_pixel_chunks:
        # W1[p0:p1] := decay W1[p0:p1] - eta X[:, p0:p1]^T dZ1
        p0 = chunk * PIXEL_CHUNK
        p1 = min(d, p0 + PIXEL_CHUNK)
        if c.X_rows != NULL:
            _gemm_t_skipzero_rows(c.m, h, p1 - p0, -eta, <const floating **> c.X_rows,
                                  p0, <const floating *> c.hidden_grad, h, decay,
                                  W1 + p0 * h, h, indices)
        else:
            _gemm_t_skipzero(c.m, h, p1 - p0, -eta, <const floating *> c.X_batch + p0,
                             c.ldx, <const floating *> c.hidden_grad, h, decay,
                             W1 + p0 * h, h, indices)
        return
    # W2_t[:, j0:j1] := decay W2_t[:, j0:j1] - eta dZ2^T A1[:, j0:j1], then into W2
    j0 = (chunk - n_pixel_chunks) * columns
    j1 = min(h, j0 + columns)
    _gemm_t_skipzero(c.m, j1 - j0, K, -eta, <const floating *> c.output, K,
                     <const floating *> c.hidden + j0, h, decay, W2_t + j0, h, indices)
    for j in range(j0, j1):
        for k in range(K):
            W2[j * K + k] = W2_t[k * h + j]
        b1[j] -= eta * b1_grad[j]


cdef void _update_part(void *ctx, int part, int n_parts) noexcept nogil:
    cdef StepContext *c = <StepContext *> ctx
    cdef intp_t *indices = c.pw.indices + part * c.pw.index_stride
    cdef intp_t chunk
    while True:
        chunk = mlp_cy_claim(&c.next_chunk)
        if chunk >= c.n_chunks:
            return
        if c.is_double:
            _update_chunk(c, chunk, indices, <double *> NULL)
        else:
            _update_chunk(c, chunk, indices, <float *> NULL)


# The step ####################################################################

cdef double parallel_sgd_step(
    ParallelWork *pw, intp_t m,
    const floating *X_batch, intp_t ldx, const floating **X_rows,
    const label_t *y, const floating *sample_weight, const intp_t *rows,
    double weight_sum,
    floating *W1, floating *b1, floating *W2, floating *b2,
    Activation activation, double learning_rate, double alpha,
    intp_t *n_updates,
    floating *work,
) noexcept nogil:
    cdef intp_t d = pw.n_features, h = pw.n_hidden, K = pw.n_classes
    cdef intp_t i, j, k
    cdef int n_parts = pw.n_threads
    cdef double loss = 0, squares = 0
    cdef floating *partial
    cdef floating *grad_sum = <floating *> pw.bias_grads + pw.max_row_chunks * (h + K)
    cdef intp_t chunk, n_row_chunks = (m + ROW_CHUNK - 1) // ROW_CHUNK
    cdef intp_t columns = VECTORS_PER_CHUNK * (VECTOR_BYTES // sizeof(floating))
    cdef StepContext c

    c.pw = pw
    c.is_double = floating is double
    c.m = m
    c.X_batch = X_batch
    c.ldx = ldx
    c.X_rows = <const void **> X_rows
    c.y = y
    c.sample_weight = sample_weight
    c.rows = rows
    c.W1 = W1
    c.b1 = b1
    c.W2 = W2
    c.b2 = b2
    c.hidden = work + m * d
    c.hidden_grad = <floating *> c.hidden + m * h
    c.output = <floating *> c.hidden_grad + m * h
    c.activation = activation
    c.scale = 1 / weight_sum
    c.eta = learning_rate
    c.decay = 1 - learning_rate * alpha / weight_sum
    c.want_squares = alpha > 0

    c.next_chunk = 0
    c.n_chunks = n_row_chunks
    mlp_cy_workers_run(n_parts, _rows_part, &c)
    for chunk in range(n_row_chunks):
        loss += pw.sums[2 * chunk]
        squares += pw.sums[2 * chunk + 1]
    loss = loss / weight_sum + 0.5 * alpha * squares / weight_sum
    if not isfinite(loss):   # update nothing
        return loss
    for j in range(h + K):
        grad_sum[j] = 0
    for chunk in range(n_row_chunks):
        partial = <floating *> pw.bias_grads + chunk * (h + K)
        for j in range(h + K):
            grad_sum[j] += partial[j]
    c.next_chunk = 0
    c.n_chunks = (d + PIXEL_CHUNK - 1) // PIXEL_CHUNK + (h + columns - 1) // columns
    mlp_cy_workers_run(n_parts, _update_part, &c)
    for k in range(K):
        b2[k] -= <floating> learning_rate * grad_sum[h + k]
    n_updates[0] += 1
    return loss


# Prediction ##################################################################

cdef intp_t PREDICT_CHUNK = 64    # rows: the size at which the kernels beat gemm most


cdef struct PredictContext:       # shared by the parts of parallel_predict_proba
    intp_t next_chunk
    intp_t n_chunks
    intp_t n_rows, n_features, n_hidden, n_classes
    bint is_double
    const BatchSource *source
    const void *W1
    const void *b1
    const void *W2_t              # (n_classes, n_hidden)
    const void *b2
    Activation activation
    void *proba                   # (n_rows, n_classes), row stride ldp
    intp_t ldp
    intp_t *indices               # (n_parts, n_features)
    void *hidden                  # (n_parts, PREDICT_CHUNK, n_hidden)
    void *converted               # (n_parts, PREDICT_CHUNK, n_features), if X needs it


cdef void _predict_chunk(PredictContext *c, int part, intp_t chunk,
                         floating *unused) noexcept nogil:
    cdef const BatchSource *source = c.source
    cdef intp_t d = c.n_features, h = c.n_hidden, K = c.n_classes
    cdef intp_t r0 = chunk * PREDICT_CHUNK, mc = min(c.n_rows - r0, PREDICT_CHUNK), i
    cdef floating *hidden = <floating *> c.hidden + part * PREDICT_CHUNK * h
    cdef floating *converted = <floating *> c.converted + part * PREDICT_CHUNK * d
    cdef floating *proba = <floating *> c.proba + r0 * c.ldp
    cdef const floating *X_chunk
    cdef intp_t ldx
    cdef InputKind own_kind = INPUT_FLOAT32
    if floating is double:
        own_kind = INPUT_FLOAT64
    if source.kind == own_kind:
        X_chunk = <const floating *> (source.X + r0 * source.row_bytes)
        ldx = source.row_bytes // sizeof(floating)
    else:
        for i in range(mc):
            _copy_row(source.X + (r0 + i) * source.row_bytes, source.kind,
                      converted + i * d, d)
        X_chunk = converted
        ldx = d
    _gemm_skipzero(mc, h, d, X_chunk, ldx, <const floating *> c.W1, h, hidden, h,
                   c.indices + part * d)
    bias_activation(hidden, <const floating *> c.b1, mc, h, c.activation)
    _dot_rows(mc, h, K, hidden, h, <const floating *> c.W2_t, h, proba, c.ldp)
    for i in range(mc):
        bias_softmax(proba + i * c.ldp, <const floating *> c.b2, 1, K)


cdef void _predict_part(void *ctx, int part, int n_parts) noexcept nogil:
    cdef PredictContext *c = <PredictContext *> ctx
    cdef intp_t chunk
    while True:
        chunk = mlp_cy_claim(&c.next_chunk)
        if chunk >= c.n_chunks:
            return
        if c.is_double:
            _predict_chunk(c, part, chunk, <double *> NULL)
        else:
            _predict_chunk(c, part, chunk, <float *> NULL)


cdef int parallel_predict_proba(
    int n_threads, const BatchSource *source, intp_t n_rows, intp_t n_features,
    const floating *W1, const floating *b1, const floating *W2, const floating *b2,
    intp_t n_hidden, intp_t n_classes, Activation activation,
    floating *proba, intp_t ldp,
) noexcept nogil:
    cdef PredictContext c
    cdef intp_t j, k
    cdef floating *W2_t
    n_threads = min(n_threads, MLP_CY_MAX_WORKERS + 1)
    c.next_chunk = 0
    c.n_chunks = (n_rows + PREDICT_CHUNK - 1) // PREDICT_CHUNK
    c.n_rows = n_rows
    c.n_features = n_features
    c.n_hidden = n_hidden
    c.n_classes = n_classes
    c.is_double = floating is double
    c.source = source
    c.W1 = W1
    c.b1 = b1
    c.b2 = b2
    c.activation = activation
    c.proba = proba
    c.ldp = ldp
    W2_t = <floating *> malloc(n_classes * n_hidden * sizeof(floating))
    c.indices = <intp_t *> malloc(n_threads * n_features * sizeof(intp_t))
    c.hidden = malloc(n_threads * PREDICT_CHUNK * n_hidden * sizeof(floating))
    c.converted = malloc(n_threads * PREDICT_CHUNK * n_features * sizeof(floating))
    if W2_t == NULL or c.indices == NULL or c.hidden == NULL or c.converted == NULL:
        free(W2_t)
        free(c.indices)
        free(c.hidden)
        free(c.converted)
        return -1
    for j in range(n_hidden):
        for k in range(n_classes):
            W2_t[k * n_hidden + j] = W2[j * n_classes + k]
    c.W2_t = W2_t
    mlp_cy_workers_run(n_threads, _predict_part, &c)
    free(W2_t)
    free(c.indices)
    free(c.hidden)
    free(c.converted)
    return 0
