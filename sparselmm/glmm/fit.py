"""The stages of a glmer fit, from a PIRLS model to a :class:`~sparselmm.glmm.results.GlmerResult`.

1. ``nAGQ = 0`` (lme4's first stage): θ by BOBYQA, ``(u, β)`` by PIRLS at each θ. Fitted means at the
   edge of their range here are the sign of separation: a fixed effect that separates the outcome ends
   the fit with a :class:`~sparselmm.glmm.separation.SeparationError`.
2. ``nAGQ >= 1``: (θ, β) jointly from that optimum, β standardised by its ``nAGQ = 0`` SEs, by the
   quasi-Newton polish (:func:`~sparselmm.glmm.objective.newton_polish`) or BOBYQA.
3. The state at the optimum (u, μ, the factor, σ), the central-difference derivatives (lme4's
   ``deriv12``) and the checks that warn: separation by the random effects, a singular fit, lme4's
   convergence checks.

:func:`breakdown_error` says what a PIRLS breakdown during these stages most likely means.
"""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ConvergenceWarning, SingularFitWarning, caller_stacklevel
from ..optimize import SINGULAR_TOL, OptInfo, check_convergence, deriv12, nlopt_minimize
from .objective import GlmmObjective, newton_polish
from .pirls import PirlsModel, PirlsNotConverged
from .separation import (
    SeparationError,
    SeparationWarning,
    edge_fraction,
    separated_columns,
    separating_alone,
    separation_message,
)

if TYPE_CHECKING:
    from .results import GlmerResult

__all__ = ["breakdown_error", "final_state", "fit_glmm"]

# nAGQ >= 1: the nAGQ = 0 optimum is only the start of the joint polish, so it need not be tight
STAGE0_START_TOL = {"ftol_abs": 1e-5, "xtol_abs": 1e-5, "ftol_rel": 1e-12}
STAGE1_TOL = {"ftol_abs": 1e-8, "xtol_abs": 1e-8, "ftol_rel": 1e-12}


def fit_glmm(
    model: PirlsModel, nAGQ: int, start, calc_derivs: bool, polish: bool, setup: float, data_name
) -> GlmerResult:
    """Fit the GLMM of ``model`` (its design and family) by the stages above; ``setup`` is the seconds spent
    before (the design, the PIRLS model), recorded in the result's ``optinfo``."""
    from .results import GlmerResult

    design, fam = model.design, model.family
    obj = GlmmObjective(model, nAGQ)

    t1 = time.perf_counter()
    theta0 = design.theta0.copy() if start is None else np.asarray(start, dtype=float)
    lower = design.lower
    theta, beta, fval, info = _first_stage(obj, theta0, nAGQ)
    if nAGQ > 0:
        theta, beta, fval = _joint_stage(obj, theta, beta, obj.RX, polish, info)
    n_opt = obj.n_evals
    opt_seconds = time.perf_counter() - t1

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
        grad, hess = deriv12(
            lambda x: obj.at_theta_beta(x[:n_theta], x[n_theta:]),
            np.concatenate([theta, beta]),
            fval,
            np.concatenate([lower, np.full(beta.size, -np.inf)]),
        )
        info["deriv_seconds"] = time.perf_counter() - t2
        obj.at_theta_beta(theta, beta)  # restore warm start and factor
        model.u = u_hat
    _check_fit(model, theta, beta, state["mu"], grad, hess, info)
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


def _first_stage(obj: GlmmObjective, theta0, nAGQ: int):
    """lme4's ``nAGQ = 0`` stage: θ by BOBYQA from ``theta0``, ``(u, β)`` by PIRLS inside.

    Returns ``(theta, beta, criterion, info)`` with the factor, ``u`` and ``obj.RX`` at the optimum; raises
    :class:`SeparationError` where a fixed effect separates the outcome.
    """
    model = obj.model
    design, fam = model.design, model.family
    step0 = np.full(theta0.size, 0.2)
    theta, f0, ok0, msg0 = nlopt_minimize(
        obj.at_theta, theta0, design.lower, step=step0, **(STAGE0_START_TOL if nAGQ else {})
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
    info["separation"] = []
    return theta, beta0, f0, info


def _joint_stage(obj: GlmmObjective, theta, beta0, RX0, polish: bool, info: dict):
    """``nAGQ >= 1``: (θ, β) jointly from the ``nAGQ = 0`` optimum, β standardised by its ``nAGQ = 0`` SEs
    (``RX0`` is its factor there); the quasi-Newton polish, or BOBYQA at a boundary, where the polish does
    not apply, or with ``polish=False``. Returns ``(theta, beta, criterion)``; ``info`` records the route."""
    model = obj.model
    lower = model.design.lower
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
        polished = newton_polish(fz, x0, fz(x0), low, H_beta=2 * s[:, None] * S0 * s[None, :])
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
    info["n_evals_joint"] = obj.n_evals - info["n_evals_nagq0"] - 1
    fval = obj.at_theta_beta(theta, beta)
    return theta, beta, fval


def _check_fit(model: PirlsModel, theta, beta, mu, grad, hess, info: dict) -> None:
    """Warn (and record in ``info``) of fitted means at the edge of their range, a singular fit and what
    lme4's convergence checks find in the derivatives ``grad``, ``hess`` (None: not computed)."""
    design, fam = model.design, model.family
    lower = design.lower
    singular = bool(np.any((lower == 0) & (theta < SINGULAR_TOL)))
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
