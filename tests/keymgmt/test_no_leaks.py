"""No error message, hint, repr or log record contains key material, passphrases or plaintext."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from keymgmt import (
    Envelope,
    KeymgmtError,
    TeamKeys,
    VerifiedShare,
    create_invite,
    export_recovery_kit,
    import_recovery_kit,
    make_join_request,
    node_id_key,
    open_keyring,
    open_node,
    open_share_text,
    parse_invite_code,
    project_metadata,
    read_key_file,
    seal_keyring,
    seal_node,
    verify_chain,
    verify_join_request,
    verify_share,
    write_key_file,
)
from keymgmt._encoding import b64e
from keymgmt.keystore import TEST_KDF

from .conftest import T0, DetRng, Team, hasher, make_body, tapes_hash_of

CANARY = "CANARY-plaintext-7f3a"
PASSPHRASE = "hunter2-passphrase-CANARY"  # noqa: S105 - a canary


def _needles(team: Team, extra: list[bytes]) -> list[str]:
    id_key = node_id_key(team.team, 1, team.epoch_key)
    secrets = [team.epoch_key, team.vault_id_key, id_key, *extra]
    for who in (team.owner, team.admin, team.member, team.viewer, team.outsider):
        secret = who.export_secret()
        secrets += [secret, secret[:32], secret[32:]]
    out = [CANARY, PASSPHRASE]
    for s in secrets:
        out += [s.hex(), b64e(s), repr(s)[2:-1]]
    return out


def _failures(team: Team, tmp_path: Path) -> list[Callable[[], object]]:
    keys = team.keys_for(team.member)
    body = make_body(CANARY, None)
    env = seal_node(
        state=team.state,
        keys=keys,
        tapes_hash=tapes_hash_of(CANARY, None),
        parent_id=None,
        body=body,
        metadata=project_metadata("coarse", {"model": "m"}),
        author=team.member.fingerprint,
    )
    wire: dict[str, Any] = env.to_dict()
    ring = seal_keyring(
        team.state,
        sealer=team.owner,
        epoch=1,
        epoch_key=team.epoch_key,
        vault_id_key=team.vault_id_key,
    ).to_dict()
    path = tmp_path / "k.json"
    write_key_file(path, team.member, PASSPHRASE, params=TEST_KDF, floor=TEST_KDF)
    kit = export_recovery_kit(team.member, PASSPHRASE, params=TEST_KDF, floor=TEST_KDF)
    inv = create_invite(team=team.team, inviter=team.admin, now=T0, rng=DetRng("leak"))
    request = make_join_request(inv.code, identity=team.outsider, now=T0).to_dict()
    request["mac"] = "00" * 32

    def lying_hasher(b: bytes) -> tuple[str, str | None]:
        raise ValueError(b.decode())  # a client bug that puts plaintext in its exception

    return [
        lambda: open_node(
            dict(wire, ciphertext=wire["ciphertext"][:-2] + "AA"),
            state=team.state,
            keys=keys,
            hasher=hasher,
        ),
        lambda: open_node(wire, state=team.state, keys=keys, hasher=lying_hasher),
        lambda: open_node(
            wire,
            state=team.state,
            keys=TeamKeys(team.team, team.vault_id_key, {1: bytes(32)}),
            hasher=hasher,
        ),
        lambda: Envelope.from_dict({"bogus": CANARY}),
        lambda: open_keyring(ring, state=team.state, identity=team.viewer),
        lambda: open_keyring(
            dict(ring, signature=b64e(bytes(64))), state=team.state, identity=team.member
        ),
        lambda: read_key_file(path, "wrong " + PASSPHRASE, floor=TEST_KDF),
        lambda: read_key_file(path, PASSPHRASE),
        lambda: import_recovery_kit(kit, "wrong", floor=TEST_KDF),
        lambda: verify_chain([s.to_dict() for s in team.statements][::-1]),
        lambda: parse_invite_code(inv.code.text[:-2]),
        lambda: verify_join_request(request, invite=inv, state=team.state, now=T0),
        lambda: verify_share({"body": CANARY, "signature": ""}, state=team.state),
        lambda: open_share_text(_share(team, keys), keys=TeamKeys(team.team, team.vault_id_key)),
    ]


def _share(team: Team, keys: TeamKeys) -> VerifiedShare:
    from keymgmt import create_share

    return verify_share(
        create_share(
            state=team.state, keys=keys, sharer=team.member, leaf_id="ab" * 32, title=CANARY, now=T0
        ),
        state=team.state,
        now=T0,
    )


def test_errors_and_logs_never_contain_secrets_or_plaintext(
    team: Team, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="keymgmt")
    inv_secret: list[bytes] = []
    failures = _failures(team, tmp_path)
    texts: list[str] = []
    for fail in failures:
        with pytest.raises(KeymgmtError) as info:
            fail()
        err = info.value
        assert err.__cause__ is None  # never chain the primitive's exception (and its locals)
        texts += [str(err), repr(err), err.hint or "", err.message]
    texts += [record.getMessage() for record in caplog.records]
    texts += [repr(team.owner), repr(team.keys_for(team.member))]
    assert caplog.records, "the debug log should say why something was rejected"
    blob = "\n".join(texts)
    for needle in _needles(team, inv_secret):
        assert needle not in blob
