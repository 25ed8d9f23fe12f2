"""The event loop never waits on the database: a request that waits for SQLite's write lock
does so in a worker thread, while other requests (and the commit of the request holding the
lock) go on."""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Any

import pytest
from litestar.testing import TestClient

from tests.server.conftest import User

HOLD = 3.0  # seconds another writer holds the lock; the loop must answer well within it


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_request_waiting_for_the_write_lock_does_not_stop_the_server(
    client: TestClient[Any], database_url: str, alice: User
) -> None:
    path = database_url.split("///", 1)[1]
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer: every server transaction now waits
    answers: dict[str, int] = {}

    def authenticated() -> None:  # its login lookup waits for the lock
        answers["me"] = client.get("/auth/me", headers=alice.headers).status_code

    waiting = threading.Thread(target=authenticated)
    try:
        waiting.start()
        time.sleep(0.3)  # the request is in, waiting for the lock
        started = time.monotonic()
        assert client.get("/healthz").status_code == 200
        answered_in = time.monotonic() - started
    finally:
        time.sleep(max(0.0, HOLD - 0.3))
        other.execute("COMMIT")
        other.close()
        waiting.join(30)
    assert answered_in < 1.0, f"/healthz took {answered_in:.1f} s: the event loop was blocked"
    assert answers == {"me": 200}
