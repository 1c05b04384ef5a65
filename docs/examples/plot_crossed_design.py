"""
Crossed subjects × items with a three-level condition
=====================================================

A psycholinguistic design: 40 subjects each read 30 items, every item in one of three conditions
(A, B, C), rotated over subjects in a Latin square, so both subjects and items see every condition. The
maximal model has correlated random intercepts and condition effects for subjects *and* items —
``(1 + cond | subj) + (1 + cond | item)`` — and the tests of ``cond`` use Satterthwaite's or
Kenward–Roger's denominator degrees of freedom, as lmerTest and pbkrtest give them.
"""

# %%
# Simulate the data: condition effects of 25 and 45 ms over A, an item-level covariate ``freq``, and
# random effects with standard deviations (60, 30, 30) for subjects and (40, 20, 20) for items.
import numpy as np
import pandas as pd

import sparselmm

rng = np.random.default_rng(1)
n_subj, n_item = 40, 30
subj = np.repeat(np.arange(n_subj), n_item)
item = np.tile(np.arange(n_item), n_subj)
cond = np.array(["A", "B", "C"])[(subj + item) % 3]
freq = rng.normal(size=n_item)[item]


def random_effects(n, sds, corr=0.3):
    cov = np.full((3, 3), corr)
    np.fill_diagonal(cov, 1.0)
    return rng.multivariate_normal(np.zeros(3), cov * np.outer(sds, sds), size=n)


S = random_effects(n_subj, [60, 30, 30])
Item = random_effects(n_item, [40, 20, 20])
X = np.column_stack([np.ones(subj.size), cond == "B", cond == "C"])
rt = X @ [600, 25, 45] - 15 * freq + (X * S[subj]).sum(1) + (X * Item[item]).sum(1) + rng.normal(0, 60, subj.size)
d = pd.DataFrame(
    {"subj": [f"s{s:02d}" for s in subj], "item": [f"i{i:02d}" for i in item], "cond": cond, "freq": freq, "rt": rt}
)
print(d.head())

# %%
# The maximal model, by REML. The summary gives lmerTest's t tests (Satterthwaite's df).
m = sparselmm.lmer("rt ~ cond + freq + (1 + cond | subj) + (1 + cond | item)", d)
print(m.summary())

# %%
# lmerTest's type III ANOVA table: an F test per fixed-effect term, Satterthwaite's df by default,
# Kenward–Roger's on request.
print(sparselmm.anova(m))
print(sparselmm.anova(m, ddf="Kenward-Roger"))

# %%
# ``contest`` tests any contrast ``Lβ = 0``. A term's name tests its type III hypothesis (the ``cond``
# row above); a matrix with one row per comparison and ``joint=False`` gives a t test and a confidence
# interval per row — here the three pairwise differences between the conditions. A DataFrame is
# aligned on the fixed effects' names (missing columns count as 0).
print(m.fixef.index.tolist())
print(m.contest("cond").to_string())
pairs = pd.DataFrame({"cond[T.B]": [1.0, 0.0, -1.0], "cond[T.C]": [0.0, 1.0, 1.0]}, index=["B - A", "C - A", "C - B"])
comparisons = m.contest(pairs, joint=False)
comparisons.index = pairs.index
print(comparisons.to_string())

# %%
# The same comparisons with Kenward–Roger's adjusted standard errors and df (pbkrtest).
print(m.contest(pairs, joint=False, ddf="Kenward-Roger").set_axis(pairs.index).to_string())

# %%
# A likelihood-ratio test of ``cond``: lme4's ``anova(m0, m1)`` refits both models by ML; ``drop1``
# removes each term in turn.
m0 = sparselmm.lmer("rt ~ freq + (1 + cond | subj) + (1 + cond | item)", d)
print(sparselmm.anova(m0, m))
print(m.drop1(test="Chisq"))

# %%
# The subjects' and items' condition effects.
fig = m.plot_ranef()
