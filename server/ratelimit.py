"""Fixed-window rate limits kept in the database, so every worker and host counts together."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.db.models import RateEvent
from server.errors import TooManyRequests

__all__ = ["hit"]

WINDOW_SECONDS = 60


def hit(db: Session, bucket: str, *, limit: int, now: datetime) -> None:
    """Count one event in ``bucket``; refuse it once ``limit`` events fell in this window."""
    window = int(now.timestamp()) // WINDOW_SECONDS
    row = db.scalar(
        select(RateEvent)
        .where(RateEvent.bucket == bucket, RateEvent.window_start == window)
        .with_for_update()
    )
    if row is None:
        try:
            with db.begin_nested():
                db.add(RateEvent(bucket=bucket, window_start=window, count=1))
        except IntegrityError:  # another worker created it first
            row = db.scalar(
                select(RateEvent)
                .where(RateEvent.bucket == bucket, RateEvent.window_start == window)
                .with_for_update()
            )
        else:
            return
    assert row is not None  # noqa: S101 - it exists now, whoever created it
    if row.count >= limit:
        raise TooManyRequests("too many attempts; wait a minute and try again")
    row.count += 1
