"""The constrained fits of a residual-structure fit's likelihood profile (``dispformula``, ``corAR1``, ``corCAR1``).

A fit of :mod:`sparselmm.residual` has, besides lme4's ``(sd/cor…, σ)`` and β, the residual parameters φ:
``varIdent``'s SD ratios ``exp δ`` and the correlation ρ (corCAR1's φ). Its profile is lme4's
(:mod:`sparselmm.inference.profile`: the same search for ``ζ = ±z`` and the same grid) with these on further
axes, after σ and before the fixed effects — the rows ``.ratio.<level>``, ``.rho`` / ``.Phi`` of
:func:`~sparselmm.inference.varpar.variance_names`. ζ is invariant under a monotone map of the held
parameter, so a ratio's profile is that of δ read on ``exp δ``. At each point every other parameter is
re-optimised on the profiled criterion (ML by default, as lme4: a REML fit is refitted by ML first,
:func:`~sparselmm.residual.refit_residual`), in one of two sets of variables:

* an SD, a correlation or σ held: the others of lme4's ``ψ = (sd/cor…, σ)`` and φ (lme4's ``devfun2`` with
  φ added), the criterion ``d(θ(ψ), φ, σ)`` of :class:`~sparselmm.inference.varpar.VarparCriterion` (β
  profiled out);
* a residual parameter or a fixed effect held: ``(θ, φ)`` as in the fit itself, σ (and β) profiled out; a
  fixed effect ``β_k = x`` adds ``(x − β̂_k)² / V_kk`` to the penalised residual sum of squares (the exact
  minimum over the other β at ``(θ, φ)``, ``V = (R_XᵀR_X)⁻¹``).

The criterion has no analytic gradient in φ, so each fit is a projected BFGS on central differences
(:func:`~sparselmm.optimize.fd_gradient`), started from its neighbour extrapolated along the profile (the first
from the estimates moved by ``−H_ff⁻¹ H_fj (x − x̂)``), BOBYQA where it does not converge. The derivative of the
criterion in the held value at the constrained optimum (one central difference: the envelope theorem) is the
slope the interval-end search steps with. The fit itself is not changed: the profile evaluates on its own
CHOLMOD factor that takes each φ's cross-products.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from ..errors import NumericalError
from ..newton import PROBE, quasi_newton
from ..optimize import DERIV_STEP, deriv12, fd_gradient, is_singular
from ..parameters import SdCorMap, sdcor
from .profile_fits import ConstrainedFits, Point, _minimise, slope_from_curvature
from .varpar import VarparCriterion, variance_names

__all__ = ["ResidualConstrainedFits", "ResidualScale"]

# the constrained fits stop when the predicted decrease of the criterion is below this (deviance units):
# ζ² = d − d̂ ≈ 4 at the ends, so the error in ζ is ~1e-9; the central differences' error is far below
RESIDUAL_FIT_TOL = 1e-9


class ResidualScale(SdCorMap):
    """lme4's ``(sd/cor…, σ)`` (:class:`~sparselmm.parameters.SdCorMap`) with the residual parameters' profile
    axes appended to ``lower``, ``upper`` and ``is_cor``: each SD ratio in ``(0, ∞)``, ρ (corCAR1's φ) within the
    structure's bounds and stepped on the ``atanh`` scale as a correlation. :meth:`theta` reads ψ only."""

    def __init__(self, design, structure):
        super().__init__(design)
        self.n_psi = self.lower.size
        lo, up = structure.bounds()
        ratio = np.arange(lo.size) < structure.n_delta
        self.lower = np.concatenate([self.lower, np.where(ratio, 0.0, lo)])
        self.upper = np.concatenate([self.upper, up])
        self.is_cor = np.concatenate([self.is_cor, ~ratio])

    def theta(self, psi: np.ndarray, jacobian: bool = False):
        return super().theta(np.asarray(psi, dtype=float)[: self.n_psi], jacobian=jacobian)


class ResidualConstrainedFits(ConstrainedFits):
    """The constrained fits of a residual-structure fit's profile (see the module docstring), with the interface
    of :class:`~sparselmm.inference.profile_fits.ConstrainedFits`: :meth:`deviance_at` (inherited) holds
    parameter ``j`` (the order of :func:`~sparselmm.inference.varpar.variance_names`: ψ, the SD ratios, ρ, then
    β) at ``x``, fits the others and records the point."""

    fit_tol = RESIDUAL_FIT_TOL
    devfun = None  # no single deviance function: BLAS threads follow blas_size

    def __init__(self, result, criterion: str):
        from ..residual import refit_residual

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.fit = refit_residual(result, reml=criterion == "REML")
        fit = self.fit
        self.criterion = criterion
        self.reml = criterion == "REML"
        self.design = design = fit.design
        self.vc = VarparCriterion(fit)  # its own factor: the fit is not touched
        self.blas_size = int(design.q)
        s = self.structure = fit.residual_structure
        self.psi_map = ResidualScale(design, s)
        self.n_theta, self.n_psi, self.n_delta = design.n_theta, design.n_theta + 1, s.n_delta
        self.n_var = self.n_psi + s.n_phi
        self.names = variance_names(fit)
        sigma = float(fit.sigma)
        self.phi_hat = np.asarray(fit.phi, dtype=float).copy()
        self.v_hat = np.concatenate([sdcor(design, fit.theta, sigma), [sigma], self.phi_hat])  # (ψ, φ)
        self.u_hat = np.concatenate([fit.theta, self.phi_hat])  # (θ, φ)
        self.beta_hat = fit.fixef.to_numpy()
        shown = self.v_hat.copy()
        shown[self.n_psi : self.n_psi + self.n_delta] = np.exp(shown[self.n_psi : self.n_psi + self.n_delta])
        self.est = pd.Series(np.concatenate([shown, self.beta_hat]), index=self.names, name="estimate")
        self.psi_hat = shown
        self.sd_unit = sigma
        self.se = np.sqrt(np.diag(fit.vcov.to_numpy())) if design.p else np.zeros(0)
        self.base = float(fit.objective)
        self.rows: list[tuple] = []
        self.points: dict[int, list[Point]] = {}
        self.notes: list[str] = []
        self._H: dict[str, np.ndarray | None] = {}
        self.singular = is_singular(fit.theta, design.lower)
        phi_lo, phi_up = s.bounds()
        self.v_lower = np.concatenate([self.psi_map.lower[: self.n_psi], phi_lo])
        self.v_upper = np.concatenate([self.psi_map.upper[: self.n_psi], phi_up])
        self.u_lower = np.concatenate([design.lower, phi_lo])
        self.u_upper = np.concatenate([design.upper, phi_up])

    # ---- the criterion in the two sets of variables ------------------------------------------------------
    def criterion_psi(self, v: np.ndarray) -> float:
        """``d(θ(ψ), φ, σ)`` at ``v = (ψ, φ)``, β profiled out (inf outside the bounds or the model)."""
        if np.any(v < self.v_lower) or np.any(v > self.v_upper):
            return np.inf
        try:
            theta = self.psi_map.theta(v)
        except (NumericalError, np.linalg.LinAlgError):
            return np.inf
        return self.vc.deviance(theta, v[self.n_psi :], float(v[self.n_psi - 1]))

    def _theta_state(self, u: np.ndarray):
        if np.any(u < self.u_lower) or np.any(u > self.u_upper):
            raise NumericalError("outside the bounds")
        return self.vc._state(u[: self.n_theta], u[self.n_theta :])

    def _profiled(self, st, r2: float) -> float:
        nu = self.vc.nu
        ld = st.ldL2 + (st.ldRX2 if self.reml else 0.0) - self.vc._devfun.cross.sum_log_w
        return float(ld + nu * (1.0 + math.log(2.0 * math.pi * r2 / nu)))

    def criterion_theta(self, u: np.ndarray, col: int | None = None, x: float = 0.0) -> float:
        """The criterion at ``u = (θ, φ)`` with σ and β profiled out; with ``col``, ``β_col = x`` held."""
        try:
            st = self._theta_state(u)
            r2 = st.pwrss
            if col is not None:
                r2 = r2 + (x - st.beta[col]) ** 2 / self._v_beta(st)[col, col]
        except (NumericalError, np.linalg.LinAlgError, FloatingPointError):
            return np.inf
        return self._profiled(st, r2) if r2 > 0 else np.inf

    @staticmethod
    def _v_beta(st) -> np.ndarray:
        """``(R_XᵀR_X)⁻¹``: ``vcov(β) / σ²`` at the state."""
        Rinv = np.linalg.inv(st.R_X)
        return Rinv @ Rinv.T

    def _hessian(self, space: str) -> np.ndarray | None:
        """The criterion's Hessian at the estimates in ``"psi"`` or ``"theta"`` variables (central differences;
        None where not finite)."""
        if space not in self._H:
            hat, lower, crit = (
                (self.v_hat, self.v_lower, self.criterion_psi)
                if space == "psi"
                else (self.u_hat, self.u_lower, self.criterion_theta)
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _, H = deriv12(crit, hat, crit(hat), lower)
            self._H[space] = H if np.all(np.isfinite(H)) else None
        return self._H[space]

    # ---- the interface of ConstrainedFits ------------------------------------------------------------------
    def bounds(self, j: int) -> tuple[float, float]:
        if j < self.n_var:
            return float(self.psi_map.lower[j]), float(self.psi_map.upper[j])
        return -np.inf, np.inf

    def initial_slope(self, j: int) -> float | None:
        """dζ/dx at the estimate from the curvature in ``(ψ, φ)``: ``1 / sqrt(2 (H⁻¹)_jj)``, over the ratio for a
        ratio (δ = log ratio); ``1 / SE`` for a fixed effect."""
        if j >= self.n_var:
            se = self.se[j - self.n_var]
            return 1.0 / se if se > 0 else None
        slope = slope_from_curvature(self._hessian("psi"), j)
        if slope is not None and self._is_ratio(j):
            slope /= float(self.est.iloc[j])
        return slope

    def _is_ratio(self, j: int) -> bool:
        return self.n_psi <= j < self.n_psi + self.n_delta

    def _fit_for(self, j: int):
        return self._fit_residual

    def _space(self, j: int, x: float):
        """``(estimates, lower, upper, criterion, held position or None, internal held value, Hessian)`` of the
        variables the fit with parameter ``j`` held at ``x`` works in (module docstring)."""
        if j < self.n_psi:
            return self.v_hat, self.v_lower, self.v_upper, self.criterion_psi, j, x, self._hessian("psi")
        H = self._hessian("theta")
        if j < self.n_var:
            held = self.n_theta + j - self.n_psi
            value = math.log(x) if self._is_ratio(j) and x > 0 else (-np.inf if self._is_ratio(j) else x)
            return self.u_hat, self.u_lower, self.u_upper, self.criterion_theta, held, value, H
        col = j - self.n_var
        return self.u_hat, self.u_lower, self.u_upper, lambda u: self.criterion_theta(u, col, x), None, x, H

    def _fresh_start(self, j: int) -> np.ndarray:
        """A fresh fit's start in the variables of parameter ``j``'s fits: the model's own ``(θ₀, φ₀)``."""
        start = np.asarray(self.fit.optinfo.theta_start, dtype=float)
        theta0, phi0 = start[: self.n_theta], start[self.n_theta :]
        if j < self.n_psi:
            sigma = float(self.fit.sigma)
            return np.delete(np.concatenate([sdcor(self.design, theta0, sigma), [sigma], phi0]), j)
        return np.delete(start, self.n_theta + j - self.n_psi) if j < self.n_var else start.copy()

    def _fit_residual(self, j: int, x: float, start, H) -> Point:
        """The fit with parameter ``j`` held at ``x``: every other parameter re-optimised (module docstring)."""
        hat, lower, upper, crit, held, value, Hf = self._space(j, x)
        free = np.ones(hat.size, dtype=bool)
        if held is not None:
            free[held] = False
        lo, hi = lower[free], upper[free]
        w = hat.copy()
        if held is not None:
            w[held] = value
        H_ref = Hf[np.ix_(free, free)] if Hf is not None else None
        if H_ref is not None and not np.all(np.linalg.eigvalsh(0.5 * (H_ref + H_ref.T)) > 0):
            H_ref = None
        if start is None:
            start = hat[free].copy()
            if H_ref is not None and held is not None:  # first order along the profile: −H_ff⁻¹ H_fj (x − x̂)
                start = start - np.linalg.solve(H_ref, Hf[free, held]) * (value - hat[held])
        starts = [np.clip(start, lo, hi), np.clip(hat[free], lo, hi)]

        def f(z):
            v = w.copy()
            v[free] = z
            return crit(v)

        if H is None or H.shape != (lo.size, lo.size):
            H = H_ref if H_ref is not None else np.eye(lo.size)
        best = None
        probe = np.where(lo == 0, PROBE * (self.sd_unit if j < self.n_psi else 1.0), 0.0)  # SDs (ψ) or θ at 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if not np.isfinite(value):
                starts = []
            for x0 in starts:
                try:
                    z, _, _, H_new, _, ok = quasi_newton(
                        None,
                        x0,
                        lo,
                        hi,
                        H,
                        self.fit_tol,
                        probe=probe,
                        H_check=H_ref,
                        fun=f,
                        gradient=lambda z: self._gradient(f, z, lo, hi),
                    )
                except (NumericalError, np.linalg.LinAlgError):
                    continue
                if ok and np.isfinite(f(z)):
                    best = (np.asarray(z, float), float(f(z)), H_new)
                    break
            if best is None and starts:  # no convergence: BOBYQA from the start
                z, dev = _minimise(f, starts[0], lo, hi)
                best = (np.asarray(z, float), float(f(z)) if np.isfinite(dev) else np.nan, None)
        if best is None:
            return Point(x, np.nan, np.nan, None, np.full(len(self.names), np.nan), hat[free].copy(), None)
        z, dev, H_new = best
        w[free] = z
        ddev = self._held_derivative(j, x, w, held) if np.isfinite(dev) else None
        zeta, slope = self._zeta(j, x, dev, ddev)
        if not np.isfinite(dev):
            zeta = np.nan
        return Point(x, zeta, dev, slope, self._params(j, x, w), z.copy(), H_new)

    @staticmethod
    def _gradient(f, z: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        g = fd_gradient(f, z, lo, upper=hi)
        if not np.all(np.isfinite(g)):
            raise NumericalError("the criterion is not finite next to this point")
        return g

    def _held_derivative(self, j: int, x: float, w: np.ndarray, held: int | None) -> float | None:
        """∂d/∂x at the constrained optimum, the other variables fixed (the envelope theorem): one central
        difference in the held value (in ``x`` itself for a fixed effect, whose value enters the criterion)."""
        lo, hi = self.bounds(j)
        h = DERIV_STEP * max(abs(x), self.se[j - self.n_var] if j >= self.n_var else 1e-2)
        a, b = min(x + h, hi), max(x - h, lo)
        if a == b or (self._is_ratio(j) and b <= 0):
            return None

        def at(value):
            sp = self._space(j, value)
            v = w.copy()
            if held is not None:
                v[held] = sp[5]
            return sp[3](v)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            d = (at(a) - at(b)) / (a - b)
        return float(d) if np.isfinite(d) else None

    def _params(self, j: int, x: float, w: np.ndarray) -> np.ndarray:
        """Every parameter at the constrained optimum, in :func:`~sparselmm.inference.varpar.variance_names`'s
        order (the SD ratios as ``exp δ``)."""
        nt, npsi = self.n_theta, self.n_psi
        if j < npsi:
            psi, phi = w[:npsi], w[npsi:]
            beta = self.vc._state(self.psi_map.theta(psi), phi).beta
        else:
            st = self._theta_state(w)
            theta, phi, beta = w[:nt], w[nt:], np.array(st.beta, dtype=float)
            r2 = st.pwrss
            if j >= self.n_var:  # β_col = x: the others move along V's column
                col = j - self.n_var
                V = self._v_beta(st)
                r2 += (x - beta[col]) ** 2 / V[col, col]
                beta = beta + V[:, col] / V[col, col] * (x - beta[col])
            sigma = math.sqrt(r2 / self.vc.nu)
            psi = np.append(sdcor(self.design, theta, sigma), sigma)
        shown = np.concatenate([psi, phi])
        shown[npsi : npsi + self.n_delta] = np.exp(shown[npsi : npsi + self.n_delta])
        out = np.concatenate([shown, beta])
        out[j] = x
        return out
