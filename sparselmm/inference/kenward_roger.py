"""Kenward–Roger's adjusted covariance of β̂ and denominator df, as pbkrtest 0.5 computes them.

With ``Σ = Σ_r γ_r G_r`` in pbkrtest's linear parametrisation γ = (each term's covariance elements, σ²),
``P_r = −XᵀΣ⁻¹G_rΣ⁻¹X``, ``Q_rs = XᵀΣ⁻¹G_rΣ⁻¹G_sΣ⁻¹X`` and
``IE2_rs = tr(Σ⁻¹G_rΣ⁻¹G_s) − 2 tr(Φ Q_rs) + tr(Φ P_r Φ P_s)`` (twice the expected REML information),
``W = 2 IE2⁻¹`` (Moore–Penrose when its smallest |eigenvalue| is below 1e-10), and
``Φ_A = Φ + 2 Φ (Σ_rs W_rs (Q_rs − P_r Φ P_s)) Φ``. For a contrast ``L`` of rank ``q`` the scaled F and
its denominator df follow Kenward & Roger (1997) through pbkrtest's ``A1``, ``A2``, ``B``, ``g``, ``c1..c3``,
``ρ`` (``.KR_adjust`` / ``Lb_ddf``).

pbkrtest forms ``Σ⁻¹`` and every ``G_rΣ⁻¹`` as n × n matrices; here every block comes from
:meth:`sparselmm.derivatives.DevianceDerivatives.kenward_roger_blocks` in q × q and q × p form. pbkrtest
takes the residual direction as the identity even when the fit has prior weights; sparselmm uses
``W⁻¹`` (the model's own residual covariance), so the two differ only for weighted fits.
"""

from __future__ import annotations

import numpy as np

__all__ = ["KenwardRoger"]

COND_TOL = 1e-10  # pbkrtest: solve(IE2) when min |eigenvalue| > 1e-10, else ginv


class KenwardRoger:
    """Kenward–Roger ingredients of one REML fit: ``Φ``, ``Φ_A``, ``P_r`` and ``W``."""

    def __init__(self, derivs):
        Phi = derivs.vcov_beta
        P, Q, K = derivs.kenward_roger_blocks()
        m = len(P)
        PhiP = [Phi @ Pr for Pr in P]
        IE2 = np.empty((m, m))
        for r in range(m):
            for s in range(r + 1):
                val = K[r, s] - 2.0 * float(np.sum(Phi * Q[r][s])) + float(np.sum(PhiP[r] * PhiP[s].T))
                IE2[r, s] = IE2[s, r] = val
        evals = np.linalg.eigvalsh(IE2)
        self.condi = float(np.min(np.abs(evals)))
        W = 2.0 * (np.linalg.inv(IE2) if self.condi > COND_TOL else np.linalg.pinv(IE2))
        W = 0.5 * (W + W.T)
        U = np.zeros_like(Phi)
        for r in range(m):
            for s in range(m):
                U += W[r, s] * (Q[r][s] - P[r] @ Phi @ P[s])
        U = 0.5 * (U + U.T)
        self.vcov_beta = Phi
        self.vcov_adj = Phi + 2.0 * Phi @ U @ Phi
        self.P = P
        self.W = W
        self.information = IE2

    def _A(self, L: np.ndarray) -> tuple[float, float]:
        Phi = self.vcov_beta
        Theta = L.T @ np.linalg.solve(L @ Phi @ L.T, L)
        TP = Theta @ Phi
        u = [TP @ Pr @ Phi for Pr in self.P]
        tr = np.array([np.trace(x) for x in u])
        m = len(u)
        A1 = A2 = 0.0
        for i in range(m):
            for j in range(i, m):
                e = 1.0 if i == j else 2.0
                A1 += e * self.W[i, j] * tr[i] * tr[j]
                A2 += e * self.W[i, j] * float(np.sum(u[i] * u[j].T))
        return A1, A2

    def ddf_and_scale(self, L: np.ndarray, q: int) -> tuple[float, float]:
        """Denominator df and F scaling of contrast ``L`` with rank ``q`` (pbkrtest's ``.KR_adjust``)."""
        A1, A2 = self._A(L)
        B = (A1 + 6.0 * A2) / (2.0 * q)
        g = ((q + 1) * A1 - (q + 4) * A2) / ((q + 2) * A2)
        c1 = g / (3 * q + 2 * (1 - g))
        c2 = (q - g) / (3 * q + 2 * (1 - g))
        c3 = (q + 2 - g) / (3 * q + 2 * (1 - g))
        V0 = 1 + c1 * B
        V1 = 1 - c2 * B
        V2 = 1 - c3 * B
        V0 = 0.0 if abs(V0) < 1e-10 else V0
        ratio = 1.0 if (abs(1 - A2 / q) < 1e-14 and abs(V1) < 1e-14) else (1 - A2 / q) / V1
        rho = ratio**2 * V0 / V2 / q
        df2 = 4 + (q + 2) / (q * rho - 1)
        scale = 1.0 if abs(df2 - 2) < 1e-2 else df2 * (1 - A2 / q) / (df2 - 2)
        return float(df2), float(scale)

    def t_df(self, l: np.ndarray) -> tuple[float, float]:
        """Adjusted variance ``lᵀΦ_Al`` and KR df of one contrast row (pbkrtest's ``Lb_ddf``)."""
        ddf, _ = self.ddf_and_scale(l[None, :], 1)
        return float(l @ self.vcov_adj @ l), ddf

    def f_test(self, L: np.ndarray, beta: np.ndarray, rank: int):
        """``(F, F_unscaled, q, ddf)`` for ``Lβ = 0`` (pbkrtest's ``KRmodcomp`` with ``betaH = 0``)."""
        Lb = L @ beta
        wald = float(Lb @ np.linalg.solve(L @ self.vcov_adj @ L.T, Lb))
        ddf, scale = self.ddf_and_scale(L, rank)
        FU = wald / rank
        return scale * FU, FU, rank, ddf
