"""The stages of a glmer fit, from a PIRLS model to a :class:`~sparselmm.glmm.results.GlmerResult`.

1. ``nAGQ = 0`` (lme4's first stage): θ by BOBYQA, ``(u, β)`` by PIRLS at each θ. Fitted means at the
   edge of their range here are the sign of separation: a fixed effect that separates the outcome ends
   the fit with a :class:`~sparselmm.glmm.separation.SeparationError`.
2. ``nAGQ >= 1``: (θ, β) jointly from that optimum, β standardised by its ``nAGQ = 0`` SEs, by the
   quasi-Newton polish — on the exact gradient (:func:`~sparselmm.glmm.objective.newton_polish_exact`,
   where :mod:`sparselmm.glmm.gradient` applies) or on central differences
   (:func:`~sparselmm.glmm.objective.newton_polish`) — or BOBYQA.
3. The state at the optimum (u, μ, the factor, σ), the derivatives (the Hessian by central differences
   of the exact gradient, else lme4's ``deriv12``; the same step) and the checks that warn: separation by
   the random effects, a singular fit, lme4's convergence checks.

:func:`refit_glmm` runs the same stages for a new response (lme4's ``refit``, the bootstrap's replicates) from
a warm and a fresh start. :func:`breakdown_error` says what a PIRLS breakdown during these stages most likely
means.

Every stage keeps θ within the design's bounds, ``lower`` and ``upper``: the latter are finite only for a
covariance structure's correlation parameters (:mod:`sparselmm.covstruct`), so a model without one passes
none (:func:`theta_upper`) and runs exactly as before.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from ..errors import ConvergenceWarning, NumericalError, SingularFitWarning, caller_stacklevel
from ..linalg.threads import blas_threads
from ..optimize import DERIV_STEP, SINGULAR_TOL, OptInfo, check_convergence, deriv12, is_singular, nlopt_minimize
from .objective import GlmmObjective, newton_polish, newton_polish_exact
from .pirls import PirlsModel, PirlsNotConverged
from .separation import (
    SeparationError,
    SeparationWarning,
    edge_fraction,
    separated_columns,
    separating_alone,
    separation_message,
)

__all__ = ["breakdown_error", "final_state", "fit_glmm", "refit_glmm", "theta_upper"]

# nAGQ >= 1: the nAGQ = 0 optimum is only the start of the joint polish, so it need not be tight
STAGE0_START_TOL = {"ftol_abs": 1e-5, "xtol_abs": 1e-5, "ftol_rel": 1e-12}
STAGE1_TOL = {"ftol_abs": 1e-8, "xtol_abs": 1e-8, "ftol_rel": 1e-12}
# a refit's warm nAGQ = 0 run: BOBYQA's first step from θ̂ (lmer's bootstrap uses the same, WARM_START_STEP of
# sparselmm.inference.bootstrap_fits; NLopt's default is sized for a cold start)
WARM_START_STEP = 0.1


def theta_upper(design) -> np.ndarray | None:
    """θ's upper bounds, or None where all are infinite (every term but ``cs``, ``ar1`` and ``toep``)."""
    upper = getattr(design, "upper", None)
    return upper if upper is not None and np.any(np.isfinite(upper)) else None


def fit_glmm(
    model: PirlsModel,
    nAGQ: int,
    start,
    calc_derivs: bool,
    polish: bool,
    setup: float,
    data_name,
    result_class: type,
):
    """Fit the GLMM of ``model`` (its design and family) by the stages above; ``setup`` is the seconds spent
    before (the design, the PIRLS model), recorded in the result's ``optinfo``. ``result_class`` builds the
    result (:class:`~sparselmm.glmm.results.GlmerResult`, passed in so that this module, which refits use,
    imports no result class; a refit builds its result with the class of the fit it refits)."""
    design = model.design
    obj = GlmmObjective(model, nAGQ)
    t1 = time.perf_counter()
    theta0 = design.theta0.copy() if start is None else np.asarray(start, dtype=float)
    theta, beta, fval, info = _optimise(obj, theta0, nAGQ, polish)
    seconds = time.perf_counter() - t1
    return _finish(result_class, obj, theta, beta, fval, info, theta0, calc_derivs, setup, seconds, data_name)


def refit_glmm(
    result,
    y: np.ndarray,
    check_conv: bool = True,
    fresh: bool = True,
    calc_derivs: bool | None = None,
    family=None,
):
    """The glmer fit ``result`` refitted to the response ``y`` (lme4's ``refit``).

    As lmer's refits (:func:`sparselmm.optimize.refit_theta`): from a warm start and from a fresh fit's start,
    keeping the lower optimum, so that it reaches at least what a fresh ``glmer`` fit of ``y`` reaches.

    * warm (lme4's ``refit``): PIRLS over ``(u, β)`` at ``θ̂`` gives this response's ``β`` there and the scale of
      the joint stage, which then starts from that point (``nAGQ = 0``: BOBYQA over θ from ``θ̂``);
    * fresh: the fit's own stages from the default start.

    Both runs use copies of the fit's PIRLS model (:meth:`~sparselmm.glmm.pirls.PirlsModel.with_response`:
    the pattern and symbolic analysis shared, their own factors); ``result`` is not touched.

    Parameters
    ----------
    result : GlmerResult
        The fit (its design, family, nAGQ, θ̂ and PIRLS model).
    y : ndarray
        The new response on the scale glmer fits (see :func:`sparselmm.refit.glmm_response`, which checks it).
    check_conv : bool
        Warn as a fit does (singular fit, lme4's convergence checks); False silences them.
    fresh : bool
        Run the fresh start too. ``False`` is the bootstrap's replicates (as lme4's ``bootMer`` and lmer's
        bootstrap): warm only, except that a warm run that fails, or ends within ``10 × SINGULAR_TOL`` of a
        zero bound, is checked from the fresh start too.
    calc_derivs : bool, optional
        Compute the Hessian for the SEs and the convergence checks (default: as the fit did).
    family : Family, optional
        Refit with this family instead of the fit's, on the same design (lme4's ``refit(setNBdisp(m, θ))``:
        :mod:`sparselmm.glmm.negbin`'s refits at another negative binomial θ). Default: the fit's.

    Returns
    -------
    GlmerResult
        The refit; ``optinfo.details["refit"]`` holds each start's criterion and the start kept, and
        ``optinfo.n_evals`` counts the evaluations of both runs.

    Raises
    ------
    sparselmm.glmm.SeparationError
        A fixed effect separates ``y`` (as for a fresh fit).
    sparselmm.NumericalError
        PIRLS broke down from every start.
    """
    nAGQ = result.nAGQ
    base = result._model
    call = getattr(result, "call", None)
    polish = bool(call.kwargs.get("polish", True)) if call is not None else True
    if calc_derivs is None:
        calc_derivs = result.optinfo.hessian is not None
    # glmer's BLAS policy (sparselmm.glmm.glmer): one thread unless the dense part of the factor is big
    with blas_threads(base.blas_size):
        return _refit(result, base, y, nAGQ, polish, check_conv, fresh, calc_derivs, family)


def _refit(
    result, base: PirlsModel, y, nAGQ: int, polish: bool, check_conv: bool, fresh: bool, calc_derivs: bool, family=None
):
    t1 = time.perf_counter()
    runs = {}  # start -> (objective, theta, beta, criterion, info)
    failures = []
    with warnings.catch_warnings():  # the runs' own warnings: the checks at the chosen optimum warn once
        warnings.simplefilter("ignore")
        obj = GlmmObjective(base.with_response(y, family), nAGQ)
        try:
            runs["warm"] = (obj, *_optimise_warm(obj, result.theta, nAGQ, polish))
        except SeparationError:
            raise
        except NumericalError as err:  # PIRLS broke down on the way: the fresh run decides
            failures.append(f"the warm start failed: {err}")
        if fresh or not runs or _near_bound(runs["warm"][1], base.design.lower, theta_upper(base.design)):
            # warm only (the bootstrap): a warm run that ends at a zero bound is checked from the fresh start.
            # The criterion is even in a scalar θ_k, so its gradient vanishes as θ_k → 0 and the quasi-Newton
            # polish can stop there, next to an interior optimum (a cbpp replicate: θ = 2.9e-5, 2.7e-3 in
            # −2 log L above the optimum at θ = 0.052 that a fresh fit and lme4's refit reach)
            obj = GlmmObjective(base.with_response(y, family), nAGQ)
            try:
                runs["fresh"] = (obj, *_optimise(obj, base.design.theta0.copy(), nAGQ, polish))
            except SeparationError:
                raise
            except NumericalError as err:
                if not runs:
                    raise
                failures.append(f"the fresh start failed: {err}")
    kept = min(runs, key=lambda start: runs[start][3])
    obj, theta, beta, fval, info = runs[kept]
    info["refit"] = {"criteria": {start: float(run[3]) for start, run in runs.items()}, "kept": kept}
    info["messages"].extend(failures)
    extra = sum(run[0].n_evals for start, run in runs.items() if start != kept)  # the other run's evaluations
    with warnings.catch_warnings():
        if not check_conv:
            warnings.simplefilter("ignore")
        return _finish(
            type(result),
            obj,
            theta,
            beta,
            fval,
            info,
            base.design.theta0.copy(),
            calc_derivs,
            0.0,
            time.perf_counter() - t1,
            result.data_name,
            extra_evals=extra,
        )


def _near_bound(theta, lower, upper=None) -> bool:
    """A θ_k with a zero bound within ``10 × SINGULAR_TOL`` of it (where the joint stage uses BOBYQA); with
    ``upper``, also a covariance structure's parameter that near another finite bound (a correlation at ±1)."""
    theta = np.asarray(theta, dtype=float)
    if upper is None:
        return bool(np.any((lower == 0) & (theta < 10 * SINGULAR_TOL)))
    return is_singular(theta, lower, 10 * SINGULAR_TOL, upper=upper)


def _optimise(obj: GlmmObjective, theta0, nAGQ: int, polish: bool):
    """The fit's stages from ``theta0``: ``nAGQ = 0``, then the joint stage (``nAGQ >= 1``); returns
    ``(theta, beta, criterion, info)``."""
    theta, beta, fval, info = _first_stage(obj, theta0, nAGQ)
    if nAGQ > 0:
        theta, beta, fval = _joint_stage(obj, theta, beta, obj.RX, polish, info)
    return theta, beta, fval, info


def _optimise_warm(obj: GlmmObjective, theta_hat, nAGQ: int, polish: bool):
    """A refit's warm run from ``θ̂`` (see :func:`refit_glmm`); returns ``(theta, beta, criterion, info)``."""
    model = obj.model
    theta_hat = np.asarray(theta_hat, dtype=float).copy()
    info = {"optimizer": "bobyqa", "converged": True, "messages": ["warm start at the fit's estimates"]}
    if nAGQ == 0:
        step = np.full(theta_hat.size, WARM_START_STEP)
        theta, _, ok, msg = nlopt_minimize(
            obj.at_theta, theta_hat, model.design.lower, theta_upper(model.design), step=step
        )
        info.update(converged=ok, n_evals_nagq0=obj.n_evals)
        info["messages"].append(msg)
        fval = obj.at_theta(theta)
        _check_separation(obj, theta, model.beta.copy())
        info["separation"] = []
        return theta, model.beta.copy(), fval, info
    obj.at_theta(theta_hat)  # (u, β) at θ̂ for this response: β's start and the joint stage's scale (RX)
    beta0 = model.beta.copy()
    _check_separation(obj, theta_hat, beta0)
    info.update(n_evals_nagq0=obj.n_evals, separation=[])
    theta, beta, fval = _joint_stage(obj, theta_hat, beta0, obj.RX, polish, info)
    return theta, beta, fval, info


def _finish(
    result_class,
    obj: GlmmObjective,
    theta,
    beta,
    fval,
    info: dict,
    theta0,
    calc_derivs: bool,
    setup: float,
    opt_seconds: float,
    data_name,
    extra_evals: int = 0,
):
    """The result at the optimum ``(theta, beta)`` of ``obj``'s model: the state, the derivatives, the checks."""
    model, nAGQ = obj.model, obj.nAGQ
    design, fam = model.design, model.family
    lower = design.lower
    n_opt = obj.n_evals + extra_evals

    # final state at the optimum (u, μ, factor), then derivatives
    if nAGQ == 0:
        obj.at_theta(theta)
    else:
        obj.at_theta_beta(theta, beta)
    u_hat = model.u.copy()
    state = final_state(model, theta, beta, u_hat)
    n_theta = theta.size
    grad = hess = None
    if calc_derivs and nAGQ > 0:
        t2 = time.perf_counter()
        if obj.gradient is not None and np.all(theta - DERIV_STEP >= lower):
            try:
                grad, hess = _derivatives_exact(obj, theta, beta)
                info["derivatives"] = "exact gradient, central differences"
            except NumericalError:  # a point where C⁻¹ is not finite: lme4's differences of the criterion
                grad = None
        if grad is None:
            upper = theta_upper(design)
            grad, hess = _deriv12_box(
                lambda x: obj.at_theta_beta(x[:n_theta], x[n_theta:]),
                np.concatenate([theta, beta]),
                fval,
                np.concatenate([lower, np.full(beta.size, -np.inf)]),
                None if upper is None else np.concatenate([upper, np.full(beta.size, np.inf)]),
            )
            info["derivatives"] = "central differences"
        info["deriv_seconds"] = time.perf_counter() - t2
        obj.at_theta_beta(theta, beta)  # restore warm start and factor
        model.u = u_hat
    _check_fit(model, theta, beta, state["mu"], grad, hess, info)
    info.update(
        n_evals=n_opt,
        n_evals_total=obj.n_evals + extra_evals,
        n_pirls=model.n_pirls,
        n_factor=model.n_factor,
        n_gradients=obj.gradient.n_evals if obj.gradient is not None else 0,
        setup_seconds=setup,
        optimize_seconds=opt_seconds,
        gradient=grad,
        hessian=hess,
        n_theta=n_theta,
    )
    return result_class(
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


def _first_stage(obj: GlmmObjective, theta0, nAGQ: int):
    """lme4's ``nAGQ = 0`` stage: θ by BOBYQA from ``theta0``, ``(u, β)`` by PIRLS inside.

    Returns ``(theta, beta, criterion, info)`` with the factor, ``u`` and ``obj.RX`` at the optimum; raises
    :class:`SeparationError` where a fixed effect separates the outcome.
    """
    model = obj.model
    design = model.design
    step0 = np.full(theta0.size, 0.2)
    theta, f0, ok0, msg0 = nlopt_minimize(
        obj.at_theta, theta0, design.lower, theta_upper(design), step=step0, **(STAGE0_START_TOL if nAGQ else {})
    )
    evals0 = obj.n_evals
    f0 = obj.at_theta(theta)  # leaves u, β, RX at the optimum
    beta0 = model.beta.copy()
    info = {
        "optimizer": "bobyqa",
        "n_evals_nagq0": evals0,
        "converged": ok0,
        "messages": [msg0],
    }
    _check_separation(obj, theta, beta0)
    info["separation"] = []
    return theta, beta0, f0, info


def _check_separation(obj: GlmmObjective, theta, beta0) -> None:
    """Raise :class:`SeparationError` where a fixed effect separates the outcome at the ``nAGQ = 0`` point
    ``(theta, beta0)`` (``u`` and the factor of ``obj``'s model there)."""
    model = obj.model
    design, fam = model.design, model.family
    # separation shows at the nAGQ = 0 optimum as fitted means at the edge of their range; the LP then
    # names the fixed effects running off (none: the edge comes from the random effects)
    mu0 = fam.link.linkinv(model.eta(model._lambda_parts(theta), model.u, beta0))
    if edge_fraction(fam, mu0, model.pw) > 0:
        separated = separated_columns(design.X, model.y, model.pw, fam)
        if separated:
            # the estimates of these coefficients are infinite: nothing after this point would mean anything
            # (lme4 goes on and reports e.g. 36.4 with SE 8.6e6 for a level with only successes)
            names, alone = _separation_names(model, separated)
            raise SeparationError(separation_message(names, fam, beta=beta0[separated], fitted=False, alone=alone))


def _joint_stage(obj: GlmmObjective, theta, beta0, RX0, polish: bool, info: dict):
    """``nAGQ >= 1``: (θ, β) jointly from the ``nAGQ = 0`` optimum, β standardised by its ``nAGQ = 0`` SEs
    (``RX0`` is its factor there); the quasi-Newton polish, or BOBYQA at a boundary, where the polish does
    not apply, or with ``polish=False``. Returns ``(theta, beta, criterion)``; ``info`` records the route."""
    model = obj.model
    lower, upper = model.design.lower, theta_upper(model.design)
    Rinv = np.linalg.inv(RX0)
    s = np.sqrt(np.sum(Rinv * Rinv, axis=0))  # SEs of β at nAGQ = 0: sqrt diag (RX RXᵀ)⁻¹
    s = np.where(np.isfinite(s) & (s > 0), s, 1.0)
    nth = theta.size

    def fz(x):
        return obj.at_theta_beta(x[:nth], beta0 + s * x[nth:])

    x0 = np.concatenate([theta, np.zeros(beta0.size)])
    low = np.concatenate([lower, np.full(beta0.size, -np.inf)])
    high = None if upper is None else np.concatenate([upper, np.full(beta0.size, np.inf)])
    step = np.concatenate([np.maximum(0.1 * np.abs(theta), 0.05), np.full(beta0.size, 0.5)])
    model.u = model.u.copy()
    polished = None
    near_bound = _near_bound(theta, lower, upper)
    if polish and near_bound:
        info["messages"].append("nAGQ = 0 optimum at a boundary: BOBYQA for the joint stage")
    elif polish:
        S0 = RX0 @ RX0.T  # XᵀWX Schur complement at nAGQ = 0: β's information
        H_beta = 2 * s[:, None] * S0 * s[None, :]
        if obj.gradient is not None:

            def in_z(g):  # the gradient in (θ, z), β = β0 + s z
                return np.concatenate([g[:nth], s * g[nth:]])

            def fz_grad(x):
                f, g = obj.value_and_gradient(x[:nth], beta0 + s * x[nth:])
                return f, in_z(g)

            def gz(x):
                return in_z(obj.gradient_at(x[:nth], beta0 + s * x[nth:]))

            try:
                polished = newton_polish_exact(fz_grad, gz, fz, x0, low, H_beta, nth, upper=high)
            except NumericalError:  # C⁻¹ not finite at some point: the difference polish decides
                polished = None
        if polished is None:
            polished = newton_polish(fz, x0, fz(x0), low, H_beta=H_beta, upper=high)
    if polished is not None:
        xz, fval, n_steps = polished
        info["optimizer"] = "newton"
        info["messages"].append(f"quasi-Newton polish: {n_steps} point(s) evaluated")
    else:
        if polish and not near_bound:
            info["messages"].append("quasi-Newton polish not applicable; BOBYQA")
        xz, fval, ok1, msg1 = nlopt_minimize(fz, x0, low, high, step=step, **STAGE1_TOL)
        info["converged"] = ok1
        info["messages"].append(msg1)
    theta, beta = xz[:nth], beta0 + s * xz[nth:]
    info["n_evals_joint"] = obj.n_evals - info["n_evals_nagq0"] - 1
    fval = obj.at_theta_beta(theta, beta)
    return theta, beta, fval


def _deriv12_box(fun, x, fx, lower, upper):
    """lme4's ``deriv12`` (:func:`~sparselmm.optimize.deriv12`, which clips its steps at the lower bounds only)
    within ``lower ≤ x ≤ upper``: a coordinate within the step of its upper bound (a correlation near 1, whose
    factor does not exist beyond it) is differenced as ``−x``, whose lower bound that is; the derivatives are
    mapped back. ``upper`` None: ``deriv12`` itself."""
    flip = None if upper is None else x + DERIV_STEP > upper
    if flip is None or not flip.any():
        return deriv12(fun, x, fx, lower)
    s = np.where(flip, -1.0, 1.0)
    g, H = deriv12(lambda y: fun(s * y), s * x, fx, np.where(flip, -upper, lower))
    return s * g, s[:, None] * H * s[None, :]


def _derivatives_exact(obj: GlmmObjective, theta, beta):
    """The gradient and Hessian at the optimum (θ, β) from the exact gradient: the Hessian's columns by central
    differences of it with lme4's ``deriv12`` step (``2m`` evaluations, where ``deriv12`` takes
    ``2m + m(m − 1)``). Both approximate the same Hessian to the step's second order; the gradient is exact."""
    x = np.concatenate([theta, beta])
    nth, m = theta.size, x.size
    grad = obj.gradient_at(theta, beta)
    hess = np.empty((m, m))
    for i in range(m):
        xp, xm = x.copy(), x.copy()
        xp[i] += DERIV_STEP
        xm[i] -= DERIV_STEP
        gp = obj.value_and_gradient(xp[:nth], xp[nth:])[1]
        gm = obj.value_and_gradient(xm[:nth], xm[nth:])[1]
        hess[:, i] = (gp - gm) / (2 * DERIV_STEP)
    return grad, (hess + hess.T) / 2


def _check_fit(model: PirlsModel, theta, beta, mu, grad, hess, info: dict) -> None:
    """Warn (and record in ``info``) of fitted means at the edge of their range, a singular fit (lme4's
    ``isSingular``; a covariance structure's correlation at a bound too, as lmer's) and what lme4's convergence
    checks find in the derivatives ``grad``, ``hess`` (None: not computed)."""
    design, fam = model.design, model.family
    singular = is_singular(np.asarray(theta, dtype=float), design.lower, upper=theta_upper(design))
    messages = info["messages"]
    edge = edge_fraction(fam, mu, model.pw)
    if edge > 0:
        separated = separated_columns(design.X, model.y, model.pw, fam)
        info["separation"], alone = _separation_names(model, separated)
        if separated:
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
        checks = check_convergence(grad, hess, theta.size)
        for msg in checks:
            messages.append(msg)
            warnings.warn(msg, ConvergenceWarning, stacklevel=caller_stacklevel())
        if any(msg.startswith(("Model failed", "unable")) for msg in checks):
            info["converged"] = False


def _separation_names(model: PirlsModel, columns) -> tuple[list[str], list[str]]:
    """The names of the separated fixed-effect ``columns`` and of those among them that separate alone."""
    design = model.design
    names = [design.fixed_names[j] for j in columns]
    if not columns:
        return names, []
    alone = separating_alone(design.X, model.y, model.pw, model.family, columns)
    return names, [design.fixed_names[j] for j in alone]


def breakdown_error(err: PirlsNotConverged, model: PirlsModel) -> Exception | None:
    """What a PIRLS breakdown during the fit means, where more can be said than ``err``: separation (the
    fixed effects whose estimates run off), or a link that cannot keep the fitted means positive."""
    design, fam = model.design, model.family
    cols = separated_columns(design.X, model.y, model.pw, fam)
    if cols:
        names, alone = _separation_names(model, cols)
        return SeparationError(f"{separation_message(names, fam, fitted=False, alone=alone)} ({err})")
    if fam.has_scale and fam.link.name in ("inverse", "1/mu^2", "identity"):
        return PirlsNotConverged(
            f"{err} With the {fam.name} family's {fam.link.name!r} link every fitted mean must stay "
            "positive, and PIRLS could not keep it so (lme4 stops here too: 'PIRLS loop resulted in NaN "
            "value'); the log link (link='log') has no such restriction."
        )
    return None


def final_state(model: PirlsModel, theta, beta, u) -> dict:
    """The fit's state at the optimum: σ, ``u``, ``b``, η, μ, the working weights, ``RZX``, the Schur
    complement of ``XᵀWX`` and ``log|L|²``, with ``L`` factored at the final weights."""
    parts = model._lambda_parts(theta)
    eta = model.eta(parts, u, beta)
    fam = model.family
    mu = fam.link.linkinv(eta)
    w, _d = fam.working_weights(eta, mu, model.pw)
    model.factor(theta, w, parts)
    Lt = parts[0]
    RZX, S = model.fixed_schur(w, Lt)
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
