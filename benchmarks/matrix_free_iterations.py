"""The matrix-free deviance (:mod:`sparselmm.linalg.matrix_free`): PCG iterations as levels grow, and accuracy.

``iterations``: PCG iterations to ``rtol = 1e-10`` of the p + 1 PLS solves (the largest of them) at three θ,
on users × items crossed designs with heavy-tailed activity (``workloads.crossed_frame``) from 1e4 to 1e6
rows, for three preconditioners:

* ``jacobi`` — CG on ``C = ΛᵀZᵀWZΛ + I`` preconditioned by its diagonal;
* ``sgs`` — CG on ``C`` with the symmetric block Gauss–Seidel (backfitting) preconditioner
  ``(D + L) D⁻¹ (D + Lᵀ)`` over the terms' (diagonal) blocks (Ghosh, Hastie & Owen 2022);
* ``schur`` — the first term eliminated exactly (its block is diagonal), CG on the Schur complement ``S``
  preconditioned by its exact diagonal: what :class:`~sparselmm.linalg.matrix_free.MatrixFreeDeviance` does.

``accuracy``: against the exact :class:`~sparselmm.deviance.ProfiledDeviance` (dense-Schur factor), the
deviance and gradient errors at the exact optimum with their estimated standard errors, then both minimised
with scipy's L-BFGS-B from lme4's start: the exact deviance at the approximate θ minus the exact minimum,
θ's relative error, β's error over its standard error, evaluations and seconds; and a sweep over the number
of probes and their seed.

Run ``python benchmarks/matrix_free_iterations.py iterations`` (``--large``: also 3e6 rows, 600,000 × 240,000
levels) or ``... accuracy`` (``--quick``: without the 1e6-row design; ``--sweep 4 8 32``: also those numbers of
probes, each with the ``--seeds``). Each prints markdown tables.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workloads import crossed_frame  # noqa: E402

from sparselmm.crossprod import cross_products  # noqa: E402
from sparselmm.design import build_design  # noqa: E402
from sparselmm.deviance import ProfiledDeviance  # noqa: E402
from sparselmm.formula import parse_formula  # noqa: E402
from sparselmm.linalg.matrix_free import MatrixFreeDeviance, pcg  # noqa: E402

FORMULA = "y ~ x + (1|user) + (1|item)"
RTOL = 1e-10

# (rows, users, items): the benchmark workloads crossed_1e4/1e5/1e6 and sparser ones with ~5 and ~12 rows per level
ITERATION_DESIGNS = [
    (10_000, 1_000, 1_000),
    (10_000, 2_000, 800),
    (100_000, 10_000, 2_000),
    (100_000, 20_000, 8_000),
    (1_000_000, 50_000, 5_000),
    (1_000_000, 200_000, 80_000),
]
LARGE_DESIGNS = [(3_000_000, 600_000, 240_000)]  # with --large
ITERATION_THETAS = [(0.8, 0.5), (3.0, 2.0), (10.0, 8.0)]


def design_of(frame: pd.DataFrame, formula: str = FORMULA):
    design = build_design(parse_formula(formula), frame)
    return design, cross_products(design)


def strong_frame(seed: int, n: int, n_users: int, n_items: int, sd_user: float, sd_item: float) -> pd.DataFrame:
    """``crossed_frame``'s rows with larger random effects (θ near ``sd_user``, ``sd_item``)."""
    frame = crossed_frame(seed, n, n_users, n_items)
    rng = np.random.default_rng(seed + 7)
    bu = sd_user * rng.normal(size=n_users)
    bi = sd_item * rng.normal(size=n_items)
    y = 1.0 + 0.5 * frame["x"] + bu[frame["user"] - 1] + bi[frame["item"] - 1] + rng.normal(size=n)
    return frame.assign(y=y)


# ---- iteration counts ----------------------------------------------------------------------------------
def _preconditioned_counts(design, cross, theta) -> dict[str, int]:
    """Largest PCG iteration count of the p + 1 solves for each preconditioner."""
    G = cross.ZtWZ.tocsr()
    terms = design.terms
    lam = np.concatenate([np.full(t.q, theta[t.theta_offset]) for t in terms])
    b = lam[:, None] * np.column_stack([cross.ZtWX, cross.ZtWy])
    d = 1.0 + lam * lam * G.diagonal()
    blocks = [slice(t.offset, t.offset + t.q) for t in terms]

    def C_times(V):
        return V + lam[:, None] * (G @ (lam[:, None] * V))

    # the off-diagonal blocks C_ij = λ_i G_ij λ_j (i ≠ j) of the term partition
    off = {
        (i, j): (theta[terms[i].theta_offset] * theta[terms[j].theta_offset]) * G[bi, bj]
        for i, bi in enumerate(blocks)
        for j, bj in enumerate(blocks)
        if i != j
    }

    def sgs(R):
        # forward sweep (D + L) X = R, then backward (D + U) Y = D X
        X = np.empty_like(R)
        for i, bi in enumerate(blocks):
            acc = R[bi].copy()
            for j in range(i):
                acc -= off[i, j] @ X[blocks[j]]
            X[bi] = acc / d[bi, None]
        DX = d[:, None] * X
        Y = np.empty_like(R)
        for i in reversed(range(len(blocks))):
            bi = blocks[i]
            acc = DX[bi].copy()
            for j in range(i + 1, len(blocks)):
                acc -= off[i, j] @ Y[blocks[j]]
            Y[bi] = acc / d[bi, None]
        return Y

    out = {"jacobi": int(pcg(C_times, b, 1.0 / d, RTOL, 5000)[1].max())}
    out["sgs"] = int(_pcg_general(C_times, b, sgs, RTOL, 5000).max())
    mf = MatrixFreeDeviance(design, cross, reml=True, rtol=RTOL, maxiter=5000)
    out["schur"] = int(mf.solve_C(np.asarray(theta, dtype=float), b, return_iterations=True)[1].max())
    return out


def _pcg_general(apply, B, precondition, rtol, maxiter):
    """Iteration counts of CG with a general preconditioner (one column at a time)."""
    counts = []
    for col in B.T:
        x, r = np.zeros_like(col), col.copy()
        z = precondition(r[:, None])[:, 0]
        p, rz, bn = z.copy(), r @ z, np.linalg.norm(col)
        it = 0
        while it < maxiter:
            it += 1
            Ap = apply(p[:, None])[:, 0]
            a = rz / (p @ Ap)
            x += a * p
            r -= a * Ap
            if np.linalg.norm(r) <= rtol * bn:
                break
            z = precondition(r[:, None])[:, 0]
            rz, rz_old = r @ z, rz
            p = z + (rz / rz_old) * p
        counts.append(it)
    return np.array(counts)


def run_iterations(large: bool) -> None:
    print(f"PCG iterations to rtol {RTOL:g} (largest of the p + 1 = 3 solves), {FORMULA}\n")
    header = "| rows | users × items | " + " | ".join(f"θ = {th}: jacobi / sgs / schur" for th in ITERATION_THETAS)
    print(header + " |")
    print("|" + "---|" * (2 + len(ITERATION_THETAS)))
    for k, (n, nu, ni) in enumerate(ITERATION_DESIGNS + (LARGE_DESIGNS if large else [])):
        design, cross = design_of(crossed_frame(200 + k, n, nu, ni))
        cells = []
        for theta in ITERATION_THETAS:
            c = _preconditioned_counts(design, cross, theta)
            cells.append(f"{c['jacobi']} / {c['sgs']} / {c['schur']}")
        print(f"| {n:,} | {nu:,} × {ni:,} | " + " | ".join(cells) + " |", flush=True)


# ---- accuracy -----------------------------------------------------------------------------------------
def _fit(f, theta0, lower):
    """L-BFGS-B with the analytic gradient, as sparselmm's optimiser runs it; (result, seconds)."""
    bounds = [(lo if np.isfinite(lo) else None, None) for lo in lower]

    def fun(x):
        try:
            return f.value_and_gradient(x)
        except ArithmeticError:
            return 1e300, np.zeros_like(x)

    t0 = time.perf_counter()
    res = minimize(fun, theta0, jac=True, method="L-BFGS-B", bounds=bounds, options=dict(ftol=1e-12, gtol=1e-6))
    return res, time.perf_counter() - t0


def accuracy_designs(quick: bool):
    designs = [
        ("crossed_1e4 REML (1,000 × 1,000)", lambda: crossed_frame(101, 10_000, 1_000, 1_000), True),
        ("crossed_1e5 REML (10,000 × 2,000)", lambda: crossed_frame(102, 100_000, 10_000, 2_000), True),
        ("strong 1e5 ML (20,000 × 4,000)", lambda: strong_frame(7, 100_000, 20_000, 4_000, 2.5, 2.0), False),
    ]
    if not quick:
        big = ("crossed_1e6 REML (50,000 × 5,000)", lambda: crossed_frame(103, 1_000_000, 50_000, 5_000), True)
        designs.append(big)
    return designs


def _reference(design, cross, reml: bool) -> dict:
    """The exact fit: optimum, its state, β's standard errors and the exact gradient there."""
    exact = ProfiledDeviance(design, cross, reml=reml, ordering="schur")
    res, seconds = _fit(exact, design.theta0, design.lower)
    state = exact.solve(res.x)
    Rinv = np.linalg.inv(state.R_X)
    nu = design.n - design.p if reml else design.n
    se_beta = np.sqrt(np.diag(Rinv @ Rinv.T) * state.pwrss / nu)
    grad = exact.value_and_gradient(res.x)[1]
    return dict(f=exact, res=res, seconds=seconds, state=state, se_beta=se_beta, grad=grad, reml=reml)


def _approximate(design, cross, ref: dict, probes: int, seed: int, steps: int) -> dict:
    """The matrix-free deviance at the exact optimum, and its own optimum judged by the exact deviance."""
    mf = MatrixFreeDeviance(design, cross, reml=ref["reml"], n_probes=probes, seed=seed, lanczos_steps=steps)
    r0 = ref["res"]
    v, g = mf.value_and_gradient(r0.x)
    out = dict(
        dev_err=v - r0.fun,
        dev_se=mf.error_estimate,
        grad_err=float(np.max(np.abs(g - ref["grad"]))),
        grad_se=float(np.max(mf.state.gradient_se)),
    )
    r1, seconds = _fit(mf, design.theta0, design.lower)
    s1 = mf.solve(r1.x)
    out.update(
        ddev=ref["f"](r1.x) - r0.fun,
        theta_rel=float(np.max(np.abs(r1.x / r0.x - 1.0))),
        beta_se=float(np.max(np.abs(s1.beta - ref["state"].beta) / ref["se_beta"])),
        evals=r1.nfev,
        seconds=seconds,
        iterations=int(mf.iterations.max()),
    )
    return out


def run_accuracy(quick: bool, n_probes: int, steps: int, sweep: list[int], seeds: list[int]) -> None:
    rows, sweep_rows = [], []
    for name, make, reml in accuracy_designs(quick):
        design, cross = design_of(make())
        ref = _reference(design, cross, reml)
        res = _approximate(design, cross, ref, n_probes, 0, steps)
        rows.append((name, ref["res"], ref["seconds"], res))
        print(
            f"{name}: exact {ref['res'].nfev} evaluations {ref['seconds']:.1f} s; matrix-free {res['evals']} "
            f"evaluations {res['seconds']:.1f} s, Δdev {res['ddev']:.1e}",
            file=sys.stderr,
            flush=True,
        )
        for probes in sweep:
            for seed in seeds:
                sweep_rows.append((name, probes, seed, _approximate(design, cross, ref, probes, seed, steps)))
    print(f"Matrix-free ({n_probes} probes, {steps} Lanczos steps, seed 0) against the exact deviance\n")
    print(
        "| design | exact: evals, s | deviance error at θ̂ (SE est.) | max gradient error (SE est.) | "
        "Δdev at approx. optimum | θ rel. error | β error / SE | matrix-free: evals, s | PCG its |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r0, t0, r in rows:
        print(
            f"| {name} | {r0.nfev}, {t0:.1f} | {r['dev_err']:+.3f} ({r['dev_se']:.3f}) | "
            f"{r['grad_err']:.3f} ({r['grad_se']:.3f}) | {r['ddev']:.1e} | {r['theta_rel']:.1e} | "
            f"{r['beta_se']:.1e} | {r['evals']}, {r['seconds']:.1f} | {r['iterations']} |"
        )
    if sweep_rows:
        print("\nProbes and seeds (the same Lanczos steps)\n")
        print("| design | probes | seed | deviance error (SE est.) | Δdev at approx. optimum | θ rel. | β / SE | s |")
        print("|---|---|---|---|---|---|---|---|")
        for name, probes, seed, r in sweep_rows:
            print(
                f"| {name} | {probes} | {seed} | {r['dev_err']:+.3f} ({r['dev_se']:.3f}) | {r['ddev']:.1e} | "
                f"{r['theta_rel']:.1e} | {r['beta_se']:.1e} | {r['seconds']:.1f} |"
            )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["iterations", "accuracy"])
    parser.add_argument("--quick", action="store_true", help="accuracy: leave out the 1e6-row design")
    parser.add_argument("--large", action="store_true", help="iterations: add a 3e6-row design")
    parser.add_argument("--probes", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sweep", type=int, nargs="*", default=[], help="accuracy: also these numbers of probes")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="seeds of the sweep")
    args = parser.parse_args(argv)
    if args.what == "iterations":
        run_iterations(args.large)
    else:
        run_accuracy(args.quick, args.probes, args.steps, args.sweep, args.seeds)


if __name__ == "__main__":
    main()
