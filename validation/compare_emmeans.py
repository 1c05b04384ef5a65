"""Compare sparselmm's emmeans, contrasts, emtrends and joint tests with R's emmeans, case by case.

Cases: ``validation/emmeans_cases.json`` (models, then one emmeans / emtrends call per case with an optional
contrast, or a joint test); references written by ``validation/run_emmeans.R``::

    Rscript validation/run_emmeans.R --out DIR
    python validation/compare_emmeans.py --reference DIR --report validation/REPORT_EMMEANS.md

Every case is compared twice:

* **at R's estimates** (``at``): lmer models are evaluated at exactly the θ lme4 found (a deviance function
  solved at R's θ, so β, vcov, the Satterthwaite and Kenward–Roger objects are those of R's fit); glmer
  models take R's β and vcov(β). Only the emmeans algebra (grid, weights, contrasts, adjustments, link)
  and lmerTest's finite differences separate the two: the tight tolerances below, which a wrong grid,
  weighting, df or adjustment cannot meet.
* **as fitted** (``fit``): sparselmm's own fit, what a user sees; its estimates differ from lme4's within
  the optimisers' tolerances (validation/REPORT_INFERENCE.md, REPORT_GLMM.md), so these tolerances are
  those differences, not the algebra's.

The statsmodels-facade case is compared as fitted only (its fit is not rebuilt at R's θ).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
CASES_FILE = ROOT / "validation" / "emmeans_cases.json"
REFERENCE_DIR = ROOT / "validation" / "reference_emmeans"

# Relative differences |ours - R| / scale. estimate: scale max(|R|, R's SE); se, df: |R|; stat: max(|R|, 1);
# p: absolute. "mvt" p-values are Monte Carlo on both sides (mvtnorm's abseps 1e-3, here 4e5 draws).
# joint_tests: emmeans rounds F to 3 decimals and the dfs to 2 (so does sparselmm): F and df2 absolute.
TOLERANCES = {
    "at": {"estimate": 1e-6, "se": 1e-5, "df": 1e-3, "stat": 1e-5, "p": 1e-4, "p_mvt": 5e-3, "F": 1.5e-3, "df2": 0.011},
    "fit": {"estimate": 2e-3, "se": 2e-2, "df": 1e-2, "stat": 2e-2, "p": 5e-3, "p_mvt": 1e-2, "F": 5e-3, "df2": 0.05},
}
ESTIMATE_COLUMNS = {"emmean", "prob", "rate", "response", "estimate", "ratio", "odds.ratio", "lower.CL", "upper.CL",
                    "asymp.LCL", "asymp.UCL"}  # fmt: skip


def load_data(model: dict) -> pd.DataFrame:
    import sparselmm

    src = model["data"]
    if src.startswith("dataset:"):
        d = sparselmm.datasets.load(src.split(":", 1)[1])
    else:
        d = pd.read_csv(ROOT / src.split(":", 1)[1])
    for f in model.get("factors", []):
        if pd.api.types.is_numeric_dtype(d[f]):
            d[f] = d[f].astype(str)
    if model.get("exclude"):
        drop = np.ones(len(d), dtype=bool)
        for v, level in model["exclude"].items():
            drop &= d[v].astype(str).to_numpy() == str(level)
        d = d[~drop].reset_index(drop=True)
    return d


class AtReference:
    """A glmer fit seen with R's β and vcov(β) (everything else delegated to the fit)."""

    def __init__(self, fit, ref_fit: dict):
        self._fit = fit
        names = list(fit.fixef.index)
        self.fixef = pd.Series(ref_fit["fixef"], index=names)
        self.vcov = pd.DataFrame(np.asarray(ref_fit["vcov"], float), index=names, columns=names)

    def __getattr__(self, name):
        return getattr(self._fit, name)


def fit_models(model: dict, ref_fit: dict | None):
    """(as fitted, at R's estimates or None) for one model of the cases file."""
    import sparselmm
    from sparselmm.optimize import OptInfo
    from sparselmm.results import LmerResult

    d = load_data(model)
    kind = model["kind"]
    if kind == "statsmodels":
        from sparselmm.statsmodels import MixedLM

        md = MixedLM.from_formula(model["formula"], d, groups=model["groups"], re_formula=model["re_formula"])
        return md.fit(reml=model["reml"]), None
    if kind == "glmer":
        fit = sparselmm.glmer(model["formula"], d, family=model["family"])
        return fit, (AtReference(fit, ref_fit) if ref_fit else None)
    fit = sparselmm.lmer(model["formula"], d, reml=model["reml"])
    at = None
    if ref_fit:
        f = sparselmm.deviance_function(model["formula"], d, reml=model["reml"])
        theta = np.atleast_1d(np.asarray(ref_fit["theta"], dtype=float))
        info = OptInfo(optimizer="none", n_evals=0, converged=True, message="theta fixed (lme4's)", theta_start=theta)
        at = LmerResult(f, f.solve(theta), info)
    return fit, at


def ours(case: dict, m) -> dict[str, pd.DataFrame]:
    import sparselmm

    out = {}
    ddf = case["ddf"]
    emm = None
    if "emmeans" in case:
        e = case["emmeans"]
        emm = sparselmm.emmeans(
            m, e["specs"], at=e.get("at"), weights=e.get("weights", "equal"), type=e.get("type", "link"), ddf=ddf
        )
        out["emmeans_table"] = emm.to_frame()
    if "emtrends" in case:
        e = case["emtrends"]
        emm = sparselmm.emtrends(m, e["specs"], e["var"], ddf=ddf)
        out["emtrends_table"] = emm.to_frame()
    if "contrast" in case:
        c = case["contrast"]
        con = sparselmm.contrast(emm, c["method"], adjust=c.get("adjust"), ref=c.get("ref", 1))
        out["contrast_table"] = con.to_frame()
    if "joint_tests" in case:
        out["joint_tests_table"] = sparselmm.joint_tests(m, by=case["joint_tests"].get("by"), ddf=ddf)
    return out


def _num(values) -> np.ndarray:
    return np.array([np.inf if v is None else v for v in values], dtype=float)


def compare_table(name: str, mine: pd.DataFrame, ref: dict, tol: dict, mvt: bool) -> tuple[dict, list[str]]:
    """Largest scaled difference per kind and the failures of one table."""
    worst: dict[str, float] = {}
    fails: list[str] = []
    if list(mine.columns) != list(ref):
        fails.append(f"{name}: columns {list(mine.columns)} != R's {list(ref)}")
        return worst, fails
    n = len(next(iter(ref.values())))
    if len(mine) != n:
        fails.append(f"{name}: {len(mine)} rows, R has {n}")
        return worst, fails
    for col, rvals in ref.items():
        if any(isinstance(v, str) for v in rvals):
            if [str(v) for v in mine[col]] != [str(v) for v in rvals]:
                fails.append(f"{name}: {col} {list(mine[col])} != R's {rvals}")
            continue
        r = _num(rvals)
        o = mine[col].to_numpy(dtype=float)
        finite = np.isfinite(r)
        if not np.array_equal(finite, np.isfinite(o)):
            fails.append(f"{name}: {col} finite pattern differs ({o} vs {r})")
            continue
        r, o = r[finite], o[finite]
        if not r.size:
            continue
        se = _num(ref["SE"])[finite] if "SE" in ref else np.ones_like(r)
        if col in ESTIMATE_COLUMNS or col.endswith(".trend"):
            kind, diff = "estimate", np.abs(o - r) / np.maximum(np.abs(r), se)
        elif col == "SE":
            kind, diff = "se", np.abs(o - r) / np.abs(r)
        elif col == "df" or col == "df1":
            kind, diff = "df", np.abs(o - r) / np.abs(r)
        elif col == "df2":
            kind, diff = "df2", np.abs(o - r)
        elif col in ("t.ratio", "z.ratio"):
            kind, diff = "stat", np.abs(o - r) / np.maximum(np.abs(r), 1.0)
        elif col == "F.ratio":
            kind, diff = "F", np.abs(o - r)
        elif col == "p.value":
            kind, diff = ("p_mvt" if mvt else "p"), np.abs(o - r)
        elif col == "null":
            kind, diff = "estimate", np.abs(o - r)
        else:  # a numeric grid column (at= values)
            kind, diff = "estimate", np.abs(o - r) / np.maximum(np.abs(r), 1.0)
        d = float(np.max(diff))
        worst[kind] = max(worst.get(kind, 0.0), d)
        if d > tol[kind]:
            fails.append(f"{name}: {col} differs by {d:.2e} > {tol[kind]:.0e} (ours {o.tolist()}, R {r.tolist()})")
    return worst, fails


def run(reference: Path, ids: list[str] | None = None) -> list[dict]:
    spec = json.loads(CASES_FILE.read_text())
    results = []
    fits: dict[str, tuple] = {}
    for case in spec["cases"]:
        if ids and case["id"] not in ids:
            continue
        res = {"id": case["id"], "model": case["model"], "fails": [], "worst": {"at": {}, "fit": {}}}
        path = reference / f"{case['id']}.json"
        if not path.exists():
            res["fails"].append(f"no reference {path}")
            results.append(res)
            continue
        ref = json.loads(path.read_text())
        res["versions"] = (ref["R"], ref["emmeans"], ref["lme4"])
        model = spec["models"][case["model"]]
        try:
            if case["model"] not in fits:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    fits[case["model"]] = fit_models(model, ref["fit"] if model["kind"] != "statsmodels" else None)
            fit, at = fits[case["model"]]
            mvt = case.get("contrast", {}).get("adjust") == "mvt" or case.get("contrast", {}).get("method") == "consec"
            for tier, m in (("at", at), ("fit", fit)):
                if m is None:
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    tables = ours(case, m)
                for name, table in tables.items():
                    worst, fails = compare_table(name, table, ref[name], TOLERANCES[tier], mvt)
                    for k, v in worst.items():
                        res["worst"][tier][k] = max(res["worst"][tier].get(k, 0.0), v)
                    res["fails"] += [f"{tier} {f}" for f in fails]
        except Exception as e:  # noqa: BLE001 - reported per case
            res["fails"].append(f"{type(e).__name__}: {e}")
        results.append(res)
    return results


def report(results: list[dict], path: Path) -> None:
    ok = sum(not r["fails"] for r in results)
    versions = next((r["versions"] for r in results if "versions" in r), ("?", "?", "?"))
    kinds = ["estimate", "se", "df", "stat", "p", "p_mvt", "F", "df2"]
    lines = [
        "# sparselmm vs R's emmeans: validation report",
        "",
        f"Generated by `python validation/compare_emmeans.py`. emmeans {versions[1]}, lme4 {versions[2]}, "
        f"{versions[0]}.",
        "",
        f"**{ok} of {len(results)} cases within tolerance.**",
        "",
        "Cells are the largest differences per quantity over every table of the case: **at** R's estimates "
        "(lmer at lme4's θ̂, glmer at lme4's β and vcov) and as **fit**ted by sparselmm. Scales: estimates "
        "(and confidence limits) relative to max(|R|, SE); SE and df relative; t/z ratios relative to "
        "max(|R|, 1); p-values absolute; joint tests' F and df2 absolute (emmeans rounds them to 3 and 2 "
        "decimals). Tolerances (validation/compare_emmeans.py):",
        "",
        f"* at R's estimates: {TOLERANCES['at']}",
        f"* as fitted: {TOLERANCES['fit']}",
        "",
        "| case | model | ok | "
        + " | ".join(f"at {k}" for k in kinds)
        + " | "
        + " | ".join(f"fit {k}" for k in kinds)
        + " |",
        "|---|---|---|" + "---|" * (2 * len(kinds)),
    ]
    for r in results:
        cells = []
        for tier in ("at", "fit"):
            for k in kinds:
                v = r["worst"][tier].get(k)
                cells.append("–" if v is None else f"{v:.1e}")
        lines.append(f"| {r['id']} | {r['model']} | {'yes' if not r['fails'] else 'NO'} | " + " | ".join(cells) + " |")
    fails = [(r["id"], f) for r in results for f in r["fails"]]
    if fails:
        lines += ["", "## Failures", ""] + [f"* {i}: {f}" for i, f in fails]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reference", type=Path, default=REFERENCE_DIR)
    ap.add_argument("--report", type=Path, default=None)
    ap.add_argument("ids", nargs="*")
    args = ap.parse_args(argv)
    results = run(args.reference, args.ids or None)
    for r in results:
        status = "ok  " if not r["fails"] else "FAIL"
        print(f"{status} {r['id']:32s} at={r['worst']['at']} fit={r['worst']['fit']}".replace("'", ""))
        for f in r["fails"]:
            print("     ", f[:400])
    if args.report:
        report(results, args.report)
    n_ok = sum(not r["fails"] for r in results)
    print(f"{n_ok}/{len(results)} cases within tolerance")
    return 0 if n_ok == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
