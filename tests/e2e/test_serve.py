"""``tapes-server serve`` as a subprocess: its flags reach every uvicorn worker, it says where
its SQLite file is, and a port in use is refused with a hint."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.e2e.conftest import SERVER_SCRIPT, ServerFactory
from tests.server.conftest import User, Vault


def test_flags_win_over_variables_and_reach_every_worker(
    live_server_factory: ServerFactory, tmp_path: Path
) -> None:
    database = tmp_path / "flags" / "server.sqlite"
    server = live_server_factory(
        f"sqlite:///{tmp_path / 'not-this.sqlite'}",  # TAPES_SERVER_DATABASE_URL, overridden
        workers=2,
        args=["--database-url", f"sqlite:///{database}", "--access-ttl", "1234", "--plans", "rfc"],
    )
    stderr = server.stderr_path.read_text()
    assert stderr.startswith(f"tapes-server: database: SQLite file {database} (schema ")
    assert f"serving on {server.base_url} (2 workers, plans rfc)" in stderr
    assert database.is_file()
    assert not (tmp_path / "not-this.sqlite").exists()
    with server.client() as http:
        alice = User(http, "alice")  # type: ignore[arg-type]
        # several logins, so that both workers (one socket, either may accept) answer some
        assert {alice.login()["expires_in"] for _ in range(6)} == {1234}
        keys = Vault(alice.vault, alice.identity)
        roots = [keys.seal(f"session {i}")[1] for i in range(101)]
        refused = alice.post("/api/v1/sync/push", {"vault": alice.vault, "envelopes": roots})
    assert refused.status_code == 402  # --plans rfc: the free plan's 100 sessions a month


def test_with_plans_off_by_default_a_free_vault_takes_101_sessions(
    live_server_factory: ServerFactory,
) -> None:
    server = live_server_factory(workers=1)
    assert "(1 workers, plans off)" in server.stderr_path.read_text()
    with server.client() as http:
        alice = User(http, "alice")  # type: ignore[arg-type]
        keys = Vault(alice.vault, alice.identity)
        roots = [keys.seal(f"session {i}")[1] for i in range(101)]
        pushed = alice.post("/api/v1/sync/push", {"vault": alice.vault, "envelopes": roots})
    assert pushed.status_code == 200, pushed.text


def test_a_port_in_use_is_one_error_and_a_hint(live_server_factory: ServerFactory) -> None:
    server = live_server_factory(workers=1)
    env = server.env | {"TAPES_SERVER_PORT": "1"}  # the flag below wins
    result = subprocess.run(
        [str(SERVER_SCRIPT), "serve", "--port", str(server.port)],
        env=env, cwd=server.root, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[-2].startswith(f"tapes-server: error: cannot listen on 127.0.0.1:{server.port}: ")
    assert lines[-1] == (
        "tapes-server: hint: choose another --port (TAPES_SERVER_PORT) "
        "or --host (TAPES_SERVER_HOST)"
    )
