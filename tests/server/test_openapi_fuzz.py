"""schemathesis against the served OpenAPI schema of the in-process app.

The app runs on a fresh, migrated SQLite file; every generated request carries the access token
of a registered user, so the fuzzer gets past authentication and into the handlers. Checks: no
5xx (``not_a_server_error``) and every documented response matches its schema
(``response_schema_conformance``). Bounded by ``MAX_EXAMPLES`` per operation.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import TestClient
from schemathesis.checks import not_a_server_error, response_schema_conformance
from sqlalchemy import create_engine

from server.app import create_app
from server.db.engine import make_engine
from server.db.migrate import upgrade
from server.settings import Settings
from tests.server.conftest import User, Vault

MAX_EXAMPLES = 75
AUDIENCE = "http://testserver.local"


class Target:
    def __init__(self, app: Litestar, user: User, node_ids: list[str]) -> None:
        self.app, self.user, self.node_ids = app, user, node_ids

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.user.access}"}


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    root: Path = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite+pysqlite:///{root / 'server.sqlite'}"
    engine = make_engine(url)
    upgrade(engine)
    settings_ = Settings(database_url=url, auth_rate_per_minute=100_000, access_ttl=3600)
    app = create_app(settings_, engine=engine, audience=AUDIENCE)
    with TestClient(app, base_url=AUDIENCE) as client:
        user = User(client, "fuzzer")
        # something to find: a short session in the user's vault
        envelopes = Vault(user.vault, user.identity).chain(3)
        pushed = user.post("/api/v1/sync/push", {"vault": user.vault, "envelopes": envelopes})
        assert pushed.status_code == 200, pushed.text
        yield Target(app, user, [e["node_id"] for e in envelopes])
    engine.dispose()


def _schema_app() -> Litestar:
    """The same app, on an in-memory engine nothing touches: it only serves the schema at
    collection time. (``schemathesis.pytest.from_fixture`` would load it lazily from ``target``,
    but 4.32.5 reads ``Function._nodeid``, which pytest 9 no longer has.)"""
    unused = Settings(database_url="sqlite:///unused.sqlite")
    return create_app(unused, engine=create_engine("sqlite://"), audience=AUDIENCE)


schema = schemathesis.openapi.from_asgi("/schema/openapi.json", _schema_app())


def test_the_fuzzed_schema_is_the_one_the_target_serves(target: Target) -> None:
    with TestClient(target.app, base_url=AUDIENCE) as client:
        served = client.get("/schema/openapi.json")
    assert served.status_code == 200
    assert served.json() == schema.raw_schema
    assert len(served.json()["paths"]) >= 20


def aim_at_the_user(case: Any, target: Target) -> None:
    """Point a generated case at what the user owns, so it gets past the 404s into the
    handlers' success paths: their vault for every vault/team parameter, a stored node for every
    node parameter, and envelopes addressed to their vault (each the parent of the next)."""
    vault = target.user.vault
    for name in ("vault", "team"):
        if isinstance(case.query, dict) and name in case.query:
            case.query[name] = vault
    if isinstance(case.path_parameters, dict):
        if "team_id" in case.path_parameters:
            case.path_parameters["team_id"] = vault
        for name in ("node_id", "session_id"):
            if name in case.path_parameters:
                case.path_parameters[name] = target.node_ids[-1]
    body = case.body
    if isinstance(body, dict):
        if "vault" in body:
            body["vault"] = vault
        envelopes = body.get("envelopes")
        if isinstance(envelopes, list):
            parent = None
            for envelope in envelopes:
                if isinstance(envelope, dict):
                    envelope["team"] = vault
                    envelope["parent_id"] = parent
                    parent = envelope.get("node_id")


@schema.parametrize()
@schema.given(aim=st.booleans())
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_server_error_and_responses_match_the_schema(
    case: Any, aim: bool, target: Target
) -> None:
    if aim:
        aim_at_the_user(case, target)
    case.call_and_validate(
        app=target.app,
        headers=target.headers,
        checks=[not_a_server_error, response_schema_conformance],
    )


def test_error_answers_are_in_the_contract(target: Target) -> None:
    operation = schema.raw_schema["paths"]["/api/v1/sync/pull"]["get"]
    with TestClient(target.app, base_url=AUDIENCE) as client:
        anonymous = client.get("/api/v1/sync/pull", params={"vault": target.user.vault})
        unknown = client.get(
            "/api/v1/sync/pull", params={"vault": "v_nosuchvault"}, headers=target.headers
        )
        malformed = client.get(
            "/api/v1/sync/pull", params={"vault": "v!", "limit": 0}, headers=target.headers
        )
    assert (anonymous.status_code, unknown.status_code, malformed.status_code) == (401, 404, 400)
    for response in (anonymous, unknown, malformed):
        documented = operation["responses"].get(str(response.status_code))
        assert documented is not None, response.status_code
        media_type = response.headers["content-type"].split(";")[0]
        assert media_type in documented.get("content", {}), (response.status_code, media_type)
