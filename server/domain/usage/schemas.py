"""A usage query as the API takes it, checked: each bad parameter is a 400 with one line."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from server.errors import BadRequest
from tapes_e2e.protocol.usage import GROUP_KEYS, GroupKey

__all__ = ["DEFAULT_DAYS", "EPOCH", "MAX_RANGE", "UsageQuery", "parse_query"]

MAX_RANGE = timedelta(days=800)
DEFAULT_DAYS = 30
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """``[start, end)`` in UTC, the time zone days and hours are read in, and the grouping."""

    start: datetime
    end: datetime
    zone: tzinfo
    zone_name: str
    group_by: tuple[GroupKey, ...]


def _zone(name: str | None) -> tuple[tzinfo, str]:
    if not name or name == "UTC":
        return UTC, "UTC"
    try:
        return ZoneInfo(name), name
    except (ZoneInfoNotFoundError, ValueError):
        raise BadRequest(f"tz={name[:64]!r} is not an IANA time zone (e.g. Europe/Paris)") from None


def _moment(label: str, text: str, zone: tzinfo, *, end: bool) -> datetime:
    """A date means its local midnight (``to``: the end of that day); a time without an offset
    is read in ``zone``."""
    try:
        if _DATE.fullmatch(text):
            day = date.fromisoformat(text) + timedelta(days=1 if end else 0)
            return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)
        moment = datetime.fromisoformat(text)
        return (moment if moment.tzinfo else moment.replace(tzinfo=zone)).astimezone(UTC)
    except (ValueError, OverflowError):
        raise BadRequest(
            f"{label}={text[:64]!r} is not a date (YYYY-MM-DD) or an ISO-8601 time"
        ) from None


def _group_by(text: str | None) -> tuple[GroupKey, ...]:
    chosen: list[GroupKey] = []
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        key = next((k for k in GROUP_KEYS if k == part), None)
        if key is None:
            raise BadRequest(f"group_by={part[:40]!r} is not one of {'|'.join(GROUP_KEYS)}")
        if key in chosen:
            raise BadRequest(f"group_by names {key} twice")
        chosen.append(key)
    return tuple(chosen)


def parse_query(
    *, start: str | None, end: str | None, tz: str | None, group_by: str | None, now: datetime
) -> UsageQuery:
    """The query from its text parameters; by default the last 30 days, today included."""
    zone, zone_name = _zone(tz)
    if end:
        stop = _moment("to", end, zone, end=True)
    else:
        today = now.astimezone(zone).date()
        stop = _moment("to", today.isoformat(), zone, end=True)
    if start:
        begin = _moment("from", start, zone, end=False)
    else:
        first = stop.astimezone(zone).date() - timedelta(days=DEFAULT_DAYS)
        begin = _moment("from", first.isoformat(), zone, end=False)
    if begin >= stop:
        raise BadRequest("from must be before to")
    if begin < EPOCH:
        raise BadRequest("from must be 1970-01-01 or later")
    if stop - begin > MAX_RANGE:
        raise BadRequest(f"a usage range spans at most {MAX_RANGE.days} days")
    return UsageQuery(begin, stop, zone, zone_name, _group_by(group_by))
