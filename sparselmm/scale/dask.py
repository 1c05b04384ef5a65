"""A Dask DataFrame as a chunked source (the optional extra ``sparselmm[dask]``).

Each pass maps a pure function over the partitions (``to_delayed``) and sums the partial results with a
binary tree of ``+`` tasks, computed on whatever scheduler is active: threads, processes, or a
``dask.distributed`` client (then with ``retries``). **Retries do not double count:** the sum is a node
of a task graph whose leaves are the partitions, each one key. A lost or failed task is recomputed
under the same key and its result replaces, never joins, the missing one; every ``+`` task consumes
exactly one result per input key. Nothing is accumulated in place across tasks (no shared state, no
side effects), so a partition counts once however many times it is computed
(``tests/test_scale.py::test_dask_retry_does_not_double_count`` fails a partition's first attempt).
"""

from __future__ import annotations

import operator

import pandas as pd

from ..errors import DataError
from .columns import column_kind
from .source import Source

__all__ = ["DaskSource"]


def _tree_sum(dask, items):
    add = dask.delayed(operator.add, pure=True)
    while len(items) > 1:
        items = [add(items[i], items[i + 1]) if i + 1 < len(items) else items[i] for i in range(0, len(items), 2)]
    return items[0]


def _client():
    try:
        from distributed import default_client
    except ImportError:
        return None
    try:
        return default_client()
    except ValueError:
        return None


class DaskSource(Source):
    """A ``dask.dataframe.DataFrame``; ``retries`` are passed to a ``dask.distributed`` client.

    ``progress`` shows Dask's own task progress bar (``dask.diagnostics.ProgressBar``, local schedulers; on
    a distributed cluster use its dashboard) by the package's policy (:mod:`sparselmm.progress`): None
    (default) after 2 s on a terminal or in a notebook, True always, False never. Rows per second are in
    the result's ``scale_info``.
    """

    def __init__(self, ddf, retries: int = 2, progress: bool | None = None, label: str = "a Dask DataFrame"):
        self.ddf, self.retries, self.label = ddf, int(retries), label
        self.progress = progress

    def columns(self) -> list[str]:
        return list(self.ddf.columns)

    def key(self):
        name = getattr(self.ddf, "_name", None)  # the graph's deterministic name: same data, same name
        return None if name is None else ("dask", name)

    def kinds(self) -> dict[str, str]:
        meta = self.ddf._meta
        return {c: column_kind(meta[c]) for c in meta.columns}

    def reduce(self, fn, columns, desc, inplace=False):
        import time

        import dask

        t0 = time.perf_counter()
        parts = self.ddf[list(columns)].to_delayed()
        if not parts:
            raise DataError(f"{self.label} has no partitions.")
        call = dask.delayed(_labelled, pure=True)
        mapped = [call(fn, part, f"partition {i} of {self.label}") for i, part in enumerate(parts)]
        total = _tree_sum(dask, mapped)
        client = _client()
        if client is not None:
            result = client.compute(total, retries=self.retries).result()
        else:
            from ..progress import dask_progress

            with dask_progress(self.progress):
                (result,) = dask.compute(total)
        rows = getattr(result, "n", 0) + getattr(result, "n_dropped", 0)
        return result, rows, time.perf_counter() - t0

    def map_rows(self, fn, name: str):
        """``fn(partition) -> Series`` lazily over the partitions (fitted values, residuals)."""
        return self.ddf.map_partitions(fn, meta=pd.Series(dtype=float, name=name))


def _labelled(fn, frame, label):
    return fn(frame, label)
