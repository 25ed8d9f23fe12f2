"""Login by signature, registration, refresh rotation with reuse detection, API keys."""

from __future__ import annotations

from typing import Any

from litestar.testing import TestClient

import keymgmt
from keymgmt.login import sign_login
from tests.server.conftest import Clock, User, Vault, b64, unb64


def test_register_login_and_me(alice: User) -> None:
    me = alice.get("/auth/me").json()
    assert me["handle"] == "alice"
    assert me["fingerprint"] == alice.identity.fingerprint
    assert me["keys"] == alice.keys
    again = alice.login()
    assert again["user_id"] == alice.user_id
    vaults = alice.get("/api/v1/teams").json()
    assert [(v["vault_id"], v["kind"], v["role"]) for v in vaults] == [
        (alice.vault, "personal", "owner")
    ]


def _attempt(client: TestClient[Any], identity: keymgmt.Identity, **change: Any) -> Any:
    challenge = client.post("/auth/challenge").json()
    signature = sign_login(
        identity,
        server=change.pop("audience", challenge["audience"]),
        challenge_id=challenge["challenge_id"],
        nonce=unb64(challenge["nonce"]),
    )
    body = {
        "challenge_id": challenge["challenge_id"],
        "keys": {
            "x25519": identity.public.x25519.hex(),
            "ed25519": identity.public.ed25519.hex(),
        },
        "signature": b64(signature),
    } | change
    return client.post("/auth/login", json=body), challenge


def test_login_failures_look_the_same(client: TestClient[Any], alice: User) -> None:
    stranger = keymgmt.generate_identity()
    unknown, _ = _attempt(client, stranger)  # no such account, no handle
    wrong_audience, _ = _attempt(client, alice.identity, audience="http://evil.example")
    forged, _ = _attempt(client, alice.identity, signature=b64(bytes(64)))
    bodies = [r.json() for r in (unknown, wrong_audience, forged)]
    assert [r.status_code for r in (unknown, wrong_audience, forged)] == [401, 401, 401]
    assert len({b["detail"] for b in bodies}) == 1


def test_a_challenge_is_single_use_and_expires(
    client: TestClient[Any], alice: User, clock: Clock
) -> None:
    response, challenge = _attempt(client, alice.identity)
    assert response.status_code == 200
    replay = client.post(
        "/auth/login",
        json={
            "challenge_id": challenge["challenge_id"],
            "keys": alice.keys,
            "signature": b64(
                sign_login(
                    alice.identity,
                    server=challenge["audience"],
                    challenge_id=challenge["challenge_id"],
                    nonce=unb64(challenge["nonce"]),
                )
            ),
        },
    )
    assert replay.status_code == 401
    challenge = client.post("/auth/challenge").json()
    clock.advance(seconds=61)
    late = client.post(
        "/auth/login",
        json={
            "challenge_id": challenge["challenge_id"],
            "keys": alice.keys,
            "signature": b64(
                sign_login(
                    alice.identity,
                    server=challenge["audience"],
                    challenge_id=challenge["challenge_id"],
                    nonce=unb64(challenge["nonce"]),
                )
            ),
        },
    )
    assert late.status_code == 401


def test_a_taken_handle_is_refused(client: TestClient[Any], alice: User) -> None:
    response, _ = _attempt(client, keymgmt.generate_identity(), handle="alice")
    assert response.status_code == 409


def test_access_tokens_expire(alice: User, clock: Clock) -> None:
    clock.advance(seconds=901)
    assert alice.get("/auth/me").status_code == 401


def test_refresh_rotates_and_reuse_revokes_the_family(client: TestClient[Any], alice: User) -> None:
    first = client.post("/auth/token/refresh", json={"refresh_token": alice.refresh})
    assert first.status_code == 200
    rotated = first.json()
    assert rotated["refresh_token"] != alice.refresh
    new_headers = {"Authorization": f"Bearer {rotated['access_token']}"}
    assert client.get("/auth/me", headers=new_headers).status_code == 200
    # A thief replays the old refresh token: the whole family dies, the thief gets nothing.
    reuse = client.post("/auth/token/refresh", json={"refresh_token": alice.refresh})
    assert reuse.status_code == 401
    assert "already used" in reuse.json()["detail"]
    assert client.get("/auth/me", headers=new_headers).status_code == 401
    after = client.post("/auth/token/refresh", json={"refresh_token": rotated["refresh_token"]})
    assert after.status_code == 401


def test_api_keys_are_scoped_shown_once_and_revocable(
    client: TestClient[Any], alice: User, bob: User
) -> None:
    created = alice.post("/api/v1/api-keys/", {"vault": alice.vault, "permissions": ["pull"]})
    assert created.status_code == 201
    secret = created.json()["api_key"]
    assert secret.startswith("tapes_")
    listed = alice.get("/api/v1/api-keys/").json()
    assert [k["key_id"] for k in listed] == [created.json()["info"]["key_id"]]
    assert secret not in str(listed)
    headers = {"Authorization": f"Bearer {secret}"}
    pull = client.get(f"/api/v1/sync/pull?vault={alice.vault}", headers=headers)
    assert pull.status_code == 200
    env = Vault(alice.vault, alice.identity).chain(1)
    push = client.post(
        "/api/v1/sync/push", json={"vault": alice.vault, "envelopes": env}, headers=headers
    )
    assert push.status_code == 404  # the key has no push permission
    assert (
        client.post(
            "/api/v1/api-keys/",
            json={"vault": alice.vault, "permissions": ["pull"]},
            headers=headers,
        ).status_code
        == 401
    )
    # bob cannot make a key for alice's vault, nor revoke hers
    assert (
        bob.post("/api/v1/api-keys/", {"vault": alice.vault, "permissions": ["pull"]}).status_code
        == 404
    )
    key_id = created.json()["info"]["key_id"]
    assert bob.delete(f"/api/v1/api-keys/{key_id}").status_code == 404
    assert alice.delete(f"/api/v1/api-keys/{key_id}").status_code == 204
    assert client.get(f"/api/v1/sync/pull?vault={alice.vault}", headers=headers).status_code == 401


def test_auth_endpoints_are_rate_limited(tmp_path: Any) -> None:
    from server.app import create_app
    from server.db.engine import make_engine
    from server.db.migrate import upgrade
    from server.settings import Settings

    url = f"sqlite+pysqlite:///{tmp_path / 'rl.sqlite'}"
    engine = make_engine(url)
    upgrade(engine)
    app = create_app(Settings(database_url=url, auth_rate_per_minute=3), engine=engine)
    with TestClient(app) as client:
        codes = [client.post("/auth/challenge").status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]


def test_a_burst_across_a_minute_boundary_is_still_limited(tmp_path: Any) -> None:
    """A fixed window would let the limit be spent at 12:00:59 and again at 12:01:00; the
    previous minute's count still weighs on the new minute, fading over it."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy.orm import Session

    from server import ratelimit
    from server.db.engine import make_engine
    from server.db.migrate import upgrade
    from server.errors import TooManyRequests

    engine = make_engine(f"sqlite+pysqlite:///{tmp_path / 'rl.sqlite'}")
    upgrade(engine)
    minute = datetime.now(UTC).replace(second=0, microsecond=0)

    def attempt(at: datetime) -> bool:
        with Session(engine) as db, db.begin():
            try:
                ratelimit.hit(db, "auth:x", limit=4, now=at)
            except TooManyRequests:
                return False
            return True

    late = minute + timedelta(seconds=59.5)
    assert [attempt(late) for _ in range(4)] == [True] * 4
    assert not attempt(late)
    assert not attempt(minute + timedelta(seconds=60.5))  # 4 x 99 % of the last minute
    half_way = minute + timedelta(seconds=90.5)  # half of it has slid out of view: room for 2
    assert [attempt(half_way) for _ in range(3)] == [True, True, False]
    assert attempt(minute + timedelta(seconds=150))  # a quiet minute later, all clear


def test_a_scoped_key_never_manages_keys_nor_fetches_keyrings_it_cannot_use(
    client: TestClient[Any], alice: User
) -> None:
    """A pull-only CI key cannot list or revoke its owner's other keys; a read-usage key (a
    dashboard's) gets no keyring, while a pull key still gets its own."""

    def key(*permissions: str) -> tuple[str, dict[str, str]]:
        made = alice.post("/api/v1/api-keys/", {"vault": alice.vault, "permissions": permissions})
        assert made.status_code == 201, made.text
        return made.json()["info"]["key_id"], {"Authorization": f"Bearer {made.json()['api_key']}"}

    other_id, _ = key("push")
    _pull_id, pull = key("pull")
    _usage_id, usage = key("read-usage")
    assert client.get("/api/v1/api-keys/", headers=pull).status_code == 403
    assert client.delete(f"/api/v1/api-keys/{other_id}", headers=pull).status_code == 403
    assert [k["revoked"] for k in alice.get("/api/v1/api-keys/").json()] == [False] * 3
    keyrings = f"/api/v1/vaults/{alice.vault}/keyrings"
    assert client.get(keyrings, headers=usage).status_code == 403
    assert client.get(keyrings, headers=pull).status_code == 200


def test_logout_ends_the_login_on_the_server(client: TestClient[Any], alice: User) -> None:
    refresh = alice.refresh
    assert client.post("/auth/logout", json={"refresh_token": refresh}).status_code == 204
    assert client.post("/auth/token/refresh", json={"refresh_token": refresh}).status_code == 401
    assert alice.get("/auth/me").status_code == 401  # its access token too
    # a token that is unknown or already ended gets the same answer
    assert client.post("/auth/logout", json={"refresh_token": refresh}).status_code == 204
    assert client.post("/auth/logout", json={"refresh_token": "x" * 40}).status_code == 204


def test_x_forwarded_for_is_believed_only_from_a_trusted_proxy(tmp_path: Any) -> None:
    """Rate limits count per client address. A client cannot dodge them by writing its own
    X-Forwarded-For; behind a proxy named in TAPES_SERVER_TRUSTED_PROXIES, the address that
    proxy appended is the client's."""
    from server.app import create_app
    from server.db.engine import make_engine
    from server.db.migrate import upgrade
    from server.settings import Settings

    def codes(trusted: frozenset[str]) -> list[int]:
        url = f"sqlite+pysqlite:///{tmp_path / f'xff{len(trusted)}.sqlite'}"
        engine = make_engine(url)
        upgrade(engine)
        settings = Settings(database_url=url, auth_rate_per_minute=2, trusted_proxies=trusted)
        with TestClient(create_app(settings, engine=engine)) as http:
            return [
                http.post("/auth/challenge", headers={"X-Forwarded-For": f"10.0.0.{i}"}).status_code
                for i in range(4)
            ]

    assert codes(frozenset()) == [200, 200, 429, 429]  # the peer is one client, whatever it says
    assert codes(frozenset({"testclient"})) == [200] * 4  # four clients behind the proxy


def _devices(client: TestClient[Any], access: str) -> Any:
    return client.get("/auth/devices", headers={"Authorization": f"Bearer {access}"})


def test_every_login_is_a_device_listed_with_its_name_and_last_sight(
    client: TestClient[Any], alice: User, clock: Clock
) -> None:
    laptop = alice.login(device="laptop")
    clock.advance(minutes=5)
    desk = alice.login(device="desk [/x] <b>")  # a name is data, shown as typed
    listed = _devices(client, desk["access_token"]).json()
    by_name = {d["name"]: d for d in listed}
    assert set(by_name) >= {"laptop", "desk [/x] <b>"}
    assert listed[0]["name"] == "desk [/x] <b>"  # most recently seen first
    assert [d["name"] for d in listed if d["current"]] == ["desk [/x] <b>"]
    assert by_name["laptop"]["address"] == "testclient"
    # a refresh is a sighting: the laptop moves to the top with the clock's time
    clock.advance(minutes=5)
    refreshed = client.post("/auth/token/refresh", json={"refresh_token": laptop["refresh_token"]})
    assert refreshed.status_code == 200
    top = _devices(client, desk["access_token"]).json()[0]
    assert (top["name"], top["last_seen_at"]) == ("laptop", clock.now.isoformat())
    # a name with a control character is refused before anything is stored
    bad = alice.client.post("/auth/challenge").json()
    signature = sign_login(
        alice.identity, server=bad["audience"], challenge_id=bad["challenge_id"],
        nonce=unb64(bad["nonce"]),
    )  # fmt: skip
    body = {"challenge_id": bad["challenge_id"], "keys": alice.keys, "signature": b64(signature)}
    assert client.post("/auth/login", json=body | {"device": "evil\x1b[2J"}).status_code == 400


def test_revoking_a_device_ends_its_login_at_once(
    client: TestClient[Any], alice: User, bob: User
) -> None:
    stolen = alice.login(device="stolen laptop")
    here = alice.login(device="new laptop")
    stolen_id = next(d["device_id"] for d in _devices(client, here["access_token"]).json()
                     if d["name"] == "stolen laptop")  # fmt: skip
    # nobody else can end it, nor learn that it exists
    assert bob.delete(f"/auth/devices/{stolen_id}").status_code == 404
    assert _devices(client, stolen["access_token"]).status_code == 200
    revoke = client.delete(
        f"/auth/devices/{stolen_id}", headers={"Authorization": f"Bearer {here['access_token']}"}
    )
    assert revoke.status_code == 204
    thief = {"Authorization": f"Bearer {stolen['access_token']}"}
    assert client.get("/auth/me", headers=thief).status_code == 401  # the access token, at once
    again = client.post("/auth/token/refresh", json={"refresh_token": stolen["refresh_token"]})
    assert again.status_code == 401
    names = [d["name"] for d in _devices(client, here["access_token"]).json()]
    assert ("stolen laptop" in names, "new laptop" in names) == (False, True)
    mine = {"Authorization": f"Bearer {here['access_token']}"}
    assert client.get("/auth/me", headers=mine).status_code == 200
    # revoking it twice, or a device that never existed, is the same 404
    for gone in (stolen_id, "00000000-0000-0000-0000-000000000000"):
        assert client.delete(
            f"/auth/devices/{gone}", headers={"Authorization": f"Bearer {here['access_token']}"}
        ).status_code == 404  # fmt: skip


def test_logout_ends_the_device_and_api_keys_cannot_see_devices(
    client: TestClient[Any], alice: User
) -> None:
    other = alice.login(device="other")
    ended = client.post("/auth/logout", json={"refresh_token": other["refresh_token"]})
    assert ended.status_code == 204
    assert "other" not in [d["name"] for d in alice.get("/auth/devices").json()]
    key = alice.post("/api/v1/api-keys/", {"vault": alice.vault, "permissions": ["admin"]})
    headers = {"Authorization": f"Bearer {key.json()['api_key']}"}
    assert client.get("/auth/devices", headers=headers).status_code == 403
    some = alice.get("/auth/devices").json()[0]["device_id"]
    assert client.delete(f"/auth/devices/{some}", headers=headers).status_code == 403
