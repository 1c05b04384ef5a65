"""Compare sparselmm's intervals, likelihood-ratio tables, bootstrap and simulation with lme4, case by case.

Cases: ``validation/reference_ci/cases.json``; references: the JSON files that
``validation/run_lme4_ci.R`` writes (one per section). Live, as ``nox -s validate`` runs it::

    Rscript validation/run_lme4_ci.R --out DIR
    python validation/compare_ci.py --reference DIR --report validation/REPORT_CI.md

With no ``--reference`` the committed references in ``validation/reference_ci`` are used. Exits 1 when a
check fails or a section's reference is missing. Sections:

* ``wald``: ``confint(m, method = "Wald")`` at three levels — names, NA pattern and bounds.
* ``profile``: ``confint(m)`` (likelihood profile) — names and bounds; the known lme4 failures listed under
  ``profile_exceptions`` in cases.json are compared with lme4's Wald interval instead, and say why.
* ``profile_table``: lme4's ζ table (``as.data.frame(profile(m))``): at each of lme4's points, sparselmm's
  constrained fit with the same parameter held at the same value — ζ, and all other parameters there.
* ``anova`` and ``drop1``: lme4's likelihood-ratio tables, every column.
* ``boot``: ``bootMer`` at nsim = 1000 with another RNG — the statistics on the fit, the draws' means and
  SDs within Monte-Carlo error, and ``BootstrapResult.confint`` on lme4's own draws against
  ``confint(bootMer)`` (``boot::boot.ci``) exactly.
* ``simulate``: per row, the mean, variance and covariance with the next row of ``simulate(m, nsim)`` (and
  ``use.u = TRUE``) — lme4's and sparselmm's draws each against the model's moments (mean ``Xβ̂ + offset``,
  covariance ``σ̂²(ZΛΛᵀZᵀ + W⁻¹)``), and the two means against each other, within Monte-Carlo error.

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
REFERENCE_DIR = ROOT / "validation" / "reference_ci"
CASES_FILE = REFERENCE_DIR / "cases.json"
SECTIONS = ("wald", "profile", "profile_table", "anova", "drop1", "boot", "simulate")

# One place for every tolerance. The comments give the scale each difference is measured on and the
# largest difference measured (R 4.2.2, lme4 1.1-31; validation/REPORT_CI.md has the current numbers).
TOLERANCES = {
    # β̂ ± z·SE: |ours − lme4| / max(|lme4|, SE). β̂ and SE agree to ~1e-6 (validation/compare.py); a wrong
    # quantile or SE (e.g. REML SE on an ML fit) is off by > 1e-3
    "wald": 1e-5,
    # profile ends: |ours − lme4| / max(|lme4|, 1e-2). lme4 interpolates a spline through ~8 points per side
    # where sparselmm solves ζ = ±z; measured < 2e-4. A REML instead of ML profile moves ends by 1e-2..1e-1
    "profile": 1e-3,
    # profile_exceptions: |ours − lme4's Wald end| / Wald half-width (profile and Wald differ by curvature)
    "profile_vs_wald": 0.05,
    # profile_table, at lme4's points (not lme4's estimate, ζ = 0): sparselmm's constrained optimum may not be
    # worse than lme4's (ζ_ours² − ζ_lme4², the criterion above each side's minimum, ≤ this, in deviance
    # units; each side's minimum is its own fit, which differ by ~1e-8); where it is not better either,
    # |Δζ| ≤ profile_table_zeta (measured: median 1e-9, largest 9e-5); the other parameters there: median
    # relative difference (largest 2.3e-4; a flat direction — an SD near 0, a correlation at ±1 — moves
    # single points by up to 0.2)
    "profile_table_worse": 1e-6,
    "profile_table_zeta": 1e-3,
    "profile_table_params_median": 1e-3,
    # anova / drop1: logLik, deviance, AIC, BIC relative; Chisq / LRT absolute + relative; p-values relative;
    # npar and Df exactly. Both sides reach the ML optimum to ~1e-8 in the deviance
    "lrt_rel": 1e-6,
    "chisq_abs": 1e-6,
    "chisq_rel": 1e-5,
    "p_rel": 1e-4,
    # bootstrap: statistics on the fit, |ours − lme4| / max(|lme4|, 1). The SDs follow θ̂, which two
    # optimisers fix only to their tolerance (compare.py allows 1e-3 on θ); measured 8.4e-6
    "boot_t0": 1e-4,
    # BootstrapResult.confint on lme4's draws vs confint(bootMer): the same order statistics, relative
    "boot_ci_on_lme4_draws": 1e-10,
    # draws' means and SDs: |difference| / Monte-Carlo SE of the difference (different RNGs); the SE of an SD
    # is inflated by boot_sd_inflate for the skewed variance parameters. A wrong σ̂ in the simulation or a
    # missing Z Λ u* is off by > 20
    "boot_z": 4.5,
    "boot_sd_inflate": 1.5,
    # simulate: |empirical − model| / Monte-Carlo SE per row and statistic (mean, variance, covariance with
    # the next row) for lme4's and sparselmm's draws, and the two means against each other: up to 1.6e4 such
    # z per case (685 rows × 12), so 5.5 keeps the chance of a false alarm near 1e-3 per case. Ignoring the
    # prior weights in the residual variance gives z of 20-90, a missing Z Λ u* far more
    "simulate_z": 5.5,
}


@dataclass
class Check:
    """One case of one section: the largest normalised difference and what failed."""

    section: str
    case: str
    measure: float = 0.0
    tolerance: float = 0.0
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = float("nan")
    r_seconds: float = float("nan")

    @property
    def ok(self) -> bool:
        return not self.failures

    def record(self, name: str, diff: float, tol: float) -> None:
        """Fail if ``diff > tol``; keep the check nearest its tolerance (largest ``diff / tol``) as the measure."""
        diff = float(diff)
        if not np.isfinite(diff) or diff > tol:
            self.failures.append(f"{name}: {diff:.3g} exceeds {tol:g}")
        ratio = np.inf if not np.isfinite(diff) else (diff / tol if tol else (0.0 if diff == 0 else np.inf))
        if ratio >= self._worst:
            self._worst, self.measure, self.tolerance = ratio, diff, tol

    _worst: float = -1.0


# ---- data and fits ----------------------------------------------------------------------------
def load_cases() -> dict:
    return json.loads(CASES_FILE.read_text())


_data_cache: dict[str, pd.DataFrame] = {}
_fit_cache: dict[str, object] = {}


def load_data(source: str) -> pd.DataFrame:
    import sparselmm

    if source not in _data_cache:
        if source.startswith("dataset:"):
            _data_cache[source] = sparselmm.datasets.load(source.split(":", 1)[1])
        else:
            _data_cache[source] = pd.read_csv(ROOT / source.split(":", 1)[1])
    return _data_cache[source]


def fit(cases: dict, model_id: str):
    """The case's model fitted by sparselmm.lmer (cached; nothing here changes a fit)."""
    import sparselmm

    if model_id not in _fit_cache:
        cs = cases["models"][model_id]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = load_data(cs["data"])
            _fit_cache[model_id] = sparselmm.lmer(
                cs["formula"], data, reml=cs["reml"], weights=cs.get("weights"), offset=cs.get("offset")
            )
    return _fit_cache[model_id]


def r_name(name: str) -> str:
    """formulaic's ``recipe[T.B]`` as R writes it (``recipeB``)."""
    return name.replace("[T.", "").replace("]", "")


def same_names(check: Check, ours, theirs) -> bool:
    ours = [r_name(str(n)) for n in ours]
    if ours != list(theirs):
        check.failures.append(f"names {ours} differ from lme4's {list(theirs)}")
        return False
    return True


def values(seq) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in seq], dtype=float)


def _max(x) -> float:
    x = np.asarray(x, dtype=float)
    return float(np.max(x)) if x.size else 0.0


# ---- sections --------------------------------------------------------------------------------
def compare_wald(cases: dict, ref: dict) -> list[Check]:
    out = []
    for case_id, entry in ref["cases"].items():
        check = Check("wald", case_id)
        m = fit(cases, case_id)
        se = np.sqrt(np.diag(m.vcov.to_numpy()))
        n_var = m.design.n_theta + 1
        t0 = time.perf_counter()
        for lv in entry["intervals"]:
            ci = m.confint(method="Wald", level=lv["level"])
            if list(ci.columns) != lv["columns"]:
                check.failures.append(f"columns {list(ci.columns)} differ from lme4's {lv['columns']}")
            if not same_names(check, ci.index, lv["names"]):
                continue
            for col, key in zip(ci.columns, ("lower", "upper")):
                want, got = values(lv[key]), ci[col].to_numpy()
                if not np.array_equal(np.isnan(want), np.isnan(got)):
                    check.failures.append(f"NA pattern of the {key} bounds at level {lv['level']} differs")
                    continue
                ok = ~np.isnan(want)
                scale = np.maximum(np.abs(want[ok]), se[np.flatnonzero(ok) - n_var])
                diff = _max(np.abs(got[ok] - want[ok]) / scale)
                check.record(f"{key} bound at level {lv['level']}", diff, TOLERANCES["wald"])
        check.seconds = time.perf_counter() - t0
        out.append(check)
    return out


def compare_profile(cases: dict, ref: dict, skip_slow: bool, wald_path: Path) -> list[Check]:
    out = []
    exceptions = cases.get("profile_exceptions", {})
    wald_ref = {}
    for case_id, entry in ref["cases"].items():
        if skip_slow and case_id in cases.get("slow", []):
            continue
        check = Check("profile", case_id, r_seconds=float(entry.get("seconds", np.nan)))
        m = fit(cases, case_id)
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ci = m.confint(method="profile", progress=False)
        check.seconds = time.perf_counter() - t0
        ours_warn = sorted({str(w.message) for w in caught if "profil" in str(w.message).lower()})
        if ours_warn:
            check.notes.append("sparselmm: " + "; ".join(ours_warn))
        if entry.get("warnings"):
            check.notes.append("lme4: " + "; ".join(entry["warnings"]))
        if not same_names(check, ci.index, entry["names"]):
            out.append(check)
            continue
        names = list(entry["names"])
        exc = exceptions.get(case_id, {})
        special = [names.index(p) for p in exc.get("params", [])]
        regular = [i for i in range(len(names)) if i not in special]
        got = ci.to_numpy()
        want = np.column_stack([values(entry["lower"]), values(entry["upper"])])
        diff = np.abs(got[regular] - want[regular]) / np.maximum(np.abs(want[regular]), 1e-2)
        check.record("profile ends", _max(diff), TOLERANCES["profile"])
        if special:
            if not wald_ref:
                wald_ref.update(json.loads(wald_path.read_text())["cases"])
            wald = next(iv for iv in wald_ref[case_id]["intervals"] if iv["level"] == 0.95)
            w = np.column_stack([values(wald["lower"]), values(wald["upper"])])
            rows = [wald["names"].index(names[i]) for i in special]
            half = (w[rows, 1] - w[rows, 0])[:, None] / 2
            check.record(
                f"profile ends of {[names[i] for i in special]} vs lme4's Wald",
                _max(np.abs(got[special] - w[rows]) / half),
                TOLERANCES["profile_vs_wald"],
            )
            check.notes.append(exc["reason"])
        out.append(check)
    return out


def compare_profile_table(cases: dict, ref: dict) -> list[Check]:
    from sparselmm.inference.profile import _Profiler

    out = []
    for case_id, entry in ref["cases"].items():
        check = Check("profile_table", case_id, r_seconds=float(entry.get("seconds", np.nan)))
        m = fit(cases, case_id)
        t0 = time.perf_counter()
        prof = _Profiler(m, "ML")
        if not same_names(check, prof.names, entry["names"]):
            out.append(check)
            continue
        names = list(entry["names"])
        lme4_values = np.array([values(v) for v in entry["values"]]).T
        worse, dzeta, dpar, better = [], [], [], []
        for i, (par, x, zeta) in enumerate(zip(entry["par"], entry["focal"], entry["zeta"])):
            j = names.index(par)
            if zeta == 0.0:  # lme4's estimate
                continue
            pt = prof.deviance_at(j, float(x))
            worse.append(pt.zeta**2 - zeta**2)
            if abs(zeta) - abs(pt.zeta) > TOLERANCES["profile_table_zeta"]:
                better.append(f"{par} = {x:.4g} (ζ {pt.zeta:.4f}, lme4 {zeta:.4f})")
            else:
                dzeta.append(abs(pt.zeta - zeta))
            want = lme4_values[i]
            dpar.append(np.max(np.abs(pt.params - want) / np.maximum(np.abs(want), 1e-2)))
        check.seconds = time.perf_counter() - t0
        check.record("criterion above lme4's", max(0.0, _max(worse)), TOLERANCES["profile_table_worse"])
        check.record("ζ", _max(dzeta), TOLERANCES["profile_table_zeta"])
        check.record(
            "parameters along the profile (median)", float(np.median(dpar)), TOLERANCES["profile_table_params_median"]
        )
        check.notes.append(
            f"{len(worse)} points; median |Δζ| {np.median(dzeta):.1e}; parameters: median {np.median(dpar):.1e}, "
            f"largest {np.max(dpar):.1e}"
        )
        if better:
            check.notes.append(
                f"sparselmm's constrained fit is lower than lme4's at {len(better)}: " + ", ".join(better)
            )
        out.append(check)
    return out


def _compare_table(check: Check, table: pd.DataFrame, entry: dict, exact: tuple, rel: tuple, stat: str, p: str):
    if list(table.index) != list(entry["rows"]) or list(table.columns) != list(entry["columns"]):
        check.failures.append(
            f"layout {list(table.index)} x {list(table.columns)} differs from lme4's "
            f"{entry['rows']} x {entry['columns']}"
        )
        return
    for name in table.columns:
        got, want = table[name].to_numpy(dtype=float), values(entry["values"][name])
        if not np.array_equal(np.isnan(got), np.isnan(want)):
            check.failures.append(f"NA pattern of {name} differs")
            continue
        ok = ~np.isnan(want)
        g, w = got[ok], want[ok]
        if name in exact:
            check.record(name, _max(np.abs(g - w)), 0.0)
        elif name in rel:
            check.record(name, _max(np.abs(g - w) / np.abs(w)), TOLERANCES["lrt_rel"])
        elif name == stat:
            diff = np.abs(g - w) / (TOLERANCES["chisq_abs"] + TOLERANCES["chisq_rel"] * np.abs(w))
            check.record(name + " (in units of its tolerance)", _max(diff), 1.0)
        elif name == p:
            check.record(name, _max(np.abs(g - w) / np.maximum(w, 1e-300)), TOLERANCES["p_rel"])


def compare_anova(cases: dict, ref: dict) -> list[Check]:
    from sparselmm.inference.lrt import likelihood_ratio_table

    out = []
    for case_id, entry in ref["cases"].items():
        check = Check("anova", case_id)
        models = [fit(cases, i) for i in entry["models"]]
        t0 = time.perf_counter()
        table = likelihood_ratio_table(models, names=entry["models"])
        check.seconds = time.perf_counter() - t0
        _compare_table(check, table, entry, ("npar", "Df"), ("AIC", "BIC", "logLik", "deviance"), "Chisq", "Pr(>Chisq)")
        refitted = bool(table.attrs.get("refitted"))
        if refitted != any("refitting" in msg for msg in entry["messages"]):
            check.failures.append(f"refitted by ML: sparselmm {refitted}, lme4's messages {entry['messages']}")
        out.append(check)
    return out


def compare_drop1(cases: dict, ref: dict) -> list[Check]:
    from sparselmm.inference.lrt import drop1

    out = []
    for case_id, entry in ref["cases"].items():
        check = Check("drop1", case_id)
        m = fit(cases, entry["model"])
        t0 = time.perf_counter()
        table = drop1(m, test=entry["test"])
        check.seconds = time.perf_counter() - t0
        _compare_table(check, table, entry, ("npar",), ("AIC",), "LRT", "Pr(Chi)")
        out.append(check)
    return out


def compare_boot(cases: dict, ref: dict) -> list[Check]:
    from sparselmm.inference.bootstrap import BootstrapResult

    names = ref["names"]
    m = fit(cases, ref["model"])
    nsim = int(ref["nsim"])
    check = Check("boot", f"{ref['model']} (nsim={nsim})", r_seconds=float(ref.get("seconds", np.nan)))
    t0 = time.perf_counter()
    boot = m.bootstrap(nsim, seed=int(ref["seed"]), progress=False)
    check.seconds = time.perf_counter() - t0
    summary = boot.summary()
    if not same_names(check, summary.index, names):
        return [check]
    if not boot.failures.empty:
        check.failures.append(f"{len(boot.failures)} replicates failed: {boot.failures['reason'].iloc[0]}")
    t0_r = np.array(ref["t0"], dtype=float)
    check.record("t0", _max(np.abs(summary["original"] - t0_r) / np.maximum(np.abs(t0_r), 1.0)), TOLERANCES["boot_t0"])
    sd_r, sd_py = np.array(ref["sd"], dtype=float), summary["std. error"].to_numpy()
    n_r = int(ref["n_ok"])
    n_py = int(summary["n"].min())
    se_mean = np.sqrt(sd_r**2 / n_r + sd_py**2 / n_py)
    z_mean = (summary["mean"].to_numpy() - np.array(ref["mean"], dtype=float)) / se_mean
    inflate = np.where(np.char.startswith(np.array(names), ".sig"), TOLERANCES["boot_sd_inflate"], 1.0)
    se_sd = inflate * np.sqrt(sd_r**2 / (2 * (n_r - 1)) + sd_py**2 / (2 * (n_py - 1)))
    z_sd = (sd_py - sd_r) / se_sd
    check.record("draw means (z)", _max(np.abs(z_mean)), TOLERANCES["boot_z"])
    check.record("draw SDs (z)", _max(np.abs(z_sd)), TOLERANCES["boot_z"])
    lme4_draws = pd.DataFrame(np.array([values(d) for d in ref["draws"]]).T, columns=names)
    on_lme4 = BootstrapResult(
        draws=lme4_draws,
        t0=pd.Series(t0_r, index=names),
        failures=pd.DataFrame(columns=["replicate", "reason"]),
        diagnostics=pd.DataFrame(),
        seed=None,
        seconds=0.0,
    )
    for ci_ref in ref["confint"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ci = on_lme4.confint(type=ci_ref["type"])
        want = np.column_stack([values(ci_ref["lower"]), values(ci_ref["upper"])])
        diff = np.abs(ci.to_numpy() - want) / np.maximum(np.abs(want), 1e-300)
        check.record(f"boot.ci {ci_ref['type']} on lme4's draws", _max(diff), TOLERANCES["boot_ci_on_lme4_draws"])
    check.notes.append(
        f"max |z| of the draw means {np.max(np.abs(z_mean)):.2f}, of the SDs {np.max(np.abs(z_sd)):.2f}; "
        f"{1e3 * check.seconds / nsim:.2f} ms per replicate here, {1e3 * check.r_seconds / nsim:.1f} in lme4"
    )
    return [check]


def model_moments(m, use_u: bool, ignore_weights: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, variance and covariance with the next row of a simulated response, from the fitted model
    (``ignore_weights``: with residual variance σ² on every row, as lme4 1.1-31 simulates a weighted fit)."""
    w = None if ignore_weights else m.design.weights
    resid_var = m.sigma**2 / (1.0 if w is None else w)
    resid_var = np.broadcast_to(resid_var, (m.nobs,))
    if use_u:
        return m.fitted(), resid_var.copy(), np.zeros(m.nobs - 1)
    offset = m.design.offset
    mean = m.X @ m.fixef.to_numpy() + (0.0 if offset is None else offset)
    ZL = (m.Z @ m.Lambda).tocsr()
    var = m.sigma**2 * np.asarray(ZL.multiply(ZL).sum(axis=1)).ravel() + resid_var
    cov_next = m.sigma**2 * np.asarray(ZL[:-1].multiply(ZL[1:]).sum(axis=1)).ravel()
    return mean, var, cov_next


def compare_simulate(cases: dict, ref: dict) -> list[Check]:
    out = []
    tol = TOLERANCES["simulate_z"]
    exceptions = cases.get("simulate_exceptions", {})
    for case_id, entry in ref["cases"].items():
        check = Check("simulate", case_id)
        m = fit(cases, case_id)
        nsim = int(entry["nsim"])
        exc = exceptions.get(case_id, {})
        t0 = time.perf_counter()
        worst = {}
        for draws in entry["draws"]:
            use_u = bool(draws["use_u"])
            Y = m.simulate(nsim, seed=int(entry["seed"]), use_u=use_u).to_numpy()
            Yc = Y - Y.mean(axis=1, keepdims=True)
            ours = (Y.mean(axis=1), Y.var(axis=1, ddof=1), np.sum(Yc[:-1] * Yc[1:], axis=1) / (nsim - 1))
            lme4 = (values(draws["mean"]), values(draws["var"]), values(draws["cov_next"]))
            for who, (mu, v, c) in (("lme4", lme4), ("sparselmm", ours)):
                mean, var, cov = model_moments(m, use_u, who == "lme4" and exc.get("lme4_ignores_weights", False))
                se_cov = np.sqrt((var[:-1] * var[1:] + cov**2) / nsim)
                tag = f"{who}, use_u={use_u}"
                worst[f"mean ({tag})"] = _max(np.abs(mu - mean) / np.sqrt(var / nsim))
                worst[f"variance ({tag})"] = _max(np.abs(v / var - 1) / np.sqrt(2 / (nsim - 1)))
                worst[f"covariance with the next row ({tag})"] = _max(np.abs(c - cov) / se_cov)
            worst[f"means, sparselmm vs lme4 (use_u={use_u})"] = _max(
                np.abs(ours[0] - lme4[0]) / np.sqrt((ours[1] + lme4[1]) / nsim)
            )
        check.seconds = time.perf_counter() - t0
        for name, z in worst.items():
            check.record(name + " (z)", z, tol)
        check.notes.append(f"nsim = {nsim}, {m.nobs} rows; largest |z|: {max(worst.values()):.2f}")
        if exc:
            check.notes.append(exc["reason"])
        out.append(check)
    return out


# ---- driver ----------------------------------------------------------------------------------
def run(reference_dir: Path, sections=SECTIONS, skip_slow: bool = False) -> tuple[list[Check], dict]:
    cases = load_cases()
    results: list[Check] = []
    meta: dict = {}
    for section in sections:
        path = reference_dir / f"{section}.json"
        if not path.exists():
            results.append(Check(section, "(reference)", failures=[f"no lme4 reference at {path}"]))
            continue
        ref = json.loads(path.read_text())
        meta.setdefault("lme4_version", ref.get("lme4_version"))
        meta.setdefault("r_version", ref.get("r_version"))
        if section == "wald":
            results += compare_wald(cases, ref)
        elif section == "profile":
            results += compare_profile(cases, ref, skip_slow, reference_dir / "wald.json")
        elif section == "profile_table":
            results += compare_profile_table(cases, ref)
        elif section == "anova":
            results += compare_anova(cases, ref)
        elif section == "drop1":
            results += compare_drop1(cases, ref)
        elif section == "boot":
            results += compare_boot(cases, ref)
        elif section == "simulate":
            results += compare_simulate(cases, ref)
    return results, meta


def write_report(results: list[Check], path: Path, meta: dict, reference_dir: Path) -> None:
    import sparselmm

    lines = [
        "# sparselmm vs lme4: confidence intervals, likelihood-ratio tests, bootstrap, simulation",
        "",
        f"Generated by `python validation/compare_ci.py` (in `nox -s validate`) against `{reference_dir}`: "
        f"lme4 {meta.get('lme4_version', '?')}, {meta.get('r_version', '?')}; sparselmm {sparselmm.__version__}.",
        "Tolerances (validation/compare_ci.py `TOLERANCES`): "
        + ", ".join(f"{k} {v:g}" for k, v in TOLERANCES.items())
        + ".",
        "",
        f"**{sum(r.ok for r in results)} of {len(results)} checks within tolerance.**",
        "",
        "`largest difference` is the check nearest its tolerance, in the units compare_ci.py defines for it "
        "(relative bounds, z scores for Monte-Carlo comparisons).",
    ]
    for section in SECTIONS:
        rows = [r for r in results if r.section == section]
        if not rows:
            continue
        lines += [
            "",
            f"## {section}",
            "",
            "| case | ok | largest difference | tolerance | sparselmm s | lme4 s | notes |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            notes = "; ".join(r.notes + r.failures).replace("|", "\\|")
            lines.append(
                f"| {r.case} | {'yes' if r.ok else 'NO'} | {r.measure:.2e} | {r.tolerance:g} | "
                f"{r.seconds:.3f} | {r.r_seconds:.3f} | {notes} |".replace("nan", "–")
            )
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sections", nargs="*", help=f"sections to compare, of {list(SECTIONS)} (all by default)")
    ap.add_argument("--reference", type=Path, default=REFERENCE_DIR, help="directory run_lme4_ci.R wrote")
    ap.add_argument("--report", type=Path, default=None, help="write the Markdown report here")
    ap.add_argument("--skip-slow", action="store_true", help="leave out the profiles of the 'slow' models")
    args = ap.parse_args(argv)
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        ap.error(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    results, meta = run(args.reference, args.sections or SECTIONS, args.skip_slow)
    for r in results:
        print(
            f"{'ok ' if r.ok else 'FAIL'} {r.section:9s} {r.case:34s} {r.measure:.2e} (tol {r.tolerance:g})"
            f"  {r.seconds:.2f} s"
        )
        for f in r.failures:
            print(f"       {f}")
    if args.report:
        write_report(results, args.report, meta, args.reference)
        print(f"wrote {args.report}")
    n_fail = sum(not r.ok for r in results)
    print(f"{len(results) - n_fail} passed, {n_fail} failed")
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
