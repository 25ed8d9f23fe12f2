"""``tapes-server`` commands through typer's CliRunner, on the database the in-process server
uses (a real SQLite file, and PostgreSQL where it runs). ``serve`` itself runs as a subprocess
in tests/e2e/test_serve.py; here only its refusals, which happen before anything starts.

Bad input is one line on stderr, a non-zero exit, and nothing changed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner, Result

from server.cli import app
from server.db.models import AuditEntry, NodeRecord, Team
from server.settings import OPTIONS
from tests.server.conftest import Clock, User, Vault
from tests.server.test_teams import TeamKit, audit_actions

# No TAPES_SERVER_* variable of the machine running the tests reaches a command.
CLEAN_ENV: dict[str, str | None] = {option.env: None for option in OPTIONS} | {"COLUMNS": "200"}


def tapes_server(*args: str, **env: str) -> Result:
    return CliRunner().invoke(app, list(args), env=CLEAN_ENV | env, catch_exceptions=False)


def state(client: TestClient[Any]) -> tuple[dict[str, str], int, int]:
    """Every vault's tier, the audit entries and the stored envelopes: what a refusal keeps."""
    with Session(client.app.state.engine) as db:
        tiers = dict(db.execute(select(Team.slug, Team.tier)).all())
        audits = db.scalar(select(func.count()).select_from(AuditEntry)) or 0
        nodes = db.scalar(select(func.count()).select_from(NodeRecord)) or 0
    return tiers, audits, nodes


def assert_refused(result: Result, message: str) -> None:
    assert result.exit_code != 0
    assert result.stderr == f"tapes-server: error: {message}\n"
    assert result.stdout == ""


# --- plan set --------------------------------------------------------------------------------


@pytest.mark.plans("rfc")
def test_plan_set_raises_a_users_and_a_teams_tier(
    alice: User, clock: Clock, client: TestClient[Any], database_url: str
) -> None:
    kit = TeamKit(alice, clock)
    assert kit.response.status_code == 201
    assert TeamKit(alice, clock).response.status_code == 402  # free: one team

    result = tapes_server("plan", "set", "alice", "pro", "--database-url", database_url)
    assert (result.exit_code, result.stdout, result.stderr) == (
        0,
        "plan: user alice: free -> pro\n",
        "",
    )
    assert TeamKit(alice, clock).response.status_code == 201  # pro: three teams

    by_variable = tapes_server(
        "plan", "set", kit.slug, "enterprise", TAPES_SERVER_DATABASE_URL=database_url
    )
    assert by_variable.stdout == f"plan: team {kit.slug}: free -> enterprise\n"
    tiers, _, _ = state(client)
    assert tiers[f"personal-{alice.user_id}"] == "pro"
    assert tiers[kit.slug] == "enterprise"
    assert audit_actions(alice, kit.team_id)[-1] == "plan_changed"


def test_plan_set_names_a_team_or_a_user_when_both_are_called_so(
    alice: User, bob: User, clock: Clock, client: TestClient[Any], database_url: str
) -> None:
    assert TeamKit(alice, clock, slug="bob").response.status_code == 201
    before = state(client)
    assert_refused(
        tapes_server("plan", "set", "bob", "pro", "--database-url", database_url),
        "'bob' is both a user and a team: write user:bob or team:bob",
    )
    assert state(client) == before
    result = tapes_server("plan", "set", "team:bob", "pro", "--database-url", database_url)
    assert result.stdout == "plan: team bob: free -> pro\n"
    result = tapes_server("plan", "set", "user:bob", "enterprise", "--database-url", database_url)
    assert result.stdout == "plan: user bob: free -> enterprise\n"
    tiers, _, _ = state(client)
    assert (tiers["bob"], tiers[f"personal-{bob.user_id}"]) == ("pro", "enterprise")


@pytest.mark.parametrize(
    ("name", "tier", "message"),
    [
        ("alice", "gold", "unknown tier 'gold': choose one of free, pro, enterprise"),
        ("alice", "Pro", "unknown tier 'Pro': choose one of free, pro, enterprise"),
        ("nobody", "pro", "no user or team is called 'nobody'"),
        ("team:alice", "pro", "no user or team is called 'team:alice'"),
        ("", "pro", "no user or team is called ''"),
    ],
)
def test_plan_set_refuses_an_unknown_tier_or_name_and_changes_nothing(
    *, alice: User, clock: Clock, client: TestClient[Any], database_url: str, name: str,
    tier: str, message: str,
) -> None:  # fmt: skip
    TeamKit(alice, clock)
    before = state(client)
    assert_refused(tapes_server("plan", "set", name, tier, "--database-url", database_url), message)
    assert state(client) == before


def test_plan_set_on_a_missing_database_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "typo.sqlite"
    result = tapes_server("plan", "set", "alice", "pro", "--database-url", f"sqlite:///{missing}")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"tapes-server: error: no database at {missing}",
        (
            "tapes-server: hint: check --database-url (TAPES_SERVER_DATABASE_URL), "
            "or start the server once"
        ),
    ]
    assert not missing.exists()


# --- retention -------------------------------------------------------------------------------


def _old_and_new(alice: User, clock: Clock) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Three envelopes uploaded 40 days ago and one now (the server's clock moved back)."""
    keys = Vault(alice.vault, alice.identity)
    old = keys.chain(3)
    clock.advance(days=-40)
    assert alice.post("/api/v1/sync/push", {"vault": alice.vault, "envelopes": old}).is_success
    clock.advance(days=40)
    _, fresh = keys.seal("recent session")
    assert alice.post("/api/v1/sync/push", {"vault": alice.vault, "envelopes": [fresh]}).is_success
    return old, fresh


def _stored(alice: User) -> list[str]:
    page = alice.get(f"/api/v1/sync/pull?vault={alice.vault}").json()
    return [item["envelope"]["node_id"] for item in page["items"]]


def test_retention_dry_run_lists_what_would_go_and_deletes_nothing(
    alice: User, clock: Clock, client: TestClient[Any], database_url: str
) -> None:
    old, fresh = _old_and_new(alice, clock)
    before = state(client)
    result = tapes_server(
        "retention", "--dry-run", "--plans", "rfc", "--database-url", database_url
    )
    assert result.exit_code == 0, result.stderr
    first, total = result.stdout.splitlines()
    assert first.startswith(
        f"would delete 3 envelope(s) of personal vault personal-{alice.user_id} "
        "(free plan: uploaded before "
    )
    cutoff = datetime.strptime(first.split("before ")[1], "%Y-%m-%d %H:%M UTC)")
    age = datetime.now(UTC).replace(tzinfo=None) - cutoff
    assert 29 * 86400 < age.total_seconds() < 31 * 86400
    assert total == "retention: would delete 3 expired envelope(s); nothing deleted (dry run)"
    assert state(client) == before
    assert _stored(alice) == [*(e["node_id"] for e in old), fresh["node_id"]]


def test_retention_deletes_nothing_with_plans_off(
    alice: User, clock: Clock, client: TestClient[Any], database_url: str
) -> None:
    _old_and_new(alice, clock)
    before = state(client)
    for args in ([], ["--dry-run"]):
        result = tapes_server("retention", *args, "--database-url", database_url)
        assert (result.exit_code, result.stdout) == (
            0,
            "retention: plans are off (--plans / TAPES_SERVER_PLANS=off): nothing expires\n",
        )
    assert state(client) == before


def test_retention_with_plans_rfc_deletes_what_the_free_plan_no_longer_keeps(
    alice: User, clock: Clock, client: TestClient[Any], database_url: str
) -> None:
    _, fresh = _old_and_new(alice, clock)
    result = tapes_server(
        "retention", TAPES_SERVER_PLANS="rfc", TAPES_SERVER_DATABASE_URL=database_url
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "retention: deleted 3 expired envelope(s)"
    assert _stored(alice) == [fresh["node_id"]]
    assert alice.get(f"/api/v1/sync/status?vault={alice.vault}").json()["node_count"] == 1
    again = tapes_server("retention", "--plans", "rfc", "--database-url", database_url)
    assert again.stdout == "retention: deleted 0 expired envelope(s)\n"


def test_retention_refuses_an_unknown_plans_mode(
    alice: User, clock: Clock, client: TestClient[Any], database_url: str
) -> None:
    _old_and_new(alice, clock)
    before = state(client)
    assert_refused(
        tapes_server("retention", "--plans", "yes", "--database-url", database_url),
        "--plans='yes' is not one of off, rfc",
    )
    assert_refused(
        tapes_server("retention", TAPES_SERVER_PLANS="RFC", TAPES_SERVER_DATABASE_URL=database_url),
        "TAPES_SERVER_PLANS='RFC' is not one of off, rfc",
    )
    assert state(client) == before


# --- serve's refusals, db, version, help -----------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--port", "70000"], {}, "--port=70000 is out of range (1..65535)"),
        (["--port", "http"], {}, "--port='http' is not a whole number"),
        ([], {"TAPES_SERVER_PORT": "0"}, "TAPES_SERVER_PORT=0 is out of range (1..65535)"),
        (["--workers", "0"], {}, "--workers=0 is out of range (1..64)"),
        (["--plans", "pro"], {}, "--plans='pro' is not one of off, rfc"),
        (["--host", "a b"], {}, "--host='a b' is not a host name or address"),
        (["--public-url", "ftp://x"], {}, "--public-url='ftp://x' is not an http(s) base URL"),
        (["--database-url", "mysql://x/y"], {},
         "--database-url: unsupported database 'mysql': use sqlite:/// or postgresql://"),
        (["--frobnicate"], {}, "No such option: --frobnicate (see tapes-server serve --help)"),
    ],
)  # fmt: skip
def test_serve_refuses_bad_settings_in_one_line_before_touching_anything(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    database = tmp_path / "server.sqlite"
    result = tapes_server("serve", "--database-url", f"sqlite:///{database}", *args, **env)
    assert_refused(result, message)
    assert not database.exists()


def test_a_flag_wins_over_its_variable_and_the_error_names_the_one_used(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'never.sqlite'}"
    # the variable is fine, the flag is not: the flag is used, and named
    result = tapes_server("serve", "--database-url", url, "--port", "0", TAPES_SERVER_PORT="8787")
    assert_refused(result, "--port=0 is out of range (1..65535)")
    # the variable is bad, the flag is fine: the variable is never read
    result = tapes_server("db", "upgrade", "--database-url", url, TAPES_SERVER_DATABASE_URL="x:")
    assert result.exit_code == 0, result.stderr


def test_db_upgrade_and_current_on_a_new_sqlite_file(tmp_path: Path) -> None:
    database = tmp_path / "new" / "server.sqlite"
    url = f"sqlite:///{database}"
    upgraded = tapes_server("db", "upgrade", "--database-url", url)
    assert upgraded.exit_code == 0, upgraded.stderr
    assert upgraded.stdout.startswith(f"database SQLite file {database} at revision ")
    revision = upgraded.stdout.split()[-1]
    current = tapes_server("db", "current", TAPES_SERVER_DATABASE_URL=url)
    assert current.stdout == f"current {revision}; newest {revision}\n"


def test_version() -> None:
    assert tapes_server("version").stdout == "tapes-server 0.1.0\n"


def test_serve_help_lists_every_setting_with_its_variable_and_default() -> None:
    result = tapes_server("serve", "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.replace("│", " ").split())  # rich draws a box
    for option in OPTIONS:
        assert option.flag in text
        assert f"[env var: {option.env}]" in text
        assert f"Default: {option.default}." in text


@pytest.mark.parametrize("command", [["plan", "set"], ["retention"], ["db", "upgrade"]])
def test_every_command_has_help(command: list[str]) -> None:
    result = tapes_server(*command, "--help")
    assert result.exit_code == 0
    assert "--database-url" in result.stdout


def test_a_team_on_legal_hold_keeps_everything_and_retention_says_so(
    alice: User, clock: Clock, client: TestClient[Any], database_url: str
) -> None:
    """An owner's legal hold (audited): retention, dry run or not, deletes nothing of the team
    and names it as kept; taken off, the next run deletes what the plan no longer keeps."""
    kit = TeamKit(alice, clock)
    team, keys = kit.team_id, kit.vault(alice)
    old = keys.chain(3)
    clock.advance(days=-40)
    assert alice.post("/api/v1/sync/push", {"vault": team, "envelopes": old}).is_success
    clock.advance(days=40)

    def stored() -> int:
        return int(alice.get(f"/api/v1/sync/status?vault={team}").json()["node_count"])

    held = alice.post(f"/api/v1/teams/{team}/hold", {"on": True})
    assert held.json() == {"vault": team, "legal_hold": True}
    assert [v["legal_hold"] for v in alice.get("/api/v1/teams").json()] == [False, True]
    for args in (["--dry-run"], []):
        result = tapes_server("retention", *args, "--plans", "rfc", "--database-url", database_url)
        assert result.exit_code == 0, result.stderr
        first, total = result.stdout.splitlines()
        assert first.startswith(f"kept 3 envelope(s) of team vault {kit.slug} (free plan")
        assert first.endswith(": on legal hold")
        assert total.startswith(("retention: would delete 0", "retention: deleted 0"))
        assert stored() == 3
    audit = alice.get(f"/api/v1/teams/{team}/audit").json()["entries"]
    assert audit[-1]["action"] == "legal_hold_on"
    off = alice.post(f"/api/v1/teams/{team}/hold", {"on": False})
    assert off.json()["legal_hold"] is False
    result = tapes_server("retention", "--plans", "rfc", "--database-url", database_url)
    assert result.stdout.splitlines()[-1] == "retention: deleted 3 expired envelope(s)"
    assert stored() == 0


def test_only_a_logged_in_owner_sets_a_legal_hold(
    alice: User, bob: User, clock: Clock, client: TestClient[Any]
) -> None:
    kit = TeamKit(alice, clock)
    assert kit.add(bob, "admin").status_code == 200
    assert bob.post(f"/api/v1/teams/{kit.team_id}/hold", {"on": True}).status_code == 403
    key = alice.post("/api/v1/api-keys/", {"vault": kit.team_id, "permissions": ["admin"]}).json()
    by_key = client.post(f"/api/v1/teams/{kit.team_id}/hold", json={"on": True},
                         headers={"Authorization": f"Bearer {key['api_key']}"})  # fmt: skip
    assert by_key.status_code == 401
    assert alice.get("/api/v1/teams").json()[1]["legal_hold"] is False
    assert alice.post(f"/api/v1/teams/{kit.team_id}/hold", {"on": True}).status_code == 200
