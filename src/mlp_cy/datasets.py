"""Dataset loaders: IDX files and the MNIST / Fashion-MNIST data sets.

This module is pure Python and needs only NumPy at run time.

* :func:`read_idx` and :func:`write_idx` read and write IDX files, the
  format in which MNIST and Fashion-MNIST are distributed, gzip-compressed
  or not.
* :func:`load_mnist` returns MNIST or Fashion-MNIST as NumPy arrays. It
  looks for the files in the data home, the user cache and the system data
  directories, and downloads them (checking their digests) only when they
  are found nowhere.
"""

import contextlib
import gzip
import hashlib
import math
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from http.client import HTTPException

import numpy as np

from . import _atomic

__all__ = [
    "MIRRORS",
    "ChecksumError",
    "DatasetNotFoundError",
    "IDXFormatError",
    "get_data_home",
    "load_mnist",
    "read_idx",
    "write_idx",
]


class IDXFormatError(ValueError):
    """Raised when a file is not a well-formed IDX file.

    The message names the file, says what is wrong with it and what to do.
    """


class ChecksumError(ValueError):
    """Raised when a downloaded file does not have the published digest."""


class DatasetNotFoundError(FileNotFoundError):
    """Raised when a data set is neither on disk nor downloadable.

    The message lists every directory that was searched, every URL that
    was tried and how to obtain the files.
    """


# --------------------------------------------------------------------------
# IDX format
# --------------------------------------------------------------------------

# IDX type code -> big-endian NumPy dtype of the data.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {dtype.newbyteorder("="): code for code, dtype in _IDX_DTYPES.items()}

_GZIP_MAGIC = b"\x1f\x8b"

# DEFLATE cannot expand data by more than a factor of 1032, so a gzip file
# of n bytes holds at most 1032 * n bytes: a header claiming more is a lie
# that can be rejected before anything is decompressed or allocated.
_MAX_DEFLATE_RATIO = 1032

_CHUNK_SIZE = 1 << 20


def _idx_error(path, problem, advice=None):
    if advice is None:
        advice = (
            "Check that this is an IDX (MNIST-format) file; if it was "
            "downloaded, delete it and download it again."
        )
    return IDXFormatError(f"{os.fspath(path)!r}: {problem}. {advice}")


def _read_header(f, path):
    """Parse an IDX header from the binary file ``f``.

    Returns
    -------
    dtype : numpy.dtype
        Big-endian dtype of the data.
    shape : tuple of int
        Shape of the data.
    offset : int
        Size of the header in bytes, i.e. the offset of the data.
    """
    head = _atomic.read_exactly(f, 4)
    if not head:
        raise _idx_error(path, "the file is empty (an IDX header was expected)")
    if len(head) < 4:
        raise _idx_error(
            path, f"the file ends after {len(head)} bytes, inside the IDX header"
        )
    if head[:2] != b"\x00\x00":
        raise _idx_error(
            path,
            f"bad magic number: the file starts with {head[:2].hex(' ')}, "
            "not with the two zero bytes of an IDX header",
        )
    code, ndim = head[2], head[3]
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise _idx_error(
            path, f"unknown IDX type code 0x{code:02X} (known codes: {known})"
        )
    if ndim < 1:
        raise _idx_error(path, "the IDX header declares 0 dimensions (at least 1)")
    raw_dims = _atomic.read_exactly(f, 4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise _idx_error(
            path,
            f"the file ends inside the IDX header, which declares {ndim} "
            f"dimensions ({4 + 4 * ndim} header bytes)",
        )
    shape = tuple(int(d) for d in np.frombuffer(raw_dims, dtype=">u4"))
    return _IDX_DTYPES[code], shape, 4 + 4 * ndim


def _size_error(path, dtype, shape, expected, actual, *, at_least=False):
    holds = f"at least {actual}" if at_least else f"{actual}"
    problem = (
        f"the IDX header declares shape {shape} of {dtype.newbyteorder('=').name}, "
        f"i.e. {expected} data bytes, but the file holds {holds}"
    )
    if actual < expected:
        advice = (
            "The file is truncated (an interrupted download or copy?) or its "
            "header is wrong; delete it and download or copy it again."
        )
    else:
        advice = (
            "The file has trailing data after the array, or its header is "
            "wrong; check where it came from, delete it and get it again."
        )
    return _idx_error(path, problem, advice)


def read_idx(path, *, mmap=False, max_bytes=None):
    """Read an array from an IDX file.

    IDX is the format of the MNIST and Fashion-MNIST files: a big-endian
    header (two zero bytes, a type code, the number of dimensions and one
    uint32 per dimension) followed by the data in big-endian C order.
    Gzip-compressed files are recognised by their content, whatever their
    name.

    The header is validated before any large allocation: the data size it
    declares must match the size of the file exactly, and be at most
    ``max_bytes``. Gzip files are decompressed incrementally and never
    beyond the size the header declares (which cannot exceed what DEFLATE
    can expand the file to), so a corrupt or malicious file cannot make the
    reader inflate more than that. Only regular files are read: a FIFO or a
    device is refused at once.

    Parameters
    ----------
    path : str or os.PathLike
        The file to read.
    mmap : bool, default=False
        If True, return a read-only :class:`numpy.memmap` of the data instead
        of reading it into memory, for out-of-core use. Only possible for
        uncompressed files. The memmap keeps the big-endian dtype of the
        file, which NumPy handles transparently. If the file is truncated
        while it is mapped, reading the missing part kills the process with
        SIGBUS: that is how memory mapping works; map only files that nothing
        shortens meanwhile.
    max_bytes : int, default=None
        If given, a file whose header declares more data bytes than this is
        refused before its data is read or decompressed: a bound for files
        whose size is known, like those of a data set.

    Returns
    -------
    array : ndarray of shape given by the header
        The data, in native byte order (unless ``mmap=True``).

    Raises
    ------
    IDXFormatError
        If the file is not a well-formed IDX file, declares more than
        ``max_bytes``, or its data do not fit in memory.
    ValueError
        If ``mmap=True`` and the file is gzip-compressed.
    OSError
        If the file cannot be opened, or is not a regular file.

    See Also
    --------
    write_idx : Write an array to an IDX file.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from mlp_cy.datasets import read_idx, write_idx
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = os.path.join(tmp, "a-idx2-int.gz")
    ...     write_idx(path, np.arange(6, dtype=np.int32).reshape(2, 3))
    ...     read_idx(path)
    array([[0, 1, 2],
           [3, 4, 5]], dtype=int32)
    """
    path = os.fspath(path)
    with _atomic.open_regular(path) as f:
        gzipped = f.read(2) == _GZIP_MAGIC
        f.seek(0)
        if gzipped:
            if mmap:
                raise ValueError(
                    f"{path!r} is gzip-compressed and cannot be memory-mapped; "
                    "decompress it first (e.g. `gunzip -k FILE`) and memory-map "
                    "the uncompressed file."
                )
            return _read_idx_gzip(f, path, max_bytes)

        file_size = os.fstat(f.fileno()).st_size
        dtype, shape, offset = _read_header(f, path)
        expected = math.prod(shape) * dtype.itemsize
        _check_max_bytes(path, dtype, shape, expected, max_bytes)
        if file_size - offset != expected:
            raise _size_error(path, dtype, shape, expected, file_size - offset)
        _check_representable(path, dtype, shape)
        if mmap:
            # The open file, not the path: what was checked is what gets mapped.
            return np.memmap(f, dtype=dtype, mode="r", offset=offset, shape=shape)
        try:
            array = np.empty(shape, dtype=dtype)
        except MemoryError:
            raise _memory_error(path, dtype, shape, expected) from None
        n_read = f.readinto(memoryview(array.reshape(-1).view(np.uint8)))
        if n_read != expected:  # the file shrank while being read
            raise _size_error(path, dtype, shape, expected, n_read)
    return _to_native(array)


def _check_max_bytes(path, dtype, shape, expected, max_bytes):
    if max_bytes is not None and expected > max_bytes:
        raise _idx_error(
            path,
            f"the IDX header declares shape {shape} of "
            f"{dtype.newbyteorder('=').name}, i.e. {expected} data bytes, more than "
            f"the {max_bytes} bytes expected here",
            "It is not the file expected here (a corrupt or substituted file?); "
            "delete it and download or copy it again.",
        )


def _memory_error(path, dtype, shape, expected):
    return _idx_error(
        path,
        f"the IDX header declares shape {shape} of {dtype.newbyteorder('=').name}, "
        f"i.e. {expected} data bytes, which do not fit in the memory available",
        "If the file is that large, decompress it and read it with mmap=True; "
        "otherwise its header is corrupt: delete it and get it again.",
    )


def _read_idx_gzip(raw, path, max_bytes):
    compressed_size = os.fstat(raw.fileno()).st_size
    try:
        with gzip.GzipFile(fileobj=raw, mode="rb") as f:
            dtype, shape, offset = _read_header(f, path)
            expected = math.prod(shape) * dtype.itemsize
            _check_max_bytes(path, dtype, shape, expected, max_bytes)
            limit = _MAX_DEFLATE_RATIO * compressed_size
            if expected + offset > limit:
                raise _idx_error(
                    path,
                    f"the IDX header declares shape {shape}, i.e. {expected} "
                    f"data bytes, but a gzip file of {compressed_size} bytes "
                    f"cannot hold more than {limit} bytes",
                    "The header is corrupt or the file is truncated; delete "
                    "it and download or copy it again.",
                )
            _check_representable(path, dtype, shape)
            # Address space for what the header declares, at once: a claim that
            # cannot fit fails now, not after gigabytes are inflated. Its pages
            # take memory only as data arrives, so a header that lies about a
            # short file costs only what the file holds.
            try:
                array = np.empty(shape, dtype=dtype)
            except MemoryError:
                raise _memory_error(path, dtype, shape, expected) from None
            # Bounded, incremental read: never more than the header declares,
            # then one byte more to detect trailing data.
            flat = array.reshape(-1).view(np.uint8)
            n_read = 0
            while n_read < expected:
                chunk = f.read(min(_CHUNK_SIZE, expected - n_read))
                if not chunk:
                    break
                flat[n_read:n_read + len(chunk)] = np.frombuffer(chunk, np.uint8)
                n_read += len(chunk)
            trailing = f.read(1) if n_read == expected else b""
    except (OSError, EOFError, zlib.error) as exc:
        raise _idx_error(
            path,
            f"the gzip stream is corrupt or truncated ({exc})",
            "Delete the file and download or copy it again.",
        ) from exc
    if n_read != expected or trailing:
        raise _size_error(path, dtype, shape, expected, n_read + len(trailing),
                          at_least=bool(trailing))
    return _to_native(array)


def _check_representable(path, dtype, shape):
    try:
        np.empty((0,) + shape[1:], dtype=dtype).reshape(shape if 0 in shape else (0,))
        np.lib.stride_tricks.as_strided(np.empty(0, dtype), shape=shape,
                                        strides=(0,) * len(shape))
    except ValueError as exc:
        raise _idx_error(path, f"the IDX header declares shape {shape}, which NumPy "
                         f"cannot represent ({exc})") from None


def _to_native(array):
    """Convert a writable big-endian array to native byte order in place."""
    if array.dtype.isnative:
        return array
    return array.byteswap(inplace=True).view(array.dtype.newbyteorder("="))


def write_idx(path, array):
    """Write an array to an IDX file, atomically.

    The data are first written to a temporary file in the same directory,
    which then replaces ``path``; an interrupted call never leaves a partial
    file under ``path``. A new file gets the mode that ``open()`` gives under
    the umask; a replaced file keeps its mode. The file is gzip-compressed if
    ``path`` ends with ``.gz``.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write.
    array : array-like
        The data, of dtype uint8, int8, int16, int32, float32 or float64
        (any byte order), with 1 to 255 dimensions each smaller than 2**32.

    Raises
    ------
    ValueError
        If the dtype or the shape of ``array`` cannot be stored in IDX.

    See Also
    --------
    read_idx : Read an array from an IDX file.
    """
    array = np.asarray(array)
    code = _IDX_CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        supported = ", ".join(d.newbyteorder("=").name for d in _IDX_DTYPES.values())
        raise ValueError(
            f"IDX cannot store dtype {array.dtype}; convert the array to one "
            f"of: {supported}."
        )
    if not 1 <= array.ndim <= 255:
        raise ValueError(
            f"IDX stores arrays with 1 to 255 dimensions, got {array.ndim}."
        )
    if any(d >= 2**32 for d in array.shape):
        raise ValueError(
            f"IDX stores dimensions smaller than 2**32, got shape {array.shape}."
        )
    header = (
        bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    )
    data = np.ascontiguousarray(array, dtype=_IDX_DTYPES[code]).reshape(-1)

    path = os.fspath(path)
    with _atomic.atomic_writer(path, suffix=".part") as raw:
        if path.endswith(".gz"):
            # mtime=0 makes the output reproducible.
            with gzip.GzipFile(
                filename=os.path.basename(path), mode="wb", fileobj=raw, mtime=0
            ) as f:
                f.write(header)
                f.write(data.view(np.uint8))
        else:
            raw.write(header)
            raw.write(data.view(np.uint8))


# --------------------------------------------------------------------------
# MNIST and Fashion-MNIST
# --------------------------------------------------------------------------

_DATASETS = ("mnist", "fashion-mnist")

# (role, file name) of the four files of each data set.
_FILES = (
    ("train_images", "train-images-idx3-ubyte.gz"),
    ("train_labels", "train-labels-idx1-ubyte.gz"),
    ("test_images", "t10k-images-idx3-ubyte.gz"),
    ("test_labels", "t10k-labels-idx1-ubyte.gz"),
)

# The number of images of each split, and so the largest data each file
# may declare (28 x 28 uint8 images, uint8 labels).
_SPLIT_SIZES = {"train": 60000, "test": 10000}
_MAX_BYTES = {
    f"{split}_{kind}": n * (28 * 28 if kind == "images" else 1)
    for split, n in _SPLIT_SIZES.items()
    for kind in ("images", "labels")
}

#: Base URLs of the mirrors that :func:`load_mnist` downloads from, tried in
#: order. Read at call time, so it can be changed to use another mirror.
MIRRORS = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ],
    "fashion-mnist": [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ],
}

# SHA-256 digests of the original .gz files, as published.
# MNIST: the published digests of the original files (the same files are
# served by both mirrors).
# Fashion-MNIST: the digests of the files that Zalando Research publishes
# with the MD5 sums of its README. Debian's dataset-fashion-mnist package
# ships the same compressed data with a normalised gzip header (no file
# name, build-time mtime), so its files have other digests; restoring the
# original header (file name and mtime 2017-08-31) gives files with exactly
# the published MD5 sums and these SHA-256 digests.
_SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": (
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
        ),
        "train-labels-idx1-ubyte.gz": (
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"
        ),
        "t10k-images-idx3-ubyte.gz": (
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"
        ),
        "t10k-labels-idx1-ubyte.gz": (
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"
        ),
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": (
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"
        ),
        "train-labels-idx1-ubyte.gz": (
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"
        ),
        "t10k-images-idx3-ubyte.gz": (
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"
        ),
        "t10k-labels-idx1-ubyte.gz": (
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"
        ),
    },
}

# Where distributions install data sets, e.g. Debian's dataset-fashion-mnist
# package installs /usr/share/datasets/fashion-mnist/*-ubyte.gz.
_SYSTEM_DATA_DIRS = ("/usr/share/datasets", "/usr/local/share/datasets")

_DOWNLOAD_TIMEOUT = 60  # seconds, per blocking network operation
# The whole download of one file, and the slowest rate tolerated over any
# window of _RATE_WINDOW seconds: 26 MiB take 30 min at 15 KiB/s.
_DOWNLOAD_DEADLINE = 30 * 60  # seconds
_MIN_DOWNLOAD_RATE = 1024  # bytes per second
_RATE_WINDOW = 60  # seconds
_MAX_DOWNLOAD_SIZE = 128 * 2**20  # the largest file is about 26 MiB

_ENV_DATA_HOME = "MLP_CY_DATA"


def _cache_dir():
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return os.path.join(os.path.expanduser(cache), "mlp_cy")


def get_data_home(data_home=None):
    """Return the directory where :func:`load_mnist` stores downloads.

    Parameters
    ----------
    data_home : str or os.PathLike, default=None
        If given, returned as is (with ``~`` expanded). Otherwise the value
        of the environment variable ``MLP_CY_DATA`` if it is set, else the
        user cache directory ``$XDG_CACHE_HOME/mlp_cy`` or
        ``~/.cache/mlp_cy``.

    Returns
    -------
    data_home : str
        The path of the directory, which need not exist yet. Each data set
        is stored in a subdirectory named after it.
    """
    if data_home is None:
        data_home = os.environ.get(_ENV_DATA_HOME) or _cache_dir()
    return os.path.expanduser(os.fspath(data_home))


def _candidate_dirs(name, data_home):
    """Directories to search for data set ``name``, in order."""
    dirs = []
    base = data_home if data_home is not None else os.environ.get(_ENV_DATA_HOME)
    if base:
        base = os.path.expanduser(os.fspath(base))
        dirs += [os.path.join(base, name), base]
    dirs.append(os.path.join(_cache_dir(), name))
    dirs += [os.path.join(d, name) for d in _SYSTEM_DATA_DIRS]
    return list(dict.fromkeys(os.path.abspath(d) for d in dirs))


def _find_files(directory):
    """Return {role: path} for those of the four files in ``directory``.

    Each file may be named with or without ``.gz``; the ``.gz`` name is
    preferred when both exist.
    """
    found = {}
    for role, filename in _FILES:
        for candidate in (filename, filename.removesuffix(".gz")):
            path = os.path.join(directory, candidate)
            if os.path.isfile(path):
                found[role] = path
                break
    return found


def _print_progress(n_bytes, total, file=None):
    file = sys.stderr if file is None else file
    if total:
        msg = f"\r  {n_bytes / 2**20:.1f} / {total / 2**20:.1f} MiB"
        msg += f" ({100 * n_bytes / total:3.0f}%)"
    else:
        msg = f"\r  {n_bytes / 2**20:.1f} MiB"
    print(msg, end="", file=file, flush=True)


class _Watchdog:
    """Ends a download that takes too long or goes too slowly.

    The socket timeout bounds each blocking operation only: a server that
    sends one byte every 59 s never trips a 60 s timeout. This thread
    checks the whole download instead, from the connection on (TLS
    handshake and headers included): an overall deadline, and a minimum
    rate over every window of ``_RATE_WINDOW`` seconds. When either fails,
    it shuts the connection's sockets down, which wakes the blocked read.
    """

    def __init__(self, url):
        self.url = url
        self.received = 0          # bytes of the body so far, set by the reader
        self.reason = None         # why the download was stopped, if it was
        self._sockets = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="mlp_cy download watchdog")

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._done.set()
        self._thread.join()

    def _run(self):
        deadline, window, rate = _DOWNLOAD_DEADLINE, _RATE_WINDOW, _MIN_DOWNLOAD_RATE
        start = window_start = time.monotonic()
        window_bytes = 0
        while not self._done.wait(min(1.0, window / 10)):
            now = time.monotonic()
            if now - start > deadline:
                self._stop(f"{self.url}: the download took longer than {deadline:g} s; "
                           "the network or the server is too slow")
                return
            if now - window_start >= window:
                received, seconds = self.received, now - window_start
                if received - window_bytes < rate * seconds:
                    self._stop(f"{self.url}: less than {rate:g} bytes/s over {seconds:.1f}"
                               " s; the network or the server is too slow (or stalled)")
                    return
                window_start, window_bytes = now, received

    def _stop(self, reason):
        with self._lock:
            self.reason = reason
            sockets = list(self._sockets)
        for sock in sockets:
            _shutdown(sock)

    def watch(self, sock):
        with self._lock:
            self._sockets.append(sock)
            stopped = self.reason is not None
        if stopped:
            _shutdown(sock)

    def connection_class(self, http_class):
        """``http_class`` whose sockets this watchdog watches from their connection on."""
        watchdog = self

        def make(*args, **kwargs):
            connection = http_class(*args, **kwargs)
            create = connection._create_connection

            def create_watched(*args, **kwargs):
                sock = create(*args, **kwargs)
                watchdog.watch(sock)
                return sock

            connection._create_connection = create_watched
            return connection

        return make


def _shutdown(sock):
    # The plain socket's shutdown, also for a TLS socket: it wakes a read blocked in
    # another thread without touching the TLS state that thread is using.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _HTTPOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http and https URLs only (urllib also follows ftp)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        scheme = urllib.parse.urlsplit(newurl).scheme
        if scheme not in ("http", "https"):
            raise urllib.error.HTTPError(
                newurl, code, f"redirect to {newurl[:200]!r} refused: mirrors must "
                "be http or https, also after redirects", headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener(watchdog):
    """An opener for http and https only, whose connections ``watchdog`` watches.

    Built handler by handler: ``build_opener`` would add ftp, file and data
    handlers too. A fresh opener reads the proxy settings of the environment now.
    """
    class HTTPHandler(urllib.request.HTTPHandler):
        def do_open(self, http_class, req, **kwargs):
            return super().do_open(watchdog.connection_class(http_class), req, **kwargs)

    handlers = [urllib.request.ProxyHandler(), urllib.request.UnknownHandler(),
                HTTPHandler(), urllib.request.HTTPDefaultErrorHandler(),
                _HTTPOnlyRedirects(), urllib.request.HTTPErrorProcessor()]
    if hasattr(urllib.request, "HTTPSHandler"):   # Python built with ssl
        class HTTPSHandler(urllib.request.HTTPSHandler):
            def do_open(self, http_class, req, **kwargs):
                return super().do_open(watchdog.connection_class(http_class), req,
                                       **kwargs)

        handlers.append(HTTPSHandler())
    opener = urllib.request.OpenerDirector()
    for handler in handlers:
        opener.add_handler(handler)
    return opener


def _download(url, path, sha256, *, verbose=False):
    """Download ``url`` to ``path``, checking its SHA-256 while streaming.

    The data are streamed to a temporary file in the same directory, which
    replaces ``path`` only once the digest matches. The temporary file is
    removed on every error, on KeyboardInterrupt and on SIGTERM or SIGHUP
    (then the process still ends by the signal); one left by a process
    killed otherwise is removed by the next download of the same file.
    """
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise ValueError(f"Mirror URLs must be http or https, got {url!r}.")
    hasher = hashlib.sha256()
    if verbose:
        print(f"Downloading {url}", file=sys.stderr)
    request = urllib.request.Request(url, headers={"User-Agent": "mlp_cy"})
    with _atomic.signals_raise(), _Watchdog(url) as watchdog, \
            _atomic.atomic_writer(path, suffix=".part") as out:
        try:
            n_bytes, total = _stream(watchdog, request, out, hasher, verbose)
        except (OSError, HTTPException) as exc:
            if isinstance(exc, urllib.error.HTTPError):
                exc.close()
            if watchdog.reason is not None:
                raise TimeoutError(watchdog.reason) from exc
            raise
        if watchdog.reason is not None:   # it stopped the body short
            raise TimeoutError(watchdog.reason)
        if total and n_bytes != total:
            raise OSError(f"{url}: got {n_bytes} of {total} bytes")
        actual = hasher.hexdigest()
        if actual != sha256.lower():
            raise ChecksumError(f"its SHA-256 is {actual}, not the published {sha256}")


def _stream(watchdog, request, out, hasher, verbose):
    url = watchdog.url
    with _opener(watchdog).open(request, timeout=_DOWNLOAD_TIMEOUT) as response:
        try:
            total = int(response.headers.get("Content-Length") or 0)
        except ValueError:
            raise OSError(f"{url}: bad Content-Length") from None
        if total > _MAX_DOWNLOAD_SIZE:
            raise OSError(f"{url} is {total} bytes, more than expected")
        n_bytes = 0
        # read1: what has arrived, so that the byte count stays current; read()
        # would wait for a whole chunk.
        while chunk := response.read1(_CHUNK_SIZE):
            n_bytes += len(chunk)
            watchdog.received = n_bytes
            if n_bytes > _MAX_DOWNLOAD_SIZE:
                raise OSError(f"{url} sent more data than expected")
            hasher.update(chunk)
            out.write(chunk)
            if verbose:
                _print_progress(n_bytes, total)
        if verbose:
            print(file=sys.stderr)
    return n_bytes, total


def _not_found_message(name, searched, partial, download_dir, failures):
    files = [f for _, f in _FILES]
    half = (len(files) + 1) // 2
    lines = [f"Could not find the {name} data set. Searched for the files"]
    lines += [f"  {', '.join(files[:half])},", f"  {', '.join(files[half:])}"]
    lines += ["(or the same without .gz) in these directories:"]
    for directory in searched:
        note = (
            f" (only {partial[directory]} of 4 files)" if directory in partial else ""
        )
        lines.append(f"  {directory}{note}")
    if failures:
        lines.append(f"Downloading into {download_dir} failed:")
        lines += [f"  {url}: {error}" for url, error in failures]
    else:
        lines.append("Downloading was disabled (download=False).")
    lines.append("To get the files, either:")
    lines.append("  - put them in a directory and pass it as data_home=, or set the")
    lines.append(f"    environment variable {_ENV_DATA_HOME} to it;")
    if name == "fashion-mnist":
        lines.append(
            "  - on Debian or Ubuntu, `apt-get install dataset-fashion-mnist`;"
        )
    lines.append("  - or call load_mnist with download=True where there is network")
    lines.append("    access; it tries these mirrors in turn:")
    lines += [f"      {mirror}" for mirror in MIRRORS.get(name, [])]
    return "\n".join(lines)


def _fetch(name, directory, mirrors, *, verbose):
    """Download the missing files of ``name`` into ``directory``.

    Returns the list of (url, error) of the failed attempts if some file
    could not be downloaded from any mirror, else an empty list.
    """
    os.makedirs(directory, exist_ok=True)
    present = _find_files(directory)
    for role, filename in _FILES:
        if role in present:
            continue
        sha256 = _SHA256[name][filename]
        failures, bad_digest = [], False
        for base in mirrors:
            url = f"{base.rstrip('/')}/{filename}"
            try:
                _download(
                    url, os.path.join(directory, filename), sha256, verbose=verbose
                )
                break
            except ChecksumError as exc:
                bad_digest = True
                failures.append((url, str(exc)))
            except (OSError, HTTPException) as exc:
                failures.append((url, f"{type(exc).__name__}: {exc}"))
        else:
            if bad_digest:
                raise ChecksumError(
                    f"No mirror served {filename} of the {name} data set with "
                    "its published SHA-256, so it was not saved:\n"
                    + "\n".join(f"  {url}: {error}" for url, error in failures)
                    + "\nThe mirrors may serve a corrupt or altered file; try "
                    "again later, or get the files elsewhere and pass their "
                    f"directory as data_home= (or set {_ENV_DATA_HOME})."
                )
            return failures
    return []


def load_mnist(
    name="mnist",
    *,
    data_home=None,
    download=True,
    dtype=np.float32,
    verbose=False,
    mirrors=None,
):
    """Load the MNIST or Fashion-MNIST data set.

    Both data sets have 60,000 training and 10,000 test images of 28 x 28
    grey-scale pixels, in 10 classes. The four standard files
    (``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
    ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``, or the
    same names without ``.gz``) are searched for in these directories, in
    order, and read from the first one that has all four:

    1. ``data_home`` if given, else ``$MLP_CY_DATA`` if set: first the
       subdirectory ``<name>`` of it, then the directory itself;
    2. the user cache, ``$XDG_CACHE_HOME/mlp_cy/<name>`` or
       ``~/.cache/mlp_cy/<name>``;
    3. the system data directories ``/usr/share/datasets/<name>`` and
       ``/usr/local/share/datasets/<name>`` (Debian's package
       ``dataset-fashion-mnist`` installs Fashion-MNIST there).

    If none has them and ``download`` is True, the missing files are
    downloaded into ``<get_data_home(data_home)>/<name>`` and their digests
    are checked against the published ones.

    Parameters
    ----------
    name : {"mnist", "fashion-mnist"}, default="mnist"
        The data set.
    data_home : str or os.PathLike, default=None
        Directory searched first and where downloads are stored, in a
        subdirectory ``<name>``. Defaults to ``$MLP_CY_DATA`` if set, else
        the user cache directory; see :func:`get_data_home`.
    download : bool, default=True
        Whether to download the files if they are not found on disk.
    dtype : {np.float32, np.float64, np.uint8}, default=np.float32
        The dtype of the images. Floating-point images are scaled to
        [0, 1]; uint8 images are the raw pixel values in [0, 255].
    verbose : bool, default=False
        Whether to print where the data are loaded from and the download
        progress to standard error.
    mirrors : list of str, default=None
        Base URLs to download from, tried in order. Defaults to
        ``MIRRORS[name]``, read at call time.

    Returns
    -------
    X_train : ndarray of shape (60000, 784)
        The training images, flattened row by row.
    y_train : ndarray of shape (60000,), dtype=uint8
        The training labels, in 0..9.
    X_test : ndarray of shape (10000, 784)
        The test images.
    y_test : ndarray of shape (10000,), dtype=uint8
        The test labels.

    Raises
    ------
    DatasetNotFoundError
        If the files are not found and could not be (or were not allowed to
        be) downloaded. The message lists the directories searched, the
        URLs tried and how to obtain the files.
    ChecksumError
        If a downloaded file does not have the published digest on any
        mirror. Nothing is saved in that case.
    IDXFormatError
        If a file is malformed or the arrays do not have the shapes of an
        MNIST-like data set.

    Examples
    --------
    >>> from mlp_cy.datasets import load_mnist
    >>> X_train, y_train, X_test, y_test = load_mnist("fashion-mnist")  # doctest: +SKIP
    >>> X_train.shape, X_train.dtype, y_test.shape  # doctest: +SKIP
    ((60000, 784), dtype('float32'), (10000,))
    """
    if name not in _DATASETS:
        raise ValueError(f"name must be one of {_DATASETS}, got {name!r}.")
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64, np.uint8):
        raise ValueError(
            f"dtype must be np.float32, np.float64 or np.uint8, got {dtype}."
        )

    searched = _candidate_dirs(name, data_home)
    partial = {}
    files = None
    for directory in searched:
        found = _find_files(directory)
        if len(found) == len(_FILES):
            files = found
            break
        if found:
            partial[directory] = len(found)

    if files is None:
        download_dir = os.path.abspath(os.path.join(get_data_home(data_home), name))
        failures = []
        if download:
            mirrors = list(MIRRORS[name] if mirrors is None else mirrors)
            if mirrors:
                failures = _fetch(name, download_dir, mirrors, verbose=verbose)
            else:
                failures = [("(no mirror)", "the list of mirrors is empty")]
        if not download or failures:
            raise DatasetNotFoundError(
                _not_found_message(name, searched, partial, download_dir, failures)
            )
        files = _find_files(download_dir)

    if verbose:
        directory = os.path.dirname(files["train_images"])
        print(f"Loading {name} from {directory}", file=sys.stderr)
    # Each file is refused before it is read if it declares more than its split
    # holds: a corrupt or planted file in a cache cannot claim gigabytes.
    arrays = {
        role: read_idx(path, max_bytes=_MAX_BYTES[role]) for role, path in files.items()
    }
    X_train, y_train = _check_split(arrays, files, "train")
    X_test, y_test = _check_split(arrays, files, "test")
    return _to_features(X_train, dtype), y_train, _to_features(X_test, dtype), y_test


def _check_split(arrays, files, split):
    images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
    images_path, labels_path = files[f"{split}_images"], files[f"{split}_labels"]
    advice = "The file is not an MNIST-like data file; delete it or get it again."
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise _idx_error(
            images_path,
            f"images of shape (n, 28, 28) expected, got {images.shape}",
            advice,
        )
    if labels.ndim != 1:
        raise _idx_error(
            labels_path, f"labels of shape (n,) expected, got {labels.shape}", advice
        )
    for path, array in ((images_path, images), (labels_path, labels)):
        if array.dtype != np.uint8:
            raise _idx_error(path, f"uint8 data expected, got {array.dtype}", advice)
    if images.shape[0] != labels.shape[0]:
        raise _idx_error(
            labels_path,
            f"{labels.shape[0]} labels for the {images.shape[0]} images "
            f"of {images_path!r}",
            "The files do not belong together; get both again.",
        )
    if labels.size and labels.max() >= 10:
        raise _idx_error(
            labels_path, f"labels in 0..9 expected, found {labels.max()}", advice
        )
    return images, labels


def _to_features(images, dtype):
    """Flatten images to (n, 784) and scale them to [0, 1] unless uint8."""
    X = images.reshape(images.shape[0], -1)
    if dtype == np.uint8:
        return X
    X = X.astype(dtype)
    X /= 255
    return X
