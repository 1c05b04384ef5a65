"""``MixedLMResults``: statsmodels' results interface for a :class:`~sparselmm.statsmodels.model.MixedLM` fit."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import DataError, ModelSpecError, caller_stacklevel
from ..predict import model_matrix
from ._compat import MixedLMConvergenceWarning
from .contrast import ContrastResults, linear_constraints, t_test, wald_test
from .params import MixedLMParams

__all__ = ["MixedLMResults", "load_pickle", "save_pickle"]


class MixedLMResults:
    """Results of :meth:`MixedLM.fit`, with statsmodels' attributes and methods.

    ``params`` are packed on the profile scale (fixed effects, lower triangle of ``cov_re / scale``,
    ``vcomp / scale``); ``cov_re``, ``vcomp`` and ``scale`` are on the data scale; ``bse`` comes from
    the inverse Hessian of the log-likelihood in the non-square-root parameterisation (fixed effects not
    profiled), and ``bse_re = sqrt(scale) * bse[k_fe:]``, exactly as statsmodels defines them. ``llf`` is
    the REML log-likelihood for REML fits (so ``aic`` and ``bic`` are NaN there, as in statsmodels).

    Differences from statsmodels (deliberate): ``random_effects`` are returned also when ``cov_re`` is
    singular (statsmodels raises; the conditional modes are well defined); ``llf`` is computed with the
    REML/ML setting of this fit, not whatever the model was last fitted with. The Hessian behind
    ``normalized_cov_params`` (and so ``bse``, ``cov_params``, ``summary``, the tests) is computed when
    first needed, not in ``fit`` — on InstEval's crossed model it costs about twice the optimisation, as
    ``lmer`` defers its inference to ``summary()`` — so the "Hessian not positive definite" warning appears
    at that first use.
    """

    def __init__(self, model, params, cov_params):
        self.model = model
        self._params_arr = np.asarray(params, dtype=float)
        self._ncp = None if cov_params is None else np.asarray(cov_params, dtype=float)
        self.nobs = model.nobs
        self.df_resid = self.nobs - (np.linalg.matrix_rank(model.exog) if model.k_fe else 0)
        self.k_fe, self.k_re, self.k_re2, self.k_vc = model.k_fe, model.k_re, model.k_re2, model.k_vc
        self.use_sqrt = model.use_sqrt
        self.cov_pen = None
        self.hist = None
        self.optinfo = None
        self._cache: dict = {}

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def _from_theta(cls, model, theta, converged, hist, info):
        lik = model.likelihood()
        reml = model.reml
        state = lik.solve(theta, reml)
        fe = state.beta.copy()
        scale = state.pwrss / lik.residual_df(reml)
        po = lik.params_from_theta(theta, fe)
        res = cls(model, po.get_packed(use_sqrt=False, has_fe=True), None)  # covariance: on first use
        res._set(po, fe, scale, reml, converged, model._freepat, state)
        res._theta, res._state = np.asarray(theta, float).copy(), state
        res.hist, res.optinfo = hist, info
        return res

    @property
    def normalized_cov_params(self) -> np.ndarray:
        """``cov_params() / scale``: the inverse of minus the Hessian of the log-likelihood in the packed
        (non-square-root) parameters, over the free ones (computed on first use)."""
        if self._ncp is None:
            self._ncp = self._covariance_from_hessian()
        return self._ncp

    @normalized_cov_params.setter
    def normalized_cov_params(self, value) -> None:
        self._ncp = np.asarray(value, dtype=float)

    def _covariance_from_hessian(self) -> np.ndarray:
        po, free = self.params_object, self.freepat
        lik = self.model.likelihood()
        hess = lik.hessian(po.fe_params, po.cov_re, po.vcomp, self.reml)  # this fit's REML/ML setting
        hess_diag = np.diag(hess)
        if free is not None:
            pcov = np.zeros_like(hess)
            pat = free.get_packed(use_sqrt=False, has_fe=True)
            ii = np.flatnonzero(pat)
            hess_diag = hess_diag[ii]
            if ii.size:
                pcov[np.ix_(ii, ii)] = _inv(-hess[np.ix_(ii, ii)])
        else:
            pcov = _inv(-hess)
        if np.any(hess_diag >= 0) or np.any(~np.isfinite(hess_diag)):
            warnings.warn(
                "The Hessian matrix at the estimated parameter values is not positive definite.",
                MixedLMConvergenceWarning,
                stacklevel=caller_stacklevel(),
            )
        return pcov / self.scale

    def _set(self, po, fe, scale, reml, converged, free, state=None):
        self.params_object = po
        self._fe = np.asarray(fe, float)
        self.scale = float(scale)
        self._cov_re_unscaled = np.asarray(po.cov_re, float)
        self._cov_re = self.scale * self._cov_re_unscaled
        self.vcomp = self.scale * np.asarray(po.vcomp, float)
        self.reml = bool(reml)
        self.method = "REML" if reml else "ML"
        self.converged = bool(converged)
        self.freepat = free
        model = self.model
        lik = model.likelihood()
        self.cov_pen = model.cov_pen
        if state is not None:  # the fit's own solution (the same θ): no second factorisation
            self.llf = lik.loglike_state(state, self.reml, beta=fe)
        else:
            self.llf = lik.loglike(po.cov_re, po.vcomp, self.reml, beta=fe)
        if model.fe_pen is not None or model.cov_pen is not None:  # statsmodels' llf includes the penalties
            self.llf -= model._penalty(fe, po.cov_re)

    @classmethod
    def _regularized(cls, mdf, fe, ceps):
        model = mdf.model
        params = mdf._params_arr.copy()
        params[: model.k_fe] = fe
        po = mdf.params_object.copy()
        po.fe_params = fe.copy()
        scale = model.get_scale(fe, po.cov_re, po.vcomp)
        hess, _ = model.hessian(po)
        pcov = np.full_like(hess, np.nan)
        ii = np.abs(params) > ceps
        ii[model.k_fe :] = True
        ii = np.flatnonzero(ii)
        pcov[np.ix_(ii, ii)] = _inv(-hess[np.ix_(ii, ii)])
        res = cls(model, params, pcov / scale)
        res._set(po, fe, scale, mdf.reml, True, None)
        res._cov_re, res.vcomp = mdf._cov_re.copy(), mdf.vcomp.copy()  # statsmodels keeps the unpenalised ones
        res._theta = mdf._theta
        res._state = mdf._state
        res.method = mdf.method
        return res

    # ---- pandas wrapping (pandas in, pandas out, as statsmodels' wrapper) -------------------------
    def _series(self, values, names):
        return pd.Series(values, index=list(names)) if self.model._use_pandas else np.asarray(values)

    def _frame(self, values, rows, cols):
        return pd.DataFrame(values, index=list(rows), columns=list(cols)) if self.model._use_pandas else values

    @property
    def param_names(self) -> list[str]:
        """Names of :attr:`params`: the fixed effects, then ``"g Var"``, ``"g x x Cov"``, … of ``cov_re``
        and the variance components' names."""
        return list(self.model.param_names)

    @property
    def params(self):
        """The packed parameters, as statsmodels packs them: the fixed effects, then the lower triangle of
        :attr:`cov_re_unscaled` (``cov_re / scale``) and the variance components over ``scale``."""
        return self._series(self._params_arr, self.param_names)

    @property
    def fe_params(self):
        """The fixed-effects estimates, named by ``exog``'s columns."""
        return self._series(self._fe, self.model.exog_names)

    @fe_params.setter
    def fe_params(self, value):
        self._fe = np.asarray(value, float)

    @property
    def cov_re(self):
        """Covariance matrix of the group's random effects (on the data's scale)."""
        names = self.model.exog_re_names
        return self._frame(self._cov_re, names, names)

    @property
    def cov_re_unscaled(self):
        """:attr:`cov_re` divided by the residual variance ``scale``."""
        names = self.model.exog_re_names
        return self._frame(self._cov_re_unscaled, names, names)

    # ---- inference ------------------------------------------------------------------------------
    def cov_params(self, r_matrix=None, column=None, scale=None, cov_p=None, other=None):
        """Covariance of the packed parameters (``normalized_cov_params * scale``), or of ``R params``."""
        cov = self.normalized_cov_params * (self.scale if scale is None else scale) if cov_p is None else cov_p
        if column is not None:
            column = np.atleast_1d(column)
            return cov[column][:, column] if column.size > 1 else cov[column[0], column[0]]
        if r_matrix is not None:
            R = np.atleast_2d(np.asarray(r_matrix, float))
            O = R if other is None else np.atleast_2d(np.asarray(other, float))
            return R @ cov @ O.T
        return self._frame(cov, self.param_names, self.param_names)

    def _cov(self) -> np.ndarray:
        return self.normalized_cov_params * self.scale

    @property
    def bse(self):
        """Standard errors of :attr:`params`, from the inverse Hessian of the log-likelihood (statsmodels'
        definition; computed on first use)."""
        with np.errstate(invalid="ignore"):
            return self._series(np.sqrt(np.diag(self._cov())), self.param_names)

    @property
    def bse_fe(self):
        """Standard errors of the fixed effects."""
        p = self.k_fe
        return self._series(np.sqrt(np.diag(self._cov())[:p]), self.model.exog_names)

    @property
    def bse_re(self):
        """Standard errors of the variance parameters as statsmodels defines them: ``sqrt(scale ·
        diag(cov_params))`` over the lower triangle of ``cov_re`` and the variance components (the column
        the summary prints beside them)."""
        p = self.k_fe
        with np.errstate(invalid="ignore"):
            return self._series(np.sqrt(self.scale * np.diag(self._cov())[p:]), self.param_names[p:])

    @property
    def tvalues(self):
        """z statistics ``params / bse`` (normal reference, as statsmodels)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self._series(self._params_arr / np.sqrt(np.diag(self._cov())), self.param_names)

    @property
    def pvalues(self):
        """Two-sided p-values of :attr:`tvalues` from the standard normal distribution."""
        t = np.asarray(self.tvalues, float)
        return self._series(2 * stats.norm.sf(np.abs(t)), self.param_names)

    def conf_int(self, alpha=0.05, cols=None):
        """Normal (Wald) confidence intervals of the packed parameters."""
        q = stats.norm.ppf(1 - alpha / 2)
        se = np.sqrt(np.diag(self._cov()))
        ci = np.column_stack([self._params_arr - q * se, self._params_arr + q * se])
        names = self.param_names
        if cols is not None:
            ci, names = ci[list(cols)], [names[i] for i in cols]
        return self._frame(ci, names, [0, 1])

    @property
    def aic(self):
        """Akaike information criterion (NaN for REML fits, as statsmodels)."""
        if self.reml:
            return np.nan
        return -2 * (self.llf - self._df_model())

    @property
    def bic(self):
        """Bayesian information criterion (NaN for REML fits, as statsmodels)."""
        if self.reml:
            return np.nan
        return -2 * self.llf + np.log(self.nobs) * self._df_model()

    def _df_model(self) -> float:
        if self.freepat is not None:
            return float(self.freepat.get_packed(use_sqrt=False, has_fe=True).sum() + 1)
        return float(self._params_arr.size + 1)

    def t_test(self, r_matrix, use_t=None) -> ContrastResults:
        """z-tests (t-tests with ``use_t=True``) of linear combinations of the fixed effects;
        ``r_matrix`` has one column per fixed effect."""
        R = np.atleast_2d(np.asarray(r_matrix, float))
        if R.shape[1] != self.k_fe:
            raise ModelSpecError(f"r_matrix for t-test should have {self.k_fe:d} columns")
        R = np.hstack([R, np.zeros((R.shape[0], self.k_re2 + self.k_vc))])
        return t_test(self._params_arr, self._cov(), R, None, bool(use_t), self.df_resid)

    def wald_test(self, r_matrix, cov_p=None, invcov=None, use_f=None, df_constraints=None, scalar=None):
        """Joint Wald test of ``R params = q`` (array, ``(R, q)`` tuple, or a string such as
        ``"x1 = 0, x2 = x3"`` over ``param_names``); chi² by default, F with ``use_f=True``."""
        R, q = linear_constraints(r_matrix, self.param_names)
        cov = self._cov() if cov_p is None else np.asarray(cov_p, float)
        return wald_test(self._params_arr, cov, R, q, bool(use_f), self.df_resid, invcov)

    def f_test(self, r_matrix, cov_p=None, invcov=None):
        """F test of ``R params = q`` (see :meth:`wald_test`)."""
        return self.wald_test(r_matrix, cov_p=cov_p, invcov=invcov, use_f=True)

    # ---- denominator degrees of freedom (lmerTest's methods, on request) --------------------------
    def _lmer_view(self):
        """This fit as sparselmm's lme4-side inference sees it: θ̂, the deviance function, β̂ and
        lme4's conditional ``vcov`` (``σ² (R_XᵀR_X)⁻¹``, not statsmodels' joint-Hessian ``cov_params``)."""
        if "lmer_view" not in self._cache:
            lik = self.model.likelihood()
            dev = lik.devfun(self.reml)
            state = dev.solve(self._theta)
            self._cache["lmer_view"] = _LmerView(dev, state, self._theta, self.scale, self.reml, self.model.exog_names)
        return self._cache["lmer_view"]

    def coef_table(self, ddf: str = "Satterthwaite") -> pd.DataFrame:
        """lmerTest's fixed-effects table: Estimate, Std. Error, df, t value, Pr(>|t|).

        statsmodels' own ``summary``, ``bse``, ``tvalues``, ``pvalues`` and ``t_test`` stay z-based (its
        contract); this is the opt-in to Satterthwaite's or Kenward–Roger's (REML only) denominator df,
        computed exactly as for :meth:`sparselmm.LmerResult.coef_table`. Standard errors here are lme4's
        (conditional on θ̂), so they differ slightly from ``bse_fe``.
        """
        from ..inference.contest import coef_table

        return coef_table(self._lmer_view(), ddf)

    def contest(self, L, ddf: str = "Satterthwaite", joint: bool = True, rhs=0.0, level: float = 0.95):
        """t or F test of ``L fe_params = rhs`` with Satterthwaite or Kenward–Roger df (lmerTest's
        ``contest``; ``L`` has one column per fixed effect)."""
        from ..inference.contest import contest

        return contest(self._lmer_view(), L, ddf=ddf, joint=joint, rhs=rhs, level=level)

    # ---- random effects and fitted values --------------------------------------------------------
    def _modes(self) -> np.ndarray:
        if "b" not in self._cache:
            lik = self.model.likelihood()
            dev = lik.devfun(self.reml)
            st = dev.solve(self._theta)
            st.beta = self._fe.copy()  # conditional modes at the reported fixed effects
            u = dev.spherical_modes(st)
            self._cache["b"] = dev.Lambda_times(dev.factors(self._theta), u)
        return self._cache["b"]

    def _group_columns(self, g: int) -> np.ndarray:
        """Positions in ``Z``'s columns of group ``g``'s random effects (group term, then components)."""
        s = self.model.likelihood().structure
        cols = []
        if s.re_term is not None:
            t = s.re_term
            cols.append(t.offset + g * t.k + np.arange(t.k))
        for t, blk in zip(s.vc_terms, self.model._vc_blocks):
            cols.append(t.offset + np.flatnonzero(blk.col_group == g))
        return np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)

    def _re_names(self, g: int) -> list[str]:
        names = list(self.model.exog_re_names)
        for blk in self.model._vc_blocks:
            names.extend(f"{blk.name}[{c}]" for c in blk.colnames[g])
        return names

    def _need_data(self):
        if self.model._data_removed:
            raise DataError("The data were removed (remove_data()); refit the model to compute this.")

    @property
    def random_effects(self) -> dict:
        """Conditional means (BLUPs) of each group's random effects: a dict group → Series, named as
        statsmodels names them (``exog_re`` names, then ``"vc[column]"``)."""
        if "re" not in self._cache:
            b = self._modes()
            self._cache["re"] = {
                lab: pd.Series(b[self._group_columns(g)], index=self._re_names(g))
                for g, lab in enumerate(self.model.group_labels)
            }
        return self._cache["re"]

    @property
    def random_effects_cov(self) -> dict:
        """Conditional covariance of each group's random effects given the data (dict group → DataFrame)."""
        if "recov" not in self._cache:
            lik = self.model.likelihood()
            dev = lik.devfun(self.reml)
            dev.solve(self._theta)
            Lt = lik.design.Lambdat(self._theta).tocsc()
            out = {}
            for g, lab in enumerate(self.model.group_labels):
                cols = self._group_columns(g)
                M = dev.chol.solve_L(Lt[:, cols].toarray())
                names = self._re_names(g)
                out[lab] = pd.DataFrame(self.scale * (M.T @ M), index=names, columns=names)
            self._cache["recov"] = out
        return self._cache["recov"]

    def _index(self):
        self._need_data()
        idx = self.model._row_index
        return idx if idx is not None else pd.RangeIndex(self.nobs)

    @property
    def fittedvalues(self):
        """Fixed effects plus the predicted random effects."""
        Zt = self.model.likelihood().design.Zt
        fit = self.model.exog @ self._fe + Zt.T @ self._modes()
        return pd.Series(fit, index=self._index()) if self.model._use_pandas else fit

    @property
    def resid(self):
        """``endog − fittedvalues``."""
        r = self.model.endog - np.asarray(self.fittedvalues)
        return pd.Series(r, index=self._index()) if self.model._use_pandas else r

    def predict(self, exog=None, transform=True, *args, **kwargs):
        """Fixed-effects predictions; ``exog`` is a DataFrame run through the formula when the model came
        from a formula (``transform=True``), else an array of fixed-effects covariates."""
        model = self.model
        index = None
        if exog is None:
            self._need_data()
            X = model.exog
            index = self._index() if model._use_pandas else None
        elif transform and model._fixed_spec is not None and isinstance(exog, pd.DataFrame | dict):
            frame = pd.DataFrame(exog)
            try:  # a factor level not seen in fitting is a DataError naming the column, as R and patsy refuse it
                X = model_matrix(model._fixed_spec, frame, "the fixed-effects matrix", context=model._context)
            except DataError as err:
                lost = getattr(model, "_context_dropped", None)
                if not lost:
                    raise
                raise ModelSpecError(
                    f"{err} (the formula's namespace lost {lost} when the model was pickled: they do not pickle; "
                    "define them with def at module level)"
                ) from None
            index = frame.index
        else:
            X = np.asarray(exog, dtype=float)
            if X.ndim == 1:
                X = X[None, :] if X.size == model.k_fe else X[:, None]
            index = exog.index if isinstance(exog, pd.DataFrame) else None
        pred = X @ self._fe
        return pd.Series(pred, index=index) if index is not None else pred

    # ---- profile likelihood --------------------------------------------------------------------------
    def profile_re(self, re_ix, vtype, num_low=5, dist_low=1.0, num_high=5, dist_high=1.0, **fit_kwargs):
        """Profile likelihood of one variance parameter: refits with it held fixed over a grid.

        Returns an array with columns (variance on the data scale, log-likelihood), as statsmodels.
        """
        if vtype not in ("re", "vc"):
            raise ModelSpecError(f"vtype must be 're' or 'vc', not {vtype!r}")
        model = self.model
        po = self.params_object.copy()
        if vtype == "re":
            i = int(re_ix)
            ru0 = po.cov_re[i, i]
            value = self._cov_re[i, i]
        else:
            if re_ix not in model.vcomp_names:
                raise ModelSpecError(f"re_ix={re_ix!r} is not a variance component; choose from {model.vcomp_names}.")
            i = model.vcomp_names.index(re_ix)
            ru0 = po.vcomp[i]
            value = self.vcomp[i]
        low = (value - dist_low) / self.scale
        high = (value + dist_high) / self.scale
        if low <= 0:
            raise ModelSpecError("dist_low is too large and would result in a negative variance. Try a smaller value.")
        rvalues = np.concatenate([np.linspace(low, ru0, num_low + 1), np.linspace(ru0, high, num_high + 1)[1:]])
        free = MixedLMParams(model.k_fe, model.k_re, model.k_vc)
        if self.freepat is None:
            free.cov_re, free.vcomp = np.ones((model.k_re, model.k_re)), np.ones(model.k_vc)
        else:
            free.cov_re = np.array(self.freepat.cov_re, float)
            free.vcomp = np.array(self.freepat.vcomp, float)
        if vtype == "re":
            free.cov_re[i, i] = 0
        else:
            free.vcomp[i] = 0
        lik = model.likelihood()
        optimizer = model._optimizer_name(fit_kwargs.pop("method", None))
        out = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for x in rvalues:
                if vtype == "re":
                    po.cov_re[i, i] = x
                else:
                    po.vcomp[i] = x
                theta, _, _ = model._minimize_deviance(po, self.reml, free, optimizer, {}, use_sqrt=False)
                st = lik.solve(theta, self.reml)
                out.append([x * st.pwrss / lik.residual_df(self.reml), lik.loglike_state(st, self.reml)])
        return np.asarray(out)

    # ---- summary ---------------------------------------------------------------------------------------
    def summary(self, yname=None, xname_fe=None, xname_re=None, title=None, alpha=0.05):
        """statsmodels' summary: a ``statsmodels.iolib.summary2.Summary`` when statsmodels is installed
        (``tables``, ``as_text()``, ``as_latex()``, ``as_html()``), else a look-alike with the same
        methods and text."""
        from .summary import mixedlm_summary

        return mixedlm_summary(self, yname, xname_fe, xname_re, title, alpha)

    def remove_data(self):
        """Drop the data arrays and the factorisation built from them, from the results and the model, as
        statsmodels' ``remove_data`` (to keep a small object). ``params``, ``bse``, ``cov_params``, ``llf``,
        ``summary()``, the tests and ``predict(exog)`` keep working; anything that needs the data (random
        effects, fitted values, ``loglike``, refits) then raises :class:`~sparselmm.DataError`."""
        self.normalized_cov_params  # noqa: B018 - computed now: bse, summary and tests need it afterwards
        # what summary() and the scale-dependent attributes need is already stored on the results
        self.model._remove_data()
        self._state = None
        self._cache.clear()

    def __repr__(self) -> str:
        return f"<sparselmm MixedLMResults ({self.method}), llf={self.llf:.4f}, nobs={self.nobs}>"

    def __getstate__(self):
        state = dict(self.__dict__)
        cache = dict(self._cache)
        cache.pop("lmer_view", None)  # holds a deviance function; rebuilt on first use
        state["_cache"] = cache
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    def save(self, fname, remove_data: bool = False) -> None:
        """Pickle the results to ``fname`` (a path or a binary file handle), as statsmodels' ``save``;
        ``remove_data=True`` calls :meth:`remove_data` first. Read back with :meth:`load` or
        :func:`sparselmm.statsmodels.load_pickle`."""
        if remove_data:
            self.remove_data()
        save_pickle(self, fname)

    @classmethod
    def load(cls, fname):
        """Load pickled results (statsmodels' ``load``). Unpickling runs code: only load files you trust."""
        return load_pickle(fname)


def save_pickle(obj, fname) -> None:
    """Pickle ``obj`` to ``fname`` (a path or a binary file handle), as ``statsmodels.iolib.smpickle.save_pickle``."""
    import pickle

    if hasattr(fname, "write"):
        pickle.dump(obj, fname, protocol=-1)
        return
    with open(fname, "wb") as fh:
        pickle.dump(obj, fh, protocol=-1)


def load_pickle(fname):
    """Load a pickled model or results from ``fname`` (a path or a binary file handle), as statsmodels'
    ``load_pickle``. Unpickling runs code: never load a file from an untrusted source."""
    import pickle

    if hasattr(fname, "read"):
        return pickle.load(fname)
    with open(fname, "rb") as fh:
        return pickle.load(fh)


def _inv(A: np.ndarray) -> np.ndarray:
    if A.size == 0:
        return A.copy()
    try:
        return np.linalg.inv(A)
    except np.linalg.LinAlgError:
        warnings.warn(
            "The Hessian is singular; using its pseudo-inverse for the covariance.",
            MixedLMConvergenceWarning,
            stacklevel=caller_stacklevel(),
        )
        return np.linalg.pinv(A)


class _LmerView:
    """The attributes of an :class:`~sparselmm.LmerResult` that :mod:`sparselmm.inference` reads."""

    def __init__(self, devfun, state, theta, scale, reml, names):
        self.deviance_function = devfun
        self.design = devfun.design
        self.theta = np.asarray(theta, float).copy()
        self.sigma = float(np.sqrt(scale))
        self.reml = bool(reml)
        self.fixef = pd.Series(state.beta.copy(), index=list(names))
        Ri = np.linalg.inv(state.R_X) if state.R_X.size else np.zeros((0, 0))
        self.vcov = pd.DataFrame(scale * Ri @ Ri.T, index=list(names), columns=list(names))
