"""Type aliases of the public signatures, for type checkers and the documentation.

The entry points import them under ``typing.TYPE_CHECKING`` only (their annotations are strings, as every
module here has ``from __future__ import annotations``), so nothing here is imported when a model is fitted.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Union

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    import dask.dataframe
    import polars

    from .scale.source import Source

__all__ = ["ColumnOrValues", "ContrastLike", "DataLike", "FrameLike", "PathLike", "Seed"]

#: A parquet file, directory or glob.
PathLike = Union[str, "os.PathLike[str]"]

#: Data held in memory: a pandas or polars DataFrame, or a mapping of column names to values.
FrameLike = Union[pd.DataFrame, Mapping[str, ArrayLike], "polars.DataFrame"]

#: What :func:`sparselmm.lmer` and :func:`sparselmm.deviance_function` fit: data in memory, parquet files
#: (a path, a glob or a list of paths), a Dask DataFrame, or a :class:`sparselmm.scale.Source`.
DataLike = Union[FrameLike, PathLike, Sequence[PathLike], "dask.dataframe.DataFrame", "Source"]

#: ``weights=`` and ``offset=``: a column name or one value per row.
ColumnOrValues = str | ArrayLike

#: A contrast for ``contest``: a vector or matrix, a Series/DataFrame named by fixed effects, or a term label.
ContrastLike = ArrayLike | pd.Series | pd.DataFrame | str

#: A seed for simulation and the bootstrap.
Seed = int | np.random.SeedSequence | None
