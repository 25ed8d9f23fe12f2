"""The runner's pipelining: the next batch is sealed while one is in flight, the next page is
fetched while one is stored, and work done ahead never changes what is stored or recorded."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import CancelledError
from pathlib import Path
from typing import Any

import pytest

from tapes_e2e.node import Node
from tapes_e2e.providers.local import LocalProvider
from tapes_e2e.store.syncstate import SyncState
from tapes_e2e.sync.worker import (
    PulledBatch,
    PullFn,
    PushFn,
    PushReceipt,
    SyncError,
    SyncRunner,
    _Helper,
    run_sync,
)
from tests.conftest import chain
from tests.sync.test_worker import FakeServer

VAULT = "vault-personal"
WAIT = 10.0


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[LocalProvider]:
    with LocalProvider(tmp_path / "tapes.sqlite") as store:
        yield store


class TwoStepPusher:
    """A Pusher over the fake server that records the order of prepare and send calls."""

    def __init__(self, server: FakeServer, batches: int) -> None:
        self.server = server
        self.batches = batches
        self.log: list[tuple[str, str]] = []
        self.threads: set[str] = set()
        self.changed = threading.Condition()
        self.fail_prepare_of: str | None = None

    def _count(self, kind: str) -> int:
        return sum(1 for what, _ in self.log if what == kind)

    def prepare(self, vault: str, nodes: Sequence[Node]) -> list[Node]:
        with self.changed:
            self.log.append(("prepare", nodes[0].hash))
            self.threads.add(threading.current_thread().name)
            self.changed.notify_all()
        if nodes[0].hash == self.fail_prepare_of:
            raise SyncError("server", "sealing failed")
        return list(nodes)

    def send(self, vault: str, prepared: list[Node]) -> PushReceipt:
        """Wait (bounded) until the next batch is being prepared: proof that it runs ahead."""
        nodes = prepared
        with self.changed:
            sent = self._count("send")
            self.changed.wait_for(
                lambda: self._count("prepare") >= min(sent + 2, self.batches), WAIT
            )
            self.log.append(("send", nodes[0].hash))
        return PushReceipt(self.server.push(vault, nodes))

    @property
    def sends_ahead(self) -> bool:
        return False


class TwoStepPuller:
    """A Puller over the fake server; ``fail_fetch_after`` makes the fetch after that cursor
    fail once."""

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.fetches: list[tuple[int, str]] = []
        self.fail_fetch_after: int | None = None
        self.closed = 0

    def fetch(self, vault: str, after: int, limit: int) -> PulledBatch:
        self.fetches.append((after, threading.current_thread().name))
        if after == self.fail_fetch_after:
            self.fail_fetch_after = None
            raise SyncError("offline", "the connection dropped")
        return self.server.pull(vault, after, limit)

    def open(self, vault: str, after: int, fetched: PulledBatch) -> PulledBatch:
        return fetched

    def close(self) -> None:
        self.closed += 1


def runner_for(
    provider: LocalProvider, server: FakeServer,
    pusher: TwoStepPusher | SendingAheadPusher | PushFn, puller: TwoStepPuller | PullFn,
) -> SyncRunner:  # fmt: skip
    return SyncRunner(
        SyncState(provider),
        VAULT,
        pusher,
        puller,
        batch_size=10,
        page_size=10,
    )


def test_the_next_batch_is_sealed_on_a_helper_thread_before_this_one_is_sent(
    provider: LocalProvider,
) -> None:
    server = FakeServer()
    nodes = chain([f"turn {i}" for i in range(35)])
    provider.put_many(nodes)
    pusher = TwoStepPusher(server, batches=4)
    result = run_sync(runner_for(provider, server, pusher, server.pull))
    assert result is not None
    assert result.result == "ok"
    firsts = [nodes[i].hash for i in (0, 10, 20, 30)]
    # Batch n+1 is prepared before batch n is sent, each batch exactly once.
    assert pusher.log == [
        ("prepare", firsts[0]),
        ("prepare", firsts[1]),
        ("send", firsts[0]),
        ("prepare", firsts[2]),
        ("send", firsts[1]),
        ("prepare", firsts[3]),
        ("send", firsts[2]),
        ("send", firsts[3]),
    ]
    assert any(name.startswith("tapes-sync-ahead") for name in pusher.threads)
    assert server.hashes() == [n.hash for n in nodes]
    assert all(count == 1 for count in server.received.values())
    assert SyncState(provider).pending_push_count(VAULT) == 0


def test_a_failure_sealing_ahead_surfaces_for_its_batch_and_the_retry_converges(
    provider: LocalProvider,
) -> None:
    server = FakeServer()
    nodes = chain([f"turn {i}" for i in range(30)])
    provider.put_many(nodes)
    pusher = TwoStepPusher(server, batches=2)
    pusher.fail_prepare_of = nodes[10].hash
    runner = runner_for(provider, server, pusher, server.pull)
    first = run_sync(runner)
    assert first is not None
    assert first.result == "server"
    # The batch before the failure was sent and recorded; nothing after it.
    assert server.hashes() == [n.hash for n in nodes[:10]]
    assert SyncState(provider).pending_push_count(VAULT) == 20
    pusher.fail_prepare_of = None
    second = run_sync(runner)
    assert second is not None
    assert second.result == "ok"
    assert server.hashes() == [n.hash for n in nodes]
    assert all(count == 1 for count in server.received.values())


def test_the_next_page_is_fetched_ahead_and_every_page_is_stored_once_in_order(
    provider: LocalProvider, tmp_path: Path
) -> None:
    server = FakeServer()
    nodes = chain([f"turn {i}" for i in range(35)])
    server.push(VAULT, nodes)
    puller = TwoStepPuller(server)
    with LocalProvider(tmp_path / "other.sqlite") as other:
        result = run_sync(runner_for(other, server, server.push, puller))
        assert result is not None
        assert result.result == "ok"
        assert [after for after, _ in puller.fetches] == [0, 10, 20, 30]
        assert {name for _, name in puller.fetches[1:]} == {"tapes-sync-ahead"}
        assert sorted(n.hash for n in other.list()) == sorted(n.hash for n in nodes)
        assert SyncState(other).cursor(VAULT) == 35


def test_a_failure_fetching_ahead_stops_at_that_page_and_the_next_round_resumes(
    provider: LocalProvider, tmp_path: Path
) -> None:
    server = FakeServer()
    nodes = chain([f"turn {i}" for i in range(30)])
    server.push(VAULT, nodes)
    puller = TwoStepPuller(server)
    puller.fail_fetch_after = 20
    with LocalProvider(tmp_path / "other.sqlite") as other:
        runner = runner_for(other, server, server.push, puller)
        first = run_sync(runner)
        assert first is not None
        assert first.result == "offline"
        # Pages 1 and 2 are stored with their cursor; the failed page moved nothing.
        assert SyncState(other).cursor(VAULT) == 20
        assert len(other.list()) == 20
        second = run_sync(runner)
        assert second is not None
        assert second.result == "ok"
        assert SyncState(other).cursor(VAULT) == 30
        assert sorted(n.hash for n in other.list()) == sorted(n.hash for n in nodes)


class SendingAheadPusher:
    """A Pusher whose sends may run ahead; logs each send's start and end, and the runner's
    recording of each batch (``mark_pushed``), with the thread that did it."""

    sends_ahead = True

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.log: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()

    def _note(self, what: str, first: str) -> None:
        with self.lock:
            self.log.append((what, first, threading.current_thread().name))

    def prepare(self, vault: str, nodes: Sequence[Node]) -> list[Node]:
        return list(nodes)

    def send(self, vault: str, prepared: list[Node]) -> PushReceipt:
        self._note("send", prepared[0].hash)
        time.sleep(0.02)  # the server at work: long enough for the runner to record meanwhile
        receipt = PushReceipt(self.server.push(vault, prepared))
        self._note("acked", prepared[0].hash)
        return receipt


def sending_ahead(provider: LocalProvider) -> tuple[FakeServer, list[Node], SendingAheadPusher]:
    """35 nodes in the store (four batches of 10), a fake server and a pusher that sends ahead."""
    server = FakeServer()
    nodes = chain([f"turn {i}" for i in range(35)])
    provider.put_many(nodes)
    return server, nodes, SendingAheadPusher(server)


def test_the_next_batch_is_sent_once_this_one_is_acknowledged_while_it_is_recorded(
    provider: LocalProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, nodes, pusher = sending_ahead(provider)
    real_mark = SyncState.mark_pushed

    def mark(self: SyncState, vault: str, batch: Any, *args: Any, **kwargs: Any) -> Any:
        time.sleep(0.01)  # a record that takes a moment, as on a real disk
        try:
            return real_mark(self, vault, batch, *args, **kwargs)
        finally:
            pusher._note("recorded", batch[0][1])  # the record is done

    monkeypatch.setattr(SyncState, "mark_pushed", mark)
    result = run_sync(runner_for(provider, server, pusher, server.pull))
    assert result is not None
    assert result.result == "ok"
    firsts = [nodes[i].hash for i in (0, 10, 20, 30)]
    events = [(what, firsts.index(first)) for what, first, _ in pusher.log]
    # Each batch goes out only after the one before it was acknowledged (parents first), and
    # before the runner is done recording that one; each is recorded after its own answer.
    for n in range(1, 4):
        assert events.index(("send", n)) > events.index(("acked", n - 1))
        assert events.index(("send", n)) < events.index(("recorded", n - 1))
        assert events.index(("recorded", n)) > events.index(("acked", n))
    sent_by = {firsts.index(first): thread for what, first, thread in pusher.log if what == "send"}
    assert sent_by[0] == threading.main_thread().name
    assert all(sent_by[n].startswith("tapes-sync-send") for n in (1, 2, 3))
    assert server.hashes() == [n.hash for n in nodes]
    assert all(count == 1 for count in server.received.values())
    assert SyncState(provider).pending_push_count(VAULT) == 0


def test_a_batch_sent_ahead_but_never_recorded_is_pushed_again_and_counted_once(
    provider: LocalProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner dies recording batch 1 (batch 2 already stored by the server): the next sync
    sends both again, the server keeps one copy, and the store ends exact."""
    server, nodes, pusher = sending_ahead(provider)
    real_mark = SyncState.mark_pushed

    def dies_on_the_second(self: SyncState, vault: str, batch: Any, *a: Any, **k: Any) -> Any:
        if batch[0][1] == nodes[10].hash:
            raise KeyboardInterrupt  # a crash between the answer and its record
        return real_mark(self, vault, batch, *a, **k)

    monkeypatch.setattr(SyncState, "mark_pushed", dies_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        run_sync(runner_for(provider, server, pusher, server.pull))
    time.sleep(0.1)  # let the batch sent ahead land, as it would on a real server
    assert SyncState(provider).pending_push_count(VAULT) == 25
    monkeypatch.setattr(SyncState, "mark_pushed", real_mark)
    runner = runner_for(provider, server, pusher, server.pull)
    result = run_sync(runner)
    assert result is not None
    assert result.result == "ok"
    assert runner.pushed == 25
    assert server.hashes() == [n.hash for n in nodes]  # one copy of each
    assert SyncState(provider).pending_push_count(VAULT) == 0


def test_helper_threads_never_hold_the_process_at_exit_and_drop_what_they_had_not_started() -> None:
    """A helper's thread is a daemon (Python joins a ThreadPoolExecutor's at exit: a request in
    flight after Ctrl-C held the process until its timeout); shut down, it finishes the call it
    is running, cancels the rest and ends; dropped unshut, it ends too."""
    helper = _Helper("tapes-test-helper")
    (thread,) = [t for t in threading.enumerate() if t.name == "tapes-test-helper"]
    assert thread.daemon
    started, gate = threading.Event(), threading.Event()

    def call() -> bool:
        started.set()
        return gate.wait(30)

    running = helper.submit(call)
    queued = helper.submit(int, "7")
    assert started.wait(30)
    helper.shutdown()
    gate.set()
    assert running.result(timeout=30) is True
    with pytest.raises(CancelledError):
        queued.result(timeout=30)
    thread.join(timeout=30)
    assert not thread.is_alive()

    failing = _Helper("tapes-test-dropped")
    (thread,) = [t for t in threading.enumerate() if t.name == "tapes-test-dropped"]
    with pytest.raises(ValueError, match="invalid literal"):
        failing.submit(int, "seven").result(timeout=30)  # raised to whoever takes the answer
    del failing
    gc.collect()
    thread.join(timeout=30)
    assert not thread.is_alive()
