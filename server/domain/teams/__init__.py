"""Team vaults: ``controllers`` (HTTP), ``services`` (rules and SQL)."""

from server.domain.teams.controllers import (
    InviteController,
    TeamController,
    WellKnownController,
    create_team,
)
from server.domain.teams.services import append_statements

__all__ = [
    "InviteController",
    "TeamController",
    "WellKnownController",
    "append_statements",
    "create_team",
]
