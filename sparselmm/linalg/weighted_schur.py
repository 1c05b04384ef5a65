"""A dense-Schur factor of ``ΛᵀZᵀWZΛ + I`` for all-scalar GLMMs whose weights change every PIRLS iteration.

The elimination is :mod:`sparselmm.linalg.schur`'s (which see for the algebra; :class:`ScalarElimination`
holds ``L = [[D^½, 0], [B D^-½, L_S]]``, its solves and log-determinant): the first term (most levels, one
level per row) has a diagonal block, ``D = t² diag(G₁₁) + I`` with ``G = ZᵀWZ``, and the other terms' Schur
complement ``S = diag(λ₂)(G₂₂ − G₂₁ diag(t²/D) G₁₂)diag(λ₂) + I`` is dense (q₂ × q₂).

What differs is how ``K = G₂₂ − G₂₁ diag(v) G₁₂`` is formed. :class:`~sparselmm.linalg.schur.SchurCholesky`
precomputes the products ``G_is G_js`` once for its fixed ``G``; here ``G`` changes with ``W`` at every
PIRLS iteration, so the products are formed per factorisation — one ``bincount`` over the stored pairs of
``G₂₁`` entries sharing a level, or one sparse product where there are too many pairs to store — on
values read from the fixed pattern of ``ZᵀWZ`` (PirlsModel's ``M_lower``).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.linalg.lapack import dpotri

from ..errors import NumericalError
from .schur import ScalarElimination
from .thresholds import WEIGHTED_MAX_STORED_PAIRS

__all__ = ["WeightedSchur"]


class WeightedSchur(ScalarElimination):
    """Factor of ``diag(λ) G diag(λ) + I`` from the values of ``G``'s lower triangle on a fixed pattern.

    Parameters
    ----------
    row, col : ndarray
        Row and column of each stored entry of the lower triangle of ``G`` (in its CSC order).
    q : int
    q1 : int
        Columns of the first term; ``G[:q1, :q1]`` must be diagonal (ValueError otherwise).
    """

    def __init__(self, row: np.ndarray, col: np.ndarray, q: int, q1: int):
        self._layout(q, q1)
        in11 = (col < q1) & (row < q1)
        if np.any(row[in11] != col[in11]):
            raise ValueError("the first block of ZᵀWZ is not diagonal")
        self.i11 = np.flatnonzero(in11)
        if self.i11.size != q1 or np.any(col[self.i11] != np.arange(q1)):
            raise ValueError("a level of the first term has no rows")
        self.i21 = np.flatnonzero((col < q1) & (row >= q1))  # CSC order: by level s, rows sorted
        self.r21 = (row[self.i21] - q1).astype(np.int32)
        self.indptr21 = np.concatenate([[0], np.cumsum(np.bincount(col[self.i21], minlength=q1))])
        self.i22 = np.flatnonzero(col >= q1)
        q2 = self.q2
        r22, c22 = row[self.i22] - q1, col[self.i22] - q1
        self.t22 = (r22 + c22 * q2).astype(np.int64)  # Fortran position in the lower triangle
        # every pair (e1 >= e2) of G₂₁ entries sharing a level s, by level: the lower triangle of
        # G₂₁ diag(v) G₁₂ is one bincount of G_e1 G_e2 v_s (rows within a level are sorted, so r(e1) >= r(e2))
        counts = np.diff(self.indptr21)
        self.n_pairs = int(np.sum(counts * (counts + 1) // 2))
        self.pairs = None
        if self.n_pairs <= WEIGHTED_MAX_STORED_PAIRS:
            e1s, e2s, ss = [], [], []
            for c in np.unique(counts):
                if c == 0:
                    continue
                levels = np.flatnonzero(counts == c)
                ii, jj = np.tril_indices(c)
                start = self.indptr21[levels][:, None]
                e1s.append((start + ii[None, :]).ravel())
                e2s.append((start + jj[None, :]).ravel())
                ss.append(np.repeat(levels, ii.size))
            e1, e2, lev = (np.concatenate(x).astype(np.int32) for x in (e1s, e2s, ss))
            target = self.r21[e1].astype(np.int64) + self.r21[e2].astype(np.int64) * q2
            self.pairs = (e1, e2, lev, target)
        # G₂₁ as CSR (for B x) from its CSC values: a fixed permutation
        csc = sp.csc_matrix((np.arange(self.i21.size, dtype=float), self.r21, self.indptr21), shape=(q2, q1))
        csr = csc.tocsr()
        self._csr_perm = np.rint(csr.data).astype(np.int64)
        self._csr_ind, self._csr_ptr = csr.indices, csr.indptr
        self._csc_ind, self._csc_ptr = self.r21, self.indptr21
        self._nnz21 = self.i21.size

    def factorize(self, gdata: np.ndarray, lam: np.ndarray) -> None:
        """Numeric factorisation for the values ``gdata`` of ``G`` (lower triangle) and ``Λ = diag(lam)``."""
        q1, q2 = self.q1, self.q2
        t = float(lam[0])
        lam2 = np.asarray(lam[q1:], dtype=float)
        t2 = t * t
        g = gdata[self.i11]
        d = t2 * g + 1.0
        g21 = gdata[self.i21]
        v = t2 / d
        if self.pairs is not None:
            e1, e2, lev, target = self.pairs
            K = -np.bincount(target, weights=g21[e1] * g21[e2] * v[lev], minlength=q2 * q2)
        else:
            G21 = sp.csc_matrix((g21, self.r21, self.indptr21), shape=(q2, q1))
            Bs = G21 @ sp.diags(np.sqrt(v))
            K = -np.asfortranarray(np.tril((Bs @ Bs.T).toarray())).reshape(-1, order="F")
        K[self.t22] += gdata[self.i22]
        K = K.reshape(q2, q2, order="F")
        S = K * lam2[:, None] * lam2[None, :]  # Fortran order; only the lower triangle is used
        S[np.diag_indices(q2)] += 1.0
        if not np.all(np.isfinite(S)):
            raise NumericalError("Λ ZᵀWZ Λ + I overflows at this theta.")
        self._factor_complement(S, t, lam2, d)  # K, and so S, is zero above the diagonal
        self._G21 = sp.csr_matrix((g21[self._csr_perm], self._csr_ind, self._csr_ptr), shape=(q2, q1))
        self._G12 = sp.csr_matrix((g21, self._csc_ind, self._csc_ptr), shape=(q1, q2))  # CSC of G₂₁ = CSR of G₁₂

    def inverse_on_pattern(self) -> np.ndarray:
        """The entries of ``C⁻¹`` (current factor) where ``G``'s lower triangle is stored, in the order of the
        values :meth:`factorize` took.

        With ``C = [[D, Bᵀ], [B, E]]``, ``S = E − B D⁻¹ Bᵀ`` and ``Y = D⁻¹Bᵀ`` (q₁ × q₂, on ``G₁₂``'s pattern):
        ``C⁻¹₂₂ = S⁻¹``, ``C⁻¹₁₂ = −Y S⁻¹`` and ``diag C⁻¹₁₁ = 1/D + diag(Y S⁻¹ Yᵀ)``. ``Y S⁻¹`` is needed on
        ``G₁₂``'s pattern only: one sum over the stored pairs of entries sharing a level (the pairs that form
        ``K``), or where those are not stored one sparse-dense product. One ``potri``, never the q × q
        inverse; the exact gradient of glmer's Laplace criterion (:mod:`sparselmm.glmm.gradient`) needs these.
        """
        self._check_factor()
        q1, q2 = self.q1, self.q2
        Sinv, info = dpotri(self._L_S, lower=1)
        if info != 0:
            raise NumericalError("The Schur complement could not be inverted.")
        Sinv = np.tril(Sinv) + np.tril(Sinv, -1).T
        nnz = self._nnz21
        level = np.repeat(np.arange(q1), np.diff(self.indptr21))
        y = (self._t / self._d)[level] * self._G12.data * self._lam2[self.r21]  # Y on G₁₂'s pattern
        if self.pairs is not None:
            e1, e2, _lev, target = self.pairs
            sv = Sinv.ravel(order="F")[target]  # S⁻¹ at the rows of the two entries
            off = e1 != e2
            ys = np.bincount(e1, weights=y[e2] * sv, minlength=nnz)
            ys += np.bincount(e2[off], weights=(y[e1] * sv)[off], minlength=nnz)
        else:
            Y = sp.csr_matrix((y, self.r21, self.indptr21), shape=(q1, q2))
            ys = np.asarray(Y @ Sinv)[level, self.r21]
        out = np.empty(self.i11.size + nnz + self.i22.size)
        out[self.i11] = 1.0 / self._d + np.bincount(level, weights=y * ys, minlength=q1)
        out[self.i21] = -ys
        out[self.i22] = Sinv.ravel(order="F")[self.t22]
        return out

    def _B_Dinv_times(self, x: np.ndarray) -> np.ndarray:
        # t·x/D, where the scalar factor takes t·(x/D): the last bit differs, and PIRLS and BOBYQA carry a
        # last-bit change in the solves to 3e-7 in θ̂ and 5e-5 in the standard errors of glmer's crossed fits
        return self._lam2[:, None] * (self._G21 @ (self._t * x / self._d[:, None]))
