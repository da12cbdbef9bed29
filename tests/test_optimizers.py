"""Momentum, Nesterov, Adam, L2, schedules, early stopping, class and sample weights.

Each is checked against an independent reference from the same weights:
scikit-learn's MLPClassifier (same parameter names, same random draws) for the
optimisers, schedules and early-stopping rules, and PyTorch's SGD and Adam.
"""

import math
import warnings

import numpy as np
import pytest
from conftest import importorskip

from mlp_cy import MLPClassifier


def _problem(dtype=np.float64, n_samples=180, n_features=12, n_classes=4, seed=0):
    rng = np.random.RandomState(seed)
    centers = 1.5 * rng.randn(n_classes, n_features)
    y = rng.randint(0, n_classes, n_samples)
    X = centers[y] + rng.randn(n_samples, n_features)
    return X.astype(dtype), y


# The textbook network, the defaults before they became scikit-learn's (ReLU, Adam):
# for the tests about plain SGD.
PLAIN_SGD = dict(activation="logistic", solver="sgd", momentum=0.0, alpha=0.0)


def _quiet_fit(clf, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return clf.fit(*args, **kwargs)


def _assert_same_model(ours, theirs, rtol):
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=rtol)
    assert ours.n_iter_ == theirs.n_iter_ and ours.t_ == theirs.t_


SOLVERS = [
    dict(solver="sgd", momentum=0.9, nesterovs_momentum=False),
    dict(solver="sgd", momentum=0.9, nesterovs_momentum=True),
    dict(solver="sgd", momentum=0.5, learning_rate="invscaling", power_t=0.3),
    dict(solver="sgd", momentum=0.0, learning_rate="adaptive", tol=0.05, n_iter_no_change=1),
    dict(solver="adam", learning_rate_init=0.01),
    dict(solver="adam", learning_rate_init=0.003, beta_1=0.8, beta_2=0.99, epsilon=1e-6),
]


@pytest.mark.parametrize("params", SOLVERS, ids=lambda p: "-".join(map(str, p.values())))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_optimisers_and_schedules_match_scikit_learn(params, dtype):
    importorskip("sklearn")
    from sklearn.neural_network import MLPClassifier as SkMLP

    X, y = _problem(dtype)
    common = dict(hidden_layer_sizes=(10,), activation="logistic", alpha=1e-3,
                  batch_size=32, max_iter=12, random_state=3, learning_rate_init=0.05)
    common.update(params)
    ours = _quiet_fit(MLPClassifier(**common), X, y)
    theirs = _quiet_fit(SkMLP(**common), X, y)
    _assert_same_model(ours, theirs, rtol=1e-9 if dtype == np.float64 else 1e-4)


def test_adaptive_schedule_divides_the_rate_by_five():
    X, y = _problem()
    clf = _quiet_fit(MLPClassifier(hidden_layer_sizes=8, learning_rate="adaptive",
                                   learning_rate_init=0.1, tol=1.0, n_iter_no_change=1,
                                   max_iter=6, random_state=0, **PLAIN_SGD), X, y)
    # Epoch 1 improves on inf; after it the counter reaches 2 > 1 at epochs 3 and 5.
    assert clf._learning_rate == pytest.approx(0.1 / 5**2)
    assert clf.n_iter_ == 6


def test_partial_fit_keeps_the_optimiser_state_like_scikit_learn():
    importorskip("sklearn")
    from sklearn.neural_network import MLPClassifier as SkMLP

    X, y = _problem()
    common = dict(hidden_layer_sizes=(10,), activation="logistic", solver="adam",
                  alpha=0.0, learning_rate_init=0.01, batch_size=30, random_state=1)
    ours, theirs = MLPClassifier(**common), SkMLP(**common)
    for chunk in np.array_split(np.arange(len(X)), 3):
        ours.partial_fit(X[chunk], y[chunk], classes=np.arange(4))
        theirs.partial_fit(X[chunk], y[chunk], classes=np.arange(4))
    np.testing.assert_allclose(ours.coefs_[0], theirs.coefs_[0], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-9)


def _shuffle_split(self, y_codes):
    """scikit-learn's unstratified train_test_split draw (ShuffleSplit), for comparison."""
    n_samples = len(y_codes)
    n_val = math.ceil(self.validation_fraction * n_samples)
    permutation = self._random_state.permutation(n_samples)
    return permutation[n_val:], permutation[:n_val]


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_early_stopping_rules_match_scikit_learn(monkeypatch, solver):
    # scikit-learn splits multiclass data without stratifying; given that same split,
    # the validation scores, the stopping epoch and the restored best weights agree.
    importorskip("sklearn")
    from sklearn.neural_network import MLPClassifier as SkMLP

    monkeypatch.setattr(MLPClassifier, "_validation_split", _shuffle_split)
    X, y = _problem(n_samples=300)
    common = dict(hidden_layer_sizes=(10,), solver=solver, momentum=0.9, alpha=1e-4,
                  learning_rate_init=0.05 if solver == "sgd" else 0.01, batch_size=25,
                  max_iter=200, early_stopping=True, validation_fraction=0.2,
                  n_iter_no_change=3, tol=1e-3, random_state=5)
    ours = _quiet_fit(MLPClassifier(activation="logistic", **common), X, y)
    theirs = _quiet_fit(SkMLP(activation="logistic", **common), X, y)
    assert ours.n_iter_ < 200, "early stopping never triggered"
    _assert_same_model(ours, theirs, rtol=1e-9)
    np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_)
    assert ours.best_validation_score_ == theirs.best_validation_score_
    assert ours.best_loss_ is None and theirs.best_loss_ is None
    assert len(ours.validation_loss_curve_) == ours.n_iter_


def test_validation_split_is_stratified():
    rng = np.random.RandomState(0)
    y = np.repeat([0, 1, 2], [500, 300, 200])
    clf = MLPClassifier(validation_fraction=0.1)
    clf.classes_ = np.arange(3)
    clf._random_state = rng
    train, val = clf._validation_split(y)
    assert len(val) == 100 and len(train) == 900
    assert sorted(np.concatenate([train, val])) == list(range(1000))
    np.testing.assert_array_equal(np.bincount(y[val]), [50, 30, 20])


def test_validation_loss_curve_is_the_log_loss_on_the_held_out_rows(monkeypatch):
    held_out = {}

    def split(self, y_codes):
        train, val = _shuffle_split(self, y_codes)
        held_out["rows"] = val
        return train, val

    monkeypatch.setattr(MLPClassifier, "_validation_split", split)
    X, y = _problem()
    clf = _quiet_fit(MLPClassifier(hidden_layer_sizes=6, early_stopping=True, max_iter=1,
                                   learning_rate_init=0.1, random_state=0), X, y)
    rows = held_out["rows"]
    proba = clf.predict_proba(X[rows])
    expected = -np.mean(np.log(proba[np.arange(len(rows)), y[rows]]))
    assert clf.validation_loss_curve_ == [pytest.approx(expected, rel=1e-12)]
    assert clf.validation_scores_ == [np.mean(proba.argmax(axis=1) == y[rows])]


def test_class_weight_is_a_per_class_sample_weight():
    X, y = _problem()
    weights = {0: 3.0, 1: 0.5, 2: 1.0, 3: 2.0}
    common = dict(hidden_layer_sizes=6, max_iter=5, random_state=0, learning_rate_init=0.1)
    a = _quiet_fit(MLPClassifier(class_weight=weights, **common), X, y)
    b = _quiet_fit(MLPClassifier(**common), X, y,
                   sample_weight=np.array([weights[k] for k in y]))
    np.testing.assert_array_equal(a.coefs_[0], b.coefs_[0])
    counts = np.bincount(y)
    balanced = len(y) / (4 * counts)
    c = _quiet_fit(MLPClassifier(class_weight="balanced", **common), X, y)
    d = _quiet_fit(MLPClassifier(**common), X, y, sample_weight=balanced[y])
    np.testing.assert_allclose(c.coefs_[0], d.coefs_[0], rtol=1e-12)


def test_balanced_class_weight_lifts_the_minority_class():
    rng = np.random.RandomState(0)
    X = np.vstack([rng.randn(950, 2), rng.randn(50, 2) + [1.5, 1.5]])
    y = np.repeat([0, 1], [950, 50])
    common = dict(hidden_layer_sizes=8, learning_rate_init=0.1, batch_size=50,
                  max_iter=60, random_state=0, **PLAIN_SGD)
    plain = _quiet_fit(MLPClassifier(**common), X, y)
    balanced = _quiet_fit(MLPClassifier(class_weight="balanced", **common), X, y)
    recall = lambda clf: np.mean(clf.predict(X[y == 1]) == 1)  # noqa: E731
    assert recall(balanced) > recall(plain) + 0.3


def test_sample_weight_zero_rows_are_ignored():
    # Zero-weight rows change nothing when they form their own batch.
    X, y = _problem(n_samples=64)
    noise = np.random.RandomState(1).randn(*X.shape)
    common = dict(hidden_layer_sizes=5, batch_size=32, shuffle=False, max_iter=3,
                  random_state=0, learning_rate_init=0.1)
    a = _quiet_fit(MLPClassifier(**common), X[:32], y[:32])
    b = _quiet_fit(MLPClassifier(**common), np.vstack([X[:32], noise[:32]]),
                   np.concatenate([y[:32], y[32:]]),
                   sample_weight=np.repeat([1.0, 0.0], 32))
    np.testing.assert_allclose(a.coefs_[0], b.coefs_[0], rtol=1e-12)


def test_balanced_is_refused_by_partial_fit():
    X, y = _problem()
    with pytest.raises(ValueError, match="not supported by partial_fit"):
        MLPClassifier(class_weight="balanced").partial_fit(X, y, classes=np.arange(4))


# PyTorch ####################################################################

def _torch_run(X, y, params, optimizer_factory, n_epochs, batch_size, alpha, activation):
    torch = importorskip("torch", reason="install the 'torch' extra")
    act = {"logistic": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
           "identity": lambda z: z}[activation]
    # float64 throughout, from the NumPy arrays' dtype (the default dtype is left alone).
    W1, b1, W2, b2 = (torch.tensor(p.copy(), requires_grad=True) for p in params)
    optimizer = optimizer_factory([
        {"params": [W1, W2], "weight_decay": alpha / batch_size},
        {"params": [b1, b2], "weight_decay": 0.0},
    ])
    Xt, yt = torch.tensor(X), torch.tensor(y)
    for _ in range(n_epochs):
        for start in range(0, len(X), batch_size):
            xb, yb = Xt[start:start + batch_size], yt[start:start + batch_size]
            logits = act(xb @ W1 + b1) @ W2 + b2
            loss = torch.nn.functional.cross_entropy(logits, yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return [p.detach().numpy() for p in (W1, b1, W2, b2)]


TORCH_CASES = {
    "sgd": (dict(solver="sgd", momentum=0.0),
            lambda torch, lr: (lambda g: torch.optim.SGD(g, lr=lr))),
    "momentum": (dict(solver="sgd", momentum=0.9, nesterovs_momentum=False),
                 lambda torch, lr: (lambda g: torch.optim.SGD(g, lr=lr, momentum=0.9))),
    "nesterov": (dict(solver="sgd", momentum=0.9, nesterovs_momentum=True),
                 lambda torch, lr: (lambda g: torch.optim.SGD(g, lr=lr, momentum=0.9,
                                                              nesterov=True))),
    # PyTorch adds epsilon after the bias correction, scikit-learn (and mlp_cy)
    # before it: with a negligible epsilon both are the same update.
    "adam": (dict(solver="adam", epsilon=1e-14),
             lambda torch, lr: (lambda g: torch.optim.Adam(g, lr=lr, eps=1e-14))),
}


@pytest.mark.parametrize("case", list(TORCH_CASES))
@pytest.mark.parametrize("activation", ["logistic", "tanh", "relu", "identity"])
def test_optimisers_match_pytorch(case, activation):
    torch = importorskip("torch", reason="install the 'torch' extra")
    default_dtype = torch.get_default_dtype()
    X, y = _problem(n_samples=160)                   # 5 batches of 32 exactly
    params_kwargs, factory = TORCH_CASES[case]
    rng = np.random.RandomState(0)
    start = [0.3 * rng.randn(12, 9), 0.1 * rng.randn(9), 0.3 * rng.randn(9, 4),
             0.1 * rng.randn(4)]
    lr, alpha = 0.02, 1e-2
    clf = MLPClassifier(hidden_layer_sizes=9, activation=activation, warm_start=True,
                        shuffle=False, max_iter=1, batch_size=32, learning_rate_init=lr,
                        alpha=alpha, **params_kwargs)
    clf.coefs_ = [start[0].copy(), start[2].copy()]
    clf.intercepts_ = [start[1].copy(), start[3].copy()]
    for _ in range(4):
        clf.partial_fit(X, y, classes=np.arange(4))
    expected = _torch_run(X, y, start, factory(torch, lr), n_epochs=4, batch_size=32,
                          alpha=alpha, activation=activation)
    assert torch.get_default_dtype() == default_dtype   # nothing global changed
    ours = [clf.coefs_[0], clf.intercepts_[0], clf.coefs_[1], clf.intercepts_[1]]
    for name, a, b in zip(["W1", "b1", "W2", "b2"], ours, expected):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10, err_msg=name)
