"""Parametric bootstrap: sparselmm's ``bootstrap`` against lme4's ``bootMer``, in the same run.

Times, per replicate, sparselmm's bootstrap of sleepstudy (``Reaction ~ Days + (Days|Subject)``, ML) and of
InstEval ML (``y ~ 1 + service + (1|s) + (1|d) + (1|dept:service)``) and lme4's ``bootMer(m, fixef)`` on
the same models through Rscript, and prints the seconds per replicate and the ratio (issue 11's targets:
sleepstudy 10,000 replicates in at most 10 s; InstEval at least 20x faster per replicate than lme4).

    python benchmarks/bootstrap_bench.py                       # the full run (several minutes)
    python benchmarks/bootstrap_bench.py --sleep-nsim 50 --skip-insteval --lme4-sleep-nsim 20   # smoke

Run it on an otherwise idle machine: the ratio is what counts, absolute seconds on a shared box are noise.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import sparselmm

SLEEP = ("sleepstudy", "Reaction ~ Days + (Days|Subject)")
INSTEVAL = ("InstEval", "y ~ 1 + service + (1|s) + (1|d) + (1|dept:service)")

R_SCRIPT = r"""
suppressPackageStartupMessages({library(lme4); library(jsonlite)})
args <- commandArgs(trailingOnly = TRUE)
name <- args[[1]]; form <- as.formula(args[[2]]); nsim <- as.integer(args[[3]])
env <- new.env(); data(list = name, package = "lme4", envir = env)
fit_s <- system.time(m <- lmer(form, data = env[[name]], REML = FALSE))[["elapsed"]]
boot_s <- system.time(bb <- suppressWarnings(bootMer(m, fixef, nsim = nsim, seed = 1)))[["elapsed"]]
cat(toJSON(list(fit_seconds = fit_s, boot_seconds = boot_s, nsim = nsim,
                lme4 = as.character(packageVersion("lme4"))), auto_unbox = TRUE, digits = NA))
"""


def time_sparselmm(dataset: str, formula: str, nsim: int, n_jobs: int) -> dict:
    data = sparselmm.datasets.load(dataset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        m = sparselmm.lmer(formula, data, reml=False)
        fit_seconds = time.perf_counter() - t0
        boot = m.bootstrap(nsim, seed=1, n_jobs=n_jobs, progress=False)
    return {
        "fit_seconds": fit_seconds,
        "boot_seconds": boot.seconds,
        "nsim": nsim,
        "per_replicate": boot.seconds / nsim,
        "mean_evals": float(boot.diagnostics["n_evals"].mean()),
        "failures": len(boot.failures),
    }


def time_lme4(dataset: str, formula: str, nsim: int) -> dict | None:
    if shutil.which("Rscript") is None:
        print("  Rscript not found: lme4 skipped", file=sys.stderr)
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".R", delete=False) as fh:
        fh.write(R_SCRIPT)
        script = fh.name
    try:
        out = subprocess.run(
            ["Rscript", script, dataset, formula, str(nsim)], capture_output=True, text=True, check=True
        ).stdout
    finally:
        Path(script).unlink(missing_ok=True)
    res = json.loads(out.strip().splitlines()[-1])
    res["per_replicate"] = res["boot_seconds"] / res["nsim"]
    return res


def run_case(label, dataset, formula, nsim, lme4_nsim, n_jobs, skip_r) -> dict:
    print(f"{label}: {formula}")
    ours = time_sparselmm(dataset, formula, nsim, n_jobs)
    print(
        f"  sparselmm: {ours['nsim']} replicates in {ours['boot_seconds']:.2f} s = "
        f"{1e3 * ours['per_replicate']:.3f} ms/replicate ({ours['mean_evals']:.1f} evaluations each, "
        f"{ours['failures']} failed; n_jobs={n_jobs})"
    )
    theirs = None if skip_r or lme4_nsim == 0 else time_lme4(dataset, formula, lme4_nsim)
    if theirs is not None:
        ratio = theirs["per_replicate"] / ours["per_replicate"]
        print(
            f"  lme4 {theirs['lme4']}: {theirs['nsim']} replicates in {theirs['boot_seconds']:.2f} s = "
            f"{1e3 * theirs['per_replicate']:.3f} ms/replicate  ->  sparselmm {ratio:.1f}x faster per replicate"
        )
    return {"sparselmm": ours, "lme4": theirs}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sleep-nsim", type=int, default=10_000)
    ap.add_argument("--lme4-sleep-nsim", type=int, default=500)
    ap.add_argument("--insteval-nsim", type=int, default=100)
    ap.add_argument("--lme4-insteval-nsim", type=int, default=20)
    ap.add_argument("--n-jobs", type=int, default=1)
    ap.add_argument("--skip-insteval", action="store_true")
    ap.add_argument("--skip-r", action="store_true", help="time sparselmm only")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args(argv)
    results = {
        "sleepstudy": run_case("sleepstudy ML", *SLEEP, args.sleep_nsim, args.lme4_sleep_nsim, args.n_jobs, args.skip_r)
    }
    if not args.skip_insteval:
        results["InstEval"] = run_case(
            "InstEval ML", *INSTEVAL, args.insteval_nsim, args.lme4_insteval_nsim, args.n_jobs, args.skip_r
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
