"""Parsing lme4 formulas: expansion as reformulas does it, and errors that point at the problem."""

import pytest

from sparselmm import FormulaError
from sparselmm.formula import parse_formula


def terms(formula):
    return [str(t) for t in parse_formula(formula).random]


def test_simple_and_fixed_part():
    p = parse_formula("Reaction ~ Days + (Days | Subject)")
    assert p.response == "Reaction" and p.fixed == "Days"
    assert terms("Reaction ~ Days + (Days | Subject)") == ["(Days | Subject)"]


def test_double_bar_expands_like_lme4():
    assert terms("y ~ x + (1 + x || g)") == ["(1 | g)", "(0 + x | g)"]
    assert terms("y ~ (0 + x + z || g)") == ["(0 + x | g)", "(0 + z | g)"]


def test_nesting_order_and_names_follow_lme4():
    # lme4 (reformulas::findbars): (1|a/b/c) -> 1|c:(b:a), 1|b:a, 1|a
    assert terms("y ~ (1 | a/b/c)") == ["(1 | c:b:a)", "(1 | b:a)", "(1 | a)"]
    # (x||g/h) -> 1|h:g, 1|g, 0+x|h:g, 0+x|g
    assert terms("y ~ (x || g/h)") == ["(1 | h:g)", "(1 | g)", "(0 + x | h:g)", "(0 + x | g)"]


def test_interaction_grouping_and_several_terms():
    p = parse_formula("y ~ x*z - 1 + (1 | a:b) + (0 + x | g) + (1 | g)")
    assert p.fixed == "x*z - 1"
    assert [t.factors for t in p.random] == [("a", "b"), ("g",), ("g",)]


def test_no_fixed_part_means_intercept():
    assert parse_formula("y ~ (1 | g)").fixed == "1"


@pytest.mark.parametrize(
    "formula, message",
    [
        ("y ~ x + (1 | g", "never closed"),
        ("y ~ x + 1 | g)", "no matching"),
        ("y ~ x", "No random-effects terms"),
        ("", "empty"),
        ("   ", "empty"),
        ("y ~ x + 1 | g", "must stand inside"),
        ("y ~ (| g)", "nothing before the bar"),
        ("y ~ (1 | )", "no grouping factor"),
        ("y ~ (1 | g + h)", "not understood"),
        ("x + (1 | g)", "no '~'"),
        ("~ x + (1 | g)", "no response"),
        ("y ~ ", "nothing on the right"),
        ("y ~ x - (1 | g)", "cannot be subtracted"),
        ("y ~ (1 | g | h)", "more than one bar"),
    ],
)
def test_malformed_formulas(formula, message):
    with pytest.raises(FormulaError, match=message):
        parse_formula(formula)


def test_non_string_formula():
    with pytest.raises(FormulaError, match="must be a string"):
        parse_formula(42)


def test_error_points_at_the_problem():
    with pytest.raises(FormulaError) as err:
        parse_formula("y ~ x + (1 | g")
    assert "^" in str(err.value) and "y ~ x + (1 | g" in str(err.value)
