"""The trust core through the CLI: one head pin per (identity, vault), and the personal vault that
only its own identity may have written.

Each test puts a hostile server between the CLI and the real app (an ``httpx.MockTransport``
that rewrites answers and, where the attack needs it, pretends to accept pushes the real server
would refuse), and checks that the client fails closed: a clear error, nothing sealed for the
attacker, nothing pinned from the forged answer.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

import keymgmt
from tapes_e2e import context
from tapes_e2e.identity import unlock
from tests.client.conftest import FAST, Tapes, pinned
from tests.client.test_sync_round_trip import hashes
from tests.client.test_teams import Team, access_for, api_for, fingerprint, ok, record
from tests.client.test_teams import team as team  # noqa: PLC0414 - the fixture, by name
from tests.client.wire import answer_with, body_of, is_packed
from tests.server.conftest import AUDIENCE

Rewrite = Callable[[httpx.Request, Any], Any]


class Hostile:
    """Forwards to the real app and lets ``rewrite`` alter each answer (as JSON values, sent on
    in the form it came in: JSON or MessagePack); with
    ``fake_push``, a push is answered "stored" without reaching the real server (which would
    refuse what the attack is about), and its envelopes are kept in ``pushed``."""

    def __init__(self, client: TestClient[Any], rewrite: Rewrite, *, fake_push: bool = False):
        self.client, self.rewrite, self.fake_push = client, rewrite, fake_push
        self.pushed: list[dict[str, Any]] = []
        self.http = httpx.Client(transport=httpx.MockTransport(self.handle))

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.fake_push and request.url.path.endswith("/sync/push"):
            envelopes = json.loads(request.content)["envelopes"]
            self.pushed.extend(envelopes)
            ids = [e["node_id"] for e in envelopes]
            return httpx.Response(200, json={"stored": ids, "existing": [], "head_seq": 0,
                                             "first_seq": 0})  # fmt: skip
        answer = self.client.request(
            request.method, str(request.url), content=request.content, headers=request.headers
        )
        content_type = answer.headers.get("content-type", "")
        if answer.status_code != 200 or not ("json" in content_type or is_packed(answer)):
            return httpx.Response(answer.status_code, content=answer.content,
                                  headers=answer.headers)  # fmt: skip
        return answer_with(answer, self.rewrite(request, body_of(answer)))


def use(monkeypatch: pytest.MonkeyPatch, hostile: Hostile) -> Hostile:
    monkeypatch.setattr(context, "http_factory", lambda _url: hostile.http)
    return hostile


def personal_vault(home: Path) -> str:
    return str(json.loads((home / "session.json").read_text())["personal_vault"])


# --- a forged personal vault on a new device ------------------------------------------------


def forged_personal_vault(vault: str, victim: keymgmt.PublicIdentity) -> tuple[Any, Any]:
    """The server's own chain for the victim's personal vault (the server's key as owner, the
    victim added as a member) and a keyring of it sealed to both."""
    server = keymgmt.generate_identity()
    vault_key, epoch_key = keymgmt.new_key(), keymgmt.new_key()
    genesis = keymgmt.create_team(
        team=vault, owner=server, vault_id_key=vault_key, epoch_key=epoch_key
    )
    state = keymgmt.verify_chain([genesis], team=vault)
    add = keymgmt.add_member(state, signer=server, member=victim, role="member")
    state = keymgmt.extend_chain(state, [add])
    keyring = keymgmt.seal_keyring(
        state, sealer=server, epoch=1, epoch_key=epoch_key, vault_id_key=vault_key
    )
    return [genesis.to_dict(), add.to_dict()], keyring.to_dict()


def forging(vault: str, chain: Any, keyring: Any) -> Rewrite:
    """A server that answers the vault's chain and keyrings with forged ones (and says so in
    every pull page)."""

    def forge(request: httpx.Request, body: Any) -> Any:
        if request.url.path.endswith(f"/{vault}/chain"):
            last = keymgmt.parse_statement(chain[-1])
            body |= {"statements": chain, "head": {"seqno": 1, "hash": last.hash}}
        elif request.url.path.endswith(f"/{vault}/keyrings"):
            body = [{**body[0], "keyring": keyring}]
        elif request.url.path.endswith("/sync/pull"):
            body["chain_seqno"] = 1
        return body

    return forge


def test_a_personal_vault_the_server_wrote_itself_is_refused_on_a_new_device(
    tapes: Tapes, tmp_path: Path, client: TestClient[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    ok(tapes("laptop", "auth", "login", "--server", AUDIENCE, "--handle", "alice"))
    record(tmp_path / "laptop", "a first session", "on the laptop")
    ok(tapes("laptop", "storage", "sync"))
    vault = personal_vault(tmp_path / "laptop")
    desktop = tmp_path / "desktop"
    desktop.mkdir()
    shutil.copy(tmp_path / "laptop" / "identity.key", desktop / "identity.key")
    chain, keyring = forged_personal_vault(
        vault, keymgmt.read_public_identity(desktop / "identity.key")
    )

    hostile = use(monkeypatch, Hostile(client, forging(vault, chain, keyring), fake_push=True))
    code, out, err = tapes("desktop", "auth", "login", "--server", AUDIENCE)
    assert code == 1
    assert "personal vault" in err
    assert "not written by your identity alone" in err
    assert "safety number" not in out
    record(desktop, "typed on the new desktop", "a secret the server wants")
    code, _, err = tapes("desktop", "storage", "sync")
    assert code == 1
    assert "not written by your identity alone" in err
    assert hostile.pushed == []  # nothing was sealed under the server's keys
    assert pinned(desktop, vault) is None  # nothing of the forged chain is trusted later


# --- a removal the server hides ---------------------------------------------------------------


def frozen_at(seqno: int) -> Rewrite:
    """A server that shows every vault's chain as it was at ``seqno`` (hiding what followed)."""

    def freeze(request: httpx.Request, body: Any) -> Any:
        if request.url.path.endswith("/chain") and isinstance(body, dict):
            kept = body["statements"][: seqno + 1 - (body["after"] + 1)]
            if kept:
                last = keymgmt.parse_statement(kept[-1])
                body |= {"statements": kept, "head": {"seqno": seqno, "hash": last.hash}}
            else:
                body["statements"] = []
        elif request.url.path.endswith("/keyrings"):
            body = [item for item in body if item["epoch"] == 1]
        elif "chain_seqno" in body:
            body["chain_seqno"] = seqno
        return body

    return freeze


def removed_bob(team: Team, tapes: Tapes, client: TestClient[Any]) -> keymgmt.TeamKeys:
    """Alice syncs into the team, then removes Bob (epoch 2); Bob's keys from before."""
    team.sync_into_team("alice", auto_share=False)
    record(team.home("alice"), "before the removal", "fine")
    ok(tapes("alice", "storage", "sync"))
    bobs_keys = access_for(team.home("bob"), client, team.id).content_keys()
    ok(tapes("alice", "team", "remove", team.id, fingerprint(team.home("bob"))[:9], "--yes"))
    return bobs_keys


def test_a_removal_the_server_hides_never_gets_content_sealed_to_the_removed_member(
    team: Team, tapes: Tapes, client: TestClient[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    bobs_keys = removed_bob(team, tapes, client)
    alice = team.home("alice")
    head = pinned(alice, team.id)
    assert head is not None
    record(alice, "after the removal", "plans Bob must not read")
    hostile = use(monkeypatch, Hostile(client, frozen_at(head.seqno - 1), fake_push=True))
    code, _, err = tapes("alice", "storage", "sync")
    assert code == 1
    assert "tapes: error: " in err
    assert "hiding a removal" in err
    assert hostile.pushed == []  # nothing sealed under the epoch Bob holds
    assert not any(e["epoch"] in bobs_keys.epochs for e in hostile.pushed)
    assert pinned(alice, team.id) == head  # the pin never moves back


def test_a_rolled_back_team_chain_is_refused_by_every_team_command(
    team: Team, tapes: Tapes, client: TestClient[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not an empty chain: the real chain minus the removal, validly signed, one statement
    short of the pin."""
    removed_bob(team, tapes, client)
    alice = team.home("alice")
    head = pinned(alice, team.id)
    assert head is not None
    use(monkeypatch, Hostile(client, frozen_at(head.seqno - 1)))
    for args in (("team", "show", team.id), ("team", "invite", team.id),
                 ("session", "shared", "--team", team.id)):  # fmt: skip
        code, _, err = tapes("alice", *args)
        assert code == 1, args
        assert err.startswith("tapes: error: "), args
        assert "older chain head than this client verified" in err, args
    assert pinned(alice, team.id) == head


def test_the_pin_is_shared_by_team_commands_and_sync(
    team: Team, tapes: Tapes, client: TestClient[Any]
) -> None:
    """One pin per identity and vault: a removal made by `tapes team remove` is what the next
    sync verifies against, and a sync's verification moves the same pin."""
    removed_bob(team, tapes, client)
    alice = team.home("alice")
    after_remove = pinned(alice, team.id)
    assert after_remove is not None
    ok(tapes("alice", "storage", "sync"))
    assert pinned(alice, team.id) == after_remove
    stored = hashes(alice)
    assert stored  # synced under the new epoch


def test_a_raised_policy_is_shown_to_every_member_on_their_next_sync(
    team: Team, tapes: Tapes, client: TestClient[Any]
) -> None:
    team.sync_into_team("bob", auto_share=False)
    ok(tapes("bob", "storage", "sync"))  # pins the team at the coarse policy
    alice = team.home("alice")
    owner = unlock(alice, floor=FAST)
    state = access_for(alice, client, team.id).state
    change = keymgmt.change_policy(state, signer=owner, metadata_policy="full")
    api_for(alice, client).append_chain(team.id, state.head.seqno, [change.to_dict()])
    code, out, err = tapes("bob", "storage", "sync", "--json")
    assert code == 0, err
    notices = json.loads(out)["notices"]
    assert len(notices) == 1
    assert "clear metadata coarse -> full" in notices[0]
    assert fingerprint(alice) in notices[0]
    assert json.loads(ok(tapes("bob", "storage", "sync", "--json")))["notices"] == []  # once


def test_the_cloud_provider_refuses_a_forged_personal_vault_on_every_start(
    tapes: Tapes, tmp_path: Path, client: TestClient[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second machine set up by copying the key and the login (no pin yet), on ``cloud``."""
    ok(tapes("laptop", "auth", "login", "--server", AUDIENCE, "--handle", "alice"))
    record(tmp_path / "laptop", "kept on the server", "only")
    ok(tapes("laptop", "storage", "sync"))
    vault = personal_vault(tmp_path / "laptop")
    desktop = tmp_path / "desktop"
    desktop.mkdir()
    for name in ("identity.key", "session.json", "config.toml"):
        shutil.copy(tmp_path / "laptop" / name, desktop / name)
    ok(tapes("desktop", "storage", "set-provider", "cloud"))
    chain, keyring = forged_personal_vault(
        vault, keymgmt.read_public_identity(desktop / "identity.key")
    )

    use(monkeypatch, Hostile(client, forging(vault, chain, keyring)))
    code, out, err = tapes("desktop", "session", "list")
    assert code == 1
    assert "not written by your identity alone" in err
    assert out == ""
    assert pinned(desktop, vault) is None
