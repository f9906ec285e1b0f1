"""Progress lines for long local runs: pages done, rate and ETA (Beam's DirectRunner prints none by itself).

:class:`ReportProgressFn` sits on a side branch after the models, counts finished pages in its worker process and,
at most every ``interval_s`` seconds, logs (and prints) a line such as::

    kiebeam progress: 120 pages done (2 failed) of ~1000 documents, 1.9 pages/s, ETA 7m43s [pid 4711]

Counts are per worker process: with the in-memory DirectRunner (the default locally) that is the whole job; with
``multi_processing`` or on Dataflow each worker reports its own share (Dataflow's UI shows the job's progress).
The ETA assumes one page per document, since the page count of a multi-page file is only known once it is read;
a document that fails before its pages are known (unreadable, not an image) counts as one failed page.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator

import apache_beam as beam

from schemas.records import PageOutcome
from schemas.refs import DocHeader

__all__ = ["ReportProgressFn", "format_progress"]

_LOG = logging.getLogger(__name__)


def format_progress(done: int, failed: int, total_documents: int, elapsed_s: float) -> str:
    """One progress line.

    Args:
        done: pages finished (ok or failed) so far.
        failed: pages among them that failed.
        total_documents: input documents of the run (0 if unknown: no ETA).
        elapsed_s: seconds since this worker process started the model stage (model loading included).

    Returns:
        ``"N pages done (F failed) of ~T documents, R pages/s, ETA ..."``.

    >>> format_progress(30, 1, 90, 60.0)
    '30 pages done (1 failed) of ~90 documents, 0.50 pages/s, ETA 2m00s'
    """
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    if total_documents <= 0:
        return f"{done} pages done ({failed} failed), {rate:.2f} pages/s"
    remaining = max(total_documents - done, 0)
    if rate > 0 and remaining:
        eta_s = int(round(remaining / rate))
        eta = f"{eta_s // 3600}h{eta_s % 3600 // 60:02d}m" if eta_s >= 3600 else f"{eta_s // 60}m{eta_s % 60:02d}s"
    else:
        eta = "-" if remaining else "0s"
    return f"{done} pages done ({failed} failed) of ~{total_documents} documents, {rate:.2f} pages/s, ETA {eta}"


class _Counter:
    """Page counts of one launch in this process, shared by every instance of the DoFn."""

    def __init__(self) -> None:
        self.done = 0
        self.failed = 0
        self.start = self.last_report = time.monotonic()


_LOCK = threading.Lock()
_COUNTERS: dict[str, _Counter] = {}


class ReportProgressFn(beam.DoFn):
    """Counts finished pages and logs a progress line at most every ``interval_s`` seconds (outputs nothing).

    Args:
        launch_id: the run's launch id (counts of different launches in one process stay apart).
        interval_s: seconds between two lines of one worker process.
        total_documents: input documents of the run, counted by the launcher (0 if unknown: no ETA).
    """

    def __init__(self, launch_id: str, interval_s: float = 30.0, total_documents: int = 0) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self._launch_id = launch_id
        self._interval_s = interval_s
        self._total = total_documents

    def setup(self) -> None:
        with _LOCK:
            _COUNTERS.setdefault(self._launch_id, _Counter())

    def process(self, item: PageOutcome | DocHeader) -> Iterator[None]:
        total_documents = self._total
        now = time.monotonic()
        with _LOCK:
            c = _COUNTERS.setdefault(self._launch_id, _Counter())
            c.done += 1
            c.failed += item.error is not None
            due = now - c.last_report >= self._interval_s or c.done == total_documents
            if due:
                c.last_report = now
                line = format_progress(c.done, c.failed, total_documents, now - c.start)
        if due:
            message = f"kiebeam progress: {line} [pid {os.getpid()}]"
            _LOG.info(message)
            print(message, flush=True)
        return iter(())
