"""``POST /auth/rekey`` through the real app: an account's key is replaced in every vault it is
in and on the account in one transaction, or not at all; the old key's logins, API keys, shares
and join requests end; a retired key never logs in or registers again; and every request that is
not both keys' own, complete and current is refused with nothing changed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import select

import keymgmt
from keymgmt.login import sign_login, sign_rekey
from server.db.models import Keyring, RetiredKey, Team
from server.db.models import User as UserRow
from tests.server.conftest import AUDIENCE, Clock, User, b64, unb64
from tests.server.test_teams import TeamKit, audit_actions, db_session

Request = dict[str, Any]


def _part(
    kit: TeamKit, old: keymgmt.Identity, new: keymgmt.Identity, *, seal_new_epoch: bool = True
) -> tuple[Request, keymgmt.VerifiedTeamState, bytes | None]:
    """One vault's part of a rotation, as ``tapes keys rotate`` builds it from ``kit``'s keys."""
    reads = kit.state.member(old.fingerprint).reads_content  # type: ignore[union-attr]
    epoch_key = keymgmt.new_key() if reads else None
    statement = keymgmt.rekey(kit.state, signer=old, new=new, new_epoch_key=epoch_key,
                              now=kit.ts())  # fmt: skip
    after = keymgmt.extend_chain(kit.state, [statement])
    epochs = dict(kit.epoch_keys) if reads else {}
    if epoch_key is not None and seal_new_epoch:
        epochs[after.epoch] = epoch_key
    keyrings = [
        keymgmt.seal_keyring(
            after, sealer=new, epoch=e, epoch_key=k, vault_id_key=kit.vault_key
        ).to_dict()
        for e, k in sorted(epochs.items())
    ]
    part = {
        "vault": kit.team_id,
        "expected_head_seqno": kit.state.head.seqno,
        "statement": statement.to_dict(),
        "keyrings": keyrings,
    }
    return part, after, epoch_key


def _request(user: User, new: keymgmt.Identity, parts: list[Request]) -> Request:
    old_sig, new_sig = sign_rekey(user.identity, new, server=AUDIENCE, user_id=user.user_id)
    return {
        "keys": {"x25519": new.public.x25519.hex(), "ed25519": new.public.ed25519.hex()},
        "old_signature": b64(old_sig),
        "new_signature": b64(new_sig),
        "vaults": parts,
    }


def _fingerprint_of(client: TestClient[Any], user: User) -> str:
    with db_session(client) as db:
        row = db.get(UserRow, user.user_id)
        assert row is not None
        return row.fingerprint


def _heads(client: TestClient[Any], *vaults: str) -> list[int]:
    with db_session(client) as db:
        return [db.get(Team, v).chain_seqno for v in vaults]  # type: ignore[union-attr]


@pytest.fixture
def teams(alice: User, bob: User, clock: Clock) -> tuple[TeamKit, TeamKit]:
    """Alice owns two teams; Bob is a member of the first."""
    first, second = TeamKit(alice, clock), TeamKit(alice, clock)
    assert first.add(bob).status_code == 200
    return first, second


def test_a_rotation_moves_the_account_and_every_vault_at_once(
    client: TestClient[Any], alice: User, bob: User, teams: tuple[TeamKit, TeamKit]
) -> None:
    first, second = teams
    old, new = alice.identity, keymgmt.generate_identity()
    key = alice.post("/api/v1/api-keys/", {"name": "ci", "vault": first.team_id,
                                           "permissions": ["pull"]}).json()  # fmt: skip
    p1, p2 = _part(first, old, new)[0], _part(second, old, new)[0]
    response = alice.post("/auth/rekey", _request(alice, new, [p2, p1]))
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["fingerprint"] == new.fingerprint
    assert sorted(out["vaults"]) == sorted([first.team_id, second.team_id])
    assert (out["logins_ended"], out["api_keys_revoked"]) == (1, 1)
    assert _fingerprint_of(client, alice) == new.fingerprint
    assert _heads(client, first.team_id, second.team_id) == [2, 1]
    with db_session(client) as db:
        assert db.get(RetiredKey, old.fingerprint) is not None
        sealed = {(r.team_id, r.epoch, r.recipient) for r in db.scalars(select(Keyring))}
    bob_fp = bob.identity.fingerprint
    assert {(first.team_id, 2, new.fingerprint), (first.team_id, 2, bob_fp)} <= sealed
    assert not [s for s in sealed if s[2] == old.fingerprint]  # the old key's keyrings go
    # Bob verifies the chain: the new key is Alice's, epoch 2 opens for him
    chain = bob.get(f"/api/v1/teams/{first.team_id}/chain").json()["statements"]
    state = keymgmt.verify_chain(chain)
    assert state.members[new.fingerprint].role == "owner"
    # every login and API key of the account ended; the old key never logs in again
    assert alice.get("/auth/me").status_code == 401
    bearer = {"Authorization": f"Bearer {key['api_key']}"}
    assert client.get(f"/api/v1/teams/{first.team_id}/chain", headers=bearer).status_code == 401
    assert _login(client, old).status_code == 401
    assert _login(client, old, handle="x1").status_code == 401  # nor registers a new account
    alice.identity = new
    assert alice.login()["user_id"] == alice.user_id  # the same account, with the new key
    alice.relogin()
    # the rotation, then her two logins with the new key
    assert audit_actions(alice, first.team_id)[-3:] == ["member_rekeyed", "login", "login"]


def _login(client: TestClient[Any], identity: keymgmt.Identity, handle: str | None = None) -> Any:
    challenge = client.post("/auth/challenge").json()
    signature = sign_login(identity, server=challenge["audience"],
                           challenge_id=challenge["challenge_id"],
                           nonce=unb64(challenge["nonce"]))  # fmt: skip
    keys = {"x25519": identity.public.x25519.hex(), "ed25519": identity.public.ed25519.hex()}
    body = {"challenge_id": challenge["challenge_id"], "keys": keys, "signature": b64(signature)}
    if handle:
        body["handle"] = handle
    return client.post("/auth/login", json=body)


def test_a_rotation_is_all_or_nothing(
    client: TestClient[Any], alice: User, teams: tuple[TeamKit, TeamKit]
) -> None:
    """The second vault refuses (its new epoch has no keyring): the first, already checked,
    keeps its chain, the account its key, its login stays."""
    first, second = teams
    new = keymgmt.generate_identity()
    p1, _, _ = _part(first, alice.identity, new)
    p2, _, _ = _part(second, alice.identity, new, seal_new_epoch=False)
    response = alice.post("/auth/rekey", _request(alice, new, [p1, p2]))
    assert response.status_code == 400
    assert "seal its keyring" in response.json()["detail"]
    assert _heads(client, first.team_id, second.team_id) == [1, 0]
    assert _fingerprint_of(client, alice) == alice.identity.fingerprint
    assert alice.get("/auth/me").status_code == 200
    with db_session(client) as db:
        assert db.scalars(select(RetiredKey)).first() is None


Change = Callable[[User, keymgmt.Identity, list[Request], TeamKit], Request]


def _signed_by_another(user: User, new: keymgmt.Identity, parts: list[Request], _: TeamKit
                       ) -> Request:  # fmt: skip
    body = _request(user, new, parts)
    stranger = keymgmt.generate_identity()
    body["new_signature"] = _request(user, stranger, parts)["new_signature"]
    return body


def _old_key_did_not_sign(user: User, new: keymgmt.Identity, parts: list[Request], _: TeamKit
                          ) -> Request:  # fmt: skip
    body = _request(user, new, parts)
    body["old_signature"] = b64(new.sign(b"anything"))
    return body


def _a_vault_left_out(user: User, new: keymgmt.Identity, parts: list[Request], _: TeamKit
                      ) -> Request:  # fmt: skip
    return _request(user, new, parts[:1])


def _a_vault_twice(user: User, new: keymgmt.Identity, parts: list[Request], _: TeamKit
                   ) -> Request:  # fmt: skip
    return _request(user, new, [*parts, parts[0]])


def _another_statement(user: User, new: keymgmt.Identity, parts: list[Request], kit: TeamKit
                       ) -> Request:  # fmt: skip
    rotate = keymgmt.rotate(kit.state, signer=user.identity, new_epoch_key=keymgmt.new_key(),
                            now=kit.ts())  # fmt: skip
    return _request(user, new, [dict(parts[0], statement=rotate.to_dict()), parts[1]])


def _a_stale_head(user: User, new: keymgmt.Identity, parts: list[Request], _: TeamKit
                  ) -> Request:  # fmt: skip
    return _request(user, new, [dict(parts[0], expected_head_seqno=0), parts[1]])


def _keyrings_by_the_old_key(user: User, new: keymgmt.Identity, parts: list[Request],
                             kit: TeamKit) -> Request:  # fmt: skip
    ring = keymgmt.seal_keyring(  # the old key, as owner before the rotation
        kit.state,
        sealer=user.identity,
        epoch=1,
        epoch_key=kit.epoch_keys[1],
        vault_id_key=kit.vault_key,
    )
    return _request(user, new, [dict(parts[0], keyrings=[ring.to_dict()]), parts[1]])


@pytest.mark.parametrize(
    ("change", "status", "words"),
    [
        (_signed_by_another, 400, "signed by both"),
        (_old_key_did_not_sign, 400, "signed by both"),
        (_a_vault_left_out, 409, "missing"),
        (_a_vault_twice, 400, "twice"),
        (_another_statement, 400, "must be a rekey"),
        (_a_stale_head, 409, "moved"),
        (_keyrings_by_the_old_key, 400, "not sealed by your identity"),
    ],
)
def test_a_rotation_that_is_not_complete_current_and_both_keys_own_changes_nothing(
    client: TestClient[Any], alice: User, teams: tuple[TeamKit, TeamKit], change: Change,
    status: int, words: str,
) -> None:  # fmt: skip
    first, second = teams
    new = keymgmt.generate_identity()
    parts = [_part(first, alice.identity, new)[0], _part(second, alice.identity, new)[0]]
    response = alice.post("/auth/rekey", change(alice, new, parts, first))
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]
    assert _heads(client, first.team_id, second.team_id) == [1, 0]
    assert _fingerprint_of(client, alice) == alice.identity.fingerprint
    assert alice.get("/auth/me").status_code == 200


def test_no_rotation_to_a_key_another_account_has_or_by_an_api_key(
    client: TestClient[Any], alice: User, bob: User, teams: tuple[TeamKit, TeamKit]
) -> None:
    first, second = teams
    # Bob's key: rekeying into it would merge two people (the chain refuses too: he is a member)
    parts = [_part(second, alice.identity, keymgmt.generate_identity())[0]]
    body = _request(alice, bob.identity, parts)
    assert alice.post("/auth/rekey", body).status_code == 409
    # an API key cannot rotate the account it belongs to
    key = alice.post("/api/v1/api-keys/", {"name": "ci", "vault": first.team_id,
                                           "permissions": ["admin"]}).json()  # fmt: skip
    new = keymgmt.generate_identity()
    parts = [_part(first, alice.identity, new)[0], _part(second, alice.identity, new)[0]]
    response = client.post("/auth/rekey", json=_request(alice, new, parts),
                           headers={"Authorization": f"Bearer {key['api_key']}"})  # fmt: skip
    assert response.status_code == 401
    assert _fingerprint_of(client, alice) == alice.identity.fingerprint


def test_the_team_chain_endpoint_takes_no_rekey(
    alice: User, teams: tuple[TeamKit, TeamKit]
) -> None:
    """Only /auth/rekey records a rotation, so the account and every chain move together."""
    first, _ = teams
    statement = keymgmt.rekey(first.state, signer=alice.identity, new=keymgmt.generate_identity(),
                              new_epoch_key=keymgmt.new_key(), now=first.ts())  # fmt: skip
    response = first.append(alice, statement)
    assert response.status_code == 400
    assert "POST /auth/rekey" in response.json()["detail"]


def test_a_member_who_left_before_rotating_is_still_removed_by_their_old_key(
    client: TestClient[Any], bob: User, clock: Clock, teams: tuple[TeamKit, TeamKit]
) -> None:
    """Bob leaves, then rotates: his rotation covers only his personal vault (he is out of the
    team), the team's chain still names his old key, and the admin's removal finds him by it."""
    first, _ = teams
    assert bob.post(f"/api/v1/teams/{first.team_id}/leave", {}).status_code == 204
    personal = TeamKit(bob, clock, team_id=bob.vault, create=False)
    genesis = {"statement": personal.genesis.to_dict(), "keyring": personal.keyring(bob, 1)}
    assert bob.post(f"/api/v1/teams/{bob.vault}/genesis", genesis).status_code == 201
    new = keymgmt.generate_identity()
    response = bob.post("/auth/rekey", _request(bob, new, [_part(personal, bob.identity, new)[0]]))
    assert response.status_code == 200, response.text
    assert response.json()["vaults"] == [bob.vault]
    assert first.remove(bob).status_code == 200  # names the retired key
    with db_session(client) as db:
        assert db.get(RetiredKey, bob.identity.fingerprint).user_id == bob.user_id  # type: ignore[union-attr]
