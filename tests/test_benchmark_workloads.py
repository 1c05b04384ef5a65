"""The issue-19 benchmark generators (benchmarks/workloads.py) at a tiny size: shape, levels, unique pairs."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import workloads as wl  # noqa: E402


def _check_pairs(df, owner, target, n, n_owner, n_target):
    assert len(df) == n
    for col, k in ((owner, n_owner), (target, n_target)):
        assert str(df[col].dtype) == "category"
        assert list(df[col].cat.categories) == list(range(1, k + 1))
        assert (df[col].value_counts() > 0).all()  # every level occurs
    assert not df.duplicated([owner, target]).any()
    assert np.isfinite(df["y"]).all()


@pytest.mark.parametrize("n, n_users, n_items, min_per_user", [(5_000, 300, 200, 10), (8_000, 300, 200, 20)])
def test_movielens_frame(n, n_users, n_items, min_per_user):
    df = wl.movielens_frame(7, n, n_users, n_items, min_per_user=min_per_user)
    _check_pairs(df, "u", "i", n, n_users, n_items)
    per_user = df["u"].value_counts()
    assert per_user.min() >= min_per_user
    assert per_user.max() <= n_items // 2
    per_item = df["i"].value_counts()
    assert per_item.max() >= 5 * per_item.median()  # Zipf: the most popular item has many times the median
    # rows sorted by user then item, as MovieLens' ratings.csv
    key = df["u"].cat.codes.to_numpy().astype(np.int64) * n_items + df["i"].cat.codes.to_numpy()
    assert (np.diff(key) > 0).all()
    # deterministic, and the user activity is skewed too (lognormal tail)
    assert df.equals(wl.movielens_frame(7, n, n_users, n_items, min_per_user=min_per_user))
    assert per_user.max() >= 2.5 * per_user.median()


def test_movielens_blocks_match_frame_and_parquet(tmp_path):
    """Generated in blocks of users, the frame and the parquet file hold the same rows."""
    pytest.importorskip("pyarrow")
    import pandas as pd

    args = (11, 6_000, 250, 150)
    blocks = list(wl.movielens_blocks(*args, chunk_rows=1_000))
    assert len(blocks) > 3
    assert sum(len(b[0]) for b in blocks) == 6_000
    path = tmp_path / "ml.parquet"
    wl.write_movielens_parquet(path, *args)
    disk = pd.read_parquet(path)
    frame = wl.movielens_frame(*args)
    assert list(disk.columns) == ["y", "u", "i"] and disk["u"].dtype == np.int32
    np.testing.assert_array_equal(disk["y"].to_numpy(), frame["y"].to_numpy())
    np.testing.assert_array_equal(disk["u"].to_numpy(), frame["u"].astype(int).to_numpy())
    np.testing.assert_array_equal(disk["i"].to_numpy(), frame["i"].astype(int).to_numpy())


def test_elp_frame():
    n, n_items, n_subj = 20_000, 1_500, 60
    df = wl.elp_frame(5, n, n_items, n_subj)
    _check_pairs(df, "item", "subj", n, n_items, n_subj)
    per_item = df["item"].value_counts()
    assert set(per_item.unique()) <= {n // n_items, n // n_items + 1}  # balanced
    per_subj = df["subj"].value_counts()
    assert per_subj.min() > 0.7 * n / n_subj and per_subj.max() < 1.3 * n / n_subj


def test_generators_refuse_impossible_shapes():
    with pytest.raises(ValueError):
        wl.movielens_frame(1, 1_000, 100, 50)  # 100 users × 20 ratings > 1,000 rows
    with pytest.raises(ValueError):
        wl.elp_frame(1, 1_000, 10, 50)  # more rows than item × subject pairs


def test_movielens_workloads_are_opt_in():
    names = {w.name for w in wl.WORKLOADS if "movielens" in w.tags}
    assert names == {"ml1m", "elp", "ml10m", "ml32m"}
    default = {w.name for w in wl.WORKLOADS if "default" in w.tags}
    assert {"ml1m", "elp"} <= default and not {"ml10m", "ml32m"} & default
    for name in names:
        w = wl.get(name)
        assert w.reml is False and w.data in {**wl.DATASETS, **wl.PARQUET_DATASETS}
    assert wl.out_of_core(wl.get("ml32m")) and wl.data_path("ml32m").suffix == ".parquet"
    assert not wl.out_of_core(wl.get("ml10m")) and wl.data_path("ml10m").suffix == ".csv"
