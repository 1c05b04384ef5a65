"""``GlmerResult``: what :func:`sparselmm.glmer` returns — lme4's ``glmerMod``: the shared accessors of
:class:`~sparselmm.result_base.MixedModelResult` plus what a generalised fit adds (the family, σ as lme4's
``sigma(m)``, ``vcov`` from the criterion's Hessian, response-scale fitted values, the GLM residuals, the
Wald z table and lme4's summary)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import ModelSpecError
from ..result_base import MixedModelResult
from ..summary import GlmmSummary

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

    def confint(self, level: float = 0.95, method: str = "Wald") -> pd.DataFrame:
        """lme4's ``confint(m, method = "Wald")``: ``β̂ ± z·SE``, NaN rows for the variance parameters.

        Profile and bootstrap intervals of glmer fits are not available yet.

        Raises
        ------
        sparselmm.ModelSpecError
            ``method`` other than ``"Wald"``, or ``level`` outside (0, 1).
        """
        from ..inference.confint import wald_confint

        if not isinstance(method, str) or method.lower() != "wald":
            raise ModelSpecError(
                f"method={method!r}: a glmer fit has Wald intervals only so far (method='Wald'); profile and "
                "bootstrap intervals are lmer's."
            )
        return wald_confint(self, level)

    def summary(self) -> GlmmSummary:
        """lme4's ``summary(glmer)``: criteria, scaled residuals, random effects and the fixed effects' z
        tests; print it."""
        return GlmmSummary(self)
