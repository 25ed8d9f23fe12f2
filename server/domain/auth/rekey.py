"""Rotating an account's identity key (``POST /auth/rekey``, ``tapes keys rotate``).

One transaction replaces the key everywhere the account is: each vault it is a member of gets the
``rekey`` statement its old key signed (with the new key's proof), checked by keymgmt against the
stored chain, and the keyrings the new key sealed at it; the account's registered keys change;
the old key is retired (it never logs in or registers again); and everything the old key may
have left in a thief's hands ends: every login and API key of the account, the shares it signed,
its pending join requests (their proofs name the old key). A request that misses a vault, or
that any vault refuses, changes nothing.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from sqlalchemy import CursorResult, Update, func, or_, select, update
from sqlalchemy import delete as sql_delete
from sqlalchemy.orm import Session

from keymgmt import ChainError, PublicIdentity, extend_chain
from keymgmt.login import verify_rekey
from server import audit
from server.db.models import (
    AccessToken,
    ApiKey,
    Device,
    JoinRequest,
    RefreshToken,
    RetiredKey,
    Share,
    Team,
    TeamMember,
    User,
)
from server.deps import Principal
from server.domain.chain import (
    interactive_user,
    lock_team,
    parse_signed,
    store_statements,
    verified_state,
)
from server.domain.keyrings import check_keyring, drop_keyrings, store_keyring
from server.errors import BadRequest, Conflict
from tapes_e2e.protocol import Problem
from tapes_e2e.protocol.teams import RekeyOut, RekeyRequest, RekeyVault

__all__ = ["rekey"]


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _new_key(db: Session, user: User, data: RekeyRequest, audience: str) -> PublicIdentity:
    """The new public key, signed into the account by the old key and by itself, and unknown
    to this server (no account has it, nobody rotated away from it)."""
    try:
        new = PublicIdentity(bytes.fromhex(data.keys.x25519), bytes.fromhex(data.keys.ed25519))
    except ValueError:
        raise BadRequest("keys: not valid X25519/Ed25519 public keys") from None
    old = PublicIdentity(user.x25519, user.ed25519)
    if new.ed25519 == old.ed25519 or new.x25519 == old.x25519:
        raise BadRequest("the new key is the account's current key")
    if not verify_rekey(
        old, new, server=audience, user_id=user.id,
        old_signature=_unb64(data.old_signature), new_signature=_unb64(data.new_signature),
    ):  # fmt: skip
        raise BadRequest("the key rotation must be signed by both the current and the new key")
    known = db.scalar(
        select(func.count()).select_from(User)
        .where(or_(User.ed25519 == new.ed25519, User.fingerprint == new.fingerprint))
    ) or db.scalar(
        select(func.count()).select_from(RetiredKey)
        .where(or_(RetiredKey.ed25519 == new.ed25519, RetiredKey.fingerprint == new.fingerprint))
    )  # fmt: skip
    if known:
        raise Conflict("that key belongs to another account, or was retired; make a new one")
    return new


def _vaults(db: Session, user: User, data: RekeyRequest) -> list[RekeyVault]:
    """The request's vaults, which must be exactly those the account is now in (whose chain
    names its key), in id order: the order every rotation locks them in."""
    current = set(
        db.scalars(
            select(TeamMember.team_id)
            .join(Team, Team.id == TeamMember.team_id)
            .where(
                TeamMember.user_id == user.id,
                TeamMember.removed_at.is_(None),
                Team.chain_seqno >= 0,
            )
        )
    )
    given = [v.vault for v in data.vaults]
    if len(set(given)) != len(given):
        raise BadRequest("a vault is named twice")
    extra = sorted(set(given) - current)
    if extra:
        raise BadRequest(f"you are not a member of: {', '.join(extra)}")
    missing = sorted(current - set(given))
    if missing:  # joined one since the client looked: it fetches the list again and re-signs
        raise Conflict(
            f"a key rotation must name every vault you are in; missing: {', '.join(missing)}",
            problem=Problem.CHAIN_MOVED,
        )
    return sorted(data.vaults, key=lambda v: v.vault)


def _record_in_vault(
    db: Session, user: User, new: PublicIdentity, part: RekeyVault, now: datetime
) -> None:
    """The ``rekey`` statement, verified as the continuation of the stored chain, and the
    keyrings the new key sealed at it; the old key's keyrings go."""
    team = lock_team(db, part.vault)
    if team.chain_seqno != part.expected_head_seqno:
        raise Conflict(
            f"the chain of vault {team.id} moved: its head is {team.chain_seqno}, not "
            f"{part.expected_head_seqno}; fetch it, verify it and sign again",
            problem=Problem.CHAIN_MOVED,
        )
    statement = parse_signed(part.statement, now)
    body = statement.body
    keys = body.member_keys
    if (
        body.action != "rekey"
        or body.signer != user.fingerprint
        or body.member != new.fingerprint
        or keys is None
        or (keys.x25519, keys.ed25519) != (new.x25519.hex(), new.ed25519.hex())
    ):
        raise BadRequest(
            f"vault {team.id}: the statement must be a rekey from your current key to the new one"
        )
    state = verified_state(db, team, now)
    try:
        extended = extend_chain(state, [statement], now=int(now.timestamp()))
    except ChainError as exc:
        raise BadRequest(f"vault {team.id}: the chain refuses this statement: {exc}") from None
    keyrings = [check_keyring(wire, extended, new.fingerprint) for wire in part.keyrings]
    if extended.epoch != state.epoch and extended.epoch not in {k.body.epoch for k in keyrings}:
        raise BadRequest(
            f"vault {team.id}: the rotation starts epoch {extended.epoch}; seal its keyring"
        )
    store_statements(db, team, [statement], extended, now)
    drop_keyrings(db, team.id, user.fingerprint)
    for keyring in keyrings:
        store_keyring(db, team.id, keyring, now)
    audit.record(
        db, team_id=team.id, actor_id=user.id, action="member_rekeyed", subject=new.fingerprint,
        detail={"seqno": body.seqno, "epoch": body.epoch, "old": user.fingerprint}, now=now,
    )  # fmt: skip


def _count(db: Session, statement: Update) -> int:
    result: CursorResult[Any] = db.execute(statement)  # type: ignore[assignment]
    return result.rowcount


def _end_old_key(db: Session, user: User, now: datetime) -> tuple[int, int, int, int]:
    """End what the old key may have left behind: (logins, API keys, shares, join requests)."""
    logins = _count(
        db,
        update(Device)
        .where(Device.user_id == user.id, Device.revoked_at.is_(None))
        .values(revoked_at=now),
    )
    db.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    db.execute(sql_delete(AccessToken).where(AccessToken.user_id == user.id))
    api_keys = _count(
        db,
        update(ApiKey)
        .where(ApiKey.user_id == user.id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=now),
    )
    shares = _count(
        db,
        update(Share)
        .where(Share.shared_by == user.id, Share.revoked_at.is_(None))
        .values(revoked_at=now),
    )
    requests = _count(
        db,
        update(JoinRequest)
        .where(JoinRequest.user_id == user.id, JoinRequest.status == "pending")
        .values(status="rejected"),
    )
    return logins, api_keys, shares, requests


def rekey(
    db: Session, principal: Principal, audience: str, data: RekeyRequest, now: datetime
) -> RekeyOut:
    """Replace the caller's identity key in every vault and on the account, in one transaction."""
    user = interactive_user(db, principal, "rotate the identity key")
    new = _new_key(db, user, data, audience)
    vaults = _vaults(db, user, data)
    for part in vaults:
        _record_in_vault(db, user, new, part, now)
    old = user.fingerprint
    db.add(RetiredKey(fingerprint=old, ed25519=user.ed25519, user_id=user.id, retired_at=now))
    user.x25519, user.ed25519, user.fingerprint = new.x25519, new.ed25519, new.fingerprint
    logins, api_keys, shares, requests = _end_old_key(db, user, now)
    audit.record(
        db, team_id=None, actor_id=user.id, action="identity_rotated", subject=new.fingerprint,
        detail={"old": old, "vaults": len(vaults), "logins_ended": logins}, now=now,
    )  # fmt: skip
    return RekeyOut(
        fingerprint=new.fingerprint,
        vaults=[v.vault for v in vaults],
        logins_ended=logins,
        api_keys_revoked=api_keys,
        shares_ended=shares,
        join_requests_withdrawn=requests,
    )
