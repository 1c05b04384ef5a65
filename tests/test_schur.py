"""The dense-Schur factor gives exactly what the CHOLMOD factor gives (it is the same algebra)."""

import json

import numpy as np
import pytest
from compare import REFERENCE_DIR, load_case_data, load_cases

import sparselmm
from sparselmm.linalg.schur import NotDiagonalError, SchurCholesky

CASES = {c["id"]: c for c in load_cases()}
CROSSED = ["crossed_small_reml", "crossed_large_ml", "penicillin_reml", "pastes_nested_reml", "nested_slash_reml"]


@pytest.mark.parametrize("case_id", CROSSED)
def test_deviance_equals_cholmod_and_lme4(case_id):
    case = CASES[case_id]
    data = load_case_data(case)
    kw = dict(reml=case["reml"], weights=case["weights"], offset=case["offset"])
    ref = json.loads((REFERENCE_DIR / f"{case_id}.json").read_text())
    schur = sparselmm.deviance_function(case["formula"], data, ordering="schur", **kw)
    chol = sparselmm.deviance_function(case["formula"], data, ordering="default", **kw)
    assert schur.ordering == "schur"
    for point in ref["devfun"]:
        assert schur(point["theta"]) == pytest.approx(point["value"], rel=1e-10)
        assert schur(point["theta"]) == pytest.approx(chol(point["theta"]), rel=1e-12)


def test_fit_results_equal_cholmod():
    case = CASES["crossed_small_slopes_reml"]  # a term with a slope: the block-Schur factor
    assert sparselmm.deviance_function(case["formula"], load_case_data(case), ordering="schur").block_schur
    case = CASES["crossed_small_ml"]
    data = load_case_data(case)
    a = sparselmm.lmer(case["formula"], data, reml=False, ordering="schur", optimizer="bobyqa")
    b = sparselmm.lmer(case["formula"], data, reml=False, ordering="default")
    assert b.optinfo.optimizer == "bobyqa"  # no analytic gradient on the CHOLMOD factor
    assert a.objective == pytest.approx(b.objective, rel=1e-12)
    np.testing.assert_allclose(a.theta, b.theta, rtol=1e-7)
    # with the analytic gradient (L-BFGS-B): the same optimum, a deviance no higher
    g = sparselmm.lmer(case["formula"], data, reml=False, ordering="schur")
    assert g.optinfo.optimizer == "lbfgsb"
    assert g.objective <= b.objective + 1e-9 * abs(b.objective)
    np.testing.assert_allclose(g.theta, b.theta, rtol=1e-5)
    for g in ("user", "item"):
        ra, rb = a.ranef(cond_var=True)[g], b.ranef(cond_var=True)[g]
        np.testing.assert_allclose(ra.to_numpy(), rb.to_numpy(), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(ra.attrs["cond_sd"].to_numpy(), rb.attrs["cond_sd"].to_numpy(), rtol=1e-6)


def test_auto_uses_schur_on_large_crossed_designs():
    formula = "y ~ 1 + service + (1|s) + (1|d) + (1|dept:service)"
    data = sparselmm.datasets.load("InstEval")
    f = sparselmm.deviance_function(formula, data, reml=False)
    assert f.ordering == "schur" and f.has_gradient
    metis = sparselmm.deviance_function(formula, data, reml=False, ordering="metis")
    assert not metis.has_gradient
    assert f([0.3, 0.5, 0.2]) == pytest.approx(metis([0.3, 0.5, 0.2]), rel=1e-12)


def _small_G():
    """ZᵀZ of 7 rows crossing a 4-level factor (first term) with a 2-level one and a 2-level one."""
    import scipy.sparse as sp

    f1 = np.array([0, 0, 1, 2, 2, 3, 3])
    f2 = np.array([0, 1, 1, 0, 1, 0, 0])
    f3 = np.array([1, 0, 1, 1, 0, 0, 1])
    rows = np.arange(7)
    Zt = sp.vstack([sp.csr_matrix((np.ones(7), (f, rows))) for f in (f1, f2, f3)]).tocsc()
    return (Zt @ Zt.T).tocsc()


def test_factor_logdet_solves_and_inverse_traces_match_dense_algebra():
    G = _small_G()
    lam = np.array([0.7] * 4 + [1.3, 1.3, 0.4, 0.4])
    M = np.diag(lam) @ G.toarray() @ np.diag(lam) + np.eye(8)
    fac = SchurCholesky(G, 4)
    fac.factorize(lam)
    assert fac.logdet() == pytest.approx(np.linalg.slogdet(M)[1], rel=1e-13)
    b = np.arange(8.0) - 3
    L = np.linalg.cholesky(M)
    np.testing.assert_allclose(fac.solve_L(b), np.linalg.solve(L, b), rtol=1e-12)
    np.testing.assert_allclose(fac.solve_Lt(b), np.linalg.solve(L.T, b), rtol=1e-12)
    trace_first, diag_rest = fac.inverse_traces()
    Minv = np.linalg.inv(M)
    assert trace_first == pytest.approx(np.trace(Minv[:4, :4]), rel=1e-13)
    np.testing.assert_allclose(diag_rest, np.diagonal(Minv)[4:], rtol=1e-13)


def test_not_diagonal_first_block_is_refused():
    G = _small_G()
    with pytest.raises(NotDiagonalError):
        SchurCholesky(G, 6)  # the first 6 columns mix two factors


def test_a_solve_after_inverse_traces_asks_for_a_new_factorisation():
    fac = SchurCholesky(_small_G(), 4)
    with pytest.raises(sparselmm.NumericalError, match="call factorize"):
        fac.solve_L(np.ones(8))  # nothing factored yet
    fac.factorize(np.ones(8))
    fac.inverse_traces()
    with pytest.raises(sparselmm.NumericalError, match="call factorize"):
        fac.logdet()
    fac.factorize(np.ones(8))
    assert np.isfinite(fac.logdet())


def test_overflow_is_a_numerical_error():
    fac = SchurCholesky(_small_G(), 4)
    with pytest.raises(sparselmm.NumericalError):
        fac.factorize(np.full(8, 1e200))
    fac.factorize(np.ones(8))
    assert np.isfinite(fac.logdet())


def test_a_level_meeting_no_other_effect():
    """A first-term level whose rows carry no other random effect: an empty column of G₂₁."""
    import scipy.sparse as sp

    G = _small_G().toarray()
    G = np.pad(G, ((0, 1), (0, 1)))
    G = G[np.r_[0:4, 8, 4:8]][:, np.r_[0:4, 8, 4:8]]  # a fifth first-term level, alone
    G[4, 4] = 3.0
    lam = np.array([0.7] * 5 + [1.3, 1.3, 0.4, 0.4])
    fac = SchurCholesky(sp.csc_matrix(G), 5)
    fac.factorize(lam)
    M = np.diag(lam) @ G @ np.diag(lam) + np.eye(9)
    assert fac.logdet() == pytest.approx(np.linalg.slogdet(M)[1], rel=1e-13)
    trace_first, diag_rest = fac.inverse_traces()
    assert trace_first == pytest.approx(np.trace(np.linalg.inv(M)[:5, :5]), rel=1e-13)


def test_auto_declines_schur_when_the_product_is_too_large_or_sparse():
    from sparselmm.linalg.schur import SchurNotWorthwhileError

    G = _small_G()
    with pytest.raises(SchurNotWorthwhileError, match="pairs"):
        SchurCholesky(G, 4, max_pairs=3)
    with pytest.raises(SchurNotWorthwhileError, match="full"):
        SchurCholesky(G, 4, min_density=1.01)  # this small complement is 100 % full


def test_auto_keeps_cholmod_for_a_nested_design():
    """(1 | school/class) with 300 schools: their Schur complement is diagonal (0.7 % full), CHOLMOD wins."""
    import pandas as pd

    rng = np.random.default_rng(3)
    school = np.repeat(np.arange(300), 10)
    data = pd.DataFrame({"school": school, "class": rng.integers(0, 5, school.size), "y": rng.normal(size=school.size)})
    data["y"] += rng.normal(size=300)[school]
    f = sparselmm.deviance_function("y ~ 1 + (1 | school/class)", data)
    assert f.ordering != "schur" and not f.has_gradient
    forced = sparselmm.deviance_function("y ~ 1 + (1 | school/class)", data, ordering="schur")
    assert forced.ordering == "schur"
    assert f([0.5, 0.7]) == pytest.approx(forced([0.5, 0.7]), rel=1e-12)


def test_q_built_in_many_chunks_equals_one_chunk(monkeypatch):
    import sparselmm.linalg.schur as schur

    case = CASES["crossed_large_ml"]
    data = load_case_data(case)
    whole = sparselmm.deviance_function(case["formula"], data, reml=False, ordering="schur")
    monkeypatch.setattr(schur, "TRIPLES_PER_CHUNK", 50)
    chunked = sparselmm.deviance_function(case["formula"], data, reml=False, ordering="schur")
    assert (chunked.chol._Q != whole.chol._Q).nnz == 0
    assert chunked([0.7, 0.4]) == whole([0.7, 0.4])


def test_dense_levels_give_the_same_factor_and_gradient():
    """Levels held dense (``dense_from``: their part of K by syrk, their trace term by trsm) give the factor,
    solves and log-determinant gradient that Q gives, on a design with heavy-tailed first-term levels."""
    import pandas as pd
    import scipy.sparse as sp

    import sparselmm

    rng = np.random.default_rng(0)
    n_u, n_i, n = 300, 80, 6000
    act = rng.lognormal(0, 1.5, n_u)
    u, i = rng.choice(n_u, n, p=act / act.sum()), rng.integers(0, n_i, n)
    df = pd.DataFrame({"y": rng.normal(size=n), "u": u.astype(str), "i": i.astype(str)})
    dev = sparselmm.deviance_function("y ~ 1 + (1|u) + (1|i)", df)
    G, q1 = dev.cross.ZtWZ, dev.terms[0].q
    k = np.diff(sp.csc_matrix(G[q1:, :q1]).indptr)
    every = SchurCholesky(G, q1, terms=dev.terms)
    split = SchurCholesky(G, q1, terms=dev.terms, dense_from=int(np.quantile(k, 0.8)))
    assert 30 < split._heavy.size < 100 and split._Q.nnz < every._Q.nnz
    rhs = rng.normal(size=(G.shape[0], 3))
    for theta in (np.array([0.7, 1.3]), np.array([2.0, 0.1])):
        f = dev.factors(theta)
        every.refactor(theta, f)
        split.refactor(theta, f)
        assert split.logdet() == pytest.approx(every.logdet(), rel=1e-13)
        np.testing.assert_allclose(split.solve_L(rhs), every.solve_L(rhs), rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(
            split.logdet_gradient(theta, dev.terms), every.logdet_gradient(theta, dev.terms), rtol=1e-11
        )


def test_conditional_variances_from_the_schur_inverse_diagonal():
    """ranef(cond_var=True) on the scalar Schur factor comes from the complement's inverse (with levels held
    dense too) and equals the generic route of one triangular solve per column of Λᵀ."""
    import pandas as pd
    import scipy.sparse as sp

    import sparselmm
    from sparselmm.linalg.factor import conditional_variance_blocks

    rng = np.random.default_rng(4)
    n_u, n_i, n = 300, 80, 6000
    act = rng.lognormal(0, 1.5, n_u)
    u, i = rng.choice(n_u, n, p=act / act.sum()), rng.integers(0, n_i, n)
    y = rng.normal(0, 0.7, n_u)[u] + rng.normal(0, 0.5, n_i)[i] + rng.normal(size=n)
    m = sparselmm.lmer("y ~ 1 + (1|u) + (1|i)", pd.DataFrame({"y": y, "u": u.astype(str), "i": i.astype(str)}))
    assert m._devfun.schur and np.all(m.theta > 0.1)

    class Generic:  # only solve_L: the route every factor has
        def __init__(self, f):
            self.solve_L = f.solve_L

    slow = conditional_variance_blocks(Generic(m._factor_at_fit()), m.Lambdat, m._design.terms, m.sigma)
    G, q1 = m._devfun.cross.ZtWZ, m._design.terms[0].q
    k = np.diff(sp.csc_matrix(G[q1:, :q1]).indptr)
    for dense_from in (None, int(np.quantile(k, 0.8))):
        f = SchurCholesky(G, q1, terms=m._design.terms, dense_from=dense_from)
        f.refactor(m.theta, m._devfun.factors(m.theta))
        fast = conditional_variance_blocks(f, m.Lambdat, m._design.terms, m.sigma)
        for a, b in zip(fast, slow):
            np.testing.assert_allclose(a, b, rtol=1e-11)
        assert f.holds_factor  # computed again after potri
    # and through the result's own accessor
    cv = m.ranef(cond_var=True)
    assert cv is not None
