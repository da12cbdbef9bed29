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
# d) Every solver: plain SGD updates inside the products (W := decay W - eta X^T dZ);
#    momentum, Nesterov and Adam compute a chunk's gradient into the part's scratch
#    and apply their update (apply_update, shared with layers.pyx) to that chunk
#    of the parameters and of the optimiser's state, laid out as network's.
# e) The pacer: a loop of steps (an epoch) times its steps on its threads and on
#    one, now and then, and keeps one thread while the threads do not pay (a busy
#    machine: a helper that another process pushed off its core holds up every
#    region it took part in). Which thread count runs a step never changes its bits.

from libc.math cimport isfinite, pow, sqrt
from libc.stdlib cimport free, malloc

from ._typedefs cimport intp_t, label_t
from ._blas cimport (active_level, _dot_rows, _gemm_skipzero, _gemm_skipzero_rows,
                    _gemm_t_skipzero, _gemm_t_skipzero_rows)
from .kernels cimport (Activation, activation_backward, bias_activation, bias_softmax,
                       softmax_cross_entropy, sum_of_squares)

cdef extern from "_update.h" nogil:
    ctypedef double (*update_f32_fn)(float *, const float *, float *, float *, intp_t,
                                     float, float, float, float, float, int,
                                     int) noexcept nogil
    ctypedef double (*update_f64_fn)(double *, const double *, double *, double *,
                                     intp_t, double, double, double, double, double, int,
                                     int) noexcept nogil
    update_f32_fn mlp_cy_update_f32_at(int level)
    update_f64_fn mlp_cy_update_f64_at(int level)

cdef extern from "_workers.h" nogil:
    ctypedef void (*mlp_cy_part_fn)(void *ctx, int part, int n_parts) noexcept nogil
    void mlp_cy_workers_run(int n_parts, mlp_cy_part_fn fn, void *ctx)
    intp_t mlp_cy_claim(intp_t *next_chunk)
    double mlp_cy_seconds()
    int mlp_cy_helper_stall_us
    enum:
        MLP_CY_MAX_WORKERS

# The kernels' vector width in bytes. Chunks: multiples of the kernels' 4-row (and
# 4-pixel) blocks, large enough that a claim (an atomic add) costs nothing next to
# them, small enough to even out the threads' shares.
cdef intp_t VECTOR_BYTES = 64
cdef intp_t ROW_CHUNK = 8
cdef intp_t PIXEL_CHUNK = 32
cdef intp_t VECTORS_PER_CHUNK = 4


# The pacer ###################################################################
#
# A loop of like steps on up to n_threads threads times them in windows of
# PACER_WINDOW steps (seconds per unit of work: rows), on its threads and, to
# compare, on one. It keeps the threads only while they are at least
# 1 / PACER_MARGIN times as fast as one thread, and measures the other choice again
# after `hold` windows: 1 after a change, doubling each time the choice stands, up
# to PACER_MAX_HOLD; at once if the chosen one gets PACER_DRIFT times slower (load
# came or went). On a quiet machine the one-thread probes cost at most one window in
# PACER_MAX_HOLD + 1 at that speed: about 1% of an epoch. The first step after a
# change is not timed (it wakes the helpers, or finds the cache cold).
cdef int PACER_WINDOW = 8
cdef int PACER_MAX_HOLD = 64
cdef double PACER_MARGIN = 0.9
cdef double PACER_DRIFT = 1.5
# Steps run on one thread and on several, by every pacer of this process since
# _pacer_reset (tests, benchmarks; not exact when two calls pace at once).
cdef intp_t pacer_steps_total[2]
# What the last loop's pacer had learnt, and for which shape: the next loop of the
# same shape (the next epoch) starts from it instead of probing afresh, which cost
# 14% of an epoch's steps on one thread (h=256, b=64, 20,000 rows, quiet). Two
# calls at once may overwrite each other's: then one starts from the other's.
cdef Pacer pacer_memory
cdef intp_t pacer_memory_key[5]


cdef void pacer_init(Pacer *p, int n_threads) noexcept nogil:
    p.n_threads = max(n_threads, 1)
    p.current = p.n_threads
    p.probing = False
    p.untimed = 1
    p.steps = 0
    p.seconds = 0
    p.units = 0
    p.rate[0] = 0
    p.rate[1] = 0
    p.chosen_rate = 0
    p.hold = 1
    p.held = 0
    p.steps_run[0] = 0
    p.steps_run[1] = 0


cdef void pacer_resume(Pacer *p, int n_threads, intp_t n_features, intp_t n_hidden,
                       intp_t n_classes, intp_t itemsize) noexcept nogil:
    """pacer_init, or where the last loop had these threads and this shape, its
    choice and rates (the window restarts, its first step untimed)."""
    if (pacer_memory_key[0] == n_threads and pacer_memory_key[1] == n_features
            and pacer_memory_key[2] == n_hidden and pacer_memory_key[3] == n_classes
            and pacer_memory_key[4] == itemsize and pacer_memory.n_threads == n_threads):
        p[0] = pacer_memory
        p.untimed = 1
        p.steps = 0
        p.seconds = 0
        p.units = 0
        p.steps_run[0] = 0
        p.steps_run[1] = 0
        return
    pacer_init(p, n_threads)


cdef void pacer_remember(const Pacer *p, intp_t n_features, intp_t n_hidden,
                         intp_t n_classes, intp_t itemsize) noexcept nogil:
    global pacer_memory
    pacer_memory = p[0]
    if p.probing:
        # A loop that ended inside a probe: the next one starts from the choice that
        # the probe was measuring against, not from the probe (a busy machine's
        # slow window can start one at any step).
        pacer_memory.current = p.n_threads if p.current == 1 else 1
        pacer_memory.probing = False
    pacer_memory_key[0] = p.n_threads
    pacer_memory_key[1] = n_features
    pacer_memory_key[2] = n_hidden
    pacer_memory_key[3] = n_classes
    pacer_memory_key[4] = itemsize


cdef double pacer_clock() noexcept nogil:
    """Seconds on a monotonic clock."""
    return mlp_cy_seconds()


cdef inline void _pacer_switch(Pacer *p, int threads, bint probing) noexcept nogil:
    if threads != p.current:
        p.untimed = 1
    p.current = threads
    p.probing = probing


cdef void pacer_record(Pacer *p, double seconds, double units) noexcept nogil:
    """A step of `units` of work took `seconds` on pacer_threads(p) threads."""
    cdef int many = p.current > 1, best
    cdef double rate
    p.steps_run[many] += 1
    pacer_steps_total[many] += 1
    if p.n_threads <= 1 or units <= 0:
        return
    if p.untimed > 0:
        p.untimed -= 1
        return
    p.seconds += seconds
    p.units += units
    p.steps += 1
    if p.steps < PACER_WINDOW:
        return
    rate = p.seconds / p.units
    p.rate[many] = rate
    p.steps = 0
    p.seconds = 0
    p.units = 0
    if p.rate[1 - many] == 0:                 # the other has never run: try it
        _pacer_switch(p, 1 if many else p.n_threads, True)
        return
    if p.probing:                             # both measured now: choose
        best = 1 if p.rate[1] <= PACER_MARGIN * p.rate[0] else 0
        if best == many:
            p.hold = 1                        # the probe won: a new choice
        else:
            p.hold = min(2 * p.hold, PACER_MAX_HOLD)
        p.held = 0
        p.chosen_rate = p.rate[best]
        _pacer_switch(p, p.n_threads if best else 1, False)
        return
    p.held += 1
    if p.held >= p.hold or rate > PACER_DRIFT * p.chosen_rate:
        _pacer_switch(p, p.n_threads if not many else 1, True)
    else:
        p.chosen_rate = min(p.chosen_rate, rate)


# The helper threads, for layers.pyx ##########################################

cdef void workers_run(int n_parts, part_fn fn, void *ctx) noexcept nogil:
    mlp_cy_workers_run(min(n_parts, MLP_CY_MAX_WORKERS + 1), <mlp_cy_part_fn> fn, ctx)


cdef intp_t workers_claim(intp_t *next_chunk) noexcept nogil:
    return mlp_cy_claim(next_chunk)


# The optimisers' update #######################################################

cdef UpdateRule make_rule(bint adam, double momentum, bint nesterov, double beta_1,
                          double beta_2, double epsilon) noexcept nogil:
    cdef UpdateRule rule
    rule.adam = adam
    rule.momentum = momentum
    rule.nesterov = nesterov
    rule.beta_1 = beta_1
    rule.beta_2 = beta_2
    rule.epsilon = epsilon
    return rule


cdef double step_size_at(const UpdateRule *rule, double learning_rate,
                         intp_t n_updates) noexcept nogil:
    if not rule.adam:
        return learning_rate
    return (learning_rate * sqrt(1 - pow(rule.beta_2, <double> n_updates))
            / (1 - pow(rule.beta_1, <double> n_updates)))


cdef void apply_update(
    floating *param,              # IN/OUT (n,)
    const floating *grad,         # IN     (n,) gradient without the L2 term
    floating *state,              # IN/OUT (n,) velocity, or (2n,) Adam moments m | v
    intp_t n, intp_t state_stride,   # state_stride: the offset from m to v (Adam)
    double l2,                    # alpha / S for weights, 0 for biases
    const UpdateRule *rule,
    double step_size,             # eta, or Adam's bias-corrected rate
    double *squares_out=NULL,     # OUT, if not NULL: += sum of the updated param^2
) noexcept nogil:
    # The loops are _update.h's, built for each instruction-set level (a square root
    # and a division per parameter for Adam: the widest vectors pay). The L2 penalty
    # of the next step needs sum param^2: summed there, while each value is in a
    # register, it costs no pass of its own over the weights.
    cdef int code = 2 if rule.adam else (1 if rule.nesterov else 0)
    cdef double a = rule.beta_1 if rule.adam else rule.momentum
    cdef double squares
    if floating is float:
        squares = mlp_cy_update_f32_at(active_level())(
            param, grad, state, state + state_stride, n, <float> l2, <float> a,
            <float> rule.beta_2, <float> step_size, <float> rule.epsilon, code,
            squares_out != NULL)
    else:
        squares = mlp_cy_update_f64_at(active_level())(
            param, grad, state, state + state_stride, n, l2, a, rule.beta_2, step_size,
            rule.epsilon, code, squares_out != NULL)
    if squares_out != NULL:
        squares_out[0] += squares


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
    const UpdateRule *rule        # NULL: plain SGD, fused into the products
    void *state                   # the optimiser's state, W1 | b1 | W2 | b2 (| again, Adam)
    double l2                     # alpha / S
    double step_size              # eta, or Adam's bias-corrected rate


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
    # A part's gradient chunk: PIXEL_CHUNK rows of W1's, or the (K, columns) block of
    # W2's and its transpose.
    pw.scratch_stride = max(PIXEL_CHUNK * n_hidden,
                            2 * n_classes * VECTORS_PER_CHUNK * (VECTOR_BYTES // itemsize))
    pw.grad_scratch = malloc(pw.n_threads * pw.scratch_stride * itemsize)
    pw.itemsize = itemsize
    pacer_resume(&pw.pacer, pw.n_threads, n_features, n_hidden, n_classes, itemsize)
    if (pw.indices == NULL or pw.X_rows == NULL or pw.W2_t == NULL or pw.bias_grads == NULL
            or pw.sums == NULL or pw.grad_scratch == NULL):
        parallel_work_free(pw)
        return -1
    for j in range(n_hidden):
        for k in range(n_classes):
            (<floating *> pw.W2_t)[k * n_hidden + j] = W2[j * n_classes + k]
    return 0


cdef void parallel_work_free(ParallelWork *pw) noexcept nogil:
    if pw.pacer.steps_run[0] + pw.pacer.steps_run[1] > 0:
        pacer_remember(&pw.pacer, pw.n_features, pw.n_hidden, pw.n_classes, pw.itemsize)
    free(pw.indices)
    free(pw.X_rows)
    free(pw.W2_t)
    free(pw.bias_grads)
    free(pw.sums)
    free(pw.grad_scratch)
    pw.grad_scratch = NULL
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
    mlp_cy_workers_run(pw.pacer.current, _gather_part, &c)
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
                        floating *scratch) noexcept nogil:
    """Chunk `chunk` of the update: W1's rows of PIXEL_CHUNK pixels, then W2's (and
    b1's) columns of VECTORS_PER_CHUNK vectors of hidden units. scratch: the part's
    (pw.scratch_stride,) for a gradient chunk (the solvers other than plain SGD)."""
    cdef ParallelWork *pw = c.pw
    cdef intp_t d = pw.n_features, h = pw.n_hidden, K = pw.n_classes
    cdef intp_t n_params = (d + 1) * h + (h + 1) * K
    cdef intp_t n_pixel_chunks = (d + PIXEL_CHUNK - 1) // PIXEL_CHUNK
    cdef intp_t columns = VECTORS_PER_CHUNK * (VECTOR_BYTES // sizeof(floating))
    cdef intp_t p0, p1, j0, j1, j, k, width
    cdef floating eta = <floating> c.eta, decay = <floating> c.decay
    cdef floating *W1 = <floating *> c.W1
    cdef floating *W2 = <floating *> c.W2
    cdef floating *W2_t = <floating *> pw.W2_t
    cdef floating *b1 = <floating *> c.b1
    cdef floating *state = <floating *> c.state      # W1 | b1 | W2 | b2
    cdef floating *grad_t                            # (K, width) dZ2^T A1[:, j0:j1]
    cdef const floating *b1_grad = (<const floating *> pw.bias_grads
                                    + pw.max_row_chunks * (h + K))    # the sums
    if chunk < n_pixel_chunks:
        p0 = chunk * PIXEL_CHUNK
        p1 = min(d, p0 + PIXEL_CHUNK)
        if c.rule == NULL:
            # W1[p0:p1] := decay W1[p0:p1] - eta X[:, p0:p1]^T dZ1
            if c.X_rows != NULL:
                _gemm_t_skipzero_rows(c.m, h, p1 - p0, -eta, <const floating **> c.X_rows,
                                      p0, <const floating *> c.hidden_grad, h, decay,
                                      W1 + p0 * h, h, indices)
            else:
                _gemm_t_skipzero(c.m, h, p1 - p0, -eta, <const floating *> c.X_batch + p0,
                                 c.ldx, <const floating *> c.hidden_grad, h, decay,
                                 W1 + p0 * h, h, indices)
            return
        # scratch (p1 - p0, h) := X[:, p0:p1]^T dZ1 ; then the solver's update
        if c.X_rows != NULL:
            _gemm_t_skipzero_rows(c.m, h, p1 - p0, <floating> 1,
                                  <const floating **> c.X_rows, p0,
                                  <const floating *> c.hidden_grad, h, <floating> 0,
                                  scratch, h, indices)
        else:
            _gemm_t_skipzero(c.m, h, p1 - p0, <floating> 1,
                             <const floating *> c.X_batch + p0, c.ldx,
                             <const floating *> c.hidden_grad, h, <floating> 0,
                             scratch, h, indices)
        apply_update(W1 + p0 * h, scratch, state + p0 * h, (p1 - p0) * h, n_params,
                     c.l2, c.rule, c.step_size)
        return
    j0 = (chunk - n_pixel_chunks) * columns
    j1 = min(h, j0 + columns)
    width = j1 - j0
    if c.rule == NULL:
        # W2_t[:, j0:j1] := decay W2_t[:, j0:j1] - eta dZ2^T A1[:, j0:j1], then into W2
        _gemm_t_skipzero(c.m, width, K, -eta, <const floating *> c.output, K,
                         <const floating *> c.hidden + j0, h, decay, W2_t + j0, h,
                         indices)
        for j in range(j0, j1):
            for k in range(K):
                W2[j * K + k] = W2_t[k * h + j]
            b1[j] -= eta * b1_grad[j]
        return
    # grad_t (K, width) := dZ2^T A1[:, j0:j1] ; scratch (width, K) its transpose, the
    # gradient of W2[j0:j1], laid out as W2 and its state
    grad_t = scratch + width * K
    _gemm_t_skipzero(c.m, width, K, <floating> 1, <const floating *> c.output, K,
                     <const floating *> c.hidden + j0, h, <floating> 0, grad_t, width,
                     indices)
    for j in range(width):
        for k in range(K):
            scratch[j * K + k] = grad_t[k * width + j]
    apply_update(W2 + j0 * K, scratch, state + d * h + h + j0 * K, width * K, n_params,
                 c.l2, c.rule, c.step_size)
    apply_update(b1 + j0, b1_grad + j0, state + d * h + j0, width, n_params, 0, c.rule,
                 c.step_size)
    for j in range(j0, j1):
        for k in range(K):
            W2_t[k * h + j] = W2[j * K + k]


cdef void _update_part(void *ctx, int part, int n_parts) noexcept nogil:
    cdef StepContext *c = <StepContext *> ctx
    cdef intp_t *indices = c.pw.indices + part * c.pw.index_stride
    cdef intp_t chunk
    while True:
        chunk = mlp_cy_claim(&c.next_chunk)
        if chunk >= c.n_chunks:
            return
        if c.is_double:
            _update_chunk(c, chunk, indices,
                          <double *> c.pw.grad_scratch + part * c.pw.scratch_stride)
        else:
            _update_chunk(c, chunk, indices,
                          <float *> c.pw.grad_scratch + part * c.pw.scratch_stride)


# The step ####################################################################

cdef double parallel_sgd_step(
    ParallelWork *pw, intp_t m,
    const floating *X_batch, intp_t ldx, const floating **X_rows,
    const label_t *y, const floating *sample_weight, const intp_t *rows,
    double weight_sum,
    floating *W1, floating *b1, floating *W2, floating *b2,
    Activation activation, double learning_rate, double alpha,
    const UpdateRule *rule, floating *optimizer_state,
    intp_t *n_updates,
    floating *work,
) noexcept nogil:
    cdef intp_t d = pw.n_features, h = pw.n_hidden, K = pw.n_classes
    cdef intp_t i, j, k
    cdef int n_parts = pw.pacer.current
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
    c.rule = rule
    c.state = optimizer_state
    c.l2 = alpha / weight_sum
    c.step_size = learning_rate

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
    n_updates[0] += 1
    if rule != NULL:                     # as layers_step, from the updated count
        c.step_size = step_size_at(rule, learning_rate, n_updates[0])
    c.next_chunk = 0
    c.n_chunks = (d + PIXEL_CHUNK - 1) // PIXEL_CHUNK + (h + columns - 1) // columns
    mlp_cy_workers_run(n_parts, _update_part, &c)
    if rule == NULL:
        for k in range(K):
            b2[k] -= <floating> learning_rate * grad_sum[h + k]
    else:
        apply_update(b2, grad_sum + h, optimizer_state + d * h + h + h * K, K,
                     (d + 1) * h + (h + 1) * K, 0, rule, c.step_size)
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


# Python shims, for the tests and benchmarks only ##############################

def _pacer_steps():
    """(steps on one thread, steps on several) run by pacers since _pacer_reset()."""
    return int(pacer_steps_total[0]), int(pacer_steps_total[1])


def _pacer_reset():
    """Zero the step counts, and forget what the last loop's pacer learnt."""
    pacer_steps_total[0] = 0
    pacer_steps_total[1] = 0
    pacer_memory_key[0] = 0


def _pacer_simulate(int n_threads, cost, intp_t n_steps):
    """Run a pacer over n_steps steps of one unit each, where a step on t threads
    takes cost(t, step) seconds; returns the thread count of each step."""
    cdef Pacer p
    cdef intp_t step
    pacer_init(&p, n_threads)
    used = []
    for step in range(n_steps):
        threads = p.current
        used.append(threads)
        pacer_record(&p, float(cost(threads, step)), 1.0)
    return used


def _set_helper_stall(int microseconds):
    """Make each helper thread sleep this long before each part it runs (0: never),
    as if another process held its core; returns the old value. For tests only."""
    global mlp_cy_helper_stall_us
    if not 0 <= microseconds <= 1000000:
        raise ValueError(f"microseconds must be in [0, 1000000], got {microseconds!r}")
    old = mlp_cy_helper_stall_us
    mlp_cy_helper_stall_us = microseconds
    return old


def _pacer_memory():
    """What the next loop of the remembered shape starts from: ((threads, features,
    hidden, classes, itemsize), threads it runs on, windows held) (tests)."""
    return (tuple(int(k) for k in pacer_memory_key[:5]), pacer_memory.current,
            pacer_memory.hold)
