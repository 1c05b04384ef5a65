"""emmeans' interaction plot (``emmip``): estimated marginal means of the cells against one factor (or
covariate), a line per level of the trace factors, a panel per ``by`` group; drawn with matplotlib
(``pip install sparselmm[plot]``) by the plot helpers of :mod:`sparselmm.plot`.
"""

from __future__ import annotations

import numpy as np

from ..errors import ModelSpecError
from ..plot import _pyplot
from .emmeans import emmeans

__all__ = ["emmip"]

EMMIP_DODGE = 0.1  # emmip's default: the trace lines' points spread over this much of one x step


def _emmip_factors(part: str, side: str, formula: str) -> list[str]:
    names = [f.strip() for f in part.split("*")]
    if part.strip() in ("1", ""):
        return []
    if any(not n for n in names):
        raise ModelSpecError(f"emmip formula {formula!r}: the {side} is not a product of factor names (a * b).")
    return names


def emmip(
    model,
    formula: str,
    at: dict | None = None,
    type: str = "link",
    CIs: bool = False,
    level: float = 0.95,
    ddf: str | None = None,
    weights: str = "equal",
    plotit: bool = True,
    figsize: tuple[float, float] | None = None,
):
    """Interaction plot of estimated marginal means (emmeans' ``emmip``).

    Parameters
    ----------
    model : LmerResult, GlmerResult or a statsmodels-facade result
    formula : str
        ``"trace ~ x"`` or ``"trace ~ x | by"`` (emmeans' ``trace.factors ~ x.factors | by``): the means of
        every combination of the trace, x and by factors (:func:`sparselmm.emmeans` with ``specs`` the trace
        and x factors and ``by``), one line per trace combination (``"1 ~ x"``: one line), x on the
        horizontal axis (a numeric covariate in ``at=`` is placed at its values), a panel per by group.
        Several factors on one side: ``a * b``.
    at, type, level, ddf, weights
        As :func:`sparselmm.emmeans` (``type="response"``: the means on the response scale).
    CIs : bool
        Draw the confidence intervals as error bars (emmeans' ``CIs = TRUE``).
    plotit : bool
        False: return the plotted data instead (emmeans' ``plotit = FALSE``): the factors' columns, ``yvar``,
        ``SE``, ``df``, ``LCL``, ``UCL``, ``tvar`` (the trace combination) and ``xvar``.
    figsize : (float, float), optional

    Returns
    -------
    matplotlib.figure.Figure or pandas.DataFrame
    """
    if not isinstance(formula, str) or formula.count("~") != 1:
        raise ModelSpecError(f"emmip needs a formula 'trace ~ x' or 'trace ~ x | by', not {formula!r}.")
    lhs, rhs = formula.split("~")
    rhs, _, by_part = rhs.partition("|")
    trace = _emmip_factors(lhs, "left side (the trace factors)", formula)
    xs = _emmip_factors(rhs, "right side (the x factors)", formula)
    by = _emmip_factors(by_part, "by part", formula) if by_part.strip() else []
    if not xs:
        raise ModelSpecError(f"emmip formula {formula!r} names no x factor on the right of '~'.")
    emm = emmeans(model, trace + xs, by=by or None, at=at, weights=weights, type=type, ddf=ddf, level=level)
    tab = emm.to_frame()
    grid_cols = list(emm.grid.columns)
    est = tab.columns[len(grid_cols)]
    lo, hi = [c for c in tab.columns if c.endswith("LCL") or c == "lower.CL" or c.endswith("UCL") or c == "upper.CL"]
    data = tab[grid_cols].copy()
    data["yvar"], data["SE"], data["df"] = tab[est].to_numpy(), tab["SE"].to_numpy(), tab["df"].to_numpy()
    data["LCL"], data["UCL"] = tab[lo].to_numpy(), tab[hi].to_numpy()
    label = lambda cols: data[cols].astype(str).agg(" ".join, axis=1) if cols else "1"  # noqa: E731
    data["tvar"] = label(trace)
    data["xvar"] = label(xs)
    if not plotit:
        return data
    return _emmip_figure(data, trace, xs, by, type, CIs, figsize)


def _emmip_figure(data, trace, xs, by, type, CIs, figsize):
    plt = _pyplot()
    groups = list(data.groupby(by, sort=False)) if by else [((), data)]
    n = len(groups)
    n_cols = min(n, 3)
    n_rows = -(-n // n_cols)
    if figsize is None:
        figsize = (4.2 * n_cols + 1.6, 3.4 * n_rows + 0.4)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=figsize, squeeze=False, sharey=True)
    numeric_x = len(xs) == 1 and np.issubdtype(np.asarray(data[xs[0]]).dtype, np.number)
    x_levels = list(dict.fromkeys(data["xvar"]))
    for i, (key, part) in enumerate(groups):
        ax = axes[i // n_cols][i % n_cols]
        lines = list(part.groupby("tvar", sort=False))
        for j, (t, line) in enumerate(lines):
            x = line[xs[0]].to_numpy(float) if numeric_x else np.array([x_levels.index(v) for v in line["xvar"]])
            if not numeric_x and len(lines) > 1:  # emmeans' dodge = 0.1: the lines' points side by side
                x = x + EMMIP_DODGE * (j / (len(lines) - 1) - 0.5)
            y = line["yvar"].to_numpy()
            ax.plot(x, y, "-o", color=f"C{j % 10}", markersize=4, label=t if trace else None)
            if CIs:
                err = np.vstack([y - line["LCL"].to_numpy(), line["UCL"].to_numpy() - y])
                ax.errorbar(x, y, yerr=err, fmt="none", ecolor=f"C{j % 10}", elinewidth=0.9, capsize=3)
        if not numeric_x:
            ax.set_xticks(range(len(x_levels)))
            ax.set_xticklabels(x_levels, rotation=0 if len(x_levels) <= 8 else 90, fontsize=8)
        if by:
            keys = key if isinstance(key, tuple) else (key,)
            ax.set_title(", ".join(f"{b} = {k}" for b, k in zip(by, keys)), fontsize=10)
        ax.set_xlabel(" * ".join(xs))
        if i % n_cols == 0:
            ax.set_ylabel("Predicted response" if type == "response" else "Linear prediction")
    for k in range(n, n_rows * n_cols):
        axes[k // n_cols][k % n_cols].set_visible(False)
    if trace:
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, title=" * ".join(trace), loc="center right", fontsize=8, title_fontsize=9)
        fig.tight_layout(rect=(0, 0, 0.85, 1))
    else:
        fig.tight_layout()
    return fig
