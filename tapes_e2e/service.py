"""``tapes storage service``: run ``tapes storage sync --watch`` as a user service.

Linux: a systemd user unit (``~/.config/systemd/user/tapes-sync.service``) enabled with
``systemctl --user enable --now``. macOS: a launchd agent
(``~/Library/LaunchAgents/dev.tapes.sync.plist``) loaded with ``launchctl bootstrap``. The
service runs as the user, never as root, with the same tapes directory as the command that
installed it. It cannot ask for a passphrase, so it unlocks the identity from the OS keyring
(`tapes keys remember`); install refuses when the keyring does not hold it.
"""

from __future__ import annotations

import os
import plistlib
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from tapes_e2e.errors import ConfigError

__all__ = ["LAUNCHD_LABEL", "SYSTEMD_UNIT", "Service", "service_for"]

SYSTEMD_UNIT: Final = "tapes-sync.service"
LAUNCHD_LABEL: Final = "dev.tapes.sync"
Kind = Literal["systemd", "launchd"]


def _systemd_quote(arg: str) -> str:
    """One ExecStart argument, quoted as systemd.service(5) reads it ($ and % escaped too)."""
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{escaped}"'


@dataclass(frozen=True)
class Service:
    """One way to run the watcher on this machine: where its file goes and the commands that
    enable, disable and inspect it."""

    kind: Kind
    path: Path
    command: tuple[str, ...]
    home: Path

    def text(self) -> bytes:
        """The unit or agent file."""
        if self.kind == "systemd":
            exec_start = " ".join(_systemd_quote(a) for a in self.command)
            return (
                "# Written by `tapes storage service install`; `tapes storage service uninstall`\n"
                "# removes it.\n"
                "[Unit]\n"
                "Description=tapes: sync recorded agent sessions (end-to-end encrypted)\n"
                "After=network-online.target\n"
                "Wants=network-online.target\n"
                "\n"
                "[Service]\n"
                "Type=simple\n"
                f"ExecStart={exec_start}\n"
                "Restart=on-failure\n"
                "RestartSec=30\n"
                "TimeoutStopSec=45\n"
                "KillSignal=SIGTERM\n"
                "NoNewPrivileges=yes\n"
                "\n"
                "[Install]\n"
                "WantedBy=default.target\n"
            ).encode()
        logs = self.home / "logs"
        return plistlib.dumps({
            "Label": LAUNCHD_LABEL,
            "ProgramArguments": list(self.command),
            "RunAtLoad": True,
            "KeepAlive": {"SuccessfulExit": False},
            "ThrottleInterval": 30,
            "ExitTimeOut": 45,
            "ProcessType": "Background",
            "StandardOutPath": str(logs / "sync-watch.log"),
            "StandardErrorPath": str(logs / "sync-watch.log"),
        })  # fmt: skip

    def _tool(self) -> str | None:
        return shutil.which("systemctl" if self.kind == "systemd" else "launchctl")

    def enable_commands(self) -> list[list[str]]:
        if self.kind == "systemd":
            return [["systemctl", "--user", "daemon-reload"],
                    ["systemctl", "--user", "enable", "--now", SYSTEMD_UNIT]]  # fmt: skip
        domain = f"gui/{os.getuid()}"
        return [["launchctl", "bootstrap", domain, str(self.path)]]

    def disable_commands(self) -> list[list[str]]:
        if self.kind == "systemd":
            return [["systemctl", "--user", "disable", "--now", SYSTEMD_UNIT],
                    ["systemctl", "--user", "daemon-reload"]]  # fmt: skip
        return [["launchctl", "bootout", f"gui/{os.getuid()}/{LAUNCHD_LABEL}"]]

    def state(self) -> str | None:
        """What the service manager says (``active``, ``inactive``, …), or None without one."""
        if self._tool() is None:
            return None
        if self.kind == "systemd":
            args = ["systemctl", "--user", "is-active", SYSTEMD_UNIT]
        else:
            args = ["launchctl", "print", f"gui/{os.getuid()}/{LAUNCHD_LABEL}"]
        done = _run(args, timeout=10)
        if self.kind == "systemd":
            return done.stdout.strip() or "unknown"
        return "loaded" if done.returncode == 0 else "not loaded"

    def run(self, commands: Sequence[Sequence[str]]) -> str | None:
        """Run the manager's commands; None when done, else what to run by hand and why."""
        by_hand = "; ".join(shlex.join(c) for c in commands)
        if self._tool() is None:
            return f"no {commands[0][0]} here: run `{by_hand}` where the service should run"
        for command in commands:
            done = _run(command, timeout=60)
            if done.returncode != 0:
                why = (done.stderr.strip().splitlines() or ["failed"])[-1]
                return f"`{shlex.join(command)}` failed ({why}); run `{by_hand}` by hand"
        return None

    def write(self) -> None:
        """Write the file atomically (0644 like any unit; it holds no secret)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(self.text())
                out.flush()
                os.fsync(out.fileno())
            Path(tmp).chmod(0o644)
            Path(tmp).replace(self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _run(args: Sequence[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run the service manager (found on PATH) with arguments of our own making."""
    tool = shutil.which(args[0]) or args[0]
    return subprocess.run(  # noqa: S603 - our fixed arguments; no shell, no user input
        [tool, *args[1:]], check=False, capture_output=True, text=True, timeout=timeout
    )


def service_for(
    home: Path, *, kind: Kind | None = None, user_home: Path | None = None,
    platform: str | None = None,
) -> Service:  # fmt: skip
    """The service that runs this tapes (this interpreter, this tapes directory) here."""
    platform = platform or sys.platform
    user_home = user_home or Path.home()
    if kind is None:
        if platform.startswith("linux"):
            kind = "systemd"
        elif platform == "darwin":
            kind = "launchd"
        else:
            raise ConfigError(
                f"no user service manager tapes knows on {platform}",
                hint="run `tapes storage sync --watch` from your own startup script",
            )
    command = (sys.executable, "-m", "tapes_e2e", "--config-dir", str(home), "storage", "sync",
               "--watch")  # fmt: skip
    if kind == "systemd":
        config = Path(os.environ.get("XDG_CONFIG_HOME") or user_home / ".config")
        path = config / "systemd" / "user" / SYSTEMD_UNIT
    else:
        path = user_home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
    return Service(kind, path, command, home)
