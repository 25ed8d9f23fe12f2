"""`tapes storage sync` as separate processes against a ``tapes-server serve`` process: Ctrl-C
(SIGINT) in the middle keeps what was done and the next run finishes with exact counts, and two
syncs of one store at once: the second names the first and exits, or waits with ``--wait`` and
then has nothing left to do."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import keymgmt
from tapes_e2e import account
from tapes_e2e.identity import identity_path
from tapes_e2e.providers.local import LocalProvider
from tapes_e2e.store.syncstate import sync_lock
from tests.client.conftest import FAST
from tests.conftest import chain
from tests.e2e.conftest import LiveServer, fast_cli
from tests.e2e.test_stolen_laptop_live import ok

PASSPHRASE = "correct horse battery"  # noqa: S105 - a test's
NODES = 3000  # three push batches
# Seconds a sync may take to exit after Ctrl-C while the server holds a request: a fraction of
# the server's busy timeout (30 s) and the client's request timeout (30 s).
STALLED_EXIT = 10


@pytest.fixture
def home(
    live_server: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> Path:  # fmt: skip
    """Alice's machine, logged in, with NODES nodes recorded and none synced."""
    fast_cli(monkeypatch, PASSPHRASE)
    home = tmp_path / "alice"
    ok(capsys, home, "auth", "login", "--server", live_server.base_url, "--handle", "alice")
    # a `tapes` process holds the product's own Argon2id floor: seal the key at it
    path = identity_path(home)
    identity = keymgmt.open_key_file_bytes(path.read_bytes(), PASSPHRASE, floor=FAST)
    keymgmt.write_key_file(path, identity, PASSPHRASE, overwrite=True)
    record(home, 0, NODES)
    return home


def record(home: Path, first: int, count: int) -> None:
    """Sessions of ten turns, ``count`` nodes, numbered from ``first``."""
    with LocalProvider(home / "tapes.sqlite") as store:
        for start in range(first, first + count, 10):
            store.put_many(chain([f"session {start} turn {i}" for i in range(10)]))


# `python -m tapes_e2e` as a terminal starts it, Ctrl-C raising KeyboardInterrupt: a test run
# started in the background of a shell without job control (`.ci/run &`) ignores SIGINT, every
# child inherits that, and Python then leaves it ignored.
AS_FROM_A_TERMINAL = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'tapes'; runpy.run_module('tapes_e2e', run_name='__main__', alter_sys=True)"
)


def tapes(home: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", AS_FROM_A_TERMINAL, "--config-dir", str(home), *args],
        env={**os.environ, "TAPES_PASSPHRASE": PASSPHRASE}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.kill()
        process.communicate(timeout=30)


def until(check: Callable[[], bool], timeout: float = 60) -> None:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not within {timeout} s")
        time.sleep(0.005)  # polling another process's effect against a deadline


def server_nodes(server: LiveServer) -> int:
    with sqlite3.connect(server.root / "s.sqlite", timeout=30) as db:
        return int(db.execute("SELECT count(*) FROM nodes").fetchone()[0])


def server_head(db: sqlite3.Connection) -> int:
    """The server's highest sequence number (an index lookup: cheap to poll)."""
    return int(db.execute("SELECT coalesce(max(seq), 0) FROM nodes").fetchone()[0])


def signal_state(pid: int) -> str:
    """How process ``pid`` and each of its threads treat signals (/proc), and this process's
    own: a SIGINT blocked or ignored is inherited by a child."""
    lines = []
    for who in (pid, os.getpid()):
        for task in sorted(Path(f"/proc/{who}/task").iterdir()):
            try:
                status = (task / "status").read_text().splitlines()
            except OSError:  # a thread that ended while it was listed
                continue
            masks = [line for line in status if line.startswith(("Name:", "SigBlk:", "SigIgn:"))]
            lines.append(f"{who}/{task.name}: {' '.join(masks)}")
    return "; ".join(lines)


def report(process: subprocess.Popen[str]) -> dict[str, object]:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    return dict(json.loads(out))


def status(capsys: pytest.CaptureFixture[str], home: Path) -> dict[str, int]:
    return dict(json.loads(ok(capsys, home, "storage", "status", "--json"))["sync"])


def test_ctrl_c_keeps_what_was_done_and_the_next_sync_finishes_exactly(
    live_server: LiveServer, home: Path, capsys: pytest.CaptureFixture[str],
    processes: list[subprocess.Popen[str]],
) -> None:  # fmt: skip
    # Ten batches, and the server's write lock taken by the test the moment the first batch is
    # in: the signal lands with nine still to go, however fast the server and the client are.
    total = NODES + 7000
    record(home, NODES, total - NODES)
    first = tapes(home, "storage", "sync")
    processes.append(first)
    server_db = sqlite3.connect(live_server.root / "s.sqlite", timeout=30, isolation_level=None)
    try:
        until(lambda: server_head(server_db) >= 1000)  # the first batch is in
        server_db.execute("BEGIN IMMEDIATE")  # no other batch can be stored until ROLLBACK
        assert first.poll() is None, "the sync ended before the test could interrupt it"
        before = signal_state(first.pid)
        first.send_signal(signal.SIGINT)
        # Held until the sync is gone: a batch sent ahead is stuck in the server, whose busy
        # timeout (30 s) is far past this wait. The sync must not wait for that request.
        try:
            _, err = first.communicate(timeout=STALLED_EXIT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {STALLED_EXIT} s after Ctrl-C, the server stalled")
    finally:
        # The batch stuck in the server may still be stored once it is let go (its answer
        # lost): the next sync sends it again.
        if server_db.in_transaction:
            server_db.execute("ROLLBACK")
        server_db.close()
    assert first.returncode == 130, f"{err}\nthe sync's signal state when it was sent: {before}"
    (line,) = err.strip().splitlines()
    assert line.startswith("tapes: error: interrupted: pushed ")
    assert line.endswith(", kept; the next `tapes storage sync` resumes from there")
    found = re.search(r"pushed ([\d,]+), pulled", line)
    assert found is not None, line
    kept = int(found.group(1).replace(",", ""))  # "1,000": the thousands separator is no end
    left = status(capsys, home)["pending_push"]
    assert kept + left == total
    assert left > 0  # it was cut in the middle of its push
    second = tapes(home, "storage", "sync", "--json")
    processes.append(second)
    done = report(second)
    assert (done["pushed"], done["pulled"], done["pending_push"]) == (left, 0, 0)
    assert server_nodes(live_server) == total
    after = status(capsys, home)
    assert (after["pending_push"], after["pending_pull"], after["synced"]) == (0, 0, total)


def test_two_syncs_of_one_store_at_once(
    live_server: LiveServer, home: Path, capsys: pytest.CaptureFixture[str],
    processes: list[subprocess.Popen[str]],
) -> None:  # fmt: skip
    session = account.load_session(home)
    assert session is not None
    lock = sync_lock(home / "tapes.sqlite", session.personal_vault, "")
    first = tapes(home, "storage", "sync", "--json")
    processes.append(first)
    until(lambda: f"pid {first.pid} " in (lock.holder() or ""))
    first.send_signal(signal.SIGSTOP)  # it holds the lock, in the middle of its sync
    second = tapes(home, "storage", "sync")
    processes.append(second)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 1
    assert f"is being synced by another process (pid {first.pid} on " in err.splitlines()[0]
    assert ": tapes storage sync, since " in err.splitlines()[0]
    waiting = tapes(home, "storage", "sync", "--wait", "--json")
    processes.append(waiting)
    time.sleep(1.0)  # long enough to have synced, were it not waiting
    assert waiting.poll() is None
    first.send_signal(signal.SIGCONT)
    assert report(first)["pushed"] == NODES
    done = report(waiting)
    assert (done["pushed"], done["pulled"], done["pending_push"]) == (0, 0, 0)
    assert server_nodes(live_server) == NODES
    after = status(capsys, home)
    assert (after["pending_push"], after["pending_pull"]) == (0, 0)
