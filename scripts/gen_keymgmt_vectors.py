"""Generate vectors/keymgmt/*.json: positive and negative cases for envelopes, keyrings, the
team chain, invites and key files.

Every random byte comes from a SHA-256 counter-mode stream seeded by a fixed string and every
time is pinned, so running this again rewrites byte-identical files (tests/keymgmt/test_vectors.py
checks that). Usage::

    .venv/bin/python scripts/gen_keymgmt_vectors.py [--out DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import rfc8785

from keymgmt import (
    Identity,
    TeamKeys,
    VerifiedTeamState,
    accept_join,
    add_member,
    create_invite,
    create_team,
    extend_chain,
    generate_identity,
    labels,
    make_join_request,
    node_id,
    project_metadata,
    remove_member,
    rotate,
    safety_number,
    seal_keyring,
    seal_node,
    verify_chain,
    verify_join_request,
    write_key_file,
)
from keymgmt._encoding import b64d, b64e, canonical_json
from keymgmt.chain import Role, UnverifiedStatement, _sign
from keymgmt.keystore import TEST_KDF

OUT = Path(__file__).resolve().parents[1] / "vectors" / "keymgmt"
T0 = 1_780_000_000
TEAM = "vector-team"
FIELDS = {
    "model": "claude-sonnet-4",
    "provider": "anthropic",
    "agent_name": "claude-code",
    "role": "assistant",
    "stop_reason": "end_turn",
    "prompt_tokens": 1200,
    "completion_tokens": 300,
    "total_tokens": 1500,
    "project": "vector-project",
    "created_at": "2026-11-26T00:34:14Z",
    "total_duration_ns": 1_500_000_000,
}


class DetRng:
    """SHA-256(seed || counter) stream: the only source of randomness in the vectors."""

    def __init__(self, seed: str) -> None:
        self.seed = seed.encode()
        self.counter = 0

    def __call__(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(self.seed + self.counter.to_bytes(8, "big")).digest()
            self.counter += 1
        return out[:n]


def node_body(content: str, parent: str | None) -> bytes:
    """The stand-in node serialization used by the vectors (the hasher is given per case)."""
    return rfc8785.dumps({"content": content, "parent": parent or ""})


def node_hash(content: str, parent: str | None) -> str:
    return hashlib.sha256(node_body(content, parent)).hexdigest()


def identity_dict(ident: Identity) -> dict[str, str]:
    return {"secret": ident.export_secret().hex(), "fingerprint": ident.fingerprint}


def resign(st: UnverifiedStatement, by: Identity, **changes: Any) -> UnverifiedStatement:
    return _sign(msgspec.structs.replace(st.body, **changes), by)


class World:
    """A pinned team: owner, admin, member, viewer, outsider; epoch 1 keys."""

    def __init__(self) -> None:
        self.rng = DetRng("tapes-e2e keymgmt vectors v1")
        names = ("owner", "admin", "member", "viewer", "outsider")
        self.people = {n: generate_identity(rng=self.rng) for n in names}
        self.vault_id_key, self.epoch_key = self.rng(32), self.rng(32)
        owner = self.people["owner"]
        self.statements = [
            create_team(
                team=TEAM,
                owner=owner,
                vault_id_key=self.vault_id_key,
                epoch_key=self.epoch_key,
                now=T0,
            )
        ]
        self.state = verify_chain(self.statements)
        roles: tuple[Role, ...] = ("admin", "member", "viewer")
        for i, role in enumerate(roles):
            self.append(
                add_member(
                    self.state,
                    signer=owner,
                    member=self.people[role].public,
                    role=role,
                    now=T0 + 1 + i,
                )
            )

    def append(self, st: UnverifiedStatement) -> None:
        self.statements.append(st)
        self.state = extend_chain(self.state, [st])

    def header(self) -> dict[str, Any]:
        return {
            "team": TEAM,
            "chain": [s.to_dict() for s in self.statements],
            "identities": {n: identity_dict(i) for n, i in self.people.items()},
        }


def envelope_vectors(w: World) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = []
    cases: list[dict[str, Any]] = []

    keys = TeamKeys(TEAM, w.vault_id_key, {1: w.epoch_key})

    def seal(name: str, content: str, parent: str | None, **kw: Any) -> dict[str, Any]:
        body = node_body(content, parent)
        nodes.append(
            {
                "body": b64e(body),
                "tapes_hash": node_hash(content, parent),
                "parent_tapes_hash": parent,
            }
        )
        args: dict[str, Any] = {
            "state": w.state,
            "keys": keys,
            "tapes_hash": node_hash(content, parent),
            "parent_id": None if parent is None else keys.node_id(1, parent),
            "body": body,
            "metadata": project_metadata("coarse", FIELDS),
            "author": w.people["member"].fingerprint,
            "nonce": w.rng(24),
        }
        args.update(kw)
        env = seal_node(**args).to_dict()
        cases.append({"name": name, "expect": "ok", "envelope": env})
        return env

    root = seal("root node, coarse metadata", "hello", None)
    child = seal(
        "child node, full metadata",
        "world " * 100,
        node_hash("hello", None),
        metadata=project_metadata("full", FIELDS),
    )
    seal("no clear metadata (policy none)", "quiet", None, metadata={})
    seal(
        "metadata only (content policy omit), signed by the author",
        "omitted",
        None,
        body=None,
        signer=w.people["member"],
        nonce=None,
    )
    meta = cases[-1]["envelope"]
    other = dict(root)
    v1_root = node_id(w.vault_id_key, node_hash("hello", None))
    v1_parent = v1_root

    def neg(name: str, env: dict[str, Any]) -> None:
        cases.append({"name": name, "expect": "IntegrityError", "envelope": env})

    flipped = bytearray(b64d(root["ciphertext"]))
    flipped[5] ^= 1
    neg("ciphertext bit flip", dict(root, ciphertext=b64e(bytes(flipped))))
    neg("nonce changed", dict(root, nonce=child["nonce"]))
    neg("ciphertext moved to another node ID", dict(root, node_id=child["node_id"]))
    neg("parent link removed", dict(child, parent_id=None))
    neg("metadata altered", dict(root, metadata={**root["metadata"], "total_tokens": 1}))
    neg("author changed", dict(root, author=w.people["admin"].fingerprint))
    neg("author is a viewer", dict(root, author=w.people["viewer"].fingerprint))
    neg("other team", dict(root, team="other-team"))
    neg("wrong epoch", dict(root, epoch=2))
    neg("downgraded to version 1", dict(root, version=1, at_seqno=None, at_hash=None))
    neg("chain position moved", dict(root, at_seqno=root["at_seqno"] - 1))
    neg("chain position beyond the chain", dict(root, at_seqno=root["at_seqno"] + 1))
    neg("chain position on another chain", dict(root, at_hash="0" * 64))
    neg("chain position removed", dict(root, at_seqno=None, at_hash=None))
    neg("parent named under the vault id key", dict(child, parent_id=v1_parent))
    neg("node named under the vault id key", dict(root, node_id=v1_root))
    neg("record type confusion", dict(root, record_type="share"))
    neg("padded size altered", dict(root, padded_size=root["padded_size"] + 16))
    neg("ciphertext truncated", dict(root, ciphertext=root["ciphertext"][:-8]))
    neg(
        "ciphertext stripped to look metadata-only",
        dict(other, ciphertext=None, nonce=None, padded_size=0),
    )
    neg("metadata-only record, metadata altered", dict(meta, metadata={"model": "x"}))
    neg("metadata-only record, signature removed", dict(meta, signature=None))
    neg("malformed base64", dict(root, nonce="!!!"))
    return {
        "description": "Node envelopes, version 2 (docs/crypto.md). Open with the team keys "
        "below and a hasher that maps each body in 'nodes' to its (tapes_hash, "
        "parent_tapes_hash). envelope-v1.json holds version-1 envelopes (sealed before "
        "2026-12, frozen: nothing seals them any more), which must keep opening.",
        **w.header(),
        "keys": {"vault_id_key": w.vault_id_key.hex(), "epoch_keys": {"1": w.epoch_key.hex()}},
        "open_as": "member",
        "nodes": nodes,
        "cases": cases,
    }


def keyring_vectors(w: World) -> dict[str, Any]:
    ring = seal_keyring(
        w.state,
        sealer=w.people["owner"],
        epoch=1,
        epoch_key=w.epoch_key,
        vault_id_key=w.vault_id_key,
        rng=w.rng,
    )
    wire = ring.to_dict()
    cases: list[dict[str, Any]] = [
        {"name": f"{who} opens", "expect": "ok", "identity": who, "keyring": wire}
        for who in ("owner", "admin", "member")
    ]
    cases += [
        {
            "name": f"{who} is not a recipient",
            "expect": "IntegrityError",
            "identity": who,
            "keyring": wire,
        }
        for who in ("viewer", "outsider")
    ]

    def resigned(**changes: Any) -> dict[str, str]:
        body = msgspec.structs.replace(ring.body, **changes)
        body_bytes = canonical_json(msgspec.to_builtins(body))
        sig = w.people["owner"].sign(labels.KEYRING_SIGNATURE + body_bytes)
        return {"body": body_bytes.decode(), "signature": b64e(sig)}

    viewer = w.people["viewer"].fingerprint
    for name, bad in (
        ("extra recipient (escrow)", resigned(recipients={**ring.body.recipients, viewer: "AAAA"})),
        ("sealed at a position the chain does not have", resigned(at_seqno=40)),
        ("epoch that had not started", resigned(epoch=2)),
        ("signature by the server", dict(wire, signature=b64e(bytes(64)))),
    ):
        cases.append(
            {"name": name, "expect": "IntegrityError", "identity": "member", "keyring": bad}
        )
    return {"description": "Keyrings sealed to the chain's readers.", **w.header(), "cases": cases}


def chain_vectors(w: World) -> dict[str, Any]:
    owner, admin = w.people["owner"], w.people["admin"]
    base = list(w.statements)
    good_head = w.state.head
    st_remove = remove_member(
        w.state,
        signer=admin,
        member=w.people["member"].fingerprint,
        new_epoch_key=w.rng(32),
        now=T0 + 20,
    )
    longer = [*base, st_remove]
    state2 = verify_chain(longer)
    st_rotate = rotate(state2, signer=owner, new_epoch_key=w.rng(32), now=T0 + 21)
    longest = [*longer, st_rotate]
    final = verify_chain(longest)

    def wire(sts: list[UnverifiedStatement]) -> list[dict[str, str]]:
        return [s.to_dict() for s in sts]

    def expected(state: VerifiedTeamState) -> dict[str, Any]:
        return {
            "head": state.head.to_dict(),
            "epoch": state.epoch,
            "members": {fp: m.role for fp, m in sorted(state.members.items())},
            "safety_number": safety_number(state),
        }

    fork_add = add_member(
        w.state, signer=owner, member=w.people["outsider"].public, role="member", now=T0 + 20
    )
    cases = [
        {
            "name": "create and three adds",
            "expect": "ok",
            "statements": wire(base),
            "result": expected(w.state),
        },
        {
            "name": "removal with its rotation, then a rotation",
            "expect": "ok",
            "statements": wire(longest),
            "last_verified_head": good_head.to_dict(),
            "result": expected(final),
        },
        {
            "name": "truncated below the last verified head",
            "expect": "ChainRollbackError",
            "statements": wire(base),
            "last_verified_head": final.head.to_dict(),
        },
        {
            "name": "fork at the last verified head",
            "expect": "ChainForkError",
            "statements": wire([*base, fork_add]),
            "last_verified_head": state2.head.to_dict(),
        },
        {
            "name": "reordered",
            "expect": "ChainLinkError",
            "statements": wire([base[0], base[2], base[1], base[3]]),
        },
        {"name": "gap", "expect": "ChainLinkError", "statements": wire([base[0], *base[2:]])},
        {
            "name": "replayed statement",
            "expect": "ChainLinkError",
            "statements": wire([*base, base[-1]]),
        },
        {
            "name": "bad signature",
            "expect": "ChainSignatureError",
            "statements": [*wire(base[:-1]), dict(base[-1].to_dict(), signature=b64e(bytes(64)))],
        },
        {
            "name": "member adds a member",
            "expect": "ChainPermissionError",
            "statements": wire(
                [*base, resign(fork_add, w.people["member"], signer=w.people["member"].fingerprint)]
            ),
        },
        {
            "name": "key substitution (keys do not match fingerprint)",
            "expect": "ChainKeyError",
            "statements": wire(
                [
                    *base,
                    resign(
                        fork_add,
                        owner,
                        member=w.people["viewer"].fingerprint,
                        seqno=4,
                        prev=base[-1].hash,
                    ),
                ]
            ),
        },
        {
            "name": "removal without its rotation",
            "expect": "ChainFormatError",
            "statements": wire(
                [*base, resign(st_remove, admin, epoch=1, epoch_key_commitment=None)]
            ),
        },
    ]
    return {
        "description": "Signed team chains; 'expect' names the ChainError subclass.",
        **w.header(),
        "cases": cases,
    }


def invite_vectors(w: World) -> dict[str, Any]:
    admin = w.people["admin"]
    inv = create_invite(team=TEAM, inviter=admin, now=T0 + 30, rng=w.rng)
    joiner = generate_identity(rng=w.rng)
    request = make_join_request(inv.code, identity=joiner, now=T0 + 40)
    verified = verify_join_request(request, invite=inv, state=w.state, now=T0 + 50)
    accepted = accept_join(w.state, request=verified, signer=admin, now=T0 + 60)
    swapped = request.to_dict()
    swapped["body"] = dict(
        swapped["body"],
        member_keys={  # type: ignore[call-overload]
            "x25519": w.people["outsider"].public.x25519.hex(),
            "ed25519": w.people["outsider"].public.ed25519.hex(),
        },
    )
    code = inv.code.text
    typo = code[:10] + ("A" if code[10] != "A" else "B") + code[11:]
    cases = [
        {
            "name": "code parses (case and dashes are free)",
            "expect": "ok",
            "kind": "code",
            "code": code.lower().replace("-", " "),
            "result": {
                "invite_id": inv.code.invite_id,
                "inviter": admin.fingerprint,
                "expires_at": inv.code.expires_at,
                "secret": inv.code.secret.hex(),
            },
        },
        {"name": "one-character typo", "expect": "InviteCodeError", "kind": "code", "code": typo},
        {"name": "truncated code", "expect": "InviteCodeError", "kind": "code", "code": code[:-5]},
        {
            "name": "join request verifies",
            "expect": "ok",
            "kind": "join",
            "code": code,
            "request": request.to_dict(),
            "now": T0 + 50,
            "result": {"member": joiner.fingerprint},
        },
        {
            "name": "join request with swapped keys",
            "expect": "InviteVerificationError",
            "kind": "join",
            "code": code,
            "request": swapped,
            "now": T0 + 50,
        },
        {
            "name": "join request after expiry",
            "expect": "InviteExpiredError",
            "kind": "join",
            "code": code,
            "request": request.to_dict(),
            "now": inv.code.expires_at + 1,
        },
        {
            "name": "invite replayed after use",
            "expect": "InviteUsedError",
            "kind": "join",
            "code": code,
            "request": request.to_dict(),
            "now": T0 + 70,
            "extra_statements": [accepted.to_dict()],
        },
        {
            "name": "invitee verifies the add statement",
            "expect": "ok",
            "kind": "joined",
            "code": code,
            "identity": identity_dict(joiner),
            "extra_statements": [accepted.to_dict()],
            "result": {"role": "member"},
        },
        {
            "name": "add statement signed by someone other than the inviter",
            "expect": "InviteVerificationError",
            "kind": "joined",
            "code": code,
            "identity": identity_dict(joiner),
            "extra_statements": [
                accept_join(
                    w.state, request=verified, signer=w.people["owner"], now=T0 + 60
                ).to_dict()
            ],
        },
    ]
    return {
        "description": "Invite codes, join requests (role 'member', team as below) and the "
        "invitee's check of the chain. The inviter of every case is 'admin'.",
        **w.header(),
        "invite": {"team": TEAM, "role": "member"},
        "cases": cases,
    }


def keyfile_vectors(w: World) -> dict[str, Any]:
    ident = w.people["member"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.json"
        write_key_file(path, ident, "vector passphrase", params=TEST_KDF, floor=TEST_KDF, rng=w.rng)
        good = json.loads(path.read_text())
    floor = {"time_cost": 1, "memory_kib": 8, "lanes": 1}
    tampered_public = dict(good, public=w.people["admin"].public.to_dict())
    cases = [
        {
            "name": "unlocks with the test floor",
            "expect": "ok",
            "file": good,
            "passphrase": "vector passphrase",
            "floor": floor,
            "result": {"fingerprint": ident.fingerprint},
        },
        {
            "name": "wrong passphrase",
            "expect": "UnlockError",
            "file": good,
            "passphrase": "wrong",
            "floor": floor,
        },
        {
            "name": "parameters below the default floor",
            "expect": "KdfParamsError",
            "file": good,
            "passphrase": "vector passphrase",
            "floor": None,
        },
        {
            "name": "public keys swapped",
            "expect": "UnlockError",
            "file": tampered_public,
            "passphrase": "vector passphrase",
            "floor": floor,
        },
        {
            "name": "time cost raised in the file",
            "expect": "UnlockError",
            "file": dict(good, kdf=dict(good["kdf"], time_cost=2)),
            "passphrase": "vector passphrase",
            "floor": floor,
        },
    ]
    return {"description": "Key files; 'floor' null means the default KDF floor.", "cases": cases}


GENERATORS: dict[str, Callable[[World], dict[str, Any]]] = {
    "envelope.json": envelope_vectors,
    "keyring.json": keyring_vectors,
    "chain.json": chain_vectors,
    "invite.json": invite_vectors,
    "keyfile.json": keyfile_vectors,
}


def generate(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, gen in GENERATORS.items():
        path = out / name
        data = gen(World())
        path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    for path in generate(args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
