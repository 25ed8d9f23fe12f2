"""The dashboard's routes: HTML pages under ``/dashboard`` and one API endpoint.

| route | what |
|---|---|
| ``GET /dashboard`` | the usage of one team over one range (``team``, ``from``, ``to``, ``days``) |
| ``GET/POST /dashboard/sign-in`` | paste a ``read-usage`` API key |
| ``GET/POST /dashboard/link/{secret}`` | a one-time link: shows whom it signs in, then does |
| ``POST /dashboard/sign-out`` | ends the session |
| ``/dashboard/static/…`` | the vendored htmx and the stylesheet |
| ``POST /api/v1/dashboard/links`` | a one-time link for the caller (``tapes usage --open``) |

Pages read the session cookie themselves; every POST checks its CSRF token first, and the
sign-in forms count against the login rate limit. No page is in the OpenAPI schema.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath, FromQuery, JSONBody, QueryParameter
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router

from server import openapi
from server.dashboard import access, data
from server.dashboard.chart import chart
from server.dashboard.ranges import PRESETS, parse_range
from server.dashboard.web import (
    HTML_ERRORS,
    PRE_COOKIE,
    SESSION_COOKIE,
    STATIC,
    SecurityHeaders,
    cookie,
    expired_cookie,
)
from server.db.models import User
from server.deps import AUTHENTICATED, NowDep, PrincipalDep, SessionDep
from server.domain.auth import count_attempt
from server.domain.usage.controllers import price_book
from server.errors import BadRequest, NotFound, Unauthorized
from tapes_e2e.protocol.dashboard import DashboardLinkCreate, DashboardLinkOut

__all__ = ["DASHBOARD_HANDLERS"]

AnyRequest = Request[Any, Any, State]
Page = Template | Redirect


@dataclass
class CsrfForm:
    csrf: str = ""


@dataclass
class KeyForm:
    csrf: str = ""
    api_key: str = ""


FormBody = Body(media_type=RequestEncodingType.URL_ENCODED)


def _pre_secret(request: AnyRequest) -> tuple[str, bool]:
    """The browser's pre-session CSRF secret, and whether it is new (to be set)."""
    secret = request.cookies.get(PRE_COOKIE, "")
    if 20 <= len(secret) <= 100:
        return secret, False
    return secrets.token_urlsafe(32), True


def _form_page(request: AnyRequest, name: str, status: int = 200, **context: Any) -> Template:
    """A page with a pre-session form: its CSRF token, and the cookie it is derived from."""
    secret, new = _pre_secret(request)
    cookies = [cookie(request, PRE_COOKIE, secret, 3600)] if new else []
    context |= {"csrf": access.csrf_token(secret), "browser": None}
    return Template(template_name=name, context=context, status_code=status, cookies=cookies)


def _signed_in(request: AnyRequest, secret: str, to: str) -> Redirect:
    """Into the dashboard with a new session cookie; the pre-session secret is spent."""
    return Redirect(
        to, status_code=303,
        cookies=[cookie(request, SESSION_COOKIE, secret, int(access.SESSION_TTL.total_seconds())),
                 expired_cookie(request, PRE_COOKIE)],
    )  # fmt: skip


def _to_sign_in(request: AnyRequest) -> Redirect:
    headers = {"HX-Redirect": "/dashboard/sign-in"} if request.headers.get("hx-request") else {}
    return Redirect("/dashboard/sign-in", status_code=303, headers=headers)


class DashboardController(Controller):
    path = "/dashboard"
    include_in_schema = False
    middleware = [SecurityHeaders]
    exception_handlers = HTML_ERRORS

    @get("/", sync_to_thread=True)
    def home(
        self,
        request: AnyRequest,
        db: SessionDep,
        now: NowDep,
        team: FromQuery[str | None] = None,
        days: FromQuery[str | None] = None,
        start: Annotated[str | None, QueryParameter(name="from")] = None,
        end: Annotated[str | None, QueryParameter(name="to")] = None,
    ) -> Page:
        """The usage of one team over one range."""
        browser = access.session_of(db, request.cookies.get(SESSION_COOKIE), now)
        if browser is None:
            return _to_sign_in(request)
        teams = access.readable_teams(db, browser.principal)
        context: dict[str, Any] = {
            "browser": browser, "teams": teams, "presets": PRESETS, "error": None,
            "figures": None, "chart": None, "selected": None, "days": days or "",
        }  # fmt: skip
        if team is not None:
            context["selected"] = access.readable_team(db, browser.principal, team)
        elif teams:
            context["selected"] = teams[0]
        try:
            span = parse_range(days, start, end, now.date())
        except BadRequest as exc:
            context |= {"error": exc.detail, "start": start or "", "end": end or ""}
            return Template(template_name="dashboard.html", context=context, status_code=400)
        context |= {"start": span.start.isoformat(), "end": span.end.isoformat()}
        if context["selected"] is not None:
            prices = price_book(request.app.state.settings.pricing, now)
            figures = data.load(db, context["selected"], span, prices)
            context |= {"figures": figures, "chart": chart(figures.by_day)}
        return Template(template_name="dashboard.html", context=context)

    @get("/sign-in", sync_to_thread=True)
    def sign_in_page(self, request: AnyRequest, db: SessionDep, now: NowDep) -> Page:
        """Paste a read-usage API key (or use a link from ``tapes usage --open``)."""
        if access.session_of(db, request.cookies.get(SESSION_COOKIE), now) is not None:
            return Redirect("/dashboard", status_code=303)
        return _form_page(request, "sign_in.html", error=None)

    @post("/sign-in", sync_to_thread=True, guards=[count_attempt])
    def sign_in(
        self, request: AnyRequest, data: Annotated[KeyForm, FormBody], db: SessionDep,
        now: NowDep,
    ) -> Page:  # fmt: skip
        """Sign in with an API key; one message for every key refused."""
        access.require_csrf(request.cookies.get(PRE_COOKIE), data.csrf)
        try:
            secret = access.sign_in_with_key(
                db, data.api_key, now, request.cookies.get(SESSION_COOKIE)
            )
        except Unauthorized as exc:
            return _form_page(request, "sign_in.html", status=401, error=exc.detail)
        return _signed_in(request, secret, "/dashboard")

    @get("/link/{secret:str}", sync_to_thread=True, guards=[count_attempt])
    def link_page(
        self, request: AnyRequest, secret: FromPath[str], db: SessionDep, now: NowDep
    ) -> Template:
        """Whom the link signs in, and a button to do it: opening the link spends nothing (a
        link previewer cannot use it up)."""
        link = access.find_link(db, secret, now)
        user = db.get(User, link.user_id)
        handle = user.handle if user else ""
        return _form_page(request, "link.html", handle=handle, secret=secret)

    @post("/link/{secret:str}", sync_to_thread=True, guards=[count_attempt])
    def redeem(
        self, request: AnyRequest, secret: FromPath[str], data: Annotated[CsrfForm, FormBody],
        db: SessionDep, now: NowDep,
    ) -> Redirect:  # fmt: skip
        """Spend the link and sign in."""
        access.require_csrf(request.cookies.get(PRE_COOKIE), data.csrf)
        session, team = access.redeem_link(db, secret, now, request.cookies.get(SESSION_COOKIE))
        return _signed_in(request, session, f"/dashboard?team={team}" if team else "/dashboard")

    @post("/sign-out", sync_to_thread=True)
    def sign_out(
        self, request: AnyRequest, data: Annotated[CsrfForm, FormBody], db: SessionDep
    ) -> Redirect:
        """End the session (the row is deleted: the cookie names nothing any more)."""
        secret = request.cookies.get(SESSION_COOKIE)
        access.require_csrf(secret, data.csrf)
        access.end_session(db, secret)
        return Redirect(
            "/dashboard/sign-in", status_code=303,
            cookies=[expired_cookie(request, SESSION_COOKIE)],
        )  # fmt: skip

    @get("/{rest:path}", sync_to_thread=False)
    def not_found(self, rest: FromPath[str]) -> Template:
        """Any other path under /dashboard: an HTML 404 with the dashboard's headers."""
        raise NotFound("no such page")


class DashboardLinkController(Controller):
    path = "/api/v1/dashboard/links"
    tags = ["dashboard"]
    dependencies = AUTHENTICATED

    @openapi.post("/", sync_to_thread=True, status_code=201)
    def create(
        self, request: AnyRequest, data: JSONBody[DashboardLinkCreate], db: SessionDep,
        principal: PrincipalDep, now: NowDep,
    ) -> DashboardLinkOut:  # fmt: skip
        """A one-time link that signs a browser in to the usage dashboard (5 minutes, single
        use). Needs an interactive login; ``team`` must be one whose usage the caller reads."""
        secret = access.mint_link(db, principal, data.team, now)
        audience: str = request.app.state.audience
        return DashboardLinkOut(
            url=f"{audience}/dashboard/link/{secret}",
            expires_at=(now + access.LINK_TTL).isoformat(),
        )


def _static() -> Any:
    return create_static_files_router(
        path="/dashboard/static", directories=[STATIC], middleware=[SecurityHeaders],
        include_in_schema=False, name="dashboard-static",
    )  # fmt: skip


DASHBOARD_HANDLERS = [DashboardController, DashboardLinkController, _static()]
