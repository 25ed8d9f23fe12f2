"""deploy/ and docs/server.md against the code: the compose file, the systemd unit and the
Dockerfile are parsed (nothing is built or started: no Docker here), the container runs the
command the docs document, and the docs list every setting ``tapes-server serve --help`` lists."""

from __future__ import annotations

import configparser
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from server.plans import TIERS
from server.settings import OPTIONS, Settings, sqlite_path

ROOT = Path(__file__).parent.parent
DEPLOY = ROOT / "deploy"
DOCS = (ROOT / "docs" / "server.md").read_text("utf-8")
SERVER_SCRIPT = Path(sys.executable).with_name("tapes-server")


# --- docs/server.md ------------------------------------------------------------------------------


def documented_container_command() -> list[str]:
    """The command under the docs' "# in the container (deploy/Dockerfile's ENTRYPOINT)"."""
    found = re.findall(
        r"^# in the container \(deploy/Dockerfile's ENTRYPOINT\)\n(.+)$", DOCS, re.MULTILINE
    )
    assert len(found) == 1, found
    return shlex.split(found[0])


def test_docs_list_every_setting_with_its_variable_and_default() -> None:
    for option in OPTIONS:
        row = f"| `{option.flag}` | `{option.env}` | {option.default} | "
        assert sum(line.startswith(row) for line in DOCS.splitlines()) == 1, row


def test_docs_cover_the_commands_the_backends_backups_and_cron() -> None:
    for text in (
        "tapes-server plan set alice pro",
        "tapes-server retention --dry-run",
        "/etc/cron.d/tapes-server",
        "## With SQLite",
        "## With PostgreSQL",
        "## Backups",
        "pg_dump",
        ".backup",
    ):
        assert text in DOCS, text
    for tier in TIERS:
        assert f"| {tier} |" in DOCS


# --- deploy/Dockerfile ---------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined."""
    text = (DEPLOY / "Dockerfile").read_text("utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    steps = []
    for line in joined.splitlines():
        if line.strip():
            instruction, _, arguments = line.strip().partition(" ")
            steps.append((instruction.upper(), arguments.strip()))
    return steps


def final_stage() -> list[tuple[str, str]]:
    steps = dockerfile()
    last_from = max(i for i, (instruction, _) in enumerate(steps) if instruction == "FROM")
    return steps[last_from:]


def test_the_container_runs_the_documented_command_on_every_interface() -> None:
    stage = final_stage()
    entrypoints = [json.loads(args) for instruction, args in stage if instruction == "ENTRYPOINT"]
    assert len(entrypoints) == 1, "one ENTRYPOINT, in JSON (exec) form"
    assert [args for instruction, args in stage if instruction == "CMD"] == []
    command = entrypoints[0]
    assert command == documented_container_command()
    assert f"`{shlex.join(command)}`" in (ROOT / "README.md").read_text("utf-8")
    assert command[:2] == ["tapes-server", "serve"]
    assert command[command.index("--host") + 1] == "0.0.0.0"  # noqa: S104 - inside a container
    port = command[command.index("--port") + 1]
    assert f"EXPOSE {port}" in [f"{i} {a}" for i, a in stage]


def test_the_image_is_slim_runs_as_a_user_and_keeps_its_data_in_a_volume() -> None:
    stage = final_stage()
    assert re.fullmatch(r"python:3\.\d+-slim(\S*)?", stage[0][1])
    users = [args for instruction, args in stage if instruction == "USER"]
    assert users, "a USER instruction"
    assert users[-1].split(":")[0] not in ("root", "0")
    env_text = " ".join(args for instruction, args in stage if instruction == "ENV")
    env = dict(pair.split("=", 1) for pair in shlex.split(env_text))
    database = sqlite_path(Settings.from_env(env).database_url)
    assert database is not None
    volumes = [json.loads(args) for instruction, args in stage if instruction == "VOLUME"]
    assert [str(database.parent)] in volumes
    assert urlsplit(env["TAPES_SERVER_PUBLIC_URL"]).port == 8787
    assert any(instruction == "HEALTHCHECK" and "/healthz" in a for instruction, a in stage)


def test_the_image_copies_every_package_the_wheel_needs() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    packages = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    sources = {
        source.rstrip("/")
        for instruction, args in dockerfile()
        if instruction == "COPY" and not args.startswith("--from")
        for source in args.split()[:-1]  # the last one is the destination
    }
    assert sources == {*packages, "pyproject.toml", pyproject["project"]["readme"]}
    assert all((ROOT / source).exists() for source in sources)


# --- deploy/compose.yaml -------------------------------------------------------------------------


def test_compose_runs_the_server_with_postgresql_15_and_health_checks() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text("utf-8"))
    services = compose["services"]
    assert set(services) == {"db", "server"}
    assert set(compose["volumes"]) == {"pgdata", "data"}
    db, server = services["db"], services["server"]
    assert db["image"] == "postgres:15"
    assert "pgdata:/var/lib/postgresql/data" in db["volumes"]
    assert "data:/data" in server["volumes"]
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert "/healthz" in " ".join(server["healthcheck"]["test"])
    assert server["depends_on"]["db"]["condition"] == "service_healthy"
    build = server["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    # the database URL names the db service and its database, and the server accepts it
    env = server["environment"]
    url = re.sub(r"\$\{[^}]*\}", "secret", env["TAPES_SERVER_DATABASE_URL"])
    parts = urlsplit(url)
    assert (parts.scheme, parts.hostname, parts.path) == ("postgresql", "db", "/tapes")
    assert parts.username == db["environment"]["POSTGRES_USER"]
    assert parts.path == "/" + db["environment"]["POSTGRES_DB"]
    settings = Settings.from_env(
        {k: re.sub(r"\$\{[^:}]*:-([^}]*)\}", r"\1", v) for k, v in env.items()}
    )
    assert settings.database_url.startswith("postgresql+psycopg://tapes:")
    assert settings.plans == "off"


# --- deploy/tapes-server.service -----------------------------------------------------------------

HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "StateDirectory": "tapes-server",
    "CapabilityBoundingSet": "",
    "RestrictSUIDSGID": "yes",
}


def unit_text() -> str:
    return (DEPLOY / "tapes-server.service").read_text("utf-8")


def unit_values(key: str) -> list[str]:
    """Every value of a key (systemd keys such as Environment= may repeat)."""
    return re.findall(rf"^{key}=(.*)$", unit_text(), re.MULTILINE)


def test_the_systemd_unit_parses_and_is_hardened() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(unit_text())
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    for key, value in HARDENING.items():
        assert service.get(key) == value, key
    assert service.get("DynamicUser") == "yes" or service.get("User") not in (None, "root")
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    # it runs serve, with a SQLite file in its state directory
    command = shlex.split(service["ExecStart"])
    assert (Path(command[0]).name, command[1:]) == ("tapes-server", ["serve"])
    env = dict(value.split("=", 1) for value in unit_values("Environment"))
    database = sqlite_path(Settings.from_env(env).database_url)
    assert database == Path("/var/lib") / service["StateDirectory"] / "server.sqlite"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    # ExecStart must exist for verify: point it at this checkout's tapes-server.
    unit = tmp_path / "tapes-server.service"
    exec_start = unit_values("ExecStart")[0]
    unit.write_text(
        unit_text().replace(
            f"ExecStart={exec_start}", f"ExecStart={SERVER_SCRIPT} {exec_start.split(' ', 1)[1]}"
        ),
        "utf-8",
    )
    try:
        result = subprocess.run(
            ["systemd-analyze", "verify", str(unit)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"systemd-analyze cannot run here: {exc}")
    complaints = [line for line in result.stderr.splitlines() if unit.name in line]
    assert (result.returncode, complaints) == (0, [])
