"""MLPRegressor: scikit-learn's regressor API over the compiled engines (_base.py).

The output layer is scikit-learn's: identity units with the squared error
(``loss="squared_error"``), or exp units with the Poisson deviance
(``loss="poisson"``), one unit per target column.
"""

import numpy as np

from ._base import COMMON_CONSTRAINTS, BaseMLP
from ._compat import RegressorMixin, StrOptions, check_is_fitted, follows_sklearn


@follows_sklearn  # scikit-learn's RegressorMixin once it is imported (_compat)
class MLPRegressor(RegressorMixin, BaseMLP):
    """Multi-layer perceptron regressor trained by SGD, Adam or L-BFGS in compiled code.

    The network is ``X -> act(X W_0 + b_0) -> ... -> out(. W_L + b_L)`` with
    scikit-learn's parameters, defaults, attributes and results
    (``sklearn.neural_network.MLPRegressor``): for the same ``random_state`` both
    draw the same weights and shuffles and train to the same weights.

    float32 input trains in float32 and float64 in float64; ``scipy.sparse`` X is
    taken as CSR. Training releases the GIL, and Ctrl-C stops it between two batches.

    Parameters
    ----------
    loss : {"squared_error", "poisson"}, default="squared_error"
        "squared_error": identity outputs, half the mean squared error (averaged over
        rows and outputs). "poisson": exp outputs, half the Poisson deviance; y >= 0.
    hidden_layer_sizes : int or tuple of ints, default=(100,)
        Units of each hidden layer, first to last.
    activation : {"logistic", "tanh", "relu", "identity"}, default="relu"
    solver : {"lbfgs", "sgd", "adam"}, default="adam"
    alpha, batch_size, learning_rate, learning_rate_init, power_t, max_iter, shuffle,
    random_state, tol, verbose, warm_start, momentum, nesterovs_momentum,
    early_stopping, validation_fraction, beta_1, beta_2, epsilon, n_iter_no_change,
    max_fun :
        As MLPClassifier's; early stopping holds out a random ``validation_fraction``
        of the rows and scores them by R^2.

    Attributes
    ----------
    coefs_, intercepts_ : lists of ndarrays
        Layer by layer, as MLPClassifier's.
    loss_, best_loss_, loss_curve_, validation_scores_, best_validation_score_,
    n_iter_, t_, n_features_in_, feature_names_in_, n_layers_ :
        As MLPClassifier's; validation scores are R^2.
    n_outputs_ : int
        Target columns.
    out_activation_ : str
        "identity", or "exp" for the Poisson loss.

    Examples
    --------
    >>> import numpy as np
    >>> from mlp_cy import MLPRegressor
    >>> rng = np.random.RandomState(0)
    >>> X = rng.rand(300, 3)
    >>> y = X @ [1.0, -2.0, 0.5]
    >>> reg = MLPRegressor(hidden_layer_sizes=(32, 16), learning_rate_init=0.01,
    ...                    max_iter=500, random_state=0).fit(X, y)
    >>> bool(reg.score(X, y) > 0.95)
    True
    """

    _parameter_constraints = {
        **COMMON_CONSTRAINTS,
        "loss": [StrOptions({"squared_error", "poisson"})],
    }

    def __init__(
        self,
        loss="squared_error",
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
    ):
        self.loss = loss
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

    def fit(self, X, y, sample_weight=None):
        """Train on (X, y): up to ``max_iter`` epochs (L-BFGS: iterations).

        Parameters
        ----------
        X : array-like or scipy.sparse matrix of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self : MLPRegressor
        """
        return self._fit(X, y, sample_weight, incremental=False)

    def partial_fit(self, X, y, sample_weight=None):
        """Train for one epoch over (X, y), continuing from the current weights.

        Parameters
        ----------
        X : array-like or scipy.sparse matrix of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self : MLPRegressor
        """
        return self._fit(X, y, sample_weight, incremental=True)

    def _encode_targets(self, y, n_samples, fresh, incremental, classes, dtype):
        """(targets (n_samples, n_outputs) of dtype, n_outputs, out_activation)."""
        if y is None:
            raise ValueError("MLPRegressor requires y to be passed, but the target y is "
                             "None.")
        y = np.asarray(y)
        if y.dtype.kind not in "biuf":
            try:
                y = y.astype(np.float64)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"y must hold numbers for a regressor ({exc}).") from exc
        if y.ndim == 1:
            y = y.reshape(-1, 1)
        if y.ndim != 2:
            raise ValueError(f"y must be 1-D or 2-D, got shape {y.shape}.")
        if y.shape[0] != n_samples:
            raise ValueError(
                f"X and y have inconsistent numbers of samples: X has {n_samples} rows, "
                f"y has {y.shape[0]}."
            )
        if y.shape[1] < 1:
            raise ValueError("y has no columns.")
        if not np.isfinite(y).all():
            raise ValueError("Input y contains NaN or infinity; targets must be finite.")
        if self.loss == "poisson" and (y < 0).any():
            raise ValueError("Some value(s) of y are negative which is not allowed for "
                             "Poisson regression.")
        if not fresh and y.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {y.shape[1]} outputs; the model was fitted on "
                             f"{self.n_outputs_}.")
        out_activation = "exp" if self.loss == "poisson" else "identity"
        return np.ascontiguousarray(y, dtype=dtype), y.shape[1], out_activation

    def _validation_split(self, targets):
        return self._shuffled_split(targets.shape[0])

    def _validation_score(self, X_val, targets_val, sample_weight_val):
        """R^2 and the mean squared error / 2 on the held-out rows."""
        predicted = self._forward(X_val)
        residual = (targets_val - predicted) ** 2
        weights = None if sample_weight_val is None else sample_weight_val[:, None]
        total = (targets_val - np.average(targets_val, axis=0,
                                          weights=sample_weight_val)) ** 2
        w = 1 if weights is None else weights
        residual_sum, total_sum = (w * residual).sum(axis=0), (w * total).sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(total_sum != 0, 1 - residual_sum / total_sum,
                          np.where(residual_sum == 0, 1.0, 0.0))
        loss = 0.5 * float(np.average(residual.mean(axis=1), weights=sample_weight_val))
        return float(np.mean(r2)), loss

    def predict(self, X):
        """Predicted targets.

        Parameters
        ----------
        X : array-like or scipy.sparse matrix of shape (n_samples, n_features)

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
        """
        check_is_fitted(self)
        predicted = self._forward(self._check_predict_X(X))
        if predicted.shape[1] == 1:
            return predicted.ravel()
        return predicted

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.input_tags.allow_nan = False
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags
