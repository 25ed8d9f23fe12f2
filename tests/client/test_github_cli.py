"""Finding and naming teammates by the GitHub login they bound, through the ``tapes`` CLI
against the real app and the stand-in GitHub: ``tapes auth whois --github``, rosters that show
``gh:LOGIN``, and ``gh:LOGIN`` wherever a member is named. The login is the server's label:
every command still acts on the chain's fingerprint it pairs with."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from tapes_e2e.cli import auth as auth_cli
from tapes_e2e.client import ApiClient
from tapes_e2e.errors import RemoteError
from tests.client.conftest import Tapes
from tests.client.test_teams import Team, fingerprint, ok, one_error
from tests.github_standin import GithubStandIn
from tests.server.conftest import AUDIENCE, Clock
from tests.server.test_github import _app


@pytest.fixture
def github() -> Iterator[GithubStandIn]:
    with GithubStandIn() as standin:
        yield standin


@pytest.fixture
def client(database_url: str, clock: Clock, github: GithubStandIn) -> Iterator[TestClient[Any]]:
    """The app with a GitHub app configured (the stand-in); ``tapes`` talks to it."""
    with _app(database_url, clock, github) as app:
        yield app


def bind(
    tapes: Tapes, monkeypatch: pytest.MonkeyPatch, github: GithubStandIn, who: str,
    github_id: int, login: str,
) -> str:  # fmt: skip
    """``who`` runs ``tapes auth login --github`` and approves the code at GitHub."""

    def approve(_seconds: float) -> None:
        for code in github.codes.values():
            if code.state == "pending":
                github.approve(code.user_code, github_id, login)

    monkeypatch.setattr(auth_cli, "sleep", approve)
    return ok(tapes(who, "auth", "login", "--server", AUDIENCE, "--github"))


def test_teammates_are_found_and_named_by_their_github_login(
    tapes: Tapes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, github: GithubStandIn
) -> None:
    team = Team(tapes, tmp_path)
    bob = fingerprint(tmp_path / "bob")
    assert "bound to GitHub user @Bob-GH" in bind(tapes, monkeypatch, github, "bob", 2, "Bob-GH")
    bind(tapes, monkeypatch, github, "alice", 1, "alice-gh")

    out = ok(tapes("alice", "auth", "whois", "--github", "bob-gh"))
    assert out.strip() == f"GitHub user @Bob-GH is bob here, fingerprint {bob}"
    found = json.loads(ok(tapes("alice", "auth", "whois", "--github", "gh:BOB-gh", "--json")))
    assert found == {"handle": "bob", "fingerprint": bob, "github_login": "Bob-GH"}
    one_error(tapes("alice", "auth", "whois", "--github", "nobody"), "no account here is bound")
    assert tapes("alice", "auth", "whois", "--github", "not a login")[0] == 2  # usage

    shown = json.loads(ok(tapes("alice", "team", "show", team.id, "--json")))
    logins = {m["handle"]: m["github_login"] for m in shown["members"]}
    assert logins == {"alice": "alice-gh", "bob": "Bob-GH"}
    roster = ok(tapes("alice", "team", "show", team.id))
    assert "bob gh:Bob-GH" in roster
    assert max(map(len, roster.splitlines())) <= 80

    assert "is now viewer" in ok(tapes("alice", "team", "role", team.id, "gh:bob-gh", "viewer",
                                       "--yes"))  # fmt: skip
    shown = json.loads(ok(tapes("alice", "team", "show", team.id, "--json")))
    assert {m["fingerprint"]: m["role"] for m in shown["members"]}[bob] == "viewer"
    one_error(
        tapes("alice", "team", "remove", team.id, "gh:nobody", "--yes"),
        "no member of team", "GitHub login",
    )  # fmt: skip
    ok(tapes("alice", "team", "remove", team.id, "gh:Bob-GH", "--yes"))
    shown = json.loads(ok(tapes("alice", "team", "show", team.id, "--json")))
    assert bob not in {m["fingerprint"] for m in shown["members"]}


def test_github_binding_waits_out_a_rate_limit_and_stops_at_ctrl_c(
    tapes: Tapes, monkeypatch: pytest.MonkeyPatch, github: GithubStandIn
) -> None:
    ok(tapes("a", "auth", "login", "--server", AUDIENCE, "--handle", "al"))
    real_poll = ApiClient.github_poll
    refused: list[Any] = []
    waits: list[Any] = []

    def busy_once(api: ApiClient, bind_id: str) -> Any:
        if not refused:  # the first poll: others logging in from this address
            refused.append(bind_id)
            raise RemoteError(429, "too many attempts; wait a minute and try again")
        return real_poll(api, bind_id)

    def approve(seconds: float) -> None:
        waits.append(seconds)
        for code in github.codes.values():
            github.approve(code.user_code, 3, "al-gh")

    monkeypatch.setattr(ApiClient, "github_poll", busy_once)
    monkeypatch.setattr(auth_cli, "sleep", approve)
    assert "bound to GitHub user @al-gh" in ok(tapes("a", "auth", "login", "--github"))
    assert waits == [1, 20]  # GitHub's interval, then a longer wait after the 429

    def interrupt(_seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ApiClient, "github_poll", real_poll)
    monkeypatch.setattr(auth_cli, "sleep", interrupt)
    code, _, err = tapes("a", "auth", "login", "--github")
    assert (code, err.strip().splitlines()[-1]) == (130, "tapes: error: interrupted")
