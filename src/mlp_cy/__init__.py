"""mlp_cy: neural-network classifiers and regressors whose hot loops are Cython over BLAS."""

import os

from .classifier import MLPClassifier
from ._estimator_files import load
from ._reproducible import reproducible_threads
from .regressor import MLPRegressor

__version__ = "0.1.0"

__all__ = ["MLPClassifier", "MLPRegressor", "get_include", "load", "reproducible_threads",
           "__version__"]


def get_include():
    """Directory that holds mlp_cy's .pxd files, for downstream build scripts.

    Add it to ``include_path`` of ``cythonize`` so that ``cimport mlp_cy.network``
    finds the declarations of the installed package.
    """
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
