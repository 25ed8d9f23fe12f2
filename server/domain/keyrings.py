"""Team keyrings on the server: what an uploaded keyring must be, storing it, and fetching the
keyrings sealed to one member.

The server cannot open a keyring; it refuses one that clients would refuse (wrong team or
version, a sealer who was not an owner or admin at the keyring's chain position, an epoch that
had not started there, a bad signature) and one sealed to anybody but exactly the team's content
readers — so a viewer or a removed member is never handed an epoch key, even sealed.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
from sqlalchemy import delete as sql_delete
from sqlalchemy import select
from sqlalchemy.orm import Session

from keymgmt import IntegrityError as KeyIntegrityError
from keymgmt import VerifiedTeamState, labels
from keymgmt.keyring import UnverifiedKeyring, may_seal, parse_keyring
from server.db.models import Keyring
from server.deps import aware
from server.errors import BadRequest
from tapes_e2e.protocol.teams import KeyringOut, SignedWire

__all__ = ["check_keyring", "drop_keyrings", "keyrings_for", "store_keyring"]

_to_builtins = msgspec.to_builtins


def keyrings_for(db: Session, team_id: str, fingerprint: str) -> list[KeyringOut]:
    """The keyrings of ``team_id`` sealed to ``fingerprint``, by epoch, as stored."""
    rows = db.scalars(
        select(Keyring)
        .where(Keyring.team_id == team_id, Keyring.recipient == fingerprint)
        .order_by(Keyring.epoch)
    ).all()
    return [
        KeyringOut(
            epoch=r.epoch,
            keyring=msgspec.convert(r.sealed, SignedWire),
            created_at=aware(r.created_at).isoformat(),
        )
        for r in rows
    ]


def check_keyring(wire: SignedWire, state: VerifiedTeamState, sealer: str) -> UnverifiedKeyring:
    """Refuse a keyring clients would refuse, or one sealed to anybody who is not now a reader."""
    try:
        keyring = parse_keyring(_to_builtins(wire))
    except KeyIntegrityError:
        raise BadRequest("malformed keyring") from None
    body = keyring.body
    if body.version != labels.PROTOCOL_VERSION or body.team != state.team:
        raise BadRequest("the keyring belongs to another team or protocol version")
    if body.sealer != sealer:
        raise BadRequest("the keyring is not sealed by your identity")
    if not 0 <= body.at_seqno < len(state.checkpoints):
        raise BadRequest("the keyring names a chain position the team does not have")
    point = state.checkpoints[body.at_seqno]
    if point.hash != body.at_hash:
        raise BadRequest("the keyring was sealed against a different chain")
    if not may_seal(point, sealer):
        raise BadRequest("the sealer was not an owner or admin at the keyring's chain position")
    if not 1 <= body.epoch <= point.epoch:
        raise BadRequest(f"epoch {body.epoch} had not started at the keyring's chain position")
    recipients = set(body.recipients)
    if recipients != point.readers or not recipients <= state.readers:
        raise BadRequest(
            "the keyring's recipients must be exactly the team's content readers "
            "(owners, admins, members; never viewers or removed members)"
        )
    public = state.known_identities[sealer]
    if not public.verify(labels.KEYRING_SIGNATURE + keyring.body_bytes, keyring.signature):
        raise BadRequest("the keyring's signature does not verify")
    return keyring


def drop_keyrings(db: Session, team_id: str, fingerprint: str) -> None:
    """Forget every keyring of ``team_id`` sealed to ``fingerprint`` (a member out of the team, a
    reader made viewer, a key rotated away from)."""
    db.execute(
        sql_delete(Keyring).where(Keyring.team_id == team_id, Keyring.recipient == fingerprint)
    )


def store_keyring(db: Session, team_id: str, keyring: UnverifiedKeyring, now: datetime) -> None:
    body = keyring.body
    recipients = sorted(body.recipients)
    db.execute(
        sql_delete(Keyring).where(
            Keyring.team_id == team_id,
            Keyring.epoch == body.epoch,
            Keyring.recipient.in_(recipients),
        )
    )
    db.add_all(
        Keyring(
            team_id=team_id,
            epoch=body.epoch,
            recipient=fp,
            sealed=keyring.to_dict(),
            created_at=now,
        )
        for fp in recipients
    )
