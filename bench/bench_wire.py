"""The two wire forms of a pull page, side by side: bytes, the client's decoding, the server's
conversions (docs/sync.md, "The binary wire").

One page of 1,000 sealed envelopes of 2 KB, built in-process with the product's own types; each
figure is the median of 15 runs, JSON printed beside MessagePack (each the other's baseline).

    .venv/bin/python bench/bench_wire.py
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import keymgmt
from bench.bench_server import SealingVault
from server.domain.nodes.stored import as_json, as_packed, store_form
from tapes_e2e.protocol import (
    EnvelopeWire,
    NodeOut,
    PackedNodeOut,
    PackedPullPage,
    PullPage,
    PushRequest,
)

PAGE = 1000
RUNS = 15
STAMP = "2026-12-04T11:00:00.123456+00:00"


def median_ms(work: Callable[[], object]) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    author = keymgmt.generate_identity()
    dicts = SealingVault("v_bench", author, seed=1).sessions(PAGE)
    wires = [msgspec.convert(d, EnvelopeWire) for d in dicts]
    records = [keymgmt.Envelope.from_wire(w) for w in wires]
    json_page = msgspec.json.encode(
        PullPage("v_bench", [NodeOut(i + 1, STAMP, w) for i, w in enumerate(wires)], PAGE, True)
    )
    packed_page = msgspec.msgpack.encode(
        PackedPullPage(
            "v_bench",
            [PackedNodeOut(i + 1, STAMP, r.to_packed()) for i, r in enumerate(records)],
            PAGE,
            True,
        )
    )
    json_decoder = msgspec.json.Decoder(PullPage)
    packed_decoder = msgspec.msgpack.Decoder(PackedPullPage)

    def client_json() -> object:
        page = json_decoder.decode(json_page)
        return [keymgmt.Envelope.from_wire(i.envelope) for i in page.items]

    def client_packed() -> object:
        page = packed_decoder.decode(packed_page)
        return [keymgmt.Envelope.from_packed(i.envelope) for i in page.items]

    if client_json() != client_packed():
        raise SystemExit("the two forms do not carry the same records")
    stored_json = [msgspec.json.encode(w) for w in wires]  # a row from before the binary wire
    stored_packed = [store_form(w) for w in wires]
    json_ms, packed_ms = median_ms(client_json), median_ms(client_packed)
    rows = [
        ("bytes of the page", f"{len(json_page):,}", f"{len(packed_page):,}",
         len(packed_page) / len(json_page)),
        ("client: decode the page, build the records (ms)", f"{json_ms:.2f}",
         f"{packed_ms:.2f}", packed_ms / json_ms),
    ]  # fmt: skip
    to_packed = median_ms(lambda: [as_packed(b) for b in stored_json])
    to_json = median_ms(lambda: [as_json(b) for b in stored_packed])
    at_push = median_ms(lambda: [store_form(w) for w in wires])
    print(f"{'one page of 1,000 envelopes':<52} {'JSON':>10} {'MessagePack':>12}  ratio")
    for name, plain, packed, ratio in rows:
        print(f"{name:<52} {plain:>10} {packed:>12}  {ratio:.2f}")
    print(f"server: a stored JSON row served packed (ms)         {to_packed:>10.2f}")
    print(f"server: a stored packed row served as JSON (ms)      {to_json:>10.2f}")
    print(f"server: packing at the push, from the decoded JSON (ms) {at_push:>7.2f}")
    push_both_ways(records)


class _PackedPush(msgspec.Struct):
    """A push body as the binary wire would carry it (not built: docs/sync.md says why)."""

    vault: str
    envelopes: list[keymgmt.PackedEnvelope]


def push_both_ways(records: list[keymgmt.Envelope]) -> None:
    """What a MessagePack push would save: the client's encoding of a batch, and the server's
    decoding of it into what it stores."""
    json_encoder, packed_encoder = msgspec.json.Encoder(), msgspec.msgpack.Encoder()
    json_decoder = msgspec.json.Decoder(PushRequest)
    packed_decoder = msgspec.msgpack.Decoder(_PackedPush)

    def encode_json() -> bytes:
        return json_encoder.encode(PushRequest("v_bench", [r.to_wire() for r in records]))

    def encode_packed() -> bytes:
        return packed_encoder.encode(_PackedPush("v_bench", [r.to_packed() for r in records]))

    json_body, packed_body = encode_json(), encode_packed()

    def store_json() -> list[bytes]:
        return [store_form(e) for e in json_decoder.decode(json_body).envelopes]

    def store_packed() -> list[bytes]:
        return [packed_encoder.encode(e) for e in packed_decoder.decode(packed_body).envelopes]

    print(
        f"{'push: bytes of a batch':<52} {len(json_body):>10,} {len(packed_body):>12,}  "
        f"{len(packed_body) / len(json_body):.2f}"
    )
    for name, plain, packed in (
        ("push: client encodes the batch (ms)", encode_json, encode_packed),
        ("push: server decodes it into the stored form (ms)", store_json, store_packed),
    ):
        plain_ms, packed_ms = median_ms(plain), median_ms(packed)
        print(f"{name:<52} {plain_ms:>10.2f} {packed_ms:>12.2f}  {packed_ms / plain_ms:.2f}")


if __name__ == "__main__":
    main()
