"""A burst of writes must not stall the embedded default (SQLite, one worker process).

Before: every request's first query took SQLite's write lock inside the worker's thread pool; with
more concurrent requests than threads, the holder of the lock waited for a thread to commit in
while every thread waited for the lock, until the 30 s busy timeout turned them into 500s (and
another user's status request waited as long). Now reads take no write lock and writing requests
queue for it on the event loop, holding no thread while they wait.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ServerFactory
from tests.server.conftest import User, Vault

BURST = 64
NODES = 40

pytestmark = pytest.mark.slow


def test_a_burst_of_pushes_neither_fails_nor_stalls_another_user(
    live_server_factory: ServerFactory,
) -> None:
    server = live_server_factory(workers=1)
    with server.client() as setup:
        pusher, reader = User(setup), User(setup)  # type: ignore[arg-type]
        chains = [Vault(pusher.vault, pusher.identity).chain(NODES) for _ in range(BURST)]
    statuses: list[int] = []
    lock = threading.Lock()

    def push(chain: list[dict[str, Any]]) -> None:
        with httpx.Client(base_url=server.base_url, timeout=45.0) as http:
            response = http.post(
                "/api/v1/sync/push",
                json={"vault": pusher.vault, "envelopes": chain},
                headers=pusher.headers,
            )
        with lock:
            statuses.append(response.status_code)

    def other_user() -> list[int]:
        seen = []
        with httpx.Client(base_url=server.base_url, timeout=45.0) as http:
            for _ in range(20):
                response = http.get(
                    "/api/v1/sync/status", params={"vault": reader.vault}, headers=reader.headers
                )
                seen.append(response.status_code)
        return seen

    with ThreadPoolExecutor(max_workers=BURST + 1) as pool:
        theirs = pool.submit(other_user)
        list(pool.map(push, chains))
        their_statuses = theirs.result()
    assert statuses == [200] * BURST, sorted(set(statuses))
    assert their_statuses == [200] * 20
    with server.client() as http:
        status = http.get(
            "/api/v1/sync/status", params={"vault": pusher.vault}, headers=pusher.headers
        ).json()
    assert status["head_seq"] == BURST * NODES


def test_a_burst_of_reads_does_not_exhaust_the_connection_pool(
    live_server_factory: ServerFactory,
) -> None:
    """64 concurrent pulls through one worker: more than its connection pool (15) and its
    thread pool (6). Requests wait for a connection slot on the event loop, so no thread blocks
    on the pool while the holders of every connection wait for a thread (before: bursts of six
    30 s pool timeouts as 500s)."""
    server = live_server_factory(workers=1)
    with server.client() as setup:
        user = User(setup)  # type: ignore[arg-type]
        chain = Vault(user.vault, user.identity).chain(200)
        assert setup.post(
            "/api/v1/sync/push", json={"vault": user.vault, "envelopes": chain},
            headers=user.headers,
        ).status_code == 200  # fmt: skip

    def pull(_: int) -> int:
        with httpx.Client(base_url=server.base_url, timeout=45.0) as http:
            return http.get(
                "/api/v1/sync/pull", params={"vault": user.vault}, headers=user.headers
            ).status_code

    with ThreadPoolExecutor(max_workers=64) as pool:
        statuses = list(pool.map(pull, range(64)))
    assert statuses == [200] * 64


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_a_mixed_burst_past_the_connection_pool_neither_fails_nor_stalls(
    live_server_factory: ServerFactory, request: pytest.FixtureRequest, backend: str
) -> None:
    """96 concurrent requests through one worker with a pool of 2 connections, far more than
    the pool and than its request threads (6 on 2 cores): pushes by 4 clients of each of 4 users
    into their own vault (the vault row lock on PostgreSQL), pulls and status calls, all made
    with API keys (as a team's scripts do), whose use the request's own transaction records.

    Before: the request threads blocked in the pool's checkout while the requests holding every
    connection waited for a thread, until the 30 s pool timeout answered 500 in bursts of six
    (and the clients' 45 s timeouts hit first). Now a request waits for a connection slot on the
    event loop, holding no thread, so every checkout finds a connection."""
    url = request.getfixturevalue("pg_database") if backend == "postgres" else None
    server = live_server_factory(url, workers=1, args=["--db-connections", "2"])
    with server.client() as setup:
        users = [User(setup) for _ in range(4)]  # type: ignore[arg-type]
        keys = {}
        for user in users:
            made = user.post(
                "/api/v1/api-keys/", {"vault": user.vault, "permissions": ["push", "pull"]}
            )
            keys[user.vault] = {"Authorization": f"Bearer {made.json()['api_key']}"}
    jobs: list[tuple[str, User, list[dict[str, Any]]]] = []
    for user in users:
        jobs += [("push", user, Vault(user.vault, user.identity).chain(NODES)) for _ in range(4)]
        jobs += [("pull", user, [])] * 12 + [("status", user, [])] * 8

    ready = threading.Barrier(len(jobs))

    def run(job: tuple[str, User, list[dict[str, Any]]]) -> int:
        kind, user, envelopes = job
        with httpx.Client(base_url=server.base_url, timeout=45.0) as http:
            http.get("/healthz")  # connected: the burst arrives at once, not as threads start
            ready.wait()
            if kind == "push":
                body = {"vault": user.vault, "envelopes": envelopes}
                headers = keys[user.vault]
                return http.post("/api/v1/sync/push", json=body, headers=headers).status_code
            return http.get(
                f"/api/v1/sync/{kind}", params={"vault": user.vault}, headers=keys[user.vault]
            ).status_code

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        statuses = list(pool.map(run, jobs))
    assert len(jobs) == 96
    assert [s for s in statuses if s != 200] == [], server.logs()[-2000:]
