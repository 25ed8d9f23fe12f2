"""The ``hybrid`` provider: local first, synced in the background (RFC "Hybrid Provider").

``put`` is the local provider's ``put`` and nothing else: the recording path never waits on the
network, on encryption or on sync bookkeeping (the worker finds new rows by rowid; see
docs/sync.md). Reads are local. A :class:`~tapes_e2e.sync.worker.SyncWorker` pushes and pulls
every ``sync_interval`` and, when ``sync_on_close``, once more on :meth:`close` within a bounded
wait, leaving the rest pending. Nodes another program (the Go tapes proxy) writes into the same
file are found and synced the same way.
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Iterable
from datetime import datetime

from keymgmt import PROTOCOL_VERSION
from tapes_e2e.errors import TapesError
from tapes_e2e.node import Node
from tapes_e2e.providers.base import DelegatedSharing, SyncStatus
from tapes_e2e.providers.local import LocalProvider
from tapes_e2e.sync.worker import SyncRunner, SyncWorker, run_sync

__all__ = ["HybridProvider", "SyncFailedError"]


class SyncFailedError(TapesError):
    default_hint = "the nodes stay recorded locally and are pushed on the next successful sync"


class HybridProvider(DelegatedSharing):
    """A :class:`LocalProvider` plus a background sync of one vault; sharing with teams through
    ``sharing`` (see :class:`~tapes_e2e.providers.base.DelegatedSharing`)."""

    def __init__(
        self,
        local: LocalProvider,
        runner: SyncRunner,
        *,
        sync_on_close: bool = True,
        close_timeout: float = 10.0,
        background: bool = True,
    ) -> None:
        self.local = local
        self.runner = runner
        self._close_timeout = close_timeout
        self._worker: SyncWorker | None = None
        if background:
            self._worker = SyncWorker(runner, sync_on_close=sync_on_close)
            self._worker.start()

    # --- Provider: everything local ----------------------------------------------------------

    def put(self, node: Node) -> bool:
        return self.local.put(node)

    def put_many(self, nodes: Iterable[Node]) -> int:
        return self.local.put_many(nodes)

    def get(self, node_hash: str) -> Node:
        return self.local.get(node_hash)

    def has(self, node_hash: str) -> bool:
        return self.local.has(node_hash)

    def ancestry(self, node_hash: str) -> builtins.list[Node]:
        return self.local.ancestry(node_hash)

    def leaves(self) -> builtins.list[Node]:
        return self.local.leaves()

    def list(self) -> builtins.list[Node]:
        return self.local.list()

    def roots(self) -> builtins.list[Node]:
        return self.local.roots()

    def depth(self, node_hash: str) -> int:
        return self.local.depth(node_hash)

    def close(self) -> None:
        """Stop the worker (one last bounded round when ``sync_on_close``), then the store."""
        if self._worker is not None and not self._worker.stopped:
            self._worker.close(self._close_timeout)
        self.local.close()

    # --- SyncProvider ------------------------------------------------------------------------

    def sync(self) -> None:
        """Push then pull now, in the calling thread, once the worker's round (or another
        process's sync of this store and vault) is over; raises if the round failed."""
        lock = self.runner.lock
        with lock.hold(wait=True) if lock is not None else contextlib.nullcontext():
            result = run_sync(self.runner)
        if result is None or result.result != "ok":
            message = "did not finish" if result is None else f"{result.result}: {result.message}"
            raise SyncFailedError(f"sync failed: {message}")

    def pull(self) -> None:
        """A round pushes what is pending and pulls what is new: the same as :meth:`sync`."""
        self.sync()

    def request_sync(self) -> None:
        """Ask the background worker for a round now."""
        if self._worker is not None:
            self._worker.request_sync()

    def sync_status(self) -> SyncStatus:
        state = self.runner.state
        stored = state.load(self.runner.vault)
        last = datetime.fromisoformat(stored.last_sync_at) if stored.last_sync_at else None
        return SyncStatus(
            last_sync_at=last,
            pending_push=state.pending_push_count(self.runner.vault),
            pending_pull=0,  # known only to the server; `tapes storage status` asks it
            remote_version=f"tapes-e2e protocol {PROTOCOL_VERSION}",
        )

    def __enter__(self) -> HybridProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
