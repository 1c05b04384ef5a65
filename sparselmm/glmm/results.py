"""``GlmerResult``: what :func:`sparselmm.glmer` returns — lme4's ``glmerMod`` accessors and summary."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ..design import r_name
from ..errors import ModelSpecError
from ..printing import r_named_vector

__all__ = ["GlmerResult"]


class GlmerResult:
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
        self._model = model
        self.optinfo = optinfo
        self.data_name = data_name

    # ---- parameters ---------------------------------------------------------------------------------
    @property
    def formula(self) -> str:
        """The model formula as given."""
        return self._design.parsed.formula

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
    def fixef(self) -> pd.Series:
        """Fixed-effects estimates β on the link scale, named by model-matrix column."""
        return pd.Series(self._beta, index=self._design.fixed_names, name="fixef")

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

    @property
    def bse(self) -> pd.Series:
        """Standard errors of the fixed effects (from :attr:`vcov`)."""
        return pd.Series(np.sqrt(np.diag(self.vcov.to_numpy())), index=self._design.fixed_names, name="bse")

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

    def _term_covariances(self) -> list[np.ndarray]:
        s2 = self.sigma**2
        return [s2 * (t.factor(self.theta) @ t.factor(self.theta).T) for t in self._design.terms]

    @property
    def varcorr(self) -> pd.DataFrame:
        """``as.data.frame(VarCorr(m))``: variances, SDs, covariances/correlations.

        As lme4, for a family with a dispersion the random-effects covariances are ``σ² θθᵀ`` and a
        ``Residual`` row holds ``σ²`` and ``σ`` (:attr:`sigma`); binomial and Poisson fits have no
        residual row.
        """
        from ..results import varcorr_rows, varcorr_table

        rows = varcorr_rows(self._design.terms, self._term_covariances())
        if self.family.has_scale:
            rows.append(("Residual", np.nan, np.nan, self.sigma**2, self.sigma))
        return varcorr_table(rows, self._design.terms)

    # ---- likelihood -----------------------------------------------------------------------------------
    @property
    def nobs(self) -> int:
        """Number of observations used in the fit."""
        return self._design.n

    @property
    def n_params(self) -> int:
        """θ, β and (Gamma, inverse Gaussian) the dispersion: lme4's ``npar.merMod``, the AIC's ``k``."""
        return self.theta.size + self._beta.size + int(self.family.has_scale)

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

    @property
    def loglik(self) -> float:
        """Log-likelihood, ``−criterion / 2`` (lme4's ``logLik``)."""
        return -0.5 * self.criterion

    @property
    def aic(self) -> float:
        """Akaike's information criterion ``−2 loglik + 2 n_params``."""
        return self.criterion + 2 * self.n_params

    @property
    def bic(self) -> float:
        """Schwarz's criterion ``−2 loglik + n_params · log(nobs)``."""
        return self.criterion + np.log(self.nobs) * self.n_params

    @property
    def df_resid(self) -> int:
        """Residual degrees of freedom, ``nobs − n_params``."""
        return self.nobs - self.n_params

    @property
    def ngroups(self) -> dict[str, int]:
        """Number of levels of each grouping factor."""
        return {t.group_name: t.n_levels for t in self._design.terms}

    def is_singular(self, tol: float = 1e-4) -> bool:
        """lme4's ``isSingular``: a diagonal θ within ``tol`` of 0."""
        return bool(np.any((self._design.lower == 0) & (self.theta < tol)))

    # ---- random effects -------------------------------------------------------------------------------
    def _cond_var_blocks(self, max_q: int = 20000) -> list[np.ndarray] | None:
        """Per term, the (levels × k × k) conditional covariances ``Λ C⁻¹ Λᵀ`` (lme4's ``postVar``)."""
        d, model = self._design, self._model
        q = d.q
        if q > max_q:
            return None
        _final_refactor(self)
        s2 = self.sigma**2  # lme4's ranef(condVar = TRUE) scales by sigma(m)^2
        Lt = d.Lambdat(self.theta)
        out = []
        for t in d.terms:
            blocks = np.zeros((t.n_levels, t.k, t.k))
            per = max(1, 2000 // t.k)
            for l0 in range(0, t.n_levels, per):
                levs = np.arange(l0, min(l0 + per, t.n_levels))
                cols = (t.offset + levs[:, None] * t.k + np.arange(t.k)[None, :]).ravel()
                E = np.zeros((q, cols.size))
                E[cols, np.arange(cols.size)] = 1.0
                Y = s2 * np.asarray(Lt.T @ model.solve(np.asarray(Lt @ E)))  # σ² Λ C⁻¹ Λᵀ E
                sub = Y[cols, :].reshape(levs.size, t.k, levs.size, t.k)
                blocks[levs] = sub[np.arange(levs.size), :, np.arange(levs.size), :]
            out.append(blocks)
        return out

    def ranef(self, cond_var: bool = False) -> dict[str, pd.DataFrame]:
        """Conditional modes ``b = Λû`` per grouping factor; ``cond_var=True`` adds lme4's ``postVar``.

        The same shape as :meth:`sparselmm.LmerResult.ranef`: one frame per grouping factor, columns named
        by the terms' coefficients; with ``cond_var`` each frame has ``attrs["cond_var"]`` (levels × k × k) and
        ``attrs["cond_sd"]`` (a DataFrame).
        """
        from ..results import ranef_frames

        blocks = self._cond_var_blocks() if cond_var else None
        return ranef_frames(self._design.terms, self._state["b"], blocks)

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
        """Predictions on the link (``type="link"``) or response scale, as lme4's ``predict.merMod``.

        ``re_form``: all random effects (None), none (``"~0"``) or those of a formula such as
        ``"~(1 | herd)"``; unseen levels in ``newdata`` raise unless ``allow_new_levels``. A Series on
        ``newdata``'s index (a pandas DataFrame) or on the fitted rows' index (no ``newdata``).
        """
        from ..predict import linear_predictor

        if type not in ("link", "response"):
            raise ModelSpecError(f"type={type!r}: use 'link' or 'response'.")
        from ..results import prediction_series

        eta = linear_predictor(self._design, self._beta, self._state["b"], newdata, re_form, allow_new_levels, offset)
        eta = np.asarray(eta)
        return prediction_series(eta if type == "link" else self.family.link.linkinv(eta), newdata, self._design)

    # ---- summary -------------------------------------------------------------------------------------
    def summary(self) -> GlmmSummary:
        """lme4's ``summary(glmer)``: criteria, scaled residuals, random effects and the fixed effects' z
        tests; print it."""
        return GlmmSummary(self)

    def __repr__(self) -> str:
        return f"<GlmerResult {self.family!r} {self.formula!r} -2logL={self.criterion:.4f}>"

    def __getstate__(self):
        """Pickle without the CHOLMOD factor of the PIRLS model (it does not pickle): the copy's factor is
        analysed again from the model's pattern on first use (:func:`_final_refactor` refactors it)."""
        from .._pickling import picklable_sparse_cholesky

        state = dict(self.__dict__)
        model = self._model
        if model is not None and not getattr(model, "schur", False):
            import copy

            import scipy.sparse as sp

            pattern = model.M_lower if model.scalar else model._A_map[4]
            pattern = pattern.copy()
            pattern.data[:] = 1.0
            new = copy.copy(model)
            new.chol = picklable_sparse_cholesky(model.chol, (pattern + sp.identity(model.q, format="csc")).tocsc())
            state["_model"] = new
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)


def _final_refactor(res: GlmerResult) -> None:
    """Put the factor of ``ΛᵀZᵀWZΛ + I`` at the fitted weights back into the model's CHOLMOD object."""
    res._model.factor(res.theta, res._state["w"])


def _fmt(x: float, digits: int = 4) -> str:
    return f"{x:.{digits}g}" if np.isfinite(x) else "NA"


def _p(p: float) -> str:
    if not np.isfinite(p):
        return "NA"
    return "< 2e-16" if p < 2e-16 else f"{p:.3g}"


def _stars(p: float) -> str:
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else "." if p < 0.1 else ""


class GlmmSummary:
    """lme4's ``summary(glmerMod)`` printout (``str(summary)``), and its parts as data."""

    def __init__(self, res: GlmerResult):
        self.res = res
        self.coefficients = res.coef_table()

    def __str__(self) -> str:
        r = self.res
        # lme4's methTitle: nAGQ = 0 is titled as quadrature with 0 points
        method = "Laplace Approximation" if r.nAGQ == 1 else f"Adaptive Gauss-Hermite Quadrature, nAGQ = {r.nAGQ}"
        out = [
            f"Generalized linear mixed model fit by maximum likelihood ({method}) ['glmerMod']",
            f" Family: {r.family.name}  ( {r.family.link.name} )",
            f"Formula: {r.formula}",
        ]
        if r.data_name:
            out.append(f"   Data: {r.data_name}")
        out.append("")
        heads = ["AIC", "BIC", "logLik", "deviance", "df.resid"]
        vals = [f"{r.aic:.1f}", f"{r.bic:.1f}", f"{r.loglik:.1f}", f"{r.deviance:.1f}", f"{r.df_resid}"]
        width = max(max(len(h), len(v)) for h, v in zip(heads, vals)) + 1
        out.append(" ".join(h.rjust(width) for h in heads))
        out.append(" ".join(v.rjust(width) for v in vals))
        out.append("")
        pr = r.residuals("pearson") / r.sigma  # lme4: residuals(m, "pearson", scaled = TRUE)
        qs = np.quantile(pr, [0, 0.25, 0.5, 0.75, 1])
        out.append("Scaled residuals: ")
        out.extend(r_named_vector(["Min", "1Q", "Median", "3Q", "Max"], qs, 4))
        out.append("")
        out.append("Random effects:")
        out.extend(r.varcorr.format_lines(digits=4, comp=("Variance", "Std.Dev.")))  # lme4's formatVC
        groups = "; ".join(f"{g}, {n}" for g, n in r.ngroups.items())
        out.append(f"Number of obs: {r.nobs}, groups:  {groups}")
        out.append("")
        out.append("Fixed effects:")
        ct = self.coefficients
        table = [["", "Estimate", "Std. Error", ct.columns[2], "Pr(>|z|)", ""]]
        for name, row in ct.iterrows():
            table.append(
                [
                    r_name(name),
                    f"{row['Estimate']:.5f}",
                    f"{row['Std. Error']:.5f}",
                    f"{row.iloc[2]:.3f}",
                    _p(row["Pr(>|z|)"]),
                    _stars(row["Pr(>|z|)"]),
                ]
            )
        widths = [max(len(x[i]) for x in table) for i in range(6)]
        for x in table:
            out.append(" ".join([x[0].ljust(widths[0])] + [v.rjust(w) for v, w in zip(x[1:5], widths[1:5])] + [x[5]]))
        out.append("---")
        out.append("Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1")
        msgs = [m for m in r.optinfo.messages if not m.startswith("NLopt")]
        if msgs:
            out.append("optimizer (bobyqa) convergence code: 0 (OK)")
            out.extend(msgs)
        return "\n".join(out)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        from ..printing import html_pre

        return html_pre(str(self))
