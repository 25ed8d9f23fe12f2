"""The rules of signing in: challenges, login and sign-up, token families, API keys.

No HTTP here: the controllers hand in the parsed body, the caller's address and the clock, and
turn what these functions raise (``server.errors``) into problem+json answers.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from datetime import datetime, timedelta

from sqlalchemy import delete as sql_delete
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from keymgmt import PublicIdentity
from keymgmt.login import verify_login
from server import acl, audit
from server.db.models import (
    AccessToken,
    ApiKey,
    AuthChallenge,
    Device,
    RefreshToken,
    RetiredKey,
    Team,
    TeamMember,
    User,
)
from server.deps import Principal, aware, token_hash
from server.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from server.settings import Settings
from tapes_e2e.protocol import (
    API_KEY_PREFIX,
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyInfo,
    Challenge,
    DeviceOut,
    LoginRequest,
    PublicKeys,
    TokenPair,
    UserOut,
)

__all__ = [
    "CHALLENGE_TTL",
    "account",
    "create_api_key",
    "devices",
    "list_api_keys",
    "log_in",
    "log_out",
    "new_challenge",
    "refresh",
    "revoke_api_key",
    "revoke_device",
]

CHALLENGE_TTL = timedelta(seconds=60)
_LOGIN_FAILED = "login failed: the signature, challenge or account is not valid"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_challenge(db: Session, audience: str, now: datetime) -> Challenge:
    """A single-use nonce to sign with the identity key; expired ones are swept on the way."""
    db.execute(sql_delete(AuthChallenge).where(AuthChallenge.expires_at < now))
    item = AuthChallenge(
        id=secrets.token_urlsafe(24),
        nonce=secrets.token_bytes(32),
        expires_at=now + CHALLENGE_TTL,
    )
    db.add(item)
    return Challenge(
        challenge_id=item.id,
        nonce=_b64(item.nonce),
        audience=audience,
        expires_at=item.expires_at.isoformat(),
    )


def _issue(db: Session, settings: Settings, user: User, family: str, now: datetime) -> TokenPair:
    access, refresh_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    db.add(
        AccessToken(
            token_hash=token_hash(access),
            user_id=user.id,
            family_id=family,
            expires_at=now + timedelta(seconds=settings.access_ttl),
        )
    )
    db.add(
        RefreshToken(
            token_hash=token_hash(refresh_token),
            family_id=family,
            user_id=user.id,
            expires_at=now + timedelta(seconds=settings.refresh_ttl),
        )
    )
    return TokenPair(
        access_token=access,
        refresh_token=refresh_token,
        expires_in=settings.access_ttl,
        user_id=user.id,
        fingerprint=user.fingerprint,
        personal_vault=user.personal_vault,
    )


def _taken(db: Session, handle: str) -> str:
    if db.scalar(select(User.id).where(User.handle == handle)) is not None:
        return f"the handle {handle!r} is taken"
    return "this key was registered a moment ago; log in without a handle"


def _register(db: Session, public: PublicIdentity, handle: str, now: datetime) -> User:
    user_id = str(uuid.uuid4())
    vault_id = "v_" + secrets.token_urlsafe(12).replace("-", "x").replace("_", "y")
    user = User(
        id=user_id,
        handle=handle,
        x25519=public.x25519,
        ed25519=public.ed25519,
        fingerprint=public.fingerprint,
        personal_vault=vault_id,
        created_at=now,
    )
    try:
        with db.begin_nested():
            db.add(user)
            db.flush()
    except IntegrityError:  # a concurrent sign-up took the handle (or this key) first
        raise Conflict(_taken(db, handle)) from None
    db.add(
        Team(
            id=vault_id,
            name=f"{handle} (personal)",
            slug=f"personal-{user_id}",
            kind="personal",
            owner_id=user_id,
            tier="free",
            head_seq=0,
            node_count=0,
            chain_seqno=-1,
            epoch=1,  # no chain yet; its genesis (epoch 1) comes at the first login
            created_at=now,
        )
    )
    db.flush()
    db.add(TeamMember(team_id=vault_id, user_id=user_id, role="owner", joined_at=now))
    return user


def log_in(
    db: Session, settings: Settings, audience: str, data: LoginRequest, client: str,
    now: datetime,
) -> TokenPair:  # fmt: skip
    """Log in (or, with ``handle``, register) by a signature over a live challenge. Every
    failure that could tell who exists is the same ``Unauthorized``."""
    challenge = db.scalar(
        select(AuthChallenge).where(AuthChallenge.id == data.challenge_id).with_for_update()
    )
    if challenge is None or challenge.used_at is not None or aware(challenge.expires_at) < now:
        raise Unauthorized(_LOGIN_FAILED)
    challenge.used_at = now
    try:
        public = PublicIdentity(bytes.fromhex(data.keys.x25519), bytes.fromhex(data.keys.ed25519))
    except ValueError:
        raise BadRequest("keys: not valid X25519/Ed25519 public keys") from None
    if not verify_login(
        public,
        server=audience,
        challenge_id=challenge.id,
        nonce=challenge.nonce,
        signature=_unb64(data.signature),
    ):
        raise Unauthorized(_LOGIN_FAILED)
    user = db.scalar(select(User).where(User.ed25519 == public.ed25519))
    if user is None:
        retired = db.scalar(select(RetiredKey.user_id).where(RetiredKey.ed25519 == public.ed25519))
        if data.handle is None or retired is not None:  # a rotated-away key never comes back
            raise Unauthorized(_LOGIN_FAILED)
        if db.scalar(select(User.id).where(User.handle == data.handle)) is not None:
            raise Conflict(f"the handle {data.handle!r} is taken")
        user = _register(db, public, data.handle, now)
    elif user.x25519 != public.x25519:
        raise Unauthorized(_LOGIN_FAILED)
    family, device = str(uuid.uuid4()), data.device or "unnamed device"
    db.add(
        Device(
            id=family, user_id=user.id, name=device, created_at=now, last_seen_at=now,
            address=client[:64],
        )
    )  # fmt: skip
    audit.logged_in(db, user_id=user.id, device_id=family, device=device, now=now)
    return _issue(db, settings, user, family, now)


def refresh(
    db: Session, settings: Settings, presented: str, client: str, now: datetime
) -> TokenPair | None:
    """Rotate a refresh token. ``None`` means it was already spent: its whole family is now
    revoked and the reuse audited, and the caller must commit that and answer 401."""
    token = db.scalar(
        select(RefreshToken)
        .where(RefreshToken.token_hash == token_hash(presented))
        .with_for_update()
    )
    if token is None or token.revoked_at is not None or aware(token.expires_at) < now:
        raise Unauthorized("the refresh token is not valid; log in again")
    if token.used_at is not None:
        _revoke_family(db, token.family_id, now)
        audit.record(
            db, team_id=None, actor_id=token.user_id, action="refresh_token_reuse",
            subject=token.family_id, detail={"client": client}, now=now,
        )  # fmt: skip
        return None
    token.used_at = now
    device = db.get(Device, token.family_id)
    if device is not None:
        device.last_seen_at, device.address = now, client[:64]
    user = db.get(User, token.user_id)
    if user is None:  # pragma: no cover - users are not deleted while tokens exist
        raise Unauthorized("the refresh token is not valid; log in again")
    return _issue(db, settings, user, token.family_id, now)


def log_out(db: Session, presented: str, now: datetime) -> None:
    """End a login: its refresh token and every access token of its family stop working.
    Silent whether or not the token was live, so it reveals nothing."""
    token = db.scalar(select(RefreshToken).where(RefreshToken.token_hash == token_hash(presented)))
    if token is not None and token.revoked_at is None:
        _revoke_family(db, token.family_id, now)


def _revoke_family(db: Session, family: str, now: datetime) -> None:
    """End one login at once: its refresh tokens revoked, its access tokens gone, its device
    marked revoked."""
    db.execute(update(RefreshToken).where(RefreshToken.family_id == family).values(revoked_at=now))
    db.execute(sql_delete(AccessToken).where(AccessToken.family_id == family))
    db.execute(
        update(Device)
        .where(Device.id == family, Device.revoked_at.is_(None))
        .values(revoked_at=now)
    )


def _interactive(principal: Principal) -> str:
    """The caller's device: devices are managed from a login, never with an API key."""
    if principal.api_key_id is not None or principal.family_id is None:
        raise Forbidden("API keys cannot list or revoke devices; log in")
    return principal.family_id


def devices(db: Session, principal: Principal) -> list[DeviceOut]:
    """The account's live logins, most recently seen first; ``current`` marks the caller's."""
    current = _interactive(principal)
    rows = db.scalars(
        select(Device)
        .where(Device.user_id == principal.user_id, Device.revoked_at.is_(None))
        .order_by(Device.last_seen_at.desc(), Device.id)
    )
    return [
        DeviceOut(
            device_id=d.id, name=d.name, created_at=aware(d.created_at).isoformat(),
            last_seen_at=aware(d.last_seen_at).isoformat(), address=d.address,
            current=d.id == current,
        )
        for d in rows
    ]  # fmt: skip


def revoke_device(db: Session, principal: Principal, device_id: str, now: datetime) -> None:
    """End one of the account's logins at once (the caller's own included): its refresh and
    access tokens stop working with the next request. Another account's device is 404."""
    _interactive(principal)
    device = db.get(Device, device_id)
    if device is None or device.user_id != principal.user_id or device.revoked_at is not None:
        raise NotFound("no such device")
    _revoke_family(db, device.id, now)
    audit.record(
        db, team_id=None, actor_id=principal.user_id, action="device_revoked",
        subject=device.id, detail={"name": device.name}, now=now,
    )  # fmt: skip


def account(db: Session, principal: Principal) -> UserOut:
    """The calling account."""
    user = db.get(User, principal.user_id)
    if user is None:  # pragma: no cover - a principal always has a user
        raise Unauthorized("unknown account")
    return UserOut(
        user_id=user.id,
        handle=user.handle,
        fingerprint=user.fingerprint,
        keys=PublicKeys(x25519=user.x25519.hex(), ed25519=user.ed25519.hex()),
        github_login=user.github_login,
    )


def _no_key(principal: Principal) -> None:
    """A scoped API key (a CI's pull-only key, say) never lists or revokes its owner's keys."""
    if principal.api_key_id is not None:
        raise Forbidden("API keys cannot list or revoke API keys; log in")


def _info(key: ApiKey) -> ApiKeyInfo:
    return ApiKeyInfo(
        key_id=key.id,
        vault=key.team_id,
        permissions=key.permissions.split(","),
        name=key.name,
        created_at=key.created_at.isoformat(),
        last_used_at=key.last_used_at.isoformat() if key.last_used_at else None,
        revoked=key.revoked_at is not None,
    )


def create_api_key(
    db: Session, principal: Principal, data: ApiKeyCreate, now: datetime
) -> ApiKeyCreated:
    """A key for one vault, shown once and stored hashed. Needs an interactive login and admin
    rights there."""
    if principal.api_key_id is not None:
        raise Unauthorized("API keys cannot create API keys; log in")
    acl.require_role(db, principal, data.vault, {"owner", "admin"})
    secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        id=str(uuid.uuid4()),
        key_hash=token_hash(secret),
        team_id=data.vault,
        user_id=principal.user_id,
        permissions=",".join(sorted(set(data.permissions))),
        name=data.name,
        created_at=now,
    )
    try:
        with db.begin_nested():
            db.add(key)
    except IntegrityError:  # pragma: no cover - 256 random bits do not collide
        raise Conflict("try again") from None
    audit.record(
        db, team_id=data.vault, actor_id=principal.user_id, action="api_key_created",
        subject=key.id, detail={"permissions": key.permissions}, now=now,
    )  # fmt: skip
    return ApiKeyCreated(api_key=secret, info=_info(key))


def list_api_keys(db: Session, principal: Principal) -> list[ApiKeyInfo]:
    """Keys this account created. Only an interactive login manages keys."""
    _no_key(principal)
    keys = db.scalars(
        select(ApiKey).where(ApiKey.user_id == principal.user_id).order_by(ApiKey.created_at)
    )
    return [_info(k) for k in keys]


def revoke_api_key(db: Session, principal: Principal, key_id: str, now: datetime) -> None:
    """Revoke one of the caller's keys at once. Only an interactive login manages keys."""
    _no_key(principal)
    key = db.get(ApiKey, key_id)
    if key is None or key.user_id != principal.user_id:
        raise NotFound("no such API key")
    key.revoked_at = now
    audit.record(
        db, team_id=key.team_id, actor_id=principal.user_id, action="api_key_revoked",
        subject=key.id, detail={}, now=now,
    )  # fmt: skip
