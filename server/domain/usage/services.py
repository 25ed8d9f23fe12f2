"""Usage rules and SQL: kept at push (:func:`record`), read by :func:`report` for the API and
the dashboard, written out by :func:`tapes_e2e.protocol.usage.to_csv`.

A report reads only ``usage_buckets``: sums kept at push per 15-minute bucket of when the work
happened (see :mod:`server.domain.usage.buckets`), so its cost follows the number of distinct
(bucket, member, model, provider, agent, project) combinations, never the number of nodes. It
is priced per (model, provider) with :class:`~server.domain.usage.pricing.PriceBook`.

Retention deletes envelopes, not usage: the counts are the history of work done.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any

import msgspec
from sqlalchemy import ColumnElement, case, func, literal, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from server.db.models import ChainStatement, Team, UsageBucket, User
from server.domain.usage import labels
from server.domain.usage.buckets import (
    BUCKET_SECONDS,
    COUNTERS,
    bindable,
    contributions,
    dims_hash,
)
from server.domain.usage.pricing import Price, PriceBook
from server.domain.usage.schemas import UsageQuery
from server.errors import BadRequest
from tapes_e2e.protocol.usage import UnpricedModel, UsageFigures, UsageReport, UsageRow

__all__ = ["MAX_REPORT_ROWS", "record", "report", "vault_policy"]

MAX_REPORT_ROWS = 100_000
"""The most rows one report answers: a grouping by hour, model, harness and project over two
years could otherwise be as long as the vault (threat model B30). Past it the request is a 400
that says how to narrow it. A grouping by one key is always shorter (the labels of each kind
are capped per vault, ``labels.CAPS``; days and hours by the range)."""
_READ_PER_ROW = 10
"""Rows of ``usage_buckets`` read per row answered, at most (each group is read per model and
provider, to price it), so that a report's memory is bounded too."""


def _too_long() -> BadRequest:
    return BadRequest(
        f"this report would have more than {MAX_REPORT_ROWS:,} rows: group by fewer keys "
        "or ask for a shorter range"
    )


_PER_DAY = 86_400 // BUCKET_SECONDS
_PER_HOUR = 3_600 // BUCKET_SECONDS
_CENTS = Decimal("0.000001")  # money is kept to the millionth of a dollar


# --- at push ----------------------------------------------------------------------------------


def record(
    db: Session, vault_id: str, nodes: Iterable[tuple[Mapping[str, object], bool, str, datetime]]
) -> None:
    """Add stored nodes ``(clear metadata, is a root, uploader id, upload time)`` to the vault's
    usage, in the push's transaction (the push holds the vault's row lock).

    One executemany straight to the driver, as the push's own insert: SQLAlchemy's compilation
    of an upsert cost more than the upsert."""
    sums = labels.admit(db, vault_id, contributions(nodes))
    if not sums:
        return
    rows = [
        (vault_id, key.bucket, dims_hash(key), key.member_id, key.model, key.provider, key.agent,
         key.project, key.by_upload, *part)
        for key, values in sums.items()
        for part in bindable(values)
    ]  # fmt: skip
    conn = db.connection()
    raw = conn.connection.driver_connection
    if raw is None:  # pragma: no cover - a live connection always has one
        raise RuntimeError("connection is closed")
    cursor = raw.cursor()
    try:
        cursor.executemany(_UPSERT[conn.dialect.name == "sqlite"], rows)
    finally:
        cursor.close()


def _upsert(mark: str) -> str:
    columns = ("vault_id", "bucket", "dims", "member_id", "model", "provider", "agent", "project",
               "by_upload", *COUNTERS)  # fmt: skip
    adds = ", ".join(f"{c} = usage_buckets.{c} + excluded.{c}" for c in COUNTERS)
    return (
        f"INSERT INTO usage_buckets ({', '.join(columns)}) "  # noqa: S608 - constant names
        f"VALUES ({', '.join([mark] * len(columns))}) "
        f"ON CONFLICT (vault_id, bucket, dims) DO UPDATE SET {adds}"
    )


_UPSERT = {True: _upsert("?"), False: _upsert("%s")}


# --- the vault's policy -----------------------------------------------------------------------


class _PolicyBody(msgspec.Struct):
    metadata_policy: str | None = None
    content_policy: str | None = None


_policy_body = msgspec.json.Decoder(_PolicyBody).decode


def vault_policy(db: Session, vault_id: str) -> tuple[str, str]:
    """(metadata policy, content policy) at the head of the vault's chain, as stored (each
    statement was verified when appended); ``unknown`` before the chain's genesis."""
    metadata, content = "unknown", "unknown"
    for statement in db.scalars(
        select(ChainStatement.statement)
        .where(ChainStatement.team_id == vault_id)
        .order_by(ChainStatement.seqno)
    ):
        body = _policy_body(statement["body"])
        metadata = body.metadata_policy or metadata
        content = body.content_policy or content
    return metadata, content


# --- the report -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Sums:
    counts: list[int] = field(default_factory=lambda: [0] * len(COUNTERS))
    upload_timed: int = 0
    cost: Decimal = Decimal(0)
    savings: Decimal = Decimal(0)
    unpriced_tokens: int = 0
    unpriced_nodes: int = 0

    def add(self, counts: Sequence[int], upload_timed: int, price: Price | None) -> None:
        for index, value in enumerate(counts):
            self.counts[index] += value
        self.upload_timed += upload_timed
        nodes, _sessions, _prompt, completion, written, read, _total, base = counts
        if price is not None:
            self.cost += price.cost(base, written, read, completion)
            self.savings += price.cache_savings(read)
        elif (tokens := base + written + read + completion) > 0:
            self.unpriced_tokens += tokens
            self.unpriced_nodes += nodes

    def merge(self, other: _Sums) -> None:
        for index, value in enumerate(other.counts):
            self.counts[index] += value
        self.upload_timed += other.upload_timed
        self.cost += other.cost
        self.savings += other.savings
        self.unpriced_tokens += other.unpriced_tokens
        self.unpriced_nodes += other.unpriced_nodes

    def figures(self) -> UsageFigures:
        nodes, sessions, prompt, completion, written, read, total, _base = self.counts
        return UsageFigures(
            nodes=nodes, sessions=sessions, prompt_tokens=prompt, completion_tokens=completion,
            cache_creation_input_tokens=written, cache_read_input_tokens=read,
            total_tokens=total, upload_timed_nodes=self.upload_timed,
            cost_usd=self.cost.quantize(_CENTS), cache_savings_usd=self.savings.quantize(_CENTS),
            unpriced_tokens=self.unpriced_tokens, unpriced_nodes=self.unpriced_nodes,
        )  # fmt: skip


def _offsets(zone: tzinfo, start: datetime, end: datetime) -> list[tuple[int, int]]:
    """``(first bucket, UTC offset in buckets)`` of each stretch of one offset in the range.

    Steps a day at a time (offsets change at most twice a year) and finds each change to the
    bucket by bisection."""

    def offset(moment: datetime) -> int:
        shift = moment.astimezone(zone).utcoffset() or timedelta(0)
        return int(shift.total_seconds()) // BUCKET_SECONDS

    first = start.timestamp() // BUCKET_SECONDS
    found = [(int(first), offset(start))]
    day = start
    while day < end:
        following = min(day + timedelta(days=1), end)
        if offset(following) != found[-1][1]:
            low, high = int(day.timestamp()) // BUCKET_SECONDS, int(following.timestamp())
            high //= BUCKET_SECONDS
            while high - low > 1:  # offset(low) is the old one, offset(high) the new one
                middle = (low + high) // 2
                moment = datetime.fromtimestamp(middle * BUCKET_SECONDS, UTC)
                low, high = (middle, high) if offset(moment) == found[-1][1] else (low, middle)
            found.append((high, offset(datetime.fromtimestamp(high * BUCKET_SECONDS, UTC))))
        day = following
    return found


def _local(segments: list[tuple[int, int]]) -> ColumnElement[int]:
    """The bucket as local time (buckets since the Unix epoch on the zone's wall clock)."""
    bucket = UsageBucket.bucket
    if len(segments) == 1:
        return bucket + segments[0][1]
    whens = [
        (bucket < start, literal(shift))
        for (start, _), (_, shift) in zip(segments[1:], segments, strict=False)
    ]
    return bucket + case(*whens, else_=literal(segments[-1][1]))


def _sum(db: Session, column: ColumnElement[int]) -> ColumnElement[int]:
    """SQLite's ``total()`` never raises on overflow (a double, exact to 2^53); PostgreSQL sums
    its NUMERIC columns exactly."""
    return func.total(column) if db.get_bind().dialect.name == "sqlite" else func.sum(column)


def _label(key: str, value: object) -> str:
    if key == "day":
        return (date(1970, 1, 1) + timedelta(days=int(str(value)))).isoformat()
    if key == "hour":
        return (datetime(1970, 1, 1) + timedelta(hours=int(str(value)))).strftime("%Y-%m-%dT%H:00")
    return str(value or "")


def report(db: Session, vault: Team, query: UsageQuery, prices: PriceBook) -> UsageReport:
    """The vault's usage for ``query``, priced by ``prices``; the caller checked access."""
    metadata_policy, content_policy = vault_policy(db, vault.id)
    if "project" in query.group_by and metadata_policy != "full":
        raise BadRequest(
            f"group_by=project needs the full metadata policy; this vault's is {metadata_policy}"
        )
    local = _local(_offsets(query.zone, query.start, query.end))
    b = UsageBucket
    columns: dict[str, ColumnElement[Any] | InstrumentedAttribute[Any]] = {
        "member": b.member_id, "model": b.model, "provider": b.provider, "agent": b.agent,
        "project": b.project, "day": local // _PER_DAY, "hour": local // _PER_HOUR,
    }  # fmt: skip
    grouped = [columns[key] for key in query.group_by]
    keys = [*grouped, b.model, b.provider]
    start = int(query.start.timestamp()) // BUCKET_SECONDS
    end = -(-int(query.end.timestamp()) // BUCKET_SECONDS)
    sums = [_sum(db, getattr(b, name)) for name in COUNTERS]
    upload_timed = _sum(db, case((b.by_upload, b.nodes), else_=0))
    rows = db.execute(
        select(*keys, *sums, upload_timed)
        .where(b.vault_id == vault.id, b.bucket >= start, b.bucket < end)
        .group_by(*keys)
        .limit(MAX_REPORT_ROWS * _READ_PER_ROW + 1)
    ).all()
    if len(rows) > MAX_REPORT_ROWS * _READ_PER_ROW:
        raise _too_long()
    width = len(query.group_by)
    members = (
        _handles(db, {r[query.group_by.index("member")] for r in rows})
        if "member" in query.group_by
        else {}
    )
    groups: dict[tuple[str, ...], _Sums] = {}
    unpriced: dict[tuple[str, str], list[int]] = {}
    for raw in rows:
        row: tuple[Any, ...] = tuple(raw)
        model, provider = str(row[width] or ""), str(row[width + 1] or "")
        counts = [int(v or 0) for v in row[width + 2 : width + 2 + len(COUNTERS)]]
        price = prices.lookup(model, provider)
        group = tuple(
            members.get(str(v), str(v)) if k == "member" else _label(k, v)
            for k, v in zip(query.group_by, row[:width], strict=True)
        )
        sums_of = groups.setdefault(group, _Sums())
        before = sums_of.unpriced_tokens
        sums_of.add(counts, int(row[-1] or 0), price)
        if sums_of.unpriced_tokens > before:
            entry = unpriced.setdefault((model, provider), [0, 0])
            entry[0] += counts[0]
            entry[1] += sums_of.unpriced_tokens - before
    if len(groups) > MAX_REPORT_ROWS:
        raise _too_long()
    totals = _Sums()
    for sums_of in groups.values():
        totals.merge(sums_of)
    return UsageReport(
        vault=vault.id,
        kind=vault.kind,
        metadata_policy=metadata_policy,
        content_policy=content_policy,
        start=query.start.isoformat().replace("+00:00", "Z"),
        end=query.end.isoformat().replace("+00:00", "Z"),
        tz=query.zone_name,
        group_by=list(query.group_by),
        time_basis=_basis(totals, metadata_policy),
        rows=[
            UsageRow(group=dict(zip(query.group_by, g, strict=True)), figures=s.figures())
            for g, s in sorted(groups.items())
        ],
        totals=totals.figures(),
        unpriced=[
            UnpricedModel(model=m, provider=p, nodes=n, tokens=t)
            for (m, p), (n, t) in sorted(unpriced.items())
        ],
        pricing=prices.describe,
    )


def _handles(db: Session, ids: set[object]) -> dict[str, str]:
    found = db.execute(select(User.id, User.handle).where(User.id.in_([str(i) for i in ids])))
    return {str(user_id): str(handle) for user_id, handle in found}


def _basis(totals: _Sums, policy: str) -> str:
    nodes = totals.counts[0]
    if nodes == 0:
        return "uploaded_at" if policy == "none" else "created_at"
    if totals.upload_timed == 0:
        return "created_at"
    return "uploaded_at" if totals.upload_timed == nodes else "mixed"
