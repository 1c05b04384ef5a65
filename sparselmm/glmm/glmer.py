"""``glmer``: generalised linear mixed models by lme4's Laplace / adaptive Gauss–Hermite method.

What is computed (and matched to lme4 1.1-31, ``validation/compare_glmm.py``):

* ``nAGQ = 0`` — lme4's first stage (MixedModels.jl's ``fast = true``): at each θ, PIRLS over ``(u, β)``
  jointly, objective ``ℓ(θ) = −2 log p(y | μ) + ‖u‖² + log|L|²`` (``L Lᵀ = ΛᵀZᵀWZΛ + I`` at the
  converged weights), θ by BOBYQA.
* ``nAGQ = 1`` — the Laplace approximation over ``(θ, β)`` (lme4's second stage): PIRLS over ``u`` at
  fixed ``(θ, β)``, same objective. β stays out of a long derivative-free search: from the ``nAGQ = 0``
  optimum (β standardised by its ``nAGQ = 0`` SEs) a quasi-Newton polish (:func:`sparselmm.newton.quasi_newton`
  on the exact gradient of the criterion for canonical links and scalar terms, :mod:`sparselmm.glmm.gradient`,
  else on central-difference gradients; started from θ's second differences and β's ``nAGQ = 0`` information)
  converges in a few steps; BOBYQA takes over when the start is at a boundary (singular) or the start
  Hessian is not positive definite. ``u`` is warm-started across evaluations (1-3 PIRLS iterations each).
  Evaluation counts against lme4's are in BENCHMARKS.md.
* ``nAGQ > 1`` — adaptive Gauss–Hermite quadrature for one scalar random-effects term, exactly lme4's
  ``glmerAGQ``: ``Σⱼ devcⱼ(u₀) + log|L|² − 2 Σⱼ log Σₖ wₖ exp(zₖ²/2 − (devcⱼ(u₀ + zₖ σⱼ) − devcⱼ(u₀))/2)``
  with ``devcⱼ = uⱼ² + Σ_{i∈j} devresidᵢ`` and ``σⱼ = 1/Lⱼⱼ``. As in lme4, this criterion uses the
  deviance residuals, *not* ``−2 log p(y|μ)``: it omits the family's normalising constant, so lme4's
  ``logLik`` (and ours) for ``nAGQ > 1`` is on a different scale from the Laplace fit's.

Gamma and inverse Gaussian (lme4's families "with a scale"): the same criterion, with the family's
``−2 log p(y | μ)`` taken at the dispersion ``Σ devresid / Σ w`` (R's ``family$aic``, its ``+ 2``
included, as lme4's ``glmResp::Laplace``); PIRLS and the conditional modes ignore the dispersion, as in
lme4. After the fit, σ is lme4's ``sqrt((Σ pearson² + ‖u‖²)/n)`` and scales what lme4 scales by it
(:attr:`GlmerResult.sigma`). Matched to lme4 in 11 validation cases (log, inverse, identity and
1/mu^2 links; crossed, random slopes, prior weights, nAGQ = 0 and AGQ).

A binomial outcome separated by the fixed effects (or a Poisson level with only zero counts) leaves
fitted means at 0/1 after the nAGQ = 0 stage, or makes PIRLS break down: a linear programme
(:mod:`sparselmm.glmm.separation`) then confirms it and a ``SeparationError`` names the fixed effects
whose estimates are infinite. Fitted means at 0/1 without a separating fixed effect (the random
effects) give a ``SeparationWarning`` on the completed fit.

``deviance`` / ``objective`` of the result is ``−2 log L`` — the ``deviance`` column of lme4's
summary, ``-2 * logLik(m)``; lme4's ``deviance(m)`` (the sum of squared deviance residuals) is
``GlmerResult.deviance_residual_sum``.

The standard errors are lme4's (``vcov.merMod`` with ``use.hessian = TRUE``): ``2 H⁻¹`` restricted to β,
``H`` the central-difference Hessian of the criterion in ``(θ, β)`` at the optimum (step 1e-4, as
lme4's ``deriv12``; where the exact gradient applies, central differences of it with the same step); for
``nAGQ = 0`` (or if ``H`` is not positive definite) they come from ``RX``.

GLMMs are fitted in memory: the PIRLS weights change every iteration, so ``ZᵀWZ`` is re-formed from the
rows each time (values only, on a fixed pattern), unlike ``lmer``'s one-pass cross-products.

This module takes the arguments (:mod:`sparselmm.glmm.setup` builds the fit for a family); the response
and the design are :mod:`sparselmm.glmm.glmm_design`'s, PIRLS :mod:`sparselmm.glmm.pirls`'s, the criterion
:mod:`sparselmm.glmm.objective`'s and the stages above :mod:`sparselmm.glmm.fit`'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import check_arguments
from ..refit import FitCall
from .family import NEGATIVE_BINOMIAL_NAMES, Family, get_family
from .glmm_design import GLMM_RESPONSE
from .results import GlmerResult
from .setup import GLMER_HINTS, fit_family

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from .._typing import ColumnOrValues, FrameLike

__all__ = ["glmer", "GLMM_RESPONSE"]


@check_arguments(GLMER_HINTS)
def glmer(
    formula: str,
    data: FrameLike,
    family: str | Family = "binomial",
    nAGQ: int = 1,
    weights: ColumnOrValues | None = None,
    offset: ColumnOrValues | None = None,
    link: str | None = None,
    missing: str = "drop",
    calc_derivs: bool = True,
    start: ArrayLike | None = None,
    data_name: str | None = None,
    polish: bool = True,
) -> GlmerResult:
    """Fit a generalised linear mixed model as lme4's ``glmer``.

    Parameters
    ----------
    formula : str
        lme4's formula, e.g. ``"cbind(incidence, size - incidence) ~ period + (1 | herd)"``,
        ``"r2 ~ Anger + Gender + (1 | id) + (1 | item)"``. A binomial response is 0/1, a proportion with
        ``weights=`` the number of trials, or ``cbind(successes, failures)``. Random terms may have glmmTMB's
        covariance structures, ``diag(0 + f | g)``, ``cs(…)``, ``ar1(0 + t | g)``, ``toep(…)``, ``us(…)``
        (:mod:`sparselmm.covstruct`; not with ``nAGQ > 1``).
    data : DataFrame (or dict of columns, polars DataFrame)
    family : str or Family
        ``"binomial"`` (links logit, probit, cloglog, log), ``"poisson"`` (log, identity, sqrt),
        ``"Gamma"`` (inverse, log, identity) or ``"inverse.gaussian"`` (1/mu^2, inverse, identity, log);
        or an instance such as ``sparselmm.glmm.Binomial("probit")``, ``sparselmm.glmm.Gamma(link="log")``,
        ``sparselmm.glmm.NegativeBinomial(theta=2)`` (θ known). ``"negative_binomial"`` (or ``"nbinom2"``)
        estimates the negative binomial θ: the fit is :func:`sparselmm.glmer_nb`'s (lme4's ``glmer.nb``).
        Gamma and inverse Gaussian fits estimate a dispersion as lme4 does (``GlmerResult.sigma``); their
        response must be > 0.
    nAGQ : int
        0: β inside PIRLS, θ optimised; 1: Laplace (θ and β jointly); > 1: adaptive Gauss–Hermite with
        that many nodes (one scalar random-effects term only).
    weights, offset : str or array-like, optional
        Prior weights (binomial: the trials of a proportion response) and an offset on the link scale.
    link : str, optional
        Link for a family given by name.
    polish : bool
        nAGQ >= 1: move from the nAGQ = 0 optimum by quasi-Newton steps (finite-difference Hessian, BFGS,
        falling back to BOBYQA at a boundary or when the Hessian is not positive definite); False: BOBYQA.
    calc_derivs : bool
        Compute the Hessian at the optimum (lme4's ``calc.derivs``) for the standard errors and the
        convergence check (nAGQ >= 1).

    Returns
    -------
    GlmerResult

    Notes
    -----
    GLMMs are fitted in memory: PIRLS re-forms ``ZᵀWZ`` from the rows at every iteration. See the
    module docstring for the criterion (``deviance`` is ``−2 log L``, lme4's summary column).
    """

    if isinstance(family, str) and family.lower().strip() in NEGATIVE_BINOMIAL_NAMES:
        from .negbin import glmer_nb  # θ estimated: glmer_nb's alternation of θ and glmer refits

        kwargs = dict(nAGQ=nAGQ, weights=weights, offset=offset, link=link, missing=missing, calc_derivs=calc_derivs)
        return glmer_nb(formula, data, start=start, data_name=data_name, polish=polish, **kwargs)
    fam: Family = get_family(family, link)
    kwargs = dict(family=family, nAGQ=nAGQ, weights=weights, offset=offset, link=link, missing=missing)
    kwargs.update(calc_derivs=calc_derivs, data_name=data_name, polish=polish)
    result = fit_family(formula, data, fam, nAGQ, weights, offset, missing, calc_derivs, start, data_name, polish)
    result.call = FitCall(glmer, formula, data, kwargs)
    return result
