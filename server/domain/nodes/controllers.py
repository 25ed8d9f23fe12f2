"""HTTP of nodes and sync: push, pull by cursor, status, single nodes, ancestry, sessions.

- ``POST /api/v1/sync/push`` (and ``POST /api/v1/nodes``, the RFC's single-node path, which takes
  the same batch body): a bounded batch of envelopes, atomic, parents before children (or already
  stored); an ID already stored is reported as ``existing`` and not touched. Each stored node gets
  the vault's next sequence number, taken under a lock on the vault row. A new node sealed under
  another key epoch than the vault's current one (``Team.epoch``, which follows the verified
  chain) is refused with 409, and the batch stores nothing. The sync path takes the batch in
  JSON or in MessagePack (by ``Content-Type``; any other is a 415), and ``OPTIONS`` on it lists
  both in ``Accept-Post``, so a client asks before it sends the binary form.
- ``GET /api/v1/sync/pull?vault=&after=&limit=``: what the caller may read with ``seq > after``,
  ``limit`` at a time; ``cursor`` is the last sequence number looked at, so an up-to-date client
  costs one small request.
- ``GET /api/v1/sync/status``: head sequence and node count from the vault row, and how many
  rows the caller may read after ``after`` (one count on the (vault, seq) index).
- ``/api/v1/sync/reseal``: ``tapes team reencrypt`` seals the caller's own history again under
  the vault's current epoch (``server.domain.nodes.reseal``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, Final, TypeAlias, cast

import anyio
import msgspec
from litestar import Controller, HttpMethod, MediaType, Request, Response, route
from litestar.datastructures import ResponseHeader, State
from litestar.di import NamedDependency, Provide
from litestar.openapi.spec import OpenAPIMediaType, Operation, Reference, RequestBody, Schema
from litestar.params import JSONBody, Parameter
from sqlalchemy.orm import Session

from server.deps import (
    AUTHENTICATED,
    WRITES,
    NowDep,
    PlansDep,
    PrincipalDep,
    SessionDep,
    request_transaction,
)
from server.domain.nodes import reseal, services
from server.domain.nodes.services import MAX_PAGE
from server.errors import BadRequest, UnsupportedMediaType
from server.openapi import (
    ERROR_RESPONSES,
    UNSUPPORTED_BODY,
    After,
    Hex64Path,
    VaultQuery,
    get,
    post,
)
from tapes_e2e.protocol import (
    MSGPACK,
    PUSH_FORMS,
    AncestryPage,
    AnyPushRequest,
    NodeOut,
    PackedPushRequest,
    PullPage,
    PushRequest,
    PushResult,
    ResealRequest,
    ResealResult,
    ResealStatus,
    SessionPage,
    SyncStatusOut,
)

__all__ = ["NodeController", "SyncController", "decode_push"]

_msgpack: Final = msgspec.msgpack.Encoder().encode
_VARY: Final = {"Vary": "Accept"}  # a cache keeps the two forms of one page apart

# --- the push body, in either form ---------------------------------------------------------

ACCEPT_POST: Final = ", ".join(PUSH_FORMS)
_PUSH_DECODERS: Final[dict[str, msgspec.json.Decoder[Any] | msgspec.msgpack.Decoder[Any]]] = {
    MediaType.JSON: msgspec.json.Decoder(PushRequest),
    MSGPACK: msgspec.msgpack.Decoder(PackedPushRequest),
}


class Batch:
    """A decoded push batch, as a dependency hands it over: Litestar checks a dependency's value
    against its declared type with ``msgspec.convert``, which would walk the whole batch again
    (and refuses a union of two structs); an instance of a plain class passes as it is."""

    __slots__ = ("request",)

    def __init__(self, request: AnyPushRequest) -> None:
        self.request = request


BatchDep: TypeAlias = NamedDependency[Batch]


def push_form(content_type: str) -> str:
    """The push body's form from its ``Content-Type``: JSON without one (as before MessagePack
    was taken), else one of ``PUSH_FORMS``, else 415 with the list in ``Accept-Post``."""
    media = content_type.partition(";")[0].strip().lower()
    if not media:
        return MediaType.JSON
    if media not in _PUSH_DECODERS:
        raise UnsupportedMediaType(f"a push body is one of {ACCEPT_POST}", accept_post=ACCEPT_POST)
    return media


def decode_push(body: bytes, form: str) -> AnyPushRequest:
    """The batch ``body`` holds, checked against the wire types of ``form``; 400 with msgspec's
    reason (which names the field) for anything else."""
    try:
        batch: AnyPushRequest = _PUSH_DECODERS[form].decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # ValidationError is a DecodeError
        raise BadRequest(f"the push body is not a valid batch: {exc}") from None
    return batch


async def provide_batch(request: Request[Any, Any, State]) -> Batch:
    """The push's batch, decoded in a worker thread (off the event loop) before the request
    takes its database turn: a slow decode never holds SQLite's write queue."""
    form = push_form(request.headers.get("content-type", ""))
    body = await request.body()
    return Batch(await anyio.to_thread.run_sync(decode_push, body, form))


async def provide_push_db(
    request: Request[object, object, State], state: State, batch: BatchDep
) -> AsyncIterator[Session]:
    """The request's transaction (``provide_db``'s), begun only once ``batch`` is decoded."""
    del batch  # named only so that it is resolved first
    async with request_transaction(request, state) as session:
        yield session


@dataclass
class _PushOperation(Operation):
    """The push's contract: it reads its body itself (it has two forms), so Litestar would
    document none. JSON is described by ``PushRequest``; MessagePack is the same batch with
    each envelope a ``PackedEnvelope`` array."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            content={
                MediaType.JSON: OpenAPIMediaType(
                    schema=Reference(ref="#/components/schemas/PushRequest")
                ),
                MSGPACK: OpenAPIMediaType(
                    schema=Schema(
                        description=(
                            "The PushRequest in MessagePack: a map of vault and envelopes, "
                            "each envelope an array of EnvelopeWire's fields in order, with "
                            "nonce, ciphertext and signature as bin."
                        )
                    )
                ),
            },
        )


class SyncController(Controller):
    path = "/api/v1/sync"
    tags = ["sync"]
    dependencies = AUTHENTICATED

    @post(
        "/push",
        status_code=200,
        operation_class=_PushOperation,
        responses={**ERROR_RESPONSES, 415: UNSUPPORTED_BODY},
        dependencies={"batch": Provide(provide_batch), "db": Provide(provide_push_db)},
    )
    async def push(
        self, batch: BatchDep, db: SessionDep, principal: PrincipalDep, now: NowDep,
        plans_mode: PlansDep,
    ) -> PushResult:  # fmt: skip
        """Store a batch of envelopes atomically; already-stored IDs are no-ops. The body is
        JSON or MessagePack (``Content-Type``); ``OPTIONS`` lists both in ``Accept-Post``."""
        return await anyio.to_thread.run_sync(
            services.push, db, principal, batch.request, now, plans_mode
        )

    @route(
        "/push",
        http_method=HttpMethod.OPTIONS,
        status_code=204,
        sync_to_thread=False,
        responses={401: ERROR_RESPONSES[401]},
        response_headers=[
            ResponseHeader(
                name="Accept-Post",
                value=ACCEPT_POST,
                description="The media types a push body may come in.",
            ),
            ResponseHeader(name="Allow", value="OPTIONS, POST"),
        ],
    )
    def options_push(self, principal: PrincipalDep) -> None:
        """What ``POST /push`` takes, in ``Accept-Post``: a client asks before it sends
        MessagePack (an older server lists only JSON, or has no ``Accept-Post`` at all).

        Litestar registers a controller's handlers in name order and gives a path without an
        ``OPTIONS`` handler its own: this one's name sorts before ``push`` so that it is there
        first (``test_binary_push`` fails if Litestar's bare ``OPTIONS`` answers instead)."""
        del principal  # any caller may ask; it is named so the guard asks for credentials

    @get("/pull", sync_to_thread=True)
    def pull(
        self, request: Request[Any, Any, Any], db: SessionDep, principal: PrincipalDep,
        now: NowDep, vault: VaultQuery, after: After = 0,
        limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE)] = 500,
    ) -> Response[PullPage]:  # fmt: skip
        """Envelopes readable by the caller with a sequence number above ``after``. JSON, or
        with ``Accept: application/vnd.msgpack`` the same page in MessagePack, each envelope
        packed (``keymgmt.PackedEnvelope``: byte fields as bytes, ~0.72 of the JSON)."""
        packed = request.accept.best_match([MediaType.JSON, MSGPACK]) == MSGPACK
        page, packed = services.pull_page(db, principal, vault, after, limit, now, packed=packed)
        if packed:
            encoded = cast(PullPage, _msgpack(page))  # the page, already encoded
            return Response(encoded, media_type=MSGPACK, headers=_VARY)
        return Response(page, headers=_VARY)

    @get("/status", sync_to_thread=True)
    def status(
        self, db: SessionDep, principal: PrincipalDep, now: NowDep, vault: VaultQuery,
        after: After = 0,
    ) -> SyncStatusOut:  # fmt: skip
        """Head sequence and counts; what is left to pull after ``after``, counted."""
        return services.sync_status(db, principal, vault, after, now)

    @get("/reseal", sync_to_thread=True)
    def reseal_status(
        self, db: SessionDep, principal: PrincipalDep, vault: VaultQuery
    ) -> ResealStatus:
        """How many encrypted nodes are under an older epoch: the caller's and others'."""
        return reseal.status(db, principal, vault)

    @get("/reseal/nodes", sync_to_thread=True)
    def reseal_nodes(
        self, db: SessionDep, principal: PrincipalDep, vault: VaultQuery, after: After = 0,
        limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE)] = 500,
    ) -> PullPage:  # fmt: skip
        """The caller's own encrypted nodes under an older epoch, parents first."""
        return reseal.stale_page(db, principal, vault, after, limit)

    @post("/reseal", sync_to_thread=True, status_code=200)
    def reseal(
        self, data: JSONBody[ResealRequest], db: SessionDep, principal: PrincipalDep,
        now: NowDep,
    ) -> ResealResult:  # fmt: skip
        """Swap the caller's own stale nodes for the same nodes sealed under the current epoch
        (tapes team reencrypt); shares and old IDs keep finding them."""
        return ResealResult(resealed=reseal.reseal(db, principal, data, now))


class NodeController(Controller):
    path = "/api/v1"
    tags = ["nodes"]
    dependencies = AUTHENTICATED

    @post("/nodes", sync_to_thread=True, status_code=200)
    def create_nodes(
        self, data: JSONBody[PushRequest], db: SessionDep, principal: PrincipalDep, now: NowDep,
        plans_mode: PlansDep,
    ) -> PushResult:  # fmt: skip
        """Create or sync nodes (the RFC's path; same body and rules as sync/push)."""
        return services.push(db, principal, data, now, plans_mode)

    # These three audit a read that reached the caller through a share: they take the write path.
    @get("/nodes/{node_id:str}", sync_to_thread=True, opt={WRITES: True})
    def get_node(
        self, node_id: Hex64Path, db: SessionDep, principal: PrincipalDep, now: NowDep
    ) -> NodeOut:
        """One envelope by its keyed node ID."""
        return services.node(db, principal, node_id, now)

    @get("/nodes/{node_id:str}/ancestry", sync_to_thread=True, opt={WRITES: True})
    def ancestry(
        self, node_id: Hex64Path, db: SessionDep, principal: PrincipalDep, now: NowDep,
        limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE)] = MAX_PAGE,
    ) -> AncestryPage:  # fmt: skip
        """The node and its ancestors, node first, at most ``limit`` of them and
        ``MAX_PAGE_BYTES`` of envelopes (one bounded recursive query); ``next`` continues."""
        return services.ancestry(db, principal, node_id, now, limit)

    @get("/sessions", sync_to_thread=True)
    def sessions(
        self, db: SessionDep, principal: PrincipalDep, now: NowDep, vault: VaultQuery,
        after: After = 0, limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE)] = 100,
    ) -> SessionPage:  # fmt: skip
        """Sessions (leaf nodes) of a vault readable by the caller, paginated by sequence."""
        return services.sessions_page(db, principal, vault, after, limit, now)

    @get("/sessions/{session_id:str}", sync_to_thread=True, opt={WRITES: True})
    def session(
        self, session_id: Hex64Path, db: SessionDep, principal: PrincipalDep, now: NowDep,
        limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE)] = MAX_PAGE,
    ) -> AncestryPage:  # fmt: skip
        """A session: its leaf and its ancestors, paged as the node's ancestry."""
        return services.ancestry(db, principal, session_id, now, limit)
