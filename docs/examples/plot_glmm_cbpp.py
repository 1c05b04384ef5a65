"""
A binomial GLMM: contagious bovine pleuropneumonia
==================================================

lme4's ``cbpp``: new cases of CBPP (``incidence``) among the cattle of 15 herds (``size`` animals) in four
periods. The response is the number of cases out of ``size``, written as in R with ``cbind(successes,
failures)``; the herd gets a random intercept on the logit scale.
"""

# %%
# The data (56 herd × period rows), as in lme4.
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import sparselmm

herd = [1] * 4 + [2] * 3 + [3] * 4 + [4] * 4 + [5] * 4 + [6] * 4 + [7] * 4 + [8]
herd += [9] * 4 + [10] * 4 + [11] * 4 + [12] * 4 + [13] * 4 + [14] * 4 + [15] * 4
period = [1, 2, 3, 4, 1, 2, 3, 1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4, 1]
period += [1, 2, 3, 4] * 7
incidence = [2, 3, 4, 0, 3, 1, 1, 8, 2, 0, 2, 2, 0, 2, 0, 5, 0, 0, 1, 3, 0, 0, 1, 8, 1, 3, 0, 12, 2, 0, 0, 0]
incidence += [1, 1, 0, 2, 0, 5, 3, 1, 2, 1, 0, 0, 1, 2, 0, 0, 11, 0, 0, 0, 1, 1, 1, 0]
size = [14, 12, 9, 5, 22, 18, 21, 22, 16, 16, 20, 10, 10, 9, 6, 18, 25, 24, 4, 17, 17, 18, 20, 16, 10, 9, 5, 34]
size += [9, 6, 8, 6, 22, 22, 18, 22, 25, 27, 22, 22, 10, 8, 6, 5, 21, 24, 19, 23, 19, 2, 3, 2, 19, 15, 15, 15]
cbpp = pd.DataFrame(
    {
        "herd": pd.Categorical([str(h) for h in herd], categories=[str(i) for i in range(1, 16)]),
        "incidence": incidence,
        "size": size,
        "period": pd.Categorical([str(p) for p in period]),
    }
)
print(cbpp.head())

# %%
# ``glmer`` with the binomial family (logit link) and the Laplace approximation (``nAGQ=1``), as
# ``glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, binomial)``.
m = sparselmm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp, family="binomial")
print(m.summary())

# %%
# The same model written as a proportion with the number of trials as prior weights — lme4's other
# spelling — gives the same estimates.
cbpp["prop"] = cbpp["incidence"] / cbpp["size"]
m_prop = sparselmm.glmer("prop ~ period + (1 | herd)", cbpp, family="binomial", weights="size")
print(np.column_stack([m.fixef, m_prop.fixef]))

# %%
# Adaptive Gauss–Hermite quadrature with 25 nodes (one scalar random-effects term), lme4's ``nAGQ = 25``.
m25 = sparselmm.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp, nAGQ=25)
print(m25.fixef, m25.theta)

# %%
# Fitted probabilities per herd and period against the observed proportions, and the herds' random
# intercepts (conditional modes with their conditional SDs).
fitted = m.predict(type="response")
print(pd.DataFrame({"observed": cbpp["prop"], "fitted": fitted}).head(8))
re = m.ranef(cond_var=True)["herd"]
print(re.assign(cond_sd=np.asarray(re.attrs["cond_sd"])[:, 0]).head())

# %%
fig, ax = plt.subplots(figsize=(5, 4))
ax.scatter(cbpp["prop"], fitted, c=cbpp["period"].cat.codes, cmap="viridis")
ax.plot([0, 0.6], [0, 0.6], color="0.6", linestyle="--")
ax.set_xlabel("observed proportion")
ax.set_ylabel("fitted probability")
ax.set_title("cbpp: herd × period")
fig.tight_layout()
