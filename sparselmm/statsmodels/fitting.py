"""How ``MixedLM`` fits: statsmodels' ``fit`` and ``fit_regularized`` on the engine's optimiser.

:func:`fit` and :func:`fit_regularized` are ``MixedLM``'s methods of those names (assigned in its class
body; ``model`` is the ``MixedLM``): statsmodels' arguments (``start_params``, ``free``, ``method``,
``fe_pen``/``cov_pen``, ``do_cg``) mapped onto θ — the Cholesky factor of ``cov_re/scale`` and
√(vcomp/scale) — and minimised by :func:`sparselmm.optimize.optimize_theta`
(:func:`minimize_deviance`), from lme4's moment start where lmer would start. The engine's warnings come
out as the facade's classes, which statsmodels users filter on.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import ConvergenceWarning, ModelSpecError, NumericalError, SingularFitWarning, caller_stacklevel
from ..optimize import OPTIMIZERS, optimize_theta
from ..progress import as_progress
from ..start import moment_start
from ._compat import MixedLMConvergenceWarning, SingularCovarianceWarning, is_penalty
from .likelihood import Likelihood
from .params import MixedLMParams

__all__ = ["fit", "fit_regularized", "minimize_deviance", "optimizer_name"]

_FIT_KWARGS = ["gtol", "maxiter", "eps", "maxcor", "ftol", "tol", "disp", "maxls"]  # statsmodels' accepted set
# statsmodels' scipy method names → our optimisers; any other name falls back to BOBYQA with a warning
_METHOD_MAP = {"nm": "nelder_mead", "nelder-mead": "nelder_mead", "lbfgs": "lbfgsb", "l-bfgs-b": "lbfgsb"}


def _start(model, start_params) -> MixedLMParams:
    """``start_params`` (packed with or without fixed effects, or a MixedLMParams) as a MixedLMParams."""
    if start_params is None:
        pa = MixedLMParams(model.k_fe, model.k_re, model.k_vc)
        return pa
    if isinstance(start_params, MixedLMParams):
        return start_params.copy()
    sp_ = np.asarray(start_params, dtype=float).ravel()
    if sp_.size == model.k_fe + model.k_re2 + model.k_vc:
        return MixedLMParams.from_packed(sp_, model.k_fe, model.k_re, model.use_sqrt, has_fe=True)
    if sp_.size == model.k_re2 + model.k_vc:
        return MixedLMParams.from_packed(sp_, model.k_fe, model.k_re, model.use_sqrt, has_fe=False)
    raise ModelSpecError(
        f"invalid start_params: expected {model.k_fe + model.k_re2 + model.k_vc} values (with fixed effects) "
        f"or {model.k_re2 + model.k_vc} (without), got {sp_.size}."
    )


def optimizer_name(method) -> str:
    """The engine's optimiser for statsmodels' ``method`` (a scipy name, one of ours, or a list of them)."""
    if method is None:
        return "auto"  # L-BFGS-B with the analytic gradient where the engine has one, else BOBYQA
    methods = [method] if isinstance(method, str) else list(method)
    for meth in methods:
        if meth.lower() in ("newton", "ncg"):
            raise ModelSpecError(f"method {meth} not available for MixedLM")
    m = methods[0].lower()
    m = _METHOD_MAP.get(m, m)
    if m in OPTIMIZERS:
        return m
    warnings.warn(
        f"method={methods[0]!r} is a scipy optimiser that sparselmm does not use; fitting with 'bobyqa' "
        f"(choose from {OPTIMIZERS} or 'nm'/'lbfgs' to silence this).",
        UserWarning,
        stacklevel=caller_stacklevel(),
    )
    return "bobyqa"


def minimize_deviance(
    model, start: MixedLMParams, reml: bool, free, optimizer: str, control: dict, use_sqrt=None, theta0=None
):
    """Minimise the deviance over the free parameters (from ``theta0`` if given, else ``start``);
    returns (θ̂, OptInfo)."""
    lik = model.likelihood()
    dev = _objective(model, lik.devfun(reml))
    s = lik.structure
    if theta0 is None:
        theta0 = lik.theta(start.cov_re, start.vcomp)
    if theta0 is None:
        raise ModelSpecError("start_params must have a positive semi-definite cov_re and non-negative vcomp.")
    lower = lik.design.lower
    if free is None:
        return _optimize_free(dev, theta0, lower, optimizer, control, lambda x: x)
    mask = np.concatenate([np.asarray(free.cov_re, float)[np.tril_indices(model.k_re)], np.asarray(free.vcomp, float)])
    if mask.size != model.k_re2 + model.k_vc:
        raise ModelSpecError(
            f"free must have a {model.k_re}×{model.k_re} cov_re and {model.k_vc} vcomp entries (a MixedLMParams)."
        )
    idx = np.flatnonzero(mask != 0)
    if model.use_sqrt if use_sqrt is None else use_sqrt:  # mask on the Cholesky factor = mask on θ
        pos = s.theta_of_sqrt[idx]
        lo = lower[pos]

        def f(x):
            th = theta0.copy()
            th[pos] = x
            return dev(th)

        x0 = theta0[pos]

        def to_theta(x):
            th = theta0.copy()
            th[pos] = x
            return th
    else:  # mask on cov_re / vcomp themselves
        psi0 = start.get_packed(use_sqrt=False, has_fe=False)
        ri, ci = np.tril_indices(model.k_re)
        is_var = np.concatenate([ri == ci, np.ones(model.k_vc, dtype=bool)])
        lo = np.where(is_var[idx], 0.0, -np.inf)

        def to_theta(x):
            psi = psi0.copy()
            psi[idx] = x
            pa = MixedLMParams.from_packed(psi, model.k_fe, model.k_re, False, has_fe=False)
            return lik.theta(pa.cov_re, pa.vcomp)

        def f(x):
            th = to_theta(x)
            return float("inf") if th is None else dev(th)

        x0 = psi0[idx]
    if idx.size == 0:
        from ..optimize import OptInfo

        return theta0, dev(theta0), OptInfo("none", 1, True, "no free parameters", theta0.copy())
    return _optimize_free(f, x0, lo, optimizer, control, to_theta)


def _objective(model, dev):
    """The deviance, or with ``fe_pen`` / ``cov_pen`` set, ``deviance + 2 · penalty`` at the GLS fixed
    effects (statsmodels' penalised profile likelihood; derivative-free, so BOBYQA)."""
    if model.fe_pen is None and model.cov_pen is None:
        return dev
    lik = model.likelihood()

    def penalised(theta):
        try:
            st = dev.solve(theta)
        except NumericalError:
            return float("inf")
        cov_re = lik.params_from_theta(theta).cov_re
        return st.deviance + 2.0 * model._penalty(st.beta, cov_re)

    return penalised


def fit(
    model,
    start_params=None,
    reml=True,
    niter_sa=0,
    do_cg=True,
    fe_pen=None,
    cov_pen=None,
    free=None,
    full_output=False,
    method=None,
    **fit_kwargs,
):
    """Fit by REML (default) or ML; statsmodels' arguments and meaning (see the class notes).

    ``start_params`` (packed with or without fixed effects, in the ``use_sqrt`` parameterisation,
    or a MixedLMParams) sets the starting covariance; ``free`` (a MixedLMParams of 0/1 masks) holds
    the masked covariance parameters at their starting values — e.g. ``cov_re=np.eye(k)`` fits
    independent random effects. ``maxiter`` is passed to the optimiser as its evaluation limit.
    """
    from .results import MixedLMResults

    bad = sorted(set(fit_kwargs).difference(_FIT_KWARGS))
    if bad:
        warnings.warn(
            f"Argument{'s' if len(bad) > 1 else ''} {', '.join(bad)} not used by MixedLM.fit. Future versions "
            "will raise on these arguments.",
            FutureWarning,
            stacklevel=caller_stacklevel(),
        )
    for name, pen, how in (
        ("fe_pen", fe_pen, "func(params) and deriv(params), e.g. statsmodels.base._penalties.L2()"),
        ("cov_pen", cov_pen, "func(cov_re, cov_re_inv), e.g. statsmodels.base._penalties.PSD(1.0)"),
    ):
        if pen is not None and not callable(getattr(pen, "func", None)):
            raise ModelSpecError(f"{name} must be a penalty object with {how}; got {type(pen).__name__}.")
    model.fe_pen, model.cov_pen = fe_pen, cov_pen
    optimizer = optimizer_name(method)
    if niter_sa > 0:
        warnings.warn("niter_sa is currently ignored", UserWarning, stacklevel=caller_stacklevel())
    # tighter than lme4's 1e-8 defaults: the statsmodels parameterisation reports small covariances whose
    # relative accuracy needs it (≈ +10% evaluations)
    control = {"ftol_abs": 1e-10, "xtol_abs": 1e-10, "ftol_rel": 0.0}
    if "ftol" in fit_kwargs:
        control["ftol_abs"] = float(fit_kwargs["ftol"])
    if "maxiter" in fit_kwargs:
        control["maxeval"] = int(fit_kwargs["maxiter"])
    progress = as_progress(fit_kwargs.get("disp", False), "-2 REML log-likelihood" if reml else "-2 log-likelihood")
    if progress is not None:  # statsmodels' disp=True prints the optimiser's messages; here, its progress
        control["progress"] = progress
        progress.begin(f"MixedLM fit ({'REML' if reml else 'ML'}): {model.nobs:,} rows, {model.n_groups:,} groups")
    model.reml = bool(reml)
    model._freepat = free
    start = _start(model, start_params)
    lik = model.likelihood()
    hist = [] if full_output else None
    if do_cg:
        # without start_params, start where lmer() starts (lme4's moment start for intercept-only
        # variance components; statsmodels' cov_re = I, vcomp = 1 otherwise): the optimum is the same,
        # the path shorter (InstEval's crossed model: 10 instead of 27 gradient evaluations)
        theta0 = _moment_start(lik) if start_params is None and free is None else None
        with _statsmodels_warnings():
            theta, _, info = minimize_deviance(model, start, model.reml, free, optimizer, control, theta0=theta0)
        converged = info.converged
        if hist is not None:
            hist.append(
                {
                    "optimizer": info.optimizer,
                    "n_evals": info.n_evals,
                    "converged": info.converged,
                    "message": info.message,
                    "theta": np.asarray(theta).copy(),
                }
            )
    else:
        theta = lik.theta(start.cov_re, start.vcomp)
        if theta is None:
            raise ModelSpecError("start_params must have a positive semi-definite cov_re and non-negative vcomp.")
        info, converged = None, False
    return MixedLMResults._from_theta(model, theta, converged, hist, info)


def fit_regularized(model, start_params=None, method="l1", alpha=0, ceps=1e-4, ptol=1e-6, maxit=200, **fit_kwargs):
    """Penalised fixed effects, as statsmodels.

    ``method="l1"``: L1-penalised fixed effects with the covariance held at the unpenalised fit
    (statsmodels' cyclic coordinate descent on the GLS criterion, weights ``alpha``). A statsmodels
    penalty object (``statsmodels.base._penalties.L2()``, ``PseudoHuber(0.3)``, ...): its ``alpha`` is
    set to ``alpha`` and the model is fitted with ``fit(fe_pen=method)``, statsmodels' penalised profile
    likelihood (the penalty at the GLS fixed effects enters the covariance estimate).

    Difference from statsmodels (deliberate): ``llf`` and ``params_object`` of an L1 result use the
    profile-scale covariance and the variance components (statsmodels passes the scaled ``cov_re``
    and drops ``vcomp``, so its ``llf`` there is not the model's log-likelihood).
    """
    from .results import MixedLMResults

    if not isinstance(method, str):
        if not is_penalty(method):
            raise ModelSpecError(
                "method must be 'l1' or a penalty object with func(params) and deriv(params) (e.g. "
                f"statsmodels.base._penalties.L2()); got {type(method).__name__}."
            )
        method.alpha = alpha
        fit_kwargs["fe_pen"] = method
        return fit(model, start_params=start_params, **fit_kwargs)
    if method.lower() != "l1":
        raise ModelSpecError(f"Invalid regularization method {method!r}: use 'l1' or a penalty object.")
    alpha = np.full(model.k_fe, float(alpha)) if np.isscalar(alpha) else np.asarray(alpha, dtype=float)
    mdf = fit(model, start_params=start_params, **fit_kwargs)
    lik = model.likelihood()
    state = lik.solve(mdf._theta, model.reml)
    G = state.R_X.T @ state.R_X / mdf.scale
    bhat = state.beta
    fe = np.asarray(mdf.fe_params, dtype=float).copy()
    for _ in range(maxit):
        old = fe.copy()
        for j in range(model.k_fe):
            if abs(fe[j]) < ceps:
                continue
            fe[j] = 0.0
            a = G[j, j]
            b = 2.0 * float(G[j] @ (fe - bhat))
            if b > alpha[j]:
                fe[j] = -(b - alpha[j]) / (2 * a)
            elif b < -alpha[j]:
                fe[j] = -(b + alpha[j]) / (2 * a)
        if np.abs(old - fe).max() < ptol:
            break
    return MixedLMResults._regularized(mdf, fe, ceps)


def _moment_start(lik: Likelihood) -> np.ndarray:
    """lme4's moment start (:func:`sparselmm.start.moment_start`) for the facade's design.

    ``moment_start`` recognises a random intercept by lme4's column name; the facade names the group's
    columns the statsmodels way (``"Group"``, the group column's name, ``x_re1``), so a group term whose
    single column is all ones is presented to it as the intercept it is. (From statsmodels' start, θ = 1,
    a gradient fit of statsmodels' test model lme05 stopped at the stationary point θ = 0.)
    """
    from types import SimpleNamespace

    design = lik.design
    terms = []
    for t in design.terms:
        if t.Zt_block is None and t.k == 1 and np.all(t.z == 1.0):
            t = SimpleNamespace(
                Zt_block=None, cnms=["Intercept"], refs=t.refs, n_levels=t.n_levels, group_name=t.group_name
            )
        terms.append(t)
    return moment_start(SimpleNamespace(theta0=design.theta0, terms=terms, y=design.y))


class _statsmodels_warnings:
    """Re-emit the engine's warnings as the facade's classes, which statsmodels users filter on.

    ``SingularFitWarning`` becomes :class:`SingularCovarianceWarning` (also statsmodels'
    ``SingularMatrixWarning``, worded as statsmodels words it); ``ConvergenceWarning`` becomes
    :class:`MixedLMConvergenceWarning` (also statsmodels' ``ConvergenceWarning``); others pass unchanged.
    """

    def __enter__(self):
        self._cm = warnings.catch_warnings(record=True)
        self._caught = self._cm.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._cm.__exit__(*exc)
        for w in self._caught:
            msg, cat = str(w.message), w.category
            if issubclass(cat, SingularFitWarning) and not issubclass(cat, SingularCovarianceWarning):
                msg = (
                    "The random effects covariance matrix is singular: a variance is estimated as zero or a "
                    f"correlation as +-1 ({msg}; lme4's rule, a Cholesky-factor diagonal below 1e-4)."
                )
                cat = SingularCovarianceWarning
            elif issubclass(cat, ConvergenceWarning) and not issubclass(cat, MixedLMConvergenceWarning):
                cat = MixedLMConvergenceWarning
            warnings.warn(msg, cat, stacklevel=caller_stacklevel())
        return False


def _optimize_free(f, x0, lower, optimizer, control, to_theta):
    """``optimize_theta`` over the free parameters (it never returns a point worse than one it evaluated,
    NLopt's "roundoff limited" stop included), mapped back to θ. ``control["progress"]`` (``fit(disp=True)``)
    reports the evaluations."""
    control = dict(control)
    progress = control.pop("progress", None)
    x, fx, info = optimize_theta(f, x0, lower, optimizer, control, check_conv=False, progress=progress)
    return to_theta(np.array(x, dtype=float)), fx, info
