"""Cross-compile mlp_cy's extensions for aarch64 (a step of tools/check_aarch64.sh).

    python tools/aarch64_build.py --sysroot DIR --out DIR [--source DIR] [--cc CC]
                                  [--c-dir DIR] [--cflag FLAG]... [--jobs N]

The extensions, their Cython directives and their compile flags are setup.py's own:
setup.py is run with setuptools' setup() replaced by one that only records the
Extension objects, and with Cython's cythonize() writing its C into --c-dir. Each
generated .c is then compiled and linked the way setuptools would on an arm64 Debian
machine, with the target Python's sysconfig (CFLAGS less -g, CCSHARED, LDSHARED and
EXT_SUFFIX, read from the sysroot's _sysconfigdata file) and the sysroot's Python
headers, by the cross compiler --cc (--jobs at once, default one per core), adding
each --cflag (the checker adds -Werror=implicit-function-declaration: a C function
missing on aarch64 must fail the build, not be resolved at import).

--out receives an importable package folder: DIR/mlp_cy with the package's .py files
and the built extensions. Runs on the host's Python, which needs setup.py's build
requirements (Cython, setuptools, and scipy for cython_blas's .pxd files).
"""

import argparse
import concurrent.futures
import glob
import os
import runpy
import shlex
import shutil
import subprocess
import sys


def parse_args():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sysroot", required=True, help="the arm64 sysroot (Debian's python3.11)")
    parser.add_argument("--out", required=True, help="folder for the built package (DIR/mlp_cy)")
    parser.add_argument("--source", default=repo, help="the project tree (default: this checkout)")
    parser.add_argument("--cc", default="aarch64-linux-gnu-gcc", help="the cross compiler")
    parser.add_argument("--c-dir", help="folder for the generated C (default: OUT/../c)")
    parser.add_argument("--cflag", action="append", default=[], help="an extra compile flag")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="compilers run at once (default: the number of cores)")
    return parser.parse_args()


def setup_extensions(source, c_dir, jobs):
    """The Extension objects setup.py hands setup(), cythonized into c_dir (forced, by
    jobs processes)."""
    import setuptools
    import Cython.Build

    recorded, pyx_dirs = {}, {}
    real_cythonize = Cython.Build.cythonize

    def cythonize(module_list, **options):
        for ext in module_list:   # the .pyx folders: the C includes their headers by name
            pyx_dirs[ext.name] = sorted({os.path.dirname(os.path.abspath(s)) for s in ext.sources})
        options.update(build_dir=c_dir, force=True, nthreads=jobs)
        return real_cythonize(module_list, **options)

    def setup(**attrs):
        recorded.update(attrs)

    saved = setuptools.setup, Cython.Build.cythonize, list(sys.argv), os.getcwd()
    setuptools.setup, Cython.Build.cythonize = setup, cythonize
    sys.argv = ["setup.py"]
    os.chdir(source)          # setup.py names its sources relative to the tree
    try:
        runpy.run_path("setup.py", run_name="__main__")
    finally:
        setuptools.setup, Cython.Build.cythonize, sys.argv = saved[:3]
        os.chdir(saved[3])
    extensions = recorded.get("ext_modules") or []
    if not extensions:
        sys.exit("aarch64_build: setup.py declared no extension modules")
    for ext in extensions:
        ext.pyx_dirs = pyx_dirs.get(ext.name, [])
    return extensions


def target_sysconfig(sysroot):
    """The arm64 Python's build-time variables, from the sysroot's _sysconfigdata."""
    found = sorted(glob.glob(os.path.join(
        sysroot, "usr/lib/python3*/_sysconfigdata__aarch64-linux-gnu.py")))
    if not found:
        sys.exit(f"aarch64_build: no _sysconfigdata__aarch64-linux-gnu.py in {sysroot}")
    return runpy.run_path(found[-1])["build_time_vars"]


def build_one(ext, commands):
    """Run one extension's compile and link commands; returns (ok, log)."""
    log = []
    for command in commands:
        log.append("  $ " + shlex.join(command))
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        log.append(result.stdout.rstrip())
        if result.returncode != 0:
            log.append(f"  FAILED: exit {result.returncode}")
            return False, "\n".join(line for line in log if line)
    return True, "\n".join(line for line in log if line)


def main():
    args = parse_args()
    source = os.path.abspath(args.source)
    sysroot = os.path.abspath(args.sysroot)
    out = os.path.abspath(args.out)
    c_dir = os.path.abspath(args.c_dir or os.path.join(os.path.dirname(out), "c"))
    package_out = os.path.join(out, "mlp_cy")
    shutil.rmtree(c_dir, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(package_out)
    obj_dir = os.path.join(c_dir, "obj")
    os.makedirs(obj_dir)

    config = target_sysconfig(sysroot)
    include_py = sysroot + config["INCLUDEPY"]            # .../usr/include/python3.11
    # Debian's pyconfig.h there is a wrapper that includes
    # <aarch64-linux-gnu/python3.11/pyconfig.h>: the sysroot's usr/include holds only
    # the Python headers, so it goes on the path too.
    include_dirs = [include_py, os.path.join(sysroot, "usr/include")]
    # -g only adds debug information (gcc's code is the same without it) and takes a
    # third of the compile time: dropped.
    cflags = [flag for flag in shlex.split(config["CFLAGS"]) + shlex.split(config["CCSHARED"])
              if flag != "-g"]
    ldflags = [flag for flag in shlex.split(config["LDSHARED"])[1:] if flag != "-g"]
    suffix = config["EXT_SUFFIX"]

    print(f"Cythonizing {os.path.join(source, 'setup.py')}'s extensions into {c_dir}",
          flush=True)
    extensions = setup_extensions(source, c_dir, args.jobs)
    jobs = []
    for ext in extensions:
        package, _, module = ext.name.rpartition(".")
        if package != "mlp_cy":
            sys.exit(f"aarch64_build: unexpected extension {ext.name}")
        c_sources = [s if os.path.isabs(s) else os.path.join(source, s) for s in ext.sources]
        includes = [os.path.join(source, d) for d in ext.include_dirs] + ext.pyx_dirs \
            + include_dirs
        includes = list(dict.fromkeys(includes))
        defines = [f"-D{name}" if value is None else f"-D{name}={value}"
                   for name, value in ext.define_macros]
        commands, objects = [], []
        for c_source in c_sources:
            obj = os.path.join(obj_dir, os.path.basename(c_source) + ".o")
            commands.append([args.cc, *cflags, *defines, *[f"-I{d}" for d in includes],
                             "-c", c_source, "-o", obj, *ext.extra_compile_args, *args.cflag])
            objects.append(obj)
        target = os.path.join(package_out, module + suffix)
        commands.append([args.cc, *ldflags, *objects, "-o", target,
                         *[f"-L{d}" for d in ext.library_dirs],
                         *[f"-l{lib}" for lib in ext.libraries], *ext.extra_link_args])
        jobs.append((sum(os.path.getsize(s) for s in c_sources), ext, commands))

    # The biggest modules first, one compiler per core.
    jobs = [job[1:] for job in sorted(jobs, key=lambda job: -job[0])]
    failed = []
    print(f"\nCompiling {len(jobs)} extensions with {args.cc}, {args.jobs} at a time",
          flush=True)
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(build_one, ext, commands): ext for ext, commands in jobs}
        for future in concurrent.futures.as_completed(futures):
            ok, log = future.result()
            print(f"\n{futures[future].name}: {'built' if ok else 'FAILED'}\n{log}",
                  flush=True)
            if not ok:
                failed.append(futures[future].name)
    if failed:
        sys.exit(f"aarch64_build: the build failed for {', '.join(sorted(failed))}")

    for pattern in ("*.py", "*.pxd"):
        for path in sorted(glob.glob(os.path.join(source, "src", "mlp_cy", pattern))):
            shutil.copy2(path, package_out)
    print(f"\nBuilt {len(extensions)} extensions into {package_out}")


if __name__ == "__main__":
    main()
