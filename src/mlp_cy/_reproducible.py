"""mlp_cy.reproducible_threads: results that are the same bits on any thread count."""

from . import _blas


class reproducible_threads:
    """Cut every batch as for ``n`` threads, whatever the number that runs it.

    By default a call cuts each batch into chunks for the threads it runs on (one
    chunk of rows per thread, two of weights), and a BLAS product's last bits depend
    on the shape of the block it is given: results on 1, 2 or 8 threads agree to
    rounding, and are the same bits only for the same thread count. Inside
    ``reproducible_threads(n)``, fit, partial_fit, predict and L-BFGS cut every batch
    as for ``n`` threads, so their results are the same bits on any number of threads
    (``threadpool_limits``, the CLI's ``--threads``, the cores of the machine), the
    same CPU and libraries given. It costs speed where fewer than ``n`` threads run:
    each extra chunk of rows is one more pass of the BLAS over the weights. (mlp_cy
    holds the BLAS at one thread during its calls; where it cannot, with a BLAS whose
    thread count it cannot set, that BLAS's own threads can still move the last bits:
    fix its count yourself, e.g. with threadpoolctl.)

    Process-wide, like threadpoolctl's limits. It takes effect at once, and as a
    context manager it gives back the previous setting on exit (so does
    ``restore()``). ``n=None`` turns it off. The environment variable
    ``MLP_CY_REPRODUCIBLE_THREADS=n`` sets it when mlp_cy is imported.

    >>> from mlp_cy import reproducible_threads
    >>> with reproducible_threads(4):
    ...     pass                     # fits here give the same bits on 1 to 64 threads
    """

    def __init__(self, n):
        self.n = n
        self._previous = _blas._set_reproducible_threads(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.restore()

    def restore(self):
        """Give back the setting from before this one."""
        _blas._set_reproducible_threads(self._previous)

    @staticmethod
    def current():
        """The thread count every call is cut for, or None (per thread count)."""
        return _blas._reproducible_threads()

    def __repr__(self):
        return f"reproducible_threads({self.n!r})"
