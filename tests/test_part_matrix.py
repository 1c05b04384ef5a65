"""The direct build of plain numeric formula parts (design._part_matrix) against formulaic's model matrix,
the spec built on demand, and the column copy of data.clean_data."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from formulaic import model_matrix

import sparselmm
from sparselmm.design import SpecOnDemand, _part_matrix


@pytest.fixture
def frame():
    rng = np.random.default_rng(3)
    return pd.DataFrame(
        {
            "a": rng.normal(size=30),
            "b": rng.integers(0, 5, 30),
            "c": rng.normal(size=30).astype(np.float32),
            "f": pd.Categorical(rng.choice(["u", "v", "w"], 30)),
            "t": rng.random(30) > 0.5,
        }
    )


@pytest.mark.parametrize(
    "text", ["1", "a", "b + a", "a + b", "0 + b + a", "b + 1 + a", "a + a", "0 + a", "b + 0 + a", "1 + c + b"]
)
def test_plain_parts_equal_formulaic(frame, text):
    mat, names, spec = _part_matrix(text, frame, "part")
    assert isinstance(spec, SpecOnDemand)  # built directly
    mm = model_matrix(text, frame)
    assert names == list(mm.columns)
    np.testing.assert_array_equal(mat, np.asarray(mm, dtype=float))
    assert list(spec.column_names) == names  # the formulaic spec, built on demand from the same rows


@pytest.mark.parametrize("text", ["a + f", "t", "a:b", "a - 1", "np.log(a + 3)", "1 + 0", "0 + 1 + a", "C(b)"])
def test_other_parts_go_to_formulaic(frame, text):
    mat, names, spec = _part_matrix(text, frame, "part")
    assert not isinstance(spec, SpecOnDemand)
    mm = model_matrix(text, frame)
    assert names == list(mm.columns)
    np.testing.assert_array_equal(mat, np.asarray(mm, dtype=float))


def test_fit_with_direct_columns_predicts_pickles_and_compares(sleepstudy):
    m = sparselmm.lmer("Reaction ~ Days + (Days | Subject)", sleepstudy)
    assert isinstance(m.design.fixed_spec, SpecOnDemand)
    # lme4 1.1-31: REML criterion 1743.628, fixef (251.405, 10.467) (validation/reference, sleepstudy case)
    assert m.objective == pytest.approx(1743.6282720, abs=1e-6)
    np.testing.assert_allclose(m.fixef.to_numpy(), [251.405105, 10.467286], rtol=1e-6)
    new = pd.DataFrame({"Days": [0.0, 5.0], "Subject": pd.Categorical(["308", "309"])})
    expected = m.fixef.iloc[0] + m.fixef.iloc[1] * new.Days.to_numpy()
    np.testing.assert_allclose(m.predict(new, re_form="NA"), expected)
    back = pickle.loads(pickle.dumps(m))
    np.testing.assert_allclose(back.predict(new), m.predict(new))
    assert not isinstance(back.design.fixed_spec, SpecOnDemand)  # pickled as formulaic's own spec


def test_clean_data_copies_and_refuses_duplicated_columns(sleepstudy):
    data = sleepstudy.copy()
    m = sparselmm.lmer("Reaction ~ Days + (1 | Subject)", data)
    data.loc[0, "Days"] = 100.0  # the caller edits the data after the fit: the fit's rows do not change
    assert m.design.data.frame.loc[0, "Days"] == sleepstudy.loc[0, "Days"]
    dup = pd.concat([sleepstudy, sleepstudy[["Days"]]], axis=1)
    with pytest.raises(sparselmm.DataError, match="'Days' appears more than once"):
        sparselmm.lmer("Reaction ~ Days + (1 | Subject)", dup)
