"""Input checks for the estimator: what was wrong, and what to do about it.

Messages follow scikit-learn's where its test suite (check_estimator) looks for them.
"""

import numbers
import warnings

import numpy as np

from ._compat import DataConversionWarning

FLOAT_DTYPES = (np.float32, np.float64)


def _is_sparse(X):
    return hasattr(X, "tocsr") and hasattr(X, "nnz")


def check_X(X, *, keep=FLOAT_DTYPES, estimator_name="MLPClassifier", n_features=None,
            accept_sparse=False):
    """Return X as a validated, C-contiguous 2-D numeric array (or, with
    accept_sparse, a scipy.sparse X as a validated CSR matrix).

    Arrays of a dtype in ``keep`` keep it, and are not copied when already
    C-contiguous; anything else numeric becomes float64, as scikit-learn does.
    """
    if X is None:
        raise ValueError(f"{estimator_name} needs an array X, got None.")
    if _is_sparse(X):
        if not accept_sparse:
            raise TypeError(
                f"{estimator_name} does not accept sparse input here (got "
                f"{type(X).__name__}); convert it with X.toarray() first."
            )
        return _check_sparse_X(X, estimator_name, n_features)
    if hasattr(X, "__dataframe__") or hasattr(X, "iloc"):
        X = X.to_numpy() if hasattr(X, "to_numpy") else np.asarray(X)
    array = np.asarray(X)
    if np.iscomplexobj(array):
        raise ValueError("Complex data not supported: X must hold real numbers.")
    if array.dtype.kind in "OUSV" or array.dtype.kind not in "biuf":
        if array.dtype.kind in "US":
            raise ValueError(
                f"{estimator_name} needs numeric X, got strings ({array.dtype}); "
                "encode them as numbers first."
            )
        try:
            array = np.asarray(array, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise type(exc)(
                f"{estimator_name} needs numeric X, but a value could not be converted "
                f"to a number ({exc}); encode non-numeric values as numbers first."
            ) from exc
    if array.ndim != 2:
        if array.ndim <= 1:
            raise ValueError(
                f"Expected 2D array, got {'scalar' if array.ndim == 0 else '1D'} array "
                f"instead: shape={array.shape}.\nReshape your data either using "
                "array.reshape(-1, 1) if your data has a single feature or "
                "array.reshape(1, -1) if it contains a single sample."
            )
        raise ValueError(
            f"Expected a 2D array (n_samples, n_features), got {array.ndim}D with shape "
            f"{array.shape}; flatten each sample, e.g. X.reshape(len(X), -1)."
        )
    n_samples, n_cols = array.shape
    if n_samples < 1:
        raise ValueError(
            f"Found array with 0 sample(s) (shape={array.shape}) while a minimum of 1 "
            "is required."
        )
    if n_cols < 1:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={array.shape}) while a minimum of 1 "
            "is required."
        )
    if n_features is not None and n_cols != n_features:
        raise ValueError(
            f"X has {n_cols} features, but {estimator_name} is expecting {n_features} "
            "features as input."
        )
    native = array.dtype.newbyteorder("=")
    dtype = native if native in keep else np.float64
    array = np.require(array, dtype=dtype, requirements="C")
    if array.dtype.kind == "f" and not _all_finite(array):
        bad = "NaN" if np.isnan(array).any() else "infinity"
        raise ValueError(
            f"Input X contains {bad}; {estimator_name} needs finite values. Remove or "
            "impute them (e.g. sklearn.impute.SimpleImputer) before fitting or predicting."
        )
    return array


def _check_sparse_X(X, estimator_name, n_features):
    """A scipy.sparse X as CSR of float32 or float64, checked as a dense X is."""
    X = X.tocsr()
    if X.ndim != 2:
        raise ValueError(f"Expected a 2D sparse matrix, got shape {X.shape}.")
    n_samples, n_cols = X.shape
    if n_samples < 1 or n_cols < 1:
        raise ValueError(
            f"Found array with {n_samples} sample(s) and {n_cols} feature(s) "
            f"(shape={X.shape}) while a minimum of 1 of each is required."
        )
    if n_features is not None and n_cols != n_features:
        raise ValueError(
            f"X has {n_cols} features, but {estimator_name} is expecting {n_features} "
            "features as input."
        )
    if X.dtype.kind not in "biuf":
        raise ValueError(f"{estimator_name} needs numeric X, got {X.dtype}.")
    if X.dtype not in FLOAT_DTYPES:
        X = X.astype(np.float64)
    if not np.isfinite(X.data).all():
        raise ValueError(
            f"Input X contains NaN or infinity; {estimator_name} needs finite values."
        )
    # Duplicate (row, column) entries need no merging: both products are linear in X.
    return X


def _all_finite(array, chunk_bytes=4 << 20):
    """np.isfinite(array).all() without a mask the size of the array: row blocks of
    about chunk_bytes, so a large X costs no extra memory to check."""
    rows = max(1, chunk_bytes // max(1, array.shape[1] * array.itemsize))
    return all(np.isfinite(array[start:start + rows]).all()
               for start in range(0, array.shape[0], rows))


def check_y(y, n_samples, *, estimator_name="MLPClassifier"):
    """Return y as a 1-D array of labels with n_samples entries."""
    if y is None:
        raise ValueError(
            f"{estimator_name} requires y to be passed, but the target y is None."
        )
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        warnings.warn(
            "A column-vector y was passed when a 1d array was expected. Please change "
            "the shape of y to (n_samples,), for example using ravel().",
            DataConversionWarning,
            stacklevel=3,
        )
        y = y.ravel()
    if y.ndim != 1:
        raise ValueError(
            f"y should be a 1d array of class labels, got an array of shape {y.shape}; "
            f"{estimator_name} does not do multi-label or multi-output classification."
        )
    if y.shape[0] != n_samples:
        raise ValueError(
            f"X and y have inconsistent numbers of samples: X has {n_samples} rows, "
            f"y has {y.shape[0]} labels."
        )
    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            raise ValueError("Input y contains NaN or infinity; labels must be finite.")
        if np.any(y != np.round(y)):
            raise ValueError(
                "Unknown label type: continuous. MLPClassifier is a classifier and needs "
                "discrete class labels; for a continuous target use a regressor."
            )
    elif y.dtype.kind == "O":
        if any(v is None or (isinstance(v, float) and v != v) for v in y):
            raise ValueError("Input y contains missing labels (None or NaN).")
    elif y.dtype.kind not in "biuUS":
        raise ValueError(f"Unknown label type: {y.dtype}; y must hold class labels.")
    return y


def check_sample_weight(sample_weight, n_samples, dtype):
    """Return sample_weight as a C-contiguous array of dtype, or None."""
    if sample_weight is None:
        return None
    if isinstance(sample_weight, numbers.Number):
        return np.full(n_samples, sample_weight, dtype=dtype)
    sample_weight = np.asarray(sample_weight)
    if sample_weight.ndim != 1 or sample_weight.shape[0] != n_samples:
        raise ValueError(
            f"sample_weight.shape == {sample_weight.shape}, expected ({n_samples},): "
            "one weight per row of X."
        )
    sample_weight = np.require(sample_weight, dtype=dtype, requirements="C")
    if not np.isfinite(sample_weight).all():
        raise ValueError("sample_weight contains NaN or infinity; weights must be finite.")
    if (sample_weight < 0).any():
        raise ValueError("sample_weight has negative values; weights must be >= 0.")
    if not sample_weight.any():
        raise ValueError("sample_weight is zero everywhere; at least one weight must be > 0.")
    return sample_weight


def _feature_names(X):
    """Column names of a DataFrame-like X when they are all strings, else None."""
    columns = getattr(X, "columns", None)
    if columns is None or not hasattr(X, "shape"):
        return None
    names = np.asarray(list(columns), dtype=object)
    is_str = np.array([isinstance(name, str) for name in names], dtype=bool)
    if names.size and is_str.all():
        return names
    if is_str.any():
        raise TypeError(
            "Feature names are only supported if all input features have string names, "
            f"but your input has {sorted({type(n).__name__ for n in names})} as feature "
            "name / column name types. Convert them all to str, e.g. X.columns = "
            "X.columns.astype(str)."
        )
    return None


def check_feature_names(estimator, X, *, reset):
    """Set ``feature_names_in_`` (reset=True) or check X against it, as scikit-learn."""
    names = _feature_names(X)
    name = type(estimator).__name__
    if reset:
        if names is not None:
            estimator.feature_names_in_ = names
        elif hasattr(estimator, "feature_names_in_"):
            del estimator.feature_names_in_
        return
    fitted = getattr(estimator, "feature_names_in_", None)
    if fitted is None and names is None:
        return
    if fitted is None:
        warnings.warn(f"X has feature names, but {name} was fitted without feature names",
                      UserWarning, stacklevel=4)
        return
    if names is None:
        warnings.warn(f"X does not have valid feature names, but {name} was fitted with "
                      "feature names", UserWarning, stacklevel=4)
        return
    if len(fitted) != len(names) or np.any(fitted != names):
        unseen = sorted(set(names) - set(fitted))
        missing = sorted(set(fitted) - set(names))
        message = "The feature names should match those that were passed during fit.\n"
        if unseen:
            message += "Feature names unseen at fit time:\n" + _name_list(unseen)
        if missing:
            message += "Feature names seen at fit time, yet now missing:\n" + _name_list(missing)
        if not unseen and not missing:
            message += "Feature names must be in the same order as they were in fit.\n"
        raise ValueError(message)


def _name_list(names, limit=5):
    lines = [f"- {n}\n" for n in names[:limit]]
    return "".join(lines) + ("- ...\n" if len(names) > limit else "")
