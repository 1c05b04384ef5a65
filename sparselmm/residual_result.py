"""The result of :func:`sparselmm.lmer` with a ``dispformula`` or a ``correlation`` (:mod:`sparselmm.residual`).

An :class:`~sparselmm.results.LmerResult` of the weighted model at the fitted residual parameters φ̂ (so
``fixef``, ``vcov``, ``sigma``, ``theta``, ``ranef``, ``predict`` are the usual ones at ``W(φ̂)``), which also
reports φ̂ as nlme does (``varIdent``'s SD ratios, ``corAR1``'s ρ) and counts it in ``n_params``.
Satterthwaite's df count φ among the variance parameters and Wald intervals cover them
(:mod:`sparselmm.inference.varpar`). ``refit_ml`` / ``refit_reml`` re-optimise θ and φ jointly
(:func:`~sparselmm.residual.refit_residual`), so ``anova`` between REML fits refits them by ML as lme4's does;
profiles and profile intervals hold each parameter, φ's included, and re-optimise the rest
(:mod:`sparselmm.inference.profile_residual`); ``drop1`` refits each reduced model afresh with the structure, and
``ranova`` too (a model left without random effects is nlme's ``gls``: :func:`~sparselmm.residual.gls_loglik`).
What would hold φ fixed or simulate without the structure — ``refit`` to a new response, ``simulate``, the
bootstrap, Kenward–Roger df — is refused with a :class:`~sparselmm.ModelSpecError` that says what to use.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import DataError, ModelSpecError
from .results import LmerResult
from .summary import LmerSummary

__all__ = ["ResidualLmerResult", "ResidualSummary"]


def _refuse(what: str, instead: str):
    raise ModelSpecError(
        f"{what} is not available yet for a fit with a dispformula or correlation (it does not simulate or refit "
        f"the residual structure); {instead}."
    )


class ResidualLmerResult(LmerResult):
    """A linear mixed model with a residual variance by stratum and/or AR(1) residual correlation.

    Attributes
    ----------
    sigma : float
        Residual SD of the first stratum (nlme's ``sigma``; the other strata's are ``sigma * sd_ratios``).
    residual_structure : ResidualStructure
    phi : ndarray
        ``δ`` (log SD ratio) of each stratum after the first, then ρ.
    """

    def __init__(self, devfun, state, optinfo, data_name=None, structure=None, phi=None):
        super().__init__(devfun, state, optinfo, data_name=data_name)
        self.residual_structure = structure
        self.phi = np.asarray(phi, dtype=float).copy()

    # ---- the residual parameters --------------------------------------------------------------
    @property
    def sd_ratios(self) -> pd.Series:
        """Residual SD of each stratum over the first's (nlme's ``varIdent`` parameter estimates); empty
        without a dispformula."""
        s = self.residual_structure
        delta, _ = s.split(self.phi)
        return pd.Series(np.exp(delta[: len(s.levels)]), index=pd.Index(s.levels, name=s.dispersion), name="ratio")

    @property
    def residual_sd(self) -> pd.Series:
        """Residual SD of each stratum (``sigma × sd_ratios``; glmmTMB's per-level ``sigma``)."""
        return (self.sigma * self.sd_ratios).rename("sd")

    @property
    def rho(self) -> float | None:
        """The correlation one unit of time apart (nlme's ``Phi``; corCAR1's φ), None without a correlation."""
        s = self.residual_structure
        return s.split(self.phi)[1] if s.correlation is not None else None

    @property
    def residual_parameters(self) -> pd.Series:
        """φ̂ under its names: ``delta.<level>`` (log SD ratios to the first level) and ``rho``."""
        return pd.Series(self.phi, index=self.residual_structure.phi_names(), name="estimate")

    @property
    def n_params(self) -> int:
        """β, θ, σ and the residual parameters φ (nlme's and glmmTMB's ``df`` of ``logLik``)."""
        return super().n_params + self.phi.size

    def residuals(self, type: str = "response") -> np.ndarray:
        """Residuals: ``"response"`` (y − fitted), ``"pearson"`` (divided by the stratum's SD ratio over the
        prior weight's root: nlme's Pearson residuals times σ) or ``"scaled"`` (pearson / σ; nlme's
        ``type = "pearson"``). The correlation is not removed (nlme's ``"normalized"`` is not provided)."""
        r = self._design.y - self.fitted()
        if type == "response":
            return r
        s = self.residual_structure
        delta, _ = s.split(self.phi)
        scale = np.exp(-delta[s.stratum]) if s.levels else np.ones_like(r)
        w = self._design.weights
        pearson = r * scale * (1.0 if w is None else np.sqrt(w))
        if type == "pearson":
            return pearson
        if type == "scaled":
            return pearson / self.sigma
        raise DataError(f"residuals(type={type!r}) is not known; use 'response', 'pearson' or 'scaled'.")

    def residual_lines(self) -> list[str]:
        """nlme's "Variance function" and "Correlation Structure" blocks."""
        s = self.residual_structure
        lines = []
        if s.correlation is not None:
            lines += [
                f"Correlation Structure: {s.correlation.title}",
                f" Formula: {s.correlation.formula()}",
                " Parameter estimate(s):",
                "      Phi ",
                f"{self.rho:9.7f} ",
            ]
        if s.levels:
            ratios = self.sd_ratios
            sds = self.residual_sd
            width = max(11, *(len(str(k)) + 2 for k in ratios.index))
            lines += [
                "Variance function:",
                " Structure: Different standard deviations per stratum",
                f" Formula: ~1 | {s.dispersion}",
                " Parameter estimates (SD ratios; residual SDs below):",
                "".join(str(k).rjust(width) for k in ratios.index),
                "".join(f"{v:.7f}".rjust(width) for v in ratios),
                "".join(f"{v:.5g}".rjust(width) for v in sds),
            ]
        return lines

    def summary(self, ddf: str | None = None) -> ResidualSummary:
        """lme4's summary layout with the residual structure's block; Satterthwaite's df and p-values by default
        (φ among the variance parameters; ``ddf="lme4"`` for t tests without df; Kenward–Roger is refused)."""
        return ResidualSummary(self, ddf=ddf)

    def anova(self, *others, type=3, ddf: str = "Satterthwaite", **kwargs):
        """The F table of the fixed-effect terms (Satterthwaite's df by default); with other fits, the
        likelihood-ratio tests of :func:`sparselmm.anova` between ML fits (the residual parameters counted in
        ``npar``, as nlme's ``anova``)."""
        if others:
            from .inference.anova import anova

            return anova(self, *others, **kwargs)
        return super().anova(type=type, ddf=ddf, **kwargs)

    def confint(self, parm=None, level: float = 0.95, method: str = "Wald", **kwargs) -> pd.DataFrame:
        """Wald (default) or likelihood-profile intervals of every parameter — ``.sig01`` …, ``.sigma``,
        ``.ratio.<level>`` (varIdent's SD ratios), ``.rho`` (corAR1's) or ``.Phi`` (corCAR1's), the fixed effects.

        Parameters
        ----------
        parm : str, int or list, optional
            Parameters to report (names, ``"theta_"`` for all variance and residual parameters, ``"beta_"``,
            positions); all by default.
        level : float, default 0.95
            Confidence level, strictly between 0 and 1.
        method : {"Wald", "profile"}
            ``"Wald"``: the fixed effects' ``β̂ ± z·SE`` and the variance parameters' on their unconstrained scale
            as nlme's ``intervals()``, from the Hessian of the criterion (:mod:`sparselmm.inference.varpar`).
            ``"profile"``: lme4's profile intervals on the ML criterion (a REML fit is refitted by ML first),
            the residual parameters re-optimised at every point (:mod:`sparselmm.inference.profile_residual`).
        **kwargs
            ``criterion`` (``"ML"`` or ``"REML"``) and ``progress`` of :meth:`profile` with ``method="profile"``.

        Returns
        -------
        pandas.DataFrame
            One row per parameter, columns named by the percentages.

        Raises
        ------
        sparselmm.ModelSpecError
            ``method="boot"`` (no parametric bootstrap of a residual structure yet), an unknown method or
            parameter, or a ``level`` outside (0, 1).
        """
        if str(method).lower() == "boot":
            raise ModelSpecError(
                "confint(method='boot') is not available yet for a fit with a dispformula or correlation (the "
                "bootstrap does not simulate the residual structure); use confint(method='profile') or "
                "confint(method='Wald')."
            )
        if str(method).lower() == "wald":
            method = "Wald"
        return super().confint(parm=parm, level=level, method=method, **kwargs)

    @property
    def deviance(self) -> float:
        """−2 log-likelihood at the fit (for a REML fit: the ML criterion at its θ̂ and φ̂)."""
        return self.objective if not self.reml else self._devfun.with_reml(False)(self.theta)

    def refit(self, *args, **kwargs):
        _refuse("refit", "fit the new response with sparselmm.lmer(..., dispformula=..., correlation=...)")

    def refit_ml(self) -> ResidualLmerResult:
        """The model fitted by maximum likelihood (lme4's ``refitML``, nlme's ``update(m, method = "ML")``): θ and
        the residual parameters φ re-optimised jointly from the REML estimates, on this fit's cross-product
        pieces (:func:`sparselmm.residual.refit_residual`); ``self`` when this fit is ML.

        Returns
        -------
        ResidualLmerResult
            The ML fit (what ``sparselmm.anova`` compares, as lme4's ``anova`` refits REML fits).
        """
        from .residual import refit_residual

        return refit_residual(self, reml=False)

    def refit_reml(self) -> ResidualLmerResult:
        """The model fitted by REML, as :meth:`refit_ml` in the other direction (``self`` when this fit is
        REML)."""
        from .residual import refit_residual

        return refit_residual(self, reml=True)

    def simulate(self, *args, **kwargs):
        _refuse("simulate", "simulate from nlme or glmmTMB, or fit simulated responses with sparselmm.lmer")

    def bootstrap(self, *args, **kwargs):
        _refuse("The parametric bootstrap", "for intervals use confint(method='profile') or confint(method='Wald')")

    def bootstrap_lrt(self, *args, **kwargs):
        _refuse("bootstrap_lrt", "use the likelihood-ratio test of sparselmm.anova(m0, m1)")

    def _new_fit(self, *args, **kwargs):
        _refuse("A refit of this kind", "fit the model with sparselmm.lmer(..., dispformula=..., correlation=...)")


class ResidualSummary(LmerSummary):
    """lme4's summary of a :class:`ResidualLmerResult` with nlme's residual-structure block before the fixed
    effects (Satterthwaite's df counting the residual parameters, by default)."""

    def __init__(self, result, ddf=None):
        super().__init__(result, ddf=ddf)

    def __str__(self) -> str:
        text = super().__str__()
        block = "\n".join(self.result.residual_lines()) + "\n"
        head, sep, tail = text.partition("\nFixed effects:")
        if not sep:
            return text + block
        return head + "\n" + block + sep + tail

    __repr__ = __str__
