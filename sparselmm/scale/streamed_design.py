"""A design without rows: what a fit from chunked data keeps in place of ``y``, ``X`` and ``Z``.

:class:`StreamedDesign` is a :class:`~sparselmm.design.Design` whose row-wise arrays were never held
(reading them raises :class:`~sparselmm.errors.RowsNotHeldError`, saying what the rows would take);
the terms' layout and levels, the fixed-effects names and spec, ``n``, ``p`` and ``q`` are all there.
:meth:`StreamedDesign.coding_frame` gives made-up rows for the anova contrasts; :class:`~sparselmm.crossprod.RowSummary`
holds the sums that identify the rows, for likelihood-ratio tests between fits.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..crossprod import RowSummary
from ..design import Design
from ..errors import RowsNotHeldError

__all__ = ["StreamedDesign", "coding_values"]


class StreamedDesign(Design):
    """A :class:`~sparselmm.design.Design` without rows: ``y``, ``X``, ``Zt`` (and the terms' ``refs``/``z``)
    were never held, so reading them raises :class:`~sparselmm.errors.RowsNotHeldError`.

    Everything the deviance, the summary and the random effects need — the terms' layout and levels, the
    fixed-effects names and spec, ``n``, ``p``, ``q`` — is here.
    """

    def __init__(self, parsed, fixed_names, fixed_spec, dropped, terms, n, has_weights, has_offset, clean, source):
        self.parsed = parsed
        self.fixed_names = fixed_names
        self.fixed_spec = fixed_spec
        self.dropped_columns = dropped
        self.terms = terms
        self.data = clean
        self.source = source
        self._n = int(n)
        self._has_weights = has_weights
        self._has_offset = has_offset
        self.__post_init__()

    rows_held = False
    fixed_all_names: list
    fixed_gram_all: np.ndarray  # unweighted Gram matrix of every column of fixed_spec (dropped ones too)
    coding_values: dict  # column -> global levels (pd.Index) or some numeric values seen (ndarray)
    row_summary: RowSummary

    def _not_held(self, what: str):
        rs = getattr(self, "row_summary", None)
        extra = [] if rs is None else [c for c in (rs.weights, rs.offset) if c is not None]
        read = list(dict.fromkeys([*self.data.frame.columns, *extra]))
        size = self.n * max(len(read), 1) * 8 / 2**20
        raise RowsNotHeldError(
            f"{what} needs the rows of the data, which a fit from {self.source} does not hold (it kept only "
            f"the cross-products). It needs the {self.n:,} complete rows of the column(s) {read}, about "
            f"{size:,.1f} MB as float64: if that fits in memory, fit again to just those columns (for parquet "
            f"files: sparselmm.lmer(formula, pandas.read_parquet(files, columns={read}))); otherwise use "
            "predict(newdata) on the rows you need."
        )

    y = property(lambda self: self._not_held("The response y"))
    X = property(lambda self: self._not_held("The fixed-effects matrix X"))
    Zt = property(lambda self: self._not_held("The random-effects matrix Z"))
    weights = property(lambda self: _NotHeld(self, "The prior weights") if self._has_weights else None)
    offset = property(lambda self: _NotHeld(self, "The offset") if self._has_offset else None)

    @property
    def n(self) -> int:
        return self._n

    @property
    def p(self) -> int:
        return len(self.fixed_names)

    @property
    def q(self) -> int:
        return int(sum(t.q for t in self.terms))

    def __repr__(self) -> str:
        return f"StreamedDesign({self.parsed.formula!r}, n={self.n}, p={self.p}, q={self.q}, source={self.source})"

    def coding_frame(self, rows_per_cell: int = 1, seed: int = 0) -> pd.DataFrame:
        """Made-up rows for the fixed part's coding — not data: every combination of the levels of the
        categorical columns the fixed part reads, each ``rows_per_cell`` times, with every numeric column it
        reads drawn at random (``seed``) from up to ``CODING_VALUES`` values seen in the first rows.

        On these rows the fixed-effects spec gives its columns as functions of the variables; with the
        data's ``XᵀX`` (:attr:`fixed_gram_all`) that is what the anova contrasts need
        (:mod:`sparselmm.inference.contrasts`). Categorical columns are ``pd.Categorical`` over the fit's
        global levels, as each chunk was when the cross-products were summed.
        """
        cats = {c: v for c, v in self.coding_values.items() if isinstance(v, pd.Index)}
        nums = {c: v for c, v in self.coding_values.items() if not isinstance(v, pd.Index)}
        sizes = [len(v) for v in cats.values()]
        cells = int(np.prod(sizes, dtype=np.float64)) if sizes else 1
        n = cells * int(rows_per_cell)
        if n > CODING_ROWS_MAX:
            raise RowsNotHeldError(
                f"The fixed part of {self.parsed.formula!r} crosses categorical columns {list(cats)} with "
                f"{cells:,} combinations of levels; forming its type III contrasts without the rows would take "
                f"{n:,} made-up rows (more than {CODING_ROWS_MAX:,}). Use anova(type=1) or type=2, or fit in "
                "memory to the rows of the columns the model reads."
            )
        frame = {}
        if cats:
            codes = np.indices(sizes).reshape(len(sizes), -1)
            for (col, lv), cc in zip(cats.items(), codes):
                frame[col] = pd.Categorical.from_codes(np.repeat(cc, rows_per_cell), categories=lv)
        rng = np.random.default_rng(seed)
        for col, vals in nums.items():
            frame[col] = vals[rng.integers(0, len(vals), n)]
        return pd.DataFrame(frame, index=pd.RangeIndex(n))


CODING_VALUES = 64  # numeric values kept per column for StreamedDesign.coding_frame
CODING_ROWS_MAX = 2_000_000  # rows of a coding frame


def coding_values(spec, sample: pd.DataFrame, categorical: set, levels: dict) -> dict:
    """The values :meth:`StreamedDesign.coding_frame` draws from, per column the fixed part reads: the global
    levels of a level-coded column, up to ``CODING_VALUES`` distinct values (spread over their range) of a
    numeric one, from the first rows."""
    try:
        wanted = set(spec.required_variables)
    except Exception:  # formulaic versions without it: every column of the sample
        wanted = set(sample.columns)
    out: dict = {}
    for col in sample.columns:
        if col not in wanted:
            continue
        if col in categorical and col in levels:
            out[col] = pd.Index(levels[col])
            continue
        vals = pd.unique(sample[col].to_numpy())
        try:
            vals = np.sort(vals)
        except TypeError:
            pass
        if len(vals) > CODING_VALUES:
            vals = vals[np.linspace(0, len(vals) - 1, CODING_VALUES).round().astype(int)]
        out[col] = np.asarray(vals)
    return out


class _NotHeld:
    """Stands for per-row weights or offsets that were summed over, never kept; any numeric use raises."""

    def __init__(self, design: StreamedDesign, what: str):
        self._design, self._what = design, what

    def __array__(self, *args, **kwargs):
        self._design._not_held(self._what)

    def __getattr__(self, name):
        self._design._not_held(self._what)

    def __repr__(self) -> str:
        return f"<{self._what}: not held>"
