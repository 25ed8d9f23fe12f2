"""Usage and cost from clear metadata (issue 12): counted by when the work happened, every token
kind, grouped, priced with cache tokens, unknown models unpriced, bad parameters 400, CSV safe
to open, readable by owner, admin, viewer and read-usage keys only."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from litestar.testing import TestClient

from server.app import create_app
from server.db.engine import make_engine
from server.db.migrate import upgrade
from server.domain.usage import labels, services
from server.settings import Settings
from tests.server.conftest import AUDIENCE, Clock, User, Vault
from tests.server.test_teams import TeamKit

PRICES = {"acme-large": {"input": 3, "output": 15, "cache_read": 0.3, "cache_write": 3.75}}


@pytest.fixture
def priced(database_url: str, clock: Clock, tmp_path: Path) -> Iterator[TestClient[Any]]:
    """The app with a price-override file (``TAPES_SERVER_PRICING``)."""
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps(PRICES), "utf-8")
    settings = Settings(database_url=database_url, auth_rate_per_minute=1000, pricing=str(prices))
    engine = make_engine(database_url)
    upgrade(engine)
    app = create_app(settings, engine=engine, clock=clock, audience=AUDIENCE)
    with TestClient(app, base_url=AUDIENCE) as test_client:
        yield test_client
    engine.dispose()


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Pusher:
    """Pushes envelopes with chosen clear metadata into one vault (the server cannot check it
    against the sealed content, so tests may say anything the validation allows)."""

    def __init__(self, user: User, vault: Vault) -> None:
        self.user, self.vault, self.count = user, vault, 0

    def push(self, *metadata: dict[str, Any], session: bool = True) -> list[str]:
        parent: str | None = None
        envelopes = []
        for clear in metadata:
            self.count += 1
            tapes_hash, envelope = self.vault.seal(f"{self.user.handle} {self.count}", parent)
            envelopes.append(envelope | {"metadata": clear})
            parent = tapes_hash if session else None
        body = {"vault": self.vault.vault_id, "envelopes": envelopes}
        response = self.user.post("/api/v1/sync/push", body)
        assert response.status_code == 200, response.text
        return [e["node_id"] for e in envelopes]


def usage(user: User, vault: str, query: str) -> dict[str, Any]:
    response = user.get(f"/api/v1/teams/{vault}/usage?{query}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_usage_by_when_the_work_happened_with_every_token_kind(
    client: TestClient[Any], clock: Clock
) -> None:
    """Backfilled history lands on its own day, not on the day of the push; sessions are roots."""
    alice, bob, dave = (User(client, n) for n in ("alice", "bob", "dave"))
    kit = TeamKit(alice, clock)
    assert kit.add(bob, "admin").status_code == 200
    assert kit.add(dave, "viewer").status_code == 200
    old = clock.now - timedelta(days=40)
    tokens = {
        "prompt_tokens": 100, "completion_tokens": 20, "cache_creation_input_tokens": 30,
        "cache_read_input_tokens": 40, "total_tokens": 120,
    }  # fmt: skip
    Pusher(alice, kit.vault(alice)).push(
        {"model": "m1", "created_at": stamp(old), **tokens},
        {"model": "m1", "created_at": stamp(old), **tokens},
    )
    Pusher(bob, kit.vault(bob)).push({"model": "m2", "created_at": stamp(clock.now), **tokens})
    since = (old - timedelta(days=1)).date().isoformat()
    report = usage(dave, kit.team_id, f"from={since}&group_by=day,member")
    rows = {(r["group"]["day"], r["group"]["member"]): r["figures"] for r in report["rows"]}
    assert set(rows) == {
        (old.date().isoformat(), "alice"), (clock.now.date().isoformat(), "bob"),
    }  # fmt: skip
    history = rows[old.date().isoformat(), "alice"]
    assert (history["nodes"], history["sessions"]) == (2, 1)
    assert {k: history[k] for k in tokens} == {k: 2 * v for k, v in tokens.items()}
    assert report["time_basis"] == "created_at"
    assert report["totals"]["nodes"] == 3
    assert (report["metadata_policy"], report["content_policy"]) == ("coarse", "encrypted")
    by_model = usage(alice, kit.team_id, f"from={since}&group_by=model")
    assert [r["group"]["model"] for r in by_model["rows"]] == ["m1", "m2"]
    recent = usage(alice, kit.team_id, "group_by=member")  # the last 30 days only
    assert [r["group"]["member"] for r in recent["rows"]] == ["bob"]


def test_the_none_policy_counts_by_upload_time_and_says_so(
    client: TestClient[Any], alice: User, clock: Clock
) -> None:
    Pusher(alice, Vault(alice.vault, alice.identity)).push({}, {})
    report = usage(alice, alice.vault, "group_by=day")
    assert report["time_basis"] == "uploaded_at"
    (row,) = report["rows"]
    assert row["group"]["day"] == clock.now.date().isoformat()
    assert (row["figures"]["nodes"], row["figures"]["upload_timed_nodes"]) == (2, 2)


def test_cost_with_cache_tokens_matches_hand_computed_figures(
    priced: TestClient[Any], clock: Clock
) -> None:
    """Per million tokens, input 3, output 15, cache read 0.30, cache write 3.75 (the override
    file for acme-large; Anthropic's published prices for Claude Sonnet 4.5 in genai-prices).
    A node of 1,000,000 prompt tokens of which 200,000 written to and 500,000 read from the
    cache, and 100,000 completion tokens: 300,000 x 3 + 200,000 x 3.75 + 500,000 x 0.30 +
    100,000 x 15 per million = 0.90 + 0.75 + 0.15 + 1.50 = $3.30. Cache savings: 500,000 x
    (3 - 0.30) per million = $1.35."""
    alice = User(priced, "alice")
    node = {
        "created_at": stamp(clock.now), "prompt_tokens": 1_000_000,
        "cache_creation_input_tokens": 200_000, "cache_read_input_tokens": 500_000,
        "completion_tokens": 100_000, "total_tokens": 1_100_000,
    }  # fmt: skip
    pusher = Pusher(alice, Vault(alice.vault, alice.identity))
    pusher.push(
        node | {"model": "ACME-Large-20250101", "provider": "acme"},  # deck's normalization
        node | {"model": "claude-sonnet-4-5-20250929", "provider": "anthropic"},
        node | {"model": "gpt-4o-mini", "provider": "openai", "cache_read_input_tokens": 0,
                "cache_creation_input_tokens": 0, "prompt_tokens": 2_000_000,
                "completion_tokens": 1_000_000},
    )  # fmt: skip
    report = usage(alice, alice.vault, "group_by=model")
    cost = {r["group"]["model"]: r["figures"] for r in report["rows"]}
    for model in ("ACME-Large-20250101", "claude-sonnet-4-5-20250929"):
        assert Decimal(cost[model]["cost_usd"]) == Decimal("3.30"), model
        assert Decimal(cost[model]["cache_savings_usd"]) == Decimal("1.35"), model
    # gpt-4o-mini: input 0.15, output 0.60 per million: 2 x 0.15 + 1 x 0.60 = $0.90
    assert Decimal(cost["gpt-4o-mini"]["cost_usd"]) == Decimal("0.90")
    assert Decimal(report["totals"]["cost_usd"]) == Decimal("7.50")
    assert report["unpriced"] == []
    assert "server price file" in report["pricing"]


def test_an_unknown_model_is_unpriced_never_zero(client: TestClient[Any], alice: User) -> None:
    Pusher(alice, Vault(alice.vault, alice.identity)).push(
        {"model": "homebrew-7b", "provider": "ollama", "prompt_tokens": 50,
         "completion_tokens": 5, "total_tokens": 55},
        {"model": "gpt-4o", "provider": "openai", "prompt_tokens": 1_000_000},
    )  # fmt: skip
    report = usage(alice, alice.vault, "group_by=model")
    assert report["unpriced"] == [
        {"model": "homebrew-7b", "provider": "ollama", "nodes": 1, "tokens": 55}
    ]
    rows = {r["group"]["model"]: r["figures"] for r in report["rows"]}
    assert (rows["homebrew-7b"]["unpriced_tokens"], rows["homebrew-7b"]["unpriced_nodes"]) == (
        55,
        1,
    )
    assert Decimal(rows["gpt-4o"]["cost_usd"]) == Decimal("2.50")
    assert (report["totals"]["unpriced_tokens"], Decimal(report["totals"]["cost_usd"])) == (
        55, Decimal("2.50"),
    )  # fmt: skip


def test_a_vault_itemizes_a_bounded_number_of_models_and_counts_the_rest_as_other(
    alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member who names a new model (or harness) in every node cannot make every report, CSV
    and dashboard page as long as the vault: past its kind's cap a label is counted, in full,
    under ``(other)`` (threat model B16). The first labels named stay itemized for good."""
    monkeypatch.setitem(labels.CAPS, "model", 3)
    monkeypatch.setitem(labels.CAPS, "agent", 2)
    pusher = Pusher(alice, Vault(alice.vault, alice.identity))
    pusher.push(*[
        {"model": f"m{i}", "provider": "p", "agent_name": f"a{i}", "prompt_tokens": 10 + i,
         "total_tokens": 10 + i}
        for i in range(5)
    ])  # fmt: skip
    pusher.push(
        {"model": "m0", "provider": "p", "agent_name": "a1", "total_tokens": 100},
        {"model": "m9", "provider": "p", "total_tokens": 1000},
        {"model": "m1", "provider": "q", "total_tokens": 2000},  # another provider: a new label
        {"total_tokens": 7},  # nothing named: never capped
    )

    def rows(group_by: str) -> dict[Any, tuple[int, int]]:
        report = usage(alice, alice.vault, f"group_by={group_by}")
        return {
            tuple(r["group"].values()): (r["figures"]["nodes"], r["figures"]["total_tokens"])
            for r in report["rows"]
        }

    assert rows("model") == {
        ("m0",): (2, 110), ("m1",): (1, 11), ("m2",): (1, 12), (labels.OTHER,): (4, 3027),
        ("",): (1, 7),
    }  # fmt: skip
    assert rows("agent") == {
        ("a0",): (1, 10), ("a1",): (2, 111), (labels.OTHER,): (3, 39), ("",): (3, 3007),
    }  # fmt: skip
    report = usage(alice, alice.vault, "group_by=model")
    assert (report["totals"]["nodes"], report["totals"]["total_tokens"]) == (9, 3167)
    assert {(u["model"], u["provider"]) for u in report["unpriced"]} == {
        ("m0", "p"), ("m1", "p"), ("m2", "p"), (labels.OTHER, labels.OTHER),
    }  # fmt: skip


def test_a_report_longer_than_the_row_limit_is_one_clear_refusal(
    alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However fine the grouping asked, a report reads at most ``MAX_REPORT_ROWS`` rows: past
    it the answer is a 400 saying how to narrow it, never a report as long as the vault."""
    monkeypatch.setattr(services, "MAX_REPORT_ROWS", 2)
    Pusher(alice, Vault(alice.vault, alice.identity)).push(
        *[{"model": f"m{i}", "provider": "p", "total_tokens": 1} for i in range(3)]
    )
    assert len(usage(alice, alice.vault, "group_by=member")["rows"]) == 1  # read: 3 rows
    refused = alice.get(f"/api/v1/teams/{alice.vault}/usage?group_by=model")
    assert refused.status_code == 400
    assert refused.json()["detail"] == (
        "this report would have more than 2 rows: group by fewer keys or ask for a shorter range"
    )
    monkeypatch.setattr(services, "_READ_PER_ROW", 1)  # 3 rows read for 1 answered: too many
    assert alice.get(f"/api/v1/teams/{alice.vault}/usage?group_by=member").status_code == 400


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("group_by=colour", "group_by='colour' is not one of"),
        ("group_by=day,day", "group_by names day twice"),
        ("group_by=project", "needs the full metadata policy"),
        ("from=yesterday", "from='yesterday' is not a date"),
        ("to=2026-02-30", "to='2026-02-30' is not a date"),
        ("tz=Mars/Olympus", "is not an IANA time zone"),
        ("tz=../../etc/passwd", "is not an IANA time zone"),
        ("from=2026-03-02&to=2026-03-01", "from must be before to"),
        ("from=1969-12-31&to=1970-01-02", "from must be 1970-01-01 or later"),
        ("from=2020-01-01&to=2026-01-01", "spans at most"),
        ("format=xml", ""),
    ],
)
def test_bad_parameters_are_400_with_one_line(alice: User, query: str, message: str) -> None:
    response = alice.get(f"/api/v1/teams/{alice.vault}/usage?{query}")
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert message in detail
    assert "\n" not in detail


def test_days_and_hours_in_a_named_time_zone(
    client: TestClient[Any], alice: User, clock: Clock
) -> None:
    """A node at 23:30 UTC (``full`` keeps the exact time) is on the next day in Kolkata
    (UTC+05:30), on the same day in New York; hours follow the zone's offset, half hours too."""
    moment = (clock.now - timedelta(days=3)).replace(hour=23, minute=30, second=0)
    Pusher(alice, Vault(alice.vault, alice.identity)).push(
        {"model": "m", "created_at": stamp(moment), "total_tokens": 5}
    )
    for zone in ("Asia/Kolkata", "America/New_York", "UTC"):
        local = moment.astimezone(ZoneInfo(zone))
        report = usage(alice, alice.vault, f"tz={zone}&group_by=day,hour")
        (row,) = report["rows"]
        assert row["group"] == {
            "day": local.date().isoformat(), "hour": local.strftime("%Y-%m-%dT%H:00"),
        }, zone  # fmt: skip
        assert report["tz"] == zone
    day = moment.date()
    inside = usage(alice, alice.vault, f"from={day}&to={day}")  # a date `to` is inclusive
    outside = usage(alice, alice.vault, f"from={day}&to={day}&tz=Asia/Kolkata")
    assert (inside["totals"]["nodes"], outside["totals"]["nodes"]) == (1, 0)
    exact = f"from={stamp(moment)}&to={stamp(moment + timedelta(minutes=15))}"
    assert usage(alice, alice.vault, exact)["totals"]["nodes"] == 1


def test_csv_neutralizes_formulas_and_json_keeps_hostile_strings(
    client: TestClient[Any], alice: User
) -> None:
    hostile = ('=HYPERLINK("http://x")', "</script>&", "+1", "@SUM(A1)", "-2", "[/x]")
    Pusher(alice, Vault(alice.vault, alice.identity)).push(
        *({"model": m, "provider": "</script>&", "total_tokens": 1} for m in hostile)
    )
    report = usage(alice, alice.vault, "group_by=model,provider")
    assert {r["group"]["model"] for r in report["rows"]} == set(hostile)
    response = alice.get(f"/api/v1/teams/{alice.vault}/usage?group_by=model&format=csv")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(response.text)))
    assert table[0][:3] == ["model", "nodes", "sessions"]
    models = {row[0] for row in table[1:-1]}
    assert models == {'\'=HYPERLINK("http://x")', "</script>&", "'+1", "'@SUM(A1)", "'-2", "[/x]"}
    assert table[-1][:2] == ["total", "6"]


def test_who_reads_usage(client: TestClient[Any], clock: Clock) -> None:
    alice, bob, carol, dave = (User(client, n) for n in ("alice", "bob", "carol", "dave"))
    kit = TeamKit(alice, clock)
    assert kit.add(bob).status_code == 200
    assert kit.add(carol, "admin").status_code == 200
    assert kit.add(dave, "viewer").status_code == 200
    path = f"/api/v1/teams/{kit.team_id}/usage"
    codes = {u.handle: u.get(path).status_code for u in (alice, bob, carol, dave)}
    assert codes == {"alice": 200, "bob": 403, "carol": 200, "dave": 200}
    assert bob.get(f"/api/v1/teams/{bob.vault}/usage").status_code == 200  # their own vault
    assert client.get(path).status_code == 401
    for permissions, expected in ((["read-usage"], 200), (["pull"], 404)):
        key = carol.post("/api/v1/api-keys/", {"vault": kit.team_id, "permissions": permissions})
        headers = {"Authorization": f"Bearer {key.json()['api_key']}"}
        assert client.get(path, headers=headers).status_code == expected, permissions
