"""Old node IDs: what a node was called before ``tapes team reencrypt`` sealed it again under a
later epoch (see :mod:`server.domain.nodes.reseal`). Lookups by ID resolve through them."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.db.models import NodeAlias
from server.db.queries import one_of

__all__ = ["aliases_of"]


def aliases_of(db: Session, vault: str | None, ids: Sequence[str]) -> dict[str, str]:
    """The node each of ``ids`` that is an old ID (of ``vault``, or of any vault) now is."""
    if not ids:
        return {}
    query = select(NodeAlias.old_id, NodeAlias.node_id).where(one_of(db, NodeAlias.old_id, ids))
    if vault is not None:
        query = query.where(NodeAlias.vault_id == vault)
    return {old: new for old, new in db.execute(query)}  # noqa: C416 - rows, not pairs
