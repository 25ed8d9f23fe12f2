"""The rules of nodes and sync, no HTTP (the routes are described in ``controllers``).

A push is validated on its own, then allocates its sequence numbers under the vault row's lock,
then inserts what is new (atomic, parents first, a new node only in the vault's current epoch);
pulls, ancestry and pages are bounded by rows and by bytes; every read is the caller's
``acl.readable_clause``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, cast

import msgspec
from sqlalchemy import String, and_, func, literal, select, type_coerce
from sqlalchemy.orm import Session, aliased

from keymgmt import PackedEnvelope, PolicyError, check_clear_metadata, is_base64url
from server import acl, plans
from server.db.models import NodeRecord, Team, TeamMember
from server.db.queries import one_of
from server.deps import Principal
from server.domain.nodes.aliases import aliases_of
from server.domain.nodes.stored import NotPackableError, as_json, as_packed, store_form, wire_of
from server.domain.shares.services import record_shared_read
from server.domain.usage import services as usage
from server.errors import BadRequest, Conflict, NotFound, PayloadTooLarge
from tapes_e2e.protocol import (
    ENVELOPE_VERSION,
    MAX_BATCH_BYTES,
    MAX_PAGE_BYTES,
    AncestryPage,
    AnyPushRequest,
    EnvelopeWire,
    NodeOut,
    Problem,
    PullPage,
    PushResult,
    SessionInfo,
    SessionPage,
    SyncStatusOut,
)

__all__ = [
    "MAX_PAGE",
    "ancestry",
    "check_envelope",
    "node",
    "node_out",
    "pull_page",
    "push",
    "sessions_page",
    "sync_status",
]

MAX_PAGE = 1000
_NO_NODE = "no such node"


def check_envelope(vault: str, env: EnvelopeWire | PackedEnvelope) -> None:
    """What the wire types cannot say of one pushed envelope (in either form)."""
    if env.version != ENVELOPE_VERSION or env.at_seqno is None or env.at_hash is None:
        raise BadRequest(
            f"envelope {env.node_id}: envelopes are stored in version {ENVELOPE_VERSION} "
            "with the writer's chain position; upgrade the client"
        )
    if env.team != vault:
        raise BadRequest(f"envelope {env.node_id} names vault {env.team!r}, not {vault!r}")
    if env.ciphertext is None:
        if env.nonce is not None or env.padded_size != 0 or env.signature is None:
            raise BadRequest(f"envelope {env.node_id}: a metadata-only record is inconsistent")
    elif env.nonce is None:
        raise BadRequest(f"envelope {env.node_id}: an encrypted record needs a nonce")
    elif isinstance(env.ciphertext, str) and not is_base64url(env.ciphertext):
        raise BadRequest(f"envelope {env.node_id}: the ciphertext is not unpadded base64url")
    try:
        check_clear_metadata(env.metadata)
    except PolicyError as exc:
        raise BadRequest(f"envelope {env.node_id}: {exc}") from None


def _check_epoch(
    team: Team, envelopes: Sequence[EnvelopeWire | PackedEnvelope], present: set[str]
) -> None:
    """Refuse a new node sealed under any epoch but the vault's current one (409).

    Defence in depth behind the client, which seals under its verified chain's epoch: a client
    that missed a removal would otherwise keep writing under the epoch whose key the removed
    member holds. Metadata-only records carry a signed epoch too and follow the same rule. Nodes
    the vault already holds stay idempotent (``existing``) whatever their epoch.
    """
    for env in envelopes:
        if env.epoch != team.epoch and env.node_id not in present:
            raise Conflict(
                f"node {env.node_id} is sealed under key epoch {env.epoch} but vault {team.id} "
                f"is in epoch {team.epoch}; fetch the chain, verify it and seal again",
                problem=Problem.STALE_EPOCH,
            )


def push(
    db: Session, principal: Principal, data: AnyPushRequest, now: datetime, mode: plans.PlansMode
) -> PushResult:
    """Store a batch atomically: validate it, then allocate its sequence numbers under the
    vault row's lock, then insert what is new. Already-stored IDs are no-ops."""
    team, _member = acl.require_vault(db, principal, data.vault, "push")
    encoded = _validate(data)
    team, present, renamed = _allocate(db, team, data, now, mode)
    batch = _Batch.of(
        team, data, encoded, present, renamed, _storage_time(db, now), principal.user_id
    )
    plans.check_bytes(team, batch.new_bytes, mode)
    if batch.rows:
        _insert(db, team, data, batch, principal.user_id, now)
    first = team.head_seq - len(batch.stored) + 1 if batch.stored else 0
    return PushResult(
        stored=batch.stored, existing=batch.existing, head_seq=team.head_seq, first_seq=first
    )


def _validate(data: AnyPushRequest) -> list[bytes]:
    """The batch's envelopes in their stored form (``stored.store_form``), once each is
    checked on its own: no node twice, version and chain position, clear metadata, size (no
    database needed)."""
    ids = [env.node_id for env in data.envelopes]
    if len(set(ids)) != len(ids):
        raise BadRequest("a batch names the same node twice")
    for env in data.envelopes:
        check_envelope(data.vault, env)
    encoded = [store_form(env) for env in data.envelopes]
    if sum(map(len, encoded)) > MAX_BATCH_BYTES:
        raise PayloadTooLarge(f"a batch holds at most {MAX_BATCH_BYTES} bytes of envelopes")
    return encoded


def _allocate(
    db: Session, team: Team, data: AnyPushRequest, now: datetime, mode: plans.PlansMode
) -> tuple[Team, set[str], dict[str, str]]:
    """The vault row under lock (sequence numbers are handed out one writer at a time) and the
        batch's nodes and parents the vault holds already, and the parents named by an ID they had
    before ``tapes team reencrypt`` (mapped to the ID now); the epoch and session-plan checks."""
    # populate_existing: require_vault loaded this row before the lock; without it the
    # identity map keeps the head_seq read before the lock and two writers share sequence numbers.
    team = db.scalars(
        select(Team)
        .where(Team.id == team.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    wanted = {e.node_id for e in data.envelopes} | {
        e.parent_id for e in data.envelopes if e.parent_id
    }
    present = set(
        db.scalars(
            select(NodeRecord.node_id).where(
                NodeRecord.vault_id == team.id, one_of(db, NodeRecord.node_id, wanted)
            )
        )
    )
    # a client that synced before a reencrypt names a parent by the ID it had then (one more
    # query only when a parent is neither stored nor in the batch)
    batch_ids = {e.node_id for e in data.envelopes}
    renamed = aliases_of(db, team.id, sorted(wanted - present - batch_ids))
    present.update(renamed)
    _check_epoch(team, data.envelopes, present)
    new_roots = sum(1 for e in data.envelopes if e.parent_id is None and e.node_id not in present)
    plans.check_new_sessions(db, team, new_roots, now, mode)
    return team, present, renamed


@dataclass
class _Batch:
    """The rows a push inserts, under the sequence numbers after the vault's head."""

    stored: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    rows: list[tuple[object, ...]] = field(default_factory=list)
    new_bytes: int = 0

    @classmethod
    def of(
        cls, team: Team, data: AnyPushRequest, encoded: list[bytes], present: set[str],
        renamed: dict[str, str], stamp: object, uploader: str,
    ) -> _Batch:  # fmt: skip
        batch, seq = cls(), team.head_seq
        envelopes: Sequence[EnvelopeWire | PackedEnvelope] = data.envelopes
        for env, blob in zip(envelopes, encoded, strict=True):
            if env.node_id in present:
                batch.existing.append(env.node_id)
                continue
            if env.parent_id is not None and env.parent_id not in present:
                raise BadRequest(
                    f"node {env.node_id}: its parent {env.parent_id} is not stored; "
                    "push parents before children",
                    problem=Problem.MISSING_PARENT,
                )
            seq += 1
            batch.rows.append((
                team.id, env.node_id, renamed.get(env.parent_id or "", env.parent_id), seq,
                env.epoch, env.record_type,
                env.author, env.padded_size, env.ciphertext is None,
                _json(env.metadata).decode("utf-8"), blob, uploader, stamp,
            ))  # fmt: skip
            present.add(env.node_id)
            batch.stored.append(env.node_id)
            batch.new_bytes += len(blob)
        return batch


def _insert(
    db: Session, team: Team, data: AnyPushRequest, batch: _Batch, uploader: str, now: datetime
) -> None:
    """Insert the new rows, count their usage, and move the vault's counters."""
    _insert_rows(db, batch.rows)
    fresh = set(batch.stored)
    usage.record(
        db, team.id,
        ((e.metadata, e.parent_id is None, uploader, now)
         for e in data.envelopes if e.node_id in fresh),
    )  # fmt: skip
    team.head_seq += len(batch.rows)
    team.node_count += len(batch.rows)
    team.bytes_stored += batch.new_bytes


_INSERT_COLUMNS = (
    "vault_id", "node_id", "parent_id", "seq", "epoch", "record_type", "author", "padded_size",
    "metadata_only", "clear_metadata", "envelope", "uploader_id", "uploaded_at",
)  # fmt: skip
_json = msgspec.json.Encoder().encode


def _insert_rows(db: Session, rows: list[tuple[object, ...]]) -> None:
    """One executemany straight to the driver: the push path's hot loop.

    SQLAlchemy's per-row bind processing cost as much as SQLite's own insert, so the rows arrive
    in each backend's storage form (see ``_storage_time``) and JSON as text, exactly as
    SQLAlchemy would have written them, so the ORM reads them back unchanged.
    """
    conn = db.connection()
    columns = ", ".join(_INSERT_COLUMNS)
    if conn.dialect.name == "sqlite":
        marks = ", ".join("?" * len(_INSERT_COLUMNS))
    else:
        marks = ", ".join("%s::jsonb" if c == "clear_metadata" else "%s" for c in _INSERT_COLUMNS)
    raw = conn.connection.driver_connection
    if raw is None:  # pragma: no cover - a live connection always has one
        raise RuntimeError("connection is closed")
    cursor = raw.cursor()
    try:
        cursor.executemany(f"INSERT INTO nodes ({columns}) VALUES ({marks})", rows)  # noqa: S608
    finally:
        cursor.close()


def _storage_time(db: Session, moment: datetime) -> object:
    """``moment`` as the backend stores a ``DateTime``: SQLAlchemy keeps naive UTC text on
    SQLite, and PostgreSQL takes the datetime itself."""
    if db.connection().dialect.name != "sqlite":
        return moment
    utc = moment.astimezone(UTC) if moment.tzinfo else moment
    return utc.strftime("%Y-%m-%d %H:%M:%S.%f")


def node_out(record: NodeRecord) -> NodeOut:
    return NodeOut(
        seq=record.seq,
        uploaded_at=record.uploaded_at.isoformat(),
        envelope=wire_of(record.envelope),
    )


def pull_page(
    db: Session, principal: Principal, vault: str, after: int, limit: int, now: datetime,
    *, packed: bool = False,
) -> tuple[PullPage, bool]:  # fmt: skip
    """Envelopes readable by the caller with a sequence number above ``after``: at most
    ``limit`` of them and ``MAX_PAGE_BYTES`` of envelopes (always the first, however large),
    each as the raw bytes of the form the page is encoded in; and whether that form is
    MessagePack. It is when ``packed`` asks for it, unless a row stored as JSON before the
    binary wire cannot be packed: that page goes out as JSON, and its reader refuses the row."""
    team, member = acl.require_vault(db, principal, vault, "pull")
    try:
        return _pull_page(db, team, member, vault, after, limit, now, packed=packed), packed
    except NotPackableError:
        return _pull_page(db, team, member, vault, after, limit, now, packed=False), False


def _pull_page(
    db: Session, team: Team, member: TeamMember, vault: str, after: int, limit: int,
    now: datetime, *, packed: bool,
) -> PullPage:  # fmt: skip
    # Core rows on the session's connection: the ORM's row handling, and SQLAlchemy's parsing
    # of SQLite's timestamps (a regex a row), were a third of a page's time on the server.
    sqlite = db.get_bind().dialect.name == "sqlite"
    stamp = type_coerce(NodeRecord.uploaded_at, String) if sqlite else NodeRecord.uploaded_at
    rows = db.connection().execute(
        select(NodeRecord.seq, stamp, NodeRecord.envelope)
        .where(acl.readable_clause(team, member, now), NodeRecord.seq > after)
        .order_by(NodeRecord.seq)
        .limit(limit + 1)
        .execution_options(yield_per=64)  # rows stream in: reading stops at the budget
    )
    # Each envelope goes out as the bytes the push stored when the page's form is the stored
    # one (checked then as an EnvelopeWire, and every client checks it again): decoding and
    # encoding it once more, and a second query for the rows whose sizes a first one had
    # read, were most of a pull's cost on the server. The budget counts the bytes sent.
    items: list[NodeOut] = []
    total, more = 0, False
    with rows:  # closed however the page ends (a row that cannot be packed, say)
        for seq, uploaded_at, envelope in rows:
            if len(items) == limit:  # the row past the page: it only says there is more
                more = True
                break
            wire = as_packed(envelope) if packed else as_json(envelope)
            total += len(wire)
            if items and total > MAX_PAGE_BYTES:
                more = True
                break
            items.append(NodeOut(seq=seq, uploaded_at=_isoformat(uploaded_at),
                                 envelope=cast(EnvelopeWire, msgspec.Raw(wire))))  # fmt: skip
    cursor = items[-1].seq if items else max(after, 0)
    return PullPage(
        vault=vault, items=items, cursor=cursor, more=more, chain_seqno=team.chain_seqno
    )


def _isoformat(stamp: object) -> str:
    """An ``uploaded_at`` as the wire carries it, from SQLite's stored text or the datetime
    PostgreSQL's driver hands over: the same string the ORM's datetime gave.

    SQLAlchemy stores ``YYYY-MM-DD HH:MM:SS.ffffff``; its ISO form differs only in the ``T`` and
    in dropping a zero fraction: a string edit (0.28 µs a row against 0.58 for parsing and
    formatting it, measured beside a CI run). Any other text is parsed."""
    if isinstance(stamp, str) and len(stamp) == _STORED_LEN and stamp[10] == " ":
        return stamp[:10] + "T" + (stamp[11:19] if stamp.endswith(".000000") else stamp[11:])
    moment = datetime.fromisoformat(stamp) if isinstance(stamp, str) else cast(datetime, stamp)
    return moment.isoformat()


_STORED_LEN: Final = len("2026-01-01 00:00:00.000000")


def sync_status(
    db: Session, principal: Principal, vault: str, after: int, now: datetime
) -> SyncStatusOut:
    """Head sequence and counts from the vault row; ``pending_pull`` counts what a pull after
    ``after`` would return (the rows the caller may read, on the (vault, seq) index), not the
    sequence numbers: a share takes one and holds no node, another member's unshared rows are
    not the caller's to pull."""
    team, member = acl.require_vault(db, principal, vault, "pull")
    readable = (
        select(NodeRecord.seq)
        .where(acl.readable_clause(team, member, now), NodeRecord.seq > after)
        .limit(EXACT_PENDING_UP_TO + 1)
    ).subquery()
    pending = int(db.scalar(select(func.count()).select_from(readable)) or 0)
    if pending > EXACT_PENDING_UP_TO:  # far behind: the bound, not a count of a whole vault
        pending = max(team.head_seq - after, pending)
    return SyncStatusOut(
        vault=vault,
        head_seq=team.head_seq,
        node_count=team.node_count,
        after=after,
        pending_pull=pending,
    )


EXACT_PENDING_UP_TO = 10_000
"""Status counts what is left to pull exactly up to this many rows (a bounded index walk per
request, row B13); further behind, it answers the sequence numbers left, an upper bound."""


def sessions_page(
    db: Session, principal: Principal, vault: str, after: int, limit: int, now: datetime
) -> SessionPage:
    """Sessions (leaf nodes) of a vault readable by the caller, paginated by sequence."""
    team, member = acl.require_vault(db, principal, vault, "pull")
    parent_ids = select(NodeRecord.parent_id).where(
        NodeRecord.vault_id == team.id, NodeRecord.parent_id.is_not(None)
    )
    records = db.scalars(
        select(NodeRecord)
        .where(
            acl.readable_clause(team, member, now),
            NodeRecord.seq > after,
            NodeRecord.node_id.not_in(parent_ids),
        )
        .order_by(NodeRecord.seq)
        .limit(limit + 1)
    ).all()
    more = len(records) > limit
    page = records[:limit]
    return SessionPage(
        items=[
            SessionInfo(
                session_id=r.node_id,
                vault=r.vault_id,
                seq=r.seq,
                uploaded_at=r.uploaded_at.isoformat(),
                metadata=dict(r.clear_metadata),
            )
            for r in page
        ],
        cursor=page[-1].seq if page else after,
        more=more,
    )


def node(db: Session, principal: Principal, node_id: str, now: datetime) -> NodeOut:
    """One envelope by its keyed node ID; a read through a share is audited."""
    record = _find(db, principal, node_id, now)
    record_shared_read(db, principal, record, now)
    return node_out(record)


def _find(db: Session, principal: Principal, node_id: str, now: datetime) -> NodeRecord:
    """The node if any vault of the caller holds it readably, by its ID or by the ID it had
    before it was sealed again (a signed share names its leaf so); 404 otherwise."""
    try:
        return _find_stored(db, principal, node_id, now)
    except NotFound:
        renamed = aliases_of(db, None, [node_id]).get(node_id)
        if renamed is None:
            raise
        return _find_stored(db, principal, renamed, now)


def _find_stored(db: Session, principal: Principal, node_id: str, now: datetime) -> NodeRecord:
    vaults = db.execute(
        select(Team, TeamMember)
        .join(TeamMember, TeamMember.team_id == Team.id)
        .join(NodeRecord, NodeRecord.vault_id == Team.id)
        .where(
            TeamMember.user_id == principal.user_id,
            TeamMember.removed_at.is_(None),
            NodeRecord.node_id == node_id,
        )
    ).all()
    for team, member in vaults:
        if not principal.key_allows(team.id, "pull") or member.role not in acl.READERS:
            continue
        record = db.scalar(
            select(NodeRecord).where(
                acl.readable_clause(team, member, now), NodeRecord.node_id == node_id
            )
        )
        if record is not None:
            return record
    raise NotFound(_NO_NODE)


def _within_budget(sizes: Sequence[int]) -> int:
    """How many of these envelopes (in order) one page carries: as many as fit in
    ``MAX_PAGE_BYTES``, and always the first, which alone may be larger (up to a batch)."""
    total = 0
    for count, size in enumerate(sizes):
        total += size
        if total > MAX_PAGE_BYTES and count > 0:
            return count
    return len(sizes)


def ancestry(
    db: Session, principal: Principal, node_id: str, now: datetime, limit: int
) -> AncestryPage:
    """Walk at most ``limit`` parent links from ``node_id``, each to a node stored *before* its
    child (a smaller sequence number). IDs are chosen by clients and retention deletes nodes, so
    an ID can be stored again after its own descendants: without that rule a walk could loop
    forever. Only what the caller may read is served (a path through nodes no longer shared is
    cut there), within the page byte budget; sizes are read first and envelopes only for the
    page, so a page of huge envelopes never sits in memory whole."""
    first = _find(db, principal, node_id, now)
    asked, node_id = node_id, first.node_id  # the ID it has now, if asked for by an old one
    record_shared_read(db, principal, first, now)
    team = db.get(Team, first.vault_id)
    found = acl.membership(db, principal.user_id, first.vault_id)
    if team is None or found is None:  # pragma: no cover - _find checked both
        raise NotFound(_NO_NODE)
    vault = first.vault_id
    anc = (
        select(NodeRecord.node_id, NodeRecord.parent_id, NodeRecord.seq, literal(0).label("depth"))
        .where(NodeRecord.vault_id == vault, NodeRecord.node_id == node_id)
        .cte("anc", recursive=True)
    )
    anc = anc.union_all(
        select(
            NodeRecord.node_id,
            NodeRecord.parent_id,
            NodeRecord.seq,
            (anc.c.depth + 1).label("depth"),
        )
        .join(anc, and_(NodeRecord.vault_id == vault, NodeRecord.node_id == anc.c.parent_id))
        .where(anc.c.depth < limit - 1, NodeRecord.seq < anc.c.seq)
    )
    walked = db.execute(
        select(NodeRecord.node_id, NodeRecord.parent_id, func.length(NodeRecord.envelope))
        .join(anc, and_(NodeRecord.vault_id == vault, NodeRecord.node_id == anc.c.node_id))
        .where(acl.readable_clause(team, found[1], now))
        .order_by(anc.c.depth)
    ).all()
    path: list[tuple[str, str | None, int]] = []
    expected: str | None = node_id
    for walked_id, parent_id, size in walked:
        if walked_id != expected:
            break
        path.append((walked_id, parent_id, size))
        expected = parent_id
    readable = len(path)
    # Stored sizes choose which rows to load (a packed row is smaller than its JSON, never
    # larger); the JSON the page carries then cuts the page where the budget ends.
    path = path[: _within_budget([size for _id, _parent, size in path])]
    ids = [walked_id for walked_id, _parent, _size in path]
    records = {
        r.node_id: r
        for r in db.scalars(
            select(NodeRecord).where(
                NodeRecord.vault_id == vault, one_of(db, NodeRecord.node_id, ids)
            )
        )
    }
    path = path[: _within_budget([len(as_json(records[i].envelope)) for i in ids])]
    ids = ids[: len(path)]
    last_parent = path[-1][1] if path else None
    more = last_parent is not None and (
        len(path) < readable or _readable_parent(db, team, found[1], path[-1][0], now)
    )
    items, named = [], cast("str | None", asked)
    for walked_id in ids:  # each node as the step before named it (an old ID, after a reseal)
        item = node_out(records[walked_id])
        if named != walked_id:
            item = msgspec.structs.replace(item, renamed_from=named)
        items.append(item)
        named = item.envelope.parent_id
    return AncestryPage(items=items, next=named if more else None)


def _readable_parent(
    db: Session, team: Team, member: TeamMember, child_id: str, now: datetime
) -> bool:
    """Whether the walk would go on past ``child_id``: its parent is stored before it and the
    caller may read it."""
    child = aliased(NodeRecord)
    return (
        db.scalar(
            select(NodeRecord.seq)
            .join(child, and_(child.vault_id == team.id, child.parent_id == NodeRecord.node_id))
            .where(
                acl.readable_clause(team, member, now),
                child.node_id == child_id,
                NodeRecord.seq < child.seq,
            )
        )
        is not None
    )
