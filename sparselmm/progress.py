"""Progress of a long fit on a text stream: the set-up phases, then each evaluation with the criterion.

``lmer(..., verbose=True)`` prints every line to stderr from the start; the ``sparselmm fit`` command
uses ``Progress(delay=2.0, interval=1.0)``, which stays silent for fits that finish within two seconds and
otherwise prints what happened so far and then at most one evaluation line a second. A line looks like::

    [   0.41 s] set-up: design: 1,000,000 rows; X 1,000,000 x 2; Z 55,000 columns (2 terms)
    [   6.02 s] evaluation 3: REML criterion 2895473.1234 (best 2895473.1234)

The hooks cost one clock read per evaluation when nothing is printed.

**Progress bars** (:func:`progress_bar`, :func:`dask_progress`) are the other kind of report: a bar for
work counted in units — rows of the passes over parquet files or chunks, replicates of a bootstrap, ends of
a profile. Every such bar in the package is made here, under one policy switched by the ``progress=``
argument of the calls that do such work (parquet/Dask fits, ``profile``, ``bootstrap``, ``bootstrap_lrt``):

* ``False``: never.
* ``True``: always, from the start, to stderr (tqdm; a plain text line per second without tqdm).
* ``None`` (the default, "auto"): only for work that lasts — the bar appears once it has run for
  ``PROGRESS_DELAY`` = 2 s (tqdm's ``delay=``: nothing at all is written by work that ends earlier) — and
  only where a bar can be seen: stderr is a terminal, or the code runs in a Jupyter kernel (tqdm.auto's
  notebook widget). That is tqdm's own ``delay=2`` with ``disable=None`` ("disable on a non-TTY"), except
  that notebooks keep their bars (a kernel's stderr is not a TTY). Redirected output — log files, CI, a
  pipe, pytest — gets no carriage-return redraws.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import TextIO

__all__ = ["PROGRESS_DELAY", "Progress", "as_progress", "dask_progress", "progress_bar", "show_progress"]


class Progress:
    """Writes progress lines of one fit.

    Parameters
    ----------
    stream : text stream, optional
        Where to write (default ``sys.stderr`` at the time of each write).
    delay : float
        Seconds after :meth:`start` before anything is written; the lines recorded before then are
        written together when the delay has passed (so quick fits print nothing).
    interval : float
        Least seconds between two evaluation lines (0: every evaluation). Phase lines are never skipped.
    criterion : str
        Name of the value reported per evaluation (``"REML criterion"``, ``"deviance"``).
    clock : callable
        Seconds as a float (``time.perf_counter``; replaceable in tests).
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        delay: float = 0.0,
        interval: float = 0.0,
        criterion: str = "criterion",
        clock: Callable[[], float] = time.perf_counter,
    ):
        if delay < 0 or interval < 0:
            from .errors import ModelSpecError

            raise ModelSpecError(f"Progress needs delay >= 0 and interval >= 0, not {delay=} and {interval=}.")
        self.stream = stream
        self.delay = float(delay)
        self.interval = float(interval)
        self.criterion = criterion
        self.clock = clock
        self.t0 = clock()
        self.started = False
        self.active = self.delay == 0
        self._pending: list[str] = []
        self._last_eval = -float("inf")
        self._skipped = 0
        self.best = float("inf")
        self.n_evals = 0
        self.lines: list[str] = []  # everything written, for inspection

    # ---- output ------------------------------------------------------------------------------
    def _elapsed(self) -> float:
        return self.clock() - self.t0

    def _write(self, text: str) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        stream.write(text + "\n")
        stream.flush()
        self.lines.append(text)

    def _emit(self, text: str, now: float) -> None:
        line = f"[{now:8.2f} s] {text}"
        if not self.active and now >= self.delay:
            self.active = True
            for old in self._pending:
                self._write(old)
            self._pending.clear()
        if self.active:
            self._write(line)
        else:
            self._pending.append(line)

    # ---- hooks ---------------------------------------------------------------------------------
    def begin(self, what: str) -> None:
        """Start the clock unless the caller already did (e.g. before reading the data), then note ``what``."""
        if self.started:
            self.phase(what)
        else:
            self.start(what)

    def start(self, what: str = "") -> None:
        """Start the clock (again) for a new fit."""
        self.started = True
        self.t0 = self.clock()
        self.active = self.delay == 0
        self._pending.clear()
        self._last_eval = -float("inf")
        self._skipped = 0
        self.best = float("inf")
        self.n_evals = 0
        if what:
            self._emit(what, 0.0)

    def phase(self, text: str) -> None:
        """A set-up or finishing step (always recorded)."""
        self._emit(text, self._elapsed())

    def evaluation(self, value: float) -> None:
        """One evaluation of the criterion by the optimiser."""
        self.n_evals += 1
        if value < self.best:
            self.best = value
        now = self._elapsed()
        if not self.active and now < self.delay:
            return  # evaluations before the delay are not replayed, only counted
        if now - self._last_eval < self.interval:
            self._skipped += 1
            return
        skipped = f", {self._skipped} more since the last line" if self._skipped else ""
        self._skipped = 0
        self._last_eval = now
        self._emit(
            f"evaluation {self.n_evals}: {self.criterion} {value:.6f} (best {self.best:.6f}{skipped})",
            now,
        )

    def done(self, text: str) -> None:
        """The end of the fit: written only if anything else was (or the delay has passed)."""
        now = self._elapsed()
        if self.active or now >= self.delay:
            self._emit(text, now)


def as_progress(verbose, criterion: str) -> Progress | None:
    """``verbose`` of the public functions → a :class:`Progress` or None.

    False/0/None: quiet. True (or a positive number): every phase and evaluation to stderr from the start.
    A :class:`Progress`: used as given (its ``criterion`` is set).
    """
    if isinstance(verbose, Progress):
        verbose.criterion = criterion
        return verbose
    if verbose is None or verbose is False or (isinstance(verbose, int | float) and verbose == 0):
        return None
    if verbose is True or (isinstance(verbose, int | float) and verbose > 0):
        return Progress(criterion=criterion)
    from .errors import ModelSpecError

    raise ModelSpecError(f"verbose must be True, False or a sparselmm.progress.Progress, not {verbose!r}.")


# ---- progress bars: the one policy --------------------------------------------------------------------
PROGRESS_DELAY = 2.0  # seconds of work before an automatic (progress=None) bar appears


def _in_notebook() -> bool:
    """Running in a Jupyter kernel, where tqdm.auto draws a widget (tqdm.autonotebook's own test)."""
    if "IPython" not in sys.modules:
        return False
    try:
        from IPython import get_ipython

        shell = get_ipython()
        return shell is not None and "IPKernelApp" in getattr(shell, "config", {})
    except Exception:
        return False


def _stderr_is_terminal() -> bool:
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def show_progress(progress) -> float | None:
    """The policy: ``progress`` (None, True or False) → seconds before a bar appears, or None for no bar.

    ``True`` → 0 (always, from the start); ``False`` → None; ``None`` (auto) → ``PROGRESS_DELAY`` where a
    bar can be seen (stderr is a terminal, or a Jupyter kernel), else None.
    """
    if progress is None:
        return PROGRESS_DELAY if (_stderr_is_terminal() or _in_notebook()) else None
    if progress is True or progress is False:
        return 0.0 if progress else None
    if isinstance(progress, int | float) and not isinstance(progress, bool) and progress in (0, 1):
        return 0.0 if progress else None
    from .errors import ModelSpecError

    raise ModelSpecError(
        f"progress must be None (a bar only for work that lasts more than {PROGRESS_DELAY:g} s, on a terminal "
        f"or in a notebook), True (always) or False (never), not {progress!r}."
    )


class _TextBar:
    """A bar without tqdm: one line on stderr at most once a second, and one at the end."""

    def __init__(self, total, desc, unit, delay, clock=time.perf_counter):
        self.total, self.desc, self.unit, self.delay, self.clock = total, desc, unit, delay, clock
        self.n = 0
        self.t0 = clock()
        self._last = -float("inf")
        self.written = False

    def _line(self, now):
        of = f"/{self.total:,}" if self.total else ""
        rate = self.n / max(now - self.t0, 1e-9)
        sys.stderr.write(
            f"{self.desc}: {self.n:,}{of} {self.unit} ({now - self.t0:.1f} s, {rate:,.1f} {self.unit}/s)\n"
        )
        sys.stderr.flush()
        self._last, self.written = now, True

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self.t0 >= self.delay and now - self._last >= 1.0:
            self._line(now)

    def close(self) -> None:
        now = self.clock()
        if self.written or now - self.t0 >= self.delay:
            self._line(now)


def progress_bar(progress, total: int | None, desc: str, unit: str = "it", unit_scale: bool = False):
    """A bar with ``update(n)`` and ``close()`` under the policy of :func:`show_progress`, or None.

    tqdm (``tqdm.auto``: a widget in notebooks) when installed, else a plain text line per second. An
    automatic bar is tqdm's ``delay=PROGRESS_DELAY``: work that ends earlier writes nothing.
    """
    delay = show_progress(progress)
    if delay is None:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # the bars are optional
        return _TextBar(total, desc, unit, delay)
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit_scale, delay=delay, leave=False, file=sys.stderr)


def dask_progress(progress):
    """Dask's task bar (``dask.diagnostics.ProgressBar``, local schedulers) under the same policy, to stderr;
    a context manager that does nothing when no bar is due."""
    delay = show_progress(progress)
    if delay is None:
        return nullcontext()
    from dask.diagnostics import ProgressBar

    return ProgressBar(minimum=delay, out=sys.stderr)
