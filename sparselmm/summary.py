"""Text summaries of fits in lme4's layout: :class:`LmerSummary` (``summary(merMod)`` with lmerTest's df
and p-values) and :class:`GlmmSummary` (``summary(glmerMod)``), built from one set of parts — the
criteria, the scaled residuals' quantiles, the random-effects table (:class:`sparselmm.printing.VarCorr`),
the coefficient table with its p-values and stars, the optimiser's messages."""

from __future__ import annotations

import numpy as np

from .design import r_name
from .printing import SIGNIF_LEGEND, _char_matrix, html_pre, r_abbreviate, r_format, r_named_vector

__all__ = ["AUTO_DDF_MAX_DENSE", "GlmmSummary", "LmerSummary"]

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


# ---- the parts both summaries print -----------------------------------------------------------------
def criteria_lines(res) -> list[str]:
    """lme4's AIC, BIC, logLik, deviance and df.resid: names over values, each right-justified."""
    names = ["AIC", "BIC", "logLik", "deviance", "df.resid"]
    vals = [f"{res.aic:.1f}", f"{res.bic:.1f}", f"{res.loglik:.1f}", f"{res.deviance:.1f}", f"{res.df_resid}"]
    widths = [max(len(a), len(b)) + 1 for a, b in zip(names, vals)]
    return [" ".join(s.rjust(x) for s, x in zip(names, widths)), " ".join(v.rjust(x) for v, x in zip(vals, widths))]


def scaled_residual_lines(residuals) -> list[str]:
    """lme4's "Scaled residuals:" quantiles (Min, 1Q, Median, 3Q, Max), printed with 4 digits."""
    q = np.quantile(np.asarray(residuals, dtype=float), [0, 0.25, 0.5, 0.75, 1.0])
    return ["Scaled residuals: "] + r_named_vector(["Min", "1Q", "Median", "3Q", "Max"], q, 4)


def random_effects_table(res) -> list[str]:
    """lme4's random-effects table (``formatVC`` with 4 digits: Groups, Name, Variance, Std.Dev., Corr)."""
    return res.varcorr.format_lines(digits=4, comp=("Variance", "Std.Dev."))


def random_effects_lines(res) -> list[str]:
    """The "Random effects:" block: the table, then the numbers of observations and of levels per group."""
    groups = "; ".join(f"{k}, {v}" for k, v in res.ngroups.items())
    return ["Random effects:", *random_effects_table(res), f"Number of obs: {res.nobs}, groups:  {groups}"]


def coefficient_lines(tab) -> list[str]:
    """A coefficient table as lme4 and lmerTest print it: ``Estimate``, ``Std. Error`` and ``df`` with a
    common number of decimals per column, the statistic (``t value``, ``z value``) with 3, the p-value
    (``Pr(>|t|)``, ``Pr(>|z|)``) as R's ``format.pval`` with its stars, and the legend under the table."""
    cols = [str(c) for c in tab.columns]
    cells = []
    for c in cols:
        values = tab[c].to_numpy(dtype=float)
        if c.startswith("Pr("):
            cells.append([_pvalue(p) for p in values])
        elif c.endswith(" value"):
            cells.append([f"{v:.3f}" for v in values])
        else:
            cells.append(_column(values))
    has_p = bool(cols) and cols[-1].startswith("Pr(")
    header = ["", *cols] + ([""] if has_p else [])
    if has_p:
        cells.append([_stars(p) for p in tab[cols[-1]].to_numpy(dtype=float)])
    names = [r_name(n) for n in tab.index]
    rows = [header] + [[n] + [col[i] for col in cells] for i, n in enumerate(names)]
    lines = _table(rows, set(range(1, len(cols) + 1)))
    if has_p:
        lines += ["---", SIGNIF_LEGEND]
    return lines


def optimizer_lines(info, skip: tuple[str, ...] = ()) -> list[str]:
    """lme4's "optimizer (...) convergence code" line and the fit's messages (those starting with one of
    ``skip`` left out); nothing when there is no message."""
    messages = [m for m in info.messages if not m.startswith(skip)] if skip else list(info.messages)
    if not messages:
        return []
    status = "0 (OK)" if info.converged else "-1 (see messages)"
    return [f"optimizer ({info.optimizer}) convergence code: {status}", *messages]


class LmerSummary:
    """Printable summary of an :class:`~sparselmm.results.LmerResult`."""

    def __init__(self, result, ddf=None):
        from .inference.contest import normalize_ddf

        self.result = result
        self.ddf_note = None
        if ddf is None:
            from .derivatives import dense_dimension

            d = dense_dimension(result.design)
            if not result.deviance_function.exact:
                ddf = "lme4"
                self.ddf_note = "t tests without df: the fit is approximate (matrix-free), without exact derivatives."
            elif d > AUTO_DDF_MAX_DENSE:
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
        return random_effects_table(self.result)

    def fixed_effects_lines(self) -> list[str]:
        """lmerTest's table of the fixed effects (lme4's without df and p-values for ``ddf="lme4"``)."""
        return coefficient_lines(self.coefficients)

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
            lines.extend(criteria_lines(res))
        approx = res.optinfo.details.get("approximation")
        if approx:
            lines.append(
                f"Approximate: matrix-free (PCG, log-determinant by stochastic Lanczos quadrature, "
                f"{approx['n_probes']} probes); criterion standard error {approx['criterion_se']:.2g}"
            )
        lines.append("")
        if res.rows_held:
            lines.extend(scaled_residual_lines(res.residuals("scaled")))
        else:  # fitted from chunks (sparselmm.scale): the residuals were never held
            lines.append("Scaled residuals: not computed (fitted from chunks; the rows are not held)")
        lines.append("")
        lines.extend(random_effects_lines(res))
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
        lines.extend(optimizer_lines(res.optinfo))
        return "\n".join(lines) + "\n"

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return html_pre(str(self))


class GlmmSummary:
    """lme4's ``summary(glmerMod)`` printout (``str(summary)``) of a :class:`~sparselmm.glmm.GlmerResult`,
    and its parts as data (``coefficients``: the Wald z table of ``coef_table()``)."""

    def __init__(self, res):
        self.res = res
        self.coefficients = res.coef_table()

    def __str__(self) -> str:
        r = self.res
        # lme4's methTitle: nAGQ = 0 is titled as quadrature with 0 points
        method = "Laplace Approximation" if r.nAGQ == 1 else f"Adaptive Gauss-Hermite Quadrature, nAGQ = {r.nAGQ}"
        out = [
            f"Generalized linear mixed model fit by maximum likelihood ({method}) ['glmerMod']",
            f" Family: {r.family.label}  ( {r.family.link.name} )",
            f"Formula: {r.formula}",
        ]
        if r.data_name:
            out.append(f"   Data: {r.data_name}")
        out += ["", *criteria_lines(r), ""]
        out += scaled_residual_lines(r.residuals("pearson") / r.sigma)  # lme4: residuals(m, "pearson", scaled = TRUE)
        out += ["", *random_effects_lines(r), "", "Fixed effects:", *coefficient_lines(self.coefficients)]
        out += optimizer_lines(r.optinfo, skip=("NLopt",))  # the optimiser's own status is not a message
        return "\n".join(out)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return html_pre(str(self))
