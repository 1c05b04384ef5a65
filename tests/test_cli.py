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
