"""The cost model's predictions against measurements, workload by workload.

For each workload, in a fresh process: build the design and cross-products, note the resident memory,
analyse the factor the fit would take (:func:`sparselmm.deviance.profiled_deviance`, path chosen by
:mod:`sparselmm.linalg.cost`), then evaluate the criterion (with its gradient where the path has one) a few
times around the start. Recorded: the path, the predicted and measured seconds per evaluation (median), the
predicted bytes and the measured growth of the peak resident memory over the design's.

    python benchmarks/cost_model_bench.py --only crossed_1e5 levels_4e4 --out cost.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def _rss_bytes() -> float:
    with open("/proc/self/statm") as f:
        return float(f.read().split()[1]) * resource.getpagesize()


def measure(name: str, n_evals: int = 3, memory_limit=None, ordering: str = "auto") -> dict:
    """Predicted and measured cost of one workload's factor (run in a fresh process: peak memory)."""
    import numpy as np
    from workloads import ensure_data, get, read_frame

    from sparselmm.crossprod import cross_products
    from sparselmm.data import as_dataframe
    from sparselmm.design import build_design
    from sparselmm.deviance import profiled_deviance
    from sparselmm.formula import parse_formula
    from sparselmm.start import moment_start

    w = get(name)
    ensure_data(w.data, verbose=False)
    design = build_design(parse_formula(w.formula), as_dataframe(read_frame(w)))
    cross = cross_products(design)
    base = _rss_bytes()
    t0 = time.perf_counter()
    dev = profiled_deviance(design, cross, reml=w.reml, ordering=ordering, memory_limit=memory_limit)
    analyse = time.perf_counter() - t0
    theta0 = moment_start(design)
    times = []
    for k in range(n_evals):
        theta = theta0 * (1.0 + 0.1 * k)
        t = time.perf_counter()
        if dev.has_gradient:
            dev.value_and_gradient(theta)
        else:
            dev(theta)
        times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0
    c = dev.predicted
    return {
        "workload": name,
        "path": dev.path,
        "q": int(design.q),
        "levels": [int(t.n_levels) for t in design.terms],
        "analyse_seconds": analyse,
        "predicted_seconds": c.seconds,
        "measured_seconds": float(np.median(times)),
        "predicted_bytes": c.bytes,
        "measured_bytes": max(peak - base, 0.0),
        "others": [x.describe() for x in dev.costs],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", required=True, help="workload names (benchmarks/workloads.py)")
    ap.add_argument("--evals", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="JSON file to write the records to")
    ap.add_argument("--ordering", default="auto", help="the path: lmer's ordering= (e.g. matrix-free)")
    ap.add_argument("--memory-limit", default=None, help="lmer's memory_limit= (e.g. 4GB)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.only[0], args.evals, args.memory_limit, args.ordering)))
        return 0
    records = []
    for name in args.only:
        cmd = [sys.executable, __file__, "--child", "--evals", str(args.evals), "--only", name]
        cmd += ["--ordering", args.ordering] + (["--memory-limit", args.memory_limit] if args.memory_limit else [])
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{name}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        records.append(r)
        print(
            f"{name:16s} {r['path']:34s} s/eval predicted {r['predicted_seconds']:8.3f} measured "
            f"{r['measured_seconds']:8.3f} ({r['measured_seconds'] / r['predicted_seconds']:5.2f}x)  "
            f"MB predicted {r['predicted_bytes'] / 2**20:8.1f} measured {r['measured_bytes'] / 2**20:8.1f}",
            flush=True,
        )
    if args.out:
        args.out.write_text(json.dumps(records, indent=1))
    print(markdown(records))
    return 0


def markdown(records: list[dict]) -> str:
    """The records as BENCHMARKS.md's table (measured over predicted: within 2x is the target)."""
    lines = [
        "| workload | levels | path | s/eval predicted | measured | ratio | memory predicted | measured | ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in records:
        levels = " × ".join(f"{x:,}" for x in r["levels"])
        ts, tm = r["predicted_seconds"], r["measured_seconds"]
        bs, bm = r["predicted_bytes"] / 2**20, r["measured_bytes"] / 2**20
        lines.append(
            f"| {r['workload']} | {levels} | {r['path']} | {ts:.3g} | {tm:.3g} | {tm / ts:.2f} | "
            f"{bs:,.0f} MB | {bm:,.0f} MB | {bm / max(bs, 1e-9):.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
