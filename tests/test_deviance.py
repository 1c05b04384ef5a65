"""The PLS deviance engine: in-place block updates equal the sparse products they replace, and the
deviance equals lme4's devFunOnly values (R 4.2.2, lme4 1.1-31; validation/reference/*.json)."""

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from compare import REFERENCE_DIR, load_case_data, load_cases

import sparselmm

CASES = {c["id"]: c for c in load_cases()}


@pytest.mark.parametrize(
    "case_id",
    ["sleepstudy_slopes_reml", "crossed_small_slopes_ml", "nested_slope_reml", "twoterms_crossed_ml", "catslope_reml"],
)
def test_block_update_equals_sparse_product(case_id):
    case = CASES[case_id]
    # the CHOLMOD path's block updater (ordering="default"; "auto" may choose a dense-Schur factor)
    f = sparselmm.deviance_function(case["formula"], load_case_data(case), reml=case["reml"], ordering="default")
    rng = np.random.default_rng(0)
    theta = np.where(f.design.lower == 0, rng.uniform(0.1, 2, f.design.n_theta), rng.normal(size=f.design.n_theta))
    A = f.updater.update(f.factors(theta)).toarray()
    Lt = f.design.Lambdat(theta)
    expected = np.tril((Lt @ f.cross.ZtWZ @ Lt.T).toarray())
    np.testing.assert_allclose(A, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "case_id", ["sleepstudy_slopes_reml", "crossed_small_ml", "pastes_nested_ml", "weighted_offset_reml"]
)
def test_deviance_at_fixed_theta_matches_lme4(case_id):
    case = CASES[case_id]
    ref = json.loads((REFERENCE_DIR / f"{case_id}.json").read_text())
    f = sparselmm.deviance_function(
        case["formula"], load_case_data(case), reml=case["reml"], weights=case["weights"], offset=case["offset"]
    )
    for point in ref["devfun"]:
        assert f(point["theta"]) == pytest.approx(point["value"], rel=1e-10)


def test_orderings_give_the_same_deviance():
    case = CASES["crossed_small_ml"]
    data = load_case_data(case)
    values = [
        sparselmm.deviance_function(case["formula"], data, reml=False, ordering=o)([0.7, 0.4])
        for o in ("default", "amd", "metis", "natural", "auto")
    ]
    np.testing.assert_allclose(values, values[0], rtol=1e-12)


@pytest.mark.parametrize("ordering", ["auto", "default"])  # block-Schur factor and CHOLMOD
def test_modes_and_conditional_variances_against_dense_algebra(sleepstudy, ordering):
    f = sparselmm.deviance_function("Reaction ~ Days + (Days | Subject)", sleepstudy, ordering=ordering)
    theta = np.array([0.9, 0.05, 0.2])
    state = f.solve(theta)
    Lt = f.design.Lambdat(theta).toarray()
    Z, X, y = f.design.Zt.T.toarray(), f.design.X, f.design.y
    A = Lt @ Z.T @ Z @ Lt.T + np.eye(Lt.shape[0])
    u = np.linalg.solve(A, Lt @ Z.T @ (y - X @ state.beta))
    np.testing.assert_allclose(f.spherical_modes(state), u, rtol=1e-9, atol=1e-9)
    from sparselmm.linalg.factor import conditional_variance_blocks

    cv = conditional_variance_blocks(f.chol, f.design.Lambdat(theta), f.terms, sigma=2.0)[0]
    dense = 4.0 * Lt.T @ np.linalg.inv(A) @ Lt
    np.testing.assert_allclose(cv[3], dense[6:8, 6:8], rtol=1e-9, atol=1e-12)
    if ordering == "default":
        assert sp.issparse(f.updater.A)


def test_cholmod_analysis_failure_is_a_sparselmm_error():
    from sparselmm.linalg.cholmod import SparseCholesky

    with pytest.raises(sparselmm.NumericalError, match="symbolic analysis"):
        SparseCholesky(sp.csc_matrix((3, 4)))


def _central_gradient(f, theta, h=1e-6):
    theta = np.asarray(theta, float)
    return np.array([(f(theta + h * e) - f(theta - h * e)) / (2 * h) for e in np.eye(theta.size)])


@pytest.mark.parametrize(
    "case_id",
    [
        "penicillin_reml",
        "penicillin_ml",
        "crossed_small_reml",
        "crossed_small_ml",
        "pastes_interaction_reml",
        "nested_slash_ml",
    ],
)
def test_analytic_gradient_matches_finite_differences(case_id):
    case = CASES[case_id]
    f = sparselmm.deviance_function(case["formula"], load_case_data(case), reml=case["reml"], ordering="schur")
    assert f.has_gradient
    for theta in ([0.8, 1.7], [0.3, 0.05], [2.5, 0.9]):
        value, grad = f.value_and_gradient(theta)  # small q: the dense evaluator (criterion.DenseCriterion)
        assert value == pytest.approx(f(theta), rel=1e-13)
        np.testing.assert_allclose(f.gradient(), grad, rtol=1e-10)  # the Schur factor's own gradient
        np.testing.assert_allclose(grad, _central_gradient(f, theta), rtol=2e-6, atol=1e-5)


def test_analytic_gradient_with_weights_offset_and_a_zero_theta():
    rng = np.random.default_rng(7)
    n = 400
    data = pd.DataFrame({"u": rng.integers(0, 40, n), "i": rng.integers(0, 12, n), "x": rng.normal(size=n)})
    data["y"] = 1 + data.x + rng.normal(size=40)[data.u] + 0.5 * rng.normal(size=12)[data.i] + rng.normal(size=n)
    data["w"] = rng.uniform(0.5, 2.0, n)
    data["off"] = rng.normal(size=n)
    for reml in (True, False):
        f = sparselmm.deviance_function(
            "y ~ x + (1|u) + (1|i)", data, reml=reml, weights="w", offset="off", ordering="schur"
        )
        np.testing.assert_allclose(
            f.value_and_gradient([0.9, 0.4])[1], _central_gradient(f, [0.9, 0.4]), rtol=2e-6, atol=1e-6
        )
        # the deviance is even in a scalar θ: zero slope on the boundary
        grad = f.value_and_gradient([0.0, 0.4])[1]
        assert grad[0] == 0.0
        assert grad[1] == pytest.approx(_central_gradient(f, [0.0, 0.4])[1], rel=2e-6)


def test_gradient_needs_the_schur_factor(sleepstudy):
    f = sparselmm.deviance_function("Reaction ~ Days + (Days | Subject)", sleepstudy, ordering="default")
    assert not f.has_gradient
    with pytest.raises(sparselmm.ModelSpecError, match="no analytic gradient.*optimizer='bobyqa'"):
        f.gradient()


def test_gradient_consumes_the_factor_and_says_so():
    case = CASES["penicillin_ml"]
    f = sparselmm.deviance_function(case["formula"], load_case_data(case), reml=False, ordering="schur")
    with pytest.raises(sparselmm.ModelSpecError, match="value_and_gradient"):
        f.gradient()
    f([0.8, 1.7])
    first = f.gradient()
    with pytest.raises(sparselmm.ModelSpecError, match="consumed"):
        f.gradient()
    np.testing.assert_allclose(f.value_and_gradient([0.8, 1.7])[1], first, rtol=1e-12)


BLOCK_CASES = [
    "sleepstudy_slopes_reml",  # one 2 × 2 term, nothing left to the complement
    "crossed_small_slopes_ml",  # (1 + x|user) + (1|item)
    "crossed_small_slopes_reml",
    "partial_crossed_reml",  # (1 + x|subj) + (1|stim)
    "slopes_many_ml",  # one 3 × 3 term
    "twoterms_crossed_reml",  # (1|g) + (0 + x|g) + (1|h)
    "catslope_reml",
]


@pytest.mark.parametrize("case_id", BLOCK_CASES)
def test_block_schur_factor_equals_cholmod_and_its_gradient_finite_differences(case_id):
    """The block-Schur factor (vector-valued terms): same deviance as CHOLMOD, and an exact gradient for
    k = 1, 2, 3 blocks, at θ with zero and negative entries too."""
    case = CASES[case_id]
    data = load_case_data(case)
    f = sparselmm.deviance_function(case["formula"], data, reml=case["reml"], ordering="schur")
    ref = sparselmm.deviance_function(case["formula"], data, reml=case["reml"], ordering="default")
    assert f.block_schur or f.schur
    rng = np.random.default_rng(3)
    lower = f.design.lower
    for trial in range(3):
        theta = np.where(lower == 0, rng.uniform(0.2, 1.5, lower.size), rng.normal(scale=0.4, size=lower.size))
        if trial == 2:
            theta[0] = 0.0  # a zero diagonal element: Λ singular
        assert f(theta) == pytest.approx(ref(theta), rel=1e-11)
        value, grad = f.value_and_gradient(theta)
        assert value == pytest.approx(ref(theta), rel=1e-11)
        fd = _central_gradient(ref, theta, h=1e-6)
        np.testing.assert_allclose(grad, fd, rtol=2e-5, atol=2e-5 * max(1.0, np.abs(fd).max()))


def test_block_schur_gradient_equals_dense_derivatives():
    from sparselmm.derivatives import DevianceDerivatives

    case = CASES["crossed_small_slopes_reml"]
    f = sparselmm.deviance_function(case["formula"], load_case_data(case), reml=True)
    assert f.block_schur
    theta = np.array([0.7, -0.2, 0.4, 0.9])
    _, grad = f.value_and_gradient(theta)
    dense = DevianceDerivatives(f, theta).profiled_gradient()
    np.testing.assert_allclose(grad, dense, rtol=1e-8, atol=1e-8 * np.abs(dense).max())


def test_block_schur_is_declined_for_sparse_complements():
    """Nested designs with many groups keep CHOLMOD: the complement (schools) is block diagonal, < 1 % full."""
    rng = np.random.default_rng(5)
    school = np.repeat(np.arange(400), 12)
    cls = school * 4 + rng.integers(0, 4, school.size)
    data = pd.DataFrame({"school": school, "cls": cls, "x": rng.normal(size=school.size)})
    data["y"] = data.x + rng.normal(size=400)[school] + rng.normal(size=1600)[cls] + rng.normal(size=school.size)
    data[["school", "cls"]] = data[["school", "cls"]].astype(str)
    f = sparselmm.deviance_function("y ~ x + (1 + x|school) + (1|cls)", data)
    assert not f.block_schur and f.updater is not None
    small = CASES["nested_slope_reml"]  # 20 schools: a dense complement is cheap and gives the gradient
    assert sparselmm.deviance_function(small["formula"], load_case_data(small)).block_schur


@pytest.mark.parametrize(
    ("case_id", "ordering", "kind"),
    [
        ("crossed_small_ml", "auto", "dense Schur"),
        ("crossed_small_slopes_ml", "auto", "block Schur"),
        ("crossed_small_slopes_ml", "default", "CHOLMOD"),
        ("slopes_many_uncorr_reml", "auto", "CHOLMOD"),  # its complement is too sparse for a dense factor
    ],
)
def test_every_factor_behind_one_interface(case_id, ordering, kind):
    """The deviance reaches its factor only through sparselmm.linalg.factor.Factor; a workspace copy evaluates on
    its own numeric factor without disturbing the original's."""
    from sparselmm.linalg.factor import Factor

    case = CASES[case_id]
    f = sparselmm.deviance_function(case["formula"], load_case_data(case), reml=case["reml"], ordering=ordering)
    assert isinstance(f.chol, Factor) and f.chol.describe().startswith(kind)
    assert f.has_gradient == f.chol.has_logdet_gradient and f.ordering == f.chol.ordering
    assert (f.updater is not None) == kind.startswith("CHOLMOD")
    rng = np.random.default_rng(7)
    lower = f.design.lower
    theta = np.where(lower == 0, rng.uniform(0.3, 1.2, lower.size), rng.normal(scale=0.3, size=lower.size))
    value = f(theta)
    assert f.chol.holds_factor and f.chol.dense_flops() > 0
    sibling = f.with_response(f.design.y)
    assert sibling.chol is not f.chol and not sibling.chol.holds_factor
    assert sibling(1.3 * theta) != value
    assert f.chol.logdet() == f.state.ldL2  # the original still holds its θ
    assert sibling(theta) == value


def test_auto_cholmod_records_its_measured_choice():
    """ordering='auto' on the CHOLMOD path: the ordering with fewer flops in L, simplicial for a sparse L."""
    case = CASES["slopes_many_uncorr_reml"]
    f = sparselmm.deviance_function(case["formula"], load_case_data(case))
    fill = {r.ordering: r.flops for r in f.chol.fill}
    assert set(fill) == {"amd", "metis"}
    assert f.ordering == min(fill, key=fill.get)
    assert f.chol.mode == "simplicial"
    assert f.chol.dense_flops() == fill[f.ordering]


def test_block_schur_gradient_with_4x4_blocks():
    """kb07's shape, small: 4 × 4 blocks on both crossed terms (20 θ); the block-Schur deviance equals
    CHOLMOD's and its exact gradient equals central differences, with a zero diagonal element too."""
    rng = np.random.default_rng(7)
    subj, item = np.meshgrid(np.arange(16), np.arange(10), indexing="ij")
    d = pd.DataFrame({"subj": subj.ravel().astype(str), "item": item.ravel().astype(str)})
    for name in "abc":
        d[name] = rng.choice([-0.5, 0.5], len(d))
    d["y"] = d.a - 0.5 * d.b + rng.normal(size=16)[subj.ravel()] + rng.normal(size=len(d))
    formula = "y ~ a + b + c + (1 + a + b + c | subj) + (1 + a + b + c | item)"
    f = sparselmm.deviance_function(formula, d, ordering="schur")
    ref = sparselmm.deviance_function(formula, d, ordering="default")
    assert f.block_schur and f.design.terms[0].k == 4
    lower = f.design.lower
    for trial in range(2):
        theta = np.where(lower == 0, rng.uniform(0.2, 1.2, lower.size), rng.normal(scale=0.3, size=lower.size))
        if trial:
            theta[0] = 0.0
        value, grad = f.value_and_gradient(theta)
        assert value == pytest.approx(ref(theta), rel=1e-10)
        fd = _central_gradient(ref, theta, h=1e-6)
        np.testing.assert_allclose(grad, fd, rtol=2e-5, atol=2e-5 * max(1.0, np.abs(fd).max()))


def test_dense_factor_gives_the_block_schur_factors_value_and_gradient(sleepstudy):
    """linalg/dense.py's DenseFactor behind the Factor protocol: the same deviance and exact gradient."""
    from sparselmm.linalg.dense import DenseFactor

    f = sparselmm.deviance_function("Reaction ~ Days + (Days | Subject)", sleepstudy)
    theta = np.array([0.9, 0.05, 0.2])
    value, grad = f.value_and_gradient(theta)
    f.chol = DenseFactor(f.terms, f.cross.ZtWZ)
    value_dense, grad_dense = f.value_and_gradient(theta)
    assert value_dense == pytest.approx(value, rel=1e-12)
    np.testing.assert_allclose(grad_dense, grad, rtol=1e-7, atol=1e-9)
