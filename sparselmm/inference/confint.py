"""Confidence intervals for every parameter of an lmer fit, as lme4's ``confint.merMod``.

The parameters and their names are lme4's (``profnames`` with ``oldNames = TRUE``): for each random-effects
term in lme4's order, the lower triangle of its matrix of standard deviations (diagonal) and correlations
(below it), column by column — ``.sig01`` … — then the residual SD ``.sigma``, then the fixed effects
under R's names (``(Intercept)`` for formulaic's ``Intercept``; other columns keep sparselmm's names).
A term with k coefficients contributes ``sd1, cor21, cor31, sd2, cor32, sd3`` for k = 3 (lme4's
``Cv_to_Sv``), the same order as θ.

Methods:

* ``"Wald"``: ``β̂ ± z_{(1+level)/2} · SE`` for the fixed effects, NaN (R's NA) for the variance
  parameters, exactly as ``confint(m, method = "Wald")``.
* ``"boot"``: intervals from :func:`sparselmm.inference.bootstrap.bootstrap` with the default statistic
  (these parameters), by lme4's ``confint.bootMer`` (``boot::boot.ci``'s percentile, basic or normal).
* ``"profile"``: likelihood-profile intervals (:mod:`sparselmm.inference.profile`, lme4's
  ``confint.thpr``).
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
import pandas as pd
from scipy.stats import norm

from ..design import r_name
from ..errors import ModelSpecError

__all__ = ["confint", "estimates", "parameter_names", "percent_labels", "sdcor", "wald_confint"]

METHODS = ("profile", "Wald", "boot")


def parameter_names(result) -> list[str]:
    """lme4's names of the parameters, in confint's order: ``.sig01``…, ``.sigma``, fixed effects.

    Examples
    --------
    >>> import sparselmm
    >>> from sparselmm.inference.confint import parameter_names
    >>> m = sparselmm.lmer("Reaction ~ Days + (Days | Subject)", sparselmm.datasets.load("sleepstudy"))
    >>> parameter_names(m)
    ['.sig01', '.sig02', '.sig03', '.sigma', '(Intercept)', 'Days']
    """
    n_theta = result.design.n_theta
    return [f".sig{i + 1:02d}" for i in range(n_theta)] + [".sigma"] + fixed_r_names(result)


def fixed_r_names(result) -> list[str]:
    """The fixed-effect names as R prints them (``(Intercept)``; other names as sparselmm has them)."""
    return [r_name(n) for n in result.design.fixed_names]


def sdcor(design, theta: np.ndarray, sigma: float) -> np.ndarray:
    """Standard deviations and correlations of the random effects from θ and σ (lme4's ``Cv_to_Sv``).

    Per term, the lower triangle of ``σ² T Tᵀ`` as SDs on the diagonal and correlations below it, column by
    column (θ's order). A correlation with a zero SD is NaN, as R's ``cov2cor`` gives.
    """
    out = np.empty(design.n_theta)
    for t in design.terms:
        T = t.factor(theta)
        cov = sigma**2 * (T @ T.T)
        sd = np.sqrt(np.diag(cov))
        r, c = t.tril_indices()
        with np.errstate(invalid="ignore", divide="ignore"):
            vals = np.where(r == c, sd[r], cov[r, c] / (sd[r] * sd[c]))
        out[t.theta_offset : t.theta_offset + t.n_theta] = vals
    return out


def estimates(result) -> pd.Series:
    """The estimates of :func:`parameter_names`' parameters: SDs/correlations, σ, fixed effects."""
    values = np.concatenate([sdcor(result.design, result.theta, result.sigma), [result.sigma], result.fixef])
    return pd.Series(values, index=parameter_names(result), name="estimate")


def percent_labels(level: float) -> list[str]:
    """Column labels ``"2.5 %"``, ``"97.5 %"`` as R's ``format(100 * a, trim = TRUE, digits = 3)`` makes them."""
    a = (1 - level) / 2
    probs = [100 * a, 100 * (1 - a)]
    # R formats the two numbers together: enough decimals for 3 significant digits of each, then the most
    decimals = 0
    for p in probs:
        text = f"{p:.3g}"
        if "e" not in text and "." in text:
            decimals = max(decimals, len(text.split(".")[1].rstrip("0")))
    return [f"{p:.{decimals}f} %" for p in probs]


def check_level(level) -> float:
    """``level`` as a float strictly between 0 and 1, else :class:`ModelSpecError`."""
    try:
        value = float(level)
    except (TypeError, ValueError):
        raise ModelSpecError(f"level must be a number between 0 and 1 (e.g. 0.95), not {level!r}.") from None
    if not 0 < value < 1:
        raise ModelSpecError(f"level must be strictly between 0 and 1 (e.g. 0.95), not {level!r}.")
    return value


def select_parameters(parm, names: list[str], n_var: int) -> list[int]:
    """Positions selected by ``parm`` (lme4's ``get.which``), with a clear error for unknown names.

    ``parm`` is None (all), a name or list of names (``"Intercept"`` and ``"(Intercept)"`` both work),
    ``"theta_"`` (all variance parameters, ``.sigma`` included) or ``"beta_"`` (all fixed effects), or
    integer positions (0-based).
    """
    if parm is None:
        return list(range(len(names)))
    items = [parm] if isinstance(parm, (str, Integral)) else list(parm)
    chosen: set[int] = set()
    unknown = []
    for item in items:
        if isinstance(item, Integral) and not isinstance(item, bool):
            if not 0 <= int(item) < len(names):
                raise ModelSpecError(f"parm position {item} is out of range; the model has {len(names)} parameters.")
            chosen.add(int(item))
        elif item == "theta_":
            chosen.update(range(n_var))
        elif item == "beta_":
            chosen.update(range(n_var, len(names)))
        elif isinstance(item, str) and r_name(item) in names:
            chosen.add(names.index(r_name(item)))
        else:
            unknown.append(item)
    if unknown:
        raise ModelSpecError(
            f"parm names unknown parameter(s) {unknown}; the parameters are {names} "
            "(or use 'theta_' for the variance parameters, 'beta_' for the fixed effects)."
        )
    return sorted(chosen)


def wald_confint(result, level: float = 0.95) -> pd.DataFrame:
    """lme4's ``confint(m, method = "Wald")``: NaN for the variance parameters, ``β̂ ± z·SE`` otherwise.

    Parameters
    ----------
    result : LmerResult
    level : float
        Confidence level, strictly between 0 and 1.

    Returns
    -------
    DataFrame
        Every parameter of :func:`parameter_names` (NaN rows for ``.sig01`` …, ``.sigma``), columns named
        by the percentages (``"2.5 %"``, ``"97.5 %"``).

    Raises
    ------
    sparselmm.ModelSpecError
        ``level`` is not strictly between 0 and 1.
    """
    level = check_level(level)
    a = (1 - level) / 2
    z = norm.ppf([a, 1 - a])
    names = parameter_names(result)
    n_var = result.design.n_theta + 1
    table = np.full((len(names), 2), np.nan)
    beta = result.fixef.to_numpy()
    se = np.sqrt(np.diag(result.vcov.to_numpy())) if beta.size else np.zeros(0)
    table[n_var:] = beta[:, None] + se[:, None] * z[None, :]
    return pd.DataFrame(table, index=names, columns=percent_labels(level))


def confint(
    result,
    parm=None,
    level: float = 0.95,
    method: str = "profile",
    nsim: int = 500,
    seed=None,
    boot_type: str = "perc",
    **kwargs,
) -> pd.DataFrame:
    """Confidence intervals for the parameters of an lmer fit (lme4's ``confint.merMod``).

    Parameters
    ----------
    result : LmerResult
    parm : str, list of str or int, optional
        Parameters to report (see :func:`select_parameters`); all by default.
    level : float
        Confidence level, strictly between 0 and 1.
    method : {"profile", "Wald", "boot"}
        lme4's methods (case-insensitive).
    nsim : int
        Bootstrap replicates (``method="boot"``; lme4's default 500).
    seed : int or numpy.random.SeedSequence, optional
        Seed of the bootstrap (reproducible, also with ``n_jobs > 1``).
    boot_type : {"perc", "basic", "norm"}
        Bootstrap interval type (``boot::boot.ci``'s).
    **kwargs
        Passed to :func:`~sparselmm.inference.bootstrap.bootstrap` (``n_jobs``, ``progress``, ``tol``,
        ``use_u``) or :func:`~sparselmm.inference.profile.profile` (``method="profile"``: ``criterion``
        ``"ML"``, lme4's and the default, or ``"REML"`` for the variance parameters; ``progress``).

    Returns
    -------
    DataFrame
        One row per parameter (lme4's names and order), columns ``"2.5 %"`` and ``"97.5 %"`` (for
        ``level=0.95``); NaN where lme4 gives NA.

    Raises
    ------
    sparselmm.ModelSpecError
        An unknown ``method`` or parameter in ``parm``, ``level`` outside (0, 1), further arguments with
        ``method="Wald"``; from the bootstrap or profile, their own argument errors.

    Examples
    --------
    >>> import sparselmm
    >>> from sparselmm.inference.confint import confint
    >>> m = sparselmm.lmer("Reaction ~ Days + (Days | Subject)", sparselmm.datasets.load("sleepstudy"))
    >>> list(confint(m, method="Wald").columns)
    ['2.5 %', '97.5 %']
    >>> ci = confint(m, parm=".sigma", level=0.9)  # profile interval of the residual SD
    """
    level = check_level(level)
    lookup = {m.lower(): m for m in METHODS}
    if not isinstance(method, str) or method.lower() not in lookup:
        raise ModelSpecError(f"method={method!r} is not known; choose one of {list(METHODS)}.")
    method = lookup[method.lower()]
    names = parameter_names(result)
    which = select_parameters(parm, names, result.design.n_theta + 1)
    if method == "Wald":
        if kwargs:
            raise ModelSpecError(f"method='Wald' takes no further arguments, got {sorted(kwargs)}.")
        return wald_confint(result, level).iloc[which]
    if method == "boot":
        from .bootstrap import bootstrap

        boot = bootstrap(result, nsim, seed=seed, **kwargs)
        return boot.confint(level=level, type=boot_type).iloc[which]
    from .profile import profile

    kwargs.setdefault("grid", False)  # the ends only; LmerResult.profile() tabulates the whole profile
    prof = profile(result, which=[names[i] for i in which], level=level, **kwargs)
    return prof.confint(level=level).loc[[names[i] for i in which]]
