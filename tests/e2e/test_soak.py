"""Soak: 32 clients push, pull and ask for status against a real ``tapes-server serve`` (two
uvicorn workers) while one worker is killed (SIGKILL) and uvicorn starts another. Every push is
retried until acknowledged (pushes are idempotent); at the end each vault holds exactly what was
pushed, once, under gapless sequence numbers, and its counters agree.

Loopback only and bounded: ``TAPES_SOAK_SECONDS`` (default 10 in the suite; the closing figures
were taken with 180) is how long the clients run; a worker is killed at a third of it.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.e2e.conftest import LiveServer, ServerFactory
from tests.server.conftest import User, Vault

pytestmark = pytest.mark.slow

USERS, CLIENTS_PER_USER, BATCH = 8, 4, 10
SECONDS = float(os.environ.get("TAPES_SOAK_SECONDS", "10"))


def _workers(server: LiveServer) -> list[int]:
    """The uvicorn worker processes under the server's supervisor."""
    assert server.process is not None
    parent = server.process.pid
    try:
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    except OSError:
        return []
    found = []
    for pid in map(int, children):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"resource_tracker" not in cmdline:
            found.append(pid)
    return found


class Client:
    """One client thread: pushes its own session in batches, pulls, asks for status."""

    def __init__(self, server: LiveServer, user: User, seed: int) -> None:
        self.server, self.user = server, user
        self.vault = Vault(user.vault, user.identity)
        self.rng = random.Random(seed)
        self.acked: list[str] = []
        self.parent: str | None = None
        self.errors = 0
        self.turn = 0

    def _retry(self, call: Any) -> httpx.Response:
        """Retry through a killed worker (a reset connection, a 5xx) until answered."""
        deadline = time.monotonic() + 60
        while True:
            try:
                with httpx.Client(base_url=self.server.base_url, timeout=30.0) as http:
                    response: httpx.Response = call(http)
                if response.status_code < 500:
                    return response
            except httpx.TransportError:
                pass
            self.errors += 1
            if time.monotonic() > deadline:
                raise AssertionError("the server did not recover within 60 s")
            time.sleep(0.05 + self.rng.random() * 0.2)

    def run(self, stop: threading.Event) -> None:
        headers = self.user.headers
        while not stop.is_set():
            kind = self.rng.choices(("push", "pull", "status"), (6, 3, 1))[0]
            if kind == "push":
                batch = []
                for _ in range(BATCH):
                    self.turn += 1
                    self.parent, envelope = self.vault.seal(
                        f"{self.user.handle} {id(self)} {self.turn}", self.parent
                    )
                    batch.append(envelope)
                body = {"vault": self.user.vault, "envelopes": batch}
                answer = self._retry(
                    lambda http, body=body: http.post(
                        "/api/v1/sync/push", json=body, headers=headers
                    )
                )
                assert answer.status_code == 200, answer.text
                done = answer.json()
                assert set(done["stored"]) | set(done["existing"]) == {e["node_id"] for e in batch}
                self.acked += [e["node_id"] for e in batch]
            else:
                path = "/api/v1/sync/pull" if kind == "pull" else "/api/v1/sync/status"
                params = {"vault": self.user.vault, "limit": 200}
                answer = self._retry(
                    lambda http, path=path, params=params: http.get(
                        path, params=params, headers=headers
                    )
                )
                assert answer.status_code == 200, answer.text


def _soak(server: LiveServer, database_url: str) -> None:
    with server.client() as setup:
        users = [User(setup, f"soak{i}") for i in range(USERS)]  # type: ignore[arg-type]
    clients = [
        Client(server, user, seed=i * CLIENTS_PER_USER + j)
        for i, user in enumerate(users)
        for j in range(CLIENTS_PER_USER)
    ]
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=len(clients)) as pool:
        running = [pool.submit(c.run, stop) for c in clients]
        time.sleep(SECONDS / 3)
        workers = _workers(server)
        assert len(workers) == 2, workers
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while (alive := _workers(server)) and (workers[0] in alive or len(alive) < 2):
            assert time.monotonic() < deadline, "uvicorn did not start another worker"
            time.sleep(0.1)
        time.sleep(SECONDS * 2 / 3)
        stop.set()
        for future in running:
            future.result()
    server.stop()
    engine = sa.create_engine(database_url.replace("sqlite+pysqlite", "sqlite"))
    try:
        with engine.connect() as db:
            for user in users:
                pushed = [n for c in clients if c.user is user for n in c.acked]
                rows = db.execute(
                    sa.text("SELECT node_id, seq FROM nodes WHERE vault_id = :v ORDER BY seq"),
                    {"v": user.vault},
                ).all()
                team = db.execute(
                    sa.text("SELECT head_seq, node_count FROM teams WHERE id = :v"),
                    {"v": user.vault},
                ).one()
                assert len(pushed) == len(set(pushed)) > 0
                assert Counter(r[0] for r in rows) == Counter(pushed)  # nothing lost, none twice
                assert [r[1] for r in rows] == list(range(1, len(rows) + 1))  # gapless
                assert tuple(team) == (len(rows), len(rows))
    finally:
        engine.dispose()
    retried = sum(c.errors for c in clients)
    print(f"soak: {len(clients)} clients, {sum(len(c.acked) for c in clients)} nodes, "
          f"{retried} retried requests around the killed worker")  # fmt: skip


def test_soak_on_sqlite_with_a_worker_killed(live_server_factory: ServerFactory) -> None:
    server = live_server_factory(workers=2)
    _soak(server, server.database_url)


@pytest.mark.postgres
def test_soak_on_postgres_with_a_worker_killed(
    live_server_factory: ServerFactory, pg_database: str
) -> None:
    server = live_server_factory(pg_database, workers=2)
    _soak(server, pg_database)
