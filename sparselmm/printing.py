"""Tables that print as R prints them, and R's number formatting.

* :class:`AnovaTable` — what ``sparselmm.anova`` and ``drop1`` return: a pandas DataFrame (indexing,
  ``.loc``, arithmetic and ``attrs`` as before) that prints as R's ``print.anova`` (lmerTest's F tables,
  lme4's likelihood-ratio and ``drop1`` tables): the heading lines, every column (no pandas "…"),
  R's number formats, significance stars and the "Signif. codes" legend. ``to_frame()`` gives the plain
  DataFrame; in Jupyter ``_repr_html_`` shows the same table.
* :class:`VarCorr` — what ``varcorr`` returns: lme4's ``as.data.frame(VarCorr(m))`` rows, printed compactly
  as ``print(VarCorr(m))`` (Groups, Name, Std.Dev., Corr); ``format(comp=("Variance", "Std.Dev."))`` adds
  the variances.
* ``r_format``, ``r_zapsmall``, ``r_format_pval``, ``r_stars``, ``r_abbreviate``: R's ``format(x, digits=)``,
  ``zapsmall``, ``format.pval``, ``symnum`` stars and ``abbreviate`` (R 4.2), on which the above rest.

Derived frames (``table.loc[...]``, ``table.copy()``, arithmetic) are plain DataFrames.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "SIGNIF_LEGEND",
    "AnovaTable",
    "VarCorr",
    "html_pre",
    "r_abbreviate",
    "r_format",
    "r_format_pval",
    "r_named_vector",
    "r_stars",
    "r_zapsmall",
]

SIGNIF_LEGEND = "Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1"
_EPS = float(np.finfo(float).eps)


# ---- R's number formatting ----------------------------------------------------------------------------
def _sci_parts(x: float, digits: int) -> tuple[int, int]:
    """(significant digits needed, at most ``digits``; decimal exponent) of ``|x|`` rounded to ``digits``."""
    mant, exp = f"{abs(x):.{digits - 1}e}".split("e")
    figures = mant.replace(".", "").rstrip("0")
    return max(1, len(figures)), int(exp)


def r_format(values, digits: int = 7, nsmall: int = 0, na: str = "NA") -> list[str]:
    """R's ``format(x, digits = digits, nsmall = nsmall)`` of a numeric vector: a common number of
    decimals (enough for every value to show ``digits`` significant digits), fixed notation unless
    scientific is narrower, right-justified to a common width."""
    x = np.asarray(values, dtype=float).ravel() + 0.0  # + 0.0: no negative zeros, as R prints them
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        out = [na if np.isnan(v) else ("Inf" if v > 0 else "-Inf") for v in x]
    else:
        neg = bool(np.any(finite < 0))
        sig, kpow, sleft, rgt = [], [], 0, 0
        for v in finite:
            if v == 0:
                n, k = 1, 0
            else:
                n, k = _sci_parts(v, digits)
            sig.append(n)
            kpow.append(k)
            sleft = max(sleft, (v < 0) + (k + 1 if k >= 0 else 1))
            rgt = max(rgt, n - k - 1)
        rgt = max(0, rgt)
        width_fixed = sleft + rgt + (rgt > 0)
        mxns = max(sig)
        e_digits = 2 if (max(kpow) >= 100 or min(kpow) <= -99) else 1
        width_sci = neg + (mxns > 1) + (mxns - 1) + 4 + e_digits
        if width_fixed <= width_sci:
            rgt = max(rgt, nsmall)
            out = [f"{v:.{rgt}f}" if np.isfinite(v) else _nonfinite(v, na) for v in x]
        else:
            out = [_sci(v, mxns - 1) if np.isfinite(v) else _nonfinite(v, na) for v in x]
    width = max(len(s) for s in out) if out else 0
    return [s.rjust(width) for s in out]


def _nonfinite(v: float, na: str) -> str:
    return na if np.isnan(v) else ("Inf" if v > 0 else "-Inf")


def _sci(v: float, decimals: int) -> str:
    mant, exp = f"{v:.{decimals}e}".split("e")
    sign, digits = exp[0], exp[1:].lstrip("0")
    return f"{mant}e{sign}{digits.rjust(2, '0')}"


def r_zapsmall(values, digits: int) -> np.ndarray:
    """R's ``zapsmall(x, digits)`` (R 4.2): round to ``digits − log10(max |x|)`` decimals."""
    x = np.asarray(values, dtype=float).copy()
    ok = ~np.isnan(x)
    if not ok.any():
        return x
    mx = float(np.max(np.abs(x[ok])))
    d = digits if mx <= 0 or not np.isfinite(mx) else max(0, round(digits - math.log10(mx)))
    with np.errstate(invalid="ignore"):
        x[ok & np.isfinite(x)] = np.round(x[ok & np.isfinite(x)], d)
    return x


def r_format_pval(pv, digits: int = 3, eps: float = _EPS, na: str = "NA") -> list[str]:
    """R's ``format.pval(pv, digits, eps)``: fixed notation down to 1e-4, scientific below, ``< eps`` at the
    floor (``< 2e-16`` with R's defaults)."""
    p = np.asarray(pv, dtype=float).ravel()
    out = [na] * p.size
    ok = ~np.isnan(p)
    is0 = ok & (p < eps)
    rest = ok & ~is0
    if rest.any():
        idx = np.flatnonzero(rest)
        rv = p[idx]
        with np.errstate(divide="ignore"):
            expo = np.floor(np.log10(np.where(rv > 0, rv, 1e-50)))
        fixp = (expo >= -3) | ((expo == -4) & (digits > 1))
        for mask in (fixp, ~fixp):
            if mask.any():
                for i, s in zip(idx[mask], r_format(rv[mask], digits)):
                    out[i] = s
    if is0.any():
        d = max(1, digits - 2)
        if rest.any():
            nc = max(len(out[i]) for i in np.flatnonzero(rest))
            if d > 1 and d + 6 > nc:
                d = max(1, nc - 7)
            sep = "" if d == 1 and nc <= 6 else " "
        else:
            sep = "" if d == 1 else " "
        text = "<" + sep + r_format([eps], d)[0].strip()
        for i in np.flatnonzero(is0):
            out[i] = text
    return out


def r_stars(pv) -> list[str]:
    """R's ``symnum`` significance stars (``***`` ≤ 0.001 < ``**`` ≤ 0.01 < ``*`` ≤ 0.05 < ``.`` ≤ 0.1), left-justified
    to a common width; missing p-values get blanks."""
    marks = []
    for p in np.asarray(pv, dtype=float).ravel():
        if not np.isfinite(p):
            marks.append("")
            continue
        for cut, mark in ((0.001, "***"), (0.01, "**"), (0.05, "*"), (0.1, "."), (np.inf, " ")):
            if p <= cut:
                marks.append(mark)
                break
    width = max((len(m) for m in marks), default=0)
    return [m.ljust(width) for m in marks]


def r_abbreviate(names: Sequence[str], minlength: int = 4) -> list[str]:
    """R's ``abbreviate(names, minlength)`` (``method = "left.kept"``, ``strict = FALSE``): drop lower-case
    vowels from the end, then lower-case letters, then any characters but the first, until ``minlength``
    remain; abbreviations that coincide are redone one character longer until all differ."""
    names = [str(n).strip() for n in names]
    unique = list(dict.fromkeys(names))
    out = {n: n for n in unique}
    todo = list(unique)
    length = minlength
    while True:
        for n in todo:
            out[n] = _abbreviate_one(n, length)
        values = [out[n] for n in unique]
        dup = {v for v in values if values.count(v) > 1}
        if not dup or length > max(len(n) for n in unique):
            break
        length += 1
        todo = [n for n in unique if out[n] in dup]
    return [out[n] for n in names]


def _abbreviate_one(name: str, minlength: int) -> str:
    """R's C ``stripchars`` (``use.classes = TRUE``): four passes from the right over lower-case vowels at a
    word's end, lower-case vowels, lower-case letters at a word's end, lower-case letters (never a word's
    first character), then any character but a word's first, until at most ``minlength`` non-spaces remain."""
    b = list(name)
    if len(b) <= minlength:
        return name

    def first_of_word(i: int) -> bool:
        return b[i - 1].isspace()

    def last_of_word(i: int) -> bool:
        return not b[i - 1].isspace() and (i + 1 >= len(b) or b[i + 1].isspace())

    passes = (
        lambda i: b[i] in "aeiou" and last_of_word(i),
        lambda i: b[i] in "aeiou" and not first_of_word(i),
        lambda i: b[i].islower() and last_of_word(i),
        lambda i: b[i].islower() and not first_of_word(i),
        lambda i: not first_of_word(i) and not b[i].isspace(),
    )
    done = False
    for drop in passes:
        for i in range(len(b) - 1, 0, -1):
            if i < len(b) and drop(i):
                del b[i]
            if len(b) - sum(c.isspace() for c in b) <= minlength:
                done = True
                break
        if done:
            break
    if len(b) > minlength:
        b = [b[0]] + [c for c in b[1:] if not c.isspace()]
    return "".join(b)


def r_named_vector(names: Sequence[str], values, digits: int) -> list[str]:
    """R's ``print(x, digits)`` of a short named numeric vector: names over values, one common width."""
    cells = r_format(values, digits)
    width = max([len(n) for n in names] + [len(c) for c in cells])
    return [" ".join(n.rjust(width) for n in names) + " ", " ".join(c.rjust(width) for c in cells) + " "]


def html_pre(text: str) -> str:
    """Text as a ``<pre>`` block (Jupyter's rendering of a summary)."""
    return f"<pre>{html.escape(text)}</pre>"


def _char_matrix(header: list[str], rows: list[list[str]], rownames: list[str], right: bool = True) -> list[str]:
    """R's ``print.default`` of a character matrix (``quote = FALSE``): row names left-justified, columns
    justified to a common width (right-justified with ``right = TRUE``), one space apart."""
    rn_w = max((len(r) for r in rownames), default=0)
    widths = [max([len(h)] + [len(r[j]) for r in rows]) for j, h in enumerate(header)]

    def line(name, cells):
        parts = [name.ljust(rn_w)]
        for c, w in zip(cells, widths):
            parts.append(c.rjust(w) if right else c.ljust(w))
        return " ".join(parts)

    return [line("", header)] + [line(n, r) for n, r in zip(rownames, rows)]


def _html_table(header: list[str], rows: list[list[str]], rownames: list[str]) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        f"<tr><th>{esc(n)}</th>" + "".join(f'<td style="text-align:right">{esc(c)}</td>' for c in r) + "</tr>"
        for n, r in zip(rownames, rows)
    )
    return f'<table class="dataframe"><thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>'


# ---- the tables --------------------------------------------------------------------------------------
class _RFrame(pd.DataFrame):
    """A DataFrame printed as R prints it; what is derived from it is a plain DataFrame."""

    @property
    def _constructor(self):
        return pd.DataFrame

    @classmethod
    def wrap(cls, frame: pd.DataFrame):
        """``frame`` as this class (same data and ``attrs``)."""
        out = cls(frame)
        out.attrs = dict(frame.attrs)
        return out

    def to_frame(self) -> pd.DataFrame:
        """The plain DataFrame (a copy, with ``attrs``)."""
        out = pd.DataFrame(self, copy=True)
        out.attrs = dict(self.attrs)
        return out

    def _lines(self) -> list[str]:  # pragma: no cover - every subclass has its own
        raise NotImplementedError

    def __repr__(self) -> str:
        return "\n".join(self._lines())

    def __str__(self) -> str:
        return self.__repr__()


def _heading_lines(attrs) -> list[str]:
    heading = attrs.get("heading")
    if heading is None:
        return []
    lines = [heading] if isinstance(heading, str) else [str(h) for h in heading]
    return [part for line in lines for part in line.split("\n")]


class AnovaTable(_RFrame):
    """An analysis-of-variance or likelihood-ratio table that prints as R's ``print.anova``.

    ``attrs["heading"]`` (a string or a list of lines) is printed first; ``attrs["note"]`` (lme4's
    "refitting model(s) with ML" message), when set, above it. Missing values print as blanks, as in R.
    """

    digits = 5  # print.anova: max(getOption("digits") - 2, 3)

    def formatted(self) -> tuple[list[str], list[list[str]], list[str], bool]:
        """(header, rows of formatted cells, row names, whether the legend is due): ``printCoefmat`` of
        ``print.anova`` (``zapsmall`` on the plain columns, test statistics rounded to ``digits − 1``
        decimals' worth, ``format.pval`` for the p-values, stars when any p < 0.1)."""
        digits = self.digits
        cols = [str(c) for c in self.columns]
        nc = len(cols)
        has_p = nc > 0 and (cols[-1].startswith("P(") or cols[-1].startswith("Pr("))
        tst = [j for j, c in enumerate(cols) if c[1:7] == " value" or c in ("F", "Cp", "Chisq")]
        zap = [j for j in range(nc - 1 if has_p else nc) if j not in tst and not cols[j].endswith("Df")]
        dig_tst = max(1, min(5, digits - 1))
        cells: list[list[str]] = []
        for j in range(nc):
            x = pd.to_numeric(self.iloc[:, j], errors="coerce").to_numpy(dtype=float)
            if has_p and j == nc - 1:
                col = r_format_pval(x, dig_tst, na="")
            elif j in tst:
                col = r_format(np.round(x, dig_tst), digits, na="")
            else:
                col = r_format(r_zapsmall(x, digits) if j in zap else x, digits, na="")
            col = ["" if np.isnan(v) else s for s, v in zip(col, x)]
            cells.append(col)
        header = list(cols)
        stars = False
        if has_p:
            p = pd.to_numeric(self.iloc[:, -1], errors="coerce").to_numpy(dtype=float)
            ok = np.isfinite(p)
            stars = bool(ok.any() and np.any(p[ok] < 0.1))
            if stars:
                cells.append(r_stars(p))
                header.append("")
        rows = [[cells[j][i] for j in range(len(cells))] for i in range(len(self))]
        return header, rows, [str(i) for i in self.index], stars

    def _lines(self) -> list[str]:
        lines = []
        note = self.attrs.get("note")
        if note:
            lines.append(str(note))
        lines += _heading_lines(self.attrs)
        header, rows, names, stars = self.formatted()
        lines += _char_matrix(header, rows, names)
        if stars:
            lines += ["---", SIGNIF_LEGEND]
        return lines

    def _repr_html_(self) -> str:
        header, rows, names, stars = self.formatted()
        parts = []
        note = self.attrs.get("note")
        if note:
            parts.append(f"<p><em>{html.escape(str(note))}</em></p>")
        heading = _heading_lines(self.attrs)
        if heading:
            parts.append("<p>" + "<br>".join(html.escape(h) for h in heading) + "</p>")
        parts.append(_html_table(header, rows, names))
        if stars:
            parts.append(f"<p><small>{html.escape(SIGNIF_LEGEND)}</small></p>")
        return "<div>" + "".join(parts) + "</div>"


class VarCorr(_RFrame):
    """Variance components: lme4's ``as.data.frame(VarCorr(m))`` rows (``group, var1, var2, vcov, sdcor``),
    printed as lme4's ``print(VarCorr(m))``.

    ``attrs["term_sizes"]`` holds the number of coefficients of each random-effects term in order, so that
    two terms on one grouping factor print as lme4 prints them (``g`` and ``g.1``); ``attrs["term_structures"]``
    their covariance structures (a ``diag`` term has no covariance rows and prints no correlations; a ``cs``
    term's correlations are marked ``(cs)``, as glmmTMB prints them).
    """

    def _structures(self) -> list[str]:
        sizes = self.attrs.get("term_sizes") or []
        return list(self.attrs.get("term_structures") or ["us"] * len(sizes))

    def _terms(self) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
        """(label, variance rows, covariance rows) per term, then the residual (if any) as its own entry."""
        frame = pd.DataFrame(self)
        resid = frame["group"] == "Residual"
        body = frame[~resid]
        sizes = self.attrs.get("term_sizes")
        if sizes is None:  # recover the terms: a run of variances of one group, then its covariances
            sizes, i, n = [], 0, len(body)
            var = body["var2"].isna().to_numpy()
            while i < n:
                g = body["group"].iloc[i]
                j = i
                while j < n and var[j] and body["group"].iloc[j] == g:
                    j += 1
                c = j
                while c < n and not var[c] and body["group"].iloc[c] == g:
                    c += 1
                ncov = c - j
                k = int(round((1 + math.sqrt(1 + 8 * ncov)) / 2)) if ncov else 1
                sizes += [1] * (j - i - k) + [k]
                i = c
        out, pos, seen = [], 0, {}
        structures = self._structures() if self.attrs.get("term_sizes") is not None else []
        for n, k in enumerate(sizes):
            diag = n < len(structures) and structures[n] == "diag"
            n_rows = k if diag else k + k * (k - 1) // 2
            part = body.iloc[pos : pos + n_rows]
            pos += n_rows
            g = str(part["group"].iloc[0])
            count = seen.get(g, 0)
            seen[g] = count + 1
            out.append((g if count == 0 else f"{g}.{count}", part.iloc[:k], part.iloc[k:]))
        if resid.any():
            out.append(("Residual", frame[resid], frame.iloc[:0]))
        return out

    def format_lines(self, digits: int = 5, comp: Sequence[str] = ("Std.Dev.",)) -> list[str]:
        """lme4's ``formatVC`` as ``print(VarCorr(m), digits, comp)`` prints it: Groups, Name, the
        components asked for (``"Variance"``, ``"Std.Dev."``), and the correlations with
        ``max(2, digits − 2)`` decimals."""
        comp = [comp] if isinstance(comp, str) else list(comp)
        unknown = [c for c in comp if c not in ("Variance", "Std.Dev.")]
        if unknown or not comp:
            raise ValueError(f"comp must name 'Variance' and/or 'Std.Dev.', not {comp}.")
        from .design import r_name

        terms = self._terms()
        structures = self._structures() + ["us"]  # the residual's
        groups, names, var, sd, corr_rows = [], [], [], [], []
        maxlen = max((len(v) for label, v, _ in terms if label != "Residual"), default=1)
        dig = max(2, digits - 2)
        for n, (label, v, c) in enumerate(terms):
            k = len(v)
            kind = structures[n] if n < len(structures) else "us"
            for i in range(k):
                groups.append(label if i == 0 else "")
                names.append("" if label == "Residual" else r_name(str(v["var1"].iloc[i])))
                var.append(float(v["vcov"].iloc[i]))
                sd.append(float(v["sdcor"].iloc[i]))
            C = np.eye(k)
            if kind == "diag":  # independent by construction: no correlations to print
                corr_rows.extend([[""] * (maxlen - 1) for _ in range(k)])
                continue
            if k > 1:
                pos = 0
                for j in range(k):
                    for i in range(j + 1, k):
                        C[i, j] = C[j, i] = float(c["sdcor"].iloc[pos])
                        pos += 1
            cells = r_format(np.round(C, dig).ravel(), 7, nsmall=dig)
            cells = np.array(cells, dtype=object).reshape(k, k)
            if kind == "cs" and k > 1:
                cells[1, 0] = f"{cells[1, 0]} (cs)"
            for i in range(k):
                row = [cells[i, j] if j < i else "" for j in range(maxlen - 1)]
                corr_rows.append(row)
        header = ["Groups", "Name"] + comp
        columns = [groups, names]
        if "Variance" in comp:
            columns.append(r_format(var, digits))
        if "Std.Dev." in comp:
            columns.append(r_format(sd, digits))
        if maxlen > 1:
            header += ["Corr"] + [""] * (maxlen - 2)
            for j in range(maxlen - 1):
                columns.append([r[j] for r in corr_rows])
        rows = [[col[i] for col in columns] for i in range(len(groups))]
        return _char_matrix(header, rows, [""] * len(rows), right=False)

    def _lines(self) -> list[str]:
        return self.format_lines()

    def _repr_html_(self) -> str:
        return html_pre("\n".join(self._lines()))
