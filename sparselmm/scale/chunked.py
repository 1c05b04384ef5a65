"""Cross-products summed over chunks of rows: the fit from data that is never held in memory at once.

Every evaluation of the profiled deviance reads only ``ZᵀWZ, ZᵀWX, ZᵀWy, XᵀWX, XᵀWy, yᵀWy`` (and
``Σ log w``, ``n``), and each of those is a sum over rows. So the rows can arrive in chunks — pandas
frames, parquet row groups, Dask partitions — and each chunk gives a :class:`PartialCrossProducts`; two
partials add (``a + b``) and the sum of all of them, finished by :meth:`PartialCrossProducts.finish`,
is the :class:`~sparselmm.crossprod.CrossProducts` of the whole data.

Two passes over the data:

1. **Level pass** (:class:`LevelPartial`, also additive): the complete rows (after the missing-value
   policy), the levels of every grouping factor and of every categorical column of the fixed part or of
   a random term's coefficients, the combinations that occur for interaction factors (``a:b``), the dtype
   kind of each column (numeric or categorical; a column that changes kind between files is an error
   naming both files), the weighted mean ``m₀`` of ``y − offset`` and the first rows of the data. From
   it :class:`Plan` fixes, before any cross-product is formed: the global level codes (R's order: a
   categorical's own order of categories, otherwise sorted values; interactions only where they occur —
   exactly :func:`~sparselmm.design.encode_grouping` on the whole data), the formulaic ``ModelSpec`` of
   the fixed part and of each random term's coefficients (built once, from the first rows with
   categorical columns carrying their global levels, then applied to every chunk with
   ``ModelSpec.get_model_matrix``, so encodings are identical across chunks), and the layout of ``Z``.
   A chunk that shows a level the level pass did not see (the data changed between passes) raises a
   :class:`~sparselmm.errors.DataError` naming the column, the level and the chunk.

2. **Cross-product pass** (:meth:`Plan.partial`): per chunk, the unshifted sums of ``[Z | A]`` with
   ``A = [X_all | 1]`` (every column of the fixed-effects spec plus a column of ones) against the
   *centred* response ``y₁ = y − offset − m₀``. Columns dropped for rank deficiency are chosen after the
   pass from the unweighted ``AᵀA`` (the left-to-right test of :func:`~sparselmm.design.independent_columns`,
   on the Gram matrix).

**Shift.** The in-memory path (``crossprod.cross_products``) fits the shifted response ``y − offset −
Xβ₀`` with ``β₀`` the weighted least-squares fit, to keep ``yᵀWy`` small. A chunk cannot know ``β₀``, so
the shift is applied algebraically after the pass, in two levels. First, every chunk centres the response
on the level pass's weighted mean: ``y₁ = y − offset − m₀`` (exact for a badly scaled response, by
Sterbenz's lemma). After the pass, with ``β₁`` the WLS fit of ``y₁`` on ``X`` and ``γ = (β₁, 0)`` on the
columns ``A = [X | 1]``: ``ZᵀWy_s = ZᵀWy₁ − ZᵀWAγ``, ``XᵀWy_s = XᵀWy₁ − XᵀWAγ``,
``y_sᵀWy_s = y₁ᵀWy₁ − 2γᵀAᵀWy₁ + γᵀAᵀWAγ``, and ``β₀ = β₁ + m₀e₁`` (``e₁`` the fit of ``1`` on ``X``).
That is exact when ``1`` lies in the span of ``X`` (an intercept); otherwise ``γ = (β₀, −m₀)``.

Measured on ``y = c + 3x + N(0, 1) + crossed effects`` (600 rows, weights, 12 chunks), against an
in-memory fit of the exactly pre-centred ``y − c`` as reference
(``tests/test_scale.py::test_badly_scaled_response``): at ``c = 1e4, 1e8, 1e12`` the chunked objective is
within 2e-16, 6e-16, 1e-15 relative of the reference — the in-memory path itself within 1e-14, 4e-10,
1e-7 (its ``y − Xβ₀`` rounds each row at the scale of ``c``). Two single-level variants failed: the
algebraic shift alone (``m₀ = 0``) forms ``yᵀWy ≈ n·c²`` and loses the residual sum of squares entirely
(at ``c = 1e8`` the response is reported constant); ``γ = (β₀, −m₀)`` with an intercept cancels ``m₀``
against ``β₀``'s intercept inside the quadratic forms (1e-9 relative at ``c = 1e8``, 4e-5 at ``1e12``).

**Summation order** differs from the in-memory products, so results agree to rounding (about 1e-15
relative in the cross-products; the tests ask 1e-10 of the objective and 1e-8 of ``β``).
"""

from __future__ import annotations

import ast
import copy
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from formulaic import Formula

from ..crossprod import CrossProducts
from ..data import CleanData, clean_data
from ..design import (
    RANK_TOL,
    Design,
    RankDeficiencyWarning,
    ReTerm,
    _check_identifiable,
    _model_matrix,
    _response,
    _transform_arguments,
    encode_grouping,
    required_columns,
)
from ..errors import DataError, FormulaError, ModelSpecError, RowsNotHeldError
from ..formula import ParsedFormula
from ..start import moment_start_from_sums

__all__ = ["LevelPartial", "PartialCrossProducts", "Plan", "RowSummary", "StreamedDesign", "level_partial"]

SAMPLE_ROWS = 20_000  # rows kept from the start of the data to build the formulaic model specs (and to
# give stateful transforms their state); every leaf of a Dask level pass carries this many rows


def _kind(col: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(col.dtype):
        return "categorical"
    return "numeric" if pd.api.types.is_numeric_dtype(col.dtype) else "categorical"


def _c_arguments(parsed: ParsedFormula) -> set[str]:
    """Columns used as ``C(col, ...)`` (numeric columns coded as categorical) in the fixed part or a term."""
    out: set[str] = set()
    for text in [parsed.fixed, *(t.lhs for t in parsed.random)]:
        try:
            formula = Formula(text)
            terms = formula.rhs if hasattr(formula, "rhs") else formula
            exprs = [f.expr for term in terms for f in term.factors]
        except Exception:
            continue
        for expr in exprs:
            try:
                tree = ast.parse(expr, mode="eval")
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "C":
                    if node.args and isinstance(node.args[0], ast.Name):
                        out.add(node.args[0].id)
    return out


@dataclass
class ModelColumns:
    """Which columns a formula reads and which of them are level-coded."""

    parsed: ParsedFormula
    needed: list[str]  # columns passed to clean_data (missing-value policy applies to these)
    read: list[str]  # needed plus weights/offset columns: what a reader must supply
    grouping: list[str]  # columns of grouping factors
    combos: list[tuple[str, ...]]  # grouping factors that are interactions of several columns
    weights: str | None
    offset: str | None
    missing: str

    @classmethod
    def of(cls, parsed: ParsedFormula, available: list[str], weights, offset, missing) -> ModelColumns:
        for name, value in (("weights", weights), ("offset", offset)):
            if value is not None and not isinstance(value, str):
                raise DataError(
                    f"{name}= must name a column when the data is read in chunks (parquet files, Dask); "
                    f"got {type(value).__name__}."
                )
        needed = required_columns(parsed)
        needed += [c for c in _transform_arguments(parsed) if c in available and c not in needed]
        unknown = [c for c in needed if c not in available]
        if unknown:
            raise DataError(
                f"Name(s) {unknown} used in the formula are not columns of the data (nor functions formulaic "
                f"knows); available columns are {list(available)}."
            )
        read = list(needed)
        for v in (weights, offset):
            if v is not None:
                if v not in available:
                    raise DataError(f"{v!r} (weights/offset) is not a column of the data; columns are {available}.")
                if v not in read:
                    read.append(v)
        grouping = list(dict.fromkeys(f for t in parsed.random for f in t.factors))
        combos = list(dict.fromkeys(t.factors for t in parsed.random if len(t.factors) > 1))
        return cls(parsed, needed, read, grouping, combos, weights, offset, missing)

    def clean(self, frame: pd.DataFrame, label: str = "") -> CleanData | None:
        """The missing-value policy applied to one chunk; None when no complete row is left."""
        if len(frame) == 0:
            return None
        if self.missing == "drop":
            mask = frame[self.read].isna().any(axis=1).to_numpy()
            if mask.all():
                return CleanData(frame.iloc[:0], np.empty(0, np.int64), None, None, int(mask.size))
        try:
            return clean_data(frame, self.needed, self.weights, self.offset, self.missing)
        except DataError as err:
            if not label:
                raise
            raise DataError(f"{label}: {err}") from None


# ---------------------------------------------------------------------------------------------------
# pass 1: levels
# ---------------------------------------------------------------------------------------------------
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
                    "be numeric everywhere or categorical (text, category, bool) everywhere. Convert it "
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
        out.kinds[col] = (_kind(frame[col]), str(frame[col].dtype), label)
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


def _global_levels(part: LevelPartial, col: str) -> pd.Index:
    """A column's levels over all chunks, in R's (and :func:`encode_grouping`'s) order."""
    used = part.values[col]
    if col in part.categories:
        cats = part.categories[col]
        return cats[cats.isin(used)]
    try:
        return pd.Index(used).sort_values()
    except TypeError:  # mixed types that cannot be ordered: order by their text, as encode_grouping
        return pd.Index(used.astype(str)).unique().sort_values()


# ---------------------------------------------------------------------------------------------------
# pass 2: cross-products
# ---------------------------------------------------------------------------------------------------
@dataclass
class PartialCrossProducts:
    """Sums over some rows of the weighted cross-products of ``[Z | A]`` with ``A = [X_all | 1]``.

    ``y1`` is the centred response ``y − offset − m₀`` (``m₀`` from the level pass). Adding two partials
    adds every sum (``ZᵀWZ`` keeps its q × q pattern: the union of the two). ``ysum``/``ysq`` and the
    per-level ``level_sums``/``level_counts`` (intercept-only terms) are unweighted sums of ``y − c``,
    for lme4's moment start.
    """

    ZtWZ: sp.csc_matrix
    ZtWA: np.ndarray  # q × (p_all + 1)
    ZtWy: np.ndarray  # q
    AtWA: np.ndarray
    AtWy: np.ndarray
    AtA: np.ndarray  # unweighted, for the rank check
    ytWy: float
    yoyo: float  # Σ (y − offset)²: the "constant response" check
    sum_log_w: float
    n: int
    ysum: float
    ysq: float
    level_sums: list
    level_counts: list
    chunks: int = 1

    def flush(self) -> PartialCrossProducts:
        """Merge the queued ``ZᵀWZ`` entries of :meth:`add_inplace` into the total."""
        pending = self.__dict__.pop("_pending", [])
        self.__dict__.pop("_keys", None)
        if pending:
            total = self.ZtWZ.tocoo()
            rows = np.concatenate([total.row, *(m[0] for m in pending)])
            cols = np.concatenate([total.col, *(m[1] for m in pending)])
            data = np.concatenate([total.data, *(m[2] for m in pending)])
            del total, pending
            self.ZtWZ = sp.csc_matrix((data, (rows, cols)), shape=self.ZtWZ.shape)  # sums duplicates
            del rows, cols, data
            self.ZtWZ.sum_duplicates()
        return self

    def _pattern_keys(self) -> np.ndarray:
        """``col · q + row`` of every stored entry of the total ``ZᵀWZ``, ascending (cached until a flush)."""
        keys = self.__dict__.get("_keys")
        if keys is None:
            Z = self.ZtWZ
            if not Z.has_canonical_format:
                Z.sum_duplicates()
            keys = np.repeat(np.arange(Z.shape[1], dtype=np.int64), np.diff(Z.indptr)) * Z.shape[0]
            keys += Z.indices
            self.__dict__["_keys"] = keys
        return keys

    def __add__(self, other: PartialCrossProducts | None) -> PartialCrossProducts:
        if other is None:
            return self
        self.flush()
        other.flush()
        if other.ZtWZ.shape != self.ZtWZ.shape or other.AtWA.shape != self.AtWA.shape:
            raise ValueError("Partial cross-products of different models cannot be added.")
        ZtWZ = (self.ZtWZ + other.ZtWZ).tocsc()
        return PartialCrossProducts(
            ZtWZ,
            self.ZtWA + other.ZtWA,
            self.ZtWy + other.ZtWy,
            self.AtWA + other.AtWA,
            self.AtWy + other.AtWy,
            self.AtA + other.AtA,
            self.ytWy + other.ytWy,
            self.yoyo + other.yoyo,
            self.sum_log_w + other.sum_log_w,
            self.n + other.n,
            self.ysum + other.ysum,
            self.ysq + other.ysq,
            [None if a is None else a + b for a, b in zip(self.level_sums, other.level_sums)],
            [None if a is None else a + b for a, b in zip(self.level_counts, other.level_counts)],
            self.chunks + other.chunks,
        )

    def __radd__(self, other):
        if other is None or (isinstance(other, int) and other == 0):  # sum() starts at 0
            return self
        return other.__add__(self)

    def add_inplace(self, other: PartialCrossProducts) -> None:
        """``self += other`` without new dense arrays (the single-process reader's accumulator).

        A chunk's ``ZᵀWZ`` entries that the total already stores are added in place (found by binary
        search among the total's sorted ``col · q + row`` keys); only entries new to the pattern are
        queued. The queue is merged (one sum of triplets) when it holds as many entries as the total, so
        each entry is merged O(log chunks) times rather than once per chunk. Once every distinct cell has
        been seen (e.g. rows that repeat cells), nothing is queued and memory stays at the total's pattern
        plus one chunk, however many rows follow: memory follows the cells, not the rows.
        """
        pending = self.__dict__.setdefault("_pending", [])
        Z = other.ZtWZ.tocsc()
        if not Z.has_canonical_format:
            Z.sum_duplicates()  # unique, sorted entries: the in-place addition below needs unique keys
        q = Z.shape[0]
        ccols = np.repeat(np.arange(Z.shape[1], dtype=np.int64), np.diff(Z.indptr))
        if self.ZtWZ.nnz and Z.nnz:
            keys = self._pattern_keys()
            ckeys = ccols * q + Z.indices
            pos = np.searchsorted(keys, ckeys)
            np.minimum(pos, keys.size - 1, out=pos)
            hit = keys[pos] == ckeys
            del ckeys
            self.ZtWZ.data[pos[hit]] += Z.data[hit]
            new = ~hit
            if new.any():
                pending.append((Z.indices[new], ccols[new].astype(Z.indices.dtype), Z.data[new]))
        elif Z.nnz:
            pending.append((Z.indices.copy(), ccols.astype(Z.indices.dtype), Z.data.copy()))
        del ccols
        if pending and sum(m[2].size for m in pending) >= max(self.ZtWZ.nnz, 1_000_000):
            self.flush()
        for name in ("ZtWA", "ZtWy", "AtWA", "AtWy", "AtA"):
            getattr(self, name).__iadd__(getattr(other, name))
        self.ytWy += other.ytWy
        self.yoyo += other.yoyo
        self.sum_log_w += other.sum_log_w
        self.n += other.n
        self.ysum += other.ysum
        self.ysq += other.ysq
        for a, b in zip(self.level_sums, other.level_sums):
            if a is not None:
                a += b
        for a, b in zip(self.level_counts, other.level_counts):
            if a is not None:
                a += b
        self.chunks += other.chunks


def _solve(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.solve(A, B)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(A, B, rcond=None)[0]


def _gram_independent(G: np.ndarray) -> np.ndarray:
    """Left-to-right independent columns from the Gram matrix ``XᵀX`` (as ``independent_columns`` on X)."""
    keep: list[int] = []
    for j in range(G.shape[0]):
        norm2 = G[j, j]
        if norm2 <= 0:
            continue
        if keep:
            K = G[np.ix_(keep, keep)]
            c = G[keep, j]
            r2 = norm2 - c @ np.linalg.solve(K, c)
        else:
            r2 = norm2
        if r2 > RANK_TOL**2 * norm2:
            keep.append(j)
    return np.array(keep, dtype=int)


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


@dataclass(frozen=True)
class RowSummary:
    """Sums that identify the rows a streamed fit was summed over (for likelihood-ratio tests between fits):
    n, ``Σy`` and ``Σ(y − ȳ)²`` of the (transformed) response, ``Σw`` and ``Σ log w`` of the weights, and
    ``Σ(y − offset)²``, ``Σ w(y − offset)`` when there is an offset (None where not applicable)."""

    n: int
    sum_y: float
    ss_y: float
    sum_w: float | None
    sum_log_w: float | None
    ss_y_offset: float | None
    sum_wy_offset: float | None
    weights: str | None = None  # the columns, when known
    offset: str | None = None

    @classmethod
    def of_arrays(cls, y, weights=None, offset=None) -> RowSummary:
        """The same sums from a fit's held arrays."""
        y = np.asarray(y, dtype=float)
        n = y.size
        w = None if weights is None else np.asarray(weights, dtype=float)
        yo = None if offset is None else y - np.asarray(offset, dtype=float)
        return cls(
            n=n,
            sum_y=float(y.sum()),
            ss_y=float(np.sum((y - y.mean()) ** 2)) if n else 0.0,
            sum_w=None if w is None else float(w.sum()),
            sum_log_w=None if w is None else float(np.log(w).sum()),
            ss_y_offset=None if yo is None else float(yo @ yo),
            sum_wy_offset=None if yo is None else float(yo.sum() if w is None else yo @ w),
        )

    def differs(self, other: RowSummary, parts=("response", "weights", "offset"), rtol: float = 1e-9) -> str | None:
        """Which sum of ``parts`` differs (beyond the rounding of sums taken in another order), or None."""
        if self.n != other.n:
            return f"n ({self.n} and {other.n})"
        scale_y = np.sqrt(max(self.ss_y, other.ss_y) * self.n) + abs(self.sum_y)
        checks = {
            "response": [
                ("the sums of the responses", self.sum_y, other.sum_y, scale_y),
                ("the sums of squares of the responses about their mean", self.ss_y, other.ss_y, None),
            ],
            "weights": [
                ("the sums of the weights", self.sum_w, other.sum_w, None),
                ("the sums of the log weights", self.sum_log_w, other.sum_log_w, float(self.n)),
            ],
            "offset": [
                ("the sums of squares of response minus offset", self.ss_y_offset, other.ss_y_offset, None),
                ("the weighted sums of response minus offset", self.sum_wy_offset, other.sum_wy_offset, None),
            ],
        }
        for part in parts:
            for what, a, b, scale in checks[part]:
                if (a is None) != (b is None):
                    return f"one fit has {'weights' if part == 'weights' else 'an offset'} and the other not"
                if a is None:
                    continue
                scale = max(abs(a), abs(b)) if scale is None else scale
                if abs(a - b) > rtol * max(scale, 1e-300):
                    return f"{what} differ ({a!r} and {b!r})"
        return None


def _coding_values(spec, sample: pd.DataFrame, categorical: set, levels: dict) -> dict:
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


class Plan:
    """The model fixed by the level pass: global levels, model specs, the layout of ``Z``.

    :meth:`partial` turns one chunk into its :class:`PartialCrossProducts`; it is a pure function of the
    chunk (and of this plan), which is what makes recomputing a chunk — a Dask retry — harmless.
    """

    def __init__(self, columns: ModelColumns, levels: LevelPartial, categorical: set[str], source: str):
        self.columns = columns
        self.categorical = set(categorical)  # level-coded columns that the formulas see as categoricals
        parsed = columns.parsed
        if levels.n == 0:
            raise DataError(f"No complete rows in {source}." if levels.chunks else f"{source} has no rows.")
        self.n = levels.n
        self.n_dropped = levels.n_dropped
        self.m0 = levels.sum_wy / levels.sum_w
        self.c = levels.sum_y / levels.n
        self.sum_w, self.sum_wyo = levels.sum_w, levels.sum_wy
        self.source = source
        level_cols = list(levels.values)
        self.levels = {col: _global_levels(levels, col) for col in level_cols}
        sample, _ = self.to_global(levels.sample, "the first rows")
        _response(parsed, sample)
        mm = _model_matrix(parsed.fixed, sample, "fixed-effects model matrix")
        self.fixed_spec = mm.model_spec
        self.all_names = list(mm.columns)
        self.coding_values = _coding_values(mm.model_spec, sample, self.categorical, self.levels)
        stateful = [k for k in (mm.model_spec.transform_state or {}) if not k.startswith("C(")]
        terms: list[ReTerm] = []
        self.combo_codes: list[np.ndarray | None] = []
        for term in parsed.random:
            zmm = _model_matrix(term.lhs, sample, f"random-effects term {term}")
            stateful += [k for k in (zmm.model_spec.transform_state or {}) if not k.startswith("C(")]
            if zmm.shape[1] == 0:
                raise FormulaError(f"Random-effects term {term} has no columns: it needs at least '1' or a variable.")
            k = zmm.shape[1]
            if len(term.factors) == 1:
                lv = self.levels[term.factors[0]]
                self.combo_codes.append(None)
            else:
                combos, ccodes = self.to_global(levels.combos[term.factors], f"combinations of {term.group_name}")
                _, lv = encode_grouping(combos, term.factors)
                self.combo_codes.append(np.unique(self._mixed_radix(ccodes, term.factors)))
            terms.append(ReTerm(term, list(zmm.columns), lv, np.empty(0, np.int64), np.empty((0, k)), zmm.model_spec))
        if stateful:
            warnings.warn(
                f"Stateful transform(s) {sorted(set(stateful))} take their state (centre, scale, polynomial "
                f"basis) from the first {len(sample)} rows of {source}, not from all rows; the model is the same "
                "but coefficients of those columns are parameterised by that state.",
                UserWarning,
                stacklevel=4,
            )
        self.term_index = list(range(len(terms)))
        nl = np.array([t.n_levels for t in terms])
        order = list(range(len(terms)))
        if np.any(np.diff(nl) > 0):  # lme4's order, as design.assemble_design
            order = list(np.argsort(nl, kind="stable")[::-1])
        self.terms = [terms[i] for i in order]
        self.combo_codes = [self.combo_codes[i] for i in order]
        col = th = 0
        for t in self.terms:
            t.offset, t.theta_offset = col, th
            col += t.q
            th += t.n_theta
        self.q = col
        self.p_all = len(self.all_names)
        _check_identifiable(self.terms, self.n)
        # lme4's moment start applies to scalar intercepts on distinct factors only
        names = [t.group_name for t in self.terms]
        self.moment = all(t.cnms == ["Intercept"] for t in self.terms) and len(set(names)) == len(names)

    # ---- per chunk -----------------------------------------------------------------------------------
    def to_global(self, frame: pd.DataFrame, label: str) -> tuple[pd.DataFrame, dict]:
        """The chunk with each categorical column over its global levels, and every level-coded column's codes."""
        frame = frame.copy()
        codes = {}
        for col, lv in self.levels.items():
            if col not in frame.columns:
                continue
            s = frame[col]
            if isinstance(s.dtype, pd.CategoricalDtype):
                s = s.astype(s.cat.categories.dtype) if len(s.cat.categories) else s.astype(object)
            idx = lv.get_indexer(s)
            cat = pd.Categorical.from_codes(idx, categories=lv)
            unseen = (idx < 0) & s.notna().to_numpy()
            if unseen.any():
                first = s[unseen].iloc[0]
                raise DataError(
                    f"{label}: column {col!r} has level {first!r} ({int(unseen.sum())} row(s)) that the level "
                    f"pass did not see in {self.source}; the data changed between the two passes over it. "
                    "Fit again on data that does not change while it is read."
                )
            codes[col] = cat.codes.astype(np.int64)
            if col in self.categorical:
                frame[col] = cat
        return frame, codes

    def _mixed_radix(self, codes: dict, factors) -> np.ndarray:
        out = np.zeros(len(codes[factors[0]]), dtype=np.int64)
        for f in factors:
            out = out * len(self.levels[f]) + codes[f]
        return out

    def _refs(self, frame: pd.DataFrame, level_codes: dict, t: ReTerm, used, label: str) -> np.ndarray:
        if used is None:
            return level_codes[t.term.factors[0]]
        codes = self._mixed_radix(level_codes, t.term.factors)
        pos = np.searchsorted(used, codes)
        pos = np.minimum(pos, used.size - 1)
        bad = used[pos] != codes
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            combo = ":".join(str(frame[f].iloc[i]) for f in t.term.factors)
            raise DataError(
                f"{label}: level {combo!r} of {t.group_name!r} was not seen by the level pass over {self.source}; "
                "the data changed between the two passes over it."
            )
        return pos.astype(np.int64)

    def empty_partial(self) -> PartialCrossProducts:
        pa = self.p_all + 1
        return PartialCrossProducts(
            sp.csc_matrix((self.q, self.q)),
            np.zeros((self.q, pa)),
            np.zeros(self.q),
            np.zeros((pa, pa)),
            np.zeros(pa),
            np.zeros((pa, pa)),
            0.0,
            0.0,
            0.0,
            0,
            0.0,
            0.0,
            [np.zeros(t.n_levels) if self.moment else None for t in self.terms],
            [np.zeros(t.n_levels, dtype=np.int64) if self.moment else None for t in self.terms],
            chunks=0,
        )

    def partial(self, frame: pd.DataFrame, label: str) -> PartialCrossProducts:
        """The cross-products of one chunk."""
        clean = self.columns.clean(frame, label)
        out = self.empty_partial()
        out.chunks = 1
        if clean is None or len(clean.frame) == 0:
            return out
        f, level_codes = self.to_global(clean.frame, label)
        nc = len(f)
        y = _response(self.columns.parsed, f)
        yo = y if clean.offset is None else y - clean.offset
        y1 = yo - self.m0
        w = clean.weights
        try:
            X = np.asarray(self.fixed_spec.get_model_matrix(f, na_action="raise"), dtype=float)
        except Exception as err:
            raise DataError(f"{label}: could not build the fixed-effects model matrix: {err}") from None
        A = np.column_stack([X.reshape(nc, self.p_all), np.ones(nc)])
        WA = A if w is None else A * w[:, None]
        Wy = y1 if w is None else y1 * w
        rows, cols, vals = [], [], []
        obs = np.arange(nc)
        for i, (t, used) in enumerate(zip(self.terms, self.combo_codes)):
            try:
                z = np.asarray(t.lhs_spec.get_model_matrix(f, na_action="raise"), dtype=float).reshape(nc, t.k)
            except Exception as err:
                raise DataError(f"{label}: could not build random-effects term {t.term}: {err}") from None
            refs = self._refs(f, level_codes, t, used, label)
            rows.append((t.offset + refs[:, None] * t.k + np.arange(t.k)[None, :]).ravel())
            cols.append(np.repeat(obs, t.k))
            vals.append(z.ravel())
            if self.moment:
                out.level_sums[i] = np.bincount(refs, weights=y - self.c, minlength=t.n_levels)
                out.level_counts[i] = np.bincount(refs, minlength=t.n_levels).astype(np.int64)
        Zt = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(self.q, nc))
        ZtW = Zt if w is None else Zt @ sp.diags(w)
        out.ZtWZ = (ZtW @ Zt.T).tocsc()
        out.ZtWA = np.asarray(ZtW @ A).reshape(self.q, -1)
        out.ZtWy = np.asarray(ZtW @ y1).ravel()
        out.AtWA = A.T @ WA
        out.AtWy = A.T @ Wy
        out.AtA = A.T @ A
        out.ytWy = float(y1 @ Wy)
        out.yoyo = float(yo @ yo)
        out.sum_log_w = 0.0 if w is None else float(np.sum(np.log(w)))
        out.n = nc
        yc = y - self.c
        out.ysum = float(yc.sum())
        out.ysq = float(yc @ yc)
        return out

    # ---- after the pass ------------------------------------------------------------------------------
    def finish(self, total: PartialCrossProducts) -> tuple[StreamedDesign, CrossProducts, np.ndarray]:
        """The design (without rows), the whole data's cross-products (shifted as in memory) and θ₀."""
        if total.n != self.n:
            raise DataError(
                f"The cross-product pass read {total.n} complete rows of {self.source} but the level pass "
                f"{self.n}; the data changed between the two passes over it."
            )
        total.flush()
        p_all = self.p_all
        keep = _gram_independent(total.AtA[:p_all, :p_all]) if p_all else np.array([], dtype=int)
        dropped = [self.all_names[j] for j in range(p_all) if j not in set(keep)]
        if dropped:
            warnings.warn(
                f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} column(s): {dropped}",
                RankDeficiencyWarning,
                stacklevel=4,
            )
        sel = np.concatenate([keep, [p_all]]).astype(int)  # kept columns of X, then the column of ones
        XtWX = total.AtWA[np.ix_(keep, keep)]
        XtWy1 = total.AtWy[keep]
        XtW1, oneW1 = total.AtWA[keep, p_all], total.AtWA[p_all, p_all]
        if keep.size:
            beta1, e1 = _solve(XtWX, np.column_stack([XtWy1, XtW1])).T  # WLS of y₁ and of 1 on X
            beta0 = beta1 + self.m0 * e1
            ones_in_span = oneW1 - XtW1 @ e1 <= 1e-10 * oneW1
        else:
            beta1 = beta0 = np.zeros(0)
            ones_in_span = False
        # with 1 in the span of X (an intercept) y_s = y₁ − Xβ₁ exactly: leave m₀ out of γ, since
        # (β₀, −m₀) would cancel m₀ against the intercept inside every quadratic form below
        gamma = np.concatenate([beta1, [0.0]]) if ones_in_span else np.concatenate([beta0, [-self.m0]])
        AtWA_s = total.AtWA[np.ix_(sel, sel)]
        ytWy = float(total.ytWy - 2.0 * gamma @ total.AtWy[sel] + gamma @ AtWA_s @ gamma)
        ZtWZ = total.ZtWZ.tocsc()
        ZtWZ.sort_indices()
        cross = CrossProducts(
            ZtWZ=ZtWZ,
            ZtWX=np.ascontiguousarray(total.ZtWA[:, keep]),
            ZtWy=total.ZtWy - total.ZtWA[:, sel] @ gamma,
            XtWX=np.ascontiguousarray(XtWX),
            XtWy=XtWy1 - total.AtWA[np.ix_(keep, sel)] @ gamma,
            ytWy=ytWy,
            sum_log_w=total.sum_log_w,
            beta_shift=beta0,
            n=total.n,
        )
        if not cross.ytWy > 1e-24 * max(total.yoyo, 1e-300):
            raise ModelSpecError(
                f"The response {self.columns.parsed.response!r} is constant or exactly fitted by the fixed effects, "
                "so there is no variation left for random effects or the residual; check the response column "
                "and the formula."
            )
        clean = CleanData(pd.DataFrame(columns=self.columns.needed), np.empty(0, np.int64), None, None, self.n_dropped)
        terms = [copy.copy(t) for t in self.terms]
        design = StreamedDesign(
            self.columns.parsed,
            [self.all_names[j] for j in keep],
            self.fixed_spec,
            dropped,
            terms,
            total.n,
            self.columns.weights is not None,
            self.columns.offset is not None,
            clean,
            self.source,
        )
        design.fixed_all_names = list(self.all_names)
        design.fixed_gram_all = total.AtA[:p_all, :p_all].copy()  # unweighted XᵀX of every spec column
        design.coding_values = self.coding_values
        n = total.n
        design.row_summary = RowSummary(
            n=n,
            sum_y=self.c * n + total.ysum,
            ss_y=max(total.ysq - total.ysum**2 / n, 0.0),
            sum_w=self.sum_w if self.columns.weights is not None else None,
            sum_log_w=total.sum_log_w if self.columns.weights is not None else None,
            ss_y_offset=total.yoyo if self.columns.offset is not None else None,
            sum_wy_offset=self.sum_wyo if self.columns.offset is not None else None,
            weights=self.columns.weights,
            offset=self.columns.offset,
        )
        return design, cross, self._moment_start(design, total)

    def _moment_start(self, design: StreamedDesign, total: PartialCrossProducts) -> np.ndarray:
        """lme4's moment start (:func:`sparselmm.start.moment_start_from_sums`) from the summed level sums."""
        if not self.moment:
            return design.theta0.copy()
        return moment_start_from_sums(
            design.theta0, total.level_sums, total.level_counts, total.ysum, total.ysq, total.n
        )


class Progress:
    """Rows read and rows per second; the bar on stderr follows ``progress=`` by the package's one policy
    (:func:`sparselmm.progress.progress_bar`: None shows it only after 2 s on a terminal or in a notebook)."""

    def __init__(self, progress, total: int | None, desc: str):
        from ..progress import progress_bar

        self.rows = 0
        self.t0 = time.perf_counter()
        self.bar = progress_bar(progress, total, desc, unit="rows", unit_scale=True)

    def update(self, rows: int) -> None:
        self.rows += rows
        if self.bar is not None:
            self.bar.update(rows)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    @property
    def rate(self) -> float:
        return self.rows / max(time.perf_counter() - self.t0, 1e-9)
