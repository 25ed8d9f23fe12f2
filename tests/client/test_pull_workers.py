"""Pulled pages opened, and batches sealed, in worker processes (``tapes_e2e.opening``,
``tapes_e2e.sealing``): the same rows and the same refusals as in the runner's thread, a worker
that dies costs nothing but time, a page fetched under keys that have since changed is opened
again here, and Ctrl-C is the parent's to handle. Real worker processes throughout
(forkserver), the real app behind the CLI."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

import keymgmt
from tapes_e2e import context, opening
from tapes_e2e.context import Settings
from tapes_e2e.envelopes import open_envelope
from tapes_e2e.opening import Opening, PageOpener, open_items
from tapes_e2e.protocol import AnyPullPage, EnvelopeWire, PackedPullPage, PullPage
from tapes_e2e.providers.local import LocalProvider
from tapes_e2e.remote_sync import VaultHolder
from tapes_e2e.sealing import BatchSealer
from tapes_e2e.store.syncstate import SyncState
from tapes_e2e.sync import worker
from tapes_e2e.workpool import MAX_WORKERS, TWO_CORE_PULL_PAGES, WorkerPool, worker_count
from tests.client.conftest import Tapes
from tests.client.test_teams import ok, record
from tests.client.wire import json_twin
from tests.conftest import chain
from tests.server.conftest import AUDIENCE

PAGE = 4
OPENERS: list[PageOpener] = []  # every opener a pull used (kept alive: are its workers gone?)


@pytest.fixture
def workers(monkeypatch: pytest.MonkeyPatch) -> list[Opening]:
    """One worker process per pull, small pages; every page the runner took, as it took it."""
    monkeypatch.setenv("TAPES_SYNC_WORKERS", "1")
    monkeypatch.setattr(worker, "BATCH_SIZE", PAGE)
    monkeypatch.setattr(worker, "PAGE_SIZE", PAGE)
    taken: list[Opening] = []
    real = PageOpener.finish

    def finish(self: PageOpener, fetched: Opening, *args: Any) -> opening.Opened:
        taken.append(fetched)
        OPENERS.append(self)
        return real(self, fetched, *args)

    monkeypatch.setattr(PageOpener, "finish", finish)
    return taken


def two_machines(tapes: Tapes, tmp_path: Path) -> tuple[Path, Path]:
    ok(tapes("laptop", "auth", "login", "--server", AUDIENCE, "--handle", "alice"))
    (tmp_path / "desktop").mkdir()
    key = (tmp_path / "laptop" / "identity.key").read_bytes()
    (tmp_path / "desktop" / "identity.key").write_bytes(key)
    ok(tapes("desktop", "auth", "login", "--server", AUDIENCE))
    return tmp_path / "laptop", tmp_path / "desktop"


def stored(home: Path) -> list[Any]:
    with LocalProvider(home / "tapes.sqlite") as store:
        return sorted(store.list(), key=lambda n: n.hash)


def test_a_pull_opens_its_pages_in_worker_processes_and_stores_the_same_nodes(
    tapes: Tapes, tmp_path: Path, workers: list[Opening]
) -> None:
    laptop, desktop = two_machines(tapes, tmp_path)
    for i in range(12):  # 48 nodes: 12 pages
        record(laptop, *[f"session {i} turn {j}" for j in range(4)])
    ok(tapes("laptop", "storage", "sync"))
    # The workers start with the first page that says more; the pages fetched once they are up
    # are opened there. Slow the pull a little so that they are up before it ends.
    real_store = SyncState.store_pulled

    def slow_store(self: Any, *args: Any, **kwargs: Any) -> int:
        time.sleep(0.05)
        return real_store(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SyncState, "store_pulled", slow_store)
        ok(tapes("desktop", "storage", "sync"))
    in_workers = [taken for taken in workers if taken.parts]
    assert in_workers, "no page was opened in a worker process"
    assert len(workers) >= 12
    assert stored(desktop) == stored(laptop)
    # The round is over: its workers, which held the vault's keys, were shut down with it.
    assert OPENERS
    assert not any(used.pool.running for used in OPENERS)  # the runner closed the puller


@pytest.mark.parametrize("packed", [True, False], ids=["msgpack", "json"])
def test_a_worker_refuses_an_altered_envelope_exactly_as_the_runner_would(
    packed: bool, tapes: Tapes, tmp_path: Path
) -> None:
    """The same page, altered in one envelope, opened in a worker and here: the same rows, the
    same one-line refusal; in either wire form (a JSON-only server's page decoded as JSON)."""
    laptop, _ = two_machines(tapes, tmp_path)
    for i in range(3):
        record(laptop, *[f"session {i} turn {j}" for j in range(3)])
    ok(tapes("laptop", "storage", "sync"))
    raw, page, access = fetch_page(tapes, laptop)
    assert isinstance(page, PackedPullPage)  # the client asks for the binary wire
    wire = msgspec.msgpack.decode(raw)  # plain values: each envelope is an array
    envelope = wire["items"][4]["envelope"]
    at = [f.name for f in msgspec.structs.fields(keymgmt.PackedEnvelope)].index("ciphertext")
    envelope[at] = envelope[at][:7] + bytes([envelope[at][7] ^ 1]) + envelope[at][8:]
    raw = msgspec.msgpack.encode(wire)
    page = msgspec.msgpack.decode(raw, type=PackedPullPage)
    if not packed:
        page = json_twin(page)
        raw = msgspec.json.encode(page)
    state, keys = access
    here = open_items(page.items, state, keys)
    opener = PageOpener(WorkerPool(2))
    try:
        opened = opened_in_workers(opener, page, raw, state, keys)
    finally:
        opener.close()
    assert opened == here
    rows, rejected = opened
    assert len(rows) == len(page.items) - 1
    node_id = page.items[4].envelope.node_id
    assert rejected == [f"integrity: node {node_id[:16]}… failed verification and was not stored"]


def test_a_dead_worker_or_changed_keys_mean_the_page_is_opened_here(
    tapes: Tapes, tmp_path: Path
) -> None:
    laptop, _ = two_machines(tapes, tmp_path)
    record(laptop, "one", "two", "three")
    ok(tapes("laptop", "storage", "sync"))
    raw, page, (state, keys) = fetch_page(tapes, laptop)
    here = open_items(page.items, state, keys)
    opener = PageOpener(WorkerPool(1))
    try:
        assert opened_in_workers(opener, page, raw, state, keys) == here
        # The keys changed after the page went out (the chain moved: a removal, a rotation):
        # the workers' rows are not used, the page is opened again under the keys of now. Here
        # those hold no key of the page's epoch, so every envelope is refused.
        other = type(keys)(keys.team, keys.vault_id_key, {})
        fetched = started(opener, page, raw, state, keys)
        assert fetched.parts
        rows, rejected = opener.finish(fetched, state, other)
        assert (rows, len(rejected)) == ([], len(page.items))
        # a worker killed with the page in hand: the page is opened here, and so are the next
        for pid in worker_pids(opener):
            os.kill(pid, signal.SIGKILL)
        fetched = opener.start(page, raw, state, keys)
        assert opener.finish(fetched, state, keys) == here
        assert opener.pool.workers == 0
        assert not opener.start(page, raw, state, keys).parts
    finally:
        opener.close()


def test_workers_leave_ctrl_c_to_their_parent_and_are_gone_after_close(
    tapes: Tapes, tmp_path: Path
) -> None:
    laptop, _ = two_machines(tapes, tmp_path)
    record(laptop, "one", "two")
    ok(tapes("laptop", "storage", "sync"))
    raw, page, (state, keys) = fetch_page(tapes, laptop)
    opener = PageOpener(WorkerPool(1))
    try:
        opened_in_workers(opener, page, raw, state, keys)
        pids = worker_pids(opener)
        assert all(ignores_sigint(pid) for pid in pids)  # what the pool's initializer set
        for pid in pids:
            os.kill(pid, signal.SIGINT)  # what a terminal's Ctrl-C sends the whole group
        time.sleep(1.0)  # time enough for a worker that did not ignore it to die of it
        assert all(alive(pid) for pid in pids)
        assert opened_in_workers(opener, page, raw, state, keys) == open_items(
            page.items, state, keys
        )
        assert worker_pids(opener) == pids  # the same processes, still serving
    finally:
        opener.close()
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in pids)


def test_the_number_of_workers_follows_the_cores_and_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TAPES_SYNC_WORKERS")
    for cores, expected in ((1, 0), (2, 1), (3, 2), (64, MAX_WORKERS), (None, 0)):
        monkeypatch.setattr(os, "cpu_count", lambda cores=cores: cores)
        assert worker_count() == expected
        pool = WorkerPool()
        # two cores (or fewer): long pulls only, no sealing; more: both from the start
        assert (pool.seals, pool.pull_pages_first) == (
            (False, TWO_CORE_PULL_PAGES) if (cores or 1) <= 2 else (True, 0)
        )
    for setting, expected in (("0", 0), ("3", 3), ("99", MAX_WORKERS), ("many", 0)):
        monkeypatch.setenv("TAPES_SYNC_WORKERS", setting)
        assert worker_count() == expected


# --- helpers ----------------------------------------------------------------------------------


def fetch_page(tapes: Tapes, home: Path) -> tuple[bytes, AnyPullPage, tuple[Any, Any]]:
    """The vault's first page as the server sends it, and ``home``'s verified chain state and
    content keys for it, through the product's own login and holder."""
    del tapes  # its fixture routes the product's HTTP to the app
    settings = Settings.resolve(config_dir=home, db=None, debug=False)
    linked = context.connect(settings)
    with LocalProvider(home / "tapes.sqlite") as store:
        holder = VaultHolder(linked.api, SyncState(store), linked.vault, linked.trust)
    page, raw = linked.api.pull_with_bytes(linked.vault, 0, 1000)
    return raw, page, (holder.access.state, holder.access.content_keys())


def started(opener: PageOpener, page: AnyPullPage, raw: bytes, state: Any, keys: Any) -> Opening:
    """Start opening ``page`` once the workers are up (they start with a page that says more)."""
    more = msgspec.structs.replace(page, more=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        fetched = opener.start(more, raw, state, keys)
        if fetched.parts:
            return fetched
        time.sleep(0.05)
    raise AssertionError("the worker processes did not start within 30 s")


def opened_in_workers(
    opener: PageOpener, page: AnyPullPage, raw: bytes, state: Any, keys: Any
) -> opening.Opened:
    return opener.finish(started(opener, page, raw, state, keys), state, keys)


def worker_pids(opener: PageOpener) -> set[int]:
    pids = opener.pool.pids()
    assert pids
    return pids


def ignores_sigint(pid: int) -> bool:
    """Whether process ``pid`` has SIGINT ignored (its ``SigIgn`` mask in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    raise AssertionError(f"no SigIgn line for process {pid}")


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, exited but not reaped yet, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # gone before, or while, it was read
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def test_a_batch_sealed_in_worker_processes_opens_to_the_same_nodes(
    tapes: Tapes, tmp_path: Path
) -> None:
    """Sealing in workers: every envelope opens, here, to its node, under the vault's keys; a
    dead worker means the batch is sealed here."""
    laptop, _ = two_machines(tapes, tmp_path)
    record(laptop, "one", "two")
    ok(tapes("laptop", "storage", "sync"))
    _, _, (state, keys) = fetch_page(tapes, laptop)
    nodes = [n for i in range(30) for n in chain([f"sealed {i} a", f"sealed {i} b"])]
    author = context.connect(Settings.resolve(config_dir=laptop, db=None, debug=False)).identity
    sealer = BatchSealer(WorkerPool(2))
    try:
        deadline = time.monotonic() + 30
        while not sealer.pool.ready(start=True) and time.monotonic() < deadline:
            time.sleep(0.05)
        for kill in (False, True):
            if kill:
                for pid in sealer.pool.pids():
                    os.kill(pid, signal.SIGKILL)
            ids, envelopes = sealer.seal(nodes, {}, state, keys, author)
            opened = [
                open_envelope(msgspec.json.decode(e, type=EnvelopeWire), state=state, keys=keys)
                for e in envelopes
            ]
            assert opened == nodes
            assert ids == [keys.node_id(state.epoch, n.hash) for n in nodes]
        assert sealer.pool.workers == 0  # the dead worker's batch, and the rest, sealed here
    finally:
        sealer.pool.close()


def test_on_two_cores_a_pull_starts_its_workers_only_when_it_is_long() -> None:
    pool = WorkerPool(1)
    pool.pull_pages_first = 3
    opener = PageOpener(pool)
    page = PullPage(vault="v", items=[], cursor=0, more=True)
    state: Any = None
    try:
        for _ in range(3):
            opener.start(page, b"", state, state)
            assert not pool.running
        opener.start(page, b"", state, state)
        assert pool.running
        opener.close()  # the round ends: the next pull counts its pages afresh
        opener.start(page, b"", state, state)
        assert not pool.running
    finally:
        opener.close()
