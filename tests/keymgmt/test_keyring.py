"""Team keyrings: sealed to exactly the chain's readers, signed by an admin, key-committed."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keymgmt import (
    IntegrityError,
    PolicyError,
    TeamKeys,
    add_member,
    labels,
    new_key,
    open_keyring,
    remove_member,
    seal_keyring,
)
from keymgmt import _primitives as prim
from keymgmt._encoding import b64d, b64e, canonical_json
from keymgmt.keyring import EpochKeys, UnverifiedKeyring, _seal_ad, parse_keyring

from .conftest import T0, DetRng, Team, build_team


def ring(team: Team, **kw: Any) -> UnverifiedKeyring:
    args: dict[str, Any] = {
        "sealer": team.owner,
        "epoch": team.state.epoch,
        "epoch_key": team.epoch_key,
        "vault_id_key": team.vault_id_key,
        "rng": team.rng,
    }
    args.update(kw)
    return seal_keyring(team.state, **args)


def forge(t: Team, base: UnverifiedKeyring, signer: Any = None, **changes: Any) -> dict[str, str]:
    """Re-sign a modified keyring body (as a malicious admin or with a stolen key would)."""
    body = msgspec.structs.replace(base.body, **changes)
    body_bytes = canonical_json(msgspec.to_builtins(body))
    sig = (signer or t.owner).sign(labels.KEYRING_SIGNATURE + body_bytes)
    return UnverifiedKeyring(body, body_bytes, sig).to_dict()


def test_every_reader_opens_viewer_and_outsider_do_not(team: Team) -> None:
    wire = json.loads(json.dumps(ring(team).to_dict()))
    for who in (team.owner, team.admin, team.member):
        keys = open_keyring(wire, state=team.state, identity=who)
        assert (keys.epoch, keys.epoch_key, keys.vault_id_key) == (
            1,
            team.epoch_key,
            team.vault_id_key,
        )
        assert "epoch_key" not in repr(keys) or team.epoch_key.hex() not in repr(keys)
    assert set(ring(team).body.recipients) == team.state.readers
    for who in (team.viewer, team.outsider):
        with pytest.raises(IntegrityError):
            open_keyring(wire, state=team.state, identity=who)


def test_rotation_after_removal_excludes_removed_member(team: Team) -> None:
    key2 = new_key(rng=team.rng)
    team.append(
        remove_member(
            team.state,
            signer=team.admin,
            member=team.member.fingerprint,
            new_epoch_key=key2,
            now=T0 + 10,
        )
    )
    wire = ring(team, sealer=team.admin, epoch_key=key2, epoch=2).to_dict()
    assert team.member.fingerprint not in parse_keyring(wire).body.recipients
    assert open_keyring(wire, state=team.state, identity=team.owner).epoch_key == key2
    with pytest.raises(IntegrityError):
        open_keyring(wire, state=team.state, identity=team.member)


def test_seal_refuses_wrong_keys_wrong_sealer_and_future_epochs(team: Team) -> None:
    with pytest.raises(PolicyError):
        ring(team, sealer=team.member)
    with pytest.raises(PolicyError):
        ring(team, epoch=2)
    with pytest.raises(PolicyError):
        ring(team, epoch_key=bytes(32))
    with pytest.raises(PolicyError):
        ring(team, vault_id_key=bytes(32))
    with pytest.raises(PolicyError):
        new_key(rng=lambda n: b"short")


def test_team_keys_collects_epochs_and_refuses_other_teams(team: Team) -> None:
    keys = team.keys_for(team.member)
    assert keys.current_epoch == 1
    assert keys.epoch_key(1) == team.epoch_key
    assert keys.epoch_key(2) is None
    with pytest.raises(PolicyError):
        keys.add(EpochKeys("team-2", 2, bytes(32), team.vault_id_key))
    with pytest.raises(PolicyError):
        keys.add(EpochKeys(team.team, 2, bytes(32), bytes(32)))
    assert team.vault_id_key.hex() not in repr(keys)


def test_extra_recipient_escrow_is_refused(team: Team) -> None:
    """Attack class 6: a keyring that also seals to a key not in the roster."""
    base = ring(team)
    extra = dict(base.body.recipients)
    extra[team.outsider.fingerprint] = b64e(
        prim.seal_to(
            team.outsider.public.x25519,
            team.vault_id_key + team.epoch_key,
            _seal_ad(base.body, team.outsider.fingerprint),
        )
    )
    wire = forge(team, base, recipients=extra)
    for who in (team.owner, team.outsider):
        with pytest.raises(IntegrityError):
            open_keyring(wire, state=team.state, identity=who)


def test_missing_recipient_and_viewer_recipient_are_refused(team: Team) -> None:
    base = ring(team)
    fewer = {k: v for k, v in base.body.recipients.items() if k != team.admin.fingerprint}
    with pytest.raises(IntegrityError):
        open_keyring(forge(team, base, recipients=fewer), state=team.state, identity=team.owner)


def test_unauthorized_sealer_and_attacker_key_are_refused(team: Team) -> None:
    """Attack class 2: a wrap of an attacker-chosen key, even to the member's real key."""
    base = ring(team)
    evil_key = bytes(range(32))
    recipients = {
        fp: b64e(
            prim.seal_to(
                team.state.members[fp].public.x25519,
                team.vault_id_key + evil_key,
                _seal_ad(base.body, fp),
            )
        )
        for fp in base.body.recipients
    }
    # signed by the rightful owner but the key mismatches the chain commitment
    with pytest.raises(IntegrityError):
        open_keyring(
            forge(team, base, recipients=recipients), state=team.state, identity=team.member
        )
    # signed by a member (not allowed to seal)
    member_sealed = forge(team, base, signer=team.member, sealer=team.member.fingerprint)
    with pytest.raises(IntegrityError):
        open_keyring(member_sealed, state=team.state, identity=team.member)
    # declared sealer is the owner, signature by someone else (the server)
    with pytest.raises(IntegrityError):
        open_keyring(
            forge(team, base, signer=team.outsider), state=team.state, identity=team.member
        )


def test_keyring_position_must_match_the_chain(team: Team) -> None:
    base = ring(team)
    for changes in (
        {"at_seqno": 99},
        {"at_hash": "ab" * 32},
        {"epoch": 0},
        {"team": "team-2"},
        {"version": 2},
    ):
        with pytest.raises(IntegrityError):
            open_keyring(forge(team, base, **changes), state=team.state, identity=team.member)


def test_keyring_sealed_before_a_join_does_not_include_the_new_member(team: Team) -> None:
    early = ring(team).to_dict()
    team.append(
        add_member(
            team.state, signer=team.owner, member=team.outsider.public, role="member", now=T0 + 10
        )
    )
    assert open_keyring(early, state=team.state, identity=team.member).epoch == 1
    with pytest.raises(IntegrityError):
        open_keyring(early, state=team.state, identity=team.outsider)
    assert open_keyring(ring(team).to_dict(), state=team.state, identity=team.outsider).epoch == 1


@pytest.mark.parametrize(
    "wire",
    [None, {}, {"body": "{}", "signature": ""}, {"body": "x", "signature": "!"}],
)
def test_malformed_keyrings_give_the_one_error(team: Team, wire: object) -> None:
    with pytest.raises(IntegrityError):
        open_keyring(wire, state=team.state, identity=team.member)


@pytest.mark.parametrize(
    "sealed",
    [b"", bytes(10), bytes(32 + 24 + 16), bytes(200)],
    ids=["empty", "short", "small-order-ephemeral", "zeros"],
)
def test_malformed_wraps_and_small_order_points_give_the_one_error(
    team: Team, sealed: bytes
) -> None:
    """Attack class 14: every malformed wrap gives the same error text."""
    base = ring(team)
    recipients = dict(base.body.recipients, **{team.member.fingerprint: b64e(sealed)})
    with pytest.raises(IntegrityError) as info:
        open_keyring(
            forge(team, base, recipients=recipients), state=team.state, identity=team.member
        )
    assert str(info.value) == IntegrityError.MESSAGE


def test_wrong_length_plaintext_in_wrap_is_refused(team: Team) -> None:
    base = ring(team)
    fp = team.member.fingerprint
    short = b64e(prim.seal_to(team.member.public.x25519, b"x" * 10, _seal_ad(base.body, fp)))
    recipients = dict(base.body.recipients, **{fp: short})
    with pytest.raises(IntegrityError):
        open_keyring(
            forge(team, base, recipients=recipients), state=team.state, identity=team.member
        )
    bad_vault = b64e(
        prim.seal_to(team.member.public.x25519, bytes(32) + team.epoch_key, _seal_ad(base.body, fp))
    )
    recipients = dict(base.body.recipients, **{fp: bad_vault})
    with pytest.raises(IntegrityError):
        open_keyring(
            forge(team, base, recipients=recipients), state=team.state, identity=team.member
        )


_TEAM = build_team("ring-flip")
_RING = seal_keyring(
    _TEAM.state,
    sealer=_TEAM.owner,
    epoch=1,
    epoch_key=_TEAM.epoch_key,
    vault_id_key=_TEAM.vault_id_key,
    rng=DetRng("r"),
).to_dict()


@settings(max_examples=200, deadline=None)
@given(field=st.sampled_from(["body", "signature"]), bit=st.integers(0, 10**6))
def test_any_bit_flip_in_a_keyring_fails(field: str, bit: int) -> None:
    raw = bytearray(_RING[field].encode() if field == "body" else b64d(_RING[field]))
    raw[(bit // 8) % len(raw)] ^= 1 << (bit % 8)
    value = raw.decode("latin-1") if field == "body" else b64e(bytes(raw))
    with pytest.raises(IntegrityError):
        open_keyring(dict(_RING, **{field: value}), state=_TEAM.state, identity=_TEAM.member)


def test_team_keys_from_epoch_keys() -> None:
    keys = TeamKeys.from_epoch_keys(EpochKeys("t", 3, b"e" * 32, b"v" * 32))
    assert keys.epochs == {3: b"e" * 32}
