"""Snapshots of what the server receives and stores (attack classes 13 and 17)."""

from __future__ import annotations

import base64
import json
from typing import Any

from litestar.testing import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

import keymgmt
from keymgmt.metadata import COARSE_FIELDS
from server.db.models import Invite, JoinRequest, NodeRecord
from server.domain.nodes.stored import as_json
from tests.server.conftest import Clock, User
from tests.server.test_teams import TeamKit, _invite, _join


def _everything(client: TestClient[Any]) -> str:
    """Every row of the tables that an invite touches, as text."""
    with Session(client.app.state.engine) as db:
        rows = [*db.scalars(select(Invite)), *db.scalars(select(JoinRequest))]
        return " ".join(repr(vars(row)) for row in rows)


def test_the_invite_secret_never_reaches_the_server(
    alice: User, bob: User, clock: Clock, client: TestClient[Any]
) -> None:
    kit = TeamKit(alice, clock)
    invite = _invite(kit)
    assert (
        alice.post(f"/api/v1/teams/{kit.team_id}/invite", invite.server_record()).status_code == 201
    )
    assert _join(bob, invite, kit).status_code == 201
    secret = invite.code.secret
    held = _everything(client)
    assert invite.code.invite_id in held  # the scan sees the invite
    for form in (secret.hex(), base64.urlsafe_b64encode(secret).rstrip(b"=").decode(),
                 base64.b64encode(secret).decode(), invite.code.text):  # fmt: skip
        assert form not in held


def test_a_metadata_only_record_holds_exactly_the_allowlist(
    alice: User, clock: Clock, client: TestClient[Any]
) -> None:
    keys = keymgmt.new_key(), keymgmt.new_key()
    genesis = keymgmt.create_team(
        team=alice.vault, owner=alice.identity, vault_id_key=keys[0], epoch_key=keys[1],
        content_policy="omit",
    )  # fmt: skip
    state = keymgmt.verify_chain([genesis])
    fields = {
        "model": "claude", "provider": "anthropic", "role": "assistant", "stop_reason": "end_turn",
        "total_tokens": 12, "prompt_tokens": 9, "completion_tokens": 3, "project": "secret-proj",
        "created_at": "2026-11-26T12:34:56+00:00", "total_duration_ns": 5,
    }  # fmt: skip
    envelope = keymgmt.seal_node(
        state=state, keys=keymgmt.TeamKeys(alice.vault, keys[0], {1: keys[1]}),
        tapes_hash="a" * 64, parent_id=None, body=None,
        metadata=keymgmt.project_metadata(state.metadata_policy, fields),
        author=alice.identity.fingerprint, signer=alice.identity,
    ).to_dict()  # fmt: skip
    pushed = alice.post("/api/v1/sync/push", {"vault": alice.vault, "envelopes": [envelope]})
    assert pushed.status_code == 200, pushed.text
    with Session(client.app.state.engine) as db:
        record = db.scalars(select(NodeRecord)).one()
    assert record.metadata_only is True
    assert set(record.clear_metadata) <= COARSE_FIELDS
    assert set(record.clear_metadata) == {
        "model", "provider", "role", "stop_reason", "total_tokens", "prompt_tokens",
        "completion_tokens", "created_at",
    }  # fmt: skip
    assert record.clear_metadata["created_at"] == "2026-11-26T12:00:00Z"  # the hour only
    assert b"secret-proj" not in record.envelope
    assert json.loads(as_json(record.envelope))["ciphertext"] is None  # stored packed
