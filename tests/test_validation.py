"""Every validation case against lme4's committed reference JSON (validation/reference, made by
validation/run_lme4.R with R 4.2.2 / lme4 1.1-31). Tolerances: validation/compare.py TOLERANCES.
``nox -s validate`` runs the same comparison against a live refit in R."""

import json

import pytest
from compare import REFERENCE_DIR, compare_case, load_cases

CASES = load_cases()


def _params():
    for case in CASES:
        marks = [pytest.mark.slow] if case.get("slow") else []
        yield pytest.param(case, id=case["id"], marks=marks)


def test_case_list_is_large_enough():
    assert len(CASES) >= 30
    assert len({c["id"] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", list(_params()))
def test_case_matches_lme4(case):
    ref = json.loads((REFERENCE_DIR / f"{case['id']}.json").read_text())
    # the slow InstEval case checks only the fixed-theta deviance here (its fit is in test_lmer.py)
    result = compare_case(case, ref, fit=not case.get("slow"))
    assert result.ok, f"{case['id']}: " + "; ".join(result.failures)
    assert result.diffs["devfun"] <= 1e-9
