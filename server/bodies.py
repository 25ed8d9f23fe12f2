"""What every request body and path must be before any handler sees it.

Litestar turns malformed JSON into a 400 itself, but msgspec raises two errors it does not
expect, and those were 500s: ``UnicodeDecodeError`` for a body that is not UTF-8 and
``RecursionError`` for one nested past the interpreter's limit (100,000 times ``[``). A NUL
character (``\\u0000`` in JSON, ``%00`` in a path) parses fine but cannot be stored in a
PostgreSQL text or jsonb column, so the same request failed there and succeeded on SQLite: no
field of this API takes one, and both backends refuse it up front.
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler

from server.errors import BadRequest

__all__ = ["JsonRequest", "refuse_nul_in_path"]

_NUL = "\x00"
_NO_NUL = "a NUL character (\\u0000) is not accepted anywhere in a request"


def _holds_nul(value: object) -> bool:
    """Whether any string in a decoded JSON value (keys included) holds a NUL. Iterative: the
    value may nest as deep as msgspec allows."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if _NUL in item:
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


class JsonRequest(Request[Any, Any, Any]):
    """The app's request class: its JSON body is UTF-8, nests within bounds and holds no NUL,
    or the request is a 400."""

    async def json(self) -> Any:
        try:
            value = await super().json()
        except UnicodeDecodeError:
            raise BadRequest("the request body is not valid UTF-8") from None
        except RecursionError:
            raise BadRequest("the request body nests too deeply") from None
        raw = await self.body()
        # A NUL reaches a decoded string only through the escape \u0000: skip the walk without one.
        if b"\\u0000" in raw and _holds_nul(value):
            raise BadRequest(_NO_NUL)
        return value


def refuse_nul_in_path(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard: a NUL in the path or the query string is a 400 (a path parameter goes to the
    database as it is)."""
    query = connection.scope["query_string"]
    if _NUL in connection.scope["path"] or b"%00" in query or b"\x00" in query:
        raise BadRequest(_NO_NUL)
