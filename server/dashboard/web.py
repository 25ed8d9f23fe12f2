"""The dashboard's web plumbing: its security headers, cookies, templates and error pages.

Every response under ``/dashboard`` (pages, errors, static files) carries a strict
Content-Security-Policy: scripts and styles only from this origin's files (no inline script
or style anywhere, so htmx's own indicator style is turned off in its config), no framing, no
plugins, forms posting only here. Jinja autoescapes every template, SVG included: every
string a member can choose (a model name, a handle) is attacker-controlled. Every printed
string shows its control characters as escapes first (``_shown``), and names sit in ``<bdi>``
where they run into other text, so right-to-left script in one reorders nothing beside it.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from litestar import Request
from litestar.datastructures import Cookie, MutableScopeHeaders, State
from litestar.exceptions import HTTPException, ValidationException
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Template
from litestar.template import TemplateConfig
from litestar.types import ASGIApp, ExceptionHandlersMap, Message, Receive, Scope, Send
from markupsafe import Markup

from server.errors import ApiError
from server.settings import Settings
from tapes_e2e.protocol.text import visible

__all__ = [
    "CSP",
    "HTML_ERRORS",
    "PRE_COOKIE",
    "SESSION_COOKIE",
    "STATIC",
    "SecurityHeaders",
    "cookie",
    "expired_cookie",
    "template_config",
]

log = logging.getLogger("tapes.server.dashboard")

HERE = Path(__file__).parent
STATIC = HERE / "static"
SESSION_COOKIE = "tapes_dashboard"
PRE_COOKIE = "tapes_dashboard_pre"  # the CSRF secret of the sign-in forms, before a session
COOKIE_PATH = "/dashboard"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


class SecurityHeaders:
    """ASGI middleware of the dashboard's routes: the headers above on every response, error
    pages included (Litestar puts an exception handler inside route middleware)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableScopeHeaders.from_message(message)
                for name, value in _HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _secure(settings: Settings) -> bool:
    return settings.audience.startswith("https://")


def cookie(request: Request[Any, Any, Any], name: str, value: str, max_age: int) -> Cookie:
    """HttpOnly, SameSite=Strict, Path=/dashboard, Secure when the public URL is https."""
    return Cookie(
        key=name, value=value, path=COOKIE_PATH, max_age=max_age, httponly=True,
        samesite="strict", secure=_secure(request.app.state.settings),
    )  # fmt: skip


def expired_cookie(request: Request[Any, Any, Any], name: str) -> Cookie:
    return cookie(request, name, "", 0)


def _number(value: int) -> str:
    return f"{value:,}"


def _money(value: Decimal | None) -> str:
    return "not priced" if value is None else f"${value:,.2f}"


def _shown(value: Any) -> Any:
    """Every value a template prints, before it is escaped: a string with its control
    characters shown as escapes (a bidirectional override in a model name reorders nothing
    around it). The output of a macro is this page's own markup, built of shown values."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return visible(value)
    return value


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=True,
        finalize=_shown,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _number
    env.filters["money"] = _money
    return env


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(_environment()))


def _error_page(status: int, message: str) -> Template:
    return Template(
        template_name="error.html",
        context={"status": status, "message": message, "browser": None},
        status_code=status,
    )


def _api_error(_request: Request[Any, Any, State], exc: ApiError) -> Template:
    return _error_page(exc.status, exc.detail)


def _validation(_request: Request[Any, Any, State], _exc: ValidationException) -> Template:
    return _error_page(400, "the request does not match this page's form; reload and try again")


def _http(_request: Request[Any, Any, State], exc: HTTPException) -> Template:
    message = "no such page" if exc.status_code == 404 else str(exc.detail)
    return _error_page(exc.status_code, message)


def _internal(request: Request[Any, Any, State], exc: Exception) -> Template:
    log.error("internal error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
    return _error_page(500, "the server failed; the error is logged")


HTML_ERRORS: ExceptionHandlersMap = {
    ApiError: _api_error,
    ValidationException: _validation,
    HTTPException: _http,
    Exception: _internal,
}
