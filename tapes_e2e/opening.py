"""Opening pulled pages: verify and open every envelope of a page, and build the rows to store.

:func:`open_items` is the work, done the same way wherever it runs. :class:`PageOpener` decides
where: in the sync runner's own thread, or in worker processes (:mod:`tapes_e2e.workpool`, which
says when and how), so that the runner stores one page while the next is being opened. What the
workers send back is trusted as this process's own work; what the server sent them is checked
exactly as it would be here, and a page opened under a chain state or keys that no longer hold
is opened again here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Final

import msgspec

import keymgmt
from tapes_e2e.envelopes import MetadataRecord, open_envelope
from tapes_e2e.protocol import AnyPullPage, NodeOut, PackedNodeOut, PackedPullPage, PullPage
from tapes_e2e.store.rows import PulledRow, pulled_row
from tapes_e2e.workpool import WorkerPool, slices

__all__ = ["Opening", "PageOpener", "open_items"]
_PAGE: Final = msgspec.json.Decoder(PullPage)
_PACKED_PAGE: Final = msgspec.msgpack.Decoder(PackedPullPage)

Opened = tuple[list[PulledRow], list[str]]
"""The rows of the envelopes that passed every check, and one message per envelope refused."""
Item = NodeOut | PackedNodeOut
OpenItems = Callable[[Sequence[Item], keymgmt.VerifiedTeamState, keymgmt.TeamKeys], Opened]
""":func:`open_items` as an opener takes it when it is made (a benchmark puts a stand-in with the
cryptography off in its place): a module-level function, since workers receive it by name."""


def open_items(
    items: Sequence[Item], state: keymgmt.VerifiedTeamState, keys: keymgmt.TeamKeys
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


@dataclass(frozen=True, slots=True)
class Opening:
    """A fetched page and its opening, started: in workers (``parts``, one per slice, in
    order), or not yet (``parts`` empty: the runner's thread opens it). ``state`` and ``keys``
    are what the workers open it under."""

    page: AnyPullPage
    state: keymgmt.VerifiedTeamState
    keys: keymgmt.TeamKeys
    parts: tuple[Future[Opened], ...] = ()


class PageOpener:
    """Opens pages in worker processes when ``pool`` has them, else in the calling thread.
    :meth:`start` runs where the page was fetched (the runner's helper thread); :meth:`finish`
    in the runner's thread."""

    def __init__(self, pool: WorkerPool | None = None) -> None:
        self.pool = pool or WorkerPool()
        self._open: OpenItems = open_items
        self._pages = 0  # pages fetched in this pull (since the last close)

    def start(
        self,
        page: AnyPullPage,
        raw: bytes,
        state: keymgmt.VerifiedTeamState,
        keys: keymgmt.TeamKeys,
    ) -> Opening:
        """Begin opening ``page`` (``raw``: its bytes as the server sent them) in the workers
        when they are ready; start them if the page says more is to come."""
        self._pages += 1
        pool = self.pool.ready(start=page.more and self._pages > self.pool.pull_pages_first)
        if pool is None or not page.items:
            return Opening(page, state, keys)
        bounds = slices(len(page.items), self.pool.workers)
        packed = isinstance(page, PackedPullPage)  # the workers decode it as it came
        try:
            parts = tuple(
                pool.submit(_open_slice, self._open, raw, packed, a, b, state, keys)
                for a, b in bounds
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
                self.pool.lost()
            else:
                rows = [row for part_rows, _ in results for row in part_rows]
                return rows, [message for _, part_rejected in results for message in part_rejected]
        return self._open(opening.page.items, state, keys)

    def close(self) -> None:
        """Shut the workers down; the next pull starts new ones."""
        self._pages = 0
        self.pool.close()


def _open_slice(  # noqa: PLR0917 - a worker task, called by position through the pool
    open_fn: OpenItems,
    raw: bytes,
    packed: bool,
    start: int,
    stop: int,
    state: keymgmt.VerifiedTeamState,
    keys: keymgmt.TeamKeys,
) -> Opened:
    """In a worker: decode the page again (its bytes travel cheaper than the decoded page) and
    open items ``start`` to ``stop``."""
    page = _PACKED_PAGE.decode(raw) if packed else _PAGE.decode(raw)
    return open_fn(page.items[start:stop], state, keys)
