"""How chunked data codes its columns: as the in-memory path (formulaic) and lme4 do.

A bool column is numeric — one 0/1 column named ``b``, R's ``bTRUE`` — in ``sparselmm.lmer(formula, df)``
(formulaic codes pandas' bool dtype as a number) and so also when the same rows arrive in chunks, parquet
files or Dask partitions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import sparselmm
from sparselmm.errors import DataError
from sparselmm.scale import ChunkedFrames

FORMULA = "y ~ x + b + (b | g)"

# lme4 1.1.31, R 4.2.2: d <- read.csv(<bool_data() written with to_csv(index=False)>);
# d$b <- as.logical(d$b); m <- lmer(y ~ x + b + (b | g), d)
# fixef(m): (Intercept) 2.1105190237, x 0.4387530812, bTRUE 0.8509994353; REMLcrit(m) 1178.65650647;
# getME(m, "theta"): 0.8027326962, -0.2186810643, 0.5034768124
LME4_FIXEF = [2.1105190237, 0.4387530812, 0.8509994353]
LME4_REML = 1178.65650647
LME4_THETA = [0.8027326962, -0.2186810643, 0.5034768124]


def bool_data(n=400, seed=22):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 20, n)
    b = rng.random(n) < 0.4
    x = rng.normal(size=n)
    u0, u1 = rng.normal(size=20), rng.normal(scale=0.5, size=20)
    y = 2.0 + 0.5 * x + (0.8 + u1[g]) * b + u0[g] + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x": x, "b": b, "g": [f"g{k:02d}" for k in g]})


@pytest.fixture(scope="module")
def df():
    return bool_data()


@pytest.fixture(scope="module")
def in_memory(df):
    return sparselmm.lmer(FORMULA, df)


def _same_as_in_memory(ref, m):
    assert list(m.fixef.index) == list(ref.fixef.index) == ["Intercept", "x", "b"]
    np.testing.assert_allclose(m.fixef.to_numpy(), ref.fixef.to_numpy(), rtol=0, atol=1e-8)
    np.testing.assert_allclose(m.theta, ref.theta, rtol=0, atol=1e-6)
    assert m.objective == pytest.approx(ref.objective, rel=1e-10)


def test_bool_predictor_in_memory_matches_lme4(in_memory):
    np.testing.assert_allclose(in_memory.fixef.to_numpy(), LME4_FIXEF, rtol=0, atol=1e-6)
    np.testing.assert_allclose(in_memory.theta, LME4_THETA, rtol=0, atol=1e-5)
    assert in_memory.objective == pytest.approx(LME4_REML, rel=1e-9)
    assert in_memory.design.terms[0].cnms == ["Intercept", "b"]


def test_bool_predictor_chunked_frames(df, in_memory):
    m = sparselmm.lmer(FORMULA, ChunkedFrames(df, rows=97))
    _same_as_in_memory(in_memory, m)
    assert m.design.terms[0].cnms == ["Intercept", "b"]


def test_bool_predictor_parquet(df, in_memory, tmp_path):
    pytest.importorskip("pyarrow")
    for k, part in enumerate(np.array_split(np.arange(len(df)), 3)):
        df.iloc[part].to_parquet(tmp_path / f"part{k}.parquet", row_group_size=60)
    m = sparselmm.lmer(FORMULA, str(tmp_path / "*.parquet"))
    _same_as_in_memory(in_memory, m)
    np.testing.assert_allclose(m.fixef.to_numpy(), LME4_FIXEF, rtol=0, atol=1e-6)


def test_bool_predictor_predictions_and_anova(df, in_memory):
    """predict(newdata) and the type III anova (from made-up coding rows) read the bool column as in memory."""
    m = sparselmm.lmer(FORMULA, ChunkedFrames(df, rows=120))
    new = df.iloc[:25]
    np.testing.assert_allclose(m.predict(new), in_memory.predict(new), rtol=0, atol=1e-8)
    a_mem, a_chunk = sparselmm.anova(in_memory), sparselmm.anova(m)
    assert list(a_chunk.index) == list(a_mem.index) == ["x", "b"]
    np.testing.assert_allclose(a_chunk.to_numpy(dtype=float), a_mem.to_numpy(dtype=float), rtol=1e-6)


def test_bool_predictor_with_missing_values_in_parquet(df, tmp_path):
    """A bool column with nulls (pandas reads it as object) stays numeric in every batch; its rows are dropped."""
    pytest.importorskip("pyarrow")
    holey = df.assign(b=df["b"].astype(object).where(df.index % 37 != 5, None))
    holey.iloc[:200].to_parquet(tmp_path / "a.parquet", row_group_size=50)
    holey.iloc[200:].to_parquet(tmp_path / "b.parquet", row_group_size=50)
    complete = df.loc[holey["b"].notna()].reset_index(drop=True)
    m = sparselmm.lmer(FORMULA, str(tmp_path / "*.parquet"))
    _same_as_in_memory(sparselmm.lmer(FORMULA, complete), m)
    assert m.nobs == len(complete) < len(df)


def test_bool_predictor_dask(df, in_memory):
    dd = pytest.importorskip("dask.dataframe")
    import dask

    with dask.config.set(scheduler="sync"):
        m = sparselmm.lmer(FORMULA, dd.from_pandas(df, npartitions=4))
    _same_as_in_memory(in_memory, m)


def test_bool_predictor_as_factor_stays_categorical(df):
    """``C(b)`` codes the bool as a factor in both paths (R's ``factor(b)``: one column ``C(b)[T.True]``)."""
    ref = sparselmm.lmer("y ~ x + C(b) + (1 | g)", df)
    m = sparselmm.lmer("y ~ x + C(b) + (1 | g)", ChunkedFrames(df, rows=150))
    assert list(m.fixef.index) == list(ref.fixef.index) == ["Intercept", "x", "C(b)[T.True]"]
    np.testing.assert_allclose(m.fixef.to_numpy(), ref.fixef.to_numpy(), rtol=0, atol=1e-8)
    # the same coefficient as the numeric coding: a two-level factor is its 0/1 indicator
    num = sparselmm.lmer("y ~ x + b + (1 | g)", df)
    assert m.fixef.iloc[2] == pytest.approx(num.fixef.iloc[2], abs=1e-8)


def test_bool_in_one_chunk_text_in_another(df):
    """A column that is bool (numeric) in one chunk and text in another is an error naming both chunks."""
    text = df.iloc[200:].assign(b=df["b"].iloc[200:].map({True: "yes", False: "no"}))
    with pytest.raises(DataError, match=r"Column 'b' has dtype bool in chunk 0 .* but \S+ in chunk 1"):
        sparselmm.lmer(FORMULA, ChunkedFrames([df.iloc[:200], text]))
