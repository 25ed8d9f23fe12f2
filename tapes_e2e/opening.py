"""Opening pulled pages: verify and open every envelope of a page, and build the rows to store.

:func:`open_items` is the work, done the same way wherever it runs. :class:`PageOpener` decides
where: in the sync runner's own thread, or, on a machine with cores to spare, in worker
processes, so that the runner stores one page while the next is being opened. (Opening is CPU
work under the GIL: a thread would only take turns with the runner.)

How many workers: ``TAPES_SYNC_WORKERS`` when set (0: none), else one fewer than the machine's
cores (``os.cpu_count()``), at most :data:`MAX_WORKERS`; none on one core. A pull starts them
only when its first page says there is more, and opens pages itself until they are ready:
starting them costs a few tenths of a second, which a small pull would not win back.

They are this user's own processes, started by multiprocessing's ``forkserver`` (``spawn``
where there is none; never ``fork``, since this process has threads), running this module. A
page's verified chain state and content keys reach them with the page, over the pool's private
pipe; they write nothing, ignore Ctrl-C (their parent decides), and are shut down when the pull
ends or fails. What they send back is trusted as this process's own work; what the server sent
them is checked exactly as it would be here. A worker that dies is not fatal: its pages are
opened here instead.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Final

import msgspec

import keymgmt
from tapes_e2e.envelopes import MetadataRecord, open_envelope
from tapes_e2e.protocol import NodeOut, PullPage
from tapes_e2e.store.rows import PulledRow, pulled_row

__all__ = ["MAX_WORKERS", "Opening", "PageOpener", "open_items", "worker_count"]

log = logging.getLogger(__name__)

MAX_WORKERS: Final = 4
_PAGE: Final = msgspec.json.Decoder(PullPage)

Opened = tuple[list[PulledRow], list[str]]
"""The rows of the envelopes that passed every check, and one message per envelope refused."""
OpenItems = Callable[[Sequence[NodeOut], keymgmt.VerifiedTeamState, keymgmt.TeamKeys], Opened]
""":func:`open_items`, or a stand-in for it (a benchmark's, with the cryptography off): a
module-level function, since workers receive it by name."""


def open_items(
    items: Sequence[NodeOut], state: keymgmt.VerifiedTeamState, keys: keymgmt.TeamKeys
) -> Opened:
    """Verify and open each item under ``state`` and ``keys``. An envelope that fails is
    refused with a message and does not stop the rest; a metadata-only record (usage, no
    content) is verified and left out."""
    rows: list[PulledRow] = []
    rejected: list[str] = []
    for item in items:
        node_id = item.envelope.node_id
        try:
            opened = open_envelope(item.envelope, state=state, keys=keys)
        except keymgmt.IntegrityError:
            rejected.append(
                f"integrity: node {node_id[:16]}… failed verification and was not stored"
            )
            continue
        if isinstance(opened, MetadataRecord):
            continue  # a metadata-only vault: usage records, never content to store
        # open_envelope built the node by parsing the body and recomputing its hash.
        rows.append(pulled_row(opened, node_id, verify=False))
    return rows, rejected


def worker_count() -> int:
    """How many worker processes a pull may use on this machine (see the module's text)."""
    configured = os.environ.get("TAPES_SYNC_WORKERS", "").strip()
    if configured:
        try:
            return max(0, min(MAX_WORKERS, int(configured)))
        except ValueError:
            log.warning("TAPES_SYNC_WORKERS=%r is not a number; using no workers", configured)
            return 0
    return max(0, min(MAX_WORKERS, (os.cpu_count() or 1) - 1))


@dataclass(frozen=True, slots=True)
class Opening:
    """A fetched page and its opening, started: in workers (``parts``, one per slice, in
    order), or not yet (``parts`` empty: the runner's thread opens it). ``state`` and ``keys``
    are what the workers open it under."""

    page: PullPage
    state: keymgmt.VerifiedTeamState
    keys: keymgmt.TeamKeys
    parts: tuple[Future[Opened], ...] = ()


class PageOpener:
    """Opens pages in worker processes when the machine has cores to spare, else in the
    calling thread (the module's text says when and how). :meth:`start` runs where the page was
    fetched (the runner's helper thread); :meth:`finish` in the runner's thread."""

    def __init__(self, workers: int | None = None, open_fn: OpenItems | None = None) -> None:
        self.workers = worker_count() if workers is None else workers
        self._open = open_fn or open_items
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._ready: Future[bool] | None = None

    def start(
        self, page: PullPage, raw: bytes, state: keymgmt.VerifiedTeamState, keys: keymgmt.TeamKeys
    ) -> Opening:
        """Begin opening ``page`` (``raw``: its bytes as the server sent them) in the workers
        when they are ready; start them if the page says more is to come."""
        pool = self._ready_pool(start=page.more)
        if pool is None or not page.items:
            return Opening(page, state, keys)
        bounds = _slices(len(page.items), self.workers)
        try:
            parts = tuple(
                pool.submit(_open_slice, self._open, raw, a, b, state, keys) for a, b in bounds
            )
        except (BrokenProcessPool, RuntimeError):  # a dead worker, or closed meanwhile
            return Opening(page, state, keys)
        return Opening(page, state, keys, parts)

    def finish(
        self, opening: Opening, state: keymgmt.VerifiedTeamState, keys: keymgmt.TeamKeys
    ) -> Opened:
        """The page's rows and refusals, opened under ``state`` and ``keys`` (the vault's now):
        the workers' result when they opened it under those, else opened here."""
        if opening.parts and opening.state is state and opening.keys == keys:
            try:
                results = [part.result() for part in opening.parts]
            except BrokenProcessPool:
                log.info("a sync worker process died; opening pages here instead")
                self.close()
                self.workers = 0
            else:
                rows = [row for part_rows, _ in results for row in part_rows]
                return rows, [message for _, part_rejected in results for message in part_rejected]
        return self._open(opening.page.items, state, keys)

    def close(self) -> None:
        """Shut the workers down (they finish nothing more); the next pull starts new ones."""
        with self._lock:
            pool, self._pool, self._ready = self._pool, None, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _ready_pool(self, *, start: bool) -> ProcessPoolExecutor | None:
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


def _slices(count: int, parts: int) -> list[tuple[int, int]]:
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
        context.set_forkserver_preload([__name__])
        return context
    return multiprocessing.get_context("spawn")


def _ignore_interrupts() -> None:
    """In a worker: Ctrl-C reaches the whole process group; the parent handles it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _open_slice(  # noqa: PLR0917 - a worker task, called by position through the pool
    open_fn: OpenItems,
    raw: bytes,
    start: int,
    stop: int,
    state: keymgmt.VerifiedTeamState,
    keys: keymgmt.TeamKeys,
) -> Opened:
    """In a worker: decode the page again (its bytes travel cheaper than the decoded page) and
    open items ``start`` to ``stop``."""
    return open_fn(_PAGE.decode(raw).items[start:stop], state, keys)
