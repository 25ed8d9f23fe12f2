"""HTTP of shared sessions: share, unshare, list (the RFC's TeamProvider).

- ``POST /api/v1/sessions/{id}/share`` — body ``{team, statement, expires_at?}``. ``{id}`` is the
  session's leaf node ID and must be a node the caller uploaded to that team's vault (404
  otherwise). The signed statement (``keymgmt.create_share``) is verified against the team's
  chain; the leaf's ancestry is materialized into ``share_nodes`` by one recursive query that
  follows only nodes the sharer may read themselves, so a share never exposes more than its
  sharer could see. The share takes the vault's next sequence number.
- ``DELETE /api/v1/sessions/{id}/share?team=`` — the sharer or an owner/admin revokes it; the
  nodes stop being readable at once.
- ``GET /api/v1/shared`` — live, unexpired shares of every team the caller reads content in.
- ``GET /api/v1/teams/{id}/sessions?after=&limit=`` — the same for one team, by share sequence.

Titles and notes stay inside the signed statement, encrypted under the team key; the server
returns the statement as stored.
"""

from __future__ import annotations

from typing import Annotated

from litestar import Controller
from litestar.params import JSONBody, Parameter

from server.deps import AUTHENTICATED, NowDep, PrincipalDep, SessionDep
from server.domain.shares.services import (
    MAX_PAGE,
    share_session,
    shared_with_caller,
    team_shares,
    unshare_session,
)
from server.openapi import After, Hex64Path, VaultQuery, delete, get, post
from tapes_e2e.protocol.teams import ShareCreate, ShareOut, SharePage

__all__ = ["ShareController", "SharedController"]


class ShareController(Controller):
    path = "/api/v1/sessions"
    tags = ["sharing"]
    dependencies = AUTHENTICATED

    @post("/{session_id:str}/share", sync_to_thread=True, status_code=201)
    def share(
        self, session_id: Hex64Path, data: JSONBody[ShareCreate], db: SessionDep,
        principal: PrincipalDep, now: NowDep,
    ) -> ShareOut:  # fmt: skip
        """Share the session ending at this leaf with a team (signed by the sharer)."""
        return share_session(db, principal, session_id, data, now)

    @delete("/{session_id:str}/share", sync_to_thread=True, status_code=204)
    def unshare(
        self, session_id: Hex64Path, team: VaultQuery, db: SessionDep, principal: PrincipalDep,
        now: NowDep,
    ) -> None:  # fmt: skip
        """Stop sharing the session with ``team``; its nodes are unreadable to others at once."""
        unshare_session(db, principal, session_id, team, now)


class SharedController(Controller):
    path = "/api/v1"
    tags = ["sharing"]
    dependencies = AUTHENTICATED

    @get("/shared", sync_to_thread=True)
    def shared(
        self, db: SessionDep, principal: PrincipalDep, now: NowDep,
        limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE)] = 500,
    ) -> list[ShareOut]:  # fmt: skip
        """Live shares of every team the caller reads content in, by team and sequence."""
        return shared_with_caller(db, principal, now, limit)

    @get("/teams/{team_id:str}/sessions", sync_to_thread=True)
    def team_sessions(
        self, team_id: VaultQuery, db: SessionDep, principal: PrincipalDep, now: NowDep,
        after: After = 0,
        limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE)] = 100,
    ) -> SharePage:  # fmt: skip
        """The sessions shared with one team (the RFC's ``SharedSessions``), by share sequence."""
        return team_shares(db, principal, team_id, now, after, limit)
