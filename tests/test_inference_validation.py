"""Every non-slow inference case against lmerTest's and pbkrtest's committed references
(validation/reference_inference, made by validation/run_lmertest.R with R 4.2.2, lme4 1.1-31,
lmerTest 3.1-3, pbkrtest 0.5.2). Each case is compared at lme4's θ̂ and as fitted by sparselmm;
tolerances: validation/compare_inference.py TOLERANCES. The slow InstEval cases run in
``python validation/compare_inference.py`` (``nox -s validate``)."""

import json

import numpy as np
import pytest
from compare_inference import REFERENCE_DIR, compare_case, load_cases

CASES = load_cases()
FAST = [c for c in CASES if not c.get("slow")]


def _ref(case):
    return json.loads((REFERENCE_DIR / f"{case['id']}.json").read_text())


def test_case_list_covers_issue_10():
    assert len(CASES) >= 22
    assert len({c["id"] for c in CASES}) == len(CASES)
    formulas = " ".join(c["formula"] for c in CASES)
    assert "||" in formulas and "/" in formulas and "*" in formulas
    assert any(c["weights"] for c in CASES) and any(c["offset"] for c in CASES)
    assert any(c["reml"] for c in CASES) and any(not c["reml"] for c in CASES)
    assert any(c["kr"] for c in CASES)
    # Kenward-Roger only for unweighted REML fits (pbkrtest ignores prior weights)
    assert not any(c["kr"] and (c["weights"] or not c["reml"]) for c in CASES)
    ranks = [np.linalg.matrix_rank(np.array(k["L"], float)) < len(k["L"]) for c in CASES for k in c["contrasts"]]
    assert any(ranks), "at least one rank-deficient multi-row contrast"
    for c in CASES:
        rows = [len(k["L"]) for k in c["contrasts"]]
        assert 1 in rows and max(rows) > 1, c["id"]


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_reference_is_complete(case):
    """The committed reference answers every question the case asks, without R errors."""
    ref = _ref(case)
    assert not ref["errors"], ref["errors"]
    p = len(ref["fixef_names"])
    assert len(ref["coef_satterthwaite"]["df"]) == p
    assert ("coef_kr" in ref) == bool(case["kr"])
    assert len(ref["contest"]) == len(case["contrasts"])
    for con, rc in zip(case["contrasts"], ref["contest"]):
        assert all(len(row) == p for row in con["L"])
        assert rc["satterthwaite"] is not None and (rc.get("kr") is not None) == bool(case["kr"])
    assert sorted(ref["anova"]) == sorted(str(t) for t in case["anova_types"])


@pytest.mark.parametrize("case", FAST, ids=[c["id"] for c in FAST])
def test_case_matches_lmertest_and_pbkrtest(case):
    result = compare_case(case, _ref(case))
    assert result.ok, f"{case['id']}: " + "; ".join(result.failures)
