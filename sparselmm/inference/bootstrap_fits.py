"""A bootstrap replicate drawn and refitted: the replicators behind :func:`~sparselmm.inference.bootstrap.bootstrap`.

A refit to a new response changes only ``ZᵀWy``, ``XᵀWy``, ``yᵀWy`` and the shift of ``β``
(:meth:`~sparselmm.deviance.ProfiledDeviance.with_response`): the cross-products ``ZᵀWZ, ZᵀWX, XᵀWX``,
the block updater and the symbolic factorisation are the fit's. Each replicate is optimised from θ̂
(lme4's ``refit`` also starts there) without the convergence checks. Where the deviance has an exact
gradient (small q, any terms; the dense-Schur factors of crossed models) a replicate is a projected BFGS
started with the Hessian at θ̂ (:mod:`sparselmm.criterion`, :mod:`sparselmm.newton`, ``_FastReplicator``): ~7 evaluations
on sleepstudy where BOBYQA takes ~47. Otherwise BOBYQA, with a first step of ``WARM_START_STEP`` instead
of NLopt's default, which is sized for a cold start.

A fit from chunks (:mod:`sparselmm.scale`) holds no rows: its replicates' responses are drawn as their
cross-products (``_CrossProductSimulator``) and refitted by the same replicators through three hooks.
A glmer fit's replicates (``_GlmmReplicator``) are drawn by
:class:`~sparselmm.inference.replicates.GlmmSimulator` and refitted by glmer's one refit path,
:func:`sparselmm.glmm.fit.refit_glmm`, from the warm start only (as lme4's ``bootMer``, whose ``refit`` starts
at the fit's estimates; a replicate whose warm run breaks down or ends at a zero bound is also fitted from the
fresh start).
The responses, seeds and workers are :mod:`sparselmm.inference.replicates`'.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import criterion, newton
from ..crossprod import CrossProducts
from ..deviance import ProfiledDeviance
from ..errors import ModelSpecError, NumericalError
from ..linalg.cholmod import SparseCholesky
from ..linalg.threads import blas_threads
from ..linalg.thresholds import ROW_FREE_DENSE_MAX
from ..optimize import OptInfo, is_singular, optimize_theta
from ..parameters import parameter_values
from .replicates import GlmmSimulator, Simulator

# NLopt's default first BOBYQA step suits a cold start; from θ̂ a step of 0.1 took 46.7 instead of 65.6
# evaluations per sleepstudy replicate (40 replicates) and reached the same optima (within 1.4e-7)
WARM_START_STEP = 0.1
# stage 1 of a two-stage replicate (_FastReplicator._two_stage) stops at this predicted decrease of its model
STAGE1_TOL = 1e-6


def make_replicator(result, func: Callable | None, names: list[str] | None, use_u: bool, tol, control):
    """The replicator of ``result``'s bootstrap: warm-started quasi-Newton where the deviance has an exact
    gradient and no ``control`` is given, else the fit's optimiser (BOBYQA or L-BFGS-B) with ``control``;
    for a fit from chunks, responses drawn as cross-products. ``names`` are ``func``'s (None for the
    default statistics), ``tol`` the replicates' tolerance (None: ``REFIT_TOL``, or lme4's for BOBYQA)."""
    if getattr(result, "family", None) is not None:
        if tol is not None or control is not None:
            raise ModelSpecError(
                "tol= and control= set lmer's replicate optimiser; a glmer fit's replicates are refitted as "
                "glmer fits (remove the arguments)."
            )
        return _GlmmReplicator(result, func, names, use_u)
    ctrl = _boot_control(result, tol, control)
    held = getattr(result.design, "rows_held", True)  # a fit from chunks draws cross-products, not rows
    fast, slow = (_FastReplicator, _Replicator) if held else (_RowFreeFastReplicator, _RowFreeReplicator)
    if control is None and fast.applicable(result):
        return fast(result, func, names, use_u, ctrl, newton.REFIT_TOL if tol is None else float(tol))
    return slow(result, func, names, use_u, ctrl)


def _boot_control(result, tol: float | None, control: dict | None) -> dict:
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


class _Replicates:
    """What every replicator shares: a batch of replicates run with the replicates' warnings silenced."""

    def one(self, index: int, seed: np.random.SeedSequence):  # pragma: no cover - each replicator's own
        raise NotImplementedError

    def many(self, tasks):
        with warnings.catch_warnings():  # singular or unconverged replicates are reported in diagnostics
            warnings.simplefilter("ignore")
            return [self.one(i, s) for i, s in tasks]

    @staticmethod
    def failed(index: int, err: Exception):
        """A failed replicate, recorded with its reason; the run goes on (as bootMer)."""
        return index, None, f"{type(err).__name__}: {err}", 0, False, False


class _Replicator(_Replicates):
    """Draws and fits replicates; holds one factor workspace of its own (one per worker)."""

    def __init__(self, result, func: Callable | None, names: list[str] | None, use_u: bool, ctrl: dict):
        self.result = result
        self.func = func
        self.names = names
        self.sim = self._simulator(result, use_u)
        self.base = self._base(result)
        self.ctrl = ctrl
        self.lower = result.design.lower
        self.n, self.p = result.nobs, result.design.p

    def _simulator(self, result, use_u: bool):
        return Simulator(result, use_u)

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
                values = _named_values(self.func(self.result._new_fit(devfun, state, info)), self.names)
            return index, values, None, info.n_evals, info.converged, is_singular(theta, self.lower)
        except Exception as err:
            return self.failed(index, err)

    def clone(self) -> _Replicator:
        """A replicator with its own workspaces (for another thread)."""
        return _Replicator(self.result, self.func, self.names, self.sim.use_u, self.ctrl)


class _FastReplicator(_Replicator):
    """Replicates fitted by warm-started quasi-Newton on the exact gradient (:mod:`sparselmm.criterion`).

    Each replicate's response is ``y* = Xβ̂ + offset + e`` with ``e`` drawn as in
    :func:`~sparselmm.inference.replicates.simulate`; its cross-products are those of ``e`` with the shift β̂
    (``ZᵀWe``, ``XᵀWe``, ``eᵀWe``: two products with the rows), so nothing is re-formed but three vectors.
    The fit starts at θ̂ with the Hessian at θ̂ (differences of the exact gradient on the fit's own response,
    once) and stops when the predicted decrease of the criterion is below ``tol``; a replicate whose
    quasi-Newton fit fails is refitted by the BOBYQA path.
    """

    def __init__(self, result, func, names, use_u, ctrl, tol: float):
        super().__init__(result, func, names, use_u, ctrl)
        self.tol = tol
        self.ev = ev = criterion.evaluator(self.base)  # on this replicator's own workspace
        self.theta_hat = result.theta.copy()
        self.upper = np.full(self.theta_hat.size, np.inf)
        self.probe = np.where(self.lower == 0, newton.PROBE, 0.0)
        with blas_threads(criterion.dense_size(result.deviance_function)):
            self.H0 = newton.hessian(ev.value_and_gradient, self.theta_hat, self.lower, self.upper)
            self.H0_inv = np.linalg.inv(self.H0)
            self.two_stage = isinstance(ev, criterion.FactorCriterion)
            if self.two_stage:  # factors held at θ̂ and next to it: ld's gradient at θ̂ and Hessian there
                ev.hold_at(self.theta_hat, hessian=True)
        design = result.design
        self.centre = self._centre(result)
        self.beta_hat = result.fixef.to_numpy()
        self.w = design.weights
        self.nu = self.n - self.p if result.reml else self.n
        self.dense = isinstance(ev, criterion.DenseCriterion)

    def _centre(self, result):
        design = result.design
        return design.X @ result.fixef.to_numpy() + (0.0 if design.offset is None else design.offset)

    @staticmethod
    def applicable(result) -> bool:
        """An exact-gradient evaluator exists (small q, or a factor with an analytic gradient)."""
        devfun = result.deviance_function
        return criterion.evaluator_kind(devfun) is not None

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
                theta, _, _, _, n_calls, ok = newton.quasi_newton(
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
            parts = last["parts"] if np.array_equal(last.get("x"), theta) else ev.parts(theta, gradient=False)
            if ok and not ev.value(parts) <= f_only(self.theta_hat):
                ok = False  # ended above its start: never report it
            if not ok:  # hand the replicate to BOBYQA (same draw: same seed)
                out = super().one(index, seed)
                return (*out[:3], out[3] + n_calls, *out[4:])
            sigma = math.sqrt(parts.r2 / self.nu)
            if self.func is None:
                values = parameter_values(self.result.design, theta, sigma, parts.beta)
            else:
                devfun = self.base.with_response(self.centre + e, share_factor=True)
                info = OptInfo("quasi-newton", n_calls, ok, "predicted decrease below tol", self.theta_hat.copy())
                values = _named_values(self.func(self.result._new_fit(devfun, devfun.solve(theta), info)), self.names)
            return index, values, None, n_calls, ok, is_singular(theta, self.lower)
        except Exception as err:
            return self.failed(index, err)

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
        const = ev.value(criterion.CriterionPieces(theta_hat, 0.0, 1.0, None))  # the criterion with ld = 0, r² = 1

        def fg_model(x):
            parts = ev.parts(x, gradient="r2")
            last["x"], last["parts"] = x, parts
            step = x - theta_hat
            H_step = H_ld @ step
            ld = ld0 + dld0 @ step + 0.5 * step @ H_step
            return const + ld + nu * np.log(parts.r2), dld0 + H_step + (nu / parts.r2) * parts.dr2

        p0 = ev.parts(theta_hat, gradient=True)  # two solves with the factor held at θ̂
        first = (ev.value(p0), p0.dld + (nu / p0.r2) * p0.dr2)
        x1, _, _, H1, n1, _ = newton.quasi_newton(
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
        if not f1 <= first[0]:
            # the model (ld by its expansion at θ̂) can run off where the exact criterion rises: on a singular
            # maximal fit (validation/data/maximal_3cond.csv) stage 1 went to θ ~ 1e6 and stage 2 stopped there,
            # 3,972 above the replicate's optimum. Start the exact stage from θ̂ instead.
            x1, parts, (f1, g1), H1 = theta_hat, p0, first, self.H0
        last["x"], last["parts"] = x1, parts
        theta, _, _, _, n2, ok = newton.quasi_newton(
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
        with blas_threads(criterion.dense_size(self.result.deviance_function)):
            return super().many(tasks)


# ---- the bootstrap of a glmer fit ----------------------------------------------------------------------------
class _GlmmReplicator(_Replicates):
    """A glmer fit's replicates: drawn by :class:`GlmmSimulator`, refitted by
    :func:`~sparselmm.glmm.fit.refit_glmm` from the warm start (each refit has its own copy of the fit's PIRLS
    model, so a clone for another thread needs nothing of its own). The default statistics are lme4's
    (:meth:`sparselmm.glmm.GlmerResult.boot_statistics`), computed without derivatives; a custom ``func``
    gets refits with the Hessian (its SEs) when the fit has one."""

    def __init__(self, result, func: Callable | None, names: list[str] | None, use_u: bool):
        self.result = result
        self.func = func
        self.names = names
        self.sim = GlmmSimulator(result, use_u)
        self.calc_derivs = func is not None and result.optinfo.hessian is not None

    def one(self, index: int, seed: np.random.SeedSequence):
        """``(index, values or None, failure reason or None, n_evals, converged, singular)``."""
        try:
            y = self.sim.draw(np.random.default_rng(seed))
            fit = self.result._refit_replicate(y, calc_derivs=self.calc_derivs)
            if self.func is None:
                values = fit.boot_statistics().to_numpy()
            else:
                values = _named_values(self.func(fit), self.names)
            info = fit.optinfo
            return index, values, None, info.n_evals, info.converged, fit.is_singular()
        except Exception as err:
            return self.failed(index, err)

    def clone(self) -> _GlmmReplicator:
        """A replicator for another thread."""
        return _GlmmReplicator(self.result, self.func, self.names, self.sim.use_u)


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
    """The :class:`~sparselmm.inference.replicates.Simulator` of a fit that holds cross-products, not rows:
    draws ``ZᵀWe, XᵀWe, eᵀWe`` directly.

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
