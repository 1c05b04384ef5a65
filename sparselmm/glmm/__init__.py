"""Generalised linear mixed models (``sparselmm.glmer``) on the sparse engine: PIRLS, Laplace, AGQ."""

from .family import Binomial, Family, Gamma, InverseGaussian, NegativeBinomial, Poisson, get_family
from .glmer import glmer
from .negbin import GlmerNbResult, glmer_nb
from .results import GlmerResult
from .separation import SeparationError, SeparationWarning

__all__ = [
    "Binomial",
    "Family",
    "Gamma",
    "GlmerNbResult",
    "GlmerResult",
    "InverseGaussian",
    "NegativeBinomial",
    "Poisson",
    "SeparationError",
    "SeparationWarning",
    "get_family",
    "glmer",
    "glmer_nb",
]
