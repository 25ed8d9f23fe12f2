"""vectors/keymgmt: every case gives its expected result, and the generator is reproducible."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import keymgmt
from keymgmt import (
    ChainHead,
    Identity,
    Invite,
    KdfParams,
    TeamKeys,
    open_keyring,
    open_node,
    parse_invite_code,
    read_key_file,
    safety_number,
    verify_chain,
    verify_join_request,
    verify_joined,
)
from keymgmt._encoding import b64d

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "vectors" / "keymgmt"
FILES = ("envelope.json", "keyring.json", "chain.json", "invite.json", "keyfile.json")
FROZEN = ("envelope-v1.json",)  # written by an earlier sealer; must keep opening


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text())
    return data


def cases(name: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    data = load(name)
    return [(data, case) for case in data["cases"]]


def ids(name: str) -> list[str]:
    return [case["name"] for case in load(name)["cases"]]


def expect(case: dict[str, Any], action: Any) -> Any:
    if case["expect"] == "ok":
        return action()
    error = getattr(keymgmt, case["expect"])
    with pytest.raises(error):
        action()
    return None


def person(data: dict[str, Any], name: str) -> Identity:
    return Identity.from_secret(bytes.fromhex(data["identities"][name]["secret"]))


def test_every_file_has_positive_and_negative_named_cases() -> None:
    for name in FILES + FROZEN:
        all_cases = load(name)["cases"]
        assert {c["expect"] == "ok" for c in all_cases} == {True, False}, name
        assert all(c["name"] for c in all_cases)
        assert len({c["name"] for c in all_cases}) == len(all_cases)


@pytest.mark.parametrize(
    ("data", "case"),
    cases("envelope.json") + cases("envelope-v1.json"),
    ids=[*ids("envelope.json"), *(f"v1: {name}" for name in ids("envelope-v1.json"))],
)
def test_envelope_vectors(data: dict[str, Any], case: dict[str, Any]) -> None:
    state = verify_chain(data["chain"], team=data["team"])
    keys = TeamKeys(
        data["team"],
        bytes.fromhex(data["keys"]["vault_id_key"]),
        {int(e): bytes.fromhex(k) for e, k in data["keys"]["epoch_keys"].items()},
    )
    table = {b64d(n["body"]): (n["tapes_hash"], n["parent_tapes_hash"]) for n in data["nodes"]}

    def hasher(body: bytes) -> tuple[str, str | None]:
        return table[body]

    opened = expect(
        case, lambda: open_node(case["envelope"], state=state, keys=keys, hasher=hasher)
    )
    if opened is not None and opened.body is not None:
        assert opened.tapes_hash == table[opened.body][0]


@pytest.mark.parametrize(("data", "case"), cases("keyring.json"), ids=ids("keyring.json"))
def test_keyring_vectors(data: dict[str, Any], case: dict[str, Any]) -> None:
    state = verify_chain(data["chain"])
    who = person(data, case["identity"])
    expect(case, lambda: open_keyring(case["keyring"], state=state, identity=who))


@pytest.mark.parametrize(("data", "case"), cases("chain.json"), ids=ids("chain.json"))
def test_chain_vectors(data: dict[str, Any], case: dict[str, Any]) -> None:
    head = case.get("last_verified_head")
    last = ChainHead.from_dict(head) if head else None
    state = expect(case, lambda: verify_chain(case["statements"], last_verified_head=last))
    if state is not None:
        result = case["result"]
        assert state.head.to_dict() == result["head"]
        assert state.epoch == result["epoch"]
        assert {fp: m.role for fp, m in state.members.items()} == result["members"]
        assert safety_number(state) == result["safety_number"]


@pytest.mark.parametrize(("data", "case"), cases("invite.json"), ids=ids("invite.json"))
def test_invite_vectors(data: dict[str, Any], case: dict[str, Any]) -> None:
    state = verify_chain([*data["chain"], *case.get("extra_statements", [])])
    if case["kind"] == "code":
        code = expect(case, lambda: parse_invite_code(case["code"]))
        if code is not None:
            result = case["result"]
            assert (code.invite_id, code.inviter, code.expires_at, code.secret.hex()) == (
                result["invite_id"],
                result["inviter"],
                result["expires_at"],
                result["secret"],
            )
        return
    code = parse_invite_code(case["code"])
    if case["kind"] == "join":
        invite = Invite(data["invite"]["team"], data["invite"]["role"], code)
        verified = expect(
            case,
            lambda: verify_join_request(
                case["request"], invite=invite, state=state, now=case["now"]
            ),
        )
        if verified is not None:
            assert verified.member.fingerprint == case["result"]["member"]
        return
    me = Identity.from_secret(bytes.fromhex(case["identity"]["secret"]))
    role = expect(case, lambda: verify_joined(state, code=code, identity=me))
    if role is not None:
        assert role == case["result"]["role"]


@pytest.mark.parametrize(("data", "case"), cases("keyfile.json"), ids=ids("keyfile.json"))
def test_keyfile_vectors(data: dict[str, Any], case: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    path.write_text(json.dumps(case["file"]))
    floor = KdfParams(**case["floor"]) if case["floor"] else keymgmt.KDF_FLOOR
    ident = expect(case, lambda: read_key_file(path, case["passphrase"], floor=floor))
    if ident is not None:
        assert ident.fingerprint == case["result"]["fingerprint"]


def test_generator_regenerates_identical_files(tmp_path: Path) -> None:
    script = ROOT / "scripts" / "gen_keymgmt_vectors.py"
    subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path)], check=True, capture_output=True
    )
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (VECTORS / name).read_bytes(), name
