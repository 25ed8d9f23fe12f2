"""Usage: token counts from the clear metadata, for dashboards (``GET /api/v1/teams/{id}/usage``).

Readable by every live member including metadata viewers, and by API keys with ``read-usage``.
It reads only the clear metadata the team's policy lets clients send (model, provider, agent,
role, token counts) plus the server's own upload time and uploader — never a blob. Under the
``none`` policy there is nothing to count but nodes.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from litestar import Controller
from litestar.params import FromPath, Parameter
from sqlalchemy import BigInteger, ColumnElement, String, cast, func, select
from sqlalchemy.orm import Session

from server import acl
from server.db.models import NodeRecord, User
from server.deps import AUTHENTICATED, NowDep, PrincipalDep, SessionDep
from server.openapi import get
from tapes_e2e.protocol import UsagePage, UsageRow

__all__ = ["UsageController"]

MAX_RANGE = timedelta(days=400)
_TOKENS = ("prompt_tokens", "completion_tokens", "total_tokens")


def _token_sum(db: Session, name: str) -> ColumnElement[object]:
    """The sum of one token count. Each is below 2^53 (checked at push), but a 32-bit cast
    overflows at 2^31 and a team's sum can pass 2^63: PostgreSQL sums BIGINTs into NUMERIC,
    SQLite's ``total()`` into a double (exact up to 2^53, and never an overflow error)."""
    value = cast(NodeRecord.clear_metadata[name].as_string(), BigInteger)
    summed = func.total(value) if db.get_bind().dialect.name == "sqlite" else func.sum(value)
    return func.coalesce(summed, 0)


class UsageController(Controller):
    path = "/api/v1/teams/{team_id:str}/usage"
    tags = ["usage"]
    dependencies = AUTHENTICATED

    @get("/", sync_to_thread=True)
    def usage(
        self,
        team_id: FromPath[str],
        db: SessionDep,
        principal: PrincipalDep,
        now: NowDep,
        days: Annotated[int, Parameter(ge=1, le=MAX_RANGE.days)] = 30,
    ) -> UsagePage:
        """Nodes and tokens per day, model and uploader over the last ``days`` days."""
        team, _member = acl.require_vault(db, principal, team_id, "read-usage")
        since = now - timedelta(days=days)
        meta = NodeRecord.clear_metadata
        day = func.substr(func.cast(NodeRecord.uploaded_at, String), 1, 10)
        model = meta["model"].as_string()
        rows = db.execute(
            select(
                day.label("day"),
                model.label("model"),
                User.handle,
                func.count(),
                *(_token_sum(db, name) for name in _TOKENS),
            )
            .join(User, User.id == NodeRecord.uploader_id)
            .where(NodeRecord.vault_id == team.id, NodeRecord.uploaded_at >= since)
            .group_by(day, model, User.handle)
            .order_by(day, model, User.handle)
        ).all()
        return UsagePage(
            team_id=team.id,
            days=days,
            rows=[
                UsageRow(
                    day=str(r[0]),
                    model=r[1] or "",
                    member=r[2],
                    nodes=int(r[3]),
                    prompt_tokens=int(r[4]),
                    completion_tokens=int(r[5]),
                    total_tokens=int(r[6]),
                )
                for r in rows
            ],
        )
