"""``GET /api/v1/teams/{id}/usage``: a vault's usage from clear metadata, as JSON or CSV.

Readable by a team's owner, admins and viewers, a personal vault's owner, and API keys with
``read-usage`` of such a user (``acl.require_usage``); it never reads an envelope.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from litestar import Controller, Response
from litestar.datastructures import State
from litestar.params import FromPath, QueryParameter

from server import acl
from server.deps import AUTHENTICATED, NowDep, PrincipalDep, SessionDep
from server.domain.usage import services
from server.domain.usage.pricing import Price, PriceBook, load_overrides
from server.domain.usage.schemas import parse_query
from server.openapi import get
from tapes_e2e.protocol.usage import UsageReport, to_csv

__all__ = ["UsageController"]

_Text = Annotated[str | None, QueryParameter(max_length=64)]


@lru_cache(maxsize=4)
def _overrides(path: str, _changed: int) -> dict[str, Price]:
    return load_overrides(path)


def price_book(path: str, now: datetime) -> PriceBook:
    """Prices with the override file at ``path`` (read again when it changes)."""
    changed = Path(path).stat().st_mtime_ns if path else 0
    return PriceBook(_overrides(path, changed), now)


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
        state: State,
        start: Annotated[str | None, QueryParameter(name="from", max_length=64)] = None,
        to: _Text = None,
        tz: _Text = None,
        group_by: Annotated[str | None, QueryParameter(max_length=200)] = None,
        format: Annotated[Literal["json", "csv"], QueryParameter()] = "json",  # noqa: A002 - the API's parameter name
    ) -> Response[UsageReport | str]:
        """Nodes, sessions, tokens and cost from ``from`` to ``to`` (dates or ISO times, read in
        ``tz``), grouped by ``group_by`` (comma-separated: member, model, provider, agent,
        project, day, hour); tokens of models with no price are in ``unpriced``."""
        vault = acl.require_usage(db, principal, team_id)
        query = parse_query(start=start, end=to, tz=tz, group_by=group_by, now=now)
        report = services.report(db, vault, query, price_book(state.settings.pricing, now))
        if format == "csv":
            name = f"usage-{vault.id}.csv"
            return Response(
                to_csv(report), media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": f'attachment; filename="{name}"'},
            )  # fmt: skip
        return Response(report)
