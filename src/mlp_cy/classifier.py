"""MLPClassifier: scikit-learn's classifier API over the compiled engines (_base.py).

The output layer is scikit-learn's: a softmax over K >= 3 classes, one logistic unit
for two (so ``coefs_[-1]`` is (n_hidden, 1), and weights move between the two
libraries as they are), one logistic unit per label for a multilabel ``y``. A model
of one class has one softmax unit (probability 1).
"""

import warnings

import numpy as np

from ._base import COMMON_CONSTRAINTS, BaseMLP, _check_number
from ._compat import (
    ClassifierMixin,
    ConvergenceWarning,
    StrOptions,
    available_if,
    check_is_fitted,
    follows_sklearn,
)
from ._validation import check_y

# A run has not learned when its last training loss is above this share of the loss
# of predicting the class frequencies (log K for K balanced classes).
NEAR_CHANCE_LOSS = 0.98


@follows_sklearn  # scikit-learn's ClassifierMixin once it is imported
class MLPClassifier(ClassifierMixin, BaseMLP):
    """Multi-layer perceptron classifier trained by SGD, Adam or L-BFGS in compiled code.

    The network is ``X -> act(X W_0 + b_0) -> ... -> out(. W_L + b_L)``: softmax and
    cross-entropy for three or more classes, one logistic unit for two, one logistic
    unit per label for a multilabel ``y`` (a 2-D 0/1 indicator matrix), as in
    scikit-learn. Parameters, defaults and attributes are scikit-learn's
    (``sklearn.neural_network.MLPClassifier``): ReLU, Adam at
    ``learning_rate_init=0.001``, ``alpha=1e-4``. From the same ``random_state`` and
    parameters both draw the same initial weights and shuffles and train to the same
    weights. The classic textbook network (a sigmoid hidden layer trained by plain
    minibatch SGD) is ``activation="logistic", solver="sgd", momentum=0.0,
    alpha=0.0, learning_rate_init=0.1``.

    float32 input trains in float32 and float64 in float64; other numeric input is
    converted to float64. ``scipy.sparse`` X (CSR, CSC, ...) is taken as CSR and its
    first layer's products run over its nonzeros only. Training releases the GIL for each epoch, and Ctrl-C
    stops it between two batches, leaving the weights of the last completed batch.

    Parameters
    ----------
    hidden_layer_sizes : int or tuple of ints, default=(100,)
        Units of each hidden layer, first to last.
    activation : {"logistic", "tanh", "relu", "identity"}, default="relu"
        Activation of the hidden layers; "logistic" is the sigmoid.
    solver : {"lbfgs", "sgd", "adam"}, default="adam"
        Adam, minibatch stochastic gradient descent (with ``momentum``), or
        scipy's L-BFGS-B on the full-batch loss (small data sets).
    alpha : float, default=1e-4
        L2 penalty, scaled as scikit-learn scales it: the batch loss gains
        ``alpha / (2 S) * sum_i ||W_i||^2``, S the batch's weight sum.
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
        Maximum number of epochs (iterations for L-BFGS).
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
    max_fun : int, default=15000
        L-BFGS only: the most loss evaluations.
    class_weight : dict, "balanced" or None, default=None
        Weights per class, ``{label: weight}``, multiplying ``sample_weight``;
        "balanced" uses ``n_samples / (n_classes * np.bincount(y))``. Not part of
        scikit-learn's MLPClassifier.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, sorted as ``np.unique`` sorts them.
    coefs_ : list of ndarrays
        ``coefs_[i]`` (units of layer i, units of layer i + 1), input layer first.
    intercepts_ : list of ndarrays
        ``intercepts_[i]`` (units of layer i + 1,).
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
        Layers, input and output included: ``len(hidden_layer_sizes) + 2``.
    n_outputs_ : int
        Output units: n_classes, 1 for two classes, the labels for multilabel y.
    out_activation_ : str
        "softmax", or "logistic" (two classes, multilabel).

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

    # scikit-learn's MLPClassifier._parameter_constraints, plus class_weight.
    _parameter_constraints = {
        **COMMON_CONSTRAINTS,
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
        max_fun=15000,
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
        self.max_fun = max_fun
        self.class_weight = class_weight

    # Fitting ------------------------------------------------------------------

    def fit(self, X, y, sample_weight=None):
        """Train on (X, y): up to ``max_iter`` epochs (L-BFGS: iterations).

        Parameters
        ----------
        X : array-like or scipy.sparse matrix of shape (n_samples, n_features)
            Training data; float32 trains in float32.
        y : array-like of shape (n_samples,) or (n_samples, n_labels)
            Class labels, or a 0/1 indicator matrix for multilabel classification.
        sample_weight : array-like of shape (n_samples,), default=None
            Per-row weights; each batch's loss is ``sum_i w_i loss_i / sum_i w_i``.

        Returns
        -------
        self : MLPClassifier

        Warns
        -----
        ConvergenceWarning
            When ``max_iter`` did not converge; when the loss diverged (the weights
            are then those before the diverging epoch); and when the run did not
            learn: its last training loss is no better than predicting the class
            frequencies, or no epoch improved on the first. The message names the
            likely causes (learning rate, unscaled X, too few epochs).
        """
        return self._fit(X, y, sample_weight, incremental=False)

    # As scikit-learn's: hasattr(clf, "partial_fit") is False for solver="lbfgs".
    @available_if(lambda est: est._check_solver())
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """Train for one epoch over (X, y), continuing from the current weights.

        Parameters
        ----------
        X : array-like or scipy.sparse matrix of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_labels)
        sample_weight : array-like of shape (n_samples,), default=None
        classes : array-like of shape (n_classes,), default=None
            Every class that will ever appear; required on the first call.

        Returns
        -------
        self : MLPClassifier
        """
        return self._fit(X, y, sample_weight, incremental=True, classes=classes)

    def _encode_targets(self, y, n_samples, fresh, incremental, classes, dtype):
        """(targets for the engine, n_outputs, out_activation); sets classes_."""
        y_array = None if y is None else np.asarray(y)
        if y_array is not None and y_array.ndim == 2 and y_array.shape[1] > 1:
            indicator = _check_indicator(y_array, n_samples)
            n_labels = indicator.shape[1]
            if fresh:
                self.classes_ = np.arange(n_labels)
            elif not self._multilabel() or n_labels != self.n_outputs_:
                raise ValueError(
                    f"y is a multilabel indicator of {n_labels} labels, but the model "
                    "was fitted on other targets; fit anew (warm_start=False)."
                )
            return np.ascontiguousarray(indicator, dtype=dtype), n_labels, "logistic"
        y = check_y(y, n_samples)
        self._set_classes(y, fresh, incremental, classes)
        if not fresh and self._multilabel():
            raise ValueError("The model was fitted on a multilabel y; y must be a 0/1 "
                             f"indicator matrix of {self.n_outputs_} columns.")
        codes = np.searchsorted(self.classes_, y).astype(np.int32)
        if self.classes_.shape[0] == 2:     # one logistic unit: is it the second class
            return (codes == 1).astype(dtype).reshape(-1, 1), 1, "logistic"
        return codes, self.classes_.shape[0], "softmax"

    def _multilabel(self):
        return getattr(self, "out_activation_", None) == "logistic" and self.n_outputs_ > 1

    def _codes(self, targets):
        """Class codes of single-label targets (the engine's form)."""
        if targets.ndim == 2:
            return targets[:, 0].astype(np.int32)
        return targets

    def _row_weights(self, targets, sample_weight, incremental, dtype):
        """sample_weight times the weight of each row's class (None when neither is set)."""
        if self.class_weight is None:
            return sample_weight
        if self._multilabel():
            raise ValueError("class_weight is not supported for multilabel y; pass "
                             "sample_weight instead.")
        y_codes = self._codes(targets)
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

    def _check_learning(self, X, targets, sample_weight):
        # One partial_fit epoch tells too little; callers that loop over partial_fit
        # (the command line) ask _learning_problem themselves at the end.
        if len(self.classes_) < 2 or self._multilabel():
            return
        problem = _learning_problem(self.loss_curve_,
                                    _chance_loss(self._codes(targets), sample_weight))
        if problem:
            warnings.warn(f"{problem} {self._learning_advice(X)}", ConvergenceWarning,
                          stacklevel=4)

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

    def _validation_split(self, targets):
        """Held-out rows for early stopping: (train, validation) indices; stratified
        by class for one label per row.

        Each class gives validation rows in proportion to its size (at least one
        from every class with two or more rows), drawn from ``_random_state``.
        """
        if self._multilabel():
            return self._shuffled_split(targets.shape[0])
        y_codes = self._codes(targets)
        n_samples = len(y_codes)
        n_val = int(np.ceil(self.validation_fraction * n_samples))
        counts = np.bincount(y_codes, minlength=len(self.classes_))
        if len(counts) == 2 and (counts == 1).any():
            # scikit-learn's error (train_test_split, stratified by its binary target,
            # False/True); the class is named in mlp_cy's terms too.
            alone = np.flatnonzero(counts == 1)
            raise ValueError(
                "The least populated classes in y have only 1 member, which is too few. "
                "The minimum number of groups for any class cannot be less than 2. "
                f"Classes with too few members are: {[str(bool(k)) for k in alone]} "
                f"(class {', '.join(repr(self.classes_[k]) for k in alone)})."
            )
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

    def _validation_score(self, X_val, targets_val, sample_weight_val):
        """Accuracy (all labels right, for multilabel) and mean loss on held-out rows."""
        proba = self._predict_proba(X_val)
        tiny = np.finfo(proba.dtype).tiny
        if self._multilabel():
            correct = ((proba > 0.5) == (targets_val > 0.5)).all(axis=1)
            p = np.clip(proba, tiny, 1 - np.finfo(proba.dtype).eps)
            losses = -(targets_val * np.log(p) + (1 - targets_val) * np.log1p(-p)).sum(axis=1)
        else:
            y_val = self._codes(targets_val)
            correct = np.argmax(proba, axis=1) == y_val
            losses = -np.log(np.maximum(proba[np.arange(len(y_val)), y_val], tiny))
        return (float(np.average(correct, weights=sample_weight_val)),
                float(np.average(losses, weights=sample_weight_val)))

    # Prediction ---------------------------------------------------------------

    def predict_proba(self, X):
        """Class probabilities, one row per sample, columns in ``classes_`` order.

        Parameters
        ----------
        X : array-like or scipy.sparse matrix of shape (n_samples, n_features)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes), dtype of ``coefs_``
            Each label's probability for multilabel y. (n_samples, 2) for a model of
            one class, as scikit-learn's: that class's probability (1) and 0.
        """
        check_is_fitted(self)
        proba = self._predict_proba(self._check_predict_X(X))
        if len(self.classes_) == 1:
            # One class: scikit-learn's (n_samples, 2) of its single logistic unit,
            # [1 - p, p], whose p (an absent "positive" class) is 0 here.
            return np.hstack([proba, 1 - proba])
        return proba

    def _predict_proba(self, X):
        """Probabilities of each class, (n_samples, n_classes), of a checked X."""
        out = self._forward(X)
        if self.out_activation_ == "logistic" and self.n_outputs_ == 1:
            return np.hstack([1 - out, out])     # two classes: [1 - p, p]
        return out

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
            (n_samples, n_labels) of 0/1 for multilabel y.
        """
        check_is_fitted(self)
        proba = self._predict_proba(self._check_predict_X(X))
        if self._multilabel():
            return (proba > 0.5).astype(int)
        return self.classes_[np.argmax(proba, axis=1)]

    # scikit-learn protocol ----------------------------------------------------

    def __sklearn_is_fitted__(self):
        return hasattr(self, "coefs_") and hasattr(self, "classes_")

    def __sklearn_tags__(self):
        # Only scikit-learn calls this, and then its BaseEstimator is a base (_compat).
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.input_tags.allow_nan = False
        tags.classifier_tags.multi_label = True
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




def _check_indicator(y, n_samples):
    """y as a 0/1 multilabel indicator matrix (n_samples, n_labels)."""
    if y.shape[0] != n_samples:
        raise ValueError(
            f"X and y have inconsistent numbers of samples: X has {n_samples} rows, "
            f"y has {y.shape[0]}."
        )
    if y.dtype.kind not in "biuf" or not np.isin(y, (0, 1)).all():
        raise ValueError(
            "A 2-D y must be a multilabel indicator matrix of 0s and 1s (one column per "
            "label); multi-output multiclass y is not supported."
        )
    return y
