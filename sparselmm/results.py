"""The fitted model returned by :func:`sparselmm.lmer`: estimates, random effects, prediction, summary."""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .design import Design
from .deviance import PLSState, ProfiledDeviance
from .errors import DataError
from .optimize import SINGULAR_TOL, OptInfo, is_singular
from .predict import linear_predictor

__all__ = ["LmerResult"]


class LmerResult:
    """A linear mixed model fitted by :func:`sparselmm.lmer` (lme4's ``merMod``).

    Attributes
    ----------
    theta : ndarray
        Relative covariance parameters in lme4's order (compare with ``getME(m, "theta")``).
    sigma : float
        Residual standard deviation.
    objective : float
        The optimised criterion: the REML criterion for REML fits, −2 log-likelihood for ML fits.
    optinfo : OptInfo
        What the optimiser did, how long set-up and optimisation took.
    reml : bool
    """

    def __init__(self, devfun: ProfiledDeviance, state: PLSState, optinfo: OptInfo, data_name: str | None = None):
        self._devfun = devfun
        self._design: Design = devfun.design
        self._state = state
        self.optinfo = optinfo
        self.reml = devfun.reml
        self.data_name = data_name
        self.theta = state.theta.copy()
        self.objective = state.deviance
        n, p = self._design.n, self._design.p
        self.sigma = float(np.sqrt(state.pwrss / (n - p if self.reml else n)))
        factors = devfun.factors(self.theta)
        self._u = devfun.spherical_modes(state)
        self._b = devfun.Lambda_times(factors, self._u)
        self._cond_var: list[np.ndarray] | None = None

    # ---- parameters ---------------------------------------------------------------------------
    @property
    def formula(self) -> str:
        return self._design.parsed.formula

    @property
    def fixef(self) -> pd.Series:
        """Fixed-effects estimates, named by model-matrix column."""
        return pd.Series(self._state.beta.copy(), index=self._design.fixed_names, name="fixef")

    @property
    def vcov(self) -> pd.DataFrame:
        """Covariance matrix of the fixed-effects estimates, ``σ² (R_Xᵀ R_X)⁻¹``."""
        names = self._design.fixed_names
        R_inv = np.linalg.inv(self._state.R_X) if names else np.zeros((0, 0))
        return pd.DataFrame(self.sigma**2 * R_inv @ R_inv.T, index=names, columns=names)

    @property
    def bse(self) -> pd.Series:
        """Standard errors of the fixed effects."""
        return pd.Series(np.sqrt(np.diag(self.vcov)), index=self._design.fixed_names, name="se")

    def _term_covariances(self) -> list[np.ndarray]:
        """Per term, the k × k covariance matrix ``σ² T Tᵀ`` of its random effects."""
        return [self.sigma**2 * T @ T.T for T in self._devfun.factors(self.theta)]

    @property
    def varcorr(self) -> pd.DataFrame:
        """Variance components as lme4's ``as.data.frame(VarCorr(m))``.

        One row per variance (``var2`` empty, ``sdcor`` the standard deviation) and per covariance
        (``sdcor`` the correlation), term by term, then the residual.
        """
        rows = varcorr_rows(self._design.terms, self._term_covariances())
        rows.append(("Residual", None, None, self.sigma**2, self.sigma))
        return pd.DataFrame(rows, columns=["group", "var1", "var2", "vcov", "sdcor"])

    # ---- likelihood -----------------------------------------------------------------------
    @property
    def nobs(self) -> int:
        return self._design.n

    @property
    def n_params(self) -> int:
        """Number of estimated parameters: β, θ and σ."""
        return self._design.p + self._design.n_theta + 1

    @property
    def loglik(self) -> float:
        """Log-likelihood (the REML log-likelihood for REML fits, as lme4's ``logLik``)."""
        return -0.5 * self.objective

    @property
    def aic(self) -> float:
        return -2 * self.loglik + 2 * self.n_params

    @property
    def bic(self) -> float:
        return -2 * self.loglik + self.n_params * np.log(self.nobs)

    @cached_property
    def deviance(self) -> float:
        """−2 log-likelihood on the ML scale; for REML fits evaluated at the REML θ (lme4's
        ``deviance(m, REML = FALSE)``)."""
        if not self.reml:
            return self.objective
        ml = ProfiledDeviance(self._design, self._devfun.cross, reml=False, ordering=self._devfun.ordering)
        return ml(self.theta)

    @property
    def df_resid(self) -> int:
        return self.nobs - self.n_params

    @property
    def ngroups(self) -> dict[str, int]:
        """Number of levels of each grouping factor."""
        out: dict[str, int] = {}
        for t in self._design.terms:
            out.setdefault(t.group_name, t.n_levels)
        return out

    def is_singular(self, tol: float = SINGULAR_TOL) -> bool:
        """True when a random-effect variance is (near) zero or a correlation is ±1 (lme4's ``isSingular``)."""
        return is_singular(self.theta, self._design.lower, tol)

    # ---- random effects -------------------------------------------------------------------
    def _cond_var_blocks(self) -> list[np.ndarray]:
        if self._cond_var is None:
            self._devfun.solve(self.theta)  # make sure the factor holds θ̂
            self._cond_var = self._devfun.conditional_variance_blocks(self.theta, self.sigma)
        return self._cond_var

    def ranef(self, cond_var: bool = False) -> dict[str, pd.DataFrame]:
        """Conditional modes of the random effects, one DataFrame per grouping factor (rows: levels).

        With ``cond_var=True`` each frame carries ``attrs["cond_var"]``, an array (levels × k × k) of
        conditional covariances (lme4's ``condVar``; block diagonal across terms on one factor), and
        ``attrs["cond_sd"]``, a DataFrame of conditional standard deviations.
        """
        grouped: dict[str, list[int]] = {}
        for i, t in enumerate(self._design.terms):
            grouped.setdefault(t.group_name, []).append(i)
        blocks = self._cond_var_blocks() if cond_var else None
        out = {}
        for name, idx in grouped.items():
            terms = [self._design.terms[i] for i in idx]
            cols, frames = [], []
            for t in terms:
                frames.append(self._b[t.offset : t.offset + t.q].reshape(t.n_levels, t.k))
                cols.extend(t.cnms)
            df = pd.DataFrame(np.hstack(frames), index=terms[0].levels.copy(), columns=cols)
            df.index.name = name
            if blocks is not None:
                k = len(cols)
                cv = np.zeros((len(df), k, k))
                pos = 0
                for i, t in zip(idx, terms):
                    cv[:, pos : pos + t.k, pos : pos + t.k] = blocks[i]
                    pos += t.k
                df.attrs["cond_var"] = cv
                df.attrs["cond_sd"] = pd.DataFrame(np.sqrt(np.einsum("lii->li", cv)), index=df.index, columns=cols)
            out[name] = df
        return out

    def coef(self) -> dict[str, pd.DataFrame]:
        """Per-level coefficients: fixed effects plus the level's random effects (lme4's ``coef``)."""
        fe = self.fixef
        out = {}
        for name, re in self.ranef().items():
            df = pd.DataFrame(np.tile(fe.to_numpy(), (len(re), 1)), index=re.index, columns=fe.index)
            for col in re.columns:
                df[col] = df[col] + re[col] if col in df.columns else re[col]
            out[name] = df
        return out

    # ---- fitted values and prediction -------------------------------------------------------
    def _offset(self) -> np.ndarray:
        off = self._design.offset
        return np.zeros(self.nobs) if off is None else off

    def fitted(self) -> np.ndarray:
        """Fitted values ``Xβ̂ + Zb̂ + offset``."""
        return self._design.X @ self._state.beta + self._design.Zt.T @ self._b + self._offset()

    def residuals(self, type: str = "response") -> np.ndarray:
        """Residuals: ``"response"`` (y − fitted), ``"pearson"`` (× √w) or ``"scaled"`` (pearson / σ)."""
        r = self._design.y - self.fitted()
        if type == "response":
            return r
        w = self._design.weights
        pearson = r if w is None else r * np.sqrt(w)
        if type == "pearson":
            return pearson
        if type == "scaled":
            return pearson / self.sigma
        raise DataError(f"residuals(type={type!r}) is not known; use 'response', 'pearson' or 'scaled'.")

    def predict(self, newdata=None, re_form=None, allow_new_levels: bool = False, offset=None) -> np.ndarray:
        """Predictions, as lme4's ``predict.merMod``.

        Parameters
        ----------
        newdata : DataFrame, optional
            Rows to predict for; the fitted data when omitted.
        re_form : None, "~0" or formula
            Random effects to include: all (None), none (``"~0"``), or those of a formula such as
            ``"~(1 | Subject)"``.
        allow_new_levels : bool
            If True, levels not seen in fitting contribute zero random effect; otherwise they raise.
        offset : str or array-like, optional
            Offset for ``newdata`` (column name or values).
        """
        return linear_predictor(self._design, self._state.beta, self._b, newdata, re_form, allow_new_levels, offset)

    # ---- lme4's getME -----------------------------------------------------------------------
    @property
    def X(self) -> np.ndarray:
        return self._design.X

    @property
    def y(self) -> np.ndarray:
        return self._design.y

    @property
    def Zt(self) -> sp.csc_matrix:
        return self._design.Zt

    @property
    def Z(self) -> sp.csr_matrix:
        return self._design.Zt.T.tocsr()

    @property
    def Lambdat(self) -> sp.csc_matrix:
        return self._design.Lambdat(self.theta)

    @property
    def Lambda(self) -> sp.csc_matrix:
        return self.Lambdat.T.tocsc()

    @property
    def factor(self):
        """The factor of ``Λᵀ ZᵀWZ Λ + I`` at θ̂ (a :class:`sparselmm.factor.Factor`: CHOLMOD or a dense-Schur
        factor, whichever the fit used; ``solve_L``, ``solve_Lt``, ``logdet``)."""
        self._devfun.solve(self.theta)
        return self._devfun.chol

    @property
    def u(self) -> np.ndarray:
        """Spherical random effects ``u`` (``b = Λ u``)."""
        return self._u.copy()

    @property
    def b(self) -> np.ndarray:
        """Random effects on the original scale, in ``Z``'s column order."""
        return self._b.copy()

    @property
    def design(self) -> Design:
        return self._design

    @property
    def deviance_function(self) -> ProfiledDeviance:
        return self._devfun

    def summary(self, ddf: str | None = None):
        """lmerTest-style summary (lme4's layout with df and p-values); print it.

        Parameters
        ----------
        ddf : {None, "Satterthwaite", "Kenward-Roger", "lme4"}
            Denominator degrees of freedom of the t tests: Satterthwaite's (lmerTest's default),
            Kenward–Roger's (REML fits only), or none (lme4's table without df and p-values). The
            default ``None`` is Satterthwaite's while the exact derivatives' dense block (the random
            effects left after eliminating the largest term) has at most
            :data:`sparselmm.summary.AUTO_DDF_MAX_DENSE` rows, and lme4's table (with a note) above,
            where that dense work would cost more than the fit; ask for
            ``ddf="Satterthwaite"`` explicitly to have it there too.
        """
        from .summary import LmerSummary

        return LmerSummary(self, ddf=ddf)

    # ---- inference on the fixed effects (inference/) ------------------------------------------
    def coef_table(self, ddf: str = "Satterthwaite") -> pd.DataFrame:
        """Fixed-effects table of lmerTest's ``summary``: Estimate, Std. Error, df, t value, Pr(>|t|).

        ``ddf="Kenward-Roger"`` uses the adjusted covariance ``Φ_A`` for the standard errors (REML fits
        only); ``ddf="lme4"`` gives lme4's table (no df, no p-values). See :mod:`sparselmm.inference`.
        """
        from .inference.contest import coef_table

        return coef_table(self, ddf)

    def contest(self, L, ddf: str = "Satterthwaite", joint: bool = True, rhs=0.0, level: float = 0.95):
        """Test the contrast ``Lβ = rhs`` (lmerTest's ``contest``): an F test of all rows (``joint=True``)
        or a t test with a confidence interval per row. See :func:`sparselmm.inference.contest.contest`."""
        from .inference.contest import contest

        return contest(self, L, ddf=ddf, joint=joint, rhs=rhs, level=level)

    def anova(self, *others, type=3, ddf: str = "Satterthwaite", **kwargs):
        """lmerTest's F table for the model's fixed-effect terms (types I, II, III), or, given other
        models, lme4's likelihood-ratio table. See :func:`sparselmm.anova`."""
        from .inference.anova import anova

        return anova(self, *others, type=type, ddf=ddf, **kwargs)

    def anova_contrasts(self, type=3) -> dict[str, np.ndarray]:
        """The contrast matrix behind each row of :meth:`anova` (lmerTest's ``show_tests``)."""
        from .inference.contrasts import term_contrasts

        return term_contrasts(self._design, type)

    def __repr__(self) -> str:
        kind = "REML" if self.reml else "ML"
        return f"<LmerResult {self.formula!r} ({kind}), objective={self.objective:.4f}, n={self.nobs}>"

    def __getstate__(self):
        """Pickle without the CHOLMOD factor (it does not pickle): its symbolic analysis is redone on first
        use after unpickling (:mod:`sparselmm._pickling`); everything else is kept as it is."""
        from ._pickling import picklable_devfun

        state = dict(self.__dict__)
        state["_devfun"] = picklable_devfun(self._devfun)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    # ---- confidence intervals, refits, bootstrap (inference/) ----
    def simulate(self, nsim: int = 1, seed=None, use_u: bool = False) -> pd.DataFrame:
        """Responses simulated from the fit (lme4's ``simulate``); n rows × ``nsim`` columns ``sim_1``….
        See :func:`sparselmm.inference.bootstrap.simulate`."""
        from .inference.bootstrap import simulate

        return simulate(self, nsim=nsim, seed=seed, use_u=use_u)

    def refit(self, newresp, check_conv: bool = True, control: dict | None = None) -> LmerResult:
        """The model refitted to a new response from θ̂, reusing the factorisation (lme4's ``refit``).
        See :func:`sparselmm.inference.bootstrap.refit`."""
        from .inference.bootstrap import refit

        return refit(self, newresp, check_conv=check_conv, control=control)

    def refit_ml(self) -> LmerResult:
        """The fit on the ML criterion (lme4's ``refitML``); ``self`` for an ML fit."""
        from .inference.bootstrap import refit_ml

        return refit_ml(self)

    def bootstrap(self, nsim: int, func=None, seed=None, n_jobs: int = 1, progress=None, tol=None, **kwargs):
        """Parametric bootstrap (lme4's ``bootMer``): draws, failures and intervals in a ``BootstrapResult``.
        See :func:`sparselmm.inference.bootstrap.bootstrap`."""
        from .inference.bootstrap import bootstrap

        return bootstrap(self, nsim, func=func, seed=seed, n_jobs=n_jobs, progress=progress, tol=tol, **kwargs)

    def confint(self, parm=None, level: float = 0.95, method: str = "profile", nsim: int = 500, seed=None, **kwargs):
        """Confidence intervals with lme4's names (``.sig01``…, ``.sigma``, fixed effects), by ``"profile"``,
        ``"Wald"`` or ``"boot"`` (lme4's ``confint.merMod``). See :func:`sparselmm.inference.confint.confint`."""
        from .inference.confint import confint

        return confint(self, parm=parm, level=level, method=method, nsim=nsim, seed=seed, **kwargs)

    def drop1(self, test: str = "none", scope=None) -> pd.DataFrame:
        """Each droppable fixed-effect term removed in turn, ML refits, AIC (and with ``test="Chisq"`` the
        LRT); lme4's ``drop1``. See :func:`sparselmm.inference.lrt.drop1`."""
        from .inference.lrt import drop1

        return drop1(self, test=test, scope=scope)

    def bootstrap_lrt(self, larger, nsim: int = 1000, seed=None, n_jobs: int = 1, progress=None):
        """Parametric-bootstrap likelihood-ratio test of this model against a larger one it is nested in
        (pbkrtest's ``PBmodcomp``): rows ``LRT`` (χ²) and ``PBtest``. See
        :func:`sparselmm.inference.lrt.bootstrap_lrt`."""
        from .inference.lrt import bootstrap_lrt

        return bootstrap_lrt(self, larger, nsim=nsim, seed=seed, n_jobs=n_jobs, progress=progress)

    def profile(self, which=None, level: float = 0.95, criterion: str = "ML", progress: bool | None = None, **kwargs):
        """Likelihood profiles of the parameters (lme4's ``profile``): a
        :class:`~sparselmm.inference.profile.Profile` with lme4's ζ table (``.table()``, as
        ``as.data.frame(profile(m))``), intervals (``.confint(level)``), ``.notes`` (non-monotone profiles,
        a newly found lower deviance — reported, never used) and ``.plot()``.

        ``criterion="ML"`` (the default, as lme4): a REML fit is refitted by ML and profiled on −2 log L;
        ``criterion="REML"`` profiles the variance parameters on the REML criterion instead (fixed effects
        have no REML profile). The fit itself is never changed. See
        :func:`sparselmm.inference.profile.profile` (``grid``, ``alphamax``)."""
        from .inference.profile import profile

        return profile(self, which=which, level=level, criterion=criterion, progress=progress, **kwargs)

    # ---- plots (sparselmm.plot; matplotlib, the "plot" extra) ----
    def plot_ranef(self, group=None, level: float = 0.95, **kwargs):
        """Caterpillar plot of the conditional modes with ``level`` intervals from the conditional variances
        (lme4's ``dotplot(ranef(m, condVar = TRUE))``). See :func:`sparselmm.plot.plot_ranef`."""
        from .plot import plot_ranef

        return plot_ranef(self, group=group, level=level, **kwargs)

    def plot_qq_ranef(self, group=None, level: float = 0.95, **kwargs):
        """Normal QQ plot of the conditional modes (lme4's ``qqmath(ranef(m, condVar = TRUE))``).
        See :func:`sparselmm.plot.plot_qq_ranef`."""
        from .plot import plot_qq_ranef

        return plot_qq_ranef(self, group=group, level=level, **kwargs)

    def plot_residuals(self, type: str = "pearson", **kwargs):
        """Residuals against fitted values (lme4's ``plot(m)``). See :func:`sparselmm.plot.plot_residuals`."""
        from .plot import plot_residuals

        return plot_residuals(self, type=type, **kwargs)

    def plot_profile(self, prof=None, which=None, absolute: bool = False, **kwargs):
        """ζ against each parameter (lme4's ``xyplot(profile(m))``) for ``prof`` (default: ``self.profile()``
        of the parameters in ``which``). See :func:`sparselmm.plot.plot_profile`."""
        from .plot import plot_profile

        if prof is None:
            prof = self.profile(which=which)
        return plot_profile(prof, which=which, absolute=absolute, **kwargs)

    # ---- end of confidence intervals, refits, bootstrap ----


def varcorr_rows(terms, covariances) -> list[tuple]:
    """lme4's ``as.data.frame(VarCorr(m))`` rows of the random-effects terms: per term its variances (SD in
    ``sdcor``), then its covariances (correlation in ``sdcor``)."""
    rows = []
    for t, cov in zip(terms, covariances):
        sd = np.sqrt(np.diag(cov))
        for i in range(t.k):
            rows.append((t.group_name, t.cnms[i], None, cov[i, i], sd[i]))
        for j in range(t.k):
            for i in range(j + 1, t.k):
                corr = cov[i, j] / (sd[i] * sd[j]) if sd[i] * sd[j] > 0 else np.nan
                rows.append((t.group_name, t.cnms[j], t.cnms[i], cov[i, j], corr))
    return rows
