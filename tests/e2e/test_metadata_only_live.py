"""A metadata-only team over real HTTP: the ``tapes`` CLI against a ``tapes-server serve``
subprocess on SQLite (issue 12).

Alice creates a team with ``--content omit``; Bob (member) and Dave (viewer) join. Bob records
sessions whose prompts carry a unique canary and syncs; Dave, who can read no content at all,
reads the usage with ``tapes usage --json`` and sees exactly the nodes and tokens Bob recorded;
Alice's pull stores no content; and the canary is nowhere in what the server wrote (its
database files and its logs), in any encoding.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest

from tapes_e2e.providers.local import LocalProvider
from tests.client.test_sync_round_trip import hashes
from tests.conftest import chain
from tests.e2e.conftest import LiveServer, fast_cli
from tests.e2e.test_canary import encodings, leaks
from tests.e2e.test_teams_live import run

pytestmark = pytest.mark.slow


def _admit(
    capsys: pytest.CaptureFixture[str], alice: Path, who: Path, team: str, role: str
) -> None:
    out = run(capsys, alice, "team", "invite", team, "--role", role)
    code = re.search(r"TAPES-[A-Z2-7-]+", out).group(0)  # type: ignore[union-attr]
    run(capsys, who, "team", "join", code)
    assert "approved" in run(capsys, alice, "team", "approve", team, "--yes")
    assert "joined team" in run(capsys, who, "team", "join", code)


def test_a_metadata_only_team_end_to_end_leaves_no_content_on_the_server(
    live_server: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    fast_cli(monkeypatch)
    alice, bob, dave = tmp_path / "alice", tmp_path / "bob", tmp_path / "dave"
    for home in (alice, bob, dave):
        run(capsys, home, "auth", "login", "--server", live_server.base_url, "--handle", home.name)
    out = run(capsys, alice, "team", "create", "Usage only", "--content", "omit")
    team = re.search(r"\((t_[^)]+)\)", out).group(1)  # type: ignore[union-attr]
    _admit(capsys, alice, bob, team, "member")
    _admit(capsys, alice, dave, team, "viewer")

    canary = f"canary-{uuid.uuid4().hex}"
    nodes = chain([f"{canary} why is the build red?", f"{canary} a flaky test", "which one?",
                   f"test_sync, says {canary}"])  # fmt: skip
    with LocalProvider(bob / "tapes.sqlite") as store:
        store.put_many(nodes)
    run(capsys, bob, "storage", "configure", "--team", team, "--auto-share")
    report = json.loads(run(capsys, bob, "storage", "sync", "--json"))
    assert (report["pushed"], report["rejected"]) == (4, [])

    # The viewer reads the usage: every node and token Bob recorded, and no content.
    usage = json.loads(run(capsys, dave, "usage", "--team", team, "--json"))
    totals = usage["totals"]
    assert totals["nodes"] == len(nodes)
    assert totals["sessions"] == 1
    expected = [n.usage for n in nodes if n.usage is not None]
    assert totals["prompt_tokens"] == sum(u.prompt_tokens for u in expected) > 0
    assert totals["completion_tokens"] == sum(u.completion_tokens for u in expected)
    assert totals["total_tokens"] == sum(u.total_tokens for u in expected)
    assert usage["content_policy"] == "omit"
    assert canary not in json.dumps(usage)

    # A member's pull stores no content: there is none to store.
    run(capsys, alice, "storage", "configure", "--team", team)
    pulled = json.loads(run(capsys, alice, "storage", "sync", "--json"))
    assert pulled["rejected"] == []
    assert hashes(alice) == []

    # Nothing the server wrote holds the canary, in any encoding.
    live_server.stop()
    forms = encodings(canary)
    written = [p for p in live_server.root.rglob("*") if p.is_file()]
    assert any(p.name == "s.sqlite" for p in written)
    assert any(p.name.endswith(".log") for p in written)
    found = {str(p.relative_to(live_server.root)): leaks(p.read_bytes(), forms) for p in written}
    assert {name: hits for name, hits in found.items() if hits} == {}
    # the scan would see it: the canary does reach Bob's own store
    assert leaks((bob / "tapes.sqlite").read_bytes(), forms)
