"""scikit-learn's MLPClassifier semantics where mlp_cy used to differ (issue 17, item 5):
infinite patience, one class, feature names under early stopping, weights assigned by
the user, and parameter validation by scikit-learn's rules."""

import subprocess
import sys
import warnings

import numpy as np
import pytest
from conftest import importorskip

from mlp_cy import MLPClassifier, MLPRegressor, load
from mlp_cy._compat import InvalidParameterError


def _data(n=60, n_features=3, n_classes=2, seed=0):
    rng = np.random.RandomState(seed)
    return rng.randn(n, n_features), np.arange(n) % n_classes


def _quiet_fit(clf, X, y, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return clf.fit(X, y, **kwargs)


# n_iter_no_change=np.inf ---------------------------------------------------------------

def test_infinite_patience_never_stops_for_lack_of_improvement(tmp_path):
    # scikit-learn's test_n_iter_no_change_inf: a tolerance no epoch can beat.
    X, y = _data()
    clf = _quiet_fit(MLPClassifier(hidden_layer_sizes=4, solver="sgd", tol=1e9, max_iter=40,
                                   n_iter_no_change=np.inf, random_state=0), X, y)
    assert clf.n_iter_ == 40
    assert clf._no_improvement_count == clf.n_iter_ - 1
    clf.save(tmp_path / "m.npz")
    assert load(tmp_path / "m.npz").n_iter_no_change == np.inf


# One class --------------------------------------------------------------------------------

@pytest.mark.parametrize("label", [7, "cat"])
def test_one_class_fits_and_predicts_it(label, tmp_path):
    X, _ = _data()
    y = np.full(len(X), label)
    clf = _quiet_fit(MLPClassifier(hidden_layer_sizes=4, max_iter=5, random_state=0), X, y)
    np.testing.assert_array_equal(clf.classes_, [label])
    np.testing.assert_array_equal(clf.predict(X), y)
    assert clf.score(X, y) == 1.0
    # scikit-learn's shape: (n_samples, 2), its single unit's [1 - p, p].
    np.testing.assert_array_equal(clf.predict_proba(X[:3]), [[1, 0]] * 3)
    clf.save(tmp_path / "one.npz")
    np.testing.assert_array_equal(load(tmp_path / "one.npz").predict(X), y)
    inc = MLPClassifier(hidden_layer_sizes=4).partial_fit(X, y, classes=[label])
    np.testing.assert_array_equal(inc.predict(X[:2]), y[:2])


def test_one_class_predict_proba_has_sklearns_shape():
    sklearn_nn = importorskip("sklearn.neural_network", reason="install scikit-learn")
    X, _ = _data()
    y = np.full(len(X), 3)
    ours = _quiet_fit(MLPClassifier(hidden_layer_sizes=4, max_iter=3), X, y)
    theirs = _quiet_fit(sklearn_nn.MLPClassifier(hidden_layer_sizes=4, max_iter=3), X, y)
    assert ours.predict_proba(X).shape == theirs.predict_proba(X).shape == (len(X), 2)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))


# Feature names with early stopping ----------------------------------------------------

def test_dataframe_with_early_stopping_gives_no_feature_name_warning():
    # scikit-learn's test_preserve_feature_names (its y has a single class).
    pd = importorskip("pandas", reason="install pandas")
    rng = np.random.RandomState(0)
    X = pd.DataFrame(data=rng.randn(40, 2), columns=["colname_a", "colname_b"])
    for y in (pd.Series(np.full(40, 1), name="y"), pd.Series(np.arange(40) % 2, name="y")):
        clf = MLPClassifier(hidden_layer_sizes=4, early_stopping=True,
                            validation_fraction=0.2, max_iter=3, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            # The ConvergenceWarnings of 3 epochs (a UserWarning here) are not the point.
            warnings.filterwarnings("ignore", message="Stochastic Optimizer")
            warnings.filterwarnings("ignore", message="Training did not learn")
            clf.fit(X, y)
        np.testing.assert_array_equal(clf.feature_names_in_, ["colname_a", "colname_b"])


# Weights assigned by the user, with n_features_in_ ------------------------------------

@pytest.mark.parametrize("method", ["partial_fit", "warm_start fit"])
def test_user_weights_with_n_features_in_train(method):
    X, y = _data(n_features=3)
    rng = np.random.RandomState(1)
    clf = MLPClassifier(hidden_layer_sizes=2, solver="sgd", learning_rate_init=0.1,
                        max_iter=1, warm_start=method != "partial_fit")
    clf.coefs_ = [rng.randn(3, 2), rng.randn(2, 1)]     # two classes: one logistic unit
    clf.intercepts_ = [rng.randn(2), rng.randn(1)]
    clf.n_features_in_ = 3
    before = [c.copy() for c in clf.coefs_]
    if method == "partial_fit":
        clf.partial_fit(X, y, classes=[0, 1])
    else:
        _quiet_fit(clf, X, y)
    np.testing.assert_array_equal(clf.classes_, [0, 1])
    assert clf.n_iter_ == 1 and clf.t_ == len(X)
    assert not np.array_equal(clf.coefs_[0], before[0])      # trained from them
    assert clf.predict(X).shape == (len(X),)


def test_user_weights_with_n_features_in_check_x():
    X, y = _data(n_features=3)
    clf = MLPClassifier(hidden_layer_sizes=2)
    clf.coefs_ = [np.zeros((3, 2)), np.zeros((2, 2))]
    clf.intercepts_ = [np.zeros(2), np.zeros(2)]
    clf.n_features_in_ = 4
    with pytest.raises(ValueError, match="X has 3 features, but MLPClassifier is expecting 4"):
        clf.partial_fit(X, y, classes=[0, 1])


def test_user_weights_in_the_old_two_unit_binary_layout_are_refused_clearly():
    X, y = _data(n_features=3)
    clf = MLPClassifier(hidden_layer_sizes=2)
    clf.coefs_ = [np.zeros((3, 2)), np.zeros((2, 2))]
    clf.intercepts_ = [np.zeros(2), np.zeros(2)]
    clf.n_features_in_ = 3
    with pytest.raises(ValueError, match=r"coefs_\[1\] has shape \(2, 2\).*expected \(2, 1\)"):
        clf.partial_fit(X, y, classes=[0, 1])


# Parameter validation -------------------------------------------------------------------

def test_values_sklearn_accepts_are_accepted():
    X, y = _data()
    for params in (dict(solver="sgd", momentum=1.0), dict(validation_fraction=0.0),
                   dict(verbose=0), dict(verbose=np.bool_(False)), dict(alpha=0),
                   dict(n_iter_no_change=np.inf)):
        clf = _quiet_fit(MLPClassifier(hidden_layer_sizes=3, max_iter=2, random_state=0,
                                       **params), X, y)
        assert clf.n_iter_ == 2, params


def test_momentum_one_keeps_every_velocity():
    # momentum=1: v := v - eta grad, so after two steps of plain momentum (no
    # Nesterov) the weights moved by -eta (2 g1 + g2); momentum=0.5 moves less far.
    X, y = _data(n=8)
    kwargs = dict(hidden_layer_sizes=3, solver="sgd", nesterovs_momentum=False, alpha=0.0,
                  batch_size=8, shuffle=False, learning_rate_init=0.01, max_iter=2,
                  random_state=0)
    one = _quiet_fit(MLPClassifier(momentum=1.0, **kwargs), X, y)
    almost = _quiet_fit(MLPClassifier(momentum=1 - 1e-9, **kwargs), X, y)
    for a, b in zip(one.coefs_, almost.coefs_):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("params, match", [
    (dict(verbose="loud"), r"The 'verbose' parameter of MLPClassifier must be an int in "
                           r"the range \[0, inf\), an instance of 'bool' or an instance of "
                           r"'numpy\.bool'\. Got 'loud' instead\."),
    (dict(verbose=-1), r"'verbose' .*Got -1 instead"),
    (dict(alpha="0.1"), r"The 'alpha' parameter of MLPClassifier must be a float in the "
                        r"range \[0\.0, inf\)\. Got '0\.1' instead\."),
    (dict(momentum=1.01), r"'momentum' .*\[0\.0, 1\.0\]\. Got 1\.01 instead"),
    (dict(n_iter_no_change=2.5), r"'n_iter_no_change' .*or a float among \{inf\}"),
    (dict(random_state=-1), r"'random_state' .*Got -1 instead"),
    (dict(solver="newton"), r"'solver' .*Got 'newton' instead"),
    (dict(solver="lbfgs", max_fun=0), r"'max_fun' .*\[1, inf\)\. Got 0 instead"),
    (dict(early_stopping=True, validation_fraction=0.0),
     r"validation_fraction must be a finite number > 0\.0 and < 1\.0 with "
     r"early_stopping=True, got 0\.0"),
])
def test_bad_parameters_raise_an_error_that_is_value_and_type_error(params, match):
    X, y = _data()
    with pytest.raises(InvalidParameterError, match=match) as info:
        MLPClassifier(**params).fit(X, y)
    assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)


_WITHOUT_SKLEARN = r"""
import sys
sys.modules["sklearn"] = None          # as if scikit-learn were not installed
import numpy as np
from mlp_cy import MLPClassifier
X, y = np.random.RandomState(0).randn(20, 2), np.arange(20) % 2
for params in ({"verbose": "loud"}, {"momentum": 1.01}, {"shuffle": 1},
               {"n_iter_no_change": 0}, {"batch_size": "big"}, {"random_state": "x"}):
    try:
        MLPClassifier(**params).fit(X, y)
    except Exception as exc:
        assert isinstance(exc, ValueError) and isinstance(exc, TypeError), exc
        print(str(exc))
assert "sklearn.base" not in sys.modules
"""


def test_the_rules_by_hand_say_what_sklearns_say():
    # Without scikit-learn the stand-ins check; with it, its own validation does. Both
    # refuse the same values with the same words.
    importorskip("sklearn", reason="install scikit-learn")
    from sklearn.base import clone  # noqa: F401  (scikit-learn is imported here)

    by_hand = subprocess.run([sys.executable, "-c", _WITHOUT_SKLEARN], capture_output=True,
                             text=True, check=True).stdout.splitlines()
    X, y = np.random.RandomState(0).randn(20, 2), np.arange(20) % 2
    by_sklearn = []
    for params in ({"verbose": "loud"}, {"momentum": 1.01}, {"shuffle": 1},
                   {"n_iter_no_change": 0}, {"batch_size": "big"}, {"random_state": "x"}):
        with pytest.raises(InvalidParameterError) as info:
            MLPClassifier(**params).fit(X, y)
        by_sklearn.append(str(info.value))
    assert by_hand == by_sklearn and len(by_hand) == 6


def test_constraints_mirror_sklearns():
    sklearn_nn = importorskip("sklearn.neural_network", reason="install scikit-learn")
    ours = MLPClassifier._parameter_constraints
    theirs = sklearn_nn.MLPClassifier._parameter_constraints
    differ = {"class_weight"}               # mlp_cy's own
    assert set(ours) - differ == set(theirs)
    def described(constraint):       # sets print in their own order: compare them
        options = getattr(constraint, "options", None)
        return (type(constraint).__name__, set(options)) if options else str(constraint)

    for name in set(ours) - differ:
        assert [described(c) for c in ours[name]] == [described(c) for c in theirs[name]], \
            name
    regressor_ours = MLPRegressor._parameter_constraints
    regressor_theirs = sklearn_nn.MLPRegressor._parameter_constraints
    assert set(regressor_ours) == set(regressor_theirs)
    for name in regressor_ours:
        assert [described(c) for c in regressor_ours[name]] == \
            [described(c) for c in regressor_theirs[name]], name


def test_sklearns_param_validation_check_passes():
    estimator_checks = importorskip("sklearn.utils.estimator_checks",
                                    reason="install scikit-learn")
    estimator_checks.check_param_validation("MLPClassifier",
                                            MLPClassifier(hidden_layer_sizes=3, max_iter=2))
    estimator_checks.check_param_validation("MLPRegressor",
                                            MLPRegressor(hidden_layer_sizes=3, max_iter=2))


def test_import_does_not_import_sklearn():
    code = ("import sys, mlp_cy; mlp_cy.MLPClassifier(verbose=1)._validate_hyperparameters();"
            " assert 'sklearn' not in sys.modules, sorted(m for m in sys.modules"
            " if m.startswith('sklearn'))")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("nesterov", [False, True])
def test_the_engine_runs_momentum_one_exactly(nesterov):
    # scikit-learn's upper bound, momentum=1 (v := v - eta grad), in the engine itself:
    # one epoch against the NumPy reference, float64; momentum above 1 is refused.
    from mlp_cy import network
    from reference import train_epoch
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 6))
    y = rng.integers(0, 3, 40).astype(np.int32)
    params = [0.3 * rng.standard_normal((6, 5)), 0.1 * rng.standard_normal(5),
              0.3 * rng.standard_normal((5, 3)), 0.1 * rng.standard_normal(3)]
    expected, _, _ = train_epoch(X, y, params, 3, learning_rate=0.05, batch_size=8,
                                 solver="sgd", momentum=1.0, nesterov=nesterov)
    options = dict(activation=1, learning_rate=0.05, alpha=0.0, solver=0, momentum=1.0,
                   nesterov=nesterov)
    got = [p.copy() for p in params]
    state = np.zeros(network._optimizer_state_size(options, 6, 5, 3))
    work = np.empty(network._train_workspace_size(options, 8, 6, 5, 3))
    network._train_epoch(X, y, *got, None, None, 8, options, state, work, np.zeros(5))
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="momentum <= 1"):
        network._train_epoch(X, y, *got, None, None, 8, dict(options, momentum=1.5),
                             state, work, np.zeros(5))
