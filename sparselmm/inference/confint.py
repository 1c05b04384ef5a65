"""Confidence intervals for every parameter of an lmer or glmer fit, as lme4's ``confint.merMod``.

The parameters, their names and order are lme4's (:mod:`sparselmm.parameters`): ``.sig01`` … (the random
effects' SDs and correlations), ``.sigma``, then the fixed effects.

Methods:

* ``"Wald"``: ``β̂ ± z_{(1+level)/2} · SE`` for the fixed effects, NaN (R's NA) for the variance
  parameters, exactly as ``confint(m, method = "Wald")``. A fit with covariance structures
  (:mod:`sparselmm.covstruct`) or a residual structure (:mod:`sparselmm.residual`) also gets Wald intervals of
  its variance parameters on their unconstrained scale (log SD, atanh correlation, log σ, log SD ratio, atanh ρ),
  as glmmTMB's ``confint(method = "wald")`` and nlme's ``intervals()`` (:mod:`sparselmm.inference.varpar`);
  the residual parameters' rows ``.ratio.<level>`` and ``.rho`` follow ``.sigma``.
* ``"boot"``: intervals from :func:`sparselmm.inference.bootstrap.bootstrap` with the default statistic
  (these parameters), by lme4's ``confint.bootMer`` (``boot::boot.ci``'s percentile, basic or normal).
* ``"profile"``: likelihood-profile intervals (:mod:`sparselmm.inference.profile`, lme4's
  ``confint.thpr``); a glmer fit's on the criterion it minimised, all parameters re-optimised
  (:mod:`sparselmm.inference.profile_glmm`).

A glmer fit has no ``.sigma`` unless its family has a dispersion, and its bootstrap statistics are lme4's for
a GLMM (:meth:`sparselmm.glmm.GlmerResult.boot_statistics`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import norm

from ..errors import ModelSpecError
from ..parameters import check_level, percent_labels, select_parameters

__all__ = ["confint", "wald_confint"]

METHODS = ("profile", "Wald", "boot")


def wald_confint(result, level: float = 0.95) -> pd.DataFrame:
    """lme4's ``confint(m, method = "Wald")``: NaN for the variance parameters, ``β̂ ± z·SE`` otherwise.

    Parameters
    ----------
    result : LmerResult or GlmerResult
    level : float
        Confidence level, strictly between 0 and 1.

    Returns
    -------
    DataFrame
        Every parameter of :func:`~sparselmm.parameters.parameter_names` (NaN rows for ``.sig01`` …,
        ``.sigma``), columns named by the percentages (``"2.5 %"``, ``"97.5 %"``).

    Raises
    ------
    sparselmm.ModelSpecError
        ``level`` is not strictly between 0 and 1.
    """
    from .varpar import needs_numeric, variance_names, wald_variance_intervals

    level = check_level(level)
    a = (1 - level) / 2
    z = norm.ppf([a, 1 - a])
    names = variance_names(result)
    beta = result.fixef.to_numpy()
    n_var = len(names) - beta.size
    table = np.full((len(names), 2), np.nan)
    se = np.sqrt(np.diag(result.vcov.to_numpy())) if beta.size else np.zeros(0)
    table[n_var:] = beta[:, None] + se[:, None] * z[None, :]
    if getattr(result, "family", None) is None and needs_numeric(result):
        table[:n_var] = wald_variance_intervals(result, level)[0].to_numpy()
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
    """Confidence intervals for the parameters of an lmer or glmer fit (lme4's ``confint.merMod``).

    Parameters
    ----------
    result : LmerResult or GlmerResult
    parm : str, list of str or int, optional
        Parameters to report (see :func:`~sparselmm.parameters.select_parameters`); all by default.
    level : float
        Confidence level, strictly between 0 and 1.
    method : {"profile", "Wald", "boot"}
        lme4's methods (case-insensitive). ``"profile"`` is refused for glmer fits lme4 cannot profile either
        (a family with a dispersion, ``nAGQ = 0``).
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
        ``method="Wald"``, ``method="profile"`` for a glmer fit with a dispersion or ``nAGQ = 0``; from the
        bootstrap or profile, their own argument errors.

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
    from .varpar import variance_names

    names = variance_names(result)
    which = select_parameters(parm, names, len(names) - len(result.fixef))
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
