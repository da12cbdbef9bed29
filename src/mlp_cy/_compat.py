"""scikit-learn is optional, and mlp_cy never imports it itself.

MLPClassifier derives from the small stand-ins below (get_params / set_params /
repr / score, as scikit-learn's), so mlp_cy needs only numpy and scipy, and
``import mlp_cy`` does not pay the 2-3 s that importing scikit-learn (and pandas
with it) costs.

Whenever scikit-learn is imported, before or after mlp_cy, its ``sklearn.base``
is loaded first (``import sklearn`` loads it). Right then, the classes registered
here with :func:`follows_sklearn` get scikit-learn's BaseEstimator and
ClassifierMixin as their bases in place of the stand-ins, and ConvergenceWarning,
DataConversionWarning and NotFittedError become subclasses of scikit-learn's. So
once scikit-learn is there, MLPClassifier is exactly the class it would be if it
had been defined against scikit-learn: ``isinstance(clf, BaseEstimator)``,
clone, tags, metadata routing (``set_fit_request``), the HTML repr,
check_estimator, and ``except NotFittedError`` / warning filters on
scikit-learn's classes all work. No code can tell the difference before then,
since it would have to import scikit-learn to ask.
"""

import importlib
import importlib.util
import inspect
import sys
import warnings

import numpy as np


def _installed(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # sys.modules[name] is None, or a broken entry
        return False


#: scikit-learn can be imported (mlp_cy does not import it).
HAS_SKLEARN = _installed("sklearn")


# Stand-ins --------------------------------------------------------------------------

class BaseEstimator:
    """get_params / set_params over the constructor's arguments, as scikit-learn."""

    @classmethod
    def _get_param_names(cls):
        signature = inspect.signature(cls.__init__)
        return sorted(
            name
            for name, p in signature.parameters.items()
            if name != "self" and p.kind != p.VAR_KEYWORD
        )

    def get_params(self, deep=True):
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params):
        valid = self._get_param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"Invalid parameter {name!r} for estimator {type(self).__name__}. "
                    f"Valid parameters are: {valid}."
                )
            setattr(self, name, value)
        return self

    def __repr__(self):
        defaults = inspect.signature(type(self).__init__).parameters
        changed = [
            f"{name}={value!r}"
            for name, value in self.get_params().items()
            if not _same(value, defaults[name].default)
        ]
        return f"{type(self).__name__}({', '.join(changed)})"


class ClassifierMixin:
    """score() as mean accuracy."""

    _estimator_type = "classifier"

    def score(self, X, y, sample_weight=None):
        y_pred = self.predict(X)
        return float(np.average(y_pred == np.asarray(y), weights=sample_weight))


def _same(a, b):
    try:
        return bool(a == b)
    except Exception:
        return a is b


# Python-level bases: __bases__ can only be swapped between classes of one memory
# layout, and scikit-learn's exceptions are Python subclasses like these.
class _Warning(UserWarning):
    pass


class _Error(ValueError, AttributeError):
    pass


class ConvergenceWarning(_Warning):
    """Training stopped before the optimisation converged, or did not learn."""


class DataConversionWarning(_Warning):
    """The input was converted to another shape or type."""


class NotFittedError(_Error):
    """Raised when a method needs a fitted estimator and fit was not called."""


def check_is_fitted(estimator):
    """Raise NotFittedError unless ``estimator.__sklearn_is_fitted__()``."""
    if not estimator.__sklearn_is_fitted__():
        raise NotFittedError(
            f"This {type(estimator).__name__} instance is not fitted yet. Call "
            "'fit' with appropriate arguments before using this estimator."
        )


# Following scikit-learn --------------------------------------------------------------

_followers = []
_adopted = False


def follows_sklearn(cls):
    """Class decorator: give ``cls`` scikit-learn's bases whenever it is imported."""
    _followers.append(cls)
    if _adopted:
        _rebase(cls, *_sklearn_modules())
    return cls


def _sklearn_modules():
    return sys.modules["sklearn.base"], importlib.import_module("sklearn.exceptions")


def _rebase(cls, base, exceptions):
    swap = {BaseEstimator: base.BaseEstimator, ClassifierMixin: base.ClassifierMixin}
    cls.__bases__ = tuple(swap.get(b, b) for b in cls.__bases__)
    # What class creation would have run: scikit-learn's hook that adds the
    # set_{method}_request methods of metadata routing.
    super(cls, cls).__init_subclass__()


def _adopt():
    """Move the stand-ins' users onto scikit-learn's classes (once)."""
    global _adopted
    if _adopted:
        return
    base, exceptions = _sklearn_modules()
    _adopted = True
    try:
        ConvergenceWarning.__bases__ = (exceptions.ConvergenceWarning,)
        DataConversionWarning.__bases__ = (exceptions.DataConversionWarning,)
        NotFittedError.__bases__ = (exceptions.NotFittedError,)
        for cls in _followers:
            _rebase(cls, base, exceptions)
    except TypeError as exc:  # a scikit-learn whose classes changed shape
        warnings.warn(f"mlp_cy could not take scikit-learn's base classes ({exc}); "
                      "MLPClassifier keeps its own.", RuntimeWarning, stacklevel=2)


class _AfterExec:
    """A module's loader that calls _adopt() once the module has been executed."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _adopt()

    def __getattr__(self, name):  # get_source, get_filename, ...: the real loader's
        return getattr(self._loader, name)


class _SklearnBaseFinder:
    """On sys.meta_path until sklearn.base is imported: finds it with the other
    finders and wraps its loader in _AfterExec."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "sklearn.base" or _adopted:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if hasattr(spec.loader, "exec_module"):
                    spec.loader = _AfterExec(spec.loader)
                return spec
        return None

    def invalidate_caches(self):
        pass


def _follow_sklearn():
    base = sys.modules.get("sklearn.base")
    if base is not None and hasattr(base, "ClassifierMixin"):  # imported before mlp_cy
        _adopt()
    elif not any(isinstance(f, _SklearnBaseFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _SklearnBaseFinder())


_follow_sklearn()

__all__ = [
    "HAS_SKLEARN",
    "BaseEstimator",
    "ClassifierMixin",
    "ConvergenceWarning",
    "DataConversionWarning",
    "NotFittedError",
    "check_is_fitted",
    "follows_sklearn",
]
