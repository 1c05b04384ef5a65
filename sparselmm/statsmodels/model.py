"""``MixedLM``: statsmodels' group-wise linear mixed model API, fitted by the sparse engine."""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..data import as_dataframe
from ..design import independent_columns
from ..errors import (
    ConvergenceWarning,
    DataError,
    FormulaError,
    ModelSpecError,
    NumericalError,
    SingularFitWarning,
    SparseLMMError,
    caller_stacklevel,
)
from ..optimize import OPTIMIZERS, optimize_theta
from ..progress import as_progress
from ..start import moment_start
from ._compat import (
    MixedLMConvergenceWarning,
    SingularCovarianceWarning,
    UnidentifiableWarning,
    is_penalty,
)
from .data import ModelData
from .likelihood import Likelihood
from .params import MixedLMParams, VCSpec, convert_vc_dict, psd_factor
from .structure import (
    VCBlock,
    build_structure,
    encode_groups,
    exog_names,
    unique_codes,
    vc_block_from_full,
    vc_block_from_spec,
)

__all__ = ["MixedLM", "MixedLMDistribution", "UnsupportedOptionError", "mixedlm"]

_FIT_KWARGS = ["gtol", "maxiter", "eps", "maxcor", "ftol", "tol", "disp", "maxls"]  # statsmodels' accepted set
# statsmodels' scipy method names → our optimisers; any other name falls back to BOBYQA with a warning
_METHOD_MAP = {"nm": "nelder_mead", "nelder-mead": "nelder_mead", "lbfgs": "lbfgsb", "l-bfgs-b": "lbfgsb"}


class UnsupportedOptionError(SparseLMMError, NotImplementedError):
    """A statsmodels option that sparselmm's MixedLM does not implement (none at present: penalised fits
    are supported since 0.1; the class stays for code that catches it)."""


def _as_2d(a, name: str) -> tuple[np.ndarray, list[str] | None]:
    names = None
    if isinstance(a, pd.DataFrame):
        names = [str(c) for c in a.columns]
    elif isinstance(a, pd.Series):
        names = [str(a.name)] if a.name is not None else None
    try:
        arr = np.asarray(a, dtype=float)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be numeric; encode categorical columns first (or use from_formula).") from None
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise DataError(f"{name} must be a 1- or 2-dimensional array, not {arr.ndim}-dimensional.")
    return arr, names


class MixedLM:
    """Linear mixed model with statsmodels' ``MixedLM`` interface, fitted with one sparse Cholesky per θ.

    Same arguments, defaults and meaning as ``statsmodels.regression.mixed_linear_model.MixedLM``:
    ``groups`` + ``exog_re`` give correlated random coefficients per group (a random intercept when
    ``exog_re`` and ``exog_vc`` are both None); each ``exog_vc`` component (a :class:`VCSpec`, or the
    deprecated dict ``exog_vc[name][group] = matrix``) gives independent random coefficients with one
    shared variance, nested in the groups. Crossed effects: one group covering all rows, no ``exog_re``,
    one variance component per crossed factor — fitted as fast as ``lmer``.

    Differences from statsmodels (deliberate):

    * The fit minimises over θ (the Cholesky factor of ``cov_re/scale``, and √(vcomp/scale)) with the
      engine's ``optimizer="auto"`` (L-BFGS-B with the analytic gradient for all-scalar crossed models,
      BOBYQA otherwise) and a sparse or dense-Schur Cholesky, not BFGS over dense per-group matrices;
      ``method`` may name ``"auto"``, ``"bobyqa"``,
      ``"nelder_mead"``/``"nm"``, ``"lbfgsb"``/``"lbfgs"``; other scipy names fall back to BOBYQA with a
      warning. ``score`` and ``hessian`` are exact, as statsmodels' (computed from the sparse engine's
      q × q blocks, :mod:`sparselmm.statsmodels.likelihood`; they agree with statsmodels' to ~1e-10).
      With ``fe_pen`` / ``cov_pen`` (statsmodels' penalised profile likelihood) the fit uses BOBYQA.
    * Without ``start_params`` the optimiser starts where ``lmer`` does (lme4's moment start when every
      random effect is an intercept or an indicator-matrix variance component); ``fit(do_cg=False)``
      returns statsmodels' default start.
    * ``missing="none"`` with missing values raises :class:`~sparselmm.DataError` (statsmodels fits NaNs).
    * A boundary fit warns with :class:`~sparselmm.statsmodels.SingularCovarianceWarning` (lme4's criterion,
      θ < 1e-4; the class is also statsmodels' ``SingularMatrixWarning`` and sparselmm's
      ``SingularFitWarning``) instead of statsmodels' scale-dependent "vcomp < 0.01" ConvergenceWarning.
      Convergence warnings are :class:`~sparselmm.statsmodels.MixedLMConvergenceWarning` (also
      statsmodels' ``ConvergenceWarning``).
    * A model with as many random effects (or levels) in a term as observations is fitted, as statsmodels
      fits it, with an :class:`~sparselmm.statsmodels.UnidentifiableWarning` (``lmer`` refuses it, as lme4).
    * ``fit(do_cg=False)`` returns results at the starting values (statsmodels raises a NameError).
    """

    def __init__(self, endog, exog, groups, exog_re=None, exog_vc=None, use_sqrt=True, missing="none", **kwargs):
        allowed = {
            "_formula",
            "_fixed_spec",
            "_data",
            "_group_name",
            "_exog_re_names",
            "_vc_blocks",
            "_endog_name",
            "_context",
            "_missing_idx",
        }
        for key in kwargs:
            if key not in allowed:
                raise ModelSpecError(f"argument {key} not permitted for MixedLM initialization")
        if missing not in ("none", "drop", "raise"):
            raise DataError(f"missing={missing!r} is not known; use 'none', 'drop' or 'raise'.")
        self.use_sqrt = bool(use_sqrt)
        self.reml = True
        self.fe_pen = self.cov_pen = None
        self._freepat = None
        self.formula = kwargs.get("_formula")
        self._fixed_spec = kwargs.get("_fixed_spec")
        self._context = kwargs.get("_context")
        self.data_frame = kwargs.get("_data")
        self.missing = missing
        self._use_pandas = isinstance(exog, pd.DataFrame) or isinstance(endog, pd.Series) or self.formula is not None

        y_index = endog.index if isinstance(endog, pd.Series) else None
        y, ynames = _as_2d(endog, "endog")
        if y.shape[1] != 1:
            raise DataError(f"endog must be one column, not {y.shape[1]}.")
        y = y[:, 0]
        X, xnames = _as_2d(exog, "exog")
        n = y.size
        groups_arr = np.asarray(groups).ravel()
        Zre, zre_names = (None, None) if exog_re is None else _as_2d(exog_re, "exog_re")
        for name, arr in (("exog", X), ("groups", groups_arr), ("exog_re", Zre)):
            if arr is not None and arr.shape[0] != n:
                raise DataError(f"{name} has {arr.shape[0]} rows but endog has {n}; give one row per observation.")

        # missing values
        parts = {"endog": ~np.isfinite(y), "exog": ~np.all(np.isfinite(X), axis=1), "groups": pd.isna(groups_arr)}
        if Zre is not None:
            parts["exog_re"] = ~np.all(np.isfinite(Zre), axis=1)
        bad = np.logical_or.reduce(list(parts.values()))
        orig_endog = endog if isinstance(endog, pd.Series | pd.DataFrame) else y
        orig_exog = exog if isinstance(exog, pd.Series | pd.DataFrame) else X
        missing_idx = kwargs.get("_missing_idx")
        if bad.any():
            if missing == "drop":
                if exog_vc is not None:
                    raise DataError(
                        "missing='drop' cannot drop rows from exog_vc (its matrices are per group); drop the "
                        f"{int(bad.sum())} incomplete rows before building exog_vc, or use from_formula."
                    )
                keep = ~bad
                missing_idx = np.flatnonzero(bad)
                if isinstance(orig_endog, pd.Series | pd.DataFrame):
                    orig_endog = orig_endog.iloc[keep]
                if isinstance(orig_exog, pd.Series | pd.DataFrame):
                    orig_exog = orig_exog.iloc[keep]
                y, X, groups_arr = y[keep], X[keep], groups_arr[keep]
                Zre = None if Zre is None else Zre[keep]
                y_index = None if y_index is None else y_index[keep]
                n = y.size
            else:
                detail = ", ".join(f"{k} ({int(v.sum())})" for k, v in parts.items() if v.any())
                raise DataError(
                    f"{int(bad.sum())} rows have missing or infinite values, in {detail}; pass missing='drop' to "
                    "drop those rows."
                )
        self._row_index = y_index
        self.endog, self.exog, self.groups = y, X, groups_arr
        self.endog_names = kwargs.get("_endog_name") or (ynames[0] if ynames and ynames[0] != "None" else "y")
        self.exog_names = xnames or exog_names(X)
        self.k_fe = X.shape[1]
        self.nobs = self.n_totobs = n

        codes, labels = encode_groups(groups_arr)
        self._codes = codes
        self.group_labels = labels
        self.n_groups = len(labels)
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(self.n_groups + 1))
        self._group_rows = [order[bounds[i] : bounds[i + 1]] for i in range(self.n_groups)]
        self.row_indices = {g: list(r) for g, r in zip(labels, self._group_rows)}
        self._group_sizes = np.array([r.size for r in self._group_rows], dtype=np.int64)

        # variance components
        vc_blocks: list[VCBlock] | None = kwargs.get("_vc_blocks")
        if vc_blocks is None:
            if isinstance(exog_vc, dict):
                exog_vc = convert_vc_dict(exog_vc)
            if exog_vc is None:
                exog_vc = VCSpec([], [], [])
            if not isinstance(exog_vc, VCSpec):
                raise DataError(
                    f"exog_vc must be a VCSpec (or the deprecated dict of dicts), not {type(exog_vc).__name__}."
                )
            vc_blocks = [
                vc_block_from_spec(nm, mats, cols, self._group_rows, n)
                for nm, mats, cols in zip(exog_vc.names, exog_vc.mats, exog_vc.colnames)
            ]
        self._vc_blocks = vc_blocks
        self._exog_vc = exog_vc if isinstance(exog_vc, VCSpec) else None
        self.k_vc = len(vc_blocks)

        # random effects (group term)
        group_name = kwargs.get("_group_name") or "Group"
        if exog_re is None and self.k_vc == 0:
            Zre = np.ones((n, 1))
            re_names = [group_name] if self.formula is not None else ["Group"]
            pnames_re = ["Group Var"] if self.formula is None else None
        else:
            re_names = kwargs.get("_exog_re_names") or zre_names
            if Zre is not None and re_names is None:
                re_names = [f"x_re{k + 1}" for k in range(Zre.shape[1])]
            re_names = re_names or []
            pnames_re = None
        if Zre is not None and Zre.shape[1] == 0:
            Zre = None
        self.exog_re = Zre
        self.k_re = 0 if Zre is None else Zre.shape[1]
        self.k_re2 = self.k_re * (self.k_re + 1) // 2
        self.k_params = self.k_fe + self.k_re2
        self.exog_re_names = list(re_names) if self.k_re else []
        cov_names = []
        for i in range(self.k_re):
            for j in range(i + 1):
                a, b = self.exog_re_names[i], self.exog_re_names[j]
                cov_names.append(f"{a} Var" if i == j else f"{b} x {a} Cov")
        if pnames_re is not None:  # statsmodels' default random intercept is named "Group Var"
            cov_names = pnames_re
            self.exog_re_names = ["Group Var"]
        self.exog_re_names_full = cov_names
        self.vcomp_names = [b.name for b in vc_blocks]
        self.param_names = list(self.exog_names) + cov_names + [f"{v} Var" for v in self.vcomp_names]

        if self.k_fe:
            keep = independent_columns(X)
            if keep.size < self.k_fe:
                dropped = [self.exog_names[j] for j in range(self.k_fe) if j not in set(keep)]
                raise ModelSpecError(
                    f"exog is rank deficient: column(s) {dropped} are linear combinations of the others; drop them."
                )
        self._lik: Likelihood | None = None
        self._data_removed = False
        self.data = ModelData(
            self,
            orig_endog,
            orig_exog,
            row_labels=y_index,
            frame=self.data_frame,
            model_spec=self._fixed_spec,
            missing_row_idx=missing_idx,
        )

    # ---- construction from a formula ---------------------------------------------------------
    @classmethod
    def from_formula(
        cls,
        formula,
        data,
        re_formula=None,
        vc_formula=None,
        subset=None,
        use_sparse=False,
        missing="none",
        *args,
        **kwargs,
    ) -> MixedLM:
        """Build the model from formulas, as ``statsmodels.formula.api.mixedlm``.

        ``groups`` (a column name or an array, required keyword), ``re_formula`` (one-sided formula of the
        group's correlated random coefficients; default a random intercept, or none when ``vc_formula``
        is given), ``vc_formula`` (dict name → formula of a variance component, evaluated within each
        group). Formulas are read by formulaic (patsy-compatible names such as ``C(x)[T.b]``).

        Functions and variables that the formulas use and that are not columns of ``data`` (e.g.
        ``"y ~ times_two(x)"``) are looked up in the caller's namespace, as statsmodels does; ``eval_env``
        changes that: an int counts frames above the caller (0, the default, is the caller), ``-1`` means
        no namespace, and a mapping (or patsy's ``EvalEnvironment``) is used as given.

        Differences from statsmodels (deliberate): ``subset`` is honoured (statsmodels silently ignores
        it); ``use_sparse`` is accepted and ignored (the design is always sparse); ``missing="none"`` with
        missing values raises instead of failing later.
        """
        if "groups" not in kwargs:
            raise ModelSpecError(
                "'groups' is a required keyword argument in MixedLM.from_formula (a column name or an array)."
            )
        if args:
            raise ModelSpecError("MixedLM.from_formula takes no extra positional arguments.")
        groups = kwargs.pop("groups")
        context = _formula_context(kwargs.pop("eval_env", None))
        use_sqrt = kwargs.pop("use_sqrt", True)
        if kwargs:
            raise ModelSpecError(f"Unknown keyword argument(s) {sorted(kwargs)} for MixedLM.from_formula.")
        from formulaic import Formula, model_matrix

        data = as_dataframe(data)
        group_name = "Group"
        group_label = groups if isinstance(groups, str) else "groups"  # how a missing-value message names it
        if isinstance(groups, str):
            if groups not in data.columns:
                raise DataError(f"groups={groups!r} is not a column of data; columns are {list(data.columns)}.")
            group_name = groups
            groups = data[groups].to_numpy()
        else:
            groups = np.asarray(groups).ravel()
            if groups.size != len(data):
                raise DataError(f"groups has {groups.size} values but data has {len(data)} rows.")
        n_given = len(data)
        positions = np.arange(n_given)
        if subset is not None:
            mask = np.asarray(subset)
            if mask.dtype == bool:
                if mask.shape != (n_given,):
                    raise DataError(f"subset is a mask of {mask.size} values but data has {n_given} rows.")
                data, groups, positions = data.loc[mask], groups[mask], positions[mask]
            else:
                pos = data.index.get_indexer(pd.Index(subset))
                if (pos < 0).any():
                    raise DataError("subset names rows that are not in data's index.")
                data, groups, positions = data.iloc[pos], groups[pos], positions[pos]
        if "~" not in formula:
            raise FormulaError(f"formula {formula!r} needs a response: 'y ~ x1 + x2'.")
        re_text = None if re_formula is None else re_formula.strip().lstrip("~").strip()
        vc_formula = dict(vc_formula or {})
        try:
            fml = Formula(formula)
            used = {str(v) for v in fml.required_variables}
            for text in [re_text or "0", *vc_formula.values()]:
                used |= {str(v) for v in Formula(text).required_variables}
        except Exception as err:
            raise FormulaError(f"Could not parse the formulas: {err}") from None
        used = [c for c in data.columns if c in used]
        na = data[used].isna()
        group_na = np.asarray(pd.isna(groups), dtype=bool)
        bad = na.any(axis=1).to_numpy() | group_na
        missing_idx = None
        if bad.any():
            if missing != "drop":
                counts = {c: int(k) for c, k in na.sum().items() if k}
                if group_na.any():
                    counts[group_label] = int(group_na.sum())
                detail = ", ".join(f"{c!r} ({k})" for c, k in counts.items())
                raise DataError(
                    f"{int(bad.sum())} rows have missing values, in column(s) {detail}; pass missing='drop' to "
                    "drop those rows."
                )
            missing_idx = positions[bad]
            data, groups = data.loc[~bad], groups[~bad]
        data = data.reset_index(drop=True) if subset is not None or bad.any() else data

        def build(spec, frame, what, output="pandas"):
            try:
                return model_matrix(spec, frame, na_action="raise", output=output, context=context)
            except Exception as err:
                raise FormulaError(f"Could not build the {what} from {spec!r}: {err}") from None

        mm = build(formula, data, "fixed effects")
        yname = str(mm.lhs.columns[0])
        endog = pd.Series(np.asarray(mm.lhs, dtype=float)[:, 0], index=data.index, name=yname)
        exog = pd.DataFrame(np.asarray(mm.rhs, dtype=float), index=data.index, columns=[str(c) for c in mm.rhs.columns])

        if re_text is not None:
            if re_text == "1":
                exog_re, re_names = np.ones((len(data), 1)), [group_name]
            else:
                zm = build(re_text, data, "re_formula matrix")
                exog_re = np.asarray(zm, dtype=float)
                re_names = [str(c).replace("Intercept", group_name) for c in zm.columns]
        else:
            exog_re, re_names = (None, [group_name]) if not vc_formula else (None, [])

        codes, labels = encode_groups(groups)
        blocks = []
        for name in sorted(vc_formula):
            text = vc_formula[name].strip().lstrip("~").strip()
            parsed_terms = list(Formula(text))
            terms = [str(t) for t in parsed_terms]
            if len(terms) == 1 and terms[0] != "1":
                # one term without intercept: its full-rank columns restricted to a group are exactly the
                # group-wise evaluation (columns empty in a group are left out)
                fast = _indicator_columns(parsed_terms[0], data, context)
                if fast is not None:
                    F, colnames = fast
                else:
                    F = build(text, data, f"vc_formula[{name!r}] matrix", output="sparse")
                    colnames = list(F.model_spec.column_names)
                blocks.append(vc_block_from_full(name, F, colnames, codes, len(labels)))
            else:
                rows_of = [np.flatnonzero(codes == g) for g in range(len(labels))]
                mats, cols = [], []
                for r in rows_of:
                    F = build(text, data.iloc[r], f"vc_formula[{name!r}] matrix", output="sparse")
                    mats.append(sp.csr_matrix(F))
                    cols.append(list(F.model_spec.column_names))
                blocks.append(vc_block_from_spec(name, mats, cols, rows_of, len(data)))
        if re_text is None and not vc_formula:
            exog_re = None
        return cls(
            endog,
            exog,
            groups,
            exog_re=exog_re,
            use_sqrt=use_sqrt,
            _formula=formula,
            _fixed_spec=mm.rhs.model_spec,
            _data=data,
            _group_name=group_name,
            _exog_re_names=re_names,
            _vc_blocks=blocks,
            _endog_name=yname,
            _context=_used_namespace(context, formula),
            _missing_idx=missing_idx,
        )

    # ---- internals -----------------------------------------------------------------------------
    def likelihood(self) -> Likelihood:
        """The engine bridge (design, cross-products, deviance functions), built on first use."""
        if self._data_removed:
            raise DataError(
                "This model's data were removed (results.remove_data()); refit from the data to compute "
                "quantities that need them."
            )
        if self._lik is None:
            structure = build_structure(
                self.endog,
                self.exog,
                list(self.exog_names),
                self._codes,
                self.group_labels,
                "Group",
                self.exog_re,
                self.exog_re_names,
                self._vc_blocks,
            )
            self._lik = Likelihood(structure)
            for t in structure.design.terms:  # lme4's per-term checks, which lmer enforces
                if t.q >= self.nobs or t.n_levels >= self.nobs:
                    what = "group random effects" if t is structure.re_term else f"variance component {t.cnms[0]!r}"
                    warnings.warn(
                        f"The {what} have {t.q} coefficients for {self.nobs} observations: the variance "
                        "parameters are not all identifiable from the residual variance, so the estimates may "
                        "be arbitrary (lmer refuses such a model; statsmodels fits it).",
                        UnidentifiableWarning,
                        stacklevel=caller_stacklevel(),
                    )
        return self._lik

    @property
    def exog_vc(self) -> VCSpec:
        """The variance components as a :class:`VCSpec` (per-group sparse matrices)."""
        if self._data_removed:
            raise DataError("This model's data were removed (results.remove_data()).")
        if self._exog_vc is None:
            mats = [[b.group_matrix(r, g) for g, r in enumerate(self._group_rows)] for b in self._vc_blocks]
            self._exog_vc = VCSpec(self.vcomp_names, [b.colnames for b in self._vc_blocks], mats)
        return self._exog_vc

    def _as_params(self, params, has_fe: bool) -> MixedLMParams:
        if isinstance(params, MixedLMParams) or hasattr(params, "cov_re"):  # also statsmodels' own
            return params
        return MixedLMParams.from_packed(np.asarray(params, float), self.k_fe, self.k_re, self.use_sqrt, has_fe)

    # ---- statsmodels model methods ---------------------------------------------------------------
    def group_list(self, array):
        """``array`` split into one sub-array per group (groups in sorted order)."""
        if array is None:
            return None
        if self._data_removed:
            raise DataError("This model's data were removed (results.remove_data()).")
        arr = np.asarray(array)
        return [np.array(arr[r]) for r in self._group_rows]

    @property
    def endog_li(self):
        return self.group_list(self.endog)

    @property
    def exog_li(self):
        return self.group_list(self.exog)

    @property
    def exog_re_li(self):
        return self.group_list(self.exog_re)

    def predict(self, params, exog=None):
        """Fixed-effects predictions ``exog @ fe_params`` (``params``: MixedLMParams, packed with the fixed
        effects first, or the fixed effects alone)."""
        if exog is None:
            exog = self.exog
        fe = params.fe_params if isinstance(params, MixedLMParams) else np.asarray(params, float)[: self.k_fe]
        return np.asarray(exog, dtype=float) @ fe

    def loglike(self, params, profile_fe=True):
        """Log-likelihood (REML or ML as in the last ``fit``; scale profiled out) at ``params``
        (MixedLMParams, or packed covariance parameters without fixed effects)."""
        pa = self._as_params(params, has_fe=False)
        beta = None if profile_fe else pa.fe_params
        lik = self.likelihood()
        if self.fe_pen is None and self.cov_pen is None:
            return lik.loglike(pa.cov_re, pa.vcomp, self.reml, beta)
        theta = lik.theta(pa.cov_re, pa.vcomp)
        if theta is None:
            return float("nan")
        st = lik.solve(theta, self.reml)
        fe = st.beta if beta is None else beta
        return lik.loglike_state(st, self.reml, beta) - self._penalty(fe, pa.cov_re)

    def _penalty(self, fe_params, cov_re) -> float:
        """statsmodels' penalties of a ``fit(fe_pen=..., cov_pen=...)``: subtracted from the log-likelihood."""
        val = 0.0
        if self.cov_pen is not None and self.k_re > 0:
            cov_re = np.asarray(cov_re, dtype=float)
            try:
                inv = np.linalg.inv(cov_re)
            except np.linalg.LinAlgError:
                inv = np.linalg.pinv(cov_re)
            val += float(self.cov_pen.func(cov_re, inv))
        if self.fe_pen is not None:
            val += float(self.fe_pen.func(np.asarray(fe_params, dtype=float)))
        return val

    def score(self, params, profile_fe=True):
        """Score in the packed parameterisation given by ``use_sqrt`` (finite differences; with
        ``profile_fe=False`` the fixed-effects part comes first), masked by ``free`` as statsmodels."""
        pa = self._as_params(params, has_fe=False)
        packed = pa.get_packed(self.use_sqrt, has_fe=False)
        beta = None if profile_fe else pa.fe_params
        g = self.likelihood().score_packed(packed, self.use_sqrt, self.reml, beta)
        if self._freepat is not None:
            fp = self._freepat
            mask = np.concatenate([np.asarray(fp.cov_re)[np.tril_indices(self.k_re)], np.asarray(fp.vcomp)])
            if beta is not None:
                mask = np.concatenate([np.asarray(fp.fe_params), mask])
            g = g * mask
        return g

    def hessian(self, params):
        """Hessian of the log-likelihood in (fe_params, lower triangle of cov_re, vcomp) — the
        non-square-root parameterisation — and whether the covariance is singular. ``params`` is a
        MixedLMParams or a packed vector with fixed effects (in the ``use_sqrt`` parameterisation)."""
        pa = self._as_params(params, has_fe=True)
        sing = bool(
            (self.k_re and np.linalg.eigvalsh(np.asarray(pa.cov_re)).min() < 1e-10)
            or (self.k_vc and np.min(pa.vcomp) < 1e-10)
        )
        return self.likelihood().hessian(pa.fe_params, pa.cov_re, pa.vcomp, self.reml), sing

    def get_fe_params(self, cov_re, vcomp, tol=1e-10):
        """GLS fixed effects for profile-scale ``cov_re`` and ``vcomp``; returns ``(fe_params, singular)``."""
        if self.k_fe == 0:
            return np.array([]), False
        lik = self.likelihood()
        theta = lik.theta(cov_re, vcomp)
        if theta is None:
            raise ModelSpecError("cov_re must be positive semi-definite and vcomp non-negative.")
        sing = bool(
            (self.k_re and np.linalg.eigvalsh(np.asarray(cov_re)).min() < tol) or (self.k_vc and np.min(vcomp) < tol)
        )
        return lik.solve(theta, self.reml).beta.copy(), sing

    def get_scale(self, fe_params, cov_re, vcomp):
        """Residual variance ``rᵀV⁻¹r / (n − p)`` (REML) or ``/ n`` (ML) at the given parameters."""
        lik = self.likelihood()
        theta = lik.theta(cov_re, vcomp)
        if theta is None:
            raise ModelSpecError("cov_re must be positive semi-definite and vcomp non-negative.")
        st = lik.solve(theta, self.reml)
        return lik.rss(st, fe_params) / lik.fac(self.reml)

    # ---- fitting ------------------------------------------------------------------------------------
    def _start(self, start_params) -> MixedLMParams:
        if start_params is None:
            pa = MixedLMParams(self.k_fe, self.k_re, self.k_vc)
            return pa
        if isinstance(start_params, MixedLMParams):
            return start_params.copy()
        sp_ = np.asarray(start_params, dtype=float).ravel()
        if sp_.size == self.k_fe + self.k_re2 + self.k_vc:
            return MixedLMParams.from_packed(sp_, self.k_fe, self.k_re, self.use_sqrt, has_fe=True)
        if sp_.size == self.k_re2 + self.k_vc:
            return MixedLMParams.from_packed(sp_, self.k_fe, self.k_re, self.use_sqrt, has_fe=False)
        raise ModelSpecError(
            f"invalid start_params: expected {self.k_fe + self.k_re2 + self.k_vc} values (with fixed effects) "
            f"or {self.k_re2 + self.k_vc} (without), got {sp_.size}."
        )

    def _optimizer(self, method) -> str:
        if method is None:
            return "auto"  # L-BFGS-B with the analytic gradient where the engine has one, else BOBYQA
        methods = [method] if isinstance(method, str) else list(method)
        for meth in methods:
            if meth.lower() in ("newton", "ncg"):
                raise ModelSpecError(f"method {meth} not available for MixedLM")
        m = methods[0].lower()
        m = _METHOD_MAP.get(m, m)
        if m in OPTIMIZERS:
            return m
        warnings.warn(
            f"method={methods[0]!r} is a scipy optimiser that sparselmm does not use; fitting with 'bobyqa' "
            f"(choose from {OPTIMIZERS} or 'nm'/'lbfgs' to silence this).",
            UserWarning,
            stacklevel=caller_stacklevel(),
        )
        return "bobyqa"

    def _optimize(
        self, start: MixedLMParams, reml: bool, free, optimizer: str, control: dict, use_sqrt=None, theta0=None
    ):
        """Minimise the deviance over the free parameters (from ``theta0`` if given, else ``start``);
        returns (θ̂, OptInfo)."""
        lik = self.likelihood()
        dev = self._objective(lik.devfun(reml))
        s = lik.structure
        if theta0 is None:
            theta0 = lik.theta(start.cov_re, start.vcomp)
        if theta0 is None:
            raise ModelSpecError("start_params must have a positive semi-definite cov_re and non-negative vcomp.")
        lower = lik.design.lower
        if free is None:
            return _optimize_free(dev, theta0, lower, optimizer, control, lambda x: x)
        mask = np.concatenate(
            [np.asarray(free.cov_re, float)[np.tril_indices(self.k_re)], np.asarray(free.vcomp, float)]
        )
        if mask.size != self.k_re2 + self.k_vc:
            raise ModelSpecError(
                f"free must have a {self.k_re}×{self.k_re} cov_re and {self.k_vc} vcomp entries (a MixedLMParams)."
            )
        idx = np.flatnonzero(mask != 0)
        if self.use_sqrt if use_sqrt is None else use_sqrt:  # mask on the Cholesky factor = mask on θ
            pos = s.theta_of_sqrt[idx]
            lo = lower[pos]

            def f(x):
                th = theta0.copy()
                th[pos] = x
                return dev(th)

            x0 = theta0[pos]

            def to_theta(x):
                th = theta0.copy()
                th[pos] = x
                return th
        else:  # mask on cov_re / vcomp themselves
            psi0 = start.get_packed(use_sqrt=False, has_fe=False)
            ri, ci = np.tril_indices(self.k_re)
            is_var = np.concatenate([ri == ci, np.ones(self.k_vc, dtype=bool)])
            lo = np.where(is_var[idx], 0.0, -np.inf)

            def to_theta(x):
                psi = psi0.copy()
                psi[idx] = x
                pa = MixedLMParams.from_packed(psi, self.k_fe, self.k_re, False, has_fe=False)
                return lik.theta(pa.cov_re, pa.vcomp)

            def f(x):
                th = to_theta(x)
                return float("inf") if th is None else dev(th)

            x0 = psi0[idx]
        if idx.size == 0:
            from ..optimize import OptInfo

            return theta0, dev(theta0), OptInfo("none", 1, True, "no free parameters", theta0.copy())
        return _optimize_free(f, x0, lo, optimizer, control, to_theta)

    def _objective(self, dev):
        """The deviance, or with ``fe_pen`` / ``cov_pen`` set, ``deviance + 2 · penalty`` at the GLS fixed
        effects (statsmodels' penalised profile likelihood; derivative-free, so BOBYQA)."""
        if self.fe_pen is None and self.cov_pen is None:
            return dev
        lik = self.likelihood()

        def penalised(theta):
            try:
                st = dev.solve(theta)
            except NumericalError:
                return float("inf")
            cov_re = lik.params_from_theta(theta).cov_re
            return st.deviance + 2.0 * self._penalty(st.beta, cov_re)

        return penalised

    def fit(
        self,
        start_params=None,
        reml=True,
        niter_sa=0,
        do_cg=True,
        fe_pen=None,
        cov_pen=None,
        free=None,
        full_output=False,
        method=None,
        **fit_kwargs,
    ):
        """Fit by REML (default) or ML; statsmodels' arguments and meaning (see the class notes).

        ``start_params`` (packed with or without fixed effects, in the ``use_sqrt`` parameterisation,
        or a MixedLMParams) sets the starting covariance; ``free`` (a MixedLMParams of 0/1 masks) holds
        the masked covariance parameters at their starting values — e.g. ``cov_re=np.eye(k)`` fits
        independent random effects. ``maxiter`` is passed to the optimiser as its evaluation limit.
        """
        from .results import MixedLMResults

        bad = sorted(set(fit_kwargs).difference(_FIT_KWARGS))
        if bad:
            warnings.warn(
                f"Argument{'s' if len(bad) > 1 else ''} {', '.join(bad)} not used by MixedLM.fit. Future versions "
                "will raise on these arguments.",
                FutureWarning,
                stacklevel=caller_stacklevel(),
            )
        for name, pen, how in (
            ("fe_pen", fe_pen, "func(params) and deriv(params), e.g. statsmodels.base._penalties.L2()"),
            ("cov_pen", cov_pen, "func(cov_re, cov_re_inv), e.g. statsmodels.base._penalties.PSD(1.0)"),
        ):
            if pen is not None and not callable(getattr(pen, "func", None)):
                raise ModelSpecError(f"{name} must be a penalty object with {how}; got {type(pen).__name__}.")
        self.fe_pen, self.cov_pen = fe_pen, cov_pen
        optimizer = self._optimizer(method)
        if niter_sa > 0:
            warnings.warn("niter_sa is currently ignored", UserWarning, stacklevel=caller_stacklevel())
        # tighter than lme4's 1e-8 defaults: the statsmodels parameterisation reports small covariances whose
        # relative accuracy needs it (≈ +10% evaluations)
        control = {"ftol_abs": 1e-10, "xtol_abs": 1e-10, "ftol_rel": 0.0}
        if "ftol" in fit_kwargs:
            control["ftol_abs"] = float(fit_kwargs["ftol"])
        if "maxiter" in fit_kwargs:
            control["maxeval"] = int(fit_kwargs["maxiter"])
        progress = as_progress(fit_kwargs.get("disp", False), "-2 REML log-likelihood" if reml else "-2 log-likelihood")
        if progress is not None:  # statsmodels' disp=True prints the optimiser's messages; here, its progress
            control["progress"] = progress
            progress.begin(f"MixedLM fit ({'REML' if reml else 'ML'}): {self.nobs:,} rows, {self.n_groups:,} groups")
        self.reml = bool(reml)
        self._freepat = free
        start = self._start(start_params)
        lik = self.likelihood()
        hist = [] if full_output else None
        if do_cg:
            # without start_params, start where lmer() starts (lme4's moment start for intercept-only
            # variance components; statsmodels' cov_re = I, vcomp = 1 otherwise): the optimum is the same,
            # the path shorter (InstEval's crossed model: 10 instead of 27 gradient evaluations)
            theta0 = _moment_start(lik) if start_params is None and free is None else None
            with _statsmodels_warnings():
                theta, _, info = self._optimize(start, self.reml, free, optimizer, control, theta0=theta0)
            converged = info.converged
            if hist is not None:
                hist.append(
                    {
                        "optimizer": info.optimizer,
                        "n_evals": info.n_evals,
                        "converged": info.converged,
                        "message": info.message,
                        "theta": np.asarray(theta).copy(),
                    }
                )
        else:
            theta = lik.theta(start.cov_re, start.vcomp)
            if theta is None:
                raise ModelSpecError("start_params must have a positive semi-definite cov_re and non-negative vcomp.")
            info, converged = None, False
        return MixedLMResults._from_theta(self, theta, converged, hist, info)

    def fit_regularized(self, start_params=None, method="l1", alpha=0, ceps=1e-4, ptol=1e-6, maxit=200, **fit_kwargs):
        """Penalised fixed effects, as statsmodels.

        ``method="l1"``: L1-penalised fixed effects with the covariance held at the unpenalised fit
        (statsmodels' cyclic coordinate descent on the GLS criterion, weights ``alpha``). A statsmodels
        penalty object (``statsmodels.base._penalties.L2()``, ``PseudoHuber(0.3)``, ...): its ``alpha`` is
        set to ``alpha`` and the model is fitted with ``fit(fe_pen=method)``, statsmodels' penalised profile
        likelihood (the penalty at the GLS fixed effects enters the covariance estimate).

        Difference from statsmodels (deliberate): ``llf`` and ``params_object`` of an L1 result use the
        profile-scale covariance and the variance components (statsmodels passes the scaled ``cov_re``
        and drops ``vcomp``, so its ``llf`` there is not the model's log-likelihood).
        """
        from .results import MixedLMResults

        if not isinstance(method, str):
            if not is_penalty(method):
                raise ModelSpecError(
                    "method must be 'l1' or a penalty object with func(params) and deriv(params) (e.g. "
                    f"statsmodels.base._penalties.L2()); got {type(method).__name__}."
                )
            method.alpha = alpha
            fit_kwargs["fe_pen"] = method
            return self.fit(start_params=start_params, **fit_kwargs)
        if method.lower() != "l1":
            raise ModelSpecError(f"Invalid regularization method {method!r}: use 'l1' or a penalty object.")
        alpha = np.full(self.k_fe, float(alpha)) if np.isscalar(alpha) else np.asarray(alpha, dtype=float)
        mdf = self.fit(start_params=start_params, **fit_kwargs)
        lik = self.likelihood()
        state = lik.solve(mdf._theta, self.reml)
        G = state.R_X.T @ state.R_X / mdf.scale
        bhat = state.beta
        fe = np.asarray(mdf.fe_params, dtype=float).copy()
        for _ in range(maxit):
            old = fe.copy()
            for j in range(self.k_fe):
                if abs(fe[j]) < ceps:
                    continue
                fe[j] = 0.0
                a = G[j, j]
                b = 2.0 * float(G[j] @ (fe - bhat))
                if b > alpha[j]:
                    fe[j] = -(b - alpha[j]) / (2 * a)
                elif b < -alpha[j]:
                    fe[j] = -(b + alpha[j]) / (2 * a)
            if np.abs(old - fe).max() < ptol:
                break
        return MixedLMResults._regularized(mdf, fe, ceps)

    def get_distribution(self, params, scale, exog=None) -> MixedLMDistribution:
        """A generator of responses from the model at ``params`` (packed with fixed effects, non-square-root,
        covariances divided by ``scale``) and residual variance ``scale``; ``exog`` replaces the fixed-effects
        covariates. Use ``.rvs(n, rng=...)``."""
        if self._data_removed:
            raise DataError("This model's data were removed (results.remove_data()); refit to simulate.")
        return MixedLMDistribution(self, params, scale, exog)

    def __repr__(self) -> str:
        return (
            f"<sparselmm.MixedLM n={self.nobs}, groups={self.n_groups}, k_fe={self.k_fe}, k_re={self.k_re}, "
            f"k_vc={self.k_vc}>"
        )

    def __getstate__(self):
        """Pickle with the formula's namespace reduced to what pickles (modules by name; a lambda or local
        function the formula calls is left out and named by :meth:`results.predict` if it is needed) and
        the engine's CHOLMOD factors re-analysed on first use (:mod:`sparselmm._pickling`)."""
        from .._pickling import picklable_namespace

        state = dict(self.__dict__)
        state["_context"], dropped = picklable_namespace(self._context)
        state["_context_dropped"] = dropped
        return state

    def __setstate__(self, state):
        from .._pickling import restore_namespace

        self.__dict__.update(state)
        self._context = restore_namespace(self._context)


_PLAIN_FACTOR = re.compile(r"^(?:C\((?P<c>[A-Za-z_][A-Za-z0-9_]*)\)|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))$")


def _indicator_columns(term, data: pd.DataFrame, context) -> tuple[sp.coo_matrix, list[str]] | None:
    """The columns formulaic makes of a term of plain categorical factors (``C(s)``, ``C(a):C(b)``, a bare
    categorical or string column), built directly; None for any other term (formulaic builds those).

    formulaic's full-rank dummy coding of such a term (no intercept) has one column per combination of
    levels — each factor's levels in category order, else sorted; the first factor varying fastest — named
    ``"C(a)[x]:C(b)[y]"``. Only the combinations that occur are returned (the others are all-zero and the
    variance component drops them anyway). formulaic builds these columns one sparse slice at a time:
    0.5 s of the 0.6 s set-up of InstEval's statsmodels-style crossed model, against 0.02 s here.
    tests/test_mixedlm.py checks the two agree column for column and name for name.
    """
    if context and context.get("C") is not None:  # the caller's own C() would be used instead of formulaic's
        return None
    n = len(data)
    col = np.zeros(n, dtype=np.int64)
    stride = 1
    factors = []
    for factor in term.factors:
        m = _PLAIN_FACTOR.match(factor.expr)
        name = None if m is None else (m.group("c") or m.group("bare"))
        if name is None or name not in data.columns:
            return None
        s = data[name]
        if isinstance(s.dtype, pd.CategoricalDtype):
            levels = list(s.cat.categories)
            codes = s.cat.codes.to_numpy().astype(np.int64)
        else:
            kind = pd.api.types.infer_dtype(s, skipna=False)
            allowed = ("string",) if m.group("bare") else ("string", "integer", "boolean", "floating")
            if kind not in allowed:
                return None
            levels = sorted(pd.unique(s))
            codes = pd.Categorical(s, categories=levels).codes.astype(np.int64)
        if (codes < 0).any() or not levels:
            return None
        col += stride * codes
        stride *= len(levels)
        factors.append((factor.expr, levels))
    used, inverse = unique_codes(col, stride)
    names = []
    for c in used:
        parts = []
        for expr, levels in factors:
            parts.append(f"{expr}[{levels[c % len(levels)]}]")
            c //= len(levels)
        names.append(":".join(parts))
    F = sp.coo_matrix((np.ones(n), (np.arange(n), inverse.ravel())), shape=(n, used.size))
    return F, names


def _moment_start(lik: Likelihood) -> np.ndarray:
    """lme4's moment start (:func:`sparselmm.start.moment_start`) for the facade's design.

    ``moment_start`` recognises a random intercept by lme4's column name; the facade names the group's
    columns the statsmodels way (``"Group"``, the group column's name, ``x_re1``), so a group term whose
    single column is all ones is presented to it as the intercept it is. (From statsmodels' start, θ = 1,
    a gradient fit of statsmodels' test model lme05 stopped at the stationary point θ = 0.)
    """
    from types import SimpleNamespace

    design = lik.design
    terms = []
    for t in design.terms:
        if t.Zt_block is None and t.k == 1 and np.all(t.z == 1.0):
            t = SimpleNamespace(
                Zt_block=None, cnms=["Intercept"], refs=t.refs, n_levels=t.n_levels, group_name=t.group_name
            )
        terms.append(t)
    return moment_start(SimpleNamespace(theta0=design.theta0, terms=terms, y=design.y))


class _statsmodels_warnings:
    """Re-emit the engine's warnings as the facade's classes, which statsmodels users filter on.

    ``SingularFitWarning`` becomes :class:`SingularCovarianceWarning` (also statsmodels'
    ``SingularMatrixWarning``, worded as statsmodels words it); ``ConvergenceWarning`` becomes
    :class:`MixedLMConvergenceWarning` (also statsmodels' ``ConvergenceWarning``); others pass unchanged.
    """

    def __enter__(self):
        self._cm = warnings.catch_warnings(record=True)
        self._caught = self._cm.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._cm.__exit__(*exc)
        for w in self._caught:
            msg, cat = str(w.message), w.category
            if issubclass(cat, SingularFitWarning) and not issubclass(cat, SingularCovarianceWarning):
                msg = (
                    "The random effects covariance matrix is singular: a variance is estimated as zero or a "
                    f"correlation as +-1 ({msg}; lme4's rule, a Cholesky-factor diagonal below 1e-4)."
                )
                cat = SingularCovarianceWarning
            elif issubclass(cat, ConvergenceWarning) and not issubclass(cat, MixedLMConvergenceWarning):
                cat = MixedLMConvergenceWarning
            warnings.warn(msg, cat, stacklevel=caller_stacklevel())
        return False


def _optimize_free(f, x0, lower, optimizer, control, to_theta):
    """``optimize_theta`` over the free parameters (it never returns a point worse than one it evaluated,
    NLopt's "roundoff limited" stop included), mapped back to θ. ``control["progress"]`` (``fit(disp=True)``)
    reports the evaluations."""
    control = dict(control)
    progress = control.pop("progress", None)
    x, fx, info = optimize_theta(f, x0, lower, optimizer, control, check_conv=False, progress=progress)
    return to_theta(np.array(x, dtype=float)), fx, info


class MixedLMDistribution:
    """Draws from a mixed linear model at given parameters (``MixedLM.get_distribution``), as statsmodels'
    ``_mixedlm_distribution``: ``rvs`` draws the group random effects, then each variance component's
    coefficients group by group, then the residuals, in statsmodels' order (same draws for the same
    generator), vectorised over the groups.

    ``params`` are packed with the fixed effects and in the plain (non-square-root) parameterisation, with
    the covariance parameters divided by ``scale`` (as ``MixedLMResults.params``).
    """

    def __init__(self, model, params, scale, exog=None):
        params = np.asarray(params, dtype=float).ravel()
        need = model.k_fe + model.k_re2 + model.k_vc
        if params.size != need:
            raise ModelSpecError(
                f"params must have {need} values (fixed effects, cov_re lower triangle, variance components), "
                f"not {params.size}."
            )
        if not np.isfinite(scale) or scale <= 0:
            raise ModelSpecError(f"scale must be a positive number, not {scale!r}.")
        self.model = model
        self.exog = model.exog if exog is None else np.asarray(exog, dtype=float)
        if self.exog.ndim == 1:
            self.exog = self.exog[:, None]
        if self.exog.shape != (model.nobs, model.k_fe):
            raise DataError(
                f"exog must have {model.nobs} rows (one per observation of the model) and {model.k_fe} columns, "
                f"not shape {self.exog.shape}."
            )
        po = MixedLMParams.from_packed(params, model.k_fe, model.k_re, False, True)
        self.fe_params = po.fe_params
        self.cov_re = scale * po.cov_re
        self.vcomp = scale * po.vcomp
        self.scale = float(scale)
        self._T = psd_factor(self.cov_re)
        if self._T is None or np.any(self.vcomp < 0):
            raise ModelSpecError("params must give a positive semi-definite cov_re and non-negative vcomp.")
        self.group_idx = model._codes

    def rvs(self, n=None, rng=None, random_state=None):
        """A simulated response vector (``n`` is ignored, as in statsmodels). ``rng``: None, a seed, a
        ``numpy.random.Generator`` or ``RandomState`` (``random_state`` is statsmodels' deprecated name)."""
        if rng is None:
            rng = random_state
        rng = _check_random_state(rng)
        model = self.model
        y = self.exog @ self.fe_params
        if model.k_re:
            u = rng.normal(size=(model.n_groups, model.k_re)) @ self._T.T
            y = y + (u[self.group_idx, :] * model.exog_re).sum(1)
        for blk, v in zip(model._vc_blocks, self.vcomp):
            y = y + np.sqrt(v) * (blk.matrix @ rng.normal(size=blk.matrix.shape[1]))
        return y + np.sqrt(self.scale) * rng.normal(size=y.size)


def _check_random_state(rng):
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, np.random.Generator | np.random.RandomState):
        return rng
    try:
        return np.random.default_rng(rng)
    except (TypeError, ValueError):
        raise ModelSpecError(
            f"rng must be None, a seed, a numpy Generator or RandomState, not {type(rng).__name__}."
        ) from None


def mixedlm(
    formula, data, re_formula=None, vc_formula=None, subset=None, use_sparse=False, missing="none", *args, **kwargs
):
    """Formula interface, as ``statsmodels.formula.api.mixedlm``; see :meth:`MixedLM.from_formula`."""
    if kwargs.get("eval_env") is None:
        kwargs["eval_env"] = _formula_context(None)  # this function's caller
    return MixedLM.from_formula(formula, data, re_formula, vc_formula, subset, use_sparse, missing, *args, **kwargs)


def _used_namespace(context, formula: str) -> dict | None:
    """The entries of the formula namespace that the fixed-effects formula may read (all ``predict`` needs
    once the design is built), as a plain dict: the caller's other globals are not kept."""
    if context is None:
        return None
    from .._pickling import formula_names

    out = {}
    for name in formula_names([formula]):
        try:
            if name in context:
                out[name] = context[name]
        except Exception:  # a namespace that cannot look the name up
            continue
    return out


def _formula_context(eval_env, _frames: int = 2):
    """The namespace formulas are evaluated in (functions and variables that are not data columns).

    ``None`` or an int ``k``: the locals and globals ``k`` frames above the caller of the public function
    that calls this helper (``_frames`` counts this helper and that function); ``-1``: none; a mapping,
    or an object with a ``namespace`` mapping (patsy's ``EvalEnvironment``), as given.
    """
    from formulaic.utils.context import capture_context

    if eval_env is None:
        eval_env = 0
    if isinstance(eval_env, bool) or not isinstance(eval_env, int | Mapping) and not hasattr(eval_env, "namespace"):
        raise FormulaError(
            f"eval_env must be an int (frames above the caller), -1 (no namespace) or a mapping of names, "
            f"not {type(eval_env).__name__}."
        )
    if isinstance(eval_env, int):
        if eval_env == -1:
            return {}
        if eval_env < -1:
            raise FormulaError(f"eval_env={eval_env} is not a frame offset; use 0 (the caller), 1, ... or -1.")
        depth = _frames + eval_env
        frame = sys._getframe(0)
        for _ in range(depth):
            if frame.f_back is None:
                raise FormulaError(f"eval_env={eval_env} reaches above the outermost frame.")
            frame = frame.f_back
        return capture_context(depth)
    if isinstance(eval_env, Mapping):
        return eval_env
    return eval_env.namespace
