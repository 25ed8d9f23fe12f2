"""End-to-end fixtures: real ``tapes-server serve`` processes, talked to over real HTTP.

``LiveServer`` runs the installed console script in its own process group (uvicorn's worker
processes included) with a private HOME/XDG_DATA_HOME and log files on disk, waits for
``/healthz`` with a deadline, and is always stopped by the fixture finalizer: SIGTERM to the
group, then SIGKILL if it has not exited.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from tapes_e2e import identity as identity_module
from tests.client.conftest import FAST
from tests.server.conftest import pg_cluster  # noqa: F401 - the session PostgreSQL cluster
from tests.server.pg import PostgresCluster, postgres_unavailable

SERVER_SCRIPT = Path(sys.executable).with_name("tapes-server")
START_DEADLINE = 60.0
STOP_GRACE = 10.0


def fast_cli(monkeypatch: pytest.MonkeyPatch, passphrase: str = "correct horse battery") -> None:  # noqa: S107
    """The in-process CLI of a test: its passphrase from the environment, and cheap Argon2
    through the product's own code path (a subprocess keeps the product's floor)."""
    monkeypatch.setenv("TAPES_PASSPHRASE", passphrase)
    monkeypatch.setattr(identity_module, "KDF", FAST)
    monkeypatch.setattr(identity_module, "KDF_FLOOR", FAST)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LiveServer:
    """One ``tapes-server serve`` process group."""

    def __init__(
        self,
        root: Path,
        database_url: str,
        *,
        workers: int = 2,
        public_url: str | None = None,
        args: Sequence[str] = (),
    ) -> None:
        self.root = root
        self.args = list(args)  # flags after ``serve``; they win over the variables below
        self.root.mkdir(parents=True, exist_ok=True)
        self.database_url = database_url
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.stdout_path = root / "stdout.log"
        self.stderr_path = root / "stderr.log"
        home = root / "home"
        home.mkdir(exist_ok=True)
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "XDG_DATA_HOME": str(home / "data"),
            "LANG": "C.UTF-8",
            "TAPES_SERVER_DATABASE_URL": database_url,
            "TAPES_SERVER_HOST": "127.0.0.1",
            "TAPES_SERVER_PORT": str(self.port),
            "TAPES_SERVER_WORKERS": str(workers),
            "TAPES_SERVER_AUTH_RATE": "10000",
        }
        # The server runs on the tests' clock (scripts/faketime-pytest moves it for both).
        self.env |= {
            k: v
            for k, v in os.environ.items()
            if k.startswith("FAKETIME") or k in ("LD_PRELOAD", "PYTHONPATH")
        }
        if public_url is not None:
            self.env["TAPES_SERVER_PUBLIC_URL"] = public_url
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> LiveServer:
        with self.stdout_path.open("ab") as out, self.stderr_path.open("ab") as err:
            self.process = subprocess.Popen(
                [str(SERVER_SCRIPT), "serve", *self.args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self.env,
                cwd=self.root,
                start_new_session=True,
            )
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_DEADLINE
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"tapes-server exited with {self.process.returncode}: {self.logs()}"
                )
            try:
                response = httpx.get(f"{self.base_url}/healthz", timeout=1.0)
                if response.status_code == 200 and response.json() == {"status": "ok"}:
                    return
            except httpx.TransportError as exc:
                last = exc
            time.sleep(0.05)  # polling /healthz against a deadline
        self.stop()
        raise RuntimeError(
            f"tapes-server not healthy after {START_DEADLINE}s ({last}): {self.logs()}"
        )

    def logs(self) -> str:
        paths = (self.stdout_path, self.stderr_path)
        return "\n".join(p.read_text(errors="replace") for p in paths if p.exists())

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=60.0)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        pgid = process.pid  # start_new_session: the group id is the server's pid
        try:
            os.killpg(pgid, signal.SIGTERM)
            process.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            process.wait(timeout=STOP_GRACE)
        except ProcessLookupError:
            pass
        # Workers that outlived the parent (they share its group) get the same treatment.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


ServerFactory = Callable[..., LiveServer]


@pytest.fixture
def live_server_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start servers on demand; every one is stopped when the test ends, pass or fail."""
    started: list[LiveServer] = []
    counter = iter(range(1000))

    def start(
        database_url: str | None = None,
        *,
        workers: int = 2,
        public_url: str | None = None,
        args: Sequence[str] = (),
    ) -> LiveServer:
        root = tmp_path / f"server{next(counter)}"
        url = database_url or f"sqlite:///{root / 's.sqlite'}"
        server = LiveServer(root, url, workers=workers, public_url=public_url, args=args)
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def live_server(live_server_factory: ServerFactory) -> LiveServer:
    """One server on a fresh SQLite file, two uvicorn workers."""
    return live_server_factory()


@pytest.fixture
def pg_database(request: pytest.FixtureRequest) -> str:
    """A fresh database on the throwaway PostgreSQL 15 cluster (skipped without its binaries)."""
    reason = postgres_unavailable()
    if reason is not None:
        pytest.skip(reason)
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    return cluster.create_database(f"tapes_e2e_{os.getpid()}_{request.node.name[:20].lower()}")
