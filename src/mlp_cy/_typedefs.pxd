# C types shared by every mlp_cy module, so that all .pxd signatures agree.
# Nothing else lives here (no NumPy headers are pulled in).

from libc.stdint cimport int32_t

ctypedef double float64_t
ctypedef float float32_t
ctypedef Py_ssize_t intp_t      # indices and sizes (numpy.intp)
ctypedef int32_t label_t         # class codes 0 .. n_classes - 1

# scipy.linalg.cython_blas takes LP64 ints. Newer SciPy can export an ILP64
# `blas_int`; everything here goes through this one alias so a switch is one line.
ctypedef int blas_int

# The element types X may have: raw pixels are converted as rows are gathered into
# a batch, so uint8 images train without a full floating-point copy.
ctypedef fused input_t:
    unsigned char
    float
    double

# How a dense X's rows are stored (layers.pxd Rows).
cdef enum InputKind:
    INPUT_UINT8 = 0
    INPUT_FLOAT32 = 1
    INPUT_FLOAT64 = 2
