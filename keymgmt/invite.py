"""Invites: bring a new member in without trusting the server with their keys (DESIGN §5).

1. The inviter's client makes an :class:`Invite` (:func:`create_invite`): a random invite ID, a
   128-bit one-time secret, the inviter's fingerprint and an expiry. ``invite.code`` is passed
   out of band; the server receives only ``invite.server_record()`` (no secret).
2. The invitee parses the code (:func:`parse_invite_code`; a checksum catches typos) and sends
   :func:`make_join_request`: their public keys, MACed with ``HKDF(secret, "…/join-request-mac")``.
3. The inviter's client checks it (:func:`verify_join_request`: MAC, expiry, not yet used) and
   appends the ``add`` statement with :func:`accept_join`, which carries the invite ID and an
   *accept proof* MACed with ``HKDF(secret, "…/accept-proof-mac")`` over team, invite, member,
   role and signer. The chain refuses a second ``add`` with the same invite ID (single use).
4. The invitee verifies the chain, then :func:`verify_joined`: the ``add`` naming this invite was
   signed by the inviter named in the code, carries the invitee's exact keys, and its proof
   verifies under the secret. A server that swapped keys on either side fails one of these.

Code format (docs/crypto.md): ``TAPES-`` then RFC 4648 base32 of ``version(1) || invite id(8)
|| secret(16) || inviter fingerprint(20) || expires_at(u32 seconds) || checksum(4)`` in groups
of five, where ``checksum = SHA-256(label || everything before it)[:4]``. Parsing ignores case,
dashes and spaces, and reads ``0``/``1``/``8`` as ``O``/``I``/``B``.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import msgspec

from keymgmt import _primitives as prim
from keymgmt import labels
from keymgmt._encoding import canonical_json, lp, now_seconds
from keymgmt.chain import (
    MemberKeys,
    Role,
    UnverifiedStatement,
    VerifiedTeamState,
    add_member,
)
from keymgmt.errors import (
    InviteCodeError,
    InviteExpiredError,
    InviteUsedError,
    InviteVerificationError,
)
from keymgmt.identity import Identity, PublicIdentity, fingerprint_bytes, fingerprint_from_bytes

__all__ = [
    "DEFAULT_INVITE_TTL",
    "Invite",
    "InviteCode",
    "JoinRequest",
    "VerifiedJoinRequest",
    "accept_join",
    "create_invite",
    "make_join_request",
    "parse_invite_code",
    "verify_join_request",
    "verify_joined",
]

DEFAULT_INVITE_TTL: Final = 7 * 24 * 3600
CODE_PREFIX: Final = "TAPES-"
_CODE_VERSION: Final = 1
_LAYOUT: Final = struct.Struct(">B8s16s20sI")
_CHECKSUM_BYTES: Final = 4
_TYPO_MAP: Final = str.maketrans({"0": "O", "1": "I", "8": "B"})


@dataclass(frozen=True, slots=True)
class InviteCode:
    """What an invite code carries. ``repr`` hides the secret."""

    invite_id: str
    secret: bytes = field(repr=False)
    inviter: str
    expires_at: int

    @property
    def text(self) -> str:
        """The copy-paste form: ``TAPES-XXXXX-XXXXX-…``."""
        payload = _LAYOUT.pack(
            _CODE_VERSION, bytes.fromhex(self.invite_id), self.secret,
            fingerprint_bytes(self.inviter), self.expires_at,
        )  # fmt: skip
        raw = payload + _checksum(payload)
        b32 = base64.b32encode(raw).decode("ascii").rstrip("=")
        return CODE_PREFIX + "-".join(b32[i : i + 5] for i in range(0, len(b32), 5))

    def join_key(self) -> bytes:
        return _derive(self.secret, self.invite_id, labels.INVITE_JOIN)

    def accept_key(self) -> bytes:
        return _derive(self.secret, self.invite_id, labels.INVITE_ACCEPT)


@dataclass(frozen=True, slots=True)
class Invite:
    """The inviter's private record of an invite: the code plus the team and role."""

    team: str
    role: Role
    code: InviteCode

    def server_record(self) -> dict[str, object]:
        """What the server may store: never the secret."""
        return {
            "team": self.team,
            "invite_id": self.code.invite_id,
            "inviter": self.code.inviter,
            "role": self.role,
            "expires_at": self.code.expires_at,
        }


def _checksum(payload: bytes) -> bytes:
    return prim.sha256(labels.INVITE_CHECKSUM + payload)[:_CHECKSUM_BYTES]


def _derive(secret: bytes, invite_id: str, label: bytes) -> bytes:
    return prim.hkdf_sha256(secret, salt=invite_id.encode("ascii"), info=label)


def create_invite(
    *,
    team: str,
    inviter: Identity,
    role: Role = "member",
    now: int | None = None,
    ttl: int = DEFAULT_INVITE_TTL,
    rng: prim.Rng = prim.random_bytes,
) -> Invite:
    """A new single-use invite to ``team`` with ``role``, valid for ``ttl`` seconds."""
    issued = now_seconds() if now is None else now
    code = InviteCode(rng(8).hex(), rng(16), inviter.fingerprint, issued + ttl)
    return Invite(team, role, code)


def parse_invite_code(text: str) -> InviteCode:
    """Parse a pasted code; any typo or truncation raises :class:`InviteCodeError`."""
    cleaned = "".join(text.split()).upper().replace("-", "")
    if not cleaned.startswith("TAPES"):
        raise InviteCodeError("an invite code starts with TAPES-")
    b32 = cleaned.removeprefix("TAPES").translate(_TYPO_MAP)
    try:
        raw = base64.b32decode(b32 + "=" * (-len(b32) % 8))
    except (binascii.Error, ValueError):
        raise InviteCodeError("the invite code contains characters that do not belong") from None
    if len(raw) != _LAYOUT.size + _CHECKSUM_BYTES:
        raise InviteCodeError("the invite code is incomplete or too long")
    if base64.b32encode(raw).decode("ascii").rstrip("=") != b32:
        # the last letter carries bits past the end of the code, which decoding drops: a typo
        # there changes nothing the checksum sees
        raise InviteCodeError("the invite code has a typo (in its last letter)")
    payload, checksum = raw[: _LAYOUT.size], raw[_LAYOUT.size :]
    if not prim.constant_time_equal(checksum, _checksum(payload)):
        raise InviteCodeError("the invite code has a typo (checksum mismatch)")
    version, invite_id, secret, inviter, expires_at = _LAYOUT.unpack(payload)
    if version != _CODE_VERSION:
        raise InviteCodeError(f"unsupported invite code version {version}")
    return InviteCode(invite_id.hex(), secret, fingerprint_from_bytes(inviter), expires_at)


class JoinRequestBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    version: int
    invite_id: str
    member: str
    member_keys: MemberKeys
    time: int


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """The invitee's request, as sent through the server (unverified until checked)."""

    body: JoinRequestBody
    mac: str

    def to_dict(self) -> dict[str, object]:
        return {"body": msgspec.to_builtins(self.body), "mac": self.mac}

    @classmethod
    def from_dict(cls, data: object) -> JoinRequest:
        try:
            if not isinstance(data, Mapping) or set(data) != {"body", "mac"}:
                raise ValueError("shape")  # noqa: TRY301 - folded into the error below
            body = msgspec.convert(data["body"], JoinRequestBody)
            mac = data["mac"]
            if not isinstance(mac, str):
                raise TypeError("mac")  # noqa: TRY301 - folded into the error below
        except (ValueError, TypeError, msgspec.ValidationError):
            raise InviteVerificationError("the join request is malformed") from None
        return cls(body, mac)


@dataclass(frozen=True, slots=True)
class VerifiedJoinRequest:
    """A join request whose MAC, expiry and freshness were checked by the inviter."""

    invite: Invite
    member: PublicIdentity


def _join_mac(code: InviteCode, body: JoinRequestBody) -> str:
    message = labels.INVITE_JOIN + canonical_json(msgspec.to_builtins(body))
    return prim.hmac_sha256(code.join_key(), message).hex()


def make_join_request(
    code: InviteCode, *, identity: Identity, now: int | None = None
) -> JoinRequest:
    """The invitee's request binding their public keys to the invite secret."""
    public = identity.public
    body = JoinRequestBody(
        version=labels.PROTOCOL_VERSION, invite_id=code.invite_id, member=public.fingerprint,
        member_keys=MemberKeys(public.x25519.hex(), public.ed25519.hex()),
        time=now_seconds() if now is None else now,
    )  # fmt: skip
    return JoinRequest(body, _join_mac(code, body))


def verify_join_request(
    request: JoinRequest | Mapping[str, object],
    *,
    invite: Invite,
    state: VerifiedTeamState,
    now: int | None = None,
) -> VerifiedJoinRequest:
    """The inviter's check before signing the ``add`` (MAC, expiry, single use, key match)."""
    req = request if isinstance(request, JoinRequest) else JoinRequest.from_dict(request)
    moment = now_seconds() if now is None else now
    if moment > invite.code.expires_at:
        raise InviteExpiredError("the invite expired")
    if invite.code.invite_id in state.used_invites:
        raise InviteUsedError("the invite was already used")
    body = req.body
    expected = _join_mac(invite.code, body)
    if body.invite_id != invite.code.invite_id or not prim.constant_time_equal(
        expected.encode(), req.mac.encode()
    ):
        raise InviteVerificationError("the join request does not match the invite secret")
    try:
        member = PublicIdentity(
            bytes.fromhex(body.member_keys.x25519), bytes.fromhex(body.member_keys.ed25519)
        )
    except ValueError:
        raise InviteVerificationError("the join request carries invalid keys") from None
    if member.fingerprint != body.member or invite.team != state.team:
        raise InviteVerificationError("the join request keys do not match its fingerprint")
    return VerifiedJoinRequest(invite, member)


def _accept_proof(code: InviteCode, team: str, member: str, role: str, signer: str) -> str:
    message = labels.INVITE_ACCEPT + b"".join(
        lp(v.encode()) for v in (team, code.invite_id, member, role, signer)
    )
    return prim.hmac_sha256(code.accept_key(), message).hex()


def accept_join(
    state: VerifiedTeamState,
    *,
    request: VerifiedJoinRequest,
    signer: Identity,
    now: int | None = None,
) -> UnverifiedStatement:
    """The ``add`` statement for a verified join request, with the invite's accept proof."""
    invite = request.invite
    proof = _accept_proof(
        invite.code, state.team, request.member.fingerprint, invite.role, signer.fingerprint
    )
    return add_member(
        state, signer=signer, member=request.member, role=invite.role, now=now,
        invite_id=invite.code.invite_id, invite_proof=proof,
    )  # fmt: skip


def verify_joined(state: VerifiedTeamState, *, code: InviteCode, identity: Identity) -> Role:
    """The invitee's check of a verified chain against their invite code; returns their role.

    The ``add`` statement for the invite must be signed by the inviter named in the code, name
    this identity's exact keys, be made before expiry, and carry a proof only a holder of the
    secret can compute. The invitee must still be a member.
    """
    for statement in state.statements:
        body = statement.body
        if body.action == "add" and body.invite_id == code.invite_id:
            break
    else:
        raise InviteVerificationError("the team chain does not contain this invite")
    public = identity.public
    keys = MemberKeys(public.x25519.hex(), public.ed25519.hex())
    if (
        body.signer != code.inviter
        or body.member != identity.fingerprint
        or body.member_keys != keys
    ):
        raise InviteVerificationError("the chain's add statement does not match the invite code")
    if body.role is None or body.invite_proof is None or body.time > code.expires_at:
        raise InviteVerificationError("the chain's add statement was made outside the invite")
    expected = _accept_proof(code, body.team, body.member, body.role, body.signer)
    if not prim.constant_time_equal(expected.encode(), body.invite_proof.encode()):
        raise InviteVerificationError("the add statement was not made by the invite's holder")
    member = state.member(identity.fingerprint)
    if member is None:
        raise InviteVerificationError("this identity is no longer a member of the team")
    return member.role
