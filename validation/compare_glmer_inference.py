"""Compare glmer's inference with lme4's: Wald and profile intervals, anova(g0, g1), drop1, the parametric bootstrap
and pbkrtest's parametric-bootstrap LRT.

Usage (repository root)::

    python validation/compare_glmer_inference.py [--reference DIR] [--report FILE] [--pb-nsim N]
        [--pb-responses K] [case ...]

References are the JSON files ``validation/run_glmer_inference.R`` writes (committed in
``validation/reference_glmer_inference``) for the cases of ``validation/glmer_inference_cases.json``. lme4 fits
every model with ``glmerControl(tolPwrss = 1e-12)`` (its default 1e-7 leaves the criterion up to ~1e-3 high
and the SEs ~1 % off, see REPORT_GLMM.md); sparselmm fits with its defaults. All tolerances are in ``TOL``.

Sections, per case:

* ``fit``: −2 log L no higher than lme4's (``crit_above``) and within ``crit_abs`` of it.
* ``wald``: ``confint(g, method = "Wald")``: the same rows (lme4's names for the variance parameters and the
  fixed effects in lme4's order, NaN where lme4 has NA), the ends within ``wald_in_se`` standard errors.
* ``anova``: ``anova(r1, …, g)`` with the reduced models of the case: the same order, ``npar`` and ``Df``
  exactly, every model's deviance no higher than lme4's and within ``crit_abs``, logLik/AIC/BIC/deviance within
  ``crit_abs``, ``Chisq`` within ``chisq_abs``, ``Pr(>Chisq)`` within ``p_rel`` relative (or ``p_abs``).
* ``drop1``: ``drop1(g, test = "Chisq")``: the same rows, ``npar``, AIC no higher than lme4's and within
  ``crit_abs``, ``LRT`` and ``Pr(Chi)`` as ``Chisq`` and ``Pr(>Chisq)``.
* ``profile`` (cases with ``"profile": true``): ``confint(g, method = "profile")``: the same rows, NaN where
  lme4 has NA, every end within ``profile_abs + profile_rel·|end|`` of lme4's (lme4 interpolates a spline
  through ζ on a grid, sparselmm solves ``ζ = ±z``; the Wald ends differ by 0.02–0.05). Each fixed-effect end
  of sparselmm's is also checked directly: a fresh ``glmer`` fit of the model with that column of X moved to
  the offset has ``|ζ| = z`` within ``profile_zeta``. The reference holds the same check of lme4's ends (its
  fresh fits in R): where lme4's ζ misses ``±z`` by more than ``profile_lme4_behind``, lme4's profile
  stopped above the constrained optimum and that end is reported, not compared.
* ``boot`` (cases with a bootstrap): the responses lme4's ``bootMer`` refitted (the reference holds them) are
  refitted by sparselmm's bootstrap refit (:func:`sparselmm.glmm.fit.refit_glmm`, warm start, as each
  replicate of ``GlmerResult.bootstrap``), so the comparison is deterministic: per replicate the criterion no
  higher than lme4's refit (``crit_above``) and the statistics within ``boot_stat_in_sd`` bootstrap SDs
  where lme4's refit reached the same optimum (a replicate where sparselmm's is lower by more than
  ``boot_lme4_behind`` is counted as lme4 stopping early and its statistics are not compared); ``t0`` equal;
  the percentile intervals (``BootstrapResult.confint``, ``boot::boot.ci``'s ``norm.inter``) within
  ``boot_ci_in_sd`` bootstrap SDs of lme4's ``confint(bootMer(...), type = "perc")``.
* ``pbmodcomp`` (cases with ``"pbmodcomp"``): pbkrtest's ``PBmodcomp(g, g0, nsim)`` against
  ``bootstrap_lrt(g0, g, nsim_sparselmm, seed)``. The observed statistic within ``pb_tobs_rel`` relative (a
  difference of two criteria, each within ~1e-8 of lme4's tight fits) and its χ² p-value as anova's. The
  responses PBmodcomp refitted (the reference holds them, and both models' −2 log L refitted with the tight
  control) are refitted by bootstrap_lrt's own replicator (``_LRTReplicator.statistic``), so this part is
  deterministic: per response each model's criterion no higher than lme4's (``crit_above``), the statistic
  within ``chisq_abs`` of lme4's where lme4's refits reached the same optima (``boot_lme4_behind``), and the
  numbers pbkrtest's p-value counts (``#{LRT* > 0}``, ``#{LRT* > LRT}``) the same. The Monte-Carlo part
  compares sparselmm's own seeded run (other random numbers) with the live PBmodcomp: the bootstrap p-value
  and the mean and SD of the simulated statistics, each difference in units of its Monte-Carlo standard
  error, within ``pb_mc_z``. With ``n₁`` and ``n₂`` independent draws the p-values differ by
  ``SE = sqrt(p̄(1 − p̄)(1/n₁ + 1/n₂))`` (each is a proportion, SE ``sqrt(p(1 − p)/n)``; ``p̄`` their pooled
  value, at least ``1/n₁``); the means by ``sqrt(s₁²/n₁ + s₂²/n₂)``; the SDs by ``sqrt(v₁ + v₂)`` with
  ``vᵢ = (m₄ − s⁴)/(4 s² nᵢ)`` (the delta method, ``m₄`` the draws' fourth central moment). Four SEs: a
  false alarm for one of these checks about once in 16,000 runs. The p-value is pbkrtest 0.5.2's,
  ``(1 + #{LRT* > LRT})/(1 + #{LRT* > 0})``, in both (see :func:`sparselmm.inference.lrt.bootstrap_lrt`).

Exit status 1 if any check fails or a reference is missing.
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
from sparselmm.glmm.fit import refit_glmm  # noqa: E402
from sparselmm.inference.bootstrap import BootstrapResult  # noqa: E402
from sparselmm.inference.bootstrap_lrt import _LRTReplicator  # noqa: E402
from sparselmm.inference.lrt import likelihood_ratio_table  # noqa: E402

TOL = {
    # −2 log L (every fit: the case's model, the anova's and drop1's reduced models, each bootstrap refit):
    # sparselmm's no higher than lme4's by more than this (absolute) ...
    "crit_above": 1e-6,
    # ... and within this of it either way (logLik, AIC, BIC, deviance columns): compare_glmm.py's tolerance
    # against lme4's tight refits (criterion_vs_tight); measured up to 5e-5, where sparselmm is lower
    "crit_abs": 2e-4,
    # likelihood-ratio statistics (Chisq, LRT): a difference of two criteria
    "chisq_abs": 2e-4,
    # p-values: relative, or absolute for tiny ones
    "p_rel": 1e-3,
    "p_abs": 1e-12,
    # Wald interval ends, in lme4's standard errors: β̂ ± 1.96 SE with compare_glmm.py's tolerances against
    # lme4's tight refits (β 0.005 SE, SEs 1 %: both sides' SEs come from finite-difference Hessians of the
    # criterion, with their own evaluation noise), 0.005 + 1.96 × 0.01
    "wald_in_se": 0.025,
    # profile interval ends: absolute + relative to the end (lme4's spline interpolation: measured up to 2.4e-4)
    "profile_abs": 2e-3,
    "profile_rel": 1e-3,
    # |ζ| − z of a fresh constrained fit at sparselmm's fixed-effect ends
    "profile_zeta": 1e-3,
    # |ζ| − z of lme4's fresh constrained fit at lme4's end beyond which lme4's profile is behind
    "profile_lme4_behind": 0.01,
    # bootstrap: a replicate where sparselmm's refit is lower than lme4's by more than this is lme4 stopping
    # early (its statistics are not compared; the count is reported)
    "boot_lme4_behind": 1e-4,
    # bootstrap statistics per replicate and t0, in bootstrap SDs (lme4's draws' SD per statistic)
    "boot_stat_in_sd": 0.01,
    # percentile interval ends, in bootstrap SDs
    "boot_ci_in_sd": 0.01,
    # PBmodcomp: the observed LRT statistic, relative
    "pb_tobs_rel": 1e-6,
    # PBmodcomp against sparselmm's own run: p-value, mean and SD of the draws, in Monte-Carlo SEs
    "pb_mc_z": 4.0,
}
# a shorter pbmodcomp section (the tests): sparselmm's own run with this many draws instead of the case's
# nsim_sparselmm, and only the first PB_RESPONSES of lme4's responses refitted (None: the case's, all)
PB_NSIM: int | None = None
PB_RESPONSES: int | None = None


def load(case) -> pd.DataFrame:
    d = pd.read_csv(ROOT / case["data"])
    for f in case["factors"]:
        d[f] = pd.Categorical(d[f])
    return d


def fit(case, d, formula=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        family = case["family"]
        return sparselmm.glmer(
            formula or case["formula"],
            d,
            family=family,
            link=case["link"],
            nAGQ=case["nAGQ"],
            weights=case["weights"],
            offset=case["offset"],
        )


def arr(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


class Check:
    """One section of one case: the measured differences (name -> value, tolerance) and the failures."""

    def __init__(self, section: str, case: str):
        self.section, self.case = section, case
        self.measured: dict[str, tuple[float, float | None]] = {}
        self.failures: list[str] = []
        self.notes: list[str] = []
        self.seconds = np.nan
        self.r_seconds = np.nan

    def record(self, name: str, value: float, tol: float | None, smaller_ok: bool = True) -> None:
        """Record ``value`` and fail if it exceeds ``tol`` (NaN counts as failing unless ``tol`` is None)."""
        self.measured[name] = (float(value), tol)
        if tol is not None and not (value <= tol):
            self.failures.append(f"{name} = {value:.3g} > {tol:g}")

    def require(self, ok: bool, message: str) -> None:
        if not ok:
            self.failures.append(message)


def _max(x) -> float:
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    return float(np.max(np.abs(x))) if x.size else 0.0


def _p_diff(ours, ref) -> float:
    """Largest p-value difference relative to the tolerance's scale: |Δp| / (p_rel·p + p_abs) × p_rel."""
    ours, ref = arr(ours), arr(ref)
    both = np.isfinite(ours) & np.isfinite(ref)
    if not np.array_equal(np.isfinite(ours), np.isfinite(ref)):
        return np.inf
    d = np.abs(ours[both] - ref[both]) / (TOL["p_rel"] * ref[both] + TOL["p_abs"])
    return float(np.max(d) * TOL["p_rel"]) if d.size else 0.0


def compare_fit(case, ref, g) -> Check:
    c = Check("fit", case["id"])
    diff = g.deviance - ref["minus2loglik"]
    c.record("crit - lme4", diff, TOL["crit_above"])
    c.record("|crit - lme4|", abs(diff), TOL["crit_abs"])
    c.record("theta", _max(np.atleast_1d(g.theta) - arr(ref["theta"])), None)
    c.record("beta (SE)", _max((g.fixef.to_numpy() - arr(ref["beta"])) / arr(ref["se"])), None)
    c.record("SE (rel)", _max(g.bse.to_numpy() / arr(ref["se"]) - 1), None)
    return c


def compare_wald(case, ref, g) -> Check:
    c = Check("wald", case["id"])
    ci = g.confint(method="Wald")
    w = ref["wald"]
    names_r = list(w["rownames"])
    n_var = sum(1 for n in names_r if n.startswith(".sig"))
    names_py = list(ci.index)
    c.require(len(names_py) == len(names_r), f"rows {names_py} vs lme4's {names_r}")
    c.require(names_py[:n_var] == names_r[:n_var], f"variance rows {names_py[:n_var]} vs {names_r[:n_var]}")
    c.require(names_r[n_var:] == list(ref["beta_names"]), "lme4's fixed-effect rows are not its fixef order")
    c.require(list(ci.columns) == list(w["colnames"]), f"columns {list(ci.columns)} vs {w['colnames']}")
    if c.failures:
        return c
    lo, hi = arr(w["lower"]), arr(w["upper"])
    ours = ci.to_numpy()
    c.require(
        np.array_equal(np.isnan(ours[:, 0]), np.isnan(lo)) and np.array_equal(np.isnan(ours[:, 1]), np.isnan(hi)),
        "NaN rows differ from lme4's NA rows",
    )
    se = np.concatenate([np.full(n_var, np.nan), arr(ref["se"])])
    c.record("ends (SE)", _max(np.concatenate([(ours[:, 0] - lo) / se, (ours[:, 1] - hi) / se])), TOL["wald_in_se"])
    return c


def compare_anova(case, ref, g, d) -> Check:
    c = Check("anova", case["id"])
    a = ref["anova"]
    t0 = time.perf_counter()
    reduced = [fit(case, d, f) for f in case["anova"]]
    table = likelihood_ratio_table(reduced + [g], names=list(a["models"]))
    c.seconds = time.perf_counter() - t0
    c.require(list(table.index) == list(a["rownames"]), f"rows {list(table.index)} vs lme4's {a['rownames']}")
    if c.failures:
        return c
    c.require(np.array_equal(table["npar"].to_numpy(float), arr(a["npar"])), f"npar {table['npar'].tolist()}")
    df_py, df_r = table["Df"].to_numpy(float), arr(a["Df"])
    c.require(np.array_equal(np.nan_to_num(df_py, nan=-1), np.nan_to_num(df_r, nan=-1)), f"Df {df_py} vs {df_r}")
    dev = table["deviance"].to_numpy(float) - arr(a["deviance"])
    c.record("deviance - lme4", float(np.max(dev)), TOL["crit_above"])
    worst = max(
        _max(dev),
        _max(table["AIC"].to_numpy(float) - arr(a["AIC"])),
        _max(table["BIC"].to_numpy(float) - arr(a["BIC"])),
        2 * _max(table["logLik"].to_numpy(float) - arr(a["logLik"])),
    )
    c.record("|deviance, AIC, BIC, 2 logLik|", worst, TOL["crit_abs"])
    c.record("Chisq", _max(table["Chisq"].to_numpy(float) - arr(a["Chisq"])), TOL["chisq_abs"])
    c.record("Pr(>Chisq) (rel)", _p_diff(table["Pr(>Chisq)"], a["Pr(>Chisq)"]), TOL["p_rel"])
    return c


def compare_drop1(case, ref, g) -> Check:
    c = Check("drop1", case["id"])
    r = ref["drop1"]
    c.r_seconds = float(r["seconds"])
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = g.drop1(test="Chisq")
    c.seconds = time.perf_counter() - t0
    c.require(list(table.index) == list(r["rownames"]), f"rows {list(table.index)} vs lme4's {r['rownames']}")
    if c.failures:
        return c
    c.require(
        np.array_equal(np.nan_to_num(table["npar"].to_numpy(float), nan=-1), np.nan_to_num(arr(r["npar"]), nan=-1)),
        f"npar {table['npar'].tolist()} vs {r['npar']}",
    )
    aic = table["AIC"].to_numpy(float) - arr(r["AIC"])
    c.record("AIC - lme4", float(np.max(aic)), TOL["crit_above"])
    c.record("|AIC|", _max(aic), TOL["crit_abs"])
    c.record("LRT", _max(table["LRT"].to_numpy(float) - arr(r["LRT"])), TOL["chisq_abs"])
    c.record("Pr(Chi) (rel)", _p_diff(table["Pr(Chi)"], r["Pr(Chi)"]), TOL["p_rel"])
    return c


def held_zeta(case, d, g, j: int, x: float) -> float:
    """ζ of a fresh glmer fit with fixed effect ``j`` held at ``x``: its column of X in the offset, the other
    columns as covariates, the case's random-effects terms (as run_glmer_inference.R's ``held_zeta``)."""
    import re

    X = g.design.X
    d2 = d.copy()
    cols = []
    for k in range(X.shape[1]):
        if k != j:
            d2[f"heldX{k}"] = X[:, k]
            cols.append(f"heldX{k}")
    d2["heldoff"] = x * X[:, j] + (d[case["offset"]].to_numpy() if case["offset"] else 0.0)
    lhs, rhs = case["formula"].split("~", 1)
    bars = re.findall(r"\([^()]*\|[^()]*\)", rhs)
    formula = f"{lhs.strip()} ~ 0 + {' + '.join(cols + bars)}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h = sparselmm.glmer(
            formula,
            d2,
            family=case["family"],
            link=case["link"],
            nAGQ=case["nAGQ"],
            weights=case["weights"],
            offset="heldoff",
        )
    return float(np.sign(x - g.fixef.iloc[j]) * np.sqrt(max(0.0, h.deviance - g.deviance)))


def compare_profile(case, ref, g, d) -> Check:
    from scipy.stats import norm

    c = Check("profile", case["id"])
    r = ref["profile"]
    c.r_seconds = float(r["seconds"])
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ci = g.confint(method="profile", progress=False)
    c.seconds = time.perf_counter() - t0
    names_r = list(r["rownames"])
    n_var = sum(1 for n in names_r if n.startswith(".sig"))
    c.require(list(ci.index)[:n_var] == names_r[:n_var] and len(ci) == len(names_r), f"rows {list(ci.index)}")
    c.require(list(ci.columns) == list(r["colnames"]), f"columns {list(ci.columns)} vs {r['colnames']}")
    if c.failures:
        return c
    ref_ends = np.column_stack([arr(r["lower"]), arr(r["upper"])])
    ours = ci.to_numpy()
    c.require(np.array_equal(np.isnan(ours), np.isnan(ref_ends)), "NaN ends differ from lme4's NA ends")
    z = float(norm.ppf(0.975))
    lme4_zeta = np.vstack(
        [np.full((n_var, 2), np.nan), np.column_stack([arr(r["zeta_fixed_lower"]), arr(r["zeta_fixed_upper"])])]
    )
    behind = np.abs(np.abs(lme4_zeta) - z) > TOL["profile_lme4_behind"]
    excess = np.abs(ours - ref_ends) - TOL["profile_rel"] * np.abs(ref_ends)
    c.record("ends - lme4 (abs)", _max(np.where(behind, np.nan, ours - ref_ends)), None)
    c.record("ends beyond rel tol", _max(np.where(behind, np.nan, np.maximum(excess, 0))), TOL["profile_abs"])
    c.record("lme4 behind (ends)", float(behind.sum()), None)
    for i, k in zip(*np.nonzero(behind)):
        c.notes.append(
            f"lme4's {names_r[i]} {'lower' if k == 0 else 'upper'} end {ref_ends[i, k]:.6g} has zeta "
            f"{lme4_zeta[i, k]:.4f} in a fresh constrained fit (lme4's profile is behind); sparselmm's "
            f"{ours[i, k]:.6g}"
        )
    zeta = np.array([[held_zeta(case, d, g, j, ours[n_var + j, k]) for k in (0, 1)] for j in range(g.fixef.size)])
    c.record("zeta - z at ends (fresh fits)", _max(np.abs(zeta) - z), TOL["profile_zeta"])
    return c


def compare_boot(case, ref, g) -> Check:
    b = ref["boot"]
    c = Check("boot", f"{case['id']} (nsim={b['nsim']})")
    c.r_seconds = float(b["seconds"])
    names = list(b["names"])[:-1]  # the statistics; the last column is each refit's -2 log L
    t0_py = g.boot_statistics()
    c.require(
        list(t0_py.index)[: sum(n.startswith(".sig") for n in names)] == [n for n in names if n.startswith(".sig")],
        f"statistics {list(t0_py.index)} vs lme4's {names}",
    )
    c.require(len(t0_py) == len(names), f"{len(t0_py)} statistics, lme4 {len(names)}")
    if c.failures:
        return c
    draws_r = np.array([arr(row) for row in b["draws"]])
    stats_r, crit_r = draws_r[:, :-1], draws_r[:, -1]
    responses = np.array([arr(row) for row in b["responses"]])
    sd = np.nanstd(stats_r, axis=0, ddof=1)
    sd = np.where(sd > 0, sd, 1.0)
    stats_py = np.full_like(stats_r, np.nan)
    crit_py = np.full(crit_r.size, np.nan)
    t_start = time.perf_counter()
    failed = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, y in enumerate(responses):
            try:
                r = refit_glmm(g, y, check_conv=False, fresh=False, calc_derivs=False)
            except Exception as err:  # recorded as the bootstrap records a failed replicate
                failed.append(f"{i}: {type(err).__name__}: {err}")
                continue
            stats_py[i] = r.boot_statistics().to_numpy()
            crit_py[i] = r.deviance
    c.seconds = time.perf_counter() - t_start
    c.require(not failed, f"{len(failed)} refits failed: {failed[:2]}")
    c.require(int(b["n_failed"]) == 0, f"{b['n_failed']} of lme4's refits failed")
    dcrit = crit_py - crit_r
    behind = dcrit < -TOL["boot_lme4_behind"]
    c.record("crit - lme4 (max)", float(np.nanmax(dcrit)), TOL["crit_above"])
    c.record("lme4 behind (count)", float(behind.sum()), None)
    if behind.any():
        c.notes.append(
            f"lme4's refit stopped above sparselmm's optimum on {int(behind.sum())} replicate(s), by up to "
            f"{-np.nanmin(dcrit):.3g} in -2 log L"
        )
    same = ~behind & np.isfinite(crit_py)
    c.record("stats (boot SD)", _max((stats_py[same] - stats_r[same]) / sd), TOL["boot_stat_in_sd"])
    c.record("t0 (boot SD)", _max((t0_py.to_numpy() - arr(b["t0"])[:-1]) / sd), TOL["boot_stat_in_sd"])
    boot = BootstrapResult(
        draws=pd.DataFrame(stats_py, columns=list(t0_py.index)),
        t0=t0_py,
        failures=pd.DataFrame(columns=["replicate", "reason"]),
        diagnostics=pd.DataFrame(),
        seed=b["seed"],
        seconds=c.seconds,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # boot's "extreme order statistics used as endpoints" at small nsim
        ci = boot.confint(type="perc").to_numpy()
    ci_r = b["ci_perc"]
    lo, hi = arr(ci_r["lower"])[:-1], arr(ci_r["upper"])[:-1]
    c.record(
        "perc CI ends (boot SD)",
        _max(np.concatenate([(ci[:, 0] - lo) / sd, (ci[:, 1] - hi) / sd])),
        TOL["boot_ci_in_sd"] if not behind.any() else None,
    )
    if behind.any():
        c.notes.append("percentile intervals reported, not checked: lme4's draws include the early stops")
    return c


def _sd_se2(x: np.ndarray) -> float:
    """The squared standard error of the SD of the draws ``x`` (delta method: ``(m₄ − s⁴) / (4 s² n)``)."""
    s2 = float(np.var(x, ddof=1))
    m4 = float(np.mean((x - x.mean()) ** 4))
    return max(m4 - s2**2, 0.0) / (4 * s2 * x.size) if s2 > 0 else 0.0


def _pbkrtest_p(draws: np.ndarray, tobs: float) -> tuple[float, int, int]:
    """pbkrtest 0.5.2's p-value (``.finalizePB``) of ``draws``, with its counts ``#{LRT* > 0}``, ``#{LRT* > LRT}``."""
    pos = draws[draws > 0]
    n_extreme = int(np.sum(pos > tobs))
    return (1 + n_extreme) / (1 + pos.size), pos.size, n_extreme


def compare_pbmodcomp(case, ref, g, d) -> Check:
    r = ref["pbmodcomp"]
    spec = case["pbmodcomp"]
    c = Check("pbmodcomp", f"{case['id']} (nsim={r['nsim']})")
    c.r_seconds = float(r["seconds"])
    g0 = fit(case, d, spec["small"])
    t_start = time.perf_counter()
    nsim_py = int(spec["nsim_sparselmm"]) if PB_NSIM is None else PB_NSIM
    table = g0.bootstrap_lrt(g, nsim=nsim_py, seed=int(spec["seed"]), progress=False)
    c.seconds = time.perf_counter() - t_start
    test_r = r["test"]
    tobs = float(r["tobs"])
    c.record("LRT stat (rel)", abs(table.loc["LRT", "stat"] / tobs - 1), TOL["pb_tobs_rel"])
    c.require(table.loc["LRT", "df"] == test_r["df"][0], f"df {table.loc['LRT', 'df']} vs {test_r['df'][0]}")
    c.record("LRT p (rel)", _p_diff([table.loc["LRT", "p.value"]], [test_r["p.value"][0]]), TOL["p_rel"])
    c.record("-2logL small - lme4", g0.deviance - float(r["minus2loglik_small"]), TOL["crit_above"])
    # deterministic: PBmodcomp's responses refitted by bootstrap_lrt's replicator
    rep = _LRTReplicator(g0, g)
    k = len(r["responses"]) if PB_RESPONSES is None else PB_RESPONSES
    responses = np.array([arr(row) for row in r["responses"][:k]])
    dev_r = np.column_stack([arr(r["dev_small"]), arr(r["dev_large"])])
    tight_extreme = int(np.sum((dev_r[:, 0] - dev_r[:, 1] > 0) & (dev_r[:, 0] - dev_r[:, 1] > tobs)))
    c.require(int(r["tight_n_extreme"]) == tight_extreme, "PBmodcomp(ref = ...)'s count is not the reference's")
    dev_r = dev_r[:k]
    ours = np.full((len(responses), 3), np.nan)
    failed = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, y in enumerate(responses):
            try:
                ours[i] = rep.statistic(y)
            except Exception as err:  # recorded as bootstrap_lrt records a failed replicate
                failed.append(f"{i}: {type(err).__name__}: {err}")
    c.require(not failed, f"{len(failed)} refits failed: {failed[:2]}")
    c.require(np.all(np.isfinite(dev_r)), f"{int(np.sum(~np.isfinite(dev_r)))} of lme4's refits failed")
    dcrit = ours[:, 1:] - dev_r
    behind = np.any(dcrit < -TOL["boot_lme4_behind"], axis=1)
    c.record("refit crit - lme4 (max)", float(np.nanmax(dcrit)), TOL["crit_above"])
    c.record("lme4 behind (count)", float(behind.sum()), None)
    stat_r = dev_r[:, 0] - dev_r[:, 1]
    c.record("LRT* - lme4 (same optima)", _max(np.where(behind, np.nan, ours[:, 0] - stat_r)), TOL["chisq_abs"])
    _, npos_r, next_r = _pbkrtest_p(stat_r[~behind], tobs)
    _, npos_py, next_py = _pbkrtest_p(ours[~behind, 0], tobs)
    c.require(
        (npos_py, next_py) == (npos_r, next_r),
        f"#{{LRT* > 0}}, #{{LRT* > LRT}} {(npos_py, next_py)} vs lme4's {(npos_r, next_r)}",
    )
    # Monte-Carlo: sparselmm's own run against the live PBmodcomp
    draws_py = np.array(table.attrs["draws"], dtype=float)
    draws_py = draws_py[np.isfinite(draws_py)]
    draws_r = arr(r["ref"])
    draws_r = draws_r[np.isfinite(draws_r)]
    n1, n2 = draws_r.size, draws_py.size
    p_r, p_py = float(test_r["p.value"][1]), float(table.loc["PBtest", "p.value"])
    pbar = max((p_r * n1 + p_py * n2) / (n1 + n2), 1.0 / n1)
    se_p = np.sqrt(pbar * (1 - pbar) * (1 / n1 + 1 / n2))
    c.record("PB p-value (MC SE)", abs(p_py - p_r) / se_p, TOL["pb_mc_z"])
    se_mean = np.sqrt(np.var(draws_r, ddof=1) / n1 + np.var(draws_py, ddof=1) / n2)
    c.record("mean LRT* (MC SE)", abs(draws_py.mean() - draws_r.mean()) / se_mean, TOL["pb_mc_z"])
    se_sd = np.sqrt(_sd_se2(draws_r) + _sd_se2(draws_py))
    c.record("SD LRT* (MC SE)", abs(np.std(draws_py, ddof=1) - np.std(draws_r, ddof=1)) / se_sd, TOL["pb_mc_z"])
    c.record("PB p sparselmm", p_py, None)
    c.record("PB p pbkrtest", p_r, None)
    c.require(abs(p_py - _pbkrtest_p(draws_py, tobs)[0]) < 1e-15, "the PB p-value is not pbkrtest's formula")
    c.notes.append(
        f"mean/SD of LRT*: sparselmm {draws_py.mean():.3f}/{np.std(draws_py, ddof=1):.3f} ({n2} draws), "
        f"pbkrtest {draws_r.mean():.3f}/{np.std(draws_r, ddof=1):.3f} ({n1} draws)"
    )
    if behind.any():
        c.notes.append(
            f"lme4's refit stopped above sparselmm's optimum on {int(behind.sum())} response(s), by up to "
            f"{-np.nanmin(dcrit):.3g} in -2 log L"
        )
    return c


def run_case(case, ref) -> list[Check]:
    d = load(case)
    t0 = time.perf_counter()
    g = fit(case, d)
    fit_check = compare_fit(case, ref, g)
    fit_check.seconds = time.perf_counter() - t0
    fit_check.r_seconds = float(ref["fit_seconds"])
    checks = [fit_check, compare_wald(case, ref, g), compare_anova(case, ref, g, d), compare_drop1(case, ref, g)]
    if case.get("boot") and "boot" in ref:
        checks.append(compare_boot(case, ref, g))
    if case.get("pbmodcomp"):
        if "pbmodcomp" in ref:
            checks.append(compare_pbmodcomp(case, ref, g, d))
        else:
            missing = Check("pbmodcomp", case["id"])
            missing.failures.append("the reference has no PBmodcomp section")
            checks.append(missing)
    if case.get("profile"):
        if "profile" in ref:
            checks.append(compare_profile(case, ref, g, d))
        else:
            missing = Check("profile", case["id"])
            missing.failures.append("the reference has no profile intervals")
            checks.append(missing)
    return checks


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference", default=str(ROOT / "validation" / "reference_glmer_inference"))
    ap.add_argument("--report", default=None)
    ap.add_argument("--pb-nsim", type=int, default=None, help="draws of sparselmm's own bootstrap LRT run")
    ap.add_argument("--pb-responses", type=int, default=None, help="lme4's PBmodcomp responses refitted")
    ap.add_argument("cases", nargs="*")
    a = ap.parse_args(argv)
    global PB_NSIM, PB_RESPONSES
    PB_NSIM, PB_RESPONSES = a.pb_nsim, a.pb_responses
    cases = json.loads((ROOT / "validation" / "glmer_inference_cases.json").read_text())
    if a.cases:
        unknown = set(a.cases) - {c["id"] for c in cases}
        if unknown:
            raise SystemExit(f"unknown case(s): {sorted(unknown)}")
        cases = [c for c in cases if c["id"] in a.cases]
    checks: list[Check] = []
    versions = None
    for case in cases:
        path = Path(a.reference) / f"{case['id']}.json"
        if not path.exists():
            missing = Check("reference", case["id"])
            missing.failures.append(f"no reference {path}")
            checks.append(missing)
            continue
        ref = json.loads(path.read_text())
        versions = versions or (ref["lme4_version"], ref["r_version"])
        try:
            checks.extend(run_case(case, ref))
        except Exception as err:  # report and go on
            broken = Check("error", case["id"])
            broken.failures.append(f"{type(err).__name__}: {err}")
            checks.append(broken)
    text = report(checks, versions, len(cases))
    print(text)
    if a.report:
        Path(a.report).write_text(text)
    return 1 if any(c.failures for c in checks) else 0


def report(checks: list[Check], versions, n_cases: int) -> str:
    n_fail = sum(bool(c.failures) for c in checks)
    lme4, r = versions or ("?", "?")
    by_section: dict[str, list[Check]] = {}
    for c in checks:
        by_section.setdefault(c.section, []).append(c)
    counts = ", ".join(
        f"{s} {sum(not c.failures for c in cs)}/{len(cs)}" for s, cs in by_section.items() if s not in ("error",)
    )
    lines = [
        "# glmer inference against lme4 (Wald and profile intervals, anova, drop1, parametric bootstrap, "
        "pbkrtest's PBmodcomp)",
        "",
        f"sparselmm {sparselmm.__version__} vs lme4 {lme4} ({r}), every lme4 fit with "
        "`glmerControl(tolPwrss = 1e-12)`: "
        f"{len(checks) - n_fail}/{len(checks)} checks within tolerance over {n_cases} cases ({counts}).",
        "",
        "Written by `python validation/compare_glmer_inference.py --report validation/REPORT_GLMER_INFERENCE.md` "
        "from the references of `Rscript validation/run_glmer_inference.R` (`nox -s validate` runs both live). "
        "Differences are sparselmm − lme4; the module docstring of `compare_glmer_inference.py` says what each "
        "section compares and `validation/README.md` where each reference number comes from.",
        "",
        f"Tolerances: `{TOL}`",
        "",
    ]
    for section, cs in by_section.items():
        lines += [f"## {section}", ""]
        names: list[str] = []
        for c in cs:
            for k in c.measured:
                if k not in names:
                    names.append(k)
        head = ["case", *names, "seconds", "lme4 seconds", "result"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for c in cs:
            cells = [c.case]
            for k in names:
                v = c.measured.get(k)
                cells.append("" if v is None else f"{v[0]:.3g}")
            cells += [f"{t:.2f}" if np.isfinite(t) else "" for t in (c.seconds, c.r_seconds)]
            result = "ok" if not c.failures else "FAIL: " + "; ".join(c.failures)
            if c.notes:
                result += " (" + "; ".join(c.notes) + ")"
            cells.append(result)
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
