"""A Cholesky factor of ``ΛᵀGΛ + I`` that eliminates the first term's k × k blocks and factors the rest dense.

The "maximal" crossed model ``y ~ cond + (1 + cond | subj) + (1 + cond | item)`` has vector-valued terms, so
the all-scalar Schur factor of :mod:`sparselmm.linalg.schur` does not apply, and CHOLMOD spends most of each
evaluation on a fill-in that is essentially dense anyway (600 × 400 levels: 0.25–0.5 s per numeric
factorisation at q = 2,000). Here, with ``G = ZᵀWZ`` split at the first term (the one with most levels,
``m₁`` levels × ``k₁`` coefficients, ``G₁₁`` block diagonal because each row has one level):

* ``A = T₁ᵀ G₁₁ T₁ + I`` — one k₁ × k₁ block per level: batched Cholesky ``L_A`` and inverse;
* ``B = Λ₁ᵀ G₁₂ Λ₂`` (dense q₁ × q₂), ``W = L_A⁻¹ B``;
* ``S = Λ₂ᵀ G₂₂ Λ₂ + I − WᵀW`` — dense q₂ × q₂, LAPACK ``potrf``;

so ``L = [[L_A, 0], [Wᵀ, L_S]]`` (no permutation) and ``log|C| = 2 Σ log diag L_A + 2 Σ log diag L_S``. An
evaluation is a few BLAS-3 products of size q₁ q₂ (k₁ + q₂) — at 600 × 400 levels about 20 ms.

:meth:`BlockSchurCholesky.logdet_gradient` gives ``∂ log|C| / ∂θ = 2 tr(C⁻¹ΛᵀG E_k)`` (``E_k = ∂Λ/∂θ_k``),
which needs ``C⁻¹`` only on the block diagonal pattern of each term: from ``S⁻¹`` (``potri``),
``C⁻¹₁₂ = −L_A⁻ᵀ W S⁻¹`` and the diagonal blocks of ``C⁻¹₁₁ = A⁻¹ + L_A⁻ᵀ W S⁻¹ Wᵀ L_A⁻¹``. With it the
profiled deviance has an exact gradient for any lower-triangular k × k blocks (see
:meth:`sparselmm.deviance.ProfiledDeviance.gradient`).
"""

from __future__ import annotations

import copy

import numpy as np
import scipy.sparse as sp
from scipy.linalg.blas import dgemm, dsyrk
from scipy.linalg.lapack import dpotrf, dpotri, dtrtrs

from ..errors import NumericalError
from .factor import as_columns
from .small_blocks import bcholesky, bmatmul, btri_inv

__all__ = ["BlockSchurCholesky", "block_schur_applicable"]


def block_schur_applicable(terms, q: int) -> bool:
    """The first term is a plain one (``z`` columns, no ``Zt_block``). All-scalar crossed models go to the
    cheaper scalar factor of :mod:`sparselmm.linalg.schur` first; this one takes vector-valued terms and the
    scalar models that factor declines (e.g. two terms on the largest factor). Whether its dense blocks fit
    is the cost model's decision (:mod:`sparselmm.linalg.cost`)."""
    return bool(terms) and terms[0].Zt_block is None


def _left_blocks(X: np.ndarray, T: np.ndarray, m: int) -> np.ndarray:
    """``(I_m ⊗ Tᵀ) X`` for X with m·k rows."""
    k = T.shape[0]
    return bmatmul(T.T, X.reshape(m, k, -1)).reshape(m * k, -1)


class BlockSchurCholesky:
    """Factor of ``ΛᵀGΛ + I`` eliminating the first term's blocks analytically, the rest dense.

    Parameters
    ----------
    G : sparse (q × q)
        ``ZᵀWZ``, full symmetric.
    terms : list of ReTerm
        The model's terms in ``Z``'s order (the first is eliminated).
    """

    ordering = "schur"
    has_logdet_gradient = True
    gradient_consumes_factor = False  # logdet_gradient() inverts a copy of L_S

    def __init__(self, G: sp.spmatrix, terms):
        G = sp.csc_matrix(G)
        t1 = terms[0]
        self.terms = terms
        self.n = G.shape[0]
        self.q1, self.k1, self.m1 = t1.q, t1.k, t1.n_levels
        self.q2 = self.n - self.q1
        q1, k1, m1 = self.q1, self.k1, self.m1
        G11 = G[:q1, :q1].tocoo()
        if np.any(G11.row // k1 != G11.col // k1):
            raise ValueError("the first term's block of ZᵀWZ is not block diagonal")
        self._G11 = np.zeros((m1, k1, k1))
        self._G11[G11.row // k1, G11.row % k1, G11.col % k1] = G11.data
        self._G12 = G[:q1, q1:].toarray()
        self._G22 = G[q1:, q1:].toarray()
        self.perm = np.arange(self.n)
        self.iperm = self.perm
        self._L_S = None

    # ---- Λ₂ products ------------------------------------------------------------------------------
    def _right_lambda2(self, X: np.ndarray, factors) -> np.ndarray:
        """``X Λ₂`` (Λ₂ block diagonal over the terms after the first)."""
        out = np.empty_like(X)
        for t, T in zip(self.terms[1:], factors[1:]):
            cols = slice(t.offset - self.q1, t.offset - self.q1 + t.q)
            if t.k == 1:
                out[:, cols] = X[:, cols] * T[0, 0]
            else:
                out[:, cols] = bmatmul(X[:, cols].reshape(X.shape[0], t.n_levels, t.k), T).reshape(X.shape[0], t.q)
        return out

    def _left_lambda2t(self, X: np.ndarray, factors) -> np.ndarray:
        """``Λ₂ᵀ X``."""
        out = np.empty_like(X)
        for t, T in zip(self.terms[1:], factors[1:]):
            rows = slice(t.offset - self.q1, t.offset - self.q1 + t.q)
            out[rows] = X[rows] * T[0, 0] if t.k == 1 else _left_blocks(X[rows], T, t.n_levels)
        return out

    # ---- the factor ---------------------------------------------------------------------------------
    def refactor(self, theta: np.ndarray, factors) -> None:
        """The :class:`sparselmm.linalg.factor.Factor` interface: :meth:`factorize` (θ is not needed here)."""
        self.factorize(factors)

    def factorize(self, factors) -> None:
        """Numeric factorisation for the terms' k × k factors ``T``."""
        T1 = factors[0]
        with np.errstate(over="ignore", invalid="ignore"):
            A = bmatmul(bmatmul(T1.T, self._G11), T1)
            A[:, np.arange(self.k1), np.arange(self.k1)] += 1.0
            try:
                LA = bcholesky(A)
            except np.linalg.LinAlgError:
                raise NumericalError("A first-term block of ΛᵀZᵀWZΛ + I is not positive definite.") from None
            LAinv = btri_inv(LA)
            W = np.empty((self.q1, self.q2))
            if self.q2:
                B = self._right_lambda2(_left_blocks(self._G12, T1, self.m1), factors)
                W = bmatmul(LAinv, B.reshape(self.m1, self.k1, self.q2)).reshape(self.q1, self.q2)
                S = self._left_lambda2t(self._right_lambda2(self._G22, factors), factors)
                # WᵀW through scipy's BLAS (the library LAPACK uses; numpy's is held to one thread); its lower
                # triangle only, which is all potrf(lower) reads
                S -= dsyrk(1.0, W, trans=1, lower=1)
                S[np.diag_indices_from(S)] += 1.0
            else:
                S = np.zeros((0, 0))
        if not (np.all(np.isfinite(W)) and np.all(np.isfinite(S))):
            raise NumericalError("ΛᵀZᵀWZΛ + I overflows at this theta.")
        if self.q2:
            L, info = dpotrf(S, lower=1, clean=1, overwrite_a=1)
            if info != 0:
                raise NumericalError("The Schur complement is not positive definite at this theta.")
        else:
            L = S
        self._LA, self._LAinv, self._W, self._L_S, self._factors = LA, LAinv, W, L, factors

    def _check_factor(self):
        if self._L_S is None:
            raise NumericalError("No current factor: call factorize() first.")

    def logdet(self) -> float:
        """``log|ΛᵀGΛ + I| = log|L|²``."""
        self._check_factor()
        la = np.log(np.diagonal(self._LA, axis1=1, axis2=2)).sum()
        return float(2.0 * (la + np.sum(np.log(np.diagonal(self._L_S)))))

    def solve_L(self, b: np.ndarray) -> np.ndarray:
        """``L⁻¹ b`` (no permutation)."""
        self._check_factor()
        b2d, vec = as_columns(b, self.n)
        x1 = bmatmul(self._LAinv, b2d[: self.q1].reshape(self.m1, self.k1, -1)).reshape(self.q1, -1)
        out = [x1]
        if self.q2:
            x2, _ = dtrtrs(self._L_S, b2d[self.q1 :] - self._W.T @ x1, lower=1)
            out.append(x2)
        out = np.vstack(out)
        return out.ravel() if vec else out

    def solve_Lt(self, c: np.ndarray) -> np.ndarray:
        """``L⁻ᵀ c`` (no permutation)."""
        self._check_factor()
        c2d, vec = as_columns(c, self.n)
        rhs1 = c2d[: self.q1]
        out2 = np.zeros((0, c2d.shape[1]))
        if self.q2:
            out2, _ = dtrtrs(self._L_S, c2d[self.q1 :], lower=1, trans=1)
            rhs1 = rhs1 - self._W @ out2
        LAinvT = self._LAinv.transpose(0, 2, 1)
        x1 = bmatmul(LAinvT, rhs1.reshape(self.m1, self.k1, -1)).reshape(self.q1, -1)
        out = np.vstack([x1, out2])
        return out.ravel() if vec else out

    def logdet_gradient(self, theta=None, terms=None) -> np.ndarray:
        """``∂ log|ΛᵀGΛ + I| / ∂θ`` at the current factor (θ in lme4's order over all terms; the arguments
        are those of the scalar Schur factor's method and are not needed here)."""
        self._check_factor()
        factors, terms = self._factors, self.terms
        T1, m1, k1, q1, q2 = factors[0], self.m1, self.k1, self.q1, self.q2
        LAinvT = self._LAinv.transpose(0, 2, 1)
        Ainv = bmatmul(LAinvT, self._LAinv)  # A⁻¹ per level
        C11d = Ainv  # diagonal blocks of C⁻¹₁₁, completed below
        if q2:
            Sinv, info = dpotri(self._L_S.copy(order="F"), lower=1)
            if info != 0:
                raise NumericalError("The Schur complement could not be inverted at this theta.")
            Sinv = np.tril(Sinv) + np.tril(Sinv, -1).T
            V = bmatmul(LAinvT, self._W.reshape(m1, k1, q2))  # L_A⁻ᵀ W = A⁻¹B, (m1, k1, q2)
            C12 = dgemm(-1.0, V.reshape(q1, q2), Sinv)  # C⁻¹₁₂ (scipy's BLAS, threaded)
            C11d = Ainv + bmatmul(-C12.reshape(m1, k1, q2), V.transpose(0, 2, 1))
        # first term: H = C⁻¹ΛᵀG on its diagonal blocks = C⁻¹₁₁[g,g] T₁ᵀG₁₁[g] + C⁻¹₁₂[g,:] (G₁₂Λ₂)[g,:]ᵀ
        Hd1 = bmatmul(C11d, bmatmul(T1.T, self._G11))
        if q2:
            R1 = self._right_lambda2(self._G12, factors)
            Hd1 += bmatmul(C12.reshape(m1, k1, q2), R1.reshape(m1, k1, q2).transpose(0, 2, 1))
        grad = []
        r_idx, c_idx = terms[0].tril_indices()
        grad.extend(2.0 * Hd1[:, c_idx, r_idx].sum(axis=0))
        if q2:
            # other terms: H[(h,c),(h,r)] = C⁻¹₂₁[(h,c),:] (Λ₁ᵀG₁₂)[:,(h,r)] + S⁻¹[(h,c),:] (Λ₂ᵀG₂₂)[:,(h,r)]
            R2 = _left_blocks(self._G12, T1, m1)  # Λ₁ᵀG₁₂
            L2G22 = self._left_lambda2t(self._G22, factors)
            for t in terms[1:]:
                base = t.offset - q1 + np.arange(t.n_levels) * t.k
                for r, c in zip(*t.tril_indices()):
                    ic, ir = base + c, base + r
                    val = np.einsum("ji,ji->", C12[:, ic], R2[:, ir]) + np.einsum("ij,ji->", Sinv[ic], L2G22[:, ir])
                    grad.append(2.0 * val)
        return np.asarray(grad, dtype=float)

    def nnz(self) -> int:
        """Stored entries of ``L``: the first term's blocks, ``W`` and the dense lower triangle of ``L_S``."""
        return self.m1 * self.k1 * (self.k1 + 1) // 2 + self.q1 * self.q2 + self.q2 * (self.q2 + 1) // 2

    @property
    def holds_factor(self) -> bool:
        """A numeric factor is present."""
        return self._L_S is not None

    def dense_flops(self) -> float:
        """Dense work of one factorisation: ``q₁q₂²`` for ``WᵀW`` and ``q₂³`` for the complement."""
        return float(self.q1) * self.q2**2 + float(self.q2) ** 3

    def workspace_copy(self) -> BlockSchurCholesky:
        """``G``'s blocks are read-only and every factorisation allocates its own arrays: a shallow copy
        without the current factor."""
        new = copy.copy(self)
        new._L_S = None
        return new

    def describe(self) -> str:
        return "block Schur complement"
