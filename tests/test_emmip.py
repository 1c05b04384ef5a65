"""sparselmm.emmip (emmeans' interaction plot) against R's emmip(plotit = FALSE), its figure and its errors.

Reference values: R 4.2.2, emmeans 1.8.4.1, lme4 1.1-31, lmerTest 3.1-3::

    m <- lmer(angle ~ recipe * temperature + (1|recipe:replicate), data = cake)
    emmip(m, recipe ~ temperature, CIs = TRUE, plotit = FALSE, lmer.df = "satterthwaite")

cbpp: emmip's data are emmeans' summary; the values are validation/run_emmeans.R's for the cbpp case (its fit
settings, data validation/data/glmm_cbpp.csv), as in tests/test_emmeans.py::

    summary(emmeans(g, ~ period, type = "response"))
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sparselmm
from sparselmm import ModelSpecError

DATA = Path(__file__).resolve().parents[1] / "validation" / "data"


@pytest.fixture(scope="module")
def cake_fit():
    return sparselmm.lmer("angle ~ recipe * temperature + (1|recipe:replicate)", sparselmm.datasets.load("cake"))


def test_cake_data_is_emmeans_emmip(cake_fit):
    d = sparselmm.emmip(cake_fit, "recipe ~ temperature", plotit=False)
    assert list(d.columns) == ["recipe", "temperature", "yvar", "SE", "df", "LCL", "UCL", "tvar", "xvar"]
    assert len(d) == 18
    rows = d.set_index(["recipe", "xvar"])
    # R: B 175, C 175, A 185
    for key, y, lcl, ucl in [
        (("B", "175"), 26.866667, 22.808651, 30.92468),
        (("C", "175"), 27.933333, 23.875318, 31.99135),
        (("A", "185"), 31.533333, 27.475318, 35.59135),
    ]:
        r = rows.loc[key]
        assert r["yvar"] == pytest.approx(y, abs=1e-6)
        assert r["SE"] == pytest.approx(2.0381027, abs=1e-6)
        assert r["df"] == pytest.approx(77.44, abs=0.01)
        assert r["LCL"] == pytest.approx(lcl, abs=1e-5) and r["UCL"] == pytest.approx(ucl, abs=1e-5)
    assert set(d["tvar"]) == {"A", "B", "C"}


def test_glmer_on_the_response_scale():
    d = pd.read_csv(DATA / "glmm_cbpp.csv")
    d["period"], d["herd"] = d["period"].astype(str), d["herd"].astype(str)
    g = sparselmm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", d, family="binomial")
    out = sparselmm.emmip(g, "1 ~ period", type="response", plotit=False)
    R_prob = [0.198049157275459, 0.0838732556676203, 0.0739734822137297, 0.0483906660762352]
    np.testing.assert_allclose(out["yvar"], R_prob, rtol=1e-4)
    np.testing.assert_allclose(out["SE"].iloc[0], 0.0369227455072226, rtol=1e-3)
    np.testing.assert_allclose(out["UCL"].iloc[0], 0.280316425175083, rtol=1e-4)
    assert np.all(out["LCL"] < out["yvar"]) and np.all(out["yvar"] < out["UCL"])
    assert set(out["tvar"]) == {"1"} and np.all(np.isinf(out["df"]))


def test_figure_has_a_panel_per_by_group_and_a_line_per_trace(cake_fit):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    fig = sparselmm.emmip(cake_fit, "1 ~ temperature | recipe", CIs=True)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 3
    assert visible[0].get_title() == "recipe = A"
    fig2 = sparselmm.emmip(cake_fit, "recipe ~ temperature")
    assert len(fig2.axes[0].get_lines()) == 3
    assert fig2.axes[0].get_ylabel() == "Linear prediction"


@pytest.mark.parametrize(
    "formula, match",
    [
        ("recipe temperature", "formula"),
        ("recipe ~ 1", "no x factor"),
        ("recipe ~ oven", "oven"),
        ("recipe ~ temperature | ", "temperature"),  # an empty by part is no by part: fine, below
    ],
)
def test_bad_formulas_are_refused_clearly(cake_fit, formula, match):
    if formula.endswith("| "):
        assert len(sparselmm.emmip(cake_fit, formula, plotit=False)) == 18
        return
    with pytest.raises(ModelSpecError, match=match):
        sparselmm.emmip(cake_fit, formula, plotit=False)
