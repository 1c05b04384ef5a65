"""The fit's plan for data read in chunks: from the level pass to the whole data's cross-products.

Chunked data (pandas frames, parquet row groups, Dask partitions) is read twice:

1. the **level pass** (:mod:`sparselmm.scale.levels`) sums a :class:`~sparselmm.scale.levels.LevelPartial`
   per chunk; from the total, :class:`Plan` fixes before any cross-product is formed the global level
   codes (exactly :func:`~sparselmm.design.encode_grouping` on the whole data), the formulaic ``ModelSpec``
   of the fixed part and of each term's coefficients (built once from the first rows, then applied to
   every chunk, so encodings agree across chunks) and the layout of ``Z``;
2. the **cross-product pass**: :meth:`Plan.partial` turns each chunk into a
   :class:`~sparselmm.scale.partial_crossprod.PartialCrossProducts` — the sums of ``[Z | A]``,
   ``A = [X_all | 1]`` (every column of the spec and a column of ones), against the centred response
   ``y₁ = y − offset − m₀`` (``m₀`` the level pass's weighted mean) — and :meth:`Plan.finish` turns their
   total into the :class:`~sparselmm.crossprod.CrossProducts`, the design (without rows) and lme4's start.

A chunk showing a level the level pass did not see (the data changed between passes) raises a
:class:`~sparselmm.errors.DataError` naming the column, the level and the chunk. Columns dropped for rank
deficiency are chosen after the pass from the unweighted ``AᵀA`` (the left-to-right test of
:func:`~sparselmm.design.independent_columns`, on the Gram matrix).

**Shift.** The in-memory path fits ``y − offset − Xβ₀`` (``β₀`` the weighted least-squares fit) to keep
``yᵀWy`` small; a chunk cannot know ``β₀``, so :meth:`Plan.finish` shifts algebraically. With ``β₁`` the
WLS fit of ``y₁`` on ``X`` and ``γ = (β₁, 0)`` on ``A``: ``ZᵀWy_s = ZᵀWy₁ − ZᵀWAγ``, ``XᵀWy_s = XᵀWy₁ −
XᵀWAγ``, ``y_sᵀWy_s = y₁ᵀWy₁ − 2γᵀAᵀWy₁ + γᵀAᵀWAγ`` and ``β₀ = β₁ + m₀e₁`` (``e₁`` the fit of ``1`` on
``X``): exact when ``1`` lies in the span of ``X``; otherwise ``γ = (β₀, −m₀)``. Centring on ``m₀`` first
(exact, by Sterbenz's lemma) is what keeps the residual sum of squares of a response far from zero: the
algebraic shift alone, or ``γ = (β₀, −m₀)`` with an intercept, cancel ``m₀`` inside the quadratic forms
(``tests/test_scale.py::test_badly_scaled_response``). Sums are taken in another order than in memory, so
the two paths agree to rounding.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..crossprod import CrossProducts, RowSummary
from ..data import CleanData
from ..design import (
    RankDeficiencyWarning,
    ReTerm,
    _check_identifiable,
    _model_matrix,
    _response,
    encode_grouping,
    gram_independent,
)
from ..errors import DataError, FormulaError, ModelSpecError
from ..start import moment_start_from_sums
from .columns import ModelColumns
from .levels import LevelPartial, global_levels
from .partial_crossprod import PartialCrossProducts
from .streamed_design import StreamedDesign, coding_values

__all__ = ["Plan"]


def _solve(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.solve(A, B)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(A, B, rcond=None)[0]


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
        self.levels = {col: global_levels(levels, col) for col in level_cols}
        sample, _ = self.to_global(levels.sample, "the first rows")
        _response(parsed, sample)
        mm = _model_matrix(parsed.fixed, sample, "fixed-effects model matrix")
        self.fixed_spec = mm.model_spec
        self.all_names = list(mm.columns)
        self.coding_values = coding_values(mm.model_spec, sample, self.categorical, self.levels)
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
        col = th = lam = 0
        for t in self.terms:
            t.offset, t.theta_offset, t.lambda_offset = col, th, lam
            col += t.q
            th += t.n_theta
            lam += t.n_lambda
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
        keep = gram_independent(total.AtA[:p_all, :p_all]) if p_all else np.array([], dtype=int)
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
