"""Parametric-bootstrap likelihood-ratio test of two nested lmer fits (pbkrtest's ``PBmodcomp``).

``bootstrap_lrt`` simulates the LRT's reference distribution from the null model, both models refitted by
ML to each response by the bootstrap's warm-started quasi-Newton (:class:`_MLRefitter`), the replicates
spread over workers as the bootstrap's are (:mod:`sparselmm.inference.replicates`).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.stats import chi2

from ..errors import ModelSpecError
from ..linalg.threads import blas_threads
from ..optimize import optimize_theta
from .comparison import check_nested, check_same_rows, named_models
from .replicates import Simulator, check_nsim, n_workers, root_seed, run_replicates

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


class _LRTReplicator:
    """One worker's share of a parametric-bootstrap LRT: draw from the null fit, refit both models."""

    def __init__(self, small, large):
        self.small, self.large = small, large
        self.sim = Simulator(small, use_u=False)
        self.refit_small, self.refit_large = _MLRefitter(small), _MLRefitter(large)

    def one(self, index, seed):
        try:
            y = self.sim.draw(np.random.default_rng(seed))
            stat = max(0.0, self.refit_small.deviance(y) - self.refit_large.deviance(y))
            return index, np.array([stat]), None, 0, True, False
        except Exception as err:  # a failed replicate is recorded, the run goes on
            return index, None, f"{type(err).__name__}: {err}", 0, False, False

    def many(self, tasks):
        from .. import criterion

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with blas_threads(criterion.dense_size(self.large.deviance_function)):
                return [self.one(i, s) for i, s in tasks]

    def clone(self):
        return _LRTReplicator(self.small, self.large)


def bootstrap_lrt(
    small, large, nsim: int = 1000, seed=None, n_jobs: int = 1, check_nested_models: bool = True, progress=None
):
    """Parametric-bootstrap likelihood-ratio test of ``small`` against ``large`` (pbkrtest's ``PBmodcomp``).

    Responses are simulated from ``small`` refitted by ML (the null model); both models are refitted by ML
    to each (warm-started from their ML estimates, as the bootstrap does) and the statistic
    ``2 (logLik_large − logLik_small)`` recomputed. The p-value is ``(1 + #{LRT* ≥ LRT}) / (1 + nsim)``, as
    pbkrtest computes it; the χ² test of :func:`likelihood_ratio_table` is given beside it. The two models may
    come in either order (pbkrtest's ``PBmodcomp(large, small)`` too): the one with fewer parameters is the
    null model.

    Parameters
    ----------
    small, large : LmerResult
        The null model and a model it is nested in, fitted to the same rows (in either order).
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
        Rows ``LRT`` (χ²) and ``PBtest``; columns ``stat``, ``df``, ``p.value``. ``attrs["draws"]`` holds the
        simulated statistics (NaN where a replicate failed), ``attrs["failures"]`` their number.

    Raises
    ------
    sparselmm.DataError
        The models were fitted to different rows.
    sparselmm.ModelSpecError
        The models are not nested (with ``check_nested_models``), a bad ``nsim``, ``seed``, ``n_jobs`` or
        ``progress``, or every replicate failed.

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
    from ..progress import progress_bar, show_progress

    show_progress(progress)  # a wrong value fails before the refits

    nsim = check_nsim(nsim)
    workers = n_workers(n_jobs)
    models, names = named_models([small, large], ["small", "large"])
    check_same_rows(models, names)
    small, large = small.refit_ml(), large.refit_ml()
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
    p_boot = (1.0 + np.sum(ok >= observed)) / (1.0 + ok.size)
    table = pd.DataFrame(
        {"stat": [observed, observed], "df": [float(df), np.nan], "p.value": [chi2.sf(observed, df), p_boot]},
        index=["LRT", "PBtest"],
    )
    table.attrs["draws"] = draws.tolist()
    table.attrs["failures"] = int(nsim - ok.size)
    return table
