"""Progress of long fits: quiet by default in the library, on after 2 s in the CLI, to stderr."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest

import sparselmm
from sparselmm import cli
from sparselmm.optimize import optimize_theta
from sparselmm.progress import Progress, as_progress

FORMULA = "Reaction ~ Days + (Days | Subject)"
LINE = re.compile(r"^\[\s*\d+\.\d\d s\] ")


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_library_is_quiet_by_default(sleepstudy, capsys):
    sparselmm.lmer(FORMULA, sleepstudy)
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_verbose_reports_setup_then_every_evaluation(sleepstudy, capsys):
    m = sparselmm.lmer(FORMULA, sleepstudy, verbose=True)
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert all(LINE.match(line) for line in lines)
    text = "\n".join(lines)
    assert "lmer: Reaction ~ Days + (Days | Subject) (REML)" in lines[0]
    for step in ("set-up: building X and Z", "set-up: design: 180 rows; X 180 x 2; Z 36 columns", "factor ready"):
        assert step in text
    evals = [line for line in lines if "evaluation " in line]
    assert len(evals) == m.optinfo.n_evals_total
    assert "REML criterion" in evals[0]
    best = float(re.search(r"best (\S+)\)", evals[-1]).group(1))
    assert best == pytest.approx(m.objective, rel=1e-9)
    assert "convergence checks" in text and lines[-1].split("] ", 1)[1].startswith("done: REML criterion 1743.6")
    ml = sparselmm.lmer(FORMULA, sleepstudy, reml=False, verbose=True)
    assert "evaluation 1: deviance" in capsys.readouterr().err and ml.objective > 0


def test_progress_does_not_change_the_fit(sleepstudy):
    a = sparselmm.lmer(FORMULA, sleepstudy)
    b = sparselmm.lmer(FORMULA, sleepstudy, verbose=Progress(stream=io.StringIO()))
    np.testing.assert_array_equal(a.theta, b.theta)
    assert a.optinfo.n_evals_total == b.optinfo.n_evals_total
    f = sparselmm.deviance_function(FORMULA, sleepstudy)
    p = Progress(stream=io.StringIO(), criterion="REML criterion")
    x1, f1, i1 = optimize_theta(f, f.design.theta0, f.design.lower, "bobyqa")
    x2, f2, i2 = optimize_theta(f, f.design.theta0, f.design.lower, "bobyqa", progress=p)
    np.testing.assert_array_equal(x1, x2)
    assert p.n_evals == i2.n_evals_total and "optimising 3 parameter(s) with bobyqa" in p.lines[0]


def test_delay_holds_back_lines_then_replays_the_phases():
    clock, stream = FakeClock(), io.StringIO()
    p = Progress(stream=stream, delay=2.0, interval=1.0, criterion="deviance", clock=clock)
    p.start("fit")
    clock.t += 0.5
    p.phase("set-up")
    for _ in range(3):
        clock.t += 0.2
        p.evaluation(10.0)
    assert stream.getvalue() == ""  # a fit that ends now prints nothing
    clock.t = 100.0 + 2.5
    p.evaluation(9.0)  # past the delay: the phases so far, then this evaluation
    lines = stream.getvalue().splitlines()
    assert [line.split("] ", 1)[1] for line in lines] == [
        "fit",
        "set-up",
        "evaluation 4: deviance 9.000000 (best 9.000000)",
    ]
    clock.t += 0.3
    p.evaluation(8.0)  # within the interval: skipped
    clock.t += 0.3
    p.evaluation(7.0)
    clock.t += 0.5
    p.evaluation(7.5)
    last = stream.getvalue().splitlines()[-1]
    assert last.endswith("evaluation 7: deviance 7.500000 (best 7.000000, 2 more since the last line)")
    p.phase("checks")  # phases are never skipped
    assert stream.getvalue().splitlines()[-1].endswith("] checks")
    p.done("done")
    assert p.lines[-1].endswith("] done") and len(p.lines) == 6


def test_done_is_silent_for_a_quick_fit():
    clock, stream = FakeClock(), io.StringIO()
    p = Progress(stream=stream, delay=2.0, clock=clock)
    p.start("fit")
    p.evaluation(1.0)
    clock.t += 1.0
    p.done("done")
    assert stream.getvalue() == ""


def test_begin_keeps_a_clock_the_caller_started():
    clock = FakeClock()
    p = Progress(stream=io.StringIO(), clock=clock)
    p.start("reading")
    clock.t += 3.0
    p.begin("fitting")
    assert p.lines[-1] == "[    3.00 s] fitting"
    q = Progress(stream=io.StringIO(), clock=clock)
    q.begin("fitting")
    assert q.lines == ["[    0.00 s] fitting"]


def test_verbose_values():
    assert as_progress(False, "x") is None and as_progress(0, "x") is None and as_progress(None, "x") is None
    assert isinstance(as_progress(True, "x"), Progress)
    p = Progress()
    assert as_progress(p, "deviance") is p and p.criterion == "deviance"
    with pytest.raises(sparselmm.ModelSpecError, match="verbose must be"):
        as_progress("loud", "x")
    with pytest.raises(sparselmm.ModelSpecError, match="verbose must be"):
        as_progress(-1, "x")
    with pytest.raises(sparselmm.ModelSpecError, match="delay >= 0"):
        Progress(delay=-1)
    with pytest.raises(sparselmm.ModelSpecError, match="verbose must be"):
        sparselmm.lmer(FORMULA, sparselmm.datasets.load("sleepstudy"), verbose="yes")


def test_cli_quiet_for_a_quick_fit_and_on_request(capsys):
    assert cli.main(["fit", "--dataset", "sleepstudy", FORMULA]) == 0
    out, err = capsys.readouterr()
    assert "REML criterion at convergence" in out and err == ""
    assert cli.main(["fit", "--verbose", "--dataset", "sleepstudy", FORMULA]) == 0
    out, err = capsys.readouterr()
    assert "sparselmm fit: reading sleepstudy" in err and "read 180 rows x 3 columns" in err
    assert "evaluation 1: REML criterion" in err and "done: REML criterion" in err
    assert "evaluation 1:" not in out and "] " not in out  # the summary stays clean on stdout
    assert cli.main(["fit", "-q", "--dataset", "sleepstudy", FORMULA]) == 0
    assert capsys.readouterr().err == ""


def test_cli_reports_a_long_fit(monkeypatch, capsys):
    """A fit past the delay prints (as the 1e6-row benchmark does after 2 s); simulated with no delay."""
    monkeypatch.setattr(cli, "PROGRESS_DELAY", 0.0)
    monkeypatch.setattr(cli, "PROGRESS_INTERVAL", 3600.0)
    assert cli.main(["fit", "--dataset", "Penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)"]) == 0
    err = capsys.readouterr().err
    evals = [line for line in err.splitlines() if "evaluation " in line]
    assert len(evals) == 1  # the interval limits the evaluation lines
    assert "set-up: factor ready" in err and "done:" in err


def test_mixedlm_disp_reports_progress(sleepstudy, capsys):
    res = sparselmm.mixedlm("Reaction ~ Days", sleepstudy, groups="Subject").fit(disp=True)
    err = capsys.readouterr().err
    assert "MixedLM fit (REML): 180 rows, 18 groups" in err and "evaluation 1: -2 REML log-likelihood" in err
    quiet = sparselmm.mixedlm("Reaction ~ Days", sleepstudy, groups="Subject").fit()
    assert capsys.readouterr().err == "" and quiet.llf == pytest.approx(res.llf, rel=1e-12)


# ---- progress bars: one policy (sparselmm.progress.progress_bar), issue 23 item 10 ---------------------
def test_progress_policy(monkeypatch):
    from sparselmm import progress as prog

    assert prog.show_progress(False) is None and prog.show_progress(True) == 0.0
    monkeypatch.setattr(prog, "_stderr_is_terminal", lambda: False)
    assert prog.show_progress(None) is None  # redirected stderr (a log, CI, pytest): no bar
    monkeypatch.setattr(prog, "_stderr_is_terminal", lambda: True)
    assert prog.show_progress(None) == prog.PROGRESS_DELAY == 2.0  # a terminal: after 2 s
    for bad in ("auto", 2, -1.0):
        with pytest.raises(sparselmm.ModelSpecError, match="progress must be None"):
            prog.show_progress(bad)
    assert prog.progress_bar(False, 10, "x") is None


@pytest.fixture(scope="module")
def quick_fit():
    return sparselmm.lmer(FORMULA, sparselmm.datasets.load("sleepstudy"))


def _short_runs(m, **kw):
    m.bootstrap(3, seed=1, **kw)
    m.profile(which=".sigma", grid=False, **kw)
    sparselmm.lmer("Reaction ~ Days + (1 | Subject)", m.design.data.frame).bootstrap_lrt(m, nsim=2, seed=1, **kw)


def test_short_work_prints_no_bar_by_default(quick_fit, capsys, monkeypatch):
    from sparselmm import progress as prog

    _short_runs(quick_fit)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(prog, "_stderr_is_terminal", lambda: True)  # even on a terminal: tqdm's delay=2
    _short_runs(quick_fit)
    assert capsys.readouterr().err == ""
    _short_runs(quick_fit, progress=False)
    assert capsys.readouterr().err == ""


def test_progress_true_always_shows_the_bars(quick_fit, capsys):
    _short_runs(quick_fit, progress=True)
    err = capsys.readouterr().err
    for desc in ("bootstrap:", "profile:", "bootstrap LRT:"):
        assert desc in err


def test_text_bar_without_tqdm(monkeypatch, capsys):
    import sys

    from sparselmm import progress as prog

    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # import fails: tqdm not installed
    clock = FakeClock()
    bar = prog.progress_bar(True, 4, "bootstrap", unit="rep")
    assert isinstance(bar, prog._TextBar)
    bar.clock = clock
    bar.t0 = clock.t
    for _ in range(4):
        clock.t += 0.6
        bar.update(1)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("bootstrap: 1/4 rep") and lines[-1].startswith("bootstrap: 4/4 rep (2.4 s")
    assert len(lines) == 3  # at most one line a second, and the last
    quiet = prog._TextBar(4, "x", "rep", delay=2.0, clock=clock)
    quiet.update(4)
    quiet.close()
    assert capsys.readouterr().err == ""  # an automatic bar stays silent for work under 2 s
