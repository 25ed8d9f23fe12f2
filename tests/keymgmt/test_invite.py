"""Invites: code format and typos, join request MAC, single use, expiry, key swaps on both sides."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keymgmt import (
    ChainReplayError,
    InviteCodeError,
    InviteExpiredError,
    InviteUsedError,
    InviteVerificationError,
    accept_join,
    add_member,
    create_invite,
    generate_identity,
    make_join_request,
    parse_invite_code,
    verify_chain,
    verify_join_request,
    verify_joined,
)
from keymgmt._encoding import b64e
from keymgmt.chain import chain_to_wire
from keymgmt.identity import Identity
from keymgmt.invite import Invite, JoinRequest, VerifiedJoinRequest

from .conftest import T0, DetRng, Team, build_team


def invite(team: Team, **kw: object) -> Invite:
    return create_invite(team=team.team, inviter=team.admin, now=T0 + 10, rng=DetRng("inv"), **kw)  # type: ignore[arg-type]


def join(team: Team) -> tuple[Invite, Identity, VerifiedJoinRequest]:
    inv = invite(team)
    joiner = generate_identity(rng=DetRng("joiner"))
    request = make_join_request(parse_invite_code(inv.code.text), identity=joiner, now=T0 + 20)
    verified = verify_join_request(request.to_dict(), invite=inv, state=team.state, now=T0 + 30)
    return inv, joiner, verified


def test_code_round_trip_and_typo_tolerance(team: Team) -> None:
    code = invite(team).code
    text = code.text
    assert text.startswith("TAPES-")
    assert parse_invite_code(text) == code
    assert parse_invite_code(f"  {text.lower().replace('-', ' ')}\n") == code
    sloppy = text.replace("O", "0").replace("I", "1").replace("B", "8")
    assert parse_invite_code(sloppy) == code
    assert code.secret.hex() not in repr(code)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1],
        lambda t: t + "A",
        lambda t: "XAPES" + t[5:],
        lambda t: t.replace("-", "!", 2),
        lambda t: t[:12] + ("A" if t[12] != "A" else "C") + t[13:],
    ],
    ids=["truncated", "extended", "prefix", "bad-chars", "one-typo"],
)
def test_damaged_codes_are_caught(team: Team, mangle: object) -> None:
    with pytest.raises(InviteCodeError):
        parse_invite_code(mangle(invite(team).code.text))  # type: ignore[operator]


def test_any_single_character_typo_is_caught() -> None:
    """Every position, every letter of the alphabet: exhaustive, so the last letter (whose low
    bits fall past the end of the code and are dropped by base32 decoding) is always tried."""
    text = _CODE_TEXT
    missed = []
    for pos in range(len("TAPES-"), len(text)):
        for char in "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567":
            if text[pos] in ("-", char):
                continue
            try:
                parse_invite_code(text[:pos] + char + text[pos + 1 :])
            except InviteCodeError:
                continue
            missed.append((pos, char))
    assert missed == []


_CODE_TEXT = create_invite(
    team="t", inviter=generate_identity(rng=DetRng("a")), now=T0, rng=DetRng("c")
).code.text


def test_full_join_flow(team: Team) -> None:
    inv, joiner, verified = join(team)
    assert verified.member == joiner.public
    team.append(accept_join(team.state, request=verified, signer=team.admin, now=T0 + 40))
    state = verify_chain(chain_to_wire(team.statements))
    assert verify_joined(state, code=inv.code, identity=joiner) == "member"
    assert inv.code.invite_id in state.used_invites


def test_server_only_sees_the_invite_id(team: Team) -> None:
    """Attack class 13: nothing sent to the server contains the secret or a code."""
    inv, joiner, verified = join(team)
    request = make_join_request(inv.code, identity=joiner, now=T0 + 20)
    statement = accept_join(team.state, request=verified, signer=team.admin, now=T0 + 40)
    server_bound = json.dumps([inv.server_record(), request.to_dict(), statement.to_dict()])
    secret = inv.code.secret
    for needle in (secret.hex(), b64e(secret), inv.code.text, inv.code.text.replace("-", "")):
        assert needle not in server_bound
    assert secret not in server_bound.encode()
    assert inv.code.invite_id in server_bound


def test_join_request_with_swapped_keys_is_refused(team: Team) -> None:
    """Attack class 1 (inviter side): the server replaces the invitee's keys."""
    inv = invite(team)
    joiner = generate_identity(rng=DetRng("joiner"))
    attacker = generate_identity(rng=DetRng("attacker"))
    request = make_join_request(inv.code, identity=joiner, now=T0 + 20).to_dict()
    body = dict(request["body"])  # type: ignore[call-overload]
    body["member"] = attacker.fingerprint
    body["member_keys"] = {
        "x25519": attacker.public.x25519.hex(),
        "ed25519": attacker.public.ed25519.hex(),
    }
    with pytest.raises(InviteVerificationError):
        verify_join_request(
            {"body": body, "mac": request["mac"]}, invite=inv, state=team.state, now=T0 + 30
        )
    # the attacker without the secret cannot compute a MAC of their own either
    guessed = make_join_request(
        parse_invite_code(create_invite(team="x", inviter=attacker, now=T0).code.text),
        identity=attacker,
    ).to_dict()
    with pytest.raises(InviteVerificationError):
        verify_join_request(guessed, invite=inv, state=team.state, now=T0 + 30)


def test_join_request_with_inconsistent_fingerprint_or_bad_keys(team: Team) -> None:
    inv = invite(team)
    joiner = generate_identity(rng=DetRng("joiner"))
    good = make_join_request(inv.code, identity=joiner, now=T0 + 20)
    for changes in (
        {"member": team.member.fingerprint},
        {"member_keys": msgspec.structs.replace(good.body.member_keys, x25519="00" * 32)},
    ):
        body = msgspec.structs.replace(good.body, **changes)
        forged = JoinRequest(body, _mac(inv, body))
        with pytest.raises(InviteVerificationError):
            verify_join_request(forged, invite=inv, state=team.state, now=T0 + 30)


def _mac(inv: Invite, body: object) -> str:
    from keymgmt.invite import _join_mac

    return _join_mac(inv.code, body)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [None, {}, {"body": {}, "mac": "x"}, {"body": {}, "mac": 3}, {"body": "x", "mac": "y", "z": 1}],
)
def test_malformed_join_requests(team: Team, bad: object) -> None:
    with pytest.raises(InviteVerificationError):
        verify_join_request(bad, invite=invite(team), state=team.state, now=T0)  # type: ignore[arg-type]


def test_expired_invite_is_refused(team: Team) -> None:
    inv = invite(team, ttl=60)
    joiner = generate_identity(rng=DetRng("joiner"))
    request = make_join_request(inv.code, identity=joiner, now=T0 + 20)
    with pytest.raises(InviteExpiredError):
        verify_join_request(request, invite=inv, state=team.state, now=T0 + 10 + 61)


def test_invite_replay_is_refused(team: Team) -> None:
    """Invite replay: the same invite cannot admit a second identity."""
    inv, _joiner, verified = join(team)
    team.append(accept_join(team.state, request=verified, signer=team.admin, now=T0 + 40))
    second = generate_identity(rng=DetRng("second"))
    request = make_join_request(inv.code, identity=second, now=T0 + 50)
    with pytest.raises(InviteUsedError):
        verify_join_request(request, invite=inv, state=team.state, now=T0 + 60)
    # even a client that skips that check cannot get a second add past chain verification
    again = add_member(
        team.state, signer=team.owner, member=second.public, role="member", now=T0 + 70
    )
    body = msgspec.structs.replace(again.body, invite_id=inv.code.invite_id, invite_proof="00" * 32)
    from keymgmt.chain import _sign

    with pytest.raises(ChainReplayError):
        verify_chain([*team.statements, _sign(body, team.owner)])


def test_invitee_detects_a_substituted_chain(team: Team) -> None:
    """Attack class 1 (invitee side): the server adds the invitee under other keys or signer."""
    inv, joiner, verified = join(team)
    attacker = generate_identity(rng=DetRng("attacker"))
    # 1. the add was signed by someone other than the inviter in the code
    by_owner = accept_join(team.state, request=verified, signer=team.owner, now=T0 + 40)
    state = verify_chain([*team.statements, by_owner])
    with pytest.raises(InviteVerificationError):
        verify_joined(state, code=inv.code, identity=joiner)
    # 2. a chain that never mentions the invite
    with pytest.raises(InviteVerificationError):
        verify_joined(team.state, code=inv.code, identity=joiner)
    # 3. an add of the attacker's keys carrying the invite id, without a valid proof
    fake = add_member(
        team.state,
        signer=team.admin,
        member=attacker.public,
        role="member",
        now=T0 + 40,
        invite_id=inv.code.invite_id,
        invite_proof="ab" * 32,
    )
    state = verify_chain([*team.statements, fake])
    with pytest.raises(InviteVerificationError):
        verify_joined(state, code=inv.code, identity=joiner)
    # 4. the invitee's own keys but a forged proof
    forged = add_member(
        team.state,
        signer=team.admin,
        member=joiner.public,
        role="member",
        now=T0 + 40,
        invite_id=inv.code.invite_id,
        invite_proof="ab" * 32,
    )
    state = verify_chain([*team.statements, forged])
    with pytest.raises(InviteVerificationError, match="holder"):
        verify_joined(state, code=inv.code, identity=joiner)


def test_invitee_checks_expiry_and_current_membership(team: Team) -> None:
    inv, joiner, verified = join(team)
    late = accept_join(team.state, request=verified, signer=team.admin, now=inv.code.expires_at + 1)
    with pytest.raises(InviteVerificationError, match="outside"):
        verify_joined(verify_chain([*team.statements, late]), code=inv.code, identity=joiner)
    team.append(accept_join(team.state, request=verified, signer=team.admin, now=T0 + 40))
    from keymgmt import remove_member

    team.append(
        remove_member(
            team.state,
            signer=team.owner,
            member=joiner.fingerprint,
            new_epoch_key=team.rng(32),
            now=T0 + 50,
        )
    )
    with pytest.raises(InviteVerificationError, match="no longer"):
        verify_joined(team.state, code=inv.code, identity=joiner)


def test_invite_for_another_team(team: Team) -> None:
    other = build_team("other")
    inv = invite(team)
    request = make_join_request(inv.code, identity=other.outsider, now=T0 + 20)
    with pytest.raises(InviteVerificationError):
        verify_join_request(
            request, invite=Invite("team-x", "member", inv.code), state=team.state, now=T0 + 30
        )


def test_unsupported_code_version(team: Team) -> None:
    import base64

    from keymgmt.invite import _checksum

    raw = base64.b32decode(invite(team).code.text[6:].replace("-", "") + "===")
    payload = b"\x02" + raw[1:-4]
    text = "TAPES-" + base64.b32encode(payload + _checksum(payload)).decode().rstrip("=")
    with pytest.raises(InviteCodeError, match="version"):
        parse_invite_code(text)


_FLIP_TEAM = build_team("invite-flip")
_FLIP_INVITE = create_invite(
    team=_FLIP_TEAM.team, inviter=_FLIP_TEAM.admin, now=T0, rng=DetRng("flip-invite")
)
_FLIP_REQUEST = make_join_request(
    _FLIP_INVITE.code, identity=generate_identity(rng=DetRng("flip-joiner")), now=T0 + 1
).to_dict()


@settings(max_examples=200, deadline=None)
@given(
    field=st.sampled_from(["invite_id", "member", "x25519", "ed25519", "mac"]),
    bit=st.integers(0, 10**6),
)
def test_any_bit_flip_in_a_join_request_fails_closed(field: str, bit: int) -> None:
    request = json.loads(json.dumps(_FLIP_REQUEST))
    holder = request if field == "mac" else request["body"]
    if field in ("x25519", "ed25519"):
        holder = holder["member_keys"]
    raw = bytearray(holder[field].encode())
    raw[(bit // 8) % len(raw)] ^= 1 << (bit % 8)
    holder[field] = raw.decode("latin-1")
    with pytest.raises((InviteVerificationError, InviteUsedError)):
        verify_join_request(request, invite=_FLIP_INVITE, state=_FLIP_TEAM.state, now=T0 + 2)


@settings(max_examples=200, deadline=None)
@given(bit=st.integers(0, 53 * 8 - 1))
def test_any_bit_flip_in_the_code_bytes_is_caught(bit: int) -> None:
    import base64

    raw = bytearray(base64.b32decode(_CODE_TEXT[6:].replace("-", "") + "==="))
    raw[bit // 8] ^= 1 << (bit % 8)
    text = "TAPES-" + base64.b32encode(bytes(raw)).decode().rstrip("=")
    with pytest.raises(InviteCodeError):
        parse_invite_code(text)
