"""What the sync has done, kept in the tapes database next to the nodes it describes.

Two tables of our own (``e2e_`` prefix: ent's auto-migration leaves them alone, Go tapes never
reads them)::

    e2e_state(scope, key, value)      per vault: cursor, own_seqs, push_rowid, last_sync_at, …
    e2e_remote(vault, hash, node_id)  nodes a vault holds: pulled from it, or acknowledged by it

**Finding what to push.** SQLite gives ``nodes`` rows rowids in commit order (one writer at a time;
a child always commits after its parent), whoever inserts them: us, or Go tapes' proxy writing the
same file. Per vault we keep a high-water mark ``push_rowid``; everything at or below it is known
to the server. :meth:`SyncState.unpushed` reads the rows above it in one rowid range query with a
``LIMIT``, skipping hashes in ``e2e_remote``; :meth:`SyncState.mark_pushed`, called only after the
server acknowledged a batch, records the batch and moves the mark in one transaction. A crash
between the two re-sends the batch, which the server answers with ``existing``; nothing is lost
and nothing is stored twice (``nodes`` is keyed by hash, ``e2e_remote`` by vault and hash, so a
store that switches to another vault (``team_id``) pushes its history there too).

**Storing what was pulled.** :meth:`SyncState.store_pulled` inserts a page of verified nodes
(parents first), records them in ``e2e_remote`` and moves the pull cursor in one transaction:
after a crash either the whole page is there and the cursor is past it, or none of it is and the
page is pulled again.

**Never pulling back what we pushed.** The server hands out sequence numbers in order, and a
push answer names the ones its new nodes got (``first_seq`` … ``head_seq``, contiguous). They
are recorded as a run of our own in the same transaction as the batch (``own_seqs``: first, last,
how many nodes; a share ``auto_share`` made takes a number and holds no node). The pull cursor
steps over every run that starts right after it, at once when the push follows what was pulled,
or when a pull reaches it (the gap before it holding another client's nodes, or a batch pushed
by a run that was interrupted before the answer came); a page is asked for only up to the next
run. So our own nodes are not downloaded again, and the pull counts only nodes new here.

Pulled nodes also get rowids above the mark. So that a no-op sync does not walk them again and
again, :meth:`SyncState.advance_past_remote` (and every ``store_pulled``) moves the mark over a
leading run of rows that are all in ``e2e_remote``, inside a write transaction so that no row
inserted meanwhile is stepped over.

Every write takes ``BEGIN IMMEDIATE`` through :func:`tapes_e2e.store.database.write`, so it queues
behind the recording path and behind other processes on the busy timeout.

Limits: a rowid is stable while rows are only added, which is how tapes uses the table. Deleting
the newest rows and then ``VACUUM`` can renumber rows below the mark; :meth:`SyncState.rescan`
(the mark back to 0; ``e2e_remote`` still prevents re-sending) recovers from that, and a mark
above the largest rowid is detected and rescanned automatically.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from tapes_e2e.locks import LockFile
from tapes_e2e.node import Node
from tapes_e2e.store.database import driver, write
from tapes_e2e.store.rows import SELECT_COLUMNS, PulledRow, insert_rows, row_to_node

if TYPE_CHECKING:
    from tapes_e2e.providers.local import LocalProvider

__all__ = [
    "SYNC_DDL",
    "OwnRun",
    "PushedNode",
    "SyncState",
    "VaultSyncState",
    "ensure_sync_tables",
    "pull_window",
    "skip_own",
    "sync_lock",
]

log = logging.getLogger("tapes.sync")

# (table name, DDL). WITHOUT ROWID: both are looked up by their primary key only.
SYNC_DDL: tuple[tuple[str, str], ...] = (
    (
        "e2e_state",
        (
            "CREATE TABLE IF NOT EXISTS e2e_state (scope TEXT NOT NULL, key TEXT NOT NULL, "
            "value TEXT NOT NULL, PRIMARY KEY (scope, key)) WITHOUT ROWID"
        ),
    ),
    (
        "e2e_remote",
        (
            "CREATE TABLE IF NOT EXISTS e2e_remote (vault TEXT NOT NULL, hash TEXT NOT NULL, "
            "node_id TEXT NOT NULL, PRIMARY KEY (vault, hash)) WITHOUT ROWID"
        ),
    ),
)

# Keys of a vault's scope in e2e_state.
CURSOR = "cursor"
PUSH_ROWID = "push_rowid"
HEAD = "head"
LAST_SYNC_AT = "last_sync_at"
LAST_RESULT = "last_result"
OWN_SEQS = "own_seqs"

PushedNode = tuple[int, str, str]
"""(rowid, hash, node_id) of a node the server acknowledged."""
OwnRun = tuple[int, int, int]
"""(first, last, nodes): server sequence numbers our own writes took, and how many of them are
nodes (a share takes one and holds none)."""

_N_COLS = ", ".join(f"n.{c}" for c in SELECT_COLUMNS)
# Bound parameters in order: the rowid bound, then the vault (the server holds a node per vault).
_NOT_REMOTE = "NOT EXISTS (SELECT 1 FROM e2e_remote AS r WHERE r.vault = ? AND r.hash = n.hash)"
# A range scan of the rowid b-tree, one primary-key probe of e2e_remote per row, stopped by LIMIT.
UNPUSHED_SQL = (
    f"SELECT n.rowid, {_N_COLS} FROM nodes AS n "
    f"WHERE n.rowid > ? AND {_NOT_REMOTE} ORDER BY n.rowid LIMIT ?"
)
PENDING_SQL = f"SELECT count(*) FROM nodes AS n WHERE n.rowid > ? AND {_NOT_REMOTE}"
_FIRST_UNPUSHED_SQL = f"SELECT min(n.rowid) FROM nodes AS n WHERE n.rowid > ? AND {_NOT_REMOTE}"
_MAX_ROWID_SQL = "SELECT coalesce(max(rowid), 0) FROM nodes"
_UPSERT_STATE = (
    "INSERT INTO e2e_state (scope, key, value) VALUES (?, ?, ?) "
    "ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value"
)
_INSERT_REMOTE = (
    "INSERT INTO e2e_remote (hash, vault, node_id) VALUES (?, ?, ?) "
    "ON CONFLICT (vault, hash) DO NOTHING"
)


def ensure_sync_tables(engine: Engine) -> None:
    """Create the ``e2e_state`` and ``e2e_remote`` tables if they are missing (idempotent).

    Reads ``sqlite_master`` first and takes a write transaction only when a table is missing, so
    opening a store that has them costs one read.
    """
    names = tuple(name for name, _ in SYNC_DDL)
    marks = ", ".join("?" * len(names))
    sql = f"SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name IN ({marks})"
    with engine.connect() as conn:
        present = dict(driver(conn).execute(sql, names).fetchall())
    old_remote = _OLD_REMOTE_KEY in (present.get("e2e_remote") or "")
    if len(present) == len(SYNC_DDL) and not old_remote:
        return
    with write(engine) as conn:
        raw = driver(conn)
        if old_remote:
            _migrate_remote(raw)
        for _, ddl in SYNC_DDL:
            raw.execute(ddl)


_OLD_REMOTE_KEY = "hash TEXT NOT NULL PRIMARY KEY"


def _migrate_remote(raw: sqlite3.Connection) -> None:
    """Inside the write transaction: ``e2e_remote`` keyed by hash alone (before 2026-12) becomes
    keyed by (vault, hash), every row kept. A failure rolls the whole step back."""
    raw.execute(SYNC_DDL[1][1].replace("e2e_remote", "e2e_remote_by_vault", 1))
    raw.execute(
        "INSERT INTO e2e_remote_by_vault (vault, hash, node_id) "
        "SELECT vault, hash, node_id FROM e2e_remote"
    )
    raw.execute("DROP TABLE e2e_remote")
    raw.execute("ALTER TABLE e2e_remote_by_vault RENAME TO e2e_remote")
    log.warning(
        "migrated the sync bookkeeping of this tapes database to per-vault records "
        "(a node pushed to one vault is pushed to another one too)"
    )


@dataclass(frozen=True, slots=True)
class VaultSyncState:
    """Everything ``e2e_state`` holds for one vault, read in one query.

    ``cursor`` and ``push_rowid`` start at 0; ``head`` is the last verified chain head
    (``keymgmt.ChainHead.to_dict()``), ``None`` before the first verified pull; ``own_seqs`` the
    runs of our own sequence numbers above the cursor (see the module's docstring).
    """

    vault: str
    cursor: int = 0
    push_rowid: int = 0
    head: dict[str, Any] | None = None
    last_sync_at: str | None = None
    last_result: str | None = None
    own_seqs: tuple[OwnRun, ...] = ()

    @property
    def own_nodes_ahead(self) -> int:
        """How many of the nodes above the cursor are our own (never to be pulled)."""
        return sum(nodes for _, _, nodes in self.own_seqs)


def skip_own(cursor: int, own: Iterable[OwnRun]) -> tuple[int, tuple[OwnRun, ...]]:
    """The cursor moved over every run of our own that starts at or below the number after it,
    and the runs still ahead of it."""
    ahead: list[OwnRun] = []
    for run in sorted(own):
        if run[0] <= cursor + 1:
            cursor = max(cursor, run[1])
        else:
            ahead.append(run)
    return cursor, tuple(ahead)


def pull_window(cursor: int, own: Iterable[OwnRun], page_size: int) -> tuple[int, int]:
    """Where the next page starts (past our own runs) and how many envelopes to ask for: at
    most up to the next run of our own, so that the page ends just before it."""
    cursor, ahead = skip_own(cursor, own)
    return cursor, min(page_size, ahead[0][0] - cursor - 1) if ahead else page_size


def sync_lock(database: Path, vault: str, command: str) -> LockFile:
    """The lock that one sync of ``vault`` into the store at ``database`` holds at a time (a
    file beside the database, named for the vault): ``tapes storage sync`` for the whole
    command, ``--watch`` and the hybrid provider's worker for each round. ``command`` is what
    the holder is, for whoever finds it taken."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", vault)
    return LockFile(
        database.with_name(f"{database.name}.sync-{name}.lock"), command=command,
        busy=f"vault {vault} of {database} is being synced by another process",
        hint="let it finish, or run `tapes storage sync --wait` to sync right after it",
    )  # fmt: skip


class SyncState:
    """The sync bookkeeping of one tapes database (a ``LocalProvider``'s file).

    Thread-safe: reads use pooled connections, writes take ``BEGIN IMMEDIATE``. A vault's
    ``scope`` in ``e2e_state`` is its id.
    """

    def __init__(self, provider: LocalProvider) -> None:
        self.provider = provider
        self._engine = provider.engine
        ensure_sync_tables(self._engine)

    # --- e2e_state ---------------------------------------------------------------------------

    def load(self, vault: str) -> VaultSyncState:
        """The vault's cursor, push mark, verified head and last result."""
        values = self.values(vault)
        head = values.get(HEAD)
        return VaultSyncState(
            vault=vault,
            cursor=int(values.get(CURSOR, 0)),
            push_rowid=int(values.get(PUSH_ROWID, 0)),
            head=json.loads(head) if head is not None else None,
            last_sync_at=values.get(LAST_SYNC_AT),
            last_result=values.get(LAST_RESULT),
            own_seqs=_runs(values.get(OWN_SEQS)),
        )

    def values(self, scope: str) -> dict[str, str]:
        """Every (key, value) of ``scope``, raw text."""
        with self._engine.connect() as conn:
            rows = driver(conn).execute(
                "SELECT key, value FROM e2e_state WHERE scope = ?", (scope,)
            )
            return {str(k): str(v) for k, v in rows}

    def get(self, scope: str, key: str) -> str | None:
        """One raw value of ``scope``, or ``None``."""
        with self._engine.connect() as conn:
            row = (
                driver(conn)
                .execute("SELECT value FROM e2e_state WHERE scope = ? AND key = ?", (scope, key))
                .fetchone()
            )
        return None if row is None else str(row[0])

    def set_values(self, scope: str, **values: str | int | dict[str, Any] | None) -> None:
        """Set several keys of ``scope`` in one transaction; ``None`` deletes a key.

        Integers are stored as decimal text, dicts as JSON.
        """
        with write(self._engine) as conn:
            raw = driver(conn)
            for key, value in values.items():
                if value is None:
                    raw.execute("DELETE FROM e2e_state WHERE scope = ? AND key = ?", (scope, key))
                else:
                    raw.execute(_UPSERT_STATE, (scope, key, _encode(value)))

    def cursor(self, vault: str) -> int:
        """The pull cursor: the server sequence number of the last stored envelope (0: none)."""
        return int(self.get(vault, CURSOR) or 0)

    def pull_position(self, vault: str) -> tuple[int, tuple[OwnRun, ...]]:
        """The pull cursor and the runs of our own sequence numbers above it, in one read."""
        with self._engine.connect() as conn:
            raw = driver(conn)
            return _stored_int(raw, vault, CURSOR), _own(raw, vault)

    def add_own_seqs(self, vault: str, runs: Sequence[OwnRun]) -> int:
        """Record sequence numbers our own writes took (a share made here); the cursor steps
        over them when it reaches them. Returns the cursor."""
        with write(self._engine, durable=False) as conn:
            return _move_cursor(driver(conn), vault, 0, runs)

    def set_cursor(self, vault: str, cursor: int) -> None:
        self.set_values(vault, **{CURSOR: cursor})

    def push_rowid(self, vault: str) -> int:
        """The push high-water mark: every node at or below this rowid is known to the server."""
        return int(self.get(vault, PUSH_ROWID) or 0)

    def set_push_rowid(self, vault: str, rowid: int) -> None:
        self.set_values(vault, **{PUSH_ROWID: rowid})

    def head(self, vault: str) -> dict[str, Any] | None:
        """The last verified chain head, as ``ChainHead.to_dict()`` gave it."""
        value = self.get(vault, HEAD)
        return None if value is None else dict(json.loads(value))

    def set_head(self, vault: str, head: dict[str, Any]) -> None:
        self.set_values(vault, **{HEAD: head})

    def record_result(self, vault: str, *, at: str, result: str) -> None:
        """Record when a sync round ended and how (``ok``, or ``<kind>: <message>``)."""
        self.set_values(vault, **{LAST_SYNC_AT: at, LAST_RESULT: result})

    # --- push --------------------------------------------------------------------------------

    def unpushed(
        self, vault: str, after_rowid: int | None = None, limit: int = 500
    ) -> list[tuple[int, Node]]:
        """Up to ``limit`` nodes above the mark that the server does not hold, by rowid.

        ``after_rowid`` defaults to the vault's stored mark. One range query on the rowid b-tree
        (parents come before children: a child is always inserted after its parent). A hash that
        ``e2e_remote`` records for *this* vault is skipped: the vault already holds it (a node the
        personal vault holds is still pushed to a team vault, and the other way round).
        """
        if after_rowid is None:
            after_rowid = self.push_rowid(vault)
        with self._engine.connect() as conn:
            rows = driver(conn).execute(UNPUSHED_SQL, (after_rowid, vault, limit)).fetchall()
        return [(int(row[0]), row_to_node(row[1:])) for row in rows]

    def mark_pushed(
        self,
        vault: str,
        batch: Sequence[PushedNode],
        new_hwm: int,
        *,
        stored_seqs: tuple[int, int] | None = None,
    ) -> int | None:
        """After the server acknowledged ``batch``: record it and raise the mark, atomically.

        The mark never moves down (a stale ``new_hwm`` from a slower pusher is ignored).
        ``stored_seqs`` are the server's first and last sequence numbers of the nodes it stored
        from this batch, recorded as a run of our own in the same transaction: the pull never
        downloads them (when they follow the cursor directly, it moves past them now). Returns
        the cursor when it moved, else None. Not fsynced: lost to a power cut, the batch is
        pushed again (the server keeps each node once) and the cursor stays where it was.
        """
        with write(self._engine, durable=False) as conn:
            raw = driver(conn)
            raw.executemany(
                _INSERT_REMOTE, [(node_hash, vault, node_id) for _, node_hash, node_id in batch]
            )
            _raise_mark(raw, vault, new_hwm)
            if stored_seqs is None:
                return None
            first, last = stored_seqs
            before = _stored_int(raw, vault, CURSOR)
            after = _move_cursor(raw, vault, before, [(first, last, last - first + 1)])
            return after if after != before else None

    def advance_past_remote(self, vault: str) -> int:
        """Move the mark over the rows above it that the server already holds; return the mark.

        Stops just below the first row still to push (or at the last row). A mark above the
        largest rowid (rows renumbered) restarts from 0. One write transaction, so a row
        inserted meanwhile is never stepped over; no write when there is nothing to move.
        """
        with self._engine.connect() as conn:
            raw = driver(conn)
            mark = _stored_int(raw, vault, PUSH_ROWID)
            if raw.execute(_MAX_ROWID_SQL).fetchone()[0] == mark:
                return mark
        with write(self._engine) as conn:
            return _advance(driver(conn), vault)

    def rescan(self, vault: str) -> None:
        """Put the mark back to 0: the next push walks every row (``e2e_remote`` still applies)."""
        self.set_push_rowid(vault, 0)

    def pending_push_count(self, vault: str) -> int:
        """How many nodes wait to be pushed: a count over the rowid range above the mark."""
        with self._engine.connect() as conn:
            raw = driver(conn)
            mark = _stored_int(raw, vault, PUSH_ROWID)
            return int(raw.execute(PENDING_SQL, (mark, vault)).fetchone()[0])

    # --- pull --------------------------------------------------------------------------------

    def store_pulled(
        self,
        vault: str,
        rows: Sequence[PulledRow],
        cursor: int,
        *,
        head: dict[str, Any] | None = None,
    ) -> int:
        """Store a pulled page: insert the nodes (parents first), record them, move the cursor.

        ``rows`` are verified nodes (:func:`~tapes_e2e.store.rows.pulled_row`). All in one
        transaction: on any error nothing is stored and the cursor stays. Without a ``head`` it
        is not fsynced: a power cut may lose the page whole, with its cursor, and it is pulled
        again. ``head``, when given, is the chain head verified with this page, stored in the
        same transaction. The cursor never moves back, and steps over a run of our own that
        follows the page. Returns how many nodes were new locally.

        Raises ``MissingParentError`` for a node whose parent is neither stored nor in the page.
        """
        ordered = _parents_first(rows)
        with write(self._engine, durable=head is not None) as conn:
            raw = driver(conn)
            inserted = insert_rows(raw, [pulled.row for pulled in ordered])
            raw.executemany(
                _INSERT_REMOTE, [(pulled.row[0], vault, pulled.node_id) for pulled in ordered]
            )
            _move_cursor(raw, vault, cursor)
            if head is not None:
                raw.execute(_UPSERT_STATE, (vault, HEAD, _encode(head)))
            _advance(raw, vault)
        return inserted

    def remote_count(self, vault: str | None = None) -> int:
        """How many hashes ``e2e_remote`` holds (for one vault, or in all)."""
        with self._engine.connect() as conn:
            raw = driver(conn)
            if vault is None:
                return int(raw.execute("SELECT count(*) FROM e2e_remote").fetchone()[0])
            sql = "SELECT count(*) FROM e2e_remote WHERE vault = ?"
            return int(raw.execute(sql, (vault,)).fetchone()[0])

    def remote_ids(self, vault: str, hashes: Iterable[str]) -> dict[str, str]:
        """The node ID ``vault`` holds each of ``hashes`` under, for those it holds (an ID keyed
        by the epoch the node was sealed in, which a child sealed later must name)."""
        wanted, found = sorted(set(hashes)), dict[str, str]()
        with self._engine.connect() as conn:
            raw = driver(conn)
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                sql = f"SELECT hash, node_id FROM e2e_remote WHERE vault = ? AND hash IN ({marks})"
                found.update((str(h), str(i)) for h, i in raw.execute(sql, (vault, *chunk)))
        return found

    def remote_hashes(self, vault: str) -> set[str]:
        """The hashes recorded for ``vault`` (a full read: for tests and repair tools)."""
        with self._engine.connect() as conn:
            rows = driver(conn).execute("SELECT hash FROM e2e_remote WHERE vault = ?", (vault,))
            return {str(h) for (h,) in rows}


def _encode(value: str | int | dict[str, Any]) -> str:
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def _stored_int(raw: sqlite3.Connection, scope: str, key: str) -> int:
    row = raw.execute(
        "SELECT value FROM e2e_state WHERE scope = ? AND key = ?", (scope, key)
    ).fetchone()
    return 0 if row is None else int(row[0])


def _runs(text: str | None) -> tuple[OwnRun, ...]:
    return tuple((int(a), int(b), int(n)) for a, b, n in json.loads(text)) if text else ()


def _own(raw: sqlite3.Connection, vault: str) -> tuple[OwnRun, ...]:
    row = raw.execute(
        "SELECT value FROM e2e_state WHERE scope = ? AND key = ?", (vault, OWN_SEQS)
    ).fetchone()
    return _runs(None if row is None else str(row[0]))


def _move_cursor(
    raw: sqlite3.Connection, vault: str, cursor: int, new_runs: Sequence[OwnRun] = ()
) -> int:
    """Inside a write transaction: the cursor at least at ``cursor`` (never back), ``new_runs``
    recorded as our own, and the cursor over every run of our own it reaches. Returns it."""
    stored, own = _stored_int(raw, vault, CURSOR), _own(raw, vault)
    moved, ahead = skip_own(max(stored, cursor), (*own, *new_runs))
    if moved != stored:
        raw.execute(_UPSERT_STATE, (vault, CURSOR, str(moved)))
    if ahead != own:
        if ahead:
            raw.execute(_UPSERT_STATE, (vault, OWN_SEQS, json.dumps(ahead)))
        else:
            raw.execute("DELETE FROM e2e_state WHERE scope = ? AND key = ?", (vault, OWN_SEQS))
    return moved


def _raise_mark(raw: sqlite3.Connection, vault: str, new_hwm: int) -> None:
    if new_hwm > _stored_int(raw, vault, PUSH_ROWID):
        raw.execute(_UPSERT_STATE, (vault, PUSH_ROWID, str(new_hwm)))


def _advance(raw: sqlite3.Connection, vault: str) -> int:
    """Inside a write transaction: the mark just below the first row still to push."""
    mark = _stored_int(raw, vault, PUSH_ROWID)
    last = int(raw.execute(_MAX_ROWID_SQL).fetchone()[0])
    start = mark if mark <= last else 0
    first = raw.execute(_FIRST_UNPUSHED_SQL, (start, vault)).fetchone()[0]
    target = last if first is None else int(first) - 1
    if target != mark:
        raw.execute(_UPSERT_STATE, (vault, PUSH_ROWID, str(target)))
    return target


def _parents_first(rows: Sequence[PulledRow]) -> list[PulledRow]:
    """The page reordered so that a node whose parent is in the page comes after it.

    Otherwise the given order is kept (a page in server sequence order is already so).
    """
    by_hash = {pulled.hash: pulled for pulled in rows}
    placed: set[str] = set()
    out: list[PulledRow] = []
    for pulled in rows:
        pending: list[str] = []
        walked: set[str] = set()
        current: str | None = pulled.hash
        while current is not None and current in by_hash and current not in placed:
            if current in walked:  # a loop: impossible for verified hashes; stop walking
                break
            pending.append(current)
            walked.add(current)
            current = by_hash[current].parent_hash
        for node_hash in reversed(pending):
            placed.add(node_hash)
            out.append(by_hash[node_hash])
    return out
