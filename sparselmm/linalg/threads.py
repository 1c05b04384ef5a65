"""The one BLAS-thread policy: one BLAS thread below a size of dense work, and on a busy machine.

A threaded OpenBLAS wakes and synchronises its pool on every call. For the few-hundred-row matrices of most
mixed models that costs more than a second thread saves, and while other processes hold the cores its
spinning threads cost far more: the 60 × 40 maximal fit (q = 200) took 5.9 s instead of 0.05 s, InstEval's
ML fit 25 s instead of 1.6 s, potrf + potri of InstEval's 1,156² Schur block 6.1 s instead of 42 ms (two
threads against one, with two to four other processes running on the 2-core machine).

One rule, applied where the work is known (thresholds in :mod:`sparselmm.linalg.thresholds`):

* an evaluation of the profiled deviance (:func:`evaluation_limit`): every BLAS on one thread when the
  factor's dense work is below :data:`~sparselmm.linalg.thresholds.EVALUATION_ONE_THREAD_FLOPS` or the
  machine is busy; otherwise numpy's own BLAS alone on one thread, since its small products would wake a
  second spinning pool beside the LAPACK (scipy) or CHOLMOD one doing the heavy work;
* the optimiser's own steps between evaluations (:func:`optimizer_limit`): one thread in the same cases,
  else unchanged;
* a loop of factorisations — refits, or a whole glmer fit (:func:`blas_threads`, with
  :data:`~sparselmm.linalg.thresholds.LOOP_ONE_THREAD_FLOPS`): one thread when the cube of the dense
  block's order is below the threshold, else unchanged.
"""

from __future__ import annotations

import contextlib
import os
from functools import cache

import scipy.linalg  # noqa: F401 - scipy's BLAS is loaded before the scan below

from . import cholmod  # noqa: F401 - and CHOLMOD's
from .thresholds import EVALUATION_ONE_THREAD_FLOPS, LOOP_ONE_THREAD_FLOPS

__all__ = [
    "blas_threads",
    "evaluation_limit",
    "machine_busy",
    "one_blas_thread",
    "optimizer_limit",
    "small_evaluation",
]


@cache
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


# the controller scans the loaded libraries once (~16 ms): do it at import, where numpy, scipy and CHOLMOD's
# BLAS are already loaded, rather than inside the first fit
_blas_controller()


_CPUS = os.cpu_count() or 1  # os.cpu_count() takes ~7 µs: read once, not per evaluation


def machine_busy() -> bool:
    """Other processes keep the cores busy (1-minute load average above cores − ½).

    Then every BLAS runs on one thread: OpenBLAS's threads spin while they wait for each other, and on an
    oversubscribed machine that made the InstEval ML fit 25 s instead of 1.6 s single-threaded (measured
    with two other processes at 100 % on the 2-core machine); lme4, in another process, was not slowed
    like that.
    """
    try:
        return os.getloadavg()[0] > _CPUS - 0.5
    except OSError:
        return False


class _OneBlasThread:
    """Context: the given BLAS libraries on one thread, each restored to its own count on exit.

    threadpoolctl's per-library controllers called directly, not through ``ThreadpoolController.limit``
    (its per-call bookkeeping costs more than a small model's evaluation). The thread counts are
    process-wide, so inside a context that holds every BLAS on one thread (the optimiser's limit, a refit
    loop's) the contexts nested in it (each evaluation's) do nothing.
    """

    __slots__ = ("_libs", "_orig", "_every")
    _every_depth = 0  # contexts holding every BLAS library on one thread, open in this process

    def __init__(self, libs, every: bool):
        self._libs = libs
        self._every = every

    def __enter__(self):
        cls = _OneBlasThread
        if cls._every_depth:
            self._orig = None
            return self
        cls._every_depth += self._every
        self._orig = [lib.get_num_threads() for lib in self._libs]
        for lib, n in zip(self._libs, self._orig):
            if n != 1:
                lib.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        if self._orig is None:
            return False
        _OneBlasThread._every_depth -= self._every
        for lib, n in zip(self._libs, self._orig):
            if n != 1:
                lib.set_num_threads(n)
        return False


@cache
def _blas_libraries(numpy_only: bool) -> tuple:
    libs = [lib for lib in _blas_controller().lib_controllers if lib.user_api == "blas"]
    if numpy_only:
        libs = [lib for lib in libs if "numpy.libs" in lib.filepath or "/numpy/" in lib.filepath]
    return tuple(libs)


def _numpy_blas_one_thread():
    """numpy's bundled BLAS limited to one thread (no-op when numpy shares scipy's or the system's)."""
    libs = _blas_libraries(True)
    return _OneBlasThread(libs, False) if libs else contextlib.nullcontext()


def one_blas_thread():
    """A context limiting every loaded BLAS to one thread."""
    return _OneBlasThread(_blas_libraries(False), True)


def small_evaluation(dense_flops: float) -> bool:
    """An evaluation with this much dense work (a factor's ``dense_flops()``) runs on one BLAS thread."""
    return dense_flops < EVALUATION_ONE_THREAD_FLOPS


def evaluation_limit(small: bool):
    """The BLAS threads of one evaluation: one for every BLAS when ``small`` (:func:`small_evaluation`) or
    the machine is busy, else one for numpy's own BLAS only."""
    return one_blas_thread() if small or machine_busy() else _numpy_blas_one_thread()


def optimizer_limit(small: bool):
    """The BLAS threads for an optimiser's own steps (L-BFGS-B's small LAPACK calls): one when the
    evaluations are ``small`` or the machine busy (evaluations then run on one thread anyway), else
    unchanged — an evaluation sets its own limits inside (:func:`evaluation_limit`)."""
    return one_blas_thread() if small or machine_busy() else contextlib.nullcontext()


def blas_threads(order: int, below: float = LOOP_ONE_THREAD_FLOPS):
    """A context with every BLAS on one thread when a dense block of this ``order`` has ``order³ < below``
    flops (:data:`~sparselmm.linalg.thresholds.LOOP_ONE_THREAD_FLOPS` unless given), else unchanged."""
    if float(order) ** 3 >= below:
        return contextlib.nullcontext()
    return one_blas_thread()
