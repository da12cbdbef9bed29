#!/usr/bin/env bash
# Cross-compile check: the generated C of every extension module compiles for the
# wheel platforms this machine cannot build, macOS arm64, macOS x86_64 and Windows
# x86_64. Compile only (objects, no linking), with zig's clang as the cross compiler.
#
#   tools/check_compilers.sh [--clean]
#
#   1. A tool venv under build/check_compilers: ziglang (pinned) plus the
#      build-system requirements of pyproject.toml (Cython, scipy for cython_blas's
#      .pxd, setuptools), so the C is what a wheel build would generate.
#   2. CPython's headers for each target (see "Where the headers come from"); the
#      macOS configure runs in the background while steps 3 and 4 start on Windows.
#   3. Cython: setup.py itself is run with setup() stubbed and cythonize() sent to
#      build/check_compilers/c, so the module list, the compiler directives and the
#      extra compile args are setup.py's own (nothing is written to src/).
#   4. Three passes per target, each module compiled to an object with -O2 and the
#      diagnostics that make a missing or mismatched function a hard error:
#        default    as the macOS wheels build: the GCC/clang code paths of mlp_cy's
#                   headers (on Windows too, since zig's MinGW-flavoured clang
#                   defines __GNUC__; the MSVC wheels take the portable path).
#        portable   the same with -DMLP_CY_PORTABLE_ONLY, the path MSVC takes: mlp_cy's
#                   headers must use no compiler extension at all.
#        headers    mlp_cy's own headers alone, the way each module includes them,
#                   after Python.h and the system headers they need, with
#                   -DMLP_CY_PORTABLE_ONLY -std=c11 -pedantic-errors and the GNU
#                   extensions poisoned (#pragma GCC poison __attribute__, __atomic_*,
#                   __builtin_cpu_supports, asm, ...); GNU/clang pragmas in them fail
#                   too. Cython's own code is not held to this: its generated C does
#                   compile under -std=c11 -pedantic-errors, but it uses __attribute__
#                   and __builtin_expect itself wherever __GNUC__ is defined.
#   5. A table per target, pass and module; the first error of each failure; exit 1
#      if anything failed.
#
# Where the headers come from
#   CPython 3.11's source, the upstream tarball as Debian ships it
#   (python3.11_3.11.2.orig.tar.gz), fetched with `apt-get source --tar-only` through
#   a private apt state under build/ whose deb-src entries are the machine's own
#   Debian entries (so the download is checked against Debian's signed index), then
#   checked against the sha256 pinned below. The installed include directory of
#   CPython is Include/ plus one pyconfig.h, on every platform:
#   - Windows: Include/ + PC/pyconfig.h, exactly the files python.org's Windows
#     installer puts in include/. That pyconfig.h sets MS_WIN64 only for MSVC, so
#     MinGW-style compilers (zig's x86_64-windows-gnu is one) must pass -DMS_WIN64,
#     as MinGW builds of extensions for 64-bit CPython have to.
#   - macOS: Include/ + a pyconfig.h that CPython's own configure generates here,
#     cross-configured for aarch64-apple-darwin with zig's clang and zig's macOS libc
#     headers and stubs as the target toolchain, as a framework build. One pyconfig.h
#     serves both macOS targets, as in python.org's universal2 installer, which
#     cibuildwheel uses for both macOS archs: Include/pymacconfig.h fixes the values
#     that differ between arm64 and x86_64 at compile time. CPython 3.11's configure
#     refuses to cross-build for Darwin, so a copy of it is patched in three places
#     (checked below): accept a *-apple-darwin host, treat a cross target as 64-bit,
#     and read `/usr/bin/arch`'s answer (which names the build machine's libpython
#     link flags only) from a variable. uname's answers for a macOS 15 build machine
#     are given through MACHDEP, ac_sys_system and ac_sys_release, and the run-time
#     probes configure cannot run in a cross build through a config.site. Probes that
#     need libraries zig does not ship (curses, bzip2, ...) come out "no"; none of
#     them reaches the headers an extension sees. Spot-checked against the
#     pyconfig.h of a real macOS CPython 3.11: type sizes, _DARWIN_C_SOURCE without
#     _XOPEN_SOURCE, the libc function probes and HAVE_BUILTIN_ATOMIC agree; what
#     differs (HAVE_COMPUTED_GOTOS, a run-time probe, and third-party library
#     headers) is read by CPython's own sources only.
#   Why that is sound enough: what can break an extension's compile across platforms
#   is the C library (zig ships macOS's and MinGW-w64's headers), the compiler's
#   predefined macros and target features (real clang for the real target triple),
#   and the few platform facts in pyconfig.h (type sizes, feature macros), which are
#   CPython's own for each target. Not covered: MSVC's front end itself (the portable
#   pass and the headers pass stand in for it), linking, and CPython versions other
#   than 3.11 (Cython's C is the same for every version; its #if PY_VERSION_HEX
#   branches for other versions are not compiled here).
#
# Needs: python3 >= 3.11 (or $PYTHON), apt-get with the machine's Debian sources,
# PyPI. Everything lands in build/check_compilers (git-ignored); a second run reuses
# the venv, the headers, the generated C of unchanged modules and zig's cache (which
# recompiles only what a changed source or header touches), so it takes seconds.
# --clean removes that directory first.
set -euo pipefail

ZIGLANG_VERSION=0.17.1
CPYTHON_SRC_PACKAGE=python3.11
CPYTHON_ORIG_SHA256=2411c74bda5bbcfcddaf4531f66d1adc73f247f529aee981b029513aefdbf849
# uname -s / uname -r / arch on the macOS 15 runners that build the macOS wheels.
DARWIN_RELEASE=24.0.0

# Wheel platforms: zig target (with cibuildwheel's default deployment targets for
# macOS), which pyconfig.h, and flags of their own.
TARGETS=(aarch64-macos x86_64-macos x86_64-windows)
declare -A ZIG_TARGET=(
    [aarch64-macos]=aarch64-macos.11.0
    [x86_64-macos]=x86_64-macos.10.13
    [x86_64-windows]=x86_64-windows-gnu
)
declare -A PY_HEADERS=([aarch64-macos]=macos [x86_64-macos]=macos [x86_64-windows]=windows)
declare -A TARGET_FLAGS=([aarch64-macos]="" [x86_64-macos]="" [x86_64-windows]="-DMS_WIN64")

# Missing or mismatched functions, prototypes and pointers are errors, not warnings.
CHECK_FLAGS=(-O2
    -Werror=implicit-function-declaration -Werror=implicit-int
    -Werror=incompatible-function-pointer-types -Werror=incompatible-pointer-types
    -Werror=int-conversion -Werror=return-type)

# What MLP_CY_PORTABLE_ONLY forbids in mlp_cy's headers (the headers pass).
POISON=(
    __attribute__ __attribute __declspec asm __asm __asm__ __volatile__
    __extension__ __typeof__ __typeof typeof __auto_type __label__ __int128
    __inline__ __restrict__
    __builtin_cpu_supports __builtin_cpu_init __builtin_cpu_is
    __builtin_expect __builtin_prefetch __builtin_assume_aligned __builtin_unreachable
    __builtin_shufflevector __builtin_convertvector __builtin_shuffle
    __builtin_ia32_pause __builtin_popcount __builtin_popcountll __builtin_ctz
    __builtin_ctzll __builtin_clz __builtin_clzll __builtin_bswap32 __builtin_bswap64
    __builtin_alloca __builtin_memcpy __builtin_memset
    __atomic_load_n __atomic_store_n __atomic_exchange_n __atomic_compare_exchange_n
    __atomic_load __atomic_store __atomic_exchange __atomic_compare_exchange
    __atomic_fetch_add __atomic_fetch_sub __atomic_fetch_and __atomic_fetch_or
    __atomic_fetch_xor __atomic_add_fetch __atomic_sub_fetch __atomic_and_fetch
    __atomic_or_fetch __atomic_xor_fetch __atomic_thread_fence __atomic_signal_fence
    __atomic_test_and_set __atomic_clear
    __sync_synchronize __sync_fetch_and_add __sync_fetch_and_sub __sync_add_and_fetch
    __sync_sub_and_fetch __sync_bool_compare_and_swap __sync_val_compare_and_swap
    __sync_lock_test_and_set __sync_lock_release
)

clean=0
while [ $# -gt 0 ]; do
    case "$1" in
        --clean) clean=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "check_compilers: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
work=build/check_compilers
python="${PYTHON:-python3}"
jobs="$(nproc 2>/dev/null || echo 2)"
started=$SECONDS
current=""
finish() {
    local status=$?
    if [ "$status" -ne 0 ] && [ -n "$current" ]; then
        echo "check_compilers: FAILED (exit $status) in step: $current" >&2
    fi
}
trap finish EXIT
step() { current="$1"; echo "== $1 ($((SECONDS - started)) s)"; }

if [ "$clean" = 1 ]; then rm -rf "$work"; fi
mkdir -p "$work"
abs_work="$repo/$work"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
export ZIG_GLOBAL_CACHE_DIR="$abs_work/zig-cache" ZIG_LOCAL_CACHE_DIR="$abs_work/zig-cache"

# ---------------------------------------------------------------------------------
step "1. tool venv"
venv="$work/venv"
requirements="ziglang==$ZIGLANG_VERSION
$("$python" -c 'import sys, tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))')"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/requirements.txt" 2>/dev/null)" != "$requirements" ]; then
    rm -rf "$venv"
    "$python" -m venv "$venv"
    printf '%s\n' "$requirements" > "$work/requirements.new"
    "$venv/bin/python" -m pip install -q -r "$work/requirements.new"
    mv "$work/requirements.new" "$venv/requirements.txt"
fi
py="$abs_work/venv/bin/python"
zig_cc() { "$py" -m ziglang cc "$@"; }
zig_bin="$("$py" -c 'import os, ziglang; print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))')"
echo "   $("$py" -m ziglang version | sed 's/^/zig /'), $(zig_cc --version | head -1)," \
     "Cython $("$py" -c 'import Cython; print(Cython.__version__)')"

# ---------------------------------------------------------------------------------
step "2a. CPython source ($CPYTHON_SRC_PACKAGE, Debian's orig tarball)"
src_root="$work/cpython"
cpython=""
[ -f "$src_root/extracted" ] && cpython="$src_root/$(cat "$src_root/extracted")"
if [ -z "$cpython" ] || [ ! -f "$cpython/Include/Python.h" ]; then
    rm -rf "$src_root"
    mkdir -p "$src_root/apt/lists/partial" "$src_root/apt/cache" "$src_root/apt/sources" "$src_root/dl"
    # deb-src twins of the machine's own entries, in a private apt state: the system's
    # apt configuration and lists are left alone.
    for f in /etc/apt/sources.list.d/*.sources; do
        if [ -f "$f" ]; then
            sed 's/^Types:.*/Types: deb-src/' "$f" > "$src_root/apt/sources/$(basename "$f")"
        fi
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        if [ -f "$f" ]; then
            sed -n 's/^[[:space:]]*deb[[:space:]]/deb-src /p' "$f" \
                > "$src_root/apt/sources/$(basename "$f").list"
        fi
    done
    apt_opts=(-q -o "Dir::Etc::SourceList=/dev/null"
        -o "Dir::Etc::SourceParts=$abs_work/cpython/apt/sources"
        -o "Dir::State::Lists=$abs_work/cpython/apt/lists"
        -o "Dir::Cache=$abs_work/cpython/apt/cache" -o "APT::Sandbox::User=root")
    # A source without deb-src indexes only warns; apt-get source below must succeed.
    apt-get "${apt_opts[@]}" update > "$src_root/apt-update.log" 2>&1 \
        || { echo "   (apt-get update reported errors, see $src_root/apt-update.log)"; }
    (cd "$src_root/dl" && apt-get "${apt_opts[@]}" source --download-only --tar-only \
        "$CPYTHON_SRC_PACKAGE" > ../apt-source.log 2>&1) \
        || { cat "$src_root/apt-source.log" >&2; exit 1; }
    tarball="$(ls "$src_root"/dl/*.orig.tar.*)"
    echo "$CPYTHON_ORIG_SHA256  $tarball" | sha256sum -c --quiet -
    tar -xf "$tarball" -C "$src_root"
    top="$(tar -tf "$tarball" | awk -F/ 'NR == 1 { print $1 }')"
    rm -f "$tarball"
    echo "$top" > "$src_root/extracted"
    cpython="$src_root/$top"
fi
echo "   $cpython"

# ---------------------------------------------------------------------------------
step "2b. headers: Windows (Include/ + PC/pyconfig.h), macOS (Include/ + configure's pyconfig.h)"
inc="$work/include"
if [ ! -f "$inc/windows/pyconfig.h" ]; then
    rm -rf "$inc/windows" && mkdir -p "$inc/windows"
    cp -R "$cpython/Include/." "$inc/windows/"
    cp "$cpython/PC/pyconfig.h" "$inc/windows/pyconfig.h"
fi

# ---------------------------------------------------------------------------------
# macOS headers: Include/ + pyconfig.h from CPython's configure, cross (zig). Runs in
# the background (about a minute) while Cython and the Windows checks run.
make_macos_headers() {
    local cfg="$work/configure-macos" want
    rm -rf "$cfg" && mkdir -p "$cfg/build"
    # The three patches described in the header; each must apply exactly.
    # shellcheck disable=SC2016  # configure's own text, not expanded here
    sed -e 's/^\t\*-\*-vxworks\*)$/\t*-*-vxworks* | *-*-darwin*)/' \
        -e '/if test "$cross_compiling" = yes; then :/{n;s/^  ac_osx_32bit=yes$/  ac_osx_32bit=no/}' \
        -e 's|`/usr/bin/arch`|`echo "$MACOS_ARCH_OUTPUT"`|' \
        "$cpython/configure" > "$cfg/configure"
    # 2 case lines + 1 default + 4 uses of /usr/bin/arch in the pinned tarball.
    if [ "$(diff "$cpython/configure" "$cfg/configure" | grep -c '^>')" -ne 7 ]; then
        echo "check_compilers: the macOS patches to CPython's configure did not apply" >&2
        exit 1
    fi
    chmod +x "$cfg/configure"
    # zig's clang for the target; zig ships no macOS frameworks, so the
    # `-framework CoreFoundation` configure adds to every link probe is dropped (no
    # probe uses it). The zig binary directly: configure runs it hundreds of times.
    cat > "$cfg/cc" <<EOF
#!/bin/sh
for a in "\$@"; do
    shift
    if [ "\${skip:-}" = 1 ]; then skip=; continue; fi
    if [ "\$a" = -framework ]; then skip=1; continue; fi
    set -- "\$@" "\$a"
done
exec "$zig_bin" cc -target ${ZIG_TARGET[aarch64-macos]} "\$@"
EOF
    chmod +x "$cfg/cc"
    printf '%s\n' ac_cv_file__dev_ptmx=yes ac_cv_file__dev_ptc=no ac_cv_buggy_getaddrinfo=no \
        > "$cfg/config.site"
    (cd "$cfg/build" && env CONFIG_SITE="$abs_work/configure-macos/config.site" \
        MACHDEP=darwin ac_sys_system=Darwin ac_sys_release="$DARWIN_RELEASE" \
        MACOS_ARCH_OUTPUT=arm64 MACOSX_DEPLOYMENT_TARGET=11.0 \
        CC="$abs_work/configure-macos/cc" READELF=true PKG_CONFIG=false \
        "$abs_work/configure-macos/configure" --srcdir="$repo/$cpython" \
        --host=aarch64-apple-darwin --build="$(uname -m)-pc-linux-gnu" \
        --with-build-python="$py" --enable-framework > ../configure.log 2>&1) \
        || { tail -20 "$cfg/configure.log" >&2; exit 1; }
    for want in '#define _DARWIN_C_SOURCE 1' '#define WITH_DYLD 1' '#define SIZEOF_VOID_P 8' \
                '#define HAVE_PTHREAD_H 1' '#define HAVE_STD_ATOMIC 1'; do
        grep -qx "$want" "$cfg/build/pyconfig.h" \
            || { echo "check_compilers: macOS pyconfig.h lacks: $want" >&2; exit 1; }
    done
    ! grep -q '^#define _XOPEN_SOURCE' "$cfg/build/pyconfig.h" \
        || { echo "check_compilers: macOS pyconfig.h defines _XOPEN_SOURCE" >&2; exit 1; }
    rm -rf "$inc/macos" && mkdir -p "$inc/macos"
    cp -R "$cpython/Include/." "$inc/macos/"
    cp "$cfg/build/pyconfig.h" "$inc/macos/pyconfig.h"
    rm -rf "$cfg/build"
}
macos_pid=""
if [ ! -f "$inc/macos/pyconfig.h" ]; then
    echo "   macOS pyconfig.h: CPython's configure, in the background"
    make_macos_headers &
    macos_pid=$!
fi

# ---------------------------------------------------------------------------------
step "3. cythonize (setup.py's modules and directives)"
# Cython regenerates a module when its .pyx or .pxd files changed; a new setup.py,
# pyproject.toml or Cython regenerates all. Unchanged C keeps zig's cache valid.
cy_stamp="$(cat setup.py pyproject.toml | sha256sum | cut -c1-16) $("$py" -c 'import Cython; print(Cython.__version__)')"
if [ "$(cat "$work/c/stamp" 2>/dev/null)" != "$cy_stamp" ]; then
    rm -rf "$work/c" && mkdir -p "$work/c" && echo "$cy_stamp" > "$work/c/stamp"
fi
"$py" - "$work/c" > "$work/setup-info.txt" <<'PY'
import os, runpy, sys
import Cython.Build, setuptools

out = sys.argv[1]
real_cythonize, captured = Cython.Build.cythonize, {}

def cythonize(module_list, **kw):
    captured["directives"] = kw.get("compiler_directives", {})
    kw.update(build_dir=out, quiet=True)
    return real_cythonize(module_list, **kw)

def setup(ext_modules=(), **kw):
    captured["extensions"] = ext_modules

Cython.Build.cythonize, setuptools.setup = cythonize, setup
os.environ["MLP_CY_DEBUG_CYTHON"] = "0"   # release directives, as the wheels
runpy.run_path("setup.py", run_name="__main__")
args = dict.fromkeys(a for ext in captured["extensions"] for a in ext.extra_compile_args)
print("directives", " ".join(f"{k}={v}" for k, v in captured["directives"].items()))
print("posix_extra_compile_args", " ".join(a for a in args if not a.startswith("-O")))
for ext in captured["extensions"]:
    print("module", ext.name.rsplit(".", 1)[-1], ext.sources[0])
PY
modules=() ; declare -A c_file=()
while read -r kind name path; do
    if [ "$kind" = module ]; then modules+=("$name"); c_file[$name]="$path"; fi
done < "$work/setup-info.txt"
read -r -a posix_args <<< "$(sed -n 's/^posix_extra_compile_args *//p' "$work/setup-info.txt")"
echo "   modules: ${modules[*]}"
echo "   $(grep '^directives' "$work/setup-info.txt")"
echo "   setup.py's non-Windows flags kept for macOS (its -O level aside): ${posix_args[*]:-none}"

# ---------------------------------------------------------------------------------
# One check: writes $status/<target>.<pass>.<module> (ok / FAIL / -) and a log.
status="$work/status"; logs="$work/logs"
rm -rf "$status" "$logs" "$work/obj" "$work/tu"
mkdir -p "$status" "$logs" "$work/obj" "$work/tu"
local_inc="$repo/src/mlp_cy"

target_flags() {   # the flags every pass uses for target $1
    local t="$1"
    # shellcheck disable=SC2206  # TARGET_FLAGS holds space-separated flags
    local -a f=(-target "${ZIG_TARGET[$t]}" ${TARGET_FLAGS[$t]})
    if [ "${PY_HEADERS[$t]}" = macos ]; then f+=("${posix_args[@]}"); fi
    printf '%s\n' "${f[@]}"
}

compile_module() {   # target pass module
    local t="$1" pass="$2" m="$3" key="$1.$2.$3" flags
    mapfile -t flags < <(target_flags "$t")
    if [ "$pass" = portable ]; then flags+=(-DMLP_CY_PORTABLE_ONLY); fi
    if zig_cc "${flags[@]}" "${CHECK_FLAGS[@]}" -I "$local_inc" -I "$inc/${PY_HEADERS[$t]}" \
            -c "${c_file[$m]}" -o "$work/obj/$key.o" > "$logs/$key.log" 2>&1; then
        echo ok > "$status/$key"
    else
        echo FAIL > "$status/$key"
    fi
}

check_headers() {   # target module: mlp_cy's headers alone, strict C11, GNU poisoned
    local t="$1" m="$2" key="$1.headers.$2" flags h
    local -a headers=()
    mapfile -t flags < <(target_flags "$t")
    flags+=(-DMLP_CY_PORTABLE_ONLY "${CHECK_FLAGS[@]}" -I "$local_inc" -isystem "$inc/${PY_HEADERS[$t]}")
    # mlp_cy's headers in the order the module's C includes them.
    while read -r h; do
        if [ -f "$local_inc/$h" ] && [[ " ${headers[*]} " != *" $h "* ]]; then headers+=("$h"); fi
    done < <(sed -n 's/^#include "\([^"]*\)".*/\1/p' "${c_file[$m]}")
    if [ ${#headers[@]} -eq 0 ]; then echo - > "$status/$key"; return; fi
    { echo '#include <Python.h>'; printf '#include "%s"\n' "${headers[@]}"; } > "$work/tu/$key.probe.c"
    # The system headers they include in this mode go before the poison (include
    # guards keep them from being read again after it).
    if ! zig_cc "${flags[@]}" -E -dI "$work/tu/$key.probe.c" -o "$work/tu/$key.probe.i" \
            > "$logs/$key.log" 2>&1 \
        || ! POISON="${POISON[*]}" "$py" - "$work/tu/$key.probe.i" "$local_inc" "$work/tu/$key.c" \
            "${headers[@]}" >> "$logs/$key.log" 2>&1 <<'PY'
import os, re, sys

probe, local, out, headers = sys.argv[1], os.path.realpath(sys.argv[2]), sys.argv[3], sys.argv[4:]
marker = re.compile(r'^# \d+ "((?:[^"\\]|\\.)*)"')
include = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')
pragma = re.compile(r'^\s*#\s*pragma\s+(GCC|clang|omp)\b')
current, system, bad = None, [], []
for line in open(probe, errors="replace"):
    m = marker.match(line)
    if m:
        current = m.group(1)
        continue
    if current is None or os.path.dirname(os.path.realpath(current)) != local:
        continue
    m = include.match(line)
    if m and (m.group(1) == "<" or not os.path.isfile(os.path.join(local, m.group(2)))):
        if m.group(2) not in system and m.group(2) != "Python.h":
            system.append(m.group(2))
    elif pragma.match(line):
        bad.append(f"{os.path.basename(current)}: {line.strip()}")
with open(out, "w") as f:
    f.write("/* mlp_cy's headers with MLP_CY_PORTABLE_ONLY: no GNU extension allowed. */\n")
    f.write("#include <Python.h>\n")
    f.writelines(f"#include <{h}>\n" for h in system)
    f.writelines(f"#pragma GCC poison {p}\n" for p in os.environ["POISON"].split())
    f.writelines(f'#include "{h}"\n' for h in headers)
for b in bad:
    print(f"error: compiler-specific pragma in MLP_CY_PORTABLE_ONLY mode: {b}")
sys.exit(1 if bad else 0)
PY
    then
        echo FAIL > "$status/$key"; return
    fi
    if zig_cc "${flags[@]}" -std=c11 -pedantic-errors -c "$work/tu/$key.c" -o "$work/obj/$key.o" \
            >> "$logs/$key.log" 2>&1; then
        echo ok > "$status/$key"
    else
        echo FAIL > "$status/$key"
    fi
}

run() {   # run "$@" in the background, at most $jobs at a time
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
    "$@" &
}

queue_target() {   # every check of target $1
    local m
    for m in "${modules[@]}"; do
        run compile_module "$1" default "$m"
        run compile_module "$1" portable "$m"
        run check_headers "$1" "$m"
    done
}

step "4. compile: ${TARGETS[*]} x default, portable, headers"
for t in "${TARGETS[@]}"; do
    if [ "${PY_HEADERS[$t]}" != macos ]; then queue_target "$t"; fi
done
if [ -n "$macos_pid" ]; then
    wait "$macos_pid" || true
    if [ ! -f "$inc/macos/pyconfig.h" ]; then
        echo "check_compilers: no macOS pyconfig.h (see $work/configure-macos/configure.log)" >&2
        exit 1
    fi
fi
for t in "${TARGETS[@]}"; do
    if [ "${PY_HEADERS[$t]}" = macos ]; then queue_target "$t"; fi
done
wait
current=""

# ---------------------------------------------------------------------------------
echo "== 5. result ($((SECONDS - started)) s; CPython $(basename "$cpython" | sed 's/^Python-//') headers," \
     "logs in $logs)"
printf '\n%-16s %-10s' target pass
printf ' %-10s' "${modules[@]}"
printf '\n'
failed=()
for t in "${TARGETS[@]}"; do
    for pass in default portable headers; do
        printf '%-16s %-10s' "$t" "$pass"
        for m in "${modules[@]}"; do
            s="$(cat "$status/$t.$pass.$m" 2>/dev/null || echo FAIL)"
            printf ' %-10s' "$s"
            if [ "$s" = FAIL ]; then failed+=("$t.$pass.$m"); fi
        done
        printf '\n'
    done
done
echo "   (ok: compiled; FAIL: see below; -: the module includes no mlp_cy header)"
if [ ${#failed[@]} -gt 0 ]; then
    echo
    echo "Failures (first errors; whole logs in $logs):"
    for key in "${failed[@]}"; do
        echo "  $key:"
        # The first three errors, each with the source line clang quotes under it.
        awk '/error/ { print; if ((getline l) > 0 && l ~ /^ *[0-9]+ \|/) print l
                       if (++n == 3) exit }
             END { if (!n) print "(no error line: see the log)" }' "$logs/$key.log" \
            | sed -e "s|$repo/||g" -e 's/^/      /' | cut -c1-220
    done
    echo
    echo "check_compilers: FAILED (${#failed[@]} of $(( ${#TARGETS[@]} * 3 * ${#modules[@]} )) checks)"
    exit 1
fi
echo "check_compilers: all passed"
