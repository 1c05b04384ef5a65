"""Replicates drawn from a fitted model, shared by the parametric bootstrap and the bootstrap LRT: their
seeds, their responses (lme4's ``simulate.merMod``) and the workers that fit them.

Simulation (lme4's ``.simulateFun`` for a Gaussian model)::

    y* = X β̂ + offset + σ̂ Z Λ̂ u* + σ̂ ε / √w,      u* ~ N(0, I_q), ε ~ N(0, I_n)

with ``use_u=True`` replacing ``σ̂ Z Λ̂ u*`` by the fitted ``Z b̂``. σ̂ is the fit's (the REML estimate for a
REML fit, as ``sigma(m)``). For a weighted fit the residuals have the fitted model's variance ``σ̂²/w``;
lme4 1.1-31 draws them with ``σ̂²`` on every row, ignoring the prior weights (measured in
``validation/compare_ci.py``'s simulate section).

Reproducibility: replicate ``i`` draws ``u*`` then ``ε`` from its own generator,
``numpy.random.default_rng(SeedSequence(seed).spawn(nsim)[i])``, so a seeded run gives the same draws in
any order, with any number of workers, and ``simulate(nsim, seed)[:, i]`` is the response of bootstrap
replicate ``i`` with the same seed. Workers are forked processes (each with its own copy of the factor
workspace); where ``fork`` is not available they are threads.

A glmer fit's responses (:class:`GlmmSimulator`, lme4's ``simulate`` of a ``glmerMod``)::

    η* = X β̂ + offset + Z Λ̂ u*,   u* ~ N(0, I_q),   μ* = g⁻¹(η*),   y* ~ family(μ*)

(``use_u=True``: ``η*`` the fitted linear predictor). The family's draw is
:meth:`sparselmm.glmm.Family.draw`: binomial with the fit's trials (a ``cbind`` response's, or the prior
weights of a proportion; they must be whole numbers, as in lme4) and returned as proportions of successes,
the scale glmer fits; Poisson and negative binomial at ``μ*`` (prior weights ignored with a warning, as lme4
does); Gamma and inverse Gaussian with dispersion ``sigma(m)²`` scaled by the prior weights. ``u*`` is not
scaled by σ: a GLMM's random effects are ``Λθ u``. Replicate ``i`` draws ``u*`` then the family's numbers from
its own generator, as above.
"""

from __future__ import annotations

import multiprocessing
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import ModelSpecError, NumericalError, caller_stacklevel

__all__ = ["simulate"]


# ---- seeds and argument checks -----------------------------------------------------------------
def check_nsim(nsim) -> int:
    """``nsim`` as a whole number of replicates >= 1, else :class:`~sparselmm.ModelSpecError`."""
    if isinstance(nsim, bool) or not isinstance(nsim, Integral) or nsim < 1:
        raise ModelSpecError(f"nsim must be a whole number of replicates >= 1, not {nsim!r}.")
    return int(nsim)


def root_seed(seed) -> np.random.SeedSequence:
    """The run's root ``SeedSequence`` (replicate ``i`` draws from its ``spawn(nsim)[i]``)."""
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if seed is None or (isinstance(seed, Integral) and not isinstance(seed, bool) and seed >= 0):
        return np.random.SeedSequence(seed)
    raise ModelSpecError(
        f"seed must be None, a non-negative integer or a numpy.random.SeedSequence, not {type(seed).__name__}."
    )


def n_workers(n_jobs) -> int:
    """The number of workers ``n_jobs`` asks for (``-1``: one per core)."""
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, Integral) or n_jobs == 0 or n_jobs < -1:
        raise ModelSpecError(f"n_jobs must be a positive number of workers or -1 (all cores), not {n_jobs!r}.")
    return (os.cpu_count() or 1) if n_jobs == -1 else int(n_jobs)


# ---- simulation ------------------------------------------------------------------------------
def _marginal_parts(result) -> tuple[np.ndarray, sp.csr_matrix]:
    """What a draw with new random effects adds them to: ``Xβ̂ + offset`` and ``Z Λ̂`` (``b* = Λ̂ u*``)."""
    design = result.design
    fixed = design.X @ result.fixef.to_numpy()
    if design.offset is not None:
        fixed = fixed + design.offset
    return fixed, (design.Zt.T @ result.Lambda).tocsr()


class Simulator:
    """What a draw of ``y*`` needs, formed once: the mean, ``Z Λ̂`` and the residual scale."""

    def __init__(self, result, use_u: bool):
        design = result.design
        self.use_u = bool(use_u)
        self.sigma = result.sigma
        self.q = design.q
        if self.use_u:
            self.mean = result.fitted()
            self.ZLambda = None
        else:
            self.mean, self.ZLambda = _marginal_parts(result)
        w = design.weights
        self.noise_scale = self.sigma if w is None else self.sigma / np.sqrt(w)

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        y = self.mean.copy()
        if not self.use_u:
            y += self.sigma * (self.ZLambda @ rng.standard_normal(self.q))
        y += self.noise_scale * rng.standard_normal(self.mean.size)
        return y

    def draw_deviation(self, rng: np.random.Generator, centre: np.ndarray) -> np.ndarray:
        """``draw(rng) − centre`` from the same random numbers (``centre`` = ``Xβ̂ + offset``), formed without
        the mean so a refit can shift its response by β̂ exactly."""
        e = self.mean - centre if self.use_u else np.zeros(self.mean.size)
        if not self.use_u:
            e += self.sigma * (self.ZLambda @ rng.standard_normal(self.q))
        e += self.noise_scale * rng.standard_normal(self.mean.size)
        return e


class GlmmSimulator:
    """What a draw of a glmer fit's ``y*`` needs, formed once: the linear predictor without the random effects
    (or with the fitted ones, ``use_u``), ``Z Λ̂``, the prior weights and the dispersion (see the module
    docstring)."""

    def __init__(self, result, use_u: bool):
        design, fam = result.design, result.family
        self.family = fam
        self.use_u = bool(use_u)
        self.q = design.q
        self.pw = np.ones(design.n) if design.weights is None else np.asarray(design.weights, dtype=float)
        fam.check_simulable(self.pw)
        if fam.name in ("poisson", "negative.binomial") and np.any(self.pw != 1):
            warnings.warn(
                f"simulate: the prior weights are ignored, as lme4 does for the {fam.name} family",
                UserWarning,
                stacklevel=caller_stacklevel(),
            )
        self.dispersion = float(result.sigma) ** 2 if fam.has_scale else 1.0
        if self.use_u:
            self.eta = np.asarray(result._state["eta"], dtype=float)  # Xβ̂ + offset + Zb̂ of the fit
            self.ZLambda = None
        else:
            self.eta, self.ZLambda = _marginal_parts(result)

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        eta = self.eta if self.use_u else self.eta + self.ZLambda @ rng.standard_normal(self.q)
        mu = self.family.link.linkinv(eta)
        if not self.family.valid_mu(mu):
            raise NumericalError(
                f"A simulated mean is outside the {self.family.name} family's range (μ <= 0 under its "
                f"{self.family.link.name!r} link with the drawn random effects); the log link has no such limit."
            )
        return self.family.draw(mu, self.pw, rng, self.dispersion)


def simulator(result, use_u: bool):
    """The draws of ``result``'s responses: :class:`GlmmSimulator` for a glmer fit, :class:`Simulator` otherwise."""
    if getattr(result, "family", None) is not None:
        return GlmmSimulator(result, use_u)
    return Simulator(result, use_u)


def simulate(result, nsim: int = 1, seed=None, use_u: bool = False) -> pd.DataFrame:
    """Responses simulated from the fitted model (lme4's ``simulate.merMod``).

    Parameters
    ----------
    result : LmerResult or GlmerResult
    nsim : int
        Number of simulated responses.
    seed : int or numpy.random.SeedSequence, optional
        Column ``i`` is drawn from ``SeedSequence(seed).spawn(nsim)[i]`` (see the module docstring).
    use_u : bool
        Condition on the fitted random effects (lme4's ``use.u = TRUE``) instead of drawing new ones.

    Returns
    -------
    DataFrame
        n rows (the fitted rows, indexed by their position in the caller's data) and columns
        ``sim_1`` … ``sim_nsim``. A glmer fit's responses are on the scale it fits: 0/1, proportions of
        successes out of the fit's trials (a ``cbind`` or weighted binomial response), counts, positive values.

    Raises
    ------
    sparselmm.ModelSpecError
        ``nsim`` is not a whole number >= 1, a bad ``seed``, or a binomial fit whose trials are not whole
        numbers.
    """
    nsim = check_nsim(nsim)
    sim = simulator(result, use_u)
    children = root_seed(seed).spawn(nsim)
    values = np.column_stack([sim.draw(np.random.default_rng(s)) for s in children])
    return pd.DataFrame(values, index=pd.Index(result.design.data.rows), columns=[f"sim_{i + 1}" for i in range(nsim)])


# ---- the workers ------------------------------------------------------------------------------
def run_replicates(replicator, seeds: list[np.random.SeedSequence], workers: int, bar) -> list:
    """``replicator.many`` over ``enumerate(seeds)`` in chunks, in this process (``workers == 1``) or on
    ``workers`` workers; ``bar`` (a progress bar or None) counts the replicates and is closed at the end.

    A replicator has ``many(tasks)`` (a list of ``(index, seed)``, giving one output per task, the index
    first) and ``clone()`` (a replicator with its own factor workspaces, for another thread). The outputs
    come in no particular order.
    """
    nsim = len(seeds)
    tasks = list(enumerate(seeds))
    per_chunk = max(1, min(50, nsim // (workers * 8) if workers > 1 else 25))
    chunks = [tasks[i : i + per_chunk] for i in range(0, nsim, per_chunk)]
    try:
        if workers > 1:
            return _run_parallel(replicator, chunks, workers, bar)
        outputs = []
        for chunk in chunks:
            outputs.extend(replicator.many(chunk))
            if bar is not None:
                bar.update(len(chunk))
        return outputs
    finally:
        if bar is not None:
            bar.close()


_WORKER = None  # the forked workers' replicator (inherited, never pickled)


def _work(tasks):
    return _WORKER.many(tasks)


def _run_parallel(replicator, chunks, workers: int, bar) -> list:
    global _WORKER
    outputs = []
    if "fork" in multiprocessing.get_all_start_methods():
        _WORKER = replicator  # inherited by the forked workers; func and the factor are never pickled
        try:
            with multiprocessing.get_context("fork").Pool(min(workers, len(chunks))) as pool:
                for out in pool.imap_unordered(_work, chunks):
                    outputs.extend(out)
                    if bar is not None:
                        bar.update(len(out))
        finally:
            _WORKER = None
        return outputs
    # no fork (Windows, some macOS set-ups): threads, each with its own factor workspace
    local = [replicator] + [replicator.clone() for _ in range(workers - 1)]

    def serve(worker: int):  # one thread per replicator: a factor workspace is never used by two threads
        for chunk in chunks[worker::workers]:
            out = local[worker].many(chunk)
            outputs.extend(out)  # list.extend is atomic under the GIL
            if bar is not None:
                bar.update(len(out))

    with ThreadPoolExecutor(workers) as ex:
        for fut in [ex.submit(serve, w) for w in range(workers)]:
            fut.result()
    return outputs
