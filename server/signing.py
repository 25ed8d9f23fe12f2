"""The server's own signing key: made once, by a migration, and kept in its database.

It signs the head of each team's audit log (:mod:`keymgmt.audit`); clients pin its public half
(``GET /.well-known/tapes-server-key``) on first use. Who can read the database can also read
this key and sign a rewritten log; what stops a rewrite of entries a client has seen is the head
that client pinned, which no rewritten log contains.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from keymgmt.audit import server_public_key
from server.db.models import ServerKey

__all__ = ["AUDIT_KEY", "public_key", "signing_seed"]

AUDIT_KEY = "audit"


def signing_seed(db: Session) -> bytes:
    """The audit key's seed, made by the migration that added the table (0012)."""
    row = db.get(ServerKey, AUDIT_KEY)
    if row is None:  # pragma: no cover - the migration always makes it
        raise RuntimeError("the server has no audit signing key: run its migrations")
    return bytes(row.seed)


def public_key(db: Session) -> bytes:
    return server_public_key(signing_seed(db))
