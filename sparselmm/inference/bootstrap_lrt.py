"""Parametric-bootstrap likelihood-ratio test of two nested lmer or glmer fits (pbkrtest's ``PBmodcomp``).

``bootstrap_lrt`` simulates the LRT's reference distribution from the null model and refits both models to
each response, the replicates spread over workers as the bootstrap's are
(:mod:`sparselmm.inference.replicates`, which also draws the responses: :class:`Simulator` for an lmer fit,
:class:`GlmmSimulator` for a glmer fit — binomial counts with the fit's trials). The refits are the
bootstrap's:

* lmer (:class:`_MLRefitter`): by ML, warm-started quasi-Newton on the exact gradient (BOBYQA where there
  is none or it fails);
* glmer (:class:`_GlmmRefitter`): glmer's one refit path, :func:`sparselmm.glmm.fit.refit_glmm` with
  ``fresh=False`` — from the model's own estimates (lme4's ``refit``, which pbkrtest calls), and also from a
  fresh fit's start where the warm run fails or ends within ``10 × SINGULAR_TOL`` of a zero bound, keeping
  the lower optimum (as each replicate of ``GlmerResult.bootstrap``).
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pandas as pd
from scipy.stats import chi2

from ..errors import ModelSpecError
from ..linalg.threads import blas_threads
from ..optimize import optimize_theta
from .comparison import as_ml, check_nested, check_same_rows, is_glmm, named_models
from .replicates import check_nsim, n_workers, root_seed, run_replicates, simulator

__all__ = ["bootstrap_lrt"]


class _MLRefitter:
    """Refits one model by ML to new responses: warm-started quasi-Newton on the exact gradient."""

    def __init__(self, fit):
        from .. import criterion, newton

        self.fit = fit
        self.devfun = fit.deviance_function.with_response(fit.y)  # own workspace
        self.lower = fit.design.lower
        self.upper = np.full(self.lower.size, np.inf)
        self.theta = fit.theta.copy()
        self.probe = np.where(self.lower == 0, newton.PROBE, 0.0)
        self.ev = criterion.evaluator(self.devfun)
        self.H0 = None
        if self.ev is not None:
            with blas_threads(criterion.dense_size(self.devfun)):
                self.H0 = newton.hessian(self.ev.value_and_gradient, self.theta, self.lower, self.upper)

    def deviance(self, y: np.ndarray) -> float:
        """The ML deviance of the model refitted to ``y``."""
        from .. import criterion, newton

        if self.ev is not None:
            cross = self.devfun.cross.with_response(self.fit.design, y)
            if isinstance(self.ev, criterion.DenseCriterion):
                ev = self.ev.with_response(cross.ZtWy, cross.XtWy, cross.ytWy, cross.beta_shift)
            else:
                ev = self.ev.with_cross(cross)
            _, f, *_, ok = newton.quasi_newton(
                ev.value_and_gradient,
                self.theta,
                self.lower,
                self.upper,
                self.H0,
                newton.REFIT_TOL,
                probe=self.probe,
                return_H=False,
            )
            if ok:
                return float(f)
        devfun = self.devfun.with_response(y, share_factor=True)
        _, f, _ = optimize_theta(devfun, self.theta, self.lower, self.fit.optinfo.optimizer, None, False)
        return float(f)

    def threads(self):
        """The BLAS threads of this model's refits (lmer's policy: by the size of the dense factor)."""
        from .. import criterion

        return blas_threads(criterion.dense_size(self.fit.deviance_function))


class _GlmmRefitter:
    """Refits one glmer model to new responses: :func:`~sparselmm.glmm.fit.refit_glmm` as the bootstrap's
    replicates (warm start from the model's estimates; also the fresh start where the warm run fails or ends
    next to a zero bound; the lower optimum), without derivatives. Each refit copies the fit's PIRLS model, so
    the fit is never touched and a clone needs nothing of its own."""

    def __init__(self, fit):
        self.fit = fit

    def deviance(self, y: np.ndarray) -> float:
        """−2 log L (the criterion glmer minimises) of the model refitted to ``y``."""
        return float(self.fit._refit_replicate(y).deviance)

    def threads(self):
        """No limit here: :func:`~sparselmm.glmm.fit.refit_glmm` applies glmer's own BLAS policy."""
        return contextlib.nullcontext()


def _refitter(fit):
    """The refitter of ``fit``'s kind: :class:`_GlmmRefitter` for a glmer fit, :class:`_MLRefitter` otherwise."""
    return _GlmmRefitter(fit) if is_glmm(fit) else _MLRefitter(fit)


class _LRTReplicator:
    """One worker's share of a parametric-bootstrap LRT: draw from the null fit, refit both models."""

    def __init__(self, small, large):
        self.small, self.large = small, large
        self.sim = simulator(small, use_u=False)
        self.refit_small, self.refit_large = _refitter(small), _refitter(large)

    def statistic(self, y: np.ndarray) -> tuple[float, float, float]:
        """``(LRT*, deviance_small, deviance_large)`` of both models refitted to the response ``y``, with
        ``LRT* = max(0, deviance_small − deviance_large)`` (the validation refits lme4's responses with it)."""
        dev_small, dev_large = self.refit_small.deviance(y), self.refit_large.deviance(y)
        return max(0.0, dev_small - dev_large), dev_small, dev_large

    def one(self, index, seed):
        try:
            y = self.sim.draw(np.random.default_rng(seed))
            return index, np.array([self.statistic(y)[0]]), None, 0, True, False
        except Exception as err:  # a failed replicate is recorded, the run goes on
            return index, None, f"{type(err).__name__}: {err}", 0, False, False

    def many(self, tasks):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with self.refit_large.threads():
                return [self.one(i, s) for i, s in tasks]

    def clone(self):
        return _LRTReplicator(self.small, self.large)


def bootstrap_lrt(
    small, large, nsim: int = 1000, seed=None, n_jobs: int = 1, check_nested_models: bool = True, progress=None
):
    """Parametric-bootstrap likelihood-ratio test of ``small`` against ``large`` (pbkrtest's ``PBmodcomp``).

    Responses are simulated from ``small`` (the null model; an REML lmer fit is first refitted by ML); both
    models are refitted to each (warm-started from their own estimates, as the bootstrap does: lmer's by ML,
    glmer's by glmer's refit, see the module docstring) and the statistic ``2 (logLik_large − logLik_small)``
    recomputed. A glmer fit's responses are drawn from its family with the drawn random effects (binomial
    with the fit's trials, so a ``cbind`` response's successes out of its totals).

    The p-value is ``(1 + #{LRT* ≥ LRT}) / (1 + m)`` over the ``m`` replicates that did not fail. pbkrtest
    0.5.2's ``PBmodcomp`` counts differently: ``(1 + #{LRT* > LRT}) / (1 + #{LRT* > 0})``, leaving out the
    draws whose statistic is not positive — the same in practice for a fixed effect, larger for a variance
    component on its boundary, where about half the draws are 0 (``attrs["draws"]`` gives either). The χ²
    test of :func:`likelihood_ratio_table` is given beside it. The two models may come in either order
    (pbkrtest's ``PBmodcomp(large, small)`` too): the one with fewer parameters is the null model.

    Parameters
    ----------
    small, large : LmerResult or GlmerResult
        The null model and a model it is nested in, fitted to the same rows (in either order): two lmer fits,
        or two glmer fits of the same family and link.
    nsim : int
        Number of simulated responses.
    seed : int or numpy.random.SeedSequence, optional
        Makes the run reproducible, for any ``n_jobs``.
    n_jobs : int
        Worker processes (``-1``: one per core).
    check_nested_models : bool
        Raise when the smaller model is not nested in the larger (see :func:`check_nested`); ``False``
        skips the check.
    progress : bool or None
        A bar on stderr for runs that last more than 2 s on a terminal or in a notebook (None, the default),
        always (True) or never (False), as :func:`~sparselmm.inference.bootstrap.bootstrap`.

    Returns
    -------
    DataFrame
        Rows ``LRT`` (χ²) and ``PBtest``; columns ``stat``, ``df``, ``p.value``. The bootstrap p-value is
        pbkrtest's: ``(1 + #{LRT* > LRT}) / (1 + #{LRT* > 0})`` over the replicates that did not fail (draws
        of 0 are left out of both counts). ``attrs["draws"]`` holds the
        simulated statistics (NaN where a replicate failed), ``attrs["failures"]`` their number.

    Raises
    ------
    sparselmm.DataError
        The models were fitted to different rows.
    sparselmm.ModelSpecError
        Not two lmer fits or two glmer fits of one family and link, models not nested (with
        ``check_nested_models``), a bad ``nsim``, ``seed``, ``n_jobs`` or ``progress``, or every replicate
        failed.

    Examples
    --------
    >>> import sparselmm
    >>> sleep = sparselmm.datasets.load("sleepstudy")
    >>> m0 = sparselmm.lmer("Reaction ~ Days + (1 | Subject)", sleep)
    >>> m1 = sparselmm.lmer("Reaction ~ Days + (Days | Subject)", sleep)
    >>> from sparselmm.inference.lrt import bootstrap_lrt
    >>> bootstrap_lrt(m0, m1, nsim=50, seed=1).index.tolist()
    ['LRT', 'PBtest']
    """
    from ..covstruct import refuse_structured
    from ..progress import progress_bar, show_progress

    show_progress(progress)  # a wrong value fails before the refits

    nsim = check_nsim(nsim)
    workers = n_workers(n_jobs)
    models, names = named_models([small, large], ["small", "large"])
    for fit in (small, large):  # after named_models: a non-fit gets its ModelSpecError first
        refuse_structured(fit.design, "Parametric-bootstrap likelihood-ratio tests", "or use anova(m0, m1)")
    check_same_rows(models, names)
    small, large = as_ml(small), as_ml(large)
    if small.n_params > large.n_params:  # pbkrtest's PBmodcomp(large, small) order: accept it, as anova does
        small, large = large, small
    if check_nested_models:
        reason = check_nested(small, large, "small", "large")
        if reason is not None:
            raise ModelSpecError(f"The small model is not nested in the large one: {reason}.")
    observed = max(0.0, small.objective - large.objective)
    df = large.n_params - small.n_params
    replicator = _LRTReplicator(small, large)
    seeds = root_seed(seed).spawn(nsim)
    bar = progress_bar(progress, nsim, desc="bootstrap LRT", unit="rep")
    outputs = run_replicates(replicator, seeds, workers, bar)
    draws = np.full(nsim, np.nan)
    for i, values, *_ in outputs:
        if values is not None:
            draws[i] = values[0]
    ok = draws[np.isfinite(draws)]
    if ok.size == 0:
        raise ModelSpecError(f"All {nsim} bootstrap replicates failed; the first with: {outputs[0][2]}")
    # pbkrtest 0.5.2's PBmodcomp p-value, so that users see its number: (1 + #{LRT* > LRT}) / (1 + #{LRT* > 0})
    # (draws of exactly 0, a null fit the larger model cannot improve, are left out of both counts)
    positive = ok[ok > 0]
    p_boot = (1.0 + np.sum(positive > observed)) / (1.0 + positive.size)
    table = pd.DataFrame(
        {"stat": [observed, observed], "df": [float(df), np.nan], "p.value": [chi2.sf(observed, df), p_boot]},
        index=["LRT", "PBtest"],
    )
    table.attrs["draws"] = draws.tolist()
    table.attrs["failures"] = int(nsim - ok.size)
    return table
