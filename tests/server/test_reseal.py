"""``/api/v1/sync/reseal`` through the real app: a member swaps their own stale nodes for the
same nodes sealed under the current epoch, in place (sequence numbers, uploader, usage kept),
and old IDs keep naming them (node reads, ancestry, pushes naming a parent); anything else, a
hostile member's above all, is refused with nothing changed."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import select

import keymgmt
from server.db.models import NodeAlias, NodeRecord
from tests.server.conftest import Clock, User
from tests.server.test_teams import TeamKit, db_session

Swap = dict[str, Any]


class History:
    """Alice's two-node session and Bob's one node, pushed in epoch 1; then a rotation."""

    def __init__(self, alice: User, bob: User, clock: Clock) -> None:
        self.kit = kit = TeamKit(alice, clock)
        assert kit.add(bob).status_code == 200
        self.alice, self.bob = alice, bob
        first = kit.vault(alice)
        self.root_hash, root = first.seal("root")
        self.child_hash, child = first.seal("child", self.root_hash)
        _, theirs = kit.vault(bob).seal("bob's")
        assert _push(alice, kit.team_id, [root, child]).status_code == 200
        assert _push(bob, kit.team_id, [theirs]).status_code == 200
        self.old = {"root": root, "child": child, "bob": theirs}
        key = keymgmt.new_key()
        kit.epoch_keys[2] = key
        rotate = keymgmt.rotate(kit.state, signer=alice.identity, new_epoch_key=key, now=kit.ts())
        assert kit.append(alice, rotate).status_code == 200

    def swap(self, name: str, **changes: Any) -> Swap:
        """The honest swap of one of the pushed nodes, sealed again in epoch 2."""
        old = self.old[name]
        vault = self.kit.vault(self.alice if name != "bob" else self.bob)
        text, parent_hash = {"root": ("root", None), "child": ("child", self.root_hash),
                             "bob": ("bob's", None)}[name]  # fmt: skip
        _, envelope = vault.seal(text, parent_hash, parent_id=old["parent_id"])
        return {"old_id": old["node_id"], "envelope": envelope | changes}

    def post(self, user: User, *swaps: Swap) -> Any:
        return user.post("/api/v1/sync/reseal", {"vault": self.kit.team_id, "items": list(swaps)})


def _push(user: User, vault: str, envelopes: list[dict[str, Any]]) -> Any:
    return user.post("/api/v1/sync/push", {"vault": vault, "envelopes": envelopes})


def _rows(client: TestClient[Any], vault: str) -> dict[str, tuple[int, int, str | None]]:
    """node_id → (seq, epoch, parent_id column)."""
    with db_session(client) as db:
        rows = db.scalars(select(NodeRecord).where(NodeRecord.vault_id == vault)).all()
        return {r.node_id: (r.seq, r.epoch, r.parent_id) for r in rows}


@pytest.fixture
def history(alice: User, bob: User, clock: Clock) -> History:
    return History(alice, bob, clock)


def test_a_member_reseals_their_own_history_in_place_and_old_ids_still_name_it(
    client: TestClient[Any], history: History
) -> None:
    team, alice, bob = history.kit.team_id, history.alice, history.bob
    before = _rows(client, team)
    status = alice.get(f"/api/v1/sync/reseal?vault={team}").json()
    assert status == {"vault": team, "epoch": 2, "mine": 2, "others": 1}
    page = alice.get(f"/api/v1/sync/reseal/nodes?vault={team}").json()
    assert [i["envelope"]["node_id"] for i in page["items"]] == [
        history.old["root"]["node_id"], history.old["child"]["node_id"],
    ]  # fmt: skip
    root, child = history.swap("root"), history.swap("child")
    response = history.post(alice, root, child)
    assert response.status_code == 200, response.text
    assert response.json() == {"resealed": 2}
    after = _rows(client, team)
    new_root, new_child = root["envelope"]["node_id"], child["envelope"]["node_id"]
    old_root, old_child = history.old["root"]["node_id"], history.old["child"]["node_id"]
    assert after[new_root] == (before[old_root][0], 2, None)  # same place, the new epoch
    assert after[new_child] == (before[old_child][0], 2, new_root)  # linked to the new root
    assert old_root not in after
    assert alice.get(f"/api/v1/sync/reseal?vault={team}").json()["mine"] == 0
    # old IDs still name them: a read, an ancestry, a push that names the old parent
    assert alice.get(f"/api/v1/nodes/{old_child}").json()["envelope"]["node_id"] == new_child
    walk = alice.get(f"/api/v1/nodes/{old_child}/ancestry").json()["items"]
    assert [(i["envelope"]["node_id"], i.get("renamed_from")) for i in walk] == [
        (new_child, old_child), (new_root, old_root),
    ]  # fmt: skip
    _, continued = history.kit.vault(bob).seal("bob continues", history.child_hash,
                                               parent_id=old_child)  # fmt: skip
    assert _push(bob, team, [continued]).status_code == 200
    assert _rows(client, team)[continued["node_id"]][2] == new_child
    with db_session(client) as db:
        aliases = {(a.old_id, a.node_id) for a in db.scalars(select(NodeAlias))}
    assert aliases == {(old_root, new_root), (old_child, new_child)}


@pytest.mark.parametrize(
    ("who", "name", "changes", "status", "words"),
    [
        ("bob", "root", {}, 400, "not a node you uploaded"),  # a hostile member
        ("alice", "root", {"epoch": 1}, 409, "epoch 2"),
        ("alice", "root", {"metadata": {"model": "other"}}, 400, "clear metadata"),
        ("alice", "root", {"record_type": "summary"}, 400, "sealed again"),
        ("alice", "bob", {}, 400, "not a node you uploaded"),
    ],
)
def test_a_swap_that_is_not_ones_own_node_sealed_again_changes_nothing(
    client: TestClient[Any], history: History, who: str, name: str, changes: dict[str, Any],
    status: int, words: str,
) -> None:  # fmt: skip
    user = history.alice if who == "alice" else history.bob
    before = _rows(client, history.kit.team_id)
    if name == "bob":  # Alice swapping Bob's node, sealed by her
        swap = history.swap("bob")
        swap["envelope"] = history.swap("root")["envelope"]
    else:
        swap = history.swap(name, **changes)
    response = history.post(user, swap)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]
    assert _rows(client, history.kit.team_id) == before


def test_a_batch_is_all_or_nothing_and_a_swap_cannot_change_the_parent(
    client: TestClient[Any], history: History
) -> None:
    before = _rows(client, history.kit.team_id)
    root = history.swap("root")
    orphan = history.swap("child")
    orphan["envelope"]["parent_id"] = history.old["bob"]["node_id"]  # another existing node
    response = history.post(history.alice, root, orphan)
    assert response.status_code == 400
    assert "another parent" in response.json()["detail"]
    assert _rows(client, history.kit.team_id) == before
    # and a node already under the current epoch is not swapped again
    assert history.post(history.alice, root).status_code == 200
    again = history.post(history.alice, root)
    assert again.status_code in (400, 409)


def test_a_viewer_or_a_pull_only_key_reseals_nothing(
    client: TestClient[Any], history: History, carol: User
) -> None:
    assert history.kit.add(carol, "viewer").status_code == 200
    assert history.post(carol, history.swap("root")).status_code == 403
    key = history.alice.post("/api/v1/api-keys/", {"vault": history.kit.team_id,
                                                   "permissions": ["pull"]}).json()  # fmt: skip
    response = client.post(
        "/api/v1/sync/reseal",
        json={"vault": history.kit.team_id, "items": [history.swap("root")]},
        headers={"Authorization": f"Bearer {key['api_key']}"},
    )
    assert response.status_code == 404  # a key without push sees no vault to write, as a push
