"""Diagnostic plots of lmer and glmer fits and of profiles, drawn with matplotlib (``pip install sparselmm[plot]``).

matplotlib is imported only when a plot is drawn; without it every function here raises an ImportError that
names the extra. Each function returns the matplotlib ``Figure`` (figures are made with ``pyplot``, so
``plt.show()`` shows them and notebooks display them).

* :func:`plot_ranef` — the caterpillar plot of lme4's ``dotplot(ranef(m, condVar = TRUE))``: per grouping
  factor and coefficient, the conditional modes with intervals ``mode ± z·sd`` from the conditional
  variances, levels ordered by the factor's first coefficient.
* :func:`plot_qq_ranef` — lme4's ``qqmath(ranef(m, condVar = TRUE))``: sorted modes against standard normal
  quantiles, with the same intervals and R's ``qqline`` through the quartiles.
* :func:`plot_residuals` — lme4's ``plot(m)``: Pearson residuals against fitted values.
* :func:`plot_profile` — lme4's ``xyplot(profile(m))``: ζ against each parameter, with the interval ends.

emmeans' interaction plot, ``emmip``, is :func:`sparselmm.inference.emmip.emmip` (it draws with the helpers here).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy.stats import norm

from .errors import ModelSpecError
from .parameters import check_level

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_profile", "plot_qq_ranef", "plot_ranef", "plot_residuals"]

MAX_LABELLED_LEVELS = 60  # more levels than this: no tick labels (InstEval's 2,972 students would be a blur)
PANEL_HEIGHT = 3.2  # inches: the height of a row of panels with few levels
LEVEL_HEIGHT = 0.16  # inches per labelled level in a caterpillar panel (room for a 7-point label and a gap)
PROFILE_LEVELS = (0.5, 0.8, 0.9, 0.95, 0.99)  # lme4's xyplot.thpr reference lines


def _pyplot():
    """matplotlib.pyplot, or an ImportError that says how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError(
            "sparselmm's plots need matplotlib, which is not installed: pip install 'sparselmm[plot]' "
            "(or pip install matplotlib)."
        ) from err
    return plt


def _groups(result, group, cond_var: bool) -> dict:
    ranef = result.ranef(cond_var=cond_var)
    if group is None:
        return ranef
    names = [group] if isinstance(group, str) else list(group)
    unknown = [g for g in names if g not in ranef]
    if unknown:
        raise ModelSpecError(f"No grouping factor {unknown} in this model; it has {list(ranef)}.")
    return {g: ranef[g] for g in names}


def ranef_row_height(n_levels: int) -> float:
    """Height (inches) of a caterpillar row with ``n_levels`` levels: ``LEVEL_HEIGHT`` per labelled level plus
    room for the title and axis, at least ``PANEL_HEIGHT``; rows beyond ``MAX_LABELLED_LEVELS`` (no labels)
    stop growing."""
    return max(PANEL_HEIGHT, LEVEL_HEIGHT * min(n_levels, MAX_LABELLED_LEVELS) + 1.0)


def _grid(plt, panels: list, figsize, sharex: bool = False, heights: list[float] | None = None):
    """One row per grouping factor, one column per coefficient (unused axes hidden); ``heights`` in inches
    per row (default ``PANEL_HEIGHT`` each) sets the figure's height and the rows' proportions."""
    n_rows = len(panels)
    n_cols = max(len(cols) for _, cols in panels)
    if heights is None:
        heights = [PANEL_HEIGHT] * n_rows
    if figsize is None:
        figsize = (3.6 * n_cols + 0.8, sum(heights) + 0.4)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=figsize, squeeze=False, sharex=sharex, gridspec_kw={"height_ratios": heights}
    )
    for r, (_, cols) in enumerate(panels):
        for c in range(len(cols), n_cols):
            axes[r][c].set_visible(False)
    return fig, axes


def plot_ranef(
    result,
    group: str | Sequence[str] | None = None,
    level: float = 0.95,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Caterpillar plot of the conditional modes (lme4's ``dotplot(ranef(m, condVar = TRUE))``).

    Parameters
    ----------
    result : LmerResult or GlmerResult
    group : str or list of str, optional
        Grouping factors to draw; all by default (one row of panels each).
    level : float
        Coverage of the intervals ``mode ± z_{(1+level)/2} · sd`` (sd from the conditional variances).
    figsize : tuple, optional
        Width and height in inches. By default each row of panels is as tall as its number of levels needs
        for readable labels (``LEVEL_HEIGHT`` per level, at least ``PANEL_HEIGHT``; see
        :func:`ranef_row_height`), so 40 levels give a taller figure than 10.

    Returns
    -------
    matplotlib.figure.Figure
        Panel (row g, column k) has one point per level at its mode (ordered by the factor's first
        coefficient, lowest at the bottom) and one horizontal segment per level for its interval.
    """
    plt = _pyplot()
    level = check_level(level)
    z = float(norm.ppf((1 + level) / 2))
    groups = _groups(result, group, cond_var=True)
    panels = [(g, list(df.columns)) for g, df in groups.items()]
    fig, axes = _grid(plt, panels, figsize, heights=[ranef_row_height(len(df)) for df in groups.values()])
    for r, (g, df) in enumerate(groups.items()):
        sd = df.attrs["cond_sd"]
        order = np.argsort(df.iloc[:, 0].to_numpy(), kind="stable")
        labels = [str(v) for v in df.index[order]]
        pos = np.arange(len(order))
        for c, col in enumerate(df.columns):
            ax = axes[r][c]
            mode = df[col].to_numpy()[order]
            half = z * sd[col].to_numpy()[order]
            ax.hlines(pos, mode - half, mode + half, color="0.45", linewidth=1.0)
            ax.plot(mode, pos, "o", color="C0", markersize=3.5 if len(pos) <= MAX_LABELLED_LEVELS else 1.5)
            ax.axvline(0.0, color="0.7", linestyle="--", linewidth=0.8)
            ax.set_title(f"{g}: {col}", fontsize=10)
            ax.set_ylim(-0.5, len(pos) - 0.5)
            if len(pos) <= MAX_LABELLED_LEVELS:
                ax.set_yticks(pos)
                ax.set_yticklabels(labels if c == 0 else [], fontsize=7)
            else:
                ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(g)
    fig.suptitle(f"Conditional modes with {100 * level:g}% intervals", fontsize=11)
    fig.tight_layout()
    return fig


def plot_qq_ranef(
    result,
    group: str | Sequence[str] | None = None,
    level: float = 0.95,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Normal QQ plot of the conditional modes (lme4's ``qqmath(ranef(m, condVar = TRUE))``).

    Per grouping factor and coefficient: the sorted modes (x, with their ``level`` intervals) against the
    standard normal quantiles ``Φ⁻¹((i − ½)/m)`` (y), as lme4 draws it, and R's ``qqline`` (through the
    quartiles).

    Parameters
    ----------
    result : LmerResult or GlmerResult
    group : str or list of str, optional
        Grouping factors to draw; all by default (one row of panels each).
    level : float
        Coverage of the horizontal intervals ``mode ± z_{(1+level)/2} · sd``.
    figsize : tuple, optional
        Width and height in inches (default: 3.6 × 3.2 inches per panel).

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot()
    level = check_level(level)
    z = float(norm.ppf((1 + level) / 2))
    groups = _groups(result, group, cond_var=True)
    panels = [(g, list(df.columns)) for g, df in groups.items()]
    fig, axes = _grid(plt, panels, figsize)
    for r, (g, df) in enumerate(groups.items()):
        sd = df.attrs["cond_sd"]
        m = len(df)
        quantiles = norm.ppf((np.arange(1, m + 1) - 0.5) / m)
        for c, col in enumerate(df.columns):
            ax = axes[r][c]
            order = np.argsort(df[col].to_numpy(), kind="stable")
            mode = df[col].to_numpy()[order]
            half = z * sd[col].to_numpy()[order]
            ax.hlines(quantiles, mode - half, mode + half, color="0.6", linewidth=0.8)
            ax.plot(mode, quantiles, "o", color="C0", markersize=3 if m <= 200 else 1.2)
            q1, q3 = np.percentile(df[col].to_numpy(), [25, 75])
            n1, n3 = norm.ppf([0.25, 0.75])
            if q3 > q1:  # x = modes, y = normal quantiles: the line through the two quartile points
                slope = (n3 - n1) / (q3 - q1)
                xs = np.array([mode[0], mode[-1]])
                ax.plot(xs, n1 + slope * (xs - q1), color="C3", linewidth=1.0)
            ax.set_title(f"{g}: {col}", fontsize=10)
            ax.set_xlabel("conditional mode")
            if c == 0:
                ax.set_ylabel("standard normal quantiles")
    fig.tight_layout()
    return fig


def plot_residuals(
    result, type: str = "pearson", ax: Axes | None = None, figsize: tuple[float, float] = (5.5, 4.2)
) -> Figure:
    """Residuals against fitted values (lme4's ``plot(m)``: Pearson residuals by default).

    Parameters
    ----------
    result : LmerResult or GlmerResult
    type : str
        A type of :meth:`LmerResult.residuals` (``"pearson"``, ``"response"``, ``"scaled"``) or of
        :meth:`GlmerResult.residuals <sparselmm.glmm.GlmerResult.residuals>` (``"pearson"``, ``"deviance"``,
        ``"response"``, ``"working"``).
    ax : matplotlib Axes, optional
        Draw here instead of in a new figure.
    figsize : tuple
        Width and height in inches of a new figure.

    Returns
    -------
    matplotlib.figure.Figure
        One point per fitted row and a horizontal line at 0.
    """
    plt = _pyplot()
    resid = result.residuals(type=type)
    fitted = result.fitted()
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    else:
        fig = ax.figure
    n = fitted.size
    ax.plot(fitted, resid, "o", color="C0", markersize=3 if n <= 2000 else 1, alpha=1.0 if n <= 2000 else 0.4)
    ax.axhline(0.0, color="0.5", linestyle="--", linewidth=0.8)
    ax.set_xlabel("Fitted values")
    labels = {"pearson": "Pearson residuals", "response": "Residuals", "scaled": "Scaled residuals"}
    ax.set_ylabel(labels.get(type, f"{type.capitalize()} residuals"))
    ax.set_title(result.formula, fontsize=9)
    fig.tight_layout()
    return fig


def plot_profile(
    prof,
    which: str | Sequence[str] | None = None,
    absolute: bool = False,
    levels: Sequence[float] = PROFILE_LEVELS,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """ζ against each profiled parameter (lme4's ``xyplot(profile(m))``).

    Parameters
    ----------
    prof : Profile
        From :meth:`LmerResult.profile` (tabulated on lme4's grid).
    which : str or list, optional
        Parameters to draw; all profiled ones by default.
    absolute : bool
        Plot ``|ζ|`` (lme4's ``absVal = TRUE``).
    levels : sequence of float
        Confidence levels whose ``±z`` are drawn as horizontal reference lines (lme4's 50–99 %).

    Returns
    -------
    matplotlib.figure.Figure
        One panel per parameter: the ζ curve through the points fitted (one line), the estimate (ζ = 0),
        dotted lines at ``±z`` and vertical segments at the interval ends.
    """
    plt = _pyplot()
    table = prof.table(which)
    names = [n for n in prof.parameters if n in set(table[".par"])]
    n = len(names)
    if n == 0:
        raise ModelSpecError("Nothing to plot: the profile has no points for these parameters.")
    n_cols = min(n, 3)
    n_rows = -(-n // n_cols)
    if figsize is None:
        figsize = (3.6 * n_cols + 0.6, 3.0 * n_rows + 0.4)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=figsize, squeeze=False)
    zs = [float(norm.ppf((1 + lv) / 2)) for lv in levels]
    for i, name in enumerate(names):
        ax = axes[i // n_cols][i % n_cols]
        pts = table[table[".par"] == name].sort_values(".focal")
        x, zeta = pts[".focal"].to_numpy(), pts[".zeta"].to_numpy()
        ax.plot(x, np.abs(zeta) if absolute else zeta, "-", color="C0", marker=".", markersize=4)
        for zz in zs:
            ax.axhline(zz, color="0.75", linestyle=":", linewidth=0.8)
            if not absolute:
                ax.axhline(-zz, color="0.75", linestyle=":", linewidth=0.8)
        ends, tops = [], []
        for (par, lv), (lo, hi) in prof.intervals.items():
            if par != name:
                continue
            zz = float(norm.ppf((1 + lv) / 2))
            for end, sign in ((lo, -1), (hi, 1)):
                if np.isfinite(end):
                    ends.append(end)
                    tops.append(zz if absolute else sign * zz)
        if ends:
            ax.vlines(ends, 0.0, tops, color="C3", linewidth=0.9)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(name)
        if i % n_cols == 0:
            ax.set_ylabel("|ζ|" if absolute else "ζ")
    for k in range(n, n_rows * n_cols):
        axes[k // n_cols][k % n_cols].set_visible(False)
    fig.suptitle(f"Profile ζ ({prof.criterion})", fontsize=11)
    fig.tight_layout()
    return fig
