"""Recompute a vault's usage report from the nodes this machine holds, and compare it with the
server's (``tapes usage --verify``).

The server counts usage from the clear metadata members send at push; a member's client can
derive that same metadata from the decrypted node (``keymgmt.project_metadata`` over
``clear_fields``, exactly as the pusher does), place it in time and group it the way the server
says it did (its range, time zone and grouping), and check every count. Cost is the server's
arithmetic over those counts with its price table, so only the counts are checked here.

Pure: the caller hands in the nodes and the report.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import keymgmt
from tapes_e2e.envelopes import clear_fields
from tapes_e2e.node import Node
from tapes_e2e.protocol.usage import UsageFigures, UsageReport

__all__ = ["CHECKABLE_GROUPS", "CHECKED", "Difference", "compare", "recompute"]

CHECKED = (
    "nodes",
    "sessions",
    "prompt_tokens",
    "completion_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "total_tokens",
)
"""The figures a member can recompute: counts. Cost follows from them and the server's prices."""

CHECKABLE_GROUPS = frozenset({"day", "hour", "model", "provider", "agent", "project"})
"""Groupings a member can recompute (``member`` is the server's mapping of uploads to accounts)."""

_BUCKET = 900  # the server's time buckets: 15 minutes
_FIELD = {"model": "model", "provider": "provider", "agent": "agent_name", "project": "project"}

Group = tuple[str, ...]


@dataclass(frozen=True)
class Difference:
    """A row where the server's figure differs from the one recomputed here."""

    group: dict[str, str]
    figure: str
    server: int
    local: int


def _count(metadata: Mapping[str, object], name: str) -> int:
    value = metadata.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _parse(text: str) -> datetime:
    """An ISO time as the server reads it: without an offset, UTC."""
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def recompute(nodes: Iterable[Node], report: UsageReport) -> dict[Group, dict[str, int]]:
    """The report's rows as this machine's ``nodes`` give them: each node's clear metadata under
    the report's policy, placed by its ``created_at`` bucket within the report's range, grouped
    by the report's keys, with its day and hour in the report's time zone."""
    zone = ZoneInfo(report.tz)
    first = int(_parse(report.start).timestamp()) // _BUCKET
    last = -(-int(_parse(report.end).timestamp()) // _BUCKET)
    policy = report.metadata_policy
    rows: dict[Group, dict[str, int]] = {}
    for node in nodes:
        metadata = keymgmt.project_metadata(policy, clear_fields(node))  # type: ignore[arg-type]
        created = metadata.get("created_at")
        if not isinstance(created, str):
            continue  # under ``none`` the server places nodes by upload time: not checkable
        bucket = int(_parse(created).timestamp()) // _BUCKET
        if not first <= bucket < last:
            continue
        local = datetime.fromtimestamp(bucket * _BUCKET, zone)
        values = {"day": local.date().isoformat(), "hour": local.strftime("%Y-%m-%dT%H:00")}
        group = tuple(
            values[key] if key in values else str(metadata.get(_FIELD[key]) or "")
            for key in report.group_by
        )
        sums = rows.setdefault(group, dict.fromkeys(CHECKED, 0))
        sums["nodes"] += 1
        sums["sessions"] += int(node.parent_hash is None)
        for name in CHECKED[2:]:
            sums[name] += _count(metadata, name)
    return rows


def _figures(figures: UsageFigures) -> dict[str, int]:
    return {name: int(getattr(figures, name)) for name in CHECKED}


def compare(report: UsageReport, local: Mapping[Group, Mapping[str, int]]) -> list[Difference]:
    """Every figure of every row where the server and this machine disagree; a row on one side
    only differs in each of its non-zero figures."""
    server = {
        tuple(row.group.get(key, "") for key in report.group_by): _figures(row.figures)
        for row in report.rows
    }
    zero = dict.fromkeys(CHECKED, 0)
    found: list[Difference] = []
    for group in sorted(set(server) | set(local)):
        theirs, ours = server.get(group, zero), local.get(group, zero)
        labels = dict(zip(report.group_by, group, strict=True))
        found += [
            Difference(labels, name, theirs[name], ours[name])
            for name in CHECKED
            if theirs[name] != ours[name]
        ]
    return found
