# The engine for any number of layers; see layers.pxd for the contract.
# Design:
# a) One step, written once (see "The plan"): a rows region (every layer forward,
#    the output delta, every delta back down, by chunks of rows) and a params region
#    (each weight chunk's gradient over the batch, written or applied, by chunks of
#    rows of the W_i), on as many of mlp_cy's threads as the plan gives, one
#    included. layers_step and layers_train_epoch run both with the optimiser's
#    update; layers_loss_gradient (L-BFGS) both with the gradient written;
#    layers_predict the rows region's forward pass alone.
# b) The first layer is the only one that reads X: dense rows are read in place or
#    gathered (converted) by each row chunk; CSR rows are read through their index
#    lists, exactly. Every later layer is a gemm. X W_0 and X^T delta_0 are gemms
#    too, or, where the plan says so (Plan.skip_first), the products that skip X's
#    zeros (_skipzero.h), which then read a shuffled batch's rows in place through a
#    list of row pointers. The plan has one more special case, for the seed's
#    network: the batch-1 sweep ("The batch-1 sweep").
# c) The 1/S of the batch's weight sum is folded into the output delta; plain SGD
#    updates W := (1 - eta alpha / S) W - eta A^T dZ in the product, after the rows
#    region has taken every dA = dZ W^T from W as it was; other optimisers get the
#    chunk's gradient in one flat buffer and apply_update (_parallel.pyx) to the
#    chunk.
# d) scikit-learn's formulas: the output delta is act(z) - y times the row's weight
#    for all four pairs of output and loss (canonical links); the losses are its
#    LOSS_FUNCTIONS, with its clipping of probabilities for the logistic output.
# e) CSR X: the batch's entries are sorted by column once (_columns_of), and each
#    row of W_0 gets its gradient from its column's entries, in the batch's row
#    order: W_0 (50,000 x 256 for a TF-IDF input) splits into chunks of rows like
#    any W_i, and no scatter into a zeroed gradient is needed. The update also sums
#    the new W^2 (apply_update's squares_out), the next step's L2 penalty, which
#    then needs no pass of its own.

from libc.float cimport DBL_EPSILON, FLT_EPSILON
from libc.math cimport NAN, exp, isfinite, log
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset
from cpython.exc cimport PyErr_CheckSignals

from ._typedefs cimport blas_int, intp_t, label_t
from ._blas cimport (_gemm, _gemm_skipzero, _gemm_skipzero_rows, _gemm_t_skipzero,
                    _gemm_t_skipzero_rows, _sample_sweep, blas_num_threads,
                    blas_threads_hold, blas_threads_release, chunk_threads, engine_threads,
                    skipzero_first_layer, skipzero_pays_for_chunk,
                    skipzero_sparse_enough, RowMajor, NoTrans,
                    Trans)
from ._parallel cimport (Pacer, UpdateRule, apply_update, make_rule, pacer_clock,
                        pacer_record, pacer_remember, pacer_resume,
                        step_size_at, workers_claim, workers_run)
from .kernels cimport (Activation, IDENTITY, LOGISTIC, TANH, RELU, activation_backward,
                       bias_activation, bias_softmax, softmax_cross_entropy,
                       sum_of_squares)
from .network cimport ADAM, SGD, EpochStats, Solver, TrainOptions

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


# The plan ####################################################################
#
# Every call below (a step, an epoch, L-BFGS's loss and gradient, predict) runs a
# batch in two parallel regions on mlp_cy's own threads (_workers.h), with the BLAS
# on one thread throughout:
#   rows    the batch's rows cut in one chunk per thread: each chunk's rows through
#           every layer forward, the output delta and every layer's delta back
#           down to delta_0, with the chunk's partial loss and bias gradients
#           (where Plan.first_columns says so, X W_0 comes before, in a region of
#           column chunks: "The first product by columns");
#   params  the W_i cut in chunks of rows, about two per thread in all: each chunk's
#           gradient (A_i[:, rows]^T delta_i over all m rows of the batch) written,
#           or applied by the optimiser (plain SGD fused into the product).
# Between them the partial sums are added in chunk order. _plan decides it all, once
# per call, from the shape, the data, the options and the thread count: the chunks,
# the threads, whether the first layer skips X's zeros, whether X W_0 is cut by
# columns, whether an epoch is the batch-1 sweep. Its thresholds are _blas.pyx's
# (engine_threads, skipzero_first_layer, chunk_threads) and first_columns_mode's
# rule below, each with the measurement that set it. The
# pacer (_parallel.pyx a) then runs each step's chunks on that many threads or on
# one, which never changes the chunks: the bits depend on the count the chunks are
# cut for (Plan.cut_threads: the plan's thread count, or the fixed one of
# mlp_cy.reproducible_threads), not on which thread ran what or on the load.
# Why so few chunks: every gemm packs its operands (here, a whole W_i for each row
# chunk, a whole delta_i for each parameter chunk). At scikit-learn's batch of 200,
# one thread, (512, 256, 128): chunks of 64 rows made the step 1.22x slower than one
# chunk, chunks of 16 Ki weights 1.34x and of 64 Ki 1.18x (benchmarks/RESULTS.md,
# "engine v2 on its own threads").
cdef intp_t ROW_CHUNKS_PER_THREAD = 1
cdef intp_t PARAM_CHUNKS_PER_THREAD = 2
# The first product by columns. A row chunk's X W_0 packs the whole of W_0 again,
# and the kernel reuses each packed block over fewer rows: on several threads the
# rows region's first product is instead cut by columns (every thread: all m rows,
# its columns of W_0; a region of its own, after the rows are gathered). That took
# 0.91x the time of the row cut for a whole step (a C prototype,
# benchmarks/layers_split.c: 784-512-256-128-10, b=200, Adam, 2 threads); cutting
# the later layers by columns too gained nothing more. The plan takes it for dense X
# without zero skipping, where a row chunk has fewer rows than W_0 has columns;
# _set_first_columns (benchmarks) forces it on or off.
cdef int first_columns_mode = 0          # 0 the plan's rule, 1 never, 2 always
cdef intp_t MIN_PARAM_CHUNK = 4096       # weights: below, a chunk costs more than it saves
cdef int MAX_THREADS = 64                # _workers.h's helpers + the caller


cdef struct Plan:                 # how a call cuts its batches
    bint sweep                    # an epoch of batches of 1 row as the batch-1 sweep
    int n_threads                 # the most parts a region runs on
    int cut_threads               # the thread count the chunks are cut for: n_threads,
                                  # or _blas's reproducible_threads
    intp_t param_target           # weights per chunk of the params region, about
    bint skip_first               # X W_0 and X^T delta_0 skip X's zeros (dense X)
    intp_t first_columns          # > 1: a step's X W_0 in this many column chunks
                                  # (its own region), else in the rows region
    intp_t index_stride           # the zero-skipping kernels' index list, per part


cdef Plan _plan(const Shape *shape, const Rows *X, const intp_t *order, intp_t start,
                intp_t m, intp_t itemsize, const TrainOptions *options,
                bint predict) noexcept nogil:
    """The plan for batches of up to m rows, the first of them order[0 .. m] (or
    start ..), with these options (an epoch) or none (a step, L-BFGS, predict: the
    forward pass alone, which has no first product by columns).
    Threads: the rule of _blas.pyx's "Threads" (the BLAS's limit, the usable cores,
    the step's work: m rows by P parameters). The first layer's products skip X's
    zeros where _blas.skipzero_first_layer says they pay at this shape, level and
    thread count, and the first batch is sparse enough (skipzero_sparse_enough). At 2
    threads (AVX-512, Fashion-MNIST float32, benchmarks/RESULTS.md "engine v2: the
    step written once") an epoch took 0.70x the time of gemm's at h=256, b=64 (the
    seed's), 0.89x at (256,) and 0.91x at (256, 128) with Adam at b=200, and as long
    at (512, 256, 128). Since, on several threads, the zero skipping is kept only
    where _blas.skipzero_pays_for_chunk says it still pays for a row chunk, and a
    step cuts X W_0 by columns where a row chunk is narrower than W_0 ("The first
    product by columns")."""
    cdef Plan plan
    cdef intp_t weights = layers_parameter_count(shape) - _bias_width(shape)
    cdef intp_t chunk_rows
    cdef bint columns_possible, columns_pay
    plan.sweep = _sweeps(shape, X, options, m)
    plan.n_threads = max(1, min(engine_threads(m, layers_parameter_count(shape), 1),
                                MAX_THREADS))
    plan.cut_threads = chunk_threads(plan.n_threads)
    if plan.cut_threads == 1:
        plan.param_target = weights          # one chunk per layer
    else:
        plan.param_target = max(MIN_PARAM_CHUNK,
                                weights // (PARAM_CHUNKS_PER_THREAD * plan.cut_threads))
    plan.skip_first = (
        X.dense != NULL and m > 0
        and skipzero_first_layer(m, shape.units[0], shape.units[1], itemsize,
                                 plan.cut_threads)
        and skipzero_sparse_enough(_nonzeros(X, order, start, m, shape.units[0]),
                                   m * shape.units[0]))
    plan.index_stride = max(m, shape.units[0])
    chunk_rows = m // _row_chunks(&plan, m) if m > 0 else 0
    if plan.skip_first and plan.cut_threads > 1 and not skipzero_pays_for_chunk(
            chunk_rows, shape.units[0], shape.units[1], itemsize):
        plan.skip_first = False
    columns_possible = (not predict and X.dense != NULL and plan.cut_threads > 1
                        and m > 0 and first_columns_mode != 1)
    columns_pay = (columns_possible and _row_chunks(&plan, m) > 1
                   and chunk_rows < shape.units[1])
    plan.first_columns = 0
    if columns_possible and (first_columns_mode == 2
                             or (columns_pay and not plan.skip_first)):
        # cuts at multiples of 64 bytes of a row of Z_1 (whole vectors), each chunk
        # at least that wide
        plan.first_columns = min(<intp_t> plan.cut_threads,
                                 max(1, shape.units[1] // (64 // itemsize)))
    return plan


cdef intp_t _nonzeros(const Rows *X, const intp_t *order, intp_t start, intp_t m,
                      intp_t n_features) noexcept nogil:
    """The non-zero values in the m dense rows order[0 .. m] (or start ..) of X."""
    cdef intp_t i, j, count = 0
    cdef const char *row
    for i in range(m):
        row = X.dense + (order[i] if order != NULL else start + i) * X.row_bytes
        if X.kind == INPUT_UINT8:
            for j in range(n_features):
                count += (<const unsigned char *> row)[j] != 0
        elif X.kind == INPUT_FLOAT32:
            for j in range(n_features):
                count += (<const float *> row)[j] != 0
        else:
            for j in range(n_features):
                count += (<const double *> row)[j] != 0
    return count


cdef inline intp_t _row_chunks(const Plan *plan, intp_t m) noexcept nogil:
    """The rows region's chunks for a batch of m rows, at least one row each."""
    return max(1, min(m, plan.cut_threads * ROW_CHUNKS_PER_THREAD))


cdef inline intp_t _param_chunk_rows(const Plan *plan, intp_t fan_in,
                                     intp_t fan_out) noexcept nogil:
    """Rows of a W_i (fan_in, fan_out) per chunk of the params region."""
    cdef intp_t count = max(1, min(fan_in, (fan_in * fan_out + plan.param_target - 1)
                                   // plan.param_target))
    return (fan_in + count - 1) // count


cdef intp_t _param_chunks(const Plan *plan, const Shape *shape) noexcept nogil:
    cdef intp_t i, rows, total = 0
    for i in range(shape.n_layers):
        rows = _param_chunk_rows(plan, shape.units[i], shape.units[i + 1])
        total += (shape.units[i] + rows - 1) // rows
    return total


cdef int _hold_blas(Plan *plan) noexcept nogil:
    """The BLAS on one thread for the call (give back with blas_threads_release).
    Where it cannot be held to one (no setter; another call holds it at more), the
    call runs on one thread of its own: never the BLAS's threads under each of ours.
    The chunks stay the plan's."""
    cdef int had = blas_threads_hold(1)
    if blas_num_threads() > 1:
        plan.n_threads = 1
    return had


# Sizes of the workspace #######################################################
#
# work: x (m, units[0]) the batch's rows, gathered or converted (unused when read
#       in place, or CSR) | A_1 .. A_{L-1} (m, units[i]) | the output (m, units[L]),
#       then delta_{L-1} | delta_0 .. delta_{L-2} (m, units[i+1]) | the gradient
#       (P,). The row chunks' partial sums are in the call's Scratch.

cdef inline intp_t _bias_width(const Shape *shape) noexcept nogil:
    cdef intp_t i, total = 0
    for i in range(1, shape.n_layers + 1):
        total += shape.units[i]
    return total


cdef inline intp_t _bias_offset(const Shape *shape, intp_t layer) noexcept nogil:
    """Where b_layer's gradient starts in a row of the bias partials."""
    cdef intp_t i, total = 0
    for i in range(1, layer + 1):
        total += shape.units[i]
    return total


cdef inline floating *_activation_buffer(const Shape *shape, floating *work, intp_t m,
                                         intp_t layer) noexcept nogil:
    """Layer `layer`'s output (m, units[layer]), 1 <= layer <= L (L: the output)."""
    cdef intp_t i, offset = m * shape.units[0]
    for i in range(1, layer):
        offset += m * shape.units[i]
    return work + offset


cdef inline floating *_delta_buffer(const Shape *shape, floating *work, intp_t m,
                                    intp_t layer) noexcept nogil:
    """dL/dZ of layer `layer` (m, units[layer + 1]): the output buffer for the last."""
    cdef intp_t i, L = shape.n_layers
    cdef floating *output = _activation_buffer(shape, work, m, L)
    if layer == L - 1:
        return output
    output += m * shape.units[L]
    for i in range(layer):
        output += m * shape.units[i + 1]
    return output


cdef inline floating *_gradient_buffer(const Shape *shape, floating *work,
                                       intp_t m) noexcept nogil:
    cdef intp_t i, L = shape.n_layers
    cdef floating *after = _activation_buffer(shape, work, m, L) + m * shape.units[L]
    for i in range(L - 1):
        after += m * shape.units[i + 1]         # delta_0 .. delta_{L-2}
    return after




cdef intp_t layers_workspace_size(const Shape *shape, intp_t batch_rows) noexcept nogil:
    cdef intp_t i, m = max(batch_rows, 1), total = m * shape.units[0]
    for i in range(1, shape.n_layers + 1):
        total += m * shape.units[i]                  # A_i, and the output
    for i in range(shape.n_layers - 1):
        total += m * shape.units[i + 1]              # delta_0 .. delta_{L-2}
    return total + layers_parameter_count(shape)


cdef inline intp_t _coef_offset(const Shape *shape, intp_t layer) noexcept nogil:
    """Where W_layer starts in the flat layout W_0 | b_0 | W_1 | b_1 | ..."""
    cdef intp_t i, offset = 0
    for i in range(layer):
        offset += (shape.units[i] + 1) * shape.units[i + 1]
    return offset


# One batch: what the regions share ############################################

cdef enum Mode:
    PREDICT = 0                   # forward, and the output layer's activation
    GRADIENT = 1                  # the loss, and the gradient into the flat buffer
    UPDATE = 2                    # the loss, and the optimiser's step


cdef enum RegionKind:
    ROWS = 0                      # _rows_chunk: a chunk of rows, every layer
    PARAMS = 1                    # _params_chunk: a chunk of a W_i's rows
    GATHER = 2                    # _gather_chunk: a row chunk's rows into work's x
    FIRST = 3                     # _first_chunk: a chunk of X W_0's columns


cdef struct Scratch:              # a call's small buffers, beside the caller's work
    double *row_loss              # (plan's row chunks,) a chunk's loss sum
    void *bias_partials           # (row chunks + 1, B) of the parameters' type: each
                                  # chunk's bias gradients (B = units[1] + .. + units[L]),
                                  # then their sum
    double *squares               # (_param_chunks,) a chunk's sum of the new W^2
    Columns columns               # CSR X with a gradient: the batch's entries by column
    intp_t *indices               # plan.skip_first: (n_threads, index_stride) a part's
                                  # index list for the zero-skipping kernels
    const void **x_rows           # plan.skip_first: (batch_rows,) where a shuffled
                                  # batch's rows are in X, read in place


cdef struct Region:               # one batch, shared by the parts of its regions
    const Shape *shape
    const Plan *plan
    const Rows *X
    const Targets *targets
    const void *sample_weight
    Batch batch                   # the whole batch; batch.ldx: x's row stride
    const void *x                 # dense X: the batch's rows (in X, or work's x)
    const void **x_rows           # or NULL x and these rows of X (a shuffled batch
                                  # read in place by the zero-skipping kernels)
    bint gather                   # the row chunks copy (convert) their rows to work's x
    void **coefs                  # the parameters' type (is_double)
    void **intercepts
    void *work
    bint is_double
    Mode mode
    double scale                  # 1 / the weight sum, folded into the output delta
    intp_t n_row_chunks
    # the params region
    bint accumulate               # GRADIENT: add to the flat gradient
    bint fused                    # UPDATE, plain SGD: W := decay W - eta grad
    double eta, decay
    const UpdateRule *rule        # UPDATE, other optimisers
    void *gradient                # (P,) GRADIENT: the caller's; UPDATE: work's, scratch
    void *state
    double l2, step_size
    const Columns *columns        # CSR X: the batch's entries by column
    Scratch *scratch
    bint want_squares             # sum the new W^2 (the next step's L2 term)
    bint first_done               # the rows region finds x gathered and X W_0 done
    # the region that runs, and its chunk counter
    RegionKind kind
    intp_t next_chunk, n_chunks


cdef int _scratch_init(Scratch *s, const Plan *plan, const Shape *shape, const Rows *X,
                       const intp_t *order, intp_t start, intp_t n_rows,
                       intp_t batch_rows, intp_t itemsize, bint gradient) noexcept nogil:
    """For batches of batch_rows of the n_rows rows order[..] (or start ..), with a
    gradient or only forward: 0, or -1 when out of memory (s then owns nothing)."""
    cdef intp_t row_chunks = _row_chunks(plan, batch_rows)
    memset(s, 0, sizeof(Scratch))
    s.row_loss = <double *> malloc(row_chunks * sizeof(double))
    s.bias_partials = malloc((row_chunks + 1) * _bias_width(shape) * itemsize)
    s.squares = <double *> malloc(max(1, _param_chunks(plan, shape)) * sizeof(double))
    if s.row_loss == NULL or s.bias_partials == NULL or s.squares == NULL:
        _scratch_free(s)
        return -1
    if plan.skip_first:
        s.indices = <intp_t *> malloc(plan.n_threads * plan.index_stride * sizeof(intp_t))
        s.x_rows = <const void **> malloc(batch_rows * sizeof(void *))
        if s.indices == NULL or s.x_rows == NULL:
            _scratch_free(s)
            return -1
    if X.dense == NULL and gradient:
        s.columns.capacity = _largest_batch_nnz(X, order, start, n_rows, batch_rows)
        s.columns.start = <intp_t *> malloc((shape.units[0] + 1) * sizeof(intp_t))
        s.columns.row = <intp_t *> malloc(max(s.columns.capacity, 1) * sizeof(intp_t))
        s.columns.source = <intp_t *> malloc(max(s.columns.capacity, 1) * sizeof(intp_t))
        if s.columns.start == NULL or s.columns.row == NULL or s.columns.source == NULL:
            _scratch_free(s)
            return -1
    return 0


cdef void _scratch_free(Scratch *s) noexcept nogil:
    free(s.row_loss)
    free(s.bias_partials)
    free(s.squares)
    free(s.columns.start)
    free(s.columns.row)
    free(s.columns.source)
    free(s.indices)
    free(s.x_rows)
    memset(s, 0, sizeof(Scratch))


cdef void _region_init(Region *c, const Plan *plan, const Shape *shape, const Rows *X,
                       const Targets *targets, const floating *sample_weight,
                       const Batch *batch, floating **coefs, floating **intercepts,
                       floating *work, Mode mode, Scratch *scratch) noexcept nogil:
    c.shape = shape
    c.plan = plan
    c.X = X
    c.targets = targets
    c.sample_weight = sample_weight
    c.batch = batch[0]
    c.coefs = <void **> coefs
    c.intercepts = <void **> intercepts
    c.work = work
    c.is_double = floating is double
    c.mode = mode
    c.scale = 1
    c.n_row_chunks = _row_chunks(plan, batch.m)
    c.accumulate = False
    c.fused = False
    c.eta = 0
    c.decay = 1
    c.rule = NULL
    c.gradient = _gradient_buffer(shape, work, batch.m)
    c.state = NULL
    c.l2 = 0
    c.step_size = 0
    c.columns = NULL
    c.scratch = scratch
    c.want_squares = False
    c.first_done = False
    # Dense X: the rows in place when they are of the parameters' type and
    # consecutive (or shuffled, for the zero-skipping kernels, which take a list of
    # rows), else each row chunk copies (converts) its rows into work's x.
    cdef intp_t i
    c.x = NULL
    c.x_rows = NULL
    c.gather = False
    if X.dense != NULL:
        if _same_kind(X.kind, work) and batch.rows == NULL:
            c.x = X.dense + batch.start * X.row_bytes
            c.batch.ldx = max(X.row_bytes // <intp_t> sizeof(floating), shape.units[0])
        elif _same_kind(X.kind, work) and plan.skip_first:
            for i in range(batch.m):
                scratch.x_rows[i] = X.dense + batch.rows[i] * X.row_bytes
            c.x_rows = scratch.x_rows
        else:
            c.x = work
            c.batch.ldx = shape.units[0]
            c.gather = True


cdef void _run(Region *c, int n_threads, RegionKind kind, intp_t n_chunks) noexcept nogil:
    """One region of this kind: n_chunks chunks claimed by min(n_threads, n_chunks)
    parts."""
    c.kind = kind
    c.next_chunk = 0
    c.n_chunks = n_chunks
    workers_run(<int> max(1, min(<intp_t> n_threads, n_chunks)), _region_part, c)


# The rows region ##############################################################

cdef void _gather_rows(const Rows *X, const Batch *rows, intp_t n_features,
                       floating *out) noexcept nogil:
    """out (rows.m, n_features) := the rows' values, converted to floating."""
    cdef intp_t i, j, r
    cdef const char *row
    for i in range(rows.m):
        r = rows.rows[i] if rows.rows != NULL else rows.start + i
        row = X.dense + r * X.row_bytes
        if _same_kind(X.kind, out):
            memcpy(out + i * n_features, row, n_features * sizeof(floating))
        else:
            for j in range(n_features):
                out[i * n_features + j] = _value(row, X.kind, j, out[0])


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


cdef void _rows_chunk(Region *c, intp_t chunk, floating **coefs, floating **intercepts,
                      floating *work, intp_t *indices) noexcept nogil:
    """Row chunk `chunk` of the batch: forward through every layer; then (not
    PREDICT) its loss, the output delta and every layer's delta down to delta_0, with
    the chunk's bias gradients in its row of the bias partials."""
    cdef const Shape *shape = c.shape
    cdef const intp_t *units = shape.units
    cdef intp_t i, L = shape.n_layers, m = c.batch.m
    cdef intp_t r0 = m * chunk // c.n_row_chunks, r1 = m * (chunk + 1) // c.n_row_chunks
    cdef intp_t rows_m = r1 - r0
    cdef Batch rows = c.batch
    cdef const floating *x = NULL
    cdef floating *out
    cdef floating *previous
    cdef floating *delta
    cdef floating *below
    cdef floating *partial                  # the chunk's bias gradients (B,)
    if rows_m == 0:
        return
    rows.rows = c.batch.rows + r0 if c.batch.rows != NULL else NULL
    rows.start = c.batch.start + r0
    rows.m = rows_m
    if c.X.dense != NULL:
        x = <const floating *> c.x + r0 * c.batch.ldx
        if c.gather and not c.first_done:
            _gather_rows(c.X, &rows, units[0], work + r0 * units[0])
    # A_1 = act(X W_0 + b_0), ..., the output's A W (its bias comes with the loss)
    out = _activation_buffer(shape, work, m, 1) + r0 * units[1]
    if c.first_done:
        pass                                # X W_0 by columns (_first_chunk)
    elif c.X.dense == NULL:
        _csr_forward(c.X, &rows, coefs[0], units[1], out)
    elif c.x_rows != NULL:
        _gemm_skipzero_rows(rows_m, units[1], units[0], <const floating **> c.x_rows + r0,
                            coefs[0], units[1], out, units[1], indices)
    elif c.plan.skip_first:
        _gemm_skipzero(rows_m, units[1], units[0], x, c.batch.ldx, coefs[0], units[1],
                       out, units[1], indices)
    else:
        _gemm(RowMajor, NoTrans, NoTrans, <blas_int> rows_m, <blas_int> units[1],
              <blas_int> units[0], <floating> 1, x, <blas_int> c.batch.ldx, coefs[0],
              <blas_int> units[1], <floating> 0, out, <blas_int> units[1])
    for i in range(1, L):
        bias_activation(out, intercepts[i - 1], rows_m, units[i], shape.activation)
        previous = out
        out = _activation_buffer(shape, work, m, i + 1) + r0 * units[i + 1]
        _gemm(RowMajor, NoTrans, NoTrans, <blas_int> rows_m, <blas_int> units[i + 1],
              <blas_int> units[i], <floating> 1, previous, <blas_int> units[i],
              coefs[i], <blas_int> units[i + 1], <floating> 0, out,
              <blas_int> units[i + 1])
    if c.mode == PREDICT:
        _output_activation(shape, out, intercepts[L - 1], rows_m)
        return
    partial = <floating *> c.scratch.bias_partials + chunk * _bias_width(shape)
    c.scratch.row_loss[chunk] = _output_delta(
        shape, out, intercepts[L - 1], c.targets, <const floating *> c.sample_weight,
        rows.rows, rows.start, rows_m, <floating> c.scale,
        partial + _bias_offset(shape, L - 1))
    # delta_{i-1} = (delta_i W_i^T) act'(A_i), W_i as it was in the forward pass
    for i in range(L - 1, 0, -1):
        delta = _delta_buffer(shape, work, m, i) + r0 * units[i + 1]
        below = _delta_buffer(shape, work, m, i - 1) + r0 * units[i]
        _gemm(RowMajor, NoTrans, Trans, <blas_int> rows_m, <blas_int> units[i],
              <blas_int> units[i + 1], <floating> 1, delta, <blas_int> units[i + 1],
              coefs[i], <blas_int> units[i + 1], <floating> 0, below,
              <blas_int> units[i])
        activation_backward(below, _activation_buffer(shape, work, m, i) + r0 * units[i],
                            rows_m, units[i], shape.activation,
                            partial + _bias_offset(shape, i - 1))


cdef void _region_part(void *ctx, int part, int n_parts) noexcept nogil:
    """A part of the region that runs (c.kind): claims chunks until none is left."""
    cdef Region *c = <Region *> ctx
    cdef intp_t chunk
    cdef intp_t *indices = NULL           # the part's, for the zero-skipping kernels
    if c.plan.skip_first:
        indices = c.scratch.indices + part * c.plan.index_stride
    while True:
        chunk = workers_claim(&c.next_chunk)
        if chunk >= c.n_chunks:
            return
        if c.is_double:
            _region_chunk(c, chunk, <double **> c.coefs, <double **> c.intercepts,
                          <double *> c.work, indices)
        else:
            _region_chunk(c, chunk, <float **> c.coefs, <float **> c.intercepts,
                          <float *> c.work, indices)


cdef inline void _region_chunk(Region *c, intp_t chunk, floating **coefs,
                               floating **intercepts, floating *work,
                               intp_t *indices) noexcept nogil:
    if c.kind == PARAMS:
        _params_chunk(c, chunk, coefs, work, indices)
    elif c.kind == ROWS:
        _rows_chunk(c, chunk, coefs, intercepts, work, indices)
    elif c.kind == GATHER:
        _gather_chunk(c, chunk, work)
    else:
        _first_chunk(c, chunk, coefs, work, indices)


# The first product by columns (Plan.first_columns) ###########################

cdef void _gather_chunk(Region *c, intp_t chunk, floating *work) noexcept nogil:
    """Row chunk `chunk`'s rows of X into work's x, as _rows_chunk gathers them."""
    cdef intp_t m = c.batch.m, n_features = c.shape.units[0]
    cdef intp_t r0 = m * chunk // c.n_row_chunks, r1 = m * (chunk + 1) // c.n_row_chunks
    cdef Batch rows = c.batch
    if r1 == r0:
        return
    rows.rows = c.batch.rows + r0 if c.batch.rows != NULL else NULL
    rows.start = c.batch.start + r0
    rows.m = r1 - r0
    _gather_rows(c.X, &rows, n_features, work + r0 * n_features)


cdef void _first_chunk(Region *c, intp_t chunk, floating **coefs,
                       floating *work, intp_t *indices) noexcept nogil:
    """Column chunk `chunk` of X W_0 over all the batch's rows: Z_1[:, c0:c1] :=
    x W_0[:, c0:c1], by gemm or skipping X's zeros as _rows_chunk would. The cuts
    are whole cache lines of Z_1's rows (whole vectors, for the zero-skipping
    kernels), so that no two chunks write one line."""
    cdef const intp_t *units = c.shape.units
    cdef intp_t m = c.batch.m, n = units[1], chunks = c.plan.first_columns
    cdef intp_t lanes = 64 // <intp_t> sizeof(floating)
    cdef intp_t c0 = (n * chunk // chunks) // lanes * lanes
    cdef intp_t c1 = n if chunk == chunks - 1 else (n * (chunk + 1) // chunks) // lanes * lanes
    cdef floating *out = _activation_buffer(c.shape, work, m, 1)
    if m == 0:                  # (the plan's chunk count leaves no chunk empty)
        return
    if c.x_rows != NULL:
        _gemm_skipzero_rows(m, c1 - c0, units[0], <const floating **> c.x_rows,
                            coefs[0] + c0, n, out + c0, n, indices)
        return
    if c.plan.skip_first:
        _gemm_skipzero(m, c1 - c0, units[0], <const floating *> c.x, c.batch.ldx,
                       coefs[0] + c0, n, out + c0, n, indices)
        return
    _gemm(RowMajor, NoTrans, NoTrans, <blas_int> m, <blas_int> (c1 - c0),
          <blas_int> units[0], <floating> 1, <const floating *> c.x,
          <blas_int> c.batch.ldx, coefs[0] + c0, <blas_int> n, <floating> 0, out + c0,
          <blas_int> n)


# The params region ############################################################

cdef void _csr_row_gradient(const Rows *X, const Columns *columns, const floating *delta,
                            intp_t n, intp_t j, bint accumulate,
                            floating *out) noexcept nogil:
    """out (n,) (+)= row j of X_batch^T delta: the batch's entries in column j, in the
    batch's row order."""
    cdef intp_t q, k
    cdef const floating *data = <const floating *> X.csr_data
    cdef const floating *d
    cdef floating v
    if not accumulate:
        for k in range(n):
            out[k] = 0
    for q in range(columns.start[j], columns.start[j + 1]):
        v = data[columns.source[q]]
        d = delta + columns.row[q] * n
        for k in range(n):
            out[k] += v * d[k]


cdef void _params_chunk(Region *c, intp_t chunk, floating **coefs,
                        floating *work, intp_t *indices) noexcept nogil:
    """Parameter chunk `chunk`: rows p0 .. p1 of one W_i, their gradient over the
    whole batch written (GRADIENT) or applied (UPDATE)."""
    cdef const Shape *shape = c.shape
    cdef intp_t i = 0, rows_per, count, p0, p1, j, n, fan_in, fan_out, lda
    cdef intp_t m = c.batch.m, P = layers_parameter_count(shape), first = 0
    cdef const floating *A
    cdef floating *W
    cdef floating *G
    cdef floating *delta
    cdef floating eta = <floating> c.eta, decay = <floating> c.decay
    cdef floating alpha, beta
    while True:                          # which layer, which rows
        rows_per = _param_chunk_rows(c.plan, shape.units[i], shape.units[i + 1])
        count = (shape.units[i] + rows_per - 1) // rows_per
        if chunk < first + count:
            break
        first += count
        i += 1
    fan_in = shape.units[i]
    fan_out = shape.units[i + 1]
    p0 = (chunk - first) * rows_per
    p1 = min(fan_in, p0 + rows_per)
    n = (p1 - p0) * fan_out
    delta = _delta_buffer(shape, work, m, i)
    W = coefs[i] + p0 * fan_out
    G = <floating *> c.gradient + _coef_offset(shape, i) + p0 * fan_out
    if i == 0 and c.X.dense == NULL:
        for j in range(p0, p1):
            _csr_row_gradient(c.X, c.columns, delta, fan_out, j,
                              c.mode == GRADIENT and c.accumulate,
                              G + (j - p0) * fan_out)
        if c.fused:
            for j in range(n):
                W[j] = decay * W[j] - eta * G[j]
    elif i == 0 and c.plan.skip_first:
        # as the gemms below, over X's non-zero values: W := decay W - eta X^T delta,
        # or G (+)= X^T delta
        alpha = -eta if c.fused else 1
        beta = decay if c.fused else (1 if c.mode == GRADIENT and c.accumulate else 0)
        if c.x_rows != NULL:
            _gemm_t_skipzero_rows(m, fan_out, p1 - p0, alpha,
                                  <const floating **> c.x_rows, p0, delta, fan_out, beta,
                                  W if c.fused else G, fan_out, indices)
        else:
            _gemm_t_skipzero(m, fan_out, p1 - p0, alpha, <const floating *> c.x + p0,
                             c.batch.ldx, delta, fan_out, beta, W if c.fused else G,
                             fan_out, indices)
    else:
        if i == 0:
            A = <const floating *> c.x
            lda = c.batch.ldx
        else:
            A = _activation_buffer(shape, work, m, i)
            lda = fan_in
        if c.fused:          # W := decay W - eta A^T delta, in the product
            _gemm(RowMajor, Trans, NoTrans, <blas_int> (p1 - p0), <blas_int> fan_out,
                  <blas_int> m, -eta, A + p0, <blas_int> lda, delta, <blas_int> fan_out,
                  decay, W, <blas_int> fan_out)
        else:
            _gemm(RowMajor, Trans, NoTrans, <blas_int> (p1 - p0), <blas_int> fan_out,
                  <blas_int> m, <floating> 1, A + p0, <blas_int> lda, delta,
                  <blas_int> fan_out,
                  <floating> (1 if c.mode == GRADIENT and c.accumulate else 0), G,
                  <blas_int> fan_out)
    if c.mode != UPDATE:
        return
    c.scratch.squares[chunk] = 0
    if c.fused:
        if c.want_squares:
            c.scratch.squares[chunk] = sum_of_squares(W, n)
        return
    apply_update(W, G, <floating *> c.state + _coef_offset(shape, i) + p0 * fan_out, n,
                 P, c.l2, c.rule, c.step_size,
                 &c.scratch.squares[chunk] if c.want_squares else NULL)


# A batch, start to end ########################################################

cdef double _forward_backward(Region *c, int n_threads) noexcept nogil:
    """The rows region (after the gather and the column chunks of X W_0, where the
    plan cuts it so), then its partial sums added in chunk order: returns the
    batch's loss sum (weighted, unscaled), and every layer's bias gradient in the
    row after the chunks' in the scratch's bias partials."""
    cdef intp_t chunk
    cdef double loss = 0
    if c.plan.first_columns > 1:
        if c.gather:
            _run(c, n_threads, GATHER, c.n_row_chunks)
        _run(c, n_threads, FIRST, c.plan.first_columns)
        c.first_done = True
    _run(c, n_threads, ROWS, c.n_row_chunks)
    if c.is_double:
        _add_partials(<double *> c.scratch.bias_partials, c.n_row_chunks,
                      _bias_width(c.shape))
    else:
        _add_partials(<float *> c.scratch.bias_partials, c.n_row_chunks,
                      _bias_width(c.shape))
    for chunk in range(c.n_row_chunks):
        loss += c.scratch.row_loss[chunk]
    return loss


cdef void _add_partials(floating *partial, intp_t n_chunks, intp_t B) noexcept nogil:
    """partial (n_chunks + 1, B): its last row := the sum of the others, in order."""
    cdef intp_t chunk, j
    cdef floating *sums = partial + n_chunks * B
    for j in range(B):
        sums[j] = 0
    for chunk in range(n_chunks):
        for j in range(B):
            sums[j] += partial[chunk * B + j]


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
    const floating *sample_weight, const Batch *batch,
    floating **coefs, floating **intercepts, const TrainOptions *options,
    floating *optimizer_state, intp_t *n_updates, floating *work,
    double *squares,              # IN/OUT sum of every W_i^2, or < 0: not known
    const Plan *plan, Scratch *scratch,
    int n_threads,                # plan.n_threads, or fewer (the pacer's choice)
) noexcept nogil:
    """layers_step on a Batch, cut as the plan says, on n_threads threads. `squares`
    carries the L2 penalty's sum from one step to the next: the update sums it as it
    goes."""
    cdef intp_t i, j, k, L = shape.n_layers, m = batch.m
    cdef intp_t P = layers_parameter_count(shape), offset
    cdef floating *bias_grad
    cdef floating *gradient = _gradient_buffer(shape, work, m)
    cdef double loss, weight_sum = _weight_sum(sample_weight, batch.rows, batch.start, m)
    cdef double new_squares = 0
    cdef UpdateRule rule
    cdef Region c
    if weight_sum <= 0:          # a batch with no weight carries no gradient
        return 0
    _region_init(&c, plan, shape, X, targets, sample_weight, batch, coefs, intercepts,
                 work, UPDATE, scratch)
    c.scale = 1 / weight_sum
    loss = _forward_backward(&c, n_threads) / weight_sum
    bias_grad = <floating *> scratch.bias_partials + c.n_row_chunks * _bias_width(shape)
    if options.alpha > 0:
        if squares[0] < 0:
            squares[0] = _penalty(shape, coefs)
        loss += 0.5 * options.alpha * squares[0] / weight_sum
    if not isfinite(loss):
        return loss
    c.l2 = options.alpha / weight_sum
    c.want_squares = options.alpha > 0
    n_updates[0] += 1
    if _plain_sgd(options):
        c.fused = True
        c.eta = options.learning_rate
        c.decay = 1 - options.learning_rate * c.l2
    else:
        rule = _update_rule(options)
        c.rule = &rule
        c.state = optimizer_state
        c.step_size = step_size_at(&rule, options.learning_rate, n_updates[0])
    if X.dense == NULL:
        _columns_of(X, batch, shape.units[0], &scratch.columns)
        c.columns = &scratch.columns
    _run(&c, n_threads, PARAMS, _param_chunks(plan, shape))
    # the biases, and the next step's L2 sum
    for i in range(L):
        offset = _coef_offset(shape, i) + shape.units[i] * shape.units[i + 1]
        j = _bias_offset(shape, i)
        if c.fused:
            for k in range(shape.units[i + 1]):
                intercepts[i][k] -= <floating> c.eta * bias_grad[j + k]
        else:
            memcpy(gradient + offset, bias_grad + j, shape.units[i + 1] * sizeof(floating))
            apply_update(intercepts[i], gradient + offset, optimizer_state + offset,
                         shape.units[i + 1], P, 0, &rule, c.step_size)
    squares[0] = -1
    if options.alpha > 0:
        for i in range(_param_chunks(plan, shape)):
            new_squares += scratch.squares[i]
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
    cdef Scratch scratch
    cdef Plan plan
    if m == 0:
        return 0
    plan = _plan(shape, X, rows, start, m, sizeof(floating), NULL, False)
    if _scratch_init(&scratch, &plan, shape, X, rows, start, m, m, sizeof(floating),
                     True) != 0:
        return NAN
    cdef int blas_had = _hold_blas(&plan)
    loss = _batch_step(shape, X, targets, sample_weight, &batch, coefs, intercepts,
                       options, optimizer_state, n_updates, work, &squares, &plan,
                       &scratch, plan.n_threads)
    blas_threads_release(blas_had)
    _scratch_free(&scratch)
    return loss


cdef int layers_train_epoch(
    const Shape *shape, const Rows *X, const Targets *targets,
    const floating *sample_weight, const intp_t *order, intp_t n_rows, intp_t batch_size,
    floating **coefs, floating **intercepts, const TrainOptions *options,
    floating *optimizer_state, intp_t *n_updates, floating *work,
    EpochStats *stats_out,
) except -1 nogil:
    cdef intp_t start, m, work_since_check = 0
    cdef intp_t P = layers_parameter_count(shape)
    cdef intp_t per_row = P - shape.units[shape.n_layers]
    cdef Batch batch
    cdef double loss, squares = -1    # the L2 penalty's sum, carried between steps
    cdef double began
    cdef Scratch scratch
    cdef Pacer pacer
    cdef Plan plan
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
    plan = _plan(shape, X, order, 0, batch_size, sizeof(floating), options, False)
    if plan.sweep:
        return _epoch_sample_by_sample(shape, X, targets, sample_weight, order, n_rows,
                                       coefs, intercepts, options, n_updates, work,
                                       stats_out)
    if _scratch_init(&scratch, &plan, shape, X, order, 0, n_rows, batch_size,
                     sizeof(floating), True) != 0:
        with gil:
            raise MemoryError()
    cdef int blas_had = _hold_blas(&plan)
    pacer_resume(&pacer, plan.n_threads, shape.units[0], P, shape.units[shape.n_layers],
                 sizeof(floating))
    try:
        start = 0
        while start < n_rows:
            m = min(batch_size, n_rows - start)
            batch = _batch(shape, order + start if order != NULL else NULL,
                           start if order == NULL else 0, m)
            began = pacer_clock() if plan.n_threads > 1 else 0
            loss = _batch_step(shape, X, targets, sample_weight, &batch, coefs,
                               intercepts, options, optimizer_state, n_updates, work,
                               &squares, &plan, &scratch, pacer.current)
            if plan.n_threads > 1:
                pacer_record(&pacer, pacer_clock() - began, m)
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
        if plan.n_threads > 1:
            pacer_remember(&pacer, shape.units[0], P, shape.units[shape.n_layers],
                           sizeof(floating))
        blas_threads_release(blas_had)
        _scratch_free(&scratch)
    return 0


# The batch-1 sweep ############################################################
#
# The plan's one special case (Plan.sweep): batch_size 1 with plain SGD and no
# L2 on a network of one hidden layer with a softmax output (the seed's, with its
# batch of one) and dense X. Such a step is bound by memory, not FLOPs: each sample
# reads W_0 for its forward pass and reads and writes it for its update. _sample_step
# does both in one sweep over W_0's rows (update row i for this sample, then add row i
# to the next sample's forward pass), and skips the rows of zero pixels, which need
# neither (about half of Fashion-MNIST's, 80% of MNIST's). No BLAS call is worth its
# overhead at this size. It computes the general step's update, to rounding
# (tests/test_layers.py, "batch-1 sweep").

cdef bint _sweeps(const Shape *shape, const Rows *X, const TrainOptions *options,
                  intp_t batch_size) noexcept nogil:
    """Whether an epoch runs as the batch-1 sweep."""
    return (batch_size == 1 and options != NULL and _plain_sgd(options)
            and options.alpha == 0 and shape.n_layers == 2
            and shape.output == OUT_SOFTMAX and X.dense != NULL)


cdef const floating *_sample_row(const Rows *X, intp_t r, floating *buffer,
                                 intp_t n) noexcept nogil:
    """Row r of dense X: in place when of the parameters' type, else converted."""
    cdef const char *row = X.dense + r * X.row_bytes
    cdef intp_t j
    if _same_kind(X.kind, buffer):
        return <const floating *> row
    for j in range(n):
        buffer[j] = _value(row, X.kind, j, buffer[0])
    return buffer


cdef void _accumulate_rows(
    const floating *x,            # IN  (n_features,)
    const floating *W,            # IN  (n_features, n_hidden)
    intp_t n_features, intp_t n_hidden,
    floating *pre_out,            # OUT (n_hidden,) x W, over the nonzero x_i only
) noexcept nogil:
    cdef intp_t i, j
    cdef const floating *row
    cdef floating xi
    for j in range(n_hidden):
        pre_out[j] = 0
    for i in range(n_features):
        xi = x[i]
        if xi != 0:
            row = W + i * n_hidden
            for j in range(n_hidden):
                pre_out[j] += xi * row[j]


cdef double _sample_step(
    intp_t n_features, intp_t n_hidden, intp_t n_classes,
    const floating *x,            # IN  (n_features,) this sample
    const floating *x_next,       # IN  (n_features,) the next sample, or NULL
    label_t label,
    floating *W0, floating *b0, floating *W1, floating *b1,   # IN/OUT
    Activation activation, double learning_rate,
    floating *pre,                # IN  x W0 (n_hidden,); OUT x_next W0 with W0 updated
    floating *work,               # (3 n_hidden + 2 n_classes,)
) noexcept nogil:
    """One plain-SGD step on one sample (no L2); returns its loss."""
    cdef intp_t j, k
    cdef floating *hidden = work                       # (n_hidden,)  A_1
    cdef floating *hidden_grad = hidden + n_hidden     # (n_hidden,)  dA_1, then delta_0
    cdef floating *b0_grad = hidden_grad + n_hidden    # (n_hidden,)
    cdef floating *output = b0_grad + n_hidden         # (n_classes,) Z, then delta_1
    cdef floating *b1_grad = output + n_classes        # (n_classes,)
    cdef floating *row
    cdef floating eta = <floating> learning_rate
    cdef floating a, g
    cdef double loss

    # Forward: A_1 = act(x W0 + b0), Z = A_1 W1
    for j in range(n_hidden):
        hidden[j] = pre[j]
    bias_activation(hidden, b0, 1, n_hidden, activation)
    for k in range(n_classes):
        output[k] = 0
    for j in range(n_hidden):
        a = hidden[j]
        row = W1 + j * n_classes
        for k in range(n_classes):
            output[k] += a * row[k]
    loss = softmax_cross_entropy(output, b1, &label, <const floating *> NULL, NULL, 1,
                                 n_classes, <floating> 1, b1_grad)
    if not isfinite(loss):
        return loss
    # dA_1 = W1 delta_1 with W1 as it was, then W1 -= eta A_1 delta_1^T, row by row
    for j in range(n_hidden):
        row = W1 + j * n_classes
        g = 0
        for k in range(n_classes):
            g += row[k] * output[k]
        hidden_grad[j] = g
        a = eta * hidden[j]
        for k in range(n_classes):
            row[k] -= a * output[k]
    for k in range(n_classes):
        b1[k] -= eta * b1_grad[k]
    # delta_0 = dA_1 act'(Z_0) ;  b0 -= eta delta_0
    activation_backward(hidden_grad, hidden, 1, n_hidden, activation, b0_grad)
    for j in range(n_hidden):
        b0[j] -= eta * hidden_grad[j]
    # W0 -= eta x delta_0^T, and the next sample's x_next W0 from the updated rows,
    # in one sweep; rows where both samples are zero are not touched.
    _sample_sweep(n_features, n_hidden, x, x_next, eta, hidden_grad, W0, pre)
    return loss


cdef int _epoch_sample_by_sample(
    const Shape *shape, const Rows *X, const Targets *targets,
    const floating *sample_weight, const intp_t *order, intp_t n_rows,
    floating **coefs, floating **intercepts, const TrainOptions *options,
    intp_t *n_updates, floating *work, EpochStats *stats_out,
) except -1 nogil:
    """layers_train_epoch when the plan sweeps (_sweeps). work: (4 n_hidden + 2
    n_classes + 2 n_features,), less than layers_workspace_size(shape, 1)."""
    cdef intp_t n_features = shape.units[0], n_hidden = shape.units[1]
    cdef intp_t n_classes = shape.units[2]
    cdef intp_t t, r, work_since_check = 0
    cdef floating *pre = work                                  # (n_hidden,)
    cdef floating *scratch = pre + n_hidden                    # (3 n_hidden + 2 n_classes,)
    cdef floating *row_buffers[2]                              # 2 x (n_features,), if converting
    cdef const floating *x
    cdef const floating *x_next = NULL
    cdef double loss
    row_buffers[0] = scratch + 3 * n_hidden + 2 * n_classes
    row_buffers[1] = row_buffers[0] + n_features

    r = order[0] if order != NULL else 0
    x_next = _sample_row(X, r, row_buffers[0], n_features)
    _accumulate_rows(x_next, coefs[0], n_features, n_hidden, pre)
    for t in range(n_rows):
        r = order[t] if order != NULL else t
        x = x_next
        x_next = NULL
        if t + 1 < n_rows:
            x_next = _sample_row(X, order[t + 1] if order != NULL else t + 1,
                                 row_buffers[(t + 1) % 2], n_features)
        if sample_weight != NULL and sample_weight[r] <= 0:
            # A row of no weight carries no gradient (and the loss counts it as 0).
            if x_next != NULL:
                _accumulate_rows(x_next, coefs[0], n_features, n_hidden, pre)
            loss = 0
        else:
            # For one row of weight w, delta = w (p - y) / w: the weight cancels.
            loss = _sample_step(n_features, n_hidden, n_classes, x, x_next,
                                targets.codes[r], coefs[0], intercepts[0], coefs[1],
                                intercepts[1], shape.activation, options.learning_rate,
                                pre, scratch)
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


cdef intp_t _largest_batch_nnz(const Rows *X, const intp_t *order, intp_t start,
                               intp_t n_rows, intp_t batch_size) noexcept nogil:
    """The most CSR entries in any batch of batch_size of the rows order[..] (or
    start ..)."""
    cdef intp_t i, r, batch_nnz = 0, largest = 0
    for i in range(n_rows):
        if i % batch_size == 0:
            batch_nnz = 0
        r = order[i] if order != NULL else start + i
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
    cdef floating *W_grad
    cdef floating *bias_grad
    cdef Batch batch
    cdef Region c
    cdef Scratch scratch
    cdef Plan plan
    if n_samples == 0 or weight_sum <= 0:
        memset(gradient, 0, P * sizeof(floating))
        return 0
    chunk_rows = max(1, min(chunk_rows, n_samples))
    plan = _plan(shape, X, NULL, 0, chunk_rows, sizeof(floating), NULL, False)
    if _scratch_init(&scratch, &plan, shape, X, NULL, 0, n_samples, chunk_rows,
                     sizeof(floating), True) != 0:
        return NAN
    cdef int blas_had = _hold_blas(&plan)
    start = 0
    while start < n_samples:
        m = min(chunk_rows, n_samples - start)
        batch = _batch(shape, NULL, start, m)
        _region_init(&c, &plan, shape, X, targets, sample_weight, &batch, coefs,
                     intercepts, work, GRADIENT, &scratch)
        c.scale = 1 / weight_sum
        c.gradient = gradient
        c.accumulate = start > 0          # chunks after the first add theirs
        loss += _forward_backward(&c, plan.n_threads)
        if X.dense == NULL:
            _columns_of(X, &batch, shape.units[0], &scratch.columns)
            c.columns = &scratch.columns
        _run(&c, plan.n_threads, PARAMS, _param_chunks(&plan, shape))
        bias_grad = (<floating *> scratch.bias_partials
                     + c.n_row_chunks * _bias_width(shape))
        for i in range(L):
            offset = _coef_offset(shape, i) + shape.units[i] * shape.units[i + 1]
            for j in range(shape.units[i + 1]):
                if c.accumulate:
                    gradient[offset + j] += bias_grad[_bias_offset(shape, i) + j]
                else:
                    gradient[offset + j] = bias_grad[_bias_offset(shape, i) + j]
        start += m
    blas_threads_release(blas_had)
    _scratch_free(&scratch)
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
    cdef floating *output
    cdef Batch batch
    cdef Region c
    cdef Plan plan
    cdef Scratch scratch
    if n_samples == 0:
        return 0
    chunk_rows = max(1, min(chunk_rows, n_samples))
    plan = _plan(shape, X, NULL, 0, chunk_rows, sizeof(floating), NULL, True)
    if _scratch_init(&scratch, &plan, shape, X, NULL, 0, n_samples, chunk_rows,
                     sizeof(floating), False) != 0:
        return -1
    cdef int blas_had = _hold_blas(&plan)
    start = 0
    while start < n_samples:
        m = min(chunk_rows, n_samples - start)
        batch = _batch(shape, NULL, start, m)
        _region_init(&c, &plan, shape, X, NULL, <const floating *> NULL, &batch, coefs,
                     intercepts, work, PREDICT, &scratch)
        _run(&c, plan.n_threads, ROWS, c.n_row_chunks)
        output = _activation_buffer(shape, work, m, L)
        for i in range(m):
            memcpy(out + (start + i) * ld_out, output + i * K, K * sizeof(floating))
        start += m
    blas_threads_release(blas_had)
    _scratch_free(&scratch)
    return 0


# Python entry points, used by the estimators ###################################

import numpy as np

INPUT_KINDS = {np.dtype(np.uint8): INPUT_UINT8, np.dtype(np.float32): INPUT_FLOAT32,
               np.dtype(np.float64): INPUT_FLOAT64}


cdef inline const void *_address(object array):
    return <const void *> <size_t> array.__array_interface__["data"][0]


cdef class Options:
    """How the optimiser trains (network.pxd's TrainOptions, less the activation,
    which is the network's): solver (network.Solver), learning_rate (eta; Adam's
    before its bias correction), alpha (L2), momentum and nesterov (SGD), beta_1,
    beta_2 and epsilon (Adam). Checked when built and when learning_rate is set."""
    cdef TrainOptions c

    def __init__(self, *, Solver solver=SGD, double learning_rate, double alpha=0,
                 double momentum=0, bint nesterov=False, double beta_1=0.9,
                 double beta_2=0.999, double epsilon=1e-8):
        if solver != SGD and solver != ADAM:
            raise ValueError(f"unknown solver code {<int> solver}")
        if not (learning_rate > 0 and alpha >= 0 and 0 <= momentum <= 1
                and 0 <= beta_1 < 1 and 0 <= beta_2 < 1 and epsilon > 0):
            raise ValueError("options out of range: need learning_rate > 0, alpha >= 0, "
                             "0 <= momentum <= 1, 0 <= beta_1, beta_2 < 1, epsilon > 0")
        self.c.activation = IDENTITY         # unused: the network's Shape has it
        self.c.solver = solver
        self.c.learning_rate = learning_rate
        self.c.alpha = alpha
        self.c.momentum = momentum
        self.c.nesterov = nesterov
        self.c.beta_1 = beta_1
        self.c.beta_2 = beta_2
        self.c.epsilon = epsilon

    @property
    def learning_rate(self):
        return self.c.learning_rate

    @learning_rate.setter
    def learning_rate(self, double value):
        if not value > 0:
            raise ValueError(f"learning_rate must be > 0, got {value}")
        self.c.learning_rate = value

    @property
    def solver(self):
        """The network.Solver code."""
        return <int> self.c.solver

    @property
    def alpha(self):
        return self.c.alpha

    @property
    def momentum(self):
        return self.c.momentum

    def __repr__(self):
        return (f"Options(solver={'ADAM' if self.c.solver == ADAM else 'SGD'}, "
                f"learning_rate={self.c.learning_rate!r}, alpha={self.c.alpha!r}, "
                f"momentum={self.c.momentum!r}, nesterov={bool(self.c.nesterov)}, "
                f"beta_1={self.c.beta_1!r}, beta_2={self.c.beta_2!r}, "
                f"epsilon={self.c.epsilon!r})")


cdef class Epoch:
    """What Network.train_epoch did (network.pxd's EpochStats), set also when an
    exception (KeyboardInterrupt) stops the epoch between two batches, and the
    optimiser's update count (Adam's t), which carries from one epoch to the next."""
    cdef EpochStats c
    cdef public intp_t n_updates

    def __init__(self, intp_t n_updates=0):
        memset(&self.c, 0, sizeof(EpochStats))
        self.n_updates = n_updates

    @property
    def loss_sum(self):
        """The sum over batches of each batch's loss times its rows."""
        return self.c.loss_sum

    @property
    def n_rows_done(self):
        return self.c.n_rows_done

    @property
    def n_batches_done(self):
        return self.c.n_batches_done

    @property
    def diverged(self):
        """Whether a batch's loss was not finite (the epoch stopped there, that batch
        updating nothing)."""
        return bool(self.c.diverged)


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

    def state_size(self, Options options not None):
        """Length of the optimiser state for these options."""
        return layers_state_size(&self.shape, &options.c)

    def workspace_size(self, intp_t batch_rows):
        """Length of `work` for batches or chunks of batch_rows rows."""
        return layers_workspace_size(&self.shape, batch_rows)

    def plan(self, X, intp_t batch_rows, Options options=None, *, bint predict=False):
        """How an epoch (options given), an L-BFGS call or (predict) a predict call on
        X in batches of batch_rows rows would run, now: {"threads": the most threads
        a region runs on, "skip_zeros": whether the first layer's products skip X's
        zeros, "sweep": whether the epoch is the batch-1 sweep, "first_columns": the
        column chunks of a step's X W_0, or 0 where the row chunks compute it}."""
        cdef Rows rows
        cdef Plan plan
        self._rows(&rows, X)
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
        batch_rows = max(1, min(batch_rows, rows.n_samples))
        if rows.n_samples == 0:
            return {"threads": 1, "skip_zeros": False, "sweep": False, "first_columns": 0}
        plan = _plan(&self.shape, &rows, NULL, 0, batch_rows, 4 if self.single else 8,
                     &options.c if options is not None else NULL, predict)
        if plan.sweep:
            return {"threads": 1, "skip_zeros": False, "sweep": True,
                    "first_columns": 0}
        return {"threads": plan.n_threads, "skip_zeros": bool(plan.skip_first),
                "sweep": False, "first_columns": plan.first_columns
                if plan.first_columns > 1 else 0}

    def train_epoch(self, X, y, sample_weight, order, intp_t batch_size,
                    Options options not None, state, work, Epoch epoch not None):
        """One epoch, without the GIL; see layers_train_epoch. order: the rows of X to
        visit (a subset may leave rows out), or None: all, in order. epoch: what the
        epoch did, and the update count it starts from and ends at."""
        cdef Rows rows
        cdef Targets targets
        cdef TrainOptions train_options = options.c
        cdef EpochStats stats
        cdef const void *weights = NULL
        cdef const intp_t *order_pointer = NULL
        cdef void *state_pointer = NULL
        cdef void *work_pointer
        cdef intp_t n_updates, needed, n_rows
        memset(&stats, 0, sizeof(EpochStats))
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
        n_updates = epoch.n_updates
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
            epoch.c = stats
            epoch.n_updates = n_updates

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
        cdef int status
        with nogil:
            if self.single:
                status = layers_predict(&self.shape, &rows, <float **> self.coef_pointers,
                                        <float **> self.intercept_pointers,
                                        <float *> out_pointer, K, <float *> work_pointer,
                                        chunk_rows)
            else:
                status = layers_predict(&self.shape, &rows, <double **> self.coef_pointers,
                                        <double **> self.intercept_pointers,
                                        <double *> out_pointer, K, <double *> work_pointer,
                                        chunk_rows)
        if status != 0:
            raise MemoryError("out of memory for predict's scratch buffers")
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


def _set_chunks(intp_t row_chunks_per_thread, intp_t param_chunks_per_thread):
    """The plan's row and weight chunks per thread (benchmarks/bench_layers_chunks.py;
    the defaults are 1 and 2). Returns the old pair."""
    global ROW_CHUNKS_PER_THREAD, PARAM_CHUNKS_PER_THREAD
    if row_chunks_per_thread < 1 or param_chunks_per_thread < 1:
        raise ValueError("chunks per thread must be >= 1")
    old = (ROW_CHUNKS_PER_THREAD, PARAM_CHUNKS_PER_THREAD)
    ROW_CHUNKS_PER_THREAD = row_chunks_per_thread
    PARAM_CHUNKS_PER_THREAD = param_chunks_per_thread
    return old


def _set_first_columns(mode):
    """Whether a step's first product is cut by columns (Plan.first_columns): "auto"
    (the plan's rule, the default), "never" (X W_0 by row chunks, as before the
    column cut; zero skipping as the plan decides) or "always" (dense X and chunks cut for 2 threads or more, with gemm or, where the
    plan skips zeros, the zero-skipping kernels). For tests and benchmarks:
    process-wide, not thread-safe. Returns the old mode."""
    global first_columns_mode
    modes = ("auto", "never", "always")
    if mode not in modes:
        raise ValueError(f"mode must be one of {modes}, got {mode!r}")
    old = modes[first_columns_mode]
    first_columns_mode = modes.index(mode)
    return old
