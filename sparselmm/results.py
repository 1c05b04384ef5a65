"""The fitted model returned by :func:`sparselmm.lmer`: what a linear fit adds to the shared accessors of
:class:`~sparselmm.result_base.MixedModelResult` — its criterion and σ̂, ``vcov`` from ``R_X``, fitted
values and residuals, the summary, and the methods that reach :mod:`sparselmm.inference` and
:mod:`sparselmm.refit` (which take the result as an argument and never import this class)."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .deviance import PLSState, ProfiledDeviance
from .errors import DataError
from .optimize import OptInfo
from .result_base import MixedModelResult

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from matplotlib.figure import Figure
    from numpy.typing import ArrayLike

    from ._typing import ContrastLike, Seed
    from .inference.bootstrap import BootstrapResult
    from .inference.profile import Profile
    from .linalg.factor import Factor
    from .printing import AnovaTable
    from .summary import LmerSummary

__all__ = ["LmerResult"]


class LmerResult(MixedModelResult):
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

    rows_held = True  # the fitted rows are kept (a fit from chunks, scale.StreamedLmerResult, has only sums)
    _use_scale = True  # σ is a parameter: counted by n_params, the Residual row of varcorr

    def __init__(self, devfun: ProfiledDeviance, state: PLSState, optinfo: OptInfo, data_name: str | None = None):
        self._devfun = devfun
        self._design = devfun.design
        self._state = state
        self._beta = state.beta
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

    def _factor_at_fit(self) -> Factor:
        if not self._devfun.exact:
            self._devfun.needs_exact("The factor (ranef(cond_var=True), conditional variances)")
        self._devfun.solve(self.theta)  # the factor may hold another θ (a profile, a refit shared it)
        return self._devfun.chol

    def _fit_label(self) -> str:
        return "REML" if self.reml else "ML"

    def _picklable_state(self, state: dict) -> dict:
        from ._pickling import picklable_devfun

        state["_devfun"] = picklable_devfun(self._devfun)
        return state

    @property
    def vcov(self) -> pd.DataFrame:
        """Covariance matrix of the fixed-effects estimates, ``σ² (R_Xᵀ R_X)⁻¹``."""
        names = self._design.fixed_names
        R_inv = np.linalg.inv(self._state.R_X) if names else np.zeros((0, 0))
        return pd.DataFrame(self.sigma**2 * R_inv @ R_inv.T, index=names, columns=names)

    @cached_property
    def deviance(self) -> float:
        """−2 log-likelihood on the ML scale; for REML fits evaluated at the REML θ (lme4's
        ``deviance(m, REML = FALSE)``)."""
        if not self.reml:
            return self.objective
        return self._devfun.with_reml(False)(self.theta)

    @property
    def deviance_function(self) -> ProfiledDeviance:
        """The profiled deviance (or REML criterion) of this fit as a function of θ, as returned by
        :func:`sparselmm.deviance_function`."""
        return self._devfun

    # ---- fitted values (predict is the base's) ------------------------------------------------
    def fitted(self) -> np.ndarray:
        """Fitted values ``Xβ̂ + Zb̂ + offset``."""
        off = self._design.offset
        return self._design.X @ self._beta + self._design.Zt.T @ self._b + (0.0 if off is None else off)

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

    def summary(self, ddf: str | None = None) -> LmerSummary:
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

        Parameters
        ----------
        ddf : {"Satterthwaite", "Kenward-Roger", "lme4"}
            Satterthwaite's df (lmerTest's default); Kenward–Roger's, which also takes the standard errors
            from the adjusted covariance ``Φ_A`` (REML fits only, as pbkrtest); or lme4's table without df
            and p-values.

        Returns
        -------
        pandas.DataFrame
            One row per fixed effect (named as :attr:`fixef`), columns ``Estimate``, ``Std. Error``, ``df``,
            ``t value``, ``Pr(>|t|)`` (``ddf="lme4"``: the first two and ``t value``).

        Raises
        ------
        sparselmm.ModelSpecError
            An unknown ``ddf``, or Kenward–Roger's method on an ML fit.

        See Also
        --------
        sparselmm.inference.contest.coef_table : the function behind this method.
        summary : the same table in lme4's printed layout.
        """
        from .inference.contest import coef_table

        return coef_table(self, ddf)

    def contest(
        self,
        L: ContrastLike,
        ddf: str = "Satterthwaite",
        joint: bool = True,
        rhs: float | ArrayLike = 0.0,
        level: float = 0.95,
    ) -> pd.DataFrame:
        """Test the contrast ``Lβ = rhs`` (lmerTest's ``contest``).

        An F test of all rows of ``L`` together (``joint=True``), or a t test with a confidence interval
        for each row (``joint=False``), with Satterthwaite's or Kenward–Roger's denominator degrees of
        freedom.

        Parameters
        ----------
        L : array-like, Series, DataFrame or str
            A contrast vector (one value per fixed effect) or matrix (one column per fixed effect, in the
            order of :attr:`fixef`). A Series or DataFrame is aligned on the fixed effects' names (names it
            lacks count as 0). A fixed-effect term's label such as ``"cond"`` or ``"x:f"`` tests that
            term's type III hypothesis (the term's row of :meth:`anova`).
        ddf : {"Satterthwaite", "Kenward-Roger", "lme4"}
            Denominator degrees of freedom (case-insensitive; ``"KR"`` also works). Kenward–Roger's needs a
            REML fit; ``"lme4"`` gives the statistics without df and p-values.
        joint : bool, default True
            One F test of all rows, or a t test per row.
        rhs : float or array-like, default 0
            Hypothesised value of ``Lβ``: one per row of ``L``, or one for all.
        level : float, default 0.95
            Confidence level of the per-row intervals (``joint=False``).

        Returns
        -------
        pandas.DataFrame
            ``joint=True``: one row with ``Sum Sq``, ``Mean Sq``, ``NumDF``, ``DenDF``, ``F value``,
            ``Pr(>F)`` (``ddf="lme4"``: ``Sum Sq``, ``Mean Sq``, ``npar``, ``F value``). ``joint=False``:
            one row per row of ``L`` with ``Estimate``, ``Std. Error``, ``df``, ``t value``, ``lower``,
            ``upper`` and ``Pr(>|t|)``.

        Raises
        ------
        sparselmm.ModelSpecError
            ``L`` has the wrong number of columns, names an unknown fixed effect or term, is zero, or is
            rank-deficient with a nonzero ``rhs``; an unknown ``ddf``; Kenward–Roger's method on an ML fit.

        See Also
        --------
        sparselmm.inference.contest.contest : the function behind this method.
        anova : an F test for every fixed-effect term.

        Examples
        --------
        >>> import sparselmm
        >>> m = sparselmm.lmer("Reaction ~ Days + (Days | Subject)", sparselmm.datasets.load("sleepstudy"))
        >>> f_test = m.contest([0, 1])  # F test of the Days slope
        >>> t_test = m.contest([0, 1], joint=False, rhs=10)  # slope = 10, with a 95 % interval
        >>> by_term = m.contest("Days", ddf="Kenward-Roger")
        """
        from .inference.contest import contest

        return contest(self, L, ddf=ddf, joint=joint, rhs=rhs, level=level)

    def anova(self, *others: LmerResult, type: int | str = 3, ddf: str = "Satterthwaite", **kwargs: Any) -> AnovaTable:
        """lmerTest's F table for the model's fixed-effect terms, or, given other models, lme4's
        likelihood-ratio table.

        Parameters
        ----------
        *others : LmerResult
            Other fits to the same rows: ``m0.anova(m1)`` is lme4's ``anova(m0, m1)`` (REML fits are
            refitted by ML first).
        type : {1, 2, 3, "I", "II", "III"}, default 3
            lmerTest's type of hypotheses for the F table of one model.
        ddf : {"Satterthwaite", "Kenward-Roger", "lme4"}
            Denominator degrees of freedom of the F tests.
        **kwargs
            With other models: ``names``, ``refit``, ``check_nested_models`` of
            :func:`sparselmm.inference.lrt.likelihood_ratio_table`.

        Returns
        -------
        pandas.DataFrame
            See :func:`sparselmm.anova`.

        See Also
        --------
        sparselmm.anova : the function behind this method.
        anova_contrasts : the contrast matrix of each row.
        """
        from .inference.anova import anova

        return anova(self, *others, type=type, ddf=ddf, **kwargs)

    def anova_contrasts(self, type: int | str = 3) -> dict[str, np.ndarray]:
        """The contrast matrix behind each row of :meth:`anova` (lmerTest's ``show_tests``)."""
        from .inference.contrasts import term_contrasts

        return term_contrasts(self._design, type)

    # ---- new fits of this model (sparselmm.refit), confidence intervals, bootstrap (inference/) ----
    def _new_fit(
        self, devfun: ProfiledDeviance, state: PLSState, optinfo: OptInfo, data_name: str | None = None
    ) -> LmerResult:
        """This model fitted anew (a refit, a bootstrap replicate): how :mod:`sparselmm.refit` and the bootstrap
        build a result without naming this class. A fit from chunks refits as an :class:`LmerResult` too (the
        refit holds its sums, not its source)."""
        return LmerResult(devfun, state, optinfo, data_name=data_name)

    def refit(
        self, newresp: ArrayLike | pd.Series | pd.DataFrame, check_conv: bool = True, control: dict | None = None
    ) -> LmerResult:
        """The model refitted to a new response (lme4's ``refit``), started from θ̂ and reusing the fit's
        cross-products and symbolic factorisation.

        Parameters
        ----------
        newresp : array-like, Series or one-column DataFrame
            One value per fitted row, in the fit's row order (e.g. a column of :meth:`simulate`).
        check_conv : bool, default True
            Run the convergence checks on the refit.
        control : dict, optional
            Optimiser settings, as :func:`sparselmm.lmer`'s ``control``.

        Returns
        -------
        LmerResult
            An independent fit; this one is left as it was.

        Raises
        ------
        sparselmm.ModelSpecError
            ``newresp`` does not have one value per fitted row.
        """
        from .refit import refit

        return refit(self, newresp, check_conv=check_conv, control=control)

    def refit_ml(self) -> LmerResult:
        """The model fitted by maximum likelihood (lme4's ``refitML``).

        A REML fit is re-optimised on −2 log-likelihood from its θ̂, sharing its cross-products and
        symbolic factorisation; an ML fit returns itself.

        Returns
        -------
        LmerResult
            The ML fit (``self`` when this fit is ML).
        """
        from .refit import refit_ml

        return refit_ml(self)

    def refit_reml(self) -> LmerResult:
        """The model fitted by REML, as :meth:`refit_ml` in the other direction (``self`` when this fit is
        REML): the variance parameters' profiles on the REML criterion start from it."""
        from .refit import refit_reml

        return refit_reml(self)

    def bootstrap(
        self,
        nsim: int,
        func: Callable[[LmerResult], Any] | None = None,
        seed: Seed = None,
        n_jobs: int = 1,
        progress: bool | None = None,
        tol: float | None = None,
        **kwargs: Any,
    ) -> BootstrapResult:
        """Parametric bootstrap (lme4's ``bootMer(type = "parametric")``).

        Each replicate simulates a response from the fit, refits the model to it from θ̂ (on the fit's
        criterion, reusing its factorisation) and evaluates ``func`` on the refit.

        Parameters
        ----------
        nsim : int
            Number of replicates (at least 1).
        func : callable, optional
            ``func(fit) -> Series | dict | array`` of statistics of a refit (an :class:`LmerResult` whose
            workspace the next replicate reuses: take what you need, do not keep it). Default: every
            parameter under lme4's names (``.sig01`` …, ``.sigma``, the fixed effects), as lme4's
            ``confint(method = "boot")``, computed without building a result per replicate.
        seed : int or numpy.random.SeedSequence, optional
            Makes the run reproducible, for any ``n_jobs``.
        n_jobs : int, default 1
            Worker processes (``-1``: one per core); ``func`` need not be picklable.
        progress : bool or None
            A progress bar: None (default) for runs longer than 2 s on a terminal or in a notebook, True
            always, False never.
        tol : float, optional
            Stopping tolerance of the replicates' fits in deviance units (default 1e-8).
        **kwargs
            ``use_u`` (simulate conditionally on the fitted random effects, lme4's ``use.u``) and
            ``control`` (optimiser settings); see :func:`sparselmm.inference.bootstrap.bootstrap`.

        Returns
        -------
        BootstrapResult
            ``draws`` (one row per replicate), ``t0``, ``failures`` with their reasons, ``diagnostics``;
            ``.confint(type=)`` and ``.summary()``.

        Raises
        ------
        sparselmm.ModelSpecError
            A bad ``nsim``, ``seed``, ``n_jobs`` or ``tol``.
        sparselmm.NumericalError
            Every replicate failed.

        See Also
        --------
        sparselmm.inference.bootstrap.bootstrap : the function behind this method.
        confint : ``method="boot"`` gives the intervals directly.

        Examples
        --------
        >>> import sparselmm
        >>> m = sparselmm.lmer("Reaction ~ Days + (Days | Subject)", sparselmm.datasets.load("sleepstudy"))
        >>> boot = m.bootstrap(200, seed=1)
        >>> intervals = boot.confint(type="perc")
        """
        from .inference.bootstrap import bootstrap

        return bootstrap(self, nsim, func=func, seed=seed, n_jobs=n_jobs, progress=progress, tol=tol, **kwargs)

    def confint(
        self,
        parm: str | int | Sequence[str | int] | None = None,
        level: float = 0.95,
        method: str = "profile",
        nsim: int = 500,
        seed: Seed = None,
        **kwargs: Any,
    ) -> pd.DataFrame:
        """Confidence intervals for the parameters (lme4's ``confint.merMod``).

        The parameters carry lme4's names and order: the random effects' standard deviations and
        correlations ``.sig01``, ``.sig02``, …, the residual SD ``.sigma``, then the fixed effects.

        Parameters
        ----------
        parm : str, int or list, optional
            Parameters to report: names (``"(Intercept)"`` and ``"Intercept"`` both work), ``"theta_"`` (the
            variance parameters, ``.sigma`` included), ``"beta_"`` (the fixed effects) or 0-based
            positions; all by default.
        level : float, default 0.95
            Confidence level, strictly between 0 and 1.
        method : {"profile", "Wald", "boot"}
            Likelihood-profile intervals (lme4's default; on the ML criterion, a REML fit is refitted by ML
            first, as lme4 does), Wald intervals ``β̂ ± z·SE`` (NaN for the variance parameters, as lme4's
            NA — except with covariance-structure terms, whose variance parameters get Wald intervals on their
            unconstrained scale as glmmTMB's: :mod:`sparselmm.inference.varpar`), or parametric-bootstrap
            intervals.
        nsim : int, default 500
            Bootstrap replicates (``method="boot"``).
        seed : int or numpy.random.SeedSequence, optional
            Seed of the bootstrap.
        **kwargs
            ``boot_type`` (``"perc"``, ``"basic"``, ``"norm"``) and the arguments of :meth:`bootstrap`
            (``n_jobs``, ``progress``, ``tol``, ``use_u``) for ``method="boot"``; ``criterion`` (``"ML"``
            or ``"REML"``) and ``progress`` of :meth:`profile` for ``method="profile"``.

        Returns
        -------
        pandas.DataFrame
            One row per parameter, columns named by the percentages (``"2.5 %"``, ``"97.5 %"`` for
            ``level=0.95``); NaN where lme4 gives NA.

        Raises
        ------
        sparselmm.ModelSpecError
            An unknown ``method`` or parameter name, a ``level`` outside (0, 1), or further arguments with
            ``method="Wald"``.

        See Also
        --------
        sparselmm.inference.confint.confint : the function behind this method.
        profile : the whole profile, its table and plot.
        bootstrap : the bootstrap replicates themselves.

        Examples
        --------
        >>> import sparselmm
        >>> m = sparselmm.lmer("Reaction ~ Days + (Days | Subject)", sparselmm.datasets.load("sleepstudy"))
        >>> profile_ci = m.confint()
        >>> wald_ci = m.confint(method="Wald", level=0.9)
        >>> boot_ci = m.confint(parm="beta_", method="boot", nsim=200, seed=1)
        """
        from .inference.confint import confint

        return confint(self, parm=parm, level=level, method=method, nsim=nsim, seed=seed, **kwargs)

    def ranova(self, reduce_terms: bool = True) -> AnovaTable:
        """lmerTest's ``ranova``: a likelihood-ratio test for each random-effects term (see
        :func:`sparselmm.ranova`).

        Examples
        --------
        >>> import sparselmm
        >>> m = sparselmm.lmer("Reaction ~ Days + (Days | Subject)", sparselmm.datasets.load("sleepstudy"))
        >>> m.ranova().index.tolist()
        ['<none>', 'Days in (Days | Subject)']
        """
        from .inference.ranova import ranova

        return ranova(self, reduce_terms=reduce_terms)

    def profile(
        self,
        which: str | int | Sequence[str | int] | None = None,
        level: float = 0.95,
        criterion: str = "ML",
        progress: bool | None = None,
        **kwargs: Any,
    ) -> Profile:
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

    # ---- plots (sparselmm.plot): plot_ranef, plot_qq_ranef, plot_residuals are the base's ----
    def plot_profile(
        self,
        prof: Profile | None = None,
        which: str | Sequence[str] | None = None,
        absolute: bool = False,
        **kwargs: Any,
    ) -> Figure:
        """ζ against each parameter (lme4's ``xyplot(profile(m))``) for ``prof`` (default: ``self.profile()``
        of the parameters in ``which``). See :func:`sparselmm.plot.plot_profile`."""
        from .plot import plot_profile

        if prof is None:
            prof = self.profile(which=which)
        return plot_profile(prof, which=which, absolute=absolute, **kwargs)
