"""Wire schemas of the team, chain, keyring, invite, share and audit endpoints.

Same rules as :mod:`tapes_e2e.protocol`: frozen msgspec Structs that
refuse unknown fields, with IDs, hex and base64 checked by pattern and every list and string
bounded, so a malformed body is a 400 before any handler logic runs.

Signed objects (chain statements, keyrings, shares) travel exactly as keymgmt's ``to_dict()``
writes them: ``{"body": "<canonical JSON>", "signature": "<base64url>"}``. The server stores and
returns them verbatim; clients verify them again themselves.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from tapes_e2e.protocol import Seq
from tapes_e2e.protocol.text import TeamName

__all__ = [
    "AuditEntryOut",
    "AuditPage",
    "ChainAppend",
    "ChainHeadOut",
    "ChainPage",
    "HoldOut",
    "HoldSet",
    "InviteCreate",
    "InviteOut",
    "JoinRequestBodyWire",
    "JoinRequestOut",
    "JoinRequestWire",
    "JoinResult",
    "KeyringOut",
    "KeyringUpload",
    "KeyringUploaded",
    "MemberAdd",
    "MemberKeysWire",
    "RekeyOut",
    "RekeyRequest",
    "RekeyVault",
    "ServerKeyOut",
    "ShareCreate",
    "ShareOut",
    "SharePage",
    "SignedAuditHead",
    "SignedWire",
    "TeamCreate",
    "TeamCreated",
]

MAX_CHAIN_APPEND = 32
MAX_REKEY_VAULTS = 256  # the vaults one account can be in (personal, teams) for one key rotation
MAX_REKEY_KEYRINGS = 1024  # the epochs of one vault resealed to a rotated key
MAX_SIGNED_BODY = 4 * 1024 * 1024  # a keyring for a large enterprise team

Hex64 = Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")]
Sig64 = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{86}$")]  # 64 bytes, unpadded base64url
Fingerprint = Annotated[str, Meta(pattern=r"^[A-Z2-7]{4}(-[A-Z2-7]{4}){7}$")]
TeamId = Annotated[str, Meta(pattern=r"^t_[A-Za-z0-9_-]{8,60}$")]
VaultId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Slug = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9-]{1,78}$")]
InviteId = Annotated[str, Meta(pattern=r"^[0-9a-f]{16}$")]
Seqno = Annotated[int, Meta(ge=0, le=2**31 - 1)]
InviteRole = Literal["admin", "member", "viewer"]
UtcTime = Annotated[datetime, Meta(tz=True)]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


class SignedWire(_Strict, frozen=True):
    """A signed keymgmt object: canonical JSON body, carried verbatim, and its Ed25519 signature."""

    body: Annotated[str, Meta(min_length=2, max_length=MAX_SIGNED_BODY)]
    signature: Sig64


# --- teams and the chain ---------------------------------------------------------------------


class TeamCreate(_Strict, frozen=True):
    """A new team: the client picks the id and signs the genesis statement (``create_team``)
    and the owner's keyring for epoch 1; the server generates nothing secret."""

    team_id: TeamId
    name: TeamName
    slug: Slug
    statement: SignedWire
    keyring: SignedWire


class ChainHeadOut(_Strict, frozen=True):
    seqno: int
    hash: str


class TeamCreated(_Strict, frozen=True):
    team_id: str
    name: str
    slug: str
    tier: str
    head: ChainHeadOut


class ChainPage(_Strict, frozen=True):
    """Statements with ``seqno > after``, in chain order, and the stored head."""

    team_id: str
    after: int
    head: ChainHeadOut
    statements: list[SignedWire]


class ChainAppend(_Strict, frozen=True):
    """Statements to append, signed by the caller; refused (409) unless the stored head is
    still ``expected_head_seqno``."""

    expected_head_seqno: Seqno
    statements: Annotated[list[SignedWire], Meta(min_length=1, max_length=MAX_CHAIN_APPEND)]


class MemberAdd(_Strict, frozen=True):
    """``POST …/members``: one signed ``add`` statement (``keymgmt.add_member``/``accept_join``)."""

    expected_head_seqno: Seqno
    statement: SignedWire


# --- keyrings --------------------------------------------------------------------------------


class KeyringUpload(_Strict, frozen=True):
    """One epoch's keyring as ``keymgmt.seal_keyring(...).to_dict()`` writes it."""

    keyring: SignedWire


class KeyringUploaded(_Strict, frozen=True):
    epoch: int
    recipients: list[str]


class KeyringOut(_Strict, frozen=True):
    """A keyring the caller is a recipient of (the whole signed keyring, as uploaded)."""

    epoch: int
    keyring: SignedWire
    created_at: str


# --- invites and join requests ---------------------------------------------------------------


class InviteCreate(_Strict, frozen=True):
    """``keymgmt.Invite.server_record()``: never the secret (a ``secret`` field is refused)."""

    invite_id: InviteId
    inviter: Fingerprint
    role: InviteRole
    expires_at: Annotated[int, Meta(ge=0, le=2**32 - 1)]  # Unix seconds, as in the code
    team: VaultId | None = None


class InviteOut(_Strict, frozen=True):
    invite_id: str
    team_id: str
    role: str
    expires_at: str
    used: bool


class MemberKeysWire(_Strict, frozen=True):
    x25519: Hex64
    ed25519: Hex64


class JoinRequestBodyWire(_Strict, frozen=True):
    version: Annotated[int, Meta(ge=1, le=255)]
    invite_id: InviteId
    member: Fingerprint
    member_keys: MemberKeysWire
    time: Annotated[int, Meta(ge=0, le=2**63 - 1)]


class JoinRequestWire(_Strict, frozen=True):
    """``keymgmt.make_join_request(...).to_dict()``: the keys, MACed with the invite secret."""

    body: JoinRequestBodyWire
    mac: Hex64


class JoinResult(_Strict, frozen=True):
    request_id: str
    team_id: str
    invite_id: str
    status: str


class JoinRequestOut(_Strict, frozen=True):
    """A pending (or decided) join. ``handle`` and ``fingerprint`` are the server's word; the
    signed request inside is what an admin's client verifies against the invite secret."""

    request_id: str
    invite_id: str
    role: str
    user_id: str
    fingerprint: str
    status: str
    created_at: str
    request: JoinRequestWire
    handle: str = ""


class MemberOut(_Strict, frozen=True):
    """A live member as the server's rows have it: the handle an account registered with,
    beside the key fingerprint. The roster itself comes from the verified chain; a handle is
    only the server's label for a fingerprint."""

    user_id: str
    handle: str
    fingerprint: str
    role: str
    left_at: str | None = None  # left on their own; still in the chain until removed
    github_login: str | None = None  # bound with `tapes auth login --github`: a label only


# --- shares ----------------------------------------------------------------------------------


class ShareCreate(_Strict, frozen=True):
    """Share the session ending at the path's node with ``team``: the signed statement from
    ``keymgmt.create_share`` and, optionally, a server-enforced expiry that must agree with the
    signed one when both are given."""

    team: VaultId
    statement: SignedWire
    expires_at: UtcTime | None = None


class ShareOut(_Strict, frozen=True):
    share_id: str
    team_id: str
    session_id: str
    shared_by: str
    sharer: str
    seq: Seq
    shared_at: str
    expires_at: str | None
    statement: SignedWire


class SharePage(_Strict, frozen=True):
    items: list[ShareOut]
    cursor: Seq
    more: bool


# --- audit -----------------------------------------------------------------------------------


class AuditEntryOut(_Strict, frozen=True):
    id: Seq
    action: str
    subject: str
    actor_id: str | None
    detail: dict[str, object]
    prev_hash: str | None
    hash: str
    created_at: str


class AuditPage(_Strict, frozen=True):
    """Entries with ``id > after``; ``chain_ok`` covers this page's part of the audit chain
    (its entries and links, the link to the entry before it, the team's head on the last page):
    a reader who pages through the whole log has checked all of it."""

    team_id: str
    chain_ok: bool
    entries: list[AuditEntryOut]
    cursor: Seq
    more: bool
    head: SignedAuditHead | None = None


class SignedAuditHead(_Strict, frozen=True):
    """The team's audit log head as the server signs it: the last entry's id and hash, signed
    with the server's key (``keymgmt.audit``); ``entry_id`` 0 and an empty hash: no entry yet."""

    entry_id: Seq
    hash: str
    signature: Sig64


class ServerKeyOut(_Strict, frozen=True):
    """``GET /.well-known/tapes-server-key``: the server's Ed25519 public key (hex)."""

    ed25519: Hex64


class HoldSet(_Strict, frozen=True):
    """``PUT /api/v1/teams/{id}/hold``: put the vault on legal hold, or take it off."""

    on: bool


class HoldOut(_Strict, frozen=True):
    vault: str
    legal_hold: bool


class RekeyVault(_Strict, frozen=True):
    """One vault's part of a key rotation: the ``rekey`` statement the old key signed (the new
    key's proof inside), and the keyrings the new key sealed at it to every reader."""

    vault: VaultId
    expected_head_seqno: Seqno
    statement: SignedWire
    keyrings: Annotated[list[SignedWire], Meta(max_length=MAX_REKEY_KEYRINGS)] = []


class RekeyRequest(_Strict, frozen=True):
    """``POST /auth/rekey``: replace the account's identity key, in every vault it is in, in one
    transaction. Both keys sign the hand-over (:func:`keymgmt.login.rekey_message`)."""

    keys: MemberKeysWire
    old_signature: Sig64
    new_signature: Sig64
    vaults: Annotated[list[RekeyVault], Meta(min_length=1, max_length=MAX_REKEY_VAULTS)]


class RekeyOut(_Strict, frozen=True):
    """What a key rotation changed: the new fingerprint, the vaults it was recorded in, and what
    the old key can no longer use."""

    fingerprint: str
    vaults: list[str]
    logins_ended: int
    api_keys_revoked: int
    shares_ended: int
    join_requests_withdrawn: int
