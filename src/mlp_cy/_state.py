"""Estimators to states and back: what a model file holds, as one dict.

A *state* is a dict of an estimator's class name (``"estimator"``), its
hyperparameters (``"params"``, from ``get_params(deep=False)``) and its fitted
attributes, each under the attribute's own name. :func:`capture` takes it from a
fitted estimator, :func:`restore` gives it to a new one; :mod:`mlp_cy.persistence`
writes and reads it. Both work on any estimator with these attributes, so this module
imports no estimator:

* always: ``coefs_`` and ``intercepts_`` (lists of L arrays, (units[i], units[i+1])
  and (units[i+1],)), ``n_outputs_``, ``out_activation_``, ``n_features_in_``,
  ``n_iter_``, ``t_``, ``_no_improvement_count``; ``n_layers_`` is L + 1;
* None if absent: ``best_loss_``, ``best_validation_score_``, ``validation_scores_``,
  ``validation_loss_curve_``;
* unset if absent: ``classes_`` (classifiers), ``loss_``, ``loss_curve_`` (absent for
  lbfgs, as scikit-learn's), ``feature_names_in_``;
* together or not at all: ``_optimizer_state``, ``_n_updates``, ``_learning_rate``.
"""

import numbers

from ._compat import check_is_fitted
from .persistence import ESTIMATORS, ModelFileError, _short, _some

__all__ = ["capture", "restore"]

_ALWAYS = ("coefs_", "intercepts_", "n_outputs_", "out_activation_", "n_features_in_",
           "n_iter_", "t_", "_no_improvement_count")
_NONE_IF_ABSENT = ("best_loss_", "best_validation_score_", "validation_scores_",
                   "validation_loss_curve_")
_UNSET_IF_ABSENT = ("classes_", "loss_", "loss_curve_", "feature_names_in_")
_OPTIMIZER = ("_optimizer_state", "_n_updates", "_learning_rate")


def estimator_name(cls):
    """The name in ESTIMATORS of ``cls`` or of the first of its bases that has one."""
    for base in cls.__mro__:
        if base.__name__ in ESTIMATORS:
            return base.__name__
    raise ValueError(f"Model files hold {' or '.join(ESTIMATORS)}, not "
                     f"{cls.__name__}.")


def capture(estimator):
    """The state of a fitted estimator (its arrays themselves, not copies).

    Parameters
    ----------
    estimator : MLPClassifier or MLPRegressor (or a subclass)
        A fitted estimator.

    Returns
    -------
    state : dict
        For :func:`mlp_cy.persistence.write_state`.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If the estimator is not fitted.
    """
    check_is_fitted(estimator)
    state = {"estimator": estimator_name(type(estimator)),
             "params": estimator.get_params(deep=False)}
    for name in _ALWAYS:
        state[name] = getattr(estimator, name, 0 if name == "_no_improvement_count"
                              else None)
    state["coefs_"], state["intercepts_"] = list(state["coefs_"]), \
        list(state["intercepts_"])
    for name in _NONE_IF_ABSENT + _UNSET_IF_ABSENT:
        if getattr(estimator, name, None) is not None:
            state[name] = getattr(estimator, name)
    if getattr(estimator, "_optimizer_state", None) is not None:
        for name in _OPTIMIZER:
            state[name] = getattr(estimator, name)
    return state


def restore(cls, state):
    """A fitted ``cls`` with the hyperparameters and attributes of ``state``.

    ``state`` is one that :func:`mlp_cy.persistence.read_state` returned, whose
    arrays and values it checked; this checks what depends on ``cls``: the
    hyperparameters, and that hidden_layer_sizes agrees with the weights. The
    estimator takes the state's arrays, not copies. Messages name the hyperparameters
    'params_json', as the user's model file does.

    Parameters
    ----------
    cls : type
        MLPClassifier or MLPRegressor, as ``state["estimator"]`` names it (or a
        subclass).
    state : dict

    Returns
    -------
    estimator : cls

    Raises
    ------
    ModelFileError
        If the state holds another estimator, unknown hyperparameters, or ones that
        ``cls`` refuses, or hidden_layer_sizes that the weights do not have.
    """
    name = estimator_name(cls)
    if state["estimator"] != name:
        raise ModelFileError(f"it holds an {state['estimator']}, not an {name}")
    params = state["params"]
    known = set(cls().get_params(deep=False))
    unknown = sorted(set(params) - known)
    if unknown:
        raise ModelFileError(
            f"'params_json' has unknown hyperparameters {_some(unknown)}; an {name} has "
            f"{sorted(known)}"
        )
    estimator = cls(**params)
    try:
        estimator._validate_hyperparameters()
        seed = params.get("random_state")
        if not (seed is None or isinstance(seed, numbers.Integral)):
            raise ValueError(f"random_state={seed!r} is not an int")
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"bad hyperparameters in 'params_json': {_short(exc)}") \
            from exc
    _check_hidden_layers(estimator.hidden_layer_sizes, state["coefs_"])

    for attribute in _ALWAYS:
        setattr(estimator, attribute, state[attribute])
    estimator.n_layers_ = len(state["coefs_"]) + 1
    for attribute in _NONE_IF_ABSENT:
        setattr(estimator, attribute, state.get(attribute))
    for attribute in _UNSET_IF_ABSENT:
        if state.get(attribute) is not None:
            setattr(estimator, attribute, state[attribute])
    if state.get("_optimizer_state") is not None:
        for attribute in _OPTIMIZER:
            setattr(estimator, attribute, state[attribute])
    return estimator


def _check_hidden_layers(hidden_layer_sizes, coefs):
    """hidden_layer_sizes (validated: an int or ints) is the widths of the weights."""
    sizes = hidden_layer_sizes
    requested = (sizes,) if isinstance(sizes, numbers.Integral) else tuple(sizes)
    found = tuple(coef.shape[1] for coef in coefs[:-1])
    if tuple(int(n) for n in requested) != found:
        raise ModelFileError(
            f"'params_json' has hidden_layer_sizes="
            f"{_short(repr(hidden_layer_sizes), 80)} but the weights have hidden "
            f"layers of {_short(found, 80)} units"
        )
