"""Training is exactly the math of design notes §1, batch by batch.

From user-set weights, with warm_start=True, the epochs of fit or partial_fit must
agree with the independent NumPy implementation in reference.py: every activation,
plain SGD, momentum, Nesterov and Adam, L2, sample weights, rows in order or shuffled
as the estimator draws them, batch_size 1 (the engine's own loop) included. With
scikit-learn installed, several shuffled epochs from the same random_state must also
agree with scikit-learn's MLPClassifier, whose draws mlp_cy follows.
"""

import warnings

import numpy as np
import pytest
from conftest import importorskip

from mlp_cy import MLPClassifier
from reference import sgd_epoch, train_epoch

# Rounding, not slack: float64 agrees to about 1e-13 here, float32 to about 1e-6.
TOL = {np.float64: 1e-11, np.float32: 1e-5}
# The reference is the textbook network: a sigmoid hidden layer and plain minibatch
# SGD (not the defaults: ReLU, Adam, alpha=1e-4).
PLAIN_SGD = dict(activation="logistic", solver="sgd", momentum=0.0, alpha=0.0)


def _problem(dtype, n_samples=103, n_features=20, n_hidden=8, n_classes=4, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.randn(n_samples, n_features).astype(dtype)
    y = rng.randint(0, n_classes, n_samples)
    y[:n_classes] = np.arange(n_classes)          # every class present
    params = [
        0.3 * rng.randn(n_features, n_hidden),
        0.1 * rng.randn(n_hidden),
        0.3 * rng.randn(n_hidden, n_classes),
        0.1 * rng.randn(n_classes),
    ]
    return X, y, [p.astype(dtype) for p in params]


def _with_weights(params, **kwargs):
    settings = dict(warm_start=True, shuffle=False, max_iter=1, **PLAIN_SGD)
    clf = MLPClassifier(hidden_layer_sizes=params[0].shape[1], **{**settings, **kwargs})
    clf.coefs_ = [params[0].copy(), params[2].copy()]
    clf.intercepts_ = [params[1].copy(), params[3].copy()]
    return clf


def _assert_params_close(clf, expected, rtol):
    got = [clf.coefs_[0], clf.intercepts_[0], clf.coefs_[1], clf.intercepts_[1]]
    for name, g, e in zip(["W1", "b1", "W2", "b2"], got, expected):
        assert g.dtype == clf.coefs_[0].dtype
        np.testing.assert_allclose(g, e, rtol=rtol, atol=rtol * np.abs(e).max(),
                                   err_msg=name)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("batch_size", [16, 103, 1])
@pytest.mark.parametrize("alpha", [0.0, 0.01])
def test_one_epoch_from_user_weights_matches_reference(dtype, batch_size, alpha):
    X, y, params = _problem(dtype)
    expected, expected_loss = sgd_epoch(
        X.astype(np.float64), y, [p.astype(np.float64) for p in params],
        learning_rate=0.5, batch_size=batch_size, n_classes=4, alpha=alpha)
    clf = _with_weights(params, learning_rate_init=0.5, batch_size=batch_size, alpha=alpha)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # max_iter=1 does not converge
        clf.fit(X, y)
    _assert_params_close(clf, expected, TOL[dtype])
    assert clf.coefs_[0].dtype == dtype
    assert clf.loss_curve_ == [pytest.approx(expected_loss, rel=TOL[dtype])]
    assert clf.loss_ == clf.loss_curve_[-1]
    assert clf.n_iter_ == 1 and clf.t_ == len(X)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_partial_fit_epochs_match_reference(dtype):
    X, y, params = _problem(dtype, seed=1)
    clf = _with_weights(params, learning_rate_init=0.2, batch_size=10)
    expected = [p.astype(np.float64) for p in params]
    for _ in range(3):
        expected, expected_loss = sgd_epoch(X.astype(np.float64), y, expected,
                                            learning_rate=0.2, batch_size=10, n_classes=4)
        clf.partial_fit(X, y, classes=np.arange(4))
        assert clf.loss_curve_[-1] == pytest.approx(expected_loss, rel=TOL[dtype])
    _assert_params_close(clf, expected, TOL[dtype])
    assert len(clf.loss_curve_) == 3 and clf.t_ == 3 * len(X)


def test_last_short_batch_uses_its_own_row_count():
    # 103 rows in batches of 50: 50, 50, 3. Moving the 3 rows into a batch of 53
    # must give a different result, so the short batch really is separate.
    X, y, params = _problem(np.float64)
    expected, _ = sgd_epoch(X, y, params, learning_rate=0.5, batch_size=50, n_classes=4)
    clf = _with_weights(params, learning_rate_init=0.5, batch_size=50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X, y)
    _assert_params_close(clf, expected, 1e-9)
    other, _ = sgd_epoch(X, y, params, learning_rate=0.5, batch_size=53, n_classes=4)
    assert not np.allclose(clf.coefs_[0], other[0], rtol=1e-6)


ACTIVATIONS = ["logistic", "tanh", "relu", "identity"]
# The estimator's parameters of each optimiser, and the reference's.
OPTIMISERS = {
    "sgd": (dict(solver="sgd", momentum=0.0, learning_rate_init=0.2),
            dict(solver="sgd", momentum=0.0, learning_rate=0.2)),
    "momentum": (dict(solver="sgd", momentum=0.9, nesterovs_momentum=False,
                      learning_rate_init=0.05),
                 dict(solver="sgd", momentum=0.9, nesterov=False, learning_rate=0.05)),
    "nesterov": (dict(solver="sgd", momentum=0.8, nesterovs_momentum=True,
                      learning_rate_init=0.05),
                 dict(solver="sgd", momentum=0.8, nesterov=True, learning_rate=0.05)),
    "adam": (dict(solver="adam", beta_1=0.8, beta_2=0.99, epsilon=1e-7,
                  learning_rate_init=0.01),
             dict(solver="adam", beta_1=0.8, beta_2=0.99, epsilon=1e-7, learning_rate=0.01)),
}


def _shuffled_orders(n_samples, random_state, n_epochs):
    """The rows of each epoch as the estimator visits them: each epoch permutes the
    last epoch's order with a draw from RandomState(random_state) (its weights are
    the user's, so no draw comes before), as sklearn.utils.shuffle does."""
    rng = np.random.RandomState(random_state)
    order, orders = np.arange(n_samples), []
    for _ in range(n_epochs):
        order = order[rng.permutation(n_samples)]
        orders.append(order)
    return orders


def _reference_epochs(X, y, params, n_epochs, orders, **kwargs):
    """n_epochs of reference.train_epoch, the optimiser state carried over; returns
    the final params and the loss curve."""
    params = [p.astype(np.float64) for p in params]
    state, curve = None, []
    for epoch in range(n_epochs):
        params, epoch_loss, state = train_epoch(
            X.astype(np.float64), y, params, 4, state=state,
            order=None if orders is None else orders[epoch], **kwargs)
        curve.append(epoch_loss)
    return params, curve


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("optimiser", list(OPTIMISERS))
@pytest.mark.parametrize("weighted", [False, True])
def test_shuffled_epochs_match_reference(dtype, activation, optimiser, weighted):
    # Three shuffled epochs with L2 and a short last batch (103 = 6 x 16 + 7): the
    # optimiser's state (velocities, Adam's moments and step count) carries over.
    X, y, params = _problem(dtype, seed=2)
    sample_weight = np.random.RandomState(4).rand(len(X)) * 2 if weighted else None
    ours, theirs = OPTIMISERS[optimiser]
    clf = _with_weights(params, activation=activation, alpha=0.01, batch_size=16,
                        shuffle=True, random_state=5, max_iter=3, tol=0,
                        n_iter_no_change=100, **ours)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # 3 epochs do not converge
        clf.fit(X, y, sample_weight=sample_weight)
    expected, curve = _reference_epochs(
        X, y, params, 3, _shuffled_orders(len(X), 5, 3), activation=activation,
        alpha=0.01, batch_size=16, sample_weight=sample_weight, **theirs)
    _assert_params_close(clf, expected, TOL[dtype])
    np.testing.assert_allclose(clf.loss_curve_, curve, rtol=TOL[dtype])
    assert clf.n_iter_ == 3 and clf.t_ == 3 * len(X)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_batch_size_one_matches_reference(dtype, activation, shuffle, weighted):
    # batch_size 1 with plain SGD and no L2 runs the engine's sample-by-sample loop
    # (network.pyx, design note f), not the batched step. Weights of 0 skip a row.
    X, y, params = _problem(dtype, n_samples=60, seed=3)
    sample_weight = None
    if weighted:
        sample_weight = np.random.RandomState(6).rand(len(X)) * 2
        sample_weight[::7] = 0.0
    clf = _with_weights(params, activation=activation, batch_size=1, shuffle=shuffle,
                        random_state=8, max_iter=2, tol=0, n_iter_no_change=100,
                        learning_rate_init=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # 2 epochs do not converge
        clf.fit(X, y, sample_weight=sample_weight)
    orders = _shuffled_orders(len(X), 8, 2) if shuffle else None
    expected, curve = _reference_epochs(X, y, params, 2, orders, activation=activation,
                                        learning_rate=0.05, batch_size=1,
                                        sample_weight=sample_weight)
    _assert_params_close(clf, expected, TOL[dtype])
    np.testing.assert_allclose(clf.loss_curve_, curve, rtol=TOL[dtype])


def test_invscaling_schedule_matches_reference():
    # The step size after each epoch is learning_rate_init / (t_ + 1) ** power_t.
    X, y, params = _problem(np.float64, seed=4)
    clf = _with_weights(params, learning_rate="invscaling", power_t=0.4, batch_size=20,
                        learning_rate_init=0.5, max_iter=3, tol=0, n_iter_no_change=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X, y)
    expected = params
    for epoch in range(3):
        rate = 0.5 / (epoch * len(X) + 1) ** 0.4 if epoch else 0.5
        expected, _ = sgd_epoch(X, y, expected, learning_rate=rate, batch_size=20,
                                n_classes=4)
    _assert_params_close(clf, expected, 1e-9)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_scikit_learn_over_shuffled_epochs(dtype, activation, weighted):
    SkMLP = importorskip("sklearn.neural_network",
                         reason="scikit-learn is a test dependency").MLPClassifier

    X, y, _ = _problem(dtype, n_samples=157, seed=3)
    labels = np.array(["ant", "bee", "cat", "dog"])[y]
    sample_weight = np.random.RandomState(0).rand(len(X)) if weighted else None
    common = dict(hidden_layer_sizes=(12,), activation=activation, learning_rate_init=0.05,
                  batch_size=32, max_iter=4, alpha=1e-3, random_state=7, tol=0)
    ours = MLPClassifier(solver="sgd", momentum=0.0, **common)
    theirs = SkMLP(solver="sgd", momentum=0.0, **common)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours.fit(X, labels, sample_weight=sample_weight)
        theirs.fit(X, labels, sample_weight=sample_weight)
    tol = TOL[dtype]
    for ours_p, theirs_p in zip(ours.coefs_ + ours.intercepts_,
                                theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(ours_p, theirs_p, rtol=tol, atol=tol)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=tol)
    np.testing.assert_array_equal(ours.classes_, theirs.classes_)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X),
                               rtol=tol, atol=tol)
    assert (ours.n_iter_, ours.t_) == (theirs.n_iter_, theirs.t_)
