"""Domain-separation labels and the protocol version.

Every key derivation, signature, MAC and associated-data string in keymgmt starts with one of
these constants, so that a value produced for one purpose can never be accepted for another
(a keyring signature as a chain statement, an invite MAC as a share, ...). Changing any of them
is a protocol change: bump ``PROTOCOL_VERSION`` and regenerate ``vectors/keymgmt``.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "AUDIT_HEAD_SIGNATURE",
    "CHAIN_HASH",
    "CHAIN_SIGNATURE",
    "ENVELOPE_AD",
    "ENVELOPE_METADATA_SIGNATURE",
    "ENVELOPE_V1",
    "ENVELOPE_VERSION",
    "FINGERPRINT",
    "INVITE_ACCEPT",
    "INVITE_CHECKSUM",
    "INVITE_JOIN",
    "KEYFILE_AD",
    "KEYRING_SEAL",
    "KEYRING_SIGNATURE",
    "KEY_COMMITMENT_EPOCH",
    "KEY_COMMITMENT_VAULT",
    "LOGIN_CHALLENGE",
    "NODE_ID",
    "NODE_ID_KEY",
    "PAPER_KEY_CHECK",
    "PROTOCOL_VERSION",
    "RECOVERY_KIT_AD",
    "REKEY_ACCOUNT",
    "REKEY_PROOF",
    "SAFETY_NUMBER",
    "SEAL_HKDF",
    "SHARE_SIGNATURE",
    "SHARE_TEXT_AD",
]

PROTOCOL_VERSION: Final = 1
ENVELOPE_VERSION: Final = 2
"""Node envelopes sealed today: node IDs keyed per epoch, the writer's chain position in the AD."""
ENVELOPE_V1: Final = 1
"""Envelopes sealed before 2026-12: node IDs under the vault id key; still opened, never sealed."""

_PREFIX: Final = b"tapes-e2e/v1/"

FINGERPRINT: Final = _PREFIX + b"fingerprint"
NODE_ID: Final = _PREFIX + b"node-id"  # documentation only: node IDs are HMAC(id key, hash)
NODE_ID_KEY: Final = _PREFIX + b"node-id-key"  # HKDF info: an epoch's node-ID key
ENVELOPE_AD: Final = _PREFIX + b"envelope-ad"
ENVELOPE_METADATA_SIGNATURE: Final = _PREFIX + b"envelope-metadata-only-signature"
CHAIN_SIGNATURE: Final = _PREFIX + b"chain-statement-signature"
CHAIN_HASH: Final = _PREFIX + b"chain-statement-hash"
SAFETY_NUMBER: Final = _PREFIX + b"safety-number"
KEY_COMMITMENT_EPOCH: Final = _PREFIX + b"key-commitment/epoch"
KEY_COMMITMENT_VAULT: Final = _PREFIX + b"key-commitment/vault-id"
KEYRING_SEAL: Final = _PREFIX + b"keyring-seal-ad"
KEYRING_SIGNATURE: Final = _PREFIX + b"keyring-signature"
SEAL_HKDF: Final = _PREFIX + b"x25519-seal-hkdf"
KEYFILE_AD: Final = _PREFIX + b"keyfile-ad"
RECOVERY_KIT_AD: Final = _PREFIX + b"recovery-kit-ad"
PAPER_KEY_CHECK: Final = _PREFIX + b"paper-key-check"
INVITE_JOIN: Final = _PREFIX + b"invite/join-request-mac"
INVITE_ACCEPT: Final = _PREFIX + b"invite/accept-proof-mac"
INVITE_CHECKSUM: Final = _PREFIX + b"invite/checksum"
SHARE_SIGNATURE: Final = _PREFIX + b"share-signature"
SHARE_TEXT_AD: Final = _PREFIX + b"share-text-ad"
LOGIN_CHALLENGE: Final = _PREFIX + b"login-challenge"
AUDIT_HEAD_SIGNATURE: Final = _PREFIX + b"audit-head-signature"  # the server signs its log head
REKEY_PROOF: Final = _PREFIX + b"rekey-proof"  # the new key of a rekey signs its place in the chain
REKEY_ACCOUNT: Final = _PREFIX + b"rekey-account"  # old and new key sign an account's key change
