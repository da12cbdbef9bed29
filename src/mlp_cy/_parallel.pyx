# mlp_cy's own threads, for the layers engine (layers.pyx, "The plan"): the helper
# pool (_workers.h), the pacer that decides between the plan's threads and one, and
# the optimisers' update of a run of parameters.
# Design:
# a) The pacer: a loop of steps (an epoch) times its steps on its threads and on
#    one, now and then, and keeps one thread while the threads do not pay (a busy
#    machine: a helper that another process pushed off its core holds up every
#    region it took part in). Which thread count runs a step never changes its bits:
#    the chunks are the plan's.
# b) One pool of helper threads for the process; workers_run runs a region's parts
#    on it, part 0 on the caller, and a second concurrent caller runs its parts on
#    its own thread instead of waiting (_workers.h).
# c) Every solver's update (momentum, Nesterov, Adam) is one loop over a run of
#    parameters and of the optimiser's state (_update.h, per instruction-set level),
#    so the params region applies it chunk by chunk on any thread.

from libc.math cimport pow, sqrt

from ._typedefs cimport intp_t
from ._blas cimport active_level

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


# Tests and benchmarks ########################################################

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
