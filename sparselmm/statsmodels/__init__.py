"""statsmodels' ``MixedLM`` API on sparselmm's sparse engine.

``from sparselmm import MixedLM, mixedlm`` in place of ``statsmodels.api.MixedLM`` /
``statsmodels.formula.api.mixedlm``. Modules: :mod:`.params` (MixedLMParams, VCSpec), :mod:`.structure`
(groups, exog_re, exog_vc → one sparse design), :mod:`.likelihood` (statsmodels' log-likelihood from the
engine), :mod:`.model` (MixedLM), :mod:`.results` (MixedLMResults), :mod:`.summary`, :mod:`.contrast`.
"""

from .model import MixedLM, UnsupportedOptionError, mixedlm
from .params import MixedLMParams, VCSpec
from .results import MixedLMResults

__all__ = ["MixedLM", "MixedLMParams", "MixedLMResults", "UnsupportedOptionError", "VCSpec", "mixedlm"]
