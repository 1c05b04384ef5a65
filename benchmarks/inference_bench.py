"""Time Satterthwaite and Kenward–Roger inference beside the fit, and beside lmerTest / pbkrtest (issue #10).

For each workload, one fresh Python process fits the model with ``sparselmm.lmer`` and then computes
``coef_table(ddf="Satterthwaite")`` and (REML fits) ``coef_table(ddf="Kenward-Roger")``, each from a
cold cache (the exact derivatives are built on first use), recording seconds and the process's peak RSS
after each step. One fresh R process fits the same CSV with ``lme4::lmer`` and times lmerTest's
Satterthwaite set-up (``as_lmerModLmerTest``: its numDeriv Hessian and Jacobian) and, where the n × n
matrices fit, pbkrtest's ``vcovAdj`` (Kenward–Roger). Ratios are from the same run.

    python benchmarks/inference_bench.py [--workloads insteval_reml,sleepstudy] [--update BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from report import replace_section  # noqa: E402
from workloads import ensure_data, get  # noqa: E402

DEFAULT = "sleepstudy,insteval_reml,insteval_ml,crossed_1e4,crossed_1e5,crossed_1e6,nested,slopes,kb07,maximal_1e6"
# pbkrtest forms several n × n dense matrices: only run it where n is small
PBKRTEST_MAX_N = 3000
# lme4's fit plus lmerTest's numDeriv Hessian on the 1e6-row designs take tens of minutes: by default the
# R side runs up to this many rows (--r-max-n to change); sparselmm runs on every workload
R_MAX_N = 250_000
BEGIN, END = "<!-- inference-bench:begin -->", "<!-- inference-bench:end -->"

PY_CHILD = textwrap.dedent(
    """
    import json, resource, sys, time, warnings
    sys.path.insert(0, {here!r})
    from workloads import get, read_frame
    import sparselmm
    import sparselmm.inference.contest, scipy.stats  # imported before the clock, as R loads lmerTest first

    w = get({name!r})
    df = read_frame(w)
    rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rec = {{"rss_loaded_mb": rss()}}
    warnings.simplefilter("ignore")
    t = time.perf_counter(); m = sparselmm.lmer(w.formula, df, reml=w.reml); rec["fit_s"] = time.perf_counter() - t
    rec["rss_fit_mb"] = rss(); rec["q"] = int(m.design.q); rec["n"] = int(m.nobs)
    t = time.perf_counter(); tab = m.coef_table("Satterthwaite"); rec["satt_s"] = time.perf_counter() - t
    rec["rss_satt_mb"] = rss(); rec["satt_df"] = tab["df"].tolist()
    if w.reml:
        m._inference_cache.clear()  # cold: KR builds the derivatives again
        t = time.perf_counter(); tab = m.coef_table("Kenward-Roger"); rec["kr_s"] = time.perf_counter() - t
        rec["rss_kr_mb"] = rss(); rec["kr_df"] = tab["df"].tolist()
    print(json.dumps(rec))
    """
)

R_CHILD = textwrap.dedent(
    """
    suppressMessages({{library(lme4); library(lmerTest)}})
    d <- as.data.frame(data.table::fread({csv!r}, showProgress = FALSE))
    for (f in c({factors})) d[[f]] <- factor(d[[f]])
    rss <- function() {{ l <- readLines("/proc/self/status"); as.numeric(strsplit(trimws(sub("VmHWM:", "",
        grep("^VmHWM:", l, value = TRUE))), " +")[[1]][1]) / 1024 }}
    t <- system.time(m <- suppressWarnings(lme4::lmer({formula}, d, REML = {reml})))[["elapsed"]]
    rec <- list(fit_s = t, rss_fit_mb = rss())
    t <- system.time(mt <- suppressWarnings(lmerTest::as_lmerModLmerTest(m)))[["elapsed"]]
    rec$satt_s <- t; rec$rss_satt_mb <- rss()
    rec$satt_df <- unname(summary(mt)$coefficients[, "df"])
    if ({reml} && nrow(d) <= {kr_max}) {{
      t <- system.time(va <- pbkrtest::vcovAdj(m))[["elapsed"]]
      rec$kr_s <- t; rec$rss_kr_mb <- rss()
    }}
    cat(jsonlite::toJSON(rec, auto_unbox = TRUE, digits = NA))
    """
)


def run_python(name: str) -> dict:
    code = PY_CHILD.format(here=str(HERE), name=name)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_r(name: str) -> dict | None:
    w = get(name)
    csv = str(ensure_data(w.data, verbose=False))
    code = R_CHILD.format(
        csv=csv,
        factors=", ".join(repr(f) for f in w.factors),
        formula=w.formula,
        reml="TRUE" if w.reml else "FALSE",
        kr_max=PBKRTEST_MAX_N,
    )
    with tempfile.NamedTemporaryFile("w", suffix=".R", delete=False) as fh:
        fh.write(code)
    try:
        out = subprocess.run(["Rscript", fh.name], capture_output=True, text=True, check=True, timeout=3600)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        print(f"  lmerTest failed on {name}: {getattr(err, 'stderr', err)}", file=sys.stderr)
        return None
    finally:
        os.unlink(fh.name)
    return json.loads(out.stdout.strip().splitlines()[-1])


def fmt(x, digits=3):
    return "—" if x is None else f"{x:.{digits}g}"


def table(rows: list[tuple[str, dict, dict | None]]) -> str:
    head = (
        "| workload | n | q | sparselmm fit s | Satterthwaite s | ÷ fit | KR s | ÷ fit | peak RSS MB (fit → KR) "
        "| lme4 fit s | lmerTest Satterthwaite set-up s | pbkrtest KR s | Satt. set-up: lmerTest ÷ sparselmm "
        "| max rel. diff. of df vs lmerTest |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |\n"
    )
    lines = []
    for name, py, r in rows:
        rel = None
        if r is not None:
            rel = max(abs(a - b) / abs(b) for a, b in zip(py["satt_df"], r["satt_df"]))
        kr = py.get("kr_s")
        lines.append(
            f"| {name} | {py['n']:,} | {py['q']:,} | {fmt(py['fit_s'])} | {fmt(py['satt_s'])} | "
            f"{fmt(py['satt_s'] / py['fit_s'], 2)} | {fmt(kr)} | {fmt(kr / py['fit_s'], 2) if kr else '—'} | "
            f"{py['rss_fit_mb']:.0f} → {py.get('rss_kr_mb', py['rss_satt_mb']):.0f} | "
            f"{fmt(r and r['fit_s'])} | {fmt(r and r['satt_s'])} | {fmt(r and r.get('kr_s'))} | "
            f"{fmt(r['satt_s'] / py['satt_s'], 3) if r else '—'} | {fmt(rel, 2)} |"
        )
    return head + "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default=DEFAULT)
    ap.add_argument("--no-r", action="store_true", help="skip lmerTest / pbkrtest")
    ap.add_argument("--r-max-n", type=int, default=R_MAX_N, help="run lme4/lmerTest only up to this many rows")
    ap.add_argument("--update", help="write the table into this markdown file between the inference markers")
    args = ap.parse_args(argv)
    rows = []
    for name in args.workloads.split(","):
        ensure_data(get(name).data)
        print(f"{name}: sparselmm …", flush=True)
        py = run_python(name)
        print(f"  {py}", flush=True)
        r = None
        if not args.no_r and py["n"] <= args.r_max_n:
            print(f"{name}: lmerTest …", flush=True)
            r = run_r(name)
            print(f"  {r}", flush=True)
        rows.append((name, py, r))
    text = table(rows)
    print(text)
    if args.update:
        section = (
            f"{BEGIN}\n## Inference: Satterthwaite and Kenward–Roger (issue #10)\n\n"
            f"Generated by `python benchmarks/inference_bench.py --update {args.update}`. Each sparselmm row is one "
            "fresh process: fit, then Satterthwaite's table, then (REML) Kenward–Roger's from a cold cache; peak "
            "RSS is the process's high-water mark. lmerTest's set-up is `as_lmerModLmerTest(m)` (numDeriv "
            "Hessian and Jacobian); pbkrtest's `vcovAdj(m)` runs only up to n = "
            f"{PBKRTEST_MAX_N:,} (it forms n × n matrices), and lme4/lmerTest up to n = {args.r_max_n:,} (beyond, "
            "their fit and numDeriv set-up take tens of minutes); the larger rows show sparselmm alone.\n\n"
            f"{text}{END}\n"
        )
        replace_section(Path(args.update), section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
