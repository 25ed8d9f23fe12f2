"""`tapes storage sync --watch` over real HTTP: the watcher is a process of its own, Go-tapes-style
writes come from another process, the server is a ``tapes-server serve`` process that goes away
and comes back, and SIGTERM ends the watcher after one last bounded round."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tomlkit

import keymgmt
from tapes_e2e.config import storage_table
from tapes_e2e.identity import identity_path
from tapes_e2e.providers.local import LocalProvider
from tapes_e2e.sync.watch import STATUS_FILE
from tests.client.conftest import FAST
from tests.conftest import chain
from tests.e2e.conftest import LiveServer, fast_cli
from tests.e2e.test_stolen_laptop_live import ok

PASSPHRASE = "correct horse battery"  # noqa: S105 - a test's
# A separate process writing nodes the way Go tapes does: its own SQLite connection, plain
# INSERTs into `nodes` in one transaction, nothing of our sync bookkeeping.
WRITER = """
import json, sqlite3, sys
from tapes_e2e.node import node_from_json
from tapes_e2e.store.rows import INSERT_SQL, node_to_row
db = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
db.execute("BEGIN IMMEDIATE")
for line in sys.stdin:
    db.execute(INSERT_SQL, node_to_row(node_from_json(json.loads(line))))
db.execute("COMMIT")
"""


def _write_like_go(store: Path, texts: list[str], parent: object = None) -> list[str]:
    nodes = chain(texts, parent=parent)  # type: ignore[arg-type]
    lines = "".join(json.dumps(n.to_json()) + "\n" for n in nodes)
    subprocess.run([sys.executable, "-c", WRITER, str(store)], input=lines, text=True,
                   check=True, timeout=60)  # fmt: skip
    return [n.hash for n in nodes]


def _server_nodes(server: LiveServer) -> int:
    with sqlite3.connect(server.root / "s.sqlite", timeout=30) as db:
        return int(db.execute("SELECT count(*) FROM nodes").fetchone()[0])


def _until(check: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``check`` held; fails the test after ``timeout``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not within {timeout} s")
        time.sleep(0.02)  # polling another process's effect against a deadline
    return time.monotonic() - start


@pytest.fixture
def watcher(
    live_server: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Path, subprocess.Popen[str]]]:  # fmt: skip
    """Alice's machine, logged in, with one node synced, and its watcher running."""
    fast_cli(monkeypatch, PASSPHRASE)
    home = tmp_path / "alice"
    ok(capsys, home, "auth", "login", "--server", live_server.base_url, "--handle", "alice")
    config = tomlkit.parse((home / "config.toml").read_text())
    storage_table(config, "cloud")["sync_interval"] = "1h"  # only writes start a round
    (home / "config.toml").write_text(tomlkit.dumps(config))
    # the watcher holds the product's own Argon2id floor: seal the key at it
    path = identity_path(home)
    identity = keymgmt.open_key_file_bytes(path.read_bytes(), PASSPHRASE, floor=FAST)
    keymgmt.write_key_file(path, identity, PASSPHRASE, overwrite=True)
    LocalProvider(home / "tapes.sqlite").close()  # the file Go tapes made on its first run
    _write_like_go(home / "tapes.sqlite", ["before the watcher"])
    process = subprocess.Popen(
        [sys.executable, "-m", "tapes_e2e", "--config-dir", str(home), "storage", "sync",
         "--watch"],
        env={**os.environ, "TAPES_PASSPHRASE": PASSPHRASE}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        yield home, process
    finally:
        if process.poll() is None:
            process.kill()
        _, err = process.communicate(timeout=30)
        print(f"the watcher's stderr:\n{err}")  # shown when the test fails


def _status(home: Path) -> dict[str, object]:
    try:
        return dict(json.loads((home / STATUS_FILE).read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def test_the_watcher_pushes_what_another_process_writes_and_outlives_the_server(
    live_server: LiveServer, watcher: tuple[Path, subprocess.Popen[str]],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    home, process = watcher
    _until(lambda: _server_nodes(live_server) == 1, timeout=60)  # its first round
    _until(lambda: int(str(_status(home).get("rounds", 0))) >= 1, timeout=30)
    # Go tapes writes two turns: they reach the server without waiting for sync_interval (1 h)
    first = _write_like_go(home / "tapes.sqlite", ["a new turn", "its answer"])
    assert len(first) == 2
    # within a second here; bench/bench_watch.py measures it, a test only bounds it
    _until(lambda: _server_nodes(live_server) == 3, timeout=10)
    # the server goes away; writes go on; the watcher keeps running and catches up
    live_server.stop()
    _write_like_go(home / "tapes.sqlite", ["written while the server was away"])
    time.sleep(1.5)  # a round or two fail against the stopped server
    assert process.poll() is None, process.stderr.read() if process.stderr else ""
    live_server.start()
    _until(lambda: _server_nodes(live_server) == 4, timeout=60)
    # SIGTERM right after a write: the last round (sync_on_close) sends it, then it exits
    _write_like_go(home / "tapes.sqlite", ["the very last turn"])
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    stderr = process.stderr.read() if process.stderr else ""
    assert "stopped: pushed" in stderr
    assert _server_nodes(live_server) == 5
    status = _status(home)
    assert (status["running"], status["last_result"]) == (False, "ok")
    report = json.loads(ok(capsys, home, "storage", "status", "--json"))
    assert report["watch"]["running"] is False
    assert report["sync"]["pending_push"] == 0
