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

    # ---- cross-products of related models (refits in inference/), without the full pass ------------
    def with_response(self, design: Design, y: np.ndarray) -> CrossProducts:
        """The cross-products of ``design`` with the response replaced by ``y`` (the n fitted rows).

        ``ZᵀWZ``, ``ZᵀWX`` and ``XᵀWX`` are shared, not copied; ``ZᵀWy``, ``XᵀWy``, ``yᵀWy`` and the
        shift ``β₀`` are computed exactly as :func:`cross_products` computes them, so the original
        response gives bit-identical numbers.
        """
        X, Zt, w = design.X, design.Zt, design.weights
        y = np.asarray(y, dtype=float)
        if design.offset is not None:
            y = y - design.offset
        if X.shape[1]:
            sw = np.ones_like(y) if w is None else np.sqrt(w)
            beta_shift = np.linalg.lstsq(X * sw[:, None], y * sw, rcond=None)[0]
            y = y - X @ beta_shift
        else:
            beta_shift = np.zeros(0)
        Wy = y if w is None else y * w
        return CrossProducts(
            ZtWZ=self.ZtWZ,
            ZtWX=self.ZtWX,
            ZtWy=np.asarray(Zt @ Wy).ravel(),
            XtWX=self.XtWX,
            XtWy=X.T @ Wy,
            ytWy=float(y @ Wy),
            sum_log_w=self.sum_log_w,
            beta_shift=beta_shift,
            n=self.n,
        )

    def with_columns_in_offset(self, columns, values) -> CrossProducts:
        """The cross-products after moving the fixed-effect ``columns`` (indices) to the offset at ``values``.

        The model becomes ``y − X_d v = X_k β_k + Zb + ε``. Keeping the shift ``β₀`` of the kept columns,
        its shifted response is ``y_s + X_d δ`` with ``δ = β₀_d − v``, so every new cross-product is
        the old one plus products with ``ZᵀWX_d``, ``XᵀWX_d`` — no pass over the rows.
        """
        cols = np.atleast_1d(np.asarray(columns, dtype=np.int64))
        p = self.XtWX.shape[0]
        if cols.size and (cols.min() < 0 or cols.max() >= p or np.unique(cols).size != cols.size):
            raise IndexError(f"columns must be distinct indices in 0..{p - 1}, not {cols.tolist()}.")
        keep = np.setdiff1d(np.arange(p), cols)
        delta = self.beta_shift[cols] - np.broadcast_to(np.asarray(values, dtype=float), cols.shape)
        XtWX_kd = self.XtWX[np.ix_(keep, cols)]
        return CrossProducts(
            ZtWZ=self.ZtWZ,
            ZtWX=np.ascontiguousarray(self.ZtWX[:, keep]),
            ZtWy=self.ZtWy + self.ZtWX[:, cols] @ delta,
            XtWX=np.ascontiguousarray(self.XtWX[np.ix_(keep, keep)]),
            XtWy=self.XtWy[keep] + XtWX_kd @ delta,
            ytWy=float(self.ytWy + 2.0 * delta @ self.XtWy[cols] + delta @ self.XtWX[np.ix_(cols, cols)] @ delta),
            sum_log_w=self.sum_log_w,
            beta_shift=self.beta_shift[keep],
            n=self.n,
        )


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
