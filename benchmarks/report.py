"""Tables, done-when targets and the BENCHMARKS.md text from a results dict (see ``run.py``)."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

PROGRAM_ORDER = {"sparselmm": 0, "lme4": 1, "mixedlm": 2, "statsmodels": 3}


def _by(results: dict) -> dict[tuple[str, str], dict]:
    return {(r["workload"], r["program"]): r for r in results["records"]}


def _ok(rec: dict | None) -> bool:
    return bool(rec and rec.get("ok"))


def _ratio(a, b):
    if a is None or b is None or not b:
        return None
    return a / b


def _levels(results: dict, name: str) -> dict:
    for r in results["records"]:
        if r["workload"] == name and r.get("levels"):
            return r["levels"]
    return {}


def _n(results: dict, name: str):
    for r in results["records"]:
        if r["workload"] == name and r.get("n"):
            return r["n"]
    return None


def data_mb(results: dict, name: str) -> float | None:
    """Data size used for the memory ratio: n × (model columns) × 8 bytes."""
    n = _n(results, name)
    cols = results["workloads"].get(name, {}).get("model_columns")
    if n is None or not cols:
        return None
    return n * cols * 8 / 1e6


def fit_rss_delta(rec: dict) -> float | None:
    """Peak RSS during the fit minus RSS before it (MB), from the child's /proc/self/status."""
    before = (rec.get("mem_before_fit_mb") or {}).get("VmRSS")
    after = (rec.get("mem_after_fit_mb") or {}).get("VmHWM")
    if before is None or after is None:
        return None
    return after - before


# --------------------------------------------------------------------------------------------------
# targets
# --------------------------------------------------------------------------------------------------


_CMP = {"<=": ("≤", lambda a, b: a <= b), "<": ("<", lambda a, b: a < b), ">=": ("≥", lambda a, b: a >= b)}

# Issue #12 accepts a workload where sparselmm is slower than lme4 or mixedlm if the exception is explained
# with the measurement that shows why: workload -> one line (fill in after a full run on a quiet machine).
EXPLAINED_EXCEPTIONS: dict[str, str] = {
    "sleepstudy": (
        "mixedlm (Rust) fits the 180-row, 18-subject model in ~7 ms; sparselmm's ~18 ms is half fixed set-up "
        "(formulaic's model matrices and the design, ~9 ms: the set-up column) and half Python per-evaluation "
        "overhead on a 36 × 36 problem (f(θ̂) 0.1 ms against mixedlm's 0.005 ms); lme4 takes 37 ms"
    ),
    "slopes": (
        "1.05× mixedlm on the idle re-measurement (best of 3: 0.255 against 0.242 s), i.e. level within noise; "
        "a single (1 + x | g) term on 2e4 groups has no Schur complement, so the evaluation is the block-diagonal "
        "factor itself, where mixedlm's compiled loops and sparselmm's vectorised 2 × 2 kernels "
        "(sparselmm/linalg/small_blocks.py: 0.53 → 0.29 s) meet"
    ),
}


def targets(results: dict) -> list[dict]:
    """Done-when targets of issues #5 (vs lme4) and #12 (maximal designs, vs lme4 and mixedlm)."""
    by = _by(results)
    out = []

    def add(tid, ratio, threshold, cmp, detail, missing=None, issue=5, status=None):
        if ratio is None:
            status = "not run"
            if missing:
                detail = f"{detail} ({missing})"
        elif status is None:
            status = "met" if _CMP[cmp][1](ratio, threshold) else "not met"
        out.append({"id": tid, "issue": issue, "target": TARGET_TEXT[tid], "ratio": ratio, "threshold": threshold,
                    "cmp": cmp, "status": status, "detail": detail})

    def fit(name, prog):
        r = by.get((name, prog))
        return r["fit_seconds"] if _ok(r) else None

    def why(name, progs=("sparselmm", "lme4")):
        msgs = []
        for prog in progs:
            r = by.get((name, prog))
            if r is None:
                msgs.append(f"{prog} not run")
            elif not r.get("ok"):
                msgs.append(f"{prog}: {r.get('error')}")
        return "; ".join(msgs) or None

    def vs(name, ref):
        """sparselmm's fit time / ``ref``'s, and a note; a ``ref`` killed at its cap gives an upper bound."""
        s, r = fit(name, "sparselmm"), by.get((name, ref))
        if s is None:
            return None, ""
        if _ok(r):
            return s / r["fit_seconds"], ""
        if r and r.get("timed_out"):
            cap = r["cap_seconds"]
            return s / cap, f"; {ref} killed at its {cap:.0f} s cap, so this is an upper bound"
        return None, ""

    s, r = fit("insteval_ml", "sparselmm"), fit("insteval_ml", "lme4")
    add("insteval_ml", _ratio(s, r), 0.2, "<=", "fit time sparselmm / lme4", why("insteval_ml"))
    s, r = fit("crossed_1e6", "sparselmm"), fit("crossed_1e6", "lme4")
    ratio = _ratio(r, s)
    if ratio is None and _ok(by.get(("crossed_1e6", "sparselmm"))) and (by.get(("crossed_1e6", "lme4")) or {}).get(
        "timed_out"
    ):  # lme4 hit its cap: the speed-up is at least cap / sparselmm time
        ratio = by[("crossed_1e6", "lme4")]["cap_seconds"] / s
    add("crossed_1e6", ratio, 3.0, ">=", "fit time lme4 / sparselmm", why("crossed_1e6"))
    a, b = by.get(("rep_10x", "sparselmm")), by.get(("rep_1x", "sparselmm"))
    pe = _ratio(a.get("per_eval_seconds") if _ok(a) else None, b.get("per_eval_seconds") if _ok(b) else None)
    detail = "f(θ̂) time per call, rep_10x / rep_1x"
    if _ok(a) and _ok(b):
        fe = _ratio(a["fit_seconds"] / a["n_evals_total"], b["fit_seconds"] / b["n_evals_total"])
        detail += f"; fit time / evaluations gives {fe:.2f}"
        la, lb = by.get(("rep_10x", "lme4")), by.get(("rep_1x", "lme4"))
        if _ok(la) and _ok(lb) and la.get("per_eval_seconds") and lb.get("per_eval_seconds"):
            detail += f"; lme4's own ratio is {la['per_eval_seconds'] / lb['per_eval_seconds']:.2f}"
    add("rep", pe, 1.3, "<=", detail, why("rep_10x") or why("rep_1x"))
    s, r = fit("sleepstudy", "sparselmm"), fit("sleepstudy", "lme4")
    add("sleepstudy", _ratio(s, r), 1.0, "<=", "fit time sparselmm / lme4", why("sleepstudy"))

    # issue #12: the maximal crossed designs, against lme4 and mixedlm
    for name, ref, threshold, cmp in (("maximal_60x40", "lme4", 0.5, "<="), ("maximal_60x40", "mixedlm", 1.0, "<"),
                                      ("maximal_600x400", "lme4", 0.1, "<="),
                                      ("maximal_600x400", "mixedlm", 0.2, "<="), ("kb07", "lme4", 0.25, "<=")):
        ratio, note = vs(name, ref)
        add(f"{name}_{ref}", ratio, threshold, cmp, f"fit time sparselmm / {ref}{note}",
            why(name, ("sparselmm", ref)), issue=12)
    s, r = by.get(("kb07", "sparselmm")), by.get(("kb07", "lme4"))
    ratio, detail = None, "optimiser evaluations sparselmm / lme4's BOBYQA (`feval`)"
    if _ok(s) and _ok(r) and s.get("n_evals") and r.get("n_evals"):
        ratio = s["n_evals"] / r["n_evals"]
        grad = " (each with the gradient: L-BFGS-B)" if s.get("optimizer") == "lbfgsb" else ""
        detail += (f": {s['n_evals']}{grad} vs {r['n_evals']}; with the convergence checks "
                   f"{s.get('n_evals_total')} vs {r.get('n_evals_total')}")
    add("kb07_evals", ratio, 1.0, "<", detail, why("kb07"), issue=12)
    add("every_workload", issue=12, **_every_workload(results))
    return out


def _every_workload(results: dict) -> dict:
    """Issue #12's "every workload at least as fast as each of lme4 and mixedlm, or the exception
    explained": the worst sparselmm / reference fit-time ratio and the list of exceptions."""
    by = _by(results)
    slower, compared, not_compared = [], 0, []
    worst = None
    for name in results["workloads"]:
        s = by.get((name, "sparselmm"))
        if not _ok(s):
            continue
        for ref in ("lme4", "mixedlm"):
            r = by.get((name, ref))
            if _ok(r):
                ratio = s["fit_seconds"] / r["fit_seconds"]
            elif r and r.get("timed_out"):
                ratio = s["fit_seconds"] / r["cap_seconds"]  # an upper bound
            else:  # not run, or failed for another reason: no comparison, say so
                not_compared.append(f"`{name}` vs {ref} ({r.get('error') if r else 'not run'})")
                continue
            compared += 1
            worst = ratio if worst is None else max(worst, ratio)
            if ratio > 1.0:
                slower.append((name, ref, ratio))
    if not compared:
        return {"ratio": None, "threshold": 1.0, "cmp": "<=",
                "detail": "fit time sparselmm / lme4 and / mixedlm, every workload"}
    if not slower:
        detail = f"sparselmm at least as fast in all {compared} (workload, reference) pairs"
        status = "met"
    else:
        items = []
        for name, ref, ratio in sorted(slower, key=lambda t: -t[2]):
            note = EXPLAINED_EXCEPTIONS.get(name)
            items.append(f"`{name}` {ratio:.2f}× {ref}" + (f" — {note}" if note else " (not explained)"))
        detail = f"slower in {len(slower)} of {compared} pairs: " + "; ".join(items)
        status = "explained" if all(n in EXPLAINED_EXCEPTIONS for n, _, _ in slower) else "not met"
    if not_compared:  # "met" needs every pair
        detail += "; not compared: " + ", ".join(not_compared)
        status = "incomplete" if status == "met" else status
    return {"ratio": worst, "threshold": 1.0, "cmp": "<=", "detail": detail, "status": status}


TARGET_TEXT = {
    "insteval_ml": "InstEval ML: sparselmm fit time ≤ 0.2 × lme4's",
    "crossed_1e6": "crossed 1e6 rows, 5e4 × 5e3 levels: sparselmm ≥ 3× faster than lme4",
    "rep": "10x-replicated design: per-evaluation time within 1.3× of the 1x design",
    "sleepstudy": "sleepstudy: sparselmm total fit time ≤ lme4's",
    "maximal_60x40_lme4": "60 × 40 maximal: sparselmm fit time ≤ 0.5 × lme4's",
    "maximal_60x40_mixedlm": "60 × 40 maximal: sparselmm fit time below mixedlm's",
    "maximal_600x400_lme4": "600 × 400 maximal: sparselmm fit time ≤ 0.1 × lme4's",
    "maximal_600x400_mixedlm": "600 × 400 maximal: sparselmm fit time ≤ 0.2 × mixedlm's",
    "kb07_lme4": "kb07-sized 4 × 4 maximal: sparselmm fit time ≤ 0.25 × lme4's",
    "kb07_evals": "kb07-sized 4 × 4 maximal: fewer evaluations than lme4's BOBYQA",
    "every_workload": "every workload at least as fast as each of lme4 and mixedlm, or the exception explained",
}

ISSUE_TITLES = {5: "Issue #5: the engine against lme4",
                12: "Issue #12: maximal crossed models, against lme4 and mixedlm"}


# --------------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------------


def _f(x, fmt="{:.3g}", none="—"):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return none
    return fmt.format(x)


def _ms(x):
    return _f(None if x is None else x * 1e3)


def _levels_str(levels: dict) -> str:
    if not levels:
        return "—"
    return " × ".join(f"{v:,}" for v in levels.values())


def _evals_str(r: dict) -> str:
    stages = r.get("optimizer_stages")
    if stages:  # mixedlm: one entry per optimiser run (L-BFGS-B on its gradient, then COBYQA if it fell back)
        return " + ".join(f"{st['nfev']}{' ∇' if st.get('gradient') else ''}" for st in stages)
    if r.get("n_evals_total"):
        # sparselmm's L-BFGS-B evaluations compute the deviance and its analytic gradient together
        mark = " ∇" if r.get("optimizer") == "lbfgsb" else ""
        return f"{r.get('n_evals')}/{r.get('n_evals_total')}{mark}"
    if r.get("n_gradient_evals"):
        return f"{r.get('n_evals')} + {r['n_gradient_evals']} grad"
    return "—" if r.get("n_evals") in (None, -1) else str(r["n_evals"])


def rows(results: dict) -> list[dict]:
    """One row per (workload, program), in run order, with derived columns."""
    by = _by(results)
    order = list(results["workloads"])
    recs = sorted(results["records"], key=lambda r: (order.index(r["workload"]) if r["workload"] in order else 99,
                                                      PROGRAM_ORDER.get(r["program"], 9)))
    out = []
    for r in recs:
        if r.get("skipped"):  # listed once in the notes instead
            continue
        ref = by.get((r["workload"], "lme4"))
        mx = by.get((r["workload"], "mixedlm"))
        ok = _ok(r)
        fit = r.get("fit_seconds") if ok else None
        ntot = r.get("n_evals_total") or r.get("n_evals")
        dmb = data_mb(results, r["workload"])
        delta = fit_rss_delta(r) if ok else None
        row = {
            "workload": r["workload"],
            "program": r["program"] + (" (cached)" if r.get("reused_from_cache") else ""),
            "n": r.get("n") or _n(results, r["workload"]),
            "levels": _levels_str(_levels(results, r["workload"])),
            "fit": fit,
            "status": None if ok else (r.get("error") or "failed"),
            "x_lme4": _ratio(fit, ref.get("fit_seconds")) if (ok and _ok(ref) and r["program"] != "lme4") else None,
            "x_mixedlm": _ratio(fit, mx.get("fit_seconds")) if (ok and _ok(mx) and r["program"] != "mixedlm")
            else None,
            "evals": _evals_str(r) if ok else "—",
            "fit_per_eval": (fit / ntot) if (ok and ntot and ntot > 0 and r["program"] != "statsmodels") else None,
            "f_theta": r.get("per_eval_seconds") if ok else None,
            "setup": r.get("setup_seconds") if ok else None,
            "peak_rss": r.get("peak_rss_mb"),
            "delta_rss": delta,
            # relative to data only where the data are big enough for the ratio to mean something
            "delta_per_data": _ratio(delta, dmb) if dmb and dmb >= 1 else None,
            "peak_per_data": _ratio(r.get("peak_rss_mb"), dmb) if dmb and dmb >= 1 else None,
            "load": r.get("other_cpu_cores"),
            # statsmodels' -2 llf uses another parametrisation/constant: not compared
            "d_objective": (r["objective"] - ref["objective"]) if (ok and _ok(ref) and "objective" in r and
                                                                  r["program"] in ("sparselmm", "mixedlm")) else None,
        }
        out.append(row)
    return out


def console_table(results: dict) -> str:
    hdr = (f"{'workload':15s} {'program':12s} {'n':>10s} {'fit s':>8s} {'x lme4':>7s} {'x mixedlm':>9s} "
           f"{'evals':>11s} {'fit/ev ms':>9s} {'f(θ) ms':>8s} {'setup s':>8s} {'peak MB':>8s} {'ΔRSS/data':>9s} "
           f"{'Δobj':>8s} {'other':>5s}")
    lines = [hdr, "-" * len(hdr)]
    for row in rows(results):
        fit = _f(row["fit"]) if row["status"] is None else row["status"][:8]
        lines.append(
            f"{row['workload']:15s} {row['program'][:12]:12s} {_f(row['n'], '{:,}'):>10s} {fit:>8s} "
            f"{_f(row['x_lme4'], '{:.2f}'):>7s} {_f(row['x_mixedlm'], '{:.2f}'):>9s} {row['evals']:>11s} "
            f"{_ms(row['fit_per_eval']):>9s} {_ms(row['f_theta']):>8s} {_f(row['setup']):>8s} "
            f"{_f(row['peak_rss'], '{:.0f}'):>8s} {_f(row['delta_per_data'], '{:.1f}'):>9s} "
            f"{_f(row['d_objective'], '{:.2g}'):>8s} {_f(row['load'], '{:.2f}'):>5s}"
        )
    lines.append("")
    for t in results.get("targets", []):
        sym = _CMP.get(t.get("cmp", "<="), ("≤",))[0]
        lines.append(f"target #{t.get('issue', 5)} {t['id']:24s} {t['status']:9s} ratio {_f(t['ratio'], '{:.3f}')} "
                     f"({sym} {t['threshold']}) — {t['detail']}")
    return "\n".join(lines)


def _md_table(header: list[str], body: list[list[str]], align: str | None = None) -> str:
    align = align or "l" * len(header)
    sep = ["---:" if a == "r" else "---" for a in align]
    return "\n".join(["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
                     + ["| " + " | ".join(r) + " |" for r in body])


def _env_lines(env: dict) -> list[str]:
    py = env.get("python", {})
    r = env.get("r", {})
    lines = [
        f"* Date: {env.get('date')}; mode: **{env.get('_mode', '')}**; "
        f"total run time {env.get('total_seconds', 0) / 60:.1f} min.",
        f"* Machine: {env.get('cpu')}, {env.get('nproc')} cores (nproc), {_f(env.get('mem_gib'), '{:.0f}')} GiB RAM; "
        f"{env.get('os')}. Load average (1/5/15 min) at start "
        f"{tuple(round(x, 2) for x in env.get('loadavg_start', ()))}, "
        f"at end {tuple(round(x, 2) for x in env.get('loadavg_end', ()))}; other jobs were allowed on the machine, "
        "so treat differences below ~10–20 % as noise.",
        f"* Python {py.get('python')}: sparselmm {py.get('sparselmm')}, numpy {py.get('numpy')}, "
        f"scipy {py.get('scipy')}, "
        f"pandas {py.get('pandas')}, formulaic {py.get('formulaic')}, scikit-sparse {py.get('scikit-sparse')}, "
        f"nlopt {py.get('nlopt')}, statsmodels {py.get('statsmodels')}, mixedlm {py.get('mixedlm')}.",
    ]
    if env.get("sparselmm_source"):
        lines.append(f"* sparselmm source measured: {env['sparselmm_source']}.")
    tps = py.get("threadpools")
    if isinstance(tps, list):
        desc = "; ".join(f"{Path(t.get('filepath') or '').name} {t.get('version') or ''} "
                         f"({t.get('internal_api')}, {t.get('num_threads')} threads"
                         + (f", {t.get('architecture')}" if t.get("architecture") else "") + ")" for t in tps)
        lines.append(f"* Python BLAS/OpenMP (threadpoolctl, after importing sparselmm): {desc}.")
    if env.get("blas_threads"):
        lines.append(f"* BLAS threads forced to {env['blas_threads']} in every child (`--blas-threads`).")
    if env.get("cholmod_blas"):
        lines.append(f"* CHOLMOD used by scikit-sparse: {env['cholmod_blas']}.")
    if r and "error" not in r:
        lines.append(f"* {r.get('r')}: lme4 {r.get('lme4')}, Matrix {r.get('Matrix')} (its own bundled CHOLMOD); "
                     f"BLAS {r.get('blas')}; LAPACK {r.get('lapack')}; data read with "
                     f"{'data.table::fread' if r.get('data_table') else 'read.csv'}.")
    return lines


def render(results: dict, png_path: Path | None = None, md_path: Path | None = None) -> str:
    env = dict(results["environment"])
    env["_mode"] = results["mode"]
    tg = results.get("targets", [])
    rs = rows(results)
    md: list[str] = []
    md.append("# Benchmarks: sparselmm vs lme4 and mixedlm (and statsmodels)\n")
    md.append(
        "Generated by `benchmarks/run.py` (issues #5 and #12). Every (workload, program) pair is fitted in a fresh "
        "process "
        "on the same CSV bytes; times are the fit call only, data already loaded. Ratios are from the same run on "
        "the same machine; absolute seconds on a shared 2-core machine are noise, so read the ratios.\n"
    )
    md.append(f"Command: `{results['command']}`\n")
    md.append("## Environment\n")
    md.extend(_env_lines(env))
    md.append("")

    md.append("## Done-when targets\n")
    for issue in sorted({t.get("issue", 5) for t in tg}):
        md.append(f"### {ISSUE_TITLES.get(issue, f'Issue #{issue}')}\n")
        body = [[t["target"], _f(t["ratio"], "{:.3f}"),
                 f"{_CMP[t.get('cmp') or ('>=' if t['id'] == 'crossed_1e6' else '<=')][0]} {t['threshold']}",
                 f"**{t['status']}**", t["detail"]] for t in tg if t.get("issue", 5) == issue]
        md.append(_md_table(["target", "measured ratio", "threshold", "status", "how measured"], body, "lrrll"))
        md.append("")

    md.append("## Results\n")
    md.append("\n".join([
        "Columns:\n",
        "* **fit** — seconds of the fit call in the child, data already loaded: `lmer()` (sparselmm, "
        "`perf_counter`), `system.time(lmer())` elapsed (lme4), `mixedlm.lmer(formula, data, REML=)` (mixedlm, "
        "`perf_counter`, after `from mixedlm import lmer` has loaded its lazily imported modules), "
        "`mixedlm().fit()` (statsmodels).",
        "* **× lme4**, **× mixedlm** — fit time / lme4's (mixedlm's) fit time on the same workload (< 1: faster).",
        "* **evals** — optimiser evaluations / all evaluations including the convergence-check derivatives "
        "(lme4: `feval` / `feval` + 2k² when `optinfo$derivs` exists; statsmodels: log-likelihood + score calls). "
        "**∇** marks fits by L-BFGS-B on an analytic gradient (sparselmm: models on the dense- or block-Schur "
        "factor): each evaluation there computes the deviance and its gradient (≈ 2-3× the cost of f(θ̂)), and "
        "the convergence check takes k + 1 gradient evaluations instead of 2k² deviance evaluations. "
        "mixedlm: its `function_evals`, split by optimiser run — L-BFGS-B on its exact gradient (∇), then `+` the "
        "evaluations of its COBYQA fallback where that ran; mixedlm makes no derivative check after the fit.",
        "* **fit/eval** — fit time / all evaluations (spreads set-up and optimiser overhead over the evaluations).",
        "* **f(θ̂)** — one call of the deviance function at the optimum (sparselmm: the fitted model's deviance "
        "function; lme4: `lmer(devFunOnly = TRUE)`; mixedlm: `mkLmerDevfun(lFormula(...))`, the objective its "
        "optimiser calls): median over batches of calls (each batch ≥ 20 ms; ≥ 20 calls, 5 batches and 0.5 s in "
        "all).",
        "* **set-up** — formula + data → deviance function ready (sparselmm: `optinfo.setup_seconds`, part of the "
        "fit; lme4: the `devFunOnly` call, mixedlm: `mkLmerDevfun(lFormula(...))`, both timed after the fit).",
        "* **peak RSS** — the child process's `ru_maxrss` (interpreter, libraries and data included); **ΔRSS** — "
        "high-water mark after the fit minus RSS before it (library imported, data loaded); **ΔRSS / data** — "
        "ΔRSS over n × model columns × 8 bytes (shown from 1 MB of data).",
        "* **Δobj** — the program's criterion (REML criterion or deviance) − lme4's, for sparselmm and mixedlm "
        "(negative: a lower criterion than lme4's).",
        "* **other CPU** — cores kept busy by other processes while the child ran (system CPU time from "
        "/proc/stat minus the child's own, over its wall time): ≈ 0 on an idle machine, up to 2 when another job "
        "competed for both cores and the BLAS threads; treat such rows as noisy.\n",
    ]))
    header = ["workload", "program", "n", "levels", "fit s", "× lme4", "× mixedlm", "evals", "fit/eval ms",
              "f(θ̂) ms", "set-up s", "peak RSS MB", "ΔRSS MB", "ΔRSS / data", "Δobj", "other CPU"]
    body = []
    for row in rs:
        fit = _f(row["fit"]) if row["status"] is None else row["status"]
        body.append([row["workload"], row["program"], _f(row["n"], "{:,}"), row["levels"], fit,
                     _f(row["x_lme4"], "{:.2f}"), _f(row["x_mixedlm"], "{:.2f}"), row["evals"],
                     _ms(row["fit_per_eval"]), _ms(row["f_theta"]),
                     _f(row["setup"]), _f(row["peak_rss"], "{:.0f}"), _f(row["delta_rss"], "{:.0f}"),
                     _f(row["delta_per_data"], "{:.1f}"), _f(row["d_objective"], "{:.2g}"),
                     _f(row["load"], "{:.1f}")])
    md.append(_md_table(header, body, "llrlrrrrrrrrrrrr"))
    md.append("")

    md.append("### Workloads\n")
    for name, w in results["workloads"].items():
        md.append(f"* `{name}` — `{w['formula']}` ({'REML' if w['reml'] else 'ML'}): {w['description']}.")
    md.append("")

    md.append("## Where the time goes (sparselmm vs lme4 and mixedlm)\n")
    md.extend(_analysis(results))
    md.append("")

    if png_path is not None:
        rel = os.path.relpath(png_path, (md_path or png_path).parent)
        md.append("## Scaling\n")
        md.append(f"![fit time vs n and vs levels]({rel})\n")
        md.append("Log-log: fit time vs n (crossed sweep, levels growing with n), fit time vs total number of "
                  "levels (users + items; the fixed-n = 2e5 level sweep and the n sweep), and time per evaluation "
                  "f(θ̂) vs n. Crosses at the cap mark fits that were killed.\n")

    md.append("## Notes\n")
    md.extend(_notes(results))
    md.append("")
    md.append("## How to run\n")
    md.append(
        "```\n"
        "python benchmarks/run.py                 # default set (run time: see Environment), rewrites this file\n"
        "python benchmarks/run.py --quick         # ~3 min; writes benchmarks/.cache/last_run.{md,json,png}\n"
        "python benchmarks/run.py --large         # adds the 1e7-row crossed workload\n"
        "python benchmarks/run.py --only insteval_ml sleepstudy --skip-statsmodels\n"
        "python benchmarks/run.py --tag maximal          # issue #12's maximal designs (or --only 'maximal*' kb07)\n"
        "python benchmarks/run.py --quick --skip-mixedlm # without the PyPI mixedlm package\n"
        "python benchmarks/run.py --only 'rep_*' --reuse-r       # lme4 records from the cache (not same-run)\n"
        "python benchmarks/run.py --only insteval_ml --skip-r --profile   # cProfile of the sparselmm fit\n"
        "python benchmarks/run.py --list\n"
        "```\n"
        "Data are generated once into `benchmarks/.cache/` (CSV; delete it to regenerate). Logs of every child are "
        "in `benchmarks/.cache/logs/`; raw records in `benchmarks/results.json`.\n"
    )
    return "\n".join(md) + "\n"


# sections other scripts write into BENCHMARKS.md (inference_bench.py, bootstrap_bench.py, ...)
_MARKED = re.compile(r"<!--\s*([\w.-]+):begin\s*-->.*?<!--\s*\1:end\s*-->", re.S)


def replace_section(path: Path, section: str) -> None:
    """Put ``section`` (``<!-- NAME:begin -->`` … ``<!-- NAME:end -->``) into the markdown file ``path``: in
    place of its section of that NAME, or appended when it has none (the file is created if missing)."""
    path = Path(path)
    m = _MARKED.fullmatch(section.strip())
    if m is None:
        raise ValueError("section must start with <!-- NAME:begin --> and end with <!-- NAME:end -->")
    body = path.read_text() if path.exists() else ""
    name = re.escape(m.group(1))
    pattern = re.compile(rf"<!--\s*{name}:begin\s*-->.*?<!--\s*{name}:end\s*-->", re.S)
    if pattern.search(body):
        body = pattern.sub(lambda _: section.strip(), body, count=1)
    else:
        body = body.rstrip("\n") + "\n\n" + section.strip()
    path.write_text(body.rstrip("\n") + "\n")


def write_report(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, keeping every ``<!-- NAME:begin -->`` … ``<!-- NAME:end -->`` section of
    the file it replaces (appended after ``text``, in their old order), so re-running the benchmark does not
    drop what other scripts maintain there."""
    path = Path(path)
    kept = []
    if path.exists():
        kept = [m.group(0) for m in _MARKED.finditer(path.read_text()) if m.group(0) not in text]
    if kept:
        text = text.rstrip("\n") + "\n\n" + "\n\n".join(kept) + "\n"
    path.write_text(text)


def _analysis(results: dict) -> list[str]:
    """Decompose each sparselmm / lme4 fit-time ratio into evaluations × per-evaluation cost."""
    by = _by(results)
    lines = []
    slower, faster = [], []
    for name in results["workloads"]:
        s, r = by.get((name, "sparselmm")), by.get((name, "lme4"))
        if not (_ok(s) and _ok(r)):
            continue
        ratio = s["fit_seconds"] / r["fit_seconds"]
        ev = _ratio(s.get("n_evals_total"), r.get("n_evals_total"))
        pe = _ratio(s.get("per_eval_seconds"), r.get("per_eval_seconds"))
        su = _ratio(s.get("setup_seconds"), r.get("setup_seconds"))
        s_setup_share = s.get("setup_seconds", 0) / s["fit_seconds"] if s["fit_seconds"] else None
        text = (f"`{name}`: fit time ratio sparselmm/lme4 = {ratio:.2f} "
                f"({'slower' if ratio > 1 else 'faster'}); evaluations ratio {_f(ev, '{:.2f}')}, "
                f"per-evaluation f(θ̂) ratio {_f(pe, '{:.2f}')}, set-up ratio {_f(su, '{:.2f}')} "
                f"(set-up is {_f(None if s_setup_share is None else 100 * s_setup_share, '{:.0f}')} % of "
                f"sparselmm's fit)")
        (slower if ratio > 1 else faster).append((ratio, text))
    if slower:
        lines.append("sparselmm is **slower** than lme4 on:\n")
        lines.extend(f"* {t}." for _, t in sorted(slower, reverse=True))
        lines.append("")
    if faster:
        lines.append("sparselmm is **faster** than lme4 on:\n")
        lines.extend(f"* {t}." for _, t in sorted(faster))
        lines.append("")
    sm = [r for r in results["records"] if r["program"] == "statsmodels" and not r.get("skipped")]
    if sm:
        done = []
        for r in sm:
            ref = by.get((r["workload"], "lme4"))
            if _ok(r) and _ok(ref):
                done.append(f"`{r['workload']}` ({r['fit_seconds'] / ref['fit_seconds']:.3g}× lme4's time)")
            elif _ok(r):
                done.append(f"`{r['workload']}`")
        lines.append(f"statsmodels `MixedLM` finished {sum(_ok(r) for r in sm)} of {len(sm)} attempted workloads "
                     f"within its cap" + (": " + ", ".join(done) if done else "") + ".")
        lines.append("")
    lines.extend(_analysis_mixedlm(results))
    return lines or ["(no workload with both sparselmm and lme4 results)"]


def _analysis_mixedlm(results: dict) -> list[str]:
    """sparselmm / mixedlm per workload (fit, evaluations, f(θ̂)), and mixedlm's criterion against lme4's."""
    by = _by(results)
    mx = [r for r in results["records"] if r["program"] == "mixedlm"]
    if not mx:
        return []
    lines = []
    items = []
    for name in results["workloads"]:
        s, m = by.get((name, "sparselmm")), by.get((name, "mixedlm"))
        if not (_ok(s) and _ok(m)):
            continue
        ratio = s["fit_seconds"] / m["fit_seconds"]
        ev = _ratio(s.get("n_evals_total") or s.get("n_evals"), m.get("n_evals"))
        pe = _ratio(s.get("per_eval_seconds"), m.get("per_eval_seconds"))
        items.append((ratio, f"`{name}`: sparselmm/mixedlm = {ratio:.2f} ({'slower' if ratio > 1 else 'faster'}); "
                             f"evaluations ratio {_f(ev, '{:.2f}')} (sparselmm {_evals_str(s)}, mixedlm "
                             f"{_evals_str(m)}), per-evaluation f(θ̂) ratio {_f(pe, '{:.2f}')}"))
    if items:
        lines.append("sparselmm against mixedlm (slowest first):\n")
        lines.extend(f"* {t}." for _, t in sorted(items, reverse=True))
        lines.append("")
    # criterion: mixedlm should reach lme4's optimum; flag anything worse than rounding
    worse, failed = [], []
    for r in mx:
        ref = by.get((r["workload"], "lme4"))
        if not _ok(r):
            failed.append(f"`{r['workload']}` ({r.get('error')})")
        elif _ok(ref):
            d = r["objective"] - ref["objective"]
            if d > 1e-6 * max(1.0, abs(ref["objective"])):
                worse.append(f"`{r['workload']}` (+{d:.3g})")
    done = sum(_ok(r) for r in mx)
    text = f"mixedlm finished {done} of {len(mx)} workloads"
    text += "; failed or capped: " + ", ".join(failed) if failed else ""
    text += (". Its criterion is above lme4's (by more than 1e-6 relative) on " + ", ".join(worse)
             if worse else ". Its criterion is within 1e-6 (relative) of lme4's or below it wherever both ran")
    fallback = [f"`{r['workload']}`" for r in mx if _ok(r) and len(r.get("optimizer_stages") or []) > 1]
    if fallback:
        text += ("; its COBYQA fallback ran after L-BFGS-B on " + ", ".join(fallback) +
                 " (near-zero variances in a correlated block), which is where its evaluation counts jump")
    lines.append(text + ".")
    return lines


def _notes(results: dict) -> list[str]:
    names = set(results["workloads"])
    by_opt: dict[str, list[str]] = {}
    for r in results["records"]:
        if r["program"] == "sparselmm" and _ok(r):
            by_opt.setdefault(r.get("optimizer", "?"), []).append(f"`{r['workload']}`")
    used = "; ".join(f"{opt}: {', '.join(ws)}" for opt, ws in sorted(by_opt.items()))
    remeasured = sorted({r["workload"] for r in results["records"] if r.get("remeasured")})
    notes = []
    if remeasured:
        first = next(r for r in results["records"] if r.get("remeasured"))
        notes.append(
            f"* Rows of {', '.join(f'`{n}`' for n in remeasured)} (sparselmm, lme4, mixedlm) were "
            f"{first['remeasured']}; each workload's programs still ran in one run. In the full run the first "
            "maximal_60x40 fit took 0.71 s against 0.04 s in every other fit of it (a one-off stall), and the small "
            "models' numbers predate the written-out 2 × 2 kernels."
        )
    notes += [
        "* Every program uses its defaults. lme4: BOBYQA (nloptr) and its convergence checks (finite-difference "
        "gradient and Hessian). sparselmm: `optimizer=\"auto\"` — L-BFGS-B on the exact gradient of the profiled "
        "deviance where the deviance function has one (the dense-Schur and block-Schur factors of crossed models), "
        "BOBYQA (NLopt) with lme4's tolerances otherwise" + (f" (this run: {used})" if used else "") + "; the "
        "convergence checks (gradient and Hessian at the optimum) are included in the fit time of both.",
        "* The per-evaluation column f(θ̂) is the comparable cost of one deviance evaluation; fit/eval also "
        "spreads set-up and optimiser overhead over the evaluations.",
        "* Where sparselmm's time goes on the crossed workloads: one evaluation is a sparse product `Q w` "
        "(fixed pattern, built at set-up) scattered into the dense Schur complement of the smaller factor and "
        "LAPACK `potrf` on it; the gradient adds `potri`. On this 2-core machine `potrf` alone takes ≈ 11 ms "
        "(InstEval, 1 156²) and ≈ 0.5 s (crossed_1e6, 5 000²), `potri` ≈ 1.5× that — the floor of an "
        "evaluation. Fewer evaluations come from the exact gradient (7–10 L-BFGS-B steps where BOBYQA takes "
        "30–80).",
        "* Memory: peak RSS includes each runtime's baseline (Python + numpy/scipy/pandas/formulaic ≈ 100–150 MB, "
        "R + lme4 ≈ 100 MB); ΔRSS / data is the fit's own footprint relative to the data size.",
    ]
    if "crossed_1e7" not in names:
        notes.append("* The 1e7-row crossed workload (1e5 × 1e4 levels) is not in the default run: with both "
                     "programs it would exceed the ~30-minute budget on this 2-core machine. Run it with `--large`.")
    if not any(r["program"] == "mixedlm" for r in results["records"]):
        notes.append("* mixedlm was not run.")
    else:
        notes.append("* mixedlm (PyPI, Rust-backed: faer sparse Cholesky on a rayon thread pool): "
                     "`mixedlm.lmer(formula, data, REML=)` with its defaults, `optimizer=\"auto\"`: L-BFGS-B on "
                     "its exact gradient, and a COBYQA fit from the same start when that ends with a variance near "
                     "zero in a correlated block or unconverged (the lower criterion wins). It does no derivative "
                     "check after the fit (`lmerControl(calc_derivs=)` is accepted but unused in 1.3.0), so its "
                     "fit time has no counterpart of lme4's and sparselmm's convergence checks. Its first `lmer()` "
                     "call in a process imports most of the package (~0.3 s): the worker imports `lmer` before "
                     "the clock, as the other programs' libraries are imported before theirs. mixedlm lists θ "
                     "row by row within each k × k block (lme4: column by column; the same for k ≤ 2): the records "
                     "keep it in lme4's order (`theta`) and as reported (`theta_native`).")
    if not any("statsmodels" == r["program"] for r in results["records"]):
        notes.append("* statsmodels was not run.")
    else:
        notes.append("* statsmodels: `smf.mixedlm` with the grouping as `groups` (sleepstudy, nested, slopes) or one "
                     "all-covering group plus `vc_formula` for crossed designs; each fit capped (see the cap in the "
                     "table); its criterion is not compared (different parametrisation/constant).")
    noisy = sorted({r["workload"] for r in results["records"] if (r.get("other_cpu_cores") or 0) > 0.5})
    if noisy:
        notes.append("* **Noise:** another process kept more than half a core busy during the fits of "
                     + ", ".join(f"`{n}`" for n in noisy) + " (column *other CPU*); their ratios can be off by "
                     "tens of percent (threaded BLAS is hit hardest). Re-run them with `--only` on a quiet machine, "
                     "optionally with `--repeat 3`.")
    skipped = [r for r in results["records"] if r.get("skipped")]
    if skipped:
        names = ", ".join("`" + r["workload"] + "`" for r in skipped)
        notes.append(f"* statsmodels was not attempted on {names}: "
                     f"{skipped[0]['error']} with the same all-covering-group formulation.")
    if any(r.get("reused_from_cache") for r in results["records"]):
        notes.append("* **Some lme4 records were reused from an earlier run (`--reuse-r`) — those ratios are not "
                     "same-run.**")
    return notes


if __name__ == "__main__":  # re-render a report from saved results: report.py [results.json] [BENCHMARKS.md]
    import json
    import sys

    here = Path(__file__).resolve().parent
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else here / "results.json"
    dst = Path(sys.argv[2]) if len(sys.argv) > 2 else here.parent / "BENCHMARKS.md"
    res = json.loads(src.read_text())
    res["targets"] = targets(res)
    png = src.with_name("bench_scaling.png") if src.stem == "results" else src.with_suffix(".png")
    write_report(dst, render(res, png_path=png if png.exists() else None, md_path=dst.resolve()))
    print(f"wrote {dst}")
