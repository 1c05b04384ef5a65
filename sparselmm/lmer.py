"""The lme4-style entry points: :func:`lmer` and :func:`deviance_function`."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from .crossprod import cross_products
from .data import as_dataframe
from .design import Design, build_design
from .deviance import ProfiledDeviance, describe_path, profiled_deviance
from .errors import ArgumentError, ModelSpecError, check_arguments
from .formula import parse_formula
from .optimize import optimize_theta
from .progress import as_progress
from .refit import FitCall
from .residual import GapCorrelation, fit_residual
from .results import LmerResult
from .scale import as_source, streamed_model, streamed_setup
from .start import moment_start, start_theta

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from ._typing import ColumnOrValues, DataLike
    from .progress import Progress

__all__ = ["lmer", "deviance_function"]

ORDERINGS = ("auto", "default", "amd", "metis", "nesdis", "natural", "best", "colamd", "schur", "matrix-free")


_MISSING_HINT = "use missing='drop' (R's na.omit, the default) or missing='raise' (na.fail)."
_COMMON_HINTS = {
    "na.action": _MISSING_HINT,
    "na_action": _MISSING_HINT,
    "subset": "select the rows before fitting, e.g. data[data['x'] > 0] or data.query('x > 0').",
    "contrasts": "set a factor's contrasts in the formula, e.g. C(f, contr.sum) or C(f, contr.treatment(base='b')).",
}
LMER_HINTS = {
    **_COMMON_HINTS,
    "REML": "use reml=False for maximum likelihood (reml=True, REML, is the default).",
    "family": "lmer fits linear mixed models; for a generalised linear mixed model use "
    "sparselmm.glmer(formula, data, family=...).",
    "link": "lmer fits linear mixed models; for a link function use "
    "sparselmm.glmer(formula, data, family=..., link=...).",
    "nAGQ": "nAGQ is glmer's argument (sparselmm.glmer); lmer's criterion needs no quadrature.",
    "devFunOnly": "use sparselmm.deviance_function(formula, data) for the deviance as a function of theta.",
    "groups": "that is statsmodels' MixedLM spelling: write the grouping in the formula, e.g. "
    "'y ~ x + (1 | g)', or use sparselmm.statsmodels.",
}


def _setup(
    formula, data, reml, weights, offset, missing, ordering, progress=None, memory_limit=None
) -> ProfiledDeviance:
    if ordering not in ORDERINGS:
        raise ModelSpecError(f"ordering={ordering!r} is not a CHOLMOD ordering; choose one of {ORDERINGS}.")
    source = as_source(data)  # parquet files, a Dask DataFrame: summed chunk by chunk (sparselmm.scale)
    if source is not None:
        return streamed_setup(formula, source, reml, weights, offset, missing, ordering, memory_limit)[0]
    parsed = parse_formula(formula)
    if progress is not None:
        progress.phase("set-up: building X and Z from the data")
    design: Design = build_design(parsed, as_dataframe(data), weights=weights, offset=offset, missing=missing)
    if progress is not None:
        terms = ", ".join(f"{t.term} {t.q:,}" for t in design.terms)
        progress.phase(
            f"set-up: design: {design.n:,} rows; X {design.n:,} x {design.p}; Z {design.q:,} columns ({terms}); "
            "cross-products"
        )
    cross = cross_products(design)
    y = design.y if design.offset is None else design.y - design.offset
    if not cross.ytWy > 1e-24 * max(float(y @ y), 1e-300):
        raise ModelSpecError(
            f"The response {parsed.response!r} is constant or exactly fitted by the fixed effects, so there is no "
            "variation left for random effects or the residual; check the response column and the formula."
        )
    if progress is not None:
        progress.phase("set-up: symbolic analysis of the factor")
    devfun = profiled_deviance(design, cross, reml=reml, ordering=ordering, memory_limit=memory_limit)
    if progress is not None:
        progress.phase(f"set-up: factor ready: {describe_path(devfun)}")
    return devfun


def _check_reml(reml) -> None:
    if not (isinstance(reml, (bool, np.bool_)) or isinstance(reml, (int, np.integer)) and reml in (0, 1)):
        hint = " For a family use sparselmm.glmer(formula, data, family=...)." if isinstance(reml, str) else ""
        raise ArgumentError(f"reml must be True or False, not {reml!r}.{hint}")


@check_arguments(LMER_HINTS)
def deviance_function(
    formula: str,
    data: DataLike,
    reml: bool = True,
    weights: ColumnOrValues | None = None,
    offset: ColumnOrValues | None = None,
    missing: str = "drop",
    ordering: str = "auto",
    memory_limit: float | str | None = None,
) -> ProfiledDeviance:
    """The profiled deviance as a function of θ, equal to lme4's ``lmer(..., devFunOnly = TRUE)``.

    Parameters
    ----------
    formula : str
        lme4 formula, e.g. ``"Reaction ~ Days + (Days | Subject)"``.
    data : DataFrame
    reml : bool
        REML criterion (default) or −2 log-likelihood (``reml=False``).
    weights, offset : str or array-like, optional
        Prior weights and offset: a column name or one value per row.
    missing : {"drop", "raise"}
    ordering, memory_limit
        The factor of ``ΛᵀZᵀWZΛ + I``, as in :func:`lmer` (the choice: ``f.chol.describe()``, its predicted
        cost: ``f.predicted``).

    Returns
    -------
    ProfiledDeviance
        Callable ``f(theta) -> float``; ``f.design.theta0``, ``f.design.lower`` and
        ``f.design.theta_names()`` describe θ.
    """
    _check_reml(reml)
    return _setup(formula, data, reml, weights, offset, missing, ordering, memory_limit=memory_limit)


@check_arguments(LMER_HINTS)
def lmer(
    formula: str,
    data: DataLike,
    reml: bool = True,
    weights: ColumnOrValues | None = None,
    offset: ColumnOrValues | None = None,
    missing: str = "drop",
    optimizer: str = "auto",
    control: dict | None = None,
    start: ArrayLike | None = None,
    check_conv: bool = True,
    ordering: str = "auto",
    memory_limit: float | str | None = None,
    data_name: str | None = None,
    verbose: bool | Progress = False,
    progress: bool | None = None,
    dispformula: str | None = None,
    correlation: GapCorrelation | None = None,
) -> LmerResult:
    """Fit a linear mixed model by REML or maximum likelihood, as lme4's ``lmer``.

    Parameters
    ----------
    formula : str
        lme4 formula: fixed effects as in R/formulaic plus random terms ``(expr | g)``,
        ``(expr || g)`` (uncorrelated), ``(1 | a/b)`` (nested), ``(1 | a:b)``.
    data : DataFrame
        Also a dict of columns or a polars DataFrame. It is never modified. Data larger than memory: a
        parquet path, glob or list of paths, a ``dask.dataframe.DataFrame`` or a
        :class:`sparselmm.scale.Source` — summed chunk by chunk, see :mod:`sparselmm.scale`.
    reml : bool, default True
    weights, offset : str or array-like, optional
        Prior weights (positive; rows with weight 0 are left out, having no influence) and offset: a
        column name or one value per row.
    missing : {"drop", "raise"}
        Rows with missing values in any used column are dropped (lme4's ``na.omit``) or raise.
    optimizer : {"auto", "bobyqa", "nelder_mead", "lbfgsb"}
        ``"auto"``: L-BFGS-B with the analytic gradient of the profiled deviance where it is available
        (all-scalar models on the dense-Schur factor, see :mod:`sparselmm.linalg.schur`), else NLopt's BOBYQA
        with lme4's tolerances.
    control : dict, optional
        Optimiser settings: ``xtol_abs``, ``ftol_abs``, ``ftol_rel``, ``maxeval``, ``initial_step``.
    start : array-like, optional
        Starting θ (default: 1 on the diagonals, 0 elsewhere, as lme4).
    check_conv : bool
        Run lme4's convergence checks (finite-difference gradient and Hessian).
    ordering : str
        ``"auto"``: the first factor of ``ΛᵀZᵀWZΛ + I`` that applies and fits ``memory_limit``, in the order
        dense Schur complement (all-scalar crossed models, :mod:`sparselmm.linalg.schur`), block Schur
        complement (:mod:`sparselmm.linalg.block_schur`), CHOLMOD (AMD or METIS, whichever fills less); when
        none fits, the approximate matrix-free path (:mod:`sparselmm.linalg.matrix_free`; all-scalar models
        whose largest term has one level per row). A CHOLMOD ordering by name, ``"schur"``, or
        ``"matrix-free"`` (the approximate path, asked for).
    memory_limit : int, float, str or None
        Most memory the factor may plan to use: bytes or a string such as ``"8GB"``; None (default) is 60 %
        of the memory available when the fit starts. Each way of factoring the model (scalar or block
        Schur, CHOLMOD) has its memory and time per evaluation predicted from the design first
        (:mod:`sparselmm.linalg.cost`); the fit takes the preferred one that fits, falls back to the
        matrix-free path when no exact one does, and raises :class:`~sparselmm.MemoryLimitError` with the
        predictions when that does not apply or fit either. ``optinfo.path`` and ``optinfo.predicted`` report
        the choice; an approximate fit also ``optinfo.details["approximation"]`` (its criterion's standard
        error) and a summary line, and refuses what needs an exact factor (conditional variances, df,
        profiles, the bootstrap) with a :class:`~sparselmm.ModelSpecError`.
    data_name : str, optional
        Name shown on the summary's ``Data:`` line.
    verbose : bool or sparselmm.progress.Progress
        ``True``: print the set-up phases and every evaluation with the criterion to stderr (quiet by
        default); a :class:`~sparselmm.progress.Progress` sets the stream, a delay and a rate limit (the
        ``sparselmm fit`` command starts printing after 2 s). Fits from chunked sources report the passes as
        one phase, then every evaluation as in memory.
    progress : bool or None
        Progress bars of the passes over chunked data (parquet files, Dask, a
        :class:`~sparselmm.scale.Source`; overriding the source's own setting): None (default) shows a bar
        only for passes that last more than 2 s, on a terminal or in a notebook; True always; False never.
        An in-memory fit has no bar (see ``verbose``).
    dispformula : str, optional
        Residual variance by stratum (glmmTMB's name; nlme's ``weights = varIdent(form = ~ 1 | f)``):
        ``"~ f"`` with ``f`` a factor (categorical or string) column gives each level its own residual SD,
        ``sigma`` being the first level's. See :mod:`sparselmm.residual`.
    correlation : GapCorrelation, optional
        AR(1) residual correlation within groups: :func:`sparselmm.corAR1` for integer times (nlme's
        ``correlation = corAR1(form = ~ t | g)``) or :func:`sparselmm.corCAR1` for continuous ones (nlme's
        ``corCAR1``). With a ``dispformula`` or ``correlation`` the result is a
        :class:`~sparselmm.residual_result.ResidualLmerResult`; these fits need unstructured terms and run
        BOBYQA; t tests use Satterthwaite's df (the residual parameters in the Hessian) and ``confint`` gives
        Wald intervals for every variance parameter; refits, profiles, the bootstrap and Kenward–Roger are
        refused for now.

    Returns
    -------
    LmerResult
    """
    bars = progress  # the passes' progress bars; below, progress is the verbose reporter
    _check_reml(reml)
    progress = as_progress(verbose, "REML criterion" if reml else "deviance")
    if progress is not None:
        progress.begin(f"lmer: {formula} ({'REML' if reml else 'ML'})")
    if dispformula is not None or correlation is not None:  # a residual structure (sparselmm.residual)
        result = fit_residual(formula, data, reml, weights, offset, missing, optimizer, control, start, check_conv,
                              ordering, memory_limit, data_name, progress, dispformula, correlation)  # fmt: skip
        kwargs = dict(reml=reml, weights=weights, offset=offset, missing=missing, optimizer=optimizer)
        kwargs.update(control=control, check_conv=check_conv, data_name=data_name)
        kwargs.update(dispformula=dispformula, correlation=correlation)
        result.call = FitCall(lmer, formula, data, kwargs)
        return result
    t0 = time.perf_counter()
    source = as_source(data)  # parquet files, a Dask DataFrame: summed chunk by chunk (sparselmm.scale)
    if source is not None and ordering in ORDERINGS:
        if progress is not None:
            progress.phase("reading and summing the data chunk by chunk (sparselmm.scale)")
        devfun, theta0, make_result = streamed_model(
            formula, source, reml, weights, offset, missing, ordering, progress=bars, memory_limit=memory_limit
        )
    else:
        devfun = _setup(formula, data, reml, weights, offset, missing, ordering, progress, memory_limit)
        theta0 = moment_start(devfun.design)
        make_result = LmerResult
    design = devfun.design
    if start is not None:
        theta0 = start_theta(design, start)
    setup_seconds = time.perf_counter() - t0
    theta, _, info = optimize_theta(devfun, theta0, design.lower, optimizer, control, check_conv, progress=progress)
    info.setup_seconds = setup_seconds
    info.path, info.predicted = devfun.path, devfun.predicted.as_dict()
    state = devfun.solve(theta)
    if not devfun.exact:  # the matrix-free estimate: its settings and its error at θ̂ (summary's note)
        info.details["approximation"] = devfun.approximation()
    if progress is not None:
        progress.done(
            f"done: {'REML criterion' if reml else 'deviance'} {state.deviance:.6f} after {info.n_evals} evaluations "
            f"(set-up {setup_seconds:.2f} s, optimisation {info.optimize_seconds:.2f} s)"
        )
    result = make_result(devfun, state, info, data_name=data_name)
    kwargs = dict(reml=reml, weights=weights, offset=offset, missing=missing, optimizer=optimizer)
    kwargs.update(control=control, check_conv=check_conv, ordering=ordering, data_name=data_name)
    kwargs.update(memory_limit=memory_limit)
    result.call = FitCall(lmer, formula, data, kwargs)
    return result
