"""Where a pull's time goes: each step of opening a page, per node, on a real page.

Run from the repository root::

    .venv/bin/python bench/bench_pull_steps.py

Starts a local ``tapes-server`` (SQLite), pushes 1,000 sessions' nodes of ~2 KB through the
product's own sync, fetches the first page back as the server sends it, and times each step the
client takes on it with the product's own functions (best of 3, µs per node), beside the bare
sqlite3 store of the same rows (the ceiling of any pull here, as in ``bench_sync.py``). The
table in docs/sync.md ("Where a sync's time goes") comes from this script.
"""

from __future__ import annotations

import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import keymgmt  # noqa: E402
from bench._common import OUT, PASSPHRASE, make_home, use_pro_plan  # noqa: E402
from bench.bench_local import make_sessions  # noqa: E402
from bench.bench_sync import bare_store_rate, one_way  # noqa: E402
from keymgmt import _primitives as prim  # noqa: E402
from keymgmt import envelope as sealed  # noqa: E402
from tapes_e2e import envelopes  # noqa: E402
from tapes_e2e.client import _PACKED_PAGE  # noqa: E402
from tapes_e2e.demo import local_server  # noqa: E402
from tapes_e2e.node import node_from_bytes  # noqa: E402
from tapes_e2e.opening import open_items  # noqa: E402
from tapes_e2e.providers.local import LocalProvider  # noqa: E402
from tapes_e2e.remote_sync import VaultHolder  # noqa: E402
from tapes_e2e.store.rows import node_to_row  # noqa: E402
from tapes_e2e.store.syncstate import SyncState  # noqa: E402
from tapes_e2e.vaults import Trust  # noqa: E402

N = 1000


def per_node(step: Callable[[], object]) -> float:
    """Best of three, in µs per node of the page."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    return best / N * 1e6


def main() -> int:
    os.environ["TAPES_PASSPHRASE"] = PASSPHRASE
    OUT.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="pull-steps-", dir=OUT))
    try:
        with local_server(root) as (url, database):
            home, api, who = make_home(root, "laptop", url, "steps", None)
            use_pro_plan(database)
            vault = api.session.personal_vault  # type: ignore[union-attr]
            with LocalProvider(home / "tapes.sqlite") as store:
                store.put_many(list(make_sessions(random.Random(5), N)))
            one_way(home, api, who, vault)
            with LocalProvider(home / "tapes.sqlite") as store:
                holder = VaultHolder(api, SyncState(store), vault, Trust(home, who, vault))
            page, raw = api.pull_with_bytes(vault, 0, N)
        (root / "bare").mkdir()
        bare = 1e6 / bare_store_rate(root / "bare", N * 10)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    state, keys = holder.access.state, holder.access.content_keys()
    packed = [item.envelope for item in page.items]  # the client pulls the binary wire
    envs = [sealed.Envelope.parse(p) for p in packed]
    ads = [sealed._ad(e, sealed._digest(e)) for e in envs]
    padded = [
        prim.aead_decrypt(keys.epoch_key(e.epoch) or b"", e.nonce or b"", e.ciphertext or b"", a)
        for e, a in zip(envs, ads, strict=True)
    ]
    bodies = [sealed._unframe(p) for p in padded]
    nodes = [node_from_bytes(b) for b in bodies]

    def check_ids() -> None:
        for e, n in zip(envs, nodes, strict=True):
            sealed._check_ids(e, keys, n.hash, n.parent_hash)

    steps = [
        ("decode the page (MessagePack, packed)", lambda: _PACKED_PAGE.decode(raw)),
        ("the records (Envelope.from_packed)", lambda: [sealed.Envelope.parse(p) for p in packed]),
        ("metadata digest and AD", lambda: [sealed._ad(e, sealed._digest(e)) for e in envs]),
        (
            "XChaCha20-Poly1305 decrypt",
            lambda: [
                prim.aead_decrypt(
                    keys.epoch_key(e.epoch) or b"", e.nonce or b"", e.ciphertext or b"", a
                )
                for e, a in zip(envs, ads, strict=True)
            ],
        ),
        ("unpad and zstd", lambda: [sealed._unframe(p) for p in padded]),
        ("parse the node, recompute its hash", lambda: [node_from_bytes(b) for b in bodies]),
        ("keyed node and parent IDs", check_ids),
        (
            "clear metadata against the node",
            lambda: [
                keymgmt.project_metadata(state.metadata_policy, envelopes.clear_fields(n))
                for n in nodes
            ],
        ),
        ("the row to store (node_to_row)", lambda: [node_to_row(n) for n in nodes]),
        ("all of opening a page (open_items)", lambda: open_items(page.items, state, keys)),
    ]
    print(f"{N:,} nodes of ~{sum(map(len, bodies)) // N:,} B; µs per node, best of 3")
    for name, step in steps:
        print(f"  {name:<40} {per_node(step):8.1f}")
    print(f"  {'baseline: bare sqlite3 store of a row':<40} {bare:8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
