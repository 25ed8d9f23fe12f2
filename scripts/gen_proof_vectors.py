"""Generate vectors/proofs: session proofs (docs/proofs.md) that must verify and damaged ones that
must not, each failure with the words its error must contain.

The session is the four-turn chain Go tapes itself hashed (vectors/tapes-merkle-v1.json, cases
``chain_root`` … ``chain_child_3``), so a proof checker written elsewhere is held to Go's hashes.
Every random byte comes from a SHA-256 counter stream and every time is pinned, so running this
again rewrites byte-identical files (tests/client/test_proof.py checks that). Usage::

    .venv/bin/python scripts/gen_proof_vectors.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gen_keymgmt_vectors import T0, DetRng  # beside this script: the same pinned stream

from keymgmt import (
    Identity,
    TeamKeys,
    UnverifiedStatement,
    add_member,
    canonical_json,
    chain_to_wire,
    create_share,
    create_team,
    extend_chain,
    generate_identity,
    labels,
    node_id,
    remove_member,
    verify_chain,
)
from keymgmt._encoding import b64e
from tapes_e2e.node import Node, node_from_json
from tapes_e2e.proof import TeamEvidence, build_proof

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "vectors" / "proofs"
TEAM = "proof-vector-team"
GO_CHAIN = ("chain_root", "chain_child_1", "chain_child_2", "chain_child_3")


def go_session() -> list[Node]:
    """The chain Go tapes hashed, as nodes; each hash is checked against Go's."""
    cases = {
        c["name"]: c
        for c in json.loads((ROOT / "vectors" / "tapes-merkle-v1.json").read_text())["cases"]
    }
    nodes = []
    for name in GO_CHAIN:
        case = cases[name]
        node = node_from_json({**case["node"], "hash": case["hash"]})
        if not node.verify():
            raise SystemExit(f"{name}: our hash differs from Go's")
        nodes.append(node)
    return nodes


class World:
    """A pinned team: the owner creates it, adds Bob (who shares the session), later removes
    him; an outsider never joins."""

    def __init__(self) -> None:
        rng = DetRng("tapes-e2e proof vectors v1")
        self.owner, self.bob, self.outsider = (generate_identity(rng=rng) for _ in range(3))
        vault_id_key, epoch_key, next_epoch_key = rng(32), rng(32), rng(32)
        self.statements = [
            create_team(team=TEAM, owner=self.owner, vault_id_key=vault_id_key,
                        epoch_key=epoch_key, now=T0)
        ]  # fmt: skip
        self.state = verify_chain(self.statements)
        self.append(add_member(self.state, signer=self.owner, member=self.bob.public,
                               role="member", now=T0 + 1))  # fmt: skip
        self.keys = TeamKeys(TEAM, vault_id_key, {1: epoch_key})
        self.rng = rng
        self.at_share = self.state
        self.next_epoch_key = next_epoch_key

    def append(self, statement: UnverifiedStatement) -> None:
        self.statements.append(statement)
        self.state = extend_chain(self.state, [statement])

    def share(self, leaf: str, *, by: Identity, expires_at: int | None = None) -> dict[str, str]:
        return create_share(
            state=self.at_share, keys=self.keys, sharer=by,
            leaf_id=self.keys.node_id(1, leaf), title="the flaky test", note="turn 3",
            now=T0 + 10, expires_at=expires_at, nonce=self.rng(24),
        ).to_dict()  # fmt: skip

    def evidence(self, share: dict[str, str], *, key: bytes | None = None) -> TeamEvidence:
        return TeamEvidence(
            chain_to_wire(self.statements), share, key or self.keys.id_key(1) or b""
        )


def edit(proof: bytes, change: Callable[[dict[str, Any]], None]) -> str:
    """A proof with one value changed and written canonically again (so only a check of that
    value can catch it)."""
    doc = json.loads(proof)
    change(doc)
    return (canonical_json(doc) + b"\n").decode()


def build(out: Path) -> None:
    session = go_session()
    world = World()
    leaf = session[-1].hash
    plain = build_proof(session)
    redacted = build_proof(session, redact=2)
    share = world.share(leaf, by=world.bob)
    shared = build_proof(session, team=world.evidence(share))
    expiring = world.share(leaf, by=world.bob, expires_at=T0 + 20)
    expired = build_proof(session, team=world.evidence(expiring))
    # Bob's share stays evidence after his removal: he was a member when he shared.
    world.append(remove_member(world.state, signer=world.owner, member=world.bob.fingerprint,
                               new_epoch_key=world.next_epoch_key, now=T0 + 30))  # fmt: skip
    removed_later = build_proof(session, team=world.evidence(share))
    # Bob, removed, signs a share in the epoch after his removal, naming the leaf under a key
    # of his choosing: his key is known to the chain, but he was no reader in that epoch.
    own_key = world.rng(32)
    late_body = canonical_json({**json.loads(share["body"]), "epoch": 2, "time": T0 + 40,
                                "leaf_id": node_id(own_key, leaf)})  # fmt: skip
    after_removal = build_proof(session, team=world.evidence(_sign_share(late_body, world.bob),
                                                             key=own_key))  # fmt: skip
    # An outsider signs a share of the same leaf ID: not a member, so no evidence.
    body = json.loads(share["body"])
    forged_body = canonical_json({**body, "sharer": world.outsider.fingerprint})
    forged = _sign_share(forged_body, world.outsider)
    cases: list[dict[str, Any]] = [
        {"name": "four-go-turns", "proof": plain.decode(), "expect": "valid"},
        {"name": "first-two-turns-hidden", "proof": redacted.decode(), "expect": "valid"},
        {"name": "shared-by-a-member", "proof": shared.decode(), "expect": "valid"},
        {"name": "share-since-expired", "proof": expired.decode(), "expect": "valid"},
        {"name": "sharer-removed-after-sharing", "proof": removed_later.decode(),
         "expect": "valid"},
        {"name": "turn-text-changed", "expect": "turn 3",
         "proof": edit(plain, lambda d: d["turns"][2]["bucket"]["content"][0].update(
             text="something else"))},
        {"name": "turns-reordered", "expect": "turn 2",
         "proof": edit(plain, lambda d: d["turns"].insert(1, d["turns"].pop(2)))},
        {"name": "turn-dropped", "expect": "turn 2",
         "proof": edit(plain, lambda d: d["turns"].pop(1))},
        {"name": "other-session-named", "expect": "not to the session",
         "proof": edit(plain, lambda d: d.update(session=session[-2].hash))},
        {"name": "bucket-not-in-go-form", "expect": "form Go tapes hashes",
         "proof": edit(plain, lambda d: d["turns"][0]["bucket"].pop("provider"))},
        {"name": "not-canonical", "expect": "canonical",
         "proof": json.dumps(json.loads(plain), indent=2) + "\n"},
        {"name": "unknown-version", "expect": "version 2",
         "proof": edit(plain, lambda d: d.update(version=2))},
        {"name": "share-by-an-outsider", "expect": "share statement",
         "proof": edit(shared, lambda d: d["team"].update(share=forged))},
        {"name": "share-by-a-member-after-removal", "expect": "was not a member who reads "
         "content in epoch 2", "proof": after_removal.decode()},
        {"name": "share-body-edited", "expect": "signature",
         "proof": edit(shared, lambda d: d["team"]["share"].update(
             body=d["team"]["share"]["body"].replace(str(T0 + 10), str(T0 + 11))))},
        {"name": "leaf-key-of-another-session", "expect": "not this session's",
         "proof": edit(shared, lambda d: d["team"].update(
             leaf_id_key="A" * 42 + "E"))},
        {"name": "chain-statement-dropped", "expect": "team chain",
         "proof": edit(removed_later, lambda d: d["team"]["chain"].pop(1))},
    ]  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "about": "Session proofs (docs/proofs.md). Each case's `proof` is the exact file text; "
        "`expect` is `valid` or words the one-line error must contain. The session is Go "
        "tapes' own four-turn chain (vectors/tapes-merkle-v1.json). Regenerate with "
        "scripts/gen_proof_vectors.py.",
        "now": T0 + 100,
        "cases": cases,
    }
    (out / "cases.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    (out / "shared-by-a-member.proof.json").write_bytes(shared)


def _sign_share(body_bytes: bytes, signer: Identity) -> dict[str, str]:
    """A share statement signed as the product signs one, over any body."""
    return {
        "body": body_bytes.decode(),
        "signature": b64e(signer.sign(labels.SHARE_SIGNATURE + body_bytes)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    build(parser.parse_args().out)


if __name__ == "__main__":
    main()
