"""The parametric-bootstrap likelihood-ratio test of glmer fits (pbkrtest's ``PBmodcomp``, issue 20 item 3).

``bootstrap_lrt`` is one code path for lmer and glmer fits (:mod:`sparselmm.inference.bootstrap_lrt`); here its
glmer side: the observed statistic against lme4's, reproducibility for any ``n_jobs``, each replicate's refits
against fresh ``glmer`` fits of the drawn response, the drawn binomial counts, and the refusals. The live
comparison with pbkrtest (the same responses refitted, and the Monte-Carlo p-value) is
validation/compare_glmer_inference.py's ``pbmodcomp`` section.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import CBPP, DATA, quiet_call

import sparselmm
from sparselmm import DataError, ModelSpecError
from sparselmm.inference.bootstrap_lrt import _LRTReplicator
from sparselmm.inference.lrt import bootstrap_lrt

CBPP0 = "cbind(incidence, size - incidence) ~ 1 + (1 | herd)"
POISSON_TOBS = 3.60749828776079  # pbkrtest's observed statistic of sim_poisson_pb (see its test)


@pytest.fixture(scope="module")
def cbpp(cbpp_data):
    return cbpp_data.copy()


@pytest.fixture(scope="module")
def cbpp_pair(cbpp):
    """(g0, g1): cbpp without and with ``period``."""
    return quiet_call(sparselmm.glmer, CBPP0, cbpp, family="binomial"), quiet_call(
        sparselmm.glmer, CBPP, cbpp, family="binomial"
    )


@pytest.fixture(scope="module")
def cbpp_table(cbpp_pair):
    g0, g1 = cbpp_pair
    return g0.bootstrap_lrt(g1, nsim=24, seed=11, progress=False)


def test_observed_statistic_is_lme4s(cbpp_pair, cbpp_table):
    """R (lme4 1.1-31, pbkrtest 0.5.2; validation/glmer_inference_cases.json's cbpp_logit)::

    g1 <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, binomial,
                control = glmerControl(tolPwrss = 1e-12))
    g0 <- update(g1, . ~ . - period)
    PBmodcomp(g1, g0, nsim = 200)$test["LRT", ]    # stat 25.6100634392619, df 3, p.value 1.15093669733415e-05
    """
    g0, g1 = cbpp_pair
    table = cbpp_table
    assert list(table.index) == ["LRT", "PBtest"] and list(table.columns) == ["stat", "df", "p.value"]
    assert table.loc["LRT", "stat"] == pytest.approx(25.6100634392619, rel=1e-6)
    assert table.loc["LRT", "df"] == 3
    assert table.loc["LRT", "p.value"] == pytest.approx(1.15093669733415e-05, rel=1e-5)
    # anova's likelihood-ratio row is the same test, unchanged
    anova = sparselmm.anova(g0, g1)
    assert table.loc["LRT", "stat"] == anova["Chisq"].iloc[1]
    assert table.loc["LRT", "p.value"] == anova["Pr(>Chisq)"].iloc[1]


def test_observed_poisson_statistic_is_lme4s():
    """R (validation/glmer_inference_cases.json's sim_poisson_pb)::

    g1 <- glmer(y0 ~ x + cond + log_exposure + (1 | subj) + (1 | item), d, poisson,
                control = glmerControl(tolPwrss = 1e-12))
    g0 <- update(g1, . ~ . - log_exposure)
    PBmodcomp(g1, g0, nsim = 100)$test["LRT", "stat"]    # 3.60749828776079
    """
    d = pd.read_csv(DATA / "glmm_sim_poisson.csv")
    re = "(1 | subj) + (1 | item)"
    g1 = quiet_call(sparselmm.glmer, f"y0 ~ x + cond + log_exposure + {re}", d, family="poisson")
    g0 = quiet_call(sparselmm.glmer, f"y0 ~ x + cond + {re}", d, family="poisson")
    table = bootstrap_lrt(g0, g1, nsim=2, seed=1, progress=False)
    assert table.loc["LRT", "stat"] == pytest.approx(POISSON_TOBS, rel=1e-6)
    assert table.loc["LRT", "df"] == 1 and table.attrs["failures"] == 0


def test_reproducible_for_any_n_jobs_and_order(cbpp_pair, cbpp_table):
    g0, g1 = cbpp_pair
    draws = np.array(cbpp_table.attrs["draws"])
    assert cbpp_table.attrs["failures"] == 0 and np.all(draws >= 0)
    observed = cbpp_table.loc["LRT", "stat"]
    pbkrtest_p = (1 + np.sum(draws > observed)) / (1 + np.sum(draws > 0))  # PBmodcomp's formula
    assert cbpp_table.loc["PBtest", "p.value"] == pytest.approx(pbkrtest_p)
    again = g0.bootstrap_lrt(g1, nsim=24, seed=11, n_jobs=2, progress=False)
    np.testing.assert_array_equal(again.attrs["draws"], draws)
    # pbkrtest's order PBmodcomp(large, small), and the function; replicate i's draw does not depend on nsim
    swapped = bootstrap_lrt(g1, g0, nsim=6, seed=11, progress=False)
    assert swapped.loc["LRT", "stat"] == observed
    np.testing.assert_array_equal(swapped.attrs["draws"], draws[:6])
    other = g1.bootstrap_lrt(g0, nsim=6, seed=12, progress=False)
    assert not np.array_equal(other.attrs["draws"], draws[:6])


def _fresh(cbpp, formula: str, y: np.ndarray):
    """A fresh glmer fit of ``formula`` (a cbind response of ``k`` successes) to the proportions ``y``."""
    d = cbpp.assign(k=np.round(y * cbpp["size"]))
    return quiet_call(sparselmm.glmer, formula.replace("incidence", "k"), d, family="binomial")


def test_replicate_refits_reach_fresh_fits(cbpp, cbpp_pair, cbpp_table):
    """Replicate ``i`` refits both models to ``g0.simulate(nsim, seed)[:, i]``: each reaches the optimum a fresh
    glmer fit of that response reaches (no higher, within 1e-6 relative), and its statistic is theirs."""
    g0, g1 = cbpp_pair
    sims = g0.simulate(24, seed=11)
    rep = _LRTReplicator(g0, g1)
    for i in (0, 5, 17):
        y = sims.iloc[:, i].to_numpy()
        stat, dev0, dev1 = quiet_call(rep.statistic, y)
        assert stat == cbpp_table.attrs["draws"][i]
        fresh0, fresh1 = _fresh(cbpp, CBPP0, y), _fresh(cbpp, CBPP, y)
        for ours, fresh in ((dev0, fresh0.deviance), (dev1, fresh1.deviance)):
            assert ours <= fresh + 1e-9
            assert abs(ours - fresh) <= 1e-6 * abs(fresh)
        assert stat == pytest.approx(max(0.0, fresh0.deviance - fresh1.deviance), abs=1e-4)
    # the fits themselves are untouched
    assert g0.bootstrap_lrt(g1, nsim=1, seed=3, progress=False).loc["LRT", "stat"] == cbpp_table.loc["LRT", "stat"]


def test_binomial_draws_are_counts_of_the_trials(cbpp, cbpp_pair):
    """A cbind response is drawn as successes out of each row's trials (returned as proportions)."""
    g0, g1 = cbpp_pair
    rep = _LRTReplicator(g0, g1)
    size = cbpp["size"].to_numpy()
    for seed in range(5):
        y = rep.sim.draw(np.random.default_rng(seed))
        k = y * size
        np.testing.assert_allclose(k, np.round(k), atol=1e-9)
        assert np.all((k >= 0) & (k <= size + 1e-9))


def test_refusals(cbpp, cbpp_pair):
    g0, g1 = cbpp_pair
    probit = quiet_call(sparselmm.glmer, CBPP, cbpp, family="binomial", link="probit")
    with pytest.raises(ModelSpecError, match=r"different kinds.*glmer \(binomial, logit link\).*probit"):
        g0.bootstrap_lrt(probit, nsim=2)
    poisson = quiet_call(sparselmm.glmer, "incidence ~ period + (1 | herd)", cbpp, family="poisson")
    with pytest.raises(ModelSpecError, match="different kinds.*poisson"):
        bootstrap_lrt(g0, poisson, nsim=2)
    lmer = quiet_call(sparselmm.lmer, "incidence ~ period + (1 | herd)", cbpp, reml=False)
    with pytest.raises(ModelSpecError, match=r"different kinds.*lmer \(gaussian\)"):
        bootstrap_lrt(lmer, g1, nsim=2)
    with pytest.raises(ModelSpecError, match=r"different kinds"):
        lmer.bootstrap_lrt(g1, nsim=2)
    by_size = quiet_call(
        sparselmm.glmer, "cbind(incidence, size - incidence) ~ size + (1 | herd)", cbpp, family="binomial"
    )
    with pytest.raises(ModelSpecError, match=r"not nested.*\['size'\]"):
        by_size.bootstrap_lrt(g1, nsim=2)
    fewer = quiet_call(sparselmm.glmer, CBPP0, cbpp.iloc[1:], family="binomial")
    with pytest.raises(DataError, match="different numbers of rows"):
        fewer.bootstrap_lrt(g1, nsim=2)
    changed = cbpp.copy()
    changed.loc[0, "incidence"] = (changed.loc[0, "incidence"] + 1) % (changed.loc[0, "size"] + 1)
    other_y = quiet_call(sparselmm.glmer, CBPP0, changed, family="binomial")
    with pytest.raises(DataError, match="different response values"):
        other_y.bootstrap_lrt(g1, nsim=2)
    for nsim in (0, -1, 2.5):
        with pytest.raises(ModelSpecError, match="nsim must be a whole number"):
            g0.bootstrap_lrt(g1, nsim=nsim)
    with pytest.raises(ModelSpecError, match="n_jobs"):
        g0.bootstrap_lrt(g1, nsim=2, n_jobs=0)
