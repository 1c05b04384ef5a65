"""Simulated designs for validating sparselmm against lme4.

Run from the repository root::

    python validation/simulate.py

Every design uses a fixed seed (``np.random.default_rng(SEED)``) so the CSV
files in ``validation/data/`` are reproducible. Grouping columns are strings
with a letter prefix (e.g. ``"u0012"``) so that both R (``read.csv(...,
stringsAsFactors = TRUE)``) and Python treat them as categorical. Numbers are
written with ``float_format="%.17g"`` so R and Python read identical values.
Files named ``newdata_*.csv`` hold a few rows for ``predict`` checks and
include grouping levels (``"NEW"``) that are absent from the training data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).resolve().parent / "data"


def _labels(prefix: str, n: int) -> np.ndarray:
    width = len(str(n))
    return np.array([f"{prefix}{i + 1:0{width}d}" for i in range(n)], dtype=object)


def _write(df: pd.DataFrame, name: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.csv"
    df.to_csv(path, index=False, float_format="%.17g")
    print(f"wrote {path.relative_to(OUT.parent.parent)}  ({len(df)} rows)")


def crossed(seed: int, n_users: int, n_items: int, n_target: int) -> pd.DataFrame:
    """Users x items with heavy-tailed (lognormal) activity."""
    rng = np.random.default_rng(seed)
    pu = rng.lognormal(0.0, 1.2, n_users)
    pi = rng.lognormal(0.0, 1.0, n_items)
    pu /= pu.sum()
    pi /= pi.sum()
    # every user and item appears at least once, the rest is heavy tailed
    u = np.concatenate([np.arange(n_users), rng.choice(n_users, n_target - n_users, p=pu)])
    i = np.concatenate(
        [rng.permutation(np.resize(np.arange(n_items), n_users)), rng.choice(n_items, n_target - n_users, p=pi)]
    )
    order = rng.permutation(n_target)  # repeated (user, item) pairs are allowed
    u, i = u[order], i[order]
    n = len(u)
    x = rng.normal(0.0, 1.0, n)
    cond = rng.choice(np.array(["a", "b", "c"], dtype=object), n)
    cond_eff = pd.Series(cond).map({"a": 0.0, "b": 0.3, "c": -0.2}).to_numpy()
    bu = rng.normal(0.0, 0.8, n_users)
    bu_x = rng.normal(0.0, 0.3, n_users)
    bi = rng.normal(0.0, 0.5, n_items)
    y = 1.0 + 0.5 * x + cond_eff + bu[u] + bu_x[u] * x + bi[i] + rng.normal(0.0, 1.0, n)
    return pd.DataFrame(
        {"y": y, "x": x, "cond": cond, "user": _labels("u", n_users)[u], "item": _labels("i", n_items)[i]}
    )


def partial_crossed(seed: int = 3) -> pd.DataFrame:
    """Subjects see a random subset (10-40) of the stimuli, 1-2 trials each."""
    rng = np.random.default_rng(seed)
    n_subj, n_stim = 100, 60
    rows = []
    a = rng.normal(0, 40, n_subj)
    a_x = rng.normal(0, 40, n_subj)
    b = rng.normal(0, 25, n_stim)
    for s in range(n_subj):
        k = rng.integers(10, 41)
        stims = rng.choice(n_stim, k, replace=False)
        for t in stims:
            for _ in range(rng.integers(1, 3)):
                rows.append((s, t))
    s, t = np.array(rows).T
    n = len(s)
    x = rng.choice([-0.5, 0.5], n)
    rt = 600 + 30 * x + a[s] + a_x[s] * x + b[t] + rng.normal(0, 60, n)
    return pd.DataFrame({"rt": rt, "x": x, "subj": _labels("s", n_subj)[s], "stim": _labels("t", n_stim)[t]})


def nested_unbalanced(seed: int = 4) -> pd.DataFrame:
    """Schools / classes (class labels repeat across schools), unbalanced."""
    rng = np.random.default_rng(seed)
    n_school = 40
    rows = []
    b0 = rng.normal(0, 2.0, n_school)
    b1 = rng.normal(0, 0.7, n_school)
    for sc in range(n_school):
        n_class = rng.integers(1, 7)
        for c in range(n_class):
            cls_eff = rng.normal(0, 1.2)
            m = int(rng.integers(2, 31))
            x = rng.normal(0, 1, m)
            y = 10 + 1.5 * x + b0[sc] + b1[sc] * x + cls_eff + rng.normal(0, 2.0, m)
            for xi, yi in zip(x, y):
                rows.append((yi, xi, f"s{sc + 1:02d}", f"c{c + 1}"))
    return pd.DataFrame(rows, columns=["y", "x", "school", "class"])


def slopes_many(seed: int = 5) -> pd.DataFrame:
    """500 groups with 3-15 obs, correlated random intercept and slopes."""
    rng = np.random.default_rng(seed)
    n_g = 500
    sd = np.array([1.0, 0.5, 0.3])
    corr = np.array([[1.0, 0.4, -0.3], [0.4, 1.0, 0.2], [-0.3, 0.2, 1.0]])
    cov = corr * np.outer(sd, sd)
    b = rng.multivariate_normal(np.zeros(3), cov, n_g)
    sizes = rng.integers(3, 16, n_g)
    g = np.repeat(np.arange(n_g), sizes)
    n = len(g)
    x = rng.normal(0, 1, n)
    z = rng.uniform(-1, 1, n)
    y = 2 + 0.8 * x - 0.4 * z + b[g, 0] + b[g, 1] * x + b[g, 2] * z + rng.normal(0, 0.7, n)
    return pd.DataFrame({"y": y, "x": x, "z": z, "g": _labels("g", n_g)[g]})


def catslope(seed: int = 6) -> pd.DataFrame:
    """80 groups, 3-level categorical predictor with a random slope."""
    rng = np.random.default_rng(seed)
    n_g = 80
    levels = np.array(["lo", "mid", "hi"], dtype=object)
    cov = np.array([[1.0, 0.3, 0.2], [0.3, 0.6, 0.1], [0.2, 0.1, 0.5]])
    b = rng.multivariate_normal(np.zeros(3), cov, n_g)
    rows = []
    for gi in range(n_g):
        m = int(rng.integers(6, 19))
        f = rng.integers(0, 3, m)
        y = 5 + np.array([0.0, 0.7, -0.5])[f] + b[gi, f] + rng.normal(0, 0.8, m)
        for fi, yi in zip(f, y):
            rows.append((yi, levels[fi], f"g{gi + 1:02d}"))
    return pd.DataFrame(rows, columns=["y", "f", "g"])


def weighted(seed: int = 7) -> pd.DataFrame:
    """Random intercepts with prior weights w and an offset column off."""
    rng = np.random.default_rng(seed)
    n_g = 60
    sizes = rng.integers(2, 20, n_g)
    g = np.repeat(np.arange(n_g), sizes)
    n = len(g)
    x = rng.normal(0, 1, n)
    w = rng.uniform(0.5, 3.0, n)
    off = rng.normal(0, 0.5, n)
    b = rng.normal(0, 1.0, n_g)
    y = off + 3 - 0.7 * x + b[g] + rng.normal(0, 1.0, n) / np.sqrt(w)
    return pd.DataFrame({"y": y, "x": x, "w": w, "off": off, "g": _labels("g", n_g)[g]})


def rankdef(seed: int = 8) -> pd.DataFrame:
    """x3 = x1 + x2 exactly: rank-deficient fixed-effects matrix."""
    rng = np.random.default_rng(seed)
    n_g = 30
    g = np.repeat(np.arange(n_g), 8)
    n = len(g)
    x1 = rng.normal(0, 1, n)
    x2 = rng.normal(0, 1, n)
    x3 = x1 + x2
    b = rng.normal(0, 1.0, n_g)
    y = 1 + 0.5 * x1 - 0.3 * x2 + b[g] + rng.normal(0, 1, n)
    return pd.DataFrame({"y": y, "x1": x1, "x2": x2, "x3": x3, "g": _labels("g", n_g)[g]})


def singular(seed: int = 9) -> pd.DataFrame:
    """No between-group variance at all: lme4's fit is singular."""
    rng = np.random.default_rng(seed)
    n_g = 12
    g = np.repeat(np.arange(n_g), 5)
    n = len(g)
    x = rng.normal(0, 1, n)
    y = 2 + 0.5 * x + rng.normal(0, 1, n)
    return pd.DataFrame({"y": y, "x": x, "g": _labels("g", n_g)[g]})


def twoterms(seed: int = 10) -> pd.DataFrame:
    """Uncorrelated intercept and slope on g, plus a factor h crossed with g."""
    rng = np.random.default_rng(seed)
    n_g, n_h = 50, 15
    g = np.repeat(np.arange(n_g), 12)
    n = len(g)
    h = rng.integers(0, n_h, n)
    x = rng.normal(0, 1, n)
    b0 = rng.normal(0, 1.0, n_g)
    b1 = rng.normal(0, 0.6, n_g)
    c = rng.normal(0, 0.8, n_h)
    y = 4 + 1.0 * x + b0[g] + b1[g] * x + c[h] + rng.normal(0, 1, n)
    return pd.DataFrame({"y": y, "x": x, "g": _labels("g", n_g)[g], "h": _labels("h", n_h)[h]})


def _newdata(df: pd.DataFrame, group_cols: list[str], seed: int, n: int = 6) -> pd.DataFrame:
    """A few training rows plus rows whose grouping levels are "NEW"."""
    rng = np.random.default_rng(seed)
    nd = df.iloc[rng.choice(len(df), n, replace=False)].reset_index(drop=True).copy()
    nd.loc[n - 2, group_cols[0]] = "NEW"
    nd.loc[n - 1, group_cols] = "NEW"
    return nd


def main() -> None:
    sets = {
        "crossed_small": (crossed(11, 300, 120, 6000), ["user", "item"]),
        "crossed_large": (crossed(2, 2000, 800, 40000), ["user", "item"]),
        "partial_crossed": (partial_crossed(), ["subj", "stim"]),
        "nested_unbalanced": (nested_unbalanced(), ["school", "class"]),
        "slopes_many": (slopes_many(), ["g"]),
        "catslope": (catslope(), ["g"]),
        "weighted": (weighted(), ["g"]),
        "rankdef": (rankdef(), ["g"]),
        "singular": (singular(), ["g"]),
        "twoterms": (twoterms(), ["g", "h"]),
    }
    for k, (name, (df, groups)) in enumerate(sets.items()):
        _write(df, name)
        nd = _newdata(df, groups, seed=100 + k)
        _write(nd, f"newdata_{name}")

    # newdata for the bundled lme4 datasets (used by predict checks)
    bundled = {
        "sleepstudy": pd.DataFrame(
            {
                "Reaction": [250.0, 300.0, 320.0, 280.0, 260.0, 290.0],
                "Days": [0.0, 3.0, 7.5, 9.0, 1.0, 4.0],
                "Subject": ["308", "309", "372", "337", "NEW", "NEW"],
            }
        ),
        "Dyestuff": pd.DataFrame(
            {"Batch": ["A", "C", "F", "NEW", "B"], "Yield": [1500.0, 1500.0, 1500.0, 1500.0, 1500.0]}
        ),
        "Penicillin": pd.DataFrame(
            {
                "diameter": [23.0] * 6,
                "plate": ["a", "k", "x", "NEW", "b", "NEW"],
                "sample": ["A", "B", "F", "C", "NEW", "NEW"],
            }
        ),
        "Pastes": pd.DataFrame(
            {
                "strength": [60.0] * 6,
                "batch": ["A", "C", "J", "NEW", "B", "NEW"],
                "cask": ["a", "b", "c", "a", "a", "c"],
            }
        ),
        "cake": pd.DataFrame(
            {
                "angle": [30] * 6,
                "recipe": ["A", "B", "C", "A", "B", "C"],
                "replicate": ["1", "5", "15", "3", "NEW", "NEW"],
                "temp": [175.0, 195.0, 225.0, 200.0, 185.0, 215.0],
            }
        ),
        "InstEval": pd.DataFrame(
            {
                "y": [3] * 6,
                "s": ["1", "2", "NEW", "10", "NEW", "5"],
                "d": ["6", "NEW", "7", "8", "NEW", "1"],
                "service": ["0", "1", "0", "1", "1", "0"],
                "dept": ["15", "5", "10", "12", "15", "NEW"],
            }
        ),
    }
    for name, nd in bundled.items():
        _write(nd, f"newdata_{name}")


if __name__ == "__main__":
    main()
