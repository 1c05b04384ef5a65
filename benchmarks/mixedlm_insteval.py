"""InstEval's crossed model through the statsmodels-style API vs ``lmer`` (same process, same machine).

    python benchmarks/mixedlm_insteval.py [--reml] [--repeat N]

``MixedLM.from_formula("y ~ service", groups=<all ones>, re_formula="0", vc_formula={s, d, dept:service})``
is the statsmodels way of writing ``lmer("y ~ 1 + service + (1|s) + (1|d) + (1|dept:service)")``. Prints
both times (best of N, set-up included), their ratio, the time of the facade's Hessian (computed on first
use of ``bse``, not in ``fit``; timed separately), and the estimates side by side.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

import sparselmm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reml", action="store_true", help="REML instead of ML")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    reml = bool(args.reml)
    data = sparselmm.datasets.load("InstEval")
    data = data.assign(one=1)
    vc = {"s": "0 + C(s)", "d": "0 + C(d)", "dept_service": "0 + C(dept):C(service)"}

    def run_lmer():
        return sparselmm.lmer("y ~ 1 + service + (1|s) + (1|d) + (1|dept:service)", data, reml=reml)

    def run_mixedlm():
        model = sparselmm.MixedLM.from_formula("y ~ service", data, groups="one", re_formula="0", vc_formula=vc)
        return model.fit(reml=reml)

    times = {"lmer": [], "MixedLM": [], "Hessian": []}
    fits = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(args.repeat):
            for name, fn in (("lmer", run_lmer), ("MixedLM", run_mixedlm)):
                t0 = time.perf_counter()
                fits[name] = fn()
                times[name].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            fits["MixedLM"].bse  # noqa: B018 - the Hessian, on first use
            times["Hessian"].append(time.perf_counter() - t0)
    m, r = fits["lmer"], fits["MixedLM"]
    t_l, t_m = min(times["lmer"]), min(times["MixedLM"])
    print(f"InstEval ({'REML' if reml else 'ML'}), n = {m.nobs}")
    print(f"lmer     {t_l:8.2f} s  ({m.optinfo.n_evals} deviance evaluations)")
    t_h = min(times["Hessian"])
    print(f"MixedLM  {t_m:8.2f} s  ({r.optinfo.n_evals} evaluations)")
    print(f"Hessian  {t_h:8.2f} s  (standard errors, on first use of bse / summary)")
    print(f"ratio MixedLM / lmer = {t_m / t_l:.2f}; with the Hessian {(t_m + t_h) / t_l:.2f}")
    vcl = m.varcorr.set_index("group")["vcov"]
    print(f"{'':14s}{'lmer':>16s}{'MixedLM':>16s}{'rel. diff':>12s}")
    rows = [(f"beta {n}", m.fixef[n], r.fe_params[n]) for n in m.fixef.index]
    rows += [("var s", vcl["s"], r.vcomp[r.model.vcomp_names.index("s")])]
    rows += [("var d", vcl["d"], r.vcomp[r.model.vcomp_names.index("d")])]
    rows += [("var dept:serv", vcl["dept:service"], r.vcomp[r.model.vcomp_names.index("dept_service")])]
    rows += [("scale", m.sigma**2, r.scale), ("-2 logLik", -2 * m.loglik, -2 * r.llf)]
    rows += [(f"SE {n}", m.bse[n], r.bse_fe[n]) for n in m.fixef.index]
    for name, a, b in rows:
        print(f"{name:14s}{a:16.8g}{b:16.8g}{abs(a - b) / max(abs(a), 1e-300):12.2e}")
    if not reml:
        print(f"published lme4 deviance 237651.78; MixedLM -2 llf = {-2 * r.llf:.2f}")
    print(np.round([t_l, t_m, t_h], 3))


if __name__ == "__main__":
    main()
