"""Satterthwaite's denominator degrees of freedom, as lmerTest 3.1 computes them.

For a contrast row ``l``, ``ν = 2 (lᵀΦl)² / (gᵀ A g)`` with ``Φ = vcov(β)``, ``g_i = lᵀ (∂Φ/∂ψ_i) l``
and ``A = 2 H⁺`` the asymptotic covariance of ``ψ = (θ, σ)``, ``H`` the Hessian of the deviance in ψ
(lmerTest's ``devfun_vp``; Moore–Penrose inverse over eigenvalues above 1e-8, with lmerTest's
warnings for negative or near-zero ones). lmerTest gets ``H`` and ``∂Φ/∂ψ`` by Richardson finite
differences; here they are exact (:class:`sparselmm.derivatives.DevianceDerivatives`).

A multi-row contrast ``L`` (lmerTest's ``contestMD``) is rotated by the eigenvectors of ``LΦLᵀ``,
keeping the ``q`` directions with eigenvalue above ``√ε`` times the largest; ``F = Σ t_m² / q`` and the
denominator df is ``2E/(E − q)`` with ``E = Σ ν_m/(ν_m − 2)`` — 2 if any ``ν_m ≤ 2``, the mean when all
``ν_m`` agree to 1e-8, ``ν_1`` when ``q = 1``.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import ConvergenceWarning, caller_stacklevel

__all__ = ["Satterthwaite"]

EIGEN_TOL = 1e-8  # lmerTest's as_lmerModLT(tol = 1e-8)
# lmerTest's warnings for the eigenvalues of the Hessian below -EIGEN_TOL and within EIGEN_TOL of zero
NEGATIVE = "Model failed to converge with {n} negative eigenvalue(s) of the Hessian in (theta, sigma): {values}"
NEAR_ZERO = (
    "Model may not have converged with {n} eigenvalue(s) of the Hessian in (theta, sigma) close to zero: {values}"
)


class Satterthwaite:
    """Satterthwaite ingredients of one fit: ``Φ``, ``∂Φ/∂ψ`` and ``A = vcov(ψ)``."""

    def __init__(self, derivs):
        self.vcov_beta = derivs.vcov_beta
        self.jacobian = derivs.vcov_beta_jacobian()
        hess = derivs.varpar_hessian()
        self.hessian = hess
        evals, evecs = np.linalg.eigh(hess)
        for which, message in ((evals < -EIGEN_TOL, NEGATIVE), (np.abs(evals) <= EIGEN_TOL, NEAR_ZERO)):
            if which.any():
                values = ", ".join(f"{v:.1e}" for v in evals[which])
                warnings.warn(
                    message.format(n=int(which.sum()), values=values),
                    ConvergenceWarning,
                    stacklevel=caller_stacklevel(),
                )
        pos = evals > EIGEN_TOL
        V = evecs[:, pos]
        self.vcov_varpar = 2.0 * (V / evals[pos]) @ V.T

    def t_df(self, l: np.ndarray) -> tuple[float, float]:
        """Variance ``lᵀΦl`` and Satterthwaite df of one contrast row."""
        var = float(l @ self.vcov_beta @ l)
        g = np.array([float(l @ J @ l) for J in self.jacobian])
        denom = float(g @ self.vcov_varpar @ g)
        return var, 2.0 * var**2 / denom if denom > 0 else np.inf

    def f_test(self, L: np.ndarray, beta: np.ndarray, eps: float = np.sqrt(np.finfo(float).eps)):
        """F statistic, numerator and denominator df of ``Lβ = 0`` (lmerTest's ``contestMD``).

        Returns ``(F, q, ddf)``; ``q = 0`` when ``L`` has no estimable direction.
        """
        VL = L @ self.vcov_beta @ L.T
        d, P = np.linalg.eigh(VL)
        order = np.argsort(d)[::-1]
        d, P = d[order], P[:, order]
        tol = max(eps * d[0], 0.0)
        pos = d > tol
        q = int(pos.sum())
        if q == 0:
            return np.nan, 0, np.nan
        PtL = P[:, :q].T @ L
        t2 = (PtL @ beta) ** 2 / d[:q]
        F = float(np.sum(t2) / q)
        nu = np.array([self.t_df(PtL[m])[1] for m in range(q)])
        return F, q, fstat_ddf(nu)


def fstat_ddf(nu: np.ndarray, tol: float = 1e-8) -> float:
    """lmerTest's ``get_Fstat_ddf``: the F denominator df from per-direction ``ν_m``."""
    nu = np.asarray(nu, dtype=float)
    if nu.size == 1:
        return float(nu[0])
    if np.all(np.abs(np.diff(nu)) < tol):
        return float(np.mean(nu))
    if np.any(nu <= 2):
        return 2.0
    E = float(np.sum(nu / (nu - 2)))
    return 2.0 * E / (E - nu.size)
