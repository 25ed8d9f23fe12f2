"""Benchmarks of the local provider against bare ``sqlite3`` doing the same work.

Run from the repository root::

    .venv/bin/python bench/bench_local.py           # full: 100k-node import
    .venv/bin/python bench/bench_local.py --quick   # 10k-node import, fewer repetitions

Every figure is measured in the same run as its baseline, on database files under ``bench/out/``
(the real disk, never a tmpfs), with the two sides interleaved so that a noisy machine slows both
alike. Medians are reported. The results go to stdout as a table and to ``bench/out/local.json``.

Figures:

- ``put``: ``LocalProvider.put`` of one new 2 KB node (durable: WAL, ``synchronous=FULL``) vs a
  bare ``BEGIN IMMEDIATE`` / ``INSERT`` / ``COMMIT`` of the same row tuple (``node_to_row``) with
  the same DDL and pragmas. Goal ≤ 1.5x.
- ``ancestry``: ``LocalProvider.ancestry`` of the leaf of a 10,000-deep session vs the same
  recursive CTE run on a bare ``sqlite3`` connection, fetching the same columns. Goal ≤ 1.5x and
  < 50 ms.
- ``import``: ``import_nodes`` of a JSONL file (written by ``export_nodes``) into a fresh
  database vs a bare ``executemany`` of the same rows in one transaction into a fresh database with
  the same DDL. Goal ≤ 2x.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import shutil
import sqlite3
import statistics
import string
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NoReturn

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tapes_e2e.node import Bucket, ContentBlock, Node, Usage  # noqa: E402
from tapes_e2e.providers import local as local_module  # noqa: E402
from tapes_e2e.providers.hybrid import HybridProvider  # noqa: E402
from tapes_e2e.providers.local import LocalProvider  # noqa: E402
from tapes_e2e.store.database import BUSY_TIMEOUT_MS  # noqa: E402
from tapes_e2e.store.rows import INSERT_SQL, node_to_row  # noqa: E402
from tapes_e2e.store.schema import GO_DDL  # noqa: E402
from tapes_e2e.store.syncstate import SyncState  # noqa: E402
from tapes_e2e.sync.worker import SyncError, SyncRunner  # noqa: E402
from tapes_e2e.transfer import export_nodes, import_nodes  # noqa: E402

OUT = REPO / "bench" / "out"
NODE_BYTES = 2048  # target size of the stored bucket JSON
ANCESTRY_DEPTH = 10_000
SESSION_LEN = 100  # nodes per session in the import file


@dataclass
class Figure:
    name: str
    unit: str
    ours: float
    baseline: float
    goal_ratio: float
    goal_abs: float | None = None  # an absolute ceiling for `ours`, in `unit`
    reps: int = 0
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.ours / self.baseline

    @property
    def passed(self) -> bool:
        ok = self.ratio <= self.goal_ratio
        if self.goal_abs is not None:
            ok = ok and self.ours < self.goal_abs
        return ok

    def goal_text(self) -> str:
        text = f"≤ {self.goal_ratio:g}x"
        if self.goal_abs is not None:
            text += f", < {self.goal_abs:g} {self.unit}"
        return text


# --- data -------------------------------------------------------------------------------------

_WORDS = [
    "".join(random.Random(i).choices(string.ascii_lowercase, k=random.Random(-i).randint(2, 9)))
    for i in range(512)
]


def _text(rng: random.Random, size: int) -> str:
    words: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(_WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)[:size]


def make_node(rng: random.Random, parent: Node | None, index: int, size: int = NODE_BYTES) -> Node:
    """A node whose stored ``bucket`` JSON is about ``size`` bytes (2 KB by default)."""
    assistant = index % 2 == 1
    text = _text(rng, size - 140)
    bucket = Bucket(
        type="message",
        role="assistant" if assistant else "user",
        content=(ContentBlock(type="text", text=text),),
        model="claude-sonnet-4-5-20250929",
        provider="anthropic",
    )
    usage = Usage(prompt_tokens=1200 + index, completion_tokens=300, total_tokens=1500 + index)
    return Node.new(
        bucket,
        parent,
        usage=usage if assistant else None,
        stop_reason="end_turn" if assistant else "",
        project="bench",
    )


def make_chain(rng: random.Random, length: int) -> list[Node]:
    nodes: list[Node] = []
    parent: Node | None = None
    for i in range(length):
        parent = make_node(rng, parent, i)
        nodes.append(parent)
    return nodes


def make_sessions(rng: random.Random, total: int, size: int = NODE_BYTES) -> Iterator[Node]:
    """``total`` nodes in sessions of ``SESSION_LEN``, each node the child of the previous one."""
    made = 0
    while made < total:
        parent: Node | None = None
        for i in range(min(SESSION_LEN, total - made)):
            parent = make_node(rng, parent, i, size)
            yield parent
            made += 1


# --- bare sqlite3 -----------------------------------------------------------------------------


def bare_connect(path: Path, *, create: bool) -> sqlite3.Connection:
    """A bare connection with the store's settings: WAL, synchronous=FULL, foreign keys on."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = FULL")
    if create:
        conn.execute("BEGIN IMMEDIATE")
        for _name, ddl in GO_DDL:
            conn.execute(ddl)
        conn.execute("COMMIT")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        raise RuntimeError(f"baseline database is in journal mode {mode}, not wal")
    return conn


def check_settings(store: LocalProvider) -> None:
    with store.engine.connect() as conn:
        sync = conn.exec_driver_sql("PRAGMA synchronous").scalar()
        fks = conn.exec_driver_sql("PRAGMA foreign_keys").scalar()
    if store.journal_mode() != "wal" or sync != 2 or fks != 1:
        raise RuntimeError(
            f"store settings differ from the baseline: journal_mode={store.journal_mode()}, "
            f"synchronous={sync}, foreign_keys={fks}"
        )


# --- timing -----------------------------------------------------------------------------------


def interleaved(
    ours: Callable[[int], object], base: Callable[[int], object], reps: int
) -> tuple[list[float], list[float]]:
    """Run both ``reps`` times, alternating which goes first; return seconds per call."""
    ours_t: list[float] = []
    base_t: list[float] = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(reps):
            order = ((ours, ours_t), (base, base_t))
            if i % 2:
                order = order[::-1]
            for fn, sink in order:
                start = time.perf_counter()
                fn(i)
                sink.append(time.perf_counter() - start)
            if i % 64 == 63:
                gc.collect()
    finally:
        if gc_was_enabled:
            gc.enable()
    return ours_t, base_t


def _offline(*_args: object) -> NoReturn:
    raise SyncError("offline", "bench: no server")


def hybrid_store(path: Path) -> HybridProvider:
    """A hybrid provider with its background worker running, as ``tapes`` runs it; the worker's
    server is unreachable, so it backs off (a sync in flight would compete for the CPU, which is
    the CPU's cost, not the recording path's)."""
    local = LocalProvider(path)
    runner = SyncRunner(SyncState(local), "bench", _offline, _offline)
    return HybridProvider(local, runner, sync_on_close=False)


def bench_put(work: Path, reps: int, rng: random.Random, *, hybrid: bool = False) -> Figure:
    # One session per side, each put a child of the previous node, as a recording proxy does.
    nodes = make_chain(rng, reps + 1)
    rows = [node_to_row(n) for n in nodes]
    kind = "hybrid" if hybrid else "local"
    path = work / f"put_{kind}_ours.sqlite"
    store: LocalProvider | HybridProvider = hybrid_store(path) if hybrid else LocalProvider(path)
    local = store.local if isinstance(store, HybridProvider) else store
    check_settings(local)
    bare = bare_connect(work / f"put_{kind}_bare.sqlite", create=True)
    # The root goes in first on both sides, so every timed insert checks a parent.
    store.put(nodes[0])
    bare.execute(INSERT_SQL, rows[0])

    def ours(i: int) -> None:
        if not store.put(nodes[i + 1]):
            raise RuntimeError("put stored nothing")

    def base(i: int) -> None:
        bare.execute("BEGIN IMMEDIATE")
        bare.execute(INSERT_SQL, rows[i + 1])
        bare.execute("COMMIT")

    # Warm up both (first fsyncs, page cache) on extra nodes outside the timed series.
    warm = make_chain(random.Random(99), 20)
    for node in warm:
        store.put(node)
        bare.execute("BEGIN IMMEDIATE")
        bare.execute(INSERT_SQL, node_to_row(node))
        bare.execute("COMMIT")
    ours_t, base_t = interleaved(ours, base, reps)
    bare_count = bare.execute("SELECT count(*) FROM nodes").fetchone()[0]
    if local.counts()[0] != bare_count or bare_count != reps + 1 + len(warm):
        raise RuntimeError("put benchmark: row counts differ")
    store.close()
    bare.close()
    return Figure(
        name="hybrid put 2 KB node (worker running)" if hybrid else "put 2 KB node (durable)",
        unit="µs",
        ours=statistics.median(ours_t) * 1e6,
        baseline=statistics.median(base_t) * 1e6,
        goal_ratio=2.0 if hybrid else 1.5,
        reps=reps,
        note=(
            f"p90 ours {_pct(ours_t, 0.9) * 1e6:.0f} µs, bare {_pct(base_t, 0.9) * 1e6:.0f} µs; "
            "ours includes rehash (verify) and row encoding"
        ),
    )


def bench_ancestry(work: Path, reps: int, rng: random.Random) -> Figure:
    nodes = make_chain(rng, ANCESTRY_DEPTH)
    path = work / "ancestry.sqlite"
    store = LocalProvider(path)
    check_settings(store)
    store.put_many(nodes)
    leaf = nodes[-1].hash
    bare = bare_connect(path, create=False)
    # The provider's own query text: same shape, same columns.
    sql = local_module._ANCESTRY

    def ours(_i: int) -> None:
        got = store.ancestry(leaf)
        if len(got) != ANCESTRY_DEPTH:
            raise RuntimeError(f"ancestry returned {len(got)} nodes")

    def base(_i: int) -> None:
        got = bare.execute(sql, (leaf,)).fetchall()
        if len(got) != ANCESTRY_DEPTH:
            raise RuntimeError(f"raw CTE returned {len(got)} rows")

    ours(0)
    base(0)
    ours_t, base_t = interleaved(ours, base, reps)
    store.close()
    bare.close()
    return Figure(
        name=f"ancestry, {ANCESTRY_DEPTH:,} deep",
        unit="ms",
        ours=statistics.median(ours_t) * 1e3,
        baseline=statistics.median(base_t) * 1e3,
        goal_ratio=1.5,
        goal_abs=50.0,
        reps=reps,
        note="ours builds Node objects (JSON decode of each bucket); bare returns raw tuples",
    )


def bench_import(work: Path, count: int, reps: int, rng: random.Random) -> Figure:
    jsonl = work / "import.jsonl"
    rows: list[tuple[Any, ...]] = []
    with jsonl.open("wb") as out:
        batch: list[Node] = []
        for node in make_sessions(rng, count):
            batch.append(node)
            rows.append(node_to_row(node))
            if len(batch) == 5000:
                export_nodes(batch, out)
                batch.clear()
        export_nodes(batch, out)
    size_mb = jsonl.stat().st_size / 1e6

    def fresh(name: str) -> Path:
        path = work / name
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return path

    def ours(i: int) -> float:
        store = LocalProvider(fresh(f"import_ours_{i}.sqlite"))
        check_settings(store)
        with jsonl.open("rb") as lines:
            start = time.perf_counter()
            result = import_nodes(store, lines)
            elapsed = time.perf_counter() - start
        if result.new != count or store.counts()[0] != count:
            raise RuntimeError(f"import stored {result.new} of {count}")
        store.close()
        return elapsed

    def base(i: int) -> float:
        bare = bare_connect(fresh(f"import_bare_{i}.sqlite"), create=True)
        start = time.perf_counter()
        bare.execute("BEGIN IMMEDIATE")
        bare.executemany(INSERT_SQL, rows)
        bare.execute("COMMIT")
        elapsed = time.perf_counter() - start
        if bare.execute("SELECT count(*) FROM nodes").fetchone()[0] != count:
            raise RuntimeError("bare import stored a different count")
        bare.close()
        return elapsed

    ours_t: list[float] = []
    base_t: list[float] = []
    for i in range(reps):
        order: Sequence[tuple[Callable[[int], float], list[float]]] = (
            (ours, ours_t),
            (base, base_t),
        )
        if i % 2:
            order = order[::-1]
        for fn, sink in order:
            gc.collect()
            sink.append(fn(i))
    return Figure(
        name=f"import {count:,} nodes",
        unit="s",
        ours=statistics.median(ours_t),
        baseline=statistics.median(base_t),
        goal_ratio=2.0,
        reps=reps,
        note=(
            f"JSONL {size_mb:.0f} MB; ours = parse + rehash + encode + insert; "
            f"ours {count / statistics.median(ours_t):,.0f} nodes/s"
        ),
    )


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- report -----------------------------------------------------------------------------------


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def print_table(figures: list[Figure]) -> None:
    header = ("figure", "ours", "baseline", "ratio", "goal", "result")
    rows = [
        (
            f.name,
            f"{_fmt(f.ours)} {f.unit}",
            f"{_fmt(f.baseline)} {f.unit}",
            f"{f.ratio:.2f}x",
            f.goal_text(),
            "PASS" if f.passed else "MISS",
        )
        for f in figures
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    for f in figures:
        if f.note:
            print(f"  {f.name}: {f.note} ({f.reps} reps, median)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="10k-node import, fewer repetitions")
    parser.add_argument("--keep", action="store_true", help="keep the database files")
    parser.add_argument(
        "--only", choices=("put", "hybrid-put", "ancestry", "import"), action="append"
    )
    args = parser.parse_args(argv)

    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=OUT))
    put_reps, anc_reps = (300, 9) if args.quick else (2000, 31)
    import_count, import_reps = (10_000, 3) if args.quick else (100_000, 3)
    only = set(args.only or ("put", "hybrid-put", "ancestry", "import"))
    print(
        f"bench_local: work dir {work} (python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, {'quick' if args.quick else 'full'})"
    )
    figures: list[Figure] = []
    started = time.time()
    try:
        if "put" in only:
            figures.append(bench_put(work, put_reps, random.Random(1)))
            print(f"  done: {figures[-1].name}", flush=True)
        if "hybrid-put" in only:
            figures.append(bench_put(work, put_reps, random.Random(4), hybrid=True))
            print(f"  done: {figures[-1].name}", flush=True)
        if "ancestry" in only:
            figures.append(bench_ancestry(work, anc_reps, random.Random(2)))
            print(f"  done: {figures[-1].name}", flush=True)
        if "import" in only:
            figures.append(bench_import(work, import_count, import_reps, random.Random(3)))
            print(f"  done: {figures[-1].name}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print_table(figures)
    report = {
        "mode": "quick" if args.quick else "full",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "machine": platform.platform(),
        "figures": [
            {**asdict(f), "ratio": round(f.ratio, 3), "goal": f.goal_text(), "passed": f.passed}
            for f in figures
        ],
    }
    (OUT / "local.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"\nwritten: {OUT / 'local.json'}")
    return 0 if all(f.passed for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
