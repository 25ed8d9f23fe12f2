"""The README's demo: the whole story on the embedded defaults, in temporary directories.

1. Start a local ``tapes-server`` (SQLite) on a free loopback port.
2. Alice logs in (registering) from her laptop, records two sessions (one with a regenerated
   answer, so a branch), and syncs: the nodes leave sealed.
3. Bob registers too: the server has two tenants.
4. Alice's second machine (her identity restored from its key file) syncs and reads the sessions.
5. Alice makes a team and invites Bob (the code goes out of band); Bob joins, Alice approves his
   fingerprint, shares one session with the team, and Bob syncs the team vault and reads it.
6. Show what the server stored, per vault: opaque envelopes and coarse metadata, never a prompt.
7. Stop the server.

Run with ``python -m tapes_e2e.demo``. The user's own ~/.tapes is never touched.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

import httpx

from tapes_e2e.cli import main as tapes
from tapes_e2e.node import Bucket, ContentBlock, Node, Usage
from tapes_e2e.providers.local import LocalProvider

MODEL = "claude-sonnet-4-5-20250929"
# Words of a prompt that must never appear on the server (not a secret of the program).
SECRET_WORDS = "database is locked"  # noqa: S105
PASSPHRASE = "demo passphrase, not for real use"  # noqa: S105 - throwaway demo identities


def _turn(role: str, *blocks: ContentBlock) -> Bucket:
    return Bucket(
        type="message", role=role, content=blocks, model=MODEL, provider="anthropic",
        agent_name="claude",
    )  # fmt: skip


def _text(text: str) -> ContentBlock:
    return ContentBlock(type="text", text=text)


def record(store: LocalProvider) -> list[Node]:
    """Record two sessions the way the tapes proxy would; the first one branches."""
    ask = Node.new(_turn("user", _text(f"Why does my test fail with '{SECRET_WORDS}'?")))
    look = Node.new(
        _turn(
            "assistant",
            _text("Let me look at how the connection is opened."),
            ContentBlock(
                type="tool_use", tool_use_id="toolu_01", tool_name="read_file",
                tool_input={"path": "app/db.py", "limit": 80},
            ),
        ),
        ask,
        usage=Usage(prompt_tokens=1200, completion_tokens=180, total_tokens=1380),
        stop_reason="tool_use",
        project="demo-app",
    )  # fmt: skip
    result = Node.new(
        _turn(
            "user",
            ContentBlock(
                type="tool_result", tool_result_id="toolu_01",
                tool_output="engine = create_engine('sqlite:///app.db')",
            ),
        ),
        look,
        project="demo-app",
    )  # fmt: skip
    answer = Node.new(
        _turn("assistant", _text("Turn on WAL and take writes with BEGIN IMMEDIATE.")),
        result,
        usage=Usage(prompt_tokens=1500, completion_tokens=90, total_tokens=1590),
        stop_reason="end_turn",
        project="demo-app",
    )
    regenerated = Node.new(
        _turn("assistant", _text("Set busy_timeout so writers wait for each other.")),
        result,
        usage=Usage(prompt_tokens=1500, completion_tokens=70, total_tokens=1570),
        stop_reason="end_turn",
        project="demo-app",
    )
    other = Node.new(_turn("user", _text("Summarize RFC 8785 in one sentence.")))
    reply = Node.new(
        _turn("assistant", _text("It defines one canonical byte form for any JSON value.")),
        other,
        usage=Usage(prompt_tokens=40, completion_tokens=20, total_tokens=60),
        stop_reason="end_turn",
    )
    nodes = [ask, look, result, answer, regenerated, other, reply]
    store.put_many(nodes)
    return nodes


def _say(title: str) -> None:
    print(f"\n=== {title}", flush=True)  # noqa: T201 - the demo talks to its user


def _run(home: Path, *args: str) -> None:
    print("$ tapes " + " ".join(args), flush=True)  # noqa: T201
    _call(home, *args)


def _call(home: Path, *args: str) -> None:
    try:
        tapes(["--config-dir", str(home), *args])
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            raise


def _run_and_read(home: Path, *args: str) -> str:
    """``_run``, and what the command printed on stdout (shown as well, after the command line
    and before anything it says on stderr would be out of order, so notes go last)."""
    print("$ tapes " + " ".join(args), flush=True)  # noqa: T201
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        _call(home, *args)
    text = buffer.getvalue()
    print(text, end="", flush=True)  # noqa: T201
    return text


def _share_with_bob(laptop: Path, bob: Path, leaf: str) -> None:
    """Alice makes a team, invites Bob, approves him and shares one session; Bob reads it."""
    _say("alice makes a team and invites bob; the code goes to him out of band")
    created = _run_and_read(laptop, "team", "create", "Platform")
    team = re.search(r"\((t_[A-Za-z0-9_-]+)\)", created)
    if team is None:
        raise SystemExit("demo failed: no team id in the output of `tapes team create`")
    invited = _run_and_read(laptop, "team", "invite", team.group(1))
    code = next((w for w in invited.split() if w.startswith("TAPES-")), None)
    if code is None:
        raise SystemExit("demo failed: no invite code in the output of `tapes team invite`")
    _say("bob joins with the code; alice approves the fingerprint she was told")
    _run(bob, "team", "join", code)
    _run(laptop, "team", "approve", team.group(1), "--yes")
    _run(bob, "team", "join", code)  # checks the chain against the inviter named in the code
    _say("alice shares one session with the team; bob syncs the team vault and reads it")
    _run(laptop, "session", "share", leaf[:12], "--team", team.group(1), "--title", "a fix")
    _run(bob, "storage", "configure", "--team", team.group(1))
    _run(bob, "session", "shared")
    _run(bob, "storage", "sync")
    _run(bob, "session", "show", leaf[:12])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def local_server(root: Path) -> Iterator[tuple[str, Path]]:
    """A ``tapes-server serve`` on SQLite under ``root``, stopped on exit."""
    port = _free_port()
    database = root / "server.sqlite"
    env = dict(os.environ) | {
        "TAPES_SERVER_DATABASE_URL": f"sqlite:///{database}",
        "TAPES_SERVER_PORT": str(port),
        "TAPES_SERVER_WORKERS": "1",
    }
    script = shutil.which("tapes-server", path=str(Path(sys.executable).parent)) or "tapes-server"
    log = (root / "server.log").open("wb")
    process = subprocess.Popen(  # noqa: S603 - our own console script, fixed arguments
        [script, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise SystemExit(f"the demo server did not start; see {root / 'server.log'}")
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the demo server did not answer within 60 s")
            time.sleep(0.2)
        yield url, database
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def show_server_rows(database: Path) -> None:
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "SELECT vault_id, substr(node_id, 1, 16), epoch, padded_size, metadata_only, "
            "clear_metadata, length(envelope) FROM nodes ORDER BY vault_id, seq"
        ).fetchall()
        stored = b"".join(bytes(r[0] or b"") for r in db.execute("SELECT envelope FROM nodes"))
    for vault, node_id, epoch, padded, metadata_only, metadata, size in rows:
        print(  # noqa: T201
            f"  {vault} node {node_id}… epoch {epoch}, {size} B sealed (padded body {padded} B), "
            f"metadata-only={bool(metadata_only)}, clear metadata {metadata}"
        )
    found = SECRET_WORDS.encode() in stored
    print(f"  the words {SECRET_WORDS!r} appear on the server: {found}")  # noqa: T201
    if found:
        raise SystemExit("demo failed: plaintext reached the server")


def main() -> None:
    os.environ["TAPES_PASSPHRASE"] = PASSPHRASE  # the demo's identities only
    with tempfile.TemporaryDirectory(prefix="tapes-demo-") as tmp:
        root = Path(tmp)
        laptop, desktop, bob = root / "alice-laptop", root / "alice-desktop", root / "bob"
        _say("starting a local tapes-server (SQLite) on a free loopback port")
        with local_server(root) as (url, database):
            print(f"server at {url}")  # noqa: T201
            _say("alice logs in from her laptop (a new identity, registered as 'alice')")
            _run(laptop, "auth", "login", "--server", url, "--handle", "alice")
            _say("alice records two sessions; a regenerated answer makes a branch")
            with LocalProvider(laptop / "tapes.sqlite") as store:
                nodes = record(store)
            _run(laptop, "session", "list")
            _say("alice syncs: every node is sealed on the laptop before it leaves")
            _run(laptop, "storage", "sync")
            _say("bob registers too: the server now has two tenants")
            _run(bob, "auth", "login", "--server", url, "--handle", "bob")
            _say("alice's second machine: her identity key restored, an empty store")
            desktop.mkdir()
            shutil.copy(laptop / "identity.key", desktop / "identity.key")
            _run(desktop, "auth", "login", "--server", url)
            _run(desktop, "storage", "sync")
            _run(desktop, "session", "show", nodes[4].hash[:12])
            _run(desktop, "verify")
            _share_with_bob(laptop, bob, nodes[4].hash)
            _say("what the server stored: sealed envelopes and coarse metadata, no content")
            show_server_rows(database)
        _say("server stopped; the temporary directories are removed")


if __name__ == "__main__":
    main()
