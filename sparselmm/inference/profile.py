"""Likelihood profiles and profile confidence intervals, as lme4's ``profile.merMod`` / ``confint.thpr``.

Every profile is on the ML criterion, as lme4's (its ``devfun2`` refits a REML fit by ML first): a REML fit
is refitted by ML (:func:`~sparselmm.inference.bootstrap.refit_ml`) and its intervals are those of the ML
fit. For a parameter ``x`` with ML estimate ``x̂`` and minimum deviance ``d̂``::

    ζ(x) = sign(x − x̂) · sqrt(d(x) − d̂),   d(x) = min of the deviance with x held fixed,

and the interval at ``level`` is where ``ζ = ±z_{(1+level)/2}``.

* Variance parameters (lme4's ``.sigNN`` — SDs and correlations on the data scale — and ``.sigma``) are
  profiled over lme4's ``(sd/cor, σ)`` parametrisation: with ``ψ = (sd/cor…, σ)`` the ML deviance is
  ``log|L_θ|² + r²(θ)/σ² + n log(2πσ²) − Σ log w`` where ``θ`` follows from ``ψ`` (per term, the Cholesky
  factor of the SD/correlation matrix over σ); one component of ψ is fixed and the others minimised by
  BOBYQA within their bounds (SD ≥ 0, −1 ≤ cor ≤ 1, σ > 0).
* A fixed effect ``β_j`` is profiled by moving its column to the offset at the fixed value
  (:meth:`~sparselmm.deviance.ProfiledDeviance.with_columns_in_offset`: only right-hand sides change) and
  minimising the profiled deviance over θ.

Where lme4 tabulates ζ on a grid and interpolates a spline through it, this module solves ``ζ(x) = ±z``
directly (bracketing steps extrapolated from ζ's slope, then Brent's method), warm-starting each
constrained fit from the nearest point already fitted. Every point fitted is kept (``Profile.points``):
ζ must be monotone in ``x`` across them, and a constrained fit below ``d̂`` (a better optimum than the fit
found) is reported in ``Profile.notes`` with a warning, never silently used. An interval end that reaches
a bound before ``|ζ|`` reaches ``z`` is the bound (an SD's 0, a correlation's ±1), as lme4 reports 0 there.
The fitted model is not changed: the profile works on its own factor workspace.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.stats import norm

from ..errors import NumericalError
from ..optimize import optimize_theta
from .bootstrap import refit_ml
from .confint import check_level, estimates, parameter_names, percent_labels, select_parameters

__all__ = ["Profile", "profile"]

# a constrained deviance below the minimum by more than this (absolute + relative) is reported as a new
# optimum; smaller differences are the optimisers' tolerance
DEV_TOL_ABS, DEV_TOL_REL = 1e-6, 1e-9
NON_MONO_TOL = 0.01  # lme4's confint.thpr non.mono.tol
MAX_BRACKET_STEPS = 30
# BOBYQA's tolerances for the constrained fits: ζ² = d − d̂ is ≈ 4 at the ends, so 1e-7 in the deviance is
# ~1e-8 in ζ, far below the 1e-4 at which lme4's spline-interpolated ends differ from the solved ones
NLOPT_FTOL, NLOPT_XTOL = 1e-7, 1e-6
# Brent's tolerance on the interval ends, relative
END_RTOL = 1e-7


class ProfileWarning(UserWarning):
    """A profile found a lower deviance than the fit, or ζ is not monotone."""


def _psd_cholesky(A: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of a positive semi-definite matrix; a zero pivot gives a zero column."""
    k = A.shape[0]
    L = np.zeros_like(A)
    scale = max(float(np.max(np.abs(np.diag(A)))), 1e-300)
    for j in range(k):
        d = A[j, j] - L[j, :j] @ L[j, :j]
        if d <= 1e-13 * scale:
            if d < -1e-8 * scale:
                raise np.linalg.LinAlgError("not positive semi-definite")
            continue
        L[j, j] = np.sqrt(d)
        L[j + 1 :, j] = (A[j + 1 :, j] - L[j + 1 :, :j] @ L[j, :j]) / L[j, j]
    return L


class _Psi:
    """Map between lme4's ``(sd/cor…, σ)`` and θ, and the ML deviance in those parameters."""

    def __init__(self, devfun, design):
        self.devfun = devfun
        self.design = design
        self.n = devfun.n
        lower, upper = [], []
        for t in design.terms:
            r, c = t.tril_indices()
            lower.extend(np.where(r == c, 0.0, -1.0))
            upper.extend(np.where(r == c, np.inf, 1.0))
        self.lower = np.array(lower + [0.0])
        self.upper = np.array(upper + [np.inf])

    def theta(self, psi: np.ndarray) -> np.ndarray:
        sigma = psi[-1]
        theta = np.empty(self.design.n_theta)
        for t in self.design.terms:
            vals = psi[t.theta_offset : t.theta_offset + t.n_theta]
            r, c = t.tril_indices()
            if t.k == 1:
                theta[t.theta_offset] = vals[0] / sigma
                continue
            S = np.zeros((t.k, t.k))
            S[r, c] = vals
            sd = np.diag(S).copy()
            below = np.tril(S, -1)  # the correlations
            R = np.eye(t.k) + below + below.T
            cov = (sd[:, None] * R * sd[None, :]) / sigma**2
            T = _psd_cholesky(cov)
            theta[t.theta_offset : t.theta_offset + t.n_theta] = T[r, c]
        return theta

    def deviance(self, psi: np.ndarray) -> float:
        if psi[-1] <= 0 or np.any(psi < self.lower) or np.any(psi > self.upper):
            return np.inf
        try:
            state = self.devfun.solve(self.theta(psi))
        except (NumericalError, np.linalg.LinAlgError):
            return np.inf
        s2 = psi[-1] ** 2
        return float(state.ldL2 - self.devfun.cross.sum_log_w + state.pwrss / s2 + self.n * np.log(2 * np.pi * s2))


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
class Profile:
    """The profiles of an ML (or ML-refitted) lmer fit.

    Attributes
    ----------
    points : DataFrame
        Every constrained fit: ``par`` (lme4's name), ``value``, ``zeta``, ``deviance``.
    estimates : Series
        The ML estimates (the centre of each profile).
    intervals : dict
        Per parameter and level, the interval found.
    notes : list of str
        New lower deviances, non-monotone profiles, interval ends at a bound.
    base_deviance : float
        The ML deviance of the fit (``d̂``).
    """

    points: pd.DataFrame
    estimates: pd.Series
    intervals: dict
    notes: list[str] = field(default_factory=list)
    base_deviance: float = np.nan

    def confint(self, level: float = 0.95) -> pd.DataFrame:
        """Profile intervals, lme4's layout (rows: parameters profiled; columns e.g. ``2.5 %``, ``97.5 %``)."""
        level = check_level(level)
        names = [n for n in self.estimates.index if (n, level) in self.intervals]
        if not names:
            raise NumericalError(f"No profile was computed at level={level}; call profile(..., level={level}).")
        table = np.array([self.intervals[(n, level)] for n in names])
        return pd.DataFrame(table, index=names, columns=percent_labels(level))


class _Profiler:
    def __init__(self, result):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.fit = refit_ml(result)
        self.devfun = self.fit.deviance_function.with_reml(False)  # own workspace: the fit is not touched
        self.design = self.fit.design
        self.psi_map = _Psi(self.devfun, self.design)
        self.est = estimates(self.fit)
        self.names = parameter_names(self.fit)
        self.n_var = self.design.n_theta + 1
        self.base = self.fit.objective
        self.psi_hat = self.est.to_numpy()[: self.n_var].copy()
        self.se = np.sqrt(np.diag(self.fit.vcov.to_numpy())) if self.design.p else np.zeros(0)
        self.rows: list[tuple] = []
        self.notes: list[str] = []
        self.start: dict[str, list] = {}

    # the constrained deviance of one parameter at one value, warm-started from the nearest fitted point
    def deviance_at(self, j: int, x: float) -> float:
        name = self.names[j]
        starts = self.start.setdefault(name, [])
        if j < self.n_var:
            free = np.arange(self.n_var) != j
            x0 = self.psi_hat if not starts else min(starts, key=lambda s: abs(s[0] - x))[1]
            psi = x0.copy()
            psi[j] = x

            def fun(z):
                p = psi.copy()
                p[free] = z
                return self.psi_map.deviance(p)

            z, dev = _minimise(fun, x0[free], self.psi_map.lower[free], self.psi_map.upper[free])
            psi[free] = z
            starts.append((x, psi))
        else:
            col = j - self.n_var
            theta0 = self.fit.theta if not starts else min(starts, key=lambda s: abs(s[0] - x))[1]
            reduced = self.devfun.with_columns_in_offset([col], x, reml=False, share_factor=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                theta, dev, _ = optimize_theta(
                    reduced, theta0, self.design.lower, self.fit.optinfo.optimizer, None, False, True
                )
            starts.append((x, theta))
        diff = dev - self.base
        if diff < -(DEV_TOL_ABS + DEV_TOL_REL * abs(self.base)):
            self.notes.append(
                f"profiling {name} at {x:.6g} found a deviance {-diff:.3g} below the fit's: the fit is not at "
                "the optimum; refit from there (the profile keeps the fit's minimum)"
            )
        zeta = np.sign(x - self.est.iloc[j]) * np.sqrt(max(diff, 0.0))
        self.rows.append((name, x, zeta, dev))
        return zeta

    def bounds(self, j: int) -> tuple[float, float]:
        if j < self.n_var:
            return self.psi_map.lower[j], self.psi_map.upper[j]
        return -np.inf, np.inf

    def first_step(self, j: int) -> float:
        x = self.est.iloc[j]
        if j >= self.n_var:
            return float(self.se[j - self.n_var]) if self.se[j - self.n_var] > 0 else max(abs(x), 1.0) * 0.1
        lo, hi = self.bounds(j)
        if lo == -1.0:  # a correlation
            return 0.1
        return max(0.2 * abs(x), 1e-3 * self.psi_hat[-1])

    def end(self, j: int, direction: int, z: float) -> float:
        """The value where ζ = direction·z, or the bound if ζ stays short of it there."""
        x_hat = float(self.est.iloc[j])
        lo, hi = self.bounds(j)
        bound = lo if direction < 0 else hi
        h = self.first_step(j)
        x_prev, zeta_prev = x_hat, 0.0
        for _ in range(MAX_BRACKET_STEPS):
            x = x_prev + direction * h
            if (direction < 0 and x <= bound) or (direction > 0 and x >= bound):
                x = bound
            zeta = self.deviance_at(j, x)
            if abs(zeta) >= z:
                target = direction * z

                def gap(v, j=j, target=target):
                    return self.deviance_at(j, v) - target

                return brentq(gap, min(x_prev, x), max(x_prev, x), xtol=END_RTOL * max(abs(x), 1e-8), rtol=END_RTOL)
            if x == bound:
                self.notes.append(f"{self.names[j]}: |zeta| stays below {z:.3g} up to the bound {bound:g}")
                return bound
            slope = abs(zeta - zeta_prev) / h
            grow = (z - abs(zeta)) / slope * 1.2 if slope > 0 else 2 * h
            x_prev, zeta_prev = x, zeta
            h = float(np.clip(grow, 0.2 * h, 4 * h))
        self.notes.append(f"{self.names[j]}: no end of the profile within {MAX_BRACKET_STEPS} steps")
        return np.nan


def profile(result, which=None, level: float = 0.95) -> Profile:
    """Profile the ML deviance of an lmer fit (lme4's ``profile.merMod``) and find the intervals at ``level``.

    Parameters
    ----------
    result : LmerResult
        A REML fit is profiled on the ML criterion, as in lme4 (see the module docstring).
    which : str, list or None
        Parameters (lme4's names, ``"theta_"``, ``"beta_"``, positions); all by default.
    level : float
        Confidence level of the intervals located (default 0.95).

    Returns
    -------
    Profile
    """
    level = check_level(level)
    prof = _Profiler(result)
    chosen = select_parameters(which, prof.names, prof.n_var)
    z = float(norm.ppf((1 + level) / 2))
    intervals = {}
    for j in chosen:
        lower, upper = prof.end(j, -1, z), prof.end(j, +1, z)
        intervals[(prof.names[j], level)] = (lower, upper)
        pts = sorted((r[1], r[2]) for r in prof.rows if r[0] == prof.names[j])
        zetas = np.array([p[1] for p in pts])
        if zetas.size > 1 and np.min(np.diff(zetas)) < -NON_MONO_TOL:
            prof.notes.append(f"non-monotonic profile for {prof.names[j]}")
    prof.devfun.solve(prof.fit.theta)
    notes = list(dict.fromkeys(prof.notes))
    for note in notes:
        if "below the fit" in note or "non-monotonic" in note:
            warnings.warn(note, ProfileWarning, stacklevel=2)
    points = pd.DataFrame(prof.rows, columns=["par", "value", "zeta", "deviance"])
    return Profile(points, prof.est, intervals, notes, prof.base)
