"""The local provider against a database built exactly as Go tapes builds one.

The database is made with raw ``sqlite3``: the DDL Go tapes leaves in ``sqlite_master``
(``tests/data/go_schema.sql``, copied verbatim from vectors/tapes-sqlite-schema.md), rows encoded
as Go's ent driver writes them (``bucket``/``content`` BLOBs of the vector cases' stored JSON,
'' for empty type/role/model/provider/stop_reason, NULL agent_name/project when empty, NULL
tokens, Go's time layout), journal mode left at ``delete``, plus a ``facets`` row and a stand-in
for sqlite-vec's ``vec_documents`` table. Then the provider opens it, reads it, writes to it, and
raw ``sqlite3`` checks that what it left is still what Go expects.
"""

from __future__ import annotations

import io
import json
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tapes_e2e import _gojson
from tapes_e2e.errors import MissingParentError, NotATapesDatabaseError
from tapes_e2e.node import Bucket, ContentBlock, Node, Usage, bucket_from_json, go_view
from tapes_e2e.providers.local import LocalProvider
from tapes_e2e.transfer import export_nodes, import_nodes

REPO = Path(__file__).resolve().parent.parent
GO_SCHEMA = (Path(__file__).parent / "data" / "go_schema.sql").read_text().splitlines()
CASES: list[dict[str, Any]] = json.loads(
    (REPO / "vectors" / "tapes-merkle-v1.json").read_text(encoding="utf-8")
)["cases"]
BY_NAME = {case["name"]: case for case in CASES}
CHAIN = ["chain_root", "chain_child_1", "chain_child_2", "chain_child_3"]
# Its parent "not-a-hash" is no stored row, so Go's foreign key refuses it (vectors README).
UNSTORABLE = "parent_arbitrary_string"
# Go's time layout as go-sqlite3 binds time.Now(): trailing fractional zeros dropped.
GO_TIME_RE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{0,8}[1-9])?[+-]\d\d:\d\d")
GO_TIMES = [
    "2026-11-24 23:37:56.726195728+00:00",
    "2026-11-24 23:37:57.1+00:00",
    "2026-11-24 23:37:58+01:00",
    "2026-11-24 23:37:59.00012-05:00",
]
VEC_DOCUMENTS_DDL = (
    "CREATE TABLE IF NOT EXISTS vec_documents (rowid INTEGER PRIMARY KEY AUTOINCREMENT, "
    "doc_id TEXT NOT NULL UNIQUE, hash TEXT NOT NULL DEFAULT '')"
)
NODE_COLUMNS = [
    "hash",
    "bucket",
    "type",
    "role",
    "content",
    "model",
    "provider",
    "agent_name",
    "stop_reason",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "total_duration_ns",
    "prompt_duration_ns",
    "project",
    "created_at",
    "parent_hash",
]
TOKEN_COLUMNS = NODE_COLUMNS[9:16]
GO_INSERT = (
    f"INSERT INTO nodes ({', '.join(NODE_COLUMNS)}) VALUES ({', '.join('?' * len(NODE_COLUMNS))})"
)


def case_bucket(case: dict[str, Any]) -> Bucket:
    """The case's logical bucket, decoded as Go's encoding/json decodes a request body."""
    return bucket_from_json(_gojson.decode(json.dumps(case["node"]["bucket"])))


def stored_form(bucket: Bucket) -> bytes:
    return _gojson.stored_bytes(go_view(bucket, "stored"))


def case_node(case: dict[str, Any]) -> Node:
    return Node.new(case_bucket(case), case["node"]["parent_hash"] or None)


def go_row(case: dict[str, Any], created_at: str, *, as_text: bool = False) -> tuple[Any, ...]:
    """The row Go's ent driver writes for a vector case."""
    bucket = case["node"]["bucket"]
    blob = case["stored_bucket_json"].encode("utf-8")
    content = case["stored_content_json"].encode("utf-8")
    return (
        case["hash"],
        blob.decode("utf-8") if as_text else blob,
        bucket.get("type", ""),
        bucket.get("role", ""),
        content.decode("utf-8") if as_text else content,
        bucket.get("model", ""),
        bucket.get("provider", ""),
        bucket.get("agent_name") or None,
        "",
        *([None] * len(TOKEN_COLUMNS)),
        None,
        created_at,
        case["node"]["parent_hash"] or None,
    )


def go_connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def create_go_schema(path: Path) -> None:
    conn = go_connect(path)
    with conn:
        conn.execute("BEGIN")
        for ddl in GO_SCHEMA:
            conn.execute(ddl)
        conn.execute("COMMIT")
    conn.close()


@dataclass
class GoDatabase:
    path: Path
    stored: list[str]  # case names stored, in insertion order (one per distinct hash)
    facets_row: tuple[Any, ...]
    vec_row: tuple[Any, ...]


def build_go_database(path: Path) -> GoDatabase:
    create_go_schema(path)
    conn = go_connect(path)
    stored: list[str] = []
    seen: set[str] = set()
    conn.execute("BEGIN")
    for i, case in enumerate(CASES):
        if case["name"] == UNSTORABLE or case["hash"] in seen:
            continue  # Go's Put: the first writer of a hash wins
        seen.add(case["hash"])
        stored.append(case["name"])
        conn.execute(GO_INSERT, go_row(case, GO_TIMES[i % len(GO_TIMES)]))
    facets_row = (
        "facet-1",
        BY_NAME["chain_child_3"]["hash"],
        b'{"goal":"arithmetic","outcome":"answered"}',
        "2026-11-24 23:40:00.5+00:00",
    )
    conn.execute(
        "INSERT INTO facets (id, session_id, facets, created_at) VALUES (?,?,?,?)", facets_row
    )
    conn.execute(VEC_DOCUMENTS_DDL)
    vec_row = (BY_NAME["chain_root"]["hash"], BY_NAME["chain_root"]["hash"])
    conn.execute("INSERT INTO vec_documents (doc_id, hash) VALUES (?, ?)", vec_row)
    conn.execute("COMMIT")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()
    return GoDatabase(path, stored, facets_row, vec_row)


@pytest.fixture
def go_db(tmp_path: Path) -> GoDatabase:
    return build_go_database(tmp_path / "tapes.sqlite")


@pytest.fixture
def go_store(go_db: GoDatabase) -> Iterator[LocalProvider]:
    with LocalProvider(go_db.path, create=False) as provider:
        yield provider


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def schema_of(path: Path) -> list[tuple[str, str, str, str | None]]:
    conn = raw(path)
    try:
        return conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
        ).fetchall()
    finally:
        conn.close()


def test_fixture_schema_is_gos_ddl() -> None:
    # The fixture is the verbatim DDL of the Go schema document: 2 tables and 8 indexes.
    assert len(GO_SCHEMA) == 10
    assert GO_SCHEMA[2].startswith("CREATE TABLE `nodes` (`hash` text NOT NULL, `bucket` json NULL")
    assert sum(line.startswith("CREATE TABLE") for line in GO_SCHEMA) == 2


# --- reading what Go wrote --------------------------------------------------------------------


def test_reads_every_go_row_with_its_stored_hash(
    go_db: GoDatabase, go_store: LocalProvider
) -> None:
    assert len(go_db.stored) == 32  # 38 cases, 5 share a hash with an earlier one, 1 unstorable
    for name in go_db.stored:
        case = BY_NAME[name]
        node = go_store.get(case["hash"])
        assert node.hash == case["hash"], name
        assert node.verify(), name
        assert node.tapes_hash() == case["hash"], name
        assert node.parent_hash == (case["node"]["parent_hash"] or None), name
        assert node.stop_reason == ""
        assert node.usage is None
        assert node.project == ""
        assert GO_TIME_RE.fullmatch(node.created_at), name
    assert sorted(n.hash for n in go_store.list()) == sorted(
        BY_NAME[n]["hash"] for n in go_db.stored
    )
    assert go_store.counts() == (32, 29, 29)  # the chain is one session of 4 nodes
    assert not [problem for _, problem in go_store.audit() if problem is not None]


def test_bucket_read_back_is_the_cases_bucket(go_store: LocalProvider, go_db: GoDatabase) -> None:
    for name in go_db.stored:
        case = BY_NAME[name]
        bucket = go_store.get(case["hash"]).bucket
        # Read back and written again in Go's stored form: Go's very bytes.
        assert stored_form(bucket) == case["stored_bucket_json"].encode("utf-8"), name
        if name != "tool_input_empty_map":  # Go's stored JSON drops an empty map (nil on read)
            assert bucket == case_bucket(case), name
    assert go_store.get(BY_NAME["tool_input_empty_map"]["hash"]).bucket.content == (
        ContentBlock(type="tool_use", tool_use_id="call_ls", tool_name="list_files"),
    )
    # content_nil shares its hash with content_empty_list, which Go stored first: [] is kept.
    assert go_store.get(BY_NAME["content_nil"]["hash"]).bucket.content == ()


def test_nil_content_stored_by_go_reads_as_nil(tmp_path: Path) -> None:
    path = tmp_path / "nil.sqlite"
    create_go_schema(path)
    conn = go_connect(path)
    conn.execute(GO_INSERT, go_row(BY_NAME["content_nil"], GO_TIMES[0]))
    conn.close()
    with LocalProvider(path, create=False) as store:
        node = store.get(BY_NAME["content_nil"]["hash"])
    assert node.bucket.content is None
    assert node.verify()
    assert stored_form(node.bucket) == BY_NAME["content_nil"]["stored_bucket_json"].encode()


def test_ancestry_of_the_go_chain(go_store: LocalProvider) -> None:
    hashes = [BY_NAME[name]["hash"] for name in CHAIN]
    path = go_store.ancestry(hashes[-1])
    assert [n.hash for n in path] == hashes[::-1]
    assert [n.bucket.content[0].text for n in path if n.bucket.content] == [
        "4 * 3 = 12.",
        "And times 3?",
        "2+2 = 4.",
        "What is 2+2?",
    ]
    assert go_store.depth(hashes[-1]) == 3
    assert go_store.depth(hashes[0]) == 0
    assert hashes[-1] in {n.hash for n in go_store.leaves()}
    assert hashes[0] in {n.hash for n in go_store.roots()}
    assert hashes[1] not in {n.hash for n in go_store.leaves() + go_store.roots()}


# --- writing into Go's database ---------------------------------------------------------------


def new_nodes() -> list[Node]:
    """Nodes we add: a turn continuing the Go chain, and a new session with usage and names."""
    tip = BY_NAME["chain_child_3"]["hash"]
    turn = Node.new(
        Bucket(
            type="message",
            role="user",
            content=(ContentBlock(type="text", text="And <divided> by 2 & more?"),),
            model="llama3.2",
            provider="ollama",
        ),
        tip,
    )
    root = Node.new(
        Bucket(type="message", role="user", content=(ContentBlock(type="text", text="hi"),)),
        created_at="2026-11-25 08:00:00.000000001+00:00",
    )
    reply = Node.new(
        Bucket(
            type="message",
            role="assistant",
            content=(
                ContentBlock(
                    type="tool_use", tool_use_id="t1", tool_name="ls", tool_input={"path": "/"}
                ),
            ),
            model="claude-sonnet-4-5-20250929",
            provider="anthropic",
            agent_name="claude",
        ),
        root,
        stop_reason="tool_use",
        usage=Usage(prompt_tokens=12, completion_tokens=0, total_tokens=12),
        project="tapes-e2e",
    )
    return [turn, root, reply]


def test_our_writes_leave_gos_schema_and_encodings(go_db: GoDatabase) -> None:
    before = schema_of(go_db.path)
    turn, root, reply = new_nodes()
    with LocalProvider(go_db.path, create=False) as store:
        assert store.put(turn) is True
        assert store.put_many([root, reply]) == 2
        assert store.put(turn) is False  # idempotent
        assert [n.hash for n in store.ancestry(turn.hash)][1:] == [
            BY_NAME[name]["hash"] for name in reversed(CHAIN)
        ]
        assert store.get(reply.hash) == reply
        assert store.get(reply.hash).usage == Usage(prompt_tokens=12, total_tokens=12)

    # (a) sqlite_master holds exactly what it held: Go's DDL, nothing added to nodes or facets.
    after = schema_of(go_db.path)
    assert after == before
    go_objects = [
        (t, n, sql)
        for t, n, tbl, sql in after
        if tbl in {"nodes", "facets"} and not n.startswith("sqlite_autoindex")
    ]
    assert sorted(str(sql) for _, _, sql in go_objects) == sorted(GO_SCHEMA)
    conn = raw(go_db.path)
    assert [r[1] for r in conn.execute("PRAGMA table_info(nodes)")] == NODE_COLUMNS

    # (b) our rows are encoded as Go encodes them.
    def row(node: Node) -> dict[str, Any]:
        cols = ", ".join(f"{c}, typeof({c})" for c in NODE_COLUMNS)
        values = conn.execute(f"SELECT {cols} FROM nodes WHERE hash = ?", (node.hash,)).fetchone()
        return {c: (values[2 * i], values[2 * i + 1]) for i, c in enumerate(NODE_COLUMNS)}

    r = row(turn)
    assert r["bucket"] == (
        (
            b'{"content":[{"text":"And \\u003cdivided\\u003e by 2 \\u0026 more?","type":"text"}],'
            b'"model":"llama3.2","provider":"ollama","role":"user","type":"message"}'
        ),
        "blob",
    )
    assert r["content"] == (
        b'[{"text":"And \\u003cdivided\\u003e by 2 \\u0026 more?","type":"text"}]',
        "blob",
    )
    assert r["parent_hash"] == (BY_NAME["chain_child_3"]["hash"], "text")
    assert r["stop_reason"] == ("", "text")
    assert r["agent_name"] == (None, "null")
    assert r["project"] == (None, "null")
    assert all(r[c] == (None, "null") for c in TOKEN_COLUMNS)
    assert r["created_at"][1] == "text"
    assert GO_TIME_RE.fullmatch(r["created_at"][0])

    r = row(root)
    assert r["bucket"] == (
        (
            b'{"content":[{"text":"hi","type":"text"}],"model":"","provider":"","role":"user",'
            b'"type":"message"}'
        ),
        "blob",
    )
    assert (r["model"], r["provider"]) == (("", "text"), ("", "text"))
    assert r["parent_hash"] == (None, "null")
    assert r["created_at"] == ("2026-11-25 08:00:00.000000001+00:00", "text")

    r = row(reply)
    assert r["bucket"] == (
        (
            b'{"agent_name":"claude","content":[{"tool_input":{"path":"/"},"tool_name":"ls",'
            b'"tool_use_id":"t1","type":"tool_use"}],"model":"claude-sonnet-4-5-20250929",'
            b'"provider":"anthropic","role":"assistant","type":"message"}'
        ),
        "blob",
    )
    assert r["agent_name"] == ("claude", "text")
    assert r["project"] == ("tapes-e2e", "text")
    assert r["stop_reason"] == ("tool_use", "text")
    assert r["prompt_tokens"] == (12, "integer")
    assert r["total_tokens"] == (12, "integer")
    assert r["completion_tokens"] == (None, "null")  # 0 is stored as NULL
    assert r["cache_read_input_tokens"] == (None, "null")
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()


def test_every_vector_case_is_stored_with_gos_bytes(tmp_path: Path) -> None:
    # (c) each case written through the provider into a fresh database gives Go's stored bytes.
    checked = 0
    for case in CASES:
        if case["name"] == UNSTORABLE:
            continue
        path = tmp_path / f"{case['name']}.sqlite"
        node = case_node(case)
        assert node.hash == case["hash"], case["name"]
        with LocalProvider(path) as store:
            if case["name"] in CHAIN:
                for name in CHAIN[: CHAIN.index(case["name"])]:
                    assert store.put(case_node(BY_NAME[name]))
            assert store.put(node) is True
        conn = raw(path)
        stored = conn.execute(
            "SELECT bucket, content, typeof(bucket), typeof(content), type, role, model, "
            "provider, agent_name FROM nodes WHERE hash = ?",
            (case["hash"],),
        ).fetchone()
        conn.close()
        bucket = case["node"]["bucket"]
        assert stored == (
            case["stored_bucket_json"].encode("utf-8"),
            case["stored_content_json"].encode("utf-8"),
            "blob",
            "blob",
            bucket.get("type", ""),
            bucket.get("role", ""),
            bucket.get("model", ""),
            bucket.get("provider", ""),
            bucket.get("agent_name") or None,
        ), case["name"]
        checked += 1
    assert checked == len(CASES) - 1


def test_child_of_an_absent_parent_is_refused(go_db: GoDatabase, go_store: LocalProvider) -> None:
    # (d) Go's foreign key: the parent must be stored first; nothing of the batch is written.
    orphan = case_node(BY_NAME[UNSTORABLE])
    assert orphan.hash == BY_NAME[UNSTORABLE]["hash"]
    with pytest.raises(MissingParentError):
        go_store.put(orphan)
    fresh_root = Node.new(Bucket(type="message", role="user"))
    with pytest.raises(MissingParentError):
        go_store.put_many([fresh_root, orphan])
    assert not go_store.has(orphan.hash)
    assert not go_store.has(fresh_root.hash)
    assert go_store.counts()[0] == len(go_db.stored)
    conn = raw(go_db.path)
    assert conn.execute("SELECT count(*) FROM nodes").fetchone() == (len(go_db.stored),)
    conn.close()


def test_facets_and_vector_tables_survive(go_db: GoDatabase) -> None:
    # (e) Go's facets row and sqlite-vec's document table are left alone.
    def snapshot() -> tuple[Any, ...]:
        conn = raw(go_db.path)
        try:
            return (
                conn.execute("SELECT id, session_id, facets, created_at FROM facets").fetchall(),
                conn.execute("SELECT rowid, doc_id, hash FROM vec_documents").fetchall(),
                conn.execute("SELECT name, seq FROM sqlite_sequence").fetchall(),
                conn.execute(
                    "SELECT type, name, sql FROM sqlite_master WHERE tbl_name IN "
                    "('vec_documents', 'sqlite_sequence', 'facets') ORDER BY name"
                ).fetchall(),
            )
        finally:
            conn.close()

    before = snapshot()
    assert before[0] == [go_db.facets_row]
    assert before[1] == [(1, *go_db.vec_row)]
    with LocalProvider(go_db.path, create=False) as store:
        store.put_many(new_nodes())
        store.list()
        store.sessions()
        assert list(store.iter_topological())
    assert snapshot() == before


def test_text_json_columns_and_other_time_formats_are_read(go_db: GoDatabase) -> None:
    # (f) Go reads bucket/content stored as TEXT and these created_at forms; so do we.
    formats: list[tuple[str, Any, str]] = [
        ("iso_t", "2026-02-16T10:00:00.123456+00:00", "2026-02-16T10:00:00.123456+00:00"),
        ("zulu", "2026-02-16T10:00:00Z", "2026-02-16T10:00:00Z"),
        ("sqlite_default", "2026-02-16 10:00:00", "2026-02-16 10:00:00"),
        ("unix_seconds", 1771236000, "1771236000"),
    ]
    nodes: dict[str, Node] = {}
    conn = go_connect(go_db.path)
    for name, stored_time, _ in formats:
        node = Node.new(
            Bucket(
                type="message",
                role="user",
                content=(ContentBlock(type="text", text=f"time format {name} <&>"),),
                model="m",
                provider="p",
            )
        )
        nodes[name] = node
        content = f'[{{"text":"time format {name} \\u003c\\u0026\\u003e","type":"text"}}]'
        case = {
            "hash": node.hash,
            "node": {
                "parent_hash": None,
                "bucket": {"type": "message", "role": "user", "model": "m", "provider": "p"},
            },
            "stored_bucket_json": (
                f'{{"content":{content},"model":"m","provider":"p","role":"user","type":"message"}}'
            ),
            "stored_content_json": content,
        }
        conn.execute(GO_INSERT, go_row(case, stored_time, as_text=True))
    # A Go row whose text bucket is the vector case's own stored JSON.
    conn.execute(
        "UPDATE nodes SET bucket = CAST(bucket AS TEXT), content = CAST(content AS TEXT) "
        "WHERE hash = ?",
        (BY_NAME["unicode_text"]["hash"],),
    )
    types = conn.execute(
        "SELECT DISTINCT typeof(bucket), typeof(content), typeof(created_at) FROM nodes "
        "WHERE hash IN (?, ?, ?, ?)",
        tuple(n.hash for n in nodes.values()),
    ).fetchall()
    assert sorted(types) == [("text", "text", "integer"), ("text", "text", "text")]
    assert conn.execute(
        "SELECT typeof(bucket), typeof(content) FROM nodes WHERE hash = ?",
        (BY_NAME["unicode_text"]["hash"],),
    ).fetchone() == ("text", "text")
    conn.close()

    with LocalProvider(go_db.path, create=False) as store:
        for name, _, expected in formats:
            got = store.get(nodes[name].hash)
            assert got == nodes[name]
            assert got.verify()
            assert got.created_at == expected
        unicode_node = store.get(BY_NAME["unicode_text"]["hash"])
        assert unicode_node.verify()
        assert unicode_node.bucket == case_bucket(BY_NAME["unicode_text"])
        listed = store.list()
        assert len(listed) == len(go_db.stored) + len(formats)
        assert all(n.verify() for n in listed)
        assert not [p for _, p in store.audit() if p is not None]


# --- other shapes of database -----------------------------------------------------------------

LOOSE_NODES_DDL = (
    "CREATE TABLE nodes (hash TEXT PRIMARY KEY, bucket JSON, type TEXT, role TEXT, content JSON, "
    "model TEXT, provider TEXT, agent_name TEXT, stop_reason TEXT, prompt_tokens INTEGER, "
    "completion_tokens INTEGER, total_tokens INTEGER, cache_creation_input_tokens INTEGER, "
    "cache_read_input_tokens INTEGER, total_duration_ns INTEGER, prompt_duration_ns INTEGER, "
    "project TEXT, created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP, "
    "parent_hash TEXT REFERENCES nodes (hash) ON DELETE SET NULL)"
)


def test_looser_ddl_opens_and_works(tmp_path: Path) -> None:
    path = tmp_path / "loose.sqlite"
    conn = go_connect(path)
    conn.execute(LOOSE_NODES_DDL)
    root = BY_NAME["chain_root"]
    conn.execute(GO_INSERT, go_row(root, GO_TIMES[0]))
    conn.close()

    with LocalProvider(path, create=False) as store:
        assert store.get(root["hash"]).verify()
        for name in CHAIN[1:]:
            assert store.put(case_node(BY_NAME[name])) is True
        assert [n.hash for n in store.ancestry(BY_NAME["chain_child_3"]["hash"])] == [
            BY_NAME[name]["hash"] for name in reversed(CHAIN)
        ]
        with pytest.raises(MissingParentError):
            store.put(case_node(BY_NAME[UNSTORABLE]))
        assert store.counts() == (4, 1, 1)

    conn = raw(path)
    # The nodes table is not rebuilt; Go's missing objects are added, as ent would add them.
    assert conn.execute("SELECT sql FROM sqlite_master WHERE name = 'nodes'").fetchone() == (
        LOOSE_NODES_DDL,
    )
    names = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    assert {"facets", "facet_session_id", "node_parent_hash", "node_project"} <= names
    assert conn.execute("SELECT count(*) FROM nodes").fetchone() == (4,)
    conn.close()


def _file_state(path: Path) -> dict[str, bytes]:
    """The bytes of ``path`` and any SQLite side files next to it."""
    return {
        p.name: p.read_bytes()
        for p in sorted(path.parent.iterdir())
        if p.name.startswith(path.name) and p.is_file()
    }


def test_nodes_table_missing_a_column_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "partial.sqlite"
    conn = go_connect(path)
    conn.execute(LOOSE_NODES_DDL.replace("project TEXT, ", ""))
    conn.close()
    before = _file_state(path)
    with pytest.raises(NotATapesDatabaseError, match="project"):
        LocalProvider(path, create=False)
    assert _file_state(path) == before


def test_nodes_table_missing_an_unindexed_column_is_refused_untouched(tmp_path: Path) -> None:
    # stop_reason has no Go index, so creating Go's missing indexes would succeed before the
    # column check: the file must still be left as it was.
    path = tmp_path / "partial.sqlite"
    conn = go_connect(path)
    conn.execute(LOOSE_NODES_DDL.replace("stop_reason TEXT, ", ""))
    conn.close()
    before = _file_state(path)
    with pytest.raises(NotATapesDatabaseError, match="stop_reason"):
        LocalProvider(path, create=False)
    assert _file_state(path) == before


@pytest.mark.parametrize(
    "content",
    [b"hello", b"not a database, just some text that is long enough\n" * 20, b"\x00" * 4096],
    ids=["short", "text", "zeros"],
)
def test_non_sqlite_file_is_refused_and_not_modified(tmp_path: Path, content: bytes) -> None:
    folder = tmp_path / "db"
    folder.mkdir()
    path = folder / "tapes.sqlite"
    path.write_bytes(content)
    with pytest.raises(NotATapesDatabaseError):
        LocalProvider(path)
    assert sorted(p.name for p in folder.iterdir()) == ["tapes.sqlite"]
    assert path.read_bytes() == content


def test_directory_is_refused_and_not_modified(tmp_path: Path) -> None:
    folder = tmp_path / "db"
    path = folder / "tapes.sqlite"
    path.mkdir(parents=True)
    (path / "inside.txt").write_bytes(b"keep me")
    with pytest.raises(NotATapesDatabaseError):
        LocalProvider(path)
    assert path.is_dir()
    assert sorted(p.name for p in folder.iterdir()) == ["tapes.sqlite"]
    assert [(p.name, p.read_bytes()) for p in path.iterdir()] == [("inside.txt", b"keep me")]


# --- Go's node JSON ---------------------------------------------------------------------------


def test_node_json_with_usage_round_trips(tmp_path: Path) -> None:
    # Go's node JSON carries usage as integers ({"prompt_tokens": 12}); export_nodes writes it so.
    _, root, reply = new_nodes()
    out = io.BytesIO()
    export_nodes([root, reply], out)
    assert b'"usage":{"prompt_tokens":12,"total_tokens":12}' in out.getvalue()
    with LocalProvider(tmp_path / "import.sqlite") as store:
        result = import_nodes(store, out.getvalue().splitlines())
        assert result.new == 2
        assert store.get(reply.hash).usage == Usage(prompt_tokens=12, total_tokens=12)
