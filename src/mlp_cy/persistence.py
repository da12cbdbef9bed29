"""Model files: the state of a fitted estimator as an .npz archive, without pickle.

This module converts between a *state* and a file, and knows no estimator class: a
state is a dict of an estimator's name, hyperparameters and fitted attributes, which
:mod:`mlp_cy._state` takes from an estimator and gives back to a new one.
:func:`write_state` writes one, :func:`read_state` reads and checks one.

A model file is a NumPy ``.npz`` archive (an uncompressed zip of ``.npy`` files)
written by :func:`numpy.savez`. It is read member by member, by exact name, with
:mod:`zipfile` and NumPy's ``.npy`` header parser; object arrays are refused, so
loading a file never unpickles anything nor runs code from it. A network of L weight
layers (L = len(hidden_layer_sizes) + 1, at most 256) has the layer widths
``units = (n_features_in_, *hidden_layer_sizes, n_outputs_)``. Its file holds these
keys (format version 2), each in a member ``<key>.npy``:

=========================  =======================  ================================
key                        dtype, shape             content
=========================  =======================  ================================
format                     str, ()                  ``"mlp_cy-model"``
format_version             int64, ()                ``2``
mlp_cy_version             str, ()                  version of mlp_cy that wrote it
estimator                  str, ()                  ``"MLPClassifier"`` or
                                                    ``"MLPRegressor"``
params_json                str, ()                  ``get_params()`` as a JSON object
coef_0 .. coef_{L-1}       float32 or float64       ``coefs_``; coef_i is
                                                    (units[i], units[i+1])
intercept_0 ..             dtype of coef_0          ``intercepts_``; intercept_i is
intercept_{L-1}                                     (units[i+1],)
out_activation_            str, ()                  see below
n_outputs_                 int64, ()                units[L]
n_features_in_             int64, ()                units[0]
n_iter_, t_                int64, ()
no_improvement_count       int64, ()                the stopping rule's counter
=========================  =======================  ================================

and these optional keys; an absent one means the attribute is None (or unset, for
``classes_``, ``loss_``, ``loss_curve_`` and ``feature_names_in_``):

=========================  =======================  ================================
classes_                   bool, int, float, str    (K,), sorted and unique;
                                                    MLPClassifier only, and required
loss_, best_loss_          float64, ()
loss_curve_                float64, (n_epochs,)     stochastic solvers only
best_validation_score_     float64, ()              early stopping only
validation_scores_         float64, (n_epochs,)     early stopping only
validation_loss_curve_     float64, (n_epochs,)     early stopping only
feature_names_in_          str, (units[0],)         fitted on a DataFrame
optimizer_state            dtype of coef_0,         momentum or Adam state, so that
                           (0,), (P,) or (2 P,)     partial_fit after loading
n_updates                  int64, ()                continues where it stopped
current_learning_rate      float64, ()
=========================  =======================  ================================

``out_activation_`` and ``classes_`` agree with the estimator:

* MLPClassifier, ``"softmax"``: one unit per class, K = n_outputs_ (K = 1: a model
  of one class);
* MLPClassifier, ``"logistic"`` with n_outputs_ = 1: binary, K = 2, the unit being
  the probability of ``classes_[1]`` (scikit-learn's binary output);
* MLPClassifier, ``"logistic"`` with n_outputs_ = K: multilabel, ``classes_`` is
  0 .. K - 1;
* MLPRegressor: ``"identity"``, or ``"exp"`` (Poisson loss); no ``classes_``.

``optimizer_state`` is flat, P = sum over layers of (units[i] + 1) * units[i+1], in
the order coef_0, intercept_0, coef_1, intercept_1, ...; Adam's first moments come
first, its second moments after them; plain SGD has none (length 0).

``params_json`` is plain JSON; the one dict-valued hyperparameter, ``class_weight``,
is written as ``{"__items__": [[label, weight], ...]}`` because JSON object keys
are strings only. A ``random_state`` that is a RandomState instance is written as
null, and ``n_iter_no_change=inf`` as the string ``"inf"``.

Format version 1 (mlp_cy 0.1.0, one hidden layer, classifiers only) is still read.
It had ``W1, b1, W2, b2`` for coef_0, intercept_0, coef_1, intercept_1, a softmax
output and no ``estimator``, ``out_activation_`` or ``n_outputs_``; its
``loss_curve_`` was required. A binary model of version 1 had two softmax units: it
is read as the one logistic unit of version 2, W = W2[:, 1:] - W2[:, :1] and
b = b2[1:] - b2[:1], exactly so since sigmoid(z1 - z0) is the two-class softmax of
z1. Its optimizer state (velocities or moments of two units) has no such conversion
and is dropped: partial_fit after loading starts a new optimizer. Messages about a
version 1 file name the keys of version 2.

Files are written exactly under the path given (no ``.npz`` is appended, unlike
``numpy.savez(filename)``) and atomically: the archive goes to a temporary file in
the same directory, which replaces the path only once it is complete and synced.
A new file gets the mode that ``open()`` gives under the umask; a replaced file
keeps its mode.

Reading trusts nothing in the file. Every member must be stored (not compressed)
and its .npy header must declare exactly the bytes the member holds, and all
members together no more than the file's size; the declared dtypes and shapes are
checked against each other before any data is read. So loading needs memory in
proportion to the file's size, not to what the file claims, and every problem,
running out of memory included, is a ModelFileError with a short message. The
hyperparameters are checked against the estimator's class by
:func:`mlp_cy._state.restore`.
"""

import io
import json
import math
import numbers
import os
import re
import struct
import zipfile

import numpy as np

from . import _atomic

__all__ = ["ESTIMATORS", "FORMAT_NAME", "FORMAT_VERSION", "ModelFileError",
           "read_state", "write_state"]

#: Value of the ``format`` key of every model file.
FORMAT_NAME = "mlp_cy-model"
#: Version of the model file layout written by this mlp_cy; it reads this and older.
FORMAT_VERSION = 2
#: The estimators a model file may hold, by class name.
ESTIMATORS = ("MLPClassifier", "MLPRegressor")
_OUT_ACTIVATIONS = {"MLPClassifier": ("softmax", "logistic"),
                    "MLPRegressor": ("identity", "exp")}

# Keys of format version 2 besides the layers' coef_<i> and intercept_<i>.
_STRINGS = ("mlp_cy_version", "params_json", "estimator", "out_activation_")
_COUNTS = ("n_outputs_", "n_features_in_", "n_iter_", "t_", "no_improvement_count")
_REQUIRED = frozenset(("format", "format_version", *_STRINGS, *_COUNTS))
# Absent when the attribute is None or unset.
_FLOAT_SCALARS = ("loss_", "best_loss_", "best_validation_score_")
_FLOAT_CURVES = ("loss_curve_", "validation_scores_", "validation_loss_curve_")
_OPTIMIZER = ("optimizer_state", "n_updates", "current_learning_rate")
_OPTIONAL = frozenset(("classes_", *_FLOAT_SCALARS, *_FLOAT_CURVES, "feature_names_in_",
                       *_OPTIMIZER))
_LAYER_KEY = re.compile(r"(coef|intercept)_(0|[1-9][0-9]{0,5})\Z")
# A bound on depth, so that a file's members are bounded too.
_MAX_LAYERS = 256

# Format version 1: one hidden layer, its weights under other names.
_V1_WEIGHTS = {"W1": "coef_0", "b1": "intercept_0", "W2": "coef_1", "b2": "intercept_1"}
_V1_REQUIRED = frozenset(("format", "format_version", "mlp_cy_version", "params_json",
                          *_V1_WEIGHTS, "classes_", "n_features_in_", "n_iter_", "t_",
                          "loss_curve_", "no_improvement_count"))
_V1_KEYS = _V1_REQUIRED | _OPTIONAL

# The file's names of the state's (the estimator's) private attributes.
_PRIVATE = {"_no_improvement_count": "no_improvement_count",
            "_optimizer_state": "optimizer_state", "_n_updates": "n_updates",
            "_learning_rate": "current_learning_rate"}

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# Label kinds that np.load reads without pickle: bool, int, uint, float, str, bytes.
_LABEL_KINDS = "biufUS"

# Bounds on what a file may declare, checked before anything is read. A zip
# directory takes about 100 bytes a member.
_MAX_MEMBERS = 2 * _MAX_LAYERS + len(_REQUIRED) + len(_OPTIONAL)
_MAX_DIRECTORY_SIZE = 128 * 1024
_MAX_NPY_HEADER = 10000         # numpy's own limit; ours are 128 bytes
_NPY_MAGIC = b"\x93NUMPY"
_CHUNK_SIZE = 1 << 20


class ModelFileError(ValueError):
    """Raised when a file is not a valid mlp_cy model file.

    The message names the file and says what is wrong with it: not an .npz
    archive, truncated, pickled content, compressed or unknown members, sizes that
    do not add up, a missing key, a newer format version, inconsistent shapes,
    non-finite weights, hyperparameters the estimator refuses, or arrays that do not
    fit in memory.
    """


def __getattr__(name):
    # mlp_cy 0.1's names for saving and loading estimators, which live in
    # _estimator_files now: this module knows files and states, not estimators.
    if name in ("load", "save_model"):
        from . import _estimator_files
        return getattr(_estimator_files, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Writing --------------------------------------------------------------------------

def write_state(path, state):
    """Write an estimator's state to ``path``, atomically and without pickle.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write, exactly as given: no ``.npz`` suffix is appended. An
        existing file is replaced only once the new one is completely written.
    state : dict
        What :func:`mlp_cy._state.capture` returns: ``"estimator"`` (a name in
        ESTIMATORS), ``"params"`` (``get_params(deep=False)``) and the fitted
        attributes by name; ``coefs_`` and ``intercepts_`` are lists of L arrays,
        (units[i], units[i+1]) and (units[i+1],). An optional attribute that is None
        or absent is not written.

    Raises
    ------
    ValueError
        If the state cannot be stored: object labels that are not all strings,
        weights that are not float32/float64 of one dtype, non-finite weights,
        shapes that do not agree, or hyperparameters that are not JSON values.
    """
    arrays = _to_arrays(state)
    try:
        _check_arrays(arrays)
    except ModelFileError as exc:
        raise ValueError(f"The model cannot be saved: {exc}") from None
    _atomic_write(os.fspath(path), arrays)


def _to_arrays(state):
    coefs, intercepts = list(state["coefs_"]), list(state["intercepts_"])
    if not 1 <= len(coefs) <= _MAX_LAYERS or len(intercepts) != len(coefs):
        raise ValueError(
            f"The model cannot be saved: it has {len(coefs)} coefs_ and "
            f"{len(intercepts)} intercepts_; model files hold 1 to {_MAX_LAYERS} layers "
            "of one of each.")
    weights = [np.asarray(a) for a in (*coefs, *intercepts)]
    dtypes = {a.dtype for a in weights}
    if len(dtypes) != 1 or weights[0].dtype not in _FLOAT_DTYPES:
        raise ValueError(
            "The model cannot be saved: coefs_ and intercepts_ must all be float32 or "
            f"all float64, got {sorted({str(a.dtype) for a in weights})}."
        )
    from . import __version__

    arrays = {
        "format": np.array(FORMAT_NAME),
        "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
        "mlp_cy_version": np.array(__version__),
        "estimator": np.array(str(state["estimator"])),
        "params_json": np.array(_params_to_json(state["params"])),
        "out_activation_": np.array(str(state["out_activation_"])),
    }
    for i, (coef, intercept) in enumerate(zip(weights[:len(coefs)],
                                              weights[len(coefs):])):
        arrays[f"coef_{i}"] = np.ascontiguousarray(coef)
        arrays[f"intercept_{i}"] = np.ascontiguousarray(intercept)
    if state.get("classes_") is not None:
        arrays["classes_"] = _labels_to_array(state["classes_"])
    for key in ("n_outputs_", "n_features_in_", "n_iter_", "t_"):
        arrays[key] = np.array(state[key], dtype=np.int64)
    arrays["no_improvement_count"] = np.array(state.get("_no_improvement_count", 0),
                                              dtype=np.int64)
    for key in _FLOAT_SCALARS:
        if state.get(key) is not None:
            arrays[key] = np.array(state[key], dtype=np.float64)
    for key in _FLOAT_CURVES:
        if state.get(key) is not None:
            arrays[key] = np.asarray(state[key], dtype=np.float64).reshape(-1)
    if state.get("feature_names_in_") is not None:
        arrays["feature_names_in_"] = np.asarray(state["feature_names_in_"]).astype(str)
    if state.get("_optimizer_state") is not None:
        arrays["optimizer_state"] = np.ascontiguousarray(state["_optimizer_state"])
        arrays["n_updates"] = np.array(state["_n_updates"], dtype=np.int64)
        arrays["current_learning_rate"] = np.array(state["_learning_rate"], np.float64)
    return arrays


def _params_to_json(params):
    def convert(name, value):
        if value is None or isinstance(value, (bool, str)):
            return value
        if name == "n_iter_no_change" and value == math.inf:
            return "inf"    # never stop for lack of improvement; JSON has no infinity
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


def _params_from_json(value):
    """The hyperparameters of ``params_json``, with _params_to_json's encodings undone."""
    try:
        params = json.loads(str(value))
    except (ValueError, RecursionError) as exc:
        raise ModelFileError(f"'params_json' is not valid JSON ({_short(exc)})") \
            from exc
    if not isinstance(params, dict):
        raise ModelFileError("'params_json' is not a JSON object")
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
        elif name == "n_iter_no_change" and value == "inf":
            value = math.inf
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
    with _atomic.atomic_writer(path, suffix=".tmp") as f:
        _write_npz(f, arrays)


def _write_npz(f, arrays):
    # A file object, not a name: numpy would append ".npz" to a name without it.
    np.savez(f, **arrays)


# Reading --------------------------------------------------------------------------

def read_state(path):
    """Read and check the state that a model file holds.

    The archive is read member by member, each by its exact name ``<key>.npy``, and
    nothing in it is trusted: pickled data is refused before any of it is
    unpickled; a compressed member is refused before it is inflated; every .npy
    header must declare exactly the bytes its member holds, and the dtypes and
    shapes they declare are checked against each other before any data is read.
    Every value is then checked. Reading therefore needs memory in proportion to
    the file's size, not to what the file claims. A file of format version 1 is
    read as version 2 (see the module's docstring).

    Parameters
    ----------
    path : str or os.PathLike
        The model file, exactly as named (no ``.npz`` is appended).

    Returns
    -------
    state : dict
        ``"estimator"`` (a name in ESTIMATORS), ``"params"`` (the hyperparameters,
        decoded from JSON but not checked against the estimator: that is
        :func:`mlp_cy._state.restore`'s job), ``"mlp_cy_version"`` (of the writer)
        and the fitted attributes by name, as the estimator holds them: arrays
        that the state owns, lists of float for the curves, Python ints and floats.

    Raises
    ------
    ModelFileError
        If the file is not a valid mlp_cy model file, was written in a newer
        format version, or does not fit in memory. The message names the file and
        says what is wrong, briefly.
    OSError
        If the file cannot be opened (e.g. FileNotFoundError), or is not a
        regular file (a FIFO, a device: refused at once, without waiting).
    """
    path = os.fspath(path)
    with _atomic.open_regular(path) as f:
        try:
            arrays, version = _read_arrays(f)
            _check_arrays(arrays)
            state = _to_state(arrays)
            if version == 1 and state["classes_"].shape[0] == 2:
                _binary_softmax_to_logistic(state)
            return state
        except ModelFileError as exc:
            raise ModelFileError(f"{path!r} is not a valid mlp_cy model file: {exc}") \
                from exc.__cause__
        except MemoryError:
            raise ModelFileError(
                f"{path!r} could not be loaded: its arrays do not fit in the memory "
                "available") from None


def _short(value, limit=200):
    """``str(value)`` on one line, cut to ``limit`` characters: file content can be
    any size."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _some(names, limit=5):
    """A list of names for a message: the first ``limit`` ones, each shortened."""
    shown = [_short(name, 60) for name in names[:limit]]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"{shown}{more}"


def _read_arrays(f):
    """The arrays of the archive ``f`` under format 2's keys, and its format version."""
    size = os.fstat(f.fileno()).st_size
    magic = f.read(len(_NPY_MAGIC))
    if not magic:
        raise ModelFileError("it is empty")
    if magic == _NPY_MAGIC:  # refused without reading it: it may claim terabytes
        raise ModelFileError("it is a single .npy array, not an .npz archive")
    if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        if magic.startswith(b"\x80"):      # pickle's PROTO opcode
            raise ModelFileError("it is a pickle, not an .npz archive: mlp_cy never "
                                 "unpickles; save models with mlp_cy's save()")
        raise ModelFileError("it is not an .npz archive")
    _check_directory(f, size)
    try:
        f.seek(0)
        archive = zipfile.ZipFile(f)
    except Exception as exc:   # BadZipFile, NotImplementedError, EOFError, ...
        raise ModelFileError(
            f"it is truncated or not an .npz archive ({_short(exc)})") from exc
    with archive:
        members = _members(archive, size)
        arrays = {}
        if "format" not in members:
            _check_format(None)
        arrays["format"] = _read_member(archive, members["format"], "format")
        _check_format(arrays["format"])
        if "format_version" not in members:
            raise ModelFileError("the key 'format_version' is missing")
        arrays["format_version"] = _read_member(archive, members["format_version"],
                                                "format_version")
        version = _check_version(arrays["format_version"])
        required, known = _keys(version, members)
        missing = sorted(required - set(members))
        if missing:
            raise ModelFileError(
                f"the keys {_some(missing)} are missing (truncated or edited file?)"
            )
        unknown = sorted(members[key].filename for key in set(members) - known)
        unknown += sorted(info.filename for info in archive.infolist()
                          if not info.filename.endswith(".npy"))
        if unknown:
            raise ModelFileError(
                f"it has members {_some(unknown)} that format version {version} "
                "does not define (edited file?)"
            )
        # Every header first: declared dtypes and shapes are checked before any data
        # is read, so that a 2 GiB coef_0 that does not fit intercept_0 is never read.
        headers = {key: _guarded(key, _npy_header, archive, members[key], key)
                   for key in sorted(set(members) - set(arrays))}
        _check_layout(_as_version_2({**arrays, **headers}, version))
        for key, header in headers.items():
            arrays[key] = _guarded(key, _npy_data, archive, members[key], key, header)
    return _as_version_2(arrays, version), version


def _keys(version, members):
    """(required, known) keys of a file of ``version`` with these members."""
    if version == 1:
        return _V1_REQUIRED, _V1_KEYS
    # The layers are those that the members name: coef_0 .. coef_{L-1}, and
    # intercepts as many; a gap or a missing twin is a missing key.
    indices = [int(m.group(2)) for m in map(_LAYER_KEY.match, members) if m]
    n_layers = max(indices, default=0) + 1
    if n_layers > _MAX_LAYERS:
        raise ModelFileError(
            f"it has a member of layer {n_layers - 1}; model files have at most "
            f"{_MAX_LAYERS} layers (edited file?)")
    layers = {f"{kind}_{i}" for i in range(n_layers) for kind in ("coef", "intercept")}
    return _REQUIRED | layers, _REQUIRED | _OPTIONAL | layers


def _as_version_2(arrays, version):
    """The arrays (or headers) of a file under format 2's keys.

    Format 1 had one hidden layer, under other names, and a softmax output.
    """
    if version != 1:
        return arrays
    upgraded = {_V1_WEIGHTS.get(key, key): value for key, value in arrays.items()}
    W2 = arrays.get("W2")
    upgraded["estimator"] = np.array("MLPClassifier")
    upgraded["out_activation_"] = np.array("softmax")
    # A W2 of the wrong shape fails _check_layout before n_outputs_ is compared.
    upgraded["n_outputs_"] = np.array(
        W2.shape[-1] if W2 is not None and W2.ndim == 2 else 0, dtype=np.int64)
    return upgraded


def _binary_softmax_to_logistic(state):
    """Turn format 1's two softmax units into format 2's one logistic unit, in place.

    sigmoid(z1 - z0) = exp(z1) / (exp(z0) + exp(z1)): the probability of classes_[1]
    is the same. The optimizer's state, the velocities or moments of two units, has
    no such conversion: it is dropped, and partial_fit starts a new optimizer.
    """
    W, b = state["coefs_"][-1], state["intercepts_"][-1]
    W, b = W[:, 1:2] - W[:, 0:1], b[1:2] - b[0:1]
    if not (np.isfinite(W).all() and np.isfinite(b).all()):
        raise ModelFileError("its binary output layer overflows when converted to one "
                             "logistic unit")
    state["coefs_"][-1], state["intercepts_"][-1] = np.ascontiguousarray(W), b
    state["out_activation_"] = "logistic"
    state["n_outputs_"] = 1
    for key in ("_optimizer_state", "_n_updates", "_learning_rate"):
        state.pop(key, None)


def _check_directory(f, size):
    """Refuse a zip directory too large for a model file, before zipfile parses it.

    np.savez writes no zip comment, so the end record is the file's last 22 bytes;
    a ZIP64 end record, if any, comes just before its locator, before that.
    """
    if size < 22:
        raise ModelFileError("it is truncated (shorter than a zip end record)")
    f.seek(size - 22)
    end = f.read(22)
    if end[:4] != b"PK\x05\x06" or end[20:22] != b"\x00\x00":
        raise ModelFileError(
            "it is truncated or not an .npz archive written by numpy (no zip end "
            "record at its end)")
    n_members, directory_size = struct.unpack("<HI", end[10:16])
    records = []
    if size >= 22 + 20 + 56:
        f.seek(size - 22 - 20)
        locator = f.read(20)
        if locator[:4] == b"PK\x06\x07":
            # Python versions differ on where they look for the ZIP64 record: check
            # both places, and every record found.
            for offset in (size - 22 - 20 - 56, struct.unpack("<Q", locator[8:16])[0]):
                if 0 <= offset <= size - 56:
                    f.seek(offset)
                    record = f.read(56)
                    if record[:4] == b"PK\x06\x06":
                        records.append(struct.unpack("<QQ", record[32:48]))
    if records:
        # The end record's saturated fields (0xFFFF, 0xFFFFFFFF) defer to ZIP64's.
        n_members = max([n for n, _ in records]
                        + ([n_members] if n_members != 0xFFFF else []))
        directory_size = max([d for _, d in records] + (
            [directory_size] if directory_size != 0xFFFFFFFF else []))
    if n_members > _MAX_MEMBERS or directory_size > _MAX_DIRECTORY_SIZE:
        raise ModelFileError(
            f"its zip directory declares {n_members} members in {directory_size} "
            f"bytes; a model file has at most {_MAX_MEMBERS} members (edited file, "
            "or not a model file?)")


def _members(archive, size):
    """{key: ZipInfo} of the members named ``<key>.npy``, after checks of the zip."""
    infos = archive.infolist()
    if len(infos) > _MAX_MEMBERS:
        raise ModelFileError(
            f"it has {len(infos)} members; a model file has at most {_MAX_MEMBERS}")
    names = [info.filename for info in infos]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ModelFileError(
            f"the members {_some(repeated)} appear more than once (edited file?)")
    # Stored members take their size in the file; more than the file holds means
    # members that overlap (a zip bomb) or a corrupt directory.
    declared = sum(info.compress_size for info in infos)
    if declared > size:
        raise ModelFileError(
            f"its members declare {declared} bytes in all, more than the file's "
            f"{size} bytes (corrupt or malicious file)")
    return {info.filename[:-len(".npy")]: info for info in infos
            if info.filename.endswith(".npy")}



def _guarded(key, read, *args):
    """Call ``read(*args)``, turning whatever reading a member raises into
    ModelFileError."""
    try:
        return read(*args)
    except ModelFileError:
        raise
    except MemoryError:
        raise ModelFileError(
            f"the array {key!r} does not fit in the memory available") from None
    except Exception as exc:   # zipfile, numpy's header parser (TokenError), ...
        raise ModelFileError(
            f"the array {key!r} is truncated or corrupt ({_short(exc)})") from exc


class _Header:
    """What a member's .npy header declares: enough for _check_layout."""

    def __init__(self, dtype, shape, fortran_order, offset):
        self.dtype, self.shape, self.fortran_order, self.offset = \
            dtype, shape, fortran_order, offset
        self.ndim = len(shape)
        self.nbytes = math.prod(shape) * dtype.itemsize


def _npy_header(archive, info, key):
    """Read and check the .npy header of a member, not its data."""
    name = _short(info.filename, 60)
    if info.flag_bits & 0x1:
        raise ModelFileError(f"the member {name!r} is encrypted")
    if info.compress_type != zipfile.ZIP_STORED:
        # np.savez stores: a model file never needs inflating, and inflating is how
        # a small file makes gigabytes.
        raise ModelFileError(
            f"the member {name!r} is compressed (zip method {info.compress_type}); "
            "mlp_cy's save stores members uncompressed, so it was not inflated "
            "(edited file?)")
    if info.file_size != info.compress_size:
        raise ModelFileError(
            f"the member {name!r} declares {info.file_size} bytes but stores "
            f"{info.compress_size} (corrupt file)")
    with archive.open(info) as member:
        prefix = _atomic.read_exactly(member, len(_NPY_MAGIC) + 2)
        if len(prefix) < len(_NPY_MAGIC) + 2 or prefix[:len(_NPY_MAGIC)] != _NPY_MAGIC:
            raise ModelFileError(f"the member {name!r} is not a .npy array")
        version = tuple(prefix[len(_NPY_MAGIC):])
        if version not in ((1, 0), (2, 0)):
            raise ModelFileError(
                f"the array {key!r} has .npy format version {version[0]}.{version[1]}, "
                "which model files do not use")
        length_format = "<H" if version == (1, 0) else "<I"
        length_bytes = _atomic.read_exactly(member, struct.calcsize(length_format))
        if len(length_bytes) < struct.calcsize(length_format):
            raise ModelFileError(f"the array {key!r} is truncated in its .npy header")
        length = struct.unpack(length_format, length_bytes)[0]
        if length > _MAX_NPY_HEADER:
            raise ModelFileError(
                f"the array {key!r} has a .npy header of {length} bytes, more than the "
                f"{_MAX_NPY_HEADER} that numpy accepts (edited file?)")
        text = _atomic.read_exactly(member, length)
        if len(text) < length:
            raise ModelFileError(f"the array {key!r} is truncated in its .npy header")
    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                   else np.lib.format.read_array_header_2_0)
    shape, fortran_order, dtype = read_header(io.BytesIO(length_bytes + text),
                                              max_header_size=_MAX_NPY_HEADER)
    if dtype.hasobject:
        raise ModelFileError(
            f"the array {key!r} holds pickled Python objects, which model files "
            "never do; it was not loaded (the file may be malicious)")
    if dtype.names is not None or dtype.subdtype is not None:
        raise ModelFileError(
            f"the array {key!r} has the structured dtype {_short(dtype, 60)}, which "
            "model files never use")
    if any(d < 0 for d in shape):
        raise ModelFileError(f"the array {key!r} declares the shape {_short(shape, 80)}")
    header = _Header(dtype, shape, fortran_order,
                     len(_NPY_MAGIC) + 2 + len(length_bytes) + length)
    available = info.file_size - header.offset
    if header.nbytes != available:
        raise ModelFileError(
            f"the array {key!r} claims shape {_short(shape, 80)} of {dtype} "
            f"({header.nbytes} bytes) but holds {available} bytes (truncated or "
            "edited file?)")
    return header


def _read_member(archive, info, key):
    """Header and data of one member (one that needs no check against the others)."""
    header = _guarded(key, _npy_header, archive, info, key)
    return _guarded(key, _npy_data, archive, info, key, header)


def _npy_data(archive, info, key, header):
    """Read a member's data, whose size its header declares and _npy_header checked."""
    shape = header.shape[::-1] if header.fortran_order else header.shape
    if header.nbytes == 0:
        array = np.zeros(shape, dtype=header.dtype)
    else:
        array = np.empty(shape, dtype=header.dtype)
        flat = array.reshape(-1).view(np.uint8)
        with archive.open(info) as member:
            _atomic.read_exactly(member, header.offset)
            done = 0
            while done < header.nbytes:
                chunk = member.read(min(_CHUNK_SIZE, header.nbytes - done))
                if not chunk:
                    raise ModelFileError(f"the array {key!r} is truncated")
                flat[done:done + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
                done += len(chunk)
            member.read(1)  # at the end: zipfile checks the CRC
    return array.T if header.fortran_order else array



def _check_format(value):
    if value is None:
        raise ModelFileError(
            "it has no 'format' key, so it was not written by mlp_cy's save"
        )
    if value.shape != () or value.dtype.kind != "U" or str(value) != FORMAT_NAME:
        raise ModelFileError(
            f"its 'format' is {_short(repr(value), 100)}, not {FORMAT_NAME!r}"
        )


def _check_version(value):
    """The format version that ``value`` holds, if this mlp_cy reads it."""
    if value.shape != () or value.dtype.kind not in "iu":
        raise ModelFileError(
            f"its 'format_version' is {_short(repr(value), 100)}, not an integer")
    version = int(value)
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"it has model format version {version}, written by a newer mlp_cy; this "
            f"mlp_cy reads versions up to {FORMAT_VERSION}: upgrade mlp_cy to load it"
        )
    if version < 1:
        raise ModelFileError(f"its model format version {version} is not valid")
    return version


def _check_scalar(arrays, key, kind):
    value = arrays[key]
    if value.shape != () or value.dtype.kind not in kind:
        expected = "an integer" if kind == "iu" else "a float"
        raise ModelFileError(
            f"{key!r} must be {expected} scalar, got dtype {value.dtype} and shape "
            f"{_short(value.shape, 80)}"
        )


def _layers(arrays):
    """([coef_0, ...], [intercept_0, ...]) of a file's arrays (or headers)."""
    n_layers = sum(1 for key in arrays if key.startswith("coef_"))
    return ([arrays[f"coef_{i}"] for i in range(n_layers)],
            [arrays[f"intercept_{i}"] for i in range(n_layers)])


def _units(coefs):
    """The layer widths (n_features_in_, *hidden_layer_sizes, n_outputs_)."""
    return [coefs[0].shape[0]] + [coef.shape[1] for coef in coefs]


def _n_parameters(units):
    """P: the weights and biases of all layers, the length of one optimizer moment."""
    return sum((n_in + 1) * n_out for n_in, n_out in zip(units[:-1], units[1:]))


def _check_layout(arrays):
    """Validate dtypes and shapes only; raise ModelFileError on the first problem.

    ``arrays`` maps keys to arrays, or to the _Header of their members: this runs on
    what the .npy headers declare, before any data is read.
    """
    for key in _STRINGS:
        if arrays[key].shape != () or arrays[key].dtype.kind != "U":
            raise ModelFileError(f"{key!r} must be a string scalar")
    coefs, intercepts = _layers(arrays)
    weights = coefs + intercepts
    dtype = coefs[0].dtype.newbyteorder("=")
    if dtype not in _FLOAT_DTYPES or len({a.dtype.newbyteorder("=")
                                          for a in weights}) != 1:
        raise ModelFileError(
            f"the coef_<i> and intercept_<i> must all be float32 or all float64, got "
            f"{_some(sorted({str(a.dtype) for a in weights}))}"
        )
    for i, (coef, intercept) in enumerate(zip(coefs, intercepts)):
        if coef.ndim != 2 or intercept.ndim != 1:
            raise ModelFileError(
                f"'coef_{i}' and 'intercept_{i}' have {coef.ndim} and {intercept.ndim} "
                "dimensions; expected 2 and 1"
            )
    units = _units(coefs)
    for i, (coef, intercept) in enumerate(zip(coefs, intercepts)):
        if coef.shape[0] != units[i] or intercept.shape != (units[i + 1],) \
                or min(coef.shape) < 1:
            raise ModelFileError(
                f"inconsistent shapes: 'coef_{i}' {_short(coef.shape, 40)} and "
                f"'intercept_{i}' {_short(intercept.shape, 40)} after a layer of "
                f"{units[i]} units; expected ({units[i]}, n) and (n,), n >= 1"
            )
    for key in _COUNTS:
        _check_scalar(arrays, key, "iu")
    classes = arrays.get("classes_")
    if classes is not None and (classes.ndim != 1
                                or classes.dtype.kind not in _LABEL_KINDS):
        raise ModelFileError(
            f"'classes_' must be a 1-D array of numbers or strings, got dtype "
            f"{classes.dtype} and shape {_short(classes.shape, 80)}"
        )
    for key in _FLOAT_SCALARS:
        if key in arrays:
            _check_scalar(arrays, key, "f")
    for key in _FLOAT_CURVES:
        curve = arrays.get(key)
        if curve is not None and (curve.ndim != 1 or curve.dtype.kind != "f"):
            raise ModelFileError(f"{key!r} must be a 1-D array of finite floats")
    names = arrays.get("feature_names_in_")
    if names is not None and (names.dtype.kind != "U" or names.shape != (units[0],)):
        raise ModelFileError(
            f"'feature_names_in_' must hold {units[0]} strings, got dtype "
            f"{names.dtype} and shape {_short(names.shape, 80)}"
        )
    present = [key in arrays for key in _OPTIMIZER]
    if any(present):
        if not all(present):
            raise ModelFileError(
                f"the keys {list(_OPTIMIZER)} must be all present or all absent")
        state = arrays["optimizer_state"]
        if state.ndim != 1 or state.dtype.newbyteorder("=") != dtype:
            raise ModelFileError(
                f"'optimizer_state' must be a 1-D array of finite {dtype} values like "
                f"the weights, got dtype {state.dtype} and shape "
                f"{_short(state.shape, 80)}"
            )
        n_parameters = _n_parameters(units)
        if state.shape[0] not in (0, n_parameters, 2 * n_parameters):
            raise ModelFileError(
                f"'optimizer_state' holds {state.shape[0]} values; a network of "
                f"{n_parameters} weights and biases has 0 (plain SGD), {n_parameters} "
                f"(momentum) or {2 * n_parameters} (Adam)"
            )
        _check_scalar(arrays, "n_updates", "iu")
        _check_scalar(arrays, "current_learning_rate", "f")


def _check_arrays(arrays):
    """Validate dtypes, shapes and values; raise ModelFileError on the first problem."""
    _check_layout(arrays)
    coefs, intercepts = _layers(arrays)
    units = _units(coefs)
    if not all(np.isfinite(a).all() for a in coefs + intercepts):
        raise ModelFileError("the weights contain NaN or infinite values")
    estimator = str(arrays["estimator"])
    if estimator not in ESTIMATORS:
        raise ModelFileError(
            f"its 'estimator' is {_short(repr(estimator), 80)}; model files hold "
            f"{' or '.join(ESTIMATORS)}")
    n_outputs = int(arrays["n_outputs_"])
    if n_outputs != units[-1]:
        raise ModelFileError(
            f"'n_outputs_' is {n_outputs} but the last layer has {units[-1]} outputs")
    _check_output(estimator, str(arrays["out_activation_"]), n_outputs,
                  arrays.get("classes_"))
    if arrays["n_features_in_"][()] != units[0]:
        raise ModelFileError(
            f"'n_features_in_' is {arrays['n_features_in_']} but 'coef_0' has "
            f"{units[0]} rows"
        )
    for key in ("n_iter_", "t_", "no_improvement_count"):
        if arrays[key][()] < 0:
            raise ModelFileError(f"{key!r} must not be negative")
    for key in _FLOAT_SCALARS:
        if key in arrays and np.isnan(arrays[key][()]):
            raise ModelFileError(f"{key!r} is NaN")
    for key in _FLOAT_CURVES:
        curve = arrays.get(key)
        if curve is not None and not np.isfinite(curve).all():
            raise ModelFileError(f"{key!r} must be a 1-D array of finite floats")
    if "optimizer_state" in arrays:
        if not np.isfinite(arrays["optimizer_state"]).all():
            raise ModelFileError(
                f"'optimizer_state' must be a 1-D array of finite {coefs[0].dtype} "
                "values like the weights")
        if arrays["n_updates"][()] < 0:
            raise ModelFileError("'n_updates' must not be negative")
        rate = arrays["current_learning_rate"][()]
        if not (np.isfinite(rate) and rate > 0):
            raise ModelFileError("'current_learning_rate' must be a positive number")


def _check_output(estimator, activation, n_outputs, classes):
    """The output layer's activation and the labels agree with the estimator."""
    if activation not in _OUT_ACTIVATIONS[estimator]:
        raise ModelFileError(
            f"its 'out_activation_' is {_short(repr(activation), 40)}; an {estimator} "
            f"has {' or '.join(map(repr, _OUT_ACTIVATIONS[estimator]))}")
    if estimator == "MLPRegressor":
        if classes is not None:
            raise ModelFileError("it has 'classes_', which an MLPRegressor has not")
        return
    if classes is None:
        raise ModelFileError("the key 'classes_' is missing (an MLPClassifier has it)")
    if classes.dtype.kind == "f" and not np.isfinite(classes).all():
        raise ModelFileError("'classes_' contains NaN or infinite labels")
    if not np.array_equal(np.unique(classes), classes):
        raise ModelFileError("'classes_' must be sorted and free of duplicates")
    n_classes = classes.shape[0]
    if activation == "softmax" and n_classes != n_outputs:
        raise ModelFileError(
            f"{n_classes} classes in 'classes_' for a softmax output of {n_outputs} "
            "units; a softmax has one unit per class"
        )
    binary = n_outputs == 1 and n_classes == 2
    multilabel = n_classes == n_outputs and np.array_equal(classes,
                                                           np.arange(n_outputs))
    if activation == "logistic" and not (binary or multilabel):
        raise ModelFileError(
            f"{n_classes} classes in 'classes_' for a logistic output of {n_outputs} "
            f"unit{'s' if n_outputs > 1 else ''}; expected 2 classes for 1 unit "
            "(binary), or the classes 0 .. "
            "n_outputs_ - 1 (multilabel)"
        )


def _native(array):
    """A writable, C-contiguous array in native byte order that the state owns.

    The arrays read from the file are used as they are when they already are that,
    so that loading does not hold two copies of the weights.
    """
    return np.require(array, dtype=array.dtype.newbyteorder("="),
                      requirements=["C", "W", "O"])


def _to_state(arrays):
    """The state of checked ``arrays``: the estimator's attributes, as it holds them."""
    coefs, intercepts = _layers(arrays)
    state = {
        "estimator": str(arrays["estimator"]),
        "params": _params_from_json(arrays["params_json"]),
        "mlp_cy_version": str(arrays["mlp_cy_version"]),
        "coefs_": [_native(a) for a in coefs],
        "intercepts_": [_native(a) for a in intercepts],
        "out_activation_": str(arrays["out_activation_"]),
    }
    for key in ("n_outputs_", "n_features_in_", "n_iter_", "t_"):
        state[key] = int(arrays[key])
    state["_no_improvement_count"] = int(arrays["no_improvement_count"])
    if "classes_" in arrays:
        state["classes_"] = _native(arrays["classes_"])
    if "loss_" in arrays:
        state["loss_"] = float(arrays["loss_"])
    for key in ("best_loss_", "best_validation_score_"):
        state[key] = float(arrays[key]) if key in arrays else None
    for key in ("validation_scores_", "validation_loss_curve_"):
        state[key] = [float(v) for v in arrays[key]] if key in arrays else None
    if "loss_curve_" in arrays:
        state["loss_curve_"] = [float(v) for v in arrays["loss_curve_"]]
    if "feature_names_in_" in arrays:
        # scikit-learn's convention: an object array of str.
        state["feature_names_in_"] = arrays["feature_names_in_"].astype(object)
    if "optimizer_state" in arrays:
        state["_optimizer_state"] = _native(arrays["optimizer_state"])
        state["_n_updates"] = int(arrays["n_updates"])
        state["_learning_rate"] = float(arrays["current_learning_rate"])
    return state
