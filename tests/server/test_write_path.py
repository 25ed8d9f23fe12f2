"""Reads take no write lock; a read request that writes is a bug caught loudly (SQLite default).

The burst itself (64 concurrent pushes through one worker process) is tests/e2e/test_bursts.py.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server import deps
from server.db.engine import make_engine
from server.db.models import RateEvent
from tests.server.conftest import User


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
