"""HTTP of nodes and sync: push, pull by cursor, status, single nodes, ancestry, sessions.

- ``POST /api/v1/sync/push`` (and ``POST /api/v1/nodes``, the RFC's single-node path, which takes
  the same batch body): a bounded batch of envelopes, atomic, parents before children (or already
  stored); an ID already stored is reported as ``existing`` and not touched. Each stored node gets
  the vault's next sequence number, taken under a lock on the vault row. A new node sealed under
  another key epoch than the vault's current one (``Team.epoch``, which follows the verified
  chain) is refused with 409, and the batch stores nothing.
- ``GET /api/v1/sync/pull?vault=&after=&limit=``: what the caller may read with ``seq > after``,
  ``limit`` at a time; ``cursor`` is the last sequence number looked at, so an up-to-date client
  costs one small request.
- ``GET /api/v1/sync/status``: head sequence and node count from the vault row, and how many
  rows the caller may read after ``after`` (one count on the (vault, seq) index).
- ``/api/v1/sync/reseal``: ``tapes team reencrypt`` seals the caller's own history again under
  the vault's current epoch (``server.domain.nodes.reseal``).
"""

from __future__ import annotations

from typing import Annotated, Any, Final, cast

import msgspec
from litestar import Controller, MediaType, Request, Response
from litestar.params import JSONBody, Parameter

from server.deps import AUTHENTICATED, WRITES, NowDep, PlansDep, PrincipalDep, SessionDep
from server.domain.nodes import reseal, services
from server.domain.nodes.services import MAX_PAGE
from server.openapi import Hex64Path, VaultQuery, get, post
from tapes_e2e.protocol import (
    MSGPACK,
    AncestryPage,
    NodeOut,
    PullPage,
    PushRequest,
    PushResult,
    ResealRequest,
    ResealResult,
    ResealStatus,
    SessionPage,
    SyncStatusOut,
)

__all__ = ["NodeController", "SyncController"]

After = Annotated[int, Parameter(ge=0, le=2**62)]
_msgpack: Final = msgspec.msgpack.Encoder().encode
_VARY: Final = {"Vary": "Accept"}  # a cache keeps the two forms of one page apart


class SyncController(Controller):
    path = "/api/v1/sync"
    tags = ["sync"]
    dependencies = AUTHENTICATED

    @post("/push", sync_to_thread=True, status_code=200)
    def push(
        self, data: JSONBody[PushRequest], db: SessionDep, principal: PrincipalDep, now: NowDep,
        plans_mode: PlansDep,
    ) -> PushResult:  # fmt: skip
        """Store a batch of envelopes atomically; already-stored IDs are no-ops."""
        return services.push(db, principal, data, now, plans_mode)

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
