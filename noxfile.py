"""Project sessions: ``nox`` (tests), ``nox -s lint``, ``nox -s validate`` (live R), ``nox -s bench``."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent


def scikit_sparse_requirement() -> str:
    """scikit-sparse 0.5 needs SuiteSparse >= 7; with the SuiteSparse 5 of Debian 12 use 0.4.x."""
    for header in (
        "/usr/include/suitesparse/SuiteSparse_config.h",
        "/usr/local/include/suitesparse/SuiteSparse_config.h",
    ):
        path = Path(header)
        if path.exists():
            match = re.search(r"#define\s+SUITESPARSE_MAIN_VERSION\s+(\d+)", path.read_text())
            if match and int(match.group(1)) < 7:
                return "scikit-sparse>=0.4.12,<0.5"
    return "scikit-sparse>=0.4.12"


def install(session: nox.Session, extras: str) -> None:
    session.install(scikit_sparse_requirement(), "-e", f".[{extras}]")


@nox.session
def tests(session: nox.Session) -> None:
    """Unit tests and the lme4 comparison against the committed reference JSON (no R needed)."""
    install(session, "test")
    session.run("pytest", "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and format check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", "sparselmm", "tests")


@nox.session
def validate(session: nox.Session) -> None:
    """Refit every validation case live in R (lme4, lmerTest, pbkrtest), compare, write validation/REPORT*.md."""
    install(session, "test")
    if shutil.which("Rscript") is None:
        session.error(
            "Rscript not found: install R, lme4, lmerTest and pbkrtest (apt-get install -y r-base-core r-cran-lme4 "
            "r-cran-lmertest r-cran-pbkrtest r-cran-jsonlite)."
        )
    live = session.create_tmp() + "/reference"
    session.run("Rscript", "validation/run_lme4.R", "--out", live, external=True)
    session.run("python", "validation/compare.py", "--reference", live, "--report", "validation/REPORT.md")
    # inference (issue #10): lmerTest's Satterthwaite and pbkrtest's Kenward-Roger, refitted live
    live_inf = session.create_tmp() + "/reference_inference"
    session.run("Rscript", "validation/run_lmertest.R", "--out", live_inf, external=True)
    report = "validation/REPORT_INFERENCE.md"
    session.run("python", "validation/compare_inference.py", "--reference", live_inf, "--report", report)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks beside lme4 (and statsmodels); writes BENCHMARKS.md. Pass --quick for a short run."""
    install(session, "bench")
    session.run("python", "benchmarks/run.py", *session.posargs)
