"""``sparselmm.anova``: lmerTest's F tables for one model, lme4's likelihood-ratio table for several.

For one model, each fixed-effect term gets the contrast matrix of the requested type
(:mod:`sparselmm.inference.contrasts`, lmerTest's construction) and an F test of it by
:func:`sparselmm.inference.contest.contest` with Satterthwaite or Kenward–Roger df; ``ddf="lme4"``
gives lme4's sequential table (Sum Sq, Mean Sq, npar, F value, no df). For two or more models the
table is lme4's ``anova(m0, m1, ...)`` (:mod:`sparselmm.inference.lrt`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..errors import ModelSpecError, warnings_at_caller
from .contest import F_COLUMNS, contest, normalize_ddf

if TYPE_CHECKING:
    from ..printing import AnovaTable

__all__ = ["anova"]

_TYPES = {1: 1, 2: 2, 3: 3, "1": 1, "2": 2, "3": 3, "I": 1, "II": 2, "III": 3}


def anova(
    model,
    *others,
    type: int | str = 3,
    ddf: str = "Satterthwaite",
    **kwargs: Any,
) -> AnovaTable:
    """Analysis-of-variance table of a fitted model, or a likelihood-ratio comparison of several.

    Parameters
    ----------
    model : LmerResult
    *others : LmerResult
        With other models: lme4's likelihood-ratio table (``anova(m0, m1)``; REML fits are refitted by
        ML first, as lme4 does; the models must be fitted to the same rows and nested).
    type : {1, 2, 3, "I", "II", "III"}
        lmerTest's type of hypotheses (default 3, its default).
    ddf : {"Satterthwaite", "Kenward-Roger", "lme4"}
        Denominator degrees of freedom of the F tests: Satterthwaite's (lmerTest's default),
        Kenward–Roger's (REML fits), or ``"lme4"`` for lme4's sequential table without df.
    **kwargs
        With other models only: ``names``, ``refit`` and ``check_nested_models`` of
        :func:`sparselmm.inference.lrt.likelihood_ratio_table`.

    Returns
    -------
    AnovaTable
        A DataFrame (:class:`sparselmm.printing.AnovaTable`). One model: one row per fixed-effect term with
        Sum Sq, Mean Sq, NumDF, DenDF, F value, Pr(>F) (``ddf="lme4"``: Sum Sq, Mean Sq, npar, F value);
        the contrast matrices are in ``.attrs["hypotheses"]`` and the heading in ``.attrs["heading"]``.
        Several models: lme4's table, one row per model (npar, AIC, BIC, logLik, deviance, Chisq, Df,
        Pr(>Chisq)), see :func:`~sparselmm.inference.lrt.likelihood_ratio_table`. It prints as lmerTest
        and lme4 print it (heading, significance stars and legend); ``.to_frame()`` gives the plain
        DataFrame.

    Raises
    ------
    sparselmm.ModelSpecError
        An unknown ``type`` or ``ddf``, other arguments for one model, Kenward–Roger's method on an ML fit,
        models that are not nested.
    sparselmm.DataError
        Models fitted to different rows.

    Notes
    -----
    Warnings raised on the way (convergence of a refit, a singular Hessian in Satterthwaite's df) point
    at the line that called ``anova``.

    Examples
    --------
    >>> import sparselmm
    >>> sleep = sparselmm.datasets.load("sleepstudy")
    >>> m1 = sparselmm.lmer("Reaction ~ Days + (Days | Subject)", sleep)
    >>> sparselmm.anova(m1).index.tolist()  # lmerTest's type III table
    ['Days']
    >>> m0 = sparselmm.lmer("Reaction ~ Days + (1 | Subject)", sleep)
    >>> sparselmm.anova(m0, m1).index.tolist()  # both refitted by ML, as lme4's anova(m0, m1)
    ['m0', 'm1']
    """
    from ..printing import AnovaTable  # prints as R's print.anova (heading, stars, all columns)

    with warnings_at_caller():
        return AnovaTable.wrap(_anova(model, *others, type=type, ddf=ddf, **kwargs))


def _anova(model, *others, type, ddf, **kwargs) -> pd.DataFrame:
    if others:
        from .lrt import likelihood_ratio_table

        return likelihood_ratio_table([model, *others], **kwargs)
    if not hasattr(model, "deviance_function"):  # a GlmerResult, a facade result, anything else
        raise ModelSpecError(
            f"anova() of one model takes a fit from sparselmm.lmer(), not a {model.__class__.__name__}. For a "
            "glmer fit, its summary() has the Wald z tests and anova(g0, g1) the likelihood-ratio test; for a "
            "statsmodels-facade result, fit the same model with sparselmm.lmer."
        )
    if kwargs:
        raise ModelSpecError(f"anova() of one model takes only type= and ddf=, not {sorted(kwargs)}.")
    key = type.upper() if isinstance(type, str) else type
    if key not in _TYPES:
        raise ModelSpecError(f"type={type!r} is not known; use 1, 2 or 3 (or 'I', 'II', 'III').")
    kind = _TYPES[key]
    method = normalize_ddf(ddf)
    from .contrasts import term_contrasts

    hypotheses = term_contrasts(model.design, 1 if method == "lme4" else kind)
    rows, names = [], []
    for term, L in hypotheses.items():
        L = np.atleast_2d(np.asarray(L, dtype=float))
        names.append(term)
        if L.size == 0 or not np.any(L):
            rows.append(None)
            continue
        rows.append(contest(model, L, ddf=method, joint=True).iloc[0])
    columns = ["Sum Sq", "Mean Sq", "npar", "F value"] if method == "lme4" else F_COLUMNS
    table = pd.DataFrame(
        [r.to_numpy() if r is not None else [np.nan] * len(columns) for r in rows], index=names, columns=columns
    )
    if method == "lme4":
        if table["npar"].notna().all():
            table["npar"] = table["npar"].astype(int)
        table.attrs["heading"] = "Analysis of Variance Table (lme4: sequential, no denominator df)"
    else:
        if table["NumDF"].notna().all():  # a term whose columns were all dropped is an NA row, as lmerTest
            table["NumDF"] = table["NumDF"].astype(int)
        roman = {1: "I", 2: "II", 3: "III"}[kind]
        table.attrs["heading"] = f"Type {roman} Analysis of Variance Table with {method}'s method"
    table.attrs["hypotheses"] = hypotheses
    return table
