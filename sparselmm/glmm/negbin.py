"""``glmer_nb``: the negative binomial GLMM with its shape θ estimated (lme4's ``glmer.nb``, glmmTMB's ``nbinom2``).

The response is a count with ``Var(y | b) = μ + μ²/θ``; ``θ → ∞`` is the Poisson GLMM. lme4 1.1-31's
``glmer.nb`` (R/glmer.nb.R), and what is done here:

1. a Poisson ``glmer`` fit of the same formula;
2. θ₀ by ``MASS::theta.ml`` on the conditional means of that fit (:func:`theta_ml`: Newton's method on the
   score of the negative binomial log-likelihood in θ, μ held; lme4's ``est_theta`` with ``limit = 20``,
   ``eps = 2 tol``);
3. a glmer fit with the family ``negative.binomial(θ₀)`` (θ known);
4. lme4's ``optTheta``: a one-dimensional minimisation of the Laplace criterion ``−2 log L`` over ``log θ``
   on ``log θ₀ ± 3`` by Brent's method (R's ``optimize``, ``tol = 5e-5``; here scipy's
   ``minimize_scalar(method="bounded")``, the same algorithm and the same tolerance), each evaluation a glmer
   refit at that fixed θ (:func:`sparselmm.glmm.fit.refit_glmm` with the family swapped, lme4's
   ``refit(setNBdisp(m, θ))``), warm-started from the evaluated fit nearest in ``log θ``.

Two things beyond lme4: where the minimum lies at an end of the interval, or the criterion is flat up to
the upper end (lme4 stops there), the search goes on over the next 6 units of ``log θ`` (at most
:data:`MAX_SHIFTS` times, within ``1e-8 <= θ <= 1e8``; a θ̂ still at the end, data with no overdispersion,
warns); and the final fit at θ̂ is a refit from the warm *and* the fresh start (the lower
kept), with the derivatives for the SEs. Its criterion is therefore the lowest of every evaluation, to
PIRLS's precision.

The result is a :class:`GlmerNbResult`: a :class:`~sparselmm.glmm.GlmerResult` whose family is
``NegativeBinomial(θ̂)``, whose ``nb_theta`` is θ̂ (lme4's ``getME(m, "glmer.nb.theta")``), whose summary
names the family ``Negative Binomial(θ̂)`` as lme4's does, and whose ``n_params`` counts θ (lme4's
``npar.merMod`` adds one for a negative binomial family: ``logLik``'s df, AIC, BIC). ``optinfo.details
["glmer_nb"]`` records the Poisson fit's criterion, θ₀, the interval(s), every θ evaluated with its criterion
and the refits' evaluation counts. ``result.refit(newresp)`` keeps θ̂ fixed, as lme4's ``refit`` of a
``glmer.nb`` fit does; ``update`` runs ``glmer_nb`` again.

Validated against lme4's ``glmer.nb`` and glmmTMB's ``nbinom2`` in ``validation/compare_glmer_nb.py``.
"""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING

import numpy as np
from scipy import optimize, special

from ..errors import ConvergenceWarning, ModelSpecError, check_arguments
from ..refit import FitCall
from .family import NegativeBinomial, Poisson
from .fit import refit_glmm
from .results import GlmerResult
from .setup import GLMER_HINTS, fit_family

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from .._typing import ColumnOrValues, FrameLike

__all__ = ["GlmerNbResult", "glmer_nb", "theta_ml"]

#: how often the interval of ``log θ`` is moved on when the minimum is at its end
MAX_SHIFTS = 4
#: half-width of lme4's interval, ``log(θ₀) ± 3``
HALF_WIDTH = 3.0
#: the search's limits for θ: at 1e8 the negative binomial is the Poisson to 1e-8 in the variance
LOG_THETA_MAX, LOG_THETA_MIN = float(np.log(1e8)), float(np.log(1e-8))
#: a criterion within this of the best at the end of the interval counts as flat up to the end
FLAT = 1e-7

_FAMILY_HINT = (
    "glmer_nb always fits the negative binomial with theta estimated; for a known theta use "
    "sparselmm.glmer(..., family=sparselmm.glmm.NegativeBinomial(theta=2)), for another family sparselmm.glmer."
)
GLMER_NB_HINTS = {
    **GLMER_HINTS,
    "family": _FAMILY_HINT,
    "theta": "glmer_nb estimates theta; a starting value is theta_start= (lme4's initCtrl = list(theta = ...)), "
    "a known theta is sparselmm.glmer(..., family=sparselmm.glmm.NegativeBinomial(theta=...)).",
    "initCtrl": "give the starting theta as theta_start= (lme4's initCtrl$theta).",
    "nb_control": "glmer_nb's settings are interval= and tol= (the 1-D search over log theta).",
}


class GlmerNbResult(GlmerResult):
    """A negative binomial GLMM with θ estimated (:func:`glmer_nb`; lme4's ``glmer.nb`` fit).

    A :class:`~sparselmm.glmm.GlmerResult` whose ``family`` is ``NegativeBinomial(θ̂)``. Beyond it:

    Attributes
    ----------
    nb_theta : float
        θ̂, the negative binomial shape (lme4's ``getME(m, "glmer.nb.theta")``, glmmTMB's ``sigma(m)``).
    n_params : int
        β, the covariance parameters and θ (lme4's ``npar.merMod``): the df of ``logLik``, AIC, BIC.
    """

    @property
    def nb_theta(self) -> float:
        """θ̂ of the negative binomial (``Var(y | b) = μ + μ²/θ``), lme4's ``getME(m, "glmer.nb.theta")``."""
        return float(self.family.theta)

    @property
    def n_params(self) -> int:
        """β, the covariance parameters and the negative binomial θ (lme4's ``npar.merMod`` counts it)."""
        return super().n_params + 1


def theta_ml(y, mu, weights=None, limit: int = 10, eps: float = np.finfo(float).eps ** 0.25):
    """ML estimate of the negative binomial θ with the means ``mu`` held (``MASS::theta.ml``).

    Newton's method on the score ``Σ w (ψ(θ + y) − ψ(θ) + log θ + 1 − log(θ + μ) − (y + θ)/(μ + θ))`` from the
    moment estimate ``Σ w / Σ w (y/μ − 1)²``, as MASS (the same start, step, ``abs`` and stopping rule).

    Parameters
    ----------
    y, mu : array-like
        Counts and their means.
    weights : array-like, optional
        Prior weights (default 1).
    limit : int
        Iteration limit (MASS's ``limit``; lme4's ``glmer.nb`` uses 20).
    eps : float
        Stop when the Newton step is smaller than this.

    Returns
    -------
    theta : float
        The estimate; ``inf`` where the data show no overdispersion at all (``y = μ``).
    se : float
        ``1 / sqrt(information)`` at the estimate (MASS's ``attr(, "SE")``).
    warning : str or None
        MASS's warning: ``"iteration limit reached"`` or ``"estimate truncated at zero"``.
    """
    y = np.asarray(y, dtype=float)
    mu = np.asarray(mu, dtype=float)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
    n = w.sum()

    def score(t):
        return np.sum(
            w * (special.digamma(t + y) - special.digamma(t) + np.log(t) + 1 - np.log(t + mu) - (y + t) / (mu + t))
        )

    def info(t):
        return np.sum(
            w
            * (-special.polygamma(1, t + y) + special.polygamma(1, t) - 1 / t + 2 / (mu + t) - (y + t) / (mu + t) ** 2)
        )

    denom = np.sum(w * (y / mu - 1) ** 2)
    if denom == 0:
        return np.inf, np.inf, "no overdispersion"
    t0 = n / denom
    it, delta, i = 0, 1.0, np.nan
    while True:
        it += 1
        if not (it < limit and abs(delta) > eps):
            break
        t0 = abs(t0)
        i = info(t0)
        delta = score(t0) / i
        t0 = t0 + delta
    warn = None
    if t0 < 0:
        t0, warn = 0.0, "estimate truncated at zero"
    if it == limit:
        warn = "iteration limit reached"
    return float(t0), float(np.sqrt(1 / i)) if i > 0 else np.nan, warn


@check_arguments(GLMER_NB_HINTS)
def glmer_nb(
    formula: str,
    data: FrameLike,
    nAGQ: int = 1,
    weights: ColumnOrValues | None = None,
    offset: ColumnOrValues | None = None,
    link: str | None = None,
    missing: str = "drop",
    theta_start: float | None = None,
    interval: tuple[float, float] | None = None,
    tol: float = 5e-5,
    calc_derivs: bool = True,
    start: ArrayLike | None = None,
    data_name: str | None = None,
    polish: bool = True,
) -> GlmerNbResult:
    """Fit a negative binomial GLMM with its shape θ estimated, as lme4's ``glmer.nb``.

    Also reached by ``sparselmm.glmer(..., family="negative_binomial")`` (or ``"nbinom2"``, glmmTMB's name).

    Parameters
    ----------
    formula : str
        lme4's formula with a count response, e.g. ``"y ~ x + (1 | g)"``, ``"y ~ x + (1 | a) + (1 | b)"``.
    data : DataFrame (or dict of columns, polars DataFrame)
    nAGQ : int
        0 (β inside PIRLS) or 1 (Laplace). The adaptive Gauss-Hermite criterion (nAGQ > 1) omits the
        family's θ-dependent normalising constant, so θ cannot be estimated on it.
    weights, offset : str or array-like, optional
        Prior weights and an offset on the link scale (e.g. ``"log_exposure"``).
    link : str, optional
        ``"log"`` (default), ``"sqrt"`` or ``"identity"``.
    missing : str
        ``"drop"`` (R's na.omit) or ``"raise"``.
    theta_start : float, optional
        The starting θ (lme4's ``initCtrl = list(theta = ...)``): skips the Poisson fit and ``theta.ml``.
    interval : (float, float), optional
        The first interval of ``log θ`` searched (lme4's ``interval``); default ``log θ₀ ± 3``. The search
        moves on where the minimum lies at its end.
    tol : float
        Brent's tolerance on ``log θ`` (lme4's ``tol``, 5e-5).
    calc_derivs : bool
        The Hessian at the final fit (the SEs and lme4's convergence checks).
    start : array-like, optional
        Starting covariance parameters (θ of the random effects) of the Poisson fit.
    data_name : str, optional
        The data's name in the summary.
    polish : bool
        As :func:`sparselmm.glmer`'s.

    Returns
    -------
    GlmerNbResult
        A :class:`~sparselmm.glmm.GlmerResult` with ``family = NegativeBinomial(θ̂)``; ``nb_theta`` is θ̂ and
        ``optinfo.details["glmer_nb"]`` the θ search (every θ evaluated with its criterion).

    Raises
    ------
    sparselmm.DataError
        The response is not a count (negative or non-integer values).
    sparselmm.ModelSpecError
        ``nAGQ > 1``, a link the family does not have, ``theta_start``, ``interval`` or ``tol`` not valid.
    sparselmm.ArgumentError
        An unknown argument, e.g. ``family=`` (glmer_nb's family is always the negative binomial).

    Warns
    -----
    sparselmm.ConvergenceWarning
        θ̂ is still at the end of the search (the data show no overdispersion: the Poisson GLMM fits as well).

    Examples
    --------
    >>> m = sparselmm.glmer_nb("y ~ x + (1 | g)", df)  # doctest: +SKIP
    >>> m.nb_theta, m.fixef  # doctest: +SKIP
    """
    t0 = time.perf_counter()
    if isinstance(nAGQ, (int, np.integer)) and not isinstance(nAGQ, bool) and nAGQ > 1:
        raise ModelSpecError(
            f"glmer_nb with nAGQ = {nAGQ}: adaptive Gauss-Hermite's criterion omits the negative binomial's "
            "theta-dependent normalising constant, so theta cannot be estimated on it. Use nAGQ = 1 (Laplace) or 0."
        )
    if not (isinstance(tol, (int, float)) and np.isfinite(tol) and tol > 0):
        raise ModelSpecError(f"tol must be a positive number, not {tol!r}.")
    if theta_start is not None and not (
        isinstance(theta_start, (int, float, np.floating, np.integer))
        and not isinstance(theta_start, bool)
        and np.isfinite(theta_start)
        and theta_start > 0
    ):
        raise ModelSpecError(
            f"theta_start must be a positive number (the negative binomial's shape), not {theta_start!r}."
        )
    fit_args = (weights, offset, missing)
    cov_start = start
    details: dict = {"tol": float(tol)}
    if theta_start is None:
        pois = Poisson(link)
        with warnings.catch_warnings():  # the Poisson fit is a start (lme4: suppressMessages)
            warnings.simplefilter("ignore")
            g0 = fit_family(formula, data, pois, nAGQ, *fit_args, False, start, data_name, polish)
        th0, _se, warn = theta_ml(g0._model.y, g0.fitted(), g0._model.pw, limit=20, eps=2 * tol)
        details.update(poisson_criterion=float(g0.criterion), theta_ml=th0, theta_ml_warning=warn)
        th0 = float(np.clip(th0, np.exp(LOG_THETA_MIN + HALF_WIDTH), np.exp(LOG_THETA_MAX - HALF_WIDTH)))
        cov_start = g0.theta  # the Poisson fit's covariance parameters start the first negative binomial fit
    else:
        th0 = float(theta_start)
        details.update(theta_start=th0)
    if interval is None:
        lo, hi = np.log(th0) - HALF_WIDTH, np.log(th0) + HALF_WIDTH
    else:
        lo, hi = _check_interval(interval)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g1 = fit_family(
            formula,
            data,
            NegativeBinomial(th0, link),
            nAGQ,
            *fit_args,
            False,
            cov_start,
            data_name,
            polish,
            GlmerNbResult,
        )
    search = _ThetaSearch(g1, np.log(th0))
    setup = time.perf_counter() - t0
    t1 = time.perf_counter()
    x_hat, intervals, at_end = search.run(lo, hi, tol)
    best = search.nearest(x_hat)
    # the final fit at θ̂: from the warm and the fresh start (the lower kept), with the derivatives and the
    # checks (which warn once)
    fam_hat = NegativeBinomial(float(np.exp(x_hat)), best.family.link.name)
    final = refit_glmm(best, best._model.y, check_conv=True, fresh=True, calc_derivs=calc_derivs, family=fam_hat)
    details.update(
        theta=float(np.exp(x_hat)),
        interval=[float(np.exp(lo)), float(np.exp(hi))],
        intervals=[[float(np.exp(a)), float(np.exp(b))] for a, b in intervals],
        evaluations=[{"theta": float(np.exp(x)), "criterion": f} for x, f in search.evaluations],
        n_refits=len(search.evaluations),
        n_evals_refits=search.n_evals,
        seconds=time.perf_counter() - t1,
        setup_seconds=setup,
    )
    if at_end:
        msg = (
            f"glmer_nb: theta = {np.exp(x_hat):.4g} is at the end of the search (log theta in [{lo:.3g}, "
            f"{intervals[-1][1]:.3g}]): the data show no overdispersion beyond the random effects; the Poisson "
            "GLMM (sparselmm.glmer(..., family='poisson')) fits as well."
        )
        details["warning"] = msg
        final.optinfo.messages.append(msg)
        warnings.warn(msg, ConvergenceWarning, stacklevel=2)
    final.optinfo.details["glmer_nb"] = details
    final.optinfo.n_evals_total = (final.optinfo.n_evals_total or 0) + search.n_evals
    final.optinfo.setup_seconds += setup  # the Poisson fit, θ₀ and the first negative binomial fit
    final.optinfo.optimize_seconds = time.perf_counter() - t1  # the θ search and the final fit
    kwargs = dict(nAGQ=nAGQ, weights=weights, offset=offset, link=link, missing=missing, theta_start=theta_start)
    kwargs.update(interval=interval, tol=tol, calc_derivs=calc_derivs, start=start, data_name=data_name, polish=polish)
    final.call = FitCall(glmer_nb, formula, data, kwargs)
    return final


def _check_interval(interval) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise ModelSpecError(f"interval must be two numbers (an interval of log theta), not {interval!r}.") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ModelSpecError(f"interval must be two finite numbers lo < hi (of log theta), not {interval!r}.")
    return lo, hi


class _ThetaSearch:
    """The criterion as a function of ``log θ``: a glmer refit at each θ, warm-started from the evaluated fit
    nearest in ``log θ``; every evaluation recorded."""

    def __init__(self, first: GlmerNbResult, x0: float):
        self.fits: dict[float, GlmerNbResult] = {float(x0): first}
        self.evaluations: list[tuple[float, float]] = [(float(x0), float(first.criterion))]
        self.n_evals = int(first.optinfo.n_evals_total or first.optinfo.n_evals)

    def nearest(self, x: float) -> GlmerNbResult:
        key = min(self.fits, key=lambda k: abs(k - x))
        return self.fits[key]

    def __call__(self, x: float) -> float:
        x = float(x)
        if x in self.fits:
            return float(self.fits[x].criterion)
        near = self.nearest(x)
        fam = NegativeBinomial(float(np.exp(x)), near.family.link.name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = refit_glmm(near, near._model.y, check_conv=False, fresh=False, calc_derivs=False, family=fam)
        self.fits[x] = fit
        self.n_evals += int(fit.optinfo.n_evals_total or fit.optinfo.n_evals)
        self.evaluations.append((x, float(fit.criterion)))
        return float(fit.criterion)

    def run(self, lo: float, hi: float, tol: float):
        """Brent's bounded minimisation on ``[lo, hi]``, moved on while the minimum is at an end; returns the
        best ``log θ`` evaluated, the intervals searched and whether it is still at an end."""
        intervals = []
        at_end = False
        edge = 10 * tol
        for shift in range(MAX_SHIFTS + 1):
            intervals.append((lo, hi))
            optimize.minimize_scalar(self, bounds=(lo, hi), method="bounded", options={"xatol": tol})
            x = self.best()  # Brent's last point need not be its best
            # at the upper end, or the criterion flat up to it (θ large: the data are close to Poisson, and
            # Brent may stop anywhere on the plateau): the end itself is evaluated
            at_hi = x > hi - edge or self(hi) <= self(x) + FLAT
            at_lo = not at_hi and x < lo + edge
            x = self.best()
            at_end = at_hi or at_lo
            if not at_end or shift == MAX_SHIFTS:
                break
            if at_hi:
                if hi >= LOG_THETA_MAX:
                    break
                lo, hi = hi - edge, min(hi + 2 * HALF_WIDTH, LOG_THETA_MAX)
            else:
                if lo <= LOG_THETA_MIN:
                    break
                lo, hi = max(lo - 2 * HALF_WIDTH, LOG_THETA_MIN), lo + edge
        return x, intervals, at_end

    def best(self) -> float:
        """The ``log θ`` evaluated with the lowest criterion."""
        return min(self.fits, key=lambda k: self.fits[k].criterion)
