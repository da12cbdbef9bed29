"""A fitted MLPClassifier to scikit-learn's and back, with the same weights.

Design:
a) Binary problems: mlp_cy's output is a softmax over 2 units, scikit-learn's one
   logistic unit. softmax([z0, z1])[1] = sigmoid(z1 - z0), so the conversion is exact
   both ways: w = W2[:, 1] - W2[:, 0], b = b2[1] - b2[0]; back, W2 = [0, w], b2 = [0, b].
   Predictions agree to rounding; further training does not follow the same path (the
   L2 penalty and the gradient differ between the two parametrisations).
b) Only what both sides support converts: one hidden layer, one label per row, two or
   more classes, scikit-learn's solvers "sgd" and "adam". Anything else raises a
   ValueError that names it.
c) Everything a fitted scikit-learn estimator reads in predict, predict_proba, score,
   partial_fit and warm-started fit is set (its LabelBinarizer included); the
   optimiser's state is not carried over either way, so partial_fit after a
   conversion starts a new one, as a fit does.
d) scikit-learn is imported here only, and only when a conversion is asked for.
"""

import numpy as np

# Hyperparameters both estimators share (mlp_cy's class_weight and scikit-learn's
# max_fun stay behind).
_SHARED_PARAMS = (
    "hidden_layer_sizes", "activation", "solver", "alpha", "batch_size", "learning_rate",
    "learning_rate_init", "power_t", "max_iter", "shuffle", "random_state", "tol",
    "verbose", "warm_start", "momentum", "nesterovs_momentum", "early_stopping",
    "validation_fraction", "beta_1", "beta_2", "epsilon", "n_iter_no_change",
)
# Fitted attributes copied as they are (when present).
_SHARED_ATTRIBUTES = (
    "n_features_in_", "feature_names_in_", "n_iter_", "t_", "loss_", "best_loss_",
    "best_validation_score_", "_no_improvement_count",
)
_CURVES = ("loss_curve_", "validation_scores_")


def _copy(value):
    return value.copy() if isinstance(value, np.ndarray) else value


def _copy_attributes(source, target):
    for name in _SHARED_ATTRIBUTES:
        if hasattr(source, name):
            setattr(target, name, _copy(getattr(source, name)))
    for name in _CURVES:
        curve = getattr(source, name, None)
        setattr(target, name, None if curve is None else [float(v) for v in curve])


def to_sklearn(estimator):
    """A fitted ``sklearn.neural_network.MLPClassifier`` with the weights of a fitted
    mlp_cy MLPClassifier; see MLPClassifier.to_sklearn."""
    from sklearn.neural_network import MLPClassifier as SklearnMLPClassifier
    from sklearn.preprocessing import LabelBinarizer

    from ._compat import check_is_fitted

    check_is_fitted(estimator)
    classes = np.asarray(estimator.classes_)
    if classes.shape[0] < 2:
        raise ValueError(
            "A model of one class does not convert to scikit-learn: its single logistic "
            "unit gives the absent class a probability above 0, mlp_cy's gives 0."
        )
    W1, W2 = (np.array(c) for c in estimator.coefs_)
    b1, b2 = (np.array(b) for b in estimator.intercepts_)
    if classes.shape[0] == 2:
        W2 = (W2[:, 1] - W2[:, 0])[:, None]
        b2 = b2[1:] - b2[:1]
        out_activation = "logistic"
    else:
        out_activation = "softmax"
    params = {name: getattr(estimator, name) for name in _SHARED_PARAMS}
    params["hidden_layer_sizes"] = (W1.shape[1],)
    result = SklearnMLPClassifier(**params)
    result.classes_ = classes.copy()
    result._label_binarizer = LabelBinarizer().fit(classes)
    result.coefs_ = [np.ascontiguousarray(W1), np.ascontiguousarray(W2)]
    result.intercepts_ = [np.ascontiguousarray(b1), np.ascontiguousarray(b2)]
    result.n_layers_ = 3
    result.n_outputs_ = W2.shape[1]
    result.out_activation_ = out_activation
    _copy_attributes(estimator, result)
    # What a warm-started fit with early stopping puts back at its end.
    result._best_coefs = [c.copy() for c in result.coefs_]
    result._best_intercepts = [b.copy() for b in result.intercepts_]
    return result


def from_sklearn(cls, estimator):
    """An mlp_cy ``cls`` with the weights of a fitted scikit-learn MLPClassifier; see
    MLPClassifier.from_sklearn."""
    if not hasattr(estimator, "coefs_") or not hasattr(estimator, "classes_"):
        raise ValueError(f"{type(estimator).__name__} is not fitted: call fit first.")
    unsupported = []
    n_hidden_layers = len(estimator.coefs_) - 1
    if n_hidden_layers != 1:
        unsupported.append(f"{n_hidden_layers} hidden layers (mlp_cy has exactly one)")
    binarizer = getattr(estimator, "_label_binarizer", None)
    y_type = getattr(binarizer, "y_type_", "")
    if y_type.startswith("multilabel") or (
            estimator.out_activation_ == "logistic" and estimator.n_outputs_ != 1):
        unsupported.append("multilabel y (one logistic unit per label)")
    classes = np.asarray(estimator.classes_)
    if classes.ndim != 1 or classes.shape[0] < 2:
        unsupported.append("a model of fewer than 2 classes")
    if estimator.out_activation_ not in ("logistic", "softmax"):
        unsupported.append(f"the output activation {estimator.out_activation_!r}")
    if estimator.solver not in ("sgd", "adam"):
        unsupported.append(f"solver={estimator.solver!r} (mlp_cy has 'sgd' and 'adam')")
    if unsupported:
        raise ValueError("This scikit-learn MLPClassifier does not convert to mlp_cy: "
                         + "; ".join(unsupported) + ".")
    W1, W2 = (np.array(c) for c in estimator.coefs_)
    b1, b2 = (np.array(b) for b in estimator.intercepts_)
    if estimator.out_activation_ == "logistic":      # binary: one logistic unit
        W2 = np.hstack([np.zeros_like(W2), W2])
        b2 = np.concatenate([np.zeros_like(b2), b2])
    params = {name: getattr(estimator, name) for name in _SHARED_PARAMS}
    params["hidden_layer_sizes"] = (W1.shape[1],)
    result = cls(**params)
    result.classes_ = classes.copy()
    result.coefs_ = [np.ascontiguousarray(W1), np.ascontiguousarray(W2)]
    result.intercepts_ = [np.ascontiguousarray(b1), np.ascontiguousarray(b2)]
    result.n_layers_ = 3
    result.n_outputs_ = classes.shape[0]
    result.out_activation_ = "softmax"
    _copy_attributes(estimator, result)
    result.validation_loss_curve_ = [] if result.validation_scores_ is not None else None
    for name in ("n_iter_", "t_", "_no_improvement_count"):
        setattr(result, name, int(getattr(result, name, 0)))
    if not hasattr(result, "loss_curve_") or result.loss_curve_ is None:
        result.loss_curve_ = []
    return result
