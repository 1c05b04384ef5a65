"""Exception and warning classes raised by sparselmm.

Every error the package raises on purpose derives from :class:`SparseLMMError`, so callers can catch
them all at once; the ones caused by a bad argument value also derive from :class:`ValueError`, as is
the Python convention.
"""

from __future__ import annotations


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


class ConvergenceWarning(UserWarning):
    """The optimiser stopped, but the convergence checks are not satisfied."""


class SingularFitWarning(UserWarning):
    """The fit is singular: a variance is estimated as zero or a correlation as ±1."""
