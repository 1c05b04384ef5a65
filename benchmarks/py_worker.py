"""Fit one workload with sparselmm, mixedlm or statsmodels in this (fresh) process and write a JSON record.

Run by ``benchmarks/run.py``; usable alone::

    python benchmarks/py_worker.py --program sparselmm --workload insteval_ml --out /tmp/r.json
    python benchmarks/py_worker.py --program mixedlm --workload kb07 --out /tmp/r.json

The data are read and converted, and the fitting library imported, before the clock starts; the timed
region is the ``lmer()`` (or ``MixedLM.fit()``) call only. Peak RSS of the fit is ``VmHWM`` right after
the fit, before the per-evaluation measurement (which the parent also sees as the process's ``ru_maxrss``).
``mixedlm`` is the PyPI package (a Rust-backed lme4 clone), fitted with its defaults.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import workloads  # noqa: E402


def proc_status_mb() -> dict[str, float]:
    """Current and peak resident set size of this process (MB), from /proc/self/status."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, val = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(val.split()[0]) / 1024.0
    except OSError:
        pass
    return out


def time_calls(fun, arg, min_calls: int, min_seconds: float, batch_seconds: float = 0.02,
               max_seconds: float = 60.0) -> dict:
    """Time ``fun(arg)`` in batches of ``b`` calls (each batch ≳ ``batch_seconds``) until at least
    ``min_calls`` calls, 5 batches and ``min_seconds`` in total; the median batch time / ``b`` is robust to
    interference from other processes, the mean is reported too. Same scheme as ``fit_lme4.R``."""
    t = time.perf_counter()
    fun(arg)  # warm, and a first estimate of the cost
    first = time.perf_counter() - t
    b = max(1, int(np.ceil(batch_seconds / max(first, 1e-7))))
    batches = []
    t_all = time.perf_counter()
    while True:
        t = time.perf_counter()
        for _ in range(b):
            fun(arg)
        batches.append(time.perf_counter() - t)
        total = time.perf_counter() - t_all
        if total > max_seconds or (len(batches) * b >= min_calls and len(batches) >= 5 and total >= min_seconds):
            break
    return {"per_eval_seconds": float(np.median(batches)) / b, "per_eval_mean_seconds": float(np.sum(batches))
            / (b * len(batches)), "per_eval_calls": b * len(batches), "per_eval_batch": b}


def fit_sparselmm(w, df, args, rec: dict) -> None:
    import sparselmm

    rec["version"] = sparselmm.__version__
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        res = sparselmm.lmer(w.formula, df, reml=w.reml, ordering=args.ordering, memory_limit=args.memory_limit)
        if profiler is not None:
            profiler.disable()
        rec["fit_seconds"] = time.perf_counter() - t0
    rec["mem_after_fit_mb"] = proc_status_mb()
    info = res.optinfo
    rec.update(
        objective=float(res.objective),
        theta=[float(t) for t in res.theta],
        fixef={str(k): float(v) for k, v in res.fixef.items()},
        n_evals=int(info.n_evals),
        n_evals_total=int(info.n_evals_total),
        setup_seconds=float(info.setup_seconds),
        optimize_seconds=float(info.optimize_seconds),
        optimizer=str(info.optimizer),
        converged=bool(info.converged),
        messages=list(info.messages),
        path=getattr(info, "path", None),  # the linear-algebra path and the cost model's prediction for it
        predicted=getattr(info, "predicted", None),
        approximation=info.details.get("approximation"),
        bse={str(k): float(v) for k, v in res.bse.items()},
    )
    if args.deviance_at:  # this fit's criterion at another fit's θ (the matrix-free path's accuracy)
        other = np.asarray(json.loads(args.deviance_at), dtype=float)
        rec["deviance_at"] = {"theta": other.tolist(), "value": float(res.deviance_function(other))}
    if isinstance(df, str):  # fitted out of core from parquet: rows and levels from the result
        rec.update(n=int(res.nobs), levels={k: int(v) for k, v in res.ngroups.items()})
        rec["scale_info"] = dict(getattr(res, "scale_info", {}))
    if profiler is not None:
        import io
        import pstats

        profiler.dump_stats(args.profile)
        buf = io.StringIO()
        pstats.Stats(profiler, stream=buf).sort_stats("tottime").print_stats(25)
        rec["profile_top"] = buf.getvalue()
    if args.per_eval_calls > 0:
        # the fitted model's own deviance function (its CHOLMOD analysis is already done); fall back to
        # building a new one through the public API
        devfun = getattr(res, "_devfun", None)
        if devfun is None:
            devfun = sparselmm.deviance_function(w.formula, df, reml=w.reml)
        theta = np.asarray(res.theta, dtype=float)
        rec.update(time_calls(devfun, theta, args.per_eval_calls, args.per_eval_seconds))
    try:  # size of Z and of the Cholesky factor (fill-in), best effort through internals
        devfun = res._devfun
        rec["q"] = int(devfun.design.q)
        if rec["q"] <= 200_000:
            rec["L_nnz"] = int(devfun.chol.nnz())
    except Exception:
        pass


def _count_mixedlm_stages(stages: list[dict]):
    """Record each optimiser run inside a mixedlm fit (method, evaluations, seconds).

    mixedlm's ``optimizer="auto"`` runs L-BFGS-B on its exact (Rust) gradient and, when the result is
    near the boundary of a correlated block or not converged, a COBYQA fit from the same start; the
    result reports one method and the summed ``nfev``. Wrapping the module-level ``run_optimizer`` that
    ``estimation.reml`` calls shows which stages ran. Best effort: a no-op if the internals moved."""
    try:
        from mixedlm.estimation import reml
    except ImportError:
        return
    orig = getattr(reml, "run_optimizer", None)
    if orig is None:
        return

    def run_optimizer(fun, x0, method, *a, **k):
        t = time.perf_counter()
        res = orig(fun, x0, method, *a, **k)
        stages.append({"method": str(method), "nfev": int(getattr(res, "nfev", -1)),
                       "seconds": time.perf_counter() - t, "gradient": k.get("jac") is not None})
        return res

    reml.run_optimizer = run_optimizer


def _mixedlm_theta_lme4_order(res, theta: np.ndarray) -> list[float] | None:
    """mixedlm's θ in lme4's order, or None where its layout is not understood.

    mixedlm 1.3.0 lists each k × k block's lower triangle row by row (L11, L21, L22, L31, ...); lme4 (and
    sparselmm) column by column (L11, L21, L31, ..., L22, L32, ...). The two agree for k ≤ 2 only."""
    out, pos = [], 0
    try:
        for rs in res.matrices.random_structures:
            k = int(rs.n_terms)
            if rs.correlated and rs.cov_type == "us":
                rows = [(i, j) for i in range(k) for j in range(i + 1)]
                block = dict(zip(rows, theta[pos:pos + len(rows)], strict=True))
                out += [block[(i, j)] for j in range(k) for i in range(j, k)]
                pos += len(rows)
            elif not rs.correlated:  # (x || g): one scale per column, same order in both
                out += list(theta[pos:pos + k])
                pos += k
            else:
                return None
    except (AttributeError, TypeError, ValueError):
        return None
    return [float(t) for t in out] if pos == theta.size else None


def fit_mixedlm(w, df, args, rec: dict) -> None:
    """``mixedlm.lmer(formula, data, REML=)`` with its defaults; f(θ̂) from its ``mkLmerDevfun``."""
    import gc
    import importlib.metadata as md

    import mixedlm
    from mixedlm import lmer  # mixedlm imports its models lazily: load them before the clock (~0.3 s)

    rec["version"] = md.version("mixedlm")
    stages: list[dict] = []
    _count_mixedlm_stages(stages)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        res = lmer(w.formula, df, REML=w.reml)
        rec["fit_seconds"] = time.perf_counter() - t0
    rec["mem_after_fit_mb"] = proc_status_mb()
    # REMLcrit() is lme4's REML criterion for REML fits; for ML fits mixedlm returns the deviance there too,
    # but ask for the deviance explicitly so the meaning does not depend on that
    objective = res.REMLcrit() if w.reml else res.deviance
    theta = np.asarray(res.theta, dtype=float)
    rec.update(
        objective=float(objective),
        theta=_mixedlm_theta_lme4_order(res, theta),  # comparable with lme4's and sparselmm's
        theta_native=[float(t) for t in theta],
        fixef={str(k): float(v) for k, v in res.fixef().items()},
        n_evals=int(res.function_evals),
        n_iter=int(res.n_iter),
        optimizer=str(res.optimizer),
        optimizer_stages=stages,
        converged=bool(res.converged),
        gradient_norm=None if res.gradient_norm is None else float(res.gradient_norm),
        singular=bool(res.isSingular()),
        messages=[str(res.message)] + sorted({str(c.message) for c in caught}),
    )
    del res
    gc.collect()  # so building a second deviance function below does not raise the peak RSS of the fit
    if args.per_eval_calls > 0:
        # lme4's modular interface: the same (Rust) objective the optimiser calls; like lme4's devFunOnly
        # set-up, timed after the fit
        t0 = time.perf_counter()
        devfun = mixedlm.mkLmerDevfun(mixedlm.lFormula(w.formula, df, REML=w.reml))
        rec["setup_seconds"] = time.perf_counter() - t0
        rec["devfun_at_theta"] = float(devfun(theta))
        rec.update(time_calls(devfun, theta, args.per_eval_calls, args.per_eval_seconds))


def fit_statsmodels(w, df, args, rec: dict) -> None:
    import statsmodels
    import statsmodels.formula.api as smf

    rec["version"] = statsmodels.__version__
    spec = dict(w.statsmodels or {})
    if not spec:
        raise RuntimeError(f"no statsmodels translation for {w.name}")
    if spec.get("groups") == "one":
        df["one"] = 1
    fixed = w.formula.split("(")[0].rstrip(" +")  # the fixed part: random terms come last
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        model = smf.mixedlm(fixed, df, groups=spec["groups"], re_formula=spec.get("re_formula"),
                            vc_formula=spec.get("vc_formula"))
        setup = time.perf_counter() - t0
        calls = {"loglike": 0, "score": 0}
        orig_loglike, orig_score = model.loglike, model.score

        def loglike(*a, **k):
            calls["loglike"] += 1
            return orig_loglike(*a, **k)

        def score(*a, **k):
            calls["score"] += 1
            return orig_score(*a, **k)

        model.loglike, model.score = loglike, score  # count evaluations (instance attributes shadow methods)
        res = model.fit(reml=w.reml)
        rec["fit_seconds"] = time.perf_counter() - t0
    rec["mem_after_fit_mb"] = proc_status_mb()
    rec.update(
        objective=float(-2 * res.llf),
        fixef={str(k): float(v) for k, v in res.fe_params.items()},
        n_evals=calls["loglike"],
        n_gradient_evals=calls["score"],
        setup_seconds=setup,
        converged=bool(getattr(res, "converged", False)),
        optimizer=str(getattr(res, "method", "")),
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--program", choices=("sparselmm", "mixedlm", "statsmodels"), required=True)
    ap.add_argument("--workload", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--per-eval-calls", type=int, default=20, help="min calls of f(θ̂) (0 = skip)")
    ap.add_argument("--per-eval-seconds", type=float, default=0.5, help="min seconds of f(θ̂) calls")
    ap.add_argument("--profile", default=None, help="write cProfile stats of the fit to this path")
    ap.add_argument("--ordering", default="auto", help="sparselmm: lmer(ordering=), e.g. matrix-free")
    ap.add_argument("--memory-limit", default=None, help="sparselmm: lmer(memory_limit=), e.g. 4GB")
    ap.add_argument("--deviance-at", default=None, help="sparselmm: JSON θ at which to evaluate the fit's criterion")
    args = ap.parse_args(argv)

    w = workloads.get(args.workload)
    rec: dict = {"program": args.program, "workload": w.name, "ok": False}
    try:
        t0 = time.perf_counter()
        df = workloads.fit_data(w) if args.program == "sparselmm" else workloads.read_frame(w)
        rec["load_seconds"] = time.perf_counter() - t0
        if not isinstance(df, str):  # a parquet path (out of core): n and levels come from the fit
            rec["n"] = int(len(df))
            rec["levels"] = {c: int(df[c].nunique()) for c in w.factors}
        # import the fitting library before the RSS baseline so ΔRSS is the fit's own footprint
        if args.program == "sparselmm":
            import sparselmm  # noqa: F401
        elif args.program == "mixedlm":
            from mixedlm import lmer  # noqa: F401  (triggers its lazy imports)
        else:
            import statsmodels.formula.api  # noqa: F401
        rec["mem_before_fit_mb"] = proc_status_mb()
        fit = {"sparselmm": fit_sparselmm, "mixedlm": fit_mixedlm, "statsmodels": fit_statsmodels}[args.program]
        fit(w, df, args, rec)
        rec["ok"] = True
    except Exception as exc:  # reported, not raised: the parent records the failure
        rec["error"] = f"{type(exc).__name__}: {exc}"
        rec["traceback"] = traceback.format_exc()
    Path(args.out).write_text(json.dumps(rec, indent=1))
    return 0 if rec["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
