"""Hostile files and slow servers: each attack gives its documented error, at once,
in bounded memory.

Every hostile input is crafted here (zip and gzip bombs are built from one
compressed block of zeros repeated, in milliseconds). The attacks that could take
memory run in a child process under an address-space limit (RLIMIT_AS, Linux only);
the child resets its peak RSS before the attack (/proc/self/clear_refs) and reports
the attack's own peak and time, which the tests bound. Slow servers are local
sockets on 127.0.0.1 with deadlines shortened by monkeypatching. docs/reliability.md
lists what these tests promise and the figures they measured.
"""

import contextlib
import errno
import functools
import gzip
import hashlib
import http.server
import io
import json
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
import zlib

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import mlp_cy
from mlp_cy import MLPClassifier, _atomic, datasets, persistence
from mlp_cy.cli import main
from mlp_cy.datasets import DatasetNotFoundError, IDXFormatError, load_mnist, read_idx
from mlp_cy.datasets import write_idx
from mlp_cy.persistence import ModelFileError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # ConvergenceWarning

LINUX = sys.platform.startswith("linux")
needs_linux = pytest.mark.skipif(not LINUX, reason="RLIMIT_AS and /proc: Linux only")
needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
ADDRESS_SPACE = 2**30   # RLIMIT_AS of the children: about 700 MiB above their imports
MiB = 2**20


# Crafting ---------------------------------------------------------------------------

def _deflated(prefix, n_mib):
    """Raw DEFLATE data of ``prefix`` and ``n_mib`` MiB of zeros, in about n_mib KiB.

    One MiB of zeros is compressed once, ending with a full flush (no reference to
    earlier data, byte-aligned), and repeated; an empty final block ends the stream.
    """
    head = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = head.compress(prefix) + head.flush(zlib.Z_FULL_FLUSH)
    block = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = block.compress(bytes(MiB)) + block.flush(zlib.Z_FULL_FLUSH)
    return data + zeros * n_mib + b"\x03\x00"


def _gzip(prefix, n_mib):
    """A gzip file of ``prefix`` and ``n_mib`` MiB of zeros (its CRC is not right:
    the readers under test must stop long before they could check it)."""
    size = len(prefix) + n_mib * MiB
    return (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + _deflated(prefix, n_mib)
            + struct.pack("<II", 0, size & 0xFFFFFFFF))


def _zip(members, *, zip64=False):
    """A zip archive written by hand, so that sizes and methods can lie.

    ``members`` are (name, data) for stored members with their true size and CRC,
    or (name, data, method, size): ``data`` is already compressed with ``method``
    and declares the uncompressed size ``size``, or is stored (method 0) and
    declares ``size`` as both its sizes, whatever its length.
    """
    out, directory = bytearray(), bytearray()
    for member in members:
        name, data = member[0].encode(), member[1]
        method, size = member[2:] if len(member) == 4 else (0, len(data))
        stored = size if method == 0 else len(data)
        crc = zlib.crc32(data) if method == 0 else 0
        offset = len(out)
        out += struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, method, 0, 0, crc,
                           stored, size, len(name), 0) + name + data
        directory += struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, method, 0, 0,
                                 crc, stored, size, len(name), 0, 0, 0, 0, 0,
                                 offset) + name
    n, start = len(members), len(out)
    out += directory
    if zip64:
        record = len(out)
        out += struct.pack("<4sQ2H2I4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, n, n,
                           len(directory), start)
        out += struct.pack("<4sIQI", b"PK\x06\x07", 0, record, 1)
        n = 0xFFFF
    out += struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, n, n, len(directory), start, 0)
    return bytes(out)


def _npy(array):
    f = io.BytesIO()
    np.save(f, array)
    return f.getvalue()


def _npy_header(dtype, shape):
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        f, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape})
    return f.getvalue()


@pytest.fixture(scope="module")
def model_members(tmp_path_factory):
    """(name, bytes) of the members of a real model file, and its X."""
    rng = np.random.RandomState(0)
    X = rng.rand(30, 4)
    clf = MLPClassifier(hidden_layer_sizes=3, max_iter=2, random_state=0)
    clf.fit(X, np.arange(30) % 3)
    path = tmp_path_factory.mktemp("model") / "model.npz"
    clf.save(path)
    with zipfile.ZipFile(path) as zf:
        return [(info.filename, zf.read(info)) for info in zf.infolist()], X


def _replaced(members, name, *new):
    """``members`` with the member ``name`` replaced by ``new`` (or removed)."""
    return [m for m in members if m[0] != name] + ([new] if new else [])


# Measuring in a child process -------------------------------------------------------

HEADROOM = 256 * MiB   # address space each attack may take above what the child has

_CHILD = r"""
import json, resource, sys, time
import numpy as np
import mlp_cy
from mlp_cy import datasets, persistence

def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

soft, hard = resource.getrlimit(resource.RLIMIT_AS)
results = {}
for name, statement, path in json.load(sys.stdin):
    resource.setrlimit(resource.RLIMIT_AS, (status("VmSize") + int(sys.argv[1]), hard))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")    # the peak RSS (VmHWM) starts again from the current RSS
    before = status("VmRSS")
    start = time.perf_counter()
    error, message = None, ""
    try:
        exec(statement, {"mlp_cy": mlp_cy, "datasets": datasets, "path": path})
    except BaseException as exc:
        error, message = type(exc).__name__, str(exc)   # not exc: it holds the memory
    seconds = time.perf_counter() - start
    results[name] = {"error": error, "message": message, "seconds": seconds,
                     "peak": status("VmHWM") - before}
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
print(json.dumps(results))
"""


def _run_attacks(attacks, headroom=HEADROOM):
    """Run each (name, statement, path) in one child, each under RLIMIT_AS = what the
    child holds + ``headroom``; return {name: what it raised, its time and its peak
    RSS above the RSS before it}. One child: importing mlp_cy takes seconds."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(headroom)],
                          input=json.dumps(attacks), capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0 and proc.stdout, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _report(result):
    print(f"\n  measured: {result['error']} in {result['seconds']:.3f} s, peak "
          f"{result['peak'] / MiB:.1f} MiB: {result['message'][-120:]}")
    return result


# The attacks measured in the child ------------------------------------------------

def _idx_header(code, *dims):
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


# 21,913,099 images of 28 x 28: 16 GiB, in a 16.7 MiB gzip file of zeros.
N_HUGE = 21_913_099
HUGE_IDX_HEADER = _idx_header(0x08, N_HUGE, 28, 28)


def _fake_dataset(directory, gz=True):
    rng = np.random.RandomState(0)
    arrays = [rng.randint(0, 256, (20, 28, 28)).astype(np.uint8),
              (np.arange(20) % 10).astype(np.uint8),
              rng.randint(0, 256, (10, 28, 28)).astype(np.uint8),
              (np.arange(10) % 10).astype(np.uint8)]
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    os.makedirs(directory, exist_ok=True)
    for name, array in zip(names, arrays):
        write_idx(os.path.join(directory, name + (".gz" if gz else "")), array)


def _attack_files(directory, members):
    """{name: (statement, path)} of every attack measured in the child."""
    attacks = {}
    load = "mlp_cy.load(path)"

    # A 2.6 MB model file whose coef_0.npy (W1.npy in format 1) honestly declares
    # 2.5 GiB of deflated zeros, behind a .npy header that agrees: it was inflated whole
    # before the shape check.
    n_mib = 2560
    header = _npy_header("<f4", (n_mib * MiB // 4 // 3, 3))
    path = directory / "bomb.npz"
    path.write_bytes(_zip(_replaced(members, "coef_0.npy", "coef_0.npy",
                                    _deflated(header, n_mib), zipfile.ZIP_DEFLATED,
                                    len(header) + n_mib * MiB)))
    attacks["model zip bomb"] = (load, path)

    # A non-.npy member "W1" next to W1.npy was read whole: 1.5 GiB of inflated zeros.
    path = directory / "twin-bomb.npz"
    path.write_bytes(_zip(members + [("W1", _deflated(b"", 1536), zipfile.ZIP_DEFLATED,
                                      1536 * MiB)]))
    attacks["plain member bomb"] = (load, path)

    # A stored member may claim more bytes than the whole file (members that overlap,
    # or data that is not there): numpy allocated the claim, 3.6 GiB here, first.
    claim = 480_000_000
    header = _npy_header("<f8", (claim,))
    path = directory / "overlap.npz"
    path.write_bytes(_zip(_replaced(members, "loss_curve_.npy", "loss_curve_.npy",
                                    header + bytes(64), zipfile.ZIP_STORED,
                                    len(header) + 8 * claim)))
    attacks["overlapping members"] = (load, path)

    # A bare .npy of 10**12 values was read whole by np.load: a raw MemoryError.
    path = directory / "huge.npy"
    path.write_bytes(_npy_header("<f8", (10**12,)) + bytes(800))
    attacks["bare npy"] = (load, path)

    # 200,000 unknown members: a 2.4-million-character error.
    path = directory / "many.npz"
    path.write_bytes(_zip(members + [(f"m{i:06d}.npy", b"") for i in range(200_000)],
                          zip64=True))
    attacks["200000 members"] = (load, path)

    # A 16.7 MiB gzip IDX file that declares (and holds) 16 GiB.
    path = directory / "huge-idx3-ubyte.gz"
    path.write_bytes(_gzip(HUGE_IDX_HEADER, 16 * 1024))
    attacks["idx 16 GiB"] = ("datasets.read_idx(path)", path)
    attacks["idx 16 GiB, max_bytes"] = (
        "datasets.read_idx(path, max_bytes=47_040_000)", path)

    # The same as a file of the data set's cache, gzip or uncompressed and sparse (its
    # size matches its header, and reading it gives zeros).
    for kind in ("gzip", "raw sparse"):
        home = directory / kind.replace(" ", "-")
        _fake_dataset(home / "mnist", gz=kind == "gzip")
        if kind == "gzip":
            (home / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(
                _gzip(HUGE_IDX_HEADER, 16 * 1024))
        else:
            images = home / "mnist" / "train-images-idx3-ubyte"
            images.write_bytes(HUGE_IDX_HEADER)
            os.truncate(images, len(HUGE_IDX_HEADER) + N_HUGE * 784)
        attacks[f"poisoned cache, {kind}"] = (
            "datasets.load_mnist(data_home=path, download=False)", home)
    return {name: (statement, str(path)) for name, (statement, path) in attacks.items()}


@pytest.fixture(scope="module")
def attacks(tmp_path_factory, model_members):
    if not LINUX:
        pytest.skip("RLIMIT_AS and /proc: Linux only")
    files = _attack_files(tmp_path_factory.mktemp("attacks"), model_members[0])
    return _run_attacks([[name, *files[name]] for name in files])


# Model files ------------------------------------------------------------------------

def test_model_zip_bomb_is_refused_before_inflating(attacks):
    result = _report(attacks["model zip bomb"])
    assert result["error"] == "ModelFileError"
    assert "'coef_0.npy' is compressed" in result["message"]
    assert result["seconds"] < 0.5 and result["peak"] < 4 * MiB


def test_plain_member_cannot_shadow_the_npy_member(tmp_path, model_members):
    # numpy's NpzFile serves a member named plain "W1" for npz["W1"]: the checked
    # W1.npy was replaced by an unchecked one.
    members, X = model_members
    path = tmp_path / "twin.npz"
    path.write_bytes(_zip(members + [("W1", _npy(np.zeros((4, 3))))]))
    with pytest.raises(ModelFileError, match=r"members \['W1'\] that format version"):
        mlp_cy.load(path)


def test_plain_member_bomb_is_never_read(attacks):
    result = _report(attacks["plain member bomb"])
    assert result["error"] == "ModelFileError"
    assert "members ['W1'] that format version 2 does not define" in result["message"]
    assert result["seconds"] < 0.5 and result["peak"] < 4 * MiB


def test_overlapping_members_are_refused_before_reading(attacks):
    result = _report(attacks["overlapping members"])
    assert result["error"] == "ModelFileError"
    assert "more than the file's" in result["message"]
    assert result["seconds"] < 0.5 and result["peak"] < 4 * MiB


def test_bare_npy_declaring_10e12_values(attacks):
    result = _report(attacks["bare npy"])
    assert result["error"] == "ModelFileError"
    assert "single .npy array" in result["message"]
    assert result["seconds"] < 0.5 and result["peak"] < 4 * MiB


def test_200000_unknown_members_give_a_short_message(attacks, model_members):
    result = _report(attacks["200000 members"])
    assert result["error"] == "ModelFileError"
    n = 200_000 + len(model_members[0])
    assert f"declares {n} members" in result["message"]
    assert len(result["message"]) < 400
    assert result["seconds"] < 0.5 and result["peak"] < 4 * MiB


def test_a_zip64_end_record_is_read(tmp_path, model_members):
    # np.savez writes one for files beyond 4 GiB: the directory check reads it.
    members, X = model_members
    path = tmp_path / "zip64.npz"
    path.write_bytes(_zip(members, zip64=True))
    assert mlp_cy.load(path).predict(X).shape == (30,)


def test_lists_of_member_names_are_truncated(tmp_path, model_members):
    members, _ = model_members
    extra = [("x" * 900 + f"{i:02d}.npy", b"") for i in range(40)]
    path = tmp_path / "long-names.npz"
    path.write_bytes(_zip(members + extra))
    with pytest.raises(ModelFileError, match="and 35 more") as excinfo:
        mlp_cy.load(path)
    assert len(str(excinfo.value)) < 800


def test_params_json_with_long_unknown_names_gives_a_short_message(tmp_path,
                                                                   model_members):
    members, _ = model_members
    params = json.dumps({f"{'k' * 10000}{i}": 1 for i in range(50)})
    path = tmp_path / "params.npz"
    path.write_bytes(_zip(_replaced(members, "params_json.npy", "params_json.npy",
                                    _npy(np.array(params)))))
    with pytest.raises(ModelFileError, match="unknown hyperparameters") as excinfo:
        mlp_cy.load(path)
    assert len(str(excinfo.value)) < 1500


def test_model_memory_error_is_a_model_file_error(model_members, tmp_path,
                                                   monkeypatch):
    members, _ = model_members
    path = tmp_path / "m.npz"
    path.write_bytes(_zip(members))
    real_empty = np.empty

    def empty(shape, *args, **kwargs):
        if shape == (4, 3):   # coef_0
            raise MemoryError
        return real_empty(shape, *args, **kwargs)

    monkeypatch.setattr(persistence.np, "empty", empty)
    with pytest.raises(ModelFileError, match="'coef_0' does not fit in the memory"):
        mlp_cy.load(path)


# IDX files and the data set's cache ---------------------------------------------------

def test_idx_gzip_declaring_16_gib_is_the_documented_error(attacks):
    # The declared size is reserved before anything is inflated: beyond the memory
    # available (the child's limit), the documented error at once.
    result = _report(attacks["idx 16 GiB"])
    assert result["error"] == "IDXFormatError"
    assert "do not fit in the memory available" in result["message"]
    assert result["seconds"] < 0.1 and result["peak"] < 4 * MiB
    # With the bound a caller knows, refused before anything is inflated.
    result = _report(attacks["idx 16 GiB, max_bytes"])
    assert result["error"] == "IDXFormatError"
    assert "more than the 47040000 bytes expected here" in result["message"]
    assert result["seconds"] < 0.1 and result["peak"] < 4 * MiB


@pytest.mark.parametrize("kind", ["gzip", "raw sparse"])
def test_poisoned_cache_file_is_refused_before_it_is_read(attacks, kind):
    result = _report(attacks[f"poisoned cache, {kind}"])
    assert result["error"] == "IDXFormatError"
    assert "more than the 47040000 bytes expected here" in result["message"]
    assert result["seconds"] < 0.5 and result["peak"] < 8 * MiB


def test_read_idx_memory_error_is_the_documented_error(tmp_path, monkeypatch):
    path = tmp_path / "a.idx"
    write_idx(path, np.zeros((3, 4), np.uint8))

    real_empty = np.empty

    def empty(shape, *args, **kwargs):
        if np.prod(shape) > 0:
            raise MemoryError
        return real_empty(shape, *args, **kwargs)

    monkeypatch.setattr(datasets.np, "empty", empty)
    with pytest.raises(IDXFormatError, match="do not fit in the memory available"):
        read_idx(path)


@pytest.mark.parametrize("compressed", [False, True], ids=["raw", "gzip"])
def test_read_idx_max_bytes(tmp_path, compressed):
    path = tmp_path / ("a.idx" + (".gz" if compressed else ""))
    write_idx(path, np.zeros((3, 4), np.uint8))
    assert read_idx(path, max_bytes=12).shape == (3, 4)
    with pytest.raises(IDXFormatError, match="12 data bytes, more than the 11 bytes"):
        read_idx(path, max_bytes=11)


# FIFOs, devices, directories ---------------------------------------------------------

@contextlib.contextmanager
def _unblocked(fifo, after=3.0):
    """If the code under test blocks opening ``fifo``, open its other end after
    ``after`` seconds, and again every 0.1 s, so that the test fails, not hangs."""
    done = threading.Event()

    def rescue():
        wait = after
        while not done.wait(wait):
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            wait = 0.1

    thread = threading.Thread(target=rescue, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _fifo(tmp_path, name):
    path = tmp_path / name
    os.mkfifo(path)
    return path


@needs_fifo
@pytest.mark.parametrize("reader", ["read_idx", "read_idx-mmap", "load"])
def test_fifo_is_refused_at_once(tmp_path, reader):
    fifo = _fifo(tmp_path, "data")
    call = {"read_idx": read_idx, "read_idx-mmap": functools.partial(read_idx, mmap=True),
            "load": mlp_cy.load}[reader]
    start = time.perf_counter()
    with _unblocked(fifo), pytest.raises(OSError, match="FIFO") as excinfo:
        call(fifo)
    assert time.perf_counter() - start < 10   # a hang, not a speed limit
    assert excinfo.value.errno == errno.EINVAL and excinfo.value.filename == str(fifo)


@needs_fifo
@pytest.mark.parametrize("which", ["model", "data"])
def test_predict_refuses_a_fifo_at_once(tmp_path, model_members, which, capsys):
    members, _ = model_members
    model = tmp_path / "model.npz"
    model.write_bytes(_zip(members))
    data = tmp_path / "rows.npy"
    np.save(data, np.zeros((2, 4)))
    fifo = _fifo(tmp_path, "fifo")
    argv = ["predict", fifo, data] if which == "model" else ["predict", model, fifo]
    start = time.perf_counter()
    with _unblocked(fifo):
        status = main([str(a) for a in argv])
    assert time.perf_counter() - start < 10   # a hang, not a speed limit
    err = capsys.readouterr().err
    assert status == 1 and err.startswith("mlp-cy: error: ") and "FIFO" in err, err


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
@pytest.mark.parametrize("reader", [read_idx, mlp_cy.load], ids=["read_idx", "load"])
def test_devices_and_directories_are_refused(tmp_path, reader):
    with pytest.raises(OSError, match="character device, not a regular file"):
        reader("/dev/zero")
    with pytest.raises(IsADirectoryError):
        reader(tmp_path)


# Modes and names of the files written ---------------------------------------------------

@contextlib.contextmanager
def _umask(mask):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _save_model(path):
    MLPClassifier(hidden_layer_sizes=2, max_iter=1).fit(
        np.random.RandomState(0).rand(20, 3), np.arange(20) % 2).save(path)


def _write_idx(path):
    write_idx(path, np.arange(5, dtype=np.uint8))


def _served_file(tmp_path):
    """A local HTTP server serving one file; yields (url, sha256)."""
    served = tmp_path / "served"
    served.mkdir(exist_ok=True)
    content = gzip.compress(b"some data" * 100)
    (served / "file.gz").write_bytes(content)
    return served, hashlib.sha256(content).hexdigest()


@contextlib.contextmanager
def _http_server(directory):
    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(directory)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture
def download(tmp_path, monkeypatch):
    """A function that downloads a served file to the path it is given."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    served, digest = _served_file(tmp_path)
    with _http_server(served) as url:
        yield lambda path: datasets._download(url + "file.gz", path, digest)


WRITERS = ["save", "write_idx", "download"]


def _writer(name, download):
    return {"save": _save_model, "write_idx": _write_idx, "download": download}[name]


@pytest.mark.skipif(os.name == "nt", reason="POSIX modes")
@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("mask", [0o022, 0o077, 0o027], ids=["022", "077", "027"])
def test_new_files_get_the_mode_of_the_umask(tmp_path, download, writer, mask):
    path = tmp_path / "out"
    with _umask(mask):
        _writer(writer, download)(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


@pytest.mark.skipif(os.name == "nt", reason="POSIX modes")
@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("mode", [0o600, 0o640, 0o444], ids=["0600", "0640", "0444"])
def test_replaced_files_keep_their_mode(tmp_path, download, writer, mode):
    path = tmp_path / "out"
    path.write_bytes(b"old")
    path.chmod(mode)
    with _umask(0o022):
        _writer(writer, download)(path)
    assert path.read_bytes() != b"old"
    assert stat.S_IMODE(path.stat().st_mode) == mode


@pytest.mark.skipif(os.name == "nt", reason="Windows limits whole paths to 260 characters")
@pytest.mark.parametrize("writer", ["save", "write_idx"])
@pytest.mark.parametrize("name", ["a" * 245, "b" * 255, "\u00e9" * 127 + "x"],
                         ids=["245-bytes", "255-bytes", "254-bytes-utf8"])
def test_names_up_to_the_limit_can_be_written(tmp_path, writer, name):
    path = tmp_path / name
    _writer(writer, None)(path)
    assert os.listdir(tmp_path) == [name]
    if writer == "save":
        mlp_cy.load(path)
    else:
        assert_array_equal(read_idx(path), np.arange(5))


@pytest.mark.parametrize("target", ["fifo", "device"])
def test_special_files_are_never_replaced(tmp_path, target):
    # Before, writing to a FIFO's path replaced the FIFO, and root replaced a device
    # node (--out /dev/null). A node made here, never the real one.
    path = tmp_path / "out"
    try:
        if target == "fifo":
            os.mkfifo(path)
        else:
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (AttributeError, OSError) as exc:
        pytest.skip(f"cannot make a {target} here: {exc}")
    before = os.stat(path)
    with pytest.raises(OSError, match="not a regular file; mlp_cy replaces regular"):
        _write_idx(path)
    with pytest.raises(OSError, match="not a regular file; mlp_cy replaces regular"):
        _save_model(path)
    after = os.stat(path)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)
    assert os.listdir(tmp_path) == ["out"]


def test_one_atomic_writer_syncs_the_directory_for_both(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(_atomic, "fsync_directory", synced.append)
    _save_model(tmp_path / "m.npz")
    _write_idx(tmp_path / "a.idx")
    assert synced == [str(tmp_path), str(tmp_path)]


# The command line ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def data_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("data")
    _fake_dataset(home / "fashion-mnist")
    return home


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_train_out_in_proc_fails_before_training(data_home, capsys):
    status = main(["train", "--data-home", str(data_home), "--epochs", "1",
                   "--hidden", "4", "--out", "/proc/x"])
    captured = capsys.readouterr()
    assert status == 1 and "--out /proc/x: cannot be written" in captured.err
    assert "epoch" not in captured.out and "Loading" not in captured.err


@needs_fifo
def test_train_out_fifo_fails_before_training(data_home, tmp_path, capsys):
    fifo = _fifo(tmp_path, "model.npz")
    status = main(["train", "--data-home", str(data_home), "--epochs", "1",
                   "--hidden", "4", "--out", str(fifo)])
    captured = capsys.readouterr()
    assert status == 1 and "FIFO" in captured.err and "epoch" not in captured.out
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


# Slow and hostile servers -------------------------------------------------------------

@contextlib.contextmanager
def _socket_server(respond):
    """A local TCP server that calls ``respond(conn, stop)`` for each connection."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.05)
    stop = threading.Event()
    threads = []

    def handle(conn):
        with conn, contextlib.suppress(OSError):
            conn.recv(65536)
            respond(conn, stop)

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except (socket.timeout, OSError):
                continue
            thread = threading.Thread(target=handle, args=(conn,), daemon=True)
            thread.start()
            threads.append(thread)

    acceptor = threading.Thread(target=serve, daemon=True)
    acceptor.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/"
    finally:
        stop.set()
        acceptor.join()
        for thread in threads:
            thread.join()
        server.close()


def _drip(data, every=0.2, limit=8.0):
    """A response that sends ``data`` (then zeros) one byte every ``every`` s, for at
    most ``limit`` s: the old code waited for all of it."""
    def respond(conn, stop):
        start = time.monotonic()
        for byte in data + bytes(10**6):
            if stop.wait(every) or time.monotonic() - start > limit:
                return
            conn.sendall(bytes([byte]))
    return respond


def _headers_then_drip(conn, stop):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + bytes(10))
    _drip(b"")(conn, stop)


@pytest.fixture
def no_proxy(monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def test_dripping_body_fails_at_the_minimum_rate(tmp_path, monkeypatch, no_proxy):
    monkeypatch.setattr(datasets, "_RATE_WINDOW", 0.5)
    monkeypatch.setattr(datasets, "_MIN_DOWNLOAD_RATE", 100)
    with _socket_server(_headers_then_drip) as url:
        start = time.perf_counter()
        with pytest.raises(DatasetNotFoundError, match="less than 100 bytes/s"):
            load_mnist(data_home=tmp_path / "data", mirrors=[url])
        elapsed = time.perf_counter() - start
    print(f"\n  measured: refused after {elapsed:.2f} s")
    assert elapsed < 15   # bounded (the old code never stopped), not a speed limit
    assert os.listdir(tmp_path / "data" / "mnist") == []


def test_dripping_headers_fail_at_the_deadline(tmp_path, monkeypatch, no_proxy):
    monkeypatch.setattr(datasets, "_DOWNLOAD_DEADLINE", 1.0)
    with _socket_server(_drip(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")) as url:
        start = time.perf_counter()
        with pytest.raises(TimeoutError, match="longer than 1 s"):
            datasets._download(url + "f", tmp_path / "f", "0" * 64)
        elapsed = time.perf_counter() - start
    print(f"\n  measured: refused after {elapsed:.2f} s")
    assert elapsed < 15   # bounded (the old code never stopped), not a speed limit
    assert os.listdir(tmp_path) == []


def test_redirect_to_ftp_is_refused(tmp_path, no_proxy):
    with socket.socket() as sock:    # a port on which nothing listens
        sock.bind(("127.0.0.1", 0))
        ftp = f"ftp://127.0.0.1:{sock.getsockname()[1]}/train-images-idx3-ubyte.gz"

    def redirect(conn, stop):
        conn.sendall(f"HTTP/1.1 302 Found\r\nLocation: {ftp}\r\nContent-Length: 0\r\n"
                     "Connection: close\r\n\r\n".encode())

    with _socket_server(redirect) as url:
        with pytest.raises(DatasetNotFoundError) as excinfo:
            load_mnist(data_home=tmp_path / "data", mirrors=[url])
    assert f"redirect to '{ftp}' refused" in str(excinfo.value)
    assert os.listdir(tmp_path / "data" / "mnist") == []


def test_redirects_between_http_urls_are_followed(tmp_path, download, no_proxy):
    served, digest = _served_file(tmp_path)
    with _http_server(served) as target:
        def redirect(conn, stop):
            conn.sendall(f"HTTP/1.1 301 Moved\r\nLocation: {target}file.gz\r\n"
                         "Content-Length: 0\r\nConnection: close\r\n\r\n".encode())

        with _socket_server(redirect) as url:
            datasets._download(url + "x", tmp_path / "got", digest)
    assert (tmp_path / "got").read_bytes() == (served / "file.gz").read_bytes()


# mlp_cy.datasets without the package's __init__, which imports scikit-learn: the
# child starts in a fraction of a second.
_DOWNLOADER = textwrap.dedent("""
    import sys, types
    package = types.ModuleType("mlp_cy")
    package.__path__ = [sys.argv[3]]
    sys.modules["mlp_cy"] = package
    from mlp_cy import datasets
    datasets._download(sys.argv[1], sys.argv[2], "0" * 64)
""")


def _killed_download(tmp_path, url, signum):
    """Start a download in a child, kill it with ``signum`` once its .part file
    exists, and return the child's exit status."""
    target = tmp_path / "dl" / "train-images-idx3-ubyte.gz"
    target.parent.mkdir()
    child = subprocess.Popen([sys.executable, "-c", _DOWNLOADER, url + "x", str(target),
                              os.path.dirname(mlp_cy.__file__)])
    try:
        deadline = time.monotonic() + 30
        while not [p for p in os.listdir(target.parent) if p.endswith(".part")]:
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.02)
        time.sleep(0.3)    # in the middle of the body
        child.send_signal(signum)
        return child.wait(timeout=30), target
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_part_file_is_removed_when_killed_by_sigterm(tmp_path, no_proxy):
    with _socket_server(_headers_then_drip) as url:
        status, target = _killed_download(tmp_path, url, signal.SIGTERM)
    assert status == -signal.SIGTERM                 # still ends by the signal
    assert os.listdir(target.parent) == []


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals and locks")
def test_part_file_left_by_sigkill_is_removed_by_the_next_download(tmp_path, download,
                                                                    no_proxy):
    with _socket_server(_headers_then_drip) as url:
        status, target = _killed_download(tmp_path, url, signal.SIGKILL)
    assert status == -signal.SIGKILL
    [left] = os.listdir(target.parent)
    assert left.endswith(".part")
    # A recent .part may be a live writer's that has not locked it yet: kept.
    download(target)
    assert sorted(os.listdir(target.parent)) == sorted([left, target.name])
    old = time.time() - 60
    os.utime(target.parent / left, (old, old))
    download(target)
    assert os.listdir(target.parent) == [target.name]


@pytest.mark.skipif(os.name == "nt", reason="POSIX locks")
def test_a_live_writers_temporary_file_is_never_removed(tmp_path):
    target = tmp_path / "a.idx"
    with _atomic.atomic_writer(target, suffix=".part") as f:
        f.write(b"partial")
        [tmp] = os.listdir(tmp_path)
        old = time.time() - 3600
        os.utime(tmp_path / tmp, (old, old))
        _atomic.remove_stale(target, ".part")        # another process's cleanup
        _write_idx(tmp_path / "a.idx.other")         # and another target's
        assert tmp in os.listdir(tmp_path)
    assert target.read_bytes() == b"partial"
