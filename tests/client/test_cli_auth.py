"""``tapes auth`` end to end against the real app (in-process): login, status, logout."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from tapes_e2e import context
from tapes_e2e.cli import auth as auth_cli
from tests.client.conftest import Tapes
from tests.client.test_hostile_server import hostile
from tests.github_standin import GithubStandIn
from tests.server.conftest import AUDIENCE
from tests.server.test_github import _app


def test_login_registers_sets_up_the_vault_and_status_reports_it(
    tapes: Tapes, tmp_path: Path, client: TestClient[Any]
) -> None:
    code, out, err = tapes("a", "auth", "login", "--server", AUDIENCE, "--handle", "alice")
    assert code == 0, err
    assert "logged in to http://testserver.local as alice" in out
    assert "personal vault: v_" in out
    assert "created a new identity in" in err
    assert "run `tapes keys export --recovery-kit`" in err  # losing the key loses every session
    session = json.loads((tmp_path / "a" / "session.json").read_text())
    assert session["handle"] == "alice"
    assert (tmp_path / "a" / "session.json").stat().st_mode & 0o777 == 0o600
    code, out, _ = tapes("a", "auth", "status", "--json")
    report = json.loads(out)
    assert code == 0
    assert report["logged_in"] is True
    assert report["server_accepts_login"] is True
    # the second login (no handle) reuses the identity and finds the vault's genesis
    code, out, err = tapes("a", "auth", "login")
    assert code == 0, err
    assert "as alice" in out
    refresh = json.loads((tmp_path / "a" / "session.json").read_text())["refresh_token"]
    code, _, err = tapes("a", "auth", "logout")
    assert code == 0
    assert "the server ended it" in err
    ended = client.post("/auth/token/refresh", json={"refresh_token": refresh})
    assert ended.status_code == 401  # the login is over on the server, not only forgotten here
    code, out, _ = tapes("a", "auth", "status")
    assert code == 1
    assert "not logged in" in out


def test_login_without_a_server_or_with_a_wrong_passphrase(
    tapes: Tapes, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = tapes("b", "auth", "login")
    assert code == 1
    assert "no sync server configured" in err
    assert tapes("b", "auth", "login", "--server", AUDIENCE, "--handle", "bob")[0] == 0
    monkeypatch.setenv("TAPES_PASSPHRASE", "not the passphrase")
    code, _, err = tapes("b", "auth", "login")
    assert code == 1
    assert err.startswith("tapes: error: ")
    assert "passphrase" in err


def test_an_unknown_identity_without_a_handle_is_told_to_register(tapes: Tapes) -> None:
    code, _, err = tapes("c", "auth", "login", "--server", AUDIENCE)
    assert code == 1
    assert "handle" in err


def test_api_keys_create_list_revoke(tapes: Tapes) -> None:
    assert tapes("k", "auth", "login", "--server", AUDIENCE, "--handle", "kim")[0] == 0
    code, out, err = tapes("k", "auth", "api-key", "create", "-p", "pull", "--name", "ci")
    assert code == 0, err
    secret = out.strip()
    assert secret.startswith("tapes_")
    listed = json.loads(tapes("k", "auth", "api-key", "list", "--json")[1])
    assert [(k["name"], k["permissions"], k["revoked"]) for k in listed] == [
        ("ci", ["pull"], False)
    ]
    assert secret not in json.dumps(listed)
    assert tapes("k", "auth", "api-key", "revoke", listed[0]["key_id"])[0] == 0
    assert json.loads(tapes("k", "auth", "api-key", "list", "--json")[1])[0]["revoked"] is True
    code, _, err = tapes("k", "auth", "api-key", "create", "-p", "fly")
    assert code == 1
    assert "permissions" in err
    made = json.loads(tapes("k", "auth", "api-key", "create", "-p", "push", "--json")[1])
    assert made["api_key"].startswith("tapes_")
    assert made["info"]["permissions"] == ["push"]


@pytest.mark.parametrize("name", ["ci\u202egnp.exe", "ci\x1b]0;x\x07", "ci\nprod", "n" * 201])
def test_a_name_the_server_would_refuse_is_one_clear_line_and_nothing_made(
    tapes: Tapes, client: TestClient[Any], name: str
) -> None:
    """A team's or key's name is one line without control characters (threat model T): the
    CLI says so before it makes keys or sends anything, so no team is half made."""
    assert tapes("n", "auth", "login", "--server", AUDIENCE, "--handle", "nia")[0] == 0
    code, _, err = tapes("n", "auth", "api-key", "create", "-p", "pull", "--name", name)
    assert (code, err.count("\n")) == (1, 1), err
    assert err.startswith("tapes: error: a key's name is one line"), err
    code, _, err = tapes("n", "team", "create", name)
    assert (code, err.count("\n")) == (1, 1), err
    assert err.startswith("tapes: error: a team name is one line"), err
    assert json.loads(tapes("n", "auth", "api-key", "list", "--json")[1]) == []
    assert json.loads(tapes("n", "team", "list", "--json")[1]) == []


def test_configure_asks_the_server_before_saving_its_url(
    tapes: Tapes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tapes("cfg", "storage", "configure", "--api-url", AUDIENCE)[0] == 0
    assert AUDIENCE in (tmp_path / "cfg" / "config.toml").read_text()
    # a server whose logins are bound to another URL (a relay, or a typo) is refused
    code, _, err = tapes("other", "storage", "configure", "--api-url", "http://127.0.0.1:9")
    assert code == 1
    assert "audience" in err or "another server" in err or "bound" in err
    assert not (tmp_path / "other" / "config.toml").exists()
    # an unreachable one too, unless --no-check
    import httpx

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    monkeypatch.setattr(
        context, "http_factory", lambda _url: httpx.Client(transport=httpx.MockTransport(down))
    )
    code, _, err = tapes("off", "storage", "configure", "--api-url", "https://sync.example")
    assert code == 1
    assert "cannot reach" in err
    assert not (tmp_path / "off" / "config.toml").exists()
    cmd = ("storage", "configure", "--api-url", "https://sync.example", "--no-check")
    assert tapes("off", *cmd)[0] == 0


def test_login_with_github_binds_the_account_through_the_device_flow(
    tapes: Tapes, monkeypatch: pytest.MonkeyPatch, database_url: str, clock: Any
) -> None:
    """`tapes auth login --github` shows GitHub's code, polls while the person approves it at
    the stand-in, and binds; `auth status` shows the login; a teammate finds the account."""
    with GithubStandIn() as github, _app(database_url, clock, github) as hub:
        monkeypatch.setattr(context, "http_factory", lambda _url: hub)
        waits: list[float] = []

        def approve_at_github(seconds: float) -> None:
            waits.append(seconds)
            if len(waits) == 2:  # the person approves while the CLI polls
                github.approve(next(iter(github.codes.values())).user_code, 42, "al-ice")

        monkeypatch.setattr(auth_cli, "sleep", approve_at_github)
        login = ("auth", "login", "--server", AUDIENCE)
        code, out, err = tapes("a", *login, "--handle", "alice", "--github")
        assert code == 0, err
        assert re.search(r"open http://127\.0\.0\.1:\d+/login/device and enter the code \d{4}-WXYZ",
                         err)  # fmt: skip
        assert "bound to GitHub user @al-ice" in out
        assert len(waits) == 2
        assert "GitHub:         @al-ice" in tapes("a", "auth", "status")[1]
        assert json.loads(tapes("a", "auth", "status", "--json")[1])["github_login"] == "al-ice"
        # a declined code is one error, and the account stays as it was
        monkeypatch.setattr(
            auth_cli,
            "sleep",
            lambda _s: github.set_state(
                next(c for c in github.codes.values() if c.state == "pending").user_code, "denied"
            ),
        )
        code, _, err = tapes("a", *login, "--github")
        assert code == 1
        assert err.splitlines()[-2] == (
            "tapes: error: GitHub binding: the GitHub sign-in was declined at GitHub"
        )
        assert json.loads(tapes("a", "auth", "status", "--json")[1])["github_login"] == "al-ice"


def test_login_with_github_on_a_server_without_it_is_one_error(tapes: Tapes) -> None:
    code, out, err = tapes("a", "auth", "login", "--server", AUDIENCE, "--handle", "al", "--github")
    assert code == 1
    assert "logged in to" in out  # the key login itself went through
    assert "GitHub sign-in is not configured on this server" in err
    assert "TAPES_SERVER_GITHUB_CLIENT_ID" in err


@pytest.mark.parametrize("expires_in", [10**12, 0, -60])
def test_a_token_lifetime_no_server_gives_is_a_malformed_answer(
    tapes: Tapes, tmp_path: Path, client: TestClient[Any], monkeypatch: pytest.MonkeyPatch,
    expires_in: int,
) -> None:  # fmt: skip
    """A hostile server's ``expires_in``: 10^12 s overflowed the expiry date (exit 70,
    "unexpected error"), 0 or less made every request refresh first. A server takes 30 s to a
    day; the client refuses what no server gives, and keeps no half-made login."""
    evil = hostile(client, "/auth/login", lambda pair: pair.update(expires_in=expires_in))
    monkeypatch.setattr(context, "http_factory", lambda _url: evil)
    code, _, err = tapes("a", "auth", "login", "--server", AUDIENCE, "--handle", "alice")
    assert code == 1, err
    assert "the server's answer to POST /auth/login is malformed" in err
    assert not (tmp_path / "a" / "session.json").exists()
