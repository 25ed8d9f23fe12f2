"""Memory of a client pulling a large vault: peak RSS must be flat in the number of nodes.

Run from the repository root::

    .venv/bin/python bench/bench_pull_memory.py           # 1,000,000 nodes of ~450 bytes
    .venv/bin/python bench/bench_pull_memory.py --quick   # 100,000

In one run, against one ``tapes-server serve`` on SQLite (database under bench/out, on disk):

1. *Seed*: a bench account (on the ``pro`` plan) gets N small nodes (sessions of 100, bodies of
   340-510 bytes) in its personal vault. They are real: made and sealed in this process with the
   product's own ``seal_envelope`` under the vault's verified chain and opened keyring, and pushed
   through ``POST /api/v1/sync/push`` in batches of 2,000 (the server's maximum). The API is fast
   enough for this (about a minute per 100k on the development VM), so nothing is written into
   the server's database behind its back: sequence numbers, counts and checks are the server's.
   The seeding client keeps no local store: nodes are generated, sealed and sent in a stream.
2. *Pull*: a CHILD process, a second machine of the same user (its identity key copied, as
   bench_sync does), logs in, opens a fresh tapes database and the vault, and runs one sync
   round (``vault_runner`` + ``run_sync``) that pulls, verifies, opens and stores all N nodes,
   a page of ``--page-size`` (default 1,000, the largest page the server serves, so the worst
   case for a page-bounded client) at a time. It reads ``/proc/self/status`` right before the
   pull (the baseline: after imports, login and opening the vault) and, through the runner's
   ``on_progress`` callback, every N/20 nodes: ``VmRSS`` (resident now), ``VmHWM`` (peak resident
   since the baseline: the child resets it there through ``/proc/self/clear_refs``), and the
   split into ``RssAnon`` (the heap: what a leak grows) and ``RssFile`` (file pages mapped in,
   here SQLite's ``mmap_size`` window onto the tapes database, shared with the OS page cache and
   capped by that setting). It reports them to the parent as one JSON line.

Printed: a table of the checkpoints (nodes pulled, RSS, peak, anonymous and file-backed RSS,
growth over the baseline), the ratio of peak RSS after N nodes to peak RSS after N/10 (flat:
≤ 1.1) and the pull throughput, for information. JSON in bench/out/pull_memory.json. Exits 1 when
the ratio is above 1.1.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench._common import OUT, PASSPHRASE, make_home, use_pro_plan  # noqa: E402
from bench.bench_local import make_sessions  # noqa: E402
from tapes_e2e.account import open_vault  # noqa: E402
from tapes_e2e.client import ApiClient  # noqa: E402
from tapes_e2e.demo import local_server  # noqa: E402
from tapes_e2e.envelopes import seal_envelope  # noqa: E402
from tapes_e2e.node import Node  # noqa: E402
from tapes_e2e.providers.local import LocalProvider  # noqa: E402
from tapes_e2e.remote_sync import vault_runner  # noqa: E402
from tapes_e2e.sync.engine import Event, PulledPage  # noqa: E402
from tapes_e2e.sync.worker import run_sync  # noqa: E402
from tapes_e2e.vaults import Trust, VaultAccess  # noqa: E402

NODE_SIZE = 180  # make_node's size: bodies (node_body) of 340-510 bytes, ~460 on average
PUSH_BATCH = 2000  # the server's MAX_BATCH_NODES
FLAT = 1.1  # peak RSS at N over peak RSS at N/10
MIB = 1024 * 1024
_STATUS_KEYS = {"VmRSS": "rss", "VmHWM": "peak", "RssAnon": "anon", "RssFile": "file"}


# --- the parent: server, seed, report ---------------------------------------------------------


def batches(nodes: Iterator[Node], size: int) -> Iterator[list[Node]]:
    """The stream cut into lists of ``size`` (a session may straddle two: parents go first)."""
    while batch := list(islice(nodes, size)):
        yield batch


def seed(api: ApiClient, access: VaultAccess, who: Any, count: int) -> float:
    """Make, seal and push ``count`` small nodes into the vault; the seconds it took."""
    start = time.perf_counter()
    done = 0
    for batch in batches(make_sessions(random.Random(7), count, NODE_SIZE), PUSH_BATCH):
        envelopes = [
            seal_envelope(
                node, state=access.state, keys=access.content_keys(), author=who
            ).to_dict()
            for node in batch
        ]
        result = api.push(access.vault, envelopes)
        if len(result.stored) + len(result.existing) != len(batch):
            raise SystemExit(f"the server acknowledged {len(result.stored)} of {len(batch)}")
        done += len(batch)
        if done % 100_000 == 0:
            print(f"  seeded {done:,} ({done / (time.perf_counter() - start):,.0f} nodes/s)",
                  file=sys.stderr)  # fmt: skip
    return time.perf_counter() - start


def run(root: Path, count: int, page_size: int) -> dict[str, Any]:
    """Start the server, seed the vault, pull it in a child; the child's report plus seeding."""
    with local_server(root) as (url, database):
        laptop, api, alice = make_home(root, "laptop", url, "benchmem", None)
        use_pro_plan(database)
        vault = api.session.personal_vault  # type: ignore[union-attr]
        seed_s = seed(api, open_vault(api, vault, Trust(laptop, alice, vault)), alice, count)
        print(f"seeded {count:,} sealed nodes in {seed_s:.1f} s", file=sys.stderr)
        spec = {"root": str(root), "url": url, "source": str(laptop), "vault": vault,
                "count": count, "page_size": page_size}  # fmt: skip
        child = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(spec)],
            stdout=subprocess.PIPE,
            check=True,
            text=True,
        )
    report: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
    report["seed_s"] = seed_s
    return report


# --- the child: pull and measure --------------------------------------------------------------


def memory() -> dict[str, float]:
    """This process's resident memory in MiB, from /proc/self/status (Linux)."""
    out: dict[str, float] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in _STATUS_KEYS:
            out[_STATUS_KEYS[key]] = int(value.split()[0]) / 1024  # kB
    return out


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS, so the peak is the pull's own (Linux ≥ 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """A second machine of the user pulls the whole vault; memory at the baseline and every
    N/20 nodes. Nothing the bench keeps grows with N: a fixed number of checkpoints."""
    root, count = Path(spec["root"]), int(spec["count"])
    desktop, api, same = make_home(root, "desktop", spec["url"], None, Path(spec["source"]))
    every = max(count // 20, 1)
    checkpoints: list[dict[str, float]] = []
    start = time.perf_counter()

    def on_progress(event: Event) -> None:
        if isinstance(event, PulledPage) and runner.pulled >= every * (len(checkpoints) + 1):
            seconds = time.perf_counter() - start
            checkpoints.append({"nodes": runner.pulled, "seconds": seconds, **memory()})

    with LocalProvider(desktop / "tapes.sqlite") as store:
        trust = Trust(desktop, same, spec["vault"])
        runner = vault_runner(store, api, spec["vault"], trust, on_progress=on_progress)
        runner._page_size = int(spec["page_size"])
        gc.collect()
        reset = reset_peak()
        baseline = memory()
        start = time.perf_counter()
        result = run_sync(runner)
        elapsed = time.perf_counter() - start
        final = {"nodes": runner.pulled, "seconds": elapsed, **memory()}
    if result is None or result.result != "ok" or runner.pulled != count:
        raise SystemExit(f"pull failed: {result}, {runner.pulled:,} of {count:,} pulled")
    return {"count": count, "page_size": spec["page_size"], "peak_reset": reset,
            "baseline": baseline, "checkpoints": checkpoints, "final": final,
            "pull_s": elapsed}  # fmt: skip


# --- the table --------------------------------------------------------------------------------


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """Growth over the baseline and the ratio of the peak at N to the peak at N/10."""
    count, base = report["count"], report["baseline"]
    tenth = next(c for c in report["checkpoints"] if c["nodes"] >= count // 10)
    final = report["final"]
    return {
        "peak_at_tenth_mib": tenth["peak"],
        "peak_at_n_mib": final["peak"],
        "ratio_peak_n_vs_tenth": final["peak"] / tenth["peak"],
        "growth_at_tenth_mib": tenth["peak"] - base["rss"],
        "growth_at_n_mib": final["peak"] - base["rss"],
        "anon_growth_at_n_mib": final["anon"] - base["anon"],
        "pull_nodes_per_s": count / report["pull_s"],
        "seed_nodes_per_s": count / report["seed_s"],
    }


def print_table(report: dict[str, Any], summary: dict[str, Any]) -> None:
    base = report["baseline"]
    print(f"{'nodes pulled':>12} {'RSS MiB':>8} {'peak MiB':>9} {'anon MiB':>9} "
          f"{'file MiB':>9} {'growth MiB':>11}")  # fmt: skip
    rows = [{"nodes": 0, **base}, *report["checkpoints"]]
    if rows[-1]["nodes"] != report["final"]["nodes"]:
        rows.append(report["final"])
    for row in rows:
        print(f"{row['nodes']:>12,} {row['rss']:>8.1f} {row['peak']:>9.1f} {row['anon']:>9.1f} "
              f"{row['file']:>9.1f} {row['peak'] - base['rss']:>11.1f}")  # fmt: skip
    ratio = summary["ratio_peak_n_vs_tenth"]
    print(f"peak RSS at N / at N/10: {summary['peak_at_n_mib']:.1f} / "
          f"{summary['peak_at_tenth_mib']:.1f} MiB = {ratio:.3f} "
          f"(flat: <= {FLAT}) {'PASS' if ratio <= FLAT else 'MISS'}")  # fmt: skip
    print(
        f"pull throughput: {summary['pull_nodes_per_s']:,.0f} nodes/s "
        f"(page {report['page_size']}); seeding {summary['seed_nodes_per_s']:,.0f} nodes/s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100k nodes instead of 1M")
    parser.add_argument("--count", type=int, help="nodes to pull (overrides --quick)")
    parser.add_argument("--page-size", type=int, default=1000, help="nodes per pull page")
    parser.add_argument("--keep", action="store_true", help="keep the databases under bench/out")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ["TAPES_PASSPHRASE"] = PASSPHRASE
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    count = args.count or (100_000 if args.quick else 1_000_000)
    OUT.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="pull-memory-", dir=OUT))
    try:
        report = run(root, count, args.page_size)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    summary = summarize(report)
    print_table(report, summary)
    (OUT / "pull_memory.json").write_text(json.dumps(report | summary, indent=2))
    print(f"wrote {OUT / 'pull_memory.json'}")
    return 0 if summary["ratio_peak_n_vs_tenth"] <= FLAT else 1


if __name__ == "__main__":
    raise SystemExit(main())
