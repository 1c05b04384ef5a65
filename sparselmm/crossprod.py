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

__all__ = ["CrossProducts", "RowSummary", "cross_products"]


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


@dataclass(frozen=True)
class RowSummary:
    """Sums that identify the rows a streamed fit was summed over (for likelihood-ratio tests between fits):
    n, ``Σy`` and ``Σ(y − ȳ)²`` of the (transformed) response, ``Σw`` and ``Σ log w`` of the weights, and
    ``Σ(y − offset)²``, ``Σ w(y − offset)`` when there is an offset (None where not applicable)."""

    n: int
    sum_y: float
    ss_y: float
    sum_w: float | None
    sum_log_w: float | None
    ss_y_offset: float | None
    sum_wy_offset: float | None
    weights: str | None = None  # the columns, when known
    offset: str | None = None

    @classmethod
    def of_arrays(cls, y, weights=None, offset=None) -> RowSummary:
        """The same sums from a fit's held arrays."""
        y = np.asarray(y, dtype=float)
        n = y.size
        w = None if weights is None else np.asarray(weights, dtype=float)
        yo = None if offset is None else y - np.asarray(offset, dtype=float)
        return cls(
            n=n,
            sum_y=float(y.sum()),
            ss_y=float(np.sum((y - y.mean()) ** 2)) if n else 0.0,
            sum_w=None if w is None else float(w.sum()),
            sum_log_w=None if w is None else float(np.log(w).sum()),
            ss_y_offset=None if yo is None else float(yo @ yo),
            sum_wy_offset=None if yo is None else float(yo.sum() if w is None else yo @ w),
        )

    def differs(self, other: RowSummary, parts=("response", "weights", "offset"), rtol: float = 1e-9) -> str | None:
        """Which sum of ``parts`` differs (beyond the rounding of sums taken in another order), or None."""
        if self.n != other.n:
            return f"n ({self.n} and {other.n})"
        scale_y = np.sqrt(max(self.ss_y, other.ss_y) * self.n) + abs(self.sum_y)
        checks = {
            "response": [
                ("the sums of the responses", self.sum_y, other.sum_y, scale_y),
                ("the sums of squares of the responses about their mean", self.ss_y, other.ss_y, None),
            ],
            "weights": [
                ("the sums of the weights", self.sum_w, other.sum_w, None),
                ("the sums of the log weights", self.sum_log_w, other.sum_log_w, float(self.n)),
            ],
            "offset": [
                ("the sums of squares of response minus offset", self.ss_y_offset, other.ss_y_offset, None),
                ("the weighted sums of response minus offset", self.sum_wy_offset, other.sum_wy_offset, None),
            ],
        }
        for part in parts:
            for what, a, b, scale in checks[part]:
                if (a is None) != (b is None):
                    return f"one fit has {'weights' if part == 'weights' else 'an offset'} and the other not"
                if a is None:
                    continue
                scale = max(abs(a), abs(b)) if scale is None else scale
                if abs(a - b) > rtol * max(scale, 1e-300):
                    return f"{what} differ ({a!r} and {b!r})"
        return None
