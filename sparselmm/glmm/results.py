"""``GlmerResult``: what :func:`sparselmm.glmer` returns — lme4's ``glmerMod``: the shared accessors of
:class:`~sparselmm.result_base.MixedModelResult` plus what a generalised fit adds (the family, σ as lme4's
``sigma(m)``, ``vcov`` from the criterion's Hessian, response-scale fitted values, the GLM residuals, the
Wald z table and lme4's summary)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import ArgumentError, ModelSpecError
from ..result_base import MixedModelResult
from ..summary import GlmmSummary
from .objective import GlmmObjective

__all__ = ["GlmerResult"]


class GlmerResult(MixedModelResult):
    """A generalised linear mixed model fitted by :func:`sparselmm.glmer` (lme4's ``glmerMod``).

    Attributes
    ----------
    fixef : Series
        β (formulaic's column names).
    theta : ndarray
        lme4's θ (relative covariance factors; σ = 1 for binomial/Poisson).
    sigma : float
        1, or lme4's σ for a family with a dispersion (Gamma, inverse Gaussian).
    criterion : float
        The minimised criterion (−2 log L for nAGQ <= 1; lme4's AGQ criterion otherwise).
    family : Family
        The response distribution and link.
    nAGQ : int
        Quadrature points (0 and 1: Laplace).
    optinfo : OptInfo
        As an lmer fit's (:class:`sparselmm.optimize.OptInfo`): evaluations, timings, messages, gradient,
        Hessian; ``details`` holds the stages' evaluations, PIRLS iterations and separated fixed effects.
    """

    def __init__(self, design, family, nAGQ, theta, beta, criterion, state, model, optinfo, data_name=None):
        self._design = design
        self.family = family
        self.nAGQ = nAGQ
        self.theta = np.asarray(theta, dtype=float)
        self._beta = np.asarray(beta, dtype=float)
        self.criterion = criterion
        self._state = state
        self._u = state["u"]
        self._b = state["b"]
        self._model = model
        self.optinfo = optinfo
        self.data_name = data_name
        self._cond_var: list[np.ndarray] | None = None

    @property
    def _use_scale(self) -> bool:
        return bool(self.family.has_scale)

    def _factor_at_fit(self):
        # the PIRLS model's factor holds whatever θ and weights it saw last: put the fit's back
        self._model.factor(self.theta, self._state["w"])
        return self._model.chol

    def _fit_label(self) -> str:
        method = "Laplace" if self.nAGQ <= 1 else f"nAGQ = {self.nAGQ}"
        return f"{self.family!r}, {method}"

    def _picklable_state(self, state: dict) -> dict:
        from .._pickling import picklable_pirls_model

        state["_model"] = picklable_pirls_model(self._model)
        return state

    # ---- parameters ---------------------------------------------------------------------------------
    @property
    def sigma(self) -> float:
        """lme4's ``sigma(m)``: 1 for binomial / Poisson; for Gamma and inverse Gaussian the dispersion
        estimate lme4 reports, ``sqrt((Σ wᵢ (yᵢ − μᵢ)² / V(μᵢ) + ‖u‖²) / n)`` at the optimum.

        lme4 uses it to scale what it prints — the random-effects variances ``σ² θθᵀ`` and the
        ``Residual`` row of ``VarCorr``, the conditional variances, the scaled residuals, and the
        RX-based covariance of β when the Hessian is unavailable. The Laplace criterion itself uses the
        moment estimate ``Σ devresid / Σ w`` inside the family's log density (see
        :mod:`sparselmm.glmm.family`), and the random effects ``b = Λθ u`` are not scaled by σ.
        """
        return float(self._state.get("sigma", 1.0))

    @property
    def vcov(self) -> pd.DataFrame:
        """Covariance of β as lme4's ``vcov``: from the Hessian of the criterion (nAGQ >= 1) or from RX."""
        names = self._design.fixed_names
        V = None
        H = self.optinfo.hessian
        nth = self.theta.size
        if H is not None:
            try:
                Hi = np.linalg.inv(H)
                Vh = Hi[nth:, nth:] + Hi[nth:, nth:].T
                if np.all(np.isfinite(Vh)) and np.all(np.linalg.eigvalsh(Vh) > 0):
                    V = Vh
            except np.linalg.LinAlgError:
                V = None
        if V is None:  # lme4: sigma(m)^2 * unscaled RX covariance
            V = self.sigma**2 * np.linalg.inv(self._state["XtWX_schur"])
        return pd.DataFrame(V, index=names, columns=names)

    def coef_table(self) -> pd.DataFrame:
        """Estimate, Std. Error, z value, Pr(>|z|) (lme4's Wald z tests).

        For a family with a dispersion the statistic column is named ``t value``, as lme4 names it; the
        p-value is still lme4's normal ``Pr(>|z|)``.
        """
        est, se = self.fixef.to_numpy(), self.bse.to_numpy()
        z = est / se
        stat = "t value" if self.family.has_scale else "z value"
        return pd.DataFrame(
            {"Estimate": est, "Std. Error": se, stat: z, "Pr(>|z|)": 2 * stats.norm.sf(np.abs(z))},
            index=self._design.fixed_names,
        )

    @property
    def objective(self) -> float:
        """The minimised criterion (:attr:`criterion`; the name :class:`~sparselmm.LmerResult` uses)."""
        return self.criterion

    @property
    def deviance(self) -> float:
        """−2 log L: the ``deviance`` column of lme4's summary (``-2 * logLik(m)``).

        For nAGQ <= 1 it includes the family's normalising constant; for nAGQ > 1 it is lme4's AGQ
        criterion, which does not (see :mod:`sparselmm.glmm.glmer`). lme4's ``deviance(m)`` is
        :attr:`deviance_residual_sum`.
        """
        return self.criterion

    @property
    def deviance_residual_sum(self) -> float:
        """Sum of squared deviance residuals — what lme4's ``deviance(m)`` returns for a GLMM."""
        return float(np.sum(self.residuals("deviance") ** 2))

    # ---- fitted values and residuals --------------------------------------------------------------------
    def fitted(self) -> np.ndarray:
        """μ̂ (response scale), as lme4's ``fitted``."""
        return self._state["mu"].copy()

    def residuals(self, type: str = "deviance") -> np.ndarray:
        """``"deviance"`` (lme4's default), ``"pearson"``, ``"response"`` or ``"working"`` residuals."""
        y, mu, pw = self._design.y, self._state["mu"], self._model.pw
        fam = self.family
        if type == "deviance":
            return np.sign(y - mu) * np.sqrt(np.maximum(fam.dev_resids(y, mu, pw), 0))
        if type == "pearson":
            return (y - mu) * np.sqrt(pw) / np.sqrt(fam.variance(mu))
        if type == "response":
            return y - mu
        if type == "working":
            return (y - mu) / fam.link.mu_eta(self._state["eta"])
        raise ModelSpecError(f"type={type!r}: use 'deviance', 'pearson', 'response' or 'working'.")

    def predict(self, newdata=None, type: str = "link", re_form=None, allow_new_levels: bool = False, offset=None):
        """Predictions on the link (``type="link"``, the default) or response scale, as lme4's
        ``predict.merMod``; ``type`` comes second here, as in lme4's glmer calls. See
        :meth:`MixedModelResult.predict <sparselmm.result_base.MixedModelResult.predict>`."""
        return super().predict(newdata, re_form=re_form, allow_new_levels=allow_new_levels, offset=offset, type=type)

    def _inverse_link(self, eta: np.ndarray) -> np.ndarray:
        return self.family.link.linkinv(eta)

    # ---- summary -------------------------------------------------------------------------------------
    def anova(self, *others: GlmerResult, **kwargs) -> pd.DataFrame:
        """lme4's ``anova(g0, g1, ...)``: likelihood-ratio tests between nested glmer fits of one family.

        Parameters
        ----------
        *others : GlmerResult
            One or more other fits to the same rows (see
            :func:`sparselmm.inference.lrt.likelihood_ratio_table`, which takes ``names`` and
            ``check_nested_models`` as keyword arguments).

        Raises
        ------
        sparselmm.ModelSpecError
            No other model (a glmer fit has no F table: its summary has the Wald z tests), models of another
            family or link, models not nested.
        """
        from ..inference.anova import anova

        if not others:
            raise ModelSpecError(
                "anova() of one glmer fit has no F table: its summary() has the Wald z tests; give a second fit "
                "for the likelihood-ratio test, e.g. g1.anova(g0)."
            )
        return anova(self, *others, **kwargs)

    def confint(
        self,
        parm=None,
        level: float = 0.95,
        method: str = "Wald",
        nsim: int = 500,
        seed=None,
        boot_type: str = "perc",
        **kwargs,
    ) -> pd.DataFrame:
        """Confidence intervals (lme4's ``confint.merMod``): Wald, likelihood profile or parametric bootstrap.

        The parameters carry lme4's names and order: ``.sig01`` … (the random effects' SDs and correlations),
        ``.sigma`` only for a family with a dispersion, then the fixed effects.

        The default stays ``"Wald"`` (lme4's is ``"profile"``): it is what ``confint()`` of a glmer fit has
        always meant here, and it costs nothing where a profile refits the model a few times per interval
        end; ask for ``method="profile"`` to get lme4's default intervals.

        Parameters
        ----------
        parm : str, int or list, optional
            Parameters to report (names, ``"theta_"``, ``"beta_"`` or 0-based positions); all by default.
        level : float, default 0.95
            Confidence level, strictly between 0 and 1.
        method : {"Wald", "profile", "boot"}
            ``"Wald"`` (the default here): ``β̂ ± z·SE``, NaN rows for the variance parameters, as lme4's
            ``method = "Wald"``; ``"profile"``: likelihood-profile intervals of every parameter (lme4's
            ``confint(m, method = "profile")``, see :meth:`profile`; binomial, Poisson and negative binomial
            fits with ``nAGQ >= 1``); ``"boot"``: percentile (or ``boot_type``) intervals of :meth:`bootstrap`
            with lme4's statistics (:meth:`boot_statistics`).
        nsim : int, default 500
            Bootstrap replicates (``method="boot"``).
        seed : int or numpy.random.SeedSequence, optional
            Seed of the bootstrap.
        boot_type : {"perc", "basic", "norm"}
            Bootstrap interval type (``boot::boot.ci``'s).
        **kwargs
            Passed to :meth:`bootstrap` (``n_jobs``, ``progress``, ``use_u``) or :meth:`profile`
            (``progress``).

        Returns
        -------
        DataFrame
            One row per parameter, columns ``"2.5 %"`` and ``"97.5 %"`` (for ``level=0.95``).

        Raises
        ------
        sparselmm.ModelSpecError
            An unknown method or parameter, ``level`` outside (0, 1), ``method="profile"`` for a family with a
            dispersion or an ``nAGQ = 0`` fit (lme4 cannot profile them either).
        """
        from ..inference.confint import confint

        return confint(self, parm=parm, level=level, method=method, nsim=nsim, seed=seed, boot_type=boot_type, **kwargs)

    def profile(self, which=None, level: float = 0.95, progress: bool | None = None, **kwargs):
        """Likelihood profiles of the parameters (lme4's ``profile(m)`` of a GLMM).

        As lme4's ``devfun2``: the criterion the fit minimised (the Laplace deviance, or the ``nAGQ``
        criterion) with one parameter held — an SD or correlation of the random effects (``.sig01`` …) or a
        fixed effect — and every other one re-optimised; ``ζ = sign(x − x̂) · sqrt(d(x) − d̂)``, the interval
        ends where ``ζ = ±z`` solved exactly (:mod:`sparselmm.inference.profile_glmm`). An SD whose estimate
        is 0 (a singular fit) has the lower end 0, as lme4 reports it. The fit itself is not changed.

        Parameters
        ----------
        which : str, int or list, optional
            Parameters to profile (lme4's names, ``"theta_"``, ``"beta_"`` or 0-based positions); all by
            default.
        level : float, default 0.95
            Confidence level of the interval ends solved for exactly.
        progress : bool or None
            A progress bar: None (default) for profiles longer than 2 s on a terminal or in a notebook.
        **kwargs
            ``grid`` (default True: also tabulate ζ on lme4's grid for :meth:`Profile.table
            <sparselmm.inference.profile.Profile.table>` and plots) and ``alphamax`` of
            :func:`sparselmm.inference.profile.profile`.

        Returns
        -------
        Profile
            ``confint(level)``, ``table()`` (lme4's ``as.data.frame(profile(m))``), ``notes``, ``plot()``.

        Raises
        ------
        sparselmm.ModelSpecError
            An unknown parameter, ``level`` outside (0, 1), a family with a dispersion or an ``nAGQ = 0`` fit
            (lme4 cannot profile them either), ``criterion="REML"``.
        """
        from ..inference.profile import profile

        return profile(self, which=which, level=level, progress=progress, **kwargs)

    # ---- simulation, refits, the parametric bootstrap ------------------------------------------------------
    def boot_statistics(self) -> pd.Series:
        """lme4's statistics of ``confint(m, method = "boot")`` for a GLMM (``confint.merMod``'s ``bootFun``).

        The SDs and correlations of the random effects from θ (``Cv_to_Sv(θ)``: *not* scaled by σ, unlike
        :attr:`varcorr` for Gamma and inverse Gaussian fits — lme4's bootstrap does the same), σ for a family
        with a dispersion, then the fixed effects; named by
        :func:`~sparselmm.parameters.parameter_names`.

        Returns
        -------
        Series
        """
        from ..parameters import parameter_names, sdcor

        sigma = [self.sigma] if self.family.has_scale else []
        values = np.concatenate([sdcor(self._design, self.theta, 1.0), sigma, self._beta])
        return pd.Series(values, index=parameter_names(self), name="estimate")

    def refit(self, newresp, check_conv: bool = True, control: dict | None = None) -> GlmerResult:
        """The model refitted to a new response (lme4's ``refit``).

        The refit starts from this fit's estimates (lme4's ``refit``) and from a fresh fit's start, and keeps
        the lower optimum, so it reaches at least what ``sparselmm.glmer`` reaches on ``newresp``
        (:func:`sparselmm.glmm.fit.refit_glmm`). The design, the pattern of ``ZᵀWZ`` and the symbolic
        factorisation are this fit's.

        Parameters
        ----------
        newresp : array-like, Series, one-column DataFrame or (n, 2) array
            One value per fitted row, in the fit's row order, on the scale of :meth:`simulate` (e.g. one of its
            columns); a binomial fit also takes successes and failures as two columns
            (see :func:`sparselmm.refit.glmm_response`).
        check_conv : bool, default True
            Warn as a fit does (singular fit, lme4's convergence checks).
        control : None
            Only None: glmer's optimiser is not selectable (the parameter is :meth:`LmerResult.refit
            <sparselmm.LmerResult.refit>`'s).

        Returns
        -------
        GlmerResult
            An independent fit of this fit's class; this one is left as it was.

        Raises
        ------
        sparselmm.ModelSpecError
            ``newresp`` does not have one value per fitted row.
        sparselmm.DataError
            ``newresp`` has missing values or values outside the family's support (negative or non-integer
            counts, non-integer numbers of successes).
        sparselmm.ArgumentError
            ``control`` given.
        sparselmm.glmm.SeparationError
            A fixed effect separates the new response (as for a fresh fit).
        """
        from ..refit import glmm_response
        from .fit import refit_glmm

        if control is not None:
            raise ArgumentError("A glmer refit takes no control=: glmer's optimiser is not selectable.")
        return refit_glmm(self, glmm_response(self, newresp), check_conv=check_conv)

    def refit_ml(self) -> GlmerResult:
        """This fit itself: glmer's criterion is the likelihood already (the method is
        :meth:`LmerResult.refit_ml <sparselmm.LmerResult.refit_ml>`'s, lme4's ``refitML``, so that a
        likelihood-ratio test takes either kind of fit).

        Returns
        -------
        GlmerResult
            ``self``.
        """
        return self

    def _refit_replicate(self, y: np.ndarray, calc_derivs: bool = False) -> GlmerResult:
        """This model refitted to a simulated response ``y`` (on the scale glmer fits, unchecked): a
        parametric bootstrap's replicate (:mod:`sparselmm.inference.bootstrap_fits`,
        :mod:`sparselmm.inference.bootstrap_lrt`), as lme4's ``bootMer`` refits — from this fit's estimates
        only (:func:`~sparselmm.glmm.fit.refit_glmm` with ``fresh=False``), without the convergence checks,
        with the Hessian only if ``calc_derivs``. Each refit has its own copy of the PIRLS model."""
        from .fit import refit_glmm

        return refit_glmm(self, y, check_conv=False, fresh=False, calc_derivs=calc_derivs)

    def _criterion_function(self) -> GlmmObjective:
        """The criterion this fit minimised as a function of (θ, β)
        (:meth:`GlmmObjective.at_theta_beta <sparselmm.glmm.objective.GlmmObjective.at_theta_beta>`) on its
        own copy of the fit's PIRLS model, so that evaluating it leaves the fit as it was: what a likelihood
        profile (:mod:`sparselmm.inference.profile_glmm`) holds parameters in. Its ``model.blas_size`` is
        glmer's BLAS policy."""
        base = self._model
        return GlmmObjective(base.with_response(base.y), self.nAGQ)

    def bootstrap(
        self,
        nsim: int,
        func=None,
        seed=None,
        n_jobs: int = 1,
        progress: bool | None = None,
        use_u: bool = False,
    ):
        """Parametric bootstrap (lme4's ``bootMer(type = "parametric")``).

        Each replicate simulates a response (:meth:`simulate`), refits the model to it from this fit's
        estimates (glmer's refit, :func:`sparselmm.glmm.fit.refit_glmm`, warm start only, as lme4's
        ``bootMer``) and evaluates ``func`` on the refit.

        Parameters
        ----------
        nsim : int
            Number of replicates (at least 1).
        func : callable, optional
            ``func(fit) -> Series | dict | array`` of statistics of a refit (a :class:`GlmerResult`).
            Default: :meth:`boot_statistics` — lme4's ``confint(method = "boot")`` parameters ``.sig01`` …,
            ``.sigma`` only for a family with a dispersion, the fixed effects — computed without derivatives.
        seed : int or numpy.random.SeedSequence, optional
            Makes the run reproducible, for any ``n_jobs``.
        n_jobs : int, default 1
            Worker processes (``-1``: one per core); ``func`` need not be picklable.
        progress : bool or None
            A progress bar: None (default) for runs longer than 2 s on a terminal or in a notebook, True
            always, False never.
        use_u : bool, default False
            Simulate conditionally on the fitted random effects (lme4's ``use.u``).

        Returns
        -------
        BootstrapResult
            ``draws`` (one row per replicate, NaN rows for failed ones — e.g. a replicate whose outcome a
            fixed effect separates — listed in ``failures``), ``t0``, ``confint()``, ``summary()``.

        Raises
        ------
        sparselmm.ModelSpecError
            ``nsim`` not a whole number >= 1, a bad ``seed`` or ``n_jobs``.
        sparselmm.NumericalError
            Every replicate failed.
        """
        from ..inference.bootstrap import bootstrap

        return bootstrap(self, nsim, func=func, seed=seed, n_jobs=n_jobs, progress=progress, use_u=use_u)

    def summary(self) -> GlmmSummary:
        """lme4's ``summary(glmer)``: criteria, scaled residuals, random effects and the fixed effects' z
        tests; print it."""
        return GlmmSummary(self)
