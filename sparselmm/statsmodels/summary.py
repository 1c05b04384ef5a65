"""The text summary of a MixedLM fit, laid out exactly as statsmodels' ``summary2`` prints it."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["MixedLMSummary", "mixedlm_summary"]


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
    """A printable summary: ``tables`` (info, coefficients as DataFrames), ``as_text()``."""

    def __init__(self, title: str, info: dict, coef: pd.DataFrame):
        self.title = title
        self.info = info
        self.tables = [pd.DataFrame(list(info.items())), coef]

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


def mixedlm_summary(res, yname=None, xname_fe=None, xname_re=None, title=None, alpha=0.05) -> MixedLMSummary:
    model = res.model
    names = list(model.param_names)
    k_fe = res.k_fe
    if xname_fe is not None:
        if len(xname_fe) != k_fe:
            raise ValueError(f"xname_fe should be a list of length {k_fe:d}")
        names[:k_fe] = xname_fe
    if xname_re is not None:
        if len(xname_re) != len(names) - k_fe:
            raise ValueError(f"xname_re should be a list of length {len(names) - k_fe:d}")
        names[k_fe:] = xname_re
    sizes = np.array([r.size for r in model._group_rows])
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
    return MixedLMSummary(title or "Mixed Linear Model Regression Results", info, frame)
