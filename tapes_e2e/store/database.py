"""Opening the tapes SQLite file: connection settings, schema checks and write transactions.

Connection settings, per connection:

- ``busy_timeout`` so a writer waits for another instead of failing with "database is locked";
- ``foreign_keys = ON``, as Go tapes runs it (a child whose parent is missing is refused);
- ``synchronous = FULL``: a ``put`` that returned survives a power cut;
- writes take ``BEGIN IMMEDIATE``, so two writers queue on the busy timeout rather than failing
  when a read transaction tries to upgrade to a write lock.

Journal mode: we switch the file to WAL once, when it is opened. WAL is a property of the file,
which every SQLite connection honours, go-sqlite3's included, so a Go tapes proxy writing to the
same file keeps working, and readers no longer block the recording path. The switch needs a moment
with no other connection inside a transaction; if a Go process is busy with the file, we leave its
journal mode as it is (rollback journal, Go's default) and work in that mode: correctness does
not depend on WAL, only concurrency of readers with a writer does. WAL needs shared memory, so a
database on a network file system should not be used by two hosts at once, in either mode.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import ConnectionPoolEntry

from tapes_e2e.errors import NotATapesDatabaseError, StoreBusyError
from tapes_e2e.store.schema import GO_DDL, REQUIRED_NODE_COLUMNS

__all__ = ["BUSY_TIMEOUT_MS", "driver", "journal_mode", "missing_hashes", "open_engine", "write"]

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 30_000
MMAP_BYTES = 256 * 1024 * 1024
_SQLITE_HEADER = b"SQLite format 3\x00"
_BEGIN_OPTION = "tapes_begin"


def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # Manual transaction control: SQLAlchemy's "begin" event below emits BEGIN itself.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA synchronous = FULL")
    # Reads through the OS page cache without copying: a long ancestry walk gets ~25% faster.
    cursor.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
    cursor.close()


def _on_begin(connection: Connection) -> None:
    mode = connection.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
    connection.exec_driver_sql(f"BEGIN {mode}")


@contextmanager
def write(engine: Engine, *, durable: bool = True) -> Iterator[Connection]:
    """A transaction begun with ``BEGIN IMMEDIATE``: commits on success, rolls back on error.

    It runs with the connection's memory map dropped (see :func:`_unmapped`). ``durable=False``
    is for bookkeeping that is safe to lose whole and redo (see :func:`_relaxed`).
    """
    try:
        with (
            engine.connect().execution_options(**{_BEGIN_OPTION: "IMMEDIATE"}) as conn,
            _unmapped(driver(conn)),
            _relaxed(driver(conn), enabled=not durable),
            conn.begin(),
        ):
            yield conn
    except OperationalError as exc:
        if _is_busy(exc):
            raise StoreBusyError(
                f"the database stayed locked by another writer for {BUSY_TIMEOUT_MS // 1000} s"
            ) from exc
        raise


@contextmanager
def _unmapped(raw: sqlite3.Connection) -> Iterator[None]:
    """The connection without its memory map for the block; mapped again, lazily, after it.

    Why: a write gains nothing from the map (SQLite copies every page it changes into its own
    cache), but the inserts of a bulk write (a pull, an import) descend the random-keyed hash
    indexes of ``nodes`` and ``e2e_remote`` all over the file, and every page read through the
    map stays resident in this process: pulling grew RSS by ~1 KB a node, up to the whole
    ``MMAP_BYTES`` window per connection. Size 0 unmaps it (the RSS goes back); the next read
    maps it again on demand, so ancestry reads keep it.
    """
    raw.execute("PRAGMA mmap_size = 0")
    try:
        yield
    finally:
        with suppress(sqlite3.Error):  # a broken connection: it is discarded anyway
            raw.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")


@contextmanager
def _relaxed(raw: sqlite3.Connection, *, enabled: bool) -> Iterator[None]:
    """``synchronous = NORMAL`` for the block when the file is in WAL mode.

    In WAL mode NORMAL skips the fsync at commit: a power cut may lose the last transactions
    whole, never half of one, and never corrupts the file. The sync bookkeeping (what the server
    acknowledged, a pulled page with its cursor) is safe to lose whole: it is pushed or pulled
    again and stored once. Saves one fsync per batch. The recording path stays FULL.
    """
    if not enabled or raw.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        yield
        return
    raw.execute("PRAGMA synchronous = NORMAL")
    try:
        yield
    finally:
        with suppress(sqlite3.Error):  # a broken connection: it is discarded anyway
            raw.execute("PRAGMA synchronous = FULL")


def _is_busy(exc: OperationalError) -> bool:
    return isinstance(exc.orig, sqlite3.OperationalError) and "locked" in str(exc.orig)


def _check_file(path: Path) -> None:
    try:
        with path.open("rb") as f:
            header = f.read(len(_SQLITE_HEADER))
    except IsADirectoryError as exc:
        raise NotATapesDatabaseError(f"{path} is a directory, not a database file") from exc
    except PermissionError as exc:
        raise NotATapesDatabaseError(f"{path} cannot be read: permission denied") from exc
    if header and header != _SQLITE_HEADER:
        raise NotATapesDatabaseError(f"{path} is not an SQLite database")


def _create_private(path: Path) -> None:
    """Make the empty file SQLite will fill, readable by its owner only (0600, whatever the
    umask): it holds every prompt in clear. SQLite gives its -wal and -shm files the same mode."""
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def open_engine(path: Path, *, create: bool = True) -> Engine:
    """Open (and, with ``create``, make) a tapes database that Go tapes can open too.

    A new file gets Go's schema verbatim. An existing file must be SQLite; if it lacks the
    ``nodes`` table (a fresh Go vector store, say) the missing Go objects are created, exactly as
    ent's auto-migration would; a ``nodes`` table without the columns we need is refused.
    """
    if path.exists():
        _check_file(path)
    elif not create:
        raise NotATapesDatabaseError(f"{path} does not exist")
    else:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _create_private(path)
    engine = create_engine(f"sqlite+pysqlite:///{path}", pool_pre_ping=False)
    event.listen(engine, "connect", _on_connect)
    event.listen(engine, "begin", _on_begin)
    try:
        _ensure_schema(engine, path)
        _enable_wal(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def _ensure_schema(engine: Engine, path: Path) -> None:
    try:
        with write(engine) as conn:
            present = {name for (name,) in conn.exec_driver_sql("SELECT name FROM sqlite_master")}
            if "nodes" in present:
                # Refuse before creating anything, so that a refused file is left as it was.
                columns = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(`nodes`)")}
                missing = REQUIRED_NODE_COLUMNS - columns
                if missing:
                    raise NotATapesDatabaseError(
                        f"{path} has a nodes table without the column(s) "
                        f"{', '.join(sorted(missing))}"
                    )
            for name, ddl in GO_DDL:
                if name not in present:
                    conn.exec_driver_sql(ddl)
    except OperationalError as exc:
        if _is_busy(exc):
            raise
        raise NotATapesDatabaseError(f"{path} cannot be used: {exc.orig}") from exc


def _enable_wal(engine: Engine) -> None:
    # Outside any transaction: SQLite refuses to change the journal mode inside one.
    with engine.connect() as conn:
        try:
            mode = driver(conn).execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            log.info("keeping the current journal mode; another process holds the file: %s", exc)
            return
    if str(mode).lower() != "wal":
        log.info("the database stays in journal mode %s", mode)


def journal_mode(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(conn.exec_driver_sql("PRAGMA journal_mode").scalar())


def driver(conn: Connection) -> sqlite3.Connection:
    """The sqlite3 connection under ``conn``, for the hot paths that skip SQLAlchemy's wrapping."""
    raw = conn.connection.driver_connection
    if not isinstance(raw, sqlite3.Connection):  # pragma: no cover - pysqlite always gives one
        raise TypeError("not an sqlite3 connection")
    return raw


def missing_hashes(raw: sqlite3.Connection, hashes: Iterable[str]) -> set[str]:
    """Which of ``hashes`` have no row in ``nodes``, asked in batches."""
    wanted = list(dict.fromkeys(hashes))
    present: set[str] = set()
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        sql = f"SELECT hash FROM nodes WHERE hash IN ({', '.join('?' * len(chunk))})"
        present.update(h for (h,) in raw.execute(sql, chunk))
    return set(wanted) - present
