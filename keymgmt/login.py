"""Login by proof of possession of the identity's Ed25519 key.

The server hands out a single-use random nonce with an ID; the client signs
``LOGIN_LABEL || len(server) || server || len(id) || id || nonce || fingerprint`` and the server
verifies it with the public key it is asked to log in. Binding the server's origin stops a
malicious server from relaying a challenge of another server; the label stops the signature from
being accepted for anything else (a chain statement, a share).

Rotating the account's identity (``tapes keys rotate``) is signed by both keys over
``REKEY_ACCOUNT || len(server) || server || len(user) || user || len(old) || old || len(new) ||
new``: the old key says it hands the account over, the new key that it holds itself.
"""

from __future__ import annotations

from typing import Final

from keymgmt import labels
from keymgmt._encoding import lp
from keymgmt.identity import Identity, PublicIdentity

__all__ = [
    "LOGIN_LABEL",
    "login_message",
    "rekey_message",
    "sign_login",
    "sign_rekey",
    "verify_login",
    "verify_rekey",
]

LOGIN_LABEL: Final = labels.LOGIN_CHALLENGE


def login_message(*, server: str, challenge_id: str, nonce: bytes, fingerprint: str) -> bytes:
    return b"".join(
        (
            LOGIN_LABEL,
            lp(server.encode("utf-8")),
            lp(challenge_id.encode("ascii")),
            lp(nonce),
            fingerprint.encode("ascii"),
        )
    )


def sign_login(identity: Identity, *, server: str, challenge_id: str, nonce: bytes) -> bytes:
    """The client's answer to a login challenge."""
    return identity.sign(
        login_message(
            server=server, challenge_id=challenge_id, nonce=nonce, fingerprint=identity.fingerprint
        )
    )


def verify_login(
    public: PublicIdentity, *, server: str, challenge_id: str, nonce: bytes, signature: bytes
) -> bool:
    """Whether ``signature`` answers the challenge for ``public`` at ``server``.

    Never raises on malformed input (a non-ASCII challenge ID, a short signature): False.
    """
    try:
        message = login_message(
            server=server, challenge_id=challenge_id, nonce=nonce, fingerprint=public.fingerprint
        )
    except UnicodeEncodeError:
        return False
    return public.verify(message, signature)


def rekey_message(*, server: str, user_id: str, old: str, new: str) -> bytes:
    """What both keys of an account's key rotation sign."""
    return b"".join(
        (
            labels.REKEY_ACCOUNT,
            lp(server.encode("utf-8")),
            lp(user_id.encode("utf-8")),
            lp(old.encode("ascii")),
            lp(new.encode("ascii")),
        )
    )


def sign_rekey(old: Identity, new: Identity, *, server: str, user_id: str) -> tuple[bytes, bytes]:
    """The old and the new key's signatures handing the account ``user_id`` at ``server`` over."""
    message = rekey_message(
        server=server, user_id=user_id, old=old.fingerprint, new=new.fingerprint
    )
    return old.sign(message), new.sign(message)


def verify_rekey(
    old: PublicIdentity,
    new: PublicIdentity,
    *,
    server: str,
    user_id: str,
    old_signature: bytes,
    new_signature: bytes,
) -> bool:
    """Whether both keys signed the hand-over. Never raises on malformed input: False."""
    try:
        message = rekey_message(
            server=server, user_id=user_id, old=old.fingerprint, new=new.fingerprint
        )
    except UnicodeEncodeError:
        return False
    return old.verify(message, old_signature) and new.verify(message, new_signature)
