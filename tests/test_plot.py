"""Plots (``sparselmm.plot``) drawn on matplotlib's Agg backend: what is drawn, not how it looks.

Each test checks the artists — points, segments, tick labels, reference lines — against the numbers they
show (conditional modes and SDs, residuals, the profile table), and the error when matplotlib is missing.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
from scipy.stats import norm

import sparselmm
from sparselmm.errors import ModelSpecError

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402

_cache: dict = {}


def fit(formula: str, dataset: str, reml: bool = True) -> sparselmm.LmerResult:
    key = (formula, dataset, reml)
    if key not in _cache:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _cache[key] = sparselmm.lmer(formula, sparselmm.datasets.load(dataset), reml=reml)
    return _cache[key]


def sleep():
    return fit("Reaction ~ Days + (Days|Subject)", "sleepstudy")


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def points(ax):
    """The marker-only lines of an Axes (the data points)."""
    return [ln for ln in ax.get_lines() if ln.get_linestyle() in ("None", "") and ln.get_marker() not in ("", "None")]


def segments(ax) -> np.ndarray:
    (coll,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    return np.array(coll.get_segments())


def test_caterpillar_plot_draws_modes_and_intervals_ordered_by_the_first_coefficient():
    m = sleep()
    re = m.ranef(cond_var=True)["Subject"]
    fig = m.plot_ranef(level=0.9)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2  # one grouping factor, two coefficients
    order = np.argsort(re.iloc[:, 0].to_numpy(), kind="stable")
    z = norm.ppf(0.95)
    for ax, col in zip(axes, re.columns):
        (pts,) = points(ax)
        x, y = pts.get_data()
        assert len(x) == 18
        np.testing.assert_allclose(x, re[col].to_numpy()[order])  # level i at height i, by the first coefficient
        np.testing.assert_array_equal(y, np.arange(18))
        seg = segments(ax)
        assert seg.shape == (18, 2, 2)
        half = z * re.attrs["cond_sd"][col].to_numpy()[order]
        np.testing.assert_allclose(seg[:, 0, 0], x - half)
        np.testing.assert_allclose(seg[:, 1, 0], x + half)
        assert ax.get_title() == f"Subject: {col}"
    labels = [t.get_text() for t in axes[0].get_yticklabels()]
    assert labels == [str(v) for v in re.index[order]]
    assert np.all(np.diff(points(axes[0])[0].get_data()[0]) >= 0)  # the first panel is sorted


def test_caterpillar_plot_of_crossed_factors_and_group_selection():
    m = fit("diameter ~ 1 + (1|plate) + (1|sample)", "Penicillin")
    fig = m.plot_ranef()
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["plate: Intercept", "sample: Intercept"] or [
        ax.get_title().split(":")[0] for ax in axes
    ] == ["plate", "sample"]
    assert [len(points(ax)[0].get_data()[0]) for ax in axes] == [24, 6]
    fig = m.plot_ranef(group="sample")
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 1
    with pytest.raises(ModelSpecError, match="No grouping factor"):
        m.plot_ranef(group="batch")
    with pytest.raises(ModelSpecError, match="between 0 and 1"):
        m.plot_ranef(level=2)


def _groups_fit(n_levels: int) -> sparselmm.LmerResult:
    rng = np.random.default_rng(n_levels)
    g = np.repeat([f"level_{i:02d}" for i in range(n_levels)], 5)
    y = rng.normal(size=n_levels)[np.arange(g.size) // 5] + rng.normal(scale=0.5, size=g.size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sparselmm.lmer("y ~ 1 + (1 | g)", {"y": y, "g": g})


def test_caterpillar_figure_height_grows_with_the_number_of_levels():
    # 40 levels used to share the 3.2-inch panel of 10 levels: 7-point labels 5 points apart, unreadable
    heights = {}
    for n in (10, 20, 40):
        fig = _groups_fit(n).plot_ranef()
        (ax,) = [ax for ax in fig.axes if ax.get_visible()]
        assert len(ax.get_yticklabels()) == n
        heights[n] = fig.get_figheight()
        label_pitch = ax.get_position().height * fig.get_figheight() * 72 / n  # points between tick labels
        assert label_pitch >= 7.0, (n, label_pitch)  # at least the labels' font size: no overlap
        plt.close(fig)
    assert heights[10] < heights[20] < heights[40]
    assert heights[40] >= 40 * 0.16
    # two grouping factors: the row with more levels is the taller one
    m = fit("diameter ~ 1 + (1|plate) + (1|sample)", "Penicillin")  # 24 plates, 6 samples
    fig = m.plot_ranef()
    plate_ax, sample_ax = [ax for ax in fig.axes if ax.get_visible()]
    assert plate_ax.get_position().height > sample_ax.get_position().height
    # an explicit figsize is kept
    assert tuple(_groups_fit(40).plot_ranef(figsize=(4, 3)).get_size_inches()) == (4, 3)


def test_qq_plot_of_the_random_effects():
    m = sleep()
    re = m.ranef(cond_var=True)["Subject"]
    fig = m.plot_qq_ranef()
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2
    q = norm.ppf((np.arange(1, 19) - 0.5) / 18)
    for ax, col in zip(axes, re.columns):
        (pts,) = points(ax)
        x, y = pts.get_data()
        np.testing.assert_allclose(x, np.sort(re[col].to_numpy()))
        np.testing.assert_allclose(y, q)
        assert segments(ax).shape == (18, 2, 2)
        qqline = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-"]
        assert len(qqline) == 1  # R's qqline through the quartiles
        xs, ys = qqline[0].get_data()
        q1, q3 = np.percentile(re[col], [25, 75])
        slope = (ys[1] - ys[0]) / (xs[1] - xs[0])
        assert slope == pytest.approx((norm.ppf(0.75) - norm.ppf(0.25)) / (q3 - q1))


def test_residuals_against_fitted():
    m = sleep()
    fig = m.plot_residuals()
    (ax,) = fig.axes
    (pts,) = points(ax)
    x, y = pts.get_data()
    np.testing.assert_allclose(x, m.fitted())
    np.testing.assert_allclose(y, m.residuals(type="pearson"))
    assert ax.get_xlabel() == "Fitted values" and ax.get_ylabel() == "Pearson residuals"
    zero = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert len(zero) == 1 and np.all(np.asarray(zero[0].get_ydata()) == 0)
    fig2, ax2 = plt.subplots()
    assert m.plot_residuals(type="response", ax=ax2) is fig2
    assert ax2.get_ylabel() == "Residuals"


def test_profile_plot_draws_the_zeta_table():
    m = fit("Yield ~ 1 + (1|Batch)", "Dyestuff")
    prof = m.profile(progress=False)
    fig = prof.plot()
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == prof.parameters == [".sig01", ".sigma", "(Intercept)"]
    table = prof.table()
    for ax, name in zip(axes, prof.parameters):
        rows = table[table[".par"] == name].sort_values(".focal")
        (curve,) = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-" and ln.get_marker() == "."]
        np.testing.assert_allclose(curve.get_xdata(), rows[".focal"])
        np.testing.assert_allclose(curve.get_ydata(), rows[".zeta"])
        seg = segments(ax)  # the interval ends: vertical segments from ζ = 0 to ∓z
        assert seg.shape == (2, 2, 2)
        np.testing.assert_allclose(seg[:, 0, 0], prof.intervals[(name, 0.95)])
        np.testing.assert_allclose(seg[:, 1, 1], [-norm.ppf(0.975), norm.ppf(0.975)])
        assert len([ln for ln in ax.get_lines() if ln.get_linestyle() == ":"]) == 10  # ±z at 5 levels
    fig = m.plot_profile(prof, which=".sigma", absolute=True)
    (ax,) = [ax for ax in fig.axes if ax.get_visible()]
    (curve,) = [ln for ln in ax.get_lines() if ln.get_marker() == "."]
    assert np.all(curve.get_ydata() >= 0)


def test_a_missing_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    m = sleep()
    for draw in (m.plot_ranef, m.plot_qq_ranef, m.plot_residuals):
        with pytest.raises(ImportError, match=r"pip install 'sparselmm\[plot\]'"):
            draw()


def _glmer_fit() -> sparselmm.glmm.GlmerResult:
    """A binomial fit with random intercepts and slopes: 30 groups of 12 rows, simulated."""
    if "glmer" not in _cache:
        rng = np.random.default_rng(22)
        g = np.repeat([f"g{i:02d}" for i in range(30)], 12)
        x = rng.normal(size=g.size)
        b = rng.normal(size=(30, 2)) * [0.9, 0.4]
        idx = np.arange(g.size) // 12
        eta = -0.2 + 0.8 * x + b[idx, 0] + b[idx, 1] * x
        y = rng.binomial(1, 1 / (1 + np.exp(-eta)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _cache["glmer"] = sparselmm.glmer("y ~ x + (x | g)", {"y": y, "x": x, "g": g}, family="binomial")
    return _cache["glmer"]


def test_glmer_plots_draw_its_modes_and_residuals():
    # the plots read ranef/fitted/residuals of the shared result base, so a glmer fit draws as an lmer fit does
    m = _glmer_fit()
    re = m.ranef(cond_var=True)["g"]
    fig = m.plot_ranef()
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2
    order = np.argsort(re.iloc[:, 0].to_numpy(), kind="stable")
    z = norm.ppf(0.975)
    for ax, col in zip(axes, re.columns):
        (pts,) = points(ax)
        x, y = pts.get_data()
        np.testing.assert_allclose(x, re[col].to_numpy()[order])
        np.testing.assert_array_equal(y, np.arange(30))
        half = z * np.sqrt(re.attrs["cond_var"][order, list(re.columns).index(col), list(re.columns).index(col)])
        np.testing.assert_allclose(segments(ax)[:, 1, 0] - segments(ax)[:, 0, 0], 2 * half)
        assert ax.get_title() == f"g: {col}"
    fig = m.plot_qq_ranef(group="g")
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 2
    fig = m.plot_residuals()
    (ax,) = fig.axes
    (pts,) = points(ax)
    np.testing.assert_allclose(pts.get_data()[0], m.fitted())  # μ̂ on the response scale, as lme4's plot(m)
    np.testing.assert_allclose(pts.get_data()[1], m.residuals("pearson"))
    assert ax.get_ylabel() == "Pearson residuals"
    m.plot_residuals(type="working")
    assert plt.gcf().axes[0].get_ylabel() == "Working residuals"
