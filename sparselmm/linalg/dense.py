"""The factor of ``C = ΛᵀZᵀWZΛ + I`` in dense algebra, for models with few random effects.

For small ``q`` a dense Cholesky of the whole ``C`` costs less than any sparse bookkeeping, and its inverse
gives the exact gradient of ``log|C|`` for any terms (vector-valued, nested, crossed): with ``G = ZᵀWZ`` and
``E_i = ∂Λ/∂θ_i``, ``∂ log|C| / ∂θ_i = 2 tr(C⁻¹ΛᵀG E_i)``, a sum of entries of ``C⁻¹ΛᵀG`` over the entries of
``Λ`` that hold ``θ_i``. Which models take it is :data:`~sparselmm.linalg.thresholds.DENSE_MAX_Q`.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.linalg.lapack import dpotrf, dpotrs, dtrtrs

from ..errors import NumericalError

__all__ = ["DenseFactor", "lambda_pattern"]


def lambda_pattern(terms) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, columns and θ index of every stored entry of ``Λ`` (block diagonal, one k × k block per level)."""
    rows, cols, idx = [], [], []
    for t in terms:
        r, c = t.tril_indices()
        base = t.offset + np.arange(t.n_levels)[:, None] * t.k
        rows.append((base + r[None, :]).ravel())
        cols.append((base + c[None, :]).ravel())
        idx.append(np.tile(t.theta_offset + np.arange(t.n_theta), t.n_levels))
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(idx)


class DenseFactor:
    """``C = ΛᵀGΛ + I = L Lᵀ`` by LAPACK on the dense ``q × q`` matrix (:class:`~sparselmm.linalg.factor.Factor`).

    Parameters
    ----------
    terms : list of ReTerm
        The model's random-effects terms.
    ZtWZ : scipy.sparse.spmatrix
        ``ZᵀWZ`` (full symmetric).
    """

    has_logdet_gradient = True
    gradient_consumes_factor = False
    ordering = "dense"

    def __init__(self, terms, ZtWZ: sp.spmatrix):
        self.n = q = ZtWZ.shape[0]
        self.perm = self.iperm = np.arange(q)
        self.G = np.ascontiguousarray(ZtWZ.toarray(), dtype=float)
        self.rows, self.cols, self.idx = lambda_pattern(terms)
        self.n_theta = sum(t.n_theta for t in terms)
        self.scalar = all(t.k == 1 for t in terms)
        if self.scalar:  # Λ = diag(θ[lam_index])
            self.lam_index = np.empty(q, dtype=np.int64)
            self.lam_index[self.rows] = self.idx
        self.L = None
        self.LtG = None

    def form(self, theta: np.ndarray) -> np.ndarray:
        """``C = ΛᵀGΛ + I`` at θ, unfactored (C-ordered, symmetric); keeps ``Λ`` and ``ΛᵀG`` for the products
        below. :class:`sparselmm.criterion.DenseCriterion` factors it inside a larger matrix."""
        self.L = None
        theta = np.asarray(theta, dtype=float)
        with np.errstate(over="ignore", invalid="ignore"):
            if self.scalar:
                self.lam = lam = theta[self.lam_index]
                LtG = lam[:, None] * self.G
                A = LtG * lam[None, :]
            else:
                self.Lam = Lam = np.zeros((self.n, self.n))
                Lam[self.rows, self.cols] = theta[self.idx]
                LtG = Lam.T @ self.G
                A = LtG @ Lam
        if not np.isfinite(A.sum()):  # one reduction: an overflow anywhere makes the sum inf or nan
            raise NumericalError("ΛᵀZᵀWZΛ + I overflows at this theta.")
        A.ravel()[:: self.n + 1] += 1.0  # A is C-contiguous (G is): ravel is a view
        self.LtG = LtG
        return A

    def refactor(self, theta: np.ndarray, factors: list[np.ndarray] | None = None) -> None:
        """Form ``ΛᵀGΛ + I`` at θ and factor it (LAPACK ``potrf``); ``factors`` is not needed here."""
        A = self.form(theta)
        L, info = dpotrf(A.T, lower=1, clean=0, overwrite_a=1)  # symmetric: the transpose is F-ordered
        if info != 0:
            raise NumericalError("ΛᵀZᵀWZΛ + I is not positive definite at this theta.")
        self.L = L

    def Lambdat_times(self, V: np.ndarray) -> np.ndarray:
        """``ΛᵀV`` at the θ of the last :meth:`refactor`."""
        return self.lam[:, None] * V if self.scalar else self.Lam.T @ V

    def Lambda_times(self, v: np.ndarray) -> np.ndarray:
        """``Λv`` at the θ of the last :meth:`refactor`."""
        return self.lam * v if self.scalar else self.Lam @ v

    def Cinv_times(self, B: np.ndarray) -> np.ndarray:
        """``C⁻¹B`` (two triangular solves with ``L``)."""
        return dpotrs(self.L, B, lower=1)[0]

    def solve_L(self, b: np.ndarray) -> np.ndarray:
        """``L⁻¹ b``."""
        return dtrtrs(self.L, b, lower=1)[0]

    def solve_Lt(self, c: np.ndarray) -> np.ndarray:
        """``L⁻ᵀ c``."""
        return dtrtrs(self.L, c, lower=1, trans=1)[0]

    def logdet(self) -> float:
        """``log|C|``."""
        return 2.0 * float(np.sum(np.log(np.diagonal(self.L))))

    def logdet_gradient(self, theta: np.ndarray, terms) -> np.ndarray:
        """``∂ log|C| / ∂θ = 2 Σ (C⁻¹ΛᵀG)[col, row]`` over the entries of ``Λ`` holding each ``θ_i``."""
        M = self.Cinv_times(self.LtG)
        return 2.0 * np.bincount(self.idx, weights=M[self.cols, self.rows], minlength=self.n_theta)

    @property
    def holds_factor(self) -> bool:
        return self.L is not None

    def dense_flops(self) -> float:
        """``q³/3`` for the factorisation plus ``2q³`` for forming ``ΛᵀGΛ``."""
        return 7.0 / 3.0 * float(self.n) ** 3

    def workspace_copy(self) -> DenseFactor:
        """The same ``G`` and pattern (read-only, shared) with its own factor."""
        new = object.__new__(DenseFactor)
        new.__dict__.update(self.__dict__)
        new.L = new.LtG = None
        return new

    def with_gram(self, G: np.ndarray) -> DenseFactor:
        """A workspace with another dense ``G = ZᵀWZ`` (C-contiguous, same pattern of ``Λ``): the residual
        structures (:mod:`sparselmm.residual`) change ``W`` at every evaluation."""
        new = self.workspace_copy()
        new.G = np.ascontiguousarray(G, dtype=float)
        return new

    def nnz(self) -> int:
        """Stored entries of ``L`` (the lower triangle)."""
        return self.n * (self.n + 1) // 2

    def describe(self) -> str:
        return f"dense Cholesky (q = {self.n})"
