"""glmer's formula and data: the response in a column of its own, and the design with glmer's level checks.

A binomial response is 0/1, a proportion with the number of trials as prior weights, or
``cbind(successes, failures)`` (the proportion of successes, the trials multiplied into the weights); any
response may be an expression of the data's columns. :func:`glmm_response` puts it in the column
``GLMM_RESPONSE`` and rewrites the formula to name that column; :func:`build_glmm_design` builds the
:class:`~sparselmm.design.Design` as lmer's, except that a grouping factor may have as many levels as rows
(lme4's ``allow.n = TRUE`` for GLMMs).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from formulaic import model_matrix

from ..data import clean_data, vector_argument
from ..design import (
    Design,
    ReTerm,
    build_Zt,
    check_factor_levels,
    drop_collinear,
    encode_grouping,
    place_terms,
    required_columns,
)
from ..errors import DataError, FormulaError, ModelSpecError
from ..formula import ParsedFormula, parse_formula, split_top_level

__all__ = ["GLMM_RESPONSE", "build_glmm_design", "glmm_response", "response_label"]

GLMM_RESPONSE = "glmm_response__"
_CBIND = re.compile(r"^\s*cbind\s*\((.*)\)\s*$", re.S)


def _evaluate(expr: str, frame: pd.DataFrame, what: str) -> np.ndarray:
    try:
        value = frame.eval(expr, engine="python")
    except Exception:
        try:
            value = model_matrix(f"0 + I({expr})", frame, na_action="ignore").iloc[:, 0]
        except Exception as err:
            raise FormulaError(f"Could not evaluate {what} {expr!r} in the data: {err}") from None
    arr = np.asarray(pd.to_numeric(pd.Series(np.asarray(value).ravel()), errors="coerce"), dtype=float)
    if arr.shape != (len(frame),):
        raise FormulaError(f"{what} {expr!r} does not give one number per row.")
    return arr


def glmm_response(formula: str, frame: pd.DataFrame, weights):
    """Replace the response by a column: ``(new formula, frame, prior weights, successes/trials flag)``."""
    if not isinstance(formula, str):
        raise FormulaError(f"The formula must be a string such as 'y ~ x + (1 | g)', not {type(formula).__name__}.")
    sides = split_top_level(" ".join(formula.split()), "~")
    if len(sides) != 2:
        parse_formula(formula)  # raises the lmer parser's message
    lhs, rhs = sides[0][1].strip(), sides[1][1].strip()
    w = vector_argument(weights, frame, "weights")
    frame = frame.copy()
    m = _CBIND.match(lhs)
    if m:
        parts = [p for _s, p in split_top_level(m.group(1), ",")]
        if len(parts) != 2:
            raise FormulaError(f"cbind() in {lhs!r} needs exactly two arguments: cbind(successes, failures).")
        succ = _evaluate(parts[0].strip(), frame, "successes")
        fail = _evaluate(parts[1].strip(), frame, "failures")
        if np.any(succ < 0) or np.any(fail < 0):
            raise DataError(f"cbind(successes, failures) in {lhs!r}: negative counts are not allowed.")
        trials = succ + fail
        with np.errstate(invalid="ignore", divide="ignore"):
            frame[GLMM_RESPONSE] = np.where(trials > 0, succ / trials, np.nan)
        w = trials if w is None else w * trials
        cbind = True
    else:
        frame[GLMM_RESPONSE] = _evaluate(lhs, frame, "response") if lhs not in frame.columns else frame[lhs]
        if lhs in frame.columns:
            col = frame[lhs]
            if pd.api.types.is_bool_dtype(col):
                frame[GLMM_RESPONSE] = col.astype(float)
            elif not pd.api.types.is_numeric_dtype(col):
                raise DataError(f"The response {lhs!r} must be numeric (0/1, counts or proportions), not {col.dtype}.")
        cbind = False
    return f"{GLMM_RESPONSE} ~ {rhs}", frame, w, cbind


def response_label(formula) -> str:
    """The response as written left of ``~`` (for messages)."""
    return " ".join(str(formula).split("~", 1)[0].split())


def build_glmm_design(parsed: ParsedFormula, frame: pd.DataFrame, weights, offset, missing) -> Design:
    """As ``sparselmm.design.build_design`` but with glmer's level checks (a factor may have n levels)."""
    needed = required_columns(parsed)
    clean = clean_data(frame, needed, weights, offset, missing)
    f = clean.frame
    y = np.asarray(f[GLMM_RESPONSE], dtype=float)
    try:
        mm = model_matrix(parsed.fixed, f, na_action="raise")
    except Exception as err:
        raise FormulaError(f"Could not build the fixed-effects model matrix from {parsed.fixed!r}: {err}") from None
    check_factor_levels(mm.model_spec, "the fixed effects")
    X, names, dropped = drop_collinear(np.asarray(mm, dtype=float), list(mm.columns))
    terms: list[ReTerm] = []
    n = y.size
    for term in parsed.random:
        try:
            zmm = model_matrix(term.lhs, f, na_action="raise")
        except Exception as err:
            raise FormulaError(f"Could not build random-effects term {term}: {err}") from None
        check_factor_levels(zmm.model_spec, f"random-effects term {term}")
        refs, levels = encode_grouping(f, term.factors)
        t = ReTerm(
            term, list(zmm.columns), levels, refs, np.ascontiguousarray(np.asarray(zmm, dtype=float)), zmm.model_spec
        )
        if t.n_levels < 2:
            raise ModelSpecError(f"Grouping factor {t.group_name!r} in {term} has only one level.")
        if t.n_levels > n:  # glmer: allow.n = TRUE
            raise ModelSpecError(f"Grouping factor {t.group_name!r} has more levels ({t.n_levels}) than rows ({n}).")
        terms.append(t)
    terms = place_terms(terms)
    Zt = build_Zt(terms, n)
    return Design(parsed, y, X, names, mm.model_spec, dropped, terms, Zt, clean.weights, clean.offset, clean)
