"""Model files: a fitted MLPClassifier as an .npz archive, without pickle.

A model file is a NumPy ``.npz`` archive (an uncompressed zip of ``.npy`` files)
written by :func:`numpy.savez` and read by :func:`numpy.load` with
``allow_pickle=False``, so loading a file never runs code from it. It holds
these keys (format version 1):

=========================  =======================  ================================
key                        dtype, shape             content
=========================  =======================  ================================
format                     str, ()                  ``"mlp_cy-model"``
format_version             int64, ()                ``1``
mlp_cy_version             str, ()                  version of mlp_cy that wrote it
params_json                str, ()                  ``get_params()`` as a JSON object
W1, b1, W2, b2             float32 or float64       ``coefs_`` and ``intercepts_``:
                                                    (d, h), (h,), (h, K), (K,)
classes_                   bool, int, float, str    (K,), K >= 2, sorted and unique
n_features_in_             int64, ()                d
n_iter_, t_                int64, ()
loss_curve_                float64, (n_epochs,)
no_improvement_count       int64, ()                the stopping rule's counter
=========================  =======================  ================================

and these optional keys; an absent one means the attribute is None (or unset,
for ``loss_`` and ``feature_names_in_``):

=========================  =======================  ================================
loss_, best_loss_          float64, ()
best_validation_score_     float64, ()              early stopping only
validation_scores_         float64, (n_epochs,)     early stopping only
validation_loss_curve_     float64, (n_epochs,)     early stopping only
feature_names_in_          str, (d,)                fitted on a DataFrame
optimizer_state            dtype of W1, (n,)        momentum or Adam state, so that
n_updates                  int64, ()                partial_fit after loading
current_learning_rate      float64, ()              continues where it stopped
=========================  =======================  ================================

``params_json`` is plain JSON; the one dict-valued hyperparameter, ``class_weight``,
is written as ``{"__items__": [[label, weight], ...]}`` because JSON object keys
are strings only. A ``random_state`` that is a RandomState instance is written as
null.

Files are written exactly under the path given (no ``.npz`` is appended, unlike
``numpy.savez(filename)``) and atomically: the archive goes to a temporary file in
the same directory, which replaces the path only once it is complete and synced.
"""

import contextlib
import json
import math
import numbers
import os
import tempfile
import zipfile
import zlib

import numpy as np

from ._compat import check_is_fitted
from .classifier import MLPClassifier

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "ModelFileError", "load", "save_model"]

#: Value of the ``format`` key of every model file.
FORMAT_NAME = "mlp_cy-model"
#: Version of the model file layout written by this mlp_cy; it reads this and older.
FORMAT_VERSION = 1

_WEIGHTS = ("W1", "b1", "W2", "b2")
_REQUIRED = frozenset(
    ("format", "format_version", "mlp_cy_version", "params_json", *_WEIGHTS,
     "classes_", "n_features_in_", "n_iter_", "t_", "loss_curve_",
     "no_improvement_count")
)
# Absent when the attribute is None or unset.
_FLOAT_SCALARS = ("loss_", "best_loss_", "best_validation_score_")
_FLOAT_CURVES = ("validation_scores_", "validation_loss_curve_")
_OPTIMIZER = ("optimizer_state", "n_updates", "current_learning_rate")
_OPTIONAL = frozenset((*_FLOAT_SCALARS, *_FLOAT_CURVES, "feature_names_in_", *_OPTIMIZER))
_KEYS = _REQUIRED | _OPTIONAL
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# Label kinds that np.load reads without pickle: bool, int, uint, float, str, bytes.
_LABEL_KINDS = "biufUS"


class ModelFileError(ValueError):
    """Raised when a file is not a valid mlp_cy model file.

    The message names the file and says what is wrong with it: not an .npz
    archive, truncated, pickled content, a missing key, a newer format version,
    inconsistent shapes or non-finite weights.
    """


# Saving ---------------------------------------------------------------------------

def save_model(estimator, path):
    """Write a fitted MLPClassifier to ``path``, atomically and without pickle.

    Parameters
    ----------
    estimator : MLPClassifier
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
    check_is_fitted(estimator)
    arrays = _to_arrays(estimator)
    try:
        _check_arrays(arrays)
    except ModelFileError as exc:
        raise ValueError(f"The model cannot be saved: {exc}") from None
    _atomic_write(os.fspath(path), arrays)


def _to_arrays(estimator):
    weights = [np.asarray(a) for a in (*estimator.coefs_, *estimator.intercepts_)]
    W1, W2, b1, b2 = weights
    dtypes = {a.dtype for a in weights}
    if len(dtypes) != 1 or W1.dtype not in _FLOAT_DTYPES:
        raise ValueError(
            "The model cannot be saved: coefs_ and intercepts_ must all be float32 or "
            f"all float64, got {[str(a.dtype) for a in weights]}."
        )
    from . import __version__

    arrays = {
        "format": np.array(FORMAT_NAME),
        "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
        "mlp_cy_version": np.array(__version__),
        "params_json": np.array(_params_to_json(estimator.get_params(deep=False))),
        "W1": np.ascontiguousarray(W1),
        "b1": np.ascontiguousarray(b1),
        "W2": np.ascontiguousarray(W2),
        "b2": np.ascontiguousarray(b2),
        "classes_": _labels_to_array(estimator.classes_),
        "n_features_in_": np.array(estimator.n_features_in_, dtype=np.int64),
        "n_iter_": np.array(estimator.n_iter_, dtype=np.int64),
        "t_": np.array(estimator.t_, dtype=np.int64),
        "loss_curve_": np.asarray(estimator.loss_curve_, dtype=np.float64).reshape(-1),
        "no_improvement_count": np.array(
            getattr(estimator, "_no_improvement_count", 0), dtype=np.int64
        ),
    }
    for key in _FLOAT_SCALARS:
        if getattr(estimator, key, None) is not None:
            arrays[key] = np.array(getattr(estimator, key), dtype=np.float64)
    for key in _FLOAT_CURVES:
        if getattr(estimator, key, None) is not None:
            arrays[key] = np.asarray(getattr(estimator, key), dtype=np.float64).reshape(-1)
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None:
        arrays["feature_names_in_"] = np.asarray(names).astype(str)
    state = getattr(estimator, "_optimizer_state", None)
    if state is not None:
        arrays["optimizer_state"] = np.ascontiguousarray(state)
        arrays["n_updates"] = np.array(estimator._n_updates, dtype=np.int64)
        arrays["current_learning_rate"] = np.array(estimator._learning_rate, np.float64)
    return arrays


def _params_to_json(params):
    def convert(name, value):
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, np.bool_):
            return bool(value)
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, numbers.Real):
            return float(value)
        if isinstance(value, np.str_):
            return str(value)
        if isinstance(value, (tuple, list, np.ndarray)):
            return [convert(name, v) for v in value]
        if isinstance(value, dict):
            # JSON object keys are strings only; pairs keep int and float labels.
            return {"__items__": [[convert(name, k), convert(name, v)]
                                  for k, v in value.items()]}
        if name == "random_state" and isinstance(value, np.random.RandomState):
            # A generator's state is not a hyperparameter worth a pickle: drop it.
            return None
        raise ValueError(
            f"The model cannot be saved: hyperparameter {name}={value!r} is not a "
            "number, string, bool, None, or a tuple or dict of those."
        )

    try:
        return json.dumps(
            {name: convert(name, value) for name, value in sorted(params.items())},
            allow_nan=False,
        )
    except ValueError as exc:
        if str(exc).startswith("The model cannot be saved"):
            raise
        raise ValueError(f"The model cannot be saved: a hyperparameter is NaN or "
                         f"infinite ({exc}).") from exc


def _params_from_json(params):
    """Undo the dict encoding of _params_to_json."""
    decoded = {}
    for name, value in params.items():
        if isinstance(value, dict):
            items = value.get("__items__")
            if set(value) != {"__items__"} or not isinstance(items, list) or not all(
                isinstance(item, list) and len(item) == 2
                and isinstance(item[0], (str, int, float, bool)) for item in items
            ):
                raise ModelFileError(f"'params_json' has a malformed value for {name!r}")
            value = {key: weight for key, weight in items}
        elif isinstance(value, list) and name == "hidden_layer_sizes":
            value = tuple(value)
        decoded[name] = value
    return decoded


def _labels_to_array(classes):
    classes = np.asarray(classes)
    if classes.dtype.kind == "O":
        if not all(isinstance(c, str) for c in classes.tolist()):
            kinds = sorted({type(c).__name__ for c in classes.tolist()})
            raise ValueError(
                f"The model cannot be saved: its class labels are Python objects of "
                f"types {kinds}; model files store labels that are all numbers or all "
                "strings (no pickle). Convert y to one of those and fit again."
            )
        classes = classes.astype(str)
    if classes.dtype.kind not in _LABEL_KINDS:
        raise ValueError(
            f"The model cannot be saved: class labels of dtype {classes.dtype} are not "
            "supported; use numbers or strings."
        )
    # Native byte order, so the file reads back the same everywhere.
    return np.ascontiguousarray(classes, dtype=classes.dtype.newbyteorder("="))


def _atomic_write(path, arrays):
    """Write ``arrays`` as an .npz to ``path`` via a synced temporary file."""
    directory, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            _write_npz(f, arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the model from other users
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _write_npz(f, arrays):
    # A file object, not a name: numpy would append ".npz" to a name without it.
    np.savez(f, **arrays)


def _fsync_directory(directory):
    """Make the rename durable; not possible on every platform, hence best effort."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# Loading --------------------------------------------------------------------------

def load(path):
    """Read a model file written by :meth:`MLPClassifier.save`.

    The file is read with ``numpy.load(allow_pickle=False)``: a file holding
    pickled data is refused before any of it is unpickled. Every key, dtype, shape
    and value is checked before the estimator is built.

    Parameters
    ----------
    path : str or os.PathLike
        The model file, exactly as named (no ``.npz`` is appended).

    Returns
    -------
    estimator : MLPClassifier
        A fitted estimator whose predictions equal those of the saved one.

    Raises
    ------
    ModelFileError
        If the file is not a valid mlp_cy model file, or was written in a newer
        format version.
    OSError
        If the file cannot be opened (e.g. FileNotFoundError).

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
    with open(path, "rb") as f:
        try:
            arrays = _read_arrays(f)
            _check_arrays(arrays)
            return _build(arrays)
        except ModelFileError as exc:
            raise ModelFileError(f"{path!r} is not a valid mlp_cy model file: {exc}") \
                from exc.__cause__


def _read_arrays(f):
    try:
        npz = np.load(f, allow_pickle=False)
    except ValueError as exc:
        # np.load falls back to pickle for anything that is neither .npy nor zip.
        raise ModelFileError(
            "it is not an .npz archive (it may hold pickled data, which is never "
            f"loaded) ({exc})"
        ) from exc
    except (EOFError, OSError, zipfile.BadZipFile, zlib.error, NotImplementedError,
            RuntimeError) as exc:
        raise ModelFileError(f"it is empty, truncated or not an .npz archive ({exc})") \
            from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ModelFileError("it is a single .npy array, not an .npz archive")
    with npz:
        names = set(npz.files)
        arrays = {"format": _read_member(npz, "format")} if "format" in names else {}
        _check_format(arrays.get("format"))
        if "format_version" not in names:
            raise ModelFileError("the key 'format_version' is missing")
        arrays["format_version"] = _read_member(npz, "format_version")
        _check_version(arrays["format_version"])
        missing = sorted(_REQUIRED - names)
        if missing:
            raise ModelFileError(
                f"the keys {missing} are missing (truncated or edited file?)"
            )
        unknown = sorted(names - _KEYS)
        if unknown:
            raise ModelFileError(
                f"it has keys {unknown} that format version {FORMAT_VERSION} does not "
                "define (edited file?)"
            )
        for key in sorted(names - set(arrays)):
            arrays[key] = _read_member(npz, key)
    return arrays


def _check_member_size(npz, key):
    """Refuse a member whose .npy header claims more data than the member holds."""
    info = npz.zip.getinfo(key + ".npy")
    with npz.zip.open(info) as member:
        version = np.lib.format.read_magic(member)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read_header(member)
        needed = math.prod(shape) * dtype.itemsize
        available = info.file_size - member.tell()
    if not dtype.hasobject and needed > available:
        raise ModelFileError(
            f"the array {key!r} claims shape {shape} of {dtype} ({needed} bytes) but "
            f"holds {available} bytes (truncated or edited file?)")


def _read_member(npz, key):
    try:
        if key + ".npy" in npz.zip.namelist():
            _check_member_size(npz, key)
        value = npz[key]
    except ModelFileError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise ModelFileError(
                f"the array {key!r} holds pickled Python objects, which model files "
                "never do; it was not loaded (the file may be malicious)"
            ) from exc
        raise ModelFileError(f"the array {key!r} is corrupt ({exc})") from exc
    except Exception as exc:   # zipfile, zlib, numpy's header parser (TokenError), ...
        raise ModelFileError(f"the array {key!r} is truncated or corrupt ({exc})") \
            from exc
    if not isinstance(value, np.ndarray):
        raise ModelFileError(f"the member {key!r} is not a .npy array")
    return value


def _check_format(value):
    if value is None:
        raise ModelFileError(
            "it has no 'format' key, so it was not written by MLPClassifier.save"
        )
    if value.shape != () or value.dtype.kind != "U" or str(value) != FORMAT_NAME:
        raise ModelFileError(
            f"its 'format' is {value!r}, not {FORMAT_NAME!r}"
        )


def _check_version(value):
    if value.shape != () or value.dtype.kind not in "iu":
        raise ModelFileError(f"its 'format_version' is {value!r}, not an integer")
    version = int(value)
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"it has model format version {version}, written by a newer mlp_cy; this "
            f"mlp_cy reads versions up to {FORMAT_VERSION}: upgrade mlp_cy to load it"
        )
    if version < 1:
        raise ModelFileError(f"its model format version {version} is not valid")


def _scalar(arrays, key, kind):
    value = arrays[key]
    if value.shape != () or value.dtype.kind not in kind:
        expected = "an integer" if kind == "iu" else "a float"
        raise ModelFileError(
            f"{key!r} must be {expected} scalar, got dtype {value.dtype} and shape "
            f"{value.shape}"
        )
    return value[()]


def _check_arrays(arrays):
    """Validate dtypes, shapes and values; raise ModelFileError on the first problem."""
    for key in ("mlp_cy_version", "params_json"):
        if arrays[key].shape != () or arrays[key].dtype.kind != "U":
            raise ModelFileError(f"{key!r} must be a string scalar")
    W1, b1, W2, b2 = (arrays[k] for k in _WEIGHTS)
    dtypes = [a.dtype.newbyteorder("=") for a in (W1, b1, W2, b2)]
    if dtypes[0] not in _FLOAT_DTYPES or len(set(dtypes)) != 1:
        raise ModelFileError(
            f"W1, b1, W2, b2 must all be float32 or all float64, got "
            f"{[str(a.dtype) for a in (W1, b1, W2, b2)]}"
        )
    if W1.ndim != 2 or W2.ndim != 2 or b1.ndim != 1 or b2.ndim != 1:
        raise ModelFileError(
            f"W1, b1, W2, b2 have {W1.ndim}, {b1.ndim}, {W2.ndim}, {b2.ndim} "
            "dimensions; expected 2, 1, 2, 1"
        )
    n_features, n_hidden = W1.shape
    n_classes = W2.shape[1]
    classes = arrays["classes_"]
    if (
        b1.shape != (n_hidden,) or W2.shape[0] != n_hidden or b2.shape != (n_classes,)
        or n_features < 1 or n_hidden < 1
    ):
        raise ModelFileError(
            f"inconsistent shapes W1 {W1.shape}, b1 {b1.shape}, W2 {W2.shape}, "
            f"b2 {b2.shape}; expected (d, h), (h,), (h, K), (K,)"
        )
    if not all(np.isfinite(a).all() for a in (W1, b1, W2, b2)):
        raise ModelFileError("the weights contain NaN or infinite values")
    if classes.ndim != 1 or classes.dtype.kind not in _LABEL_KINDS:
        raise ModelFileError(
            f"'classes_' must be a 1-D array of numbers or strings, got dtype "
            f"{classes.dtype} and shape {classes.shape}"
        )
    if classes.shape[0] != n_classes or n_classes < 2:
        raise ModelFileError(
            f"{classes.shape[0]} classes in 'classes_' for a network with {n_classes} "
            "outputs; both must be equal and at least 2"
        )
    if classes.dtype.kind == "f" and not np.isfinite(classes).all():
        raise ModelFileError("'classes_' contains NaN or infinite labels")
    if not np.array_equal(np.unique(classes), classes):
        raise ModelFileError("'classes_' must be sorted and free of duplicates")
    if _scalar(arrays, "n_features_in_", "iu") != n_features:
        raise ModelFileError(
            f"'n_features_in_' is {arrays['n_features_in_']} but W1 has {n_features} rows"
        )
    for key in ("n_iter_", "t_", "no_improvement_count"):
        if _scalar(arrays, key, "iu") < 0:
            raise ModelFileError(f"{key!r} must not be negative")
    for key in _FLOAT_SCALARS:
        if key in arrays and np.isnan(_scalar(arrays, key, "f")):
            raise ModelFileError(f"{key!r} is NaN")
    for key in ("loss_curve_", *_FLOAT_CURVES):
        curve = arrays.get(key)
        if curve is not None and (
            curve.ndim != 1 or curve.dtype.kind != "f" or not np.isfinite(curve).all()
        ):
            raise ModelFileError(f"{key!r} must be a 1-D array of finite floats")
    names = arrays.get("feature_names_in_")
    if names is not None and (names.dtype.kind != "U" or names.shape != (n_features,)):
        raise ModelFileError(
            f"'feature_names_in_' must hold {n_features} strings, got dtype "
            f"{names.dtype} and shape {names.shape}"
        )
    _check_optimizer(arrays, dtypes[0])
    _parse_params(arrays["params_json"], n_hidden)


def _check_optimizer(arrays, dtype):
    present = [key in arrays for key in _OPTIMIZER]
    if not any(present):
        return
    if not all(present):
        raise ModelFileError(f"the keys {list(_OPTIMIZER)} must be all present or all absent")
    state = arrays["optimizer_state"]
    if state.ndim != 1 or state.dtype.newbyteorder("=") != dtype \
            or not np.isfinite(state).all():
        raise ModelFileError(
            f"'optimizer_state' must be a 1-D array of finite {dtype} values like W1, got "
            f"dtype {state.dtype} and shape {state.shape}"
        )
    if _scalar(arrays, "n_updates", "iu") < 0:
        raise ModelFileError("'n_updates' must not be negative")
    rate = _scalar(arrays, "current_learning_rate", "f")
    if not (np.isfinite(rate) and rate > 0):
        raise ModelFileError("'current_learning_rate' must be a positive number")


def _parse_params(value, n_hidden):
    try:
        params = json.loads(str(value))
    except (ValueError, RecursionError) as exc:
        raise ModelFileError(f"'params_json' is not valid JSON ({exc})") from exc
    if not isinstance(params, dict):
        raise ModelFileError("'params_json' is not a JSON object")
    known = set(MLPClassifier().get_params(deep=False))
    unknown = sorted(set(params) - known)
    if unknown:
        raise ModelFileError(
            f"'params_json' has unknown hyperparameters {unknown}; known are "
            f"{sorted(known)}"
        )
    params = _params_from_json(params)
    estimator = MLPClassifier(**params)
    try:
        requested = estimator._validate_hyperparameters()
        if not (params.get("random_state") is None
                or isinstance(params["random_state"], int)):
            raise ValueError(f"random_state={params['random_state']!r} is not an int")
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"bad hyperparameters in 'params_json': {exc}") from exc
    if requested != n_hidden:
        raise ModelFileError(
            f"'params_json' has hidden_layer_sizes={estimator.hidden_layer_sizes!r} "
            f"but W1 has {n_hidden} hidden units"
        )
    return estimator


def _native(array):
    """A writable, C-contiguous copy in native byte order that the model owns."""
    return np.array(array, dtype=array.dtype.newbyteorder("="), order="C")


def _build(arrays):
    estimator = _parse_params(arrays["params_json"], arrays["W1"].shape[1])
    classes = _native(arrays["classes_"])
    estimator.classes_ = classes
    estimator.coefs_ = [_native(arrays["W1"]), _native(arrays["W2"])]
    estimator.intercepts_ = [_native(arrays["b1"]), _native(arrays["b2"])]
    estimator.n_features_in_ = int(arrays["n_features_in_"])
    estimator.n_iter_ = int(arrays["n_iter_"])
    estimator.t_ = int(arrays["t_"])
    estimator.n_layers_ = 3
    estimator.n_outputs_ = classes.shape[0]
    estimator.out_activation_ = "softmax"
    estimator.loss_curve_ = [float(v) for v in arrays["loss_curve_"]]
    estimator._no_improvement_count = int(arrays["no_improvement_count"])
    if "loss_" in arrays:
        estimator.loss_ = float(arrays["loss_"])
    for key in ("best_loss_", "best_validation_score_"):
        setattr(estimator, key, float(arrays[key]) if key in arrays else None)
    for key in _FLOAT_CURVES:
        setattr(estimator, key,
                [float(v) for v in arrays[key]] if key in arrays else None)
    if "feature_names_in_" in arrays:
        # scikit-learn's convention: an object array of str.
        estimator.feature_names_in_ = arrays["feature_names_in_"].astype(object)
    if "optimizer_state" in arrays:
        estimator._optimizer_state = _native(arrays["optimizer_state"])
        estimator._n_updates = int(arrays["n_updates"])
        estimator._learning_rate = float(arrays["current_learning_rate"])
    return estimator
