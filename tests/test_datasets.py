"""Bundled lme4 datasets keep R's names, types and level order (exported by datasets/export_from_r.R)."""

import pandas as pd
import pytest

from sparselmm import DataError, datasets


def test_all_listed_datasets_load():
    assert set(datasets.list_datasets()) == {
        "sleepstudy",
        "Dyestuff",
        "Dyestuff2",
        "Penicillin",
        "Pastes",
        "InstEval",
        "cake",
    }
    sizes = {
        "sleepstudy": 180,
        "Dyestuff": 30,
        "Dyestuff2": 30,
        "Penicillin": 144,
        "Pastes": 60,
        "InstEval": 73421,
        "cake": 270,
    }
    for name, n in sizes.items():
        assert len(datasets.load(name)) == n


def test_types_and_levels_follow_r():
    s = datasets.load("sleepstudy")
    assert list(s.columns) == ["Reaction", "Days", "Subject"]
    assert isinstance(s.Subject.dtype, pd.CategoricalDtype) and list(s.Subject.cat.categories[:3]) == [
        "308",
        "309",
        "310",
    ]
    cake = datasets.load("cake")
    assert cake.temperature.cat.ordered
    assert "lme4" in datasets.describe("InstEval")["source"]


def test_case_insensitive_and_fresh_copies():
    a = datasets.load("DYESTUFF")
    a.loc[0, "Yield"] = -1
    assert datasets.load("Dyestuff").loc[0, "Yield"] != -1


def test_unknown_dataset():
    with pytest.raises(DataError, match="available datasets"):
        datasets.load("iris")
