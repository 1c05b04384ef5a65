"""``MixedLM.data``: the names and the original inputs of a model, as statsmodels' data wrapper holds them.

statsmodels keeps a ``ModelData``/``PandasData`` object on every model; code written for it (and helpers
such as ``statsmodels.iolib.summary2.summary_col``) reads the names from there. This is a plain record
with the attributes statsmodels' MixedLM sets or that its data wrapper offers, filled once when the model
is built; it holds references to the model's arrays, not copies.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["ModelData"]


class ModelData:
    """Names and original data of a :class:`~sparselmm.MixedLM` (statsmodels' ``model.data``).

    Attributes
    ----------
    endog, exog : ndarray
        The response and fixed-effects design the model uses (rows with missing values dropped).
    orig_endog, orig_exog : Series/DataFrame or ndarray
        The same rows as given: pandas objects when the model was built from pandas or a formula.
    ynames : str
        Name of the response.
    xnames : list of str
        Names of the fixed effects (``exog`` columns).
    param_names : list of str
        Names of the packed parameters: fixed effects, ``cov_re`` elements (``"a Var"``,
        ``"a x b Cov"``), variance components (``"name Var"``).
    exog_re_names : list of str
        Names of the group's random coefficients (``["Group Var"]`` for statsmodels' default random
        intercept of an array model, as statsmodels names it).
    exog_re_names_full : list of str
        Names of the ``cov_re`` parameters.
    vcomp_names : list of str
    cov_names : list of str
        Same as ``param_names``.
    row_labels : Index or None
        The index of the rows when the input was pandas.
    frame : DataFrame or None
        The data a formula model was built from (after ``subset`` and dropped rows).
    formula : str or None
    model_spec
        formulaic's ``ModelSpec`` of the fixed-effects part (formula models), else None.
    groups, exog_re : ndarray
    k_constant : int
        1 if ``exog`` has a constant column, else 0; ``const_idx`` its position (or None).
    missing : str
    missing_row_idx : ndarray or None
        Positions (in the data as given) of the rows dropped for missing values.
    """

    def __init__(
        self,
        model,
        orig_endog,
        orig_exog,
        row_labels=None,
        frame=None,
        model_spec=None,
        missing_row_idx=None,
    ):
        self.endog = model.endog
        self.exog = model.exog
        self.orig_endog = orig_endog
        self.orig_exog = orig_exog
        self.groups = model.groups
        self.exog_re = model.exog_re
        self.ynames = model.endog_names
        self.xnames = list(model.exog_names)
        self.param_names = list(model.param_names)
        self.exog_re_names = list(model.exog_re_names)
        self.exog_re_names_full = list(model.exog_re_names_full)
        self.vcomp_names = list(model.vcomp_names)
        self.row_labels = row_labels
        self.frame = frame
        self.formula = model.formula
        self.model_spec = model_spec
        self.design_info = None  # statsmodels' patsy attribute; formulaic's spec is ``model_spec``
        self.missing = model.missing
        self.missing_row_idx = None if missing_row_idx is None else np.asarray(missing_row_idx, dtype=np.int64)
        X = np.asarray(model.exog)
        const = []
        if X.shape[0] and X.shape[1]:
            const = np.flatnonzero((np.ptp(X, axis=0) == 0) & np.any(X != 0, axis=0))
        self.const_idx = int(const[0]) if len(const) else None
        self.k_constant = 1 if len(const) else 0

    @property
    def cov_names(self) -> list[str]:
        return self.param_names

    @property
    def endog_names(self) -> str:
        return self.ynames

    @property
    def exog_names(self) -> list[str]:
        return self.xnames

    def _remove(self) -> None:
        """Drop the data arrays (``results.remove_data()``); names are kept."""
        self.endog = self.exog = self.orig_endog = self.orig_exog = None
        self.groups = self.exog_re = self.frame = None

    def __repr__(self) -> str:
        shape = None if self.exog is None else tuple(np.shape(self.exog))
        kind = "pandas" if isinstance(self.orig_exog, pd.DataFrame | pd.Series) else "array"
        return f"<sparselmm MixedLM data: exog {shape}, {kind}, y={self.ynames!r}, x={self.xnames}>"
