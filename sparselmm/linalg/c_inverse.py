"""``C⁻¹`` and ``Ω = ZᵀV⁻¹Z`` for the exact derivatives, with the first random-effects term eliminated.

``C = ΛᵀGΛ + I`` (``G = ZᵀWZ``). When the first (largest) term is at least half of the random effects, its
block of ``C`` is block diagonal, so ``C⁻¹ = J + U S⁻¹ Uᵀ`` with ``J`` and ``U`` sparse and ``S`` the dense
q₂ × q₂ complement of the other terms, and ``Ω = N₀ − V S⁻¹ Vᵀ`` (:class:`LowRankOmega`): every product,
entry and trace :mod:`sparselmm.derivatives` needs is then sparse work plus q₂ × q₂ dense work. Otherwise
``C⁻¹``, ``H = C⁻¹ΛᵀG`` and ``Ω`` are dense q × q (:class:`DenseOmega`, :func:`c_inverse`).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as la
import scipy.sparse as sp
from scipy.linalg.blas import dgemm

from .thresholds import DENSE_ENOUGH_FILL

__all__ = [
    "DenseOmega",
    "DenseParts",
    "LowRankOmega",
    "c_inverse",
    "c_inverse_parts",
    "dense_enough",
    "gram",
    "lambda_inverse",
    "rowdot",
    "scale_columns",
    "scale_rows",
    "sparse_dense_product",
    "spd_inverse",
    "term_factor_inverses",
]


def c_inverse_parts(C: sp.csc_matrix, terms):
    """``C⁻¹ = J + U S⁻¹ Uᵀ`` by eliminating the first term's block-diagonal part, or None.

    With ``C = [[A, B], [Bᵀ, E]]``, ``A`` block diagonal (one k × k block per level of the first term) and
    the complement ``S = E − BᵀA⁻¹B`` dense: ``C⁻¹ = [[A⁻¹ + Y S⁻¹ Yᵀ, −Y S⁻¹], [−S⁻¹Yᵀ, S⁻¹]]`` with
    ``Y = A⁻¹B``, i.e. ``J = diag(A⁻¹, 0)`` (sparse) and ``U = [−Y; I]`` (sparse, q × q₂). None when the
    first term is not block diagonal in ``C`` or is smaller than the rest (nothing to gain).
    """
    q = C.shape[0]
    if not terms:
        return None
    t = terms[0]
    q1, k = t.q, t.k
    blocks = C[:q1, :q1].tocoo()
    if q1 == 0 or np.any(blocks.row // k != blocks.col // k) or q1 < q - q1:
        return None
    A = np.zeros((t.n_levels, k, k))
    A[blocks.row // k, blocks.row % k, blocks.col % k] = blocks.data
    Ainv = np.linalg.inv(A)
    rows = np.repeat(np.arange(q1), k)
    cols = ((np.arange(q1) // k * k)[:, None] + np.arange(k)[None, :]).ravel()
    J = sp.csr_matrix((Ainv.reshape(-1), (rows, cols)), shape=(q, q))
    B = C[:q1, q1:].tocsc()
    Y = (J[:q1, :q1] @ B).tocsr()  # A⁻¹B, sparse
    S = C[q1:, q1:].toarray() - gram(B, Y)
    Sinv = spd_inverse(0.5 * (S + S.T))
    U = sp.vstack([-Y, sp.identity(q - q1, format="csr")]).tocsr()
    return J, U, Sinv


def c_inverse(C: sp.csc_matrix, terms) -> np.ndarray:
    """Dense ``C⁻¹``, from :func:`c_inverse_parts` when the first term can be eliminated.

    On InstEval (q = 4,128, q₂ = 1,156) this replaces a 4,128² Cholesky and inverse by a 1,156² one plus
    sparse products.
    """
    parts = c_inverse_parts(C, terms)
    if parts is None:
        return spd_inverse(C.toarray()) if C.shape[0] else np.zeros((0, 0))
    J, U, Sinv = parts
    q, q2 = U.shape
    q1 = q - q2
    Y = -U[:q1]
    out = np.zeros((q, q))
    if q2:
        YS = np.asarray(Y @ Sinv)  # q1 × q2 dense
        out[q1:, q1:] = Sinv
        out[:q1, q1:] = -YS
        out[q1:, :q1] = -YS.T
        # Y S⁻¹ Yᵀ: sparse while Y is sparse. Measured on InstEval (Y 2.6 % full): the sparse product 0.27 s,
        # a two-thread dgemm 0.48 s
        out[:q1, :q1] = sparse_dense_product(Y, np.ascontiguousarray(YS.T))
    Jc = J.tocoo()
    out[Jc.row, Jc.col] += Jc.data
    return out


def sparse_dense_product(A: sp.spmatrix, B: np.ndarray) -> np.ndarray:
    """``A B`` for sparse ``A``: dense BLAS (scipy's, threaded when the machine is free; numpy's is held to
    one thread in evaluations) once ``A`` is :func:`dense_enough` — scipy's sparse-dense product runs at
    ~1e9 multiply-adds per second; on InstEval ``VᵀA_kV`` is 1,156² and full."""
    if dense_enough(A):
        return dgemm(1.0, A.toarray(), B)
    return np.asarray(A @ B)


def dense_enough(A: sp.spmatrix) -> bool:
    """More than ``DENSE_ENOUGH_FILL`` (10 %) full: BLAS on the dense array beats scipy's sparse products
    (~1e8 multiply-adds per second for sparse-sparse on full rows against ~1e10 for dgemm)."""
    return A.nnz > DENSE_ENOUGH_FILL * A.shape[0] * A.shape[1]


def gram(A: sp.spmatrix, B: sp.spmatrix) -> np.ndarray:
    """``AᵀB`` as a dense array (both sparse with the same rows); dgemm when either is dense enough."""
    if dense_enough(A) or dense_enough(B):
        return dgemm(1.0, A.toarray(), B.toarray(), trans_a=1)
    return np.asarray((A.T @ B).toarray())


def rowdot(A, B: np.ndarray) -> np.ndarray:
    """Row-wise dot products of ``A`` (sparse or dense) and dense ``B`` (same shape)."""
    if sp.issparse(A):
        return np.asarray(A.multiply(B).sum(axis=1)).ravel()
    return np.einsum("ij,ij->i", A, B)


def lambda_inverse(terms, T_inv: list[np.ndarray]) -> sp.csr_matrix:
    """``Λ⁻¹`` (block diagonal: ``T⁻¹`` for each level of each term)."""
    blocks = [sp.kron(sp.identity(t.n_levels, format="csr"), sp.csr_matrix(Ti)) for t, Ti in zip(terms, T_inv)]
    return sp.block_diag(blocks, format="csr")


class DenseParts:
    """Dense ``C⁻¹`` (None when ``H`` holds its storage), ``H``, ``Ω``, the term factors' inverses."""

    def __init__(self, Cinv, H, Omega, T_inv, Lt):
        self.Cinv, self.H, self.Omega, self.T_inv, self.Lt = Cinv, H, Omega, T_inv, Lt

    def cinv_times(self, B: np.ndarray) -> np.ndarray:
        """``C⁻¹ B``; with ``H = (I − C⁻¹)Λ⁻¹`` holding C⁻¹'s storage, ``C⁻¹ = I − HΛ``."""
        if self.Cinv is not None:
            return self.Cinv @ B
        return B - self.H @ np.asarray(self.Lt.T @ B)


class DenseOmega:
    """``Ω`` held as a dense q × q matrix (when no term could be eliminated)."""

    def __init__(self, Omega: np.ndarray):
        self.Omega = Omega

    def matmat(self, X: np.ndarray) -> np.ndarray:
        return self.Omega @ X

    def entries(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return self.Omega[rows, cols]

    def trace_products(self, mats: list[sp.spmatrix], rows: list[slice]) -> np.ndarray:
        """``tr(A_k Ω A_l Ω)`` for symmetric ``A_k`` supported on the term rows ``rows[k]``.

        Scalar terms' directions are diagonal, ``d_k`` on their term's rows, so the trace is
        ``Σ_{i∈k, j∈l} d_ki Ω_ij² d_lj``: one weighted pass over each block of Ω. Otherwise ``A_k Ω`` is
        formed on its term's rows (q_t × q) and the trace sums ``(A_kΩ)[:, rows_l] ∘ (A_lΩ)[:, rows_k]ᵀ``.
        """
        m = len(mats)
        out = np.empty((m, m))
        diag = [diagonal_on(A, r) for A, r in zip(mats, rows)]
        if all(d is not None for d in diag):
            for k in range(m):
                for l in range(k + 1):
                    blk = self.Omega[rows[k], rows[l]]
                    out[k, l] = out[l, k] = float(np.einsum("i,ij,ij,j->", diag[k], blk, blk, diag[l]))
        else:
            AO = [np.asarray(A[r] @ self.Omega) for A, r in zip(mats, rows)]
            for k in range(m):
                for l in range(k + 1):
                    out[k, l] = out[l, k] = float(np.einsum("ij,ji->", AO[k][:, rows[l]], AO[l][:, rows[k]]))
        return out


class LowRankOmega:
    """``Ω = N₀ − V S⁻¹ Vᵀ`` with ``N₀`` sparse (q × q), ``V`` q × q₂, ``S⁻¹`` dense (q₂ × q₂).

    What the first term's elimination leaves: every product, entry and trace below costs sparse work plus
    q₂ × q₂ dense work, never a q × q matrix (on InstEval q = 4,128 but q₂ = 1,156). ``V`` is held sparse
    when it is (scalar crossed terms: one entry per cell) and dense when it is not (maximal designs, where
    every subject meets most items: scipy's sparse-sparse products on a 90 %-full ``V`` took a minute on
    maximal_1e6 where BLAS takes seconds).
    """

    # dense rows of V S⁻¹ gathered at once when reading entries (8 B each)
    CHUNK_ENTRIES = 20_000_000

    def __init__(self, N0: sp.csr_matrix, V: sp.csr_matrix, Sinv: np.ndarray):
        self.N0, self.Sinv = N0, Sinv
        self.dense = dense_enough(V)
        if self.dense:
            self.V = np.ascontiguousarray(V.toarray())
            self.VS = dgemm(1.0, self.V, Sinv)  # V S⁻¹, q × q₂: no larger than V itself
            self.Vt = self.V.T
        else:
            self.V = V.tocsr()
            self.VS = None
            self.Vt = V.T.tocsr()

    def matmat(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        return np.asarray(self.N0 @ X) - np.asarray(self.V @ (self.Sinv @ np.asarray(self.Vt @ X)))

    def vs_rows(self, r: np.ndarray) -> np.ndarray:
        """Rows ``r`` of ``V S⁻¹`` (dense)."""
        if self.VS is not None:
            return self.VS[r]
        return np.asarray(self.V[r] @ self.Sinv)

    def entries(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``Ω[rows, cols]`` (paired index arrays), in chunks of rows of ``V S⁻¹``."""
        rows, cols = np.asarray(rows), np.asarray(cols)
        out = np.asarray(self.N0[rows, cols]).ravel().astype(float)
        q2 = self.Sinv.shape[0]
        if q2 == 0 or rows.size == 0:
            return out
        step = max(1, self.CHUNK_ENTRIES // q2)
        for s in range(0, rows.size, step):
            r, c = rows[s : s + step], cols[s : s + step]
            out[s : s + step] -= rowdot(self.V[c], self.vs_rows(r))
        return out

    def trace_products(self, mats: list[sp.spmatrix], rows: list[slice]) -> np.ndarray:
        """``tr(A_k Ω A_l Ω)`` for symmetric sparse ``A_k``.

        Expanding ``Ω = N₀ − V S⁻¹ Vᵀ``: ``tr(A_kN₀A_lN₀) − 2 Σ S⁻¹ ∘ (A_kV)ᵀN₀(A_lV) + tr(F_k F_l)`` with
        ``F_k = VᵀA_kV S⁻¹`` — sparse products and one q₂ × q₂ product per direction.
        """
        if self.dense:
            return self._trace_products_dense(mats)
        m = len(mats)
        AN = [(A @ self.N0).tocsr() for A in mats]
        AV = [(A @ self.V).tocsr() for A in mats]
        NAV = [(self.N0 @ x).tocsr() for x in AV]
        F = [sparse_dense_product(self.Vt @ x, self.Sinv) for x in AV]  # VᵀA_kV S⁻¹
        out = np.empty((m, m))
        for k in range(m):
            for l in range(k + 1):
                t1 = float(AN[k].multiply(AN[l].T).sum())
                X = (AV[k].T @ NAV[l]).tocoo()  # (A_kV)ᵀ N₀ (A_lV), q₂ × q₂ sparse
                t2 = float(X.data @ self.Sinv[X.row, X.col]) if X.nnz else 0.0
                t3 = float(np.einsum("ij,ji->", F[k], F[l]))
                out[k, l] = out[l, k] = t1 - 2.0 * t2 + t3
        return out

    def _trace_products_dense(self, mats: list[sp.spmatrix]) -> np.ndarray:
        """As :meth:`trace_products` with ``V`` dense: each direction works on its own rows only.

        ``A_k`` lives on the rows ``s_k`` (its term's): ``A_kV S⁻¹ = A_k[s_k, s_k] (VS⁻¹)[s_k]`` is a sparse
        product, ``F_k = V[s_k]ᵀ (A_kVS⁻¹)`` one |s_k| × q₂² gemm, and the middle term a row-wise sum
        ``Σ_i (A_kVS⁻¹)_i · (N₀A_lV)_i`` over the rows both touch.
        """
        m = len(mats)
        AN = [(A @ self.N0).tocsr() for A in mats]
        sup, AVS, NAV, nz, F = [], [], [], [], []
        for A in mats:
            A = A.tocsr()
            s = np.flatnonzero(np.diff(A.indptr))  # rows (= columns: A symmetric) where A lives
            As = A[s][:, s]
            AV = np.asarray(As @ self.V[s])  # (A V)[s]
            avs = np.asarray(As @ self.VS[s])  # (A V S⁻¹)[s]
            Ncols = self.N0[:, s].tocsr()
            r = np.flatnonzero(np.diff(Ncols.indptr))  # rows of N₀ A V
            sup.append(s)
            AVS.append(avs)
            NAV.append(np.asarray(Ncols[r] @ AV))
            nz.append(r)
            F.append(dgemm(1.0, self.V[s], avs, trans_a=1))  # VᵀA_kV S⁻¹
        out = np.empty((m, m))
        for k in range(m):
            for l in range(k + 1):
                t1 = float(AN[k].multiply(AN[l].T).sum())
                _, ik, il = np.intersect1d(sup[k], nz[l], assume_unique=True, return_indices=True)
                t2 = float(np.einsum("ij,ij->", AVS[k][ik], NAV[l][il])) if ik.size else 0.0
                t3 = float(np.einsum("ij,ji->", F[k], F[l]))
                out[k, l] = out[l, k] = t1 - 2.0 * t2 + t3
        return out


def diagonal_on(A: sp.spmatrix, rows: slice) -> np.ndarray | None:
    """The diagonal of ``A`` on ``rows`` when ``A`` is diagonal there (a scalar term's direction), else None."""
    Ar = A[rows].tocoo()
    if Ar.nnz == 0 or np.any(Ar.col - rows.start != Ar.row):
        return None
    d = np.zeros(rows.stop - rows.start)
    np.add.at(d, Ar.row, Ar.data)
    return d


def term_factor_inverses(terms, theta: np.ndarray, min_singular: float = 1e-3) -> list[np.ndarray] | None:
    """``T⁻¹`` of every term's factor when all have singular values ≥ ``min_singular``, else None.

    Below that, ``I − C⁻¹ ≈ ΛᵀGΛ`` loses digits to cancellation (relative error ≈ 1e-16 / s²), so the
    caller uses the products with ``G`` instead.
    """
    out = []
    for t in terms:
        T = t.factor(theta)
        if np.min(np.linalg.svd(T, compute_uv=False)) < min_singular:
            return None
        out.append(np.linalg.inv(T))
    return out


def scale_columns(A: np.ndarray, terms, T_inv: list[np.ndarray]) -> None:
    """``A ← A Λ⁻¹`` in place (Λ⁻¹ block diagonal: ``T⁻¹`` for each level of each term)."""
    for t, Ti in zip(terms, T_inv):
        cols = slice(t.offset, t.offset + t.q)
        if t.k == 1:
            A[:, cols] *= Ti[0, 0]
        else:
            block = A[:, cols].reshape(A.shape[0], t.n_levels, t.k)
            A[:, cols] = np.matmul(block, Ti).reshape(A.shape[0], t.q)


def scale_rows(A: np.ndarray, terms, T_inv: list[np.ndarray]) -> None:
    """``A ← Λ⁻ᵀ A`` in place."""
    for t, Ti in zip(terms, T_inv):
        rows = slice(t.offset, t.offset + t.q)
        if t.k == 1:
            A[rows] *= Ti[0, 0]
        else:
            block = A[rows].reshape(t.n_levels, t.k, A.shape[1])
            A[rows] = np.matmul(Ti.T, block).reshape(t.q, A.shape[1])


def spd_inverse(A: np.ndarray) -> np.ndarray:
    """Inverse of a symmetric positive definite matrix by LAPACK potrf/potri (full matrix returned)."""
    if A.shape[0] == 0:
        return np.zeros((0, 0))
    c, info = la.lapack.dpotrf(A, lower=1, clean=1)
    if info != 0:
        raise np.linalg.LinAlgError("matrix is not positive definite")
    inv, info = la.lapack.dpotri(c, lower=1)
    if info != 0:
        raise np.linalg.LinAlgError("inverse failed")
    upper = np.triu_indices(A.shape[0], 1)
    inv[upper] = inv.T[upper]
    return inv
