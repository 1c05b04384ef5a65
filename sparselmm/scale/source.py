"""Where chunks of rows come from: :class:`Source`, the protocol every chunked source follows, and
:class:`ChunkedFrames`, pandas frames held or generated in this process. ``ParquetSource``
(:mod:`sparselmm.scale.parquet`) and ``DaskSource`` (:mod:`sparselmm.scale.dask`) are the others.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

import pandas as pd

from ..errors import DataError
from .columns import column_kind

__all__ = ["ChunkedFrames", "Source"]


class Progress:
    """Rows read; the bar on stderr follows ``progress=`` by the package's one policy
    (:func:`sparselmm.progress.progress_bar`: None shows it only after 2 s on a terminal or in a notebook)."""

    def __init__(self, progress, total: int | None, desc: str):
        from ..progress import progress_bar

        self.rows = 0
        self.bar = progress_bar(progress, total, desc, unit="rows", unit_scale=True)

    def update(self, rows: int) -> None:
        self.rows += rows
        if self.bar is not None:
            self.bar.update(rows)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Source:
    """Where chunks of rows come from. Subclasses: :class:`ChunkedFrames`, ``ParquetSource``, ``DaskSource``.

    A local source yields ``(label, frame)`` pairs from :meth:`chunks` (called once per pass) and is
    summed in this process; :class:`~sparselmm.scale.dask.DaskSource` overrides :meth:`reduce`.
    """

    label = "chunks"
    progress = None  # the passes' bar: None (after 2 s, on a terminal or in a notebook), True, False

    def columns(self) -> list[str]:
        raise NotImplementedError

    def kinds(self) -> dict[str, str]:
        """``"numeric"`` or ``"categorical"`` for each column, from the schema or the first chunk."""
        raise NotImplementedError

    def total_rows(self) -> int | None:
        return None

    def key(self):
        """What identifies the data read (files with their sizes and times, a Dask graph's name), or None
        when unknown; two fits with the same key read the same rows (used by likelihood-ratio tests)."""
        return None

    def chunks(self, columns: list[str]) -> Iterator[tuple[str, pd.DataFrame]]:
        raise NotImplementedError

    def reduce(self, fn: Callable, columns: list[str], desc: str, inplace: bool = False):
        """``fn(frame, label)`` on every chunk, summed. Returns ``(total, rows read, seconds)``."""
        bar = Progress(self.progress, self.total_rows(), desc)
        total = None
        t0 = time.perf_counter()
        try:
            for label, frame in self.chunks(columns):
                part = fn(frame, label)
                if total is None:
                    total = part
                elif inplace:
                    total.add_inplace(part)
                else:
                    total = total + part
                bar.update(len(frame))
        finally:
            bar.close()
        return total, bar.rows, time.perf_counter() - t0


class ChunkedFrames(Source):
    """pandas frames read one at a time: a DataFrame cut into ``rows``-row chunks, a list of frames, or a
    callable returning an iterable of frames (called once per pass, so a generator over files works).
    """

    def __init__(self, data, rows: int = 100_000, progress: bool | None = None, label: str = "chunked frames"):
        self.data, self.rows, self.progress, self.label = data, int(rows), progress, label
        self._first: pd.DataFrame | None = None

    def _frames(self) -> Iterable[pd.DataFrame]:
        if isinstance(self.data, pd.DataFrame):
            return (self.data.iloc[i : i + self.rows] for i in range(0, len(self.data), self.rows))
        if callable(self.data):
            return self.data()
        return iter(self.data)

    def _head(self) -> pd.DataFrame:
        if self._first is None:
            if isinstance(self.data, pd.DataFrame):
                self._first = self.data.iloc[:0]
            else:
                first = next(iter(self._frames()), None)
                if first is None:
                    raise DataError(f"{self.label} has no chunks.")
                self._first = first.iloc[:0]
        return self._first

    def columns(self) -> list[str]:
        return list(self._head().columns)

    def kinds(self) -> dict[str, str]:
        head = self._head()
        return {c: column_kind(head[c]) for c in head.columns}

    def total_rows(self) -> int | None:
        return len(self.data) if isinstance(self.data, pd.DataFrame) else None

    def chunks(self, columns):
        for i, frame in enumerate(self._frames()):
            if not isinstance(frame, pd.DataFrame):
                raise DataError(f"chunk {i} of {self.label} is a {type(frame).__name__}, not a pandas DataFrame.")
            yield f"chunk {i} of {self.label}", frame
