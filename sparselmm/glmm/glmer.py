"""``glmer``: generalised linear mixed models by lme4's Laplace / adaptive Gauss–Hermite method.

What is computed (and matched to lme4 1.1-31, ``validation/compare_glmm.py``):

* ``nAGQ = 0`` — lme4's first stage (MixedModels.jl's ``fast = true``): at each θ, PIRLS over ``(u, β)``
  jointly, objective ``ℓ(θ) = −2 log p(y | μ) + ‖u‖² + log|L|²`` (``L Lᵀ = ΛᵀZᵀWZΛ + I`` at the
  converged weights), θ by BOBYQA.
* ``nAGQ = 1`` — the Laplace approximation over ``(θ, β)`` (lme4's second stage): PIRLS over ``u`` at
  fixed ``(θ, β)``, same objective. β stays out of a long derivative-free search: from the ``nAGQ = 0``
  optimum (β standardised by its ``nAGQ = 0`` SEs) a quasi-Newton polish (:func:`sparselmm.newton.quasi_newton`
  on central-difference gradients, started from θ's second differences and β's ``nAGQ = 0`` information)
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
lme4's ``deriv12``); for ``nAGQ = 0`` (or if ``H`` is not positive definite) they come from ``RX``.

GLMMs are fitted in memory: the PIRLS weights change every iteration, so ``ZᵀWZ`` is re-formed from the
rows each time (values only, on a fixed pattern), unlike ``lmer``'s one-pass cross-products.
"""

from __future__ import annotations

import re
import time
import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from formulaic import model_matrix

from ..data import as_dataframe, clean_data, vector_argument
from ..design import (
    Design,
    ReTerm,
    build_Zt,
    check_factor_levels,
    drop_collinear,
    encode_grouping,
    place_terms,
    required_columns,
)
from ..errors import (
    ConvergenceWarning,
    DataError,
    FormulaError,
    ModelSpecError,
    SingularFitWarning,
    SparseLMMError,
    caller_stacklevel,
    check_arguments,
)
from ..formula import ParsedFormula, parse_formula, split_top_level
from ..linalg.threads import blas_threads
from ..newton import quasi_newton
from ..optimize import (
    DERIV_STEP,
    SINGULAR_TOL,
    OptInfo,
    check_convergence,
    deriv12,
    fd_gradient,
    nlopt_minimize,
)
from ..refit import FitCall
from .family import Family, get_family
from .pirls import InvalidStart, PirlsModel, PirlsNotConverged
from .separation import (
    SeparationError,
    SeparationWarning,
    edge_fraction,
    separated_columns,
    separating_alone,
    separation_message,
)

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from .._typing import ColumnOrValues, FrameLike
    from .results import GlmerResult

__all__ = ["glmer", "GLMM_RESPONSE"]

GLMM_RESPONSE = "glmm_response__"
# nAGQ >= 1: the nAGQ = 0 optimum is only the start of the joint polish, so it need not be tight
STAGE0_START_TOL = {"ftol_abs": 1e-5, "xtol_abs": 1e-5, "ftol_rel": 1e-12}
STAGE1_TOL = {"ftol_abs": 1e-8, "xtol_abs": 1e-8, "ftol_rel": 1e-12}
_CBIND = re.compile(r"^\s*cbind\s*\((.*)\)\s*$", re.S)


# --- formula and design ----------------------------------------------------------------------------------
def _evaluate(expr: str, frame: pd.DataFrame, what: str) -> np.ndarray:
    try:
        value = frame.eval(expr, engine="python")
    except Exception:
        try:
            value = model_matrix(f"0 + I({expr})", frame, na_action="ignore").iloc[:, 0]
        except Exception as err:
            raise FormulaError(f"Could not evaluate {what} {expr!r} in the data: {err}") from None
    arr = np.asarray(pd.to_numeric(pd.Series(np.asarray(value).ravel()), errors="coerce"), dtype=float)
    if arr.shape != (len(frame),):
        raise FormulaError(f"{what} {expr!r} does not give one number per row.")
    return arr


def _response(formula: str, frame: pd.DataFrame, weights):
    """Replace the response by a column: ``(new formula, frame, prior weights, successes/trials flag)``."""
    if not isinstance(formula, str):
        raise FormulaError(f"The formula must be a string such as 'y ~ x + (1 | g)', not {type(formula).__name__}.")
    sides = split_top_level(" ".join(formula.split()), "~")
    if len(sides) != 2:
        parse_formula(formula)  # raises the lmer parser's message
    lhs, rhs = sides[0][1].strip(), sides[1][1].strip()
    w = vector_argument(weights, frame, "weights")
    frame = frame.copy()
    m = _CBIND.match(lhs)
    if m:
        parts = [p for _s, p in split_top_level(m.group(1), ",")]
        if len(parts) != 2:
            raise FormulaError(f"cbind() in {lhs!r} needs exactly two arguments: cbind(successes, failures).")
        succ = _evaluate(parts[0].strip(), frame, "successes")
        fail = _evaluate(parts[1].strip(), frame, "failures")
        if np.any(succ < 0) or np.any(fail < 0):
            raise DataError(f"cbind(successes, failures) in {lhs!r}: negative counts are not allowed.")
        trials = succ + fail
        with np.errstate(invalid="ignore", divide="ignore"):
            frame[GLMM_RESPONSE] = np.where(trials > 0, succ / trials, np.nan)
        w = trials if w is None else w * trials
        cbind = True
    else:
        frame[GLMM_RESPONSE] = _evaluate(lhs, frame, "response") if lhs not in frame.columns else frame[lhs]
        if lhs in frame.columns:
            col = frame[lhs]
            if pd.api.types.is_bool_dtype(col):
                frame[GLMM_RESPONSE] = col.astype(float)
            elif not pd.api.types.is_numeric_dtype(col):
                raise DataError(f"The response {lhs!r} must be numeric (0/1, counts or proportions), not {col.dtype}.")
        cbind = False
    return f"{GLMM_RESPONSE} ~ {rhs}", frame, w, cbind


def _response_label(formula) -> str:
    """The response as written left of ``~`` (for messages)."""
    return " ".join(str(formula).split("~", 1)[0].split())


def build_glmm_design(parsed: ParsedFormula, frame: pd.DataFrame, weights, offset, missing) -> Design:
    """As ``sparselmm.design.build_design`` but with glmer's level checks (a factor may have n levels)."""
    needed = required_columns(parsed)
    clean = clean_data(frame, needed, weights, offset, missing)
    f = clean.frame
    y = np.asarray(f[GLMM_RESPONSE], dtype=float)
    try:
        mm = model_matrix(parsed.fixed, f, na_action="raise")
    except Exception as err:
        raise FormulaError(f"Could not build the fixed-effects model matrix from {parsed.fixed!r}: {err}") from None
    check_factor_levels(mm.model_spec, "the fixed effects")
    X, names, dropped = drop_collinear(np.asarray(mm, dtype=float), list(mm.columns))
    terms: list[ReTerm] = []
    n = y.size
    for term in parsed.random:
        try:
            zmm = model_matrix(term.lhs, f, na_action="raise")
        except Exception as err:
            raise FormulaError(f"Could not build random-effects term {term}: {err}") from None
        check_factor_levels(zmm.model_spec, f"random-effects term {term}")
        refs, levels = encode_grouping(f, term.factors)
        t = ReTerm(
            term, list(zmm.columns), levels, refs, np.ascontiguousarray(np.asarray(zmm, dtype=float)), zmm.model_spec
        )
        if t.n_levels < 2:
            raise ModelSpecError(f"Grouping factor {t.group_name!r} in {term} has only one level.")
        if t.n_levels > n:  # glmer: allow.n = TRUE
            raise ModelSpecError(f"Grouping factor {t.group_name!r} has more levels ({t.n_levels}) than rows ({n}).")
        terms.append(t)
    terms = place_terms(terms)
    Zt = build_Zt(terms, n)
    return Design(parsed, y, X, names, mm.model_spec, dropped, terms, Zt, clean.weights, clean.offset, clean)


# --- objectives --------------------------------------------------------------------------------------------
class GlmmObjective:
    """The criterion at (θ) for nAGQ = 0 and at (θ, β) for nAGQ >= 1, with warm starts and counters."""

    def __init__(self, model: PirlsModel, nAGQ: int):
        self.model = model
        self.nAGQ = nAGQ
        self.n_evals = 0
        self.eta_start = model.family.link.linkfun(model.family.mustart(model.y, model.pw))
        if nAGQ > 1:
            t = model.design.terms[0]
            self.refs = t.refs
            self.nlev = t.n_levels
            nodes, weights = np.polynomial.hermite_e.hermegauss(nAGQ)
            self.gh_z, self.gh_w = nodes, weights / np.sqrt(2 * np.pi)

    def laplace(self, mu, u) -> float:
        m = self.model
        return m.family.aic_term(m.y, mu, m.pw) + float(u @ u) + m.chol.logdet()

    def at_theta(self, theta) -> float:
        """nAGQ = 0: β and u by PIRLS at θ."""
        self.n_evals += 1
        m = self.model
        try:
            if m.beta is None:
                raise PirlsNotConverged("cold start")
            u, beta, eta, mu, w, pdev, RX = m.pirls_ub(theta)
        except PirlsNotConverged:
            u, beta, eta, mu, w, pdev, RX = m.pirls_ub(theta, eta_start=self.eta_start)
        self.RX = RX
        return self.laplace(mu, u)

    def at_theta_beta(self, theta, beta) -> float:
        """nAGQ >= 1: u by PIRLS at (θ, β); Laplace or AGQ criterion."""
        self.n_evals += 1
        m = self.model
        try:
            u, eta, mu, w, pdev = m.pirls_u(theta, beta)
        except InvalidStart:  # Xβ outside the family's mean space (an inverse link with η <= 0)
            return np.inf
        except PirlsNotConverged:
            try:
                u, eta, mu, w, pdev = m.pirls_u(theta, beta, u0=np.zeros(m.q))
            except InvalidStart:
                return np.inf
        if self.nAGQ <= 1:
            return self.laplace(mu, u)
        return self.agq(theta, beta, u, eta, mu)

    def agq(self, theta, beta, u, eta, mu) -> float:
        m = self.model
        fam, y, pw = m.family, m.y, m.pw
        lam = theta[0]
        refs = self.refs
        devc0 = u * u + np.bincount(refs, weights=fam.dev_resids(y, mu, pw), minlength=self.nlev)
        # one scalar term: C = ΛᵀZᵀWZΛ + I is diagonal, L_jj = sqrt(C_jj)
        w, _d = fam.working_weights(eta, mu, pw)
        zcol = m.design.terms[0].z[:, 0]
        Cjj = 1.0 + lam * lam * np.bincount(refs, weights=w * zcol * zcol, minlength=self.nlev)
        sd = 1.0 / np.sqrt(Cjj)
        mult = np.zeros(self.nlev)
        for zk, wk in zip(self.gh_z, self.gh_w):
            if zk == 0:
                mult += wk
                continue
            uk = u + zk * sd
            eta_k = eta + lam * zcol * (uk - u)[refs]
            devc = uk * uk + np.bincount(
                refs, weights=fam.dev_resids(y, fam.link.linkinv(eta_k), pw), minlength=self.nlev
            )
            mult += np.exp(-0.5 * (devc - devc0) + 0.5 * zk * zk) * wk
        return float(devc0.sum() + np.log(Cjj).sum() - 2 * np.log(mult).sum())


def _newton_polish(fun, x0, f0, lower, H_beta, tol=5e-9):
    """Minimise ``fun`` from ``x0`` by :func:`sparselmm.newton.quasi_newton` on central-difference gradients.

    The start Hessian is ``diag(θ second differences) ⊕ H_beta`` (``H_beta``: 2 × the nAGQ = 0 information
    of β): the second differences come with the first gradient, so the start costs 2m evaluations instead
    of the 2m + m(m−1) of a full difference Hessian; BFGS corrects the missing θ-β coupling. Stops when the
    predicted decrease ``½ gᵀH⁻¹g`` is below ``tol``.

    Returns ``(x, f, n_steps)``, or None when the start Hessian is not positive definite or the iteration
    does not converge — the caller then falls back to BOBYQA.
    """
    m, nb = x0.size, H_beta.shape[0]
    up, dn = x0 + DERIV_STEP, np.maximum(x0 - DERIV_STEP, lower)
    g = np.empty(m)
    H = np.zeros((m, m))
    for i in range(m):
        xa, xs = x0.copy(), x0.copy()
        xa[i], xs[i] = up[i], dn[i]
        fa, fs = fun(xa), fun(xs)
        g[i] = (fa - fs) / (up[i] - dn[i])
        H[i, i] = (fa - 2 * f0 + fs) / ((up[i] - dn[i]) / 2) ** 2
    nt = m - nb
    H[nt:, nt:] = H_beta
    H[np.arange(nt), np.arange(nt)] = np.where(np.diag(H)[:nt] > 0, np.diag(H)[:nt], 1.0)
    if np.min(np.linalg.eigvalsh(H)) <= 0:
        return None
    x, f, _, _, n_steps, ok = quasi_newton(
        None,
        x0,
        lower,
        np.full(m, np.inf),
        H,
        tol,
        first=(f0, g),
        return_H=False,
        fun=fun,
        gradient=lambda x: fd_gradient(fun, x, lower),
    )
    return (x, f, n_steps) if ok else None


# --- the entry point ----------------------------------------------------------------------------------------
_MISSING_HINT = "use missing='drop' (R's na.omit, the default) or missing='raise' (na.fail)."
_NO_REML = (
    "glmer has no REML: a GLMM is fitted by maximum likelihood (Laplace, or adaptive Gauss-Hermite with "
    "nAGQ > 1); remove the argument."
)
GLMER_HINTS = {
    "REML": _NO_REML,
    "reml": _NO_REML,
    "na.action": _MISSING_HINT,
    "na_action": _MISSING_HINT,
    "subset": "select the rows before fitting, e.g. data[data['x'] > 0] or data.query('x > 0').",
    "contrasts": "set a factor's contrasts in the formula, e.g. C(f, contr.sum) or C(f, contr.treatment(base='b')).",
    "control": "glmer takes its settings directly: nAGQ=, calc_derivs= (glmerControl's calc.derivs), polish= "
    "and start=; the optimiser is not selectable.",
    "optimizer": "glmer's optimiser is not selectable; polish=False uses BOBYQA for the joint stage.",
}


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
        ``weights=`` the number of trials, or ``cbind(successes, failures)``.
    data : DataFrame (or dict of columns, polars DataFrame)
    family : str or Family
        ``"binomial"`` (links logit, probit, cloglog, log), ``"poisson"`` (log, identity, sqrt),
        ``"Gamma"`` (inverse, log, identity) or ``"inverse.gaussian"`` (1/mu^2, inverse, identity, log);
        or an instance such as ``sparselmm.glmm.Binomial("probit")``, ``sparselmm.glmm.Gamma(link="log")``,
        ``sparselmm.glmm.NegativeBinomial(theta=2)``. Gamma and inverse Gaussian fits estimate a
        dispersion as lme4 does (``GlmerResult.sigma``); their response must be > 0.
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

    t0 = time.perf_counter()
    fam: Family = get_family(family, link)
    if not isinstance(nAGQ, (int, np.integer)) or isinstance(nAGQ, bool) or nAGQ < 0:
        raise ModelSpecError(f"nAGQ must be a whole number >= 0, not {nAGQ!r}.")
    nAGQ = int(nAGQ)
    frame = as_dataframe(data)
    parse_formula(formula)  # the formula's errors, shown with the caller's text
    new_formula, frame, w, _cbind = _response(formula, frame, weights)
    parsed0 = parse_formula(new_formula)
    parsed = ParsedFormula(" ".join(str(formula).split()), parsed0.response, parsed0.fixed, parsed0.random)
    try:
        design = build_glmm_design(parsed, frame, w, offset, missing)
    except SparseLMMError as err:
        if GLMM_RESPONSE not in str(err):
            raise
        # name the response as the caller wrote it, not the internal column that holds it
        raise type(err)(str(err).replace(GLMM_RESPONSE, _response_label(formula))) from None
    y = design.y
    pw = np.ones(design.n) if design.weights is None else design.weights
    off = np.zeros(design.n) if design.offset is None else design.offset
    fam.validate(y, pw, response=_response_label(formula))
    if nAGQ > 1:
        if len(design.terms) != 1 or design.terms[0].k != 1:
            raise ModelSpecError(
                f"nAGQ = {nAGQ} (adaptive Gauss-Hermite) needs a single scalar random-effects term such as "
                f"(1 | g); this model has {[str(t.term) for t in design.terms]}. Use nAGQ = 1 (Laplace)."
            )
        if nAGQ > 25:
            raise ModelSpecError(f"nAGQ = {nAGQ} is more than lme4's maximum of 25 quadrature points.")
    model = PirlsModel(design, fam, y, pw, off)
    setup = time.perf_counter() - t0
    # one BLAS thread unless the dense part is big: threaded OpenBLAS on small triangular solves and
    # factors costs milliseconds of synchronisation per call (4 ms per solve on VerbAgg's 24 x 24 block
    # on a busy 2-core machine); the policy is sparselmm.linalg.threads'
    dense = model.chol.q2 if model.schur else model.q
    with blas_threads(dense):
        try:
            result = _fit(design, fam, model, nAGQ, start, calc_derivs, polish, setup, t0, data_name)
            kwargs = dict(family=family, nAGQ=nAGQ, weights=weights, offset=offset, link=link, missing=missing)
            kwargs.update(calc_derivs=calc_derivs, data_name=data_name, polish=polish)
            result.call = FitCall(glmer, formula, data, kwargs)
            return result
        except PirlsNotConverged as err:
            # a PIRLS breakdown is often separation (β running off): say so, naming the fixed effects
            cols = separated_columns(design.X, y, pw, fam)
            if cols:
                names = [design.fixed_names[j] for j in cols]
                alone = [design.fixed_names[j] for j in separating_alone(design.X, y, pw, fam, cols)]
                msg = separation_message(names, fam, fitted=False, alone=alone)
                raise SeparationError(f"{msg} ({err})") from err
            if fam.has_scale and fam.link.name in ("inverse", "1/mu^2", "identity"):
                raise PirlsNotConverged(
                    f"{err} With the {fam.name} family's {fam.link.name!r} link every fitted mean must stay "
                    "positive, and PIRLS could not keep it so (lme4 stops here too: 'PIRLS loop resulted in NaN "
                    "value'); the log link (link='log') has no such restriction."
                ) from err
            raise


def _fit(design, fam, model, nAGQ, start, calc_derivs, polish, setup, t0, data_name):
    from .results import GlmerResult

    obj = GlmmObjective(model, nAGQ)

    t1 = time.perf_counter()
    theta0 = design.theta0.copy() if start is None else np.asarray(start, dtype=float)
    lower = design.lower
    step0 = np.full(theta0.size, 0.2)
    theta, f0, ok0, msg0 = nlopt_minimize(obj.at_theta, theta0, lower, step=step0, **(STAGE0_START_TOL if nAGQ else {}))
    evals0 = obj.n_evals
    f0 = obj.at_theta(theta)  # leaves u, β, RX at the optimum
    beta0 = model.beta.copy()
    RX0 = obj.RX
    info = {
        "optimizer": "bobyqa",
        "n_evals_nagq0": evals0,
        "converged": ok0,
        "messages": [msg0],
    }
    # separation shows at the nAGQ = 0 optimum as fitted means at the edge of their range; the LP then
    # names the fixed effects running off (none: the edge comes from the random effects)
    mu0 = fam.link.linkinv(model.eta(model._lambda_parts(theta), model.u, beta0))
    if edge_fraction(fam, mu0, model.pw) > 0:
        separated = separated_columns(design.X, model.y, model.pw, fam)
        if separated:
            # the estimates of these coefficients are infinite: nothing after this point would mean anything
            # (lme4 goes on and reports e.g. 36.4 with SE 8.6e6 for a level with only successes)
            names = [design.fixed_names[j] for j in separated]
            alone = [design.fixed_names[j] for j in separating_alone(design.X, model.y, model.pw, fam, separated)]
            msg = separation_message(names, fam, beta=beta0[separated], fitted=False, alone=alone)
            raise SeparationError(msg)
    info["separation"] = []
    if nAGQ == 0:
        beta, fval = beta0, f0
        crit = lambda th: obj.at_theta(th)  # noqa: E731
        x_opt = theta
        n_theta = theta.size
    else:
        Rinv = np.linalg.inv(RX0)
        s = np.sqrt(np.sum(Rinv * Rinv, axis=0))  # SEs of β at nAGQ = 0: sqrt diag (RX RXᵀ)⁻¹
        s = np.where(np.isfinite(s) & (s > 0), s, 1.0)
        nth = theta.size

        def fz(x):
            return obj.at_theta_beta(x[:nth], beta0 + s * x[nth:])

        x0 = np.concatenate([theta, np.zeros(beta0.size)])
        low = np.concatenate([lower, np.full(beta0.size, -np.inf)])
        step = np.concatenate([np.maximum(0.1 * np.abs(theta), 0.05), np.full(beta0.size, 0.5)])
        model.u = model.u.copy()
        polished = None
        near_bound = bool(np.any((lower == 0) & (theta < 10 * SINGULAR_TOL)))
        if polish and near_bound:
            info["messages"].append("nAGQ = 0 optimum at a boundary: BOBYQA for the joint stage")
        elif polish:
            S0 = RX0 @ RX0.T  # XᵀWX Schur complement at nAGQ = 0: β's information
            polished = _newton_polish(fz, x0, fz(x0), low, H_beta=2 * s[:, None] * S0 * s[None, :])
        if polished is not None:
            xz, fval, n_steps = polished
            info["optimizer"] = "newton"
            info["messages"].append(f"quasi-Newton polish: {n_steps} point(s) evaluated")
        else:
            if polish and not near_bound:
                info["messages"].append("quasi-Newton polish not applicable; BOBYQA")
            xz, fval, ok1, msg1 = nlopt_minimize(fz, x0, low, step=step, **STAGE1_TOL)
            info["converged"] = ok1
            info["messages"].append(msg1)
        theta, beta = xz[:nth], beta0 + s * xz[nth:]
        info["n_evals_joint"] = obj.n_evals - evals0 - 1
        fval = obj.at_theta_beta(theta, beta)
        crit = lambda x: obj.at_theta_beta(x[:nth], x[nth:])  # noqa: E731
        x_opt = np.concatenate([theta, beta])
        n_theta = nth
    n_opt = obj.n_evals
    opt_seconds = time.perf_counter() - t1

    # final state at the optimum (u, μ, factor), then derivatives
    if nAGQ == 0:
        obj.at_theta(theta)
    else:
        obj.at_theta_beta(theta, beta)
    u_hat = model.u.copy()
    state = _final_state(model, theta, beta, u_hat)
    grad = hess = None
    if calc_derivs and nAGQ > 0:
        t2 = time.perf_counter()
        grad, hess = deriv12(crit, x_opt, fval, np.concatenate([lower, np.full(beta.size, -np.inf)]))
        info["deriv_seconds"] = time.perf_counter() - t2
        obj.at_theta_beta(theta, beta)  # restore warm start and factor
        model.u = u_hat
    singular = bool(np.any((lower == 0) & (theta < SINGULAR_TOL)))
    messages = info["messages"]
    edge = edge_fraction(fam, state["mu"], model.pw)
    if edge > 0:
        separated = separated_columns(design.X, model.y, model.pw, fam)
        info["separation"] = [design.fixed_names[j] for j in separated]
        if separated:
            alone = [design.fixed_names[j] for j in separating_alone(design.X, model.y, model.pw, fam, separated)]
            msg = separation_message(info["separation"], fam, beta=beta[separated], alone=alone)
        else:
            what = "probabilities numerically 0 or 1" if fam.name == "binomial" else "rates numerically 0"
            msg = (
                f"glmer: fitted {what} occurred for {edge:.1%} of the rows; no fixed effect separates the "
                "outcome, so it is the random effects (a group with only one outcome and a large variance)"
            )
        messages.append(msg)
        warnings.warn(msg, SeparationWarning, stacklevel=caller_stacklevel())
    if singular:
        msg = "boundary (singular) fit: see help('isSingular')"
        messages.append(msg)
        warnings.warn(msg, SingularFitWarning, stacklevel=caller_stacklevel())
    if grad is not None and not singular:
        checks = check_convergence(grad, hess, n_theta)
        for msg in checks:
            messages.append(msg)
            warnings.warn(msg, ConvergenceWarning, stacklevel=caller_stacklevel())
        if any(msg.startswith(("Model failed", "unable")) for msg in checks):
            info["converged"] = False
    info.update(
        n_evals=n_opt,
        n_evals_total=obj.n_evals,
        n_pirls=model.n_pirls,
        n_factor=model.n_factor,
        setup_seconds=setup,
        optimize_seconds=opt_seconds,
        gradient=grad,
        hessian=hess,
        n_theta=n_theta,
    )
    return GlmerResult(
        design=design,
        family=fam,
        nAGQ=nAGQ,
        theta=theta,
        beta=beta,
        criterion=float(fval),
        state=state,
        model=model,
        optinfo=OptInfo(
            optimizer=info.pop("optimizer"),
            n_evals=info.pop("n_evals"),
            converged=bool(info.pop("converged")),
            message=info["messages"][0] if info["messages"] else "",
            theta_start=theta0.copy(),
            setup_seconds=info.pop("setup_seconds"),
            optimize_seconds=info.pop("optimize_seconds"),
            n_evals_total=info.pop("n_evals_total"),
            messages=info.pop("messages"),
            gradient=info.pop("gradient"),
            hessian=info.pop("hessian"),
            details=info,
        ),
        data_name=data_name,
    )


def _final_state(model: PirlsModel, theta, beta, u) -> dict:
    parts = model._lambda_parts(theta)
    eta = model.eta(parts, u, beta)
    fam = model.family
    mu = fam.link.linkinv(eta)
    w, _d = fam.working_weights(eta, mu, model.pw)
    model.factor(theta, w, parts)
    Lt = parts[0]
    WX = model.X * w[:, None]
    RZX = model.chol.solve_L(np.asarray(Lt @ (model.Zt @ WX)))
    S = model.X.T @ WX - RZX.T @ RZX
    if fam.has_scale:
        # lme4's sigma(m) for a GLMM with a dispersion (mkMerMod's sigmaML): sqrt(pwrss / n), pwrss the
        # weighted sum of squared Pearson residuals plus ‖u‖² — not the φ̂ inside the criterion
        pearson2 = model.pw * (model.y - mu) ** 2 / fam.variance(mu)
        sigma = float(np.sqrt((np.sum(pearson2) + u @ u) / model.n))
    else:
        sigma = 1.0
    return {
        "sigma": sigma,
        "u": u,
        "b": Lt.T @ u,
        "eta": eta,
        "mu": mu,
        "w": w,
        "RZX": RZX,
        "XtWX_schur": S,
        "ldL2": model.chol.logdet(),
    }
