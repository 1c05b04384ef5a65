"""``sparselmm fit`` / ``sparselmm glmer``: fit an lme4 formula to a CSV file, parquet file(s) or a bundled
dataset and print the summary (``sparselmm --version``, ``sparselmm datasets``).

``fit`` is ``lmer`` (``--ml``, ``--optimizer``, ``--ddf`` for the summary's t tests); ``glmer`` needs
``--family`` (``--link``, ``--nagq``).

Progress goes to stderr: nothing for a fit done within :data:`PROGRESS_DELAY` seconds, otherwise the
steps so far and then at most one evaluation line a second (``--verbose``: every line from the start;
``--quiet``: none). The summary goes to stdout, so ``sparselmm fit ... > summary.txt`` keeps it clean.
"""

from __future__ import annotations

import argparse
import glob
import sys
import time
import warnings

import pandas as pd

from . import __version__, datasets
from .errors import SparseLMMError
from .glmm import get_family, glmer
from .inference.contest import normalize_ddf
from .lmer import lmer
from .optimize import OPTIMIZERS
from .progress import Progress
from .scale import as_source

PROGRESS_DELAY = 2.0  # seconds before a fit starts reporting progress
PROGRESS_INTERVAL = 1.0  # least seconds between evaluation lines


def _data_options(p: argparse.ArgumentParser, parquet: str) -> None:
    """The formula and the data source, shared by ``fit`` and ``glmer``."""
    p.add_argument("formula", help="lme4 formula, e.g. 'Reaction ~ Days + (Days | Subject)'")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", metavar="FILE", help=f"CSV file with the data, or parquet file(s): {parquet}")
    src.add_argument("--dataset", metavar="NAME", help=f"bundled dataset: {', '.join(datasets.list_datasets())}")
    p.add_argument("--weights", metavar="COLUMN", help="column with prior weights (rows with weight 0 are left out)")
    p.add_argument("--offset", metavar="COLUMN", help="column with an offset (on the link scale for glmer)")


def _ddf(text: str) -> str:
    try:
        return normalize_ddf(text)
    except SparseLMMError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="sparselmm", description="Linear and generalised linear mixed models with lme4's sparse method."
    )
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}", help="print the version and exit")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fit = sub.add_parser(
        "fit",
        help="fit a linear mixed model (lmer) and print its summary",
        description="Fit lmer and print the summary.",
    )
    _data_options(
        fit,
        "a path, directory or quoted glob such as 'ratings/*.parquet' (read in batches, never held in memory; "
        "needs pyarrow)",
    )
    fit.add_argument("--ml", action="store_true", help="maximum likelihood instead of REML")
    fit.add_argument(
        "--optimizer",
        default="auto",
        choices=OPTIMIZERS,
        help="optimiser of theta: auto (default: L-BFGS-B with the analytic gradient where available, else "
        "BOBYQA), bobyqa, nelder_mead or lbfgsb",
    )
    fit.add_argument(
        "--ddf",
        default=None,
        type=_ddf,
        metavar="METHOD",
        help="denominator df of the fixed-effects t tests: Satterthwaite, Kenward-Roger (REML fits only) or "
        "lme4 (no df, no p-values); default Satterthwaite (lme4's table for very large models)",
    )
    fit.add_argument(
        "--memory-limit",
        default=None,
        metavar="SIZE",
        help="most memory the factor may plan to use, e.g. 8GB (default: 60%% of the memory available); the "
        "fit takes the preferred factor predicted to fit, or stops with each factor's prediction",
    )
    noise = fit.add_mutually_exclusive_group()
    noise.add_argument(
        "--verbose", "-v", action="store_true", help="progress from the start, every evaluation (default: after 2 s)"
    )
    noise.add_argument("--quiet", "-q", action="store_true", help="no progress lines")

    glmm = sub.add_parser(
        "glmer",
        help="fit a generalised linear mixed model (glmer) and print its summary",
        description="Fit glmer (Laplace, or adaptive Gauss-Hermite with --nagq > 1) and print the summary.",
    )
    _data_options(
        glmm, "a path, directory or quoted glob (read into memory: GLMMs are fitted in memory; needs pyarrow)"
    )
    glmm.add_argument(
        "--family",
        required=True,
        metavar="NAME",
        help="response distribution: binomial (0/1, proportions with --weights trials, or cbind(successes, "
        "failures)), poisson, Gamma or inverse.gaussian",
    )
    glmm.add_argument("--link", help="link function (default: the family's canonical link), e.g. probit, cloglog, log")
    glmm.add_argument(
        "--nagq",
        type=int,
        default=1,
        metavar="N",
        help="1: Laplace (default); 0: the fast first stage only; > 1: adaptive Gauss-Hermite with N nodes (one "
        "scalar random-effects term)",
    )
    glmm.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    sub.add_parser("datasets", help="list the bundled datasets", description="List the bundled datasets.")
    return ap


def _read(args, in_memory: bool):
    """The data and the name shown on the summary's Data: line."""
    if args.dataset:
        return datasets.load(args.dataset), args.dataset
    source = as_source(args.data)
    if source is None:
        return pd.read_csv(args.data), args.data
    if not in_memory:  # parquet: summed batch by batch (sparselmm.scale)
        return source, args.data
    if any(ch in args.data for ch in "*?["):
        files = sorted(glob.glob(args.data))
        if not files:
            raise OSError(f"no file matches {args.data!r}")
        return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True), args.data
    return pd.read_parquet(args.data), args.data


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sparselmm`` console command."""
    args = _parser().parse_args(argv)
    if args.command == "datasets":
        for name in datasets.list_datasets():
            print(f"{name:12s} {datasets.describe(name).get('description', '')}")
        return 0
    progress = None
    if not args.quiet:
        verbose = getattr(args, "verbose", False)
        delay, interval = (0.0, 0.0) if verbose else (PROGRESS_DELAY, PROGRESS_INTERVAL)
        progress = Progress(stream=sys.stderr, delay=delay, interval=interval)
        progress.start(f"sparselmm {args.command}: reading {args.dataset or args.data}")
    try:
        if args.command == "glmer":
            get_family(args.family, args.link)  # an unknown family or link is reported before reading
        data, name = _read(args, in_memory=args.command == "glmer")
        if progress is not None and hasattr(data, "shape"):
            progress.phase(f"read {data.shape[0]:,} rows x {data.shape[1]} columns")
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if args.command == "glmer":
                if progress is not None:
                    progress.phase("fitting by glmer")
                m = glmer(
                    args.formula,
                    data,
                    family=args.family,
                    link=args.link,
                    nAGQ=args.nagq,
                    weights=args.weights,
                    offset=args.offset,
                    data_name=name,
                )
            else:
                m = lmer(
                    args.formula,
                    data,
                    reml=not args.ml,
                    weights=args.weights,
                    offset=args.offset,
                    optimizer=args.optimizer,
                    memory_limit=args.memory_limit,
                    data_name=name,
                    verbose=progress if progress is not None else False,
                )
        seconds = time.perf_counter() - t0
        summary = m.summary() if args.command == "glmer" else m.summary(ddf=args.ddf)
        text = str(summary)
    except (SparseLMMError, OSError) as err:
        print(f"sparselmm: error: {err}", file=sys.stderr)
        return 2
    print(text)
    if hasattr(m, "scale_info"):
        s = m.scale_info
        print(f"read {s['rows']} rows in {s['chunks']} batches, {s['rows_per_second']:,.0f} rows/s per pass")
    for w in caught:
        print(f"warning: {w.message}")
    info = m.optinfo
    if args.command == "glmer":
        print(
            f"fit time: {seconds:.3f} s (set-up {info.setup_seconds:.3f} s, optimisation "
            f"{info.optimize_seconds:.3f} s); {info.n_evals} criterion evaluations, {info.details['n_pirls']} PIRLS "
            f"iterations ({info.n_evals_total} evaluations with the Hessian)"
        )
        return 0
    what = "deviance + gradient" if info.optimizer == "lbfgsb" and m._devfun.has_gradient else "deviance"
    print(
        f"fit time: {seconds:.3f} s (set-up {info.setup_seconds:.3f} s, optimisation {info.optimize_seconds:.3f} s); "
        f"{info.n_evals} {what} evaluations by {info.optimizer} ({info.n_evals_total} with convergence checks)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
