"""A personal vault's genesis through the real app, and the vault chain/keyring reads.

``POST /api/v1/teams/{vault}/genesis`` (once, by the owner of a personal vault with an empty
chain) and ``GET /api/v1/vaults/{vault}/chain|keyrings`` (any live member; viewers get no
keyring), on SQLite and PostgreSQL like every server test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar.testing import TestClient
from sqlalchemy import select

import keymgmt
from server.db.models import AuditEntry, ChainStatement, Keyring, Team
from tests.server.conftest import Clock, User
from tests.server.test_teams import TeamKit, db_session


@dataclass
class Genesis:
    """What the owner's client makes at its first login: keys, the statement, the keyring."""

    vault: str
    vault_key: bytes
    epoch_key: bytes
    statement: keymgmt.UnverifiedStatement
    state: keymgmt.VerifiedTeamState
    keyring: dict[str, str]

    def body(self, **changes: Any) -> dict[str, Any]:
        return {"statement": self.statement.to_dict(), "keyring": self.keyring} | changes


def make_genesis(
    signer: User, clock: Clock, *, vault: str | None = None, time_offset: int = 0
) -> Genesis:
    vault = vault or signer.vault
    vault_key, epoch_key = keymgmt.new_key(), keymgmt.new_key()
    statement = keymgmt.create_team(
        team=vault,
        owner=signer.identity,
        vault_id_key=vault_key,
        epoch_key=epoch_key,
        now=int(clock.now.timestamp()) + time_offset,
    )
    # At the signer's own clock: the server's refusal of a future date is what a test checks.
    state = keymgmt.verify_chain([statement], team=vault, now=statement.body.time)
    keyring = keymgmt.seal_keyring(
        state, sealer=signer.identity, epoch=1, epoch_key=epoch_key, vault_id_key=vault_key
    ).to_dict()
    return Genesis(vault, vault_key, epoch_key, statement, state, keyring)


def vault_row(client: TestClient[Any], vault: str) -> tuple[int, str | None]:
    with db_session(client) as db:
        team = db.get(Team, vault)
        assert team is not None
        return team.chain_seqno, team.chain_head


def stored_rows(client: TestClient[Any], vault: str) -> tuple[int, int]:
    with db_session(client) as db:
        statements = db.scalars(select(ChainStatement).where(ChainStatement.team_id == vault))
        keyrings = db.scalars(select(Keyring).where(Keyring.team_id == vault))
        return len(statements.all()), len(keyrings.all())


def genesis_url(vault: str) -> str:
    return f"/api/v1/teams/{vault}/genesis"


# --- the genesis ----------------------------------------------------------------------------


def test_genesis_stores_the_chain_and_keyring_that_the_owner_reads_back(
    alice: User, clock: Clock, client: TestClient[Any]
) -> None:
    kit = make_genesis(alice, clock)
    response = alice.post(genesis_url(alice.vault), kit.body())
    assert response.status_code == 201, response.text
    assert response.json() == {
        "vault_id": alice.vault,
        "head": {"seqno": 0, "hash": kit.state.head.hash},
    }
    assert vault_row(client, alice.vault) == (0, kit.state.head.hash)
    assert stored_rows(client, alice.vault) == (1, 1)

    chain = alice.get(f"/api/v1/vaults/{alice.vault}/chain")
    assert chain.status_code == 200, chain.text
    page = chain.json()
    assert page["head"] == {"seqno": 0, "hash": kit.state.head.hash}
    assert page["statements"] == [kit.statement.to_dict()]
    state = keymgmt.verify_chain(page["statements"], team=alice.vault)
    assert state.head == kit.state.head

    rings = alice.get(f"/api/v1/vaults/{alice.vault}/keyrings").json()
    assert [r["epoch"] for r in rings] == [1]
    opened = keymgmt.open_keyring(rings[0]["keyring"], state=state, identity=alice.identity)
    assert (opened.vault_id_key, opened.epoch_key) == (kit.vault_key, kit.epoch_key)

    with db_session(client) as db:
        actions = db.scalars(select(AuditEntry.action).where(AuditEntry.team_id == alice.vault))
        assert list(actions) == ["vault_genesis"]


def test_a_second_genesis_is_a_conflict_and_changes_nothing(
    alice: User, clock: Clock, client: TestClient[Any]
) -> None:
    first = make_genesis(alice, clock)
    assert alice.post(genesis_url(alice.vault), first.body()).status_code == 201
    second = alice.post(genesis_url(alice.vault), make_genesis(alice, clock).body())
    assert second.status_code == 409
    assert "already has its genesis" in second.json()["detail"]
    assert alice.post(genesis_url(alice.vault), first.body()).status_code == 409
    assert vault_row(client, alice.vault) == (0, first.state.head.hash)
    assert stored_rows(client, alice.vault) == (1, 1)


def test_genesis_for_someone_elses_vault_is_not_found(
    alice: User, bob: User, clock: Clock, client: TestClient[Any]
) -> None:
    # Bob signs a perfectly valid genesis naming Alice's vault: the vault is not his.
    response = bob.post(
        genesis_url(alice.vault), make_genesis(bob, clock, vault=alice.vault).body()
    )
    assert response.status_code == 404
    assert response.json()["detail"] == "no such vault"
    assert bob.post(genesis_url("v_doesnotexist"), make_genesis(bob, clock).body()).status_code == (
        404
    )
    assert vault_row(client, alice.vault) == (-1, None)


def test_genesis_for_a_team_vault_is_refused(
    alice: User, clock: Clock, client: TestClient[Any]
) -> None:
    team = TeamKit(alice, clock)
    assert team.response.status_code == 201
    response = alice.post(
        genesis_url(team.team_id), make_genesis(alice, clock, vault=team.team_id).body()
    )
    assert response.status_code == 400
    assert "team vault" in response.json()["detail"]
    assert stored_rows(client, team.team_id) == (1, 1)


def test_genesis_signed_by_another_identity_is_refused(
    alice: User, bob: User, clock: Clock, client: TestClient[Any]
) -> None:
    forged = make_genesis(bob, clock, vault=alice.vault)  # valid, but Bob is its owner
    response = alice.post(genesis_url(alice.vault), forged.body())
    assert response.status_code == 400
    assert "not signed by your identity" in response.json()["detail"]
    assert vault_row(client, alice.vault) == (-1, None)


def test_genesis_for_another_vault_id_is_refused(
    alice: User, bob: User, clock: Clock, client: TestClient[Any]
) -> None:
    other = make_genesis(alice, clock, vault=bob.vault)
    response = alice.post(genesis_url(alice.vault), other.body())
    assert response.status_code == 400
    assert "does not verify" in response.json()["detail"]
    assert vault_row(client, alice.vault) == (-1, None)


def test_genesis_with_a_keyring_of_another_chain_is_refused(
    alice: User, clock: Clock, client: TestClient[Any]
) -> None:
    mine, stale = make_genesis(alice, clock), make_genesis(alice, clock)
    response = alice.post(genesis_url(alice.vault), mine.body(keyring=stale.keyring))
    assert response.status_code == 400
    assert "different chain" in response.json()["detail"]
    assert stored_rows(client, alice.vault) == (0, 0)
    # and nothing is half-done: the right body still goes through afterwards
    assert alice.post(genesis_url(alice.vault), mine.body()).status_code == 201


def test_genesis_dated_in_the_future_is_refused(alice: User, clock: Clock) -> None:
    late = make_genesis(alice, clock, time_offset=3600)
    response = alice.post(genesis_url(alice.vault), late.body())
    assert response.status_code == 400
    assert "future" in response.json()["detail"]


def test_genesis_needs_an_interactive_login(
    alice: User, clock: Clock, client: TestClient[Any]
) -> None:
    created = alice.post("/api/v1/api-keys/", {"vault": alice.vault, "permissions": ["admin"]})
    assert created.status_code == 201, created.text
    key = created.json()["api_key"]
    response = client.post(
        genesis_url(alice.vault),
        json=make_genesis(alice, clock).body(),
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 401
    assert vault_row(client, alice.vault) == (-1, None)


def test_malformed_genesis_bodies_are_bad_requests(alice: User, clock: Clock) -> None:
    kit = make_genesis(alice, clock)
    assert alice.post(
        genesis_url(alice.vault), {"statement": kit.statement.to_dict()}
    ).status_code == (400)
    broken = kit.body(statement={"body": "{}", "signature": "A" * 86})
    assert alice.post(genesis_url(alice.vault), broken).status_code == 400


# --- the vault chain and keyrings ----------------------------------------------------------


def test_an_empty_personal_chain_reads_as_no_statements(alice: User) -> None:
    page = alice.get(f"/api/v1/vaults/{alice.vault}/chain").json()
    assert page == {
        "team_id": alice.vault,
        "after": -1,
        "head": {"seqno": -1, "hash": ""},
        "statements": [],
    }
    assert alice.get(f"/api/v1/vaults/{alice.vault}/keyrings").json() == []


def test_chain_after_the_head_is_empty(alice: User, clock: Clock) -> None:
    kit = make_genesis(alice, clock)
    assert alice.post(genesis_url(alice.vault), kit.body()).status_code == 201
    page = alice.get(f"/api/v1/vaults/{alice.vault}/chain", params={"after": 0}).json()
    assert (page["after"], page["statements"]) == (0, [])
    assert page["head"]["seqno"] == 0


def test_vault_reads_are_for_members_only(alice: User, bob: User, clock: Clock) -> None:
    assert alice.post(genesis_url(alice.vault), make_genesis(alice, clock).body()).status_code == (
        201
    )
    for path in ("chain", "keyrings"):
        response = bob.get(f"/api/v1/vaults/{alice.vault}/{path}")
        assert response.status_code == 404
        assert response.json()["detail"] == "no such vault"


def test_team_vault_reads_serve_members_and_give_viewers_no_keyring(
    alice: User, bob: User, clock: Clock, client: TestClient[Any]
) -> None:
    team = TeamKit(alice, clock)
    carol = User(client, "carol")
    assert team.add(bob).status_code == 200
    assert team.add(carol, "viewer").status_code == 200
    assert team.upload_keyring(alice, 1).status_code == 201  # now sealed to Alice and Bob

    for user in (alice, bob, carol):
        page = user.get(f"/api/v1/vaults/{team.team_id}/chain").json()
        assert len(page["statements"]) == 3
        keymgmt.verify_chain(page["statements"], team=team.team_id)

    rings = bob.get(f"/api/v1/vaults/{team.team_id}/keyrings").json()
    opened = keymgmt.open_keyring(rings[0]["keyring"], state=team.state, identity=bob.identity)
    assert opened.epoch_key == team.epoch_keys[1]
    assert carol.get(f"/api/v1/vaults/{team.team_id}/keyrings").json() == []
    # even a stray row naming the viewer is not served: the role decides, not the rows
    with db_session(client) as db, db.begin():
        sealed = db.scalars(select(Keyring).where(Keyring.team_id == team.team_id)).first()
        assert sealed is not None
        db.add(
            Keyring(
                team_id=team.team_id, epoch=1, recipient=carol.identity.fingerprint,
                sealed=sealed.sealed, created_at=clock.now,
            )
        )  # fmt: skip
    assert carol.get(f"/api/v1/vaults/{team.team_id}/keyrings").json() == []


def test_an_api_key_reads_only_its_own_vault(
    alice: User, clock: Clock, client: TestClient[Any]
) -> None:
    assert alice.post(genesis_url(alice.vault), make_genesis(alice, clock).body()).status_code == (
        201
    )
    team = TeamKit(alice, clock)
    created = alice.post("/api/v1/api-keys/", {"vault": alice.vault, "permissions": ["pull"]})
    headers = {"Authorization": f"Bearer {created.json()['api_key']}"}
    mine = client.get(f"/api/v1/vaults/{alice.vault}/chain", headers=headers)
    assert mine.status_code == 200
    assert len(mine.json()["statements"]) == 1
    other = client.get(f"/api/v1/vaults/{team.team_id}/chain", headers=headers)
    assert other.status_code == 404
