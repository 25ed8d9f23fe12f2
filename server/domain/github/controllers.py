"""HTTP of GitHub binding (the RFC's ``POST /auth/github``), and finding an account by it.

- ``POST /auth/github/device`` — an interactive login starts GitHub's device flow: the answer
  carries the code to enter at GitHub's page and a ``bind_id`` to poll with.
- ``POST /auth/github`` ``{bind_id}`` — one poll: ``pending`` (with the interval GitHub asks
  for), or ``bound`` once the person approved it at GitHub; 410 once the code expired, 403 if
  they declined, 409 if that GitHub account is bound to another account here.
- ``GET /api/v1/users?github=LOGIN`` — the handle and key fingerprint of the account bound to
  a GitHub login (any logged-in account: finding teammates; counted like a login attempt, so
  the pairing of logins and keys cannot be read off in bulk).

404 when this server has no GitHub app configured. GitHub is called outside any database
transaction (no lock is held while it answers), and its access token is used for ``/user`` and
dropped. GitHub vouches for a login, never for a key: a bound account still logs in with its
identity key alone.
"""

from __future__ import annotations

from typing import Annotated, Any, cast

from litestar import Controller, Request
from litestar.datastructures import State
from litestar.params import JSONBody, QueryParameter

from server.deps import AUTHENTICATED, SessionDep, in_write_transaction, principal_of
from server.domain.auth import count_attempt
from server.domain.github import gateway, services
from server.errors import Forbidden, Gone, NotConfigured, Unauthorized
from server.openapi import get, post
from server.settings import Settings
from tapes_e2e.protocol import (
    GithubBindOut,
    GithubBindRequest,
    GithubDeviceOut,
    GithubUserOut,
)

__all__ = ["GithubController", "UserLookupController"]

AnyRequest = Request[object, object, State]
_LOGIN = gateway.LOGIN


def _configured(request: AnyRequest) -> Settings:
    settings: Settings = request.app.state.settings
    if not settings.github:
        raise NotConfigured("GitHub sign-in is not configured on this server")
    return settings


def _caller(request: AnyRequest) -> str:
    """The interactive login asking (no database: GitHub is about to be called)."""
    principal = principal_of(cast(dict[str, Any], request.scope))
    if principal.api_key_id is not None:
        raise Unauthorized("API keys cannot bind a GitHub account; log in")
    return principal.user_id


class GithubController(Controller):
    path = "/auth/github"
    tags = ["auth"]
    dependencies = AUTHENTICATED

    @post("/device", status_code=201, guards=[count_attempt])
    async def device(self, request: AnyRequest) -> GithubDeviceOut:
        """Start GitHub's device flow for the calling account."""
        settings, user_id = _configured(request), _caller(request)
        code = await gateway.start(settings)
        now = request.app.state.clock()
        bind_id = await in_write_transaction(
            request.app.state,
            lambda db: services.new_bind(
                db, user_id, code.device_code, code.interval, code.expires_in, now
            ),
        )
        return GithubDeviceOut(
            bind_id=bind_id, user_code=code.user_code, verification_uri=code.verification_uri,
            interval=code.interval, expires_in=code.expires_in,
        )  # fmt: skip

    @post("/", status_code=200, guards=[count_attempt])
    async def bind(self, request: AnyRequest, data: JSONBody[GithubBindRequest]) -> GithubBindOut:
        """Poll once: bound when the person approved the code at GitHub."""
        settings, user_id = _configured(request), _caller(request)
        state = request.app.state
        now = state.clock()
        found = await in_write_transaction(
            state, lambda db: services.pending_bind(db, user_id, data.bind_id, now)
        )
        if found is None:
            raise Gone(services.EXPIRED)
        grant = await gateway.poll(settings, found.device_code)
        if grant.state in ("pending", "slow_down"):
            interval = found.interval if grant.state == "pending" else found.interval + 5
            if grant.state == "slow_down":
                await in_write_transaction(
                    state, lambda db: services.slow_down(db, data.bind_id, grant.interval or 0)
                )
            return GithubBindOut(status="pending", interval=max(interval, grant.interval or 0))
        # GitHub answers a device code's grant, denial or expiry once: the flow is spent
        await in_write_transaction(state, lambda db: services.forget_bind(db, data.bind_id))
        if grant.state == "expired":
            raise Gone(services.EXPIRED)
        if grant.state == "denied":
            raise Forbidden("the GitHub sign-in was declined at GitHub")
        account = await gateway.user(settings, grant.token)
        bound = await in_write_transaction(
            state, lambda db: services.bind(db, user_id, account.id, account.login, now)
        )
        return GithubBindOut(status="bound", github_login=bound.github_login)


class UserLookupController(Controller):
    path = "/api/v1/users"
    tags = ["auth"]
    dependencies = AUTHENTICATED

    @get("/", sync_to_thread=True, guards=[count_attempt])
    def by_github(
        self,
        db: SessionDep,
        github: Annotated[str, QueryParameter(name="github", pattern=_LOGIN, max_length=39)],
    ) -> GithubUserOut:
        """The account bound to a GitHub login: its handle and key fingerprint."""
        return services.find_by_github(db, github)
