"""Real data: the seed's network on Fashion-MNIST reaches the stated accuracy.

The Debian package dataset-fashion-mnist (installed by .ci/run) provides the data.
"""

import numpy as np
import pytest
from conftest import require_system_fashion_mnist

from mlp_cy import MLPClassifier
from mlp_cy.datasets import load_mnist


@pytest.fixture(scope="module")
def fashion_mnist():
    require_system_fashion_mnist()
    return load_mnist("fashion-mnist", download=False, dtype=np.float32)


def test_seed_recipe_reaches_085_test_accuracy(fashion_mnist):
    # The textbook network (sigmoid, plain SGD): h=256, batch 64, eta 0.1, 20 epochs,
    # float32 (an independent NumPy version of the same math reaches 0.853 on this data).
    X_train, y_train, X_test, y_test = fashion_mnist
    assert X_train.shape == (60000, 784) and X_train.dtype == np.float32
    clf = MLPClassifier(hidden_layer_sizes=256, activation="logistic", solver="sgd",
                        momentum=0.0, alpha=0.0, batch_size=64, learning_rate_init=0.1,
                        max_iter=20, tol=0, n_iter_no_change=20, random_state=0)
    clf.fit(X_train, y_train)
    accuracy = clf.score(X_test, y_test)
    print(f"Fashion-MNIST test accuracy after 20 epochs: {accuracy:.4f}")
    assert clf.n_iter_ == 20
    assert clf.coefs_[0].dtype == np.float32
    assert accuracy >= 0.85
    # The training loss falls steadily: no epoch-to-epoch blow-up.
    assert clf.loss_curve_[-1] < 0.5 * clf.loss_curve_[0]
