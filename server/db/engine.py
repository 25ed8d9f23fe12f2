"""Engines for the embedded SQLite default and for PostgreSQL.

SQLite gets the same treatment as the client's store: WAL, ``busy_timeout``, foreign keys, and
``BEGIN IMMEDIATE`` for every transaction that may write, so several worker processes queue
instead of failing with "database is locked". A connection opened with the execution option
``READ_ONLY`` begins a deferred transaction instead: in WAL mode it reads a snapshot and never
waits for, nor holds, the write lock (``server.deps.provide_db`` gives one to every request that
does not write). PostgreSQL runs at READ COMMITTED with row locks where a counter is bumped
(``SELECT … FOR UPDATE`` on the vault row).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

__all__ = ["READ_ONLY", "make_engine"]

READ_ONLY = "tapes_read_only"
"""Execution option: this connection's transactions only read (SQLite: a deferred ``BEGIN``)."""


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout = 30000")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA synchronous = FULL")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    if connection.get_execution_options().get(READ_ONLY):
        connection.exec_driver_sql("BEGIN")
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str, connections: int = 20) -> Engine:
    """An engine whose pool holds at most ``connections`` connections (see ``server.deps``:
    requests queue for them on the event loop, so a checkout never waits)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        assert parsed.database is not None  # noqa: S101 - settings refuse an in-memory URL
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, pool_size=connections, max_overflow=0)
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        with engine.connect() as conn:
            conn.connection.driver_connection.execute("PRAGMA journal_mode = WAL")  # type: ignore[union-attr]
        return engine
    return create_engine(url, pool_size=connections, max_overflow=0, pool_pre_ping=True)
