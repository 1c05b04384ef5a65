"""Model matrices: fixed-effects ``X`` (formulaic), response ``y``, the sparse ``Zt`` and the ``Λθ`` template.

Layout follows lme4 (reformulas ``mkReTrms``): random terms are sorted by decreasing number of levels;
each term owns ``m × k`` consecutive columns of ``Z`` (level-major, ``k`` coefficients per level);
``θ`` holds, term by term, the lower triangle of that term's ``k × k`` factor, column by column — or, for a
term with a covariance structure (``diag(x | g)``, ``cs(x | g)``; :mod:`sparselmm.covstruct`), the structure's
own parameters, which its ``structure`` maps to the factor. The engines see only the factors; the entries
of all factors' lower triangles, term by term, are the "λ" vector (equal to θ when every term is
unstructured), in which the deviance's exact gradient is computed before :meth:`Design.chain_gradient`
takes it to θ.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np
import pandas as pd
import scipy.sparse as sp
from formulaic import Formula, model_matrix

from .covstruct import CovStructure, make_structure, r_name, tril_by_column
from .data import CleanData, clean_data, without_unused_categories
from .errors import DataError, FormulaError, ModelSpecError, caller_stacklevel
from .formula import ParsedFormula, RandomTerm

__all__ = [
    "Design",
    "ReTerm",
    "assemble_design",
    "build_design",
    "design_from_arrays",
    "encode_grouping",
    "required_columns",
]

RANK_TOL = 1e-7  # lme4 / R's qr() default tolerance for dropping collinear columns


class RankDeficiencyWarning(UserWarning):
    """Fixed-effects columns were dropped because the model matrix is rank deficient."""


@dataclass
class ReTerm:
    """One random-effects term: its grouping factor, coefficient matrix and place in ``Z`` and ``θ``."""

    term: RandomTerm
    cnms: list[str]  # names of the k varying coefficients, e.g. ["Intercept", "Days"]
    levels: pd.Index  # level labels of the grouping factor, in lme4's order
    refs: np.ndarray  # level code of each row
    z: np.ndarray  # n × k coefficient matrix (the term's "lhs" model matrix)
    lhs_spec: object  # formulaic ModelSpec for re-building z on new data (None for array-built terms)
    offset: int = 0  # first column of Z
    theta_offset: int = 0  # first element of theta
    lambda_offset: int = 0  # first element of the factors' entries (the λ vector; = theta_offset when unstructured)
    Zt_block: sp.csc_matrix | None = None  # (k·m) × n rows of Zt given directly (several nonzeros per row)

    @property
    def group_name(self) -> str:
        return self.term.group_name

    # cached: read many times per evaluation, and len() of a pandas Index of strings is slow
    @cached_property
    def k(self) -> int:
        return self.z.shape[1]

    @cached_property
    def n_levels(self) -> int:
        return len(self.levels)

    @cached_property
    def q(self) -> int:
        return self.k * self.n_levels

    @cached_property
    def structure(self) -> CovStructure:
        """The covariance structure (:mod:`sparselmm.covstruct`), from the term's ``structure`` name."""
        return make_structure(getattr(self.term, "structure", "us"), self.k, str(self.term))

    @cached_property
    def unstructured(self) -> bool:
        """θ's slice is the lower triangle of the factor itself (``us``, or a one-coefficient ``diag``)."""
        return self.structure.is_unstructured

    @cached_property
    def n_theta(self) -> int:
        return self.structure.n_params

    @cached_property
    def n_lambda(self) -> int:
        """Entries of the factor's lower triangle (``k(k+1)/2``)."""
        return self.k * (self.k + 1) // 2

    def tril_indices(self) -> tuple[np.ndarray, np.ndarray]:
        """Row and column of each entry of the term's k × k factor's lower triangle, column by column (the
        θ elements themselves for an unstructured term)."""
        return tril_by_column(self.k)

    def params(self, theta: np.ndarray) -> np.ndarray:
        """The term's slice of the full ``theta``."""
        return theta[self.theta_offset : self.theta_offset + self.n_theta]

    def factor(self, theta: np.ndarray) -> np.ndarray:
        """The k × k lower-triangular relative covariance factor ``T`` for the full ``theta``."""
        if not self.unstructured:
            return self.structure.factor(self.params(theta))
        T = np.zeros((self.k, self.k))
        r, c = self.tril_indices()
        T[r, c] = theta[self.theta_offset : self.theta_offset + self.n_theta]
        return T


@dataclass
class Design:
    """Everything about the model that does not depend on θ."""

    parsed: ParsedFormula
    y: np.ndarray
    X: np.ndarray
    fixed_names: list[str]
    fixed_spec: object  # formulaic ModelSpec of the fixed part (without response)
    dropped_columns: list[str]
    terms: list[ReTerm]
    Zt: sp.csc_matrix  # q × n
    weights: np.ndarray | None
    offset: np.ndarray | None
    data: CleanData
    lower: np.ndarray = field(init=False)
    upper: np.ndarray = field(init=False)
    theta0: np.ndarray = field(init=False)

    def __post_init__(self):
        lower, upper, start = [], [], []
        for t in self.terms:
            lower.extend(t.structure.lower)
            upper.extend(t.structure.upper)
            start.extend(t.structure.start)
        self.lower = np.array(lower, dtype=float)
        self.upper = np.array(upper, dtype=float)
        self.theta0 = np.array(start, dtype=float)

    @property
    def structured(self) -> bool:
        """Some term has a covariance structure other than the unstructured one (θ ≠ the factors' entries)."""
        return not all(t.unstructured for t in self.terms)

    def structured_terms(self) -> list[ReTerm]:
        """The terms whose θ is a structure's parameters (``diag`` with k > 1, ``cs``)."""
        return [t for t in self.terms if not t.unstructured]

    def chain_gradient(self, theta: np.ndarray, grad_lambda: np.ndarray) -> np.ndarray:
        """``∂f/∂θ`` from ``∂f/∂λ`` (the gradient in the entries of every factor's lower triangle, term by
        term) by the chain rule through each structure's Jacobian; unchanged when no term is structured."""
        grad_lambda = np.asarray(grad_lambda, dtype=float)
        if not self.structured:
            return grad_lambda
        out = np.empty(self.n_theta)
        for t in self.terms:
            g = grad_lambda[t.lambda_offset : t.lambda_offset + t.n_lambda]
            sl = slice(t.theta_offset, t.theta_offset + t.n_theta)
            out[sl] = g if t.unstructured else t.structure.jacobian(t.params(theta)).T @ g
        return out

    @property
    def n(self) -> int:
        return self.y.shape[0]

    @property
    def p(self) -> int:
        return self.X.shape[1]

    @property
    def q(self) -> int:
        return self.Zt.shape[0]

    @property
    def n_theta(self) -> int:
        return self.theta0.size

    def theta_names(self) -> list[str]:
        """lme4's names of θ, e.g. ``Subject.(Intercept)``, ``Subject.Days.(Intercept)``."""
        names = []
        for t in self.terms:
            if not t.unstructured:
                names.extend(t.structure.param_names(t.group_name, t.cnms))
                continue
            r, c = t.tril_indices()
            for i, j in zip(r, c):
                a, b = r_name(t.cnms[i]), r_name(t.cnms[j])
                names.append(f"{t.group_name}.{a}" if i == j else f"{t.group_name}.{a}.{b}")
        return names

    def Lambdat(self, theta: np.ndarray) -> sp.csc_matrix:
        """The sparse upper-triangular ``Λθᵀ`` (q × q)."""
        blocks = []
        for t in self.terms:
            blocks.append(sp.kron(sp.identity(t.n_levels, format="csc"), sp.csc_matrix(t.factor(theta).T)))
        return sp.block_diag(blocks, format="csc")


@lru_cache(maxsize=512)
def formulaic_formula(text: str) -> Formula:
    """formulaic's parse of a formula string, once per string in a process: parsing was ~⅓ of a small model's
    set-up (the same strings are parsed for the columns, the factors and the model matrices, and again by
    every refit). A parse error is raised, not cached."""
    return Formula(text)


def required_columns(parsed: ParsedFormula) -> list[str]:
    """Data columns read by the formula: response, fixed part, random-term coefficients, grouping factors."""
    cols: list[str] = []
    try:
        for text in [parsed.response, parsed.fixed, *(t.lhs for t in parsed.random)]:
            plain = _plain_names(text)
            variables = plain[1] if plain is not None else formulaic_formula(text).required_variables
            cols.extend(sorted(str(v) for v in variables))
    except Exception as err:  # formulaic's parser errors carry no common base class
        raise FormulaError(f"Could not parse formula {parsed.formula!r}: {err}") from None
    for term in parsed.random:
        cols.extend(term.factors)
    return list(dict.fromkeys(cols))


def factor_expressions(parsed: ParsedFormula) -> list:
    """The Python expression of every factor of the fixed part and of the random terms' coefficients, parsed
    (``ast`` trees; ``poly(x, 2)``, ``C(f)``, ``x``), for the callers that ask which names a factor reads. A part of
    bare names (``1 + x + z``) is skipped: it reads just those names, which :func:`required_columns` lists."""
    import ast

    trees = []
    for text in [parsed.fixed, *(t.lhs for t in parsed.random)]:
        if _plain_names(text) is not None:  # bare names: no expression to look into
            continue
        try:
            formula = formulaic_formula(text)
            terms = formula.rhs if hasattr(formula, "rhs") else formula
            exprs = [f.expr for term in terms for f in term.factors]
        except Exception:  # reported with context when the model matrix is built
            continue
        for expr in exprs:
            try:
                trees.append(ast.parse(expr, mode="eval"))
            except SyntaxError:
                continue
    return trees


def _transform_arguments(parsed: ParsedFormula) -> list[str]:
    """Names used inside Python-evaluated factors such as ``poly(x, 2)`` or ``center(x)``.

    formulaic's ``required_variables`` leaves out the arguments of its stateful transforms, so without
    this the data cleaning would drop ``x`` and the model matrix could not be built. The caller keeps
    only names that are columns of the data (``contr`` in ``C(f, contr.sum)`` is not).
    """
    import ast

    names: list[str] = []
    for tree in factor_expressions(parsed):
        called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
        names.extend(n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in called)
    return list(dict.fromkeys(names))


def _single_factor(col: pd.Series) -> tuple[np.ndarray, pd.Index]:
    if isinstance(col.dtype, pd.CategoricalDtype):
        values = without_unused_categories(col.array)  # (data.clean_data has done it for a model's frame)
        return values.codes.astype(np.int64), pd.Index(values.categories)
    try:
        codes, uniques = pd.factorize(col, sort=True)
    except TypeError:  # mixed types that cannot be ordered: order by their text
        codes, uniques = pd.factorize(col.astype(str), sort=True)
    return codes.astype(np.int64), pd.Index(uniques)


def encode_grouping(frame: pd.DataFrame, factors: tuple[str, ...]) -> tuple[np.ndarray, pd.Index]:
    """Level codes and labels of a grouping factor, or of the interaction of several (``a:b``).

    Levels follow R: a factor's own level order, otherwise sorted values; an interaction orders
    levels by the first factor, then the next, and keeps only combinations that occur.
    """
    codes, levels = _single_factor(frame[factors[0]])
    labels = [levels.astype(str)]
    for name in factors[1:]:
        c2, l2 = _single_factor(frame[name])
        codes = codes * len(l2) + c2
        labels.append(l2.astype(str))
    if len(factors) == 1:
        return codes, levels
    used, codes = np.unique(codes, return_inverse=True)
    parts = []
    for lab in labels[::-1]:
        parts.append(np.asarray(lab)[used % len(lab)])
        used = used // len(lab)
    names = [":".join(x) for x in zip(*parts[::-1])]
    return codes.astype(np.int64), pd.Index(names)


def gram_independent(G: np.ndarray) -> np.ndarray:
    """Left-to-right independent columns from the Gram matrix ``XᵀX`` (as ``independent_columns`` on X)."""
    keep: list[int] = []
    for j in range(G.shape[0]):
        norm2 = G[j, j]
        if norm2 <= 0:
            continue
        if keep:
            K = G[np.ix_(keep, keep)]
            c = G[keep, j]
            r2 = norm2 - c @ np.linalg.solve(K, c)
        else:
            r2 = norm2
        if r2 > RANK_TOL**2 * norm2:
            keep.append(j)
    return np.array(keep, dtype=int)


def independent_columns(X: np.ndarray) -> np.ndarray:
    """Indices of columns kept by a left-to-right rank check (as R's pivoting ``qr`` with tol 1e-7)."""
    keep: list[int] = []
    Q = np.zeros((X.shape[0], 0))
    for j in range(X.shape[1]):
        x = X[:, j]
        norm = np.linalg.norm(x)
        if norm == 0:
            continue
        r = x - Q @ (Q.T @ x)
        r = r - Q @ (Q.T @ r)  # second pass for orthogonality
        rn = np.linalg.norm(r)
        if rn > RANK_TOL * norm:
            keep.append(j)
            Q = np.column_stack([Q, r / rn])
    return np.array(keep, dtype=int)


def drop_collinear(
    X: np.ndarray, names: list[str], stacklevel: int | None = None
) -> tuple[np.ndarray, list[str], list[str]]:
    """Drop fixed-effect columns that are linear combinations of earlier ones (R's ``qr`` rule), with lme4's
    warning; returns the kept matrix (contiguous), the kept names and the dropped names.

    The warning points at the caller's line outside sparselmm unless ``stacklevel`` (counted from the
    caller of this function) is given."""
    X = np.ascontiguousarray(X)
    keep = independent_columns(X) if X.shape[1] else np.array([], dtype=int)
    dropped = [names[j] for j in range(len(names)) if j not in set(keep)]
    if dropped:
        warnings.warn(
            f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} column(s): {dropped}",
            RankDeficiencyWarning,
            stacklevel=caller_stacklevel() if stacklevel is None else stacklevel + 1,
        )
        X = np.ascontiguousarray(X[:, keep])
        names = [names[j] for j in keep]
    return X, names, dropped


def check_factor_levels(spec, where: str) -> None:
    """Refuse a factor with a single level in a model matrix, as R does.

    R's ``model.matrix`` stops with "contrasts can be applied only to factors with 2 or more levels";
    formulaic would give the factor no column and the term would vanish silently. Numeric (and boolean)
    columns are not factors: a constant one is dropped as collinear, with a warning, as lme4 does.
    """
    if isinstance(spec, SpecOnDemand):  # plain numeric columns: no factor
        return
    for expr, (kind, state) in (getattr(spec, "encoder_state", None) or {}).items():
        levels = list(state.get("categories", ())) if getattr(kind, "value", kind) == "categorical" else None
        if levels is not None and len(levels) < 2:
            what = f"only the level {levels[0]!r}" if levels else "no levels"
            raise DataError(
                f"Factor {expr!r} in {where} has {what} in the rows used (R: 'contrasts can be applied only "
                "to factors with 2 or more levels'). Remove it from the formula, or check the data: a filter "
                "or the rows dropped for missing values may have left a single level."
            )


def _model_matrix(spec_text: str, frame: pd.DataFrame, what: str):
    try:
        return model_matrix(formulaic_formula(spec_text), frame, na_action="raise")
    except Exception as err:  # formulaic raises many unrelated types; name the part that failed
        raise FormulaError(f"Could not build the {what} from {spec_text!r}: {err}") from None


class SpecOnDemand:
    """formulaic's ``ModelSpec`` of a formula part, built from the fitted rows when first used.

    A part made of plain numeric columns is built without formulaic (:func:`_part_matrix`): the fit needs only
    the numbers, and formulaic's model matrix was a third of a small model's set-up. What reads the spec
    afterwards (predict and emmeans on new data, anova) gets the one formulaic builds here from the same rows;
    this object stands for it, and pickles as it.
    """

    __slots__ = ("_text", "_frame", "_spec")

    def __init__(self, text: str, frame: pd.DataFrame):
        self._text, self._frame, self._spec = text, frame, None

    def resolve(self):
        """The ``ModelSpec`` itself."""
        if self._spec is None:
            self._spec = _model_matrix(self._text, self._frame, "model matrix").model_spec
            self._frame = None
        return self._spec

    def __getattr__(self, name):
        return getattr(self.resolve(), name)

    def __reduce__(self):
        return _same, (self.resolve(),)


def _same(obj):
    return obj


def _part_matrix(spec_text: str, frame: pd.DataFrame, what: str) -> tuple[np.ndarray, list[str], object]:
    """The matrix, column names and spec of a formula part (the fixed part, a random term's left side).

    A part that is only an intercept (``1``/``0``) and names of numeric, non-boolean columns (``1 + x + z``,
    ``0 + x``) is built directly, with formulaic's columns and names (intercept first, then the columns in
    the order written) and a :class:`SpecOnDemand`; anything else (factors, transforms, interactions, ``-``)
    goes to formulaic.
    """
    plain = _plain_names(spec_text)
    if plain is None or not all(t in frame.columns and _plain_numeric(frame[t]) for t in plain[1]):
        mm = _model_matrix(spec_text, frame, what)
        return np.asarray(mm, dtype=float), list(mm.columns), mm.model_spec
    intercept, names = plain
    cols = ([np.ones(len(frame))] if intercept else []) + [frame[t].to_numpy(dtype=float) for t in names]
    mat = np.column_stack(cols) if cols else np.zeros((len(frame), 0))
    return mat, (["Intercept"] if intercept else []) + names, SpecOnDemand(spec_text, frame)


@lru_cache(maxsize=512)
def _plain_names(spec_text: str) -> tuple[bool, list[str]] | None:
    """``(intercept, names)`` of a part written as ``1``/``0`` and bare names joined by ``+``; None for any other
    part. (Whether each name is a numeric column is for the caller to check against the data.)"""
    tokens = [tok.strip() for tok in spec_text.split("+")]
    if "0" in tokens and "1" in tokens:
        return None
    names = list(dict.fromkeys(t for t in tokens if t not in ("0", "1")))
    if not all(t.isidentifier() and t != "Intercept" for t in names):
        return None
    return "0" not in tokens, names


def _plain_numeric(col) -> bool:
    dtype = col.dtype
    return isinstance(dtype, np.dtype) and dtype.kind in "iuf"


def _response(parsed: ParsedFormula, frame: pd.DataFrame) -> np.ndarray:
    raw = frame.get(parsed.response)
    if raw is not None and (not pd.api.types.is_numeric_dtype(raw) or pd.api.types.is_bool_dtype(raw)):
        raise DataError(f"The response {parsed.response!r} must be numeric, not {raw.dtype}; convert it first.")
    if raw is not None and isinstance(raw, pd.Series):  # a plain column: no model matrix needed
        return np.array(raw, dtype=float)
    col = _model_matrix(f"0 + {parsed.response}", frame, "response")
    if col.shape[1] != 1:
        raise DataError(f"The response {parsed.response!r} must be one numeric column.")
    return np.asarray(col, dtype=float)[:, 0].copy()


def build_design(parsed: ParsedFormula, data: pd.DataFrame, weights=None, offset=None, missing="drop") -> Design:
    """Build ``y``, ``X``, the random-effects terms and ``Zt`` from a parsed formula and data."""
    needed = required_columns(parsed)
    needed += [c for c in _transform_arguments(parsed) if c in data.columns and c not in needed]
    clean = clean_data(data, needed, weights, offset, missing)
    frame = clean.frame
    y = _response(parsed, frame)

    X, names, fixed_spec = _part_matrix(parsed.fixed, frame, "fixed-effects model matrix")
    check_factor_levels(fixed_spec, "the fixed effects")
    X, names, dropped = drop_collinear(X, names)

    terms: list[ReTerm] = []
    for term in parsed.random:
        z, cnms, spec = _part_matrix(term.lhs, frame, f"random-effects term {term}")
        check_factor_levels(spec, f"random-effects term {term}")
        if z.shape[1] == 0:
            raise FormulaError(f"Random-effects term {term} has no columns: it needs at least '1' or a variable.")
        refs, levels = encode_grouping(frame, term.factors)
        terms.append(ReTerm(term, cnms, levels, refs, np.ascontiguousarray(z), spec))

    return assemble_design(parsed, y, X, names, fixed_spec, dropped, terms, clean)


def assemble_design(parsed, y, X, fixed_names, fixed_spec, dropped, terms, clean, check_levels=True) -> Design:
    """Check identifiability, order the terms as lme4 does, lay out ``Zt`` and return the Design.

    ``check_levels=False`` skips lme4's refusal of terms with as many levels or random effects as rows
    (the statsmodels facade fits those, as statsmodels does, and warns itself).
    """
    n = y.shape[0]
    _check_identifiable(terms, n, check_levels)
    terms = place_terms(terms)
    Zt = build_Zt(terms, n)
    return Design(parsed, y, X, fixed_names, fixed_spec, dropped, terms, Zt, clean.weights, clean.offset, clean)


def place_terms(terms: list[ReTerm]) -> list[ReTerm]:
    """The terms in lme4's order, each given its first column of ``Z`` and first element of ``θ``.

    lme4 sorts by decreasing number of levels (``rev(order(nl))``, which reverses ties), only if the terms
    are not already in that order.
    """
    nl = np.array([t.n_levels for t in terms])
    if np.any(np.diff(nl) > 0):
        terms = [terms[i] for i in np.argsort(nl, kind="stable")[::-1]]
    col = th = lam = 0
    for t in terms:
        t.offset, t.theta_offset, t.lambda_offset = col, th, lam
        col += t.q
        th += t.n_theta
        lam += t.n_lambda
    return terms


def design_from_arrays(
    y, X, fixed_names, terms: list[ReTerm], weights=None, offset=None, label="", check_levels=True
) -> Design:
    """A Design from ready-made arrays and terms (used by the statsmodels-style interface).

    ``terms`` are :class:`ReTerm` objects; a term may give its rows of ``Zt`` directly in ``Zt_block``
    (k = 1, one column per "level"), which is how variance components with several nonzeros per row
    are represented.
    """
    y = np.asarray(y, dtype=float).ravel()
    X = np.ascontiguousarray(np.asarray(X, dtype=float).reshape(y.size, -1))
    n = y.size
    clean = CleanData(pd.DataFrame(index=pd.RangeIndex(n)), np.arange(n), weights, offset, 0)
    parsed = ParsedFormula(label, "y", " + ".join(fixed_names) or "0", tuple(t.term for t in terms))
    return assemble_design(parsed, y, X, list(fixed_names), None, [], list(terms), clean, check_levels)


def _check_identifiable(terms: list[ReTerm], n: int, check_levels: bool = True) -> None:
    for t in terms:
        if t.n_levels < 2:
            raise ModelSpecError(
                f"Grouping factor {t.group_name!r} in {t.term} has only one level; a random effect needs at "
                "least two groups. Remove the term or model the factor as a fixed effect."
            )
        if not check_levels:
            continue
        if t.n_levels >= n:
            raise ModelSpecError(
                f"Grouping factor {t.group_name!r} has {t.n_levels} levels for {n} observations; the number "
                "of levels must be smaller than the number of observations, otherwise the random effect "
                "cannot be told apart from the residual."
            )
        if t.q >= n:
            raise ModelSpecError(
                f"Term {t.term} has {t.q} random effects ({t.k} per level × {t.n_levels} levels) but there are "
                f"only {n} observations; the random-effects variances and the residual variance are "
                "unidentifiable. Simplify the term, e.g. drop a random slope or use '||'."
            )


def build_Zt(terms: list[ReTerm], n: int) -> sp.csc_matrix:
    """``Zᵀ`` (q × n, CSC, sorted indices): each term's block from its level codes and coefficient columns,
    or its explicit ``Zt_block`` (the statsmodels facade's variance components)."""
    q = sum(t.q for t in terms)
    if all(t.Zt_block is None for t in terms):
        # every row has each term's k entries, at rows offset + level·k + j: the CSC arrays directly, sorted
        # (terms in order of their offsets), without scipy's coordinate sort
        K = sum(t.k for t in terms)
        itype = np.int32 if max(q, n * K) < np.iinfo(np.int32).max else np.int64
        rows = np.concatenate([t.offset + t.refs[:, None] * t.k + np.arange(t.k) for t in terms], axis=1)
        data = np.concatenate([t.z for t in terms], axis=1)
        indptr = np.arange(0, n * K + 1, K, dtype=itype)
        return sp.csc_matrix((data.ravel(), rows.astype(itype).ravel(), indptr), shape=(q, n))
    blocks = []
    obs = np.arange(n)
    for t in terms:
        if t.Zt_block is not None:
            blocks.append(sp.csr_matrix(t.Zt_block))
            continue
        rows = (t.refs[:, None] * t.k + np.arange(t.k)[None, :]).ravel()
        cols = np.repeat(obs, t.k)
        blocks.append(sp.csr_matrix((t.z.ravel(), (rows, cols)), shape=(t.q, n)))
    Zt = sp.vstack(blocks, format="csc")
    Zt.sort_indices()
    return Zt
