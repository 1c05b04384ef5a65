"""The facade's few contacts with statsmodels itself, all optional.

statsmodels is not a dependency of sparselmm, but its users filter on its warning classes and pass its
objects around (``summary_col`` on results, penalty objects to ``fit_regularized``). When statsmodels is
importable, the facade's warnings also derive from statsmodels' classes (so
``warnings.simplefilter("ignore", statsmodels.tools.sm_exceptions.ConvergenceWarning)`` silences ours too)
and ``summary()`` returns statsmodels' own ``Summary``; without it, sparselmm's classes and a
look-alike summary are used. Importing the two statsmodels modules costs ~15 ms once pandas and scipy
are loaded.
"""

from __future__ import annotations

from ..errors import ConvergenceWarning, SingularFitWarning

__all__ = [
    "HAVE_STATSMODELS",
    "MixedLMConvergenceWarning",
    "SingularCovarianceWarning",
    "UnidentifiableWarning",
    "is_penalty",
    "statsmodels_summary2",
]

try:  # pragma: no branch - either way is tested
    from statsmodels.tools.sm_exceptions import ConvergenceWarning as _SMConvergence
    from statsmodels.tools.sm_exceptions import ModelWarning as _SMModelWarning
    from statsmodels.tools.sm_exceptions import SingularMatrixWarning as _SMSingular

    HAVE_STATSMODELS = True
except Exception:  # a broken statsmodels install must not break sparselmm
    HAVE_STATSMODELS = False

    class _SMConvergence(UserWarning):  # type: ignore[no-redef]
        pass

    class _SMModelWarning(UserWarning):  # type: ignore[no-redef]
        pass

    class _SMSingular(UserWarning):  # type: ignore[no-redef]
        pass


class SingularCovarianceWarning(SingularFitWarning, _SMSingular):
    """A boundary (singular) fit of the facade: a variance estimated as zero or a correlation as ±1.

    Derives from sparselmm's :class:`~sparselmm.SingularFitWarning` and, when statsmodels is installed,
    from statsmodels' ``SingularMatrixWarning`` (what statsmodels' MixedLM emits for a singular random
    effects covariance), so filters on either class apply.
    """


class MixedLMConvergenceWarning(ConvergenceWarning, _SMConvergence):
    """A convergence problem of a facade fit; also a statsmodels ``ConvergenceWarning`` when installed."""


class UnidentifiableWarning(_SMModelWarning):
    """A model statsmodels fits but lme4 refuses: as many random effects (or levels) as observations."""


def statsmodels_summary2():
    """statsmodels' ``iolib.summary2`` module, or None when statsmodels is not importable."""
    if not HAVE_STATSMODELS:
        return None
    try:
        from statsmodels.iolib import summary2
    except Exception:
        return None
    return summary2


def is_penalty(obj) -> bool:
    """A statsmodels ``Penalty`` (or anything shaped like one: ``func(params)`` and ``deriv(params)``)."""
    return callable(getattr(obj, "func", None)) and callable(getattr(obj, "deriv", None))
