"""Generalised linear mixed models (``sparselmm.glmer``) on the sparse engine: PIRLS, Laplace, AGQ."""

from .family import Binomial, Family, Poisson, get_family
from .glmer import glmer
from .results import GlmerResult

__all__ = ["Binomial", "Family", "GlmerResult", "Poisson", "get_family", "glmer"]
