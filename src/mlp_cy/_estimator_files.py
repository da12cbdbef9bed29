"""Saving and loading whole estimators: a state (_state) in a model file (persistence).

The only module that knows the estimator classes, by name; it imports them when a
file names them, since their modules use this one's neighbours.
"""

import importlib
import os

from . import _state, persistence
from .persistence import ModelFileError

__all__ = ["estimator_class", "load", "save_model"]

# Module of each estimator that persistence.ESTIMATORS names.
_MODULES = {"MLPClassifier": "classifier", "MLPRegressor": "regressor"}


def save_model(estimator, path):
    """Write a fitted estimator to ``path``, atomically and without pickle.

    What ``estimator.save(path)`` does.

    Parameters
    ----------
    estimator : MLPClassifier or MLPRegressor
        A fitted estimator.
    path : str or os.PathLike
        The file to write, exactly as given: no ``.npz`` suffix is appended. An
        existing file is replaced only once the new one is completely written.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If the estimator is not fitted.
    ValueError
        If the estimator's state cannot be stored: object labels that are not all
        strings, weights that are not float32/float64 of one dtype, non-finite
        weights, or hyperparameters that are not JSON values.

    See Also
    --------
    load : Read the file back.
    """
    persistence.write_state(path, _state.capture(estimator))


def load(path):
    """Read a model file written by the ``save`` method of an mlp_cy estimator.

    Nothing in the file is trusted: see :func:`mlp_cy.persistence.read_state`.
    The file says which estimator it holds; its hyperparameters are checked as
    that estimator's constructor arguments. Files of format version 1 (mlp_cy
    0.1.0) load too; a binary model of version 1 loads without its optimizer
    state (see :mod:`mlp_cy.persistence`).

    Parameters
    ----------
    path : str or os.PathLike
        The model file, exactly as named (no ``.npz`` is appended).

    Returns
    -------
    estimator : MLPClassifier or MLPRegressor
        A fitted estimator whose predictions equal those of the saved one.

    Raises
    ------
    ModelFileError
        If the file is not a valid mlp_cy model file, was written in a newer
        format version, or does not fit in memory. The message is short and says
        what is wrong.
    OSError
        If the file cannot be opened (e.g. FileNotFoundError), or is not a
        regular file (a FIFO, a device: refused at once, without waiting).

    See Also
    --------
    MLPClassifier.save : Write a model file.

    Examples
    --------
    >>> import mlp_cy
    >>> clf = mlp_cy.load("model.npz")  # doctest: +SKIP
    >>> clf.predict(X)  # doctest: +SKIP
    """
    path = os.fspath(path)
    state = persistence.read_state(path)
    try:
        return _state.restore(estimator_class(state["estimator"]), state)
    except ModelFileError as exc:
        raise ModelFileError(f"{path!r} is not a valid mlp_cy model file: {exc}") \
            from exc.__cause__


def estimator_class(name):
    """The estimator class that persistence.ESTIMATORS names ``name``."""
    module_name = f"{__package__}.{_MODULES[name]}"
    try:
        # Here, not at the top: the estimators' modules import persistence.
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise ModelFileError(
            f"it holds an {name}, which this mlp_cy does not have: upgrade mlp_cy to "
            "load it") from None
    return getattr(module, name)
