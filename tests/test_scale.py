"""Fits from chunks (sparselmm.scale) equal the in-memory fit; faults give clear errors.

The in-memory fit is the reference (itself validated against lme4 in validation/): chunked, parquet and
Dask fits must give its objective to 1e-10 relative and β to 1e-8, for crossed, nested and random-slope
models with weights and offsets.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import contrast_frames

import sparselmm
from sparselmm.errors import DataError, RowsNotHeldError
from sparselmm.scale import ChunkedFrames, PartialCrossProducts

FORMULAS = {
    "crossed": "y ~ x + f + (1 | u) + (1 | item)",
    "nested": "y ~ x + (1 | item / u)",
    "slope": "y ~ x + f + (x | u)",
}


def _data(n=800, seed=3):
    rng = np.random.default_rng(seed)
    items = np.array([f"i{j:02d}" for j in range(25)])
    df = pd.DataFrame(
        {
            "u": rng.integers(0, 30, n),
            "item": rng.choice(items, n),
            "x": rng.normal(size=n),
            "f": rng.choice(["lo", "mid", "hi"], n),
            "w": rng.uniform(0.5, 2.0, n),
            "off": rng.normal(scale=0.3, size=n),
        }
    )
    b_u, s_u, b_i = rng.normal(size=30), rng.normal(scale=0.5, size=30), rng.normal(size=25)
    item_code = pd.factorize(df["item"], sort=True)[0]
    df["y"] = 1.0 + (1 + s_u[df.u]) * df.x + b_u[df.u] + b_i[item_code] + df.off + rng.normal(size=n) / np.sqrt(df.w)
    return df


@pytest.fixture(scope="module")
def df():
    return _data()


@pytest.fixture(scope="module")
def reference(df):
    return {k: sparselmm.lmer(f, df, weights="w", offset="off") for k, f in FORMULAS.items()}


def _same(a, b, rel=1e-10, beta=1e-8):
    assert abs(a.objective - b.objective) <= rel * abs(a.objective)
    assert list(a.fixef.index) == list(b.fixef.index)
    np.testing.assert_allclose(b.fixef.to_numpy(), a.fixef.to_numpy(), rtol=0, atol=beta)
    np.testing.assert_allclose(b.theta, a.theta, rtol=0, atol=1e-6)
    assert a.nobs == b.nobs and a.ngroups == b.ngroups


@pytest.mark.parametrize("kind", FORMULAS)
def test_chunked_frames_equal_in_memory(df, reference, kind):
    m = sparselmm.lmer(FORMULAS[kind], ChunkedFrames(df, rows=77), weights="w", offset="off")
    _same(reference[kind], m)
    np.testing.assert_allclose(m.vcov.to_numpy(), reference[kind].vcov.to_numpy(), rtol=1e-6, atol=1e-12)


def test_results_without_rows(df, reference):
    a = reference["crossed"]
    m = sparselmm.lmer(FORMULAS["crossed"], ChunkedFrames(df, rows=200), weights="w", offset="off")
    assert m.sigma == pytest.approx(a.sigma, rel=1e-8)
    ra, rm = a.ranef(cond_var=True), m.ranef(cond_var=True)
    for g in ra:
        assert list(ra[g].index) == list(rm[g].index)
        np.testing.assert_allclose(rm[g].to_numpy(), ra[g].to_numpy(), atol=1e-7)
        np.testing.assert_allclose(rm[g].attrs["cond_var"], ra[g].attrs["cond_var"], rtol=1e-6)
    text = str(m.summary())
    assert "Scaled residuals: not computed" in text and "Number of obs: 800" in text
    for call in (m.fitted, m.residuals, m.predict, lambda: m.design.y, lambda: m.Z):
        with pytest.raises(RowsNotHeldError, match="needs the rows"):
            call()
    new = df.iloc[:40]
    np.testing.assert_allclose(m.predict(new), a.predict(new), atol=1e-7)
    np.testing.assert_allclose(m.predict(new, re_form="~0", offset="off"), a.predict(new, re_form="~0", offset="off"))
    assert m.scale_info["rows"] == len(df) and m.scale_info["chunks"] == 4
    assert m.deviance == pytest.approx(a.deviance, rel=1e-10)
    np.testing.assert_allclose(m.confint(method="Wald").to_numpy(), a.confint(method="Wald").to_numpy(), atol=1e-6)
    with pytest.raises(RowsNotHeldError, match=r"800 complete rows of the column\(s\) \[.*'w', 'off'\].*read_parquet"):
        m.simulate(1)  # n values per draw: the rows themselves


def test_partials_add(df):
    from sparselmm.scale import Plan  # noqa: F401  (public)
    from sparselmm.scale.fit import streamed_setup

    src = ChunkedFrames(df, rows=300)
    devfun, *_ = streamed_setup(FORMULAS["slope"], src, True, "w", "off", "drop", "auto")
    plan = _ = streamed_setup(FORMULAS["slope"], src, True, "w", "off", "drop", "auto")[3]
    parts = [plan.partial(df.iloc[i : i + 300], f"c{i}") for i in range(0, len(df), 300)]
    total = sum(parts)
    assert isinstance(total, PartialCrossProducts) and total.n == len(df) and total.chunks == len(parts)
    whole = plan.partial(df, "all")
    np.testing.assert_allclose(total.ZtWZ.toarray(), whole.ZtWZ.toarray(), rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(total.ZtWA, whole.ZtWA, rtol=1e-12, atol=1e-12)
    assert total.ytWy == pytest.approx(whole.ytWy, rel=1e-13)
    _, cross, _ = plan.finish(total)
    mem = sparselmm.deviance_function(FORMULAS["slope"], df, weights="w", offset="off").cross
    np.testing.assert_allclose(cross.XtWX, mem.XtWX, rtol=1e-12)
    np.testing.assert_allclose(cross.ZtWZ.toarray(), mem.ZtWZ.toarray(), rtol=1e-12, atol=1e-12)
    assert cross.ytWy == pytest.approx(mem.ytWy, rel=1e-9)
    theta = devfun.design.theta0 + 0.3
    assert devfun(theta) == pytest.approx(
        sparselmm.deviance_function(FORMULAS["slope"], df, weights="w", offset="off")(theta), rel=1e-12
    )


@pytest.mark.parametrize("big", [1e4, 1e8, 1e12])
def test_badly_scaled_response(big):
    """The two-level shift (chunked.py docstring): the chunked objective matches the exactly pre-centred fit."""
    rng = np.random.default_rng(2)
    n = 600
    df = pd.DataFrame(
        {"g": rng.integers(0, 30, n), "h": rng.integers(0, 12, n), "x": rng.normal(size=n), "w": rng.uniform(0.5, 2, n)}
    )
    e = rng.normal(size=n) + rng.normal(size=30)[df.g] + rng.normal(size=12)[df.h]
    df["y"] = big + 3 * df.x + e
    f = "y ~ x + (1 | g) + (1 | h)"
    ref = sparselmm.lmer(f, df.assign(y=df.y - big), weights="w")  # y - big is exact (Sterbenz)
    m = sparselmm.lmer(f, ChunkedFrames(df, rows=50), weights="w")
    assert abs(m.objective - ref.objective) <= 1e-12 * ref.objective
    assert m.fixef["Intercept"] - big == pytest.approx(ref.fixef["Intercept"], abs=1e-6 * max(1.0, big * 1e-10))


def test_level_order_and_categoricals(df, reference):
    cat = df.assign(item=pd.Categorical(df["item"], categories=sorted(df["item"].unique())[::-1]))
    a = sparselmm.lmer(FORMULAS["crossed"], cat, weights="w", offset="off")
    m = sparselmm.lmer(FORMULAS["crossed"], ChunkedFrames(cat, rows=100), weights="w", offset="off")
    _same(a, m)
    assert list(m.ranef()["item"].index) == list(a.ranef()["item"].index)


def test_missing_rows_dropped(df):
    d = df.copy()
    d.loc[d.index[::37], "x"] = np.nan
    d.loc[d.index[5:200], "f"] = None  # a whole chunk without complete rows is fine
    a = sparselmm.lmer(FORMULAS["crossed"], d, weights="w", offset="off")
    m = sparselmm.lmer(FORMULAS["crossed"], ChunkedFrames(d, rows=50), weights="w", offset="off")
    _same(a, m)
    assert m.design.data.n_dropped == a.design.data.n_dropped > 0


def test_unseen_level_between_passes(df):
    calls = []

    def frames():
        calls.append(1)
        d = df.copy()
        if len(calls) > 2:  # (1: the column names, 2: the level pass) the data changed after the level pass
            d.loc[d.index[500], "item"] = "brand-new"
        return [d.iloc[:400], d.iloc[400:]]

    with pytest.raises(DataError, match=r"chunk 1 .*column 'item' has level 'brand-new'"):
        sparselmm.lmer(FORMULAS["crossed"], ChunkedFrames(frames), weights="w", offset="off")


def test_dtype_change_between_chunks(df):
    a = df.iloc[:400]
    b = df.iloc[400:].assign(x=df["x"].iloc[400:].astype(str))
    with pytest.raises(DataError, match=r"Column 'x' has dtype float64 in chunk 0 .* but (str|object) in chunk 1"):
        sparselmm.lmer(FORMULAS["crossed"], ChunkedFrames([a, b]), weights="w", offset="off")
    # numeric widths may differ (int in one chunk, float in another)
    c = df.iloc[400:].assign(u=df["u"].iloc[400:].astype(float))
    m = sparselmm.lmer(FORMULAS["crossed"], ChunkedFrames([a, c]), weights="w", offset="off")
    assert m.ngroups["u"] == 30


def test_weights_must_be_columns(df):
    with pytest.raises(DataError, match="must name a column"):
        sparselmm.lmer(FORMULAS["crossed"], ChunkedFrames(df), weights=df["w"].to_numpy())
    bad = df.assign(w=df["w"].where(df.index != 650, -1.0))
    with pytest.raises(DataError, match="chunk 6 of chunked frames: weights must be positive"):
        sparselmm.lmer(FORMULAS["crossed"], ChunkedFrames(bad, rows=100), weights="w")


# ---- parquet --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def parquet_dir(df, tmp_path_factory):
    pytest.importorskip("pyarrow")
    d = tmp_path_factory.mktemp("pq")
    for k, part in enumerate(np.array_split(np.arange(len(df)), 3)):
        df.iloc[part].to_parquet(d / f"part{k}.parquet", row_group_size=90)
    return d


@pytest.mark.parametrize("kind", FORMULAS)
def test_parquet_equal_in_memory(parquet_dir, reference, kind):
    m = sparselmm.lmer(FORMULAS[kind], str(parquet_dir / "*.parquet"), weights="w", offset="off")
    _same(reference[kind], m)
    assert m.scale_info["rows"] == 800


def test_parquet_source_options(parquet_dir, reference, capsys):
    from sparselmm.scale import ParquetSource

    files = sorted(parquet_dir.glob("*.parquet"))
    src = ParquetSource(files, batch_rows=64, progress=True)
    m = sparselmm.lmer(FORMULAS["crossed"], src, weights="w", offset="off")
    _same(reference["crossed"], m)
    assert m.scale_info["chunks"] > 3
    f = sparselmm.deviance_function(FORMULAS["nested"], str(parquet_dir), weights="w", offset="off")
    g = sparselmm.deviance_function(
        FORMULAS["nested"],
        pd.concat([pd.read_parquet(p) for p in files]).reset_index(drop=True),
        weights="w",
        offset="off",
    )
    assert f([0.7, 0.4]) == pytest.approx(g([0.7, 0.4]), rel=1e-12)


def test_parquet_truncated_and_corrupt(parquet_dir, tmp_path):
    pytest.importorskip("pyarrow")
    good = sorted(parquet_dir.glob("*.parquet"))
    blob = good[1].read_bytes()
    (tmp_path / "a.parquet").write_bytes(good[0].read_bytes())
    (tmp_path / "b.parquet").write_bytes(blob[: len(blob) // 2])  # truncated
    with pytest.raises(DataError, match=r"b\.parquet"):
        sparselmm.lmer(FORMULAS["crossed"], str(tmp_path / "*.parquet"), weights="w", offset="off")
    junk = bytearray(blob)
    junk[4 : len(junk) // 2] = b"\x00" * (len(junk) // 2 - 4)  # footer intact, pages zeroed
    (tmp_path / "b.parquet").write_bytes(bytes(junk))
    with pytest.raises(DataError, match=r"b\.parquet"):
        sparselmm.lmer(FORMULAS["crossed"], str(tmp_path / "*.parquet"), weights="w", offset="off")
    with pytest.raises(DataError, match="No files match"):
        sparselmm.lmer(FORMULAS["crossed"], str(tmp_path / "nothing*.parquet"))


def test_parquet_dtype_differs_between_files(df, tmp_path):
    pytest.importorskip("pyarrow")
    df.iloc[:400].to_parquet(tmp_path / "a.parquet")
    df.iloc[400:].assign(x=df["x"].iloc[400:].astype(str)).to_parquet(tmp_path / "b.parquet")
    with pytest.raises(DataError, match=r"Column 'x' has dtype float64 in .*a\.parquet.* but .* in .*b\.parquet"):
        sparselmm.lmer(FORMULAS["crossed"], str(tmp_path / "*.parquet"), weights="w", offset="off")
    df.iloc[400:].drop(columns="x").to_parquet(tmp_path / "b.parquet")
    with pytest.raises(DataError, match=r"b\.parquet.* lacks the column\(s\) \['x'\]"):
        sparselmm.lmer(FORMULAS["crossed"], str(tmp_path / "*.parquet"), weights="w", offset="off")


# ---- Dask -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", FORMULAS)
def test_dask_threads_equal_in_memory(df, reference, kind):
    dd = pytest.importorskip("dask.dataframe")
    import dask

    ddf = dd.from_pandas(df, npartitions=5)
    with dask.config.set(scheduler="threads"):
        m = sparselmm.lmer(FORMULAS[kind], ddf, weights="w", offset="off")
    _same(reference[kind], m)


def test_dask_progress_bar_by_the_policy(df, capsys):
    dd = pytest.importorskip("dask.dataframe")
    import dask

    ddf = dd.from_pandas(df, npartitions=4)
    with dask.config.set(scheduler="threads"):
        sparselmm.lmer(FORMULAS["crossed"], ddf, weights="w", offset="off")
        assert capsys.readouterr().err == ""  # default: a bar only for passes that last, on a terminal
        sparselmm.lmer(FORMULAS["crossed"], ddf, weights="w", offset="off", progress=True)
    out = capsys.readouterr()
    assert "Completed" in out.err and out.out == ""  # Dask's bar, on stderr


def test_dask_lazy_predictions(df, reference):
    dd = pytest.importorskip("dask.dataframe")
    import dask

    a = reference["crossed"]
    ddf = dd.from_pandas(df, npartitions=4)
    with dask.config.set(scheduler="threads"):
        m = sparselmm.lmer(FORMULAS["crossed"], ddf, weights="w", offset="off")
        fitted = m.fitted()
        assert hasattr(fitted, "compute")  # lazy
        np.testing.assert_allclose(fitted.compute().to_numpy(), a.fitted(), atol=1e-7)
        np.testing.assert_allclose(m.residuals("scaled").compute().to_numpy(), a.residuals("scaled"), atol=1e-7)
        p = m.predict(ddf, re_form="~0")
        assert hasattr(p, "compute")
        np.testing.assert_allclose(p.compute().to_numpy(), a.predict(df, re_form="~0"), atol=1e-7)


_FAILED: set = set()


def _flaky_partition(df, i):
    if i == 1 and i not in _FAILED:  # the first attempt at partition 1 dies, as a lost worker would
        _FAILED.add(i)
        raise OSError("worker lost (simulated)")
    return df.iloc[i * 200 : (i + 1) * 200]


@pytest.fixture(scope="module")
def client():
    pytest.importorskip("dask.dataframe")
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cl:
        with distributed.Client(cl) as c:
            yield c


def test_dask_distributed_local_cluster(df, reference, client):
    import dask.dataframe as dd

    ddf = dd.from_pandas(df, npartitions=6)
    m = sparselmm.lmer(FORMULAS["slope"], ddf, weights="w", offset="off")
    _same(reference["slope"], m)


def test_dask_retry_does_not_double_count(df, reference, client):
    import dask.dataframe as dd

    _FAILED.clear()
    ddf = dd.from_map(lambda i: _flaky_partition(df, i), range(4), meta=df.iloc[:0])
    m = sparselmm.lmer(FORMULAS["crossed"], ddf, weights="w", offset="off")
    assert _FAILED == {1}  # the failure happened, and the retried partition counted once
    assert m.nobs == len(df)
    _same(reference["crossed"], m)


def test_cli_parquet_glob(parquet_dir, capsys):
    from sparselmm.cli import main

    code = main(
        ["fit", "--data", str(parquet_dir / "*.parquet"), "--weights", "w", "--offset", "off", FORMULAS["crossed"]]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "read 800 rows in" in out.out and "rows/s" in out.out
    assert out.err == ""  # a bar only for passes that last (sparselmm.progress): not for 800 rows


def test_progress_off(parquet_dir, capsys):
    from sparselmm.scale import ParquetSource

    sparselmm.lmer(FORMULAS["crossed"], ParquetSource(parquet_dir, progress=False), weights="w", offset="off")
    assert capsys.readouterr().err == ""


def test_progress_bars_of_the_passes(parquet_dir, df, capsys):
    """Short passes print nothing by default; progress=True shows the bars (lmer's argument overrides the
    source's own setting, which stays as it was)."""
    from sparselmm.scale import ParquetSource

    glob = str(parquet_dir / "*.parquet")
    sparselmm.lmer(FORMULAS["crossed"], glob, weights="w", offset="off")
    sparselmm.lmer(FORMULAS["crossed"], ChunkedFrames(df, rows=100), weights="w", offset="off")
    assert capsys.readouterr().err == ""
    sparselmm.lmer(FORMULAS["crossed"], glob, weights="w", offset="off", progress=True)
    err = capsys.readouterr().err
    assert "sparselmm level pass" in err and "sparselmm cross-products" in err and "rows" in err
    src = ParquetSource(parquet_dir, progress=True)
    sparselmm.lmer(FORMULAS["crossed"], src, weights="w", offset="off", progress=False)
    assert capsys.readouterr().err == "" and src.progress is True
    with pytest.raises(sparselmm.ModelSpecError, match="progress must be"):
        sparselmm.lmer(FORMULAS["crossed"], glob, progress="loud")


def test_parquet_categorical_column(df, tmp_path):
    pytest.importorskip("pyarrow")
    cat = df.assign(item=pd.Categorical(df["item"], categories=sorted(df["item"].unique())[::-1]))
    cat.iloc[:500].to_parquet(tmp_path / "a.parquet", row_group_size=128)
    cat.iloc[500:].to_parquet(tmp_path / "b.parquet", row_group_size=128)
    a = sparselmm.lmer(FORMULAS["crossed"], cat, weights="w", offset="off")
    m = sparselmm.lmer(FORMULAS["crossed"], str(tmp_path), weights="w", offset="off")
    _same(a, m)
    assert list(m.ranef()["item"].index) == list(a.ranef()["item"].index)


def test_in_memory_path_needs_no_extras():
    """pyarrow and dask are imported only for parquet / Dask data."""
    import subprocess
    import sys

    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in ('pyarrow', 'dask', 'distributed', 'tqdm'):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import numpy as np, pandas as pd, sparselmm\n"
        "from sparselmm.scale import ChunkedFrames\n"
        "rng = np.random.default_rng(0)\n"
        "d = pd.DataFrame({'g': rng.integers(0, 10, 200), 'y': rng.normal(size=200)})\n"
        "a = sparselmm.lmer('y ~ 1 + (1|g)', d)\n"
        "b = sparselmm.lmer('y ~ 1 + (1|g)', ChunkedFrames(d, rows=50, progress=True))\n"
        "assert abs(a.objective - b.objective) < 1e-9 * abs(a.objective)\n"
        "try:\n"
        "    sparselmm.lmer('y ~ 1 + (1|g)', '/nonexistent/x.parquet')\n"
        "except sparselmm.DataError:\n"
        "    pass\n"
        "assert 'pyarrow' not in sys.modules and 'dask' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_add_inplace_repeated_cells_queue_nothing(df):
    """Rows that repeat cells already in the total are added in place: nothing is queued, the pattern is
    the cells' (memory follows the cells, not the rows), and the sum equals ``+`` and the whole chunk."""
    from sparselmm.scale.fit import streamed_setup

    plan = streamed_setup(FORMULAS["crossed"], ChunkedFrames(df, rows=300), True, "w", "off", "drop", "auto")[3]
    step = 100
    parts = [plan.partial(df.iloc[i : i + step], f"c{i}") for i in range(0, len(df), step)]
    total = plan.partial(df.iloc[:step], "first")
    for p in parts[1:]:
        total.add_inplace(p)
    nnz_cells = total.flush().ZtWZ.nnz
    queued = []
    for _ in range(3):  # the same rows again: every entry is already stored
        for p in parts:
            total.add_inplace(p)
            queued.append(sum(m[2].size for m in total.__dict__.get("_pending", [])))
    assert max(queued) == 0 and total.ZtWZ.nnz == nnz_cells
    whole = plan.partial(df, "all")
    np.testing.assert_allclose(total.ZtWZ.toarray(), 4 * whole.ZtWZ.toarray(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(total.ZtWA, 4 * whole.ZtWA, rtol=1e-12, atol=1e-12)
    assert total.n == 4 * len(df)
    summed = sum(parts)
    np.testing.assert_allclose(summed.ZtWZ.toarray(), whole.ZtWZ.toarray(), rtol=1e-12, atol=1e-12)


# ---- inference that needs only cross-products (issue 23, item 5) ---------------------------------------
DATA = Path(__file__).resolve().parent / "data"
CONTRAST_CASES = json.loads((DATA / "contrasts_lmertest.json").read_text())["cases"]


@pytest.mark.parametrize("name", list(CONTRAST_CASES))
def test_term_contrasts_from_cross_products(name):
    """lmerTest's contrasts of types I-III (tests/test_contrasts.py's cases: a missing cell, collinear and
    sum-coded columns, no intercept, cells without margins) from a fit that holds XᵀX, not X, equal the
    in-memory fit's."""
    from sparselmm.inference.contrasts import term_contrasts

    case = CONTRAST_CASES[name]
    formula, frame = case["formula"].replace("^", "**"), contrast_frames()[case["data"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rank deficiency, singular fits: not under test
        a = sparselmm.lmer(formula, frame)
        m = sparselmm.lmer(formula, ChunkedFrames(frame, rows=37))
    for kind in (1, 2, 3):
        ta, tm = term_contrasts(a.design, kind), term_contrasts(m.design, kind)
        assert list(tm) == list(ta)
        for label in ta:
            assert tm[label].shape == ta[label].shape
            np.testing.assert_allclose(tm[label], ta[label], rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    "formula",
    [
        "y ~ x * f + (1 | u) + (1 | item)",
        "y ~ poly(x, 2) * f + log(w) + (x | u)",
        "y ~ C(k) * x + scale(off) + (1 | item)",
    ],
)
def test_anova_and_contest_by_term_from_parquet(df, tmp_path, formula):
    pytest.importorskip("pyarrow")
    data = df.assign(k=np.round(df["w"] * 2))
    for i, part in enumerate(np.array_split(np.arange(len(data)), 3)):
        data.iloc[part].to_parquet(tmp_path / f"p{i}.parquet", row_group_size=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # stateful transforms' state from the first rows: the same here
        a = sparselmm.lmer(formula, data)
        m = sparselmm.lmer(formula, str(tmp_path / "*.parquet"))
    for kind in (1, 2, 3):
        for ddf in ("Satterthwaite", "Kenward-Roger", "lme4"):
            ta, tm = sparselmm.anova(a, type=kind, ddf=ddf), sparselmm.anova(m, type=kind, ddf=ddf)
            assert list(tm.index) == list(ta.index) and tm.attrs["heading"] == ta.attrs["heading"]
            np.testing.assert_allclose(tm.to_numpy(dtype=float), ta.to_numpy(dtype=float), rtol=1e-6)
    term = list(sparselmm.anova(a).index)[-1]
    np.testing.assert_allclose(m.contest(term).to_numpy(), a.contest(term).to_numpy(), rtol=1e-6)
    with pytest.raises(sparselmm.ModelSpecError, match="not a fixed-effect term"):
        m.contest("nonsense")


def test_likelihood_ratio_tests_between_parquet_fits(df, parquet_dir, reference, tmp_path):
    """anova(m0, m1, m2) on fits from parquet equals the in-memory table; the rows are checked by their sums
    and source, nestedness by names (and spans on made-up rows); a mix with an in-memory fit works."""
    glob = str(parquet_dir / "*.parquet")
    small = "y ~ x + (1 | u) + (1 | item)"
    large = "y ~ x + f + (x | u) + (1 | item)"
    fits = [sparselmm.lmer(f, glob, weights="w", offset="off") for f in (small, FORMULAS["crossed"], large)]
    mem = [sparselmm.lmer(f, df, weights="w", offset="off") for f in (small, FORMULAS["crossed"], large)]
    t, r = sparselmm.anova(*fits), sparselmm.anova(*mem)
    assert list(t.index) == list(r.index) and t.attrs["refitted"] == r.attrs["refitted"]
    np.testing.assert_allclose(t.to_numpy(dtype=float), r.to_numpy(dtype=float), rtol=1e-8)
    mixed = sparselmm.anova(mem[0], fits[1])
    np.testing.assert_allclose(mixed.to_numpy(dtype=float), r.iloc[:2].to_numpy(dtype=float), rtol=1e-8)
    # nested as functions of the variables though not by column name: x in the span of poly(x, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        poly = sparselmm.lmer("y ~ poly(x, 2) + (1 | u) + (1 | item)", glob, weights="w", offset="off")
    assert sparselmm.anova(fits[0], poly).loc["m1", "Df"] == 1
    with pytest.raises(sparselmm.ModelSpecError, match=r"poly\(x, 2\)\[2\].*neither columns"):
        sparselmm.anova(fits[1], poly)  # f is not in poly's span, poly's square not in f's model
    with pytest.raises(DataError, match="one fit has weights and the other not"):
        sparselmm.anova(fits[0], sparselmm.lmer(FORMULAS["crossed"], glob, offset="off"))
    with pytest.raises(sparselmm.ModelSpecError, match="different offsets"):
        sparselmm.anova(fits[0], sparselmm.lmer(FORMULAS["crossed"], glob, weights="w"))
    shifted = df.assign(y=df["y"] + 1e-3)
    with pytest.raises(DataError, match="sums of the responses differ"):
        sparselmm.anova(fits[0], sparselmm.lmer(FORMULAS["crossed"], shifted, weights="w", offset="off"))
    for i, part in enumerate(np.array_split(np.arange(len(df)), 2)):
        df.iloc[part].to_parquet(tmp_path / f"copy{i}.parquet")
    with pytest.raises(DataError, match="different sources"):
        sparselmm.anova(fits[0], sparselmm.lmer(FORMULAS["crossed"], str(tmp_path), weights="w", offset="off"))
    other = sparselmm.lmer("y ~ x + f + (1 | u) + (1 | item) + (0 + w | u)", glob, weights="w", offset="off")
    with pytest.raises(sparselmm.ModelSpecError, match=r"random-effects term \(0 \+ w \| u\).*coefficient names"):
        sparselmm.anova(fits[2], other)


def test_row_free_draws_have_the_in_memory_distribution(df, reference, monkeypatch):
    """The bootstrap of a fit from chunks draws each response's ZᵀWe, XᵀWe and eᵀWe directly
    (inference/bootstrap_fits.py, _CrossProductSimulator): their means, SDs and correlations with eᵀWe equal
    those of the in-memory simulation (weights and offset), on the dense and the sparse square root of G."""
    from sparselmm.inference import bootstrap_fits as boot
    from sparselmm.inference.replicates import Simulator

    a = reference["crossed"]
    m = sparselmm.lmer(FORMULAS["crossed"], ChunkedFrames(df, rows=200), weights="w", offset="off")
    d, N = a.design, 4000
    centre = d.X @ a.fixef.to_numpy() + d.offset
    for use_u in (False, True):
        sim = Simulator(a, use_u)
        ref = []
        for i in range(N):
            We = sim.draw_deviation(np.random.default_rng(i), centre) * d.weights
            ref.append(np.r_[np.asarray(d.Zt @ We).ravel()[:5], d.X.T @ We, (We / d.weights) @ We])
        ref = np.array(ref)
        for dense_max in (10_000, 0):
            monkeypatch.setattr(boot, "ROW_FREE_DENSE_MAX", dense_max)
            free = boot._CrossProductSimulator(m, use_u)
            assert (free.R is None) == (dense_max == 0)
            got = []
            for i in range(N):
                r = free.draw(np.random.default_rng(10**6 + i))
                got.append(np.r_[r.ZtWe[:5], r.XtWe, r.eWe])
            got = np.array(got)
            z = (got.mean(0) - ref.mean(0)) / np.sqrt((got.var(0) + ref.var(0)) / N)
            assert np.all(np.abs(z) < 4.5), z
            np.testing.assert_allclose(got.std(0), ref.std(0), rtol=0.1)
            np.testing.assert_allclose(np.corrcoef(got.T)[-1], np.corrcoef(ref.T)[-1], atol=0.1)


def test_bootstrap_from_parquet_matches_in_memory(parquet_dir, reference, monkeypatch):
    """m.bootstrap() of a fit from parquet: means and SDs of every statistic equal the in-memory bootstrap's
    to Monte-Carlo tolerance; seeds reproduce across workers; custom statistics, use_u, BOBYQA replicates
    (control=) and the sparse square root of G work."""
    from sparselmm.inference import bootstrap_fits as boot

    a = reference["crossed"]
    m = sparselmm.lmer(FORMULAS["crossed"], str(parquet_dir / "*.parquet"), weights="w", offset="off")
    N = 300
    ba, bm = a.bootstrap(N, seed=1, progress=False), m.bootstrap(N, seed=2, progress=False)
    assert len(bm.failures) == 0 and list(bm.draws.columns) == list(ba.draws.columns)
    sa, sm = ba.summary(), bm.summary()
    se = np.sqrt((sa["std. error"] ** 2 + sm["std. error"] ** 2) / N)
    assert np.all(np.abs(sm["mean"] - sa["mean"]) < 4.5 * se), (sm["mean"] - sa["mean"]) / se
    np.testing.assert_allclose(sm["std. error"], sa["std. error"], rtol=0.25)
    pd.testing.assert_series_equal(bm.t0, ba.t0, rtol=1e-6)
    again = m.bootstrap(12, seed=5, progress=False)
    two = m.bootstrap(12, seed=5, progress=False, n_jobs=2)
    np.testing.assert_allclose(two.draws.to_numpy(), again.draws.to_numpy(), rtol=1e-8, atol=1e-10)
    fixef = m.bootstrap(12, seed=5, func=lambda r: r.fixef, progress=False)
    np.testing.assert_allclose(fixef.draws.to_numpy(), again.draws.iloc[:, -4:].to_numpy(), rtol=1e-9, atol=1e-12)
    slow = m.bootstrap(12, seed=5, progress=False, control={"ftol_abs": 1e-10, "xtol_abs": 1e-8})
    np.testing.assert_allclose(slow.draws.to_numpy(), again.draws.to_numpy(), atol=1e-3)
    assert m.bootstrap(5, seed=5, use_u=True, progress=False).failures.empty
    monkeypatch.setattr(boot, "ROW_FREE_DENSE_MAX", 0)
    sparse = m.bootstrap(12, seed=5, progress=False)
    assert sparse.failures.empty and np.isfinite(sparse.draws.to_numpy()).all()  # other draws: q + p normals
    ci = m.confint(method="boot", nsim=40, seed=1, progress=False)
    assert list(ci.index) == list(a.confint(method="Wald").index)
