"""Teams through the ``tapes`` CLI against the real app: create, invite, join, approve, sync with
``team_id`` and ``auto_share``, read a teammate's shared session bit for bit, removal and its new
epoch, a metadata-only team, and every bad input as one line with a hint."""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

import keymgmt
from server.db.models import Keyring, NodeRecord
from server.domain.nodes.stored import as_json
from tapes_e2e import account
from tapes_e2e.client import ApiClient
from tapes_e2e.context import Settings, open_provider
from tapes_e2e.envelopes import MetadataRecord, open_envelope
from tapes_e2e.errors import ConfigError, RemoteError, StaleEpochError
from tapes_e2e.identity import unlock
from tapes_e2e.protocol import PushResult
from tapes_e2e.providers import TeamProvider
from tapes_e2e.providers.base import ShareOptions
from tapes_e2e.providers.cloud import TeamCloudProvider
from tapes_e2e.providers.hybrid import HybridProvider
from tapes_e2e.providers.local import LocalProvider
from tapes_e2e.remote_sync import VaultHolder, VaultPusher
from tapes_e2e.store.syncstate import SyncState
from tapes_e2e.sync.worker import SyncError, SyncRunner
from tapes_e2e.teams import local, sharing
from tapes_e2e.teams.access import open_team
from tapes_e2e.vaults import Trust, VaultAccess
from tests.client.conftest import FAST, Tapes
from tests.client.test_sync_round_trip import hashes
from tests.conftest import chain
from tests.server.conftest import AUDIENCE

CODE = re.compile(r"TAPES-[A-Z2-7-]+")


def ok(result: tuple[int, str, str]) -> str:
    code, out, err = result
    assert code == 0, err
    return out


def one_error(result: tuple[int, str, str], *words: str) -> str:
    """The command failed with exit 1 and one ``tapes: error:`` line (plus its hint)."""
    code, _, err = result
    assert code == 1, err
    lines = err.strip().splitlines()
    assert lines[0].startswith("tapes: error: "), err
    assert all(line.startswith(("tapes: error: ", "tapes: hint: ")) for line in lines), err
    assert sum(line.startswith("tapes: error: ") for line in lines) == 1, err
    assert any(line.startswith("tapes: hint: ") for line in lines), err
    for word in words:
        assert word in lines[0], err
    return lines[0]


def record(home: Path, *texts: str, parent: Any = None) -> list[str]:
    """Record one session of ``texts`` in ``home``'s store; its hashes, root first."""
    nodes = chain(list(texts), parent=parent)
    with LocalProvider(home / "tapes.sqlite") as store:
        store.put_many(nodes)
    return [n.hash for n in nodes]


def fingerprint(home: Path) -> str:
    return str(json.loads((home / "session.json").read_text())["fingerprint"])


def api_for(home: Path, client: TestClient[Any]) -> ApiClient:
    return ApiClient(client, api_url=AUDIENCE, session=account.load_session(home))


def access_for(home: Path, client: TestClient[Any], team: str) -> VaultAccess:
    identity = unlock(home, floor=FAST)
    return open_team(api_for(home, client), team, identity, home)


def team_rows(client: TestClient[Any], team: str) -> list[NodeRecord]:
    with Session(client.app.state.engine) as db:
        return list(db.scalars(select(NodeRecord).where(NodeRecord.vault_id == team)).all())


class Team:
    """Alice's team with Bob admitted through the CLI's invite, join and approve."""

    def __init__(self, tapes: Tapes, tmp_path: Path, *args: str) -> None:
        self.tapes, self.root = tapes, tmp_path
        for who in ("alice", "bob"):
            ok(tapes(who, "auth", "login", "--server", AUDIENCE, "--handle", who))
        out = ok(tapes("alice", "team", "create", "Acme", *args))
        self.id = re.search(r"\((t_[A-Za-z0-9_-]+)\)", out).group(1)  # type: ignore[union-attr]
        self.code = self.admit("bob")

    def admit(self, who: str) -> str:
        """Invite ``who`` (logged in already), who asks to join; Alice approves; ``who`` joins.
        Returns the invite code."""
        code = self.invite()
        assert "asked to join" in ok(self.tapes(who, "team", "join", code))
        approved = ok(self.tapes("alice", "team", "approve", self.id, "--yes"))
        assert f"approved: {fingerprint(self.root / who)} as member" in approved
        assert "joined team" in ok(self.tapes(who, "team", "join", code))
        return code

    def invite(self, *args: str) -> str:
        out = ok(self.tapes("alice", "team", "invite", self.id, *args))
        match = CODE.search(out)
        assert match is not None
        return match.group(0)

    def home(self, who: str) -> Path:
        return self.root / who

    def sync_into_team(self, who: str, *, auto_share: bool) -> None:
        flag = "--auto-share" if auto_share else "--no-auto-share"
        ok(self.tapes(who, "storage", "configure", "--team", self.id, flag))


@pytest.fixture
def team(tapes: Tapes, tmp_path: Path) -> Team:
    return Team(tapes, tmp_path)


@pytest.mark.server_backends
def test_create_invite_join_approve_and_show(team: Team, tapes: Tapes, tmp_path: Path) -> None:
    bob = fingerprint(tmp_path / "bob")
    shown = json.loads(ok(tapes("bob", "team", "show", team.id, "--json")))
    assert {(m["fingerprint"], m["role"]) for m in shown["members"]} == {
        (fingerprint(tmp_path / "alice"), "owner"),
        (bob, "member"),
    }
    assert (shown["epoch"], shown["metadata_policy"], shown["content_policy"]) == (
        1, "coarse", "encrypted",
    )  # fmt: skip
    # both see the same chain: the same safety number
    alices = json.loads(ok(tapes("alice", "team", "show", "Acme", "--json")))
    assert alices["safety_number"] == shown["safety_number"]
    listed = json.loads(ok(tapes("bob", "team", "list", "--json")))
    assert [(t["team_id"], t["role"]) for t in listed] == [(team.id, "member")]
    # nothing secret left behind: the used invite and the finished join are forgotten
    assert local.load(tmp_path / "alice").invites == {}
    assert local.load(tmp_path / "bob").joins == {}
    for who in ("alice", "bob"):
        assert (tmp_path / who / local.TEAMS_FILE).stat().st_mode & 0o777 == 0o600


@pytest.mark.server_backends
def test_shared_sessions_reach_the_team_bit_for_bit_and_unshared_ones_do_not(
    team: Team, tapes: Tapes, tmp_path: Path, client: TestClient[Any]
) -> None:
    alice, bob = team.home("alice"), team.home("bob")
    team.sync_into_team("alice", auto_share=False)
    private = record(alice, "my private notes", "not for the team")
    ok(tapes("alice", "storage", "sync"))
    team.sync_into_team("alice", auto_share=True)
    shared = record(alice, "Why is the build red?", "A flaky test.", "Which one?")
    branch = record(alice, "Regenerated: test_sync.", parent=chain(
        ["Why is the build red?", "A flaky test."])[-1])  # fmt: skip
    ok(tapes("alice", "storage", "sync"))
    rows = team_rows(client, team.id)
    assert len(rows) == 6
    assert {r.epoch for r in rows} == {1}
    # Bob syncs the team and gets exactly the shared sessions, verified
    team.sync_into_team("bob", auto_share=True)
    report = json.loads(ok(tapes("bob", "storage", "sync", "--json")))
    assert report["rejected"] == []
    assert hashes(bob) == sorted(shared + branch)
    assert not set(private) & set(hashes(bob))
    for leaf in (shared[-1], branch[-1]):
        assert ok(tapes("alice", "session", "export", leaf)) == ok(
            tapes("bob", "session", "export", leaf)
        )
    # the shared list names the sessions by their tapes hash, with decrypted titles
    listed = json.loads(ok(tapes("bob", "session", "shared", "--team", team.id, "--json")))
    assert {s["session_id"] for s in listed} == {shared[-1], branch[-1]}
    assert {s["title"] for s in listed} == {"Why is the build red?"}
    assert {s["shared_by"] for s in listed} == {fingerprint(alice)}
    # the server refuses Bob the unshared session's nodes
    keys = access_for(bob, client, team.id).content_keys()
    secret_id = keys.node_id(1, private[-1])
    refused = tapes_get(bob, client, f"/api/v1/nodes/{secret_id}")
    assert refused == 404
    # auto-share is idempotent: another sync shares nothing twice, and an extended leaf is shared
    ok(tapes("alice", "storage", "sync"))
    longer = record(alice, "And the fix?", parent=chain(
        ["Why is the build red?", "A flaky test.", "Which one?"])[-1])  # fmt: skip
    ok(tapes("alice", "storage", "sync"))
    ok(tapes("bob", "storage", "sync"))
    assert longer[0] in hashes(bob)
    listed = json.loads(ok(tapes("bob", "session", "shared", "--json")))
    assert sorted(s["session_id"] for s in listed) == sorted({shared[-1], branch[-1], longer[0]})


def tapes_get(home: Path, client: TestClient[Any], path: str) -> int:
    session = account.load_session(home)
    assert session is not None
    headers = {"Authorization": f"Bearer {session.access_token}"}
    return client.get(path, headers=headers).status_code


def test_explicit_share_unshare_and_expiry(team: Team, tapes: Tapes, tmp_path: Path) -> None:
    alice = team.home("alice")
    session = record(alice, "share me by hand", "sure")
    # not synced at all: share pushes the session into the team vault first
    out = ok(tapes(
        "alice", "session", "share", session[-1][:10], "--team", "Acme", "--title", "by hand",
        "--note", "look at turn 2", "--expires-in", "2d",
    ))  # fmt: skip
    assert session[-1] in out
    one_error(tapes("alice", "session", "share", session[-1], "--team", team.id), "already shared")
    listed = json.loads(ok(tapes("bob", "session", "shared", "--json")))
    assert [(s["session_id"], s["title"], s["note"]) for s in listed] == [
        (session[-1], "by hand", "look at turn 2")
    ]
    assert listed[0]["expires_at"] is not None
    ok(tapes("alice", "session", "unshare", session[-1], "--team", team.id))
    assert json.loads(ok(tapes("bob", "session", "shared", "--json"))) == []
    one_error(tapes("alice", "session", "unshare", session[-1], "--team", team.id), "not shared")
    other = record(alice, "share me for scripts")
    shared = json.loads(ok(tapes("alice", "session", "share", other[-1], "--team", team.id,
                                 "--expires-in", "7d", "--json")))  # fmt: skip
    assert (shared["session_id"], shared["team_id"], shared["nodes"]) == (other[-1], team.id, 1)
    assert shared["expires_at"] is not None


@pytest.mark.server_backends
def test_after_removal_new_content_is_under_an_epoch_the_removed_member_lacks(
    team: Team, tapes: Tapes, tmp_path: Path, client: TestClient[Any]
) -> None:
    alice, bob = team.home("alice"), team.home("bob")
    team.sync_into_team("alice", auto_share=True)
    team.sync_into_team("bob", auto_share=True)
    before = record(alice, "before the removal", "fine")
    ok(tapes("alice", "storage", "sync"))
    ok(tapes("bob", "storage", "sync"))
    assert set(before) <= set(hashes(bob))
    bobs_keys = access_for(bob, client, team.id).content_keys()
    out = ok(tapes("alice", "team", "remove", team.id, fingerprint(bob)[:9], "--yes"))
    assert "removed" in out
    after = record(alice, "after the removal", "secret plans")
    ok(tapes("alice", "storage", "sync"))
    rows = {r.node_id: r for r in team_rows(client, team.id)}
    alices_keys = access_for(alice, client, team.id).content_keys()
    new_ids = {alices_keys.node_id(2, h) for h in after}
    assert {rows[i].epoch for i in new_ids} == {2}
    # Bob cannot name them: no ID his keys give for content he might guess is one the vault holds
    assert not {i for h in after for i in bobs_keys.node_ids(h, up_to=99)} & set(rows)
    assert 2 not in bobs_keys.epochs
    shown = json.loads(ok(tapes("alice", "team", "show", team.id, "--json")))
    assert (shown["epoch"], len(shown["members"])) == (2, 1)
    # the server refuses Bob, and his old keys open none of the new nodes
    one_error(tapes("bob", "team", "show", team.id), "no team")
    code, _, _ = tapes("bob", "storage", "sync")
    assert code == 1
    assert not set(after) & set(hashes(bob))
    for node_id in new_ids:
        assert tapes_get(bob, client, f"/api/v1/nodes/{node_id}") == 404
        envelope = json.loads(as_json(rows[node_id].envelope))
        with pytest.raises(keymgmt.IntegrityError):
            open_envelope(envelope, state=access_state(alice, client, team.id), keys=bobs_keys)


def test_a_session_continued_after_a_rotation_names_its_parent_across_epochs(
    team: Team, tapes: Tapes, client: TestClient[Any]
) -> None:
    """Node IDs are keyed per epoch. Carol continues, in epoch 2, a session Alice wrote in epoch
    1: the child names its parent by the ID the vault holds it under (epoch 1's, from the
    sync's records), the server takes it, Alice's sync opens it, and the cloud provider walks the
    whole session across the two epochs."""
    ok(tapes("carol", "auth", "login", "--server", AUDIENCE, "--handle", "carol"))
    team.admit("carol")
    alice, carol = team.home("alice"), team.home("carol")
    team.sync_into_team("alice", auto_share=True)
    team.sync_into_team("carol", auto_share=True)
    session = record(alice, "Why is the build red?", "A flaky test.")
    ok(tapes("alice", "storage", "sync"))
    ok(tapes("carol", "storage", "sync"))
    ok(tapes("alice", "team", "remove", team.id, fingerprint(team.home("bob"))[:9], "--yes"))
    with LocalProvider(carol / "tapes.sqlite") as store:
        last = store.get(session[-1])
    continued = record(carol, "Which test?", parent=last)
    ok(tapes("carol", "storage", "sync"))
    keys = access_for(alice, client, team.id).content_keys()
    rows = {r.node_id: r for r in team_rows(client, team.id)}
    child = rows[keys.node_id(2, continued[0])]
    assert (child.epoch, child.parent_id) == (2, keys.node_id(1, session[-1]))
    assert keys.node_id(2, session[-1]) not in rows  # the parent was not pushed again
    ok(tapes("alice", "storage", "sync"))
    assert set(continued) <= set(hashes(alice))
    trust = Trust(alice, unlock(alice, floor=FAST))
    cloud = TeamCloudProvider(
        api_for(alice, client), access_for(alice, client, team.id), trust, auto_share=False
    )
    path = [n.hash for n in cloud.ancestry(continued[0])]
    assert path == [continued[0], *reversed(session)]


class PushSpy:
    """Counts the pushes of an :class:`ApiClient`; ``refuse`` answers each with this 409."""

    def __init__(self, api: ApiClient, refuse: RemoteError | None = None) -> None:
        self.calls, self.refuse, self._push = 0, refuse, api.push_encoded
        api.push_encoded = self  # type: ignore[method-assign]

    def __call__(self, body: bytes, *, packed: bool = False) -> PushResult:
        self.calls += 1
        if self.refuse is not None:
            raise self.refuse
        return self._push(body, packed=packed)


def _behind_the_removal(team: Team, tapes: Tapes, client: TestClient[Any]) -> keymgmt.TeamKeys:
    """Alice's store caches the epoch-1 chain, then Alice removes Bob (epoch 2) on her other
    machine (a copy of her .tapes directory made before); Bob's keys, taken while a member."""
    team.sync_into_team("alice", auto_share=False)
    record(team.home("alice"), "before the removal", "fine")
    ok(tapes("alice", "storage", "sync"))
    bobs_keys = access_for(team.home("bob"), client, team.id).content_keys()
    laptop = team.home("alice").with_name("alice-laptop")
    shutil.copytree(team.home("alice"), laptop, ignore=shutil.ignore_patterns("tapes.sqlite*"))
    ok(tapes(laptop.name, "team", "remove", team.id, fingerprint(team.home("bob"))[:9], "--yes"))
    return bobs_keys


def test_a_client_behind_the_chain_reseals_under_the_new_epoch_after_one_409(
    team: Team, tapes: Tapes, client: TestClient[Any]
) -> None:
    alice = team.home("alice")
    bobs_keys = _behind_the_removal(team, tapes, client)
    after = record(alice, "after the removal", "secret plans")
    api = api_for(alice, client)
    with LocalProvider(alice / "tapes.sqlite") as store:
        holder = VaultHolder(
            api, SyncState(store), team.id, Trust(alice, unlock(alice, floor=FAST))
        )
        assert holder.access.state.epoch == 1  # the cached chain did not see the removal
        spy = PushSpy(api)
        # no team hooks: nothing catches up before the push, so the batch goes out under epoch 1
        receipt = VaultPusher(api, holder)(team.id, [store.get(h) for h in after])
    assert spy.calls == 2  # refused once (409), then resealed and stored
    assert holder.access.state.epoch == 2
    rows = {r.node_id: r for r in team_rows(client, team.id)}
    assert set(receipt.node_ids) <= set(rows)
    assert {rows[i].epoch for i in receipt.node_ids} == {2}
    for node_id in receipt.node_ids:  # Bob's keys open none of them
        with pytest.raises(keymgmt.IntegrityError):
            open_envelope(
                json.loads(as_json(rows[node_id].envelope)),
                state=access_state(alice, client, team.id), keys=bobs_keys,
            )  # fmt: skip


def test_a_second_refusal_after_resealing_is_an_ordinary_sync_failure(
    team: Team, tapes: Tapes, client: TestClient[Any]
) -> None:
    alice = team.home("alice")
    _behind_the_removal(team, tapes, client)
    after = record(alice, "after the removal", "refused twice")
    api = api_for(alice, client)
    with LocalProvider(alice / "tapes.sqlite") as store:
        holder = VaultHolder(
            api, SyncState(store), team.id, Trust(alice, unlock(alice, floor=FAST))
        )
        spy = PushSpy(api, refuse=StaleEpochError(409, "node … is sealed under key epoch 2 …"))
        with pytest.raises(SyncError) as failure:
            VaultPusher(api, holder)(team.id, [store.get(h) for h in after])
    assert (spy.calls, failure.value.kind) == (2, "server")
    assert not set(team_rows(client, team.id)) & set(after)


def test_the_cloud_provider_and_share_follow_a_removal_they_missed(
    team: Team, tapes: Tapes, client: TestClient[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = team.home("alice")
    identity = unlock(alice, floor=FAST)
    stale = access_for(alice, client, team.id)  # opened before the removal
    trust = Trust(alice, identity)
    provider = TeamCloudProvider(api_for(alice, client), stale, trust, auto_share=False)
    _behind_the_removal(team, tapes, client)
    nodes = chain(["put after the removal", "and shared"])
    assert [provider.put(n) for n in nodes] == [True, True]
    assert provider.access.state.epoch == 2
    # share: the team opened just before a removal lands (a race), then pushed
    opened = iter([stale])
    real_open = sharing.open_team  # type: ignore[attr-defined]
    monkeypatch.setattr(sharing, "open_team", lambda *args: next(opened, None) or real_open(*args))
    shared = chain(["shared after the removal"])
    sharing.share_session(api_for(alice, client), identity, alice, team.id, shared)
    fresh = access_for(alice, client, team.id).content_keys()
    ids = {fresh.node_id(2, n.hash) for n in nodes + shared}
    assert {r.epoch for r in team_rows(client, team.id) if r.node_id in ids} == {2}


def access_state(home: Path, client: TestClient[Any], team: str) -> keymgmt.VerifiedTeamState:
    return access_for(home, client, team).state


def test_metadata_only_team_sends_no_body_and_pulls_no_content(
    tapes: Tapes, tmp_path: Path, client: TestClient[Any]
) -> None:
    team = Team(tapes, tmp_path, "--content", "omit", "--metadata", "coarse")
    team.sync_into_team("alice", auto_share=True)
    team.sync_into_team("bob", auto_share=True)
    recorded = record(team.home("alice"), "usage only", "no content leaves")
    ok(tapes("alice", "storage", "sync"))
    rows = team_rows(client, team.id)
    assert len(rows) == 2
    for row in rows:
        envelope = json.loads(as_json(row.envelope))
        assert (envelope["ciphertext"], envelope["nonce"], envelope["padded_size"]) == (
            None,
            None,
            0,
        )
        assert b"usage only" not in row.envelope
    report = json.loads(ok(tapes("bob", "storage", "sync", "--json")))
    assert (report["rejected"], hashes(team.home("bob"))) == ([], [])  # nothing fake is stored
    access = access_for(team.home("bob"), client, team.id)
    page = api_for(team.home("bob"), client).pull(team.id)
    opened = [
        open_envelope(i.envelope, state=access.state, keys=access.content_keys())
        for i in page.items
    ]
    assert len(opened) == 2
    assert all(isinstance(o, MetadataRecord) for o in opened)
    assert {o.metadata.get("role") for o in opened if isinstance(o, MetadataRecord)} == {
        "user", "assistant",
    }  # fmt: skip
    assert recorded  # Alice's own store still holds the content


BAD_CODES: dict[str, Callable[[str], str]] = {
    "garbage": lambda code: "hello",
    "typo": lambda code: code[:-3] + ("AAA" if not code.endswith("AAA") else "BBB"),
    "truncated": lambda code: code[:40],
}


@pytest.mark.parametrize("name", sorted(BAD_CODES))
def test_malformed_codes_are_one_line_errors_and_write_nothing(
    name: str, tapes: Tapes, tmp_path: Path
) -> None:
    ok(tapes("carol", "auth", "login", "--server", AUDIENCE, "--handle", "carol"))
    invite = keymgmt.create_invite(team="t_nothing123", inviter=keymgmt.generate_identity())
    one_error(tapes("carol", "team", "join", BAD_CODES[name](invite.code.text)), "invite code")
    assert not (tmp_path / "carol" / local.TEAMS_FILE).exists()


def test_expired_reused_and_unknown_codes(team: Team, tapes: Tapes, tmp_path: Path) -> None:
    ok(tapes("carol", "auth", "login", "--server", AUDIENCE, "--handle", "carol"))
    expired = keymgmt.create_invite(
        team=team.id, inviter=keymgmt.generate_identity(), now=1_000_000, ttl=60
    )
    one_error(tapes("carol", "team", "join", expired.code.text), "expired")
    one_error(tapes("carol", "team", "join", team.code), "already used")
    unknown = keymgmt.create_invite(team=team.id, inviter=keymgmt.generate_identity())
    one_error(tapes("carol", "team", "join", unknown.code.text), "no such invite")
    assert not (tmp_path / "carol" / local.TEAMS_FILE).exists()


def test_other_bad_inputs_are_one_line_errors(team: Team, tapes: Tapes, tmp_path: Path) -> None:
    one_error(tapes("nobody", "team", "list"), "not logged in")
    one_error(tapes("alice", "team", "show", "no-such-team"), "no team")
    one_error(tapes("bob", "team", "invite", team.id), "owner or admin")
    one_error(tapes("bob", "team", "remove", team.id, fingerprint(tmp_path / "alice"), "--yes"),
              "owner or admin")  # fmt: skip
    one_error(tapes("alice", "team", "remove", team.id, "ZZZZ", "--yes"), "fingerprint")
    one_error(tapes("alice", "team", "invite", team.id, "--role", "king"), "--role")
    one_error(tapes("alice", "team", "invite", team.id, "--expires-in", "soon"), "duration")
    one_error(tapes("alice", "team", "invite", team.id, "--expires-in", "90d"), "too long")
    one_error(tapes("alice", "team", "create", "X", "--metadata", "all"), "--metadata")
    one_error(tapes("alice", "team", "approve", team.id), "asks about each joiner")
    assert local.load(tmp_path / "alice").invites == {}  # no refused invite left a secret behind


def test_the_cloud_provider_puts_into_the_team_and_auto_shares_on_close(
    team: Team, tapes: Tapes, tmp_path: Path, client: TestClient[Any]
) -> None:
    alice = team.home("alice")
    team.sync_into_team("alice", auto_share=True)
    ok(tapes("alice", "storage", "set-provider", "cloud"))
    settings = Settings.resolve(config_dir=alice, db=None, debug=False)
    cloud = open_provider(settings)
    assert isinstance(cloud, TeamCloudProvider)
    nodes = chain(["straight to the cloud", "no local copy"])
    assert [cloud.put(n) for n in nodes] == [True, True]
    cloud.close()
    rows = team_rows(client, team.id)
    assert len(rows) == 2
    assert {r.epoch for r in rows} == {1}
    listed = json.loads(ok(tapes("bob", "session", "shared", "--json")))
    assert [(s["session_id"], s["title"]) for s in listed] == [
        (nodes[-1].hash, "straight to the cloud")
    ]


def test_the_hybrid_worker_syncs_into_the_team_and_auto_shares(
    team: Team, tapes: Tapes, tmp_path: Path, client: TestClient[Any]
) -> None:
    alice = team.home("alice")
    team.sync_into_team("alice", auto_share=True)
    ok(tapes("alice", "storage", "set-provider", "hybrid"))
    settings = Settings.resolve(config_dir=alice, db=alice / "tapes.sqlite", debug=False)
    hybrid = open_provider(settings)
    assert isinstance(hybrid, HybridProvider)
    nodes = chain(["recorded through the proxy", "synced in the background"])
    for node in nodes:
        hybrid.put(node)
    hybrid.close()  # sync_on_close: one last bounded round
    assert {r.epoch for r in team_rows(client, team.id)} == {1}
    assert len(team_rows(client, team.id)) == 2
    listed = json.loads(ok(tapes("bob", "session", "shared", "--json")))
    assert [s["session_id"] for s in listed] == [nodes[-1].hash]


def test_the_hybrid_and_cloud_providers_share_through_the_team_provider_protocol(
    team: Team, tapes: Tapes, tmp_path: Path
) -> None:
    """The RFC's TeamProvider: Alice shares a hybrid-recorded session with the team, Bob's cloud
    provider lists it with its decrypted title, and Alice's unshare withdraws it."""
    alice, bob = team.home("alice"), team.home("bob")
    ok(tapes("alice", "storage", "set-provider", "hybrid"))
    ok(tapes("bob", "storage", "set-provider", "cloud"))
    hybrid = open_provider(Settings.resolve(config_dir=alice, db=alice / "t.sqlite", debug=False))
    cloud = open_provider(Settings.resolve(config_dir=bob, db=None, debug=False))
    try:
        assert isinstance(hybrid, TeamProvider)
        assert isinstance(cloud, TeamProvider)
        nodes = chain(["shared through the provider", "its answer"])
        for node in nodes:
            hybrid.put(node)
        hybrid.share_session(nodes[-1].hash, team.id, ShareOptions(title="Provider share"))
        shared = cloud.shared_sessions(team.id)
        assert [(s.session_id, s.title, s.team_id) for s in shared] == [
            (nodes[-1].hash, "Provider share", team.id)
        ]
        assert shared[0].shared_by == fingerprint(alice)
        hybrid.unshare_session(nodes[-1].hash, team.id)
        assert cloud.shared_sessions(team.id) == []
    finally:
        hybrid.close()
        cloud.close()


def test_a_provider_opened_without_a_login_refuses_to_share(tmp_path: Path) -> None:
    with LocalProvider(tmp_path / "t.sqlite") as store:
        runner = SyncRunner(SyncState(store), "v", lambda *_: [], lambda *_: None)  # type: ignore[arg-type]
        hybrid = HybridProvider(store, runner, background=False)
        with pytest.raises(ConfigError, match="cannot share sessions"):
            hybrid.share_session("0" * 64, "t_team", ShareOptions())


def test_history_synced_to_the_personal_vault_follows_into_the_team(
    team: Team, tapes: Tapes, client: TestClient[Any]
) -> None:
    """Switching a store to a team vault pushes what the personal vault already holds there too,
    so that a session continued after the switch has its parents in the team vault."""
    alice = team.home("alice")
    before = record(alice, "written before the team", "and synced to the personal vault")
    ok(tapes("alice", "storage", "sync"))
    team.sync_into_team("alice", auto_share=False)
    ok(tapes("alice", "storage", "sync"))
    keys = access_for(alice, client, team.id).content_keys()
    held = {row.node_id for row in team_rows(client, team.id)}
    assert {keys.node_id(1, h) for h in before} <= held
    with LocalProvider(alice / "tapes.sqlite") as store:
        last = store.get(before[-1])
    after = record(alice, "continued after the switch", parent=last)
    ok(tapes("alice", "storage", "sync"))
    held = {row.node_id for row in team_rows(client, team.id)}
    assert keys.node_id(1, after[0]) in held


def test_remove_asks_first_and_team_commands_speak_json(
    tapes: Tapes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``team remove`` confirms like ``approve`` (``--yes`` skips; no terminal and no --yes is an
    error); create, invite and join answer JSON with ``--json``."""
    for who in ("alice", "carol"):
        ok(tapes(who, "auth", "login", "--server", AUDIENCE, "--handle", who))
    made = json.loads(ok(tapes("alice", "team", "create", "Acme", "--json")))
    assert (made["name"], made["metadata_policy"], made["content_policy"]) == (
        "Acme", "coarse", "encrypted",
    )  # fmt: skip
    invite = json.loads(ok(tapes("alice", "team", "invite", made["team_id"], "--json")))
    assert CODE.fullmatch(invite["code"])
    assert invite["inviter"] == fingerprint(tmp_path / "alice")
    asked = json.loads(ok(tapes("carol", "team", "join", invite["code"], "--json")))
    assert (asked["team_id"], asked["status"]) == (made["team_id"], "requested")
    ok(tapes("alice", "team", "approve", made["team_id"], "--yes"))
    joined = json.loads(ok(tapes("carol", "team", "join", invite["code"], "--json")))
    assert (joined["status"], joined["role"]) == ("joined", "member")

    carol = fingerprint(tmp_path / "carol")[:9]
    one_error(tapes("alice", "team", "remove", made["team_id"], carol), "asks you to confirm")
    monkeypatch.setattr("sys.stdin.isatty", lambda: True, raising=False)
    monkeypatch.setattr("typer.confirm", lambda *_a, **_k: False)
    one_error(tapes("alice", "team", "remove", made["team_id"], carol), "nothing was changed")
    shown = json.loads(ok(tapes("alice", "team", "show", made["team_id"], "--json")))
    assert len(shown["members"]) == 2
    monkeypatch.setattr("typer.confirm", lambda *_a, **_k: True)
    assert "removed" in ok(tapes("alice", "team", "remove", made["team_id"], carol))
    shown = json.loads(ok(tapes("alice", "team", "show", made["team_id"], "--json")))
    assert len(shown["members"]) == 1


def test_storage_configure_takes_a_team_by_name_and_goes_back_to_personal(
    team: Team, tapes: Tapes, tmp_path: Path
) -> None:
    def configured() -> object:
        config = tomllib.loads((tmp_path / "bob" / "config.toml").read_text("utf-8"))
        return config["storage"]["cloud"].get("team_id")

    ok(tapes("bob", "storage", "configure", "--team", "acme"))  # the name, any case
    assert configured() == team.id
    ok(tapes("bob", "storage", "configure", "--team", "personal"))
    assert configured() is None
    ok(tapes("bob", "storage", "configure", "--team", team.id))
    ok(tapes("bob", "storage", "configure", "--no-team"))
    assert configured() is None
    config = (tmp_path / "bob" / "config.toml").read_text("utf-8")
    one_error(tapes("bob", "storage", "configure", "--team", "Acme Typo"), "no team")
    assert (tmp_path / "bob" / "config.toml").read_text("utf-8") == config


def _sealed_to(client: TestClient[Any], team: str) -> dict[int, set[str]]:
    """Epoch → the fingerprints the server holds a keyring of that epoch for."""
    with Session(client.app.state.engine) as db:
        rows = db.scalars(select(Keyring).where(Keyring.team_id == team)).all()
    sealed: dict[int, set[str]] = {}
    for row in rows:
        sealed.setdefault(row.epoch, set()).add(row.recipient)
    return sealed


def test_requests_roles_rotation_and_handles_in_the_roster(
    team: Team, tapes: Tapes, tmp_path: Path, client: TestClient[Any]
) -> None:
    """`team requests` lists pending joins with handles; `team role` demotes a reader to viewer
    under a new epoch they do not get and promotes them back with every key; `team rotate`
    starts an epoch for the current readers; rosters show handles beside fingerprints."""
    alice, bob = fingerprint(tmp_path / "alice"), fingerprint(tmp_path / "bob")
    shown = json.loads(ok(tapes("bob", "team", "show", team.id, "--json")))
    assert {(m["handle"], m["fingerprint"]) for m in shown["members"]} == {
        ("alice", alice), ("bob", bob),
    }  # fmt: skip
    roster = ok(tapes("bob", "team", "show", team.id))
    assert "alice" in roster
    assert max(map(len, roster.splitlines())) <= 80  # fits an 80-column terminal

    ok(tapes("carol", "auth", "login", "--server", AUDIENCE, "--handle", "carol"))
    carol = fingerprint(tmp_path / "carol")
    code = team.invite()
    ok(tapes("carol", "team", "join", code))
    pending = json.loads(ok(tapes("alice", "team", "requests", "Acme", "--json")))
    assert [(r["handle"], r["fingerprint"], r["role"]) for r in pending] == [
        ("carol", carol, "member")
    ]
    assert "1 pending request:" in tapes("alice", "team", "requests", team.id)[2]
    one_error(tapes("bob", "team", "requests", team.id))  # a member sees no requests
    ok(tapes("alice", "team", "approve", team.id, "--yes"))
    ok(tapes("carol", "team", "join", code))
    assert "no pending join requests" in tapes("alice", "team", "requests", team.id)[2]

    # a reader made viewer: a new epoch, sealed to the others only
    out = ok(tapes("alice", "team", "role", team.id, "@carol", "viewer", "--yes"))
    assert "carol is now viewer" in out
    shown = json.loads(ok(tapes("alice", "team", "show", team.id, "--json")))
    assert shown["epoch"] == 2
    assert {m["fingerprint"]: m["role"] for m in shown["members"]}[carol] == "viewer"
    assert _sealed_to(client, team.id)[2] == {alice, bob}
    # made a member again: no new epoch, and every epoch key reaches her
    ok(tapes("alice", "team", "role", team.id, carol[:9], "member", "--yes"))
    sealed = _sealed_to(client, team.id)
    assert (sealed[1], sealed[2]) == ({alice, bob, carol}, {alice, bob, carol})
    # a rotation: a new epoch for exactly the current readers
    assert "key epoch 3" in ok(tapes("alice", "team", "rotate", "Acme"))
    assert _sealed_to(client, team.id)[3] == {alice, bob, carol}
    # what is pushed now is sealed under epoch 3 and every reader opens it
    assert access_for(tmp_path / "carol", client, team.id).state.epoch == 3

    one_error(tapes("bob", "team", "rotate", team.id), "needs an owner or admin")
    one_error(tapes("alice", "team", "role", team.id, "@nobody", "viewer", "--yes"), "no member")
    one_error(tapes("alice", "team", "role", team.id, "@carol", "boss", "--yes"), "expected")
    one_error(tapes("alice", "team", "role", team.id, "@carol", "member", "--yes"), "already")
    one_error(tapes("alice", "team", "role", team.id, "@carol", "viewer"), "asks you to confirm")


@pytest.mark.server_backends
def test_session_pull_fetches_one_shared_session_verified(
    team: Team, tapes: Tapes, tmp_path: Path, client: TestClient[Any]
) -> None:
    """`tapes session pull` stores one shared session, bit for bit, on a machine with no
    database yet; a node the server altered fails the pull and stores nothing."""
    alice, bob = team.home("alice"), team.home("bob")
    session = record(alice, "[/INST] how do I [link=x]?", "like this [/b]", "thanks")
    ok(tapes("alice", "session", "share", session[-1], "--team", "Acme", "--title", "[/x] <b>"))
    assert not (bob / "tapes.sqlite").exists()
    out = ok(tapes("bob", "session", "pull", session[-1][:10]))
    assert f"pulled session {session[-1]} from {team.id}: 3 nodes verified, 3 new" in out
    assert hashes(bob) == sorted(session)
    assert ok(tapes("alice", "session", "export", session[-1])) == ok(
        tapes("bob", "session", "export", session[-1])
    )
    assert "[/x] <b>" in ok(tapes("bob", "session", "shared"))  # a title is shown as written
    again = json.loads(ok(tapes("bob", "session", "pull", session[-1], "--json")))
    assert (again["nodes"], again["new"], again["title"]) == (3, 0, "[/x] <b>")
    one_error(tapes("bob", "session", "pull", "ffffffffff"), "no single session")

    # the server alters the middle node's ciphertext: the pull fails whole
    other = record(alice, "second", "session", "here")
    ok(tapes("alice", "session", "share", other[-1], "--team", "Acme"))
    keys = access_for(alice, client, team.id).content_keys()
    middle = keys.node_id(1, other[1])
    with Session(client.app.state.engine) as db, db.begin():
        row = db.scalars(
            select(NodeRecord).where(NodeRecord.vault_id == team.id, NodeRecord.node_id == middle)
        ).one()
        envelope = json.loads(as_json(row.envelope))
        text = envelope["ciphertext"]
        envelope["ciphertext"] = ("A" if text[0] != "A" else "B") + text[1:]
        row.envelope = json.dumps(envelope).encode()
    before = hashes(bob)
    one_error(tapes("bob", "session", "pull", other[-1]), "integrity")
    assert hashes(bob) == before


def test_a_member_leaves_and_an_admin_removes_them_under_a_new_epoch(
    team: Team, tapes: Tapes, tmp_path: Path, client: TestClient[Any]
) -> None:
    bob = fingerprint(tmp_path / "bob")
    team.sync_into_team("bob", auto_share=False)
    one_error(tapes("bob", "team", "leave", team.id), "asks you to confirm")
    assert f"left team {team.id}" in ok(tapes("bob", "team", "leave", "Acme", "--yes"))
    config = tomllib.loads((tmp_path / "bob" / "config.toml").read_text())
    assert "team_id" not in config["storage"]["cloud"]  # syncs to the personal vault again
    one_error(tapes("bob", "team", "show", team.id))  # the server serves bob nothing of it
    err = tapes("alice", "team", "requests", team.id)[2]
    assert f"bob ({bob}) left" in err
    assert f"tapes team remove {team.id} @bob" in err
    leaving = json.loads(ok(tapes("alice", "team", "requests", team.id, "--json")))
    assert [(r["handle"], r.get("leaving")) for r in leaving] == [("bob", True)]
    assert "bob (left)" in ok(tapes("alice", "team", "show", team.id))
    ok(tapes("alice", "team", "remove", team.id, "@bob", "--yes"))
    shown = json.loads(ok(tapes("alice", "team", "show", team.id, "--json")))
    assert (shown["epoch"], [m["handle"] for m in shown["members"]]) == (2, ["alice"])
    assert _sealed_to(client, team.id)[2] == {fingerprint(tmp_path / "alice")}
    one_error(tapes("alice", "team", "leave", team.id, "--yes"), "only owner")


def test_a_removed_member_is_told_what_happened_and_how_to_sync_elsewhere(
    team: Team, tapes: Tapes, tmp_path: Path
) -> None:
    team.sync_into_team("bob", auto_share=False)
    record(team.home("bob"), "bob's own turn")
    ok(tapes("alice", "team", "remove", team.id, "@bob", "--yes"))
    for command in (("storage", "sync"), ("storage", "status")):
        message = one_error(tapes("bob", *command), "no longer a member", team.id)
        assert "answered 404" not in message
    assert "tapes storage configure --no-team" in tapes("bob", "storage", "sync")[2]
    ok(tapes("bob", "storage", "configure", "--no-team"))
    assert json.loads(ok(tapes("bob", "storage", "sync", "--json")))["pushed"] == 1


def test_an_owner_puts_the_team_on_legal_hold_and_show_says_so(team: Team, tapes: Tapes) -> None:
    assert "legal hold on" in ok(tapes("alice", "team", "hold", "Acme", "on"))
    shown = json.loads(ok(tapes("bob", "team", "show", team.id, "--json")))
    assert shown["legal_hold"] is True
    assert "legal hold: on" in ok(tapes("bob", "team", "show", team.id))
    one_error(tapes("bob", "team", "hold", team.id, "off"), "only an owner")
    code, _, err = tapes("alice", "team", "hold", team.id, "maybe")
    assert code == 2
    assert "on or off" in err
    assert "legal hold off" in ok(tapes("alice", "team", "hold", team.id, "off"))
    assert json.loads(ok(tapes("bob", "team", "show", team.id, "--json")))["legal_hold"] is False
