"""``tapes usage`` against the real app: a viewer of a metadata-only team reads the team's
usage and cost; hostile model names print verbatim (Rich markup off)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from litestar.testing import TestClient
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from server.db.models import UsageBucket
from tapes_e2e.node import Node, Usage
from tapes_e2e.providers.local import LocalProvider
from tests.client.conftest import Tapes
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


def _verify(tapes: Tapes, who: str, *args: str) -> tuple[int, dict[str, Any], str]:
    code, out, err = tapes(who, "usage", "--verify", "--by", "day,model", "--json", *args)
    return code, json.loads(out) if out else {}, err


def test_verify_finds_every_figure_a_server_altered(
    tapes: Tapes, tmp_path: Path, client: TestClient[Any]
) -> None:
    """The owner of a personal vault recomputes its usage from the synced nodes: an honest
    server matches; an inflated count, a dropped row and an invented row are each reported."""
    ok(tapes("alice", "auth", "login", "--server", "http://testserver.local", "--handle", "alice"))
    record_turns(tmp_path / "alice", "claude-sonnet-4-5-20250929", 3)
    record_turns(tmp_path / "alice", "[/x] gpt", 2)
    ok(tapes("alice", "storage", "sync"))
    vault = json.loads((tmp_path / "alice" / "session.json").read_text())["personal_vault"]
    code, result, err = _verify(tapes, "alice")
    assert (code, result["verified"], result["differences"]) == (0, True, []), err
    assert result["rows"] >= 2
    assert "verified: " in ok(tapes("alice", "usage", "--verify", "--by", "day,model"))
    for zone in ("Asia/Kathmandu", "America/St_Johns"):  # +05:45 and -03:30: days and hours
        code, result, err = _verify(tapes, "alice", "--tz", zone, "--by", "hour,provider")
        assert (code, result.get("verified")) == (0, True), err

    sonnet = next(b for b in _buckets(client, vault) if b.model.startswith("claude"))
    with Session(client.app.state.engine) as db, db.begin():  # the server inflates one figure
        db.execute(
            update(UsageBucket)
            .where(UsageBucket.vault_id == vault, UsageBucket.dims == sonnet.dims)
            .values(completion_tokens=UsageBucket.completion_tokens + 1)
        )
    code, result, _ = _verify(tapes, "alice")
    assert code == 1
    assert [(d["group"]["model"], d["figure"], d["server"] - d["local"])
            for d in result["differences"]] == [(sonnet.model, "completion_tokens", 1)]  # fmt: skip
    code, out, err = tapes("alice", "usage", "--verify", "--by", "model")
    assert code == 1
    assert "completion_tokens" in out
    assert "300,001" in out  # the server's figure beside this machine's 300,000
    assert "[/x] gpt" not in out  # the rows that match are not listed

    gpt = next(b for b in _buckets(client, vault) if b.model == "[/x] gpt")
    with Session(client.app.state.engine) as db, db.begin():  # drops a row, invents one
        db.execute(delete(UsageBucket).where(
            UsageBucket.vault_id == vault, UsageBucket.dims == gpt.dims))  # fmt: skip
        ghost = {c.name: getattr(sonnet, c.name) for c in UsageBucket.__table__.columns}
        db.add(UsageBucket(**(ghost | {"dims": "0" * 32, "model": "ghost-model"})))
    code, result, _ = _verify(tapes, "alice")
    assert code == 1
    models = {d["group"]["model"] for d in result["differences"]}
    assert models == {sonnet.model, "[/x] gpt", "ghost-model"}
    dropped = [d for d in result["differences"] if d["group"]["model"] == "[/x] gpt"]
    assert {(d["figure"], d["server"], d["local"]) for d in dropped} >= {("nodes", 0, 2)}


def test_verify_needs_every_node_pulled_and_is_refused_for_a_team(
    tapes: Tapes, tmp_path: Path, client: TestClient[Any]
) -> None:
    """A second machine that has not pulled what the first pushed is told to sync, not shown a
    mismatch; a team's figures are refused with the reason (nobody holds every node), a viewer
    with theirs."""
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
    for who in ("alice", "bob"):
        one_error(tapes(who, "usage", "--team", team.id, "--verify"), "nobody holds every node")
    one_error(tapes("dave", "usage", "--team", team.id, "--verify"), "a viewer holds no content")
    one_error(tapes("alice", "usage", "--verify", "--by", "member"), "member")
