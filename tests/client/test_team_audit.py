"""``tapes team audit``: the signed chain and shares (verified here) merged with the server's
own log (its signed, hash-chained head pinned by this client), through the CLI against the real
app; and a hostile server that drops, reorders, edits, truncates or re-signs its log after a
client read it is caught."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from server.db.models import AuditEntry
from server.db.models import Team as TeamRow
from tapes_e2e.teams.audit import PINS_FILE
from tests.client.conftest import Tapes
from tests.client.test_team_hostile import use
from tests.client.test_teams import Team, fingerprint, ok, one_error, record
from tests.server.conftest import AUDIENCE

Page = dict[str, Any]


@pytest.fixture
def team(tapes: Tapes, tmp_path: Path) -> Team:
    t = Team(tapes, tmp_path)
    t.sync_into_team("alice", auto_share=True)
    record(t.home("alice"), "an audited session")
    ok(tapes("alice", "storage", "sync"))
    ok(tapes("alice", "team", "hold", t.id, "on"))
    return t


def test_the_trail_merges_the_chain_the_shares_and_the_servers_log(
    team: Team, tapes: Tapes, tmp_path: Path
) -> None:
    ok(tapes("bob", "auth", "login", "--server", AUDIENCE, "--device", "bob's laptop"))
    lines = json.loads(ok(tapes("alice", "team", "audit", "Acme", "--json")))
    verified = [line["event"] for line in lines if line["source"] == "verified"]
    server = [line["event"] for line in lines if line["source"] == "server"]
    bob = fingerprint(tmp_path / "bob")
    assert verified[0].startswith("create ")
    assert f"add {bob} as member (epoch 1)" in verified
    assert any(event.startswith("shared ") for event in verified)
    assert any(event.startswith("legal_hold_on ") for event in server)
    assert any(e.startswith("login ") and e.endswith("(device=bob's laptop)") for e in server)
    assert [line["time"] for line in lines] == sorted(line["time"] for line in lines)
    table = ok(tapes("alice", "team", "audit", team.id))
    assert "legal_hold_on" in table
    rows = list(csv.reader(io.StringIO(ok(tapes("alice", "team", "audit", team.id, "--csv")))))
    assert rows[0] == ["time", "source", "who", "event"]
    assert len(rows) == len(lines) + 1
    assert json.loads(ok(tapes("alice", "team", "audit", team.id, "--since", "2999-01-01",
                               "--json"))) == []  # fmt: skip
    one_error(tapes("bob", "team", "audit", team.id))  # owners and admins only
    assert (tmp_path / "alice" / PINS_FILE).exists()


def _drop_second(page: Page) -> None:
    del page["entries"][1]


def _swap_first_two(page: Page) -> None:
    page["entries"][0], page["entries"][1] = page["entries"][1], page["entries"][0]


def _edit_detail(page: Page) -> None:
    page["entries"][0]["detail"]["role"] = "owner"


def _truncate(page: Page) -> None:
    """Keep only the first entry, with a head that signs nothing."""
    page["entries"] = page["entries"][:1]
    page["head"]["entry_id"], page["head"]["hash"] = (
        page["entries"][0]["id"],
        page["entries"][0]["hash"],
    )


def _forged_head(page: Page) -> None:
    page["head"]["signature"] = "A" * 86


def _negative_ids(page: Page) -> None:
    """An entry id no u64 holds, on the last entry and the head alike (the link still holds)."""
    page["entries"][-1]["id"] = page["head"]["entry_id"] = -1


def _huge_ids(page: Page) -> None:
    page["entries"][-1]["id"] = page["head"]["entry_id"] = 2**64


def _no_time(page: Page) -> None:
    page["entries"][0]["created_at"] = "yesterday"


def _time_out_of_range(page: Page) -> None:
    page["entries"][0]["created_at"] = "9999-12-31T23:59:59-14:00"


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (_drop_second, "does not hold together"),
        (_swap_first_two, "does not hold together"),
        (_edit_detail, "does not hold together"),
        (_truncate, "head it signed"),
        (_forged_head, "head it signed"),
        (_negative_ids, "malformed"),
        (_huge_ids, "malformed"),
        (_no_time, "does not hold together"),
        (_time_out_of_range, "does not hold together"),
    ],
)
def test_a_server_that_changes_its_log_is_caught(
    team: Team, tapes: Tapes, client: TestClient[Any], monkeypatch: pytest.MonkeyPatch,
    mutate: Callable[[Page], None], words: str,
) -> None:  # fmt: skip
    use(monkeypatch, client, "/audit", mutate)
    one_error(tapes("alice", "team", "audit", team.id), words)


def test_a_log_rewritten_and_re_signed_after_a_client_read_it_is_caught(
    team: Team, tapes: Tapes, client: TestClient[Any], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The server holds its key: it can sign any log it likes. What it cannot do is present a
    log that still holds the head this client pinned: a shorter one (the last entries dropped,
    the head re-signed honestly) is caught as rewritten."""
    ok(tapes("alice", "team", "audit", team.id))  # pins the head: legal_hold_on is the last

    with Session(client.app.state.engine) as db, db.begin():
        last = db.scalar(select(AuditEntry).where(AuditEntry.team_id == team.id)
                         .order_by(AuditEntry.id.desc()).limit(1))  # fmt: skip
        assert last is not None
        db.execute(delete(AuditEntry).where(AuditEntry.id == last.id))
        db.get_one(TeamRow, team.id).audit_head = last.prev_hash
    one_error(tapes("alice", "team", "audit", team.id), "no longer holds entry")


def test_a_changed_server_key_is_caught(
    team: Team, tapes: Tapes, client: TestClient[Any], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    ok(tapes("alice", "team", "audit", team.id))
    use(monkeypatch, client, "/.well-known/tapes-server-key",
        lambda body: body.update(ed25519="ab" * 32))  # fmt: skip
    one_error(tapes("alice", "team", "audit", team.id), "signing key changed")
