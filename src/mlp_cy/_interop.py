"""A fitted mlp_cy estimator to scikit-learn's and back, with the same weights.

Design:
a) Both libraries lay a network out the same way (any depth; softmax for 3+ classes,
   one logistic unit for 2, one per label for multilabel y; identity or exp units
   for regression), so the weights move as they are and predictions agree to
   rounding both ways.
b) Everything a fitted scikit-learn estimator reads in predict, predict_proba, score,
   partial_fit and warm-started fit is set (its LabelBinarizer included); the
   optimiser's state is not carried over either way, so partial_fit after a
   conversion starts a new one, as a fit does.
c) scikit-learn is imported here only, and only when a conversion is asked for.
"""

import numpy as np

# Hyperparameters both libraries' estimators share (mlp_cy's class_weight stays behind).
_SHARED_PARAMS = (
    "hidden_layer_sizes", "activation", "solver", "alpha", "batch_size", "learning_rate",
    "learning_rate_init", "power_t", "max_iter", "shuffle", "random_state", "tol",
    "verbose", "warm_start", "momentum", "nesterovs_momentum", "early_stopping",
    "validation_fraction", "beta_1", "beta_2", "epsilon", "n_iter_no_change", "max_fun",
)
# Fitted attributes copied as they are (when present).
_SHARED_ATTRIBUTES = (
    "n_features_in_", "feature_names_in_", "n_iter_", "t_", "loss_", "best_loss_",
    "best_validation_score_", "_no_improvement_count", "n_layers_", "n_outputs_",
    "out_activation_",
)
_CURVES = ("loss_curve_", "validation_scores_")


def _copy(value):
    return value.copy() if isinstance(value, np.ndarray) else value


def _copy_attributes(source, target):
    for name in _SHARED_ATTRIBUTES:
        if hasattr(source, name):
            setattr(target, name, _copy(getattr(source, name)))
    for name in _CURVES:
        if hasattr(source, name):
            curve = getattr(source, name)
            setattr(target, name, None if curve is None else [float(v) for v in curve])
    target.coefs_ = [np.array(c, order="C") for c in source.coefs_]
    target.intercepts_ = [np.array(b, order="C") for b in source.intercepts_]


def _params(estimator, regressor):
    params = {name: getattr(estimator, name) for name in _SHARED_PARAMS}
    if regressor:                   # the classifier's `loss` is scikit-learn's alone
        params["loss"] = getattr(estimator, "loss", "squared_error")
    return params


def to_sklearn(estimator):
    """A fitted ``sklearn.neural_network.MLPClassifier`` or ``MLPRegressor`` with the
    weights of a fitted mlp_cy estimator; see MLPClassifier.to_sklearn."""
    from sklearn import neural_network
    from sklearn.preprocessing import LabelBinarizer

    from ._compat import check_is_fitted

    check_is_fitted(estimator)
    regressor = not hasattr(estimator, "classes_")
    cls = neural_network.MLPRegressor if regressor else neural_network.MLPClassifier
    result = cls(**_params(estimator, regressor))
    if not regressor:
        classes = np.asarray(estimator.classes_)
        if classes.shape[0] < 2:
            raise ValueError(
                "A model of one class does not convert to scikit-learn: its single "
                "logistic unit gives the absent class a probability above 0, mlp_cy's "
                "gives 0."
            )
        result.classes_ = classes.copy()
        if estimator._multilabel():
            indicator = np.eye(classes.shape[0], dtype=int)
            result._label_binarizer = LabelBinarizer().fit(indicator)
        else:
            result._label_binarizer = LabelBinarizer().fit(classes)
    _copy_attributes(estimator, result)
    # What a warm-started fit with early stopping puts back at its end.
    result._best_coefs = [c.copy() for c in result.coefs_]
    result._best_intercepts = [b.copy() for b in result.intercepts_]
    return result


def from_sklearn(cls, estimator):
    """An mlp_cy ``cls`` with the weights of a fitted scikit-learn MLPClassifier or
    MLPRegressor; see MLPClassifier.from_sklearn."""
    if not hasattr(estimator, "coefs_"):
        raise ValueError(f"{type(estimator).__name__} is not fitted: call fit first.")
    classifier = hasattr(estimator, "classes_")
    if classifier != hasattr(cls, "predict_proba"):
        raise ValueError(f"A fitted {type(estimator).__name__} does not convert to "
                         f"{cls.__name__}; use the {'MLPClassifier' if classifier else 'MLPRegressor'} "
                         "of mlp_cy.")
    result = cls(**_params(estimator, not classifier))
    if classifier:
        result.classes_ = np.asarray(estimator.classes_).copy()
    _copy_attributes(estimator, result)
    if estimator.solver != "lbfgs":
        if getattr(result, "validation_scores_", None) is not None:
            result.validation_loss_curve_ = []
        else:
            result.validation_loss_curve_ = None
        if getattr(result, "loss_curve_", None) is None:
            result.loss_curve_ = []
    for name in ("n_iter_", "t_", "_no_improvement_count"):
        setattr(result, name, int(getattr(result, name, 0)))
    return result
