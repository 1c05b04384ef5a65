"""Residual variance by stratum (``dispformula``, nlme's ``varIdent``) and AR(1) residual correlation within
groups (:func:`~sparselmm.corAR1`, nlme's ``corAR1(form = ~ t | g)``; :func:`~sparselmm.corCAR1`, nlme's
``corCAR1(form = ~ t | g)`` over real-valued times) for :func:`sparselmm.lmer`.

The model is ``y = Xβ + Zb + ε`` with ``ε ~ N(0, σ² V^{1/2} R(ρ) V^{1/2})``, ``V = diag(exp(2δ_{k(i)}) / w_i)``
(``w`` the prior weights, ``δ`` of the first stratum fixed at 0, so σ is that stratum's residual SD) and
``R`` block diagonal over the groups of the correlation. With ``W = V^{-1/2} R⁻¹ V^{-1/2}`` the profiled
criterion at ``(θ, φ)``, ``φ = (δ, ρ)``, is exactly the weighted-lmer criterion of the cross-products
``ZᵀWZ, ZᵀWX, …, yᵀWy`` and ``Σ log w = −log|V| − log|R|`` (``sparselmm.criterion``).

AR(1), gaps included. nlme's ``corAR1`` becomes ``corARMA(p = 1)`` when the times within a group are not
consecutive, whose correlation at lag ``|Δt|`` is ``ρ^{|Δt|}`` (checked in R 4.2.2, nlme 3.1-162: a group
with times 1, 4, 5, 6 has correlation ``ρ³`` between its first two rows); nlme's ``corCAR1`` is the same
correlation ``φ^{|Δt|}`` over real times with ``0 ≤ φ < 1`` (:mod:`sparselmm.residual_correlation`). With a
group's times sorted, ``t₁ < … < t_m``, gaps ``d_j = t_{j+1} − t_j`` and ``a_j = ρ^{d_j}``, the series is
Markov, so::

    xᵀR⁻¹x = Σᵢ xᵢ² + Σ_j [a_j²/(1 − a_j²)] (x_j² + x_{j+1}²) − [2a_j/(1 − a_j²)] x_j x_{j+1}
    log|R| = Σ_j log(1 − a_j²)

(for consecutive times this is DESIGN.md's ``(I + ρ²D − ρ(S + Sᵀ))/(1 − ρ²)``; ``1 − a²`` is formed as
``−expm1(2d log|ρ|)``, exact for the small gaps of continuous times). Scaling rows by
``e_{k(i)} = exp(−δ_{k(i)})`` composes the two: every cross-product ``AᵀWB`` is ``Σ_pieces c(φ) P`` over

* ``diag(k)``: ``Σ_{i ∈ k} aᵢbᵢᵀ``, ``c = e_k²``;
* ``ends(d, k)``: both rows of every pair with gap ``d``, those in stratum ``k``, ``c = e_k² a²/(1 − a²)``;
* ``adjacent(d, k, l)``: ``Σ a_j b_{j+1}ᵀ + a_{j+1} b_jᵀ`` over pairs with gap ``d`` in strata ``{k, l}``,
  ``c = −e_k e_l a/(1 − a²)``.

The pieces (``G`` on the union pattern of their ``ZᵀZ``-like products, ``Zᵀ[X y]``, ``[X y]ᵀ[X y]``) are
summed from the rows once, vectorised over all pairs; an evaluation is three matrix-vector products with the
coefficients and a dense factorisation (:class:`~sparselmm.criterion.DenseCriterion`), never touching the n
rows. Models with more random effects than :data:`~sparselmm.linalg.thresholds.DENSE_MAX_Q` and a ``ZᵀWZ``
sparser than :data:`~sparselmm.linalg.thresholds.DENSE_ENOUGH_FILL` (nested designs: diagonal), or more than
:data:`~sparselmm.linalg.thresholds.DENSE_FALLBACK_Q`, are factored by CHOLMOD instead: the symbolic
analysis once, then each evaluation writes the new ``ZᵀWZ`` into the same pattern
(:meth:`~sparselmm.deviance.ProfiledDeviance.set_cross`) and refactors. θ and φ are optimised jointly with
BOBYQA (:func:`~sparselmm.optimize.optimize_theta`); ``ρ`` is bounded by ``±(1 − 1e-6)`` (corCAR1's ``φ`` by
``[0, 1 − 1e-6]``).

Cost of one evaluation. Pieces are keyed by exact gap value (never rounded or merged), so there are at most
``L + D·L(L + 3)/2`` of them for ``L`` strata and ``D`` distinct gaps, and the piece stacks are stored dense
or sparse by their fill. Integer times, or real times on a grid, have few distinct gaps and an evaluation
does not depend on ``n``; real times with all gaps distinct (``D ≈ n``) make an evaluation cost a sum over
about ``Σ_pairs (nnz per row of Z)²`` stored values: one pass over the rows' products, like a direct
evaluation, and still exact.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .criterion import DenseCriterion
from .crossprod import CrossProducts, cross_products
from .data import as_dataframe
from .design import build_design
from .deviance import ProfiledDeviance, profiled_deviance
from .errors import ArgumentError, DataError, ModelSpecError
from .formula import parse_formula
from .linalg.thresholds import DENSE_ENOUGH_FILL, DENSE_FALLBACK_Q, DENSE_MAX_Q
from .optimize import optimize_theta
from .residual_correlation import RHO_BOUND, AR1Correlation, CAR1Correlation, GapCorrelation, corAR1, corCAR1
from .start import moment_start, start_theta

__all__ = [
    "AR1Correlation",
    "CAR1Correlation",
    "GapCorrelation",
    "ResidualStructure",
    "ResidualPieces",
    "ResidualCriterion",
    "corAR1",
    "corCAR1",
    "fit_residual",
    "gls_loglik",
    "refit_residual",
]

DENSE_STACK_FILL = 0.25  # piece stacks at least this full are stored dense, else CSR
PIECE_CHUNK = 200_000  # terms (row pairs) summed into the pieces at once
TIGHT_TOL = 1e-10  # BOBYQA's xtol_abs and ftol_abs (see fit_residual)
MAX_START_DELTA = 5.0  # a start's log SD ratio is clipped here (a stratum of near-exact responses)


# ---- parsing the arguments ----------------------------------------------------------------------------
def dispersion_column(dispformula) -> str | None:
    """The factor named by ``dispformula`` (``"~ f"``, or nlme's ``"~ 1 | f"``); None for ``"~ 1"``."""
    if not isinstance(dispformula, str):
        raise ArgumentError(f"dispformula must be a one-sided formula string such as '~ f', not {dispformula!r}.")
    text = dispformula.strip()
    if not text.startswith("~"):
        raise ModelSpecError(f"dispformula={dispformula!r} must be one-sided, e.g. '~ f' (no response).")
    rhs = text[1:].strip()
    if "|" in rhs:
        left, right = (s.strip() for s in rhs.split("|", 1))
        if left == "1":
            rhs = right
    if rhs == "1":
        return None
    if not rhs.isidentifier():
        raise ModelSpecError(
            f"dispformula={dispformula!r}: only one factor column is supported for now ('~ f', nlme's varIdent); "
            "for several factors make one column of their combinations, e.g. data['fg'] = data['f'] + ':' + "
            "data['g']."
        )
    return rhs


def _column(frame: pd.DataFrame, name: str, what: str) -> pd.Series:
    if name not in frame.columns:
        raise DataError(f"{what} names column {name!r}, which is not in the data; columns are {list(frame.columns)}.")
    col = frame[name]
    if isinstance(col, pd.DataFrame):
        raise DataError(f"Column {name!r} appears more than once in the data; rename the duplicates.")
    return col


def _strata(col: pd.Series, name: str) -> tuple[np.ndarray, list[str]]:
    """Codes and level labels of a dispformula factor (a numeric column is refused)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        values = col.cat.remove_unused_categories()
        return np.asarray(values.cat.codes, dtype=np.int64), [str(c) for c in values.cat.categories]
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        raise ModelSpecError(
            f"dispformula: column {name!r} is numeric; only factors are supported for now (nlme's varIdent). "
            f"To use its values as strata, convert it: data[{name!r}] = data[{name!r}].astype('category')."
        )
    codes, levels = pd.factorize(col, sort=True)
    return np.asarray(codes, dtype=np.int64), [str(v) for v in levels]


@dataclass
class ResidualStructure:
    """The residual structure of one fit, read from its rows: strata and the correlation's pairs.

    ``stratum`` holds each row's stratum code (all 0 without a dispformula); ``pair_i``, ``pair_j`` the rows of
    every pair of consecutive observations within a group (by time) and ``gap`` their time difference.
    """

    dispersion: str | None
    levels: list[str]
    stratum: np.ndarray
    correlation: GapCorrelation | None
    pair_i: np.ndarray
    pair_j: np.ndarray
    gap: np.ndarray
    n_groups: int = 0

    @property
    def n_delta(self) -> int:
        return max(len(self.levels) - 1, 0)

    @property
    def n_phi(self) -> int:
        return self.n_delta + (self.correlation is not None)

    def phi_names(self) -> list[str]:
        """``delta.<level>`` (log SD ratio to the first level) for each other level, then the correlation's
        parameter (``rho`` for corAR1, nlme's ``Phi`` for corCAR1)."""
        names = [f"delta.{lev}" for lev in self.levels[1:]]
        return names + ([self.correlation.parameter] if self.correlation is not None else [])

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lower = [-np.inf] * self.n_delta + ([self.correlation.lower] if self.correlation is not None else [])
        upper = [np.inf] * self.n_delta + ([RHO_BOUND] if self.correlation is not None else [])
        return np.array(lower), np.array(upper)

    def split(self, phi) -> tuple[np.ndarray, float]:
        """``δ`` of every level (the first 0) and ρ (corCAR1's φ; 0 without a correlation)."""
        phi = np.asarray(phi, dtype=float)
        delta = np.concatenate([[0.0], phi[: self.n_delta]]) if self.levels else np.zeros(1)
        rho = float(phi[self.n_delta]) if self.correlation is not None else 0.0
        return delta, rho


def residual_structure(frame: pd.DataFrame, rows: np.ndarray, dispersion, correlation) -> ResidualStructure:
    """Read the strata and the correlation's pairs (:meth:`GapCorrelation.pairs`) of the fitted ``rows``."""
    n = rows.size
    levels: list[str] = []
    stratum = np.zeros(n, dtype=np.int64)
    if dispersion is not None:
        stratum, levels = _strata(frame[dispersion].iloc[rows].reset_index(drop=True), dispersion)
    if correlation is None:
        empty = np.zeros(0, dtype=np.int64)
        return ResidualStructure(dispersion, levels, stratum, None, empty, empty, empty)
    pair_i, pair_j, gap, n_groups = correlation.pairs(frame, rows)
    return ResidualStructure(dispersion, levels, stratum, correlation, pair_i, pair_j, gap, n_groups)


def _lag(rho: float, gaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``a = ρ^d`` and ``1 − a²`` for gaps ``d > 0``, the latter as ``−expm1(2d log|ρ|)`` (no cancellation for the
    small gaps of continuous times; 1 at ρ = 0)."""
    with np.errstate(divide="ignore"):
        log_abs = np.log(abs(rho))
    return rho**gaps, -np.expm1(2.0 * gaps * log_abs)


def _sum_terms(Zr, F: np.ndarray, piece: np.ndarray, ri: np.ndarray, rj: np.ndarray, n_pieces: int):
    """Each piece's sums over its terms ``(ri, rj)`` of ``z_ri z_rjᵀ`` (CSR, column ``b·q + a`` for entry
    ``(a, b)``), ``z_ri F_rjᵀ`` (CSR, column ``a·m + b``) and ``F_ri F_rjᵀ`` (dense, ``b·m + c``), with ``Zr`` the
    rows of ``Z`` (CSR) and ``F = [X y]`` (``m`` columns); :data:`PIECE_CHUNK` terms at a time."""
    q, m = Zr.shape[1], F.shape[1]
    g = sp.csr_matrix((n_pieces, q * q))
    zf = sp.csr_matrix((n_pieces, q * m))
    ff = np.zeros((n_pieces, m * m))
    for start in range(0, piece.size, PIECE_CHUNK):
        at, i, j = piece[start : start + PIECE_CHUNK], ri[start : start + PIECE_CHUNK], rj[start : start + PIECE_CHUNK]
        P = sp.csr_matrix((np.ones(at.size), (at, np.arange(at.size))), shape=(n_pieces, at.size))
        for b in range(m):
            ff[:, b * m : (b + 1) * m] += P @ (F[i, b, None] * F[j])
        Zi, Zj = Zr[i], Zr[j]
        t = np.repeat(np.arange(at.size), np.diff(Zi.indptr))  # the term of each nonzero of Zi
        cols = (Zi.indices[:, None].astype(np.int64) * m + np.arange(m)).ravel()
        vals = (Zi.data[:, None] * F[j[t]]).ravel()
        zf += sp.csr_matrix((vals, (np.repeat(at[t], m), cols)), shape=zf.shape)
        nj = np.diff(Zj.indptr)[t]  # each nonzero of Zi meets every nonzero of its term's Zj row
        e = np.repeat(np.arange(t.size), nj)
        f = Zj.indptr[t[e]] + np.arange(e.size) - np.repeat(np.cumsum(nj) - nj, nj)
        keys = Zj.indices[f].astype(np.int64) * q + Zi.indices[e]
        g += sp.csr_matrix((Zi.data[e] * Zj.data[f], (at[t[e]], keys)), shape=g.shape)
    return g, zf, ff


def _stored(stack):
    """A piece stack kept dense when at least :data:`DENSE_STACK_FILL` full, else CSR (both serve ``stack.T @ c``)."""
    return stack.toarray() if stack.nnz >= DENSE_STACK_FILL * stack.shape[0] * stack.shape[1] else stack


# ---- the pieces -------------------------------------------------------------------------------------------
class ResidualPieces:
    """The cross-products of ``[Z X y]`` split into the pieces of the module docstring, formed once.

    Parameters
    ----------
    design : Design
    structure : ResidualStructure
    beta_shift : ndarray
        The shift ``β₀`` of the response (:class:`~sparselmm.crossprod.CrossProducts`); any fixed shift
        gives the same fit.
    """

    def __init__(self, design, structure: ResidualStructure, beta_shift: np.ndarray):
        s = structure
        self.structure = s
        self.q, self.p, self.n = design.q, design.p, design.n
        self.beta_shift = np.asarray(beta_shift, dtype=float)
        w = design.weights
        h = np.ones(self.n) if w is None else np.sqrt(np.asarray(w, dtype=float))
        self.sum_log_prior = 0.0 if w is None else float(np.sum(np.log(w)))
        y = design.y if design.offset is None else design.y - design.offset
        y = y - design.X @ self.beta_shift if self.p else y
        F = np.column_stack([design.X, y]) * h[:, None]
        Zr = (sp.diags(h) @ design.Zt.T).tocsr()  # the rows of Z, scaled
        n_levels = max(len(s.levels), 1)
        self.counts = np.bincount(s.stratum, minlength=n_levels).astype(float)
        gaps, code, per_gap = np.unique(np.asarray(s.gap, dtype=float), return_inverse=True, return_counts=True)
        self.gaps, self.pairs_per_gap, n_codes = gaps, per_gap.astype(float), max(gaps.size, 1)
        # the terms (ri, rj) of all pieces: each row (diag), both rows of each pair (ends), each pair in both
        # orders (adjacent); a piece is the key (kind, gap, k, l), the gap compared exactly (no grouping)
        pi, pj, code = s.pair_i, s.pair_j, code.ravel()
        ki, kj = s.stratum[pi], s.stratum[pj]
        lo, hi = np.minimum(ki, kj), np.maximum(ki, kj)
        kind = np.repeat(np.arange(3), [self.n, 2 * pi.size, 2 * pi.size])
        gap_t = np.concatenate([np.zeros(self.n, dtype=np.int64), code, code, code, code])
        k_t = np.concatenate([s.stratum, ki, kj, lo, lo])
        l_t = np.concatenate([s.stratum, ki, kj, hi, hi])
        uniq, piece = np.unique(((kind * n_codes + gap_t) * n_levels + k_t) * n_levels + l_t, return_inverse=True)
        self.piece_k, self.piece_l = uniq // n_levels % n_levels, uniq % n_levels
        self.kind = uniq // (n_levels * n_levels * n_codes)
        gap_of = gaps[uniq // (n_levels * n_levels) % n_codes] if gaps.size else np.zeros(uniq.size)
        self.piece_gap = np.where(self.kind == 0, 0.0, gap_of)
        ri = np.concatenate([np.arange(self.n), pi, pj, pi, pj])
        rj = np.concatenate([np.arange(self.n), pi, pj, pj, pi])
        g, zf, self.ff_stack = _sum_terms(Zr, F, piece.ravel(), ri, rj, uniq.size)
        self.keys = np.unique(g.indices).astype(np.int64)  # the union pattern of the pieces' ZᵀZ-like products
        self.g_rows, self.g_cols = self.keys % self.q, self.keys // self.q
        g = sp.csr_matrix((g.data, np.searchsorted(self.keys, g.indices), g.indptr), shape=(uniq.size, self.keys.size))
        self.g_stack, self.zf_stack = _stored(g), _stored(zf)

    @property
    def n_pieces(self) -> int:
        return self.kind.size

    def coefficients(self, phi) -> tuple[np.ndarray, float]:
        """Each piece's coefficient at ``φ`` and ``Σ log w`` (prior weights included)."""
        s = self.structure
        delta, rho = s.split(phi)
        e = np.exp(-delta)
        c = np.ones(self.kind.size)  # diag pieces
        off = self.kind != 0
        a, one_minus = _lag(rho, self.piece_gap[off])
        c[off] = np.where(self.kind[off] == 1, a * a / one_minus, -a / one_minus)
        c = c * e[self.piece_k] * e[self.piece_l]
        slw = self.sum_log_prior - 2.0 * float(self.counts @ delta[: self.counts.size])
        if self.gaps.size:
            slw -= float(self.pairs_per_gap @ np.log(_lag(rho, self.gaps)[1]))
        return c, slw

    def cross_at(self, phi, sparse: bool = True) -> tuple[CrossProducts, np.ndarray]:
        """The cross-products at ``φ`` and the values of ``ZᵀWZ`` on the pieces' union pattern; with
        ``sparse=False`` the CrossProducts' ``ZtWZ`` is None (the dense evaluation builds ``G`` itself)."""
        c, slw = self.coefficients(phi)
        q, p = self.q, self.p
        g = self.g_stack.T @ c  # the stacks are dense or CSR (_stored)
        zf = (self.zf_stack.T @ c).reshape(q, p + 1)
        ff = (c @ self.ff_stack).reshape(p + 1, p + 1)
        ZtWZ = None
        if sparse:
            ZtWZ = sp.csc_matrix((g, (self.g_rows, self.g_cols)), shape=(q, q))
            ZtWZ.sort_indices()
        cross = CrossProducts(
            ZtWZ=ZtWZ,
            ZtWX=np.ascontiguousarray(zf[:, :p]),
            ZtWy=zf[:, p].copy(),
            XtWX=np.ascontiguousarray(ff[:p, :p]),
            XtWy=ff[:p, p].copy(),
            ytWy=float(ff[p, p]),
            sum_log_w=slw,
            beta_shift=self.beta_shift,
            n=self.n,
        )
        return cross, g

    def dense_gram(self, g: np.ndarray) -> np.ndarray:
        """``ZᵀWZ`` as a dense q × q array from its values on the union pattern."""
        G = np.zeros((self.q, self.q))
        G[self.g_rows, self.g_cols] = g
        return G


class ResidualCriterion:
    """The profiled criterion as a function of ``x = (θ, φ)``: what :func:`~sparselmm.optimize.optimize_theta`
    minimises. Each call forms the cross-products at φ from the pieces and evaluates the criterion at θ
    (``inf`` where it fails): a :class:`~sparselmm.criterion.DenseCriterion` for small or full ``ZᵀWZ``, else
    one CHOLMOD factor that takes each φ's ``ZᵀWZ`` (:meth:`~sparselmm.deviance.ProfiledDeviance.set_cross`)."""

    def __init__(self, design, pieces: ResidualPieces, reml: bool, ordering: str = "default"):
        self.design, self.pieces, self.reml = design, pieces, bool(reml)
        self.structure = pieces.structure
        self.n_theta = design.n_theta
        phi0 = np.zeros(self.structure.n_phi)
        cross, _ = pieces.cross_at(phi0)
        self._base = self._sparse = None
        q = design.q
        fill = pieces.keys.size / float(q * q) if q else 1.0
        if q <= DENSE_MAX_Q or (q <= DENSE_FALLBACK_Q and fill >= DENSE_ENOUGH_FILL):
            self._base = DenseCriterion(design.terms, cross, reml)
        else:  # CHOLMOD, taking each φ's ZᵀWZ into the pattern of the pieces' union (nested designs: diagonal)
            self._sparse = ProfiledDeviance(design, cross, reml, ordering=ordering, reweightable=True)
        lo, up = self.structure.bounds()
        self.lower = np.concatenate([design.lower, lo])
        self.upper = np.concatenate([design.upper, up])

    def split(self, x) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, dtype=float)
        return x[: self.n_theta], x[self.n_theta :]

    def at_phi(self, phi) -> DenseCriterion:
        """The dense criterion in θ for the weights at ``φ``."""
        cross, g = self.pieces.cross_at(phi, sparse=False)
        return self._base.with_gram(self.pieces.dense_gram(g), cross)

    def __call__(self, x) -> float:
        theta, phi = self.split(x)
        if self.structure.correlation is not None and not self.structure.correlation.admissible(phi[-1]):
            return float("inf")
        if self._sparse is not None:
            self._sparse.set_cross(self.pieces.cross_at(phi)[0])
            return self._sparse(theta)
        return self.at_phi(phi)(theta)


def start_phi(pieces: ResidualPieces) -> np.ndarray:
    """δ from the least-squares residuals' SDs per stratum (attenuated by the random effects: a start); the
    correlation's own start (ρ = 0 for corAR1, nlme's φ = 0.2 for corCAR1)."""
    s = pieces.structure
    out = np.zeros(s.n_phi)
    if s.n_delta:
        ss = np.array([pieces.ff_stack[i, -1] for i in np.flatnonzero(pieces.kind == 0)])
        ks = pieces.piece_k[pieces.kind == 0]
        msq = np.full(len(s.levels), np.nan)
        msq[ks] = ss / np.maximum(pieces.counts[ks], 1)
        if msq[0] > 0:
            delta = 0.5 * np.log(np.maximum(msq / msq[0], 1e-300))
            out[: s.n_delta] = np.clip(np.nan_to_num(delta[1:]), -MAX_START_DELTA, MAX_START_DELTA)
    if s.correlation is not None:
        out[-1] = s.correlation.start
    return out


# ---- the fit ----------------------------------------------------------------------------------------------
def _rows_subset(frame: pd.DataFrame, columns: list[str], weights, offset, missing):
    """Drop (or refuse) rows with missing values in the residual structure's own columns."""
    na = np.zeros(len(frame), dtype=bool)
    for c in columns:
        na |= frame[c].isna().to_numpy()
    if not na.any():
        return frame, weights, offset
    if missing == "raise":
        bad = [c for c in columns if frame[c].isna().any()]
        raise DataError(
            f"Missing values in the residual structure's columns {bad}; drop those rows or use missing='drop'."
        )
    keep = np.flatnonzero(~na)

    def take(v):
        return v if v is None or isinstance(v, str) else np.asarray(v)[keep]

    return frame.iloc[keep], take(weights), take(offset)


def fit_residual(formula, data, reml, weights, offset, missing, optimizer, control, start, check_conv, ordering,
                 memory_limit, data_name, progress, dispformula, correlation):  # fmt: skip
    """:func:`sparselmm.lmer` with a ``dispformula`` or a ``correlation`` (see the module docstring)."""
    t0 = time.perf_counter()
    if correlation is not None and not isinstance(correlation, GapCorrelation):
        raise ArgumentError(
            f"correlation must be sparselmm.corAR1(time=..., group=...) or sparselmm.corCAR1(time=..., "
            f"group=...), not {correlation!r}."
        )
    disp = None if dispformula is None else dispersion_column(dispformula)
    from .scale import as_source

    if as_source(data) is not None:
        raise ModelSpecError(
            "dispformula and correlation need the rows in memory; fit from a DataFrame (chunked data is not "
            "supported with a residual structure yet)."
        )
    frame = as_dataframe(data)
    columns = []
    if disp is not None:
        _column(frame, disp, "dispformula")
        columns.append(disp)
    if correlation is not None:
        _column(frame, correlation.time, f"{correlation.name}(time=...)")
        columns.append(correlation.time)
        if correlation.group is not None:
            _column(frame, correlation.group, f"{correlation.name}(group=...)")
            columns.append(correlation.group)
    frame, weights, offset = _rows_subset(frame, columns, weights, offset, missing)
    if progress is not None:
        progress.phase("set-up: building X and Z from the data")
    design = build_design(parse_formula(formula), frame, weights=weights, offset=offset, missing=missing)
    if design.structured:
        raise ModelSpecError(
            "Covariance structures on random-effect terms (diag, cs, ar1, toep) cannot be combined with a "
            "dispformula or correlation yet; use unstructured terms."
        )
    structure = residual_structure(frame, design.data.rows, disp, correlation)
    plain = cross_products(design)
    if not plain.ytWy > 0:
        raise ModelSpecError("The response is constant or exactly fitted by the fixed effects.")
    pieces = ResidualPieces(design, structure, plain.beta_shift)
    theta0 = moment_start(design) if start is None else start_theta(design, start)
    x0 = np.concatenate([theta0, start_phi(pieces)])
    fit = ResidualFit(design, pieces, reml, ordering, memory_limit, data_name, progress)
    return fit.optimise(x0, optimizer, control, check_conv, setup_seconds=time.perf_counter() - t0)


@dataclass
class ResidualFit:
    """One optimisation of a residual-structure model: :class:`ResidualCriterion` minimised over ``(θ, φ)``
    from a start, and the result built on a general sparse factor at the optimum (``vcov``, ``ranef``).
    :func:`fit_residual` and :func:`refit_residual` use it."""

    design: object
    pieces: ResidualPieces
    reml: bool
    ordering: str = "default"
    memory_limit: object = None
    data_name: str | None = None
    progress: object = None

    def optimise(self, x0, optimizer, control, check_conv, setup_seconds: float = 0.0):
        from .residual_result import ResidualLmerResult

        design, pieces, progress = self.design, self.pieces, self.progress
        structure = pieces.structure
        t0 = time.perf_counter()
        cholmod_ordering = "default" if self.ordering in ("auto", "schur", "matrix-free") else self.ordering
        crit = ResidualCriterion(design, pieces, self.reml, cholmod_ordering)
        setup_seconds += time.perf_counter() - t0
        # tighter than lme4's 1e-8: φ is less well scaled than θ (ρ's criterion is flat near the optimum) and an
        # evaluation costs no pass over the rows; the crossed AR(1) validation case stopped 2e-7 above its optimum
        ctrl = {"xtol_abs": TIGHT_TOL, "ftol_abs": TIGHT_TOL, **(control or {})}
        x, _, info = optimize_theta(
            crit, x0, crit.lower, optimizer, ctrl, check_conv, progress=progress, upper=crit.upper
        )
        info.setup_seconds = setup_seconds
        theta, phi = crit.split(x)
        cross, _ = pieces.cross_at(phi)
        # the final weighted model on a general sparse factor: vcov, ranef and their conditional variances
        devfun = profiled_deviance(design, cross, reml=self.reml, ordering="default", memory_limit=self.memory_limit)
        info.path, info.predicted = devfun.path, devfun.predicted.as_dict()
        info.details["residual_parameters"] = dict(zip(structure.phi_names(), phi.tolist()))
        state = devfun.solve(theta)
        if progress is not None:
            progress.done(f"done: criterion {state.deviance:.6f} after {info.n_evals} evaluations")
        return ResidualLmerResult(devfun, state, info, data_name=self.data_name, structure=structure, phi=phi)


def refit_residual(result, reml: bool):
    """A residual-structure fit on the other criterion (lme4's ``refitML``; nlme's ``update(m, method = "ML")``):
    θ and φ re-optimised jointly from the fit's estimates, on the fit's own pieces; ``result`` itself when it is
    already on that criterion.

    Parameters
    ----------
    result : ResidualLmerResult
    reml : bool
        True for the REML criterion, False for ML.

    Returns
    -------
    ResidualLmerResult
        The new fit (its ``call`` records ``reml``, so :func:`sparselmm.update` of it keeps the criterion).
    """
    if bool(result.reml) == bool(reml):
        return result
    design = result.design
    pieces = ResidualPieces(design, result.residual_structure, result.deviance_function.cross.beta_shift)
    x0 = np.concatenate([result.theta, result.phi])
    fit = ResidualFit(design, pieces, bool(reml), data_name=result.data_name)
    new = fit.optimise(x0, result.optinfo.optimizer, None, True)
    new.optinfo.theta_start = result.optinfo.theta_start
    call = getattr(result, "call", None)
    if call is not None:
        from dataclasses import replace

        new.call = replace(call, kwargs={**call.kwargs, "reml": bool(reml)})
    return new


def gls_loglik(result) -> tuple[float, int]:
    """The log-likelihood of ``result``'s model without its random effects (nlme's ``gls`` with the same varIdent
    and corAR1 / corCAR1), on the fit's criterion (ML or REML), and its number of parameters: what ``ranova``
    compares a model left with no random-effects term against.

    φ is re-optimised (BOBYQA within its bounds, from the fit's φ̂) on the criterion of the weighted linear model
    at φ, ``−Σ log w(φ) [+ log|XᵀWX|] + ν (1 + log(2π r²/ν))`` (``ν = n`` or ``n − p``, ``r²`` the weighted residual sum
    of squares): the lmer criterion of :mod:`sparselmm.criterion` without ``Z``, formed from the pieces' ``[X y]``
    cross-products.

    Parameters
    ----------
    result : ResidualLmerResult

    Returns
    -------
    (float, int)
        The log-likelihood and ``p + 1 + len(φ)``.
    """
    from .optimize import nlopt_minimize

    design = result.design
    pieces = ResidualPieces(design, result.residual_structure, result.deviance_function.cross.beta_shift)
    reml, n, p = bool(result.reml), design.n, design.p
    nu = n - p if reml else n
    cor = pieces.structure.correlation

    def criterion(phi) -> float:
        if cor is not None and not cor.admissible(float(phi[-1])):
            return float("inf")
        c = pieces.cross_at(phi, sparse=False)[0]
        try:
            L = np.linalg.cholesky(c.XtWX) if p else np.zeros((0, 0))
            v = np.linalg.solve(L, c.XtWy) if p else np.zeros(0)
        except np.linalg.LinAlgError:
            return float("inf")
        r2 = c.ytWy - float(v @ v)
        if not r2 > 0:
            return float("inf")
        ld = 2.0 * float(np.sum(np.log(np.diag(L)))) if reml and p else 0.0
        return ld - c.sum_log_w + nu * (1.0 + np.log(2.0 * np.pi * r2 / nu))

    lower, upper = pieces.structure.bounds()
    x0 = np.clip(result.phi, lower, upper)
    _, value, _, _ = nlopt_minimize(criterion, x0, lower, upper, xtol_abs=TIGHT_TOL, ftol_abs=TIGHT_TOL)
    return -0.5 * float(value), p + 1 + x0.size
