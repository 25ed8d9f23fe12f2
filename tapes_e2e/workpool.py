"""Worker processes for the sync's CPU work: opening pulled pages, sealing batches to push.

Sealing and opening are CPU work under the GIL: a thread would only take turns with the sync
runner. On a machine with cores to spare they run in worker processes instead, while the runner
stores a page or waits for the server.

How many workers: ``TAPES_SYNC_WORKERS`` when set (0: none), else one fewer than the machine's
cores (``os.cpu_count()``), at most :data:`MAX_WORKERS`; none on one core. On two cores they are
used for long pulls only (:data:`TWO_CORE_PULL_PAGES` pages in): there the runner's own thread
and its helper take about a core between them, and measured so (``bench/bench_sync.py
--compare-workers``, docs/sync.md), a worker made a 10k push 0.66 and a 10k pull 0.91 as fast,
but a 100k pull, whose stores cost twice as much, 1.32 times as fast. A sync starts them
only when it knows there is more than one batch or page to do, and does the work itself until
they are ready: starting them costs a few tenths of a second, which a small sync would not win
back.

They are this user's own processes, started by multiprocessing's ``forkserver`` (``spawn``
where there is none; never ``fork``, since this process has threads). The verified chain state
and the keys a task needs reach them with the task, over the pool's private pipe; never an
identity's private key. They write nothing, ignore Ctrl-C (their parent decides), and are shut
down when the sync round ends or fails. A worker that dies is not fatal: its task and every
later one are done in the calling process instead.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Final

__all__ = ["MAX_WORKERS", "TWO_CORE_PULL_PAGES", "WorkerPool", "slices", "worker_count"]

log = logging.getLogger(__name__)

MAX_WORKERS: Final = 4
TWO_CORE_PULL_PAGES: Final = 20
"""On a machine of two cores, a pull starts its workers this many pages in, and a push none."""


def worker_count() -> int:
    """How many worker processes a sync may use on this machine (see the module's text)."""
    configured = _configured()
    return _for_cores(os.cpu_count() or 1) if configured is None else configured


def _for_cores(cores: int) -> int:
    return max(0, min(MAX_WORKERS, cores - 1))


def _configured() -> int | None:
    text = os.environ.get("TAPES_SYNC_WORKERS", "").strip()
    if not text:
        return None
    try:
        return max(0, min(MAX_WORKERS, int(text)))
    except ValueError:
        log.warning("TAPES_SYNC_WORKERS=%r is not a number; using no workers", text)
        return 0


class WorkerPool:
    """A pool of worker processes, started on demand and used only once it is up."""

    def __init__(self, workers: int | None = None) -> None:
        chosen = _configured() if workers is None else workers
        cores = os.cpu_count() or 1
        self.workers = _for_cores(cores) if chosen is None else chosen
        # Two cores and no setting: long pulls only (the module's text says why).
        two_cores = chosen is None and cores <= 2
        self.seals = not two_cores
        self.pull_pages_first = TWO_CORE_PULL_PAGES if two_cores else 0
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._ready: Future[bool] | None = None

    def ready(self, *, start: bool) -> ProcessPoolExecutor | None:
        """The pool if its workers are up; started (not waited for) if ``start``."""
        if self.workers <= 0:
            return None
        with self._lock:
            if self._pool is None and start:
                self._pool = ProcessPoolExecutor(
                    self.workers, mp_context=_context(), initializer=_ignore_interrupts
                )
                self._ready = self._pool.submit(bool, True)
            ready = self._ready
            if ready is None or not ready.done() or ready.exception() is not None:
                return None
            return self._pool

    def pids(self) -> set[int]:
        """The worker processes' ids (for tests and diagnostics); empty when none run."""
        with self._lock:
            pool = self._pool
        return set() if pool is None else set(pool._processes)

    def lost(self) -> None:
        """A worker died: do the work in this process from now on."""
        log.info("a sync worker process died; doing its work here instead")
        self.close()
        self.workers = 0

    def close(self) -> None:
        """Shut the workers down (they finish nothing more); the next use starts new ones."""
        with self._lock:
            pool, self._pool, self._ready = self._pool, None, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    @property
    def running(self) -> bool:
        return self._pool is not None


def slices(count: int, parts: int) -> list[tuple[int, int]]:
    """``count`` items cut into at most ``parts`` contiguous slices of nearly equal size."""
    parts = max(1, min(parts, count))
    size, extra = divmod(count, parts)
    bounds, start = [], 0
    for index in range(parts):
        stop = start + size + (1 if index < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def _context() -> multiprocessing.context.BaseContext:
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        # The workers' modules, imported once by the fork server rather than by each worker.
        context.set_forkserver_preload(["tapes_e2e.opening", "tapes_e2e.sealing"])
        return context
    return multiprocessing.get_context("spawn")


def _ignore_interrupts() -> None:
    """In a worker: Ctrl-C reaches the whole process group; the parent handles it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
