"""Likelihood profiles and profile confidence intervals, as lme4's ``profile.merMod`` / ``confint.thpr``.

**Criterion.** By default every profile is on the ML criterion, as lme4's (its ``devfun2`` refits a REML fit
by ML first): a REML fit is refitted by ML (:func:`~sparselmm.refit.refit_ml`) and the intervals are those
of the ML fit. ``criterion="REML"`` profiles the variance parameters on the REML
criterion instead (of the REML fit, or of an ML fit refitted by REML); the fixed effects have no REML
profile (the restricted likelihood does not depend on β). For a parameter ``x`` with estimate ``x̂`` and
minimum criterion ``d̂``::

    ζ(x) = sign(x − x̂) · sqrt(d(x) − d̂),   d(x) = min of the criterion with x held fixed,

and the interval at ``level`` is where ``ζ = ±z_{(1+level)/2}``.

Each point of a profile is a constrained fit (:mod:`sparselmm.inference.profile_fits`: the variance
parameters over θ or lme4's ``(sd/cor, σ)``, a fixed effect by moving its column to the offset), a
projected BFGS on the exact gradient warm-started from its neighbour. Its by-product, the derivative of the
profiled criterion in the held value (the envelope theorem), makes ``ζ(x) = ±z`` a Newton iteration here
— on ``log x`` for SDs and σ, on ``atanh x`` for correlations — that needs 2–4 constrained fits per
interval end, where lme4 tabulates ζ on a grid of ~10 points per side and interpolates a spline. Models
without an exact gradient (large q with vector-valued terms on CHOLMOD) use BOBYQA and the secant method
instead. :meth:`Profile.table` also tabulates ζ on lme4's grid (steps of ``cutoff/8`` in ζ out to
``cutoff = sqrt(χ²_{1−alphamax}(npar))``) for plots and lme4's ``as.data.frame(profile(m))`` layout.

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

from ..criterion import dense_size
from ..errors import ModelSpecError, caller_stacklevel
from ..linalg.threads import blas_threads
from ..parameters import check_level, percent_labels, select_parameters
from .profile_fits import ConstrainedFits, Point
from .profile_glmm import GlmmConstrainedFits
from .profile_residual import ResidualConstrainedFits

if TYPE_CHECKING:
    from collections.abc import Sequence

    from matplotlib.figure import Figure

__all__ = ["Profile", "ProfileWarning", "profile"]

NON_MONO_TOL = 0.01  # lme4's confint.thpr non.mono.tol
MAX_STEPS = 40  # constrained fits per interval end (root finding) or per side (grid)
# the interval ends are solved to |ζ − z| below this: an error in x of ZETA_TOL / ζ'(x), ~1e-7 of the
# interval's half-width, where lme4's spline-interpolated ends differ from the exact ones by ~1e-4
ZETA_TOL = 1e-7
# lme4's profile defaults: alphamax = 0.01, maxpts = 100, delta = cutoff / 8
ALPHAMAX, GRID_STEPS = 0.01, 8
# the SD or σ of a Newton step on log x that goes below this fraction of the estimate is tried at 0; a
# correlation beyond ±(1 − this) at ±1
BOUND_SNAP = 1e-3


class ProfileWarning(UserWarning):
    """A profile found a lower deviance than the fit, or ζ is not monotone."""


@dataclass
class Profile:
    """The profiles of an lmer or glmer fit (lme4's ``thpr``), from :func:`profile`, ``LmerResult.profile``
    or ``GlmerResult.profile``.

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
            pts = self.points[self.points["par"] == name]
            # the estimate is the point ζ = 0 (a singular fit's SD at 0 is the lower bound itself)
            zeta = np.append(pts["zeta"].to_numpy(), 0.0)
            x = np.append(pts["value"].to_numpy(), float(self.estimates[name]))
            order = np.argsort(x, kind="stable")
            zeta, x = zeta[order], x[order]
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


class _Profiler(ConstrainedFits):
    """Where the constrained fits (:class:`~sparselmm.inference.profile_fits.ConstrainedFits`) are placed: the
    search for ``ζ = ±z`` (:meth:`end`) and lme4's grid (:meth:`grid`)."""

    def _kind(self, j: int) -> str:
        """The scale of the Newton steps: ``"log"`` for SDs and σ with a positive estimate, ``"atanh"`` for
        correlations inside (−1, 1), else ``"id"``."""
        x_hat = float(self.est.iloc[j])
        if j < self.n_var and self.psi_map.is_cor[j]:
            return "atanh" if abs(x_hat) < 1 else "id"
        if j < self.n_var and x_hat > 0:
            return "log"
        return "id"

    def _propose(self, j: int, direction: int, prev: Point | None, target: float, kind: str) -> float:
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
                h = max(0.2 * abs(x0), 1e-3 * self.sd_unit)
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


class _GlmmProfiler(_Profiler, GlmmConstrainedFits):
    """The same search over a glmer fit's constrained fits (:mod:`sparselmm.inference.profile_glmm`)."""


class _ResidualProfiler(_Profiler, ResidualConstrainedFits):
    """The same search over a residual-structure fit's constrained fits, its SD ratios and ρ on further axes
    (:mod:`sparselmm.inference.profile_residual`)."""


def _profiler(result, criterion: str) -> _Profiler:
    """The profiler of an lmer or a glmer fit (a covariance structure's SDs and correlations are profiled as an
    unstructured term's: :class:`~sparselmm.parameters.SdCorMap` maps them to the structure's θ; a glmer fit's
    are not yet)."""
    if getattr(result, "family", None) is not None:
        from ..covstruct import refuse_structured

        refuse_structured(
            result.design,
            "Likelihood profiles of glmer fits (profile, confint(method='profile'))",
            "or use confint(method='Wald')",
        )
        return _GlmmProfiler(result, criterion)
    if getattr(result, "residual_structure", None) is not None:
        return _ResidualProfiler(result, criterion)
    if not result.deviance_function.exact:  # the matrix-free criterion: no factor to profile on
        result.deviance_function.needs_exact("A likelihood profile (profile, confint(method='profile'))")
    return _Profiler(result, criterion)


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
    """Profile the criterion of an lmer or glmer fit (lme4's ``profile.merMod``) and find the intervals at
    ``level``.

    A glmer fit is profiled on the criterion it minimised, every other parameter (SDs, correlations and
    fixed effects alike) re-optimised at each point, as lme4's ``devfun2`` does for a GLMM
    (:mod:`sparselmm.inference.profile_glmm`); ``criterion`` must then be ``"ML"``.

    Parameters
    ----------
    result : LmerResult or GlmerResult
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
    prof = _profiler(result, criterion)
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
    threads = blas_threads(prof.blas_size if prof.devfun is None else dense_size(prof.devfun))
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
