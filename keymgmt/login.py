"""Login by proof of possession of the identity's Ed25519 key.

The server hands out a single-use random nonce with an ID; the client signs
``LOGIN_LABEL || len(server) || server || len(id) || id || nonce || fingerprint`` and the server
verifies it with the public key it is asked to log in. Binding the server's origin stops a
malicious server from relaying a challenge of another server; the label stops the signature from
being accepted for anything else (a chain statement, a share).
"""

from __future__ import annotations

from typing import Final

from keymgmt import labels
from keymgmt._encoding import lp
from keymgmt.identity import Identity, PublicIdentity

__all__ = ["LOGIN_LABEL", "login_message", "sign_login", "verify_login"]

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
