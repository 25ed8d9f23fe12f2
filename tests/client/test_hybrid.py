"""The hybrid provider: put is local, sync happens in the background and on close."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from litestar.testing import TestClient

from tapes_e2e import account, context
from tapes_e2e.context import Settings
from tapes_e2e.identity import unlock
from tapes_e2e.providers.base import SyncProvider
from tapes_e2e.providers.hybrid import HybridProvider
from tapes_e2e.providers.local import LocalProvider
from tapes_e2e.remote_sync import vault_runner
from tapes_e2e.vaults import Trust
from tests.client.conftest import Tapes
from tests.conftest import chain
from tests.server.conftest import AUDIENCE


def open_hybrid(home: Path, *, background: bool) -> HybridProvider:
    settings = Settings.resolve(config_dir=home, db=None, debug=False)
    session = account.load_session(home)
    assert session is not None
    identity = unlock(home, use_os_keyring=False)
    api = context.api_client(settings, session.server)
    store = LocalProvider(settings.database.path)
    trust = Trust(home, identity, session.personal_vault)
    runner = vault_runner(store, api, session.personal_vault, trust, sync_interval=3600)
    return HybridProvider(store, runner, background=background, close_timeout=20)


def server_count(client: TestClient[Any]) -> int:
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from server.db.models import NodeRecord

    with Session(client.app.state.engine) as db:
        return int(db.scalar(select(func.count()).select_from(NodeRecord)) or 0)


def test_put_is_local_and_sync_pushes(
    tapes: Tapes, tmp_path: Path, client: TestClient[Any]
) -> None:
    assert tapes("h", "auth", "login", "--server", AUDIENCE, "--handle", "hana")[0] == 0
    provider = open_hybrid(tmp_path / "h", background=False)
    assert isinstance(provider, SyncProvider)
    nodes = chain(["one", "two", "three"])
    assert [provider.put(n) for n in nodes] == [True, True, True]
    assert server_count(client) == 0  # nothing left the machine on put
    assert provider.sync_status().pending_push == 3
    provider.sync()
    assert server_count(client) == 3
    status = provider.sync_status()
    assert (status.pending_push, status.last_sync_at is not None) == (0, True)
    assert [n.hash for n in provider.ancestry(nodes[-1].hash)] == [n.hash for n in reversed(nodes)]
    provider.close()


def test_close_syncs_what_is_pending(tapes: Tapes, tmp_path: Path, client: TestClient[Any]) -> None:
    assert tapes("h", "auth", "login", "--server", AUDIENCE, "--handle", "hana")[0] == 0
    provider = open_hybrid(tmp_path / "h", background=True)
    assert provider.runner  # the worker's first round ran or is running
    for node in chain(["written while the worker sleeps", "and another"]):
        provider.put(node)
    provider.close()  # sync_on_close: one bounded round
    assert server_count(client) == 2


def test_rows_written_by_another_program_are_synced(
    tapes: Tapes, tmp_path: Path, client: TestClient[Any]
) -> None:
    """Go tapes' proxy writes into the same file; the next round finds its rows by rowid."""
    assert tapes("h", "auth", "login", "--server", AUDIENCE, "--handle", "hana")[0] == 0
    provider = open_hybrid(tmp_path / "h", background=False)
    provider.sync()
    from tapes_e2e.store.rows import INSERT_SQL, node_to_row

    go_nodes = chain(["recorded by the Go proxy", "its answer"])
    with sqlite3.connect(tmp_path / "h" / "tapes.sqlite") as other:
        other.execute("PRAGMA foreign_keys = ON")
        other.executemany(INSERT_SQL, [node_to_row(n) for n in go_nodes])
    provider.sync()
    assert server_count(client) == 2
    provider.close()
