"""``tapes keys rotate``: a stolen laptop. The new key replaces the old one in the personal vault
and every team, each under a new epoch the old key never opens; the old key's logins end and it
never logs in again; history stays readable to the new key (and to a machine set up from its
kit); an interrupted rotation finishes, never forks, when run again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar.testing import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

import keymgmt
from server.db.models import Keyring, RetiredKey, User
from server.db.models import Team as TeamRow
from tapes_e2e.identity import unlock
from tapes_e2e.teams import rekey
from tests.client.conftest import FAST, Tapes
from tests.client.test_sync_round_trip import hashes
from tests.client.test_teams import (
    Team,
    _sealed_to,
    api_for,
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


def _keyring(client: TestClient[Any], vault: str, epoch: int) -> dict[str, Any]:
    with Session(client.app.state.engine) as db:
        row = db.scalars(
            select(Keyring).where(Keyring.team_id == vault, Keyring.epoch == epoch)
        ).first()
    assert row is not None
    return dict(row.sealed)


def _epoch(client: TestClient[Any], vault: str) -> int:
    with Session(client.app.state.engine) as db:
        team = db.get(TeamRow, vault)
        assert team is not None
        return team.epoch


def _personal(home: Path) -> str:
    return str(json.loads((home / "session.json").read_text())["personal_vault"])


@pytest.mark.server_backends
def test_a_rotation_replaces_the_key_everywhere_and_the_old_key_is_done(
    team: Team, tapes: Tapes, tmp_path: Path, client: TestClient[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    alice, bob = team.home("alice"), team.home("bob")
    personal = _personal(alice)
    mine = record(alice, "my own notes", "before the theft")
    ok(tapes("alice", "storage", "sync"))  # to the personal vault
    team.sync_into_team("alice", auto_share=True)
    team.sync_into_team("bob", auto_share=True)
    shared = record(alice, "team work", "before the theft")
    ok(tapes("alice", "storage", "sync"))
    old_identity = unlock(alice, floor=FAST)
    old = old_identity.fingerprint
    # the thief's copy: a second machine with the old key, logged in
    paper = tmp_path / "old-paper.txt"
    ok(tapes("alice", "keys", "export", "--paper-key", "-o", str(paper)))
    ok(tapes("stolen", "keys", "import", str(paper)))
    ok(tapes("stolen", "auth", "login", "--server", AUDIENCE))

    # (the same passphrase for the new key, so one TAPES_PASSPHRASE serves Alice and Bob)
    monkeypatch.setenv("TAPES_NEW_PASSPHRASE", "correct horse battery")
    code, out, err = tapes("alice", "keys", "rotate", "--yes")
    assert code == 0, err
    new = fingerprint(alice)  # the new login's
    assert new != old
    assert f"your identity is now {new}" in out
    assert "recorded in 2 vaults" in err
    assert "ended 2 logins" in err
    assert "earlier epoch" in err  # what a thief with the old key can still read
    assert "2 shared sessions ended: share again" in err  # the old key signed their shares
    assert json.loads(ok(tapes("alice", "keys", "show", "--json")))["fingerprint"] == new
    assert (alice / f"identity.retired-{old}.key").exists()
    assert not rekey.next_path(alice).exists()
    with Session(client.app.state.engine) as db:
        assert db.get(RetiredKey, old) is not None

    # every vault names the new key, in a new epoch sealed to the readers, none to the old key
    shown = json.loads(ok(tapes("bob", "team", "show", team.id, "--json")))
    assert shown["epoch"] == 2
    assert {m["fingerprint"] for m in shown["members"]} == {new, fingerprint(bob)}
    sealed = _sealed_to(client, team.id)
    assert sealed[2] == {new, fingerprint(bob)}
    assert all(old not in fps for fps in sealed.values())
    assert _sealed_to(client, personal) == {1: {new}, 2: {new}}
    _the_old_key_opens_no_new_epoch(client, alice, old_identity, (team.id, personal))

    # the new key goes on: content after the rotation reaches Bob, history stays readable
    after = record(alice, "team work", "after the rotation")
    ok(tapes("alice", "storage", "sync"))
    assert {r.epoch for r in team_rows(client, team.id)} == {1, 2}
    ok(tapes("bob", "storage", "sync"))
    assert set(after) <= set(hashes(bob))
    assert shared[-1] not in set(hashes(bob))  # its share, signed by the old key, ended
    ok(tapes("alice", "session", "share", shared[-1], "--team", team.id))
    ok(tapes("bob", "storage", "sync"))
    assert set(shared) <= set(hashes(bob))

    _the_old_key_is_refused(tapes)

    # a machine set up from the new key's kit reads the personal history sealed before
    _a_new_machine_from_the_new_kit_reads(tapes, tmp_path, mine)


def _the_old_key_opens_no_new_epoch(
    client: TestClient[Any], home: Path, old: keymgmt.Identity, vaults: tuple[str, ...]
) -> None:
    """Even handed the keyrings of the rotation's epoch, the old key opens none of them."""
    for vault in vaults:
        statements = api_for(home, client).chain(vault).statements
        state = keymgmt.verify_chain([msgspec.structs.asdict(s) for s in statements])
        with pytest.raises(keymgmt.IntegrityError):
            keymgmt.open_keyring(_keyring(client, vault, 2), state=state, identity=old)


def _a_new_machine_from_the_new_kit_reads(tapes: Tapes, root: Path, history: list[str]) -> None:
    paper = root / "new-paper.txt"
    ok(tapes("alice", "keys", "export", "--paper-key", "-o", str(paper)))
    ok(tapes("desk", "keys", "import", str(paper)))
    ok(tapes("desk", "auth", "login", "--server", AUDIENCE))
    ok(tapes("desk", "storage", "sync"))
    assert set(history) <= set(hashes(root / "desk"))


def _the_old_key_is_refused(tapes: Tapes) -> None:
    """The thief's machine: its login ended at once; the key never logs in or registers."""
    code, _, _ = tapes("stolen", "storage", "sync")
    assert code == 1
    one_error(tapes("stolen", "auth", "login", "--server", AUDIENCE), "did not accept")
    one_error(tapes("stolen", "auth", "login", "--server", AUDIENCE, "--handle", "mallory"))


def test_an_interrupted_rotation_finishes_with_the_same_key_when_run_again(
    team: Team, tapes: Tapes, client: TestClient[Any], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    alice = team.home("alice")
    old = fingerprint(alice)
    monkeypatch.setenv("TAPES_NEW_PASSPHRASE", "a new passphrase for the new key")

    # 1. cut before the server took it: the new key waits in identity.next.key, nothing moved
    def cut(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    real_rotate = rekey.rotate
    monkeypatch.setattr(rekey, "rotate", cut)
    code, _, err = tapes("alice", "keys", "rotate", "--yes")
    assert code == 130, err
    pending = keymgmt.read_public_identity(rekey.next_path(alice)).fingerprint
    sealed = rekey.next_path(alice).read_bytes()  # under the passphrase chosen for the new key
    assert keymgmt.open_key_file_bytes(sealed, "a new passphrase for the new key",
                                       floor=FAST).fingerprint == pending  # fmt: skip
    assert json.loads(ok(tapes("alice", "keys", "show", "--json")))["fingerprint"] == old
    assert _epoch(client, team.id) == 1
    monkeypatch.setattr(rekey, "rotate", real_rotate)

    # 2. cut after the server took it, before this machine swapped its key file
    real_finish = rekey.finish_locally
    monkeypatch.setattr(rekey, "finish_locally", cut)
    code, _, err = tapes("alice", "keys", "rotate", "--yes")
    assert code == 130, err
    assert _epoch(client, team.id) == 2
    with Session(client.app.state.engine) as db:  # the key from the first attempt, no other
        assert db.scalars(select(User.fingerprint).where(User.handle == "alice")).one() == pending
    assert json.loads(ok(tapes("alice", "keys", "show", "--json")))["fingerprint"] == old

    # 3. run again: it logs in with the new key, which the server has, and finishes here
    monkeypatch.setattr(rekey, "finish_locally", real_finish)
    code, out, err = tapes("alice", "keys", "rotate", "--yes")
    assert code == 0, err
    assert f"your identity is now {pending}" in out
    monkeypatch.setenv("TAPES_PASSPHRASE", "a new passphrase for the new key")  # the new file
    assert json.loads(ok(tapes("alice", "keys", "show", "--json")))["fingerprint"] == pending
    assert _epoch(client, team.id) == 2
    ok(tapes("alice", "team", "show", team.id))  # pins and login both follow the new key


def test_rotate_asks_first_and_needs_a_login(tapes: Tapes, tmp_path: Path) -> None:
    ok(tapes("alice", "auth", "login", "--server", AUDIENCE, "--handle", "alice"))
    one_error(tapes("alice", "keys", "rotate"), "confirm")
    one_error(tapes("nobody", "keys", "rotate", "--yes"), "no identity key")
    (tmp_path / "alice" / "session.json").unlink()
    one_error(tapes("alice", "keys", "rotate", "--yes"), "needs a login")
