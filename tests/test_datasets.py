"""Tests for mlp_cy.datasets: IDX reading/writing and the MNIST loaders.

Everything runs offline: downloads are served by a local HTTP server on
127.0.0.1, and HOME, XDG_CACHE_HOME, MLP_CY_DATA and the system data
directories are redirected to temporary directories so that the real cache
is never touched.
"""

import functools
import gzip
import hashlib
import http.server
import os
import socket
import struct
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from mlp_cy import datasets
from mlp_cy.datasets import (
    MIRRORS,
    ChecksumError,
    DatasetNotFoundError,
    IDXFormatError,
    get_data_home,
    load_mnist,
    read_idx,
    write_idx,
)

SYSTEM_DATA_DIRS = datasets._SYSTEM_DATA_DIRS
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
FILE_NAMES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]
N_TRAIN, N_TEST = 20, 10


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Keep every test away from the real cache, data and network settings."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("MLP_CY_DATA", raising=False)
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setattr(
        datasets, "_SYSTEM_DATA_DIRS", (str(tmp_path / "system-datasets"),)
    )


def make_fake_dataset(directory, *, gz=True, seed=0, n_train=N_TRAIN, n_test=N_TEST):
    """Write a tiny MNIST-like data set into ``directory``."""
    rng = np.random.default_rng(seed)
    arrays = [
        rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, size=n_train, dtype=np.uint8),
        rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, size=n_test, dtype=np.uint8),
    ]
    os.makedirs(directory, exist_ok=True)
    for name, array in zip(FILE_NAMES, arrays):
        write_idx(os.path.join(directory, name if gz else name[:-3]), array)
    return arrays


def sha256_table(directory):
    return {
        name: hashlib.sha256((directory / name).read_bytes()).hexdigest()
        for name in FILE_NAMES
    }


def assert_loaded(result, arrays, dtype=np.float32):
    """Check load_mnist's result against the arrays of make_fake_dataset."""
    for X, y, images, labels in [
        (*result[:2], *arrays[:2]),
        (*result[2:], *arrays[2:]),
    ]:
        assert X.shape == (len(labels), 784) and X.dtype == dtype
        assert y.shape == labels.shape and y.dtype == np.uint8
        assert_array_equal(y, labels)
        expected = images.reshape(-1, 784).astype(np.float64)
        if dtype != np.uint8:
            expected /= 255
            assert X.min() >= 0 and X.max() <= 1
        assert_allclose(X, expected, rtol=1e-6)


def assert_no_temp_files(directory):
    if directory.exists():
        leftovers = [p.name for p in directory.iterdir() if p.name.endswith(".part")]
        assert leftovers == []


# --------------------------------------------------------------------------
# IDX files
# --------------------------------------------------------------------------

IDX_DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


@pytest.mark.parametrize("dtype", IDX_DTYPES)
@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("shape", [(7,), (3, 4, 5), (2, 0, 3)])
def test_idx_round_trip(tmp_path, dtype, suffix, shape):
    rng = np.random.default_rng(0)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    else:
        array = rng.standard_normal(shape).astype(dtype)
    path = tmp_path / "out" / f"array.idx{suffix}"
    path.parent.mkdir()
    write_idx(path, array)

    result = read_idx(path)
    assert result.dtype == dtype and result.dtype.isnative
    assert result.shape == shape
    assert_array_equal(result, array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    assert os.listdir(path.parent) == [path.name]


def test_write_idx_exact_bytes(tmp_path):
    path = tmp_path / "a.idx"
    write_idx(path, np.array([[1, -2, 3], [256, 5, -32768]], dtype=np.int16))
    expected = bytes([0, 0, 0x0B, 2]) + struct.pack(">II", 2, 3)
    expected += struct.pack(">6h", 1, -2, 3, 256, 5, -32768)
    assert path.read_bytes() == expected


def test_read_idx_hand_made_file(tmp_path):
    path = tmp_path / "a.idx"
    path.write_bytes(
        bytes([0, 0, 0x0E, 2])
        + struct.pack(">II", 2, 2)
        + struct.pack(">4d", 0.5, -1, 2, 1e300)
    )
    result = read_idx(path)
    assert result.dtype == np.float64 and result.dtype.isnative
    assert_array_equal(result, [[0.5, -1], [2, 1e300]])


@pytest.mark.parametrize("dtype", [">i4", "<i4", ">f8", "<f8"])
def test_write_idx_any_byte_order(tmp_path, dtype):
    array = np.arange(12, dtype=dtype).reshape(3, 4)[:, ::2]  # not contiguous
    write_idx(tmp_path / "a.idx", array)
    assert_array_equal(read_idx(tmp_path / "a.idx"), array)


def test_read_idx_detects_gzip_by_content(tmp_path):
    array = np.arange(10, dtype=np.uint8)
    write_idx(tmp_path / "a.gz", array)
    os.rename(tmp_path / "a.gz", tmp_path / "compressed-without-suffix")
    assert_array_equal(read_idx(tmp_path / "compressed-without-suffix"), array)
    write_idx(tmp_path / "b", array)
    os.rename(tmp_path / "b", tmp_path / "plain.gz")
    assert_array_equal(read_idx(str(tmp_path / "plain.gz")), array)


def test_read_idx_mmap(tmp_path):
    array = np.arange(60, dtype=np.int32).reshape(3, 4, 5)
    write_idx(tmp_path / "a.idx", array)
    result = read_idx(tmp_path / "a.idx", mmap=True)
    assert isinstance(result, np.memmap)
    assert not result.flags.writeable
    assert result.shape == (3, 4, 5)
    assert_array_equal(result, array)
    with pytest.raises(ValueError, match="read-only"):
        result[0, 0, 0] = 1
    del result


def test_read_idx_mmap_gzip_raises(tmp_path):
    write_idx(tmp_path / "a.idx.gz", np.zeros(3, dtype=np.uint8))
    with pytest.raises(ValueError, match="gunzip") as excinfo:
        read_idx(tmp_path / "a.idx.gz", mmap=True)
    assert not isinstance(excinfo.value, IDXFormatError)


def _header(code, *dims):
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


MALFORMED = {
    "empty": (b"", "empty"),
    "bad magic": (b"\x01\x02\x08\x01" + struct.pack(">I", 1) + b"x", "magic"),
    "bad type code": (_header(0x0A, 1) + b"x", "type code 0x0A"),
    "zero ndim": (bytes([0, 0, 0x08, 0]) + b"xxxx", "0 dimensions"),
    "truncated header": (
        bytes([0, 0, 0x08, 3]) + b"\x00\x00\x00\x01",
        "inside the IDX header",
    ),
    "truncated data": (_header(0x0C, 2, 5) + bytes(39), "truncated"),
    "extra data": (_header(0x08, 10) + bytes(11), "trailing data"),
    "2**40 elements": (_header(0x08, 2**20, 2**20) + bytes(100), "1099511627776"),
    "8 GiB of float64": (_header(0x0E, 2**30) + bytes(100), "8589934592"),
}


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("case", list(MALFORMED))
def test_read_idx_malformed(tmp_path, case, compress):
    content, match = MALFORMED[case]
    path = tmp_path / "bad.idx"
    path.write_bytes(gzip.compress(content) if compress else content)
    # Refused from the header, before reading the data: nothing near the claimed
    # size is allocated (no clock: tracemalloc slows everything down).
    tracemalloc.start()
    try:
        with pytest.raises(IDXFormatError, match=match) as excinfo:
            read_idx(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20, f"{peak} bytes allocated"
    assert isinstance(excinfo.value, ValueError)
    message = str(excinfo.value)
    assert str(path) in message
    assert any(word in message for word in ("delete", "Check", "check"))


def test_read_idx_mmap_validates_first(tmp_path):
    path = tmp_path / "bad.idx"
    path.write_bytes(_header(0x08, 2**20, 2**20))
    with pytest.raises(IDXFormatError, match="truncated"):
        read_idx(path, mmap=True)


def test_read_idx_gzip_bomb_is_read_bounded(tmp_path):
    # 16 MiB of zeros compress to ~16 KiB; the header claims 4 bytes.
    path = tmp_path / "bomb.idx.gz"
    path.write_bytes(gzip.compress(_header(0x08, 4) + bytes(2**24), compresslevel=1))
    tracemalloc.start()
    try:
        with pytest.raises(IDXFormatError, match="at least 5"):
            read_idx(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20, f"{peak} bytes allocated"


def _status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK),
                    reason="needs Linux's /proc/self/clear_refs to measure peak RSS")
def test_read_idx_gzip_lying_header_is_read_bounded(tmp_path):
    # A plausible claim (512 MiB, allowed by the compression ratio of 1 MiB
    # of random bytes) with only 1 MiB of data: the read stops at the real
    # end of the data, and only the memory of the data read is used (the
    # claim is reserved as address space, whose pages are never touched).
    data = np.random.default_rng(0).integers(0, 256, 2**20, dtype=np.uint8).tobytes()
    path = tmp_path / "liar.idx.gz"
    path.write_bytes(gzip.compress(_header(0x08, 2**29) + data, compresslevel=1))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")    # the peak RSS starts again from the current RSS
    before = _status("VmRSS")
    with pytest.raises(IDXFormatError, match="truncated"):
        read_idx(path)
    peak = _status("VmHWM") - before
    assert peak < 2**24, f"peak RSS {peak} bytes above the RSS before"


def test_read_idx_corrupt_gzip(tmp_path):
    content = gzip.compress(_header(0x08, 1000) + bytes(range(250)) * 4)
    path = tmp_path / "cut.idx.gz"
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(IDXFormatError, match="gzip stream"):
        read_idx(path)


@pytest.mark.parametrize(
    "array, match",
    [
        (np.zeros(3, dtype=np.int64), "dtype int64"),
        (np.zeros(3, dtype=bool), "dtype bool"),
        (np.zeros(3, dtype=np.complex64), "dtype complex64"),
        (np.float32(1.0), "1 to 255 dimensions"),
    ],
)
def test_write_idx_rejects(tmp_path, array, match):
    (tmp_path / "out").mkdir()
    with pytest.raises(ValueError, match=match):
        write_idx(tmp_path / "out" / "a.idx", array)
    assert os.listdir(tmp_path / "out") == []


def test_write_idx_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "out" / "a.idx.gz"
    path.parent.mkdir()
    write_idx(path, np.arange(5, dtype=np.uint8))
    before = path.read_bytes()

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_idx(path, np.arange(50, dtype=np.uint8))
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == [path.name]


# --------------------------------------------------------------------------
# Finding the data set on disk
# --------------------------------------------------------------------------


def test_get_data_home(tmp_path, monkeypatch):
    assert get_data_home() == str(tmp_path / "xdg-cache" / "mlp_cy")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert get_data_home() == os.path.join(str(tmp_path / "home"), ".cache", "mlp_cy")
    monkeypatch.setenv("MLP_CY_DATA", str(tmp_path / "env"))
    assert get_data_home() == str(tmp_path / "env")
    assert get_data_home(tmp_path / "explicit") == str(tmp_path / "explicit")
    assert get_data_home("~/data") == str(tmp_path / "home" / "data")


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize("layout", ["flat", "nested"])
@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
@pytest.mark.parametrize("via", ["argument", "environment"])
def test_load_mnist_from_data_home(tmp_path, monkeypatch, name, layout, gz, via):
    data_home = tmp_path / "data"
    directory = data_home / name if layout == "nested" else data_home
    arrays = make_fake_dataset(directory, gz=gz)
    if via == "argument":
        result = load_mnist(name, data_home=data_home, download=False)
    else:
        monkeypatch.setenv("MLP_CY_DATA", str(data_home))
        result = load_mnist(name, download=False)
    assert_loaded(result, arrays)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8, "float64"])
def test_load_mnist_dtype(tmp_path, dtype):
    arrays = make_fake_dataset(tmp_path / "data")
    result = load_mnist(data_home=tmp_path / "data", download=False, dtype=dtype)
    assert_loaded(result, arrays, dtype=np.dtype(dtype))
    if np.dtype(dtype) == np.uint8:
        assert_array_equal(result[0], arrays[0].reshape(-1, 784))
    else:
        assert result[0].max() == 1.0 and result[0].min() == 0.0


def test_load_mnist_search_order(tmp_path, monkeypatch):
    make_fake_dataset(tmp_path / "system-datasets" / "mnist", seed=4)
    assert_loaded(load_mnist(download=False), make_fake_dataset(tmp_path / "x", seed=4))

    cache = make_fake_dataset(tmp_path / "xdg-cache" / "mlp_cy" / "mnist", seed=3)
    assert_loaded(load_mnist(download=False), cache)

    monkeypatch.delenv("XDG_CACHE_HOME")
    home_cache = make_fake_dataset(
        tmp_path / "home" / ".cache" / "mlp_cy" / "mnist", seed=5
    )
    assert_loaded(load_mnist(download=False), home_cache)

    flat = make_fake_dataset(tmp_path / "env", seed=2)
    monkeypatch.setenv("MLP_CY_DATA", str(tmp_path / "env"))
    assert_loaded(load_mnist(download=False), flat)

    nested = make_fake_dataset(tmp_path / "env" / "mnist", seed=1)
    assert_loaded(load_mnist(download=False), nested)

    explicit = make_fake_dataset(tmp_path / "explicit", seed=0)
    assert_loaded(load_mnist(data_home=tmp_path / "explicit", download=False), explicit)


def test_load_mnist_incomplete_directory_is_skipped(tmp_path):
    make_fake_dataset(tmp_path / "data")
    os.remove(tmp_path / "data" / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DatasetNotFoundError, match="only 3 of 4 files"):
        load_mnist(data_home=tmp_path / "data", download=False)


def test_load_mnist_not_found_offline(tmp_path):
    with pytest.raises(DatasetNotFoundError) as excinfo:
        load_mnist("fashion-mnist", data_home=tmp_path / "data", download=False)
    assert isinstance(excinfo.value, OSError)
    message = str(excinfo.value)
    for directory in [
        tmp_path / "data" / "fashion-mnist",
        tmp_path / "data",
        tmp_path / "xdg-cache" / "mlp_cy" / "fashion-mnist",
        tmp_path / "system-datasets" / "fashion-mnist",
    ]:
        assert str(directory) in message
    for hint in [
        "download=False",
        "MLP_CY_DATA",
        "data_home",
        "apt-get install dataset-fashion-mnist",
    ]:
        assert hint in message
    # Short lines, a mirror to each (not one line of hundreds of characters); paths
    # are the test's own, so only the lines without them are bounded.
    from mlp_cy.datasets import MIRRORS
    for mirror in MIRRORS["fashion-mnist"]:
        assert f"\n      {mirror}" in message
    long_lines = [line for line in message.splitlines()
                  if len(line) > 100 and str(tmp_path) not in line]
    assert long_lines == []
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    "corrupt, match",
    [
        (lambda a: a.__setitem__(0, a[0][:, :, :27].copy()), r"\(n, 28, 28\)"),
        (lambda a: a.__setitem__(1, a[1][:-1]), "19 labels for the 20 images"),
        (lambda a: a[3].__setitem__(0, 10), "labels in 0..9"),
        (lambda a: a.__setitem__(3, a[3].astype(np.int32)), "uint8 data expected"),
        (lambda a: a.__setitem__(1, a[1].reshape(4, 5)), r"shape \(n,\)"),
    ],
)
def test_load_mnist_validates_shapes(tmp_path, corrupt, match):
    arrays = make_fake_dataset(tmp_path / "data")
    corrupt(arrays)
    for name, array in zip(FILE_NAMES, arrays):
        write_idx(tmp_path / "data" / name, array)
    with pytest.raises(IDXFormatError, match=match):
        load_mnist(data_home=tmp_path / "data", download=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "cifar10"}, "name must be one of"),
        ({"dtype": np.int32}, "dtype must be"),
    ],
)
def test_load_mnist_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_mnist(download=False, **kwargs)


# --------------------------------------------------------------------------
# Downloading
# --------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """Serve a fake data set from a local HTTP server; yield its state."""
    served = tmp_path / "served"
    arrays = make_fake_dataset(served)
    requests = []

    class Handler(_QuietHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(served))
    )
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
    )
    thread.start()
    try:
        yield {
            "url": f"http://127.0.0.1:{httpd.server_address[1]}/",
            "dir": served,
            "arrays": arrays,
            "requests": requests,
        }
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture
def dead_url():
    """URL of a local port on which nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def fake_checksums(server, monkeypatch):
    table = sha256_table(server["dir"])
    for name in ("mnist", "fashion-mnist"):
        monkeypatch.setitem(datasets._SHA256, name, dict(table))
    return table


def test_published_checksum_table():
    for name in ("mnist", "fashion-mnist"):
        assert sorted(datasets._SHA256[name]) == sorted(FILE_NAMES)
        assert MIRRORS[name]
        for digest in datasets._SHA256[name].values():
            assert len(digest) == 64
            int(digest, 16)
    assert datasets._SHA256["mnist"]["t10k-labels-idx1-ubyte.gz"] == (
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"
    )


def test_download(server, fake_checksums, tmp_path, capsys):
    result = load_mnist(mirrors=[server["url"]], verbose=True)
    assert_loaded(result, server["arrays"])
    cache = tmp_path / "xdg-cache" / "mlp_cy" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(FILE_NAMES)
    for name in FILE_NAMES:
        assert (cache / name).read_bytes() == (server["dir"] / name).read_bytes()
    assert sorted(server["requests"]) == sorted(f"/{name}" for name in FILE_NAMES)
    err = capsys.readouterr().err
    assert "Downloading " + server["url"] in err and "MiB" in err

    # Loaded from the cache the second time, without the network.
    assert_loaded(load_mnist(download=False), server["arrays"])
    assert len(server["requests"]) == 4


def test_download_into_data_home_with_module_mirrors(
    server, fake_checksums, dead_url, tmp_path, monkeypatch
):
    monkeypatch.setitem(MIRRORS, "fashion-mnist", [dead_url, server["url"].rstrip("/")])
    result = load_mnist("fashion-mnist", data_home=tmp_path / "data")
    assert_loaded(result, server["arrays"])
    assert sorted(os.listdir(tmp_path / "data" / "fashion-mnist")) == sorted(FILE_NAMES)
    assert not (tmp_path / "xdg-cache").exists()


def test_download_resumes_missing_files(server, fake_checksums, tmp_path):
    cache = tmp_path / "xdg-cache" / "mlp_cy" / "mnist"
    cache.mkdir(parents=True)
    for name in FILE_NAMES[:2]:
        (cache / name).write_bytes((server["dir"] / name).read_bytes())
    assert_loaded(load_mnist(mirrors=[server["url"]]), server["arrays"])
    assert sorted(server["requests"]) == sorted(f"/{name}" for name in FILE_NAMES[2:])


def test_download_bad_checksum(server, fake_checksums, dead_url, tmp_path, monkeypatch):
    bad = {name: "0" * 64 for name in FILE_NAMES}
    monkeypatch.setitem(datasets._SHA256, "mnist", bad)
    with pytest.raises(ChecksumError, match="published SHA-256") as excinfo:
        load_mnist(mirrors=[server["url"], dead_url, server["url"]])
    assert isinstance(excinfo.value, ValueError)
    message = str(excinfo.value)
    assert message.count(server["url"] + FILE_NAMES[0]) == 2
    assert dead_url + FILE_NAMES[0] in message
    assert server["requests"] == [f"/{FILE_NAMES[0]}"] * 2
    cache = tmp_path / "xdg-cache" / "mlp_cy" / "mnist"
    assert list(cache.iterdir()) == []


def test_download_bad_checksum_of_one_file(
    server, fake_checksums, tmp_path, monkeypatch
):
    table = dict(fake_checksums)
    table[FILE_NAMES[2]] = "f" * 64
    monkeypatch.setitem(datasets._SHA256, "mnist", table)
    with pytest.raises(ChecksumError, match=FILE_NAMES[2]):
        load_mnist(mirrors=[server["url"]])
    cache = tmp_path / "xdg-cache" / "mlp_cy" / "mnist"
    # The files downloaded and verified before are kept, the bad one is not.
    assert sorted(p.name for p in cache.iterdir()) == sorted(FILE_NAMES[:2])


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_download_server_down(dead_url, tmp_path, name):
    with pytest.raises(DatasetNotFoundError) as excinfo:
        load_mnist(name, data_home=tmp_path / "data", mirrors=[dead_url])
    message = str(excinfo.value)
    for directory in [
        tmp_path / "data" / name,
        tmp_path / "data",
        tmp_path / "xdg-cache" / "mlp_cy" / name,
        tmp_path / "system-datasets" / name,
    ]:
        assert str(directory) in message
    assert dead_url + FILE_NAMES[0] in message
    assert "MLP_CY_DATA" in message
    assert ("apt-get install dataset-fashion-mnist" in message) == (
        name == "fashion-mnist"
    )
    assert list((tmp_path / "data" / name).iterdir()) == []


def test_download_missing_on_server(server, fake_checksums, tmp_path):
    os.remove(server["dir"] / FILE_NAMES[3])
    with pytest.raises(DatasetNotFoundError, match="404"):
        load_mnist(mirrors=[server["url"]])
    assert_no_temp_files(tmp_path / "xdg-cache" / "mlp_cy" / "mnist")


def test_download_false_does_not_touch_network(server, fake_checksums, monkeypatch):
    monkeypatch.setitem(MIRRORS, "mnist", [server["url"]])
    with pytest.raises(DatasetNotFoundError, match="download=False"):
        load_mnist(download=False)
    assert server["requests"] == []


def test_download_interrupted(server, fake_checksums, tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(datasets, "_print_progress", interrupt)
    with pytest.raises(KeyboardInterrupt):
        load_mnist(mirrors=[server["url"]], verbose=True)
    cache = tmp_path / "xdg-cache" / "mlp_cy" / "mnist"
    assert list(cache.iterdir()) == []


def test_download_rejects_non_http_mirror(tmp_path):
    with pytest.raises(ValueError, match="http or https"):
        load_mnist(mirrors=[tmp_path.as_uri()])


# --------------------------------------------------------------------------
# The real Fashion-MNIST, as installed by Debian's dataset-fashion-mnist
# --------------------------------------------------------------------------


needs_debian_fashion_mnist = pytest.mark.usefixtures("system_fashion_mnist")


@needs_debian_fashion_mnist
def test_load_debian_fashion_mnist(monkeypatch):
    monkeypatch.setattr(datasets, "_SYSTEM_DATA_DIRS", SYSTEM_DATA_DIRS)
    X_train, y_train, X_test, y_test = load_mnist("fashion-mnist", download=False)
    assert X_train.shape == (60000, 784) and X_test.shape == (10000, 784)
    assert X_train.dtype == np.float32 and X_test.dtype == np.float32
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert y_train.dtype == np.uint8 and y_test.dtype == np.uint8
    assert X_train.min() == 0 and X_train.max() == 1
    assert X_test.min() >= 0 and X_test.max() <= 1
    assert_array_equal(np.bincount(y_train), [6000] * 10)
    assert_array_equal(np.bincount(y_test), [1000] * 10)
    assert_array_equal(y_train[:4], [9, 0, 0, 3])
    assert_array_equal(y_test[:4], [9, 2, 1, 1])


@needs_debian_fashion_mnist
@pytest.mark.parametrize(
    "name, mtime",
    [
        ("train-images-idx3-ubyte.gz", 1504176606),
        ("train-labels-idx1-ubyte.gz", 1504176606),
        ("t10k-images-idx3-ubyte.gz", 1504176627),
        ("t10k-labels-idx1-ubyte.gz", 1504176627),
    ],
)
def test_fashion_mnist_digests_match_debian_files(name, mtime):
    # Debian's files hold the original compressed data behind a normalised
    # gzip header (no file name, no original mtime). Restoring the original
    # header must give the published file, whose SHA-256 is in the table.
    debian = (Path(DEBIAN_FASHION_MNIST) / name).read_bytes()
    assert debian[:4] == b"\x1f\x8b\x08\x00"  # deflate, no optional fields
    original = (
        b"\x1f\x8b\x08\x08"  # deflate, FNAME
        + struct.pack("<I", mtime)
        + debian[8:10]
        + name.removesuffix(".gz").encode()
        + b"\x00"
        + debian[10:]
    )
    assert (
        hashlib.sha256(original).hexdigest() == datasets._SHA256["fashion-mnist"][name]
    )
