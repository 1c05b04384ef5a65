"""
Fitting from parquet files
==========================

``sparselmm.lmer`` accepts a parquet path, glob or list of paths in place of a DataFrame. The rows are
read in batches and reduced to the cross-products of ``[Z X y]``, so memory follows the numbers of levels,
not the rows. The estimates equal the in-memory fit's to rounding; whatever needs the rows themselves
(``fitted()``, ``residuals()``) raises :class:`sparselmm.RowsNotHeldError`, while ``predict(newdata)``
works.
"""

# %%
# Write a small user × item rating set as four parquet files in a temporary directory.
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

import sparselmm

rng = np.random.default_rng(7)
n = 20_000
users = rng.integers(0, 500, n)
items = rng.integers(0, 200, n)
weekend = rng.integers(0, 2, n)
rating = 3.5 + 0.2 * weekend + rng.normal(0, 0.5, 500)[users] + rng.normal(0, 0.3, 200)[items] + rng.normal(0, 1.0, n)
frame = pd.DataFrame(
    {
        "user": [f"u{u}" for u in users],
        "item": [f"i{i}" for i in items],
        "weekend": weekend.astype(float),
        "rating": rating,
    }
)
folder = Path(tempfile.mkdtemp())
for k in range(4):  # four files of 5,000 rows
    frame.iloc[k * 5_000 : (k + 1) * 5_000].to_parquet(folder / f"ratings_{k}.parquet", index=False)
print(sorted(p.name for p in folder.glob("*.parquet")))

# %%
# Fit from the glob (``sparselmm fit --data 'ratings/*.parquet' ...`` on the command line does the same).
formula = "rating ~ weekend + (1 | user) + (1 | item)"
m = sparselmm.lmer(formula, str(folder / "*.parquet"), reml=False)
print(type(m).__name__)
print(m.summary())

# %%
# The same model in memory: the same estimates.
m_memory = sparselmm.lmer(formula, frame, reml=False)
print(pd.DataFrame({"parquet": m.fixef, "in memory": m_memory.fixef}))
print("objective:", m.objective, m_memory.objective)

# %%
# Predictions for new rows work without the data; fitted values need the rows and say so.
new = pd.DataFrame({"user": ["u1", "u2"], "item": ["i5", "i5"], "weekend": [0.0, 1.0]})
print(m.predict(new))
try:
    m.fitted()
except sparselmm.RowsNotHeldError as err:
    print("RowsNotHeldError:", err)

# %%
fig = m.plot_qq_ranef()
