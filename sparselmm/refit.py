"""The model fitted anew: to a new response (lme4's ``refit``), on the ML or the REML criterion (``refitML``).

A refit changes only what the new response or criterion changes — ``ZᵀWy``, ``XᵀWy``, ``yᵀWy`` and the shift
of β (:meth:`~sparselmm.deviance.ProfiledDeviance.with_response`), or the REML term (``with_reml``); the
cross-products, the block updater and the symbolic factorisation are the fit's. It starts from θ̂, as lme4's
``refit`` does, first by quasi-Newton on the exact gradient where one exists
(:mod:`sparselmm.criterion`, :mod:`sparselmm.newton`), then :func:`~sparselmm.optimize.refit_theta` with the
fit's optimiser and its checks.

:class:`~sparselmm.results.LmerResult`'s ``refit``, ``refit_ml`` and ``refit_reml`` call these functions. The
new result is built by the fitted model itself (its ``_new_fit``), so this module never names its class.

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
from .errors import ArgumentError, ModelSpecError, NumericalError
from .formula import update_formula
from .linalg.threads import blas_threads
from .optimize import refit_theta

__all__ = ["FitCall", "refit", "refit_ml", "refit_reml", "update"]


def _response_vector(newresp, n: int) -> np.ndarray:
    if isinstance(newresp, pd.DataFrame):
        if newresp.shape[1] != 1:
            raise ModelSpecError(f"newresp has {newresp.shape[1]} columns; pass one response (e.g. sims['sim_1']).")
        newresp = newresp.iloc[:, 0]
    y = np.asarray(newresp, dtype=float).ravel()
    if y.size != n:
        raise ModelSpecError(f"newresp has {y.size} values but the model was fitted to {n} rows.")
    return y


def refit(result, newresp, check_conv: bool = True, control: dict | None = None):
    """The model refitted to a new response (lme4's ``refit``), starting from the fit's θ̂.

    Parameters
    ----------
    result : LmerResult
    newresp : array-like, Series or one-column DataFrame
        One value per fitted row (in the fit's row order, e.g. a column of
        :func:`~sparselmm.inference.replicates.simulate`).
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
