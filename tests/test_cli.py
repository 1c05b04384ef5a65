"""The ``sparselmm`` console command."""

import pytest

from sparselmm import datasets
from sparselmm.cli import main


def test_fit_bundled_dataset(capsys):
    assert main(["fit", "--dataset", "sleepstudy", "Reaction ~ Days + (Days | Subject)"]) == 0
    out = capsys.readouterr().out
    assert "REML criterion at convergence: 1743.6" in out
    assert "fit time:" in out and "evaluations by lbfgsb" in out  # block-Schur factor: exact gradient


def test_fit_csv_ml(tmp_path, capsys):
    path = tmp_path / "dye.csv"
    datasets.load("Dyestuff").to_csv(path, index=False)
    assert main(["fit", "--data", str(path), "--ml", "Yield ~ 1 + (1 | Batch)"]) == 0
    out = capsys.readouterr().out
    assert "maximum likelihood" in out and "AIC" in out


def test_errors_are_reported_not_raised(capsys):
    assert main(["fit", "--dataset", "nope", "y ~ (1 | g)"]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err
    assert main(["fit", "--dataset", "sleepstudy", "Reaction ~ Days"]) == 2
    assert "No random-effects terms" in capsys.readouterr().err


def test_datasets_listing(capsys):
    assert main(["datasets"]) == 0
    assert "InstEval" in capsys.readouterr().out


def test_usage_error():
    with pytest.raises(SystemExit):
        main(["fit"])


def test_version(capsys):
    import sparselmm

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"sparselmm {sparselmm.__version__}"


def test_every_option_has_help():
    import argparse

    from sparselmm.cli import _parser

    parsers = [_parser()]
    for p in list(parsers):
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
    assert {p.prog for p in parsers} == {"sparselmm", "sparselmm fit", "sparselmm glmer", "sparselmm datasets"}
    for p in parsers:
        for action in p._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help, f"{p.prog} {action.option_strings or action.dest} has no help text"


def test_glmer_family(tmp_path, capsys):
    import json
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root / "validation"))
    import compare_glmm

    cases = {c["id"]: c for c in json.loads((root / "validation" / "glmm_cases.json").read_text())}
    path = tmp_path / "cbpp.csv"
    compare_glmm.load(cases["cbpp_logit"]).to_csv(path, index=False)
    formula = "cbind(incidence, size - incidence) ~ C(period) + (1 | herd)"
    assert main(["glmer", "--data", str(path), "--family", "binomial", "-q", formula]) == 0
    out = capsys.readouterr().out
    assert "Family: binomial  ( logit )" in out and "Number of obs: 56, groups:  herd, 15" in out
    assert "PIRLS iterations" in out
    # lme4 1.1-31's -2 log L is 184.0527 (tests/test_glmm.py::test_cbpp_published); the summary prints 184.1
    assert "184.1" in out
    assert (
        main(["glmer", "--data", str(path), "--family", "poisson", "--link", "log", "-q", "incidence ~ 1 + (1 | herd)"])
        == 0
    )
    assert "Family: poisson  ( log )" in capsys.readouterr().out
    assert main(["glmer", "--data", str(path), "--family", "binomal", formula]) == 2
    assert "Unknown family 'binomal'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["glmer", "--data", str(path), formula])  # --family is required


def test_fit_ddf(capsys):
    args = ["fit", "--dataset", "sleepstudy", "-q", "Reaction ~ Days + (Days | Subject)"]
    assert main([*args, "--ddf", "Kenward-Roger"]) == 0
    assert "t-tests use Kenward-Roger's method" in capsys.readouterr().out
    assert main([*args, "--ddf", "lme4"]) == 0
    out = capsys.readouterr().out
    assert "Pr(>|t|)" not in out and "t value" in out
    with pytest.raises(SystemExit):
        main([*args, "--ddf", "nope"])
    assert "ddf='nope' is not known" in capsys.readouterr().err
    # Kenward-Roger is defined for REML fits only: the summary says so and shows lme4's table
    assert main([*args, "--ml", "--ddf", "kr"]) == 0
    assert "Kenward-Roger df not available: Kenward-Roger's method is only defined for REML fits" in (
        capsys.readouterr().out
    )


def test_fit_memory_limit(capsys):
    assert main(["fit", "--dataset", "sleepstudy", "--memory-limit", "1KB", "Reaction ~ Days + (Days | Subject)"]) == 2
    err = capsys.readouterr().err
    assert "memory_limit=1.0 KB" in err and "block Schur complement" in err
    assert main(["fit", "--dataset", "sleepstudy", "--memory-limit", "1GB", "Reaction ~ Days + (Days | Subject)"]) == 0
    assert "REML criterion at convergence: 1743.6" in capsys.readouterr().out
