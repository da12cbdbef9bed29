"""Model files: a fitted MLPClassifier as an .npz archive, without pickle.

A model file is a NumPy ``.npz`` archive (an uncompressed zip of ``.npy`` files)
written by :func:`numpy.savez`. It is read member by member, by exact name, with
:mod:`zipfile` and NumPy's ``.npy`` header parser; object arrays are refused, so
loading a file never unpickles anything nor runs code from it. It holds these keys
(format version 1), each in a member ``<key>.npy``:

=========================  =======================  ================================
key                        dtype, shape             content
=========================  =======================  ================================
format                     str, ()                  ``"mlp_cy-model"``
format_version             int64, ()                ``1``
mlp_cy_version             str, ()                  version of mlp_cy that wrote it
params_json                str, ()                  ``get_params()`` as a JSON object
W1, b1, W2, b2             float32 or float64       ``coefs_`` and ``intercepts_``:
                                                    (d, h), (h,), (h, K), (K,)
classes_                   bool, int, float, str    (K,), K >= 1, sorted and unique
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
null, and ``n_iter_no_change=inf`` as the string ``"inf"``.

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
running out of memory included, is a ModelFileError with a short message.
"""

import io
import json
import math
import numbers
import os
import struct
import zipfile

import numpy as np

from . import _atomic
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

# Bounds on what a file may declare, checked before anything is read. A model file
# has len(_KEYS) members at most, whose zip directory takes about 100 bytes each.
_MAX_MEMBERS = 64
_MAX_DIRECTORY_SIZE = 64 * 1024
_MAX_NPY_HEADER = 10000         # numpy's own limit; ours are 128 bytes
_NPY_MAGIC = b"\x93NUMPY"
_CHUNK_SIZE = 1 << 20


class ModelFileError(ValueError):
    """Raised when a file is not a valid mlp_cy model file.

    The message names the file and says what is wrong with it: not an .npz
    archive, truncated, pickled content, compressed or unknown members, sizes that
    do not add up, a missing key, a newer format version, inconsistent shapes,
    non-finite weights, or arrays that do not fit in memory.
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


# Loading --------------------------------------------------------------------------

def load(path):
    """Read a model file written by :meth:`MLPClassifier.save`.

    The archive is read member by member, each by its exact name ``<key>.npy``, and
    nothing in it is trusted: pickled data is refused before any of it is
    unpickled; a compressed member is refused before it is inflated; every .npy
    header must declare exactly the bytes its member holds, and the dtypes and
    shapes they declare are checked against each other before any data is read.
    Every value is then checked before the estimator is built. Loading therefore
    needs memory in proportion to the file's size, not to what the file claims.

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
    with _atomic.open_regular(path) as f:
        try:
            arrays = _read_arrays(f)
            _check_arrays(arrays)
            return _build(arrays)
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
        _check_version(arrays["format_version"])
        missing = sorted(_REQUIRED - set(members))
        if missing:
            raise ModelFileError(
                f"the keys {missing} are missing (truncated or edited file?)"
            )
        unknown = sorted(members[key].filename for key in set(members) - _KEYS)
        unknown += sorted(info.filename for info in archive.infolist()
                          if not info.filename.endswith(".npy"))
        if unknown:
            raise ModelFileError(
                f"it has members {_some(unknown)} that format version {FORMAT_VERSION} "
                "does not define (edited file?)"
            )
        # Every header first: declared dtypes and shapes are checked before any data
        # is read, so that a 2 GiB W1 that does not fit b1 is never read.
        headers = {key: _guarded(key, _npy_header, archive, members[key], key)
                   for key in sorted(set(members) - set(arrays))}
        _check_layout({**arrays, **headers})
        for key, header in headers.items():
            arrays[key] = _guarded(key, _npy_data, archive, members[key], key, header)
    return arrays


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
            f"bytes; a model file has at most {len(_KEYS)} members (edited file, "
            "or not a model file?)")


def _members(archive, size):
    """{key: ZipInfo} of the members named ``<key>.npy``, after checks of the zip."""
    infos = archive.infolist()
    if len(infos) > _MAX_MEMBERS:
        raise ModelFileError(
            f"it has {len(infos)} members; a model file has at most {len(_KEYS)}")
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
            "MLPClassifier.save stores members uncompressed, so it was not inflated "
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
            "it has no 'format' key, so it was not written by MLPClassifier.save"
        )
    if value.shape != () or value.dtype.kind != "U" or str(value) != FORMAT_NAME:
        raise ModelFileError(
            f"its 'format' is {_short(repr(value), 100)}, not {FORMAT_NAME!r}"
        )


def _check_version(value):
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


def _check_scalar(arrays, key, kind):
    value = arrays[key]
    if value.shape != () or value.dtype.kind not in kind:
        expected = "an integer" if kind == "iu" else "a float"
        raise ModelFileError(
            f"{key!r} must be {expected} scalar, got dtype {value.dtype} and shape "
            f"{_short(value.shape, 80)}"
        )


def _check_layout(arrays):
    """Validate dtypes and shapes only; raise ModelFileError on the first problem.

    ``arrays`` maps keys to arrays, or to the _Header of their members: this runs on
    what the .npy headers declare, before any data is read.
    """
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
    if classes.ndim != 1 or classes.dtype.kind not in _LABEL_KINDS:
        raise ModelFileError(
            f"'classes_' must be a 1-D array of numbers or strings, got dtype "
            f"{classes.dtype} and shape {_short(classes.shape, 80)}"
        )
    if classes.shape[0] != n_classes or n_classes < 1:
        raise ModelFileError(
            f"{classes.shape[0]} classes in 'classes_' for a network with {n_classes} "
            "outputs; both must be equal and at least 1"
        )
    for key in ("n_features_in_", "n_iter_", "t_", "no_improvement_count"):
        _check_scalar(arrays, key, "iu")
    for key in _FLOAT_SCALARS:
        if key in arrays:
            _check_scalar(arrays, key, "f")
    for key in ("loss_curve_", *_FLOAT_CURVES):
        curve = arrays.get(key)
        if curve is not None and (curve.ndim != 1 or curve.dtype.kind != "f"):
            raise ModelFileError(f"{key!r} must be a 1-D array of finite floats")
    names = arrays.get("feature_names_in_")
    if names is not None and (names.dtype.kind != "U" or names.shape != (n_features,)):
        raise ModelFileError(
            f"'feature_names_in_' must hold {n_features} strings, got dtype "
            f"{names.dtype} and shape {_short(names.shape, 80)}"
        )
    present = [key in arrays for key in _OPTIMIZER]
    if any(present):
        if not all(present):
            raise ModelFileError(
                f"the keys {list(_OPTIMIZER)} must be all present or all absent")
        state = arrays["optimizer_state"]
        if state.ndim != 1 or state.dtype.newbyteorder("=") != dtypes[0]:
            raise ModelFileError(
                f"'optimizer_state' must be a 1-D array of finite {dtypes[0]} values "
                f"like W1, got dtype {state.dtype} and shape {_short(state.shape, 80)}"
            )
        _check_scalar(arrays, "n_updates", "iu")
        _check_scalar(arrays, "current_learning_rate", "f")


def _check_arrays(arrays):
    """Validate dtypes, shapes and values; raise ModelFileError on the first problem."""
    _check_layout(arrays)
    W1, b1, W2, b2 = (arrays[k] for k in _WEIGHTS)
    n_features, n_hidden = W1.shape
    if not all(np.isfinite(a).all() for a in (W1, b1, W2, b2)):
        raise ModelFileError("the weights contain NaN or infinite values")
    classes = arrays["classes_"]
    if classes.dtype.kind == "f" and not np.isfinite(classes).all():
        raise ModelFileError("'classes_' contains NaN or infinite labels")
    if not np.array_equal(np.unique(classes), classes):
        raise ModelFileError("'classes_' must be sorted and free of duplicates")
    if arrays["n_features_in_"][()] != n_features:
        raise ModelFileError(
            f"'n_features_in_' is {arrays['n_features_in_']} but W1 has {n_features} rows"
        )
    for key in ("n_iter_", "t_", "no_improvement_count"):
        if arrays[key][()] < 0:
            raise ModelFileError(f"{key!r} must not be negative")
    for key in _FLOAT_SCALARS:
        if key in arrays and np.isnan(arrays[key][()]):
            raise ModelFileError(f"{key!r} is NaN")
    for key in ("loss_curve_", *_FLOAT_CURVES):
        curve = arrays.get(key)
        if curve is not None and not np.isfinite(curve).all():
            raise ModelFileError(f"{key!r} must be a 1-D array of finite floats")
    if "optimizer_state" in arrays:
        if not np.isfinite(arrays["optimizer_state"]).all():
            raise ModelFileError(
                f"'optimizer_state' must be a 1-D array of finite {W1.dtype} values "
                "like W1")
        if arrays["n_updates"][()] < 0:
            raise ModelFileError("'n_updates' must not be negative")
        rate = arrays["current_learning_rate"][()]
        if not (np.isfinite(rate) and rate > 0):
            raise ModelFileError("'current_learning_rate' must be a positive number")
    _parse_params(arrays["params_json"], n_hidden)


def _parse_params(value, n_hidden):
    try:
        params = json.loads(str(value))
    except (ValueError, RecursionError) as exc:
        raise ModelFileError(f"'params_json' is not valid JSON ({_short(exc)})") \
            from exc
    if not isinstance(params, dict):
        raise ModelFileError("'params_json' is not a JSON object")
    known = set(MLPClassifier().get_params(deep=False))
    unknown = sorted(set(params) - known)
    if unknown:
        raise ModelFileError(
            f"'params_json' has unknown hyperparameters {_some(unknown)}; known are "
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
        raise ModelFileError(f"bad hyperparameters in 'params_json': {_short(exc)}") \
            from exc
    if requested != n_hidden:
        raise ModelFileError(
            "'params_json' has hidden_layer_sizes="
            f"{_short(repr(estimator.hidden_layer_sizes), 80)} "
            f"but W1 has {n_hidden} hidden units"
        )
    return estimator


def _native(array):
    """A writable, C-contiguous array in native byte order that the model owns.

    The arrays read from the file are used as they are when they already are that,
    so that loading does not hold two copies of the weights.
    """
    return np.require(array, dtype=array.dtype.newbyteorder("="),
                      requirements=["C", "W", "O"])


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
