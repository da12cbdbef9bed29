"""MLPClassifier: scikit-learn's estimator API over the compiled two-layer engine.

Design:
a) The estimator validates, encodes labels, initialises weights and keeps the epoch
   bookkeeping (loss curve, stopping, warnings); one call into ``network._train_epoch``
   per epoch does all per-batch work without the GIL.
b) Every random draw follows scikit-learn's MLPClassifier (Glorot-uniform init from
   ``random_state``, coefficients then intercepts; the epoch shuffle of
   ``sklearn.utils.shuffle``), so both start from the same weights and visit the rows
   in the same order for the same ``random_state``.
c) The output layer is a softmax over all K classes, also for K = 2 (as in the
   textbook network); scikit-learn uses one logistic unit there, so for binary problems
   ``coefs_[1]`` is (n_hidden, 2) here and (n_hidden, 1) in scikit-learn.
"""

import numbers
import warnings
from numbers import Integral, Real

import numpy as np

from . import network
from ._compat import (
    BaseEstimator,
    ClassifierMixin,
    ConvergenceWarning,
    InvalidParameterError,
    Interval,
    Options,
    StrOptions,
    check_is_fitted,
    follows_sklearn,
    validate_parameter_constraints,
)
from ._validation import (
    FLOAT_DTYPES,
    check_feature_names,
    check_sample_weight,
    check_X,
    check_y,
)

ACTIVATIONS = {"identity": 0, "logistic": 1, "tanh": 2, "relu": 3}
SOLVERS = {"sgd": 0, "adam": 1}

# Rows per chunk of predict_proba: the hidden activations of a chunk stay in cache.
PREDICT_CHUNK_ROWS = 1024
# X dtypes the engine reads directly (uint8 pixels are converted batch by batch).
ENGINE_INPUT_DTYPES = (np.dtype(np.uint8), np.dtype(np.float32), np.dtype(np.float64))
# A run has not learned when its last training loss is above this share of the loss
# of predicting the class frequencies (log K for K balanced classes).
NEAR_CHANCE_LOSS = 0.98
# Features beyond +-this are called unscaled in the advice of a run that did not learn.
UNSCALED_INPUT = 10.0


@follows_sklearn  # scikit-learn's BaseEstimator and ClassifierMixin once it is imported
class MLPClassifier(ClassifierMixin, BaseEstimator):
    """Two-layer perceptron classifier trained by minibatch SGD or Adam in compiled code.

    The network is ``X -> act(X W1 + b1) -> softmax(. W2 + b2)`` with a cross-entropy
    loss. Parameters, defaults and attributes are scikit-learn's
    (``sklearn.neural_network.MLPClassifier``) for one hidden layer: ReLU, Adam at
    ``learning_rate_init=0.001``, ``alpha=1e-4``. From the same ``random_state`` and
    parameters both draw the same initial weights and shuffles and train to the same
    weights. The classic textbook network (a sigmoid hidden layer trained by plain
    minibatch SGD) is ``activation="logistic", solver="sgd", momentum=0.0,
    alpha=0.0, learning_rate_init=0.1``.

    float32 input trains in float32 and float64 in float64; other numeric input is
    converted to float64. Training releases the GIL for each epoch, and Ctrl-C
    stops it between two batches, leaving the weights of the last completed batch.

    Parameters
    ----------
    hidden_layer_sizes : int or tuple of one int, default=(100,)
        Number of units in the single hidden layer.
    activation : {"logistic", "tanh", "relu", "identity"}, default="relu"
        Activation of the hidden layer; "logistic" is the sigmoid.
    solver : {"sgd", "adam"}, default="adam"
        Adam, or minibatch stochastic gradient descent (with ``momentum``).
    alpha : float, default=1e-4
        L2 penalty, scaled as scikit-learn scales it: the batch loss gains
        ``alpha / (2 S) * (||W1||^2 + ||W2||^2)``, S the batch's weight sum.
    batch_size : int or "auto", default="auto"
        Rows per minibatch; "auto" is ``min(200, n_samples)``. The last batch of an
        epoch takes the rows left over.
    learning_rate : {"constant", "invscaling", "adaptive"}, default="constant"
        Schedule of the SGD step size. "invscaling" sets it to
        ``learning_rate_init / (t_ + 1) ** power_t`` after each epoch; "adaptive"
        divides it by 5 each time ``n_iter_no_change`` epochs fail to improve by
        ``tol``, and stops once it is below 1e-6. Only for solver="sgd".
    learning_rate_init : float, default=0.001
        Initial step size eta. 0.001 suits Adam; plain SGD usually needs 0.01-0.1.
    power_t : float, default=0.5
        Exponent of the "invscaling" schedule.
    max_iter : int, default=200
        Maximum number of epochs.
    shuffle : bool, default=True
        Visit the rows in a new random order each epoch.
    random_state : int, RandomState instance or None, default=None
        Seeds the weight initialisation, the shuffles and the validation split.
    tol : float, default=1e-4
        Stop when the training loss (or, with early stopping, the validation
        accuracy) has not improved by at least ``tol`` for ``n_iter_no_change``
        consecutive epochs.
    verbose : bool, default=False
        Print the loss after each epoch.
    warm_start : bool, default=False
        Continue from the current ``coefs_`` and ``intercepts_`` (also ones that the
        user assigned) instead of initialising new ones.
    momentum : float, default=0.9
        Momentum of the SGD update, in [0, 1); 0 is plain SGD. Only for solver="sgd".
    nesterovs_momentum : bool, default=True
        Use Nesterov's momentum (when ``momentum > 0``).
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the rows (stratified by class), stop
        when their accuracy stops improving, and keep the best weights seen.
    validation_fraction : float, default=0.1
        Share of the rows held out for early stopping, in (0, 1).
    beta_1, beta_2 : float, default=0.9, 0.999
        Adam's decay rates of the first and second moment estimates, in [0, 1).
    epsilon : float, default=1e-8
        Adam's numerical-stability term.
    n_iter_no_change : int, default=10
        Epochs without improvement of ``tol`` before stopping.
    class_weight : dict, "balanced" or None, default=None
        Weights per class, ``{label: weight}``, multiplying ``sample_weight``;
        "balanced" uses ``n_samples / (n_classes * np.bincount(y))``. Not part of
        scikit-learn's MLPClassifier.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, sorted as ``np.unique`` sorts them.
    coefs_ : list of two ndarrays
        ``[W1 (n_features, n_hidden), W2 (n_hidden, n_classes)]``.
    intercepts_ : list of two ndarrays
        ``[b1 (n_hidden,), b2 (n_classes,)]``.
    loss_ : float
        Mean training loss of the last epoch, each batch's loss taken at its forward
        pass and weighted by its row count; ``inf`` when the first epoch diverged.
    best_loss_ : float or None
        Lowest ``loss_`` seen; None with early stopping.
    loss_curve_ : list of float
        ``loss_`` of every epoch.
    validation_scores_ : list of float or None
        Accuracy on the held-out rows after each epoch (early stopping only; a model
        saved by ``mlp-cy train`` holds those of its held-out part here).
    best_validation_score_ : float or None
        Best of ``validation_scores_``.
    validation_loss_curve_ : list of float or None
        Mean cross-entropy on the held-out rows after each epoch (early stopping
        only). Not part of scikit-learn's MLPClassifier.
    n_iter_ : int
        Epochs run by the last call to fit (1 for partial_fit).
    t_ : int
        Training rows seen since initialisation.
    n_features_in_ : int
        Number of features seen in fit.
    feature_names_in_ : ndarray of str
        Column names of X in fit, when it had string column names.
    n_layers_ : int
        3: input, hidden and output layers.
    n_outputs_ : int
        Number of output units, ``n_classes``.
    out_activation_ : str
        "softmax".

    See Also
    --------
    sklearn.neural_network.MLPClassifier : the estimator this one mirrors.

    Examples
    --------
    >>> import numpy as np
    >>> from mlp_cy import MLPClassifier
    >>> rng = np.random.RandomState(0)
    >>> X = rng.rand(200, 4).astype(np.float32)
    >>> y = (X[:, 0] + X[:, 1] > 1).astype(int)
    >>> clf = MLPClassifier(hidden_layer_sizes=16, learning_rate_init=0.01,
    ...                     max_iter=300, random_state=0).fit(X, y)
    >>> clf.coefs_[0].dtype
    dtype('float32')
    >>> bool(clf.score(X, y) > 0.9)
    True
    """

    # scikit-learn's MLPClassifier._parameter_constraints for what mlp_cy supports
    # (no "lbfgs", so no max_fun), plus class_weight; scikit-learn's own objects once
    # it is imported (_compat). _validate_hyperparameters adds mlp_cy's own limits.
    _parameter_constraints = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions({"identity", "logistic", "tanh", "relu"})],
        "solver": [StrOptions({"sgd", "adam"})],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"),
                             Options(Real, {np.inf})],
        "class_weight": [dict, StrOptions({"balanced"}), None],
    }

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=1e-4,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        class_weight=None,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.class_weight = class_weight

    # Fitting ------------------------------------------------------------------

    def fit(self, X, y, sample_weight=None):
        """Train on (X, y) for up to ``max_iter`` epochs.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data; float32 trains in float32.
        y : array-like of shape (n_samples,)
            Class labels.
        sample_weight : array-like of shape (n_samples,), default=None
            Per-row weights; each batch's loss is ``sum_i w_i loss_i / sum_i w_i``.

        Returns
        -------
        self : MLPClassifier

        Warns
        -----
        ConvergenceWarning
            When ``max_iter`` epochs did not converge; when the loss diverged (the
            weights are then those before the diverging epoch); and when the run did
            not learn: its last training loss is no better than predicting the class
            frequencies, or no epoch improved on the first. The message names the
            likely causes (learning rate, unscaled X, too few epochs).
        """
        return self._fit(X, y, sample_weight, incremental=False)

    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """Train for one epoch over (X, y), continuing from the current weights.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None
        classes : array-like of shape (n_classes,), default=None
            Every class that will ever appear; required on the first call.

        Returns
        -------
        self : MLPClassifier
        """
        return self._fit(X, y, sample_weight, incremental=True, classes=classes)

    def _fit(self, X, y, sample_weight, *, incremental, classes=None):
        n_hidden = self._validate_hyperparameters()
        first_pass = not hasattr(self, "coefs_") or (
            not self.warm_start and not incremental
        )
        # Weights that the user assigned to an estimator never fitted (fit sets
        # classes_): X decides the dtype, y (or classes) the classes, as in
        # scikit-learn; an n_features_in_ set with them is checked against X. The
        # weights are checked against all of them below.
        user_weights = not first_pass and not (hasattr(self, "classes_")
                                               and hasattr(self, "n_features_in_"))
        fresh = first_pass or user_weights
        check_feature_names(self, X, reset=fresh)
        n_features = getattr(self, "n_features_in_", None) if user_weights else \
            None if fresh else self.n_features_in_
        X = check_X(X, keep=ENGINE_INPUT_DTYPES, n_features=n_features)
        # The weights' dtype: X's when it is float32 or float64, else float64, as in
        # scikit-learn; once trained, the weights keep theirs and the engine converts
        # the rows of X as it gathers them (no full copy).
        if fresh:
            dtype = X.dtype if X.dtype in FLOAT_DTYPES else np.dtype(np.float64)
        else:
            dtype = np.asarray(self.coefs_[0]).dtype
            dtype = dtype if dtype in FLOAT_DTYPES else np.dtype(np.float64)
        n_samples = X.shape[0]
        y = check_y(y, n_samples)
        self._set_classes(y, fresh, incremental, classes)
        y_codes = np.searchsorted(self.classes_, y).astype(np.int32)
        sample_weight = check_sample_weight(sample_weight, n_samples, dtype)

        self._random_state = _check_random_state(self.random_state)
        if first_pass:
            self._initialize(X.shape[1], n_hidden, dtype)
        else:
            if user_weights:
                self._reset_state(X.shape[1])
            self._check_parameters(dtype, n_hidden)
        if self.early_stopping and getattr(self, "validation_scores_", None) is None:
            self._reset_early_stopping()
        if fresh or not hasattr(self, "_best_params"):
            self._best_params = [p.copy() for p in self._parameters()]
        sample_weight = self._apply_class_weight(y_codes, sample_weight, incremental, dtype)
        diverged = self._fit_stochastic(X, y_codes, sample_weight, incremental)
        # One partial_fit epoch tells too little; callers that loop over partial_fit
        # (the command line) ask _learning_problem themselves at the end.
        if not incremental and not diverged and len(self.classes_) > 1:
            problem = _learning_problem(self.loss_curve_,
                                        _chance_loss(y_codes, sample_weight))
            if problem:
                warnings.warn(f"{problem} {self._learning_advice(X)}", ConvergenceWarning,
                              stacklevel=3)
        return self

    def _learning_advice(self, X):
        """The likely causes of a run that did not learn, for this estimator and X."""
        causes = [f"learning_rate_init={self.learning_rate_init} is too large or too small "
                  f"for solver={self.solver!r} (0.001 suits 'adam'; 'sgd' usually needs "
                  "0.01-0.1)"]
        low, high = float(np.min(X)), float(np.max(X))
        if max(-low, high) > UNSCALED_INPUT:
            causes.append(f"X is not scaled: its values reach {low:g} to {high:g} "
                          "(standardise it, e.g. with sklearn.preprocessing."
                          "StandardScaler, or divide pixels by 255)")
        if self.n_iter_ == self.max_iter and _still_improving(self.loss_curve_):
            causes.append(f"max_iter={self.max_iter} epochs are too few")
        return "Likely causes: " + "; or ".join(causes) + "."

    def _reset_early_stopping(self):
        # warm_start into early_stopping: start the validation record now.
        self.validation_scores_ = []
        self.validation_loss_curve_ = []
        self.best_validation_score_ = -np.inf
        self.best_loss_ = None

    def _apply_class_weight(self, y_codes, sample_weight, incremental, dtype):
        """sample_weight times the weight of each row's class (None when neither is set)."""
        if self.class_weight is None:
            return sample_weight
        n_classes = len(self.classes_)
        if self.class_weight == "balanced":
            if incremental:
                raise ValueError(
                    "class_weight='balanced' needs the class counts of all the data and "
                    "is not supported by partial_fit; pass a dict {label: weight}."
                )
            counts = np.bincount(y_codes, minlength=n_classes)
            per_class = len(y_codes) / (n_classes * np.maximum(counts, 1))
        else:
            per_class = np.ones(n_classes)
            for label, weight in self.class_weight.items():
                k = np.searchsorted(self.classes_, label)
                if k >= n_classes or self.classes_[k] != label:
                    raise ValueError(
                        f"class_weight has label {label!r}, which is not in classes_ "
                        f"{self.classes_}."
                    )
                _check_number(f"class_weight[{label!r}]", weight, low=0.0)
                per_class[k] = weight
        weights = per_class[y_codes].astype(dtype)
        if sample_weight is not None:
            weights *= sample_weight
        if not weights.any():
            raise ValueError("class_weight and sample_weight give every row weight 0.")
        return weights

    def _validate_hyperparameters(self):
        """Check the constructor's arguments; return the hidden layer's width.

        scikit-learn's rules first (InvalidParameterError, its message), then
        mlp_cy's own: exactly one hidden layer, and a validation_fraction above 0
        when early stopping holds rows out.
        """
        validate_parameter_constraints(self._parameter_constraints,
                                       self.get_params(deep=False), type(self).__name__)
        sizes = self.hidden_layer_sizes
        sizes = (sizes,) if isinstance(sizes, numbers.Integral) else tuple(sizes)
        if len(sizes) != 1:
            raise InvalidParameterError(
                f"hidden_layer_sizes must be an int or a tuple of one int, got "
                f"{self.hidden_layer_sizes!r}: mlp_cy has exactly one hidden layer."
            )
        n_hidden = sizes[0]
        if not isinstance(n_hidden, numbers.Integral) or isinstance(n_hidden, (bool, np.bool_)) \
                or n_hidden < 1:
            raise InvalidParameterError(
                f"hidden_layer_sizes must be a positive int, got {n_hidden!r}."
            )
        if self.early_stopping:
            _check_number("validation_fraction", self.validation_fraction, low=0.0,
                          low_open=True, high=1.0, extra="with early_stopping=True")
        return int(n_hidden)

    def _set_classes(self, y, first_pass, incremental, classes):
        if incremental and first_pass and not hasattr(self, "classes_") \
                and classes is None:
            raise ValueError(
                "classes must be passed on the first call to partial_fit: every class "
                "that will ever appear, e.g. classes=np.unique(y_all)."
            )
        if first_pass:
            if incremental and classes is not None:
                self.classes_ = np.unique(np.asarray(classes))
                unknown = np.setdiff1d(np.unique(y), self.classes_)
                if unknown.size:
                    raise ValueError(
                        f"y has labels {unknown} that are not in classes={self.classes_}."
                    )
            else:
                self.classes_ = np.unique(y)
            return
        if classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(
                f"classes={np.unique(classes)} differs from the classes of the first "
                f"call, {self.classes_}."
            )
        labels = np.unique(y)
        if self.warm_start and not incremental and not np.array_equal(labels, self.classes_):
            raise ValueError(
                "warm_start can only be used where `y` has the same classes as in the "
                f"previous call to fit. Previously got {self.classes_}, `y` has {labels}."
            )
        unknown = np.setdiff1d(labels, self.classes_)
        if unknown.size:
            raise ValueError(
                f"`y` has classes not in `self.classes_`. `self.classes_` has "
                f"{self.classes_}. 'y' has {labels}."
            )

    def _initialize(self, n_features, n_hidden, dtype):
        """New weights, Glorot-uniform as scikit-learn draws them, and fresh state."""
        n_classes = self.classes_.shape[0]
        self._reset_state(n_features)
        self.coefs_, self.intercepts_ = [], []
        factor = 2.0 if self.activation == "logistic" else 6.0
        for fan_in, fan_out in ((n_features, n_hidden), (n_hidden, n_classes)):
            bound = np.sqrt(factor / (fan_in + fan_out))
            coef = self._random_state.uniform(-bound, bound, (fan_in, fan_out))
            intercept = self._random_state.uniform(-bound, bound, fan_out)
            self.coefs_.append(coef.astype(dtype))
            self.intercepts_.append(intercept.astype(dtype))

    def _reset_state(self, n_features):
        """The fitted attributes other than the weights, as before a first epoch."""
        self.n_features_in_ = n_features
        self.n_iter_ = 0
        self.t_ = 0
        self.n_layers_ = 3
        self.n_outputs_ = self.classes_.shape[0]
        self.out_activation_ = "softmax"
        self.loss_curve_ = []
        self.__dict__.pop("loss_", None)  # a former fit's, not these weights'
        self._no_improvement_count = 0
        if self.early_stopping:
            self.validation_scores_ = []
            self.validation_loss_curve_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        else:
            self.validation_scores_ = None
            self.validation_loss_curve_ = None
            self.best_validation_score_ = None
            self.best_loss_ = np.inf

    def _check_parameters(self, dtype, n_hidden_requested):
        """Bring user-set or loaded weights into the form the engine updates in place."""
        n_features = self.n_features_in_
        n_classes = self.classes_.shape[0]
        n_hidden = np.shape(self.coefs_[0])[1] if np.ndim(self.coefs_[0]) == 2 else -1
        expected = [(n_features, n_hidden), (n_hidden, n_classes)]
        if len(self.coefs_) != 2 or len(self.intercepts_) != 2:
            raise ValueError("coefs_ and intercepts_ must each hold two arrays.")
        for layer in range(2):
            coef = np.asarray(self.coefs_[layer])
            intercept = np.asarray(self.intercepts_[layer])
            if coef.shape != expected[layer] or intercept.shape != (expected[layer][1],):
                binary = layer == 1 and n_classes == 2 and coef.shape == (n_hidden, 1)
                raise ValueError(
                    f"coefs_[{layer}] has shape {coef.shape} and intercepts_[{layer}] "
                    f"{intercept.shape}; expected {expected[layer]} and "
                    f"({expected[layer][1]},) for {n_features} features, {n_hidden} hidden "
                    f"units and {n_classes} classes."
                    + (" That is scikit-learn's binary layout (one logistic unit): convert "
                       "its fitted estimator with MLPClassifier.from_sklearn(est)."
                       if binary else "")
                )
            if not (np.isfinite(coef).all() and np.isfinite(intercept).all()):
                raise ValueError(f"coefs_[{layer}] or intercepts_[{layer}] is not finite.")
            self.coefs_[layer] = np.require(coef, dtype, ["C", "W", "O"])
            self.intercepts_[layer] = np.require(intercept, dtype, ["C", "W", "O"])
        if n_hidden != n_hidden_requested:
            raise ValueError(
                f"coefs_ has {n_hidden} hidden units but hidden_layer_sizes asks for "
                f"{n_hidden_requested}; set one to match the other."
            )

    def _parameters(self):
        """(W1, b1, W2, b2): the arrays the engine updates in place."""
        return (self.coefs_[0], self.intercepts_[0], self.coefs_[1], self.intercepts_[1])

    def _batch_size(self, n_samples):
        if self.batch_size == "auto":
            return min(200, n_samples)
        if self.batch_size > n_samples:
            warnings.warn(
                "Got `batch_size` less than 1 or larger than sample size. It is going "
                "to be clipped",
                stacklevel=5,
            )
        return int(np.clip(self.batch_size, 1, n_samples))

    def _train_options(self):
        """The engine's TrainOptions, by name; learning_rate is set per epoch."""
        return {
            "activation": ACTIVATIONS[self.activation],
            "solver": SOLVERS[self.solver],
            "learning_rate": float(self.learning_rate_init),
            "alpha": float(self.alpha),
            "momentum": float(self.momentum) if self.solver == "sgd" else 0.0,
            "nesterov": bool(self.nesterovs_momentum),
            "beta_1": float(self.beta_1),
            "beta_2": float(self.beta_2),
            "epsilon": float(self.epsilon),
        }

    def _fit_stochastic(self, X, y_codes, sample_weight, incremental):
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True; use fit.")
        options = self._train_options()
        params = self._parameters()
        W1, b1, W2, b2 = params
        n_hidden, n_classes = W2.shape
        state_size = network._optimizer_state_size(options, X.shape[1], n_hidden, n_classes)
        # As scikit-learn: a new optimiser for each fit; partial_fit keeps its state
        # (velocities or moments, Adam's step count, the scheduled learning rate).
        state = getattr(self, "_optimizer_state", None)
        if not incremental or state is None or state.shape != (state_size,) \
                or state.dtype != W1.dtype:
            self._optimizer_state = np.zeros(state_size, dtype=W1.dtype)
            self._n_updates = 0
            self._learning_rate = float(self.learning_rate_init)

        early_stopping = self.early_stopping
        if early_stopping:
            train, val = self._validation_split(y_codes)
            X_val, y_val = X[val], y_codes[val]
            sample_weight_val = None if sample_weight is None else sample_weight[val]
            X, y_codes = X[train], y_codes[train]
            sample_weight = None if sample_weight is None else sample_weight[train]
        n_samples = X.shape[0]
        batch_size = self._batch_size(n_samples)
        work = np.empty(
            network._train_workspace_size(options, batch_size, X.shape[1], n_hidden,
                                          n_classes),
            dtype=W1.dtype,
        )
        stats = np.zeros(5)
        sample_idx = np.arange(n_samples, dtype=np.intp)
        self.n_iter_ = 0
        diverged = False
        for _ in range(self.max_iter):
            if self.shuffle:
                # sklearn.utils.shuffle(sample_idx, random_state=...), draw for draw
                permutation = np.arange(n_samples)
                self._random_state.shuffle(permutation)
                sample_idx = sample_idx[permutation]
            # The last finite state, should this epoch diverge.
            snapshot = [p.copy() for p in params + (self._optimizer_state,)]
            options["learning_rate"] = self._learning_rate
            stats[4] = self._n_updates
            try:
                network._train_epoch(
                    X, y_codes, W1, b1, W2, b2, sample_weight,
                    sample_idx if self.shuffle else None, batch_size, options,
                    self._optimizer_state, work, stats,
                )
            except KeyboardInterrupt:
                # The weights are those of the last completed batch.
                self.t_ += int(stats[1])
                self._n_updates = int(stats[4])
                raise
            if stats[3] or not all(np.isfinite(p).all() for p in params):
                for current, saved in zip(params + (self._optimizer_state,), snapshot):
                    current[...] = saved
                diverged = True
                if not hasattr(self, "loss_"):  # loss_ is always set after fit
                    self.loss_ = float("inf")
                warnings.warn(
                    f"Training diverged in epoch {self.n_iter_ + 1}: the loss is no longer "
                    f"finite (learning_rate_init={self.learning_rate_init} is likely too "
                    "large, or X has huge values: scale it). Training stopped; the weights "
                    "are those from the start of that epoch.",
                    ConvergenceWarning,
                    stacklevel=4,
                )
                break
            self._n_updates = int(stats[4])
            self.n_iter_ += 1
            self.t_ += n_samples
            self.loss_ = float(stats[0] / n_samples)
            self.loss_curve_.append(self.loss_)
            if self.verbose:
                print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")
            if early_stopping:
                self._score_validation(X_val, y_val, sample_weight_val)
            else:
                self._update_loss_improvement()
            if self.solver == "sgd" and self.learning_rate == "invscaling":
                self._learning_rate = self.learning_rate_init / (self.t_ + 1) ** self.power_t
            if self._no_improvement_count > self.n_iter_no_change:
                what = "Validation score" if early_stopping else "Training loss"
                message = (f"{what} did not improve more than tol={self.tol:f} for "
                           f"{self.n_iter_no_change} consecutive epochs.")
                adaptive = self.solver == "sgd" and self.learning_rate == "adaptive"
                if adaptive and self._learning_rate > 1e-6:
                    self._learning_rate /= 5.0
                    self._no_improvement_count = 0
                    if self.verbose:
                        print(f"{message} Setting learning rate to {self._learning_rate:f}")
                else:
                    if self.verbose:
                        print(message + (" Learning rate too small. Stopping."
                                         if adaptive else ""))
                    break
            if incremental:
                break
            if self.n_iter_ == self.max_iter:
                warnings.warn(
                    f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached "
                    "and the optimization hasn't converged yet.",
                    ConvergenceWarning,
                    stacklevel=4,
                )
        if early_stopping:
            for current, best in zip(params, self._best_params):
                current[...] = best
        return diverged

    def _update_loss_improvement(self):
        """scikit-learn's stopping rule on the training loss."""
        if self.loss_ > self.best_loss_ - self.tol:
            self._no_improvement_count += 1
        else:
            self._no_improvement_count = 0
        if self.loss_ < self.best_loss_:
            self.best_loss_ = self.loss_

    def _score_validation(self, X_val, y_val, sample_weight_val):
        """Accuracy and loss on the held-out rows; keep the best weights so far."""
        proba = self._predict_proba(X_val)
        correct = np.argmax(proba, axis=1) == y_val
        score = float(np.average(correct, weights=sample_weight_val))
        tiny = np.finfo(proba.dtype).tiny
        log_likelihood = np.log(np.maximum(proba[np.arange(len(y_val)), y_val], tiny))
        self.validation_scores_.append(score)
        self.validation_loss_curve_.append(
            float(-np.average(log_likelihood, weights=sample_weight_val)))
        if self.verbose:
            print(f"Validation score: {score:f}")
        if score < self.best_validation_score_ + self.tol:
            self._no_improvement_count += 1
        else:
            self._no_improvement_count = 0
        if score > self.best_validation_score_:
            self.best_validation_score_ = score
            self._best_params = [p.copy() for p in self._parameters()]

    def _validation_split(self, y_codes):
        """Stratified held-out rows for early stopping: (train, validation) indices.

        Each class gives validation rows in proportion to its size (at least one
        from every class with two or more rows), drawn from ``_random_state``.
        """
        n_samples = len(y_codes)
        n_val = int(np.ceil(self.validation_fraction * n_samples))
        counts = np.bincount(y_codes, minlength=len(self.classes_))
        share = counts * (n_val / n_samples)
        per_class = np.floor(share).astype(np.intp)
        remainder = share - per_class
        # Hand out the rows lost to rounding, largest remainders first.
        for k in np.argsort(-remainder, kind="stable")[: n_val - per_class.sum()]:
            per_class[k] += 1
        per_class = np.minimum(per_class, np.maximum(counts - 1, 0))
        val = []
        for k in range(len(counts)):
            rows = np.flatnonzero(y_codes == k)
            val.append(self._random_state.permutation(rows)[: per_class[k]])
        val = np.sort(np.concatenate(val))
        if val.shape[0] < 2:
            raise ValueError(
                "The validation set is too small. Increase 'validation_fraction' or the "
                "size of your dataset."
            )
        train = np.setdiff1d(np.arange(n_samples), val, assume_unique=True)
        return self._random_state.permutation(train), val

    # Prediction ---------------------------------------------------------------

    def predict_proba(self, X):
        """Class probabilities, one row per sample, columns in ``classes_`` order.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes), dtype of ``coefs_``
            (n_samples, 2) for a model of one class, as scikit-learn's: that class's
            probability (1) and 0.
        """
        check_is_fitted(self)
        proba = self._predict_proba(self._check_predict_X(X))
        if proba.shape[1] == 1:
            # One class: scikit-learn's (n_samples, 2) of its single logistic unit,
            # [1 - p, p], whose p (an absent "positive" class) is 0 here.
            return np.hstack([proba, 1 - proba])
        return proba

    def _check_predict_X(self, X):
        check_feature_names(self, X, reset=False)
        return check_X(X, keep=ENGINE_INPUT_DTYPES, n_features=self.n_features_in_)

    def _predict_proba(self, X):
        """Probabilities of each class, (n_samples, n_classes), of a checked X."""
        W1, W2 = self.coefs_
        b1, b2 = self.intercepts_
        dtype = W1.dtype if W1.dtype in FLOAT_DTYPES else np.float64
        params = [np.require(p, dtype, "C") for p in (W1, b1, W2, b2)]
        proba = np.empty((X.shape[0], params[2].shape[1]), dtype=dtype)
        # Per chunk row: the hidden activations, and the row converted if X needs it.
        work = np.empty(PREDICT_CHUNK_ROWS * (params[0].shape[1] + X.shape[1]), dtype=dtype)
        network._predict_proba(X, *params, ACTIVATIONS[self.activation], proba, work)
        return proba

    def predict_log_proba(self, X):
        """Natural log of :meth:`predict_proba`.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
        """
        proba = self.predict_proba(X)
        with np.errstate(divide="ignore"):
            return np.log(proba, out=proba)

    def predict(self, X):
        """Most probable class of each sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray of shape (n_samples,), values from ``classes_``
        """
        check_is_fitted(self)
        proba = self._predict_proba(self._check_predict_X(X))
        return self.classes_[np.argmax(proba, axis=1)]

    # Model files ----------------------------------------------------------------

    def save(self, path):
        """Write the fitted model to ``path`` (an .npz file, no pickle); see mlp_cy.load.

        Parameters
        ----------
        path : str or os.PathLike
        """
        from .persistence import save_model

        save_model(self, path)

    # scikit-learn interop -------------------------------------------------------

    def to_sklearn(self):
        """This fitted model as a fitted ``sklearn.neural_network.MLPClassifier``.

        Same weights, so the same predictions to rounding; binary models become
        scikit-learn's one logistic unit (exactly: sigmoid(z1 - z0) is the softmax's
        second column). Needs scikit-learn; ``class_weight`` and the optimiser's
        state are not carried over. A model of one class does not convert.

        Returns
        -------
        estimator : sklearn.neural_network.MLPClassifier
        """
        from ._interop import to_sklearn

        return to_sklearn(self)

    @classmethod
    def from_sklearn(cls, estimator):
        """A fitted mlp_cy model with the weights of a fitted scikit-learn MLPClassifier.

        The reverse of :meth:`to_sklearn`. Only what mlp_cy supports converts: one
        hidden layer, one label per row (no multilabel), two or more classes, solver
        "sgd" or "adam"; anything else raises a ValueError that names it.

        Parameters
        ----------
        estimator : sklearn.neural_network.MLPClassifier, fitted

        Returns
        -------
        model : MLPClassifier
        """
        from ._interop import from_sklearn

        return from_sklearn(cls, estimator)

    # scikit-learn protocol ----------------------------------------------------

    def __sklearn_is_fitted__(self):
        return hasattr(self, "coefs_") and hasattr(self, "classes_")

    def __sklearn_tags__(self):
        # Only scikit-learn calls this, and then its BaseEstimator is a base (_compat).
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        tags.classifier_tags.multi_label = False
        return tags


def _chance_loss(y_codes, sample_weight=None):
    """Cross-entropy of always predicting the (weighted) class frequencies."""
    counts = np.bincount(y_codes, weights=sample_weight)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def _learning_problem(loss_curve, chance_loss):
    """What says that a run did not learn, or None: its last loss is about the loss
    of predicting the class frequencies (chance level), or no epoch after the first
    improved on it."""
    if not loss_curve:
        return None
    n, last = len(loss_curve), loss_curve[-1]
    epochs = f"{n} epoch{'s' if n > 1 else ''}"
    if last >= NEAR_CHANCE_LOSS * chance_loss:
        return (f"Training did not learn: after {epochs} the training loss is {last:.4g}, "
                f"no better than predicting the class frequencies ({chance_loss:.4g}): "
                "the model is at chance level.")
    if n >= 2 and min(loss_curve[1:]) >= loss_curve[0]:
        return (f"Training did not learn: the training loss never went down in {epochs} "
                f"(first {loss_curve[0]:.4g}, last {last:.4g}).")
    return None


def _still_improving(loss_curve):
    return len(loss_curve) >= 2 and loss_curve[-1] < loss_curve[0]


def _check_random_state(seed):
    if seed is None or seed is np.random:
        return np.random.mtrand._rand
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return np.random.RandomState(seed)
    if isinstance(seed, np.random.RandomState):
        return seed
    raise ValueError(
        f"random_state must be None, an int or a numpy.random.RandomState, got {seed!r}."
    )


def _check_number(name, value, *, low, low_open=False, high=None, extra=""):
    """A finite real in [low, high) (or (low, high) with low_open)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not np.isfinite(value) or value < low or (low_open and value == low) \
            or (high is not None and value >= high):
        bound = f"> {low}" if low_open else f">= {low}"
        if high is not None:
            bound += f" and < {high}"
        raise InvalidParameterError(f"{name} must be a finite number {bound}"
                                    f"{' ' + extra if extra else ''}, got {value!r}.")
