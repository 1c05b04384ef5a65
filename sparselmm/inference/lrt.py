"""Likelihood-ratio tests between lmer fits: lme4's ``anova(m0, m1, ...)`` table.

``likelihood_ratio_table`` reproduces ``anova.merMod`` for several models: REML fits are first refitted
by maximum likelihood (``refitML``, as lme4 does by default), the models are ordered by their number of
parameters (``npar`` = fixed effects + θ + σ, a stable sort as R's ``order``), and each row is compared
with the one before it: ``Chisq = 2·max(0, Δ logLik)``, ``Df = Δ npar``, ``Pr(>Chisq)`` from the χ² upper
tail (NaN where ``Df = 0``). AIC and BIC are those of the ML fits.

The models must have been fitted to the same rows and, by default, consecutive models must be nested
(:mod:`sparselmm.inference.comparison` says exactly what is checked): different rows raise
:class:`~sparselmm.errors.DataError`, models that are not nested :class:`~sparselmm.errors.ModelSpecError`
(``check_nested_models=False`` turns the latter off).

The other likelihood-ratio tests are importable from here too: ``drop1`` (lme4's ``drop1``,
:mod:`sparselmm.inference.drop1`) and ``bootstrap_lrt`` (pbkrtest's ``PBmodcomp``,
:mod:`sparselmm.inference.bootstrap_lrt`).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.stats import chi2

from ..errors import ModelSpecError, caller_stacklevel
from .bootstrap_lrt import bootstrap_lrt
from .comparison import REFIT_NOTE, as_ml, check_nested, check_same_rows, named_models
from .drop1 import drop1, fixed_terms

__all__ = ["bootstrap_lrt", "check_nested", "check_same_rows", "drop1", "fixed_terms", "likelihood_ratio_table"]


def likelihood_ratio_table(models, names=None, refit: bool = True, check_nested_models: bool = True) -> pd.DataFrame:
    """lme4's ``anova(m0, m1, ...)``: likelihood-ratio tests between nested lmer fits.

    Parameters
    ----------
    models : sequence of LmerResult, or dict name -> LmerResult
        Two or more fits to the same rows.
    names : list of str, optional
        Row names (default ``m0``, ``m1``, … in the order given; a dict's keys).
    refit : bool
        Refit REML fits by ML first (lme4's default and the only meaningful comparison of models with
        different fixed effects). With ``refit=False`` REML log-likelihoods are used as they are, and a
        mix of REML and ML fits warns, as in lme4.
    check_nested_models : bool
        Raise :class:`~sparselmm.errors.ModelSpecError` when a model is not nested in the next larger one
        (see :func:`check_nested`); ``False`` skips the check (lme4 does not check).

    Returns
    -------
    DataFrame
        Rows ordered by ``npar``; columns ``npar, AIC, BIC, logLik, deviance, Chisq, Df, Pr(>Chisq)``.
        ``attrs["refitted"]`` names the models refitted by ML, ``attrs["note"]`` says so as lme4's message
        does and ``attrs["heading"]`` holds lme4's heading lines (data and the models' formulas); attrs hold
        plain values only, since pandas deep-copies them with the frame.

    Raises
    ------
    DataError
        The models were fitted to different rows (n, response values or weights differ).
    ModelSpecError
        Fewer than two models, or (with ``check_nested_models``) a model not nested in the next one.
    """
    models, names = named_models(models, names)
    check_same_rows(models, names)
    refitted = []
    if refit:
        refitted = [name for name, m in zip(names, models) if getattr(m, "reml", False)]
        models = [as_ml(m) for m in models]
    elif len({getattr(m, "reml", False) for m in models}) > 1:
        warnings.warn("some models fit with REML = TRUE, some not", UserWarning, stacklevel=caller_stacklevel())
    npar = np.array([m.n_params for m in models])
    order = np.argsort(npar, kind="stable")
    models = [models[i] for i in order]
    names = [names[i] for i in order]
    npar = npar[order]
    if check_nested_models:
        for i in range(1, len(models)):
            reason = check_nested(models[i - 1], models[i], names[i - 1], names[i])
            if reason is not None:
                raise ModelSpecError(
                    f"Model {names[i - 1]!r} is not nested in {names[i]!r}: {reason}. A likelihood-ratio test "
                    "needs nested models; pass check_nested_models=False to compute the table anyway."
                )
    loglik = np.array([m.loglik for m in models])
    chisq = np.concatenate([[np.nan], 2 * np.maximum(0.0, np.diff(loglik))])
    df = np.concatenate([[np.nan], np.diff(npar).astype(float)])
    with np.errstate(invalid="ignore"):
        p = np.where(df == 0, np.nan, chi2.sf(chisq, df))
    table = pd.DataFrame(
        {
            "npar": npar,
            "AIC": [m.aic for m in models],
            "BIC": [m.bic for m in models],
            "logLik": loglik,
            "deviance": -2 * loglik,
            "Chisq": chisq,
            "Df": df,
            "Pr(>Chisq)": p,
        },
        index=names,
    )
    data_name = models[0].data_name or "data"
    table.attrs["heading"] = [f"Data: {data_name}", "Models:"] + [f"{n}: {m.formula}" for n, m in zip(names, models)]
    table.attrs["refitted"] = refitted
    table.attrs["note"] = REFIT_NOTE if refitted else ""
    return table
