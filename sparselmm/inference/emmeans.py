"""Estimated marginal means and trends (R's emmeans 1.8, Lenth) for lmer, glmer and
statsmodels-facade fits.

The reference grid is the model's factors at all their levels and its covariates at their means (``at=``
overrides; a numeric predictor with at most two distinct values is kept at both, emmeans' ``cov.keep = 2``).
Its linear functions of β are the rows of the fixed-effects model matrix of the grid, built by the model's
own formulaic spec (:func:`sparselmm.predict.model_matrix`); a marginal mean averages those rows over the
factors not asked for. Standard errors come from ``vcov(β)`` (Kenward–Roger: pbkrtest's adjusted ``Φ_A``),
degrees of freedom row by row from the fit's Satterthwaite or Kenward–Roger object
(:func:`sparselmm.inference.contest.inference_for`), as emmeans takes them from lmerTest and pbkrtest.

The functions read results by their attributes only (``design``, ``fixef``, ``vcov``, ``family``; the
statsmodels facade through its lme4 view), as every module of :mod:`sparselmm.inference`.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import DataError, ModelSpecError
from ..predict import model_matrix
from .adjust import adjusted_p_values, normalize_adjust

__all__ = [
    "EmmGrid",
    "ModelView",
    "ReferenceGrid",
    "emmeans",
    "emtrends",
    "marginal_means",
    "parse_specs",
    "predictors",
]

WEIGHTS = ("equal", "proportional", "outer", "cells", "flat")
ESTIMABLE_TOL = 1e-8  # emmeans' estble.tol
_DDF_NAMES = {"satterthwaite": "Satterthwaite", "kenward-roger": "Kenward-Roger", "asymptotic": "asymptotic"}
_IDENT = re.compile(r"[A-Za-z_.][A-Za-z0-9_.]*")


# --- the model as emmeans sees it -------------------------------------------------------------------------
class ModelView:
    """β, its covariance and df function, the formulaic spec and the data of one fit, for one ``ddf``."""

    def __init__(self, result, ddf=None):
        self.result = result
        family = getattr(result, "family", None)
        if family is not None and hasattr(result, "nAGQ"):  # glmer
            self.kind, inference, design = "glmer", None, result.design
            self.spec, self.frame, self.fixed = design.fixed_spec, design.data.frame, design.parsed.fixed
            self.names, self.dropped = list(design.fixed_names), list(design.dropped_columns)
        elif hasattr(result, "_lmer_view") and hasattr(result, "model"):  # statsmodels facade
            self.kind, inference = "lmer", result._lmer_view()
            model = result.model
            self.spec, self.frame = getattr(model, "_fixed_spec", None), getattr(model, "data_frame", None)
            if self.spec is None or self.frame is None or not getattr(model, "formula", None):
                raise ModelSpecError(
                    "emmeans needs a model built from a formula (MixedLM.from_formula), with its data kept: "
                    "the reference grid is made from the formula's factors and covariates."
                )
            self.fixed = model.formula.split("~", 1)[1]
            self.names, self.dropped = list(model.exog_names), []
        elif hasattr(result, "deviance_function") and hasattr(result, "design"):  # lmer
            self.kind, inference, design = "lmer", result, result.design
            if design.fixed_spec is None:
                raise ModelSpecError("emmeans needs a model fitted from a formula and a data frame.")
            self.spec, self.frame, self.fixed = design.fixed_spec, design.data.frame, design.parsed.fixed
            self.names, self.dropped = list(design.fixed_names), list(design.dropped_columns)
        else:
            raise ModelSpecError(
                f"emmeans takes a fit from sparselmm.lmer, sparselmm.glmer or MixedLM.fit, not {type(result).__name__}."
            )
        self.full_names = list(self.spec.column_names)
        self.keep = [self.full_names.index(c) for c in self.names]
        self.method = self._ddf(ddf)
        src = inference if inference is not None else result
        self.beta = np.asarray(src.fixef, dtype=float)
        self.V = np.asarray(src.vcov, dtype=float)
        self._inference = None
        if self.method in ("Satterthwaite", "Kenward-Roger"):
            from .contest import inference_for

            self._inference = inference_for(inference, self.method)
            if self.method == "Kenward-Roger":
                self.V = np.asarray(self._inference.vcov_adj, dtype=float)
        self.link = None
        self.inv_label = None
        if self.kind == "glmer" and family.link.name != "identity":
            self.link = family.link
            name = family.name.lower()
            self.inv_label = "prob" if "binomial" in name else "rate" if "poisson" in name else "response"
        self._null_basis = None

    def _ddf(self, ddf) -> str:
        if ddf is None:
            return "Satterthwaite" if self.kind == "lmer" else "asymptotic"
        key = str(ddf).strip().lower().replace("_", "-") if isinstance(ddf, str) else None
        key = {"kr": "kenward-roger", "kenwardroger": "kenward-roger", "satt": "satterthwaite", "z": "asymptotic"}.get(
            key, key
        )
        if key not in _DDF_NAMES:
            raise ModelSpecError(f"ddf={ddf!r} is not known; use 'Satterthwaite', 'Kenward-Roger' or 'asymptotic'.")
        method = _DDF_NAMES[key]
        if self.kind == "glmer" and method != "asymptotic":
            raise ModelSpecError(f"ddf={ddf!r}: a glmer fit has only asymptotic (z) inference, as in emmeans.")
        return method

    def df(self, l: np.ndarray) -> float:
        """Denominator df of the linear function ``l`` (emmeans' ``dffun``)."""
        if self._inference is None:
            return np.inf
        return float(self._inference.t_df(l)[1])

    def X(self, grid: pd.DataFrame) -> np.ndarray:
        """The fixed-effects model matrix of grid rows, on the fitted columns; non-estimable rows (of a
        rank-deficient fit) are NaN, as emmeans reports them."""
        X = model_matrix(self.spec, grid, "the reference grid's model matrix")
        if not self.dropped:
            return X
        if self._null_basis is None:
            full = model_matrix(self.spec, self.frame, "the fixed-effects model matrix")
            _, s, Vt = np.linalg.svd(full, full_matrices=True)
            rank = int(np.sum(s > s[0] * 1e-7))
            self._null_basis = Vt[rank:].T
        N = self._null_basis
        bad = np.sum((X @ N) ** 2, axis=1) > ESTIMABLE_TOL * np.maximum(np.sum(X**2, axis=1), 1e-300)
        out = X[:, self.keep]
        out[bad] = np.nan
        return out


def predictors(fixed: str, frame: pd.DataFrame) -> list[str]:
    """The data columns the fixed part of the formula reads, in order of appearance (R's ``all.vars``)."""
    names = []
    for m in _IDENT.finditer(fixed):
        rest = fixed[m.end() :].lstrip()
        if rest.startswith("("):
            continue  # a function's name
        if m.group() in frame.columns and m.group() not in names:
            names.append(m.group())
    return names


def _factor_levels(view: ModelView, name: str):
    """The fitted levels of a factor predictor (None for a covariate)."""
    state = getattr(view.spec, "encoder_state", {}) or {}
    for expr, (kind, st) in state.items():
        if getattr(kind, "value", kind) != "categorical" or "categories" not in st:
            continue
        if name in {m.group() for m in _IDENT.finditer(expr)}:
            return list(st["categories"])
    col = view.frame[name]
    if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        if isinstance(col.dtype, pd.CategoricalDtype):
            return list(col.cat.remove_unused_categories().cat.categories)
        return sorted(pd.unique(col.dropna()), key=str)
    return None


class ReferenceGrid:
    """The reference grid: each predictor's levels (first varying fastest), the grid's linear functions
    and the number of observations in each cell (emmeans' ``.wgt.``)."""

    def __init__(self, view: ModelView, at=None, cov_reduce=None, shift: tuple[str, float] | None = None):
        frame = view.frame
        at = {} if at is None else at
        if not isinstance(at, dict):
            raise DataError("at= must be a dict mapping a predictor to a value or a list of values.")
        names = predictors(view.fixed, frame)
        unknown = [k for k in at if k not in names]
        if unknown:
            raise DataError(f"at= names {unknown}, which are not predictors of the fixed effects; they are {names}.")
        self.levels: dict[str, list] = {}
        self.factors: list[str] = []  # variables counted in .wgt. (factors and two-valued covariates)
        self.numeric: set[str] = set()
        for nm in names:
            lev = _factor_levels(view, nm)
            if nm in at:
                vals = at[nm] if isinstance(at[nm], (list, tuple, np.ndarray, pd.Index)) else [at[nm]]
                if lev is not None:
                    missing = [v for v in vals if v not in lev and str(v) not in [str(x) for x in lev]]
                    if missing:
                        raise DataError(f"at={{{nm!r}: {missing}}} names level(s) not in the model; levels are {lev}.")
                    self.factors.append(nm)
                else:
                    self.numeric.add(nm)
                self.levels[nm] = list(vals)
            elif lev is not None:
                self.levels[nm] = lev
                self.factors.append(nm)
            else:
                x = np.asarray(frame[nm], dtype=float)
                uniq = np.unique(x)
                if cov_reduce is None and uniq.size <= 2:  # emmeans' cov.keep = "2"
                    self.levels[nm] = list(uniq)
                    self.factors.append(nm)
                    self.numeric.add(nm)
                elif cov_reduce == "meanint":  # joint_tests: mean ± 1
                    self.levels[nm] = [x.mean() - 1.0, x.mean() + 1.0]
                    self.numeric.add(nm)
                else:
                    self.levels[nm] = [float(np.mean(x))]
                    self.numeric.add(nm)
        self.names = names
        dims = [len(self.levels[n]) for n in names]
        idx = np.arange(int(np.prod(dims)) if dims else 1)
        cols = {}
        for j, nm in enumerate(names):
            stride = int(np.prod(dims[:j])) if j else 1
            cols[nm] = [self.levels[nm][k] for k in (idx // stride) % dims[j]]
        self.grid = pd.DataFrame(cols, index=range(idx.size)) if names else pd.DataFrame(index=range(1))
        self.dims = dims
        eval_grid = self.grid.copy()
        for nm in names:
            if nm in self.factors and nm not in self.numeric and isinstance(frame[nm].dtype, pd.CategoricalDtype):
                eval_grid[nm] = pd.Categorical(eval_grid[nm], categories=frame[nm].cat.categories)
        if shift is not None:
            eval_grid[shift[0]] = eval_grid[shift[0]] + shift[1]
        self.L = view.X(eval_grid)
        self.wgt = self._counts(frame)

    def _counts(self, frame: pd.DataFrame) -> np.ndarray:
        used = [f for f in self.factors if f in self.grid.columns]
        if not used:
            return np.ones(len(self.grid))

        def keys(table: pd.DataFrame) -> pd.Series:
            parts = []
            for f in used:
                col = table[f]
                numeric = f in self.numeric or (
                    pd.api.types.is_numeric_dtype(frame[f]) and not isinstance(frame[f].dtype, pd.CategoricalDtype)
                )
                parts.append(col.astype(float).astype(str) if numeric else col.astype(str))
            return pd.concat(parts, axis=1).agg("\r".join, axis=1)

        counts = keys(frame[used]).value_counts()
        out = keys(self.grid[used]).map(counts).fillna(0.0).to_numpy(dtype=float)
        return out if np.any(out > 0) else out + 1.0


def parse_specs(specs, by) -> tuple[list[str], list[str]]:
    """``specs`` (a name, a list of names or ``"~ a | b"``) and ``by`` as two lists of variable names."""
    by = [] if by is None else ([by] if isinstance(by, str) else list(by))
    if isinstance(specs, str):
        text = specs.strip()
        if "~" in text:
            text = text.split("~", 1)[1]
            if "|" in text:
                text, by_text = text.split("|", 1)
                by = [*by, *[v for v in re.split(r"[*+:]", by_text.strip()) if v.strip()]]
            names = [v.strip() for v in re.split(r"[*+:]", text) if v.strip()]
        else:
            names = [text]
    elif isinstance(specs, (list, tuple)):
        names = [str(s) for s in specs]
    else:
        raise ModelSpecError(f"specs must be a variable name, a list of names or a '~ a | b' string, not {specs!r}.")
    by = [b.strip() for b in by]
    names = [n for n in names if n not in by]
    return names, by


# --- the grid of estimates -------------------------------------------------------------------------------
class EmmGrid:
    """Estimated marginal means, trends or contrasts: one linear function of β per row of ``grid``.

    ``to_frame()`` gives emmeans' summary table; ``pairs()`` and :func:`sparselmm.contrast` compare the rows.
    """

    def __init__(self, view, grid, L, by, est_name, *, type="link", level=0.95, est_type="prediction",
                 fam_size=None, adjust="none", infer=(True, False), avgd_over=(),
                 transform=None):  # fmt: skip
        self.view = view
        self.grid = grid.reset_index(drop=True)
        self.L = np.asarray(L, dtype=float)
        self.by = list(by)
        self.est_name = est_name
        self.type = type
        self.level = level
        self.est_type = est_type
        self.fam_size = len(grid) if fam_size is None else fam_size
        self.adjust = adjust
        self.infer = infer
        self.avgd_over = list(avgd_over)
        if transform is None and type == "response" and view.link is not None and est_name == "emmean":
            transform = (view.inv_label, view.link.linkinv, view.link.mu_eta)
        # (column name, inverse link, its derivative) when results are back-transformed, else None
        self.transform = transform

    def derived(self, true_contrast: bool = False, **changes) -> EmmGrid:
        """A new grid of linear functions of this one's rows (contrasts): same model, type and level. On the
        response scale, true contrasts of a log or logit link become ratios or odds ratios (emmeans'
        ``log.contrast``); other contrasts stay on the link scale."""
        transform = None
        if self.transform is not None and true_contrast and self.view.link.name in ("log", "logit"):
            transform = ("odds.ratio" if self.view.link.name == "logit" else "ratio", np.exp, np.exp)
        kw = dict(type=self.type, level=self.level, avgd_over=self.avgd_over, transform=transform)
        kw.update(changes)
        return EmmGrid(self.view, kw.pop("grid"), kw.pop("L"), kw.pop("by"), kw.pop("est_name"), **kw)

    def by_groups(self, by=None) -> list[np.ndarray]:
        """Row positions of each ``by`` group, groups in order of first appearance."""
        by = self.by if by is None else by
        if not by:
            return [np.arange(len(self.grid))]
        keys = self.grid[by].astype(str).agg("\r".join, axis=1)
        return [np.flatnonzero(keys.to_numpy() == k) for k in pd.unique(keys)]

    def to_frame(self) -> pd.DataFrame:
        """emmeans' summary as a DataFrame, with R's column names."""
        beta, V = self.view.beta, self.view.V
        est = self.L @ beta
        se = np.sqrt(np.einsum("ij,jk,ik->i", self.L, V, self.L))
        df = np.array([self.view.df(l) if np.all(np.isfinite(l)) else np.nan for l in self.L])
        out = self.grid.copy()
        link = self.transform
        asymptotic = self.view.method == "asymptotic"
        name = self.est_name if link is None else link[0]
        out[name] = est
        out["SE"] = se
        out["df"] = df
        if self.infer[0]:
            q = stats.t.ppf(0.5 + self.level / 2, df)
            lo, hi = ("asymp.LCL", "asymp.UCL") if asymptotic else ("lower.CL", "upper.CL")
            out[lo], out[hi] = est - q * se, est + q * se
            if link is not None:
                a, b = link[1](out[lo].to_numpy()), link[1](out[hi].to_numpy())
                out[lo], out[hi] = np.minimum(a, b), np.maximum(a, b)
        if self.infer[1]:
            if link is not None:
                out["null"] = float(link[1](np.array([0.0]))[0])
            t = est / se
            stat = "z.ratio" if asymptotic else "t.ratio"
            out[stat] = t
            p = np.full(len(t), np.nan)
            adjust = normalize_adjust(self.adjust)
            for rows in self.by_groups():
                corr = rank = None
                if adjust == "mvt":
                    C = self.L[rows] @ V @ self.L[rows].T
                    d = np.sqrt(np.diag(C))
                    corr = C / np.outer(d, d)
                elif adjust == "scheffe":
                    Lr = self.L[rows]
                    Lr = np.where(np.abs(Lr) < 1e-7 * np.max(np.abs(Lr)), 0.0, Lr)
                    s = np.linalg.svd(Lr, compute_uv=False)
                    rank = int(np.sum(s > 1e-7 * s[0]))
                p[rows], _ = adjusted_p_values(t[rows], df[rows], adjust, self.fam_size, self.est_type, corr, rank)
            out["p.value"] = p
        if link is not None:
            out["SE"] = np.abs(link[2](est)) * se
            out[name] = link[1](est)
            if link[0] in ("ratio", "odds.ratio") and "contrast" in out.columns:
                out["contrast"] = out["contrast"].str.replace(" - ", " / ", regex=False)
        return out

    def pairs(self, adjust=None, reverse: bool = False, by=None) -> EmmGrid:
        """Pairwise comparisons (emmeans' ``pairs``): ``contrast(self, "pairwise" or "revpairwise")``."""
        from .emm_contrasts import contrast

        return contrast(self, "revpairwise" if reverse else "pairwise", adjust=adjust, by=by)

    def contrast(self, method="eff", adjust=None, ref=1, by=None) -> EmmGrid:
        """Contrasts of the rows; see :func:`sparselmm.contrast`."""
        from .emm_contrasts import contrast

        return contrast(self, method, adjust=adjust, ref=ref, by=by)

    def _messages(self) -> list[str]:
        """The notes emmeans prints under a table."""
        msg = []
        if self.avgd_over:
            msg.append(f"Results are averaged over the levels of: {', '.join(self.avgd_over)}")
        method = self.view.method.lower() if self.view.method != "asymptotic" else "asymptotic"
        msg.append(f"Degrees-of-freedom method: {method}")
        link = self.view.link.name if self.view.link is not None else None
        if link is not None and self.transform is None and self.est_type == "prediction":
            msg.append(f"Results are given on the {link} (not the response) scale.")
        if self.infer[0]:
            msg.append(f"Confidence level used: {self.level:g}")
            if self.transform is not None:
                msg.append(f"Intervals are back-transformed from the {link} scale")
        n_per_group = len(self.grid) // max(len(self.by_groups()), 1)
        if self.infer[1] and self.adjust != "none" and n_per_group > 1:
            adjust = "sidak" if self.adjust == "tukey" and self.est_type != "pairs" else self.adjust
            extra = (
                f"for comparing a family of {self.fam_size} estimates"
                if adjust == "tukey"
                else ("" if adjust == "scheffe" else f"for {n_per_group} tests")
            )
            msg.append(f"P value adjustment: {adjust} method {extra}".rstrip())
        if self.infer[1] and self.transform is not None:
            scale = "log odds ratio" if self.transform[0] == "odds.ratio" else "log"
            msg.append(f"Tests are performed on the {scale} scale")
        return msg

    def __str__(self) -> str:
        tab = self.to_frame()
        parts = []
        for rows in self.by_groups():
            block = tab.iloc[rows].drop(columns=self.by)
            if self.by:
                parts.append(", ".join(f"{b} = {tab[b].iloc[rows[0]]}" for b in self.by) + ":")
            parts.append(block.to_string(index=False, float_format=lambda v: "Inf" if np.isinf(v) else f"{v:.4g}"))
            parts.append("")
        return "\n".join(parts + self._messages())

    def __repr__(self) -> str:
        return self.__str__()


# --- the entry points -----------------------------------------------------------------------------------
def marginal_means(rg: ReferenceGrid, facs: list[str], weights: str):
    """Average the grid's rows over the factors not in ``facs``: the marginal linear functions, their grid
    (``facs`` in expand.grid order) and the names averaged over."""
    names = rg.names
    unknown = [f for f in facs if f not in names]
    if unknown:
        raise ModelSpecError(
            f"{unknown} {'is' if len(unknown) == 1 else 'are'} not in the reference grid; its variables are {names}."
        )
    if weights not in WEIGHTS:
        raise ModelSpecError(f"weights={weights!r} is not known; use one of {WEIGHTS}.")
    dims = rg.dims
    idx = np.arange(len(rg.grid)).reshape(dims, order="F") if dims else np.zeros(1, int)
    use = [names.index(f) for f in facs]
    rest = [j for j in range(len(names)) if j not in use]
    arr = np.transpose(idx, use + rest) if names else idx
    n_use = int(np.prod([dims[j] for j in use])) if use else 1
    rows = arr.reshape((n_use, -1), order="F")
    wgt = rg.wgt
    if weights in ("proportional", "outer"):
        tot = wgt[rows].sum(axis=0)
        if weights == "outer":
            rest_levels = np.arange(rows.shape[1]).reshape([dims[j] for j in rest] or [1], order="F")
            w = np.ones(rows.shape[1])
            for a in range(rest_levels.ndim):
                margin = np.array(
                    [tot[np.take(rest_levels, i, axis=a).ravel()].sum() for i in range(rest_levels.shape[a])]
                )
                level_of = np.indices(rest_levels.shape)[a].ravel(order="F")
                w = w * margin[level_of]
            tot = w
        W = np.tile(tot, (n_use, 1))
    elif weights in ("cells", "flat"):
        W = wgt[rows] if weights == "cells" else (wgt[rows] > 0).astype(float)
    else:
        W = np.ones(rows.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        L = np.einsum("rc,rcp->rp", W, rg.L[rows]) / W.sum(axis=1)[:, None]
    levels = {f: rg.levels[f] for f in facs}
    combos = {}
    for j, f in enumerate(facs):
        stride = int(np.prod([len(levels[g]) for g in facs[:j]])) if j else 1
        combos[f] = [levels[f][(i // stride) % len(levels[f])] for i in range(n_use)]
    grid = pd.DataFrame(combos, index=range(n_use)) if facs else pd.DataFrame({"1": ["overall"]})
    avgd = [names[j] for j in rest if dims[j] > 1]
    return L, grid, avgd


def _check_type(type: str) -> str:
    if type not in ("link", "response"):
        raise ModelSpecError(f"type={type!r} is not known; use 'link' or 'response'.")
    return type


def emmeans(model, specs, by=None, at=None, weights="equal", type="link", ddf=None, level=0.95) -> EmmGrid:
    """Estimated marginal means (R's ``emmeans``).

    Parameters
    ----------
    model : LmerResult, GlmerResult or MixedLMResults
        A fit from :func:`sparselmm.lmer`, :func:`sparselmm.glmer` or the statsmodels facade (from a formula).
    specs : str or list of str
        The factor(s) whose means are wanted: a name, a list of names, or ``"~ a | b"`` (``b`` as ``by``).
    by : str or list of str, optional
        Variables whose levels split the table into groups (compared separately by :meth:`EmmGrid.pairs`).
    at : dict, optional
        Predictor → value or list of values in the reference grid (covariates default to their mean, factors
        to all their levels).
    weights : {"equal", "proportional", "outer", "cells", "flat"}
        How the grid is averaged over the factors not in ``specs``: equally, in proportion to their marginal
        frequencies in the data (joint or as a product of one-way margins), by the cell counts within each
        mean, or equally over the non-empty cells.
    type : {"link", "response"}
        ``"response"``: glmer means back-transformed through the inverse link with delta-method SEs (column
        ``prob``, ``rate`` or ``response``, intervals back-transformed); identity links are unchanged.
    ddf : {"Satterthwaite", "Kenward-Roger", "asymptotic"}, optional
        Degrees of freedom: the default is Satterthwaite's for lmer fits and asymptotic (z) for glmer.
    level : float
        Confidence level of the intervals.

    Returns
    -------
    EmmGrid
        ``.to_frame()``: the grid columns, ``emmean``, ``SE``, ``df``, ``lower.CL``, ``upper.CL``
        (``asymp.LCL``/``asymp.UCL`` with asymptotic df); printing shows it as emmeans does.

    Raises
    ------
    sparselmm.ModelSpecError
        A variable of ``specs`` or ``by`` not in the grid, an unknown ``weights``, ``type`` or ``ddf``.
    sparselmm.DataError
        ``at=`` naming a column that is not a predictor, or a level the model does not have.

    Examples
    --------
    >>> import sparselmm
    >>> m = sparselmm.lmer("angle ~ recipe + temp + (1 | recipe:replicate)", sparselmm.datasets.load("cake"))
    >>> sparselmm.emmeans(m, "recipe").to_frame().columns.tolist()
    ['recipe', 'emmean', 'SE', 'df', 'lower.CL', 'upper.CL']
    """
    type = _check_type(type)
    if not 0 < level < 1:
        raise ModelSpecError(f"level={level} must be between 0 and 1.")
    view = ModelView(model, ddf)
    rg = ReferenceGrid(view, at)
    names, by = parse_specs(specs, by)
    facs = list(dict.fromkeys(names + by))
    L, grid, avgd = marginal_means(rg, facs, weights)
    return EmmGrid(view, grid, L, by, "emmean", type=type, level=level, avgd_over=avgd)


def emtrends(model, specs, var: str, by=None, at=None, weights="equal", ddf=None, level=0.95) -> EmmGrid:
    """Estimated marginal slopes of a covariate (R's ``emtrends``).

    emmeans differentiates by a forward difference of the reference grid's linear functions with step
    ``0.001 × range(var)``; the same step is used here, so the values agree with emmeans' (exactly the slope
    for a model linear in ``var``).

    Parameters
    ----------
    model, specs, by, at, weights, ddf, level
        As :func:`emmeans`.
    var : str
        The numeric predictor whose slope is estimated.

    Returns
    -------
    EmmGrid
        Columns: the grid columns, ``<var>.trend``, ``SE``, ``df`` and the confidence limits.

    Raises
    ------
    sparselmm.ModelSpecError
        ``var`` not a numeric predictor of the model; as :func:`emmeans` otherwise.
    """
    view = ModelView(model, ddf)
    frame = view.frame
    if var not in predictors(view.fixed, frame) or _factor_levels(view, var) is not None:
        raise ModelSpecError(f"var={var!r} is not a numeric predictor of the fixed effects.")
    x = np.asarray(frame[var], dtype=float)
    h = 0.001 * float(np.ptp(x))
    if h == 0:
        raise ModelSpecError(f"var={var!r} is constant in the data: it has no slope.")
    rg0 = ReferenceGrid(view, at)
    rg1 = ReferenceGrid(view, at, shift=(var, h))
    rg0.L = (rg1.L - rg0.L) / h
    names, by = parse_specs(specs, by)
    facs = list(dict.fromkeys(names + by))
    L, grid, avgd = marginal_means(rg0, facs, weights)
    return EmmGrid(view, grid, L, by, f"{var}.trend", level=level, avgd_over=avgd)
