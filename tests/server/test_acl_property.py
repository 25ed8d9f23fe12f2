"""No sequence of API calls lets a user read what was not shared with them (DESIGN §9).

A hypothesis state machine drives the real app: members push sessions (new ones, continuations
of their own, and continuations of sessions shared with them), share them (some with an expiry)
and unshare them, time passes (shares expire), retention deletes old nodes, and the owner removes
members. After every step each user's pull, and a direct fetch of every node, must equal what a
plain model of the rules allows: your own uploads, plus, of each live share to a team you still
belong to, the nodes *its sharer uploaded* among those it covered when it was made (the walk
from its leaf through what the sharer could read then). A share never reaches another
uploader's nodes, so an owner's unshare or expiry ends access to their session even after
others shared continuations of it.

Usage is checked after every step too: the team's figures are the owner's to read (200, and they
count every node each member ever pushed, whatever retention or unsharing did since), a plain
member gets 403 and a removed one 404, as the ACL table says.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from litestar.testing import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

import keymgmt
from server.app import create_app
from server.db.engine import make_engine
from server.db.migrate import upgrade
from server.db.models import NodeRecord
from server.plans import apply_retention
from server.settings import Settings
from tests.server.conftest import AUDIENCE, Clock, User
from tests.server.test_teams import TeamKit, set_tier

NAMES = ("alice", "bob", "carol")
TICK = timedelta(seconds=61)  # a share's expiry is one tick; the chain's skew allows ~10 ticks


@dataclass(frozen=True)
class ModelShare:
    sharer: str
    nodes: frozenset[str]  # what the walk from the leaf covered when it was shared
    expires: datetime | None


class SharingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="acl-prop-"))
        url = f"sqlite+pysqlite:///{self.root / 'server.sqlite'}"
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
        set_tier(self.client, self.kit.team_id, "free")  # retention keeps 30 days here
        self.members = set(NAMES)
        # the model
        self.uploader: dict[str, str] = {}  # node id -> name
        self.parent: dict[str, str | None] = {}
        self.tapes_hash: dict[str, str] = {}
        self.leaves: dict[str, list[str]] = {name: [] for name in NAMES}
        self.shares: dict[str, ModelShare] = {}  # leaf -> share (live or expired)
        self.ticks = 0
        self.uploaded: dict[str, datetime] = {}  # node -> its upload time, as aged
        self.pushed: dict[str, int] = dict.fromkeys(NAMES, 0)  # nodes ever pushed, per member

    def teardown(self) -> None:
        self.client.__exit__(None, None, None)
        self.engine.dispose()
        shutil.rmtree(self.root)  # each example has its own server file: none is left behind

    def _live(self, share: ModelShare) -> bool:
        return share.expires is None or share.expires > self.clock()

    def readable(self, name: str) -> set[str]:
        if name not in self.members:
            return set()
        own = {n for n, who in self.uploader.items() if who == name}
        shared = {
            n
            for share in self.shares.values()
            if self._live(share)
            for n in share.nodes
            if self.uploader.get(n) == share.sharer
        }
        return own | shared

    def _walk(self, leaf: str, name: str) -> frozenset[str]:
        """The share's walk: from the leaf through nodes the sharer can read now."""
        allowed, covered = self.readable(name), set()
        current: str | None = leaf
        while current is not None and current in allowed:
            covered.add(current)
            current = self.parent.get(current)
        return frozenset(covered)

    @rule(
        name=st.sampled_from(NAMES),
        mode=st.sampled_from(["new", "own", "shared"]),
        index=st.integers(0, 5),
    )
    @precondition(lambda self: len(self.uploader) < 24)
    def push(self, name: str, mode: str, index: int) -> None:
        if name not in self.members:
            return
        user = self.users[name]
        others = sorted(n for n in self.readable(name) if self.uploader[n] != name)
        parent_id: str | None = None
        if mode == "own" and self.leaves[name]:
            parent_id = self.leaves[name][-1]
        elif mode == "shared" and others:  # continue a session someone shared with me
            parent_id = others[index % len(others)]
        parent_hash = self.tapes_hash[parent_id] if parent_id else None
        tapes_hash, envelope = self.kit.vault(user).seal(
            f"{name} {len(self.uploader)} {self.clock()}", parent_hash, parent_id=parent_id
        )
        response = user.post(
            "/api/v1/sync/push", {"vault": self.kit.team_id, "envelopes": [envelope]}
        )
        assert response.status_code == 200, response.text
        node = envelope["node_id"]
        self.uploader[node], self.parent[node], self.tapes_hash[node] = name, parent_id, tapes_hash
        self.uploaded[node] = self.clock()
        self.pushed[name] += 1
        if parent_id in self.leaves[name]:
            self.leaves[name].remove(parent_id)
        self.leaves[name].append(node)

    @rule(name=st.sampled_from(NAMES), index=st.integers(0, 5), expiring=st.booleans())
    def share(self, name: str, index: int, expiring: bool) -> None:
        taken = {leaf for leaf, share in self.shares.items() if self._live(share)}
        leaves = [leaf for leaf in self.leaves[name] if leaf not in taken]
        if name not in self.members or not leaves:
            return
        leaf = leaves[index % len(leaves)]
        expires = self.clock() + TICK if expiring else None
        statement = keymgmt.create_share(
            state=self.kit.state, keys=self.kit.team_keys(), sharer=self.users[name].identity,
            leaf_id=leaf, title="t", note="n", now=self.kit.ts(),
            expires_at=int(expires.timestamp()) if expires else None,
        ).to_dict()  # fmt: skip
        response = self.users[name].post(
            f"/api/v1/sessions/{leaf}/share", {"team": self.kit.team_id, "statement": statement}
        )
        assert response.status_code == 201, response.text
        self.shares[leaf] = ModelShare(name, self._walk(leaf, name), expires)

    @rule()
    @precondition(lambda self: self.ticks < 8)
    def tick(self) -> None:
        """Time passes: shares made with an expiry one tick ahead end."""
        self.clock.advance(seconds=TICK.total_seconds())
        self.ticks += 1

    @rule(days=st.sampled_from([10, 31]))
    def retention(self, days: int) -> None:
        """Every node so far ages by ``days`` (the team is on the free plan: 30 days kept)."""
        with Session(self.engine) as db, db.begin():
            for record in db.scalars(
                select(NodeRecord).where(NodeRecord.vault_id == self.kit.team_id)
            ):  # row by row: SQLite keeps stamps as text, which SQL arithmetic would break
                record.uploaded_at -= timedelta(days=days)
            db.flush()
            apply_retention(db, self.clock(), "rfc")
        self.uploaded = {n: t - timedelta(days=days) for n, t in self.uploaded.items()}
        cutoff = self.clock() - timedelta(days=30)
        for node in [n for n, t in self.uploaded.items() if t < cutoff]:
            for table in (self.uploader, self.parent, self.tapes_hash, self.uploaded):
                table.pop(node, None)
            for leaves in self.leaves.values():
                if node in leaves:
                    leaves.remove(node)
        self.shares = {
            leaf: ModelShare(share.sharer, share.nodes & set(self.uploader), share.expires)
            for leaf, share in self.shares.items()
        }

    @rule(index=st.integers(0, 5))
    def unshare(self, index: int) -> None:
        live = sorted(leaf for leaf, share in self.shares.items() if self._live(share))
        if not live:
            return
        leaf = live[index % len(live)]
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
        self.shares = {leaf: sh for leaf, sh in self.shares.items() if sh.sharer != name}

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

    @invariant()
    def only_the_owner_reads_the_teams_usage_and_it_counts_every_push(self) -> None:
        today = self.clock().date()
        span = f"from={today - timedelta(days=30)}&to={today + timedelta(days=1)}"
        path = f"/api/v1/teams/{self.kit.team_id}/usage?group_by=member&{span}"
        handles = {self.users[n].user_id: n for n in NAMES}
        for name, user in self.users.items():
            response = user.get(path)
            if name == "alice":
                assert response.status_code == 200, response.text
                counted = {
                    handles.get(row["group"]["member"], row["group"]["member"]): row["figures"][
                        "nodes"
                    ]
                    for row in response.json()["rows"]
                }
                assert counted == {n: c for n, c in self.pushed.items() if c}
            else:
                assert response.status_code == (403 if name in self.members else 404), name


SharingMachine.TestCase.settings = settings(
    max_examples=15,
    stateful_step_count=14,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_no_call_sequence_reads_what_was_not_shared = SharingMachine.TestCase
