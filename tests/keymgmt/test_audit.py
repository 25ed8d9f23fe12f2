"""The audit log's hash chain and the server's signature over its head (keymgmt.audit)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from keymgmt import labels
from keymgmt.audit import (
    audit_head_message,
    entry_hash,
    server_public_key,
    sign_audit_head,
    verify_audit_head,
)

SEED = bytes(range(32))
AT = datetime.now(UTC).replace(microsecond=123456)
ENTRY: dict[str, object] = {
    "action": "share",
    "subject": "node-1",
    "detail": {"with": "bob", "n": 2},
    "actor": "alice",
    "at": AT,
}


def _hash(prev: str | None = None, /, **changes: object) -> str:
    return entry_hash(prev, **{**ENTRY, **changes})  # type: ignore[arg-type]


def test_an_entry_hash_covers_the_one_before_and_every_field() -> None:
    first = _hash()
    assert bytes.fromhex(first) == bytes.fromhex(_hash())
    assert len(first) == 64
    changed = [
        _hash(first),
        *(
            _hash(**{name: value})
            for name, value in (
                ("action", "unshare"),
                ("subject", "node-2"),
                ("detail", {"with": "bob", "n": 3}),
                ("actor", None),
                ("at", AT + timedelta(microseconds=1)),
            )
        ),
    ]
    assert len({first, *changed}) == len(changed) + 1


def test_one_instant_hashes_the_same_naive_or_in_any_zone() -> None:
    """SQLite hands stored stamps back naive (UTC); PostgreSQL aware, in the session's zone."""
    zoned = AT.astimezone(timezone(timedelta(hours=5)))
    assert _hash() == _hash(at=AT.replace(tzinfo=None)) == _hash(at=zoned)


def test_the_head_signature_verifies_only_for_its_team_entry_head_and_key() -> None:
    public = server_public_key(SEED)
    signature = sign_audit_head(SEED, "team-1", 7, "ab" * 32)
    assert verify_audit_head(public, "team-1", 7, "ab" * 32, signature)
    assert not verify_audit_head(public, "team-2", 7, "ab" * 32, signature)
    assert not verify_audit_head(public, "team-1", 8, "ab" * 32, signature)
    assert not verify_audit_head(public, "team-1", 7, "cd" * 32, signature)
    assert not verify_audit_head(server_public_key(bytes(32)), "team-1", 7, "ab" * 32, signature)
    assert audit_head_message("team-1", 7, "x").startswith(labels.AUDIT_HEAD_SIGNATURE)


@pytest.mark.parametrize(
    ("public", "team", "entry_id", "signature"),
    [
        (b"short", "team-1", 7, None),  # a key of the wrong length
        (None, "team-1", 7, b"short"),  # a signature of the wrong length
        (None, "\udc80", 7, None),  # a team name that is no UTF-8
        (None, "team-1", -1, None),  # an entry id no u64 holds
        (None, "team-1", 2**64, None),
    ],
)
def test_a_malformed_head_is_false_never_an_exception(
    public: bytes | None, team: str, entry_id: int, signature: bytes | None
) -> None:
    good_signature = sign_audit_head(SEED, "team-1", 7, "ab" * 32)
    assert not verify_audit_head(
        public if public is not None else server_public_key(SEED),
        team,
        entry_id,
        "ab" * 32,
        signature if signature is not None else good_signature,
    )
