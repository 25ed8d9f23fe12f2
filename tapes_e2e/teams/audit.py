"""``tapes team audit``: one trail from three sources, each line marked with what vouches for it.

* **verified**: membership, roles, epochs and policies from the signed team chain (verified here
  against this identity's pin), and the shares from their signed share statements (sharer,
  time, expiry).
* **server**: what only the server saw (who fetched a shared session, unshares, keyrings, legal
  holds, rotations of keys): its audit log, a hash chain whose head the server signs with its
  own key. This client pins that key on first use and the last head it read, and checks on every
  read that the log recomputes entry by entry, ends at the signed head, and still holds the head
  it pinned. A server that drops, reorders, edits or truncates what a client saw is caught; what
  it never logged, or logged falsely before anyone looked, is not: these lines are attested by
  the server, not proven.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import msgspec

import keymgmt
from keymgmt._encoding import b64d
from keymgmt.audit import entry_hash, verify_audit_head
from tapes_e2e.client import ApiClient
from tapes_e2e.config import read_private, write_private
from tapes_e2e.errors import TeamError
from tapes_e2e.protocol.teams import AuditEntryOut, SignedAuditHead
from tapes_e2e.teams.access import verify_team
from tapes_e2e.teams.sharing import list_shared

__all__ = ["AuditLine", "AuditRewrittenError", "audit_trail", "check_log"]

PINS_FILE = "audit-pins.json"


class AuditRewrittenError(TeamError):
    default_hint = (
        "the server changed its audit log after this client read it, or is not the server it "
        "was: keep this machine's audit-pins.json as evidence and ask the server's operator"
    )


@dataclass(frozen=True)
class AuditLine:
    """One event: when, what vouches for it (``verified`` or ``server``), who, and what."""

    time: datetime
    source: str
    who: str
    event: str

    def to_json(self) -> dict[str, str]:
        return {
            "time": self.time.isoformat(), "source": self.source, "who": self.who,
            "event": self.event,
        }  # fmt: skip


class _Head(msgspec.Struct):
    entry_id: int
    hash: str


class _Pins(msgspec.Struct):
    version: int = 1
    keys: dict[str, str] = msgspec.field(default_factory=dict)  # server URL -> Ed25519 hex
    heads: dict[str, dict[str, _Head]] = msgspec.field(default_factory=dict)


_DECODER = msgspec.json.Decoder(_Pins)


def _when(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def check_log(
    entries: list[AuditEntryOut], head: SignedAuditHead | None, server_key: bytes, team: str,
    pinned: tuple[int, str] | None,
) -> tuple[int, str]:  # fmt: skip
    """Check the whole log of ``team`` as read from its first entry: every hash recomputes,
    every link holds, it ends at the head the server signed with ``server_key``, and it still
    holds the ``pinned`` head (id, hash) this client saw before. The head to pin now."""
    prev: str | None = None
    for entry in entries:
        try:
            expected = entry_hash(
                prev, action=entry.action, subject=entry.subject, detail=entry.detail,
                actor=entry.actor_id, at=_when(entry.created_at),
            )  # fmt: skip
        except (ValueError, OverflowError):  # no time, or one no UTC date holds: no hash of ours
            expected = None
        if entry.prev_hash != prev or entry.hash != expected:
            raise AuditRewrittenError(
                f"the server's audit log of team {team} does not hold together at entry "
                f"{entry.id}: an entry was changed, dropped or moved"
            )
        prev = entry.hash
    last = (entries[-1].id, entries[-1].hash) if entries else (0, "")
    try:
        signature = b64d(head.signature) if head else b""
    except ValueError:
        signature = b""
    if (
        head is None
        or (head.entry_id, head.hash) != last
        or not verify_audit_head(server_key, team, head.entry_id, head.hash, signature)
    ):
        raise AuditRewrittenError(
            f"the server's audit log of team {team} does not end at the head it signed"
        )
    if (
        pinned is not None
        and pinned[0] > 0
        and (pinned[0], pinned[1]) not in {(e.id, e.hash) for e in entries}
    ):
        raise AuditRewrittenError(
            f"the server's audit log of team {team} no longer holds entry {pinned[0]} as this "
            "client read it: the log was rewritten or truncated"
        )
    return last


def _server_lines(api: ApiClient, dotdir: Path, team: str) -> Iterator[AuditLine]:
    """The server's log of ``team``, checked against the pinned server key and head."""
    pins = read_private(dotdir / PINS_FILE, _DECODER, _Pins(), "the audit heads this client read")
    server = api.api_url
    key = bytes.fromhex(api.server_key().ed25519)
    pinned_key = pins.keys.get(server)
    if pinned_key is not None and bytes.fromhex(pinned_key) != key:
        raise AuditRewrittenError(
            f"the server's signing key changed since this client pinned it ({pinned_key[:16]}…)"
        )
    entries, after, head = [], 0, None
    while True:
        page = api.audit_page(team, after)
        entries += page.entries
        head = page.head
        if not page.more:
            break
        after = page.cursor
    seen = pins.heads.get(server, {}).get(team)
    entry_id, digest = check_log(
        entries, head, key, team, (seen.entry_id, seen.hash) if seen else None
    )
    pins.keys[server] = key.hex()
    pins.heads.setdefault(server, {})[team] = _Head(entry_id, digest)
    write_private(dotdir / PINS_FILE, msgspec.json.encode(pins).decode("utf-8"))
    for entry in entries:
        detail = ", ".join(f"{k}={v}" for k, v in sorted(entry.detail.items()))
        yield AuditLine(
            _when(entry.created_at), "server", entry.actor_id or "-",
            f"{entry.action} {entry.subject}" + (f" ({detail})" if detail else ""),
        )  # fmt: skip


def _chain_lines(state: keymgmt.VerifiedTeamState) -> Iterator[AuditLine]:
    for st in state.statements:
        body = st.body
        parts: list[str] = [body.action]
        if body.member:
            parts.append(body.member)
        if body.role:
            parts.append(f"as {body.role}")
        if body.metadata_policy or body.content_policy:
            parts.append(f"policy {body.metadata_policy or '-'}/{body.content_policy or '-'}")
        parts.append(f"(epoch {body.epoch})")
        yield AuditLine(datetime.fromtimestamp(body.time, UTC), "verified", body.signer,
                        " ".join(parts))  # fmt: skip


def audit_trail(
    api: ApiClient, identity: keymgmt.Identity, dotdir: Path, team: str,
    since: datetime | None = None,
) -> list[AuditLine]:  # fmt: skip
    """The team's trail, oldest first: the verified chain and shares, and the server's log
    (checked as :func:`check_log` says)."""
    state = verify_team(api, team, identity, dotdir)
    lines = list(_chain_lines(state))
    views, _refused = list_shared(api, identity, dotdir, team)
    for view in views:
        expiry = f", expires {view.expires_at:%Y-%m-%d %H:%M}" if view.expires_at else ""
        lines.append(AuditLine(view.shared_at.astimezone(UTC), "verified", view.shared_by,
                               f"shared {view.session_id or view.leaf_id}{expiry}"))  # fmt: skip
    lines += _server_lines(api, dotdir, team)
    lines.sort(key=lambda line: line.time)
    return [line for line in lines if since is None or line.time >= since]
