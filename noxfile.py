"""Project sessions: ``nox`` (tests), ``nox -s lint``, ``nox -s docs``, ``nox -s validate`` (R), ``nox -s bench``."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent


def suitesparse_version() -> int | None:
    """SuiteSparse's main version from the installed headers (None when they are not found)."""
    for header in (
        "/usr/include/suitesparse/SuiteSparse_config.h",
        "/usr/local/include/suitesparse/SuiteSparse_config.h",
    ):
        path = Path(header)
        if path.exists():
            match = re.search(r"#define\s+SUITESPARSE_MAIN_VERSION\s+(\d+)", path.read_text())
            if match:
                return int(match.group(1))
    return None


def scikit_sparse_requirement() -> str | None:
    """An extra scikit-sparse to install over the package's own pin, or None (the usual case).

    pyproject.toml requires ``scikit-sparse>=0.4.12,<0.5``: 0.4.x builds against SuiteSparse 5 and 7 alike,
    so a plain install needs no help. To exercise sparselmm/linalg/cholmod.py's scikit-sparse 0.5 code path, set
    ``SPARSELMM_SCIKIT_SPARSE=0.5.0`` (any version): it is installed after the package, without
    dependencies, and needs SuiteSparse >= 7 for 0.5.
    """
    version = os.environ.get("SPARSELMM_SCIKIT_SPARSE", "").strip()
    if not version:
        return None
    ss = suitesparse_version()
    if version.startswith("0.5") and ss is not None and ss < 7:
        raise SystemExit(f"SPARSELMM_SCIKIT_SPARSE={version} needs SuiteSparse >= 7; this system has {ss}.")
    return f"scikit-sparse=={version}"


def install(session: nox.Session, extras: str) -> None:
    session.install("-e", f".[{extras}]")
    extra = scikit_sparse_requirement()
    if extra is not None:
        session.install("--no-deps", extra)


@nox.session
def tests(session: nox.Session) -> None:
    """Unit tests, statsmodels' own MixedLM tests against the facade, and the lme4 comparison against the
    committed reference JSON (no R needed)."""
    install(session, "test")
    session.run("pytest", "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and format check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", "sparselmm", "tests")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site (Sphinx, numpydoc, sphinx-gallery) into docs/_build/html, warnings as errors;
    the gallery's examples run during the build. Extra arguments go to sphinx-build (e.g. ``-E``)."""
    install(session, "docs,plot,parquet")
    args = ["-W", "--keep-going", "-b", "html", "docs", "docs/_build/html", *session.posargs]
    session.run("sphinx-build", *args, env={"MPLBACKEND": "Agg"})


@nox.session
def validate(session: nox.Session) -> None:
    """Refit every validation case live in R (lme4, lmerTest, pbkrtest), compare, write validation/REPORT*.md."""
    install(session, "test")
    if shutil.which("Rscript") is None:
        session.error(
            "Rscript not found: install R, lme4, lmerTest and pbkrtest (apt-get install -y r-base-core r-cran-lme4 "
            "r-cran-lmertest r-cran-pbkrtest r-cran-jsonlite r-cran-numderiv r-cran-emmeans r-cran-glmmtmb "
            "r-cran-nlme)."
        )
    # (R script that refits live, comparison script, report): lme4's lmer; lmerTest's Satterthwaite and
    # pbkrtest's Kenward-Roger (issue #10); intervals, LRT tables, bootstrap and profiles (issue #11); lme4's
    # glmer, default and tight-PIRLS refits (issue #14); emmeans; glmer's Wald intervals, anova, drop1 and
    # bootstrap (issue #20); covariance structures diag()/cs() against glmmTMB (issue #21); the negative binomial
    # glmer_nb against lme4's glmer.nb and glmmTMB's nbinom2 (issue #21); residual-structure parameters' Wald
    # intervals against nlme's intervals() and their profile intervals against glmmTMB's (issue #21 item 5)
    suites = [
        ("run_lme4.R", "compare.py", "REPORT.md"),
        ("run_lmertest.R", "compare_inference.py", "REPORT_INFERENCE.md"),
        ("run_lme4_ci.R", "compare_ci.py", "REPORT_CI.md"),
        ("run_glmer.R", "compare_glmm.py", "REPORT_GLMM.md"),
        ("run_emmeans.R", "compare_emmeans.py", "REPORT_EMMEANS.md"),
        ("run_glmer_inference.R", "compare_glmer_inference.py", "REPORT_GLMER_INFERENCE.md"),
        ("run_glmmtmb_covstruct.R", "compare_covstruct.py", "REPORT_COVSTRUCT.md"),
        ("run_glmer_nb.R", "compare_glmer_nb.py", "REPORT_GLMER_NB.md"),
        ("run_residual.R", "compare_residual.py", "REPORT_RESIDUAL.md"),
        ("run_residual_inference.R", "compare_residual_inference.py", "REPORT_RESIDUAL_INFERENCE.md"),
        ("run_residual_profile.R", "compare_residual_profile.py", "REPORT_RESIDUAL_PROFILE.md"),
    ]
    for r_script, compare, report in suites:
        live = session.create_tmp() + "/reference_" + r_script.removesuffix(".R")
        session.run("Rscript", f"validation/{r_script}", "--out", live, external=True)
        session.run("python", f"validation/{compare}", "--reference", live, "--report", f"validation/{report}")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks beside lme4 (and statsmodels); writes BENCHMARKS.md. Pass --quick for a short run."""
    install(session, "bench")
    session.run("python", "benchmarks/run.py", *session.posargs)
