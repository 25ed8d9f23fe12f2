"""Route decorators that put the error answers into the OpenAPI contract.

Every operation can answer with a problem+json error (RFC 9457); Litestar documents only the
success status and its own 400 unless told. ``get``/``post``/``delete`` here are Litestar's with
those responses declared, and every controller uses them, so the served schema — the contract —
lists each error status an operation may give, with its body.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated

import litestar
import msgspec
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter

from server.errors import PROBLEM_JSON
from tapes_e2e.protocol import MAX_SEQ

__all__ = [
    "ERROR_RESPONSES",
    "UNSUPPORTED_BODY",
    "After",
    "AfterSeqno",
    "Hex64Path",
    "Problem",
    "TeamPath",
    "VaultQuery",
    "delete",
    "get",
    "post",
]

# Parameters several areas' routes share: a team's id in a path, a chain cursor, a page's
# cursor (a sequence number, share number or audit entry id; clients refuse any above MAX_SEQ).
TeamPath = Annotated[str, Parameter(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
After = Annotated[int, Parameter(ge=0, le=MAX_SEQ)]
AfterSeqno = Annotated[int, Parameter(ge=-1, le=2**31 - 1)]
Hex64Path = Annotated[str, Parameter(pattern=r"^[0-9a-f]{64}$")]  # a keyed node id
VaultQuery = Annotated[str, Parameter(pattern=r"^[A-Za-z0-9_-]{1,64}$", max_length=64)]


class Problem(msgspec.Struct, frozen=True):
    """An RFC 9457 problem document: every error body of this API."""

    type: str
    title: str
    status: int
    detail: str


def _spec(description: str) -> ResponseSpec:
    return ResponseSpec(
        data_container=Problem,
        media_type=PROBLEM_JSON,
        description=description,
        generate_examples=False,
    )


ERROR_RESPONSES: dict[int, ResponseSpec] = {
    400: _spec("The request is malformed or inconsistent; nothing was stored."),
    401: _spec("Missing, expired or revoked credentials."),
    402: _spec("The team's plan refuses it."),
    403: _spec("Authenticated, but this role may not do it."),
    404: _spec("Absent, or not yours: the same answer for both."),
    409: _spec(
        "A conflict: the chain head moved, a name is taken, an invite was used, or a pushed "
        "node is sealed under a key epoch that is not the vault's current one."
    ),
    410: _spec("It existed but can no longer be used (an expired invite)."),
    413: _spec("The request body is too large."),
    429: _spec("Too many attempts; wait and retry."),
}

UNSUPPORTED_BODY = _spec("The body is in a form the route does not take; Accept-Post lists them.")

get = partial(litestar.get, responses=ERROR_RESPONSES)
post = partial(litestar.post, responses=ERROR_RESPONSES)
delete = partial(litestar.delete, responses=ERROR_RESPONSES)
