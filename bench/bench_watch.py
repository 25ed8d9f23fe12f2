"""How soon `tapes storage sync --watch` notices that another process (Go tapes) committed.

Run from the repository root::

    .venv/bin/python bench/bench_watch.py [--writes 60]

A writer process commits one 2 KB node at a time (its own connection, plain INSERT, as Go tapes
writes), at random intervals; the watcher side notices each commit two ways, in the same run, on
the same writes:

- ``data_version``: what the watcher uses, ``tapes_e2e.sync.watch.DataVersion`` polled every
  100 ms (the watcher's poll);
- ``watchfiles``: inotify (through ``watchfiles``) on the database's directory, the alternative
  the issue asked to measure.

The latency is from the writer's COMMIT returning to the watcher seeing it. The baseline is the
poll interval itself: data_version's median should sit near half of it. Results go to stdout
and ``bench/out/watch.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from multiprocessing import Event, Process, Queue
from multiprocessing.synchronize import Event as EventType
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tapes_e2e.node import Bucket, ContentBlock, Node  # noqa: E402
from tapes_e2e.providers.local import LocalProvider  # noqa: E402
from tapes_e2e.store.rows import INSERT_SQL, node_to_row  # noqa: E402
from tapes_e2e.sync.watch import DataVersion  # noqa: E402

POLL = 0.1
OUT = REPO / "bench" / "out"


def _writer(path: str, writes: int, stamps: Queue[float], go: EventType) -> None:
    import sqlite3

    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    go.wait()
    parent = None
    for index in range(writes):
        time.sleep(random.uniform(0.15, 0.35))
        text = f"turn {index} " + "x" * 2000
        node = Node.new(Bucket(type="message", role="user",
                               content=(ContentBlock(type="text", text=text),),
                               model="m", provider="p"), parent)  # fmt: skip
        db.execute("BEGIN IMMEDIATE")
        db.execute(INSERT_SQL, node_to_row(node))
        db.execute("COMMIT")
        stamps.put(time.monotonic())
        parent = node
    db.close()


def _data_version(path: Path, seen: list[float], done: threading.Event) -> None:
    changes = DataVersion(path)
    while not done.is_set():
        if changes.changed():
            seen.append(time.monotonic())
        time.sleep(POLL)
    changes.close()


def _watchfiles(path: Path, seen: list[float], done: threading.Event) -> None:
    import watchfiles

    names = {path.name, f"{path.name}-wal"}
    for changes in watchfiles.watch(path.parent, stop_event=done, debounce=0, step=1,
                                    rust_timeout=200, yield_on_timeout=True):  # fmt: skip
        if any(Path(p).name in names for _, p in changes):
            seen.append(time.monotonic())  # noqa: PERF401 - one stamp per batch of changes


def _latencies(writes: list[float], seen: list[float]) -> list[float]:
    """For each write, the first sighting at or after it (sightings may merge two writes)."""
    out = []
    for stamp in writes:
        later = [s for s in seen if s >= stamp]
        if later:
            out.append(min(later) - stamp)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=REPO / "bench") as tmp:
        path = Path(tmp) / "tapes.sqlite"
        LocalProvider(path).close()
        stamps: Queue[float] = Queue()
        go = Event()
        writer = Process(target=_writer, args=(str(path), args.writes, stamps, go))
        writer.start()
        done = threading.Event()
        seen: dict[str, list[float]] = {"data_version": [], "watchfiles": []}
        threads = [
            threading.Thread(target=_data_version, args=(path, seen["data_version"], done)),
            threading.Thread(target=_watchfiles, args=(path, seen["watchfiles"], done)),
        ]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        go.set()
        writes = [stamps.get(timeout=60) for _ in range(args.writes)]
        writer.join()
        time.sleep(0.5)
        done.set()
        for thread in threads:
            thread.join()
    results = {}
    for name, sightings in seen.items():
        lat = sorted(_latencies(writes, sightings))
        results[name] = {
            "noticed": len(lat), "writes": len(writes),
            "median_ms": round(statistics.median(lat) * 1000, 1),
            "p95_ms": round(lat[int(len(lat) * 0.95) - 1] * 1000, 1),
            "max_ms": round(lat[-1] * 1000, 1),
        }  # fmt: skip
    baseline = POLL * 1000
    for name, r in results.items():
        print(f"{name:13s} noticed {r['noticed']}/{r['writes']} commits: median "
              f"{r['median_ms']} ms, p95 {r['p95_ms']} ms, max {r['max_ms']} ms; median / poll "
              f"interval ({baseline:.0f} ms) = {r['median_ms'] / baseline:.2f}")  # fmt: skip
    ratio = results["data_version"]["median_ms"] / max(results["watchfiles"]["median_ms"], 0.1)
    print(f"data_version median / watchfiles median = {ratio:.1f}x (same writes, same run)")
    OUT.mkdir(exist_ok=True)
    (OUT / "watch.json").write_text(json.dumps({"poll_ms": baseline, **results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
