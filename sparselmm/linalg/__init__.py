"""The linear algebra under every fit: the factor of ``C = ΛᵀZᵀWZΛ + I`` and what runs it.

* :mod:`~sparselmm.linalg.cholmod` — the one wrapper of scikit-sparse's CHOLMOD binding;
* :mod:`~sparselmm.linalg.factor` — the :class:`~sparselmm.linalg.factor.Factor` protocol, CHOLMOD behind it
  and the in-place writer of ``ΛᵀZᵀWZΛ``;
* :mod:`~sparselmm.linalg.schur` — all-scalar models: the first term eliminated, the complement dense;
* :mod:`~sparselmm.linalg.weighted_schur` — the same elimination for PIRLS, whose ``W`` changes per
  iteration;
* :mod:`~sparselmm.linalg.block_schur` — the first term's k × k blocks eliminated, the complement dense;
* :mod:`~sparselmm.linalg.small_blocks` — products, Cholesky and inverse of stacks of tiny k × k blocks;
* :mod:`~sparselmm.linalg.threads` — the one BLAS-thread policy;
* :mod:`~sparselmm.linalg.thresholds` — every size at which the linear algebra changes path.

Nothing here knows a formula, a result or an optimiser.
"""
