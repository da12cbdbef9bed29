"""An independent plain-NumPy implementation of the seed's network (design notes §1).

Written for clarity, not speed: one-hot Y, explicit gradients, the update applied
after all four gradients are known. The tests compare the compiled engine with it.
"""

import numpy as np


def sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow for any z


def forward(X, W1, b1, W2, b2):
    A1 = sigmoid(X @ W1 + b1)
    Z2 = A1 @ W2 + b2
    Z2 = Z2 - Z2.max(axis=1, keepdims=True)
    log_A2 = Z2 - np.log(np.exp(Z2).sum(axis=1, keepdims=True))
    return A1, log_A2


def loss(X, Y, W1, b1, W2, b2, sample_weight=None, alpha=0.0):
    """Mean (weighted) cross-entropy plus scikit-learn's L2 term."""
    _, log_A2 = forward(X, W1, b1, W2, b2)
    per_row = -(Y * log_A2).sum(axis=1)
    w = np.ones(len(X)) if sample_weight is None else sample_weight
    total = w.sum()
    penalty = 0.5 * alpha * ((W1**2).sum() + (W2**2).sum()) / total
    return (w * per_row).sum() / total + penalty


def gradients(X, Y, W1, b1, W2, b2, sample_weight=None, alpha=0.0):
    A1, log_A2 = forward(X, W1, b1, W2, b2)
    w = np.ones(len(X)) if sample_weight is None else sample_weight
    total = w.sum()
    dZ2 = w[:, None] * (np.exp(log_A2) - Y) / total
    dW2 = A1.T @ dZ2 + alpha * W2 / total
    db2 = dZ2.sum(axis=0)
    dA1 = dZ2 @ W2.T
    dZ1 = dA1 * A1 * (1 - A1)
    dW1 = X.T @ dZ1 + alpha * W1 / total
    db1 = dZ1.sum(axis=0)
    return dW1, db1, dW2, db2


def one_hot(y, n_classes):
    Y = np.zeros((len(y), n_classes))
    Y[np.arange(len(y)), y] = 1.0
    return Y


def sgd_epoch(X, y, params, learning_rate, batch_size, n_classes, alpha=0.0):
    """One epoch over the rows in order; returns new params and the epoch's loss_.

    loss_ as scikit-learn records it: each batch's loss at its forward pass, times
    the batch's rows, summed, over n_samples.
    """
    W1, b1, W2, b2 = (p.copy() for p in params)
    Y = one_hot(y, n_classes)
    loss_sum = 0.0
    for start in range(0, len(X), batch_size):
        Xb, Yb = X[start:start + batch_size], Y[start:start + batch_size]
        loss_sum += loss(Xb, Yb, W1, b1, W2, b2, alpha=alpha) * len(Xb)
        dW1, db1, dW2, db2 = gradients(Xb, Yb, W1, b1, W2, b2, alpha=alpha)
        W1 -= learning_rate * dW1
        b1 -= learning_rate * db1
        W2 -= learning_rate * dW2
        b2 -= learning_rate * db2
    return (W1, b1, W2, b2), loss_sum / len(X)
