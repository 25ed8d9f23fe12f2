"""Vaults as the caller sees them (``GET /api/v1/teams``): the personal vault and team vaults."""

from __future__ import annotations

from litestar import Controller
from litestar.params import FromPath
from sqlalchemy import select

from server import acl
from server.db.models import Team, TeamMember
from server.deps import AUTHENTICATED, PrincipalDep, SessionDep
from server.openapi import get
from tapes_e2e.protocol import VaultOut

__all__ = ["VaultController"]


def _out(team: Team, member: TeamMember) -> VaultOut:
    return VaultOut(
        vault_id=team.id,
        name=team.name,
        kind="personal" if team.kind == "personal" else "team",
        role=member.role,
        tier=team.tier,
        head_seq=team.head_seq,
        node_count=team.node_count,
    )


class VaultController(Controller):
    path = "/api/v1/teams"
    tags = ["teams"]
    dependencies = AUTHENTICATED

    @get("/", sync_to_thread=True)
    def list_teams(self, db: SessionDep, principal: PrincipalDep) -> list[VaultOut]:
        """The caller's vaults: their personal vault and the teams they belong to."""
        rows = db.execute(
            select(Team, TeamMember)
            .join(TeamMember, TeamMember.team_id == Team.id)
            .where(TeamMember.user_id == principal.user_id, TeamMember.removed_at.is_(None))
            .order_by(Team.created_at)
        ).all()
        return [
            _out(team, member)
            for team, member in rows
            if principal.key_allows(team.id, "read-usage") or principal.key_allows(team.id, "pull")
        ]

    @get("/{team_id:str}", sync_to_thread=True)
    def get_team(self, team_id: FromPath[str], db: SessionDep, principal: PrincipalDep) -> VaultOut:
        """One vault of the caller's."""
        team, member = acl.require_vault(db, principal, team_id, "read-usage")
        return _out(team, member)
