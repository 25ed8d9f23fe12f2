"""Teams through the real app: creation and plans, the signed chain with compare-and-swap,
membership rows, keyrings, invites and join requests, the audit log, and uniform denials."""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

import keymgmt
from server.db.models import (
    ChainStatement,
    Invite,
    JoinRequest,
    Keyring,
    NodeRecord,
    Team,
    TeamMember,
)
from tapes_e2e.protocol import Problem
from tests.server.conftest import Clock, User, Vault

# --- helpers (test_shares.py uses them too) ---------------------------------------------------


def new_team_id() -> str:
    return "t_" + secrets.token_hex(8)


class TeamKit:
    """A team as its owner's client holds it: keys, the verified chain, and request helpers."""

    def __init__(
        self,
        owner: User,
        clock: Clock,
        *,
        team_id: str | None = None,
        slug: str | None = None,
        create: bool = True,
    ) -> None:
        self.owner = owner
        self.clock = clock
        self.team_id = team_id or new_team_id()
        self.slug = slug or f"team-{secrets.token_hex(4)}"
        self.vault_key = keymgmt.new_key()
        self.epoch_keys = {1: keymgmt.new_key()}
        self.genesis = keymgmt.create_team(
            team=self.team_id,
            owner=owner.identity,
            vault_id_key=self.vault_key,
            epoch_key=self.epoch_keys[1],
            now=self.ts(),
        )
        self.state = keymgmt.verify_chain([self.genesis])
        if create:
            self.response = owner.post("/api/v1/teams", self.create_body())

    def ts(self) -> int:
        return int(self.clock.now.timestamp())

    def create_body(self, **changes: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "team_id": self.team_id,
            "name": "Acme",
            "slug": self.slug,
            "statement": self.genesis.to_dict(),
            "keyring": self.keyring(self.owner, 1),
        }
        body.update(changes)
        return body

    def keyring(self, sealer: User, epoch: int) -> dict[str, str]:
        return keymgmt.seal_keyring(
            self.state,
            sealer=sealer.identity,
            epoch=epoch,
            epoch_key=self.epoch_keys[epoch],
            vault_id_key=self.vault_key,
        ).to_dict()

    def append(self, poster: User, *statements: keymgmt.UnverifiedStatement) -> Any:
        response = poster.post(
            f"/api/v1/teams/{self.team_id}/chain",
            {
                "expected_head_seqno": self.state.head.seqno,
                "statements": [s.to_dict() for s in statements],
            },
        )
        if response.status_code == 200:
            self.state = keymgmt.extend_chain(self.state, list(statements))
        return response

    def add(self, member: User, role: str = "member", signer: User | None = None) -> Any:
        signer = signer or self.owner
        statement = keymgmt.add_member(
            self.state, signer=signer.identity, member=member.identity.public,
            role=role, now=self.ts(),  # type: ignore[arg-type]
        )  # fmt: skip
        return self.append(signer, statement)

    def remove_statement(
        self, member: User, signer: User | None = None
    ) -> keymgmt.UnverifiedStatement:
        key = keymgmt.new_key()
        self.epoch_keys[self.state.epoch + 1] = key
        return keymgmt.remove_member(
            self.state,
            signer=(signer or self.owner).identity,
            member=member.identity.fingerprint,
            new_epoch_key=key,
            now=self.ts(),
        )

    def remove(self, member: User, signer: User | None = None) -> Any:
        return self.append(signer or self.owner, self.remove_statement(member, signer))

    def upload_keyring(self, sealer: User, epoch: int) -> Any:
        return sealer.post(
            f"/api/v1/teams/{self.team_id}/keyrings", {"keyring": self.keyring(sealer, epoch)}
        )

    def team_keys(self) -> keymgmt.TeamKeys:
        return keymgmt.TeamKeys(self.team_id, self.vault_key, dict(self.epoch_keys))

    def vault(self, author: User, epoch: int | None = None) -> Vault:
        """Envelope sealing into this team's vault with the team's keys, under its current
        epoch unless ``epoch`` names another (the server refuses new nodes under any other)."""
        vault = Vault(self.team_id, author.identity)
        vault.epoch = epoch or self.state.epoch
        vault.vault_key, vault.epoch_key = self.vault_key, self.epoch_keys[vault.epoch]
        return vault


def db_session(client: TestClient[Any]) -> Session:
    return Session(client.app.state.engine)


def member_rows(client: TestClient[Any], team_id: str) -> dict[str, tuple[str, bool]]:
    """user_id → (role, removed) for every member row of the team."""
    with db_session(client) as db:
        rows = db.scalars(select(TeamMember).where(TeamMember.team_id == team_id)).all()
        return {r.user_id: (r.role, r.removed_at is not None) for r in rows}


def chain_length(client: TestClient[Any], team_id: str) -> int:
    with db_session(client) as db:
        return len(
            db.scalars(select(ChainStatement).where(ChainStatement.team_id == team_id)).all()
        )


def audit_actions(user: User, team_id: str) -> list[str]:
    page = user.get(f"/api/v1/teams/{team_id}/audit").json()
    return [e["action"] for e in page["entries"]]


def set_tier(client: TestClient[Any], vault_id: str, tier: str) -> None:
    with db_session(client) as db, db.begin():
        db.execute(update(Team).where(Team.id == vault_id).values(tier=tier))


@pytest.fixture
def dave(client: TestClient[Any]) -> User:
    return User(client, "dave")


@pytest.fixture
def mallory(client: TestClient[Any]) -> User:
    return User(client, "mallory")


# --- creation and plans ------------------------------------------------------------------------


def test_create_team_stores_the_genesis_owner_and_keyring(
    alice: User, clock: Clock, client: TestClient[Any]
) -> None:
    kit = TeamKit(alice, clock)
    assert kit.response.status_code == 201, kit.response.text
    assert kit.response.json() == {
        "team_id": kit.team_id,
        "name": "Acme",
        "slug": kit.slug,
        "tier": "free",
        "head": {"seqno": 0, "hash": kit.state.head.hash},
    }
    assert member_rows(client, kit.team_id) == {alice.user_id: ("owner", False)}
    vault = alice.get(f"/api/v1/teams/{kit.team_id}").json()
    assert (vault["kind"], vault["role"]) == ("team", "owner")
    chain = alice.get(f"/api/v1/teams/{kit.team_id}/chain").json()
    assert chain["statements"] == [kit.genesis.to_dict()]
    assert chain["head"] == {"seqno": 0, "hash": kit.state.head.hash}
    keyrings = alice.get(f"/api/v1/teams/{kit.team_id}/keyrings").json()
    assert [k["epoch"] for k in keyrings] == [1]
    opened = keymgmt.open_keyring(keyrings[0]["keyring"], state=kit.state, identity=alice.identity)
    assert (opened.epoch_key, opened.vault_id_key) == (kit.epoch_keys[1], kit.vault_key)
    assert audit_actions(alice, kit.team_id) == ["team_created"]


def test_create_team_refuses_what_does_not_verify(
    alice: User, bob: User, clock: Clock, client: TestClient[Any]
) -> None:
    kit = TeamKit(alice, clock)
    other = new_team_id()
    # a genesis for another team id than the one chosen
    assert alice.post("/api/v1/teams", kit.create_body(team_id=other)).status_code == 400
    # a genesis signed by bob, posted by alice
    bobs = TeamKit(bob, clock, create=False)
    response = alice.post("/api/v1/teams", bobs.create_body())
    assert response.status_code == 400
    assert response.json()["detail"] == "the genesis statement is not signed by your identity"
    # a tampered signature
    statement = kit.genesis.to_dict()
    statement["body"] = statement["body"].replace('"coarse"', '"full"')
    response = alice.post(
        "/api/v1/teams", kit.create_body(team_id=new_team_id(), statement=statement)
    )
    assert response.status_code == 400
    # malformed id, unknown field
    assert alice.post("/api/v1/teams", kit.create_body(team_id="team-1")).status_code == 400
    assert alice.post("/api/v1/teams", kit.create_body(extra=1)).status_code == 400
    # the same id or slug again
    again = alice.post("/api/v1/teams", kit.create_body())
    assert again.status_code == 409
    with db_session(client) as db:
        teams = db.scalars(select(Team.id).where(Team.kind == "team")).all()
    assert teams == [kit.team_id]


CONTROL_NAMES = ("Acme\u202egnp.exe", "Acme\x1b]0;pwned\x07", "Acme\u009b2J", "Acme\nInc", "")


@pytest.mark.parametrize("name", CONTROL_NAMES)
def test_a_team_or_key_name_holding_control_characters_is_refused(
    alice: User, clock: Clock, client: TestClient[Any], name: str
) -> None:
    """A name the server keeps to show other people (the team's, an API key's, a device's) is
    one line of text: a bidirectional override, an escape sequence, a C1 control or a newline
    in it is a 400 and nothing is stored (threat model T)."""
    kit = TeamKit(alice, clock, create=False)
    refused = alice.post("/api/v1/teams", kit.create_body(name=name))
    assert refused.status_code == 400, refused.text
    assert "name:" in refused.json()["detail"]
    with db_session(client) as db:
        assert db.scalars(select(Team.id).where(Team.kind == "team")).all() == []
    if name:  # an API key may have no name
        key = {"vault": alice.vault, "permissions": ["pull"], "name": name}
        assert alice.post("/api/v1/api-keys/", key).status_code == 400
    # the same names without their control characters are taken
    assert alice.post("/api/v1/teams", kit.create_body(name="Acme \u05d0\u05d1")).status_code == 201


def test_create_team_refuses_a_keyring_for_others(
    alice: User, bob: User, clock: Clock, client: TestClient[Any]
) -> None:
    bobs = TeamKit(bob, clock, create=False)
    alices = TeamKit(alice, clock, create=False)
    # bob's keyring for bob's team, then one for alice's team that is sealed by bob
    for keyring in (bobs.keyring(bob, 1), _foreign_keyring(alices, bob)):
        response = alice.post("/api/v1/teams", alices.create_body(keyring=keyring))
        assert response.status_code == 400
    with db_session(client) as db:
        owned = db.scalars(select(Team.id).where(Team.owner_id == alice.user_id)).all()
    assert owned == [alice.vault]


def _foreign_keyring(kit: TeamKit, sealer: User) -> dict[str, str]:
    """A keyring for ``kit``'s genesis state whose body names ``sealer`` (not the owner)."""
    import msgspec

    from keymgmt import labels
    from keymgmt._encoding import b64e, canonical_json

    honest = keymgmt.seal_keyring(
        kit.state, sealer=kit.owner.identity, epoch=1, epoch_key=kit.epoch_keys[1],
        vault_id_key=kit.vault_key,
    )  # fmt: skip
    body = msgspec.structs.replace(honest.body, sealer=sealer.identity.fingerprint)
    body_bytes = canonical_json(msgspec.to_builtins(body))
    signature = sealer.identity.sign(labels.KEYRING_SIGNATURE + body_bytes)
    return {"body": body_bytes.decode(), "signature": b64e(signature)}


@pytest.mark.plans("rfc")
def test_free_plan_owns_one_team_pro_three(
    alice: User, clock: Clock, client: TestClient[Any]
) -> None:
    assert TeamKit(alice, clock).response.status_code == 201
    second = TeamKit(alice, clock)
    assert second.response.status_code == 402
    assert second.response.json()["detail"] == (
        "the free plan allows 1 team(s) per owner and you own 1; upgrade to create more"
    )
    set_tier(client, alice.vault, "pro")
    assert TeamKit(alice, clock).response.status_code == 201
    third = TeamKit(alice, clock)
    assert third.response.status_code == 201
    assert third.response.json()["tier"] == "pro"
    assert TeamKit(alice, clock).response.status_code == 402


@pytest.mark.plans("rfc")
def test_free_plan_has_three_members(
    *, alice: User, bob: User, carol: User, dave: User, clock: Clock, client: TestClient[Any]
) -> None:
    kit = TeamKit(alice, clock)
    assert kit.add(bob).status_code == 200
    assert kit.add(carol, "viewer").status_code == 200
    refused = kit.add(dave)
    assert refused.status_code == 402
    assert refused.json()["detail"] == (
        "the free plan allows 3 members per team and this team has 3; "
        "upgrade the plan or remove a member first"
    )
    assert chain_length(client, kit.team_id) == 3
    set_tier(client, kit.team_id, "pro")
    assert kit.add(dave).status_code == 200


# --- the chain ---------------------------------------------------------------------------------


def test_membership_rows_follow_the_chain(
    alice: User, bob: User, carol: User, clock: Clock, client: TestClient[Any]
) -> None:
    kit = TeamKit(alice, clock)
    response = kit.add(bob)
    assert response.status_code == 200
    assert response.json() == {"seqno": 1, "hash": kit.state.head.hash}
    assert kit.add(carol, "viewer").status_code == 200
    assert member_rows(client, kit.team_id) == {
        alice.user_id: ("owner", False),
        bob.user_id: ("member", False),
        carol.user_id: ("viewer", False),
    }
    promote = keymgmt.change_role(
        kit.state, signer=alice.identity, member=bob.identity.fingerprint, role="admin",
        now=kit.ts(),
    )  # fmt: skip
    assert kit.append(alice, promote).status_code == 200
    assert member_rows(client, kit.team_id)[bob.user_id] == ("admin", False)
    clock.advance(minutes=1)
    assert kit.remove(carol, signer=bob).status_code == 200  # an admin removes a viewer
    assert member_rows(client, kit.team_id)[carol.user_id] == ("viewer", True)
    assert bob.get(f"/api/v1/teams/{kit.team_id}/chain?after=2").json()["statements"] == [
        s.to_dict() for s in kit.state.statements[3:]
    ]
    assert audit_actions(alice, kit.team_id) == [
        "team_created",
        "member_added",
        "member_added",
        "member_role_changed",
        "member_removed",
    ]
    # carol is gone from the moment of removal
    assert carol.get(f"/api/v1/teams/{kit.team_id}/chain").status_code == 404
    assert carol.get(f"/api/v1/teams/{kit.team_id}").status_code == 404


def test_logins_and_api_key_use_are_in_each_teams_trail(
    alice: User, bob: User, carol: User, clock: Clock, client: TestClient[Any]
) -> None:
    """Server-attested lines of `tapes team audit`: a member's login appears in the trail of
    every team they are in (never a team they left), and an API key's use in its team's trail
    on first use and then at most hourly."""
    kit = TeamKit(alice, clock)
    assert kit.add(bob).status_code == 200
    assert kit.add(carol).status_code == 200
    assert kit.remove(carol).status_code == 200
    bob.login(device="bob's <b>desk</b>")
    carol.login(device="gone")
    entries = alice.get(f"/api/v1/teams/{kit.team_id}/audit").json()["entries"]
    logins = [(e["actor_id"], e["detail"]) for e in entries if e["action"] == "login"]
    assert logins == [(bob.user_id, {"device": "bob's <b>desk</b>"})]
    made = alice.post("/api/v1/api-keys/", {"vault": kit.team_id, "permissions": ["pull"]})
    headers = {"Authorization": f"Bearer {made.json()['api_key']}"}
    pull = f"/api/v1/sync/pull?vault={kit.team_id}"

    def uses() -> int:
        alice.relogin()  # her access token lives less than the hour
        return audit_actions(alice, kit.team_id).count("api_key_used")

    assert client.get(pull, headers=headers).status_code == 200
    assert client.get(pull, headers=headers).status_code == 200
    clock.advance(minutes=59)
    assert client.get(pull, headers=headers).status_code == 200
    assert uses() == 1
    clock.advance(minutes=61)
    assert client.get(pull, headers=headers).status_code == 200
    assert uses() == 2


def test_two_appends_against_one_head_one_wins(
    *, alice: User, bob: User, carol: User, dave: User, clock: Clock, client: TestClient[Any]
) -> None:
    kit = TeamKit(alice, clock)
    assert kit.add(bob, "admin").status_code == 200
    head = kit.state
    by_alice = keymgmt.add_member(
        head, signer=alice.identity, member=carol.identity.public, role="member", now=kit.ts()
    )
    by_bob = keymgmt.add_member(
        head, signer=bob.identity, member=dave.identity.public, role="member", now=kit.ts()
    )
    first = alice.post(
        f"/api/v1/teams/{kit.team_id}/chain",
        {"expected_head_seqno": 1, "statements": [by_alice.to_dict()]},
    )
    second = bob.post(
        f"/api/v1/teams/{kit.team_id}/chain",
        {"expected_head_seqno": 1, "statements": [by_bob.to_dict()]},
    )
    assert first.status_code == 200
    assert second.status_code == 409
    assert second.json()["detail"] == (
        "the team chain moved: its head is 2, not 1; fetch it, verify it and sign again"
    )
    chain = alice.get(f"/api/v1/teams/{kit.team_id}/chain").json()["statements"]
    assert chain[2] == by_alice.to_dict()
    assert len(chain) == 3
    assert dave.user_id not in member_rows(client, kit.team_id)
    # a CAS that names the right head but a statement built on the old one: keymgmt refuses
    stale = bob.post(
        f"/api/v1/teams/{kit.team_id}/chain",
        {"expected_head_seqno": 2, "statements": [by_bob.to_dict()]},
    )
    assert stale.status_code == 400
    assert stale.json()["detail"].startswith("the team chain refuses this statement")


def test_forged_unsigned_and_unauthorized_statements_are_refused(
    alice: User, bob: User, carol: User, clock: Clock, client: TestClient[Any]
) -> None:
    kit = TeamKit(alice, clock)
    assert kit.add(bob).status_code == 200

    def post(user: User, statement: dict[str, str]) -> Any:
        return user.post(
            f"/api/v1/teams/{kit.team_id}/chain",
            {"expected_head_seqno": kit.state.head.seqno, "statements": [statement]},
        )

    good = keymgmt.add_member(
        kit.state, signer=alice.identity, member=carol.identity.public, role="member",
        now=kit.ts(),
    ).to_dict()  # fmt: skip
    forged = dict(good, body=good["body"].replace('"role":"member"', '"role":"admin"'))
    response = post(alice, forged)
    assert response.status_code == 400
    assert "bad signature" in response.json()["detail"]
    unsigned = dict(good, signature="A" * 86)
    assert post(alice, unsigned).status_code == 400
    assert post(alice, {"body": good["body"]}).status_code == 400  # no signature at all
    # a plain member may not change the team: the server refuses before keymgmt would
    member_statement = _sign_as(bob, kit, carol)
    response = post(bob, member_statement)
    assert response.status_code == 403
    assert response.json()["detail"] == "this needs an owner or admin of the team"
    # someone else's signature posted by an admin
    response = post(alice, member_statement)
    assert response.status_code == 400
    assert response.json()["detail"] == "statement 2 is not signed by your identity"
    # an admin may not add an owner (keymgmt's rule, enforced by the server too)
    assert kit.add(carol, "admin", signer=alice).status_code == 200
    stranger = User(client, "erin")
    set_tier(client, kit.team_id, "pro")
    statement = _raw_add(kit, signer=carol, member=stranger, role="owner")
    response = carol.post(
        f"/api/v1/teams/{kit.team_id}/chain",
        {"expected_head_seqno": kit.state.head.seqno, "statements": [statement]},
    )
    assert response.status_code == 400
    assert "may not add here" in response.json()["detail"]
    assert chain_length(client, kit.team_id) == 3
    assert stranger.user_id not in member_rows(client, kit.team_id)


def _raw_add(kit: TeamKit, *, signer: User, member: User, role: str) -> dict[str, str]:
    """An ``add`` signed by ``signer`` that keymgmt's builder would refuse to make."""
    import msgspec

    from keymgmt import labels
    from keymgmt._encoding import b64e, canonical_json
    from keymgmt.chain import MemberKeys, StatementBody

    body = StatementBody(
        version=labels.PROTOCOL_VERSION, team=kit.team_id, seqno=kit.state.head.seqno + 1,
        prev=kit.state.head.hash, time=kit.ts(), signer=signer.identity.fingerprint,
        action="add", epoch=kit.state.epoch, member=member.identity.fingerprint,
        member_keys=MemberKeys(
            member.identity.public.x25519.hex(), member.identity.public.ed25519.hex()
        ),
        role=role,  # type: ignore[arg-type]
    )  # fmt: skip
    body_bytes = canonical_json(msgspec.to_builtins(body))
    signature = signer.identity.sign(labels.CHAIN_SIGNATURE + body_bytes)
    return {"body": body_bytes.decode(), "signature": b64e(signature)}


def _sign_as(signer: User, kit: TeamKit, member: User) -> dict[str, str]:
    return _raw_add(kit, signer=signer, member=member, role="member")


def test_add_must_name_a_registered_user(
    alice: User, clock: Clock, client: TestClient[Any]
) -> None:
    kit = TeamKit(alice, clock)
    outsider = keymgmt.generate_identity()
    statement = keymgmt.add_member(
        kit.state, signer=alice.identity, member=outsider.public, role="member", now=kit.ts()
    )
    response = alice.post(
        f"/api/v1/teams/{kit.team_id}/chain",
        {"expected_head_seqno": 0, "statements": [statement.to_dict()]},
    )
    assert response.status_code == 404
    assert response.json()["detail"] == (
        f"no registered user has the fingerprint {outsider.fingerprint}"
    )
    assert chain_length(client, kit.team_id) == 1


def test_members_endpoints_wrap_the_signed_append(
    alice: User, bob: User, carol: User, clock: Clock, client: TestClient[Any]
) -> None:
    kit = TeamKit(alice, clock)
    add = keymgmt.add_member(
        kit.state, signer=alice.identity, member=bob.identity.public, role="member", now=kit.ts()
    )
    response = alice.post(
        f"/api/v1/teams/{kit.team_id}/members",
        {"expected_head_seqno": 0, "statement": add.to_dict()},
    )
    assert response.status_code == 201
    kit.state = keymgmt.extend_chain(kit.state, [add])
    assert member_rows(client, kit.team_id)[bob.user_id] == ("member", False)
    # the add endpoint takes adds only
    removal = kit.remove_statement(bob)
    response = alice.post(
        f"/api/v1/teams/{kit.team_id}/members",
        {"expected_head_seqno": 1, "statement": removal.to_dict()},
    )
    assert response.status_code == 400
    assert response.json()["detail"] == "this endpoint takes one 'add' statement"
    wire = removal.to_dict()
    query: dict[str, str | int] = {
        "expected_head_seqno": 1,
        "statement_body": wire["body"],
        "signature": wire["signature"],
    }
    # the path must name the statement's member
    wrong = client.delete(
        f"/api/v1/teams/{kit.team_id}/members/{alice.user_id}", params=query,
        headers=alice.headers,
    )  # fmt: skip
    assert wrong.status_code == 400
    assert wrong.json()["detail"] == "the statement names another member than the path"
    missing = client.delete(
        f"/api/v1/teams/{kit.team_id}/members/{carol.user_id}", params=query,
        headers=alice.headers,
    )  # fmt: skip
    assert missing.status_code == 404
    done = client.delete(
        f"/api/v1/teams/{kit.team_id}/members/{bob.user_id}", params=query,
        headers=alice.headers,
    )  # fmt: skip
    assert done.status_code == 200, done.text
    assert done.json()["seqno"] == 2
    assert member_rows(client, kit.team_id)[bob.user_id] == ("member", True)
    # without a signed statement the server cannot remove anyone
    bare = client.delete(
        f"/api/v1/teams/{kit.team_id}/members/{bob.user_id}", headers=alice.headers
    )
    assert bare.status_code == 400


# --- keyrings ----------------------------------------------------------------------------------


def test_keyrings_go_to_content_readers_only(
    alice: User, bob: User, carol: User, clock: Clock, client: TestClient[Any]
) -> None:
    kit = TeamKit(alice, clock)
    assert kit.add(bob).status_code == 200
    assert kit.add(carol, "viewer").status_code == 200
    uploaded = kit.upload_keyring(alice, 1)
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json() == {
        "epoch": 1,
        "recipients": sorted([alice.identity.fingerprint, bob.identity.fingerprint]),
    }
    bobs = bob.get(f"/api/v1/teams/{kit.team_id}/keyrings").json()
    opened = keymgmt.open_keyring(bobs[0]["keyring"], state=kit.state, identity=bob.identity)
    assert opened.epoch_key == kit.epoch_keys[1]
    # the viewer has no keyring and reads no blob, but may read the chain
    assert carol.get(f"/api/v1/teams/{kit.team_id}/keyrings").json() == []
    pull = carol.get(f"/api/v1/sync/pull?vault={kit.team_id}")
    assert pull.status_code == 403
    assert pull.json()["detail"] == "this role reads usage metadata only"
    assert carol.get(f"/api/v1/teams/{kit.team_id}/chain").status_code == 200
    # a keyring that also goes to the viewer is refused
    escrow = _keyring_for(kit, alice, extra=carol)
    response = alice.post(f"/api/v1/teams/{kit.team_id}/keyrings", {"keyring": escrow})
    assert response.status_code == 400
    assert response.json()["detail"].startswith("the keyring's recipients must be exactly")
    with db_session(client) as db:
        recipients = db.scalars(select(Keyring.recipient).where(Keyring.team_id == kit.team_id))
        assert carol.identity.fingerprint not in set(recipients)
    # members may not upload keyrings
    response = bob.post(
        f"/api/v1/teams/{kit.team_id}/keyrings", {"keyring": _foreign_keyring(kit, bob)}
    )
    assert response.status_code == 403


def _keyring_for(kit: TeamKit, sealer: User, *, extra: User) -> dict[str, str]:
    """A keyring sealed to the readers *and* to ``extra`` (what keymgmt would never build)."""
    import msgspec

    from keymgmt import labels
    from keymgmt._encoding import b64e, canonical_json

    honest = keymgmt.seal_keyring(
        kit.state, sealer=sealer.identity, epoch=1, epoch_key=kit.epoch_keys[1],
        vault_id_key=kit.vault_key,
    )  # fmt: skip
    recipients = dict(honest.body.recipients)
    recipients[extra.identity.fingerprint] = next(iter(recipients.values()))
    body = msgspec.structs.replace(honest.body, recipients=recipients)
    body_bytes = canonical_json(msgspec.to_builtins(body))
    signature = sealer.identity.sign(labels.KEYRING_SIGNATURE + body_bytes)
    return {"body": body_bytes.decode(), "signature": b64e(signature)}


def test_removal_drops_keyrings_and_old_positions_are_refused(
    alice: User, bob: User, clock: Clock, client: TestClient[Any]
) -> None:
    kit = TeamKit(alice, clock)
    assert kit.add(bob).status_code == 200
    before_removal = kit.state
    assert kit.upload_keyring(alice, 1).status_code == 201
    assert kit.remove(bob).status_code == 200
    with db_session(client) as db:
        rows = db.scalars(select(Keyring.recipient).where(Keyring.team_id == kit.team_id)).all()
    assert rows == [alice.identity.fingerprint]
    # a keyring sealed before the removal (bob still a reader there) is refused now
    stale = keymgmt.seal_keyring(
        before_removal, sealer=alice.identity, epoch=1, epoch_key=kit.epoch_keys[1],
        vault_id_key=kit.vault_key,
    ).to_dict()  # fmt: skip
    response = alice.post(f"/api/v1/teams/{kit.team_id}/keyrings", {"keyring": stale})
    assert response.status_code == 400
    assert kit.upload_keyring(alice, 2).json() == {
        "epoch": 2,
        "recipients": [alice.identity.fingerprint],
    }
    assert bob.get(f"/api/v1/teams/{kit.team_id}/keyrings").status_code == 404


def _push(user: User, vault: str, envelopes: list[dict[str, Any]]) -> Any:
    return user.post("/api/v1/sync/push", {"vault": vault, "envelopes": envelopes})


def _stored(client: TestClient[Any], team_id: str) -> dict[str, int]:
    """node_id → epoch of every node the vault holds."""
    with db_session(client) as db:
        rows = db.execute(
            select(NodeRecord.node_id, NodeRecord.epoch).where(NodeRecord.vault_id == team_id)
        ).all()
    return dict(rows)


def test_after_a_removal_new_nodes_under_the_old_epoch_are_refused(
    alice: User, bob: User, clock: Clock, client: TestClient[Any]
) -> None:
    kit = TeamKit(alice, clock)
    assert kit.add(bob).status_code == 200
    old = kit.vault(alice).chain(2)
    assert _push(alice, kit.team_id, old[:1]).status_code == 200
    assert kit.remove(bob).status_code == 200
    with db_session(client) as db:
        assert db.get(Team, kit.team_id).epoch == 2  # type: ignore[union-attr]
    # a new node sealed under epoch 1 (the removed member holds its key): 409, nothing stored
    refused = _push(alice, kit.team_id, old)
    assert refused.status_code == 409
    assert refused.json()["type"] == Problem.STALE_EPOCH  # what the client acts on, not the text
    assert refused.json()["detail"] == (
        f"node {old[1]['node_id']} is sealed under key epoch 1 but vault {kit.team_id} is in "
        "epoch 2; fetch the chain, verify it and seal again"
    )
    assert _stored(client, kit.team_id) == {old[0]["node_id"]: 1}
    # a metadata-only record carries a signed epoch too, and follows the same rule
    metadata_only = kit.vault(alice, epoch=1).seal_metadata_only(
        "b" * 64, keymgmt.project_metadata("coarse", {"model": "m"}), alice.identity
    )
    assert _push(alice, kit.team_id, [metadata_only]).status_code == 409
    # the node already stored under epoch 1 is still an idempotent no-op
    again = _push(alice, kit.team_id, old[:1])
    assert (again.status_code, again.json()["existing"]) == (200, [old[0]["node_id"]])
    # the same content sealed under epoch 2 gets new IDs (node IDs are keyed per epoch)
    new = kit.vault(alice).chain(2)
    assert kit.vault(alice).epoch == 2
    assert new[0]["node_id"] != old[0]["node_id"]
    stored = _push(alice, kit.team_id, new)
    assert stored.status_code == 200, stored.text
    assert (stored.json()["existing"], stored.json()["stored"]) == (
        [], [new[0]["node_id"], new[1]["node_id"]],
    )  # fmt: skip
    assert _stored(client, kit.team_id) == {
        old[0]["node_id"]: 1, new[0]["node_id"]: 2, new[1]["node_id"]: 2,
    }  # fmt: skip


# --- invites -----------------------------------------------------------------------------------


def _invite(kit: TeamKit, role: str = "member", ttl: int = 3600) -> keymgmt.Invite:
    return keymgmt.create_invite(
        team=kit.team_id, inviter=kit.owner.identity, role=role,  # type: ignore[arg-type]
        now=kit.ts(), ttl=ttl,
    )  # fmt: skip


def _join(user: User, invite: keymgmt.Invite, kit: TeamKit) -> Any:
    code = keymgmt.parse_invite_code(invite.code.text)
    request = keymgmt.make_join_request(code, identity=user.identity, now=kit.ts())
    return user.post(f"/api/v1/invites/{code.invite_id}/join", request.to_dict())


def test_invite_join_and_approval(
    alice: User, bob: User, carol: User, clock: Clock, client: TestClient[Any]
) -> None:
    kit = TeamKit(alice, clock)
    invite = _invite(kit)
    record = invite.server_record()
    # the secret is never accepted
    with_secret = {**record, "secret": invite.code.secret.hex()}
    response = alice.post(f"/api/v1/teams/{kit.team_id}/invite", with_secret)
    assert response.status_code == 400
    assert "secret" in response.json()["detail"]
    response = alice.post(f"/api/v1/teams/{kit.team_id}/invite", record)
    assert response.status_code == 201, response.text
    assert response.json()["used"] is False
    joined = _join(bob, invite, kit)
    assert joined.status_code == 201, joined.text
    assert joined.json()["team_id"] == kit.team_id
    assert _join(bob, invite, kit).status_code == 409  # one request per person
    pending = alice.get(f"/api/v1/teams/{kit.team_id}/join-requests").json()
    assert [(p["user_id"], p["role"], p["status"]) for p in pending] == [
        (bob.user_id, "member", "pending")
    ]
    # the admin's client verifies the request with the secret and signs the add
    verified = keymgmt.verify_join_request(
        pending[0]["request"], invite=invite, state=kit.state, now=kit.ts()
    )
    add = keymgmt.accept_join(kit.state, request=verified, signer=alice.identity, now=kit.ts())
    assert kit.append(alice, add).status_code == 200
    assert kit.upload_keyring(alice, 1).status_code == 201
    assert member_rows(client, kit.team_id)[bob.user_id] == ("member", False)
    # the invitee checks the chain against the code
    chain = bob.get(f"/api/v1/teams/{kit.team_id}/chain").json()["statements"]
    state = keymgmt.verify_chain(chain, team=kit.team_id)
    code = keymgmt.parse_invite_code(invite.code.text)
    assert keymgmt.verify_joined(state, code=code, identity=bob.identity) == "member"
    # single use: no second join, no second approval
    second = _join(carol, invite, kit)
    assert second.status_code == 409
    assert second.json()["detail"] == "this invite was already used; ask for a new one"
    with db_session(client) as db:
        row = db.get(Invite, invite.code.invite_id)
        assert row is not None
        assert row.used_at is not None
        statuses = db.scalars(select(JoinRequest.status)).all()
        assert statuses == ["approved"]
        # nothing the server holds contains the secret
        dump = " ".join(
            str(value)
            for table in ("invites", "join_requests", "audit_log", "chain_statements")
            for row in db.execute(text(f"SELECT * FROM {table}")).all()
            for value in row
        )
    assert invite.code.secret.hex() not in dump
    assert keymgmt.parse_invite_code(invite.code.text).secret.hex() not in dump
    assert "join_requested" in audit_actions(alice, kit.team_id)


def test_expired_and_reused_invites_are_refused(
    alice: User, bob: User, carol: User, clock: Clock, client: TestClient[Any]
) -> None:
    kit = TeamKit(alice, clock)
    invite = _invite(kit, ttl=600)
    assert (
        alice.post(f"/api/v1/teams/{kit.team_id}/invite", invite.server_record()).status_code == 201
    )
    # an invite id can be registered once
    again = alice.post(f"/api/v1/teams/{kit.team_id}/invite", invite.server_record())
    assert again.status_code == 409
    assert _join(bob, invite, kit).status_code == 201
    clock.advance(seconds=601)
    late = _join(carol, invite, kit)
    assert late.status_code == 410
    assert late.json()["detail"] == "this invite expired; ask for a new one"
    # approval after expiry is refused too (the client would refuse it as well)
    pending = alice.get(f"/api/v1/teams/{kit.team_id}/join-requests").json()
    member = keymgmt.PublicIdentity(
        bytes.fromhex(pending[0]["request"]["body"]["member_keys"]["x25519"]),
        bytes.fromhex(pending[0]["request"]["body"]["member_keys"]["ed25519"]),
    )
    add = keymgmt.accept_join(
        kit.state, request=keymgmt.VerifiedJoinRequest(invite, member), signer=alice.identity,
        now=kit.ts(),
    )  # fmt: skip
    assert kit.append(alice, add).status_code == 410
    assert bob.user_id not in member_rows(client, kit.team_id)
    # an unknown invite, and an invite posted with a foreign inviter
    unknown = _invite(kit)
    assert _join(bob, unknown, kit).status_code == 404
    foreign = {**_invite(kit).server_record(), "inviter": bob.identity.fingerprint}
    assert alice.post(f"/api/v1/teams/{kit.team_id}/invite", foreign).status_code == 400


def test_join_request_must_carry_the_callers_keys(
    alice: User, bob: User, carol: User, clock: Clock
) -> None:
    kit = TeamKit(alice, clock)
    invite = _invite(kit)
    alice.post(f"/api/v1/teams/{kit.team_id}/invite", invite.server_record())
    code = keymgmt.parse_invite_code(invite.code.text)
    bobs = keymgmt.make_join_request(code, identity=bob.identity, now=kit.ts()).to_dict()
    response = carol.post(f"/api/v1/invites/{code.invite_id}/join", bobs)
    assert response.status_code == 400
    assert response.json()["detail"] == "the join request must carry your own registered keys"


# --- audit and denials -------------------------------------------------------------------------


def test_audit_chain_verifies_and_detects_tampering(
    alice: User, bob: User, clock: Clock, client: TestClient[Any]
) -> None:
    kit = TeamKit(alice, clock)
    clock.advance(seconds=1)
    assert kit.add(bob).status_code == 200
    page = alice.get(f"/api/v1/teams/{kit.team_id}/audit").json()
    assert page["chain_ok"] is True
    assert [e["action"] for e in page["entries"]] == ["team_created", "member_added"]
    assert page["entries"][1]["prev_hash"] == page["entries"][0]["hash"]
    assert page["entries"][1]["detail"] == {
        "seqno": 1, "epoch": 1, "user_id": bob.user_id, "role": "member",
    }  # fmt: skip
    assert bob.get(f"/api/v1/teams/{kit.team_id}/audit").status_code == 403
    with db_session(client) as db, db.begin():
        db.execute(
            text("UPDATE audit_log SET subject = 'someone-else' WHERE id = :id"),
            {"id": page["entries"][1]["id"]},
        )
    tampered = alice.get(f"/api/v1/teams/{kit.team_id}/audit").json()
    assert tampered["chain_ok"] is False


ENDPOINTS = [
    ("get", "/api/v1/teams/{team}/chain"),
    ("post", "/api/v1/teams/{team}/chain"),
    ("get", "/api/v1/teams/{team}/keyrings"),
    ("post", "/api/v1/teams/{team}/keyrings"),
    ("post", "/api/v1/teams/{team}/members"),
    ("post", "/api/v1/teams/{team}/invite"),
    ("get", "/api/v1/teams/{team}/join-requests"),
    ("get", "/api/v1/teams/{team}/audit"),
    ("get", "/api/v1/teams/{team}/sessions"),
]


def _body_for(path: str, kit: TeamKit) -> dict[str, Any]:
    if path.endswith("/chain"):
        return {"expected_head_seqno": 0, "statements": [kit.genesis.to_dict()]}
    if path.endswith("/keyrings"):
        return {"keyring": kit.keyring(kit.owner, 1)}
    if path.endswith("/members"):
        return {"expected_head_seqno": 0, "statement": kit.genesis.to_dict()}
    return _invite(kit).server_record()


@pytest.mark.parametrize(("method", "template"), ENDPOINTS)
def test_outsiders_get_the_same_answer_as_for_nothing(
    alice: User, mallory: User, clock: Clock, method: str, template: str
) -> None:
    kit = TeamKit(alice, clock)
    answers = []
    for team in (kit.team_id, new_team_id()):
        path = template.format(team=team)
        if method == "get":
            response = mallory.get(path)
        else:
            response = mallory.post(path, _body_for(path, kit))
        answers.append((response.status_code, response.json()))
    assert answers[0] == answers[1]
    assert answers[0][0] == 404
    assert answers[0][1]["detail"] == "no such vault"


def test_outsiders_cannot_remove_members_or_unshare(
    alice: User, bob: User, mallory: User, clock: Clock
) -> None:
    kit = TeamKit(alice, clock)
    assert kit.add(bob).status_code == 200
    wire = kit.remove_statement(bob).to_dict()
    query = f"expected_head_seqno=1&statement_body={wire['body']}&signature={wire['signature']}"
    answers = [
        mallory.delete(f"/api/v1/teams/{team}/members/{bob.user_id}?{query}")
        for team in (kit.team_id, new_team_id())
    ]
    answers += [
        mallory.delete(f"/api/v1/sessions/{'a' * 64}/share?team={team}")
        for team in (kit.team_id, new_team_id())
    ]
    assert {(r.status_code, r.json()["detail"]) for r in answers} == {(404, "no such vault")}
    assert member_rows(bob.client, kit.team_id)[bob.user_id] == ("member", False)


def test_a_writer_that_waited_for_the_lock_sees_the_moved_head(
    alice: User, bob: User, carol: User, clock: Clock, client: TestClient[Any]
) -> None:
    """Two appends against one head at the same moment: the one that waits gets 409, never
    a statement built on a head it read before the lock (PostgreSQL row lock; SQLite's
    ``BEGIN IMMEDIATE``)."""
    from server.deps import Principal
    from server.domain.chain import lock_team
    from server.domain.teams import append_statements
    from server.errors import ApiError
    from tapes_e2e.protocol.teams import SignedWire

    kit = TeamKit(alice, clock)
    head = kit.state
    first = keymgmt.add_member(
        head, signer=alice.identity, member=bob.identity.public, role="member", now=kit.ts()
    )
    second = keymgmt.add_member(
        head, signer=alice.identity, member=carol.identity.public, role="member", now=kit.ts()
    )
    engine = client.app.state.engine
    outcome: list[object] = []

    def racer() -> None:
        with Session(engine) as db, db.begin():
            # the row as a handler holds it from its ACL check, read before the lock (on
            # PostgreSQL; SQLite's BEGIN IMMEDIATE already waits here)
            held = db.get(Team, kit.team_id)
            try:
                append_statements(
                    db, Principal(user_id=alice.user_id), kit.team_id, 0,
                    [SignedWire(**second.to_dict())], clock(), plans_mode="off",
                )  # fmt: skip
                outcome.append("appended")
            except ApiError as exc:
                outcome.append((exc.status, exc.detail))
            assert held is not None  # alive until here

    with Session(engine) as db, db.begin():
        lock_team(db, kit.team_id)
        thread = threading.Thread(target=racer)
        thread.start()
        time.sleep(0.5)  # the racer has read the team and now waits for the lock
        append_statements(
            db, Principal(user_id=alice.user_id), kit.team_id, 0,
            [SignedWire(**first.to_dict())], clock(), plans_mode="off",
        )  # fmt: skip
    thread.join(timeout=30)
    assert outcome == [
        (409, "the team chain moved: its head is 1, not 0; fetch it, verify it and sign again")
    ]
    assert chain_length(client, kit.team_id) == 2
    assert carol.user_id not in member_rows(client, kit.team_id)


def test_a_statement_dated_in_the_future_is_refused(
    alice: User, bob: User, clock: Clock, client: TestClient[Any]
) -> None:
    """It would block the chain: keymgmt refuses every later statement dated before it."""
    kit = TeamKit(alice, clock)
    ahead = keymgmt.add_member(
        kit.state, signer=alice.identity, member=bob.identity.public, role="member",
        now=kit.ts() + 3600,
    )  # fmt: skip
    response = alice.post(
        f"/api/v1/teams/{kit.team_id}/chain",
        {"expected_head_seqno": 0, "statements": [ahead.to_dict()]},
    )
    assert (response.status_code, response.json()["detail"]) == (
        400,
        "statement 1 is dated in the future; check the signer's clock",
    )
    assert chain_length(client, kit.team_id) == 1
    assert kit.add(bob).status_code == 200


MANAGER_ENDPOINTS = [
    ("post", "/api/v1/teams/{team}/chain"),
    ("post", "/api/v1/teams/{team}/members"),
    ("post", "/api/v1/teams/{team}/keyrings"),
    ("post", "/api/v1/teams/{team}/invite"),
    ("get", "/api/v1/teams/{team}/join-requests"),
    ("get", "/api/v1/teams/{team}/audit"),
]


@pytest.mark.parametrize(("method", "template"), MANAGER_ENDPOINTS)
def test_manager_endpoints_by_role(
    *, alice: User, bob: User, carol: User, clock: Clock, client: TestClient[Any], method: str,
    template: str,
) -> None:  # fmt: skip
    """member and viewer: 403; removed member: 404 as for a team that does not exist."""
    set_tier(client, alice.vault, "pro")
    kit = TeamKit(alice, clock)
    set_tier(client, kit.team_id, "pro")
    dave = User(client, "dave")
    assert kit.add(bob).status_code == 200
    assert kit.add(carol, "viewer").status_code == 200
    assert kit.add(dave).status_code == 200
    assert kit.remove(dave).status_code == 200
    path = template.format(team=kit.team_id)
    answers = {}
    for name, user in (("member", bob), ("viewer", carol), ("removed", dave)):
        response = user.get(path) if method == "get" else user.post(path, _body_for(path, kit))
        answers[name] = (response.status_code, response.json()["detail"])
    assert answers == {
        "member": (403, "this needs an owner or admin of the team"),
        "viewer": (403, "this needs an owner or admin of the team"),
        "removed": (404, "no such vault"),
    }
    assert chain_length(client, kit.team_id) == 5


def test_an_audit_page_is_checked_in_o_page_and_links_to_the_one_before(
    alice: User, bob: User, carol: User, clock: Clock, client: TestClient[Any]
) -> None:
    """A page checks its own entries and the link to the entry before it, never the whole log
    (which grows with every shared read): tampering shows on the page that holds it, and a
    changed hash shows on the page after too."""
    kit = TeamKit(alice, clock)
    assert kit.add(bob).status_code == 200
    assert kit.add(carol).status_code == 200
    url = f"/api/v1/teams/{kit.team_id}/audit"
    entries = alice.get(url).json()["entries"]
    assert len(entries) == 3
    first, second = entries[0]["id"], entries[1]["id"]
    with db_session(client) as db, db.begin():
        db.execute(text("UPDATE audit_log SET subject = 'x' WHERE id = :id"), {"id": second})
    pages = [
        alice.get(url, params={"after": after, "limit": 1}).json() for after in (0, first, second)
    ]
    assert [p["chain_ok"] for p in pages] == [True, False, True]
    with db_session(client) as db, db.begin():
        db.execute(
            text("UPDATE audit_log SET hash = :h WHERE id = :id"), {"h": "0" * 64, "id": second}
        )
    after_it = alice.get(url, params={"after": second, "limit": 1}).json()
    assert after_it["chain_ok"] is False  # its link to the changed entry no longer holds


def test_a_member_who_leaves_loses_access_at_once_and_waits_for_the_signed_removal(
    client: TestClient[Any], clock: Clock, alice: User, bob: User
) -> None:
    kit = TeamKit(alice, clock)
    assert kit.add(bob).status_code == 200
    team = kit.team_id
    assert bob.get(f"/api/v1/sync/pull?vault={team}").status_code == 200
    key = alice.post("/api/v1/api-keys/", {"vault": team, "permissions": ["admin"]}).json()
    by_key = client.post(
        f"/api/v1/teams/{team}/leave", headers={"Authorization": f"Bearer {key['api_key']}"}
    )
    assert by_key.status_code == 401  # only an interactive login leaves
    assert bob.post(f"/api/v1/teams/{team}/leave", {}).status_code == 204
    for path in (f"/api/v1/sync/pull?vault={team}", f"/api/v1/teams/{team}/keyrings",
                 f"/api/v1/teams/{team}/chain"):  # fmt: skip
        assert bob.get(path).status_code == 404, path
    listed = {m["handle"]: m for m in alice.get(f"/api/v1/teams/{team}/members").json()}
    assert listed[bob.handle]["left_at"] == clock.now.isoformat()
    assert listed[alice.handle]["left_at"] is None
    actions = [e["action"] for e in alice.get(f"/api/v1/teams/{team}/audit").json()["entries"]]
    assert "member_left" in actions
    # the chain still names bob until an admin signs the removal, which starts a new epoch
    assert kit.remove(bob).status_code == 200
    assert bob.handle not in {
        m["handle"] for m in alice.get(f"/api/v1/teams/{team}/members").json()
    }
    # the last owner cannot leave
    refused = alice.post(f"/api/v1/teams/{team}/leave", {})
    assert (refused.status_code, refused.json()["detail"]) == (
        409, "you are the team's only owner: make another member owner first",
    )  # fmt: skip
