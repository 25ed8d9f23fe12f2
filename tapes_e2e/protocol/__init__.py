"""The sync protocol's wire schemas, shared by the client and the server.

Every request and response body of the API is one of these msgspec Structs. Unknown fields are
refused (``forbid_unknown_fields``), strings that carry IDs, hex or base64 are checked by pattern
and length, and lists are bounded, so a malformed body is a 4xx before any handler logic runs.
The server's OpenAPI schema is generated from these types and is the contract.

Binary values travel as unpadded base64url; node IDs as 64 lowercase hex digits. A pull may
ask for MessagePack instead (``Accept: application/vnd.msgpack``): the same page, its envelopes
as :class:`~keymgmt.envelope.PackedEnvelope`, byte fields as bytes (:class:`PackedPullPage`);
a push may send one (:class:`PackedPushRequest`) to a server that lists MessagePack in the
``Accept-Post`` header of its ``OPTIONS /api/v1/sync/push`` answer.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from keymgmt.envelope import EnvelopeWire, PackedEnvelope
from tapes_e2e.protocol.text import DeviceName, KeyName

MAX_SEQ = 2**62
"""The largest sequence number, cursor or count the server hands out, and the largest ``after``
it takes back. A client refuses an answer beyond it as malformed, so no answer can leave it
holding a cursor that an honest server then refuses on every later sync."""

Seq = Annotated[int, Meta(ge=0, le=MAX_SEQ)]

__all__ = [
    "API_KEY_PREFIX",
    "GITHUB_LOGIN",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_NODES",
    "MAX_PAGE_BYTES",
    "MAX_SEQ",
    "MSGPACK",
    "PUSH_FORMS",
    "AncestryPage",
    "AnyPullPage",
    "AnyPushRequest",
    "ApiKeyCreate",
    "ApiKeyCreated",
    "ApiKeyInfo",
    "Challenge",
    "DeviceName",
    "DeviceOut",
    "EnvelopeWire",
    "GithubBindOut",
    "GithubBindRequest",
    "GithubDeviceOut",
    "GithubLogin",
    "GithubUserOut",
    "LoginRequest",
    "NodeOut",
    "PackedNodeOut",
    "PackedPullPage",
    "PackedPushRequest",
    "Problem",
    "PublicKeys",
    "PullPage",
    "PushRequest",
    "PushResult",
    "RefreshRequest",
    "ResealItem",
    "ResealRequest",
    "ResealResult",
    "ResealStatus",
    "Seq",
    "SessionInfo",
    "SessionPage",
    "SyncStatusOut",
    "TokenPair",
    "UserOut",
    "VaultOut",
]

API_KEY_PREFIX = "tapes_"
MAX_BATCH_NODES = 2000
MAX_BATCH_BYTES = 16 * 1024 * 1024


class Problem(StrEnum):
    """RFC 9457 ``type`` URIs of the refusals a client acts on (never by matching text)."""

    MISSING_PARENT = "https://tapes-e2e.dev/problems/missing-parent"
    STALE_EPOCH = "https://tapes-e2e.dev/problems/stale-epoch"
    CHAIN_MOVED = "https://tapes-e2e.dev/problems/chain-moved"
    ALREADY_SHARED = "https://tapes-e2e.dev/problems/already-shared"
    PLAN_LIMIT = "https://tapes-e2e.dev/problems/plan-limit"


ENVELOPE_VERSION = 2
"""The envelope version a server stores new nodes in (``keymgmt.labels.ENVELOPE_VERSION``)."""

Hex64 = Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")]
B64 = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]*$", max_length=48 * 1024 * 1024)]
Key32 = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{43}$")]  # 32 bytes, unpadded base64url
Sig64 = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{86}$")]  # 64 bytes, unpadded base64url
Handle = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9_.-]{1,38}$")]
VaultId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Fingerprint = Annotated[str, Meta(pattern=r"^[A-Z2-7]{4}(-[A-Z2-7]{4}){7}$")]
Permission = Literal["push", "pull", "read-usage", "admin"]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    pass


# --- auth -----------------------------------------------------------------------------------


class PublicKeys(_Strict, frozen=True):
    """A user's public identity: X25519 (encryption) and Ed25519 (signing) keys."""

    x25519: Hex64
    ed25519: Hex64


class Challenge(_Strict, frozen=True):
    """A single-use login nonce; sign it with the identity key to log in."""

    challenge_id: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{22,64}$")]
    nonce: Key32
    audience: str
    expires_at: str


class LoginRequest(_Strict, frozen=True):
    """Proof of possession of the signing key. ``handle`` registers a new account."""

    challenge_id: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{22,64}$")]
    keys: PublicKeys
    signature: Sig64
    handle: Handle | None = None
    device: DeviceName | None = None  # what ``tapes auth devices`` calls this login


class TokenPair(_Strict, frozen=True):
    access_token: str
    refresh_token: str
    expires_in: Annotated[int, Meta(ge=1, le=86_400)]  # a server takes 30 s to a day
    user_id: str
    fingerprint: str
    personal_vault: str


class RefreshRequest(_Strict, frozen=True):
    refresh_token: Annotated[str, Meta(min_length=20, max_length=200)]


class UserOut(_Strict, frozen=True):
    user_id: str
    handle: str
    fingerprint: str
    keys: PublicKeys
    github_login: str | None = None  # bound with `tapes auth login --github`: a label only


GITHUB_LOGIN = r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$"  # a login as GitHub allows them
GithubLogin = Annotated[str, Meta(pattern=GITHUB_LOGIN)]


class GithubDeviceOut(_Strict, frozen=True):
    """A GitHub device flow under way: open ``verification_uri``, enter ``user_code``, then
    ask ``POST /auth/github`` with ``bind_id`` every ``interval`` seconds."""

    bind_id: str
    user_code: str
    verification_uri: str
    interval: int
    expires_in: int


class GithubBindRequest(_Strict, frozen=True):
    bind_id: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{43}$")]


class GithubBindOut(_Strict, frozen=True):
    """``pending`` (ask again after ``interval`` seconds) or ``bound`` to ``github_login``."""

    status: Literal["pending", "bound"]
    interval: int = 0
    github_login: str | None = None


class GithubUserOut(_Strict, frozen=True):
    """The account bound to a GitHub login: GitHub's word for the login, the server's for the
    pairing; the fingerprint is what to compare with its owner."""

    handle: str
    fingerprint: str
    github_login: GithubLogin


class ApiKeyCreate(_Strict, frozen=True):
    vault: VaultId
    permissions: Annotated[list[Permission], Meta(min_length=1, max_length=4)]
    name: KeyName = ""


class ApiKeyInfo(_Strict, frozen=True):
    key_id: str
    vault: str
    permissions: list[str]
    name: str
    created_at: str
    last_used_at: str | None
    revoked: bool


class DeviceOut(_Strict, frozen=True):
    """One login of the account (a device): ``current`` is the one asking."""

    device_id: str
    name: str
    created_at: str
    last_seen_at: str
    address: str
    current: bool


class ApiKeyCreated(_Strict, frozen=True):
    """The key itself is shown this once; the server keeps only its hash."""

    api_key: str
    info: ApiKeyInfo


# --- vaults and nodes ------------------------------------------------------------------------


class VaultOut(_Strict, frozen=True):
    vault_id: str
    name: str
    kind: Literal["personal", "team"]
    role: str
    tier: str
    head_seq: Seq
    node_count: Seq
    legal_hold: bool = False


class PushRequest(_Strict, frozen=True):
    vault: VaultId
    envelopes: Annotated[list[EnvelopeWire], Meta(min_length=1, max_length=MAX_BATCH_NODES)]


class PackedPushRequest(_Strict, frozen=True):
    """:class:`PushRequest` on the binary wire (MessagePack): each envelope packed."""

    vault: VaultId
    envelopes: Annotated[list[PackedEnvelope], Meta(min_length=1, max_length=MAX_BATCH_NODES)]


AnyPushRequest = PushRequest | PackedPushRequest
"""A push batch as decoded from either form of the wire."""


class PushResult(_Strict, frozen=True):
    """``stored`` got the sequence numbers ``first_seq`` … ``head_seq`` (contiguous: a push
    holds the vault's lock), so a client whose cursor was just below ``first_seq`` can move it
    to ``head_seq`` instead of pulling its own nodes back. ``first_seq`` is 0 when nothing was
    stored."""

    stored: list[str]
    existing: list[str]
    head_seq: Seq
    first_seq: Seq = 0

    def __post_init__(self) -> None:
        # decoding an answer runs this too: numbers that do not fit what was stored are refused
        # before a client records them as its own (its pull would then skip them)
        if self.stored:
            if self.first_seq < 1 or self.head_seq - self.first_seq + 1 != len(self.stored):
                raise ValueError("the stored nodes' sequence numbers do not match their count")
        elif self.first_seq:
            raise ValueError("a sequence number is named for no stored node")


class ResealItem(_Strict, frozen=True):
    """One node sealed again: the ID it has now and its envelope under the current epoch."""

    old_id: Hex64
    envelope: EnvelopeWire


class ResealRequest(_Strict, frozen=True):
    """``POST /api/v1/sync/reseal``: the caller's own nodes of ``vault``, sealed again under
    the vault's current epoch, parents before children."""

    vault: VaultId
    items: Annotated[list[ResealItem], Meta(min_length=1, max_length=MAX_BATCH_NODES)]


class ResealResult(_Strict, frozen=True):
    resealed: int


class ResealStatus(_Strict, frozen=True):
    """Encrypted nodes of ``vault`` under an epoch older than ``epoch``: the caller's (which
    ``tapes team reencrypt`` seals again) and other members' (which only they can)."""

    vault: str
    epoch: int
    mine: int
    others: int


class NodeOut(_Strict, frozen=True, omit_defaults=True):
    """One stored envelope. In an ancestry, ``renamed_from`` is the ID the step before named
    this node by when the node has another ID now (``tapes team reencrypt`` sealed it again
    under a later epoch): the path is followed through it, and the content links are checked
    by the caller as always."""

    seq: Seq
    uploaded_at: str
    envelope: EnvelopeWire
    renamed_from: Hex64 | None = None


class AncestryPage(_Strict, frozen=True):
    """Part of a node's ancestry, node first. ``next`` is the node ID to ask the ancestry of for
    the rest (the parent of the last item), or null when the path ends here: at a root, at a
    node the caller may not read, or at a parent the vault no longer holds."""

    items: list[NodeOut]
    next: Hex64 | None = None


MAX_PAGE_BYTES = 16 * 1024 * 1024
"""The most envelope bytes one pull or ancestry page carries (at least one envelope)."""


class PullPage(_Strict, frozen=True):
    """A page of envelopes; ``chain_seqno`` is the vault's chain head now, so a client that
    cached the verified chain refetches it only when it moved (a no-op sync is one request)."""

    vault: str
    items: list[NodeOut]
    cursor: Seq
    more: bool
    chain_seqno: int = -1


MSGPACK = "application/vnd.msgpack"
"""The binary wire's media type (IANA registered), asked for by ``Accept`` on a pull."""


class PackedNodeOut(_Strict, frozen=True):
    """:class:`NodeOut` on the binary wire: the envelope packed."""

    seq: Seq
    uploaded_at: str
    envelope: PackedEnvelope


class PackedPullPage(_Strict, frozen=True):
    """:class:`PullPage` on the binary wire (the server encodes one ``PullPage`` either way; a
    client decodes the MessagePack answer into this)."""

    vault: str
    items: list[PackedNodeOut]
    cursor: Seq
    more: bool
    chain_seqno: int = -1


PUSH_FORMS = ("application/json", MSGPACK)
"""The media types a push body may come in, as the server's ``Accept-Post`` lists them."""

AnyPullPage = PullPage | PackedPullPage
"""A pull page as decoded from either form of the wire."""


class SyncStatusOut(_Strict, frozen=True):
    vault: str
    head_seq: Seq
    node_count: Seq
    after: Seq
    pending_pull: Seq


class SessionInfo(_Strict, frozen=True):
    session_id: str
    vault: str
    seq: Seq
    uploaded_at: str
    metadata: dict[str, Any]


class SessionPage(_Strict, frozen=True):
    items: list[SessionInfo]
    cursor: Seq
    more: bool
