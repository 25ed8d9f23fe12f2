"""The local provider: the Provider contract over Go tapes' SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import event

from tapes_e2e.errors import (
    CorruptStoreError,
    InvalidNodeError,
    MissingParentError,
    NodeNotFoundError,
    NotATapesDatabaseError,
)
from tapes_e2e.node import Node
from tapes_e2e.providers.base import Provider
from tapes_e2e.providers.local import LocalProvider
from tests.conftest import chain, text_bucket


def test_local_provider_satisfies_the_protocol(store: LocalProvider) -> None:
    assert isinstance(store, Provider)


def test_put_is_idempotent_and_get_round_trips(store: LocalProvider) -> None:
    nodes = chain(["hi", "hello", "how are you?"])
    assert [store.put(n) for n in nodes] == [True, True, True]
    assert [store.put(n) for n in nodes] == [False, False, False]
    for node in nodes:
        got = store.get(node.hash)
        assert got == node
        assert got.created_at == node.created_at
    assert store.has(nodes[0].hash)
    assert not store.has("0" * 64)


def test_first_writer_of_a_hash_wins(store: LocalProvider) -> None:
    node = chain(["same"])[0]
    store.put(node)
    later = Node.new(node.bucket, stop_reason="different", project="other")
    assert later.hash == node.hash
    assert store.put(later) is False
    assert store.get(node.hash).project == ""


def test_put_refuses_a_node_whose_hash_does_not_match(store: LocalProvider) -> None:
    node = chain(["x"])[0]
    forged = Node(hash="a" * 64, parent_hash=None, bucket=node.bucket)
    with pytest.raises(InvalidNodeError, match="does not match its content"):
        store.put(forged)
    assert store.counts() == (0, 0, 0)


def test_put_refuses_a_missing_parent_and_writes_nothing(store: LocalProvider) -> None:
    orphan = Node.new(text_bucket("user", "orphan"), "b" * 64)
    with pytest.raises(MissingParentError, match="b" * 64):
        store.put(orphan)
    assert not store.has(orphan.hash)


def test_put_many_is_all_or_nothing(store: LocalProvider) -> None:
    good = chain(["a", "b"])
    orphan = Node.new(text_bucket("user", "orphan"), "c" * 64)
    with pytest.raises(MissingParentError):
        store.put_many([*good, orphan])
    assert store.counts()[0] == 0
    assert store.put_many(good) == 2


def test_ancestry_leaves_roots_depth_and_branches(store: LocalProvider) -> None:
    trunk = chain(["q", "a1", "q2", "a2"])
    branch = chain(["regenerated a2"], parent=trunk[2])
    store.put_many([*trunk, *branch])
    assert [n.hash for n in store.ancestry(trunk[-1].hash)] == [n.hash for n in reversed(trunk)]
    assert [n.hash for n in store.ancestry(branch[0].hash)] == [
        branch[0].hash,
        trunk[2].hash,
        trunk[1].hash,
        trunk[0].hash,
    ]
    assert {n.hash for n in store.leaves()} == {trunk[-1].hash, branch[0].hash}
    assert [n.hash for n in store.roots()] == [trunk[0].hash]
    assert store.depth(trunk[0].hash) == 0
    assert store.depth(trunk[-1].hash) == 3
    assert store.counts() == (5, 2, 1)
    sessions = {s.session_id: s for s in store.sessions()}
    assert sessions[branch[0].hash].node_count == 4
    assert sessions[trunk[-1].hash].root_hash == trunk[0].hash
    assert sessions[trunk[-1].hash].total_tokens == sum(
        n.usage.total_tokens for n in trunk if n.usage
    )
    assert [n.hash for n in store.list()] == [n.hash for n in [*trunk, *branch]]


def test_unknown_hashes_raise_not_found(store: LocalProvider) -> None:
    for call in (store.get, store.ancestry, store.depth):
        with pytest.raises(NodeNotFoundError):
            call("d" * 64)


def test_ancestry_of_a_10000_deep_session_is_one_query(store: LocalProvider) -> None:
    nodes = chain([f"turn {i}" for i in range(10_000)])
    store.put_many(nodes)
    statements: list[str] = []

    def trace(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        dbapi_connection.set_trace_callback(statements.append)

    # Every statement SQLite runs on a fresh read connection is traced, whatever issued it.
    store.engine.pool.dispose()
    event.listen(store.engine, "connect", trace)
    path = store.ancestry(nodes[-1].hash)
    event.remove(store.engine, "connect", trace)
    assert len(path) == 10_000
    assert path[0].hash == nodes[-1].hash
    assert path[-1].hash == nodes[0].hash
    queries = [s for s in statements if not s.startswith(("BEGIN", "COMMIT", "ROLLBACK", "PRAGMA"))]
    assert len(queries) == 1
    assert "RECURSIVE" in queries[0]
    assert store.depth(nodes[-1].hash) == 9_999


def _loop(store: LocalProvider) -> tuple[str, str]:
    a, b = chain(["a", "b"])
    store.put_many([a, b])
    with sqlite3.connect(store.path) as raw:
        raw.execute("PRAGMA foreign_keys = OFF")
        raw.execute("UPDATE nodes SET parent_hash = ? WHERE hash = ?", (b.hash, a.hash))
    return a.hash, b.hash


def test_a_parent_loop_in_a_corrupt_database_is_reported_not_followed(
    store: LocalProvider,
) -> None:
    _a, b = _loop(store)
    with pytest.raises(CorruptStoreError, match="loop"):
        store.ancestry(b)


def test_audit_reports_every_damaged_row(store: LocalProvider) -> None:
    nodes = chain(["one", "two", "three"])
    store.put_many(nodes)
    with sqlite3.connect(store.path) as raw:
        raw.execute(
            "UPDATE nodes SET bucket = CAST(REPLACE(CAST(bucket AS TEXT), 'two', 'TWO') AS BLOB) "
            "WHERE hash = ?",
            (nodes[1].hash,),
        )
        raw.execute("UPDATE nodes SET bucket = X'7B' WHERE hash = ?", (nodes[2].hash,))
    problems = dict(p for _, p in store.audit() if p)
    assert set(problems) == {nodes[1].hash, nodes[2].hash}
    assert "does not match" in problems[nodes[1].hash]
    assert "unreadable" in problems[nodes[2].hash]


def test_resolve_prefix(store: LocalProvider) -> None:
    nodes = chain(["p", "q", "r", "s", "t", "u"])
    store.put_many(nodes)
    assert store.resolve_prefix(nodes[0].hash[:10]) == nodes[0].hash
    assert store.resolve_prefix(nodes[0].hash.upper()) == nodes[0].hash
    with pytest.raises(InvalidNodeError, match="not a session ID"):
        store.resolve_prefix("xyz!")
    with pytest.raises(NodeNotFoundError):
        store.resolve_prefix("0000000000")


def test_wal_and_connection_settings(store: LocalProvider) -> None:
    assert store.journal_mode() == "wal"
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert int(conn.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0) >= 5000
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL: durable commits


def test_open_without_create_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NotATapesDatabaseError, match="does not exist"):
        LocalProvider(tmp_path / "absent.sqlite", create=False)
    assert not (tmp_path / "absent.sqlite").exists()


def test_stored_buckets_decode_lazily_and_compare_equal(store: LocalProvider) -> None:
    from tapes_e2e.store.rows import StoredBucket

    nodes = chain(["one", "two"])
    store.put_many(nodes)
    path = store.ancestry(nodes[-1].hash)
    assert isinstance(path[0].bucket, StoredBucket)
    assert path[0].bucket == nodes[-1].bucket
    assert nodes[-1].bucket == path[0].bucket
    assert path[0] == nodes[-1]
    assert path[1].bucket.text() == "one"


def test_a_damaged_bucket_is_reported_when_first_read(store: LocalProvider) -> None:
    nodes = chain(["fine", "damaged"])
    store.put_many(nodes)
    with sqlite3.connect(store.path) as raw:
        raw.execute("UPDATE nodes SET bucket = X'7B7B' WHERE hash = ?", (nodes[1].hash,))
    node = store.get(nodes[1].hash)
    with pytest.raises(CorruptStoreError, match=f"node {nodes[1].hash}: stored bucket"):
        _ = node.bucket.role
