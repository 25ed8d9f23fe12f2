"""Sealing a vault's history again under its current epoch (``tapes team reencrypt``).

After a removal or a stolen key, the nodes sealed before stay readable to whoever holds an
older epoch key and a copy of the server's data. A member re-seals *their own uploads* (the
server lets nobody replace what someone else uploaded): the client opens each node under its
old epoch, seals it under the current one (its ID changes with the epoch) and sends both IDs;
the server swaps the row in place. The new row keeps the old one's sequence number (pull
cursors and the ancestry walk's order hold), uploader (the ACL and shares follow) and clear
metadata (usage was counted once, at push); children's parent links, share memberships and
an alias from the old ID follow, so signed shares and clients that synced before keep
finding the node. Each batch is one transaction under the vault row's lock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import msgspec
from sqlalchemy import ColumnElement, and_, func, select, update
from sqlalchemy import delete as sql_delete
from sqlalchemy.orm import Session

from server import acl, audit
from server.db.models import NodeAlias, NodeRecord, Share, ShareNode, Team
from server.db.queries import one_of
from server.deps import Principal
from server.domain.nodes.aliases import aliases_of
from server.domain.nodes.services import check_envelope, node_out
from server.domain.nodes.stored import store_form
from server.errors import BadRequest, Conflict
from tapes_e2e.protocol import (
    EnvelopeWire,
    Problem,
    PullPage,
    ResealItem,
    ResealRequest,
    ResealStatus,
)

__all__ = ["reseal", "stale_page", "status"]

_encode = msgspec.json.Encoder().encode
_decode_metadata = msgspec.json.Decoder(dict[str, object]).decode


def _stale(team: Team) -> ColumnElement[bool]:
    """Encrypted nodes of ``team`` under an epoch older than its current one."""
    return and_(
        NodeRecord.vault_id == team.id,
        NodeRecord.epoch < team.epoch,
        NodeRecord.metadata_only.is_(False),
    )


def status(db: Session, principal: Principal, vault: str) -> ResealStatus:
    """How many of the vault's encrypted nodes are under an older epoch: the caller's, others'."""
    team, _member = acl.require_vault(db, principal, vault, "push")
    mine = NodeRecord.uploader_id == principal.user_id
    counts = dict(db.execute(select(mine, func.count()).where(_stale(team)).group_by(mine)).all())
    return ResealStatus(
        vault=vault, epoch=team.epoch, mine=counts.get(True, 0), others=counts.get(False, 0)
    )


def stale_page(db: Session, principal: Principal, vault: str, after: int, limit: int) -> PullPage:
    """The caller's own encrypted nodes under an older epoch, by sequence number (parents come
    before their children: a parent is always stored first)."""
    team, _member = acl.require_vault(db, principal, vault, "push")
    rows = db.scalars(
        select(NodeRecord)
        .where(_stale(team), NodeRecord.uploader_id == principal.user_id, NodeRecord.seq > after)
        .order_by(NodeRecord.seq)
        .limit(limit + 1)
    ).all()
    page = rows[:limit]
    return PullPage(
        vault=vault,
        items=[node_out(r) for r in page],
        cursor=page[-1].seq if page else after,
        more=len(rows) > limit,
        chain_seqno=team.chain_seqno,
    )


def _check(team: Team, old: NodeRecord | None, item: ResealItem, user_id: str,
           parent_now: str | None) -> EnvelopeWire:  # fmt: skip
    """Refuse a swap that is not the caller's own stale node sealed again as the same node."""
    env = item.envelope
    if old is None or old.uploader_id != user_id:
        raise BadRequest(f"node {item.old_id}: not a node you uploaded to vault {team.id}")
    if old.epoch >= team.epoch or old.metadata_only:
        raise Conflict(f"node {item.old_id} is already sealed under the current epoch")
    if env.team != team.id or env.epoch != team.epoch or env.ciphertext is None:
        raise Conflict(
            f"node {item.old_id}: seal it again under vault {team.id}'s epoch {team.epoch}",
            problem=Problem.STALE_EPOCH,
        )
    if env.node_id == item.old_id or env.record_type != old.record_type:
        raise BadRequest(f"node {item.old_id}: the new envelope is not this node sealed again")
    if env.metadata != _decode_metadata(_encode(old.clear_metadata)):
        raise BadRequest(f"node {item.old_id}: the clear metadata must stay as it was")
    if (env.parent_id is None) != (old.parent_id is None) or parent_now != old.parent_id:
        raise BadRequest(f"node {item.old_id}: the new envelope names another parent")
    return env


def reseal(db: Session, principal: Principal, data: ResealRequest, now: datetime) -> int:
    """Swap each of the caller's stale nodes for its new envelope; the number swapped."""
    team, _member = acl.require_vault(db, principal, data.vault, "push")
    for item in data.items:
        check_envelope(data.vault, item.envelope)
    team = db.scalars(
        select(Team).where(Team.id == team.id).with_for_update()
        .execution_options(populate_existing=True)
    ).one()  # fmt: skip
    olds = {
        r.node_id: r
        for r in db.scalars(
            select(NodeRecord).where(
                NodeRecord.vault_id == team.id,
                one_of(db, NodeRecord.node_id, [i.old_id for i in data.items]),
            )
        )
    }
    for item in data.items:  # in order: a parent swapped earlier in the batch is found
        parents = [item.envelope.parent_id] if item.envelope.parent_id else []
        parent_now = _current(db, team.id, parents).get(item.envelope.parent_id or "")
        env = _check(team, olds.get(item.old_id), item, principal.user_id, parent_now)
        _swap(db, team, olds[item.old_id], env, now)
    audit.record(
        db, team_id=team.id, actor_id=principal.user_id, action="history_resealed",
        subject=team.id, detail={"nodes": len(data.items), "epoch": team.epoch}, now=now,
    )  # fmt: skip
    return len(data.items)


def _current(db: Session, vault: str, ids: Sequence[str]) -> Mapping[str, str]:
    """Each ID as the vault names the node now: itself if stored, else what it became."""
    stored = set(
        db.scalars(
            select(NodeRecord.node_id).where(
                NodeRecord.vault_id == vault, one_of(db, NodeRecord.node_id, ids)
            )
        )
    )
    return {i: i for i in stored} | aliases_of(db, vault, [i for i in ids if i not in stored])


def _swap(db: Session, team: Team, old: NodeRecord, env: EnvelopeWire, now: datetime) -> None:
    """Replace ``old`` by ``env`` in place, and point everything that named the old ID at the
    new one. If the vault holds the node under the current epoch already (the same content
    pushed again), one row stays: the new envelope at the old place when the same member
    uploaded both; else the other member's row, which their own ACL and shares rely on."""
    blob = store_form(env)
    old_id, new_id = old.node_id, env.node_id
    taken = db.get(NodeRecord, (team.id, new_id))
    team.bytes_stored -= len(old.envelope)
    _delete(db, old)
    if taken is not None and taken.uploader_id != old.uploader_id:
        team.node_count -= 1
    else:
        if taken is not None:
            team.node_count -= 1
            team.bytes_stored -= len(taken.envelope)
            _delete(db, taken)
        db.add(NodeRecord(
            vault_id=team.id, node_id=new_id, parent_id=old.parent_id, seq=old.seq,
            epoch=env.epoch, record_type=env.record_type, author=env.author,
            padded_size=env.padded_size, metadata_only=False,
            clear_metadata=old.clear_metadata, envelope=blob, uploader_id=old.uploader_id,
            uploaded_at=old.uploaded_at,
        ))  # fmt: skip
        team.bytes_stored += len(blob)
    db.flush()
    _rename(db, team.id, old_id, new_id, now)


def _delete(db: Session, record: NodeRecord) -> None:
    """Delete the row now and forget the object (its loaded fields stay readable), so a row
    with its ID or sequence number can be added in the same transaction."""
    db.execute(
        sql_delete(NodeRecord).where(
            NodeRecord.vault_id == record.vault_id, NodeRecord.node_id == record.node_id
        )
    )
    db.expunge(record)


def _rename(db: Session, vault: str, old_id: str, new_id: str, now: datetime) -> None:
    """Children's parent links, the vault's share memberships and earlier aliases follow the
    node to ``new_id``; the old ID becomes an alias of it."""
    db.execute(
        update(NodeRecord)
        .where(NodeRecord.vault_id == vault, NodeRecord.parent_id == old_id)
        .values(parent_id=new_id)
    )
    shares = select(Share.id).where(Share.team_id == vault)
    holding = select(ShareNode.share_id).where(ShareNode.node_id == new_id)
    db.execute(
        update(ShareNode)
        .where(
            ShareNode.node_id == old_id,
            ShareNode.share_id.in_(shares),
            ShareNode.share_id.not_in(holding),
        )
        .values(node_id=new_id)
    )
    db.execute(
        sql_delete(ShareNode).where(ShareNode.node_id == old_id, ShareNode.share_id.in_(shares))
    )
    db.execute(
        update(NodeAlias)
        .where(NodeAlias.vault_id == vault, NodeAlias.node_id == old_id)
        .values(node_id=new_id)
    )
    db.add(NodeAlias(vault_id=vault, old_id=old_id, node_id=new_id, created_at=now))
    db.flush()
