"""The model fitted anew: to a new response (lme4's ``refit``), on the ML or the REML criterion (``refitML``).

A refit changes only what the new response or criterion changes — ``ZᵀWy``, ``XᵀWy``, ``yᵀWy`` and the shift
of β (:meth:`~sparselmm.deviance.ProfiledDeviance.with_response`), or the REML term (``with_reml``); the
cross-products, the block updater and the symbolic factorisation are the fit's. It starts from θ̂, as lme4's
``refit`` does, first by quasi-Newton on the exact gradient where one exists
(:mod:`sparselmm.criterion`, :mod:`sparselmm.newton`), then :func:`~sparselmm.optimize.refit_theta` with the
fit's optimiser and its checks.

:class:`~sparselmm.results.LmerResult`'s ``refit``, ``refit_ml`` and ``refit_reml`` call these functions. The
new result is built by the fitted model itself (its ``_new_fit``), so this module never names its class.

A glmer fit refits itself (:meth:`sparselmm.glmm.GlmerResult.refit`: the new response checked against the
family by :func:`glmm_response`, then glmer's stages run again under the same rule as lmer's refits — from the
fit's estimates and from a fresh fit's start, keeping the lower optimum); :func:`refit` hands it on.

:func:`update` is R's ``update``: the call that made a fit (:class:`FitCall`, recorded by ``lmer`` and
``glmer``), run again with a changed formula (R's ``.`` notation), data or arguments — a fresh fit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from . import criterion, newton
from .errors import ArgumentError, DataError, ModelSpecError, NumericalError
from .formula import update_formula
from .linalg.threads import blas_threads
from .optimize import refit_theta

__all__ = ["FitCall", "glmm_response", "refit", "refit_ml", "refit_reml", "update"]


def _response_vector(newresp, n: int) -> np.ndarray:
    if isinstance(newresp, pd.DataFrame):
        if newresp.shape[1] != 1:
            raise ModelSpecError(f"newresp has {newresp.shape[1]} columns; pass one response (e.g. sims['sim_1']).")
        newresp = newresp.iloc[:, 0]
    y = np.asarray(newresp, dtype=float).ravel()
    if y.size != n:
        raise ModelSpecError(f"newresp has {y.size} values but the model was fitted to {n} rows.")
    return y


def glmm_response(result, newresp) -> np.ndarray:
    """A new response for a glmer fit, checked against its family, on the scale glmer fits.

    Parameters
    ----------
    result : GlmerResult
    newresp : array-like, Series, DataFrame or (n, 2) array
        One value per fitted row on the scale of :meth:`~sparselmm.glmm.GlmerResult.simulate`: 0/1, the
        proportion of successes out of the fit's trials (a ``cbind`` or weighted binomial fit), counts,
        positive values. A binomial fit also takes two columns, successes and failures (lme4's ``cbind``
        matrix), whose sums must be the fit's trials.

    Returns
    -------
    ndarray
        The response glmer fits (binomial: proportions).

    Raises
    ------
    sparselmm.ModelSpecError
        Not one value per fitted row, or two columns whose sums are not the fit's trials.
    sparselmm.DataError
        Missing or infinite values, or values outside the family's support (negative or non-integer counts,
        non-integer numbers of successes, proportions outside [0, 1], values <= 0 for Gamma).
    """
    fam = result.family
    n = result.nobs
    pw = result.design.weights
    trials = np.ones(n) if pw is None else np.asarray(pw, dtype=float)
    arr = newresp.to_numpy() if isinstance(newresp, pd.DataFrame) else newresp
    two = fam.name == "binomial" and np.ndim(arr) == 2 and np.shape(arr)[1] == 2
    if two:
        counts = np.asarray(arr, dtype=float)
        if counts.shape[0] != n:
            raise ModelSpecError(f"newresp has {counts.shape[0]} rows but the model was fitted to {n} rows.")
        total = counts.sum(axis=1)
        off = ~np.isclose(total, trials)
        if np.any(off):
            raise ModelSpecError(
                f"newresp's successes + failures differ from the fit's trials on {int(off.sum())} row(s) (first: "
                f"row {int(np.flatnonzero(off)[0])}); a refit keeps the model's trials. Fit the new trials with "
                "sparselmm.glmer instead."
            )
        with np.errstate(invalid="ignore", divide="ignore"):
            y = np.where(total > 0, counts[:, 0] / np.where(total > 0, total, 1.0), 0.0)
    else:
        y = _response_vector(newresp, n)
    bad = ~np.isfinite(y) if not two else ~np.isfinite(counts).all(axis=1)
    if np.any(bad):
        raise DataError(
            f"newresp has {int(bad.sum())} missing or infinite value(s) (first: row {int(np.flatnonzero(bad)[0])}); "
            "a refit needs a response for every fitted row."
        )
    try:
        fam.validate(y, trials, response="newresp")
    except DataError as err:
        raise DataError(f"newresp is not a {fam.name} response for this fit: {err}") from None
    return y


def refit(result, newresp, check_conv: bool = True, control: dict | None = None):
    """The model refitted to a new response (lme4's ``refit``), starting from the fit's θ̂.

    Parameters
    ----------
    result : LmerResult or GlmerResult
    newresp : array-like, Series or one-column DataFrame
        One value per fitted row (in the fit's row order, e.g. a column of
        :func:`~sparselmm.inference.replicates.simulate`). For a glmer fit see :func:`glmm_response`.
    check_conv : bool
        Run the convergence checks on the refit.
    control : dict, optional
        Optimiser settings (see :func:`sparselmm.lmer`); lmer fits only.

    Returns
    -------
    LmerResult or GlmerResult
        An independent fit: it has its own factor workspace, and ``result`` is left as it was. It reaches at
        least the optimum a fresh fit of ``newresp`` reaches: it is optimised from θ̂ and from the fresh
        start, and the lower optimum is kept (:func:`~sparselmm.optimize.refit_theta`; a glmer fit's
        :func:`~sparselmm.glmm.fit.refit_glmm`).

    Raises
    ------
    sparselmm.ModelSpecError
        ``newresp`` does not have one value per fitted row.
    sparselmm.DataError
        A glmer fit's ``newresp`` outside its family's support (see :func:`glmm_response`).
    sparselmm.ArgumentError
        ``control`` for a glmer fit.
    """
    if getattr(result, "family", None) is not None:  # a glmer fit refits itself (GlmerResult.refit)
        return result.refit(newresp, check_conv=check_conv, control=control)
    y = _response_vector(newresp, result.nobs)
    devfun = result.deviance_function.with_response(y)
    return _fit(result, devfun, control, check_conv)


def refit_ml(result):
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


def refit_reml(result):
    """The fit on the REML criterion: ``result`` itself if it is already REML, else re-optimised from its θ̂
    (sharing its cross-products and symbolic factorisation), as :func:`refit_ml` in the other direction."""
    if result.reml:
        return result
    return _fit(result, result.deviance_function.with_reml(True), None, True)


def _fit(result, devfun, control, check_conv):
    start = result.theta if control else _quasi_newton_start(result, devfun)
    theta, _, info = refit_theta(
        devfun, start, result.optinfo.theta_start, result.design.lower, result.optinfo.optimizer, control, check_conv
    )
    state = devfun.solve(theta)
    return result._new_fit(devfun, state, info, data_name=result.data_name)


def _quasi_newton_start(result, devfun) -> np.ndarray:
    """The optimum of ``devfun`` by quasi-Newton from θ̂ where an exact gradient exists (else θ̂ itself).

    BOBYQA started at a θ̂ with a zero θ_k (a singular fit) often stays there although the new response's
    optimum is inside (measured: 15 of 40 Dyestuff2 bootstrap responses); the quasi-Newton fit probes off
    the boundary (``newton.PROBE``). ``refit_theta`` then starts from its result and runs the checks.
    """
    theta = result.theta.copy()
    lower = result.design.lower
    if criterion.evaluator_kind(devfun) is None:
        return theta
    try:
        with blas_threads(criterion.dense_size(devfun)):
            ev = criterion.evaluator(devfun)
            upper = np.full(theta.size, np.inf)
            H0 = newton.hessian(ev.value_and_gradient, theta, lower, upper)
            probe = np.where(lower == 0, newton.PROBE, 0.0)
            x, *_, ok = newton.quasi_newton(
                ev.value_and_gradient, theta, lower, upper, H0, newton.REFIT_TOL, probe=probe
            )
        return x if ok else theta
    except (NumericalError, np.linalg.LinAlgError):
        return theta


@dataclass
class FitCall:
    """The call that made a fit: the fitting function, the formula, the data and the other arguments.

    ``lmer`` and ``glmer`` record it on their results (``result.call``) so that :func:`update` can run it
    again with changes. A pickled result keeps the call without the data (pass ``data=`` to ``update``).
    """

    function: Callable
    formula: str
    data: Any
    kwargs: dict = field(default_factory=dict)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["data"] = self.data if isinstance(self.data, str) else None  # a parquet path stays; frames do not
        return state


def update(result, formula: str | None = None, data=None, **changes):
    """The model fitted again with a changed formula, data or arguments (R's ``update``).

    Parameters
    ----------
    result : LmerResult or GlmerResult
        A fit from :func:`sparselmm.lmer` or :func:`sparselmm.glmer`.
    formula : str, optional
        The new formula, where ``.`` stands for the corresponding side of the fit's formula:
        ``"~ . - x"`` (drop the fixed-effect term ``x``), ``"~ . + (1 | g)"``, ``"~ . - (1 | g)"``,
        ``"log(.) ~ ."`` (see :func:`sparselmm.formula.update_formula`).
    data : DataFrame, optional
        Other data (default: the fit's).
    **changes
        Arguments of the fitting function to change, e.g. ``reml=False`` or ``nAGQ=0``.

    Returns
    -------
    LmerResult or GlmerResult
        A fresh fit (from the default start; the fit's θ̂ does not carry over to another model).

    Raises
    ------
    sparselmm.ModelSpecError
        The result does not record its call, or a pickled result is updated without ``data=``.
    sparselmm.FormulaError
        The update removes a term the model does not have.
    """
    call = getattr(result, "call", None)
    if not isinstance(call, FitCall):
        raise ModelSpecError(
            "This result does not record the call that made it (only fits from sparselmm.lmer and "
            "sparselmm.glmer do): fit the new model with sparselmm.lmer or sparselmm.glmer directly."
        )
    if "start" in changes:
        raise ArgumentError("update() starts the new fit from the default start; fit with start= directly instead.")
    new_formula = call.formula if formula is None else update_formula(call.formula, formula)
    if data is None:
        data = call.data
    if data is None:
        raise ModelSpecError(
            "This result was unpickled and no longer holds its data: pass it again, update(result, ..., data=df)."
        )
    return call.function(new_formula, data, **{**call.kwargs, **changes})
