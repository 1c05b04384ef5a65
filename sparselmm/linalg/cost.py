"""The cost model: each factor's memory and time per evaluation, predicted from the design before any
numeric factorisation, and the memory available to a fit.

:meth:`sparselmm.deviance.ProfiledDeviance._analyse` asks :func:`predict_costs` for a :class:`PathCost` per
path and takes the first one, in its order of preference, that applies and fits ``memory_limit``; when
none fits it raises :class:`~sparselmm.errors.MemoryLimitError` with the table. The predictions use the
design's structure only (levels per term, the pattern of ``ZᵀWZ``) and three rates measured on the
reference machine (BENCHMARKS.md, "Cost model"); they are estimates for a choice and a report, not a
guarantee.

What each path holds (8-byte values, 4-byte indices):

* dense (:class:`~sparselmm.linalg.dense.DenseFactor`, taken first for small q without the other
  predictions: :func:`dense_cost`): ``C``, ``ΛᵀG`` and the augmented (q + p + 1)² matrix.
* scalar Schur (:mod:`sparselmm.linalg.schur`): the dense q₂ × q₂ complement; ``Q`` with one entry per pair
  of effects sharing a first-term level (``Σ_s k_s(k_s+1)/2``, ``k_s`` the other effects of level ``s``),
  built in CSC then converted (both held for a moment); while the pattern is marked, a q₂ × q₂ byte mask
  and index map.
* block Schur (:mod:`sparselmm.linalg.block_schur`): ``G₁₂``, ``B`` and ``W`` (dense q₁ × q₂), ``G₂₂``
  and ``S`` (dense q₂ × q₂).
* CHOLMOD: ``L`` (``nnz(L)`` values and indices) and the pattern of ``ΛᵀZᵀWZΛ`` with its update maps. Where
  the complement of the first term is full (crossed designs), ``nnz(L)`` is that term's diagonal, its cross
  block and the dense lower triangle of the complement; otherwise it is bounded from the pattern product.
* matrix-free (:mod:`sparselmm.linalg.matrix_free`, approximate; taken only when no exact factor fits): the
  blocks of ``ZᵀWZ`` outside the first term's diagonal (three copies of the cross block), the p + 1 solves'
  vectors and one batch of Lanczos vectors. Its time is the PCG iterations' and the probes' products with the
  cross block plus the probes' reorthogonalisation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp

__all__ = [
    "PathCost",
    "available_memory",
    "dense_cost",
    "format_bytes",
    "memory_limit_bytes",
    "predict_costs",
]

# ---- rates measured on the reference machine (2 cores, OpenBLAS; BENCHMARKS.md "Cost model") ----------
# LAPACK potrf/potri and BLAS-3 on dense blocks, flops per second by the block's order (potrf, two threads)
DENSE_RATE_ORDERS = (250.0, 1000.0, 2000.0, 4000.0, 8000.0)
DENSE_RATES = (1.2e10, 3.0e10, 6.0e10, 9.0e10, 1.2e11)
# sparse products (Q @ w: one CSR matrix-vector product, 34M entries in 0.07 s; G₂₁ and G times dense columns)
SPARSE_ENTRIES_PER_SECOND = 4.9e8
# batched small k × k block algebra of the first term, per level and coefficient² (block Schur; slopes benchmark)
SMALL_BLOCK_SECONDS = 2.5e-7
# CHOLMOD supernodal on crossed designs, effective flops of Σ c_j²: 20,000 × 10,677 levels, 12.6 s per factor
CHOLMOD_FLOPS_PER_SECOND = 3.2e10
# Python and small-array work of one evaluation, whatever its size: sleepstudy, 20 evaluations in 5.9 ms
EVALUATION_OVERHEAD_SECONDS = 3e-4
# the dense path's evaluation with its gradient (a dozen LAPACK/numpy calls): sleepstudy (q = 36) 51 µs
DENSE_EVALUATION_SECONDS = 5e-5
# the CHOLMOD path's further calls per evaluation (scikit-sparse's factor update, LDLᵀ → LLᵀ, two solves):
# nested benchmark (q = 11,000, no fill) 2.4 ms measured against 1.0 ms predicted without it
CHOLMOD_CALL_SECONDS = 1e-3
# matrix-free: products of the cross block with batches of dense columns (faster per entry than one vector),
# the Lanczos reorthogonalisation per probe, step² and effect, and the gradient's share; fitted to one
# evaluation at θ = (0.8, 0.5) of ml1m (1e6 entries, 3,706 rest effects: 0.53 s) and of a 1e6-row
# 200,000 × 80,000 design (3.3 s)
MATRIX_FREE_ENTRIES_PER_SECOND = 1.75e9
MATRIX_FREE_LANCZOS_SECONDS = 5.6e-9
MATRIX_FREE_GRADIENT_SHARE = 0.3
# PCG iterations per right-hand side to rtol 1e-10 (7-31 measured up to 200,000 x 80,000 levels)
MATRIX_FREE_PCG_ITERATIONS = 30
# a fit on values alone (BOBYQA) takes this many times the evaluations of one with the gradient (L-BFGS-B):
# 24-41 against 8-10 on the crossed designs of issue 19, 124 against 25 on the maximal 60 × 40 design
EVALUATIONS_WITHOUT_GRADIENT = 4.0
# "auto" passes over a preferred path predicted to make the fit this many times slower than the fastest one,
# where it predicts more than PREFERENCE_HOLDS_SECONDS per evaluation (below, the measured order of preference
# stands: small problems are where these rates, made for large dense and sparse work, predict least well)
SLOWER_PATH_TOLERANCE = 3.0
PREFERENCE_HOLDS_SECONDS = 0.5
# without a limit, a fit may plan to use this share of the memory available when it starts
DEFAULT_MEMORY_SHARE = 0.6
# the scalar Schur factor considers holding levels dense only when Q would have this many entries
DENSE_LEVELS_MIN_PAIRS = 10_000_000
# the complement's pattern product is formed only up to this many pairs (its own memory); beyond, the
# complement is taken as full, which every crossed design of that size is
MAX_PATTERN_PAIRS = 50_000_000

_UNITS = {"": 1, "B": 1}
for _i, _u in enumerate("KMGT"):
    _UNITS.update({_u: 2 ** (10 * (_i + 1)), _u + "B": 2 ** (10 * (_i + 1)), _u + "IB": 2 ** (10 * (_i + 1))})


@dataclass(frozen=True)
class PathCost:
    """One path's predicted cost for this design.

    Attributes
    ----------
    path : str
        ``"dense Cholesky"``, ``"dense Schur complement"``, ``"block Schur complement"``, ``"CHOLMOD sparse
        Cholesky"`` or ``"matrix-free (approximate)"``.
    applicable : bool
        The path applies to this model's structure (memory aside).
    bytes : float
        Peak memory of the path's workspace (the design and its cross-products not included).
    seconds : float
        One evaluation of the criterion, with its gradient where the path has one.
    gradient : bool
        The path gives the exact gradient (L-BFGS-B; otherwise BOBYQA on values).
    reason : str
        Why the path does not apply (empty when it does).
    options : dict
        How the factor is to be built for this prediction (the scalar Schur factor's ``dense_from``).
    """

    path: str
    applicable: bool
    bytes: float
    seconds: float
    gradient: bool
    reason: str = ""
    options: dict = field(default_factory=dict)

    @property
    def fit_seconds(self) -> float:
        """Seconds per evaluation weighted by the evaluations a fit on this path takes (gradient or not)."""
        return self.seconds * (1.0 if self.gradient else EVALUATIONS_WITHOUT_GRADIENT)

    def fits(self, limit: float) -> bool:
        """Applies and needs at most ``limit`` bytes."""
        return self.applicable and self.bytes <= limit

    def as_dict(self) -> dict:
        """The prediction as recorded in ``OptInfo.predicted``."""
        return {"path": self.path, "bytes": float(self.bytes), "seconds_per_evaluation": float(self.seconds)}

    def describe(self) -> str:
        if not self.applicable:
            return f"{self.path}: does not apply ({self.reason})"
        grad = "with gradient" if self.gradient else "values only"
        return f"{self.path}: {format_bytes(self.bytes)}, {format_seconds(self.seconds)} per evaluation ({grad})"


def format_bytes(b: float) -> str:
    """``b`` bytes in the largest binary unit that keeps at least 1 (``"7.2 GB"``)."""
    for unit, size in (("TB", 2**40), ("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if b >= size:
            return f"{b / size:.1f} {unit}"
    return f"{b:.0f} B"


def format_seconds(s: float) -> str:
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.1f} s"


def available_memory() -> float:
    """Bytes of memory available now (Linux ``MemAvailable``; else the physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - platforms without sysconf
        return 8.0 * 2**30


def memory_limit_bytes(memory_limit) -> float:
    """The fit's memory limit in bytes.

    Parameters
    ----------
    memory_limit : None, int, float or str
        None: :data:`DEFAULT_MEMORY_SHARE` of :func:`available_memory`; a number of bytes; or a string
        with a unit, ``"8GB"``, ``"500 MB"``, ``"2GiB"``.

    Raises
    ------
    ModelSpecError
        Anything else, or a limit that is not positive.
    """
    from ..errors import ModelSpecError

    if memory_limit is None:
        return DEFAULT_MEMORY_SHARE * available_memory()
    value = None
    if isinstance(memory_limit, str):
        text = memory_limit.strip().upper().replace(" ", "")
        digits = text.rstrip("KMGTIB")
        unit = text[len(digits) :]
        if unit in _UNITS:
            try:
                value = float(digits) * _UNITS[unit]
            except ValueError:
                value = None
    elif isinstance(memory_limit, (int, float, np.integer, np.floating)) and not isinstance(memory_limit, bool):
        value = float(memory_limit)
    if value is None or not np.isfinite(value) or value <= 0:
        raise ModelSpecError(
            f"memory_limit={memory_limit!r} is not a memory size; give bytes (e.g. 8e9) or a string such as "
            "'8GB' or '500MB', or None for 60 % of the memory available."
        )
    return value


def dense_rate(n: float) -> float:
    """Dense flops per second for blocks of order ``n`` (interpolated in log order; flat beyond the table)."""
    return float(np.interp(np.log(max(n, 1.0)), np.log(DENSE_RATE_ORDERS), DENSE_RATES))


def _pairs_per_level(G21: sp.csc_matrix) -> np.ndarray:
    """``k_s (k_s + 1) / 2`` for each first-term level ``s`` (column of ``G₂₁``)."""
    k = np.diff(G21.indptr).astype(np.float64)
    return k * (k + 1) / 2


def _complement_lower_entries(G: sp.csc_matrix, q1: int, n_pairs: float) -> float:
    """Entries of the lower triangle of the complement's factor: its full count where the complement's pattern
    (``G₂₂ + G₂₁G₁₂``) is at least ``AUTO_SCHUR_MIN_DENSITY`` full (a crossed pattern that full fills in
    completely) or the pattern product would be large (:data:`MAX_PATTERN_PAIRS`), else the pattern's own."""
    from .schur import complement_density  # the one owner of the pattern rule
    from .thresholds import AUTO_SCHUR_MIN_DENSITY

    q2 = G.shape[0] - q1
    full = q2 * (q2 + 1) / 2
    if n_pairs > MAX_PATTERN_PAIRS:
        return full
    density = complement_density(G, q1)
    return full if density >= AUTO_SCHUR_MIN_DENSITY else density * full


def dense_levels_threshold(k: np.ndarray, q2: int, budget: float) -> tuple[int | None, float, float]:
    """Which first-term levels the scalar Schur factor holds dense (:class:`~sparselmm.linalg.schur.SchurCholesky`'s
    ``dense_from``): the threshold on ``k_s`` that minimises the predicted time of forming ``K`` (and its part of
    the gradient) within ``budget`` bytes for ``Q`` and the dense columns.

    A level in ``Q`` costs ``k_s(k_s+1)/2`` entries (12 bytes each, twice while built; one sparse product per
    evaluation and one per gradient), a dense level ``q₂`` values (twice: the columns and their scaled copy)
    and ``q₂²`` flops of ``syrk`` and of ``trsm``. Below :data:`DENSE_LEVELS_MIN_PAIRS` pairs nothing moves.

    Returns
    -------
    dense_from : int or None
        None: every level in ``Q``.
    seconds, bytes : float
        The predicted time per evaluation of these parts and the bytes of ``Q`` and the dense columns.
    """
    pairs = k.astype(np.float64) * (k + 1) / 2
    total = float(pairs.sum())
    all_in_q = (None, 2 * total / SPARSE_ENTRIES_PER_SECOND, 24 * total)
    if total < DENSE_LEVELS_MIN_PAIRS or q2 == 0:
        return all_in_q
    order = np.argsort(-k, kind="stable")
    k_sorted = k[order]
    # m heaviest levels dense, m = 0 .. (only where the next level's k differs: one threshold per distinct k)
    light = total - np.concatenate([[0.0], np.cumsum(pairs[order])])
    m = np.arange(k.size + 1, dtype=np.float64)
    seconds = 2 * light / SPARSE_ENTRIES_PER_SECOND + 2 * m * float(q2) ** 2 / dense_rate(q2)
    nbytes = 24 * light + 16 * float(q2) * m
    valid = np.ones(k.size + 1, dtype=bool)
    valid[1:-1] = k_sorted[1:] != k_sorted[:-1]  # a threshold cannot split levels of equal k
    ok = valid & (nbytes <= budget)
    if not ok.any():
        ok = valid
        best = int(np.argmin(np.where(ok, nbytes, np.inf)))
    else:
        best = int(np.argmin(np.where(ok, seconds, np.inf)))
    if best == 0:
        return all_in_q
    return int(k_sorted[best - 1]), float(seconds[best]), float(nbytes[best])


def dense_cost(q: int) -> PathCost:
    """The dense path (:class:`~sparselmm.linalg.dense.DenseFactor`, evaluated by
    :class:`~sparselmm.criterion.DenseCriterion`): ``C`` and ``ΛᵀG`` (q × q) and the augmented matrix; time
    ``~3q³`` flops plus its own, smaller per-call overhead."""
    qf = float(q)
    return PathCost(
        "dense Cholesky", True, 8 * 4 * (qf + 3) ** 2, 3 * qf**3 / dense_rate(qf) + DENSE_EVALUATION_SECONDS, True
    )


def predict_costs(terms, G: sp.spmatrix, p: int = 1, memory_limit: float = np.inf) -> list[PathCost]:
    """Predicted memory and time per evaluation of each path, from the design's structure alone.

    Parameters
    ----------
    terms : list of ReTerm
        The model's random-effect terms (the first has the most levels).
    G : scipy.sparse matrix
        ``ZᵀWZ`` (full symmetric; only its pattern and block sizes are used).
    p : int
        Fixed-effect columns (right-hand sides of each solve).
    memory_limit : float
        Bytes the factor may use; decides how much of the scalar Schur factor's ``K`` is formed dense.

    Returns
    -------
    list of PathCost
        Scalar Schur, block Schur, CHOLMOD and the approximate matrix-free path, in that order (the order of
        preference).
    """
    G = sp.csc_matrix(G)
    q = G.shape[0]
    q1 = terms[0].q if terms else 0
    q2 = q - q1
    first_plain = bool(terms) and terms[0].Zt_block is None
    G21 = G[q1:, :q1].tocsc()
    n_pairs = float(np.sum(_pairs_per_level(G21))) if q2 else 0.0
    lower_complement = _complement_lower_entries(G, q1, n_pairs) if q2 else 0.0
    rhs = p + 1
    dense = dense_rate(q2)
    q2f, q1f = float(q2), float(q1)

    # scalar Schur: S (8 q₂²) + Q (12 B per pair; CSC and CSR together while converting) + the mask/index map
    scalar_ok = bool(terms) and all(t.k == 1 for t in terms) and 0 < q2 <= q1
    scalar_reason = "" if scalar_ok else "needs scalar terms only and a first term with at least half the levels"
    # every path: the solves' and the gradient's products of G (or its cross block) with p + 1 dense columns
    sparse_work = 4 * G.nnz * rhs / SPARSE_ENTRIES_PER_SECOND
    k = np.diff(G21.indptr).astype(np.int64)
    dense_from, k_seconds, k_bytes = dense_levels_threshold(k, q2, memory_limit - 13 * q2f**2)
    scalar_bytes = 13 * q2f**2 + k_bytes
    scalar_value = q2f**3 / 3 / dense + 2 * q2f**2 * rhs / dense
    scalar_grad = 2 * q2f**3 / 3 / dense + sparse_work + k_seconds
    scalar = PathCost(
        "dense Schur complement",
        scalar_ok,
        scalar_bytes,
        scalar_value + scalar_grad,
        True,
        scalar_reason,
        {"dense_from": dense_from},
    )

    # block Schur: G₁₂, B, W (q₁ × q₂) and G₂₂, S, S's inverse for the gradient (q₂ × q₂)
    k1 = terms[0].k if terms else 1
    block_ok = first_plain
    block_bytes = 8 * (3 * q1f * q2f + 3 * q2f**2 + 3 * q1f * k1)
    block_value = (2 * q1f * q2f * k1 + q1f * q2f**2 + q2f**3 / 3) / dense
    block_grad = (2 * q1f * q2f**2 + 2 * q2f**3 / 3) / dense + sparse_work + SMALL_BLOCK_SECONDS * q1f * k1
    block = PathCost(
        "block Schur complement",
        block_ok,
        block_bytes,
        block_value + block_grad,
        True,
        "" if block_ok else "needs a first term of plain columns",
    )

    # CHOLMOD: L after the first term (its diagonal blocks, the cross block, the complement's fill)
    lower_G = (G.nnz + q) / 2
    nnz_L = q1f * k1 + G21.nnz + lower_complement
    flops = float(np.sum(_pairs_per_level(G21) * 2)) + (q2f**3 / 3) * (lower_complement / max(q2f * (q2f + 1) / 2, 1))
    cholmod_bytes = 12 * nnz_L + 12 * 3 * lower_G
    cholmod_seconds = max(flops, lower_G) / CHOLMOD_FLOPS_PER_SECOND + sparse_work / 2 + CHOLMOD_CALL_SECONDS
    cholmod = PathCost("CHOLMOD sparse Cholesky", True, cholmod_bytes, cholmod_seconds, False)
    costs = [scalar, block, cholmod, _matrix_free_cost(terms, G, q1, G21.nnz, p)]
    return [replace(c, seconds=c.seconds + EVALUATION_OVERHEAD_SECONDS) for c in costs]


def _matrix_free_cost(terms, G: sp.csc_matrix, q1: int, nnz21: int, p: int) -> PathCost:
    """The matrix-free path's prediction (:class:`~sparselmm.linalg.matrix_free.MatrixFreeDeviance`)."""
    from .matrix_free import LANCZOS_STEPS, N_PROBES, PROBE_MEMORY, matrix_free_applicable

    q = G.shape[0]
    q_r = q - q1
    reason = matrix_free_applicable(terms, G)
    probes = min(N_PROBES, q_r)
    steps = min(LANCZOS_STEPS, max(q_r, 1))
    columns = MATRIX_FREE_PCG_ITERATIONS * (p + 1) + probes * (steps + 1)
    nnz_rr = G.nnz - q1 - 2 * nnz21
    product = columns * (2.0 * nnz21 + nnz_rr) / MATRIX_FREE_ENTRIES_PER_SECOND
    lanczos = MATRIX_FREE_LANCZOS_SECONDS * probes * steps**2 * q_r
    seconds = (product + lanczos) * (1 + MATRIX_FREE_GRADIENT_SHARE)
    # G's blocks (cross block three times: G₁ᵣ, Gᵣ₁ and its square), the solves' vectors, the Lanczos batch
    lanczos_bytes = min(PROBE_MEMORY, 8.0 * probes * (steps + 1) * q_r)
    nbytes = 12.0 * (3 * nnz21 + nnz_rr) + 8.0 * 12 * q * (p + 1) + 3 * lanczos_bytes
    return PathCost("matrix-free (approximate)", not reason, nbytes, seconds, True, reason)
