"""sparselmm: linear mixed-effects models fitted with lme4's whole-dataset sparse method.

Main entry points: :func:`lmer` (lme4's formula language), :func:`deviance_function` (lme4's
``devFunOnly``), :func:`anova` (lmerTest's F tables, lme4's likelihood-ratio tests) and
:mod:`sparselmm.datasets`.
"""

from . import datasets, scale
from .design import RankDeficiencyWarning
from .errors import (
    ArgumentError,
    ConvergenceWarning,
    DataError,
    FormulaError,
    MemoryLimitError,
    ModelSpecError,
    NumericalError,
    RowsNotHeldError,
    SingularFitWarning,
    SparseLMMError,
)
from .glmm import glmer, glmer_nb
from .inference.anova import anova
from .inference.emm_contrasts import contrast
from .inference.emm_joint_tests import joint_tests
from .inference.emmeans import EmmGrid, emmeans, emtrends
from .inference.emmip import emmip
from .inference.profile import profile
from .inference.ranova import ranova
from .lmer import deviance_function, lmer
from .optimize import OptInfo
from .refit import update
from .residual import corAR1, corCAR1
from .results import LmerResult
from .statsmodels import MixedLM, MixedLMParams, MixedLMResults, mixedlm

__version__ = "0.1.0"

__all__ = [
    "ArgumentError",
    "ConvergenceWarning",
    "DataError",
    "EmmGrid",
    "FormulaError",
    "LmerResult",
    "MixedLM",
    "MixedLMParams",
    "MemoryLimitError",
    "MixedLMResults",
    "ModelSpecError",
    "NumericalError",
    "OptInfo",
    "RankDeficiencyWarning",
    "RowsNotHeldError",
    "SingularFitWarning",
    "SparseLMMError",
    "anova",
    "contrast",
    "corAR1",
    "corCAR1",
    "datasets",
    "deviance_function",
    "emmeans",
    "emmip",
    "emtrends",
    "glmer",
    "glmer_nb",
    "joint_tests",
    "lmer",
    "scale",
    "mixedlm",
    "profile",
    "ranova",
    "update",
]
