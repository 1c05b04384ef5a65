"""Likelihood-ratio tests between lmer fits: lme4's ``anova(m0, m1, ...)`` table and ``drop1``.

``likelihood_ratio_table`` reproduces ``anova.merMod`` for several models: REML fits are first refitted
by maximum likelihood (``refitML``, as lme4 does by default), the models are ordered by their number of
parameters (``npar`` = fixed effects + θ + σ, a stable sort as R's ``order``), and each row is compared
with the one before it: ``Chisq = 2·max(0, Δ logLik)``, ``Df = Δ npar``, ``Pr(>Chisq)`` from the χ² upper
tail (NaN where ``Df = 0``). AIC and BIC are those of the ML fits.

Unlike lme4, which only checks that the models saw the same number of rows, the models must have been
fitted to the same rows (same n, same response values, same weights), and by default consecutive models
must be nested — see :func:`check_nested` for exactly what is checked. Violations raise errors
(:class:`~sparselmm.errors.DataError` for different rows, :class:`~sparselmm.errors.ModelSpecError` for
non-nested models; ``check_nested=False`` turns the latter off).

``bootstrap_lrt`` is pbkrtest's ``PBmodcomp``: the LRT's reference distribution simulated from the null
model, both models refitted to each response by the bootstrap's warm-started quasi-Newton.

``drop1`` mirrors ``drop1.merMod``: each fixed-effect term that no other term contains (R's
``drop.scope``) is removed in turn and the model refitted by ML; the table gives ``npar`` (parameters
removed) and ``AIC``, plus with ``test="Chisq"`` the LRT statistic and its p-value. A term is removed by
moving its columns to the offset at 0, which changes only cross-products
(:meth:`~sparselmm.deviance.ProfiledDeviance.with_columns_in_offset`): no new design, no new factorisation.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy.stats import chi2

from ..design import RANK_TOL
from ..errors import DataError, ModelSpecError, caller_stacklevel
from ..linalg.threads import blas_threads
from ..optimize import optimize_theta, refit_theta
from .replicates import Simulator, check_nsim, n_workers, root_seed, run_replicates

__all__ = ["bootstrap_lrt", "check_nested", "check_same_rows", "drop1", "likelihood_ratio_table"]

REFIT_NOTE = "refitting model(s) with ML (instead of REML)"


def _named(models, names) -> tuple[list, list[str]]:
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
        if not hasattr(m, "design") or not (hasattr(m, "deviance_function") or _is_glmm(m)):
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


def _is_glmm(model) -> bool:
    """A glmer fit (its family is part of the model); lmer fits have none."""
    return getattr(model, "family", None) is not None


def _kind(model) -> str:
    if not _is_glmm(model):
        return "lmer (gaussian)"
    fam = model.family
    return f"glmer ({fam.name}, {fam.link.name} link)"


def _as_ml(model):
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
    models, names = _named(models, names)
    check_same_rows(models, names)
    refitted = []
    if refit:
        refitted = [name for name, m in zip(names, models) if getattr(m, "reml", False)]
        models = [_as_ml(m) for m in models]
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


# ---- drop1 ----------------------------------------------------------------------------------------
def fixed_terms(design) -> dict[str, np.ndarray]:
    """Each fixed-effect term (R's label, e.g. ``x:cond``) and the positions of its columns in ``X``.

    The intercept is not a term (as in R's ``term.labels``); columns dropped for rank deficiency are skipped.
    """
    spec = design.fixed_spec
    if spec is None:
        raise ModelSpecError("drop1 needs a model fitted from a formula (sparselmm.lmer), not from arrays.")
    position = {name: j for j, name in enumerate(design.fixed_names)}
    columns = list(spec.column_names)
    out = {}
    for term, idx in spec.term_indices.items():
        label = str(term)
        if label == "1":
            continue
        out[label] = np.array([position[columns[i]] for i in idx if columns[i] in position], dtype=np.int64)
    return out


def _drop_scope(design) -> list[str]:
    """R's ``drop.scope``: the terms not contained in another term (marginality)."""
    factors = {str(t): {str(f) for f in t.factors} for t in design.fixed_spec.term_indices if str(t) != "1"}
    return [a for a, fa in factors.items() if not any(fa < fb for b, fb in factors.items() if b != a)]


def _drop_term(full, label: str, cols: np.ndarray) -> tuple[int, float]:
    """``(npar, −2 log-likelihood)`` of the ML fit without one fixed-effect term.

    An lmer fit moves the term's columns into the offset at 0 and refits θ from θ̂ on its own factor (the
    same optimum a fresh fit reaches: :func:`~sparselmm.optimize.refit_theta`); a glmer fit is fitted
    afresh without the term (:func:`sparselmm.refit.update`), as lme4's ``drop1`` does.
    """
    if _is_glmm(full):
        from ..refit import update

        reduced = update(full, f"~ . - {label}")
        return reduced.n_params, -2.0 * reduced.loglik
    design = full.design
    reduced = full.deviance_function.with_columns_in_offset(cols, 0.0, reml=False)
    _, dev, _ = refit_theta(reduced, full.theta, full.optinfo.theta_start, design.lower, full.optinfo.optimizer)
    return reduced.p + design.n_theta + 1, dev


def drop1(result, test: str = "none", scope=None, k: float = 2.0) -> pd.DataFrame:
    """lme4's ``drop1``: refit by ML without each fixed-effect term in turn (lmer and glmer fits).

    Parameters
    ----------
    result : LmerResult or GlmerResult
    test : {"none", "Chisq"}
        ``"Chisq"`` adds the likelihood-ratio statistic ``LRT`` and ``Pr(Chi)``.
    scope : list of str, optional
        Terms to drop (R's labels, e.g. ``"recipe:temp"``); default: every term not contained in another
        (R's ``drop.scope``).
    k : float
        Penalty per parameter in the "AIC" column (2: AIC; ``log(n)``: BIC).

    Returns
    -------
    DataFrame
        Rows ``<none>`` and one per term; columns ``npar`` (parameters removed; NaN for ``<none>``) and
        ``AIC`` (of the ML fits), plus ``LRT`` and ``Pr(Chi)`` with ``test="Chisq"``.

    Raises
    ------
    sparselmm.ModelSpecError
        An unknown ``test``, or a ``scope`` term that is not a fixed-effect term of the model.
    """
    if test not in ("none", "Chisq"):
        raise ModelSpecError(f"test={test!r} is not supported; use 'none' or 'Chisq' (lme4's 'user' is not offered).")
    design = result.design
    terms = fixed_terms(design)
    if scope is None:
        scope = _drop_scope(design)
    else:
        scope = [scope] if isinstance(scope, str) else list(scope)
        unknown = [s for s in scope if s not in terms]
        if unknown:
            raise ModelSpecError(f"scope names term(s) {unknown} that are not fixed-effect terms {list(terms)}.")
    full = _as_ml(result)
    df = [full.n_params]
    aic = [-2.0 * full.loglik + k * full.n_params]
    for label in scope:
        npar, dev = _drop_term(full, label, terms[label])
        df.append(npar)
        aic.append(dev + k * npar)
    df = np.array(df, dtype=float)
    aic = np.array(aic)
    dfs = df[0] - df
    dfs[0] = np.nan
    table = pd.DataFrame({"npar": dfs, "AIC": aic}, index=["<none>"] + list(scope))
    if test == "Chisq":
        dev = aic - k * df
        lrt = dev - dev[0]
        lrt[0] = np.nan
        with np.errstate(invalid="ignore"):
            table["LRT"] = lrt
            table["Pr(Chi)"] = np.where(np.isnan(lrt), np.nan, chi2.sf(lrt, dfs))
    table.attrs["heading"] = ["Single term deletions", "", "Model:", result.formula]
    table.attrs["note"] = REFIT_NOTE if getattr(result, "reml", False) else ""
    return table


# ---- parametric-bootstrap likelihood-ratio test (pbkrtest's PBmodcomp) -------------------------------
class _MLRefitter:
    """Refits one model by ML to new responses: warm-started quasi-Newton on the exact gradient."""

    def __init__(self, fit):
        from .. import criterion, newton

        self.fit = fit
        self.devfun = fit.deviance_function.with_response(fit.y)  # own workspace
        self.lower = fit.design.lower
        self.upper = np.full(self.lower.size, np.inf)
        self.theta = fit.theta.copy()
        self.probe = np.where(self.lower == 0, newton.PROBE, 0.0)
        self.ev = criterion.evaluator(self.devfun)
        self.H0 = None
        if self.ev is not None:
            with blas_threads(criterion.dense_size(self.devfun)):
                self.H0 = newton.hessian(self.ev.value_and_gradient, self.theta, self.lower, self.upper)

    def deviance(self, y: np.ndarray) -> float:
        """The ML deviance of the model refitted to ``y``."""
        from .. import criterion, newton

        if self.ev is not None:
            cross = self.devfun.cross.with_response(self.fit.design, y)
            if isinstance(self.ev, criterion.DenseCriterion):
                ev = self.ev.with_response(cross.ZtWy, cross.XtWy, cross.ytWy, cross.beta_shift)
            else:
                ev = self.ev.with_cross(cross)
            _, f, *_, ok = newton.quasi_newton(
                ev.value_and_gradient,
                self.theta,
                self.lower,
                self.upper,
                self.H0,
                newton.REFIT_TOL,
                probe=self.probe,
                return_H=False,
            )
            if ok:
                return float(f)
        devfun = self.devfun.with_response(y, share_factor=True)
        _, f, _ = optimize_theta(devfun, self.theta, self.lower, self.fit.optinfo.optimizer, None, False)
        return float(f)


class _LRTReplicator:
    """One worker's share of a parametric-bootstrap LRT: draw from the null fit, refit both models."""

    def __init__(self, small, large):
        self.small, self.large = small, large
        self.sim = Simulator(small, use_u=False)
        self.refit_small, self.refit_large = _MLRefitter(small), _MLRefitter(large)

    def one(self, index, seed):
        try:
            y = self.sim.draw(np.random.default_rng(seed))
            stat = max(0.0, self.refit_small.deviance(y) - self.refit_large.deviance(y))
            return index, np.array([stat]), None, 0, True, False
        except Exception as err:  # a failed replicate is recorded, the run goes on
            return index, None, f"{type(err).__name__}: {err}", 0, False, False

    def many(self, tasks):
        from .. import criterion

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with blas_threads(criterion.dense_size(self.large.deviance_function)):
                return [self.one(i, s) for i, s in tasks]

    def clone(self):
        return _LRTReplicator(self.small, self.large)


def bootstrap_lrt(
    small, large, nsim: int = 1000, seed=None, n_jobs: int = 1, check_nested_models: bool = True, progress=None
):
    """Parametric-bootstrap likelihood-ratio test of ``small`` against ``large`` (pbkrtest's ``PBmodcomp``).

    Responses are simulated from ``small`` refitted by ML (the null model); both models are refitted by ML
    to each (warm-started from their ML estimates, as the bootstrap does) and the statistic
    ``2 (logLik_large − logLik_small)`` recomputed. The p-value is ``(1 + #{LRT* ≥ LRT}) / (1 + nsim)``, as
    pbkrtest computes it; the χ² test of :func:`likelihood_ratio_table` is given beside it. The two models may
    come in either order (pbkrtest's ``PBmodcomp(large, small)`` too): the one with fewer parameters is the
    null model.

    Parameters
    ----------
    small, large : LmerResult
        The null model and a model it is nested in, fitted to the same rows (in either order).
    nsim : int
        Number of simulated responses.
    seed : int or numpy.random.SeedSequence, optional
        Makes the run reproducible, for any ``n_jobs``.
    n_jobs : int
        Worker processes (``-1``: one per core).
    check_nested_models : bool
        Raise when the smaller model is not nested in the larger (see :func:`check_nested`); ``False``
        skips the check.
    progress : bool or None
        A bar on stderr for runs that last more than 2 s on a terminal or in a notebook (None, the default),
        always (True) or never (False), as :func:`~sparselmm.inference.bootstrap.bootstrap`.

    Returns
    -------
    DataFrame
        Rows ``LRT`` (χ²) and ``PBtest``; columns ``stat``, ``df``, ``p.value``. ``attrs["draws"]`` holds the
        simulated statistics (NaN where a replicate failed), ``attrs["failures"]`` their number.

    Raises
    ------
    sparselmm.DataError
        The models were fitted to different rows.
    sparselmm.ModelSpecError
        The models are not nested (with ``check_nested_models``), a bad ``nsim``, ``seed``, ``n_jobs`` or
        ``progress``, or every replicate failed.

    Examples
    --------
    >>> import sparselmm
    >>> sleep = sparselmm.datasets.load("sleepstudy")
    >>> m0 = sparselmm.lmer("Reaction ~ Days + (1 | Subject)", sleep)
    >>> m1 = sparselmm.lmer("Reaction ~ Days + (Days | Subject)", sleep)
    >>> from sparselmm.inference.lrt import bootstrap_lrt
    >>> bootstrap_lrt(m0, m1, nsim=50, seed=1).index.tolist()
    ['LRT', 'PBtest']
    """
    from ..progress import progress_bar, show_progress

    show_progress(progress)  # a wrong value fails before the refits

    nsim = check_nsim(nsim)
    workers = n_workers(n_jobs)
    models, names = _named([small, large], ["small", "large"])
    check_same_rows(models, names)
    small, large = small.refit_ml(), large.refit_ml()
    if small.n_params > large.n_params:  # pbkrtest's PBmodcomp(large, small) order: accept it, as anova does
        small, large = large, small
    if check_nested_models:
        reason = check_nested(small, large, "small", "large")
        if reason is not None:
            raise ModelSpecError(f"The small model is not nested in the large one: {reason}.")
    observed = max(0.0, small.objective - large.objective)
    df = large.n_params - small.n_params
    replicator = _LRTReplicator(small, large)
    seeds = root_seed(seed).spawn(nsim)
    bar = progress_bar(progress, nsim, desc="bootstrap LRT", unit="rep")
    outputs = run_replicates(replicator, seeds, workers, bar)
    draws = np.full(nsim, np.nan)
    for i, values, *_ in outputs:
        if values is not None:
            draws[i] = values[0]
    ok = draws[np.isfinite(draws)]
    if ok.size == 0:
        raise ModelSpecError(f"All {nsim} bootstrap replicates failed; the first with: {outputs[0][2]}")
    p_boot = (1.0 + np.sum(ok >= observed)) / (1.0 + ok.size)
    table = pd.DataFrame(
        {"stat": [observed, observed], "df": [float(df), np.nan], "p.value": [chi2.sf(observed, df), p_boot]},
        index=["LRT", "PBtest"],
    )
    table.attrs["draws"] = draws.tolist()
    table.attrs["failures"] = int(nsim - ok.size)
    return table
