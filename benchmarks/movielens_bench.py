"""Fit one MovieLens- or ELP-shaped workload (issue 19) with sparselmm in a fresh process and record it.

    python benchmarks/movielens_bench.py --workload ml1m --out benchmarks/.cache/movielens.jsonl
    python benchmarks/movielens_bench.py --workload ml32m --repeat 2 --out ml.jsonl   # parquet, out of core

Workloads (``benchmarks/workloads.py``, tag ``movielens``): ``ml1m``, ``elp``, ``ml10m`` (CSV, in memory) and
``ml32m`` (one parquet file, fitted through ``sparselmm.lmer(formula, "file.parquet")``), all
``y ~ 1 + (1 | u) + (1 | i)`` by ML (ELP: ``(1 | item) + (1 | subj)``). The data are generated into the cache
on first use; the generation's seconds are recorded then. Each fit is ``py_worker.py --program sparselmm``
in a new process (run by ``run.py``'s child runner): the worker's record (fit, set-up and optimisation
seconds, evaluations, objective, θ, β, ``optinfo.path`` and ``optinfo.predicted``) plus the process's peak
RSS (``ru_maxrss`` from ``os.wait4``, interpreter and data included) and wall time. One JSON line per fit
is appended to ``--out``, and a one-line summary printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402  (the child runner: wait4 peak RSS, cap, log)
import workloads as wl  # noqa: E402

NAMES = [w.name for w in wl.WORKLOADS if "movielens" in w.tags]


def _summary(rec: dict) -> str:
    head = f"{rec['workload']} #{rec['repeat'] + 1}:"
    if not rec.get("ok"):
        return f"{head} FAILED ({rec.get('error')}), peak RSS {rec['peak_rss_mb'] / 1024:.2f} GB"
    pred = rec.get("predicted") or {}
    p = ""
    if pred:
        p = f", predicted {pred['seconds_per_evaluation']:.3g} s/eval and {pred['bytes'] / 2**20:.0f} MB"
    return (
        f"{head} fit {rec['fit_seconds']:.1f} s (set-up {rec['setup_seconds']:.1f} s), {rec['n_evals']} evals, "
        f"objective {rec['objective']:.10g}, peak RSS {rec['peak_rss_mb'] / 1024:.2f} GB, "
        f"path {rec.get('path')}{p}"
    )


def bench(
    name: str, repeat: int, out: Path, cap: float, per_eval_calls: int, extra: list[str] | None = None
) -> list[dict]:
    w = wl.get(name)
    t0 = time.perf_counter()
    generated = not wl.data_path(w.data).exists()
    path = wl.ensure_data(w.data)
    base = {
        "workload": name,
        "formula": w.formula,
        "reml": w.reml,
        "data_file": path.name,
        "data_mb": path.stat().st_size / 1e6,
        "generate_seconds": time.perf_counter() - t0 if generated else None,
        "out_of_core": wl.out_of_core(w),
        "host": platform.node(),
        "nproc": os.cpu_count(),
        "sparselmm_source": run._source_state(),
    }
    tmp = wl.CACHE / "tmp" / f"{name}.movielens.json"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    records = []
    for k in range(repeat):
        tmp.unlink(missing_ok=True)
        cmd = [
            sys.executable,
            str(HERE / "py_worker.py"),
            "--program",
            "sparselmm",
            "--workload",
            name,
            "--out",
            str(tmp),
            "--per-eval-calls",
            str(per_eval_calls),
            *(extra or []),
        ]
        rec = {**base, "repeat": k, "date": dt.datetime.now().isoformat(timespec="seconds")}
        rec["loadavg_before"] = os.getloadavg()
        child = run._run_child(cmd, cap, wl.CACHE / "logs" / f"{name}.movielens.log")
        rec.update(json.loads(tmp.read_text()) if tmp.exists() else {"ok": False})
        rec.update(child)
        if child["timed_out"]:
            rec.update(ok=False, error=f"> cap ({cap:.0f} s)")
        elif not rec.get("ok"):
            rec.setdefault("error", f"exit status {child['returncode']}")
        with open(out, "a") as fh:
            fh.write(json.dumps(rec, default=str) + "\n")
        print(_summary(rec), flush=True)
        records.append(rec)
    return records


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", required=True, choices=NAMES)
    ap.add_argument("--repeat", type=int, default=1, help="fits, each in a new process")
    ap.add_argument("--out", type=Path, required=True, help="JSON lines file to append the records to")
    ap.add_argument("--cap", type=float, default=float("inf"), help="seconds before a fit is killed (default none)")
    ap.add_argument("--per-eval-calls", type=int, default=0, help="also time f(θ̂) this many times (default 0)")
    ap.add_argument("--ordering", default="auto", help="lmer(ordering=), e.g. matrix-free")
    ap.add_argument("--memory-limit", default=None, help="lmer(memory_limit=), e.g. 4GB")
    ap.add_argument("--deviance-at", default=None, help="JSON θ at which to evaluate the fit's criterion too")
    args = ap.parse_args(argv)
    extra = ["--ordering", args.ordering]
    if args.memory_limit:
        extra += ["--memory-limit", args.memory_limit]
    if args.deviance_at:
        extra += ["--deviance-at", args.deviance_at]
    records = bench(args.workload, max(1, args.repeat), args.out, args.cap, args.per_eval_calls, extra)
    return 0 if all(r.get("ok") for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
