"""The level pass: what the first pass over chunked data learns, chunk by chunk (additive).

Per chunk, :func:`level_partial` gives a :class:`LevelPartial`: the complete rows (after the missing-value
policy), the levels of every level-coded column (grouping factors, categorical columns of the fixed part
or of a term's coefficients), the combinations that occur for interaction factors (``a:b``), each column's
kind (a column that changes kind between chunks is an error naming both), the weighted mean ``m₀`` of
``y − offset`` and the first rows (to build the formulaic specs from). Partials add (``a + b``), so the
pass sums them like the cross-products; :func:`global_levels` orders a column's levels as R does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from ..design import _response
from ..errors import DataError
from .columns import ModelColumns, column_kind

__all__ = ["LevelPartial", "global_levels", "level_partial"]

SAMPLE_ROWS = 20_000  # rows kept from the start of the data to build the formulaic model specs (and to
# give stateful transforms their state); every leaf of a Dask level pass carries this many rows


@dataclass
class LevelPartial:
    """What the level pass learns from some chunks; ``a + b`` combines two (``a``'s rows first)."""

    n: int = 0
    n_dropped: int = 0
    sum_w: float = 0.0
    sum_wy: float = 0.0  # Σ w (y − offset)
    sum_y: float = 0.0  # Σ y (unweighted, raw response): centre of the moment start
    kinds: dict = field(default_factory=dict)  # column -> (kind, dtype text, chunk label)
    values: dict = field(default_factory=dict)  # column -> pd.Index of distinct values seen
    categories: dict = field(default_factory=dict)  # categorical column -> categories in first-seen order
    combos: dict = field(default_factory=dict)  # tuple of columns -> DataFrame of distinct combinations
    sample: pd.DataFrame | None = None
    chunks: int = 0

    def __add__(self, other: LevelPartial) -> LevelPartial:
        if other is None or (isinstance(other, int) and other == 0):  # sum() starts at 0
            return self
        out = LevelPartial(
            self.n + other.n,
            self.n_dropped + other.n_dropped,
            self.sum_w + other.sum_w,
            self.sum_wy + other.sum_wy,
            self.sum_y + other.sum_y,
            dict(self.kinds),
            dict(self.values),
            dict(self.categories),
            dict(self.combos),
            self.sample,
            self.chunks + other.chunks,
        )
        for col, (kind, dtype, label) in other.kinds.items():
            mine = out.kinds.get(col)
            if mine is None:
                out.kinds[col] = (kind, dtype, label)
            elif mine[0] != kind:
                raise DataError(
                    f"Column {col!r} has dtype {mine[1]} in {mine[2]} but {dtype} in {label}; a column must "
                    "be numeric (numbers, bool) everywhere or categorical (text, category) everywhere. Convert it "
                    "in the files (e.g. cast to one type) and fit again."
                )
        for col, idx in other.values.items():
            out.values[col] = idx if col not in out.values else out.values[col].append(idx).unique()
        for col, cats in other.categories.items():
            if col not in out.categories:
                out.categories[col] = cats
            else:
                mine = out.categories[col]
                out.categories[col] = mine.append(cats[~cats.isin(mine)])
        for key, frame in other.combos.items():
            out.combos[key] = frame if key not in out.combos else pd.concat([out.combos[key], frame]).drop_duplicates()
        if out.sample is None or len(out.sample) < SAMPLE_ROWS:
            if other.sample is not None:
                out.sample = other.sample if out.sample is None else pd.concat([out.sample, other.sample])
                out.sample = out.sample.iloc[:SAMPLE_ROWS].reset_index(drop=True)
        return out

    __radd__ = __add__


def level_partial(columns: ModelColumns, level_columns: list[str], frame: pd.DataFrame, label: str) -> LevelPartial:
    """The level pass over one chunk (a pure function of the chunk: safe to recompute on a retry)."""
    missing_cols = [c for c in columns.read if c not in frame.columns]
    if missing_cols:
        raise DataError(f"{label} lacks the column(s) {missing_cols} that the model reads.")
    out = LevelPartial(chunks=1)
    for col in columns.read:
        out.kinds[col] = (column_kind(frame[col]), str(frame[col].dtype), label)
    clean = columns.clean(frame, label)
    if clean is None:
        return out
    out.n_dropped = clean.n_dropped
    f = clean.frame
    if len(f) == 0:
        return out
    out.n = len(f)
    y = _response(columns.parsed, f)
    yo = y if clean.offset is None else y - clean.offset
    w = clean.weights
    out.sum_w = float(len(f) if w is None else w.sum())
    out.sum_wy = float(yo.sum() if w is None else yo @ w)
    out.sum_y = float(y.sum())
    for col in level_columns:
        s = f[col]
        if isinstance(s.dtype, pd.CategoricalDtype):
            out.categories[col] = pd.Index(frame[col].cat.categories)  # clean_data dropped the unused ones
            s = s.cat.remove_unused_categories()
            out.values[col] = pd.Index(s.cat.categories)
        else:
            out.values[col] = pd.Index(pd.unique(s.to_numpy()))
    for key in columns.combos:
        out.combos[key] = f[list(key)].drop_duplicates().reset_index(drop=True)
    # the sample keeps weights/offset too, so the specs see exactly what a chunk will pass
    out.sample = f.iloc[:SAMPLE_ROWS].copy()
    return out


def global_levels(part: LevelPartial, col: str) -> pd.Index:
    """A column's levels over all chunks, in R's (and :func:`encode_grouping`'s) order."""
    used = part.values[col]
    if col in part.categories:
        cats = part.categories[col]
        return cats[cats.isin(used)]
    try:
        return pd.Index(used).sort_values()
    except TypeError:  # mixed types that cannot be ordered: order by their text, as encode_grouping
        return pd.Index(used.astype(str)).unique().sort_values()
