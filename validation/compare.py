"""Compare sparselmm with lme4, case by case, using the case list and lme4's reference JSON.

Used by ``tests/test_validation.py`` (committed references, no R needed) and by ``nox -s validate``
(``python validation/compare.py --reference DIR --report validation/REPORT.md`` after refitting in R).
All tolerances live in :data:`TOLERANCES`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
CASES_FILE = ROOT / "validation" / "cases.json"
REFERENCE_DIR = ROOT / "validation" / "reference"

# One place for every tolerance (issue #3). Relative tolerances use max(|lme4|, floor) as the scale.
TOLERANCES = {
    "devfun": 1e-9,  # deviance at fixed theta, relative: exact algebra
    "objective_worse": 1e-7,  # optimised objective may not exceed lme4's by more than this, relative
    "beta": 1e-5,  # relative to max(|beta|, SE)
    "se": 1e-4,
    "sigma": 1e-3,
    "theta": 1e-3,  # relative to max(|theta|, 1) (flat likelihoods)
    "ranef": 1e-3,  # relative to the largest |mode| of the factor
    "condsd": 1e-3,
    "fitted": 1e-5,  # relative to the response's spread
    "predict": 1e-5,
}


def load_cases() -> list[dict]:
    return json.loads(CASES_FILE.read_text())


def load_case_data(case: dict) -> pd.DataFrame:
    """The case's data as pandas reads it (string columns stay strings, as R makes them factors)."""
    import sparselmm

    source = case["data"]
    if source.startswith("dataset:"):
        return sparselmm.datasets.load(source.split(":", 1)[1])
    return pd.read_csv(ROOT / source.split(":", 1)[1])


def load_newdata(case: dict, train: pd.DataFrame) -> pd.DataFrame | None:
    """Newdata with the training frame's column types (digit-only factor labels stay labels)."""
    if not case.get("newdata"):
        return None
    path = case["newdata"]
    new = pd.read_csv(ROOT / path.split(":", 1)[-1], dtype=str)
    for col in new.columns:
        if (
            col in train.columns
            and pd.api.types.is_numeric_dtype(train[col])
            and not isinstance(train[col].dtype, pd.CategoricalDtype)
        ):
            new[col] = pd.to_numeric(new[col])
        elif col in train.columns and isinstance(train[col].dtype, pd.CategoricalDtype):
            cats = list(train[col].cat.categories.astype(str))
            extra = [v for v in pd.unique(new[col]) if v not in cats]
            new[col] = pd.Categorical(new[col], categories=cats + extra)
    return new


@dataclass
class CaseResult:
    """Differences between sparselmm and lme4 for one case."""

    case_id: str
    diffs: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    objective_gain: float = 0.0  # lme4 objective − ours (positive: sparselmm is better)
    seconds: float = 0.0
    r_seconds: float = float("nan")
    n_evals: int = 0
    r_evals: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures


def _rel(a, b, floor=0.0) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), floor)))


def compare_case(case: dict, ref: dict, fit: bool = True) -> CaseResult:
    """Fit one case with sparselmm and compare every recorded quantity with lme4's."""
    import sparselmm

    out = CaseResult(case["id"], r_seconds=ref.get("fit_seconds", float("nan")), r_evals=ref.get("n_evals", 0))
    data = load_case_data(case)
    kw = dict(reml=case["reml"], weights=case.get("weights"), offset=case.get("offset"))

    def check(name, diff, tol):
        out.diffs[name] = diff
        if not diff <= tol:
            out.failures.append(f"{name}: difference {diff:.3g} exceeds tolerance {tol:g}")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = sparselmm.deviance_function(case["formula"], data, **kw)
    if len(f.design.theta0) != len(ref["theta"]):
        out.failures.append(f"theta length {len(f.design.theta0)} differs from lme4's {len(ref['theta'])}")
        return out
    dev_diffs = [_rel(f(np.array(d["theta"], float)), d["value"]) for d in ref["devfun"]]
    check("devfun", max(dev_diffs), TOLERANCES["devfun"])
    if not fit:
        return out

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = sparselmm.lmer(case["formula"], data, **kw)
    out.seconds = time.perf_counter() - t0
    out.n_evals = m.optinfo.n_evals
    out.objective_gain = ref["objective"] - m.objective
    worse = max(0.0, -out.objective_gain) / abs(ref["objective"])
    check("objective", worse, TOLERANCES["objective_worse"])
    beta_names = ref["beta_names"]
    if len(m.fixef) != len(beta_names):
        out.failures.append(f"{len(m.fixef)} fixed effects, lme4 has {len(beta_names)}")
        return out
    se_ref = np.array(ref["se"], float)
    # beta relative to max(|beta|, SE): a coefficient near zero is judged on its standard error's scale
    beta_ref = np.array(ref["beta"], float)
    beta_diff = np.abs(m.fixef.to_numpy() - beta_ref) / np.maximum(np.abs(beta_ref), se_ref)
    check("beta", float(np.max(beta_diff)), TOLERANCES["beta"])
    check("se", _rel(m.bse.to_numpy(), se_ref), TOLERANCES["se"])
    check("sigma", _rel(m.sigma, ref["sigma"]), TOLERANCES["sigma"])
    check("theta", _rel(m.theta, ref["theta"], floor=1.0), TOLERANCES["theta"])
    check(
        "loglik",
        _rel(m.loglik, ref["loglik"]),
        TOLERANCES["objective_worse"] * 10 + abs(out.objective_gain) / abs(ref["loglik"]),
    )

    ours = m.ranef(cond_var=True)
    worst = worst_sd = 0.0
    for g, r in ref["ranef"].items():
        if g not in ours:
            out.failures.append(f"grouping factor {g!r} missing from ranef (have {list(ours)})")
            continue
        mine = ours[g]
        idx = pd.Index(mine.index.astype(str))
        pos = idx.get_indexer([str(x) for x in r["levels"]])
        if (pos < 0).any():
            out.failures.append(f"ranef levels of {g!r} differ from lme4's")
            continue
        vals = np.array(r["values"], float).reshape(len(r["levels"]), -1)
        scale = max(np.max(np.abs(vals)), 1e-8 * max(1.0, ref["sigma"]))
        worst = max(worst, float(np.max(np.abs(mine.to_numpy()[pos] - vals)) / scale))
        csd = np.array(r["condsd"], float).reshape(vals.shape)
        sd_scale = max(np.max(np.abs(csd)), 1e-6 * ref["sigma"])  # singular fits: SDs ~ 0
        worst_sd = max(worst_sd, float(np.max(np.abs(mine.attrs["cond_sd"].to_numpy()[pos] - csd)) / sd_scale))
    check("ranef", worst, TOLERANCES["ranef"])
    check("condsd", worst_sd, TOLERANCES["condsd"])

    y_scale = float(np.std(m.y)) or 1.0
    rows = np.array(ref["fitted_rows"], int) - 1
    check("fitted", float(np.max(np.abs(m.fitted()[rows] - np.array(ref["fitted"])))) / y_scale, TOLERANCES["fitted"])
    new = load_newdata(case, data)
    if new is not None and ref.get("predict"):
        # lme4's predict() with newdata leaves out an offset given as lmer(offset=); so do we (no offset=)
        p_re = m.predict(new, allow_new_levels=True)
        p_fx = m.predict(new, re_form="~0")
        diff = max(
            float(np.max(np.abs(p_re - np.array(ref["predict"]["re"], float)))),
            float(np.max(np.abs(p_fx - np.array(ref["predict"]["fixed"], float)))),
        )
        check("predict", diff / y_scale, TOLERANCES["predict"])
    return out


def run(reference_dir: Path, case_ids=None, skip_slow=False, fit=True) -> list[CaseResult]:
    results = []
    for case in load_cases():
        if case_ids and case["id"] not in case_ids:
            continue
        if skip_slow and case.get("slow"):
            continue
        ref_path = reference_dir / f"{case['id']}.json"
        if not ref_path.exists():
            r = CaseResult(case["id"])
            r.failures.append(f"no lme4 reference at {ref_path}")
            results.append(r)
            continue
        results.append(compare_case(case, json.loads(ref_path.read_text()), fit=fit))
    return results


def write_report(results: list[CaseResult], path: Path, meta: dict) -> None:
    lines = [
        "# sparselmm vs lme4: validation report",
        "",
        f"Generated by `nox -s validate`. lme4 {meta.get('lme4_version', '?')}, {meta.get('r_version', '?')}; "
        f"sparselmm {meta.get('sparselmm_version', '?')}. Tolerances (validation/compare.py): "
        + ", ".join(f"{k} {v:g}" for k, v in TOLERANCES.items())
        + ".",
        "",
        f"**{sum(r.ok for r in results)} of {len(results)} cases within tolerance.**",
        "",
        "objective gain = lme4's objective − sparselmm's (positive: sparselmm found a lower criterion). "
        "Differences are the relative measures defined in compare.py.",
        "",
        "| case | ok | devfun | objective gain | beta | se | sigma | theta | ranef | condsd | predict "
        "| sparselmm s (evals) | lme4 s (evals) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    columns = ("devfun", "objective_gain", "beta", "se", "sigma", "theta", "ranef", "condsd", "predict")
    for r in results:
        cells = [
            f"{r.objective_gain:.2e}" if k == "objective_gain" else (f"{r.diffs[k]:.1e}" if k in r.diffs else "–")
            for k in columns
        ]
        lines.append(
            f"| {r.case_id} | {'yes' if r.ok else 'NO'} | "
            + " | ".join(cells)
            + f" | {r.seconds:.3f} ({r.n_evals}) | {r.r_seconds:.3f} ({r.r_evals}) |"
        )
    failed = [r for r in results if not r.ok]
    if failed:
        lines += ["", "## Failures", ""]
        for r in failed:
            lines += [f"- **{r.case_id}**: " + "; ".join(r.failures)]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("cases", nargs="*")
    ap.add_argument("--reference", type=Path, default=REFERENCE_DIR)
    ap.add_argument("--report", type=Path, default=None)
    ap.add_argument("--skip-slow", action="store_true")
    args = ap.parse_args(argv)
    import sparselmm

    results = run(args.reference, args.cases or None, args.skip_slow)
    meta = {"sparselmm_version": sparselmm.__version__}
    for r in results:
        p = args.reference / f"{r.case_id}.json"
        if p.exists():
            ref = json.loads(p.read_text())
            meta.update(lme4_version=ref.get("lme4_version"), r_version=ref.get("r_version"))
            break
    for r in results:
        status = "ok " if r.ok else "FAIL"
        print(
            f"{status} {r.case_id:36s} gain={r.objective_gain:+.2e} "
            + " ".join(f"{k}={v:.1e}" for k, v in r.diffs.items())
        )
        for f in r.failures:
            print(f"       {f}")
    if args.report:
        write_report(results, args.report, meta)
        print(f"wrote {args.report}")
    n_fail = sum(not r.ok for r in results)
    print(f"{len(results) - n_fail} passed, {n_fail} failed")
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
