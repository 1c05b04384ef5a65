"""The set-up shared by :func:`sparselmm.glmer` and :func:`sparselmm.glmer_nb`: their argument hints and
:func:`fit_family`, one glmer fit for a family instance (the design, the PIRLS model, the stages of
:mod:`sparselmm.glmm.fit`)."""

from __future__ import annotations

import time

import numpy as np

from ..data import as_dataframe
from ..errors import ModelSpecError, SparseLMMError
from ..formula import ParsedFormula, parse_formula
from ..linalg.threads import blas_threads
from .family import Family
from .fit import breakdown_error, fit_glmm
from .glmm_design import GLMM_RESPONSE, build_glmm_design, glmm_response, response_label
from .pirls import PirlsModel, PirlsNotConverged
from .results import GlmerResult

__all__ = ["GLMER_HINTS", "fit_family"]

_MISSING_HINT = "use missing='drop' (R's na.omit, the default) or missing='raise' (na.fail)."
_NO_REML = (
    "glmer has no REML: a GLMM is fitted by maximum likelihood (Laplace, or adaptive Gauss-Hermite with "
    "nAGQ > 1); remove the argument."
)
GLMER_HINTS = {
    "REML": _NO_REML,
    "reml": _NO_REML,
    "na.action": _MISSING_HINT,
    "na_action": _MISSING_HINT,
    "subset": "select the rows before fitting, e.g. data[data['x'] > 0] or data.query('x > 0').",
    "contrasts": "set a factor's contrasts in the formula, e.g. C(f, contr.sum) or C(f, contr.treatment(base='b')).",
    "control": "glmer takes its settings directly: nAGQ=, calc_derivs= (glmerControl's calc.derivs), polish= "
    "and start=; the optimiser is not selectable.",
    "optimizer": "glmer's optimiser is not selectable; polish=False uses BOBYQA for the joint stage.",
    "theta": "glmer takes no theta=: for a known negative binomial theta pass "
    "family=sparselmm.glmm.NegativeBinomial(theta=2); family='negative_binomial' (sparselmm.glmer_nb) estimates "
    "it (a starting value: sparselmm.glmer_nb(..., theta_start=2)).",
}


def fit_family(
    formula: str,
    data,
    fam: Family,
    nAGQ,
    weights,
    offset,
    missing: str,
    calc_derivs: bool,
    start,
    data_name,
    polish: bool,
    result_class: type = GlmerResult,
) -> GlmerResult:
    """:func:`glmer`'s fit for the family instance ``fam``, built by ``result_class`` (without ``call``:
    the caller records its own, :func:`glmer`'s or :func:`sparselmm.glmer_nb`'s)."""
    t0 = time.perf_counter()
    if not isinstance(nAGQ, (int, np.integer)) or isinstance(nAGQ, bool) or nAGQ < 0:
        raise ModelSpecError(f"nAGQ must be a whole number >= 0, not {nAGQ!r}.")
    nAGQ = int(nAGQ)
    frame = as_dataframe(data)
    parse_formula(formula)  # a formula error names the caller's text, not the rewritten response
    new_formula, frame, w, _cbind = glmm_response(formula, frame, weights)
    parsed0 = parse_formula(new_formula)
    parsed = ParsedFormula(" ".join(str(formula).split()), parsed0.response, parsed0.fixed, parsed0.random)
    try:
        design = build_glmm_design(parsed, frame, w, offset, missing)
    except SparseLMMError as err:
        if GLMM_RESPONSE not in str(err):
            raise
        # name the response as the caller wrote it, not the internal column that holds it
        raise type(err)(str(err).replace(GLMM_RESPONSE, response_label(formula))) from None
    y = design.y
    pw = np.ones(design.n) if design.weights is None else design.weights
    off = np.zeros(design.n) if design.offset is None else design.offset
    fam.validate(y, pw, response=response_label(formula))
    if nAGQ > 1:
        if len(design.terms) != 1 or design.terms[0].k != 1:
            raise ModelSpecError(
                f"nAGQ = {nAGQ} (adaptive Gauss-Hermite) needs a single scalar random-effects term such as "
                f"(1 | g); this model has {[str(t.term) for t in design.terms]}. Use nAGQ = 1 (Laplace)."
            )
        if nAGQ > 25:
            raise ModelSpecError(f"nAGQ = {nAGQ} is more than lme4's maximum of 25 quadrature points.")
    model = PirlsModel(design, fam, y, pw, off)
    setup = time.perf_counter() - t0
    # one BLAS thread unless the dense part is big: threaded OpenBLAS on small triangular solves and
    # factors costs milliseconds of synchronisation per call (4 ms per solve on VerbAgg's 24 x 24 block
    # on a busy 2-core machine); the policy is sparselmm.linalg.threads'
    with blas_threads(model.blas_size):
        try:
            return fit_glmm(model, nAGQ, start, calc_derivs, polish, setup, data_name, result_class)
        except PirlsNotConverged as err:
            better = breakdown_error(err, model)
            if better is None:
                raise
            raise better from err
