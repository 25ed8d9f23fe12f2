"""The server's tables. Nothing here is plaintext content: node bodies are client-sealed
envelopes, titles and notes of shares are encrypted by the client, tokens and API keys are stored
only as hashes.

The RFC's tables (users, teams, team_members, nodes, shared_sessions) adapted to end-to-end
encryption, plus what that needs. A *vault* (a row of ``teams``) is where nodes live: each user has
a personal vault (a team of one) and each team has one.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    UniqueConstraint,
    false,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "AccessToken",
    "ApiKey",
    "AuditEntry",
    "AuthChallenge",
    "Base",
    "ChainStatement",
    "DashboardLink",
    "DashboardSession",
    "Device",
    "GithubBind",
    "Invite",
    "JoinRequest",
    "Keyring",
    "NodeAlias",
    "NodeRecord",
    "RateEvent",
    "RefreshToken",
    "RetiredKey",
    "ServerKey",
    "Share",
    "ShareNode",
    "Team",
    "TeamMember",
    "UsageBucket",
    "UsageLabel",
    "User",
]

_NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
JsonType = JSON().with_variant(JSONB(), "postgresql")
Stamp = DateTime(timezone=True)
Count = BigInteger().with_variant(Numeric(38, 0), "postgresql")
"""A summed count: exact past 2^63 on PostgreSQL; SQLite keeps a 64-bit integer (a sum past
it turns into a double, never an error)."""


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=_NAMING)


class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    handle: Mapped[str] = mapped_column(String(40), unique=True)
    email: Mapped[str | None] = mapped_column(String(320), unique=True)
    github_id: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    github_login: Mapped[str | None] = mapped_column(String(40))  # as GitHub said at binding
    x25519: Mapped[bytes] = mapped_column(LargeBinary(32))
    ed25519: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    fingerprint: Mapped[str] = mapped_column(String(128), unique=True)
    personal_vault: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(Stamp)


class Team(Base):
    """A vault: a user's personal one, or a team's."""

    __tablename__ = "teams"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(80), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # personal | team
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    tier: Mapped[str] = mapped_column(String(16), default="free")
    head_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    node_count: Mapped[int] = mapped_column(BigInteger, default=0)
    # Bytes of envelopes the vault holds (kept by push and retention; the plan's quota).
    bytes_stored: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    chain_seqno: Mapped[int] = mapped_column(Integer, default=-1)
    chain_head: Mapped[str | None] = mapped_column(String(64))
    # The key epoch the verified chain is in (set with chain_seqno); a push of a new node sealed
    # under any other epoch is refused (server.domain.nodes.services.push).
    epoch: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    audit_head: Mapped[str | None] = mapped_column(String(64))
    # Legal hold (``tapes team hold``, owners): retention deletes nothing of the vault while on.
    legal_hold: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(Stamp)


class TeamMember(Base):
    __tablename__ = "team_members"
    team_id: Mapped[str] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(16))  # owner | admin | member | viewer
    joined_at: Mapped[datetime] = mapped_column(Stamp)
    removed_at: Mapped[datetime | None] = mapped_column(Stamp)
    # Left on their own (access ended, ``removed_at`` set) and still in the chain until an
    # owner or admin signs their removal, which clears it.
    left_at: Mapped[datetime | None] = mapped_column(Stamp)


class ChainStatement(Base):
    """The signed team chain, stored as the clients signed it."""

    __tablename__ = "chain_statements"
    team_id: Mapped[str] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True
    )
    seqno: Mapped[int] = mapped_column(Integer, primary_key=True)
    hash: Mapped[str] = mapped_column(String(64))
    statement: Mapped[dict[str, str]] = mapped_column(JsonType)
    created_at: Mapped[datetime] = mapped_column(Stamp)


class Keyring(Base):
    """An epoch's keys sealed to one member's X25519 key (opaque to the server)."""

    __tablename__ = "keyrings"
    team_id: Mapped[str] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True
    )
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    recipient: Mapped[str] = mapped_column(String(128), primary_key=True)  # fingerprint
    sealed: Mapped[dict[str, str]] = mapped_column(JsonType)
    created_at: Mapped[datetime] = mapped_column(Stamp)


class NodeRecord(Base):
    """One node envelope. ``envelope`` is the client's sealed record: packed (MessagePack,
    ``keymgmt.PackedEnvelope``) since the binary wire, the JSON the client sent before it
    (``server.domain.nodes.stored`` tells them apart and serves either in either form)."""

    __tablename__ = "nodes"
    vault_id: Mapped[str] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True
    )
    node_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    parent_id: Mapped[str | None] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    epoch: Mapped[int] = mapped_column(Integer)
    record_type: Mapped[str] = mapped_column(String(32))
    author: Mapped[str] = mapped_column(String(128))
    padded_size: Mapped[int] = mapped_column(BigInteger)
    metadata_only: Mapped[bool] = mapped_column(Boolean)
    clear_metadata: Mapped[dict[str, object]] = mapped_column(JsonType)
    envelope: Mapped[bytes] = mapped_column(LargeBinary)
    uploader_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    uploaded_at: Mapped[datetime] = mapped_column(Stamp)
    __table_args__ = (
        UniqueConstraint("vault_id", "seq"),
        Index("ix_nodes_vault_parent", "vault_id", "parent_id"),
        Index("ix_nodes_uploader", "uploader_id"),
    )


class UsageBucket(Base):
    """Usage kept at push (``server.domain.usage``): the sums of one vault's nodes per 15-minute
    bucket of when the work happened and per uploader, model, provider, agent and project.
    ``dims`` names those text columns by hash (their index entry would be too long); retention
    deletes envelopes, never these counts."""

    __tablename__ = "usage_buckets"
    vault_id: Mapped[str] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True
    )
    bucket: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    dims: Mapped[str] = mapped_column(String(32), primary_key=True)
    member_id: Mapped[str] = mapped_column(String(36))
    model: Mapped[str] = mapped_column(String(512))
    provider: Mapped[str] = mapped_column(String(512))
    agent: Mapped[str] = mapped_column(String(512))
    project: Mapped[str] = mapped_column(String(512))
    by_upload: Mapped[bool] = mapped_column(Boolean)
    nodes: Mapped[int] = mapped_column(Count)
    sessions: Mapped[int] = mapped_column(Count)
    prompt_tokens: Mapped[int] = mapped_column(Count)
    completion_tokens: Mapped[int] = mapped_column(Count)
    cache_creation_input_tokens: Mapped[int] = mapped_column(Count)
    cache_read_input_tokens: Mapped[int] = mapped_column(Count)
    total_tokens: Mapped[int] = mapped_column(Count)
    base_input_tokens: Mapped[int] = mapped_column(Count)


class UsageLabel(Base):
    """A model (with its provider), harness or project that a vault's usage itemizes, by hash
    of its text (``server.domain.usage.labels``). Each kind is capped per vault, so a member who
    names a million models cannot make every usage report a million rows long: the names past
    the cap are counted under ``(other)``."""

    __tablename__ = "usage_labels"
    vault_id: Mapped[str] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    label: Mapped[str] = mapped_column(String(32), primary_key=True)


class NodeAlias(Base):
    """The ID a node had before ``tapes team reencrypt`` sealed it again under a later epoch
    (its ID changes with the epoch). Signed shares name a leaf by the ID it had when shared, and
    clients that synced before name parents by it: the server resolves both to the node."""

    __tablename__ = "node_aliases"
    vault_id: Mapped[str] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True
    )
    old_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    node_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(Stamp)
    __table_args__ = (Index("ix_node_aliases_node", "vault_id", "node_id"),)


class Share(Base):
    """A session shared with a team: the sharer's signed statement (title/note encrypted)."""

    __tablename__ = "shared_sessions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    session_id: Mapped[str] = mapped_column(String(64))  # leaf node ID
    shared_by: Mapped[str] = mapped_column(ForeignKey("users.id"))
    statement: Mapped[dict[str, object]] = mapped_column(JsonType)
    seq: Mapped[int] = mapped_column(BigInteger)
    shared_at: Mapped[datetime] = mapped_column(Stamp)
    expires_at: Mapped[datetime | None] = mapped_column(Stamp)
    revoked_at: Mapped[datetime | None] = mapped_column(Stamp)
    __table_args__ = (Index("ix_shares_team_session", "team_id", "session_id"),)


class ShareNode(Base):
    """The ancestry of a share's leaf, materialized when it is shared (ancestry is immutable)."""

    __tablename__ = "share_nodes"
    share_id: Mapped[str] = mapped_column(
        ForeignKey("shared_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    node_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    __table_args__ = (Index("ix_share_nodes_node", "node_id"),)


class Invite(Base):
    __tablename__ = "invites"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    created_by: Mapped[str] = mapped_column(ForeignKey("users.id"))
    role: Mapped[str] = mapped_column(String(16))
    expires_at: Mapped[datetime] = mapped_column(Stamp)
    used_at: Mapped[datetime | None] = mapped_column(Stamp)
    created_at: Mapped[datetime] = mapped_column(Stamp)


class JoinRequest(Base):
    __tablename__ = "join_requests"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    invite_id: Mapped[str] = mapped_column(ForeignKey("invites.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    request: Mapped[dict[str, object]] = mapped_column(JsonType)
    status: Mapped[str] = mapped_column(String(16))  # pending | approved | rejected
    created_at: Mapped[datetime] = mapped_column(Stamp)


class AuthChallenge(Base):
    __tablename__ = "auth_challenges"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    nonce: Mapped[bytes] = mapped_column(LargeBinary(32))
    expires_at: Mapped[datetime] = mapped_column(Stamp)
    used_at: Mapped[datetime | None] = mapped_column(Stamp)


class AccessToken(Base):
    __tablename__ = "access_tokens"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    family_id: Mapped[str] = mapped_column(String(36), index=True)
    expires_at: Mapped[datetime] = mapped_column(Stamp)


class RefreshToken(Base):
    """Rotating refresh tokens; reusing a spent one revokes its whole family (RFC 6819)."""

    __tablename__ = "refresh_tokens"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    family_id: Mapped[str] = mapped_column(String(36), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    expires_at: Mapped[datetime] = mapped_column(Stamp)
    used_at: Mapped[datetime | None] = mapped_column(Stamp)
    revoked_at: Mapped[datetime | None] = mapped_column(Stamp)


class Device(Base):
    """One login: its token family, named by the client (the hostname by default), with when
    and from where it was last seen (at login and at each refresh)."""

    __tablename__ = "devices"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # the token family
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(Stamp)
    last_seen_at: Mapped[datetime] = mapped_column(Stamp)
    address: Mapped[str] = mapped_column(String(64))
    revoked_at: Mapped[datetime | None] = mapped_column(Stamp)


class RetiredKey(Base):
    """An identity key an account rotated away from (``tapes keys rotate``): it never logs in or
    registers again, and a chain statement that still names it (a removal of a member who left
    before rotating) finds its account."""

    __tablename__ = "retired_keys"
    fingerprint: Mapped[str] = mapped_column(String(128), primary_key=True)
    ed25519: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    retired_at: Mapped[datetime] = mapped_column(Stamp)


class GithubBind(Base):
    """A GitHub device flow under way for one account: GitHub's device code, which this server
    polls with when the account asks, until approved or expired. No access token is kept."""

    __tablename__ = "github_binds"
    id: Mapped[str] = mapped_column(String(43), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    device_code: Mapped[str] = mapped_column(String(100))
    interval: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(Stamp)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    permissions: Mapped[str] = mapped_column(String(100))  # comma-separated
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(Stamp)
    last_used_at: Mapped[datetime | None] = mapped_column(Stamp)
    revoked_at: Mapped[datetime | None] = mapped_column(Stamp)


class AuditEntry(Base):
    """Append-only, hash-chained per team: each entry's hash covers the previous one."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    team_id: Mapped[str | None] = mapped_column(String(64), index=True)
    actor_id: Mapped[str | None] = mapped_column(String(36))
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(200))
    detail: Mapped[dict[str, object]] = mapped_column(JsonType)
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(Stamp)
    # A team's newest entry (the head the server signs) in O(log n) on every backend.
    __table_args__ = (Index("ix_audit_log_team_entry", "team_id", "id"),)


class ServerKey(Base):
    """The server's own signing key (the audit log's head), made on first use."""

    __tablename__ = "server_keys"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    seed: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[datetime] = mapped_column(Stamp)


class RateEvent(Base):
    """Counters for rate limits, in the database so every worker and host shares them."""

    __tablename__ = "rate_events"
    bucket: Mapped[str] = mapped_column(String(200), primary_key=True)
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    count: Mapped[int] = mapped_column(Integer)


class DashboardLink(Base):
    """A one-time sign-in link to the dashboard (``POST /api/v1/dashboard/links``): stored as
    the SHA-256 of its secret, usable once, for minutes."""

    __tablename__ = "dashboard_links"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    team_id: Mapped[str | None] = mapped_column(String(64))  # the team to open first, if any
    created_at: Mapped[datetime] = mapped_column(Stamp)
    expires_at: Mapped[datetime] = mapped_column(Stamp)
    used_at: Mapped[datetime | None] = mapped_column(Stamp)


class DashboardSession(Base):
    """A browser's dashboard session; the cookie holds the secret, this row its SHA-256. One
    signed in with an API key keeps the key's scope (and ends when the key is revoked)."""

    __tablename__ = "dashboard_sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    api_key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(Stamp)
    expires_at: Mapped[datetime] = mapped_column(Stamp, index=True)
