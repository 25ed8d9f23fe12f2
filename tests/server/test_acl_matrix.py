"""Every endpoint by every role: who gets what (DESIGN §8, issue 5 "ACL").

One team, one of each role, plus a removed member, an outsider (with a team of their own), an
anonymous caller and an API key scoped to another vault. Alice (owner) pushed two sessions into
the team vault and shared one of them. The expected status of every cell is written out; a denial
must be a 401/403/404 and never leak whether the thing exists.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from litestar.testing import TestClient

from tests.server.conftest import Clock, User
from tests.server.test_shares import Story
from tests.server.test_teams import TeamKit, set_tier

ROLES = (
    "owner", "admin", "member", "viewer", "removed", "outsider", "anonymous", "wrong_key",
    "usage_key",
)  # fmt: skip


class World:
    def __init__(self, client: TestClient[Any], clock: Clock) -> None:
        self.client = client
        alice, bob = User(client, "alice"), User(client, "bob")
        carol, dave, erin = User(client, "carol"), User(client, "dave"), User(client, "erin")
        mallory = User(client, "mallory")
        set_tier(client, alice.vault, "pro")
        self.story = Story(alice, bob, clock)
        kit = self.story.kit
        assert kit.add(carol, "admin").status_code == 200
        assert kit.add(dave, "viewer").status_code == 200
        assert kit.add(erin).status_code == 200
        assert kit.remove(erin).status_code == 200
        TeamKit(mallory, clock)
        self.shared_leaf = self.story.a[-1]["node_id"]
        assert self.story.share(alice, self.shared_leaf).status_code == 201
        self.private_node = self.story.b[0]["node_id"]
        key = alice.post("/api/v1/api-keys/", {"vault": alice.vault, "permissions": ["pull"]})
        self.wrong_key = key.json()["api_key"]
        usage = alice.post("/api/v1/api-keys/", {"vault": self.team, "permissions": ["read-usage"]})
        self.usage_key = usage.json()["api_key"]
        self.users = {
            "owner": alice, "admin": carol, "member": bob, "viewer": dave,
            "removed": erin, "outsider": mallory,
        }  # fmt: skip

    @property
    def team(self) -> str:
        return self.story.team

    def headers(self, role: str) -> dict[str, str]:
        if role == "anonymous":
            return {}
        if role == "wrong_key":
            return {"Authorization": f"Bearer {self.wrong_key}"}
        if role == "usage_key":  # a manager's read-usage key for the team
            return {"Authorization": f"Bearer {self.usage_key}"}
        return self.users[role].headers

    def fresh_envelope(self, role: str) -> dict[str, Any]:
        author = self.users.get(role, self.users["owner"])
        _, envelope = self.story.kit.vault(author).seal(f"new turn by {role}")
        return envelope


Request = Callable[[World, str], Any]


def get(path: str) -> Request:
    """GET ``/api/v1/`` + ``path``, its placeholders filled from the world."""

    def run(world: World, role: str) -> Any:
        filled = path.format(team=world.team, shared=world.shared_leaf, private=world.private_node)
        url = "/api/v1/" + filled
        return world.client.get(url, headers=world.headers(role))

    return run


def post(path: str, body: dict[str, str]) -> Request:
    """POST a JSON body to ``/api/v1/`` + ``path``."""

    def run(world: World, role: str) -> Any:
        filled = {k: v.format(team=world.team) for k, v in body.items()}
        return world.client.post("/api/v1/" + path, json=filled, headers=world.headers(role))

    return run


def push(world: World, role: str) -> Any:
    body = {"vault": world.team, "envelopes": [world.fresh_envelope(role)]}
    return world.client.post("/api/v1/sync/push", json=body, headers=world.headers(role))


# role order: owner, admin, member, viewer, removed, outsider, anonymous, wrong_key (a key for
# another vault), usage_key (a read-usage key for this team: usage and the roster, no content)
MATRIX: list[tuple[str, Request, tuple[int, ...]]] = [
    ("team", get("teams/{team}"), (200, 200, 200, 200, 404, 404, 401, 404, 200)),
    ("pull", get("sync/pull?vault={team}"), (200, 200, 200, 403, 404, 404, 401, 404, 404)),
    ("status", get("sync/status?vault={team}"), (200, 200, 200, 403, 404, 404, 401, 404, 404)),
    ("sessions", get("sessions?vault={team}"), (200, 200, 200, 403, 404, 404, 401, 404, 404)),
    ("shared node", get("nodes/{shared}"), (200, 200, 200, 404, 404, 404, 401, 404, 404)),
    ("ancestry", get("nodes/{shared}/ancestry"), (200, 200, 200, 404, 404, 404, 401, 404, 404)),
    ("private node", get("nodes/{private}"), (200, 404, 404, 404, 404, 404, 401, 404, 404)),
    ("members", get("teams/{team}/members"), (200, 200, 200, 200, 404, 404, 401, 404, 200)),
    ("chain", get("teams/{team}/chain"), (200, 200, 200, 200, 404, 404, 401, 404, 200)),
    ("audit", get("teams/{team}/audit"), (200, 200, 403, 403, 404, 404, 401, 404, 404)),
    ("joins", get("teams/{team}/join-requests"), (200, 200, 403, 403, 404, 404, 401, 404, 404)),
    # viewers read usage metadata only: not even the list of shared sessions
    ("shares", get("teams/{team}/sessions"), (200, 200, 200, 403, 404, 404, 401, 404, 404)),
    ("shared list", get("shared"), (200, 200, 200, 200, 200, 200, 401, 200, 200)),
    ("push", push, (200, 200, 200, 403, 404, 404, 401, 404, 404)),
    # the team's figures: owner, admins and viewers (a member reads their own, not the team's)
    ("usage", get("teams/{team}/usage/"), (200, 200, 403, 200, 404, 404, 401, 404, 200)),
    ("usage csv", get("teams/{team}/usage?format=csv&group_by=member"),
     (200, 200, 403, 200, 404, 404, 401, 404, 200)),
    # a browser sign-in link: interactive logins that read the team's usage (a member's 404
    # reads like a team that does not exist, as on the dashboard); API keys paste themselves
    ("dashboard link", post("dashboard/links", {"team": "{team}"}),
     (201, 201, 404, 201, 404, 404, 401, 403, 403)),
]  # fmt: skip


@pytest.fixture
def world(client: TestClient[Any], clock: Clock) -> World:
    return World(client, clock)


def test_every_endpoint_for_every_role(world: World) -> None:
    problems = []
    for name, request, expected in MATRIX:
        for role, want in zip(ROLES, expected, strict=True):
            response = request(world, role)
            if response.status_code != want:
                problems.append(f"{name} as {role}: {response.status_code}, expected {want}")
            if response.status_code >= 400:
                assert response.headers["content-type"].startswith("application/problem+json")
    assert problems == []


def test_a_denial_reads_like_absence(world: World) -> None:
    """The 404 for another team's real vault equals the 404 for a vault that never existed."""
    outsider = world.users["outsider"]
    for path in ("/api/v1/sync/pull?vault={v}", "/api/v1/teams/{v}", "/api/v1/teams/{v}/chain"):
        real = world.client.get(path.format(v=world.team), headers=outsider.headers)
        absent = world.client.get(path.format(v="t_doesnotexist00"), headers=outsider.headers)
        assert (real.status_code, real.json()) == (absent.status_code, absent.json())


def test_the_shared_list_shows_each_caller_only_their_teams_shares(world: World) -> None:
    def listed(role: str) -> list[str]:
        response = world.client.get("/api/v1/shared", headers=world.headers(role))
        return [item["session_id"] for item in response.json()]

    assert listed("owner") == listed("admin") == listed("member") == [world.shared_leaf]
    assert listed("removed") == listed("outsider") == listed("wrong_key") == []
    assert listed("viewer") == listed("usage_key") == []


def test_what_each_reader_pulls(world: World) -> None:
    shared = {e["node_id"] for e in world.story.a}
    everything = shared | {e["node_id"] for e in world.story.b}
    owner = world.story.pulled(world.users["owner"])
    admin = world.story.pulled(world.users["admin"])
    member = world.story.pulled(world.users["member"])
    assert set(owner) == everything
    assert set(admin) == shared
    assert set(member) == shared
