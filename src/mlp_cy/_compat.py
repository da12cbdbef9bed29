"""scikit-learn is optional, and mlp_cy never imports it itself.

MLPClassifier derives from the small stand-ins below (get_params / set_params /
repr / score, as scikit-learn's), so mlp_cy needs only numpy and scipy, and
``import mlp_cy`` does not pay the 2-3 s that importing scikit-learn (and pandas
with it) costs.

Whenever scikit-learn is imported, before or after mlp_cy, its ``sklearn.base``
is loaded first (``import sklearn`` loads it). Right then, the classes registered
here with :func:`follows_sklearn` get scikit-learn's BaseEstimator and
ClassifierMixin as their bases in place of the stand-ins, ConvergenceWarning,
DataConversionWarning, NotFittedError and InvalidParameterError become subclasses
of scikit-learn's, and the classes' ``_parameter_constraints`` become scikit-learn's
constraint objects, checked by its own validate_parameter_constraints. So
once scikit-learn is there, MLPClassifier is exactly the class it would be if it
had been defined against scikit-learn: ``isinstance(clf, BaseEstimator)``,
clone, tags, metadata routing (``set_fit_request``), the HTML repr,
check_estimator, and ``except NotFittedError`` / warning filters on
scikit-learn's classes all work. No code can tell the difference before then,
since it would have to import scikit-learn to ask.
"""

import functools
import importlib
import importlib.util
import inspect
import numbers
import sys
import types
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
        correct = y_pred == np.asarray(y)
        if correct.ndim == 2:            # multilabel: every label of the row right
            correct = correct.all(axis=1)
        return float(np.average(correct, weights=sample_weight))


class RegressorMixin:
    """score() as the coefficient of determination R^2 (uniform over outputs)."""

    _estimator_type = "regressor"

    def score(self, X, y, sample_weight=None):
        y = np.asarray(y, dtype=np.float64)
        y_pred = np.asarray(self.predict(X), dtype=np.float64).reshape(y.shape)
        if y.ndim == 1:
            y, y_pred = y[:, None], y_pred[:, None]
        weights = None if sample_weight is None else np.asarray(sample_weight)[:, None]
        residual = (weights if weights is not None else 1) * (y - y_pred) ** 2
        mean = np.average(y, axis=0, weights=sample_weight)
        total = (weights if weights is not None else 1) * (y - mean) ** 2
        residual, total = residual.sum(axis=0), total.sum(axis=0)
        # scikit-learn's r2_score: a constant target scores 1 if predicted exactly, else 0
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(total != 0, 1 - residual / total,
                          np.where(residual == 0, 1.0, 0.0))
        return float(np.mean(r2))


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

class _ParameterError(ValueError, TypeError):
    pass


class InvalidParameterError(_ParameterError):
    """A constructor argument of the wrong type or value: both a ValueError and a
    TypeError, as scikit-learn's (which it becomes a subclass of)."""


# Parameter constraints --------------------------------------------------------------
# Stand-ins for scikit-learn's Interval, Options and StrOptions
# (sklearn/utils/_param_validation.py), with its rules and messages, so that
# ``_parameter_constraints`` reads as scikit-learn's and is checked without it. Once
# scikit-learn is imported, the constraints of the classes that follow it are
# converted to its own objects and checked by its validate_parameter_constraints.

def _type_name(t):
    if t is numbers.Real:
        return "float"
    if t is numbers.Integral:
        return "int"
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


class Interval:
    """Numbers of ``type`` between left and right (None: unbounded); closed is
    "left", "right", "both" or "neither", as scikit-learn's Interval."""

    def __init__(self, type, left, right, *, closed):
        self.type, self.left, self.right, self.closed = type, left, right, closed

    def is_satisfied_by(self, val):
        if not isinstance(val, self.type):
            return False
        if not isinstance(val, numbers.Integral) and np.isnan(val):
            return False
        left = -np.inf if self.left is None else self.left
        right = np.inf if self.right is None else self.right
        below = val < left if self.closed in ("left", "both") else val <= left
        above = val > right if self.closed in ("right", "both") else val >= right
        return not (below or above)

    def __str__(self):
        type_str = "an int" if self.type is numbers.Integral else "a float"
        left = "-inf" if self.left is None else self.left
        right = "inf" if self.right is None else self.right
        if self.type is not numbers.Integral:
            left = float(left) if self.left is not None else left
            right = float(right) if self.right is not None else right
        return (f"{type_str} in the range "
                f"{'[' if self.closed in ('left', 'both') else '('}{left}, "
                f"{right}{']' if self.closed in ('right', 'both') else ')'}")


class Options:
    """One of a set of values of ``type``, as scikit-learn's Options."""

    def __init__(self, type, options):
        self.type, self.options = type, options

    def is_satisfied_by(self, val):
        return isinstance(val, self.type) and val in self.options

    def __str__(self):
        return (f"a {_type_name(self.type)} among "
                f"{{{', '.join(repr(o) for o in self.options)}}}")


class StrOptions(Options):
    """One of a set of strings, as scikit-learn's StrOptions."""

    def __init__(self, options):
        super().__init__(str, options)


def _named_constraint(name):
    """scikit-learn's constraints named by a string: (test, description)."""
    int_from_0 = Interval(numbers.Integral, 0, None, closed="left")
    seeds = Interval(numbers.Integral, 0, 2**32 - 1, closed="both")
    return {
        "boolean": (lambda v: isinstance(v, (bool, np.bool_)),
                    "an instance of 'bool' or an instance of 'numpy.bool'"),
        "verbose": (lambda v: int_from_0.is_satisfied_by(v) or isinstance(v, (bool, np.bool_)),
                    f"{int_from_0}, an instance of 'bool' or an instance of 'numpy.bool'"),
        "random_state": (lambda v: seeds.is_satisfied_by(v) or v is None
                         or isinstance(v, np.random.RandomState),
                         f"{seeds}, an instance of 'numpy.random.mtrand.RandomState' or "
                         "None"),
        "array-like": (lambda v: (hasattr(v, "__len__") or hasattr(v, "shape")
                                  or hasattr(v, "__array__"))
                       and not np.isscalar(v) and not _is_sparse(v),
                       "an array-like"),
    }[name]


def _is_sparse(value):
    return hasattr(value, "tocsr") and hasattr(value, "nnz")


def _check(constraint, value):
    """(satisfied, description) of one constraint, as scikit-learn's make_constraint."""
    if constraint is None:
        return value is None, "None"
    if isinstance(constraint, str):
        test, description = _named_constraint(constraint)
        return test(value), description
    if isinstance(constraint, type):
        return isinstance(value, constraint), f"an instance of {_type_name(constraint)!r}"
    return constraint.is_satisfied_by(value), str(constraint)


def validate_parameter_constraints(constraints, params, caller_name):
    """Raise InvalidParameterError for the first parameter that satisfies none of its
    constraints: scikit-learn's function when it is imported, else the same rules
    and message here."""
    if _adopted:
        module = sys.modules["sklearn.utils._param_validation"]
        try:
            return module.validate_parameter_constraints(constraints, params, caller_name)
        except module.InvalidParameterError as exc:   # as ours, a subclass of it
            raise InvalidParameterError(str(exc)) from None
    for name, value in params.items():
        if name not in constraints:
            continue
        checks = [_check(c, value) for c in constraints[name]]
        if any(ok for ok, _ in checks):
            continue
        descriptions = [d for _, d in checks]
        allowed = descriptions[0] if len(descriptions) == 1 else \
            f"{', '.join(descriptions[:-1])} or {descriptions[-1]}"
        raise InvalidParameterError(
            f"The {name!r} parameter of {caller_name} must be {allowed}. "
            f"Got {value!r} instead."
        )


def _to_sklearn_constraints(constraints, module):
    """The same constraints as scikit-learn's own objects."""
    def convert(c):
        if isinstance(c, Interval):
            return module.Interval(c.type, c.left, c.right, closed=c.closed)
        if isinstance(c, StrOptions):
            return module.StrOptions(c.options)
        if isinstance(c, Options):
            return module.Options(c.type, c.options)
        return c
    return {name: [convert(c) for c in cs] for name, cs in constraints.items()}



class available_if:
    """Method decorator, as scikit-learn's: the method exists on an instance only when
    ``check(instance)`` is true (it may raise AttributeError with its own message), so
    ``hasattr(est, name)`` says whether it can be called."""

    def __init__(self, check):
        self.check = check

    def __call__(self, fn):
        self.fn = fn
        functools.update_wrapper(self, fn)
        return self

    def __set_name__(self, owner, name):
        self.attribute_name = name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self.fn
        if not self.check(obj):
            raise AttributeError(f"This {type(obj).__name__!r} has no attribute "
                                 f"{self.attribute_name!r}")
        return types.MethodType(self.fn, obj)


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
    swap = {BaseEstimator: base.BaseEstimator, ClassifierMixin: base.ClassifierMixin,
            RegressorMixin: base.RegressorMixin}
    cls.__bases__ = tuple(swap.get(b, b) for b in cls.__bases__)
    # What class creation would have run: scikit-learn's hook that adds the
    # set_{method}_request methods of metadata routing.
    super(cls, cls).__init_subclass__()
    if "_parameter_constraints" in vars(cls):
        cls._parameter_constraints = _to_sklearn_constraints(
            cls._parameter_constraints, sys.modules["sklearn.utils._param_validation"])


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
        InvalidParameterError.__bases__ = (
            sys.modules["sklearn.utils._param_validation"].InvalidParameterError,)
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
    "InvalidParameterError",
    "Interval",
    "Options",
    "StrOptions",
    "ClassifierMixin",
    "RegressorMixin",
    "ConvergenceWarning",
    "DataConversionWarning",
    "NotFittedError",
    "check_is_fitted",
    "follows_sklearn",
    "validate_parameter_constraints",
]
