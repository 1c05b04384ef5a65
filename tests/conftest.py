import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "validation"))  # the shared case list and comparison (validation/compare.py)


@pytest.fixture(scope="session")
def sleepstudy():
    import sparselmm

    return sparselmm.datasets.load("sleepstudy")


@pytest.fixture(scope="session")
def cbpp_data():
    """lme4's cbpp (validation/data/glmm_cbpp.csv) with herd and period as factors (string codes), as the
    glmer validation cases read it; copy it before adding columns."""
    import pandas as pd

    d = pd.read_csv(ROOT / "validation" / "data" / "glmm_cbpp.csv")
    d["herd"] = d["herd"].astype(str)
    d["period"] = d["period"].astype(str)
    return d


@pytest.fixture
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
