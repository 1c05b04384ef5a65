"""Compare sparselmm.glmer with lme4's glmer case by case (validation/glmm_cases.json).

Usage (repository root): ``python validation/compare_glmm.py [--reference DIR] [--report FILE] [case ...]``.
References are the JSON files ``validation/run_glmer.R`` writes (committed in validation/reference_glmm).
Each reference holds lme4's default fit and a ``tight`` refit with ``glmerControl(tolPwrss = 1e-12)``:
lme4's default PIRLS tolerance leaves its log|L|² one PIRLS step behind, which moves its criterion by up
to ~1e-3 and its finite-difference SEs by ~1 %; sparselmm converges PIRLS to 1e-10 and evaluates the
exact Laplace criterion, so it agrees with the tight refit to ~1e-5.

Two refinements (issue #14, the Gamma and inverse Gaussian cases):

* "no worse than lme4" is checked against ``minus2loglik_exact``, lme4's tight-PIRLS deviance function
  evaluated at the parameters of lme4's *default* fit. lme4's reported value is its last PIRLS state,
  not the Laplace value at its estimates; for the binomial/Poisson cases it is above the exact value,
  but for Gamma and inverse Gaussian (slow Fisher scoring) it can be below it, so it is no bound.
  (References without the field fall back to the reported value.)
* Where lme4's default fit disagrees with its own tight refit by more than a default-fit tolerance
  (``lme4_self_beta`` in SEs, ``lme4_self_se`` relative) the default-fit check of that quantity says
  nothing about sparselmm and is skipped; the tight-refit check, with its tighter tolerance, still
  applies. The skipped checks are listed in the ``skipped`` column; when the default fit's SEs are the
  ones off, its β differences are measured in the tight refit's SEs.

Exit status 1 if any case fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sparselmm  # noqa: E402

TOL = {
    # criterion (−2 log L, or lme4's AGQ criterion) no higher than lme4's default fit by more than this
    "criterion_above_lme4": 1e-6,
    # ... and within this of lme4's tight refit (either direction)
    "criterion_vs_tight": 2e-4,
    # fixed effects: |Δβ| / SE(β), against the default fit and against the tight refit
    "beta_in_se": 0.02,
    "beta_in_se_tight": 0.005,
    # θ: absolute difference
    "theta_abs": 5e-3,
    "theta_abs_tight": 1e-3,
    # standard errors: relative difference (default fit: lme4's Hessian of its lagged criterion)
    "se_rel": 0.03,
    "se_rel_tight": 0.01,
    # sigma(m) (Gamma, inverse Gaussian; 1 otherwise): relative difference
    "sigma_rel": 5e-3,
    "sigma_rel_tight": 1e-3,
}


def load(case):
    d = pd.read_csv(ROOT / case["data"])
    for f in case["factors"]:
        d[f] = pd.Categorical(d[f])
    return d


def run_case(case, ref):
    d = load(case)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        family = case["family"]
        if family == "negative.binomial":
            family = sparselmm.glmm.NegativeBinomial(case["theta"], case["link"])
        m = sparselmm.glmer(
            case["formula"],
            d,
            family=family,
            link=case["link"] if isinstance(family, str) else None,
            nAGQ=case["nAGQ"],
            weights=case["weights"],
            offset=case["offset"],
        )
    secs = time.perf_counter() - t0
    beta, theta, se = m.fixef.to_numpy(), np.atleast_1d(m.theta), m.bse.to_numpy()
    tight = ref["tight"]
    rb, rt, rs = (np.atleast_1d(np.asarray(ref[k], dtype=float)) for k in ("beta", "theta", "se"))
    tb, tt, ts = (np.atleast_1d(np.asarray(tight[k], dtype=float)) for k in ("beta", "theta", "se"))
    f, rf, tf = m.deviance, ref["minus2loglik"], tight["minus2loglik"]
    ef = ref.get("minus2loglik_exact", rf)
    self_beta = float(np.max(np.abs(rb - tb) / ts))
    self_se = float(np.max(np.abs(rs / ts - 1)))
    # the default fit's SEs measure its β differences unless they are themselves off (then the tight SEs)
    beta_scale = rs if self_se <= TOL["se_rel"] else ts
    res = {
        "id": case["id"],
        "crit": f,
        "crit_lme4": rf,
        "crit_diff": f - rf,
        "crit_diff_exact": f - ef,
        "crit_diff_tight": f - tf,
        "beta": float(np.max(np.abs(beta - rb) / beta_scale)),
        "beta_tight": float(np.max(np.abs(beta - tb) / ts)),
        "theta": float(np.max(np.abs(theta - rt))),
        "theta_tight": float(np.max(np.abs(theta - tt))),
        "se": float(np.max(np.abs(se / rs - 1))),
        "se_tight": float(np.max(np.abs(se / ts - 1))),
        # references written before sigma was recorded are binomial / Poisson fits: sigma = 1
        "sigma": abs(m.sigma / ref.get("sigma", 1.0) - 1),
        "sigma_tight": abs(m.sigma / tight.get("sigma", 1.0) - 1),
        "lme4_self_beta": self_beta,
        "lme4_self_se": self_se,
        "evals": m.optinfo["n_evals"],
        "evals_lme4": ref["feval"],
        "seconds": secs,
        "seconds_lme4": ref["seconds"],
        # isSingular's 1e-4 threshold can split two fits whose θ agree (θ ≈ 1e-4): then the θ check decides
        "singular": m.is_singular() == bool(ref["singular"])
        or float(np.max(np.abs(theta - tt))) <= TOL["theta_abs_tight"],
    }
    checks = {
        "criterion": res["crit_diff_exact"] <= TOL["criterion_above_lme4"] * max(1.0, abs(rf)),
        "criterion_tight": abs(res["crit_diff_tight"]) <= TOL["criterion_vs_tight"],
        "beta": res["beta"] <= TOL["beta_in_se"],
        "beta_tight": res["beta_tight"] <= TOL["beta_in_se_tight"],
        "theta": res["theta"] <= TOL["theta_abs"],
        "theta_tight": res["theta_tight"] <= TOL["theta_abs_tight"],
        "se": res["se"] <= TOL["se_rel"],
        "se_tight": res["se_tight"] <= TOL["se_rel_tight"],
        "sigma": res["sigma"] <= TOL["sigma_rel"],
        "sigma_tight": res["sigma_tight"] <= TOL["sigma_rel_tight"],
        "singular": res["singular"],
    }
    skipped = []
    if self_beta > TOL["beta_in_se"]:
        skipped.append("beta")
    if self_se > TOL["se_rel"]:
        skipped.append("se")
    res["skipped"] = skipped
    res["failed"] = [k for k, ok in checks.items() if not ok and k not in skipped]
    return res


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference", default=str(ROOT / "validation" / "reference_glmm"))
    ap.add_argument("--report", default=None)
    ap.add_argument("cases", nargs="*")
    a = ap.parse_args(argv)
    cases = json.loads((ROOT / "validation" / "glmm_cases.json").read_text())
    if a.cases:
        cases = [c for c in cases if c["id"] in a.cases]
    rows = []
    for case in cases:
        ref = json.loads((Path(a.reference) / f"{case['id']}.json").read_text())
        try:
            rows.append(run_case(case, ref))
        except Exception as err:  # report and go on
            rows.append({"id": case["id"], "failed": [f"error: {type(err).__name__}: {err}"]})
    cols = [
        "id",
        "crit_diff",
        "crit_diff_exact",
        "crit_diff_tight",
        "beta",
        "beta_tight",
        "theta",
        "theta_tight",
        "se",
        "se_tight",
        "sigma",
        "sigma_tight",
        "evals",
        "evals_lme4",
        "seconds",
        "seconds_lme4",
        "lme4_self_beta",
        "lme4_self_se",
        "skipped",
        "failed",
    ]
    table = pd.DataFrame(rows).reindex(columns=cols)
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.float_format", "{:.3g}".format):
        text = table.to_string(index=False)
    n_fail = sum(bool(r["failed"]) for r in rows)
    lme4 = json.loads((Path(a.reference) / f"{cases[0]['id']}.json").read_text())
    head = (
        f"sparselmm.glmer vs lme4 {lme4['lme4_version']} ({lme4['r_version']}): "
        f"{len(rows) - n_fail}/{len(rows)} cases within tolerance\n"
        "crit_diff = ours - lme4 (-2 log L as lme4 reports it); crit_diff_exact = ours - lme4's exact "
        "(tight-PIRLS) criterion at its default estimates, the one checked; beta = max |dbeta|/SE; "
        "theta = max |dtheta|; se = max relative SE difference; sigma = relative sigma(m) difference "
        "(Gamma, inverse Gaussian); *_tight against lme4 refitted with tolPwrss = 1e-12; lme4_self_* = "
        "lme4 default vs its tight refit (beta in SEs, se relative); skipped = default-fit checks skipped "
        "because lme4's default fit disagrees with its own tight refit\n"
        f"tolerances: {TOL}\n"
    )
    print(head)
    print(text)
    if a.report:
        Path(a.report).write_text(f"# GLMM validation\n\n{head}\n```\n{text}\n```\n")
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
