"""What several test modules share: paths, the cbpp formula, a warnings-silenced call, the cached fits of
validation/reference_ci's cases, the contrast tests' frames and the central-difference Jacobian of a covariance
structure's factor. Import it as ``from helpers import ...`` (pytest puts tests/ on ``sys.path``)."""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import sparselmm
from sparselmm.covstruct import tril_by_column

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "validation" / "data"
TEST_DATA = ROOT / "tests" / "data"
REFERENCE_CI = ROOT / "validation" / "reference_ci"
CI_CASES = json.loads((REFERENCE_CI / "cases.json").read_text())
CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"


def quiet_call(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with every warning silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


_ci_fits: dict[str, sparselmm.LmerResult] = {}


def reference_ci_fit(case_id: str) -> sparselmm.LmerResult:
    """The reference_ci case's model fitted by sparselmm (cached: tests never mutate fits)."""
    if case_id not in _ci_fits:
        cs = CI_CASES["models"][case_id]
        src = cs["data"]
        data = sparselmm.datasets.load(src[8:]) if src.startswith("dataset:") else pd.read_csv(ROOT / src[4:])
        _ci_fits[case_id] = quiet_call(
            sparselmm.lmer, cs["formula"], data, reml=cs["reml"], weights=cs.get("weights"), offset=cs.get("offset")
        )
    return _ci_fits[case_id]


def structure_fd_jacobian(s, params: np.ndarray, h: float = 1e-7) -> np.ndarray:
    """``∂ tril(factor) / ∂ params`` of the covariance structure ``s`` by central differences (column by column
    of the lower triangle, as ``s.jacobian``)."""
    r, c = tril_by_column(s.k)
    out = np.empty((r.size, params.size))
    for m in range(params.size):
        e = np.zeros(params.size)
        e[m] = h
        out[:, m] = (s.factor(params + e)[r, c] - s.factor(params - e)[r, c]) / (2 * h)
    return out


@functools.cache
def contrast_frames() -> dict[str, pd.DataFrame]:
    """The data of tests/data/contrasts_lmertest.json's cases (as tests/data/make_contrasts_lmertest.R builds them),
    by name."""
    sim = pd.read_csv(TEST_DATA / "contrasts_sim.csv")
    sim["x2"] = 2 * sim["x"] + 1  # as in the R script: collinear with the intercept and x
    missing = sim[~((sim["f3"] == "c") & (sim["f2"] == "lo"))].reset_index(drop=True)
    return {
        "cake": sparselmm.datasets.load("cake"),
        "sleepstudy": sparselmm.datasets.load("sleepstudy"),
        "sim": sim,
        "sim_missing": missing,
    }
