"""Compare sparselmm's inference with lmerTest (Satterthwaite) and pbkrtest (Kenward-Roger), case by case.

Cases: ``validation/inference_cases.json``; references: ``validation/reference_inference/<id>.json``
written by ``validation/run_lmertest.R``. Used by ``tests/test_inference_validation.py`` (committed
references, no R needed) and live::

    Rscript validation/run_lmertest.R --out DIR
    python validation/compare_inference.py --reference DIR --report validation/REPORT_INFERENCE.md

Every case is compared twice:

* **at lme4's θ̂** (``at``): sparselmm's inference evaluated at exactly the θ lme4 found (a deviance
  function solved at the reference θ). Both sides then start from the same fitted covariance, so the
  only differences are lmerTest's finite differences (numDeriv) and rounding: tight tolerances that a
  wrong formula cannot meet.
* **as fitted** (``fit``): ``sparselmm.lmer``'s own fit, i.e. what a user sees. Its θ̂ differs from
  lme4's by the optimisers' tolerances (validation/compare.py allows 1e-3 on θ), which moves the
  degrees of freedom and standard errors by up to ~1e-4 (measured; see validation/README.md).

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
CASES_FILE = ROOT / "validation" / "inference_cases.json"
REFERENCE_DIR = ROOT / "validation" / "reference_inference"

# One place for every tolerance. All are relative differences, |ours − R| / scale, with the scale named
# per quantity:
#   estimate: max(|R estimate|, R's standard error)      se, df, DenDF, Sum/Mean Sq: |R value|
#   t value / F value: max(|R value|, 1)                  p-values: max(R p, 1e-300)
# NumDF must be equal. "contrast_L" is absolute, on show_tests' matrices (lmerTest rounds its type-III
# contrasts to 7 significant digits with zapsmall, so they have to be rounded the same way to match).
# The comments give the largest difference measured on the 32 cases (R 4.2.2, lmerTest 3.1-3,
# pbkrtest 0.5.2; validation/README.md, "Inference references", has the measurements and what wrong
# formulas give instead).
TOLERANCES = {
    # sparselmm at lme4's θ̂ vs lmerTest / pbkrtest: the same fitted covariance on both sides
    "at": {
        "estimate": 1e-9,  # exact algebra on both sides; measured 1.8e-11 (InstEval)
        "se": 1e-9,  # sqrt(lᵀΦl); measured 2.5e-12
        "satt_df": 5e-6,  # lmerTest's numDeriv Hessian/Jacobian; measured 1.1e-6 (singular_slopes_ml), else ≤ 3e-7
        "satt_df_exact": 1e-9,  # vs run_lmertest.R's analytic derivatives ("exact"); measured 9.8e-12
        "kr_df": 1e-9,  # pbkrtest is exact (dense) algebra; measured 1.8e-12
        "kr_se": 1e-9,  # sqrt(lᵀΦ_A l); measured 2.3e-13
        "stat": 1e-9,  # t and F values; measured 3.5e-11
        "p": 2e-4,  # the df error through the t/F tail; measured 2.4e-5
        "ss": 1e-9,  # Sum Sq, Mean Sq; measured 3.5e-11
    },
    # sparselmm's own fit vs lmerTest / pbkrtest: θ̂ differs from lme4's within the optimisers' tolerances
    # (measured up to 3e-5 relative here; validation/compare.py allows 1e-3), which moves everything
    "fit": {
        "estimate": 3e-5,  # measured 8.0e-6 (InstEval); compare.py's beta tolerance is 1e-5
        "se": 2e-4,  # measured 3.3e-5
        "satt_df": 5e-4,  # measured 9.5e-5 (InstEval REML), 9.1e-5 (Penicillin)
        "kr_df": 5e-4,  # measured 1.3e-5
        "kr_se": 2e-4,  # measured 2.7e-5
        "stat": 5e-4,  # measured 8.2e-5
        "p": 3e-2,  # tiny p-values amplify the t error (Δlog p ≈ |t|·Δt); measured 7.5e-3
        "ss": 5e-4,  # measured 8.2e-5
    },
    # as fitted, on a boundary fit whose likelihood is flat along the boundary (case field "fit_tier":
    # "flat"): on singular_slopes_ml the ML deviance is the same to 1e-12 for θ₃ = 1e-5 (sparselmm's
    # L-BFGS-B), 4.5e-5 (lme4) and 9e-4 (BOBYQA), while the Satterthwaite df move by 1e-3 relative and the
    # p-value of a 4.6-df contrast by 10 %: the own-fit comparison there can only be coarse (the "at" tier
    # checks the algebra exactly)
    "fit_flat": {
        "estimate": 1e-3,
        "se": 5e-3,
        "satt_df": 2e-2,  # measured 5.7e-3
        "kr_df": 2e-2,
        "kr_se": 5e-3,
        "stat": 5e-3,
        "p": 0.3,  # measured 0.097
        "ss": 5e-3,
    },
    "contrast_L": 1e-9,  # anova_contrasts() vs show_tests(anova()), absolute; measured 5.6e-16
    # ranova(): each reduced model is a fresh fit by each program; logLik relative to |logLik| (an own fit
    # may only be better than lmerTest's: lower is checked apart), the LRT in deviance units
    "ranova": {
        "loglik": 1e-7,
        "worse": 1e-8,  # how far below lmerTest's log-likelihood ours may be, relative
        "lrt": 1e-4,
        "p": 3e-2,
    },
}

T_COLS = ["Estimate", "Std. Error", "df", "t value", "Pr(>|t|)"]
F_COLS = ["Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"]
METHODS = {"satterthwaite": "Satterthwaite", "kr": "Kenward-Roger"}


def load_cases() -> list[dict]:
    return json.loads(CASES_FILE.read_text())


def load_case_data(case: dict) -> pd.DataFrame:
    """The case's data as pandas reads it (string columns stay strings, as R makes them factors)."""
    import sparselmm

    source = case["data"]
    if source.startswith("dataset:"):
        return sparselmm.datasets.load(source.split(":", 1)[1])
    return pd.read_csv(ROOT / source.split(":", 1)[1])


@dataclass
class CaseResult:
    """Differences between sparselmm and lmerTest/pbkrtest for one case.

    ``diffs`` maps ``"<tier>:<quantity>"`` (tier ``at`` or ``fit``, quantity a key of the tier's
    tolerances) to the largest difference seen over all tables; ``failures`` says where each exceeded
    its tolerance."""

    case_id: str
    diffs: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    theta_rel_diff: float = float("nan")  # sparselmm's θ̂ vs lme4's, relative to max(|θ|, 1)
    fit_seconds: float = 0.0
    inference_seconds: float = 0.0  # sparselmm: all tables of the own fit
    r_fit_seconds: float = float("nan")
    r_inference_seconds: float = float("nan")

    @property
    def ok(self) -> bool:
        return not self.failures


class _Checker:
    def __init__(self, out: CaseResult):
        self.out = out

    def check(self, tier: str, quantity: str, diff: float, where: str) -> None:
        key = f"{tier}:{quantity}"
        tol = TOLERANCES[tier][quantity]
        diff = diff if np.isfinite(diff) else np.inf  # NaN where R has a number counts as a failure
        self.out.diffs[key] = max(self.out.diffs.get(key, 0.0), diff)
        if not diff <= tol:
            self.out.failures.append(f"{where}: {quantity} difference {diff:.3g} exceeds {tier} tolerance {tol:g}")

    def fail(self, msg: str) -> None:
        self.out.failures.append(msg)


def _arr(x) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in np.atleast_1d(x)], dtype=float)


def _rel(ours, ref, scale) -> float:
    ours, ref, scale = _arr(ours), _arr(ref), _arr(scale)
    if ours.shape != ref.shape:
        return np.inf
    both_nan = np.isnan(ours) & np.isnan(ref)
    d = np.abs(ours - ref) / scale
    d = np.where(both_nan, 0.0, d)
    return float(np.max(d)) if d.size else 0.0


def _compare_table(chk: _Checker, tier: str, method: str, ours: pd.DataFrame, ref: dict, where: str, exact=False):
    """One lmerTest table (coefficients, a contest, an anova) given as columns, against ours (same rows)."""
    kr = method == "kr"
    df_key = "satt_df_exact" if exact else ("kr_df" if kr else "satt_df")
    cols = T_COLS if "t value" in ref else F_COLS
    missing = [c for c in cols if c not in ours.columns]
    if missing:
        chk.fail(f"{where}: columns {missing} missing (have {list(ours.columns)})")
        return
    n_ref = len(ref[cols[0]])
    if len(ours) != n_ref:
        chk.fail(f"{where}: {len(ours)} rows, R has {n_ref}")
        return
    o = {c: ours[c].to_numpy(dtype=float) for c in cols}
    r = {c: _arr(ref[c]) for c in cols}
    if exact:  # against the analytic reference only the df are of interest
        col = "df" if cols is T_COLS else "DenDF"
        chk.check(tier, df_key, _rel(o[col], r[col], np.abs(r[col])), where)
        return
    if cols is T_COLS:
        se = r["Std. Error"]
        chk.check(tier, "estimate", _rel(o["Estimate"], r["Estimate"], np.maximum(np.abs(r["Estimate"]), se)), where)
        chk.check(tier, "kr_se" if kr else "se", _rel(o["Std. Error"], se, se), where)
        chk.check(tier, df_key, _rel(o["df"], r["df"], np.abs(r["df"])), where)
        chk.check(tier, "stat", _rel(o["t value"], r["t value"], np.maximum(np.abs(r["t value"]), 1.0)), where)
        chk.check(tier, "p", _rel(o["Pr(>|t|)"], r["Pr(>|t|)"], np.maximum(r["Pr(>|t|)"], 1e-300)), where)
    else:
        nd_o, nd_r = o["NumDF"], r["NumDF"]
        if not np.array_equal(np.nan_to_num(nd_o, nan=-1), np.nan_to_num(nd_r, nan=-1)):
            chk.fail(f"{where}: NumDF {nd_o.tolist()} differs from R's {nd_r.tolist()}")
        for c in ("Sum Sq", "Mean Sq"):
            chk.check(tier, "ss", _rel(o[c], r[c], np.abs(r[c])), where)
        chk.check(tier, df_key, _rel(o["DenDF"], r["DenDF"], np.abs(r["DenDF"])), where)
        chk.check(tier, "stat", _rel(o["F value"], r["F value"], np.maximum(np.abs(r["F value"]), 1.0)), where)
        chk.check(tier, "p", _rel(o["Pr(>F)"], r["Pr(>F)"], np.maximum(r["Pr(>F)"], 1e-300)), where)


def _term_key(label: str) -> frozenset:
    """An anova row label as a set of variables ("cond:grp" == "grp:cond"; formulaic and R agree otherwise)."""
    return frozenset(p.strip() for p in str(label).replace(" ", "").split(":"))


def _model_at_theta(case: dict, data: pd.DataFrame, theta) -> object:
    """A sparselmm fit object at a given θ (no optimisation): the inference code sees lme4's θ̂."""
    import sparselmm
    from sparselmm.optimize import OptInfo
    from sparselmm.results import LmerResult

    f = sparselmm.deviance_function(
        case["formula"], data, reml=case["reml"], weights=case.get("weights"), offset=case.get("offset")
    )
    theta = np.asarray(theta, dtype=float)
    info = OptInfo(optimizer="none", n_evals=0, converged=True, message="theta fixed (lme4's)", theta_start=theta)
    return LmerResult(f, f.solve(theta), info)


def _compare_model(chk: _Checker, tier: str, case: dict, ref: dict, m) -> None:
    """Every table of one model (at lme4's θ̂ or as fitted) against the reference."""
    methods = ["satterthwaite"] + (["kr"] if case.get("kr") else [])
    p = len(ref["fixef_names"])
    if len(m.fixef) != p:
        chk.fail(f"{tier}: {len(m.fixef)} fixed effects, R has {p} ({ref['fixef_names']})")
        return

    def run(where, fn):
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                out = fn()
            for w in caught:
                msg = f"{tier} {where}: {w.category.__name__}: {w.message}"
                if msg not in chk.out.warnings:
                    chk.out.warnings.append(msg)
            return out
        except Exception as e:  # noqa: BLE001 - every failure is reported, none stops the other tables
            chk.fail(f"{tier} {where}: {type(e).__name__}: {e}")
            return None

    for meth in methods:
        tab = run(f"coef_table {meth}", lambda meth=meth: m.coef_table(ddf=METHODS[meth]))
        if tab is not None:
            _compare_table(chk, tier, meth, tab, ref[f"coef_{meth}"], f"{tier} coef_table {METHODS[meth]}")
            if tier == "at" and meth == "satterthwaite" and ref.get("exact"):
                _compare_table(chk, tier, meth, tab, ref["exact"]["coef_satterthwaite"], "at coef_table exact", True)
    for i, (con, rc) in enumerate(zip(case["contrasts"], ref["contest"]), start=1):
        L = np.array(con["L"], dtype=float)
        for meth in methods:
            if rc.get(meth) is None:
                chk.fail(f"{tier} contest {i} {METHODS[meth]}: no R result")
                continue
            tab = run(
                f"contest {i} {meth}",
                lambda meth=meth, L=L, j=bool(con["joint"]): m.contest(L, ddf=METHODS[meth], joint=j),
            )
            if tab is None:
                continue
            where = f"{tier} contest {i} ({'joint' if con['joint'] else 'rows'}, rank {rc['rank']}) {METHODS[meth]}"
            _compare_table(chk, tier, meth, tab.reset_index(drop=True), rc[meth], where)
            if tier == "at" and meth == "satterthwaite" and rc.get("satterthwaite_exact"):
                _compare_table(chk, tier, meth, tab, rc["satterthwaite_exact"], where + " exact", True)
    for type_ in case.get("anova_types", []):
        ra = ref["anova"][str(type_)]
        for meth in methods:
            tab = run(f"anova {type_} {meth}", lambda meth=meth, t=type_: m.anova(type=t, ddf=METHODS[meth]))
            if tab is None:
                continue
            ours = {_term_key(k): k for k in tab.index}
            keys = [_term_key(t) for t in ra["terms"]]
            if set(ours) != set(keys):
                chk.fail(f"{tier} anova type {type_}: terms {list(tab.index)} differ from R's {ra['terms']}")
                continue
            if type_ == 1 and [ours[k] for k in keys] != list(tab.index):
                chk.fail(f"{tier} anova type 1: term order {list(tab.index)} differs from R's {ra['terms']}")
            tab = tab.loc[[ours[k] for k in keys]]
            _compare_table(chk, tier, meth, tab, ra[meth], f"{tier} anova type {type_} {METHODS[meth]}")
            if tier == "at" and meth == "satterthwaite" and ra.get("satterthwaite_exact"):
                _compare_table(
                    chk, tier, meth, tab, ra["satterthwaite_exact"], f"at anova type {type_} exact", exact=True
                )


def _compare_contrasts(chk: _Checker, case: dict, ref: dict, m) -> None:
    """anova_contrasts(type) against lmerTest's show_tests(anova(m, type=))."""
    worst = 0.0
    for type_ in case.get("anova_types", []):
        tests = ref["anova"][str(type_)]["tests"]
        try:
            ours = m.anova_contrasts(type=type_)
        except Exception as e:  # noqa: BLE001
            chk.fail(f"anova_contrasts type {type_}: {type(e).__name__}: {e}")
            continue
        by_key = {_term_key(k): v for k, v in ours.items()}
        for term, t in tests.items():
            L_ref = np.array(t["L"], dtype=float).reshape(-1, len(t["colnames"]))
            L = by_key.get(_term_key(term))
            if L is None:
                chk.fail(f"anova_contrasts type {type_}: no term {term!r} (have {list(ours)})")
                continue
            L = np.atleast_2d(np.asarray(L, dtype=float))
            if L.shape != L_ref.shape:
                chk.fail(f"anova_contrasts type {type_} {term}: shape {L.shape}, show_tests has {L_ref.shape}")
                worst = np.inf
                continue
            d = float(np.max(np.abs(L - L_ref))) if L.size else 0.0
            worst = max(worst, d)
            if not d <= TOLERANCES["contrast_L"]:
                chk.fail(
                    f"anova_contrasts type {type_} {term}: differs from show_tests by {d:.3g} "
                    f"(tolerance {TOLERANCES['contrast_L']:g})"
                )
    chk.out.diffs["contrast_L"] = worst


def compare_case(case: dict, ref: dict, fit: bool = True) -> CaseResult:
    """Compare one case with its reference: at lme4's θ̂ always, and as fitted by sparselmm when ``fit``."""
    import sparselmm

    out = CaseResult(case["id"], r_fit_seconds=ref.get("fit_seconds", np.nan))
    out.r_inference_seconds = ref.get("inference_seconds", np.nan)
    chk = _Checker(out)
    for e in ref.get("errors") or []:
        chk.fail(f"reference has an error ({e['where']}): {e['message']}")
    data = load_case_data(case)
    kw = dict(reml=case["reml"], weights=case.get("weights"), offset=case.get("offset"))

    m_at = _model_at_theta(case, data, ref["theta"])
    _compare_model(chk, "at", case, ref, m_at)
    _compare_contrasts(chk, case, ref, m_at)
    if not fit:
        return out

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = sparselmm.lmer(case["formula"], data, **kw)
    out.fit_seconds = time.perf_counter() - t0
    th, th_ref = np.asarray(m.theta, float), np.asarray(ref["theta"], float)
    out.theta_rel_diff = float(np.max(np.abs(th - th_ref) / np.maximum(np.abs(th_ref), 1.0))) if th.size else 0.0
    t0 = time.perf_counter()
    _compare_model(chk, "fit_flat" if case.get("fit_tier") == "flat" else "fit", case, ref, m)
    if case.get("ranova"):
        _compare_ranova(chk, ref.get("ranova"), m)
    out.inference_seconds = time.perf_counter() - t0
    return out


def _compare_ranova(chk: _Checker, ref: dict | None, m) -> None:
    """sparselmm.ranova(m) against lmerTest's ranova(m): rows, npar and Df exactly, logLik, LRT, p."""
    import sparselmm

    if ref is None:
        chk.fail("ranova: no lmerTest reference (see the R run's errors)")
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tab = sparselmm.ranova(m)
    except Exception as e:  # a crash is a failure of the case, reported with the rest
        chk.fail(f"ranova: {type(e).__name__}: {e}")
        return
    if list(tab.index) != list(ref["terms"]):
        chk.fail(f"ranova: rows {list(tab.index)} differ from lmerTest's {ref['terms']}")
        return
    if not np.array_equal(_arr(tab["npar"]), _arr(ref["npar"])):
        chk.fail(f"ranova: npar {list(tab['npar'])} differ from lmerTest's {ref['npar']}")
    ll, ll_ref = _arr(tab["logLik"]), _arr(ref["logLik"])
    chk.check("ranova", "loglik", _rel(ll, ll_ref, np.abs(ll_ref)), "ranova logLik")
    chk.check("ranova", "worse", float(np.max((ll_ref - ll) / np.abs(ll_ref))), "ranova logLik below lmerTest's")
    chk.check("ranova", "lrt", _rel(tab["LRT"], ref["LRT"], 1.0 + np.abs(_arr(ref["LRT"]))), "ranova LRT")
    p, p_ref = _arr(tab["Pr(>Chisq)"]), _arr(ref["p"])
    chk.check("ranova", "p", _rel(p, p_ref, np.maximum(np.abs(p_ref), 1e-300)), "ranova p-value")


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
            r.failures.append(f"no lmerTest reference at {ref_path}")
            results.append(r)
            continue
        results.append(compare_case(case, json.loads(ref_path.read_text()), fit=fit))
    return results


REPORT_COLUMNS = [
    ("at:satt_df", "Satt df"),
    ("at:satt_df_exact", "Satt df vs exact"),
    ("at:kr_df", "KR df"),
    ("at:kr_se", "KR SE"),
    ("at:se", "SE"),
    ("at:stat", "t/F"),
    ("at:p", "p"),
    ("fit:satt_df", "Satt df"),
    ("fit:kr_df", "KR df"),
    ("fit:se", "SE"),
    ("fit:stat", "t/F"),
    ("fit:p", "p"),
    ("contrast_L", "L"),
]


def _fmt_tol(d: dict) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in d.items())


def write_report(results: list[CaseResult], path: Path, meta: dict) -> None:
    lines = [
        "# sparselmm vs lmerTest / pbkrtest: inference validation report",
        "",
        f"Generated by `python validation/compare_inference.py`. lmerTest {meta.get('lmerTest_version', '?')}, "
        f"pbkrtest {meta.get('pbkrtest_version', '?')}, lme4 {meta.get('lme4_version', '?')}, "
        f"{meta.get('r_version', '?')}; sparselmm {meta.get('sparselmm_version', '?')}.",
        "",
        f"**{sum(r.ok for r in results)} of {len(results)} cases within tolerance.**",
        "",
        "Each case is compared **at lme4's θ̂** (sparselmm's inference evaluated at the θ lme4 found: "
        "only lmerTest's finite differences and rounding separate the two) and **as fitted** (sparselmm's "
        "own fit, whose θ̂ differs from lme4's within the optimisers' tolerances). Cells are the largest "
        "relative differences over the coefficient table, every contrast and every anova table of the case "
        "(scales in validation/compare_inference.py); `L` is the largest absolute difference between "
        "`anova_contrasts()` and lmerTest's `show_tests()`; `Satt df vs exact` compares with the analytic "
        "Satterthwaite derivatives computed in run_lmertest.R. θ̂ diff = max |θ̂ − θ̂_lme4| / max(|θ̂_lme4|, 1).",
        "",
        f"Tolerances at lme4's θ̂: {_fmt_tol(TOLERANCES['at'])}. As fitted: {_fmt_tol(TOLERANCES['fit'])} "
        f"(boundary fits with a flat likelihood: {_fmt_tol(TOLERANCES['fit_flat'])}). "
        f"Contrast matrices: {TOLERANCES['contrast_L']:g}.",
        "",
        "| case | ok | "
        + " | ".join(
            f"{'at θ̂' if k.startswith('at:') else ('fit' if k.startswith('fit:') else '')} {label}".strip()
            for k, label in REPORT_COLUMNS
        )
        + " | θ̂ diff | sparselmm fit + inference s | R fit + inference s |",
        "|---|---|" + "---|" * len(REPORT_COLUMNS) + "---|---|---|",
    ]
    for r in results:
        cells = [f"{r.diffs[k]:.1e}" if k in r.diffs else "–" for k, _ in REPORT_COLUMNS]
        lines.append(
            f"| {r.case_id} | {'yes' if r.ok else 'NO'} | "
            + " | ".join(cells)
            + f" | {r.theta_rel_diff:.1e} | {r.fit_seconds:.2f} + {r.inference_seconds:.2f} "
            f"| {r.r_fit_seconds:.2f} + {r.r_inference_seconds:.2f} |"
        )
    lines += [
        "",
        "R's inference time includes the KR tables (pbkrtest) and the analytic-derivative check; "
        "sparselmm's covers both methods' tables of the own fit.",
    ]
    failed = [r for r in results if not r.ok]
    if failed:
        lines += ["", "## Failures", ""]
        for r in failed:
            shown = r.failures[:12]
            more = f" (and {len(r.failures) - 12} more)" if len(r.failures) > 12 else ""
            lines += [f"- **{r.case_id}**: " + "; ".join(shown) + more]
    warned = [r for r in results if r.warnings]
    if warned:
        lines += ["", "## Warnings from sparselmm", ""]
        for r in warned:
            lines += [f"- **{r.case_id}**: " + "; ".join(r.warnings[:6])]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
            meta.update({k: ref.get(k) for k in ("lme4_version", "lmerTest_version", "pbkrtest_version", "r_version")})
            break
    for r in results:
        status = "ok  " if r.ok else "FAIL"
        print(
            f"{status} {r.case_id:34s} θdiff={r.theta_rel_diff:.1e} "
            + " ".join(f"{k}={v:.1e}" for k, v in r.diffs.items())
        )
        for f in r.failures[:20]:
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
