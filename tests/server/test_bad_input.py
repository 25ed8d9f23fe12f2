"""Bad input gets a 4xx with a one-line problem+json ``detail``, never a 500, on SQLite and on
PostgreSQL, and nothing of it is stored (issue 11, threat-model row B8).

Each case here once reached the database or a parser unchecked and answered 500: a body that is
not UTF-8 or nests 100,000 deep (on every JSON endpoint, before authentication on the auth
ones); a NUL character, which PostgreSQL text cannot hold; clear metadata whose token counts
overflow the usage query (for the whole team, on every later request); an expiry at the edge of
the calendar; and two sign-ups of one handle at once. Anonymous callers get their 401 before any
parameter is looked at, so an error message never describes a route's schema to them.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from litestar import Litestar, post
from litestar.params import JSONBody
from litestar.testing import TestClient
from sqlalchemy import Engine, func, select

import keymgmt
from keymgmt.login import sign_login
from server.bodies import JsonRequest
from server.db.models import Base
from server.errors import ApiError, problem
from tests.server.conftest import Clock, User, Vault, b64, unb64
from tests.server.test_shares import Story

NOT_UTF8 = b'{"vault": "\xff\xfe"}'
DEEP_LISTS = b"[" * 100_000
DEEP_OBJECTS = b'{"a":' * 100_000
ANY_ID = "0123456789abcdef"


def row_counts(client: TestClient[Any]) -> dict[str, int]:
    """Rows in every table but the rate counters (which count refused requests on purpose)."""
    engine: Engine = client.app.state.engine
    with engine.connect() as conn:
        return {
            table.name: conn.scalar(select(func.count()).select_from(table)) or 0
            for table in Base.metadata.sorted_tables
            if table.name != "rate_events"
        }


def assert_problem(response: Any, status: int = 400) -> None:
    assert response.status_code == status, (response.request.url, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")
    detail = response.json()["detail"]
    assert detail
    assert "\n" not in detail


def json_operations(client: TestClient[Any]) -> list[tuple[str, str]]:
    """(method, path) of every operation that takes a JSON body, path parameters filled in."""
    schema = client.get("/schema/openapi.json").json()
    found = []
    for template, operations in schema["paths"].items():
        for method, operation in operations.items():
            if "application/json" in operation.get("requestBody", {}).get("content", {}):
                found.append((method.upper(), re.sub(r"\{[^}]+\}", ANY_ID, template)))
    return found


@pytest.mark.parametrize(
    "body", [NOT_UTF8, DEEP_LISTS, DEEP_OBJECTS], ids=["not-utf8", "deep-lists", "deep-objects"]
)
def test_a_body_that_is_not_utf8_or_nests_too_deep_is_400_on_every_json_endpoint(
    alice: User, client: TestClient[Any], body: bytes
) -> None:
    operations = json_operations(client)
    assert ("POST", "/auth/login") in operations
    assert ("POST", "/api/v1/sync/push") in operations
    assert len(operations) >= 10
    before = row_counts(client)
    for method, path in operations:
        headers = {"content-type": "application/json", **alice.headers}
        assert_problem(client.request(method, path, content=body, headers=headers))
    for path in ("/auth/login", "/auth/token/refresh"):  # anonymous: parsed before any login
        assert_problem(
            client.post(path, content=body, headers={"content-type": "application/json"})
        )
    ignored = client.post("/auth/challenge", content=body)  # takes no body: ignores it
    assert ignored.status_code == 200
    after = row_counts(client)
    assert after.pop("auth_challenges") == before.pop("auth_challenges") + 1
    assert after == before


def push(user: User, envelopes: list[dict[str, Any]]) -> Any:
    return user.post("/api/v1/sync/push", {"vault": user.vault, "envelopes": envelopes})


def with_metadata(user: User, metadata: dict[str, Any], text: str = "turn") -> dict[str, Any]:
    """An envelope whose clear metadata says ``metadata`` (the server cannot check it against
    the sealed content; an untrue-but-valid value is the honest client's problem, row 17)."""
    _hash, envelope = Vault(user.vault, user.identity).seal(text)
    return envelope | {"metadata": metadata}


def test_a_nul_character_is_refused_before_it_reaches_the_database(
    alice: User, client: TestClient[Any]
) -> None:
    """PostgreSQL text and jsonb cannot hold U+0000: refused on both backends alike."""
    before = row_counts(client)
    cases = [
        push(alice, [with_metadata(alice, {"model": "gpt\x00"})]),
        push(alice, [with_metadata(alice, {"mo\x00del": "gpt"})]),
        alice.post(
            "/api/v1/api-keys/", {"vault": alice.vault, "permissions": ["pull"], "name": "\x00"}
        ),
        alice.delete("/api/v1/api-keys/x%00y"),
        alice.get("/api/v1/teams/v%00/usage"),
        alice.get(f"/api/v1/sync/pull?vault={alice.vault}&after=%00"),
    ]
    for response in cases:
        assert_problem(response)
    assert row_counts(client) == before


def test_a_nul_character_is_refused_in_any_field_even_one_no_pattern_checks() -> None:
    """Every field of this API that takes text now has its own pattern or check, so the cases
    above are refused twice. The request class's own refusal is what keeps a field added later,
    checked by nothing else, from storing a NUL (on PostgreSQL: a 500): a route of free text,
    served with the app's request class, shows it on its own."""

    @post("/free", status_code=200)
    async def free(data: JSONBody[dict[str, Any]]) -> dict[str, Any]:
        return data

    def as_problem(_request: Any, exc: ApiError) -> Any:
        return problem(exc)

    app = Litestar(
        [free], request_class=JsonRequest, exception_handlers={ApiError: as_problem}, debug=False
    )
    with TestClient(app) as free_client:
        assert free_client.post("/free", json={"note": "fine"}).json() == {"note": "fine"}
        refused = free_client.post("/free", json={"note": "a\x00b"})
        assert refused.status_code == 400
        assert refused.json()["detail"] == (
            "a NUL character (\\u0000) is not accepted anywhere in a request"
        )


@pytest.mark.parametrize(
    "metadata",
    [
        {"total_tokens": 2**63 - 1},
        {"total_tokens": 10**30},
        {"prompt_tokens": 2**53},
        {"completion_tokens": -1},
        {"total_tokens": "many"},
        {"total_tokens": None},
        {"total_duration_ns": 2**64},
        {"model": 5},
        {"model": "m" * 513},
        {"created_at": 1_700_000_000},
        {"created_at": "yesterday"},
        {"created_at": "0001-01-01T00:00:00+01:00"},
        {"colour": "blue"},
    ],
    ids=lambda metadata: "-".join(f"{k}={str(v)[:12]}" for k, v in metadata.items()),
)
def test_clear_metadata_outside_its_types_and_ranges_is_400_at_push(
    alice: User, client: TestClient[Any], metadata: dict[str, Any]
) -> None:
    """Token counts and durations are integers in [0, 2^53); the known text fields bounded
    strings; nothing else. A value outside once made every later usage request of the team a
    500 (an integer column overflowed, or a string was cast to a number)."""
    fine = push(alice, [with_metadata(alice, {"model": "m", "total_tokens": 7}, "fine")])
    assert fine.status_code == 200, fine.text
    before = row_counts(client)
    ok = with_metadata(alice, {"model": "m", "total_tokens": 1}, "ok")
    refused = push(alice, [ok, with_metadata(alice, metadata)])
    assert_problem(refused)
    assert row_counts(client) == before
    usage = alice.get(f"/api/v1/teams/{alice.vault}/usage")
    assert usage.status_code == 200, usage.text
    assert [r["figures"]["total_tokens"] for r in usage.json()["rows"]] == [7]


def test_the_largest_clear_metadata_sums_without_overflow(alice: User) -> None:
    """Counts up to 2^53 - 1 are valid; 3,000 of them sum past 2^63 and past 32-bit casts."""
    top = 2**53 - 1
    full = {
        "model": "m" * 512, "provider": "p", "agent_name": "a", "role": "assistant",
        "stop_reason": "end_turn", "project": "x", "created_at": "2026-01-02T03:04:05Z",
        "prompt_tokens": top, "completion_tokens": top, "total_tokens": top,
        "cache_creation_input_tokens": top, "cache_read_input_tokens": 0,
        "total_duration_ns": top, "prompt_duration_ns": 0,
    }  # fmt: skip
    vault = Vault(alice.vault, alice.identity)
    parent: str | None = None
    # Three hours of 1,000 nodes: each hour's stored sum still fits 64 bits (1,000 x 2^53 <
    # 2^63), only their sum in the report does not.
    for batch in range(3):
        hour = full | {"created_at": f"2026-01-02T0{3 + batch}:04:05Z"}
        envelopes = []
        for index in range(1000):
            parent, envelope = vault.seal(f"{batch}-{index}", parent)
            envelopes.append(envelope | {"metadata": hour})
        response = push(alice, envelopes)
        assert response.status_code == 200, response.text
    usage = alice.get(f"/api/v1/teams/{alice.vault}/usage?from=2026-01-01&to=2026-01-03")
    assert usage.status_code == 200, usage.text
    totals = usage.json()["totals"]
    assert totals["nodes"] == 3000
    assert totals["total_tokens"] == totals["prompt_tokens"] >= 2**63 - 1


PUBLIC = {
    ("POST", "/auth/challenge"),
    ("POST", "/auth/login"),
    ("POST", "/auth/token/refresh"),
    ("POST", "/auth/logout"),
    ("GET", "/healthz"),
    ("GET", "/.well-known/tapes-server-key"),  # the audit key clients pin: public
}
CREDENTIALS = {
    "type": "about:blank",
    "title": "Unauthorized",
    "status": 401,
    "detail": "missing, expired or revoked credentials",
}


def all_operations(client: TestClient[Any]) -> list[tuple[str, str]]:
    schema = client.get("/schema/openapi.json").json()
    return [
        (method.upper(), template)
        for template, operations in schema["paths"].items()
        for method in operations
    ]


@pytest.mark.parametrize("token", [None, "expired-or-made-up-token", "tapes_revoked-or-made-up"])
def test_without_valid_credentials_every_private_route_is_401_before_its_parameters(
    alice: User, client: TestClient[Any], token: str | None
) -> None:
    """No query parameters, path parameters that match no pattern, a body that is not JSON: a
    caller with credentials hears what is wrong with each (400), one without hears only 401."""
    operations = all_operations(client)
    assert set(operations) >= PUBLIC
    private = [op for op in operations if op not in PUBLIC]
    assert len(private) >= 20
    headers = {"content-type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    for method, template in private:
        path = re.sub(r"\{[^}]+\}", "not!an!id", template)
        response = client.request(method, path, content=b"{not json", headers=headers)
        assert (response.status_code, response.json()) == (401, CREDENTIALS), (method, path)
    with_credentials = client.get("/api/v1/sync/pull", headers=alice.headers)
    assert with_credentials.status_code == 400
    assert "vault" in with_credentials.json()["detail"]


@pytest.mark.parametrize("name", ["a\nb", "a\r\nb", "a\u2028b", "x" * 5000])
def test_an_unknown_field_name_cannot_break_any_detail_onto_two_lines(
    alice: User, client: TestClient[Any], name: str
) -> None:
    """Litestar's and msgspec's messages name an unknown field, and its name is the caller's:
    every problem's detail is one printable line, capped, on every route (it was the caller's
    newline, verbatim, on each JSON route)."""
    for path, body, headers in (
        ("/auth/token/refresh", {"refresh_token": "r" * 43, name: 1}, {}),
        ("/api/v1/teams", {"name": "team", name: 1}, alice.headers),
    ):
        response = client.post(path, json=body, headers=headers)
        assert_problem(response)
        detail = response.json()["detail"]
        assert detail.isprintable(), (path, detail[:100])
        assert len(detail) <= 300, path


def test_a_revoked_key_or_an_expired_token_is_401_before_the_parameters(
    alice: User, client: TestClient[Any], clock: Clock
) -> None:
    """Real credentials that no longer hold — an API key revoked, an access token past its
    expiry — are refused by the guard itself, before any parameter is read: 401, never the 400
    that describes the route (the request's own second look at a key comes after parsing)."""
    created = alice.post("/api/v1/api-keys/", {"vault": alice.vault, "permissions": ["pull"]})
    assert created.status_code == 201
    key = {"Authorization": f"Bearer {created.json()['api_key']}"}
    assert client.get("/api/v1/sync/pull", headers=key).status_code == 400  # valid: told why
    revoked = alice.delete(f"/api/v1/api-keys/{created.json()['info']['key_id']}")
    assert revoked.status_code in (200, 204)
    refused = client.get("/api/v1/sync/pull", headers=key)
    assert (refused.status_code, refused.json()) == (401, CREDENTIALS)
    assert client.get("/api/v1/sync/pull", headers=alice.headers).status_code == 400
    clock.advance(seconds=901)  # the access token's lifetime is 900 s
    expired = client.get("/api/v1/sync/pull", headers=alice.headers)
    assert (expired.status_code, expired.json()) == (401, CREDENTIALS)


@pytest.fixture
def strict_client(database_url: str, tmp_path: Any) -> Any:
    """The app with 3 auth attempts a minute per address."""
    from server.app import create_app
    from server.db.engine import make_engine
    from server.db.migrate import upgrade
    from server.settings import Settings

    engine = make_engine(database_url)
    upgrade(engine)
    settings = Settings(database_url=database_url, auth_rate_per_minute=3)
    with TestClient(create_app(settings, engine=engine)) as client:
        yield client
    engine.dispose()


@pytest.mark.parametrize("path", ["/auth/login", "/auth/token/refresh", "/auth/logout"])
def test_every_attempt_at_an_auth_endpoint_counts_even_one_refused_before_parsing(
    strict_client: TestClient[Any], path: str
) -> None:
    """A refused body (not UTF-8, too deep, not JSON, not the schema) and a failed attempt
    count against the address's limit like any other: they were parsed, and refused, before
    the handler counted anything, and a failure's 401 rolled its count back."""
    json_ = {"content-type": "application/json"}
    attempts = [
        strict_client.post(path, content=NOT_UTF8, headers=json_),
        strict_client.post(path, content=DEEP_LISTS, headers=json_),
        strict_client.post(path, content=b"{not json", headers=json_),
    ]
    assert [r.status_code for r in attempts] == [400, 400, 400]
    for body in (b"[]", b'{"refresh_token": "' + b"x" * 40 + b'"}'):
        assert strict_client.post(path, content=body, headers=json_).status_code == 429
    assert strict_client.post("/auth/challenge").status_code == 429


def test_failed_logins_count_against_the_limit(strict_client: TestClient[Any]) -> None:
    refresh = {"refresh_token": "x" * 40}
    codes = [strict_client.post("/auth/token/refresh", json=refresh).status_code for _ in range(4)]
    assert codes == [401, 401, 401, 429]


class ServedApp:
    """The app served by uvicorn on a loopback port, in a thread: real HTTP, real concurrency."""

    def __init__(self, database_url: str) -> None:
        import uvicorn

        from server.app import create_app
        from server.db.engine import make_engine
        from server.db.migrate import upgrade
        from server.settings import Settings

        self.engine = make_engine(database_url)
        upgrade(self.engine)
        settings = Settings(database_url=database_url, auth_rate_per_minute=10_000)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        self.base_url = f"http://127.0.0.1:{port}"
        app = create_app(settings, engine=self.engine, audience=self.base_url)
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServedApp:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.engine.dispose()


SIGN_UPS = 8


def test_concurrent_sign_ups_of_one_handle_give_one_account_and_409s(database_url: str) -> None:
    """Eight new identities ask for one handle at once, each login over its own connection.
    On PostgreSQL the losers' inserts hit the unique index (an IntegrityError, once a 500)."""
    with ServedApp(database_url) as served:
        clients = [httpx.Client(base_url=served.base_url, timeout=60) for _ in range(SIGN_UPS)]
        bodies = []
        for client in clients:
            identity = keymgmt.generate_identity()
            challenge = client.post("/auth/challenge").json()
            signature = sign_login(
                identity, server=challenge["audience"], challenge_id=challenge["challenge_id"],
                nonce=unb64(challenge["nonce"]),
            )  # fmt: skip
            public = identity.public
            keys = {"x25519": public.x25519.hex(), "ed25519": public.ed25519.hex()}
            bodies.append({"challenge_id": challenge["challenge_id"], "keys": keys,
                           "signature": b64(signature), "handle": "popular"})  # fmt: skip
        start = threading.Barrier(SIGN_UPS)

        def sign_up(index: int) -> httpx.Response:
            start.wait()
            return clients[index].post("/auth/login", json=bodies[index])

        with ThreadPoolExecutor(SIGN_UPS) as pool:
            answers = list(pool.map(sign_up, range(SIGN_UPS)))
        for client in clients:
            client.close()
        with served.engine.connect() as conn:
            users = conn.scalar(select(func.count()).select_from(Base.metadata.tables["users"]))
    assert sorted(a.status_code for a in answers) == [200] + [409] * (SIGN_UPS - 1)
    for answer in answers:
        if answer.status_code == 409:
            assert answer.json()["detail"] == "the handle 'popular' is taken"
    assert users == 1


@pytest.mark.parametrize(
    "expires_at",
    ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00Z"],
)
def test_a_share_expiry_at_the_calendars_edge_is_400(
    alice: User, bob: User, clock: Clock, expires_at: str
) -> None:
    """Year 1 an hour east of UTC, or 9999 an hour west, is outside ``datetime`` once moved to
    UTC: an OverflowError, once a 500."""
    story = Story(alice, bob, clock)
    leaf = story.a[-1]["node_id"]
    body = {"team": story.team, "statement": story.statement(alice, leaf), "expires_at": expires_at}
    assert_problem(alice.post(f"/api/v1/sessions/{leaf}/share", body))
    assert alice.get("/api/v1/shared").json() == []


@pytest.mark.parametrize("signed", [-(2**53 - 1), 2**53 - 1, 253402300800])
def test_a_signed_share_expiry_beyond_the_calendar_is_400(
    alice: User, bob: User, clock: Clock, signed: int
) -> None:
    story = Story(alice, bob, clock)
    leaf = story.a[-1]["node_id"]
    assert_problem(story.share(alice, leaf, expires_at=signed))


def test_a_share_may_last_until_the_calendars_last_second(
    alice: User, bob: User, clock: Clock
) -> None:
    story = Story(alice, bob, clock)
    leaf = story.a[-1]["node_id"]
    body = {
        "team": story.team,
        "statement": story.statement(alice, leaf),
        "expires_at": "9999-12-31T23:59:59Z",
    }
    shared = alice.post(f"/api/v1/sessions/{leaf}/share", body)
    assert shared.status_code == 201, shared.text
    assert len(story.pulled(bob)) == 3
    listed = alice.get("/api/v1/shared")
    assert listed.status_code == 200, listed.text
    assert [s["expires_at"] for s in listed.json()] == ["9999-12-31T23:59:59+00:00"]


def test_a_sign_up_that_loses_the_race_for_its_handle_is_a_conflict(
    client: TestClient[Any], clock: Clock
) -> None:
    """The race above in two sessions, on both backends: the loser checked the handle before
    the winner committed, and its insert then meets the unique index."""
    from sqlalchemy.orm import Session

    from server.domain.auth.services import _register
    from server.errors import Conflict

    engine: Engine = client.app.state.engine
    winner, loser = keymgmt.generate_identity().public, keymgmt.generate_identity().public
    with Session(engine) as db, db.begin():
        _register(db, winner, "popular", clock.now)
    with Session(engine) as db, db.begin(), pytest.raises(Conflict, match="'popular' is taken"):
        _register(db, loser, "popular", clock.now)
    with Session(engine) as db, db.begin(), pytest.raises(Conflict, match="log in"):
        _register(db, winner, "another", clock.now)
    assert row_counts(client)["users"] == 1
