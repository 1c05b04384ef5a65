"""Compare lmer's and glmer's covariance-structure terms (``diag``, ``cs``, ``ar1``, ``toep``) with glmmTMB's fits.

Usage (repository root)::

    python validation/compare_covstruct.py [--reference DIR] [--report FILE] [case ...]

References are the JSON files ``validation/run_glmmtmb_covstruct.R`` writes (committed in
``validation/reference_covstruct``) for the cases of ``validation/covstruct_cases.json`` (data simulated by
``validation/simulate_covstruct.py``). Every number on the R side is glmmTMB 1.1's: ``-2 * logLik(m)``,
``fixef(m)$cond``, ``sigma(m)``, ``attr(VarCorr(m)$cond[[g]], "stddev")``, the correlation matrix's [2, 1]
entry for a cs term and its first column (``lags``) for ar1 and toep terms; the call is in each JSON. With
``REML = TRUE`` glmmTMB's logLik is the restricted log-likelihood on lme4's scale (sleepstudy's
``(Days | Subject)``: ``REMLcrit(lmer)`` = ``-2 logLik`` = 1743.628), so the criterion is compared with
``LmerResult.objective`` (REML criterion or −2 log L) directly. A case with a ``family`` is a GLMM, fitted by
``sparselmm.glmer`` (Laplace) and compared with glmmTMB's Laplace ``-2 * logLik(m)``: both include the family's
normalising constant (``count ~ x + (1 | subj)`` on the ar1 data: glmmTMB 2456.3327067836, glmer
2456.3327067698).

Checks per case (tolerances in ``TOL``):

* ``criterion``: sparselmm's no higher than glmmTMB's (``crit_above`` relative) and within ``crit_rel``;
* ``criterion at glmmTMB's estimates``: sparselmm's deviance function (σ profiled) at glmmTMB's SDs/σ and ρ
  equals glmmTMB's criterion within ``at_ref_rel`` (exact algebra: lme4's ``devFunOnly`` check); for a GLMM
  glmer's Laplace criterion at glmmTMB's (θ, β) (its own PIRLS for the modes), within the same tolerance;
* ``beta``, ``sigma``, each term's ``sd``: within ``est_rel`` relative (``est_abs`` absolute for values near
  0); a cs term's ``rho`` within ``est_rel`` relative or ``rho_abs`` absolute (a correlation near 0 — −0.023 in
  the ``cs_crossed`` cases — sits on a flat likelihood: there glmmTMB's ρ moves by 2e-5 between nlminb
  tolerances, and sparselmm's criterion is the lower one);
* a GLMM's fixed-effect SEs (glmer's from the Hessian of the criterion in (θ, β), glmmTMB's ``vcov(m)$cond``
  from its joint Hessian: the same matrix, parametrisation-free in β at an interior optimum) within ``se_rel``;
* an unstructured (``us``) term's correlations, each within ``est_rel`` relative or ``rho_abs`` absolute;
* an ar1 or toep term's correlations by lag (``rho lag l``) with the same tolerance, and ``Toeplitz``: every
  entry of sparselmm's correlation matrix is its lag's correlation (ρ^|i−j| for ar1), within 1e-10.

Intervals and df (issue 21 item 5), for the cases with ``intervals`` / ``lmertest_formula``:

* ``wald``: ``confint(method="Wald")``'s SD, correlation and σ rows against glmmTMB's ``confint(m, method = "wald")``
  (both on the log-SD scale; a cs correlation of two coefficients on atanh's, the same interval as glmmTMB's 2·atanh)
  within ``ci_rel`` relative (``ci_abs`` absolute near 0); a cs correlation of more coefficients and ar1/toep
  correlations are on glmmTMB's own scales (``invlogit``, ``θ/√(1+θ²)``), so their Wald intervals differ by design
  and are not compared;
* ``profile``: ``confint(method="profile")`` (ML) against glmmTMB's profile ends on its theta scale mapped to the
  SD/correlation scale (exact: a profile interval does not depend on the parametrisation), within ``profile_rel``
  relative or ``profile_abs`` absolute (glmmTMB interpolates a spline through its profile points);
* ``df``: Satterthwaite's df (``coef_table()``) against lmerTest's on the equivalent lme4 model
  (``diag(1 + x | g)`` = ``(1 + x || g)``), within ``df_rel`` relative.

A case marked ``pending`` (a model sparselmm does not fit yet) keeps its glmmTMB reference and is listed in the
report, not compared.

Exit status 1 if any check fails or a reference is missing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sparselmm  # noqa: E402
from sparselmm.covstruct import acf_to_pacf  # noqa: E402

TOL = {
    "crit_above": 1e-9,
    "crit_rel": 1e-6,
    "est_rel": 1e-4,
    "est_abs": 1e-6,
    "rho_abs": 1e-4,
    "at_ref_rel": 1e-9,
    "se_rel": 1e-4,
    "ci_rel": 2e-4,
    "ci_abs": 1e-4,
    "profile_rel": 2e-3,
    "profile_abs": 1e-3,
    "df_rel": 1e-4,
}


BAR = "\\|"  # a bar inside a Markdown table cell


def _close(ours: float, ref: float, abs_tol: float | None = None) -> bool:
    return abs(ours - ref) <= max(TOL["est_rel"] * abs(ref), TOL["est_abs"] if abs_tol is None else abs_tol)


def theta_at_reference(design, ref: dict) -> np.ndarray:
    """glmmTMB's estimates as sparselmm's θ: per term (in sparselmm's order) its SDs over σ (1 for a GLMM),
    then ρ for cs and ar1 (one SD), the partial autocorrelations of glmmTMB's lag correlations for toep, the
    lower triangle of the covariance's Cholesky factor for us."""
    by_group = {t["group"]: t for t in ref["terms"]}
    sigma = 1.0 if ref.get("sigma") is None else ref["sigma"]
    theta = []
    for t in design.terms:
        term = by_group[t.group_name]
        sd = np.asarray(term["sd"], dtype=float) / sigma
        if term["structure"] == "us" and t.k > 1:
            C = np.eye(t.k)
            rows, cols = np.tril_indices(t.k, -1)
            order = np.lexsort((rows, cols))  # R's lower.tri order: column by column
            C[rows[order], cols[order]] = term["cor"]
            C = C + np.tril(C, -1).T
            L = np.linalg.cholesky(sd[:, None] * C * sd[None, :])
            r, c = t.tril_indices()
            theta.extend(L[r, c])
            continue
        if term["structure"] == "ar1":
            theta.extend([sd[0], term["rho"]])
            continue
        theta.extend(sd)
        if term["structure"] == "cs":
            theta.append(term["rho"])
        elif term["structure"] == "toep":
            theta.extend(acf_to_pacf(term["lags"]))
    return np.array(theta)


def correlation_matrix(vc: pd.DataFrame, group: str, k: int) -> np.ndarray:
    """A term's correlation matrix from ``varcorr``'s rows (lme4's order: column by column below the diagonal)."""
    cors = vc[(vc["group"] == group) & vc["var2"].notna()]["sdcor"].to_numpy()
    C = np.eye(k)
    rows, cols = np.tril_indices(k, -1)
    order = np.lexsort((rows, cols))  # column by column
    C[rows[order], cols[order]] = cors
    return C + np.tril(C, -1).T


def criterion_at(m, theta: np.ndarray, beta: np.ndarray | None) -> float:
    """sparselmm's criterion at θ: lmer's deviance function (σ and β profiled), or glmer's Laplace criterion at
    (θ, β) on a copy of the fit's PIRLS model (the fit is not touched)."""
    if getattr(m, "family", None) is None:
        return float(m.deviance_function(theta))
    from sparselmm.glmm.objective import GlmmObjective

    model = m._model.with_response(m._model.y)
    return float(GlmmObjective(model, m.nAGQ).at_theta_beta(theta, np.asarray(beta, dtype=float)))


def _theta_map(structure: str, k: int) -> list:
    """glmmTMB's internal theta of one term → its SDs/correlations in sparselmm's order (the SDs, then the
    correlations), one function per theta element."""
    n_sd = 1 if structure == "ar1" else k
    n_cor = {"us": k * (k - 1) // 2, "cs": 1, "ar1": 1, "toep": k - 1}.get(structure, 0)
    if structure == "cs":
        a = 1.0 / (k - 1)

        def cor(t):
            return (1 + a) / (1 + np.exp(-t)) - a
    else:

        def cor(t):
            return t / np.sqrt(1 + t * t)

    return [np.exp] * n_sd + [cor] * n_cor


def interval_checks(m, case: dict, ref: dict) -> list[tuple[str, bool, str]]:
    """Wald and profile intervals of the variance parameters against glmmTMB's; Satterthwaite's df against
    lmerTest's (see the module docstring)."""
    checks = []
    ivals = ref.get("intervals") or {}
    terms = {t["group"]: t for t in ref["terms"]}
    design = m.design

    def close(ours, theirs, rel, abs_):
        return bool(np.all(np.abs(ours - theirs) <= np.maximum(rel * np.abs(theirs), abs_)))

    if "wald" in ivals:
        w = ivals["wald"]
        ref_rows = dict(zip(w["names"], zip(w["lower"], w["upper"])))
        ours = m.confint(method="Wald")
        for t in design.terms:
            rt = terms[t.group_name]
            sds = [n for n in ref_rows if n.startswith("cond.Std.Dev.") and n.endswith(f"|{t.group_name}")]
            cors = [n for n in ref_rows if n.startswith("cond.Cor.") and n.endswith(f"|{t.group_name}")]
            is_sd = t.structure.is_sd() if not t.unstructured else np.array([True] * t.n_theta)
            pairs = [(t.theta_offset + i, sds[i]) for i in range(int(is_sd.sum()))]
            if rt["structure"] == "cs" and t.k == 2:
                pairs.append((t.theta_offset + t.n_theta - 1, cors[0]))
            for j, rname in pairs:
                a = ours.iloc[j].to_numpy()
                b = np.array(ref_rows[rname])
                ok = close(a, b, TOL["ci_rel"], TOL["ci_abs"])
                checks.append(
                    (f"Wald {ours.index[j]} ({rname})", ok, f"[{a[0]:.6g}, {a[1]:.6g}] vs [{b[0]:.6g}, {b[1]:.6g}]")
                )
        a, b = ours.loc[".sigma"].to_numpy(), np.array(ref_rows["sigma"])
        checks.append(
            (
                "Wald .sigma",
                close(a, b, TOL["ci_rel"], TOL["ci_abs"]),
                f"[{a[0]:.6g}, {a[1]:.6g}] vs [{b[0]:.6g}, {b[1]:.6g}]",
            )
        )
    if "profile_theta" in ivals:
        p = ivals["profile_theta"]
        ours = m.confint(method="profile", parm="theta_")
        pos = 0
        for rt in ref["terms"]:  # glmmTMB's theta: term by term in VarCorr's order
            maps = _theta_map(rt["structure"], len(rt["names"]))
            t = next(t for t in design.terms if t.group_name == rt["group"])
            for i, fn in enumerate(maps):
                b = np.sort(fn(np.array([p["lower"][pos + i], p["upper"][pos + i]])))
                a = ours.iloc[t.theta_offset + i].to_numpy()
                ok = close(a, b, TOL["profile_rel"], TOL["profile_abs"])
                name = ours.index[t.theta_offset + i]
                checks.append(
                    (
                        f"profile {name} ({p['names'][pos + i]})",
                        ok,
                        f"[{a[0]:.6g}, {a[1]:.6g}] vs [{b[0]:.6g}, {b[1]:.6g}]",
                    )
                )
            pos += len(maps)
    lt = ref.get("lmertest")
    if lt:
        tab = m.coef_table()
        for name, df_ours, df_ref in zip(lt["names"], tab["df"].to_numpy(), lt["df"]):
            ok = abs(df_ours - df_ref) <= TOL["df_rel"] * abs(df_ref)
            checks.append((f"Satterthwaite df {name} (lmerTest {lt['formula']})", ok, f"{df_ours:.8g} vs {df_ref:.8g}"))
    return checks


def compare_case(case: dict, ref: dict) -> tuple[list[tuple[str, bool, str]], float]:
    """The checks of one case: (name, passed, detail) and sparselmm's fit time."""
    data = pd.read_csv(ROOT / case["data"].removeprefix("csv:"))
    glmm = case.get("family") is not None
    t0 = time.perf_counter()
    if glmm:
        m = sparselmm.glmer(case["formula"], data, family=case["family"])
    else:
        m = sparselmm.lmer(case["formula"], data, reml=case["reml"])
    seconds = time.perf_counter() - t0
    checks = []
    crit, rcrit = float(m.objective), float(ref["criterion"])
    ok = crit <= rcrit + TOL["crit_above"] * abs(rcrit) and abs(crit - rcrit) <= TOL["crit_rel"] * abs(rcrit)
    checks.append(("criterion", ok, f"{crit:.10f} vs {rcrit:.10f} (diff {crit - rcrit:+.2e})"))
    # the algebra: sparselmm's criterion (σ profiled) at glmmTMB's estimates is glmmTMB's criterion
    at_ref = criterion_at(m, theta_at_reference(m.design, ref), ref["beta"])
    ok = abs(at_ref - rcrit) <= TOL["at_ref_rel"] * abs(rcrit)
    checks.append(("criterion at glmmTMB's estimates", ok, f"{at_ref:.10f} vs {rcrit:.10f}"))
    beta = m.fixef.to_numpy()
    for name, b, rb in zip(ref["beta_names"], beta, ref["beta"]):
        checks.append((f"beta {name}", _close(b, rb), f"{b:.8g} vs {rb:.8g}"))
    if ref.get("sigma") is not None:
        checks.append(("sigma", _close(m.sigma, ref["sigma"]), f"{m.sigma:.8g} vs {ref['sigma']:.8g}"))
    if glmm:
        for name, se, rse in zip(ref["beta_names"], m.bse.to_numpy(), ref["se"]):
            ok = abs(se - rse) <= TOL["se_rel"] * abs(rse)
            checks.append((f"se {name}", ok, f"{se:.8g} vs {rse:.8g}"))
    vc = m.varcorr.to_frame()
    for term in ref["terms"]:
        g = term["group"]
        rows = vc[(vc["group"] == g) & vc["var2"].isna()]
        for name, sd, rsd in zip(term["names"], rows["sdcor"], term["sd"]):
            checks.append((f"sd {g} {name}", _close(sd, rsd), f"{sd:.8g} vs {rsd:.8g}"))
        if term.get("structure") == "cs":
            cors = vc[(vc["group"] == g) & vc["var2"].notna()]["sdcor"].to_numpy()
            rho = float(cors[0])
            same = bool(np.allclose(cors, rho, rtol=0, atol=1e-12))
            ok = _close(rho, term["rho"], TOL["rho_abs"]) and same
            checks.append((f"rho {g}", ok, f"{rho:.8g} vs {term['rho']:.8g}"))
        if term.get("structure") == "us" and len(term["names"]) > 1:
            cors = vc[(vc["group"] == g) & vc["var2"].notna()]["sdcor"].to_numpy()
            for j, (rho, ref_rho) in enumerate(zip(cors, term["cor"]), start=1):
                ok = _close(rho, ref_rho, TOL["rho_abs"])
                checks.append((f"cor {g} {j}", ok, f"{rho:.8g} vs {ref_rho:.8g}"))
        if term.get("structure") in ("ar1", "toep"):
            k = len(term["names"])
            C = correlation_matrix(vc, g, k)
            for lag, ref_rho in enumerate(term["lags"], start=1):
                rho = float(C[lag, 0])
                checks.append(
                    (f"rho {g} lag {lag}", _close(rho, ref_rho, TOL["rho_abs"]), f"{rho:.8g} vs {ref_rho:.8g}")
                )
            lags = np.concatenate([[1.0], C[1:, 0]])
            toeplitz = lags[np.abs(np.subtract.outer(np.arange(k), np.arange(k)))]
            if term["structure"] == "ar1":
                toeplitz = C[1, 0] ** np.abs(np.subtract.outer(np.arange(k), np.arange(k)))
            err = float(np.max(np.abs(C - toeplitz)))
            checks.append((f"Toeplitz {g}", err <= 1e-10, f"max deviation {err:.1e}"))
    if not glmm and (case.get("intervals") or case.get("lmertest_formula")):
        checks += interval_checks(m, case, ref)
    return checks, seconds


def main(argv=None) -> int:
    """Compare every case (or those named) and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default=str(ROOT / "validation" / "reference_covstruct"))
    parser.add_argument("--report", default=str(ROOT / "validation" / "REPORT_COVSTRUCT.md"))
    parser.add_argument("cases", nargs="*")
    args = parser.parse_args(argv)
    cases = json.loads((ROOT / "validation" / "covstruct_cases.json").read_text())
    if args.cases:
        cases = [c for c in cases if c["id"] in args.cases]
    lines = [
        "# Covariance structures diag(), cs(), ar1() and toep() against glmmTMB",
        "",
        "Generated by `python validation/compare_covstruct.py` from `validation/run_glmmtmb_covstruct.R`'s "
        "references (glmmTMB's criterion −2 logLik, fixef, sigma, the GLMMs' fixed-effect SEs, VarCorr SDs, the "
        "us and cs correlations and the ar1/toep correlations by lag; Wald and profile intervals of the variance "
        "parameters, and lmerTest's Satterthwaite df for diag = ||).",
        f"Tolerances: {TOL}.",
        "",
        "| case | formula | REML / family | criterion (sparselmm − glmmTMB) | checks | sparselmm s |",
        "|---|---|---|---|---|---|",
    ]
    n_pass = n_all = 0
    failures = []
    pending: list[str] = []
    inference: list[str] = []
    versions = set()
    for case in cases:
        path = Path(args.reference) / f"{case['id']}.json"
        if not path.exists():
            failures.append(f"{case['id']}: no reference {path}")
            continue
        ref = json.loads(path.read_text())
        versions.add(f"{ref['r_version']}, glmmTMB {ref['glmmTMB_version']}, TMB {ref['TMB_version']}")
        formula = case["formula"].replace("|", "\\|")  # a bar inside a Markdown table cell
        if case.get("pending"):
            pending.append(f"{case['id']} (`{formula}`, glmmTMB criterion {ref['criterion']:.10f}): {case['pending']}")
            print(f"{case['id']:18s} pending: {case['pending']}")
            continue
        checks, seconds = compare_case(case, ref)
        passed = sum(ok for _, ok, _ in checks)
        n_pass += passed
        n_all += len(checks)
        failures += [f"{case['id']}: {name}: {detail}" for name, ok, detail in checks if not ok]
        inference += [
            f"| {case['id']} | {name.replace('|', BAR)} | {detail} | {'ok' if ok else 'FAIL'} |"
            for name, ok, detail in checks
            if name.startswith(("Wald", "profile", "Satterthwaite"))
        ]
        kind = case.get("family") or case["reml"]
        lines.append(
            f"| {case['id']} | `{formula}` | {kind} | {checks[0][2]} | {passed}/{len(checks)} | {seconds:.2f} |"
        )
        print(f"{case['id']:18s} {passed}/{len(checks)}  {checks[0][2]}")
    lines += ["", f"**{n_pass}/{n_all} checks passed.** References: {'; '.join(sorted(versions))}.", ""]
    if inference:
        lines += [
            "## Intervals of the variance parameters and Satterthwaite's df (issue 21 item 5)",
            "",
            'sparselmm vs glmmTMB\'s `confint(m, method = "wald")` / `confint(m, method = "profile")` (mapped from '
            "its theta scale) and lmerTest's df of the equivalent lme4 model.",
            "",
            "| case | check | sparselmm vs R | |",
            "|---|---|---|---|",
            *inference,
            "",
        ]
    if pending:
        lines += ["## Not compared yet", ""] + [f"* {p}" for p in pending] + [""]
    if failures:
        lines += ["## Failures", ""] + [f"* {f}" for f in failures] + [""]
    Path(args.report).write_text("\n".join(lines))
    print(f"{n_pass}/{n_all} checks passed")
    for f in failures:
        print("FAILED", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
