"""Binding an account to a GitHub login through GitHub's device flow (a stand-in over real
HTTP), and finding an account by it. GitHub vouches for a login, never for a key."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.app import create_app
from server.db.engine import make_engine
from server.db.migrate import upgrade
from server.db.models import AuditEntry, GithubBind
from server.db.models import User as UserRow
from server.settings import Settings
from tests.github_standin import CLIENT_ID, CLIENT_SECRET, GithubStandIn
from tests.server.conftest import AUDIENCE, Clock, User


@pytest.fixture
def github() -> Iterator[GithubStandIn]:
    with GithubStandIn() as standin:
        yield standin


def _app(url: str, clock: Clock, github: GithubStandIn | None, rate: int = 1000) -> TestClient[Any]:
    extra: dict[str, Any] = (
        {"github_client_id": CLIENT_ID, "github_client_secret": CLIENT_SECRET,
         "github_url": github.url, "github_api_url": github.url}
        if github is not None else {}
    )  # fmt: skip
    settings = Settings(database_url=url, auth_rate_per_minute=rate, **extra)
    engine = make_engine(url)
    upgrade(engine)
    app = create_app(settings, engine=engine, clock=clock, audience=AUDIENCE)
    return TestClient(app, base_url=AUDIENCE)


@pytest.fixture
def hub(database_url: str, clock: Clock, github: GithubStandIn) -> Iterator[TestClient[Any]]:
    with _app(database_url, clock, github) as client:
        yield client


def _start(user: User) -> dict[str, Any]:
    started = user.post("/auth/github/device", {})
    assert started.status_code == 201, started.text
    body: dict[str, Any] = started.json()
    return body


def _poll(user: User, bind_id: str) -> Any:
    return user.post("/auth/github", {"bind_id": bind_id})


def test_a_bind_waits_for_approval_then_records_the_github_login(
    hub: TestClient[Any], github: GithubStandIn
) -> None:
    alice, bob = User(hub, "alice"), User(hub, "bob")
    started = _start(alice)
    assert started["verification_uri"] == f"{github.url}/login/device"
    assert (_poll(alice, started["bind_id"]).json()) == {"status": "pending", "interval": 1,
                                                          "github_login": None}  # fmt: skip
    assert _poll(bob, started["bind_id"]).status_code == 404  # someone else's flow is absent
    github.set_state(started["user_code"], "slow_down")
    slowed = _poll(alice, started["bind_id"]).json()
    assert (slowed["status"], slowed["interval"]) == ("pending", 10)
    github.approve(started["user_code"], 583231, "Octocat")
    bound = _poll(alice, started["bind_id"])
    assert bound.json() == {"status": "bound", "interval": 0, "github_login": "Octocat"}
    assert alice.get("/auth/me").json()["github_login"] == "Octocat"
    # finding the teammate by their GitHub login (case-insensitive, as GitHub's are)
    found = bob.get("/api/v1/users?github=octocat").json()
    assert (found["handle"], found["github_login"]) == ("alice", "Octocat")
    assert found["fingerprint"] == alice.identity.fingerprint
    assert bob.get("/api/v1/users?github=nobody").status_code == 404
    assert bob.get("/api/v1/users?github=bad%20login").status_code == 400
    # the flow is spent, no token is kept, and the binding is audited
    assert _poll(alice, started["bind_id"]).status_code == 404
    with Session(hub.app.state.engine) as db:
        assert db.scalars(select(GithubBind)).all() == []
        row = db.scalar(select(UserRow).where(UserRow.handle == "alice"))
        assert row is not None
        assert (row.github_id, row.github_login) == (583231, "Octocat")
        assert "github_bound" in [e.action for e in db.scalars(select(AuditEntry))]
    assert "gho_" not in _dump(hub)
    # the identity key still logs in by itself: GitHub is a label, not a login
    assert alice.login()["user_id"] == alice.user_id


def _dump(client: TestClient[Any]) -> str:
    """Every text value the database holds."""
    with Session(client.app.state.engine) as db:
        conn = db.connection()
        tables = [t for (t,) in conn.exec_driver_sql(
            "SELECT table_name FROM information_schema.tables WHERE table_schema='public'"
            if conn.dialect.name == "postgresql"
            else "SELECT name FROM sqlite_master WHERE type='table'"
        )]  # fmt: skip
        return "".join(
            str(row) for table in tables for row in conn.exec_driver_sql(f'SELECT * FROM "{table}"')
        )


def test_a_github_account_bound_elsewhere_a_declined_and_an_expired_code(
    hub: TestClient[Any], github: GithubStandIn
) -> None:
    alice, mallory = User(hub, "alice"), User(hub, "mallory")
    first = _start(alice)
    github.approve(first["user_code"], 1, "octocat")
    assert _poll(alice, first["bind_id"]).json()["status"] == "bound"
    taken = _start(mallory)
    github.approve(taken["user_code"], 1, "octocat")
    refused = _poll(mallory, taken["bind_id"])
    assert (refused.status_code, refused.json()["detail"]) == (
        409, "the GitHub account @octocat is bound to another account here",
    )  # fmt: skip
    declined = _start(mallory)
    github.set_state(declined["user_code"], "denied")
    assert _poll(mallory, declined["bind_id"]).status_code == 403
    expired = _start(mallory)
    github.set_state(expired["user_code"], "expired")
    assert _poll(mallory, expired["bind_id"]).status_code == 410
    assert mallory.get("/auth/me").json()["github_login"] is None


def test_github_answers_that_make_no_sense_are_502_and_api_keys_cannot_bind(
    hub: TestClient[Any], github: GithubStandIn
) -> None:
    alice = User(hub, "alice")
    github.broken = True
    broken = alice.post("/auth/github/device", {})
    assert broken.status_code == 502
    assert broken.headers["content-type"].startswith("application/problem+json")
    github.broken = False
    key = alice.post("/api/v1/api-keys/", {"vault": alice.vault, "permissions": ["admin"]})
    headers = {"Authorization": f"Bearer {key.json()['api_key']}"}
    assert hub.post("/auth/github/device", headers=headers).status_code == 401
    assert hub.post("/auth/github/device").status_code == 401


def test_without_a_github_app_binding_reads_as_absent(database_url: str, clock: Clock) -> None:
    with _app(database_url, clock, None) as client:
        alice = User(client, "alice")
        off = alice.post("/auth/github/device", {})
        assert (off.status_code, off.json()["detail"]) == (
            404, "GitHub sign-in is not configured on this server",
        )  # fmt: skip


def test_a_bind_answers_each_of_githubs_outcomes_once(
    hub: TestClient[Any], github: GithubStandIn, clock: Clock
) -> None:
    """Pending, declined, expired at GitHub, expired here: each is one answer, and the flow
    is forgotten once GitHub gave its last word (a second poll is 404, never a 500)."""
    alice = User(hub, "alice")
    for state, status in (("denied", 403), ("expired", 410)):
        flow = _start(alice)
        assert _poll(alice, flow["bind_id"]).json()["status"] == "pending"
        github.set_state(flow["user_code"], state)
        assert _poll(alice, flow["bind_id"]).status_code == status
        assert _poll(alice, flow["bind_id"]).status_code == 404
    late = _start(alice)
    polls = github.polls
    clock.advance(seconds=901)  # past GitHub's expires_in, without asking GitHub again
    alice.relogin()
    expired = _poll(alice, late["bind_id"])
    assert (expired.status_code, github.polls) == (410, polls)
    assert _poll(alice, late["bind_id"]).status_code == 404
    with Session(hub.app.state.engine) as db:
        assert db.scalars(select(GithubBind)).all() == []
    assert alice.get("/auth/me").json()["github_login"] is None


def test_a_github_account_bound_elsewhere_spends_the_flow(
    hub: TestClient[Any], github: GithubStandIn
) -> None:
    alice, mallory = User(hub, "alice"), User(hub, "mallory")
    first = _start(alice)
    github.approve(first["user_code"], 1, "octocat")
    assert _poll(alice, first["bind_id"]).json()["status"] == "bound"
    second = _start(mallory)
    github.approve(second["user_code"], 1, "octocat")
    assert _poll(mallory, second["bind_id"]).status_code == 409
    assert _poll(mallory, second["bind_id"]).status_code == 404
    with Session(hub.app.state.engine) as db:
        assert db.scalars(select(GithubBind)).all() == []
    assert mallory.get("/api/v1/users?github=octocat").json()["handle"] == "alice"


def test_a_renamed_github_login_finds_its_new_holder_only(
    hub: TestClient[Any], github: GithubStandIn
) -> None:
    """alice bound GitHub id 1 as @octo and renamed it at GitHub; GitHub id 2 took @octo and
    bob binds it: @octo finds bob, alice's stale label is dropped until she binds again."""
    alice, bob = User(hub, "alice"), User(hub, "bob")
    flow = _start(alice)
    github.approve(flow["user_code"], 1, "octo")
    assert _poll(alice, flow["bind_id"]).json()["status"] == "bound"
    flow = _start(bob)
    github.approve(flow["user_code"], 2, "Octo")
    assert _poll(bob, flow["bind_id"]).json()["github_login"] == "Octo"
    assert alice.get("/api/v1/users?github=octo").json()["handle"] == "bob"
    assert alice.get("/auth/me").json()["github_login"] is None
    flow = _start(alice)
    github.approve(flow["user_code"], 1, "octo-renamed")  # the same GitHub account: hers
    assert _poll(alice, flow["bind_id"]).json()["github_login"] == "octo-renamed"
    assert bob.get("/api/v1/users?github=octo-renamed").json()["handle"] == "alice"
    with Session(hub.app.state.engine) as db:
        rows = db.execute(select(UserRow.handle, UserRow.github_id, UserRow.github_login)).all()
        assert sorted(rows) == [("alice", 1, "octo-renamed"), ("bob", 2, "Octo")]
        stale = db.scalars(select(AuditEntry).where(AuditEntry.action == "github_login_stale"))
        assert [(e.actor_id, e.subject) for e in stale] == [(bob.user_id, alice.user_id)]


def _code(**changed: object) -> tuple[int, object]:
    """A device code answer as GitHub documents it, with ``changed`` fields."""
    return 200, {
        "device_code": "d" * 40, "user_code": "ABCD-EFGH", "expires_in": 900, "interval": 5,
        "verification_uri": "https://github.com/login/device", **changed,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("path", "answer"),
    [
        ("/login/device/code", (200, {"device_code": "d", "user_code": "u"})),  # fields missing
        ("/login/device/code", _code(device_code="x" * 101)),  # longer than this server keeps
        ("/login/device/code", _code(verification_uri="javascript:alert(1)")),
        ("/login/device/code", _code(expires_in=0)),
        ("/login/device/code", (422, {"error": "device_flow_disabled"})),
        ("/login/oauth/access_token", (200, {"error": "incorrect_client_credentials"})),
        ("/login/oauth/access_token", (200, {"error": "slow_down", "interval": 10**12})),
        ("/login/oauth/access_token", (200, {"access_token": 7})),
        ("/login/oauth/access_token", (500, {"message": "Server Error"})),
        ("/user", (401, {"message": "Bad credentials"})),
        ("/user", (200, {"id": "1", "login": "octocat"})),
        ("/user", (200, {"id": 2**63, "login": "octocat"})),
        ("/user", (200, {"id": 1, "login": "octo\x1b[2Jcat"})),
        ("/user", (200, {"id": 1, "login": ""})),
    ],
    ids=lambda v: v if isinstance(v, str) else str(v[1])[:40],
)
def test_every_github_answer_that_makes_no_sense_is_one_502(
    hub: TestClient[Any], github: GithubStandIn, path: str, answer: tuple[int, object]
) -> None:
    alice = User(hub, "alice")
    github.answers[path] = answer
    if path == "/login/device/code":
        refused = alice.post("/auth/github/device", {})
    else:
        flow = _start(alice)
        github.approve(flow["user_code"], 1, "octocat")
        refused = _poll(alice, flow["bind_id"])
    assert refused.status_code == 502, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["detail"].startswith("GitHub")
    assert alice.get("/auth/me").json()["github_login"] is None


def test_an_unreachable_github_is_a_502_and_the_server_sends_what_github_documents(
    database_url: str, clock: Clock, github: GithubStandIn
) -> None:
    with _app(database_url, clock, github) as client:
        alice = User(client, "alice")
        flow = _start(alice)
        github.approve(flow["user_code"], 5, "octocat")
        assert _poll(alice, flow["bind_id"]).json()["status"] == "bound"
    device, token, user = github.seen[:3]
    assert device == {"path": "/login/device/code", "client_id": CLIENT_ID, "scope": "read:user"}
    assert token == {
        "path": "/login/oauth/access_token", "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET, "device_code": next(iter(github.codes)),
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
    }  # fmt: skip
    assert (user["path"], user["authorization"][:4]) == ("/user", "gho_")
    github.__exit__(None, None, None)  # GitHub is gone now
    with _app(database_url, clock, github) as client:
        alice = User(client, "alice2")
        gone = alice.post("/auth/github/device", {})
        assert gone.status_code == 502
        assert gone.json()["detail"].startswith("GitHub did not answer the device code request")


def test_without_a_github_app_every_binding_route_reads_as_absent(
    database_url: str, clock: Clock
) -> None:
    with _app(database_url, clock, None) as client:
        alice = User(client, "alice")
        assert alice.post("/auth/github", {"bind_id": "a" * 43}).status_code == 404
        # finding by GitHub login still answers (accounts bound before the app was removed)
        assert alice.get("/api/v1/users?github=octocat").status_code == 404


def test_finding_accounts_by_github_login_is_rate_limited(
    database_url: str, clock: Clock, github: GithubStandIn
) -> None:
    with _app(database_url, clock, github, rate=4) as client:
        alice = User(client, "alice")  # a challenge and a login: two attempts
        assert alice.get("/api/v1/users?github=a").status_code == 404
        assert alice.get("/api/v1/users?github=b").status_code == 404
        assert alice.get("/api/v1/users?github=c").status_code == 429
