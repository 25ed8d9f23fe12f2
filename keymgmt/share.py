"""Shared sessions: a member's signed statement that a session is shared with the team.

Wire form ``{"body": "<canonical JSON>", "signature": b64url}``; the body holds ``version, team,
leaf_id, sharer, time, expires_at, epoch, nonce, text``. ``leaf_id`` is the *keyed* node ID of
the session's leaf (never the bare tapes hash, which would let the server confirm guesses);
because the DAG is hash-chained, one signature on the leaf vouches for the whole session.
``text`` is the title and note, XChaCha20-Poly1305-encrypted under the epoch key with associated
data binding team, leaf, sharer, epoch and time. The sharer signs the whole body with Ed25519,
so no other member (and not the server) can forge or alter a share.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import msgspec

from keymgmt import _primitives as prim
from keymgmt import labels
from keymgmt._encoding import (
    HEX64_RE,
    Uint,
    b64d,
    b64e,
    canonical_json,
    decode_canonical,
    lp,
    now_seconds,
    u64,
)
from keymgmt.chain import VerifiedTeamState
from keymgmt.errors import IntegrityError, PolicyError, ShareError
from keymgmt.identity import Identity, PublicIdentity
from keymgmt.keyring import TeamKeys

__all__ = [
    "UnverifiedShare",
    "VerifiedShare",
    "create_share",
    "open_share_text",
    "parse_share",
    "verify_share",
    "verify_share_made",
]

log = logging.getLogger("keymgmt.share")

MAX_TEXT: Final = 16 * 1024


class ShareBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    version: int
    team: str
    leaf_id: str
    sharer: str
    time: Uint
    expires_at: Uint | None
    epoch: Uint
    nonce: str
    text: str


class _Text(msgspec.Struct, forbid_unknown_fields=True):
    title: str
    note: str


@dataclass(frozen=True, slots=True)
class UnverifiedShare:
    body: ShareBody
    body_bytes: bytes
    signature: bytes

    def to_dict(self) -> dict[str, str]:
        return {"body": self.body_bytes.decode("utf-8"), "signature": b64e(self.signature)}


@dataclass(frozen=True, slots=True)
class VerifiedShare:
    """A share whose signature, sharer and expiry were checked against the verified chain."""

    team: str
    leaf_id: str
    sharer: str
    time: int
    expires_at: int | None
    epoch: int
    body: ShareBody


def _text_ad(body: ShareBody) -> bytes:
    return (
        labels.SHARE_TEXT_AD
        + lp(body.team.encode())
        + lp(body.leaf_id.encode())
        + lp(body.sharer.encode())
        + u64(body.epoch)
        + u64(body.time)
    )


def create_share(
    *,
    state: VerifiedTeamState,
    keys: TeamKeys,
    sharer: Identity,
    leaf_id: str,
    title: str,
    note: str = "",
    now: int | None = None,
    expires_at: int | None = None,
    nonce: bytes | None = None,
) -> UnverifiedShare:
    """Share the session ending at ``leaf_id`` (a node ID) with the team, in the current epoch."""
    member = state.member(sharer.fingerprint)
    if member is None or not member.reads_content:
        raise PolicyError("only a member who reads content can share")
    if not HEX64_RE.fullmatch(leaf_id):
        raise PolicyError("leaf_id must be a node ID (64 lowercase hex digits)")
    epoch_key = keys.epoch_key(state.epoch)
    if epoch_key is None or keys.team != state.team:
        raise PolicyError("no key for the team's current epoch; open its keyring first")
    text = canonical_json({"title": title, "note": note})
    if len(text) > MAX_TEXT:
        raise PolicyError(f"title and note exceed {MAX_TEXT} bytes")
    nonce = prim.random_bytes(prim.AEAD_NONCE_BYTES) if nonce is None else nonce
    body = ShareBody(
        version=labels.PROTOCOL_VERSION, team=state.team, leaf_id=leaf_id,
        sharer=sharer.fingerprint, time=now_seconds() if now is None else now,
        expires_at=expires_at, epoch=state.epoch, nonce=b64e(nonce), text="",
    )  # fmt: skip
    sealed = prim.aead_encrypt(epoch_key, nonce, text, _text_ad(body))
    body = msgspec.structs.replace(body, text=b64e(sealed))
    body_bytes = canonical_json(msgspec.to_builtins(body))
    return UnverifiedShare(body, body_bytes, sharer.sign(labels.SHARE_SIGNATURE + body_bytes))


_DECODER: Final = msgspec.json.Decoder(ShareBody)


def parse_share(wire: object) -> UnverifiedShare:
    if isinstance(wire, UnverifiedShare):
        return wire
    try:
        if not isinstance(wire, Mapping) or set(wire) != {"body", "signature"}:
            raise ValueError("shape")  # noqa: TRY301 - folded into the error below
        body_bytes = str(wire["body"]).encode("utf-8")
        body = decode_canonical(_DECODER, body_bytes)
        return UnverifiedShare(body, body_bytes, b64d(wire["signature"]))
    except (ValueError, msgspec.DecodeError):
        raise ShareError("the share is malformed") from None


def _verified(share: UnverifiedShare, signer: PublicIdentity | None) -> VerifiedShare:
    body = share.body
    if signer is None or not signer.verify(
        labels.SHARE_SIGNATURE + share.body_bytes, share.signature
    ):
        raise ShareError("the share's signature does not verify")
    return VerifiedShare(
        body.team, body.leaf_id, body.sharer, body.time, body.expires_at, body.epoch, body
    )


def _parse_for(wire: object, state: VerifiedTeamState) -> UnverifiedShare:
    share = parse_share(wire)
    if share.body.version != labels.PROTOCOL_VERSION or share.body.team != state.team:
        raise ShareError("the share belongs to another team or protocol version")
    return share


def verify_share(
    wire: object, *, state: VerifiedTeamState, now: int | None = None
) -> VerifiedShare:
    """Check the share's signature, that its sharer is a current reader, and its expiry."""
    share = _parse_for(wire, state)
    member = state.member(share.body.sharer)
    if member is None or not member.reads_content:
        raise ShareError("the share was made by someone who is not a member")
    verified = _verified(share, member.public)
    moment = now_seconds() if now is None else now
    if verified.expires_at is not None and moment >= verified.expires_at:
        raise ShareError("the share has expired")
    return verified


def verify_share_made(wire: object, *, state: VerifiedTeamState) -> VerifiedShare:
    """Check a share as evidence of what was shared then (an offline proof): signed by the key
    its sharer held in the chain, the sharer a reader while the share's epoch was current, and
    that epoch one the chain reached. Expiry and later removals do not matter here: the share
    says what a member stated at the time, and the caller reports whether it still holds."""
    share = _parse_for(wire, state)
    body = share.body
    if body.epoch > state.epoch or not state.was_writer(body.sharer, body.epoch):
        raise ShareError(
            f"the sharer {body.sharer} was not a member who reads content in epoch {body.epoch}"
        )
    return _verified(share, state.known_identities.get(body.sharer))


def open_share_text(share: VerifiedShare, *, keys: TeamKeys) -> tuple[str, str]:
    """Decrypt the share's (title, note); any failure raises :class:`IntegrityError`."""
    body = share.body
    key = keys.epoch_key(body.epoch)
    try:
        if key is None or keys.team != body.team:
            raise prim.PrimitiveError  # noqa: TRY301 - folded into the one opaque error
        plain = prim.aead_decrypt(key, b64d(body.nonce), b64d(body.text), _text_ad(body))
        text = msgspec.json.decode(plain, type=_Text)
    except (prim.PrimitiveError, ValueError, msgspec.DecodeError):
        log.debug("share text rejected")
        raise IntegrityError from None
    return text.title, text.note
