"""Login by proof of possession of the identity key (used by the server's auth)."""

from __future__ import annotations

from keymgmt import generate_identity, labels
from keymgmt.login import LOGIN_LABEL, login_message, sign_login, verify_login

from .conftest import DetRng

NONCE = bytes(range(32))


def test_login_signature_verifies_only_for_its_server_challenge_and_key() -> None:
    me = generate_identity(rng=DetRng("login"))
    other = generate_identity(rng=DetRng("other"))
    sig = sign_login(me, server="https://a.example", challenge_id="c1", nonce=NONCE)
    ok = {"server": "https://a.example", "challenge_id": "c1", "nonce": NONCE}
    assert verify_login(me.public, signature=sig, **ok)  # type: ignore[arg-type]
    assert not verify_login(other.public, signature=sig, **ok)  # type: ignore[arg-type]
    for changes in ({"server": "https://b.example"}, {"challenge_id": "c2"}, {"nonce": bytes(32)}):
        assert not verify_login(me.public, signature=sig, **{**ok, **changes})  # type: ignore[arg-type]
    assert not verify_login(me.public, signature=sig[:10], **ok)  # type: ignore[arg-type]
    assert not verify_login(me.public, server="s", challenge_id="é", nonce=NONCE, signature=sig)


def test_login_label_is_domain_separated() -> None:
    assert LOGIN_LABEL == labels.LOGIN_CHALLENGE
    message = login_message(server="s", challenge_id="c", nonce=b"n", fingerprint="F")
    assert message.startswith(labels.LOGIN_CHALLENGE)
    assert labels.CHAIN_SIGNATURE != labels.LOGIN_CHALLENGE
