"""Likelihood profiles and profile confidence intervals, as lme4's ``profile.merMod`` / ``confint.thpr``.

**Criterion.** By default every profile is on the ML criterion, as lme4's (its ``devfun2`` refits a REML fit
by ML first): a REML fit is refitted by ML (:func:`~sparselmm.refit.refit_ml`) and the
intervals are those of the ML fit. ``criterion="REML"`` profiles the variance parameters on the REML
criterion instead (of the REML fit, or of an ML fit refitted by REML); the fixed effects have no REML
profile (the restricted likelihood does not depend on β). For a parameter ``x`` with estimate ``x̂`` and
minimum criterion ``d̂``::

    ζ(x) = sign(x − x̂) · sqrt(d(x) − d̂),   d(x) = min of the criterion with x held fixed,

and the interval at ``level`` is where ``ζ = ±z_{(1+level)/2}``.

* Variance parameters (lme4's ``.sigNN`` — SDs and correlations on the data scale — and ``.sigma``) are
  profiled over lme4's ``(sd/cor, σ)`` parametrisation ψ: the criterion is
  ``ld(θ) + r²(θ)/σ² + ν log(2πσ²) − Σ log w`` (ML: ``ld = log|L_θ|²``, ``ν = n``; REML adds ``log|R_X|²``,
  ``ν = n − p``) with θ following from ψ (per term, the Cholesky factor of the SD/correlation matrix over σ);
  one component of ψ is held and the others minimised within their bounds (SD ≥ 0, −1 ≤ cor ≤ 1, σ > 0).
* A fixed effect ``β_j`` is profiled by moving its column to the offset at the held value
  (:meth:`~sparselmm.deviance.ProfiledDeviance.with_columns_in_offset`: only right-hand sides change) and
  minimising the ML deviance over θ.

**How, and why it is fast.** Each constrained fit is a projected BFGS on the exact gradient
(:mod:`sparselmm.inference._engine`: dense q × q algebra for small models, the dense-Schur factors' gradient
for large crossed ones), warm-started from the neighbouring point (extrapolated along the profile) with the
Hessian of the problem carried along; the gradient in ψ is the chain rule through the Cholesky factor's
derivative. Its by-product, the derivative of the profiled criterion in the held value (the envelope
theorem), makes ``ζ(x) = ±z`` a Newton iteration — on ``log x`` for SDs and σ, on ``atanh x`` for
correlations — that needs 2–4 constrained fits per interval end, where lme4 tabulates ζ on a grid of ~10
points per side and interpolates a spline. Models without an exact gradient (large q with vector-valued
terms on CHOLMOD) use BOBYQA and the secant method instead. :meth:`Profile.table` also tabulates ζ on lme4's
grid (steps of ``cutoff/8`` in ζ out to ``cutoff = sqrt(χ²_{1−alphamax}(npar))``) for plots and lme4's
``as.data.frame(profile(m))`` layout.

Every point fitted is kept: ζ must be monotone in ``x`` across them, and a constrained fit below ``d̂`` (a
better optimum than the fit found) is reported in ``Profile.notes`` with a warning, never silently used. An
interval end that reaches a bound before ``|ζ|`` reaches ``z`` is the bound (an SD's 0, a correlation's ±1),
as lme4 reports 0 there. The fitted model is not changed: the profile works on its own factor workspace.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy.interpolate import PchipInterpolator
from scipy.stats import chi2, norm

from ..errors import ModelSpecError, NumericalError, caller_stacklevel
from ..linalg.threads import blas_threads
from ..optimize import is_singular, optimize_theta
from ..parameters import (
    SdCorMap,
    check_level,
    estimates,
    parameter_names,
    parameter_values,
    percent_labels,
    select_parameters,
)
from ._engine import dense_size, evaluator, hessian, quasi_newton

if TYPE_CHECKING:
    from collections.abc import Sequence

    from matplotlib.figure import Figure

__all__ = ["Profile", "ProfileWarning", "profile"]

# a constrained deviance below the minimum by more than this (absolute + relative) is reported as a new
# optimum; smaller differences are the optimisers' tolerance
DEV_TOL_ABS, DEV_TOL_REL = 1e-6, 1e-9
NON_MONO_TOL = 0.01  # lme4's confint.thpr non.mono.tol
MAX_STEPS = 40  # constrained fits per interval end (root finding) or per side (grid)
# the constrained fits stop when the predicted decrease of the criterion is below this (deviance units):
# ζ² = d − d̂ ≈ 4 at the ends, so the error in ζ is ~1e-10
FIT_TOL = 1e-9
# the interval ends are solved to |ζ − z| below this: an error in x of ZETA_TOL / ζ'(x), ~1e-7 of the
# interval's half-width, where lme4's spline-interpolated ends differ from the exact ones by ~1e-4
ZETA_TOL = 1e-7
# BOBYQA's tolerances where no gradient is available
NLOPT_FTOL, NLOPT_XTOL = 1e-10, 1e-8
# lme4's profile defaults: alphamax = 0.01, maxpts = 100, delta = cutoff / 8
ALPHAMAX, GRID_STEPS = 0.01, 8
# the SD or σ of a Newton step on log x that goes below this fraction of the estimate is tried at 0; a
# correlation beyond ±(1 − this) at ±1
BOUND_SNAP = 1e-3
# a constrained fit that stops at a zero SD (θ_k = 0) tries this step off it (in θ; in ψ times σ̂): the
# criterion is even in a scalar θ_k, so 0 is stationary and may be a maximum along θ_k (Dyestuff2's β
# profile: θ = 0 at the estimate, 0.12 with β held 1.7 SE away)
PROBE = 1e-3


class ProfileWarning(UserWarning):
    """A profile found a lower deviance than the fit, or ζ is not monotone."""


class _Psi(SdCorMap):
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
    """BOBYQA (NLopt) within bounds; the best point evaluated if NLopt gives up on round-off."""
    if x0.size == 0:
        return x0, fun(x0)
    import nlopt

    best = [np.inf, x0.copy()]

    def f(x, grad):
        val = fun(np.asarray(x))
        if val < best[0]:
            best[0], best[1] = val, np.array(x)
        return val if np.isfinite(val) else 1e300

    opt = nlopt.opt(nlopt.LN_BOBYQA, x0.size)
    opt.set_min_objective(f)
    lo = np.where(np.isfinite(lower), lower, -1e300)
    hi = np.where(np.isfinite(upper), upper, 1e300)
    opt.set_lower_bounds(lo)
    opt.set_upper_bounds(hi)
    x0 = np.clip(x0, lo, hi)
    step = np.maximum(0.05 * np.abs(x0), 0.01)
    # keep the first step inside the bounds (BOBYQA needs room on both sides)
    step = np.minimum(step, np.maximum(np.minimum(x0 - lo, hi - x0), 1e-4))
    opt.set_initial_step(step)
    opt.set_xtol_abs(NLOPT_XTOL)
    opt.set_ftol_abs(NLOPT_FTOL)
    opt.set_maxeval(5000)
    try:
        x = opt.optimize(x0)
        fx = opt.last_optimum_value()
    except (nlopt.RoundoffLimited, ValueError):
        x, fx = best[1], best[0]
    if best[0] < fx:
        x, fx = best[1], best[0]
    return np.asarray(x), float(fx)


@dataclass
class _Point:
    """One constrained fit: the held value, ζ, the criterion, its derivative in the held value, all
    parameters there (lme4's order) and what warm-starts a neighbour."""

    x: float
    zeta: float
    deviance: float
    slope: float | None  # dζ/dx, None where no gradient is available
    params: np.ndarray
    free: np.ndarray  # the optimised variables (ψ without x, or θ)
    H: np.ndarray | None


@dataclass
class Profile:
    """The profiles of an lmer fit (lme4's ``thpr``), from :func:`profile` or ``LmerResult.profile``.

    Attributes
    ----------
    points : DataFrame
        Every constrained fit: ``par`` (lme4's name), ``value``, ``zeta``, ``deviance``.
    estimates : Series
        The estimates on the profiled criterion (the centre of each profile).
    intervals : dict
        ``(name, level) -> (lower, upper)``, the ends solved for.
    notes : list of str
        New lower deviances, non-monotone profiles, interval ends at a bound.
    base_deviance : float
        The criterion at the estimates (``d̂``).
    criterion : str
        ``"ML"`` or ``"REML"``.
    frame : DataFrame
        lme4's ``as.data.frame(profile(m))``: ``.zeta``, every parameter at each point, ``.par``,
        ``.focal`` (the held value), plus ``deviance``; see :meth:`table`.
    """

    points: pd.DataFrame
    estimates: pd.Series
    intervals: dict
    notes: list[str] = field(default_factory=list)
    base_deviance: float = np.nan
    criterion: str = "ML"
    frame: pd.DataFrame | None = None
    seconds: float = np.nan
    bounds: dict = field(default_factory=dict)

    def table(self, which=None) -> pd.DataFrame:
        """The ζ table in lme4's ``as.data.frame(profile(m))`` layout (optionally for some parameters).

        One row per point fitted, grouped by profiled parameter (``.par``) and sorted by its value
        (``.focal``), with the values of all parameters at that point and the criterion (``deviance``).
        """
        frame = self.frame
        if which is None:
            return frame.copy()
        names = [which] if isinstance(which, str) else list(which)
        unknown = [n for n in names if n not in set(frame[".par"])]
        if unknown:
            raise ModelSpecError(f"{unknown} were not profiled; the profile has {list(dict.fromkeys(frame['.par']))}.")
        return frame[frame[".par"].isin(names)].copy()

    @property
    def parameters(self) -> list[str]:
        """The parameters profiled, in lme4's order."""
        return list(dict.fromkeys(self.points["par"]))

    def confint(self, level: float = 0.95) -> pd.DataFrame:
        """Profile intervals, lme4's layout (rows: parameters profiled; columns e.g. ``2.5 %``, ``97.5 %``).

        At a level the profile solved for, the ends are exact; at another level they are interpolated
        (monotone cubic through the points fitted, as lme4's spline), NaN where the points do not reach.

        Parameters
        ----------
        level : float
            Confidence level, strictly between 0 and 1.

        Returns
        -------
        DataFrame
            One row per parameter profiled (lme4's names), columns named by the percentages.
        """
        level = check_level(level)
        names = self.parameters
        table = np.full((len(names), 2), np.nan)
        z = float(norm.ppf((1 + level) / 2))
        for i, name in enumerate(names):
            if (name, level) in self.intervals:
                table[i] = self.intervals[(name, level)]
                continue
            pts = self.points[self.points["par"] == name].sort_values("value")
            zeta, x = pts["zeta"].to_numpy(), pts["value"].to_numpy()
            keep = np.concatenate([[True], np.diff(zeta) > 0])  # a strictly increasing ζ to invert
            zeta, x = zeta[keep], x[keep]
            if zeta.size < 2:
                continue
            back = PchipInterpolator(zeta, x, extrapolate=False)
            ends = back([-z, z])
            lo, hi = self.bounds.get(name, (-np.inf, np.inf))
            if np.isnan(ends[0]) and x[0] == lo:
                ends[0] = lo
            if np.isnan(ends[1]) and x[-1] == hi:
                ends[1] = hi
            table[i] = ends
        return pd.DataFrame(table, index=names, columns=percent_labels(level))

    def plot(self, which: str | list[str] | None = None, absolute: bool = False, **kwargs: Any) -> Figure:
        """ζ against each parameter (lme4's ``xyplot(profile)``).

        Parameters
        ----------
        which : str or list of str, optional
            Parameters to draw; all profiled ones by default.
        absolute : bool
            Plot ``|ζ|`` (lme4's ``absVal = TRUE``).
        **kwargs
            ``levels`` and ``figsize`` of :func:`sparselmm.plot.plot_profile`.

        Returns
        -------
        matplotlib.figure.Figure
            One panel per parameter; needs matplotlib (``pip install "sparselmm[plot]"``).
        """
        from ..plot import plot_profile

        return plot_profile(self, which=which, absolute=absolute, **kwargs)


class _Profiler:
    def __init__(self, result, criterion: str):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.fit = result.refit_ml() if criterion == "ML" else result.refit_reml()
        reml = criterion == "REML"
        self.criterion = criterion
        self.devfun = self.fit.deviance_function.with_reml(reml)  # own workspace: the fit is not touched
        self.design = self.fit.design
        self.ev = evaluator(self.devfun)
        self.psi_map = _Psi(self.devfun, self.design, self.ev)
        self.est = estimates(self.fit)
        self.names = parameter_names(self.fit)
        self.n_var = self.design.n_theta + 1
        self.base = self.fit.objective
        self.psi_hat = self.est.to_numpy()[: self.n_var].copy()
        self.beta_hat = self.fit.fixef.to_numpy()
        self.se = np.sqrt(np.diag(self.fit.vcov.to_numpy())) if self.design.p else np.zeros(0)
        self.rows: list[tuple] = []
        self.points: dict[int, list[_Point]] = {}
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
        H = self.H_psi()
        if H is None:
            return None
        try:
            v = float(np.linalg.inv(H)[j, j])
        except np.linalg.LinAlgError:
            return None
        return 1.0 / math.sqrt(2 * v) if v > 0 else None

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

    def deviance_at(self, j: int, x: float) -> _Point:
        """The constrained fit with parameter j held at x (warm-started), recorded."""
        start, H = self._start(j, x)
        if self._scale_row(j) is not None:
            fit = self._fit_scale
        elif j < self.n_var and self._cor_rows(j) is not None and self._cor_rows(j)[2] is not None:
            fit = self._fit_correlation
        elif j < self.n_var:
            fit = self._fit_variance
        else:
            fit = self._fit_beta
        pt = fit(j, x, start, H)
        if self.singular and fit is not self._fit_variance:
            # a singular fit's criterion has optima on several faces of the boundary, and a warm start can
            # keep the constrained fit on the wrong one (σ's profile on validation/data/maximal_3cond.csv ended
            # 0.38 above the fit from the model's own start): fit from there too, keep the lower
            other = fit(j, x, self.fit.optinfo.theta_start.copy(), None)
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

    def _fit_variance(self, j: int, x: float, start, H) -> _Point:
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
        return _Point(x, zeta, float(dev), slope, np.concatenate([p, beta]), p[free], H_new)

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

    def _fit_scale(self, j: int, x: float, start, H) -> _Point:
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

    def _fit_correlation(self, j: int, x: float, start, H) -> _Point:
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
        return _Point(x, zeta, float(state.deviance), slope, params, np.asarray(f, float).copy(), H_new)

    def _fit_at_zero(self, j: int, x: float, theta0, lower, upper) -> _Point:
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

    def _scale_point(self, j, x, theta, sigma, dev, ddev, beta, H_new) -> _Point:
        params = parameter_values(self.design, theta, sigma, beta)
        params[j] = x  # exactly the held value (σ·‖λ_j‖ rounds)
        zeta, slope = self._zeta(j, x, dev, ddev)
        return _Point(x, zeta, dev, slope, params, np.asarray(theta, float).copy(), H_new)

    def _feasible_free(self, psi: np.ndarray, free: np.ndarray, j: int, z: np.ndarray) -> np.ndarray:
        """The free part of a start made valid by :meth:`_Psi.feasible` (ψ[j] held)."""
        p = psi.copy()
        p[free] = z
        return self.psi_map.feasible(p, j)[free]

    def _beta_evaluator(self, col: int, x: float):
        from ._engine import DenseDeviance, FactorDeviance

        if isinstance(self.ev, DenseDeviance):
            return self.ev.with_cross(self.devfun.cross.with_columns_in_offset([col], x), reml=False)
        if isinstance(self.ev, FactorDeviance):
            return FactorDeviance(self.devfun.with_columns_in_offset([col], x, reml=False, share_factor=True))
        return None

    def _fit_beta(self, j: int, x: float, start, H) -> _Point:
        col = j - self.n_var
        lower = self.design.lower
        theta0 = self.fit.theta if start is None else np.maximum(start, lower)
        ev = self._beta_evaluator(col, x)
        theta = None
        if ev is not None:
            if H is None:
                H = self.H_theta() if self.H_theta() is not None else np.eye(lower.size)
            try:
                theta, dev, _, H_new, _, ok = quasi_newton(
                    ev.value_and_gradient,
                    theta0,
                    lower,
                    np.full(lower.size, np.inf),
                    H,
                    FIT_TOL,
                    probe=np.where(lower == 0, PROBE, 0.0),
                    H_check=self.H_theta(),
                )
                parts = ev.parts(theta, gradient=True)
            except NumericalError:
                ok = False
            if not ok:
                theta = None
        if theta is None:
            reduced = self.devfun.with_columns_in_offset([col], x, reml=False, share_factor=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                theta, dev, _ = optimize_theta(reduced, theta0, lower, "bobyqa", None, False, True)
            state = reduced.solve(theta)
            beta_k, r2, ddev, H_new = state.beta, state.pwrss, None, None
        else:
            beta_k, r2 = parts.beta, parts.r2
            ddev = self._beta_slope(col, x, beta_k, parts.Lu, r2)
        n = self.devfun.n
        sigma = math.sqrt(r2 / n)
        beta = np.insert(beta_k, col, x)
        params = parameter_values(self.design, theta, sigma, beta)
        zeta, slope = self._zeta(j, x, float(dev), ddev)
        return _Point(x, zeta, float(dev), slope, params, np.asarray(theta, float).copy(), H_new)

    def _beta_slope(self, col: int, x: float, beta_k, Lu, r2: float) -> float:
        """``d/dx`` of the profiled ML deviance with ``β_col = x``: ``(n/r²) ∂r²/∂x``, ``∂r²/∂x = −2 x_jᵀWe``
        (envelope theorem), from the full model's cross-products."""
        cr = self.devfun.cross
        beta = np.insert(beta_k, col, x) - cr.beta_shift
        xWe = cr.XtWy[col] - cr.XtWX[col] @ beta - cr.ZtWX[:, col] @ Lu
        return (self.devfun.n / r2) * (-2.0 * float(xWe))

    # ---- interval ends and the grid --------------------------------------------------------------
    def _kind(self, j: int) -> str:
        """The scale of the Newton steps: ``"log"`` for SDs and σ with a positive estimate, ``"atanh"`` for
        correlations inside (−1, 1), else ``"id"``."""
        x_hat = float(self.est.iloc[j])
        if j < self.n_var and self.psi_map.is_cor[j]:
            return "atanh" if abs(x_hat) < 1 else "id"
        if j < self.n_var and x_hat > 0:
            return "log"
        return "id"

    def _propose(self, j: int, direction: int, prev: _Point | None, target: float, kind: str) -> float:
        """The next value to fit: a Newton step for ζ = target from ``prev`` (the estimate if None) on the
        ``kind`` scale, limited to one unit there (a factor e for an SD); the bound itself where a step on
        the linear scale would cross it."""
        x_hat = float(self.est.iloc[j])
        if prev is None:
            slope, x0, z0 = self.initial_slope(j), x_hat, 0.0
        else:
            slope, x0, z0 = prev.slope, prev.x, prev.zeta
        if slope is None or not slope > 0:
            slope = self._secant_slope(j, direction)
        if slope is None or not slope > 0:  # no idea of the scale: 20 % of the estimate (or 0.1 for a correlation)
            if kind == "atanh" or (j < self.n_var and self.psi_map.is_cor[j]):
                h = 0.1
            elif j < self.n_var:
                h = max(0.2 * abs(x0), 1e-3 * self.psi_hat[-1])
            else:
                h = 0.2 * max(abs(x0), 1.0)
            return x0 + direction * h
        linear = x0 + (target - z0) / slope
        lo, hi = self.bounds(j)
        if linear <= lo or linear >= hi:
            return lo if linear <= lo else hi
        if kind == "log" and x0 > 0:
            return x0 * math.exp(float(np.clip((target - z0) / (slope * x0), -1.0, 1.0)))
        if kind == "atanh" and abs(x0) < 1:
            dy = (target - z0) / (slope * (1.0 - x0 * x0))
            return math.tanh(math.atanh(x0) + float(np.clip(dy, -2.0, 2.0)))
        return linear

    def _secant_slope(self, j: int, direction: int) -> float | None:
        """dζ/dx from the two points nearest the estimate on this side (or one point and the estimate)."""
        x_hat = float(self.est.iloc[j])
        pts = sorted(
            [p for p in self.points.get(j, []) if (p.x - x_hat) * direction > 0], key=lambda p: abs(p.x - x_hat)
        )
        if not pts:
            return None
        a = pts[-1]
        xb, zb = (pts[-2].x, pts[-2].zeta) if len(pts) > 1 else (x_hat, 0.0)
        return (a.zeta - zb) / (a.x - xb) if a.x != xb else None

    def _snap(self, j: int, x: float) -> float:
        """Clip x to the bounds; within BOUND_SNAP of a zero bound (SDs) or of ±1 (correlations), the bound."""
        lo, hi = self.bounds(j)
        x_hat = float(self.est.iloc[j])
        if lo == 0.0 and x < BOUND_SNAP * x_hat:
            return 0.0
        if lo == -1.0 and abs(x) > 1 - BOUND_SNAP:
            return float(np.sign(x))
        return float(np.clip(x, lo, hi))

    def end(self, j: int, direction: int, z: float) -> float:
        """The value where ζ = direction·z, or the bound if |ζ| stays below z up to it.

        Newton steps on ζ (safeguarded: once a point beyond the end is known, steps stay inside the bracket,
        by the secant method or bisection where Newton leaves it), warm-started from the points already
        fitted on this side (e.g. the grid's).
        """
        x_hat = float(self.est.iloc[j])
        lo, hi = self.bounds(j)
        bound = lo if direction < 0 else hi
        if x_hat == bound:
            return bound
        target = direction * z
        kind = self._kind(j)
        side = [p for p in self.points.get(j, []) if (p.x - x_hat) * direction > 0]
        inside = max((p for p in side if abs(p.zeta) < z), key=lambda p: abs(p.x - x_hat), default=None)
        outside = min((p for p in side if abs(p.zeta) >= z), key=lambda p: abs(p.x - x_hat), default=None)
        known = [p for p in (inside, outside) if p is not None]
        prev = min(known, key=lambda p: abs(p.zeta - target)) if known else None
        for _ in range(MAX_STEPS):
            x = self._snap(j, self._propose(j, direction, prev, target, kind))
            a, za = (x_hat, 0.0) if inside is None else (inside.x, inside.zeta)
            if outside is not None:
                b, zb = outside.x, outside.zeta
                if not min(a, b) < x < max(a, b):  # Newton left the bracket: secant, else bisection
                    x = a + (target - za) * (b - a) / (zb - za) if zb != za else (a + b) / 2
                    if not min(a, b) < x < max(a, b):
                        x = (a + b) / 2
            elif (x - a) * direction <= 0:  # no progress outwards (flat or non-monotone ζ): double the distance
                x = self._snap(j, a + direction * max(2 * abs(a - x_hat), 1e-3 * max(abs(x_hat), 1e-3)))
            pt = self.deviance_at(j, x)
            if not np.isfinite(pt.zeta):
                self.notes.append(f"{self.names[j]}: the constrained fit failed at {x:.6g}")
                return np.nan
            if abs(pt.zeta - target) <= ZETA_TOL:
                return x
            if pt.zeta * direction < 0:  # ζ on the wrong side of 0: the profile is not monotone here
                self.notes.append(f"non-monotonic profile for {self.names[j]}")
            if abs(pt.zeta) < z:
                if x == bound:
                    self.notes.append(f"{self.names[j]}: |zeta| stays below {z:.3g} up to the bound {bound:g}")
                    return bound
                if inside is None or abs(pt.x - x_hat) > abs(inside.x - x_hat):
                    inside = pt
            elif outside is None or abs(pt.x - x_hat) < abs(outside.x - x_hat):
                outside = pt
            if inside is not None and outside is not None and abs(outside.x - inside.x) <= 1e-13 * max(abs(x), 1e-8):
                return x
            prev = pt
        self.notes.append(f"{self.names[j]}: no end of the profile within {MAX_STEPS} steps")
        return np.nan

    def grid(self, j: int, direction: int, cutoff: float, delta: float, maxpts: int) -> None:
        """lme4's tabulation: steps of about ``delta`` in ζ from the estimate until |ζ| > cutoff or a bound."""
        x_hat = float(self.est.iloc[j])
        lo, hi = self.bounds(j)
        bound = lo if direction < 0 else hi
        if x_hat == bound:
            return
        kind = self._kind(j)
        prev = None
        for _ in range(maxpts):
            target = (0.0 if prev is None else prev.zeta) + direction * delta
            x = self._snap(j, self._propose(j, direction, prev, target, kind))
            if prev is not None and (x - prev.x) * direction <= 0:
                return
            pt = self.deviance_at(j, x)
            if not np.isfinite(pt.zeta) or abs(pt.zeta) > cutoff or x == bound:
                return
            prev = pt


def _check_criterion(criterion) -> str:
    if not isinstance(criterion, str) or criterion.upper() not in ("ML", "REML"):
        raise ModelSpecError(f"criterion must be 'ML' (lme4's) or 'REML', not {criterion!r}.")
    return criterion.upper()


def _progress_bar(total: int, progress):
    from ..progress import progress_bar  # the package's one policy for bars

    return progress_bar(progress, total, desc="profile", unit="end")


def profile(
    result,
    which: str | int | Sequence[str | int] | None = None,
    level: float = 0.95,
    criterion: str = "ML",
    progress: bool | None = None,
    grid: bool = True,
    alphamax: float = ALPHAMAX,
) -> Profile:
    """Profile the criterion of an lmer fit (lme4's ``profile.merMod``) and find the intervals at ``level``.

    Parameters
    ----------
    result : LmerResult
    which : str, list or None
        Parameters (lme4's names ``.sig01``…, ``.sigma``, fixed effects; ``"theta_"``, ``"beta_"``;
        positions); all by default (the variance parameters only with ``criterion="REML"``).
    level : float
        Confidence level of the interval ends solved for exactly (default 0.95).
    criterion : {"ML", "REML"}
        ``"ML"`` (default, as lme4: a REML fit is refitted by ML first and its profile is the ML one) or
        ``"REML"``: the variance parameters profiled on the REML criterion (an ML fit is refitted by REML
        first). Fixed effects have no REML profile.
    progress : bool or None
        Progress bar on stderr (tqdm if installed): None (default) only for profiles that last more than 2 s,
        on a terminal or in a notebook; True always; False never (:mod:`sparselmm.progress`).
    grid : bool
        Also tabulate ζ on lme4's grid (steps of ``cutoff/8`` up to ``|ζ| = cutoff``) for
        :meth:`Profile.table` and plots; ``False`` solves only the interval ends (what ``confint`` needs).
    alphamax : float
        lme4's ``alphamax``: ``cutoff = sqrt(qchisq(1 − alphamax, npar))``.

    Returns
    -------
    Profile
    """
    import time

    level = check_level(level)
    criterion = _check_criterion(criterion)
    if not 0 < float(alphamax) < 1:
        raise ModelSpecError(f"alphamax must be strictly between 0 and 1, not {alphamax!r}.")
    t_start = time.perf_counter()
    prof = _Profiler(result, criterion)
    names = prof.names
    if criterion == "REML":
        if which is None:
            which = "theta_"
        chosen = select_parameters(which, names, prof.n_var)
        betas = [names[j] for j in chosen if j >= prof.n_var]
        if betas:
            raise ModelSpecError(
                f"{betas} cannot be profiled on the REML criterion, which does not depend on the fixed effects; "
                "profile them on ML (criterion='ML', lme4's choice) or use 'theta_'."
            )
    else:
        chosen = select_parameters(which, names, prof.n_var)
    z = float(norm.ppf((1 + level) / 2))
    n_par = len(names)
    cutoff = max(float(np.sqrt(chi2.ppf(1 - alphamax, n_par))), z * 1.05)
    intervals = {}
    bar = _progress_bar(2 * len(chosen), progress)
    threads = blas_threads(dense_size(prof.devfun))
    threads.__enter__()
    try:
        for j in chosen:
            ends = []
            for direction in (-1, 1):
                if grid:
                    prof.grid(j, direction, cutoff, cutoff / GRID_STEPS, 100)
                ends.append(prof.end(j, direction, z))
                if bar is not None:
                    bar.update(1)
            intervals[(names[j], level)] = tuple(ends)
            pts = sorted((p.x, p.zeta) for p in prof.points.get(j, []))
            zetas = np.array([0.0] + [p[1] for p in pts])
            xs = np.array([float(prof.est.iloc[j])] + [p[0] for p in pts])
            zetas = zetas[np.argsort(xs, kind="stable")]
            if zetas.size > 1 and np.min(np.diff(zetas)) < -NON_MONO_TOL:
                prof.notes.append(f"non-monotonic profile for {names[j]}")
    finally:
        threads.__exit__(None, None, None)
        if bar is not None:
            bar.close()
    notes = list(dict.fromkeys(prof.notes))
    for note in notes:
        if "below the fit" in note or "non-monotonic" in note:
            warnings.warn(note, ProfileWarning, stacklevel=caller_stacklevel())
    points = pd.DataFrame([r[:4] for r in prof.rows], columns=["par", "value", "zeta", "deviance"])
    frame = _frame(prof, chosen)
    bounds = {names[j]: prof.bounds(j) for j in chosen}
    seconds = time.perf_counter() - t_start
    return Profile(points, prof.est, intervals, notes, prof.base, criterion, frame, seconds, bounds)


def _frame(prof: _Profiler, chosen: list[int]) -> pd.DataFrame:
    """lme4's ``as.data.frame(profile(m))``: the estimate plus every point, per parameter, by value."""
    names = prof.names
    est = prof.est.to_numpy()
    blocks = []
    for j in chosen:
        rows = [(0.0, est, prof.base)] + [(p.zeta, p.params, p.deviance) for p in prof.points.get(j, [])]
        rows.sort(key=lambda r: r[1][j])
        df = pd.DataFrame([r[1] for r in rows], columns=names)
        df.insert(0, ".zeta", [r[0] for r in rows])
        df[".par"] = names[j]
        df[".focal"] = df[names[j]]
        df["deviance"] = [r[2] for r in rows]
        blocks.append(df)
    if not blocks:
        return pd.DataFrame(columns=[".zeta", *names, ".par", ".focal", "deviance"])
    frame = pd.concat(blocks, ignore_index=True)
    frame[".par"] = pd.Categorical(frame[".par"], categories=[names[j] for j in chosen])
    return frame
