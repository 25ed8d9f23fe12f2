"""keymgmt benchmarks; every figure is printed beside a baseline measured in the same run.

    .venv/bin/python bench/bench_keymgmt.py [--quick]

1. seal+open of a 2 KB node (compression, padding, AD, node IDs, AEAD) against raw
   XChaCha20-Poly1305 encrypt+decrypt of the same bytes; compression, padding and the
   metadata digest are also timed on their own. Goal (issue 4): <= 1.5x.
2. verify_chain over 1,000 statements against 1,000 bare Ed25519 verifications. Goal: < 100 ms.
3. Unlocking a key file at the default Argon2id parameters against a bare Argon2id call.
   Goal: 250 ms <= unlock <= 1 s.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import keymgmt
from keymgmt import (
    DEFAULT_KDF,
    TeamKeys,
    add_member,
    change_policy,
    create_team,
    extend_chain,
    generate_identity,
    metadata_digest,
    open_node,
    project_metadata,
    read_key_file,
    rotate,
    seal_node,
    verify_chain,
    write_key_file,
)
from keymgmt import _primitives as prim
from keymgmt.chain import MetadataPolicy
from keymgmt.envelope import _frame, _unframe

_VOCAB_RNG = random.Random(2026)
VOCAB = [
    "".join(
        _VOCAB_RNG.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(_VOCAB_RNG.randint(2, 9))
    )
    for _ in range(3000)
]


def node_body(i: int, size: int = 2048) -> bytes:
    """A ~2 KB serialized node: JSON around 330 words from a 3,000-word vocabulary.

    zstd shrinks it about 1.7x, close to what real agent transcripts of that size give.
    """
    r = random.Random(i)
    text = " ".join(r.choice(VOCAB) for _ in range(330))
    node = {
        "bucket": {
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4",
            "provider": "anthropic",
            "agent_name": "claude-code",
            "content": [{"type": "text", "text": text}],
        },
        "stop_reason": "end_turn",
        "usage": {"prompt_tokens": 1200 + i, "completion_tokens": 300, "total_tokens": 1500 + i},
        "project": "bench",
        "created_at": "2026-11-26T00:34:14Z",
    }
    return json.dumps(node).encode()[:size]


def best_of(fn: Callable[[], object], *, repeat: int, number: int) -> float:
    """Seconds per call, best of ``repeat`` runs of ``number`` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return min(times)


def bench_envelope(number: int) -> None:
    rng_team = keymgmt.generate_identity()
    vault, epoch_key = prim.random_bytes(32), prim.random_bytes(32)
    genesis = create_team(team="bench", owner=rng_team, vault_id_key=vault, epoch_key=epoch_key)
    state = verify_chain([genesis])
    keys = TeamKeys("bench", vault, {1: epoch_key})
    body = node_body(1)
    tapes_hash = prim.sha256(body).hex()
    metadata = project_metadata(
        "coarse",
        {
            "model": "claude-sonnet-4",
            "provider": "anthropic",
            "total_tokens": 1500,
            "created_at": "2026-11-26T00:34:14Z",
        },
    )

    def hasher(_: bytes) -> tuple[str, str | None]:
        return tapes_hash, None

    def seal() -> keymgmt.Envelope:
        return seal_node(
            state=state,
            keys=keys,
            tapes_hash=tapes_hash,
            parent_id=None,
            body=body,
            metadata=metadata,
            author=rng_team.fingerprint,
        )

    def seal_open() -> None:
        open_node(seal(), state=state, keys=keys, hasher=hasher)

    wire = seal().to_dict()

    def open_wire() -> None:
        open_node(wire, state=state, keys=keys, hasher=hasher)

    nonce = prim.random_bytes(24)

    def raw_aead() -> None:
        ct = prim.aead_encrypt(epoch_key, nonce, body, b"")
        prim.aead_decrypt(epoch_key, nonce, ct, b"")

    def compression() -> None:
        prim.decompress(prim.compress(body), max_size=1 << 20)

    def frame() -> None:
        _unframe(_frame(body))

    def digest() -> None:
        metadata_digest(metadata)
        metadata_digest(metadata)

    def ids() -> None:
        keys.node_id(1, tapes_hash)
        keys.node_id(1, tapes_hash)

    kw = {"repeat": 5, "number": number}
    t_raw = best_of(raw_aead, **kw)
    t_full = best_of(seal_open, **kw)
    t_seal = best_of(seal, **kw)
    t_open = best_of(open_wire, **kw)
    t_zstd = best_of(compression, **kw)
    t_frame = best_of(frame, **kw)
    t_digest = best_of(digest, **kw)
    t_ids = best_of(ids, **kw)
    padded = len(_frame(body))
    compressed = len(prim.compress(body))
    print(f"[envelope] 2 KB node ({len(body)} B; zstd -> {compressed} B; padded to {padded} B)")
    print(f"  raw XChaCha20-Poly1305 enc+dec (baseline) {t_raw * 1e6:8.1f} us")
    print(
        f"  seal_node + open_node                     {t_full * 1e6:8.1f} us   "
        f"ratio {t_full / t_raw:5.2f}x  (goal <= 1.5x)"
    )
    print(f"    seal_node alone                         {t_seal * 1e6:8.1f} us")
    print(f"    open_node alone, from the JSON dict     {t_open * 1e6:8.1f} us")
    print(f"    of which zstd compress+decompress       {t_zstd * 1e6:8.1f} us")
    print(f"    of which frame+pad / unpad (incl. zstd) {t_frame * 1e6:8.1f} us")
    print(f"    of which metadata digest x2 (RFC 8785)  {t_digest * 1e6:8.1f} us")
    print(f"    of which node ID HMAC x2                {t_ids * 1e6:8.1f} us")
    print(
        f"  padding overhead on the compressed body: {padded - compressed - 5} B "
        f"({(padded - compressed - 5) / len(body):.1%} of the plaintext)"
    )


def bench_chain(n: int) -> None:
    owner = generate_identity()
    members = [generate_identity() for _ in range(20)]
    epoch_key, vault = prim.random_bytes(32), prim.random_bytes(32)
    statements = [
        create_team(team="bench", owner=owner, vault_id_key=vault, epoch_key=epoch_key, now=1)
    ]
    state = verify_chain(statements)
    for i in range(1, n):
        if i <= len(members):
            st = add_member(
                state, signer=owner, member=members[i - 1].public, role="member", now=1 + i
            )
        elif i % 2:
            st = rotate(state, signer=owner, new_epoch_key=prim.random_bytes(32), now=1 + i)
        else:
            policy: MetadataPolicy = "full" if i % 4 < 2 else "coarse"
            st = change_policy(state, signer=owner, metadata_policy=policy, now=1 + i)
        statements.append(st)
        state = extend_chain(state, [st])
    wire = [s.to_dict() for s in statements]
    messages = [(s.body_bytes, s.signature) for s in statements]

    def verify_all() -> None:
        verify_chain(wire)

    def raw_verify() -> None:
        for body, sig in messages:
            prim.ed25519_verify(
                owner.public.ed25519, b"tapes-e2e/v1/chain-statement-signature" + body, sig
            )

    t_chain = best_of(verify_all, repeat=5, number=1)
    t_raw = best_of(raw_verify, repeat=5, number=1)
    print(f"[chain] verify_chain over {n} statements (20 members)")
    print(f"  {n} bare Ed25519 verifications (baseline) {t_raw * 1e3:8.1f} ms")
    print(
        f"  verify_chain                              {t_chain * 1e3:8.1f} ms   "
        f"ratio {t_chain / t_raw:5.2f}x  (goal < 100 ms)"
    )


def bench_unlock(repeat: int) -> None:
    ident = generate_identity()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "identity.json"
        write_key_file(path, ident, "bench passphrase")
        unlocks = []
        for _ in range(repeat):
            start = time.perf_counter()
            read_key_file(path, "bench passphrase")
            unlocks.append(time.perf_counter() - start)
    raws = []
    for _ in range(repeat):
        start = time.perf_counter()
        prim.argon2id(
            b"bench passphrase",
            bytes(16),
            time_cost=DEFAULT_KDF.time_cost,
            memory_kib=DEFAULT_KDF.memory_kib,
            lanes=DEFAULT_KDF.lanes,
        )
        raws.append(time.perf_counter() - start)
    p = DEFAULT_KDF
    print(f"[unlock] Argon2id t={p.time_cost} m={p.memory_kib // 1024} MiB p={p.lanes}")
    print(f"  bare argon2id (baseline)      median {statistics.median(raws) * 1e3:7.0f} ms")
    print(
        f"  read_key_file (unlock)        median {statistics.median(unlocks) * 1e3:7.0f} ms   "
        f"(min {min(unlocks) * 1e3:.0f}, max {max(unlocks) * 1e3:.0f}; goal 250-1000 ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="keymgmt benchmarks")
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke test)")
    args = parser.parse_args()
    bench_envelope(200 if args.quick else 2000)
    bench_chain(1000)
    bench_unlock(2 if args.quick else 5)


if __name__ == "__main__":
    main()
