"""Text summary of an lmer fit in lme4's layout (``summary(merMod)``)."""

from __future__ import annotations

import numpy as np

from .design import r_name
from .printing import _char_matrix, html_pre, r_abbreviate, r_format, r_named_vector

__all__ = ["AUTO_DDF_MAX_DENSE", "LmerSummary"]

# summary() computes Satterthwaite's df by default while the exact derivatives' dense block (the complement
# of the largest term, or all q when no term is eliminated: sparselmm.derivatives.dense_dimension) has at
# most this many rows (InstEval: 1,156, a third of the fit's time); above, the default table is lme4's
# and says how to ask for the df
AUTO_DDF_MAX_DENSE = 6000


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        out.append(" " + " ".join(cells).rstrip())
    return out


def _sig(x: float, digits: int = 4) -> str:
    """Format like R's ``format(x, digits=)``: ``digits`` significant digits, no exponent when short."""
    if not np.isfinite(x):
        return "NaN"
    if x == 0:
        return "0"
    mag = int(np.floor(np.log10(abs(x))))
    decimals = max(0, digits - 1 - mag)
    if mag >= 15 or mag < -5:
        return f"{x:.{digits - 1}e}"
    return f"{x:.{decimals}f}"


def _column(values, digits: int = 4) -> list[str]:
    """Format a numeric column with a common number of decimals, as R formats a column."""
    vals = np.asarray(values, dtype=float)
    finite = vals[np.isfinite(vals) & (vals != 0)]
    if finite.size == 0:
        return [_sig(v, digits) for v in vals]
    mag = int(np.floor(np.log10(np.min(np.abs(finite)))))
    decimals = min(max(0, digits - 1 - mag), 10)
    return [f"{v:.{decimals}f}" if np.isfinite(v) else "NaN" for v in vals]


def _pvalue(p: float) -> str:
    """R's ``format.pval(p, digits = 3)`` with its ``< 2e-16`` floor."""
    if not np.isfinite(p):
        return "NA"
    if p < 2e-16:
        return "< 2e-16"
    if p < 1e-4:
        return f"{p:.2e}"
    return _sig(p, 3)


def _stars(p: float) -> str:
    if not np.isfinite(p):
        return ""
    for cut, mark in ((0.001, "***"), (0.01, "**"), (0.05, "*"), (0.1, ".")):
        if p < cut:
            return mark
    return ""


class LmerSummary:
    """Printable summary of an :class:`~sparselmm.results.LmerResult`."""

    def __init__(self, result, ddf=None):
        from .inference.contest import normalize_ddf

        self.result = result
        self.ddf_note = None
        if ddf is None:
            from .derivatives import dense_dimension

            d = dense_dimension(result.design)
            if d > AUTO_DDF_MAX_DENSE:
                ddf = "lme4"
                self.ddf_note = (
                    f"t tests without df: the exact derivatives need a dense {d:,} × {d:,} block "
                    f"(> {AUTO_DDF_MAX_DENSE:,}); summary(ddf='Satterthwaite') computes them."
                )
            else:
                ddf = "Satterthwaite"
        self.ddf = normalize_ddf(ddf)
        self.coefficients = self._coefficients()

    def _coefficients(self):
        """The fixed-effects table (lmerTest's with df and p-values; lme4's when ``ddf="lme4"``)."""
        from .errors import ModelSpecError

        res = self.result
        if self.ddf != "lme4" and len(res.fixef):
            try:
                return res.coef_table(ddf=self.ddf)
            except ModelSpecError as err:  # e.g. KR on an ML fit, or a model too large for exact derivatives
                self.ddf_note = f"{self.ddf} df not available: {err}"
                self.ddf = "lme4"
        return res.coef_table(ddf="lme4")

    def random_effects_lines(self) -> list[str]:
        """lme4's random-effects table (``formatVC`` with 4 digits: Groups, Name, Variance, Std.Dev., Corr)."""
        return self.result.varcorr.format_lines(digits=4, comp=("Variance", "Std.Dev."))

    def fixed_effects_lines(self) -> list[str]:
        tab = self.coefficients
        names = [r_name(n) for n in tab.index]
        est, ses = _column(tab["Estimate"].to_numpy()), _column(tab["Std. Error"].to_numpy())
        tv = [f"{v:.3f}" for v in tab["t value"]]
        if "df" not in tab.columns:
            rows = [["", "Estimate", "Std. Error", "t value"]]
            rows += [[n, e, s, t] for n, e, s, t in zip(names, est, ses, tv)]
            return _table(rows, {1, 2, 3})
        dfs = _column(tab["df"].to_numpy())
        pv = tab["Pr(>|t|)"].to_numpy()
        rows = [["", "Estimate", "Std. Error", "df", "t value", "Pr(>|t|)", ""]]
        rows += [[n, e, s, d, t, _pvalue(p), _stars(p)] for n, e, s, d, t, p in zip(names, est, ses, dfs, tv, pv)]
        lines = _table(rows, {1, 2, 3, 4, 5})
        lines.append("---")
        lines.append("Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1")
        return lines

    def correlation_lines(self) -> list[str]:
        """lme4's correlation of the fixed effects: rounded to 3 decimals, rows and columns named by R's
        ``abbreviate`` (11 and 6 characters, lengthened where two names would coincide)."""
        res = self.result
        V = res.vcov.to_numpy()
        p = V.shape[0]
        if p < 2:
            return []
        sd = np.sqrt(np.diag(V))
        C = V / np.outer(sd, sd)
        names = [r_name(n) for n in res.fixef.index]
        rows_ab, cols_ab = r_abbreviate(names, 11), r_abbreviate(names, 6)
        cells = np.array(r_format(np.round(C, 3).ravel(), 7, nsmall=3), dtype=object).reshape(p, p)
        body = [[cells[i, j] if j < i else "" for j in range(p - 1)] for i in range(1, p)]
        return ["Correlation of Fixed Effects:"] + _char_matrix(cols_ab[:-1], body, rows_ab[1:], right=False)

    def __str__(self) -> str:
        res = self.result
        design = res.design
        lines = []
        method = {
            "Satterthwaite": ". t-tests use Satterthwaite's method",
            "Kenward-Roger": (". t-tests use Kenward-Roger's method"),
        }.get(self.ddf, "")
        if res.reml:
            lines.append(f"Linear mixed model fit by REML{method} ['LmerResult']")
        else:
            lines.append(f"Linear mixed model fit by maximum likelihood{method} ['LmerResult']")
        lines.append(f"Formula: {res.formula}")
        if design.weights is not None:
            lines.append("Weights: (prior weights given)")
        if design.offset is not None:
            lines.append("Offset: (offset given)")
        if res.data_name:
            lines.append(f"   Data: {res.data_name}")
        lines.append("")
        if res.reml:
            lines.append(f"REML criterion at convergence: {res.objective:.1f}")
        else:
            stats = ["AIC", "BIC", "logLik", "deviance", "df.resid"]
            vals = [f"{res.aic:.1f}", f"{res.bic:.1f}", f"{res.loglik:.1f}", f"{res.deviance:.1f}", f"{res.df_resid}"]
            w = [max(len(a), len(b)) + 1 for a, b in zip(stats, vals)]
            lines.append(" ".join(s.rjust(x) for s, x in zip(stats, w)))
            lines.append(" ".join(v.rjust(x) for v, x in zip(vals, w)))
        lines.append("")
        if res.rows_held:
            r = np.asarray(res.residuals("scaled"))
            q = np.quantile(r, [0, 0.25, 0.5, 0.75, 1.0])
            lines.append("Scaled residuals: ")
            lines.extend(r_named_vector(["Min", "1Q", "Median", "3Q", "Max"], q, 4))
        else:  # fitted from chunks (sparselmm.scale): the residuals were never held
            lines.append("Scaled residuals: not computed (fitted from chunks; the rows are not held)")
        lines.append("")
        lines.append("Random effects:")
        lines.extend(self.random_effects_lines())
        groups = "; ".join(f"{k}, {v}" for k, v in res.ngroups.items())
        lines.append(f"Number of obs: {res.nobs}, groups:  {groups}")
        if design.data.n_dropped:
            lines.append(f"({design.data.n_dropped} observations deleted due to missingness)")
        lines.append("")
        if len(res.fixef):
            lines.append("Fixed effects:")
            lines.extend(self.fixed_effects_lines())
            corr = self.correlation_lines()
            if corr:
                lines.append("")
                lines.extend(corr)
        if self.ddf_note:
            lines.append(self.ddf_note)
        if design.dropped_columns:
            lines.append(
                f"fit warnings:\nfixed-effect model matrix is rank deficient so dropping "
                f"{len(design.dropped_columns)} column(s): {design.dropped_columns}"
            )
        info = res.optinfo
        if info.messages:
            status = "0 (OK)" if info.converged else "-1 (see messages)"
            lines.append(f"optimizer ({info.optimizer}) convergence code: {status}")
            lines.extend(info.messages)
        return "\n".join(lines) + "\n"

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return html_pre(str(self))
