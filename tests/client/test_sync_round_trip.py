"""Sessions recorded on one machine, synced through the real app, pulled on a second machine."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from server.db.models import NodeRecord
from server.domain.nodes.stored import as_json
from tapes_e2e.providers.local import LocalProvider
from tests.client.conftest import Tapes
from tests.conftest import chain
from tests.server.conftest import AUDIENCE

pytestmark = pytest.mark.server_backends  # the round trip on both server backends


def record(home: Path) -> list[str]:
    trunk = chain(["Why is the build red?", "A flaky test.", "Which one?", "test_sync."])
    branch = chain(["Regenerated: test_sync, again."], parent=trunk[2])
    with LocalProvider(home / "tapes.sqlite") as store:
        store.put_many([*trunk, *branch])
    return sorted(n.hash for n in [*trunk, *branch])


def hashes(home: Path) -> list[str]:
    with sqlite3.connect(home / "tapes.sqlite") as db:
        return sorted(h for (h,) in db.execute("SELECT hash FROM nodes"))


def test_two_machines_of_one_user_converge(tapes: Tapes, tmp_path: Path) -> None:
    assert tapes("laptop", "auth", "login", "--server", AUDIENCE, "--handle", "alice")[0] == 0
    recorded = record(tmp_path / "laptop")
    code, out, err = tapes("laptop", "storage", "sync", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert (report["pushed"], report["pending_push"], report["rejected"]) == (5, 0, [])
    assert report["pulled"] == 0  # its own nodes are not downloaded back
    # The second machine: the same identity (restored from a recovery kit, say), a fresh store.
    (tmp_path / "desktop").mkdir()
    shutil.copy(tmp_path / "laptop" / "identity.key", tmp_path / "desktop" / "identity.key")
    assert tapes("desktop", "auth", "login", "--server", AUDIENCE)[0] == 0
    code, out, err = tapes("desktop", "storage", "sync", "--json")
    assert code == 0, err
    assert json.loads(out)["pulled"] == 5
    assert hashes(tmp_path / "desktop") == recorded
    assert tapes("desktop", "verify")[0] == 0
    # both export the same sessions, byte for byte
    laptop = tapes("laptop", "session", "export")[1]
    desktop = tapes("desktop", "session", "export")[1]
    assert sorted(laptop.splitlines()) == sorted(desktop.splitlines())
    # nothing new: a second sync moves nothing
    code, out, _ = tapes("desktop", "storage", "sync", "--json")
    assert (code, json.loads(out)["pulled"], json.loads(out)["pushed"]) == (0, 0, 0)


def test_a_tampered_envelope_is_refused_and_not_stored(
    tapes: Tapes, tmp_path: Path, client: TestClient[Any]
) -> None:
    assert tapes("laptop", "auth", "login", "--server", AUDIENCE, "--handle", "alice")[0] == 0
    record(tmp_path / "laptop")
    assert tapes("laptop", "storage", "sync")[0] == 0
    # The hostile server flips one byte of one stored ciphertext.
    with Session(client.app.state.engine) as db, db.begin():
        victim = db.scalars(select(NodeRecord).order_by(NodeRecord.seq.desc())).first()
        assert victim is not None
        envelope = json.loads(as_json(victim.envelope))
        text = envelope["ciphertext"]
        envelope["ciphertext"] = ("B" if text[5] == "A" else "A").join([text[:5], text[6:]])
        db.execute(
            update(NodeRecord)
            .where(NodeRecord.node_id == victim.node_id)
            .values(envelope=json.dumps(envelope).encode())
        )
    (tmp_path / "desktop").mkdir()
    shutil.copy(tmp_path / "laptop" / "identity.key", tmp_path / "desktop" / "identity.key")
    assert tapes("desktop", "auth", "login", "--server", AUDIENCE)[0] == 0
    code, _, err = tapes("desktop", "storage", "sync")
    assert code == 1
    assert "tapes: error: integrity: node" in err
    assert len(hashes(tmp_path / "desktop")) == 4  # the other four, and only those


def test_storage_status_reports_sync_counts_and_a_failing_server(
    tapes: Tapes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tapes("laptop", "auth", "login", "--server", AUDIENCE, "--handle", "alice")[0] == 0
    record(tmp_path / "laptop")
    code, out, _ = tapes("laptop", "storage", "status", "--json")
    sync = json.loads(out)["sync"]
    assert code == 0
    assert (sync["pending_push"], sync["synced"], sync["server_reachable"]) == (5, 0, True)
    assert tapes("laptop", "storage", "sync")[0] == 0
    sync = json.loads(tapes("laptop", "storage", "status", "--json")[1])["sync"]
    assert (sync["pending_push"], sync["synced"], sync["pending_pull"]) == (0, 5, 0)
    assert sync["last_result"] == "ok"
    # the server goes away: status says so and exits non-zero; the local store keeps working
    import httpx

    from tapes_e2e import context

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    monkeypatch.setattr(
        context, "http_factory", lambda _url: httpx.Client(transport=httpx.MockTransport(down))
    )
    code, out, _ = tapes("laptop", "storage", "status")
    assert code == 1
    assert "UNREACHABLE (working offline)" in out
    assert tapes("laptop", "session", "list")[0] == 0
    code, _, err = tapes("laptop", "storage", "sync")
    assert code == 1
    assert "offline" in err or "cannot reach" in err


def test_an_up_to_date_sync_is_one_request(
    tapes: Tapes, tmp_path: Path, client: TestClient[Any]
) -> None:
    assert tapes("laptop", "auth", "login", "--server", AUDIENCE, "--handle", "alice")[0] == 0
    record(tmp_path / "laptop")
    assert tapes("laptop", "storage", "sync")[0] == 0
    sent: list[str] = []
    client.event_hooks["request"].append(lambda request: sent.append(request.url.path))
    assert tapes("laptop", "storage", "sync")[0] == 0
    assert sent == ["/api/v1/sync/pull"]
