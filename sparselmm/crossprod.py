"""Weighted cross-products of ``[Z X y]``, formed once per model.

Every evaluation of the profiled deviance needs only ``ZᵀWZ, ZᵀWX, ZᵀWy, XᵀWX, XᵀWy, yᵀWy``; after they
are formed here no evaluation touches the n rows again. Sums of per-chunk cross-products would give the
same numbers, which is what lets the data pass be chunked later.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .design import Design

__all__ = ["CrossProducts", "cross_products"]


@dataclass
class CrossProducts:
    """The sufficient statistics of a linear mixed model (weights ``W`` applied, offset removed).

    ``y`` here is the *shifted* response ``y − offset − X β₀`` where ``β₀`` is the weighted least-squares
    fit (``beta_shift``); fitting the shifted response gives the same random effects and ``β − β₀``,
    and it keeps ``yᵀWy`` small so the penalised residual sum of squares ``yᵀWy − ‖c_u‖² − ‖c_β‖²``
    does not lose digits to cancellation (responses of order 1e12 stay accurate).
    """

    ZtWZ: sp.csc_matrix  # q × q, full symmetric
    ZtWX: np.ndarray  # q × p
    ZtWy: np.ndarray  # q
    XtWX: np.ndarray  # p × p
    XtWy: np.ndarray  # p
    ytWy: float
    sum_log_w: float
    beta_shift: np.ndarray  # p
    n: int


def cross_products(design: Design) -> CrossProducts:
    """Form the weighted cross-products of a design."""
    X, Zt = design.X, design.Zt
    w = design.weights
    y = design.y if design.offset is None else design.y - design.offset
    sw = np.ones_like(y) if w is None else np.sqrt(w)
    if X.shape[1]:
        beta_shift = np.linalg.lstsq(X * sw[:, None], y * sw, rcond=None)[0]
        y = y - X @ beta_shift
    else:
        beta_shift = np.zeros(0)
    WX = X if w is None else X * w[:, None]
    Wy = y if w is None else y * w
    ZtW = Zt if w is None else Zt @ sp.diags(w)
    ZtWZ = (ZtW @ Zt.T).tocsc()
    ZtWZ.sort_indices()
    return CrossProducts(
        ZtWZ=ZtWZ,
        ZtWX=np.asarray(Zt @ WX).reshape(Zt.shape[0], X.shape[1]),
        ZtWy=np.asarray(Zt @ Wy).ravel(),
        XtWX=X.T @ WX,
        XtWy=X.T @ Wy,
        ytWy=float(y @ Wy),
        sum_log_w=0.0 if w is None else float(np.sum(np.log(w))),
        beta_shift=beta_shift,
        n=y.shape[0],
    )
