"""statsmodels' ``MixedLM`` API on sparselmm's sparse engine.

``from sparselmm import MixedLM, mixedlm`` in place of ``statsmodels.api.MixedLM`` /
``statsmodels.formula.api.mixedlm``. Modules: :mod:`.params` (MixedLMParams, VCSpec), :mod:`.structure`
(groups, exog_re, exog_vc → one sparse design), :mod:`.likelihood` (statsmodels' log-likelihood and its exact
derivatives from the engine), :mod:`.model` (MixedLM), :mod:`.from_formula` (its formula interface),
:mod:`.fitting` (its ``fit`` and ``fit_regularized``), :mod:`.distribution` (``get_distribution``),
:mod:`.results` (MixedLMResults), :mod:`.data` (``model.data``), :mod:`.summary`, :mod:`.contrast`,
:mod:`._compat` (the optional contacts with statsmodels).
"""

from ._compat import MixedLMConvergenceWarning, SingularCovarianceWarning, UnidentifiableWarning
from .data import ModelData
from .model import MixedLM, MixedLMDistribution, UnsupportedOptionError, mixedlm
from .params import MixedLMParams, VCSpec
from .results import MixedLMResults, load_pickle

load = load_pickle  # statsmodels.api.load

__all__ = [
    "MixedLM",
    "MixedLMConvergenceWarning",
    "MixedLMDistribution",
    "MixedLMParams",
    "MixedLMResults",
    "ModelData",
    "SingularCovarianceWarning",
    "UnidentifiableWarning",
    "UnsupportedOptionError",
    "VCSpec",
    "load",
    "load_pickle",
    "mixedlm",
]
