"""Backpropagation against central finite differences of the loss (float64).

Both the engine's gradient (one full-batch step of plain SGD at eta = 1) and the
NumPy reference's (reference.gradients, which the other tests trust) are checked,
for every hidden activation and for the output layer's W2 and b2.
"""

import numpy as np
import pytest

from mlp_cy import network
from mlp_cy._base import ACTIVATIONS
from reference import gradients as reference_gradients
from reference import loss as reference_loss
from reference import one_hot


def _problem(seed=0, n_samples=7, n_features=5, n_hidden=4, n_classes=3):
    rng = np.random.RandomState(seed)
    X = rng.randn(n_samples, n_features)
    y = rng.randint(0, n_classes, n_samples).astype(np.int32)
    params = [
        rng.randn(n_features, n_hidden),
        rng.randn(n_hidden),
        rng.randn(n_hidden, n_classes),
        rng.randn(n_classes),
    ]
    return X, y, params


def _engine_gradient(X, y, params, sample_weight, alpha, activation):
    """One full-batch step with eta = 1: the step taken is minus the gradient."""
    n_samples, n_features = X.shape
    n_hidden, n_classes = params[2].shape
    updated = [p.copy() for p in params]
    options = {"activation": ACTIVATIONS[activation], "learning_rate": 1.0, "alpha": alpha}
    work = np.empty(network._train_workspace_size(options, n_samples, n_features, n_hidden,
                                                  n_classes))
    stats = np.zeros(5)
    network._train_epoch(X, y, *updated, sample_weight, None, n_samples, options, None,
                         work, stats)
    return [before - after for before, after in zip(params, updated)], stats[0] / n_samples


def _numeric_gradient(X, Y, params, sample_weight, alpha, activation, eps=1e-6):
    grads = []
    for i, p in enumerate(params):
        grad = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            shifted = [q.copy() for q in params]
            shifted[i][idx] += eps
            up = reference_loss(X, Y, *shifted, sample_weight=sample_weight, alpha=alpha,
                                activation=activation)
            shifted[i][idx] -= 2 * eps
            down = reference_loss(X, Y, *shifted, sample_weight=sample_weight, alpha=alpha,
                                  activation=activation)
            grad[idx] = (up - down) / (2 * eps)
        grads.append(grad)
    return grads


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("alpha", [0.0, 0.3])
@pytest.mark.parametrize("weighted", [False, True])
def test_backprop_matches_finite_differences(activation, alpha, weighted):
    X, y, params = _problem(seed=int(alpha * 10) + weighted)
    sample_weight = np.random.RandomState(5).rand(len(X)) * 2 if weighted else None
    Y = one_hot(y, params[2].shape[1])
    if activation == "relu":
        # Central differences are wrong within eps of ReLU's kink: none is that close.
        assert np.abs(X @ params[0] + params[1]).min() > 1e-4
    analytic, loss = _engine_gradient(X, y, params, sample_weight, alpha, activation)
    numeric = _numeric_gradient(X, Y, params, sample_weight, alpha, activation)
    reference = reference_gradients(X, Y, *params, sample_weight=sample_weight,
                                    alpha=alpha, activation=activation)
    for name, a, n, r in zip(["W1", "b1", "W2", "b2"], analytic, numeric, reference):
        assert np.abs(n).max() > 1e-3, f"{name}: a vanishing gradient proves nothing"
        np.testing.assert_allclose(a, n, rtol=1e-6, atol=1e-8, err_msg=f"engine {name}")
        np.testing.assert_allclose(r, n, rtol=1e-6, atol=1e-8, err_msg=f"reference {name}")
        np.testing.assert_allclose(a, r, rtol=1e-11, atol=1e-13, err_msg=f"both {name}")
    assert loss == pytest.approx(
        reference_loss(X, Y, *params, sample_weight=sample_weight, alpha=alpha,
                       activation=activation), rel=1e-12
    )
