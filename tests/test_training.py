"""Training is exactly the math of design notes §1, batch by batch.

From user-set weights, with warm_start=True and shuffle=False, one epoch of fit or
partial_fit must agree with the independent NumPy implementation in reference.py;
with scikit-learn installed, several shuffled epochs from the same random_state must
agree with scikit-learn's MLPClassifier, whose draws mlp_cy follows.
"""

import warnings

import numpy as np
import pytest

from mlp_cy import MLPClassifier
from reference import sgd_epoch

TOL = {np.float64: 1e-9, np.float32: 1e-4}
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
    clf = MLPClassifier(hidden_layer_sizes=params[0].shape[1], warm_start=True,
                        shuffle=False, max_iter=1, **{**PLAIN_SGD, **kwargs})
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


sklearn = pytest.importorskip("sklearn", reason="scikit-learn is a test dependency")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("activation", ["logistic", "tanh", "relu", "identity"])
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_scikit_learn_over_shuffled_epochs(dtype, activation, weighted):
    from sklearn.neural_network import MLPClassifier as SkMLP

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
