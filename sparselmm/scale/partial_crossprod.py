"""The cross-product pass's sums over some chunks: :class:`PartialCrossProducts`, additive.

Every evaluation of the profiled deviance reads only ``ZᵀWZ, ZᵀWX, ZᵀWy, XᵀWX, XᵀWy, yᵀWy`` (and
``Σ log w``, ``n``), each a sum over rows; so each chunk gives a partial, two partials add (``a + b``, a
Dask tree sum) or one accumulates the next in place (:meth:`PartialCrossProducts.add_inplace`, a reader
in this process), and :meth:`sparselmm.scale.chunked.Plan.finish` turns the total into the
:class:`~sparselmm.crossprod.CrossProducts` of the whole data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

__all__ = ["PartialCrossProducts"]


@dataclass
class PartialCrossProducts:
    """Sums over some rows of the weighted cross-products of ``[Z | A]`` with ``A = [X_all | 1]``.

    ``y1`` is the centred response ``y − offset − m₀`` (``m₀`` from the level pass). Adding two partials
    adds every sum (``ZᵀWZ`` keeps its q × q pattern: the union of the two). ``ysum``/``ysq`` and the
    per-level ``level_sums``/``level_counts`` (intercept-only terms) are unweighted sums of ``y − c``,
    for lme4's moment start.
    """

    ZtWZ: sp.csc_matrix
    ZtWA: np.ndarray  # q × (p_all + 1)
    ZtWy: np.ndarray  # q
    AtWA: np.ndarray
    AtWy: np.ndarray
    AtA: np.ndarray  # unweighted, for the rank check
    ytWy: float
    yoyo: float  # Σ (y − offset)²: the "constant response" check
    sum_log_w: float
    n: int
    ysum: float
    ysq: float
    level_sums: list
    level_counts: list
    chunks: int = 1

    def flush(self) -> PartialCrossProducts:
        """Merge the queued ``ZᵀWZ`` entries of :meth:`add_inplace` into the total."""
        pending = self.__dict__.pop("_pending", [])
        self.__dict__.pop("_keys", None)
        if pending:
            total = self.ZtWZ.tocoo()
            rows = np.concatenate([total.row, *(m[0] for m in pending)])
            cols = np.concatenate([total.col, *(m[1] for m in pending)])
            data = np.concatenate([total.data, *(m[2] for m in pending)])
            del total, pending
            self.ZtWZ = sp.csc_matrix((data, (rows, cols)), shape=self.ZtWZ.shape)  # sums duplicates
            del rows, cols, data
            self.ZtWZ.sum_duplicates()
        return self

    def _pattern_keys(self) -> np.ndarray:
        """``col · q + row`` of every stored entry of the total ``ZᵀWZ``, ascending (cached until a flush)."""
        keys = self.__dict__.get("_keys")
        if keys is None:
            Z = self.ZtWZ
            if not Z.has_canonical_format:
                Z.sum_duplicates()
            keys = np.repeat(np.arange(Z.shape[1], dtype=np.int64), np.diff(Z.indptr)) * Z.shape[0]
            keys += Z.indices
            self.__dict__["_keys"] = keys
        return keys

    def __add__(self, other: PartialCrossProducts | None) -> PartialCrossProducts:
        if other is None:
            return self
        self.flush()
        other.flush()
        if other.ZtWZ.shape != self.ZtWZ.shape or other.AtWA.shape != self.AtWA.shape:
            raise ValueError("Partial cross-products of different models cannot be added.")
        ZtWZ = (self.ZtWZ + other.ZtWZ).tocsc()
        return PartialCrossProducts(
            ZtWZ,
            self.ZtWA + other.ZtWA,
            self.ZtWy + other.ZtWy,
            self.AtWA + other.AtWA,
            self.AtWy + other.AtWy,
            self.AtA + other.AtA,
            self.ytWy + other.ytWy,
            self.yoyo + other.yoyo,
            self.sum_log_w + other.sum_log_w,
            self.n + other.n,
            self.ysum + other.ysum,
            self.ysq + other.ysq,
            [None if a is None else a + b for a, b in zip(self.level_sums, other.level_sums)],
            [None if a is None else a + b for a, b in zip(self.level_counts, other.level_counts)],
            self.chunks + other.chunks,
        )

    def __radd__(self, other):
        if other is None or (isinstance(other, int) and other == 0):  # sum() starts at 0
            return self
        return other.__add__(self)

    def add_inplace(self, other: PartialCrossProducts) -> None:
        """``self += other`` without new dense arrays (the single-process reader's accumulator).

        A chunk's ``ZᵀWZ`` entries that the total already stores are added in place (found by binary
        search among the total's sorted ``col · q + row`` keys); only entries new to the pattern are
        queued. The queue is merged (one sum of triplets) when it holds as many entries as the total, so
        each entry is merged O(log chunks) times rather than once per chunk. Once every distinct cell has
        been seen (e.g. rows that repeat cells), nothing is queued and memory stays at the total's pattern
        plus one chunk, however many rows follow: memory follows the cells, not the rows.
        """
        pending = self.__dict__.setdefault("_pending", [])
        Z = other.ZtWZ.tocsc()
        if not Z.has_canonical_format:
            Z.sum_duplicates()  # unique, sorted entries: the in-place addition below needs unique keys
        q = Z.shape[0]
        ccols = np.repeat(np.arange(Z.shape[1], dtype=np.int64), np.diff(Z.indptr))
        if self.ZtWZ.nnz and Z.nnz:
            keys = self._pattern_keys()
            ckeys = ccols * q + Z.indices
            pos = np.searchsorted(keys, ckeys)
            np.minimum(pos, keys.size - 1, out=pos)
            hit = keys[pos] == ckeys
            del ckeys
            self.ZtWZ.data[pos[hit]] += Z.data[hit]
            new = ~hit
            if new.any():
                pending.append((Z.indices[new], ccols[new].astype(Z.indices.dtype), Z.data[new]))
        elif Z.nnz:
            pending.append((Z.indices.copy(), ccols.astype(Z.indices.dtype), Z.data.copy()))
        del ccols
        if pending and sum(m[2].size for m in pending) >= max(self.ZtWZ.nnz, 1_000_000):
            self.flush()
        for name in ("ZtWA", "ZtWy", "AtWA", "AtWy", "AtA"):
            getattr(self, name).__iadd__(getattr(other, name))
        self.ytWy += other.ytWy
        self.yoyo += other.yoyo
        self.sum_log_w += other.sum_log_w
        self.n += other.n
        self.ysum += other.ysum
        self.ysq += other.ysq
        for a, b in zip(self.level_sums, other.level_sums):
            if a is not None:
                a += b
        for a, b in zip(self.level_counts, other.level_counts):
            if a is not None:
                a += b
        self.chunks += other.chunks
