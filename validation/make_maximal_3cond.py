"""Draw validation/data/maximal_3cond.csv: 40 subjects x 30 items, a three-level condition and a covariate,
with by-subject and by-item intercepts and condition effects (issue 23's drop1 and profile cases).

The seed (6) was chosen because drop1's reduced fits, warm-started from the full model alone, stopped above
fresh fits on this draw, and the maximal REML fit is singular. ``python validation/make_maximal_3cond.py``.
"""

from pathlib import Path

import numpy as np
import pandas as pd


def make(seed: int = 6, n_subj: int = 40, n_item: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    subj_re = rng.normal(0, [30, 10, 15], (n_subj, 3))
    item_re = rng.normal(0, [20, 8, 5], (n_item, 3))
    conds = np.array(["A", "B", "C"])
    rows = []
    for s in range(n_subj):
        for i in range(n_item):
            c = rng.integers(3)
            freq = rng.normal()
            rt = 500 + (0, 15, 25)[c] + 10 * freq + subj_re[s, 0] + item_re[i, 0]
            rt = rt + (subj_re[s, c] if c else 0) + (item_re[i, c] if c else 0) + rng.normal(0, 50)
            rows.append((f"s{s}", f"i{i}", conds[c], freq, rt))
    return pd.DataFrame(rows, columns=["subj", "item", "cond", "freq", "rt"])


if __name__ == "__main__":
    make().to_csv(Path(__file__).parent / "data" / "maximal_3cond.csv", index=False)
