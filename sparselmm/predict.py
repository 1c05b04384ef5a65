"""The linear predictor ``Xβ + Σ_terms Z_t b_t + offset`` for fitted rows or new data, shared by
:class:`~sparselmm.results.LmerResult` and :class:`~sparselmm.glmm.results.GlmerResult` (lme4's
``predict.merMod`` with ``re_form`` and ``allow_new_levels``)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .errors import DataError, FormulaError
from .formula import parse_formula

__all__ = ["linear_predictor", "model_matrix", "terms_for"]


def terms_for(design, re_form) -> list[int]:
    """Indices of the random-effect terms ``re_form`` keeps: all (None), none (``"~0"``, ``"0"``, ``"NA"``)
    or those named in a formula such as ``"~(1 | Subject)"``."""
    terms = design.terms
    if re_form is None:
        return list(range(len(terms)))
    if not isinstance(re_form, str):
        raise FormulaError(f"re_form must be None, '~0' or a formula string, not {type(re_form).__name__}.")
    if re_form.replace(" ", "") in ("~0", "0", "NA"):
        return []
    text = re_form.strip()
    if text.startswith("~"):
        text = "y " + text
    try:
        wanted = {str(t).replace(" ", "") for t in parse_formula(text).random}
    except FormulaError as err:
        raise FormulaError(f"re_form={re_form!r} is not understood: {err}") from None
    have = {str(t.term).replace(" ", ""): i for i, t in enumerate(terms)}
    missing = wanted - have.keys()
    if missing:
        raise FormulaError(f"re_form names random terms {sorted(missing)} that are not in the model {sorted(have)}.")
    return sorted(have[w] for w in wanted)


def _level_labels(frame: pd.DataFrame, factors: tuple[str, ...]):
    if len(factors) == 1:
        return frame[factors[0]].to_numpy(dtype=object)
    parts = [frame[f].astype(str).to_numpy(dtype=object) for f in factors]
    return np.array([":".join(x) for x in zip(*parts)], dtype=object)


def _lookup_levels(levels: pd.Index, labels) -> np.ndarray:
    """Position of each label among the fitted levels, −1 for a level not seen in fitting; a label that
    matches only as text (``3`` against ``"3"``, e.g. a CSV read back with other dtypes) still matches."""
    labels = np.asarray(labels, dtype=object)
    pos = np.asarray(levels.get_indexer(pd.Index(labels, dtype=object)))
    miss = pos < 0
    if miss.any():
        as_text = pd.Index([str(v) for v in levels], dtype=object)
        if as_text.is_unique:
            pos[miss] = as_text.get_indexer(pd.Index([str(v) for v in labels[miss]], dtype=object))
    return pos


def _unseen_categories(spec, newdata: pd.DataFrame) -> tuple[str, list] | None:
    """The first categorical variable of ``spec`` with values in ``newdata`` not among its fitted levels."""
    for name, (_kind, state) in getattr(spec, "encoder_state", {}).items():
        categories = state.get("categories") if isinstance(state, dict) else None
        if categories is None or name not in newdata.columns:
            continue
        known = set(categories) | {str(c) for c in categories}
        values = pd.unique(newdata[name].dropna())
        unseen = [v for v in values if v not in known and str(v) not in known]
        if unseen:
            return name, unseen
    return None


def model_matrix(spec, newdata: pd.DataFrame, what: str, **kwargs) -> np.ndarray:
    """``spec``'s model matrix for ``newdata``; a factor level not seen in fitting is an error naming the
    column and the level, as R's ``predict`` ("factor cond has new level D"), not formulaic's silent cast
    to an all-zero row (which predicts the reference level). ``kwargs`` go to formulaic (e.g. ``context``)."""
    from formulaic.errors import DataMismatchWarning

    found = _unseen_categories(spec, newdata)
    if found is not None:
        name, unseen = found
        raise DataError(
            f"newdata's column {name!r} has level(s) {unseen[:5]} not seen when fitting ({what}); the model "
            f"only knows {list(spec.encoder_state[name][1]['categories'])}. Drop or recode those rows."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DataMismatchWarning)
            return np.asarray(spec.get_model_matrix(newdata, na_action="raise", **kwargs), dtype=float)
    except DataMismatchWarning as err:  # a factor built by an expression, e.g. C(x): no column to name
        raise DataError(f"newdata has factor level(s) not seen when fitting ({what}): {err}") from None
    except Exception as err:
        raise DataError(f"Could not build {what} for newdata: {err}") from None


def linear_predictor(
    design, beta, b, newdata=None, re_form=None, allow_new_levels: bool = False, offset=None
) -> np.ndarray:
    """``Xβ + Σ Z_t b_t`` (+ offset) over the terms ``re_form`` keeps.

    Parameters
    ----------
    design : sparselmm.design.Design
        The fitted model's design (its terms, levels and formulaic specs).
    beta, b : ndarray
        Fixed effects and the random effects on the original scale (``b = Λu``).
    newdata : DataFrame, optional
        Rows to predict for; the fitted rows (with the fit's offset) when omitted.
    re_form, allow_new_levels, offset
        As lme4's ``predict.merMod``: levels not seen in fitting raise unless ``allow_new_levels``, then
        contribute zero; ``offset`` (column name or values) applies to ``newdata``.
    """
    include = terms_for(design, re_form)
    if newdata is None:
        eta = design.X @ beta
        if design.offset is not None:
            eta = eta + design.offset
        for i in include:
            t = design.terms[i]
            bt = b[t.offset : t.offset + t.q].reshape(t.n_levels, t.k)
            eta = eta + np.einsum("nk,nk->n", t.z, bt[t.refs])
        return eta
    from .data import as_dataframe, vector_argument

    newdata = as_dataframe(newdata)
    X = model_matrix(design.fixed_spec, newdata, "the fixed-effects matrix")
    if design.dropped_columns:
        names = list(design.fixed_spec.column_names)
        X = X[:, [names.index(c) for c in design.fixed_names]]
    eta = X @ beta
    off = vector_argument(offset, newdata, "offset")
    if off is not None:
        eta = eta + off
    for i in include:
        t = design.terms[i]
        missing_cols = [f for f in t.term.factors if f not in newdata.columns]
        if missing_cols:
            raise DataError(f"newdata lacks the grouping column(s) {missing_cols} of term {t.term}.")
        z = model_matrix(t.lhs_spec, newdata, f"random-effects term ({t.term})")
        labels = _level_labels(newdata, t.term.factors)
        pos = _lookup_levels(t.levels, labels)
        new = pos < 0
        if new.any() and not allow_new_levels:
            examples = list(pd.unique(np.asarray(labels, dtype=object)[new]))[:5]
            raise DataError(
                f"newdata has level(s) {examples} of {t.group_name!r} not seen when fitting; pass "
                "allow_new_levels=True to predict them at the population level."
            )
        bt = b[t.offset : t.offset + t.q].reshape(t.n_levels, t.k)
        contrib = np.einsum("nk,nk->n", z, bt[np.where(new, 0, pos)])
        eta = eta + np.where(new, 0.0, contrib)
    return eta
