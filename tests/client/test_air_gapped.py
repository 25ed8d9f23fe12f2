"""Air-gapped mode: ``air_gapped = true`` under ``[storage]`` (or ``TAPES_AIR_GAPPED=1``) makes
every command that would reach a server refuse with one line before any socket is opened, while
local commands keep working. Tested in-process with a guard that fails the test on any attempt
to reach a server or open a connection, and for real in a network namespace with no interfaces
(``unshare -n``)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import keymgmt
from tapes_e2e import context
from tapes_e2e.identity import identity_path
from tests.client.conftest import FAST, Tapes
from tests.client.test_sync_round_trip import record
from tests.client.test_teams import ok, one_error
from tests.server.conftest import AUDIENCE

NETWORK_COMMANDS = [
    ("storage", "sync"),
    ("storage", "status"),
    ("storage", "configure", "--api-url", "https://sync.example.org"),
    ("auth", "login", "--server", AUDIENCE),
    ("auth", "devices"),
    ("auth", "logout"),
    ("team", "list"),
    ("team", "create", "Acme"),
    ("session", "shared"),
    ("usage",),
    ("keys", "rotate", "--yes"),
]
LOCAL_COMMANDS = [("session", "list"), ("session", "export"), ("keys", "show")]


@pytest.fixture
def synced(tapes: Tapes, tmp_path: Path) -> Path:
    """A machine that logged in and synced a session, before it was air-gapped."""
    ok(tapes("box", "auth", "login", "--server", AUDIENCE, "--handle", "alice"))
    record(tmp_path / "box")
    ok(tapes("box", "storage", "sync"))
    return tmp_path / "box"


def _no_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: Any, **__: Any) -> Any:
        pytest.fail("an air-gapped command tried to reach a server")

    monkeypatch.setattr(context, "http_factory", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _gap(home: Path) -> None:
    config = home / "config.toml"
    text = config.read_text("utf-8") if config.exists() else ""
    line = "[storage]\nair_gapped = true"
    gapped = text.replace("[storage]", line, 1) if "[storage]" in text else f"{text}\n{line}\n"
    config.write_text(gapped)


@pytest.mark.parametrize("how", ["config", "environment"])
def test_every_network_command_refuses_before_any_socket_and_local_ones_work(
    synced: Path, tapes: Tapes, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    if how == "config":
        _gap(synced)
    else:
        monkeypatch.setenv("TAPES_AIR_GAPPED", "1")
    _no_connection(monkeypatch)
    for command in NETWORK_COMMANDS:
        line = one_error(tapes("box", *command), "air-gapped")
        assert "nothing was sent" in line, command
    for command in LOCAL_COMMANDS:
        ok(tapes("box", *command))


def test_a_malformed_air_gapped_setting_is_one_error(tapes: Tapes, tmp_path: Path) -> None:
    (tmp_path / "box").mkdir()
    (tmp_path / "box" / "config.toml").write_text('[storage]\nair_gapped = "yes"\n')
    one_error(tapes("box", "keys", "show"), "storage.air_gapped")


def _namespace_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-n", "true"], check=False, capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _namespace_works(), reason="no network namespaces here (unshare -n)")
def test_in_a_namespace_without_a_network_air_gapped_is_a_choice_not_a_failure(
    synced: Path, tmp_path: Path
) -> None:
    """Under ``unshare -n`` there is no network at all: without the setting a sync fails as
    unreachable; with it, it is refused as air-gapped before trying; local commands work."""
    tapes = [sys.executable, "-c", "from tapes_e2e.cli import main; main()"]
    # the subprocess holds the product's own Argon2id floor: seal the key at it
    path = identity_path(synced)
    identity = keymgmt.open_key_file_bytes(path.read_bytes(), "correct horse battery", floor=FAST)
    keymgmt.write_key_file(path, identity, "correct horse battery", overwrite=True)
    env = dict(os.environ, TAPES_PASSPHRASE="correct horse battery")  # noqa: S106 - a test's

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["unshare", "-n", *tapes, "--config-dir", str(synced), *args],
            check=False, capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip

    unreachable = run("storage", "sync")
    assert unreachable.returncode == 1
    assert f"cannot reach {AUDIENCE}" in unreachable.stderr  # it tried: no network here
    _gap(synced)
    refused = run("storage", "sync")
    assert refused.returncode == 1
    assert refused.stderr.startswith("tapes: error: air-gapped: not connecting to")
    listed = run("session", "list")
    assert listed.returncode == 0, listed.stderr
