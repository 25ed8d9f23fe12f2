"""Share statements: signed by a reader, title and note encrypted, expiry honoured."""

from __future__ import annotations

import json

import msgspec
import pytest

from keymgmt import (
    IntegrityError,
    PolicyError,
    ShareError,
    TeamKeys,
    create_share,
    labels,
    open_share_text,
    remove_member,
    verify_share,
)
from keymgmt._encoding import b64e, canonical_json
from keymgmt.share import UnverifiedShare, parse_share

from .conftest import T0, Team

LEAF = "ab" * 32


def share(team: Team, **kw: object) -> UnverifiedShare:
    args: dict[str, object] = {
        "state": team.state,
        "keys": team.keys_for(team.member),
        "sharer": team.member,
        "leaf_id": LEAF,
        "title": "Fix the flaky test",
        "note": "see the last answer",
        "now": T0 + 100,
        "nonce": bytes(24),
    }
    args.update(kw)
    return create_share(**args)  # type: ignore[arg-type]


def test_round_trip(team: Team) -> None:
    wire = json.loads(json.dumps(share(team, expires_at=T0 + 1000).to_dict()))
    assert "Fix the flaky" not in json.dumps(wire)
    verified = verify_share(wire, state=team.state, now=T0 + 200)
    assert (verified.leaf_id, verified.sharer, verified.time) == (
        LEAF,
        team.member.fingerprint,
        T0 + 100,
    )
    title, note = open_share_text(verified, keys=team.keys_for(team.owner))
    assert (title, note) == ("Fix the flaky test", "see the last answer")
    assert parse_share(share(team)).body.leaf_id == LEAF


def test_expired_share_is_refused(team: Team) -> None:
    with pytest.raises(ShareError, match="expired"):
        verify_share(share(team, expires_at=T0 + 150), state=team.state, now=T0 + 150)


def test_forged_or_altered_shares_are_refused(team: Team) -> None:
    """A member cannot forge another member's share; the server cannot alter one."""
    good = share(team)
    # admin re-signs a share claiming the member as sharer
    body_bytes = good.body_bytes
    forged = UnverifiedShare(
        good.body, body_bytes, team.admin.sign(labels.SHARE_SIGNATURE + body_bytes)
    )
    with pytest.raises(ShareError, match="signature"):
        verify_share(forged, state=team.state, now=T0 + 200)
    for changes in ({"leaf_id": "cd" * 32}, {"expires_at": T0 + 10**6}, {"time": T0}):
        altered_body = msgspec.structs.replace(good.body, **changes)
        altered = UnverifiedShare(
            altered_body, canonical_json(msgspec.to_builtins(altered_body)), good.signature
        )
        with pytest.raises(ShareError):
            verify_share(altered, state=team.state, now=T0 + 200)
    other_team = msgspec.structs.replace(good.body, team="team-2")
    with pytest.raises(ShareError):
        verify_share(UnverifiedShare(other_team, good.body_bytes, good.signature), state=team.state)


def test_viewers_outsiders_and_removed_members_cannot_share(team: Team) -> None:
    for who in (team.viewer, team.outsider):
        with pytest.raises(PolicyError):
            share(team, sharer=who)
    good = share(team)
    team.append(
        remove_member(
            team.state,
            signer=team.owner,
            member=team.member.fingerprint,
            new_epoch_key=team.rng(32),
            now=T0 + 150,
        )
    )
    with pytest.raises(ShareError, match="not a member"):
        verify_share(good, state=team.state, now=T0 + 200)


def test_share_input_checks(team: Team) -> None:
    with pytest.raises(PolicyError):
        share(team, leaf_id="not-a-node-id")
    with pytest.raises(PolicyError):
        share(team, keys=TeamKeys(team.team, team.vault_id_key))
    with pytest.raises(PolicyError):
        share(team, note="x" * 20_000)


@pytest.mark.parametrize("bad", [None, {}, {"body": "{}", "signature": ""}])
def test_malformed_shares(team: Team, bad: object) -> None:
    with pytest.raises(ShareError):
        verify_share(bad, state=team.state)


def test_share_text_fails_closed(team: Team) -> None:
    verified = verify_share(share(team), state=team.state, now=T0 + 200)
    with pytest.raises(IntegrityError):
        open_share_text(verified, keys=TeamKeys(team.team, team.vault_id_key, {1: bytes(32)}))
    with pytest.raises(IntegrityError):
        open_share_text(verified, keys=TeamKeys(team.team, team.vault_id_key))
    tampered = msgspec.structs.replace(verified.body, text=verified.body.text[:-2] + "AA")
    from dataclasses import replace

    with pytest.raises(IntegrityError):
        open_share_text(replace(verified, body=tampered), keys=team.keys_for(team.member))


@pytest.mark.parametrize(
    "changes",
    [{"time": -1}, {"time": 2**64}, {"expires_at": -5}, {"epoch": -1}, {"epoch": 2**53}],
)
def test_a_share_its_member_signed_with_an_integer_out_of_range_is_malformed(
    team: Team, changes: dict[str, int]
) -> None:
    """A hostile member signs a body no honest client makes: refused as malformed, never an
    exception from deep inside (the text's associated data packs these as u64)."""
    body = msgspec.structs.replace(share(team).body, **changes)
    body_bytes = msgspec.json.encode(msgspec.to_builtins(body), order="sorted")
    wire = {
        "body": body_bytes.decode(),
        "signature": b64e(team.member.sign(labels.SHARE_SIGNATURE + body_bytes)),
    }
    with pytest.raises(ShareError, match="malformed"):
        verify_share(wire, state=team.state, now=T0 + 200)
