"""The constrained fits of a glmer fit's likelihood profile (lme4's ``profile.merMod`` for a GLMM).

lme4 profiles a GLMM (``devfun2``) on the criterion the fit minimised — the Laplace deviance ``−2 log L``
(``nAGQ = 1``) or the adaptive Gauss–Hermite criterion (``nAGQ > 1``) — as a function of all its parameters
at once: the random effects' SDs and correlations ψ (lme4's ``Cv_to_Sv(θ)``; no σ for binomial and Poisson)
and the fixed effects β. Holding one of them at ``x`` (an SD, a correlation or a fixed effect alike), every
other one is re-optimised, with the SDs ``≥ 0`` and the correlations in ``[−1, 1]`` (lme4's bounds), and
``ζ(x) = sign(x − x̂) · sqrt(d(x) − d̂)``.

:class:`GlmmConstrainedFits` gives :class:`~sparselmm.inference.profile._Profiler` (the search for the
interval ends and lme4's grid, shared with lmer's profiles) these fits in place of lmer's
:class:`~sparselmm.inference.profile_fits.ConstrainedFits` ones. With an SD or a correlation held the others
are lme4's ``(ψ, β)``; with a fixed effect held, ``(θ, β)`` as in the fit (see :meth:`GlmmConstrainedFits._space`).
Each is a projected BFGS on
central-difference gradients of the criterion (as glmer's own joint stage,
:func:`~sparselmm.glmm.objective.newton_polish`), started from its neighbour extrapolated along the profile
with the Hessian carried along (the first from the estimates moved by the first-order change
``−H_ff⁻¹ H_fj (x − x̂)``), and BOBYQA from the start where it does not converge or from its end where an SD
ends next to 0 (where the criterion, even in θ_k, leaves BFGS on a ridge). The criterion is
evaluated by PIRLS (:class:`~sparselmm.glmm.objective.GlmmObjective`) on the profile's own copy of the fit's
PIRLS model, so the fit is not changed. The derivative of ``d`` in ``x`` at the constrained optimum (one
central difference: the envelope theorem) is the slope the interval-end search steps with.

Families with a dispersion (Gamma, inverse Gaussian) are refused, as lme4 refuses them ("can't (yet) profile
GLMMs with non-fixed scale parameters"), and so are ``nAGQ = 0`` fits, whose criterion has no β (lme4's
``devfun2`` fails on them): refit with ``nAGQ=1``.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import ModelSpecError, NumericalError
from ..newton import PROBE, quasi_newton
from ..optimize import DERIV_STEP, SINGULAR_TOL, deriv12, fd_gradient, is_singular
from ..parameters import SdCorMap, parameter_names, sdcor
from .profile_fits import ConstrainedFits, Point, _minimise, slope_from_curvature

__all__ = ["GlmmConstrainedFits", "GlmmScale"]

# the constrained fits stop when the predicted decrease of the criterion is below this (glmer's own polish
# stops at 5e-9 on the same central differences): ζ² = d − d̂ ≈ 4 at the ends, an error in ζ of ~1e-9
GLMM_FIT_TOL = 5e-9


class GlmmScale(SdCorMap):
    """lme4's ``(sd/cor…)`` of a GLMM without a dispersion: :class:`~sparselmm.parameters.SdCorMap` with σ = 1
    (θ is the Cholesky factor of the SD/correlation matrix itself)."""

    def __init__(self, design):
        super().__init__(design)
        self.lower, self.upper, self.is_cor = self.lower[:-1], self.upper[:-1], self.is_cor[:-1]

    def theta(self, psi: np.ndarray, jacobian: bool = False):
        """θ at ψ (raises ``numpy.linalg.LinAlgError`` where the SD/correlation matrix is not positive
        semi-definite)."""
        if jacobian:
            raise NotImplementedError("a GLMM's profile uses central differences")
        return super().theta(np.append(np.asarray(psi, dtype=float), 1.0))

    def in_bounds(self, psi) -> bool:
        return not (np.any(psi < self.lower) or np.any(psi > self.upper))


def check_profilable(result) -> None:
    """Raise :class:`~sparselmm.ModelSpecError` for a glmer fit lme4 cannot profile either."""
    family = result.family
    if family.has_scale:
        raise ModelSpecError(
            f"profile: a glmer fit of the {family.name} family has a dispersion parameter, which lme4 cannot "
            "profile either ('can't (yet) profile GLMMs with non-fixed scale parameters'); use "
            "confint(method='Wald') or confint(method='boot')."
        )
    if result.nAGQ == 0:
        raise ModelSpecError(
            "profile: an nAGQ=0 fit's criterion does not depend on the fixed effects (they come from PIRLS), so it "
            "has no likelihood profile (lme4's profile stops with 'theta size mismatch'); refit with nAGQ=1 (the "
            "Laplace approximation) and profile that fit, or use confint(method='Wald') or confint(method='boot')."
        )


class GlmmConstrainedFits(ConstrainedFits):
    """The constrained fits of a glmer fit's profile (see the module docstring), with the interface of
    :class:`~sparselmm.inference.profile_fits.ConstrainedFits`: :meth:`deviance_at` (inherited) holds
    parameter ``j`` (lme4's order: ψ, then β) at ``x``, fits the others and records the point."""

    fit_tol = GLMM_FIT_TOL
    devfun = None  # no lmer deviance function: BLAS threads follow glmer's policy (blas_size)

    def __init__(self, result, criterion: str):
        if criterion != "ML":
            raise ModelSpecError(
                f"criterion={criterion!r}: a glmer fit is profiled on the criterion it minimised (the Laplace "
                "deviance, or the nAGQ criterion), lme4's; there is no REML criterion for a GLMM: use "
                "criterion='ML' (the default)."
            )
        check_profilable(result)
        self.fit = result
        self.criterion = criterion
        self.design = result.design
        self.obj = result._criterion_function()  # on the profile's own PIRLS workspace: the fit is not touched
        self.blas_size = self.obj.model.blas_size
        self.psi_map = GlmmScale(self.design)
        self.names = parameter_names(result)
        self.n_var = self.design.n_theta
        self.est = estimates_glmm(result, self.names)
        self.v_hat = self.est.to_numpy().copy()
        self.psi_hat = self.v_hat[: self.n_var].copy()
        self.sd_unit = 1.0  # θ is on the linear predictor's scale: a first step of 1e-3 from an SD at 0
        p = self.v_hat.size - self.n_var
        self.v_lower = np.concatenate([self.psi_map.lower, np.full(p, -np.inf)])
        self.v_upper = np.concatenate([self.psi_map.upper, np.full(p, np.inf)])
        self.se = result.bse.to_numpy() if p else np.zeros(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.base = self.criterion_at(self.v_hat)
        if not np.isfinite(self.base):
            raise NumericalError("profile: the criterion cannot be evaluated at the fit's estimates")
        self.rows: list[tuple] = []
        self.points: dict[int, list[Point]] = {}
        self.notes: list[str] = []
        self._H_full: np.ndarray | None = None
        self._H_tb: np.ndarray | None = None
        self.u_hat = np.concatenate([result.theta, result.fixef.to_numpy()])
        self.u_lower = np.concatenate([self.design.lower, np.full(p, -np.inf)])
        self.u_upper = np.full(self.u_hat.size, np.inf)
        self._H_done = False
        self.singular = is_singular(result.theta, self.design.lower)

    # ---- the criterion in lme4's parameters ------------------------------------------------------------
    def criterion_at(self, v: np.ndarray) -> float:
        """The fit's criterion at ``v = (ψ, β)`` (inf outside the bounds, where ψ is no valid SD/correlation
        matrix, or where PIRLS fails)."""
        psi, beta = v[: self.n_var], v[self.n_var :]
        if not self.psi_map.in_bounds(psi):
            return np.inf
        try:
            theta = self.psi_map.theta(psi)
            value = self.obj.at_theta_beta(theta, beta)
        except (NumericalError, np.linalg.LinAlgError, FloatingPointError):
            return np.inf
        return float(value) if np.isfinite(value) else np.inf

    def H_full(self) -> np.ndarray | None:
        """The Hessian of the criterion in ``(ψ, β)`` at the estimates (lme4's ``deriv12`` differences; None
        where it is not finite)."""
        if not self._H_done:
            self._H_done = True
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _, H = deriv12(self.criterion_at, self.v_hat, self.base, self.v_lower)
            self._H_full = H if np.all(np.isfinite(H)) else None
        return self._H_full

    def initial_slope(self, j: int) -> float | None:
        """dζ/dx at the estimate from the curvature: ``1 / sqrt(2 (H⁻¹)_jj)``."""
        H = self.H_full()
        if H is None:
            return 1.0 / self.se[j - self.n_var] if j >= self.n_var and self.se[j - self.n_var] > 0 else None
        return slope_from_curvature(H, j)

    def bounds(self, j: int) -> tuple[float, float]:
        return float(self.v_lower[j]), float(self.v_upper[j])

    # ---- one constrained fit ----------------------------------------------------------------------------
    def _fit_for(self, j: int):
        return self._fit_glmm

    def _fresh_start(self, j: int) -> np.ndarray:
        """A fresh fit's start: the model's default θ (as SDs/correlations where ``j`` is one), the fixed
        effects at the estimates."""
        v = self.v_hat.copy()
        theta0 = self.design.theta0
        v[: self.n_var] = sdcor(self.design, theta0, 1.0) if j < self.n_var else theta0
        return np.delete(v, j)

    def _space(self, j: int):
        """The variables of the fits with parameter ``j`` held: ``(estimates, lower, upper, criterion, Hessian)``.

        Holding an SD or a correlation needs lme4's ``(ψ, β)``. Holding a fixed effect, the others are
        ``(θ, β)``, as in the fit itself: where an SD is near 0 (a singular fit's random slope) its
        correlation is barely identified and the fits in ψ stall on the flat direction (7e-4 above a fresh
        fit's criterion on validation's sim_poisson_slope), while θ has no such direction.
        """
        if j < self.n_var:
            return self.v_hat, self.v_lower, self.v_upper, self.criterion_at, self.H_full()
        return self.u_hat, self.u_lower, self.u_upper, self.criterion_theta, self.H_theta_beta()

    def criterion_theta(self, u: np.ndarray) -> float:
        """The fit's criterion at ``u = (θ, β)`` (inf below θ's bounds or where PIRLS fails)."""
        theta, beta = u[: self.n_var], u[self.n_var :]
        if np.any(theta < self.design.lower):
            return np.inf
        try:
            value = self.obj.at_theta_beta(theta, beta)
        except (NumericalError, np.linalg.LinAlgError, FloatingPointError):
            return np.inf
        return float(value) if np.isfinite(value) else np.inf

    def H_theta_beta(self) -> np.ndarray | None:
        """The Hessian of the criterion in ``(θ, β)`` at the estimates: the fit's own (lme4's ``deriv12``)."""
        if self._H_tb is None:
            H = self.fit.optinfo.hessian
            if H is None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    _, H = deriv12(self.criterion_theta, self.u_hat, self.base, self.u_lower)
            self._H_tb = H if np.all(np.isfinite(H)) else np.eye(self.u_hat.size)
        return self._H_tb

    def _gradient(self, f, z: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Central differences (glmer's step, lme4's ``deriv12``), one-sided at a bound."""
        g = fd_gradient(f, z, lo, upper=hi)
        if not np.all(np.isfinite(g)):
            raise NumericalError("the criterion is not finite next to this point")
        return g

    def _fit_glmm(self, j: int, x: float, start, H) -> Point:
        """The fit with parameter ``j`` held at ``x``: every other SD, correlation and fixed effect optimised."""
        v_hat, lower, upper, crit, Hf = self._space(j)
        free = np.arange(v_hat.size) != j
        lo, hi = lower[free], upper[free]
        v = v_hat.copy()
        v[j] = x
        H_ref = None
        if Hf is not None:
            H_ref = Hf[np.ix_(free, free)]
            if not np.all(np.linalg.eigvalsh(H_ref) > 0):
                H_ref = None
        if start is None:
            start = v_hat[free].copy()
            if H_ref is not None:  # first order along the profile: dv_free/dx = −H_ff⁻¹ H_fj
                start = start - np.linalg.solve(H_ref, Hf[free, j]) * (x - v_hat[j])
        start = np.clip(start, lo, hi)
        fallback = np.clip(v_hat[free], lo, hi)
        starts = [self._feasible(v, free, j, z) for z in (start, fallback)]

        def f(z):
            w = v.copy()
            w[free] = z
            return crit(w)

        if H is None or H.shape != (lo.size, lo.size):
            H = H_ref if H_ref is not None else np.eye(lo.size)
        best = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for x0 in starts:
                try:
                    z, dev, _, H_new, _, ok = quasi_newton(
                        None,
                        x0,
                        lo,
                        hi,
                        H,
                        self.fit_tol,
                        probe=np.where(lo == 0, PROBE, 0.0),
                        H_check=H_ref,
                        fun=f,
                        gradient=lambda z: self._gradient(f, z, lo, hi),
                    )
                except (NumericalError, np.linalg.LinAlgError):
                    continue
                if ok and np.isfinite(dev):
                    best = (np.asarray(z, float), float(f(z)), H_new)
                    break
            if best is None:  # no convergence: BOBYQA from the start
                z, dev = _minimise(f, starts[0], lo, hi)
                best = (np.asarray(z, float), float(f(z)) if np.isfinite(dev) else np.nan, None)
            elif np.any((lo == 0) & (best[0] < 10 * SINGULAR_TOL)):
                # an SD (θ_k) that ends next to 0: the criterion is even in it, so its gradient vanishes there
                # and BFGS stops on the ridge where the optimum may lie off it (β_x's profile of validation's
                # sim_poisson_slope: θ = 5.6e-6, 4e-3 above the optimum at θ = 0.016 a fresh glmer fit reaches);
                # BOBYQA from there, as glmer's joint stage near a bound, keeping the lower
                z, dev = _minimise(f, best[0], lo, hi)
                if np.isfinite(dev) and dev < best[1]:
                    best = (np.asarray(z, float), float(f(z)), best[2])
        z, dev, H_new = best
        w = v.copy()
        w[free] = z
        ddev = self._held_derivative(crit, w, j, lower[j], upper[j]) if np.isfinite(dev) else None
        zeta, slope = self._zeta(j, x, dev, ddev)
        if not np.isfinite(dev):
            zeta = np.nan
        if j >= self.n_var:  # (θ, β) → lme4's (ψ, β)
            w = np.concatenate([sdcor(self.design, w[: self.n_var], 1.0), w[self.n_var :]])
        return Point(x, zeta, dev, slope, w, z.copy(), H_new)

    @staticmethod
    def _held_derivative(crit, w: np.ndarray, j: int, lo: float, hi: float) -> float | None:
        """∂d/∂x at the constrained optimum, all else fixed (the envelope theorem): one central difference."""
        a, b = w.copy(), w.copy()
        a[j], b[j] = min(w[j] + DERIV_STEP, hi), max(w[j] - DERIV_STEP, lo)
        if a[j] == b[j]:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            d = (crit(a) - crit(b)) / (a[j] - b[j])
        return float(d) if np.isfinite(d) else None

    def _feasible(self, v: np.ndarray, free: np.ndarray, j: int, z: np.ndarray) -> np.ndarray:
        """A start whose SD/correlation matrices are valid (the other correlations shrunk, ψ[j] held)."""
        w = v.copy()
        w[free] = z
        if j < self.n_var:
            w[: self.n_var] = self.psi_map.feasible(w[: self.n_var], j)
        return w[free]


def estimates_glmm(result, names: list[str]):
    """lme4's ``devfun2`` optimum of a GLMM: ``Cv_to_Sv(θ)`` (σ = 1) and β, named as lme4 names them."""
    import pandas as pd

    values = np.concatenate([sdcor(result.design, result.theta, 1.0), result.fixef.to_numpy()])
    return pd.Series(values, index=names, name="estimate")
