"""Client sync through a real ``tapes-server`` process: encrypted vs. with encryption switched off.

Run from the repository root::

    .venv/bin/python bench/bench_sync.py           # 100k nodes of ~2 KB
    .venv/bin/python bench/bench_sync.py --quick   # 10k

In one run, against one ``tapes-server serve`` on SQLite (database under bench/out, on disk):

1. ``push``: a home records N nodes (sessions of 100) and a sync runner pushes them all, sealed.
2. ``pull``: a second home of the same user (its identity key copied) pulls, verifies, opens and
   stores them all.
3. The same two figures with encryption switched off (a bench-only switch that replaces the
   seal and open steps with plain base64 framing, so everything else — batching, HTTP, the
   server, the local bookkeeping — is the same). Goal: encrypted within 1.3 times of it.
4. ``no-op sync`` at N stored: one request, median over 20 syncs. Goal < 50 ms.
5. ``bare store``: the same N rows inserted with bare ``sqlite3`` as a pull stores them, the
   ceiling of any pull on this machine.

Printed as a table with the goals (≥ 10,000 nodes/s each way); JSON in bench/out/sync.json.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


import httpx  # noqa: E402

import keymgmt  # noqa: E402
from bench._common import OUT, PASSPHRASE, make_home, use_pro_plan  # noqa: E402
from bench.bench_local import make_sessions  # noqa: E402
from bench.bench_server import (  # noqa: E402
    SealingVault,
    new_account,
    push_batches,
    push_bodies,
)
from tapes_e2e import opening, sealing  # noqa: E402
from tapes_e2e.client import ApiClient  # noqa: E402
from tapes_e2e.demo import local_server  # noqa: E402
from tapes_e2e.node import node_from_bytes  # noqa: E402
from tapes_e2e.providers.local import LocalProvider  # noqa: E402
from tapes_e2e.remote_sync import vault_runner  # noqa: E402
from tapes_e2e.sealing import wire_bytes  # noqa: E402
from tapes_e2e.store.rows import INSERT_SQL, node_to_row, pulled_row  # noqa: E402
from tapes_e2e.store.syncstate import SyncState  # noqa: E402
from tapes_e2e.sync.worker import run_sync  # noqa: E402
from tapes_e2e.vaults import Trust  # noqa: E402


def plain_seal_items(items, state, keys, author, packed=False):  # type: ignore[no-untyped-def]
    """Bench only, in place of ``sealing.seal_items``: the body itself where the ciphertext
    goes (base64 on the wire). Same framing, no compression, no crypto. Module-level, so
    worker processes can be sent it."""
    envelopes = [
        keymgmt.Envelope(
            2,
            state.team,
            state.epoch,
            keys.node_id(state.epoch, item.tapes_hash),
            item.parent_id,
            author,
            "node",
            {},
            len(item.body),
            b"\0" * 24,
            item.body,
            None,
            state.head.seqno,
            state.head.hash,
        )
        for item in items
    ]
    return [e.node_id for e in envelopes], [wire_bytes(e, packed=packed) for e in envelopes]


def plain_open_items(items, state, keys):  # type: ignore[no-untyped-def]
    """Bench only, in place of ``opening.open_items``: decode the body and parse the node
    (which rehashes it); no crypto. Module-level, so worker processes can be sent it."""
    rows = []
    for item in items:
        body = item.envelope.ciphertext  # bytes on the binary wire, base64 text in JSON
        if isinstance(body, str):
            body = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        node = node_from_bytes(body)
        rows.append(pulled_row(node, item.envelope.node_id, verify=False))
    return rows, []


@contextmanager
def encryption_off():  # type: ignore[no-untyped-def]
    """Bench only: seal = the body in plain, open = parse it. Same sizes, no crypto."""
    real_seal, real_open = sealing.seal_items, opening.open_items
    sealing.seal_items, opening.open_items = plain_seal_items, plain_open_items
    try:
        yield
    finally:
        sealing.seal_items, opening.open_items = real_seal, real_open


def one_way(
    home: Path, api: ApiClient, who: keymgmt.Identity, vault: str
) -> tuple[float, int, int]:
    with LocalProvider(home / "tapes.sqlite") as store:
        runner = vault_runner(store, api, vault, Trust(home, who, vault))
        start = time.perf_counter()
        result = run_sync(runner)
        elapsed = time.perf_counter() - start
        if result is None or result.result != "ok":
            raise SystemExit(f"sync failed: {result}")
        return elapsed, runner.pushed, runner.pulled


def noop_ms(home: Path, api: ApiClient, who: keymgmt.Identity, vault: str, tries: int) -> float:
    with LocalProvider(home / "tapes.sqlite") as store:
        runner = vault_runner(store, api, vault, Trust(home, who, vault))
        times = []
        for _ in range(tries):
            start = time.perf_counter()
            run_sync(runner)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def server_ingest_rate(url: str, database: Path, count: int) -> float:
    """The server's own ingest figure, on the same server in the same run: another account
    pushes ``count`` envelopes of the same size, sealed before the clock starts, in raw HTTP
    batches of 1,000 in MessagePack, encoded before the clock starts (what bench_server.py's
    push measures): the ceiling of any client's push."""
    with httpx.Client(base_url=url, timeout=120) as http:
        account = new_account(http, "ingest")
        use_pro_plan(database)
        envelopes = SealingVault(account.vault, account.identity, seed=7).sessions(count)
        bodies = push_bodies(account.vault, envelopes, 1000)  # MessagePack, as the client sends
        start = time.perf_counter()
        push_batches(http, account, bodies)
        return count / (time.perf_counter() - start)


def run(root: Path, count: int, label: str, *, plain: bool) -> dict[str, Any]:
    root.mkdir(parents=True)
    with local_server(root) as (url, database):
        sessions = list(make_sessions(random.Random(5), count))
        laptop, api1, alice = make_home(root, f"{label}-laptop", url, "bench" + label, None)
        use_pro_plan(database)
        vault = api1.session.personal_vault  # type: ignore[union-attr]
        with LocalProvider(laptop / "tapes.sqlite") as store:
            store.put_many(sessions)
        with _maybe(plain):
            push_s, pushed, _ = one_way(laptop, api1, alice, vault)
            desktop, api2, same = make_home(root, f"{label}-desktop", url, None, laptop)
            pull_s, _, pulled = one_way(desktop, api2, same, vault)
            noop = noop_ms(desktop, api2, same, vault, 20)
        ingest = server_ingest_rate(url, database, count)
    if pushed != count:
        raise SystemExit(f"pushed {pushed} of {count}")
    return {"push_s": push_s, "pull_s": pull_s, "pulled": pulled, "noop_ms": noop,
            "server_ingest_per_s": ingest}  # fmt: skip


def bare_store_rate(root: Path, count: int) -> float:
    """Nodes/s of a bare ``sqlite3`` ``executemany`` of the same rows a pull stores (into
    ``nodes`` and ``e2e_remote``, pages of 1,000, one commit each, synchronous NORMAL in WAL as
    the sync bookkeeping runs): the ceiling of a pull on this machine however cheap the rest."""
    rows = [node_to_row(n) for n in make_sessions(random.Random(5), count)]
    path = root / "bare-store.sqlite"
    with LocalProvider(path) as store:  # Go's schema and our e2e tables, nothing else
        SyncState(store)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = NORMAL")
    start = time.perf_counter()
    for at in range(0, count, 1000):
        page = rows[at : at + 1000]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(INSERT_SQL, page)
        conn.executemany(
            "INSERT INTO e2e_remote (hash, vault, node_id) VALUES (?, 'v', ?)",
            [(row[0], row[0]) for row in page],
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return count / elapsed


@contextmanager
def _maybe(plain: bool):  # type: ignore[no-untyped-def]
    if plain:
        with encryption_off():
            yield
    else:
        yield


def compare_workers(count: int, workers: str) -> int:
    """The encrypted push and pull with ``workers`` worker processes ("auto": as the product
    decides here) and with none, two runs each, interleaved (none, N, N, none), on this machine
    of ``os.cpu_count()`` cores."""
    root = Path(tempfile.mkdtemp(prefix="sync-workers-", dir=OUT))
    figures: dict[str, list[tuple[float, float]]] = {"0": [], workers: []}
    try:
        for index, n in enumerate(("0", workers, workers, "0")):
            os.environ.pop("TAPES_SYNC_WORKERS", None)
            if n != "auto":
                os.environ["TAPES_SYNC_WORKERS"] = n
            result = run(root / f"w{index}", count, f"w{index}", plain=False)
            figures[n].append((count / result["push_s"], result["pulled"] / result["pull_s"]))
    finally:
        os.environ.pop("TAPES_SYNC_WORKERS", None)
        shutil.rmtree(root, ignore_errors=True)
    print(f"{count:,} nodes, {os.cpu_count()} cores; encrypted sync, nodes/s (two runs each)")
    for way, at in (("push", 0), ("pull", 1)):
        none = statistics.mean(f[at] for f in figures["0"])
        some = statistics.mean(f[at] for f in figures[workers])
        runs = ", ".join(f"{f[at]:,.0f}" for f in figures[workers])
        base = ", ".join(f"{f[at]:,.0f}" for f in figures["0"])
        print(f"  {way}: {workers} workers {runs}; none {base}; ratio {some / none:.2f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10k nodes instead of 100k")
    parser.add_argument(
        "--compare-workers", nargs="?", const="auto", metavar="N",
        help="only compare the encrypted sync with N worker processes (default: as the product "
        "decides on this machine, TAPES_SYNC_WORKERS unset) against none",
    )  # fmt: skip
    args = parser.parse_args()
    count = 10_000 if args.quick else 100_000
    OUT.mkdir(parents=True, exist_ok=True)
    os.environ["TAPES_PASSPHRASE"] = PASSPHRASE
    if args.compare_workers is not None:
        return compare_workers(count, args.compare_workers)
    root = Path(tempfile.mkdtemp(prefix="sync-", dir=OUT))
    try:
        enc = run(root / "enc", count, "e", plain=False)
        plain = run(root / "plain", count, "p", plain=True)
        bare_store = bare_store_rate(root, count)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows = [
        ("push (nodes/s)", count / enc["push_s"], count / plain["push_s"], ">= 10,000/s; <= 1.3x"),
        ("pull (nodes/s)", enc["pulled"] / enc["pull_s"], plain["pulled"] / plain["pull_s"],
         ">= 10,000/s; <= 1.3x"),
    ]  # fmt: skip
    print(f"{'figure':<18} {'encrypted':>12} {'no crypto':>12} {'time ratio':>10}  goal")
    results: dict[str, Any] = {
        "count": count, "encrypted": enc, "plain": plain, "bare_store_per_s": bare_store,
    }  # fmt: skip
    ok = True
    for name, ours, base, goal in rows:
        ratio = base / ours
        passed = ours >= 10_000 and ratio <= 1.3
        ok &= passed
        print(f"{name:<18} {ours:>12,.0f} {base:>12,.0f} {ratio:>9.2f}x  {goal} "
              f"{'PASS' if passed else 'MISS'}")  # fmt: skip
    noop_pass = enc["noop_ms"] < 50
    ok &= noop_pass
    print(f"{'no-op sync (ms)':<18} {enc['noop_ms']:>12.2f} {plain['noop_ms']:>12.2f} "
          f"{'':>10}  < 50 ms, one request {'PASS' if noop_pass else 'MISS'}")  # fmt: skip
    print(f"{'bare store (n/s)':<18} {bare_store:>12,.0f} {'':>12} {'':>10}  "
          "the pulled rows stored by bare sqlite3 alone: any pull's ceiling here")  # fmt: skip
    print(f"{'server ingest (n/s)':<18} {enc['server_ingest_per_s']:>12,.0f} "
          f"{plain['server_ingest_per_s']:>12,.0f} {'':>10}  the same server taking presealed "
          "envelopes in raw batches: any push's ceiling here")  # fmt: skip
    print("issue 14's ratios, each against its baseline from this run:")
    ratios = [
        ("pull / bare store", enc["pulled"] / enc["pull_s"] / bare_store, ">= 0.8"),
        ("push / server ingest", count / enc["push_s"] / enc["server_ingest_per_s"], ">= 0.8"),
        ("encrypted / plain time, push", enc["push_s"] / plain["push_s"], "<= 1.15"),
        ("encrypted / plain time, pull", enc["pull_s"] / plain["pull_s"], "<= 1.15"),
    ]
    for name, value, goal in ratios:
        met = value >= 0.8 if goal.startswith(">=") else value <= 1.15
        print(f"  {name:<30} {value:>6.2f}  goal {goal:<8} {'PASS' if met else 'MISS'}")
    results["ratios"] = {name: value for name, value, _goal in ratios}
    (OUT / "sync.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {OUT / 'sync.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
