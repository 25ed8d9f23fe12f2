"""The ``local`` provider: Go tapes' own SQLite file, through SQLAlchemy.

Every query runs in SQLite: ancestry and depth are one recursive query each, leaves and roots use
the ``node_parent_hash`` index, and nothing is filtered row by row in Python.
"""

from __future__ import annotations

import builtins
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from tapes_e2e.errors import (
    CorruptStoreError,
    InvalidNodeError,
    NodeNotFoundError,
    StoreBusyError,
)
from tapes_e2e.node import Node
from tapes_e2e.store.database import (
    BUSY_TIMEOUT_MS,
    driver,
    journal_mode,
    missing_hashes,
    open_engine,
)
from tapes_e2e.store.rows import SELECT_COLUMNS, insert_rows, node_to_row, row_to_node

__all__ = ["LocalProvider", "SessionSummary"]

# No real session is a million turns deep; a parent chain that long can only be a loop that a
# corrupt or hand-edited database holds, and it is reported instead of followed forever.
MAX_DEPTH = 1_000_000

_COLS = ", ".join(SELECT_COLUMNS)
_N_COLS = ", ".join(f"n.{c}" for c in SELECT_COLUMNS)
_SELECT = f"SELECT {_COLS} FROM nodes"
_LEAF_FILTER = "NOT EXISTS (SELECT 1 FROM nodes AS c WHERE c.parent_hash = n.hash)"
# Rows come out of a recursive CTE in FIFO order, so in depth order, and lazily: a loop is
# caught by the first repeated hash, long before MAX_DEPTH.
# The recursion walks keys only (rowid and parent); the wide rows are then read by rowid, with
# `anc` as the outer loop (CROSS JOIN fixes the order) so they still stream in depth order.
_ANCESTRY = f"""
WITH RECURSIVE anc(rid, parent_hash, depth) AS (
    SELECT rowid, parent_hash, 0 FROM nodes WHERE hash = ?
    UNION ALL
    SELECT n.rowid, n.parent_hash, anc.depth + 1
    FROM nodes AS n JOIN anc ON n.hash = anc.parent_hash
    WHERE anc.depth < {MAX_DEPTH}
)
SELECT {_N_COLS} FROM anc CROSS JOIN nodes AS n ON n.rowid = anc.rid
"""
_DEPTH = f"""
WITH RECURSIVE anc(hash, parent_hash, depth) AS (
    SELECT hash, parent_hash, 0 FROM nodes WHERE hash = ?
    UNION ALL
    SELECT n.hash, n.parent_hash, anc.depth + 1 FROM nodes AS n JOIN anc ON n.hash = anc.parent_hash
    WHERE anc.depth < {MAX_DEPTH}
)
SELECT max(depth), count(*) FROM anc
"""
# Parents before children: breadth-first from every root (and from any node whose parent row is
# missing, which only a database written with foreign keys off can hold).
_TOPOLOGICAL = f"""
WITH RECURSIVE down(hash, depth) AS (
    SELECT hash, 0 FROM nodes AS n
    WHERE n.parent_hash IS NULL
       OR NOT EXISTS (SELECT 1 FROM nodes AS p WHERE p.hash = n.parent_hash)
    UNION ALL
    SELECT c.hash, down.depth + 1 FROM nodes AS c JOIN down ON c.parent_hash = down.hash
    WHERE down.depth < {MAX_DEPTH}
)
SELECT {_N_COLS} FROM down JOIN nodes AS n ON n.hash = down.hash
"""
_SESSIONS = f"""
WITH RECURSIVE leaves(hash, created_at) AS (
    SELECT hash, created_at FROM nodes AS n WHERE {_LEAF_FILTER}
    ORDER BY created_at DESC LIMIT ?
),
walk(leaf, hash, parent_hash, depth) AS (
    SELECT l.hash, l.hash, n.parent_hash, 0 FROM leaves AS l JOIN nodes AS n ON n.hash = l.hash
    UNION ALL
    SELECT walk.leaf, n.hash, n.parent_hash, walk.depth + 1
    FROM walk JOIN nodes AS n ON n.hash = walk.parent_hash
    WHERE walk.depth < {MAX_DEPTH}
)
SELECT walk.leaf, count(*), max(CASE WHEN walk.parent_hash IS NULL THEN walk.hash END),
       coalesce(sum(n.prompt_tokens), 0), coalesce(sum(n.completion_tokens), 0),
       coalesce(sum(n.total_tokens), 0), min(n.created_at), max(n.created_at),
       max(CASE WHEN walk.depth = 0 THEN n.model END)
FROM walk JOIN nodes AS n ON n.hash = walk.hash
GROUP BY walk.leaf
ORDER BY max(n.created_at) DESC
"""


def session_prefix(text: str) -> str:
    """``text`` as a hash prefix to look up (at least 4 lowercase hex digits), or an error."""
    prefix = text.strip().lower()
    if not (4 <= len(prefix) <= 64) or any(c not in "0123456789abcdef" for c in prefix):
        raise InvalidNodeError(
            f"{prefix!r} is not a session ID",
            hint="give a node hash, or at least its first 4 hex digits",
        )
    return prefix


def only_match(prefix: str, matches: list[str]) -> str:
    """The one hash ``prefix`` matched (``matches`` holds at most two), or an error."""
    if not matches:
        raise NodeNotFoundError(prefix)
    if len(matches) > 1:
        raise InvalidNodeError(
            f"{prefix} matches more than one node", hint="give more digits of the hash"
        )
    return matches[0]


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """One session (a leaf and its ancestry), summarized by one query."""

    session_id: str
    root_hash: str | None
    node_count: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    started_at: str
    last_at: str
    model: str


class LocalProvider:
    """Nodes in a local SQLite file that Go tapes can open, and that Go tapes' files open in."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        self._engine: Engine = open_engine(path, create=create)
        # The recording path: one pooled connection kept for writes, used under a lock, so a
        # put is BEGIN IMMEDIATE / INSERT / COMMIT with nothing else around it.
        self._writer = self._engine.raw_connection()
        self._write_lock = threading.Lock()

    # --- Provider --------------------------------------------------------------------------

    def put(self, node: Node) -> bool:
        return self.put_many((node,)) == 1

    def put_many(self, nodes: Iterable[Node]) -> int:
        """Store nodes in one transaction, parents before children; return how many were new.

        Either all are stored or, on any error, none.
        """
        rows = [_checked_row(node) for node in nodes]
        with self._write_lock:
            raw = self._writer.driver_connection
            assert isinstance(raw, sqlite3.Connection)  # noqa: S101 - pysqlite always
            _begin_immediate(raw)
            try:
                inserted = insert_rows(raw, rows)
            except BaseException:
                raw.execute("ROLLBACK")
                raise
            raw.execute("COMMIT")
            return inserted

    def get(self, node_hash: str) -> Node:
        with self._engine.connect() as conn:
            row = conn.exec_driver_sql(f"{_SELECT} WHERE hash = ?", (node_hash,)).fetchone()
        if row is None:
            raise NodeNotFoundError(node_hash)
        return row_to_node(row)

    def has(self, node_hash: str) -> bool:
        with self._engine.connect() as conn:
            sql = "SELECT 1 FROM nodes WHERE hash = ?"
            return conn.exec_driver_sql(sql, (node_hash,)).first() is not None

    def ancestry(self, node_hash: str) -> builtins.list[Node]:
        path: list[Node] = []
        seen: set[str] = set()
        with self._engine.connect() as conn:
            # Plain sqlite3 rows: thousands of them, and SQLAlchemy's Row adds nothing here.
            for row in driver(conn).execute(_ANCESTRY, (node_hash,)):
                if row[0] in seen:
                    raise CorruptStoreError(f"the parent links of node {node_hash} form a loop")
                seen.add(row[0])
                path.append(row_to_node(row))
        if not path:
            raise NodeNotFoundError(node_hash)
        return path

    def depth(self, node_hash: str) -> int:
        with self._engine.connect() as conn:
            row = conn.exec_driver_sql(_DEPTH, (node_hash,)).one()
        deepest, count = row
        if count == 0:
            raise NodeNotFoundError(node_hash)
        if deepest >= MAX_DEPTH:
            raise CorruptStoreError(f"the parent links of node {node_hash} form a loop")
        return int(deepest)

    def leaves(self) -> builtins.list[Node]:
        return self._select(f"{_SELECT} AS n WHERE {_LEAF_FILTER}")

    def roots(self) -> builtins.list[Node]:
        return self._select(f"{_SELECT} WHERE parent_hash IS NULL")

    def list(self) -> builtins.list[Node]:
        return self._select(f"{_SELECT} ORDER BY created_at")

    def close(self) -> None:
        with self._write_lock:
            if self._writer.dbapi_connection is not None:
                self._writer.close()
        self._engine.dispose()

    # --- beyond the Provider contract ------------------------------------------------------

    def iter_topological(self) -> Iterator[Node]:
        """Every node, parents before children, streamed (for export)."""
        with self._engine.connect() as conn:
            for row in conn.exec_driver_sql(_TOPOLOGICAL):
                yield row_to_node(row)

    def audit(self) -> Iterator[tuple[int, tuple[str, str] | None]]:
        """Check every row: yields (rows checked, (hash, problem) or None), streaming.

        A problem is a row that cannot be read, a hash that does not match the content, or a
        parent link to a node that is not stored.
        """
        checked = 0
        with self._engine.connect() as conn:
            for row in conn.exec_driver_sql(_SELECT):
                checked += 1
                yield checked, _row_problem(row)
            dangling = conn.exec_driver_sql(
                "SELECT n.hash, n.parent_hash FROM nodes AS n WHERE n.parent_hash IS NOT NULL "
                "AND NOT EXISTS (SELECT 1 FROM nodes AS p WHERE p.hash = n.parent_hash)"
            )
            for node_hash, parent in dangling:
                yield checked, (node_hash, f"its parent {parent} is not stored")

    def sessions(self, limit: int = 50) -> builtins.list[SessionSummary]:
        """The ``limit`` most recent sessions, newest first, summarized in one query."""
        with self._engine.connect() as conn:
            rows = conn.exec_driver_sql(_SESSIONS, (limit,)).all()
        return [
            SessionSummary(
                session_id=r[0],
                node_count=r[1],
                root_hash=r[2],
                prompt_tokens=r[3],
                completion_tokens=r[4],
                total_tokens=r[5],
                started_at=str(r[6]),
                last_at=str(r[7]),
                model=r[8] or "",
            )
            for r in rows
        ]

    def counts(self) -> tuple[int, int, int]:
        """(nodes, sessions, roots), counted by SQLite over its indexes."""
        with self._engine.connect() as conn:
            nodes = conn.exec_driver_sql("SELECT count(*) FROM nodes").scalar_one()
            sessions = conn.exec_driver_sql(
                f"SELECT count(*) FROM nodes AS n WHERE {_LEAF_FILTER}"
            ).scalar_one()
            roots = conn.exec_driver_sql(
                "SELECT count(*) FROM nodes WHERE parent_hash IS NULL"
            ).scalar_one()
        return int(nodes), int(sessions), int(roots)

    def get_many(self, hashes: Iterable[str]) -> dict[str, Node]:
        """The stored nodes among ``hashes``, by hash (absent ones are left out)."""
        wanted = list(dict.fromkeys(hashes))
        found: dict[str, Node] = {}
        with self._engine.connect() as conn:
            for start in range(0, len(wanted), 500):
                chunk = tuple(wanted[start : start + 500])
                sql = f"{_SELECT} WHERE hash IN ({', '.join('?' * len(chunk))})"
                for row in conn.exec_driver_sql(sql, chunk):
                    found[row[0]] = row_to_node(row)
        return found

    def resolve_prefix(self, prefix: str) -> str:
        """The one stored hash starting with ``prefix`` (at least 4 hex digits)."""
        prefix = session_prefix(prefix)
        # Hashes are lowercase hex, and "g" sorts after every hex digit: an index range scan.
        sql = "SELECT hash FROM nodes WHERE hash >= ? AND hash < ? ORDER BY hash LIMIT 2"
        with self._engine.connect() as conn:
            matches = [str(h) for (h,) in conn.exec_driver_sql(sql, (prefix, prefix + "g"))]
        return only_match(prefix, matches)

    def missing(self, hashes: Iterable[str]) -> set[str]:
        """Which of ``hashes`` are not stored."""
        with self._engine.connect() as conn:
            return missing_hashes(driver(conn), hashes)

    def journal_mode(self) -> str:
        return journal_mode(self._engine)

    @property
    def engine(self) -> Engine:
        return self._engine

    def _select(self, sql: str) -> builtins.list[Node]:
        with self._engine.connect() as conn:
            return [row_to_node(row) for row in conn.exec_driver_sql(sql)]

    def __enter__(self) -> LocalProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _checked_row(node: Node) -> tuple[Any, ...]:
    if not node.verify():
        raise InvalidNodeError(
            f"node {node.hash} does not match its content (its hash is {node.tapes_hash()})",
            hint="a node's hash is computed from its bucket and parent; build it with Node.new",
        )
    return node_to_row(node)


def _row_problem(row: Any) -> tuple[str, str] | None:
    try:
        node = row_to_node(row, eager=True)
    except CorruptStoreError as exc:
        return str(row[0]), exc.message
    recomputed = node.tapes_hash()
    if recomputed != node.hash:
        return node.hash, f"content does not match the hash (it hashes to {recomputed})"
    return None


def _begin_immediate(raw: sqlite3.Connection) -> None:
    try:
        raw.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):
            raise StoreBusyError(
                f"the database stayed locked by another writer for {BUSY_TIMEOUT_MS // 1000} s"
            ) from exc
        raise
