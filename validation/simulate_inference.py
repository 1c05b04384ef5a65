"""Simulated designs for the inference validation (lmerTest Satterthwaite, pbkrtest Kenward-Roger).

Run from the repository root::

    python validation/simulate_inference.py

Writes only the designs that ``validation/inference_cases.json`` needs beyond the ones
``validation/simulate.py`` already writes (those are reused as they are; their seeds are behind
committed lme4 references, so that script is left alone). Same conventions: fixed seeds
(``np.random.default_rng``), grouping columns are letter-prefixed strings, numbers are written with
``%.17g`` so R and Python read identical values.
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


def factorial_crossed(seed: int = 21) -> pd.DataFrame:
    """Subjects x items, unbalanced: a 3-level item factor ``cond`` (a/b/c, 8 items each), a 2-level
    subject factor ``grp`` (20 ``ctl`` and 16 ``trt`` subjects), their interaction, a trial-level
    covariate ``x`` with a correlated random slope by subject, and prior weights ``w``.

    Each subject sees each item at most once; about 22 % of the subject x item cells are missing
    (each missing with its own probability, so cells per subject and per cond x grp differ), but
    every cond x grp combination is observed, so the fixed effects have full rank.
    """
    rng = np.random.default_rng(seed)
    n_subj, n_item = 36, 24
    grp_of_subj = np.array(["ctl"] * 20 + ["trt"] * 16, dtype=object)
    rng.shuffle(grp_of_subj)
    cond_of_item = np.repeat(np.array(["a", "b", "c"], dtype=object), n_item // 3)
    # subject-specific missingness rates 5-40 %: unbalanced in subjects and in the cond x grp cells
    p_miss = rng.uniform(0.05, 0.40, n_subj)
    keep = rng.uniform(size=(n_subj, n_item)) >= p_miss[:, None]
    s, i = np.nonzero(keep)
    n = len(s)
    x = rng.normal(0.0, 1.0, n)
    w = rng.uniform(0.5, 2.0, n)
    cov = np.array([[0.6**2, 0.3 * 0.6 * 0.25], [0.3 * 0.6 * 0.25, 0.25**2]])
    b = rng.multivariate_normal(np.zeros(2), cov, n_subj)
    c = rng.normal(0.0, 0.4, n_item)
    cond, grp = cond_of_item[i], grp_of_subj[s]
    cond_eff = pd.Series(cond).map({"a": 0.0, "b": 0.35, "c": -0.25}).to_numpy()
    grp_eff = np.where(grp == "trt", 0.3, 0.0)
    inter = np.where((grp == "trt") & (cond == "c"), 0.4, 0.0)
    y = 1.0 + cond_eff + grp_eff + inter + 0.5 * x + b[s, 0] + b[s, 1] * x + c[i] + rng.normal(0.0, 1.0, n) / np.sqrt(w)
    return pd.DataFrame(
        {
            "y": y,
            "cond": cond,
            "grp": grp,
            "x": x,
            "w": w,
            "subj": _labels("s", n_subj)[s],
            "item": _labels("i", n_item)[i],
        }
    )


def near_singular(seed: int = 217) -> pd.DataFrame:
    """15 groups of 4-10 rows, a 3-level factor ``trt`` and a covariate ``x``; the between-group SD
    (0.12) is small next to the residual SD (1), so the REML estimate of the group SD is small but not
    zero (theta about 0.04 for this seed): a near-singular fit, where Satterthwaite's and
    Kenward-Roger's denominator degrees of freedom move fast with theta."""
    rng = np.random.default_rng(seed)
    n_g = 15
    sizes = rng.integers(4, 11, n_g)
    g = np.repeat(np.arange(n_g), sizes)
    n = len(g)
    trt = rng.choice(np.array(["ctl", "drugA", "drugB"], dtype=object), n)
    x = rng.normal(0.0, 1.0, n)
    b = rng.normal(0.0, 0.12, n_g)
    trt_eff = pd.Series(trt).map({"ctl": 0.0, "drugA": 0.5, "drugB": 0.8}).to_numpy()
    y = 3.0 + trt_eff + 0.3 * x + b[g] + rng.normal(0.0, 1.0, n)
    return pd.DataFrame({"y": y, "trt": trt, "x": x, "g": _labels("g", n_g)[g]})


def main() -> None:
    _write(factorial_crossed(), "factorial_crossed")
    _write(near_singular(), "near_singular")


if __name__ == "__main__":
    main()
