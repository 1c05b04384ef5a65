"""statsmodels' MixedLM log-likelihood, its derivatives and GLS quantities, from the sparse engine.

With ``cov_re / scale = T Tᵀ`` and ``vcomp / scale = t²`` (the engine's θ), statsmodels' marginal covariance
on the profile scale is ``V = I + Z Λ Λᵀ Zᵀ`` and every quantity it needs has an lme4 form:

* ``log|V| = log|L|²`` and ``Xᵀ V⁻¹ X = R_Xᵀ R_X``,
* ``rᵀ V⁻¹ r = pwrss + ‖R_X (β − β̂)‖²`` for the residual ``r = y − Xβ`` at any β,

so the log-likelihood with β profiled or not, ML or REML, costs one sparse Cholesky.

Score and Hessian are exact, from :class:`sparselmm.derivatives.DevianceDerivatives` (the q × q
Woodbury blocks ``Ω = ZᵀV⁻¹Z``, ``Ψ = ZᵀV⁻¹X``, ``M = XᵀV⁻¹X`` and ``Ω_X``, REML's ``ZᵀPZ``). statsmodels'
covariance parameters ψ (the lower triangle of ``cov_re`` and ``vcomp``, profile scale) enter ``V`` linearly,
``∂V/∂ψ_a = Z Δ_a Zᵀ`` with ``Δ_a`` pbkrtest's direction matrices (``DevianceDerivatives.Delta``), so with
``N = n`` (ML) or ``n − p`` (REML), ``r = y − Xβ``, ``c = ZᵀV⁻¹r``, ``Q = rᵀV⁻¹r`` and ``d = β − β̂``:

* ``ℓ = −½ (log|V| [+ log|M|]) − (N/2) log Q + const``,
* ``∂Q/∂ψ_a = −cᵀΔ_a c``, ``∂²Q/∂ψ_a∂ψ_b = 2 (Δ_a c)ᵀ Ω (Δ_b c)``, ``∂Q/∂β = 2Md``,
  ``∂²Q/∂β∂ψ_a = 2 ΨᵀΔ_a c``, ``∂²Q/∂β² = 2M``,
* ``∂ log|V|[+log|M|] / ∂ψ_a = tr(Ω_X Δ_a)``, second derivative ``−tr(Ω_X Δ_a Ω_X Δ_b)``.

In the square-root parameterisation (statsmodels' ``use_sqrt``, which is the engine's θ in another order)
the directions are ``D_k = ∂(ΛΛᵀ)/∂θ_k`` instead of ``Δ_a``; only the score is needed there. Against
statsmodels' analytic Hessian this agrees to ~1e-10 relative, where the central differences used before
(still the fallback when the derivatives' dense block would exceed :data:`EXACT_MAX_DENSE` rows, where it
would cost too much memory) agreed to ~1e-6 and differed from statsmodels' test module's numerical Hessian by 1.4e-3.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..crossprod import cross_products
from ..derivatives import DevianceDerivatives, dense_dimension
from ..deviance import PLSState, ProfiledDeviance
from ..errors import NumericalError
from .params import MixedLMParams, psd_factor
from .structure import GroupStructure

__all__ = ["Likelihood"]

LOG_2PI = float(np.log(2 * np.pi))
# Central differences with relative step 1e-3: against statsmodels' analytic Hessian the standard errors
# agree to ~5e-7 (n = 300) and to ~1e-6 of the Richardson-extrapolated value on InstEval (n = 73421).
# RADII = (1, 2) switches on Richardson extrapolation (error O(h⁴), twice the evaluations).
HESS_STEP = 1e-3
RADII = (1,)
SCORE_STEP = 1e-5
# Largest dense block for the exact score and Hessian (sparselmm.derivatives.dense_dimension: the random
# effects left after eliminating the largest term, or all q): a few such square matrices are held; above
# it, finite differences of the exact likelihood
EXACT_MAX_DENSE = 6000


def _extrapolate(d):
    """Richardson extrapolation of central differences at h and 2h (or the single estimate)."""
    return d[0] if len(d) == 1 else (4 * d[0] - d[1]) / 3


class Likelihood:
    """The profile (scale-free) log-likelihood of a :class:`GroupStructure`, ML and REML."""

    def __init__(self, structure: GroupStructure):
        self.structure = structure
        self.design = structure.design
        self.cross = cross_products(self.design)
        self._devfuns: dict[bool, ProfiledDeviance] = {}
        self.n, self.p = self.design.n, self.design.p

    def __getstate__(self):
        from .._pickling import picklable_devfun

        state = dict(self.__dict__)
        state["_devfuns"] = {k: picklable_devfun(v) for k, v in self._devfuns.items()}
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    def devfun(self, reml: bool) -> ProfiledDeviance:
        reml = bool(reml)
        if reml not in self._devfuns:
            self._devfuns[reml] = ProfiledDeviance(self.design, self.cross, reml=reml)
        return self._devfuns[reml]

    # ---- parameter maps ------------------------------------------------------------------
    def theta(self, cov_re, vcomp) -> np.ndarray | None:
        """θ for profile-scale ``cov_re`` and ``vcomp``; None when they are not a valid covariance."""
        s = self.structure
        T = psd_factor(np.asarray(cov_re, dtype=float).reshape(s.k_re, s.k_re))
        vcomp = np.asarray(vcomp, dtype=float).ravel()
        if T is None or vcomp.size != s.k_vc or np.any(vcomp < 0) or not np.all(np.isfinite(vcomp)):
            return None
        return s.theta_from_sqrt(np.concatenate([T[np.tril_indices(s.k_re)], np.sqrt(vcomp)]))

    def params_from_theta(self, theta: np.ndarray, fe_params=None) -> MixedLMParams:
        s = self.structure
        packed = s.sqrt_from_theta(theta)
        pa = MixedLMParams.from_packed(packed, self.p, s.k_re, use_sqrt=True, has_fe=False)
        if fe_params is not None:
            pa.fe_params = np.asarray(fe_params, dtype=float).copy()
        return pa

    # ---- the likelihood -------------------------------------------------------------------
    def solve(self, theta: np.ndarray, reml: bool) -> PLSState:
        """The PLS solution at θ, with ``pwrss`` recomputed from the residuals.

        The engine's ``pwrss = yᵀy − ‖c_u‖² − ‖c_β‖²`` never touches the rows (right for the optimiser) but
        cancels digits when ``yᵀy`` is much larger than ``pwrss``; here, where the value itself is reported
        (``loglike``, ``llf``, ``scale``) and numerically differentiated by statsmodels' tests, it is
        ``‖y − Xβ̂ − ZΛu‖² + ‖u‖²`` (one pass over the rows and one triangular solve): the log-likelihood's
        rounding noise drops from ~2e-12 to ~7e-13 on statsmodels' n = 1000 test model, statsmodels' own level.
        """
        dev = self.devfun(reml)
        state = dev.solve(theta)
        u = dev.spherical_modes(state)
        b = dev.Lambda_times(dev.factors(state.theta), u)
        d = self.design
        r = d.y - d.X @ state.beta - d.Zt.T @ b
        if d.offset is not None:
            r -= d.offset
        if d.weights is not None:
            r *= np.sqrt(d.weights)
        return dataclasses.replace(state, pwrss=float(r @ r + u @ u))

    def residual_df(self, reml: bool) -> int:
        """ν, the profiled criterion's residual degrees of freedom: ``n − p`` (REML) or ``n`` (ML)."""
        return self.n - self.p if reml else self.n

    def rss(self, state: PLSState, beta=None) -> float:
        """``rᵀ V⁻¹ r`` (profile scale) at ``beta`` (β̂ when None)."""
        if beta is None or self.p == 0:
            return state.pwrss
        d = state.R_X @ (np.asarray(beta, dtype=float) - state.beta)
        return state.pwrss + float(d @ d)

    def loglike_state(self, state: PLSState, reml: bool, beta=None) -> float:
        nu = self.residual_df(reml)
        ld = state.ldL2 + (state.ldRX2 if reml else 0.0)
        const = -0.5 * nu * (1.0 + LOG_2PI - np.log(nu))  # one rounding for the constant part
        return const - (0.5 * ld + 0.5 * nu * np.log(self.rss(state, beta)))

    def loglike(self, cov_re, vcomp, reml: bool, beta=None) -> float:
        """statsmodels' ``loglike``: β profiled when ``beta`` is None; NaN for an invalid covariance."""
        theta = self.theta(cov_re, vcomp)
        if theta is None:
            return float("nan")
        try:
            return self.loglike_state(self.solve(theta, reml), reml, beta)
        except NumericalError:
            return float("nan")

    def beta_gradient(self, state: PLSState, reml: bool, beta) -> np.ndarray:
        """∂ℓ/∂β at ``beta`` (analytic)."""
        G = state.R_X.T @ state.R_X
        return -self.residual_df(reml) * G @ (np.asarray(beta) - state.beta) / self.rss(state, beta)

    # ---- derivatives ----------------------------------------------------------------------
    def exact_derivatives(self, theta, reml: bool, beta=None, sqrt: bool = False, hessian: bool = True):
        """Exact ``(∂ℓ/∂β, ∂ℓ/∂ψ, H)`` at θ (see the module docstring).

        ``ψ`` is statsmodels' packed covariance part: ``cov_re`` lower triangle and ``vcomp`` (``sqrt=False``)
        or their square roots (``sqrt=True``, no Hessian). ``beta`` defaults to β̂(θ). ``H`` is the Hessian
        over ``(β, ψ)``.
        """
        dd = DevianceDerivatives(self.devfun(reml), theta)
        perm = self.structure.theta_of_sqrt  # packed position -> θ position
        dirs_theta = dd.D if sqrt else dd.Delta
        dirs = [dirs_theta[j] for j in perm]
        N = self.residual_df(reml)
        d = np.zeros(self.p) if beta is None else np.asarray(beta, dtype=float).ravel() - dd.state.beta
        c = dd.a - dd.Psi @ d
        Md = dd.M @ d
        Q = dd.pwrss + float(d @ Md)
        Dc = np.column_stack([A @ c for A in dirs]) if dirs else np.zeros((c.size, 0))
        trace = np.array([dd._sparse_trace(A) for A in dirs])
        Qa = -(c @ Dc)
        g_beta = -N * Md / Q
        g_psi = -0.5 * trace - 0.5 * N * Qa / Q
        if not hessian or sqrt:
            return g_beta, g_psi, None
        p, m = self.p, len(dirs)
        H = np.zeros((p + m, p + m))
        H[:p, :p] = -N * dd.M / Q + 2.0 * N * np.outer(Md, Md) / Q**2
        if m:
            T2 = dd._trace_products(dirs_theta, dd.reml)[np.ix_(perm, perm)]  # tr(Ω_X Δ_a Ω_X Δ_b)
            OmDc = np.column_stack([dd._omega_x_times(Dc[:, a], reml=False) for a in range(m)])
            Qab = 2.0 * Dc.T @ OmDc
            Qab = 0.5 * (Qab + Qab.T)
            H[p:, p:] = 0.5 * T2 - 0.5 * N * (Qab / Q - np.outer(Qa, Qa) / Q**2)
            if p:
                Qba = 2.0 * dd.Psi.T @ Dc  # p × m
                cross = -0.5 * N * (Qba / Q - np.outer(2.0 * Md, Qa) / Q**2)
                H[:p, p:] = cross
                H[p:, :p] = cross.T
        return g_beta, g_psi, H

    def exact_ok(self) -> bool:
        """Whether the exact derivatives are used (dense block ≤ :data:`EXACT_MAX_DENSE` rows)."""
        return dense_dimension(self.design) <= EXACT_MAX_DENSE

    def hessian(self, fe_params, cov_re, vcomp, reml: bool) -> np.ndarray:
        """Hessian of ℓ(β, ψ) with ψ = (lower triangle of cov_re by rows, vcomp), profile scale.

        Exact (:meth:`exact_derivatives`) while :meth:`exact_ok`. Beyond that:
        β–β block analytic; ψ blocks by central differences (steps relative to each parameter's size;
        ``2 m + m(m−1)`` solves for m covariance parameters); at a zero variance the stencil is shifted
        inward (one-sided).
        """
        s = self.structure
        k_re, p = s.k_re, self.p
        cov_re = np.asarray(cov_re, dtype=float).reshape(k_re, k_re)
        vcomp = np.asarray(vcomp, dtype=float).ravel()
        beta = np.asarray(fe_params, dtype=float).ravel()
        if self.exact_ok():
            theta = self.theta(cov_re, vcomp)
            if theta is not None:
                try:
                    return self.exact_derivatives(theta, reml, beta)[2]
                except NumericalError:
                    pass
        ri, ci = np.tril_indices(k_re)
        psi0 = np.concatenate([cov_re[ri, ci], vcomp])
        m = psi0.size
        diag_var = np.concatenate([np.diag(cov_re), vcomp])
        scale = np.empty(m)
        is_var = np.zeros(m, dtype=bool)
        for a in range(m):
            if a < ri.size:
                i, j = ri[a], ci[a]
                scale[a] = np.sqrt(abs(diag_var[i] * diag_var[j]))
                is_var[a] = i == j
            else:
                scale[a] = abs(vcomp[a - ri.size])
                is_var[a] = True
        typical = np.max(np.abs(diag_var)) if diag_var.size and np.max(np.abs(diag_var)) > 0 else 1.0
        scale = np.where(scale > 1e-8 * typical, scale, 1e-3 * typical)
        h = HESS_STEP * scale
        center = psi0.copy()
        shift = is_var & (psi0 < 2.5 * h)
        center[shift] = psi0[shift] + 2.5 * h[shift]

        def unpack(psi):
            low = np.zeros((k_re, k_re))
            low[ri, ci] = psi[: ri.size]
            return low + low.T - np.diag(np.diag(low)), psi[ri.size :]

        cache: dict[tuple, tuple[float, np.ndarray]] = {}

        def ev(steps: tuple) -> tuple[float, np.ndarray]:
            if steps not in cache:
                psi = center.copy()
                for a, mult in steps:
                    psi[a] += mult * h[a]
                c, v = unpack(psi)
                theta = self.theta(c, v)
                if theta is None:
                    cache[steps] = (float("nan"), np.full(p, np.nan))
                else:
                    try:
                        st = self.solve(theta, reml)
                        cache[steps] = (self.loglike_state(st, reml, beta), self.beta_gradient(st, reml, beta))
                    except NumericalError:
                        cache[steps] = (float("nan"), np.full(p, np.nan))
            return cache[steps]

        ev(())
        f0 = cache[()][0]
        H = np.zeros((p + m, p + m))
        st0 = self.solve(self.theta(*unpack(center)), reml) if p else None
        if p:
            G = st0.R_X.T @ st0.R_X
            S = self.rss(st0, beta)
            Gd = G @ (beta - st0.beta)
            H[:p, :p] = -self.residual_df(reml) * (G / S - 2.0 * np.outer(Gd, Gd) / S**2)
        for a in range(m):
            d2, d1 = [], []
            for r in RADII:
                fp, gp = ev(((a, r),))
                fm, gm = ev(((a, -r),))
                d2.append((fp - 2 * f0 + fm) / (r * h[a]) ** 2)
                d1.append((gp - gm) / (2 * r * h[a]))
            H[p + a, p + a] = _extrapolate(d2)
            cross = _extrapolate(d1)
            H[p + a, :p] = H[:p, p + a] = cross
        for a in range(m):
            for b in range(a):
                est = []
                for r in RADII:
                    fpp = ev(((a, r), (b, r)))[0]
                    fmm = ev(((a, -r), (b, -r)))[0]
                    sa = ev(((a, r),))[0] + ev(((a, -r),))[0] - 2 * f0
                    sb = ev(((b, r),))[0] + ev(((b, -r),))[0] - 2 * f0
                    est.append((fpp + fmm - 2 * f0 - sa - sb) / (2 * r * r * h[a] * h[b]))
                H[p + a, p + b] = H[p + b, p + a] = _extrapolate(est)
        return H

    def score_packed(self, packed: np.ndarray, use_sqrt: bool, reml: bool, beta=None, free=None) -> np.ndarray:
        """Gradient of ℓ in the packed (use_sqrt or not) covariance parameters; with ``beta`` given, also in
        β — returned first, as statsmodels orders it. Exact while :meth:`exact_ok`, else
        central differences of the exact likelihood (β part analytic)."""
        s = self.structure
        packed = np.asarray(packed, dtype=float).ravel()
        if self.exact_ok():
            if use_sqrt:
                theta = s.theta_from_sqrt(packed)  # statsmodels' Cholesky factor is θ, signs included
            else:
                pa = MixedLMParams.from_packed(packed, self.p, s.k_re, False, has_fe=False)
                theta = self.theta(pa.cov_re, pa.vcomp)
            if theta is not None:
                try:
                    g_beta, g_psi, _ = self.exact_derivatives(theta, reml, beta, sqrt=use_sqrt, hessian=False)
                except NumericalError:
                    pass
                else:
                    return g_psi if beta is None else np.concatenate([g_beta, g_psi])

        def f(x):
            pa = MixedLMParams.from_packed(x, self.p, s.k_re, use_sqrt, has_fe=False)
            return self.loglike(pa.cov_re, pa.vcomp, reml, beta)

        grad = np.empty(packed.size)
        for a in range(packed.size):
            h = SCORE_STEP * max(abs(packed[a]), 1e-2)
            e = np.zeros(packed.size)
            e[a] = h
            fp, fm = f(packed + e), f(packed - e)
            if np.isnan(fm):
                grad[a] = (fp - f(packed)) / h
            else:
                grad[a] = (fp - fm) / (2 * h)
        if beta is None:
            return grad
        pa = MixedLMParams.from_packed(packed, self.p, s.k_re, use_sqrt, has_fe=False)
        st = self.solve(self.theta(pa.cov_re, pa.vcomp), reml)
        return np.concatenate([self.beta_gradient(st, reml, beta), grad])
