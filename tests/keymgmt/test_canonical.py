"""Signed bodies must be their own RFC 8785 form, byte for byte.

Each case re-writes a valid body in a form that parses to the same value (pretty-printed, keys
reordered, a character escaped, a key given twice) and signs *those* bytes with the right key
and label, so that only the canonical-form check can refuse it: a test that failed on the
signature would prove nothing. The canonical body, re-signed the same way, is the control.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keymgmt import (
    ChainFormatError,
    IntegrityError,
    ShareError,
    create_share,
    labels,
    open_keyring,
    seal_keyring,
    verify_chain,
    verify_share,
)
from keymgmt._encoding import b64e, canonical_json
from keymgmt.identity import Identity
from tests.keymgmt.conftest import T0, Team


def pretty(body: str) -> str:
    return json.dumps(json.loads(body), indent=2)


def reordered(body: str) -> str:
    return json.dumps(dict(reversed(json.loads(body).items())), separators=(",", ":"))


def escaped(body: str) -> str:
    return body.replace('"version"', '"\\u0076ersion"', 1)


def duplicated(body: str) -> str:
    """The first key given twice (with a value its type accepts: the same one)."""
    key, value = next(iter(json.loads(body).items()))
    return "{" + json.dumps(key) + ":" + json.dumps(value) + "," + body[1:]


REWRITES: dict[str, Callable[[str], str]] = {
    "pretty-printed": pretty,
    "keys reordered": reordered,
    "a character escaped": escaped,
    "a key given twice": duplicated,
    "unchanged (control)": lambda body: body,
}


def resigned(wire: dict[str, str], signer: Identity, label: bytes, body: str) -> dict[str, str]:
    return {**wire, "body": body, "signature": b64e(signer.sign(label + body.encode()))}


@pytest.mark.parametrize("rewrite", sorted(REWRITES))
def test_chain_statements(team: Team, rewrite: str) -> None:
    wires = [s.to_dict() for s in team.statements]
    last = wires[-1]
    wires[-1] = resigned(last, team.owner, labels.CHAIN_SIGNATURE, REWRITES[rewrite](last["body"]))
    if rewrite.endswith("(control)"):
        assert verify_chain(wires).head == team.state.head
        return
    with pytest.raises(ChainFormatError, match="canonical"):
        verify_chain(wires)


def _keyring(team: Team) -> dict[str, str]:
    return seal_keyring(
        team.state, sealer=team.owner, epoch=team.state.epoch, epoch_key=team.epoch_key,
        vault_id_key=team.vault_id_key, rng=team.rng,
    ).to_dict()  # fmt: skip


@pytest.mark.parametrize("rewrite", sorted(REWRITES))
def test_keyrings(team: Team, rewrite: str) -> None:
    wire = _keyring(team)
    forged = resigned(wire, team.owner, labels.KEYRING_SIGNATURE, REWRITES[rewrite](wire["body"]))
    if rewrite.endswith("(control)"):
        assert open_keyring(forged, state=team.state, identity=team.member).epoch_key
        return
    with pytest.raises(IntegrityError):
        open_keyring(forged, state=team.state, identity=team.member)


@pytest.mark.parametrize("rewrite", sorted(REWRITES))
def test_shares(team: Team, rewrite: str) -> None:
    keys = team.keys_for(team.member)
    wire = create_share(
        state=team.state, keys=keys, sharer=team.member, leaf_id="ab" * 32, title="t",
        now=T0 + 100,
    ).to_dict()  # fmt: skip
    forged = resigned(wire, team.member, labels.SHARE_SIGNATURE, REWRITES[rewrite](wire["body"]))
    if rewrite.endswith("(control)"):
        assert verify_share(forged, state=team.state, now=T0 + 101).leaf_id == "ab" * 32
        return
    with pytest.raises(ShareError):
        verify_share(forged, state=team.state, now=T0 + 101)


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(at=st.integers(min_value=1), space=st.sampled_from([" ", "\n", "\t", "\r"]))
def test_whitespace_between_tokens_is_refused(team: Team, at: int, space: str) -> None:
    last: dict[str, Any] = team.statements[-1].to_dict()
    body = last["body"]
    # After a structural character (none occurs inside this body's strings): the value is the same.
    places = [i + 1 for i, c in enumerate(body) if c in "{,:" and i + 1 < len(body)]
    index = places[at % len(places)]
    wires = [s.to_dict() for s in team.statements]
    wires[-1] = resigned(
        last, team.owner, labels.CHAIN_SIGNATURE, body[:index] + space + body[index:]
    )
    with pytest.raises(ChainFormatError):
        verify_chain(wires)


def with_value(body: str, name: str, value: int) -> str:
    """The body, still canonical, with ``name`` set to ``value``."""
    return canonical_json({**json.loads(body), name: value}).decode()


@pytest.mark.parametrize("name", ["seqno", "time", "epoch"])
def test_a_statement_with_a_negative_integer_is_malformed(team: Team, name: str) -> None:
    """Signed by the right key and canonical, so only the field's range can refuse it (each is
    packed as a u64 somewhere, or compared with others that are)."""
    wires = [s.to_dict() for s in team.statements]
    last = wires[-1]
    wires[-1] = resigned(
        last, team.owner, labels.CHAIN_SIGNATURE, with_value(last["body"], name, -1)
    )
    with pytest.raises(ChainFormatError, match="malformed"):
        verify_chain(wires)


@pytest.mark.parametrize("name", ["epoch", "at_seqno"])
def test_a_keyring_with_a_negative_integer_is_refused(team: Team, name: str) -> None:
    wire = _keyring(team)
    forged = resigned(
        wire, team.owner, labels.KEYRING_SIGNATURE, with_value(wire["body"], name, -1)
    )
    with pytest.raises(IntegrityError):
        open_keyring(forged, state=team.state, identity=team.member)
