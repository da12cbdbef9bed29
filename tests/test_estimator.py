"""The estimator's API: labels, dtypes, partial_fit, warm_start, pickling, sklearn tools."""

import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
from conftest import importorskip

from mlp_cy import MLPClassifier


def _blobs(n_samples=300, n_features=6, n_classes=3, dtype=np.float64, seed=0):
    rng = np.random.RandomState(seed)
    centers = 4 * rng.randn(n_classes, n_features)
    y = rng.randint(0, n_classes, n_samples)
    X = centers[y] + rng.randn(n_samples, n_features)
    return X.astype(dtype), y


def _fit(clf, X, y, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return clf.fit(X, y, **kwargs)


@pytest.mark.parametrize(
    "labels",
    [np.array([-3, 7, 12]), np.array(["setosa", "versicolor", "virginica"]),
     np.array([1.0, 2.0, 3.0]), np.array([True, False]), np.array(["a", "b"], dtype=object)],
)
def test_any_sortable_labels(labels):
    X, y = _blobs(n_classes=len(labels))
    clf = _fit(MLPClassifier(hidden_layer_sizes=10, learning_rate_init=0.3, max_iter=50,
                             random_state=0), X, labels[y])
    np.testing.assert_array_equal(clf.classes_, np.unique(labels))
    pred = clf.predict(X)
    assert pred.dtype == clf.classes_.dtype
    assert np.mean(pred == labels[y]) > 0.9


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept_end_to_end(dtype):
    X, y = _blobs(dtype=dtype)
    clf = _fit(MLPClassifier(hidden_layer_sizes=5, max_iter=3, random_state=0), X, y)
    for p in clf.coefs_ + clf.intercepts_:
        assert p.dtype == dtype
    assert clf.predict_proba(X).dtype == dtype


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.float16])
@pytest.mark.parametrize("batch_size", [1, 16])
@pytest.mark.parametrize("shuffle", [False, True])
def test_other_numeric_dtypes_train_in_float64(dtype, batch_size, shuffle):
    # As in scikit-learn, they train as float64; uint8 is read directly by the
    # engine (converted row by row as batches are gathered), the others are copied.
    X, y = _blobs()
    X = np.abs(X * 10).astype(dtype)
    params = dict(hidden_layer_sizes=5, max_iter=3, batch_size=batch_size, shuffle=shuffle,
                  random_state=0)
    clf = _fit(MLPClassifier(**params), X, y)
    ref = _fit(MLPClassifier(**params), X.astype(np.float64), y)
    assert clf.coefs_[0].dtype == np.float64
    np.testing.assert_allclose(clf.coefs_[0], ref.coefs_[0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(clf.predict_proba(X), ref.predict_proba(X.astype(np.float64)),
                               rtol=1e-12)


def test_float32_rows_train_a_float64_model_without_a_copy_of_x(monkeypatch):
    from mlp_cy import layers

    X, y = _blobs(dtype=np.float32)
    clf = _fit(MLPClassifier(hidden_layer_sizes=5, max_iter=2, random_state=0),
               X.astype(np.float64), y)
    ref = pickle.loads(pickle.dumps(clf))
    seen = []

    class Spy(layers.Network):               # the engine the estimator calls
        def train_epoch(self, X_engine, *args):
            seen.append(X_engine)
            return super().train_epoch(X_engine, *args)

    monkeypatch.setattr(layers, "Network", Spy)
    clf.partial_fit(X, y)                        # float32 X, float64 weights
    # The engine read the caller's float32 memory, not a float64 copy.
    assert len(seen) == 1 and seen[0].dtype == np.float32 and np.shares_memory(seen[0], X)
    ref.partial_fit(X.astype(np.float64), y)
    assert clf.coefs_[0].dtype == np.float64
    np.testing.assert_allclose(clf.coefs_[0], ref.coefs_[0], rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_fit_copies_nothing_of_x(dtype):
    # uint8 pixels are converted batch by batch; C-contiguous float32 is used as it
    # is, and its finiteness is checked block by block (no X-sized mask).
    import tracemalloc

    rng = np.random.RandomState(0)
    X = rng.randint(0, 256, size=(20000, 784)).astype(dtype)        # 15.7 or 63 MB
    y = rng.randint(0, 10, len(X))
    clf = MLPClassifier(hidden_layer_sizes=32, batch_size=64, max_iter=1, random_state=0)
    tracemalloc.start()
    try:
        _fit(clf, X, y)
        clf.predict_proba(X)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A float64 copy of X would be 125 MB; predict_proba's output is 0.8-1.6 MB.
    assert peak < 12e6, peak


def test_predict_proba_log_proba_and_predict_agree():
    X, y = _blobs()
    clf = _fit(MLPClassifier(hidden_layer_sizes=8, learning_rate_init=0.3, max_iter=30,
                             random_state=0), X, y)
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-12)
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(proba))
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[proba.argmax(axis=1)])
    assert clf.score(X, y) == np.mean(clf.predict(X) == y)


def test_predict_proba_large_input_goes_through_in_chunks():
    # More rows than one predict chunk: the chunked forward pass equals a
    # NumPy forward pass over all rows at once.
    X, y = _blobs(n_samples=2500)
    clf = _fit(MLPClassifier(hidden_layer_sizes=7, activation="logistic", max_iter=2,
                             random_state=0), X, y)
    from scipy.special import expit, softmax

    W1, W2 = clf.coefs_
    b1, b2 = clf.intercepts_
    expected = softmax(expit(X @ W1 + b1) @ W2 + b2, axis=1)
    np.testing.assert_allclose(clf.predict_proba(X), expected, rtol=1e-12)


def test_fitted_attributes():
    X, y = _blobs()
    clf = _fit(MLPClassifier(hidden_layer_sizes=(9,), max_iter=4, random_state=0), X, y)
    assert [c.shape for c in clf.coefs_] == [(6, 9), (9, 3)]
    assert [b.shape for b in clf.intercepts_] == [(9,), (3,)]
    assert (clf.n_features_in_, clf.n_layers_, clf.n_outputs_) == (6, 3, 3)
    assert clf.out_activation_ == "softmax"
    assert clf.n_iter_ == 4 and clf.t_ == 4 * len(X)
    assert len(clf.loss_curve_) == 4 and clf.loss_ == clf.loss_curve_[-1]
    assert clf.best_loss_ == min(clf.loss_curve_)


def test_max_iter_reached_warns_and_tol_stops_early():
    X, y = _blobs()
    from mlp_cy._compat import ConvergenceWarning

    with pytest.warns(ConvergenceWarning, match="Maximum iterations"):
        MLPClassifier(hidden_layer_sizes=4, max_iter=2, random_state=0).fit(X, y)
    clf = MLPClassifier(hidden_layer_sizes=4, max_iter=500, tol=10.0, n_iter_no_change=2,
                        random_state=0).fit(X, y)
    # The first epoch improves on inf; the next three do not improve by 10: 3 > 2.
    assert clf.n_iter_ == 4


def test_partial_fit_needs_classes_first_and_then_continues():
    X, y = _blobs()
    clf = MLPClassifier(hidden_layer_sizes=5, random_state=0)
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(X, y)
    clf.partial_fit(X[:100], y[:100], classes=[0, 1, 2])
    W1 = clf.coefs_[0].copy()
    clf.partial_fit(X[100:], y[100:])
    assert not np.array_equal(W1, clf.coefs_[0])
    assert clf.t_ == len(X) and len(clf.loss_curve_) == 2 and clf.n_iter_ == 1
    with pytest.raises(ValueError, match="not in `self.classes_`"):
        clf.partial_fit(X[:10], np.full(10, 5))


def test_warm_start_continues_and_cold_start_restarts():
    X, y = _blobs()
    clf = _fit(MLPClassifier(hidden_layer_sizes=5, max_iter=3, random_state=0,
                             warm_start=True), X, y)
    t_after_first = clf.t_
    _fit(clf, X, y)
    assert clf.t_ == 2 * t_after_first and len(clf.loss_curve_) == 6
    clf.set_params(warm_start=False)
    _fit(clf, X, y)
    assert clf.t_ == t_after_first and len(clf.loss_curve_) == 3


def test_fit_is_reproducible_and_refit_is_idempotent():
    X, y = _blobs()
    a = _fit(MLPClassifier(hidden_layer_sizes=5, max_iter=5, random_state=3), X, y)
    b = _fit(MLPClassifier(hidden_layer_sizes=5, max_iter=5, random_state=3), X, y)
    np.testing.assert_array_equal(a.coefs_[0], b.coefs_[0])
    _fit(a, X, y)
    np.testing.assert_array_equal(a.coefs_[0], b.coefs_[0])


def test_pickle_round_trip_gives_identical_predictions():
    X, y = _blobs()
    clf = _fit(MLPClassifier(hidden_layer_sizes=5, max_iter=5, random_state=0), X, y)
    clone = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(clone.predict_proba(X), clf.predict_proba(X))
    # It keeps training, exactly as the original does.
    _fit(clone.set_params(warm_start=True), X, y)
    _fit(clf.set_params(warm_start=True), X, y)
    assert clone.t_ == clf.t_ == 10 * len(X) and len(clone.loss_curve_) == 10
    for a, b in zip(clone.coefs_ + clone.intercepts_, clf.coefs_ + clf.intercepts_):
        np.testing.assert_array_equal(a, b)


def test_bad_hyperparameters_are_named():
    X, y = _blobs()
    cases = [
        (dict(hidden_layer_sizes=(10, -1)), r"tuple of positive ints, got \(10, -1\)"),
        (dict(hidden_layer_sizes=0),
         r"'hidden_layer_sizes' parameter of MLPClassifier must be .*Got 0 instead"),
        (dict(activation="softplus"), r"'activation' parameter .*Got 'softplus'"),
        (dict(solver="newton"), r"'solver' parameter .*Got 'newton'"),
        (dict(solver="lbfgs", max_fun=0), r"'max_fun' .*range \[1, inf\)"),
        (dict(learning_rate_init=0), r"'learning_rate_init' .*range \(0\.0, inf\)"),
        (dict(alpha=-1), r"'alpha' parameter .*Got -1 instead"),
        (dict(batch_size=0), r"'batch_size' .*\{'auto'\} or an int in the range \[1, inf\)"),
        (dict(max_iter=0), r"'max_iter' .*an int in the range \[1, inf\)"),
        (dict(momentum=1.5), r"'momentum' .*range \[0\.0, 1\.0\]\. Got 1\.5"),
        (dict(solver="adam", beta_2=1.0), r"'beta_2' .*Got 1\.0"),
        (dict(early_stopping=True, validation_fraction=1.0),
         r"'validation_fraction' .*range \[0\.0, 1\.0\)\. Got 1\.0"),
        (dict(learning_rate="optimal"), r"'learning_rate' .*Got 'optimal'"),
        (dict(class_weight="auto"),
         r"'class_weight' .*an instance of 'dict', a str among \{'balanced'\} or None"),
        (dict(class_weight={7: 2.0}), "class_weight has label 7"),
        (dict(random_state="seed"), r"'random_state' .*Got 'seed'"),
    ]
    for params, message in cases:
        with pytest.raises(ValueError, match=message):
            MLPClassifier(**params).fit(X, y)


def test_verbose_prints_each_epochs_loss(capsys):
    X, y = _blobs()
    clf = _fit(MLPClassifier(hidden_layer_sizes=5, max_iter=3, verbose=True,
                             random_state=0), X, y)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"Iteration {i}, loss = {loss:.8f}"
                     for i, loss in enumerate(clf.loss_curve_, 1)]
    _fit(clf.set_params(early_stopping=True, max_iter=2), X, y)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1::2] == [f"Validation score: {score:f}"
                           for score in clf.validation_scores_]
    assert len(lines) == 4


def test_quiet_by_default(capsys):
    X, y = _blobs()
    _fit(MLPClassifier(hidden_layer_sizes=5, max_iter=3, random_state=0), X, y)
    assert capsys.readouterr().out == ""


def test_batch_size_larger_than_the_data_warns_and_is_clipped():
    X, y = _blobs(n_samples=50)
    common = dict(hidden_layer_sizes=5, max_iter=2, random_state=0, shuffle=False)
    with pytest.warns(UserWarning, match="batch_size.*clipped"):
        big = _fit_warning_free(MLPClassifier(batch_size=51, **common), X, y)
    whole = _fit(MLPClassifier(batch_size=50, **common), X, y)
    for a, b in zip(big.coefs_ + big.intercepts_, whole.coefs_ + whole.intercepts_):
        np.testing.assert_array_equal(a, b)


def _fit_warning_free(clf, X, y):
    """Fit, letting only warnings other than ConvergenceWarning through."""
    from mlp_cy._compat import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return clf.fit(X, y)


def test_partial_fit_refuses_early_stopping():
    X, y = _blobs()
    clf = MLPClassifier(hidden_layer_sizes=5, early_stopping=True)
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping"):
        clf.partial_fit(X, y, classes=[0, 1, 2])


def test_warm_start_can_turn_on_early_stopping():
    X, y = _blobs()
    clf = _fit(MLPClassifier(hidden_layer_sizes=5, max_iter=3, random_state=0), X, y)
    assert clf.validation_scores_ is None and clf.best_loss_ is not None
    _fit(clf.set_params(warm_start=True, early_stopping=True, max_iter=4), X, y)
    assert len(clf.validation_scores_) == len(clf.validation_loss_curve_) == clf.n_iter_
    assert clf.n_iter_ >= 1 and clf.best_loss_ is None
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    # Trained on the 90% left after the held-out rows.
    assert clf.t_ == 3 * len(X) + clf.n_iter_ * (len(X) - 30)


def test_later_calls_refuse_other_classes():
    X, y = _blobs()
    clf = MLPClassifier(hidden_layer_sizes=5, random_state=0)
    clf.partial_fit(X, y, classes=[0, 1, 2])
    with pytest.raises(ValueError, match="differs from the classes of the first call"):
        clf.partial_fit(X, y, classes=[0, 1, 2, 3])
    warm = _fit(MLPClassifier(hidden_layer_sizes=5, max_iter=2, random_state=0,
                              warm_start=True), X, y)
    W1 = warm.coefs_[0].copy()
    with pytest.raises(ValueError, match="warm_start can only be used where `y` has the "
                                         "same classes"):
        warm.fit(X[y < 2], y[y < 2])
    with pytest.raises(ValueError, match="warm_start can only be used"):
        warm.fit(X, np.where(y == 2, 7, y))
    np.testing.assert_array_equal(warm.coefs_[0], W1)     # refused before training


def test_class_weight_multiplies_sample_weight():
    X, y = _blobs()
    sample_weight = np.random.RandomState(1).rand(len(X))
    class_weight = {0: 2.0, 1: 0.5, 2: 1.5}
    common = dict(hidden_layer_sizes=5, max_iter=3, random_state=0)
    a = _fit(MLPClassifier(class_weight=class_weight, **common), X, y,
             sample_weight=sample_weight)
    b = _fit(MLPClassifier(**common), X, y,
             sample_weight=sample_weight * np.array([2.0, 0.5, 1.5])[y])
    c = _fit(MLPClassifier(**common), X, y, sample_weight=sample_weight)
    for p, q in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        np.testing.assert_array_equal(p, q)
    assert not np.allclose(a.coefs_[0], c.coefs_[0])      # the class weights did count


def test_works_without_scikit_learn():
    # numpy and scipy are the only runtime dependencies.
    code = (
        "import sys; sys.modules['sklearn'] = None\n"
        "import pickle, numpy as np\n"
        "from mlp_cy import MLPClassifier\n"
        "from mlp_cy._compat import HAS_SKLEARN, NotFittedError\n"
        "assert not HAS_SKLEARN\n"
        "rng = np.random.RandomState(0); X = rng.randn(200, 3); y = (X[:, 0] > 0)\n"
        "clf = MLPClassifier(hidden_layer_sizes=4, learning_rate_init=0.5, max_iter=50,"
        " random_state=0)\n"
        "try:\n    clf.predict(X)\nexcept NotFittedError:\n    pass\n"
        "else:\n    raise AssertionError('predict before fit must raise')\n"
        "clf.fit(X, y)\n"
        "assert clf.score(X, y) > 0.9, clf.score(X, y)\n"
        "assert clf.get_params()['hidden_layer_sizes'] == 4\n"
        "assert clf.set_params(alpha=0.1).alpha == 0.1\n"
        "assert 'alpha=0.1' in repr(clf)\n"
        "pickle.loads(pickle.dumps(clf)).predict(X)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_clone_pipeline_grid_search_cross_val_score():
    importorskip("sklearn", reason="scikit-learn is a test dependency")
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = _blobs()
    base = MLPClassifier(hidden_layer_sizes=8, learning_rate_init=0.3, batch_size=32, max_iter=40,
                         random_state=0)
    assert clone(base).get_params() == base.get_params()
    pipe = make_pipeline(StandardScaler(), base)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = cross_val_score(pipe, X, y, cv=3)
        search = GridSearchCV(pipe, {"mlpclassifier__learning_rate_init": [1e-4, 0.3]},
                              cv=3).fit(X, y)
    assert scores.min() > 0.8
    assert search.best_params_ == {"mlpclassifier__learning_rate_init": 0.3}
    assert search.score(X, y) > 0.9
