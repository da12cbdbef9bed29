# Private: mlp_cy's own threads (_workers.h), the pacer that decides between the
# plan's threads and one, and the optimisers' update, for layers.pyx. See
# _parallel.pyx.

from cython cimport floating
from ._typedefs cimport intp_t


cdef struct Pacer:                # threads for a loop of steps, measured (_parallel.pyx a)
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
# AdamOptimizer: the same function for every chunk of the params region (layers.pyx).
