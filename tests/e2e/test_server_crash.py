"""kill -9 of the server in the middle of a client's sync: after a restart everything converges,
nothing is lost and nothing is stored twice."""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

import httpx

import keymgmt
from tapes_e2e import account, identity
from tapes_e2e.client import ApiClient
from tapes_e2e.providers.local import LocalProvider
from tapes_e2e.remote_sync import vault_runner
from tapes_e2e.sync.engine import Event, PushAcked
from tapes_e2e.sync.worker import run_sync
from tapes_e2e.vaults import Trust
from tests.conftest import chain
from tests.e2e.conftest import LiveServer, ServerFactory

FAST = keymgmt.KdfParams(time_cost=1, memory_kib=8 * 1024, lanes=1)


def _kill(server: LiveServer) -> None:
    assert server.process is not None
    os.killpg(os.getpgid(server.process.pid), signal.SIGKILL)
    server.process.wait()
    server.process = None


def test_kill_9_of_the_server_during_a_push_converges(
    live_server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = live_server_factory(workers=1)
    database = Path(server.database_url.split("///", 1)[1])
    home = tmp_path / "client"
    who = identity.create_identity(home, "crash test passphrase", params=FAST, floor=FAST)
    api = ApiClient(httpx.Client(timeout=30), api_url=server.base_url)
    session = api.login(who, handle="crash")
    account.ensure_personal_vault(api, session, Trust(home, who))
    with sqlite3.connect(database) as db:  # the test is about crashes, not plan limits
        db.execute("UPDATE teams SET tier = 'pro'")
    nodes = [n for i in range(60) for n in chain([f"session {i} q", f"session {i} a"] * 25)]
    with LocalProvider(home / "tapes.sqlite") as store:
        store.put_many(nodes)
        acked: list[int] = []

        def after_ack(event: Event) -> None:
            if isinstance(event, PushAcked):
                acked.append(event.count)
                if len(acked) == 3:  # the server dies with batches still to come
                    _kill(server)

        trust = Trust(home, who, session.personal_vault)
        runner = vault_runner(store, api, session.personal_vault, trust, on_progress=after_ack)
        runner._batch_size = 50  # many batches, so the kill lands mid-sync
        first = run_sync(runner)
        assert first is not None
        assert first.result == "offline", first
        assert runner.pushed == 150  # three batches were acknowledged before the kill
        server.start()  # same database file
        second = run_sync(runner)
        assert second is not None
        assert second.result == "ok", second
        assert runner.state.pending_push_count(session.personal_vault) == 0
    with sqlite3.connect(database) as db:
        stored = [row[0] for row in db.execute("SELECT node_id FROM nodes ORDER BY seq")]
        seqs = [row[0] for row in db.execute("SELECT seq FROM nodes ORDER BY seq")]
    keys = runner_keys(home, api, session.personal_vault, who)
    expected = {keys.node_id(1, n.hash) for n in nodes}
    assert len(stored) == len(set(stored)) == len(nodes)  # nothing lost, nothing twice
    assert set(stored) == expected
    assert seqs == list(range(1, len(nodes) + 1))  # no gap, no duplicate sequence number


def runner_keys(home: Path, api: ApiClient, vault: str, who: keymgmt.Identity) -> keymgmt.TeamKeys:
    return account.open_vault(api, vault, Trust(home, who, vault)).content_keys()
