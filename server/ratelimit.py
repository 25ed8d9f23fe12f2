"""Rate limits kept in the database, so every worker and host counts together.

A sliding-window counter: events are counted per fixed minute, and an event is refused when
this minute's count plus the previous minute's, weighted by how much of it still lies within
the last 60 seconds, leaves no room for one more. A plain fixed window would let a caller spend
the limit at the end of one minute and again at the start of the next: twice it in a second.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.db.models import RateEvent
from server.errors import TooManyRequests

__all__ = ["hit"]

WINDOW_SECONDS = 60


def _locked(db: Session, bucket: str, window: int) -> RateEvent | None:
    return db.scalar(
        select(RateEvent)
        .where(RateEvent.bucket == bucket, RateEvent.window_start == window)
        .with_for_update()
    )


def hit(db: Session, bucket: str, *, limit: int, now: datetime) -> None:
    """Count one event in ``bucket``; refuse it once ``limit`` events fell in the last minute."""
    moment = now.timestamp()
    window = int(moment) // WINDOW_SECONDS
    row = _locked(db, bucket, window)
    if row is None:
        try:
            with db.begin_nested():
                row = RateEvent(bucket=bucket, window_start=window, count=0)
                db.add(row)
        except IntegrityError:  # another worker created it first
            row = _locked(db, bucket, window)
    assert row is not None  # noqa: S101 - it exists now, whoever created it
    previous = db.scalar(
        select(RateEvent.count).where(
            RateEvent.bucket == bucket, RateEvent.window_start == window - 1
        )
    )
    still_in_view = 1 - (moment - window * WINDOW_SECONDS) / WINDOW_SECONDS
    if row.count + (previous or 0) * still_in_view > limit - 1:  # this one would pass the limit
        raise TooManyRequests("too many attempts; wait a minute and try again")
    row.count += 1
