"""What every fitted mixed model shares (lme4's ``merMod``, MixedModels.jl's ``MixedModel``): the base of
:class:`~sparselmm.LmerResult` and :class:`~sparselmm.glmm.GlmerResult`.

lme4 has one ``merMod`` whose linear and generalised fits differ in the response module only; here the
two results differ in how they were fitted and in what their response means (``vcov``, ``fitted``,
``residuals``, ``summary``), and share everything read from θ̂, β̂, b̂ and the design:

* the estimates and their tables — ``fixef``, ``bse``, ``varcorr`` (:func:`varcorr_rows`,
  :func:`varcorr_table`), ``ranef`` (:func:`ranef_frames`; the conditional variances of
  :func:`~sparselmm.linalg.factor.conditional_variance_blocks` on the fit's factor), ``coef``, ``predict``
  (lme4's ``type``: the link or the response scale);
* the likelihood's bookkeeping — ``nobs``, ``n_params`` (lme4's ``npar``: β, θ and σ when the family has
  a scale, lme4's ``useSc``), ``loglik``, ``aic``, ``bic``, ``df_resid``, ``ngroups``, ``is_singular``;
* lme4's ``getME`` accessors (``X``, ``y``, ``Zt``, ``Z``, ``Lambdat``, ``Lambda``, ``u``, ``b``, ``factor``,
  ``design``), ``__repr__``, the plots of :mod:`sparselmm.plot`, and pickling: a CHOLMOD factor does not
  pickle, so the subclass's workspace is copied without it and analysed again on first use
  (:mod:`sparselmm._pickling`).

A subclass sets, in its constructor, ``_design``, ``theta``, ``sigma``, ``optinfo``, ``data_name``,
``_beta`` (β̂), ``_u`` and ``_b`` (the spherical and original-scale modes), and provides ``objective``,
``vcov``, ``_use_scale``, ``_factor_at_fit()``, ``_fit_label()`` and ``_picklable_state(state)``, and
``_inverse_link(eta)`` when the link is not the identity.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import ModelSpecError
from .linalg.factor import conditional_variance_blocks
from .optimize import SINGULAR_TOL, is_singular
from .predict import linear_predictor

if TYPE_CHECKING:
    from collections.abc import Sequence

    from matplotlib.figure import Figure

    from ._typing import ColumnOrValues, FrameLike, Seed
    from .design import Design
    from .linalg.factor import Factor
    from .printing import AnovaTable

__all__ = ["MixedModelResult"]


class MixedModelResult:
    """The accessors a fitted mixed model shares (lme4's ``merMod``): the base of
    :class:`~sparselmm.LmerResult` and :class:`~sparselmm.glmm.GlmerResult`.

    Attributes
    ----------
    theta : ndarray
        Relative covariance parameters in lme4's order (``getME(m, "theta")``).
    sigma : float
        Residual standard deviation (lmer), or lme4's ``sigma(m)`` (glmer: 1 without a dispersion).
    optinfo : OptInfo
        What the optimiser did, how long set-up and optimisation took.
    data_name : str or None
        The data's name in the summary (``Data:``).
    """

    theta: np.ndarray
    sigma: float
    data_name: str | None
    _design: Design
    _beta: np.ndarray
    _u: np.ndarray
    _b: np.ndarray

    objective: float  # the optimised criterion (−2 log L, or the REML criterion): an attribute or a property

    # ---- what the subclass says about itself ------------------------------------------------------
    @property
    def vcov(self) -> pd.DataFrame:  # pragma: no cover - every subclass has its own
        """Covariance matrix of the fixed-effects estimates."""
        raise NotImplementedError

    @property
    def _use_scale(self) -> bool:  # pragma: no cover - every subclass has its own
        """σ is estimated (lme4's ``useSc``): it counts as a parameter and ``varcorr`` has a Residual row."""
        raise NotImplementedError

    def _factor_at_fit(self) -> Any:  # pragma: no cover - every subclass has its own
        """The factor of ``ΛᵀZᵀWZΛ + I`` at θ̂ (and the fitted weights), refactored if need be."""
        raise NotImplementedError

    def _fit_label(self) -> str:  # pragma: no cover - every subclass has its own
        """How the model was fitted, for ``repr`` (``"REML"``, ``"binomial(link='logit'), Laplace"``)."""
        raise NotImplementedError

    def _picklable_state(self, state: dict) -> dict:
        """``state`` (a copy of ``__dict__``) with what does not pickle replaced (see :meth:`__getstate__`)."""
        return state

    # ---- parameters ---------------------------------------------------------------------------
    @property
    def formula(self) -> str:
        """The model formula as given (whitespace normalised)."""
        return self._design.parsed.formula

    @property
    def fixef(self) -> pd.Series:
        """Fixed-effects estimates (on the link scale for glmer), named by model-matrix column."""
        return pd.Series(np.array(self._beta, dtype=float), index=self._design.fixed_names, name="fixef")

    @property
    def bse(self) -> pd.Series:
        """Standard errors of the fixed effects, the square roots of :attr:`vcov`'s diagonal."""
        return pd.Series(np.sqrt(np.diag(self.vcov.to_numpy())), index=self._design.fixed_names, name="se")

    def _term_covariances(self) -> list[np.ndarray]:
        """Per term, the k × k covariance matrix ``σ² T Tᵀ`` of its random effects (lme4 scales by
        ``sigma(m)`` for glmer too)."""
        return [self.sigma**2 * T @ T.T for T in (t.factor(self.theta) for t in self._design.terms)]

    @property
    def varcorr(self) -> pd.DataFrame:
        """Variance components as lme4's ``as.data.frame(VarCorr(m))``.

        One row per variance (``var2`` NaN, ``sdcor`` the standard deviation) and per covariance
        (``sdcor`` the correlation), term by term, then the residual (``var1``, ``var2`` NaN) when σ is
        estimated (lmer; glmer families with a dispersion — binomial and Poisson fits have no residual
        row). A DataFrame (:class:`sparselmm.printing.VarCorr`) that prints as lme4's
        ``print(VarCorr(m))``; ``.format_lines(comp=("Variance", "Std.Dev."))`` adds the variances,
        ``.to_frame()`` is the plain DataFrame.
        """
        rows = varcorr_rows(self._design.terms, self._term_covariances())
        if self._use_scale:
            rows.append(("Residual", np.nan, np.nan, self.sigma**2, self.sigma))
        return varcorr_table(rows, self._design.terms)

    # ---- likelihood ---------------------------------------------------------------------------
    @property
    def nobs(self) -> int:
        """Number of observations used in the fit (rows with missing values dropped)."""
        return self._design.n

    @property
    def n_params(self) -> int:
        """Number of estimated parameters: β, θ and σ when it is estimated (lme4's ``npar.merMod``, the
        AIC's ``k``)."""
        return self._design.p + self._design.n_theta + int(self._use_scale)

    @property
    def loglik(self) -> float:
        """Log-likelihood ``−objective / 2`` (the REML log-likelihood for REML fits, as lme4's ``logLik``)."""
        return -0.5 * self.objective

    @property
    def aic(self) -> float:
        """Akaike's information criterion ``−2 loglik + 2 n_params`` (on the REML criterion for REML fits,
        as lme4's ``AIC``)."""
        return -2 * self.loglik + 2 * self.n_params

    @property
    def bic(self) -> float:
        """Schwarz's criterion ``−2 loglik + n_params · log(nobs)``."""
        return -2 * self.loglik + self.n_params * np.log(self.nobs)

    @property
    def df_resid(self) -> int:
        """Residual degrees of freedom, ``nobs − n_params`` (lme4's ``df.residual``)."""
        return self.nobs - self.n_params

    @property
    def ngroups(self) -> dict[str, int]:
        """Number of levels of each grouping factor."""
        out: dict[str, int] = {}
        for t in self._design.terms:
            out.setdefault(t.group_name, t.n_levels)
        return out

    def is_singular(self, tol: float = SINGULAR_TOL) -> bool:
        """True when a random-effect variance is (near) zero or a correlation is ±1 (lme4's ``isSingular``:
        a diagonal element of Λ below ``tol``)."""
        return is_singular(self.theta, self._design.lower, tol, upper=getattr(self._design, "upper", None))

    # ---- random effects -----------------------------------------------------------------------
    def _cond_var_blocks(self) -> list[np.ndarray]:
        cached = self.__dict__.get("_cond_var")
        if cached is None:
            factor = self._factor_at_fit()
            cached = conditional_variance_blocks(factor, self.Lambdat, self._design.terms, self.sigma)
            self._cond_var = cached
        return cached

    def ranef(self, cond_var: bool = False) -> dict[str, pd.DataFrame]:
        """Conditional modes of the random effects ``b = Λû``, one DataFrame per grouping factor (rows:
        levels; columns: the terms' coefficient names).

        With ``cond_var=True`` each frame carries ``attrs["cond_var"]``, an array (levels × k × k) of
        conditional covariances (lme4's ``condVar``, ``σ² Λ C⁻¹ Λᵀ``; block diagonal across terms on one
        factor), and ``attrs["cond_sd"]``, a DataFrame of conditional standard deviations.
        """
        return ranef_frames(self._design.terms, self._b, self._cond_var_blocks() if cond_var else None)

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

    # ---- prediction ---------------------------------------------------------------------------
    def _inverse_link(self, eta: np.ndarray) -> np.ndarray:
        """The response scale of the linear predictor (the identity for a linear model)."""
        return eta

    def predict(
        self,
        newdata: FrameLike | None = None,
        re_form: str | None = None,
        allow_new_levels: bool = False,
        offset: ColumnOrValues | None = None,
        type: str = "link",
    ) -> pd.Series | np.ndarray:
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
        type : {"link", "response"}
            The linear predictor ``Xβ̂ + Zb̂ + offset``, or its inverse link (glmer's fitted means; the same
            for a linear model).

        Returns
        -------
        Series or ndarray
            One prediction per row: a Series on ``newdata``'s index when it is a pandas DataFrame, or on the
            index of the rows fitted (the caller's labels) when ``newdata`` is omitted; an array for other
            ``newdata`` (a dict, a polars frame).

        Raises
        ------
        sparselmm.DataError
            A grouping level not seen in fitting without ``allow_new_levels=True``, or a column missing from
            ``newdata``.
        sparselmm.FormulaError
            A ``re_form`` that is not understood or names random terms the model does not have.
        sparselmm.ModelSpecError
            A ``type`` other than ``"link"`` and ``"response"``.
        """
        if type not in ("link", "response"):
            raise ModelSpecError(f"type={type!r}: use 'link' or 'response'.")
        eta = linear_predictor(self._design, self._beta, self._b, newdata, re_form, allow_new_levels, offset)
        eta = np.asarray(eta)
        return prediction_series(eta if type == "link" else self._inverse_link(eta), newdata, self._design)

    # ---- lme4's getME -------------------------------------------------------------------------
    @property
    def X(self) -> np.ndarray:
        """Fixed-effects model matrix, n × p (lme4's ``getME(m, "X")``)."""
        return self._design.X

    @property
    def y(self) -> np.ndarray:
        """The response of the rows fitted."""
        return self._design.y

    @property
    def Zt(self) -> sp.csc_matrix:
        """Transposed random-effects model matrix, q × n, sparse (lme4's ``getME(m, "Zt")``)."""
        return self._design.Zt

    @property
    def Z(self) -> sp.csr_matrix:
        """Random-effects model matrix, n × q, sparse (lme4's ``getME(m, "Z")``)."""
        return self._design.Zt.T.tocsr()

    @property
    def Lambdat(self) -> sp.csc_matrix:
        """Transposed relative covariance factor ``Λᵀ`` at θ̂, q × q, sparse (lme4's ``getME(m, "Lambdat")``)."""
        return self._design.Lambdat(self.theta)

    @property
    def Lambda(self) -> sp.csc_matrix:
        """Relative covariance factor ``Λ`` at θ̂ (``Var(b) = σ² Λ Λᵀ``)."""
        return self.Lambdat.T.tocsc()

    @property
    def factor(self) -> Factor:
        """The factor of ``Λᵀ ZᵀWZ Λ + I`` at θ̂ (glmer: at the fitted weights W) — CHOLMOD or a dense-Schur
        factor, whichever the fit used; ``solve_L``, ``solve_Lt``, ``logdet``."""
        return self._factor_at_fit()

    @property
    def u(self) -> np.ndarray:
        """Spherical random effects ``u`` (``b = Λ u``)."""
        return np.array(self._u, dtype=float)

    @property
    def b(self) -> np.ndarray:
        """Random effects on the original scale, in ``Z``'s column order."""
        return np.array(self._b, dtype=float)

    @property
    def design(self) -> Design:
        """The model's design: parsed formula, ``X``, ``Zt``, random-effects terms, θ's layout and bounds."""
        return self._design

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.formula!r} ({self._fit_label()}), objective={self.objective:.4f}, "
            f"n={self.nobs}>"
        )

    def __getstate__(self):
        """Pickle without the CHOLMOD factor (it does not pickle): its symbolic analysis is redone on first
        use after unpickling (:mod:`sparselmm._pickling`); everything else is kept as it is."""
        return self._picklable_state(dict(self.__dict__))

    def __setstate__(self, state):
        self.__dict__.update(state)

    # ---- simulated responses (sparselmm.inference.replicates) -----------------------------------
    def simulate(self, nsim: int = 1, seed: Seed = None, use_u: bool = False) -> pd.DataFrame:
        """Responses simulated from the fitted model (lme4's ``simulate``).

        Random effects are drawn from their fitted distribution (``b* = Λ̂ u*``), then the response: for an
        lmer fit ``Xβ̂ + offset + Zb* + ε*`` with ``ε* ~ N(0, σ̂²/w)``; for a glmer fit from the family at
        ``μ* = g⁻¹(Xβ̂ + offset + Zb*)`` — binomial with the fit's trials (a ``cbind`` response's or the prior
        weights of a proportion), Poisson, negative binomial, Gamma and inverse Gaussian with the fit's
        dispersion (see :mod:`sparselmm.inference.replicates`).

        Parameters
        ----------
        nsim : int, default 1
            Number of simulated responses.
        seed : int or numpy.random.SeedSequence, optional
            Makes the draws reproducible; column ``i`` is drawn from ``SeedSequence(seed).spawn(nsim)[i]``,
            the response of bootstrap replicate ``i`` with the same seed.
        use_u : bool, default False
            Condition on the fitted random effects (lme4's ``use.u = TRUE``) instead of drawing new ones.

        Returns
        -------
        pandas.DataFrame
            One row per fitted row, columns ``sim_1`` … ``sim_<nsim>``, on the scale the model is fitted on
            (for glmer: 0/1, proportions of successes out of the fit's trials, counts, positive values), what
            :meth:`refit` takes.

        Raises
        ------
        sparselmm.ModelSpecError
            ``nsim`` not a whole number >= 1, a bad ``seed``, binomial trials that are not whole numbers.

        See Also
        --------
        sparselmm.inference.replicates.simulate : the function behind this method.
        """
        from .inference.replicates import simulate

        return simulate(self, nsim=nsim, seed=seed, use_u=use_u)

    def bootstrap_lrt(
        self,
        other: MixedModelResult,
        nsim: int = 1000,
        seed: Seed = None,
        n_jobs: int = 1,
        progress: bool | None = None,
    ) -> pd.DataFrame:
        """Parametric-bootstrap likelihood-ratio test against a model this one is nested in, or that is nested
        in this one (pbkrtest's ``PBmodcomp``; the model with fewer parameters is the null, whichever order).

        Responses are simulated from the null model (an lmer null refitted by ML first), both models are
        refitted to each from their own estimates, and the p-value is pbkrtest's: ``(1 + #{LRT* > LRT}) /
        (1 + #{LRT* > 0})``.

        Parameters
        ----------
        other : LmerResult or GlmerResult
            A fit of the same kind to the same rows: lmer with lmer, glmer with glmer of the same family and
            link.
        nsim : int, default 1000
            Number of simulated responses.
        seed : int or numpy.random.SeedSequence, optional
            Makes the run reproducible, for any ``n_jobs``.
        n_jobs : int, default 1
            Worker processes (``-1``: one per core).
        progress : bool or None
            A progress bar: None (default) for runs longer than 2 s on a terminal or in a notebook, True
            always, False never.

        Returns
        -------
        pandas.DataFrame
            Rows ``LRT`` (the χ² test, as ``anova``) and ``PBtest`` (the bootstrap test); columns ``stat``,
            ``df``, ``p.value``. ``attrs["draws"]`` holds the simulated statistics.

        Raises
        ------
        sparselmm.ModelSpecError
            ``other`` is not a fit of the same kind (family and link), the models are not nested, a bad
            ``nsim``, or every replicate failed.
        sparselmm.DataError
            The models were fitted to different rows.

        See Also
        --------
        sparselmm.inference.lrt.bootstrap_lrt : the function behind this method.
        """
        from .inference.lrt import bootstrap_lrt

        return bootstrap_lrt(self, other, nsim=nsim, seed=seed, n_jobs=n_jobs, progress=progress)

    # ---- refits with another model (R's update, lme4's drop1) -------------------------------------------
    #: the call that made the fit (:class:`sparselmm.refit.FitCall`), recorded by lmer and glmer
    call = None

    def update(self, formula: str | None = None, data=None, **changes) -> MixedModelResult:
        """The model fitted again with a changed formula (R's ``.`` notation), data or arguments (R's
        ``update``); see :func:`sparselmm.update`.

        Examples
        --------
        >>> import sparselmm
        >>> m = sparselmm.lmer("Reaction ~ Days + (Days | Subject)", sparselmm.datasets.load("sleepstudy"))
        >>> m.update("~ . - (Days | Subject) + (1 | Subject)").formula
        'Reaction ~ Days + (1 | Subject)'
        """
        from .refit import update

        return update(self, formula, data, **changes)

    def drop1(self, test: str = "none", scope: str | Sequence[str] | None = None) -> AnovaTable:
        """Drop each fixed-effect term in turn and refit by ML (lme4's ``drop1``; lmer and glmer fits).

        Parameters
        ----------
        test : {"none", "Chisq"}
            ``"Chisq"`` adds the likelihood-ratio statistic against the full model and its χ² p-value.
        scope : str or list of str, optional
            Terms to drop (R's labels such as ``"recipe:temp"``); default: every term that no other term
            contains (R's ``drop.scope``).

        Returns
        -------
        AnovaTable
            A DataFrame (:class:`sparselmm.printing.AnovaTable`, printed as R prints it) with rows
            ``<none>`` (the full model) and one per term dropped; columns ``npar`` (parameters removed),
            ``AIC`` (of the ML fits) and, with ``test="Chisq"``, ``LRT`` and ``Pr(Chi)``.

        Raises
        ------
        sparselmm.ModelSpecError
            An unknown ``test`` or a term not in the model.

        See Also
        --------
        sparselmm.inference.lrt.drop1 : the function behind this method.
        anova : likelihood-ratio tests between any nested fits.
        """
        from .inference.lrt import drop1
        from .printing import AnovaTable

        return AnovaTable.wrap(drop1(self, test=test, scope=scope))

    # ---- plots (sparselmm.plot; matplotlib, the "plot" extra) ----------------------------------
    def plot_ranef(self, group: str | Sequence[str] | None = None, level: float = 0.95, **kwargs: Any) -> Figure:
        """Caterpillar plot of the conditional modes with ``level`` intervals from the conditional variances
        (lme4's ``dotplot(ranef(m, condVar = TRUE))``). See :func:`sparselmm.plot.plot_ranef`."""
        from .plot import plot_ranef

        return plot_ranef(self, group=group, level=level, **kwargs)

    def plot_qq_ranef(self, group: str | Sequence[str] | None = None, level: float = 0.95, **kwargs: Any) -> Figure:
        """Normal QQ plot of the conditional modes (lme4's ``qqmath(ranef(m, condVar = TRUE))``).
        See :func:`sparselmm.plot.plot_qq_ranef`."""
        from .plot import plot_qq_ranef

        return plot_qq_ranef(self, group=group, level=level, **kwargs)

    def plot_residuals(self, type: str = "pearson", **kwargs: Any) -> Figure:
        """Residuals against fitted values (lme4's ``plot(m)``). See :func:`sparselmm.plot.plot_residuals`."""
        from .plot import plot_residuals

        return plot_residuals(self, type=type, **kwargs)


# ---- the shared tables ------------------------------------------------------------------------------
def ranef_frames(terms, b: np.ndarray, blocks: list[np.ndarray] | None = None) -> dict[str, pd.DataFrame]:
    """The random effects ``b`` as one DataFrame per grouping factor (rows: levels; columns: the terms'
    coefficient names), the one shape of every fit's ``ranef`` (which the plots read).

    ``blocks`` (per term, levels × k × k conditional covariances) adds ``attrs["cond_var"]`` (block diagonal
    across the terms on one factor) and ``attrs["cond_sd"]`` (a DataFrame of conditional SDs).
    """
    grouped: dict[str, list[int]] = {}
    for i, t in enumerate(terms):
        grouped.setdefault(t.group_name, []).append(i)
    out = {}
    for name, idx in grouped.items():
        group_terms = [terms[i] for i in idx]
        cols, frames = [], []
        for t in group_terms:
            frames.append(b[t.offset : t.offset + t.q].reshape(t.n_levels, t.k))
            cols.extend(t.cnms)
        df = pd.DataFrame(np.hstack(frames), index=group_terms[0].levels.copy(), columns=cols)
        df.index.name = name
        if blocks is not None:
            k = len(cols)
            cv = np.zeros((len(df), k, k))
            pos = 0
            for i, t in zip(idx, group_terms):
                cv[:, pos : pos + t.k, pos : pos + t.k] = blocks[i]
                pos += t.k
            df.attrs["cond_var"] = cv
            df.attrs["cond_sd"] = pd.DataFrame(np.sqrt(np.einsum("lii->li", cv)), index=df.index, columns=cols)
        out[name] = df
    return out


def varcorr_rows(terms, covariances) -> list[tuple]:
    """lme4's ``as.data.frame(VarCorr(m))`` rows of the random-effects terms: per term its variances (SD in
    ``sdcor``), then its covariances (correlation in ``sdcor``). A ``diag(… | g)`` term has no covariance rows
    (its effects are independent by construction); a ``cs(… | g)`` term's rows all hold the common ρ."""
    rows = []
    for t, cov in zip(terms, covariances):
        sd = np.sqrt(np.diag(cov))
        for i in range(t.k):
            rows.append((t.group_name, t.cnms[i], np.nan, cov[i, i], sd[i]))
        if _structure_name(t) == "diag":
            continue
        for j in range(t.k):
            for i in range(j + 1, t.k):
                corr = cov[i, j] / (sd[i] * sd[j]) if sd[i] * sd[j] > 0 else np.nan
                rows.append((t.group_name, t.cnms[j], t.cnms[i], cov[i, j], corr))
    return rows


def varcorr_table(rows: list[tuple], terms) -> pd.DataFrame:
    """The ``varcorr`` frame of :func:`varcorr_rows`' rows (plus a residual row), printed as lme4's
    ``print(VarCorr(m))`` (:class:`sparselmm.printing.VarCorr`)."""
    from .printing import VarCorr

    frame = pd.DataFrame(rows, columns=["group", "var1", "var2", "vcov", "sdcor"])
    for col in ("var1", "var2"):  # missing names are NaN whatever the column's dtype
        frame[col] = frame[col].astype(object).where(frame[col].notna(), np.nan)
    table = VarCorr(frame)
    table.attrs["term_sizes"] = [int(t.k) for t in terms]
    table.attrs["term_structures"] = [_structure_name(t) for t in terms]
    return table


def _structure_name(term) -> str:
    """``"us"``, ``"diag"`` or ``"cs"``; a one-coefficient ``diag`` term is an ordinary scalar term."""
    name = getattr(term.term, "structure", "us")
    return "us" if name == "diag" and term.k == 1 else name


def prediction_series(values, newdata, design):
    """Predictions as a Series on ``newdata``'s index (a pandas DataFrame) or on the caller's index of the
    rows fitted (no ``newdata``); other ``newdata`` (a dict, a polars frame) gives the array."""
    values = np.asarray(values)
    if newdata is None:
        index = getattr(getattr(design, "data", None), "index", None)
        if index is None or len(index) != values.shape[0]:
            index = pd.RangeIndex(values.shape[0])
        return pd.Series(values, index=index)
    if isinstance(newdata, pd.DataFrame) and len(newdata) == values.shape[0]:
        return pd.Series(values, index=newdata.index)
    return values
