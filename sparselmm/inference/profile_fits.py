"""The constrained fits of a likelihood profile: the criterion minimised with one parameter held.

:meth:`ConstrainedFits.deviance_at` holds parameter ``j`` (lme4's order) at ``x`` and minimises over the others:

* an SD or σ over θ, σ following from θ (``σ = x / ‖λ_j‖``, :meth:`~ConstrainedFits._scale_row`); an SD at
  0 with its row of Λ fixed at 0;
* a correlation over θ with its row re-parametrised (:meth:`~ConstrainedFits._cor_rows`); where the other
  SD is 0, over lme4's ``(sd/cor…, σ)`` (``ProfileScale``, :class:`sparselmm.parameters.SdCorMap`);
* a fixed effect by moving its column to the offset at ``x``
  (:meth:`~sparselmm.deviance.ProfiledDeviance.with_columns_in_offset`: only right-hand sides change),
  minimising the ML deviance over θ.

In ψ the criterion is ``ld(θ) + r²(θ)/σ² + ν log(2πσ²) − Σ log w`` (ML: ``ld = log|L_θ|²``, ``ν = n``; REML
adds ``log|R_X|²``, ``ν = n − p``) with θ from ψ; its gradient in ψ is the chain rule through the Cholesky
factor's derivative.

Each is a projected BFGS on the exact gradient (:mod:`sparselmm.newton`), warm-started from the
neighbouring point (extrapolated along the profile) with the Hessian carried along, or BOBYQA where no
gradient exists; its derivative in ``x`` (the envelope theorem) is the slope of ζ that the interval-end
search of :mod:`sparselmm.inference.profile` steps with.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from ..criterion import evaluator
from ..errors import NumericalError
from ..newton import PROBE, hessian, quasi_newton
from ..optimize import is_singular, nlopt_minimize
from ..parameters import SdCorMap, estimates, parameter_names, parameter_values
from .profile_beta import BetaFits

# a constrained deviance below the minimum by more than this (absolute + relative) is reported as a new
# optimum; smaller differences are the optimisers' tolerance
DEV_TOL_ABS, DEV_TOL_REL = 1e-6, 1e-9
# the constrained fits stop when the predicted decrease of the criterion is below this (deviance units):
# ζ² = d − d̂ ≈ 4 at the ends, so the error in ζ is ~1e-10
FIT_TOL = 1e-9
# BOBYQA's tolerances where no gradient is available
NLOPT_FTOL, NLOPT_XTOL = 1e-10, 1e-8


class ProfileScale(SdCorMap):
    """The criterion in lme4's ``(sd/cor…, σ)`` parameters ψ (:class:`~sparselmm.parameters.SdCorMap`)."""

    def __init__(self, devfun, design, ev):
        super().__init__(design)
        self.devfun = devfun
        self.ev = ev  # exact-gradient evaluator of the criterion's pieces, or None
        self.n = devfun.n
        self.nu = devfun.n - devfun.p if devfun.reml else devfun.n
        self.reml = devfun.reml

    def deviance(self, psi: np.ndarray) -> float:
        """The criterion at ψ (inf outside the bounds or where the factorisation fails)."""
        if not self.in_bounds(psi):
            return np.inf
        try:
            theta = self.theta(psi)
            if self.ev is not None:
                parts = self.ev.parts(theta, gradient=False)
                ld, r2 = parts.ld, parts.r2
            else:
                state = self.devfun.solve(theta)
                ld = state.ldL2 + (state.ldRX2 if self.reml else 0.0)
                r2 = state.pwrss
        except (NumericalError, np.linalg.LinAlgError):
            return np.inf
        s2 = psi[-1] ** 2
        return float(ld - self.devfun.cross.sum_log_w + r2 / s2 + self.nu * np.log(2 * np.pi * s2))

    def deviance_and_gradient(self, psi: np.ndarray):
        """The criterion, its gradient in ψ and the pieces at θ(ψ) (raises NumericalError where undefined)."""
        if not self.in_bounds(psi):
            raise NumericalError("outside the bounds")
        try:
            theta, J = self.theta(psi, jacobian=True)
        except np.linalg.LinAlgError as err:
            raise NumericalError(str(err)) from None
        parts = self.ev.parts(theta, gradient=True)
        sigma = psi[-1]
        s2 = sigma * sigma
        dev = float(parts.ld - self.devfun.cross.sum_log_w + parts.r2 / s2 + self.nu * np.log(2 * np.pi * s2))
        g_theta = parts.dld + parts.dr2 / s2
        grad = J.T @ g_theta
        grad[-1] += -2.0 * parts.r2 / (s2 * sigma) + 2.0 * self.nu / sigma
        return dev, grad, parts


def _minimise(fun, x0: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, float]:
    """BOBYQA (:func:`sparselmm.optimize.nlopt_minimize`) within bounds, first steps inside them."""
    if x0.size == 0:
        return x0, fun(x0)
    x0 = np.clip(x0, lower, upper)
    step = np.maximum(0.05 * np.abs(x0), 0.01)
    # keep the first step inside the bounds (BOBYQA needs room on both sides)
    room = np.minimum(x0 - lower, upper - x0)
    step = np.minimum(step, np.maximum(np.where(np.isfinite(room), room, np.inf), 1e-4))
    x, fx, _, _ = nlopt_minimize(
        fun, x0, lower, upper, step=step, xtol_abs=NLOPT_XTOL, ftol_abs=NLOPT_FTOL, ftol_rel=0.0, maxeval=5000
    )
    return np.asarray(x), float(fx)


@dataclass
class Point:
    """One constrained fit: the held value, ζ, the criterion, its derivative in the held value, all
    parameters there (lme4's order) and what warm-starts a neighbour."""

    x: float
    zeta: float
    deviance: float
    slope: float | None  # dζ/dx, None where no gradient is available
    params: np.ndarray
    free: np.ndarray  # the optimised variables (ψ without x, or θ)
    H: np.ndarray | None


def slope_from_curvature(H: np.ndarray | None, j: int) -> float | None:
    """dζ/dx of parameter ``j`` at the estimate from the criterion's Hessian: ``1 / sqrt(2 (H⁻¹)_jj)`` (None
    where there is no Hessian or it gives no positive variance)."""
    if H is None:
        return None
    try:
        v = float(np.linalg.inv(H)[j, j])
    except np.linalg.LinAlgError:
        return None
    return 1.0 / math.sqrt(2 * v) if v > 0 else None


class ConstrainedFits(BetaFits):
    """The profiled fit, refitted on ``criterion`` (``"ML"`` or ``"REML"``), on its own factor workspace, and
    its constrained fits: :meth:`deviance_at` fits every parameter but ``j``, held at ``x``, and records the
    point (``points``, ``rows``; ``notes`` for a criterion below the fit's)."""

    fit_tol = FIT_TOL
    point = Point  # the result of one constrained fit (for BetaFits)

    def __init__(self, result, criterion: str):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.fit = result.refit_ml() if criterion == "ML" else result.refit_reml()
        reml = criterion == "REML"
        self.criterion = criterion
        self.devfun = self.fit.deviance_function.with_reml(reml)  # own workspace: the fit is not touched
        self.design = self.fit.design
        self.ev = evaluator(self.devfun)
        self.psi_map = ProfileScale(self.devfun, self.design, self.ev)
        self.est = estimates(self.fit)
        self.names = parameter_names(self.fit)
        self.n_var = self.design.n_theta + 1
        self.base = self.fit.objective
        self.psi_hat = self.est.to_numpy()[: self.n_var].copy()
        self.sd_unit = float(self.psi_hat[-1])  # σ: the scale of an SD's first step where its estimate is 0
        self.beta_hat = self.fit.fixef.to_numpy()
        self.se = np.sqrt(np.diag(self.fit.vcov.to_numpy())) if self.design.p else np.zeros(0)
        self.rows: list[tuple] = []
        self.points: dict[int, list[Point]] = {}
        self.notes: list[str] = []
        self._H_psi = None
        self._H_theta = None
        self._H_scale: dict[int, np.ndarray | None] = {}
        self.singular = is_singular(self.fit.theta, self.design.lower)
        self._ev_ml_full = None

    # ---- Hessians at the estimates (once, by differences of the exact gradient) ---------------------
    def H_psi(self):
        if self._H_psi is None and self.ev is not None:
            lo, hi = self.psi_map.lower, self.psi_map.upper

            def fg(psi):
                dev, grad, _ = self.psi_map.deviance_and_gradient(psi)
                return dev, grad

            try:
                self._H_psi = hessian(fg, self.psi_hat, lo, hi)
            except NumericalError:
                self._H_psi = None
        return self._H_psi

    def H_theta(self):
        if self._H_theta is None and self.ev is not None:
            try:
                self._H_theta = hessian(self.ev.value_and_gradient, self.fit.theta, None, None)
            except NumericalError:
                self._H_theta = None
        return self._H_theta

    def initial_slope(self, j: int) -> float | None:
        """dζ/dx at the estimate from the curvature: ``1 / sqrt(2 (H⁻¹)_jj)`` (Wald's SE for β)."""
        if j >= self.n_var:
            se = self.se[j - self.n_var]
            return 1.0 / se if se > 0 else None
        return slope_from_curvature(self.H_psi(), j)

    # ---- one constrained fit ----------------------------------------------------------------------
    def bounds(self, j: int) -> tuple[float, float]:
        if j < self.n_var:
            return float(self.psi_map.lower[j]), float(self.psi_map.upper[j])
        return -np.inf, np.inf

    def _start(self, j: int, x: float):
        """Warm start for the fit at x: the nearest point's variables (extrapolated along the profile from
        the two nearest points on that side) and its Hessian approximation."""
        pts = self.points.get(j, [])
        x_hat = float(self.est.iloc[j])
        side = [p for p in pts if (p.x - x_hat) * (x - x_hat) > 0 or p.x == x_hat]
        if not side:
            return None, None
        side.sort(key=lambda p: abs(p.x - x))
        near = side[0]
        start = near.free.copy()
        if len(side) > 1 and side[1].x != near.x:
            slope = (near.free - side[1].free) / (near.x - side[1].x)
            start = start + slope * (x - near.x)
        return start, near.H

    def _fit_for(self, j: int):
        """The constrained fit of parameter ``j``: over θ for an SD, σ or a correlation, in ψ where a
        correlation's other SD is 0, over θ with the column in the offset for a fixed effect."""
        if self._scale_row(j) is not None:
            return self._fit_scale
        if j < self.n_var and self._cor_rows(j) is not None and self._cor_rows(j)[2] is not None:
            return self._fit_correlation
        return self._fit_variance if j < self.n_var else self._fit_beta

    def _fresh_start(self, j: int) -> np.ndarray:
        """The free variables' start of a fresh fit (a singular fit's second constrained fit): the model's."""
        return self.fit.optinfo.theta_start.copy()

    def deviance_at(self, j: int, x: float) -> Point:
        """The constrained fit with parameter j held at x (warm-started), recorded."""
        start, H = self._start(j, x)
        fit = self._fit_for(j)
        pt = fit(j, x, start, H)
        if self.singular and fit is not self._fit_variance:
            # a singular fit's criterion has optima on several faces of the boundary, and a warm start can
            # keep the constrained fit on the wrong one (σ's profile on validation/data/maximal_3cond.csv ended
            # 0.38 above the fit from the model's own start): fit from there too, keep the lower
            other = fit(j, x, self._fresh_start(j), None)
            if other.deviance < pt.deviance:
                pt = other
        diff = pt.deviance - self.base
        if diff < -(DEV_TOL_ABS + DEV_TOL_REL * abs(self.base)):
            self.notes.append(
                f"profiling {self.names[j]} at {x:.6g} found a criterion {-diff:.3g} below the fit's: the fit is not "
                "at the optimum; refit from there (the profile keeps the fit's minimum)"
            )
        self.points.setdefault(j, []).append(pt)
        self.rows.append((self.names[j], x, pt.zeta, pt.deviance, pt.params))
        return pt

    def _zeta(self, j: int, x: float, dev: float, ddev: float | None):
        diff = dev - self.base
        zeta = float(np.sign(x - self.est.iloc[j]) * math.sqrt(max(diff, 0.0)))
        slope = None
        if ddev is not None and zeta != 0.0:
            slope = ddev / (2.0 * zeta)
        return zeta, slope

    def _fit_variance(self, j: int, x: float, start, H) -> Point:
        pm = self.psi_map
        free = np.arange(self.n_var) != j
        lo, hi = pm.lower[free], pm.upper[free]
        if start is None:
            start = self.psi_hat[free].copy()
            Hs = self.H_psi()
            if Hs is not None:  # first order along the profile: dψ_free/dx = −H_ff⁻¹ H_fj
                try:
                    start = start - np.linalg.solve(Hs[np.ix_(free, free)], Hs[free, j]) * (x - self.psi_hat[j])
                except np.linalg.LinAlgError:
                    pass
        start = np.clip(start, lo, hi)
        start[-1] = max(start[-1], 1e-8 * self.psi_hat[-1])
        near = min(self.points.get(j, []), key=lambda p: abs(p.x - x), default=None)
        fallback_start = np.clip(self.psi_hat[free] if near is None else near.free, lo, hi)
        psi = self.psi_hat.copy()
        psi[j] = x
        start, fallback_start = (self._feasible_free(psi, free, j, z) for z in (start, fallback_start))
        result = None
        if self.ev is not None:
            Hs = self.H_psi()
            H_ref = Hs[np.ix_(free, free)] if Hs is not None else None
            if H is None:
                H = H_ref if H_ref is not None else np.eye(free.sum())
            last = {}

            def fg(z):
                p = psi.copy()
                p[free] = z
                dev, grad, parts = pm.deviance_and_gradient(p)
                last["z"], last["grad"], last["parts"] = z, grad, parts
                return dev, grad[free]

            probe = np.where(lo == 0, PROBE * self.psi_hat[-1], 0.0)
            ok = False
            for x0 in (start, fallback_start):
                try:
                    z, dev, _, H_new, _, ok = quasi_newton(fg, x0, lo, hi, H, FIT_TOL, probe=probe, H_check=H_ref)
                    break
                except NumericalError:  # the start itself is rejected: try the plain neighbour
                    continue
            if ok and np.isfinite(dev):
                if not np.array_equal(last.get("z"), z):
                    dev, _ = fg(z)
                p = psi.copy()
                p[free] = z
                result = (p, dev, float(last["grad"][j]), last["parts"].beta, H_new)
        if result is None:  # no gradient, or the quasi-Newton fit failed: BOBYQA

            def fun(z):
                p = psi.copy()
                p[free] = z
                return pm.deviance(p)

            z, dev = _minimise(fun, start, lo, hi)
            p = psi.copy()
            p[free] = z
            if np.isfinite(dev) and dev < 1e300:
                beta = self.devfun.solve(pm.theta(p)).beta
            else:  # no valid SD/correlation matrix was found with ψ[j] held at x
                dev, beta = np.nan, np.full(self.design.p, np.nan)
            result = (p, dev, None, beta, None)
        p, dev, ddev, beta, H_new = result
        zeta, slope = self._zeta(j, x, dev, ddev)
        return Point(x, zeta, float(dev), slope, np.concatenate([p, beta]), p[free], H_new)

    # ---- SDs and σ: constrained fits over θ -------------------------------------------------------
    def _scale_row(self, j: int) -> np.ndarray | None:
        """For an SD or σ (``j`` in lme4's order), the θ positions of its row of Λ's block (empty for σ);
        None for a correlation or a fixed effect.

        These are profiled over θ rather than over the other SDs and correlations: with ``sd_j = x`` held,
        ``σ = x / ‖λ_j‖`` (``λ_j`` the row of the term's Cholesky factor) follows from θ, and every θ is a valid
        model. In ψ a singular fit's correlation matrix sits on the edge of the positive semi-definite cone,
        where most steps leave it (issue 23: a raw ``LinAlgError`` and intervals that never ended).
        """
        if j == self.n_var - 1:
            return np.zeros(0, dtype=np.int64)
        if j >= self.n_var or self.psi_map.is_cor[j]:
            return None
        for t in self.design.terms:
            if t.theta_offset <= j < t.theta_offset + t.n_theta:
                if not t.unstructured:  # a structure's SD is σ s_i (rows of its correlation factor have norm 1)
                    return np.array([j])
                r, _ = t.tril_indices()
                return t.theta_offset + np.flatnonzero(r == r[j - t.theta_offset])
        return None

    def _scale_criterion(self, j: int, x: float, gradient: bool):
        """``θ ↦ (criterion, gradient, σ², parts)`` with ``sd_j = x`` (or ``σ = x``) held, σ from θ."""
        row = self._scale_row(j)
        pm = self.psi_map
        slw, nu = self.devfun.cross.sum_log_w, pm.nu

        def crit(theta):
            theta = np.asarray(theta, float)
            norm2 = float(theta[row] @ theta[row]) if row.size else 1.0
            if not norm2 > 0:
                raise NumericalError("the held SD's row of Λ is zero")
            s2 = x * x / norm2
            if self.ev is not None:
                parts = self.ev.parts(theta, gradient=gradient)
                ld, r2, beta = parts.ld, parts.r2, parts.beta
            else:
                state = self.devfun.solve(theta)
                ld, r2, beta = state.ldL2 + (state.ldRX2 if pm.reml else 0.0), state.pwrss, state.beta
            dev = float(ld - slw + r2 / s2 + nu * math.log(2 * math.pi * s2))
            if not gradient:
                return dev, None, s2, r2, beta
            grad = parts.dld + parts.dr2 / s2
            if row.size:  # ∂s²/∂θ_row = −2 s² θ_row / ‖θ_row‖²
                grad = grad.copy()
                grad[row] += (nu / s2 - r2 / (s2 * s2)) * (-2.0 * s2 * theta[row] / norm2)
            return dev, grad, s2, r2, beta

        return crit

    def _fit_scale(self, j: int, x: float, start, H) -> Point:
        """The fit with an SD (or σ) held at ``x``, over θ (see :meth:`_scale_row`)."""
        lower = self.design.lower.copy()
        upper = np.full(lower.size, np.inf)
        row = self._scale_row(j)
        theta0 = self.fit.theta.copy() if start is None else np.maximum(start, lower)
        if x == 0.0:  # an SD at its bound: its row of Λ is 0, σ is free (the usual profiled criterion)
            lower[row] = upper[row] = 0.0
            theta0[row] = 0.0
            return self._fit_at_zero(j, x, theta0, lower, upper)
        if row.size:  # scale the held row so that σ = x / ‖λ_j‖ starts at the nearest point's σ
            near = min(self.points.get(j, []), key=lambda p: abs(p.x - x), default=None)
            sigma_ref = float(self.fit.sigma if near is None else near.params[self.n_var - 1])
            norm = math.sqrt(float(theta0[row] @ theta0[row]))
            if norm > 0:
                theta0[row] *= (x / sigma_ref) / norm
            else:
                theta0[row[-1]] = x / sigma_ref
        crit = self._scale_criterion(j, x, gradient=self.ev is not None)
        result = None
        if self.ev is not None:

            def fg(theta):
                dev, grad, *_ = crit(theta)
                return dev, grad

            if j not in self._H_scale:
                try:
                    self._H_scale[j] = hessian(fg, self.fit.theta, lower, upper)
                except NumericalError:
                    self._H_scale[j] = None
            H_ref = self._H_scale[j]
            if H is None or H.shape != (lower.size, lower.size):
                H = H_ref if H_ref is not None else np.eye(lower.size)
            try:
                theta, dev, _, H_new, _, ok = quasi_newton(
                    fg, theta0, lower, upper, H, FIT_TOL, probe=np.where(lower == 0, PROBE, 0.0), H_check=H_ref
                )
                if ok and np.isfinite(dev):
                    result = (theta, H_new)
            except NumericalError:
                pass
        if result is None:

            def fun(theta):
                try:
                    return crit(theta)[0]
                except (NumericalError, np.linalg.LinAlgError):
                    return np.inf

            theta, _ = _minimise(fun, theta0, lower, upper)
            result = (theta, None)
        theta, H_new = result
        dev, _, s2, r2, beta = crit(theta)
        # envelope theorem: d(criterion)/dx at fixed θ, through s² = x² / ‖λ_j‖²
        ddev = (self.psi_map.nu - r2 / s2) * 2.0 / x
        return self._scale_point(j, x, theta, math.sqrt(s2), float(dev), ddev, beta, H_new)

    # ---- correlations: constrained fits over θ with one row re-parametrised -------------------------
    def _cor_rows(self, j: int):
        """For a correlation, the θ positions of the two rows of its term's Cholesky factor it links
        (``pos_i`` the later row, ``pos_l`` the earlier), and the map below; None otherwise.

        A held correlation ρ between components ``i > l`` is imposed by writing row ``i`` as
        ``λ_i = ‖v‖ (ρ û + √(1 − ρ²) ŵ)`` with ``û = λ_l / ‖λ_l‖`` and ``ŵ`` the unit part of ``v`` orthogonal to
        ``û``: any ``v`` (row ``i``'s θ entries) and the other rows give a valid model with that correlation,
        so no step leaves the positive semi-definite cone, and σ is profiled out as in the fit. One
        direction of ``v`` (along ``û``) is redundant; the fit's gradient there is 0.
        """
        if j >= self.n_var or not self.psi_map.is_cor[j]:
            return None
        for t in self.design.terms:
            if t.theta_offset <= j < t.theta_offset + t.n_theta:
                if not t.unstructured:  # a structure's correlation: the fit over ψ (_fit_variance)
                    return None
                r, c = t.tril_indices()
                m = j - t.theta_offset
                i, col = int(r[m]), int(c[m])
                pos_i = t.theta_offset + np.flatnonzero(r == i)
                pos_l = t.theta_offset + np.flatnonzero(r == col)
                theta_l = self.fit.theta[pos_l]
                ok = float(theta_l @ theta_l) > 0
                if not ok:
                    return pos_i, pos_l, None
                return pos_i, pos_l, lambda f, rho, a=pos_i, b=pos_l: self._cor_theta(f, rho, a, b)
        return None

    @staticmethod
    def _cor_theta(f: np.ndarray, rho: float, pos_i: np.ndarray, pos_l: np.ndarray) -> np.ndarray:
        theta = np.array(f, dtype=float)
        u = np.zeros(pos_i.size)
        u[: pos_l.size] = theta[pos_l]
        nu_ = math.sqrt(float(u @ u))
        if nu_ == 0:
            raise NumericalError("the correlation's other SD is 0 here")
        u /= nu_
        v = theta[pos_i]
        s = math.sqrt(float(v @ v))
        w = v - (v @ u) * u
        nw = math.sqrt(float(w @ w))
        if nw <= 1e-12 * max(s, 1e-300):  # v along û: any unit vector orthogonal to û
            w = np.zeros(pos_i.size)
            w[-1] = 1.0  # the last entry of û (row l < i is zero-padded) is 0
            nw = 1.0
        theta[pos_i] = s * (rho * u + math.sqrt(max(0.0, 1.0 - rho * rho)) * w / nw)
        return theta

    def _fit_correlation(self, j: int, x: float, start, H) -> Point:
        """The fit with a correlation held at ``x``, over θ (see :meth:`_cor_rows`)."""
        pos_i, pos_l, to_theta = self._cor_rows(j)
        lower = self.design.lower.copy()
        lower[pos_i] = -np.inf  # row i is v, unconstrained
        upper = np.full(lower.size, np.inf)
        f0 = self.fit.theta.copy() if start is None else np.maximum(start, lower)
        touched = np.concatenate([pos_i, pos_l])

        def jac_theta(f):
            """∂θ/∂f for the columns the map touches (central differences of the small map)."""
            J = np.zeros((f.size, touched.size))
            for m, col in enumerate(touched):
                h = 1e-6 * max(abs(f[col]), 1e-3)
                fp, fm = f.copy(), f.copy()
                fp[col] += h
                fm[col] -= h
                J[:, m] = (to_theta(fp, x) - to_theta(fm, x)) / (2 * h)
            return J

        def fg(f):
            theta = to_theta(f, x)
            dev, g_theta = self.ev.value_and_gradient(theta)
            g = g_theta.copy()
            g[touched] = jac_theta(f).T @ g_theta
            return dev, g

        f = None
        if self.ev is not None:
            H_ref = self._H_scale.get(j)
            if j not in self._H_scale:
                try:
                    H_ref = hessian(fg, self.fit.theta, lower, upper)
                    H_ref = H_ref + 1e-6 * max(float(np.max(np.abs(np.diag(H_ref)))), 1.0) * np.eye(lower.size)
                except (NumericalError, np.linalg.LinAlgError):
                    H_ref = None
                self._H_scale[j] = H_ref
            if H is None or H.shape != (lower.size, lower.size):
                H = H_ref if H_ref is not None else np.eye(lower.size)
            try:
                z, dev, _, H_new, _, ok = quasi_newton(fg, f0, lower, upper, H, FIT_TOL, H_check=H_ref)
                if ok and np.isfinite(dev):
                    f = z
            except (NumericalError, np.linalg.LinAlgError):
                pass
        if f is None:

            def fun(z):
                try:
                    return self.devfun(to_theta(z, x))
                except NumericalError:
                    return np.inf

            f, _ = _minimise(fun, f0, lower, upper)
            H_new = None
        theta = to_theta(f, x)
        state = self.devfun.solve(theta)
        ddev = None
        if self.ev is not None:  # envelope theorem: ∂/∂x of the criterion at fixed f
            h = 1e-6
            a, b = max(x - h, -1.0), min(x + h, 1.0)
            dtheta = (to_theta(f, b) - to_theta(f, a)) / (b - a)
            ddev = float(self.ev.value_and_gradient(theta)[1] @ dtheta)
        sigma = math.sqrt(state.pwrss / self.psi_map.nu)
        params = parameter_values(self.design, theta, sigma, state.beta)
        params[j] = x
        zeta, slope = self._zeta(j, x, float(state.deviance), ddev)
        return Point(x, zeta, float(state.deviance), slope, params, np.asarray(f, float).copy(), H_new)

    def _fit_at_zero(self, j: int, x: float, theta0, lower, upper) -> Point:
        """An SD held at 0: its row of Λ fixed at 0, the other θ free, σ profiled out."""
        devfun = self.devfun
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theta = theta0
            if self.ev is not None:
                try:
                    theta, _, _, _, _, ok = quasi_newton(
                        self.ev.value_and_gradient, theta0, lower, upper, np.eye(lower.size), FIT_TOL
                    )
                except NumericalError:
                    ok = False
                if not ok:
                    theta = theta0
            free = lower != upper
            if self.ev is None or theta is theta0:

                def fun(z):
                    t = theta0.copy()
                    t[free] = z
                    return devfun(t)

                z, _ = _minimise(fun, theta0[free], lower[free], upper[free])
                theta = theta0.copy()
                theta[free] = z
        state = devfun.solve(theta)
        sigma = math.sqrt(state.pwrss / self.psi_map.nu)
        return self._scale_point(j, x, theta, sigma, float(state.deviance), None, state.beta, None)

    def _scale_point(self, j, x, theta, sigma, dev, ddev, beta, H_new) -> Point:
        params = parameter_values(self.design, theta, sigma, beta)
        params[j] = x  # exactly the held value (σ·‖λ_j‖ rounds)
        zeta, slope = self._zeta(j, x, dev, ddev)
        return Point(x, zeta, dev, slope, params, np.asarray(theta, float).copy(), H_new)

    def _feasible_free(self, psi: np.ndarray, free: np.ndarray, j: int, z: np.ndarray) -> np.ndarray:
        """The free part of a start made valid by :meth:`ProfileScale.feasible` (ψ[j] held)."""
        p = psi.copy()
        p[free] = z
        return self.psi_map.feasible(p, j)[free]
