"""Wald-type tests of linear hypotheses ``R params = q`` for :class:`MixedLMResults`."""

from __future__ import annotations

import re

import numpy as np
from scipy import stats

from ..errors import ModelSpecError

__all__ = ["ContrastResults", "linear_constraints", "t_test", "wald_test"]


class ContrastResults:
    """Result of a t/z test (``effect``, ``sd``, ``tvalue``, ``pvalue``, ``conf_int()``) or of an F/chi²
    test (``statistic``, ``fvalue``, ``pvalue``, ``df_num``, ``df_denom``), like statsmodels'."""

    def __init__(self, distribution, statistic, pvalue, df_num=None, df_denom=None, effect=None, sd=None):
        self.distribution = distribution
        self.statistic = statistic
        self.pvalue = pvalue
        self.df_num, self.df_denom = df_num, df_denom
        self.effect, self.sd = effect, sd
        if distribution in ("t", "norm"):
            self.tvalue = statistic
        elif distribution == "F":
            self.fvalue = statistic

    def conf_int(self, alpha=0.05):
        if self.effect is None:
            raise NotImplementedError("Confidence intervals are only available for t/z tests.")
        q = stats.t.ppf(1 - alpha / 2, self.df_denom) if self.distribution == "t" else stats.norm.ppf(1 - alpha / 2)
        return np.column_stack([self.effect - q * self.sd, self.effect + q * self.sd])

    def summary(self) -> str:
        if self.effect is not None:
            ci = self.conf_int()
            head = "t" if self.distribution == "t" else "z"
            cols = ["coef", "std err", head, f"P>|{head}|", "[0.025", "0.975]"]
            lines = [" " * 10 + "".join(f"{c:>11s}" for c in cols)]
            for i in range(len(self.effect)):
                lines.append(
                    f"c{i:<9d}{self.effect[i]:11.4f}{self.sd[i]:11.3f}{self.statistic[i]:11.3f}"
                    f"{self.pvalue[i]:11.3f}{ci[i, 0]:11.3f}{ci[i, 1]:11.3f}"
                )
            return "\n".join(lines)
        if self.distribution == "F":
            return (
                f"<F test: F={self.statistic:.6g}, p={self.pvalue:.6g}, df_denom={self.df_denom}, df_num={self.df_num}>"
            )
        stat = f"statistic={self.statistic:.6g}, p-value={self.pvalue:.6g}"
        return f"<Wald test (chi2): {stat}, df_constraint={self.df_num}>"

    def __str__(self) -> str:
        return self.summary()

    __repr__ = __str__


def t_test(params, cov, R, q, use_t: bool, df_resid) -> ContrastResults:
    q = np.zeros(R.shape[0]) if q is None else np.asarray(q, float).ravel()
    effect = R @ params - q
    sd = np.sqrt(np.diag(R @ cov @ R.T))
    tval = effect / sd
    if use_t:
        p = 2 * stats.t.sf(np.abs(tval), df_resid)
        return ContrastResults("t", tval, p, df_denom=df_resid, effect=effect, sd=sd)
    return ContrastResults("norm", tval, 2 * stats.norm.sf(np.abs(tval)), effect=effect, sd=sd)


def wald_test(params, cov, R, q, use_f: bool, df_resid, invcov=None) -> ContrastResults:
    diff = R @ params - q
    inv = np.linalg.inv(R @ cov @ R.T) if invcov is None else np.asarray(invcov, float)
    stat = float(diff @ inv @ diff)
    J = R.shape[0]
    if use_f:
        F = stat / J
        return ContrastResults("F", F, float(stats.f.sf(F, J, df_resid)), df_num=J, df_denom=df_resid)
    return ContrastResults("chi2", stat, float(stats.chi2.sf(stat, J)), df_num=J)


_NUM = re.compile(r"\s*(\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)\s*")


def _parse_side(text: str, names: list[str]) -> tuple[np.ndarray, float]:
    """Coefficients and constant of a linear expression such as ``2*x1 - x2 + 3`` over ``names``."""
    coef = np.zeros(len(names))
    const = 0.0
    by_length = sorted(range(len(names)), key=lambda i: -len(names[i]))
    pos, sign = 0, 1.0
    text = text.strip()
    expect_term = True
    while pos < len(text):
        ch = text[pos]
        if ch.isspace():
            pos += 1
            continue
        if ch in "+-" and expect_term:
            sign *= -1.0 if ch == "-" else 1.0
            pos += 1
            continue
        if ch in "+-":
            sign, expect_term = (-1.0 if ch == "-" else 1.0), True
            pos += 1
            continue
        factor = 1.0
        m = _NUM.match(text, pos)
        if m and m.group(1):
            factor = float(m.group(1))
            pos = m.end()
            if pos < len(text) and text[pos] == "*":
                pos += 1
                while pos < len(text) and text[pos].isspace():
                    pos += 1
            else:
                const += sign * factor
                sign, expect_term = 1.0, False
                continue
        for i in by_length:
            if text.startswith(names[i], pos):
                coef[i] += sign * factor
                pos += len(names[i])
                break
        else:
            raise ModelSpecError(f"Could not read {text[pos:]!r} in a hypothesis; parameter names are {names}.")
        sign, expect_term = 1.0, False
    return coef, const


def linear_constraints(hypothesis, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(R, q)`` from an array, an ``(R, q)`` tuple, or a string ``"a = 0, b - c = 1"``."""
    if isinstance(hypothesis, str):
        rows, qs = [], []
        for part in hypothesis.split(","):
            sides = part.split("=")
            if len(sides) == 1:
                sides.append("0")
            if len(sides) != 2:
                raise ModelSpecError(f"Hypothesis {part!r} must have the form 'expression = expression'.")
            (cl, kl), (cr, kr) = _parse_side(sides[0], names), _parse_side(sides[1], names)
            rows.append(cl - cr)
            qs.append(kr - kl)
        return np.array(rows), np.array(qs)
    if isinstance(hypothesis, tuple):
        R = np.atleast_2d(np.asarray(hypothesis[0], float))
        return R, np.asarray(hypothesis[1], float).ravel()
    R = np.atleast_2d(np.asarray(hypothesis, float))
    if R.shape[1] != len(names):
        raise ModelSpecError(f"r_matrix must have {len(names)} columns (one per parameter), not {R.shape[1]}.")
    return R, np.zeros(R.shape[0])
