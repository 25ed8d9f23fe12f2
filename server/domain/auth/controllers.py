"""HTTP of authentication: Ed25519 challenge login, rotating refresh tokens, team-scoped API keys.

- ``POST /auth/challenge`` → a single-use nonce (60 s), bound to this server's audience.
- ``POST /auth/login`` → verify the signature with the presented public keys; an unknown key with
  a ``handle`` registers the account and its personal vault. Unknown key without a handle and a
  bad signature get the same 401, so the endpoint says nothing about who exists.
- ``POST /auth/token/refresh`` rotates the refresh token. Presenting a spent one revokes the whole
  family (every refresh and access token descended from that login) and is audited.
- ``POST /auth/rekey`` replaces the account's identity key in every vault it is in, in one
  transaction, and ends every login, API key, share and join request of the old key.
- ``/api/v1/api-keys``: ``tapes_…`` keys scoped to one vault and to permissions, stored hashed,
  shown once, revocable.

The rules live in ``services``; this module reads the request and the caller's address.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, Response
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.handlers import BaseRouteHandler
from litestar.params import FromPath, JSONBody, Parameter

from server import ratelimit
from server.deps import (
    AUTHENTICATED,
    NowDep,
    PrincipalDep,
    SessionDep,
    in_write_transaction,
)
from server.domain.auth import rekey, services
from server.errors import Unauthorized, problem
from server.openapi import delete, get, post
from server.settings import Settings
from tapes_e2e.protocol import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyInfo,
    Challenge,
    DeviceOut,
    LoginRequest,
    RefreshRequest,
    TokenPair,
    UserOut,
)
from tapes_e2e.protocol.teams import RekeyOut, RekeyRequest

__all__ = ["ApiKeyController", "AuthController", "count_attempt"]

DeviceId = Annotated[str, Parameter(pattern=r"^[0-9a-f-]{36}$")]


def _client(request: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The caller's address for rate limits and the audit log: the peer, or, when the peer is
    one of the proxies ``TAPES_SERVER_TRUSTED_PROXIES`` names, the last address that proxy put
    in ``X-Forwarded-For`` (any earlier ones were written by the client and prove nothing)."""
    peer = request.client.host if request.client else "unknown"
    settings: Settings = request.app.state.settings
    if peer not in settings.trusted_proxies:
        return peer
    forwarded = request.headers.get("x-forwarded-for", "")
    last = forwarded.rsplit(",", 1)[-1].strip()
    return last[:64] or peer


async def count_attempt(
    connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler
) -> None:
    """Guard of the endpoints anyone may call: count the attempt against the caller's address
    (``TooManyRequests`` past the limit) before anything of the request is parsed, and commit
    the count in a transaction of its own. So a body refused as malformed counts, and so does
    a failed login, whose 401 rolls its request's own transaction back."""
    settings: Settings = connection.app.state.settings
    bucket, now = f"auth:{_client(connection)}", connection.app.state.clock()
    await in_write_transaction(
        connection.app.state,
        lambda db: ratelimit.hit(db, bucket, limit=settings.auth_rate_per_minute, now=now),
    )


class AuthController(Controller):
    path = "/auth"
    tags = ["auth"]

    @post("/challenge", sync_to_thread=True, status_code=200, guards=[count_attempt])
    def challenge(
        self, request: Request[object, object, State], db: SessionDep, now: NowDep
    ) -> Challenge:
        """A single-use nonce to sign with the identity key."""
        return services.new_challenge(db, request.app.state.audience, now)

    @post("/login", sync_to_thread=True, status_code=200, guards=[count_attempt])
    def login(
        self, request: Request[object, object, State], data: JSONBody[LoginRequest], db: SessionDep,
        now: NowDep,
    ) -> TokenPair:  # fmt: skip
        """Log in (or, with ``handle``, register) by signing a challenge."""
        state = request.app.state
        return services.log_in(db, state.settings, state.audience, data, _client(request), now)

    @post("/token/refresh", sync_to_thread=True, status_code=200, guards=[count_attempt])
    def refresh(
        self, request: Request[object, object, State], data: JSONBody[RefreshRequest],
        db: SessionDep, now: NowDep,
    ) -> TokenPair | Response[dict[str, object]]:  # fmt: skip
        """Rotate the refresh token. Reusing a spent one revokes its whole family."""
        settings: Settings = request.app.state.settings
        pair = services.refresh(db, settings, data.refresh_token, _client(request), now)
        if pair is None:
            # Answered, not raised: the revocation must be committed although the request fails.
            return problem(
                Unauthorized("this refresh token was already used; every session of it is revoked")
            )
        return pair

    @post("/logout", sync_to_thread=True, status_code=204, guards=[count_attempt])
    def logout(self, data: JSONBody[RefreshRequest], db: SessionDep, now: NowDep) -> None:
        """End a login: its refresh token and every access token of its family stop working.
        Answered 204 whether or not the token was live, so it reveals nothing."""
        services.log_out(db, data.refresh_token, now)

    @post("/rekey", sync_to_thread=True, status_code=200, dependencies=AUTHENTICATED)
    def rekey(
        self, request: Request[object, object, State], data: JSONBody[RekeyRequest],
        db: SessionDep, principal: PrincipalDep, now: NowDep,
    ) -> RekeyOut:  # fmt: skip
        """Rotate the identity key: every vault records the change, the old key is retired and
        every login and API key of the account ends (log in again with the new key)."""
        return rekey.rekey(db, principal, request.app.state.audience, data, now)

    @get("/me", sync_to_thread=True, dependencies=AUTHENTICATED)
    def me(self, db: SessionDep, principal: PrincipalDep) -> UserOut:
        """The calling account."""
        return services.account(db, principal)

    @get("/devices", sync_to_thread=True, dependencies=AUTHENTICATED)
    def devices(self, db: SessionDep, principal: PrincipalDep) -> list[DeviceOut]:
        """The account's live logins (devices), most recently seen first."""
        return services.devices(db, principal)

    @delete("/devices/{device_id:str}", sync_to_thread=True, status_code=204,
            dependencies=AUTHENTICATED)  # fmt: skip
    def revoke_device(
        self, device_id: DeviceId, db: SessionDep, principal: PrincipalDep, now: NowDep
    ) -> None:
        """End one login at once: its refresh and access tokens stop working."""
        services.revoke_device(db, principal, device_id, now)


class ApiKeyController(Controller):
    path = "/api/v1/api-keys"
    tags = ["auth"]
    dependencies = AUTHENTICATED

    @post("/", sync_to_thread=True, status_code=201)
    def create(
        self, data: JSONBody[ApiKeyCreate], db: SessionDep, principal: PrincipalDep, now: NowDep
    ) -> ApiKeyCreated:
        """Create a key for one vault. Needs an interactive login and admin rights there."""
        return services.create_api_key(db, principal, data, now)

    @get("/", sync_to_thread=True)
    def list_keys(self, db: SessionDep, principal: PrincipalDep) -> list[ApiKeyInfo]:
        """Keys this account created. Only an interactive login manages keys."""
        return services.list_api_keys(db, principal)

    @delete("/{key_id:str}", sync_to_thread=True, status_code=204)
    def revoke(
        self, key_id: FromPath[str], db: SessionDep, principal: PrincipalDep, now: NowDep
    ) -> None:
        """Revoke a key at once. Only an interactive login manages keys."""
        services.revoke_api_key(db, principal, key_id, now)
