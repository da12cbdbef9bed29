#!/usr/bin/env bash
# Memory check of the compiled engine under valgrind memcheck.
#
#   tools/memcheck.sh [--keep] [--build-dir DIR]
#
#   1. Copies the source tree (src/, setup.py, pyproject.toml and the files they
#      name) to a build directory (a new temporary one unless --build-dir) and builds
#      the extensions there in place, with -g so that valgrind's stacks have names.
#      Nothing is built inside the repository.
#   2. Runs a small workload under
#          PYTHONMALLOC=malloc valgrind --tool=memcheck --error-exitcode=1
#      with a suppression file for CPython's own allocator: fit and predict with
#      every solver (SGD, momentum, Nesterov, Adam), batch_size 1 (the sample-by-
#      sample path, and the batch path with L2) and > 1, shuffle on and off,
#      float32, float64 and uint8 X (read and converted by the engine, also float32 X
#      into a float64 model), sample and class weights, early stopping, every
#      activation, warm start and partial_fit, sparse-ish rows (the zero-pixel
#      skips), row-strided and memory-mapped X, predict_proba with more rows than
#      a chunk, predictions from two threads, the engine's entry points called
#      directly (row order, train_step-sized work), and their error paths.
#   3. Reads valgrind's XML report and exits 1 if any error (invalid read or write,
#      invalid free, use of uninitialised memory, overlapping copy, bad syscall
#      argument) has a frame in mlp_cy's extensions; errors whose stacks never
#      touch mlp_cy are listed but do not fail the check. Exits 2 if the workload
#      itself failed or valgrind is missing.
#
# Needs valgrind, a C compiler and python3 (or $PYTHON) with numpy, scipy, Cython
# >= 3.1 and setuptools >= 77. Takes a few minutes: valgrind runs ~30x slower.
# The report is left in the build directory (printed at the end) with --keep.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
KEEP=0
BUILD=""
while [ $# -gt 0 ]; do
    case "$1" in
        --keep) KEEP=1 ;;
        --build-dir) BUILD=$2; shift ;;
        -h|--help) sed -n '2,/^set -E/p' "$0" | sed 's/^# \{0,1\}//; $d'; exit 0 ;;
        *) echo "memcheck.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

command -v valgrind >/dev/null || { echo "memcheck.sh: valgrind is not installed" >&2; exit 2; }
"$PYTHON" -c "import numpy, scipy, Cython, setuptools" 2>/dev/null || {
    echo "memcheck.sh: $PYTHON needs numpy, scipy, Cython and setuptools" \
         "(pip install numpy scipy cython setuptools)" >&2
    exit 2
}
if [ -z "$BUILD" ]; then
    BUILD=$(mktemp -d "${TMPDIR:-/tmp}/mlp_cy-memcheck.XXXXXX")
    [ "$KEEP" = 1 ] || trap 'rm -rf "$BUILD"' EXIT
fi
mkdir -p "$BUILD"

# 1. Build ---------------------------------------------------------------------------
echo "== building mlp_cy in $BUILD"
rm -rf "$BUILD/src" "$BUILD/build"
cp -r "$ROOT/src" "$BUILD/src"
find "$BUILD/src" \( -name '*.so' -o -name '*.c' -o -name '__pycache__' \) -prune \
    -exec rm -rf {} +
for f in setup.py pyproject.toml README.md LICENSE MANIFEST.in; do
    [ -e "$ROOT/$f" ] && cp "$ROOT/$f" "$BUILD/"
done
(cd "$BUILD" && CFLAGS="-g -fno-omit-frame-pointer" "$PYTHON" setup.py -q build_ext --inplace \
    >"$BUILD/build.log" 2>&1) || { tail -40 "$BUILD/build.log" >&2; exit 2; }

# 2. Workload under valgrind ---------------------------------------------------------
cat >"$BUILD/python.supp" <<'EOF'
# CPython's small-object allocator reads its arenas' headers on purpose
# (Misc/valgrind-python.supp); unused with PYTHONMALLOC=malloc, kept for safety.
{
   cpython-address_in_range-addr4
   Memcheck:Addr4
   fun:address_in_range
}
{
   cpython-address_in_range-addr8
   Memcheck:Addr8
   fun:address_in_range
}
{
   cpython-address_in_range-value8
   Memcheck:Value8
   fun:address_in_range
}
{
   cpython-address_in_range-cond
   Memcheck:Cond
   fun:address_in_range
}
{
   cpython-pymalloc-free-addr
   Memcheck:Addr4
   fun:_PyObject_Free
}
{
   cpython-pymalloc-free-cond
   Memcheck:Cond
   fun:_PyObject_Free
}
{
   cpython-pymalloc-realloc-addr
   Memcheck:Addr4
   fun:_PyObject_Realloc
}
{
   cpython-pymalloc-realloc-cond
   Memcheck:Cond
   fun:_PyObject_Realloc
}
EOF

cat >"$BUILD/workload.py" <<'EOF'
import itertools
import os
import sys
import tempfile
import threading
import warnings

import numpy as np

import mlp_cy
from mlp_cy import MLPClassifier, network

assert os.path.realpath(network.__file__).startswith(os.path.realpath(sys.argv[1])), \
    network.__file__
warnings.simplefilter("ignore")
rng = np.random.RandomState(0)
n, d, K = 120, 12, 3
X64 = rng.rand(n, d)
X64[X64 < 0.5] = 0                        # zero pixels: the sample path skips them
y = np.arange(n) % K
weights = rng.rand(n)
weights[::7] = 0                          # rows of weight 0
runs = 0


def check(clf, X):
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), K) and np.isfinite(proba).all()
    assert np.allclose(proba.sum(axis=1), 1, atol=1e-4)
    clf.predict(X[::3])


for dtype in (np.float32, np.float64, np.uint8):
    X = (X64 * 255).astype(dtype) if dtype == np.uint8 else X64.astype(dtype)
    wdtype = np.float64 if dtype == np.uint8 else dtype      # the weights' dtype
    solvers = [dict(solver="sgd"), dict(solver="sgd", momentum=0.9),
               dict(solver="sgd", momentum=0.9, nesterovs_momentum=False),
               dict(solver="adam")]
    for solver, batch_size, shuffle, weighted in itertools.product(
            solvers, [1, 7, "auto"], [True, False], [False, True]):
        clf = MLPClassifier(hidden_layer_sizes=5, learning_rate_init=0.1, max_iter=2,
                            batch_size=batch_size, shuffle=shuffle, random_state=0,
                            **solver)
        clf.fit(X, y, sample_weight=weights if weighted else None)
        check(clf, X)
        runs += 1
    for params in [dict(early_stopping=True, n_iter_no_change=1, max_iter=3),
                   dict(early_stopping=True, solver="adam", batch_size=1),
                   dict(alpha=0.01, batch_size=1),            # batch path, batch of 1
                   dict(alpha=0.01, batch_size=16, class_weight="balanced"),
                   dict(activation="tanh"), dict(activation="relu", batch_size=1),
                   dict(activation="identity", solver="adam"),
                   dict(learning_rate="invscaling"), dict(learning_rate="adaptive")]:
        clf = MLPClassifier(**{"hidden_layer_sizes": 5, "max_iter": 2, "random_state": 0,
                               **params})
        clf.fit(X, y, sample_weight=weights)
        check(clf, X)
        runs += 1
    # warm start, partial_fit, a last batch that is short, odd layouts
    clf = MLPClassifier(hidden_layer_sizes=6, batch_size=50, max_iter=2, warm_start=True,
                        random_state=0)
    clf.fit(X, y).fit(X[::2], y[::2])
    clf.partial_fit(X[:13], y[:13])
    if dtype == np.float64:             # float32 and uint8 rows into a float64 model
        clf.fit(X.astype(np.float32), y)
        clf.partial_fit((X * 255).astype(np.uint8)[:31], y[:31])
        check(clf, X.astype(np.float32))
    wide = np.zeros((2500, 2 * d), dtype)
    wide[:, :d] = rng.rand(2500, d)
    check(clf, wide[:, :d])                 # more rows than a chunk, row stride 2d
    check(clf, np.asfortranarray(wide[:1500, :d]))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "X.dat")
        X.tofile(path)
        check(clf, np.memmap(path, dtype, "r", shape=X.shape))
        model = os.path.join(tmp, "model.npz")
        clf.save(model)
        check(mlp_cy.load(model), X)
    threads = [threading.Thread(target=check, args=(clf, wide[:1100, :d]))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # The engine's entry points, with a row order, and their error paths
    W1, W2 = (w.copy() for w in clf.coefs_)
    b1, b2 = (b.copy() for b in clf.intercepts_)
    codes = y.astype(np.int32)
    params = dict(W1=W1, b1=b1, W2=W2, b2=b2)
    for options, batch in itertools.product(
            [dict(activation=1, learning_rate=0.1, alpha=0.0),
             dict(activation=3, learning_rate=0.1, alpha=0.0, solver=1),
             dict(activation=2, learning_rate=0.1, alpha=0.0, momentum=0.5)], [1, 9, n]):
        work = np.empty(network._train_workspace_size(options, batch, d, 6, K), wdtype)
        state = np.zeros(network._optimizer_state_size(options, d, 6, K), wdtype)
        stats = np.zeros(5)
        order = rng.permutation(n).astype(np.intp)
        network._train_epoch(X=X, y=codes, sample_weight=weights.astype(wdtype),
                             order=order, batch_size=batch, options=options,
                             optimizer_state=state, work=work, stats_out=stats, **params)
        network._train_epoch(X=X[:5], y=codes[:5], sample_weight=None, order=None,
                             batch_size=batch, options=options, optimizer_state=state,
                             work=work, stats_out=stats, **params)
        for bad in [dict(order=np.full(n, n, np.intp)), dict(work=work[:-1]),
                    dict(y=np.full(n, K, np.int32))]:
            args = dict(X=X, y=codes, sample_weight=None, order=order, batch_size=batch,
                        options=options, optimizer_state=state, work=work,
                        stats_out=stats, **params)
            args.update(bad)
            try:
                network._train_epoch(**args)
            except ValueError:
                pass
            else:
                raise AssertionError(f"no error for {list(bad)}")
        runs += 1
    proba = np.empty((n, K), wdtype)
    row = 6 + (d if dtype == np.uint8 else 0)       # hidden units + a converted row
    network._predict_proba(X=X, activation=1, proba_out=proba,        # chunks of 1 row
                           work=np.empty(row, wdtype), **params)
    try:
        network._predict_proba(X=X, activation=1, proba_out=proba[:-1],
                               work=np.empty(row, wdtype), **params)
    except ValueError:
        pass
print(f"memcheck workload: done ({runs} runs)")
EOF

echo "== running the workload under valgrind memcheck (a few minutes)"
set +e
(cd "$BUILD" && PYTHONMALLOC=malloc PYTHONPATH="$BUILD/src" OPENBLAS_NUM_THREADS=1 \
    OMP_NUM_THREADS=1 valgrind --tool=memcheck --error-exitcode=1 \
    --suppressions="$BUILD/python.supp" --num-callers=30 --leak-check=no \
    --xml=yes --xml-file="$BUILD/valgrind.xml" --log-file="$BUILD/valgrind.log" \
    "$PYTHON" workload.py "$BUILD/src" >"$BUILD/workload.out" 2>"$BUILD/workload.err")
VALGRIND_STATUS=$?
set -e
cat "$BUILD/workload.out"

# 3. Verdict ---------------------------------------------------------------------------
set +e
"$PYTHON" - "$BUILD" "$VALGRIND_STATUS" <<'EOF'
import sys
import xml.etree.ElementTree as ET

build, status = sys.argv[1], int(sys.argv[2])
with open(f"{build}/workload.out") as f:
    finished = "memcheck workload: done" in f.read()
if not finished:
    with open(f"{build}/workload.err") as f:
        sys.stderr.write(f.read()[-4000:])
    print(f"memcheck.sh: the workload did not finish (valgrind exit status {status})")
    sys.exit(2)
root = ET.parse(f"{build}/valgrind.xml").getroot()
ours, theirs = [], []
for error in root.iter("error"):
    kind = error.findtext("kind")
    if kind.startswith("Leak_"):
        continue
    frames = [(fr.findtext("fn") or "?", fr.findtext("obj") or "", fr.findtext("file") or "",
               fr.findtext("line") or "") for fr in error.iter("frame")]
    what = error.findtext("what") or error.findtext("xwhat/text") or kind
    entry = (kind, what, frames)
    if any("mlp_cy" in obj or "mlp_cy" in file or fn.startswith("__pyx_")
           and "mlp_cy" in fn for fn, obj, file, _ in frames):
        ours.append(entry)
    else:
        theirs.append(entry)
print(f"valgrind: {len(ours) + len(theirs)} errors, {len(ours)} with a frame in mlp_cy")
for kind, what, frames in ours[:20]:
    print(f"-- IN MLP_CY: {kind}: {what}")
    for fn, obj, file, line in frames[:15]:
        print(f"     {fn}  {file}:{line}" if file else f"     {fn}  ({obj})")
# Errors elsewhere (an interpreter not built for valgrind, the dynamic loader):
# one line per kind and innermost function, not counted.
summary = {}
for kind, what, frames in theirs:
    key = (kind, frames[0][0] if frames else "?", frames[0][1].rsplit("/", 1)[-1]
           if frames else "")
    summary[key] = summary.get(key, 0) + 1
for (kind, fn, obj), count in sorted(summary.items(), key=lambda kv: -kv[1]):
    print(f"   outside mlp_cy, not counted: {count:4d} x {kind} in {fn} ({obj})")
sys.exit(1 if ours else 0)
EOF
VERDICT=$?
[ "$KEEP" = 1 ] && echo "== report: $BUILD/valgrind.xml, $BUILD/valgrind.log"
[ "$VERDICT" = 0 ] && echo "memcheck.sh: OK, no memory errors in mlp_cy"
exit "$VERDICT"
