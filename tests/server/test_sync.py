"""Push, pull, status, nodes, ancestry and sessions through the real app."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from litestar.testing import TestClient
from sqlalchemy import func, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from server.db.models import NodeRecord
from server.domain.nodes.services import _isoformat
from tests.server.conftest import User, Vault


def push(user: User, vault: str, envelopes: list[dict[str, Any]]) -> Any:
    return user.post("/api/v1/sync/push", {"vault": vault, "envelopes": envelopes})


def test_push_pull_round_trip_is_byte_exact(alice: User) -> None:
    keys = Vault(alice.vault, alice.identity)
    envelopes = keys.chain(5)
    result = push(alice, alice.vault, envelopes).json()
    assert result["stored"] == [e["node_id"] for e in envelopes]
    assert result["existing"] == []
    assert result["head_seq"] == 5
    page = alice.get(f"/api/v1/sync/pull?vault={alice.vault}&after=0&limit=3").json()
    assert [i["envelope"] for i in page["items"]] == envelopes[:3]
    assert (page["cursor"], page["more"]) == (3, True)
    rest = alice.get(f"/api/v1/sync/pull?vault={alice.vault}&after=3").json()
    assert [i["envelope"] for i in rest["items"]] == envelopes[3:]
    assert (rest["cursor"], rest["more"]) == (5, False)
    # up to date: one small answer
    idle = alice.get(f"/api/v1/sync/pull?vault={alice.vault}&after=5").json()
    assert (idle["items"], idle["cursor"], idle["more"]) == ([], 5, False)
    status = alice.get(f"/api/v1/sync/status?vault={alice.vault}&after=2").json()
    assert status == {
        "vault": alice.vault,
        "head_seq": 5,
        "node_count": 5,
        "after": 2,
        "pending_pull": 3,
    }


def test_a_pulled_node_carries_the_upload_time_the_node_endpoint_shows(
    alice: User, client: TestClient[Any]
) -> None:
    """The pull reads timestamps without the ORM (SQLite's stored text, parsed in C): each one
    reads as the ORM's datetime does, whole seconds included, on both backends."""
    envelopes = Vault(alice.vault, alice.identity).chain(3)
    push(alice, alice.vault, envelopes)
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
    moments = [base, base + timedelta(microseconds=1), base + timedelta(seconds=1.5)]
    with Session(client.app.state.engine) as db, db.begin():
        for envelope, moment in zip(envelopes, moments, strict=True):
            record = db.scalars(select(NodeRecord).where(NodeRecord.node_id == envelope["node_id"]))
            record.one().uploaded_at = moment
    pulled = alice.get(f"/api/v1/sync/pull?vault={alice.vault}").json()["items"]
    shown = [alice.get(f"/api/v1/nodes/{e['node_id']}").json()["uploaded_at"] for e in envelopes]
    assert [item["uploaded_at"] for item in pulled] == shown
    parsed = [datetime.fromisoformat(item["uploaded_at"]) for item in pulled]
    assert [p.replace(tzinfo=p.tzinfo or UTC) for p in parsed] == moments


_STORED_TEXT = sqlite.DATETIME().bind_processor(sqlite.dialect())  # type: ignore[no-untyped-call]


@given(st.datetimes())
def test_a_stored_sqlite_timestamp_reads_as_the_orms_datetime_would(moment: datetime) -> None:
    """The pull edits SQLite's stored text into ISO form rather than parsing it: for every
    moment, what SQLAlchemy stores reads as that moment's ``isoformat()``; other text, and a
    driver's datetime, are parsed."""
    assert _STORED_TEXT is not None
    assert _isoformat(_STORED_TEXT(moment)) == moment.isoformat()
    assert _isoformat(moment) == moment.isoformat()
    aware = moment.replace(tzinfo=UTC)
    assert _isoformat(aware.isoformat()) == aware.isoformat()


def test_push_is_idempotent(alice: User) -> None:
    envelopes = Vault(alice.vault, alice.identity).chain(3)
    push(alice, alice.vault, envelopes[:2])
    again = push(alice, alice.vault, envelopes).json()
    assert again["existing"] == [e["node_id"] for e in envelopes[:2]]
    assert again["stored"] == [envelopes[2]["node_id"]]
    assert again["head_seq"] == 3


def test_a_batch_with_a_missing_parent_stores_nothing(alice: User, client: TestClient[Any]) -> None:
    envelopes = Vault(alice.vault, alice.identity).chain(4)
    response = push(alice, alice.vault, [envelopes[0], envelopes[1], envelopes[3]])
    assert response.status_code == 400
    assert response.json()["type"] == "https://tapes-e2e.dev/problems/missing-parent"
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "push parents before children" in response.json()["detail"]
    status = alice.get(f"/api/v1/sync/status?vault={alice.vault}").json()
    assert (status["head_seq"], status["node_count"]) == (0, 0)
    engine = client.app.state.engine
    with Session(engine) as db:
        assert db.scalar(select(func.count()).select_from(NodeRecord)) == 0


def test_get_node_ancestry_and_sessions(alice: User) -> None:
    keys = Vault(alice.vault, alice.identity)
    trunk = keys.chain(4)
    # a branch off the second node
    parent_hash = None
    hashes = []
    for index in range(4):
        parent_hash, _ = keys.seal(f"turn {index}", parent_hash)
        hashes.append(parent_hash)
    _, branch = keys.seal("regenerated", hashes[1])
    push(alice, alice.vault, [*trunk, branch])
    node = alice.get(f"/api/v1/nodes/{trunk[2]['node_id']}").json()
    assert node["envelope"] == trunk[2]
    path = alice.get(f"/api/v1/nodes/{branch['node_id']}/ancestry").json()["items"]
    assert [n["envelope"]["node_id"] for n in path] == [
        branch["node_id"],
        trunk[1]["node_id"],
        trunk[0]["node_id"],
    ]
    sessions = alice.get(f"/api/v1/sessions?vault={alice.vault}").json()
    assert {s["session_id"] for s in sessions["items"]} == {trunk[3]["node_id"], branch["node_id"]}
    session = alice.get(f"/api/v1/sessions/{trunk[3]['node_id']}").json()["items"]
    assert len(session) == 4


def test_another_user_sees_nothing_and_learns_nothing(alice: User, bob: User) -> None:
    envelopes = Vault(alice.vault, alice.identity).chain(2)
    push(alice, alice.vault, envelopes)
    node_id = envelopes[0]["node_id"]
    absent = "f" * 64
    for path in (
        f"/api/v1/nodes/{node_id}",
        f"/api/v1/nodes/{node_id}/ancestry",
        f"/api/v1/sessions/{node_id}",
    ):
        denied = bob.get(path)
        missing = bob.get(path.replace(node_id, absent))
        assert denied.status_code == missing.status_code == 404
        assert denied.json() == missing.json()
    for path in (
        f"/api/v1/sync/pull?vault={alice.vault}",
        f"/api/v1/sync/status?vault={alice.vault}",
        f"/api/v1/sessions?vault={alice.vault}",
        f"/api/v1/teams/{alice.vault}",
    ):
        denied = bob.get(path)
        missing = bob.get(path.replace(alice.vault, "v_doesnotexist"))
        assert denied.status_code == missing.status_code == 404, path
        assert denied.json() == missing.json()
    pushed = push(bob, alice.vault, Vault(alice.vault, bob.identity).chain(1))
    assert pushed.status_code == 404


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e: e | {"extra": 1}, "unknown field"),
        (lambda e: e | {"node_id": "XYZ"}, "node_id"),
        (lambda e: e | {"ciphertext": "not base64!"}, "ciphertext"),
        (lambda e: e | {"epoch": -1}, "epoch"),
        (lambda e: e | {"team": "v_other"}, "names vault"),
        (lambda e: e | {"nonce": None}, "needs a nonce"),
        (lambda e: e | {"version": 1, "at_seqno": None, "at_hash": None}, "upgrade the client"),
        (lambda e: e | {"at_hash": None}, "chain position"),
        (lambda e: {k: v for k, v in e.items() if k != "author"}, "author"),
    ],
)
def test_malformed_envelopes_are_400_and_store_nothing(
    alice: User, mutate: Any, message: str
) -> None:
    envelope = Vault(alice.vault, alice.identity).chain(1)[0]
    response = push(alice, alice.vault, [mutate(envelope)])
    assert response.status_code == 400
    assert message in response.json()["detail"]
    assert alice.get(f"/api/v1/sync/status?vault={alice.vault}").json()["node_count"] == 0


def test_bad_requests_are_4xx_never_5xx(alice: User, client: TestClient[Any]) -> None:
    h = alice.headers
    cases = [
        client.post("/api/v1/sync/push", content=b"{not json", headers=h),
        client.post("/api/v1/sync/push", json={"vault": alice.vault, "envelopes": []}, headers=h),
        client.post("/api/v1/sync/push", json=[], headers=h),
        client.get("/api/v1/sync/pull?vault=bad%20vault", headers=h),
        client.get(f"/api/v1/sync/pull?vault={alice.vault}&limit=0", headers=h),
        client.get(f"/api/v1/sync/pull?vault={alice.vault}&after=-1", headers=h),
        client.get("/api/v1/nodes/not-hex", headers=h),
        client.post("/auth/login", json={"challenge_id": "x"}),
        client.post("/auth/token/refresh", json={"refresh_token": "short"}),
    ]
    assert [r.status_code for r in cases] == [400] * len(cases)
    for response in cases:
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["detail"]


def test_unknown_fields_anywhere_in_a_request_are_refused(
    alice: User, client: TestClient[Any]
) -> None:
    """A field the protocol does not name is a 400, at the top of a request or inside an
    envelope: nothing the client did not mean is stored, and no old client is misread."""
    envelope = Vault(alice.vault, alice.identity).chain(1)[0]
    h = alice.headers
    cases = [
        client.post("/api/v1/sync/push", headers=h,
                    json={"vault": alice.vault, "envelopes": [envelope], "force": True}),
        client.post("/api/v1/sync/push", headers=h,
                    json={"vault": alice.vault, "envelopes": [{**envelope, "note": "x"}]}),
        client.post("/api/v1/api-keys/", headers=h,
                    json={"vault": alice.vault, "permissions": ["pull"], "admin": True}),
    ]  # fmt: skip
    assert [r.status_code for r in cases] == [400] * len(cases)
    assert alice.get(f"/api/v1/sync/status?vault={alice.vault}").json()["node_count"] == 0


def test_an_oversized_body_is_refused(alice: User, client: TestClient[Any]) -> None:
    huge = b'{"vault": "' + b"x" * (21 * 1024 * 1024) + b'"}'
    response = client.post("/api/v1/sync/push", content=huge, headers=alice.headers)
    assert response.status_code == 413


def test_settings_validate_the_public_url() -> None:
    from server.errors import SettingsError
    from server.settings import Settings

    base = {"TAPES_SERVER_DATABASE_URL": "sqlite:////tmp/x.sqlite"}
    assert Settings.from_env(base).audience == "http://127.0.0.1:8787"
    public = Settings.from_env(base | {"TAPES_SERVER_PUBLIC_URL": "https://tapes.example/"})
    assert public.audience == "https://tapes.example"
    for bad in ("ftp://x", "https://x/?q=1", "not a url"):
        with pytest.raises(SettingsError, match="TAPES_SERVER_PUBLIC_URL"):
            Settings.from_env(base | {"TAPES_SERVER_PUBLIC_URL": bad})


def test_no_tapes_hash_reaches_the_server(
    alice: User, client: TestClient[Any], database_url: str
) -> None:
    """Node IDs are keyed: a guessed plaintext's tapes hash matches nothing the server holds."""
    keys = Vault(alice.vault, alice.identity)
    parent = None
    hashes = []
    envelopes = []
    for index in range(5):
        parent, envelope = keys.seal(f"a well-known system prompt {index}", parent)
        hashes.append(parent)
        envelopes.append(envelope)
    push(alice, alice.vault, envelopes)
    pulled = alice.get(f"/api/v1/sync/pull?vault={alice.vault}").text
    assert not any(h in pulled for h in hashes)
    if database_url.startswith("sqlite"):
        client.app.state.engine.dispose()  # checkpoint nothing away: read db and WAL as they are
        path = database_url.split("///", 1)[1]
        stored = b"".join(Path(p).read_bytes() for p in (path, path + "-wal") if Path(p).exists())
        assert not any(h.encode() in stored for h in hashes)
        assert all(e["node_id"].encode() in stored for e in envelopes)
