"""Reads take no write lock; a read request that writes is a bug caught loudly (SQLite default).

The burst itself (64 concurrent pushes through one worker process) is tests/e2e/test_bursts.py.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server import deps
from server.db.engine import make_engine
from server.db.models import RateEvent
from server.domain.nodes import controllers
from tests.server.conftest import User, Vault

HOLD = 4.0  # seconds another process holds the write lock in the thread-pool test


@pytest.fixture
def sqlite_path(database_url: str) -> Path:
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite's write lock; PostgreSQL readers never take one")
    return Path(database_url.split("///", 1)[1])


def test_reads_are_served_while_another_process_holds_the_write_lock(
    client: TestClient[Any], alice: User, sqlite_path: Path
) -> None:
    """Another process (a second worker, a backup) is in the middle of a write transaction.
    Status, pull and the vault list still answer at once, from their WAL snapshot."""
    other = sqlite3.connect(sqlite_path, timeout=0, isolation_level=None)
    other.execute("PRAGMA busy_timeout = 0")
    try:
        other.execute("BEGIN IMMEDIATE")
        for path, params in (  # before the fix: each waited out the 30 s busy timeout, then 500
            ("/api/v1/sync/status", {"vault": alice.vault}),
            ("/api/v1/sync/pull", {"vault": alice.vault, "after": 0}),
            ("/api/v1/teams", {}),
        ):
            response = alice.get(path, params=params)
            assert response.status_code == 200, (path, response.text)
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_a_read_request_that_writes_fails_loudly(sqlite_path: Path, client: Any) -> None:
    """A session of the read path may not add rows: it would need the write lock it never queued
    for. The guard turns that bug into an error, and nothing is written."""
    engine = make_engine(f"sqlite:///{sqlite_path}")
    try:
        session = deps.read_session(engine)
        session.add(RateEvent(bucket="probe", window_start=0, count=1))
        with pytest.raises(RuntimeError, match="read path wrote"):
            session.commit()
        session.close()
        with Session(engine) as check:
            assert check.scalar(select(func.count()).select_from(RateEvent)) == 0
    finally:
        engine.dispose()


WAITING_WRITERS = 48  # more than the worker thread pool's 40


def test_writers_waiting_for_the_lock_hold_no_thread(
    client: TestClient[Any], alice: User, bob: User, sqlite_path: Path
) -> None:
    """While another process holds the write lock, more pushes than the app has worker threads
    wait for it; another user's read must still find a thread at once. (Were the writers waiting
    in threads, every thread would be taken until the lock is released.)"""
    vault = Vault(alice.vault, alice.identity)
    parent, first = vault.seal("root")
    pushed = alice.post("/api/v1/sync/push", {"vault": alice.vault, "envelopes": [first]})
    assert pushed.status_code == 200
    chains = [[vault.seal(f"turn {i}", parent)[1]] for i in range(WAITING_WRITERS)]
    other = sqlite3.connect(sqlite_path, timeout=0, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    pool = ThreadPoolExecutor(WAITING_WRITERS)
    try:
        pushes = [
            pool.submit(alice.post, "/api/v1/sync/push", {"vault": alice.vault, "envelopes": c})
            for c in chains
        ]
        time.sleep(1.0)  # every push is in, waiting for the lock
        started = time.monotonic()
        read = bob.get("/api/v1/sync/status", params={"vault": bob.vault})
        answered_in = time.monotonic() - started
    finally:
        time.sleep(max(0.0, HOLD - 1.0))
        other.execute("ROLLBACK")
        other.close()
    assert [p.result(60).status_code for p in pushes] == [200] * WAITING_WRITERS
    pool.shutdown()
    assert read.status_code == 200
    assert answered_in < 1.5, f"a read waited {answered_in:.1f} s for a thread"


def test_a_push_still_being_decoded_holds_no_write_queue(
    client: TestClient[Any], alice: User, bob: User, sqlite_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A member's push whose body is slow to decode (a big batch, a loaded machine) is decoded
    before it queues for the database: another member's push is stored meanwhile. (Were the
    write queue taken first, every writer of the process would wait for that decoding.)"""
    started, release = threading.Event(), threading.Event()
    real = controllers.decode_push

    def slow_for_alice(body: bytes, form: str) -> Any:
        if alice.vault.encode() in body:
            started.set()
            release.wait(30)
        return real(body, form)

    monkeypatch.setattr(controllers, "decode_push", slow_for_alice)
    alices = {"vault": alice.vault, "envelopes": Vault(alice.vault, alice.identity).chain(2)}
    bobs = {"vault": bob.vault, "envelopes": Vault(bob.vault, bob.identity).chain(2)}
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(alice.post, "/api/v1/sync/push", alices)
        try:
            assert started.wait(10)
            other = pool.submit(bob.post, "/api/v1/sync/push", bobs)
            assert other.result(timeout=10).status_code == 200  # while Alice's is decoded
            assert not slow.done()
        finally:
            release.set()
        assert slow.result(timeout=10).status_code == 200
