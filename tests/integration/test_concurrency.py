"""Several OS processes writing one tapes database at once, through ``LocalProvider``.

Each worker is a real ``python`` process. They start together on a barrier (each prints ``ready``
and waits for ``go`` on stdin), then open the same file, which none of them created, and put their
own nodes one transaction at a time, interleaved with nodes every worker puts (the idempotent
path). Nothing may fail with "database is locked", every node must be stored exactly once, and
each shared node must be reported new by exactly one worker.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from tapes_e2e.node import Bucket, ContentBlock, Node, Usage
from tapes_e2e.providers.local import LocalProvider

REPO = Path(__file__).resolve().parents[2]
WORKERS = 3
SESSIONS_PER_WORKER = 30
SESSION_LEN = 10  # 300 distinct nodes per worker
SHARED_LEN = 30  # one session every worker puts
SHARED_EVERY = SESSIONS_PER_WORKER * SESSION_LEN // SHARED_LEN

WORKER_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from tapes_e2e.providers.local import LocalProvider
    from tests.integration.test_concurrency import shared_nodes, worker_nodes

    worker, db = int(sys.argv[1]), Path(sys.argv[2])
    own, shared = worker_nodes(worker), shared_nodes()
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        sys.exit("no go")
    new = {}
    started = time.time()
    with LocalProvider(db) as store:
        shared_next = 0
        for index, node in enumerate(own):
            new[node.hash] = store.put(node)
            if index % %(every)d == 0 and shared_next < len(shared):
                node = shared[shared_next]
                new[node.hash] = store.put(node)
                shared_next += 1
        while shared_next < len(shared):
            new[shared[shared_next].hash] = store.put(shared[shared_next])
            shared_next += 1
        journal = store.journal_mode()
    span = [started, time.time()]
    print(json.dumps({"new": new, "journal_mode": journal, "span": span}), flush=True)
    """
).replace("%(every)d", str(SHARED_EVERY))

HOLDER_SCRIPT = textwrap.dedent(
    """
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        "INSERT INTO facets (id, session_id, facets) VALUES ('held', 'held-session', NULL)"
    )
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    conn.execute("COMMIT")
    print("committed", flush=True)
    """
)


def _text_node(role: str, text: str, parent: Node | None, index: int) -> Node:
    assistant = role == "assistant"
    return Node.new(
        Bucket(
            type="message",
            role=role,
            content=(ContentBlock(type="text", text=text),),
            model="claude-sonnet-4-5",
            provider="anthropic",
        ),
        parent,
        usage=Usage(prompt_tokens=10 + index, completion_tokens=5) if assistant else None,
        stop_reason="end_turn" if assistant else "",
        project="concurrency",
    )


def worker_nodes(worker: int) -> list[Node]:
    """The distinct nodes of one worker: sessions of SESSION_LEN nodes, parents first."""
    nodes: list[Node] = []
    for session in range(SESSIONS_PER_WORKER):
        parent: Node | None = None
        for turn in range(SESSION_LEN):
            role = "user" if turn % 2 == 0 else "assistant"
            text = f"worker {worker} session {session} turn {turn} " + "x" * 500
            parent = _text_node(role, text, parent, turn)
            nodes.append(parent)
    return nodes


def shared_nodes() -> list[Node]:
    """One session that every worker puts, in the same order."""
    nodes: list[Node] = []
    parent: Node | None = None
    for turn in range(SHARED_LEN):
        role = "user" if turn % 2 == 0 else "assistant"
        parent = _text_node(role, f"shared turn {turn}", parent, turn)
        nodes.append(parent)
    return nodes


def _spawn(script: Path, *args: str) -> subprocess.Popen[str]:
    paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )


def _run_workers(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    """Start WORKERS processes on one barrier; return the database and each worker's report."""
    db = tmp_path / "shared.sqlite"
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT)
    procs = [_spawn(script, str(worker), str(db)) for worker in range(WORKERS)]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        assert not db.exists()  # nobody opened it before the start
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outcomes = [proc.communicate(timeout=180) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    results: list[dict[str, Any]] = []
    for proc, (out, err) in zip(procs, outcomes, strict=True):
        assert "locked" not in err
        assert proc.returncode == 0, err
        assert err == ""
        results.append(json.loads(out))
    return db, results


def test_processes_put_into_one_database_at_once(tmp_path: Path) -> None:
    db, results = _run_workers(tmp_path)
    shared = shared_nodes()
    own = [worker_nodes(worker) for worker in range(WORKERS)]
    for worker, result in enumerate(results):
        assert len(result["new"]) == len(own[worker]) + len(shared)
        # Each worker's own nodes were new when it put them.
        assert all(result["new"][node.hash] is True for node in own[worker])
    # Every shared node was new for exactly one worker: the first writer wins, once.
    for node in shared:
        assert sum(result["new"][node.hash] for result in results) == 1, node.hash
    assert {result["journal_mode"] for result in results} == {"wal"}
    # The workers really wrote at the same time: their write spans overlap.
    assert max(r["span"][0] for r in results) < min(r["span"][1] for r in results)

    expected = {node.hash for nodes in own for node in nodes} | {node.hash for node in shared}
    assert len(expected) == WORKERS * SESSIONS_PER_WORKER * SESSION_LEN + SHARED_LEN
    conn = sqlite3.connect(db)
    try:
        stored = conn.execute("SELECT hash, count(*) FROM nodes GROUP BY hash").fetchall()
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()
    assert {h for h, _ in stored} == expected
    assert all(n == 1 for _, n in stored)

    sessions = WORKERS * SESSIONS_PER_WORKER + 1
    with LocalProvider(db, create=False) as store:
        assert store.counts() == (len(expected), sessions, sessions)
        audit = list(store.audit())
        assert [problem for _, problem in audit if problem is not None] == []
        assert audit[-1][0] == len(expected)  # every row was checked
        for nodes in own:
            assert store.get(nodes[-1].hash) == nodes[-1]
            assert store.depth(nodes[-1].hash) == SESSION_LEN - 1
        assert store.depth(shared[-1].hash) == SHARED_LEN - 1
        assert [n.hash for n in store.ancestry(shared[-1].hash)] == [
            n.hash for n in reversed(shared)
        ]


def test_put_waits_for_another_processs_write_transaction(tmp_path: Path) -> None:
    db = tmp_path / "held.sqlite"
    root = _text_node("user", "before", None, 0)
    child = _text_node("assistant", "while another process writes", root, 1)
    with LocalProvider(db) as store:
        assert store.put(root) is True
        assert store.journal_mode() == "wal"

        script = tmp_path / "holder.py"
        script.write_text(HOLDER_SCRIPT)
        hold = 1.0
        holder = _spawn(script, str(db), str(hold))
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "locked"
            started = time.monotonic()
            assert store.put(child) is True
            waited = time.monotonic() - started
            out, err = holder.communicate(timeout=60)
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.wait()
        assert holder.returncode == 0, err
        assert err == ""
        assert out.strip() == "committed"
        # The put could only commit after the holder did: it waited, then succeeded.
        assert waited >= hold * 0.5, waited
        assert waited < hold + 10
        assert store.get(child.hash) == child
        assert [n.hash for n in store.ancestry(child.hash)] == [child.hash, root.hash]
        assert store.counts() == (2, 1, 1)
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT id, session_id FROM facets").fetchall() == [
            ("held", "held-session")
        ]
    finally:
        conn.close()
