"""What MLPClassifier and MLPRegressor share: validation, weights, the epoch loop, L-BFGS.

Design:
a) The estimator validates, encodes targets, initialises weights and keeps the epoch
   bookkeeping (loss curve, stopping, warnings); one call into the engine per epoch
   (per function evaluation for L-BFGS) does all per-batch work without the GIL.
b) One engine, ``layers``, for every network (any depth, every output layer, dense
   or CSR X, every solver); its plan chooses how a call runs (threads, the
   zero-skipping first layer, the seed's batch-1 sweep). The optimiser's state is
   laid out W_0 | b_0 | W_1 | b_1 | ..., as network.pxd's for the seed's network.
c) Every random draw follows scikit-learn's (Glorot-uniform init from
   ``random_state``, layer by layer, coefficients then intercepts; the epoch shuffle
   of ``sklearn.utils.shuffle``), so both start from the same weights and visit the
   rows in the same order for the same ``random_state``.
d) The subclasses say what differs: the targets and the output layer
   (``_encode_targets``), the validation split and score, and the weights of rows.
"""

import numbers
import warnings
from numbers import Integral, Real

import numpy as np

from . import _blas, kernels, layers, network
from ._compat import (
    BaseEstimator,
    ConvergenceWarning,
    InvalidParameterError,
    Interval,
    Options,
    StrOptions,
    check_is_fitted,
    follows_sklearn,
    validate_parameter_constraints,
)
from ._validation import FLOAT_DTYPES, check_feature_names, check_sample_weight, check_X

# The engines' enums (kernels.pxd, network.pxd, layers.pxd), by scikit-learn's names.
ACTIVATIONS = {name.lower(): int(code) for name, code in kernels.Activation.__members__.items()}
SOLVERS = {name.lower(): int(code) for name, code in network.Solver.__members__.items()}
OUTPUTS = {name[len("OUT_"):].lower(): int(code)
           for name, code in layers.Output.__members__.items()}

# Rows per chunk of prediction: the hidden activations of a chunk stay in cache.
PREDICT_CHUNK_ROWS = 1024
# Rows per pass of L-BFGS's full-batch loss and gradient: bounds its memory.
LBFGS_CHUNK_ROWS = 4096
# X dtypes the engines read directly (uint8 pixels are converted batch by batch).
ENGINE_INPUT_DTYPES = (np.dtype(np.uint8), np.dtype(np.float32), np.dtype(np.float64))
# Features beyond +-this are called unscaled in the advice of a run that did not learn.
UNSCALED_INPUT = 10.0

# scikit-learn's error when training ends with non-finite weights (L-BFGS), or when the
# first epoch diverges because X overflows at the starting weights (SGD, Adam).
NON_FINITE_WEIGHTS = ("Solver produced non-finite parameter weights. The input data may "
                      "contain large values and need to be preprocessed.")

# scikit-learn's _parameter_constraints of BaseMultilayerPerceptron; scikit-learn's own
# objects once it is imported (_compat).
COMMON_CONSTRAINTS = {
    "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
    "activation": [StrOptions({"identity", "logistic", "tanh", "relu"})],
    "solver": [StrOptions({"lbfgs", "sgd", "adam"})],
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
    "max_fun": [Interval(Integral, 1, None, closed="left")],
}


@follows_sklearn  # scikit-learn's BaseEstimator once it is imported (_compat)
class BaseMLP(BaseEstimator):
    """The shared machinery; not an estimator by itself (no __init__)."""

    # Fitting ------------------------------------------------------------------

    def _fit(self, X, y, sample_weight, *, incremental, classes=None):
        hidden = self._validate_hyperparameters()
        if incremental:
            self._check_solver()
        first_pass = not hasattr(self, "coefs_") or (
            not self.warm_start and not incremental
        )
        # Weights that the user assigned to an estimator never fitted: X decides the
        # dtype, y (or classes) the outputs, as in scikit-learn; an n_features_in_
        # set with them is checked against X. The weights are checked below.
        user_weights = not first_pass and not (self.__sklearn_is_fitted__()
                                               and hasattr(self, "n_features_in_"))
        fresh = first_pass or user_weights
        check_feature_names(self, X, reset=fresh)
        n_features = getattr(self, "n_features_in_", None) if user_weights else \
            None if fresh else self.n_features_in_
        X = check_X(X, keep=ENGINE_INPUT_DTYPES, n_features=n_features,
                    estimator_name=type(self).__name__, accept_sparse=True)
        # The weights' dtype: X's when it is float32 or float64, else float64, as in
        # scikit-learn; once trained, the weights keep theirs and the engine converts
        # the rows of X as it gathers them (no full copy).
        if fresh:
            dtype = X.dtype if X.dtype in FLOAT_DTYPES else np.dtype(np.float64)
        else:
            dtype = np.asarray(self.coefs_[0]).dtype
            dtype = dtype if dtype in FLOAT_DTYPES else np.dtype(np.float64)
        if _is_sparse(X):
            X = X.astype(dtype, copy=False)
        n_samples = X.shape[0]
        targets, n_outputs, out_activation = self._encode_targets(
            y, n_samples, fresh, incremental, classes, dtype)
        sample_weight = check_sample_weight(sample_weight, n_samples, dtype)

        self._random_state = _check_random_state(self.random_state)
        units = [X.shape[1], *hidden, n_outputs]
        if first_pass:
            self._initialize(units, out_activation, dtype)
        else:
            if user_weights:
                self._reset_state(X.shape[1], out_activation, n_outputs)
            self._check_parameters(dtype, units)
        if self.early_stopping and self.solver != "lbfgs" \
                and getattr(self, "validation_scores_", None) is None:
            self._reset_early_stopping()
        if fresh or not hasattr(self, "_best_params"):
            self._best_params = [p.copy() for p in self._parameters()]
        sample_weight = self._row_weights(targets, sample_weight, incremental, dtype)
        if self.solver == "lbfgs":
            self._fit_lbfgs(X, targets, sample_weight)
            return self
        diverged = self._fit_stochastic(X, targets, sample_weight, incremental,
                                        initialized=first_pass)
        if not incremental and not diverged:
            self._check_learning(X, targets, sample_weight)
        return self

    def _check_solver(self):
        """partial_fit's precondition, as scikit-learn's: a stochastic solver."""
        if self.solver == "lbfgs":
            raise AttributeError("partial_fit is only available for stochastic "
                                 "optimizers. 'lbfgs' is not stochastic.")
        return True

    def _row_weights(self, targets, sample_weight, incremental, dtype):
        """The weight of each row (class_weight in the classifier)."""
        return sample_weight

    def _check_learning(self, X, targets, sample_weight):
        """Warn about a run that did not learn (the classifier's chance-level check)."""

    def _learning_advice(self, X):
        """The likely causes of a run that did not learn, for this estimator and X."""
        causes = [f"learning_rate_init={self.learning_rate_init} is too large or too small "
                  f"for solver={self.solver!r} (0.001 suits 'adam'; 'sgd' usually needs "
                  "0.01-0.1)"]
        if _is_sparse(X):
            values = X.data if X.nnz else np.zeros(1)
            low, high = min(0.0, float(values.min())), max(0.0, float(values.max()))
        else:
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

    def _validate_hyperparameters(self):
        """Check the constructor's arguments; return the hidden layers' widths.

        scikit-learn's rules first (InvalidParameterError, its message), then
        mlp_cy's own: a validation_fraction above 0 when early stopping holds rows out.
        """
        validate_parameter_constraints(self._parameter_constraints,
                                       self.get_params(deep=False), type(self).__name__)
        sizes = self.hidden_layer_sizes
        sizes = (sizes,) if isinstance(sizes, numbers.Integral) else tuple(sizes)
        for size in sizes:
            if not isinstance(size, numbers.Integral) or isinstance(size, (bool, np.bool_)) \
                    or size < 1:
                raise InvalidParameterError(
                    f"hidden_layer_sizes must be a positive int or a tuple of positive "
                    f"ints, got {self.hidden_layer_sizes!r}."
                )
        if self.early_stopping and self.solver != "lbfgs":
            _check_number("validation_fraction", self.validation_fraction, low=0.0,
                          low_open=True, high=1.0, extra="with early_stopping=True")
        return tuple(int(size) for size in sizes)

    def _initialize(self, units, out_activation, dtype):
        """New weights, Glorot-uniform as scikit-learn draws them, and fresh state."""
        self._reset_state(units[0], out_activation, units[-1])
        self.coefs_, self.intercepts_ = [], []
        factor = 2.0 if self.activation == "logistic" else 6.0
        for fan_in, fan_out in zip(units[:-1], units[1:]):
            bound = np.sqrt(factor / (fan_in + fan_out))
            coef = self._random_state.uniform(-bound, bound, (fan_in, fan_out))
            intercept = self._random_state.uniform(-bound, bound, fan_out)
            self.coefs_.append(coef.astype(dtype))
            self.intercepts_.append(intercept.astype(dtype))
        self.n_layers_ = len(units)

    def _reset_state(self, n_features, out_activation, n_outputs):
        """The fitted attributes other than the weights, as before a first epoch."""
        self.n_features_in_ = n_features
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = n_outputs
        self.out_activation_ = out_activation
        self.__dict__.pop("loss_", None)  # a former fit's, not these weights'
        self._no_improvement_count = 0
        self.__dict__.pop("_optimizer_state", None)
        if self.solver == "lbfgs":       # scikit-learn keeps no curves for L-BFGS
            for name in ("loss_curve_", "validation_scores_", "validation_loss_curve_",
                         "best_validation_score_", "best_loss_"):
                self.__dict__.pop(name, None)
            return
        self.loss_curve_ = []
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

    def _check_parameters(self, dtype, units):
        """Bring user-set or loaded weights into the form the engine updates in place."""
        L = len(units) - 1
        if len(self.coefs_) != L or len(self.intercepts_) != L:
            raise ValueError(
                f"coefs_ and intercepts_ hold {len(self.coefs_)} and "
                f"{len(self.intercepts_)} arrays; hidden_layer_sizes="
                f"{self.hidden_layer_sizes!r} needs {L} each (one per layer of weights)."
            )
        for layer in range(L):
            coef = np.asarray(self.coefs_[layer])
            intercept = np.asarray(self.intercepts_[layer])
            expected = (units[layer], units[layer + 1])
            if coef.shape != expected or intercept.shape != (expected[1],):
                raise ValueError(
                    f"coefs_[{layer}] has shape {coef.shape} and intercepts_[{layer}] "
                    f"{intercept.shape}; expected {expected} and ({expected[1]},) for "
                    f"layer sizes {units} (features, hidden_layer_sizes, outputs)."
                )
            if not (np.isfinite(coef).all() and np.isfinite(intercept).all()):
                raise ValueError(f"coefs_[{layer}] or intercepts_[{layer}] is not finite.")
            self.coefs_[layer] = np.require(coef, dtype, ["C", "W", "O"])
            self.intercepts_[layer] = np.require(intercept, dtype, ["C", "W", "O"])
        self.n_layers_ = L + 1

    def _parameters(self):
        """coefs_ then intercepts_: the arrays the engines update in place."""
        return list(self.coefs_) + list(self.intercepts_)

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
        """The engine's options (layers.Options); learning_rate is set per epoch."""
        return layers.Options(
            solver=SOLVERS[self.solver],
            learning_rate=float(self.learning_rate_init),
            alpha=float(self.alpha),
            momentum=float(self.momentum) if self.solver == "sgd" else 0.0,
            nesterov=bool(self.nesterovs_momentum),
            beta_1=float(self.beta_1),
            beta_2=float(self.beta_2),
            epsilon=float(self.epsilon),
        )

    # The engines --------------------------------------------------------------

    def _network(self, parameters=None):
        """The `layers` engine's view of the weights (updated in place by training)."""
        coefs, intercepts = parameters if parameters is not None else (self.coefs_,
                                                                       self.intercepts_)
        return layers.Network(list(coefs), list(intercepts), ACTIVATIONS[self.activation],
                              OUTPUTS[self.out_activation_])

    def _fit_stochastic(self, X, targets, sample_weight, incremental, initialized=False):
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True; use fit.")
        options = self._train_options()
        params = self._parameters()
        dtype = params[0].dtype
        net = self._network()
        state_size = net.state_size(options)
        # As scikit-learn: a new optimiser for each fit; partial_fit keeps its state
        # (velocities or moments, Adam's step count, the scheduled learning rate).
        state = getattr(self, "_optimizer_state", None)
        if not incremental or state is None or state.shape != (state_size,) \
                or state.dtype != dtype:
            self._optimizer_state = np.zeros(state_size, dtype=dtype)
            self._n_updates = 0
            self._learning_rate = float(self.learning_rate_init)

        early_stopping = self.early_stopping
        # The rows trained on: all, or the training part of the split, visited in
        # place through the engine's `order` (no copy of X).
        train = None
        if early_stopping:
            train, val = self._validation_split(targets)
            train = np.ascontiguousarray(train, dtype=np.intp)
            X_val, targets_val = X[val], targets[val]
            sample_weight_val = None if sample_weight is None else sample_weight[val]
        n_samples = X.shape[0] if train is None else train.shape[0]
        batch_size = self._batch_size(n_samples)
        X_engine = _engine_X(X, dtype)
        work = np.empty(net.workspace_size(batch_size), dtype=dtype)
        epoch = layers.Epoch()
        sample_idx = np.arange(n_samples, dtype=np.intp) if train is None else train
        self.n_iter_ = 0
        diverged = False
        # The last finite state, should an epoch diverge: copied into the same memory
        # every epoch (fresh arrays would cost their pages' zeroing each time).
        snapshot = [np.empty_like(p) for p in params + [self._optimizer_state]]
        for _ in range(self.max_iter):
            if self.shuffle:
                # sklearn.utils.shuffle(sample_idx, random_state=...), draw for draw
                permutation = np.arange(n_samples)
                self._random_state.shuffle(permutation)
                sample_idx = sample_idx[permutation]
            for saved, current in zip(snapshot, params + [self._optimizer_state]):
                np.copyto(saved, current)
            options.learning_rate = self._learning_rate
            epoch.n_updates = self._n_updates
            order = sample_idx if self.shuffle or train is not None else None
            try:
                net.train_epoch(X_engine, targets, sample_weight, order, batch_size,
                                options, self._optimizer_state, work, epoch)
            except KeyboardInterrupt:
                # The weights are those of the last completed batch.
                self.t_ += epoch.n_rows_done
                self._n_updates = epoch.n_updates
                raise
            if epoch.diverged or not all(np.isfinite(p).all() for p in params):
                for current, saved in zip(params + [self._optimizer_state], snapshot):
                    current[...] = saved
                if initialized and self.n_iter_ == 0 and not self._loss_is_finite(
                        X_engine, targets, sample_weight):
                    # Not the step size: X overflows at freshly initialised weights.
                    raise ValueError(NON_FINITE_WEIGHTS)
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
            self._n_updates = epoch.n_updates
            self.n_iter_ += 1
            self.t_ += n_samples
            self.loss_ = float(epoch.loss_sum / n_samples)
            self.loss_curve_.append(self.loss_)
            if self.verbose:
                print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")
            if early_stopping:
                self._score_validation(X_val, targets_val, sample_weight_val)
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

    def _fit_lbfgs(self, X, targets, sample_weight):
        """scipy's L-BFGS-B over the engine's full-batch loss and gradient.

        The optimiser sees scikit-learn's packing (every coefficient matrix, then every
        intercept), so it takes the same steps from the same start; the engine's flat
        gradient is laid out layer by layer and permuted into that order.
        """
        from scipy.optimize import minimize

        dtype = self.coefs_[0].dtype
        shapes = [c.shape for c in self.coefs_]
        # The engine's parameters: views into one flat vector, layer by layer.
        packed = np.empty(sum((a + 1) * b for a, b in shapes), dtype=dtype)
        coefs, intercepts, coef_slices, intercept_slices = [], [], [], []
        offset = 0
        for a, b in shapes:
            coefs.append(packed[offset:offset + a * b].reshape(a, b))
            coef_slices.append(np.arange(offset, offset + a * b))
            offset += a * b
            intercepts.append(packed[offset:offset + b])
            intercept_slices.append(np.arange(offset, offset + b))
            offset += b
        sklearn_order = np.concatenate(coef_slices + intercept_slices)
        for view, value in zip(coefs + intercepts, self.coefs_ + self.intercepts_):
            view[...] = value
        net = self._network((coefs, intercepts))
        X_engine = _engine_X(X, dtype)
        gradient = np.empty(packed.shape[0], dtype=dtype)
        alpha = float(self.alpha)

        # scipy's own BLAS calls run on one thread, the engine's evaluations on the
        # threads the BLAS's limit allows (_blas._set_blas_threads says why).
        limit = _blas._blas_num_threads()

        def loss_and_gradient(x):
            packed[sklearn_order] = x
            _blas._set_blas_threads(limit)
            try:
                loss = net.loss_gradient(X_engine, targets, sample_weight, alpha,
                                         gradient, LBFGS_CHUNK_ROWS)
            finally:
                _blas._set_blas_threads(1)
            return loss, gradient[sklearn_order].astype(np.float64)

        had = _blas._set_blas_threads(1)
        try:
            result = minimize(
                loss_and_gradient, packed[sklearn_order].astype(np.float64),
                method="L-BFGS-B", jac=True,
                options={"maxfun": self.max_fun, "maxiter": self.max_iter,
                         "gtol": self.tol},
            )
        finally:
            if had:
                _blas._set_blas_threads(had)
        if result.status != 0:
            warnings.warn(
                "lbfgs failed to converge after "
                f"{result.nit} iteration(s) (status={result.status}):\n"
                f"{result.message}\n\nIncrease the number of iterations to improve the "
                "convergence (max_iter=%d).\nYou might also want to scale the data as "
                "shown in:\n    https://scikit-learn.org/stable/modules/"
                "preprocessing.html" % self.max_iter,
                ConvergenceWarning,
                stacklevel=4,
            )
        self.n_iter_ = min(result.nit, self.max_iter)
        self.loss_ = float(result.fun)
        packed[sklearn_order] = result.x
        if not np.isfinite(packed).all():
            raise ValueError(NON_FINITE_WEIGHTS)
        self.coefs_ = [c.copy() for c in coefs]
        self.intercepts_ = [b.copy() for b in intercepts]
        if self.verbose:
            print(f"L-BFGS: {result.nfev} evaluations, {result.nit} iterations, "
                  f"loss = {self.loss_:.8f}")

    def _loss_is_finite(self, X_engine, targets, sample_weight):
        """Whether the full-batch loss at the current weights is finite."""
        params = self._parameters()
        gradient = np.empty(sum(p.size for p in params), dtype=params[0].dtype)
        loss = self._network().loss_gradient(X_engine, targets, sample_weight,
                                             float(self.alpha), gradient, LBFGS_CHUNK_ROWS)
        return bool(np.isfinite(loss))

    def _update_loss_improvement(self):
        """scikit-learn's stopping rule on the training loss."""
        if self.loss_ > self.best_loss_ - self.tol:
            self._no_improvement_count += 1
        else:
            self._no_improvement_count = 0
        if self.loss_ < self.best_loss_:
            self.best_loss_ = self.loss_

    def _score_validation(self, X_val, targets_val, sample_weight_val):
        """The validation score and loss; keep the best weights so far."""
        score, loss = self._validation_score(X_val, targets_val, sample_weight_val)
        self.validation_scores_.append(score)
        self.validation_loss_curve_.append(loss)
        if self.verbose:
            print(f"Validation score: {score:f}")
        if score < self.best_validation_score_ + self.tol:
            self._no_improvement_count += 1
        else:
            self._no_improvement_count = 0
        if score > self.best_validation_score_:
            self.best_validation_score_ = score
            self._best_params = [p.copy() for p in self._parameters()]

    def _shuffled_split(self, n_samples):
        """scikit-learn's unstratified train_test_split draw: (train, validation)."""
        n_val = int(np.ceil(self.validation_fraction * n_samples))
        permutation = self._random_state.permutation(n_samples)
        val, train = permutation[:n_val], permutation[n_val:]
        if val.shape[0] < 2 or train.shape[0] < 1:
            raise ValueError(
                "The validation set is too small. Increase 'validation_fraction' or the "
                "size of your dataset."
            )
        return train, val

    # Prediction ---------------------------------------------------------------

    def _check_predict_X(self, X):
        check_feature_names(self, X, reset=False)
        return check_X(X, keep=ENGINE_INPUT_DTYPES, n_features=self.n_features_in_,
                       estimator_name=type(self).__name__, accept_sparse=True)

    def _forward(self, X):
        """The output layer's activations, (n_samples, n_outputs_), of a checked X."""
        coefs, intercepts = self.coefs_, self.intercepts_
        dtype = np.asarray(coefs[0]).dtype
        dtype = dtype if dtype in FLOAT_DTYPES else np.dtype(np.float64)
        # Read-only weights (a model unpickled from a read-only memory map) are read in
        # place: prediction never writes them.
        coefs = [np.require(c, dtype, "C") for c in coefs]
        intercepts = [np.require(b, dtype, "C") for b in intercepts]
        if _is_sparse(X):
            X = X.astype(dtype, copy=False)
        return self._network((coefs, intercepts)).predict(_engine_X(X, dtype),
                                                          PREDICT_CHUNK_ROWS)

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
        """This fitted model as the fitted scikit-learn estimator of the same kind
        (``sklearn.neural_network.MLPClassifier`` or ``MLPRegressor``).

        Same weights, so the same predictions to rounding: both libraries lay out
        every depth and output layer alike. Needs scikit-learn; ``class_weight`` and
        the optimiser's state are not carried over. A model of one class does not
        convert.
        """
        from ._interop import to_sklearn

        return to_sklearn(self)

    @classmethod
    def from_sklearn(cls, estimator):
        """A fitted mlp_cy model with the weights of a fitted scikit-learn
        ``MLPClassifier`` (for MLPClassifier) or ``MLPRegressor`` (for MLPRegressor);
        the reverse of :meth:`to_sklearn`."""
        from ._interop import from_sklearn

        return from_sklearn(cls, estimator)

    def __sklearn_is_fitted__(self):
        return hasattr(self, "coefs_") and hasattr(self, "out_activation_")


def _is_sparse(X):
    return hasattr(X, "tocsr") and hasattr(X, "nnz")


def _engine_X(X, dtype):
    """X as the engines take it: a dense array, or CSR as (data, indices, indptr)."""
    if not _is_sparse(X):
        return X
    return (np.ascontiguousarray(X.data, dtype=dtype),
            np.ascontiguousarray(X.indices, dtype=np.intp),
            np.ascontiguousarray(X.indptr, dtype=np.intp))


def _still_improving(loss_curve):
    return bool(loss_curve) and len(loss_curve) >= 2 and loss_curve[-1] < loss_curve[0]


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


__all__ = ["BaseMLP", "check_is_fitted"]
