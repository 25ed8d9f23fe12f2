"""Login by proof of possession of the identity key (used by the server's auth)."""

from __future__ import annotations

from keymgmt import generate_identity, labels
from keymgmt.login import (
    LOGIN_LABEL,
    login_message,
    rekey_message,
    sign_login,
    sign_rekey,
    verify_login,
    verify_rekey,
)

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


def test_a_rekey_verifies_only_with_both_signatures_over_its_own_hand_over() -> None:
    old = generate_identity(rng=DetRng("rekey-old"))
    new = generate_identity(rng=DetRng("rekey-new"))
    stranger = generate_identity(rng=DetRng("rekey-stranger"))
    where = {"server": "https://a.example", "user_id": "u1"}
    old_sig, new_sig = sign_rekey(old, new, **where)
    assert verify_rekey(
        old.public, new.public, old_signature=old_sig, new_signature=new_sig, **where
    )
    # each key must sign; neither signature stands in for the other
    assert not verify_rekey(
        old.public, new.public, old_signature=new_sig, new_signature=new_sig, **where
    )
    assert not verify_rekey(
        old.public, new.public, old_signature=old_sig, new_signature=old_sig, **where
    )
    # a hand-over to another key, at another server or for another account, is another message
    assert not verify_rekey(
        old.public, stranger.public, old_signature=old_sig, new_signature=new_sig, **where
    )
    for changes in ({"server": "https://b.example"}, {"user_id": "u2"}):
        assert not verify_rekey(
            old.public,
            new.public,
            old_signature=old_sig,
            new_signature=new_sig,
            **{**where, **changes},
        )
    # malformed input is False, never an exception
    assert not verify_rekey(
        old.public,
        new.public,
        server="\udc80",
        user_id="u1",
        old_signature=old_sig,
        new_signature=b"",
    )
    assert rekey_message(server="s", user_id="u", old="A", new="B").startswith(labels.REKEY_ACCOUNT)
