"""The sync worker with fake push/pull callables: rounds, offline periods, auth, integrity
reports, and close with and without sync_on_close."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tapes_e2e.node import Node
from tapes_e2e.providers.local import LocalProvider
from tapes_e2e.store.rows import pulled_row
from tapes_e2e.store.syncstate import SyncState
from tapes_e2e.sync.engine import EngineConfig, RoundFinished
from tapes_e2e.sync.worker import PulledBatch, SyncError, SyncRunner, SyncWorker, run_sync
from tests.conftest import chain

VAULT = "vault-personal"
FAST = EngineConfig(interval=3600.0, base_backoff=0.01, max_backoff=0.05, close_budget=50)
WAIT = 10.0  # the bound of every wait below


class FakeServer:
    """An in-memory, idempotent server: envelopes in sequence order, each hash once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.envelopes: list[tuple[Node, str]] = []
        self.received: Counter[str] = Counter()
        self.online = True
        self.auth_failures = 0  # the next N calls fail with "auth"
        self.refused: set[str] = set()  # hashes whose envelopes fail verification on pull
        self.calls = 0

    def _check(self) -> None:
        self.calls += 1
        if not self.online:
            raise SyncError("offline", "the server is unreachable")
        if self.auth_failures:
            self.auth_failures -= 1
            raise SyncError("auth", "the access token expired")

    def push(self, _vault: str, nodes: Sequence[Node]) -> list[str]:
        with self.lock:
            self._check()
            known = {node.hash for node, _ in self.envelopes}
            for node in nodes:
                self.received[node.hash] += 1
                if node.hash not in known:
                    self.envelopes.append((node, f"nid-{node.hash[:12]}"))
                    known.add(node.hash)
            return [f"nid-{node.hash[:12]}" for node in nodes]

    def pull(self, _vault: str, after: int, limit: int) -> PulledBatch:
        with self.lock:
            self._check()
            page = self.envelopes[after : after + limit]
            cursor = after + len(page)
            good = [pulled_row(n, i) for n, i in page if n.hash not in self.refused]
            rejected = [
                f"node {n.hash[:12]}: blob altered" for n, _ in page if n.hash in self.refused
            ]
            return PulledBatch(good, cursor, more=cursor < len(self.envelopes), rejected=rejected)

    def hashes(self) -> list[str]:
        with self.lock:
            return [node.hash for node, _ in self.envelopes]


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[LocalProvider]:
    with LocalProvider(tmp_path / "tapes.sqlite") as store:
        yield store


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


def make_runner(
    provider: LocalProvider,
    server: FakeServer,
    *,
    config: EngineConfig = FAST,
    random: Callable[[], float] = lambda: 0.5,
    refresh_login: Callable[[], None] | None = None,
    on_integrity: Callable[[str], None] | None = None,
    push: Callable[[str, Sequence[Node]], list[str]] | None = None,
) -> SyncRunner:
    return SyncRunner(
        SyncState(provider),
        VAULT,
        push or server.push,
        server.pull,
        refresh_login=refresh_login,
        config=config,
        batch_size=7,
        page_size=5,
        random=random,
        wall_clock=lambda: 1_800_000_000.0,
        on_integrity=on_integrity,
    )


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes (a bounded wait)."""
    end = time.monotonic() + timeout
    done = threading.Event()
    while time.monotonic() < end:
        if predicate():
            return True
        done.wait(0.005)
    return predicate()


@pytest.fixture
def worker_factory() -> Iterator[Callable[..., SyncWorker]]:
    started: list[SyncWorker] = []

    def make(runner: SyncRunner, *, sync_on_close: bool = True) -> SyncWorker:
        worker = SyncWorker(runner, sync_on_close=sync_on_close)
        worker.start()
        started.append(worker)
        return worker

    yield make
    for worker in started:
        worker.close(timeout=WAIT)


def test_first_round_pushes_everything_and_records_the_result(
    provider: LocalProvider, server: FakeServer, worker_factory: Callable[..., SyncWorker]
) -> None:
    nodes = chain([f"turn {i}" for i in range(20)])
    provider.put_many(nodes)
    worker = worker_factory(make_runner(provider, server))
    assert worker.wait_rounds(1, WAIT)
    assert server.hashes() == [n.hash for n in nodes]
    state = SyncState(provider).load(VAULT)
    assert (state.last_result, state.last_sync_at) == ("ok", "2027-01-15T08:00:00+00:00")
    assert state.cursor == 20  # our own nodes came back on pull and were recognised
    assert SyncState(provider).pending_push_count(VAULT) == 0
    assert set(server.received.values()) == {1}


def test_request_sync_runs_a_round_now(
    provider: LocalProvider, server: FakeServer, worker_factory: Callable[..., SyncWorker]
) -> None:
    worker = worker_factory(make_runner(provider, server))
    assert worker.wait_rounds(1, WAIT)
    assert server.hashes() == []
    later = chain(["recorded after start", "and its answer"])
    provider.put_many(later)
    worker.request_sync()
    assert worker.wait_rounds(2, WAIT)
    assert server.hashes() == [n.hash for n in later]


def test_the_interval_wakes_the_worker(
    provider: LocalProvider, server: FakeServer, worker_factory: Callable[..., SyncWorker]
) -> None:
    config = EngineConfig(interval=0.02, base_backoff=0.01, max_backoff=0.05)
    worker = worker_factory(make_runner(provider, server, config=config))
    assert worker.wait_rounds(3, WAIT)
    provider.put_many(chain(["found by a timed round"]))
    assert wait_until(lambda: len(server.hashes()) == 1)


def test_offline_backs_off_keeps_recording_and_catches_up(
    provider: LocalProvider, server: FakeServer, worker_factory: Callable[..., SyncWorker]
) -> None:
    server.online = False
    draws: list[float] = []

    def random() -> float:
        draws.append(0.25)
        return 0.25

    runner = make_runner(provider, server, random=random)
    worker = worker_factory(runner)
    assert worker.wait_rounds(3, WAIT)  # three failed attempts, spaced by the backoff
    assert runner.last_result is not None
    assert runner.last_result.result == "offline"
    assert SyncState(provider).load(VAULT).last_result == "offline: the server is unreachable"
    assert len(draws) >= 3  # every failure drew its jitter from the injected source
    assert 0.0 < runner.engine.delay <= FAST.max_backoff

    # Recording never waits on the network.
    nodes = []
    for index in range(5):
        session = chain([f"offline {index}", "answer"])
        started = time.monotonic()
        provider.put_many(session)
        assert time.monotonic() - started < 1.0
        nodes += session
    assert SyncState(provider).pending_push_count(VAULT) == 10

    server.online = True
    assert wait_until(lambda: server.hashes() == [n.hash for n in nodes])
    assert wait_until(lambda: runner.last_result == RoundFinished("ok"))
    assert set(server.received.values()) == {1}  # nothing was sent twice
    assert runner.engine.failures == 0


def test_pulls_what_another_machine_pushed(
    provider: LocalProvider, server: FakeServer, worker_factory: Callable[..., SyncWorker]
) -> None:
    theirs = chain([f"elsewhere {i}" for i in range(12)])
    server.push(VAULT, theirs)
    worker = worker_factory(make_runner(provider, server))
    assert worker.wait_rounds(1, WAIT)
    assert provider.list() == theirs
    assert SyncState(provider).cursor(VAULT) == 12
    assert server.received == Counter({n.hash: 1 for n in theirs})  # nothing pushed back


def test_refused_envelopes_are_reported_and_the_rest_stored(
    provider: LocalProvider, server: FakeServer, worker_factory: Callable[..., SyncWorker]
) -> None:
    a, b = chain(["a1", "a2", "a3"]), chain(["b1", "b2"])
    server.push(VAULT, a + b)
    server.refused = {b[0].hash, b[1].hash}  # a whole session tampered with
    reports: list[str] = []
    runner = make_runner(provider, server, on_integrity=reports.append)
    worker = worker_factory(runner)
    assert worker.wait_rounds(1, WAIT)
    assert reports == [
        f"node {b[0].hash[:12]}: blob altered",
        f"node {b[1].hash[:12]}: blob altered",
    ]
    assert {n.hash for n in provider.list()} == {n.hash for n in a}
    assert SyncState(provider).cursor(VAULT) == 5  # past the page, bad envelopes included
    result = SyncState(provider).load(VAULT).last_result
    assert result is not None
    assert result.startswith("integrity: 2 refused: node ")


def test_children_of_a_refused_node_are_refused_and_later_pages_still_flow(
    provider: LocalProvider, server: FakeServer, worker_factory: Callable[..., SyncWorker]
) -> None:
    tampered = chain([f"tampered {i}" for i in range(7)])  # spans two pages of 5
    fine = chain([f"fine {i}" for i in range(6)])
    server.push(VAULT, tampered + fine)
    server.refused = {tampered[0].hash}
    reports: list[str] = []
    worker = worker_factory(make_runner(provider, server, on_integrity=reports.append))
    assert worker.wait_rounds(1, WAIT)
    assert reports[0] == f"node {tampered[0].hash[:12]}: blob altered"
    assert len(reports) == 7
    for node, report in zip(tampered[1:], reports[1:], strict=True):
        assert report == (
            f"node nid-{node.hash[:12]}: its parent {node.parent_hash} is not stored; "
            "not stored either"
        )
    assert provider.list() == fine
    assert SyncState(provider).cursor(VAULT) == 13
    assert SyncState(provider).load(VAULT).last_result == (
        f"integrity: 7 refused: node {tampered[0].hash[:12]}: blob altered"
    )


def test_an_expired_token_is_refreshed_once(
    provider: LocalProvider, server: FakeServer, worker_factory: Callable[..., SyncWorker]
) -> None:
    provider.put_many(chain(["needs a fresh token"]))
    server.auth_failures = 1
    refreshes: list[int] = []
    runner = make_runner(provider, server, refresh_login=lambda: refreshes.append(1))
    worker = worker_factory(runner)
    assert worker.wait_rounds(1, WAIT)
    assert refreshes == [1]
    assert runner.last_result == RoundFinished("ok")
    assert len(server.hashes()) == 1


def test_a_revoked_login_gives_up_until_asked_again(
    provider: LocalProvider, server: FakeServer, worker_factory: Callable[..., SyncWorker]
) -> None:
    provider.put_many(chain(["revoked"]))
    server.auth_failures = 2
    refreshes: list[int] = []
    runner = make_runner(provider, server, refresh_login=lambda: refreshes.append(1))
    worker = worker_factory(runner)
    assert worker.wait_rounds(1, WAIT)
    assert runner.last_result == RoundFinished("auth", "the access token expired")
    assert runner.engine.phase == "blocked"
    assert refreshes == [1]
    calls = server.calls
    assert not worker.wait_rounds(2, 0.1)  # no retries on its own
    assert server.calls == calls
    worker.request_sync()  # after `tapes auth login`, say
    assert worker.wait_rounds(2, WAIT)
    assert runner.last_result == RoundFinished("ok")
    assert len(server.hashes()) == 1


def test_close_with_sync_on_close_pushes_what_is_pending(
    provider: LocalProvider, server: FakeServer, worker_factory: Callable[..., SyncWorker]
) -> None:
    worker = worker_factory(make_runner(provider, server), sync_on_close=True)
    assert worker.wait_rounds(1, WAIT)
    last = chain([f"last words {i}" for i in range(30)])
    provider.put_many(last)
    assert worker.close(timeout=WAIT)
    assert worker.stopped
    assert server.hashes() == [n.hash for n in last]
    assert SyncState(provider).pending_push_count(VAULT) == 0


def test_close_without_sync_on_close_leaves_work_pending(
    provider: LocalProvider, server: FakeServer, worker_factory: Callable[..., SyncWorker]
) -> None:
    worker = worker_factory(make_runner(provider, server), sync_on_close=False)
    assert worker.wait_rounds(1, WAIT)
    provider.put_many(chain(["for the next start"]))
    assert worker.close(timeout=WAIT)
    assert server.hashes() == []
    assert SyncState(provider).pending_push_count(VAULT) == 1


def test_close_is_bounded_when_the_server_hangs(
    provider: LocalProvider, server: FakeServer, worker_factory: Callable[..., SyncWorker]
) -> None:
    provider.put_many(chain([f"stuck {i}" for i in range(20)]))
    entered, release = threading.Event(), threading.Event()
    push = server.push

    def hanging_push(vault: str, nodes: Sequence[Node]) -> list[str]:
        entered.set()
        release.wait(WAIT)
        return push(vault, nodes)

    runner = make_runner(provider, server, push=hanging_push)
    worker = worker_factory(runner)
    assert entered.wait(WAIT)
    started = time.monotonic()
    assert not worker.close(timeout=0.2)  # still inside the request
    assert time.monotonic() - started < 2.0
    release.set()
    # The acknowledged batch is recorded, then the deadline stops the round: the rest waits.
    assert wait_until(lambda: worker.stopped)
    assert len(server.hashes()) == 7
    assert SyncState(provider).pending_push_count(VAULT) == 13


def test_run_sync_in_the_foreground(provider: LocalProvider, server: FakeServer) -> None:
    nodes = chain([f"fg {i}" for i in range(9)])
    provider.put_many(nodes)
    server.online = False
    runner = make_runner(provider, server)
    assert run_sync(runner) == RoundFinished("offline", "the server is unreachable")
    server.online = True
    assert run_sync(runner) == RoundFinished("ok")
    assert server.hashes() == [n.hash for n in nodes]
    # this server names no sequence numbers, so the nine come back; stored here already, they
    # are not counted as pulled
    assert (runner.pushed, runner.pulled) == (9, 0)


def test_progress_is_reported_and_a_failing_callback_does_not_break_the_round(
    provider: LocalProvider, server: FakeServer
) -> None:
    elsewhere = chain(["tampered on the server"])
    server.push(VAULT, elsewhere)
    server.refused = {elsewhere[0].hash}
    provider.put_many(chain([f"p {i}" for i in range(10)]))
    events: list[object] = []
    calls: list[str] = []

    def broken(message: str) -> None:
        calls.append(message)
        raise RuntimeError("the terminal went away")

    runner = SyncRunner(
        SyncState(provider),
        VAULT,
        server.push,
        server.pull,
        config=FAST,
        batch_size=4,
        page_size=4,
        on_integrity=broken,
        on_progress=events.append,
    )
    result = run_sync(runner)
    assert calls == [f"node {elsewhere[0].hash[:12]}: blob altered"]
    assert result == RoundFinished("integrity", f"1 refused: {calls[0]}")
    assert [type(e).__name__ for e in events] == [
        "PushAcked", "PushAcked", "PushAcked", "NothingToPush",
        "PulledPage", "PulledPage", "PulledPage",
    ]  # fmt: skip
    assert len(server.hashes()) == 11
    assert SyncState(provider).cursor(VAULT) == 11
