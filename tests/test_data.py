"""Bad input is refused with a clear error from sparselmm's own classes; accepted containers and dtypes work."""

import numpy as np
import pandas as pd
import pytest

import sparselmm
from sparselmm import DataError, ModelSpecError, SparseLMMError, lmer


@pytest.fixture(scope="module")
def df():
    rng = np.random.default_rng(1)
    n = 60
    out = pd.DataFrame(
        {"y": rng.normal(size=n), "x": rng.normal(size=n), "g": np.repeat([f"g{i}" for i in range(12)], 5)}
    )
    out["y"] += np.repeat(rng.normal(size=12), 5)
    return out


@pytest.fixture(scope="module")
def base(df):
    return lmer("y ~ x + (1 | g)", df)


def test_hierarchy():
    assert issubclass(DataError, SparseLMMError) and issubclass(DataError, ValueError)
    assert issubclass(sparselmm.FormulaError, ValueError) and issubclass(ModelSpecError, SparseLMMError)
    assert issubclass(sparselmm.ConvergenceWarning, UserWarning)
    assert issubclass(sparselmm.SingularFitWarning, UserWarning)


@pytest.mark.parametrize(
    "formula, message",
    [
        ("y ~ z + (1 | g)", r"\['z'\].*not columns of the data"),
        ("y ~ x + (1 | h)", r"\['h'\]"),
        ("y ~ foo(x) + (1 | g)", r"\['foo'\]"),
    ],
)
def test_unknown_names(df, formula, message):
    with pytest.raises(DataError, match=message):
        lmer(formula, df)


def test_empty_data(df):
    with pytest.raises(DataError, match="no rows"):
        lmer("y ~ x + (1 | g)", df.iloc[:0])


@pytest.mark.parametrize("data", [[1, 2], "table.csv", np.zeros((3, 3)), None])
def test_non_dataframe_rejected(data):
    with pytest.raises(DataError, match="must be a pandas DataFrame"):
        lmer("y ~ x + (1 | g)", data)


def test_dict_and_polars_accepted(df, base):
    assert lmer("y ~ x + (1 | g)", df.to_dict("list")).objective == pytest.approx(base.objective, rel=1e-12)
    pl = pytest.importorskip("polars")
    assert lmer("y ~ x + (1 | g)", pl.from_dict(df.to_dict("list"))).objective == pytest.approx(
        base.objective, rel=1e-12
    )


def test_missing_values_dropped_and_counted(df):
    d = df.copy()
    d.loc[3, "y"], d.loc[5, "g"], d.loc[7, "x"] = np.nan, None, np.nan
    m = lmer("y ~ x + (1 | g)", d)
    assert m.nobs == 57 and m.design.data.n_dropped == 3
    assert "3 observations deleted due to missingness" in str(m.summary())
    ref = lmer("y ~ x + (1 | g)", df.drop(index=[3, 5, 7]))
    assert m.objective == pytest.approx(ref.objective, rel=1e-12)
    with pytest.raises(DataError, match=r"y: 1, x: 1, g: 1.*missing='drop'"):
        lmer("y ~ x + (1 | g)", d, missing="raise")


def test_missing_weights_dropped(df):
    m = lmer("y ~ x + (1 | g)", df, weights=np.r_[np.nan, np.ones(59)])
    assert m.nobs == 59


def test_all_missing(df):
    with pytest.raises(DataError, match="No complete rows"):
        lmer("y ~ x + (1 | g)", df.assign(y=np.nan))


def test_infinite_values(df):
    with pytest.raises(DataError, match=r"'x' has 1 infinite"):
        lmer("y ~ x + (1 | g)", df.assign(x=np.r_[np.inf, df.x[1:]]))
    with pytest.raises(DataError, match="weights has infinite"):
        lmer("y ~ x + (1 | g)", df, weights=np.r_[np.inf, np.ones(59)])


def test_non_numeric_response(df):
    with pytest.raises(DataError, match="response 'g' must be numeric"):
        lmer("g ~ x + (1 | g)", df)


@pytest.mark.parametrize(
    "weights, message",
    [
        (-np.ones(60), "must be positive"),
        (np.r_[1.0, -1.0, np.ones(58)], "1 are negative, the first at row 1"),  # zero weights: test_messages.py
        (np.ones(3), "length 3 but the data has 60"),
        (["a"] * 60, "must be numeric"),
        ("nope", "not a column"),
    ],
)
def test_bad_weights(df, weights, message):
    with pytest.raises(DataError, match=message):
        lmer("y ~ x + (1 | g)", df, weights=weights)


def test_bad_offset(df):
    with pytest.raises(DataError, match="offset has length"):
        lmer("y ~ x + (1 | g)", df, offset=np.ones(5))


def test_bad_arguments(df):
    with pytest.raises(DataError, match="missing='omit'"):
        lmer("y ~ x + (1 | g)", df, missing="omit")
    with pytest.raises(ModelSpecError, match="optimizer='foo'"):
        lmer("y ~ x + (1 | g)", df, optimizer="foo")
    with pytest.raises(ModelSpecError, match="start has 2 values"):
        lmer("y ~ x + (1 | g)", df, start=[1, 2])
    with pytest.raises(ModelSpecError, match="negative values for diagonal theta"):
        lmer("y ~ x + (1 | g)", df, start=[-1.0])
    with pytest.raises(ModelSpecError, match="ordering='fast'"):
        lmer("y ~ x + (1 | g)", df, ordering="fast")


def test_unidentifiable_models(df):
    with pytest.raises(ModelSpecError, match="60 levels for 60 observations"):
        lmer("y ~ x + (1 | id)", df.assign(id=np.arange(60)))
    with pytest.raises(ModelSpecError, match="60 random effects.*unidentifiable"):
        lmer("y ~ x + (1 + x | g2)", df.assign(g2=np.repeat(np.arange(30), 2)))
    with pytest.raises(ModelSpecError, match="only one level"):
        lmer("y ~ x + (1 | c)", df.assign(c="a"))


def test_constant_response(df):
    with pytest.raises(ModelSpecError, match="constant or exactly fitted"):
        lmer("y ~ x + (1 | g)", df.assign(y=3.0))
    with pytest.raises(ModelSpecError, match="constant or exactly fitted"):
        lmer("y ~ x + (1 | g)", df.assign(y=2 * df.x + 1))


def test_grouping_dtypes_give_the_same_fit(df, base):
    codes = df.g.str[1:].astype(int)
    variants = {
        "int": codes,
        "float": codes.astype(float),
        "categorical with unused": pd.Categorical(df.g, categories=[*sorted(df.g.unique()), "unused"]),
        "string": df.g.astype("string"),
        "nullable Int64": pd.array(codes, dtype="Int64"),
        "object": df.g.astype(object),
    }
    for name, col in variants.items():
        m = lmer("y ~ x + (1 | h)", df.assign(h=col))
        assert m.objective == pytest.approx(base.objective, rel=1e-10), name
        assert m.ngroups == {"h": 12}, name


@pytest.mark.filterwarnings("ignore::sparselmm.SingularFitWarning")
def test_boolean_grouping_and_predictor(df):
    m = lmer("y ~ b + (1 | g)", df.assign(b=np.arange(60) % 2 == 0))
    assert len(m.fixef) == 2
    m2 = lmer("y ~ x + (1 | b)", df.assign(b=np.arange(60) % 2 == 0))
    assert m2.ngroups == {"b": 2}


def test_nullable_predictor_with_missing(df):
    m = lmer("y ~ xi + (1 | g)", df.assign(xi=pd.array([None, *(np.arange(59) % 7)], dtype="Int64")))
    assert m.nobs == 59


def test_extreme_scales(df, base):
    for scale in (1e12, 1e-8):
        m = lmer("y ~ x + (1 | g)", df.assign(y=df.y * scale))
        np.testing.assert_allclose(m.theta, base.theta, rtol=1e-6, atol=1e-7)
        assert m.sigma == pytest.approx(base.sigma * scale, rel=1e-7)


def test_extreme_theta_is_a_rejected_step_not_a_crash(df):
    f = sparselmm.deviance_function("y ~ x + (1 | g)", df)
    assert f([1e300]) == np.inf
    assert np.isfinite(f([0.0])) and np.isfinite(f([1e-300]))
    with pytest.raises(ModelSpecError, match="theta must have 1 elements"):
        f([1.0, 2.0])


def test_caller_data_untouched_and_fits_deterministic(df):
    d = df.assign(c=pd.Categorical(df.g, categories=[*sorted(df.g.unique()), "unused"]))
    before = d.copy(deep=True)
    a = lmer("y ~ x + (1 | c)", d)
    b = lmer("y ~ x + (1 | c)", d)
    pd.testing.assert_frame_equal(d, before)
    assert list(d.c.cat.categories)[-1] == "unused"
    assert a.objective == b.objective and np.array_equal(a.theta, b.theta)
