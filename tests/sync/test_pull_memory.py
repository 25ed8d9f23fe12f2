"""Memory of a pull is bounded by the page size, not by the number of nodes pulled.

The real app in-process (SQLite), a vault of small sealed nodes, and a client pulling them page
by page through ``vault_runner`` into a fresh store while ``tracemalloc`` watches. The memory held
by what the client's code allocated, once four times as many nodes are pulled, must stay close to
what it held after the first quarter: anything the pull kept per node (a list of pulled nodes, a
dict of hashes, responses) would grow it by about the size of the extra nodes (keeping only the
hashes of the extra 3,000 nodes grows it by ~350 KB, over the slack).
``bench/bench_pull_memory.py`` measures the same on a real server with RSS, up to 1M nodes.
"""

from __future__ import annotations

import logging
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

import keymgmt
from tapes_e2e import account
from tapes_e2e.client import ApiClient
from tapes_e2e.envelopes import seal_envelope
from tapes_e2e.node import Node
from tapes_e2e.providers.local import LocalProvider
from tapes_e2e.remote_sync import vault_runner
from tapes_e2e.store import database
from tapes_e2e.sync.engine import Event, PulledPage
from tapes_e2e.sync.worker import run_sync
from tapes_e2e.vaults import Trust, VaultAccess
from tests.conftest import chain
from tests.server import conftest as server
from tests.server.conftest import AUDIENCE

# The server's fixtures, found by pytest by name: the real app, here on SQLite only.
database_url, client, clock = server.database_url, server.client, server.clock

QUARTER = 1000  # nodes pulled for the 1x figure; the vault holds 4x as many
PAGE = 200
SESSION = 100
# Allowed growth from 1x to 4x. Bounded caches keyed by URL (urllib's urlsplit,
# litestar's query strings, in-process here) grow ~2 KB a request, 15 requests; keeping the
# 3,000 extra nodes would cost ~3 MB (a pulled Node is ~1 KB of objects), even their hashes alone
# ~400 KB.
SLACK = 150 * 1024


def small_sessions(total: int) -> Iterator[Node]:
    """``total`` nodes of a few hundred bytes, in sessions of ``SESSION``."""
    for start in range(0, total, SESSION):
        texts = [f"turn {i} of session {start}: a short line of text" for i in range(SESSION)]
        yield from chain(texts[: total - start])


def seed(api: ApiClient, access: VaultAccess, who: keymgmt.Identity, total: int) -> None:
    """Seal ``total`` nodes into the vault through the push endpoint, 1,000 at a time."""
    nodes = list(small_sessions(total))
    for start in range(0, total, 1000):
        envelopes = [
            seal_envelope(n, state=access.state, keys=access.content_keys(), author=who).to_dict()
            for n in nodes[start : start + 1000]
        ]
        assert len(api.push(access.vault, envelopes).stored) == len(envelopes)


# Only what the client's own code allocates is counted: the app runs in this process too, and
# its caches (and other tests' leftovers) are not the client's memory.
CLIENT_CODE = [tracemalloc.Filter(True, "*/tapes_e2e/*"), tracemalloc.Filter(True, "*/keymgmt/*")]


def _client_bytes() -> int:
    snapshot = tracemalloc.take_snapshot().filter_traces(CLIENT_CODE)
    return sum(stat.size for stat in snapshot.statistics("filename"))


def pull_held(api: ApiClient, vault: str, trust: Trust, path: Path) -> tuple[int, int]:
    """Pull the whole vault into a fresh store; the memory held by objects the client's code
    allocated, after ``QUARTER`` nodes and at the end, counted from the start of the pull."""
    held: dict[str, int] = {}

    def on_progress(event: Event) -> None:
        if isinstance(event, PulledPage) and runner.pulled >= QUARTER and "1x" not in held:
            held["1x"] = _client_bytes()

    with LocalProvider(path) as store:
        runner = vault_runner(store, api, vault, trust, on_progress=on_progress)
        runner._page_size = PAGE
        tracemalloc.start()
        try:
            result = run_sync(runner)
            held["4x"] = _client_bytes()
        finally:
            tracemalloc.stop()
    assert result is not None
    assert (result.result, runner.pulled) == ("ok", 4 * QUARTER)
    return held["1x"], held["4x"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_memory_of_a_pull_does_not_grow_with_the_node_count(
    client: TestClient[Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # pytest keeps every captured log record: httpx's line per request would be a leak of ours.
    caplog.set_level(logging.WARNING, logger="httpx")
    who = keymgmt.generate_identity()
    api = ApiClient(client, api_url=AUDIENCE)
    session = api.login(who, handle="mem")
    access = account.ensure_personal_vault(api, session, Trust(tmp_path / "laptop", who))
    seed(api, access, who, 4 * QUARTER)
    desktop = Trust(tmp_path / "desktop", who, access.vault)
    one, four = pull_held(api, access.vault, desktop, tmp_path / "desktop.sqlite")
    assert four - one < SLACK, f"{one / 1024:.0f} KiB held after 1x, {four / 1024:.0f} KiB at 4x"


def test_bulk_writes_run_without_the_memory_map(tmp_path: Path) -> None:
    """Inserts through the map leave every index page they touch resident (RSS ~1 KB a node);
    a write transaction drops the map and the connection gets it back for reads after."""
    with LocalProvider(tmp_path / "tapes.sqlite") as store:
        with database.write(store.engine) as conn:
            inside = database.driver(conn).execute("PRAGMA mmap_size").fetchone()[0]
        with store.engine.connect() as conn:
            after = database.driver(conn).execute("PRAGMA mmap_size").fetchone()[0]
    assert (inside, after) == (0, database.MMAP_BYTES)
