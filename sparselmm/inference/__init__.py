"""Inference on fitted models: denominator degrees of freedom, contrasts, F tests, anova tables,
confidence intervals, likelihood-ratio tests and the parametric bootstrap, all built on the exact
derivatives of :mod:`sparselmm.derivatives` and the engine's cheap refits."""
