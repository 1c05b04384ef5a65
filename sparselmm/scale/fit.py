"""The two passes over a chunked source and the fit from their cross-products.

:func:`streamed_setup` is :func:`sparselmm.lmer._setup` for data that arrives in chunks: the level pass,
the :class:`~sparselmm.scale.chunked.Plan`, the cross-product pass, then the same
:class:`~sparselmm.deviance.ProfiledDeviance` the in-memory path builds (on a design without rows).
:func:`streamed_model` hands :func:`sparselmm.lmer` that deviance function, where lme4 starts (its moment
start, from per-level sums) and how to build the result; lmer optimises it as it does for rows in memory.
:class:`StreamedLmerResult` is the result: everything but the row-wise methods.
"""

from __future__ import annotations

import copy
import functools
import time

import numpy as np
import pandas as pd
from formulaic import Formula

from ..deviance import profiled_deviance
from ..errors import DataError
from ..formula import parse_formula
from ..results import LmerResult
from .chunked import Plan
from .columns import ModelColumns, coded_as_categorical
from .levels import level_partial
from .source import Source

__all__ = ["StreamedLmerResult", "as_source", "streamed_model", "streamed_setup"]


def as_source(data) -> Source | None:
    """The chunked source for ``data`` (parquet path / glob / list of paths, a Dask DataFrame, a Source),
    or None for in-memory data. Imports pyarrow or dask only when such data is given."""
    import os

    def parquet_like(d) -> bool:  # a directory, or a file name / glob ending in .parquet (.parq, .pq)
        if not isinstance(d, (str, os.PathLike)):
            return False
        d = os.fspath(d)
        return os.path.isdir(d) or d.lower().endswith((".parquet", ".parq", ".pq"))

    if isinstance(data, Source):
        return data
    if parquet_like(data) or (isinstance(data, (list, tuple)) and data and all(parquet_like(d) for d in data)):
        from .parquet import ParquetSource

        return ParquetSource(data)
    mod = type(data).__module__
    if mod.startswith(("dask.", "dask_expr")) and hasattr(data, "to_delayed"):
        from .dask import DaskSource

        return DaskSource(data)
    return None


def streamed_setup(formula, source: Source, reml, weights, offset, missing, ordering, memory_limit=None):
    """The deviance function, lme4's starting θ and pass statistics for a chunked source."""
    t0 = time.perf_counter()
    parsed = parse_formula(formula)
    cols = ModelColumns.of(parsed, source.columns(), weights, offset, missing)
    kinds = source.kinds()
    response_only = {parsed.response} - set(cols.grouping)
    categorical = {c for c in cols.needed if kinds.get(c) == "categorical" and c not in response_only}
    categorical |= coded_as_categorical(parsed) & set(cols.needed)
    level_columns = list(dict.fromkeys([*cols.grouping, *sorted(categorical)]))
    levels, rows1, s1 = source.reduce(
        functools.partial(level_partial, cols, level_columns), cols.read, "sparselmm level pass"
    )
    if levels is None:
        raise DataError(f"{source.label} has no rows.")
    plan = Plan(cols, levels, categorical, source.label)
    total, rows2, s2 = source.reduce(plan.partial, cols.read, "sparselmm cross-products", inplace=True)
    design, cross, theta0 = plan.finish(total)
    devfun = profiled_deviance(design, cross, reml=reml, ordering=ordering, memory_limit=memory_limit)
    stats = {
        "rows": int(rows2),
        "complete_rows": int(plan.n),
        "chunks": int(total.chunks),
        "level_pass_seconds": s1,
        "cross_pass_seconds": s2,
        "rows_per_second": rows2 / max(s2, 1e-9),
        "setup_seconds": time.perf_counter() - t0,
    }
    return devfun, theta0, stats, plan


def streamed_model(formula, source: Source, reml, weights, offset, missing, ordering, progress=None, memory_limit=None):
    """What :func:`sparselmm.lmer` needs to fit from a chunked source: the deviance function, lme4's
    starting θ (from per-level sums) and a constructor of the result, ``make_result(devfun, state, info,
    data_name)``. The optimisation itself is lmer's, the same as for rows in memory. ``progress`` (None,
    True, False), when not None, replaces the source's own setting for the passes' bars."""
    if progress is not None:
        from ..progress import show_progress

        show_progress(progress)  # a wrong value fails before any pass
        source = copy.copy(source)  # the caller's source keeps its own setting
        source.progress = progress
    devfun, theta0, stats, plan = streamed_setup(
        formula, source, reml, weights, offset, missing, ordering, memory_limit
    )
    make_result = functools.partial(StreamedLmerResult, scale_info=stats, source=source, plan=plan)
    return devfun, theta0, make_result


class StreamedLmerResult(LmerResult):
    """An :class:`~sparselmm.results.LmerResult` fitted from chunks: the rows were never held.

    ``fixef``, ``theta``, ``sigma``, ``vcov``, ``ranef(cond_var=True)``, ``varcorr``, ``summary()`` (without
    the scaled-residual quantiles), tests and ``predict(newdata)`` work as usual. ``fitted()``,
    ``residuals()`` and ``predict()`` without ``newdata`` raise :class:`~sparselmm.errors.RowsNotHeldError`,
    except for a fit from a Dask DataFrame, where they return lazy Dask series over its partitions (the
    rows kept by the missing-value policy, with the partition's index). ``predict(ddf)`` on a Dask
    DataFrame is lazy too. Measured on the tests' models: ``confint`` (Wald, profile and boot), ``contest``
    (vectors and term names), ``coef_table`` (Satterthwaite, Kenward–Roger), ``drop1``, ``refit_ml``,
    ``deviance``, ``sparselmm.anova(m)`` (types I–III: lmerTest's contrasts from ``XᵀX`` and the fixed
    spec), ``sparselmm.anova(m0, m)`` (the rows compared by their sums, see
    :func:`sparselmm.inference.lrt.check_same_rows`) and ``bootstrap`` (each response drawn as its
    cross-products) work; ``simulate``, ``refit`` and ``bootstrap_lrt`` (n new values per response) raise
    ``RowsNotHeldError`` naming the rows and columns they need. ``scale_info``: rows read, chunks, seconds
    and rows per second of the passes.
    """

    rows_held = False

    def __init__(self, devfun, state, optinfo, data_name=None, *, scale_info: dict, source: Source, plan: Plan):
        super().__init__(devfun, state, optinfo, data_name=data_name or source.label)
        self.scale_info = scale_info
        self._source = source
        self._columns = plan.columns
        self._plan = plan
        self._fixed_columns = _formula_columns(plan.columns.parsed)
        devfun.design.source_key = source.key()

    def _lazy(self):
        from .dask import DaskSource

        return self._source if isinstance(self._source, DaskSource) else None

    def fitted(self):
        """Fitted values: a lazy Dask Series for a fit from a Dask DataFrame; otherwise the rows are not held
        and :class:`~sparselmm.RowsNotHeldError` says how to compute them (``predict(newdata)``)."""
        src = self._lazy()
        if src is None:
            return self._design._not_held("fitted()")
        return src.map_rows(functools.partial(_fitted_part, self, self._columns, None, False), "fitted")

    def residuals(self, type: str = "response"):
        """Residuals (types as :meth:`LmerResult.residuals`): lazy for a Dask fit, else
        :class:`~sparselmm.RowsNotHeldError`."""
        src = self._lazy()
        if src is None:
            return self._design._not_held("residuals()")
        if type not in ("response", "pearson", "scaled"):
            raise DataError(f"residuals(type={type!r}) is not known; use 'response', 'pearson' or 'scaled'.")
        return src.map_rows(functools.partial(_residual_part, self, self._columns, type), "residuals")

    def predict(self, newdata=None, re_form=None, allow_new_levels: bool = False, offset=None):
        """Predictions for ``newdata`` as :meth:`LmerResult.predict` (no rows needed); without ``newdata``
        lazy for a Dask fit, else :class:`~sparselmm.RowsNotHeldError`."""
        if newdata is None:
            src = self._lazy()
            if src is None:
                return self._design._not_held("predict() without newdata")
            fn = functools.partial(_fitted_part, self, self._columns, re_form, allow_new_levels)
            return src.map_rows(fn, "predict")
        if type(newdata).__module__.startswith(("dask.", "dask_expr")) and hasattr(newdata, "map_partitions"):
            fn = functools.partial(_predict_part, self, re_form, allow_new_levels, offset)
            return newdata.map_partitions(fn, meta=pd.Series(dtype=float, name="predict"))
        return self._predict_frame(newdata, re_form, allow_new_levels, offset)

    def _predict_frame(self, newdata, re_form=None, allow_new_levels=False, offset=None):
        """``LmerResult.predict`` on a pandas frame whose categorical columns of the fixed part (or of a
        term's coefficients) are first coded over the levels the fit used, whatever their dtype."""
        from ..data import as_dataframe

        newdata = as_dataframe(newdata)
        coded = [c for c in self._plan.categorical if c in newdata.columns and c in self._fixed_columns]
        if coded:
            newdata = newdata.copy()
            for col in coded:
                lv = self._plan.levels[col]
                s = newdata[col]
                if isinstance(s.dtype, pd.CategoricalDtype):
                    s = s.astype(object)
                idx = lv.get_indexer(s)
                bad = (idx < 0) & s.notna().to_numpy()
                if bad.any():
                    raise DataError(f"newdata column {col!r} has level {s[bad].iloc[0]!r}, not seen when fitting.")
                newdata[col] = pd.Categorical.from_codes(idx, categories=lv)
        return LmerResult.predict(self, newdata, re_form=re_form, allow_new_levels=allow_new_levels, offset=offset)

    def __getstate__(self):  # shipped to Dask workers for lazy predictions: the source stays behind
        state = LmerResult.__getstate__(self)  # and the CHOLMOD factor (re-analysed on first use)
        state["_source"] = None
        return state


def _formula_columns(parsed) -> set[str]:
    """Columns read by the fixed part or by a random term's coefficients (not the grouping factors)."""
    from ..design import _transform_arguments

    out = set(_transform_arguments(parsed))
    for text in [parsed.fixed, *(t.lhs for t in parsed.random)]:
        try:
            out |= {str(v) for v in Formula(text).required_variables}
        except Exception:  # reported when the model was built
            pass
    return out


def _predict_part(res, re_form, allow_new_levels, offset, part: pd.DataFrame) -> pd.Series:
    if len(part) == 0:
        return pd.Series(np.zeros(0), index=part.index, dtype=float, name="predict")
    eta = res._predict_frame(part, re_form, allow_new_levels, offset)
    return pd.Series(eta, index=part.index, name="predict")


def _fitted_part(res, cols: ModelColumns, re_form, allow_new_levels, part: pd.DataFrame) -> pd.Series:
    clean = cols.clean(part)
    if clean is None or len(clean.frame) == 0:
        return pd.Series(np.zeros(0), dtype=float, name="fitted")
    kept = part.iloc[clean.rows]
    eta = res._predict_frame(kept, re_form, allow_new_levels, cols.offset)
    return pd.Series(eta, index=kept.index, name="fitted")


def _residual_part(res, cols: ModelColumns, type: str, part: pd.DataFrame) -> pd.Series:
    from ..design import _response

    clean = cols.clean(part)
    if clean is None or len(clean.frame) == 0:
        return pd.Series(np.zeros(0), dtype=float, name="residuals")
    kept = part.iloc[clean.rows]
    r = _response(cols.parsed, clean.frame) - res._predict_frame(kept, None, False, cols.offset)
    if type != "response" and clean.weights is not None:
        r = r * np.sqrt(clean.weights)
    if type == "scaled":
        r = r / res.sigma
    return pd.Series(r, index=kept.index, name="residuals")
