"""The Litestar application: ``create_app(settings)``.

No state that matters lives in process memory: every request works in one database transaction,
tokens, challenges, rate counters and sequence numbers are rows, so any number of workers or
hosts can serve one PostgreSQL database.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from litestar import Litestar, Request, Response, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import (
    HTTPException,
    NotFoundException,
    ValidationException,
)
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from sqlalchemy import Engine

from server.bodies import JsonRequest, refuse_nul_in_path
from server.dashboard import DASHBOARD_HANDLERS, template_config
from server.db.engine import make_engine
from server.deps import (
    connection_slots,
    provide_db,
    provide_now,
    provide_plans,
    require_credentials,
    utc_now,
)
from server.domain.auth import ApiKeyController, AuthController
from server.domain.github import GithubController, UserLookupController
from server.domain.nodes import NodeController, SyncController
from server.domain.shares import ShareController, SharedController
from server.domain.teams import (
    InviteController,
    TeamController,
    WellKnownController,
    create_team,
)
from server.domain.usage.controllers import UsageController
from server.domain.vaults import VaultChainController, VaultController
from server.errors import ApiError, problem
from server.settings import Settings

__all__ = ["create_app"]

log = logging.getLogger("tapes.server")


def _problem(status: int, title: str, detail: str) -> Response[dict[str, object]]:
    error = ApiError(detail)
    error.status, error.title = status, title
    return problem(error)


def _api_error(
    _request: Request[object, object, State], exc: ApiError
) -> Response[dict[str, object]]:
    return problem(exc)


def _validation(
    _request: Request[object, object, State], exc: ValidationException
) -> Response[dict[str, object]]:
    # Litestar's message names the field and the rule; the offending value is not echoed back.
    detail = exc.detail or "the request does not match the schema"
    extra = exc.extra if isinstance(exc.extra, list) else []
    reasons = "; ".join(
        f"{e.get('key', '')}: {e.get('message', '')}" for e in extra if isinstance(e, dict)
    )
    return _problem(400, "Bad Request", f"{detail}: {reasons}" if reasons else detail)


def _http(
    _request: Request[object, object, State], exc: HTTPException
) -> Response[dict[str, object]]:
    return _problem(exc.status_code, type(exc).__name__, exc.detail)


def _internal(
    request: Request[object, object, State], exc: Exception
) -> Response[dict[str, object]]:
    # Logged without the request body; the client learns nothing about the internals.
    log.error("internal error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
    return _problem(500, "Internal Server Error", "the server failed; the error is logged")


@get("/healthz", sync_to_thread=False, tags=["meta"])
def healthz() -> dict[str, str]:
    """Liveness."""
    return {"status": "ok"}


def create_app(
    settings: Settings,
    *,
    engine: Engine | None = None,
    clock: Callable[[], datetime] = utc_now,
    audience: str | None = None,
) -> Litestar:
    """Build the app. ``engine`` and ``clock`` are injectable for tests."""
    db_engine = engine or make_engine(settings.database_url, settings.db_connections)
    state = State(
        {
            "engine": db_engine,
            "db_slots": connection_slots(db_engine),
            "settings": settings,
            "clock": clock,
            "audience": audience or settings.audience,
        }
    )
    return Litestar(
        route_handlers=[
            healthz,
            AuthController,
            GithubController,
            UserLookupController,
            ApiKeyController,
            VaultController,
            SyncController,
            NodeController,
            UsageController,
            create_team,
            TeamController,
            InviteController,
            WellKnownController,
            ShareController,
            SharedController,
            VaultChainController,
            *DASHBOARD_HANDLERS,  # its pages and static files, listed in server.dashboard
        ],
        template_config=template_config(),
        dependencies={
            "db": Provide(provide_db),
            "now": Provide(provide_now, sync_to_thread=False),
            "plans_mode": Provide(provide_plans, sync_to_thread=False),
        },
        exception_handlers={
            ApiError: _api_error,
            ValidationException: _validation,
            NotFoundException: _http,
            HTTPException: _http,
            Exception: _internal,
        },
        openapi_config=OpenAPIConfig(
            title="tapes-e2e sync server",
            version="1.0.0",
            description="Stores client-encrypted node envelopes; never sees content.",
            path="/schema",
            render_plugins=[JsonRenderPlugin()],
        ),
        request_class=JsonRequest,
        guards=[require_credentials, refuse_nul_in_path],
        request_max_body_size=settings.max_body,
        state=state,
        debug=False,
    )
