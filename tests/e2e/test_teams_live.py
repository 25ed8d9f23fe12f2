"""Teams over real HTTP: the ``tapes`` CLI against a ``tapes-server serve`` subprocess on SQLite.

Alice creates a team, invites Bob, Bob joins, Alice approves; Alice records sessions with
``team_id`` and ``auto_share`` and syncs; Bob syncs and holds Alice's shared session bit for bit
but not her unshared one; after Alice removes Bob, her new nodes are under epoch 2 and the server
refuses Bob.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from tapes_e2e.cli import main
from tapes_e2e.providers.local import LocalProvider
from tests.client.test_sync_round_trip import hashes
from tests.conftest import chain
from tests.e2e.conftest import LiveServer, fast_cli


def run(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> str:
    with pytest.raises(SystemExit) as info:
        main(["--config-dir", str(home), *args])
    out, err = capsys.readouterr()
    assert info.value.code in (0, None), err
    return out


def record(home: Path, *texts: str) -> list[str]:
    nodes = chain(list(texts))
    with LocalProvider(home / "tapes.sqlite") as store:
        store.put_many(nodes)
    return [n.hash for n in nodes]


def test_a_team_over_a_live_server(
    live_server: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    fast_cli(monkeypatch)
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    for home, handle in ((alice, "alice"), (bob, "bob")):
        run(capsys, home, "auth", "login", "--server", live_server.base_url, "--handle", handle)
    out = run(capsys, alice, "team", "create", "Live team")
    team = re.search(r"\((t_[^)]+)\)", out).group(1)  # type: ignore[union-attr]
    code = re.search(r"TAPES-[A-Z2-7-]+", run(capsys, alice, "team", "invite", team)).group(0)  # type: ignore[union-attr]
    run(capsys, bob, "team", "join", code)
    assert "approved" in run(capsys, alice, "team", "approve", team, "--yes")
    assert "joined team" in run(capsys, bob, "team", "join", code)
    private = record(alice, "unshared thoughts", "stay home")
    run(capsys, alice, "storage", "configure", "--team", team, "--no-auto-share")
    run(capsys, alice, "storage", "sync")
    shared = record(alice, "a live shared session", "answered", "and followed up")
    run(capsys, alice, "storage", "configure", "--auto-share")
    run(capsys, alice, "storage", "sync")
    run(capsys, bob, "storage", "configure", "--team", team)
    report = json.loads(run(capsys, bob, "storage", "sync", "--json"))
    assert (report["pulled"], report["rejected"]) == (3, [])
    assert hashes(bob) == sorted(shared)
    assert not set(private) & set(hashes(bob))
    assert run(capsys, alice, "session", "export", shared[-1]) == run(
        capsys, bob, "session", "export", shared[-1]
    )
    # removal: a new epoch for what Alice pushes next; Bob is refused
    fingerprint = json.loads((bob / "session.json").read_text())["fingerprint"]
    assert "new key epoch 2" in _removed(capsys, alice, team, fingerprint)
    after = record(alice, "after Bob left", "epoch two")
    run(capsys, alice, "storage", "sync")
    with sqlite3.connect(live_server.root / "s.sqlite") as db:
        epochs = {e for (e,) in db.execute("SELECT epoch FROM nodes WHERE vault_id = ?", (team,))}
    assert epochs == {1, 2}
    with pytest.raises(SystemExit) as info:
        main(["--config-dir", str(bob), "storage", "sync"])
    assert info.value.code == 1
    capsys.readouterr()
    assert not set(after) & set(hashes(bob))


def _removed(capsys: pytest.CaptureFixture[str], home: Path, team: str, member: str) -> str:
    with pytest.raises(SystemExit) as info:
        main(["--config-dir", str(home), "team", "remove", team, member, "--yes"])
    _, err = capsys.readouterr()
    assert info.value.code in (0, None), err
    return err
