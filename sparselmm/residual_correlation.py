"""Residual correlation within groups for :func:`sparselmm.lmer`: :func:`corAR1` (integer times, nlme's
``corAR1(form = ~ t | g)``) and :func:`corCAR1` (real-valued times, nlme's ``corCAR1(form = ~ t | g)``).

Both are one structure, :class:`GapCorrelation`: rows ``i``, ``j`` of one group have correlation
``φ^{|tᵢ − tⱼ|}``. That series is Markov, so all a fit needs from the rows is each group's consecutive pairs
(by time) and their gaps (:meth:`GapCorrelation.pairs`); :mod:`sparselmm.residual` turns them into the pieces
of the cross-products. The two differ only in the times they take (integers, or any non-negative reals) and
the range of ``φ`` (``(−1, 1)``, or nlme's ``[0, 1)`` for a continuous time, where ``φ^Δt`` needs ``φ ≥ 0``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd

from .errors import ArgumentError, DataError, ModelSpecError

__all__ = ["AR1Correlation", "CAR1Correlation", "GapCorrelation", "corAR1", "corCAR1"]

RHO_BOUND = 1.0 - 1e-6  # |φ| below 1: at 1, 1 − φ² vanishes in log|R|


@dataclass(frozen=True)
class GapCorrelation:
    """Residual correlation ``φ^{|tᵢ − tⱼ|}`` between rows of one group, 0 between groups.

    Made by :func:`corAR1` or :func:`corCAR1`; the subclasses set the class attributes below.

    Attributes
    ----------
    time, group : str
        The columns of the times and of the groups (None: all rows are one series).
    name : str
        nlme's name of the structure (``"corAR1"``, ``"corCAR1"``).
    title : str
        nlme's "Correlation Structure:" line.
    parameter : str
        The name of ``φ`` among the residual parameters (``"rho"``; nlme's ``"Phi"`` for corCAR1).
    lower : float
        The least ``φ`` the fit tries.
    start : float
        ``φ`` at the start of the optimisation.
    integer_times : bool
        Whether the times must be integers.
    """

    time: str
    group: str | None = None

    name: ClassVar[str] = "corAR1"
    title: ClassVar[str] = "AR(1)"
    parameter: ClassVar[str] = "rho"
    lower: ClassVar[float] = -RHO_BOUND
    start: ClassVar[float] = 0.0
    integer_times: ClassVar[bool] = True

    def formula(self) -> str:
        """nlme's ``form``: ``~ t | g`` (``~ t`` without a group)."""
        return f"~ {self.time}" + (f" | {self.group}" if self.group else "")

    def admissible(self, value: float) -> bool:
        """Whether ``φ = value`` gives a correlation matrix (``lower ≤ φ < 1``)."""
        return bool(self.lower <= value < 1.0)

    def __repr__(self) -> str:
        group = f", group={self.group!r}" if self.group else ""
        return f"{self.name}(time={self.time!r}{group})"

    def _times(self, frame: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
        col = frame[self.time].iloc[rows]
        kind = "integer numbers" if self.integer_times else "numbers (real-valued times)"
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            raise DataError(
                f"{self.name}: the time column {self.time!r} must hold {kind}, not {col.dtype}; convert it, e.g. "
                f"data[{self.time!r}] = pd.to_numeric(data[{self.time!r}]) (dates: days since the first one)."
            )
        t = col.to_numpy(dtype=float)
        bad = np.flatnonzero(~np.isfinite(t))
        if bad.size:
            raise DataError(
                f"{self.name}: the time column {self.time!r} has a missing or infinite value (row {int(bad[0])}: "
                f"{t[bad[0]]!r}); drop those rows or use missing='drop'."
            )
        if self.integer_times:
            bad = np.flatnonzero(t != np.round(t))
            if bad.size:
                raise DataError(
                    f"corAR1: the time column {self.time!r} must hold integers (nlme's corAR1); row {int(bad[0])} "
                    f"has {t[bad[0]]!r}. For continuous times use sparselmm.corCAR1({self.time!r}, ...)."
                )
            return t.astype(np.int64)
        bad = np.flatnonzero(t < 0)
        if bad.size:
            raise DataError(
                f"{self.name}: the time column {self.time!r} must hold non-negative times; row {int(bad[0])} has "
                f"{t[bad[0]]!r}. Shift them, e.g. data[{self.time!r}] -= data[{self.time!r}].min() (only the "
                "differences of times enter the correlation)."
            )
        return t

    def pairs(self, frame: pd.DataFrame, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """The consecutive pairs within each group by time, among the fitted ``rows`` of ``frame``.

        Returns
        -------
        pair_i, pair_j : ndarray
            Positions (in ``rows``) of the earlier and the later row of each pair.
        gap : ndarray
            ``t_j − t_i`` (integers for corAR1, floats for corCAR1), all positive.
        n_groups : int

        Raises
        ------
        sparselmm.DataError
            Times that are not numbers, missing or infinite, not integers (corAR1), negative (corCAR1) or
            repeated within a group.
        sparselmm.ModelSpecError
            No group has two rows.
        """
        n = rows.size
        t = self._times(frame, rows)
        if self.group is not None:
            gcodes, glevels = pd.factorize(frame[self.group].iloc[rows], sort=True)
            gcodes = np.asarray(gcodes, dtype=np.int64)
        else:
            gcodes, glevels = np.zeros(n, dtype=np.int64), ["(all rows)"]
        order = np.lexsort((t, gcodes))
        same = gcodes[order[1:]] == gcodes[order[:-1]]
        dt = np.diff(t[order])
        dup = same & (dt == 0)
        if dup.any():
            j = int(np.flatnonzero(dup)[0])
            where = f"group {glevels[gcodes[order[j]]]!r} of {self.group!r}" if self.group else "the data"
            value = t[order[j]]
            raise DataError(
                f"{self.name}: time {value!r} of {self.time!r} appears more than once in {where}; times must be "
                "distinct within a group (nlme's rule): drop or average the repeated rows."
            )
        if not same.any():
            raise ModelSpecError(
                f"{self.name}: no group has two or more rows, so the correlation is not identifiable; check the "
                "group column."
            )
        return order[:-1][same], order[1:][same], dt[same], len(glevels)


@dataclass(frozen=True, repr=False)
class AR1Correlation(GapCorrelation):
    """AR(1) residual correlation within groups over an integer time: ``corr(εᵢ, εⱼ) = ρ^{|tᵢ − tⱼ|}`` for
    rows of one group, 0 between groups (nlme's ``corAR1(form = ~ time | group)``). Made by :func:`corAR1`."""


@dataclass(frozen=True, repr=False)
class CAR1Correlation(GapCorrelation):
    """Continuous-time AR(1) residual correlation within groups: ``corr(εᵢ, εⱼ) = φ^{|tᵢ − tⱼ|}`` over
    real-valued times, ``0 ≤ φ < 1`` (nlme's ``corCAR1(form = ~ time | group)``). Made by :func:`corCAR1`."""

    name: ClassVar[str] = "corCAR1"
    title: ClassVar[str] = "Continuous AR(1)"
    parameter: ClassVar[str] = "Phi"
    lower: ClassVar[float] = 0.0
    start: ClassVar[float] = 0.2  # nlme's default value of corCAR1
    integer_times: ClassVar[bool] = False


def _columns(name: str, time, group) -> None:
    if not isinstance(time, str) or not time:
        raise ArgumentError(f"{name}(time=...) must be a column name (a string), not {time!r}.")
    if group is not None and (not isinstance(group, str) or not group):
        raise ArgumentError(f"{name}(group=...) must be a column name (a string) or None, not {group!r}.")


def corAR1(time: str, group: str | None = None) -> AR1Correlation:
    """AR(1) residual correlation within groups, for ``sparselmm.lmer(..., correlation=corAR1(...))``.

    Parameters
    ----------
    time : str
        Column of integer times (nlme's covariate): rows ``d`` apart within a group have correlation ``ρ^d``
        (gaps as nlme treats them, through its ``corARMA(p = 1)``). Times must be distinct within a group.
        For real-valued times use :func:`corCAR1`.
    group : str, optional
        Column of the groups (nlme's ``| g``); rows of different groups are uncorrelated. Without it all rows
        are one series.

    Returns
    -------
    AR1Correlation

    Raises
    ------
    sparselmm.ArgumentError
        ``time`` or ``group`` is not a column name.

    Examples
    --------
    >>> import sparselmm
    >>> d = sparselmm.datasets.load("sleepstudy")
    >>> m = sparselmm.lmer("Reaction ~ Days + (1 | Subject)", d, correlation=sparselmm.corAR1("Days", "Subject"))
    """
    _columns("corAR1", time, group)
    return AR1Correlation(time, group)


def corCAR1(time: str, group: str | None = None) -> CAR1Correlation:
    """Continuous-time AR(1) residual correlation within groups, for
    ``sparselmm.lmer(..., correlation=corCAR1(...))`` (nlme's ``corCAR1(form = ~ time | group)``).

    Rows of one group at times ``tᵢ``, ``tⱼ`` have correlation ``Phi^{|tᵢ − tⱼ|}``, ``0 ≤ Phi < 1``, reported
    as nlme does (``Phi``, the correlation one unit of time apart; ``result.rho`` and
    ``result.residual_parameters["Phi"]``). With the times sorted within a group the inverse correlation
    matrix is tridiagonal, its entries functions of ``Phi^Δt`` for each consecutive gap ``Δt``.

    Cost: the cross-products are split once into pieces by stratum and by distinct gap value (gaps equal as
    floating-point numbers share a piece; no gap is rounded or grouped with another, so the fit is exact).
    With ``D`` distinct gaps and ``L`` strata of a ``dispformula`` there are at most ``L + D·L(L + 3)/2``
    pieces, and one evaluation of the criterion costs a sum over the pieces' nonzeros. Times on a grid
    (integers, quarter hours, ...) have few distinct gaps: the cost per evaluation does not depend on the
    number of rows ``n``. When the gaps are all distinct, ``D`` is about ``n`` less the number of groups and
    an evaluation costs about one pass over the nonzeros of the rows' ``Z`` products (``O(n·k²)`` with ``k``
    random effects per row), like a direct evaluation. Times on a decimal grid (0.1, 0.2, ...) can give gaps
    that differ in their last bit: rescale them to integers (tenths) to share pieces.

    Parameters
    ----------
    time : str
        Column of non-negative real times (nlme's covariate), distinct within a group.
    group : str, optional
        Column of the groups (nlme's ``| g``); rows of different groups are uncorrelated. Without it all rows
        are one series.

    Returns
    -------
    CAR1Correlation

    Raises
    ------
    sparselmm.ArgumentError
        ``time`` or ``group`` is not a column name. (Columns missing from the data, times that are not
        numbers, missing, negative or repeated within a group raise :class:`sparselmm.DataError` at the fit.)

    Examples
    --------
    >>> import numpy as np, sparselmm
    >>> d = sparselmm.datasets.load("sleepstudy")
    >>> d["day"] = d["Days"] + np.tile(np.linspace(0.0, 0.3, 10), 18)  # real-valued visit times
    >>> m = sparselmm.lmer("Reaction ~ Days + (1 | Subject)", d, correlation=sparselmm.corCAR1("day", "Subject"))
    """
    _columns("corCAR1", time, group)
    return CAR1Correlation(time, group)
