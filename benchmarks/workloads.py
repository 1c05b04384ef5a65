"""Benchmark workloads: model formulas, data generators and the on-disk data cache.

Every workload's data is written once, as CSV, to ``benchmarks/.cache/`` and then read by every
program (sparselmm, lme4 through Rscript, statsmodels), so all of them fit identical bytes. The exception
is a dataset in ``PARQUET_DATASETS`` (``ml32m``): written block by block to one parquet file and fitted by
sparselmm alone, through its out-of-core reader (``sparselmm.lmer(formula, "file.parquet")``). Grouping
factors are stored as integer codes and converted to factors after reading (``astype("category")`` in
pandas, ``factor()`` in R); both sort integer levels numerically, so level order agrees too.

Synthetic data use ``numpy.random.default_rng`` with a fixed seed per workload. A file name carries
``GENERATOR_VERSION``: bump it when a generator changes so stale caches are not reused.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("SPARSELMM_BENCH_CACHE", HERE / ".cache"))
GENERATOR_VERSION = 1

__all__ = [
    "CACHE",
    "WORKLOADS",
    "Workload",
    "data_path",
    "elp_frame",
    "ensure_data",
    "fit_data",
    "get",
    "movielens_frame",
    "out_of_core",
    "read_frame",
    "write_movielens_parquet",
]


@dataclass(frozen=True)
class Workload:
    """One model on one data set.

    ``factors`` are the columns converted to factors after reading; ``levels`` lists the number of
    levels of each grouping factor (for reports and plots); ``tags`` select workloads for a run:
    ``quick`` (the ``--quick`` set), ``default`` (a full run), ``large`` (only with ``--large``),
    ``sweep_n`` and ``sweep_levels`` (series in the scaling plot), ``movielens`` (the issue-19 shapes:
    ``ml1m`` and ``elp`` also run by default; ``ml10m`` and ``ml32m``, also tagged ``large`` so scripts that
    skip heavy workloads skip them, run only when named by ``--only`` or ``--tag``, not with ``--large``).
    ``cap``: seconds per sparselmm and lme4 fit when ``run.py --cap`` is not given (default 600).
    """

    name: str
    formula: str
    reml: bool
    data: str  # key into DATASETS
    factors: tuple[str, ...]
    description: str
    tags: tuple[str, ...] = ("default",)
    # statsmodels MixedLM translation: groups column, re_formula, vc_formula; None = not attempted
    statsmodels: dict | None = None
    # attempt statsmodels in --quick mode too (only where it is known to finish fast)
    statsmodels_quick: bool = False
    pair: str | None = None  # replication pair this workload belongs to ("1x" / "10x" by tag)
    cap: float | None = None  # seconds per sparselmm / lme4 fit unless run.py --cap is given
    extra: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------
# data generators (each returns a DataFrame with integer-coded grouping factors)
# --------------------------------------------------------------------------------------------------


def _insteval() -> pd.DataFrame:
    from sparselmm import datasets

    df = datasets.load("InstEval")
    out = pd.DataFrame({"y": df["y"].astype(np.int64)})
    for col in ("s", "d", "dept", "service"):
        # labels are integers in lme4's InstEval ("1", "2", ...; service is "0"/"1")
        out[col] = df[col].astype(str).astype(np.int64)
    return out


def _sleepstudy() -> pd.DataFrame:
    from sparselmm import datasets

    df = datasets.load("sleepstudy")
    return pd.DataFrame(
        {
            "Reaction": df["Reaction"].astype(float),
            "Days": df["Days"].astype(float),
            "Subject": df["Subject"].astype(str).astype(np.int64),
        }
    )


def _activity(rng: np.random.Generator, n_levels: int, sigma: float) -> np.ndarray:
    """Sampling weights of ``n_levels`` levels with lognormal (heavy-tailed) activity, summing to 1."""
    p = rng.lognormal(0.0, sigma, n_levels)
    return p / p.sum()


def _heavy_tailed_codes(rng: np.random.Generator, n_levels: int, n: int, sigma: float) -> np.ndarray:
    """``n`` draws from ``n_levels`` levels with lognormal (heavy-tailed) activity; every level occurs."""
    p = _activity(rng, n_levels, sigma)
    codes = np.concatenate([np.arange(n_levels), rng.choice(n_levels, n - n_levels, p=p)])
    return codes


def crossed_frame(seed: int, n: int, n_users: int, n_items: int) -> pd.DataFrame:
    """Users × items with heavy-tailed activity on both sides (lognormal sampling weights).

    ``y = 1 + 0.5 x + b_user + b_item + e`` with ``b_user ~ N(0, 0.8²)``, ``b_item ~ N(0, 0.5²)``,
    ``e ~ N(0, 1)``. Every user and every item occurs at least once, so the level counts are exact.
    """
    if n < max(n_users, n_items):
        raise ValueError("need n >= number of levels of each factor")
    rng = np.random.default_rng(seed)
    u = _heavy_tailed_codes(rng, n_users, n, 1.2)
    i = _heavy_tailed_codes(rng, n_items, n, 1.0)
    rng.shuffle(u)
    rng.shuffle(i)
    x = rng.normal(0.0, 1.0, n)
    bu = rng.normal(0.0, 0.8, n_users)
    bi = rng.normal(0.0, 0.5, n_items)
    y = 1.0 + 0.5 * x + bu[u] + bi[i] + rng.normal(0.0, 1.0, n)
    return pd.DataFrame({"y": y, "x": x, "user": u + 1, "item": i + 1})


def replicated_frame(seed: int, n_base: int, n_users: int, n_items: int, times: int) -> pd.DataFrame:
    """The (user, item) rows of ``crossed_frame(seed, n_base, ...)`` repeated ``times`` times.

    The set of (user, item) pairs, hence the pattern of ZᵀZ, is identical for every ``times``; only n
    and the values change. ``x`` and the noise are drawn fresh for each replicate, the random effects
    are shared, so the replicated data are a genuine ``times``-fold larger sample of the same design.
    """
    base = crossed_frame(seed, n_base, n_users, n_items)
    rng = np.random.default_rng(seed + 1000)
    bu = rng.normal(0.0, 0.8, n_users)
    bi = rng.normal(0.0, 0.5, n_items)
    u = np.tile(base["user"].to_numpy() - 1, times)
    i = np.tile(base["item"].to_numpy() - 1, times)
    n = u.size
    x = rng.normal(0.0, 1.0, n)
    y = 1.0 + 0.5 * x + bu[u] + bi[i] + rng.normal(0.0, 1.0, n)
    return pd.DataFrame({"y": y, "x": x, "user": u + 1, "item": i + 1})


def intercept_frame(seed: int, n_groups: int, n: int) -> pd.DataFrame:
    """A small random-intercept design: ``n`` rows in ``n_groups`` equal groups. Model ``y ~ 1 + x + (1 | g)``."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), n // n_groups)
    x = rng.normal(0.0, 1.0, g.size)
    y = 1.0 + 0.5 * x + rng.normal(0.0, 0.8, n_groups)[g] + rng.normal(0.0, 1.0, g.size)
    return pd.DataFrame({"y": y, "x": x, "g": g + 1})


def nested_frame(seed: int, n_schools: int, classes_per_school: int, n: int) -> pd.DataFrame:
    """Pupils in classes in schools; class sizes heavy tailed. Model ``(1 | school/classroom)``."""
    rng = np.random.default_rng(seed)
    n_classes = n_schools * classes_per_school
    cls = _heavy_tailed_codes(rng, n_classes, n, 0.8)
    rng.shuffle(cls)
    school = cls // classes_per_school
    within = cls % classes_per_school  # class label within its school (1..classes_per_school)
    x = rng.normal(0.0, 1.0, n)
    bs = rng.normal(0.0, 0.7, n_schools)
    bc = rng.normal(0.0, 0.4, n_classes)
    y = 2.0 + 0.3 * x + bs[school] + bc[cls] + rng.normal(0.0, 1.0, n)
    return pd.DataFrame({"y": y, "x": x, "school": school + 1, "classroom": within + 1})


def slopes_frame(seed: int, n_groups: int, n: int) -> pd.DataFrame:
    """Correlated random intercepts and slopes in many groups of heavy-tailed size: ``(1 + x | g)``."""
    rng = np.random.default_rng(seed)
    g = _heavy_tailed_codes(rng, n_groups, n, 0.8)
    rng.shuffle(g)
    x = rng.normal(0.0, 1.0, n)
    cov = np.array([[0.8**2, 0.3 * 0.8 * 0.4], [0.3 * 0.8 * 0.4, 0.4**2]])
    b = rng.multivariate_normal([0.0, 0.0], cov, n_groups)
    y = 1.0 + 0.5 * x + b[g, 0] + b[g, 1] * x + rng.normal(0.0, 1.0, n)
    return pd.DataFrame({"y": y, "x": x, "g": g + 1})


def maximal_frame(seed: int, n_subj: int, n_items: int, n_factors: int = 1, missing: float = 0.1) -> pd.DataFrame:
    """Subjects × items, every subject seeing every item once, ``missing`` of the cells dropped at random.

    Within-subject and within-item two-level factors ``a`` (and ``b``, ``c``) coded ±0.5 and
    counterbalanced (Latin-square rules on the subject and item codes), with correlated random intercepts
    and slopes for every factor on both subjects and items: the "maximal" design of psycholinguistics
    (``y ~ a + (1 + a | subj) + (1 + a | item)``; with three factors, the kb07 layout of MixedModels.jl).
    """
    rng = np.random.default_rng(seed)
    s, i = np.meshgrid(np.arange(n_subj), np.arange(n_items), indexing="ij")
    s, i = s.ravel(), i.ravel()
    keep = rng.random(s.size) >= missing
    s, i = s[keep], i[keep]
    rules = [(s + i) % 2, (s // 2 + i) % 2, (s + i // 2) % 2][:n_factors]
    X = np.column_stack([r - 0.5 for r in rules])
    k = n_factors + 1
    Z = np.column_stack([np.ones(s.size), X])

    def effects(m, sd, rho):
        cov = rho * np.outer(sd, sd) + (1 - rho) * np.diag(np.asarray(sd) ** 2)
        return rng.multivariate_normal(np.zeros(k), cov, m)

    bs = effects(n_subj, [0.6] + [0.25] * n_factors, 0.3)
    bi = effects(n_items, [0.4] + [0.2] * n_factors, 0.2)
    beta = np.concatenate([[1.0], 0.3 * np.ones(n_factors)])
    y = (
        np.column_stack([np.ones(s.size), X]) @ beta
        + np.einsum("nk,nk->n", Z, bs[s] + bi[i])
        + rng.normal(0.0, 1.0, s.size)
    )
    out = pd.DataFrame({"y": y})
    for name, col in zip("abc", X.T):
        out[name] = col
    out["subj"], out["item"] = s + 1, i + 1
    return out


# --- MovieLens and English Lexicon Project shapes (issue 19): owners (users, items) each holding a given
# number of distinct targets (items, subjects); generated in blocks of owners so the largest can go to
# parquet chunk by chunk. Codes are int32; the (owner, target) keys are int64 only while a block is drawn.

CHUNK_ROWS = 2_000_000  # rows per block of owners (and parquet row group); part of the data's definition


def _capped_counts(rng: np.random.Generator, total: int, p: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """``lo`` each plus a multinomial share (weights ``p``) of the rest, none above ``hi``: the excess over
    ``hi`` is drawn again among the levels below it until none is left. Sums to ``total``."""
    counts = np.full(p.size, lo, dtype=np.int64)
    rest = total - lo * p.size
    if rest < 0 or total > hi * p.size:
        raise ValueError(f"{total:,} rows cannot give {p.size:,} levels between {lo} and {hi} rows each")
    w = p.copy()
    while rest > 0:
        counts += rng.multinomial(rest, w / w.sum())
        rest = int(np.maximum(counts - hi, 0).sum())
        counts = np.minimum(counts, hi)
        w[counts >= hi] = 0.0
    return counts


def _seed_rows(rng: np.random.Generator, counts: np.ndarray, n_targets: int) -> np.ndarray:
    """One row of every target at a random one of the ``counts.sum()`` rows, as the owner holding it (so
    every target level occurs and no owner gets more seeds than rows); target ``t`` goes to ``owner[t]``."""
    slots = rng.choice(int(counts.sum()), n_targets, replace=False)
    return np.searchsorted(np.cumsum(counts), slots, side="right")


def _distinct_targets(
    rng: np.random.Generator, counts: np.ndarray, n_targets: int, p: np.ndarray | None, keys: np.ndarray
) -> np.ndarray:
    """Sorted keys ``owner * n_targets + target``: owner ``k`` holds ``counts[k]`` distinct targets, the
    given ``keys`` (seeds) among them, the others drawn with weights ``p`` (None: uniform) without
    replacement. Each round draws with replacement, oversampled by 1 / (weight not yet held), and keeps an
    owner's first new targets in draw order (successive sampling); repeats are discarded."""
    keys = np.sort(keys.astype(np.int64))
    cdf = None if p is None else np.cumsum(p) / p.sum()
    while True:
        held_owner = keys // n_targets
        need = counts - np.bincount(held_owner, minlength=counts.size)
        owners = np.flatnonzero(need > 0)
        if owners.size == 0:
            return keys
        if p is None:
            held = np.bincount(held_owner, minlength=counts.size) / n_targets
        else:
            held = np.bincount(held_owner, weights=p[keys % n_targets], minlength=counts.size)
        free = np.maximum(1.0 - held[owners], 1e-3)
        m = np.ceil(need[owners] * 1.2 / free).astype(np.int64) + 2
        cand_owner = np.repeat(owners.astype(np.int64), m)
        if cdf is None:
            target = rng.integers(0, n_targets, cand_owner.size)
        else:
            target = np.minimum(np.searchsorted(cdf, rng.random(cand_owner.size)), n_targets - 1)
        cand = cand_owner * n_targets + target
        del target
        keep = np.zeros(cand.size, dtype=bool)
        keep[np.unique(cand, return_index=True)[1]] = True  # first draw of each key
        pos = np.minimum(np.searchsorted(keys, cand), max(keys.size - 1, 0))
        if keys.size:
            keep &= keys[pos] != cand  # not held already
        cand, cand_owner = cand[keep], cand_owner[keep]
        rank = np.arange(cand.size) - np.searchsorted(cand_owner, cand_owner)  # order among the owner's new
        keys = np.sort(np.concatenate([keys, cand[rank < need[cand_owner]]]))


def _pair_blocks(
    seed: int,
    counts: np.ndarray,
    n_targets: int,
    p: np.ndarray | None,
    seed_owner: np.ndarray,
    chunk_rows: int = CHUNK_ROWS,
):
    """Blocks of consecutive owners of about ``chunk_rows`` rows: ``(owner, target, rng)`` with int32 codes
    sorted by owner then target, and the block's own generator (``default_rng((seed, block))``)."""
    cum = np.cumsum(counts)
    edges = np.searchsorted(cum, np.arange(chunk_rows, int(cum[-1]), chunk_rows), side="left") + 1
    edges = np.unique(np.concatenate([[0], edges[edges < counts.size], [counts.size]]))
    order = np.argsort(seed_owner, kind="stable")  # seeds by owner, to cut them by block
    sorted_owner = seed_owner[order]
    for b, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        rng = np.random.default_rng((seed, b))
        s = slice(*np.searchsorted(sorted_owner, [lo, hi]))
        seeds = (sorted_owner[s].astype(np.int64) - lo) * n_targets + order[s]
        keys = _distinct_targets(rng, counts[lo:hi], n_targets, p, seeds)
        yield (keys // n_targets + lo).astype(np.int32), (keys % n_targets).astype(np.int32), rng


def _codes_frame(columns: dict, factors: dict) -> pd.DataFrame:
    """A frame of ``columns`` and, for each ``name: (codes, n_levels)``, a categorical with levels 1..n."""
    out = pd.DataFrame(columns)
    for name, (codes, n_levels) in factors.items():
        out[name] = pd.Categorical.from_codes(codes, categories=pd.RangeIndex(1, n_levels + 1))
    return out


def movielens_blocks(
    seed: int,
    n: int,
    n_users: int,
    n_items: int,
    min_per_user: int = 20,
    zipf: float = 1.05,
    chunk_rows: int = CHUNK_ROWS,
):
    """The rows of :func:`movielens_frame` in blocks of users: ``(y, user, item)`` arrays (0-based int32
    codes), about ``chunk_rows`` rows each; the only whole-data arrays are per level."""
    if n < n_items:
        raise ValueError("need n >= n_items (every item occurs)")
    rng = np.random.default_rng(seed)
    counts = _capped_counts(rng, n, _activity(rng, n_users, 1.2), min_per_user, max(min_per_user, n_items // 2))
    p = np.empty(n_items)
    p[rng.permutation(n_items)] = np.arange(1, n_items + 1, dtype=float) ** -zipf  # Zipf over shuffled codes
    p /= p.sum()
    seed_owner = _seed_rows(rng, counts, n_items)
    bu = rng.normal(0.0, 0.5, n_users)
    bi = rng.normal(0.0, 0.4, n_items)
    for u, i, brng in _pair_blocks(seed, counts, n_items, p, seed_owner, chunk_rows):
        yield 3.5 + bu[u] + bi[i] + brng.normal(0.0, 0.9, u.size), u, i


def movielens_frame(
    seed: int, n: int, n_users: int, n_items: int, min_per_user: int = 20, zipf: float = 1.05
) -> pd.DataFrame:
    """A synthetic ratings table shaped like MovieLens: exactly ``n`` rows, columns ``y``, ``u``, ``i``.

    Users: at least ``min_per_user`` ratings each, the rest shared with lognormal (σ = 1.2) weights, at
    most ``n_items // 2`` per user. Items: drawn with Zipf(``zipf``) weights over the item codes in random
    order, without replacement within a user, so each (user, item) pair occurs at most once (the most
    popular items saturate: no item has more ratings than there are users); every item occurs at least once.
    ``y = 3.5 + u_user + v_item + e``, sd 0.5, 0.4 and 0.9 (continuous). Rows are sorted by user, then
    item, as MovieLens' ``ratings.csv``; ``u`` and ``i`` are categoricals with levels 1..n_users, 1..n_items.
    Generated in blocks of users (:func:`movielens_blocks`), so the same arguments give the same rows as
    :func:`write_movielens_parquet`.
    """
    parts = list(movielens_blocks(seed, n, n_users, n_items, min_per_user, zipf))
    y, u, i = (np.concatenate(c) for c in zip(*parts))
    del parts
    return _codes_frame({"y": y}, {"u": (u, n_users), "i": (i, n_items)})


def write_movielens_parquet(
    path, seed: int, n: int, n_users: int, n_items: int, min_per_user: int = 20, zipf: float = 1.05
) -> None:
    """:func:`movielens_frame`'s rows written block by block to one parquet file (a row group per block of
    about ``CHUNK_ROWS`` rows): ``y`` float64, ``u`` and ``i`` int32 codes 1..n (as the CSV caches)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("y", pa.float64()), ("u", pa.int32()), ("i", pa.int32())])
    with pq.ParquetWriter(str(path), schema) as writer:
        for y, u, i in movielens_blocks(seed, n, n_users, n_items, min_per_user, zipf):
            table = pa.table({"y": y, "u": u + 1, "i": i + 1}, schema=schema)
            writer.write_table(table, row_group_size=max(table.num_rows, 1))


def elp_frame(seed: int, n: int, n_items: int, n_subjects: int) -> pd.DataFrame:
    """English Lexicon Project shape: ``n`` responses, columns ``y``, ``item``, ``subj`` (categoricals).

    Each item is answered by ``n // n_items`` or one more distinct subjects (balanced), chosen uniformly at
    random, so each subject answers about ``n / n_subjects`` items; every subject occurs, each (item,
    subject) pair at most once. ``y = 3.5 + v_item + u_subj + e``, sd 0.4, 0.5 and 0.9. Rows sorted by item.
    """
    if not n_items <= n <= n_items * n_subjects or n < n_subjects:
        raise ValueError("need max(n_items, n_subjects) <= n <= n_items * n_subjects")
    rng = np.random.default_rng(seed)
    counts = np.full(n_items, n // n_items, dtype=np.int64)
    counts[rng.choice(n_items, n % n_items, replace=False)] += 1
    seed_owner = _seed_rows(rng, counts, n_subjects)
    bi = rng.normal(0.0, 0.4, n_items)
    bs = rng.normal(0.0, 0.5, n_subjects)
    parts = [
        (3.5 + bi[i] + bs[s] + brng.normal(0.0, 0.9, i.size), i, s)
        for i, s, brng in _pair_blocks(seed, counts, n_subjects, None, seed_owner)
    ]
    y, i, s = (np.concatenate(c) for c in zip(*parts))
    return _codes_frame({"y": y}, {"item": (i, n_items), "subj": (s, n_subjects)})


# name -> (generator, float format). Generators are deterministic.
DATASETS: dict[str, Callable[[], pd.DataFrame]] = {
    "InstEval": _insteval,
    "sleepstudy": _sleepstudy,
    "intercept_1k": lambda: intercept_frame(142, 50, 1_000),
    # synthetic crossed sweep over n (levels grow with n)
    "crossed_1e4": lambda: crossed_frame(101, 10_000, 1_000, 1_000),
    "crossed_1e5": lambda: crossed_frame(102, 100_000, 10_000, 2_000),
    "crossed_1e6": lambda: crossed_frame(103, 1_000_000, 50_000, 5_000),
    "crossed_1e7": lambda: crossed_frame(104, 10_000_000, 100_000, 10_000),
    # synthetic crossed sweep over levels at fixed n = 2e5
    "levels_2e3": lambda: crossed_frame(111, 200_000, 2_000, 200),
    "levels_1e4": lambda: crossed_frame(112, 200_000, 10_000, 1_000),
    "levels_4e4": lambda: crossed_frame(113, 200_000, 40_000, 4_000),
    # replication pair: identical ZᵀZ pattern, n × 1 and n × 10
    "rep_1x": lambda: replicated_frame(121, 50_000, 5_000, 1_000, 1),
    "rep_10x": lambda: replicated_frame(121, 50_000, 5_000, 1_000, 10),
    "nested": lambda: nested_frame(131, 1_000, 10, 200_000),
    "slopes": lambda: slopes_frame(141, 20_000, 200_000),
    # maximal crossed designs (issue #12): random slopes on subjects and items
    "maximal_60x40": lambda: maximal_frame(151, 60, 40),
    "maximal_600x400": lambda: maximal_frame(152, 600, 400),
    "kb07": lambda: maximal_frame(153, 56, 32, n_factors=3, missing=0.0),
    "maximal_1e6": lambda: maximal_frame(154, 2_000, 600),
    # issue 19: MovieLens and English Lexicon Project shapes (sizes of the real data sets)
    "ml1m": lambda: movielens_frame(191, 1_000_209, 6_040, 3_706),
    "elp": lambda: elp_frame(192, 2_745_952, 80_962, 814),
    "ml10m": lambda: movielens_frame(193, 10_000_054, 69_878, 10_677),
}

# name -> writer of a parquet file (path): data generated and fitted out of core
PARQUET_DATASETS: dict[str, Callable[[Path], None]] = {
    "ml32m": lambda path: write_movielens_parquet(path, 194, 32_000_204, 200_948, 84_432),
}

_CROSSED_SM = {"groups": "one", "re_formula": "0", "vc_formula": {"user": "0 + C(user)", "item": "0 + C(item)"}}
_CROSSED = "y ~ 1 + x + (1 | user) + (1 | item)"


def _crossed(name: str, tags: tuple[str, ...], desc: str, sm_quick: bool = False, pair: str | None = None):
    return Workload(
        name=name,
        formula=_CROSSED,
        reml=True,
        data=name,
        factors=("user", "item"),
        description=desc,
        tags=tags,
        statsmodels=_CROSSED_SM,
        statsmodels_quick=sm_quick,
        pair=pair,
    )


WORKLOADS: list[Workload] = [
    Workload(
        "insteval_ml",
        "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)",
        False,
        "InstEval",
        ("s", "d", "dept", "service"),
        "lme4's InstEval, ML (73 421 rows; 2 972 s × 1 128 d × 28 dept:service)",
        tags=("quick", "default"),
        statsmodels={
            "groups": "one",
            "re_formula": "0",
            "vc_formula": {"s": "0 + C(s)", "d": "0 + C(d)", "ds": "0 + C(dept):C(service)"},
        },
    ),
    Workload(
        "insteval_reml",
        "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept:service)",
        True,
        "InstEval",
        ("s", "d", "dept", "service"),
        "InstEval, REML",
        tags=("default",),
    ),
    Workload(
        "sleepstudy",
        "Reaction ~ Days + (Days | Subject)",
        True,
        "sleepstudy",
        ("Subject",),
        "sleepstudy, REML (180 rows, 18 subjects): small-model overhead",
        tags=("quick", "default"),
        statsmodels={"groups": "Subject", "re_formula": "~Days"},
        statsmodels_quick=True,
    ),
    Workload(
        "intercept_1k",
        "y ~ 1 + x + (1 | g)",
        True,
        "intercept_1k",
        ("g",),
        "random intercept, REML (1,000 rows, 50 groups of 20): small-model overhead",
        tags=("quick", "default"),
        statsmodels={"groups": "g"},
        statsmodels_quick=True,
    ),
    _crossed("crossed_1e4", ("quick", "default", "sweep_n"), "crossed users × items, n=1e4, 1e3 × 1e3 levels"),
    _crossed("crossed_1e5", ("default", "sweep_n"), "crossed, n=1e5, 1e4 × 2e3 levels"),
    _crossed("crossed_1e6", ("default", "sweep_n"), "crossed, n=1e6, 5e4 × 5e3 levels"),
    _crossed("crossed_1e7", ("large", "sweep_n"), "crossed, n=1e7, 1e5 × 1e4 levels (only with --large)"),
    _crossed("levels_2e3", ("default", "sweep_levels"), "crossed, n=2e5, 2e3 × 2e2 levels"),
    _crossed("levels_1e4", ("default", "sweep_levels"), "crossed, n=2e5, 1e4 × 1e3 levels"),
    _crossed("levels_4e4", ("default", "sweep_levels"), "crossed, n=2e5, 4e4 × 4e3 levels"),
    _crossed("rep_1x", ("quick", "default", "rep"), "replication pair base: n=5e4, 5e3 × 1e3 levels", pair="1x"),
    _crossed("rep_10x", ("quick", "default", "rep"), "the same rows × 10 (n=5e5, identical ZᵀZ pattern)", pair="10x"),
    Workload(
        "maximal_60x40",
        "y ~ 1 + a + (1 + a | subj) + (1 + a | item)",
        True,
        "maximal_60x40",
        ("subj", "item"),
        "maximal crossed, 60 subjects × 40 items, 2 × 2 blocks, 10 % cells missing",
        tags=("quick", "default", "maximal"),
    ),
    Workload(
        "maximal_600x400",
        "y ~ 1 + a + (1 + a | subj) + (1 + a | item)",
        True,
        "maximal_600x400",
        ("subj", "item"),
        "maximal crossed, 600 × 400, 2 × 2 blocks, 10 % missing",
        tags=("default", "maximal"),
    ),
    Workload(
        "kb07",
        "y ~ 1 + a * b * c + (1 + a + b + c | subj) + (1 + a + b + c | item)",
        True,
        "kb07",
        ("subj", "item"),
        "kb07-sized: 56 subjects × 32 items, three 2-level factors, 4 × 4 blocks (20 θ)",
        tags=("quick", "default", "maximal"),
    ),
    Workload(
        "maximal_1e6",
        "y ~ 1 + a + (1 + a | subj) + (1 + a | item)",
        True,
        "maximal_1e6",
        ("subj", "item"),
        "maximal crossed, 2,000 × 600, 1.08e6 rows, 2 × 2 blocks",
        tags=("default", "maximal"),
    ),
    Workload(
        "nested",
        "y ~ 1 + x + (1 | school/classroom)",
        True,
        "nested",
        ("school", "classroom"),
        "nested pupils/classes/schools, n=2e5, 1e3 schools × 10 classes",
        tags=("default",),
        statsmodels={"groups": "school", "re_formula": "1", "vc_formula": {"classroom": "0 + C(classroom)"}},
    ),
    Workload(
        "slopes",
        "y ~ 1 + x + (1 + x | g)",
        True,
        "slopes",
        ("g",),
        "correlated random slopes, n=2e5, 2e4 groups",
        tags=("default",),
        statsmodels={"groups": "g", "re_formula": "~x"},
    ),
]

_ML = "y ~ 1 + (1 | u) + (1 | i)"
WORKLOADS += [
    Workload(
        "ml1m",
        _ML,
        False,
        "ml1m",
        ("u", "i"),
        "MovieLens-1M shape, ML: 1,000,209 ratings, 6,040 users × 3,706 items (Zipf items)",
        tags=("default", "movielens"),
        cap=3600.0,
    ),
    Workload(
        "elp",
        "y ~ 1 + (1 | item) + (1 | subj)",
        False,
        "elp",
        ("item", "subj"),
        "English Lexicon Project shape, ML: 2,745,952 responses, 80,962 items × 814 subjects",
        tags=("default", "movielens"),
        cap=3600.0,
    ),
    Workload(
        "ml10m",
        _ML,
        False,
        "ml10m",
        ("u", "i"),
        "MovieLens-10M shape, ML: 10,000,054 ratings, 69,878 users × 10,677 items (only when selected)",
        tags=("movielens", "large"),
        cap=3600.0,
    ),
    Workload(
        "ml32m",
        _ML,
        False,
        "ml32m",
        ("u", "i"),
        "MovieLens-32M shape, ML, from parquet (sparselmm only): 32,000,204 ratings, 200,948 users × "
        "84,432 items (only when selected)",
        tags=("movielens", "large"),
        cap=3600.0,
    ),
]

_BY_NAME = {w.name: w for w in WORKLOADS}


def get(name: str) -> Workload:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown workload {name!r}; known: {', '.join(_BY_NAME)}") from None


def data_path(dataset: str) -> Path:
    suffix = "parquet" if dataset in PARQUET_DATASETS else "csv"
    return CACHE / f"{dataset}.v{GENERATOR_VERSION}.{suffix}"


def out_of_core(workload: Workload) -> bool:
    """True when the workload's data are a parquet file fitted by sparselmm's out-of-core reader only."""
    return workload.data in PARQUET_DATASETS


def ensure_data(dataset: str, verbose: bool = True) -> Path:
    """Generate ``dataset`` into the cache unless it is there already; return its path."""
    path = data_path(dataset)
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f"{path.suffix}.{os.getpid()}.partial")  # two processes may generate at once
    if dataset in PARQUET_DATASETS:
        PARQUET_DATASETS[dataset](tmp)
        rows = None
    else:
        df = DATASETS[dataset]()
        df.to_csv(tmp, index=False, float_format="%.10g")
        rows = len(df)
        del df
    tmp.replace(path)
    if verbose:
        what = f"{rows:,} rows, " if rows is not None else ""
        print(f"  generated {path.name}: {what}{path.stat().st_size / 1e6:.1f} MB", flush=True)
    return path


def read_frame(workload: Workload) -> pd.DataFrame:
    """Read a workload's cached data the way the Python programs see it (factors as categoricals)."""
    path = data_path(workload.data)
    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    for col in workload.factors:
        df[col] = df[col].astype("category")
    return df


def fit_data(workload: Workload) -> pd.DataFrame | str:
    """What sparselmm is given: the parquet file's path for an out-of-core workload, else the frame."""
    return str(data_path(workload.data)) if out_of_core(workload) else read_frame(workload)


def model_columns(workload: Workload) -> int:
    """Number of data columns the model uses (response, covariates, grouping factors)."""
    import re

    names = set(re.findall(r"[A-Za-z_][A-Za-z0-9_.]*", workload.formula))
    return len(names)
