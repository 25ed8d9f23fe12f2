"""A sync that never redoes or doubles work, through the CLI and the real app: an interrupted sync
says what it kept and resumes with exact counts, downloading none of its own pushes; a share
takes no node to pull; `tapes storage status` right after a sync has nothing left to push or
pull; one sync of a store and vault at a time (the CLI's, the hybrid provider's worker)."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tapes_e2e import account, context
from tapes_e2e.cli import output
from tapes_e2e.client import ApiClient
from tapes_e2e.context import Settings
from tapes_e2e.locks import LockFile
from tapes_e2e.protocol import PackedPullPage, PullPage
from tapes_e2e.providers.hybrid import HybridProvider
from tapes_e2e.providers.local import LocalProvider
from tapes_e2e.store.syncstate import sync_lock
from tapes_e2e.sync import worker
from tests.client.conftest import Tapes
from tests.client.test_hybrid import server_count
from tests.client.test_teams import Team, ok, record
from tests.conftest import chain
from tests.server.conftest import AUDIENCE

BATCH = 3  # nodes per push and per page, so that a sync of a few sessions takes several


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker, "BATCH_SIZE", BATCH)
    monkeypatch.setattr(worker, "PAGE_SIZE", BATCH)


@pytest.fixture
def downloaded(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many envelopes each pull request brought back (the real request, counted)."""
    real, counts = ApiClient.pull_with_bytes, list[int]()

    def counting(
        self: ApiClient, vault: str, after: int, limit: int
    ) -> tuple[PullPage | PackedPullPage, bytes]:
        page, raw = real(self, vault, after, limit)
        counts.append(len(page.items))
        return page, raw

    monkeypatch.setattr(ApiClient, "pull_with_bytes", counting)
    return counts


def sync_report(tapes: Tapes, who: str) -> dict[str, Any]:
    code, out, err = tapes(who, "storage", "sync", "--json")
    assert code == 0, err
    return dict(json.loads(out))


def sync_status(tapes: Tapes, who: str) -> dict[str, Any]:
    return dict(json.loads(ok(tapes(who, "storage", "status", "--json")))["sync"])


def sessions(home: Path, count: int, turns: int) -> None:
    for i in range(count):
        record(home, *[f"session {i} turn {j}" for j in range(turns)])


@pytest.mark.usefixtures("small_batches")
def test_an_interrupted_sync_resumes_with_exact_counts_and_pulls_none_of_its_own_back(
    tapes: Tapes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, downloaded: list[int]
) -> None:
    ok(tapes("alice", "auth", "login", "--server", AUDIENCE, "--handle", "alice"))
    sessions(tmp_path / "alice", 5, 4)  # 20 nodes: seven batches of three
    real, pushes = ApiClient.push_encoded, []

    def answer_lost_on_the_third(self: ApiClient, body: bytes, *, packed: bool = False) -> Any:
        pushes.append(body)
        result = real(self, body, packed=packed)  # the server stores the batch ...
        if len(pushes) == 3:
            raise KeyboardInterrupt  # ... and Ctrl-C comes before its answer is recorded
        return result

    monkeypatch.setattr(ApiClient, "push_encoded", answer_lost_on_the_third)
    code, _, err = tapes("alice", "storage", "sync")
    assert code == 130
    told = "interrupted: pushed 6, pulled 0, kept; the next `tapes storage sync` resumes"
    assert err.strip().splitlines() == [f"tapes: error: {told} from there"]
    monkeypatch.setattr(ApiClient, "push_encoded", real)
    assert sync_status(tapes, "alice")["pending_push"] == 14  # the batch whose answer was lost
    downloaded.clear()
    report = sync_report(tapes, "alice")
    assert (report["pushed"], report["pulled"], report["pending_push"]) == (14, 0, 0)
    # the only envelopes downloaded: the batch pushed without an answer (its sequence numbers
    # were never told); every batch acknowledged since is stepped over, not pulled back
    assert sum(downloaded) == BATCH
    status = sync_status(tapes, "alice")
    assert (status["pending_push"], status["pending_pull"], status["synced"]) == (0, 0, 20)
    downloaded.clear()
    assert (sync_report(tapes, "alice")["pulled"], sum(downloaded)) == (0, 0)


@pytest.mark.usefixtures("small_batches")
def test_a_second_machine_pulls_everything_and_the_first_pulls_only_what_is_new(
    tapes: Tapes, tmp_path: Path, downloaded: list[int]
) -> None:
    """Two machines of one user take turns: each downloads exactly the other's new nodes, the
    runs of its own in between are stepped over."""
    ok(tapes("laptop", "auth", "login", "--server", AUDIENCE, "--handle", "alice"))
    (tmp_path / "desktop").mkdir()
    (tmp_path / "desktop" / "identity.key").write_bytes(
        (tmp_path / "laptop" / "identity.key").read_bytes()
    )
    ok(tapes("desktop", "auth", "login", "--server", AUDIENCE))
    sessions(tmp_path / "laptop", 2, 4)
    assert sync_report(tapes, "laptop")["pushed"] == 8
    record(tmp_path / "desktop", "from the desktop", "its answer")
    report = sync_report(tapes, "desktop")  # pushes its 2 after the laptop's 8, then pulls
    assert (report["pushed"], report["pulled"]) == (2, 8)
    assert sum(downloaded) == 8
    record(tmp_path / "laptop", "the laptop again")
    downloaded.clear()
    report = sync_report(tapes, "laptop")  # its 1 lands after the desktop's 2
    assert (report["pushed"], report["pulled"], sum(downloaded)) == (1, 2, 2)
    assert sync_report(tapes, "desktop")["pulled"] == 1  # the laptop's last node
    for who in ("laptop", "desktop"):
        assert sync_report(tapes, who)["pulled"] == 0
        assert sync_status(tapes, who)["pending_pull"] == 0


def test_status_right_after_a_sync_counts_exactly_with_shares_in_the_vault(
    tapes: Tapes, tmp_path: Path, downloaded: list[int]
) -> None:
    """A share takes a sequence number and holds no node, and another member's unshared nodes
    are not this member's to pull: neither is counted as left to pull."""
    team = Team(tapes, tmp_path)
    alice = team.home("alice")
    team.sync_into_team("alice", auto_share=True)
    record(alice, "shared by itself", "auto_share")
    assert sync_report(tapes, "alice")["pushed"] == 2
    record(alice, "a second session", "shared too")
    downloaded.clear()
    report = sync_report(tapes, "alice")  # after the first session's share: no gap walked
    assert (report["pushed"], report["pulled"], sum(downloaded)) == (2, 0, 0)
    status = sync_status(tapes, "alice")
    assert (status["pending_push"], status["pending_pull"]) == (0, 0)
    team.sync_into_team("alice", auto_share=False)
    private = record(alice, "kept to herself", "not shared")
    assert sync_report(tapes, "alice")["pushed"] == 2
    ok(tapes("alice", "session", "share", private[-1], "--team", team.id))  # by hand, after it
    status = sync_status(tapes, "alice")
    assert (status["pending_push"], status["pending_pull"]) == (0, 0)
    team.sync_into_team("bob", auto_share=False)
    LocalProvider(team.home("bob") / "tapes.sqlite").close()  # his tapes database, still empty
    assert sync_status(tapes, "bob")["pending_pull"] == 6  # what bob may read: the three shared
    assert sync_report(tapes, "bob")["pulled"] == 6
    record(alice, "never shared", "its answer")
    assert sync_report(tapes, "alice")["pushed"] == 2
    status = sync_status(tapes, "bob")
    assert (status["pending_push"], status["pending_pull"]) == (0, 0)


def _lock(home: Path) -> LockFile:
    """The lock a `tapes storage sync` of ``home``'s store and personal vault holds."""
    session = account.load_session(home)
    assert session is not None
    return sync_lock(home / "tapes.sqlite", session.personal_vault, "tapes storage sync")


def test_a_second_sync_of_one_store_says_who_holds_it_or_waits(
    tapes: Tapes, tmp_path: Path, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "alice"
    ok(tapes("alice", "auth", "login", "--server", AUDIENCE, "--handle", "alice"))
    sessions(home, 2, 3)
    lock = _lock(home)
    with lock.hold():  # another sync of this store and vault is running
        code, out, err = tapes("alice", "storage", "sync")
        assert (code, out, server_count(client)) == (1, "", 0)
        first, *_ = err.splitlines()
        holder = f"pid {os.getpid()} on {socket.gethostname()}: tapes storage sync, since "
        vault = account.load_session(home).personal_vault  # type: ignore[union-attr]
        assert first.startswith(
            f"tapes: error: vault {vault} of {home / 'tapes.sqlite'} is being synced by "
            f"another process ({holder}"
        )
    held, release = threading.Event(), threading.Event()

    def the_other_sync() -> None:
        with lock.hold():
            held.set()
            release.wait(30)

    said = output.note

    def note(message: str) -> None:  # the other sync ends once this one says it waits
        said(message)
        if message.startswith("waiting for "):
            release.set()

    monkeypatch.setattr(output, "note", note)
    other = threading.Thread(target=the_other_sync)
    other.start()
    assert held.wait(30)
    code, out, err = tapes("alice", "storage", "sync", "--wait", "--json")
    other.join(30)
    assert code == 0, err
    assert f"waiting for {holder}" in err
    assert json.loads(out)["pushed"] == 6
    assert not lock.path.read_text()  # released: no holder named


def test_the_hybrid_worker_skips_its_rounds_while_another_sync_holds_the_store(
    tapes: Tapes, tmp_path: Path, client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "hana"
    ok(tapes("hana", "auth", "login", "--server", AUDIENCE, "--handle", "hana"))
    ok(tapes("hana", "storage", "set-provider", "hybrid"))
    sessions(home, 1, 3)
    settings = Settings.resolve(config_dir=home, db=None, debug=False)
    logging.getLogger().addHandler(caplog.handler)  # the CLI's logging set-up dropped it
    caplog.set_level(logging.INFO, logger="tapes_e2e.sync.worker")
    with _lock(home).hold():  # a foreground `tapes storage sync`
        provider = context.open_provider(settings)
        assert isinstance(provider, HybridProvider)
        deadline = time.monotonic() + 10
        while "sync round skipped" not in caplog.text:  # its first round, at once
            assert time.monotonic() < deadline
            time.sleep(0.01)  # polling the worker thread's log against a deadline
        assert provider.put(chain(["written meanwhile"])[0])  # the writer is never held up
        assert (provider.runner.rounds, server_count(client)) == (0, 0)
    provider.request_sync()  # the lock is free: the next round runs
    worker = provider._worker  # the test waits for the worker's round
    assert worker is not None
    assert worker.wait_rounds(1, timeout=30)
    assert server_count(client) == 4
    provider.close()
