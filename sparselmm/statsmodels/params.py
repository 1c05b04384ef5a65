"""Parameter containers of the statsmodels-style interface: :class:`MixedLMParams` and :class:`VCSpec`.

Packing follows statsmodels exactly: fixed effects (optional), then the lower triangle of ``cov_re``
in ``numpy.tril_indices`` order (row by row) — or of its Cholesky factor when ``use_sqrt`` — then the
variance components (or their square roots). All variance parameters are on the "profile" scale,
i.e. divided by the residual variance ``scale``.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import DataError, caller_stacklevel

__all__ = ["MixedLMParams", "VCSpec", "convert_vc_dict", "psd_factor"]


def psd_factor(cov: np.ndarray) -> np.ndarray | None:
    """A lower-triangular ``T`` with ``T Tᵀ = cov`` and ``diag(T) ≥ 0`` for a positive semi-definite
    ``cov`` (Cholesky when definite, QR of a symmetric square root when singular); None if ``cov`` is
    not positive semi-definite."""
    cov = np.asarray(cov, dtype=float)
    k = cov.shape[0]
    if k == 0:
        return np.zeros((0, 0))
    if not np.all(np.isfinite(cov)):
        return None
    try:
        return np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        pass
    w, v = np.linalg.eigh((cov + cov.T) / 2)
    if w.min() < -1e-10 * max(1.0, abs(w).max()):
        return None
    A = v * np.sqrt(np.clip(w, 0, None))  # A Aᵀ = cov
    r = np.linalg.qr(A.T, mode="r")  # Aᵀ = Q R  ⇒  cov = Rᵀ R
    T = r.T
    return T * np.where(np.diag(T) < 0, -1.0, 1.0)[None, :]


class MixedLMParams:
    """A parameter state of a mixed linear model, as statsmodels' ``MixedLMParams``.

    Attributes ``fe_params`` (fixed effects), ``cov_re`` (``k_re × k_re`` random-effects covariance)
    and ``vcomp`` (variance components) are all on the profile scale (divided by ``scale``).
    """

    def __init__(self, k_fe: int, k_re: int, k_vc: int):
        self.k_fe = int(k_fe)
        self.k_re = int(k_re)
        self.k_re2 = self.k_re * (self.k_re + 1) // 2
        self.k_vc = int(k_vc)
        self.k_tot = self.k_fe + self.k_re2 + self.k_vc
        self._ix = np.tril_indices(self.k_re)
        self.fe_params = np.zeros(self.k_fe)
        self.cov_re = np.eye(self.k_re)
        self.vcomp = np.ones(self.k_vc)

    @staticmethod
    def from_packed(params, k_fe: int, k_re: int, use_sqrt: bool, has_fe: bool) -> MixedLMParams:
        """Unpack a parameter vector (see the module docstring for the layout)."""
        params = np.asarray(params, dtype=float).ravel()
        k_re2 = k_re * (k_re + 1) // 2
        start = k_fe if has_fe else 0
        k_vc = params.size - start - k_re2
        if k_vc < 0:
            raise DataError(
                f"A packed parameter vector for k_fe={k_fe}, k_re={k_re} (has_fe={has_fe}) needs at least "
                f"{start + k_re2} values, not {params.size}."
            )
        pa = MixedLMParams(k_fe, k_re, k_vc)
        pa.fe_params = params[:k_fe].copy() if has_fe else np.zeros(k_fe)
        low = np.zeros((k_re, k_re))
        low[pa._ix] = params[start : start + k_re2]
        pa.cov_re = low @ low.T if use_sqrt else low + low.T - np.diag(np.diag(low))
        vc = params[start + k_re2 :].copy()
        pa.vcomp = vc**2 if use_sqrt else vc
        return pa

    @staticmethod
    def from_components(fe_params=None, cov_re=None, cov_re_sqrt=None, vcomp=None) -> MixedLMParams:
        """Build from the parts; ``cov_re_sqrt`` (a lower-triangular square root) may replace ``cov_re``."""
        fe = np.zeros(0) if fe_params is None else np.asarray(fe_params, dtype=float).ravel()
        vc = np.zeros(0) if vcomp is None else np.asarray(vcomp, dtype=float).ravel()
        if cov_re_sqrt is not None:
            s = np.atleast_2d(np.asarray(cov_re_sqrt, dtype=float))
            cov = s @ s.T
        elif cov_re is not None:
            cov = np.atleast_2d(np.asarray(cov_re, dtype=float))
        else:
            cov = np.zeros((0, 0))
        pa = MixedLMParams(fe.size, cov.shape[0], vc.size)
        pa.fe_params, pa.cov_re, pa.vcomp = fe, cov, vc
        return pa

    def copy(self) -> MixedLMParams:
        """A deep copy."""
        obj = MixedLMParams(self.k_fe, self.k_re, self.k_vc)
        obj.fe_params = np.array(self.fe_params, dtype=float).copy()
        obj.cov_re = np.array(self.cov_re, dtype=float).copy()
        obj.vcomp = np.array(self.vcomp, dtype=float).copy()
        return obj

    def get_packed(self, use_sqrt: bool, has_fe: bool = False) -> np.ndarray:
        """Pack into one vector. With ``use_sqrt`` a non positive-definite ``cov_re`` packs the square
        roots of its diagonal, as statsmodels does."""
        cov = np.asarray(self.cov_re, dtype=float)
        if self.k_re == 0:
            cpa = np.zeros(0)
        elif use_sqrt:
            try:
                L = np.linalg.cholesky(cov)
            except np.linalg.LinAlgError:
                L = np.diag(np.sqrt(np.diag(cov)))
            cpa = L[self._ix]
        else:
            cpa = cov[self._ix]
        vc = np.asarray(self.vcomp, dtype=float)
        vc = np.sqrt(vc) if use_sqrt else vc
        parts = [np.asarray(self.fe_params, dtype=float).ravel()] if has_fe else []
        return np.concatenate(parts + [cpa, vc])

    def __repr__(self) -> str:
        return (
            f"MixedLMParams(fe_params={np.round(self.fe_params, 6).tolist()}, "
            f"cov_re={np.round(self.cov_re, 6).tolist()}, vcomp={np.round(self.vcomp, 6).tolist()})"
        )


class VCSpec:
    """The variance-component structure, as statsmodels' ``VCSpec``.

    ``mats[k][i]`` is the design matrix (dense or scipy sparse, rows = the observations of group ``i``
    in data order) of component ``names[k]`` in group ``i`` (groups in sorted order); ``colnames[k][i]``
    names its columns. Every column gets its own random coefficient; all coefficients of one component
    share one variance.
    """

    def __init__(self, names, colnames, mats):
        self.names = list(names)
        self.colnames = colnames
        self.mats = mats


def convert_vc_dict(exog_vc: dict) -> VCSpec:
    """statsmodels' deprecated dict format ``exog_vc[name][group] = matrix`` → :class:`VCSpec`."""
    warnings.warn("Using deprecated variance components format", FutureWarning, stacklevel=caller_stacklevel())
    groups = sorted({g for v in exog_vc.values() for g in v})
    names = sorted(exog_vc)
    colnames, mats = [], []
    for name in names:
        cn, ms = [], []
        for g in groups:
            if g not in exog_vc[name]:
                raise DataError(f"exog_vc[{name!r}] has no matrix for group {g!r}; give one (it may have 0 columns).")
            mat = exog_vc[name][g]
            cols = getattr(mat, "columns", None)
            cn.append(list(cols) if cols is not None else [str(j) for j in range(mat.shape[1])])
            ms.append(mat)
        colnames.append(cn)
        mats.append(ms)
    return VCSpec(names, colnames, mats)
