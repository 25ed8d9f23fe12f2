"""The adapter: the dashboard's figures from what the server holds today.

This is the one module that knows where the numbers come from. Today it groups ``nodes``'
clear metadata in SQL (the data ``server.domain.usage`` reads: ``NodeRecord.clear_metadata``)
and folds the groups into :class:`~server.dashboard.figures.Figures` in Python:

- a node counts on the day its work happened: its ``created_at`` (the hour under ``coarse``,
  the exact time under ``full``), in UTC; a node without one (the ``none`` policy) counts on
  its upload day, and the page says how many did;
- groups: member (the uploader's handle), model with its provider, harness (``agent_name``),
  project (sent under ``full`` only), day;
- cost: no price source is consulted here, so every token is in the unpriced bucket and cost
  reads "not priced", never $0.

When ``server.domain.usage.services.report(db, vault, query)`` lands (branch ``usage``: cost
from genai-prices, the unpriced bucket, the policy), :func:`load` becomes a call to it and a
conversion of its ``UsageReport`` into ``Figures``; nothing else of the dashboard changes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, String, and_, cast, func, or_, select
from sqlalchemy.orm import Session

from server.dashboard.figures import Bucket, DayPoint, Figures, Policy, Range, TeamChoice
from server.db.models import ChainStatement, NodeRecord, User

__all__ = ["load", "policy"]

_TOKENS = (
    ("prompt_tokens", "prompt_tokens"),
    ("completion_tokens", "completion_tokens"),
    ("cache_creation_input_tokens", "cache_creation_tokens"),
    ("cache_read_input_tokens", "cache_read_tokens"),
    ("total_tokens", "total_tokens"),
)


def _token_sum(db: Session, name: str) -> ColumnElement[Any]:
    """A sum that neither overflows nor fails (as ``server.domain.usage`` sums): counts are
    below 2^53 (checked at push); SQLite's ``total()`` is a double, PostgreSQL sums NUMERIC."""
    value = cast(NodeRecord.clear_metadata[name].as_string(), BigInteger)
    summed = func.total(value) if db.get_bind().dialect.name == "sqlite" else func.sum(value)
    return func.coalesce(summed, 0)


def policy(db: Session, team_id: str) -> Policy:
    """The policy the team's chain sets last (its genesis, then any ``change_policy``). The
    server stored each statement after verifying it; a vault without a chain yet is on the
    defaults."""
    found = Policy("coarse", "encrypted")
    bodies = db.scalars(
        select(ChainStatement.statement)
        .where(ChainStatement.team_id == team_id)
        .order_by(ChainStatement.seqno)
    )
    for statement in bodies:
        try:
            body = json.loads(str(statement.get("body", "")))
        except ValueError:
            continue
        if isinstance(body, dict):
            found = Policy(
                str(body.get("metadata_policy") or found.metadata),
                str(body.get("content_policy") or found.content),
            )
    return found


def _when(created: object, uploaded_day: object) -> tuple[date, bool]:
    """The UTC day a group's work happened, and whether that is only its upload day."""
    if isinstance(created, str):
        try:
            moment = datetime.fromisoformat(created)
        except ValueError:
            pass
        else:
            aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
            return aware.astimezone(UTC).date(), False
    return date.fromisoformat(str(uploaded_day)[:10]), True


def _add(bucket: Bucket, nodes: int, tokens: dict[str, int]) -> None:
    bucket.nodes += nodes
    for _, name in _TOKENS:
        setattr(bucket, name, getattr(bucket, name) + tokens[name])


def _ranked(groups: dict[Any, Bucket]) -> list[Bucket]:
    return sorted(groups.values(), key=lambda b: (-b.total_tokens, -b.nodes, b.label or ""))


def _rows(db: Session, team_id: str, span: Range) -> Iterable[Any]:
    meta = NodeRecord.clear_metadata
    created = meta["created_at"].as_string()
    uploaded_day = func.substr(func.cast(NodeRecord.uploaded_at, String), 1, 10)
    dims = (
        User.handle,
        meta["model"].as_string(),
        meta["provider"].as_string(),
        meta["agent_name"].as_string(),
        meta["project"].as_string(),
        created,
    )
    # Nodes dated by their upload are filtered in SQL; a created_at (attacker-chosen text that
    # only has to parse as ISO 8601) is compared once parsed, below.
    start = datetime.combine(span.start, datetime.min.time(), UTC)
    end = datetime.combine(span.end + timedelta(days=1), datetime.min.time(), UTC)
    in_range = and_(NodeRecord.uploaded_at >= start, NodeRecord.uploaded_at < end)
    return db.execute(
        select(*dims, uploaded_day, func.count(), *(_token_sum(db, f) for f, _ in _TOKENS))
        .join(User, User.id == NodeRecord.uploader_id)
        .where(NodeRecord.vault_id == team_id, or_(created.is_not(None), in_range))
        .group_by(*dims, uploaded_day)
    ).all()


def load(db: Session, team: TeamChoice, span: Range) -> Figures:
    """The figures of ``team`` over ``span``. The caller checked the reader may see them."""
    totals, unpriced = Bucket(label="all"), Bucket(label="unpriced")
    members: dict[str, Bucket] = {}
    models: dict[tuple[str | None, str | None], Bucket] = {}
    agents: dict[str | None, Bucket] = {}
    projects: dict[str | None, Bucket] = {}
    days = {span.start + timedelta(days=i): 0 for i in range(span.days)}
    upload_dated = 0
    for handle, model, provider, agent, project, created, uploaded, count, *sums in _rows(
        db, team.team_id, span
    ):
        day, by_upload = _when(created, uploaded)
        if day not in days:
            continue
        nodes = int(count)
        tokens = {name: int(value) for (_, name), value in zip(_TOKENS, sums, strict=True)}
        upload_dated += nodes if by_upload else 0
        days[day] += tokens["total_tokens"]
        for bucket in (
            totals,
            unpriced,  # no price source yet: every token is unpriced
            members.setdefault(handle, Bucket(label=handle)),
            models.setdefault((model, provider), Bucket(label=model, detail=provider)),
            agents.setdefault(agent, Bucket(label=agent)),
            projects.setdefault(project, Bucket(label=project)),
        ):
            _add(bucket, nodes, tokens)
    return Figures(
        team=team,
        range=span,
        policy=policy(db, team.team_id),
        totals=totals,
        unpriced=unpriced,
        unpriced_models=sorted({m for m, _ in models if m is not None}),
        by_day=[DayPoint(day, total, None) for day, total in sorted(days.items())],
        by_member=_ranked(members),
        by_model=_ranked(models),
        by_agent=_ranked(agents),
        by_project=_ranked(projects),
        upload_dated_nodes=upload_dated,
        priced=False,
    )
