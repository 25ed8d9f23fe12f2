"""The range picker's input: a preset (``days``) or ``from``/``to`` dates, in whole UTC days."""

from __future__ import annotations

from datetime import date, timedelta

from server.dashboard.figures import Range
from server.errors import BadRequest

__all__ = ["DEFAULT_DAYS", "MAX_DAYS", "PRESETS", "parse_range"]

PRESETS = (7, 30, 90)
DEFAULT_DAYS = 30
MAX_DAYS = 400


def _day(name: str, text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise BadRequest(f"{name}: {text[:20]!r} is not a date (YYYY-MM-DD)") from None


def parse_range(days: str | None, start: str | None, end: str | None, today: date) -> Range:
    """A preset wins over dates; no input is the last ``DEFAULT_DAYS`` days up to today."""
    if days:
        if not days.isdigit() or not 1 <= int(days) <= MAX_DAYS:
            raise BadRequest(f"days: {days[:20]!r} is not a whole number of days (1..{MAX_DAYS})")
        return Range(today - timedelta(days=int(days) - 1), today)
    last = _day("to", end) if end else today
    try:
        first = _day("from", start) if start else last - timedelta(days=DEFAULT_DAYS - 1)
    except OverflowError:  # a "to" in the first days of year 1
        raise BadRequest("to: the date is too early") from None
    if last >= date.max - timedelta(days=1):
        raise BadRequest("to: the date is too late")
    if first > last:
        raise BadRequest(f"from ({first.isoformat()}) is after to ({last.isoformat()})")
    if (last - first).days + 1 > MAX_DAYS:
        raise BadRequest(f"the range spans more than {MAX_DAYS} days; pick a shorter one")
    return Range(first, last)
