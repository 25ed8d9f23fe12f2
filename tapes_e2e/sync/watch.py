"""``tapes storage sync --watch``: a long-running sync of one store and vault.

A :class:`~tapes_e2e.sync.worker.SyncWorker` pushes and pulls every ``sync_interval`` and backs
off while the server is away; this loop adds the push within a second of another program (Go
tapes) committing nodes to the SQLite file. It notices commits with ``PRAGMA data_version`` on a
read connection of its own, which changes whenever another connection commits: one cheap query
per poll, no file-system notification to set up, and the same on every OS (bench/bench_watch.py
measures it beside ``watchfiles``' inotify). A change that leaves nothing to push (the worker's
own pulls, for one) asks for no round.

On SIGTERM (or Ctrl-C) the loop stops; with ``sync_on_close`` the worker gets one last round,
bounded by ``close_timeout``, and what it does not finish stays pending for the next sync.

The loop writes what it is doing to ``sync-watch.json`` in the tapes directory (its pid, when it
started, its last round), which `tapes storage status` shows.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import msgspec

from tapes_e2e.config import read_private, write_private
from tapes_e2e.sync.worker import SyncWorker

__all__ = ["STATUS_FILE", "DataVersion", "WatchStatus", "describe", "read_status", "watch"]

log = logging.getLogger("tapes.sync.watch")

STATUS_FILE: Final = "sync-watch.json"


class DataVersion:
    """Whether another connection committed to the database since the last look."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self._seen = self._read()

    def _read(self) -> int:
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def changed(self) -> bool:
        now = self._read()
        changed, self._seen = now != self._seen, now
        return changed

    def close(self) -> None:
        self._db.close()


class WatchStatus(msgspec.Struct, forbid_unknown_fields=True):
    """What ``sync-watch.json`` holds."""

    pid: int
    host: str
    vault: str
    started_at: str
    running: bool = True
    rounds: int = 0
    last_round_at: str | None = None
    last_result: str | None = None
    last_message: str | None = None
    pushed: int = 0
    pulled: int = 0
    version: int = 1

    def alive(self) -> bool:
        """Running, by its own word and, on this host, by its process still existing."""
        if not self.running:
            return False
        if self.host != socket.gethostname():
            return True  # another machine's file (a shared home): its word is all there is
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def summary(self) -> dict[str, object]:
        """What status reports show of it (``--json``)."""
        return {
            "running": self.alive(), "pid": self.pid, "started_at": self.started_at,
            "last_round_at": self.last_round_at, "last_result": self.last_result,
        }  # fmt: skip


def describe(status: WatchStatus | None) -> str:
    """One line on the watcher of a tapes directory, for `tapes storage status` and
    `tapes storage service status`."""
    if status is None:
        return "never ran here"
    state = (
        f"running (pid {status.pid} since {status.started_at})" if status.alive()
        else "not running"
    )  # fmt: skip
    last = (f"last round {status.last_round_at}: {status.last_result}"
            if status.last_round_at else "no round finished yet")  # fmt: skip
    return f"{state}; {last}"


def read_status(dotdir: Path) -> WatchStatus | None:
    """The watcher's last word, or None if no watcher ever ran here."""
    path = dotdir / STATUS_FILE
    empty = WatchStatus(pid=0, host="", vault="", started_at="", running=False)
    status: WatchStatus = read_private(
        path, msgspec.json.Decoder(WatchStatus), empty, "the watcher's status"
    )
    return status if status.pid else None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def watch(
    worker: SyncWorker,
    changes: DataVersion,
    pending: Callable[[], int],
    stop: threading.Event,
    *,
    dotdir: Path,
    poll: float = 0.1,
    close_timeout: float = 30.0,
) -> bool:
    """Run ``worker`` until ``stop`` is set, asking for a round whenever another program
    committed and something waits to be pushed. Returns whether the last round finished in
    ``close_timeout``."""
    runner = worker.runner
    status = WatchStatus(pid=os.getpid(), host=socket.gethostname(), vault=runner.vault,
                         started_at=_now())  # fmt: skip

    def save() -> None:
        status.rounds, status.pushed, status.pulled = runner.rounds, runner.pushed, runner.pulled
        result = runner.last_result
        if result is not None:
            status.last_round_at, status.last_result = _now(), result.result
            status.last_message = result.message
        write_private(dotdir / STATUS_FILE, msgspec.json.encode(status).decode("utf-8"))

    save()
    worker.start()
    rounds = runner.rounds
    try:
        while not stop.wait(poll):
            if changes.changed() and pending() > 0:
                log.debug("new nodes in the store: asking for a round")
                worker.request_sync()
            if runner.rounds != rounds:
                rounds = runner.rounds
                save()
    finally:
        finished = worker.close(close_timeout)
        status.running = False
        save()
        changes.close()
    return finished
