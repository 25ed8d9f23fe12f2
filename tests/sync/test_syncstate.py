"""SyncState on real SQLite files: the e2e tables, push selection by rowid, atomic bookkeeping,
nodes written by another program, and kill -9 between the server's ack and the local record and
in the middle of storing a pulled page."""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tapes_e2e.errors import InvalidNodeError, MissingParentError
from tapes_e2e.node import Node, node_from_json
from tapes_e2e.providers.local import LocalProvider
from tapes_e2e.store import database
from tapes_e2e.store import syncstate as syncstate_module
from tapes_e2e.store.rows import INSERT_SQL, node_to_row, pulled_row
from tapes_e2e.store.schema import GO_DDL
from tapes_e2e.store.syncstate import (
    PENDING_SQL,
    UNPUSHED_SQL,
    SyncState,
    VaultSyncState,
    ensure_sync_tables,
)
from tapes_e2e.sync.worker import PulledBatch, SyncRunner, run_sync
from tests.conftest import chain

REPO = Path(__file__).resolve().parents[2]
VAULT = "vault-personal"
OTHER = "vault-team"


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[LocalProvider]:
    with LocalProvider(tmp_path / "tapes.sqlite") as store:
        yield store


@pytest.fixture
def state(provider: LocalProvider) -> SyncState:
    return SyncState(provider)


def sessions(count: int, length: int, tag: str = "s") -> list[Node]:
    """``count`` independent conversations of ``length`` turns, parents first."""
    nodes: list[Node] = []
    for index in range(count):
        nodes += chain([f"{tag}{index} turn {turn}" for turn in range(length)])
    return nodes


def rowids(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        return {h: r for r, h in conn.execute("SELECT rowid, hash FROM nodes")}


def table_names(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def push_all(state: SyncState, vault: str = VAULT, batch: int = 100) -> list[str]:
    """Push everything pending the way the worker does; the hashes in push order."""
    pushed: list[str] = []
    while rows := state.unpushed(vault, limit=batch):
        state.mark_pushed(vault, [(r, n.hash, f"id-{n.hash[:8]}") for r, n in rows], rows[-1][0])
        pushed += [n.hash for _, n in rows]
    return pushed


# --- tables and scalar state ------------------------------------------------------------------


def test_tables_are_created_once_and_left_alone_after(tmp_path: Path) -> None:
    db = tmp_path / "tapes.sqlite"
    with LocalProvider(db) as provider:
        SyncState(provider).set_cursor(VAULT, 7)
        ensure_sync_tables(provider.engine)  # idempotent: the value survives
        assert SyncState(provider).cursor(VAULT) == 7
    assert {"e2e_state", "e2e_remote", "nodes", "facets"} <= table_names(db)
    with sqlite3.connect(db) as conn:
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'e2e_remote'").fetchone()
    assert "WITHOUT ROWID" in sql[0]


def test_scope_values_round_trip(state: SyncState) -> None:
    assert state.load(VAULT) == VaultSyncState(vault=VAULT)
    state.set_cursor(VAULT, 41)
    state.set_push_rowid(VAULT, 9)
    state.set_head(VAULT, {"seqno": 3, "hash": "ab" * 32})
    state.record_result(VAULT, at="2026-11-26T01:00:00+00:00", result="offline: no route")
    state.set_cursor(OTHER, 5)
    assert state.load(VAULT) == VaultSyncState(
        vault=VAULT,
        cursor=41,
        push_rowid=9,
        head={"seqno": 3, "hash": "ab" * 32},
        last_sync_at="2026-11-26T01:00:00+00:00",
        last_result="offline: no route",
    )
    assert state.cursor(OTHER) == 5
    assert state.head(OTHER) is None
    state.set_values(VAULT, last_result=None, cursor=42)
    assert state.get(VAULT, "last_result") is None
    assert state.values(VAULT)["cursor"] == "42"


# --- push selection ---------------------------------------------------------------------------


def test_unpushed_walks_rowids_in_order_and_mark_pushed_moves_the_mark(
    provider: LocalProvider, state: SyncState
) -> None:
    nodes = sessions(3, 4)
    provider.put_many(nodes)
    ids = rowids(provider.path)
    first = state.unpushed(VAULT, limit=5)
    assert [n.hash for _, n in first] == [n.hash for n in nodes[:5]]
    assert [r for r, _ in first] == sorted(ids[n.hash] for n in nodes[:5])
    assert first[0][1] == nodes[0]
    assert state.pending_push_count(VAULT) == 12

    state.mark_pushed(VAULT, [(r, n.hash, "nid") for r, n in first], first[-1][0])
    assert state.push_rowid(VAULT) == first[-1][0]
    assert state.pending_push_count(VAULT) == 7
    rest = state.unpushed(VAULT, limit=100)
    assert [n.hash for _, n in rest] == [n.hash for n in nodes[5:]]
    # A stale, lower mark from a slower pusher does not move it back.
    state.mark_pushed(VAULT, [], 1)
    assert state.push_rowid(VAULT) == first[-1][0]
    # Another vault has its own mark.
    assert state.pending_push_count(OTHER) == 12  # what one vault holds, another still needs


def test_unpushed_is_one_rowid_range_search(provider: LocalProvider, state: SyncState) -> None:
    provider.put_many(sessions(2, 3))
    with sqlite3.connect(provider.path) as conn:
        first_unpushed = syncstate_module._FIRST_UNPUSHED_SQL
        queries = ((UNPUSHED_SQL, (0, VAULT, 10)), (PENDING_SQL, (0, VAULT)),
                   (first_unpushed, (0, VAULT)))  # fmt: skip
        for sql, params in queries:
            plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
            assert plan[0] == "SEARCH n USING INTEGER PRIMARY KEY (rowid>?)", plan
            assert "SEARCH r USING PRIMARY KEY (vault=? AND hash=?)" in plan
            assert not [step for step in plan if step.startswith("SCAN")]
            assert not [step for step in plan if "TEMP B-TREE" in step]  # no sort: rowid order


def test_mark_pushed_is_all_or_nothing(provider: LocalProvider, state: SyncState) -> None:
    nodes = sessions(1, 3)
    provider.put_many(nodes)
    rows = state.unpushed(VAULT)
    bad: list[Any] = [(r, n.hash, "nid") for r, n in rows]
    bad[2] = (rows[2][0], rows[2][1].hash, None)  # NOT NULL fails on the last insert
    with pytest.raises(sqlite3.IntegrityError):
        state.mark_pushed(VAULT, bad, rows[-1][0])
    assert state.remote_count() == 0
    assert state.push_rowid(VAULT) == 0
    assert state.pending_push_count(VAULT) == 3


def test_nodes_written_by_another_program_are_found(tmp_path: Path) -> None:
    """A file made by Go's DDL; rows inserted with raw sqlite3 in Go's encoding, before we
    open it and while we have it open; some JSON columns as TEXT, which Go also writes."""
    db = tmp_path / "go.sqlite"
    early, late = sessions(2, 3, "go-early"), sessions(1, 4, "go-late")
    go = sqlite3.connect(db, isolation_level=None)
    go.execute("PRAGMA foreign_keys = ON")
    for _, ddl in GO_DDL:
        go.execute(ddl)
    go.execute("BEGIN IMMEDIATE")
    for node in early:
        row = list(node_to_row(node))
        row[2] = row[2].decode("utf-8")  # bucket as TEXT
        go.execute(INSERT_SQL, row)
    go.execute("COMMIT")

    with LocalProvider(db) as provider:
        state = SyncState(provider)
        found = state.unpushed(VAULT)
        assert [n.hash for _, n in found] == [n.hash for n in early]
        assert [n for _, n in found] == early
        push_all(state)
        assert state.unpushed(VAULT) == []

        ours = chain(["ours 1", "ours 2"])
        provider.put_many(ours)
        go.execute("BEGIN IMMEDIATE")
        for node in late:
            go.execute(INSERT_SQL, node_to_row(node))
        go.execute("COMMIT")
        assert [n.hash for _, n in state.unpushed(VAULT)] == [n.hash for n in ours + late]
        assert state.pending_push_count(VAULT) == 6
    go.close()
    assert {"e2e_state", "e2e_remote"} <= table_names(db)


# --- pull -------------------------------------------------------------------------------------


def test_store_pulled_stores_parents_first_and_moves_everything_at_once(
    provider: LocalProvider, state: SyncState
) -> None:
    nodes = sessions(2, 3)
    shuffled = [nodes[2], nodes[0], nodes[5], nodes[1], nodes[4], nodes[3]]
    page = [pulled_row(n, f"srv-{i}") for i, n in enumerate(shuffled)]
    head = {"seqno": 1, "hash": "cd" * 32}
    assert state.store_pulled(VAULT, page, cursor=6, head=head) == 6
    assert {n.hash for n in provider.list()} == {n.hash for n in nodes}
    assert state.remote_hashes(VAULT) == {n.hash for n in nodes}
    assert (state.cursor(VAULT), state.head(VAULT)) == (6, head)
    # Pulled nodes are not pushed back, and the mark skips over them.
    assert state.unpushed(VAULT) == []
    assert state.pending_push_count(VAULT) == 0
    assert state.push_rowid(VAULT) == max(rowids(provider.path).values())
    # Pulling a node we already hold records it without inserting it again.
    assert state.store_pulled(VAULT, page[:2], cursor=8) == 0
    assert state.cursor(VAULT) == 8
    # The cursor never moves back.
    state.store_pulled(VAULT, [], cursor=2)
    assert state.cursor(VAULT) == 8


def test_store_pulled_is_all_or_nothing(provider: LocalProvider, state: SyncState) -> None:
    good = sessions(1, 3)
    orphan = chain(["child of a node nobody has"], parent=sessions(1, 1, "absent")[0])
    with pytest.raises(MissingParentError):
        state.store_pulled(VAULT, [pulled_row(n, "id") for n in [*good, *orphan]], cursor=4)
    forged = Node(hash="0" * 64, parent_hash=None, bucket=good[0].bucket)
    with pytest.raises(InvalidNodeError):  # a row is made only of a node that matches its hash
        state.store_pulled(VAULT, [pulled_row(n, "id") for n in (good[0], forged)], cursor=4)
    assert provider.counts()[0] == 0
    assert state.remote_count() == 0
    assert state.load(VAULT) == VaultSyncState(vault=VAULT)


def test_the_mark_stops_before_local_work_interleaved_with_pulled_nodes(
    provider: LocalProvider, state: SyncState
) -> None:
    local = chain(["local 1", "local 2"])
    provider.put_many(local)
    pulled = sessions(2, 2, "remote")
    state.store_pulled(VAULT, [pulled_row(n, "id") for n in pulled], cursor=4)
    assert state.push_rowid(VAULT) == 0  # local work below the pulled rows is still pending
    assert [n.hash for _, n in state.unpushed(VAULT)] == [n.hash for n in local]
    assert state.pending_push_count(VAULT) == 2
    push_all(state)
    assert state.advance_past_remote(VAULT) == max(rowids(provider.path).values())
    assert state.pending_push_count(VAULT) == 0


def test_a_mark_above_the_last_row_rescans(provider: LocalProvider, state: SyncState) -> None:
    nodes = sessions(1, 3)
    provider.put_many(nodes)
    state.set_push_rowid(VAULT, 1000)  # rows were renumbered (delete + VACUUM)
    assert state.advance_past_remote(VAULT) == 0
    assert len(state.unpushed(VAULT)) == 3
    push_all(state)
    state.rescan(VAULT)
    assert state.push_rowid(VAULT) == 0
    assert state.unpushed(VAULT) == []  # e2e_remote still knows them
    assert state.advance_past_remote(VAULT) == 3


# --- kill -9 --------------------------------------------------------------------------------


class FileServer:
    """An idempotent stand-in for the server in its own SQLite file, shared across processes.

    ``envelopes`` holds each hash once (the server's ``existing``); ``received`` logs every
    push of every hash, so a re-send shows.
    """

    def __init__(self, path: Path) -> None:
        # The runner fetches the next page on a helper thread; calls never overlap.
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS envelopes (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
            "hash TEXT NOT NULL UNIQUE, node_id TEXT NOT NULL, body TEXT NOT NULL)"
        )
        self.conn.execute("CREATE TABLE IF NOT EXISTS received (hash TEXT NOT NULL)")

    def push(self, _vault: str, nodes: Sequence[Node]) -> list[str]:
        self.conn.execute("BEGIN IMMEDIATE")
        for node in nodes:
            self.conn.execute("INSERT INTO received (hash) VALUES (?)", (node.hash,))
            self.conn.execute(
                "INSERT INTO envelopes (hash, node_id, body) VALUES (?, ?, ?) "
                "ON CONFLICT (hash) DO NOTHING",
                (node.hash, f"nid-{node.hash[:24]}", json.dumps(node.to_json())),
            )
        self.conn.execute("COMMIT")
        return [f"nid-{node.hash[:24]}" for node in nodes]

    def pull(self, _vault: str, after: int, limit: int) -> PulledBatch:
        rows = self.conn.execute(
            "SELECT seq, body, node_id FROM envelopes WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit + 1),
        ).fetchall()
        page = rows[:limit]
        nodes = [pulled_row(node_from_json(json.loads(body)), node_id) for _, body, node_id in page]
        return PulledBatch(nodes, page[-1][0] if page else after, more=len(rows) > limit)

    def hashes(self) -> list[str]:
        return [h for (h,) in self.conn.execute("SELECT hash FROM envelopes ORDER BY seq")]

    def received(self) -> Counter[str]:
        return Counter(h for (h,) in self.conn.execute("SELECT hash FROM received"))

    def max_seq(self) -> int:
        return int(self.conn.execute("SELECT coalesce(max(seq), 0) FROM envelopes").fetchone()[0])


def child_main(argv: list[str]) -> None:
    """A client process: one sync round against a FileServer; pauses (for the parent's kill -9)
    right after the server acknowledged push batch N, or halfway through storing pull page N."""
    mode, db, server_path, size, pause_at = argv[0], Path(argv[1]), Path(argv[2]), *argv[3:]
    size_n, pause = int(size), int(pause_at)
    server = FileServer(server_path)
    calls = {"push": 0, "store": 0}

    def push(vault: str, nodes: Sequence[Node]) -> list[str]:
        ids = server.push(vault, nodes)
        calls["push"] += 1
        if mode == "push" and calls["push"] == pause:
            print("acked", flush=True)  # the server holds the batch; mark_pushed has not run
            sys.stdin.readline()
        return ids

    original = syncstate_module.insert_rows  # type: ignore[attr-defined]

    def insert_nodes(raw: sqlite3.Connection, rows: Any) -> int:
        calls["store"] += 1
        rows = list(rows)
        if mode != "pull" or calls["store"] != pause:
            return original(raw, rows)
        original(raw, rows[: len(rows) // 2])
        print("mid", flush=True)  # half the page inserted, transaction still open
        sys.stdin.readline()
        return original(raw, rows[len(rows) // 2 :])

    syncstate_module.insert_rows = insert_nodes  # type: ignore[attr-defined]
    with LocalProvider(db) as provider:
        runner = SyncRunner(
            SyncState(provider), VAULT, push, server.pull, batch_size=size_n, page_size=size_n
        )
        result = run_sync(runner)
    print(json.dumps({"result": None if result is None else result.result}), flush=True)


def run_child(mode: str, db: Path, server: Path, size: int, pause: int) -> subprocess.Popen[str]:
    code = "import sys; from tests.sync.test_syncstate import child_main; child_main(sys.argv[1:])"
    return subprocess.Popen(
        [sys.executable, "-c", code, mode, str(db), str(server), str(size), str(pause)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def read_line(proc: subprocess.Popen[str], timeout: float = 60.0) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "the child said nothing in time"
    return proc.stdout.readline().strip()


def kill_at_pause(proc: subprocess.Popen[str], expected: str) -> None:
    assert read_line(proc) == expected
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out = json.loads(read_line(proc))
    assert proc.wait(timeout=60) == 0
    return dict(out)


def local_hashes(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [h for (h,) in conn.execute("SELECT hash FROM nodes ORDER BY rowid")]


def remote_rows(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [h for (h,) in conn.execute("SELECT hash FROM e2e_remote")]


def test_kill_between_the_servers_ack_and_mark_pushed(tmp_path: Path) -> None:
    db, server_path = tmp_path / "tapes.sqlite", tmp_path / "server.sqlite"
    nodes = sessions(25, 12)  # 300 nodes, batches of 40: 8 batches
    with LocalProvider(db) as provider:
        provider.put_many(nodes)
    server = FileServer(server_path)

    kill_at_pause(run_child("push", db, server_path, 40, 3), "acked")
    # The server holds three batches; locally only two are recorded.
    assert len(server.hashes()) == 120
    assert len(remote_rows(db)) == 80
    with LocalProvider(db) as provider:
        assert SyncState(provider).pending_push_count(VAULT) == 220

    assert finish(run_child("push", db, server_path, 40, 0)) == {"result": "ok"}
    expected = [n.hash for n in nodes]
    assert server.hashes() == expected  # same order, each once: nothing lost or duplicated
    assert sorted(remote_rows(db)) == sorted(expected)
    assert local_hashes(db) == expected
    received = server.received()
    resent = sorted(h for h, times in received.items() if times > 1)
    assert resent == sorted(expected[80:120])  # only the unrecorded batch went twice
    assert max(received.values()) == 2
    with LocalProvider(db) as provider:
        assert SyncState(provider).pending_push_count(VAULT) == 0


def test_kill_in_the_middle_of_store_pulled(tmp_path: Path) -> None:
    db, server_path = tmp_path / "tapes.sqlite", tmp_path / "server.sqlite"
    nodes = sessions(20, 10)  # 200 nodes, pages of 30: 7 pages
    server = FileServer(server_path)
    server.push(VAULT, nodes)  # as another machine would have
    server.conn.execute("DELETE FROM received")

    kill_at_pause(run_child("pull", db, server_path, 30, 3), "mid")
    # Two pages stored with their cursor; nothing of the third.
    assert len(local_hashes(db)) == 60
    assert local_hashes(db) == [n.hash for n in nodes[:60]]
    assert len(remote_rows(db)) == 60
    with LocalProvider(db) as provider:
        assert SyncState(provider).cursor(VAULT) == 60

    assert finish(run_child("pull", db, server_path, 30, 0)) == {"result": "ok"}
    expected = [n.hash for n in nodes]
    assert local_hashes(db) == expected
    assert sorted(remote_rows(db)) == sorted(expected)
    assert len(set(local_hashes(db))) == len(expected)
    with LocalProvider(db) as provider:
        state = SyncState(provider)
        assert state.cursor(VAULT) == server.max_seq() == 200
        assert state.pending_push_count(VAULT) == 0  # pulled nodes are never pushed back
        assert provider.list() == nodes
    assert server.received() == Counter()  # the puller sent nothing back


def test_repeated_kills_during_a_push_converge(tmp_path: Path) -> None:
    db, server_path = tmp_path / "tapes.sqlite", tmp_path / "server.sqlite"
    nodes = sessions(10, 10)
    with LocalProvider(db) as provider:
        provider.put_many(nodes)
    server = FileServer(server_path)
    for pause in (1, 2, 1, 3):  # each run dies after its pause-th acknowledged batch
        kill_at_pause(run_child("push", db, server_path, 15, pause), "acked")
    assert finish(run_child("push", db, server_path, 15, 0)) == {"result": "ok"}
    assert server.hashes() == [n.hash for n in nodes]
    assert sorted(remote_rows(db)) == sorted(n.hash for n in nodes)


def _synchronous(conn: Any) -> int:
    return int(database.driver(conn).execute("PRAGMA synchronous").fetchone()[0])


def test_sync_bookkeeping_skips_the_fsync_and_the_recording_path_keeps_it(
    tmp_path: Path,
) -> None:
    """``write(durable=False)`` runs at synchronous NORMAL (1) in WAL mode; every other write,
    and the connection after it, at FULL (2)."""
    with LocalProvider(tmp_path / "tapes.sqlite") as store:
        with database.write(store.engine, durable=False) as conn:
            relaxed = _synchronous(conn)
        with database.write(store.engine) as conn:
            durable = _synchronous(conn)
        with store.engine.connect() as conn:
            after = _synchronous(conn)
    assert (relaxed, durable, after) == (1, 2, 2)


def test_a_pushed_batch_moves_the_cursor_only_when_it_follows_the_cursor_directly(
    provider: LocalProvider,
) -> None:
    """Our own nodes stored at seqs 11..15 right after cursor 10 need no pulling back; stored
    after a gap (someone else's nodes at 11..12), the cursor must stay to pull those."""
    state = SyncState(provider)
    provider.put_many(chain([f"mine {i}" for i in range(10)]))
    batch = state.unpushed(VAULT, limit=5)
    pushed = [(r, n.hash, f"nid-{i}") for i, (r, n) in enumerate(batch)]
    state.set_cursor(VAULT, 10)
    assert state.mark_pushed(VAULT, pushed, batch[-1][0], stored_seqs=(11, 15)) == 15
    assert state.cursor(VAULT) == 15
    rest = state.unpushed(VAULT, limit=5)
    later = [(r, n.hash, f"nid-later-{i}") for i, (r, n) in enumerate(rest)]
    assert state.mark_pushed(VAULT, later, rest[-1][0], stored_seqs=(18, 22)) is None
    assert state.cursor(VAULT) == 15
    assert state.push_rowid(VAULT) == rest[-1][0]


OLD_REMOTE_DDL = (
    "CREATE TABLE e2e_remote (hash TEXT NOT NULL PRIMARY KEY, vault TEXT NOT NULL, "
    "node_id TEXT NOT NULL) WITHOUT ROWID"
)


def test_a_store_keyed_by_hash_alone_migrates_in_place_keeping_every_row(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A store synced before records were per vault: its rows move to (vault, hash), once."""
    path = tmp_path / "tapes.sqlite"
    nodes = sessions(1, 3)
    with LocalProvider(path) as store:
        store.put_many(nodes)
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE IF EXISTS e2e_remote")
        db.execute(OLD_REMOTE_DDL)
        db.execute("CREATE TABLE IF NOT EXISTS e2e_state (scope TEXT NOT NULL, key TEXT NOT NULL, "
                   "value TEXT NOT NULL, PRIMARY KEY (scope, key)) WITHOUT ROWID")  # fmt: skip
        db.executemany(
            "INSERT INTO e2e_remote (hash, vault, node_id) VALUES (?, ?, ?)",
            [(n.hash, VAULT, f"id{i}") for i, n in enumerate(nodes)],
        )
    with caplog.at_level(logging.WARNING, logger="tapes.sync"), LocalProvider(path) as store:
        state = SyncState(store)
        assert "migrated the sync bookkeeping" in caplog.text
        assert state.pending_push_count(VAULT) == 0  # the personal vault holds them
        assert state.pending_push_count(OTHER) == 3  # another vault does not
        assert state.remote_count(VAULT) == 3
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tapes.sync"), LocalProvider(path) as store:
        SyncState(store)
        assert "migrated" not in caplog.text  # once
    with sqlite3.connect(path) as db:
        sql = db.execute("SELECT sql FROM sqlite_master WHERE name = 'e2e_remote'").fetchone()[0]
        assert "PRIMARY KEY (vault, hash)" in sql
        assert db.execute("SELECT count(*) FROM e2e_remote").fetchone()[0] == 3
