"""ApiClient against the real app in-process (Litestar's TestClient is an ``httpx.Client``), and
against ``httpx.MockTransport`` servers that are unreachable, garbled or hostile.

The server fixtures come from tests/server/conftest.py, so the in-process tests run on SQLite
and on PostgreSQL like the server's own tests.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import pytest
from litestar.testing import TestClient

import keymgmt
from tapes_e2e import client as client_module
from tapes_e2e.client import ApiClient, Session
from tapes_e2e.errors import (
    AudienceMismatchError,
    AuthError,
    ConfigError,
    ProtocolError,
    RemoteError,
    ServerUnreachableError,
    TapesError,
)
from tapes_e2e.protocol.teams import SignedWire
from tests.server import conftest as server
from tests.server.conftest import AUDIENCE, Clock, User, Vault
from tests.server.test_teams import TeamKit

# The server's fixtures, found by pytest by name: the real app on SQLite and PostgreSQL.
pg_cluster = server.pg_cluster
database_url = server.database_url
client = server.client
clock = server.clock
alice = server.alice

Http = TestClient[Any]


class Seen:
    """The request paths a client sent, via an httpx event hook."""

    def __init__(self, http: httpx.Client) -> None:
        self.paths: list[str] = []
        http.event_hooks = {"request": [self.record], "response": []}

    def record(self, request: httpx.Request) -> None:
        self.paths.append(request.url.path)


@pytest.fixture
def seen(client: Http) -> Iterator[Seen]:
    recorder = Seen(client)
    yield recorder
    client.event_hooks = {"request": [], "response": []}


def api_for(client: Http, clock: Clock, **kwargs: Any) -> tuple[ApiClient, list[Session]]:
    saved: list[Session] = []
    api = ApiClient(client, api_url=AUDIENCE, on_session=saved.append, now=clock, **kwargs)
    return api, saved


def registered(client: Http, clock: Clock, handle: str = "erin") -> tuple[ApiClient, Any]:
    identity = keymgmt.generate_identity()
    api, _saved = api_for(client, clock)
    api.login(identity, handle=handle)
    return api, identity


# --- login ----------------------------------------------------------------------------------


def test_register_then_login_again_on_a_second_client(client: Http, clock: Clock) -> None:
    identity = keymgmt.generate_identity()
    api, saved = api_for(client, clock)
    session = api.login(identity, handle="erin")
    assert saved == [session]
    assert api.session == session
    assert (session.server, session.handle, session.fingerprint) == (
        AUDIENCE,
        "erin",
        identity.fingerprint,
    )
    assert session.personal_vault.startswith("v_")
    assert session.access_expires_at == clock.now + timedelta(seconds=900)
    assert api.me().handle == "erin"
    vaults = api.vaults()
    assert [(v.vault_id, v.kind, v.role) for v in vaults] == [
        (session.personal_vault, "personal", "owner")
    ]

    # a second machine with the same identity and no handle: the same account, new tokens
    other, other_saved = api_for(client, clock)
    again = other.login(identity)
    assert (again.user_id, again.handle, again.personal_vault) == (
        session.user_id,
        "erin",
        session.personal_vault,
    )
    assert again.access_token != session.access_token
    assert other_saved == [again]


def test_a_trailing_slash_in_api_url_is_the_same_server(client: Http, clock: Clock) -> None:
    api = ApiClient(client, api_url=AUDIENCE + "/")
    session = api.login(keymgmt.generate_identity(), handle="frank")
    assert session.server == AUDIENCE


def test_an_unknown_identity_without_handle_is_refused(client: Http, clock: Clock) -> None:
    api, saved = api_for(client, clock)
    with pytest.raises(AuthError, match="did not accept this identity") as info:
        api.login(keymgmt.generate_identity())
    assert info.value.hint is not None
    assert "handle" in info.value.hint
    assert saved == []
    assert api.session is None


def test_a_taken_handle_is_a_remote_conflict(client: Http, clock: Clock) -> None:
    registered(client, clock, "gina")
    api, _saved = api_for(client, clock)
    with pytest.raises(RemoteError) as info:
        api.login(keymgmt.generate_identity(), handle="gina")
    assert info.value.status == 409
    assert "taken" in info.value.detail


def _no_session(session: Session) -> None:
    pytest.fail(f"a session was made: {session!r}")


def test_a_challenge_for_another_server_is_not_signed(
    client: Http, clock: Clock, seen: Seen
) -> None:
    # The app answers with audience http://testserver.local; this client expects another server,
    # as when a malicious server relays the challenge of the real one.
    api = ApiClient(client, api_url="http://evil.example", on_session=_no_session)
    with pytest.raises(AudienceMismatchError) as info:
        api.login(keymgmt.generate_identity(), handle="henry")
    assert "http://testserver.local" in info.value.message
    assert "refused to sign" in info.value.message
    assert seen.paths == ["/auth/challenge"]  # /auth/login was never called
    assert api.session is None


def test_calls_without_a_login_fail_before_any_request(
    client: Http, clock: Clock, seen: Seen
) -> None:
    api = ApiClient(client, api_url=AUDIENCE)
    with pytest.raises(AuthError, match="not logged in") as info:
        api.vaults()
    assert info.value.hint == "run `tapes auth login`"
    assert seen.paths == []


def test_bad_configuration_is_a_config_error(client: Http) -> None:
    with pytest.raises(ConfigError, match="api_url"):
        ApiClient(client, api_url="testserver.local")
    with pytest.raises(ConfigError, match="api_key"):
        ApiClient(client, api_url=AUDIENCE, api_key="not-a-tapes-key")


# --- tokens ---------------------------------------------------------------------------------


def test_an_expired_access_token_is_refreshed_once_and_the_new_session_saved(
    client: Http, clock: Clock, seen: Seen
) -> None:
    identity = keymgmt.generate_identity()
    api, saved = api_for(client, clock)
    first = api.login(identity, handle="ivy")
    clock.advance(seconds=901)
    seen.paths.clear()

    vaults = api.vaults()

    assert [v.vault_id for v in vaults] == [first.personal_vault]
    assert seen.paths == ["/api/v1/teams", "/auth/token/refresh", "/api/v1/teams"]
    assert len(saved) == 2
    rotated = saved[1]
    assert api.session == rotated
    assert rotated.access_token != first.access_token
    assert rotated.refresh_token != first.refresh_token
    assert (rotated.user_id, rotated.handle) == (first.user_id, "ivy")
    assert rotated.access_expires_at == clock.now + timedelta(seconds=900)
    # the old refresh token is spent: the rotation really happened on the server
    spent = client.post("/auth/token/refresh", json={"refresh_token": first.refresh_token})
    assert spent.status_code == 401


def test_a_saved_session_is_used_and_refreshed_by_a_new_client(client: Http, clock: Clock) -> None:
    api, _identity = registered(client, clock, "jack")
    session = api.session
    assert session is not None
    clock.advance(seconds=901)
    restored = Session.from_dict(json.loads(json.dumps(session.to_dict())))
    assert restored == session
    later, saved = api_for(client, clock, session=restored)
    assert later.me().handle == "jack"
    assert len(saved) == 1
    assert saved[0].refresh_token != session.refresh_token


def test_a_revoked_login_is_an_auth_error(client: Http, clock: Clock) -> None:
    api, _identity = registered(client, clock, "kate")
    session = api.session
    assert session is not None
    # Someone else (a thief) rotates the refresh token first; the client's copy is spent, and
    # presenting it revokes the whole login.
    stolen = client.post("/auth/token/refresh", json={"refresh_token": session.refresh_token})
    assert stolen.status_code == 200
    clock.advance(seconds=901)
    with pytest.raises(AuthError) as info:
        api.vaults()
    assert info.value.message == "your login expired or was revoked"
    assert info.value.hint == "run `tapes auth login`"
    thief = stolen.json()["refresh_token"]
    assert client.post("/auth/token/refresh", json={"refresh_token": thief}).status_code == 401


def test_an_expired_refresh_token_is_an_auth_error(client: Http, clock: Clock) -> None:
    api, _identity = registered(client, clock, "liam")
    clock.advance(days=31)
    with pytest.raises(AuthError, match="expired or was revoked"):
        api.status(api.session.personal_vault if api.session else "")
    with pytest.raises(AuthError):
        api.refresh()


def test_session_repr_hides_tokens_and_garbage_is_an_auth_error(client: Http, clock: Clock) -> None:
    api, _identity = registered(client, clock, "mona")
    session = api.session
    assert session is not None
    assert session.access_token not in repr(session)
    assert session.refresh_token not in repr(session)
    with pytest.raises(AuthError, match="unreadable"):
        Session.from_dict({"server": AUDIENCE})


# --- sync -----------------------------------------------------------------------------------


def test_push_pull_status_and_ancestry_round_trip(client: Http, clock: Clock) -> None:
    api, identity = registered(client, clock, "nina")
    assert api.session is not None
    vault_id = api.session.personal_vault
    envelopes = Vault(vault_id, identity).chain(3)
    ids = [e["node_id"] for e in envelopes]

    pushed = api.push(vault_id, envelopes)
    assert (pushed.stored, pushed.existing, pushed.head_seq) == (ids, [], 3)
    again = api.push(vault_id, envelopes)
    assert (again.stored, again.existing, again.head_seq) == ([], ids, 3)

    status = api.status(vault_id)
    assert (status.head_seq, status.node_count, status.pending_pull) == (3, 3, 3)
    assert api.status(vault_id, after=2).pending_pull == 1

    first = api.pull(vault_id, after=0, limit=2)
    assert ([i.seq for i in first.items], first.cursor, first.more) == ([1, 2], 2, True)
    rest = api.pull(vault_id, after=first.cursor, limit=2)
    assert ([i.seq for i in rest.items], rest.cursor, rest.more) == ([3], 3, False)
    pulled = [keymgmt.Envelope.parse(i.envelope).to_dict() for i in first.items + rest.items]
    assert pulled == envelopes

    ancestry = api.ancestry(ids[-1])
    assert [n.envelope.node_id for n in ancestry] == ids[::-1]
    assert api.node(ids[0]).envelope.node_id == ids[0]


def test_a_refused_push_is_a_remote_error_with_the_servers_detail(
    client: Http, clock: Clock
) -> None:
    api, identity = registered(client, clock, "omar")
    assert api.session is not None
    vault_id = api.session.personal_vault
    orphan = Vault(vault_id, identity).chain(2)[1:]  # a child without its parent
    with pytest.raises(RemoteError) as info:
        api.push(vault_id, orphan)
    assert info.value.status == 400
    assert "push parents before children" in info.value.detail
    with pytest.raises(RemoteError) as missing:
        api.node("0" * 64)
    assert (missing.value.status, missing.value.detail) == (404, "no such node")


# --- the personal vault's genesis ------------------------------------------------------------


def _body(parent: str | None, text: str) -> bytes:
    return json.dumps({"parent": parent, "text": text}, sort_keys=True).encode()


def _hasher(body: bytes) -> tuple[str, str | None]:
    parent: str | None = json.loads(body)["parent"]
    return hashlib.sha256(body).hexdigest(), parent


def test_genesis_then_a_second_machine_verifies_opens_and_reads(client: Http, clock: Clock) -> None:
    api, identity = registered(client, clock, "pia")
    assert api.session is not None
    vault_id = api.session.personal_vault
    vault_key, epoch_key = keymgmt.new_key(), keymgmt.new_key()
    statement = keymgmt.create_team(
        team=vault_id,
        owner=identity,
        vault_id_key=vault_key,
        epoch_key=epoch_key,
        now=int(clock.now.timestamp()),
    )
    state = keymgmt.verify_chain([statement], team=vault_id)
    keyring = keymgmt.seal_keyring(
        state, sealer=identity, epoch=1, epoch_key=epoch_key, vault_id_key=vault_key
    )
    created = api.genesis(
        vault_id, statement.to_dict(), msgspec.convert(keyring.to_dict(), SignedWire)
    )
    assert (created.vault_id, created.head.seqno, created.head.hash) == (
        vault_id,
        0,
        state.head.hash,
    )
    body = _body(None, "hello")
    sealed = keymgmt.seal_node(
        state=state, keys=keymgmt.TeamKeys(vault_id, vault_key, {1: epoch_key}),
        tapes_hash=hashlib.sha256(body).hexdigest(), parent_id=None, body=body,
        metadata=keymgmt.project_metadata("coarse", {"model": "m"}), author=identity.fingerprint,
    )  # fmt: skip
    api.push(vault_id, [sealed.to_dict()])

    # the second machine: same identity, nothing else
    other, _saved = api_for(client, clock)
    other.login(identity)
    page = other.chain(vault_id)
    wires = [msgspec.to_builtins(s) for s in page.statements]
    verified = keymgmt.verify_chain(wires, team=vault_id)
    assert verified.head.hash == page.head.hash == state.head.hash
    rings = other.keyrings(vault_id)
    assert [r.epoch for r in rings] == [1]
    opened = keymgmt.open_keyring(
        msgspec.to_builtins(rings[0].keyring), state=verified, identity=identity
    )
    assert (opened.vault_id_key, opened.epoch_key) == (vault_key, epoch_key)
    keys = keymgmt.TeamKeys(vault_id, opened.vault_id_key)
    keys.add(opened)
    item = other.pull(vault_id).items[0]
    node = keymgmt.open_node(item.envelope, state=verified, keys=keys, hasher=_hasher)
    assert node.body == body

    with pytest.raises(RemoteError) as info:
        api.genesis(vault_id, statement.to_dict(), keyring.to_dict())
    assert info.value.status == 409
    assert "already has its genesis" in info.value.message


def test_genesis_for_someone_elses_or_a_team_vault_is_refused(
    client: Http, clock: Clock, alice: User
) -> None:
    api, identity = registered(client, clock, "quinn")

    def kit(vault: str) -> tuple[dict[str, str], dict[str, str]]:
        vault_key, epoch_key = keymgmt.new_key(), keymgmt.new_key()
        statement = keymgmt.create_team(
            team=vault, owner=identity, vault_id_key=vault_key, epoch_key=epoch_key,
            now=int(clock.now.timestamp()),
        )  # fmt: skip
        keyring = keymgmt.seal_keyring(
            keymgmt.verify_chain([statement]),
            sealer=identity,
            epoch=1,
            epoch_key=epoch_key,
            vault_id_key=vault_key,
        )
        return statement.to_dict(), keyring.to_dict()

    with pytest.raises(RemoteError) as foreign:
        api.genesis(alice.vault, *kit(alice.vault))
    assert (foreign.value.status, foreign.value.detail) == (404, "no such vault")

    team = TeamKit(alice, clock)
    assert team.response.status_code == 201
    with pytest.raises(RemoteError) as not_member:
        api.genesis(team.team_id, *kit(team.team_id))
    assert not_member.value.status == 404
    owner = ApiClient(client, api_url=AUDIENCE, session=_session_of(alice))
    with pytest.raises(RemoteError) as team_vault:
        owner.genesis(team.team_id, team.genesis.to_dict(), team.keyring(alice, 1))
    assert team_vault.value.status == 400
    assert "team vault" in team_vault.value.detail
    # the team chain is readable through the vault path, unchanged
    assert len(owner.chain(team.team_id).statements) == 1


def _session_of(user: User) -> Session:
    """A Session for a conftest User (logged in through the raw endpoints)."""
    return Session(
        server=AUDIENCE,
        user_id=user.user_id,
        handle=user.handle,
        fingerprint=user.identity.fingerprint,
        personal_vault=user.vault,
        access_token=user.access,
        refresh_token=user.refresh,
        access_expires_at=datetime.now(UTC) + timedelta(days=365),
    )


def test_append_chain_adds_a_member_to_a_team(client: Http, clock: Clock, alice: User) -> None:
    team = TeamKit(alice, clock)
    api, identity = registered(client, clock, "rosa")
    owner = ApiClient(client, api_url=AUDIENCE, session=_session_of(alice))
    add = keymgmt.add_member(
        team.state, signer=alice.identity, member=identity.public, role="member",
        now=int(clock.now.timestamp()),
    )  # fmt: skip
    head = owner.append_chain(team.team_id, 0, [add.to_dict()])
    assert head.seqno == 1
    assert len(api.chain(team.team_id).statements) == 2
    with pytest.raises(RemoteError) as stale:
        owner.append_chain(team.team_id, 0, [add.to_dict()])
    assert stale.value.status == 409


# --- API keys -------------------------------------------------------------------------------


def test_an_api_key_replaces_the_session_until_revoked(client: Http, clock: Clock) -> None:
    api, identity = registered(client, clock, "sami")
    assert api.session is not None
    vault_id = api.session.personal_vault
    api.push(vault_id, Vault(vault_id, identity).chain(2))
    created = api.create_api_key(vault_id, ["pull"], name="ci")
    assert created.api_key.startswith("tapes_")
    assert [(k.key_id, k.name, k.revoked) for k in api.list_api_keys()] == [
        (created.info.key_id, "ci", False)
    ]

    keyed = ApiClient(client, api_url=AUDIENCE, api_key=created.api_key)
    assert len(keyed.pull(vault_id).items) == 2
    with pytest.raises(RemoteError) as denied:  # the key does not allow push
        keyed.push(vault_id, Vault(vault_id, identity).chain(1))
    assert denied.value.status == 404

    api.revoke_api_key(created.info.key_id)
    assert api.list_api_keys()[0].revoked is True
    with pytest.raises(AuthError, match="API key") as info:
        keyed.pull(vault_id)
    assert info.value.hint is not None
    assert "api-key create" in info.value.hint


# --- unreachable, garbled and hostile servers (MockTransport) --------------------------------

URL = "https://sync.example"
FIRST_TOKENS = ("access-0", "refresh-0-xxxxxxxxxxxxxxxx")
SESSION = Session(
    server=URL,
    user_id="u1",
    handle="tess",
    fingerprint="AAAA-" * 7 + "AAAA",
    personal_vault="v_one",
    access_token=FIRST_TOKENS[0],
    refresh_token=FIRST_TOKENS[1],
    access_expires_at=datetime.now(UTC) + timedelta(days=365),
)


def mock(handler: Callable[[httpx.Request], httpx.Response], **kwargs: Any) -> ApiClient:
    http = httpx.Client(transport=httpx.MockTransport(handler))
    return ApiClient(http, api_url=URL, session=SESSION, **kwargs)


def test_an_unreachable_server_is_reported_as_such() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with pytest.raises(ServerUnreachableError) as info:
        mock(refuse).status("v_one")
    assert info.value.message == f"cannot reach {URL} ([Errno 111] Connection refused)"
    assert info.value.hint is not None
    assert "locally" in info.value.hint
    with pytest.raises(ServerUnreachableError):
        mock(refuse).login(keymgmt.generate_identity())


def test_a_silent_server_times_out_with_the_configured_timeout() -> None:
    timeouts: list[Any] = []

    def hang(request: httpx.Request) -> httpx.Response:
        timeouts.append(request.extensions["timeout"])
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(ServerUnreachableError, match=r"no answer within 2\.5 s"):
        mock(hang, timeout=2.5).pull("v_one")
    assert timeouts == [{"connect": 2.5, "read": 2.5, "write": 2.5, "pool": 2.5}]


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"",
        b'{"vault": "v_one", "head_seq": "three", "node_count": 3, "after": 0, "pending_pull": 3}',
        b'{"vault": "v_one", "head_seq": 3}',
        b"[]",
    ],
    ids=["garbled", "empty", "wrong-type", "missing-fields", "wrong-shape"],
)
def test_an_answer_that_does_not_decode_is_a_protocol_error(content: bytes) -> None:
    api = mock(lambda _request: httpx.Response(200, content=content))
    with pytest.raises(ProtocolError) as info:
        api.status("v_one")
    assert info.value.message == "the server's answer to GET /api/v1/sync/status is malformed"
    assert "three" not in info.value.message


CAP = 1024 * 1024  # MAX_ANSWER_BYTES in these tests: a hostile answer need not be 64 MiB


class Endless(httpx.SyncByteStream):
    """An answer body that goes on far past the cap (16 times: as good as endless for the
    client, and a client without the cap fails on it without filling this machine's memory),
    counting what the client read of it."""

    def __init__(self) -> None:
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        while self.sent < 16 * CAP:
            self.sent += 64 * 1024
            yield b" " * (64 * 1024)


def test_an_endless_answer_is_cut_at_the_cap_and_is_one_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(client_module, "MAX_ANSWER_BYTES", CAP)
    body = Endless()
    api = mock(lambda _request: httpx.Response(200, stream=body))
    with pytest.raises(ProtocolError) as info:
        api.pull("v_one")
    assert info.value.message == "the server's answer to GET /api/v1/sync/pull is larger than 1 MiB"
    assert CAP < body.sent <= CAP + 64 * 1024  # read up to the cap, not one chunk further


def test_an_answer_declared_over_the_cap_is_not_read_at_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(client_module, "MAX_ANSWER_BYTES", CAP)
    body = Endless()
    declared = {"content-length": str(CAP + 1)}
    api = mock(lambda _request: httpx.Response(200, headers=declared, stream=body))
    with pytest.raises(ProtocolError, match="larger than 1 MiB"):
        api.status("v_one")
    assert body.sent == 0


def test_a_compressed_answer_is_capped_once_inflated_and_read_once_within_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A gzip bomb (a small body that inflates past the cap) is refused; a compressed honest
    answer decodes as it would uncompressed (inflated once, not twice)."""
    monkeypatch.setattr(client_module, "MAX_ANSWER_BYTES", CAP)
    status = {"vault": "v_one", "head_seq": 3, "node_count": 3, "after": 0, "pending_pull": 3}
    bomb = gzip.compress(json.dumps(status).encode() + b" " * (2 * CAP))
    assert len(bomb) < CAP // 100

    def answer(content: bytes) -> Callable[[httpx.Request], httpx.Response]:
        headers = {"content-encoding": "gzip", "content-type": "application/json"}
        return lambda _request: httpx.Response(200, headers=headers, content=content)

    with pytest.raises(ProtocolError, match="larger than 1 MiB"):
        mock(answer(bomb)).status("v_one")
    honest = mock(answer(gzip.compress(json.dumps(status).encode()))).status("v_one")
    assert (honest.head_seq, honest.pending_pull) == (3, 3)


def test_a_garbled_challenge_is_a_protocol_error_and_nothing_is_signed() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return httpx.Response(200, json={"challenge_id": "x", "audience": URL})

    with pytest.raises(ProtocolError, match="/auth/challenge"):
        mock(handler).login(keymgmt.generate_identity())
    assert paths == ["/auth/challenge"]


def test_error_details_are_shown_cleaned_and_bodies_never() -> None:
    problem = {
        "type": "about:blank",
        "title": "Conflict",
        "status": 409,
        "detail": "the chain\x1b[31m moved\nagain",
        "secret": "do not show",
    }
    api = mock(lambda _request: httpx.Response(409, json=problem))
    with pytest.raises(RemoteError) as info:
        api.chain("v_one")
    assert (info.value.status, info.value.detail) == (409, "the chain [31m moved again")
    assert "\x1b" not in info.value.message
    assert "do not show" not in info.value.message

    gateway = mock(lambda _request: httpx.Response(502, content=b"<html>upstream</html>"))
    with pytest.raises(RemoteError) as bad:
        gateway.vaults()
    assert (bad.value.status, bad.value.detail) == (502, "Bad Gateway")
    assert bad.value.hint is not None
    assert "try again later" in bad.value.hint
    assert "upstream" not in bad.value.message


def _tokens(user_id: str, n: int) -> dict[str, Any]:
    return {
        "access_token": f"access-{n}",
        "refresh_token": f"refresh-{n}-xxxxxxxxxxxxxxxx",
        "expires_in": 900,
        "user_id": user_id,
        "fingerprint": SESSION.fingerprint,
        "personal_vault": "v_one",
    }


def test_a_refresh_into_another_account_is_a_protocol_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token/refresh":
            return httpx.Response(200, json=_tokens("someone-else", 1))
        return httpx.Response(401, json={"detail": "expired"})

    saved: list[Session] = []
    api = mock(handler, on_session=saved.append)
    with pytest.raises(ProtocolError, match="another account"):
        api.vaults()
    assert saved == []
    assert api.session == SESSION


def test_concurrent_401s_refresh_once() -> None:
    """Two threads refused with the same access token: one refresh, both retried (a second
    refresh would present a spent refresh token and revoke the login)."""
    barrier = threading.Barrier(2, timeout=10)
    refreshes: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token/refresh":
            refreshes.append(json.loads(request.content)["refresh_token"])
            return httpx.Response(200, json=_tokens("u1", len(refreshes)))
        if request.headers["authorization"] == "Bearer access-0":
            barrier.wait()  # both threads hold the old token before either refreshes
            return httpx.Response(401, json={"detail": "expired"})
        return httpx.Response(200, json=[])

    saved: list[Session] = []
    api = mock(handler, on_session=saved.append)
    results: list[object] = []

    def run() -> None:
        try:
            results.append(api.vaults())
        except TapesError as exc:  # pragma: no cover - reported by the assertion below
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert results == [[], []]
    assert refreshes == [SESSION.refresh_token]
    assert [s.access_token for s in saved] == ["access-1"]


def _item(node_id: str, parent: str | None) -> dict[str, Any]:
    _hash, envelope = Vault("v_one", keymgmt.generate_identity()).seal(node_id)
    return {"seq": 1, "uploaded_at": "2026-01-01T00:00:00+00:00",
            "envelope": dict(envelope, node_id=node_id, parent_id=parent)}  # fmt: skip


def test_ancestry_pages_are_followed_and_a_hostile_walk_is_refused() -> None:
    """Pages continue at ``next``; a page that does not follow the parent links, or a ``next``
    that leads back to a node already given, is a ProtocolError instead of an endless walk."""
    a, b, c = "a" * 64, "b" * 64, "c" * 64
    honest: dict[str, dict[str, Any]] = {
        c: {"items": [_item(c, b)], "next": b},
        b: {"items": [_item(b, a), _item(a, None)], "next": None},
    }

    def serve(pages: dict[str, dict[str, Any]]) -> Callable[[httpx.Request], httpx.Response]:
        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, json=pages[request.url.path.split("/")[-2]])

        return handler

    walked = mock(serve(honest)).ancestry(c)
    assert [item.envelope.node_id for item in walked] == [c, b, a]
    looping = {c: {"items": [_item(c, b)], "next": b}, b: {"items": [_item(b, c)], "next": c}}
    spliced = {c: {"items": [_item(c, b), _item(a, None)], "next": None}}
    wrong_next = {c: {"items": [_item(c, b)], "next": a}}
    empty: dict[str, dict[str, Any]] = {c: {"items": [], "next": None}}
    for pages in (looping, spliced, wrong_next, empty):
        with pytest.raises(ProtocolError, match="parent links"):
            mock(serve(pages)).ancestry(c)


def test_refusals_are_told_apart_by_their_problem_type_never_by_text() -> None:
    """The client raises by the answer's RFC 9457 ``type`` (one table); the detail is only shown.
    A 409 of unknown type stays a plain RemoteError."""
    from tapes_e2e.client import PROBLEM_ERRORS
    from tapes_e2e.protocol import Problem

    def answer(status: int, kind: str) -> ApiClient:
        body = {"type": kind, "title": "t", "status": status, "detail": "whatever the text says"}
        return mock(lambda _request: httpx.Response(status, json=body))

    for kind, error in PROBLEM_ERRORS.items():
        with pytest.raises(error) as info:
            answer(409, kind).status("v_one")
        assert info.value.detail == "whatever the text says"
    with pytest.raises(RemoteError) as plain:
        answer(409, "about:blank").status("v_one")
    assert type(plain.value) is RemoteError
    assert set(PROBLEM_ERRORS) == set(Problem)  # every type the server sends is mapped


DEEP = b"[" * 100_000 + b"]" * 100_000  # past msgspec's depth: RecursionError, not DecodeError


@pytest.mark.parametrize("status", [200, 400])
def test_an_answer_nested_past_any_depth_is_one_error(status: int) -> None:
    """An audit entry's ``detail`` is any JSON: a hostile server nested it 100,000 deep and
    ``tapes team audit`` exited 70 (RecursionError). So does a problem detail's unknown field."""
    entry = b'{"id":1,"action":"a","subject":"s","actor_id":null,"prev_hash":null,"hash":"h",'
    page = b'{"team_id":"t","chain_ok":true,"entries":[' + entry + b'"created_at":"x",'
    body = page + b'"detail":{"x":' + DEEP + b'}}],"cursor":1,"more":false}'
    if status == 400:
        body = b'{"type":"about:blank","title":"Bad Request","status":400,"x":' + DEEP + b"}"
    api = mock(lambda _request: httpx.Response(status, content=body))
    with pytest.raises(ProtocolError if status == 200 else RemoteError) as info:
        api.audit_page("t_team")
    assert "\n" not in str(info.value)
    if status == 200:
        assert (
            info.value.message
            == "the server's answer to GET /api/v1/teams/t_team/audit is malformed"
        )
