"""Simulation from a fitted model, refits to new responses and the parametric bootstrap.

Mirrors lme4's ``simulate.merMod`` (``use.u``), ``refit``, ``refitML`` and ``bootMer``
(``type = "parametric"``) with ``confint.bootMer`` (``boot::boot.ci``'s percentile, basic and normal
intervals).

Simulation (lme4's ``.simulateFun`` for a Gaussian model)::

    y* = X β̂ + offset + σ̂ Z Λ̂ u* + σ̂ ε / √w,      u* ~ N(0, I_q), ε ~ N(0, I_n)

with ``use_u=True`` replacing ``σ̂ Z Λ̂ u*`` by the fitted ``Z b̂``. σ̂ is the fit's (the REML estimate for a
REML fit, as ``sigma(m)``). For a weighted fit the residuals have the fitted model's variance ``σ̂²/w``;
lme4 1.1-31 draws them with ``σ̂²`` on every row, ignoring the prior weights (measured in
``validation/compare_ci.py``'s simulate section).

A refit to a new response changes only ``ZᵀWy``, ``XᵀWy``, ``yᵀWy`` and the shift of ``β``
(:meth:`~sparselmm.deviance.ProfiledDeviance.with_response`): the cross-products ``ZᵀWZ, ZᵀWX, XᵀWX``,
the block updater and the symbolic factorisation are the fit's. Each replicate is optimised from θ̂
(lme4's ``refit`` also starts there) without the convergence checks. Where the deviance has an exact
gradient (small q, any terms; the dense-Schur factors of crossed models) a replicate is a projected BFGS
started with the Hessian at θ̂ (:mod:`sparselmm.inference._engine`, ``_FastReplicator``): ~7 evaluations
on sleepstudy where BOBYQA takes ~47. Otherwise BOBYQA, with a first step of ``WARM_START_STEP`` instead
of NLopt's default, which is sized for a cold start.

Reproducibility: replicate ``i`` draws ``u*`` then ``ε`` from its own generator,
``numpy.random.default_rng(SeedSequence(seed).spawn(nsim)[i])``, so a seeded run gives the same draws in
any order, with any number of workers, and ``simulate(nsim, seed)[:, i]`` is the response of bootstrap
replicate ``i`` with the same seed. Workers are forked processes (each with its own copy of the factor
workspace); where ``fork`` is not available they are threads.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from numbers import Integral

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.stats import norm

from ..crossprod import CrossProducts
from ..deviance import ProfiledDeviance
from ..errors import ModelSpecError, NumericalError, caller_stacklevel
from ..linalg.cholmod import SparseCholesky
from ..linalg.threads import blas_threads
from ..linalg.thresholds import ROW_FREE_DENSE_MAX
from ..optimize import OptInfo, is_singular, optimize_theta, refit_theta
from ..parameters import check_level, estimates, parameter_values, percent_labels, select_parameters
from ..results import LmerResult
from . import _engine

__all__ = ["BootstrapResult", "bootstrap", "refit", "refit_ml", "refit_reml", "simulate"]

# NLopt's default first BOBYQA step suits a cold start; from θ̂ a step of 0.1 took 46.7 instead of 65.6
# evaluations per sleepstudy replicate (40 replicates) and reached the same optima (within 1.4e-7)
WARM_START_STEP = 0.1
# the quasi-Newton refits of the replicates stop when the predicted decrease of the criterion is below this
# (deviance units): θ within ~1e-4 standard errors of the replicate's optimum (ζ² = Δ deviance); measured on
# sleepstudy, 1e-8 moved no statistic by more than 2e-6 of its bootstrap SD against fits to 1e-12
BOOT_TOL = 1e-8
# stage 1 of a two-stage replicate (_FastReplicator._two_stage) stops at this predicted decrease of its model
STAGE1_TOL = 1e-6
BOOT_TYPES = ("perc", "basic", "norm")


# ---- seeds and argument checks -----------------------------------------------------------------
def _check_nsim(nsim) -> int:
    if isinstance(nsim, bool) or not isinstance(nsim, Integral) or nsim < 1:
        raise ModelSpecError(f"nsim must be a whole number of replicates >= 1, not {nsim!r}.")
    return int(nsim)


def _root_seed(seed) -> np.random.SeedSequence:
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if seed is None or (isinstance(seed, Integral) and not isinstance(seed, bool) and seed >= 0):
        return np.random.SeedSequence(seed)
    raise ModelSpecError(
        f"seed must be None, a non-negative integer or a numpy.random.SeedSequence, not {type(seed).__name__}."
    )


def _n_workers(n_jobs) -> int:
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, Integral) or n_jobs == 0 or n_jobs < -1:
        raise ModelSpecError(f"n_jobs must be a positive number of workers or -1 (all cores), not {n_jobs!r}.")
    return (os.cpu_count() or 1) if n_jobs == -1 else int(n_jobs)


# ---- simulation ------------------------------------------------------------------------------
class _Simulator:
    """What a draw of ``y*`` needs, formed once: the mean, ``Z Λ̂`` and the residual scale."""

    def __init__(self, result: LmerResult, use_u: bool):
        design = result.design
        self.use_u = bool(use_u)
        self.sigma = result.sigma
        self.q = design.q
        if self.use_u:
            self.mean = result.fitted()
            self.ZLambda = None
        else:
            self.mean = design.X @ result.fixef.to_numpy()
            if design.offset is not None:
                self.mean = self.mean + design.offset
            self.ZLambda = (design.Zt.T @ result.Lambda).tocsr()
        w = design.weights
        self.noise_scale = self.sigma if w is None else self.sigma / np.sqrt(w)

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        y = self.mean.copy()
        if not self.use_u:
            y += self.sigma * (self.ZLambda @ rng.standard_normal(self.q))
        y += self.noise_scale * rng.standard_normal(self.mean.size)
        return y

    def draw_deviation(self, rng: np.random.Generator, centre: np.ndarray) -> np.ndarray:
        """``draw(rng) − centre`` from the same random numbers (``centre`` = ``Xβ̂ + offset``), formed without
        the mean so a refit can shift its response by β̂ exactly."""
        e = self.mean - centre if self.use_u else np.zeros(self.mean.size)
        if not self.use_u:
            e += self.sigma * (self.ZLambda @ rng.standard_normal(self.q))
        e += self.noise_scale * rng.standard_normal(self.mean.size)
        return e


def simulate(result: LmerResult, nsim: int = 1, seed=None, use_u: bool = False) -> pd.DataFrame:
    """Responses simulated from the fitted model (lme4's ``simulate.merMod``).

    Parameters
    ----------
    result : LmerResult
    nsim : int
        Number of simulated responses.
    seed : int or numpy.random.SeedSequence, optional
        Column ``i`` is drawn from ``SeedSequence(seed).spawn(nsim)[i]`` (see the module docstring).
    use_u : bool
        Condition on the fitted random effects (lme4's ``use.u = TRUE``) instead of drawing new ones.

    Returns
    -------
    DataFrame
        n rows (the fitted rows, indexed by their position in the caller's data) and columns
        ``sim_1`` … ``sim_nsim``.
    """
    nsim = _check_nsim(nsim)
    sim = _Simulator(result, use_u)
    children = _root_seed(seed).spawn(nsim)
    values = np.column_stack([sim.draw(np.random.default_rng(s)) for s in children])
    return pd.DataFrame(values, index=pd.Index(result.design.data.rows), columns=[f"sim_{i + 1}" for i in range(nsim)])


# ---- refits --------------------------------------------------------------------------------
def _response_vector(newresp, n: int) -> np.ndarray:
    if isinstance(newresp, pd.DataFrame):
        if newresp.shape[1] != 1:
            raise ModelSpecError(f"newresp has {newresp.shape[1]} columns; pass one response (e.g. sims['sim_1']).")
        newresp = newresp.iloc[:, 0]
    y = np.asarray(newresp, dtype=float).ravel()
    if y.size != n:
        raise ModelSpecError(f"newresp has {y.size} values but the model was fitted to {n} rows.")
    return y


def refit(result: LmerResult, newresp, check_conv: bool = True, control: dict | None = None) -> LmerResult:
    """The model refitted to a new response (lme4's ``refit``), starting from the fit's θ̂.

    Parameters
    ----------
    result : LmerResult
    newresp : array-like, Series or one-column DataFrame
        One value per fitted row (in the fit's row order, e.g. a column of :func:`simulate`).
    check_conv : bool
        Run the convergence checks on the refit.
    control : dict, optional
        Optimiser settings (see :func:`sparselmm.lmer`).

    Returns
    -------
    LmerResult
        An independent fit: it has its own factor workspace, and ``result`` is left as it was.
    """
    y = _response_vector(newresp, result.nobs)
    devfun = result.deviance_function.with_response(y)
    return _fit(result, devfun, control, check_conv)


def refit_ml(result: LmerResult) -> LmerResult:
    """The fit on the ML criterion (lme4's ``refitML``): ``result`` itself if it is already ML.

    A REML fit is re-optimised from its θ̂ on −2 log-likelihood, sharing its cross-products and
    symbolic factorisation.

    Parameters
    ----------
    result : LmerResult

    Returns
    -------
    LmerResult
        The ML fit; ``result`` is left as it was.
    """
    if not result.reml:
        return result
    return _fit(result, result.deviance_function.with_reml(False), None, True)


def refit_reml(result: LmerResult) -> LmerResult:
    """The fit on the REML criterion: ``result`` itself if it is already REML, else re-optimised from its θ̂
    (sharing its cross-products and symbolic factorisation), as :func:`refit_ml` in the other direction."""
    if result.reml:
        return result
    return _fit(result, result.deviance_function.with_reml(True), None, True)


def _fit(result: LmerResult, devfun, control, check_conv) -> LmerResult:
    start = result.theta if control else _quasi_newton_start(result, devfun)
    theta, _, info = refit_theta(
        devfun, start, result.optinfo.theta_start, result.design.lower, result.optinfo.optimizer, control, check_conv
    )
    state = devfun.solve(theta)
    return LmerResult(devfun, state, info, data_name=result.data_name)


def _quasi_newton_start(result: LmerResult, devfun) -> np.ndarray:
    """The optimum of ``devfun`` by quasi-Newton from θ̂ where an exact gradient exists (else θ̂ itself).

    BOBYQA started at a θ̂ with a zero θ_k (a singular fit) often stays there although the new response's
    optimum is inside (measured: 15 of 40 Dyestuff2 bootstrap responses); the quasi-Newton fit probes off
    the boundary (``_engine.PROBE``). ``optimize_theta`` then starts from its result and runs the checks.
    """
    theta = result.theta.copy()
    lower = result.design.lower
    if _engine.evaluator_kind(devfun) is None:
        return theta
    try:
        with blas_threads(_engine.dense_size(devfun)):
            ev = _engine.evaluator(devfun)
            upper = np.full(theta.size, np.inf)
            H0 = _engine.hessian(ev.value_and_gradient, theta, lower, upper)
            probe = np.where(lower == 0, _engine.PROBE, 0.0)
            x, *_, ok = _engine.quasi_newton(ev.value_and_gradient, theta, lower, upper, H0, BOOT_TOL, probe=probe)
        return x if ok else theta
    except (NumericalError, np.linalg.LinAlgError):
        return theta


# ---- the bootstrap ----------------------------------------------------------------------------
def _boot_control(result: LmerResult, tol: float | None, control: dict | None) -> dict:
    ctrl = {"initial_step": WARM_START_STEP} if result.optinfo.optimizer == "bobyqa" else {}
    if tol is not None:
        tol = float(tol)
        if not tol > 0:
            raise ModelSpecError(f"tol must be a positive tolerance, not {tol!r}.")
        if result.optinfo.optimizer == "lbfgsb":  # L-BFGS-B stops on a relative reduction of the deviance
            ctrl["ftol_rel"] = tol / max(abs(result.objective), 1.0)
        else:
            ctrl.update(ftol_abs=tol, xtol_abs=tol)
    ctrl.update(control or {})
    return ctrl


class _Replicator:
    """Draws and fits replicates; holds one factor workspace of its own (one per worker)."""

    def __init__(self, result: LmerResult, func: Callable | None, names: list[str], use_u: bool, ctrl: dict):
        self.result = result
        self.func = func
        self.names = names
        self.sim = self._simulator(result, use_u)
        self.base = self._base(result)
        self.ctrl = ctrl
        self.lower = result.design.lower
        self.n, self.p = result.nobs, result.design.p

    def _simulator(self, result, use_u: bool):
        return _Simulator(result, use_u)

    def _base(self, result):
        return result.deviance_function.with_response(result.y)  # own workspace: the fit is not touched

    def one(self, index: int, seed: np.random.SeedSequence):
        """``(index, values or None, failure reason or None, n_evals, converged, singular)``."""
        try:
            y = self.sim.draw(np.random.default_rng(seed))
            devfun = self.base.with_response(y, share_factor=True)
            theta, _, info = optimize_theta(
                devfun, self.result.theta, self.lower, self.result.optinfo.optimizer, self.ctrl, check_conv=False
            )
            state = devfun.solve(theta)
            if self.func is None:
                sigma = math.sqrt(state.pwrss / (self.n - self.p if devfun.reml else self.n))
                values = parameter_values(devfun.design, theta, sigma, state.beta)
            else:
                values = _named_values(self.func(LmerResult(devfun, state, info)), self.names)
            return index, values, None, info.n_evals, info.converged, is_singular(theta, self.lower)
        except Exception as err:  # as bootMer: a failed replicate is recorded with its reason, the run goes on
            return index, None, f"{type(err).__name__}: {err}", 0, False, False

    def many(self, tasks):
        with warnings.catch_warnings():  # singular or unconverged replicates are reported in diagnostics
            warnings.simplefilter("ignore")
            return [self.one(i, s) for i, s in tasks]

    def clone(self) -> _Replicator:
        """A replicator with its own workspaces (for another thread)."""
        return _Replicator(self.result, self.func, self.names, self.sim.use_u, self.ctrl)


class _FastReplicator(_Replicator):
    """Replicates fitted by warm-started quasi-Newton on the exact gradient (:mod:`._engine`).

    Each replicate's response is ``y* = Xβ̂ + offset + e`` with ``e`` drawn as in :func:`simulate`; its
    cross-products are those of ``e`` with the shift β̂ (``ZᵀWe``, ``XᵀWe``, ``eᵀWe``: two products with the
    rows), so nothing is re-formed but three vectors. The fit starts at θ̂ with the Hessian at θ̂ (differences
    of the exact gradient on the fit's own response, once) and stops when the predicted decrease of the
    criterion is below ``tol``; a replicate whose quasi-Newton fit fails is refitted by the BOBYQA path.
    """

    def __init__(self, result, func, names, use_u, ctrl, tol: float):
        super().__init__(result, func, names, use_u, ctrl)
        self.tol = tol
        self.ev = ev = _engine.evaluator(self.base)  # on this replicator's own workspace
        self.theta_hat = result.theta.copy()
        self.upper = np.full(self.theta_hat.size, np.inf)
        self.probe = np.where(self.lower == 0, _engine.PROBE, 0.0)
        with blas_threads(_engine.dense_size(result.deviance_function)):
            self.H0 = _engine.hessian(ev.value_and_gradient, self.theta_hat, self.lower, self.upper)
            self.H0_inv = np.linalg.inv(self.H0)
            self.two_stage = isinstance(ev, _engine.FactorDeviance)
            if self.two_stage:  # factors held at θ̂ and next to it: ld's gradient at θ̂ and Hessian there
                ev.hold_at(self.theta_hat, hessian=True)
        design = result.design
        self.centre = self._centre(result)
        self.beta_hat = result.fixef.to_numpy()
        self.w = design.weights
        self.nu = self.n - self.p if result.reml else self.n
        self.dense = isinstance(ev, _engine.DenseDeviance)

    def _centre(self, result):
        design = result.design
        return design.X @ result.fixef.to_numpy() + (0.0 if design.offset is None else design.offset)

    @staticmethod
    def applicable(result) -> bool:
        """An exact-gradient evaluator exists (small q, or a factor with an analytic gradient)."""
        devfun = result.deviance_function
        return _engine.evaluator_kind(devfun) is not None

    def clone(self) -> _FastReplicator:
        """A replicator with its own workspaces (for another thread)."""
        return _FastReplicator(self.result, self.func, self.names, self.sim.use_u, self.ctrl, self.tol)

    def _evaluator_for(self, e: np.ndarray):
        design, cr = self.result.design, self.base.cross
        We = e if self.w is None else e * self.w
        ZtWy = np.asarray(design.Zt @ We).ravel()
        XtWy = design.X.T @ We
        ytWy = float(e @ We)
        if self.dense:
            return self.ev.with_response(ZtWy, XtWy, ytWy, self.beta_hat)
        cross = CrossProducts(cr.ZtWZ, cr.ZtWX, ZtWy, cr.XtWX, XtWy, ytWy, cr.sum_log_w, self.beta_hat.copy(), cr.n)
        return self.ev.with_cross(cross)

    def one(self, index: int, seed: np.random.SeedSequence):
        try:
            e = self.sim.draw_deviation(np.random.default_rng(seed), self.centre)
            ev = self._evaluator_for(e)
            last = {}
            nu = ev.nu

            def fg(x):
                parts = ev.parts(x, gradient=True)
                last["x"], last["parts"] = x, parts
                return ev.value(parts), parts.dld + (nu / parts.r2) * parts.dr2

            def f_only(x):
                parts = ev.parts(x, gradient=False)
                last["x"], last["parts"] = x, parts
                return ev.value(parts)

            if self.two_stage:
                theta, n_calls, ok = self._two_stage(ev, fg, f_only, last)
            else:
                theta, _, _, _, n_calls, ok = _engine.quasi_newton(
                    fg,
                    self.theta_hat,
                    self.lower,
                    self.upper,
                    self.H0,
                    self.tol,
                    probe=self.probe,
                    H0_inv=self.H0_inv,
                    return_H=False,
                )
            if not ok:  # hand the replicate to BOBYQA (same draw: same seed)
                out = super().one(index, seed)
                return (*out[:3], out[3] + n_calls, *out[4:])
            parts = last["parts"] if np.array_equal(last.get("x"), theta) else ev.parts(theta, gradient=False)
            sigma = math.sqrt(parts.r2 / self.nu)
            if self.func is None:
                values = parameter_values(self.result.design, theta, sigma, parts.beta)
            else:
                devfun = self.base.with_response(self.centre + e, share_factor=True)
                info = OptInfo("quasi-newton", n_calls, ok, "predicted decrease below tol", self.theta_hat.copy())
                values = _named_values(self.func(LmerResult(devfun, devfun.solve(theta), info)), self.names)
            return index, values, None, n_calls, ok, is_singular(theta, self.lower)
        except Exception as err:  # as bootMer: a failed replicate is recorded with its reason, the run goes on
            return index, None, f"{type(err).__name__}: {err}", 0, False, False

    def _two_stage(self, ev, fg, f_only, last):
        """A replicate on a factor with an analytic gradient, in two stages.

        Most of a gradient's cost is ``∂ld/∂θ`` (traces of ``C⁻¹``: a ``potri`` of the dense Schur block), and
        ``ld = log|C|`` does not depend on the response. Stage 1 minimises a model of the criterion — ``ld``
        replaced by its second-order Taylor expansion at θ̂ (gradient and Hessian there, from the factors held
        at set-up), ``ν log r²`` exact with its exact gradient — so each step costs a factorisation and two
        solves; it stops at a looser tolerance (``STAGE1_TOL``). Stage 2 takes the exact gradient where stage
        1 stopped (from the factor it left, no refactorisation) and finishes with exact steps — usually one,
        checked by the criterion alone. The result is the exact optimum to ``tol``.
        """
        nu, held = ev.nu, ev._held[0]
        ld0, dld0, H_ld, theta_hat = held["ld"], held["dld"], ev._H_ld, self.theta_hat
        const = ev.value(_engine.Parts(theta_hat, 0.0, 1.0, None))  # the criterion with ld = 0, r² = 1

        def fg_model(x):
            parts = ev.parts(x, gradient="r2")
            last["x"], last["parts"] = x, parts
            step = x - theta_hat
            H_step = H_ld @ step
            ld = ld0 + dld0 @ step + 0.5 * step @ H_step
            return const + ld + nu * np.log(parts.r2), dld0 + H_step + (nu / parts.r2) * parts.dr2

        p0 = ev.parts(theta_hat, gradient=True)  # two solves with the factor held at θ̂
        first = (ev.value(p0), p0.dld + (nu / p0.r2) * p0.dr2)
        x1, _, _, H1, n1, _ = _engine.quasi_newton(
            fg_model,
            theta_hat,
            self.lower,
            self.upper,
            self.H0,
            STAGE1_TOL,
            first=first,
            probe=self.probe,
            H0_inv=self.H0_inv,
        )
        if np.array_equal(x1, theta_hat):
            parts = p0
        elif np.array_equal(last.get("x"), x1):
            parts = last["parts"]
        else:
            parts = ev.parts(x1, gradient="r2")
            n1 += 1
        f1 = ev.value(parts)
        g1 = ev.exact_dld(parts) + (nu / parts.r2) * parts.dr2
        last["x"], last["parts"] = x1, parts
        theta, _, _, _, n2, ok = _engine.quasi_newton(
            fg,
            x1,
            self.lower,
            self.upper,
            H1,
            self.tol,
            first=(f1, g1),
            probe=self.probe,
            return_H=False,
            fun=f_only,
        )
        return theta, 1 + n1 + n2, ok

    def many(self, tasks):
        with blas_threads(_engine.dense_size(self.result.deviance_function)):
            return super().many(tasks)


# ---- the bootstrap of a fit from chunks (sparselmm.scale): responses drawn as their cross-products -----
# relative ridges tried, in turn, for the sparse factor of G (q + p above ROW_FREE_DENSE_MAX)
ROW_FREE_RIDGES = (1e-12, 1e-10, 1e-8)


@dataclass
class _DrawnResponse:
    """A replicate's response as all a refit reads of it: ``ZᵀWe``, ``XᵀWe``, ``eᵀWe`` of ``e = y* − Xβ̂ − offset``."""

    ZtWe: np.ndarray
    XtWe: np.ndarray
    eWe: float

    def __radd__(self, centre):  # the replicators' `centre + e`: a row-free draw is e itself (centre 0)
        return self

    def cross_products(self, cross: CrossProducts, beta_hat: np.ndarray) -> CrossProducts:
        """The fit's cross-products with this response, shifted by ``β̂``."""
        return CrossProducts(
            cross.ZtWZ,
            cross.ZtWX,
            self.ZtWe,
            cross.XtWX,
            self.XtWe,
            self.eWe,
            cross.sum_log_w,
            beta_hat.copy(),
            cross.n,
        )


class _CrossProductSimulator:
    """:class:`_Simulator` for a fit that holds cross-products, not rows: draws ``ZᵀWe, XᵀWe, eᵀWe`` directly.

    The simulated response is ``y* = Xβ̂ + offset + e`` with ``e = Zc + σ̂ W^(-1/2) ε``, ``c = σ̂ Λ̂ u*``
    (``u* ~ N(0, I_q)``; ``use_u``: ``c = b̂``) and ``ε ~ N(0, I_n)``. With ``M = W^(1/2) [Z X]`` and
    ``G = MᵀM`` (the fit's ``ZᵀWZ, ZᵀWX, XᵀWX``), splitting ``ε`` into its projection on the columns of
    ``M`` and the rest gives ``s = Mᵀε ~ N(0, G)`` and ``εᵀε = sᵀG⁺s + χ²(n − rank G)``, the two independent.
    So::

        ZᵀWe = ZᵀWZ c + σ̂ s_Z,   XᵀWe = XᵀWZ c + σ̂ s_X,   eᵀWe = cᵀZᵀWZ c + 2σ̂ cᵀs_Z + σ̂² εᵀε

    have exactly the joint distribution they have under the in-memory simulation (not the same numbers for
    a seed: other random draws). ``s = Rξ`` with ``RRᵀ = G``: for ``q + p ≤ ROW_FREE_DENSE_MAX`` the dense
    pivoted Cholesky of ``G`` (LAPACK ``pstrf``; rank-revealing, ``sᵀG⁺s = ξᵀξ`` over the rank), above it
    CHOLMOD on ``G + δI`` (``δ`` = 1e-12 × max diag ``G``, raised by 100 while the factorisation fails):
    ``s = (G + δI) Pᵀ L⁻ᵀ ξ ~ N(0, G + δI)``, ``sᵀ(G + δI)⁻¹s = ξᵀξ``, and ``χ²(n − q − p)`` for the rest —
    the exact draw for ``M`` with ``√δ I`` appended as ``q + p`` rows, a change of relative size ``√δ`` (1e-6)
    in the directions where ``G`` is singular.
    """

    def __init__(self, result, use_u: bool):
        cross = result.deviance_function.cross
        self.use_u = bool(use_u)
        self.sigma = float(result.sigma)
        self.n, self.q, self.p = int(cross.n), cross.ZtWZ.shape[0], cross.XtWX.shape[0]
        self.ZtWZ, self.ZtWX = cross.ZtWZ, cross.ZtWX
        self.Lambda = result.Lambda
        self.b = result.b if self.use_u else None
        m = self.q + self.p
        if m <= ROW_FREE_DENSE_MAX:
            from scipy.linalg.lapack import dpstrf

            G = np.block([[cross.ZtWZ.toarray(), cross.ZtWX], [cross.ZtWX.T, cross.XtWX]])
            c, piv, rank, info = dpstrf(G, lower=0)
            if info < 0:
                raise NumericalError(f"The pivoted Cholesky factorisation of [Z X]ᵀW[Z X] failed (LAPACK info {info}).")
            R = np.zeros((m, rank))
            R[piv - 1] = np.triu(c)[:rank].T  # G = R Rᵀ
            self.R, self.rank, self.factor = R, int(rank), None
        else:
            self.R, self.factor = None, None
            G = sp.bmat([[cross.ZtWZ, sp.csc_matrix(cross.ZtWX)], [sp.csc_matrix(cross.ZtWX.T), cross.XtWX]]).tocsc()
            lower = sp.tril(G, format="csc")
            lower.sort_indices()
            scale = float(G.diagonal().max(initial=0.0)) or 1.0
            chol = SparseCholesky(lower)
            for ridge in ROW_FREE_RIDGES:
                try:
                    chol.factorize(lower, beta=ridge * scale)
                    self.factor, self.delta = chol, ridge * scale
                    break
                except NumericalError:
                    continue
            if self.factor is None:
                raise NumericalError("No Cholesky factor of [Z X]ᵀW[Z X] + δI for δ up to 1e-8 × its largest diagonal.")
            self.G, self.rank = G, m
        if self.n < self.rank:
            raise NumericalError(
                f"The fit has {self.n} rows but q + p = {m} random and fixed-effect columns: its responses cannot "
                "be drawn from the cross-products alone (fit in memory to bootstrap it)."
            )

    def draw(self, rng: np.random.Generator) -> _DrawnResponse:
        """One response as its cross-products (``e = y* − Xβ̂ − offset``)."""
        if self.use_u:
            c = self.b
        else:
            c = self.sigma * (self.Lambda @ rng.standard_normal(self.q))
        xi = rng.standard_normal(self.rank)
        if self.R is not None:
            s = self.R @ xi
        else:
            t = self.factor.solve_Lt(xi)
            s = self.G @ t + self.delta * t
        eps2 = float(xi @ xi) + (rng.chisquare(self.n - self.rank) if self.n > self.rank else 0.0)
        s_Z, s_X = s[: self.q], s[self.q :]
        Gc = np.asarray(self.ZtWZ @ c).ravel()
        sig = self.sigma
        return _DrawnResponse(
            ZtWe=Gc + sig * s_Z,
            XtWe=self.ZtWX.T @ c + sig * s_X,
            eWe=float(c @ Gc + 2.0 * sig * (c @ s_Z) + sig**2 * eps2),
        )

    def draw_deviation(self, rng: np.random.Generator, centre) -> _DrawnResponse:
        return self.draw(rng)


class _RowFreeDeviance(ProfiledDeviance):
    """A fit's deviance function whose :meth:`with_response` takes a :class:`_DrawnResponse` (no rows)."""

    beta_hat: np.ndarray

    def with_response(self, y, share_factor: bool = False):
        if not isinstance(y, _DrawnResponse):
            return self.design._not_held("A response of n values")
        return self._sibling(y.cross_products(self.cross, self.beta_hat), self.reml, share_factor)


class _RowFree:
    """The replicators' hooks for a fit from chunks: responses drawn as cross-products (see
    :class:`_CrossProductSimulator`), refits on the fit's own cross-products; the replicators' loops as they are."""

    def _simulator(self, result, use_u: bool):
        return _CrossProductSimulator(result, use_u)

    def _base(self, result):
        base = result.deviance_function.with_reml(result.reml)  # own workspace: the fit is not touched
        base.__class__ = _RowFreeDeviance
        base.beta_hat = result.fixef.to_numpy()
        return base

    def _centre(self, result):
        return 0.0

    def _evaluator_for(self, e: _DrawnResponse):
        if self.dense:
            return self.ev.with_response(e.ZtWe, e.XtWe, e.eWe, self.beta_hat)
        return self.ev.with_cross(e.cross_products(self.base.cross, self.beta_hat))


class _RowFreeReplicator(_RowFree, _Replicator):
    def clone(self) -> _RowFreeReplicator:
        return _RowFreeReplicator(self.result, self.func, self.names, self.sim.use_u, self.ctrl)


class _RowFreeFastReplicator(_RowFree, _FastReplicator):
    def clone(self) -> _RowFreeFastReplicator:
        return _RowFreeFastReplicator(self.result, self.func, self.names, self.sim.use_u, self.ctrl, self.tol)


def _named_values(out, names: list[str] | None) -> np.ndarray:
    if isinstance(out, pd.Series):
        if names is not None and list(out.index.astype(str)) != names:
            raise ModelSpecError(f"func returned names {list(out.index)} on a replicate, {names} on the fit.")
        return out.to_numpy(dtype=float)
    if isinstance(out, dict):
        return np.array([out[k] for k in names] if names is not None else list(out.values()), dtype=float)
    return np.atleast_1d(np.asarray(out, dtype=float)).ravel()


def _t0(result: LmerResult, func) -> pd.Series:
    if func is None:
        return estimates(result)
    out = func(result)
    if isinstance(out, pd.Series):
        return pd.Series(out.to_numpy(dtype=float), index=out.index.astype(str), name="t0")
    if isinstance(out, dict):
        return pd.Series({str(k): float(v) for k, v in out.items()}, name="t0")
    vals = np.atleast_1d(np.asarray(out, dtype=float)).ravel()
    return pd.Series(vals, index=[f"t{i + 1}" for i in range(vals.size)], name="t0")


_WORKER: _Replicator | None = None  # the forked workers' replicator (inherited, never pickled)


def _work(tasks):
    return _WORKER.many(tasks)


def _progress_bar(total: int, progress):
    from ..progress import progress_bar  # the package's one policy for bars

    return progress_bar(progress, total, desc="bootstrap", unit="rep")


@dataclass
class BootstrapResult:
    """Replicates of a parametric bootstrap (lme4's ``bootMer`` result).

    Attributes
    ----------
    draws : DataFrame
        One row per replicate (index 0..nsim−1), one column per statistic; NaN rows for failed replicates.
    t0 : Series
        The statistics on the original fit.
    failures : DataFrame
        ``replicate`` and ``reason`` of each replicate whose refit raised (empty when none did).
    diagnostics : DataFrame
        Per replicate: ``n_evals``, ``converged`` (the optimiser reported success), ``singular``.
    seed : int or sequence of int
        The root seed's entropy: ``bootstrap(..., seed=np.random.SeedSequence(seed))`` repeats the run.
    seconds : float
        Wall time of the replicates.
    """

    draws: pd.DataFrame
    t0: pd.Series
    failures: pd.DataFrame
    diagnostics: pd.DataFrame
    seed: object
    seconds: float
    n_jobs: int = 1
    notes: list[str] = field(default_factory=list)

    @property
    def nsim(self) -> int:
        """Number of replicates (failed ones included)."""
        return len(self.draws)

    def _print_lines(self) -> list[str]:
        """A header line, then per statistic the original value, bias and standard error (``print(boot)``'s
        "Bootstrap Statistics"), then any notes."""
        from ..printing import _char_matrix, r_format

        failed = len(self.failures)
        head = (
            f"Parametric bootstrap: {self.nsim} replicates ({failed} failed), {self.draws.shape[1]} statistics, "
            f"{self.seconds:.2f} s"
        )
        summ = self.summary()
        cols = ["original", "bias", "std. error"]
        cells = [r_format(summ[c].to_numpy(dtype=float), 5) for c in cols]
        rows = [[cells[j][i] for j in range(len(cols))] for i in range(len(summ))]
        lines = [head, "", "Bootstrap statistics:"] + _char_matrix(cols, rows, [str(n) for n in summ.index])
        return lines + [f"note: {n}" for n in self.notes]

    def __repr__(self) -> str:
        return "\n".join(self._print_lines())

    def __str__(self) -> str:
        return self.__repr__()

    def _repr_html_(self) -> str:
        from ..printing import html_pre

        return html_pre(self.__repr__())

    def summary(self) -> pd.DataFrame:
        """Per statistic: the original value, bias (mean − t0), bootstrap SD and mean (as ``print(boot)``)."""
        finite = self.draws.where(np.isfinite(self.draws))
        return pd.DataFrame(
            {
                "original": self.t0,
                "bias": finite.mean() - self.t0,
                "std. error": finite.std(ddof=1),
                "mean": finite.mean(),
                "n": finite.notna().sum(),
            }
        )

    def confint(self, parm=None, level: float = 0.95, type: str = "perc") -> pd.DataFrame:
        """Bootstrap intervals, as lme4's ``confint.bootMer`` (``boot::boot.ci`` per statistic).

        Parameters
        ----------
        parm : str or list, optional
            Statistics to report (names, ``"theta_"``/``"beta_"`` for the default statistics); all by default.
        level : float
        type : {"perc", "basic", "norm"}
            ``"perc"``: quantiles of the draws by ``boot``'s interpolation on the normal scale between
            order statistics (``norm.inter``); ``"basic"``: ``2 t0 −`` those quantiles, reversed;
            ``"norm"``: ``t0 − bias ∓ z·sd``. Non-finite draws are left out, as ``boot.ci`` does.

        Returns
        -------
        DataFrame
            One row per statistic, columns named by the percentages (``"2.5 %"``, ``"97.5 %"`` for
            ``level=0.95``); NaN where no replicate gave a finite value.

        Raises
        ------
        sparselmm.ModelSpecError
            An unknown ``type`` or statistic name, or ``level`` outside (0, 1).
        """
        level = check_level(level)
        if type not in BOOT_TYPES:
            raise ModelSpecError(f"type={type!r} is not a bootstrap interval type; choose one of {list(BOOT_TYPES)}.")
        names = list(self.draws.columns)
        n_var = sum(1 for n in names if n.startswith(".sig"))
        which = select_parameters(parm, names, n_var)
        table = np.full((len(which), 2), np.nan)
        for row, j in enumerate(which):
            t = self.draws.iloc[:, j].to_numpy(dtype=float)
            t = t[np.isfinite(t)]
            if t.size:
                table[row] = _boot_ci(t, float(self.t0.iloc[j]), level, type)
        return pd.DataFrame(table, index=[names[j] for j in which], columns=percent_labels(level))


def _norm_inter(t: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``boot:::norm.inter``: quantiles of ``t`` interpolated on the normal scale between order statistics."""
    t = np.sort(t)
    R = t.size
    rk = (R + 1) * alpha
    if not np.all((rk > 1) & (rk < R)):
        warnings.warn("extreme order statistics used as endpoints", stacklevel=caller_stacklevel())
    k = np.trunc(rk).astype(int)
    out = np.empty(alpha.size)
    for i in range(alpha.size):
        if k[i] == rk[i]:
            out[i] = t[k[i] - 1]
        elif k[i] == 0:
            out[i] = t[0]
        elif k[i] == R:
            out[i] = t[R - 1]
        else:
            z, z_lo, z_hi = norm.ppf(alpha[i]), norm.ppf(k[i] / (R + 1)), norm.ppf((k[i] + 1) / (R + 1))
            out[i] = t[k[i] - 1] + (z - z_lo) / (z_hi - z_lo) * (t[k[i]] - t[k[i] - 1])
    return out


def _boot_ci(t: np.ndarray, t0: float, level: float, type: str) -> np.ndarray:
    """One statistic's interval by ``boot::boot.ci`` (``perc.ci``, ``basic.ci``, ``norm.ci``)."""
    if type == "perc":
        return _norm_inter(t, np.array([(1 - level) / 2, (1 + level) / 2]))
    if type == "basic":
        q = _norm_inter(t, np.array([(1 + level) / 2, (1 - level) / 2]))
        return 2 * t0 - q
    bias = float(np.mean(t)) - t0
    merr = float(np.std(t, ddof=1)) * norm.ppf((1 + level) / 2) if t.size > 1 else np.nan
    return np.array([t0 - bias - merr, t0 - bias + merr])


def bootstrap(
    result: LmerResult,
    nsim: int,
    func: Callable | None = None,
    seed=None,
    n_jobs: int = 1,
    progress: bool | None = None,
    tol: float | None = None,
    use_u: bool = False,
    control: dict | None = None,
) -> BootstrapResult:
    """Parametric bootstrap of an lmer fit (lme4's ``bootMer(type = "parametric")``).

    Each replicate simulates a response (:func:`simulate`), refits the model to it from θ̂ on the fit's
    criterion (REML or ML) reusing the fit's factorisation, and evaluates ``func`` on the refit.

    Parameters
    ----------
    result : LmerResult
    nsim : int
        Number of replicates (>= 1).
    func : callable, optional
        ``func(fit) -> Series | dict | array`` of statistics. Default: the parameters of
        :func:`sparselmm.parameters.parameter_names` (``.sig01`` …, ``.sigma``, fixed effects), as
        lme4's ``confint(method = "boot")`` uses; computed without building a result per replicate.
        A custom ``func`` gets an :class:`~sparselmm.results.LmerResult` whose factor workspace is reused
        by the next replicate: take what you need from it and do not keep it.
    seed : int or numpy.random.SeedSequence, optional
        Makes the run reproducible, for any ``n_jobs``.
    n_jobs : int
        Worker processes (forked; ``-1``: one per core). ``func`` need not be picklable.
    progress : bool or None
        Progress bar on stderr (tqdm if installed): None (default) only for runs that last more than 2 s,
        on a terminal or in a notebook; True always; False never (:mod:`sparselmm.progress`).
    tol : float, optional
        Stopping tolerance of the replicate fits, in deviance units. On the exact-gradient path: the
        predicted decrease of the criterion at which the quasi-Newton fit stops (default ``BOOT_TOL`` =
        1e-8, θ within ~1e-4 standard errors of each replicate's optimum; 1e-6 saves ~12 % of the
        evaluations and moves no statistic by more than 0.5 % of its bootstrap SD on sleepstudy). On the
        BOBYQA path: its absolute tolerances on the deviance and θ (lme4's 1e-8), or for L-BFGS-B the same
        as a reduction relative to the fit's deviance.
    use_u : bool
        Simulate conditionally on the fitted random effects (lme4's ``use.u``).
    control : dict, optional
        Optimiser settings (see :func:`sparselmm.lmer`); given, the replicates use the fit's optimiser
        (BOBYQA or L-BFGS-B) with them instead of the quasi-Newton path.

    Returns
    -------
    BootstrapResult
    """
    nsim = _check_nsim(nsim)
    workers = _n_workers(n_jobs)
    root = _root_seed(seed)
    t0 = _t0(result, func)
    names = list(t0.index)
    ctrl = _boot_control(result, tol, control)
    held = getattr(result.design, "rows_held", True)  # a fit from chunks draws cross-products, not rows
    fast, slow = (_FastReplicator, _Replicator) if held else (_RowFreeFastReplicator, _RowFreeReplicator)
    if control is None and fast.applicable(result):
        replicator = fast(
            result, func, names if func is not None else None, use_u, ctrl, BOOT_TOL if tol is None else float(tol)
        )
    else:
        replicator = slow(result, func, names if func is not None else None, use_u, ctrl)
    tasks = list(enumerate(root.spawn(nsim)))
    per_chunk = max(1, min(50, nsim // (workers * 8) if workers > 1 else 25))
    chunks = [tasks[i : i + per_chunk] for i in range(0, nsim, per_chunk)]
    bar = _progress_bar(nsim, progress)
    outputs = []
    started = time.perf_counter()
    try:
        if workers == 1:
            for chunk in chunks:
                outputs.extend(replicator.many(chunk))
                if bar is not None:
                    bar.update(len(chunk))
        else:
            outputs = _run_parallel(replicator, chunks, workers, bar)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - started
    if all(o[1] is None for o in outputs):
        raise NumericalError(f"All {nsim} bootstrap replicates failed; the first failed with: {outputs[0][2]}")
    outputs.sort(key=lambda o: o[0])
    draws = np.full((nsim, len(names)), np.nan)
    failures = []
    for i, values, reason, *_ in outputs:
        if values is None:
            failures.append((i, reason))
        elif values.size != len(names):
            failures.append((i, f"func returned {values.size} values on this replicate, {len(names)} on the fit"))
        else:
            draws[i] = values
    diagnostics = pd.DataFrame(
        [o[3:] for o in outputs], columns=["n_evals", "converged", "singular"], index=pd.RangeIndex(nsim)
    )
    diagnostics.index.name = "replicate"
    notes = []
    if failures:
        notes.append(f"{len(failures)} of {nsim} replicates failed; see .failures")
    return BootstrapResult(
        draws=pd.DataFrame(draws, columns=names, index=pd.RangeIndex(nsim, name="replicate")),
        t0=t0,
        failures=pd.DataFrame(failures, columns=["replicate", "reason"]),
        diagnostics=diagnostics,
        seed=root.entropy,
        seconds=seconds,
        n_jobs=workers,
        notes=notes,
    )


def _run_parallel(replicator: _Replicator, chunks, workers: int, bar) -> list:
    global _WORKER
    outputs = []
    if "fork" in multiprocessing.get_all_start_methods():
        _WORKER = replicator  # inherited by the forked workers; func and the factor are never pickled
        try:
            with multiprocessing.get_context("fork").Pool(min(workers, len(chunks))) as pool:
                for out in pool.imap_unordered(_work, chunks):
                    outputs.extend(out)
                    if bar is not None:
                        bar.update(len(out))
        finally:
            _WORKER = None
        return outputs
    # no fork (Windows, some macOS set-ups): threads, each with its own factor workspace
    local = [replicator] + [replicator.clone() for _ in range(workers - 1)]

    def serve(worker: int):  # one thread per replicator: a factor workspace is never used by two threads
        for chunk in chunks[worker::workers]:
            out = local[worker].many(chunk)
            outputs.extend(out)  # list.extend is atomic under the GIL
            if bar is not None:
                bar.update(len(out))

    with ThreadPoolExecutor(workers) as ex:
        for fut in [ex.submit(serve, w) for w in range(workers)]:
            fut.result()
    return outputs
