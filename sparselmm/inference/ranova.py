"""lmerTest's ``ranova``: a likelihood-ratio test for each random-effects term, by refitting without it.

Each term ``(a + b | g)`` is reduced one effect at a time (``a in (a + b | g)`` refits with ``(b | g)``,
keeping its intercept); a term with only an intercept, or one effect and none, is removed whole. The
reduced models are fresh fits on the same rows and the same criterion (REML or ML) as the model, as lmerTest
refits them; a model left with no random effects is a linear model, whose (REML) log-likelihood is R's
``logLik.lm``.
"""

from __future__ import annotations

import re

import numpy as np
from scipy.stats import chi2

from ..errors import ModelSpecError
from ..formula import RandomTerm, split_lhs_terms
from ..printing import AnovaTable
from ..refit import update

__all__ = ["ranova"]


def _label(term: RandomTerm) -> str:
    """The term as R deparses it: ``(0 + Days | Subject)`` however it was spaced."""
    return str(RandomTerm(re.sub(r"\s*([+-])\s*", r" \1 ", term.lhs.strip()), term.factors))


def _reductions(term: RandomTerm, reduce_terms: bool) -> list[tuple[str, RandomTerm | None]]:
    """``(row label, the term that replaces it or None)`` for each reduction of one random-effects term."""
    has_intercept, effects = split_lhs_terms(term.lhs)
    if not reduce_terms or not effects:
        return [(_label(term), None)]
    out = []
    for x in effects:
        rest = [e for e in effects if e != x]
        if rest:
            lhs = " + ".join((["1"] if has_intercept else ["0"]) + rest)
        else:
            lhs = "1" if has_intercept else None
        out.append((f"{x} in {_label(term)}", None if lhs is None else RandomTerm(lhs, term.factors)))
    return out


def _linear_model_loglik(result) -> float:
    """R's ``logLik(lm(...), REML = result.reml)`` for the model's fixed effects on its rows."""
    design = result.design
    X, y = design.X, design.y
    n, p = X.shape
    w = np.ones(n) if design.weights is None else np.asarray(design.weights, dtype=float)
    off = 0.0 if design.offset is None else np.asarray(design.offset, dtype=float)
    sw = np.sqrt(w)
    Q, R = np.linalg.qr(X * sw[:, None])
    r = (y - off) * sw
    rss = float(r @ r - (Q.T @ r) @ (Q.T @ r))
    slw = float(np.sum(np.log(w)))
    if not result.reml:
        return 0.5 * (slw - n * (np.log(2 * np.pi) + 1 - np.log(n) + np.log(rss)))
    N = n - p
    return 0.5 * (slw - N * (np.log(2 * np.pi) + 1 - np.log(N) + np.log(rss))) - float(
        np.sum(np.log(np.abs(np.diag(R))))
    )


def ranova(result, reduce_terms: bool = True) -> AnovaTable:
    """lmerTest's ``ranova``: likelihood-ratio tests of the random-effects terms of an lmer fit.

    Parameters
    ----------
    result : LmerResult
        A fit from :func:`sparselmm.lmer` (it records its call, which the reduced fits rerun).
    reduce_terms : bool, default True
        Reduce each term one effect at a time, keeping its intercept (lmerTest's default); False removes
        each term whole.

    Returns
    -------
    AnovaTable
        Rows ``<none>`` and one per reduction (lmerTest's labels, e.g. ``"Days in (Days | Subject)"``);
        columns ``npar``, ``logLik``, ``AIC``, ``LRT``, ``Df``, ``Pr(>Chisq)``. The log-likelihoods are
        REML ones for a REML fit, as lmerTest's.

    Raises
    ------
    sparselmm.ModelSpecError
        ``result`` is not an lmer fit that records its call.
    """
    call = getattr(result, "call", None)
    if call is None or getattr(call.function, "__name__", "") != "lmer":
        raise ModelSpecError("ranova() needs a fit from sparselmm.lmer() (it refits the model without each term).")
    from ..covstruct import refuse_structured

    refuse_structured(result.design, "ranova's reductions", "or compare fits with anova(m0, m1)")
    parsed = result.design.parsed
    fixed = parsed.fixed_formula
    npar_full = result.n_params
    rows = [("<none>", npar_full, float(result.loglik))]
    for i, term in enumerate(parsed.random):
        others = [str(t) for j, t in enumerate(parsed.random) if j != i]
        for label, replacement in _reductions(term, reduce_terms):
            random = others + ([str(replacement)] if replacement is not None else [])
            if random:
                reduced = update(result, f"{fixed} + {' + '.join(random)}")
                rows.append((label, reduced.n_params, float(reduced.loglik)))
            elif getattr(result, "residual_structure", None) is not None:  # nlme's gls with the same structure
                from ..residual import gls_loglik

                loglik, npar = gls_loglik(result)
                rows.append((label, npar, loglik))
            else:
                rows.append((label, result.design.X.shape[1] + 1, _linear_model_loglik(result)))
    labels = [r[0] for r in rows]
    npar = np.array([r[1] for r in rows], dtype=float)
    loglik = np.array([r[2] for r in rows])
    lrt = 2.0 * (loglik[0] - loglik)
    df = npar[0] - npar
    lrt[0] = df[0] = np.nan
    with np.errstate(invalid="ignore"):
        p = np.where(np.isnan(lrt), np.nan, chi2.sf(np.maximum(lrt, 0.0), df))
    table = AnovaTable(
        {"npar": npar, "logLik": loglik, "AIC": -2.0 * loglik + 2.0 * npar, "LRT": lrt, "Df": df, "Pr(>Chisq)": p},
        index=labels,
    )
    table.attrs["heading"] = ["ANOVA-like table for random-effects: Single term deletions", "", "Model:", call.formula]
    return table
