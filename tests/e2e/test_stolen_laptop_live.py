"""A stolen laptop, over real HTTP: the ``tapes`` CLI against a ``tapes-server serve`` subprocess.

Alice and Bob share a team. Alice's laptop (key and login) is stolen. From a second machine set
up from her recovery kit, Alice revokes the laptop's login, rotates her identity key (every vault
records it, the old key is retired) and re-seals her team history under the new epoch; the run is
interrupted once and finished by the next. The laptop is refused at every step; Bob reads on.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tapes_e2e.cli import main
from tapes_e2e.client import ApiClient
from tests.client.test_sync_round_trip import hashes
from tests.e2e.conftest import LiveServer, fast_cli
from tests.e2e.test_teams_live import record


def tapes(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(["--config-dir", str(home), *args])
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def ok(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> str:
    code, out, err = tapes(capsys, home, *args)
    assert code == 0, err
    return out


def _epochs(server: LiveServer, team: str) -> dict[str, set[int]]:
    with sqlite3.connect(server.root / "s.sqlite") as db:
        rows = db.execute("SELECT author, epoch FROM nodes WHERE vault_id = ?", (team,)).fetchall()
    found: dict[str, set[int]] = {}
    for author, epoch in rows:
        found.setdefault(author, set()).add(epoch)
    return found


def _team(capsys: pytest.CaptureFixture[str], alice: Path, bob: Path, url: str) -> str:
    """Alice (on her laptop) makes a team and admits Bob; its id."""
    ok(capsys, alice, "auth", "login", "--server", url, "--handle", "alice", "--device", "laptop")
    ok(capsys, bob, "auth", "login", "--server", url, "--handle", "bob")
    team = re.search(r"\((t_[^)]+)\)", ok(capsys, alice, "team", "create", "Acme")).group(1)  # type: ignore[union-attr]
    code = re.search(r"TAPES-[A-Z2-7-]+", ok(capsys, alice, "team", "invite", team)).group(0)  # type: ignore[union-attr]
    ok(capsys, bob, "team", "join", code)
    ok(capsys, alice, "team", "approve", team, "--yes")
    ok(capsys, bob, "team", "join", code)
    return team


def _from_the_kit_revoke_the_laptop(
    capsys: pytest.CaptureFixture[str], laptop: Path, desk: Path, url: str, team: str,
    history: list[str],
) -> None:  # fmt: skip
    """The second machine, from the recovery kit: it reads the team, and ends the laptop's
    login, which is refused at once."""
    kit = desk.parent / "kit.txt"
    ok(capsys, laptop, "keys", "export", "--recovery-kit", "-o", str(kit))
    ok(capsys, desk, "keys", "import", str(kit))
    ok(capsys, desk, "auth", "login", "--server", url, "--device", "desk")
    ok(capsys, desk, "storage", "configure", "--team", team)
    ok(capsys, desk, "storage", "sync")
    assert set(history) <= set(hashes(desk))
    devices = json.loads(ok(capsys, desk, "auth", "devices", "--json"))
    stolen = next(d["device_id"] for d in devices if d["name"] == "laptop")
    ok(capsys, desk, "auth", "devices", "revoke", stolen)
    assert tapes(capsys, laptop, "storage", "sync")[0] == 1


def test_a_stolen_laptop_is_shut_out_and_history_sealed_again_over_a_live_server(
    live_server: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    fast_cli(monkeypatch)
    monkeypatch.setenv("TAPES_NEW_PASSPHRASE", "correct horse battery")
    laptop, desk, bob = tmp_path / "laptop", tmp_path / "desk", tmp_path / "bob"
    url = live_server.base_url
    team = _team(capsys, laptop, bob, url)
    ok(capsys, laptop, "storage", "configure", "--team", team, "--auto-share")
    history = record(laptop, "before the theft", "shared with bob", "three turns")
    ok(capsys, laptop, "storage", "sync")
    old = json.loads((laptop / "session.json").read_text())["fingerprint"]

    _from_the_kit_revoke_the_laptop(capsys, laptop, desk, url, team, history)

    # the key itself may be known: rotate it everywhere
    out = ok(capsys, desk, "keys", "rotate", "--yes")
    new = json.loads((desk / "session.json").read_text())["fingerprint"]
    assert new != old
    assert f"your identity is now {new}" in out
    shown = json.loads(ok(capsys, bob, "team", "show", team, "--json"))
    assert {m["fingerprint"] for m in shown["members"]} >= {new}
    assert old not in {m["fingerprint"] for m in shown["members"]}
    code_, _, err = tapes(capsys, laptop, "auth", "login", "--server", url)
    assert code_ == 1
    assert "did not accept" in err

    # history sealed again: cut after the first page, finished by the next run
    monkeypatch.setattr("tapes_e2e.teams.reencrypt.PAGE", 1)
    real, calls = ApiClient.reseal, []

    def cut_second(self: ApiClient, vault: str, items: Any) -> int:
        calls.append(vault)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, vault, items)

    monkeypatch.setattr(ApiClient, "reseal", cut_second)
    code_, _, err = tapes(capsys, desk, "team", "reencrypt", team)
    assert code_ == 130
    assert "1 node re-sealed and kept" in err
    assert _epochs(live_server, team)[old] == {1}  # two nodes still to go
    monkeypatch.setattr(ApiClient, "reseal", real)
    done = json.loads(ok(capsys, desk, "team", "reencrypt", team, "--json"))
    assert (done["resealed"], done["epoch"]) == (2, 2)
    assert set(_epochs(live_server, team)) == {new}  # every node sealed under the new key's epoch
    _bob_reads_on(capsys, desk, bob, team, history)
    # the trail over the live server: the rotation as the chain proves it and the server logged it
    trail = json.loads(ok(capsys, desk, "team", "audit", team, "--json"))
    assert any(t["source"] == "verified" and t["event"].startswith(f"rekey {new}") for t in trail)
    assert any(t["source"] == "server" and t["event"].startswith("member_rekeyed") for t in trail)


def _the_trail_shows_the_rotation(
    capsys: pytest.CaptureFixture[str], home: Path, team: str, new: str
) -> None:
    """The audit trail over the live server: the rotation as the chain proves it and as the
    server logged it (its signed log, pinned on this first read)."""
    trail = json.loads(ok(capsys, home, "team", "audit", team, "--json"))
    assert any(t["source"] == "verified" and t["event"].startswith(f"rekey {new}") for t in trail)
    assert any(t["source"] == "server" and t["event"].startswith("member_rekeyed") for t in trail)


def _bob_reads_on(
    capsys: pytest.CaptureFixture[str], desk: Path, bob: Path, team: str, history: list[str]
) -> None:
    """Bob pulls Alice's re-sealed history (her share ended with the old key: she shares it
    again with the new one) and it is the same session, bit for bit."""
    ok(capsys, bob, "storage", "configure", "--team", team)
    ok(capsys, bob, "storage", "sync")
    assert not set(history) & set(hashes(bob))  # the old key's share ended at the rotation
    ok(capsys, desk, "session", "share", history[-1], "--team", team)
    ok(capsys, bob, "storage", "sync")
    assert set(history) <= set(hashes(bob))
    shared = json.loads(ok(capsys, bob, "session", "shared", "--team", team, "--json"))
    assert [s["session_id"] for s in shared] == [history[-1]]
