"""Fitting from data that is never held in memory at once: chunks, parquet files, Dask.

``sparselmm.lmer(formula, data)`` routes here when ``data`` is a parquet path / glob / list of paths, a
Dask DataFrame, or one of the sources below (which take options: chunk size, progress bar, retries):

* :class:`ChunkedFrames` — pandas frames one at a time (a frame cut into chunks, a list, a generator);
* :class:`~sparselmm.scale.parquet.ParquetSource` — parquet files in row-group batches (pyarrow);
* :class:`~sparselmm.scale.dask.DaskSource` — a Dask DataFrame's partitions on the active scheduler.

The math (two passes, global levels, the algebraic shift of the response) is in
:mod:`sparselmm.scale.chunked`. pyarrow and dask are imported only when such data is given.
"""

from __future__ import annotations

from .chunked import LevelPartial, PartialCrossProducts, Plan, StreamedDesign
from .fit import StreamedLmerResult, as_source, streamed_model, streamed_setup
from .source import ChunkedFrames, Source

__all__ = [
    "ChunkedFrames",
    "DaskSource",
    "LevelPartial",
    "ParquetSource",
    "PartialCrossProducts",
    "Plan",
    "Source",
    "StreamedDesign",
    "StreamedLmerResult",
    "as_source",
    "streamed_model",
    "streamed_setup",
]


def __getattr__(name):  # the optional-dependency sources, imported on first use
    if name == "ParquetSource":
        from .parquet import ParquetSource

        return ParquetSource
    if name == "DaskSource":
        from .dask import DaskSource

        return DaskSource
    raise AttributeError(name)
