"""The summary of a MixedLM fit: statsmodels' own ``summary2.Summary`` when statsmodels is installed (so
``isinstance(res.summary(), Summary)``, ``.tables``, ``.as_latex()``, ``.as_html()`` and code written for
statsmodels work), otherwise :class:`MixedLMSummary`, which lays the same tables out exactly as
``summary2`` prints them and offers the same methods."""

from __future__ import annotations

import html
import re

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import ModelSpecError
from ._compat import statsmodels_summary2

__all__ = ["MixedLMSummary", "mixedlm_summary"]

_LATEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "^": r"\^{}",
    "~": r"\~{}",
}


def _fmt(x, float_format="%.4f") -> str:
    try:
        out = float_format % x
    except (TypeError, ValueError):
        out = str(x)
    return out.strip()


def _render(
    cells: list[list[str]], header: list[str] | None, stub_width_pad: int, colsep: str, align: str
) -> list[str]:
    """Rows of one table: first column left-aligned stubs; data cells aligned by ``align``; headers centred."""
    ncol = len(cells[0])
    widths = [max(len(r[j]) for r in cells) for j in range(ncol)]
    if header is not None:
        widths = [max(w, len(h)) for w, h in zip(widths, header)]
    widths[0] += stub_width_pad
    out = []
    if header is not None:
        out.append(colsep.join([header[0].ljust(widths[0])] + [h.center(w) for h, w in zip(header[1:], widths[1:])]))
    for r in cells:
        data = [c.rjust(w) if align == "r" else c.ljust(w) for c, w in zip(r[1:], widths[1:])]
        out.append(colsep.join([r[0].ljust(widths[0])] + data))
    return out


class MixedLMSummary:
    """A printable summary without statsmodels: ``tables`` (info, coefficients as DataFrames), ``title``,
    ``as_text()``, ``as_latex()``, ``as_html()`` (as ``statsmodels.iolib.summary2.Summary``)."""

    def __init__(self, title: str, info: dict, coef: pd.DataFrame):
        self.title = title
        self.info = info
        self.extra_txt = None
        self.tables = [pd.DataFrame([[_fmt(k), _fmt(v)] for k, v in info.items()]), coef]

    def _cells(self) -> list[tuple[list[str] | None, list[list[str]]]]:
        """Each table as (header or None, rows of text cells)."""
        info = [[_fmt(k), _fmt(v)] for k, v in self.info.items()]
        coef = self.tables[1]
        rows = [[str(idx)] + [str(v) for v in row] for idx, row in zip(coef.index, coef.to_numpy())]
        return [(None, info), ([""] + [str(c) for c in coef.columns], rows)]

    def as_html(self) -> str:
        """The tables as HTML (one ``<table>`` each, the title as the first one's caption)."""
        out = []
        for i, (header, rows) in enumerate(self._cells()):
            parts = ['<table class="simpletable">']
            if i == 0:
                parts.append(f"<caption>{html.escape(self.title)}</caption>")
            if header is not None:
                parts.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
            for r in rows:
                parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>")
            parts.append("</table>")
            out.append("\n".join(parts))
        return "\n".join(out)

    def as_latex(self, label: str = "") -> str:
        """The tables as a LaTeX ``table`` with one ``tabular`` per table."""

        def esc(text: str) -> str:
            return re.sub(r"[\\&%$#_{}^~]", lambda m: _LATEX[m.group(0)], text)

        lines = ["\\begin{table}", f"\\caption{{{esc(self.title)}}}"]
        if label:
            lines.append(f"\\label{{{label}}}")
        lines.append("\\begin{center}")
        for header, rows in self._cells():
            ncol = len(rows[0]) if rows else len(header or [])
            lines.append("\\begin{tabular}{l" + "r" * (ncol - 1) + "}")
            lines.append("\\hline")
            if header is not None:
                lines.append(" & ".join(esc(h) for h in header) + " \\\\")
                lines.append("\\hline")
            lines.extend(" & ".join(esc(c) for c in r) + " \\\\" for r in rows)
            lines.append("\\hline")
            lines.append("\\end{tabular}")
        lines += ["\\end{center}", "\\end{table}"]
        return "\n".join(lines)

    def as_text(self) -> str:
        items = [(_fmt(k), _fmt(v)) for k, v in self.info.items()]
        half = (len(items) + 1) // 2
        items += [("", "")] * (2 * half - len(items))
        info_cells = [[*items[i], *items[i + half]] for i in range(half)]
        coef = self.tables[1]
        coef_cells = [[str(idx)] + [str(v) for v in row] for idx, row in zip(coef.index, coef.to_numpy())]
        coef_header = [""] + [str(c) for c in coef.columns]

        def width(cells, header):
            return len(_render(cells, header, 0, " ", "l")[0])

        w_info, w_coef = width(info_cells, None), width(coef_cells, coef_header)
        widest = max(w_info, w_coef)
        blocks = []
        for cells, header, w, align in ((info_cells, None, w_info, "l"), (coef_cells, coef_header, w_coef, "r")):
            nsep = max(len(cells[0]) - 1, 1)
            pad = (widest - w) // nsep
            pad_index = widest - (w + nsep * pad)
            rows = _render(cells, header, pad_index, " " * (pad + 1), align)
            lines = ["-" * len(rows[0])]
            if header is not None:
                lines += [rows[0], "-" * len(rows[0])]
                rows = rows[1:]
            blocks.extend(lines + rows)
        blocks[0] = "=" * widest
        blocks.append("=" * widest)
        title = self.title
        if len(title) < widest:
            title = " " * int(widest / 2 - len(title) / 2) + title
        return f"{title}\n" + "\n".join(blocks) + "\n"

    def __str__(self) -> str:
        return self.as_text()

    def __repr__(self) -> str:
        return self.as_text()

    def _repr_html_(self) -> str:
        """Jupyter's rendering: :meth:`as_html` (as statsmodels' ``Summary``)."""
        return self.as_html()


def mixedlm_summary(res, yname=None, xname_fe=None, xname_re=None, title=None, alpha=0.05):
    model = res.model
    names = list(model.param_names)
    k_fe = res.k_fe
    if xname_fe is not None:
        if len(xname_fe) != k_fe:
            raise ModelSpecError(f"xname_fe should be a list of length {k_fe:d}")
        names[:k_fe] = xname_fe
    if xname_re is not None:
        if len(xname_re) != len(names) - k_fe:
            raise ModelSpecError(f"xname_re should be a list of length {len(names) - k_fe:d}")
        names[k_fe:] = xname_re
    sizes = model._group_sizes
    info = {
        "Model:": "MixedLM",
        "No. Observations:": str(model.nobs),
        "No. Groups:": str(model.n_groups),
        "Min. group size:": f"{sizes.min():.0f}",
        "Max. group size:": f"{sizes.max():.0f}",
        "Mean group size:": f"{sizes.mean():.1f}",
        "Dependent Variable:": model.endog_names if yname is None else yname,
        "Method:": res.method,
        "Scale:": res.scale,
        "Log-Likelihood:": res.llf,
        "Converged:": "Yes" if res.converged else "No",
    }
    cov = res._cov()
    k = len(names)
    sdf = np.full((k, 6), np.nan)
    se = np.sqrt(np.diag(cov)[:k_fe])
    fe = np.asarray(res._fe)
    qm = -stats.norm.ppf(alpha / 2)
    sdf[:k_fe, 0], sdf[:k_fe, 1] = fe, se
    sdf[:k_fe, 2] = fe / se
    sdf[:k_fe, 3] = 2 * stats.norm.cdf(-np.abs(sdf[:k_fe, 2]))
    sdf[:k_fe, 4], sdf[:k_fe, 5] = fe - qm * se, fe + qm * se
    bse = np.sqrt(np.diag(cov))
    ri, ci = np.tril_indices(res.k_re)
    vals = np.concatenate([res._cov_re[ri, ci], res.vcomp])
    sdf[k_fe:, 0] = vals
    sdf[k_fe:, 1] = np.sqrt(res.scale) * bse[k_fe:]
    cols = ["Coef.", "Std.Err.", "z", "P>|z|", f"[{alpha / 2}", f"{1 - alpha / 2}]"]
    frame = pd.DataFrame(
        [[f"{x:.3f}" if np.isfinite(x) else "" for x in row] for row in sdf], index=names, columns=cols
    )
    title = title or "Mixed Linear Model Regression Results"
    summary2 = statsmodels_summary2()
    if summary2 is not None:
        smry = summary2.Summary()
        smry.add_dict(info)
        smry.add_title(title)
        smry.add_df(frame, align="r")
        return smry
    return MixedLMSummary(title, info, frame)
