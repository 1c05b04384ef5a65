"""Contrasts of estimated marginal means (emmeans 1.8's ``contrast`` and its ``.emmc`` families).

A method turns the k means of one ``by`` group into a k × c coefficient matrix with emmeans' labels
("A - B", "B effect", "linear"), its default adjustment and family size; :func:`contrast` applies it to
the rows of an :class:`~sparselmm.inference.emmeans.EmmGrid` (``Lc = Cᵀ L``), group by group.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ..errors import ModelSpecError

__all__ = ["CONTRAST_METHODS", "contrast", "contrast_coefficients", "level_labels"]

CONTRAST_METHODS = ("pairwise", "revpairwise", "trt.vs.ctrl", "consec", "poly", "eff", "del.eff")
DEFAULT_ADJUST = {
    "pairwise": "tukey",
    "revpairwise": "tukey",
    "trt.vs.ctrl": "dunnettx",
    "consec": "mvt",
    "poly": "none",
    "eff": "fdr",
    "del.eff": "fdr",
}
PARENS = re.compile(r"-|\+|/|\*")  # emmeans' default option parens: levels with an operator get "(...)"
POLY_NAMES = ["linear", "quadratic", "cubic", "quartic"] + [f"degree {d}" for d in range(5, 21)]


def r_number(value) -> str:
    """A number as R's ``paste`` writes it (15 significant digits, no trailing zeros)."""
    if isinstance(value, (bool, np.bool_)):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if v == int(v) and abs(v) < 1e15:
            return str(int(v))
        return format(v, ".15g")
    return str(value)


def _is_number_column(values) -> bool:
    """emmeans' ``.is.num``: every value reads as a number (also factor levels such as "175")."""
    try:
        [float(str(v)) for v in values]
    except ValueError:
        return False
    return True


def level_labels(grid: pd.DataFrame, columns: list[str]) -> list[str]:
    """emmeans' level labels of grid rows: the columns' values joined by a space, those of a column whose
    values all read as numbers prefixed with the variable's name (emmeans' ``enhance.levels``: "period1")."""
    numeric = {c for c in columns if _is_number_column(grid[c])}
    parts = []
    for c in columns:
        vals = grid[c].tolist()
        parts.append([f"{c}{r_number(v)}" if c in numeric else r_number(v) for v in vals])
    return [" ".join(x) for x in zip(*parts)] if parts else []


def _poly_coefficients(k: int) -> np.ndarray:
    """emmeans' ``poly.emmc``: R's orthogonal polynomials on 1..k, rescaled to integers."""
    x = np.arange(1, k + 1, dtype=float)
    degree = min(6, k - 1)
    V = np.vander(x - x.mean(), degree + 1, increasing=True)
    Q, R = np.linalg.qr(V)
    Q = Q * np.sign(np.diag(R))  # R's poly(): each polynomial with a positive leading coefficient
    M = Q[:, 1:]
    out = np.empty_like(M)
    for j in range(M.shape[1]):
        con = M[:, j]
        con = con / np.min(con[con > 0.01])
        z = np.max(np.abs(con - np.round(con)))
        while z > 0.05:
            con = con / z
            z = np.max(np.abs(con - np.round(con)))
        out[:, j] = np.round(con)
    return out


def _reference_index(levs_raw: list[str], ref) -> list[int]:
    refs = ref if isinstance(ref, (list, tuple)) else [ref]
    out = []
    for r in refs:
        if isinstance(r, (int, np.integer)) and not isinstance(r, bool):
            if not 1 <= r <= len(levs_raw):
                raise ModelSpecError(f"ref={r} is out of range: give a level or a position 1..{len(levs_raw)}.")
            out.append(int(r) - 1)
        elif str(r) in levs_raw:
            out.append(levs_raw.index(str(r)))
        else:
            raise ModelSpecError(f"ref={r!r} names no level; the levels are {levs_raw}.")
    return out


def contrast_coefficients(method, levs: list[str], levs_raw: list[str], ref=1):
    """The coefficients of ``method`` for the means labelled ``levs``.

    Returns ``(C, names, default_adjust, est_type, fam_size)`` with ``C`` of shape k × c; ``est_type`` is
    ``"pairs"`` for pairwise comparisons (Tukey's method applies), else None (decided from the sums).
    """
    k = len(levs)
    if isinstance(method, dict):
        cols, names = [], []
        for name, w in method.items():
            w = np.asarray(w, dtype=float).ravel()
            if w.size != k:
                raise ModelSpecError(
                    f"Contrast {name!r} has {w.size} weights but there are {k} means ({levs_raw}); give one per mean."
                )
            cols.append(w)
            names.append(str(name))
        if not cols:
            raise ModelSpecError("The contrast dict is empty: give at least one named weight vector.")
        return np.column_stack(cols), names, "none", None, k
    if not isinstance(method, str) or method not in CONTRAST_METHODS:
        raise ModelSpecError(
            f"method={method!r} is not known; use one of {CONTRAST_METHODS} or a dict of named weight vectors."
        )
    cols, names = [], []
    if method in ("pairwise", "revpairwise"):
        pairs = (
            [(i, j) for i in range(k - 1) for j in range(i + 1, k)]
            if method == "pairwise"
            else [(i, j) for i in range(1, k) for j in range(i)]
        )
        for i, j in pairs:
            c = np.zeros(k)
            c[i], c[j] = 1.0, -1.0
            cols.append(c)
            names.append(f"{levs[i]} - {levs[j]}")
        return _stack(cols, k), names, DEFAULT_ADJUST[method], "pairs", k
    if method == "trt.vs.ctrl":
        refs = _reference_index(levs_raw, ref)
        cnm = levs[refs[0]] if len(refs) == 1 else "avg(" + ",".join(levs[r] for r in refs) + ")"
        for i in range(k):
            if i in refs:
                continue
            c = np.zeros(k)
            c[refs] = -1.0 / len(refs)
            c[i] = 1.0
            cols.append(c)
            names.append(f"{levs[i]} - {cnm}")
        return _stack(cols, k), names, DEFAULT_ADJUST[method], None, k
    if method == "consec":
        for i in range(k - 1):
            c = np.zeros(k)
            c[i], c[i + 1] = -1.0, 1.0
            cols.append(c)
            names.append(f"{levs[i + 1]} - {levs[i]}")
        return _stack(cols, k), names, DEFAULT_ADJUST[method], None, k
    if method == "poly":
        if k < 2:
            raise ModelSpecError("Polynomial contrasts need at least two means.")
        C = _poly_coefficients(k)
        return C, POLY_NAMES[: C.shape[1]], DEFAULT_ADJUST[method], None, k
    # eff, del.eff
    w = np.full(k, 1.0 / k)
    for i in range(k):
        c = -w.copy()
        c[i] += 1.0
        if method == "del.eff":
            c = c / c[i]
        cols.append(c)
        names.append(f"{levs[i]} effect")
    return _stack(cols, k), names, DEFAULT_ADJUST[method], None, k


def _stack(cols, k):
    return np.column_stack(cols) if cols else np.zeros((k, 0))


def contrast(emm, method="eff", adjust=None, ref=1, by=None):
    """Contrasts of estimated marginal means (emmeans' ``contrast``).

    Parameters
    ----------
    emm : EmmGrid
        The result of :func:`sparselmm.emmeans` (or :func:`sparselmm.emtrends`).
    method : str or dict
        ``"pairwise"``, ``"revpairwise"``, ``"trt.vs.ctrl"``, ``"consec"``, ``"poly"``, ``"eff"``,
        ``"del.eff"``, or a dict of named weight vectors (one weight per mean of a ``by`` group).
    adjust : str, optional
        The multiplicity adjustment (:data:`sparselmm.inference.adjust.ADJUST_METHODS`); default that of
        the method, as emmeans: Tukey for pairwise, ``"dunnettx"`` for ``trt.vs.ctrl``, ``"mvt"`` for
        ``consec``, ``"fdr"`` for ``eff`` / ``del.eff``, none for ``poly`` and custom contrasts.
    ref : int, str or list, optional
        The control level(s) of ``trt.vs.ctrl``: a position (1-based, as emmeans) or a level label.
    by : str or list of str, optional
        Variables within whose levels to contrast; default the ``by`` of ``emm``.

    Returns
    -------
    EmmGrid
        One row per contrast (and ``by`` group); ``.to_frame()`` has ``contrast``, ``estimate``, ``SE``,
        ``df``, ``t.ratio`` (``z.ratio`` for asymptotic df) and ``p.value``. On the response scale of a log
        or logit link the contrasts are back-transformed to ratios or odds ratios (labels ``"A / B"``).

    Raises
    ------
    sparselmm.ModelSpecError
        An unknown method or adjustment, a dict whose vectors do not have one weight per mean, ``ref``
        naming no level, or ``by`` naming a variable not in the grid.
    """
    from .adjust import normalize_adjust

    if adjust is not None:
        adjust = normalize_adjust(adjust)
    by = emm.by if by is None else ([by] if isinstance(by, str) else list(by))
    unknown = [b for b in by if b not in emm.grid.columns]
    if unknown:
        raise ModelSpecError(
            f"by={unknown} names variables not in the grid; its variables are {list(emm.grid.columns)}."
        )
    primary = [c for c in emm.grid.columns if c not in by]
    groups = emm.by_groups(by)
    blocks, grid_rows = [], []
    first = None
    for rows in groups:
        sub = emm.grid.iloc[rows]
        raw = level_labels(sub, primary)
        levs = [f"({x})" if PARENS.search(x) else x for x in raw] if any(PARENS.search(x) for x in raw) else raw
        C, names, default_adjust, est_type, fam_size = contrast_coefficients(method, levs, raw, ref)
        if first is None:
            first = (C, default_adjust, est_type, fam_size)
        Lg = emm.L[rows]
        nonestimable = np.isnan(Lg).any(axis=1)  # emmeans: a contrast touching a non-estimable mean is one too
        block = C.T @ np.where(nonestimable[:, None], 0.0, Lg)
        block[(np.abs(C[nonestimable]) > 0).any(axis=0)] = np.nan
        blocks.append(block)
        for name in names:
            row = {"contrast": name}
            for b in by:
                row[b] = sub[b].iloc[0]
            grid_rows.append(row)
    C, default_adjust, est_type, fam_size = first
    if est_type is None:
        est_type = "contrast" if np.all(np.abs(C.sum(axis=0)) < 1e-3) else "prediction"
    true_contrast = bool(C.size and np.all(np.abs(C.sum(axis=0) / (1e-6 + np.max(np.abs(C), axis=0))) < 1e-6))
    grid = pd.DataFrame(grid_rows, columns=["contrast", *by])
    L = np.vstack(blocks) if blocks else np.zeros((0, emm.L.shape[1]))
    return emm.derived(
        grid=grid,
        L=L,
        by=by,
        est_name="estimate",
        est_type=est_type,
        fam_size=fam_size,
        adjust=adjust if adjust is not None else default_adjust,
        infer=(False, True),
        true_contrast=true_contrast,
    )
