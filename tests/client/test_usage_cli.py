"""``tapes usage`` against the real app: a viewer of a metadata-only team reads the team's
usage and cost; hostile model names print verbatim (Rich markup off)."""

from __future__ import annotations

import copy
import csv
import io
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from server.db.models import UsageBucket
from server.domain.usage import labels
from tapes_e2e import context
from tapes_e2e.node import Node, Usage
from tapes_e2e.protocol.usage import OTHER
from tapes_e2e.providers.local import LocalProvider
from tests.client.conftest import Tapes
from tests.client.test_hostile_server import hostile
from tests.client.test_teams import Team, fingerprint, ok, one_error
from tests.conftest import text_bucket


def record_turns(home: Path, model: str, count: int) -> None:
    """One session of ``count`` assistant turns of ``model``, each with cache tokens."""
    nodes: list[Node] = []
    for index in range(count):
        usage = Usage(
            prompt_tokens=1_000_000, completion_tokens=100_000, total_tokens=1_100_000,
            cache_creation_input_tokens=200_000, cache_read_input_tokens=500_000,
        )  # fmt: skip
        bucket = text_bucket("assistant", f"turn {index} of {model}", model=model)
        nodes.append(Node.new(bucket, nodes[-1] if nodes else None, usage=usage))
    with LocalProvider(home / "tapes.sqlite") as store:
        store.put_many(nodes)


def admit_viewer(team: Team, who: str) -> None:
    ok(team.tapes(who, "auth", "login", "--server", "http://testserver.local", "--handle", who))
    code = team.invite("--role", "viewer")
    ok(team.tapes(who, "team", "join", code))
    approved = ok(team.tapes("alice", "team", "approve", team.id, "--yes"))
    assert f"approved: {fingerprint(team.home(who))} as viewer" in approved
    ok(team.tapes(who, "team", "join", code))


def test_a_viewer_reads_a_metadata_only_teams_usage(
    tapes: Tapes, tmp_path: Path, client: TestClient[Any]
) -> None:
    team = Team(tapes, tmp_path, "--content", "omit", "--metadata", "coarse")
    admit_viewer(team, "dave")
    team.sync_into_team("alice", auto_share=False)
    record_turns(team.home("alice"), "claude-sonnet-4-5-20250929", 2)
    record_turns(team.home("alice"), "[/x]", 1)  # no price, and Rich markup if printed as such
    ok(tapes("alice", "storage", "sync"))
    out = ok(tapes("dave", "usage", "--team", team.id, "--by", "model"))
    assert "[/x]" in out  # verbatim
    assert "policy: content: omit; metadata: coarse" in out
    assert re.search(r"cost \$6\.60, cache savings \$2\.70", out), out  # 2 x $3.30, 2 x $1.35
    assert "unpriced: [/x] (anthropic): 1,100,000 tokens in 1 node," in out
    assert "tokens per day" in out
    report = json.loads(ok(tapes("dave", "usage", "--team", team.id, "--by", "model", "--json")))
    assert report["totals"]["nodes"] == 3
    assert report["unpriced"][0]["model"] == "[/x]"
    csv = ok(tapes("dave", "usage", "--team", team.id, "--by", "member", "--csv"))
    assert csv.splitlines()[1].startswith("alice,3,2,")
    one_error(tapes("dave", "usage", "--team", team.id, "--by", "colour"), "--by 'colour'")
    one_error(tapes("dave", "usage", "--team", team.id, "--tz", "Mars/Base"), "IANA time zone")
    bad_from = tapes("dave", "usage", "--team", team.id, "--from", "yesterday")
    assert bad_from[0] == 1
    assert "from='yesterday' is not a date" in bad_from[2]
    # bob, a plain member, sees his own nodes but not the team's figures
    one_error(tapes("bob", "usage", "--team", team.id), "owners, admins and viewers")


def _buckets(client: TestClient[Any], vault: str) -> list[UsageBucket]:
    with Session(client.app.state.engine) as db:
        return list(db.scalars(select(UsageBucket).where(UsageBucket.vault_id == vault)))


def _add(client: TestClient[Any], bucket: UsageBucket, **added: int) -> None:
    """The server adds ``added`` to the figures of one stored usage row (a negative: lowers)."""
    b = UsageBucket
    where = (b.vault_id == bucket.vault_id, b.bucket == bucket.bucket, b.dims == bucket.dims)
    with Session(client.app.state.engine) as db, db.begin():
        changes = {getattr(b, name): getattr(b, name) + value for name, value in added.items()}
        db.execute(update(b).where(*where).values(changes))


def _verify(tapes: Tapes, who: str, *args: str) -> tuple[int, dict[str, Any], str]:
    code, out, err = tapes(who, "usage", "--verify", "--by", "day,model", "--json", *args)
    return code, json.loads(out) if out else {}, err


def _found(result: dict[str, Any], *keys: str) -> list[tuple[Any, ...]]:
    """(where, the group's values of ``keys``, figure, server - this machine) of each
    difference."""
    return [
        (d["where"], *(d["group"].get(k) for k in keys), d["figure"], d["server"] - d["local"])
        for d in result["differences"]
    ]


def _hour(bucket: int) -> str:
    return datetime.fromtimestamp(bucket * 900, UTC).strftime("%Y-%m-%dT%H:00")


def test_verify_finds_every_figure_a_server_altered(
    tapes: Tapes, tmp_path: Path, client: TestClient[Any]
) -> None:
    """The owner of a personal vault recomputes its usage from the synced nodes: an honest
    server matches; one hour of completion tokens inflated, a dropped row and an invented row
    are each reported, with the totals."""
    ok(tapes("alice", "auth", "login", "--server", "http://testserver.local", "--handle", "alice"))
    record_turns(tmp_path / "alice", "claude-sonnet-4-5-20250929", 3)
    record_turns(tmp_path / "alice", "[/x] gpt", 2)
    ok(tapes("alice", "storage", "sync"))
    vault = json.loads((tmp_path / "alice" / "session.json").read_text())["personal_vault"]
    code, result, err = _verify(tapes, "alice")
    assert (code, result["verified"], result["differences"]) == (0, True, []), err
    assert (result["mode"], result["rows"]) == ("exact", 2)
    out = ok(tapes("alice", "usage", "--verify", "--by", "day,model"))
    assert out.startswith("verified: 2 rows match the server"), out
    assert "not checked: cost" in out
    for zone in ("Asia/Kathmandu", "America/St_Johns"):  # +05:45 and -03:30: days and hours
        code, result, err = _verify(tapes, "alice", "--tz", zone, "--by", "hour,provider")
        assert (code, result.get("verified")) == (0, True), err

    sonnet = next(b for b in _buckets(client, vault) if b.model.startswith("claude"))
    _add(client, sonnet, completion_tokens=1)  # the server inflates one hour of one model
    code, result, _ = _verify(tapes, "alice", "--by", "hour,model")
    assert code == 1
    assert _found(result, "hour", "model") == [
        ("row", _hour(sonnet.bucket), sonnet.model, "completion_tokens", 1),
        ("totals", None, None, "completion_tokens", 1),
    ]
    code, out, err = tapes("alice", "usage", "--verify", "--by", "model")
    assert code == 1
    assert "completion_tokens" in out
    assert "300,001" in out  # the server's figure beside this machine's 300,000
    assert "TOTAL" in out
    assert "[/x] gpt" not in out  # the rows that match are not listed
    assert "differ from what this machine's nodes give" in err

    gpt = next(b for b in _buckets(client, vault) if b.model == "[/x] gpt")
    with Session(client.app.state.engine) as db, db.begin():  # drops a row, invents one
        db.execute(delete(UsageBucket).where(
            UsageBucket.vault_id == vault, UsageBucket.dims == gpt.dims))  # fmt: skip
        ghost = {c.name: getattr(sonnet, c.name) for c in UsageBucket.__table__.columns}
        db.add(UsageBucket(**(ghost | {"dims": "0" * 32, "model": "ghost-model"})))
    code, result, _ = _verify(tapes, "alice")
    assert code == 1
    rows = [d for d in result["differences"] if d["where"] == "row"]
    assert {d["group"]["model"] for d in rows} == {sonnet.model, "[/x] gpt", "ghost-model"}
    dropped = [d for d in rows if d["group"]["model"] == "[/x] gpt"]
    assert {(d["figure"], d["server"], d["local"]) for d in dropped} >= {("nodes", 0, 2)}
    invented = [d for d in rows if d["group"]["model"] == "ghost-model"]
    assert {(d["figure"], d["server"], d["local"]) for d in invented} >= {("nodes", 3, 0)}


def test_verify_compares_names_past_the_vaults_cap_summed_and_still_finds_an_inflation(
    tapes: Tapes, tmp_path: Path, client: TestClient[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A vault that names more models than the server itemizes (threat model B30) has some
    counted under ``(other)``; which ones is the server's record. The check compares those
    figures summed over the model (here: per day), says so, and still finds a row inflated."""
    monkeypatch.setitem(labels.CAPS, "model", 1)
    ok(tapes("alice", "auth", "login", "--server", "http://testserver.local", "--handle", "alice"))
    record_turns(tmp_path / "alice", "claude-sonnet-4-5-20250929", 3)
    record_turns(tmp_path / "alice", "gpt-4o", 2)
    ok(tapes("alice", "storage", "sync"))
    vault = json.loads((tmp_path / "alice" / "session.json").read_text())["personal_vault"]
    assert {b.model for b in _buckets(client, vault)} == {"claude-sonnet-4-5-20250929", OTHER}
    shown = ok(tapes("alice", "usage", "--by", "model"))
    assert "(other): this vault names more than the server itemizes by model;" in shown
    assert "than the server itemizes" not in ok(tapes("alice", "usage", "--by", "day"))
    code, result, err = _verify(tapes, "alice")  # by day and model
    assert (code, result["verified"], result["differences"]) == (0, True, []), err
    assert any("summed over model" in note for note in result["not_checked"]), result
    other = next(b for b in _buckets(client, vault) if b.model == OTHER)
    _add(client, other, completion_tokens=7)
    code, result, _ = _verify(tapes, "alice")
    assert code == 1
    assert [(d["where"], d["figure"], d["server"] - d["local"]) for d in result["differences"]] == [
        ("row", "completion_tokens", 7), ("totals", "completion_tokens", 7),
    ]  # fmt: skip


def test_verify_reads_the_report_as_an_answer_to_the_question_asked(
    tapes: Tapes, tmp_path: Path, client: TestClient[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hostile server that keeps every matching row right but lists a group twice (an
    inflated row cancelled by a negative one), inflates only the totals, claims another
    metadata policy, or answers for a narrower range than asked, is reported."""
    ok(tapes("alice", "auth", "login", "--server", "http://testserver.local", "--handle", "alice"))
    record_turns(tmp_path / "alice", "claude-sonnet-4-5-20250929", 3)
    ok(tapes("alice", "storage", "sync"))

    def twice(report: dict[str, Any]) -> None:
        row = report["rows"][0]
        inflated = copy.deepcopy(row)
        inflated["figures"]["completion_tokens"] += 1_000_000
        negative = copy.deepcopy(row)
        negative["figures"] = dict.fromkeys(row["figures"], 0) | {
            "completion_tokens": -1_000_000, "cost_usd": "0", "cache_savings_usd": "0"}  # fmt: skip
        report["rows"][0:1] = [inflated, negative]

    def narrower(report: dict[str, Any]) -> None:
        end = datetime.fromisoformat(report["to"])  # today only
        report["from"] = (end - timedelta(days=1)).isoformat().replace("+00:00", "Z")

    attacks: dict[str, tuple[Callable[[dict[str, Any]], None], tuple[str, str]]] = {
        "a group listed twice": (twice, ("row", "rows")),
        "totals alone": (
            lambda r: r["totals"].update(nodes=r["totals"]["nodes"] + 1),
            ("totals", "nodes"),
        ),
        "another policy": (
            lambda r: r.update(metadata_policy="none"),
            ("report", "metadata_policy"),
        ),
        "a narrower range": (narrower, ("report", "from")),
    }
    for name, (attack, expected) in attacks.items():
        monkeypatch.setattr(
            context, "http_factory", lambda _url, a=attack: hostile(client, "/usage", a)
        )
        code, result, _ = _verify(tapes, "alice")
        assert code == 1, name
        assert [(d["where"], d["figure"]) for d in result["differences"]] == [expected], name


def test_verify_needs_every_node_pulled_and_says_who_cannot_verify(
    tapes: Tapes, tmp_path: Path, client: TestClient[Any]
) -> None:
    """A second machine that has not pulled what the first pushed is told to sync, not shown a
    mismatch; a viewer is told that viewers take the figures on the server's word; a plain
    member, who cannot read the team's usage, is sent to their personal vault."""
    team = Team(tapes, tmp_path)
    admit_viewer(team, "dave")
    kit = tmp_path / "kit.txt"
    ok(tapes("alice", "keys", "export", "--recovery-kit", "-o", str(kit)))
    ok(tapes("desktop", "keys", "import", str(kit)))
    ok(tapes("desktop", "auth", "login", "--server", "http://testserver.local"))
    record_turns(team.home("alice"), "claude-sonnet-4-5-20250929", 2)
    ok(tapes("alice", "storage", "sync"))
    one_error(tapes("desktop", "usage", "--verify"), "has not pulled all")
    ok(tapes("desktop", "storage", "sync"))
    code, result, err = _verify(tapes, "desktop")
    assert (code, result.get("verified")) == (0, True), err
    line = one_error(tapes("dave", "usage", "--team", team.id, "--verify"), "viewers cannot verify")
    assert "server's word" in line
    one_error(tapes("bob", "usage", "--team", team.id, "--verify"), "owners, admins and viewers")
    one_error(tapes("alice", "usage", "--verify", "--by", "member"), "member")


def test_verify_checks_a_team_from_below_and_never_blames_nodes_it_does_not_hold(
    tapes: Tapes, tmp_path: Path, client: TestClient[Any]
) -> None:
    """In a team the owner holds her own uploads and what was shared with her: every figure must
    be at least what those give. Bob's nodes she has not pulled yet and his unshared ones are
    not reported; a row the server dropped or lowered is; a raised one is beyond this check."""
    team = Team(tapes, tmp_path)
    alice, bob = team.home("alice"), team.home("bob")
    team.sync_into_team("bob", auto_share=True)
    record_turns(bob, "claude-sonnet-4-5-20250929", 2)
    ok(tapes("bob", "storage", "sync"))
    team.sync_into_team("alice", auto_share=False)
    record_turns(alice, "claude-haiku-4-5", 3)
    ok(tapes("alice", "storage", "sync"))  # pushes her 3 nodes, pulls Bob's shared 2
    record_turns(bob, "claude-opus-4-1", 2)  # shared, not pulled by Alice yet
    ok(tapes("bob", "storage", "sync"))
    team.sync_into_team("bob", auto_share=False)
    record_turns(bob, "claude-3-5-haiku", 1)  # never shared: Alice can never pull it
    ok(tapes("bob", "storage", "sync"))

    code, result, err = _verify(tapes, "alice", "--team", team.id, "--by", "model")
    assert (code, result["mode"], result["differences"]) == (0, "at_least", []), err
    assert result["rows"] == 4
    out = ok(tapes("alice", "usage", "--team", team.id, "--verify"))
    assert out.startswith("verified: no figure of the server's 1 row is below"), out
    assert "nodes of other members or nodes not pulled yet" in out

    by_model = {b.model: b for b in _buckets(client, team.id)}
    _add(client, by_model["claude-haiku-4-5"], completion_tokens=1)  # raised: not caught here
    assert _verify(tapes, "alice", "--team", team.id, "--by", "model")[0] == 0
    _add(client, by_model["claude-haiku-4-5"], completion_tokens=-2)  # lowered below hers
    with Session(client.app.state.engine) as db, db.begin():  # Bob's shared row dropped
        gone = (UsageBucket.vault_id == team.id, UsageBucket.model == "claude-sonnet-4-5-20250929")
        db.execute(delete(UsageBucket).where(*gone))
    code, result, _ = _verify(tapes, "alice", "--team", team.id, "--by", "model")
    assert code == 1
    found = _found(result, "model")
    assert ("row", "claude-haiku-4-5", "completion_tokens", -1) in found
    assert ("row", "claude-sonnet-4-5-20250929", "nodes", -2) in found
    assert {m for _, m, *_ in found if m} == {"claude-haiku-4-5", "claude-sonnet-4-5-20250929"}


@pytest.mark.parametrize("amount", ["1e999999999", "NaN", "-Infinity", "1e15"])
@pytest.mark.parametrize("where", ["totals", "rows"])
def test_an_amount_of_money_that_is_no_price_is_one_error(
    tapes: Tapes, tmp_path: Path, client: TestClient[Any], monkeypatch: pytest.MonkeyPatch,
    amount: str, where: str,
) -> None:  # fmt: skip
    """A hostile server's cost: an exponent no price has (``Decimal`` would refuse to round it,
    or spell a billion digits), not a number at all, or beyond any bill (10^15 dollars)."""
    ok(tapes("alice", "auth", "login", "--server", "http://testserver.local", "--handle", "alice"))
    record_turns(tmp_path / "alice", "claude-sonnet-4-5-20250929", 2)
    ok(tapes("alice", "storage", "sync"))

    def priced(report: dict[str, Any]) -> None:
        figures = report["totals"] if where == "totals" else report["rows"][0]["figures"]
        figures["cost_usd"] = amount

    monkeypatch.setattr(context, "http_factory", lambda _url: hostile(client, "/usage", priced))
    for args in ((), ("--json",), ("--csv",), ("--verify",)):
        one_error(tapes("alice", "usage", *args), "malformed")


def test_the_csv_is_written_here_from_the_checked_report_and_safe_in_a_spreadsheet(
    tapes: Tapes, tmp_path: Path, client: TestClient[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--csv`` was the server's text as it came: a hostile server could write any formula into
    a manager's spreadsheet. The client now writes it from the report it decoded and checked,
    each cell that would start a formula shown as text."""
    ok(tapes("alice", "auth", "login", "--server", "http://testserver.local", "--handle", "alice"))
    record_turns(tmp_path / "alice", "claude-sonnet-4-5-20250929", 2)
    ok(tapes("alice", "storage", "sync"))
    honest = ok(tapes("alice", "usage", "--by", "model", "--csv"))
    assert honest.splitlines()[1].startswith("claude-sonnet-4-5-20250929,2,")
    formula = '=HYPERLINK("https://evil.example","open")'

    def injected(report: dict[str, Any]) -> None:
        report["rows"][0]["group"]["model"] = formula

    monkeypatch.setattr(context, "http_factory", lambda _url: hostile(client, "/usage", injected))
    rows = list(csv.reader(io.StringIO(ok(tapes("alice", "usage", "--by", "model", "--csv")))))
    assert rows[1][0] == "'" + formula
    assert not any(cell.startswith("=") for row in rows for cell in row)
