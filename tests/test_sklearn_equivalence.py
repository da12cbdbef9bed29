"""Weights equal scikit-learn's from the same random_state, at any depth, for every
output layer, solver, schedule and option (issues 16 and 17): the same draws, the
same batches, the same formulas, so float64 weights agree to 1e-9 after several
shuffled epochs, and L-BFGS's to 1e-8."""

import warnings

import numpy as np
import pytest
from conftest import importorskip

from mlp_cy import MLPClassifier, MLPRegressor

sklearn_nn = importorskip("sklearn.neural_network")

DEPTHS = [(7,), (6, 5), (6, 5, 4)]


def _data(kind, n=90, n_features=6, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.randn(n, n_features)
    if kind == "multiclass":
        y = rng.randint(0, 3, n)
    elif kind == "binary":
        y = rng.randint(0, 2, n)
    elif kind == "multilabel":
        y = rng.randint(0, 2, (n, 3))
    elif kind == "regression":
        y = X @ rng.randn(n_features, 2)
    else:  # poisson
        y = rng.poisson(np.exp(0.3 * X[:, 0])).astype(float)
    return X, y


def _pair(kind, **params):
    if kind in ("regression", "poisson"):
        loss = "poisson" if kind == "poisson" else "squared_error"
        return (MLPRegressor(loss=loss, **params),
                sklearn_nn.MLPRegressor(loss=loss, **params))
    return MLPClassifier(**params), sklearn_nn.MLPClassifier(**params)


def _fit_both(kind, fit_kwargs=None, **params):
    X, y = _data(kind)
    ours, theirs = _pair(kind, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours.fit(X, y, **(fit_kwargs or {}))
        theirs.fit(X, y, **(fit_kwargs or {}))
    return ours, theirs, X


def _assert_same(ours, theirs, X, rtol=1e-9):
    assert ours.out_activation_ == theirs.out_activation_
    assert ours.n_outputs_ == theirs.n_outputs_
    assert ours.n_iter_ == theirs.n_iter_
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)
    if hasattr(theirs, "loss_curve_"):
        np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=rtol)
    if hasattr(theirs, "predict_proba"):
        np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X),
                                   rtol=rtol, atol=rtol)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("hidden", DEPTHS)
@pytest.mark.parametrize("kind", ["multiclass", "binary", "multilabel", "regression",
                                  "poisson"])
@pytest.mark.parametrize("activation", ["identity", "logistic", "tanh", "relu"])
def test_adam_every_output_and_activation(hidden, kind, activation):
    ours, theirs, X = _fit_both(kind, hidden_layer_sizes=hidden, activation=activation,
                                max_iter=6, batch_size=16, alpha=1e-3,
                                learning_rate_init=0.01, random_state=1)
    _assert_same(ours, theirs, X)


@pytest.mark.parametrize("hidden", DEPTHS)
@pytest.mark.parametrize("solver_params", [
    dict(solver="sgd", momentum=0.0),
    dict(solver="sgd", momentum=0.9, nesterovs_momentum=False),
    dict(solver="sgd", momentum=0.9, nesterovs_momentum=True),
    dict(solver="sgd", momentum=0.5, learning_rate="invscaling", power_t=0.3),
    dict(solver="sgd", momentum=0.5, learning_rate="adaptive", n_iter_no_change=1,
         tol=10.0),
    dict(solver="adam", beta_1=0.8, beta_2=0.99, epsilon=1e-6),
])
@pytest.mark.parametrize("kind", ["multiclass", "binary", "regression"])
def test_every_solver_and_schedule(hidden, solver_params, kind):
    ours, theirs, X = _fit_both(kind, hidden_layer_sizes=hidden, max_iter=5,
                                batch_size=20, alpha=0.01, learning_rate_init=0.02,
                                random_state=3, **solver_params)
    _assert_same(ours, theirs, X)


@pytest.mark.parametrize("hidden", DEPTHS)
@pytest.mark.parametrize("kind", ["multiclass", "multilabel", "regression", "poisson"])
def test_sample_weights(hidden, kind):
    weights = np.random.RandomState(5).uniform(0, 2, 90)
    ours, theirs, X = _fit_both(kind, fit_kwargs={"sample_weight": weights},
                                hidden_layer_sizes=hidden, max_iter=4, batch_size=25,
                                random_state=2, learning_rate_init=0.01)
    _assert_same(ours, theirs, X)


@pytest.mark.parametrize("hidden", DEPTHS)
def test_regressor_early_stopping(hidden):
    # scikit-learn's unstratified split, its R^2 validation score, its best weights.
    ours, theirs, X = _fit_both("regression", hidden_layer_sizes=hidden, max_iter=15,
                                early_stopping=True, n_iter_no_change=3,
                                learning_rate_init=0.01, random_state=4)
    _assert_same(ours, theirs, X)
    np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_,
                               rtol=1e-9)


@pytest.mark.parametrize("hidden", DEPTHS)
@pytest.mark.parametrize("kind", ["multiclass", "binary", "multilabel", "regression",
                                  "poisson"])
def test_lbfgs(hidden, kind):
    ours, theirs, X = _fit_both(kind, solver="lbfgs", hidden_layer_sizes=hidden,
                                max_iter=30, alpha=1e-3, random_state=0)
    _assert_same(ours, theirs, X, rtol=1e-8)
    assert abs(ours.loss_ - theirs.loss_) <= 1e-8 * abs(theirs.loss_)


@pytest.mark.parametrize("kind", ["multiclass", "regression"])
def test_lbfgs_max_fun_and_sample_weight(kind):
    weights = np.random.RandomState(6).uniform(0.5, 1.5, 90)
    ours, theirs, X = _fit_both(kind, fit_kwargs={"sample_weight": weights},
                                solver="lbfgs", hidden_layer_sizes=(6, 4), max_fun=12,
                                random_state=0)
    _assert_same(ours, theirs, X, rtol=1e-8)


@pytest.mark.parametrize("hidden", DEPTHS)
def test_partial_fit_continues_as_sklearn(hidden):
    X, y = _data("multiclass")
    ours, theirs = _pair("multiclass", hidden_layer_sizes=hidden, random_state=0)
    for _ in range(3):
        ours.partial_fit(X, y, classes=[0, 1, 2])
        theirs.partial_fit(X, y, classes=[0, 1, 2])
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
