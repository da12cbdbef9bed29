"""An independent plain-NumPy implementation of the network (design notes §1).

Written for clarity, not speed: one-hot Y, explicit gradients, the update applied
after all four gradients are known. The tests compare the compiled engine with it.

It covers what the engine trains: one hidden layer with any of the four activations,
a softmax output, sample weights, scikit-learn's L2 term, and the optimisers of
scikit-learn's SGDOptimizer (momentum, Nesterov) and AdamOptimizer, batch by batch in
a given row order. Conventions, as scikit-learn's:
- a batch's loss is sum_i w_i loss_i / S + alpha / (2 S) (||W1||^2 + ||W2||^2), with
  S the batch's weight sum (its row count without weights); a batch of weight sum 0
  carries no gradient and changes nothing;
- the optimiser sees the gradient of that loss (the L2 part only for W1 and W2);
- Adam's step t counts updates since the optimiser was created, and its step size is
  eta sqrt(1 - beta_2^t) / (1 - beta_1^t), epsilon added to sqrt(v) before that.
"""

import numpy as np


def sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow for any z


ACTIVATIONS = {
    "identity": lambda z: z,
    "logistic": sigmoid,
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0.0),
}

# The derivative of each activation, written from its output A = act(Z).
DERIVATIVES = {
    "identity": lambda A: np.ones_like(A),
    "logistic": lambda A: A * (1.0 - A),
    "tanh": lambda A: 1.0 - A**2,
    "relu": lambda A: (A > 0).astype(A.dtype),
}


def forward(X, W1, b1, W2, b2, activation="logistic"):
    A1 = ACTIVATIONS[activation](X @ W1 + b1)
    Z2 = A1 @ W2 + b2
    Z2 = Z2 - Z2.max(axis=1, keepdims=True)
    log_A2 = Z2 - np.log(np.exp(Z2).sum(axis=1, keepdims=True))
    return A1, log_A2


def _weights(X, sample_weight):
    return np.ones(len(X)) if sample_weight is None else np.asarray(sample_weight, float)


def loss(X, Y, W1, b1, W2, b2, sample_weight=None, alpha=0.0, activation="logistic"):
    """Mean (weighted) cross-entropy plus scikit-learn's L2 term."""
    _, log_A2 = forward(X, W1, b1, W2, b2, activation)
    per_row = -(Y * log_A2).sum(axis=1)
    w = _weights(X, sample_weight)
    total = w.sum()
    penalty = 0.5 * alpha * ((W1**2).sum() + (W2**2).sum()) / total
    return (w * per_row).sum() / total + penalty


def gradients(X, Y, W1, b1, W2, b2, sample_weight=None, alpha=0.0, activation="logistic"):
    """The gradient of loss() with respect to W1, b1, W2, b2."""
    A1, log_A2 = forward(X, W1, b1, W2, b2, activation)
    w = _weights(X, sample_weight)
    total = w.sum()
    dZ2 = w[:, None] * (np.exp(log_A2) - Y) / total
    dW2 = A1.T @ dZ2 + alpha * W2 / total
    db2 = dZ2.sum(axis=0)
    dA1 = dZ2 @ W2.T
    dZ1 = dA1 * DERIVATIVES[activation](A1)
    dW1 = X.T @ dZ1 + alpha * W1 / total
    db1 = dZ1.sum(axis=0)
    return dW1, db1, dW2, db2


def one_hot(y, n_classes):
    Y = np.zeros((len(y), n_classes))
    Y[np.arange(len(y)), y] = 1.0
    return Y


def new_optimizer_state(params, solver="sgd"):
    """Velocities (SGD), or first and second moments and the step count (Adam)."""
    if solver == "adam":
        return {"t": 0, "m": [np.zeros_like(p) for p in params],
                "v": [np.zeros_like(p) for p in params]}
    return {"velocity": [np.zeros_like(p) for p in params]}


def _update(params, grads, state, *, learning_rate, solver, momentum, nesterov,
            beta_1, beta_2, epsilon):
    """scikit-learn's SGDOptimizer / AdamOptimizer update, in place on params."""
    if solver == "adam":
        state["t"] += 1
        t = state["t"]
        step = learning_rate * np.sqrt(1 - beta_2**t) / (1 - beta_1**t)
        for p, g, m, v in zip(params, grads, state["m"], state["v"]):
            m[...] = beta_1 * m + (1 - beta_1) * g
            v[...] = beta_2 * v + (1 - beta_2) * g**2
            p -= step * m / (np.sqrt(v) + epsilon)
        return
    for p, g, v in zip(params, grads, state["velocity"]):
        v[...] = momentum * v - learning_rate * g
        p += momentum * v - learning_rate * g if nesterov else v


def train_epoch(X, y, params, n_classes, *, learning_rate, batch_size,
                activation="logistic", alpha=0.0, sample_weight=None, order=None,
                solver="sgd", momentum=0.0, nesterov=True, beta_1=0.9, beta_2=0.999,
                epsilon=1e-8, state=None):
    """One epoch over the rows in `order` (default: as they are), batch by batch.

    Returns the new params, the epoch's loss_ and the optimiser state (pass it back
    for the next epoch; None starts a new optimiser). loss_ as scikit-learn records
    it: each batch's loss at its forward pass, times the batch's rows, summed, over
    n_samples.
    """
    params = [np.array(p, dtype=np.float64) for p in params]
    if state is None:
        state = new_optimizer_state(params, solver)
    order = np.arange(len(X)) if order is None else np.asarray(order)
    w = _weights(X, sample_weight)
    Y = one_hot(y, n_classes)
    loss_sum = 0.0
    for start in range(0, len(X), batch_size):
        rows = order[start:start + batch_size]
        Xb, Yb, wb = X[rows], Y[rows], w[rows]
        if wb.sum() <= 0:          # no weight, no gradient; its loss counts as 0
            continue
        loss_sum += loss(Xb, Yb, *params, sample_weight=wb, alpha=alpha,
                         activation=activation) * len(rows)
        grads = gradients(Xb, Yb, *params, sample_weight=wb, alpha=alpha,
                          activation=activation)
        _update(params, grads, state, learning_rate=learning_rate, solver=solver,
                momentum=momentum, nesterov=nesterov, beta_1=beta_1, beta_2=beta_2,
                epsilon=epsilon)
    return params, loss_sum / len(X), state


def sgd_epoch(X, y, params, learning_rate, batch_size, n_classes, alpha=0.0):
    """One epoch of plain minibatch SGD (the seed's network), rows in order."""
    params, epoch_loss, _ = train_epoch(X, y, params, n_classes,
                                        learning_rate=learning_rate,
                                        batch_size=batch_size, alpha=alpha)
    return tuple(params), epoch_loss
