"""
InstEval: 73,421 ratings, students × lecturers
==============================================

lme4's ``InstEval``: students (``s``, 2,972) rate lecturers (``d``, 1,128). The two grouping factors are
crossed and each rating is one cell of the sparse ``Z`` — the design sparselmm's dense-Schur factor is
built for: the largest term is eliminated level by level and the rest factored densely, with an exact
gradient for the optimiser.
"""

# %%
# An ML fit, as ``lmer(y ~ service + (1 | s) + (1 | d), InstEval, REML = FALSE)``.
import time

import sparselmm

inst = sparselmm.datasets.load("InstEval")
print(inst.shape)
start = time.perf_counter()
m = sparselmm.lmer("y ~ service + (1 | s) + (1 | d)", inst, reml=False)
print(f"fitted in {time.perf_counter() - start:.1f} s")
print(m.optinfo)

# %%
# The summary, with Satterthwaite's df (the derivatives are exact and cost a fraction of the fit).
print(m.summary())

# %%
# Normal QQ plots of the conditional modes (lme4's ``qqmath(ranef(m, condVar = TRUE))``): with thousands
# of levels the caterpillar plot has no room for labels, the QQ plot shows the distribution.
fig = m.plot_qq_ranef()
