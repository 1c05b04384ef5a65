"""lmer on the matrix-free path: the fit against the exact one, the cost model's fallback, the refusals.

The design is crossed users × items with 4,000 × 3,000 levels on 15,000 rows, where the exact factor's
complement (3,000² doubles) costs more memory than the matrix-free path's vectors, so a ``memory_limit``
between the two predictions sends ``ordering="auto"`` to the matrix-free path. Accuracy targets are issue
19's: the exact criterion at the approximate θ within 0.01 of the exact minimum, θ within 1e-3 relative, β
within 1e-3 of its standard error (measured here: ~1e-8, ~1e-6, ~1e-6).
"""

import pickle

import numpy as np
import pandas as pd
import pytest

import sparselmm
from sparselmm.errors import MemoryLimitError, ModelSpecError

FORMULA = "y ~ x + (1|user) + (1|item)"


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    n, n_users, n_items = 15_000, 4_000, 3_000

    def codes(m):
        p = rng.lognormal(0.0, 1.0, m)
        c = np.concatenate([np.arange(m), rng.choice(m, n - m, p=p / p.sum())])
        rng.shuffle(c)
        return c

    u, i = codes(n_users), codes(n_items)
    x = rng.normal(size=n)
    y = 2 + 0.5 * x + rng.normal(0, 0.7, n_users)[u] + rng.normal(0, 0.4, n_items)[i] + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x": x, "user": u, "item": i})


@pytest.fixture(scope="module")
def fits(data):
    exact = sparselmm.lmer(FORMULA, data, reml=False)
    approx = sparselmm.lmer(FORMULA, data, reml=False, ordering="matrix-free")
    return exact, approx


def test_matrix_free_fit_meets_the_accuracy_targets(fits):
    exact, approx = fits
    assert exact.optinfo.path != "matrix-free (approximate)"
    assert approx.optinfo.path == "matrix-free (approximate)"
    excess = exact.deviance_function(approx.theta) - exact.objective
    assert -1e-6 < excess <= 0.01
    np.testing.assert_allclose(approx.theta, exact.theta, rtol=1e-3)
    assert np.all(np.abs(approx.fixef - exact.fixef) <= 1e-3 * exact.bse)
    np.testing.assert_allclose(approx.bse, exact.bse, rtol=1e-3)
    assert approx.sigma == pytest.approx(exact.sigma, rel=1e-4)
    # the reported criterion is the estimate; its stated error covers the gap to the exact value at its θ
    se = approx.optinfo.details["approximation"]["criterion_se"]
    assert 0 < se < 1
    assert abs(approx.objective - exact.deviance_function(approx.theta)) < 5 * se


def test_everything_after_the_fit(fits, data):
    exact, approx = fits
    for group in ("user", "item"):
        np.testing.assert_allclose(
            approx.ranef()[group].to_numpy(), exact.ranef()[group].to_numpy(), atol=1e-3 * exact.theta.max()
        )
    np.testing.assert_allclose(approx.predict(data.head(50)), exact.predict(data.head(50)), atol=1e-3)
    np.testing.assert_allclose(approx.vcov.to_numpy(), exact.vcov.to_numpy(), rtol=2e-3)
    wald = approx.confint(method="Wald")
    np.testing.assert_allclose(
        wald.loc[["(Intercept)", "x"]], exact.confint(method="Wald").loc[["(Intercept)", "x"]], rtol=1e-3
    )
    text = str(approx.summary())
    assert "Approximate: matrix-free" in text and "t tests without df" in text
    assert approx.varcorr.shape == exact.varcorr.shape
    again = pickle.loads(pickle.dumps(approx))
    assert again.objective == approx.objective
    np.testing.assert_allclose(again.fixef, approx.fixef)


def test_refit_ml_of_a_reml_fit_stays_on_the_path(data):
    approx = sparselmm.lmer(FORMULA, data, ordering="matrix-free")
    ml = approx.refit_ml()
    fresh = sparselmm.lmer(FORMULA, data, reml=False, ordering="matrix-free")
    assert ml.objective == pytest.approx(fresh.objective, abs=1e-6)
    np.testing.assert_allclose(ml.theta, fresh.theta, rtol=1e-4)


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.ranef(cond_var=True),
        lambda m: m.confint(),  # lme4's default, the profile
        lambda m: m.confint(method="boot", nsim=2),
        lambda m: m.profile(),
        lambda m: sparselmm.profile(m),  # the function, not only the method
        lambda m: m.coef_table(ddf="Satterthwaite"),
        lambda m: m.bootstrap(2, seed=1),
        lambda m: m.drop1(),
    ],
    ids=["cond_var", "confint", "confint_boot", "profile", "profile_function", "satterthwaite", "bootstrap", "drop1"],
)
def test_what_needs_an_exact_factor_is_refused_clearly(fits, call):
    _, approx = fits
    with pytest.raises(ModelSpecError, match="not available on an approximate fit"):
        call(approx)


def test_auto_falls_back_when_no_factor_fits(data):
    costs = sparselmm.deviance_function(FORMULA, data, reml=False).costs
    exact_bytes = min(c.bytes for c in costs[:3] if c.applicable)
    mf = costs[3]
    assert mf.path == "matrix-free (approximate)" and mf.applicable and mf.bytes < exact_bytes
    limit = int((mf.bytes + exact_bytes) / 2)
    m = sparselmm.lmer(FORMULA, data, reml=False, memory_limit=limit)
    assert m.optinfo.path == "matrix-free (approximate)"
    assert m.optinfo.predicted["bytes"] == mf.bytes
    # a named CHOLMOD ordering is a request for the exact factor: no fallback
    with pytest.raises(MemoryLimitError, match="matrix-free"):
        sparselmm.lmer(FORMULA, data, reml=False, memory_limit=limit, ordering="amd")


def test_nothing_fits_names_every_path(data):
    with pytest.raises(MemoryLimitError) as err:
        sparselmm.lmer(FORMULA, data, memory_limit="10KB")
    for path in ("dense Schur complement", "CHOLMOD", "matrix-free (approximate)"):
        assert path in str(err.value)
    with pytest.raises(MemoryLimitError, match="matrix-free path does not fit"):
        sparselmm.lmer(FORMULA, data, memory_limit="10KB", ordering="matrix-free")


def test_matrix_free_refuses_a_vector_term_by_name(data):
    with pytest.raises(ModelSpecError, match=r"\(1 ?\+ ?x ?\| ?user\)"):
        sparselmm.lmer("y ~ x + (1 + x|user) + (1|item)", data, ordering="matrix-free")
