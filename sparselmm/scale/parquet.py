"""Parquet files read in row-group batches with pyarrow (the optional extra ``sparselmm[parquet]``).

``data`` may be a file, a directory (its ``*.parquet`` files), a glob (``"ratings/*.parquet"``) or a list
of those; files are read in sorted order, ``batch_rows`` rows at a time (``ParquetFile.iter_batches``,
only the columns the model reads). Every file is opened and its footer read before the first pass, so a
truncated or corrupt file, or one without a column the model needs, fails at once with a
:class:`~sparselmm.errors.DataError` naming the file; an error while decoding a batch later is reported
the same way. Nothing is fitted (or returned) after such an error.
"""

from __future__ import annotations

import glob
import os

import pandas as pd

from ..errors import DataError
from .source import Source

__all__ = ["ParquetSource", "resolve_paths"]


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(
            "Reading parquet files needs pyarrow: pip install 'sparselmm[parquet]' (or pyarrow>=14)."
        ) from None
    return pa, pq


def resolve_paths(data) -> list[str]:
    """Files named by a path, a directory, a glob or a list of those (sorted, each once)."""
    items = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    out: list[str] = []
    for item in items:
        item = os.fspath(item)
        if os.path.isdir(item):
            found = sorted(glob.glob(os.path.join(item, "*.parquet")))
            if not found:
                raise DataError(f"Directory {item!r} has no *.parquet files.")
        elif glob.has_magic(item):
            found = sorted(glob.glob(item))
            if not found:
                raise DataError(f"No files match {item!r}.")
        elif os.path.exists(item):
            found = [item]
        else:
            raise DataError(f"Data file {item!r} does not exist.")
        out.extend(found)
    return list(dict.fromkeys(out))


class ParquetSource(Source):
    """Parquet files as a chunked source; see the module docstring."""

    def __init__(self, data, batch_rows: int = 1_000_000, progress: bool | None = None, label: str | None = None):
        self.paths = resolve_paths(data)
        self.batch_rows = int(batch_rows)
        self.progress = progress
        self.label = label or (self.paths[0] if len(self.paths) == 1 else f"{len(self.paths)} parquet files")
        self._schemas = None

    def _open(self, path):
        pa, pq = _pyarrow()
        try:
            return pq.ParquetFile(path)
        except (pa.ArrowException, OSError, ValueError) as err:
            raise DataError(f"Could not read parquet file {path!r} (truncated or not parquet?): {err}") from None

    def schemas(self):
        if self._schemas is None:
            pa, _ = _pyarrow()
            self._schemas = []
            for path in self.paths:
                f = self._open(path)
                self._schemas.append((path, f.schema_arrow, f.metadata.num_rows))
        return self._schemas

    def columns(self) -> list[str]:
        return list(self.schemas()[0][1].names)

    def kinds(self) -> dict[str, str]:
        pa, _ = _pyarrow()
        out = {}
        for field in self.schemas()[0][1]:
            t = field.type
            numeric = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
            numeric = numeric or pa.types.is_boolean(t)  # one 0/1 column, as formulaic codes a bool in memory
            out[field.name] = "numeric" if numeric else "categorical"
        return out

    def total_rows(self) -> int:
        return int(sum(n for _, _, n in self.schemas()))

    def key(self):
        out = []
        for path in self.paths:
            st = os.stat(path)
            out.append((os.path.abspath(path), st.st_size, st.st_mtime_ns))
        return ("parquet", tuple(out))

    def chunks(self, columns):
        pa, _ = _pyarrow()
        # bool read as pandas' nullable boolean, with nulls too (not object): numeric in every batch
        as_boolean = {pa.bool_(): pd.BooleanDtype()}.get
        for path, schema, _ in self.schemas():
            absent = [c for c in columns if c not in schema.names]
            if absent:
                raise DataError(f"Parquet file {path!r} lacks the column(s) {absent} that the model reads.")
            f = self._open(path)
            batches = f.iter_batches(batch_size=self.batch_rows, columns=list(columns))
            i = 0
            while True:
                try:
                    batch = next(batches)
                    frame = batch.to_pandas(types_mapper=as_boolean)
                except StopIteration:
                    break
                except (pa.ArrowException, OSError, ValueError) as err:
                    raise DataError(f"Could not read batch {i} of parquet file {path!r}: {err}") from None
                yield f"{path} (batch {i})", frame
                i += 1
