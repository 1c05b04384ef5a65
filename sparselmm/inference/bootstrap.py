"""The parametric bootstrap of an lmer or glmer fit: lme4's ``bootMer`` (``type = "parametric"``) with
``confint.bootMer`` (``boot::boot.ci``'s percentile, basic and normal intervals).

Each replicate draws a response from the fit (:mod:`sparselmm.inference.replicates`: lme4's ``simulate``,
one seed per replicate, the workers) and refits the model to it from θ̂ reusing the fit's factorisation
(:mod:`sparselmm.inference.bootstrap_fits`); :class:`BootstrapResult` holds the statistics of the refits.
The fitted model's ``simulate`` is :func:`sparselmm.inference.replicates.simulate`, its ``refit``,
``refit_ml`` and ``refit_reml`` are :mod:`sparselmm.refit`'s. A glmer fit's replicates are drawn from its family
and refitted by glmer's refit (:func:`sparselmm.glmm.fit.refit_glmm`); its default statistics are lme4's for a
GLMM (:meth:`sparselmm.glmm.GlmerResult.boot_statistics`: no ``.sigma`` without a dispersion).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import norm

from ..errors import ModelSpecError, NumericalError, caller_stacklevel
from ..parameters import check_level, estimates, percent_labels, select_parameters
from .bootstrap_fits import make_replicator
from .replicates import check_nsim, n_workers, root_seed, run_replicates

__all__ = ["BootstrapResult", "bootstrap"]

BOOT_TYPES = ("perc", "basic", "norm")


def _t0(result, func) -> pd.Series:
    if func is None:  # lme4's confint(method = "boot") statistics (a glmer fit's: its boot_statistics)
        return result.boot_statistics() if getattr(result, "family", None) is not None else estimates(result)
    out = func(result)
    if isinstance(out, pd.Series):
        return pd.Series(out.to_numpy(dtype=float), index=out.index.astype(str), name="t0")
    if isinstance(out, dict):
        return pd.Series({str(k): float(v) for k, v in out.items()}, name="t0")
    vals = np.atleast_1d(np.asarray(out, dtype=float)).ravel()
    return pd.Series(vals, index=[f"t{i + 1}" for i in range(vals.size)], name="t0")


def _progress_bar(total: int, progress):
    from ..progress import progress_bar  # the package's one policy for bars

    return progress_bar(progress, total, desc="bootstrap", unit="rep")


@dataclass
class BootstrapResult:
    """Replicates of a parametric bootstrap (lme4's ``bootMer`` result).

    Attributes
    ----------
    draws : DataFrame
        One row per replicate (index 0..nsim−1), one column per statistic; NaN rows for failed replicates.
    t0 : Series
        The statistics on the original fit.
    failures : DataFrame
        ``replicate`` and ``reason`` of each replicate whose refit raised (empty when none did).
    diagnostics : DataFrame
        Per replicate: ``n_evals``, ``converged`` (the optimiser reported success), ``singular``.
    seed : int or sequence of int
        The root seed's entropy: ``bootstrap(..., seed=np.random.SeedSequence(seed))`` repeats the run.
    seconds : float
        Wall time of the replicates.
    """

    draws: pd.DataFrame
    t0: pd.Series
    failures: pd.DataFrame
    diagnostics: pd.DataFrame
    seed: object
    seconds: float
    n_jobs: int = 1
    notes: list[str] = field(default_factory=list)

    @property
    def nsim(self) -> int:
        """Number of replicates (failed ones included)."""
        return len(self.draws)

    def _print_lines(self) -> list[str]:
        """A header line, then per statistic the original value, bias and standard error (``print(boot)``'s
        "Bootstrap Statistics"), then any notes."""
        from ..printing import _char_matrix, r_format

        failed = len(self.failures)
        head = (
            f"Parametric bootstrap: {self.nsim} replicates ({failed} failed), {self.draws.shape[1]} statistics, "
            f"{self.seconds:.2f} s"
        )
        summ = self.summary()
        cols = ["original", "bias", "std. error"]
        cells = [r_format(summ[c].to_numpy(dtype=float), 5) for c in cols]
        rows = [[cells[j][i] for j in range(len(cols))] for i in range(len(summ))]
        lines = [head, "", "Bootstrap statistics:"] + _char_matrix(cols, rows, [str(n) for n in summ.index])
        return lines + [f"note: {n}" for n in self.notes]

    def __repr__(self) -> str:
        return "\n".join(self._print_lines())

    def __str__(self) -> str:
        return self.__repr__()

    def _repr_html_(self) -> str:
        from ..printing import html_pre

        return html_pre(self.__repr__())

    def summary(self) -> pd.DataFrame:
        """Per statistic: the original value, bias (mean − t0), bootstrap SD and mean (as ``print(boot)``)."""
        finite = self.draws.where(np.isfinite(self.draws))
        return pd.DataFrame(
            {
                "original": self.t0,
                "bias": finite.mean() - self.t0,
                "std. error": finite.std(ddof=1),
                "mean": finite.mean(),
                "n": finite.notna().sum(),
            }
        )

    def confint(self, parm=None, level: float = 0.95, type: str = "perc") -> pd.DataFrame:
        """Bootstrap intervals, as lme4's ``confint.bootMer`` (``boot::boot.ci`` per statistic).

        Parameters
        ----------
        parm : str or list, optional
            Statistics to report (names, ``"theta_"``/``"beta_"`` for the default statistics); all by default.
        level : float
        type : {"perc", "basic", "norm"}
            ``"perc"``: quantiles of the draws by ``boot``'s interpolation on the normal scale between
            order statistics (``norm.inter``); ``"basic"``: ``2 t0 −`` those quantiles, reversed;
            ``"norm"``: ``t0 − bias ∓ z·sd``. Non-finite draws are left out, as ``boot.ci`` does.

        Returns
        -------
        DataFrame
            One row per statistic, columns named by the percentages (``"2.5 %"``, ``"97.5 %"`` for
            ``level=0.95``); NaN where no replicate gave a finite value.

        Raises
        ------
        sparselmm.ModelSpecError
            An unknown ``type`` or statistic name, or ``level`` outside (0, 1).
        """
        level = check_level(level)
        if type not in BOOT_TYPES:
            raise ModelSpecError(f"type={type!r} is not a bootstrap interval type; choose one of {list(BOOT_TYPES)}.")
        names = list(self.draws.columns)
        n_var = sum(1 for n in names if n.startswith(".sig"))
        which = select_parameters(parm, names, n_var)
        table = np.full((len(which), 2), np.nan)
        for row, j in enumerate(which):
            t = self.draws.iloc[:, j].to_numpy(dtype=float)
            t = t[np.isfinite(t)]
            if t.size:
                table[row] = _boot_ci(t, float(self.t0.iloc[j]), level, type)
        return pd.DataFrame(table, index=[names[j] for j in which], columns=percent_labels(level))


def _norm_inter(t: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``boot:::norm.inter``: quantiles of ``t`` interpolated on the normal scale between order statistics."""
    t = np.sort(t)
    R = t.size
    rk = (R + 1) * alpha
    if not np.all((rk > 1) & (rk < R)):
        warnings.warn("extreme order statistics used as endpoints", stacklevel=caller_stacklevel())
    k = np.trunc(rk).astype(int)
    out = np.empty(alpha.size)
    for i in range(alpha.size):
        if k[i] == rk[i]:
            out[i] = t[k[i] - 1]
        elif k[i] == 0:
            out[i] = t[0]
        elif k[i] == R:
            out[i] = t[R - 1]
        else:
            z, z_lo, z_hi = norm.ppf(alpha[i]), norm.ppf(k[i] / (R + 1)), norm.ppf((k[i] + 1) / (R + 1))
            out[i] = t[k[i] - 1] + (z - z_lo) / (z_hi - z_lo) * (t[k[i]] - t[k[i] - 1])
    return out


def _boot_ci(t: np.ndarray, t0: float, level: float, type: str) -> np.ndarray:
    """One statistic's interval by ``boot::boot.ci`` (``perc.ci``, ``basic.ci``, ``norm.ci``)."""
    if type == "perc":
        return _norm_inter(t, np.array([(1 - level) / 2, (1 + level) / 2]))
    if type == "basic":
        q = _norm_inter(t, np.array([(1 + level) / 2, (1 - level) / 2]))
        return 2 * t0 - q
    bias = float(np.mean(t)) - t0
    merr = float(np.std(t, ddof=1)) * norm.ppf((1 + level) / 2) if t.size > 1 else np.nan
    return np.array([t0 - bias - merr, t0 - bias + merr])


def bootstrap(
    result,
    nsim: int,
    func: Callable | None = None,
    seed=None,
    n_jobs: int = 1,
    progress: bool | None = None,
    tol: float | None = None,
    use_u: bool = False,
    control: dict | None = None,
) -> BootstrapResult:
    """Parametric bootstrap of an lmer or glmer fit (lme4's ``bootMer(type = "parametric")``).

    Each replicate simulates a response (:func:`~sparselmm.inference.replicates.simulate`), refits the model
    to it from θ̂ on the fit's criterion (REML or ML) reusing the fit's factorisation, and evaluates ``func``
    on the refit. A glmer fit's replicates are refitted by :func:`sparselmm.glmm.fit.refit_glmm` from its
    estimates (``tol`` and ``control`` are lmer's).

    Parameters
    ----------
    result : LmerResult or GlmerResult
    nsim : int
        Number of replicates (>= 1).
    func : callable, optional
        ``func(fit) -> Series | dict | array`` of statistics. Default: the parameters of
        :func:`sparselmm.parameters.parameter_names` (``.sig01`` …, ``.sigma``, fixed effects), as
        lme4's ``confint(method = "boot")`` uses; computed without building a result per replicate (a glmer
        fit's: :meth:`~sparselmm.glmm.GlmerResult.boot_statistics`).
        A custom ``func`` gets an :class:`~sparselmm.results.LmerResult` whose factor workspace is reused
        by the next replicate: take what you need from it and do not keep it.
    seed : int or numpy.random.SeedSequence, optional
        Makes the run reproducible, for any ``n_jobs``.
    n_jobs : int
        Worker processes (forked; ``-1``: one per core). ``func`` need not be picklable.
    progress : bool or None
        Progress bar on stderr (tqdm if installed): None (default) only for runs that last more than 2 s,
        on a terminal or in a notebook; True always; False never (:mod:`sparselmm.progress`).
    tol : float, optional
        Stopping tolerance of the replicate fits, in deviance units. On the exact-gradient path: the
        predicted decrease of the criterion at which the quasi-Newton fit stops (default ``REFIT_TOL`` =
        1e-8 of :mod:`sparselmm.newton`, θ within ~1e-4 standard errors of each replicate's
        optimum; 1e-6 saves ~12 % of the evaluations and moves no statistic by more than 0.5 % of its
        bootstrap SD on sleepstudy). On the BOBYQA path: its absolute tolerances on the deviance and θ
        (lme4's 1e-8), or for L-BFGS-B the same as a reduction relative to the fit's deviance.
    use_u : bool
        Simulate conditionally on the fitted random effects (lme4's ``use.u``).
    control : dict, optional
        Optimiser settings (see :func:`sparselmm.lmer`); given, the replicates use the fit's optimiser
        (BOBYQA or L-BFGS-B) with them instead of the quasi-Newton path.

    Returns
    -------
    BootstrapResult
    """
    from ..covstruct import refuse_structured

    refuse_structured(result.design, "Parametric bootstrap refits", "or use confint(method='Wald')")
    nsim = check_nsim(nsim)
    workers = n_workers(n_jobs)
    root = root_seed(seed)
    t0 = _t0(result, func)
    names = list(t0.index)
    replicator = make_replicator(result, func, names if func is not None else None, use_u, tol, control)
    seeds = root.spawn(nsim)
    bar = _progress_bar(nsim, progress)
    started = time.perf_counter()
    outputs = run_replicates(replicator, seeds, workers, bar)
    seconds = time.perf_counter() - started
    if all(o[1] is None for o in outputs):
        raise NumericalError(f"All {nsim} bootstrap replicates failed; the first failed with: {outputs[0][2]}")
    outputs.sort(key=lambda o: o[0])
    draws = np.full((nsim, len(names)), np.nan)
    failures = []
    for i, values, reason, *_ in outputs:
        if values is None:
            failures.append((i, reason))
        elif values.size != len(names):
            failures.append((i, f"func returned {values.size} values on this replicate, {len(names)} on the fit"))
        else:
            draws[i] = values
    diagnostics = pd.DataFrame(
        [o[3:] for o in outputs], columns=["n_evals", "converged", "singular"], index=pd.RangeIndex(nsim)
    )
    diagnostics.index.name = "replicate"
    notes = []
    if failures:
        notes.append(f"{len(failures)} of {nsim} replicates failed; see .failures")
    return BootstrapResult(
        draws=pd.DataFrame(draws, columns=names, index=pd.RangeIndex(nsim, name="replicate")),
        t0=t0,
        failures=pd.DataFrame(failures, columns=["replicate", "reason"]),
        diagnostics=diagnostics,
        seed=root.entropy,
        seconds=seconds,
        n_jobs=workers,
        notes=notes,
    )
