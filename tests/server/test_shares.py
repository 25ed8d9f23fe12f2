"""Sharing through the real app: exactly the shared session becomes readable to the team, through
``/nodes`` and ``/sync/pull``; unsharing, expiry and removal end it at once; listings; refusals."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

import keymgmt
from server.db.models import AuditEntry, NodeRecord, ShareNode, Team
from server.deps import Principal
from server.domain.shares.services import record_shared_read
from server.plans import apply_retention
from tests.server.conftest import Clock, User, Vault
from tests.server.test_teams import TeamKit, db_session

NO_NODE = {"type": "about:blank", "title": "Not Found", "status": 404, "detail": "no such node"}


def push(user: User, vault: str, envelopes: list[dict[str, Any]]) -> Any:
    response = user.post("/api/v1/sync/push", {"vault": vault, "envelopes": envelopes})
    assert response.status_code == 200, response.text
    return response.json()


class Story:
    """Alice's team with bob as a member; alice pushed two sessions, A (3 nodes) and B (2)."""

    def __init__(self, alice: User, bob: User, clock: Clock) -> None:
        self.kit = TeamKit(alice, clock)
        assert self.kit.response.status_code == 201
        assert self.kit.add(bob).status_code == 200
        self.alice, self.bob, self.clock = alice, bob, clock
        vault = self.kit.vault(alice)
        self.a = vault.chain(3)
        parent: str | None = None
        self.b = []
        for index in range(2):
            parent, env = vault.seal(f"other {index}", parent)
            self.b.append(env)
        push(alice, self.kit.team_id, self.a + self.b)

    @property
    def team(self) -> str:
        return self.kit.team_id

    def statement(
        self, sharer: User, leaf: str, *, expires_at: int | None = None, title: str = "bug hunt"
    ) -> dict[str, str]:
        return keymgmt.create_share(
            state=self.kit.state, keys=self.kit.team_keys(), sharer=sharer.identity,
            leaf_id=leaf, title=title, note="see turn 2", now=self.kit.ts(),
            expires_at=expires_at,
        ).to_dict()  # fmt: skip

    def share(self, sharer: User, leaf: str, *, expires_at: int | None = None, **extra: Any) -> Any:
        body = {
            "team": self.team,
            "statement": self.statement(sharer, leaf, expires_at=expires_at),
            **extra,
        }
        return sharer.post(f"/api/v1/sessions/{leaf}/share", body)

    def pulled(self, user: User) -> list[str]:
        response = user.get(f"/api/v1/sync/pull?vault={self.team}&after=0")
        assert response.status_code == 200, response.text
        return [item["envelope"]["node_id"] for item in response.json()["items"]]


@pytest.fixture
def story(alice: User, bob: User, clock: Clock) -> Story:
    return Story(alice, bob, clock)


def relogin(user: User) -> None:
    """A fresh access token after the test clock moved past the old one's lifetime."""
    user.access = user.login()["access_token"]


def ids(envelopes: list[dict[str, Any]]) -> list[str]:
    return [e["node_id"] for e in envelopes]


def test_a_share_gives_the_team_exactly_that_session(story: Story, bob: User) -> None:
    assert story.pulled(bob) == []
    leaf = story.a[-1]["node_id"]
    response = story.share(story.alice, leaf)
    assert response.status_code == 201, response.text
    share = response.json()
    assert (share["team_id"], share["session_id"], share["sharer"]) == (
        story.team,
        leaf,
        story.alice.identity.fingerprint,
    )
    assert share["seq"] == 6  # the vault's next sequence number after five nodes
    assert sorted(story.pulled(bob)) == sorted(ids(story.a))
    assert bob.get(f"/api/v1/nodes/{story.a[0]['node_id']}").json()["envelope"] == story.a[0]
    ancestry = bob.get(f"/api/v1/nodes/{leaf}/ancestry").json()["items"]
    assert [n["envelope"]["node_id"] for n in ancestry] == ids(story.a)[::-1]
    # session B stays alice's alone, and looks exactly like a node that does not exist
    hidden = bob.get(f"/api/v1/nodes/{story.b[0]['node_id']}")
    absent = bob.get(f"/api/v1/nodes/{'0' * 64}")
    assert (hidden.status_code, hidden.json()) == (404, NO_NODE)
    assert (absent.status_code, absent.json()) == (404, NO_NODE)
    # listings carry the signed statement (title and note encrypted) as stored
    shared = bob.get("/api/v1/shared").json()
    assert [s["share_id"] for s in shared] == [share["share_id"]]
    verified = keymgmt.verify_share(
        shared[0]["statement"], state=story.kit.state, now=story.kit.ts()
    )
    title, note = keymgmt.open_share_text(verified, keys=story.kit.team_keys())
    assert (title, note) == ("bug hunt", "see turn 2")
    assert "bug hunt" not in str(shared)
    page = bob.get(f"/api/v1/teams/{story.team}/sessions").json()
    assert ([i["session_id"] for i in page["items"]], page["cursor"], page["more"]) == (
        [leaf],
        6,
        False,
    )
    assert bob.get(f"/api/v1/teams/{story.team}/sessions?after=6").json()["items"] == []
    # the next pushed node takes the sequence number after the share
    _hash, more = story.kit.vault(story.alice).seal("a new session")
    assert push(story.alice, story.team, [more])["head_seq"] == 7


def test_unshare_ends_access_at_once(story: Story, bob: User) -> None:
    leaf = story.a[-1]["node_id"]
    assert story.share(story.alice, leaf).status_code == 201
    assert len(story.pulled(bob)) == 3
    # a member who did not share it may not unshare it
    refused = bob.delete(f"/api/v1/sessions/{leaf}/share?team={story.team}")
    assert refused.status_code == 403
    done = story.alice.delete(f"/api/v1/sessions/{leaf}/share?team={story.team}")
    assert done.status_code == 204
    assert story.pulled(bob) == []
    assert bob.get(f"/api/v1/nodes/{leaf}").json() == NO_NODE
    assert bob.get("/api/v1/shared").json() == []
    again = story.alice.delete(f"/api/v1/sessions/{leaf}/share?team={story.team}")
    assert (again.status_code, again.json()["detail"]) == (404, "no such share")
    # the owner sees her own nodes regardless, and may share it again
    assert len(story.pulled(story.alice)) == 5
    assert story.share(story.alice, leaf).status_code == 201


def test_an_admin_may_unshare_a_members_share(story: Story, bob: User, clock: Clock) -> None:
    vault = story.kit.vault(bob)
    first_hash, first = vault.seal("bob 0")
    _hash, second = vault.seal("bob 1", first_hash)
    mine = [first, second]
    push(bob, story.team, mine)
    assert story.share(bob, mine[-1]["node_id"]).status_code == 201
    assert sorted(story.pulled(story.alice)) == sorted(ids(story.a + story.b + mine))
    response = story.alice.delete(f"/api/v1/sessions/{mine[-1]['node_id']}/share?team={story.team}")
    assert response.status_code == 204
    assert sorted(story.pulled(story.alice)) == sorted(ids(story.a + story.b))


def test_expiry_ends_access(story: Story, bob: User, clock: Clock) -> None:
    leaf = story.a[-1]["node_id"]
    expires = story.kit.ts() + 3600
    response = story.share(story.alice, leaf, expires_at=expires)
    assert response.status_code == 201
    assert response.json()["expires_at"] == (clock.now + timedelta(hours=1)).isoformat()
    clock.advance(minutes=59)
    relogin(bob)
    assert len(story.pulled(bob)) == 3
    clock.advance(minutes=1)
    assert story.pulled(bob) == []
    assert bob.get(f"/api/v1/nodes/{leaf}").json() == NO_NODE
    assert bob.get(f"/api/v1/teams/{story.team}/sessions").json()["items"] == []


def test_a_server_side_expiry_must_agree_with_the_signed_one(story: Story, clock: Clock) -> None:
    leaf = story.a[-1]["node_id"]
    signed = story.kit.ts() + 3600
    other = (clock.now + timedelta(hours=2)).isoformat()
    response = story.share(story.alice, leaf, expires_at=signed, expires_at_override=None)
    assert response.status_code == 400  # unknown field
    body = {
        "team": story.team,
        "statement": story.statement(story.alice, leaf, expires_at=signed),
        "expires_at": other,
    }
    response = story.alice.post(f"/api/v1/sessions/{leaf}/share", body)
    assert response.status_code == 400
    assert response.json()["detail"] == "expires_at differs from the expiry in the signed share"
    # an unsigned expiry alone is enforced by the server
    body = {
        "team": story.team,
        "statement": story.statement(story.alice, leaf),
        "expires_at": (clock.now + timedelta(minutes=5)).isoformat(),
    }
    assert story.alice.post(f"/api/v1/sessions/{leaf}/share", body).status_code == 201
    clock.advance(minutes=5)
    relogin(story.bob)
    assert story.pulled(story.bob) == []


def test_a_removed_member_reads_nothing(story: Story, bob: User) -> None:
    leaf = story.a[-1]["node_id"]
    assert story.share(story.alice, leaf).status_code == 201
    assert len(story.pulled(bob)) == 3
    assert story.kit.remove(bob).status_code == 200
    pull = bob.get(f"/api/v1/sync/pull?vault={story.team}")
    assert (pull.status_code, pull.json()["detail"]) == (404, "no such vault")
    assert bob.get(f"/api/v1/nodes/{leaf}").json() == NO_NODE
    assert bob.get("/api/v1/shared").json() == []
    assert bob.get(f"/api/v1/teams/{story.team}/sessions").status_code == 404


def test_share_refusals(story: Story, bob: User, client: TestClient[Any]) -> None:
    leaf = story.a[-1]["node_id"]
    # bob may not share alice's session; it answers like a node that does not exist
    theirs = story.share(bob, leaf)
    nothing = story.share(bob, "0" * 64)
    assert (theirs.status_code, theirs.json()) == (404, NO_NODE)
    assert (nothing.status_code, nothing.json()) == (404, NO_NODE)
    # a statement signed by someone else, or for another leaf
    bobs = story.statement(bob, leaf)
    response = story.alice.post(
        f"/api/v1/sessions/{leaf}/share", {"team": story.team, "statement": bobs}
    )
    assert (response.status_code, response.json()["detail"]) == (
        400,
        "the share is not signed by your identity",
    )
    other_leaf = story.statement(story.alice, story.b[-1]["node_id"])
    response = story.alice.post(
        f"/api/v1/sessions/{leaf}/share", {"team": story.team, "statement": other_leaf}
    )
    assert (response.status_code, response.json()["detail"]) == (
        400,
        "the share names another session than the path",
    )
    # a tampered statement
    good = story.statement(story.alice, leaf)
    tampered = dict(good, body=good["body"].replace('"expires_at":null', '"expires_at":1'))
    response = story.alice.post(
        f"/api/v1/sessions/{leaf}/share", {"team": story.team, "statement": tampered}
    )
    assert response.status_code == 400
    assert response.json()["detail"].startswith("the share does not verify")
    # a personal vault is not a team
    response = story.alice.post(
        f"/api/v1/sessions/{leaf}/share", {"team": story.alice.vault, "statement": good}
    )
    assert response.status_code == 400
    # twice
    assert story.share(story.alice, leaf).status_code == 201
    assert story.share(story.alice, leaf).status_code == 409
    with db_session(client) as db:
        assert db.scalar(select(func.count()).select_from(ShareNode)) == 3


def test_a_viewer_cannot_share_or_list(
    alice: User, bob: User, clock: Clock, client: TestClient[Any]
) -> None:
    kit = TeamKit(alice, clock)
    assert kit.add(bob, "viewer").status_code == 200
    envelopes = kit.vault(alice).chain(2)
    push(alice, kit.team_id, envelopes)
    leaf = envelopes[-1]["node_id"]
    statement = keymgmt.create_share(
        state=kit.state, keys=kit.team_keys(), sharer=alice.identity, leaf_id=leaf,
        title="t", now=kit.ts(),
    ).to_dict()  # fmt: skip
    assert (
        alice.post(
            f"/api/v1/sessions/{leaf}/share", {"team": kit.team_id, "statement": statement}
        ).status_code
        == 201
    )
    assert bob.get("/api/v1/shared").json() == []
    listing = bob.get(f"/api/v1/teams/{kit.team_id}/sessions")
    assert (listing.status_code, listing.json()["detail"]) == (
        403,
        "this role reads usage metadata only",
    )
    assert bob.get(f"/api/v1/nodes/{leaf}").json() == NO_NODE
    response = bob.post(
        f"/api/v1/sessions/{leaf}/share", {"team": kit.team_id, "statement": statement}
    )
    assert response.status_code == 403


def test_a_share_never_reaches_nodes_its_sharer_cannot_read(
    story: Story, bob: User, client: TestClient[Any]
) -> None:
    # bob learns the ID of one of alice's unshared nodes and builds his own turn on it
    private_parent = story.b[-1]
    vault = story.kit.vault(bob)
    parent_hash = _tapes_hash_of(story, private_parent)
    _hash, child = vault.seal("bob's turn", parent_hash)
    assert child["parent_id"] == private_parent["node_id"]
    push(bob, story.team, [child])
    response = story.share(bob, child["node_id"])
    assert response.status_code == 201
    with db_session(client) as db:
        shared = db.scalars(select(ShareNode.node_id)).all()
    assert shared == [child["node_id"]]
    assert story.pulled(bob) == [child["node_id"]]
    assert bob.get(f"/api/v1/nodes/{private_parent['node_id']}").json() == NO_NODE


def _tapes_hash_of(story: Story, envelope: dict[str, Any]) -> str:
    """The tapes hash behind one of ``story.b``'s envelopes (the test built them)."""
    vault = story.kit.vault(story.alice)
    parent: str | None = None
    for index in range(2):
        parent, env = vault.seal(f"other {index}", parent)
        if env["node_id"] == envelope["node_id"]:
            assert parent is not None
            return parent
    raise AssertionError("not one of story.b")


def test_sharing_and_shared_reads_are_audited(
    story: Story, bob: User, client: TestClient[Any], clock: Clock
) -> None:
    leaf = story.a[-1]["node_id"]
    assert story.share(story.alice, leaf).status_code == 201
    assert story.alice.delete(f"/api/v1/sessions/{leaf}/share?team={story.team}").status_code == 204
    engine = client.app.state.engine
    with Session(engine) as db, db.begin():
        record = db.scalars(select(NodeRecord).where(NodeRecord.node_id == leaf)).one()
        record_shared_read(db, Principal(user_id=bob.user_id), record, clock())
        record_shared_read(db, Principal(user_id=story.alice.user_id), record, clock())
    with Session(engine) as db:
        rows = db.execute(
            select(AuditEntry.action, AuditEntry.actor_id, AuditEntry.subject)
            .where(AuditEntry.team_id == story.team)
            .order_by(AuditEntry.id)
        ).all()
        head = db.get(Team, story.team)
    assert [tuple(r) for r in rows[-3:]] == [
        ("session_shared", story.alice.user_id, leaf),
        ("session_unshared", story.alice.user_id, leaf),
        ("shared_session_read", bob.user_id, leaf),
    ]
    assert head is not None
    assert head.audit_head is not None
    page = story.alice.get(f"/api/v1/teams/{story.team}/audit?limit=2").json()
    assert (len(page["entries"]), page["more"]) == (2, True)


def test_sharing_a_session_whose_parent_link_loops_back_terminates(
    story: Story, bob: User, client: TestClient[Any]
) -> None:
    """Retention deleted session A's root; its ID was pushed again naming A's leaf as parent.
    Sharing the leaf walks only to parents stored before their child: it stops at the gap
    instead of circling, and the team gets what is left of A."""
    a0, a1, a2 = story.a
    with Session(client.app.state.engine) as db, db.begin():
        db.execute(delete(NodeRecord).where(NodeRecord.node_id == a0["node_id"]))
    _hash, looping = story.kit.vault(story.alice).seal("again", None)
    push(story.alice, story.team, [dict(looping, node_id=a0["node_id"], parent_id=a2["node_id"])])
    assert story.share(story.alice, a2["node_id"]).status_code == 201
    assert sorted(story.pulled(bob)) == sorted([a1["node_id"], a2["node_id"]])


def test_retention_in_one_vault_deletes_nothing_of_another_vaults_shares(
    story: Story, bob: User, clock: Clock, client: TestClient[Any]
) -> None:
    """Mallory pushes the team's node IDs (node IDs are chosen by clients) into her own free
    vault and lets them expire. Retention there deletes her rows only: the team (on a plan that
    keeps full history) still shares session A with Bob."""
    with db_session(client) as db, db.begin():
        db.execute(update(Team).where(Team.id == story.team).values(tier="pro"))
    leaf = story.a[-1]["node_id"]
    assert story.share(story.alice, leaf).status_code == 201
    mallory = User(client)
    copies = [
        dict(envelope, team=mallory.vault, parent_id=None)
        for envelope in Vault(mallory.vault, mallory.identity).chain(len(story.a))
    ]
    copies = [dict(c, node_id=a["node_id"]) for c, a in zip(copies, story.a, strict=True)]
    pushed = mallory.post("/api/v1/sync/push", {"vault": mallory.vault, "envelopes": copies})
    assert pushed.status_code == 200, pushed.text
    clock.advance(days=31)
    with db_session(client) as db, db.begin():
        assert apply_retention(db, clock(), "rfc") == len(story.a)  # mallory's copies only
    relogin(bob)
    assert sorted(story.pulled(bob)) == sorted(ids(story.a))


def test_a_shared_continuation_does_not_keep_the_original_session_readable(
    story: Story, bob: User, carol: User, clock: Clock, client: TestClient[Any]
) -> None:
    """Bob continues session A that Alice shared, and shares his continuation. When Alice
    unshares A (or her share expires), the team loses A's nodes, though Bob's share covered
    them when he made it; Bob's own nodes stay shared. A share reaches only its sharer's nodes."""
    assert story.kit.add(carol).status_code == 200
    a_leaf = story.a[-1]
    expiry = int(clock().timestamp()) + 60
    assert story.share(story.alice, a_leaf["node_id"], expires_at=expiry).status_code == 201
    keys = story.kit.vault(bob)
    _hash, reply = keys.seal("bob continues", None)
    reply = dict(reply, parent_id=a_leaf["node_id"])
    push(bob, story.team, [reply])
    assert story.share(bob, reply["node_id"]).status_code == 201
    everything = sorted([*ids(story.a), reply["node_id"]])
    assert sorted(story.pulled(carol)) == everything
    clock.advance(seconds=61)  # Alice's share of A expires
    relogin(carol)
    assert story.pulled(carol) == [reply["node_id"]]
    assert carol.get(f"/api/v1/nodes/{a_leaf['node_id']}").status_code == 404
    path = carol.get(f"/api/v1/nodes/{reply['node_id']}/ancestry").json()
    assert ([i["envelope"]["node_id"] for i in path["items"]], path["next"]) == (
        [reply["node_id"]], None,
    )  # fmt: skip
    # sharing A again brings it back; unsharing it takes it away again
    relogin(story.alice)
    assert story.share(story.alice, a_leaf["node_id"]).status_code == 201
    assert sorted(story.pulled(carol)) == everything
    gone = story.alice.delete(f"/api/v1/sessions/{a_leaf['node_id']}/share?team={story.team}")
    assert gone.status_code == 204
    assert story.pulled(carol) == [reply["node_id"]]
