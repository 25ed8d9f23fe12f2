"""The RFC's sharing types, as a member sees them (``TeamProvider`` returns and takes these)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["ShareOptions", "SharedSession"]


@dataclass(frozen=True, slots=True)
class ShareOptions:
    """How a session is shared: a title and note (encrypted for the team) and an optional expiry."""

    title: str = ""
    note: str = ""
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SharedSession:
    """A session shared with a team, as a member sees it."""

    session_id: str
    team_id: str
    shared_by: str
    title: str
    note: str
    shared_at: datetime
    expires_at: datetime | None
