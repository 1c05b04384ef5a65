"""Fitting from disk (issue 13): a crossed users × items workload written as parquet, fitted by
``sparselmm.lmer(formula, "dir/*.parquet")`` and through a Dask ``LocalCluster`` of 2 workers.

Rows are drawn from ``cells`` distinct (user, item) cells, ``rows / cells`` rows per cell (repeated
sessions), so the same cells can be read as 1e7 or 1e8 rows: memory should follow the cells (the
cross-products hold one entry per distinct cell), not the rows. Each fit runs in a fresh subprocess,
whose own peak RSS is read from ``os.wait4``. Reported beside it: the rows per second of
the cross-product pass, the fit time, and an estimate of what the in-memory pandas path would need for
the same rows: a lower bound from the arrays it holds (:func:`in_memory_estimate`) and, with
``--calibrate``, the in-memory fit's peak RSS measured at 1e5 and 1e6 rows and extrapolated linearly.

    python benchmarks/scale_bench.py --rows 1e6 --cells 1e6 --users 1e5 --items 1e3 --dask   # smoke test
    python benchmarks/scale_bench.py --rows 1e8 --cells 1e7 --users 1e6 --items 5e3 --dask --calibrate  # issue's

Writes a JSON line per run to stdout (and ``--out``). Do not run the 1e8 size on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

FORMULA = "y ~ x + (1 | user) + (1 | item)"


def cell_user_item(cell: np.ndarray, users: int, items: int) -> tuple[np.ndarray, np.ndarray]:
    """Pseudo-random, (nearly) injective map from cell number to (user, item): two multiplicative hashes."""
    c = cell.astype(np.uint64)
    u = (c * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(20)
    i = (c * np.uint64(0xC2B2AE3D27D4EB4F) + np.uint64(12345)) >> np.uint64(20)
    return (u % np.uint64(users)).astype(np.int64), (i % np.uint64(items)).astype(np.int64)


def generate(path: str, rows: int, cells: int, users: int, items: int, file_rows: int = 5_000_000, seed: int = 1):
    """Write ``rows`` rows in files of ``file_rows`` (row groups of 1e6): row r belongs to cell r mod cells."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(path, exist_ok=True)
    rng = np.random.default_rng(seed)
    a_u = rng.normal(size=users)
    b_i = rng.normal(scale=0.5, size=items)
    for k, start in enumerate(range(0, rows, file_rows)):
        r = np.arange(start, min(rows, start + file_rows), dtype=np.int64)
        u, i = cell_user_item(r % cells, users, items)
        x = rng.normal(size=r.size)
        y = 3.0 + 0.5 * x + a_u[u] + b_i[i] + rng.normal(size=r.size)
        table = pa.table({"user": u, "item": i, "x": x, "y": y})
        pq.write_table(table, os.path.join(path, f"part{k:04d}.parquet"), row_group_size=1_000_000)


def in_memory_estimate(path: str, rows: int) -> dict:
    """Bytes the in-memory path would hold for ``rows`` rows, scaled from a 1e5-row sample.

    pandas frame (as read) + the cleaned copy + ``y``, ``X`` (n × 2), the weights-free ``Zt`` (2 nonzeros
    per row: 12 bytes each, CSR and CSC copies) and the terms' ``refs``/``z`` (16 bytes per row per term).
    A lower bound: formulaic's intermediates come on top.
    """
    import glob

    import pandas as pd

    first = sorted(glob.glob(os.path.join(path, "*.parquet")))[0]
    sample = pd.read_parquet(first).iloc[:100_000]
    frame = sample.memory_usage(deep=True).sum() / len(sample)
    per_row = 2 * frame + 8 + 2 * 8 + 2 * 2 * 12 + 2 * 16
    return {"in_memory_bytes_per_row": per_row, "in_memory_estimate_gb": per_row * rows / 2**30}


def _child(args) -> None:
    """One fit in this (fresh) process; prints its JSON line."""
    import warnings

    import sparselmm

    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    if args.child == "dask":
        import dask.dataframe as dd
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cl:
            with Client(cl):
                m = sparselmm.lmer(FORMULA, dd.read_parquet(args.data), reml=False)
    elif args.child == "memory":
        import glob

        import pandas as pd

        df = pd.concat([pd.read_parquet(f) for f in sorted(glob.glob(os.path.join(args.data, "*.parquet")))])
        m = sparselmm.lmer(FORMULA, df, reml=False)
    else:
        from sparselmm.scale import ParquetSource

        m = sparselmm.lmer(FORMULA, ParquetSource(args.data, progress=False), reml=False)
    seconds = time.perf_counter() - t0
    info = getattr(m, "scale_info", {})
    print(
        json.dumps(
            {
                "mode": args.child,
                "fit_seconds": seconds,
                "objective": m.objective,
                "fixef": m.fixef.tolist(),
                "theta": m.theta.tolist(),
                "nobs": m.nobs,
                "q": m.design.q,
                **{k: info[k] for k in ("rows_per_second", "level_pass_seconds", "cross_pass_seconds") if k in info},
            }
        )
    )


def _run_child(mode: str, data: str) -> dict:
    """Run one fit in a fresh process; its own peak RSS comes from ``os.wait4``."""
    with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe:
        proc = subprocess.Popen([sys.executable, __file__, "--child", mode, "--data", data], stdout=fo, stderr=fe)
        _, status, usage = os.wait4(proc.pid, 0)  # the child's own rusage (Popen.wait would reap it)
        proc.returncode = os.waitstatus_to_exitcode(status)
        fo.seek(0)
        fe.seek(0)
        out, err = fo.read(), fe.read()
    if proc.returncode != 0:
        return {"mode": mode, "error": err.strip().splitlines()[-1:]}
    res = json.loads(out.strip().splitlines()[-1])
    res["peak_rss_gb"] = usage.ru_maxrss / 2**20
    return res


def calibrate_in_memory(rows: int, cells: int, users: int, items: int) -> dict:
    """Measured in-memory peak RSS at 1e5 and 1e6 rows (same rows per cell); bytes per row from the slope."""
    small, large = 100_000, 1_000_000
    peaks = {}
    for n in (small, large):
        with tempfile.TemporaryDirectory(prefix="scale_cal_") as d:
            generate(d, n, max(1, int(n * cells / rows)), users, items)
            peaks[n] = _run_child("memory", d).get("peak_rss_gb", float("nan"))
    per_row = (peaks[large] - peaks[small]) * 2**30 / (large - small)
    return {
        "in_memory_measured_peak_gb": peaks,
        "in_memory_measured_bytes_per_row": per_row,
        "in_memory_extrapolated_gb": peaks[small] + per_row * (rows - small) / 2**30,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=float, default=1e6)
    ap.add_argument("--cells", type=float, default=1e6)
    ap.add_argument("--users", type=float, default=1e5)
    ap.add_argument("--items", type=float, default=1e3)
    ap.add_argument("--dir", help="parquet directory (default: a temporary one, removed afterwards)")
    ap.add_argument("--dask", action="store_true", help="also fit through a 2-worker LocalCluster")
    ap.add_argument("--memory", action="store_true", help="also fit in memory (pandas) for comparison")
    ap.add_argument(
        "--calibrate", action="store_true", help="measure the in-memory path at 1e5 and 1e6 rows and extrapolate"
    )
    ap.add_argument("--out", help="append the JSON lines to this file")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args)
        return
    rows, cells, users, items = int(args.rows), int(args.cells), int(args.users), int(args.items)
    tmp = None if args.dir else tempfile.TemporaryDirectory(prefix="scale_bench_")
    path = args.dir or tmp.name
    t0 = time.perf_counter()
    generate(path, rows, cells, users, items)
    common = {"rows": rows, "cells": cells, "users": users, "items": items}
    common["generate_seconds"] = time.perf_counter() - t0
    common.update(in_memory_estimate(path, rows))
    if args.calibrate:
        common.update(calibrate_in_memory(rows, cells, users, items))
    modes = ["disk"] + (["dask"] if args.dask else []) + (["memory"] if args.memory else [])
    lines = []
    for mode in modes:
        res = {**common, **_run_child(mode, path)}
        if mode == "dask" and "fit_seconds" in res:
            res["note"] = "peak RSS of the client process only (workers are separate processes)"
        lines.append(res)
        print(json.dumps(res), flush=True)
    if args.out:
        with open(args.out, "a") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in lines)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
