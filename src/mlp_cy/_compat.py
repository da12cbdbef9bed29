"""scikit-learn is optional: its base classes when installed, small stand-ins when not.

With scikit-learn installed, MLPClassifier is a real scikit-learn estimator (clone,
Pipeline, GridSearchCV, check_estimator, tags). Without it, the stand-ins below give
the same get_params / set_params / score behaviour, so mlp_cy needs only numpy and scipy.
"""

import inspect

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.exceptions import ConvergenceWarning, DataConversionWarning, NotFittedError
    from sklearn.utils.validation import check_is_fitted

    HAS_SKLEARN = True
except ImportError:  # pragma: no cover - exercised by the no-sklearn CI job
    HAS_SKLEARN = False

    class NotFittedError(ValueError, AttributeError):
        """Raised when a method needs a fitted estimator and fit was not called."""

    class ConvergenceWarning(UserWarning):
        """Training stopped before the optimisation converged."""

    class DataConversionWarning(UserWarning):
        """The input was converted to another shape or type."""

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

    def check_is_fitted(estimator):
        if not estimator.__sklearn_is_fitted__():
            raise NotFittedError(
                f"This {type(estimator).__name__} instance is not fitted yet. Call "
                "'fit' with appropriate arguments before using this estimator."
            )

    def _same(a, b):
        try:
            return bool(a == b)
        except Exception:
            return a is b


__all__ = [
    "HAS_SKLEARN",
    "BaseEstimator",
    "ClassifierMixin",
    "ConvergenceWarning",
    "DataConversionWarning",
    "NotFittedError",
    "check_is_fitted",
]
