"""Fuzzing the two file readers: mlp_cy.datasets.read_idx and mlp_cy.load.

Inputs are valid files mutated by hypothesis (bit flips, byte writes, truncations,
insertions and deletions; edits of the IDX header, of the gzip, zip and .npy headers
and of the .npy header text; members of the .npz re-zipped with correct CRCs after
their bytes were mutated, dropped or duplicated) and fully random bytes, and the
shapes of the attacks in test_hostile_files.py: gzip and zip bombs (headers that
declare megabytes to gigabytes over megabytes of compressed zeros), members named
like a key without ".npy", dozens of members, long member names, .npy headers of
format 2.0 that declare huge lengths. Only the documented exceptions may come out,
with a message of at most MAX_MESSAGE characters:

* read_idx (plain, mmap=True and with max_bytes): IDXFormatError; and, with
  mmap=True on a gzip file, the ValueError that read_idx documents for it;
* load: ModelFileError; and a model that loads must predict.

Each target runs in a child process (``python tests/test_fuzz.py TARGET N``), so a
crash fails the test instead of killing pytest, with a watchdog (faulthandler) that
kills the child if one example runs longer than HANG_SECONDS, and an address-space
limit: a file claiming terabytes must get the documented error, never a MemoryError
(the child reports its peak RSS, which the test bounds). The child does not stop at
the first unexpected exception: it records every kind (type and message pattern,
with the first input that raised it saved to FUZZ_OUT_DIR when that is set), counts
the examples and prints one JSON summary.

The long run recorded in docs/reliability.md is this file's child with more examples:

    python tests/test_fuzz.py idx 20000 --seed 1
    python tests/test_fuzz.py model 20000 --seed 1
"""

import gzip
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
import zlib

import numpy as np

HANG_SECONDS = 20
CI_EXAMPLES = 400                 # per target; the child prints how many ran
ADDRESS_SPACE = 2 * 2**30         # RLIMIT_AS of the child
MAX_PEAK_RSS = 1024               # MiB: the child's peak RSS, imports included
MAX_MESSAGE = 2000                # characters of an error's message
MiB = 2**20


# Seed files --------------------------------------------------------------------------

def _idx_seeds():
    """(plain IDX bytes, compress?) pairs: every type code, 1 to 4 dimensions."""
    from mlp_cy.datasets import write_idx

    rng = np.random.RandomState(0)
    arrays = [
        rng.randint(0, 256, (5, 4, 4)).astype(np.uint8),          # MNIST images
        rng.randint(0, 10, 7).astype(np.uint8),                     # MNIST labels
        rng.randint(-128, 128, (3, 5)).astype(np.int8),
        rng.randint(-1000, 1000, (2, 3, 2, 2)).astype(np.int16),
        rng.randint(-2**31, 2**31, (6,)).astype(np.int32),
        rng.rand(4, 3).astype(np.float32),
        rng.rand(2, 2, 3).astype(np.float64),
        np.zeros((0, 3), np.uint8),
    ]
    seeds = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, array in enumerate(arrays):
            path = os.path.join(tmp, f"{i}.idx")
            write_idx(path, array)
            with open(path, "rb") as f:
                seeds.append((f.read(), i % 2 == 1))
    return seeds


def _model_seeds():
    """Model files of several kinds: float32/float64, solvers, labels, extras."""
    from mlp_cy import MLPClassifier

    rng = np.random.RandomState(0)
    X = rng.rand(60, 4)
    y = np.arange(60) % 3
    fits = [
        (MLPClassifier(hidden_layer_sizes=3, max_iter=2, random_state=0),
         X.astype(np.float32), y),
        (MLPClassifier(hidden_layer_sizes=(2,), solver="adam", max_iter=3,
                       early_stopping=True, random_state=1), X, np.array(["a", "b", "c"])[y]),
        (MLPClassifier(hidden_layer_sizes=2, momentum=0.9, class_weight={0: 2.0, 1: 1.0},
                       max_iter=1), X.astype(np.float32), y % 2),
    ]
    seeds = []
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, (clf, Xi, yi) in enumerate(fits):
            if i == 2:
                clf.partial_fit(Xi, yi, classes=[0, 1])      # optimizer state saved
            else:
                clf.fit(Xi, yi)
            path = os.path.join(tmp, f"{i}.npz")
            clf.save(path)
            with open(path, "rb") as f:
                seeds.append(f.read())
        pandas = _maybe_pandas()
        if pandas is not None:                                # feature_names_in_
            frame = pandas.DataFrame(X, columns=list("abcd"))
            clf = MLPClassifier(hidden_layer_sizes=2, max_iter=1).fit(frame, y)
            path = os.path.join(tmp, "names.npz")
            clf.save(path)
            with open(path, "rb") as f:
                seeds.append(f.read())
    return seeds


def _maybe_pandas():
    try:
        import pandas
    except ImportError:
        return None
    return pandas


# Mutations ---------------------------------------------------------------------------

INTERESTING = [0, 1, 2, 3, 4, 7, 8, 0x0D, 0x0E, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF,
               0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]
NPY_TEXT_EDITS = [
    (rb"'descr': '[^']*'", [b"'descr': '<f8'", b"'descr': '>f4'", b"'descr': '|u1'",
                            b"'descr': '<U99999'", b"'descr': '|O'", b"'descr': '<c16'",
                            b"'descr': '|V8'", b"'descr': '<M8[D]'", b"'descr': '<f2'",
                            b"'descr': [('a', '<i4')]", b"'descr': 'x'", b"'descr': '<i8'"]),
    (rb"'shape': \([^)]*\)", [b"'shape': ()", b"'shape': (0,)", b"'shape': (1,)",
                              b"'shape': (3, 4)", b"'shape': (-1,)", b"'shape': (2**64,)",
                              b"'shape': (99999999999,)", b"'shape': (100000, 100000)",
                              b"'shape': (1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1)",
                              b"'shape': (4, 3, 2, 1, 0)", b"'shape': ((),)"]),
    (rb"'fortran_order': \w+", [b"'fortran_order': True", b"'fortran_order': 1",
                                b"'fortran_order': None"]),
]


def _header_regions(data):
    """(start, end) of the gzip, zip and .npy headers in ``data``."""
    regions = []
    if data[:2] == b"\x1f\x8b":
        regions += [(0, 10), (max(len(data) - 8, 0), len(data))]
    for signature, size in ((b"PK\x03\x04", 30), (b"PK\x01\x02", 46), (b"PK\x05\x06", 22)):
        for match in re.finditer(re.escape(signature), data):
            regions.append((match.start(), min(match.start() + size, len(data))))
    for match in re.finditer(re.escape(b"\x93NUMPY"), data):
        end = data.find(b"\n", match.start())
        regions.append((match.start(), end + 1 if end > 0 else len(data)))
    return regions or [(0, min(len(data), 64))]


def _fix_npy_header_length(data):
    """Make the HEADER_LEN field of a .npy (format 1.0) agree with its header text."""
    if data[:6] == b"\x93NUMPY" and data[6:7] == b"\x01":
        end = data.find(b"\n", 10)
        if end > 0 and end + 1 - 10 < 2**16:
            data[8:10] = struct.pack("<H", end + 1 - 10)


def _deflated_zeros(prefix, n_mib):
    """Raw DEFLATE data of ``prefix`` and ``n_mib`` MiB of zeros, about 1 KiB a MiB:
    one fully flushed block of zeros, repeated (see test_hostile_files.py)."""
    head = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = block.compress(bytes(MiB)) + block.flush(zlib.Z_FULL_FLUSH)
    return head.compress(prefix) + head.flush(zlib.Z_FULL_FLUSH) + zeros * n_mib \
        + b"\x03\x00"


def _gzip_zeros(prefix, n_mib):
    """A gzip file of ``prefix`` and ``n_mib`` MiB of zeros, with its real CRC."""
    crc = zlib.crc32(prefix)
    for _ in range(n_mib):
        crc = zlib.crc32(bytes(MiB), crc)
    return (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
            + _deflated_zeros(prefix, n_mib)
            + struct.pack("<II", crc, (len(prefix) + n_mib * MiB) & 0xFFFFFFFF))


BOMB_SHAPES = [(2**20,), (2**28,), (10**12,), (3, 2**26), (2**16, 2**16), (4, 3)]


def _npy_header(descr, shape, version=(1, 0), length=None):
    """A .npy header; ``length`` overrides the header length it declares."""
    text = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode()
    text += b" " * (-(len(text) + 12) % 64) + b"\n"
    form = "<H" if version == (1, 0) else "<I"
    return (b"\x93NUMPY" + bytes(version)
            + struct.pack(form, len(text) if length is None else length) + text)


def _strategies(target, seeds):
    from hypothesis import strategies as st

    regions = {}

    def byte_ops(draw, data):
        """1 to 4 mutations of ``data``, biased towards its headers."""
        data = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            if not data:
                data += draw(st.binary(min_size=1, max_size=16))
                continue
            op = draw(st.sampled_from(["flip", "write", "truncate", "insert", "delete",
                                       "header", "header", "text"]))
            at = draw(st.integers(0, len(data) - 1))
            if op == "header":
                key = bytes(data[:64]), len(data)
                if key not in regions:
                    regions[key] = _header_regions(bytes(data))
                start, end = draw(st.sampled_from(regions[key]))
                at = draw(st.integers(start, max(start, min(end, len(data)) - 1)))
            if op == "flip":
                data[at] ^= 1 << draw(st.integers(0, 7))
            elif op == "write":
                data[at] = draw(st.integers(0, 255))
            elif op == "truncate":
                del data[at:]
            elif op == "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=64))
            elif op == "delete":
                del data[at:at + draw(st.integers(1, 64))]
            elif op == "header":    # an interesting 1-, 2- or 4-byte value
                width = draw(st.sampled_from([1, 2, 4]))
                value = draw(st.sampled_from(INTERESTING)) & ((1 << 8 * width) - 1)
                order = "big" if draw(st.booleans()) else "little"
                data[at:at + width] = value.to_bytes(width, order)
            else:                   # edit the text of a .npy header
                pattern, choices = draw(st.sampled_from(NPY_TEXT_EDITS))
                matches = list(re.finditer(pattern, bytes(data)))
                if matches:
                    match = draw(st.sampled_from(matches))
                    data[match.start():match.end()] = draw(st.sampled_from(choices))
                    if draw(st.booleans()):
                        _fix_npy_header_length(data)
        return bytes(data)

    @st.composite
    def idx_bomb(draw):
        """A gzip of an IDX header and MiBs of zeros: as much as it declares, or not."""
        code = draw(st.sampled_from([0x08, 0x0C, 0x0E]))
        dims = draw(st.sampled_from([(2**20,), (2**26,), (2**14, 28, 28), (4, 2**20),
                                     (0xFFFFFFFF, 28, 28), (2**24,), (16, 2**16)]))
        header = bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)
        return _gzip_zeros(header, draw(st.sampled_from([0, 1, 4, 16, 64])))

    @st.composite
    def mutated_idx(draw):
        plain, compress = draw(st.sampled_from(seeds))
        if draw(st.integers(0, 9)) == 0:
            return draw(idx_bomb())
        if draw(st.integers(0, 3)) == 0:   # a header built from scratch
            ndim = draw(st.sampled_from([0, 1, 2, 3, 4, 64, 65, 255]))
            code = draw(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x0A, 0xFF]))
            dims = draw(st.lists(st.sampled_from(INTERESTING + [5, 16]),
                                 min_size=ndim, max_size=ndim))
            plain = bytes([0, 0, code, ndim]) + b"".join(struct.pack(">I", d) for d in dims) \
                + plain[4 + 4 * plain[3]:]
        else:
            plain = byte_ops(draw, plain)
        data = gzip.compress(plain, mtime=0) if compress else plain
        if compress and draw(st.integers(0, 2)) == 0:   # mutate the gzip stream too
            data = byte_ops(draw, data)
        return data

    @st.composite
    def mutated_model(draw):
        return byte_ops(draw, draw(st.sampled_from(seeds)))

    @st.composite
    def rezipped_model(draw):
        """Members mutated (or dropped, duplicated, added) and re-zipped, valid CRCs."""
        base = draw(st.sampled_from(seeds))
        with zipfile.ZipFile(io.BytesIO(base)) as zf:
            members = [(info.filename, zf.read(info)) for info in zf.infolist()]
        for _ in range(draw(st.integers(1, 3))):
            i = draw(st.integers(0, len(members) - 1))
            name, content = members[i]
            op = draw(st.sampled_from(["bytes", "bytes", "bytes", "drop", "duplicate",
                                       "add", "swap", "bomb", "twin", "many", "long",
                                       "v2"]))
            if op == "bytes":
                members[i] = (name, byte_ops(draw, content))
            elif op == "drop":
                del members[i]
                if not members:
                    break
            elif op == "duplicate":
                members.append((name, content))
            elif op == "add":
                members.append((draw(st.sampled_from(["x.npy", "extra", "a/b.npy", "W1"])),
                                content))
            elif op == "bomb":      # a header declaring much, over MiBs of zeros
                descr = draw(st.sampled_from(["<f4", "<f8", "<U100", "|u1"]))
                header = _npy_header(descr, draw(st.sampled_from(BOMB_SHAPES)))
                members[i] = (name, header + bytes(draw(st.sampled_from([0, 48, MiB,
                                                                         2 * MiB]))))
            elif op == "twin":      # a member named like a key, without ".npy"
                members.append((name.removesuffix(".npy"),
                                draw(st.sampled_from([content, bytes(64)]))))
            elif op == "many":
                members += [(f"m{j}.npy", content[:draw(st.integers(0, 200))])
                            for j in range(draw(st.sampled_from([20, 60, 200])))]
            elif op == "long":
                members.append(("x" * draw(st.sampled_from([300, 5000, 65000])) + ".npy",
                                content))
            elif op == "v2":        # format 2.0, maybe declaring a huge header
                length = draw(st.sampled_from([None, 2**16, 2**31, 2**32 - 1]))
                members[i] = (name, _npy_header("<f8", (4, 3), (2, 0), length)
                              + bytes(96))
            else:   # another member's content under this name
                members[i] = (name, members[draw(st.integers(0, len(members) - 1))][1])
        out = io.BytesIO()
        method = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_STORED,
                                       zipfile.ZIP_DEFLATED]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")       # duplicate names
            with zipfile.ZipFile(out, "w", method) as zf:
                for name, content in members:
                    zf.writestr(name, content)
        return out.getvalue()

    if target == "idx":
        prefixes = [b"", b"\x00\x00\x08\x03", b"\x00\x00\x0e\x01", b"\x1f\x8b\x08\x00"]
        mutated = [mutated_idx()] * 3
    else:
        prefixes = [b"", b"PK\x03\x04", b"\x93NUMPY\x01\x00", b"\x80\x04\x95"]
        mutated = [mutated_model(), rezipped_model(), rezipped_model()]
    random_bytes = st.builds(lambda p, b: p + b, st.sampled_from(prefixes),
                             st.binary(max_size=600))
    return st.one_of(*mutated, random_bytes)


# The child: run the fuzzer, print a JSON summary ------------------------------------

def _check_idx(path, record):
    from mlp_cy.datasets import IDXFormatError, read_idx

    size = os.path.getsize(path)
    # Plain, mmap=True, and with a bound like load_mnist's, one that varies.
    for mmap, max_bytes in ((False, None), (True, None), (False, size * (size % 7))):
        try:
            array = read_idx(path, mmap=mmap, max_bytes=max_bytes)
        except IDXFormatError as exc:
            record(exc)
            continue
        except ValueError as exc:
            if mmap and "gzip-compressed and cannot be memory-mapped" in str(exc):
                record(exc)
                continue
            raise
        assert isinstance(array, np.ndarray), type(array)
        with open(path, "rb") as f:
            head = f.read(4)
        if head[:2] == b"\x00\x00":          # uncompressed: the header's shape
            assert array.ndim == head[3], (array.shape, head)
        del array                             # release the memmap
        record(None)


def _check_model(path, record):
    import mlp_cy
    from mlp_cy.persistence import ModelFileError

    try:
        clf = mlp_cy.load(path)
    except ModelFileError as exc:
        record(exc)
        return
    record(None)
    n_features = clf.n_features_in_
    if n_features * clf.coefs_[0].shape[1] <= 10**7:   # a model that loads predicts
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            proba = clf.predict_proba(np.zeros((3, n_features)))
        assert proba.shape == (3, len(clf.classes_)), proba.shape
        assert clf.predict(np.zeros((2, n_features))).shape == (2,)


def _pattern(message):
    """The gist of a message, to group by: quoted names, numbers, tuples elided."""
    message = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", message.split("\n")[0])
    message = re.sub(r"\b(0x)?[0-9a-fA-F]*\d[0-9a-fA-F]*\b", "N", message)
    message = re.sub(r"\([^()]*\)", "(…)", message)
    return message.removeprefix("'…': ").removeprefix("'…' is not a valid mlp_cy model "
                                                      "file: ")[:90]


def main(argv):
    import argparse
    import faulthandler
    import resource

    from hypothesis import HealthCheck, given, settings

    parser = argparse.ArgumentParser()
    parser.add_argument("target", choices=["idx", "model"])
    parser.add_argument("examples", type=int)
    parser.add_argument("--seed", type=int, default=None,
                        help="hypothesis seed; without it the run is derandomized")
    args = parser.parse_args(argv)
    try:
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    except (ValueError, OSError):
        pass
    warnings.simplefilter("ignore")
    seeds = _idx_seeds() if args.target == "idx" else _model_seeds()
    check = _check_idx if args.target == "idx" else _check_model
    out_dir = os.environ.get("FUZZ_OUT_DIR")
    counts = {"examples": 0, "accepted": 0, "refused": 0}
    expected, unexpected = {}, {}
    slowest = [0.0]
    # Under the test's tmp_path when the test runs it (FUZZ_TMP_DIR), removed at the end.
    tmp = tempfile.mkdtemp(prefix="mlp_cy-fuzz-", dir=os.environ.get("FUZZ_TMP_DIR"))
    path = os.path.join(tmp, "input")

    def record(exc):
        if exc is None:
            counts["accepted"] += 1
        elif len(str(exc)) > MAX_MESSAGE:   # a finding: raised into the fuzz loop
            raise AssertionError(f"a message of {len(str(exc))} characters: "
                                 f"{str(exc)[:200]}")
        else:
            counts["refused"] += 1
            key = f"{type(exc).__name__}: {_pattern(str(exc))}"
            expected[key] = expected.get(key, 0) + 1

    @settings(max_examples=args.examples, deadline=None, database=None,
              derandomize=args.seed is None, print_blob=False,
              suppress_health_check=list(HealthCheck))
    @given(_strategies(args.target, seeds))
    def fuzz(data):
        counts["examples"] += 1
        with open(path, "wb") as f:
            f.write(data)
        faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)
        start = time.perf_counter()
        try:
            check(path, record)
        except BaseException as exc:   # noqa: BLE001 - every other exception is a finding
            if isinstance(exc, KeyboardInterrupt):
                raise
            key = f"{type(exc).__name__}: {_pattern(str(exc))}"
            if key not in unexpected:
                unexpected[key] = {"count": 0, "example": str(exc)[:300],
                                   "input_head": data[:48].hex(), "size": len(data)}
                if out_dir:
                    os.makedirs(out_dir, exist_ok=True)
                    name = f"{args.target}-{len(unexpected)}.bin"
                    with open(os.path.join(out_dir, name), "wb") as f:
                        f.write(data)
                    unexpected[key]["saved_as"] = name
            unexpected[key]["count"] += 1
        finally:
            faulthandler.cancel_dump_traceback_later()
            slowest[0] = max(slowest[0], time.perf_counter() - start)

    if args.seed is not None:
        from hypothesis import seed as hypothesis_seed
        fuzz = hypothesis_seed(args.seed)(fuzz)
    start = time.perf_counter()
    try:
        fuzz()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({
        "target": args.target, **counts, "seconds": round(time.perf_counter() - start, 1),
        "slowest_example_seconds": round(slowest[0], 3),
        # KiB on Linux, bytes on macOS
        "peak_rss_mib": round(peak_rss / (2**20 if sys.platform == "darwin" else 1024)),
        "refusals": dict(sorted(expected.items(), key=lambda kv: -kv[1])),
        "unexpected": unexpected,
    }))
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


# The tests ---------------------------------------------------------------------------

import pytest  # noqa: E402
from conftest import importorskip  # noqa: E402


def _run_child(target, examples, tmp_path):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               FUZZ_TMP_DIR=str(tmp_path))
    proc = subprocess.run([sys.executable, __file__, target, str(examples)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode >= 0, (
        f"the fuzzer's child was killed by signal {-proc.returncode}:\n{proc.stderr[-3000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no summary (exit status {proc.returncode}, a hang?):\n" \
                  f"{proc.stderr[-3000:]}"
    return proc, json.loads(lines[-1])


@pytest.mark.parametrize("target", ["idx", "model"])
def test_fuzzed_files_raise_only_documented_exceptions(target, tmp_path):
    importorskip("hypothesis")
    proc, summary = _run_child(target, CI_EXAMPLES, tmp_path)
    print(f"{target}: {summary['examples']} examples, {summary['accepted']} accepted, "
          f"{summary['refused']} refused, slowest {summary['slowest_example_seconds']} "
          f"s, peak RSS {summary['peak_rss_mib']} MiB")
    assert summary["examples"] >= CI_EXAMPLES, summary["examples"]
    assert summary["peak_rss_mib"] < MAX_PEAK_RSS, summary["peak_rss_mib"]
    assert not summary["unexpected"], json.dumps(summary["unexpected"], indent=1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert summary["refused"] > CI_EXAMPLES // 2      # the mutations do break files
    assert list(tmp_path.iterdir()) == []             # its scratch folder is gone


# What the long run found, one deterministic input each ------------------------------

def _idx_header(code, *dims):
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


@pytest.mark.parametrize("content", [
    _idx_header(0x08, *[1] * 65) + b"x",                      # more dimensions than numpy
    _idx_header(0x08, 0, 0xFFFFFFFF, 0xFFFFFFFF),              # 0 elements, too big a shape
], ids=["65 dimensions", "zero-size shape too big for numpy"])
@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_idx_header_that_numpy_cannot_represent(tmp_path, content, compress):
    from mlp_cy.datasets import IDXFormatError, read_idx

    path = tmp_path / "odd.idx"
    path.write_bytes(gzip.compress(content) if compress else content)
    with pytest.raises(IDXFormatError, match="odd.idx"):
        read_idx(path)


def _model_file(tmp_path):
    from mlp_cy import MLPClassifier

    rng = np.random.RandomState(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier(hidden_layer_sizes=3, max_iter=1).fit(rng.rand(20, 2),
                                                                 np.arange(20) % 2)
    path = tmp_path / "model.npz"
    clf.save(path)
    return path


def _rewrite_params(path, params_json):
    with np.load(path) as npz:
        arrays = dict(npz)
    arrays["params_json"] = np.array(params_json)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


@pytest.mark.parametrize("params_json", [
    "[" * 100000 + "]" * 100000,                      # RecursionError in json.loads
    '{"verbose": ' + "[" * 5000 + "]" * 5000 + "}",
    "{}",                                             # KeyError: 'hidden_layer_sizes'
    '{"activation": "relu"}',
], ids=["deeply nested array", "deeply nested value", "empty object",
        "no hidden_layer_sizes"])
def test_model_with_odd_params_json_is_refused_with_model_file_error(tmp_path,
                                                                      params_json):
    import mlp_cy
    from mlp_cy.persistence import ModelFileError

    path = _model_file(tmp_path)
    _rewrite_params(path, params_json)
    with pytest.raises(ModelFileError, match="params_json"):
        mlp_cy.load(path)


@pytest.mark.parametrize("field, value", [
    ("version", 255),         # NotImplementedError: zip file version 25.5 (at np.load)
    ("method", 1),            # NotImplementedError: compression method not supported
    ("method", 99),           # (AES)
    ("flags", 0x01),          # RuntimeError: encrypted, password required
    ("flags", 0x20),          # NotImplementedError: compressed patched data
    ("flags", 0x40),          # NotImplementedError: strong encryption
])
def test_zip_entry_flags_and_methods_are_refused_with_model_file_error(tmp_path, field,
                                                                         value):
    import mlp_cy
    from mlp_cy.persistence import ModelFileError

    path = _model_file(tmp_path)
    data = bytearray(path.read_bytes())
    offset = {"version": 6, "flags": 8, "method": 10}[field]
    for match in re.finditer(re.escape(b"PK\x01\x02"), bytes(data)):  # central directory
        struct.pack_into("<H", data, match.start() + offset, value)
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="not a valid mlp_cy model file"):
        mlp_cy.load(path)


def _replace_member(path, name, content):
    with zipfile.ZipFile(path) as zf:
        members = {info.filename: zf.read(info) for info in zf.infolist()}
    members[name] = content
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in members.items():
            zf.writestr(member, data)


def test_npy_header_that_does_not_tokenize_is_refused_with_model_file_error(tmp_path):
    # numpy's header parser falls back to tokenize, whose TokenError escapes np.load.
    import mlp_cy
    from mlp_cy.persistence import ModelFileError

    path = _model_file(tmp_path)
    text = b"{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3"
    text += b" " * (117 - len(text)) + b"\n"
    _replace_member(path, "coef_0.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text))
                    + text + bytes(48))
    with pytest.raises(ModelFileError, match="'coef_0'"):
        mlp_cy.load(path)


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_AS: the resource module is POSIX")
def test_npy_header_claiming_terabytes_is_refused_without_allocating(tmp_path):
    # A member's .npy header may claim any shape: np.load allocates what it claims
    # before finding the member short. Under a 2 GiB address-space limit that is a
    # MemoryError (without a limit, a lazily committed allocation or the OOM killer).
    # The loader should compare the claim with the member's size first.
    path = _model_file(tmp_path)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (999999999999, 3)})
    _replace_member(path, "coef_0.npy", header.getvalue() + bytes(48))
    code = ("import resource, sys\n"
            "resource.setrlimit(resource.RLIMIT_AS, (2**31, 2**31))\n"
            "import mlp_cy\n"
            "try:\n    mlp_cy.load(sys.argv[1])\n"
            "except mlp_cy.persistence.ModelFileError as exc:\n    print('refused:', exc)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "refused:" in proc.stdout, proc.stderr[-2000:]
