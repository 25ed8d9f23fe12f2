"""Server errors. Each becomes an RFC 9457 problem+json response through one handler table.

::

    ServerError
    ├── SettingsError          bad configuration at start (never an HTTP response)
    ├── CommandError           a bad argument to a ``tapes-server`` command (unknown tier, handle)
    └── ApiError               an HTTP 4xx with a message written for the client's user
        ├── BadRequest (400)   malformed or inconsistent input
        ├── Unauthorized (401) no, expired or revoked credentials
        ├── Forbidden (403)    authenticated but not allowed; never says whether a thing exists
        ├── NotFound (404)     absent, or not yours: the same answer for both
        ├── Conflict (409)     a compare-and-swap lost (chain head moved), a used invite
        ├── Gone (410)         it existed but can no longer be used (an expired invite)
        ├── PayloadTooLarge (413)
        ├── UnsupportedMediaType (415) a body in a form the route does not take
        ├── PlanLimit (402)    the team's plan refuses it
        └── TooManyRequests (429)
"""

from __future__ import annotations

from litestar import Response

from tapes_e2e.protocol import Problem

__all__ = [
    "PROBLEM_JSON",
    "ApiError",
    "BadGateway",
    "BadRequest",
    "CommandError",
    "Conflict",
    "Forbidden",
    "Gone",
    "NotConfigured",
    "NotFound",
    "PayloadTooLarge",
    "PlanLimit",
    "ServerError",
    "SettingsError",
    "TooManyRequests",
    "Unauthorized",
    "UnsupportedMediaType",
    "problem",
]


class ServerError(Exception):
    pass


class SettingsError(ServerError):
    pass


class CommandError(ServerError):
    pass


class ApiError(ServerError):
    """``problem`` names the condition for clients that act on it (a :class:`Problem` URI);
    others are ``about:blank``, their status saying all a client needs."""

    status = 400
    title = "Bad Request"
    default_problem: str = "about:blank"
    headers: dict[str, str] | None = None  # sent with the problem (a 415's Accept-Post, say)

    def __init__(self, detail: str, *, problem: Problem | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.problem = str(problem) if problem is not None else self.default_problem


class BadRequest(ApiError):
    pass


class Unauthorized(ApiError):
    status, title = 401, "Unauthorized"


class Forbidden(ApiError):
    status, title = 403, "Forbidden"


class NotFound(ApiError):
    status, title = 404, "Not Found"


class Conflict(ApiError):
    status, title = 409, "Conflict"


class Gone(ApiError):
    status, title = 410, "Gone"


class PayloadTooLarge(ApiError):
    status, title = 413, "Payload Too Large"


class UnsupportedMediaType(ApiError):
    """The body's ``Content-Type`` is not one the route takes; ``accept_post`` lists those."""

    status, title = 415, "Unsupported Media Type"

    def __init__(self, detail: str, *, accept_post: str) -> None:
        super().__init__(detail)
        self.headers = {"Accept-Post": accept_post}


class PlanLimit(ApiError):
    status, title = 402, "Plan Limit Reached"
    default_problem = Problem.PLAN_LIMIT


class TooManyRequests(ApiError):
    status, title = 429, "Too Many Requests"


class BadGateway(ApiError):
    """A service this server relies on (GitHub) failed or answered nonsense."""

    status, title = 502, "Bad Gateway"


class NotConfigured(ApiError):
    """A feature this deployment has not set up (GitHub sign-in without its client id): its
    routes read as absent."""

    status, title = 404, "Not Found"


PROBLEM_JSON = "application/problem+json"
MAX_DETAIL = 300


def _one_line(detail: str) -> str:
    """A problem's detail as it is sent: one printable line, capped. Details quote what a caller
    sent (msgspec and Litestar name an unknown field, whose name may hold a newline)."""
    clean = "".join(c if c.isprintable() else "?" for c in detail)
    return clean if len(clean) <= MAX_DETAIL else clean[: MAX_DETAIL - 1] + "…"


def problem(error: ApiError) -> Response[dict[str, object]]:
    """The problem+json response for ``error`` (RFC 9457)."""
    body: dict[str, object] = {
        "type": error.problem,
        "title": error.title,
        "status": error.status,
        "detail": _one_line(error.detail),
    }
    return Response(body, status_code=error.status, media_type=PROBLEM_JSON, headers=error.headers)
