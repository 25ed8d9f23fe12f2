"""Recompute a vault's usage report from the nodes this machine holds, and compare it with the
server's (``tapes usage --verify``).

The server counts usage from the clear metadata members send at push; a member's client can
derive that same metadata from the decrypted node (``keymgmt.project_metadata`` over
``clear_fields``, exactly as the pusher does), place it in time and group it the way the
server does, and check the counts. Cost is the server's arithmetic over those counts with its
price table, so only the counts are checked here.

Two ways to compare (:func:`compare`):

- ``exact``: this machine holds every node the report counts (a personal vault after a full
  pull): every figure of every row, and the totals, must be equal;
- ``at least``: this machine holds some of the vault's nodes (a team vault: its own uploads and
  the sessions shared with it): every figure must be *at least* what those nodes give. That
  catches a row dropped or lowered; a row raised above the truth is only caught in ``exact``.

The report is also checked to be an answer to the question asked (:func:`check_frame`): its
vault, range, time zone, grouping and policy, and no group twice, so a server cannot make rows
vanish by narrowing the range or hide a row behind a second one with the same name.

Pure: the caller hands in the nodes, the report and the clock.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

import keymgmt
from keymgmt.chain import MetadataPolicy
from tapes_e2e.envelopes import clear_fields
from tapes_e2e.node import Node
from tapes_e2e.protocol.usage import UsageFigures, UsageReport

__all__ = [
    "CHECKABLE_GROUPS",
    "CHECKED",
    "DEFAULT_DAYS",
    "Difference",
    "Frame",
    "Recomputed",
    "check_frame",
    "compare",
    "frame_for",
    "recompute",
]

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

DEFAULT_DAYS = 30
"""Without ``--from``: the 30 days before the last one, as ``tapes usage`` asks the server."""

_BUCKET = 900  # the server's time buckets: 15 minutes
_FIELD = {"model": "model", "provider": "provider", "agent": "agent_name", "project": "project"}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

Group = tuple[str, ...]
Where = Literal["row", "totals", "report"]


@dataclass(frozen=True)
class Difference:
    """One figure where the server's report is not what this machine computed.

    ``where`` is ``row`` (``group`` names it; figure ``rows`` counts a group listed more than
    once), ``totals``, or ``report`` (the report answers another question than the one asked:
    figure ``vault``, ``from``, ``to``, ``tz``, ``group_by`` or ``metadata_policy``)."""

    where: Where
    group: dict[str, str]
    figure: str
    server: int | str
    local: int | str


@dataclass(frozen=True)
class Frame:
    """The question asked: ``[start, end)`` in UTC, read in time zone ``tz``, grouped by
    ``group_by``, of ``vault`` under its (verified) metadata ``policy``."""

    vault: str
    policy: MetadataPolicy
    start: datetime
    end: datetime
    tz: str
    group_by: tuple[str, ...]

    def query(self) -> dict[str, str]:
        """The API query: the range as exact instants, so the server has nothing to interpret."""
        return {"from": _iso(self.start), "to": _iso(self.end), "tz": self.tz,
                "group_by": ",".join(self.group_by)}  # fmt: skip


@dataclass
class Recomputed:
    """The rows as this machine's nodes give them, and the nodes it could not place in time
    (no ``created_at``: the server places those by their upload time, which only it knows)."""

    rows: dict[Group, dict[str, int]] = field(default_factory=dict)
    untimed: int = 0


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse(text: str) -> datetime:
    """An ISO time as the server reads it: without an offset, UTC."""
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _moment(text: str, zone: ZoneInfo, *, end: bool) -> datetime:
    """A date is its local midnight (an end date: the midnight after it); a time without an
    offset is read in ``zone``."""
    if _DATE.fullmatch(text):
        day = date.fromisoformat(text) + timedelta(days=1 if end else 0)
        return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)
    moment = datetime.fromisoformat(text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=zone)).astimezone(UTC)


def frame_for(
    vault: str, policy: MetadataPolicy, query: Mapping[str, str], *, now: datetime
) -> Frame:
    """The question ``tapes usage`` options make (``from``, ``to``, ``tz``, ``group_by``), with
    the range made exact: by default the last 30 days and today, in the time zone.

    Raises ``ValueError`` for a ``from`` or ``to`` that is not a date or an ISO time, and
    ``OverflowError`` for one at the calendar's edge."""
    tz = query.get("tz") or "UTC"
    zone = ZoneInfo(tz)
    end_text = query.get("to") or now.astimezone(zone).date().isoformat()
    end = _moment(end_text, zone, end=True)
    start_text = query.get("from")
    if not start_text:
        start_text = (end.astimezone(zone).date() - timedelta(days=DEFAULT_DAYS)).isoformat()
    start = _moment(start_text, zone, end=False)
    keys = tuple(k for k in query.get("group_by", "").split(",") if k)
    return Frame(vault, policy, start, end, tz, keys)


def _count(metadata: Mapping[str, object], name: str) -> int:
    value = metadata.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def recompute(nodes: Iterable[Node], frame: Frame) -> Recomputed:
    """The rows ``nodes`` give for ``frame``: each node's clear metadata under the frame's
    policy (the pusher's own projection), placed by its ``created_at`` bucket within the range,
    grouped by the frame's keys, with its day and hour in the frame's time zone."""
    zone = ZoneInfo(frame.tz)
    first = int(frame.start.timestamp()) // _BUCKET
    last = -(-int(frame.end.timestamp()) // _BUCKET)
    found = Recomputed()
    for node in nodes:
        metadata = keymgmt.project_metadata(frame.policy, clear_fields(node))
        created = metadata.get("created_at")
        if not isinstance(created, str):
            found.untimed += 1  # the server places it by its upload time
            continue
        bucket = int(_parse(created).timestamp()) // _BUCKET
        if not first <= bucket < last:
            continue
        local = datetime.fromtimestamp(bucket * _BUCKET, zone)
        values = {"day": local.date().isoformat(), "hour": local.strftime("%Y-%m-%dT%H:00")}
        group = tuple(
            values[key] if key in values else str(metadata.get(_FIELD[key]) or "")
            for key in frame.group_by
        )
        sums = found.rows.setdefault(group, dict.fromkeys(CHECKED, 0))
        sums["nodes"] += 1
        sums["sessions"] += int(node.parent_hash is None)
        for name in CHECKED[2:]:
            sums[name] += _count(metadata, name)
    return found


def check_frame(report: UsageReport, frame: Frame) -> list[Difference]:
    """Where the report answers another question than ``frame`` (a narrower range hides rows)."""
    asked: dict[str, str] = {
        "vault": frame.vault, "from": _iso(frame.start), "to": _iso(frame.end), "tz": frame.tz,
        "group_by": ",".join(frame.group_by), "metadata_policy": frame.policy,
    }  # fmt: skip
    given: dict[str, str] = {
        "vault": report.vault, "from": _normal(report.start), "to": _normal(report.end),
        "tz": report.tz, "group_by": ",".join(report.group_by),
        "metadata_policy": report.metadata_policy,
    }  # fmt: skip
    return [
        Difference("report", {}, name, given[name], asked[name])
        for name in asked
        if given[name] != asked[name]
    ]


def _normal(text: str) -> str:
    try:
        return _iso(_parse(text))
    except ValueError:
        return text


def _summed(
    groups: Iterable[tuple[Group, Mapping[str, int]]], kept: list[int]
) -> dict[Group, dict[str, int]]:
    """The figures summed per group of the positions ``kept`` (every row of a group counted)."""
    out: dict[Group, dict[str, int]] = {}
    for group, figures in groups:
        sums = out.setdefault(tuple(group[i] for i in kept), dict.fromkeys(CHECKED, 0))
        for name in CHECKED:
            sums[name] += figures[name]
    return out


def _figures(figures: UsageFigures) -> dict[str, int]:
    return {name: int(getattr(figures, name)) for name in CHECKED}


def _differ(server: int, local: int, *, exact: bool) -> bool:
    return server != local if exact else server < local


def compare(
    report: UsageReport, local: Mapping[Group, Mapping[str, int]], *, exact: bool
) -> list[Difference]:
    """Every figure of every row, and of the totals, where the server and this machine
    disagree: with ``exact``, any difference (a row on one side only differs in each of its
    non-zero figures); without, a server figure below this machine's. A group the report lists
    more than once differs in its number of ``rows`` (its figures are summed). Groupings under
    which the report counts names as ``(other)`` (``UsageReport.folded_keys``) are compared
    summed."""
    rows = [
        (tuple(row.group.get(key, "") for key in report.group_by), _figures(row.figures))
        for row in report.rows
    ]
    listed = Counter(group for group, _ in rows)
    found = [
        Difference("row", dict(zip(report.group_by, group, strict=True)), "rows", times, 1)
        for group, times in sorted(listed.items())
        if times > 1
    ]
    folded = report.folded_keys()
    kept = [i for i, key in enumerate(report.group_by) if key not in folded]
    keys = [report.group_by[i] for i in kept]
    local = _summed(local.items(), kept)
    server = _summed(rows, kept)
    zero = dict.fromkeys(CHECKED, 0)
    for group in sorted(set(server) | set(local)):
        labels = dict(zip(keys, group, strict=True))
        theirs, ours = server.get(group, zero), local.get(group, zero)
        found += [
            Difference("row", labels, name, theirs[name], ours[name])
            for name in CHECKED
            if _differ(theirs[name], ours[name], exact=exact)
        ]
    if report.totals is not None:
        totals = {name: sum(row[name] for row in local.values()) for name in CHECKED}
        given = _figures(report.totals)
        found += [
            Difference("totals", {}, name, given[name], totals[name])
            for name in CHECKED
            if _differ(given[name], totals[name], exact=exact)
        ]
    return found
