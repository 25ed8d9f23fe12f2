"""The team, chain, invite and sharing controllers, registered by ``server.app.create_app``."""

from __future__ import annotations

from litestar.types import ControllerRouterHandler

from server.domain.shares import ShareController, SharedController
from server.domain.teams import InviteController, TeamController, create_team

__all__ = ["TEAM_CONTROLLERS"]

TEAM_CONTROLLERS: list[ControllerRouterHandler] = [
    create_team,
    TeamController,
    InviteController,
    ShareController,
    SharedController,
]
