"""Fitting from data that is never held in memory at once: chunks, parquet files, Dask.

``sparselmm.lmer(formula, data)`` routes here when ``data`` is a parquet path / glob / list of paths, a
Dask DataFrame, or one of the sources below (which take options: chunk size, progress bar, retries):

* :class:`ChunkedFrames` — pandas frames one at a time (a frame cut into chunks, a list, a generator);
* :class:`~sparselmm.scale.parquet.ParquetSource` — parquet files in row-group batches (pyarrow);
* :class:`~sparselmm.scale.dask.DaskSource` — a Dask DataFrame's partitions on the active scheduler.

Modules: :mod:`.source` (where chunks come from), :mod:`.columns` (what a formula reads, how each column is
coded), :mod:`.levels` (the level pass), :mod:`.chunked` (the :class:`Plan`: global levels, specs, the
cross-product pass and the algebraic shift of the response), :mod:`.partial_crossprod` (the additive sums),
:mod:`.streamed_design` (the design without rows), :mod:`.fit` (the two passes and the result). pyarrow and
dask are imported only when such data is given.
"""

from __future__ import annotations

from .chunked import Plan
from .fit import StreamedLmerResult, as_source, streamed_model, streamed_setup
from .levels import LevelPartial
from .partial_crossprod import PartialCrossProducts
from .source import ChunkedFrames, Source
from .streamed_design import StreamedDesign

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
