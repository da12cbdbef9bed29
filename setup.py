"""Build the Cython extensions; the project's metadata lives in pyproject.toml.

Set MLP_CY_DEBUG_CYTHON=1 to turn bounds and None checks back on while debugging.
"""

import glob
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

MODULES = ["_blas", "kernels", "_parallel", "network", "layers"]

debug = os.environ.get("MLP_CY_DEBUG_CYTHON", "0") != "0"
directives = {
    "language_level": 3,
    "boundscheck": debug,
    "wraparound": debug,
    "initializedcheck": debug,
    "nonecheck": debug,
    "cdivision": True,
    "embedsignature": True,
}

# -fno-trapping-math and -fno-math-errno let gcc vectorise the elementwise loops
# (clamps in exp, sqrt in Adam): mlp_cy never reads FP traps or errno. No -ffast-math:
# NaN and inf checks must keep working.
extra_compile_args = [] if os.name == "nt" else ["-O3", "-fno-trapping-math", "-fno-math-errno"]

extensions = [
    Extension(
        f"mlp_cy.{name}",
        [f"src/mlp_cy/{name}.pyx"],
        extra_compile_args=extra_compile_args,
        depends=sorted(glob.glob("src/mlp_cy/*.h")),   # rebuild when a kernel changes
        # NumPy's C API is not used: no numpy include dirs, no deprecated-API warnings.
    )
    for name in MODULES
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives))
