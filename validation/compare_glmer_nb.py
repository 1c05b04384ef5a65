"""Compare sparselmm.glmer_nb (negative binomial GLMM, θ estimated) with lme4's glmer.nb and glmmTMB's nbinom2.

Usage (repository root): ``python validation/compare_glmer_nb.py [--reference DIR] [--report FILE] [case ...]``.
References are the JSON files ``validation/run_glmer_nb.R`` writes (committed in validation/reference_glmer_nb);
each records the R call behind every number (``calls``) and the R, lme4, MASS and glmmTMB versions.

lme4 cases (``glmer.nb``). lme4's default fit stops its θ search at ``tol = 5e-5`` on ``log θ`` and its PIRLS one
step short (``tolPwrss = 1e-7``), so the sharp checks are against its *tight* fit (``optTheta`` with
``tol = 1e-10`` and ``tolPwrss = 1e-12``): −2 log L to 1e-4 absolute, θ and β to 1e-3 relative (β relative to
``max(|β|, SE)``), random-effect SDs to 1e-3 relative (correlations 1e-3 absolute), SEs to 1e-2 relative; and
the criterion is no higher than lme4's exact (tight-PIRLS) criterion at its *default* estimates
(``minus2loglik_exact``). The default fit's θ and β are checked to 1e-3 as well; its logLik df (lme4 counts θ)
must equal ``n_params``.

glmmTMB cases (``nbinom2``). glmmTMB's Laplace approximation uses the *observed* information of the conditional
density (TMB's automatic Hessian); lme4's (and sparselmm's) uses the Fisher (expected) weights
``μ²/V(μ)`` in ``log|ΛᵀZᵀWZΛ + I|``. For the log link, not the negative binomial's canonical link, the two
differ (by ~0.01-0.2 in log L on these data, θ by up to 1 %), so glmmTMB's optimum is not lme4's. The checks:

* ``tmb_loglik_at_tmb``: the observed-information Laplace criterion computed with sparselmm's PIRLS modes at
  glmmTMB's own estimates reproduces glmmTMB's ``logLik`` (to 1e-4): the same data, likelihood, θ and
  covariance parametrisation;
* ``tmb_*``: that criterion maximised from sparselmm's glmer_nb estimates (L-BFGS-B, central differences)
  reaches glmmTMB's optimum: logLik to 1e-4 (and no lower than glmmTMB's), θ, β and SDs to 1e-3 relative;
* ``cross``: each fit is optimal for its own criterion — sparselmm's −2 log L (lme4's criterion) at glmmTMB's
  estimates is no lower than at sparselmm's, and glmmTMB's logLik is no lower than the observed-information
  criterion at sparselmm's estimates;
* ``gap_*`` columns: sparselmm's glmer_nb minus glmmTMB directly (reported, not checked).

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
from scipy import optimize

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sparselmm  # noqa: E402
from sparselmm.glmm import NegativeBinomial  # noqa: E402

TOL = {
    "criterion_above_lme4": 1e-6,  # −2 log L no higher than lme4's exact criterion at its default estimates
    "loglik_abs": 1e-4,  # log L against lme4's tight fit / glmmTMB
    "nb_theta_rel": 1e-3,
    "beta_rel": 1e-3,  # |Δβ| / max(|β|, SE)
    "sd_rel": 1e-3,  # random-effect SDs (relative), correlations (absolute)
    "se_rel": 1e-2,
    "cross": 1e-6,  # each fit optimal for its own criterion, within this in −2 log L
}


def load(case):
    d = pd.read_csv(ROOT / case["data"])
    for f in case["factors"]:
        d[f] = pd.Categorical(d[f].astype(str))
    return d


def rel(a, b):
    return float(np.max(np.abs(np.asarray(a, dtype=float) / np.asarray(b, dtype=float) - 1)))


def beta_rel(beta, ref, se):
    scale = np.maximum(np.abs(np.asarray(ref, dtype=float)), np.asarray(se, dtype=float))
    return float(np.max(np.abs(np.asarray(beta) - np.asarray(ref)) / scale))


def fit(case, d):
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = sparselmm.glmer_nb(case["formula"], d, offset=case["offset"])
    return m, time.perf_counter() - t0


def sdcor_vector(m):
    """SDs then correlations per term, in the design's term order (lme4's VarCorr order)."""
    vc = m.varcorr
    vc = vc.frame if hasattr(vc, "frame") else vc
    return np.asarray(vc["sdcor"], dtype=float), np.asarray(vc["var2"].isna() | (vc["var2"] == ""), dtype=bool)


def run_lme4(case, ref):
    d = load(case)
    m, secs = fit(case, d)
    de, ti = ref["default"], ref["tight"]
    sd, is_sd = sdcor_vector(m)
    tsd = np.atleast_1d(np.asarray(ti["varcorr"]["sdcor"], dtype=float))
    res = {
        "id": case["id"],
        "engine": "lme4",
        "crit_diff_exact": m.deviance - ref["minus2loglik_exact"],
        "loglik_tight": abs(m.loglik - ti["loglik"]),
        "loglik_default": m.loglik - de["loglik"],
        "nb_theta": m.nb_theta,
        "nb_theta_tight": rel(m.nb_theta, ti["nb_theta"]),
        "nb_theta_default": rel(m.nb_theta, de["nb_theta"]),
        "beta_tight": beta_rel(m.fixef.to_numpy(), ti["beta"], ti["se"]),
        "beta_default": beta_rel(m.fixef.to_numpy(), de["beta"], de["se"]),
        "sd_tight": max(rel(sd[is_sd], tsd[is_sd]), float(np.max(np.abs(sd[~is_sd] - tsd[~is_sd]), initial=0.0))),
        "se_tight": rel(m.bse.to_numpy(), ti["se"]),
        "df": m.n_params == de["df"],
        "refits": m.optinfo.details["glmer_nb"]["n_refits"],
        "refits_lme4": de["nevals"],
        "seconds": secs,
        "seconds_lme4": ref["seconds"],
    }
    checks = {
        "criterion": res["crit_diff_exact"] <= TOL["criterion_above_lme4"],
        "loglik_tight": res["loglik_tight"] <= TOL["loglik_abs"],
        "nb_theta_tight": res["nb_theta_tight"] <= TOL["nb_theta_rel"],
        "nb_theta_default": res["nb_theta_default"] <= TOL["nb_theta_rel"],
        "beta_tight": res["beta_tight"] <= TOL["beta_rel"],
        "beta_default": res["beta_default"] <= TOL["beta_rel"],
        "sd_tight": res["sd_tight"] <= TOL["sd_rel"],
        "se_tight": res["se_tight"] <= TOL["se_rel"],
        "df": res["df"],
    }
    return res, checks


# ---- glmmTMB: the observed-information Laplace criterion on sparselmm's PIRLS ----------------------------------
class ObservedLaplace:
    """−2 log L by the Laplace approximation with the observed information of the negative binomial (log link),
    glmmTMB's criterion, at (θ_nb, covariance parameters, β), on the PIRLS model of the fit ``m``."""

    def __init__(self, m):
        self.m = m
        self.base = m._model
        self.nth = m.theta.size

    def __call__(self, nb_theta, theta, beta) -> float:
        fam = NegativeBinomial(float(nb_theta))
        model = self.base.with_response(self.base.y, fam)
        u, eta, mu, w, pdev = model.pirls_u(np.asarray(theta, float), np.asarray(beta, float))
        y, pw, t = model.y, model.pw, float(nb_theta)
        w_obs = pw * (y + t) * mu * t / (mu + t) ** 2  # −d² log p(y | μ) / dη² for η = log μ
        model.factor(np.asarray(theta, float), w_obs)
        return fam.aic_term(y, mu, pw) + float(u @ u) + model.chol.logdet()

    def theta_from_tmb(self, sds) -> np.ndarray:
        """lme4's θ (column-major lower Cholesky factor of each term's covariance; σ = 1) from glmmTMB's SDs."""
        out = np.zeros(self.nth)
        by_group = {s["grp"]: s for s in sds}
        for term in self.m.design.terms:
            s = by_group[term.group_name]
            sd = np.atleast_1d(np.asarray(s["sd"], dtype=float))
            k = sd.size
            R = np.eye(k)
            if k > 1:
                R[np.tril_indices(k, -1)] = np.atleast_1d(np.asarray(s["cor"], dtype=float))
                R = np.tril(R) + np.tril(R, -1).T
            L = np.linalg.cholesky(np.outer(sd, sd) * R)
            out[term.theta_offset : term.theta_offset + term.n_theta] = L.T[np.triu_indices(k)]
        return out

    def sds(self, theta) -> np.ndarray:
        """SDs and correlations per term in glmmTMB's order (SDs then the lower-triangle correlations)."""
        vals = []
        for term in self.m.design.terms:
            k = term.k
            L = np.zeros((k, k))
            L.T[np.triu_indices(k)] = theta[term.theta_offset : term.theta_offset + term.n_theta]
            S = L @ L.T
            sd = np.sqrt(np.diag(S))
            vals.extend(sd)
            if k > 1:
                vals.extend((S / np.outer(sd, sd))[np.tril_indices(k, -1)])
        return np.asarray(vals)

    def maximise(self, x0_nb, x0_theta, x0_beta):
        """The criterion minimised over (log θ_nb, θ, β) from the given start."""
        nth = self.nth
        lower = self.m.design.lower

        def f(x):
            return self(np.exp(x[0]), x[1 : 1 + nth], x[1 + nth :])

        def grad(x, h=1e-5):
            g = np.empty_like(x)
            for i in range(x.size):
                e = np.zeros_like(x)
                e[i] = h
                g[i] = (f(x + e) - f(x - e)) / (2 * h)
            return g

        x0 = np.concatenate([[np.log(x0_nb)], x0_theta, x0_beta])
        bounds = (
            [(None, None)] + [(lo if np.isfinite(lo) else None, None) for lo in lower] + [(None, None)] * len(x0_beta)
        )
        r = optimize.minimize(f, x0, jac=grad, method="L-BFGS-B", bounds=bounds, options={"ftol": 1e-14, "gtol": 1e-8})
        x = r.x
        return float(np.exp(x[0])), x[1 : 1 + nth], x[1 + nth :], float(r.fun)


def run_tmb(case, ref):
    d = load(case)
    m, secs = fit(case, d)
    tmb = ref["fit"]
    ol = ObservedLaplace(m)
    t_theta = ol.theta_from_tmb(tmb["sd"])
    t_beta = np.asarray(tmb["beta"], dtype=float)
    t_sd = np.concatenate(
        [
            np.r_[s["sd"], s["cor"] if s["cor"] else []]
            for s in sorted(tmb["sd"], key=lambda s: [t.group_name for t in m.design.terms].index(s["grp"]))
        ]
    )
    at_tmb = ol(tmb["nb_theta"], t_theta, t_beta)
    nb, th, be, crit = ol.maximise(m.nb_theta, m.theta, m.fixef.to_numpy())
    sd = ol.sds(th)
    is_sd = np.concatenate([np.r_[np.ones(t.k, bool), np.zeros(t.k * (t.k - 1) // 2, bool)] for t in m.design.terms])
    # each optimum is optimal for its own criterion
    lme4_crit_at_tmb = _lme4_criterion_at(m, tmb["nb_theta"], t_theta, t_beta)
    obs_at_ours = ol(m.nb_theta, m.theta, m.fixef.to_numpy())
    se = np.asarray(tmb["se"], dtype=float)
    res = {
        "id": case["id"],
        "engine": "glmmTMB",
        "tmb_loglik_at_tmb": abs(-0.5 * at_tmb - tmb["loglik"]),
        "tmb_loglik": -0.5 * crit - tmb["loglik"],
        "nb_theta": nb,
        "tmb_nb_theta": rel(nb, tmb["nb_theta"]),
        "tmb_beta": beta_rel(be, t_beta, se),
        "tmb_sd": max(rel(sd[is_sd], t_sd[is_sd]), float(np.max(np.abs(sd[~is_sd] - t_sd[~is_sd]), initial=0.0))),
        "cross_ours": lme4_crit_at_tmb - m.deviance,
        "cross_tmb": obs_at_ours - (-2 * tmb["loglik"]),
        "gap_loglik": m.loglik - tmb["loglik"],
        "gap_nb_theta": rel(m.nb_theta, tmb["nb_theta"]),
        "gap_beta": beta_rel(m.fixef.to_numpy(), t_beta, se),
        "seconds": secs,
        "seconds_tmb": ref["seconds"],
    }
    checks = {
        "tmb_loglik_at_tmb": res["tmb_loglik_at_tmb"] <= TOL["loglik_abs"],
        "tmb_loglik": abs(res["tmb_loglik"]) <= TOL["loglik_abs"] and res["tmb_loglik"] >= -TOL["cross"],
        "tmb_nb_theta": res["tmb_nb_theta"] <= TOL["nb_theta_rel"],
        "tmb_beta": res["tmb_beta"] <= TOL["beta_rel"],
        "tmb_sd": res["tmb_sd"] <= TOL["sd_rel"],
        "cross_ours": res["cross_ours"] >= -TOL["cross"],
        "cross_tmb": res["cross_tmb"] >= -TOL["cross"],
        "tmb_converged": bool(tmb["converged"]) and bool(tmb["pdHess"]),
    }
    return res, checks


def _lme4_criterion_at(m, nb_theta, theta, beta) -> float:
    """lme4's Laplace criterion (Fisher weights) at the given parameters, on the fit's PIRLS model."""
    from sparselmm.glmm.objective import GlmmObjective

    model = m._model.with_response(m._model.y, NegativeBinomial(float(nb_theta)))
    return float(GlmmObjective(model, 1).at_theta_beta(np.asarray(theta, float), np.asarray(beta, float)))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference", default=str(ROOT / "validation" / "reference_glmer_nb"))
    ap.add_argument("--report", default=None)
    ap.add_argument("cases", nargs="*")
    a = ap.parse_args(argv)
    cases = json.loads((ROOT / "validation" / "glmer_nb_cases.json").read_text())
    if a.cases:
        cases = [c for c in cases if c["id"] in a.cases]
    rows, n_checks, n_pass = [], 0, 0
    for case in cases:
        ref = json.loads((Path(a.reference) / f"{case['id']}.json").read_text())
        try:
            res, checks = (run_lme4 if case["engine"] == "lme4" else run_tmb)(case, ref)
            res["failed"] = [k for k, ok in checks.items() if not ok]
            n_checks += len(checks)
            n_pass += sum(checks.values())
        except Exception as err:  # report and go on
            res = {"id": case["id"], "failed": [f"error: {type(err).__name__}: {err}"]}
            n_checks += 1
        rows.append(res)
    n_fail = sum(bool(r["failed"]) for r in rows)
    ref0 = json.loads((Path(a.reference) / f"{cases[0]['id']}.json").read_text())
    versions = f"lme4 {ref0['lme4_version']}, MASS {ref0['mass_version']}"
    tmb_refs = [
        json.loads((Path(a.reference) / f"{c['id']}.json").read_text()) for c in cases if c["engine"] == "glmmTMB"
    ]
    if tmb_refs:
        versions += f", glmmTMB {tmb_refs[0]['glmmTMB_version']}"
    head = (
        f"sparselmm.glmer_nb vs {versions} ({ref0['r_version']}): {len(rows) - n_fail}/{len(rows)} cases, "
        f"{n_pass}/{n_checks} checks within tolerance\n"
        "lme4 cases: crit_diff_exact = ours - lme4's exact criterion at its default estimates (-2 log L, checked "
        "<= tol); *_tight against lme4's tight fit (optTheta tol 1e-10, tolPwrss 1e-12), *_default against "
        "glmer.nb's defaults; nb_theta_* relative; beta_* = max |dbeta| / max(|beta|, SE); sd_tight = random-effect "
        "SDs relative, correlations absolute; df = n_params equals logLik's df.\n"
        "glmmTMB cases: tmb_loglik_at_tmb = |observed-information Laplace log L at glmmTMB's estimates (sparselmm's "
        "PIRLS) - glmmTMB's logLik|; tmb_* = that criterion maximised from glmer_nb's estimates vs glmmTMB; cross_ours "
        "= lme4's criterion at glmmTMB's estimates - at ours (>= 0), cross_tmb = observed criterion at ours - at "
        "glmmTMB's (>= 0); gap_* = glmer_nb - glmmTMB directly (two criteria: reported, not checked).\n"
        f"tolerances: {TOL}\n"
    )
    cols = list(dict.fromkeys(k for r in rows for k in r))
    cols.remove("failed")
    cols.append("failed")
    blocks = []
    for engine in ("lme4", "glmmTMB", None):
        sub = [r for r in rows if r.get("engine") == engine]
        if not sub:
            continue
        keep = [c for c in cols if any(c in r for r in sub)]
        with pd.option_context(
            "display.width", 250, "display.max_columns", 40, "display.float_format", "{:.3g}".format
        ):
            blocks.append(pd.DataFrame(sub).reindex(columns=keep).to_string(index=False))
    text = "\n\n".join(blocks)
    print(head)
    print(text)
    if a.report:
        Path(a.report).write_text(f"# glmer_nb validation\n\n{head}\n```\n{text}\n```\n")
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
