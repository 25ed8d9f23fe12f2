"""Client fixtures: the server's (the real app on SQLite and PostgreSQL) and the CLI against it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

import keymgmt
from tapes_e2e import context
from tapes_e2e import identity as identity_module
from tapes_e2e.cli import main
from tapes_e2e.vaults import Pins
from tests.server import conftest as server

# The server's fixtures, found by pytest by name.
pg_cluster = server.pg_cluster
database_url = server.database_url
client = server.client
clock = server.clock


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Client tests run against the real app on SQLite, and on PostgreSQL too only where marked
    ``server_backends``: the client sees the backend through the API alone, and the server's
    own tests run every case on both. (Halves the client suite's share of CI.)"""
    dropped = [
        item for item in items
        if item.nodeid.startswith("tests/client/") and "[postgres" in item.nodeid
        and item.get_closest_marker("server_backends") is None
    ]  # fmt: skip
    if dropped:
        gone = set(map(id, dropped))
        items[:] = [item for item in items if id(item) not in gone]
        config.hook.pytest_deselected(items=dropped)


# Cheap Argon2 for tests, through the product's own code path (never below in the product).
FAST = keymgmt.KdfParams(time_cost=1, memory_kib=8 * 1024, lanes=1)

Tapes = Callable[..., tuple[int, str, str]]


@pytest.fixture
def tapes(
    client: TestClient[Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> Tapes:  # fmt: skip
    """``tapes(home, *args)``: the CLI in-process, in ``tmp_path/home``, talking to the app."""
    monkeypatch.setattr(context, "http_factory", lambda _url: client)
    monkeypatch.setenv("TAPES_PASSPHRASE", "correct horse battery")
    monkeypatch.setattr(identity_module, "KDF", FAST)
    monkeypatch.setattr(identity_module, "KDF_FLOOR", FAST)

    def run(home: str, *args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as info:
            main(["--config-dir", str(tmp_path / home), *args])
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        return int(info.value.code or 0), out, err

    return run


def pinned(home: Path, vault: str) -> keymgmt.ChainHead | None:
    """The chain head ``home``'s identity has pinned for ``vault`` (None: never verified)."""
    fingerprint = str(json.loads((home / "session.json").read_text())["fingerprint"])
    return Pins(home).get(fingerprint, vault)
