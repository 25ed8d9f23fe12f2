"""``tapes team reencrypt``: a member's history in a team vault sealed again under the current
epoch, through the CLI and the real app: older epoch keys open none of it, shares and other
members' clients keep finding it by its old IDs, an interrupted run keeps what it did and the
next one finishes, and two runs at once on one machine are refused."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

import keymgmt
from server.domain.nodes.stored import as_json
from tapes_e2e.client import ApiClient
from tapes_e2e.envelopes import open_envelope
from tapes_e2e.teams import reencrypt
from tests.client.conftest import Tapes
from tests.client.test_sync_round_trip import hashes
from tests.client.test_team_hostile import use
from tests.client.test_teams import (
    Team,
    access_for,
    fingerprint,
    ok,
    one_error,
    record,
    team_rows,
)
from tests.server.conftest import AUDIENCE


@pytest.fixture
def team(tapes: Tapes, tmp_path: Path) -> Team:
    return Team(tapes, tmp_path)


def _epochs_by_uploader(client: TestClient[Any], team: Team) -> dict[str, set[int]]:
    """The epochs of the team's rows, by the fingerprint of whoever sealed them."""
    epochs: dict[str, set[int]] = {}
    for row in team_rows(client, team.id):
        epochs.setdefault(row.author, set()).add(row.epoch)
    return epochs


@pytest.mark.server_backends
def test_history_is_sealed_again_and_everything_still_finds_it(
    team: Team, tapes: Tapes, tmp_path: Path, client: TestClient[Any]
) -> None:
    alice, bob = team.home("alice"), team.home("bob")
    team.sync_into_team("alice", auto_share=True)
    team.sync_into_team("bob", auto_share=True)
    session = record(alice, "history to protect", "sealed in epoch one")
    ok(tapes("alice", "storage", "sync"))
    theirs = record(bob, "bob's own notes")
    ok(tapes("bob", "storage", "sync"))  # bob pulls alice's session: his client knows old IDs
    epoch_one = access_for(bob, client, team.id).content_keys()
    assert "key epoch 2" in ok(tapes("alice", "team", "rotate", team.id))

    out = json.loads(ok(tapes("alice", "team", "reencrypt", "Acme", "--json")))
    assert out == {"team_id": team.id, "resealed": 2, "epoch": 2, "others": 1}
    by = _epochs_by_uploader(client, team)
    assert by[fingerprint(alice)] == {2}
    assert by[fingerprint(bob)] == {1}  # only bob can seal his own again
    # epoch one's keys (a removed member's, a stolen laptop's) open none of alice's history now
    state = access_for(alice, client, team.id).state
    for row in team_rows(client, team.id):
        if row.author == fingerprint(alice):
            with pytest.raises((keymgmt.IntegrityError, keymgmt.PolicyError)):
                open_envelope(json.loads(as_json(row.envelope)), state=state, keys=epoch_one)
    # nothing left: a second run does nothing
    assert json.loads(ok(tapes("alice", "team", "reencrypt", team.id, "--json")))["resealed"] == 0
    _shares_and_old_ids_still_find_it(team, tapes, tmp_path, session)
    assert set(theirs) <= set(hashes(tmp_path / "carol"))


def _shares_and_old_ids_still_find_it(
    team: Team, tapes: Tapes, root: Path, session: list[str]
) -> None:
    """The share alice signed names her leaf by its old ID: bob still lists and pulls it; bob
    continues it naming its parent by the ID his client knew; carol, who joins after, pulls
    both and the continuation links to the re-sealed parent."""
    shared = json.loads(ok(tapes("bob", "session", "shared", "--team", team.id, "--json")))
    assert session[-1] in {s["session_id"] for s in shared}
    continued = record(team.home("bob"), "bob continues", parent=_node(team.home("bob"),
                                                                       session[-1]))  # fmt: skip
    ok(tapes("bob", "storage", "sync"))
    ok(tapes("carol", "auth", "login", "--server", AUDIENCE, "--handle", "carol"))
    team.admit("carol")
    team.sync_into_team("carol", auto_share=False)
    ok(tapes("carol", "storage", "sync"))
    assert set(session + continued) <= set(hashes(root / "carol"))
    ok(tapes("carol", "session", "pull", session[-1][:12], "--team", team.id))


def _node(home: Path, node_hash: str) -> Any:
    from tapes_e2e.providers.local import LocalProvider

    with LocalProvider(home / "tapes.sqlite") as store:
        return store.get(node_hash)


def test_an_interrupted_run_keeps_what_it_did_and_the_next_one_finishes(
    team: Team, tapes: Tapes, client: TestClient[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = team.home("alice")
    team.sync_into_team("alice", auto_share=False)
    record(alice, "one", "two", "three")
    ok(tapes("alice", "storage", "sync"))
    ok(tapes("alice", "team", "rotate", team.id))
    monkeypatch.setattr(reencrypt, "PAGE", 1)
    real, calls = ApiClient.reseal, []

    def cut_second(self: ApiClient, vault: str, items: Any) -> int:
        calls.append(len(items))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, vault, items)

    monkeypatch.setattr(ApiClient, "reseal", cut_second)
    code, _, err = tapes("alice", "team", "reencrypt", team.id)
    assert code == 130
    told = f"interrupted: 1 node re-sealed and kept; run `tapes team reencrypt {team.id}`"
    assert err.strip().splitlines() == [f"tapes: error: {told} again to finish"]
    assert sorted(_epochs_by_uploader(client, team)[fingerprint(alice)]) == [1, 2]
    monkeypatch.setattr(ApiClient, "reseal", real)
    out = ok(tapes("alice", "team", "reencrypt", team.id))
    assert "re-sealed 2 nodes of yours" in out
    assert _epochs_by_uploader(client, team)[fingerprint(alice)] == {2}
    assert not reencrypt.lock_path(alice, team.id).read_text()  # released: no holder named


def test_two_runs_at_once_on_one_machine_are_refused(team: Team, tapes: Tapes) -> None:
    alice = team.home("alice")
    path = reencrypt.lock_path(alice, team.id)
    with path.open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("pid 4242 since 2026-01-01 00:00:00\n")
        held.flush()
        one_error(tapes("alice", "team", "reencrypt", team.id), "already being re-encrypted",
                  "pid 4242")  # fmt: skip
    assert "re-sealed 0 nodes" in ok(tapes("alice", "team", "reencrypt", team.id))


def test_a_viewer_has_nothing_to_reencrypt(team: Team, tapes: Tapes) -> None:
    ok(tapes("alice", "team", "role", team.id, "@bob", "viewer", "--yes"))
    one_error(tapes("bob", "team", "reencrypt", team.id), "viewer")


def test_a_server_that_answers_a_share_with_another_node_is_refused(
    team: Team, tapes: Tapes, client: TestClient[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A share may name its leaf by an ID the leaf no longer has (sealed again since), so the
    client accepts another ID only for the very content the sharer signed: a server that hands
    back another node of the team under the shared leaf's old ID is refused."""
    alice = team.home("alice")
    team.sync_into_team("alice", auto_share=True)
    shared = record(alice, "the shared session", "its leaf")
    other = record(alice, "another session")
    ok(tapes("alice", "storage", "sync"))
    ok(tapes("alice", "team", "rotate", team.id))
    ok(tapes("alice", "team", "reencrypt", team.id))
    keys = access_for(alice, client, team.id).content_keys()
    decoy = next(
        json.loads(as_json(r.envelope)) for r in team_rows(client, team.id)
        if r.node_id == keys.node_id(2, other[-1])
    )  # fmt: skip

    def substitute(body: dict[str, Any]) -> None:
        if "envelope" in body:
            body["envelope"] = decoy

    use(monkeypatch, client, "/api/v1/nodes/", substitute)
    code, out, err = tapes("bob", "session", "shared", "--team", team.id, "--json")
    assert code == 1
    assert shared[-1] not in out
    assert "integrity: the share of" in err
