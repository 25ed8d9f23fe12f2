"""A hostile server on the team path: the real app behind an ``httpx.MockTransport`` that alters
its answers (see test_hostile_server.py). Each attack is refused with a clear error by the
client, and nothing it could not verify is stored or recorded as verified."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar.testing import TestClient

import keymgmt
from keymgmt import labels
from keymgmt.chain import MemberKeys, StatementBody
from tapes_e2e import context
from tapes_e2e.teams import local
from tests.client.conftest import Tapes, pinned
from tests.client.test_hostile_server import _flip, hostile
from tests.client.test_sync_round_trip import hashes
from tests.client.test_teams import CODE, Team, fingerprint, ok, one_error, record
from tests.client.test_teams import team as team  # noqa: PLC0414 - the fixture, by name
from tests.server.conftest import AUDIENCE, b64


def use(monkeypatch: pytest.MonkeyPatch, client: TestClient[Any], path: str, mutate: Any) -> None:
    evil = hostile(client, path, mutate)
    monkeypatch.setattr(context, "http_factory", lambda _url: evil)


def statements(page: dict[str, Any]) -> list[dict[str, str]] | None:
    found: list[dict[str, str]] | None = page.get("statements") if isinstance(page, dict) else None
    return found


def test_a_joiners_key_substituted_in_the_join_request_is_refused(
    tapes: Tapes, tmp_path: Path, client: TestClient[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for who in ("alice", "bob"):
        ok(tapes(who, "auth", "login", "--server", AUDIENCE, "--handle", who))
    out = ok(tapes("alice", "team", "create", "Acme"))
    team = re.search(r"\((t_[^)]+)\)", out).group(1)  # type: ignore[union-attr]
    code = CODE.search(ok(tapes("alice", "team", "invite", team))).group(0)  # type: ignore[union-attr]
    ok(tapes("bob", "team", "join", code))
    mallory = keymgmt.generate_identity().public

    def swap(requests: list[dict[str, Any]]) -> None:
        for request in requests:
            body = request["request"]["body"]
            body["member_keys"] = {"x25519": mallory.x25519.hex(), "ed25519": mallory.ed25519.hex()}
            body["member"] = request["fingerprint"] = mallory.fingerprint

    use(monkeypatch, client, "/join-requests", swap)
    code_, out, err = tapes("alice", "team", "approve", team, "--yes")
    assert code_ == 1
    assert "refused: the join request does not match the invite secret" in err
    assert "approved" not in out
    monkeypatch.setattr(context, "http_factory", lambda _url: client)
    shown = json.loads(ok(tapes("alice", "team", "show", team, "--json")))
    assert len(shown["members"]) == 1  # nothing was signed or appended
    assert list(local.load(tmp_path / "alice").invites)  # the invite can still be approved
    assert "approved" in ok(tapes("alice", "team", "approve", team, "--yes"))


def forged_chain(team: str, bob: Path, invite_id: str) -> list[dict[str, str]]:
    """Mallory's own, validly signed chain for the same team id, adding Bob with the invite."""
    mallory = keymgmt.generate_identity()
    genesis = keymgmt.create_team(
        team=team, owner=mallory, vault_id_key=keymgmt.new_key(), epoch_key=keymgmt.new_key()
    )
    state = keymgmt.verify_chain([genesis])
    keys = json.loads((bob / "session.json").read_text())
    assert keys["fingerprint"]
    public = keymgmt.read_public_identity(bob / "identity.key")
    add = keymgmt.add_member(
        state, signer=mallory, member=public, role="member", invite_id=invite_id,
        invite_proof="0" * 64,
    )  # fmt: skip
    return [genesis.to_dict(), add.to_dict()]


def test_a_chain_substituted_for_the_joiner_is_refused(
    team: Team, tapes: Tapes, tmp_path: Path, client: TestClient[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    ok(tapes("carol", "auth", "login", "--server", AUDIENCE, "--handle", "carol"))
    code = team.invite()
    ok(tapes("carol", "team", "join", code))
    ok(tapes("alice", "team", "approve", team.id, "--yes"))
    invite_id = keymgmt.parse_invite_code(code).invite_id
    chain = forged_chain(team.id, tmp_path / "carol", invite_id)

    def substitute(page: dict[str, Any]) -> None:
        if statements(page) is not None:
            page["statements"] = chain
            page["head"] = {"seqno": 1, "hash": keymgmt.parse_statement(chain[1]).hash}

    use(monkeypatch, client, "/chain", substitute)
    one_error(tapes("carol", "team", "join", code), "does not match the invite code")
    saved = local.load(tmp_path / "carol")
    assert invite_id in saved.joins  # still pending: nothing of the forged chain was trusted
    assert team.id not in saved.teams


def injected(page: dict[str, Any], team: str) -> None:
    """Append a statement, signed by an outsider, that adds the outsider as an owner."""
    found = statements(page)
    if not found:
        return
    last = keymgmt.parse_statement(found[-1])
    mallory = keymgmt.generate_identity()
    body = StatementBody(
        version=1, team=team, seqno=last.body.seqno + 1, prev=last.hash, time=last.body.time,
        signer=mallory.fingerprint, action="add", epoch=last.body.epoch,
        member=mallory.fingerprint, role="owner",
        member_keys=MemberKeys(mallory.public.x25519.hex(), mallory.public.ed25519.hex()),
    )  # fmt: skip
    body_bytes = keymgmt.canonical_json(msgspec.to_builtins(body))
    signature = mallory.sign(labels.CHAIN_SIGNATURE + body_bytes)
    found.append({"body": body_bytes.decode(), "signature": b64(signature)})
    page["head"] = {"seqno": body.seqno, "hash": "0" * 64}


def alice_shared_a_session(team: Team, tapes: Tapes) -> None:
    """Both sync into the team with auto_share; Alice records a session and syncs it (shared)."""
    team.sync_into_team("alice", auto_share=True)
    team.sync_into_team("bob", auto_share=True)
    record(team.home("alice"), "a shared session", "with two turns")
    ok(tapes("alice", "storage", "sync"))


def test_a_member_injected_into_the_chain_is_refused(
    team: Team, tapes: Tapes, tmp_path: Path, client: TestClient[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    alice_shared_a_session(team, tapes)
    head = pinned(tmp_path / "bob", team.id)
    assert head is not None
    use(monkeypatch, client, "/chain", lambda page: injected(page, team.id))
    one_error(tapes("bob", "team", "show", team.id))
    one_error(tapes("alice", "team", "invite", team.id))
    code, _, err = tapes("bob", "storage", "sync")
    assert code == 1
    assert "tapes: error: " in err
    assert hashes(team.home("bob")) == []
    assert pinned(tmp_path / "bob", team.id) == head


def test_a_forged_keyring_is_refused(
    team: Team, tapes: Tapes, tmp_path: Path, client: TestClient[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    alice_shared_a_session(team, tapes)

    def forge(keyrings: list[dict[str, Any]]) -> None:
        for item in keyrings:
            item["keyring"]["signature"] = _flip(item["keyring"]["signature"], 5)

    use(monkeypatch, client, "/keyrings", forge)
    one_error(tapes("bob", "session", "shared"), "integrity")
    code, _, err = tapes("bob", "storage", "sync")
    assert code == 1
    assert "integrity" in err
    assert hashes(team.home("bob")) == []


def test_a_forged_share_is_refused(
    team: Team, tapes: Tapes, tmp_path: Path, client: TestClient[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    team.sync_into_team("alice", auto_share=True)
    record(team.home("alice"), "a shared session", "with two turns")
    ok(tapes("alice", "storage", "sync"))
    bob = fingerprint(tmp_path / "bob")

    def forge(page: Any) -> None:
        items = page if isinstance(page, list) else page.get("items", [])
        for item in items:
            body = json.loads(item["statement"]["body"])
            body["sharer"] = bob  # claim another sharer: the signature no longer verifies
            item["statement"]["body"] = json.dumps(body, sort_keys=True, separators=(",", ":"))

    use(monkeypatch, client, "/shared", forge)
    code, out, err = tapes("bob", "session", "shared", "--json")
    assert code == 1
    assert json.loads(out) == []
    assert "integrity: the share of" in err
    use(monkeypatch, client, "/sessions", lambda page: [
        item.update(session_id="0" * 64) for item in page.get("items", [])
    ])  # fmt: skip
    code, out, err = tapes("bob", "session", "shared", "--team", team.id, "--json")
    assert code == 1
    assert json.loads(out) == []
    assert "names another session" in err
