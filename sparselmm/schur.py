"""A Cholesky factor of ``A + I`` that eliminates the first random-effects term analytically.

When the first term (the one with most levels) is scalar, its block of ``A = Λᵀ ZᵀWZ Λ`` is diagonal
(each row belongs to one level). Eliminating it leaves the Schur complement
``S = C − B D⁻¹ Bᵀ`` of the remaining terms, which for crossed designs is nearly dense; it is formed with
one sparse product and factored by LAPACK's ``potrf`` (the layout MixedModels.jl uses). This avoids
CHOLMOD's many small supernodal updates, which dominate on designs such as 1e4 users × 1e3 items.
:class:`ProfiledDeviance` keeps this factor only where a timed factorisation shows it is faster.

The factor is ``L = [[D^½, 0], [B D^-½, L_S]]`` with no permutation, and offers the same methods as
:class:`~sparselmm._cholmod.SparseCholesky`.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.linalg.lapack import dpotrf, dtrtrs

from .errors import NumericalError

__all__ = ["NotDiagonalError", "SchurCholesky", "schur_applicable"]

MAX_DENSE = 4000  # largest dense Schur complement tried (4000² doubles = 128 MB)


class NotDiagonalError(ValueError):
    """The first term's block of ``A`` has off-diagonal entries: the Schur factor does not apply."""


def schur_applicable(terms, q: int) -> bool:
    """The first term is scalar and what remains is small enough to hold dense.

    (Its block of ``A`` must also be diagonal — one level per row — which :class:`SchurCholesky`
    checks on the pattern; a variance component given as ``Zt_block`` can pass or fail that check.)
    """
    if not terms or terms[0].k != 1:
        return False
    q1 = terms[0].q
    return 0 < q - q1 <= MAX_DENSE and q1 >= q - q1


class SchurCholesky:
    """``A + βI = L Lᵀ`` by eliminating the first ``q1`` (diagonal) rows, then a dense Cholesky.

    Parameters
    ----------
    A_lower : scipy.sparse.csc_matrix
        Lower triangle of ``A`` with its fixed pattern; ``A[:q1, :q1]`` must be diagonal.
    q1 : int
        Number of columns of the first term.
    """

    def __init__(self, A_lower: sp.csc_matrix, q1: int):
        self.n = A_lower.shape[0]
        self.q1, self.q2 = q1, self.n - q1
        coo = A_lower.tocoo()
        rows, cols = coo.row, coo.col
        pos = np.arange(rows.size)
        top = cols < q1
        if np.any(top & (rows < q1) & (rows != cols)):
            raise NotDiagonalError("the first block of A is not diagonal")
        self.perm = np.arange(self.n)
        self.iperm = self.perm
        # where each piece's values sit in A.data (the pattern never changes)
        diag = top & (rows == cols)
        self._d_pos = np.empty(q1, dtype=np.int64)
        self._d_pos[rows[diag]] = pos[diag]
        off = top & (rows >= q1)
        b_rows, b_cols, b_pos = rows[off] - q1, cols[off], pos[off]
        order = np.lexsort((b_cols, b_rows))  # CSR order: by row, then column
        self._B_pos = b_pos[order]
        indptr = np.concatenate([[0], np.cumsum(np.bincount(b_rows, minlength=self.q2))])
        self._B = sp.csr_matrix((np.zeros(order.size), b_cols[order], indptr), shape=(self.q2, q1))
        low = ~top
        self._C_pos = pos[low]
        self._C_idx = ((rows[low] - q1), (cols[low] - q1))
        self._d = np.ones(q1)
        self._L_S = np.zeros((self.q2, self.q2), order="F")

    def factorize(self, A_lower: sp.csc_matrix, beta: float = 0.0) -> None:
        """Numeric factorisation of ``A + βI``; raises NumericalError when it is not positive definite."""
        data = A_lower.data
        d = data[self._d_pos] + beta
        if not np.all(d > 0):
            raise NumericalError("The first block of A + I is not positive definite.")
        self._d = d
        self._B.data[:] = data[self._B_pos]
        Bs = self._B @ sp.diags(1.0 / np.sqrt(d))
        S = -(Bs @ Bs.T).toarray()
        S[self._C_idx] += data[self._C_pos]
        S[np.diag_indices_from(S)] += beta
        L, info = dpotrf(S, lower=1, clean=1, overwrite_a=1)
        if info != 0:
            raise NumericalError("The Schur complement is not positive definite at this theta.")
        self._L_S = L

    def logdet(self) -> float:
        """``log|A + βI| = log|L|²``."""
        return float(np.sum(np.log(self._d)) + 2.0 * np.sum(np.log(np.diagonal(self._L_S))))

    def solve_L(self, b: np.ndarray) -> np.ndarray:
        """``L⁻¹ b`` (no permutation)."""
        b = np.asarray(b, dtype=float)
        vec = b.ndim == 1
        b2d = b.reshape(self.n, -1)
        sd = np.sqrt(self._d)[:, None]
        x1 = b2d[: self.q1] / sd
        rhs = b2d[self.q1 :] - self._B @ (b2d[: self.q1] / self._d[:, None])
        x2, _ = dtrtrs(self._L_S, rhs, lower=1)
        out = np.vstack([x1, x2])
        return out.ravel() if vec else out

    def solve_Lt(self, c: np.ndarray) -> np.ndarray:
        """``L⁻ᵀ c`` (no permutation)."""
        c = np.asarray(c, dtype=float)
        vec = c.ndim == 1
        c2d = c.reshape(self.n, -1)
        x2, _ = dtrtrs(self._L_S, c2d[self.q1 :], lower=1, trans=1)
        sd = np.sqrt(self._d)[:, None]
        x1 = (c2d[: self.q1] - (self._B.T @ x2) / sd) / sd
        out = np.vstack([x1, x2])
        return out.ravel() if vec else out

    def nnz(self) -> int:
        """Stored entries of ``L``: the diagonal, ``B`` and the dense lower triangle of ``L_S``."""
        return self.q1 + self._B.nnz + self.q2 * (self.q2 + 1) // 2
