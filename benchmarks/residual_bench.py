"""Residual-structure benchmark (issue 21's speed targets): lmer's ``dispformula="~ f"`` with
``correlation=corAR1(time="t", group="subj")`` vs glmmTMB and nlme, same data, same run.

Usage (repository root)::

    python benchmarks/residual_bench.py [--rows 100000] [--nested-rows ROWS] [--repeat 2] [--timeout 3600]
                                        [--only crossed nested per_eval] [--out FILE.json] [--update BENCHMARKS.md]

Parts (each program fits in its own fresh process, data already loaded and converted; best of ``--repeat``):

crossed   ``y ~ x + (1|subj) + (1|item)``, AR(1) residuals within subject over integer times, residual variance
          by a 3-level factor ``f``, ML. ``--rows`` rows: 200 items; up to 1e5 rows, ``rows / 200`` subjects who
          each see every item once, in their own random order, at times 1..200; beyond 1e5 rows, 500 subjects who
          each see the 200 items in ``rows / 1e5`` sessions (a new order each session, times running on), so
          q = subjects + items ≤ 700 (sparselmm's dense residual evaluation takes q ≤ 800). ``f`` is the
          subject's group (subject number mod 3, residual SDs 1, 1.5, 0.7): constant within subject, because
          that is what glmmTMB can fit exactly (below). sparselmm: ``lmer(..., dispformula="~ f",
          correlation=corAR1(time="t", group="subj"), reml=False)``; glmmTMB (ML, Laplace exact for a Gaussian
          response)::

              y ~ x + (1 | subj) + (1 | item) + ar1(0 + tf:d1 | subj) + ar1(0 + tf:d2 | subj)
                  + ar1(0 + tf:d3 | subj),  dispformula = ~ 0,  map: the three terms share one rho

          with ``tf = factor(t)`` and ``dk = (f == level k)``: glmmTMB has no residual correlation, so the AR(1)
          residual is a random effect of every observation (``dispformula = ~ 0`` leaves a residual variance of
          ~1e-8, validation/run_residual.R); glmmTMB 1.1.5's ``dispformula = ~ f`` would add an independent
          heteroscedastic nugget beside it (another model), and an ``ar1`` term has one variance, so the
          variance by ``f`` is three ``ar1`` terms, each loaded on its stratum's rows, with ``map`` tying their
          correlation parameters. That is exact only when ``f`` is constant within the AR(1) group: a factor
          varying within a subject's series (varIdent on observations) has no glmmTMB spelling. glmmTMB took
          19 s at 5,000 rows (25 subjects), so at 1e5 rows the timeout may be what the table reports.
nested    ``y ~ x + (1|subj)`` with corAR1 + varIdent, ML, vs nlme's ``lme(y ~ x, random = ~ 1 | subj, weights =
          varIdent(form = ~ 1 | f), correlation = corAR1(form = ~ t | subj), method = "ML")``.
          ``--nested-rows`` rows (default: ``--rows``): 800 subjects (q = 800, the most sparselmm's dense
          residual evaluation takes; fewer below 8,000 rows, 10 times each) with consecutive times 1..rows/800
          (125 at 1e5 rows); ``f`` varies within subject (each row's level drawn at random, SDs 1, 1.5, 0.7).
          nlme's time grows with rows × series length (its per-group AR(1) factors are dense): here 0.6 s at
          400 × 12 rows, 6 s at 400 × 50, 33 s at 400 × 100, 13 s at 800 × 50; about two minutes expected at
          800 × 125.
per_eval  seconds per evaluation of sparselmm's criterion (:class:`sparselmm.residual.ResidualCriterion`, the
          callable BOBYQA minimises: cross-products at φ from the pieces, dense q × q solve at θ) at the optimum,
          after set-up, for the crossed design at ``--rows`` rows and at 10 × as many rows of the same cells: the
          same subjects and items, each subject's series ten times as long (ten times the sessions, times
          running on), so every subject × item cell holds ten times the rows and q, the strata, the gaps (all
          1) and so the pieces are unchanged; ``ZᵀWZ``'s pattern gains only the item pairs first met next to each
          other (19,777 → 19,923 at 1e5 → 1e6 rows). Each size is fitted first (its fit seconds are in the JSON)
          and its criterion timed at its own optimum, in batches of about half a second, best batch kept.
          Target: the ratio within 1.3.

Data (seeded) are written once as CSV to ``benchmarks/.cache/residual_bench/`` (git-ignored;
``$SPARSELMM_BENCH_CACHE`` moves it). Targets (issue 21): sparselmm ≤ 0.1 × glmmTMB's fit time on the crossed
design, ≤ 0.1 × nlme's on the nested one, per-evaluation ratio ≤ 1.3. Do not time on a machine busy with other
work.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from workloads import CACHE  # noqa: E402  (benchmarks/.cache, git-ignored)

DATA = CACHE / "residual_bench"
DATA_VERSION = 1  # bump when a generator changes, so stale files are not reused
PARTS = ("crossed", "nested", "per_eval")
TARGETS = {"crossed": 0.1, "nested": 0.1, "per_eval": 1.3}
N_ITEM = 200
MAX_SUBJ = 500
NESTED_SUBJ = 800  # q = 800, the most the dense residual evaluation takes
LEVEL_SD = (1.0, 1.5, 0.7)
RHO = 0.5

FORMULA_CROSSED = "y ~ x + (1 | subj) + (1 | item)"
FORMULA_NESTED = "y ~ x + (1 | subj)"
TMB_FORMULA = "y ~ x + (1 | subj) + (1 | item) + ar1(0 + tf:d1 | subj) + ar1(0 + tf:d2 | subj) + ar1(0 + tf:d3 | subj)"


# ---- data ------------------------------------------------------------------------------------------------
def ar1_series(rng, lengths, rho):
    """Unit-variance AR(1) series of the given lengths, concatenated."""
    out = np.empty(int(np.sum(lengths)))
    at = 0
    for m in lengths:
        e = rng.normal(size=m)
        e[1:] *= np.sqrt(1 - rho * rho)
        for j in range(1, m):  # (m ≤ 2,000: a loop per series is fast enough)
            e[j] += rho * e[j - 1]
        out[at : at + m] = e
        at += m
    return out


def crossed_shape(rows: int) -> tuple[int, int]:
    """(subjects, sessions) of the crossed design of about ``rows`` rows (200 items)."""
    if rows <= MAX_SUBJ * N_ITEM:
        return max(2, round(rows / N_ITEM)), 1
    return MAX_SUBJ, max(1, round(rows / (MAX_SUBJ * N_ITEM)))


def crossed_frame(n_subj: int, sessions: int, seed: int = 20270121) -> pd.DataFrame:
    """Every subject sees every item once per session, in a new random order; times 1..200·sessions."""
    rng = np.random.default_rng(seed)
    b_subj = rng.normal(0, 0.8, n_subj)  # drawn first: the same subjects and items at every size
    b_item = rng.normal(0, 0.5, N_ITEM)
    m = N_ITEM * sessions
    subj = np.repeat(np.arange(n_subj), m)
    item = np.concatenate([rng.permutation(N_ITEM) for _ in range(n_subj * sessions)])
    t = np.tile(np.arange(1, m + 1), n_subj)
    f = subj % 3
    x = rng.normal(size=subj.size)
    e = ar1_series(rng, [m] * n_subj, RHO) * np.asarray(LEVEL_SD)[f]
    y = 1.0 + 0.5 * x + b_subj[subj] + b_item[item] + e
    return pd.DataFrame(
        {"y": y.round(8), "x": x.round(8), "subj": subj, "item": item, "t": t, "f": np.array(list("abc"))[f]}
    )


def nested_shape(rows: int) -> tuple[int, int]:
    """(subjects, times per subject) of the nested design of about ``rows`` rows."""
    n_subj = min(NESTED_SUBJ, max(2, rows // 10))
    return n_subj, max(2, round(rows / n_subj))


def nested_frame(n_subj: int, m: int, seed: int = 20270122) -> pd.DataFrame:
    """``m`` consecutive times per subject; ``f`` drawn per row."""
    rng = np.random.default_rng(seed)
    b_subj = rng.normal(0, 0.8, n_subj)
    subj = np.repeat(np.arange(n_subj), m)
    t = np.tile(np.arange(1, m + 1), n_subj)
    f = rng.integers(0, 3, subj.size)
    x = rng.normal(size=subj.size)
    e = ar1_series(rng, [m] * n_subj, RHO) * np.asarray(LEVEL_SD)[f]
    y = 1.0 + 0.5 * x + b_subj[subj] + e
    return pd.DataFrame({"y": y.round(8), "x": x.round(8), "subj": subj, "t": t, "f": np.array(list("abc"))[f]})


def data_file(kind: str, a: int, b: int) -> Path:
    """The CSV of one design, written once."""
    path = DATA / f"{kind}_{a}x{b}.v{DATA_VERSION}.csv"
    if not path.exists():
        frame = crossed_frame(a, b) if kind == "crossed" else nested_frame(a, b)
        DATA.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        frame.to_csv(tmp, index=False)
        tmp.replace(path)
    return path


# ---- the programs ----------------------------------------------------------------------------------------
R_SCRIPT = textwrap.dedent(
    """
    a <- commandArgs(trailingOnly = TRUE)
    engine <- a[[1]]
    d <- read.csv(a[[2]])
    d$subj <- factor(d$subj); d$f <- factor(d$f)
    if (engine == "glmmTMB") {
      suppressMessages(library(glmmTMB))
      d$item <- factor(d$item)
      d$tf <- factor(d$t, levels = seq_len(max(d$t)))
      for (k in 1:3) d[[paste0("d", k)]] <- as.numeric(d$f == levels(d$f)[k])
      form <- as.formula(a[[3]])
      ## theta: log SD of subj, of item, then (log SD, rho) of each ar1 term: the three share one rho
      map <- list(theta = factor(c(1, 2, 3, 4, 5, 4, 6, 4)))
      tm <- system.time(m <- glmmTMB(form, data = d, dispformula = ~ 0, REML = FALSE, map = map))[["elapsed"]]
      vc <- VarCorr(m)$cond
      sds <- vapply(vc, function(v) as.numeric(attr(v, "stddev")[1]), 0)
      rho <- attr(vc[[3]], "correlation")[2, 1]
      out <- list(seconds = tm, m2ll = -2 * as.numeric(logLik(m)), rho = rho, sigma = sds[[3]],
                  level_sd = as.list(setNames(sds[3:5], levels(d$f))), evals = m$fit$evaluations[["function"]],
                  converged = m$fit$convergence == 0, version = as.character(packageVersion("glmmTMB")))
    } else {
      suppressMessages(library(nlme))
      tm <- system.time(m <- lme(y ~ x, random = ~ 1 | subj, data = d, weights = varIdent(form = ~ 1 | f),
                                 correlation = corAR1(form = ~ t | subj), method = "ML"))[["elapsed"]]
      ratio <- coef(m$modelStruct$varStruct, unconstrained = FALSE, allCoef = TRUE)
      out <- list(seconds = tm, m2ll = -2 * as.numeric(logLik(m)), sigma = m$sigma,
                  rho = as.numeric(coef(m$modelStruct$corStruct, unconstrained = FALSE)),
                  level_sd = as.list(m$sigma * ratio[levels(d$f)]),
                  version = as.character(packageVersion("nlme")))
    }
    out$r_version <- paste(R.version$major, R.version$minor, sep = ".")
    cat(jsonlite::toJSON(out, auto_unbox = TRUE, digits = NA))
    """
)

PY_FIT = textwrap.dedent(
    """
    import json, sys, time, warnings
    import pandas as pd
    sys.path.insert(0, {root!r})
    import sparselmm
    d = pd.read_csv({csv!r})
    for c in {factors!r}:
        d[c] = pd.Categorical(d[c])
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    m = sparselmm.lmer({formula!r}, d, reml=False, dispformula="~ f",
                       correlation=sparselmm.corAR1(time="t", group="subj"))
    s = time.perf_counter() - t0
    sd = m.residual_sd
    print(json.dumps(dict(seconds=s, m2ll=m.deviance, rho=m.rho, sigma=m.sigma,
                          level_sd={{str(k): float(v) for k, v in sd.items()}}, evals=m.optinfo.n_evals,
                          setup_seconds=m.optinfo.setup_seconds)))
    """
)

PY_PER_EVAL = textwrap.dedent(
    """
    import json, sys, time, warnings
    import numpy as np, pandas as pd
    sys.path.insert(0, {root!r})
    import sparselmm
    from sparselmm.crossprod import cross_products
    from sparselmm.design import build_design
    from sparselmm.formula import parse_formula
    from sparselmm.residual import ResidualCriterion, ResidualPieces, residual_structure
    d = pd.read_csv({csv!r})
    for c in ("subj", "item"):
        d[c] = pd.Categorical(d[c])
    warnings.simplefilter("ignore")
    cor = sparselmm.corAR1(time="t", group="subj")
    t0 = time.perf_counter()
    m = sparselmm.lmer({formula!r}, d, reml=False, dispformula="~ f", correlation=cor)
    fit = time.perf_counter() - t0
    # the criterion fit_residual minimises, built as it builds it
    t0 = time.perf_counter()
    design = build_design(parse_formula({formula!r}), d)
    structure = residual_structure(d, design.data.rows, "f", cor)
    pieces = ResidualPieces(design, structure, cross_products(design).beta_shift)
    crit = ResidualCriterion(design, pieces, reml=False)
    setup = time.perf_counter() - t0
    x = np.concatenate([m.theta, m.phi])
    value = crit(x)
    for _ in range(3):
        crit(x)
    t0 = time.perf_counter()
    crit(x)
    one = time.perf_counter() - t0
    calls = max(5, int(0.5 / max(one, 1e-6)))  # batches of about half a second
    batches = []
    for _ in range({batches}):
        t0 = time.perf_counter()
        for _ in range(calls):
            crit(x)
        batches.append((time.perf_counter() - t0) / calls)
    print(json.dumps(dict(seconds=min(batches), median=float(np.median(batches)), calls=calls * {batches},
                          value=value, m2ll=m.deviance, fit_seconds=fit, setup_seconds=setup, n=design.n,
                          q=design.q, pieces=pieces.n_pieces, pattern_nnz=int(pieces.keys.size))))
    """
)


def _run(cmd, timeout):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True, cwd=ROOT)
        return json.loads(out.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:g} s"}
    except subprocess.CalledProcessError as err:
        lines = (err.stderr or err.stdout or "").strip().splitlines()
        return {"error": lines[-1][:200] if lines else f"exit status {err.returncode}"}
    except (json.JSONDecodeError, IndexError) as err:
        return {"error": f"unreadable output: {err}"}


def best(runs):
    ok = [r for r in runs if "error" not in r]
    return min(ok, key=lambda r: r["seconds"]) if ok else runs[-1]


def _ratio(num, den):
    if not num or not den or "error" in num or "error" in den:
        return None
    return num["seconds"] / den["seconds"]


def run_fit_part(name, csv, factors, formula, engine, rfile, a):
    py = PY_FIT.format(root=str(ROOT), csv=str(csv), factors=factors, formula=formula)
    row = {"part": name, "csv": str(csv)}
    row["sparselmm"] = best([_run([sys.executable, "-c", py], a.timeout) for _ in range(a.repeat)])
    cmd = ["Rscript", str(rfile), engine, str(csv), TMB_FORMULA if engine == "glmmTMB" else formula]
    row[engine] = best([_run(cmd, a.timeout) for _ in range(a.repeat)])
    row["ratio"] = _ratio(row["sparselmm"], row[engine])
    return row


def run_per_eval(csv_n, csv_10n, a):
    out = {"part": "per_eval"}
    for key, csv in (("n", csv_n), ("10n", csv_10n)):
        py = PY_PER_EVAL.format(root=str(ROOT), csv=str(csv), formula=FORMULA_CROSSED, batches=5)
        out[key] = best([_run([sys.executable, "-c", py], a.timeout) for _ in range(a.repeat)])
    out["ratio"] = _ratio(out["10n"], out["n"])
    return out


# ---- report ----------------------------------------------------------------------------------------------
BEGIN, END = "<!-- residual-bench:begin -->", "<!-- residual-bench:end -->"


def _commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
        dirty = subprocess.run(["git", "status", "--porcelain", "sparselmm"], capture_output=True, text=True, cwd=ROOT)
        return head.stdout.strip() + (" (sparselmm/ modified)" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def _fmt(v, spec=".4f"):
    return "—" if v is None else format(v, spec)


def _fit_cells(r):
    if r is None:
        return ["—"] * 5
    if "error" in r:
        return [r["error"], "—", "—", "—", "—"]
    sds = "/".join(f"{v:.3f}" for v in r.get("level_sd", {}).values()) or "—"
    return [f"{r['seconds']:.3g}", f"{r['m2ll']:.4f}", _fmt(r.get("rho")), sds, str(r.get("evals", "—"))]


def _verdict(ratio, target):
    if ratio is None:
        return "—"
    return f"{ratio:.3g} ({'meets' if ratio <= target else 'misses'} ≤ {target:g})"


def markdown(results, a, meta) -> str:
    lines = [
        "| design | rows | program | fit s | −2 log L | ρ | residual SDs a/b/c | evaluations |",
        "| --- | ---: | --- | ---: | ---: | ---: | --- | ---: |",
    ]
    summary = []
    for row in results:
        if row["part"] in ("crossed", "nested"):
            ref = "glmmTMB" if row["part"] == "crossed" else "nlme"
            for prog in ("sparselmm", ref):
                cells = _fit_cells(row.get(prog))
                lines.append(f"| {row['part']} | {row['rows']:,} | {prog} | " + " | ".join(cells) + " |")
            m2 = [row[p].get("m2ll") for p in ("sparselmm", ref) if "error" not in row[p]]
            diff = f"; −2 log L sparselmm − {ref}: {m2[0] - m2[1]:+.2e}" if len(m2) == 2 else ""
            verdict = _verdict(row["ratio"], TARGETS[row["part"]])
            ours, theirs = row["sparselmm"], row[ref]
            if "error" not in ours and theirs.get("error", "").startswith("timeout"):
                bound = ours["seconds"] / a.timeout
                verdict = f"< {bound:.3g} ({ref} timed out after {a.timeout:g} s)"
            summary.append(f"* {row['part']}: sparselmm / {ref} fit time {verdict}{diff}")
    per = [r for r in results if r["part"] == "per_eval"]
    if per:
        lines += [
            "",
            "| per evaluation | rows | q | pieces | pattern nnz | s / evaluation | criterion at its optimum "
            "| set-up s |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for key in ("n", "10n"):
            r = per[0][key]
            if "error" in r:
                lines.append(f"| {key} | — | — | — | — | {r['error']} | — | — |")
                continue
            lines.append(
                f"| {key} | {r['n']:,} | {r['q']} | {r['pieces']} | {r['pattern_nnz']:,} | {r['seconds']:.3g} | "
                f"{r['value']:.4f} | {r['setup_seconds']:.3g} |"
            )
        summary.append(f"* per evaluation, 10n / n rows: {_verdict(per[0]['ratio'], TARGETS['per_eval'])}")
    cmd = "python benchmarks/residual_bench.py " + " ".join(
        ["--rows", str(a.rows), "--nested-rows", str(a.nested_rows), "--repeat", str(a.repeat)]
        + ["--timeout", f"{a.timeout:g}", "--only", *a.only]
        + (["--update", str(a.update)] if a.update else [])
    )
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v)
    return (
        f"{BEGIN}\n## Residual structures: sparselmm vs glmmTMB and nlme (issue #21)\n\n"
        f"Generated by `{cmd}` on {meta['when']} ({meta['machine']}; load average {meta['load'][0]:.2f} at start, "
        f"{meta['load'][1]:.2f} at end). Versions: {versions}. Each program fits in its own fresh process, data "
        f"already loaded; best of {a.repeat}; ML throughout; −2 log L is each program's own. Designs (seeded, "
        "see the script's docstring): crossed `y ~ x + (1|subj) + (1|item)`, 200 items, each subject seeing each "
        "item once per session in its own order at consecutive times, AR(1) residuals within subject, residual "
        "SD by the subject's group f (3 levels; glmmTMB: three `ar1(0 + tf:dk | subj)` terms sharing ρ through "
        "`map`, `dispformula = ~ 0`); nested `y ~ x + (1|subj)`, consecutive times within subject, f drawn per "
        "row, nlme `lme(..., weights = varIdent(form = ~ 1 | f), correlation = corAR1(form = ~ t | subj), method "
        "= 'ML')`; per evaluation: sparselmm's `ResidualCriterion` at its optimum on the crossed design and on "
        "the same subjects and items with ten times the sessions (each cell ten times the rows, same q).\n\n"
        + "\n".join(lines)
        + "\n\nAgainst issue 21's targets:\n\n"
        + "\n".join(summary)
        + f"\n{END}\n"
    )


def update_section(path: Path, text: str) -> None:
    """Replace the marked section of ``path`` (appended at the end when the markers are absent)."""
    from report import replace_section

    replace_section(path, text)


def _count(text: str) -> int:
    """A row count, ``100000`` or ``1e5``."""
    value = float(text)
    if value != int(value) or value < 20:
        raise argparse.ArgumentTypeError(f"expected a whole number of rows (at least 20), not {text!r}")
    return int(value)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=_count, default=100_000, help="rows of the crossed design (per_eval: and 10x)")
    ap.add_argument("--nested-rows", type=_count, default=None, help="rows of the nested design (default: --rows)")
    ap.add_argument("--repeat", type=int, default=2, help="fits per program; the best is kept")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per fit before it is reported as such")
    ap.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    ap.add_argument("--out", default=None, help="write the results as JSON")
    ap.add_argument("--update", default=None, help="write the section into this markdown file between its markers")
    a = ap.parse_args(argv)
    a.nested_rows = a.rows if a.nested_rows is None else a.nested_rows
    when = datetime.datetime.now().isoformat(timespec="seconds")
    load_start = os.getloadavg()
    results = []
    n_subj, sessions = crossed_shape(a.rows)
    with tempfile.TemporaryDirectory() as tmp:
        rfile = Path(tmp) / "fit_residual.R"
        rfile.write_text(R_SCRIPT)
        if "crossed" in a.only:
            csv = data_file("crossed", n_subj, sessions)
            row = run_fit_part("crossed", csv, ["subj", "item", "f"], FORMULA_CROSSED, "glmmTMB", rfile, a)
            row["rows"] = n_subj * N_ITEM * sessions
            results.append(row)
            print(_line(row, "glmmTMB"), flush=True)
        if "nested" in a.only:
            ns, m = nested_shape(a.nested_rows)
            csv = data_file("nested", ns, m)
            row = run_fit_part("nested", csv, ["subj", "f"], FORMULA_NESTED, "nlme", rfile, a)
            row["rows"] = ns * m
            results.append(row)
            print(_line(row, "nlme"), flush=True)
        if "per_eval" in a.only:
            row = run_per_eval(data_file("crossed", n_subj, sessions), data_file("crossed", n_subj, 10 * sessions), a)
            results.append(row)
            print(_per_eval_line(row), flush=True)
    meta = {
        "when": when,
        "machine": _machine(),
        "load": (load_start[0], os.getloadavg()[0]),
        "versions": _versions(results),
    }
    if a.out:
        Path(a.out).write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    text = markdown(results, a, meta)
    if a.update:
        update_section(Path(a.update), text)
    else:
        print("\n" + text)
    return 0


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()}"


def _versions(results) -> dict:
    v = {"sparselmm": _commit(), "R": None, "glmmTMB": None, "nlme": None}
    for row in results:
        for prog in ("glmmTMB", "nlme"):
            r = row.get(prog) or {}
            if r.get("version"):
                v[prog] = r["version"]
                v["R"] = r.get("r_version", v["R"])
    if v["R"] is None or (v["glmmTMB"] is None and v["nlme"] is None):
        expr = (
            'cat(paste(R.version$major, R.version$minor, sep = "."), as.character(packageVersion("glmmTMB")), '
            'as.character(packageVersion("nlme")), sep = "\\n")'
        )
        try:
            out = subprocess.run(["Rscript", "-e", expr], capture_output=True, text=True, timeout=60)
            lines = out.stdout.strip().splitlines()
            if len(lines) == 3:
                v["R"] = v["R"] or lines[0]
                v["glmmTMB"] = v["glmmTMB"] or lines[1]
                v["nlme"] = v["nlme"] or lines[2]
        except (OSError, subprocess.TimeoutExpired):
            pass
    return v


def _line(row, ref):
    parts = [f"{row['part']:<8} {row['rows']:>9,} rows"]
    for prog in ("sparselmm", ref):
        r = row[prog]
        if "error" in r:
            parts.append(f"{prog}: {r['error']}")
        else:
            parts.append(f"{prog}: {r['seconds']:.3f} s, -2logL {r['m2ll']:.4f}, rho {_fmt(r.get('rho'))}")
    parts.append(f"ratio {_fmt(row['ratio'], '.3g')}")
    return " | ".join(parts)


def _per_eval_line(row):
    parts = ["per_eval"]
    for key in ("n", "10n"):
        r = row[key]
        parts.append(f"{key}: {r['error']}" if "error" in r else f"{key}: {r['n']:,} rows {r['seconds'] * 1e3:.3f} ms")
    parts.append(f"ratio {_fmt(row['ratio'], '.3g')}")
    return " | ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
