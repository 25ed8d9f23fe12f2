"""``tapes usage`` against the real app: a viewer of a metadata-only team reads the team's
usage and cost; hostile model names print verbatim (Rich markup off)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from litestar.testing import TestClient

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
