"""One run at a time on this machine: an OS file lock that names its holder.

A :class:`LockFile` is ``fcntl.flock`` on a small file. The holder writes one line into it (pid,
host, what it runs, since when) so that whoever finds it taken can say who has it; the line is
emptied on release. The OS drops the lock with the process, so a crash or a kill leaves nothing
to clean up (a stale line is overwritten by the next holder). ``flock`` locks belong to an open
file, so two threads of one process that each open the file exclude each other too.

Used for ``tapes team reencrypt`` (one run per team) and for sync (one per store and vault:
``tapes storage sync``, its ``--watch``, the hybrid provider's worker).
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tapes_e2e.errors import LockHeldError

__all__ = ["LockFile"]


@dataclass(frozen=True, slots=True)
class LockFile:
    """The lock at ``path``. ``command`` says what the holder runs (written for others to read);
    ``busy`` and ``hint`` make the error a refused taker reports (the holder's line is added)."""

    path: Path
    command: str
    busy: str
    hint: str | None = None

    @contextmanager
    def hold(
        self, *, wait: bool = False, waiting: Callable[[str], None] | None = None
    ) -> Iterator[None]:
        """Hold the lock for the block. Taken already: :class:`LockHeldError` naming the holder,
        or with ``wait`` block until it is free (``waiting(holder)`` is told first)."""
        with self._open() as lock:
            if not _try(lock):
                holder = _holder(lock)
                if not wait:
                    raise LockHeldError(f"{self.busy} ({holder})", hint=self.hint)
                if waiting is not None:
                    waiting(holder)
                fcntl.flock(lock, fcntl.LOCK_EX)
            with self._held(lock):
                yield

    @contextmanager
    def attempt(self) -> Iterator[str | None]:
        """Hold the lock for the block if it is free, and yield None; else hold nothing and
        yield the holder's line (for a background job that skips a turn instead of waiting)."""
        with self._open() as lock:
            if not _try(lock):
                yield _holder(lock)
                return
            with self._held(lock):
                yield None

    def holder(self) -> str | None:
        """Who holds it now (their line), or None when it is free."""
        if not self.path.exists():
            return None
        with self.attempt() as holder:
            return holder

    @contextmanager
    def _open(self) -> Iterator[IO[str]]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        with os.fdopen(fd, "r+", encoding="utf-8") as lock:
            yield lock

    @contextmanager
    def _held(self, lock: IO[str]) -> Iterator[None]:
        try:
            lock.truncate(0)
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            lock.write(
                f"pid {os.getpid()} on {socket.gethostname()}: {self.command}, since {stamp}\n"
            )
            lock.flush()
            yield
        finally:
            lock.truncate(0)
            fcntl.flock(lock, fcntl.LOCK_UN)


def _try(lock: IO[str]) -> bool:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _holder(lock: IO[str]) -> str:
    lock.seek(0)
    return lock.read().strip() or "another process"
