"""Pickling support for results that hold a CHOLMOD factor or a formula namespace.

scikit-sparse's CHOLMOD factor cannot be pickled. A result keeps its deviance function (lmer) or PIRLS
model (glmer) for conditional variances, refits and profiles, so pickling replaces the factor by a
:class:`LazyCholesky`: the sparsity pattern, ordering and mode, analysed again on first use after
unpickling (the numeric factor is recomputed anyway, by the next ``solve``). Dense-Schur factors are
plain numpy and pickle as they are.

A formula model (the statsmodels facade) evaluates its formulas in the caller's namespace, whose
modules and local functions do not pickle: :func:`picklable_namespace` keeps only the names the
formulas use, modules by their import name.
"""

from __future__ import annotations

import copy
import importlib
import pickle
import re
import types
from collections.abc import Iterable, Mapping

import scipy.sparse as sp

__all__ = [
    "LazyCholesky",
    "picklable_devfun",
    "picklable_pirls_model",
    "picklable_namespace",
    "restore_namespace",
    "formula_names",
]


class LazyCholesky:
    """A :class:`~sparselmm.linalg.cholmod.SparseCholesky` to be, analysed on first use (after unpickling).

    Every attribute is the analysed factor's; pickling keeps only the pattern, ordering and mode.
    """

    def __init__(self, pattern: sp.csc_matrix, ordering: str = "default", mode: str = "auto"):
        self._pattern = sp.csc_matrix(pattern)
        self._ordering = ordering
        self._mode = mode
        self._real = None

    def _analysed(self):
        if self._real is None:
            from .linalg.cholmod import SparseCholesky

            self._real = SparseCholesky(self._pattern, ordering=self._ordering, mode=self._mode)
        return self._real

    def __getattr__(self, name):
        if name.startswith("__") or name in ("_pattern", "_ordering", "_mode", "_real"):
            raise AttributeError(name)
        return getattr(self._analysed(), name)

    def __getstate__(self):
        return {"_pattern": self._pattern, "_ordering": self._ordering, "_mode": self._mode, "_real": None}

    def __setstate__(self, state):
        self.__dict__.update(state)


def _lazy(chol, pattern) -> LazyCholesky:
    if isinstance(chol, LazyCholesky):
        return LazyCholesky(chol._pattern, chol._ordering, chol._mode)
    return LazyCholesky(pattern, getattr(chol, "ordering", "default"), getattr(chol, "mode", "auto"))


def picklable_factor(factor):
    """``factor`` (a :class:`~sparselmm.linalg.factor.Factor`) ready to pickle: a CHOLMOD factor becomes a copy whose
    analysis is redone on first use; the dense-Schur factors are returned as they are."""
    from .linalg.factor import CholmodFactor

    if not isinstance(factor, CholmodFactor):
        return factor
    new = copy.copy(factor)
    new.chol = _lazy(factor.chol, factor.updater.A)
    new._current = False
    return new


def picklable_devfun(devfun):
    """A shallow copy of a :class:`~sparselmm.deviance.ProfiledDeviance` that pickles (see :func:`picklable_factor`);
    ``devfun`` itself when it pickles already."""
    if devfun is None or not devfun.exact:  # the matrix-free criterion holds only arrays
        return devfun
    chol = picklable_factor(devfun.chol)
    if chol is devfun.chol:
        return devfun
    new = copy.copy(devfun)
    new.chol = chol
    new.state = None  # the new factor holds no θ yet
    return new


def picklable_sparse_cholesky(chol, pattern):
    """A :class:`~sparselmm.linalg.cholmod.SparseCholesky` as a :class:`LazyCholesky` of ``pattern`` (other factors
    unchanged)."""
    from .linalg.cholmod import SparseCholesky

    if isinstance(chol, SparseCholesky | LazyCholesky):
        return _lazy(chol, pattern)
    return chol


def picklable_pirls_model(model):
    """A shallow copy of a glmer fit's :class:`~sparselmm.glmm.pirls.PirlsModel` that pickles: its CHOLMOD
    factor becomes a :class:`LazyCholesky` of the pattern of ``ΛᵀZᵀWZΛ + I`` (the weights do not change the
    pattern); a dense-Schur model, or None, is returned as it is. The copy's numeric factor is computed again
    when the result next needs it (``_factor_at_fit``)."""
    if model is None or getattr(model, "schur", False):
        return model
    pattern = (model.M_lower if model.scalar else model._A_map[4]).copy()
    pattern.data[:] = 1.0
    new = copy.copy(model)
    new.chol = picklable_sparse_cholesky(model.chol, (pattern + sp.identity(model.q, format="csc")).tocsc())
    return new


# ---- formula namespaces ------------------------------------------------------------------------------
def formula_names(texts: Iterable[str | None]) -> set[str]:
    """Every name a formula may read: the identifiers not preceded by a dot (``np`` and ``x`` of
    ``np.log(x)``, ``f`` of ``f(x)``); a superset is harmless, only names of the namespace are kept."""
    names: set[str] = set()
    for text in texts:
        if text:
            names |= set(re.findall(r"(?<![.\w])[A-Za-z_]\w*", str(text)))
    return names


class _ModuleRef:
    """A module in a pickled namespace, imported again by name on unpickling."""

    def __init__(self, name: str):
        self.name = name


def picklable_namespace(context, names: set[str] | None = None) -> tuple[dict | None, list[str]]:
    """The entries of ``context`` that formulas use (all when ``names`` is None), ready to pickle: modules
    by name, values that do not pickle (lambdas, local functions) left out. Returns the namespace and the
    names left out."""
    if context is None:
        return None, []
    if not isinstance(context, Mapping):
        return None, []
    out: dict = {}
    dropped: list[str] = []
    keys = list(context) if names is None else [n for n in names if n in context]
    for key in keys:
        try:
            value = context[key]
        except KeyError:
            continue
        if isinstance(value, types.ModuleType):
            out[key] = _ModuleRef(value.__name__)
            continue
        try:
            pickle.dumps(value)
        except Exception:
            dropped.append(key)
            continue
        out[key] = value
    return out, dropped


def restore_namespace(namespace) -> dict | None:
    """The namespace of :func:`picklable_namespace` with its modules imported again."""
    if namespace is None:
        return None
    out = {}
    for key, value in namespace.items():
        if isinstance(value, _ModuleRef):
            try:
                value = importlib.import_module(value.name)
            except ImportError:
                continue
        out[key] = value
    return out
