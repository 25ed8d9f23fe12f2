"""GitHub binding over real HTTP end to end: the ``tapes`` CLI, a ``tapes-server serve``
subprocess configured with a GitHub app, and the stand-in GitHub the server calls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tapes_e2e.cli import auth as auth_cli
from tests.e2e.conftest import ServerFactory, fast_cli
from tests.e2e.test_teams_live import run
from tests.github_standin import CLIENT_ID, CLIENT_SECRET, GithubStandIn


def test_github_binding_through_a_live_server(
    live_server_factory: ServerFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    fast_cli(monkeypatch)
    with GithubStandIn() as github:
        server = live_server_factory(args=[
            "--github-client-id", CLIENT_ID, "--github-client-secret", CLIENT_SECRET,
            "--github-url", github.url, "--github-api-url", github.url,
        ])  # fmt: skip

        def approve(_seconds: float) -> None:  # the person enters the code at GitHub
            for code in github.codes.values():
                github.approve(code.user_code, 7, "alice-gh")

        monkeypatch.setattr(auth_cli, "sleep", approve)
        alice, bob = tmp_path / "alice", tmp_path / "bob"
        login = ("auth", "login", "--server", server.base_url)
        out = run(capsys, alice, *login, "--handle", "alice", "--github")
        assert "bound to GitHub user @alice-gh" in out
        status = json.loads(run(capsys, alice, "auth", "status", "--json"))
        assert status["github_login"] == "alice-gh"
        run(capsys, bob, *login, "--handle", "bob")
        found = json.loads(run(capsys, bob, "auth", "whois", "--github", "Alice-GH", "--json"))
        assert (found["handle"], found["fingerprint"]) == ("alice", status["fingerprint"])
        assert github.polls >= 1
        # the identity key alone still logs in; the binding stays
        run(capsys, alice, "auth", "logout")
        run(capsys, alice, *login)
        assert json.loads(run(capsys, alice, "auth", "status", "--json"))["github_login"] == (
            "alice-gh"
        )
