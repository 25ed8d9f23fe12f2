"""The signed team chain: who is in the team, with which keys and role, in which key epoch.

Every membership or policy change is an append-only *statement*. Its body is RFC 8785 canonical
JSON, carried verbatim on the wire as a string, and Ed25519-signed by a member whose role allows
the action at that point of the chain::

    {"body": "<canonical JSON>", "signature": "<base64url>"}

A body holds ``version, team, seqno, prev, time, signer, action, epoch`` and, by action,
``member, member_keys, role, epoch_key_commitment, vault_key_commitment, metadata_policy,
content_policy, invite_id, invite_proof, key_proof``. ``prev`` is the hash of the previous statement
(SHA-256 over label || body || signature), so the chain is a hash chain; ``epoch`` is the key
epoch in force *after* the statement. A removal carries its new epoch and the commitment to the
new epoch key in the same signed statement, so nobody can deliver the removal without the
rotation.

Clients parse statements into :class:`UnverifiedStatement` values (habit 2); only
:func:`verify_chain` / :func:`extend_chain` turn them into a :class:`VerifiedTeamState`, the only
type from which keyrings, envelopes and shares take member keys.

Roles: ``owner`` (everything), ``admin`` (add/remove/re-role members and viewers, rotate, change
policy, seal keyrings), ``member`` (reads and writes content), ``viewer`` (usage metadata only;
never receives a content key). Only an owner may grant, change or remove ``owner``/``admin``;
the last owner cannot be removed or demoted. Demoting a reader to viewer rotates like a removal.

A member replaces their own identity with ``rekey`` (a stolen laptop): signed by the old key,
naming the new fingerprint and keys, with ``key_proof``, the new key's signature over the
statement's place in the chain (team, seqno, prev, old and new fingerprint), so nobody can rotate
a member to a key they do not hold, nor hand a chain they wrote to somebody else's key. The new
key keeps the role; a reader's rekey starts a new epoch, whose keyrings the new key may seal at
that point of the chain (:attr:`Checkpoint.rekeyed`) even without a manager's role. A key that
was ever in the team can never come back through a rekey.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Final, Literal

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
from keymgmt.errors import (
    ChainError,
    ChainForkError,
    ChainFormatError,
    ChainKeyError,
    ChainLinkError,
    ChainPermissionError,
    ChainReplayError,
    ChainRollbackError,
    ChainSignatureError,
)
from keymgmt.identity import FINGERPRINT_RE, Identity, PublicIdentity

__all__ = [
    "MAX_CLOCK_SKEW_SECONDS",
    "READER_ROLES",
    "Action",
    "ChainHead",
    "ContentPolicy",
    "Member",
    "MetadataPolicy",
    "Role",
    "StatementBody",
    "UnverifiedStatement",
    "VerifiedTeamState",
    "add_member",
    "chain_to_wire",
    "change_policy",
    "change_role",
    "create_team",
    "epoch_key_commitment",
    "extend_chain",
    "parse_statement",
    "rekey",
    "rekey_proof_message",
    "remove_member",
    "rotate",
    "safety_number",
    "vault_key_commitment",
    "verify_chain",
]

log = logging.getLogger("keymgmt.chain")

Role = Literal["owner", "admin", "member", "viewer"]
Action = Literal["create", "add", "remove", "change_role", "rotate", "change_policy", "rekey"]
MetadataPolicy = Literal["none", "coarse", "full"]
ContentPolicy = Literal["encrypted", "omit"]

READER_ROLES: Final = frozenset({"owner", "admin", "member"})
MAX_CLOCK_SKEW_SECONDS: Final = 600
"""How far ahead of the verifier's clock a statement may be dated (the server allows the same)."""
_MANAGER_ROLES: Final = frozenset({"owner", "admin"})
_ROSTER_ACTIONS: Final = frozenset({"create", "add", "remove", "change_role", "rekey"})
MAX_TEAM_LEN: Final = 128


class MemberKeys(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A member's public keys as they appear in a statement (lowercase hex)."""

    x25519: str
    ed25519: str


class StatementBody(msgspec.Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True):
    """The signed fields of a statement. Absent optional fields are omitted from the JSON."""

    version: int
    team: str
    seqno: Uint
    prev: str
    time: Uint
    signer: str
    action: Action
    epoch: Uint
    member: str | None = None
    member_keys: MemberKeys | None = None
    role: Role | None = None
    epoch_key_commitment: str | None = None
    vault_key_commitment: str | None = None
    metadata_policy: MetadataPolicy | None = None
    content_policy: ContentPolicy | None = None
    invite_id: str | None = None
    invite_proof: str | None = None
    key_proof: str | None = None


@dataclass(frozen=True, slots=True)
class UnverifiedStatement:
    """A parsed statement whose signature, position and authority are not yet checked."""

    body: StatementBody
    body_bytes: bytes
    signature: bytes

    @property
    def hash(self) -> str:
        """Hex SHA-256 over label || body || signature: what the next ``prev`` names."""
        return prim.sha256(labels.CHAIN_HASH + self.body_bytes + self.signature).hex()

    def to_dict(self) -> dict[str, str]:
        return {"body": self.body_bytes.decode("utf-8"), "signature": b64e(self.signature)}


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The last verified position: clients persist it and pass it to :func:`verify_chain`."""

    seqno: int
    hash: str

    def to_dict(self) -> dict[str, object]:
        return {"seqno": self.seqno, "hash": self.hash}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ChainHead:
        seqno, digest = data.get("seqno"), data.get("hash")
        if (
            not isinstance(seqno, int)
            or not isinstance(digest, str)
            or not HEX64_RE.fullmatch(digest)
        ):
            raise ChainFormatError("stored chain head is malformed")
        return cls(seqno, digest)


@dataclass(frozen=True, slots=True)
class Member:
    """A current member: their verified public keys and role."""

    public: PublicIdentity
    role: Role

    @property
    def fingerprint(self) -> str:
        return self.public.fingerprint

    @property
    def reads_content(self) -> bool:
        return self.role in READER_ROLES


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What held right after statement ``seqno`` (used to check keyrings sealed at that point)."""

    hash: str
    epoch: int
    readers: frozenset[str]
    managers: frozenset[str]
    rekeyed: str | None = None
    """The new key of a member who rotated their identity at this statement: it may seal this
    point's keyrings, whatever its role."""


@dataclass(frozen=True, slots=True)
class VerifiedTeamState:
    """The team as a verified chain describes it. Only :func:`verify_chain` makes one."""

    team: str
    members: Mapping[str, Member]
    epoch: int
    metadata_policy: MetadataPolicy
    content_policy: ContentPolicy
    head: ChainHead
    vault_key_commitment: str
    epoch_commitments: Mapping[int, str]
    checkpoints: tuple[Checkpoint, ...]
    epoch_writers: Mapping[int, frozenset[str]]
    known_identities: Mapping[str, PublicIdentity]
    used_invites: frozenset[str]
    last_time: int
    statements: tuple[UnverifiedStatement, ...] = field(repr=False)

    @property
    def readers(self) -> frozenset[str]:
        """Fingerprints of members who receive content keys (not viewers)."""
        return self.checkpoints[-1].readers

    def member(self, fingerprint: str) -> Member | None:
        return self.members.get(fingerprint)

    def was_writer(self, fingerprint: str, epoch: int) -> bool:
        """True if ``fingerprint`` held a reader role at some point while ``epoch`` was current."""
        return fingerprint in self.epoch_writers.get(epoch, frozenset())

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickled for the worker processes that open pulled pages (the same user's own
        processes, over a private pipe): the read-only mappings travel as dicts and are made
        read-only again on load. Nothing is verified again: only this process verified it."""
        values = [getattr(self, f.name) for f in fields(self)]
        return _unpickle_state, tuple(
            dict(v) if isinstance(v, MappingProxyType) else v for v in values
        )


def _unpickle_state(*values: Any) -> VerifiedTeamState:
    restored: list[Any] = [MappingProxyType(v) if isinstance(v, dict) else v for v in values]
    return VerifiedTeamState(*restored)


# --- parsing -------------------------------------------------------------------------------

_DECODER: Final = msgspec.json.Decoder(StatementBody)


def parse_statement(wire: object) -> UnverifiedStatement:
    """Parse the wire form ``{"body": str, "signature": str}``; checks shape only."""
    if isinstance(wire, UnverifiedStatement):
        return wire
    if not isinstance(wire, Mapping) or set(wire) != {"body", "signature"}:
        raise ChainFormatError("a chain statement must be {'body', 'signature'}")
    body_text = wire["body"]
    if not isinstance(body_text, str):
        raise ChainFormatError("a chain statement body must be a string")
    body_bytes = body_text.encode("utf-8")
    try:
        body = decode_canonical(_DECODER, body_bytes)
        signature = b64d(wire["signature"])
    except (msgspec.DecodeError, ValueError) as exc:
        raise ChainFormatError(f"malformed chain statement: {exc}") from None
    return UnverifiedStatement(body, body_bytes, signature)


# --- commitments and safety numbers ---------------------------------------------------------


def epoch_key_commitment(team: str, epoch: int, key: bytes) -> str:
    """Commitment to an epoch key, published in the chain; keyrings must match it."""
    return prim.hmac_sha256(key, labels.KEY_COMMITMENT_EPOCH + team.encode() + u64(epoch)).hex()


def vault_key_commitment(team: str, key: bytes) -> str:
    """Commitment to the vault id key, published in the ``create`` statement."""
    return prim.hmac_sha256(key, labels.KEY_COMMITMENT_VAULT + team.encode()).hex()


def safety_number(state: VerifiedTeamState) -> str:
    """Eight groups of five digits derived from the team and chain head, to compare by voice."""
    digest = prim.sha512(
        labels.SAFETY_NUMBER
        + state.team.encode()
        + u64(state.head.seqno)
        + bytes.fromhex(state.head.hash)
    )
    groups = (int.from_bytes(digest[i * 8 : i * 8 + 8], "big") % 100_000 for i in range(8))
    return " ".join(f"{g:05d}" for g in groups)


# --- folding statements into a state --------------------------------------------------------


class _Folder:
    """Mutable accumulator used while verifying; frozen into a VerifiedTeamState at the end."""

    def __init__(self) -> None:
        self.team = ""
        self.members: dict[str, Member] = {}
        self.epoch = 0
        self.metadata_policy: MetadataPolicy = "coarse"
        self.content_policy: ContentPolicy = "encrypted"
        self.vault_commitment = ""
        self.commitments: dict[int, str] = {}
        self.checkpoints: list[Checkpoint] = []
        self.writers: dict[int, set[str]] = {}
        self.known: dict[str, PublicIdentity] = {}
        self.invites: set[str] = set()
        self.last_time = 0
        self.statements: list[UnverifiedStatement] = []
        self.latest = now_seconds() + MAX_CLOCK_SKEW_SECONDS  # no statement may be dated later

    @classmethod
    def from_state(cls, state: VerifiedTeamState) -> _Folder:
        f = cls()
        f.team, f.epoch, f.last_time = state.team, state.epoch, state.last_time
        f.members = dict(state.members)
        f.metadata_policy, f.content_policy = state.metadata_policy, state.content_policy
        f.vault_commitment = state.vault_key_commitment
        f.commitments = dict(state.epoch_commitments)
        f.checkpoints = list(state.checkpoints)
        f.writers = {e: set(w) for e, w in state.epoch_writers.items()}
        f.known = dict(state.known_identities)
        f.invites = set(state.used_invites)
        f.statements = list(state.statements)
        return f

    def freeze(self) -> VerifiedTeamState:
        last = self.statements[-1]
        return VerifiedTeamState(
            team=self.team,
            members=MappingProxyType(dict(self.members)),
            epoch=self.epoch,
            metadata_policy=self.metadata_policy,
            content_policy=self.content_policy,
            head=ChainHead(last.body.seqno, self.checkpoints[-1].hash),
            vault_key_commitment=self.vault_commitment,
            epoch_commitments=MappingProxyType(dict(self.commitments)),
            checkpoints=tuple(self.checkpoints),
            epoch_writers=MappingProxyType({e: frozenset(w) for e, w in self.writers.items()}),
            known_identities=MappingProxyType(dict(self.known)),
            used_invites=frozenset(self.invites),
            last_time=self.last_time,
            statements=tuple(self.statements),
        )

    # -- the checks, in order: position, signature, authority, effect --

    def apply(self, st: UnverifiedStatement) -> None:
        body = st.body
        self._check_position(body)
        signer = self._signer_key(body)
        if not signer.verify(labels.CHAIN_SIGNATURE + st.body_bytes, st.signature):
            raise ChainSignatureError(f"statement {body.seqno}: bad signature")
        _ACTIONS[body.action](self, body)
        self.last_time = body.time
        self._checkpoint(
            st.hash,
            roster_changed=body.action in _ROSTER_ACTIONS,
            rekeyed=body.member if body.action == "rekey" else None,
        )
        self.statements.append(st)

    def _check_position(self, body: StatementBody) -> None:
        if body.version != labels.PROTOCOL_VERSION:
            raise ChainFormatError(f"statement {body.seqno}: unsupported version {body.version}")
        expected = len(self.statements)
        if body.seqno != expected:
            raise ChainLinkError(f"statement at position {expected} has seqno {body.seqno}")
        prev = self.checkpoints[-1].hash if self.checkpoints else ""
        if body.prev != prev:
            raise ChainLinkError(f"statement {body.seqno}: previous hash does not match")
        if expected and body.team != self.team:
            raise ChainLinkError(f"statement {body.seqno}: belongs to another team")
        if body.time < self.last_time:
            raise ChainLinkError(f"statement {body.seqno}: time goes backwards")
        if body.time > self.latest:
            raise ChainLinkError(
                f"statement {body.seqno} is dated in the future (more than "
                f"{MAX_CLOCK_SKEW_SECONDS // 60} minutes ahead of this clock)"
            )
        if (body.action == "create") != (expected == 0):
            raise ChainLinkError(f"statement {body.seqno}: 'create' must come first, and only once")
        if not FINGERPRINT_RE.fullmatch(body.signer):
            raise ChainFormatError(f"statement {body.seqno}: malformed signer")

    def _signer_key(self, body: StatementBody) -> PublicIdentity:
        if body.action == "create":
            return _member_identity(body)
        member = self.members.get(body.signer)
        if member is None:
            raise ChainPermissionError(f"statement {body.seqno}: signer is not a member")
        return member.public

    def _checkpoint(self, digest: str, *, roster_changed: bool, rekeyed: str | None) -> None:
        prev = self.checkpoints[-1] if self.checkpoints else None
        if prev is None or roster_changed:
            members = self.members.items()
            readers = frozenset(fp for fp, m in members if m.role in READER_ROLES)
            managers = frozenset(fp for fp, m in members if m.role in _MANAGER_ROLES)
        else:  # rotations and policy changes keep the roster: share the sets
            readers, managers = prev.readers, prev.managers
        self.checkpoints.append(Checkpoint(digest, self.epoch, readers, managers, rekeyed))
        writers = self.writers.setdefault(self.epoch, set())
        if roster_changed or not writers:
            writers.update(readers)

    def role_of(self, fingerprint: str, seqno: int) -> Role:
        member = self.members.get(fingerprint)
        if member is None:
            raise ChainPermissionError(f"statement {seqno}: {fingerprint} is not a member")
        return member.role

    def require_manager(self, body: StatementBody, *, owner_only: bool) -> None:
        role = self.role_of(body.signer, body.seqno)
        allowed = {"owner"} if owner_only else _MANAGER_ROLES
        if role not in allowed:
            raise ChainPermissionError(
                f"statement {body.seqno}: a {role} may not {body.action.replace('_', ' ')} here"
            )

    def owners(self) -> int:
        return sum(1 for m in self.members.values() if m.role == "owner")

    def new_epoch(self, body: StatementBody) -> None:
        commitment = body.epoch_key_commitment
        if body.epoch != self.epoch + 1 or commitment is None or not _is_hex64(commitment):
            raise ChainFormatError(
                f"statement {body.seqno}: needs epoch {self.epoch + 1} and its key commitment"
            )
        self.epoch = body.epoch
        self.commitments[body.epoch] = commitment

    def same_epoch(self, body: StatementBody) -> None:
        if body.epoch != self.epoch or body.epoch_key_commitment is not None:
            raise ChainFormatError(f"statement {body.seqno}: must stay in epoch {self.epoch}")


def _is_hex64(value: str) -> bool:
    return HEX64_RE.fullmatch(value) is not None


def _only(body: StatementBody, *allowed: str) -> None:
    """Refuse fields that the action does not use, so each statement has one meaning."""
    optional = (
        "member", "member_keys", "role", "epoch_key_commitment", "vault_key_commitment",
        "metadata_policy", "content_policy", "invite_id", "invite_proof", "key_proof",
    )  # fmt: skip
    extra = [name for name in optional if name not in allowed and getattr(body, name) is not None]
    if extra:
        raise ChainFormatError(
            f"statement {body.seqno}: unexpected fields {extra} for {body.action}"
        )


def _member_identity(body: StatementBody) -> PublicIdentity:
    if body.member is None or body.member_keys is None:
        raise ChainFormatError(f"statement {body.seqno}: needs member and member_keys")
    try:
        ident = PublicIdentity(
            bytes.fromhex(body.member_keys.x25519), bytes.fromhex(body.member_keys.ed25519)
        )
    except ValueError:
        raise ChainKeyError(f"statement {body.seqno}: invalid member keys") from None
    if ident.fingerprint != body.member:
        raise ChainKeyError(f"statement {body.seqno}: member keys do not match the fingerprint")
    return ident


def _target(f: _Folder, body: StatementBody) -> Member:
    if body.member is None:
        raise ChainFormatError(f"statement {body.seqno}: needs a member")
    member = f.members.get(body.member)
    if member is None:
        raise ChainPermissionError(f"statement {body.seqno}: {body.member} is not a member")
    return member


def _do_create(f: _Folder, body: StatementBody) -> None:
    _only(body, "member", "member_keys", "role", "epoch_key_commitment", "vault_key_commitment",
          "metadata_policy", "content_policy")  # fmt: skip
    ident = _member_identity(body)
    if body.signer != body.member or body.role != "owner" or body.prev != "":
        raise ChainFormatError("create: the signer must add themselves as owner")
    if not body.team or len(body.team) > MAX_TEAM_LEN or not body.team.isprintable():
        raise ChainFormatError("create: malformed team id")
    if body.metadata_policy is None or body.content_policy is None:
        raise ChainFormatError("create: needs metadata_policy and content_policy")
    vault_commitment = body.vault_key_commitment
    if vault_commitment is None or not _is_hex64(vault_commitment) or body.epoch != 1:
        raise ChainFormatError("create: needs epoch 1 and the vault key commitment")
    f.team = body.team
    f.epoch = 0
    f.new_epoch(body)
    f.vault_commitment = vault_commitment
    f.metadata_policy, f.content_policy = body.metadata_policy, body.content_policy
    f.members[ident.fingerprint] = Member(ident, "owner")
    f.known[ident.fingerprint] = ident


def _do_add(f: _Folder, body: StatementBody) -> None:
    _only(body, "member", "member_keys", "role", "invite_id", "invite_proof")
    ident = _member_identity(body)
    if body.role is None:
        raise ChainFormatError(f"statement {body.seqno}: needs a role")
    f.require_manager(body, owner_only=body.role in _MANAGER_ROLES)
    if ident.fingerprint in f.members:
        raise ChainReplayError(f"statement {body.seqno}: {ident.fingerprint} is already a member")
    if (body.invite_id is None) != (body.invite_proof is None):
        raise ChainFormatError(f"statement {body.seqno}: invite_id and invite_proof go together")
    if body.invite_id is not None:
        if body.invite_id in f.invites:
            raise ChainReplayError(f"statement {body.seqno}: invite {body.invite_id} already used")
        f.invites.add(body.invite_id)
    f.same_epoch(body)
    f.members[ident.fingerprint] = Member(ident, body.role)
    f.known[ident.fingerprint] = ident


def _do_remove(f: _Folder, body: StatementBody) -> None:
    _only(body, "member", "epoch_key_commitment")
    target = _target(f, body)
    f.require_manager(body, owner_only=target.role in _MANAGER_ROLES)
    if target.role == "owner" and f.owners() == 1:
        raise ChainPermissionError(f"statement {body.seqno}: cannot remove the last owner")
    f.new_epoch(body)  # removal and rotation are one signed statement
    del f.members[target.fingerprint]


def _do_change_role(f: _Folder, body: StatementBody) -> None:
    _only(body, "member", "role", "epoch_key_commitment")
    target = _target(f, body)
    if body.role is None or body.role == target.role:
        raise ChainFormatError(f"statement {body.seqno}: needs a different role")
    f.require_manager(body, owner_only=bool({target.role, body.role} & _MANAGER_ROLES))
    if target.role == "owner" and f.owners() == 1:
        raise ChainPermissionError(f"statement {body.seqno}: cannot demote the last owner")
    if target.role in READER_ROLES and body.role not in READER_ROLES:
        f.new_epoch(body)  # a reader who becomes a viewer must lose future content keys
    else:
        f.same_epoch(body)
    f.members[target.fingerprint] = Member(target.public, body.role)


def _do_rotate(f: _Folder, body: StatementBody) -> None:
    _only(body, "epoch_key_commitment")
    f.require_manager(body, owner_only=False)
    f.new_epoch(body)


def _do_change_policy(f: _Folder, body: StatementBody) -> None:
    _only(body, "metadata_policy", "content_policy")
    f.require_manager(body, owner_only=True)  # what leaves members' machines in clear
    if body.metadata_policy is None and body.content_policy is None:
        raise ChainFormatError(f"statement {body.seqno}: no policy given")
    f.same_epoch(body)
    f.metadata_policy = body.metadata_policy or f.metadata_policy
    f.content_policy = body.content_policy or f.content_policy


def rekey_proof_message(body: StatementBody) -> bytes:
    """What the new key of a rekey signs: its place in the chain and both fingerprints."""
    return (
        labels.REKEY_PROOF
        + lp(body.team.encode())
        + u64(body.seqno)
        + lp(body.prev.encode())
        + lp(body.signer.encode())
        + lp((body.member or "").encode())
    )


def _do_rekey(f: _Folder, body: StatementBody) -> None:
    _only(body, "member", "member_keys", "key_proof", "epoch_key_commitment")
    old = f.members[body.signer]  # the signer is a member: checked before the signature
    new = _member_identity(body)
    if new.fingerprint in f.known:
        raise ChainReplayError(
            f"statement {body.seqno}: {new.fingerprint} was already a key of this team"
        )
    try:
        proof = b64d(body.key_proof or "")
    except ValueError:
        raise ChainFormatError(f"statement {body.seqno}: malformed key proof") from None
    if not new.verify(rekey_proof_message(body), proof):
        raise ChainSignatureError(f"statement {body.seqno}: the new key did not sign the rekey")
    if old.reads_content:
        f.new_epoch(body)  # the old key may be in a thief's hands: it never opens what follows
    else:
        f.same_epoch(body)
    del f.members[body.signer]
    f.members[new.fingerprint] = Member(new, old.role)
    f.known[new.fingerprint] = new


_ACTIONS: Final = {
    "create": _do_create,
    "add": _do_add,
    "remove": _do_remove,
    "change_role": _do_change_role,
    "rotate": _do_rotate,
    "change_policy": _do_change_policy,
    "rekey": _do_rekey,
}


# --- verification ---------------------------------------------------------------------------


def verify_chain(
    statements: Iterable[object],
    last_verified_head: ChainHead | None = None,
    *,
    team: str | None = None,
    now: int | None = None,
) -> VerifiedTeamState:
    """Verify a whole chain from its ``create`` statement and return the team state.

    ``statements`` are wire dicts or :class:`UnverifiedStatement` values, in chain order.
    With ``last_verified_head`` (persisted from the previous run) a chain shorter than that head
    is a rollback and one with a different statement at that seqno is a fork; both raise.
    With ``team`` the chain must belong to that team. A statement dated more than
    :data:`MAX_CLOCK_SKEW_SECONDS` after ``now`` (default: this clock) is refused. Any failure
    raises a :class:`~keymgmt.errors.ChainError` subclass and nothing of the chain may be used.
    """
    folder = _Folder()
    if now is not None:
        folder.latest = now + MAX_CLOCK_SKEW_SECONDS
    for wire in statements:
        folder.apply(parse_statement(wire))
    if not folder.statements:
        raise ChainFormatError("the team chain is empty")
    if team is not None and folder.team != team:
        raise ChainLinkError("the chain belongs to another team")
    if last_verified_head is not None:
        _check_head(folder, last_verified_head)
    return folder.freeze()


def _check_head(folder: _Folder, head: ChainHead) -> None:
    if head.seqno >= len(folder.checkpoints):
        raise ChainRollbackError(
            f"the server returned {len(folder.checkpoints)} statements but this client "
            f"already verified {head.seqno + 1}"
        )
    if folder.checkpoints[head.seqno].hash != head.hash:
        raise ChainForkError(
            f"the chain differs from the one verified before at seqno {head.seqno}"
        )


def extend_chain(
    state: VerifiedTeamState, statements: Iterable[object], *, now: int | None = None
) -> VerifiedTeamState:
    """Verify ``statements`` as the continuation of an already verified ``state``."""
    folder = _Folder.from_state(state)
    if now is not None:
        folder.latest = now + MAX_CLOCK_SKEW_SECONDS
    for wire in statements:
        folder.apply(parse_statement(wire))
    return folder.freeze()


# --- building statements --------------------------------------------------------------------


def _sign(body: StatementBody, signer: Identity) -> UnverifiedStatement:
    body_bytes = canonical_json(msgspec.to_builtins(body))
    signature = signer.sign(labels.CHAIN_SIGNATURE + body_bytes)
    return UnverifiedStatement(body, body_bytes, signature)


def _next(
    state: VerifiedTeamState, signer: Identity, action: Action, now: int | None, **fields: object
) -> UnverifiedStatement:
    body = StatementBody(
        version=labels.PROTOCOL_VERSION,
        team=state.team,
        seqno=state.head.seqno + 1,
        prev=state.head.hash,
        time=now_seconds() if now is None else now,
        signer=signer.fingerprint,
        action=action,
        **fields,  # type: ignore[arg-type]
    )
    statement = _sign(body, signer)
    try:
        # Refuse to sign what verifiers would reject, at the time the statement carries.
        extend_chain(state, [statement], now=body.time)
    except ChainError:
        log.debug("refusing to sign an invalid %s statement", action)
        raise
    return statement


def _keys(public: PublicIdentity) -> MemberKeys:
    return MemberKeys(x25519=public.x25519.hex(), ed25519=public.ed25519.hex())


def create_team(
    *,
    team: str,
    owner: Identity,
    vault_id_key: bytes,
    epoch_key: bytes,
    metadata_policy: MetadataPolicy = "coarse",
    content_policy: ContentPolicy = "encrypted",
    now: int | None = None,
) -> UnverifiedStatement:
    """The genesis statement: ``owner`` creates ``team`` in epoch 1 with the given policy."""
    body = StatementBody(
        version=labels.PROTOCOL_VERSION,
        team=team,
        seqno=0,
        prev="",
        time=now_seconds() if now is None else now,
        signer=owner.fingerprint,
        action="create",
        epoch=1,
        member=owner.fingerprint,
        member_keys=_keys(owner.public),
        role="owner",
        epoch_key_commitment=epoch_key_commitment(team, 1, epoch_key),
        vault_key_commitment=vault_key_commitment(team, vault_id_key),
        metadata_policy=metadata_policy,
        content_policy=content_policy,
    )
    statement = _sign(body, owner)
    verify_chain([statement], now=body.time)
    return statement


def add_member(
    state: VerifiedTeamState,
    *,
    signer: Identity,
    member: PublicIdentity,
    role: Role,
    now: int | None = None,
    invite_id: str | None = None,
    invite_proof: str | None = None,
) -> UnverifiedStatement:
    """Add ``member`` with ``role``; invites pass their id and proof (see :mod:`keymgmt.invite`)."""
    return _next(
        state, signer, "add", now, epoch=state.epoch, member=member.fingerprint,
        member_keys=_keys(member), role=role, invite_id=invite_id, invite_proof=invite_proof,
    )  # fmt: skip


def remove_member(
    state: VerifiedTeamState,
    *,
    signer: Identity,
    member: str,
    new_epoch_key: bytes,
    now: int | None = None,
) -> UnverifiedStatement:
    """Remove ``member`` (a fingerprint) and move to a new epoch in the same statement."""
    epoch = state.epoch + 1
    return _next(
        state, signer, "remove", now, epoch=epoch, member=member,
        epoch_key_commitment=epoch_key_commitment(state.team, epoch, new_epoch_key),
    )  # fmt: skip


def change_role(
    state: VerifiedTeamState,
    *,
    signer: Identity,
    member: str,
    role: Role,
    new_epoch_key: bytes | None = None,
    now: int | None = None,
) -> UnverifiedStatement:
    """Change a member's role; demoting a reader to viewer needs ``new_epoch_key``."""
    if new_epoch_key is None:
        return _next(state, signer, "change_role", now, epoch=state.epoch, member=member, role=role)
    epoch = state.epoch + 1
    return _next(
        state, signer, "change_role", now, epoch=epoch, member=member, role=role,
        epoch_key_commitment=epoch_key_commitment(state.team, epoch, new_epoch_key),
    )  # fmt: skip


def rotate(
    state: VerifiedTeamState, *, signer: Identity, new_epoch_key: bytes, now: int | None = None
) -> UnverifiedStatement:
    """Start a new key epoch without a membership change."""
    epoch = state.epoch + 1
    commitment = epoch_key_commitment(state.team, epoch, new_epoch_key)
    return _next(state, signer, "rotate", now, epoch=epoch, epoch_key_commitment=commitment)


def change_policy(
    state: VerifiedTeamState,
    *,
    signer: Identity,
    metadata_policy: MetadataPolicy | None = None,
    content_policy: ContentPolicy | None = None,
    now: int | None = None,
) -> UnverifiedStatement:
    """Change the team's clear-metadata and/or content policy."""
    return _next(
        state, signer, "change_policy", now, epoch=state.epoch,
        metadata_policy=metadata_policy, content_policy=content_policy,
    )  # fmt: skip


def rekey(
    state: VerifiedTeamState,
    *,
    signer: Identity,
    new: Identity,
    new_epoch_key: bytes | None = None,
    now: int | None = None,
) -> UnverifiedStatement:
    """Replace ``signer``'s identity in the team by ``new``; a reader passes ``new_epoch_key``
    (their rekey starts a new epoch), a viewer does not."""
    fields: dict[str, object] = {"member": new.fingerprint, "member_keys": _keys(new.public)}
    epoch = state.epoch
    if new_epoch_key is not None:
        epoch += 1
        fields["epoch_key_commitment"] = epoch_key_commitment(state.team, epoch, new_epoch_key)
    unsigned = StatementBody(
        version=labels.PROTOCOL_VERSION, team=state.team, seqno=state.head.seqno + 1,
        prev=state.head.hash, time=0, signer=signer.fingerprint, action="rekey", epoch=epoch,
        member=new.fingerprint,
    )  # fmt: skip
    proof = b64e(new.sign(rekey_proof_message(unsigned)))
    return _next(state, signer, "rekey", now, epoch=epoch, key_proof=proof, **fields)


def chain_to_wire(statements: Sequence[UnverifiedStatement]) -> list[dict[str, str]]:
    """The JSON-able list the server stores and returns."""
    return [s.to_dict() for s in statements]
