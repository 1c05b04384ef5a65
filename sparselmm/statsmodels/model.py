"""``MixedLM``: statsmodels' group-wise linear mixed model API, fitted by the sparse engine."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from ..design import independent_columns
from ..errors import DataError, ModelSpecError, SparseLMMError, caller_stacklevel
from . import fitting
from ._compat import UnidentifiableWarning
from .data import ModelData
from .distribution import MixedLMDistribution
from .from_formula import formula_arguments, formula_context
from .likelihood import Likelihood
from .params import MixedLMParams, VCSpec, convert_vc_dict
from .structure import VCBlock, build_structure, encode_groups, exog_names, vc_block_from_spec

__all__ = ["MixedLM", "MixedLMDistribution", "UnsupportedOptionError", "mixedlm"]

# what remove_data() drops: the data, the engine built from them, and the per-row and per-group indices
_DATA_ATTRIBUTES = (
    "endog",
    "exog",
    "exog_re",
    "groups",
    "data_frame",
    "_lik",
    "_group_rows",
    "row_indices",
    "_codes",
    "_row_index",
    "_vc_blocks",
    "_exog_vc",
)


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
        context = formula_context(kwargs.pop("eval_env", None))
        use_sqrt = kwargs.pop("use_sqrt", True)
        if kwargs:
            raise ModelSpecError(f"Unknown keyword argument(s) {sorted(kwargs)} for MixedLM.from_formula.")
        arrays, options = formula_arguments(formula, data, groups, re_formula, vc_formula, subset, missing, context)
        return cls(*arrays, use_sqrt=use_sqrt, **options)

    # ---- fitting (sparselmm.statsmodels.fitting) -------------------------------------------------
    fit = fitting.fit
    fit_regularized = fitting.fit_regularized
    # for MixedLMResults.profile_re, which reaches the fit through its model (it does not import fitting)
    _minimize_deviance = fitting.minimize_deviance
    _optimizer_name = staticmethod(fitting.optimizer_name)

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
        return lik.rss(st, fe_params) / lik.residual_df(self.reml)

    def get_distribution(self, params, scale, exog=None) -> MixedLMDistribution:
        """A generator of responses from the model at ``params`` (packed with fixed effects, non-square-root,
        covariances divided by ``scale``) and residual variance ``scale``; ``exog`` replaces the fixed-effects
        covariates. Use ``.rvs(n, rng=...)``."""
        if self._data_removed:
            raise DataError("This model's data were removed (results.remove_data()); refit to simulate.")
        return MixedLMDistribution(self, params, scale, exog)

    def _remove_data(self) -> None:
        """Drop the data arrays, the factorisation built from them and every per-row index (``results.remove_data``)."""
        for name in _DATA_ATTRIBUTES:
            setattr(self, name, None)
        self._data_removed = True
        self.data._remove()

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


def mixedlm(
    formula, data, re_formula=None, vc_formula=None, subset=None, use_sparse=False, missing="none", *args, **kwargs
):
    """Formula interface, as ``statsmodels.formula.api.mixedlm``; see :meth:`MixedLM.from_formula`."""
    if kwargs.get("eval_env") is None:
        kwargs["eval_env"] = formula_context(None)  # this function's caller
    return MixedLM.from_formula(formula, data, re_formula, vc_formula, subset, use_sparse, missing, *args, **kwargs)
