"""The adapter: the dashboard's figures from the usage service, the same numbers as
``GET /api/v1/teams/{id}/usage`` (:func:`server.domain.usage.services.report`: the aggregate
kept at push, counted on the day the work happened, priced by genai-prices and the server's
override file, tokens of unknown models in the unpriced bucket).

This is the one module that knows where the numbers come from; it asks the service once per
breakdown over whole UTC days and folds each report into :class:`Figures`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from sqlalchemy.orm import Session

from server.dashboard.figures import Bucket, DayPoint, Figures, Policy, Range, TeamChoice
from server.db.models import Team
from server.domain.usage import labels, services
from server.domain.usage.pricing import PriceBook
from server.domain.usage.schemas import UsageQuery
from tapes_e2e.protocol.usage import GroupKey, UsageFigures, UsageReport

__all__ = ["SHOWN", "UNPRICED_SHOWN", "load"]

SHOWN = 50
"""Rows of a breakdown shown one by one; the rest are one row of their sums."""
UNPRICED_SHOWN = 20
"""Unpriced models named in the note above the chart; the rest are counted."""
_NAMES: dict[labels.Kind, str] = {"model": "models", "agent": "harnesses", "project": "projects"}


def _cost(figures: UsageFigures) -> Decimal | None:
    """What a group cost, or ``None`` ("not priced", never $0) when nothing of it could be
    priced: a model no price table knows, or tokens sent only as a total, without the prompt,
    completion and cache counts a price applies to."""
    return figures.cost_usd if figures.cost_usd > 0 else None


def _bucket(label: str | None, figures: UsageFigures, detail: str | None = None) -> Bucket:
    """A group's figures, its cost from :func:`_cost`."""
    return Bucket(
        label=label or None,
        detail=detail or None,
        nodes=figures.nodes,
        prompt_tokens=figures.prompt_tokens,
        completion_tokens=figures.completion_tokens,
        cache_creation_tokens=figures.cache_creation_input_tokens,
        cache_read_tokens=figures.cache_read_input_tokens,
        total_tokens=figures.total_tokens,
        cost=_cost(figures),
    )


def _ranked(report: UsageReport, *keys: GroupKey) -> list[Bucket]:
    """The report's groups, the largest first: the first :data:`SHOWN`, then one row of the
    rest's sums. A page stays short however many models, harnesses or projects a vault names
    (each kind is capped per vault too: ``server.domain.usage.labels``); the usage API and its
    CSV list every group."""
    found = sorted(
        (
            _bucket(
                row.group.get(keys[0]), row.figures, row.group.get(keys[1]) if keys[1:] else None
            )
            for row in report.rows
        ),
        key=lambda b: (-b.total_tokens, -b.nodes, b.label or ""),
    )
    if len(found) <= SHOWN:
        return found
    rest = Bucket(more=len(found) - SHOWN)
    for b in found[SHOWN:]:
        rest.nodes += b.nodes
        rest.prompt_tokens += b.prompt_tokens
        rest.completion_tokens += b.completion_tokens
        rest.cache_creation_tokens += b.cache_creation_tokens
        rest.cache_read_tokens += b.cache_read_tokens
        rest.total_tokens += b.total_tokens
        if b.cost is not None:
            rest.cost = (rest.cost or Decimal(0)) + b.cost
    return [*found[:SHOWN], rest]


def load(db: Session, team: TeamChoice, span: Range, prices: PriceBook) -> Figures:
    """The figures of ``team`` over ``span`` (whole UTC days). The caller checked the reader
    may see them."""
    vault = db.get(Team, team.team_id)
    assert vault is not None  # noqa: S101 - access.readable_team found it in this transaction
    start = datetime.combine(span.start, time.min, UTC)
    end = datetime.combine(span.end + timedelta(days=1), time.min, UTC)

    def run(*keys: GroupKey) -> UsageReport:
        return services.report(db, vault, UsageQuery(start, end, UTC, "UTC", keys), prices)

    daily = run("day")
    totals = daily.totals or _EMPTY
    per_day = {row.group.get("day"): row.figures for row in daily.rows}
    days = [span.start + timedelta(days=i) for i in range(span.days)]
    policy = Policy(daily.metadata_policy, daily.content_policy)
    unpriced = Bucket(label="unpriced", nodes=totals.unpriced_nodes)
    unpriced.total_tokens = totals.unpriced_tokens
    unpriced_models = sorted({m.model for m in daily.unpriced if m.model})
    by_model, by_agent = run("model", "provider"), run("agent")
    by_project = run("project") if policy.metadata == "full" else None
    named: dict[labels.Kind, UsageReport | None] = {
        "model": by_model, "agent": by_agent, "project": by_project,
    }  # fmt: skip
    folded = [
        f"{labels.CAPS[kind]:,} {_NAMES[kind]}"
        for kind, report in named.items()
        if report is not None and kind in report.folded_keys()
    ]
    return Figures(
        team=team,
        range=span,
        policy=policy,
        totals=_bucket("all", totals),
        unpriced=unpriced,
        unpriced_models=unpriced_models[:UNPRICED_SHOWN],
        unpriced_more=max(len(unpriced_models) - UNPRICED_SHOWN, 0),
        folded=folded,
        by_day=[_point(day, per_day.get(day.isoformat())) for day in days],
        by_member=_ranked(run("member"), "member"),
        by_model=_ranked(by_model, "model", "provider"),
        by_agent=_ranked(by_agent, "agent"),
        by_project=_ranked(by_project, "project") if by_project else [],
        upload_dated_nodes=totals.upload_timed_nodes,
        priced=True,
    )


def _point(day: date, figures: UsageFigures | None) -> DayPoint:
    if figures is None:
        return DayPoint(day, 0, None)
    return DayPoint(day, figures.total_tokens, _cost(figures))


_EMPTY = UsageFigures(
    nodes=0, sessions=0, prompt_tokens=0, completion_tokens=0, cache_creation_input_tokens=0,
    cache_read_input_tokens=0, total_tokens=0, upload_timed_nodes=0, cost_usd=Decimal(0),
    cache_savings_usd=Decimal(0), unpriced_tokens=0, unpriced_nodes=0,
)  # fmt: skip
