"""Benchmark sparselmm against lme4 and mixedlm (and statsmodels) in one run on the same data.

Usage (from the repository root)::

    python benchmarks/run.py                      # default set, writes BENCHMARKS.md + results
    python benchmarks/run.py --quick              # ~3 min subset, writes benchmarks/.cache/last_run.*
    python benchmarks/run.py --only insteval_ml --skip-statsmodels
    python benchmarks/run.py --tag maximal        # the issue-12 maximal designs (or --only 'maximal*' kb07)
    python benchmarks/run.py --only ml1m elp      # MovieLens / ELP shapes (--tag movielens adds ml10m, ml32m)
    python benchmarks/run.py --only maximal_60x40 kb07 --skip-mixedlm
    python benchmarks/run.py --only 'crossed_*' --reuse-r     # reuse cached lme4 records
    python benchmarks/run.py --only insteval_ml --skip-r --profile   # cProfile the sparselmm fit
    python benchmarks/run.py --list

Programs: sparselmm, lme4 (``Rscript``), mixedlm (the PyPI package, a Rust-backed lme4 clone) and
statsmodels ``MixedLM`` (only where the workload has a translation). Every (workload, program) pair runs in a
fresh subprocess (``py_worker.py`` or ``fit_lme4.R``) so the
peak RSS (``ru_maxrss`` from ``os.wait4``) belongs to that one fit; a fit that exceeds its cap is killed
and reported as ``> cap``. The fit time is measured inside the child around the fit call only (data
already loaded). BENCHMARKS.md, ``benchmarks/results.json`` and ``benchmarks/bench_scaling.png`` are
written by a full run (or whenever ``--out`` is given); quick and ``--only`` runs write to
``benchmarks/.cache/last_run.{md,json,png}`` instead so the committed report is not overwritten.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fnmatch
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import workloads as wl  # noqa: E402

PROGRAMS = ("sparselmm", "lme4", "mixedlm", "statsmodels")


# --------------------------------------------------------------------------------------------------
# environment
# --------------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return None


_PY_ENV_SNIPPET = r"""
import json, platform
import numpy, scipy, pandas
import sparselmm
import sksparse.cholmod as chm
info = {"python": platform.python_version(), "numpy": numpy.__version__, "scipy": scipy.__version__,
        "pandas": pandas.__version__, "sparselmm": sparselmm.__version__, "cholmod_module": chm.__file__}
try:
    import importlib.metadata as md
    info["scikit-sparse"] = md.version("scikit-sparse")
    info["nlopt"] = md.version("nlopt")
    info["formulaic"] = md.version("formulaic")
except Exception:
    pass
try:
    import statsmodels
    info["statsmodels"] = statsmodels.__version__
except Exception:
    info["statsmodels"] = None
try:
    import importlib.metadata as md
    info["mixedlm"] = md.version("mixedlm")
except Exception:
    info["mixedlm"] = None
try:
    from threadpoolctl import threadpool_info
    info["threadpools"] = [{k: d.get(k) for k in ("internal_api", "filepath", "version", "num_threads",
                                                   "threading_layer", "architecture")}
                           for d in threadpool_info()]
except Exception as exc:
    info["threadpools"] = f"threadpoolctl unavailable ({exc})"
print(json.dumps(info))
"""

_R_ENV_SNIPPET = r"""
suppressMessages(library(lme4))
cat(jsonlite::toJSON(list(
  r = R.version.string, lme4 = as.character(packageVersion("lme4")),
  Matrix = as.character(packageVersion("Matrix")),
  blas = unname(extSoftVersion()["BLAS"]), lapack = La_library(),
  data_table = requireNamespace("data.table", quietly = TRUE)), auto_unbox = TRUE))
"""


def _cholmod_blas(module_path: str) -> str | None:
    """Which BLAS the CHOLMOD behind scikit-sparse resolves to (via ldd), best effort."""
    ldd = shutil.which("ldd")
    if not ldd or not module_path:
        return None
    try:
        out = subprocess.run([ldd, module_path], capture_output=True, text=True, timeout=20).stdout
        libchol = next((ln.split("=>")[1].split()[0] for ln in out.splitlines() if "libcholmod" in ln), None)
        if not libchol:
            return None
        out2 = subprocess.run([ldd, libchol], capture_output=True, text=True, timeout=20).stdout
        blas = [ln.split("=>")[1].split()[0] for ln in out2.splitlines() if "blas" in ln and "=>" in ln]
        return f"{os.path.realpath(libchol)} -> " + ", ".join(os.path.realpath(b) for b in blas)
    except Exception:
        return None


def _source_state() -> str | None:
    """Git commit of the working tree and whether sparselmm/ has uncommitted changes (it is installed editable,
    so the code measured is whatever is on disk when the run starts)."""
    git = shutil.which("git")
    if not git:
        return None
    try:
        head = subprocess.run([git, "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=20).stdout.strip()
        dirty = subprocess.run([git, "status", "--porcelain", "--", "sparselmm"], cwd=ROOT, capture_output=True,
                               text=True, timeout=20).stdout.strip()
        return f"commit {head}{' + uncommitted changes in sparselmm/' if dirty else ''}" if head else None
    except Exception:
        return None


def environment(skip_r: bool) -> dict:
    env: dict = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": _cpu_model(),
        "nproc": os.cpu_count(),
        "mem_gib": _mem_total_gib(),
        "os": platform.platform(),
        "loadavg_start": os.getloadavg(),
        "sparselmm_source": _source_state(),
    }
    try:
        out = subprocess.run([sys.executable, "-c", _PY_ENV_SNIPPET], capture_output=True, text=True, timeout=120)
        env["python"] = json.loads(out.stdout.strip().splitlines()[-1])
        env["cholmod_blas"] = _cholmod_blas(env["python"].get("cholmod_module", ""))
    except Exception as exc:
        env["python"] = {"error": str(exc)}
    if not skip_r and shutil.which("Rscript"):
        try:
            out = subprocess.run(["Rscript", "-e", _R_ENV_SNIPPET], capture_output=True, text=True, timeout=120)
            env["r"] = json.loads(out.stdout.strip().splitlines()[-1])
        except Exception as exc:
            env["r"] = {"error": str(exc)}
    return env


# --------------------------------------------------------------------------------------------------
# running one fit in a subprocess
# --------------------------------------------------------------------------------------------------


def _cpu_busy_seconds() -> float | None:
    """System-wide non-idle CPU seconds since boot (all cores), from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None


def _run_child(cmd: list[str], cap: float, log_path: Path, env: dict | None = None) -> dict:
    """Run ``cmd`` in its own session; kill it after ``cap`` seconds. Returns wall, rc, peak RSS."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    busy0 = _cpu_busy_seconds()
    with open(log_path, "w") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
                                env=env)
        timed_out = False
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - t0 > cap:
                timed_out = True
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # the child's own process group (we started it)
                except ProcessLookupError:
                    pass
                pid, status, ru = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        wall = time.perf_counter() - t0
    busy1 = _cpu_busy_seconds()
    child_cpu = ru.ru_utime + ru.ru_stime
    # CPU used by everything else on the machine while the child ran, in cores (0 = the machine was ours)
    other = None if busy0 is None or busy1 is None else max(0.0, (busy1 - busy0 - child_cpu) / wall)
    proc.returncode = os.waitstatus_to_exitcode(status)  # already reaped; keep Popen consistent
    return {
        "process_wall_seconds": wall,
        "returncode": proc.returncode,
        "timed_out": timed_out,
        "peak_rss_mb": ru.ru_maxrss / 1024.0,  # KiB on Linux
        "child_cpu_seconds": child_cpu,
        "other_cpu_cores": other,
    }


def run_fit(w: wl.Workload, program: str, cap: float, args) -> dict:
    tmp = wl.CACHE / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    out = tmp / f"{w.name}.{program}.json"
    out.unlink(missing_ok=True)
    if program == "lme4":
        cmd = ["Rscript", str(HERE / "fit_lme4.R"), str(wl.data_path(w.data)), w.formula,
               "TRUE" if w.reml else "FALSE", ",".join(w.factors), str(out),
               str(args.per_eval_calls), str(args.per_eval_seconds)]
    else:
        per_eval = args.per_eval_calls if program in ("sparselmm", "mixedlm") else 0
        cmd = [sys.executable, str(HERE / "py_worker.py"), "--program", program, "--workload", w.name,
               "--out", str(out), "--per-eval-calls", str(per_eval),
               "--per-eval-seconds", str(args.per_eval_seconds)]
        if program == "sparselmm" and args.profile:
            prof = wl.CACHE / "profiles" / f"{w.name}.prof"
            prof.parent.mkdir(parents=True, exist_ok=True)
            cmd += ["--profile", str(prof)]
    load_before = os.getloadavg()[0]
    child_env = None
    if args.blas_threads:
        child_env = dict(os.environ)
        # RAYON: mixedlm's Rust code (faer) runs on a rayon pool
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
            child_env[var] = str(args.blas_threads)
    child = _run_child(cmd, cap, wl.CACHE / "logs" / f"{w.name}.{program}.log", child_env)
    rec: dict = {"program": program, "workload": w.name, "ok": False}
    if out.exists():
        try:
            rec.update(json.loads(out.read_text()))
        except json.JSONDecodeError as exc:
            rec["error"] = f"unreadable worker output: {exc}"
    rec.update(child)
    rec["cap_seconds"] = cap
    rec["loadavg_before"] = load_before
    if child["timed_out"]:
        rec["ok"] = False
        rec["error"] = f"> cap ({cap:.0f} s)"
    elif not rec.get("ok") and "error" not in rec:
        rec["error"] = f"exit status {child['returncode']} (see {wl.CACHE.name}/logs/{w.name}.{program}.log)"
    return rec


def _lme4_cache_path(w: wl.Workload) -> Path:
    return wl.CACHE / "lme4" / f"{w.name}.{wl.data_path(w.data).stem}.json"


# --------------------------------------------------------------------------------------------------
# selection, main loop
# --------------------------------------------------------------------------------------------------


def select(args) -> list[wl.Workload]:
    """Workloads named by ``--only`` (names or globs) and/or carrying a ``--tag``; else the default set."""
    if args.only or args.tag:
        pats, tags = args.only or [], set(args.tag or [])
        unknown = [p for p in pats if not any(fnmatch.fnmatch(w.name, p) for w in wl.WORKLOADS)]
        unknown += [f"tag {t}" for t in tags if not any(t in w.tags for w in wl.WORKLOADS)]
        if unknown:
            raise SystemExit(f"unknown workload(s) {unknown}; see --list")
        return [w for w in wl.WORKLOADS
                if any(fnmatch.fnmatch(w.name, p) for p in pats) or tags.intersection(w.tags)]
    tag = "quick" if args.quick else "default"
    # --large adds the 1e7-row crossed workload; the large MovieLens shapes only when named (--only / --tag)
    return [w for w in wl.WORKLOADS
            if tag in w.tags or (args.large and "large" in w.tags and "movielens" not in w.tags)]


def _fmt_s(x) -> str:
    return "—" if x is None else f"{x:.3g}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="sparselmm vs lme4 and mixedlm (vs statsmodels) benchmarks")
    ap.add_argument("--quick", action="store_true", help="InstEval ML, sleepstudy, smallest crossed, 1x/10x pair")
    ap.add_argument("--large", action="store_true", help="also the 1e7-row crossed workload")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="workload names or globs (see --list)")
    ap.add_argument("--tag", nargs="+", metavar="TAG",
                    help="workloads with any of these tags, e.g. maximal (added to --only's)")
    ap.add_argument("--skip-r", action="store_true", help="do not run lme4")
    ap.add_argument("--reuse-r", action="store_true",
                    help="reuse cached lme4 records from an earlier run where present (not same-run!)")
    ap.add_argument("--skip-statsmodels", action="store_true")
    ap.add_argument("--skip-sparselmm", action="store_true")
    ap.add_argument("--skip-mixedlm", action="store_true", help="do not run the PyPI mixedlm package")
    ap.add_argument("--cap", type=float, default=None,
                    help="seconds per sparselmm / lme4 / mixedlm fit (default 600; sparselmm and lme4: the "
                         "workload's own cap where it has one, 3600 for the MovieLens shapes)")
    ap.add_argument("--sm-cap", type=float, default=None,
                    help="seconds per statsmodels fit (default 120; 30 with --quick)")
    ap.add_argument("--repeat", type=int, default=1, help="fits per (workload, program); the fastest is kept")
    ap.add_argument("--per-eval-calls", type=int, default=20, help="min calls of f(θ̂) for the per-eval time")
    ap.add_argument("--per-eval-seconds", type=float, default=0.5, help="min total seconds of those calls")
    ap.add_argument("--blas-threads", type=int, default=None,
                    help="set OPENBLAS/OMP/MKL/RAYON_NUM_THREADS in every child (default: the libraries' own)")
    ap.add_argument("--profile", action="store_true",
                    help="cProfile each sparselmm fit (adds overhead; top functions printed)")
    ap.add_argument("--out", default=None,
                    help="report path (default: BENCHMARKS.md for a full run, benchmarks/.cache/last_run.md "
                         "for --quick / --only)")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--list", action="store_true", help="list workloads and exit")
    args = ap.parse_args(argv)

    if args.list:
        for w in wl.WORKLOADS:
            print(f"{w.name:15s} {','.join(w.tags):32s} {w.formula}\n{'':15s} {w.description}")
        return 0

    chosen = select(args)
    sm_cap = args.sm_cap if args.sm_cap is not None else (30.0 if args.quick else 120.0)
    partial = bool(args.quick or args.only or args.tag)
    if args.out:
        out_md = Path(args.out).resolve()
        out_dir = HERE if out_md.parent == ROOT else out_md.parent
        stem = "results" if out_dir == HERE else out_md.stem
    elif partial:
        out_md, out_dir, stem = wl.CACHE / "last_run.md", wl.CACHE, "last_run"
    else:
        out_md, out_dir, stem = ROOT / "BENCHMARKS.md", HERE, "results"
    out_json = out_dir / f"{stem}.json"
    out_png = out_dir / ("bench_scaling.png" if stem == "results" else f"{stem}.png")

    have_r = shutil.which("Rscript") is not None
    skip_r = args.skip_r or not have_r
    programs = [p for p in PROGRAMS if not (
        (p == "sparselmm" and args.skip_sparselmm) or (p == "lme4" and args.skip_r) or
        (p == "mixedlm" and args.skip_mixedlm) or (p == "statsmodels" and args.skip_statsmodels))]
    if "lme4" in programs and not have_r:
        print("Rscript not found: lme4 skipped", flush=True)
        programs.remove("lme4")
    if "mixedlm" in programs and importlib.util.find_spec("mixedlm") is None:
        # the workers run under this interpreter, so this is the environment they would import from
        print("mixedlm not installed (pip install mixedlm): skipped", flush=True)
        programs.remove("mixedlm")

    print(f"workloads: {', '.join(w.name for w in chosen)}\nprograms: {', '.join(programs)}", flush=True)
    env = environment(skip_r)
    env["blas_threads"] = args.blas_threads
    t_start = time.perf_counter()
    records: list[dict] = []
    sm_gave_up_at: int | None = None  # n at which statsmodels exceeded its cap on an all-ones-group model

    for w in chosen:
        print(f"\n== {w.name}: {w.formula}  ({'REML' if w.reml else 'ML'})", flush=True)
        wl.ensure_data(w.data)
        data_bytes = wl.data_path(w.data).stat().st_size
        n_rows = None
        for program in programs:
            if program != "sparselmm" and wl.out_of_core(w):
                print(f"  {program:11s} not run (parquet data, fitted out of core by sparselmm only)", flush=True)
                continue
            if program == "statsmodels":
                if w.statsmodels is None:
                    continue
                if args.quick and not w.statsmodels_quick and not args.only:
                    continue
                crossed_sm = w.statsmodels.get("groups") == "one"
                if crossed_sm and sm_gave_up_at is not None and n_rows is not None and n_rows >= sm_gave_up_at:
                    records.append({"program": program, "workload": w.name, "ok": False, "skipped": True,
                                    "error": f"skipped (> cap already at n = {sm_gave_up_at:,})"})
                    print(f"  {program:11s} skipped (statsmodels > cap at smaller n)", flush=True)
                    continue
            if program == "lme4" and args.reuse_r and _lme4_cache_path(w).exists():
                rec = json.loads(_lme4_cache_path(w).read_text())
                rec["reused_from_cache"] = True
                records.append(rec)
                print(f"  {program:11s} reused cached record from {rec.get('run_date', '?')}", flush=True)
                continue
            if program == "statsmodels":
                cap = sm_cap
            elif args.cap is not None:
                cap = args.cap
            else:
                cap = (w.cap if program in ("sparselmm", "lme4") else None) or 600.0
            best = None
            fit_times = []
            for _ in range(max(1, args.repeat)):
                rec = run_fit(w, program, cap, args)
                if rec.get("ok"):
                    fit_times.append(rec["fit_seconds"])
                    if best is None or rec["fit_seconds"] < best["fit_seconds"]:
                        best = rec
                elif best is None:
                    best = rec
                if not rec.get("ok"):
                    break
            rec = best
            rec["fit_seconds_all"] = fit_times
            rec["run_date"] = env["date"]
            rec["data_file"] = wl.data_path(w.data).name
            rec["data_file_mb"] = data_bytes / 1e6
            n_rows = rec.get("n", n_rows)
            records.append(rec)
            if rec.get("ok"):
                extra = ""
                if rec.get("per_eval_seconds"):
                    extra = f", f(θ̂) {rec['per_eval_seconds'] * 1e3:.3g} ms"
                obj = rec.get("objective", float("nan"))
                print(f"  {program:11s} fit {rec['fit_seconds']:.3g} s, evals {rec.get('n_evals')}"
                      f"{extra}, peak RSS {rec['peak_rss_mb']:.0f} MB, objective {obj:.10g}, "
                      f"other CPU {rec.get('other_cpu_cores') or 0:.2f}", flush=True)
                if program == "lme4":
                    _lme4_cache_path(w).parent.mkdir(parents=True, exist_ok=True)
                    _lme4_cache_path(w).write_text(json.dumps(rec, indent=1))
                if rec.get("profile_top"):
                    print(rec["profile_top"], flush=True)
            else:
                print(f"  {program:11s} FAILED: {rec.get('error')}", flush=True)
                if program == "statsmodels" and rec.get("timed_out") and w.statsmodels.get("groups") == "one":
                    n_here = n_rows or 0
                    sm_gave_up_at = n_here if sm_gave_up_at is None else min(sm_gave_up_at, n_here)

    env["loadavg_end"] = os.getloadavg()
    env["total_seconds"] = time.perf_counter() - t_start
    sel = " ".join((args.only or []) + [f"tag:{t}" for t in args.tag or []])
    mode = "quick" if args.quick else ("only: " + sel if sel else "full")
    if args.large:
        mode += " + large"
    cmdline = "python benchmarks/run.py " + " ".join(argv if argv is not None else sys.argv[1:])

    import report

    results = {"mode": mode, "command": cmdline.strip(), "environment": env, "records": records,
               "workloads": {w.name: {"formula": w.formula, "reml": w.reml, "description": w.description,
                                      "tags": list(w.tags), "model_columns": wl.model_columns(w)}
                             for w in chosen}}
    results["targets"] = report.targets(results)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(results, indent=1, default=str))
    png = None
    if not args.no_plot:
        try:
            import plot

            png = plot.plot(results, out_png)
        except ImportError as exc:
            print(f"plot skipped: {exc} (pip install matplotlib)", flush=True)
    report.write_report(out_md, report.render(results, png_path=png, md_path=out_md))
    print(f"\n{report.console_table(results)}")
    print(f"\nwrote {out_md}\nwrote {out_json}" + (f"\nwrote {png}" if png else ""))
    print(f"total {env['total_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
