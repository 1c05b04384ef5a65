"""Which lmer and glmer fits a likelihood-ratio test may compare, and on which criterion.

A likelihood-ratio test (:mod:`sparselmm.inference.lrt`, :mod:`sparselmm.inference.drop1`,
:mod:`sparselmm.inference.bootstrap_lrt`) compares fits of one kind (lmer fits, or glmer fits of one family
and link) on the maximum-likelihood criterion (:func:`as_ml`: an REML fit is refitted by ML, as lme4's
``refitML``). Unlike lme4, which only checks that the models saw the same number of rows, the models must
have been fitted to the same rows (:func:`check_same_rows`: same n, same response values, same weights),
and a smaller model must be nested in the larger (:func:`check_nested` says exactly what is checked).
Violations raise errors (:class:`~sparselmm.errors.DataError` for different rows,
:class:`~sparselmm.errors.ModelSpecError` for models of other kinds) or, for nesting, give the reason.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..design import RANK_TOL
from ..errors import DataError, ModelSpecError

__all__ = ["REFIT_NOTE", "as_ml", "check_nested", "check_same_rows", "is_glmm", "named_models"]

REFIT_NOTE = "refitting model(s) with ML (instead of REML)"


def named_models(models, names) -> tuple[list, list[str]]:
    """The models and their names (a dict's keys, ``names``, or ``m0``, ``m1``, …), checked to be at least two
    distinct lmer or glmer fits of one kind."""
    if isinstance(models, dict):
        if names is not None:
            raise ModelSpecError("Give model names either as the keys of a dict or as names=, not both.")
        names, models = [str(k) for k in models], list(models.values())
    else:
        models = list(models)
        names = [f"m{i}" for i in range(len(models))] if names is None else [str(n) for n in names]
    if len(models) < 2:
        raise ModelSpecError(f"A likelihood-ratio table needs at least two models, got {len(models)}.")
    if len(names) != len(models) or len(set(names)) != len(names):
        raise ModelSpecError(f"names must give one distinct name per model; got {names} for {len(models)} models.")
    for name, m in zip(names, models):
        if not hasattr(m, "design") or not (hasattr(m, "deviance_function") or is_glmm(m)):
            raise ModelSpecError(
                f"Model {name!r} is a {type(m).__name__}, not a fit from sparselmm.lmer() or sparselmm.glmer()."
            )
    kinds = {_kind(m) for m in models}
    if len(kinds) > 1:
        raise ModelSpecError(
            f"The models are of different kinds ({sorted(kinds)}): a likelihood-ratio test compares models of "
            "one family and link (lmer fits with lmer fits, glmer fits of the same family with each other)."
        )
    return models, names


def is_glmm(model) -> bool:
    """A glmer fit (its family is part of the model); lmer fits have none."""
    return getattr(model, "family", None) is not None


def _kind(model) -> str:
    if not is_glmm(model):
        return "lmer (gaussian)"
    fam = model.family
    return f"glmer ({fam.name}, {fam.link.name} link)"


def as_ml(model):
    """The fit on the ML criterion: an REML lmer fit refitted by ML (lme4's refitML), anything else itself."""
    return model.refit_ml() if getattr(model, "reml", False) else model


def check_same_rows(models, names) -> None:
    """Raise :class:`DataError` unless every model was fitted to the same rows: same n, response and weights.

    Fits that hold their rows are compared value by value. A fit from chunks (parquet files, Dask;
    :mod:`sparselmm.scale`) holds sums instead, so where one of the two is such a fit the check is weaker:
    the same n, the same ``Σy`` and ``Σ(y − ȳ)²`` of the response and the same ``Σw`` and ``Σ log w`` of the
    weights (to 1e-9 relative: the sums are taken in another order), and, for two fits from chunks whose
    sources are known, the same source (the same files with the same sizes and modification times, or the
    same Dask graph). Different rows with equal sums would pass it.
    """
    first, name0 = models[0], names[0]
    for m, name in zip(models[1:], names[1:]):
        if m.nobs != first.nobs:
            raise DataError(
                f"Models {name0!r} and {name!r} were fitted to different numbers of rows ({first.nobs} and "
                f"{m.nobs}); compare models fitted to the same rows (drop rows with missing values first)."
            )
        if not (_rows_held(first) and _rows_held(m)):
            _check_same_summed_rows(first, m, name0, name)
            continue
        if not np.array_equal(m.design.y, first.design.y):
            raise DataError(
                f"Models {name0!r} and {name!r} were fitted to different response values; a likelihood-ratio "
                "test compares models of the same data."
            )
        w0, w = first.design.weights, m.design.weights
        if (w0 is None) != (w is None) or (w0 is not None and not np.array_equal(w0, w)):
            raise DataError(f"Models {name0!r} and {name!r} were fitted with different weights.")


def _rows_held(model) -> bool:
    """The fit holds its rows (False for a fit from chunks, :mod:`sparselmm.scale`)."""
    return getattr(model.design, "rows_held", True)


def _row_summary(model):
    """The sums that identify a fit's rows: kept by a fit from chunks, computed from the arrays otherwise."""
    from ..crossprod import RowSummary

    d = model.design
    if not _rows_held(model):
        return d.row_summary
    return RowSummary.of_arrays(d.y, d.weights, d.offset)


def _check_same_summed_rows(a, b, name_a: str, name_b: str) -> None:
    """:func:`check_same_rows` where a model holds sums instead of rows."""
    ka, kb = getattr(a.design, "source_key", None), getattr(b.design, "source_key", None)
    if ka is not None and kb is not None and ka != kb:
        raise DataError(
            f"Models {name_a!r} and {name_b!r} were read from different sources ({a.design.source} and "
            f"{b.design.source}: other files, or files that changed between the fits); a likelihood-ratio test "
            "compares models of the same data."
        )
    why = _row_summary(a).differs(_row_summary(b), parts=("response", "weights"))
    if why is not None:
        raise DataError(
            f"Models {name_a!r} and {name_b!r} were not fitted to the same rows: {why}. (A fit from chunks keeps "
            "sums, not rows, so the rows are compared by n and the sums of the response and the weights.)"
        )


def _in_span(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Per column of ``A``: does it lie in the column space of ``B`` (relative residual below R's rank tolerance)?"""
    if A.shape[1] == 0:
        return np.zeros(0, dtype=bool)
    if B.shape[1] == 0:
        return np.linalg.norm(A, axis=0) == 0
    coef = np.linalg.lstsq(B, A, rcond=None)[0]
    resid = np.linalg.norm(A - B @ coef, axis=0)
    return resid <= RANK_TOL * np.maximum(np.linalg.norm(A, axis=0), np.finfo(float).tiny)


def _same_grouping(a, b) -> bool:
    """The two terms group the rows identically (the same partition, whatever the level labels)."""
    if a.Zt_block is not None or b.Zt_block is not None:
        return False
    if a.n_levels != b.n_levels:
        return False
    pairs = np.unique(a.refs.astype(np.int64) * b.n_levels + b.refs)
    return pairs.size == a.n_levels


def check_nested(small, large, small_name: str = "m0", large_name: str = "m1") -> str | None:
    """Why ``small`` is not nested in ``large``, or None when it is (as far as checked).

    Checked: (1) every fixed-effect column of ``small`` lies in the column space of ``large``'s (relative
    residual below 1e-7, R's rank tolerance); (2) both have the same offset; (3) every random-effects term of
    ``small`` has a term in ``large`` on the same grouping of the rows whose coefficient columns span the
    small term's (one term, so that a correlation of ``small`` can be represented in ``large``:
    ``(1|g) + (0+x|g)`` is nested in ``(x|g)``, not the reverse). Variance components given as explicit
    ``Z`` blocks (the statsmodels facade) must be identical. These are sufficient conditions for the
    smaller model to be a special case of the larger one, not necessary ones: a covariance structure
    nested in another by a re-parametrisation this does not recognise needs ``check_nested=False``.

    Where either model is a fit from chunks (no rows held), weaker checks on names and sums stand in
    for the rows (see :func:`_check_nested_summed`).
    """
    if not (_rows_held(small) and _rows_held(large)):
        return _check_nested_summed(small, large, small_name, large_name)
    ds, dl = small.design, large.design
    inside = _in_span(ds.X, dl.X)
    if not inside.all():
        missing = [ds.fixed_names[j] for j in np.flatnonzero(~inside)]
        return (
            f"the fixed-effect column(s) {missing} of {small_name!r} are not in the column space of "
            f"{large_name!r}'s fixed effects"
        )
    o_s, o_l = ds.offset, dl.offset
    if (o_s is None) != (o_l is None) or (o_s is not None and not np.array_equal(o_s, o_l)):
        return f"{small_name!r} and {large_name!r} have different offsets"
    for ts in ds.terms:
        found = False
        for tl in dl.terms:
            if ts.Zt_block is not None and tl.Zt_block is not None:
                same = ts.Zt_block.shape == tl.Zt_block.shape and (ts.Zt_block != tl.Zt_block).nnz == 0
                if same:
                    found = True
                    break
            elif _same_grouping(ts, tl) and _in_span(ts.z, tl.z).all():
                found = True
                break
        if not found:
            return (
                f"the random-effects term ({ts.term}) of {small_name!r} has no term in {large_name!r} on the same "
                "grouping factor whose coefficients contain it"
            )
    return None


def _check_nested_summed(small, large, small_name: str, large_name: str) -> str | None:
    """:func:`check_nested` where a model is a fit from chunks, so that ``X``, ``Z`` and the offset are not held.

    Checked instead: (1) every fixed-effect column of ``small`` is a column of ``large`` by name (formulaic's
    names, e.g. ``x``, ``f[T.b]``; the same rows give the same levels and encodings), or else lies in the
    span of ``large``'s columns as a function of the variables — both specs evaluated on the made-up rows of
    :meth:`~sparselmm.scale.streamed_design.StreamedDesign.coding_frame` (every combination of the categorical
    levels, numeric values seen in the data): nested as functions, which implies nested on the data but
    not conversely (a column collinear with ``large``'s only on these rows is reported as not nested);
    (2) the same offset by its sums ``Σ(y − offset)²`` and ``Σ w(y − offset)``;
    (3) every random-effects term of ``small`` has a term in ``large`` with the same grouping factor by
    name and number of levels (the rows are the same, see :func:`check_same_rows`, so the same columns
    group them the same way) whose coefficient names include the small term's.
    """
    ds, dl = small.design, large.design
    large_names = set(dl.fixed_names)
    missing = [c for c in ds.fixed_names if c not in large_names]
    if missing:
        missing = _not_in_span_as_functions(small, large, missing)
    if missing:
        return (
            f"the fixed-effect column(s) {missing} of {small_name!r} are neither columns of {large_name!r} nor "
            "(on made-up rows of the variables) in the span of its fixed effects"
        )
    if _row_summary(small).differs(_row_summary(large), parts=("offset",)) is not None:
        return f"{small_name!r} and {large_name!r} have different offsets"
    for ts in ds.terms:
        found = any(
            tl.Zt_block is None
            and ts.Zt_block is None
            and tuple(ts.term.factors) == tuple(tl.term.factors)
            and ts.n_levels == tl.n_levels
            and set(ts.cnms) <= set(tl.cnms)
            for tl in dl.terms
        )
        if not found:
            return (
                f"the random-effects term {ts.term} of {small_name!r} has no term in {large_name!r} on the same "
                "grouping factor (by name and number of levels) whose coefficient names include its own"
            )
    return None


def _not_in_span_as_functions(small, large, names: list[str]) -> list[str]:
    """Of ``small``'s fixed-effect columns ``names``, those not in the span of ``large``'s columns as
    functions of the variables (both specs on the made-up rows of a fit from chunks; all of them when no
    such rows can be formed)."""
    streamed = large if not _rows_held(large) else small
    d = streamed.design
    try:
        cols = set(d.coding_values)
        need = set(small.design.fixed_spec.required_variables) | set(large.design.fixed_spec.required_variables)
        if not need <= cols:
            return names
        ps, pl = small.design.p, large.design.p
        frame = d.coding_frame(2 + ps + pl)
        Xs = np.asarray(small.design.fixed_spec.get_model_matrix(frame, na_action="raise"), dtype=float)
        Xl = np.asarray(large.design.fixed_spec.get_model_matrix(frame, na_action="raise"), dtype=float)
        Xs = pd.DataFrame(Xs.reshape(len(frame), -1), columns=list(small.design.fixed_spec.column_names))
        Xl = pd.DataFrame(Xl.reshape(len(frame), -1), columns=list(large.design.fixed_spec.column_names))
        A = Xs[names].to_numpy()
        B = Xl[list(large.design.fixed_names)].to_numpy()
    except Exception:  # no made-up rows for these specs (other columns, too many combinations): by name only
        return names
    inside = _in_span(A, B)
    return [c for c, ok in zip(names, inside) if not ok]
