"""GLMM benchmark (issue 14): sparselmm.glmer vs lme4's glmer (Rscript) vs mixedlm.glmer (PyPI), same data, same run.

Usage (repository root)::

    python benchmarks/glmm_bench.py [--workloads cbpp verbagg crossed60k crossed1e6] [--repeat 2] [--out FILE.json]
                                    [--skip-mixedlm] [--timeout 7200]

Workloads:
  cbpp        lme4's cbpp, cbind(incidence, size - incidence) ~ period + (1 | herd) (56 rows)
  verbagg     lme4's VerbAgg, r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item) (7,584 rows, crossed)
  crossed60k  simulated crossed binary, 60,000 rows, 3,000 subjects x 300 items, the same model (seed 20261205)
  crossed1e6  simulated crossed binary, 1e6 rows, 1e4 subjects x 1e3 items, y ~ x + cond + (1|subj) + (1|item)
              (seed 20261127; both written once to $TMPDIR/sparselmm_glmm_bench/)

Each program fits in its own fresh process (R: ``system.time(glmer(...))``; Python: ``time.perf_counter``
around the fit, data already loaded); the best of ``--repeat`` runs is kept. The table gives seconds,
-2 log L, optimiser evaluations and the ratio to glmer. Do not time on a machine busy with other work.
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

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(tempfile.gettempdir()) / "sparselmm_glmm_bench"  # the simulated data (1e6 rows: ≈ 30 MB)

WORKLOADS = {
    "cbpp": {
        "csv": ROOT / "validation" / "data" / "glmm_cbpp.csv",
        "formula": "cbind(incidence, size - incidence) ~ period + (1 | herd)",
        # mixedlm 1.3.0 does not parse cbind(): the same model as proportions with weights = trials
        "mixedlm_formula": "prop__ ~ period + (1 | herd)",
        "mixedlm_weights": "size",
        "factors": ["herd", "period"],
        "family": "binomial",
    },
    "verbagg": {
        "csv": ROOT / "validation" / "data" / "glmm_VerbAgg.csv",
        "formula": "r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)",
        "factors": ["id", "item", "Gender", "btype", "situ"],
        "family": "binomial",
    },
    "crossed60k": {
        "csv": DATA / "crossed_binary_60k.csv",
        "formula": "y ~ x + cond + (1 | subj) + (1 | item)",
        "factors": ["subj", "item"],
        "family": "binomial",
        "simulate": {"n": 60_000, "n_subj": 3_000, "n_item": 300, "seed": 20261205},
    },
    "crossed1e6": {
        "csv": DATA / "crossed_binary_1e6.csv",
        "formula": "y ~ x + cond + (1 | subj) + (1 | item)",
        "factors": ["subj", "item"],
        "family": "binomial",
    },
}

R_SCRIPT = textwrap.dedent(
    """
    suppressMessages(library(lme4))
    a <- commandArgs(trailingOnly = TRUE)
    d <- read.csv(a[[1]])
    for (f in strsplit(a[[3]], ",")[[1]]) d[[f]] <- factor(d[[f]])
    fam <- get(a[[4]])()
    nagq <- as.integer(a[[5]])
    tm <- system.time(m <- glmer(as.formula(a[[2]]), data = d, family = fam, nAGQ = nagq))[["elapsed"]]
    cat(jsonlite::toJSON(list(seconds = tm, m2ll = -2 * as.numeric(logLik(m)), evals = m@optinfo$feval,
                              version = as.character(packageVersion("lme4"))), auto_unbox = TRUE, digits = NA))
    """
)

PY_SPARSELMM = textwrap.dedent(
    """
    import json, sys, time, warnings
    import pandas as pd
    sys.path.insert(0, {root!r})
    import sparselmm
    d = pd.read_csv({csv!r})
    for f in {factors!r}:
        d[f] = pd.Categorical(d[f])
    warnings.simplefilter("ignore")
    t = time.perf_counter()
    m = sparselmm.glmer({formula!r}, d, family={family!r}, nAGQ={nagq})
    s = time.perf_counter() - t
    print(json.dumps(dict(seconds=s, m2ll=m.deviance, evals=m.optinfo.n_evals,
                          evals_total=m.optinfo.n_evals_total, deriv_seconds=m.optinfo.details.get("deriv_seconds"))))
    """
)

PY_MIXEDLM = textwrap.dedent(
    """
    import json, time, warnings
    import numpy as np, pandas as pd
    import mixedlm
    d = pd.read_csv({csv!r})
    for f in {factors!r}:
        d[f] = d[f].astype(str)
    kw = {{}}
    if {weights!r}:
        d["prop__"] = d["incidence"] / d[{weights!r}]
        kw["weights"] = d[{weights!r}].to_numpy(float)
    fam = mixedlm.families.Binomial() if {family!r} == "binomial" else mixedlm.families.Poisson()
    warnings.simplefilter("ignore")
    t = time.perf_counter()
    m = mixedlm.glmer({formula!r}, d, family=fam, nAGQ={nagq}, **kw)
    s = time.perf_counter() - t
    print(json.dumps(dict(seconds=s, m2ll=-2 * float(m.logLik().value), version=mixedlm.__version__)))
    """
)


def simulate_crossed(path: Path, n=1_000_000, n_subj=10_000, n_item=1_000, seed=20261127):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, n_subj, n)
    i = rng.integers(0, n_item, n)
    x = rng.normal(size=n)
    cond = rng.integers(0, 2, n)
    eta = -0.5 + 0.4 * x + 0.3 * cond + rng.normal(0, 0.8, n_subj)[s] + rng.normal(0, 0.5, n_item)[i]
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(np.int8)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"y": y, "x": x.round(6), "cond": cond, "subj": s, "item": i}).to_csv(path, index=False)


def _run(cmd, timeout):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout} s"}
    except subprocess.CalledProcessError as err:
        return {"error": (err.stderr or err.stdout).strip().splitlines()[-1][:200]}
    except (json.JSONDecodeError, IndexError) as err:
        return {"error": f"unreadable output: {err}"}


def best(runs):
    ok = [r for r in runs if "error" not in r]
    return min(ok, key=lambda r: r["seconds"]) if ok else runs[-1]


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--workloads", nargs="+", default=["cbpp", "verbagg"], choices=sorted(WORKLOADS))
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--nagq", type=int, default=1)
    ap.add_argument("--skip-mixedlm", action="store_true")
    ap.add_argument("--timeout", type=float, default=7200)
    ap.add_argument("--out", default=None)
    ap.add_argument("--update", default=None, help="write the table into this markdown file between the glmm markers")
    a = ap.parse_args(argv)
    load_start = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        rfile = Path(tmp) / "fit_glmer.R"
        rfile.write_text(R_SCRIPT)
        for name in a.workloads:
            w = WORKLOADS[name]
            if not Path(w["csv"]).exists():
                simulate_crossed(Path(w["csv"]), **w.get("simulate", {}))
            row = {"workload": name}
            spec = dict(
                root=str(ROOT),
                csv=str(w["csv"]),
                factors=w["factors"],
                formula=w["formula"],
                family=w["family"],
                nagq=a.nagq,
            )
            row["sparselmm"] = best(
                [_run([sys.executable, "-c", PY_SPARSELMM.format(**spec)], a.timeout) for _ in range(a.repeat)]
            )
            row["glmer"] = best(
                [
                    _run(
                        [
                            "Rscript",
                            str(rfile),
                            str(w["csv"]),
                            w["formula"],
                            ",".join(w["factors"]),
                            w["family"],
                            str(a.nagq),
                        ],
                        a.timeout,
                    )
                    for _ in range(a.repeat)
                ]
            )
            if not a.skip_mixedlm:
                mspec = dict(spec, formula=w.get("mixedlm_formula", w["formula"]), weights=w.get("mixedlm_weights"))
                row["mixedlm"] = best(
                    [_run([sys.executable, "-c", PY_MIXEDLM.format(**mspec)], a.timeout) for _ in range(a.repeat)]
                )
            results.append(row)
            print(_line(row), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=1))
    if a.update:
        update_section(Path(a.update), results, a, load_start, os.getloadavg())
    return 0


BEGIN, END = "<!-- glmm-bench:begin -->", "<!-- glmm-bench:end -->"


def _cell(r, g, key="seconds"):
    if r is None:
        return "—", "—", "—", "—"
    if "error" in r:
        return r["error"], "—", "—", "—"
    ratio = f"{r['seconds'] / g:.3f}" if g else "—"
    ev = str(r.get("evals", "—"))
    return f"{r['seconds']:.3g}", ratio, f"{r['m2ll']:.4f}", ev


def update_section(path: Path, results, a, load_start, load_end) -> None:
    """Replace (or append) the marked GLMM section of ``path`` with this run's table."""
    import datetime
    import platform

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from report import replace_section

    lines = [
        "| workload | program | fit s | × glmer | −2 log L | evaluations |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    versions = {}
    for row in results:
        g = row["glmer"].get("seconds") if "error" not in row["glmer"] else None
        versions.update({"lme4": row["glmer"].get("version")} if row["glmer"].get("version") else {})
        if row.get("mixedlm", {}).get("version"):
            versions["mixedlm"] = row["mixedlm"]["version"]
        for prog in ("sparselmm", "glmer", "mixedlm"):
            if prog in row:
                sec, ratio, m2ll, ev = _cell(row[prog], g)
                lines.append(f"| {row['workload']} | {prog} | {sec} | {ratio} | {m2ll} | {ev} |")
    cmd = "python benchmarks/glmm_bench.py " + " ".join(
        ["--workloads", *a.workloads, "--repeat", str(a.repeat), "--nagq", str(a.nagq), "--update", str(path)]
    )
    text = (
        f"{BEGIN}\n## GLMMs: sparselmm.glmer vs lme4's glmer and mixedlm (issue #14)\n\n"
        f"Generated by `{cmd}` on {datetime.datetime.now().isoformat(timespec='seconds')} "
        f"({platform.machine()}, {os.cpu_count()} cores; load average {load_start[0]:.2f} at start, "
        f"{load_end[0]:.2f} at end). Each program fits in its own fresh process, data already loaded; best of "
        f"{a.repeat}; default nAGQ = {a.nagq} (Laplace). −2 log L is each program's own; versions: "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + ". Workloads: cbpp (56 rows), VerbAgg `r2 ~ Anger + Gender + btype + situ + (1|id) + (1|item)` "
        "(7,584 rows, crossed), crossed60k (simulated crossed binary, 60,000 rows, 3,000 subjects × 300 items, "
        "the same model, seed 20261205), crossed1e6 (simulated crossed binary, 1e6 rows, 1e4 subjects × 1e3 items, "
        "`y ~ x + cond + (1|subj) + (1|item)`, seed 20261127).\n\n" + "\n".join(lines) + f"\n{END}\n"
    )
    replace_section(path, text)


def _line(row):
    g = row["glmer"].get("seconds")
    parts = [f"{row['workload']:<11}"]
    for prog in ("sparselmm", "glmer", "mixedlm"):
        r = row.get(prog)
        if r is None:
            continue
        if "error" in r:
            parts.append(f"{prog}: {r['error']}")
            continue
        ratio = f" ({r['seconds'] / g:.2f}x glmer)" if g else ""
        ev = f", {r['evals']} evals" if "evals" in r else ""
        parts.append(f"{prog}: {r['seconds']:.3f} s{ratio}, -2logL {r['m2ll']:.4f}{ev}")
    return " | ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
