"""The engine for any depth (layers.pyx): its gradient against central differences,
its CSR first layer against the dense one, its input checks."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from mlp_cy import MLPClassifier, MLPRegressor
from mlp_cy._base import ACTIVATIONS, OUTPUTS
from mlp_cy.layers import Epoch, Network, Options


def _network(units, activation, output, seed=0, dtype=np.float64):
    rng = np.random.RandomState(seed)
    coefs = [rng.uniform(-0.8, 0.8, (a, b)).astype(dtype) for a, b in zip(units[:-1], units[1:])]
    intercepts = [rng.uniform(-0.3, 0.3, b).astype(dtype) for b in units[1:]]
    return coefs, intercepts


def _targets(output, n, K, rng, dtype=np.float64):
    if output == "softmax":
        return rng.randint(0, K, n).astype(np.int32)
    if output == "logistic":
        return rng.randint(0, 2, (n, K)).astype(dtype)
    if output == "exp":
        return rng.poisson(1.5, (n, K)).astype(dtype)
    return rng.randn(n, K).astype(dtype)


@pytest.mark.parametrize("output", ["softmax", "logistic", "identity", "exp"])
@pytest.mark.parametrize("activation", ["identity", "logistic", "tanh", "relu"])
def test_gradient_matches_central_differences_at_depth_3(output, activation):
    units = [5, 6, 4, 3, 3]                     # three hidden layers
    rng = np.random.RandomState(1)
    X = rng.randn(12, units[0])
    y = _targets(output, 12, units[-1], rng)
    weights = rng.uniform(0.2, 2.0, 12)
    coefs, intercepts = _network(units, activation, output)
    net = Network(coefs, intercepts, ACTIVATIONS[activation], OUTPUTS[output])
    gradient = np.empty(net.n_parameters)
    alpha = 0.05
    net.loss_gradient(X, y, weights, alpha, gradient)
    # The flat layout: W_0 | b_0 | W_1 | b_1 | ...
    parameters = [p for pair in zip(coefs, intercepts) for p in pair]
    numeric = []
    h = 1e-6
    for p in parameters:
        flat = p.reshape(-1)
        for i in range(flat.size):
            saved = flat[i]
            flat[i] = saved + h
            up = net.loss_gradient(X, y, weights, alpha, np.empty_like(gradient))
            flat[i] = saved - h
            down = net.loss_gradient(X, y, weights, alpha, np.empty_like(gradient))
            flat[i] = saved
            numeric.append((up - down) / (2 * h))
    numeric = np.array(numeric)
    if output == "identity":
        # scikit-learn's squared_error averages the loss over the K outputs but not
        # its gradient (its _backprop: delta = y_pred - y); mlp_cy follows it, to
        # train to the same weights, so its data term is K times the loss's.
        l2 = np.concatenate([np.r_[alpha / weights.sum() * c.reshape(-1), np.zeros(b.size)]
                             for c, b in zip(coefs, intercepts)])
        numeric = units[-1] * (numeric - l2) + l2
    # relu's kink: a point within h of it would differ; none is at this seed.
    np.testing.assert_allclose(gradient, numeric, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("estimator", [
    MLPClassifier(hidden_layer_sizes=(16,), random_state=0, max_iter=4),
    MLPClassifier(hidden_layer_sizes=(12, 8), solver="sgd", random_state=0, max_iter=4),
    MLPRegressor(hidden_layer_sizes=(10, 6), random_state=0, max_iter=4, alpha=0.1),
    MLPClassifier(hidden_layer_sizes=(8,), solver="lbfgs", random_state=0, max_iter=20),
])
def test_sparse_input_trains_as_dense(estimator, dtype):
    rng = np.random.RandomState(0)
    X = rng.rand(120, 40) * (rng.rand(120, 40) < 0.1)
    X = X.astype(dtype)
    y = rng.randint(0, 3, 120) if isinstance(estimator, MLPClassifier) else X @ rng.randn(40)
    from sklearn.base import clone  # noqa: F401  (scikit-learn not needed: copy params)
    dense = type(estimator)(**estimator.get_params())
    sparse = type(estimator)(**estimator.get_params())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dense.fit(X, y)
        sparse.fit(sp.csr_matrix(X), y)
    rtol = 2e-4 if dtype == np.float32 else 1e-10
    for a, b in zip(dense.coefs_ + dense.intercepts_, sparse.coefs_ + sparse.intercepts_):
        assert a.dtype == b.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)
    for X_form in (sp.csr_matrix(X), sp.csc_matrix(X), sp.coo_matrix(X)):
        np.testing.assert_allclose(sparse.predict(X_form) if not hasattr(sparse, "predict_proba")
                                   else sparse.predict_proba(X_form),
                                   dense.predict(X) if not hasattr(dense, "predict_proba")
                                   else dense.predict_proba(X), rtol=rtol, atol=rtol)


def test_sparse_partial_fit_and_unsorted_duplicate_indices():
    rng = np.random.RandomState(2)
    X = rng.rand(50, 30) * (rng.rand(50, 30) < 0.2)
    y = rng.randint(0, 4, 50)
    # Duplicated, unsorted entries that sum to X: the products are linear in X.
    coo = sp.coo_matrix(X)
    doubled = sp.csr_matrix((np.r_[coo.data / 2, coo.data / 2][::-1],
                             (np.r_[coo.row, coo.row][::-1], np.r_[coo.col, coo.col][::-1])),
                            shape=X.shape)
    doubled.has_canonical_format = False
    a = MLPClassifier(hidden_layer_sizes=(8, 8), random_state=0)
    b = MLPClassifier(hidden_layer_sizes=(8, 8), random_state=0)
    for _ in range(3):
        a.partial_fit(X, y, classes=np.arange(4))
        b.partial_fit(doubled, y, classes=np.arange(4))
    for p, q in zip(a.coefs_, b.coefs_):
        np.testing.assert_allclose(p, q, rtol=1e-10, atol=1e-12)


def test_sparse_x_with_nan_is_refused():
    X = sp.csr_matrix(np.array([[0.0, np.nan], [1.0, 0.0]]))
    with pytest.raises(ValueError, match="NaN or infinity"):
        MLPClassifier().fit(X, [0, 1])


def test_network_checks_its_inputs():
    coefs, intercepts = _network([3, 4, 2], "relu", "softmax")
    net = Network(coefs, intercepts, ACTIVATIONS["relu"], OUTPUTS["softmax"])
    with pytest.raises(ValueError, match="features"):
        net.predict(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="class codes"):
        net.loss_gradient(np.zeros((2, 3)), np.array([0, 2], np.int32), None, 0.0,
                          np.empty(net.n_parameters))
    with pytest.raises(ValueError, match="column indices"):
        net.predict((np.ones(1), np.array([7], np.intp), np.array([0, 1], np.intp)))
    with pytest.raises(ValueError, match="does not follow"):
        Network([np.zeros((3, 4)), np.zeros((5, 2))], [np.zeros(4), np.zeros(2)], 0, 0)
    with pytest.raises(ValueError, match="unknown output"):
        Network(coefs, intercepts, 0, 9)


@pytest.mark.parametrize("hidden", [(32,), (16, 8)])   # the seed's engine, then layers
def test_early_stopping_trains_on_its_rows_in_place(hidden):
    # The training part of the split is visited through the engine's `order`: no copy
    # of X (only the held-out rows are copied, to score them).
    import tracemalloc

    rng = np.random.RandomState(0)
    X = rng.rand(6000, 500).astype(np.float32)
    y = rng.randint(0, 3, 6000)
    clf = MLPClassifier(hidden_layer_sizes=hidden, early_stopping=True, max_iter=1,
                        validation_fraction=0.1, random_state=0)
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.fit(X, y)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.4 * X.nbytes, (peak, X.nbytes)


@pytest.mark.parametrize("engine", ["network", "layers"])
def test_an_order_that_leaves_rows_out_trains_as_their_copy(engine):
    from mlp_cy import network

    rng = np.random.RandomState(1)
    X = rng.rand(100, 6)
    y = rng.randint(0, 3, 100).astype(np.int32)
    subset = rng.permutation(100)[:70].astype(np.intp)
    coefs, intercepts = _network([6, 5, 3], "tanh", "softmax")
    options = dict(activation=ACTIVATIONS["tanh"], learning_rate=0.1, alpha=0.01,
                   solver=1)
    results = []
    for X_in, y_in, order in ((X, y, subset), (X[subset], y[subset], None)):
        params = [p.copy() for p in coefs + intercepts]
        stats = np.zeros(5)
        if engine == "network":
            state = np.zeros(network._optimizer_state_size(options, 6, 5, 3))
            work = np.empty(network._train_workspace_size(options, 16, 6, 5, 3))
            network._train_epoch(X_in, y_in, params[0], params[2], params[1], params[3],
                                 None, order, 16, options, state, work, stats)
        else:
            net = Network(params[:2], params[2:], ACTIVATIONS["tanh"], OUTPUTS["softmax"])
            typed = Options(solver=1, learning_rate=0.1, alpha=0.01)
            state = np.zeros(net.state_size(typed))
            epoch = Epoch()
            net.train_epoch(X_in, y_in, None, order, 16, typed, state,
                            np.empty(net.workspace_size(16)), epoch)
            stats[:] = (epoch.loss_sum, epoch.n_rows_done, epoch.n_batches_done,
                        epoch.diverged, epoch.n_updates)
        results.append((params, stats))
    (a, stats_a), (b, stats_b) = results
    assert stats_a[1] == 70 and stats_a[2] == 5
    np.testing.assert_array_equal(stats_a, stats_b)
    for p, q in zip(a, b):
        np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", ["logistic", "relu"])
def test_the_batch_1_sweep_computes_the_general_step(dtype, activation):
    # The plan's one special case (layers.pyx, "The batch-1 sweep"): an epoch of
    # single rows with plain SGD and no L2 on the seed's network, dense X. The same X
    # as CSR takes the general step row by row; both must give the same weights to
    # rounding (rows of weight 0 skipped, weights cancelling in the others).
    rng = np.random.RandomState(4)
    X = rng.rand(60, 40) * (rng.rand(60, 40) < 0.4)          # mostly zeros
    y = rng.randint(0, 5, 60).astype(np.int32)
    weights = rng.uniform(0.5, 2.0, 60).astype(dtype)
    weights[[3, 17]] = 0
    order = rng.permutation(60).astype(np.intp)
    options = Options(learning_rate=0.05)                 # plain SGD, no L2
    csr = sp.csr_matrix(X.astype(dtype))
    csr_X = (csr.data, csr.indices.astype(np.intp), csr.indptr.astype(np.intp))
    results = []
    for data, sweeps in ((X.astype(dtype), True), (csr_X, False)):
        coefs, intercepts = _network([40, 16, 5], activation, "softmax", dtype=dtype)
        net = Network(coefs, intercepts, ACTIVATIONS[activation], OUTPUTS["softmax"])
        assert net.plan(data, 1, options)["sweep"] is sweeps
        epoch = Epoch()
        net.train_epoch(data, y, weights, order, 1, options, None,
                        np.empty(net.workspace_size(1), dtype), epoch)
        assert (epoch.n_rows_done, epoch.n_batches_done, epoch.diverged,
                epoch.n_updates) == (60, 60, False, 58)
        results.append((coefs + intercepts, epoch.loss_sum))
    (swept, swept_loss), (general, general_loss) = results
    rtol = 1e-4 if dtype == np.float32 else 1e-12
    for a, b in zip(swept, general):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(swept_loss, general_loss, rtol=rtol)


def test_the_engine_takes_typed_options_and_reports_in_an_epoch():
    # The estimator's seam: layers.Options (checked once, learning_rate per epoch)
    # and layers.Epoch (what an epoch did, and the update count carried over).
    from mlp_cy.network import Solver

    with pytest.raises(ValueError, match="learning_rate > 0"):
        Options(learning_rate=0.0)
    with pytest.raises(ValueError, match="momentum <= 1"):
        Options(learning_rate=0.1, momentum=1.5)
    with pytest.raises(ValueError, match="solver"):
        Options(learning_rate=0.1, solver=7)
    with pytest.raises(TypeError):
        Options(0.1)                                     # keywords only
    options = Options(solver=Solver.ADAM, learning_rate=1e-3, alpha=1e-4)
    assert options.solver == Solver.ADAM and "ADAM" in repr(options)
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        options.learning_rate = -1.0
    options.learning_rate = 2e-3
    assert options.learning_rate == 2e-3

    rng = np.random.RandomState(2)
    X, y = rng.rand(30, 4), rng.randint(0, 3, 30).astype(np.int32)
    coefs, intercepts = _network([4, 5, 3], "relu", "softmax")
    net = Network(coefs, intercepts, ACTIVATIONS["relu"], OUTPUTS["softmax"])
    state = np.zeros(net.state_size(options))
    assert state.shape == (2 * net.n_parameters,)        # Adam's two moments
    epoch = Epoch(n_updates=5)
    work = np.empty(net.workspace_size(8))
    with pytest.raises(TypeError):                       # no dict of options any more
        net.train_epoch(X, y, None, None, 8, {"learning_rate": 0.1}, state, work, epoch)
    net.train_epoch(X, y, None, None, 8, options, state, work, epoch)
    assert (epoch.n_rows_done, epoch.n_batches_done, epoch.diverged) == (30, 4, False)
    assert epoch.n_updates == 5 + 4 and np.isfinite(epoch.loss_sum) and epoch.loss_sum > 0
