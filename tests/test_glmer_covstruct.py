"""glmer with covariance-structure terms (``us``, ``diag``, ``cs``, ``ar1``, ``toep``; :mod:`sparselmm.covstruct`).

The references are glmmTMB 1.1.5's (R 4.2.2, TMB 1.9.2) Laplace fits of the GLMM cases of
``validation/covstruct_cases.json``, written by ``validation/run_glmmtmb_covstruct.R`` to
``validation/reference_covstruct/<id>.json`` (``glmmTMB(formula, data, family, control =
glmmTMBControl(optCtrl = list(rel.tol = 1e-10, eval.max = 1e4, iter.max = 1e4)))``; the data are
``validation/simulate_covstruct.py``'s). glmmTMB's ``-2 * logLik(m)`` has the family's normalising constant,
as glmer's criterion: for ``count ~ x + (1 | subj)`` on the ar1 data glmmTMB gives 2456.3327067836 and glmer
2456.3327067698.
"""

from __future__ import annotations

import importlib.util
import json
import pickle
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sparselmm
from sparselmm.errors import ModelSpecError, SingularFitWarning
from sparselmm.glmm.fit import _deriv12_box
from sparselmm.glmm.gradient import gradient_supported
from sparselmm.glmm.objective import GlmmObjective
from sparselmm.glmm.pirls import PirlsModel
from sparselmm.parameters import estimates

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "validation" / "reference_covstruct"
CASES = {c["id"]: c for c in json.loads((ROOT / "validation" / "covstruct_cases.json").read_text())}
GLMM_CASES = sorted(cid for cid, c in CASES.items() if c.get("family"))


def _compare_module():
    """validation/compare_covstruct.py (glmmTMB's estimates as θ), loaded from its path."""
    spec = importlib.util.spec_from_file_location("compare_covstruct", ROOT / "validation" / "compare_covstruct.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _data(name: str) -> pd.DataFrame:
    return pd.read_csv(ROOT / "validation" / "data" / name)


@pytest.fixture(scope="module")
def ar1data():
    return _data("covstruct_ar1.csv")


@pytest.fixture(scope="module")
def glmmdata():
    return _data("covstruct_glmm.csv")


@pytest.fixture(scope="module")
def fits():
    """The GLMM cases' fits, once per module."""
    out = {}
    for cid in GLMM_CASES:
        case = CASES[cid]
        data = _data(case["data"].removeprefix("csv:validation/data/"))
        out[cid] = sparselmm.glmer(case["formula"], data, family=case["family"])
    return out


@pytest.fixture(scope="module")
def ar1_poisson(fits):
    return fits["ar1_poisson"]


def _correlations(vc: pd.DataFrame, group: str) -> np.ndarray:
    return vc[(vc["group"] == group) & vc["var2"].notna()]["sdcor"].to_numpy()


# ---- against glmmTMB ---------------------------------------------------------------------------------
def test_glmm_cases_are_compared():
    # ar1_poisson was pending while glmer refused structures; at least one case per structure now
    assert not any(CASES[cid].get("pending") for cid in GLMM_CASES)
    structures = {json.loads((REFERENCE / f"{cid}.json").read_text())["terms"][0]["structure"] for cid in GLMM_CASES}
    assert structures == {"us", "cs", "diag", "ar1", "toep"}


@pytest.mark.parametrize("cid", GLMM_CASES)
def test_matches_glmmtmb(fits, cid):
    ref = json.loads((REFERENCE / f"{cid}.json").read_text())
    m = fits[cid]
    crit = ref["criterion"]
    # no higher than glmmTMB's optimum, and the same optimum: a wrong factor or Jacobian misses by far more
    assert m.criterion <= crit + 1e-9 * crit
    assert m.criterion == pytest.approx(crit, rel=1e-8)
    np.testing.assert_allclose(m.fixef.to_numpy(), ref["beta"], rtol=1e-4)
    # the SEs of β from the Hessian of the criterion in (θ, β): glmmTMB's from its joint Hessian (sdreport)
    np.testing.assert_allclose(m.bse.to_numpy(), ref["se"], rtol=1e-4)
    vc = m.varcorr.to_frame()
    for term in ref["terms"]:
        g = term["group"]
        sds = vc[(vc["group"] == g) & vc["var2"].isna()]["sdcor"].to_numpy()
        np.testing.assert_allclose(sds, term["sd"], rtol=1e-4)
        if term["cor"] is None or term["structure"] == "diag":  # diag: glmmTMB's zeros, no rows in varcorr
            continue
        # every correlation, lme4's order (column by column), as R's lower.tri gives glmmTMB's
        np.testing.assert_allclose(_correlations(vc, g), term["cor"], rtol=0, atol=1e-4)


@pytest.mark.parametrize("cid", GLMM_CASES)
def test_criterion_at_glmmtmb_estimates(fits, cid):
    # the algebra alone: glmer's Laplace criterion at glmmTMB's (θ, β) is glmmTMB's criterion
    theta_at_reference = _compare_module().theta_at_reference
    ref = json.loads((REFERENCE / f"{cid}.json").read_text())
    m = fits[cid]
    theta = theta_at_reference(m.design, ref)
    obj = GlmmObjective(m._model.with_response(m._model.y), 1)
    assert obj.at_theta_beta(theta, np.asarray(ref["beta"])) == pytest.approx(ref["criterion"], rel=1e-10)


def test_ar1_reports_its_own_parameters(ar1_poisson):
    m = ar1_poisson
    assert m.design.theta_names() == ["subj.sd", "subj.rho"]
    est = estimates(m)
    # the structure's parameters, as lmer reports them: the SD and ρ (glmmTMB: 0.607426719671505, 0.475114531842191)
    assert list(est.index) == [".sig01", ".sig02", "(Intercept)", "x"]
    assert est[".sig01"] == pytest.approx(0.607426719671505, rel=1e-4)
    assert est[".sig02"] == pytest.approx(0.475114531842191, abs=1e-4)
    pd.testing.assert_series_equal(m.boot_statistics(), est)
    ci = m.confint(method="Wald")
    assert ci.loc[[".sig01", ".sig02"]].isna().all().all()
    z = 1.959963984540054
    np.testing.assert_allclose(ci.loc["x"].to_numpy(), m.fixef["x"] + np.array([-z, z]) * m.bse["x"])
    # the correlation matrix is ρ^|i−j| and every SD the same
    vc = m.varcorr.to_frame()
    cors = _correlations(vc, "subj")
    rho = est[".sig02"]
    lags = [i - j for j in range(5) for i in range(j + 1, 5)]
    np.testing.assert_allclose(cors, rho ** np.array(lags), rtol=1e-12)
    text = str(m.summary())
    assert "ar1(0 + t | subj)" in text and "Random effects" in text


def test_cs_varcorr_is_marked(fits):
    vc = fits["cs_binomial"].varcorr
    assert vc.attrs["term_structures"] == ["cs", "us"]
    assert "(cs)" in str(vc)  # as lmer prints a cs term
    cors = _correlations(vc.to_frame(), "subj")
    np.testing.assert_allclose(cors, cors[0], rtol=0, atol=1e-14)


def test_diag_has_no_correlations(fits):
    vc = fits["diag_poisson"].varcorr.to_frame()
    assert _correlations(vc, "subj").size == 0
    assert fits["diag_poisson"].design.n_theta == 4


# ---- equivalences --------------------------------------------------------------------------------------
def test_one_coefficient_diag_and_us_are_the_scalar_term(glmmdata):
    fits = [
        sparselmm.glmer(f"yb ~ x + {term}", glmmdata, family="binomial")
        for term in ("(1 | subj)", "diag(1 | subj)", "us(1 | subj)")
    ]
    assert fits[0].criterion == fits[1].criterion == fits[2].criterion
    np.testing.assert_array_equal(fits[0].theta, fits[1].theta)
    np.testing.assert_array_equal(fits[0].bse, fits[2].bse)


def test_cs_with_two_coefficients_is_us(glmmdata):
    # compound symmetry of 2 coefficients is any 2 × 2 covariance: the same optimum as us. glmmTMB 1.1.5 on these
    # rows: cs 880.2076749340, us 880.2076749408 (cs SDs 0.86344, 1.42900, ρ 0.407; β -0.2772994960, 0.7069072738)
    two = glmmdata[glmmdata["f"] != "b"]
    cs = sparselmm.glmer("yb ~ x + cs(0 + f | subj)", two, family="binomial")
    us = sparselmm.glmer("yb ~ x + us(0 + f | subj)", two, family="binomial")
    assert cs.design.n_theta == us.design.n_theta == 3
    assert cs.criterion == pytest.approx(us.criterion, abs=1e-6)
    assert cs.criterion <= 880.2076749340 + 1e-6
    np.testing.assert_allclose(cs.fixef.to_numpy(), [-0.2772994960, 0.7069072738], rtol=1e-4)
    np.testing.assert_allclose(cs.varcorr.to_frame()["sdcor"], us.varcorr.to_frame()["sdcor"], rtol=1e-4)
    np.testing.assert_allclose(cs.bse, us.bse, rtol=1e-4)


def test_negative_binomial_at_its_theta(glmmdata):
    # glmer_nb runs the same stages: its fit is glmer's at the negative binomial θ it found
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nb = sparselmm.glmer_nb("count ~ x + diag(0 + f | subj) + (1 | item)", glmmdata)
        fixed = sparselmm.glmer(
            "count ~ x + diag(0 + f | subj) + (1 | item)",
            glmmdata,
            family=sparselmm.glmm.NegativeBinomial(nb.nb_theta),
        )
    assert fixed.criterion == pytest.approx(nb.criterion, abs=1e-6)
    np.testing.assert_allclose(fixed.theta, nb.theta, rtol=1e-3)


# ---- bounds --------------------------------------------------------------------------------------------
def test_bounds_respected_at_a_boundary(ar1data, monkeypatch):
    # toep on the ar1 counts: the optimum has the last partial autocorrelation at its bound −1 (a singular
    # Toeplitz matrix). glmmTMB 1.1.5 reports non-convergence there at criterion 2334.3358612712 (its lag
    # correlations mapped each to (−1, 1) cannot reach the singular matrix); glmer's is 0.27 lower
    seen = []
    original = PirlsModel.lambda_values

    def recording(self, theta):
        seen.append(np.array(theta, dtype=float))
        return original(self, theta)

    monkeypatch.setattr(PirlsModel, "lambda_values", recording)
    with pytest.warns(SingularFitWarning):
        m = sparselmm.glmer("count ~ x + toep(0 + t | subj)", ar1data, family="poisson")
    design = m.design
    assert np.isfinite(design.upper).sum() == 4  # the four partial autocorrelations
    thetas = np.array(seen)
    assert thetas.shape[0] > 100
    assert np.all(thetas >= design.lower) and np.all(thetas <= design.upper)
    assert m.theta[-1] == -1.0 and m.is_singular()
    assert m.criterion < 2334.3358612712 - 0.2
    # the Hessian's differences stay inside the box: finite SEs (glmmTMB has none here: its Hessian is not
    # positive definite), of ar1_poisson's size (0.067, 0.035)
    assert np.all(np.isfinite(m.bse)) and np.all(m.bse < 0.1)
    assert not any("Model failed" in msg for msg in m.optinfo.messages)


def test_nagq0_keeps_the_bounds(glmmdata):
    m = sparselmm.glmer("yb ~ x + cs(0 + f | subj) + (1 | item)", glmmdata, family="binomial", nAGQ=0)
    assert np.all(m.theta >= m.design.lower) and np.all(m.theta <= m.design.upper)
    assert m.design.lower[3] == -0.5 and m.design.upper[3] == 1.0  # cs's ρ: −1/(k−1) ≤ ρ ≤ 1
    laplace = sparselmm.glmer("yb ~ x + cs(0 + f | subj) + (1 | item)", glmmdata, family="binomial")
    assert abs(m.theta[3] - laplace.theta[3]) < 0.05


def test_deriv12_box_steps_inside_the_upper_bound():
    # f(x) = x0² x1 + exp(x1) with 0 ≤ x1 ≤ 1 (not defined above 1, like a correlation's factor), x1 within
    # the step of its upper bound: every evaluation stays in the box, the gradient and the cross term are right
    # (the diagonal at a clipped step is lme4's deriv12's, as at a zero lower bound)
    points = []

    def f(x):
        points.append(np.array(x))
        return x[0] ** 2 * x[1] + np.exp(x[1])

    for x1 in (1.0, 1.0 - 4e-5):
        x = np.array([0.5, x1])
        points.clear()
        g, H = _deriv12_box(f, x, f(x), np.array([-np.inf, 0.0]), np.array([np.inf, 1.0]))
        assert max(p[1] for p in points) <= 1.0
        np.testing.assert_allclose(g, [2 * 0.5 * x1, 0.25 + np.exp(x1)], rtol=1e-3)
        np.testing.assert_allclose([H[0, 0], H[0, 1], H[1, 0]], [2 * x1, 1.0, 1.0], rtol=1e-3)
    # no upper bound near: deriv12 itself
    x = np.array([0.5, 0.5])
    g, H = _deriv12_box(f, x, f(x), np.array([-np.inf, 0.0]), np.array([np.inf, 1.0]))
    np.testing.assert_allclose(H, [[1.0, 1.0], [1.0, np.exp(0.5)]], rtol=1e-6)


def test_exact_gradient_is_for_unstructured_scalar_terms(ar1_poisson, glmmdata):
    assert not gradient_supported(ar1_poisson._model, 1)
    assert ar1_poisson.optinfo.details["derivatives"] == "central differences"
    scalar = sparselmm.glmer("yb ~ x + (1 | subj)", glmmdata, family="binomial")
    assert gradient_supported(scalar._model, 1)


# ---- what works on a structured fit, what is refused ----------------------------------------------------
def test_refit_anova_drop1_pickle(ar1_poisson, ar1data):
    m = ar1_poisson
    y = m.simulate(1, seed=3).iloc[:, 0].to_numpy()
    again = m.refit(y)
    fresh = sparselmm.glmer("count ~ x + ar1(0 + t | subj)", ar1data.assign(count=y), family="poisson")
    assert again.criterion <= fresh.criterion + 1e-8
    m0 = sparselmm.glmer("count ~ x + (1 | subj)", ar1data, family="poisson")
    tab = m.anova(m0)
    assert list(tab["npar"]) == [3, 4]
    assert tab["Chisq"].iloc[1] == pytest.approx(m0.criterion - m.criterion)
    d1 = m.drop1(test="Chisq")
    reduced = sparselmm.glmer("count ~ 1 + ar1(0 + t | subj)", ar1data, family="poisson")
    assert d1.loc["x", "LRT"] == pytest.approx(reduced.criterion - m.criterion, rel=1e-6)
    back = pickle.loads(pickle.dumps(m))
    assert back.criterion == m.criterion
    np.testing.assert_allclose(
        back.ranef(cond_var=True)["subj"].attrs["cond_sd"], m.ranef(cond_var=True)["subj"].attrs["cond_sd"]
    )


@pytest.mark.parametrize(
    "call",
    [
        lambda m, m0: m.profile(),
        lambda m, m0: m.confint(method="profile"),
        lambda m, m0: m.confint(method="boot", nsim=2, seed=1),
        lambda m, m0: m.bootstrap(2, seed=1),
        lambda m, m0: m0.bootstrap_lrt(m, nsim=2, seed=1),
    ],
    ids=["profile", "confint_profile", "confint_boot", "bootstrap", "bootstrap_lrt"],
)
def test_refusals(ar1_poisson, ar1data, call):
    m0 = sparselmm.glmer("count ~ x + (1 | subj)", ar1data, family="poisson")
    with pytest.raises(ModelSpecError, match=r"covariance-structure terms \(ar1\(0 \+ t \| subj\)\)"):
        call(ar1_poisson, m0)


def test_adaptive_quadrature_refused(glmmdata):
    with pytest.raises(ModelSpecError, match="single scalar random-effects term"):
        sparselmm.glmer("yb ~ x + cs(0 + f | subj)", glmmdata, family="binomial", nAGQ=5)


def test_formula_errors_name_the_term(ar1data):
    with pytest.raises(sparselmm.FormulaError, match="intercept"):
        sparselmm.glmer("count ~ x + ar1(1 + t | subj)", ar1data, family="poisson")
    with pytest.raises(sparselmm.FormulaError, match="single coefficient"):
        sparselmm.glmer("count ~ x + cs(1 | subj)", ar1data, family="poisson")
