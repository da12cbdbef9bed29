#!/usr/bin/env bash
# The aarch64 build of mlp_cy, proven on an x86-64 machine: cross-compiled with
# Debian's gcc-aarch64-linux-gnu and run under qemu-user, against Debian's arm64
# Python and PyPI's aarch64 numpy and scipy wheels. The wheels workflow builds aarch64
# natively on its own runners; this catches, on any machine and before that, C that
# does not build on aarch64 (a function that exists only for x86-64 is an error here,
# not a symbol missing at import) and kernels whose aarch64 results differ.
#
#   tools/check_aarch64.sh [--host-python PATH] [--source DIR] [--work DIR]
#                          [--tests "PYTEST ARGS"] [--cflag FLAG]... [--fresh]
#
#   1. Host tools (apt-get): gcc-aarch64-linux-gnu, libc6-dev-arm64-cross, qemu-user.
#   2. An arm64 sysroot: Debian's python3.11 and the libraries it loads, fetched with
#      apt-get download through a private apt state in the work folder (its own
#      package lists, architecture arm64), unpacked with dpkg-deb -x. dpkg's
#      architectures and the host's apt lists are not touched (after dpkg
#      --add-architecture every later apt-get update on the machine would fetch the
#      arm64 lists too, some 9 MB), and no arm64 package is ever installed. Cached.
#   3. A host Python with setup.py's build requirements (Cython, setuptools, scipy's
#      .pxd files): --host-python where it has them, else a venv (cached).
#   4. aarch64 wheels of numpy, scipy, threadpoolctl, pytest and scikit-learn (pip
#      install --target with aarch64 manylinux platform tags). Cached.
#   5. tools/aarch64_build.py: setup.py's extensions cythonized on the host and
#      cross-compiled with setup.py's and the arm64 Python's flags plus
#      -Werror=implicit-function-declaration, into an importable package folder.
#   6. ELF checks: each extension is AArch64, needs no library but libc, libm,
#      libpthread and the dynamic loader, and every symbol it leaves undefined is
#      defined by the sysroot's libc, libm, loader or python3.11.
#   7. The x86-64 reference: --host-python's mlp_cy, or one built from a copy of the
#      tree with setup.py build_ext.
#   8. tools/aarch64_smoke.py: the same small trainings (float64 and float32; dense
#      data; mostly-zero images with the zero-skipping kernels off, then forced on at
#      each kernel level on 1 and 2 BLAS threads) under qemu and on the host, compared
#      to rounding.
#   9. A core subset of the test suite under qemu, from a folder outside the tree, so
#      that the tests import the cross-built package (the arm64 Python finds it and
#      the wheels through a .pth file, as if installed; src/ is on no path).
#
# --host-python PATH  a Python with mlp_cy (and threadpoolctl) installed for the x86-64
#                     reference run (.ci/run passes its venv's); default: build one.
# --source DIR        the project tree to build and test (default: this checkout).
# --work DIR          the work folder (default: build/aarch64 in the checkout).
# --tests "ARGS"      pytest arguments split at blanks, test paths relative to the
#                     tree's tests/ (default: test_kernels, test_blas,
#                     test_gradients, test_skipzero and test_training: 2.5 to 3
#                     minutes under qemu on one free host CPU).
# --cflag FLAG        one more flag for the cross compiler (repeatable).
# --fresh             drop the cached sysroot, wheels and venv first.
#
# QEMU_CPU picks the emulated CPU (default neoverse-n1: NEON, no SVE, the class of
# Graviton2 and Ampere Altra; "max" adds SVE and SME and runs several times slower).
# CHECK_AARCH64_PIN=0 lets qemu's threads use every host CPU (see the note at
# write_aarch64_python: qemu then breaks aarch64's seq_cst ordering). The smoke run
# and the tests are stopped, and fail, after 15 and 40 minutes.
# Needs root for apt-get (or the tools already installed), Debian's archive and PyPI.
# Exits non-zero at the first failure; a summary of each step's time ends the run.
set -euo pipefail

PY_VERSION=3.11
# Debian's arm64 python3.11, its headers, and every library it or the wheels load.
SYSROOT_PACKAGES="python3.11-minimal libpython3.11-minimal libpython3.11-stdlib
    libpython3.11-dev libc6 libgcc-s1 libstdc++6 zlib1g libexpat1 libssl3 libbz2-1.0
    libcrypt1 libffi8 liblzma5 libncursesw6 libtinfo6 libreadline8 libsqlite3-0 libuuid1"
TARGET_WHEELS="numpy scipy threadpoolctl pytest scikit-learn"
# 2.5 to 3 minutes under qemu on one free host CPU; the whole suite takes far longer.
DEFAULT_TESTS="test_kernels.py test_blas.py test_gradients.py test_skipzero.py test_training.py"
# What manylinux allows and the extensions may need: the loader too, since aarch64's
# glibc keeps __stack_chk_guard there (Debian's flags have -fstack-protector-strong).
ALLOWED_LIBS=" libc.so.6 libm.so.6 libpthread.so.0 ld-linux-aarch64.so.1 "

repo="$(cd "$(dirname "$0")/.." && pwd)"
host_python=""
source_dir="$repo"
work="$repo/build/aarch64"
tests="$DEFAULT_TESTS"
cflags=(-Werror=implicit-function-declaration)
fresh=0
while [ $# -gt 0 ]; do
    case "$1" in
        --host-python) host_python="${2:?--host-python needs a path}"; shift 2 ;;
        --source) source_dir="${2:?--source needs a directory}"; shift 2 ;;
        --work) work="${2:?--work needs a directory}"; shift 2 ;;
        --tests) tests="${2:?--tests needs pytest arguments}"; shift 2 ;;
        --cflag) cflags+=("${2:?--cflag needs a flag}"); shift 2 ;;
        --fresh) fresh=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "check_aarch64: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
source_dir="$(cd "$source_dir" && pwd)"
if [ ! -f "$source_dir/setup.py" ] || [ ! -d "$source_dir/src/mlp_cy" ]; then
    echo "check_aarch64: $source_dir is not an mlp_cy tree" >&2
    exit 2
fi
if [ -n "$host_python" ]; then
    host_python="$(command -v "$host_python" || true)"
    [ -x "$host_python" ] || { echo "check_aarch64: --host-python is not executable" >&2; exit 2; }
fi
mkdir -p "$work"
work="$(cd "$work" && pwd)"

export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 DEBIAN_FRONTEND=noninteractive
sysroot="$work/sysroot"
site="$work/site-aarch64"
venv="$work/host-venv"
pkg="$work/pkg"
out="$work/out"

current=""
step_start=$SECONDS
timings=()
end_step() {
    if [ -n "$current" ]; then
        timings+=("$(printf '%5ss  %s' "$((SECONDS - step_start))" "$current")")
    fi
}
step() {
    end_step
    current="$*"
    step_start=$SECONDS
    printf '\n== [%4ss] %s\n' "$SECONDS" "$*"
}
finish() {
    local status=$?
    end_step
    if [ "${#timings[@]}" -gt 0 ]; then
        printf '\ncheck_aarch64: time by step\n'
        printf '  %s\n' "${timings[@]}"
    fi
    if [ "$status" -eq 0 ]; then
        echo "check_aarch64: PASSED in ${SECONDS}s"
    else
        echo "check_aarch64: FAILED (exit $status) in step: ${current:-arguments}" >&2
    fi
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
fail() {
    echo "check_aarch64: $*" >&2
    exit 1
}
# cached DIR KEY: whether DIR was completed with this KEY (see mark_cached).
cached() { [ -f "$1/.complete" ] && [ "$(cat "$1/.complete")" = "$2" ]; }
mark_cached() { printf '%s' "$2" > "$1/.complete"; }

# The arm64 Python under qemu, through a wrapper script that is also its
# sys.executable (qemu's -0), so that the tests' subprocesses of sys.executable run
# under qemu too: no binfmt_misc registration is needed. The wrapper fixes its
# stdlib to the sysroot's, whatever environment a test hands a child; the
# cross-built package and the aarch64 wheels come from a .pth file in the sysroot's
# dist-packages (written after the build), as an installed package would. It also
# drops OPENBLAS_CORETYPE (set on some x86-64 hosts): it names an x86 core, and the
# aarch64 OpenBLAS detects its own.
#
# qemu runs on one host CPU (taskset) unless CHECK_AARCH64_PIN=0. qemu-user 7.2 on an
# x86-64 host does not keep an aarch64 seq_cst store (stlr) before a later seq_cst
# load (ldar) of another variable, which ARMv8 guarantees: in a store-buffering
# litmus test two threads both read the old values in about 14% of rounds, never
# with a fence between or on one host CPU. A Dekker-style handshake (mlp_cy's
# worker pool sleeps that way) can then lose a wake-up and hang under qemu, which
# real aarch64 cannot. Guest threads still interleave, on one CPU.
aarch64_python() { "$work/bin/python$PY_VERSION" "$@"; }
write_aarch64_python() {
    local pin=""
    if [ "${CHECK_AARCH64_PIN:-1}" != 0 ]; then
        pin="taskset -c $(sed -n 's/^Cpus_allowed_list:[[:space:]]*\([0-9]*\).*/\1/p' \
            /proc/self/status) "
    fi
    mkdir -p "$work/bin"
    cat > "$work/bin/python$PY_VERSION" <<EOF
#!/bin/sh
# Debian's arm64 python$PY_VERSION under qemu-aarch64 (written by tools/check_aarch64.sh).
export PYTHONHOME="$sysroot/usr" PYTHONNOUSERSITE=1 QEMU_CPU="\${QEMU_CPU:-neoverse-n1}"
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE PYTHONSTARTUP
exec ${pin}qemu-aarch64 -L "$sysroot" -0 "\$0" "$sysroot/usr/bin/python$PY_VERSION" "\$@"
EOF
    chmod +x "$work/bin/python$PY_VERSION"
}
# emulated SECONDS ARGS...: the arm64 Python with ARGS, stopped (and failed) after
# SECONDS: a hang fails this check in minutes, not at CI's time limit.
emulated() {
    local limit="$1" status=0
    shift
    timeout --kill-after=30 "$limit" "$work/bin/python$PY_VERSION" "$@" || status=$?
    if [ "$status" = 124 ] || [ "$status" = 137 ]; then
        fail "timed out after ${limit}s under qemu (a hang? see CHECK_AARCH64_PIN in --help)"
    fi
    return "$status"
}

if [ "$fresh" = 1 ]; then
    step "--fresh: dropping the cached sysroot, wheels and venv"
    rm -rf "$sysroot" "$site" "$venv" "$work/apt"
fi

step "host tools: gcc-aarch64-linux-gnu, libc6-dev-arm64-cross, qemu-user"
host_packages="gcc-aarch64-linux-gnu libc6-dev-arm64-cross binutils-aarch64-linux-gnu qemu-user"
missing=""
for package in $host_packages; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" \
        || missing="$missing $package"
done
if [ -n "$missing" ]; then
    echo "installing:$missing"
    # shellcheck disable=SC2086
    if ! apt-get install -y -qq --no-install-recommends $missing; then
        apt-get update -qq
        # shellcheck disable=SC2086
        apt-get install -y -qq --no-install-recommends $missing
    fi
fi
for tool in aarch64-linux-gnu-gcc aarch64-linux-gnu-readelf aarch64-linux-gnu-nm qemu-aarch64; do
    command -v "$tool" > /dev/null || fail "$tool is missing after installing $host_packages"
done
aarch64-linux-gnu-gcc --version | sed -n 1p
qemu-aarch64 --version | sed -n 1p

step "arm64 sysroot: Debian's python$PY_VERSION and its libraries (apt-get download, dpkg-deb -x)"
sysroot_key="$(tr -s ' \n' '  ' <<< "$SYSROOT_PACKAGES")"
if cached "$sysroot" "$sysroot_key"; then
    echo "cached: $sysroot"
else
    apt_dir="$work/apt"
    rm -rf "$apt_dir" "$sysroot"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/debs"
    : > "$apt_dir/status"
    # The host's sources and configuration, but arm64 only and every piece of state in
    # $apt_dir: neither dpkg's architectures nor the host's package lists change.
    apt_options=(
        -o APT::Architecture=arm64 -o APT::Architectures=arm64
        -o Dir::State::Lists="$apt_dir/lists" -o Dir::Cache="$apt_dir/cache"
        -o Dir::State::status="$apt_dir/status" -o APT::Sandbox::User=root
    )
    # A host source without arm64 packages only warns; the downloads below must succeed.
    apt-get "${apt_options[@]}" update -qq \
        || echo "check_aarch64: warning: apt-get update (arm64) reported errors; going on"
    # shellcheck disable=SC2086
    (cd "$apt_dir/debs" && apt-get "${apt_options[@]}" download -q $SYSROOT_PACKAGES)
    mkdir -p "$sysroot.partial"
    for deb in "$apt_dir"/debs/*.deb; do
        dpkg-deb -x "$deb" "$sysroot.partial"
    done
    rm -rf "$apt_dir"
    mv "$sysroot.partial" "$sysroot"
    mark_cached "$sysroot" "$sysroot_key"
fi
write_aarch64_python
target_glibc="$(aarch64_python -c "
import bz2, ctypes, decimal, hashlib, json, lzma, platform, sqlite3, ssl, sys, zlib
print('under qemu-aarch64:', platform.machine(), 'Python', platform.python_version(),
      'glibc', platform.libc_ver()[1], 'prefix', sys.prefix, file=sys.stderr)
print(platform.libc_ver()[1])")"

step "host Python with setup.py's build requirements (Cython, setuptools, scipy)"
# The build requirements (Cython, setuptools, scipy for cython_blas's .pxd files)
# that --host-python lacks, or all of them without it: pyproject.toml's list.
unmet_requirements() {   # unmet_requirements PYTHON: what PYTHON lacks, "?" if unsure
    "$1" - "$source_dir/pyproject.toml" <<'EOF' 2>/dev/null || echo "?"
import sys, tomllib
from importlib.metadata import PackageNotFoundError, version
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement
with open(sys.argv[1], "rb") as f:
    requires = tomllib.load(f)["build-system"]["requires"] + ["threadpoolctl"]
unmet = []
for requirement in map(Requirement, requires):
    try:
        if not requirement.specifier.contains(version(requirement.name), prereleases=True):
            unmet.append(str(requirement))
    except PackageNotFoundError:
        unmet.append(str(requirement))
print(" ".join(unmet))
EOF
}
tool_python=""
if [ -n "$host_python" ]; then
    unmet="$(unmet_requirements "$host_python")"
    if [ -z "$unmet" ]; then
        tool_python="$host_python"
        echo "--host-python has the build requirements: it cythonizes too"
    else
        echo "--host-python lacks build requirements ($unmet): a venv for them"
    fi
fi
if [ -z "$tool_python" ]; then
    build_requires="$(python3 - "$source_dir/pyproject.toml" <<'EOF'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print(" ".join(tomllib.load(f)["build-system"]["requires"]))
EOF
    )"
    venv_key="$(python3 --version) $build_requires threadpoolctl"
    if cached "$venv" "$venv_key"; then
        echo "cached: $venv"
    else
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/python" -m pip install -q --upgrade pip
        # shellcheck disable=SC2086
        "$venv/bin/python" -m pip install -q $build_requires threadpoolctl
        mark_cached "$venv" "$venv_key"
    fi
    tool_python="$venv/bin/python"
fi
"$tool_python" -m pip list 2>/dev/null | grep -iE '^(cython|setuptools|scipy|numpy) ' \
    | tr -s ' ' | paste -sd, - | sed "s|^|$tool_python: |"
step "aarch64 wheels: $TARGET_WHEELS (cp${PY_VERSION/./}, manylinux aarch64)"
platforms=(--platform manylinux2014_aarch64)
for minor in $(seq 17 "${target_glibc#2.}"); do   # every manylinux_2_x the sysroot's glibc runs
    platforms+=(--platform "manylinux_2_${minor}_aarch64")
done
site_key="$TARGET_WHEELS ${platforms[*]}"
if cached "$site" "$site_key"; then
    echo "cached: $site"
else
    rm -rf "$site"
    # shellcheck disable=SC2086
    "$tool_python" -m pip install -q --target "$site" "${platforms[@]}" \
        --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
        --abi "cp${PY_VERSION/./}" $TARGET_WHEELS
    mark_cached "$site" "$site_key"
fi
find "$site" -maxdepth 1 -name '*.dist-info' -printf '%f\n' | sed 's/\.dist-info$//' | sort \
    | paste -sd' ' -

step "cross-compile: cythonize on the host, aarch64-linux-gnu-gcc with ${cflags[*]}"
"$tool_python" "$repo/tools/aarch64_build.py" --source "$source_dir" \
    --sysroot "$sysroot" --out "$pkg" --c-dir "$work/c" \
    "${cflags[@]/#/--cflag=}"

# The cross-built package and the wheels on the arm64 Python's path, as installed.
dist_packages="$sysroot/usr/lib/python3/dist-packages"
mkdir -p "$dist_packages"
printf '%s\n' "$pkg" "$site" > "$dist_packages/check-aarch64.pth"

step "ELF checks: AArch64, needed libraries, undefined symbols"
defined="$work/defined-symbols.txt"
for lib in libc.so.6 libm.so.6 ld-linux-aarch64.so.1; do
    found="$(find "$sysroot/lib" "$sysroot/usr/lib" -name "$lib" -print -quit)"
    [ -n "$found" ] || fail "no $lib in the sysroot"
    aarch64-linux-gnu-nm -D --defined-only "$found"
done > "$defined.raw"
aarch64-linux-gnu-nm -D --defined-only "$sysroot/usr/bin/python$PY_VERSION" >> "$defined.raw"
awk '{print $NF}' "$defined.raw" | sed 's/@.*//' | sort -u > "$defined"
rm -f "$defined.raw"
extensions=("$pkg"/mlp_cy/*.so)
[ -e "${extensions[0]}" ] || fail "no extension was built"
for so in "${extensions[@]}"; do
    name="$(basename "$so")"
    case "$name" in
        *.cpython-${PY_VERSION/./}-aarch64-linux-gnu.so) ;;
        *) fail "$name: not named *.cpython-${PY_VERSION/./}-aarch64-linux-gnu.so" ;;
    esac
    machine="$(aarch64-linux-gnu-readelf -h "$so" | sed -n 's/^ *Machine: *//p')"
    [ "$machine" = "AArch64" ] || fail "$name is for $machine, not AArch64"
    needed="$(aarch64-linux-gnu-readelf -d "$so" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')"
    for library in $needed; do
        case "$ALLOWED_LIBS" in
            *" $library "*) ;;
            *) fail "$name needs $library: only$ALLOWED_LIBS are allowed" ;;
        esac
    done
    # Undefined and not weak: each must come from libc, libm, the loader or Python.
    aarch64-linux-gnu-nm -D --undefined-only "$so" | awk '$1 == "U" {print $2}' \
        | sed 's/@.*//' | sort -u > "$work/undefined.txt"
    unresolved="$(comm -23 "$work/undefined.txt" "$defined" | paste -sd' ' -)"
    [ -z "$unresolved" ] || fail "$name leaves undefined: $unresolved"
    echo "$name: AArch64, needs $(paste -sd, - <<< "$needed"); $(wc -l < "$work/undefined.txt")\
 undefined symbols, all from libc, libm, the loader or python$PY_VERSION"
done
rm -f "$work/undefined.txt"

step "x86-64 reference: ${host_python:-mlp_cy built for the host}"
host_path=""
if [ -z "$host_python" ]; then
    # Built in a copy of the tree (an in-tree build would write C next to the .pyx
    # files), with setup.py's own build_ext on every core, and imported from there.
    echo "building mlp_cy for x86-64 from $source_dir (the reference), in $work/host-src"
    rm -rf "$work/host-src"
    mkdir -p "$work/host-src"
    cp -r "$source_dir/setup.py" "$source_dir/pyproject.toml" "$source_dir/src" "$work/host-src/"
    find "$work/host-src/src" \( -name '*.c' -o -name '*.so' -o -name '*.html' \
        -o -name __pycache__ \) -prune -exec rm -rf {} +
    (cd "$work/host-src" && "$tool_python" setup.py -q build_ext --inplace \
        -j "$(nproc)" > "$work/host-build.log" 2>&1) \
        || { tail -40 "$work/host-build.log"; fail "the x86-64 build failed (above)"; }
    host_python="$tool_python"
    host_path="$work/host-src/src"
fi
# The x86-64 reference Python, with the mlp_cy built above unless --host-python.
host_run() { PYTHONPATH="$host_path" "$host_python" "$@"; }
(cd "$work" && host_run -c "
import mlp_cy, threadpoolctl
print('x86-64 reference: mlp_cy', mlp_cy.__version__, 'from', mlp_cy.__file__)")

step "smoke run under qemu-aarch64 (QEMU_CPU=${QEMU_CPU:-neoverse-n1})"
rm -rf "$out"
mkdir -p "$out"
(cd "$out" && emulated 900 "$repo/tools/aarch64_smoke.py" \
    run "$out/aarch64.npz" --expect-from "$pkg")

step "smoke run on the x86-64 host"
(cd "$out" && host_run "$repo/tools/aarch64_smoke.py" run "$out/x86_64.npz")

step "smoke comparison: aarch64 against x86-64"
host_run "$repo/tools/aarch64_smoke.py" compare "$out/x86_64.npz" "$out/aarch64.npz"

step "tests under qemu-aarch64: $tests"
test_args=()
for arg in $tests; do
    case "$arg" in
        -*) test_args+=("$arg") ;;
        *) test_args+=("$source_dir/tests/$arg") ;;
    esac
done
mkdir -p "$work/pytest-run"
(cd "$work/pytest-run" && emulated 2400 -m pytest -p no:cacheprovider \
    --durations=5 "${test_args[@]}")
