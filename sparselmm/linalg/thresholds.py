"""Every size at which the linear algebra changes path, in one place.

One line each says what the constant decides and what decided it; the timings behind them are in
BENCHMARKS.md and in the docstrings named (``factor.py``'s for CHOLMOD's set-up). The modules that apply a
rule import its constant from here; none defines its own.
"""

from __future__ import annotations

# ---- which factor of C = ΛᵀZᵀWZΛ + I (ProfiledDeviance._analyse; PirlsModel for glmer) ------------------
# lmer: whether the dense-Schur factors' arrays fit is a memory decision against the fit's memory_limit,
# made by the cost model (sparselmm.linalg.cost), which also holds the measured rates it predicts with.
# glmer's reweighted dense-Schur factor: largest complement q₂ (8000² doubles = 512 MB)
MAX_DENSE = 8000
# "auto" takes a Schur factor only for a complement this full: nested benchmark (0.2 %) 0.20 s CHOLMOD vs 0.67 s
# dense; every crossed benchmark (12-89 % full) 1.5-5x faster dense
AUTO_SCHUR_MIN_DENSITY = 0.01
# a cross block G₁₂ this full is taken to fill the complement, without the pattern product (1.5 s on maximal 600 × 400)
FULL_CROSS_BLOCK = 0.05
# glmer's "auto": CHOLMOD below this complement (VerbAgg, 24 items: 0.3 ms CHOLMOD vs 0.8 ms dense per factorisation)
AUTO_SCHUR_MIN_Q2 = 100
# reweighted Schur: the pairs of G₂₁ entries stored (20 B each) up to this many, else one sparse product per factor
WEIGHTED_MAX_STORED_PAIRS = 30_000_000
# CHOLMOD supernodal from this many flops per entry of L, simplicial below (measurements: linalg/factor.py)
SUPERNODAL_MIN_FLOPS_PER_ENTRY = 300.0

# ---- stacks of tiny k × k blocks (small_blocks) ----------------------------------------------------------
# written out entry by entry up to k = 3 (k³ vector operations; numpy's batched kernels win beyond) ...
SMALL_BLOCKS_MAX_K = 3
# ... from 64 levels (2 × 2 blocks on 2e4 levels: numpy 0.9-3.3 ms per call, written out ~0.05 ms)
SMALL_BLOCKS_MIN_LEVELS = 64

# ---- exact derivatives (sparselmm.derivatives) -----------------------------------------------------------
# rows of their dense block (q₂ × q₂ with the first term eliminated, else q × q), a memory bound (1.15 GB each)
MAX_DENSE_Q = 12_000
# dense q × q algebra below this q even where the first term could be eliminated (kb07 Satterthwaite 0.49 → 0.11 s)
DENSE_BELOW_Q = 1000
# a sparse operand this full goes to dense BLAS (sparse-sparse ~1e8 multiply-adds per second, dgemm ~1e10)
DENSE_ENOUGH_FILL = 0.1

# ---- refits: bootstrap replicates, profile points, the bootstrap LRT (sparselmm.inference) ------------
# dense q × q evaluator up to this q (sleepstudy, q = 36: 60 µs against ~300 µs for the block-Schur factor)
DENSE_MAX_Q = 150
# without a factor gradient, the dense evaluator up to this q (16 ms per evaluation at q = 720), then BOBYQA
DENSE_FALLBACK_Q = 800
# fits from chunks: G's square root by dense pivoted Cholesky (exact rank) up to q + p = this, else CHOLMOD
ROW_FREE_DENSE_MAX = 2500

# ---- BLAS threads (sparselmm.linalg.threads): one thread below this much dense work ----------------------
# an evaluation of the profiled deviance, on its factor's dense_flops(): maximal 60 × 40 fit 5.9 s → 0.05 s
EVALUATION_ONE_THREAD_FLOPS = 2e7
# a loop of factorisations (refits; a whole glmer fit, whose PIRLS refactors many times per evaluation), on
# (order of the dense block)³: InstEval's 1,156² potrf + potri 6.1 s on two threads, 42 ms on one
LOOP_ONE_THREAD_FLOPS = 4e9
