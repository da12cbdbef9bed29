"""Bad input is refused with a clear exception, never a crash; odd layouts just work.

The battery
-----------
Every case in CASES feeds one kind of bad input to the estimator or straight to the
compiled engine's Python entry points (``mlp_cy.network._predict_proba`` and
``_train_epoch``, whose checks run without the GIL). The battery runs in a child
process (``python tests/test_bad_input.py CASE ...``) that prints one JSON line per
case, so a segfault or an abort fails the test of the case that caused it instead of
killing pytest: the parent reruns the cases after a crashed one in a fresh child.
Each case is then one parametrized test that checks the exception's type and that
its message says what was wrong and what to do.

Beyond the battery: Fortran-ordered, strided, read-only, memory-mapped and
big-endian inputs train and predict exactly like C-contiguous ones; huge inputs give
a finite loss; a diverging run warns and keeps the last finite weights.
"""

import functools
import json
import os
import signal
import subprocess
import sys
import traceback
import warnings

import numpy as np

# Data --------------------------------------------------------------------------------

N_SAMPLES, N_FEATURES, N_HIDDEN, N_CLASSES = 40, 3, 4, 2


@functools.lru_cache(maxsize=None)
def _data(dtype=np.float64):
    rng = np.random.RandomState(0)
    X = rng.rand(N_SAMPLES, N_FEATURES).astype(dtype)
    y = np.arange(N_SAMPLES) % N_CLASSES
    return X, y


def _clf(**params):
    from mlp_cy import MLPClassifier

    params = {"hidden_layer_sizes": N_HIDDEN, "max_iter": 2, "random_state": 0, **params}
    return MLPClassifier(**params)


@functools.lru_cache(maxsize=None)
def _fitted():
    X, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _clf().fit(X, y)


def _fit(X=None, y=None, sample_weight=None, **params):
    X0, y0 = _data()
    X = X0 if X is None else X
    y = y0 if y is None else y
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)   # ConvergenceWarning
        _clf(**params).fit(X, y, sample_weight=sample_weight)


def _with_nan(value, dtype=np.float64):
    X = _data()[0].astype(dtype)
    X[3, 1] = value
    return X


def _read_only(a):
    a.flags.writeable = False
    return a


def _sparse(X, kind="csr_matrix"):
    import scipy.sparse

    return getattr(scipy.sparse, kind)(X)


# The engine's Python entry points ---------------------------------------------------

def _engine_arrays(dtype=np.float64):
    rng = np.random.RandomState(1)
    X = rng.rand(10, N_FEATURES).astype(dtype)
    y = (np.arange(10) % N_CLASSES).astype(np.int32)
    W1 = (0.1 * rng.randn(N_FEATURES, N_HIDDEN)).astype(dtype)
    b1 = np.zeros(N_HIDDEN, dtype)
    W2 = (0.1 * rng.randn(N_HIDDEN, N_CLASSES)).astype(dtype)
    b2 = np.zeros(N_CLASSES, dtype)
    return X, y, W1, b1, W2, b2


def _predict_proba(**changes):
    """network._predict_proba on a valid call, with the arguments in ``changes``."""
    from mlp_cy import network

    X, _, W1, b1, W2, b2 = _engine_arrays()
    args = dict(X=X, W1=W1, b1=b1, W2=W2, b2=b2, activation=1,
                proba_out=np.empty((len(X), N_CLASSES)), work=np.empty(8 * N_HIDDEN))
    args.update(changes)
    network._predict_proba(**args)


def _train_epoch(batch_size=5, work_delta=0, **changes):
    """network._train_epoch on a valid call, with the arguments in ``changes``.

    ``work_delta`` changes the length of ``work`` from train_workspace_size(...).
    """
    from mlp_cy import network

    X, y, W1, b1, W2, b2 = _engine_arrays()
    options = dict(activation=1, learning_rate=0.1, alpha=0.0)
    options.update(changes.pop("options", {}))
    size = network._train_workspace_size(options, batch_size, N_FEATURES, N_HIDDEN,
                                         N_CLASSES)
    state_size = network._optimizer_state_size(options, N_FEATURES, N_HIDDEN, N_CLASSES)
    args = dict(X=X, y=y, sample_weight=None, order=None, batch_size=batch_size,
                W1=W1, b1=b1, W2=W2, b2=b2, options=options,
                optimizer_state=np.zeros(state_size) if state_size else None,
                work=None, stats_out=np.zeros(5))
    if "work" not in changes:
        args["work"] = np.empty(max(size + work_delta, 0))
    args.update(changes)
    network._train_epoch(**args)


# The cases: name -> (call, exception type, regex on its message) ---------------------
# Regexes (re.search, DOTALL) ask for what was wrong and, where there is something to
# do, the hint of what to do.

FINITE = r"needs finite values\. Remove or impute them"
SPARSE = r"does not accept sparse input.*convert it with X\.toarray\(\)"
NOT_FITTED = r"not fitted yet\. Call 'fit'"
SHAPES = r"parameter shapes disagree"

CASES = {
    # X: non-finite values, at fit and at predict
    "fit X with NaN": (lambda: _fit(_with_nan(np.nan)), "ValueError",
                       r"Input X contains NaN; .*" + FINITE),
    "fit float32 X with inf": (lambda: _fit(_with_nan(np.inf, np.float32)), "ValueError",
                               r"Input X contains infinity; .*" + FINITE),
    "fit X with -inf": (lambda: _fit(_with_nan(-np.inf)), "ValueError",
                        r"contains infinity; .*" + FINITE),
    "fit object X with None": (lambda: _fit(_with_nan(None, object)), "ValueError",
                               r"Input X contains NaN; .*" + FINITE),
    "predict X with NaN": (lambda: _fitted().predict(_with_nan(np.nan)), "ValueError",
                           r"contains NaN; .*" + FINITE),
    "predict_proba float32 X with inf": (
        lambda: _fitted().predict_proba(_with_nan(np.inf, np.float32)), "ValueError",
        r"contains infinity; .*" + FINITE),
    # X: wrong number of dimensions
    "fit 1-D X": (lambda: _fit(_data()[0][:, 0]), "ValueError",
                  r"Expected 2D array, got 1D array.*array\.reshape\(-1, 1\)"),
    "fit scalar X": (lambda: _fit(np.float64(3.0)), "ValueError",
                     r"got scalar array.*Reshape your data"),
    "fit 3-D X": (lambda: _fit(_data()[0].reshape(N_SAMPLES, N_FEATURES, 1)), "ValueError",
                  r"got 3D with shape \(40, 3, 1\); flatten each sample"),
    "predict 1-D X": (lambda: _fitted().predict(_data()[0][0]), "ValueError",
                      r"got 1D array.*array\.reshape\(1, -1\) if it contains a single sample"),
    "predict 4-D X": (lambda: _fitted().predict(np.zeros((2, 3, 1, 1))), "ValueError",
                      r"got 4D.*flatten each sample"),
    # X: empty
    "fit X with zero rows": (lambda: _fit(np.empty((0, N_FEATURES)), np.empty(0, int)),
                             "ValueError", r"0 sample\(s\).*minimum of 1 is required"),
    "fit X with zero features": (lambda: _fit(np.empty((N_SAMPLES, 0))), "ValueError",
                                 r"0 feature\(s\).*minimum of 1 is required"),
    "predict X with zero rows": (lambda: _fitted().predict(np.empty((0, N_FEATURES))),
                                 "ValueError", r"0 sample\(s\)"),
    "predict X with zero features": (lambda: _fitted().predict(np.empty((5, 0))),
                                     "ValueError", r"0 feature\(s\)"),
    # X: not numbers
    "fit X of strings": (lambda: _fit(_data()[0].astype(str)), "ValueError",
                         r"needs numeric X, got strings.*encode them as numbers first"),
    "fit X of bytes": (lambda: _fit(_data()[0].astype(bytes)), "ValueError",
                       r"needs numeric X, got strings.*encode them as numbers first"),
    # An object array holding a string: numpy's own message ("could not convert
    # string to float: 'a'") says what but not what to do. See docs/reliability.md.
    "fit object X with a string": (
        lambda: _fit(np.where(np.arange(N_FEATURES) == 1, "a", _data()[0]).astype(object)),
        "ValueError", r"(?=.*numeric X)(?=.*'a')(?=.*encode)"),
    "fit complex X": (lambda: _fit(_data()[0] + 1j), "ValueError",
                      r"Complex data not supported: X must hold real numbers"),
    "fit X is None": (lambda: _clf().fit(None, _data()[1]), "ValueError",
                      r"needs an array X, got None"),
    "predict X is None": (lambda: _fitted().predict(None), "ValueError",
                          r"needs an array X, got None"),
    # X: sparse (accepted as CSR; checked as dense X is)
    "fit sparse X with NaN": (
        lambda: _fit(_sparse(np.where(_data()[0] > 0, np.nan, 0.0))), "ValueError",
        r"Input X contains NaN or infinity; MLPClassifier needs finite values"),
    "predict sparse X of wrong width": (
        lambda: _fitted().predict(_sparse(np.zeros((5, N_FEATURES + 2)), "csc_matrix")),
        "ValueError", r"X has 5 features, but MLPClassifier is expecting 3"),
    "fit complex sparse X": (
        lambda: _fit(_sparse(np.full((N_SAMPLES, N_FEATURES), 1j), "coo_matrix")),
        "ValueError", r"needs numeric X, got complex128"),
    # y
    "fit len(y) != len(X)": (lambda: _fit(y=_data()[1][:-1]), "ValueError",
                             r"inconsistent numbers of samples: X has 40 rows, y has 39"),
    "fit len(y) > len(X)": (lambda: _fit(y=np.r_[_data()[1], 0]), "ValueError",
                            r"X has 40 rows, y has 41 labels"),
    "fit y is None": (lambda: _clf().fit(_data()[0], None), "ValueError",
                      r"requires y to be passed"),
    "fit y with NaN": (lambda: _fit(y=np.where(_data()[1] == 1, np.nan, 0.0)),
                       "ValueError", r"y contains NaN or infinity; labels must be finite"),
    "fit continuous y": (lambda: _fit(y=np.linspace(0, 1, N_SAMPLES)), "ValueError",
                         r"continuous.*needs discrete class labels.*use a regressor"),
    "fit 2-D y that is not 0/1": (lambda: _fit(y=np.c_[_data()[1], 2 * _data()[1]]),
                                  "ValueError",
                                  r"2-D y must be a multilabel indicator matrix of 0s and 1s"),
    # sample_weight
    "fit sample_weight of wrong length": (
        lambda: _fit(sample_weight=np.ones(3)), "ValueError",
        r"sample_weight\.shape == \(3,\), expected \(40,\): one weight per row of X"),
    "fit negative sample_weight": (lambda: _fit(sample_weight=-np.ones(N_SAMPLES)),
                                   "ValueError", r"negative values; weights must be >= 0"),
    "fit NaN sample_weight": (lambda: _fit(sample_weight=np.full(N_SAMPLES, np.nan)),
                              "ValueError", r"NaN or infinity; weights must be finite"),
    "fit all-zero sample_weight": (lambda: _fit(sample_weight=np.zeros(N_SAMPLES)),
                                   "ValueError", r"zero everywhere; at least one weight"),
    # wrong number of features after fit
    "predict wrong n_features": (lambda: _fitted().predict(np.zeros((5, N_FEATURES + 1))),
                                 "ValueError",
                                 r"X has 4 features, but MLPClassifier is expecting 3"),
    "predict_proba too few features": (
        lambda: _fitted().predict_proba(np.zeros((5, 2))), "ValueError",
        r"X has 2 features, but MLPClassifier is expecting 3"),
    "partial_fit wrong n_features": (
        lambda: _fitted().partial_fit(np.zeros((4, 5)), [0, 1, 0, 1]), "ValueError",
        r"X has 5 features, but MLPClassifier is expecting 3"),
    "warm_start fit wrong n_features": (
        lambda: _fitted().set_params(warm_start=True).fit(np.zeros((4, 2)), [0, 1, 0, 1]),
        "ValueError", r"X has 2 features, but MLPClassifier is expecting 3"),
    # not fitted
    "predict before fit": (lambda: _clf().predict(_data()[0]), "NotFittedError",
                           NOT_FITTED),
    "predict_proba before fit": (lambda: _clf().predict_proba(_data()[0]),
                                 "NotFittedError", NOT_FITTED),
    "predict_log_proba before fit": (lambda: _clf().predict_log_proba(_data()[0]),
                                     "NotFittedError", NOT_FITTED),
    "score before fit": (lambda: _clf().score(*_data()), "NotFittedError", NOT_FITTED),
    "save before fit": (lambda: _clf().save(os.devnull), "NotFittedError", NOT_FITTED),
    "partial_fit without classes": (lambda: _clf().partial_fit(*_data()), "ValueError",
                                    r"classes must be passed on the first call"),
    # hyperparameters (those not already in test_estimator.py)
    "a zero among hidden_layer_sizes": (lambda: _fit(hidden_layer_sizes=[8, 0]),
                                        "ValueError",
                                        r"positive ints, got \[8, 0\]"),
    "negative hidden_layer_sizes": (lambda: _fit(hidden_layer_sizes=-3), "ValueError",
                                    r"The 'hidden_layer_sizes' parameter of MLPClassifier must be an "
                                    r"array-like or an int in the range \[1, inf\)\. Got -3"),
    "float hidden_layer_sizes": (lambda: _fit(hidden_layer_sizes=2.5), "ValueError",
                                 r"'hidden_layer_sizes' parameter.*Got 2\.5 instead"),
    "bool hidden_layer_sizes": (lambda: _fit(hidden_layer_sizes=True), "ValueError",
                                r"got True"),
    "NaN learning_rate_init": (lambda: _fit(learning_rate_init=float("nan")), "ValueError",
                               r"The 'learning_rate_init' parameter of MLPClassifier must be a float in the "
                               r"range \(0\.0, inf\)\. Got nan instead\."),
    "infinite learning_rate_init": (lambda: _fit(learning_rate_init=float("inf")),
                                    "ValueError", r"'learning_rate_init' .* range \(0\.0, inf\)\. Got inf instead\."),
    "negative learning_rate_init": (lambda: _fit(learning_rate_init=-0.1), "ValueError",
                                    r"'learning_rate_init' .* Got -0\.1 instead\."),
    "string learning_rate_init": (lambda: _fit(learning_rate_init="0.1"), "ValueError",
                                  r"'learning_rate_init' .* Got '0\.1' instead\."),
    "negative batch_size": (lambda: _fit(batch_size=-5), "ValueError",
                            r"'batch_size' parameter of MLPClassifier must be a str among "
                            r"\{'auto'\} or an int in the range \[1, inf\)\. Got -5 instead\."),
    "float batch_size": (lambda: _fit(batch_size=2.5), "ValueError",
                         r"'batch_size' .*\{'auto'\} or an int in the range "
                         r"\[1, inf\)\. Got 2\.5 instead\."),
    "string batch_size": (lambda: _fit(batch_size="big"), "ValueError",
                          r"'batch_size' .* Got 'big' instead\."),
    "negative max_iter": (lambda: _fit(max_iter=-1), "ValueError",
                          r"'max_iter' .* an int in the range \[1, inf\)\. Got -1 instead\."),
    "float max_iter": (lambda: _fit(max_iter=2.5), "ValueError",
                       r"'max_iter' .* \[1, inf\)\. Got 2\.5 instead\."),
    "zero n_iter_no_change": (lambda: _fit(n_iter_no_change=0), "ValueError",
                              r"'n_iter_no_change' .* an int in the range \[1, inf\) or a "
                              r"float among \{inf\}\. Got 0 instead\."),
    "negative tol": (lambda: _fit(tol=-1.0), "ValueError", r"'tol' .* a float in the range \[0\.0, inf\)\. Got -1\.0 instead\."),
    "negative power_t": (lambda: _fit(power_t=-1.0), "ValueError", r"'power_t' .* \[0\.0, inf\)\. Got -1\.0 instead\."),
    "zero epsilon": (lambda: _fit(solver="adam", epsilon=0.0), "ValueError",
                     r"'epsilon' .* a float in the range \(0\.0, inf\)\. Got 0\.0 instead\."),
    "beta_1 of 1": (lambda: _fit(solver="adam", beta_1=1.0), "ValueError",
                    r"'beta_1' .* a float in the range \[0\.0, 1\.0\)\. Got 1\.0 instead\."),
    "negative momentum": (lambda: _fit(momentum=-0.1), "ValueError", r"'momentum' .* a float in the range \[0\.0, 1\.0\]\. Got -0\.1 instead\."),
    "infinite alpha": (lambda: _fit(alpha=float("inf")), "ValueError",
                       r"'alpha' .* a float in the range \[0\.0, inf\)\. Got inf instead\."),
    "zero validation_fraction": (lambda: _fit(early_stopping=True, validation_fraction=0.0),
                                 "ValueError", r"validation_fraction must be"),
    "string shuffle": (lambda: _fit(shuffle="yes"), "ValueError",
                       r"'shuffle' .* an instance of 'bool' or an instance of "
                       r"'numpy\.bool'\. Got 'yes' instead\."),
    "int warm_start": (lambda: _fit(warm_start=1), "ValueError",
                       r"'warm_start' .* an instance of 'bool' or an instance of "
                       r"'numpy\.bool'\. Got 1 instead\."),
    "None activation": (lambda: _fit(activation=None), "ValueError",
                        r"'activation' parameter of MLPClassifier must be a str among "
                        r"\{.*'logistic'.*\}\. Got None instead\."),
    "negative class weight": (lambda: _fit(class_weight={0: -1.0}), "ValueError",
                              r"class_weight\[0\] must be a finite number >= 0\.0"),
    "all-zero class weights": (lambda: _fit(class_weight={0: 0, 1: 0}), "ValueError",
                               r"give every row weight 0"),
    "early stopping on too few rows": (lambda: _fit(_data()[0][:4], _data()[1][:4],
                                                    early_stopping=True),
                                       "ValueError",
                                       r"validation set is too small\. Increase"),
    # The engine: network._predict_proba
    "engine predict: W1 rows != n_features": (
        lambda: _predict_proba(W1=np.zeros((N_FEATURES + 1, N_HIDDEN))), "ValueError",
        SHAPES + r": X has 3 features, W1 is \(4, 4\)"),
    "engine predict: b1 too short": (lambda: _predict_proba(b1=np.zeros(N_HIDDEN - 1)),
                                     "ValueError", SHAPES + r".*b1 \(3,\)"),
    "engine predict: W2 rows != n_hidden": (
        lambda: _predict_proba(W2=np.zeros((N_HIDDEN + 2, N_CLASSES))), "ValueError",
        SHAPES + r".*W2 \(6, 2\)"),
    "engine predict: b2 too long": (lambda: _predict_proba(b2=np.zeros(N_CLASSES + 1)),
                                    "ValueError", SHAPES + r".*b2 \(3,\)"),
    "engine predict: proba_out too few rows": (
        lambda: _predict_proba(proba_out=np.empty((9, N_CLASSES))), "ValueError",
        r"proba_out must be \(10, 2\), got \(9, 2\)"),
    "engine predict: proba_out too few columns": (
        lambda: _predict_proba(proba_out=np.empty((10, 1))), "ValueError",
        r"proba_out must be \(10, 2\), got \(10, 1\)"),
    "engine predict: work shorter than n_hidden": (
        lambda: _predict_proba(work=np.empty(N_HIDDEN - 1)), "ValueError",
        r"work must hold at least (n_hidden=)?4 values"),
    "engine predict: empty work": (lambda: _predict_proba(work=np.empty(0)), "ValueError",
                                   r"work must hold at least (n_hidden=)?4"),
    "engine predict: work is None": (lambda: _predict_proba(work=None), "ValueError",
                                     r"work must hold at least (n_hidden=)?4"),
    "engine predict: proba_out is None": (lambda: _predict_proba(proba_out=None),
                                          "ValueError", r"proba_out must be \(10, 2\)"),
    "engine predict: parameters of mixed dtypes": (
        lambda: _predict_proba(W1=_engine_arrays(np.float32)[2]), "(ValueError|TypeError)",
        r"Buffer dtype mismatch|No matching signature"),
    "engine predict: int64 X": (
        lambda: _predict_proba(X=np.zeros((10, N_FEATURES), np.int64)),
        "(ValueError|TypeError)", r"Buffer dtype mismatch|No matching signature|ambiguous"),
    "engine predict: uint8 X, work without room to convert a row": (
        lambda: _predict_proba(X=np.zeros((10, N_FEATURES), np.uint8),
                               work=np.empty(N_HIDDEN)),
        "ValueError", r"work must hold at least 7 values"),
    "engine predict: Fortran-ordered X": (
        lambda: _predict_proba(X=np.asfortranarray(_engine_arrays()[0])), "ValueError",
        r"not C-contiguous"),
    "engine predict: read-only proba_out": (
        lambda: _predict_proba(proba_out=_read_only(np.empty((10, N_CLASSES)))),
        "ValueError", r"read-only"),
    # The engine: network._train_epoch
    "engine epoch: label == n_classes": (
        lambda: _train_epoch(y=np.r_[np.zeros(9), 2].astype(np.int32)), "ValueError",
        r"y\[9\] = 2 is not a class code in \[0, 2\)"),
    "engine epoch: negative label": (
        lambda: _train_epoch(y=np.r_[-1, np.zeros(9)].astype(np.int32)), "ValueError",
        r"y\[0\] = -1 is not a class code in \[0, 2\)"),
    "engine epoch: huge label, batch_size 1": (
        lambda: _train_epoch(batch_size=1, y=np.r_[np.zeros(5), 2**31 - 1,
                                                   np.zeros(4)].astype(np.int32)),
        "ValueError", r"y\[5\] = 2147483647 is not a class code"),
    "engine epoch: y too short": (lambda: _train_epoch(y=np.zeros(9, np.int32)),
                                  "ValueError", r"y and sample_weight need 10 entries"),
    "engine epoch: int64 labels": (lambda: _train_epoch(y=np.zeros(10, np.int64)),
                                   "(ValueError|TypeError)",
                                   r"Buffer dtype mismatch|No matching signature"),
    "engine epoch: sample_weight too long": (
        lambda: _train_epoch(sample_weight=np.ones(11)), "ValueError",
        r"y and sample_weight need 10 entries"),
    "engine epoch: order too short": (lambda: _train_epoch(order=np.arange(9)),
                                      "ValueError", r"order needs 10 entries, got 9"),
    "engine epoch: order index == n_samples": (
        lambda: _train_epoch(order=np.r_[np.arange(9), 10]), "ValueError",
        r"order\[9\] = 10 is not a row of X"),
    "engine epoch: negative order index": (
        lambda: _train_epoch(order=np.r_[np.arange(1, 10), -1]), "ValueError",
        r"order\[9\] = -1 is not a row of X"),
    "engine epoch: huge order index, batch_size 1": (
        lambda: _train_epoch(batch_size=1, order=np.r_[2**62, np.arange(9)]),
        "ValueError", r"order\[0\] = 4611686018427387904 is not a row of X"),
    "engine epoch: int32 order": (lambda: _train_epoch(order=np.arange(10, dtype=np.int32)),
                                  "(ValueError|TypeError)",
                                  r"Buffer dtype mismatch|No matching signature"),
    "engine epoch: work one short": (lambda: _train_epoch(work_delta=-1), "ValueError",
                                     r"work is shorter than train_workspace_size"),
    "engine epoch: work one short, batch_size 1": (
        lambda: _train_epoch(batch_size=1, work_delta=-1), "ValueError",
        r"work is shorter than train_workspace_size"),
    "engine epoch: uint8 X, work one short": (
        lambda: _train_epoch(X=np.zeros((10, N_FEATURES), np.uint8), work_delta=-1),
        "ValueError", r"work is shorter than train_workspace_size"),
    "engine epoch: uint8 X, work one short, batch_size 1": (
        lambda: _train_epoch(X=np.zeros((10, N_FEATURES), np.uint8), batch_size=1,
                             work_delta=-1),
        "ValueError", r"work is shorter than train_workspace_size"),
    "engine epoch: work one short, adam": (
        lambda: _train_epoch(work_delta=-1, options={"solver": 1}), "ValueError",
        r"work is shorter than train_workspace_size"),
    "engine epoch: work is None": (lambda: _train_epoch(work=None), "ValueError",
                                   r"work is shorter than train_workspace_size"),
    "engine epoch: batch_size larger than work allows": (
        lambda: _train_epoch(work=np.empty(60), batch_size=2**40), "ValueError",
        r"work is shorter than train_workspace_size"),
    "engine epoch: adam state one short": (
        lambda: _train_epoch(options={"solver": 1}, optimizer_state=np.zeros(2 * 26 - 1)),
        "ValueError", r"optimizer_state must hold optimizer_state_size\(\.\.\.\) = 52"),
    "engine epoch: momentum state is None": (
        lambda: _train_epoch(options={"momentum": 0.9}, optimizer_state=None),
        "ValueError", r"optimizer_state must hold .* = 26 values"),
    "engine epoch: zero batch_size": (lambda: _train_epoch(batch_size=0), "ValueError",
                                      r"batch_size must be >= 1, got 0"),
    "engine epoch: NaN learning rate": (
        lambda: _train_epoch(options={"learning_rate": float("nan")}), "ValueError",
        r"options out of range: need learning_rate > 0"),
    "engine epoch: momentum 1.5": (lambda: _train_epoch(options={"momentum": 1.5}),
                                   "ValueError", r"options out of range.*0 <= momentum <= 1"),
    "engine epoch: unknown solver": (lambda: _train_epoch(options={"solver": 7}),
                                     "ValueError", r"unknown solver code 7"),
    "engine epoch: W2 columns != classes in b2": (
        lambda: _train_epoch(W2=np.zeros((N_HIDDEN, 3))), "ValueError", SHAPES),
    "engine epoch: W1 rows != n_features": (
        lambda: _train_epoch(W1=np.zeros((N_FEATURES - 1, N_HIDDEN))), "ValueError",
        SHAPES),
    "engine epoch: read-only W1": (
        lambda: _train_epoch(W1=_read_only(np.zeros((N_FEATURES, N_HIDDEN)))),
        "ValueError", r"read-only"),
    # stats_out is read ([4]) and written ([0..4]): too short or None is refused.
    "engine epoch: stats_out too short": (lambda: _train_epoch(stats_out=np.zeros(2)),
                                          "ValueError", r"stats_out"),
    "engine epoch: stats_out is None": (lambda: _train_epoch(stats_out=None),
                                        "(ValueError|TypeError)", r"stats_out"),
}


# The child process ------------------------------------------------------------------

def _run_cases(names):
    """Run the named cases, one JSON line each; a "start" line goes first and is
    flushed, so that the parent knows which case a crash happened in."""
    for name in names:
        print(json.dumps({"start": name}), flush=True)
        call = CASES[name][0]
        record = {"case": name, "raised": None}
        try:
            call()
        except BaseException as exc:    # noqa: BLE001 - everything is reported
            record.update(raised=type(exc).__name__,
                          mro=[cls.__name__ for cls in type(exc).__mro__],
                          message=str(exc),
                          where=traceback.format_exc(limit=-3))
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    _run_cases(sys.argv[1:])
    sys.exit(0)


# The tests --------------------------------------------------------------------------

import re  # noqa: E402

import pytest  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _describe(returncode):
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exit status {returncode}"


@pytest.fixture(scope="module")
def battery():
    """{case: record} from child processes; a crash is the record of its case."""
    results, runs = {}, []
    remaining = list(CASES)
    while remaining:
        proc = subprocess.run([sys.executable, __file__, *remaining],
                              capture_output=True, text=True, timeout=300)
        runs.append(proc.returncode)
        started = None
        for line in proc.stdout.splitlines():
            if not line.startswith("{"):
                continue
            record = json.loads(line)
            if "start" in record:
                started = record["start"]
            else:
                results[record["case"]] = record
                started = None
        if proc.returncode != 0:
            crashed = [started] if started else remaining  # died outside any case
            for name in crashed:
                results[name] = {"case": name, "crashed": _describe(proc.returncode),
                                 "stderr": proc.stderr[-3000:]}
        remaining = [name for name in remaining if name not in results]
    return {"results": results, "runs": runs}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_refused_clearly(battery, name):
    record = battery["results"][name]
    _, expected_type, pattern = CASES[name]
    assert "crashed" not in record, (
        f"the process died ({record['crashed']}) in this case:\n{record['stderr']}")
    assert record["raised"] is not None, "no exception was raised"
    assert any(re.fullmatch(expected_type, cls) for cls in record["mro"]), (
        f"raised {record['raised']} ({record['mro']}), expected {expected_type}: "
        f"{record['message']}\n{record['where']}")
    assert re.search(pattern, record["message"], flags=re.S), (
        f"message {record['message']!r} does not match {pattern!r}")


def test_battery_process_exits_normally(battery):
    # One child ran every case: no case killed it (returncode 0, no signal).
    assert battery["runs"] == [0], [_describe(rc) for rc in battery["runs"]]
    assert len(battery["results"]) == len(CASES)


# Odd memory layouts work, and exactly like C-contiguous input -----------------------

def _layouts(X, tmp_path):
    """X in every layout the estimator must accept, each equal in value to X."""
    wide = np.zeros((2 * X.shape[0], 2 * X.shape[1]), X.dtype)
    wide[::2, ::2] = X
    read_only = X.copy()
    read_only.flags.writeable = False
    path = tmp_path / f"X-{X.dtype}.dat"
    X.tofile(path)
    return {
        "Fortran-ordered": np.asfortranarray(X),
        "row- and column-strided": wide[::2, ::2],
        "negative strides": X[::-1, ::-1].copy()[::-1, ::-1],
        "read-only": read_only,
        "memory-mapped read-only": np.memmap(path, X.dtype, "r", shape=X.shape),
        # float32 big-endian: test_big_endian_float32_trains_in_float32
        **({"big-endian": X.astype(">f8")} if X.dtype == np.float64 else {}),
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
@pytest.mark.parametrize("params", [
    dict(batch_size=16),
    dict(batch_size=1, shuffle=False),
    dict(solver="adam", batch_size=7, early_stopping=True, n_iter_no_change=2),
], ids=["sgd", "sample-by-sample", "adam-early-stopping"])
def test_odd_layouts_train_and_predict_like_c_contiguous(tmp_path, dtype, params):
    rng = np.random.RandomState(0)
    X = (rng.rand(90, 6) * (255 if dtype == np.uint8 else 1)).astype(dtype)
    y = np.arange(90) % 3
    weights = rng.rand(90)
    params = dict(hidden_layer_sizes=5, learning_rate_init=0.1, max_iter=3,
                  random_state=0, **params)
    from mlp_cy import MLPClassifier

    base = MLPClassifier(**params).fit(X, y, sample_weight=weights)
    expected = base.predict_proba(X)
    dtype = np.float64 if dtype == np.uint8 else dtype      # uint8 trains in float64
    assert base.coefs_[0].dtype == dtype
    for name, X_odd in _layouts(X, tmp_path).items():
        assert np.array_equal(X_odd, X), name
        y_odd = np.repeat(y, 2)[::2]                      # strided labels and weights
        w_odd = np.repeat(weights, 2)[::2]
        clf = MLPClassifier(**params).fit(X_odd, y_odd, sample_weight=w_odd)
        assert clf.coefs_[0].dtype == dtype, f"{name}: trained in {clf.coefs_[0].dtype}"
        for got, want in zip(clf.coefs_ + clf.intercepts_, base.coefs_ + base.intercepts_):
            np.testing.assert_array_equal(got, want, err_msg=name)
        np.testing.assert_array_equal(base.predict_proba(X_odd), expected, err_msg=name)
        np.testing.assert_array_equal(X_odd, X, err_msg=f"{name}: X was modified")


def test_big_endian_float32_trains_in_float32():
    # "float32 trains in float32": also big-endian float32, as read_idx(mmap=True)
    # returns for an IDX file of floats. check_X compares X.dtype with the native
    # float32 and so converts '>f4' to float64 (docs/reliability.md, finding 5).
    from mlp_cy import MLPClassifier

    rng = np.random.RandomState(0)
    X = rng.rand(40, 3).astype(np.float32)
    y = np.arange(40) % 2
    params = dict(hidden_layer_sizes=4, max_iter=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = MLPClassifier(**params).fit(X.astype(">f4"), y)
        b = MLPClassifier(**params).fit(X, y)
    assert a.coefs_[0].dtype == np.float32
    np.testing.assert_array_equal(a.coefs_[0], b.coefs_[0])


def test_memory_mapped_idx_file_trains_like_the_array_in_memory(tmp_path):
    from mlp_cy import MLPClassifier
    from mlp_cy.datasets import read_idx, write_idx

    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, (60, 4, 4)).astype(np.uint8)
    write_idx(tmp_path / "images-idx3-ubyte", images)
    mapped = read_idx(tmp_path / "images-idx3-ubyte", mmap=True)
    y = np.arange(60) % 2
    params = dict(hidden_layer_sizes=4, max_iter=2, random_state=0)
    a = MLPClassifier(**params).fit(mapped.reshape(60, -1), y)
    b = MLPClassifier(**params).fit(images.reshape(60, -1), y)
    np.testing.assert_array_equal(a.coefs_[0], b.coefs_[0])
    np.testing.assert_array_equal(a.predict_proba(mapped.reshape(60, -1)),
                                  b.predict_proba(images.reshape(60, -1)))


# Huge values: finite losses, no overflow ---------------------------------------------

HUGE = {np.float32: 1e30, np.float64: 1e300}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", ["logistic", "tanh"])
def test_huge_inputs_give_a_finite_loss(dtype, activation):
    from mlp_cy import MLPClassifier

    rng = np.random.RandomState(0)
    X = (rng.randn(120, 5) * HUGE[dtype]).astype(dtype)
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
    clf = MLPClassifier(hidden_layer_sizes=8, activation=activation,
                        learning_rate_init=0.1, max_iter=4, random_state=0)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Training diverged")
        with np.errstate(all="raise"):
            clf.fit(X, y)
            proba = clf.predict_proba(X)
    assert clf.n_iter_ == 4 and np.isfinite(clf.loss_curve_).all()
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", ["relu", "identity"])
def test_huge_inputs_with_unbounded_activations_never_give_nan_weights(dtype, activation):
    # Finite all the way, or the divergence warning with the last finite weights.
    from mlp_cy import MLPClassifier

    rng = np.random.RandomState(0)
    for scale in (1e6, 1e20, HUGE[dtype]):
        X = (rng.randn(120, 5) * scale).astype(dtype)
        y = (X[:, 0] > 0).astype(int)
        clf = MLPClassifier(hidden_layer_sizes=8, activation=activation,
                            learning_rate_init=0.01, max_iter=3, random_state=0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            clf.fit(X, y)
        diverged = any("Training diverged" in str(w.message) for w in caught)
        assert all(np.isfinite(p).all() for p in clf.coefs_ + clf.intercepts_), scale
        assert np.isfinite(clf.loss_curve_).all(), scale
        assert diverged or clf.n_iter_ == 3, scale


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huge_logits_give_finite_probabilities_and_loss(dtype):
    # Logits of +-1e30: the softmax subtracts the row maximum, and the loss is
    # logsumexp(z) - z_y, finite even where a probability underflows to 0.
    from mlp_cy import MLPClassifier

    rng = np.random.RandomState(0)
    X = rng.rand(50, 3).astype(dtype)
    y = np.arange(50) % 3
    clf = MLPClassifier(hidden_layer_sizes=4, warm_start=True, max_iter=1,
                        learning_rate_init=1e-40, shuffle=False)
    clf.coefs_ = [rng.randn(3, 4).astype(dtype),
                  (np.sign(rng.randn(4, 3)) * 1e30).astype(dtype)]
    clf.intercepts_ = [np.zeros(4, dtype), np.array([1e30, -1e30, 0], dtype)]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Training diverged")
        warnings.filterwarnings("ignore", message="Stochastic Optimizer")
        clf.fit(X, y)
    assert np.isfinite(clf.loss_) and clf.loss_ > 1e29
    proba = clf.predict_proba(X)
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logits_that_overflow_give_probabilities_not_nan(dtype):
    # Finite weights and inputs whose logits overflow: softmax's limit is 1 for the
    # +inf class and 0 for the others, not NaN. This is what a diverged float32 run
    # leaves (see below): its last finite weights overflow on some training rows.
    from mlp_cy import MLPClassifier

    big = np.finfo(dtype).max / 4
    clf = MLPClassifier(hidden_layer_sizes=2, activation="identity")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(np.array([[1, 0], [0, 1], [1, 1]], dtype), [0, 1, 2])
    clf.coefs_ = [np.eye(2, dtype=dtype),
                  np.array([[big, -big, -big], [big, -big, -big]], dtype)]
    clf.intercepts_ = [np.zeros(2, dtype), np.zeros(3, dtype)]
    proba = clf.predict_proba(np.array([[4, 4]], dtype))   # logits (+inf, -inf, -inf)
    np.testing.assert_array_equal(proba, [[1, 0, 0]])
    # Two classes, one logistic unit: sigmoid(+inf) is 1, sigmoid(-inf) 0 (to the
    # clamp of its argument at -88 or -708, which keeps exp finite).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(np.eye(2, dtype=dtype), [0, 1])
    clf.coefs_ = [np.eye(2, dtype=dtype), np.array([[big], [big]], dtype)]
    clf.intercepts_ = [np.zeros(2, dtype), np.zeros(1, dtype)]
    for sign, expected in ((1, [0, 1]), (-1, [1, 0])):
        proba = clf.predict_proba(np.array([[4 * sign, 4 * sign]], dtype))
        assert np.isfinite(proba).all()
        np.testing.assert_allclose(proba, [expected], rtol=0, atol=1e-30)


def test_predictions_after_divergence_are_finite():
    from mlp_cy import MLPClassifier

    rng = np.random.RandomState(0)
    X = rng.randn(120, 5).astype(np.float32)
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
    clf = MLPClassifier(hidden_layer_sizes=8, activation="identity", batch_size=16,
                        solver="sgd", momentum=0.0, alpha=0.0,
                        learning_rate_init=10.0, max_iter=30, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X, y)
    assert clf.n_iter_ < 30                        # it did diverge
    assert np.isfinite(clf.predict_proba(X)).all()


# Divergence: a warning and the last finite weights, never NaN weights ---------------

@pytest.mark.parametrize("dtype, params, epoch", [
    (np.float32, dict(activation="relu", momentum=0.9, batch_size=16), 6),
    (np.float32, dict(activation="identity", batch_size=16), 4),
    (np.float64, dict(activation="relu", batch_size=1, learning_rate_init=100.0), 3),
    (np.float64, dict(activation="relu", momentum=0.9, batch_size=1), 4),
], ids=["f32-momentum", "f32-sgd", "f64-sample-by-sample", "f64-momentum-batch-1"])
def test_divergence_warns_and_keeps_the_last_finite_weights(dtype, params, epoch):
    from mlp_cy import MLPClassifier
    from mlp_cy._compat import ConvergenceWarning

    rng = np.random.RandomState(0)
    X = rng.randn(120, 5).astype(dtype)
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
    # Plain SGD (or momentum) with a step far too large: Adam's steps are bounded.
    params = {"hidden_layer_sizes": 8, "solver": "sgd", "momentum": 0.0, "alpha": 0.0,
              "learning_rate_init": 10.0, "tol": 0, "n_iter_no_change": 100,
              "random_state": 0, **params}
    clf = MLPClassifier(max_iter=30, **params)
    with pytest.warns(ConvergenceWarning,
                      match=rf"Training diverged in epoch {epoch}: .*likely too large"):
        clf.fit(X, y)
    assert clf.n_iter_ == epoch - 1 and len(clf.loss_curve_) == epoch - 1
    assert np.isfinite(clf.loss_curve_).all()
    # The weights are those from the start of the diverging epoch: the fit that stops
    # one epoch earlier (same draws) ends with exactly them.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        before = MLPClassifier(max_iter=epoch - 1, **params).fit(X, y)
    for got, want in zip(clf.coefs_ + clf.intercepts_, before.coefs_ + before.intercepts_):
        assert np.isfinite(got).all()
        np.testing.assert_array_equal(got, want)
    assert clf.t_ == before.t_
    # The estimator stays usable: a smaller step trains on from there.
    clf.set_params(learning_rate_init=1e-3, warm_start=True, max_iter=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X, y)
    assert np.isfinite(clf.loss_)


@pytest.mark.parametrize("code", [4, 99])
def test_engine_rejects_unknown_activation_codes(code):
    # (A negative code does not even convert to the enum: OverflowError.)
    from mlp_cy import network

    X = np.ones((4, 3))
    W1, b1, W2, b2 = np.zeros((3, 2)), np.zeros(2), np.zeros((2, 2)), np.zeros(2)
    with pytest.raises(ValueError, match="unknown activation code"):
        network._predict_proba(X, W1, b1, W2, b2, code, np.empty((4, 2)), np.empty(64))
    options = {"activation": code, "learning_rate": 0.1, "alpha": 0.0}
    work = np.empty(network._train_workspace_size({**options, "activation": 1}, 4, 3, 2, 2))
    with pytest.raises(ValueError, match="unknown activation code"):
        network._train_epoch(X, np.array([0, 1, 0, 1], np.int32), W1, b1, W2, b2, None,
                             None, 4, options, None, work, np.zeros(5))
