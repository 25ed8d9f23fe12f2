"""`tapes storage service install|uninstall|status`: the systemd unit and the launchd agent are
written, parsed as their managers parse them, and their command runs; the manager is a stand-in
on PATH that records what it was asked (no systemd or launchd runs in a test container)."""

from __future__ import annotations

import configparser
import json
import os
import plistlib
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import keymgmt
from tapes_e2e.service import _systemd_quote
from tests.client.conftest import Tapes
from tests.client.test_teams import ok, one_error
from tests.server.conftest import AUDIENCE

MANAGER = """#!/bin/sh
echo "$(basename "$0") $*" >> "{log}"
case "$*" in *is-active*) echo active ;; esac
exit 0
"""


@pytest.fixture
def machine(tapes: Tapes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A logged-in hybrid machine whose key is in the OS keyring, with stand-in managers."""
    ok(tapes("box", "auth", "login", "--server", AUDIENCE, "--handle", "alice"))
    ok(tapes("box", "storage", "set-provider", "hybrid"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("systemctl", "launchctl"):
        script = bin_dir / tool
        script.write_text(MANAGER.format(log=tmp_path / "manager.log"))
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setattr(keymgmt, "os_keyring_holds", lambda _fp: True)
    return tmp_path / "box"


def _asked(tmp_path: Path) -> list[str]:
    log = tmp_path / "manager.log"
    return log.read_text().splitlines() if log.exists() else []


def test_the_systemd_unit_is_written_enabled_and_runs_this_tapes(
    machine: Path, tapes: Tapes, tmp_path: Path
) -> None:
    out = ok(tapes("box", "storage", "service", "install", "--kind", "systemd"))
    unit = tmp_path / "xdg" / "systemd" / "user" / "tapes-sync.service"
    assert f"wrote {unit}" in out
    assert "enabled and started (systemd)" in out
    assert _asked(tmp_path) == [
        "systemctl --user daemon-reload",
        "systemctl --user enable --now tapes-sync.service",
    ]
    parsed = configparser.ConfigParser(interpolation=None)
    parsed.read_string(unit.read_text())
    command = shlex.split(parsed["Service"]["ExecStart"])
    assert command == [sys.executable, "-m", "tapes_e2e", "--config-dir", str(machine),
                       "storage", "sync", "--watch"]  # fmt: skip
    assert parsed["Service"]["Restart"] == "on-failure"
    assert parsed["Install"]["WantedBy"] == "default.target"
    assert oct(unit.stat().st_mode & 0o777) == "0o644"
    # the unit's command is this tapes with this directory: it runs (asked for status here)
    done = subprocess.run([*command[:-2], "status", "--json"], check=False, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["provider"] == "hybrid"
    status = ok(tapes("box", "storage", "service", "status", "--kind", "systemd"))
    assert "Service: systemd installed, active" in status
    assert "Watch:   never ran here" in status
    ok(tapes("box", "storage", "service", "uninstall", "--kind", "systemd"))
    assert not unit.exists()
    assert _asked(tmp_path)[-2:] == [
        "systemctl --user disable --now tapes-sync.service",
        "systemctl --user daemon-reload",
    ]


def test_the_launchd_agent_is_a_plist_launchd_reads(
    machine: Path, tapes: Tapes, tmp_path: Path
) -> None:
    ok(tapes("box", "storage", "service", "install", "--kind", "launchd"))
    agent = tmp_path / "user" / "Library" / "LaunchAgents" / "dev.tapes.sync.plist"
    parsed = plistlib.loads(agent.read_bytes())
    assert parsed["Label"] == "dev.tapes.sync"
    assert parsed["ProgramArguments"][-3:] == ["storage", "sync", "--watch"]
    assert parsed["ProgramArguments"][3:5] == ["--config-dir", str(machine)]
    assert parsed["RunAtLoad"] is True
    assert _asked(tmp_path) == [f"launchctl bootstrap gui/{os.getuid()} {agent}"]


def test_install_refuses_what_a_service_could_not_run(
    machine: Path, tapes: Tapes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keymgmt, "os_keyring_holds", lambda _fp: False)
    one_error(tapes("box", "storage", "service", "install", "--kind", "systemd"), "passphrase")
    monkeypatch.setattr(keymgmt, "os_keyring_holds", lambda _fp: True)
    ok(tapes("box", "storage", "set-provider", "local"))
    one_error(tapes("box", "storage", "service", "install", "--kind", "systemd"), "local")
    assert not (tmp_path / "xdg").exists()
    assert _asked(tmp_path) == []


def test_without_a_manager_the_file_is_written_and_the_commands_are_named(
    machine: Path, tapes: Tapes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    code, _, err = tapes("box", "storage", "service", "install", "--kind", "systemd")
    assert code == 0, err
    assert "no systemctl here: run `systemctl --user daemon-reload; systemctl" in err
    assert (tmp_path / "xdg" / "systemd" / "user" / "tapes-sync.service").exists()


@pytest.mark.parametrize(
    ("arg", "quoted"),
    [("/opt/my tapes/bin", '"/opt/my tapes/bin"'), ('a"b', '"a\\"b"'), ("50%", '"50%%"'),
     ("$HOME", '"$$HOME"'), ("back\\slash", '"back\\\\slash"')],
)  # fmt: skip
def test_exec_start_arguments_are_quoted_as_systemd_reads_them(arg: str, quoted: str) -> None:
    assert _systemd_quote(arg) == quoted
