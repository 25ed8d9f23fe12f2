"""No sequence of API calls lets a user read what was not shared with them (DESIGN §9).

A hypothesis state machine drives the real app: members push sessions, share and unshare them,
and the owner removes members. After every step each user's pull, and a direct fetch of every
node, must equal what a plain model of the rules allows: your own uploads, plus the ancestry of
live shares to a team you still belong to.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from litestar.testing import TestClient

import keymgmt
from server.app import create_app
from server.db.engine import make_engine
from server.db.migrate import upgrade
from server.settings import Settings
from tests.server.conftest import AUDIENCE, Clock, User
from tests.server.test_teams import TeamKit, set_tier

NAMES = ("alice", "bob", "carol")


class SharingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        root = Path(tempfile.mkdtemp(prefix="acl-prop-"))
        url = f"sqlite+pysqlite:///{root / 'server.sqlite'}"
        self.engine = make_engine(url)
        upgrade(self.engine)
        self.clock = Clock()
        app = create_app(
            Settings(database_url=url, auth_rate_per_minute=100_000, access_ttl=86_400),
            engine=self.engine,
            clock=self.clock,
            audience=AUDIENCE,
        )
        self.client: TestClient[Any] = TestClient(app, base_url=AUDIENCE)
        self.client.__enter__()
        self.users = {name: User(self.client, name) for name in NAMES}
        set_tier(self.client, self.users["alice"].vault, "pro")
        self.kit = TeamKit(self.users["alice"], self.clock)
        for name in NAMES[1:]:
            assert self.kit.add(self.users[name]).status_code == 200
        self.members = set(NAMES)
        # the model
        self.uploader: dict[str, str] = {}  # node id -> name
        self.parent: dict[str, str | None] = {}
        self.tapes_hash: dict[str, str] = {}
        self.leaves: dict[str, list[str]] = {name: [] for name in NAMES}
        self.shares: dict[str, str] = {}  # leaf -> sharer

    def teardown(self) -> None:
        self.client.__exit__(None, None, None)
        self.engine.dispose()

    def _ancestry(self, node: str) -> list[str]:
        path: list[str] = []
        current: str | None = node
        while current is not None:
            path.append(current)
            current = self.parent[current]
        return path

    def readable(self, name: str) -> set[str]:
        if name not in self.members:
            return set()
        own = {n for n, who in self.uploader.items() if who == name}
        shared = {n for leaf in self.shares for n in self._ancestry(leaf)}
        return own | shared

    @rule(name=st.sampled_from(NAMES), continue_own=st.booleans())
    @precondition(lambda self: len(self.uploader) < 24)
    def push(self, name: str, continue_own: bool) -> None:
        if name not in self.members:
            return
        user = self.users[name]
        parent_id = self.leaves[name][-1] if continue_own and self.leaves[name] else None
        parent_hash = self.tapes_hash[parent_id] if parent_id else None
        tapes_hash, envelope = self.kit.vault(user).seal(
            f"{name} {len(self.uploader)}", parent_hash, parent_id=parent_id
        )
        response = user.post(
            "/api/v1/sync/push", {"vault": self.kit.team_id, "envelopes": [envelope]}
        )
        assert response.status_code == 200, response.text
        node = envelope["node_id"]
        self.uploader[node], self.parent[node], self.tapes_hash[node] = name, parent_id, tapes_hash
        if parent_id:
            self.leaves[name].remove(parent_id)
        self.leaves[name].append(node)

    @rule(name=st.sampled_from(NAMES), index=st.integers(0, 5))
    def share(self, name: str, index: int) -> None:
        leaves = [leaf for leaf in self.leaves[name] if leaf not in self.shares]
        if name not in self.members or not leaves:
            return
        leaf = leaves[index % len(leaves)]
        statement = keymgmt.create_share(
            state=self.kit.state, keys=self.kit.team_keys(), sharer=self.users[name].identity,
            leaf_id=leaf, title="t", note="n", now=self.kit.ts(), expires_at=None,
        ).to_dict()  # fmt: skip
        response = self.users[name].post(
            f"/api/v1/sessions/{leaf}/share", {"team": self.kit.team_id, "statement": statement}
        )
        assert response.status_code == 201, response.text
        self.shares[leaf] = name

    @rule(index=st.integers(0, 5))
    def unshare(self, index: int) -> None:
        if not self.shares:
            return
        leaf = sorted(self.shares)[index % len(self.shares)]
        response = self.users["alice"].delete(
            f"/api/v1/sessions/{leaf}/share?team={self.kit.team_id}"
        )
        assert response.status_code == 204, response.text
        del self.shares[leaf]

    @rule(name=st.sampled_from(NAMES[1:]))
    def remove(self, name: str) -> None:
        if name not in self.members:
            return
        assert self.kit.remove(self.users[name]).status_code == 200
        self.members.discard(name)
        # removal revokes the removed member's live shares
        self.shares = {leaf: who for leaf, who in self.shares.items() if who != name}

    @invariant()
    def everyone_reads_exactly_what_the_rules_allow(self) -> None:
        for name, user in self.users.items():
            allowed = self.readable(name)
            response = user.get(f"/api/v1/sync/pull?vault={self.kit.team_id}&limit=1000")
            pulled = (
                {item["envelope"]["node_id"] for item in response.json()["items"]}
                if response.status_code == 200
                else set()
            )
            assert pulled == allowed, (name, response.status_code)
            for node in self.uploader:
                fetched = user.get(f"/api/v1/nodes/{node}").status_code
                assert fetched == (200 if node in allowed else 404), (name, node)


SharingMachine.TestCase.settings = settings(
    max_examples=8,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_no_call_sequence_reads_what_was_not_shared = SharingMachine.TestCase
