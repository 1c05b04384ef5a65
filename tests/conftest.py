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


@pytest.fixture
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
