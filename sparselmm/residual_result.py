"""The result of :func:`sparselmm.lmer` with a ``dispformula`` or a ``correlation`` (:mod:`sparselmm.residual`).

An :class:`~sparselmm.results.LmerResult` of the weighted model at the fitted residual parameters φ̂ (so
``fixef``, ``vcov``, ``sigma``, ``theta``, ``ranef``, ``predict`` are the usual ones at ``W(φ̂)``), which also
reports φ̂ as nlme does (``varIdent``'s SD ratios, ``corAR1``'s ρ) and counts it in ``n_params``.
Satterthwaite's df count φ among the variance parameters and Wald intervals cover them
(:mod:`sparselmm.inference.varpar`). What would treat φ as fixed, or refit without the residual structure —
refits, the bootstrap, profiles, Kenward–Roger df, ``ranova``, ``drop1`` — is refused with a
:class:`~sparselmm.ModelSpecError`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import DataError, ModelSpecError
from .results import LmerResult
from .summary import LmerSummary

__all__ = ["ResidualLmerResult", "ResidualSummary"]


def _refuse(what: str):
    raise ModelSpecError(
        f"{what} is not available yet for a fit with a dispformula or correlation (it would hold the residual "
        "parameters fixed, or refit without them)."
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
        """Wald intervals (``method="Wald"`` only): the fixed effects', and the variance parameters' on their
        unconstrained scale as nlme's ``intervals()`` — ``.sig01`` …, ``.sigma``, ``.ratio.<level>`` (varIdent's SD
        ratios), ``.rho`` (corAR1's) or ``.Phi`` (corCAR1's) — from the Hessian of the criterion
        (:mod:`sparselmm.inference.varpar`). Profile and bootstrap intervals are refused (their refits would hold
        φ fixed)."""
        if str(method).lower() != "wald":
            raise ModelSpecError(
                f"confint(method={method!r}) is not available yet for a fit with a dispformula or correlation (its "
                "refits would hold the residual parameters fixed); use confint(method='Wald'), whose intervals of "
                "the variance and residual parameters are nlme's intervals() on the unconstrained scale."
            )
        return super().confint(parm=parm, level=level, method="Wald", **kwargs)

    @property
    def deviance(self) -> float:
        """−2 log-likelihood at the fit (for a REML fit: the ML criterion at its θ̂ and φ̂)."""
        return self.objective if not self.reml else self._devfun.with_reml(False)(self.theta)

    def refit(self, *args, **kwargs):
        _refuse("refit")

    def refit_ml(self):
        raise ModelSpecError(
            "refit_ml is not available yet for a fit with a dispformula or correlation: for likelihood-ratio "
            "tests fit each model with reml=False."
        )

    def refit_reml(self):
        _refuse("refit_reml")

    def simulate(self, *args, **kwargs):
        _refuse("simulate")

    def bootstrap(self, *args, **kwargs):
        _refuse("The parametric bootstrap")

    def bootstrap_lrt(self, *args, **kwargs):
        _refuse("bootstrap_lrt")

    def profile(self, *args, **kwargs):
        _refuse("profile")

    def ranova(self, *args, **kwargs):
        _refuse("ranova")

    def drop1(self, *args, **kwargs):
        _refuse("drop1")

    def _new_fit(self, *args, **kwargs):
        _refuse("A refit")


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
