"""Errors of keymgmt, written for the person who has to act on them.

Every error carries a one-line ``message`` and, where there is something to do, a ``hint``.
Failures to *open* something (an envelope, a keyring, a share's title) are deliberately opaque:
they all raise the same :class:`IntegrityError` with the same message, and the reason goes only
to the ``keymgmt`` debug logger as a short code (never key bytes or plaintext), so that a hostile
server learns nothing from which check failed (attack class 14).

::

    KeymgmtError
    ├── IntegrityError            any failure to open: AEAD tag, AD, padding, node ID, keyring
    │                             recipients/sealer/commitment, share text (one message)
    ├── KeyFileError              the key file or recovery kit
    │   ├── UnlockError              wrong passphrase, or the file is corrupt or was altered
    │   ├── KdfParamsError           Argon2id parameters below the floor or above the ceiling
    │   └── KeyFileExistsError       refusing to replace an existing key file
    ├── ChainError                the signed team chain does not verify
    │   ├── ChainFormatError         a statement is malformed
    │   ├── ChainSignatureError      a signature does not verify
    │   ├── ChainLinkError           gap, reordering, wrong prev hash or wrong team
    │   ├── ChainForkError           the chain disagrees with the last verified head
    │   ├── ChainRollbackError       the chain is shorter than the last verified head
    │   ├── ChainPermissionError     the signer's role does not allow the action
    │   ├── ChainReplayError         a statement or invite was used twice
    │   └── ChainKeyError            a member key does not match its fingerprint or commitment
    ├── InviteError               invite codes and join requests
    │   ├── InviteCodeError          typo or damaged code (checksum)
    │   ├── InviteExpiredError       the invite expired
    │   ├── InviteUsedError          the invite was already used
    │   └── InviteVerificationError  the join request or the chain does not match the code
    ├── ShareError                a share statement does not verify, or expired
    └── PolicyError               invalid input to sealing (policy, metadata, sizes)
"""

from __future__ import annotations

__all__ = [
    "ChainError",
    "ChainForkError",
    "ChainFormatError",
    "ChainKeyError",
    "ChainLinkError",
    "ChainPermissionError",
    "ChainReplayError",
    "ChainRollbackError",
    "ChainSignatureError",
    "IntegrityError",
    "InviteCodeError",
    "InviteError",
    "InviteExpiredError",
    "InviteUsedError",
    "InviteVerificationError",
    "KdfParamsError",
    "KeyFileError",
    "KeyFileExistsError",
    "KeymgmtError",
    "PolicyError",
    "ShareError",
    "UnlockError",
]


class KeymgmtError(Exception):
    """Base of every error keymgmt raises on purpose."""

    default_hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint


class IntegrityError(KeymgmtError):
    """One opaque error for every failure to open; the reason is logged at debug level only."""

    MESSAGE = (
        "integrity check failed: the data was altered, is not meant for this key, or is corrupt"
    )
    default_hint = "the server or the network returned tampered data; nothing was stored"

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)


class KeyFileError(KeymgmtError):
    """The key file or the recovery kit cannot be used."""


class UnlockError(KeyFileError):
    """Wrong passphrase, or the file is corrupt; one message for both on purpose."""

    default_hint = "check the passphrase (or TAPES_PASSPHRASE); the file was left untouched"


class KdfParamsError(KeyFileError):
    """The Argon2id parameters in the file are outside the accepted range."""

    default_hint = "the key file may have been tampered with; restore it from a recovery kit"


class KeyFileExistsError(KeyFileError):
    """Writing would replace an existing key file."""

    default_hint = "move the existing key file away first, or pass overwrite=True"


class ChainError(KeymgmtError):
    """The signed team chain does not verify; no key from the server may be used."""

    default_hint = "the server returned a team history that does not verify; nothing was changed"


class ChainFormatError(ChainError):
    """A statement is malformed."""


class ChainSignatureError(ChainError):
    """A signature does not verify."""


class ChainLinkError(ChainError):
    """Gap, reordering, wrong previous hash or wrong team."""


class ChainForkError(ChainError):
    """The chain disagrees with the head this client verified before."""


class ChainRollbackError(ChainError):
    """The chain is shorter than the head this client verified before."""


class ChainPermissionError(ChainError):
    """The signer's role at that point of the chain does not allow the action."""


class ChainReplayError(ChainError):
    """A statement or an invite appears twice."""


class ChainKeyError(ChainError):
    """A member's keys do not match the fingerprint, or a key does not match its commitment."""


class InviteError(KeymgmtError):
    """Invite codes and join requests."""


class InviteCodeError(InviteError):
    """The invite code is damaged or mistyped."""

    default_hint = "copy the whole code again; letters are case-insensitive, dashes optional"


class InviteExpiredError(InviteError):
    """The invite expired."""

    default_hint = "ask for a new invite"


class InviteUsedError(InviteError):
    """The invite was already used."""

    default_hint = "invites are single-use; ask for a new invite"


class InviteVerificationError(InviteError):
    """The join request or the chain does not match the invite code."""

    default_hint = "someone (possibly the server) altered the request; do not proceed"


class ShareError(KeymgmtError):
    """A share statement does not verify or has expired."""


class PolicyError(KeymgmtError):
    """Invalid input to sealing: unknown policy, malformed metadata, oversized body."""
