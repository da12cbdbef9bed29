# Private: the training step on several threads of mlp_cy's own (_workers.h), the
# pacer that decides between them and one, and the optimisers' update, for
# network.pyx. See _parallel.pyx.

from cython cimport floating
from ._typedefs cimport InputKind, INPUT_FLOAT32, INPUT_FLOAT64, INPUT_UINT8, intp_t, label_t
from .kernels cimport Activation


cdef struct BatchSource:          # where a batch's rows are in X
    const char *X                 # X's first row
    intp_t row_bytes              # X's row stride, in bytes
    InputKind kind                # X's element type
    const intp_t *rows            # (m,) the batch's rows of X, or NULL: start .. start + m
    intp_t start


cdef struct Pacer:                # threads for a loop of steps, measured (_parallel.pyx e)
    int n_threads                 # the most the loop may use
    int current                   # threads for the next step: n_threads or 1
    bint probing                  # the current window measures the choice not made
    int untimed                   # steps still to run before timing (after a change)
    int steps                     # steps timed in the current window
    double seconds, units         # their time and work
    double rate[2]                # seconds per unit, last window on [0] one, [1] n_threads
    double chosen_rate            # of the choice, when made (and its best since)
    int hold, held                # windows to keep the choice before the next probe
    intp_t steps_run[2]           # steps on [0] one thread, [1] n_threads

cdef void pacer_init(Pacer *p, int n_threads) noexcept nogil
cdef void pacer_resume(Pacer *p, int n_threads, intp_t n_features, intp_t n_hidden,
                       intp_t n_classes, intp_t itemsize) noexcept nogil
# pacer_init, or the choice the last loop of this shape ended with (pacer_remember).
cdef void pacer_remember(const Pacer *p, intp_t n_features, intp_t n_hidden,
                         intp_t n_classes, intp_t itemsize) noexcept nogil
cdef void pacer_record(Pacer *p, double seconds, double units) noexcept nogil
# A step of `units` of work (rows) took `seconds` on p.current threads.
cdef double pacer_clock() noexcept nogil


# The process's helper threads (_workers.h), for the engines' parallel regions: one
# pool, whichever engine runs.
ctypedef void (*part_fn)(void *ctx, int part, int n_parts) noexcept nogil
cdef void workers_run(int n_parts, part_fn fn, void *ctx) noexcept nogil
# fn(ctx, 0 .. n_parts - 1, n_parts), part 0 on the caller; returns when all are done.
cdef intp_t workers_claim(intp_t *next_chunk) noexcept nogil
# Inside a part: the next chunk of the region's work no part has taken.


cdef struct UpdateRule:           # the optimiser, other than plain SGD
    bint adam
    double momentum               # SGD: v := momentum v - eta grad
    bint nesterov                 # SGD: step momentum v - eta grad instead of v
    double beta_1, beta_2, epsilon   # Adam

cdef UpdateRule make_rule(bint adam, double momentum, bint nesterov, double beta_1,
                          double beta_2, double epsilon) noexcept nogil
cdef double step_size_at(const UpdateRule *rule, double learning_rate,
                         intp_t n_updates) noexcept nogil
# eta; for Adam, scikit-learn's bias-corrected eta sqrt(1 - beta_2^t) / (1 - beta_1^t)
# at update t = n_updates (counting this one).

cdef void apply_update(
    floating *param,              # IN/OUT (n,)
    const floating *grad,         # IN     (n,) gradient without the L2 term
    floating *state,              # IN/OUT (n,) velocity, or (2n,) Adam moments m | v
    intp_t n, intp_t state_stride,   # state_stride: the offset from m to v (Adam)
    double l2,                    # alpha / S for weights, 0 for biases
    const UpdateRule *rule,
    double step_size,             # eta, or Adam's bias-corrected rate
    double *squares_out=*,        # OUT, if not NULL: += sum of the updated param^2
) noexcept nogil
# The solver's update of a run of parameters, as scikit-learn's SGDOptimizer and
# AdamOptimizer: the same function for the serial and the parallel step.


cdef struct ParallelWork:         # what the parallel step keeps between batches
    int n_threads
    intp_t n_features, n_hidden, n_classes
    intp_t index_stride           # max(batch_size, n_features, n_classes)
    intp_t *indices               # (n_threads, index_stride) the kernels' index lists
    const void **X_rows           # (batch_size,) where a shuffled batch's rows are in X
    void *W2_t                    # (n_classes, n_hidden) W2 transposed, parameters' type;
                                  # every step updates it with W2
    intp_t max_row_chunks         # ceil(batch_size / the row chunk)
    void *bias_grads              # (max_row_chunks + 1, n_hidden + n_classes): a chunk's
                                  # bias gradients, then their sum
    double *sums                  # (max_row_chunks, 2) a chunk's loss and sum of squares
    intp_t scratch_stride         # a part's share of grad_scratch, in items
    void *grad_scratch            # (n_threads, scratch_stride) gradient chunks (not plain SGD)
    Pacer pacer                   # how many of the n_threads the next step runs on
    intp_t itemsize               # the parameters' type's size


cdef int parallel_work_init(ParallelWork *pw, int n_threads, intp_t batch_size,
                            intp_t n_features, intp_t n_hidden, intp_t n_classes,
                            const floating *W2) noexcept nogil
# 0, or -1 when out of memory (pw then owns nothing). Free with parallel_work_free.

cdef void parallel_work_free(ParallelWork *pw) noexcept nogil

cdef void parallel_gather(
    ParallelWork *pw, const BatchSource *source, intp_t m,
    floating *buffer,             # OUT (m, n_features) when the rows must be converted
    const floating **batch_out,   # OUT the batch: buffer or X's rows start .., or NULL
    intp_t *ld_out,               # OUT its row stride, in items
    const floating ***rows_out,   # OUT NULL, or (batch_out NULL) pw.X_rows: X's rows
) noexcept nogil
# Where the step reads the batch's rows: X's own rows when X is of the parameters'
# type (in place, or through row pointers for a shuffled batch), else converted into
# buffer, in parallel.

cdef double parallel_sgd_step(
    ParallelWork *pw, intp_t m,
    const floating *X_batch, intp_t ldx,    # IN  (m, n_features), or NULL and:
    const floating **X_rows,                # IN  (m,) the batch's rows, or NULL
    const label_t *y,                       # IN  y[i] or y[rows[i]]
    const floating *sample_weight,          # IN  same indexing, or NULL
    const intp_t *rows,                     # IN  (m,) or NULL
    double weight_sum,                      # IN  the batch's weight sum, > 0
    floating *W1, floating *b1, floating *W2, floating *b2,   # IN/OUT
    Activation activation, double learning_rate, double alpha,
    const UpdateRule *rule,       # NULL for plain SGD, else the solver
    floating *optimizer_state,    # IN/OUT with rule: as network's, W1 | b1 | W2 | b2
    intp_t *n_updates,            # IN/OUT, + 1 when the step updates
    floating *work,               # (m, n_features + 2 n_hidden + n_classes)
) noexcept nogil
# One step on pw.pacer.current threads, as layers_step computes it (to rounding);
# returns the loss, and updates nothing when it is not finite.

cdef int parallel_predict_proba(
    int n_threads, const BatchSource *source, intp_t n_rows, intp_t n_features,
    const floating *W1, const floating *b1, const floating *W2, const floating *b2,
    intp_t n_hidden, intp_t n_classes, Activation activation,
    floating *proba,              # OUT (n_rows, n_classes), row stride ldp
    intp_t ldp,
) noexcept nogil
# predict_proba on n_threads threads, skipping X's zeros, by chunks of rows; the same
# bits on any number of threads. 0, or -1 when out of memory (nothing was written).
