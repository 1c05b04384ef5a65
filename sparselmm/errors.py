"""Exception and warning classes raised by sparselmm.

Every error the package raises on purpose derives from :class:`SparseLMMError`, so callers can catch
them all at once; the ones caused by a bad argument value also derive from :class:`ValueError`, as is
the Python convention. :func:`caller_stacklevel` makes the package's warnings point at the caller's line.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import inspect
import os
import sys
import warnings


class SparseLMMError(Exception):
    """Base class of all errors raised by sparselmm."""


class FormulaError(SparseLMMError, ValueError):
    """A model formula that cannot be parsed or does not describe a mixed model."""


class DataError(SparseLMMError, ValueError):
    """Data that cannot be used: unknown columns, missing values, wrong types or lengths."""


class RowsNotHeldError(DataError):
    """A result fitted from chunks (parquet files, Dask) was asked for something that needs its rows."""


class ModelSpecError(SparseLMMError, ValueError):
    """A model that is well formed but cannot be estimated (e.g. unidentifiable random effects)."""


class NumericalError(SparseLMMError, ArithmeticError):
    """A numerical failure (e.g. a matrix that is not positive definite) the fit cannot recover from."""


class MemoryLimitError(SparseLMMError, MemoryError):
    """No way of factoring the model fits the memory limit; the message gives each path's predicted memory."""


class ConvergenceWarning(UserWarning):
    """The optimiser stopped, but the convergence checks are not satisfied."""


class SingularFitWarning(UserWarning):
    """The fit is singular: a variance is estimated as zero or a correlation as ±1."""


class ArgumentError(SparseLMMError, TypeError):
    """A keyword argument the function does not take, e.g. an R spelling such as ``REML=`` or ``na.action=``."""


# --- warnings that point at the caller's line -----------------------------------------------------------
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _counted(frame) -> bool:
    # frames warnings.warn skips when it counts stacklevel (CPython's importlib bootstrap frames)
    name = frame.f_code.co_filename
    return not ("importlib" in name and "_bootstrap" in name)


def caller_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning point at the user's line that called into sparselmm.

    Call it in the argument list of ``warnings.warn`` (``warnings.warn(msg, Cls,
    stacklevel=caller_stacklevel())``): it counts the frames from the function issuing the warning
    out to the first frame above the outermost sparselmm frame, so the warning names the caller's file
    and line however deep inside the package (a fit, a refit in ``anova``, a method calling a function)
    it was raised.
    """
    frame = sys._getframe(1)  # the function that calls warnings.warn: stacklevel 1
    level, outermost = 1, 0  # called from outside the package: that function's own line
    while frame is not None:
        if _counted(frame):
            if frame.f_code.co_filename.startswith(_PACKAGE_DIR):
                outermost = level
            level += 1
        frame = frame.f_back
    return outermost + 1


@contextlib.contextmanager
def warnings_at_caller():
    """Re-issue the warnings raised inside the block so that they point at the caller's line.

    For code that calls functions whose warnings carry fixed ``stacklevel`` values: the warnings are
    recorded and issued again, same message and category, when the block ends (also by an error).
    """
    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        for w in caught:
            warnings.warn(w.message, w.category, stacklevel=caller_stacklevel())


# --- keyword arguments under R's (or another package's) names ------------------------------------------
def _argument_message(function: str, name: str, params: list[str], hints: dict[str, str]) -> str:
    head = f"{function}() got an unexpected keyword argument {name!r}"
    if name in hints:
        return f"{head}: {hints[name]}"
    python = name.replace(".", "_").lower()
    if python in params:
        return f"{head}: it is spelled {python}= here (Python style: lower case, '_' for '.')."
    close = difflib.get_close_matches(python, params, n=2, cutoff=0.7)
    if close:
        return f"{head}: did you mean {' or '.join(c + '=' for c in close)}?"
    return f"{head}; its arguments are {', '.join(params)}."


def check_arguments(hints: dict[str, str]):
    """Decorator: an unknown keyword argument raises :class:`ArgumentError` saying what to write instead.

    ``hints`` maps foreign spellings (R's ``REML``, ``na.action``, ...) to advice; other unknown names
    get the parameter with the same name in Python style (``calc.derivs`` → ``calc_derivs``) or a close
    match. The wrapped function keeps its signature and docstring (``functools.wraps``).
    """

    def decorate(fn):
        parameters = inspect.signature(fn).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            return fn  # takes any keyword
        params = list(parameters)
        known = frozenset(params)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            for name in kwargs:
                if name not in known:
                    raise ArgumentError(_argument_message(fn.__name__, name, params, hints))
            return fn(*args, **kwargs)

        return wrapper

    return decorate
