"""The one place that talks to scikit-sparse's CHOLMOD binding.

scikit-sparse 0.4 (``analyze`` → ``Factor.cholesky_inplace``) and 0.5 (``CholeskyFactor`` →
``.factorize``) differ; :class:`SparseCholesky` gives the rest of the package one small interface over
both: analyse once, refactor numerically many times, solve with ``L`` and read ``log|L|²``.

Errors: 0.4 reports bad input and failed factorisations as ``CholmodError``; 0.5 raises ``CholmodError``
for CHOLMOD's own failures but plain ``ValueError`` for input it validates itself (a non-square or
mis-shaped matrix). Both become :class:`~sparselmm.NumericalError` here, so callers see one error class
whichever scikit-sparse is installed.

Which scikit-sparse: 0.4.12-0.4.16 build against SuiteSparse 5 (Debian 12) and 7 (Debian 13, Ubuntu
24.04) alike; 0.5 needs SuiteSparse >= 7 and has no wheels, so the package requires ``<0.5`` (checked on
fresh Debian 12 and 13 systems, see the README's development section). 0.5 installed by hand works too.
"""

from __future__ import annotations

import copy

import numpy as np
import scipy.sparse as sp

from ..errors import NumericalError

try:  # scikit-sparse >= 0.5
    from sksparse.cholmod import CholeskyFactor as _CholeskyFactor
except ImportError:  # scikit-sparse 0.4
    _CholeskyFactor = None
from sksparse.cholmod import CholmodError

__all__ = ["SparseCholesky", "CHOLMOD_API"]

# what either API raises for a matrix it cannot analyse or factor (ValueError: 0.5's input validation)
_FAILURES = (CholmodError, ValueError)

CHOLMOD_API = "0.5" if _CholeskyFactor is not None else "0.4"


class SparseCholesky:
    """``P (A + βI) Pᵀ = L Lᵀ`` for a fixed sparsity pattern of the symmetric ``A`` (lower triangle, CSC).

    Parameters
    ----------
    A_lower : scipy.sparse.csc_matrix
        Lower triangle of ``A``; only its pattern is used here.
    ordering : str
        CHOLMOD ordering: ``"default"``, ``"amd"``, ``"metis"``, ``"nesdis"``, ``"natural"`` or ``"best"``.
    mode : str
        ``"simplicial"``, ``"supernodal"`` or ``"auto"`` (CHOLMOD's rule: supernodal from 40 flops per entry
        of ``L``; :func:`sparselmm.linalg.factor.analyse_cholmod` chooses by a measured rule instead).
    """

    def __init__(self, A_lower: sp.csc_matrix, ordering: str = "default", mode: str = "auto"):
        self.n = A_lower.shape[0]
        self.ordering, self.mode = ordering, mode
        if A_lower.ndim != 2 or A_lower.shape[0] != A_lower.shape[1]:
            raise NumericalError(
                f"CHOLMOD's symbolic analysis ({ordering=}) failed: the matrix is {A_lower.shape[0]} x "
                f"{A_lower.shape[1]}, not square."
            )
        try:
            if _CholeskyFactor is not None:
                self._factor = _CholeskyFactor(A_lower, lower=True, order=ordering, supernodal_mode=mode)
                self.perm = np.asarray(self._factor.get_perm(), dtype=np.int64)
            else:
                from sksparse.cholmod import analyze

                self._factor = analyze(A_lower, mode=mode, ordering_method=ordering)
                self.perm = np.asarray(self._factor.P(), dtype=np.int64)
        except _FAILURES as err:  # e.g. a CHOLMOD built without METIS asked for ordering="metis"
            raise NumericalError(f"CHOLMOD's symbolic analysis ({ordering=}) failed: {err}") from None
        self.iperm = np.empty_like(self.perm)
        self.iperm[self.perm] = np.arange(self.n)

    def factorize(self, A_lower: sp.csc_matrix, beta: float = 0.0) -> None:
        """Numeric factorisation of ``A + βI`` reusing the symbolic analysis; raises NumericalError."""
        if A_lower.shape != (self.n, self.n):
            raise NumericalError(
                f"Sparse Cholesky factorisation failed: the matrix is {A_lower.shape[0]} x {A_lower.shape[1]}, "
                f"but the analysis was for {self.n} x {self.n}."
            )
        try:
            if _CholeskyFactor is not None:
                self._factor.factorize(A_lower, ldl=False, beta=beta)
            else:
                self._factor.cholesky_inplace(A_lower, beta=beta)
        except _FAILURES as err:
            raise NumericalError(f"Sparse Cholesky factorisation failed: {err}") from None

    def logdet(self) -> float:
        """``log|A + βI| = log|L|²``."""
        return float(self._factor.logdet())

    def solve_L(self, b: np.ndarray) -> np.ndarray:
        """``L⁻¹ P b``."""
        b = np.asarray(b)
        # gather the rows of the transpose: one copy straight into the Fortran order CHOLMOD reads (b[perm]
        # and then asfortranarray copied twice: 0.12 of 0.23 ms per solve on the nested benchmark, q = 11,000)
        pb = b[self.perm] if b.ndim == 1 else b.T[:, self.perm].T
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

    def column_counts(self) -> np.ndarray | None:
        """Stored entries in each column of ``L`` (after a numeric factorisation; None if the binding
        cannot show ``L``). scikit-sparse 0.4 exposes no symbolic counts, so ``L`` is copied once."""
        L = getattr(self._factor, "L", None)
        try:
            L = L() if callable(L) else L
        except _FAILURES:
            return None
        if L is None or not sp.issparse(L):
            return None
        return np.diff(sp.csc_matrix(L).indptr)

    def copy_analysis(self, A_lower: sp.csc_matrix) -> SparseCholesky:
        """A factor with this symbolic analysis (permutation, mode) and its own numeric workspace."""
        new = copy.copy(self)
        if hasattr(self._factor, "copy"):  # scikit-sparse 0.4: copies the analysis, no re-ordering
            new._factor = self._factor.copy()
            return new
        # another binding: analyse again (the ordering is deterministic for the same pattern)
        return SparseCholesky(A_lower, ordering=self.ordering, mode=self.mode)
