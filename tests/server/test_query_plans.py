"""How PostgreSQL plans the push path's lookups of a batch of IDs, once psycopg has prepared the
statement and PostgreSQL has settled on a generic plan (what a busy server runs).

An ``IN`` list of a batch's IDs got a generic plan that read every row of the vault by its
``vault_id`` and compared each with each ID: at 20,000 nodes each push spent 0.7 s there and a
push fell from 9,000 to 800 nodes/s (``bench/bench_server.py``). ``server.db.queries.one_of``
binds one array instead; the primary key answers it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient
from sqlalchemy import Engine, event

from server.app import create_app
from server.db.engine import make_engine
from server.db.migrate import upgrade
from server.settings import Settings
from tests.server.conftest import AUDIENCE, Clock, User, Vault
from tests.server.pg import PostgresCluster

pytestmark = pytest.mark.postgres

NODES, BATCH = 4_000, 1_000  # a batch's lookup names ~2,000 IDs, its nodes and their parents


@pytest.fixture
def engine(pg_cluster: PostgresCluster) -> Iterator[Engine]:
    engine = make_engine(pg_cluster.create_database("tapes_plans"))
    upgrade(engine)
    with engine.begin() as conn:  # no statistics yet, as on a busy server between analyses
        conn.exec_driver_sql("ALTER TABLE nodes SET (autovacuum_enabled = false)")
    yield engine
    engine.dispose()


def test_a_pushs_lookup_of_its_ids_stays_on_the_primary_key_once_prepared(engine: Engine) -> None:
    statements: list[tuple[str, dict[str, Any]]] = []

    def seen(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.startswith("SELECT nodes.node_id \nFROM nodes"):
            statements.append((statement, dict(parameters)))

    event.listen(engine, "before_cursor_execute", seen)
    settings = Settings(database_url=str(engine.url), auth_rate_per_minute=1000)
    app = create_app(settings, engine=engine, clock=Clock(), audience=AUDIENCE)
    with TestClient(app, base_url=AUDIENCE) as client:
        alice = User(client)
        envelopes = Vault(alice.vault, alice.identity).chain(NODES)
        for start in range(0, NODES, BATCH):
            batch = envelopes[start : start + BATCH]
            answer = alice.post("/api/v1/sync/push", {"vault": alice.vault, "envelopes": batch})
            assert answer.status_code == 200, answer.text
    assert len(statements) == NODES // BATCH  # the push's check of which IDs are stored
    steps = list(walk(plan_when_prepared(engine, *statements[-1])))
    assert any("node_id" in step.get("Index Cond", "") for step in steps), steps  # looked up
    assert not any("node_id" in step.get("Filter", "") for step in steps), steps  # not compared


def plan_when_prepared(
    engine: Engine, statement: str, parameters: dict[str, Any], runs: int = 8
) -> dict[str, Any]:
    """The plan PostgreSQL runs ``statement`` with once psycopg has prepared it and it has run
    ``runs`` times on one connection (after five, PostgreSQL may settle on a generic plan),
    as auto_explain reports it."""
    plans: list[str] = []
    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.add_notice_handler(lambda notice: plans.append(notice.message_primary or ""))
        for setting in (
            "LOAD 'auto_explain'",
            "SET auto_explain.log_min_duration = 0",
            "SET auto_explain.log_level = notice",
            "SET auto_explain.log_format = json",
        ):
            conn.execute(setting)
        plans.clear()
        for _ in range(runs):
            conn.execute(statement, parameters, prepare=True)
    assert len(plans) == runs, plans
    last = json.loads(plans[-1][plans[-1].index("{") :])
    plan: dict[str, Any] = last["Plan"]
    return plan


def walk(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from walk(child)
