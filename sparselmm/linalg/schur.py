"""A Cholesky factor of ``Λ ZᵀWZ Λ + I`` for all-scalar models that eliminates the first term analytically.

When every random-effects term is scalar, ``Λ = diag(λ)``. The first term (the one with most levels)
has a diagonal block ``G₁₁`` of ``G = ZᵀWZ`` (each row belongs to one level), so with ``t = λ₁`` (one θ)

* ``D = t² diag(G₁₁) + I`` is diagonal,
* the Schur complement of the other terms is ``S = diag(λ₂) K diag(λ₂) + I`` with
  ``K = G₂₂ − G₂₁ diag(w) G₁₂``, ``w_s = t² / (t² g_s + 1)``, ``g_s = (G₁₁)_ss``.

``G₂₁ diag(w) G₁₂`` has a fixed pattern and is linear in ``w``: it is one sparse matrix-vector product
``Q w`` with a ``Q`` built once (one column per level ``s``, holding ``G_is G_js`` at each pair
``i ≥ j``). An evaluation then scatters the pattern into a dense array and calls LAPACK's ``potrf``
(the layout MixedModels.jl uses for crossed factors), with no sparse-sparse product. The factor is
``L = [[D^½, 0], [B D^-½, L_S]]``, ``B = diag(λ₂) G₂₁ t``, no permutation, behind the factor interface
of :class:`sparselmm.linalg.factor.Factor`.

:meth:`SchurCholesky.inverse_traces` also gives the traces of ``(ΛᵀZᵀWZΛ + I)⁻¹`` that the analytic
gradient of the profiled deviance needs (one ``potri`` on ``L_S``).

The elimination itself — ``D``, the factored complement, ``L``'s solves and log-determinant — is
:class:`ScalarElimination`, shared with the reweighted factor PIRLS uses
(:class:`sparselmm.linalg.weighted_schur.WeightedSchur`); the two differ only in how they form ``K``.
"""

from __future__ import annotations

import copy

import numpy as np
import scipy.sparse as sp
from scipy.linalg.blas import dsyrk
from scipy.linalg.lapack import dpotrf, dpotri, dtrtrs

from ..errors import NumericalError
from .factor import as_columns
from .thresholds import FULL_CROSS_BLOCK

__all__ = [
    "NotDiagonalError",
    "ScalarElimination",
    "SchurCholesky",
    "SchurNotWorthwhileError",
    "complement_density",
    "schur_applicable",
]

TRIPLES_PER_CHUNK = 2_000_000  # bounds the memory used while Q is built


class NotDiagonalError(ValueError):
    """The first term's block of ``ZᵀWZ`` has off-diagonal entries: the Schur factor does not apply."""


class SchurNotWorthwhileError(ValueError):
    """The dense-Schur factor would not pay: the complement is too sparse or ``Q`` too large."""


def schur_applicable(terms, q: int) -> bool:
    """Every term is scalar and the first has at least as many levels as the rest together.

    (The first term's block of ``ZᵀWZ`` must also be diagonal — one level per row — which
    :class:`SchurCholesky` checks on the pattern. Whether the dense complement fits is the cost model's
    decision: :mod:`sparselmm.linalg.cost`.)
    """
    if not terms or any(t.k != 1 for t in terms):
        return False
    q1 = terms[0].q
    return 0 < q - q1 <= q1


def complement_density(G: sp.spmatrix, q1: int) -> float:
    """Share of nonzeros in the lower triangle of the Schur complement of ``G``'s first ``q1`` columns
    (the pattern of ``G₂₂ + G₂₁G₁₂``); 1 for a cross block ``G₁₂`` at least ``FULL_CROSS_BLOCK`` full, which
    fills the complement (the pattern product took 1.5 s on the 600 × 400 maximal design, 90 % full)."""
    G = sp.csc_matrix(G)
    q2 = G.shape[0] - q1
    if q2 <= 0:
        return 1.0
    G12 = G[:q1, q1:]
    if G12.nnz >= FULL_CROSS_BLOCK * q1 * q2:
        return 1.0
    P12 = (G12 != 0).astype(np.float64)
    P = ((G[q1:, q1:] != 0).astype(np.float64) + P12.T @ P12).tocoo()
    low = int(np.count_nonzero(P.row >= P.col))
    return low / (q2 * (q2 + 1) / 2)


def _pair_triples(G21: sp.csc_matrix, cols: np.ndarray):
    """Every pair ``(i ≥ j)`` of nonzeros sharing a column ``s`` of ``G₂₁``, over a contiguous run ``cols``.

    Returns the rows ``i`` and ``j`` and the positions of ``G_is`` and ``G_js`` in ``G21.data``, column by
    column (the order of a CSC matrix with one column per ``s``).
    """
    indptr = G21.indptr
    counts = np.diff(indptr[cols[0] : cols[-1] + 2])
    col_start = np.repeat(indptr[cols], counts)  # per entry: where its column starts
    entry = np.arange(indptr[cols[0]], indptr[cols[-1] + 1])
    reps = entry - col_start + 1  # an entry pairs with itself and every earlier entry of its column
    first = np.repeat(entry, reps)
    ends = np.cumsum(reps)
    second = np.arange(first.size) - np.repeat(ends - reps - col_start, reps)
    return G21.indices[first], G21.indices[second], first, second


def _column_chunks(pair_ends: np.ndarray) -> list[np.ndarray]:
    """Contiguous runs of levels with about ``TRIPLES_PER_CHUNK`` pairs each."""
    edges = np.searchsorted(
        pair_ends, np.arange(TRIPLES_PER_CHUNK, pair_ends[-1] if pair_ends.size else 0, TRIPLES_PER_CHUNK)
    )
    return [c for c in np.split(np.arange(pair_ends.size), edges) if c.size]


class ScalarElimination:
    """``L = [[D^½, 0], [B D^-½, L_S]]`` of ``diag(λ) G diag(λ) + I``, the first ``q1`` (diagonal) rows eliminated.

    The part every scalar dense-Schur factor shares: the layout (no permutation), the factorisation of the
    complement ``S`` (LAPACK ``potrf``), the solves with ``L`` and ``Lᵀ`` and ``log|L|²``. A subclass forms
    ``D`` and ``S`` for its own ``G`` and hands them to :meth:`_factor_complement`; it holds ``G₂₁`` and
    ``G₁₂`` as CSR matrices (``_G21``, ``_G12``) and the number of stored entries of ``G₂₁`` (``_nnz21``).
    """

    ordering = "schur"

    def _layout(self, q: int, q1: int) -> None:
        self.n, self.q1, self.q2 = q, q1, q - q1
        self.perm = np.arange(q)
        self.iperm = self.perm
        self._L_S = None

    def _factor_complement(self, S: np.ndarray, t: float, lam2: np.ndarray, d: np.ndarray) -> None:
        """Factor the complement ``S`` (lower triangle, Fortran order, overwritten) and keep ``t``, ``λ₂``, ``D``."""
        L, info = dpotrf(S, lower=1, clean=0, overwrite_a=1)
        if info != 0:
            raise NumericalError("The Schur complement is not positive definite at this theta.")
        self._t, self._lam2, self._d, self._L_S = t, lam2, d, L

    def _check_factor(self):
        if self._L_S is None:
            raise NumericalError("No current factor: call factorize() first (inverse_traces() consumes it).")

    def logdet(self) -> float:
        """``log|ΛGΛ + I| = log|L|²``."""
        self._check_factor()
        return float(np.sum(np.log(self._d)) + 2.0 * np.sum(np.log(np.diagonal(self._L_S))))

    def _B_times(self, x: np.ndarray) -> np.ndarray:
        return self._lam2[:, None] * (self._G21 @ (self._t * x))

    def _Bt_times(self, x: np.ndarray) -> np.ndarray:
        return self._t * (self._G12 @ (self._lam2[:, None] * x))

    def _B_Dinv_times(self, x: np.ndarray) -> np.ndarray:
        """``B D⁻¹ x`` (the first block row of the forward solve)."""
        return self._B_times(x / self._d[:, None])

    def solve_L(self, b: np.ndarray) -> np.ndarray:
        """``L⁻¹ b`` (no permutation)."""
        self._check_factor()
        b2d, vec = as_columns(b, self.n)
        sd = np.sqrt(self._d)[:, None]
        x1 = b2d[: self.q1] / sd
        rhs = b2d[self.q1 :] - self._B_Dinv_times(b2d[: self.q1])
        x2, _ = dtrtrs(self._L_S, rhs, lower=1)
        out = np.vstack([x1, x2])
        return out.ravel() if vec else out

    def solve_Lt(self, c: np.ndarray) -> np.ndarray:
        """``L⁻ᵀ c`` (no permutation)."""
        self._check_factor()
        c2d, vec = as_columns(c, self.n)
        x2, _ = dtrtrs(self._L_S, c2d[self.q1 :], lower=1, trans=1)
        sd = np.sqrt(self._d)[:, None]
        x1 = (c2d[: self.q1] - self._Bt_times(x2) / sd) / sd
        out = np.vstack([x1, x2])
        return out.ravel() if vec else out

    def nnz(self) -> int:
        """Stored entries of ``L``: the diagonal, ``B`` and the dense lower triangle of ``L_S``."""
        return self.q1 + self._nnz21 + self.q2 * (self.q2 + 1) // 2


class SchurCholesky(ScalarElimination):
    """``Λ G Λ + I = L Lᵀ`` for a diagonal ``Λ``, eliminating the first ``q1`` (diagonal) rows, with ``G`` fixed.

    Parameters
    ----------
    G : scipy.sparse.csc_matrix
        The full symmetric ``ZᵀWZ``; ``G[:q1, :q1]`` must be diagonal.
    q1 : int
        Number of columns of the first term.
    min_density : float
        Raise :class:`SchurNotWorthwhileError` when the lower triangle of the Schur complement has a smaller
        share of nonzeros than this (a sparse factor then beats the dense one).
    max_pairs : int, optional
        Raise :class:`SchurNotWorthwhileError` when ``Q`` would have more entries than this (no limit by
        default: the memory it takes is the cost model's decision).
    terms : list of ReTerm, optional
        The model's (scalar) terms; needed by :meth:`refactor`, which reads ``Λ``'s diagonal from the
        terms' 1 × 1 factors.
    dense_from : int, optional
        First-term levels with at least this many other effects (``k_s``, entries of their column of
        ``G₂₁``) leave ``Q``: their columns are held dense (q₂ × m) and their part of ``K`` is one BLAS
        ``syrk`` per evaluation. A level costs ``k_s(k_s+1)/2`` entries of ``Q`` but only ``q₂`` dense
        values, so the users of a MovieLens-shaped design with thousands of ratings are far cheaper dense;
        the cost model chooses the threshold (:func:`sparselmm.linalg.cost.dense_levels_threshold`). None:
        every level in ``Q``.
    """

    has_logdet_gradient = True
    gradient_consumes_factor = True  # inverse_traces() inverts L_S in place

    def __init__(
        self,
        G: sp.csc_matrix,
        q1: int,
        min_density: float = 0.0,
        max_pairs: int | None = None,
        terms=None,
        dense_from: int | None = None,
    ):
        G = sp.csc_matrix(G)
        self._sizes = None if terms is None else np.array([t.q for t in terms])
        self._layout(G.shape[0], q1)
        q2 = self.q2
        G11 = G[:q1, :q1].tocoo()
        if np.any(G11.row != G11.col):
            raise NotDiagonalError("the first block of ZᵀWZ is not diagonal")
        self._g = np.asarray(G.diagonal()[:q1], dtype=float)
        G21 = G[q1:, :q1].tocsc()
        G21.sort_indices()
        self._G21 = G21.tocsr()
        self._G12 = G21.T.tocsr()
        self._nnz21 = self._G21.nnz
        k_all = np.diff(G21.indptr).astype(np.int64)
        heavy = k_all >= dense_from if dense_from is not None else np.zeros(q1, dtype=bool)
        self._heavy = np.flatnonzero(heavy)  # levels held dense: their part of K by syrk
        self._light = np.flatnonzero(~heavy) if self._heavy.size else None  # None: every level in Q
        # the heavy levels' columns of G₂₁, dense (q₂ × m, Fortran order for BLAS)
        self._A_heavy = np.asfortranarray(G21[:, self._heavy].toarray()) if self._heavy.size else None
        if self._light is not None:
            G21 = G21[:, self._light].tocsc()
            G21.sort_indices()
        k = np.diff(G21.indptr).astype(np.int64)
        pair_ends = np.cumsum(k * (k + 1) // 2)  # per level s: where its pairs end in Q
        n_pairs = int(pair_ends[-1]) if pair_ends.size else 0
        if max_pairs is not None and n_pairs > max_pairs:
            raise SchurNotWorthwhileError(f"the product G₂₁ diag(w) G₁₂ has {n_pairs:,} pairs (> {max_pairs:,})")

        # the lower-triangle pattern of K: G₂₂'s entries and every pair of effects sharing a level s
        G22 = G[q1:, q1:].tocoo()
        low = G22.row >= G22.col
        g22_key = G22.col[low].astype(np.int64) * q2 + G22.row[low]
        marked = np.zeros(q2 * q2, dtype=bool)
        marked[g22_key] = True
        chunks = _column_chunks(pair_ends)
        pairs = None
        for cols in chunks:
            pairs = _pair_triples(G21, cols)
            marked[pairs[1].astype(np.int64) * q2 + pairs[0]] = True
        marked[np.arange(q2) * (q2 + 1)] = True  # the diagonal (for + I)
        self._flat = np.flatnonzero(marked)  # column-major positions in the dense q2 × q2 array
        del marked
        n_pattern = self._flat.size
        self.density = n_pattern / (q2 * (q2 + 1) / 2)
        if self._heavy.size:  # the densest held level alone fills this share of the complement
            self.density = max(self.density, float(k_all[self._heavy].max()) ** 2 / q2**2)
        if self.density < min_density:
            raise SchurNotWorthwhileError(f"the Schur complement is {self.density:.2%} full")
        self._row = (self._flat % q2).astype(np.int32)
        self._col = (self._flat // q2).astype(np.int32)
        self._offdiag = self._row != self._col
        where = np.full(q2 * q2, -1, dtype=np.int32 if n_pattern < 2**31 else np.int64)
        where[self._flat] = np.arange(n_pattern)
        self._K0 = np.zeros(n_pattern)
        np.add.at(self._K0, where[g22_key], G22.data[low])
        # Q: one column per level s holding G_is G_js at the pattern position of (i, j), filled in place
        indptr = np.concatenate([[0], pair_ends])
        data = np.empty(indptr[-1])
        indices = np.empty(indptr[-1], dtype=where.dtype)
        for cols in chunks:
            i, j, first, second = pairs if len(chunks) == 1 else _pair_triples(G21, cols)
            span = slice(indptr[cols[0]], indptr[cols[-1] + 1])
            indices[span] = where[j.astype(np.int64) * q2 + i]
            data[span] = G21.data[first] * G21.data[second]
        del where, pairs
        # as CSR the product gathers from the short w and writes the pattern in order: on the 1e6-row
        # benchmark (34M entries) 0.07 s per product against 0.24 s for the CSC scatter
        self._Q = sp.csc_matrix((data, indices, indptr), shape=(n_pattern, G21.shape[1])).tocsr()
        del data, indices
        self._t = 1.0
        self._lam2 = np.ones(q2)
        self._d = np.ones(q1)
        self._S = np.zeros((q2, q2), order="F")  # the one dense q2 × q2 array: S, then L_S, then S⁻¹

    def refactor(self, theta: np.ndarray, factors: list[np.ndarray]) -> None:
        """:meth:`factorize` for the terms' 1 × 1 factors (``Λ``'s diagonal, term by term)."""
        self.factorize(np.repeat([T[0, 0] for T in factors], self._sizes))

    def factorize(self, lam: np.ndarray) -> None:
        """Numeric factorisation for ``Λ = diag(lam)`` (constant over the first ``q1`` entries)."""
        lam = np.asarray(lam, dtype=float)
        self._last_lam = lam
        t, lam2 = float(lam[0]), lam[self.q1 :]
        t2 = t * t
        with np.errstate(over="ignore", invalid="ignore"):
            d = t2 * self._g + 1.0
            w = t2 / d
            k_vals = self._K0 - self._Q @ (w if self._light is None else w[self._light])
            vals = k_vals * lam2[self._row] * lam2[self._col]
        if not (np.all(np.isfinite(d)) and np.all(np.isfinite(vals))):
            raise NumericalError("Λ ZᵀWZ Λ + I overflows at this theta.")
        S = self._S
        S.fill(0.0)
        flat = S.reshape(-1, order="F")  # a view: S is Fortran-ordered
        flat[self._flat] = vals
        flat[:: self.q2 + 1] += 1.0
        if self._heavy.size:  # S −= diag(λ₂) A diag(w) Aᵀ diag(λ₂) over the dense levels (lower triangle)
            A = self._heavy_columns(lam2, np.sqrt(w[self._heavy]))
            S = dsyrk(-1.0, A, beta=1.0, c=S, lower=1, overwrite_c=1)
            self._S = S
        self._factor_complement(S, t, lam2, d)

    def inverse_traces(self) -> tuple[float, np.ndarray]:
        """``tr`` of the first block of ``M⁻¹ = (ΛGΛ + I)⁻¹`` and the diagonal of its other block.

        ``M⁻¹₁₁ = D⁻¹ + D⁻¹ Bᵀ S⁻¹ B D⁻¹``, so its trace is ``Σ 1/d_s + Σ_ij (λ₂ᵢ S⁻¹ᵢⱼ λ₂ⱼ) H'ᵢⱼ`` with
        ``H' = G₂₁ diag(t²/d²) G₁₂`` (the same ``Q``, other weights); ``M⁻¹₂₂ = S⁻¹``. ``S⁻¹`` overwrites
        the dense factor (no second q₂ × q₂ array), so :meth:`factorize` must run again before a solve.
        """
        t2 = self._t * self._t
        heavy_trace = 0.0
        if self._heavy.size:  # Σ_s (t²/d_s²) ‖L_S⁻¹ λ₂∘g_s‖² over the dense levels, before potri overwrites L_S
            Y, info = dtrtrs(self._L_S, self._heavy_columns(self._lam2, None), lower=1)
            heavy_trace = float(np.einsum("is,is,s->", Y, Y, t2 / self._d[self._heavy] ** 2))
        inv, info = dpotri(self._L_S, lower=1, overwrite_c=1)
        self._L_S = None
        if info != 0:
            raise NumericalError("The Schur complement could not be inverted at this theta.")
        h_all = t2 / self._d**2
        h = self._Q @ (h_all if self._light is None else h_all[self._light])
        s_hat = inv.reshape(-1, order="F")[self._flat]
        s_hat *= self._lam2[self._row]
        s_hat *= self._lam2[self._col]
        s_hat *= h
        trace_first = float(np.sum(1.0 / self._d) + np.sum(s_hat) + np.sum(s_hat[self._offdiag]) + heavy_trace)
        return trace_first, np.diagonal(inv).copy()

    def inverse_diagonal(self) -> np.ndarray:
        """The diagonal of ``C⁻¹ = (ΛGΛ + I)⁻¹`` (length q), for conditional variances.

        ``(C⁻¹)₂₂ = S⁻¹``; for a first-term level ``s``, ``(C⁻¹)ₛₛ = 1/d_s + (t/d_s)² (λ₂∘g_s)ᵀ S⁻¹ (λ₂∘g_s)``
        with ``g_s`` its column of ``G₂₁``: one product ``Qᵀv`` with ``v`` the pattern's values of
        ``λ₂ᵢ S⁻¹ᵢⱼ λ₂ⱼ`` (off-diagonal ones twice), and for levels held dense the column norms of
        ``L_S⁻¹ (λ₂∘g_s)``. ``potri`` overwrites the factor, which is then computed again.
        """
        self._check_factor()
        t2, lam2, d = self._t * self._t, self._lam2, self._d
        quad = np.empty(self.q1)
        if self._heavy.size:
            Y, _ = dtrtrs(self._L_S, self._heavy_columns(lam2, None), lower=1)
            quad[self._heavy] = np.einsum("is,is->s", Y, Y)
        inv, info = dpotri(self._L_S, lower=1, overwrite_c=1)
        self._L_S = None
        if info != 0:
            raise NumericalError("The Schur complement could not be inverted at this theta.")
        v = inv.reshape(-1, order="F")[self._flat] * lam2[self._row] * lam2[self._col]
        v[self._offdiag] *= 2.0
        light = self._Q.T @ v
        if self._light is None:
            quad = light
        else:
            quad[self._light] = light
        out = np.concatenate([1.0 / d + t2 * quad / d**2, np.diagonal(inv)])
        self.factorize(self._last_lam)
        return out

    def _heavy_columns(self, lam2: np.ndarray, scale: np.ndarray | None) -> np.ndarray:
        """``diag(λ₂) A diag(scale)`` for the dense levels' columns ``A`` (a new Fortran-ordered array)."""
        A = self._A_heavy * lam2[:, None]
        if scale is not None:
            A *= scale[None, :]
        return A

    def logdet_gradient(self, theta: np.ndarray, terms) -> np.ndarray:
        """``∂ log|ΛGΛ + I| / ∂θ``: ``(2/θ_k)(q_k − Σ_{i∈k} (C⁻¹)_ii)`` for each scalar term (0 at θ_k = 0,
        where log|C| is even in θ_k). Consumes the factor (:meth:`inverse_traces`)."""
        trace_first, diag_rest = self.inverse_traces()
        grad = np.zeros(len(theta))
        for i, t in enumerate(terms):
            th = theta[t.theta_offset]
            if th == 0.0:
                continue
            if i == 0:
                trace = trace_first
            else:
                trace = float(np.sum(diag_rest[t.offset - self.q1 : t.offset - self.q1 + t.q]))
            grad[t.theta_offset] = (2.0 / th) * (t.q - trace)
        return grad

    @property
    def holds_factor(self) -> bool:
        """A numeric factor is present (not yet consumed by :meth:`inverse_traces`)."""
        return self._L_S is not None

    def dense_flops(self) -> float:
        """Dense work of one factorisation: the q₂ × q₂ ``potrf`` (order of magnitude, ``q₂³``)."""
        return float(self.q2) ** 3

    def workspace_copy(self) -> SchurCholesky:
        """Everything built from the pattern (``Q``, ``K₀``, index maps) is read-only and shared; only the
        dense q₂ × q₂ array is written by a factorisation, so the copy gets its own."""
        new = copy.copy(self)
        new._S = np.zeros_like(self._S, order="F")
        new._L_S = None
        return new

    def describe(self) -> str:
        return "dense Schur complement"
