"""Generalised linear mixed models (``sparselmm.glmer``) on the sparse engine: PIRLS, Laplace, AGQ."""

from .family import Binomial, Family, NegativeBinomial, Poisson, get_family
from .glmer import glmer
from .results import GlmerResult

__all__ = ["Binomial", "Family", "GlmerResult", "NegativeBinomial", "Poisson", "get_family", "glmer"]
