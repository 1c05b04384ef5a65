"""Turn the caller's data into a clean pandas frame: accepted containers, needed columns, missing values.

Nothing here modifies the caller's object: the frame returned is always a new one holding only the
columns the model uses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import DataError

__all__ = ["CleanData", "as_dataframe", "clean_data", "vector_argument", "without_unused_categories"]

MISSING_POLICIES = ("drop", "raise")


def as_dataframe(data) -> pd.DataFrame:
    """Accept a pandas DataFrame, a mapping of columns or a polars DataFrame; reject anything else."""
    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, Mapping):
        try:
            return pd.DataFrame(dict(data))
        except ValueError as err:
            raise DataError(f"Could not turn the dict passed as data into columns of equal length: {err}") from None
    if type(data).__module__.startswith("polars") and hasattr(data, "get_columns"):
        # column by column through numpy: no pyarrow needed
        return pd.DataFrame({s.name: s.to_numpy() for s in data.get_columns()})
    raise DataError(
        f"data must be a pandas DataFrame (or a dict of columns, or a polars DataFrame), not {type(data).__name__}."
    )


def vector_argument(value, frame: pd.DataFrame, name: str) -> np.ndarray | None:
    """Resolve a ``weights=``/``offset=`` argument given as a column name or as an array of length n."""
    if value is None:
        return None
    if isinstance(value, str):
        if value not in frame.columns:
            raise DataError(f"{name}={value!r} is not a column of the data; columns are {list(frame.columns)}.")
        value = frame[value]
    try:
        arr = np.asarray(pd.to_numeric(pd.Series(np.asarray(value, dtype=object).ravel()), errors="raise"), dtype=float)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be numeric.") from None
    if arr.shape != (len(frame),):
        raise DataError(f"{name} has length {arr.size} but the data has {len(frame)} rows; give one value per row.")
    return arr


@dataclass
class CleanData:
    """The model's columns with incomplete rows removed.

    Attributes
    ----------
    frame : DataFrame
        New frame with only the used columns and the kept rows (index reset to 0..n-1).
    rows : ndarray
        Positions of the kept rows in the caller's data.
    weights, offset : ndarray or None
        Prior weights and offset for the kept rows.
    n_dropped : int
        Rows removed because of missing values.
    n_zero_weight : int
        Rows removed because their prior weight is zero (they have no influence on the fit).
    index : Index or None
        The caller's index labels of the kept rows (``predict()`` returns a Series on them).
    """

    frame: pd.DataFrame
    rows: np.ndarray
    weights: np.ndarray | None
    offset: np.ndarray | None
    n_dropped: int
    n_zero_weight: int = 0
    index: pd.Index | None = None


def without_unused_categories(values: pd.Categorical) -> pd.Categorical:
    """``values`` without the categories no value takes (the same object when every category is used)."""
    codes = values.codes
    if np.bincount(codes[codes >= 0], minlength=len(values.categories)).all():
        return values
    return values.remove_unused_categories()


def _kept_column(col: pd.Series, rows: np.ndarray | None):
    """A copy of a column's values, of the kept ``rows`` only (None: all): the caller's later edits never reach
    the fit's rows. Categoricals lose the categories no kept row has; nullable numbers become float64."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        return without_unused_categories(col.array.copy() if rows is None else col.array.take(rows))
    if isinstance(col.dtype, np.dtype):
        return col.to_numpy().copy() if rows is None else col.to_numpy()[rows]
    if _is_numeric(col):
        values = col.to_numpy(dtype=float, na_value=np.nan)
        return values if rows is None else values[rows]
    return col.array.copy() if rows is None else col.array.take(rows)


def _is_numeric(col: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)


def clean_data(
    data: pd.DataFrame,
    columns: Iterable[str],
    weights=None,
    offset=None,
    missing: str = "drop",
) -> CleanData:
    """Select ``columns``, check them and apply the missing-value policy.

    Parameters
    ----------
    data : DataFrame
    columns : iterable of str
        Every column the model reads.
    weights, offset : str, array-like or None
        Column names or one value per row. Rows with weight zero are left out: they have no influence
        on the fit (R's ``lm``); negative weights are an error.
    missing : {"drop", "raise"}
        ``"drop"`` removes rows with a missing value in any used column (lme4's ``na.omit``);
        ``"raise"`` raises a :class:`DataError` naming the columns.
    """
    if missing not in MISSING_POLICIES:
        raise DataError(f"missing={missing!r} is not understood; use one of {MISSING_POLICIES}.")
    if len(data) == 0:
        raise DataError("The data has no rows.")
    columns = list(dict.fromkeys(columns))
    unknown = [c for c in columns if c not in data.columns]
    if unknown:
        raise DataError(
            f"Name(s) {unknown} used in the formula are not columns of the data (nor functions formulaic "
            f"knows); available columns are {list(data.columns)}."
        )
    source = {}
    for name in columns:
        col = data[name]
        if isinstance(col, pd.DataFrame):
            raise DataError(f"Column {name!r} appears more than once in the data; rename the duplicates.")
        source[name] = col
    w = vector_argument(weights, data, "weights")
    off = vector_argument(offset, data, "offset")

    bad = np.zeros(len(data), dtype=bool)
    counts: dict[str, int] = {}
    for name, col in source.items():
        if _is_numeric(col):
            values = col.to_numpy(dtype=float, na_value=np.nan)
            na = np.isnan(values)
            infinite = np.isinf(values)
            if infinite.any():
                raise DataError(
                    f"Column {name!r} has {int(infinite.sum())} infinite value(s) (first at row "
                    f"{int(np.flatnonzero(infinite)[0])}); remove or recode them."
                )
        else:
            na = col.isna().to_numpy()
        if na.any():
            counts[name] = int(na.sum())
            bad |= na
    for name, arr in (("weights", w), ("offset", off)):
        if arr is None:
            continue
        if np.isinf(arr).any():
            raise DataError(f"{name} has infinite values; give finite numbers.")
        na = np.isnan(arr)
        if na.any():
            counts[name] = int(na.sum())
            bad |= na
    if bad.any() and missing == "raise":
        detail = ", ".join(f"{k}: {v}" for k, v in counts.items())
        raise DataError(f"Missing values in the model's columns ({detail}); drop those rows or pass missing='drop'.")
    rows = np.flatnonzero(~bad)
    if rows.size == 0:
        raise DataError("No complete rows remain after removing rows with missing values.")
    kept = rows if bad.any() else None
    if kept is not None:
        w = None if w is None else w[rows]
        off = None if off is None else off[rows]
    # one new frame, column by column (DataFrame.loc[:, columns].copy() was a large share of a small model's set-up)
    frame = pd.DataFrame({name: _kept_column(col, kept) for name, col in source.items()}, copy=False)
    n_zero = 0
    if w is not None:
        if np.any(w < 0):
            raise DataError(
                f"weights must be positive (or zero); {int(np.sum(w < 0))} are negative, the first at row "
                f"{int(rows[np.flatnonzero(w < 0)[0]])}."
            )
        zero = w == 0
        n_zero = int(zero.sum())
        if n_zero == w.size:
            raise DataError("All weights are zero: no row has any influence on the fit.")
        if n_zero:
            # no influence: the fit on the other rows (lm's rule; lme4 keeps them and its criterion is
            # infinite, log(0) in its Σ log w, so its optimiser never leaves the start)
            keep = np.flatnonzero(~zero)
            frame = frame.iloc[keep].reset_index(drop=True)
            rows, w = rows[keep], w[keep]
            off = None if off is None else off[keep]
            for name in columns:
                if isinstance(frame[name].dtype, pd.CategoricalDtype):
                    frame[name] = frame[name].cat.remove_unused_categories()
    index = data.index if kept is None and not n_zero else data.index[rows]
    return CleanData(frame, rows, w, off, int(bad.sum()), n_zero, index=index)
