"""An auditor's proof over real HTTP: the ``tapes`` CLI against a ``tapes-server serve``
subprocess. Alice shares a session with her team; Bob, a member, writes the proof and the
e-discovery export; Alice puts the team on legal hold, which the server's retention honours;
the auditor checks the proof in a separate process with an empty home and
(where the kernel allows) no network at all. Alice then unshares and removes Bob: the proof still
says what was stated when it was made, and a new one can no longer be made."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.client.test_air_gapped import _namespace_works
from tests.e2e.conftest import LiveServer, fast_cli
from tests.e2e.test_stolen_laptop_live import _team, ok, tapes
from tests.e2e.test_teams_live import record


def _auditor(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A fresh process: no TAPES_ settings, an empty home, no network namespace if possible."""
    command = [sys.executable, "-c", "from tapes_e2e.cli import main; main()",
               "--config-dir", str(home), *args]  # fmt: skip
    if _namespace_works():
        command = ["unshare", "-n", *command]
    return subprocess.run(
        command, check=False, capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("TAPES_")},
    )  # fmt: skip


def test_a_member_proves_a_shared_session_and_an_auditor_checks_it_offline(
    live_server: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    fast_cli(monkeypatch)
    alice, bob, auditor = tmp_path / "alice", tmp_path / "bob", tmp_path / "auditor"
    url = live_server.base_url
    team = _team(capsys, alice, bob, url)
    session = record(alice, "delete the prod table?", "no: here is why", "thanks")
    ok(capsys, alice, "session", "share", session[-1], "--team", team, "--title", "incident 7")
    ok(capsys, bob, "session", "pull", session[-1][:12])
    export = tmp_path / "for-counsel"
    ok(capsys, bob, "session", "export", "--for-audit", session[-1], "--team", team,
       "-o", str(export))  # fmt: skip
    checked = _auditor(auditor, "verify", "--proof", str(export / "proof.json"), "--json")
    assert checked.returncode == 0, checked.stderr
    report = json.loads(checked.stdout)
    alice_fp = json.loads((alice / "session.json").read_text())["fingerprint"]
    assert (report["session"], report["turns_shown"]) == (session[-1], 3)
    assert (report["shared"]["team"], report["shared"]["sharer"]) == (team, alice_fp)
    lines = (export / "session.jsonl").read_text("utf-8").splitlines()
    assert [json.loads(line)["hash"] for line in lines] == session
    # one byte changed on the way to the auditor: refused, naming the turn
    tampered = tmp_path / "tampered.json"
    data = (export / "proof.json").read_bytes()
    tampered.write_bytes(data.replace(b"prod table", b"test table", 1))
    refused = _auditor(auditor, "verify", "--proof", str(tampered))
    assert refused.returncode == 1
    assert refused.stderr.startswith("tapes: error: turn 1 hashes to ")
    # a legal hold, set with the CLI and seen by `tapes-server retention` in its own process
    ok(capsys, alice, "team", "hold", team, "on")
    retention = subprocess.run(
        [str(Path(sys.executable).with_name("tapes-server")), "retention", "--dry-run",
         "--plans", "rfc", "--database-url", live_server.database_url],
        check=False, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert retention.returncode == 0, retention.stderr
    assert any(line.endswith(": on legal hold") for line in retention.stdout.splitlines())
    audit = json.loads(ok(capsys, alice, "team", "audit", team, "--json"))
    assert any(line["event"].startswith("legal_hold_on ") for line in audit)
    # the share ends and Bob leaves the team: the proof still shows what was stated then
    ok(capsys, alice, "session", "unshare", session[-1], "--team", team)
    bob_fp = json.loads((bob / "session.json").read_text())["fingerprint"]
    ok(capsys, alice, "team", "remove", team, bob_fp, "--yes")
    assert _auditor(auditor, "verify", "--proof", str(export / "proof.json")).returncode == 0
    code, _, err = tapes(capsys, alice, "session", "prove", session[-1], "--team", team)
    assert code == 1
    assert "not shared with team" in err
    assert not auditor.exists() or list(auditor.iterdir()) == []
