"""``MixedLM.get_distribution``: responses drawn from the model at given parameters, as statsmodels draws them."""

from __future__ import annotations

import numpy as np

from ..errors import DataError, ModelSpecError
from .params import MixedLMParams, psd_factor

__all__ = ["MixedLMDistribution"]


class MixedLMDistribution:
    """Draws from a mixed linear model at given parameters (``MixedLM.get_distribution``), as statsmodels'
    ``_mixedlm_distribution``: ``rvs`` draws the group random effects, then each variance component's
    coefficients group by group, then the residuals, in statsmodels' order (same draws for the same
    generator), vectorised over the groups.

    ``params`` are packed with the fixed effects and in the plain (non-square-root) parameterisation, with
    the covariance parameters divided by ``scale`` (as ``MixedLMResults.params``).
    """

    def __init__(self, model, params, scale, exog=None):
        params = np.asarray(params, dtype=float).ravel()
        need = model.k_fe + model.k_re2 + model.k_vc
        if params.size != need:
            raise ModelSpecError(
                f"params must have {need} values (fixed effects, cov_re lower triangle, variance components), "
                f"not {params.size}."
            )
        if not np.isfinite(scale) or scale <= 0:
            raise ModelSpecError(f"scale must be a positive number, not {scale!r}.")
        self.model = model
        self.exog = model.exog if exog is None else np.asarray(exog, dtype=float)
        if self.exog.ndim == 1:
            self.exog = self.exog[:, None]
        if self.exog.shape != (model.nobs, model.k_fe):
            raise DataError(
                f"exog must have {model.nobs} rows (one per observation of the model) and {model.k_fe} columns, "
                f"not shape {self.exog.shape}."
            )
        po = MixedLMParams.from_packed(params, model.k_fe, model.k_re, False, True)
        self.fe_params = po.fe_params
        self.cov_re = scale * po.cov_re
        self.vcomp = scale * po.vcomp
        self.scale = float(scale)
        self._T = psd_factor(self.cov_re)
        if self._T is None or np.any(self.vcomp < 0):
            raise ModelSpecError("params must give a positive semi-definite cov_re and non-negative vcomp.")
        self.group_idx = model._codes

    def rvs(self, n=None, rng=None, random_state=None):
        """A simulated response vector (``n`` is ignored, as in statsmodels). ``rng``: None, a seed, a
        ``numpy.random.Generator`` or ``RandomState`` (``random_state`` is statsmodels' deprecated name)."""
        if rng is None:
            rng = random_state
        rng = _check_random_state(rng)
        model = self.model
        y = self.exog @ self.fe_params
        if model.k_re:
            u = rng.normal(size=(model.n_groups, model.k_re)) @ self._T.T
            y = y + (u[self.group_idx, :] * model.exog_re).sum(1)
        for blk, v in zip(model._vc_blocks, self.vcomp):
            y = y + np.sqrt(v) * (blk.matrix @ rng.normal(size=blk.matrix.shape[1]))
        return y + np.sqrt(self.scale) * rng.normal(size=y.size)


def _check_random_state(rng):
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, np.random.Generator | np.random.RandomState):
        return rng
    try:
        return np.random.default_rng(rng)
    except (TypeError, ValueError):
        raise ModelSpecError(
            f"rng must be None, a seed, a numpy Generator or RandomState, not {type(rng).__name__}."
        ) from None
