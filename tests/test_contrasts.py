"""Contrast matrices of anova types I, II and III against lmerTest 3.1-3.

The reference is ``show_tests(anova(m, type = k))`` from lmerTest, written by
``tests/data/make_contrasts_lmertest.R`` to ``tests/data/contrasts_lmertest.json`` for the models below,
fitted there with ``lmerTest::lmer`` on the same data (lme4's cake and sleepstudy, and the simulated
``tests/data/contrasts_sim.csv``). The matrices must agree to 1e-8 after R's column names are matched to
formulaic's; the F statistics they give on sparselmm's β and vcov must agree as well, which is what the
anova table depends on.
"""

from __future__ import annotations

import json
import re
import types
import warnings
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from helpers import contrast_frames

import sparselmm
from sparselmm.errors import ModelSpecError
from sparselmm.inference.contrasts import (
    containment,
    contrasts_type1,
    contrasts_type2,
    contrasts_type3,
    doolittle,
    term_columns,
    term_contrasts,
)

DATA = Path(__file__).resolve().parent / "data"
REFERENCE = json.loads((DATA / "contrasts_lmertest.json").read_text())
CASES = REFERENCE["cases"]

# sparselmm's formula for each R formula: only the power operator differs
PY_FORMULA = {name: case["formula"].replace("^", "**") for name, case in CASES.items()}
# formulaic codes these formulas with other columns than R (same column space): there the F statistics,
# and type III through the change of coordinates β_R = Bβ, are compared; R's X is stored for them
OTHER_COLUMNS = ["sim_cells_only", "sim_slopes_no_intercept"]
SAME_COLUMNS = [name for name in CASES if name not in OTHER_COLUMNS]
# type II of `0 + x + x:f3`: lmerTest tests R's coefficient of x marginally, which after lme4 drops
# x:f3c is the slope of level c; formulaic's x is the slope of level a (see the module docstring)
KNOWN_DIFFERENT_F = {("sim_slopes_no_intercept", 2, "x")}
SUM_LEVELS = {"a": "1", "b": "2"}  # R's contr.sum columns of f3 are numbered, formulaic's named [S.level]


@cache
def fit(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rank-deficiency and convergence notes are not under test here
        return sparselmm.lmer(PY_FORMULA[name], contrast_frames()[CASES[name]["data"]])


def r_column_name(name: str) -> str:
    """R's model-matrix column name for a formulaic one (for the formulas of this file)."""
    if name == "Intercept":
        return "(Intercept)"
    name = re.sub(r"\[S\.([^\]]+)\]", lambda m: SUM_LEVELS[m.group(1)], name)
    name = re.sub(r"\[(?:T\.)?([^\]]+)\]", r"\1", name)
    return name.replace(" ** ", "^")


def r_label(label: str) -> str:
    return label.replace(" ** ", "^")


def r_matrix(entry: dict) -> np.ndarray:
    return np.array(entry["values"], dtype=float).reshape(entry["nrow"], entry["ncol"])


def reference(name: str, kind: int) -> dict[str, np.ndarray]:
    ref = CASES[name]["types"][str(kind)]
    return {label: r_matrix(m) for label, m in zip(ref["terms"], ref["matrices"])}


def f_statistic(L: np.ndarray, beta: np.ndarray, V: np.ndarray) -> tuple[float, int]:
    """Wald F of H0: Lβ = 0 and its rank, as lmerTest's contestMD (eigen-decomposition of L V Lᵀ)."""
    d, P = np.linalg.eigh(L @ V @ L.T)
    d, P = d[::-1], P[:, ::-1]
    pos = d > max(np.sqrt(np.finfo(float).eps) * d[0], 0)
    q = int(pos.sum())
    t2 = (P[:, pos].T @ L @ beta) ** 2 / d[pos]
    return float(t2.sum() / q), q


def r_coordinates(name: str) -> np.ndarray:
    """B with R's coefficients = B @ sparselmm's (identity where the columns are the same)."""
    X = fit(name).design.X
    if name not in OTHER_COLUMNS:
        return np.eye(X.shape[1])
    return np.linalg.pinv(r_matrix(CASES[name]["X"])) @ X


def test_r_model_matrix_is_ours_in_other_coordinates():
    for name in OTHER_COLUMNS:
        X = fit(name).design.X
        X_r = r_matrix(CASES[name]["X"])
        np.testing.assert_allclose(X_r @ r_coordinates(name), X, atol=1e-9)  # same column space


# ---- the references are what we think they are --------------------------------------------------


def test_reference_provenance():
    prov = REFERENCE["provenance"]
    assert prov["lmerTest"] == "3.1.3"
    assert prov["R"].startswith("R version 4.2.2")


@pytest.mark.parametrize("name", SAME_COLUMNS)
def test_column_order_matches_r(name):
    """formulaic orders (and drops) the columns exactly as R/lme4 do for these formulas."""
    m = fit(name)
    assert [r_column_name(c) for c in m.design.fixed_names] == CASES[name]["colnames_X"]


@pytest.mark.parametrize("name", list(CASES))
def test_term_labels_match_r(name):
    assert [r_label(t) for t in term_columns(fit(name).design)] == CASES[name]["term_labels"]


# ---- the matrices ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [1, 2, 3])
@pytest.mark.parametrize("name", SAME_COLUMNS)
def test_matrices_match_lmertest(name, kind):
    mine = term_contrasts(fit(name).design, kind)
    ref = reference(name, kind)
    if list(ref) == [""]:  # lmerTest's unnamed empty matrix: no column besides the intercept
        assert mine == {}
        return
    assert [r_label(t) for t in mine] == list(ref)
    for label, L in mine.items():
        expected = ref[r_label(label)]
        assert L.shape == expected.shape, label
        np.testing.assert_allclose(L, expected, rtol=0, atol=1e-8, err_msg=f"{name} type {kind} {label}")


@pytest.mark.parametrize("name", OTHER_COLUMNS)
def test_type3_other_coding_is_lmertest_in_new_coordinates(name):
    """Where formulaic's columns are not R's, type III is lmerTest's L times the map β_R = Bβ."""
    B = r_coordinates(name)
    B = np.round(B, 7 - int(np.ceil(np.log10(np.abs(B).max()))))  # zapsmall, as lmerTest maps it
    mine = contrasts_type3(fit(name).design)
    assert list(mine) == list(reference(name, 3))
    for label, L_r in reference(name, 3).items():
        np.testing.assert_allclose(mine[label], L_r @ B, rtol=0, atol=1e-8, err_msg=label)


@pytest.mark.parametrize("kind", [1, 2, 3])
@pytest.mark.parametrize("name", [n for n in CASES if n != "sim_intercept_only"])
def test_f_statistics_match_lmertest_contrasts(name, kind):
    """The invariant: on the same β and vcov, our L and lmerTest's give the same F and numerator df."""
    m = fit(name)
    beta = m.fixef.to_numpy()
    V = m.vcov.to_numpy()
    B = r_coordinates(name)
    beta_r, V_r = B @ beta, B @ V @ B.T
    mine = term_contrasts(m.design, kind)
    for label, L_r in reference(name, kind).items():
        L = mine[label.replace("^", " ** ")]
        if L_r.shape[0] == 0:
            assert L.shape[0] == 0
            continue
        F, q = f_statistic(L, beta, V)
        F_r, q_r = f_statistic(L_r, beta_r, V_r)
        assert q == q_r, label
        if (name, kind, label) in KNOWN_DIFFERENT_F:
            assert F != pytest.approx(F_r, rel=1e-3)
            continue
        assert F == pytest.approx(F_r, rel=1e-9), (name, kind, label)


def test_type2_of_a_margin_coded_differently_is_formulaic_marginal():
    """`0 + x + x:f3`: nothing contains x (R codes x:f3 by indicators for x), so x is tested marginally."""
    d = fit("sim_slopes_no_intercept").design
    assert d.fixed_names == ["x", "x:f3[T.b]", "x:f3[T.c]"]
    np.testing.assert_array_equal(contrasts_type2(d)["x"], [[1.0, 0.0, 0.0]])


@pytest.mark.parametrize("kind", [1, 2, 3])
@pytest.mark.parametrize("name", ["cake", "sim_threeway", "sim_sum_coded", "sim_missing_cell"])
def test_f_statistics_close_to_lmertest_table(name, kind):
    """Loosely (the two fits agree to optimiser tolerance): F of our L on our fit ≈ lmerTest's table."""
    m = fit(name)
    table = CASES[name]["types"][str(kind)]["table"]
    mine = term_contrasts(m.design, kind)
    for label, F_r in zip(table["rownames"], table["F"]):
        if F_r is None:
            continue
        F, _ = f_statistic(mine[label], m.fixef.to_numpy(), m.vcov.to_numpy())
        assert F == pytest.approx(F_r, rel=1e-4), (name, kind, label)


# ---- special cases -------------------------------------------------------------------------------


def test_term_columns():
    assert term_columns(fit("cake").design) == {"recipe": [1, 2], "temp": [3], "recipe:temp": [4, 5]}
    # x2 is collinear with the intercept and x: dropped, so it owns no column
    assert term_columns(fit("sim_collinear").design) == {"x": [1], "x2": [], "f2": [2]}
    assert term_columns(fit("sim_intercept_only").design) == {}
    assert term_columns(fit("sim_no_intercept").design) == {"f3": [0, 1, 2], "x": [3], "f3:x": [4, 5]}


def test_intercept_only_has_no_terms():
    d = fit("sim_intercept_only").design
    assert contrasts_type1(d) == contrasts_type2(d) == contrasts_type3(d) == {}


def test_dropped_term_has_empty_matrix():
    d = fit("sim_collinear").design
    for kind in (1, 2, 3):
        assert term_contrasts(d, kind)["x2"].shape == (0, 3)


def test_single_column_without_intercept():
    d = fit("sim_single_no_intercept").design
    for kind in (1, 2, 3):
        np.testing.assert_array_equal(term_contrasts(d, kind)["x"], [[1.0]])


def test_containment_follows_lmertest():
    # a numeric main effect is contained in its interaction with a factor; the factor is not
    assert containment(fit("sim_main_and_slope").design) == {"f3": [], "x": ["f3:x"], "f2": [], "f3:x": []}
    # f3:x is coded by indicators for f3, so only x counts as its variable: f3 is not contained in it
    assert containment(fit("sim_nested_slopes").design) == {"f3": [], "f3:x": []}
    assert containment(fit("sim_threeway").design)["f3"] == ["f3:f2"]
    assert containment(fit("sim_threeway").design)["x"] == ["f3:x", "f2:x", "f3:f2:x"]


def test_polynomial_term_is_numeric():
    d = fit("sleep_quadratic").design
    assert term_columns(d) == {"Days": [1], "I(Days ** 2)": [2]}
    assert containment(d) == {"Days": [], "I(Days ** 2)": []}


def test_doolittle_factorises():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(20, 5))
    x = A.T @ A
    L, U = doolittle(x)
    np.testing.assert_allclose(L @ U, x, atol=1e-5)  # entries below 1e-6 are zeroed, as in lmerTest
    assert np.allclose(np.diag(L), 1) and np.allclose(np.triu(L, 1), 0) and np.allclose(np.tril(U, -1), 0)


# ---- dispatch and errors -------------------------------------------------------------------------


@pytest.mark.parametrize(("alias", "kind"), [(1, 1), ("I", 1), ("1", 1), (2, 2), ("ii", 2), (3, 3), ("III", 3)])
def test_type_aliases(alias, kind):
    d = fit("sim_threeway").design
    expected = {1: contrasts_type1, 2: contrasts_type2, 3: contrasts_type3}[kind](d)
    got = term_contrasts(d, alias)
    assert list(got) == list(expected)
    for label in got:
        np.testing.assert_array_equal(got[label], expected[label])


@pytest.mark.parametrize("bad", [0, 4, "IV", "marginal", "yates", None, True, [3], 2.5])
def test_unknown_type_raises(bad):
    with pytest.raises(ModelSpecError, match="type="):
        term_contrasts(fit("cake").design, bad)


def test_design_without_formula_raises():
    design = types.SimpleNamespace(fixed_spec=None, X=np.ones((3, 1)), fixed_names=["x"])
    with pytest.raises(ModelSpecError, match="formula"):
        term_contrasts(design, 3)
