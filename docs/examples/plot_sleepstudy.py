"""
sleepstudy: random intercepts and slopes
========================================

lme4's ``sleepstudy``: reaction times of 18 subjects over 10 days of sleep deprivation. Each subject gets
their own intercept and slope for ``Days``, correlated — in lme4's notation ``(Days | Subject)``.
"""

# %%
# Fit by REML, as ``lmer(Reaction ~ Days + (Days | Subject), sleepstudy)`` in R.
import pandas as pd

import sparselmm

sleep = sparselmm.datasets.load("sleepstudy")
m = sparselmm.lmer("Reaction ~ Days + (Days | Subject)", sleep)
print(m.summary())

# %%
# Estimates as data: ``fixef``; the variance components ``varcorr``, which print as lme4's
# ``print(VarCorr(m))`` and are a DataFrame in the layout of ``as.data.frame(VarCorr(m))``; the relative
# covariance parameters ``theta`` (``getME(m, "theta")``) and the residual SD.
print(m.fixef)
print(m.varcorr)
print(m.varcorr.to_frame())
print("theta:", m.theta, "sigma:", m.sigma, "singular:", m.is_singular())

# %%
# Conditional modes of the random effects (``ranef``) and the per-subject coefficients (``coef``).
print(m.ranef()["Subject"].head())
print(m.coef()["Subject"].head())

# %%
# The caterpillar plot (lme4's ``dotplot(ranef(m, condVar = TRUE))``): each subject's modes with 95 %
# intervals from the conditional variances, ordered by the intercept.
fig = m.plot_ranef()

# %%
# Residuals against fitted values (lme4's ``plot(m)``).
fig = m.plot_residuals()

# %%
# Confidence intervals with lme4's parameter names: Wald intervals for the fixed effects, profile
# intervals for every parameter (``confint(m)`` in R; a REML fit is profiled on the ML criterion, as
# lme4 does).
print(m.confint(method="Wald"))
print(m.confint())

# %%
# The profile itself: ζ against each parameter (lme4's ``xyplot(profile(m))``), a straight line where the
# likelihood is quadratic.
prof = m.profile()
fig = prof.plot()

# %%
# Predictions for new data: with the subjects' random effects, or for a new subject (``re_form="~0"``,
# the population curve).
new = pd.DataFrame({"Days": [0, 5, 9], "Subject": pd.Categorical(["308"] * 3)})
print(m.predict(new))
print(m.predict(new, re_form="~0"))

# %%
# Is the correlated slope needed? Compare with uncorrelated effects ``(Days || Subject)`` by a
# likelihood-ratio test (both refitted by ML first, as lme4's ``anova`` does).
m_uncorrelated = sparselmm.lmer("Reaction ~ Days + (Days || Subject)", sleep)
print(sparselmm.anova(m_uncorrelated, m))
