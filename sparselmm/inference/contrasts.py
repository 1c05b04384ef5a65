"""Contrast matrices ``L`` of the type I, II and III hypotheses of lmerTest's ``anova(m, type=)``.

For every fixed-effect term of a model this builds the matrix ``L`` (rows × p, columns in the order of
``design.fixed_names``) whose F test ``(Lβ)ᵀ(L V Lᵀ)⁻¹(Lβ)/rank`` is the term's row of lmerTest's anova
table. It is a port of lmerTest 3.1-3's contrast functions (read from the installed package, rewritten
here), following the R code step by step, including its numerical thresholds, so the matrices
themselves — not only the F tests — equal ``show_tests(anova(m, type=k))``
(``tests/test_contrasts.py``, references from ``tests/data/make_contrasts_lmertest.R``):

* **Type I** (``get_contrasts_type1``): ``Lᵀ`` of the Doolittle decomposition ``XᵀX = L U`` (lmerTest's
  ``doolittle``: entries below 1e-6 in absolute value set to zero, a pivot below 1e-6 zeroes its column);
  the rows of a term are the rows of its columns — sequential sums of squares.
* **Type II** (``get_contrasts_type2_unfolded``): a term that no other term contains is tested
  marginally (the rows of the identity at its columns, ``get_contrasts_marginal``); any other term gets
  the Doolittle rows of its columns after moving them, then the columns of the terms containing it, to
  the end of ``X`` (``get_contrasts_type2``).
* **Type III** (``get_contrasts_type3``, ``extract_contrasts_type3``): with treatment coding, the
  coefficients of the full dummy ("cell") coding of every term (``get_rdX``: ``~ 0 + term`` per term)
  regressed on ``X``, ``zapsmall``-ed; then, from the highest-order term down, each term's columns are
  replaced by their residuals on the columns of the terms that contain it; the rows kept are those of
  ``X``'s columns, each term takes its columns (transposed) and drops rows with ``Σ|l| ≤ 1e-8``. When the
  design is not R's treatment coding (e.g. ``C(f, contr.sum)``), lmerTest builds the treatment-coded
  design, computes the contrasts there and maps them back with ``zapsmall(ginv(X_trt) X)``; so does
  this module.
* With at most one column in ``X`` or at most one term, types II and III are type I (as in lmerTest).

Containment (lmerTest's ``containment``/``term_contain``): term A is contained in term B when B has all
of A's variables and more, and both have the same numeric variables — where, as in R, a term's variables
are those its ``terms()`` factor pattern codes with 1 (contrasts), not 2 (indicators), and "numeric" means
a one-column numeric variable (a matrix-valued one such as ``poly(x, 2)`` is not, as R's ``dataClasses``
says ``"nmatrix.2"``).

R's treatment-coded design is rebuilt here from the data by R's own rule (``model.matrix``'s
``TermCode``): a factor in a term is coded by contrasts when the term without it is empty or contained in
an earlier term, by indicators otherwise; without an intercept the first factor is coded by indicators.
Interaction columns vary the first variable fastest. When that design equals sparselmm's ``X`` (the usual
case: formulaic codes factors by treatment contrasts with the first sorted level as reference, as R's
``factor()`` does, and drops the same collinear columns), the contrasts are computed on ``X`` directly,
which is lmerTest's ``contr.treatment`` shortcut; otherwise they are mapped as lmerTest does for other
codings.

Term labels are formulaic's (``"x"``, ``"f"``, ``"x:f"``, ``"I(x ** 2)"``), which are R's labels for the
usual formulas. Known differences from R:

* Types I and II work on sparselmm's ``X``, as lmerTest works on R's. For a few formulas formulaic's
  columns are not R's (an interaction whose margins are missing: ``x + f:g``, ``0 + x + x:f``); then the
  matrices are in formulaic's coordinates, type I F tests still agree (the same nested column spaces),
  and a type II test can differ where R's own coding is rank deficient (in ``0 + x + x:f`` R's ``x`` is
  the slope of the level whose column lme4 dropped, formulaic's the slope of the first level). Type III is
  mapped from R's treatment coding and agrees.
* formulaic codes a logical variable as a numeric 0/1 column (R as a factor), and labels an interaction
  in the order written where R orders its variables by first appearance in the formula.
* lmerTest's ``zapsmall`` uses ``getOption("digits")``; this module uses R's default, 7. Entries that R
  and numpy round differently (a value within rounding error of a 7-digit tie) would differ by 1e-7.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..design import independent_columns
from ..errors import ModelSpecError

__all__ = [
    "containment",
    "contrasts_type1",
    "contrasts_type2",
    "contrasts_type3",
    "doolittle",
    "term_columns",
    "term_contrasts",
]

DOOLITTLE_EPS = 1e-6  # lmerTest's doolittle(eps = 1e-6)
ZAP_DIGITS = 7  # zapsmall(digits = getOption("digits")), R's default
ROW_TOL = 1e-8  # extract_contrasts_type3 keeps rows with rowSums(abs(L)) > 1e-8
GINV_TOL = np.sqrt(np.finfo(float).eps)  # MASS::ginv(tol = sqrt(.Machine$double.eps))

_TYPES = {1: 1, 2: 2, 3: 3, "1": 1, "2": 2, "3": 3, "I": 1, "II": 2, "III": 3}


# ---- the model's terms ----------------------------------------------------------------------------


@dataclass
class _Factor:
    name: str
    categorical: bool
    levels: list | None  # categorical: the encoder's levels (the first is the treatment reference)
    lookup: bool = False  # a plain column name (formulaic's EvalMethod.LOOKUP)
    n_columns: int | None = None  # numeric: columns it evaluates to (known once evaluated)


@dataclass
class _Term:
    label: str
    factors: tuple[str, ...]
    columns: list[int]  # positions in design.fixed_names
    codes: dict[str, int]  # R's factor pattern: 1 = coded by contrasts, 2 = by indicators


class _Model:
    """The fixed part of a design as lmerTest sees it: intercept, ordered terms, their variables."""

    def __init__(self, design):
        spec = getattr(design, "fixed_spec", None)
        if spec is None:
            raise ModelSpecError(
                "This model was built from arrays, not from a formula, so its fixed effects have no terms; "
                "term contrasts (anova types I-III) need a model fitted with sparselmm.lmer(formula, data)."
            )
        self.design = design
        self.spec = spec
        all_names = list(spec.column_names)
        # a fit from chunks (sparselmm.scale) holds XᵀX, not X: the contrasts use cross-products and the
        # spec evaluated on made-up rows of the variables (StreamedDesign.coding_frame); see _type3_gram
        self.rows_held = getattr(design, "rows_held", True)
        if self.rows_held:
            self.X = np.asarray(design.X, dtype=float)
            self.p = self.X.shape[1]
        else:
            self.X = None
            self.p = len(design.fixed_names)
            where = {name: i for i, name in enumerate(design.fixed_all_names)}
            self._kept = [where[name] for name in design.fixed_names]
        self._frame = None
        position = {name: j for j, name in enumerate(design.fixed_names)}
        self.has_intercept = False
        self.terms: list[_Term] = []
        self.factors: dict[str, _Factor] = {}
        for term, idx in spec.term_indices.items():
            if str(term) == "1":
                self.has_intercept = True
                continue
            names = tuple(str(f) for f in term.factors)
            cols = [position[all_names[i]] for i in idx if all_names[i] in position]
            self.terms.append(_Term(str(term), names, cols, {}))
            for f in term.factors:
                if str(f) not in self.factors:
                    self.factors[str(f)] = self._factor_info(f)
        # R's factor pattern (TermCode): a variable is coded by contrasts when the term without it is
        # empty or a subset of an earlier term.
        for j, t in enumerate(self.terms):
            earlier = [set(u.factors) for u in self.terms[:j]]
            for v in t.factors:
                rest = set(t.factors) - {v}
                t.codes[v] = 1 if not rest or any(rest <= e for e in earlier) else 2
        self._values: dict[str, np.ndarray] | None = None

    def _factor_info(self, factor) -> _Factor:
        name = str(factor)
        lookup = getattr(factor.eval_method, "value", None) == "lookup"
        kind, state = self.spec.encoder_state.get(name, (None, {}))
        if getattr(kind, "value", None) == "categorical":
            levels = list((state or {}).get("categories") or [])
            return _Factor(name, True, levels, lookup)
        return _Factor(name, False, None, lookup)

    @property
    def labels(self) -> list[str]:
        return [t.label for t in self.terms]

    def gram(self, order=None) -> np.ndarray:
        """``XᵀX`` (unweighted, as lmerTest's ``crossprod(X)``) with the columns of X in ``order``."""
        if self.X is not None:
            X = self.X if order is None else self.X[:, order]
            return X.T @ X
        G = self.design.fixed_gram_all[np.ix_(self._kept, self._kept)]
        return G if order is None else G[np.ix_(order, order)]

    def rows(self):
        """The rows the variables are evaluated on: the data's, or for a fit from chunks made-up rows with
        every combination of the categorical levels (:meth:`StreamedDesign.coding_frame`), enough of them
        per combination that the columns are as independent there as functions of the variables."""
        if self._frame is None:
            if self.rows_held:
                self._frame = self.design.data.frame
            else:
                small = self.design.coding_frame(1)
                monomials = 1  # the intercept's
                for t in self.terms:
                    k = 1
                    for v in t.factors:
                        f = self.factors[v]
                        if not f.categorical:
                            if f.n_columns is None:
                                f.n_columns = self._evaluate(v, small.iloc[:3]).shape[1]
                            k *= f.n_columns
                    monomials += k
                numeric = any(not f.categorical for f in self.factors.values())
                self._frame = self.design.coding_frame(2 + monomials if numeric else 1)
        return self._frame

    @property
    def n_rows(self) -> int:
        return self.X.shape[0] if self.X is not None else len(self.rows())

    def col_terms(self) -> list[str | None]:
        """The term label of each column of X (None for the intercept), like lmerTest's ``col_terms``."""
        owner: list[str | None] = [None] * self.p
        for t in self.terms:
            for j in t.columns:
                owner[j] = t.label
        return owner

    # -- evaluated variables (needed by containment's numeric check and by type III) --
    def values(self) -> dict[str, np.ndarray]:
        """Each variable on the model's rows: level codes of a factor, the n × k columns of a numeric."""
        if self._values is None:
            frame = self.rows()
            out = {}
            for name, f in self.factors.items():
                M = self._evaluate(name, frame)
                if M.shape[0] != self.n_rows:
                    raise ModelSpecError(f"The fixed-effect variable {name!r} does not have one value per row.")
                if f.categorical:
                    one_hot = M.shape[1] == len(f.levels) and np.all((M == 0) | (M == 1)) and np.all(M.sum(1) == 1)
                    if not one_hot:
                        raise ModelSpecError(
                            f"Could not recover the levels of the factor {name!r} in term(s) "
                            f"{[t.label for t in self.terms if name in t.factors]}; its coding is not supported "
                            "for type III contrasts."
                        )
                    out[name] = M.argmax(axis=1)
                else:
                    f.n_columns = M.shape[1]
                    out[name] = M
            self._values = out
        return self._values

    def _evaluate(self, name: str, frame) -> np.ndarray:
        """The columns of the variable ``name`` alone (``0 + name`` with the fit's encoder state) on ``frame``."""
        from formulaic import Formula

        f = self.factors[name]
        ref = f"`{name}`" if f.lookup and not name.isidentifier() else name
        try:
            spec = self.spec.update(formula=Formula(f"0 + {ref}"), structure=None)
            return np.asarray(spec.get_model_matrix(frame), dtype=float).reshape(len(frame), -1)
        except Exception as err:  # formulaic raises many unrelated types
            raise ModelSpecError(f"Could not evaluate the fixed-effect variable {name!r}: {err}") from None

    def is_numeric(self, name: str) -> bool:
        """R's ``dataClasses[v] == "numeric"``: a numeric variable of one column."""
        f = self.factors[name]
        if f.categorical:
            return False
        if f.n_columns is None:
            if self.rows_held:
                self.values()
            else:  # a few made-up rows tell the number of columns
                f.n_columns = self._evaluate(name, self.design.coding_frame(1).iloc[:3]).shape[1]
        return f.n_columns == 1


def _model(design) -> _Model:
    return design if isinstance(design, _Model) else _Model(design)


def term_columns(design) -> dict[str, list[int]]:
    """Fixed-effect term label → positions of its columns in ``design.fixed_names``.

    The intercept is not a term. A term whose columns were all dropped as collinear maps to ``[]``
    (lmerTest's ``term2colX``).
    """
    return {t.label: list(t.columns) for t in _model(design).terms}


def containment(design) -> dict[str, list[str]]:
    """Term label → labels of the terms that contain it (lmerTest's ``containment``)."""
    model = _model(design)
    variables = {t.label: {v for v in t.factors if t.codes[v] == 1} for t in model.terms}
    numerics = {k: {v for v in vs if model.is_numeric(v)} for k, vs in variables.items()}

    def contained(a: str, b: str) -> bool:
        return variables[a] <= variables[b] and bool(variables[b] - variables[a]) and numerics[a] == numerics[b]

    return {a: [b for b in model.labels if contained(a, b)] for a in model.labels}


# ---- numerical building blocks, as in lmerTest / base R ---------------------------------------------


def doolittle(x: np.ndarray, eps: float = DOOLITTLE_EPS) -> tuple[np.ndarray, np.ndarray]:
    """lmerTest's ``doolittle``: ``x = L U`` with unit lower-triangular ``L``, no pivoting.

    A pivot ``|U[i, i]| < eps`` sets the rest of column ``i`` of ``L`` to zero; at the end entries of
    ``L`` and ``U`` below ``eps`` in absolute value are set to zero (absolute, not relative, as in R).
    """
    x = np.asarray(x, dtype=float)
    n = x.shape[0]
    if x.ndim != 2 or x.shape[1] != n or n < 2:
        raise ModelSpecError("doolittle() needs a square matrix with at least two rows.")
    L = np.eye(n)
    U = np.zeros((n, n))
    for i in range(n):
        U[i, :] = x[i, :] - L[i, :i] @ U[:i, :]
        if i + 1 < n:
            if abs(U[i, i]) < eps:
                L[i + 1 :, i] = 0.0
            else:
                L[i + 1 :, i] = (x[i + 1 :, i] - L[i + 1 :, :i] @ U[:i, i]) / U[i, i]
    L[np.abs(L) < eps] = 0.0
    U[np.abs(U) < eps] = 0.0
    return L, U


def _zapsmall(x: np.ndarray, digits: int = ZAP_DIGITS) -> np.ndarray:
    """R's ``zapsmall``: round to ``digits`` significant digits of the largest absolute entry."""
    x = np.asarray(x, dtype=float)
    if x.size == 0:
        return x.copy()
    mx = float(np.nanmax(np.abs(x)))
    d = max(0, digits - int(np.ceil(np.log10(mx)))) if mx > 0 else digits
    return np.round(x, d) + 0.0  # + 0.0 turns -0.0 into 0.0


def _ginv(A: np.ndarray) -> np.ndarray:
    """``MASS::ginv``: Moore–Penrose inverse dropping singular values below sqrt(eps) × the largest."""
    if A.size == 0:
        return np.zeros(A.shape[::-1])
    U, d, Vt = np.linalg.svd(A, full_matrices=False)
    keep = d > max(GINV_TOL * d[0], 0.0)
    return (Vt[keep].T / d[keep]) @ U[:, keep].T


def _residuals(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``resid(lm.fit(x = A, y = B))``: ``B`` minus its projection on the columns of ``A`` (rank tol 1e-7)."""
    if A.shape[1] == 0 or B.shape[1] == 0:
        return B.copy()
    keep = independent_columns(A)
    if keep.size == 0:
        return B.copy()
    Q, _ = np.linalg.qr(A[:, keep])
    return B - Q @ (Q.T @ B)


def _empty(p: int) -> np.ndarray:
    return np.zeros((0, p))


# ---- type I ------------------------------------------------------------------------------------------


def contrasts_type1(design) -> dict[str, np.ndarray]:
    """Sequential (type I) contrasts, lmerTest's ``get_contrasts_type1``.

    With no column, or only the intercept's, lmerTest returns one unnamed empty matrix and its anova table
    has no rows; here that is an empty dict.
    """
    model = _model(design)
    p = model.p
    if p == 0 or (p == 1 and model.has_intercept):
        return {}
    L = np.ones((1, 1)) if p == 1 else doolittle(model.gram())[0].T
    return {t.label: L[t.columns, :].copy() for t in model.terms}


# ---- type II -----------------------------------------------------------------------------------------


def _type2_term(model: _Model, term: _Term, contains: list[str]) -> np.ndarray:
    """lmerTest's ``get_contrasts_type2`` for one term."""
    p = model.p
    by_label = {t.label: t for t in model.terms}
    moved = list(term.columns) + [j for lab in contains for j in by_label[lab].columns]
    if not moved:
        return _empty(p)  # lmerTest would fail here (X[, -integer(0)] has no columns)
    moved_set = set(moved)
    order = [j for j in range(p) if j not in moved_set] + moved
    Lc = doolittle(model.gram(order))[0].T
    own = set(term.columns)
    rows = [i for i, j in enumerate(order) if j in own]
    back = np.argsort(order)  # column k of X is column back[k] of Xnew
    return Lc[np.ix_(rows, back)]


def contrasts_type2(design) -> dict[str, np.ndarray]:
    """Type II contrasts, lmerTest's ``get_contrasts_type2_unfolded`` (its ``anova(type = 2)``)."""
    model = _model(design)
    p = model.p
    if p <= 1 or len(model.terms) <= 1:
        return contrasts_type1(model)
    contained_in = containment(model)
    out = {}
    for t in model.terms:
        if not contained_in[t.label]:
            L = np.zeros((len(t.columns), p))
            L[np.arange(len(t.columns)), t.columns] = 1.0
            out[t.label] = L
        else:
            out[t.label] = _type2_term(model, t, contained_in[t.label])
    return out


# ---- type III ----------------------------------------------------------------------------------------


def _term_block(model: _Model, term: _Term, coding: dict[str, int]) -> tuple[np.ndarray, list[tuple]]:
    """Columns of one term in R's ``model.matrix`` layout, and a key per column.

    ``coding[v]`` is 1 (treatment contrasts: levels after the first) or 2 (one indicator per level) for
    a factor; a numeric variable contributes its columns. The first variable varies fastest.
    """
    values = model.values()
    n = model.n_rows
    cols = [np.ones(n)]
    keys: list[tuple] = [()]
    for v in term.factors:
        f = model.factors[v]
        if f.categorical:
            first = 1 if coding[v] == 1 else 0
            parts = [(values[v] == k).astype(float) for k in range(first, len(f.levels))]
            tags = [("level", k) for k in range(first, len(f.levels))]
        else:
            parts = [values[v][:, k] for k in range(values[v].shape[1])]
            tags = [("col", k) for k in range(values[v].shape[1])]
        cols = [c * part for part in parts for c in cols]
        keys = [key + (tag,) for tag in tags for key in keys]
    block = np.column_stack(cols) if cols else np.zeros((n, 0))
    return block, [(term.label, *key) for key in keys]


def _treatment_design(model: _Model):
    """R's treatment-coded X (before dropping collinear columns), its keys and owners, and get_rdX's cells."""
    n = model.n_rows
    codings = [{v: (1 if t.codes[v] == 1 else 2) for v in t.factors} for t in model.terms]
    if not model.has_intercept:  # model.matrix: the first factor is coded by indicators
        done = False
        for t, coding in zip(model.terms, codings):
            for v in t.factors:
                if model.factors[v].categorical and len(model.factors[v].levels) > 1:
                    coding[v] = 2
                    done = True
                    break
            if done:
                break
    X_cols, X_keys, X_owner = [], [], []
    rd_cols, rd_keys = [], []
    if model.has_intercept:
        X_cols.append(np.ones((n, 1)))
        X_keys.append(("(Intercept)",))
        X_owner.append(None)
        rd_cols.append(np.ones((n, 1)))
        rd_keys.append(("(Intercept)",))
    for t, coding in zip(model.terms, codings):
        block, keys = _term_block(model, t, coding)
        X_cols.append(block)
        X_keys.extend(keys)
        X_owner.extend([t.label] * len(keys))
        cells, cell_keys = _term_block(model, t, dict.fromkeys(t.factors, 2))
        rd_cols.append(cells)
        rd_keys.extend(cell_keys)
    X = np.hstack(X_cols) if X_cols else np.zeros((n, 0))
    rdX = np.hstack(rd_cols) if rd_cols else np.zeros((n, 0))
    return X, X_keys, X_owner, rdX, rd_keys


def _extract_type3(model, coef, keys, owner, rd_keys, contained_in) -> dict[str, np.ndarray]:
    """lmerTest's ``extract_contrasts_type3`` on a treatment-coded full-rank ``X``, given
    ``coef = ginv(X) @ rdX`` (the cells regressed on ``X``)."""
    L = _zapsmall(coef).T  # one row per cell column, one column per column of X
    cols = {t.label: [j for j, o in enumerate(owner) if o == t.label] for t in model.terms}
    # highest order first; terms of equal order never contain one another, so ties do not matter
    for t in sorted(model.terms, key=lambda t: -len(t.factors)):
        contains = contained_in[t.label]
        if contains:
            A = L[:, [j for lab in contains for j in cols[lab]]]
            L[:, cols[t.label]] = _zapsmall(_residuals(A, L[:, cols[t.label]]))
    row_of = {key: i for i, key in enumerate(rd_keys)}
    L = L[[row_of[key] for key in keys], :]  # L[colnames(X), ]
    out = {}
    for t in model.terms:
        Lt = L[:, cols[t.label]].T
        out[t.label] = Lt[np.abs(Lt).sum(axis=1) > ROW_TOL]
    return out


def contrasts_type3(design) -> dict[str, np.ndarray]:
    """Type III contrasts, lmerTest's ``get_contrasts_type3``."""
    model = _model(design)
    if model.p <= 1 or len(model.terms) <= 1:
        return contrasts_type1(model)
    contained_in = containment(model)
    X_full, keys, owner, rdX, rd_keys = _treatment_design(model)
    if model.X is None:
        return _type3_gram(model, X_full, keys, owner, rdX, rd_keys, contained_in)
    Xorig = model.X
    keep = independent_columns(X_full) if X_full.shape[1] else np.array([], dtype=int)
    X = X_full[:, keep]
    keys = [keys[j] for j in keep]
    owner = [owner[j] for j in keep]
    scale = max(1.0, float(np.abs(Xorig).max(initial=0.0)))
    if X.shape == Xorig.shape and np.allclose(X, Xorig, rtol=0, atol=1e-12 * scale):
        # sparselmm's X is R's treatment coding: lmerTest's contr.treatment shortcut, on X itself
        return _extract_type3(model, _ginv(Xorig) @ rdX, keys, owner, rd_keys, contained_in)
    # other codings: contrasts of the treatment-coded design, mapped to X's coefficients
    L3 = _extract_type3(model, _ginv(X) @ rdX, keys, owner, rd_keys, contained_in)
    to_orig = _zapsmall(_ginv(X) @ Xorig)
    return {label: L @ to_orig for label, L in L3.items()}


def _type3_gram(model: _Model, X_full, keys, owner, rdX, rd_keys, contained_in) -> dict[str, np.ndarray]:
    """Type III contrasts of a fit that holds ``XᵀX`` but not ``X`` (a fit from chunks).

    Everything type III computes from the rows — which treatment-coded columns are independent, ``ginv(X)
    rdX`` and ``ginv(X) X_orig`` — is a function of the data's cross-products of ``[X_full | rdX | X_orig]``.
    Those columns are linear combinations of the fixed spec's columns ``X_all`` as functions of the
    variables (R's coding and formulaic's span the same model space); the combinations ``M`` are found on
    made-up rows (``X_full, rdX`` here are on :meth:`_Model.rows`) where ``X_all`` is evaluated too, and the
    data's cross-products are then ``Mᵀ (X_allᵀX_all) M`` from the ``X_allᵀX_all`` summed over the chunks.
    Checked: ``X_all M`` reproduces the columns on the made-up rows, and every combination of ``X_all``
    that vanishes there vanishes on the data (else the made-up rows were not general enough and this
    raises). The numbers agree with the in-memory contrasts to rounding (``tests/test_scale.py``).
    """
    from ..design import gram_independent
    from ..errors import RowsNotHeldError

    design = model.design
    frame = model.rows()

    def fail(why: str):
        raise RowsNotHeldError(
            f"The type III contrasts of {design.parsed.formula!r} could not be formed from the cross-products "
            f"of this fit from {design.source}: {why}. Use anova(type=1) or anova(type=2), which need only "
            "XᵀX, or fit in memory to the rows of the columns the model reads."
        )

    try:
        A = np.asarray(model.spec.get_model_matrix(frame, na_action="raise"), dtype=float).reshape(len(frame), -1)
    except Exception as err:  # formulaic raises many unrelated types
        fail(f"the fixed-effects spec could not be evaluated on made-up rows ({err})")
    G_all = np.asarray(design.fixed_gram_all, dtype=float)
    if A.shape[1] != G_all.shape[0]:
        fail(f"the spec gives {A.shape[1]} columns on made-up rows, the fit summed {G_all.shape[0]}")
    B = np.hstack([X_full, rdX])
    M, *_ = np.linalg.lstsq(A, B, rcond=None)
    resid = np.linalg.norm(A @ M - B, axis=0)
    if np.any(resid > 1e-8 * np.maximum(np.linalg.norm(B, axis=0), 1.0)):
        fail("R's treatment-coded columns are not combinations of the spec's columns")
    _, d, Vt = np.linalg.svd(A, full_matrices=False)
    null = Vt[d <= max(A.shape) * np.finfo(float).eps * d[0]] if d.size else Vt[:0]
    if null.shape[0]:
        size = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", null, G_all, null), 0.0))
        if np.any(size > 1e-6 * np.sqrt(max(float(np.max(np.diag(G_all))), 1e-300))):
            fail(
                "the made-up rows are less general than the data (a numeric column with few distinct values early on?)"
            )
    nf = X_full.shape[1]
    GB = M.T @ G_all @ M  # the data's cross-products of [X_full | rdX]
    GBX = M.T @ G_all[:, model._kept]  # ... with sparselmm's X
    keep = gram_independent(GB[:nf, :nf]) if nf else np.array([], dtype=int)
    K = GB[np.ix_(keep, keep)]
    coef = np.linalg.solve(K, GB[keep, nf:])  # ginv(X) rdX for the independent treatment-coded X
    keys = [keys[j] for j in keep]
    owner = [owner[j] for j in keep]
    L3 = _extract_type3(model, coef, keys, owner, rd_keys, contained_in)
    to_orig = _zapsmall(np.linalg.solve(K, GBX[keep]))  # the identity when X is R's treatment coding
    return {label: L @ to_orig for label, L in L3.items()}


# ---- dispatch ------------------------------------------------------------------------------------


def term_contrasts(design, type=3) -> dict[str, np.ndarray]:
    """Contrast matrices of lmerTest's ``anova(m, type=)`` for every fixed-effect term.

    Parameters
    ----------
    design : Design
        ``m.design`` of a model fitted by :func:`sparselmm.lmer`.
    type : {1, 2, 3, "1", "2", "3", "I", "II", "III"}
        The type of hypotheses (lmerTest's default is 3).

    Returns
    -------
    dict
        Term label → ndarray (rows × p), columns in the order of ``design.fixed_names``, terms in the
        model's order. A term with no testable columns has a matrix with no rows.
    """
    key = type.strip().upper() if isinstance(type, str) else type
    try:
        known = not isinstance(key, bool) and key in _TYPES
    except TypeError:  # unhashable
        known = False
    if not known:
        raise ModelSpecError(
            f"type={type!r} is not a type of hypotheses; use 1, 2 or 3 (or 'I', 'II', 'III'). "
            "lmerTest's 'marginal' and 'yates' are not provided."
        )
    kind = _TYPES[key]
    return {1: contrasts_type1, 2: contrasts_type2, 3: contrasts_type3}[kind](design)
