"""The one place that talks to scikit-sparse's CHOLMOD binding.

scikit-sparse 0.4 (``analyze`` → ``Factor.cholesky_inplace``) and 0.5 (``CholeskyFactor`` →
``.factorize``) differ; :class:`SparseCholesky` gives the rest of the package one small interface over
both: analyse once, refactor numerically many times, solve with ``L`` and read ``log|L|²``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .errors import NumericalError

try:  # scikit-sparse >= 0.5
    from sksparse.cholmod import CholeskyFactor as _CholeskyFactor
except ImportError:  # scikit-sparse 0.4
    _CholeskyFactor = None
from sksparse.cholmod import CholmodError

__all__ = ["SparseCholesky", "CHOLMOD_API"]

CHOLMOD_API = "0.5" if _CholeskyFactor is not None else "0.4"


class SparseCholesky:
    """``P (A + βI) Pᵀ = L Lᵀ`` for a fixed sparsity pattern of the symmetric ``A`` (lower triangle, CSC).

    Parameters
    ----------
    A_lower : scipy.sparse.csc_matrix
        Lower triangle of ``A``; only its pattern is used here.
    ordering : str
        CHOLMOD ordering: ``"default"``, ``"amd"``, ``"metis"``, ``"nesdis"``, ``"natural"`` or ``"best"``.
    """

    def __init__(self, A_lower: sp.csc_matrix, ordering: str = "default", mode: str = "auto"):
        self.n = A_lower.shape[0]
        try:
            if _CholeskyFactor is not None:
                self._factor = _CholeskyFactor(A_lower, lower=True, order=ordering, supernodal_mode=mode)
                self.perm = np.asarray(self._factor.get_perm(), dtype=np.int64)
            else:
                from sksparse.cholmod import analyze

                self._factor = analyze(A_lower, mode=mode, ordering_method=ordering)
                self.perm = np.asarray(self._factor.P(), dtype=np.int64)
        except CholmodError as err:  # e.g. a CHOLMOD built without METIS asked for ordering="metis"
            raise NumericalError(f"CHOLMOD's symbolic analysis ({ordering=}) failed: {err}") from None
        self.iperm = np.empty_like(self.perm)
        self.iperm[self.perm] = np.arange(self.n)

    def factorize(self, A_lower: sp.csc_matrix, beta: float = 0.0) -> None:
        """Numeric factorisation of ``A + βI`` reusing the symbolic analysis; raises NumericalError."""
        try:
            if _CholeskyFactor is not None:
                self._factor.factorize(A_lower, ldl=False, beta=beta)
            else:
                self._factor.cholesky_inplace(A_lower, beta=beta)
        except CholmodError as err:
            raise NumericalError(f"Sparse Cholesky factorisation failed: {err}") from None

    def logdet(self) -> float:
        """``log|A + βI| = log|L|²``."""
        return float(self._factor.logdet())

    def solve_L(self, b: np.ndarray) -> np.ndarray:
        """``L⁻¹ P b``."""
        pb = np.asfortranarray(b[self.perm])
        if _CholeskyFactor is not None:
            return self._factor.solve(pb, system="L")
        return self._factor.solve_L(pb, use_LDLt_decomposition=False)

    def solve_Lt(self, c: np.ndarray) -> np.ndarray:
        """``Pᵀ L⁻ᵀ c``."""
        c = np.asfortranarray(c)
        if _CholeskyFactor is not None:
            x = self._factor.solve(c, system="Lt")
        else:
            x = self._factor.solve_Lt(c, use_LDLt_decomposition=False)
        return x[self.iperm]

    def nnz(self) -> int:
        """Number of stored entries of ``L``."""
        if _CholeskyFactor is not None:
            return int(self._factor.nnz)
        return int(self._factor.L().nnz)
