"""Plan limits and retention, with the RFC's plans switched on (``TAPES_SERVER_PLANS=rfc``)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import msgspec
import pytest
from litestar.testing import TestClient
from sqlalchemy.orm import Session

from keymgmt import EnvelopeWire
from server.db.models import Team
from server.domain.nodes.stored import store_form
from server.plans import TIERS, UNLIMITED, Tier, apply_retention, expiring, limits
from tests.server.conftest import Clock, User, Vault, b64
from tests.server.test_teams import TeamKit, chain_length

pytestmark = pytest.mark.plans("rfc")


def test_free_plan_allows_100_new_sessions_a_month(alice: User, clock: Clock) -> None:
    keys = Vault(alice.vault, alice.identity)
    roots = [keys.seal(f"session {i}")[1] for i in range(100)]
    assert (
        alice.post("/api/v1/sync/push", {"vault": alice.vault, "envelopes": roots}).status_code
        == 200
    )
    _, one_more = keys.seal("session 101")
    refused = alice.post("/api/v1/sync/push", {"vault": alice.vault, "envelopes": [one_more]})
    assert refused.status_code == 402
    assert "100 new sessions a month" in refused.json()["detail"]
    # continuing an existing session is not a new session
    parent_hash, _ = keys.seal("session 0")
    _, child = keys.seal("a reply", parent_hash)
    assert (
        alice.post("/api/v1/sync/push", {"vault": alice.vault, "envelopes": [child]}).status_code
        == 200
    )
    # next month the count starts again
    clock.advance(days=31)
    alice.relogin()
    assert (
        alice.post("/api/v1/sync/push", {"vault": alice.vault, "envelopes": [one_more]}).status_code
        == 200
    )


def test_retention_deletes_what_the_free_plan_no_longer_keeps(
    alice: User, clock: Clock, client: TestClient[Any]
) -> None:
    keys = Vault(alice.vault, alice.identity)
    old = keys.chain(3)
    alice.post("/api/v1/sync/push", {"vault": alice.vault, "envelopes": old})
    clock.advance(days=20)
    alice.relogin()
    _, fresh = keys.seal("recent session")
    alice.post("/api/v1/sync/push", {"vault": alice.vault, "envelopes": [fresh]})
    clock.advance(days=11)  # the first three are now 31 days old, the last one 11
    with Session(client.app.state.engine) as db, db.begin():
        expired = expiring(db, clock(), "rfc")
        assert apply_retention(db, clock(), "rfc") == 3
    assert [(e.vault_id, e.tier, e.envelopes) for e in expired] == [(alice.vault, "free", 3)]
    alice.relogin()
    page = alice.get(f"/api/v1/sync/pull?vault={alice.vault}").json()
    assert [i["envelope"]["node_id"] for i in page["items"]] == [fresh["node_id"]]
    assert alice.get(f"/api/v1/sync/status?vault={alice.vault}").json()["node_count"] == 1


def test_a_push_past_the_vaults_byte_quota_is_refused_whole(
    alice: User, clock: Clock, client: TestClient[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(TIERS, "free", dataclasses.replace(TIERS["free"], bytes_per_vault=20_000))
    keys = Vault(alice.vault, alice.identity)
    first = keys.chain(4, size=1_000)
    assert push(alice, first).status_code == 200
    held = _bytes_stored(client, alice.vault)
    assert held == sum(len(store_form(msgspec.convert(e, EnvelopeWire))) for e in first)
    _, big = keys.seal("a large one", size=0)
    big = dict(big, ciphertext=b64(os.urandom(20_000)), padded_size=20_000 - 16)
    refused = push(alice, [big])
    assert refused.status_code == 402
    detail = refused.json()["detail"]
    assert f"vault {alice.vault} holds" in detail
    assert "of the free plan's 19.5 KiB" in detail
    status = alice.get(f"/api/v1/sync/status?vault={alice.vault}").json()
    assert (status["node_count"], _bytes_stored(client, alice.vault)) == (4, held)
    # retention frees the space it deletes
    clock.advance(days=31)
    alice.relogin()
    with Session(client.app.state.engine) as db, db.begin():
        assert apply_retention(db, clock(), "rfc") == 4
    assert _bytes_stored(client, alice.vault) == 0
    assert push(alice, [keys.seal("fits again")[1]]).status_code == 200


def push(user: User, envelopes: list[dict[str, Any]]) -> Any:
    return user.post("/api/v1/sync/push", {"vault": user.vault, "envelopes": envelopes})


def _bytes_stored(client: TestClient[Any], vault: str) -> int:
    with Session(client.app.state.engine) as db:
        team = db.get(Team, vault)
        assert team is not None
        return team.bytes_stored


def test_limits_are_the_rfcs_tiers_only_with_plans_rfc() -> None:
    assert limits("rfc", "free") == TIERS["free"]
    assert limits("rfc", "unknown") == TIERS["free"]
    assert limits("rfc", "enterprise") == TIERS["enterprise"]
    assert {limits("off", name) for name in (*TIERS, "unknown")} == {UNLIMITED}
    assert Tier(None, None, None, None, None) == UNLIMITED


@pytest.mark.plans("off")
def test_with_plans_off_a_free_vault_is_unlimited_and_nothing_expires(
    alice: User, bob: User, clock: Clock, client: TestClient[Any]
) -> None:
    keys = Vault(alice.vault, alice.identity)
    roots = [keys.seal(f"session {i}")[1] for i in range(101)]
    pushed = alice.post("/api/v1/sync/push", {"vault": alice.vault, "envelopes": roots})
    assert pushed.status_code == 200, pushed.text
    assert len(pushed.json()["stored"]) == 101
    # a free owner makes a second team, and a team takes a fourth member
    assert TeamKit(alice, clock).response.status_code == 201
    kit = TeamKit(alice, clock)
    assert kit.response.status_code == 201
    for member in (bob, User(client, "carol"), User(client, "dave")):
        assert kit.add(member).status_code == 200
    assert chain_length(client, kit.team_id) == 4
    # 31 days later nothing has expired, and retention deletes nothing
    clock.advance(days=31)
    with Session(client.app.state.engine) as db, db.begin():
        assert expiring(db, clock(), "off") == []
        assert apply_retention(db, clock(), "off") == 0
        assert expiring(db, clock(), "rfc") != []  # the same data, with the RFC's plans
    alice.relogin()
    assert alice.get(f"/api/v1/sync/status?vault={alice.vault}").json()["node_count"] == 101
