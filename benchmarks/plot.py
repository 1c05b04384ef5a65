"""Log-log scaling plots from a results dict (``run.py``) or ``results.json``.

    python benchmarks/plot.py [benchmarks/results.json] [out.png]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
STYLE = {"sparselmm": ("tab:blue", "o"), "lme4": ("tab:orange", "s"), "mixedlm": ("tab:red", "D"),
         "statsmodels": ("tab:green", "^")}


def _series(results: dict, tag: str, program: str, x_of, y_of):
    pts, capped = [], []
    for name, w in results["workloads"].items():
        if tag not in w["tags"]:
            continue
        rec = next((r for r in results["records"] if r["workload"] == name and r["program"] == program), None)
        if rec is None:
            continue
        x = x_of(results, name)
        if x is None:
            continue
        if rec.get("ok"):
            y = y_of(rec)
            if y:
                pts.append((x, y))
        elif rec.get("timed_out") and y_of is _fit:
            capped.append((x, rec["cap_seconds"]))
    return sorted(pts), sorted(capped)


def _n(results, name):
    return next((r["n"] for r in results["records"] if r["workload"] == name and r.get("n")), None)


def _total_levels(results, name):
    lv = next((r["levels"] for r in results["records"] if r["workload"] == name and r.get("levels")), None)
    return sum(lv.values()) if lv else None


def _fit(rec):
    return rec.get("fit_seconds")


def _per_eval(rec):
    return rec.get("per_eval_seconds")


def plot(results: dict, out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    panels = [
        ("fit time vs n (crossed, levels grow with n)", "n (rows)", "fit time (s)", [("sweep_n", _n, _fit, "-")]),
        ("fit time vs number of levels", "levels (users + items)", "fit time (s)",
         [("sweep_levels", _total_levels, _fit, "-"), ("sweep_n", _total_levels, _fit, ":")]),
        ("time per evaluation f(θ̂) vs n", "n (rows)", "seconds per evaluation",
         [("sweep_n", _n, _per_eval, "-"), ("rep", _n, _per_eval, "--")]),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    anything = False
    for ax, (title, xl, yl, series) in zip(axes, panels, strict=True):
        for tag, x_of, y_of, ls in series:
            for prog, (color, marker) in STYLE.items():
                pts, capped = _series(results, tag, prog, x_of, y_of)
                if pts:
                    anything = True
                    xs, ys = zip(*pts, strict=True)
                    ax.plot(xs, ys, ls, color=color, marker=marker, label=f"{prog} ({tag})")
                if capped:
                    xs, ys = zip(*capped, strict=True)
                    ax.plot(xs, ys, "x", color=color, markersize=10, label=f"{prog} > cap ({tag})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # decade labels only (minor labels overlap)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.grid(True, which="both", alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7)
    if not anything:
        plt.close(fig)
        return None
    date = results["environment"].get("date", "")
    fig.suptitle(f"sparselmm vs lme4 and mixedlm — {results.get('mode', '')} run, {date}", fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


if __name__ == "__main__":
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "results.json"
    dst = Path(sys.argv[2]) if len(sys.argv) > 2 else src.with_name("bench_scaling.png")
    res = plot(json.loads(src.read_text()), dst)
    print(res or "nothing to plot")
