"""The matrix-free deviance (PCG + stochastic Lanczos log-determinant) against the exact one.

Tolerances: with unit-vector probes (``n_probes ≥ q_r``) the trace is exact, so value and gradient equal
:class:`~sparselmm.deviance.ProfiledDeviance`'s to the PCG tolerance (1e-10 relative residual) and the
Lanczos convergence, here 1e-9 relative. With random probes the deviance error must be within 4 of the
returned standard errors (``error_estimate``; the gradient's ``state.gradient_se``) — a 4σ bound that a
correct estimator misses with probability ~6e-5 — and the gradient must equal central differences of the
matrix-free value itself to 1e-6 relative (it is that value's derivative, not an independent estimate).
"""

import numpy as np
import pandas as pd
import pytest
from compare import load_case_data, load_cases

import sparselmm
from sparselmm.crossprod import cross_products
from sparselmm.design import build_design
from sparselmm.errors import ModelSpecError
from sparselmm.formula import parse_formula
from sparselmm.linalg.matrix_free import MatrixFreeDeviance

CASES = {c["id"]: c for c in load_cases()}


def crossed_data(seed=1, n=1_500, n_users=120, n_items=40, weights=False):
    """Users × items with lognormal (heavy-tailed) activity, every level present, and an item category."""
    rng = np.random.default_rng(seed)

    def codes(m, sigma):
        p = rng.lognormal(0.0, sigma, m)
        c = np.concatenate([np.arange(m), rng.choice(m, n - m, p=p / p.sum())])
        rng.shuffle(c)
        return c

    u, i = codes(n_users, 1.2), codes(n_items, 1.0)
    x = rng.normal(size=n)
    y = 1 + 0.5 * x + rng.normal(0, 0.8, n_users)[u] + rng.normal(0, 0.5, n_items)[i] + rng.normal(size=n)
    frame = pd.DataFrame({"y": y, "x": x, "user": u, "item": i, "cat": i % 6})
    if weights:
        frame["w"] = rng.uniform(0.5, 2.0, n)
    return frame


def models(formula, data, reml, weights=None, **kw):
    """The exact (dense-Schur) deviance function and a matrix-free one of the same design."""
    exact = sparselmm.deviance_function(formula, data, reml=reml, weights=weights, ordering="schur")
    return exact, MatrixFreeDeviance(exact.design, exact.cross, reml=reml, **kw)


THETA = np.array([0.8, 0.5])


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("formula", ["y ~ x + (1|user) + (1|item)", "y ~ 0 + (1|user) + (1|item)"])
def test_exact_trace_equals_profiled_deviance(formula, reml):
    exact, mf = models(formula, crossed_data(), reml, n_probes=64)  # q_r = 40 ≤ 64: unit-vector probes
    assert mf.exact_trace
    v, g = exact.value_and_gradient(THETA)
    s = exact.solve(THETA)
    v1, g1 = mf.value_and_gradient(THETA)
    assert mf.error_estimate == 0.0
    assert v1 == pytest.approx(v, rel=1e-9)
    np.testing.assert_allclose(g1, g, rtol=1e-7, atol=1e-7 * np.max(np.abs(g)))
    st = mf.state
    np.testing.assert_allclose(st.beta, s.beta, rtol=1e-9, atol=1e-12)
    assert st.pwrss == pytest.approx(s.pwrss, rel=1e-9)
    np.testing.assert_allclose(st.u, exact.spherical_modes(s), rtol=0, atol=1e-8)


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("formula", ["y ~ x + (1|user) + (1|item)", "y ~ 0 + (1|user) + (1|item)"])
def test_stochastic_estimate_within_its_error_estimate(formula, reml):
    exact, mf = models(formula, crossed_data(), reml, n_probes=16, seed=3)
    assert not mf.exact_trace
    for theta in (THETA, np.array([1.5, 0.3])):
        v, g = exact.value_and_gradient(theta)
        v1, g1 = mf.value_and_gradient(theta)
        se, gse = mf.error_estimate, mf.state.gradient_se
        assert 0 < se < 1.0 and np.all(gse > 0)
        assert abs(v1 - v) <= 4 * se
        assert np.all(np.abs(g1 - g) <= 4 * gse)
        assert mf.state.lanczos_change < 1e-6 * se  # 20 Lanczos steps converged


def test_validation_case_within_error_estimate():
    case = CASES["crossed_small_reml"]  # 6,000 rows, 300 users × 120 items, lme4's own deviances
    exact, mf = models(case["formula"], load_case_data(case), True, n_probes=16)
    for theta in case["theta_fixed"]:  # one has θ_user = 0, where A = I and the estimate is exact (SE 0)
        v1 = mf(theta)
        assert abs(v1 - exact(theta)) <= 4 * mf.error_estimate + 1e-10 * abs(v1)


@pytest.mark.parametrize("theta", [[0.8, 0.0], [0.0, 0.5]])
def test_gradient_on_the_boundary(theta):
    exact, mf = models("y ~ x + (1|user) + (1|item)", crossed_data(), True, n_probes=64)
    v, g = exact.value_and_gradient(np.array(theta))
    v1, g1 = mf.value_and_gradient(np.array(theta))
    assert v1 == pytest.approx(v, rel=1e-9)
    np.testing.assert_allclose(g1, g, rtol=1e-7, atol=1e-7 * np.max(np.abs(g)))


@pytest.mark.parametrize(
    "formula, reml, weights, theta",
    [
        ("y ~ x + (1|user) + (1|item)", True, None, [0.8, 0.5]),
        ("y ~ x + (1|user) + (1|item) + (1|cat)", False, "w", [0.8, 0.5, 0.3]),  # two deflated directions
    ],
)
def test_gradient_is_the_derivative_of_the_value(formula, reml, weights, theta):
    _, mf = models(formula, crossed_data(seed=2, weights=True), reml, weights=weights, n_probes=8)
    assert not mf.exact_trace
    theta = np.array(theta)
    _, g = mf.value_and_gradient(theta)
    h = 1e-5
    fd = [(mf(theta + h * e) - mf(theta - h * e)) / (2 * h) for e in np.eye(theta.size)]
    np.testing.assert_allclose(g, fd, rtol=1e-6)


def test_pcg_solves_equal_dense_solves():
    exact, mf = models("y ~ x + (1|user) + (1|item)", crossed_data(), True, rtol=1e-12)
    Lt = exact.design.Lambdat(THETA).toarray()
    C = Lt @ exact.cross.ZtWZ.toarray() @ Lt.T + np.eye(Lt.shape[0])
    b = np.random.default_rng(0).normal(size=(C.shape[0], 3))
    V, its = mf.solve_C(THETA, b, return_iterations=True)
    np.testing.assert_allclose(V, np.linalg.solve(C, b), rtol=0, atol=1e-10 * np.max(np.abs(V)))
    assert np.all(its > 0) and np.all(its < 40)
    mf.solve(THETA)
    assert mf.iterations.shape == (3,)  # p + 1 = 3 right-hand sides


def test_vcov_beta_equals_exact():
    exact, mf = models("y ~ x + (1|user) + (1|item)", crossed_data(), True, n_probes=4)
    s = exact.solve(THETA)
    Rinv = np.linalg.inv(s.R_X)
    expected = s.pwrss / (exact.design.n - 2) * Rinv @ Rinv.T
    np.testing.assert_allclose(mf.vcov_beta(mf.solve(THETA)), expected, rtol=1e-8)


def test_deterministic_in_theta():
    data = crossed_data()
    _, mf = models("y ~ x + (1|user) + (1|item)", data, True, n_probes=8, seed=5)
    a = mf(THETA)
    mf(np.array([1.2, 0.9]))
    assert mf(THETA) == a
    assert mf.value_and_gradient(THETA)[0] == a  # the gradient's evaluation gives the same value
    _, again = models("y ~ x + (1|user) + (1|item)", data, True, n_probes=8, seed=5)
    assert again(THETA) == a
    _, other = models("y ~ x + (1|user) + (1|item)", data, True, n_probes=8, seed=6)
    assert other(THETA) != a  # the probes, not the θ, decide the error


def test_three_terms_and_weights_exact_trace():
    # G_rr is then not diagonal (items and their categories share rows): the sparse-product path
    exact, mf = models(
        "y ~ x + (1|user) + (1|item) + (1|cat)", crossed_data(weights=True), False, weights="w", n_probes=64
    )
    assert mf.exact_trace and mf._Grr is not None
    theta = np.array([0.8, 0.5, 0.3])
    v, g = exact.value_and_gradient(theta)
    v1, g1 = mf.value_and_gradient(theta)
    assert v1 == pytest.approx(v, rel=1e-9)
    np.testing.assert_allclose(g1, g, rtol=1e-7, atol=1e-7 * np.max(np.abs(g)))


def test_one_term_is_exact():
    data = crossed_data()
    design = build_design(parse_formula("y ~ x + (1|user)"), data)
    cross = cross_products(design)
    exact = sparselmm.deviance_function("y ~ x + (1|user)", data, ordering="default")
    mf = MatrixFreeDeviance(design, cross)
    assert mf(np.array([0.7])) == pytest.approx(exact(np.array([0.7])), rel=1e-12)
    assert mf.error_estimate == 0.0


def test_inf_where_it_fails():
    _, mf = models("y ~ x + (1|user) + (1|item)", crossed_data(), True, n_probes=4)
    assert mf(np.array([np.inf, 0.5])) == float("inf")
    assert mf.has_gradient


def test_vector_term_is_refused_by_name():
    data = crossed_data()
    design = build_design(parse_formula("y ~ x + (1 + x|user) + (1|item)"), data)
    with pytest.raises(ModelSpecError, match=r"\(1 \+ x ?\| ?user\)"):
        MatrixFreeDeviance(design, cross_products(design))
