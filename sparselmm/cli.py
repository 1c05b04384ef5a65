"""``sparselmm fit``: fit an lme4 formula to a CSV file or a bundled dataset and print the summary.

Progress goes to stderr: nothing for a fit done within :data:`PROGRESS_DELAY` seconds, otherwise the
steps so far and then at most one evaluation line a second (``--verbose``: every line from the start;
``--quiet``: none). The summary goes to stdout, so ``sparselmm fit ... > summary.txt`` keeps it clean.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import pandas as pd

from . import datasets
from .errors import SparseLMMError
from .lmer import lmer
from .progress import Progress
from .scale import as_source

PROGRESS_DELAY = 2.0  # seconds before a fit starts reporting progress
PROGRESS_INTERVAL = 1.0  # least seconds between evaluation lines


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="sparselmm", description="Linear mixed models with lme4's sparse method.")
    sub = ap.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="fit a model and print its summary")
    fit.add_argument("formula", help="lme4 formula, e.g. 'Reaction ~ Days + (Days | Subject)'")
    src = fit.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--data",
        metavar="FILE",
        help="CSV file with the data, or parquet file(s): a path, directory or quoted glob such as "
        "'ratings/*.parquet' (read in batches, never held in memory; needs pyarrow)",
    )
    src.add_argument("--dataset", metavar="NAME", help=f"bundled dataset: {', '.join(datasets.list_datasets())}")
    fit.add_argument("--ml", action="store_true", help="maximum likelihood instead of REML")
    fit.add_argument("--weights", help="column with prior weights")
    fit.add_argument("--offset", help="column with an offset")
    fit.add_argument("--optimizer", default="auto")
    noise = fit.add_mutually_exclusive_group()
    noise.add_argument(
        "--verbose", "-v", action="store_true", help="progress from the start, every evaluation (default: after 2 s)"
    )
    noise.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    sub.add_parser("datasets", help="list the bundled datasets")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sparselmm`` console command."""
    args = _parser().parse_args(argv)
    if args.command == "datasets":
        for name in datasets.list_datasets():
            print(f"{name:12s} {datasets.describe(name).get('description', '')}")
        return 0
    progress = None
    if not args.quiet:
        delay, interval = (0.0, 0.0) if args.verbose else (PROGRESS_DELAY, PROGRESS_INTERVAL)
        progress = Progress(stream=sys.stderr, delay=delay, interval=interval)
        progress.start(f"sparselmm fit: reading {args.dataset or args.data}")
    try:
        if args.dataset:
            data, name = datasets.load(args.dataset), args.dataset
        elif as_source(args.data) is not None:  # parquet: summed batch by batch (sparselmm.scale)
            data, name = as_source(args.data), args.data
        else:
            data, name = pd.read_csv(args.data), args.data
        if progress is not None and hasattr(data, "shape"):
            progress.phase(f"read {data.shape[0]:,} rows x {data.shape[1]} columns")
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            m = lmer(
                args.formula,
                data,
                reml=not args.ml,
                weights=args.weights,
                offset=args.offset,
                optimizer=args.optimizer,
                data_name=name,
                verbose=progress if progress is not None else False,
            )
        seconds = time.perf_counter() - t0
    except (SparseLMMError, OSError) as err:
        print(f"sparselmm: error: {err}", file=sys.stderr)
        return 2
    print(m.summary())
    if hasattr(m, "scale_info"):
        s = m.scale_info
        print(f"read {s['rows']} rows in {s['chunks']} batches, {s['rows_per_second']:,.0f} rows/s per pass")
    for w in caught:
        print(f"warning: {w.message}")
    info = m.optinfo
    what = "deviance + gradient" if info.optimizer == "lbfgsb" and m._devfun.has_gradient else "deviance"
    print(
        f"fit time: {seconds:.3f} s (set-up {info.setup_seconds:.3f} s, optimisation {info.optimize_seconds:.3f} s); "
        f"{info.n_evals} {what} evaluations by {info.optimizer} ({info.n_evals_total} with convergence checks)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
