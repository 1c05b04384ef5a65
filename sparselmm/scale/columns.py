"""Which columns a formula reads from chunked data, how each is coded, and the missing-value policy per chunk.

A column is *numeric* or *categorical* as formulaic sees it in memory: numbers and booleans are numeric
(``b`` is one 0/1 column, as ``sparselmm.lmer`` on a pandas frame gives it), text and pandas categoricals
are categorical. Categorical columns — and numeric ones used as ``C(x)`` — are level-coded over the whole
data by the level pass, so that every chunk encodes them alike.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..data import CleanData, clean_data
from ..design import _transform_arguments, factor_expressions, required_columns
from ..errors import DataError
from ..formula import ParsedFormula

__all__ = ["ModelColumns", "column_kind", "coded_as_categorical"]


def column_kind(col: pd.Series) -> str:
    """``"numeric"`` or ``"categorical"``, as formulaic codes the column (bool is numeric: one 0/1 column)."""
    return "numeric" if pd.api.types.is_numeric_dtype(col.dtype) else "categorical"


def coded_as_categorical(parsed: ParsedFormula) -> set[str]:
    """Columns used as ``C(col, ...)`` (numeric columns coded as categorical) in the fixed part or a term."""
    out: set[str] = set()
    for tree in factor_expressions(parsed):
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "C":
                if node.args and isinstance(node.args[0], ast.Name):
                    out.add(node.args[0].id)
    return out


@dataclass
class ModelColumns:
    """Which columns a formula reads and which of them are level-coded."""

    parsed: ParsedFormula
    needed: list[str]  # columns passed to clean_data (missing-value policy applies to these)
    read: list[str]  # needed plus weights/offset columns: what a reader must supply
    grouping: list[str]  # columns of grouping factors
    combos: list[tuple[str, ...]]  # grouping factors that are interactions of several columns
    weights: str | None
    offset: str | None
    missing: str

    @classmethod
    def of(cls, parsed: ParsedFormula, available: list[str], weights, offset, missing) -> ModelColumns:
        for name, value in (("weights", weights), ("offset", offset)):
            if value is not None and not isinstance(value, str):
                raise DataError(
                    f"{name}= must name a column when the data is read in chunks (parquet files, Dask); "
                    f"got {type(value).__name__}."
                )
        needed = required_columns(parsed)
        needed += [c for c in _transform_arguments(parsed) if c in available and c not in needed]
        unknown = [c for c in needed if c not in available]
        if unknown:
            raise DataError(
                f"Name(s) {unknown} used in the formula are not columns of the data (nor functions formulaic "
                f"knows); available columns are {list(available)}."
            )
        read = list(needed)
        for v in (weights, offset):
            if v is not None:
                if v not in available:
                    raise DataError(f"{v!r} (weights/offset) is not a column of the data; columns are {available}.")
                if v not in read:
                    read.append(v)
        grouping = list(dict.fromkeys(f for t in parsed.random for f in t.factors))
        combos = list(dict.fromkeys(t.factors for t in parsed.random if len(t.factors) > 1))
        return cls(parsed, needed, read, grouping, combos, weights, offset, missing)

    def clean(self, frame: pd.DataFrame, label: str = "") -> CleanData | None:
        """The missing-value policy applied to one chunk; None when no complete row is left."""
        if len(frame) == 0:
            return None
        if self.missing == "drop":
            mask = frame[self.read].isna().any(axis=1).to_numpy()
            if mask.all():
                return CleanData(frame.iloc[:0], np.empty(0, np.int64), None, None, int(mask.size))
        try:
            return clean_data(frame, self.needed, self.weights, self.offset, self.missing)
        except DataError as err:
            if not label:
                raise
            raise DataError(f"{label}: {err}") from None
